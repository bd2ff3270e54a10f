//! `cargo xtask bench net` (run through the network test binary, see `xtask/src/bench/net.rs`):
//! `connect()` latency to a local listener without Sentra, with 10 and with 10,000 CIDR entries, and
//! the controller's resolver against the upstream queried directly. Everything runs inside a network
//! namespace created here; the upstream is the tests' DNS fixture.
//!
//! Cases are measured in interleaved rounds (baseline, 10, 10,000 in each), and the median round is
//! reported, so that drift of a shared machine hits every case alike.

use std::{
    fmt::Write as _,
    net::TcpListener,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use crate::{
    dns_fixture::{DnsFixture, Rr},
    netns::NetNs,
    netprobe::OPS_ENV,
};

/// Environment variable that turns the probe entry point into this benchmark: `N,ROUNDS,QUERIES`.
pub const BENCH_ENV: &str = "SENTRA_NETBENCH";

fn probe_command() -> Vec<String> {
    let exe = std::env::current_exe().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    [exe.as_str(), "netprobe_entry", "--exact", "--nocapture", "--test-threads=1", "-q"]
        .map(String::from)
        .to_vec()
}

/// The value of `key=` in the probe's first result line.
fn value(stdout: &str, key: &str) -> Option<f64> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("PROBE 0 "))
        .flat_map(str::split_whitespace)
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

