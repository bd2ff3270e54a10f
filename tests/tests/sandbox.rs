//! The Python sandbox (`sentra python`), against the real interpreter, kernel namespaces, Landlock,
//! seccomp and cgroups: what agent code may do, what it may not, and that every refusal and limit is
//! recorded. Each test writes its own policy with paths in its own temporary directory.

use std::{
    io::Write as _,
    net::{Ipv4Addr, TcpListener},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use sentra_tests::{daemon::TestDaemon, read_records, sentra_ctl, wait_for_records};
use serde_json::Value;

const PYTHON: &str = "/usr/bin/python3";

/// A scene: a policy whose sandbox reads `<dir>/read` and writes `<dir>/out`, and an audit log.
struct Scene {
    dir: tempfile::TempDir,
    policy: PathBuf,
    log: PathBuf,
}

impl Scene {
    fn new(limits: &str, extra: &str) -> Self {
        assert!(Path::new(PYTHON).exists(), "{PYTHON} is missing: scripts/setup.sh installs python3");
        let dir =
            tempfile::Builder::new().prefix("sentra-sandbox-test-").tempdir_in("/tmp").expect("tempdir");
        // The sandbox runs as nobody: it must be able to reach the paths below.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let read = dir.path().join("read");
        std::fs::create_dir(&read).expect("read dir");
        std::fs::write(read.join("data.txt"), "hello from the read dir\n").expect("data");
        std::fs::write(read.join("script.py"), "import sys\nprint('script', sys.argv[1:])\n")
            .expect("script");
        let out = dir.path().join("out");
        let text = format!(
            "profiles:\n  py:\n    python_bin: {PYTHON}\n    deny_spawn_processes: true\n    fs_defaults:\n      cwd: {read}\n      read_allow: [{read}]\n      write_allow: [{out}]\n      protected_deny: [{read}/secret]\n    limits_defaults: {{ {limits} }}\n    syscall_profile: strict\n{extra}\ncapabilities:\n  only_c: {{ type: python, profile: py, allowed_python_argv: ['-c'] }}\nsyscall_profiles:\n  strict:\n    default: deny\n    allow: [read, pread64, readv, write, writev, lseek, close, fstat, newfstatat, statx, stat, lstat, access, faccessat, faccessat2, openat, open, fcntl, dup, dup2, dup3, ioctl, getcwd, readlink, readlinkat, getdents64, mkdir, mkdirat, unlink, unlinkat, mmap, mprotect, munmap, brk, mremap, madvise, getpid, getppid, gettid, getuid, geteuid, getgid, getegid, uname, sysinfo, prlimit64, sched_getaffinity, rt_sigaction, rt_sigprocmask, rt_sigreturn, sigaltstack, clock_gettime, clock_getres, gettimeofday, nanosleep, clock_nanosleep, poll, ppoll, select, pselect6, futex, set_robust_list, rseq, clone, set_tid_address, arch_prctl, getrandom, exit, exit_group]\n    deny: [socket, connect, ptrace, mount]\n  open:\n    default: allow\n",
            read = read.display(),
            out = out.display(),
        );
        let policy = dir.path().join("policy.yaml");
        std::fs::write(&policy, text).expect("policy");
        let log = dir.path().join("audit.jsonl");
        Self { dir, policy, log }
    }

    fn standard() -> Self {
        Self::new(
            "timeout_sec: 20, mem_max_mb: 128, pids_max: 16, max_stdout_bytes: 65536, max_stderr_bytes: 65536",
            "",
        )
    }

    fn read_dir(&self) -> PathBuf {
        self.dir.path().join("read")
    }

    fn out_dir(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(sentra());
        command.arg("python").arg("--policy").arg(&self.policy).arg("--log").arg(&self.log).args(args);
        command
    }

    /// Runs `sentra python --json ARGS…` and returns its response.
    fn run(&self, args: &[&str]) -> Value {
        let output = self.command(&["--json"]).args(args).output().expect("run sentra python");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "sentra python {args:?} failed: {:?}\nstdout: {stdout}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("response {stdout:?}: {e}"))
    }

    fn code(&self, code: &str) -> Value {
        self.run(&["-c", code])
    }

    fn records(&self, event: &str) -> Vec<Value> {
        read_records(&self.log).into_iter().filter(|r| r["event"] == event).collect()
    }
}

/// The kernel's Landlock ABI (`landlock_create_ruleset` with `LANDLOCK_CREATE_RULESET_VERSION`).
fn landlock_abi() -> i64 {
    // SAFETY: the documented version query: no pointer is dereferenced.
    unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, std::ptr::null::<u8>(), 0usize, 1u32) }
}

