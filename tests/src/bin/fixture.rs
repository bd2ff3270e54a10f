//! A small program the integration tests copy, link and execute under governance.
//!
//! `sentra-fixture hello`                → prints "hello", exits 0
//! `sentra-fixture exit N`               → exits N
//! `sentra-fixture sleep SECS`           → sleeps
//! `sentra-fixture spawn PATH [ARGS…]`   → runs PATH as a child; prints `exit=N`, `signal=N` or `exec-errno=N`
//! `sentra-fixture each ARGV0 PATH [ARGS…] [-- ARGV0 PATH [ARGS…]]…` → runs each PATH in turn with
//!                                          that `argv[0]`; prints `I exit=N`, `I signal=N` or
//!                                          `I exec-errno=N` for the I-th (from 0)
//! `sentra-fixture storm N PATH [ARGS…]` → spawns PATH N times; prints `ok=K failed=F`
//! `sentra-fixture bench N PATH [ARGS…]` → spawns PATH N times; prints `ns_per_exec=` (mean fork+exec+wait)
//! `sentra-fixture connect ADDR:PORT…` → TCP connects; prints `connected` or `connect-errno=N` (with several, each line starts with its address)
//! `sentra-fixture sys NAME…`              → makes each named system call with harmless arguments;
//!                                          prints `NAME errno=N` (0: it succeeded); `NAME:PATH` forms
//!                                          act on a file: `open-write:` opens it for writing (no write,
//!                                          no truncation), `create:`, `unlink:`, `rename:` (to
//!                                          `PATH.moved`), `mkdir:`, `chmod:`, `truncate:` (through a
//!                                          descriptor), `truncate-path:`, `mount-tmpfs:`, `umount:`,
//!                                          `mmap-exec:`, `mprotect-exec:` (one page), `dlopen:`; and
//!                                          `rename-to:FROM,TO`, `link:FROM,TO`, `symlink:FROM,TO`
//! `sentra-fixture sysloop N`               → N rounds of getppid, a 1-byte read of /dev/zero, fstat and
//!                                          `clock_gettime`; prints `ns_per_round=`
//! `sentra-fixture whoami`                 → prints `uid=`, `euid=`, the `/proc/self/status` lines
//!                                          about privileges and seccomp, and `env=` (variable names)
//! `sentra-fixture subcgroup NAME PATH [ARGS…]` → moves itself into a new child cgroup NAME of its own
//!                                          cgroup (created now), then behaves as `spawn`

use std::{
    os::unix::process::ExitStatusExt as _,
    path::PathBuf,
    process::{Command, ExitCode},
};

fn spawn(path: &str, args: &[String]) -> ExitCode {
    println!("{}", outcome(Command::new(path).args(args)));
    ExitCode::SUCCESS
}

/// How a child ended: `exit=N`, `signal=N` or `exec-errno=N`.
fn outcome(command: &mut Command) -> String {
    match command.status() {
        Ok(status) => match status.code() {
            Some(code) => format!("exit={code}"),
            None => format!("signal={}", status.signal().unwrap_or(0)),
        },
        Err(err) => format!("exec-errno={}", err.raw_os_error().unwrap_or(-1)),
    }
}

/// `each`: every `[NAME=VALUE…] ARGV0 PATH ARGS…` group (separated by `--`) in turn, each with the
/// assignments added to its environment.
fn each(args: &[String]) -> ExitCode {
    use std::os::unix::process::CommandExt as _;
    for (i, group) in args.split(|a| a == "--").enumerate() {
        let assignments = group.iter().take_while(|a| a.contains('=') && !a.starts_with('/')).count();
        let (assignments, group) = group.split_at(assignments);
        let [argv0, path, rest @ ..] = group else { return ExitCode::from(2) };
        let mut command = Command::new(path);
        command.arg0(argv0).args(rest);
        for assignment in assignments {
            if let Some((name, value)) = assignment.split_once('=') {
                command.env(name, value);
            }
        }
        println!("{i} {}", outcome(&mut command));
    }
    ExitCode::SUCCESS
}

fn own_cgroup_dir() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let relative = text.lines().find_map(|l| l.strip_prefix("0::"))?.to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let root = mounts.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2")
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
    })?;
    Some(root.join(relative.trim_start_matches('/')))
}

