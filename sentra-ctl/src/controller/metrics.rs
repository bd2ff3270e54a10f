//! The controller's Prometheus endpoint (`sentra-ctl daemon --metrics ADDR`, off by default).
//!
//! Decisions are counted as their records are written (the audit log is the one place every layer's
//! decision passes: kernel, shell, resolver, seccomp, e-mail), so the metrics and the log cannot
//! disagree. Kernel counters, the drain's counts and each BPF program's own run time are read when
//! scraped, by the daemon loop that owns them. Label values are rule ids, layers and program names,
//! never paths or addresses; the number of decision label sets is capped (a hostile shell chooses the
//! rule ids of its own records).

use std::{
    collections::HashSet,
    sync::{
        Mutex,
        atomic::{AtomicI64, AtomicU64},
    },
    time::Duration,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::audit::Observe;

/// Decision label sets kept apart; past this, new ones are counted under `rule="other"`.
pub const MAX_DECISION_SERIES: usize = 2000;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `kernel`, `shell`, `seccomp`, `launcher`.
    pub layer: String,
    /// `exec`, `net`, `dns`, `guard`, `email`, `syscall_denied`…
    pub event: String,
    /// `allowed`, `denied`, `auditonly`, `servfail`…
    pub decision: String,
    pub rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `applied` or `rejected`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProgramLabels {
    pub program: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CounterLabels {
    pub counter: String,
}

/// Every metric the endpoint serves.
pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    series: Mutex<HashSet<DecisionLabels>>,
    records: Counter,
    reloads: Family<OutcomeLabels, Counter>,
    reload_seconds: Histogram,
    /// The kernel's own counters (`exec_decisions`, `events_dropped`, `net_denied`…), as read at the
    /// scrape: they count since the programs were loaded, across controller restarts.
    kernel: Family<CounterLabels, Gauge<u64, AtomicU64>>,
    events_written: Gauge<u64, AtomicU64>,
    events_undecodable: Gauge<u64, AtomicU64>,
    learned_addresses: Gauge<i64, AtomicI64>,
    program_runs: Family<ProgramLabels, Gauge<u64, AtomicU64>>,
    program_run_ns: Family<ProgramLabels, Gauge<u64, AtomicU64>>,
}

/// What the daemon loop reads for a scrape.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The programs' own counters, by name.
    pub kernel: Vec<(String, u64)>,
    pub events_written: u64,
    pub events_undecodable: u64,
    pub learned_addresses: usize,
    pub programs: Vec<crate::kernel::stats::ProgramCost>,
}

impl Metrics {
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sentra");
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Decisions written to the audit log, by layer, event, decision and rule id",
            decisions.clone(),
        );
        let records = Counter::default();
        registry.register("audit_records", "Records written to the audit log", records.clone());
        let reloads = Family::<OutcomeLabels, Counter>::default();
        registry.register("reloads", "Policy reloads, applied or rejected", reloads.clone());
        // 1 ms … ~4 s.
        let reload_seconds =
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 13));
        registry.register(
            "reload_seconds",
            "Time to validate, compile and switch a policy",
            reload_seconds.clone(),
        );
        let kernel = Family::<CounterLabels, Gauge<u64, AtomicU64>>::default();
        registry.register(
            "kernel_counter",
            "The BPF programs' own counters since they were loaded (exec_decisions, exec_denied, events_dropped, probe_errors, net_decisions, net_denied, dns_steered, net_errors)",
            kernel.clone(),
        );
        let events_written = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "events_written",
            "Kernel events this controller drained into the audit log",
            events_written.clone(),
        );
        let events_undecodable = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "events_undecodable",
            "Kernel events that could not be decoded",
            events_undecodable.clone(),
        );
        let learned_addresses = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "resolver_learned_addresses",
            "Addresses the resolver granted for domain rules, live now",
            learned_addresses.clone(),
        );
        let program_runs = Family::<ProgramLabels, Gauge<u64, AtomicU64>>::default();
        registry.register(
            "bpf_program_runs",
            "Times each BPF program ran while run-time statistics were on (--metrics-bpf-stats)",
            program_runs.clone(),
        );
        let program_run_ns = Family::<ProgramLabels, Gauge<u64, AtomicU64>>::default();
        registry.register(
            "bpf_program_run_ns",
            "Nanoseconds each BPF program ran while run-time statistics were on (--metrics-bpf-stats)",
            program_run_ns.clone(),
        );
        Self {
            registry,
            decisions,
            series: Mutex::new(HashSet::new()),
            records,
            reloads,
            reload_seconds,
            kernel,
            events_written,
            events_undecodable,
            learned_addresses,
            program_runs,
            program_run_ns,
        }
    }

    /// A reload and how long it took.
    pub fn reload(&self, applied: bool, took: Duration) {
        let outcome = if applied { "applied" } else { "rejected" };
        self.reloads.get_or_create(&OutcomeLabels { outcome: outcome.into() }).inc();
        self.reload_seconds.observe(took.as_secs_f64());
    }

    /// The exposition text (`OpenMetrics`) with `snapshot`'s values.
    #[must_use]
    pub fn encode(&self, snapshot: &Snapshot) -> String {
        for (name, value) in &snapshot.kernel {
            self.kernel.get_or_create(&CounterLabels { counter: name.clone() }).set(*value);
        }
        self.events_written.set(snapshot.events_written);
        self.events_undecodable.set(snapshot.events_undecodable);
        self.learned_addresses.set(i64::try_from(snapshot.learned_addresses).unwrap_or(i64::MAX));
        for program in &snapshot.programs {
            let labels = ProgramLabels { program: program.name.clone() };
            self.program_runs.get_or_create(&labels).set(program.run_count);
            self.program_run_ns.get_or_create(&labels).set(program.run_time_ns);
        }
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Observe for Metrics {
    fn record(&self, layer: &str, event: &str, decision: Option<&str>, rule: Option<&str>) {
        self.records.inc();
        let Some(decision) = decision else { return };
        let mut labels = DecisionLabels {
            layer: layer.into(),
            event: event.into(),
            decision: decision.into(),
            rule: rule.unwrap_or("-").into(),
        };
        {
            let mut series = self.series.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if !series.contains(&labels) {
                if series.len() >= MAX_DECISION_SERIES {
                    labels.rule = "other".into();
                }
                series.insert(labels.clone());
            }
        }
        self.decisions.get_or_create(&labels).inc();
    }
}

/// `--metrics`: a TCP address (`127.0.0.1:9464`) or `unix:PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp(std::net::SocketAddr),
    Unix(std::path::PathBuf),
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(path) = text.strip_prefix("unix:") {
            return if path.starts_with('/') {
                Ok(Self::Unix(path.into()))
            } else {
                Err(format!("{text}: unix:PATH needs an absolute path"))
            };
        }
        text.parse().map(Self::Tcp).map_err(|_| format!("{text}: expected ADDRESS:PORT or unix:/PATH"))
    }
}