fn sentra() -> PathBuf {
    sentra_ctl().with_file_name("sentra")
}

/// The violations of a response as `(kind, syscall or limit, path)`.
fn violations(response: &Value) -> Vec<(String, String, String)> {
    response["violations"]
        .as_array()
        .expect("violations")
        .iter()
        .map(|v| {
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            (s("kind"), if v["syscall"].is_null() { s("limit") } else { s("syscall") }, s("path"))
        })
        .collect()
}

fn has_violation(response: &Value, kind: &str, what: &str) -> bool {
    violations(response).iter().any(|(k, w, _)| k == kind && w == what)
}

#[test]
fn import_math_works_and_the_run_is_recorded() {
    let scene = Scene::standard();
    let code = "import math, json; print(json.dumps(math.sqrt(16)))";
    let response = scene.code(code);
    assert_eq!(response["exit_code"], 0, "{response}");
    assert_eq!(response["stdout"], "4.0\n");
    // The sandbox asks for Landlock ABI 5's rights: a kernel with an older ABI enforces part of them.
    let expected = if landlock_abi() >= 5 { "full" } else { "partial" };
    assert_eq!(response["landlock"], expected, "Landlock ABI {}: {response}", landlock_abi());
    assert!(violations(&response).is_empty(), "a plain computation violates nothing: {response}");
    let sha = response["code_sha256"].as_str().expect("code_sha256");
    assert_eq!(sha.len(), 64);
    let exec = scene.records("sandbox_exec");
    let exit = scene.records("sandbox_exit");
    assert_eq!(exec.len(), 1, "{exec:?}");
    assert_eq!(exec[0]["detail"]["code_sha256"], sha);
    assert_eq!(exec[0]["detail"]["limits"]["mem_max_mb"], 128);
    assert_eq!(exit.len(), 1);
    assert_eq!(exit[0]["detail"]["exit_code"], 0);
    assert_eq!(exit[0]["layer"], "sandbox");
}

#[test]
fn the_sandbox_is_unprivileged_alone_and_clean() {
    let scene = Scene::standard();
    let response = scene.code(
        "import os, socket\nst = dict(l.split(':\\t', 1) for l in open('/proc/self/status').read().splitlines() if ':\\t' in l)\nprint(os.getpid(), st['Uid'].split()[0], st['NoNewPrivs'], st['CapEff'], st['CapBnd'], socket.gethostname(), sorted(os.listdir('/proc/self/fd')), sorted(k for k in os.environ if k != 'LC_CTYPE'), len([p for p in os.listdir('/proc') if p.isdigit()]))",
    );
    assert_eq!(response["exit_code"], 0, "{response}");
    let out = response["stdout"].as_str().expect("stdout");
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(fields[0], "1", "the interpreter is its PID namespace's init: {out}");
    assert_eq!(fields[1], "65534", "it runs as nobody: {out}");
    assert_eq!(fields[2], "1", "no new privileges: {out}");
    assert_eq!(fields[3], "0000000000000000", "no effective capability: {out}");
    assert_eq!(fields[4], "0000000000000000", "an empty bounding set: {out}");
    assert_eq!(fields[5], "sentra-sandbox", "its own UTS namespace: {out}");
    assert!(
        out.contains("['0', '1', '2', '3']"),
        "only stdio (and the listing's own descriptor) open: {out}"
    );
    assert!(
        out.contains("['HOME', 'LANG', 'PATH', 'PYTHONDONTWRITEBYTECODE']"),
        "a clean environment: {out}"
    );
    assert!(out.trim_end().ends_with(" 1"), "one process in its /proc: {out}");
}

#[test]
fn subprocess_and_fork_are_blocked_and_recorded() {
    let scene = Scene::standard();
    for code in
        ["import subprocess; subprocess.run(['ls'])", "import os; os.fork()", "import os; os.system('id')"]
    {
        let response = scene.code(code);
        let syscalls: Vec<String> =
            violations(&response).into_iter().filter(|(k, _, _)| k == "syscall").map(|(_, s, _)| s).collect();
        assert!(
            syscalls.iter().any(|s| ["clone", "fork", "vfork", "execve", "pipe2"].contains(&s.as_str())),
            "{code}: no process was created and the attempt is a violation: {response}"
        );
    }
    let recorded = scene.records("sandbox_violation");
    assert!(recorded.len() >= 3, "each attempt is in the audit log: {recorded:?}");
    assert!(recorded.iter().all(|r| r["decision"] == "denied" && r["layer"] == "sandbox"));
}

