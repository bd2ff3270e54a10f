//! What the runner watches through the seccomp listener besides denials: system calls that name a
//! path, so that an attempt to read or write outside the sandbox's paths is recorded as a violation.
//!
//! The mounts and Landlock decide; the runner only looks. It lets every watched call go on
//! (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`), which `seccomp_unotify(2)` says must never be a security
//! decision — it is not one here: a task that changes the path between the runner's read and the
//! kernel's can only make the record wrong, never reach a file the mounts and Landlock keep out.

use std::{
    collections::BTreeMap,
    os::unix::fs::FileExt as _,
    path::{Component, PathBuf},
};

use crate::policy::{
    model::{SeccompAction, SyscallCondition},
    seccomp::{self, Entry, Resolved},
};

/// Whether a call writes.
#[derive(Debug, Clone, Copy)]
pub enum Writes {
    Always,
    /// When the open flags (this argument) ask for writing, creating or truncating.
    Flags(usize),
    /// `openat2`: the flags are the first field of the `open_how` this argument points to.
    How(usize),
}

/// A system call that names a path: `(dirfd argument, path argument)` pairs, and whether it writes.
#[derive(Debug, Clone, Copy)]
pub struct PathCall {
    pub name: &'static str,
    pub paths: [Option<(Option<usize>, usize)>; 2],
    pub writes: Writes,
}

const fn call(name: &'static str, dirfd: Option<usize>, path: usize, writes: Writes) -> PathCall {
    PathCall { name, paths: [Some((dirfd, path)), None], writes }
}

const fn two(name: &'static str, a: (Option<usize>, usize), b: (Option<usize>, usize)) -> PathCall {
    PathCall { name, paths: [Some(a), Some(b)], writes: Writes::Always }
}

/// The watched calls (argument positions from their man pages; the same on `x86_64` and `aarch64`,
/// where the legacy calls do not exist).
pub const PATH_CALLS: [PathCall; 17] = [
    call("open", None, 0, Writes::Flags(1)),
    call("openat", Some(0), 1, Writes::Flags(2)),
    call("openat2", Some(0), 1, Writes::How(2)),
    call("creat", None, 0, Writes::Always),
    call("truncate", None, 0, Writes::Always),
    call("mkdir", None, 0, Writes::Always),
    call("mkdirat", Some(0), 1, Writes::Always),
    call("rmdir", None, 0, Writes::Always),
    call("unlink", None, 0, Writes::Always),
    call("unlinkat", Some(0), 1, Writes::Always),
    two("rename", (None, 0), (None, 1)),
    two("renameat", (Some(0), 1), (Some(2), 3)),
    two("renameat2", (Some(0), 1), (Some(2), 3)),
    call("symlink", None, 1, Writes::Always),
    call("symlinkat", Some(1), 2, Writes::Always),
    two("link", (None, 0), (None, 1)),
    two("linkat", (Some(0), 1), (Some(2), 3)),
];

/// `ioctl` requests every `CPython` start and every file it opens makes (`include/uapi/asm-generic/ioctls.h`): close-on-exec on and off, "is it a terminal", bytes waiting.
const BASELINE_IOCTLS: [u64; 4] = [0x5451, 0x5450, 0x5401, 0x541B];

/// Calls `CPython` makes at every start and handles badly when refused (glibc registers `rseq`;
/// `getrlimit` is `prlimit64` without a new limit; `os.cpu_count`, `stat`, `madvise` from its
/// allocator): allowed unless the profile names them.
const BASELINE: [&str; 6] = ["rseq", "sched_getaffinity", "statx", "newfstatat", "madvise", "getdents64"];

/// What a run's runner watches and knows.
#[derive(Debug, Default)]
pub struct Watch {
    /// Watched calls by number on this architecture.
    pub calls: BTreeMap<i64, PathCall>,
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
    /// Covered even below a readable or writable path (`protected_deny`).
    pub protected: Vec<PathBuf>,
    /// The interpreter's prefix, which it probes at every start (`pyvenv.cfg`, landmarks): reads
    /// there are not violations.
    pub prefix: Option<PathBuf>,
}

