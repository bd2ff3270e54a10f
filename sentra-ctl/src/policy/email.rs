//! `email:`: what the agent may send through the controller's mail broker (`email`, `send-email`).
//! The credentials stay with root; the policy says who may be written to, how often and how much.
//! Without the section, no mail is sent.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Policy, PolicyError};

/// Where the installer writes himalaya's account (root-only: it holds the SMTP password).
pub const DEFAULT_CONFIG: &str = "/etc/sentra/email/himalaya.toml";
/// The himalaya the installer builds.
pub const DEFAULT_HIMALAYA: &str = "/usr/local/bin/himalaya";
/// Messages per hour when the section does not say.
pub const DEFAULT_PER_HOUR: u32 = 10;
/// Largest message (subject and body, before encoding) when the section does not say.
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024;
/// Recipients of one message, at most.
pub const MAX_RECIPIENTS: usize = 16;

/// The `email:` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmailSection {
    /// The sender address every message carries (`From:` and the SMTP envelope): the agent cannot
    /// choose it.
    pub from: String,
    /// Who may be written to: addresses, `*` standing for any run of characters, case-insensitive
    /// (`*@example.com`, `alice@example.org`, `*`). Every recipient of a message must match one.
    pub recipients: Vec<String>,
    /// Messages per hour (a sliding hour; sends that were allowed count, delivered or not).
    pub per_hour: Option<u32>,
    /// Largest subject plus body, in bytes.
    pub max_bytes: Option<usize>,
    /// himalaya's configuration (the account, with its credentials) [default: `/etc/sentra/email/himalaya.toml`].
    pub config: Option<PathBuf>,
    /// The account in that configuration [default: the one marked `default`].
    pub account: Option<String>,
    /// The himalaya binary [default: `/usr/local/bin/himalaya`].
    pub himalaya: Option<PathBuf>,
}

impl EmailSection {
    #[must_use]
    pub fn per_hour(&self) -> u32 {
        self.per_hour.unwrap_or(DEFAULT_PER_HOUR)
    }

    #[must_use]
    pub fn max_bytes(&self) -> usize {
        self.max_bytes.unwrap_or(DEFAULT_MAX_BYTES)
    }

    #[must_use]
    pub fn config(&self) -> PathBuf {
        self.config.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
    }

    #[must_use]
    pub fn himalaya(&self) -> PathBuf {
        self.himalaya.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_HIMALAYA))
    }

    /// The first pattern (its index and text) that admits `address`, if any.
    #[must_use]
    pub fn admitting(&self, address: &str) -> Option<(usize, &str)> {
        let address = address.to_ascii_lowercase();
        self.recipients
            .iter()
            .enumerate()
            .find(|(_, pattern)| wildcard(&pattern.to_ascii_lowercase(), &address))
            .map(|(i, pattern)| (i, pattern.as_str()))
    }
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters (none included).
fn wildcard(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else { return false };
    let Some(mut rest) = text.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        // No `*`: the whole text must be the pattern.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Why `address` is not a plain `local@domain` address, if it is not: one `@`, no spaces, quotes,
/// angle brackets, commas or control characters (no room for a second recipient or a header).
#[must_use]
pub fn address_problem(address: &str) -> Option<&'static str> {
    if address.is_empty() {
        return Some("an address cannot be empty");
    }
    if address.len() > 254 {
        return Some("an address is at most 254 bytes long");
    }
    if address.chars().any(|c| c.is_control() || c.is_whitespace() || "<>,;:\"()[]\\".contains(c)) {
        return Some("an address cannot hold spaces, control characters or any of < > , ; : \" ( ) [ ] \\");
    }
    match address.split_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() && !domain.contains('@') => {
            if domain.starts_with('.') || domain.ends_with('.') || domain.contains("..") {
                Some("the domain of an address is malformed")
            } else {
                None
            }
        }
        _ => Some("an address is local-part@domain"),
    }
}

