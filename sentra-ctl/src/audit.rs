//! The audit log: JSONL, one object per line, one schema for kernel and shell records.
//!
//! Field names follow the original Sentra's log (`timestamp, session_id, host, user, action, command,
//! executable, args, cwd, decision, rule_id, reason, exit_code, exec_duration_ms`), so
//! `grep '"decision":"denied"' audit.jsonl` keeps working; `layer` says which layer decided.

use std::{
    fs::{File, OpenOptions},
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    sync::Arc,
};

use serde::Serialize;

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

/// The task of a kernel event.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Task {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub comm: String,
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

/// An append-only JSONL writer that writes each record with one `write` (no partial lines between
/// concurrent writers, `O_APPEND`) and hands it to the kernel at once. Clones share the one open file:
/// a controller opens its log once and hands clones to the parts that write (the event drain, the
/// resolver).
#[derive(Clone)]
pub struct AuditLog {
    path: Arc<Path>,
    file: Arc<File>,
}

impl AuditLog {
    /// Opens (creating with mode 0600, and its directory with 0700) the log at `path`.
    ///
    /// # Errors
    /// The directory or file cannot be created or opened for appending.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let io = |source| AuditError::Io { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
            && !dir.exists()
        {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
        }
        let file = OpenOptions::new().create(true).append(true).mode(0o600).open(path).map_err(io)?;
        Ok(Self { path: Arc::from(path), file: Arc::new(file) })
    }

    /// Appends one record.
    ///
    /// # Errors
    /// The write fails (disk full, file gone read-only…).
    pub fn write(&self, record: &Record) -> Result<(), AuditError> {
        let io = |source| AuditError::Io { path: self.path.to_path_buf(), source };
        let mut line = serde_json::to_vec(record).map_err(|e| io(std::io::Error::other(e)))?;
        line.push(b'\n');
        (&*self.file).write_all(&line).map_err(io)
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}
