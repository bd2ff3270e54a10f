//! Running lines: once (`sentra-shell -c`), or as a session that keeps the state a shell user expects
//! across lines (`cd`, exported variables) for the `sentra` REPL.

use std::{
    collections::BTreeMap,
    ffi::OsString,
    io::{Read as _, Seek as _, SeekFrom},
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    time::Instant,
};

use nix::sys::memfd::{MFdFlags, memfd_create};

use super::{
    exec::{self, Invocation},
    gate::{Decision, Gate, denial_message},
    parse,
};
use crate::audit::Record;

/// The descriptor on which a session line reports the shell's state back: the highest one dash's
/// redirections can name (single digit).
const STATE_FD: i32 = 9;

/// Errors that end a line without running it.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("refusing to run: cannot write the audit log")]
    Audit(#[from] crate::audit::AuditError),
    #[error("cannot start {shell}")]
    Spawn {
        shell: String,
        #[source]
        source: std::io::Error,
    },
    #[error("session state")]
    State(#[source] std::io::Error),
}

/// What happened to a line.
#[derive(Debug)]
pub enum Outcome {
    /// Ran, with this status.
    Ran {
        status: std::process::ExitStatus,
        decision: Decision,
    },
    Denied(Decision),
}

/// Options of a one-shot line.
#[derive(Debug, Default)]
pub struct Once<'a> {
    /// Shell options to pass on (`-e`, `-x`, `-o pipefail`…).
    pub options: &'a [String],
    pub arg0: Option<&'a str>,
    pub args: &'a [String],
    pub quiet: bool,
}

/// Refuses a line that cannot be judged (`shown`: how the record and the message show it), with an
/// audit record like any denial.
///
/// # Errors
/// The refusal could not be audited.
pub fn refuse_once(
    gate: &mut Gate,
    shown: &str,
    decision: Decision,
    quiet: bool,
) -> Result<Outcome, SessionError> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    gate.denied += 1;
    gate.write(&gate.record(shown, &decision, &cwd, Some(126), None, None))?;
    eprint!("{}", denial_message(shown, &decision, quiet));
    Ok(Outcome::Denied(decision))
}

/// Judges and runs one line in the current directory and environment (`sentra-shell -c`).
///
/// # Errors
/// The denial or the run could not be audited, or the shell could not start.
pub fn run_once(gate: &mut Gate, line: &str, once: &Once<'_>) -> Result<Outcome, SessionError> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let decision = gate.decide(line, &cwd, std::env::var("PATH").ok(), true);
    if !decision.runs() {
        gate.denied += 1;
        gate.write(&gate.record(line, &decision, &cwd, Some(126), None, None))?;
        eprint!("{}", denial_message(line, &decision, once.quiet));
        return Ok(Outcome::Denied(decision));
    }
    let shell = gate.shells.pick(decision.verdict.needs_bash).to_path_buf();
    let invocation =
        Invocation { shell: &shell, options: once.options, line, arg0: once.arg0, args: once.args };
    let start = Instant::now();
    let since = super::gate::boot_ns();
    let mut child = invocation
        .command()
        .and_then(|mut prepared| prepared.command.spawn())
        .map_err(|source| SessionError::Spawn { shell: shell.display().to_string(), source })?;
    let status = exec::wait_forwarding(&mut child)
        .map_err(|source| SessionError::Spawn { shell: shell.display().to_string(), source })?;
    tell_kernel_denials(gate, since);
    gate.executed += 1;
    let record = gate.record(
        line,
        &decision,
        &cwd,
        Some(exec::status_code(status)),
        Some(start.elapsed()),
        Some(&shell),
    );
    if let Err(err) = gate.write(&record) {
        // The line already ran; say loudly that its record is missing.
        eprintln!("sentra: audit log write failed after the command ran: {}", crate::describe(&err));
    }
    Ok(Outcome::Ran { status, decision })
}

/// Prints, after the command's own output, what the kernel refused inside it (asked of the controller,
/// which saw the denials), so that the agent reads the file, rule and reason instead of a bare
/// `Permission denied` or `Killed`.
fn tell_kernel_denials(gate: &Gate, since: u64) {
    let denials = gate.kernel_denials(since);
    if !denials.is_empty() {
        eprint!("{}", super::gate::kernel_denial_message(&denials));
    }
}

/// A REPL session: the shell state carried from line to line.
pub struct Session {
    pub gate: Gate,
    pub cwd: PathBuf,
    pub env: BTreeMap<OsString, OsString>,
    pub quiet: bool,
    pub verbose: bool,
}

impl Session {
    #[must_use]
    pub fn new(gate: Gate, quiet: bool, verbose: bool) -> Self {
        Self {
            gate,
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            env: std::env::vars_os().collect(),
            quiet,
            verbose,
        }
    }