/// Adds the baseline and the watched calls to a resolved profile; returns the watched calls.
pub fn apply(resolved: &mut Resolved) -> BTreeMap<i64, PathCall> {
    let default_allows = resolved.default == SeccompAction::Allow;
    let allow = || Entry { base: SeccompAction::Allow, conditions: Vec::new(), dangerous: false };
    if !default_allows {
        for name in BASELINE {
            resolved.syscalls.entry(name.to_string()).or_insert_with(allow);
        }
        resolved.syscalls.entry("ioctl".into()).or_insert_with(|| Entry {
            base: SeccompAction::Deny,
            conditions: BASELINE_IOCTLS
                .iter()
                .map(|&request| SyscallCondition {
                    arg: 1,
                    mask: 0xffff_ffff,
                    value: request,
                    action: SeccompAction::Allow,
                })
                .collect(),
            dangerous: false,
        });
        // Reading a limit (no new limit: the third argument is NULL) is harmless; setting one is not.
        resolved.syscalls.entry("prlimit64".into()).or_insert_with(|| Entry {
            base: SeccompAction::Deny,
            conditions: vec![SyscallCondition {
                arg: 2,
                mask: u64::MAX,
                value: 0,
                action: SeccompAction::Allow,
            }],
            dangerous: false,
        });
    }
    let mut watched = BTreeMap::new();
    for call in PATH_CALLS {
        let allowed = match resolved.syscalls.get(call.name) {
            Some(entry) => entry.base == SeccompAction::Allow && entry.conditions.is_empty(),
            None => default_allows,
        };
        if let (true, Some(nr)) = (allowed, seccomp::number(call.name)) {
            resolved.syscalls.insert(
                call.name.to_string(),
                Entry { base: SeccompAction::Deny, conditions: Vec::new(), dangerous: false },
            );
            watched.insert(nr, call);
        }
    }
    watched
}

/// A violation a watched call makes, if it reaches outside: `(path, "read" | "write")`.
#[must_use]
pub fn check(watch: &Watch, call: &PathCall, pid: u32, args: &[u64; 6]) -> Option<(String, &'static str)> {
    let writes = match call.writes {
        Writes::Always => true,
        Writes::Flags(i) => open_writes(args[i]),
        Writes::How(i) => {
            let mut flags = [0u8; 8];
            if read_memory(pid, args[i], &mut flags) { open_writes(u64::from_ne_bytes(flags)) } else { true }
        }
    };
    for (dirfd, path) in call.paths.iter().flatten() {
        let raw = read_string(pid, args[*path])?;
        let resolved = resolve(pid, dirfd.map(|i| args[i]), &raw)?;
        let protected = watch.protected.iter().any(|p| resolved.starts_with(p));
        let inside = |set: &[PathBuf]| !protected && set.iter().any(|p| resolved.starts_with(p));
        if writes && !inside(&watch.write) {
            return Some((resolved.display().to_string(), "write"));
        }
        if !writes && !inside(&watch.read) && !watch.prefix.as_ref().is_some_and(|p| resolved.starts_with(p))
        {
            return Some((resolved.display().to_string(), "read"));
        }
    }
    None
}

fn open_writes(flags: u64) -> bool {
    let flags = i32::try_from(flags & 0xffff_ffff).unwrap_or(0);
    flags & libc::O_ACCMODE != libc::O_RDONLY || flags & (libc::O_CREAT | libc::O_TRUNC) != 0
}

fn read_memory(pid: u32, address: u64, buffer: &mut [u8]) -> bool {
    std::fs::File::open(format!("/proc/{pid}/mem")).and_then(|f| f.read_exact_at(buffer, address)).is_ok()
}

/// A NUL-terminated string from the task's memory (at most `PATH_MAX`).
fn read_string(pid: u32, address: u64) -> Option<String> {
    let file = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut out = Vec::new();
    let mut chunk = [0u8; 256];
    while out.len() < 4096 {
        let n = file.read_at(&mut chunk, address + out.len() as u64).ok()?;
        if n == 0 {
            return None;
        }
        if let Some(end) = chunk[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&chunk[..end]);
            return Some(String::from_utf8_lossy(&out).into_owned());
        }
        out.extend_from_slice(&chunk[..n]);
    }
    None
}

/// The absolute path a call names, as the task sees it: relative to its working directory or to the
/// directory descriptor (`/proc/PID/cwd` and `/proc/PID/fd/N` print paths from the task's own root),
/// with `.` and `..` taken lexically.
fn resolve(pid: u32, dirfd: Option<u64>, path: &str) -> Option<PathBuf> {
    let base = if path.starts_with('/') {
        PathBuf::from("/")
    } else {
        // The kernel reads a directory descriptor as an int: the low 32 bits (AT_FDCWD is -100).
        let fd = dirfd.map_or(libc::AT_FDCWD, |fd| {
            i32::from_ne_bytes(u32::try_from(fd & 0xffff_ffff).unwrap_or(0).to_ne_bytes())
        });
        let link =
            if fd == libc::AT_FDCWD { format!("/proc/{pid}/cwd") } else { format!("/proc/{pid}/fd/{fd}") };
        std::fs::read_link(link).ok()?
    };
    let mut out = PathBuf::from("/");
    for component in base.join(path).components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Some(out)
}
