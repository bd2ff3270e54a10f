//! cgroup v2: finding the hierarchy, creating governed cgroups, moving processes, cleaning up.

use std::{
    io::Write as _,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

/// Errors about cgroups, naming the path involved.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup v2 hierarchy is mounted (looked in /proc/self/mountinfo for a cgroup2 mount)")]
    NoCgroup2,
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io { path: path.to_path_buf(), source }
}

/// Where cgroup v2 is mounted: `/sys/fs/cgroup` on unified systems, `/sys/fs/cgroup/unified` on hybrid
/// ones; read from the mount table, never assumed.
///
/// # Errors
/// No cgroup2 mount.
pub fn cgroup2_root() -> Result<PathBuf, CgroupError> {
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(io(Path::new("/proc/self/mountinfo")))?;
    parse_cgroup2_root(&mountinfo).ok_or(CgroupError::NoCgroup2)
}

/// Finds the first cgroup2 mount point in mountinfo text (proc(5): fields, then ` - fstype source …`).
#[must_use]
pub fn parse_cgroup2_root(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        Some(PathBuf::from(unescape(left.split_whitespace().nth(4)?)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len() + 1
            && let Some(octal) = field.get(i + 1..i + 4)
            && let Ok(value) = u8::from_str_radix(octal, 8)
        {
            out.push(value);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Top-level directory, under the cgroup2 root, of every cgroup the controller governs.
pub const GOVERNED_PARENT: &str = "sentra";

/// The cgroup v2 path (relative to the hierarchy root as the reader's cgroup namespace sees it,
/// starting with `/`) of `/proc/ENTRY` (`self` or a pid), from its `cgroup` file's `0::` line.
#[must_use]
pub fn cgroup_of(entry: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{entry}/cgroup")).ok()?;
    text.lines().find_map(|line| line.strip_prefix("0::")).map(str::to_string)
}

/// The id of a process's cgroup v2: the inode of its directory, as the kernel's events give it.
#[must_use]
pub fn id_of(pid: u32) -> Option<u64> {
    let dir = dir_of(&cgroup_of(&pid.to_string())?).ok()?;
    std::fs::metadata(dir).ok().map(|m| m.ino())
}

/// The directory of a cgroup path as [`cgroup_of`] gives it (`/a/b` → `<cgroup2 root>/a/b`).
///
/// # Errors
/// The cgroup2 hierarchy is not mounted.
pub fn dir_of(path: &str) -> Result<PathBuf, CgroupError> {
    Ok(cgroup2_root()?.join(path.trim_start_matches('/')))
}

/// The calling process's cgroup v2 path ([`cgroup_of`] `self`).
#[must_use]
pub fn own_cgroup() -> Option<String> {
    cgroup_of("self")
}

/// Name prefix of a launch cgroup made in a cgroup delegated to its launcher (a systemd service with
/// `Delegate=yes`): `sentra-launch-<launcher pid>`. The controller governs a delegated cgroup only
/// under such a name, so that [`is_governed_path`] recognises every governed cgroup by its path.
pub const DELEGATED_PREFIX: &str = "sentra-launch-";

/// Whether a cgroup path (as [`cgroup_of`] gives it) is one the controller may govern: below
/// `/sentra/`, where every cgroup a controller governs and every `run`'s is created, or at or below a
/// delegated launch cgroup ([`DELEGATED_PREFIX`]). A path that merely looks governed is treated as
/// governed (refused control): failing closed.
#[must_use]
pub fn is_governed_path(path: &str) -> bool {
    let below_parent = path
        .strip_prefix('/')
        .and_then(|rest| rest.strip_prefix(GOVERNED_PARENT))
        .is_some_and(|rest| rest.starts_with('/'));
    below_parent || path.split('/').any(|component| component.starts_with(DELEGATED_PREFIX))
}

/// Whether the calling process sits in a cgroup the controller governs (anywhere under
/// `/sentra/`). Informational (for audit records): the kernel, not this check, enforces.
#[must_use]
pub fn in_governed_cgroup() -> bool {
    own_cgroup().is_some_and(|path| is_governed_path(&path))
}

/// A cgroup this process created and removes on drop (killing what is left in it).
#[derive(Debug)]
pub struct Cgroup {
    pub path: PathBuf,
    pub id: u64,
    /// Depth below the hierarchy's root.
    pub level: u32,
    keep: bool,
}

impl Cgroup {
    /// Creates `root/relative` (parents included).
    ///
    /// # Errors
    /// The directory cannot be created or read.
    pub fn create(root: &Path, relative: &Path) -> Result<Self, CgroupError> {
        let path = root.join(relative);
        std::fs::create_dir_all(&path).map_err(io(&path))?;
        let id = std::fs::metadata(&path).map_err(io(&path))?.ino();
        let level = u32::try_from(relative.components().count()).unwrap_or(u32::MAX);
        Ok(Self { path, id, level, keep: false })
    }

    /// Path of the file through which processes are moved in.
    #[must_use]
    pub fn procs_file(&self) -> PathBuf {
        self.path.join("cgroup.procs")
    }

    /// Moves a process in.
    ///
    /// # Errors
    /// The write fails.
    pub fn add(&self, pid: u32) -> Result<(), CgroupError> {
        let procs = self.procs_file();
        let mut file = std::fs::OpenOptions::new().write(true).open(&procs).map_err(io(&procs))?;
        file.write_all(pid.to_string().as_bytes()).map_err(io(&procs))
    }

    /// Process ids in this cgroup and all below it.
    #[must_use]
    pub fn all_pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        collect_pids(&self.path, &mut pids);
        pids
    }

    /// Leaves the cgroup in place on drop.
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Kills every process in the subtree and removes its directories, deepest first.
    pub fn destroy(&mut self) {
        // cgroup.kill (Linux 5.14+) kills the whole subtree atomically; fall back to signalling each pid.
        let kill = self.path.join("cgroup.kill");
        if std::fs::write(&kill, b"1").is_err() {
            for pid in self.all_pids() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX)),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        for _ in 0..200 {
            if remove_tree(&self.path) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        tracing::warn!("could not remove cgroup {}", self.path.display());
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if !self.keep {
            self.destroy();
        }
    }
}

fn collect_pids(dir: &Path, pids: &mut Vec<u32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                collect_pids(&entry.path(), pids);
            }
        }
    }
}

