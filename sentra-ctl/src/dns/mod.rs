//! The controller's resolver.
//!
//! Governed processes' DNS traffic (any destination, port 53, UDP or TCP) is rewritten in the kernel to
//! this resolver (`sentra-ebpf/src/net`). It answers a query for a name no domain rule allows with
//! REFUSED (and an audit record); it forwards the others to the real upstream resolvers and, before
//! handing the answer back, allows the answered addresses (A and AAAA along the CNAME chain from the
//! asked name) in the kernel for their TTL, clamped to the policy's floor and ceiling, for the
//! rules that matched the asked name. A sweep removes them when they expire.
//!
//! Messages are parsed and built with hickory-proto.

pub mod hosts;
pub mod upstream;

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, ResponseCode},
    rr::RData,
};
use tokio::{
    net::{TcpListener, UdpSocket},
    sync::Semaphore,
    task::JoinHandle,
};

use self::{
    hosts::Learned,
    upstream::{Transport, exchange, read_framed, write_framed},
};
use crate::{
    audit::{self, AuditLog, Record},
    kernel::{
        KernelError,
        net::{HostTable, ResolverAddr},
        store::MapStore,
    },
    policy::network::CompiledNet,
};

/// Queries handled at once (UDP); further datagrams wait in the socket buffer.
const MAX_IN_FLIGHT: usize = 256;
/// TCP clients served at once.
const MAX_TCP_CLIENTS: usize = 64;
/// An idle TCP client is dropped after this long.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// How often expired addresses are removed.
const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// Longest CNAME chain followed in an answer.
const MAX_CNAME_CHAIN: usize = 16;

/// Errors setting up network governance.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the policy has domain rules but no upstream resolver: set network.dns.upstream (none in /etc/resolv.conf)"
    )]
    NoUpstream,
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
}

/// State shared by the resolver's tasks.
struct Shared {
    /// The policy queries are answered under: the one of the generation learned addresses go to.
    policy: Mutex<Arc<CompiledNet>>,
    learned: Mutex<Learned>,
    audit: AuditLog,
}

