//! The runner's side of a run: clone the sandbox's first process into its namespaces, put it in the
//! run's cgroup, take its seccomp listener, then watch one `poll` loop until it is over: output (kept
//! up to the limits; past them the run is stopped, so a writer never blocks on a full pipe), the
//! filter's notifications (each denial answered `EPERM` and recorded; the interpreter's own exec let
//! through), the process's exit (its pidfd) and the wall-clock deadline (the whole cgroup and PID
//! namespace killed).

use std::{
    io::Write as _,
    os::fd::{AsRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{Violation, child, limits::Leaf, observe::Watch, owned};
use crate::policy::sandbox::Limits;

/// Violations kept in a response; more are counted.
pub const MAX_VIOLATIONS: usize = 64;

/// How long output may keep coming after the sandbox's init exited (its namespace is being killed).
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// How a run ended.
#[derive(Debug, Default)]
pub struct Outcome {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub timed_out: bool,
    pub truncated: bool,
    pub violations: Vec<Violation>,
    pub violations_dropped: u64,
    pub landlock: String,
    pub limit: Option<&'static str>,
}

impl Outcome {
    fn violation(&mut self, violation: Violation) {
        if let Some(same) = self.violations.iter_mut().find(|v| {
            v.kind == violation.kind
                && v.syscall == violation.syscall
                && v.limit == violation.limit
                && v.path == violation.path
        }) {
            same.count += 1;
        } else if self.violations.len() < MAX_VIOLATIONS {
            self.violations.push(violation);
        } else {
            self.violations_dropped += 1;
        }
    }
}

fn pipe() -> anyhow::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

/// Kills the sandbox's init (and so its PID namespace) unless disarmed.
struct Reaper {
    pid: i32,
    armed: bool,
}

impl Drop for Reaper {
    fn drop(&mut self) {
        if self.armed {
            let pid = nix::unistd::Pid::from_raw(self.pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
        }
    }
}

/// One captured stream.
struct Stream {
    fd: Option<OwnedFd>,
    cap: u64,
    name: &'static str,
}

/// Starts the sandbox and watches it to its end.
///
/// # Errors
/// The sandbox could not be set up (its first process said why, or could not be started).
pub fn start_and_watch(
    plan: &child::ChildPlan,
    leaf: &Leaf,
    limits: &Limits,
    watch: &Watch,
) -> anyhow::Result<Outcome> {
    let (go_r, go_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let mut flags =
        libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS | libc::CLONE_PIDFD;
    if plan.own_network {
        flags |= libc::CLONE_NEWNET;
    }
    let cgroup = leaf.open()?;
    let (pid, pidfd, in_leaf) = clone(u64::try_from(flags).unwrap_or(0), &cgroup)?;
    if pid == 0 {
        drop((go_w, status_r, out_r, err_r));
        child::run(plan, &child::Ends { go: go_r, status: status_w, stdout: out_w, stderr: err_w });
    }
    drop((go_r, status_w, out_w, err_w, cgroup));
    let reaper = Reaper { pid, armed: true };
    let pidfd = owned(pidfd.into())?;
    let mut go = std::fs::File::from(go_w);
    if in_leaf {
        leaf.add_v1(pid.unsigned_abs())?;
    } else {
        leaf.add(pid.unsigned_abs())?;
    }
    go.write_all(b"G")?;
    let watcher = Watcher {
        pid,
        pidfd,
        reaper,
        go,
        leaf,
        limits,
        watch,
        deadline: Instant::now() + Duration::from_secs(limits.timeout_sec),
        execve: crate::policy::seccomp::number("execve"),
        outcome: Outcome { landlock: "none".into(), ..Outcome::default() },
        status: Some(status_r),
        status_text: Vec::new(),
        listener: None,
        exec_let_through: false,
        streams: [
            Stream { fd: Some(out_r), cap: limits.max_stdout_bytes, name: "stdout" },
            Stream { fd: Some(err_r), cap: limits.max_stderr_bytes, name: "stderr" },
        ],
        exited: None,
        buffer: vec![0u8; 64 * 1024],
    };
    watcher.run()
}

/// `clone3(2)`'s arguments (include/uapi/linux/sched.h, `CLONE_ARGS_SIZE_VER2`).
#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `CLONE_INTO_CGROUP` (include/uapi/linux/sched.h).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Clones the sandbox's first process as fork does (no `CLONE_VM`: a copy of this single-threaded
/// process), born in the v2 leaf where the kernel can (`clone3` with `CLONE_INTO_CGROUP`, Linux 5.7+):
/// moving a process between cgroups waits for an RCU grace period (kernel/cgroup/cgroup.c,
/// `cgroup_attach_lock`), which was half the sandbox's start. Returns the pid (0 in the child), the
/// pidfd, and whether the child was born in the leaf.
fn clone(flags: u64, cgroup: &std::fs::File) -> anyhow::Result<(i32, libc::c_int, bool)> {
    let mut pidfd: libc::c_int = -1;
    let args = CloneArgs {
        flags: flags | CLONE_INTO_CGROUP,
        pidfd: &raw mut pidfd as u64,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: u64::try_from(libc::SIGCHLD).unwrap_or(17),
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: u64::try_from(cgroup.as_raw_fd()).unwrap_or(0),
    };
    // SAFETY: a valid clone_args of the size passed; without CLONE_VM the child runs on a copy of
    // this process's memory, as after fork.
    let pid = unsafe { libc::syscall(libc::SYS_clone3, &raw const args, std::mem::size_of::<CloneArgs>()) };
    if pid >= 0 {
        return Ok((i32::try_from(pid).context("pid out of range")?, pidfd, true));
    }
    let error = std::io::Error::last_os_error();
    // ENOSYS: no clone3 (before 5.3); E2BIG or EINVAL: no CLONE_INTO_CGROUP (before 5.7).
    if !matches!(error.raw_os_error(), Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL)) {
        return Err(error).context("clone3 (namespaces for the sandbox)");
    }
    // SAFETY: as above; with CLONE_PIDFD the kernel stores the pidfd through the parent_tid
    // pointer, the third argument on x86_64 and aarch64 alike.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::c_ulong::try_from(flags).unwrap_or(0)
                | libc::c_ulong::try_from(libc::SIGCHLD).unwrap_or(17),
            0,
            &raw mut pidfd,
            0,
            0,
        )
    };
    if pid < 0 {
        return Err(std::io::Error::last_os_error()).context("clone (namespaces for the sandbox)");
    }
    Ok((i32::try_from(pid).context("pid out of range")?, pidfd, false))
}

/// What [`pollfd`](libc::pollfd) entries stand for.
#[derive(Clone, Copy)]
enum Role {
    Exit,
    Status,
    Listener,
    Stream(usize),
}

/// The runner's state while the sandbox runs.
struct Watcher<'a> {
    pid: i32,
    pidfd: OwnedFd,
    reaper: Reaper,
    go: std::fs::File,
    leaf: &'a Leaf,
    limits: &'a Limits,
    watch: &'a Watch,
    deadline: Instant,
    execve: Option<i64>,
    outcome: Outcome,
    status: Option<OwnedFd>,
    status_text: Vec<u8>,
    listener: Option<OwnedFd>,
    exec_let_through: bool,
    streams: [Stream; 2],
    exited: Option<Instant>,
    buffer: Vec<u8>,
}

