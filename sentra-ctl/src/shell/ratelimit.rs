//! Rate limiting per identity across processes: `OpenClaw` starts one `sentra-shell` per command, so
//! the count lives in a file (one per identity) updated under an exclusive `flock`.
//!
//! The file holds the start times (milliseconds since the epoch, u64 little-endian) of the commands
//! within the window: a sliding window, not a fixed one that a burst at its edge could double.

use std::{
    fs::OpenOptions,
    io::{Read as _, Seek as _, SeekFrom, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use nix::fcntl::{Flock, FlockArg};

use crate::policy::model::RateLimit;

/// Errors of the shared counter; the caller refuses the command (fail closed).
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    #[error("rate-limit state {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("rate-limit state {path}: cannot lock: {errno}")]
    Lock { path: PathBuf, errno: nix::errno::Errno },
}

/// The outcome of taking one command from the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Counted; `used` commands (this one included) in the current window.
    Admitted { used: u32 },
    /// Over the limit; retry after this long.
    Limited { used: u32, retry_after: Duration },
}

/// The state file for `identity` in `dir`.
#[must_use]
pub fn state_path(dir: &Path, identity: &str) -> PathBuf {
    // Identities are free text: keep file names to a safe alphabet, distinct by a hash.
    let safe: String = identity
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .take(64)
        .collect();
    let hash = identity
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    dir.join(format!("ratelimit-{safe}-{hash:016x}.state"))
}

/// Takes one command from `identity`'s budget (file `path`), or says how long to wait.
///
/// # Errors
/// The state file cannot be created, locked, read or written.
pub fn admit(path: &Path, limit: RateLimit) -> Result<Admission, RateLimitError> {
    admit_at(path, limit, SystemTime::now())
}

/// [`admit`] at a given time (for tests).
///
/// # Errors
/// As [`admit`].
pub fn admit_at(path: &Path, limit: RateLimit, now: SystemTime) -> Result<Admission, RateLimitError> {
    let io = |source| RateLimitError::Io { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    let mut file = Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| RateLimitError::Lock { path: path.to_path_buf(), errno })?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io)?;
    let mut times: Vec<u64> =
        bytes.chunks_exact(8).filter_map(|chunk| chunk.try_into().ok().map(u64::from_le_bytes)).collect();
    let admission = take(&mut times, limit, millis(now));
    let out: Vec<u8> = times.iter().flat_map(|t| t.to_le_bytes()).collect();
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.write_all(&out).map_err(io)?;
    file.set_len(out.len() as u64).map_err(io)?;
    Ok(admission)
}

fn millis(time: SystemTime) -> u64 {
    u64::try_from(time.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis()).unwrap_or(u64::MAX)
}

/// The sliding window: drops the start times (ms) that left the window, then takes one command from
/// the budget or says when one frees up. One rule for the file-backed and the controller's counts.
fn take(times: &mut Vec<u64>, limit: RateLimit, now_ms: u64) -> Admission {
    let window_ms = limit.window_seconds.saturating_mul(1000);
    // Entries from the future (clock set back) are kept: they still count against the budget.
    times.retain(|&t| now_ms.saturating_sub(t) < window_ms);
    times.sort_unstable();
    let used = u32::try_from(times.len()).unwrap_or(u32::MAX);
    if used >= limit.max_commands {
        let oldest = times.len().saturating_sub(limit.max_commands.max(1) as usize);
        let frees_at = times.get(oldest).copied().unwrap_or(now_ms).saturating_add(window_ms);
        // Only the newest `max_commands` matter from here on: the list stays bounded.
        let excess = times.len().saturating_sub(limit.max_commands as usize);
        times.drain(..excess);
        Admission::Limited { used, retry_after: Duration::from_millis(frees_at.saturating_sub(now_ms)) }
    } else {
        times.push(now_ms);
        Admission::Admitted { used: used.saturating_add(1) }
    }
}

/// The controller's budgets, one per governed peer (its cgroup and uid, from the kernel's
/// credentials: nothing the agent names or can reset), kept in memory.
#[derive(Debug, Default)]
pub struct Budgets {
    by_peer: std::collections::HashMap<(String, u32), Vec<u64>>,
}

/// Peers whose budgets are kept at once; the idle ones go first when more arrive.
const MAX_PEERS: usize = 4096;

impl Budgets {
    /// Takes one command from the budget of `peer` under `limit`.
    pub fn admit(&mut self, peer: (String, u32), limit: RateLimit, now: SystemTime) -> Admission {
        let now_ms = millis(now);
        if self.by_peer.len() >= MAX_PEERS && !self.by_peer.contains_key(&peer) {
            let window_ms = limit.window_seconds.saturating_mul(1000);
            self.by_peer.retain(|_, times| times.iter().any(|&t| now_ms.saturating_sub(t) < window_ms));
            if self.by_peer.len() >= MAX_PEERS {
                // Every kept peer is active: the one with the oldest last command goes.
                if let Some(idle) = self
                    .by_peer
                    .iter()
                    .min_by_key(|(_, times)| times.last().copied().unwrap_or(0))
                    .map(|(key, _)| key.clone())
                {
                    self.by_peer.remove(&idle);
                }
            }
        }
        take(self.by_peer.entry(peer).or_default(), limit, now_ms)
    }
}

/// Commands counted in the current window, without taking one (for `status`).
#[must_use]
pub fn usage(path: &Path, limit: RateLimit) -> u32 {
    let now_ms = u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis())
        .unwrap_or(u64::MAX);
    let window_ms = limit.window_seconds.saturating_mul(1000);
    std::fs::read(path).map_or(0, |bytes| {
        let n = bytes
            .chunks_exact(8)
            .filter_map(|chunk| chunk.try_into().ok().map(u64::from_le_bytes))
            .filter(|&t| now_ms.saturating_sub(t) < window_ms)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window_across_calls() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = state_path(dir.path(), "agent/1");
        let limit = RateLimit { max_commands: 2, window_seconds: 10 };
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(admit_at(&path, limit, t0).expect("ok"), Admission::Admitted { used: 1 });
        assert_eq!(
            admit_at(&path, limit, t0 + Duration::from_secs(4)).expect("ok"),
            Admission::Admitted { used: 2 }
        );
        assert_eq!(
            admit_at(&path, limit, t0 + Duration::from_secs(5)).expect("ok"),
            Admission::Limited { used: 2, retry_after: Duration::from_secs(5) }
        );
        // The first command leaves the window at t0+10.
        assert_eq!(
            admit_at(&path, limit, t0 + Duration::from_secs(10)).expect("ok"),
            Admission::Admitted { used: 2 }
        );
        assert!(
            path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("ratelimit-agent_1-"))
        );
    }
}
