//! The governed network client of the network tests: the integration test binary runs itself under
//! `sentra-ctl run` with `SENTRA_NETPROBE_OPS` set, and [`main_if_requested`] then performs the
//! operations (real sockets, real DNS queries) and prints one `PROBE <i> <result>` line for each.
//!
//! Operations, separated by `;`:
//! - `tcp ADDR PORT`: connect (2 s timeout) → `ok` | `errno=N` | `timeout`
//! - `udp-connect ADDR PORT`: connect a UDP socket and send one datagram → `ok` | `errno=N`
//! - `udp-sendto ADDR PORT`: one datagram from an unconnected socket → `ok` | `errno=N`
//! - `dns SERVER NAME TYPE MODE`: a query to SERVER:53 (MODE `udp`, `udp-connected` or `tcp`) →
//!   `rcode=R tc=0|1 from=ADDR:PORT addrs=A,B` | `errno=N` | `timeout`
//! - `sleep MS`
//! - `connect-bench ADDR PORT N`: N TCP connects, each closed with a reset (no `TIME_WAIT` pile-up) →
//!   `ns_per_connect=MEDIAN mean_ns=X p99_ns=Y` (time inside `connect()`)
//! - `dns-bench SERVER NAME N`: N sequential UDP queries for NAME to SERVER:53 → `us_per_query=X ok=K`
//! - `mark` → `mark` (at once: says the probe got this far)
//! - `wait-line`: reads a line from standard input → `ok`
//! - `wait-eof`: reads standard input to its end → `ok`

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

use hickory_proto::{
    op::{Message, Query},
    rr::{Name, RData, RecordType},
};

/// Environment variable carrying the operations.
pub const OPS_ENV: &str = "SENTRA_NETPROBE_OPS";
const TIMEOUT: Duration = Duration::from_secs(3);

/// Performs the operations and exits, if `SENTRA_NETPROBE_OPS` is set; otherwise returns.
pub fn main_if_requested() {
    let Ok(ops) = std::env::var(OPS_ENV) else { return };
    for (i, op) in ops.split(';').map(str::trim).filter(|o| !o.is_empty()).enumerate() {
        println!("PROBE {i} {}", run_op(op));
    }
    let _ = std::io::stdout().flush();
    std::process::exit(0);
}

fn errno(err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => "timeout".into(),
        _ => format!("errno={}", err.raw_os_error().unwrap_or(-1)),
    }
}

fn addr(ip: &str, port: &str) -> Result<SocketAddr, String> {
    let ip: IpAddr = ip.parse().map_err(|_| format!("bad-ip {ip}"))?;
    let port: u16 = port.parse().map_err(|_| format!("bad-port {port}"))?;
    Ok(SocketAddr::new(ip, port))
}

fn local_for(dest: &SocketAddr) -> SocketAddr {
    if dest.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() }
}

/// Runs one operation and describes its result.
#[must_use]
pub fn run_op(op: &str) -> String {
    let words: Vec<&str> = op.split_whitespace().collect();
    let result = match words.as_slice() {
        ["mark"] => Ok("mark".into()),
        ["wait-line"] => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map(|_| "ok".into()).map_err(|e| errno(&e))
        }
        ["wait-eof"] => std::io::copy(&mut std::io::stdin(), &mut std::io::sink())
            .map(|_| "ok".into())
            .map_err(|e| errno(&e)),
        ["tcp", ip, port] => addr(ip, port).map(|dest| match TcpStream::connect_timeout(&dest, TIMEOUT) {
            Ok(_) => "ok".into(),
            Err(err) => errno(&err),
        }),
        ["udp-connect", ip, port] => addr(ip, port).map(|dest| {
            let socket = match UdpSocket::bind(local_for(&dest)) {
                Ok(s) => s,
                Err(err) => return format!("bind-{}", errno(&err)),
            };
            if let Err(err) = socket.connect(dest) {
                return errno(&err);
            }
            match socket.send(b"probe") {
                Ok(_) => "ok".into(),
                Err(err) => format!("send-{}", errno(&err)),
            }
        }),
        ["udp-sendto", ip, port] => addr(ip, port).map(|dest| {
            let socket = match UdpSocket::bind(local_for(&dest)) {
                Ok(s) => s,
                Err(err) => return format!("bind-{}", errno(&err)),
            };
            match socket.send_to(b"probe", dest) {
                Ok(_) => "ok".into(),
                Err(err) => errno(&err),
            }
        }),
        ["dns", server, name, qtype, mode] => addr(server, "53").map(|dest| dns(dest, name, qtype, mode)),
        ["connect-bench", ip, port, n] => addr(ip, port).and_then(|dest| {
            let n: u32 = n.parse().map_err(|_| "bad-n".to_string())?;
            connect_bench(dest, n)
        }),
        ["dns-bench", server, name, n] => addr(server, "53").and_then(|dest| {
            let n: u32 = n.parse().map_err(|_| "bad-n".to_string())?;
            dns_bench(dest, name, n)
        }),
        // Moves the probe into a network namespace of its own (loopback up), as an agent in a container
        // is: the controller's resolver does not listen there.
        ["unshare-net"] => {
            // SAFETY: unshare(2) with a flag; it affects only this thread, which runs every later op.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } == 0 {
                match std::process::Command::new("ip").args(["link", "set", "lo", "up"]).status() {
                    Ok(status) if status.success() => Ok("ok".to_string()),
                    other => Err(format!("lo-up-failed {other:?}")),
                }
            } else {
                Err(errno(&std::io::Error::last_os_error()))
            }
        }
        ["sleep", ms] => ms
            .parse::<u64>()
            .map(|ms| {
                std::thread::sleep(Duration::from_millis(ms.min(30_000)));
                "ok".to_string()
            })
            .map_err(|_| "bad-ms".to_string()),
        _ => Err(format!("unknown-op {op:?}")),
    };
    result.unwrap_or_else(|e| e)
}

