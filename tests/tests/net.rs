//! Network governance against the real kernel: cgroup `sock_addr` programs on every backend,
//! plus `lsm/socket_connect` on the `lsm` backend (in the VM). Every test runs `sentra-ctl run` inside
//! a network namespace it creates, whose only interface is `lo` carrying the test's own addresses
//! (10.200.x.x, fd00:200:…): no packet leaves the namespace. The governed client is this test binary
//! itself (`netprobe_entry`, see `sentra_tests::netprobe`); the upstream DNS server is the tests' own
//! authoritative fixture.

use std::{
    net::{TcpListener, UdpSocket},
    path::Path,
    time::{Duration, Instant},
};

use sentra_tests::{
    Run,
    daemon::TestDaemon,
    dns_fixture::{DnsFixture, Rr},
    netns::NetNs,
    netprobe::{self, OPS_ENV, run_op},
};
use serde_json::Value;

/// The probe entry point; without `SENTRA_NETPROBE_OPS` it checks that the probe reports success and
/// failure truthfully (the other tests rely on it).
#[test]
fn netprobe_entry() {
    netprobe::main_if_requested();
    sentra_tests::netbench::main_if_requested();
    // In a namespace of its own: `lo` is up there (in the VM's initial namespace it is not).
    let ns = NetNs::new(&[]);
    let results = ns.run(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("listener");
        let port = listener.local_addr().expect("addr").port();
        let open = run_op(&format!("tcp 127.0.0.1 {port}"));
        drop(listener);
        (open, run_op(&format!("tcp 127.0.0.1 {port}")))
    });
    assert_eq!(results, ("ok".to_string(), "errno=111".to_string()), "ECONNREFUSED expected after close");
    assert!(run_op("dns 127.0.0.1 x.test A bogus").starts_with("bad-mode"));
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("sentra-net-").tempdir_in("/tmp").expect("tempdir")
}

fn policy(mode: &str, network: &str) -> String {
    format!("version: \"2.0\"\nmode: {mode}\ndefault: allow\nnetwork:\n{network}")
}

/// Runs the probe governed in `ns`; returns the run and one result per operation.
fn probe(ns: &NetNs, dir: &Path, policy: &str, ops: &[String]) -> (Run, Vec<String>) {
    let exe = std::env::current_exe().expect("current exe");
    let exe = exe.to_str().expect("utf-8 path");
    let command = [exe, "netprobe_entry", "--exact", "--nocapture", "--test-threads=1", "-q"];
    let run = ns.run_governed(dir, policy, &command, &[(OPS_ENV, ops.join(";"))]);
    assert!(
        run.records.iter().any(|r| r["event"] == "controller_start"),
        "controller did not start: code {} stderr {}",
        run.code,
        run.stderr
    );
    let mut results = vec![String::new(); ops.len()];
    for line in run.stdout.lines() {
        if let Some(rest) = line.strip_prefix("PROBE ")
            && let Some((i, result)) = rest.split_once(' ')
            && let Ok(i) = i.parse::<usize>()
            && i < results.len()
        {
            results[i] = result.to_string();
        }
    }
    assert!(results.iter().all(|r| !r.is_empty()), "probe output incomplete: {run:?}");
    (run, results)
}

fn net_events<'a>(run: &'a Run, destination: &str, port: u16) -> Vec<&'a Value> {
    run.records
        .iter()
        .filter(|r| r["event"] == "net" && r["destination"] == destination && r["port"] == port)
        .collect()
}

const EPERM: &str = "errno=1";