#[test]
fn a_loopback_listener_outside_is_unreachable() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let scene = Scene::standard();
    let code = format!("import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)");
    let response = scene.code(&code);
    assert_ne!(response["exit_code"], 0, "{response}");
    assert!(
        has_violation(&response, "syscall", "socket"),
        "the socket call is refused and recorded: {response}"
    );
    // With sockets allowed by the profile, the sandbox's own network namespace still has only its
    // own loopback: the host's listener is not there.
    let open = Scene::new("timeout_sec: 20", "");
    let text = std::fs::read_to_string(&open.policy)
        .expect("policy")
        .replace("syscall_profile: strict", "syscall_profile: open");
    std::fs::write(&open.policy, text).expect("policy");
    let response = open.code(&format!(
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n    print('connected')\nexcept OSError as e:\n    print('refused', e.errno)"
    ));
    assert_eq!(
        response["stdout"], "refused 111\n",
        "connection refused in the sandbox's namespace: {response}"
    );
    assert!(listener.accept().is_err(), "nothing reached the listener outside the sandbox");
}

#[test]
fn files_outside_the_sandbox_paths_are_out_of_reach_and_recorded() {
    let scene = Scene::standard();
    let secret = scene.read_dir().join("secret");
    std::fs::write(&secret, "top secret").expect("secret");
    let victim = scene.dir.path().join("victim.txt");
    let cases = [
        ("open('/etc/shadow').read()", "read", "/etc/shadow".to_string()),
        ("open('/etc/passwd').read()", "read", "/etc/passwd".to_string()),
        (&*format!("open('{}', 'w').write('x')", victim.display()), "write", victim.display().to_string()),
        (
            &*format!("open('{}/new.txt', 'w').write('x')", scene.read_dir().display()),
            "write",
            format!("{}/new.txt", scene.read_dir().display()),
        ),
        ("open('../' * 12 + 'etc/hostname').read()", "read", "/etc/hostname".to_string()),
    ];
    for (code, access, path) in cases {
        let response = scene.code(code);
        assert_ne!(response["exit_code"], 0, "{code} must fail: {response}");
        assert!(
            response["violations"].as_array().expect("violations").iter().any(|v| v["kind"] == "file"
                && v["path"] == path.as_str()
                && v["detail"].as_str().is_some_and(|d| d.starts_with(access))),
            "{code}: a {access} violation naming {path}: {response}"
        );
    }
    assert!(!victim.exists(), "nothing was written outside write_allow");
    // protected_deny hides a file even below a readable path.
    let response = scene.code(&format!("print(repr(open('{}').read()))", secret.display()));
    assert_eq!(response["stdout"], "''\n", "the protected file is covered: {response}");
    assert!(
        has_violation(&response, "file", "openat") || has_violation(&response, "file", "open"),
        "{response}"
    );
    // What write_allow allows works, and lands on the host.
    let response =
        scene.code(&format!("open('{}/result.txt', 'w').write('done')", scene.out_dir().display()));
    assert_eq!(response["exit_code"], 0, "{response}");
    assert_eq!(std::fs::read_to_string(scene.out_dir().join("result.txt")).expect("result"), "done");
    let response = scene.code("print(open('data.txt').read(), end='')");
    assert_eq!(response["stdout"], "hello from the read dir\n", "{response}");
    assert!(
        scene.records("sandbox_violation").iter().any(|r| r["detail"]["violation"]["path"] == "/etc/shadow")
    );
}

#[test]
fn ctypes_calling_a_denied_system_call_is_refused_and_recorded() {
    let scene = Scene::standard();
    let response = scene.code(
        "import ctypes, ctypes.util\nlibc = ctypes.CDLL(None, use_errno=True)\nprint(libc.ptrace(0, 0, 0, 0), ctypes.get_errno())",
    );
    assert_eq!(response["stdout"], "-1 1\n", "ptrace fails with EPERM: {response}");
    assert!(has_violation(&response, "syscall", "ptrace"), "{response}");
    let response = scene.code("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nprint(libc.mount(b'none', b'/tmp', b'tmpfs', 0, None), ctypes.get_errno())");
    assert_eq!(response["stdout"], "-1 1\n", "{response}");
    assert!(has_violation(&response, "syscall", "mount"), "{response}");
}

