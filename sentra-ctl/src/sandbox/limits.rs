//! A cgroup per sandbox run: memory (no swap), process count and CPU limits, a kill that takes the
//! whole run, and what happened (peak memory, OOM kills, refused forks).
//!
//! The leaf is made in the cgroup v2 hierarchy. Where v2 does not have the memory, pids or cpu
//! controller (a hybrid host keeps them in v1 hierarchies), that controller's v1 hierarchy gets a
//! leaf of the same name instead; a controller found in neither is an error, never a silent lack of
//! limit.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::{cgroup::cgroup2_root, policy::sandbox::Limits};

/// Where sandbox leaves live: `<hierarchy>/sentra-sandbox/run-<runner pid>-<n>`.
const PARENT: &str = "sentra-sandbox";
const PREFIX: &str = "run-";

/// CPU period for `cpu_max_percent` (the kernel's default CFS period).
const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, Clone)]
enum Controller {
    /// The v2 leaf holds it.
    V2,
    /// A v1 hierarchy's leaf holds it.
    V1(PathBuf),
}

/// What the run's cgroup saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub peak_bytes: Option<u64>,
    pub oom_kills: u64,
    /// Forks refused at `pids.max`.
    pub pids_refused: u64,
}

/// One run's cgroup leaf (and its v1 companions), removed on drop with whatever is left in it.
#[derive(Debug)]
pub struct Leaf {
    v2: PathBuf,
    memory: Controller,
    pids: Controller,
    cpu: Controller,
}

fn write(path: &Path, value: &str) -> anyhow::Result<()> {
    let mut file =
        std::fs::OpenOptions::new().write(true).open(path).with_context(|| path.display().to_string())?;
    file.write_all(value.as_bytes()).with_context(|| format!("writing `{value}` to {}", path.display()))
}

/// The v1 hierarchy a controller is mounted at (`/proc/self/mountinfo`: fs type `cgroup`, the
/// controller among its super options).
fn v1_mount(controller: &str) -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut right = right.split_whitespace();
        if right.next()? != "cgroup" {
            return None;
        }
        let options = right.nth(1)?;
        let mount = left.split_whitespace().nth(4)?;
        options.split(',').any(|o| o == controller).then(|| PathBuf::from(mount))
    })
}

impl Leaf {
    /// Creates the leaf with `limits` set, before any process is in it.
    ///
    /// # Errors
    /// No cgroup2 hierarchy, a controller available nowhere, or a limit that cannot be written.
    pub fn create(limits: &Limits) -> anyhow::Result<Self> {
        let root = cgroup2_root()?;
        let available = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
        let name = format!("{PREFIX}{}-{}", std::process::id(), unique());
        let parent = root.join(PARENT);
        std::fs::create_dir_all(&parent).with_context(|| parent.display().to_string())?;
        sweep(&parent);
        let pick = |controller: &str| -> anyhow::Result<Controller> {
            if available.split_whitespace().any(|c| c == controller) {
                // Enabled on the way down (the root and the parent have no processes of their own to
                // forbid it: cgroup v2's "no internal processes" rule exempts the root).
                let _ = write(&root.join("cgroup.subtree_control"), &format!("+{controller}"));
                write(&parent.join("cgroup.subtree_control"), &format!("+{controller}"))?;
                return Ok(Controller::V2);
            }
            let mount = v1_mount(controller).with_context(|| {
                format!(
                    "the {controller} controller is in neither the cgroup v2 hierarchy ({}) nor a v1 hierarchy: the sandbox cannot enforce its limits",
                    root.display()
                )
            })?;
            let dir = mount.join(PARENT);
            std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
            sweep(&dir);
            let leaf = dir.join(&name);
            std::fs::create_dir(&leaf).with_context(|| leaf.display().to_string())?;
            Ok(Controller::V1(leaf))
        };
        let memory = pick("memory")?;
        let pids = pick("pids")?;
        let cpu = pick("cpu")?;
        let v2 = parent.join(&name);
        std::fs::create_dir(&v2).with_context(|| v2.display().to_string())?;
        let leaf = Self { v2, memory, pids, cpu };
        leaf.apply(limits)?;
        Ok(leaf)
    }

    fn dir<'a>(&'a self, controller: &'a Controller) -> &'a Path {
        match controller {
            Controller::V2 => &self.v2,
            Controller::V1(dir) => dir,
        }
    }

