//! Reading the audit log back (`sentra-ctl audit`): filters, the process tree of one command, and a
//! terminal view.
//!
//! Records are joined by process: every record names its process by `exec_id` and the parent by
//! `parent_exec_id` (see [`super::exec_id`]), so a shell line, the programs it started, their
//! connections and the kernel's refusals form one tree. A kernel record belongs to the shell session
//! of its nearest ancestor that wrote shell records.

use std::{
    collections::{HashMap, HashSet},
    fmt::Write as _,
    io::{BufRead as _, Read as _, Seek as _},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use anstyle::{AnsiColor, Style};
use chrono::{DateTime, Utc};
use serde_json::Value;

/// Errors of reading the audit log back.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("audit log {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--since {0:?}: expected a duration (30s, 10m, 2h, 1d) or an RFC 3339 time")]
    Since(String),
}

/// One record as read: its JSON, its line, and its time.
#[derive(Debug, Clone)]
pub struct Entry {
    pub value: Value,
    pub line: String,
    pub time: Option<DateTime<Utc>>,
}

impl Entry {
    /// A line of the log; `None` for one that is not a JSON object.
    #[must_use]
    pub fn parse(line: &str) -> Option<Self> {
        let value: Value = serde_json::from_str(line).ok()?;
        if !value.is_object() {
            return None;
        }
        let time = value
            .get("timestamp")
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        Some(Self { value, line: line.trim_end().to_string(), time })
    }

    fn text(&self, key: &str) -> Option<&str> {
        self.value.get(key).and_then(Value::as_str)
    }

    #[must_use]
    pub fn exec_id(&self) -> Option<&str> {
        self.text("exec_id")
    }
}

/// The whole log, sorted by time (stable: records of one time keep their order in the file).
#[derive(Debug, Default)]
pub struct Log {
    pub entries: Vec<Entry>,
    /// Lines that are not JSON objects (a torn line, a foreign writer).
    pub unreadable: usize,
}

impl Log {
    /// Reads the log at `path`.
    ///
    /// # Errors
    /// The file cannot be read.
    pub fn read(path: &Path) -> Result<Self, QueryError> {
        let text = std::fs::read(path).map_err(|source| QueryError::Io { path: path.into(), source })?;
        let mut log = Self::default();
        for line in String::from_utf8_lossy(&text).lines().filter(|l| !l.trim().is_empty()) {
            match Entry::parse(line) {
                Some(entry) => log.entries.push(entry),
                None => log.unreadable += 1,
            }
        }
        log.entries.sort_by_key(|e| e.time);
        Ok(log)
    }
}

/// How processes relate, learned from the records read so far.
#[derive(Debug, Default)]
pub struct Processes {
    parent: HashMap<String, String>,
    /// The session of each process that wrote shell records.
    session: HashMap<String, String>,
}

/// Ancestors looked at before giving up (a cycle can only come from a forged record).
const MAX_ANCESTORS: usize = 256;

impl Processes {
    #[must_use]
    pub fn of(entries: &[Entry]) -> Self {
        let mut processes = Self::default();
        for entry in entries {
            processes.learn(entry);
        }
        processes
    }

    /// Takes in what one record says about its process.
    pub fn learn(&mut self, entry: &Entry) {
        let Some(id) = entry.exec_id() else { return };
        if let Some(parent) = entry.text("parent_exec_id") {
            self.parent.entry(id.to_string()).or_insert_with(|| parent.to_string());
        }
        if let Some(session) = entry.text("session_id")
            && entry.text("layer") == Some("shell")
        {
            self.session.entry(id.to_string()).or_insert_with(|| session.to_string());
        }
    }

    /// `id` and its ancestors, nearest first.
    fn lineage<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        std::iter::successors(Some(id), |current| self.parent.get(*current).map(String::as_str))
            .take(MAX_ANCESTORS)
    }

    /// The shell session a process belongs to: that of its nearest ancestor (or itself) that wrote
    /// shell records.
    #[must_use]
    pub fn session_of(&self, id: &str) -> Option<&str> {
        self.lineage(id).find_map(|ancestor| self.session.get(ancestor).map(String::as_str))
    }

    /// Whether `id` is `root` or descends from it.
    #[must_use]
    pub fn descends_from(&self, id: &str, root: &str) -> bool {
        self.lineage(id).any(|ancestor| ancestor == root)
    }

    /// The session of a record: its own, or its process's.
    #[must_use]
    pub fn session_of_entry<'a>(&'a self, entry: &'a Entry) -> Option<&'a str> {
        entry.text("session_id").or_else(|| entry.exec_id().and_then(|id| self.session_of(id)))
    }
}