impl Policy {
    /// `email:`: a plain sender address, recipient patterns that are addresses (with `*`), a
    /// non-zero rate and size, and absolute paths.
    pub(super) fn validate_email(&self) -> Result<(), PolicyError> {
        let Some(email) = &self.model.email else { return Ok(()) };
        if let Some(problem) = address_problem(&email.from) {
            return Err(self.error_at("email.from", format!("email: from `{}`: {problem}", email.from)));
        }
        if email.from.contains('*') {
            return Err(self.error_at("email.from", "email: from is one address, not a pattern"));
        }
        for (i, pattern) in email.recipients.iter().enumerate() {
            let at = format!("email.recipients[{i}]");
            // `*` alone admits every address; otherwise the pattern must look like an address once
            // each `*` stands for a letter.
            if pattern != "*"
                && let Some(problem) = address_problem(&pattern.replace('*', "x"))
            {
                return Err(self.error_at(at, format!("email: recipient pattern `{pattern}`: {problem}")));
            }
            if email.recipients[..i].contains(pattern) {
                return Err(
                    self.error_at(at, format!("email: recipient pattern `{pattern}` is listed twice"))
                );
            }
        }
        if email.per_hour == Some(0) {
            return Err(self.error_at(
                "email.per_hour",
                "email: per_hour must be at least 1 (remove the section to send no mail)",
            ));
        }
        if email.max_bytes == Some(0) {
            return Err(self.error_at("email.max_bytes", "email: max_bytes must be at least 1"));
        }
        for (key, path) in [("config", &email.config), ("himalaya", &email.himalaya)] {
            if let Some(path) = path
                && !path.is_absolute()
            {
                return Err(self.error_at(
                    format!("email.{key}"),
                    format!("email: {key} `{}` must be an absolute path", path.display()),
                ));
            }
        }
        if let Some(account) = &email.account
            && (account.is_empty() || account.starts_with('-'))
        {
            return Err(self.error_at("email.account", format!("email: `{account}` is not an account name")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(recipients: &[&str]) -> EmailSection {
        EmailSection {
            from: "agent@example.com".into(),
            recipients: recipients.iter().map(ToString::to_string).collect(),
            per_hour: None,
            max_bytes: None,
            config: None,
            account: None,
            himalaya: None,
        }
    }

    #[test]
    fn recipient_patterns_match_whole_addresses_case_insensitively() {
        let email = section(&["*@example.com", "alice@example.org"]);
        assert_eq!(email.admitting("Bob@Example.COM"), Some((0, "*@example.com")));
        assert_eq!(email.admitting("alice@example.org"), Some((1, "alice@example.org")));
        assert_eq!(email.admitting("alice@example.org.evil.test"), None);
        assert_eq!(email.admitting("bob@example.com.evil.test"), None);
        assert_eq!(email.admitting("xalice@example.org"), None);
        assert!(section(&["*"]).admitting("anyone@anywhere.test").is_some());
        assert!(section(&[]).admitting("anyone@anywhere.test").is_none());
        assert!(wildcard("a*b*c", "aXbYc"));
        assert!(wildcard("a*b*c", "abc"));
        assert!(!wildcard("a*b*c", "acb"));
        assert!(!wildcard("ab*ba", "aba"), "the ends cannot overlap");
    }

    #[test]
    fn addresses_that_could_smuggle_a_recipient_or_a_header_are_refused() {
        for bad in [
            "",
            "a",
            "@x.test",
            "a@",
            "a@b@c.test",
            "a@x.test, b@y.test",
            "a@x.test\r\nBcc: b@y.test",
            "A <a@x.test>",
            "\"a\"@x.test",
            "a@.test",
            "a@x..test",
        ] {
            assert!(address_problem(bad).is_some(), "{bad:?} accepted");
        }
        assert_eq!(address_problem("first.last+tag@sub.example.com"), None);
    }

    #[test]
    fn a_bad_section_is_rejected_with_its_place() {
        let cases = [
            ("email:\n  from: nobody\n  recipients: []\n", (2, 9)),
            ("email:\n  from: a@x.test\n  recipients: [\"*@x.test\", \"bad pattern\"]\n", (3, 28)),
            ("email:\n  from: a@x.test\n  recipients: [\"*\"]\n  per_hour: 0\n", (4, 13)),
            ("email:\n  from: a@x.test\n  recipients: [\"*\"]\n  config: relative.toml\n", (4, 11)),
            ("email:\n  from: a@x.test\n  recipients: [\"*\"]\n  smtp: x\n", (4, 3)),
        ];
        for (text, place) in cases {
            let err = Policy::parse(std::path::Path::new("p.yaml"), text).expect_err(text);
            let PolicyError::Invalid(located) = err else { panic!("{text}: wrong error kind") };
            assert_eq!((located.line, located.column), place, "{text}: {located}");
        }
        let ok = "email:\n  from: a@x.test\n  recipients: [\"*@x.test\", \"*\"]\n  per_hour: 3\n";
        let policy = Policy::parse(std::path::Path::new("p.yaml"), ok).expect("valid");
        assert_eq!(policy.model.email.as_ref().map(EmailSection::per_hour), Some(3));
    }
}
