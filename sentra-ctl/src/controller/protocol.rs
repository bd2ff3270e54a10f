//! Requests and responses on the controller socket (one JSON object per line each way).

use serde::{Deserialize, Serialize};

/// Where the socket lives (in the root-only runtime directory).
#[must_use]
pub fn socket() -> std::path::PathBuf {
    super::state::run_dir().join("ctl.sock")
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status,
    /// Reload the policy from `policy`, or from the file loaded last.
    Reload {
        policy: Option<String>,
    },
    /// Remove every pin and stop enforcing.
    Stop,
    /// Append a record to the audit log (the launcher's: denied system calls, launches). Only root
    /// outside the governed cgroups may send one; the controller adds who sent it.
    Record {
        record: serde_json::Value,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Response {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub body: Option<serde_json::Value>,
}

impl Response {
    #[must_use]
    pub fn ok(body: serde_json::Value) -> Self {
        Self { ok: true, error: None, body: Some(body) }
    }

    #[must_use]
    pub fn error(message: impl Into<String>) -> Self {
        Self { ok: false, error: Some(message.into()), body: None }
    }
}
