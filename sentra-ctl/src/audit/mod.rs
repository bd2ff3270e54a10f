//! The audit log: JSONL, one object per line, one schema for kernel and shell records.
//!
//! Field names follow the original Sentra's log (`timestamp, session_id, host, user, action, command,
//! executable, args, cwd, decision, rule_id, reason, exit_code, exec_duration_ms`), so
//! `grep '"decision":"denied"' audit.jsonl` keeps working; `layer` says which layer decided.

use std::{
    fs::{File, OpenOptions},
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use serde::Serialize;

pub mod query;

/// Default audit log path (the original's).
pub const DEFAULT_AUDIT_LOG: &str = "/var/log/sentra/audit.jsonl";

/// One audit record. Fields that do not apply to a layer are omitted; fields that always come together
/// (a kernel event's task, a shell's session, an exec's capture) are one group, present or absent whole.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Record {
    pub timestamp: String,
    /// `exec` for decisions; `session_start`/`session_end`/`controller_start`/… for lifecycle records.
    pub event: String,
    /// `kernel` or `shell`.
    pub layer: &'static str,
    /// The shell session that wrote a shell record.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub shell: Option<ShellSession>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executable: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// `allowed`, `denied` or `auditonly` (and the resolver's `servfail`, `expired`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Which step of a kernel probe failed, when it decided closed (`rule_id` `internal_error`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_site: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_duration_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec_duration_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<&'static str>,
    /// The task a kernel event is about.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub task: Option<Task>,
    /// Cgroup of the task, or the cgroup a controller governs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_id: Option<u64>,
    // Network layer (kernel network decisions and the controller's resolver).
    /// Destination address of a network event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `tcp` or `udp` (or the protocol number).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Name asked of the resolver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// What the kernel captured of an exec.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub capture: Option<Capture>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_generation: Option<u32>,
    /// Shell layer: whether a controller governed the shell's cgroup (the kernel then enforced every
    /// exec the line made).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_enforced: Option<bool>,
    /// Free-form details of lifecycle records (counters, policy info).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

/// Who wrote a shell record (the original's session fields).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ShellSession {
    pub session_id: String,
    pub host: String,
    pub user: String,
    pub identity: String,
}

/// The process a record is about (a kernel event's task, a shell line's shell, a seccomp denial's
/// caller).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Task {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub comm: String,
    /// The process, unique across boots: see [`exec_id`]. Records of one process share it (an exec
    /// keeps it: the process is the same), and its children's `parent_exec_id` names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_exec_id: Option<String>,
}

impl Task {
    /// A process as `/proc` shows it now (best effort: it may be gone; missing fields stay empty).
    #[must_use]
    pub fn from_proc(pid: u32) -> Self {
        let stat = ProcStat::read(pid);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let uid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let parent_pid = stat.as_ref().map_or(0, |s| s.ppid);
        let parent = (parent_pid != 0).then(|| ProcStat::read(parent_pid)).flatten();
        Self {
            pid,
            ppid: parent_pid,
            uid,
            comm: stat.as_ref().map(|s| s.comm.clone()).unwrap_or_default(),
            exec_id: stat.as_ref().map(|s| exec_id_from_ticks(pid, s.start_ticks)),
            parent_exec_id: parent.map(|s| exec_id_from_ticks(parent_pid, s.start_ticks)),
        }
    }
}

impl Record {
    /// Names `pid` as the record's process (task fields, `exec_id`, cgroup), replacing what was there:
    /// for records whose writer vouches for the process (the controller for a connected shell).
    pub fn set_process(&mut self, pid: u32) {
        self.task = Some(Task::from_proc(pid));
        self.cgroup_id = crate::cgroup::id_of(pid);
    }
}

/// The fields of `/proc/<pid>/stat` a record uses.
struct ProcStat {
    comm: String,
    ppid: u32,
    /// Field 22, `starttime`: clock ticks since boot.
    start_ticks: u64,
}

