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
};

use serde::Serialize;

/// Default audit log path (the original's).
pub const DEFAULT_AUDIT_LOG: &str = "/var/log/sentra/audit.jsonl";

/// One audit record. Fields that do not apply to a layer are omitted.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Record {
    pub timestamp: String,
    /// `exec` for decisions; `session_start`/`session_end`/`controller_start`/… for lifecycle records.
    pub event: String,
    /// `kernel` or `shell`.
    pub layer: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
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
    /// `allowed`, `denied` or `auditonly`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_duration_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec_duration_ms: Option<f64>,
    // Kernel layer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ppid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argc: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args_truncated: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_truncated: Option<bool>,
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

/// Current time as the log writes it (RFC 3339, UTC, microseconds).
#[must_use]
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Errors of the audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// An append-only JSONL writer that writes each record with one `write` (no partial lines between
/// concurrent writers, `O_APPEND`) and hands it to the kernel at once.
pub struct AuditLog {
    path: PathBuf,
    file: File,
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
        Ok(Self { path: path.to_path_buf(), file })
    }

    /// Appends one record.
    ///
    /// # Errors
    /// The write fails (disk full, file gone read-only…).
    pub fn write(&mut self, record: &Record) -> Result<(), AuditError> {
        let mut line = serde_json::to_vec(record)
            .map_err(|e| AuditError::Io { path: self.path.clone(), source: std::io::Error::other(e) })?;
        line.push(b'\n');
        self.file.write_all(&line).map_err(|source| AuditError::Io { path: self.path.clone(), source })
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}
