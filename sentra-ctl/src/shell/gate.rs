//! The gate every line passes: policy verdict, rate limit, audit record, denial message. Shared by
//! `sentra-shell` and the `sentra` REPL.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    rc::Rc,
    time::{Duration, Instant},
};

use sentra_common::event::Decision as Verdict;
use serde_json::json;

use super::{
    evaluate::{Evaluator, LineVerdict},
    exec::Shells,
    identity::SystemPrograms,
    ratelimit::{self, Admission},
};
use crate::{
    audit::{self, AuditError, AuditLog, Record, ShellSession},
    policy::{
        Policy, PolicyError,
        exec::LazyExecFiles,
        model::{Mode, RateLimit},
        shell::ShellMatcher,
    },
};

/// Default policy path (the original's).
pub const DEFAULT_POLICY: &str = "/etc/sentra/policy.yaml";
/// Rule id of rate-limited commands (the original's).
pub const RULE_RATE_LIMIT: &str = "rate_limit";
/// Rule id of every command of an identity the policy's `governed.identities` does not list.
pub const RULE_IDENTITY_NOT_GOVERNED: &str = "identity_not_governed";
/// Rule id of input that cannot be judged at all (not UTF-8): refused in every mode.
pub const RULE_UNREADABLE: &str = "unreadable_input";

/// Why the gate cannot open: the command is refused (fail closed).
#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// Where the policy and log are, and who runs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub policy: PathBuf,
    /// The policy was not named by a flag (it came from `$SENTRA_POLICY` or is the default): it must
    /// then be owned by root and writable by no one else, because the agent can set environment
    /// variables (`OpenClaw`'s exec tool takes an `env` parameter) and must not choose its own policy.
    pub policy_must_be_root_owned: bool,
    pub log: PathBuf,
    /// The OS user running this process (looked up once: each lookup reads NSS configuration).
    pub user: String,
    pub identity: String,
    /// `--mode audit` overrides the policy's mode.
    pub mode: Option<Mode>,
    pub session_id: String,
}

impl Settings {
    /// Resolves each setting from its flag, else its environment variable, else the default.
    #[must_use]
    pub fn resolve(policy: Option<PathBuf>, log: Option<PathBuf>, identity: Option<String>) -> Self {
        let env_path = |key: &str| std::env::var_os(key).filter(|v| !v.is_empty()).map(PathBuf::from);
        let user = os_user();
        let policy_must_be_root_owned = policy.is_none();
        Self {
            policy: policy.or_else(|| env_path("SENTRA_POLICY")).unwrap_or_else(|| DEFAULT_POLICY.into()),
            policy_must_be_root_owned,
            log: log
                .or_else(|| env_path("SENTRA_AUDIT_LOG"))
                .unwrap_or_else(|| audit::DEFAULT_AUDIT_LOG.into()),
            identity: identity
                .or_else(|| std::env::var("SENTRA_IDENTITY").ok().filter(|v| !v.is_empty()))
                .unwrap_or_else(|| user.clone()),
            user,
            mode: None,
            session_id: std::env::var("SENTRA_SESSION_ID")
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(new_session_id),
        }
    }
}

/// The OS user running this process.
#[must_use]
pub fn os_user() -> String {
    let uid = nix::unistd::getuid();
    nix::unistd::User::from_uid(uid).ok().flatten().map_or_else(|| uid.to_string(), |user| user.name)
}

fn new_session_id() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("{:08x}-{:x}", std::process::id(), nanos & 0xffff_ffff_ffff)
}

/// The decision on one line.
#[derive(Debug, Clone)]
pub struct Decision {
    pub verdict: LineVerdict,
    /// The same verdict kernel events carry (`allowed`, `denied` or `auditonly` in records).
    pub decision: Verdict,
    pub rule_id: String,
    pub reason: Option<String>,
    /// The part that decided, as written.
    pub part: Option<String>,
    pub executable: Option<String>,
    pub args: Vec<String>,
    pub rate_limited: Option<(u32, Duration)>,
    pub eval_duration: Duration,
}

impl Decision {
    /// Whether the line runs (allowed, or denied in audit mode).
    #[must_use]
    pub fn runs(&self) -> bool {
        self.decision != Verdict::Denied
    }
}

