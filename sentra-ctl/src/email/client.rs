//! The agent's side (`email`, `send-email`): the original Sentra's command lines, a request on the
//! controller's records socket, and the answer said plainly.

use std::{path::PathBuf, time::Duration};

use crate::{
    audit::AuditError,
    controller::protocol::{EMAIL_KEY, EmailAnswer, EmailRequest},
    shell::gate::ControllerLog,
};

/// What went wrong on the way to the broker.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Usage(String),
    #[error("reading the body from standard input")]
    Stdin(#[source] std::io::Error),
    #[error(
        "no Sentra controller answers at {path} (mail is sent by the controller, which holds the credentials)"
    )]
    Controller {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How long the broker may take (it waits for the mail server, up to its own deadline).
const ANSWER_DEADLINE: Duration = Duration::from_secs(crate::email::broker::SEND_DEADLINE.as_secs() + 15);

/// The usage line for a program name.
#[must_use]
pub fn usage(program: &str) -> String {
    if program == "send-email" {
        "usage: send-email TO SUBJECT BODY   (BODY `-`: read it from standard input)".into()
    } else {
        format!(
            "usage: {program} TO SUBJECT BODY\n   or: {program} --to TO [--to TO…] --subject SUBJECT --body BODY\n\
             TO may list several addresses separated by commas; BODY `-` reads standard input"
        )
    }
}

/// Parses a command line (`args` without the program name): `TO SUBJECT BODY`, or for `email`
/// also `--to/--subject/--body` (`--to` repeatable). `TO` may hold several addresses separated by
/// commas; a body of `-` is read from standard input by the caller.
///
/// # Errors
/// The usage, when the line is neither form.
pub fn parse(program: &str, args: &[String]) -> Result<EmailRequest, ClientError> {
    let usage_error = || ClientError::Usage(usage(program));
    let split = |to: &str| -> Vec<String> {
        to.split(',').map(str::trim).filter(|a| !a.is_empty()).map(ToString::to_string).collect()
    };
    if program != "send-email" && args.first().is_some_and(|a| a.starts_with("--")) {
        let (mut to, mut subject, mut body) = (Vec::new(), None, None);
        let mut rest = args.iter();
        while let Some(flag) = rest.next() {
            let value = rest.next().ok_or_else(usage_error)?;
            match flag.as_str() {
                "--to" => to.extend(split(value)),
                "--subject" => subject = Some(value.clone()),
                "--body" => body = Some(value.clone()),
                _ => return Err(usage_error()),
            }
        }
        let (Some(subject), Some(body)) = (subject, body) else { return Err(usage_error()) };
        if to.is_empty() {
            return Err(usage_error());
        }
        return Ok(EmailRequest { to, subject, body });
    }
    match args {
        [to, subject, body] if !split(to).is_empty() => {
            Ok(EmailRequest { to: split(to), subject: subject.clone(), body: body.clone() })
        }
        _ => Err(usage_error()),
    }
}

/// Reads the body from standard input when it was given as `-` (at most `limit` bytes are kept; the
/// broker refuses a message over the policy's size anyway).
///
/// # Errors
/// Standard input could not be read.
pub fn read_body_if_dash(request: &mut EmailRequest, limit: u64) -> Result<(), ClientError> {
    use std::io::Read as _;
    if request.body != "-" {
        return Ok(());
    }
    let mut bytes = Vec::new();
    std::io::stdin().take(limit).read_to_end(&mut bytes).map_err(ClientError::Stdin)?;
    request.body = String::from_utf8_lossy(&bytes).into_owned();
    Ok(())
}

/// Sends the request to the broker and waits for its answer.
///
/// # Errors
/// The controller is not there or broke off.
pub fn request(path: &std::path::Path, request: &EmailRequest) -> Result<EmailAnswer, ClientError> {
    // The shell's sink calls the socket its audit log; here only the failure itself is worth saying.
    let controller =
        |AuditError::Io { source, .. }| ClientError::Controller { path: path.to_path_buf(), source };
    // The shells' connection to the same socket: its greeting (the enforced policy) is read, then the
    // one question is answered.
    ControllerLog::connect(path, ANSWER_DEADLINE)
        .map_err(controller)?
        .ask(&serde_json::json!({ EMAIL_KEY: request }))
        .map_err(controller)
}

/// What the agent is told, and the exit status: 0 sent, 1 refused or failed.
#[must_use]
pub fn report(request: &EmailRequest, answer: &EmailAnswer) -> (String, u8) {
    let to = request.to.join(", ");
    if answer.sent {
        return (format!("Email sent to {to}\n"), 0);
    }
    let reason = answer.reason.as_deref().unwrap_or("no reason given");
    if answer.denied {
        (format!("[X] DENIED: email to {to}\n    Rule: {}\n    Reason: {reason}\n", answer.rule), 1)
    } else {
        (format!("Failed to send email to {to}: {reason}\n"), 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn both_command_lines_of_the_original_are_understood() {
        let positional = parse("email", &args(&["a@x.test, b@y.test", "Hi", "Body"])).expect("positional");
        assert_eq!(positional.to, ["a@x.test", "b@y.test"]);
        assert_eq!((positional.subject.as_str(), positional.body.as_str()), ("Hi", "Body"));
        let flags =
            parse("email", &args(&["--to", "a@x.test", "--subject", "S", "--body", "B", "--to", "c@z.test"]))
                .expect("flags");
        assert_eq!(flags.to, ["a@x.test", "c@z.test"]);
        assert!(parse("send-email", &args(&["a@x.test", "S", "B"])).is_ok());
        for bad in [
            &["a@x.test", "S"][..],
            &["--to", "a@x.test", "--subject", "S"],
            &["--to", "a@x.test", "--bcc", "b@y.test", "--subject", "S", "--body", "B"],
            &["", "S", "B"],
        ] {
            assert!(matches!(parse("email", &args(bad)), Err(ClientError::Usage(_))), "{bad:?}");
        }
        assert!(parse("send-email", &args(&["--to", "a@x.test", "--subject", "S", "--body", "B"])).is_err());
    }

    #[test]
    fn a_refusal_names_rule_and_reason() {
        let request = parse("email", &args(&["a@x.test", "S", "B"])).expect("parse");
        let answer = EmailAnswer {
            sent: false,
            denied: true,
            rule: "email.recipients".into(),
            reason: Some("`a@x.test` matches no pattern".into()),
            message_id: None,
        };
        let (text, code) = report(&request, &answer);
        assert_eq!(code, 1);
        assert!(
            text.starts_with("[X] DENIED: email to a@x.test\n    Rule: email.recipients\n    Reason: "),
            "{text}"
        );
    }
}
