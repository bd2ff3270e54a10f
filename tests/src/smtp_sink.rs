//! A mail server on loopback for the e-mail tests: it speaks enough SMTP for himalaya (EHLO, AUTH
//! PLAIN/LOGIN, MAIL, RCPT, DATA, QUIT) and keeps every message it took, with the credentials it was
//! given, so a test can check what the broker really sent.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::Engine as _;

/// One message as the server received it.
#[derive(Debug, Clone, Default)]
pub struct Mail {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The DATA payload (headers and body), dot-unstuffed.
    pub data: String,
    /// `(user, password)` from AUTH, if the client authenticated.
    pub auth: Option<(String, String)>,
}

/// The server: listening from [`SmtpSink::start`] until dropped with the test.
pub struct SmtpSink {
    pub addr: SocketAddr,
    mails: Arc<Mutex<Vec<Mail>>>,
}

impl SmtpSink {
    /// Listens on `127.0.0.1` on a free port.
    ///
    /// # Panics
    /// Loopback cannot be bound.
    #[must_use]
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the SMTP sink on loopback");
        let addr = listener.local_addr().expect("local address");
        let mails = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&mails);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let kept = Arc::clone(&kept);
                std::thread::spawn(move || {
                    let _ = serve(stream, &kept);
                });
            }
        });
        Self { addr, mails }
    }

    /// Every message taken so far.
    ///
    /// # Panics
    /// A serving thread panicked while holding the list.
    #[must_use]
    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().expect("mail list").clone()
    }

    /// Waits up to `timeout` for at least `count` messages.
    #[must_use]
    pub fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Mail> {
        let deadline = Instant::now() + timeout;
        loop {
            let mails = self.mails();
            if mails.len() >= count || Instant::now() > deadline {
                return mails;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn decode(text: &str) -> String {
    let bytes = base64::engine::general_purpose::STANDARD.decode(text.trim()).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn serve(stream: TcpStream, mails: &Mutex<Vec<Mail>>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut read_line = || -> std::io::Result<Option<String>> {
        let mut line = String::new();
        Ok((reader.read_line(&mut line)? > 0).then(|| line.trim_end_matches(['\r', '\n']).to_string()))
    };
    out.write_all(b"220 sink.test ESMTP\r\n")?;
    let mut mail = Mail::default();
    while let Some(line) = read_line()? {
        let upper = line.to_ascii_uppercase();
        let verb = upper.split_whitespace().next().unwrap_or("");
        match verb {
            "EHLO" => {
                out.write_all(b"250-sink.test\r\n250-AUTH PLAIN LOGIN\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")?;
            }
            "HELO" | "NOOP" => out.write_all(b"250 ok\r\n")?,
            "RSET" => {
                mail = Mail { auth: mail.auth.take(), ..Mail::default() };
                out.write_all(b"250 ok\r\n")?;
            }
            "AUTH" => {
                let words: Vec<&str> = line.split_whitespace().collect();
                let mechanism = words.get(1).map(|w| w.to_ascii_uppercase()).unwrap_or_default();
                if mechanism == "PLAIN" {
                    let payload = if let Some(initial) = words.get(2) {
                        decode(initial)
                    } else {
                        out.write_all(b"334 \r\n")?;
                        decode(&read_line()?.unwrap_or_default())
                    };
                    let mut parts = payload.split('\0').skip(1);
                    let user = parts.next().unwrap_or_default().to_string();
                    let password = parts.next().unwrap_or_default().to_string();
                    mail.auth = Some((user, password));
                } else {
                    out.write_all(b"334 VXNlcm5hbWU6\r\n")?;
                    let user = decode(&read_line()?.unwrap_or_default());
                    out.write_all(b"334 UGFzc3dvcmQ6\r\n")?;
                    let password = decode(&read_line()?.unwrap_or_default());
                    mail.auth = Some((user, password));
                }
                out.write_all(b"235 authenticated\r\n")?;
            }
            "MAIL" => {
                mail.mail_from = address(&line);
                out.write_all(b"250 ok\r\n")?;
            }
            "RCPT" => {
                mail.rcpt_to.push(address(&line));
                out.write_all(b"250 ok\r\n")?;
            }
            "DATA" => {
                out.write_all(b"354 end with .\r\n")?;
                let mut data = String::new();
                while let Some(line) = read_line()? {
                    if line == "." {
                        break;
                    }
                    data.push_str(line.strip_prefix('.').filter(|_| line.starts_with("..")).unwrap_or(&line));
                    data.push('\n');
                }
                mail.data = data;
                let auth = mail.auth.clone();
                mails.lock().map_err(|_| std::io::Error::other("poisoned"))?.push(std::mem::take(&mut mail));
                mail.auth = auth;
                out.write_all(b"250 queued\r\n")?;
            }
            "QUIT" => {
                out.write_all(b"221 bye\r\n")?;
                return Ok(());
            }
            _ => out.write_all(b"502 not implemented\r\n")?,
        }
    }
    Ok(())
}

/// The address in `MAIL FROM:<a@b> …` or `RCPT TO:<a@b>`.
fn address(line: &str) -> String {
    line.split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map_or_else(String::new, |(address, _)| address.to_string())
}
