//! The controller's side: decide a request under the enforced `email:` section, then send it through
//! himalaya as root. Deciding happens in the controller's loop (it owns the hourly count); sending
//! happens in the requesting connection's task, so a slow mail server never holds up enforcement.

use std::{
    collections::VecDeque,
    os::unix::fs::MetadataExt as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use super::message::{self, body_problem, subject_problem};
use crate::{
    controller::protocol::EmailRequest,
    policy::email::{EmailSection, MAX_RECIPIENTS, address_problem},
};

/// How long himalaya may take to hand one message to the server.
pub const SEND_DEADLINE: Duration = Duration::from_mins(1);
/// The window of `email.per_hour`.
const HOUR: Duration = Duration::from_hours(1);

/// Why a request is refused: the policy entry that decided and what the agent is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub rule: String,
    pub reason: String,
}

impl Refusal {
    fn new(rule: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { rule: rule.into(), reason: reason.into() }
    }
}

/// An allowed message, composed, with what sending it needs.
#[derive(Debug, Clone)]
pub struct Job {
    /// The policy entry that allowed it (the pattern that admitted the first recipient).
    pub rule: String,
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    pub message: message::Composed,
    himalaya: PathBuf,
    config: PathBuf,
    account: Option<String>,
}

/// The hourly count, across every agent the controller governs (the cap is the deployment's).
#[derive(Debug, Default)]
pub struct Broker {
    sent: VecDeque<Instant>,
}

impl Broker {
    /// Decides one request; an allowed one counts against the hour at once (delivered or not).
    ///
    /// # Errors
    /// The refusal: no `email:` section, a recipient no pattern admits, a malformed field, a message
    /// too large, the hourly cap reached, or a credentials file others could read.
    pub fn decide(
        &mut self,
        section: Option<&EmailSection>,
        request: &EmailRequest,
        now: Instant,
    ) -> Result<Job, Refusal> {
        let Some(section) = section else {
            return Err(Refusal::new(
                "email",
                "the enforced policy has no `email:` section: no mail may be sent",
            ));
        };
        if request.to.is_empty() {
            return Err(Refusal::new("email", "a message needs at least one recipient"));
        }
        if request.to.len() > MAX_RECIPIENTS {
            return Err(Refusal::new("email", format!("at most {MAX_RECIPIENTS} recipients per message")));
        }
        let mut rule = None;
        for address in &request.to {
            if let Some(problem) = address_problem(address) {
                return Err(Refusal::new("email", format!("recipient `{address}`: {problem}")));
            }
            let Some((index, _)) = section.admitting(address) else {
                return Err(Refusal::new(
                    "email.recipients",
                    format!("`{address}` matches no pattern in the policy's email.recipients"),
                ));
            };
            rule.get_or_insert(format!("email.recipients[{index}]"));
        }
        if let Some(problem) = subject_problem(&request.subject) {
            return Err(Refusal::new("email", problem));
        }
        if let Some(problem) = body_problem(&request.body) {
            return Err(Refusal::new("email", problem));
        }
        let size = request.subject.len() + request.body.len();
        if size > section.max_bytes() {
            return Err(Refusal::new(
                "email.max_bytes",
                format!("the message is {size} bytes; the policy allows at most {}", section.max_bytes()),
            ));
        }
        let config = section.config();
        if let Some(problem) = credentials_problem(&config) {
            return Err(Refusal::new("email.config", problem));
        }
        while self.sent.front().is_some_and(|at| now.duration_since(*at) >= HOUR) {
            self.sent.pop_front();
        }
        let cap = section.per_hour();
        if self.sent.len() >= usize::try_from(cap).unwrap_or(usize::MAX) {
            let wait =
                self.sent.front().map_or(HOUR, |oldest| HOUR.saturating_sub(now.duration_since(*oldest)));
            return Err(Refusal::new(
                "email.per_hour",
                format!(
                    "{cap} messages in the last hour, the policy's cap; the next may go in {} s",
                    wait.as_secs() + 1
                ),
            ));
        }
        let message = message::compose(&section.from, &request.to, &request.subject, &request.body)
            .map_err(|err| Refusal::new("email", format!("composing the message: {err}")))?;
        self.sent.push_back(now);
        Ok(Job {
            rule: rule.unwrap_or_else(|| "email.recipients".into()),
            from: section.from.clone(),
            to: request.to.clone(),
            subject: request.subject.clone(),
            message,
            himalaya: section.himalaya(),
            config,
            account: section.account.clone(),
        })
    }
}

/// Why the credentials file must not be used, if it must not: it is missing, not a regular file, not
/// root's, or readable or writable by anyone else (then the agent might read the password, or point
/// himalaya at a server of its own).
fn credentials_problem(config: &std::path::Path) -> Option<String> {
    match std::fs::symlink_metadata(config) {
        Err(err) => Some(format!(
            "the mail account {} cannot be read ({err}); scripts/install.sh writes it from EMAIL_ADDRESS and EMAIL_PASSWORD",
            config.display()
        )),
        Ok(meta) if !meta.is_file() => Some(format!("{} is not a regular file", config.display())),
        Ok(meta) if meta.uid() != 0 || meta.mode() & 0o077 != 0 => Some(format!(
            "{} holds the mail password but is not root's alone (owner uid {}, mode {:o}): chown root:root and chmod 600 it",
            config.display(),
            meta.uid(),
            meta.mode() & 0o7777
        )),
        Ok(_) => None,
    }
}

