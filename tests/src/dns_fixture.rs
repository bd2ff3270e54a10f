//! A small authoritative DNS server for the tests' own zones (the upstream the controller's resolver
//! forwards to). Real sockets, real wire format (hickory-proto), UDP and TCP; it truncates UDP answers
//! over 512 bytes (RFC 1035 4.2.1) and never answers names it is told to ignore (a dead upstream).
//! It records every query it receives, so a test can prove a refused name never reached it.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use hickory_proto::{
    op::{Message, MessageType, ResponseCode},
    rr::{
        Name, RData, Record, RecordType,
        rdata::{A, AAAA, CNAME},
    },
};

use crate::netns::NetNs;

/// One record of a test zone.
#[derive(Debug, Clone)]
pub enum Rr {
    A(&'static str, u32, [u8; 4]),
    Aaaa(&'static str, u32, std::net::Ipv6Addr),
    Cname(&'static str, u32, &'static str),
}

/// A query the fixture received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub name: String,
    pub qtype: String,
    pub tcp: bool,
}

struct Zone {
    records: Vec<Rr>,
    /// Names the server never answers.
    dead: Vec<&'static str>,
    seen: Mutex<Vec<Seen>>,
}

/// The running server; stops (its threads end within ~100 ms) when dropped.
pub struct DnsFixture {
    pub addr: SocketAddr,
    zone: Arc<Zone>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

fn lower(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

fn fqdn(name: &str) -> Name {
    Name::from_ascii(format!("{name}.")).expect("valid test name")
}

impl Zone {
    /// Records answering (name, type), following CNAMEs inside the zone (at most 8 links).
    fn answer(&self, name: &str, qtype: RecordType) -> Vec<Record> {
        let mut out = Vec::new();
        let mut current = name.to_string();
        for _ in 0..8 {
            let mut next = None;
            for rr in &self.records {
                match *rr {
                    Rr::A(n, ttl, ip) if n == current && qtype == RecordType::A => {
                        out.push(Record::from_rdata(fqdn(n), ttl, RData::A(A(ip.into()))));
                    }
                    Rr::Aaaa(n, ttl, ip) if n == current && qtype == RecordType::AAAA => {
                        out.push(Record::from_rdata(fqdn(n), ttl, RData::AAAA(AAAA(ip))));
                    }
                    Rr::Cname(n, ttl, target) if n == current => {
                        out.push(Record::from_rdata(fqdn(n), ttl, RData::CNAME(CNAME(fqdn(target)))));
                        next = Some(target.to_string());
                    }
                    _ => {}
                }
            }
            match next {
                Some(target) => current = target,
                None => break,
            }
        }
        out
    }

    /// The answer to a wire query, or `None` to stay silent.
    fn respond(&self, bytes: &[u8], tcp: bool) -> Option<Vec<u8>> {
        let query = Message::from_vec(bytes).ok()?;
        let question = query.queries.first()?;
        let name = lower(question.name());
        self.seen.lock().ok()?.push(Seen {
            name: name.clone(),
            qtype: question.query_type().to_string(),
            tcp,
        });
        if self.dead.iter().any(|d| *d == name) {
            return None;
        }
        let mut answer = Message::response(query.metadata.id, query.metadata.op_code);
        answer.metadata.message_type = MessageType::Response;
        answer.metadata.authoritative = true;
        answer.metadata.recursion_desired = query.metadata.recursion_desired;
        answer.queries.clone_from(&query.queries);
        let records = self.answer(&name, question.query_type());
        let known = self.records.iter().any(|rr| match rr {
            Rr::A(n, ..) | Rr::Aaaa(n, ..) | Rr::Cname(n, ..) => *n == name,
        });
        answer.metadata.response_code = if known { ResponseCode::NoError } else { ResponseCode::NXDomain };
        answer.answers = records;
        let mut wire = answer.to_vec().ok()?;
        let limit = query.edns.as_ref().map_or(512, |e| usize::from(e.max_payload().max(512)));
        if !tcp && wire.len() > limit {
            answer.answers.clear();
            answer.metadata.truncation = true;
            wire = answer.to_vec().ok()?;
        }
        Some(wire)
    }
}

impl DnsFixture {
    /// Serves `records` on `addr` (UDP and TCP) inside `ns`; names in `dead` get no answer.
    ///
    /// # Panics
    /// If the sockets cannot be bound.
    #[must_use]
    pub fn start(ns: &NetNs, addr: SocketAddr, records: Vec<Rr>, dead: Vec<&'static str>) -> Self {
        let (udp, tcp) = ns.run(move || {
            let udp = UdpSocket::bind(addr).expect("bind fixture udp");
            let tcp = TcpListener::bind(addr).expect("bind fixture tcp");
            (udp, tcp)
        });
        let poll = Some(Duration::from_millis(100));
        udp.set_read_timeout(poll).expect("timeout");
        tcp.set_nonblocking(true).expect("nonblocking");
        let zone = Arc::new(Zone { records, dead, seen: Mutex::new(Vec::new()) });
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        {
            let (zone, stop) = (Arc::clone(&zone), Arc::clone(&stop));
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = udp.recv_from(&mut buf) else {
                        continue;
                    };
                    if let Some(answer) = zone.respond(&buf[..n], false) {
                        let _ = udp.send_to(&answer, from);
                    }
                }
            }));
        }
        {
            let (zone, stop) = (Arc::clone(&zone), Arc::clone(&stop));
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok((mut stream, _)) = tcp.accept() else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut len = [0u8; 2];
                    while stream.read_exact(&mut len).is_ok() {
                        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
                        if stream.read_exact(&mut query).is_err() {
                            break;
                        }
                        let Some(answer) = zone.respond(&query, true) else {
                            break;
                        };
                        let Ok(n) = u16::try_from(answer.len()) else { break };
                        let mut framed = n.to_be_bytes().to_vec();
                        framed.extend_from_slice(&answer);
                        if stream.write_all(&framed).is_err() {
                            break;
                        }
                    }
                }
            }));
        }
        Self { addr, zone, stop, threads }
    }

    /// Queries received so far.
    #[must_use]
    pub fn seen(&self) -> Vec<Seen> {
        self.zone.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Whether `name` was asked of this server.
    #[must_use]
    pub fn was_asked(&self, name: &str) -> bool {
        self.seen().iter().any(|s| s.name == name)
    }
}

impl Drop for DnsFixture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Parses an address the tests know to be valid.
///
/// # Panics
/// On an invalid address (a bug in the test).
#[must_use]
pub fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}
