//! What a controller must know to adopt pinned enforcement: kept in `/run/sentra/state.json`
//! (tmpfs like the pins: both vanish at reboot).

use std::path::{Path, PathBuf};

use sentra_common::settings::Backend;
use serde::{Deserialize, Serialize};

use crate::enforce::{PolicyInfo, Session, generations::ExecTables};

/// The controller's runtime directory: `$SENTRA_RUN_DIR`, else `/run/sentra` (root-only, mode 0700).
#[must_use]
pub fn run_dir() -> PathBuf {
    std::env::var_os("SENTRA_RUN_DIR").map_or_else(|| PathBuf::from("/run/sentra"), PathBuf::from)
}

/// The state file in the runtime directory.
#[must_use]
pub fn state_file() -> PathBuf {
    run_dir().join("state.json")
}

/// Where pins live: `$SENTRA_PIN_ROOT`, else `/sys/fs/bpf/sentra`.
#[must_use]
pub fn pin_root() -> PathBuf {
    std::env::var_os("SENTRA_PIN_ROOT")
        .map_or_else(|| PathBuf::from(crate::kernel::pin::PIN_ROOT), PathBuf::from)
}

/// A governed cgroup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GovernedPath {
    pub path: PathBuf,
    pub id: u64,
}

/// The daemon's own facts (what the enforcement session does not own).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub cgroups: Vec<GovernedPath>,
    /// Delegated launch cgroups (systemd units' agents) governed now, with program links of their
    /// own; released when their launcher removes them.
    #[serde(default)]
    pub delegated: Vec<GovernedPath>,
    pub audit_log: PathBuf,
    pub started: String,
    /// How many times a controller adopted this state after the previous one went away.
    pub adoptions: u32,
    pub reloads: u32,
}

/// The state file: the daemon's facts, the enforced policy, the backend and the exec tables of
/// both generations (what a restarted controller needs to name the rules of pinned generations).
#[derive(Serialize)]
struct Saved<'a> {
    #[serde(flatten)]
    state: &'a State,
    #[serde(flatten)]
    policy: &'a PolicyInfo,
    backend: Backend,
    tables: &'a ExecTables,
}

/// The state file as read back.
#[derive(Deserialize)]
pub struct Loaded {
    #[serde(flatten)]
    pub state: State,
    #[serde(flatten)]
    pub policy: PolicyInfo,
    /// An unknown backend is an error, never a guess.
    pub backend: Backend,
    pub tables: ExecTables,
}

impl State {
    /// Reads the state file.
    ///
    /// # Errors
    /// Missing, unreadable or not a state file.
    pub fn load(path: &Path) -> anyhow::Result<Loaded> {
        let text = std::fs::read_to_string(path)?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Writes the state file atomically (write then rename) with what `session` enforces.
    ///
    /// # Errors
    /// The directory or file cannot be written.
    pub fn save(&self, path: &Path, session: &Session) -> anyhow::Result<()> {
        use std::io::Write as _;
        let tmp = path.with_extension("json.tmp");
        // Compact and streamed: with large policies the pretty form was megabytes built in memory.
        let mut out = std::io::BufWriter::with_capacity(1 << 16, std::fs::File::create(&tmp)?);
        let saved = Saved {
            state: self,
            policy: &session.policy,
            backend: session.backend,
            tables: session.exec_tables(),
        };
        serde_json::to_writer(&mut out, &saved)?;
        out.flush()?;
        drop(out);
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}