impl ProcStat {
    fn read(pid: u32) -> Option<Self> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) state ppid …`: comm may hold spaces and parentheses, so split at the last ')'.
        let (head, rest) = text.rsplit_once(')')?;
        let comm = head.split_once('(')?.1.to_string();
        let mut fields = rest.split_whitespace();
        let parent = fields.nth(1)?.parse().ok()?;
        // After ppid (field 4) comes field 5; starttime is field 22.
        let start_ticks = fields.nth(17)?.parse().ok()?;
        Some(Self { comm, ppid: parent, start_ticks })
    }
}

/// This boot: the first eight hex digits of its random id, and the clock tick `/proc` counts in.
struct Boot {
    id: String,
    ns_per_tick: u64,
}

fn boot() -> &'static Boot {
    static BOOT: std::sync::OnceLock<Boot> = std::sync::OnceLock::new();
    BOOT.get_or_init(|| {
        let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        let id: String = id.chars().filter(char::is_ascii_hexdigit).take(8).collect();
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .and_then(|hz| u64::try_from(hz).ok())
            .filter(|&hz| hz > 0)
            .unwrap_or(100);
        Boot { id: if id.is_empty() { "00000000".into() } else { id }, ns_per_tick: 1_000_000_000 / hz }
    })
}

/// A process's `exec_id`: `BOOT:START:PID`, with the boot's id prefix, the process's start in clock
/// ticks since boot (as `/proc/<pid>/stat` reports it) and its pid. The kernel's events and `/proc`
/// give the same id for the same process, so shell records and kernel records join.
#[must_use]
pub fn exec_id_from_ticks(pid: u32, start_ticks: u64) -> String {
    format!("{}:{start_ticks}:{pid}", boot().id)
}

/// [`exec_id_from_ticks`] for a start time in nanoseconds since boot (`task->start_boottime`, which
/// the kernel divides the same way for `/proc`: `nsec_to_clock_t`); `None` for an unread 0.
#[must_use]
pub fn exec_id(pid: u32, start_ns: u64) -> Option<String> {
    (start_ns != 0 && pid != 0).then(|| exec_id_from_ticks(pid, start_ns / boot().ns_per_tick))
}

/// What the kernel captured of an exec, and what it had to cut.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Capture {
    /// Arguments the task passed (more than were captured when `args_truncated`).
    pub argc: u32,
    pub args_truncated: bool,
    pub path_truncated: bool,
}

/// Current time as the log writes it (RFC 3339, UTC, microseconds).
#[must_use]
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Errors of the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Told of every record the log writes (the controller's metrics count decisions here, where every
/// layer's records pass).
pub trait Observe: Send + Sync {
    fn record(&self, layer: &str, event: &str, decision: Option<&str>, rule: Option<&str>);
}

/// An append-only JSONL writer that writes each record with one `write` (no partial lines between
/// concurrent writers, `O_APPEND`) and hands it to the kernel at once. Clones share the one open file:
/// a controller opens its log once and hands clones to the parts that write (the event drain, the
/// resolver).
///
/// The controller's log ([`AuditLog::open_owned`]) is watched as well: the controller is its only
/// writer, so before each record it checks that the path still names the file it writes and that the
/// file did not shrink. A deleted or replaced log is reopened (recreated) and a truncated one is
/// written on; either way a record saying what happened comes first. A write that fails is retried
/// once on a reopened file, a torn line is cut off again, and failures are counted and reported in
/// the next record that gets through.
#[derive(Clone)]
pub struct AuditLog {
    path: Arc<Path>,
    inner: Arc<Mutex<Inner>>,
    /// Shared by the clones: set once, after they were handed out.
    observer: Arc<std::sync::OnceLock<Arc<dyn Observe>>>,
}

struct Inner {
    file: File,
    /// Only the controller's log is watched and repaired (other writers may share a shell's log).
    owned: bool,
    /// Device and inode of the open file.
    identity: (u64, u64),
    /// Its length after our last write (a shorter file was truncated behind our back).
    length: u64,
    /// Writes that failed since the last one that got through, and in all.
    failed_since: u64,
    failed_total: u64,
}

/// What happened to the controller's log since the last record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gap {
    /// The path names no file, or another file, and ours has no name left: it was deleted.
    Replaced,
    /// The path names no file, or another file, and ours still has a name: it was renamed (rotated)
    /// with every record written to it.
    Rotated,
    /// The file is shorter than what we wrote.
    Truncated { from: u64, to: u64 },
}

/// Counters of a log's writer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WriteStats {
    pub audit_write_failures: u64,
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).mode(0o600).custom_flags(libc::O_CLOEXEC).open(path)
}

impl AuditLog {
    /// Opens (creating with mode 0600, and its directory with 0700) the log at `path`, to share with
    /// other writers (a shell's own log).
    ///
    /// # Errors
    /// The directory or file cannot be created or opened for appending.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        Self::open_as(path, false)
    }

    /// Opens the controller's log: written by this process only, watched and repaired (see the type).
    ///
    /// # Errors
    /// The directory or file cannot be created or opened for appending.
    pub fn open_owned(path: &Path) -> Result<Self, AuditError> {
        Self::open_as(path, true)
    }

    fn open_as(path: &Path, owned: bool) -> Result<Self, AuditError> {
        let io = |source| AuditError::Io { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
            && !dir.exists()
        {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
        }
        let file = open_append(path).map_err(io)?;
        let meta = file.metadata().map_err(io)?;
        let inner = Inner {
            file,
            owned,
            identity: (meta.dev(), meta.ino()),
            length: meta.len(),
            failed_since: 0,
            failed_total: 0,
        };
        Ok(Self { path: Arc::from(path), inner: Arc::new(Mutex::new(inner)), observer: Arc::default() })
    }

    /// Appends one record.
    ///
    /// # Errors
    /// The write failed twice (disk full, file gone read-only…); it is counted.
    pub fn write(&self, record: &Record) -> Result<(), AuditError> {
        self.write_serialized(record)?;
        if let Some(observer) = self.observer.get() {
            observer.record(record.layer, &record.event, record.decision, record.rule_id.as_deref());
        }
        Ok(())
    }

    /// Tells `observer` of every record written from now on, by this log and its clones (once: a
    /// second observer is ignored).
    pub fn observe(&self, observer: Arc<dyn Observe>) {
        let _ = self.observer.set(observer);
    }

    /// Appends one record another process built and sent (the launcher's), in the same schema.
    ///
    /// # Errors
    /// As [`Self::write`].
    pub fn write_value(&self, record: &serde_json::Value) -> Result<(), AuditError> {
        self.write_serialized(record)?;
        if let Some(observer) = self.observer.get() {
            let text = |key| record.get(key).and_then(serde_json::Value::as_str);
            observer.record(
                text("layer").unwrap_or_default(),
                text("event").unwrap_or_default(),
                text("decision"),
                text("rule_id"),
            );
        }
        Ok(())
    }

    fn write_serialized(&self, record: &impl Serialize) -> Result<(), AuditError> {
        let mut line = serde_json::to_vec(record).map_err(|e| self.io(std::io::Error::other(e)))?;
        line.push(b'\n');
        // A writer that panicked cannot have left the file half-written (see `append`): go on.
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.repair(&mut inner)?;
        self.append(&mut inner, &line)
    }

    /// Checks the controller's log now, as before each record: a rotated (renamed), deleted or
    /// replaced log is reopened at its path, a truncated one noted, each with its record (on SIGHUP,
    /// so that a rotation is followed at once, not at the next record).
    ///
    /// # Errors
    /// The log cannot be reopened or written.
    pub fn revalidate(&self) -> Result<(), AuditError> {
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.repair(&mut inner)
    }

    /// What a watched log needs before the next record: reopened (replaced), noted (truncated), and
    /// earlier failures reported.
    fn repair(&self, inner: &mut Inner) -> Result<(), AuditError> {
        if inner.owned {
            match inner.check(&self.path) {
                Ok(None) => {}
                Ok(Some(gap)) => {
                    if matches!(gap, Gap::Replaced | Gap::Rotated)
                        && let Err(err) = inner.reopen(&self.path)
                    {
                        inner.failed_since += 1;
                        inner.failed_total += 1;
                        return Err(self.io(err));
                    }
                    let note = gap_record(gap, &self.path);
                    let mut text =
                        serde_json::to_vec(&note).map_err(|e| self.io(std::io::Error::other(e)))?;
                    text.push(b'\n');
                    self.append(inner, &text)?;
                }
                Err(err) => tracing::warn!("checking the audit log {}: {err}", self.path.display()),
            }
            if inner.failed_since > 0 {
                let note = Record {
                    timestamp: now(),
                    event: "audit_write_failed".into(),
                    layer: "kernel",
                    detail: Some(serde_json::json!({
                        "failed_writes": inner.failed_since,
                        "failed_writes_total": inner.failed_total,
                    })),
                    ..Record::default()
                };
                let mut text = serde_json::to_vec(&note).map_err(|e| self.io(std::io::Error::other(e)))?;
                text.push(b'\n');
                self.append(inner, &text)?;
                inner.failed_since = 0;
            }
        }
        Ok(())
    }

    /// One `write` of a whole line; on failure the torn part is cut off (the controller's log), the
    /// file reopened and the line written once more; a second failure is counted and returned.
    fn append(&self, inner: &mut Inner, line: &[u8]) -> Result<(), AuditError> {
        let mut last = None;
        for attempt in 0..2 {
            match inner.append_once(line) {
                Ok(()) => return Ok(()),
                Err(err) => {
                    last = Some(err);
                    if !inner.owned {
                        break;
                    }
                    if attempt == 0
                        && let Err(err) = inner.reopen(&self.path)
                    {
                        last = Some(err);
                        break;
                    }
                }
            }
        }
        inner.failed_since += 1;
        inner.failed_total += 1;
        Err(self.io(last.unwrap_or_else(|| std::io::Error::other("write failed"))))
    }

    /// The writer's counters.
    #[must_use]
    pub fn stats(&self) -> WriteStats {
        let inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        WriteStats { audit_write_failures: inner.failed_total }
    }

    fn io(&self, source: std::io::Error) -> AuditError {
        AuditError::Io { path: self.path.to_path_buf(), source }
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Inner {
    /// Whether the path still names our file, as long as we left it.
    /// One `stat` of the path; afterwards `length` is the file's current length.
    fn check(&mut self, path: &Path) -> std::io::Result<Option<Gap>> {
        // Another file (or none) at the path: ours was renamed by a rotation if it still has a name
        // (its records are all there), else deleted.
        let moved = |file: &File| {
            if file.metadata().is_ok_and(|m| m.nlink() > 0) { Gap::Rotated } else { Gap::Replaced }
        };
        let gap = match std::fs::metadata(path) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Some(moved(&self.file)),
            Err(err) => return Err(err),
            Ok(meta) if (meta.dev(), meta.ino()) != self.identity => Some(moved(&self.file)),
            Ok(meta) => {
                let gap = (meta.len() < self.length)
                    .then_some(Gap::Truncated { from: self.length, to: meta.len() });
                self.length = meta.len();
                gap
            }
        };
        Ok(gap)
    }

    fn reopen(&mut self, path: &Path) -> std::io::Result<()> {
        let file = open_append(path)?;
        let meta = file.metadata()?;
        self.identity = (meta.dev(), meta.ino());
        self.length = meta.len();
        self.file = file;
        Ok(())
    }

    fn append_once(&mut self, line: &[u8]) -> std::io::Result<()> {
        // The controller's log has no other writer: its length is known (`check`).
        let before = self.length;
        match (&self.file).write(line) {
            Ok(n) if n == line.len() => {
                self.length = before + u64::try_from(n).unwrap_or(u64::MAX);
                Ok(())
            }
            Ok(n) => {
                // A short write (disk full): never leave half a line for the next record to join.
                if self.owned {
                    let _ = self.file.set_len(before);
                }
                Err(std::io::Error::new(
                    std::io::ErrorKind::WriteZero,
                    format!("short write: {n} of {} bytes", line.len()),
                ))
            }
            Err(err) => Err(err),
        }
    }
}

fn gap_record(gap: Gap, path: &Path) -> Record {
    let detail = match gap {
        Gap::Replaced => serde_json::json!({
            "audit_log": path,
            "what": "the audit log was deleted or replaced; records written in between are lost",
        }),
        Gap::Rotated => serde_json::json!({
            "audit_log": path,
            "what": "the audit log was rotated (renamed); the records before this one are in the renamed file",
            "rotated": true,
        }),
        Gap::Truncated { from, to } => serde_json::json!({
            "audit_log": path,
            "what": "the audit log was truncated behind the controller's back",
            "length_written": from,
            "length_found": to,
        }),
    };
    Record {
        timestamp: now(),
        event: match gap {
            Gap::Replaced | Gap::Rotated => "audit_log_reopened",
            Gap::Truncated { .. } => "audit_log_truncated",
        }
        .into(),
        layer: "kernel",
        detail: Some(detail),
        ..Record::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .expect("log")
            .lines()
            .map(|l| serde_json::from_str(l).expect("every line is whole JSON"))
            .collect()
    }

    fn record(event: &str) -> Record {
        Record { timestamp: now(), event: event.into(), layer: "kernel", ..Record::default() }
    }

    #[test]
    fn a_deleted_log_is_recreated_and_the_gap_recorded() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open_owned(&path).expect("open");
        log.write(&record("one")).expect("write");
        std::fs::remove_file(&path).expect("rm");
        log.write(&record("two")).expect("write");
        let events: Vec<_> =
            lines(&path).iter().map(|r| r["event"].as_str().unwrap_or("").to_string()).collect();
        assert_eq!(events, ["audit_log_reopened", "two"]);
        // Replaced by another file: the same.
        std::fs::rename(&path, dir.path().join("old")).expect("mv");
        std::fs::write(&path, b"").expect("new file");
        log.write(&record("three")).expect("write");
        let events: Vec<_> =
            lines(&path).iter().map(|r| r["event"].as_str().unwrap_or("").to_string()).collect();
        assert_eq!(events, ["audit_log_reopened", "three"]);
    }

    #[test]
    fn a_truncated_log_is_recorded_with_both_lengths() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open_owned(&path).expect("open");
        log.write(&record("one")).expect("write");
        let written = std::fs::metadata(&path).expect("meta").len();
        std::fs::OpenOptions::new().write(true).open(&path).expect("open").set_len(0).expect("truncate");
        log.write(&record("two")).expect("write");
        let records = lines(&path);
        assert_eq!(records[0]["event"], "audit_log_truncated");
        assert_eq!(records[0]["detail"]["length_written"], written);
        assert_eq!(records[0]["detail"]["length_found"], 0);
        assert_eq!(records[1]["event"], "two");
    }

    #[test]
    fn a_shared_log_is_not_watched() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).expect("open");
        log.write(&record("one")).expect("write");
        std::fs::OpenOptions::new().write(true).open(&path).expect("open").set_len(0).expect("truncate");
        log.write(&record("two")).expect("write");
        assert_eq!(lines(&path).len(), 1);
    }
}