/// Removes a cgroup directory tree (cgroup directories are removed with rmdir, children first).
fn remove_tree(dir: &Path) -> bool {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path());
            }
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => true,
        Err(err) => err.kind() == std::io::ErrorKind::NotFound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_unified_and_hybrid_mounts() {
        let unified = "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(parse_cgroup2_root(unified), Some(PathBuf::from("/sys/fs/cgroup")));
        let hybrid = "25 24 0:22 / /sys/fs/cgroup ro shared:6 - tmpfs tmpfs ro,mode=755\n\
                      26 25 0:23 / /sys/fs/cgroup/unified rw shared:7 - cgroup2 cgroup2 rw\n\
                      27 25 0:24 / /sys/fs/cgroup/cpu rw shared:8 - cgroup cgroup rw,cpu\n";
        assert_eq!(parse_cgroup2_root(hybrid), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(parse_cgroup2_root("1 0 0:1 / / rw - ext4 /dev/vda rw\n"), None);
    }

    #[test]
    fn governed_paths_are_below_the_parent() {
        assert!(is_governed_path("/sentra/agent"));
        assert!(is_governed_path("/sentra/agent/child"));
        assert!(!is_governed_path("/sentra"));
        assert!(!is_governed_path("/sentrax/agent"));
        assert!(!is_governed_path("/user.slice/sentra/agent"));
        assert!(!is_governed_path("/"));
        assert!(is_governed_path("/system.slice/openclaw.service/sentra-launch-12"));
        assert!(is_governed_path("/system.slice/openclaw.service/sentra-launch-12/child"));
        assert!(!is_governed_path("/system.slice/openclaw.service"));
    }

    #[test]
    fn unescapes_mountinfo_paths() {
        assert_eq!(unescape("/a\\040b"), "/a b");
    }
}