/// Which records to show.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    /// Only refusals (`denied`, and `auditonly`: what enforce mode would have refused).
    pub denied: bool,
    /// A layer (`kernel`, `shell`, `seccomp`, `launcher`) or an event kind (`exec`, `net`, `dns`,
    /// `guard`…); any of them.
    pub layers: Vec<String>,
    pub rule: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub session: Option<String>,
    /// The process and, with `tree`, everything it started.
    pub exec_id: Option<String>,
    pub tree: bool,
}

impl Filter {
    #[must_use]
    pub fn matches(&self, entry: &Entry, processes: &Processes) -> bool {
        if self.denied && !matches!(entry.text("decision"), Some("denied" | "auditonly")) {
            return false;
        }
        if !self.layers.is_empty() {
            let layer = entry.text("layer").unwrap_or_default();
            let event = entry.text("event").unwrap_or_default();
            let kind = event.split('_').next().unwrap_or_default();
            if !self.layers.iter().any(|l| l == layer || l == event || l == kind) {
                return false;
            }
        }
        if let Some(rule) = &self.rule
            && entry.text("rule_id") != Some(rule.as_str())
        {
            return false;
        }
        if let Some(since) = self.since
            && entry.time.is_none_or(|t| t < since)
        {
            return false;
        }
        if let Some(session) = &self.session
            && processes.session_of_entry(entry) != Some(session.as_str())
        {
            return false;
        }
        if let Some(root) = &self.exec_id {
            let Some(id) = entry.exec_id() else { return false };
            let inside = if self.tree { processes.descends_from(id, root) } else { id == root };
            if !inside {
                return false;
            }
        }
        true
    }
}

/// `--since`: a duration back from `now` (`90s`, `10m`, `2h`, `1d`, `1w`) or an RFC 3339 time.
///
/// # Errors
/// Neither form.
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, QueryError> {
    let bad = || QueryError::Since(text.to_string());
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let number: i64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" | "sec" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(bad()),
    };
    let back =
        chrono::TimeDelta::try_seconds(number.checked_mul(seconds).ok_or_else(bad)?).ok_or_else(bad)?;
    now.checked_sub_signed(back).ok_or_else(bad)
}

/// The record as JSON lines print it: with the session it belongs to when its writer could not know
/// it (a kernel record of a process a shell session started).
#[must_use]
pub fn json_line(entry: &Entry, processes: &Processes) -> String {
    if entry.text("session_id").is_none()
        && let Some(session) = entry.exec_id().and_then(|id| processes.session_of(id))
        && let Value::Object(mut fields) = entry.value.clone()
    {
        fields.insert("session_id".into(), session.into());
        return Value::Object(fields).to_string();
    }
    entry.line.clone()
}

/// Terminal output: aligned columns, coloured by decision when `color`.
#[derive(Debug, Clone, Copy)]
pub struct View {
    pub color: bool,
}

impl View {
    fn paint(self, style: Style, text: &str) -> String {
        if self.color { format!("{style}{text}{style:#}") } else { text.to_string() }
    }

    /// One record on one line: time, layer, event, decision, rule, pid, and what it was about.
    #[must_use]
    pub fn line(self, entry: &Entry) -> String {
        let time = entry.time.map_or_else(
            || entry.text("timestamp").unwrap_or("-").to_string(),
            |t| t.format("%m-%d %H:%M:%S%.3f").to_string(),
        );
        let decision = entry.text("decision").unwrap_or("-");
        let style = match decision {
            "denied" => AnsiColor::Red.on_default().bold(),
            "auditonly" | "servfail" | "expired" => AnsiColor::Yellow.on_default(),
            "allowed" => AnsiColor::Green.on_default(),
            _ => Style::new(),
        };
        let pid =
            entry.value.get("pid").and_then(Value::as_u64).map_or_else(|| "-".into(), |p| p.to_string());
        let mut rule = entry.text("rule_id").unwrap_or("-").to_string();
        if rule.chars().count() > 24 {
            rule = rule.chars().take(23).chain(['…']).collect();
        }
        format!(
            "{} {:<8} {:<8} {} {:<24} {:>7}  {}",
            self.paint(Style::new().dimmed(), &time),
            entry.text("layer").unwrap_or("-"),
            entry.text("event").unwrap_or("-"),
            self.paint(style, &format!("{decision:<9}")),
            rule,
            pid,
            what(entry),
        )
    }

