//! The message the broker sends: RFC 5322, composed here so the agent controls only the recipients
//! (checked against the policy), the subject (one line) and the body.

use std::sync::atomic::{AtomicU64, Ordering};

/// A message ready for the mail server.
#[derive(Debug, Clone)]
pub struct Composed {
    pub bytes: Vec<u8>,
    /// Without angle brackets.
    pub message_id: String,
}

/// Why a subject cannot be a header, if it cannot: one line of at most 998 bytes (RFC 5322 §2.1.1),
/// without control characters (a CR or LF would start a header of the agent's choosing).
#[must_use]
pub fn subject_problem(subject: &str) -> Option<&'static str> {
    if subject.len() > 998 {
        return Some("a subject is at most 998 bytes long");
    }
    if subject.chars().any(char::is_control) {
        return Some("a subject is one line without control characters");
    }
    None
}

/// Why a body cannot be sent as text, if it cannot (a NUL byte has no place in a text part).
#[must_use]
pub fn body_problem(body: &str) -> Option<&'static str> {
    body.contains('\0').then_some("a body cannot hold NUL characters")
}

/// Composes a plain-text message from `from` to `to` (addresses already checked).
///
/// # Errors
/// Writing into memory failed (it cannot, short of running out of it).
pub fn compose(from: &str, to: &[String], subject: &str, body: &str) -> std::io::Result<Composed> {
    let message_id = message_id(from);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let bytes = mail_builder::MessageBuilder::new()
        .from(from)
        .to(to.iter().map(String::as_str).collect::<Vec<_>>())
        .subject(subject)
        .message_id(message_id.as_str())
        .date(now)
        .text_body(body)
        .write_to_vec()?;
    Ok(Composed { bytes, message_id })
}

/// A message id unique to this controller (`sentra.<time>.<pid>.<n>@<sender's domain>`).
fn message_id(from: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let domain = from.rsplit_once('@').map_or("localhost", |(_, domain)| domain);
    format!("sentra.{nanos:x}.{}.{n}@{domain}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_cannot_add_a_header_through_the_subject() {
        assert!(subject_problem("hi\r\nBcc: someone@evil.test").is_some());
        assert!(subject_problem("hi\nX: y").is_some());
        assert!(subject_problem(&"x".repeat(999)).is_some());
        assert_eq!(subject_problem("Résumé — weekly report"), None);
    }

    #[test]
    fn a_composed_message_carries_the_policy_sender_and_encodes_what_needs_it() {
        let to = vec!["bob@example.com".to_string(), "carol@example.org".to_string()];
        let body = format!("line one\n{}\nünïcode", "long ".repeat(400));
        let message = compose("agent@example.com", &to, "Résumé", &body).expect("compose");
        let text = String::from_utf8(message.bytes).expect("ASCII after encoding");
        assert!(text.contains("From: <agent@example.com>\r\n"), "{text}");
        assert!(text.contains("bob@example.com") && text.contains("carol@example.org"), "{text}");
        assert!(text.contains(&format!("Message-ID: <{}>", message.message_id)), "{text}");
        assert!(!text.contains("Résumé"), "non-ASCII subject is encoded: {text}");
        assert!(text.lines().all(|line| line.len() <= 998), "no line longer than RFC 5322 allows");
        assert!(message.message_id.ends_with("@example.com"));
    }
}
