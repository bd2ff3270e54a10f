//! Forwarding a query to the real resolvers, over the transport the client used, with a deadline per
//! attempt: a dead upstream costs the client one SERVFAIL, never a hang.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpStream, UdpSocket},
    time::timeout,
};

/// Largest DNS message (RFC 1035 4.2.2: TCP length prefix is 16 bits).
pub const MAX_MESSAGE: usize = 65_535;

/// Why no upstream answered.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no upstream resolver configured")]
    NoUpstream,
    #[error("{upstream}: {detail}")]
    Failed { upstream: SocketAddr, detail: String },
}

/// The transport a query came in on (and goes out on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        }
    }
}

/// Sends `query` to each upstream in turn until one answers with a message carrying the query's id.
///
/// # Errors
/// Every upstream failed or timed out (the last failure is reported).
pub async fn exchange(
    query: &[u8],
    transport: Transport,
    upstreams: &[SocketAddr],
    per_attempt: Duration,
) -> Result<Vec<u8>, UpstreamError> {
    let mut last = UpstreamError::NoUpstream;
    for &upstream in upstreams {
        let attempt = match transport {
            Transport::Udp => timeout(per_attempt, udp(query, upstream)).await,
            Transport::Tcp => timeout(per_attempt, tcp(query, upstream)).await,
        };
        match attempt {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(detail)) => last = UpstreamError::Failed { upstream, detail },
            Err(_) => {
                last = UpstreamError::Failed { upstream, detail: format!("no answer within {per_attempt:?}") }
            }
        }
    }
    Err(last)
}

fn same_id(query: &[u8], answer: &[u8]) -> bool {
    answer.len() >= 12 && query.len() >= 2 && answer[..2] == query[..2] && answer[2] & 0x80 != 0
}

async fn udp(query: &[u8], upstream: SocketAddr) -> Result<Vec<u8>, String> {
    let local: SocketAddr = if upstream.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let socket = UdpSocket::bind(local).await.map_err(|e| format!("bind: {e}"))?;
    // Connected: the kernel drops datagrams from any other source.
    socket.connect(upstream).await.map_err(|e| format!("connect: {e}"))?;
    socket.send(query).await.map_err(|e| format!("send: {e}"))?;
    let mut buf = vec![0u8; MAX_MESSAGE];
    // Datagrams with another id (late answers to nothing we sent on this fresh socket) are skipped;
    // the caller's timeout bounds the loop.
    loop {
        let n = socket.recv(&mut buf).await.map_err(|e| format!("recv: {e}"))?;
        if same_id(query, &buf[..n]) {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn tcp(query: &[u8], upstream: SocketAddr) -> Result<Vec<u8>, String> {
    let mut stream = TcpStream::connect(upstream).await.map_err(|e| format!("connect: {e}"))?;
    let len = u16::try_from(query.len()).map_err(|_| "query too long".to_string())?;
    let mut out = Vec::with_capacity(query.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(query);
    stream.write_all(&out).await.map_err(|e| format!("write: {e}"))?;
    let answer = read_framed(&mut stream).await.map_err(|e| format!("read: {e}"))?;
    if same_id(query, &answer) { Ok(answer) } else { Err("answer with another id".into()) }
}

/// Reads one length-prefixed message (RFC 1035 4.2.2).
///
/// # Errors
/// The stream ends or fails.
pub async fn read_framed<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut message = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut message).await?;
    Ok(message)
}

/// Writes one length-prefixed message.
///
/// # Errors
/// The message is too long, or the stream fails.
pub async fn write_framed<S: tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    message: &[u8],
) -> std::io::Result<()> {
    let len = u16::try_from(message.len()).map_err(|_| std::io::Error::other("DNS message too long"))?;
    let mut out = Vec::with_capacity(message.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    stream.write_all(&out).await
}