/// The controller's resolver: its sockets and tasks, and the addresses it learned. Which generation
/// it grants into is decided by the generation switch (`enforce::Generations`), which tells it
/// through [`Self::grant_into`], [`Self::retire`] and [`Self::discard`]. Dropping it stops the
/// resolver (pinned programs and maps stay).
pub struct Resolver {
    /// Where it listens (steered DNS goes there).
    pub addr: ResolverAddr,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Resolver {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Resolver {
    /// Binds the resolver and starts answering under `compiled`, learning into `generation` of the
    /// maps in `store` (loaded or pinned). `prefer_port` is tried first: a restarted controller takes
    /// its predecessor's port, which the pinned generation steers to.
    ///
    /// # Errors
    /// The policy has domain rules but no upstream; binding the resolver; opening `NET_HOSTS`.
    pub async fn start<S: MapStore + ?Sized>(
        store: &S,
        generation: u32,
        compiled: &Arc<CompiledNet>,
        audit: AuditLog,
        prefer_port: Option<u16>,
    ) -> Result<Self, NetError> {
        check_upstream(compiled)?;
        let (udp4, tcp4, v6, addr) = bind(prefer_port).await?;
        let shared = Arc::new(Shared {
            policy: Mutex::new(Arc::clone(compiled)),
            learned: Mutex::new(Learned::new(HostTable::open(store)?, generation)),
            audit,
        });
        let mut sockets = vec![(udp4, tcp4)];
        if let Some(pair) = v6 {
            sockets.push(pair);
        }
        let mut tasks = Vec::new();
        for (udp, tcp) in sockets {
            tasks.push(tokio::spawn(serve_udp(Arc::new(udp), Arc::clone(&shared))));
            tasks.push(tokio::spawn(serve_tcp(tcp, Arc::clone(&shared))));
        }
        tasks.push(tokio::spawn(sweep(Arc::clone(&shared))));
        Ok(Self { addr, shared, tasks })
    }

    /// A switch to `policy` as `generation` (written, not yet active): the learned addresses its
    /// domain rules still cover are granted there, and queries are answered under it from now on.
    ///
    /// # Errors
    /// A map update fails.
    pub fn grant_into(&self, policy: &Arc<CompiledNet>, generation: u32) -> Result<(), KernelError> {
        // Under the policy lock: a query answered meanwhile is matched against the policy whose
        // grants it joins.
        let mut current = lock(&self.shared.policy);
        lock(&self.shared.learned).prepare(policy, generation)?;
        *current = Arc::clone(policy);
        Ok(())
    }

    /// The switch was abandoned before `generation` became active: its grants are removed and
    /// queries are answered under `enforced` (the active generation's policy) again.
    ///
    /// # Errors
    /// A map update fails.
    pub fn discard(&self, generation: u32, enforced: &Arc<CompiledNet>) -> Result<(), KernelError> {
        let mut current = lock(&self.shared.policy);
        lock(&self.shared.learned).discard(generation)?;
        *current = Arc::clone(enforced);
        Ok(())
    }

    /// `new` decides and no program still uses `old`: learned addresses go to `new` only, and
    /// `old`'s are removed.
    ///
    /// # Errors
    /// A map update fails.
    pub fn retire(&self, old: u32, new: u32) -> Result<(), KernelError> {
        lock(&self.shared.learned).retire(old, new)
    }

    /// A restarted controller's resolver takes over the learned addresses its predecessor left in
    /// the active generation, until the policy's TTL ceiling from now; returns how many.
    #[must_use = "how many addresses were taken over is worth reporting"]
    pub fn adopt_learned(&self) -> usize {
        let ceiling = lock(&self.shared.policy).dns.ttl_max;
        lock(&self.shared.learned).adopt(ceiling)
    }

    /// Addresses currently allowed through DNS answers.
    #[must_use]
    pub fn learned(&self) -> usize {
        lock(&self.shared.learned).len()
    }
}

/// A policy with domain rules needs an upstream resolver to forward allowed names to.
///
/// # Errors
/// It has domain rules and no upstream.
pub fn check_upstream(compiled: &CompiledNet) -> Result<(), NetError> {
    if compiled.dns.upstream.is_empty() {
        // The `network:` section's domain rules need a resolver for every governed cgroup; a launch
        // profile's only for its own agents, which then get SERVFAIL (said once, at load).
        if compiled.section_domains() {
            return Err(NetError::NoUpstream);
        }
        if compiled.has_domains() {
            tracing::warn!(
                "launch profiles have domain rules but there is no upstream resolver (none in /etc/resolv.conf, no network.dns.upstream): agents launched with them cannot resolve names"
            );
        }
    }
    Ok(())
}

/// Locks a mutex, recovering the data of a poisoned one (a panicking query task must not take the
/// resolver down).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

type SocketPair = (UdpSocket, TcpListener);

/// Binds UDP and TCP on one port of 127.0.0.1 and, when IPv6 loopback exists, of `::1`.
/// `prefer` is tried first (a restarted controller takes its predecessor's port, so the pinned
/// generation's DNS steering keeps working).
async fn bind(
    prefer: Option<u16>,
) -> Result<(UdpSocket, TcpListener, Option<SocketPair>, ResolverAddr), NetError> {
    let io = |what: &str| {
        let what = what.to_string();
        move |source| NetError::Io { what: what.clone(), source }
    };
    let mut last = None;
    // A port free on UDP may be taken on TCP or on ::1: a few tries find one free on all.
    for attempt in 0..16 {
        let wanted = if attempt == 0 { prefer.unwrap_or(0) } else { 0 };
        let udp4 = match UdpSocket::bind((Ipv4Addr::LOCALHOST, wanted)).await {
            Ok(udp) => udp,
            Err(err) if wanted != 0 => {
                last = Some(err);
                continue;
            }
            Err(err) => return Err(io("binding the resolver (udp)")(err)),
        };
        let port = udp4.local_addr().map_err(io("resolver address"))?.port();
        let tcp4 = match TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
            Ok(tcp) => tcp,
            Err(err) => {
                last = Some(err);
                continue;
            }
        };
        let v6 = match UdpSocket::bind((Ipv6Addr::LOCALHOST, port)).await {
            Ok(udp6) => match TcpListener::bind((Ipv6Addr::LOCALHOST, port)).await {
                Ok(tcp6) => Some((udp6, tcp6)),
                Err(err) => {
                    last = Some(err);
                    continue;
                }
            },
            Err(err)
                if err.raw_os_error() == Some(libc::EADDRNOTAVAIL)
                    || err.raw_os_error() == Some(libc::EAFNOSUPPORT) =>
            {
                None
            }
            Err(err) => {
                last = Some(err);
                continue;
            }
        };
        let addr =
            ResolverAddr { v4: Ipv4Addr::LOCALHOST, v6: v6.as_ref().map(|_| Ipv6Addr::LOCALHOST), port };
        return Ok((udp4, tcp4, v6, addr));
    }
    Err(NetError::Io {
        what: "binding the resolver: no port free on udp+tcp".into(),
        source: last.unwrap_or_else(|| std::io::Error::other("no attempt")),
    })
}

async fn serve_udp(socket: Arc<UdpSocket>, shared: Arc<Shared>) {
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut buf = vec![0u8; upstream::MAX_MESSAGE];
    loop {
        let (n, client) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(err) => {
                // ICMP errors of earlier replies surface here (ECONNREFUSED); the socket stays usable.
                tracing::debug!("resolver: recv: {err}");
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let query = buf[..n].to_vec();
        let (socket, shared) = (Arc::clone(&socket), Arc::clone(&shared));
        tokio::spawn(async move {
            if let Some(answer) = handle(&query, Transport::Udp, client, &shared).await
                && let Err(err) = socket.send_to(&answer, client).await
            {
                tracing::debug!("resolver: reply to {client}: {err}");
            }
            drop(permit);
        });
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    let permits = Arc::new(Semaphore::new(MAX_TCP_CLIENTS));
    loop {
        let Ok((mut stream, client)) = listener.accept().await else {
            continue;
        };
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            // Several queries may share a connection (RFC 7766 6.2.1); idle ones are closed.
            while let Ok(Ok(query)) = tokio::time::timeout(TCP_IDLE, read_framed(&mut stream)).await {
                let Some(answer) = handle(&query, Transport::Tcp, client, &shared).await else {
                    break;
                };
                if write_framed(&mut stream, &answer).await.is_err() {
                    break;
                }
            }
            drop(permit);
        });
    }
}

async fn sweep(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        tick.tick().await;
        let policy = Arc::clone(&lock(&shared.policy));
        let expired = match lock(&shared.learned).sweep(&policy, Instant::now()) {
            Ok(expired) => expired,
            Err(err) => {
                tracing::error!("resolver: removing expired addresses: {}", crate::describe(&err));
                continue;
            }
        };
        for gone in expired {
            write_audit(
                &shared,
                &Record {
                    event: "dns_expired".into(),
                    decision: Some("expired"),
                    domain: Some(gone.name),
                    destination: Some(gone.addr.to_string()),
                    reason: Some(
                        "the answer's TTL ran out; new connections to this address are denied".into(),
                    ),
                    ..base_record()
                },
            );
        }
    }
}