/// One system call by name, with arguments that do nothing even when it is allowed.
fn sys(name: &str) -> Option<i64> {
    let null = std::ptr::null::<libc::c_void>();
    let missing = c"/nonexistent-sentra".as_ptr();
    // SAFETY: every call gets null or valid pointers and fails or does nothing lasting.
    let rc = unsafe {
        match name {
            "bpf" => libc::syscall(libc::SYS_bpf, 0, null, 0),
            "ptrace" => libc::syscall(libc::SYS_ptrace, libc::PTRACE_PEEKDATA, 1, 0, 0),
            "mount" => libc::syscall(libc::SYS_mount, c"none".as_ptr(), missing, c"tmpfs".as_ptr(), 0, null),
            "umount2" => libc::syscall(libc::SYS_umount2, missing, 0),
            "unshare" => libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER),
            "setns" => libc::syscall(libc::SYS_setns, -1, 0),
            "perf_event_open" => libc::syscall(libc::SYS_perf_event_open, null, 0, -1, -1, 0),
            "keyctl" => libc::syscall(libc::SYS_keyctl, 0, -1, 0),
            "reboot" => libc::syscall(libc::SYS_reboot, 0, 0, 0, null),
            "init_module" => libc::syscall(libc::SYS_init_module, null, 0, c"".as_ptr()),
            "kexec_load" => libc::syscall(libc::SYS_kexec_load, 0, 0, null, 0),
            "io_uring_setup" => libc::syscall(libc::SYS_io_uring_setup, 1, null),
            "execveat" => libc::syscall(libc::SYS_execveat, -1, c"".as_ptr(), null, null, 0),
            "clone3" => libc::syscall(libc::SYS_clone3, null, 0),
            "raw-socket" => close_fd(libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP)),
            "packet-socket" => close_fd(libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0)),
            "ping-socket" => close_fd(libc::socket(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP)),
            // A harmless signal to the parent (the controller of `sentra-ctl run`).
            "kill-parent" => i64::from(libc::kill(libc::getppid(), libc::SIGCONT)),
            // Reading the parent's memory: a ptrace access check in the kernel.
            "parent-mem" => {
                let path =
                    std::ffi::CString::new(format!("/proc/{}/mem", libc::getppid())).unwrap_or_default();
                close_fd(libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC))
            }
            "finit_module" => libc::syscall(libc::SYS_finit_module, -1, c"".as_ptr(), 0),
            // Writes a sysctl's own value back (no change if it is allowed).
            "sysctl-write" => match std::fs::read("/proc/sys/kernel/domainname") {
                Ok(value) => match std::fs::write("/proc/sys/kernel/domainname", value) {
                    Ok(()) => 0,
                    Err(err) => return Some(i64::from(err.raw_os_error().unwrap_or(-1))),
                },
                Err(err) => return Some(i64::from(err.raw_os_error().unwrap_or(-1))),
            },
            // Its own cgroup's cgroup.procs, opened for writing (a governed task manages its subtree).
            "own-cgroup" => match own_cgroup_dir() {
                Some(dir) => {
                    return Some(file_call(&format!("open-write:{}", dir.join("cgroup.procs").display())));
                }
                None => -1,
            },
            _ if name.contains(':') => return Some(file_call(name)),
            "socket" => {
                let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                if fd >= 0 {
                    libc::close(fd);
                }
                i64::from(fd)
            }
            "fork" => {
                let pid = libc::fork();
                if pid == 0 {
                    libc::_exit(0);
                }
                if pid > 0 {
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
                i64::from(pid)
            }
            #[cfg(target_arch = "x86_64")]
            "x32" => libc::syscall(0x4000_0000 + libc::SYS_getpid),
            _ => return None,
        }
    };
    Some(if rc < 0 { i64::from(std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)) } else { 0 })
}

/// Closes `fd` if the call made one; the call's result as `sys` reports it.
fn close_fd(fd: libc::c_int) -> i64 {
    if fd >= 0 {
        // SAFETY: closing a descriptor this process just opened.
        unsafe { libc::close(fd) };
    }
    i64::from(fd.min(0))
}

/// `CALL:PATH` (or `CALL:FROM,TO`): the errno (0: it succeeded).
fn file_call(spec: &str) -> i64 {
    let errno = |err: std::io::Error| i64::from(err.raw_os_error().unwrap_or(-1));
    let Some((call, path)) = spec.split_once(':') else { return -1 };
    let (from, to) = path.split_once(',').unwrap_or((path, ""));
    let result = match call {
        "open-write" => std::fs::OpenOptions::new().write(true).open(path).map(drop),
        "create" => std::fs::OpenOptions::new().write(true).create_new(true).open(path).map(drop),
        "unlink" => std::fs::remove_file(path),
        "rename" => std::fs::rename(path, format!("{path}.moved")),
        "rename-to" => std::fs::rename(from, to),
        "link" => std::fs::hard_link(from, to),
        "symlink" => std::os::unix::fs::symlink(from, to),
        "mkdir" => std::fs::create_dir(path),
        "chmod" => {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        }
        "truncate" => std::fs::OpenOptions::new().write(true).open(path).and_then(|f| f.set_len(0)),
        "truncate-path" => return path_call(path, |p| unsafe { libc::truncate(p, 0) }),
        "mount-tmpfs" => {
            return path_call(path, |p| unsafe {
                libc::mount(c"sentra-test".as_ptr(), p, c"tmpfs".as_ptr(), 0, std::ptr::null())
            });
        }
        "umount" => return path_call(path, |p| unsafe { libc::umount2(p, libc::MNT_DETACH) }),
        "mmap-exec" => return map_call(path, false),
        "mprotect-exec" => return map_call(path, true),
        "dlopen" => return dlopen(path),
        _ => return -1,
    };
    result.map_or_else(errno, |()| 0)
}