/// Where a shell's records go.
pub enum Sink {
    /// Its own log file (a shell outside a deployment, as the original Sentra's).
    File(AuditLog),
    /// The controller, which writes them in its log (a launched agent's shell).
    Controller(ControllerLog),
}

impl Sink {
    fn write(&mut self, record: &Record) -> Result<(), AuditError> {
        match self {
            Self::File(log) => log.write(record),
            Self::Controller(controller) => controller.write(record),
        }
    }

    #[must_use]
    pub const fn is_controller(&self) -> bool {
        matches!(self, Self::Controller(_))
    }
}

/// The controller's records socket, as a launched agent sees it.
pub struct ControllerLog {
    path: PathBuf,
    stream: std::os::unix::net::UnixStream,
    /// The policy the controller enforces.
    pub greeting: crate::controller::protocol::Greeting,
}

impl ControllerLog {
    /// The records socket at its fixed place in a launched agent's mount namespace, when this
    /// process may be governed (its cgroup is below `/sentra/`, or it is in a cgroup namespace, where
    /// its cgroup reads `/`). `None`: no controller here (a shell outside a deployment).
    fn find() -> Option<Result<Self, AuditError>> {
        let path = PathBuf::from(crate::controller::protocol::AGENT_RECORDS_SOCKET);
        let own = crate::cgroup::own_cgroup()?;
        let governed = own == "/" || crate::cgroup::is_governed_path(&own);
        if !governed || std::fs::symlink_metadata(&path).is_err() {
            return None;
        }
        Some(Self::connect(&path, Duration::from_secs(2)))
    }

    /// Connects to the records socket at `path` and reads the controller's greeting; each read may
    /// take up to `deadline`.
    ///
    /// # Errors
    /// No controller answers there, or its greeting is not one.
    pub fn connect(path: &Path, deadline: Duration) -> Result<Self, AuditError> {
        use std::io::BufRead as _;
        let io = |source| AuditError::Io { path: path.to_path_buf(), source };
        let stream = std::os::unix::net::UnixStream::connect(path).map_err(io)?;
        stream.set_read_timeout(Some(deadline)).map_err(io)?;
        let mut line = String::new();
        std::io::BufReader::new(&stream).read_line(&mut line).map_err(io)?;
        let greeting = serde_json::from_str(&line).map_err(|e| io(std::io::Error::other(e)))?;
        Ok(Self { path: path.to_path_buf(), stream, greeting })
    }

    /// Sends one question line and reads the controller's one-line answer.
    ///
    /// # Errors
    /// The controller broke off, or its answer is not a `T`.
    pub fn ask<T: serde::de::DeserializeOwned>(&self, question: &serde_json::Value) -> Result<T, AuditError> {
        use std::io::{BufRead as _, Write as _};
        let io = |source| AuditError::Io { path: self.path.clone(), source };
        let mut request = serde_json::to_vec(question).map_err(|e| io(std::io::Error::other(e)))?;
        request.push(b'\n');
        (&self.stream).write_all(&request).map_err(io)?;
        let mut answer = String::new();
        std::io::BufReader::new(&self.stream).read_line(&mut answer).map_err(io)?;
        serde_json::from_str(&answer).map_err(|e| io(std::io::Error::other(e)))
    }

    /// Asks the controller for one command from this shell's budget (the controller's, per cgroup and
    /// uid under the enforced policy: the agent can neither reset nor rename it).
    fn admit(&self) -> Result<Admission, AuditError> {
        let admitted: crate::controller::protocol::Admitted =
            self.ask(&serde_json::json!({ crate::controller::protocol::ADMIT_KEY: true }))?;
        Ok(if admitted.admitted {
            Admission::Admitted { used: admitted.used }
        } else {
            Admission::Limited {
                used: admitted.used,
                retry_after: Duration::from_millis(admitted.retry_after_ms),
            }
        })
    }