    /// Writes a lifecycle record (`session_start`, `session_end`).
    ///
    /// # Errors
    /// The audit log cannot be written.
    pub fn lifecycle(&mut self, event: &str) -> Result<(), crate::audit::AuditError> {
        let record = Record {
            timestamp: crate::audit::now(),
            event: event.into(),
            layer: "shell",
            shell: Some(self.gate.session()),
            kernel_enforced: Some(self.gate.kernel_enforced),
            detail: Some(serde_json::json!({
                "policy_info": {
                    "file": self.gate.settings.policy.display().to_string(),
                    "rules": self.gate.matcher.rule_count(),
                    "hash": format!("{:016x}", self.gate.policy.hash),
                },
                "commands_executed": self.gate.executed,
                "commands_denied": self.gate.denied,
            })),
            ..Record::default()
        };
        self.gate.write(&record)
    }

    fn path_var(&self) -> Option<String> {
        self.env.get(&OsString::from("PATH")).map(|p| p.to_string_lossy().into_owned())
    }

    /// Judges a line without running it.
    #[must_use]
    pub fn check(&self, line: &str) -> Decision {
        self.gate.decide(line, &self.cwd, self.path_var(), false)
    }

    /// Judges and runs a line, then takes over the directory and exported variables it left.
    ///
    /// # Errors
    /// The line could not be audited or started.
    pub fn execute(&mut self, line: &str) -> Result<Outcome, SessionError> {
        let decision = self.gate.decide(line, &self.cwd, self.path_var(), true);
        if !decision.runs() {
            self.gate.denied += 1;
            self.gate.write(&self.gate.record(line, &decision, &self.cwd, Some(126), None, None))?;
            eprint!("{}", denial_message(line, &decision, self.quiet));
            return Ok(Outcome::Denied(decision));
        }
        if self.verbose {
            let tag = if decision.decision == sentra_common::event::Decision::AuditDenied {
                "[!] AUDIT"
            } else {
                "[+] ALLOWED"
            };
            eprintln!("{tag}: {} (rule {})", line.trim_end(), decision.rule_id);
        }
        let shell = self.gate.shells.pick(decision.verdict.needs_bash).to_path_buf();
        let state = memfd_create("sentra-state", MFdFlags::MFD_CLOEXEC)
            .map_err(|errno| SessionError::State(std::io::Error::from(errno)))?;
        // The trailer reports the state with builtins only (the kernel layer may allow no `env`).
        let script = format!(
            "{line}\n__sentra_rc=$?; {{ pwd; export -p; }} >&{STATE_FD} 2>/dev/null; exit $__sentra_rc\n"
        );
        let options: [String; 0] = [];
        let mut prepared =
            Invocation { shell: &shell, options: &options, line: &script, arg0: None, args: &[] }
                .command()
                .map_err(|source| SessionError::Spawn { shell: shell.display().to_string(), source })?;
        let command = &mut prepared.command;
        command.env_clear().envs(&self.env).current_dir(&self.cwd);
        let raw = state.as_raw_fd();
        // SAFETY: dup2 is async-signal-safe; it runs in the child between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(raw, STATE_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let start = Instant::now();
        let since = super::gate::boot_ns();
        let mut child = command
            .spawn()
            .map_err(|source| SessionError::Spawn { shell: shell.display().to_string(), source })?;
        let status = exec::wait_forwarding(&mut child)
            .map_err(|source| SessionError::Spawn { shell: shell.display().to_string(), source })?;
        tell_kernel_denials(&self.gate, since);
        self.gate.executed += 1;
        let record = self.gate.record(
            line,
            &decision,
            &self.cwd,
            Some(exec::status_code(status)),
            Some(start.elapsed()),
            Some(&shell),
        );
        if let Err(err) = self.gate.write(&record) {
            eprintln!("sentra: audit log write failed after the command ran: {}", crate::describe(&err));
        }
        let mut file = std::fs::File::from(state);
        let mut text = String::new();
        if file.seek(SeekFrom::Start(0)).is_ok() && file.read_to_string(&mut text).is_ok() {
            self.adopt(&text);
        }
        Ok(Outcome::Ran { status, decision })
    }

    /// Takes over `pwd` and `export -p` output (dash's `export NAME='v'` or bash's
    /// `declare -x NAME="v"`), parsed with the same shell parser.
    fn adopt(&mut self, text: &str) {
        let Some((pwd, exports)) = text.split_once('\n') else {
            return;
        };
        if pwd.starts_with('/') && Path::new(pwd).is_dir() {
            self.cwd = PathBuf::from(pwd);
        }
        let Ok(analysis) = parse::analyze(exports) else {
            return;
        };
        let mut env = BTreeMap::new();
        for command in &analysis.commands {
            for word in command.words.iter().skip(1) {
                if let Some((name, value)) = word.value.as_deref().and_then(|v| v.split_once('='))
                    && !name.starts_with('-')
                {
                    env.insert(OsString::from(name), OsString::from(value));
                }
            }
        }
        if !env.is_empty() {
            env.remove(&OsString::from("__sentra_rc"));
            self.env = env;
        }
    }
}
