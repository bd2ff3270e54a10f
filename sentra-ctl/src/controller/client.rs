//! The CLI side of the socket.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    time::Duration,
};

use anyhow::Context as _;

use super::protocol::{Request, Response, socket};

/// Sends one request and waits for its response.
///
/// # Errors
/// No controller is listening, or it answered something unreadable.
pub fn send(request: &Request) -> anyhow::Result<Response> {
    let path = socket();
    let mut stream = UnixStream::connect(&path).with_context(|| {
        format!("connecting to the controller at {} (is `sentra-ctl daemon` running?)", path.display())
    })?;
    stream.set_read_timeout(Some(Duration::from_mins(1)))?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    // A refused peer is answered without being read: the answer is there even if writing failed.
    let written = stream.write_all(&line);
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).context("reading the controller's answer")?;
    if reply.is_empty() {
        written.context("sending the request")?;
    }
    serde_json::from_str(&reply).with_context(|| format!("unreadable answer: {reply:?}"))
}