    /// The tree of `root`'s process: each process with its records, children indented below.
    #[must_use]
    pub fn tree(self, entries: &[&Entry], root: &str) -> String {
        let mut records: HashMap<&str, Vec<&Entry>> = HashMap::new();
        let mut children: HashMap<&str, Vec<&str>> = HashMap::new();
        let mut seen = HashSet::new();
        for entry in entries {
            let Some(id) = entry.exec_id() else { continue };
            records.entry(id).or_default().push(entry);
            if seen.insert(id)
                && id != root
                && let Some(parent) = entry.text("parent_exec_id")
            {
                children.entry(parent).or_default().push(id);
            }
        }
        let mut out = String::new();
        let mut stack = vec![(root, 0usize)];
        let mut shown = HashSet::new();
        while let Some((id, depth)) = stack.pop() {
            if !shown.insert(id) {
                continue;
            }
            let indent = "    ".repeat(depth);
            let own = records.get(id).map(Vec::as_slice).unwrap_or_default();
            // What the process runs now: its latest exec's file (a record's `comm` can be the image
            // before the exec: the lsm backend decides before the new image replaces the old).
            let name = own
                .iter()
                .rev()
                .find(|e| e.text("event") == Some("exec") && e.text("layer") == Some("kernel"))
                .and_then(|e| e.text("executable"))
                .and_then(|file| file.rsplit('/').next())
                .or_else(|| own.iter().rev().find_map(|e| e.text("comm")))
                .unwrap_or("?");
            let pid = own.iter().find_map(|e| e.value.get("pid").and_then(Value::as_u64)).unwrap_or(0);
            let _ =
                writeln!(out, "{indent}{} {name} [{id}]", self.paint(Style::new().bold(), &pid.to_string()));
            for entry in own {
                let _ = writeln!(out, "{indent}  {}", self.line(entry));
            }
            // Children in the order they first appear, pushed in reverse so the first is shown first.
            for child in children.get(id).map(Vec::as_slice).unwrap_or_default().iter().rev() {
                stack.push((child, depth + 1));
            }
        }
        out
    }
}

/// What a record is about, in a few words.
fn what(entry: &Entry) -> String {
    let text = |key| entry.text(key);
    let mut about = match text("event").unwrap_or_default() {
        "net" => format!(
            "{} {}:{} {}",
            text("action").unwrap_or_default(),
            text("destination").unwrap_or("?"),
            entry.value.get("port").and_then(Value::as_u64).unwrap_or(0),
            text("executable").unwrap_or_default(),
        ),
        event if event.starts_with("dns") => text("domain").unwrap_or("?").to_string(),
        _ => text("command")
            .or_else(|| text("executable"))
            .or_else(|| text("reason"))
            .unwrap_or_default()
            .to_string(),
    };
    if matches!(text("decision"), Some("denied" | "auditonly"))
        && let Some(reason) = text("reason")
        && !about.contains(reason)
    {
        about = format!("{about} — {reason}");
    }
    about
}

/// Refusals of one kind of thing: the same file, destination, name or shell rule.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Pending {
    /// Stable for the same kind, thing and rule (what an approval will name).
    pub id: String,
    /// `exec` (kernel), `shell`, `connect`, `dns`, `syscall`, `guard`, or the record's event.
    pub kind: String,
    /// The file, `address:port/protocol`, domain, system call, or what the shell ran.
    pub what: String,
    pub rule: String,
    pub count: u64,
    pub first: String,
    pub last: String,
    /// The latest refusal's reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `auditonly` when every refusal was only recorded (audit mode), else `denied`.
    pub decision: String,
}

/// The refusals among `entries`, grouped by what was refused, most recent first.
#[must_use]
pub fn pending(entries: &[Entry]) -> Vec<Pending> {
    let mut groups: Vec<Pending> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for entry in entries {
        let Some(Refusal { decision, kind, what, rule, id }) = refusal(entry) else { continue };
        let time = entry.text("timestamp").unwrap_or_default().to_string();
        let at = *index.entry(id.clone()).or_insert_with(|| {
            groups.push(Pending {
                id,
                kind,
                what,
                rule,
                count: 0,
                first: time.clone(),
                last: time.clone(),
                reason: None,
                decision: "auditonly".into(),
            });
            groups.len() - 1
        });
        let group = &mut groups[at];
        group.count += 1;
        group.last = time;
        group.reason = entry.text("reason").map(str::to_string).or(group.reason.take());
        if decision == "denied" {
            group.decision = "denied".into();
        }
    }
    groups.sort_by(|a, b| b.last.cmp(&a.last));
    groups
}

/// A record that refused something, as `pending` groups it.
struct Refusal<'a> {
    decision: &'a str,
    kind: String,
    what: String,
    rule: String,
    /// The group's id.
    id: String,
}