    /// Asks the controller for the kernel's exec denials in this shell's cgroup since `since`
    /// (`CLOCK_BOOTTIME` ns).
    fn denials_since(&self, since: u64) -> Result<Vec<crate::record::KernelDenial>, AuditError> {
        let answer: crate::controller::protocol::Denials =
            self.ask(&serde_json::json!({ crate::controller::protocol::DENIALS_KEY: since }))?;
        Ok(answer.denials)
    }

    fn write(&mut self, record: &Record) -> Result<(), AuditError> {
        use std::io::Write as _;
        let io = |source| AuditError::Io { path: self.path.clone(), source };
        let mut line = serde_json::to_vec(record).map_err(|e| io(std::io::Error::other(e)))?;
        line.push(b'\n');
        self.stream.write_all(&line).map_err(io)
    }
}

/// `CLOCK_BOOTTIME` in nanoseconds: the clock of the kernel's events (`bpf_ktime_get_boot_ns`).
#[must_use]
pub fn boot_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).map_or(0, |t| {
        u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec()).unwrap_or(0)
    })
}

/// What the agent is told of the kernel's exec denials inside a command it ran: the file, the rule
/// and the reason, as the shell layer's own denials say them.
#[must_use]
pub fn kernel_denial_message(denials: &[crate::record::KernelDenial]) -> String {
    use std::fmt::Write as _;
    let mut message = String::new();
    for denial in denials {
        let how = if denial.backend == "signal" { " (the process was killed)" } else { "" };
        let _ = write!(
            message,
            "[X] DENIED (kernel): {}{how}\n    Rule: {}\n    Reason: {}\n",
            denial.file,
            denial.rule_id,
            denial.reason.as_deref().unwrap_or("denied by the exec policy")
        );
    }
    message
}

/// Policy, matcher, log and session of a shell.
pub struct Gate {
    pub settings: Settings,
    pub policy: Rc<Policy>,
    pub matcher: ShellMatcher,
    /// The policy's exec entries: the file each program will be is judged as the kernel judges it.
    pub files: LazyExecFiles,
    /// The system programs, to tell what a copy or hard link of one is (scanned when first needed).
    pub programs: SystemPrograms,
    /// Inherited variables that make programs run code (judged on every line).
    pub inherited: Vec<(String, String)>,
    pub log: Sink,
    pub shells: Shells,
    pub host: String,
    pub kernel_enforced: bool,
    /// This shell's process, as its records name it (the controller, when it writes them, names the
    /// connected process itself instead of trusting these).
    pub process: (crate::audit::Task, Option<u64>),
    pub executed: u64,
    pub denied: u64,
}

impl Gate {
    /// Loads the policy and opens the audit log.
    ///
    /// # Errors
    /// The policy is unusable or the audit log cannot be opened: nothing may run.
    pub fn open(mut settings: Settings) -> Result<Self, GateError> {
        let controller = match ControllerLog::find() {
            Some(Ok(controller)) => {
                // Inside a launched agent: the controller's policy and log, whatever flags and
                // environment (the agent's to set) said.
                settings.policy.clone_from(&controller.greeting.policy);
                settings.policy_must_be_root_owned = true;
                settings.log = PathBuf::from(format!("controller:{}", controller.path.display()));
                Some(controller)
            }
            Some(Err(err)) => return Err(GateError::Audit(err)),
            None => None,
        };
        if settings.policy_must_be_root_owned {
            crate::policy::check_file_safety(&settings.policy)?;
        }
        let policy = Policy::load(&settings.policy)?;
        let matcher = ShellMatcher::new(&policy)?;
        let policy = Rc::new(policy);
        let files = LazyExecFiles::new(Rc::clone(&policy));
        let log = match controller {
            Some(controller) => Sink::Controller(controller),
            None => Sink::File(AuditLog::open(&settings.log)?),
        };
        let kernel_enforced = crate::cgroup::in_governed_cgroup() || log.is_controller();
        Ok(Self {
            settings,
            policy,
            matcher,
            files,
            programs: SystemPrograms::default(),
            inherited: Evaluator::inherited_from(std::env::vars()),
            log,
            shells: Shells::find(),
            host: nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default(),
            kernel_enforced,
            process: (
                crate::audit::Task::from_proc(std::process::id()),
                crate::cgroup::id_of(std::process::id()),
            ),
            executed: 0,
            denied: 0,
        })
    }

