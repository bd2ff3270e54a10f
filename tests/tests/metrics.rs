//! The controller's Prometheus endpoint, scraped by a real Prometheus server (Debian's package,
//! unpacked by scripts/setup.sh) on loopback: its query API returns the decisions this test caused.
//! Host only (xtask's VM runner leaves this binary out, see `HOST_ONLY` there).

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, TcpListener, TcpStream},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use sentra_tests::{daemon::TestDaemon, install, wait_for_records};
use serde_json::Value;

const FIXTURE: &str = env!("CARGO_BIN_EXE_sentra-fixture");

/// The Prometheus server binary: `$SENTRA_PROMETHEUS`, or where scripts/setup.sh unpacks it.
fn prometheus() -> PathBuf {
    let path = std::env::var_os("SENTRA_PROMETHEUS").map_or_else(
        || {
            let cache = std::env::var_os("SENTRA_CACHE").unwrap_or_else(|| "/var/cache/sentra-dev".into());
            Path::new(&cache).join("prometheus/usr/bin/prometheus")
        },
        PathBuf::from,
    );
    assert!(path.is_file(), "no Prometheus server at {} (scripts/setup.sh fetches it)", path.display());
    path
}

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    listener.local_addr().expect("addr").port()
}

/// `GET path` on loopback `port`: status line and body.
fn get(port: u16, path: &str) -> Option<(String, String)> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_real_prometheus_scrapes_the_decisions_the_test_caused() {
    let server = prometheus();
    let dir = tempfile::Builder::new().prefix("sentra-metrics-").tempdir_in("/tmp").expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let denied = dir.path().join("bin/denied");
    install(Path::new(FIXTURE), &denied);
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "version: \"2.0\"\nmode: enforce\ndefault: allow\nexec:\n  deny:\n    - {{ id: no_metrics_tool, path: {}, reason: \"counted\" }}\n",
            denied.display()
        ),
    )
    .expect("policy");
    std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let port = free_port();
    let endpoint = format!("127.0.0.1:{port}");
    let mut daemon = TestDaemon::new("metrics", dir.path(), None);
    daemon.start_with(&policy, &["--metrics", &endpoint, "--metrics-bpf-stats"]);

    // Three refusals of the same rule.
    let denied_path = denied.display().to_string();
    for _ in 0..3 {
        let _ = daemon.launch(&["--", FIXTURE, "spawn", &denied_path, "exit", "0"]);
    }
    wait_for_records(&daemon.audit(), Duration::from_secs(20), "three refusals", |r| {
        r.iter().filter(|r| r["rule_id"] == "no_metrics_tool" && r["decision"] == "denied").count() == 3
    });

    // The endpoint itself.
    let (status, text) = get(port, "/metrics").expect("scrape");
    assert!(status.contains("200"), "{status}\n{text}");
    let series =
        r#"sentra_decisions_total{layer="kernel",event="exec",decision="denied",rule="no_metrics_tool"} 3"#;
    assert!(text.contains(series), "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
    let ran = |text: &str| {
        text.lines()
            .filter(|l| l.starts_with("sentra_bpf_program_runs{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>()
    };
    assert!(ran(&text) > 0, "run-time statistics on, the exec program ran: {text}");
    // The programs' own counters, by the names `status` gives them.
    let denied_in_kernel = text
        .lines()
        .find_map(|l| l.strip_prefix(r#"sentra_kernel_counter{counter="exec_denied"} "#))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(denied_in_kernel.is_some_and(|n| n >= 3), "{text}");
    assert!(get(port, "/other").expect("404").0.contains("404"));

    // A real server scrapes it and answers queries about it.
    let web = free_port();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sentra\n    static_configs:\n      - targets: ['{endpoint}']\n"
        ),
    )
    .expect("config");
    let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log");
    let _server = Server(
        Command::new(server)
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{web}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus"),
    );
    let query = "/api/v1/query?query=sentra_decisions_total%7Brule%3D%22no_metrics_tool%22%2Cdecision%3D%22denied%22%7D";
    let deadline = Instant::now() + Duration::from_secs(90);
    let value = loop {
        if let Some((_, body)) = get(web, query)
            && let Ok(answer) = serde_json::from_str::<Value>(&body)
            && let Some(value) = answer["data"]["result"][0]["value"][1].as_str()
        {
            break value.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never had the series; its log:\n{}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(value, "3");
    // And the scrape target is healthy (the exposition parsed).
    let (_, targets) = get(web, "/api/v1/targets").expect("targets");
    let targets: Value = serde_json::from_str(&targets).expect("json");
    assert_eq!(targets["data"]["activeTargets"][0]["health"], "up", "{targets}");
}