/// What `entry` refused, when it refused something (`denied`, or `auditonly` in audit mode).
fn refusal(entry: &Entry) -> Option<Refusal<'_>> {
    let decision @ ("denied" | "auditonly") = entry.text("decision")? else { return None };
    let (kind, what) = refused(entry);
    let rule = entry.text("rule_id").unwrap_or("-").to_string();
    let id = group_id(&kind, &what, &rule);
    Some(Refusal { decision, kind, what, rule, id })
}

/// The id of the `pending` group a record's refusal belongs to (`None`: it refused nothing).
#[must_use]
pub fn refusal_id(entry: &Entry) -> Option<String> {
    refusal(entry).map(|r| r.id)
}

/// What a refusal refused: its kind and the thing.
fn refused(entry: &Entry) -> (String, String) {
    let text = |key| entry.text(key).unwrap_or_default();
    match (text("layer"), text("event")) {
        ("kernel", "exec") => ("exec".into(), text("executable").into()),
        ("shell", _) => ("shell".into(), entry.text("executable").unwrap_or(text("command")).into()),
        (_, "net") => (
            "connect".into(),
            format!(
                "{}:{}/{}",
                text("destination"),
                entry.value.get("port").and_then(Value::as_u64).unwrap_or(0),
                text("protocol")
            ),
        ),
        (_, event) if event.starts_with("dns") => ("dns".into(), text("domain").into()),
        ("seccomp", _) => (
            "syscall".into(),
            entry.value.pointer("/detail/syscall").and_then(Value::as_str).unwrap_or_default().into(),
        ),
        (_, "guard") => (
            "guard".into(),
            format!(
                "{} {}",
                text("action"),
                entry.text("executable").or(entry.text("command")).unwrap_or_default()
            )
            .trim()
            .to_string(),
        ),
        (_, event) => {
            (event.into(), entry.text("command").or(entry.text("executable")).unwrap_or_default().into())
        }
    }
}

/// Eight hex digits of FNV-1a over the group's key: the same on every run and every machine.
fn group_id(kind: &str, what: &str, rule: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in [kind, what, rule].join("\0").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{:08x}", hash >> 32)
}

/// Follows a log as it grows: the lines appended since the last call. A log that was replaced
/// (rotated, recreated) or truncated is read again from its start.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    file: Option<std::fs::File>,
    identity: (u64, u64),
    position: u64,
    partial: Vec<u8>,
}

impl Follower {
    /// Starts at the end of the log as it is now (`from_start`: at its beginning).
    #[must_use]
    pub fn new(path: &Path, from_start: bool) -> Self {
        let mut follower =
            Self { path: path.into(), file: None, identity: (0, 0), position: 0, partial: Vec::new() };
        if let Ok(file) = std::fs::File::open(path)
            && let Ok(meta) = file.metadata()
        {
            follower.identity = (meta.dev(), meta.ino());
            follower.position = if from_start { 0 } else { meta.len() };
            follower.file = Some(file);
        }
        follower
    }