#[test]
fn a_memory_bomb_is_killed_inside_its_cgroup_only() {
    let scene = Scene::new("timeout_sec: 30, mem_max_mb: 64", "");
    let started = Instant::now();
    let response = scene.code("x = bytearray(512 * 1024 * 1024)\nprint('survived')");
    assert_eq!(response["oom_killed"], true, "{response}");
    assert_eq!(response["limit"], "memory", "{response}");
    assert_eq!(response["exit_code"], 137, "{response}");
    assert!(has_violation(&response, "limit", "memory"), "{response}");
    assert!(response["peak_mem_mb"].as_f64().is_some_and(|p| p <= 65.0), "{response}");
    assert!(started.elapsed() < Duration::from_secs(25));
    // The runner (this test's child) lived to report it; the next run is unaffected.
    assert_eq!(scene.code("print(1)")["stdout"], "1\n");
    assert!(scene.records("sandbox_exit").iter().any(|r| r["detail"]["oom_killed"] == true));
}

#[test]
fn a_fork_bomb_stops_at_pids_max() {
    let scene = Scene::new("timeout_sec: 20, pids_max: 12", "");
    let text = std::fs::read_to_string(&scene.policy)
        .expect("policy")
        .replace("deny_spawn_processes: true", "deny_spawn_processes: false")
        .replace("syscall_profile: strict", "syscall_profile: open");
    std::fs::write(&scene.policy, text).expect("policy");
    let response = scene.code(
        "import os, time\nn = 0\ntry:\n    while n < 1000:\n        if os.fork() == 0:\n            time.sleep(30)\n            os._exit(0)\n        n += 1\nexcept OSError as e:\n    print('stopped', n, e.errno)",
    );
    let out = response["stdout"].as_str().expect("stdout");
    let forked: u32 = out.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(u32::MAX);
    assert!(out.starts_with("stopped") && forked < 12, "forks stop below pids_max: {response}");
    assert_eq!(response["limit"], "pids", "{response}");
    assert!(has_violation(&response, "limit", "pids"), "{response}");
    // The sleeping children died with the sandbox's init: the run did not wait 30 s for them.
    assert!(response["wall_time_ms"].as_u64().is_some_and(|ms| ms < 15_000), "{response}");
}

#[test]
fn cpu_max_percent_holds_a_busy_loop_to_its_share() {
    let scene = Scene::new("timeout_sec: 20, cpu_max_percent: 20", "");
    let response = scene.code(
        "import time\nstart = time.process_time()\nend = time.monotonic() + 1.5\nwhile time.monotonic() < end: pass\nprint(round(time.process_time() - start, 3))",
    );
    let used: f64 = response["stdout"].as_str().and_then(|s| s.trim().parse().ok()).expect("cpu seconds");
    // 20% of one CPU over 1.5 s is 0.3 s; the loop's own CPU time is measured (under emulation the
    // interpreter's start alone can take more than the whole share).
    assert!(used < 0.6, "{used} s of CPU in 1.5 s at cpu_max_percent 20: {response}");
}

#[test]
fn an_endless_loop_is_killed_at_the_timeout() {
    let scene = Scene::new("timeout_sec: 2", "");
    let response = scene.code("while True: pass");
    assert_eq!(response["timed_out"], true, "{response}");
    assert_eq!(response["limit"], "timeout");
    let ms = response["wall_time_ms"].as_u64().expect("wall time");
    assert!((2000..6000).contains(&ms), "killed at 2 s: {ms} ms");
    assert!(has_violation(&response, "limit", "timeout"));
}