fn dns(dest: SocketAddr, name: &str, qtype: &str, mode: &str) -> String {
    let qtype = match qtype {
        "A" => RecordType::A,
        "AAAA" => RecordType::AAAA,
        _ => return "bad-qtype".into(),
    };
    let Ok(qname) = Name::from_ascii(format!("{name}.")) else {
        return "bad-name".into();
    };
    let mut query = Message::query();
    query.add_query(Query::query(qname, qtype));
    query.metadata.recursion_desired = true;
    let Ok(wire) = query.to_vec() else {
        return "encode-failed".into();
    };
    let (answer, from) = match mode {
        "udp" | "udp-connected" => {
            let socket = match UdpSocket::bind(local_for(&dest)) {
                Ok(s) => s,
                Err(err) => return format!("bind-{}", errno(&err)),
            };
            let _ = socket.set_read_timeout(Some(TIMEOUT));
            let sent = if mode == "udp" {
                socket.send_to(&wire, dest)
            } else {
                socket.connect(dest).and_then(|()| socket.send(&wire))
            };
            if let Err(err) = sent {
                return errno(&err);
            }
            let mut buf = vec![0u8; 65_535];
            match socket.recv_from(&mut buf) {
                Ok((n, from)) => (buf[..n].to_vec(), from),
                Err(err) => return errno(&err),
            }
        }
        "tcp" => {
            let mut stream = match TcpStream::connect_timeout(&dest, TIMEOUT) {
                Ok(s) => s,
                Err(err) => return errno(&err),
            };
            let _ = stream.set_read_timeout(Some(TIMEOUT));
            let Ok(len) = u16::try_from(wire.len()) else {
                return "too-long".into();
            };
            let mut framed = len.to_be_bytes().to_vec();
            framed.extend_from_slice(&wire);
            if let Err(err) = stream.write_all(&framed) {
                return errno(&err);
            }
            let mut len = [0u8; 2];
            if let Err(err) = stream.read_exact(&mut len) {
                return errno(&err);
            }
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            if let Err(err) = stream.read_exact(&mut buf) {
                return errno(&err);
            }
            let from = stream.peer_addr().unwrap_or(dest);
            (buf, from)
        }
        _ => return "bad-mode".into(),
    };
    let Ok(message) = Message::from_vec(&answer) else {
        return "undecodable".into();
    };
    if message.metadata.id != query.metadata.id {
        return "wrong-id".into();
    }
    let addrs: Vec<String> = message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    format!(
        "rcode={} tc={} from={from} addrs={}",
        message.metadata.response_code,
        u8::from(message.metadata.truncation),
        addrs.join(",")
    )
}

fn connect_bench(dest: SocketAddr, n: u32) -> Result<String, String> {
    use std::os::fd::AsRawFd as _;
    let mut samples: Vec<u128> = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    for _ in 0..n {
        let started = std::time::Instant::now();
        let stream = TcpStream::connect_timeout(&dest, TIMEOUT).map_err(|e| errno(&e))?;
        samples.push(started.elapsed().as_nanos());
        let linger = libc::linger { l_onoff: 1, l_linger: 0 };
        // SAFETY: setsockopt on an fd we own, with a correctly sized value.
        unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&raw const linger).cast(),
                u32::try_from(size_of::<libc::linger>()).unwrap_or(8),
            );
        }
    }
    if samples.is_empty() {
        return Err("n=0".into());
    }
    let mean = samples.iter().sum::<u128>() / samples.len() as u128;
    samples.sort_unstable();
    let at = |q: usize| samples[(samples.len() - 1) * q / 100];
    // The median is the figure compared: a SYN lost to a full accept queue on a busy machine costs a
    // 1 s retransmit and would dominate the mean.
    Ok(format!("ns_per_connect={} mean_ns={mean} p99_ns={}", at(50), at(99)))
}

fn dns_bench(dest: SocketAddr, name: &str, n: u32) -> Result<String, String> {
    let socket = UdpSocket::bind(local_for(&dest)).map_err(|e| errno(&e))?;
    socket.set_read_timeout(Some(TIMEOUT)).map_err(|e| errno(&e))?;
    let qname = Name::from_ascii(format!("{name}.")).map_err(|_| "bad-name".to_string())?;
    let mut buf = vec![0u8; 4096];
    let mut ok = 0u32;
    let started = std::time::Instant::now();
    for i in 0..n {
        let mut query = Message::query();
        query.metadata.id = u16::try_from(i % 65_536).unwrap_or(0);
        query.add_query(Query::query(qname.clone(), RecordType::A));
        query.metadata.recursion_desired = true;
        let wire = query.to_vec().map_err(|_| "encode-failed".to_string())?;
        socket.send_to(&wire, dest).map_err(|e| errno(&e))?;
        let (len, _) = socket.recv_from(&mut buf).map_err(|e| errno(&e))?;
        if Message::from_vec(&buf[..len]).is_ok_and(|m| m.metadata.id == query.metadata.id) {
            ok += 1;
        }
    }
    let micros = started.elapsed().as_secs_f64() * 1e6 / f64::from(n.max(1));
    Ok(format!("us_per_query={micros:.1} ok={ok}"))
}
