//! What a controller must know to adopt pinned enforcement: kept in `/run/sentra/state.json`
//! (tmpfs like the pins: both vanish at reboot).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::policy::exec::RuleTable;

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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub policy: PathBuf,
    pub policy_hash: String,
    pub policy_version: Option<String>,
    pub mode: String,
    pub backend: String,
    /// Rule tables of both generations (index = generation).
    pub tables: [RuleTable; 2],
    pub cgroups: Vec<GovernedPath>,
    pub audit_log: PathBuf,
    pub started: String,
    /// How many times a controller adopted this state after the previous one went away.
    pub adoptions: u32,
    pub reloads: u32,
}

impl State {
    /// Reads the state file.
    ///
    /// # Errors
    /// Missing or unreadable.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Writes the state file atomically (write then rename).
    ///
    /// # Errors
    /// The directory or file cannot be written.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        use std::io::Write as _;
        let tmp = path.with_extension("json.tmp");
        // Compact and streamed: with 10,000 rules in each table the pretty form was 2 MB built in
        // memory first, ~4 ms of every reload.
        let mut out = std::io::BufWriter::with_capacity(1 << 16, std::fs::File::create(&tmp)?);
        serde_json::to_writer(&mut out, self)?;
        out.flush()?;
        drop(out);
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}