#[test]
fn a_gigabyte_of_output_is_truncated_without_deadlock() {
    let scene = Scene::standard();
    let started = Instant::now();
    let response = scene.code(
        "import sys\nprint('start', file=sys.stderr, flush=True)\nfor _ in range(1024): sys.stdout.buffer.write(b'x' * (1 << 20))\nopen('never-reached', 'w')",
    );
    assert_eq!(response["truncated"], true, "{response:.300}");
    assert_eq!(response["stdout"].as_str().map(str::len), Some(65536), "cut at max_stdout_bytes");
    assert!(response["stdout"].as_str().is_some_and(|o| o.bytes().all(|b| b == b'x')));
    assert_eq!(response["stderr"], "start\n", "the other stream is kept");
    assert_eq!(response["limit"], "stdout", "the run was stopped for its output: {response:.300}");
    assert_eq!(response["exit_code"], 137);
    assert!(has_violation(&response, "limit", "stdout"));
    assert!(started.elapsed() < Duration::from_secs(15), "stopped at the limit, not at the timeout");
}

#[test]
fn ten_sandboxes_in_parallel_do_not_interfere() {
    let scene = Scene::standard();
    let children: Vec<_> = (0..10)
        .map(|i| {
            scene
                .command(&["--json", "-c", &format!("import os, time\nopen('{}/f{i}', 'w').write('{i}')\ntime.sleep(0.5)\nprint({i}, os.getpid(), sorted(os.listdir('{}')))", scene.out_dir().display(), scene.out_dir().display())])
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let output = child.wait_with_output().expect("wait");
        let response: Value = serde_json::from_slice(&output.stdout).expect("response");
        let out = response["stdout"].as_str().expect("stdout");
        assert!(out.starts_with(&format!("{i} 1 [")), "run {i} is alone in its namespace: {response}");
        assert!(out.contains(&format!("'f{i}'")), "{response}");
    }
    let exits = scene.records("sandbox_exit");
    assert_eq!(exits.len(), 10);
    assert!(exits.iter().all(|r| r["detail"]["exit_code"] == 0), "{exits:?}");
}

/// Host pids of the processes whose command line contains `marker`.
fn pids_running(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .collect()
}

#[test]
fn a_sandbox_killed_mid_run_leaves_nothing_behind() {
    let scene = Scene::standard();
    let marker = format!("sentra-marker-{}", std::process::id());
    let mut runner =
        scene.command(&["-c", &format!("import time\n# {marker}\ntime.sleep(60)")]).spawn().expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids_running(&marker).len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let runner_pid = runner.id();
    assert!(pids_running(&marker).len() >= 2, "the runner and the interpreter run");
    runner.kill().expect("kill");
    runner.wait().expect("wait");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pids_running(&marker).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(pids_running(&marker).is_empty(), "the interpreter died with its runner");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounts.contains("sentra-sandbox"), "no sandbox mount is visible on the host");
    // The next run sweeps the dead runner's cgroup.
    assert_eq!(scene.code("print(1)")["stdout"], "1\n");
    let cgroups = cgroup_dirs();
    let leftover: Vec<_> = cgroups
        .iter()
        .filter(|d| {
            d.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("run-{runner_pid}-")))
        })
        .collect();
    assert!(leftover.is_empty(), "the killed run's cgroup is gone: {leftover:?}");
}

