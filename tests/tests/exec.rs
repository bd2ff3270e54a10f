//! Exec governance against the real kernel. Runs on the host (signal backend) and inside the qemu VMs
//! (`cargo xtask vm-test`: lsm backend, and signal backend on a kernel booted without BPF LSM).
//! Every test creates its own files and its own governed cgroup (through `sentra-ctl run`).

use std::{
    fmt::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use sentra_tests::{Run, expected_backend, install, run_governed, tiny_elf};

const FIXTURE: &str = env!("CARGO_BIN_EXE_sentra-fixture");

/// A directory of real binaries: `allowed/tool` (covered by an allowed directory), `denied/tool`
/// (denied by an exact rule), and the fixture itself (allowed by path).
struct Scene {
    dir: tempfile::TempDir,
}

impl Scene {
    fn new() -> Self {
        let dir = tempfile::Builder::new().prefix("sentra-test-").tempdir_in("/tmp").expect("tempdir");
        let scene = Self { dir };
        install(Path::new(FIXTURE), &scene.allowed());
        install(Path::new(FIXTURE), &scene.denied());
        scene
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn allowed(&self) -> PathBuf {
        self.path().join("allowed/tool")
    }
    fn denied(&self) -> PathBuf {
        self.path().join("denied/tool")
    }
    fn policy(&self, mode: &str, default: &str) -> String {
        let mut allow = String::new();
        for dir in ["/bin", "/usr/bin", "/sbin", "/usr/sbin"] {
            // Only directories that exist here (the VM has /bin from busybox only).
            if Path::new(dir).is_dir() {
                let _ = writeln!(allow, "    - {{ id: sys{}, dir: {dir} }}", dir.replace('/', "_"));
            }
        }
        format!(
            "version: \"2.0\"\nmode: {mode}\ndefault: {default}\nexec:\n  allow:\n{allow}    - {{ id: fixture, path: {FIXTURE} }}\n    - {{ id: allowed_dir, dir: {} }}\n  deny:\n    - id: denied_tool\n      path: {}\n      reason: tests deny this binary\n",
            self.path().join("allowed").display(),
            self.denied().display()
        )
    }
    fn run(&self, mode: &str, default: &str, command: &[&str]) -> Run {
        let run = run_governed(self.path(), &self.policy(mode, default), command);
        assert!(
            run.records.iter().any(|r| r["event"] == "controller_start"),
            "controller did not start: code {} stderr {}",
            run.code,
            run.stderr
        );
        run
    }
}

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn backend_is_the_one_this_environment_promises() {
    let scene = Scene::new();
    let run = scene.run("enforce", "deny", &[FIXTURE, "hello"]);
    assert_eq!(run.code, 0, "{run:?}");
    let backend = run.backend();
    match expected_backend() {
        Some(expected) => {
            assert_eq!(backend, expected, "wrong backend; controller said {:?}", run.records[0]);
        }
        None => assert!(backend == "lsm" || backend == "signal", "backend {backend}"),
    }
}

#[test]
fn denied_exec_fails_and_its_event_names_the_rule() {
    let scene = Scene::new();
    let run = scene.run("enforce", "deny", &[FIXTURE, "spawn", s(&scene.denied()), "hello"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains(run.denied_marker()), "stdout {:?} backend {}", run.stdout, run.backend());
    assert!(!run.stdout.contains("hello"), "the denied binary ran: {:?}", run.stdout);
    let events = run.execs_of(&scene.denied());
    assert_eq!(events.len(), 1, "{:?}", run.records);
    let event = events[0];
    assert_eq!(event["decision"], "denied");
    assert_eq!(event["rule_id"], "denied_tool");
    assert_eq!(event["reason"], "tests deny this binary");
    assert_eq!(event["layer"], "kernel");
    assert_eq!(event["backend"], run.backend());
    assert_eq!(event["args"], serde_json::json!(["hello"]));
    assert!(event["pid"].as_u64().is_some_and(|p| p > 0));
    assert!(event["ppid"].as_u64().is_some_and(|p| p > 0));
    assert_eq!(event["comm"].as_str().map(str::is_empty), Some(false));
}

#[test]
fn allowed_exec_runs() {
    let scene = Scene::new();
    let run = scene.run("enforce", "deny", &[FIXTURE, "spawn", s(&scene.allowed()), "hello"]);
    assert!(run.stdout.contains("hello") && run.stdout.contains("exit=0"), "{run:?}");
    let events = run.execs_of(&scene.allowed());
    assert_eq!(events.len(), 1, "{:?}", run.records);
    assert_eq!(events[0]["decision"], "allowed");
    assert_eq!(events[0]["rule_id"], "allowed_dir");
}

#[test]
fn exit_code_of_the_command_is_returned() {
    let scene = Scene::new();
    let run = scene.run("enforce", "deny", &[FIXTURE, "exit", "7"]);
    assert_eq!(run.code, 7, "{run:?}");
}

#[test]
fn process_outside_the_cgroup_is_unaffected() {
    let scene = Scene::new();
    // Keep a governed cgroup alive while this (ungoverned) test process runs the denied binary.
    let policy = scene.path().join("outside.yaml");
    std::fs::write(&policy, scene.policy("enforce", "deny")).expect("policy");
    std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut governed = sentra_tests::ctl_command()
        .args(["run", "--policy", s(&policy), "--audit-log", s(&scene.path().join("outside.jsonl"))])
        .args(["--backend", &sentra_tests::requested_backend(), "--", FIXTURE, "sleep", "3"])
        .spawn()
        .expect("start controller");
    // Wait until the controller governs (its cgroup exists with the sleeping fixture in it).
    sentra_tests::wait_for_records(
        &scene.path().join("outside.jsonl"),
        std::time::Duration::from_mins(1),
        "the controller's start",
        |records| records.iter().any(|r| r["event"] == "controller_start"),
    );
    let output = Command::new(scene.denied()).arg("hello").output().expect("run outside");
    assert!(output.status.success(), "outside process was affected: {output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "hello\n");
    assert!(governed.wait().expect("controller").success());
}

#[test]
fn grandchild_started_through_sh_is_governed() {
    let scene = Scene::new();
    let inner = format!("{FIXTURE} spawn {}", scene.denied().display());
    let run = scene.run("enforce", "deny", &["/bin/sh", "-c", &format!("/bin/sh -c '{inner}'")]);
    assert!(run.stdout.contains(run.denied_marker()), "{run:?}");
    let events = run.execs_of(&scene.denied());
    assert_eq!(events.len(), 1, "{:?}", run.records);
    assert_eq!(events[0]["decision"], "denied");
}

#[test]
fn symlink_to_a_denied_binary_is_denied() {
    let scene = Scene::new();
    let link = scene.path().join("allowed/innocent-name");
    std::os::unix::fs::symlink(scene.denied(), &link).expect("symlink");
    let run = scene.run("enforce", "deny", &[FIXTURE, "spawn", s(&link), "hello"]);
    assert!(run.stdout.contains(run.denied_marker()), "{run:?}");
    // The kernel resolved the link: the event names the real file and the rule that denies it.
    let events = run.execs_of(&scene.denied());
    assert_eq!(events.len(), 1, "{:?}", run.records);
    assert_eq!(events[0]["rule_id"], "denied_tool");
}

#[test]
fn hard_link_of_a_denied_binary_is_denied_by_inode() {
    let scene = Scene::new();
    let link = scene.path().join("allowed/hardlink");
    std::fs::hard_link(scene.denied(), &link).expect("hard link");
    let run = scene.run("enforce", "deny", &[FIXTURE, "spawn", s(&link), "hello"]);
    assert!(run.stdout.contains(run.denied_marker()), "{run:?}");
    let events = run.execs_of(&link);
    assert_eq!(events.len(), 1, "{:?}", run.records);
    assert_eq!(events[0]["rule_id"], "denied_tool");
}

#[test]
fn copy_of_an_allowed_binary_into_tmp_is_denied_by_default() {
    let scene = Scene::new();
    let copy = scene.path().join("copy-of-allowed");
    install(&scene.allowed(), &copy);
    let run = scene.run("enforce", "deny", &[FIXTURE, "spawn", s(&copy), "hello"]);
    assert!(run.stdout.contains(run.denied_marker()), "{run:?}");
    let events = run.execs_of(&copy);
    assert_eq!(events.len(), 1, "{:?}", run.records);
    assert_eq!(events[0]["rule_id"], "default");
    assert_eq!(events[0]["decision"], "denied");
}

#[test]
fn default_allow_lets_unlisted_binaries_run_but_not_denied_ones() {
    let scene = Scene::new();
    let copy = scene.path().join("unlisted");
    install(&scene.allowed(), &copy);
    let run = scene.run(
        "enforce",
        "allow",
        &[
            "/bin/sh",
            "-c",
            &format!("{} hello; {FIXTURE} spawn {}", copy.display(), scene.denied().display()),
        ],
    );
    assert!(run.stdout.contains("hello\n"), "{run:?}");
    assert!(run.stdout.contains(run.denied_marker()), "{run:?}");
}

#[test]
fn audit_mode_runs_the_command_and_records_would_deny() {
    let scene = Scene::new();
    let run = scene.run("audit", "deny", &[FIXTURE, "spawn", s(&scene.denied()), "hello"]);
    assert!(run.stdout.contains("hello") && run.stdout.contains("exit=0"), "{run:?}");
    let events = run.execs_of(&scene.denied());
    assert_eq!(events.len(), 1, "{:?}", run.records);
    assert_eq!(events[0]["decision"], "auditonly");
    assert_eq!(events[0]["rule_id"], "denied_tool");
    assert_eq!(events[0]["mode"], "audit");
}

#[test]
fn child_cgroup_created_after_start_is_governed() {
    let scene = Scene::new();
    let run =
        scene.run("enforce", "deny", &[FIXTURE, "subcgroup", "late-child", s(&scene.denied()), "hello"]);
    assert!(run.stdout.contains("cgroup="), "{run:?}");
    assert!(run.stdout.contains(run.denied_marker()), "{run:?}");
    let events = run.execs_of(&scene.denied());
    assert_eq!(events.len(), 1, "{:?}", run.records);
    let start_cgroup = run.records[0]["cgroup_id"].as_u64();
    assert_ne!(events[0]["cgroup_id"].as_u64(), start_cgroup, "exec should come from the child cgroup");
}

#[test]
fn exec_storm_produces_one_event_per_exec_or_an_exact_loss_count() {
    let scene = Scene::new();
    let n: u64 = std::env::var("SENTRA_STORM").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let run =
        scene.run("enforce", "deny", &[FIXTURE, "storm", &n.to_string(), s(&scene.allowed()), "exit", "0"]);
    assert!(run.stdout.contains(&format!("ok={n} failed=0")), "{run:?}");
    let detail = run.stop_detail();
    let dropped = detail["events_dropped"].as_u64().expect("events_dropped");
    let decisions = detail["exec_decisions"].as_u64().expect("exec_decisions");
    let written = detail["events_written"].as_u64().expect("events_written");
    assert_eq!(written + dropped, decisions, "every decision is either logged or counted as lost: {detail}");
    let seen = run.execs_of(&scene.allowed()).len() as u64;
    if dropped == 0 {
        assert_eq!(seen, n, "{detail}");
    } else {
        assert!(seen >= n - dropped, "{seen} events seen, {dropped} dropped, {n} execs");
    }
    // One exec of the fixture itself plus n of the tool.
    assert_eq!(decisions, n + 1, "{detail}");
}

#[test]
fn killed_before_the_first_instruction_or_refused() {
    // A hand-made ELF whose first instructions print "ran": under the signal backend it must die by
    // SIGKILL having printed nothing; under lsm its exec fails with EPERM.
    let scene = Scene::new();
    let elf = scene.path().join("denied-elf");
    std::fs::write(&elf, tiny_elf()).expect("write elf");
    std::fs::set_permissions(&elf, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // Sanity: outside governance it runs and prints.
    let free = Command::new(&elf).output().expect("run tiny elf");
    assert_eq!(String::from_utf8_lossy(&free.stdout), "ran\n", "the tiny ELF must work ungoverned");
    let run = scene.run("enforce", "deny", &[FIXTURE, "spawn", s(&elf)]);
    assert!(!run.stdout.contains("ran"), "denied image executed instructions: {run:?}");
    assert!(run.stdout.contains(run.denied_marker()), "{run:?}");
}

#[test]
fn long_argument_lists_are_flagged_truncated() {
    // 20 arguments of 100 bytes: more arguments than the lsm backend's 8 slots, and more bytes than
    // the signal backend's one read of the argument area. Either way the record says it is cut, and
    // what it does carry is the real arguments, in order (the last perhaps cut short).
    let scene = Scene::new();
    let many: Vec<String> = (0..20).map(|i| format!("arg{i:02}-{}", "x".repeat(94))).collect();
    let allowed = scene.allowed();
    let mut command = vec![FIXTURE, "spawn", s(&allowed), "exit", "0"];
    command.extend(many.iter().map(String::as_str));
    let run = scene.run("enforce", "deny", &command);
    let events = run.execs_of(&scene.allowed());
    assert_eq!(events.len(), 1, "{:?}", run.records);
    assert_eq!(events[0]["argc"], 23);
    assert_eq!(events[0]["args_truncated"], true);
    let args: Vec<&str> =
        events[0]["args"].as_array().expect("args").iter().filter_map(serde_json::Value::as_str).collect();
    let real: Vec<&str> = ["exit", "0"].into_iter().chain(many.iter().map(String::as_str)).collect();
    assert!(args.len() >= 7 && args.len() < real.len(), "{args:?}");
    let (last, whole) = args.split_last().expect("some");
    assert_eq!(whole, &real[..whole.len()], "the captured arguments are the first ones");
    assert!(real[whole.len()].starts_with(last), "{last}");
}

/// The lines `sentra-fixture each` printed, by call index.
fn each_outcomes(stdout: &str) -> std::collections::BTreeMap<usize, String> {
    stdout
        .lines()
        .filter_map(|l| {
            let (i, outcome) = l.split_once(' ')?;
            Some((i.parse().ok()?, outcome.to_string()))
        })
        .collect()
}

#[test]
fn a_multicall_binary_runs_only_the_applets_the_policy_allows_by_name() {
    // A copy of BusyBox (its own inode: nothing the host or the VM has) with links in its directory.
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .expect("busybox: scripts/setup.sh installs busybox-static");
    let dir = tempfile::Builder::new().prefix("sentra-multicall-").tempdir_in("/tmp").expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let tools = dir.path().join("tools");
    let copy = tools.join("busybox");
    install(busybox, &copy);
    for link in ["true", "mount"] {
        std::os::unix::fs::symlink("busybox", tools.join(link)).expect("symlink");
    }
    let b = s(&copy);
    let (true_link, mount_link) = (tools.join("true"), tools.join("mount"));
    let (t, m) = (s(&true_link), s(&mount_link));
    let long = format!("{}/true", "d".repeat(300));
    let policy = |default: &str, rules: &str| {
        format!(
            "version: \"2.0\"\nmode: enforce\ndefault: {default}\nexec:\n  default: {default}\n  allow:\n    - {{ id: fixture, path: {FIXTURE} }}\n    - {{ id: box, path: {b} }}\n    - {{ id: box_true, path: {t} }}\n  deny:\n{rules}"
        )
    };
    let deny_nsenter = "    - { id: no_nsenter, name: nsenter, reason: no namespaces }\n";
    let strict = policy("deny", deny_nsenter);

    // `policy check` says what allowing a multi-call binary means.
    let strict_path = dir.path().join("strict.yaml");
    std::fs::write(&strict_path, &strict).expect("policy");
    let check = sentra_tests::ctl_command()
        .args(["policy", "check"])
        .arg(&strict_path)
        .output()
        .expect("policy check");
    let said =
        format!("{}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    assert!(check.status.success() && said.contains("multi-call binary"), "{said}");

    let calls: Vec<(&str, &str, Vec<&str>, Option<&str>)> = vec![
        // (argv[0], file, arguments, the applet a denial names; None: it runs)
        (b, b, vec!["true"], None),
        (t, t, vec![], None),
        ("true", b, vec![], None),
        (b, b, vec!["--list"], None),
        (m, m, vec![], Some("mount")),
        (b, b, vec!["mount"], Some("mount")),
        (b, b, vec!["busybox", "mount"], Some("mount")),
        ("-mount", b, vec![], Some("mount")),
        ("/x/busybox.static", b, vec!["/usr/sbin/mount"], Some("mount")),
        (b, b, vec!["nsenter", "--help"], Some("nsenter")),
        (&long, b, vec![], Some("")),
        (b, b, vec!["busybox", "busybox", "busybox", "true"], Some("")),
    ];
    let mut command: Vec<&str> = vec![FIXTURE, "each"];
    for (i, (argv0, file, args, _)) in calls.iter().enumerate() {
        if i > 0 {
            command.push("--");
        }
        command.push(argv0);
        command.push(file);
        command.extend(args);
    }
    let run = run_governed(dir.path(), &strict, &command);
    let outcomes = each_outcomes(&run.stdout);
    let denied: Vec<&serde_json::Value> =
        run.records.iter().filter(|r| r["action"] == "exec" && r["decision"] == "denied").collect();
    for (i, (argv0, _, args, applet)) in calls.iter().enumerate() {
        let got = outcomes.get(&i).map_or("nothing", String::as_str);
        match applet {
            None => assert_eq!(got, "exit=0", "call {i} ({argv0} {args:?}) was refused: {}", run.stdout),
            Some(_) => assert_eq!(got, "signal=9", "call {i} ({argv0} {args:?}) ran: {}", run.stdout),
        }
    }
    let find = |applet: &str, rule: &str| {
        denied.iter().any(|r| {
            r["rule_id"] == rule
                && r["executable"] == s(&copy)
                && (applet.is_empty() || r["detail"]["applet"] == applet)
        })
    };
    assert!(find("mount", "default"), "no denial of the mount applet by the default: {denied:#?}");
    assert!(find("nsenter", "no_nsenter"), "no denial of the nsenter applet by its rule: {denied:#?}");
    assert!(find("", "applet_unknown"), "no fail-closed denial of an unreadable applet: {denied:#?}");
    let reasons: Vec<&str> = denied.iter().filter_map(|r| r["reason"].as_str()).collect();
    assert!(reasons.iter().any(|r| r.contains("ran as the applet `mount`")), "{reasons:?}");

    // Under a default allow, a deny rule on a name holds for the applet of that name; others run.
    let open = policy("allow", "    - { id: no_mount, name: mount }\n");
    let run = run_governed(
        dir.path(),
        &open,
        &[FIXTURE, "each", b, b, "true", "--", b, b, "mount", "--", "-mount", b, "--", "echo", b],
    );
    let outcomes = each_outcomes(&run.stdout);
    assert_eq!(
        outcomes.values().map(String::as_str).collect::<Vec<_>>(),
        ["exit=0", "signal=9", "signal=9", "exit=0"],
        "{}",
        run.stdout
    );
    assert!(
        run.records.iter().any(|r| r["decision"] == "denied"
            && r["rule_id"] == "no_mount"
            && r["detail"]["applet"] == "mount"),
        "{:#?}",
        run.records
    );
}