impl Watcher<'_> {
    fn run(mut self) -> anyhow::Result<Outcome> {
        loop {
            let open_streams = self.streams.iter().any(|s| s.fd.is_some());
            if let Some(at) = self.exited
                && (!open_streams || at.elapsed() > DRAIN_GRACE)
            {
                return Ok(self.outcome);
            }
            let now = Instant::now();
            if self.exited.is_none() && now >= self.deadline && !self.outcome.timed_out {
                self.time_out();
            }
            let mut polled: Vec<libc::pollfd> = Vec::with_capacity(5);
            let mut roles = Vec::with_capacity(5);
            let mut add = |fd: i32, role: Role| {
                polled.push(libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
                roles.push(role);
            };
            if self.exited.is_none() {
                add(self.pidfd.as_raw_fd(), Role::Exit);
            }
            if let Some(fd) = &self.status {
                add(fd.as_raw_fd(), Role::Status);
            }
            if let Some(fd) = &self.listener {
                add(fd.as_raw_fd(), Role::Listener);
            }
            for (i, stream) in self.streams.iter().enumerate() {
                if let Some(fd) = &stream.fd {
                    add(fd.as_raw_fd(), Role::Stream(i));
                }
            }
            let wait = if self.outcome.timed_out || self.exited.is_some() {
                100
            } else {
                i32::try_from(self.deadline.saturating_duration_since(now).as_millis())
                    .unwrap_or(i32::MAX)
                    .max(1)
            };
            // SAFETY: a valid array of pollfds of the length passed.
            let ready = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, wait) };
            if ready < 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                bail!("poll: {}", std::io::Error::last_os_error());
            }
            for (entry, role) in polled.iter().zip(roles) {
                if entry.revents != 0 {
                    self.handle(role, *entry)?;
                }
            }
        }
    }

    fn handle(&mut self, role: Role, entry: libc::pollfd) -> anyhow::Result<()> {
        match role {
            Role::Exit => {
                self.exited = Some(Instant::now());
                self.outcome.exit_code = reap(self.pid);
                self.reaper.armed = false;
            }
            Role::Status => {
                let n = read(entry.fd, &mut self.buffer);
                if n == 0 {
                    self.status = None;
                } else {
                    self.status_text.extend_from_slice(&self.buffer[..n]);
                    self.status_lines()?;
                }
            }
            Role::Listener => {
                if entry.revents & libc::POLLIN == 0 {
                    self.listener = None;
                } else if let Some(fd) = &self.listener
                    && let Some(violation) =
                        answer(fd, self.execve, self.pid, &mut self.exec_let_through, self.watch)
                {
                    self.outcome.violation(violation);
                }
            }
            Role::Stream(i) => self.output(i, entry.fd),
        }
        Ok(())
    }

    /// The first process's lines: Landlock's state, the listener to take, or why it failed.
    fn status_lines(&mut self) -> anyhow::Result<()> {
        while let Some(end) = self.status_text.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.status_text.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            if let Some(state) = line.strip_prefix('K') {
                self.outcome.landlock = state.to_string();
            } else if let Some(fd) = line.strip_prefix('L') {
                let target: i64 = fd.parse().context("listener number")?;
                // SAFETY: pidfd_getfd(2) on a pidfd this process owns.
                let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, self.pidfd.as_raw_fd(), target, 0) };
                self.listener = Some(owned(got).context("pidfd_getfd (the sandbox's seccomp listener)")?);
                self.go.write_all(b"T")?;
            } else if let Some(message) = line.strip_prefix('E') {
                bail!("setting up the sandbox: {message}");
            }
        }
        Ok(())
    }

    /// Keeps output up to the stream's limit. Output beyond it ends the run (the response could not
    /// carry it, and a program that keeps writing would otherwise burn its whole timeout): the run is
    /// killed, `truncated` and the stream's limit say why.
    fn output(&mut self, i: usize, fd: i32) {
        let n = read(fd, &mut self.buffer);
        let stream = &mut self.streams[i];
        if n == 0 {
            stream.fd = None;
            return;
        }
        let kept = if stream.name == "stdout" { &mut self.outcome.stdout } else { &mut self.outcome.stderr };
        let room = usize::try_from(stream.cap).unwrap_or(usize::MAX).saturating_sub(kept.len());
        kept.extend_from_slice(&self.buffer[..n.min(room)]);
        if n > room && !self.outcome.truncated {
            self.outcome.truncated = true;
            let name = stream.name;
            let detail = format!("{name} went past {} bytes: cut there, and the run was stopped", stream.cap);
            if self.exited.is_none() {
                self.outcome.limit = self.outcome.limit.or(Some(name));
                self.kill();
            }
            self.outcome.violation(Violation::limit(name, detail));
        }
    }

    /// Kills the whole run: its cgroup, and its PID namespace through its init.
    fn kill(&self) {
        self.leaf.kill();
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), nix::sys::signal::Signal::SIGKILL);
    }

    /// The deadline passed: the run is killed.
    fn time_out(&mut self) {
        self.outcome.timed_out = true;
        self.outcome.limit = Some("timeout");
        self.outcome.violation(Violation::limit(
            "timeout",
            format!("killed at timeout_sec {}", self.limits.timeout_sec),
        ));
        self.kill();
    }
}