/// Every `sentra-sandbox` cgroup leaf in the v2 and v1 hierarchies.
fn cgroup_dirs() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for root in [
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup/cpu",
    ] {
        if let Ok(entries) = std::fs::read_dir(Path::new(root).join("sentra-sandbox")) {
            out.extend(entries.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
    }
    out
}

#[test]
fn the_json_contract_of_the_original_project() {
    let scene = Scene::standard();
    let mut child =
        scene.command(&["--request"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("spawn");
    let request = serde_json::json!({
        "code": "import os\nprint(os.environ['GREETING'], os.getcwd())",
        "profile": "py",
        "timeout_sec": 5,
        "max_stdout_bytes": 1000,
        "env": { "GREETING": "hi" },
    });
    child.stdin.take().expect("stdin").write_all(request.to_string().as_bytes()).expect("write");
    let output = child.wait_with_output().expect("wait");
    let response: Value = serde_json::from_slice(&output.stdout).expect("response");
    for key in [
        "exit_code",
        "stdout",
        "stderr",
        "wall_time_ms",
        "peak_mem_mb",
        "timed_out",
        "oom_killed",
        "truncated",
        "code_sha256",
        "violations",
    ] {
        assert!(response.get(key).is_some(), "{key} in {response}");
    }
    assert_eq!(response["stdout"], format!("hi {}\n", scene.read_dir().display()));
    // A request narrows the profile; it cannot widen it.
    for widen in [
        serde_json::json!({ "code": "1", "fs_read_allow": ["/etc"] }),
        serde_json::json!({ "code": "1", "timeout_sec": 3600 }),
        serde_json::json!({ "code": "1", "mem_max_mb": 100_000 }),
    ] {
        let (code, stderr) = scene.command(&["--request"]).stdin(Stdio::piped()).output_with(&widen);
        assert_eq!(code, Some(126), "{widen}: refused: {stderr}");
        assert!(stderr.contains("not within") || stderr.contains("may only lower"), "{stderr}");
    }
}

trait OutputWith {
    fn output_with(&mut self, request: &Value) -> (Option<i32>, String);
}

impl OutputWith for Command {
    fn output_with(&mut self, request: &Value) -> (Option<i32>, String) {
        let mut child = self.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
        child.stdin.take().expect("stdin").write_all(request.to_string().as_bytes()).expect("write");
        let output = child.wait_with_output().expect("wait");
        (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[test]
fn scripts_modules_and_capabilities() {
    let scene = Scene::standard();
    let script = scene.read_dir().join("script.py");
    let response = scene.run(&[script.to_str().expect("utf-8"), "a", "b"]);
    assert_eq!(response["stdout"], "script ['a', 'b']\n", "{response}");
    let response = scene.run(&["-m", "json.tool", "--help"]);
    assert_eq!(response["exit_code"], 0, "{response}");
    // The capability allows -c only.
    let output = scene.command(&["--capability", "only_c", "-m", "json.tool"]).output().expect("run");
    assert_eq!(output.status.code(), Some(126));
    assert!(String::from_utf8_lossy(&output.stderr).contains("does not allow `-m`"));
    let output = scene.command(&["--capability", "only_c", "-c", "print(2)"]).output().expect("run");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "2\n");
    // Without --json the output passes through, with the program's exit code.
    let output = scene.command(&["-c", "import sys; print('out'); sys.exit(3)"]).output().expect("run");
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "out\n");
}

#[test]
fn the_original_projects_policy_runs_its_profiles() {
    let dir = tempfile::tempdir().expect("tempdir");
    let original = dir.path().join("original-sentra-v2.3.1.yaml");
    std::fs::write(&original, include_str!("../corpus/policy/original-sentra-v2.3.1.yaml")).expect("policy");
    let log = dir.path().join("audit.jsonl");
    let output = Command::new(sentra())
        .args(["python", "--json", "--policy"])
        .arg(&original)
        .arg("--log")
        .arg(&log)
        .args(["-c", "import math; print(math.factorial(5))"])
        .output()
        .expect("run");
    let response: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stderr)));
    assert_eq!(response["stdout"], "120\n", "{response}");
    assert_eq!(response["profile"], "python_sandbox");
    let output = Command::new(sentra())
        .args(["python", "--json", "--policy"])
        .arg(&original)
        .arg("--log")
        .arg(&log)
        .args(["--capability", "python_readonly", "-c", "import subprocess; subprocess.run(['ls'])"])
        .output()
        .expect("run");
    let response: Value = serde_json::from_slice(&output.stdout).expect("response");
    assert_ne!(response["exit_code"], 0);
    assert!(!violations(&response).is_empty(), "{response}");
}

#[test]
fn the_shipped_default_policy_has_a_working_sandbox() {
    // The shipped sandbox sections, as they are (the rest of the file names programs a test machine
    // may lack).
    let shipped = include_str!("../../policies/default.yaml");
    let start = shipped.find("\nprofiles:").expect("default.yaml has a profiles section");
    let dir = tempfile::tempdir().expect("tempdir");
    let policy = dir.path().join("default-sandbox.yaml");
    std::fs::write(&policy, &shipped[start..]).expect("policy");
    let log = dir.path().join("audit.jsonl");
    let output = Command::new(sentra())
        .args(["python", "--json", "--policy"])
        .arg(&policy)
        .arg("--log")
        .arg(&log)
        .args(["-c", "import threading, json, datetime\nt = threading.Thread(target=print, args=('thread',)); t.start(); t.join()\nopen('out.txt', 'w').write('x')"])
        .output()
        .expect("run");
    let response: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stderr)));
    assert_eq!(response["exit_code"], 0, "{response}");
    assert_eq!(response["stdout"], "thread\n");
    assert!(violations(&response).is_empty(), "{response}");
}