/// A call on a C path; its errno (0: it succeeded).
fn path_call(path: &str, call: impl FnOnce(*const libc::c_char) -> libc::c_int) -> i64 {
    let Ok(path) = std::ffi::CString::new(path) else { return -1 };
    if call(path.as_ptr()) == 0 {
        0
    } else {
        i64::from(std::io::Error::last_os_error().raw_os_error().unwrap_or(-1))
    }
}

/// Maps the first page of `path` executable: directly, or readable and then `mprotect`ed executable.
fn map_call(path: &str, mprotect: bool) -> i64 {
    use std::os::fd::AsRawFd as _;
    let errno = || i64::from(std::io::Error::last_os_error().raw_os_error().unwrap_or(-1));
    let Ok(file) = std::fs::File::open(path) else { return errno() };
    let prot = if mprotect { libc::PROT_READ } else { libc::PROT_READ | libc::PROT_EXEC };
    // SAFETY: a fresh private mapping of one page of an open file, unmapped before returning.
    unsafe {
        let at = libc::mmap(std::ptr::null_mut(), 4096, prot, libc::MAP_PRIVATE, file.as_raw_fd(), 0);
        if at == libc::MAP_FAILED {
            return errno();
        }
        let rc = if mprotect { libc::mprotect(at, 4096, libc::PROT_READ | libc::PROT_EXEC) } else { 0 };
        let result = if rc == 0 { 0 } else { errno() };
        libc::munmap(at, 4096);
        result
    }
}

/// `dlopen(path)`: 0 when loaded, else `EPERM` when the loader says it could not map the file (glibc
/// reports the kernel's refusal only as text; the test checks the kernel's record of it), else
/// `ENOEXEC`.
fn dlopen(path: &str) -> i64 {
    let Ok(c_path) = std::ffi::CString::new(path) else { return -1 };
    // SAFETY: dlopen of a path; the handle is closed again, the error text copied at once.
    unsafe {
        let handle = libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if !handle.is_null() {
            libc::dlclose(handle);
            return 0;
        }
        let text = libc::dlerror();
        let text = if text.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(text).to_string_lossy().into_owned()
        };
        eprintln!("dlopen {path}: {text}");
        // glibc names a refused mapping by its step (elf/dl-load.c, "failed to map segment"), not errno.
        if text.contains("not permitted") || text.contains("failed to map segment") {
            i64::from(libc::EPERM)
        } else {
            i64::from(libc::ENOEXEC)
        }
    }
}

/// Who the process is, what it may do, what it inherited.
fn whoami() -> ExitCode {
    // SAFETY: plain getters.
    let (uid, euid, gid) = unsafe { (libc::getuid(), libc::geteuid(), libc::getgid()) };
    println!("uid={uid}\neuid={euid}\ngid={gid}");
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for line in status.lines().filter(|l| {
        ["NoNewPrivs:", "CapBnd:", "CapAmb:", "CapEff:", "CapPrm:", "Seccomp:"]
            .iter()
            .any(|p| l.starts_with(p))
    }) {
        println!("{}", line.replace(":\t", "=").replace(": ", "="));
    }
    let names: Vec<String> = std::env::vars_os().map(|(k, _)| k.to_string_lossy().into_owned()).collect();
    println!("env={}", names.join(","));
    println!("cwd={}", std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default());
    ExitCode::SUCCESS
}