fn read(fd: i32, buffer: &mut [u8]) -> usize {
    // SAFETY: reads into a buffer of the length passed.
    let n = unsafe { libc::read(fd, buffer.as_mut_ptr().cast(), buffer.len()) };
    usize::try_from(n).unwrap_or(0)
}

/// The exit code of the sandbox's init: its status, or 128 + the signal that ended it.
fn reap(pid: i32) -> i32 {
    use nix::sys::wait::{WaitStatus, waitpid};
    match waitpid(nix::unistd::Pid::from_raw(pid), None) {
        Ok(WaitStatus::Exited(_, code)) => code,
        Ok(WaitStatus::Signaled(_, signal, _)) => 128 + signal as i32,
        _ => -1,
    }
}

/// Answers one notification: the interpreter's own exec and every watched call go on (a watched
/// call that reaches outside is a violation); everything else fails with `EPERM` and is a violation.
fn answer(
    listener: &OwnedFd,
    execve: Option<i64>,
    init: i32,
    exec_let_through: &mut bool,
    watch: &Watch,
) -> Option<Violation> {
    // SAFETY: the kernel wants a zeroed struct (kernel/seccomp.c, seccomp_notify_recv).
    let mut notification: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: the ioctl writes one seccomp_notif.
    if unsafe { libc::ioctl(listener.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &raw mut notification) }
        != 0
    {
        return None;
    }
    let nr = notification.data.nr;
    let first_exec = !*exec_let_through
        && execve == Some(i64::from(nr))
        && i32::try_from(notification.pid).is_ok_and(|p| p == init);
    let watched = watch.calls.get(&i64::from(nr));
    // Read before answering: the task waits, so its memory and descriptors are what it passed.
    let outside = watched
        .and_then(|call| super::observe::check(watch, call, notification.pid, &notification.data.args));
    // The process, for the record, while it waits (it may exit right after the answer).
    let task = (outside.is_some() || (watched.is_none() && !first_exec))
        .then(|| crate::audit::Task::from_proc(notification.pid));
    let valid = {
        let id = notification.id;
        // SAFETY: the ioctl reads one u64.
        unsafe { libc::ioctl(listener.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &raw const id) == 0 }
    };
    // Continuing is safe for the first exec because only the runner's own code has run in the
    // process, so the arguments the kernel reads after the answer are the runner's; for a watched
    // call because the answer decides nothing (see `observe`) (seccomp_unotify(2)).
    let response = if first_exec || watched.is_some() {
        *exec_let_through |= first_exec;
        libc::seccomp_notif_resp {
            id: notification.id,
            val: 0,
            error: 0,
            flags: u32::try_from(libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE).unwrap_or(1),
        }
    } else {
        libc::seccomp_notif_resp { id: notification.id, val: 0, error: -libc::EPERM, flags: 0 }
    };
    // SAFETY: the ioctl reads one seccomp_notif_resp.
    unsafe { libc::ioctl(listener.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &raw const response) };
    if first_exec {
        return None;
    }
    if let Some(call) = watched {
        let (path, access) = outside.filter(|_| valid)?;
        return Some(Violation {
            kind: "file",
            detail: format!(
                "{access} outside the sandbox's paths: {path} ({}); the sandbox's mounts and Landlock refuse it",
                call.name
            ),
            syscall: Some(call.name.to_string()),
            limit: None,
            pid: Some(notification.pid),
            count: 1,
            path: Some(path),
            task,
        });
    }
    let syscall = crate::policy::seccomp::name(nr).map_or_else(|| format!("#{nr}"), str::to_string);
    Some(Violation {
        kind: "syscall",
        detail: format!("system call {syscall} denied (EPERM) by the sandbox's syscall profile"),
        syscall: Some(syscall),
        limit: None,
        pid: Some(notification.pid),
        count: 1,
        path: None,
        task,
    })
}
