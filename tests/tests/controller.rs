//! The long-running controller against the real kernel: pinning survives `kill -9`, a restarted
//! controller adopts, reloads are atomic under an exec storm, a rejected reload changes nothing, and
//! the socket is root's alone. Each test uses its own pin root, runtime directory and cgroup.

use std::{
    fmt::Write as _,
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use sentra_tests::{daemon::TestDaemon, install, read_records, wait_for_records};
use serde_json::Value;

const FIXTURE: &str = env!("CARGO_BIN_EXE_sentra-fixture");

/// A test controller with the scene its tests use: the fixture installed as `allowed/tool` and
/// `denied/tool`.
struct Controller {
    dir: tempfile::TempDir,
    daemon: TestDaemon<'static>,
}

impl std::ops::Deref for Controller {
    type Target = TestDaemon<'static>;
    fn deref(&self) -> &Self::Target {
        &self.daemon
    }
}

impl std::ops::DerefMut for Controller {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.daemon
    }
}

impl Controller {
    fn new(tag: &str) -> Self {
        let dir = tempfile::Builder::new().prefix("sentra-ctl-test-").tempdir_in("/tmp").expect("tempdir");
        // The agent runs as an unprivileged user: it must reach the tools.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let controller = Self { daemon: TestDaemon::new(tag, dir.path(), None), dir };
        install(Path::new(FIXTURE), &controller.tool("allowed"));
        install(Path::new(FIXTURE), &controller.tool("denied"));
        controller
    }
    fn tool(&self, which: &str) -> PathBuf {
        self.dir.path().join(which).join("tool")
    }
    fn write_policy(&self, name: &str, body: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, body).expect("policy");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        path
    }
    /// Allows the fixture and the `allowed` directory (rule id `allow_id`); denies `denied/tool`.
    fn policy(&self, allow_id: &str, deny_denied: bool) -> String {
        let mut text = format!(
            "version: \"2.0\"\nmode: enforce\ndefault: deny\nexec:\n  allow:\n    - {{ id: fixture, path: {FIXTURE} }}\n    - {{ id: {allow_id}, dir: {} }}\n",
            self.tool("allowed").parent().map(Path::display).expect("dir")
        );
        if deny_denied {
            let _ = writeln!(
                text,
                "  deny:\n    - {{ id: denied_tool, path: {} }}",
                self.tool("denied").display()
            );
        } else {
            let _ = writeln!(text, "    - {{ id: now_allowed, path: {} }}", self.tool("denied").display());
        }
        text
    }
    /// Runs `fixture spawn PATH` inside the governed cgroup; returns what it printed.
    fn launch_spawn(&self, path: &Path) -> String {
        let out = self.launch(&["--", FIXTURE, "spawn", path.to_str().expect("utf-8"), "hello"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    fn denied_marker(&self) -> &'static str {
        let records = read_records(&self.audit());
        let backend = records.iter().find_map(|r| r["backend"].as_str()).unwrap_or("none");
        if backend == "lsm" { "exec-errno=1" } else { "signal=9" }
    }
}

#[test]
fn kill_9_keeps_enforcement_and_a_restarted_controller_adopts() {
    let mut c = Controller::new("kill");
    let policy = c.write_policy("p.yaml", &c.policy("allowed_dir", true));
    c.start(&policy);
    let marker = c.denied_marker();
    assert!(c.launch_spawn(&c.tool("denied")).contains(marker), "denied before kill");
    assert!(c.launch_spawn(&c.tool("allowed")).contains("hello"), "allowed before kill");
    let before = c.status();

    c.kill9();
    assert!(c.pin_root.join("maps").is_dir(), "pins must survive the controller");
    let out = c.launch_spawn(&c.tool("denied"));
    assert!(out.contains(marker), "enforcement stopped with the controller: {out:?}");
    assert!(c.launch_spawn(&c.tool("allowed")).contains("hello"));

    c.start(&policy);
    let after = c.status();
    assert_eq!(after["adoptions"], 1, "{after}");
    assert_eq!(after["generation"], before["generation"], "adoption must not reload");
    assert_eq!(after["policy_hash"], before["policy_hash"]);
    // Events of execs made while no controller ran were kept in the pinned ring buffer.
    wait_for_records(
        &c.audit(),
        Duration::from_secs(20),
        "the event of the exec made while down",
        |records| {
            records.iter().filter(|r| r["event"] == "exec" && r["rule_id"] == "denied_tool").count() >= 2
        },
    );
    assert!(c.launch_spawn(&c.tool("denied")).contains(marker), "denied after adoption");

    let out = c.run(&["stop"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(c.child.take().expect("daemon").wait().expect("wait").success());
    assert!(!c.pin_root.exists(), "stop must remove every pin");
}

/// Generation of every key in the exec rule maps (read from the pins), and the active generation.
fn exec_map_generations(pin_root: &Path) -> (u32, Vec<u32>) {
    use aya::maps::HashMap;
    use sentra_common::{
        exec::{InodeKey, NameKey, RuleValue},
        names::map::{EXEC_DIR_RULES, EXEC_INODE_RULES, EXEC_NAME_RULES},
    };
    use sentra_ctl::kernel::{maps, pin};
    let mut store = pin::open(pin_root).expect("pinned maps");
    let active = maps::active_generation(&mut store).expect("active").generation;
    let mut generations = Vec::new();
    for name in [EXEC_INODE_RULES, EXEC_DIR_RULES] {
        let map: HashMap<_, InodeKey, RuleValue> =
            HashMap::try_from(store.maps.get(name).expect("map")).expect("hash map");
        generations.extend(map.keys().map(|k| k.expect("key").generation));
    }
    let map: HashMap<_, NameKey, RuleValue> =
        HashMap::try_from(store.maps.get(EXEC_NAME_RULES).expect("map")).expect("hash map");
    generations.extend(map.keys().map(|k| k.expect("key").generation));
    (active, generations)
}

#[test]
fn reloads_leave_only_the_active_generations_entries() {
    let mut c = Controller::new("entries");
    // Different key sets: `a` denies denied/tool (a name and an inode entry), `b` allows it (a name).
    let a = c.write_policy("a.yaml", &c.policy("gen_a", true));
    let b = c.write_policy("b.yaml", &c.policy("gen_b", false));
    let count = |path: &Path| {
        let policy = sentra_ctl::policy::Policy::load(path).expect("policy");
        let compiled = sentra_ctl::policy::exec::compile(&policy).expect("compiles");
        compiled.inode.len() + compiled.dir.len() + compiled.name.len()
    };
    let check = |c: &Controller, policy: &Path, when: &str| {
        // The old generation is cleared after the reload's reply; the next request is served after.
        let _ = c.run(&["status"]);
        let (active, generations) = exec_map_generations(&c.pin_root);
        assert!(
            generations.iter().all(|&g| g == active),
            "{when}: entries of a retired generation: {generations:?}"
        );
        assert_eq!(generations.len(), count(policy), "{when}: entries of the active policy");
    };
    c.start(&a);
    check(&c, &a, "start");
    for (i, next) in [&b, &a, &b].into_iter().enumerate() {
        let out = c.run(&["policy", "reload", next.to_str().expect("utf-8")]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        check(&c, next, &format!("reload {i}"));
    }
    // A restarted controller does not know what its predecessor wrote: its first reload sweeps.
    c.kill9();
    c.start(&b);
    for (i, next) in [&a, &b].into_iter().enumerate() {
        let out = c.run(&["policy", "reload", next.to_str().expect("utf-8")]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        check(&c, next, &format!("reload {i} after adoption"));
    }
    assert!(c.launch_spawn(&c.tool("denied")).contains("hello"), "policy b allows denied/tool");
    let out = c.run(&["stop"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `sentra-ctl programs` reads the kernel's own accounting of every attached program through the pins:
/// each program once (the cgroup programs too, however many cgroups they are attached to), and, with
/// run-time statistics on, the backend's exec program counted once for every exec in the governed
/// cgroup; `--sample` turns statistics on by itself; a restarted controller sees the same programs.
#[test]
fn programs_reports_every_attached_program_from_the_kernels_accounting() {
    const EXECS: u32 = 50;
    let mut c = Controller::new("programs");
    let policy = c.write_policy("p.yaml", &c.policy("allowed", true));
    c.start(&policy);
    let programs = |c: &Controller, args: &[&str]| -> Value {
        let out = c.run(&[&["programs", "--json"], args].concat());
        assert!(out.status.success(), "programs: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("programs --json prints JSON")
    };
    let find = |report: &Value, name: &str| -> Value {
        report["programs"]
            .as_array()
            .and_then(|all| all.iter().find(|p| p["name"] == name).cloned())
            .unwrap_or_else(|| panic!("{name} is not among the reported programs: {report}"))
    };
    let backend = c.status()["backend"].as_str().expect("backend").to_string();
    let exec_program = if backend == "lsm" { "exec_lsm" } else { "exec_signal" };

    let before = programs(&c, &[]);
    let names: Vec<&str> =
        before["programs"].as_array().expect("programs").iter().filter_map(|p| p["name"].as_str()).collect();
    let mut unique = names.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), names.len(), "a program is reported twice: {names:?}");
    for name in [exec_program, "exec_applet", "net_connect4", "net_connect6", "guard_sysctl"] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }

    let stats = sentra_ctl::kernel::stats::enable_run_time_stats().expect("BPF_ENABLE_STATS");
    let counted = programs(&c, &[]);
    let tool = c.tool("allowed");
    let out =
        c.launch(&["--", FIXTURE, "bench", &EXECS.to_string(), tool.to_str().expect("utf-8"), "exit", "0"]);
    assert!(out.status.success(), "the governed loop: {}", String::from_utf8_lossy(&out.stderr));
    let after = programs(&c, &[]);
    drop(stats);
    let runs = |report: &Value| find(report, exec_program)["run_count"].as_u64().expect("run_count");
    let ran = runs(&after) - runs(&counted);
    assert!(ran >= u64::from(EXECS), "{exec_program} counted {ran} runs for {EXECS} execs and more");
    let time = find(&after, exec_program)["run_time_ns"].as_u64().expect("run_time_ns")
        - find(&counted, exec_program)["run_time_ns"].as_u64().expect("run_time_ns");
    assert!(time > 0, "{exec_program} ran {ran} times in no time");
    assert!(find(&after, exec_program)["jited_bytes"].as_u64() > Some(0), "{after}");

    // `--sample` turns statistics on for its window by itself.
    let sampled = programs(&c, &["--sample", "1"]);
    assert_eq!(sampled["sample_seconds"], 1);
    let _ = find(&sampled, exec_program);
    // With statistics off (and the sysctl off), the kernel does not count: the counts stand still.
    if std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|v| v.trim() == "0") {
        let off = programs(&c, &[]);
        let out = c.launch(&["--", FIXTURE, "bench", "5", tool.to_str().expect("utf-8"), "exit", "0"]);
        assert!(out.status.success(), "the governed loop: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(runs(&programs(&c, &[])), runs(&off), "counted with statistics off");
    }

    c.kill9();
    c.start(&policy);
    let adopted = programs(&c, &[]);
    assert_eq!(
        find(&adopted, exec_program)["id"],
        find(&after, exec_program)["id"],
        "the restarted controller reports another program"
    );
    let out = c.run(&["stop"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = c.run(&["programs"]);
    assert!(!out.status.success(), "programs with nothing pinned succeeded");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing is pinned"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn rejected_reload_keeps_the_enforced_policy() {
    let mut c = Controller::new("reject");
    let policy = c.write_policy("p.yaml", &c.policy("allowed_dir", true));
    c.start(&policy);
    let before = c.status();
    let bad = c.write_policy(
        "bad.yaml",
        "version: \"2.0\"\nmode: enforce\nexec:\n  allow:\n    - { id: x, dri: /usr }\n",
    );
    let out = c.run(&["policy", "reload", bad.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.yaml:5:") && stderr.contains("unknown field `dri`"), "{stderr}");
    let after = c.status();
    assert_eq!(after["generation"], before["generation"]);
    assert_eq!(after["policy_hash"], before["policy_hash"]);
    assert!(c.launch_spawn(&c.tool("denied")).contains(c.denied_marker()));

    // A good reload changes access live.
    let open = c.write_policy("open.yaml", &c.policy("allowed_dir", false));
    let out = c.run(&["policy", "reload", open.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(c.launch_spawn(&c.tool("denied")).contains("hello"), "reload did not take effect");
    assert_ne!(c.status()["generation"], before["generation"]);
}

#[test]
fn reload_under_an_exec_storm_never_mixes_generations() {
    let mut c = Controller::new("storm");
    let a = c.write_policy("a.yaml", &c.policy("gen_a", true));
    let b = c.write_policy("b.yaml", &c.policy("gen_b", true));
    c.start(&a);
    let n: u32 = std::env::var("SENTRA_STORM").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let storm = c
        .launch_cmd(&[
            "--",
            FIXTURE,
            "storm",
            &n.to_string(),
            c.tool("allowed").to_str().expect("utf-8"),
            "exit",
            "0",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("storm");
    let mut reloads = 0;
    let deadline = Instant::now() + Duration::from_mins(10);
    let mut storm = storm;
    while storm.try_wait().expect("wait").is_none() {
        let next = if reloads % 2 == 0 { &b } else { &a };
        let out = c.run(&["policy", "reload", next.to_str().expect("utf-8")]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        reloads += 1;
        assert!(Instant::now() < deadline, "storm hung");
    }
    let output = storm.wait_with_output().expect("storm output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains(&format!("ok={n} failed=0")), "an exec was denied during reloads: {stdout}");
    assert!(reloads >= 2, "the storm ended before two reloads ({reloads})");
    // Let the controller write the last events, then check every decision came from one whole policy.
    let _ = c.run(&["status"]);
    std::thread::sleep(Duration::from_millis(500));
    let tool = c.tool("allowed");
    let records = read_records(&c.audit());
    let events: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"] == "exec" && r["executable"] == tool.to_str().expect("utf-8"))
        .collect();
    let dropped = c.status()["counters"]["events_dropped"].as_u64().unwrap_or(0);
    assert!(events.len() as u64 <= u64::from(n), "more events than execs");
    assert!(events.len() as u64 + dropped >= u64::from(n), "events lost without being counted");
    for event in &events {
        let rule = event["rule_id"].as_str().unwrap_or("");
        assert!(rule == "gen_a" || rule == "gen_b", "decision from neither policy: {event}");
        assert_eq!(event["decision"], "allowed", "{event}");
    }
    let generations: std::collections::BTreeSet<u64> =
        events.iter().filter_map(|e| e["policy_generation"].as_u64()).collect();
    assert_eq!(generations.len(), 2, "both generations decided during the storm: {generations:?}");
    eprintln!("{reloads} reloads during {n} execs");
}

#[test]
fn the_socket_answers_root_only() {
    let mut c = Controller::new("sock");
    let policy = c.write_policy("p.yaml", &c.policy("allowed_dir", true));
    c.start(&policy);
    let mode = std::fs::metadata(c.run_dir().join("ctl.sock")).expect("socket").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let out = c.ctl().arg("status").uid(65534).gid(65534).output().expect("status as nobody");
    assert!(!out.status.success(), "nobody must not reach the controller");
    let json = c.status();
    let backend = json["backend"].as_str().expect("backend");
    // Without --json: aligned `key  value` lines, nested fields joined with dots.
    let out = c.run(&["status"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key).filter(|rest| rest.starts_with("  ")).map(str::trim))
            .unwrap_or_else(|| panic!("no {key} line in:\n{text}"))
            .to_string()
    };
    assert_eq!(value("backend"), backend);
    assert_eq!(value("generation"), json["generation"].to_string());
    assert_eq!(value("network.cidr_entries"), json["network"]["cidr_entries"].to_string());
}

#[test]
fn each_cgroup_the_policy_names_is_governed_and_the_set_is_fixed_while_running() {
    let mut c = Controller::new("multi");
    let id = std::process::id();
    let (a, b) = (format!("test-multi-a-{id}"), format!("test-multi-b-{id}"));
    let governed = |names: &[&str]| format!("governed:\n  cgroups: [{}]\n", names.join(", "));
    let policy = c.write_policy("p.yaml", &(c.policy("allowed_dir", true) + &governed(&[&a, &b])));
    c.cgroup = String::new();
    c.start(&policy);
    let status = c.status();
    let paths: Vec<&str> = status["governed_cgroups"]
        .as_array()
        .expect("cgroups")
        .iter()
        .filter_map(|g| g["path"].as_str())
        .collect();
    assert_eq!(paths.len(), 2, "{status}");
    assert!(
        paths[0].ends_with(&format!("/sentra/{a}")) && paths[1].ends_with(&format!("/sentra/{b}")),
        "{status}"
    );
    let marker = c.denied_marker();
    for name in [&a, &b] {
        let launch = |tool: &Path| {
            let out =
                c.launch(&["--cgroup", name, "--", FIXTURE, "spawn", tool.to_str().expect("utf-8"), "hello"]);
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        assert!(launch(&c.tool("denied")).contains(marker), "{name}: denied tool not denied");
        assert!(launch(&c.tool("allowed")).contains("hello"), "{name}: allowed tool did not run");
    }
    let out = c.launch(&["--cgroup", "nope", "--", "/bin/true"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no cgroup named nope"));

    // A reload that would change the set is refused; the enforced policy stays.
    let narrowed = c.write_policy("q.yaml", &(c.policy("allowed_dir", false) + &governed(&[&a])));
    let out = c.run(&["policy", "reload", narrowed.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("governed.cgroups"), "{stderr}");
    assert_eq!(c.status()["generation"], status["generation"]);
    assert!(c.launch_spawn(&c.tool("denied")).contains(marker));
}

/// Marks the active generation's exec (`exec: true`) or network settings as never loaded, through the
/// pins: the state a probe meets if a generation is ever activated before it is complete.
fn unload_active_settings(pin_root: &Path, exec: bool) {
    use aya::maps::Array;
    use sentra_common::{
        names::map::{NET_SETTINGS, SETTINGS},
        net::NetSettings,
        settings::Settings,
    };
    use sentra_ctl::kernel::{maps, pin};
    let mut store = pin::open(pin_root).expect("pinned maps");
    let active = maps::active_generation(&mut store).expect("active").generation;
    if exec {
        let mut array: Array<_, Settings> =
            Array::try_from(store.maps.get_mut(SETTINGS).expect("map")).expect("array");
        let settings = Settings { loaded: 0, ..array.get(&active, 0).expect("settings") };
        array.set(active, settings, 0).expect("write settings");
    } else {
        let mut array: Array<_, NetSettings> =
            Array::try_from(store.maps.get_mut(NET_SETTINGS).expect("map")).expect("array");
        let settings = NetSettings { loaded: 0, ..array.get(&active, 0).expect("settings") };
        array.set(active, settings, 0).expect("write settings");
    }
}

#[test]
fn a_probe_that_cannot_decide_denies_and_names_the_failed_site() {
    let mut c = Controller::new("probe-site");
    let policy = c.write_policy("p.yaml", &c.policy("allowed_dir", true));
    c.start(&policy);
    let backend = c.status()["backend"].as_str().expect("backend").to_string();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let target = listener.local_addr().expect("addr").to_string();
    let connect = |c: &Controller| {
        let out = c.launch(&["--", FIXTURE, "connect", &target]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Loopback is not governed by this policy: the connect succeeds (or fails for the network's own
    // reasons, such as a VM whose `lo` is down), but is not refused.
    let before = connect(&c);
    assert!(!before.contains("connect-errno=1\n"), "refused before the fault: {before}");

    // Network: the connect is refused, reported with the site and the enforcing backend, and counted.
    unload_active_settings(&c.pin_root, false);
    assert_eq!(connect(&c).trim(), "connect-errno=1", "a connect the probe cannot decide must fail");
    let records =
        wait_for_records(&c.audit(), Duration::from_secs(20), "the network fail-closed event", |r| {
            r.iter().any(|r| r["event"] == "net" && r["rule_id"] == "internal_error")
        });
    let net = records.iter().find(|r| r["event"] == "net" && r["rule_id"] == "internal_error").expect("net");
    assert_eq!(net["decision"], "denied", "{net}");
    assert_eq!(net["probe_site"], "settings", "{net}");
    assert_eq!(net["backend"], backend.as_str(), "{net}");
    assert_eq!(net["destination"], "127.0.0.1", "{net}");

    // Exec: the governed exec is denied, reported with the site, and counted.
    unload_active_settings(&c.pin_root, true);
    let out = c.launch(&["--", FIXTURE, "hello"]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hello"), "an exec the probe cannot decide ran");
    let records = wait_for_records(&c.audit(), Duration::from_secs(20), "the exec fail-closed event", |r| {
        r.iter().any(|r| r["event"] == "exec" && r["rule_id"] == "internal_error")
    });
    let exec =
        records.iter().find(|r| r["event"] == "exec" && r["rule_id"] == "internal_error").expect("exec");
    assert_eq!(exec["decision"], "denied", "{exec}");
    assert_eq!(exec["probe_site"], "settings", "{exec}");
    assert_eq!(exec["mode"], "enforce", "{exec}");
    assert_eq!(exec["backend"], backend.as_str(), "{exec}");

    let counters = &c.status()["counters"];
    let sites = &counters["probe_errors_by_site"];
    assert!(sites["settings"].as_u64().is_some_and(|n| n >= 2), "{counters}");
    assert_eq!(
        sites.as_object().map(serde_json::Map::len),
        Some(1),
        "only the settings site failed: {counters}"
    );
    assert_eq!(counters["probe_errors"], sites["settings"], "{counters}");
}