    #[must_use]
    pub fn mode(&self) -> Mode {
        self.settings.mode.unwrap_or_else(|| self.matcher.mode())
    }

    #[must_use]
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.policy.model.rate_limit
    }

    /// The shared rate-limit state file of this identity, next to the audit log unless
    /// `SENTRA_STATE_DIR` says otherwise (a shell writing through the controller keeps none: the
    /// controller counts).
    #[must_use]
    pub fn rate_state(&self) -> PathBuf {
        let beside_log = || self.settings.log.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let dir = std::env::var_os("SENTRA_STATE_DIR")
            .filter(|v| !v.is_empty())
            .map_or_else(beside_log, PathBuf::from);
        ratelimit::state_path(&dir, &self.settings.identity)
    }

    /// A refusal of input that cannot be judged (`rule_id`, `reason`): denied in audit mode too,
    /// since nothing says what it would run.
    #[must_use]
    pub fn refusal(rule_id: &str, reason: String) -> Decision {
        Decision {
            verdict: LineVerdict::default(),
            decision: Verdict::Denied,
            rule_id: rule_id.to_string(),
            reason: Some(reason),
            part: None,
            executable: None,
            args: Vec::new(),
            rate_limited: None,
            eval_duration: Duration::ZERO,
        }
    }

    /// Judges `line`; with `count`, an allowed line also takes one command from the rate limit.
    #[must_use]
    pub fn decide(&self, line: &str, cwd: &Path, path: Option<String>, count: bool) -> Decision {
        let start = Instant::now();
        let evaluator = Evaluator {
            matcher: &self.matcher,
            identity: self.settings.identity.clone(),
            cwd: cwd.to_path_buf(),
            path,
            files: Some(&self.files),
            programs: &self.programs,
            inherited: &self.inherited,
        };
        let verdict = evaluator.evaluate(line);
        let eval_duration = start.elapsed();
        let audit_mode = self.mode() == Mode::Audit;
        let part = verdict.deciding().cloned();
        let mut decision = Decision {
            decision: match (verdict.denied().is_some(), audit_mode) {
                (false, _) => Verdict::Allowed,
                (true, false) => Verdict::Denied,
                (true, true) => Verdict::AuditDenied,
            },
            rule_id: part.as_ref().map_or_else(|| "none".to_string(), |p| p.rule_id.clone()),
            reason: part.as_ref().and_then(|p| p.reason.clone()),
            part: part.as_ref().map(|p| p.text.clone()),
            executable: part.as_ref().map(|p| p.executable.clone()).filter(|e| !e.is_empty()),
            args: part.map(|p| p.args).unwrap_or_default(),
            verdict,
            rate_limited: None,
            eval_duration,
        };
        let governed = &self.policy.model.governed;
        if !governed.admits(&self.settings.identity) {
            decision.decision = if audit_mode { Verdict::AuditDenied } else { Verdict::Denied };
            decision.rule_id = RULE_IDENTITY_NOT_GOVERNED.to_string();
            decision.reason = Some(format!(
                "identity `{}` is not among the identities this policy governs ({}): nothing runs under it",
                self.settings.identity,
                governed.identities.join(", ")
            ));
            decision.part = None;
        }
        if let (true, Some(limit)) = (count && decision.runs(), self.rate_limit()) {
            let admission = match &self.log {
                Sink::Controller(controller) => controller.admit().map_err(|e| crate::describe(&e)),
                Sink::File(_) => ratelimit::admit(&self.rate_state(), limit).map_err(|e| crate::describe(&e)),
            };
            let limited = match admission {
                Ok(Admission::Admitted { .. }) => None,
                Ok(Admission::Limited { used, retry_after }) => Some((
                    format!(
                        "rate limit exceeded: {used} of {} commands in {} s; retry in {} s",
                        limit.max_commands,
                        limit.window_seconds,
                        retry_after.as_secs().max(1)
                    ),
                    Some((used, retry_after)),
                )),
                // The limit cannot be checked: refuse rather than run unlimited.
                Err(err) => Some((format!("rate limit cannot be checked: {err}"), None)),
            };
            if let Some((reason, usage)) = limited {
                decision.decision = if audit_mode { Verdict::AuditDenied } else { Verdict::Denied };
                decision.rule_id = RULE_RATE_LIMIT.to_string();
                decision.reason = Some(reason);
                decision.part = None;
                decision.rate_limited = usage.or(Some((0, Duration::ZERO)));
            }
        }
        decision
    }

    /// The audit record of a line (after it ran, with its status).
    #[must_use]
    pub fn record(
        &self,
        line: &str,
        decision: &Decision,
        cwd: &Path,
        exit_code: Option<i32>,
        exec_duration: Option<Duration>,
        shell: Option<&Path>,
    ) -> Record {
        let parts: Vec<_> = decision
            .verdict
            .parts
            .iter()
            .map(|p| json!({"part": p.text, "executable": p.executable, "allowed": p.allowed, "rule_id": p.rule_id}))
            .collect();
        Record {
            timestamp: audit::now(),
            event: "exec".into(),
            layer: "shell",
            shell: Some(self.session()),
            action: Some("exec"),
            command: Some(line.to_string()),
            executable: decision.executable.clone(),
            args: Some(decision.args.clone()),
            cwd: Some(cwd.display().to_string()),
            decision: Some(decision.decision.as_str()),
            rule_id: Some(decision.rule_id.clone()),
            reason: decision.reason.clone(),
            mode: Some(self.mode().as_str()),
            exit_code,
            eval_duration_ms: Some(ms(decision.eval_duration)),
            exec_duration_ms: exec_duration.map(ms),
            kernel_enforced: Some(self.kernel_enforced),
            detail: Some(json!({
                "parts": parts,
                "shell": shell.map(|s| s.display().to_string()),
                "policy": self.settings.policy.display().to_string(),
            })),
            ..Record::default()
        }
    }

    /// The session fields of this shell's records.
    #[must_use]
    pub fn session(&self) -> ShellSession {
        ShellSession {
            session_id: self.settings.session_id.clone(),
            host: self.host.clone(),
            user: self.settings.user.clone(),
            identity: self.settings.identity.clone(),
        }
    }

    /// The kernel's exec denials in this shell's cgroup since `since` (see [`boot_ns`]), when its
    /// records go to a controller; nothing otherwise, or when the controller does not answer.
    #[must_use]
    pub fn kernel_denials(&self, since: u64) -> Vec<crate::record::KernelDenial> {
        match &self.log {
            Sink::Controller(controller) => controller.denials_since(since).unwrap_or_default(),
            Sink::File(_) => Vec::new(),
        }
    }

    /// Appends a record.
    ///
    /// # Errors
    /// The write fails.
    pub fn write(&mut self, record: &Record) -> Result<(), AuditError> {
        if record.task.is_some() {
            return self.log.write(record);
        }
        let mut record = record.clone();
        record.task = Some(self.process.0.clone());
        record.cgroup_id = record.cgroup_id.or(self.process.1);
        self.log.write(&record)
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// The message printed (on stderr) for a denied line; one line when `quiet`.
#[must_use]
pub fn denial_message(line: &str, decision: &Decision, quiet: bool) -> String {
    let reason = decision.reason.as_deref().unwrap_or("denied by policy");
    let line_shown = line.trim_end();
    if quiet {
        let part = decision
            .part
            .as_deref()
            .filter(|p| *p != line_shown)
            .map(|p| format!(" in `{p}`"))
            .unwrap_or_default();
        return format!("sentra: denied{part}: {reason} (rule {})\n", decision.rule_id);
    }
    if let Some((used, retry_after)) = decision.rate_limited {
        return format!(
            "[X] RATE LIMITED: {line_shown}\n    Rule:   {}\n    Reason: {reason}\n    Wait:   {} s (used {used})\n",
            decision.rule_id,
            retry_after.as_secs().max(1)
        );
    }
    let mut message = format!("[X] DENIED: {line_shown}\n");
    if let Some(part) = decision.part.as_deref().filter(|p| *p != line_shown) {
        let _ = writeln!(message, "    Part:   {part}");
    }
    let _ = writeln!(message, "    Rule:   {}\n    Reason: {reason}", decision.rule_id);
    message
}