fn ungoverned(ns: &NetNs, op: &str) -> Result<String, String> {
    let command = probe_command();
    let output = ns
        .command(&command[0])
        .args(&command[1..])
        .env(OPS_ENV, op)
        .output()
        .map_err(|e| format!("probe: {e}"))?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn governed(ns: &NetNs, dir: &std::path::Path, policy: &str, op: &str) -> Result<String, String> {
    let command = probe_command();
    let refs: Vec<&str> = command.iter().map(String::as_str).collect();
    let run = ns.run_governed(dir, policy, &refs, &[(OPS_ENV, op.to_string())]);
    if run.code != 0 {
        return Err(format!("governed probe failed: {run:?}"));
    }
    Ok(run.stdout)
}

fn cidr_policy(port: u16, entries: u32) -> String {
    let mut policy = String::from("version: \"2.0\"\nmode: enforce\ndefault: allow\nnetwork:\n  allow:\n");
    let _ = writeln!(policy, "    - {{ id: listener, cidr: 127.0.0.1/32, ports: [{port}] }}");
    for i in 1..entries {
        // Distinct /24s spread over 10.0.0.0/8: a deep, wide trie.
        let _ = writeln!(
            policy,
            "    - {{ id: e{i}, cidr: 10.{}.{}.0/24, ports: [443] }}",
            (i >> 8) & 0xff,
            i & 0xff
        );
    }
    policy
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs the benchmark if `SENTRA_NETBENCH` is set, then exits.
///
/// # Panics
/// If the namespace or the fixture cannot be set up (the benchmark needs root).
pub fn main_if_requested() {
    let Ok(spec) = std::env::var(BENCH_ENV) else {
        return;
    };
    let numbers: Vec<u32> = spec.split(',').filter_map(|s| s.trim().parse().ok()).collect();
    let [n, rounds, queries] = numbers[..] else {
        eprintln!("{BENCH_ENV} must be N,ROUNDS,QUERIES");
        std::process::exit(2);
    };
    match run(n, rounds, queries) {
        Ok(report) => {
            println!("{report}");
            std::process::exit(0);
        }
        Err(err) => {
            eprintln!("net bench failed: {err}");
            std::process::exit(1);
        }
    }
}

fn run(n: u32, rounds: u32, queries: u32) -> Result<String, String> {
    let ns = NetNs::new(&["10.200.0.53/32", "10.200.1.10/32"]);
    let dir =
        tempfile::Builder::new().prefix("sentra-netbench-").tempdir_in("/tmp").map_err(|e| e.to_string())?;
    let listener = ns.run(|| TcpListener::bind("127.0.0.1:0")).map_err(|e| format!("listener: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let stop = Arc::new(AtomicBool::new(false));
    let acceptor = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            // Accepts and drops; ends when told to and woken by one last connection (below).
            for stream in listener.incoming() {
                drop(stream);
                if stop.load(Ordering::Relaxed) {
                    break;
                }
            }
        })
    };
    let fixture = DnsFixture::start(
        &ns,
        "10.200.0.53:53".parse().map_err(|_| "addr")?,
        vec![Rr::A("bench.allowed.test", 300, [10, 200, 1, 10])],
        Vec::new(),
    );
    let connect_op = format!("connect-bench 127.0.0.1 {port} {n}");
    let (p10, p10k) = (cidr_policy(port, 10), cidr_policy(port, 10_000));
    let mut cases: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    let mut means: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..rounds.max(1) {
        let outputs = [
            ungoverned(&ns, &connect_op)?,
            governed(&ns, dir.path(), &p10, &connect_op)?,
            governed(&ns, dir.path(), &p10k, &connect_op)?,
        ];
        for ((case, mean), output) in cases.iter_mut().zip(means.iter_mut()).zip(&outputs) {
            case.push(value(output, "ns_per_connect").ok_or_else(|| format!("no result in {output:?}"))?);
            mean.push(value(output, "mean_ns").ok_or_else(|| format!("no result in {output:?}"))?);
        }
    }
    let [base, ten, tenk] = cases.map(median);
    // What Sentra's programs cost per connect, in runs of their own with the kernel's statistics on
    // (they add two clock reads to every program run).
    let mut costs = String::new();
    for (label, policy) in [("10_entries", &p10), ("10000_entries", &p10k)] {
        let command = probe_command();
        let refs: Vec<&str> = command.iter().map(String::as_str).collect();
        let ops = format!("mark; wait-line; {connect_op}; wait-eof");
        let (cmd, audit) = ns.governed_command(dir.path(), policy, &refs, &[(OPS_ENV, ops)]);
        let (programs, line) = crate::costs::held(cmd, "PROBE 0 mark", "PROBE 2 ")?;
        let _ = std::fs::remove_file(audit);
        if !line.contains("ns_per_connect=") {
            return Err(format!("the held connect loop said {line:?}"));
        }
        costs.push_str(&crate::costs::report(label, &programs, "connect", n, 150));
    }
    let [mean_none, mean_small, mean_large] = means.map(median);

    let dns_policy = "version: \"2.0\"\nmode: enforce\ndefault: allow\nnetwork:\n  dns: { upstream: [\"10.200.0.53:53\"] }\n  allow:\n    - { id: bench, domain: \"*.allowed.test\", ports: [443] }\n";
    let dns_op = format!("dns-bench 10.200.0.53 bench.allowed.test {queries}");
    let (mut direct, mut through) = (Vec::new(), Vec::new());
    for _ in 0..rounds.max(1) {
        let output = ungoverned(&ns, &dns_op)?;
        direct.push(value(&output, "us_per_query").ok_or_else(|| format!("no result in {output:?}"))?);
        let output = governed(&ns, dir.path(), dns_policy, &dns_op)?;
        through.push(value(&output, "us_per_query").ok_or_else(|| format!("no result in {output:?}"))?);
    }
    let (direct, through) = (median(direct), median(through));
    let asked = fixture.seen().len();

    stop.store(true, Ordering::Relaxed);
    let _ = ns.run(move || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let _ = acceptor.join();

    let mut report = String::new();
    let _ = writeln!(
        report,
        "connect() to a local listener, {n} per case: median per connect (mean), median of {rounds} rounds:"
    );
    let _ = writeln!(report, "  without Sentra          {base:>9.0} ns  ({mean_none:.0})");
    let _ =
        writeln!(report, "  10 CIDR entries         {ten:>9.0} ns  ({mean_small:.0})  {:.3}x", ten / base);
    let _ = writeln!(
        report,
        "  10,000 CIDR entries     {tenk:>9.0} ns  ({mean_large:.0})  {:.3}x  target <= 1.05x",
        tenk / base
    );
    report.push_str(&costs);
    let _ =
        writeln!(report, "resolver, {queries} sequential UDP queries per case, median of {rounds} rounds:");
    let _ =
        writeln!(report, "  direct to upstream      {direct:>9.1} us/query  ({:.0} queries/s)", 1e6 / direct);
    let _ = writeln!(
        report,
        "  through the controller  {through:>9.1} us/query  ({:.0} queries/s)",
        1e6 / through
    );
    let _ = writeln!(
        report,
        "  added per query         {:>9.3} ms  target <= 0.2 ms   (upstream saw {asked} queries)",
        (through - direct) / 1000.0
    );
    Ok(report)
}