fn base_record() -> Record {
    Record {
        timestamp: audit::now(),
        event: "dns".into(),
        layer: "kernel",
        action: Some("resolve"),
        ..Record::default()
    }
}

fn write_audit(shared: &Shared, record: &Record) {
    if let Err(err) = shared.audit.write(record) {
        tracing::error!("resolver: {}", crate::describe(&err));
    }
}

/// An error answer to `query` (its id, opcode, question and RD bit).
fn error_answer(query: &Message, code: ResponseCode) -> Option<Vec<u8>> {
    let mut answer = Message::error_msg(query.metadata.id, query.metadata.op_code, code);
    answer.queries.clone_from(&query.queries);
    answer.metadata.recursion_desired = query.metadata.recursion_desired;
    answer.metadata.recursion_available = true;
    answer.to_vec().ok()
}

/// Answers one query; `None` when nothing can be answered (not even an id to reply to).
async fn handle(bytes: &[u8], transport: Transport, client: SocketAddr, shared: &Shared) -> Option<Vec<u8>> {
    let query = match Message::from_vec(bytes) {
        Ok(query) => query,
        Err(_) if bytes.len() >= 12 => {
            // Unparseable: FORMERR with the id echoed (RFC 1035 4.1.1), built from the header only.
            let id = u16::from_be_bytes([bytes[0], bytes[1]]);
            return Message::error_msg(id, OpCode::Query, ResponseCode::FormErr).to_vec().ok();
        }
        Err(_) => return None,
    };
    if query.metadata.message_type != MessageType::Query {
        return None;
    }
    if query.metadata.op_code != OpCode::Query {
        return error_answer(&query, ResponseCode::NotImp);
    }
    let [question] = query.queries.as_slice() else {
        return error_answer(&query, ResponseCode::FormErr);
    };
    let name = question.name().to_ascii().trim_end_matches('.').to_ascii_lowercase();
    let qtype = question.query_type().to_string();
    let policy = Arc::clone(&lock(&shared.policy));
    let rules: Vec<u32> = policy.matching_domains(&name).map(|d| d.rule).collect();
    let record = |decision: &'static str| Record {
        decision: Some(decision),
        domain: Some(name.clone()),
        protocol: Some(transport.as_str().into()),
        ..base_record()
    };
    if rules.is_empty() && !policy.audit {
        write_audit(
            shared,
            &Record {
                rule_id: Some("default".into()),
                reason: Some("no domain rule allows this name; answered REFUSED".into()),
                detail: Some(serde_json::json!({ "qtype": qtype, "client": client.to_string() })),
                ..record("denied")
            },
        );
        return error_answer(&query, ResponseCode::Refused);
    }
    let rule_id = rules.first().and_then(|&r| policy.rule(r)).map(|r| r.id.clone());

    let answer_bytes = match exchange(bytes, transport, &policy.dns.upstream, policy.dns.timeout).await {
        Ok(answer) => answer,
        Err(err) => {
            write_audit(
                shared,
                &Record {
                    rule_id: rule_id.clone(),
                    reason: Some(format!("upstream failed ({err}); answered SERVFAIL")),
                    detail: Some(serde_json::json!({ "qtype": qtype, "client": client.to_string() })),
                    ..record("servfail")
                },
            );
            return error_answer(&query, ResponseCode::ServFail);
        }
    };
    let Ok(answer) = Message::from_vec(&answer_bytes) else {
        write_audit(
            shared,
            &Record {
                rule_id,
                reason: Some("upstream answer is not a valid DNS message; answered SERVFAIL".into()),
                ..record("servfail")
            },
        );
        return error_answer(&query, ResponseCode::ServFail);
    };

    if rules.is_empty() {
        // Audit mode: answered, nothing allowed (the kernel records the connections as auditonly).
        write_audit(shared, &audited(&record("auditonly"), &qtype, client, &answer));
        return Some(answer_bytes);
    }
    // Allow the addresses before the client sees them: its connect follows at once.
    let allowed = learn_answer(shared, &policy, &name, &rules, &answer);
    write_audit(
        shared,
        &Record {
            rule_id,
            reason: Some(format!("answered {}", answer.metadata.response_code)),
            detail: Some(serde_json::json!({
                "qtype": qtype,
                "client": client.to_string(),
                "rcode": answer.metadata.response_code.to_string(),
                "truncated": answer.metadata.truncation,
                "addresses": allowed,
            })),
            ..record("allowed")
        },
    );
    Some(answer_bytes)
}

