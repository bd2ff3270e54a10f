//! The agent's own PID namespace: it cannot see, signal or trace any process outside it (the
//! controller, the launcher), whatever its uid. Between fork and exec, the launched child `C` (in the
//! launcher's namespace) forks `A`, the namespace's init, which mounts the namespace's /proc, joins
//! the governed cgroup, forks `B`, the agent, and reaps
//! whatever the agent's orphans leave; `B` alone returns to exec the command. `C` and `A` run only
//! system calls (they are copies of a multi-threaded process) and end with the agent's exit code
//! (128 + N for a signal), which `C` reports to the launcher. Signals sent to `C` are passed on down.
//!
//! An init is needed: the first process of a PID namespace is its reaper, receives only the signals
//! it handles, and when it exits the namespace's other processes are killed (`kernel/pid_namespace.c`,
//! `zap_pid_ns_processes`).

use std::sync::atomic::{AtomicI32, Ordering};

/// Where `C` and `A` pass on the signals they get.
static FORWARD_TO: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(signal: libc::c_int) {
    let pid = FORWARD_TO.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe.
        unsafe { libc::kill(pid, signal) };
    }
}

/// Passes SIGTERM, SIGINT and SIGHUP on to `pid`.
///
/// # Safety
/// In a forked child, before anything else handles these signals.
unsafe fn forward_signals_to(pid: libc::pid_t) {
    FORWARD_TO.store(pid, Ordering::Relaxed);
    for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction with a plain handler, installed with sigaction(2).
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = forward as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&raw mut action.sa_mask);
            libc::sigaction(signal, &raw const action, std::ptr::null_mut());
        }
    }
}

/// Closes every descriptor above stderr: `C` and `A` must not hold the launcher's exec-error pipe
/// (its end closes at the agent's exec) or anything else of the agent's.
///
/// # Safety
/// In a forked child that needs no descriptor.
unsafe fn close_all() {
    // SAFETY: close_range(2) (5.9+), else close(2) one by one.
    unsafe {
        if libc::syscall(libc::SYS_close_range, 3, libc::c_uint::MAX, 0) != 0 {
            for fd in 3..4096 {
                libc::close(fd);
            }
        }
    }
}

/// The shell's convention for a wait status.
fn code(status: libc::c_int) -> libc::c_int {
    if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) }
}

/// Waits for `pid`; its exit code.
///
/// # Safety
/// `pid` is a child of the caller.
unsafe fn wait_for(pid: libc::pid_t) -> libc::c_int {
    let mut status = 0;
    loop {
        // SAFETY: waitpid(2) on our own child.
        let rc = unsafe { libc::waitpid(pid, &raw mut status, 0) };
        if rc == pid {
            return code(status);
        }
        // SAFETY: reading errno.
        if rc < 0 && unsafe { *libc::__errno_location() } != libc::EINTR {
            return 127;
        }
    }
}

/// `A`'s first steps: mounts the namespace's own /proc (its mount namespace is the agent's; the
/// mount is made before `join`, since a governed task may not mount), then `join`.
///
/// # Safety
/// In `A`, between fork and exec.
unsafe fn start_init(join: &dyn Fn() -> std::io::Result<()>) -> std::io::Result<()> {
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    // SAFETY: mount(2) with static C strings.
    if unsafe { libc::mount(c"proc".as_ptr(), c"/proc".as_ptr(), c"proc".as_ptr(), flags, std::ptr::null()) }
        != 0
    {
        return Err(std::io::Error::last_os_error());
    }
    join()
}

/// Waits until `A` has started the agent (end of file: every write end closed, `B`'s at its exec) or
/// failed before (it sends its errno).
///
/// # Safety
/// In `C`, with `read_end` the read end of the pipe `A` reports through (its own write end closed).
unsafe fn await_init(read_end: libc::c_int) -> std::io::Result<()> {
    let mut errno = [0u8; 4];
    loop {
        // SAFETY: read(2) into a stack buffer.
        let got = unsafe { libc::read(read_end, errno.as_mut_ptr().cast(), errno.len()) };
        // SAFETY: reading errno.
        if got < 0 && unsafe { *libc::__errno_location() } == libc::EINTR {
            continue;
        }
        return if got == 4 {
            Err(std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno)))
        } else {
            Ok(())
        };
    }
}

/// Called after `unshare(CLONE_NEWPID)`: returns in `B` only (the agent, pid 2 of its namespace,
/// with every descriptor); `C` and `A` never return. `A`, the namespace's init, runs `join` before
/// forking `B`, so that init and agent are governed alike; a failure there is `C`'s error.
///
/// # Errors
/// The first fork failed (nothing was started), or `A`'s first steps failed.
///
/// # Safety
/// In the launcher's forked child, between fork and exec.
pub unsafe fn split(join: &dyn Fn() -> std::io::Result<()>) -> std::io::Result<()> {
    // SAFETY: fork(2), pipe2(2), read/write, wait and _exit(2) only, in a forked child.
    unsafe {
        let mut report = [0; 2];
        if libc::pipe2(report.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let [read_end, write_end] = report;
        let init = libc::fork();
        if init < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if init > 0 {
            // C: outside the namespace, the launcher's child: waits for the init and reports.
            libc::close(write_end);
            if let Err(err) = await_init(read_end) {
                libc::waitpid(init, std::ptr::null_mut(), 0);
                return Err(err);
            }
            forward_signals_to(init);
            close_all();
            libc::_exit(wait_for(init));
        }
        // A: pid 1 of the namespace.
        libc::close(read_end);
        if let Err(err) = start_init(join) {
            let errno = err.raw_os_error().unwrap_or(libc::EIO).to_ne_bytes();
            libc::write(write_end, errno.as_ptr().cast(), errno.len());
            libc::_exit(127);
        }
        let agent = libc::fork();
        if agent < 0 {
            libc::_exit(127);
        }
        if agent == 0 {
            // B: the agent (its copy of the report pipe closes at its exec).
            return Ok(());
        }
        libc::close(write_end);
        forward_signals_to(agent);
        close_all();
        let exit = wait_for(agent);
        // The agent's orphans go with it (they would be killed when the init exits anyway).
        libc::kill(-1, libc::SIGKILL);
        while libc::wait(std::ptr::null_mut()) > 0 {}
        libc::_exit(exit);
    }
}