/// Longest request read, and how long a scraper may take to send it.
const REQUEST_MAX: usize = 8192;
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// Scrapes served at once; more wait for the listener.
pub const SCRAPES: usize = 8;

/// Serves one HTTP connection: `GET /metrics` gets the text `scrape` yields, anything else 404.
/// HTTP/1.0-style: one request, then the connection closes.
pub async fn serve<S, F, Fut>(mut stream: S, scrape: F)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Option<String>>,
{
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let mut request = Vec::new();
    let mut buffer = [0u8; 1024];
    let read = tokio::time::timeout(REQUEST_DEADLINE, async {
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < REQUEST_MAX {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => request.extend_from_slice(&buffer[..n]),
            }
        }
        true
    })
    .await;
    if !matches!(read, Ok(true)) {
        return;
    }
    let line = request.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    let (status, kind, body) = if method != b"GET" {
        ("405 Method Not Allowed", "text/plain", "only GET\n".to_string())
    } else if path != b"/metrics" {
        ("404 Not Found", "text/plain", "see /metrics\n".to_string())
    } else {
        match scrape().await {
            Some(text) => ("200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", text),
            None => ("503 Service Unavailable", "text/plain", "the controller is stopping\n".to_string()),
        }
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = tokio::time::timeout(REQUEST_DEADLINE, async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_are_counted_and_their_series_capped() {
        let metrics = Metrics::new();
        metrics.record("kernel", "exec", Some("denied"), Some("no_nc"));
        metrics.record("kernel", "exec", Some("denied"), Some("no_nc"));
        metrics.record("kernel", "controller_start", None, None);
        for i in 0..MAX_DECISION_SERIES + 10 {
            metrics.record("shell", "exec", Some("allowed"), Some(&format!("forged-{i}")));
        }
        let text = metrics.encode(&Snapshot::default());
        assert!(
            text.contains(
                r#"sentra_decisions_total{layer="kernel",event="exec",decision="denied",rule="no_nc"} 2"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"rule="other"} 11"#), "{text}");
        assert!(text.contains(&format!("sentra_audit_records_total {}", MAX_DECISION_SERIES + 13)), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn endpoints_parse() {
        assert_eq!("127.0.0.1:9464".parse(), Ok(Endpoint::Tcp("127.0.0.1:9464".parse().expect("addr"))));
        assert_eq!(
            "unix:/run/sentra/metrics.sock".parse(),
            Ok(Endpoint::Unix("/run/sentra/metrics.sock".into()))
        );
        assert!("unix:relative".parse::<Endpoint>().is_err());
        assert!("localhost".parse::<Endpoint>().is_err());
    }
}
