//! Requests and responses on the controller socket (one JSON object per line each way).

use serde::{Deserialize, Serialize};

/// Where the socket lives (in the root-only runtime directory).
#[must_use]
pub fn socket() -> std::path::PathBuf {
    super::state::run_dir().join("ctl.sock")
}

/// Where shells send their audit records: mode 0666, every agent user may connect; the controller
/// stamps each record with the peer's credentials. It greets each connection with a [`Greeting`].
#[must_use]
pub fn records_socket() -> std::path::PathBuf {
    super::state::run_dir().join("records.sock")
}

/// Where a launched agent finds the records socket: the launcher mounts it there, in a runtime
/// directory of the agent's mount namespace that holds nothing else (a fixed path: the agent cannot
/// point its shell at a socket of its own, as it could with `SENTRA_RUN_DIR`).
pub const AGENT_RECORDS_SOCKET: &str = "/run/sentra/records.sock";

/// The records socket a client should use: at its fixed place in a launched agent's mount
/// namespace, else the controller's own (an operator's shell on the host).
#[must_use]
pub fn nearest_records_socket() -> std::path::PathBuf {
    let agent = std::path::PathBuf::from(AGENT_RECORDS_SOCKET);
    if std::fs::symlink_metadata(&agent).is_ok() { agent } else { records_socket() }
}

/// The longest line either socket reads from a peer (a longer one is refused as a whole).
pub const LINE_MAX_BYTES: u64 = 64 * 1024;

/// The first line on the records socket: the policy the controller enforces (the shell then
/// evaluates exactly that one).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Greeting {
    pub policy: std::path::PathBuf,
    pub policy_hash: String,
}

/// Key of a shell's line on the records socket that asks for one command from its rate-limit budget
/// (`{"sentra_admit": true}`) instead of carrying a record; the controller answers one [`Admitted`]
/// line. The budget is the controller's, per peer cgroup and uid, under the enforced policy's
/// `rate_limit`: nothing the agent can reset or rename.
pub const ADMIT_KEY: &str = "sentra_admit";

/// Key of a shell's question on the records socket: `{"sentra_denials_since": BOOT_NS}` asks for the
/// kernel's exec denials in the shell's own cgroup since `BOOT_NS` (`CLOCK_BOOTTIME` nanoseconds, taken
/// before it started the command), answered with one [`Denials`] line.
pub const DENIALS_KEY: &str = "sentra_denials_since";

/// The controller's answer to a [`DENIALS_KEY`] question (at most [`DENIALS_MAX`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Denials {
    pub denials: Vec<crate::record::KernelDenial>,
}

/// At most this many denials in one answer.
pub const DENIALS_MAX: usize = 16;

/// Key of a request on the records socket to send one e-mail through the controller's broker
/// (`{"sentra_email": EmailRequest}`): the broker holds the credentials, the enforced policy's
/// `email:` section decides, and one [`EmailAnswer`] line comes back once the message is sent or refused.
pub const EMAIL_KEY: &str = "sentra_email";

/// Key of a request on the records socket to run Python in the sandbox
/// (`{"sentra_python": Invocation}`, see `crate::sandbox::agent`): the controller starts the runner
/// with the enforced policy and answers one `sandbox::agent::Answer` line once the run is over.
pub const PYTHON_KEY: &str = "sentra_python";

/// One message the agent asks to send (the sender is the policy's, never the agent's).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EmailRequest {
    pub to: Vec<String>,
    pub subject: String,
    pub body: String,
}

/// What became of an [`EmailRequest`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EmailAnswer {
    /// Handed to the mail server.
    pub sent: bool,
    /// Whether the policy refused it (`false` with `sent: false`: allowed, but delivery failed).
    pub denied: bool,
    /// The policy entry that decided (`email.recipients[0]`, `email.per_hour`, …).
    pub rule: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub message_id: Option<String>,
}

/// The controller's answer to an admission request.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Admitted {
    pub admitted: bool,
    /// Commands counted in the window (this one included when admitted).
    pub used: u32,
    /// When refused: how long until one frees up.
    pub retry_after_ms: u64,
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
    /// Govern a launch's own cgroup, created below a governed one, with the network policy of the
    /// launch profile `net_profile` (`None`: the `network:` section). The body answers its `id`.
    GovernLaunch {
        cgroup: std::path::PathBuf,
        net_profile: Option<String>,
    },
    /// Forget a launch cgroup that is gone (removed once empty; an entry is never dropped while its
    /// cgroup exists).
    ReleaseLaunch {
        cgroup: std::path::PathBuf,
        id: u64,
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
