//! `email` and `send-email` (installed as symbolic links to `sentra-email`): send one message
//! through the Sentra controller, which holds the mail credentials and decides under the policy's
//! `email:` section. The original Sentra's command lines:
//!   email TO SUBJECT BODY
//!   email --to TO --subject SUBJECT --body BODY
//!   send-email TO SUBJECT BODY

use std::{io::Write as _, process::ExitCode};

use sentra_ctl::email::client;

/// Read at most this much of a body from standard input.
const STDIN_BODY_MAX: u64 = 4 * 1024 * 1024;

fn main() -> ExitCode {
    let mut args = std::env::args();
    let program = args
        .next()
        .as_deref()
        .and_then(|arg0| std::path::Path::new(arg0).file_name())
        .map_or_else(|| "email".to_string(), |name| name.to_string_lossy().into_owned());
    let program = if program == "send-email" { program } else { "email".to_string() };
    let args: Vec<String> = args.collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{}", client::usage(&program));
        return ExitCode::SUCCESS;
    }
    let run = || -> Result<(String, u8), client::ClientError> {
        let mut request = client::parse(&program, &args)?;
        client::read_body_if_dash(&mut request, STDIN_BODY_MAX)?;
        let answer = client::request(&sentra_ctl::controller::protocol::nearest_records_socket(), &request)?;
        Ok(client::report(&request, &answer))
    };
    match run() {
        Ok((text, code)) => {
            // Sent: standard output; refused or failed: standard error. A closed stream loses only
            // the message, not the status.
            let _ = if code == 0 {
                std::io::stdout().write_all(text.as_bytes())
            } else {
                std::io::stderr().write_all(text.as_bytes())
            };
            ExitCode::from(code)
        }
        Err(client::ClientError::Usage(usage)) => {
            eprintln!("{usage}");
            ExitCode::from(2)
        }
        Err(err) => {
            eprintln!("{program}: not sent: {}", sentra_ctl::describe(&err));
            ExitCode::from(1)
        }
    }
}