/// What `sentra-ctl doctor` says of the mail broker under a policy's `email:` section: `Ok` with what
/// it will do, or what is wrong and how to fix it (a missing or unsafe account, a missing himalaya).
///
/// # Errors
/// The problem and its fix, for the doctor's line.
pub fn readiness(section: Option<&EmailSection>) -> Result<String, (String, String)> {
    let Some(section) = section else {
        return Ok("no `email:` section in the policy: the agent cannot send mail".into());
    };
    let config = section.config();
    if let Some(problem) = credentials_problem(&config) {
        return Err((
            problem,
            "rerun scripts/install.sh with EMAIL_ADDRESS and EMAIL_PASSWORD, or write the himalaya account there (root, mode 600)".into(),
        ));
    }
    let himalaya = section.himalaya();
    if !himalaya.is_file() {
        return Err((
            format!("{} is missing", himalaya.display()),
            "scripts/install.sh builds it (or set email.himalaya to where it is)".into(),
        ));
    }
    Ok(format!(
        "the controller sends as {} to {} (at most {} an hour) through {} with {}",
        section.from,
        section.recipients.join(", "),
        section.per_hour(),
        himalaya.display(),
        config.display()
    ))
}

impl Job {
    /// The message size as sent (after encoding).
    #[must_use]
    pub fn size(&self) -> usize {
        self.message.bytes.len()
    }

    /// Hands the message to the mail server through himalaya, as root, with an empty environment
    /// (nothing of the controller's leaks into it), within [`SEND_DEADLINE`].
    ///
    /// # Errors
    /// What went wrong, in one line for the agent and the audit record: himalaya missing or failing
    /// (its last line of error output), or the deadline passed.
    pub async fn send(&self) -> Result<(), String> {
        use tokio::io::AsyncWriteExt as _;
        let mut command = tokio::process::Command::new(&self.himalaya);
        command
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", "/root")
            .env("NO_COLOR", "1")
            .arg("--config")
            .arg(&self.config);
        if let Some(account) = &self.account {
            command.arg("--account").arg(account);
        }
        command.args(["smtp", "send", "--mail-from", &self.from]);
        for to in &self.to {
            command.args(["--rcpt-to", to]);
        }
        command
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child =
            command.spawn().map_err(|err| format!("running {}: {err}", self.himalaya.display()))?;
        let mut stdin = child.stdin.take().ok_or("himalaya has no standard input")?;
        let bytes = self.message.bytes.clone();
        let work = async move {
            stdin.write_all(&bytes).await.map_err(|err| format!("writing to himalaya: {err}"))?;
            drop(stdin);
            child.wait_with_output().await.map_err(|err| format!("waiting for himalaya: {err}"))
        };
        let output = tokio::time::timeout(SEND_DEADLINE, work).await.map_err(|_| {
            format!("the mail server did not take the message within {} s", SEND_DEADLINE.as_secs())
        })??;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or("no error output");
        Err(format!("himalaya failed ({}): {}", output.status, last.trim()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(config: &std::path::Path, per_hour: u32) -> EmailSection {
        EmailSection {
            from: "agent@example.com".into(),
            recipients: vec!["*@example.com".into(), "boss@example.org".into()],
            per_hour: Some(per_hour),
            max_bytes: Some(100),
            config: Some(config.to_path_buf()),
            account: None,
            himalaya: None,
        }
    }

    fn request(to: &[&str]) -> EmailRequest {
        EmailRequest {
            to: to.iter().map(ToString::to_string).collect(),
            subject: "s".into(),
            body: "b".into(),
        }
    }

    #[test]
    fn recipients_size_and_the_hourly_cap_decide() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("himalaya.toml");
        std::fs::write(&config, "").expect("write");
        std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
        let root = nix::unistd::geteuid().is_root();
        let section = section(&config, 2);
        let mut broker = Broker::default();
        let t0 = Instant::now();

        let refused = broker.decide(None, &request(&["a@example.com"]), t0).expect_err("no section");
        assert_eq!(refused.rule, "email");
        let refused = broker.decide(Some(&section), &request(&["a@example.com", "x@evil.test"]), t0);
        assert_eq!(refused.expect_err("evil").rule, "email.recipients");
        let refused = broker.decide(Some(&section), &request(&["a@example.com\r\nBcc: x@evil.test"]), t0);
        assert_eq!(refused.expect_err("smuggled").rule, "email");
        let mut big = request(&["a@example.com"]);
        big.body = "x".repeat(100);
        assert_eq!(broker.decide(Some(&section), &big, t0).expect_err("too big").rule, "email.max_bytes");
        if !root {
            // The file is this user's, not root's: refused for the password's sake.
            let refused = broker.decide(Some(&section), &request(&["a@example.com"]), t0);
            assert_eq!(refused.expect_err("not root's").rule, "email.config");
            return;
        }
        let job = broker.decide(Some(&section), &request(&["boss@example.org"]), t0).expect("allowed");
        assert_eq!(job.rule, "email.recipients[1]");
        broker.decide(Some(&section), &request(&["a@example.com"]), t0).expect("second");
        let capped =
            broker.decide(Some(&section), &request(&["a@example.com"]), t0 + Duration::from_mins(59));
        let capped = capped.expect_err("third in the hour");
        assert_eq!(capped.rule, "email.per_hour");
        assert!(capped.reason.contains("next may go in 61 s"), "{}", capped.reason);
        broker.decide(Some(&section), &request(&["a@example.com"]), t0 + HOUR).expect("a new hour");

        std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o640))
            .expect("chmod");
        let refused = broker.decide(Some(&section), &request(&["a@example.com"]), t0 + HOUR * 3);
        assert_eq!(refused.expect_err("group-readable").rule, "email.config");
    }
}