/// Datagrams waiting on each socket. Loopback delivers through the backlog softirq, which a loaded
/// single-CPU guest may run late: waits (bounded) until the first socket has `expected`, then gives a
/// stray datagram to the others the same chance to show up.
fn datagrams_received(sockets: &[UdpSocket], expected: usize) -> Vec<usize> {
    let mut buf = [0u8; 64];
    let mut received = vec![0; sockets.len()];
    let deadline = Instant::now() + Duration::from_secs(5);
    while received[0] < expected && Instant::now() < deadline {
        while sockets[0].recv(&mut buf).is_ok() {
            received[0] += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    for (i, socket) in sockets.iter().enumerate() {
        while socket.recv(&mut buf).is_ok() {
            received[i] += 1;
        }
    }
    received
}

#[test]
fn net_cidr_port_and_protocol_allowlist_ipv4_ipv6_tcp_udp() {
    let ns = NetNs::new(&["10.200.1.10/32", "10.200.3.1/32", "fd00:200:1::10/128", "fd00:200:2::10/128"]);
    // Listeners on every address of the namespace (dual-stack), and UDP receivers.
    let (tcp, udp) = ns.run(|| {
        let tcp: Vec<TcpListener> =
            [8005, 8011].iter().map(|p| TcpListener::bind(("::", *p)).expect("tcp listener")).collect();
        let udp: Vec<UdpSocket> =
            [9000, 9001].iter().map(|p| UdpSocket::bind(("::", *p)).expect("udp socket")).collect();
        (tcp, udp)
    });
    // Baseline without Sentra: every destination below is reachable, so each denial is Sentra's.
    let baseline = ns.run(|| {
        [
            "tcp 10.200.3.1 8005",
            "tcp 10.200.1.10 8011",
            "tcp fd00:200:2::10 8005",
            "udp-sendto 10.200.3.1 9001",
        ]
        .map(run_op)
    });
    assert!(baseline.iter().all(|r| r == "ok"), "baseline {baseline:?}");
    for socket in &udp {
        socket.set_nonblocking(true).expect("nonblocking");
    }
    // The baseline's datagram to 9001 is taken now: arriving late (loopback delivery can lag on a
    // loaded guest), it was once counted below as a datagram that got past Sentra.
    let mut buf = [0u8; 64];
    let deadline = Instant::now() + Duration::from_secs(5);
    while udp[1].recv(&mut buf).is_err() {
        assert!(Instant::now() < deadline, "the baseline datagram to 9001 never arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
    for socket in &udp {
        while socket.recv(&mut buf).is_ok() {}
    }

    let network = "  allow:\n    - { id: lan_web, cidr: 10.200.1.0/24, ports: [\"8000-8010\"], reason: lan web range }\n    - { id: v6_web, cidr: \"fd00:200:1::/64\", ports: [8005] }\n    - { id: udp_peer, cidr: 10.200.1.10/32, ports: [9000], protocol: udp }\n";
    let ops: Vec<String> = [
        "tcp 10.200.1.10 8005",         // 0 allowed: in CIDR and port range
        "tcp 10.200.1.10 8011",         // 1 denied: port outside the range
        "tcp 10.200.3.1 8005",          // 2 denied: address outside every CIDR
        "tcp fd00:200:1::10 8005",      // 3 allowed: IPv6 CIDR
        "tcp fd00:200:2::10 8005",      // 4 denied: IPv6 outside
        "tcp ::ffff:10.200.3.1 8005",   // 5 denied: IPv4-mapped on an IPv6 socket is IPv4
        "tcp ::ffff:10.200.1.10 8005",  // 6 allowed: same, allowed address
        "udp-connect 10.200.1.10 9000", // 7 allowed: UDP rule
        "udp-connect 10.200.1.10 9001", // 8 denied: UDP port
        "udp-sendto 10.200.1.10 9000",  // 9 allowed: unconnected UDP
        "udp-sendto 10.200.3.1 9001",   // 10 denied: unconnected UDP elsewhere
        "udp-sendto 10.200.1.10 8005",  // 11 denied: the TCP range does not cover UDP
    ]
    .map(String::from)
    .to_vec();
    let dir = tempdir();
    let (run, results) = probe(&ns, dir.path(), &policy("enforce", network), &ops);
    let expected = ["ok", EPERM, EPERM, "ok", EPERM, EPERM, "ok", "ok", EPERM, "ok", EPERM, EPERM];
    for (i, (got, want)) in results.iter().zip(expected).enumerate() {
        assert_eq!(got, want, "op {i} `{}`: {results:?}\nstderr: {}", ops[i], run.stderr);
    }
    // Datagrams: the two allowed ones to port 9000 arrived; nothing reached 9001.
    let received = datagrams_received(&udp, 2);
    assert_eq!(received, [2, 0], "datagrams received on 9000, 9001");

    // Every denial is audited with who, where and which rule.
    for (destination, port, protocol) in [
        ("10.200.1.10", 8011, "tcp"),
        ("10.200.3.1", 8005, "tcp"),
        ("fd00:200:2::10", 8005, "tcp"),
        ("10.200.1.10", 9001, "udp"),
        ("10.200.3.1", 9001, "udp"),
        ("10.200.1.10", 8005, "udp"),
    ] {
        let events = net_events(&run, destination, port);
        let event = events
            .iter()
            .find(|e| e["protocol"] == protocol)
            .unwrap_or_else(|| panic!("no {protocol} event for {destination}:{port}: {:#?}", run.records));
        assert_eq!(event["decision"], "denied");
        assert_eq!(event["rule_id"], "default");
        assert_eq!(event["layer"], "kernel");
        assert!(event["pid"].as_u64().is_some_and(|p| p > 0));
        assert_eq!(event["comm"].as_str().map(str::is_empty), Some(false));
        let exe = std::env::current_exe().expect("exe");
        let name = exe.file_name().and_then(|n| n.to_str()).expect("name");
        assert!(event["executable"].as_str().is_some_and(|e| e.ends_with(name)), "{event}");
    }
    // Which hook decided: on the lsm backend `socket_connect` runs before the cgroup hook and refuses
    // connects itself; datagrams sent with sendto are the cgroup hook's alone.
    if let Some(expected) = sentra_tests::expected_backend() {
        assert_eq!(run.backend(), expected, "wrong backend");
    }
    let connect_hook = if run.backend() == "lsm" { "lsm_connect" } else { "connect" };
    for (destination, port, action) in [
        ("10.200.1.10", 8011, connect_hook),
        ("10.200.1.10", 9001, connect_hook),
        ("10.200.3.1", 9001, "sendmsg"),
    ] {
        let events = net_events(&run, destination, port);
        assert!(
            events.iter().all(|e| e["action"] == action),
            "{destination}:{port} expected {action}: {events:#?}"
        );
    }
    // The IPv4-mapped connect is reported as the IPv4 address it is (connect hook).
    assert_eq!(net_events(&run, "10.200.3.1", 8005).len(), 2, "{:#?}", run.records);
    // Allowed destinations produce no denial events.
    assert!(net_events(&run, "10.200.1.10", 8005).iter().all(|e| e["protocol"] == "udp"));
    drop(tcp);
}

#[test]
fn net_loopback_is_a_separate_switch_and_audit_mode_only_reports() {
    let ns = NetNs::new(&[]);
    let listener = ns.run(|| TcpListener::bind("127.0.0.1:0").expect("listener"));
    let port = listener.local_addr().expect("addr").port();
    let ops = [format!("tcp 127.0.0.1 {port}")];
    let dir = tempdir();

    let (run, results) = probe(&ns, dir.path(), &policy("enforce", "  loopback: false\n"), &ops);
    assert_eq!(results, [EPERM], "{run:?}");
    assert_eq!(net_events(&run, "127.0.0.1", port).len(), 1);

    let (_, results) = probe(&ns, dir.path(), &policy("enforce", "  loopback: true\n"), &ops);
    assert_eq!(results, ["ok"]);

    // Audit mode: the connect goes ahead, the event says it would have been denied.
    let (run, results) = probe(&ns, dir.path(), &policy("audit", "  loopback: false\n"), &ops);
    assert_eq!(results, ["ok"]);
    let events = net_events(&run, "127.0.0.1", port);
    assert_eq!(events.len(), 1, "{:#?}", run.records);
    assert_eq!(events[0]["decision"], "auditonly");

    // Without a network section the network is not governed.
    let no_network = "version: \"2.0\"\nmode: enforce\ndefault: allow\n";
    let (_, results) = probe(&ns, dir.path(), no_network, &ops);
    assert_eq!(results, ["ok"]);
}

/// A namespace with the DNS fixture on 10.200.0.53:53 and servers for its names on port 443.
struct DnsScene {
    ns: NetNs,
    fixture: DnsFixture,
    _listeners: [TcpListener; 2],
    dir: tempfile::TempDir,
}

const SERVER: &str = "10.200.0.53";

impl DnsScene {
    fn new() -> Self {
        let ns = NetNs::new(&[
            "10.200.0.53/32",
            "10.200.1.10/32",
            "10.200.1.11/32",
            "10.200.1.12/32",
            "10.200.1.20/32",
            "fd00:200:1::10/128",
        ]);
        let mut records = vec![
            Rr::A("www.allowed.test", 300, [10, 200, 1, 10]),
            Rr::Cname("alias.allowed.test", 300, "edge.cdn.test"),
            Rr::Cname("edge.cdn.test", 300, "node.cdn.test"),
            Rr::A("node.cdn.test", 300, [10, 200, 1, 11]),
            Rr::Aaaa("v6.allowed.test", 300, "fd00:200:1::10".parse().expect("v6")),
            Rr::A("short.allowed.test", 1, [10, 200, 1, 12]),
            Rr::A("denied.test", 300, [10, 200, 1, 20]),
            Rr::A("exact.test", 300, [10, 200, 1, 20]),
        ];
        // 40 addresses: too long for a 512-byte UDP answer.
        for i in 1..=40u8 {
            records.push(Rr::A("big.allowed.test", 300, [10, 200, 2, i]));
        }
        let fixture = DnsFixture::start(
            &ns,
            format!("{SERVER}:53").parse().expect("addr"),
            records,
            vec!["dead.allowed.test"],
        );
        let listeners = ns.run(|| {
            [TcpListener::bind(("::", 443)).expect("443"), TcpListener::bind(("::", 8443)).expect("8443")]
        });
        Self { ns, fixture, _listeners: listeners, dir: tempdir() }
    }

    fn policy() -> String {
        policy(
            "enforce",
            &format!(
                "  dns: {{ upstream: [\"{SERVER}:53\"], ttl_min: 1, ttl_max: 2, timeout_ms: 500 }}\n  allow:\n    - {{ id: allowed_zone, domain: \"*.allowed.test\", ports: [443], reason: test zone }}\n    - {{ id: exact_name, domain: \"exact.test:8443\" }}\n"
            ),
        )
    }

    fn probe(&self, ops: &[&str]) -> (Run, Vec<String>) {
        self.probe_with(&Self::policy(), ops)
    }

    fn probe_with(&self, policy: &str, ops: &[&str]) -> (Run, Vec<String>) {
        let ops: Vec<String> = ops.iter().map(|s| (*s).to_string()).collect();
        probe(&self.ns, self.dir.path(), policy, &ops)
    }
}

fn dns_records<'a>(run: &'a Run, domain: &str) -> Vec<&'a Value> {
    run.records.iter().filter(|r| r["event"] == "dns" && r["domain"] == domain).collect()
}

#[test]
fn net_allowed_name_resolves_and_connects_denied_name_is_refused_and_unreachable() {
    let scene = DnsScene::new();
    let (run, results) = scene.probe(&[
        "tcp 10.200.1.10 443",                              // 0 before resolving: denied
        "dns 10.200.0.53 www.allowed.test A udp",           // 1
        "tcp 10.200.1.10 443",                              // 2 now allowed
        "tcp 10.200.1.10 8443",                             // 3 only the rule's port
        "dns 10.200.0.53 denied.test A udp",                // 4 refused
        "tcp 10.200.1.20 443",                              // 5 its address stays unreachable
        "dns 10.200.0.53 www.allowed.test A udp-connected", // 6 connected UDP socket
        "dns 10.200.9.9 www.allowed.test A udp",            // 7 any port-53 destination is steered
        "dns 10.200.0.53 exact.test A udp",                 // 8 exact name rule
        "tcp 10.200.1.20 8443",                             // 9 allowed through exact.test
        "tcp 10.200.1.20 443",                              // 10 … on its port only
    ]);
    assert_eq!(results[0], EPERM, "{results:?}");
    assert_eq!(
        results[1],
        format!("rcode=No Error tc=0 from={SERVER}:53 addrs=10.200.1.10"),
        "{results:?}\n{}",
        run.stderr
    );
    assert_eq!(results[2], "ok");
    assert_eq!(results[3], EPERM);
    assert!(results[4].starts_with("rcode=Query Refused"), "{results:?}");
    assert_eq!(results[5], EPERM);
    assert_eq!(results[6], format!("rcode=No Error tc=0 from={SERVER}:53 addrs=10.200.1.10"), "{results:?}");
    assert_eq!(results[7], "rcode=No Error tc=0 from=10.200.9.9:53 addrs=10.200.1.10", "{results:?}");
    assert!(results[8].ends_with("addrs=10.200.1.20"), "{results:?}");
    assert_eq!(results[9], "ok");
    assert_eq!(results[10], EPERM);

    // The refused name never reached the upstream; the allowed one did.
    assert!(!scene.fixture.was_asked("denied.test"), "{:?}", scene.fixture.seen());
    assert!(scene.fixture.was_asked("www.allowed.test"));
    let refused = dns_records(&run, "denied.test");
    assert_eq!(refused.len(), 1, "{:#?}", run.records);
    assert_eq!(refused[0]["decision"], "denied");
    let allowed = dns_records(&run, "www.allowed.test");
    assert!(
        allowed.iter().all(|r| r["decision"] == "allowed" && r["rule_id"] == "allowed_zone"),
        "{allowed:#?}"
    );
    // Denied connects are audited as network events.
    assert!(!net_events(&run, "10.200.1.20", 443).is_empty());
}

/// Audit mode: the resolver answers a name no rule allows (recording `auditonly` with the
/// addresses), the connection goes through (recorded `auditonly`), and `policy learn` turns the two
/// records into one `domain:` entry with the port that was used.
#[test]
fn net_audit_mode_answers_every_name_and_policy_learn_allows_what_was_used() {
    let scene = DnsScene::new();
    let policy = DnsScene::policy().replace("mode: enforce", "mode: audit");
    let (run, results) = scene.probe_with(
        &policy,
        &["dns 10.200.0.53 denied.test A udp", "tcp 10.200.1.20 443", "tcp 10.200.1.12 8443"],
    );
    assert_eq!(results[0], format!("rcode=No Error tc=0 from={SERVER}:53 addrs=10.200.1.20"), "{results:?}");
    assert_eq!(results[1], "ok", "{results:?}");
    assert_eq!(results[2], "ok", "{results:?}");
    let answered = dns_records(&run, "denied.test");
    assert_eq!(answered.len(), 1, "{:#?}", run.records);
    assert_eq!(answered[0]["decision"], "auditonly");
    assert_eq!(answered[0]["rule_id"], "default");
    assert_eq!(answered[0]["detail"]["addresses"], serde_json::json!(["10.200.1.20"]));
    assert!(net_events(&run, "10.200.1.20", 443).iter().all(|r| r["decision"] == "auditonly"));

    let log = scene.dir.path().join("learn-audit.jsonl");
    let lines: Vec<String> = run.records.iter().map(Value::to_string).collect();
    std::fs::write(&log, lines.join("\n") + "\n").expect("write the log");
    let base = scene.dir.path().join("learn-base.yaml");
    std::fs::write(&base, &policy).expect("write the base");
    let out = sentra_tests::ctl_command()
        .args(["policy", "learn", "--from"])
        .arg(&log)
        .arg("--base")
        .arg(&base)
        .output()
        .expect("policy learn");
    let learned = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        learned.contains("{ id: learned_net_denied_test, domain: denied.test, ports: [443] }"),
        "{learned}"
    );
    assert!(
        learned.contains("{ id: learned_net_10_200_1_12, cidr: 10.200.1.12/32, ports: [8443] }"),
        "{learned}"
    );
    assert!(learned.contains("id: allowed_zone"), "the base's entries stay: {learned}");
}

#[test]
fn net_dns_from_another_network_namespace_is_refused_at_once_and_says_why() {
    let scene = DnsScene::new();
    let (run, results) = scene.probe(&[
        "dns 10.200.0.53 www.allowed.test A udp", // 0 in the controller's namespace: answered
        "unshare-net",                            // 1 now as an agent in a container
        "dns 10.200.0.53 www.allowed.test A udp", // 2 refused at once, not steered into silence
        "dns 10.200.0.53 www.allowed.test A tcp", // 3
        "dns 127.0.0.53 www.allowed.test A udp",  // 4 a local stub address too
    ]);
    assert!(results[0].starts_with("rcode=No Error"), "{results:?}");
    assert_eq!(results[1], "ok", "{results:?}");
    // Refused at the send, not steered to a loopback where no one answers (that would read
    // `errno=11`, the probe's reply deadline, or `errno=111` for TCP).
    assert_eq!(&results[2..], [EPERM, EPERM, EPERM], "{results:?}\n{}", run.stderr);
    let refused: Vec<&Value> =
        run.records.iter().filter(|r| r["event"] == "net" && r["rule_id"] == "dns_other_netns").collect();
    assert_eq!(refused.len(), 3, "{:#?}", run.records);
    assert!(refused.iter().all(|r| r["decision"] == "denied" && r["port"] == 53), "{refused:#?}");
    assert!(
        refused[0]["reason"].as_str().is_some_and(|r| r.contains("another network namespace")),
        "{refused:#?}"
    );
}

#[test]
fn net_cname_chains_aaaa_and_dns_over_tcp() {
    let scene = DnsScene::new();
    let (run, results) = scene.probe(&[
        "dns 10.200.0.53 alias.allowed.test A udp", // 0 CNAME → CNAME → A
        "tcp 10.200.1.11 443",                      // 1
        "dns 10.200.0.53 v6.allowed.test AAAA tcp", // 2 AAAA over TCP
        "tcp fd00:200:1::10 443",                   // 3
    ]);
    assert!(results[0].ends_with("addrs=10.200.1.11"), "{results:?}\n{}", run.stderr);
    assert_eq!(results[1], "ok", "{results:?}");
    assert!(
        results[2].starts_with("rcode=No Error") && results[2].ends_with("addrs=fd00:200:1::10"),
        "{results:?}"
    );
    assert_eq!(results[3], "ok", "{results:?}");
    assert!(scene.fixture.seen().iter().any(|s| s.name == "v6.allowed.test" && s.tcp));
}

#[test]
fn net_truncated_answers_and_dead_upstream() {
    let scene = DnsScene::new();
    let (run, results) = scene.probe(&[
        "dns 10.200.0.53 big.allowed.test A udp",  // 0 truncated over UDP
        "dns 10.200.0.53 big.allowed.test A tcp",  // 1 complete over TCP
        "tcp 10.200.2.40 443",                     // 2 an address of the complete answer
        "dns 10.200.0.53 dead.allowed.test A udp", // 3 upstream never answers → SERVFAIL
        "dns 10.200.0.53 dead.allowed.test A tcp", // 4 same over TCP
    ]);
    assert!(results[0].contains("tc=1"), "{results:?}\n{}", run.stderr);
    let addrs = results[1].rsplit("addrs=").next().unwrap_or_default().split(',').count();
    assert_eq!(addrs, 40, "{results:?}");
    assert!(results[1].contains("tc=0"));
    assert_ne!(results[2], EPERM, "{results:?}");
    assert!(results[3].starts_with("rcode=Server Failure"), "{results:?}");
    // Never a hang: a query left unanswered would read `errno=11`, the probe's own reply deadline,
    // instead of SERVFAIL (no wall-clock bound here: it measured the machine's load, not Sentra).
    assert!(results[4].starts_with("rcode=Server Failure"), "{results:?}");
    assert!(dns_records(&run, "dead.allowed.test").iter().all(|r| r["decision"] == "servfail"));
}

#[test]
fn net_ttl_expiry_removes_access() {
    let scene = DnsScene::new();
    // TTL 1 s (floor 1, ceiling 2): allowed at once, gone 3 s later.
    let (run, results) = scene.probe(&[
        "dns 10.200.0.53 short.allowed.test A udp",
        "tcp 10.200.1.12 443",
        "sleep 3000",
        "tcp 10.200.1.12 443",
        // www has TTL 300, clamped to the 2 s ceiling.
        "dns 10.200.0.53 www.allowed.test A udp",
        "sleep 3000",
        "tcp 10.200.1.10 443",
    ]);
    assert!(results[0].ends_with("addrs=10.200.1.12"), "{results:?}\n{}", run.stderr);
    assert_eq!(results[1], "ok", "{results:?}");
    assert_eq!(results[3], EPERM, "{results:?}");
    assert_eq!(results[6], EPERM, "ceiling not applied: {results:?}");
    assert!(run.records.iter().any(|r| r["event"] == "dns_expired" && r["domain"] == "short.allowed.test"));
}

/// Live reload of the network part of a policy: a governed process keeps running while the
/// controller writes the inactive generation, flips `ACTIVE_GENERATION` and clears the old one
/// (`sentra_ctl::enforce::generations::Generations::{switch, retire}`, what the controller's reload
/// runs).
#[test]
#[expect(clippy::too_many_lines, reason = "one scenario: load, govern, probe, switch, probe again")]
fn net_reload_changes_access_live() {
    use std::{
        io::{BufRead as _, BufReader},
        os::{fd::AsRawFd as _, unix::process::CommandExt as _},
        process::Stdio,
        sync::Arc,
    };

    use sentra_common::settings::Mode;
    use sentra_ctl::{
        cgroup::{Cgroup, cgroup2_root},
        dns::Resolver,
        enforce::generations::Generations,
        kernel::{BackendChoice, Kernel, maps, rcu::RcuBarrier},
        policy::{Policy, exec, network},
    };

    let ns = NetNs::new(&["10.200.1.10/32", "10.200.1.11/32"]);
    let _listener = ns.run(|| TcpListener::bind(("::", 8005)).expect("listener"));
    let dir = tempdir();
    let parse = |cidr: &str| {
        let text = format!(
            "version: \"2.0\"\ndefault: allow\nnetwork:\n  allow:\n    - {{ id: only, cidr: {cidr}, ports: [8005] }}\n"
        );
        Policy::parse(Path::new("reload.yaml"), &text).expect("policy")
    };
    let (before, after) = (parse("10.200.1.10/32"), parse("10.200.1.11/32"));
    let backend = match sentra_tests::requested_backend().as_str() {
        "lsm" => BackendChoice::Lsm,
        "signal" => BackendChoice::Signal,
        _ => BackendChoice::Auto,
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let mut kernel = Kernel::load(backend).expect("load BPF");
        let barrier = RcuBarrier::new().expect("RCU barrier");
        let exec_before = exec::compile(&before).expect("exec part");
        let net_before = Arc::new(network::compile(&before).expect("network part"));
        let audit = sentra_ctl::audit::AuditLog::open(&dir.path().join("reload.jsonl")).expect("audit log");
        let resolver = Resolver::start(&kernel.ebpf, 0, &net_before, audit, None).await.expect("resolver");
        let mut generations = Generations::install(
            &mut kernel.ebpf,
            kernel.backend,
            exec_before,
            net_before,
            Mode::Enforce,
            Some(&resolver),
        )
        .expect("generation 0");
        let root = cgroup2_root().expect("cgroup2");
        let group =
            Cgroup::create(&root, Path::new(&format!("sentra/test-net-reload-{}", std::process::id())))
                .expect("cgroup");
        maps::govern(&mut kernel.ebpf, group.id, group.level, 0).expect("govern");
        let dir_fd = std::fs::File::open(&group.path).expect("cgroup dir");
        kernel.govern_network(&[("reload", dir_fd)]).expect("attach sock_addr programs");

        // The probe joins the cgroup before it execs, then connects before and after a pause.
        let procs = std::fs::OpenOptions::new().write(true).open(group.procs_file()).expect("cgroup.procs");
        let fd = procs.as_raw_fd();
        let ops =
            "tcp 10.200.1.10 8005;tcp 10.200.1.11 8005;sleep 2000;tcp 10.200.1.10 8005;tcp 10.200.1.11 8005";
        let exe = std::env::current_exe().expect("exe");
        let mut command = ns.command(exe);
        command
            .args(["netprobe_entry", "--exact", "--nocapture", "--test-threads=1", "-q"])
            .env(OPS_ENV, ops)
            .stdout(Stdio::piped());
        // SAFETY: write(2) only, async-signal-safe; `procs` outlives the spawn.
        unsafe {
            command.pre_exec(move || {
                if libc::write(fd, b"0".as_ptr().cast(), 1) == 1 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let mut child = command.spawn().expect("probe");
        drop(procs);
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut results = Vec::new();
        // The first two results come before the pause; the reload happens during it.
        while results.len() < 2 {
            let line = lines.next().expect("probe output ended early").expect("read");
            if let Some(rest) = line.strip_prefix("PROBE ") {
                results.push(rest.split_once(' ').map(|(_, r)| r.to_string()).unwrap_or_default());
            }
        }
        let net_after = Arc::new(network::compile(&after).expect("network part"));
        let flipped = generations
            .switch(
                &mut kernel.ebpf,
                kernel.backend,
                &barrier,
                exec::compile(&after).expect("exec"),
                net_after,
                Mode::Enforce,
                Some(&resolver),
            )
            .expect("switch to generation 1");
        assert_eq!((flipped.old, flipped.generation), (0, 1));
        assert_eq!(maps::active_generation(&mut kernel.ebpf).expect("active").generation, 1);
        assert!(
            generations.retire(&mut kernel.ebpf, &barrier, Some(&resolver)).expect("retire gen 0").is_some(),
            "the switch left generation 0 to retire"
        );
        for line in lines.by_ref() {
            let line = line.expect("read");
            if let Some(rest) = line.strip_prefix("PROBE ") {
                results.push(rest.split_once(' ').map(|(_, r)| r.to_string()).unwrap_or_default());
            }
        }
        assert!(child.wait().expect("probe exit").success());
        assert_eq!(results, ["ok", EPERM, "ok", EPERM, "ok"], "before: .10 allowed; after the reload: .11");
        maps::release(&mut kernel.ebpf, group.id).expect("release");
        drop(resolver);
    });
}

/// Runs the probe inside a test controller's governed cgroup with `sentra-ctl launch`; one result
/// per operation.
fn launch_probe(d: &TestDaemon<'_>, ops: &[&str]) -> Vec<String> {
    let exe = std::env::current_exe().expect("exe");
    let out = d
        .launch_cmd(&["--env", OPS_ENV, "--"])
        .arg(exe)
        .args(["netprobe_entry", "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(OPS_ENV, ops.join(";"))
        .output()
        .expect("launch");
    let results: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("PROBE ")?.split_once(' ').map(|(_, r)| r.to_string()))
        .collect();
    assert_eq!(results.len(), ops.len(), "launch: {out:?}");
    results
}

fn write_policy(dir: &Path, name: &str, network: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(&path, policy("enforce", network)).expect("policy");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    path
}

/// The long-running controller governs the network too: its `sock_addr` (and on the `lsm` backend
/// `socket_connect`) links are pinned, so after `kill -9` connects are still decided and learned
/// addresses stay allowed (DNS, whose resolver died, fails closed); a restarted controller takes its
/// predecessor's resolver address and learned addresses over without a reload; a reload changes
/// access live; `stop` removes it all.
#[test]
fn net_daemon_pins_network_governance_reloads_and_adopts() {
    let scene = DnsScene::new();
    let mut d = TestDaemon::new("netd", scene.dir.path(), Some(&scene.ns));
    let domains = write_policy(
        scene.dir.path(),
        "domains.yaml",
        &format!(
            "  dns: {{ upstream: [\"{SERVER}:53\"], ttl_min: 60, ttl_max: 120, timeout_ms: 500 }}\n  allow:\n    - {{ id: allowed_zone, domain: \"*.allowed.test\", ports: [443] }}\n    - {{ id: lan_12, cidr: 10.200.1.12/32, ports: [443] }}\n"
        ),
    );
    let cidr_only = write_policy(
        scene.dir.path(),
        "cidr.yaml",
        "  allow:\n    - { id: lan_11, cidr: 10.200.1.11/32, ports: [443] }\n",
    );
    let www = format!("dns {SERVER} www.allowed.test A udp");
    let denied = format!("dns {SERVER} denied.test A udp");
    let www_answer = format!("rcode=No Error tc=0 from={SERVER}:53 addrs=10.200.1.10");

    d.start(&domains);
    let results = launch_probe(
        &d,
        &[
            "tcp 10.200.1.12 443",
            "tcp 10.200.1.10 443",
            &www,
            "tcp 10.200.1.10 443",
            &denied,
            "tcp 10.200.1.20 443",
        ],
    );
    assert_eq!(results[..4], ["ok", EPERM, www_answer.as_str(), "ok"], "{results:?}");
    assert!(results[4].starts_with("rcode=Query Refused"), "{results:?}");
    assert_eq!(results[5], EPERM, "{results:?}");
    let before = d.status();
    assert_eq!(before["network"]["governed"], true, "{before}");
    assert_eq!(before["network"]["learned_addresses"], 1, "{before}");
    let links = before["pinned_links"].as_array().expect("links");
    let linked = |program: &str| links.iter().any(|l| l.as_str() == Some(&format!("{program}@{}", d.cgroup)));
    assert!(linked("net_connect4") && linked("net_sendmsg6"), "{before}");

    // Killed: the pinned programs go on deciding; the learned address stays allowed; DNS, steered to
    // a resolver that is gone, gets no answer (fail closed).
    d.kill9();
    let results =
        launch_probe(&d, &["tcp 10.200.1.12 443", "tcp 10.200.1.11 443", "tcp 10.200.1.10 443", &www]);
    assert_eq!(results[..3], ["ok", EPERM, "ok"], "enforcement stopped with the controller: {results:?}");
    assert!(!results[3].starts_with("rcode=No Error"), "answered with no resolver: {results:?}");

    // Restarted: it adopts, takes the resolver's address over (no reload needed) and the learned one.
    d.start(&domains);
    let after = d.status();
    assert_eq!(after["adoptions"], 1, "{after}");
    assert_eq!(after["generation"], before["generation"], "{after}");
    assert_eq!(after["network"]["resolver"], before["network"]["resolver"], "{after}");
    assert_eq!(after["network"]["learned_addresses"], 1, "{after}");
    let results = launch_probe(&d, &[&www, &denied, "tcp 10.200.1.10 443"]);
    assert_eq!(results[0], www_answer, "{results:?}");
    assert!(results[1].starts_with("rcode=Query Refused"), "{results:?}");
    assert_eq!(results[2], "ok", "{results:?}");

    // A reload to CIDR-only rules: the domain rule and its learned address go, .11 comes.
    let out = d.run(&["policy", "reload", cidr_only.to_str().expect("utf-8")]);
    assert!(out.status.success(), "reload: {}", String::from_utf8_lossy(&out.stderr));
    let results = launch_probe(&d, &["tcp 10.200.1.11 443", "tcp 10.200.1.12 443", "tcp 10.200.1.10 443"]);
    assert_eq!(results, ["ok", EPERM, EPERM], "{results:?}");
    assert_eq!(d.status()["network"]["learned_addresses"], 0);

    // Denials reached the audit log with their rule, across the restart.
    let denials = |records: &[Value], dest: &str| {
        records
            .iter()
            .filter(|r| r["event"] == "net" && r["destination"] == dest && r["decision"] == "denied")
            .count()
    };
    sentra_tests::wait_for_records(
        &d.audit(),
        Duration::from_secs(20),
        "denials of .11 and .12, refusal of denied.test",
        |records| {
            denials(records, "10.200.1.11") >= 1
                && denials(records, "10.200.1.12") >= 1
                && records
                    .iter()
                    .any(|r| r["event"] == "dns" && r["decision"] == "denied" && r["domain"] == "denied.test")
        },
    );

    let out = d.run(&["stop"]);
    assert!(out.status.success(), "stop: {}", String::from_utf8_lossy(&out.stderr));
    assert!(d.child.take().expect("daemon").wait().expect("wait").success());
    assert!(!d.pin_root.exists(), "stop must remove every pin");
}