/// The record of a name no rule allows, answered in audit mode: `base` with its addresses.
fn audited(base: &Record, qtype: &str, client: SocketAddr, answer: &Message) -> Record {
    let name = base.domain.as_deref().unwrap_or_default();
    let addresses: Vec<String> = chain_addresses(answer, name).iter().map(|(a, _)| a.to_string()).collect();
    Record {
        rule_id: Some("default".into()),
        reason: Some(format!(
            "no domain rule allows this name; answered {} (audit mode)",
            answer.metadata.response_code
        )),
        detail: Some(serde_json::json!({
            "qtype": qtype,
            "client": client.to_string(),
            "rcode": answer.metadata.response_code.to_string(),
            "addresses": addresses,
        })),
        ..base.clone()
    }
}

/// Allows the addresses of `answer` for `rules`; returns them with their clamped TTLs for the audit log.
fn learn_answer(
    shared: &Shared,
    policy: &CompiledNet,
    name: &str,
    rules: &[u32],
    answer: &Message,
) -> Vec<serde_json::Value> {
    let mut allowed = Vec::new();
    let mut learned = lock(&shared.learned);
    for (addr, ttl) in chain_addresses(answer, name) {
        let ttl = Duration::from_secs(u64::from(ttl)).clamp(policy.dns.ttl_min, policy.dns.ttl_max);
        match learned.learn(policy, name, rules, addr, ttl) {
            Ok(()) => {
                allowed.push(serde_json::json!({ "address": addr.to_string(), "ttl_s": ttl.as_secs() }));
            }
            Err(err) => tracing::error!("resolver: allowing {addr} for {name}: {}", crate::describe(&err)),
        }
    }
    allowed
}

/// A and AAAA records of the answer section that belong to `name` or to a name its CNAME chain
/// reaches, with their TTLs. Records for unrelated names (which a hostile upstream could add) are
/// ignored.
#[must_use]
pub fn chain_addresses(answer: &Message, name: &str) -> Vec<(IpAddr, u32)> {
    let owner = |record: &hickory_proto::rr::Record| {
        record.name.to_ascii().trim_end_matches('.').to_ascii_lowercase()
    };
    let mut chain: BTreeSet<String> = BTreeSet::from([name.to_string()]);
    // Follow CNAMEs in any order of appearance, up to the chain limit.
    for _ in 0..MAX_CNAME_CHAIN {
        let before = chain.len();
        for record in &answer.answers {
            if let RData::CNAME(target) = &record.data
                && chain.contains(&owner(record))
            {
                chain.insert(target.0.to_ascii().trim_end_matches('.').to_ascii_lowercase());
            }
        }
        if chain.len() == before {
            break;
        }
    }
    let mut out = Vec::new();
    for record in &answer.answers {
        if !chain.contains(&owner(record)) {
            continue;
        }
        match &record.data {
            RData::A(a) => out.push((IpAddr::V4(a.0), record.ttl)),
            RData::AAAA(aaaa) => out.push((IpAddr::V6(aaaa.0), record.ttl)),
            _ => {}
        }
    }
    out
}