/// An unprivileged governed agent's `sentra python` is run by the controller: under the policy it
/// enforces (the shipped sandbox profile), as that policy's user, recorded with the agent's identity;
/// a request that would widen the profile, or name its own user, is refused and recorded; and a
/// caller killed mid-run takes its sandbox with it.
#[test]
fn an_agent_runs_python_through_the_controller() {
    let shipped = include_str!("../../policies/default.yaml");
    let at = shipped.find("\nprofiles:").expect("profiles in the default policy");
    let dir = tempfile::Builder::new().prefix("sentra-sandbox-agent-").tempdir_in("/tmp").expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "version: \"2.0\"\nmode: enforce\ndefault: allow\nexec:\n  default: allow\ngoverned:\n  user: \"65534\"\n{}",
            &shipped[at + 1..]
        ),
    )
    .expect("policy");
    std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut daemon = TestDaemon::new("python", dir.path(), None);
    daemon.start(&policy);
    let python = sentra();
    let marker = format!("sentra-agent-marker-{}", std::process::id());
    let script = format!(
        "S={python}; \
         $S python -c 'import math; print(math.factorial(20))'; echo rc1=$?; \
         $S python -c 'import subprocess; subprocess.run([\"ls\"])'; echo rc2=$?; \
         $S python --user root -c 'print(1)'; echo rc3=$?; \
         echo '{{\"code\": \"print(6*7)\", \"timeout_sec\": 5}}' | $S python --request; echo rc4=$?; \
         echo '{{\"code\": \"print(1)\", \"timeout_sec\": 99999}}' | $S python --request; echo rc5=$?; \
         timeout -s KILL 3 $S python -c 'import time; time.sleep(60)  # {marker}'; echo rc6=$?",
        python = python.display(),
    );
    let out = daemon.launch(&["--", "/bin/sh", "-c", &format!("{{ {script}; }} 2>&1")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("2432902008176640000\nrc1=0"), "{out:?}");
    assert!(text.contains("sentra python: DENIED (python_sandbox)") && !text.contains("rc2=0"), "{out:?}");
    assert!(text.contains("root's") && text.contains("rc3=126"), "{out:?}");
    let response: Value = text
        .lines()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("a JSON response: {out:?}"));
    assert_eq!(response["stdout"], "42\n", "{response}");
    assert!(text.contains("rc4=0"), "{out:?}");
    assert!(
        text.contains("timeout_sec 99999 is above the profile's 30") && text.contains("rc5=126"),
        "{out:?}"
    );
    assert!(text.contains("rc6=137"), "{out:?}");
    // The killed caller's interpreter went with it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let running = || {
        std::fs::read_dir("/proc")
            .expect("/proc")
            .flatten()
            .filter(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&marker))
            })
            .count()
    };
    while running() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(running(), 0, "the sandbox of a caller killed mid-run is gone");

    let records = wait_for_records(&daemon.audit(), Duration::from_secs(10), "the runs' records", |r| {
        r.iter().filter(|r| r["event"] == "sandbox_exit").count() >= 3
            && r.iter().any(|r| r["event"] == "sandbox_exec" && r["decision"] == "denied")
    });
    let of = |event: &str| -> Vec<&Value> { records.iter().filter(|r| r["event"] == event).collect() };
    let started = of("sandbox_exec");
    assert!(started.iter().all(|r| r["detail"]["requested_by"]["uid"] == 65534), "{started:?}");
    let allowed: Vec<&&Value> = started.iter().filter(|r| r["decision"] == "allowed").collect();
    assert!(allowed.len() >= 4, "{started:?}");
    assert!(
        allowed.iter().all(|r| r["detail"]["uid"] == 65534 && r["detail"]["profile"] == "python_sandbox")
    );
    let refused: Vec<&&Value> = started.iter().filter(|r| r["decision"] == "denied").collect();
    assert_eq!(refused.len(), 1, "{started:?}");
    assert!(refused[0]["reason"].as_str().is_some_and(|r| r.contains("timeout_sec")), "{refused:?}");
    let violations = of("sandbox_violation");
    // The shipped profile refuses `subprocess` at its first pipe, before any fork.
    assert!(violations.iter().any(|r| r["detail"]["violation"]["kind"] == "syscall"), "{violations:?}");
    assert!(violations.iter().all(|r| r["detail"]["requested_by"]["uid"] == 65534), "{violations:?}");
}