    /// The complete lines appended since the last call.
    pub fn poll(&mut self) -> Vec<String> {
        let current = std::fs::metadata(&self.path).ok().map(|m| ((m.dev(), m.ino()), m.len()));
        match current {
            Some((identity, len))
                if identity != self.identity || self.file.is_none() || len < self.position =>
            {
                // Replaced or truncated: what is there now is new.
                self.file = std::fs::File::open(&self.path).ok();
                self.identity = identity;
                self.position = 0;
                self.partial.clear();
            }
            _ => {}
        }
        let Some(file) = self.file.as_mut() else { return Vec::new() };
        let mut fresh = Vec::new();
        if file.seek(std::io::SeekFrom::Start(self.position)).is_err()
            || file.read_to_end(&mut fresh).is_err()
        {
            return Vec::new();
        }
        self.position += fresh.len() as u64;
        self.partial.extend_from_slice(&fresh);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else { return Vec::new() };
        let complete: Vec<u8> = self.partial.drain(..=end).collect();
        complete.lines().map_while(Result::ok).filter(|l| !l.trim().is_empty()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(json: &str) -> Entry {
        Entry::parse(json).expect("a record")
    }

    #[test]
    fn since_takes_durations_and_times() {
        let now = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z").expect("time").with_timezone(&Utc);
        assert_eq!(parse_since("10m", now).expect("10m").to_rfc3339(), "2026-01-02T02:54:05+00:00");
        assert_eq!(parse_since("1d", now).expect("1d").to_rfc3339(), "2026-01-01T03:04:05+00:00");
        assert_eq!(
            parse_since("2026-01-01T00:00:00Z", now).expect("time").to_rfc3339(),
            "2026-01-01T00:00:00+00:00"
        );
        for bad in ["", "m", "10", "10y", "-5m", "99999999999999999999d"] {
            assert!(parse_since(bad, now).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sessions_and_trees_follow_the_parent_links() {
        let entries = [
            entry(
                r#"{"timestamp":"2026-01-01T00:00:00Z","event":"exec","layer":"shell","session_id":"s1","exec_id":"b:1:10","parent_exec_id":"b:0:1","decision":"allowed"}"#,
            ),
            entry(
                r#"{"timestamp":"2026-01-01T00:00:01Z","event":"exec","layer":"kernel","exec_id":"b:2:11","parent_exec_id":"b:1:10","decision":"allowed","pid":11,"comm":"sh"}"#,
            ),
            entry(
                r#"{"timestamp":"2026-01-01T00:00:02Z","event":"exec","layer":"kernel","exec_id":"b:3:12","parent_exec_id":"b:2:11","decision":"denied","rule_id":"default","pid":12}"#,
            ),
            entry(
                r#"{"timestamp":"2026-01-01T00:00:03Z","event":"exec","layer":"kernel","exec_id":"b:4:13","parent_exec_id":"b:0:1","decision":"allowed"}"#,
            ),
        ];
        let processes = Processes::of(&entries);
        assert_eq!(processes.session_of("b:3:12"), Some("s1"));
        assert_eq!(processes.session_of("b:4:13"), None);
        let session = Filter { session: Some("s1".into()), ..Filter::default() };
        assert_eq!(entries.iter().filter(|e| session.matches(e, &processes)).count(), 3);
        let tree = Filter { exec_id: Some("b:2:11".into()), tree: true, ..Filter::default() };
        let under: Vec<_> = entries.iter().filter(|e| tree.matches(e, &processes)).collect();
        assert_eq!(under.len(), 2);
        let denied = Filter { denied: true, layers: vec!["exec".into()], ..Filter::default() };
        assert_eq!(entries.iter().filter(|e| denied.matches(e, &processes)).count(), 1);
        let shown = View { color: false }.tree(&under, "b:2:11");
        assert!(shown.starts_with("11 sh [b:2:11]\n"), "{shown}");
        assert!(shown.contains("\n    12 ? [b:3:12]\n"), "{shown}");
        assert!(json_line(&entries[2], &processes).contains(r#""session_id":"s1""#));
    }

    #[test]
    fn pending_groups_refusals_by_what_was_refused() {
        let entries = [
            entry(
                r#"{"timestamp":"2026-01-01T00:00:01Z","event":"exec","layer":"kernel","executable":"/usr/bin/nc","decision":"denied","rule_id":"default","reason":"r1"}"#,
            ),
            entry(
                r#"{"timestamp":"2026-01-01T00:00:02Z","event":"net","layer":"kernel","destination":"10.0.0.1","port":443,"protocol":"tcp","decision":"auditonly","rule_id":"default"}"#,
            ),
            entry(
                r#"{"timestamp":"2026-01-01T00:00:03Z","event":"exec","layer":"kernel","executable":"/usr/bin/nc","decision":"denied","rule_id":"default","reason":"r2"}"#,
            ),
            entry(
                r#"{"timestamp":"2026-01-01T00:00:04Z","event":"exec","layer":"kernel","executable":"/usr/bin/ls","decision":"allowed","rule_id":"default"}"#,
            ),
        ];
        let groups = pending(&entries);
        assert_eq!(groups.len(), 2, "{groups:#?}");
        let nc = &groups[0];
        assert_eq!((nc.kind.as_str(), nc.what.as_str(), nc.count), ("exec", "/usr/bin/nc", 2));
        assert_eq!((nc.first.as_str(), nc.last.as_str()), ("2026-01-01T00:00:01Z", "2026-01-01T00:00:03Z"));
        assert_eq!(nc.reason.as_deref(), Some("r2"));
        assert_eq!(nc.id, group_id("exec", "/usr/bin/nc", "default"));
        assert_eq!((groups[1].what.as_str(), groups[1].decision.as_str()), ("10.0.0.1:443/tcp", "auditonly"));
    }

    #[test]
    fn a_forged_parent_cycle_ends() {
        let entries = [
            entry(r#"{"event":"exec","layer":"kernel","exec_id":"a","parent_exec_id":"b"}"#),
            entry(r#"{"event":"exec","layer":"kernel","exec_id":"b","parent_exec_id":"a"}"#),
        ];
        let processes = Processes::of(&entries);
        assert_eq!(processes.session_of("a"), None);
        assert!(!processes.descends_from("a", "c"));
    }
}