    fn apply(&self, limits: &Limits) -> anyhow::Result<()> {
        let bytes = limits.mem_max_mb.saturating_mul(1 << 20);
        match &self.memory {
            Controller::V2 => {
                write(&self.v2.join("memory.max"), &bytes.to_string())?;
                let swap = self.v2.join("memory.swap.max");
                if swap.exists() {
                    write(&swap, "0")?;
                }
                // The whole run goes when the kernel kills for memory, not one process of it.
                let group = self.v2.join("memory.oom.group");
                if group.exists() {
                    write(&group, "1")?;
                }
            }
            Controller::V1(dir) => {
                write(&dir.join("memory.limit_in_bytes"), &bytes.to_string())?;
                let memsw = dir.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    write(&memsw, &bytes.to_string())?;
                }
                let _ = write(&dir.join("memory.swappiness"), "0");
            }
        }
        write(&self.dir(&self.pids).join("pids.max"), &limits.pids_max.to_string())?;
        let quota = u64::from(limits.cpu_max_percent) * CPU_PERIOD_US / 100;
        match &self.cpu {
            Controller::V2 => write(&self.v2.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))?,
            Controller::V1(dir) => {
                write(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
            }
        }
        Ok(())
    }

    /// The v2 leaf as a directory descriptor (for `CLONE_INTO_CGROUP`).
    ///
    /// # Errors
    /// It cannot be opened.
    pub fn open(&self) -> anyhow::Result<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(&self.v2)
            .with_context(|| self.v2.display().to_string())
    }

    /// Moves `pid` into the leaf's v1 companions (a process cloned into the v2 leaf).
    ///
    /// # Errors
    /// A `cgroup.procs` write fails.
    pub fn add_v1(&self, pid: u32) -> anyhow::Result<()> {
        self.add_to(pid, false)
    }

    /// Moves `pid` into the leaf (and its v1 companions).
    ///
    /// # Errors
    /// A `cgroup.procs` write fails.
    pub fn add(&self, pid: u32) -> anyhow::Result<()> {
        self.add_to(pid, true)
    }

    fn add_to(&self, pid: u32, v2: bool) -> anyhow::Result<()> {
        let v2 = v2.then_some(self.v2.as_path());
        for dir in v2.into_iter().chain(self.v1_dirs()) {
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// The v1 leaves, each once (controllers mounted together share one).
    fn v1_dirs(&self) -> Vec<&Path> {
        let mut dirs: Vec<&Path> = Vec::new();
        for controller in [&self.memory, &self.pids, &self.cpu] {
            if let Controller::V1(dir) = controller
                && !dirs.contains(&dir.as_path())
            {
                dirs.push(dir);
            }
        }
        dirs
    }

    /// The v2 leaf's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.v2
    }

    /// Kills everything in the leaf (`cgroup.kill`, Linux 5.14+; the caller also kills the PID
    /// namespace's init, which takes the namespace with it on every kernel).
    pub fn kill(&self) {
        let _ = write(&self.v2.join("cgroup.kill"), "1");
    }

    /// Peak memory, OOM kills and refused forks so far.
    #[must_use]
    pub fn usage(&self) -> Usage {
        let read = |path: PathBuf| std::fs::read_to_string(path).unwrap_or_default();
        let field = |text: &str, key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key).and_then(|v| v.trim().parse::<u64>().ok()))
                .unwrap_or(0)
        };
        let (peak_bytes, oom_kills) = match &self.memory {
            Controller::V2 => (
                read(self.v2.join("memory.peak")).trim().parse().ok(),
                field(&read(self.v2.join("memory.events")), "oom_kill "),
            ),
            Controller::V1(dir) => (
                read(dir.join("memory.max_usage_in_bytes")).trim().parse().ok(),
                field(&read(dir.join("memory.oom_control")), "oom_kill "),
            ),
        };
        let pids_refused = field(&read(self.dir(&self.pids).join("pids.events")), "max ");
        Usage { peak_bytes, oom_kills, pids_refused }
    }

    /// Whether any process is left in the leaf.
    #[must_use]
    pub fn populated(&self) -> bool {
        std::fs::read_to_string(self.v2.join("cgroup.procs")).is_ok_and(|t| !t.trim().is_empty())
    }
}

impl Drop for Leaf {
    fn drop(&mut self) {
        self.kill();
        remove(&self.v2);
        for dir in self.v1_dirs() {
            remove(dir);
        }
    }
}

/// Removes a leaf once its processes are gone (killed processes take a moment to leave).
fn remove(dir: &Path) {
    for _ in 0..300 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => {
                for pid in std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default().lines() {
                    if let Ok(pid) = pid.trim().parse::<i32>() {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    eprintln!("sentra python: warning: could not remove the cgroup {}", dir.display());
}

/// Removes the leaves of runners that are gone (killed before they could clean up).
fn sweep(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok() {
            continue;
        }
        let path = entry.path();
        let _ = write(&path.join("cgroup.kill"), "1");
        remove(&path);
    }
}

/// A number no other run of this process uses.
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Fails unless `dir` can hold a sandbox leaf (used by `doctor`).
///
/// # Errors
/// What is missing.
pub fn check() -> anyhow::Result<String> {
    let root = cgroup2_root()?;
    let available = std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
    let mut parts = Vec::new();
    for controller in ["memory", "pids", "cpu"] {
        if available.split_whitespace().any(|c| c == controller) {
            parts.push(format!("{controller}: v2"));
        } else if let Some(mount) = v1_mount(controller) {
            parts.push(format!("{controller}: v1 at {}", mount.display()));
        } else {
            bail!("no {controller} controller (v2 at {} or v1)", root.display());
        }
    }
    Ok(parts.join(", "))
}