/// System-call-heavy work: `n` rounds of four cheap calls.
fn sysloop(n: u32) -> ExitCode {
    use std::io::Read as _;
    let Ok(mut zero) = std::fs::File::open("/dev/zero") else { return ExitCode::from(3) };
    let mut byte = [0u8; 1];
    let started = std::time::Instant::now();
    for _ in 0..n {
        // SAFETY: plain getters.
        let _ = unsafe { libc::getppid() };
        let _ = zero.read(&mut byte);
        let _ = zero.metadata();
        let _ = std::time::SystemTime::now();
    }
    println!("ns_per_round={:.1}", started.elapsed().as_secs_f64() * 1e9 / f64::from(n.max(1)));
    ExitCode::SUCCESS
}
/// `bench N PATH ARGS…`: runs PATH N times and prints the mean nanoseconds per fork+exec+wait.
/// `bench-held` is for measuring with the kernel's BPF statistics: it says `ready` and waits for a line
/// before the loop, and waits for its input to close after printing, so that snapshots taken then cover
/// exactly the loop while the controller still runs.
fn bench(held: bool, args: &[String], extra: &[String]) -> ExitCode {
    let (Some(n), Some(path)) = (args.get(1).and_then(|a| a.parse::<u32>().ok()), args.get(2)) else {
        return ExitCode::from(2);
    };
    let mut input = std::io::stdin().lock();
    if held {
        println!("ready");
        let _ = std::io::Write::flush(&mut std::io::stdout());
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut input, &mut line);
    }
    let start = std::time::Instant::now();
    for _ in 0..n {
        if !Command::new(path).args(extra).status().is_ok_and(|s| s.success()) {
            eprintln!("exec of {path} failed");
            return ExitCode::from(1);
        }
    }
    println!("ns_per_exec={}", start.elapsed().as_nanos() / u128::from(n.max(1)));
    if held {
        let _ = std::io::Write::flush(&mut std::io::stdout());
        let _ = std::io::copy(&mut input, &mut std::io::sink());
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = |n: usize| args.get(n..).unwrap_or_default().to_vec();
    match args.first().map(String::as_str) {
        Some("hello") => {
            println!("hello");
            ExitCode::SUCCESS
        }
        Some("exit") => ExitCode::from(args.get(1).and_then(|a| a.parse().ok()).unwrap_or(0)),
        Some("sleep") => {
            let secs: f64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1.0);
            std::thread::sleep(std::time::Duration::from_secs_f64(secs));
            ExitCode::SUCCESS
        }
        Some("spawn") => match args.get(1) {
            Some(path) => spawn(path, &rest(2)),
            None => ExitCode::from(2),
        },
        Some("each") => each(&rest(1)),
        Some("storm") => {
            let (Some(n), Some(path)) = (args.get(1).and_then(|a| a.parse::<u32>().ok()), args.get(2)) else {
                return ExitCode::from(2);
            };
            let (mut ok, mut failed) = (0, 0);
            for _ in 0..n {
                match Command::new(path).args(rest(3)).status() {
                    Ok(s) if s.success() => ok += 1,
                    _ => failed += 1,
                }
            }
            println!("ok={ok} failed={failed}");
            ExitCode::SUCCESS
        }
        Some(mode @ ("bench" | "bench-held")) => bench(mode == "bench-held", &args, &rest(3)),
        Some("connect") => {
            // One address: `connected` / `connect-errno=N`; several: each line starts with its address.
            let addrs = rest(1);
            let several = addrs.len() > 1;
            for text in &addrs {
                let Ok(addr) = text.parse::<std::net::SocketAddr>() else {
                    return ExitCode::from(2);
                };
                let prefix = if several { format!("{text} ") } else { String::new() };
                match std::net::TcpStream::connect(addr) {
                    Ok(_) => println!("{prefix}connected"),
                    Err(err) => println!("{prefix}connect-errno={}", err.raw_os_error().unwrap_or(-1)),
                }
            }
            ExitCode::SUCCESS
        }
        Some("sys") => {
            for name in rest(1) {
                match sys(&name) {
                    Some(errno) => println!("{name} errno={errno}"),
                    None => println!("{name} unknown"),
                }
            }
            ExitCode::SUCCESS
        }
        Some("whoami") => whoami(),
        Some("sysloop") => sysloop(args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000)),
        Some("subcgroup") => {
            let (Some(name), Some(path)) = (args.get(1), args.get(2)) else {
                return ExitCode::from(2);
            };
            let Some(dir) = own_cgroup_dir() else {
                eprintln!("cannot find own cgroup");
                return ExitCode::from(3);
            };
            let child = dir.join(name);
            if let Err(err) = std::fs::create_dir(&child)
                .and_then(|()| std::fs::write(child.join("cgroup.procs"), std::process::id().to_string()))
            {
                eprintln!("cannot move into {}: {err}", child.display());
                return ExitCode::from(3);
            }
            println!("cgroup={}", child.display());
            spawn(path, &rest(3))
        }
        _ => {
            eprintln!("usage: sentra-fixture hello|exit|sleep|spawn|storm|bench|connect|subcgroup …");
            ExitCode::from(2)
        }
    }
}
