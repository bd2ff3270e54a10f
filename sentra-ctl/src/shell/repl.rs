//! The interactive loop: prompt, line editing and history on a terminal, plain lines from a pipe
//! (`echo "cmd" | sentra --policy FILE`), built-ins `help`, `status`, `exit`, `quit`.

use std::io::{BufRead as _, IsTerminal as _};

use rustyline::{DefaultEditor, error::ReadlineError};

use super::{
    evaluate::is_incomplete,
    exec, ratelimit,
    session::{Outcome, Session, SessionError},
};
use crate::policy::model::Mode;

/// Errors that end the loop.
#[derive(Debug, thiserror::Error)]
pub enum ReplError {
    #[error("line editor")]
    Editor(#[from] ReadlineError),
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("refusing to run: cannot write the audit log")]
    Audit(#[from] crate::audit::AuditError),
    #[error("reading stdin")]
    Stdin(#[from] std::io::Error),
}

/// How the loop behaves.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Judge each line and print the verdict, run nothing.
    pub check: bool,
}

/// Where lines come from.
enum Input {
    Editor(Box<DefaultEditor>),
    Pipe(std::io::StdinLock<'static>),
}

impl Input {
    /// The next line; `Ok(None)` at end of input; `Err(Interrupted)` on Ctrl-C.
    fn read(&mut self, prompt: &str) -> Result<Option<String>, ReplError> {
        match self {
            Self::Editor(editor) => match editor.readline(prompt) {
                Ok(line) => Ok(Some(line)),
                Err(ReadlineError::Eof) => Ok(None),
                Err(err) => Err(err.into()),
            },
            Self::Pipe(stdin) => {
                let mut line = String::new();
                if stdin.read_line(&mut line)? == 0 {
                    return Ok(None);
                }
                if line.ends_with('\n') {
                    line.pop();
                }
                Ok(Some(line))
            }
        }
    }
}

/// Runs the loop until EOF, `exit` or `quit`; returns the exit status (the last command's, or in
/// check mode 1 when a line was denied).
///
/// # Errors
/// The audit log cannot be written, or input fails.
#[expect(clippy::too_many_lines, reason = "the loop reads as one sequence: read, continue, built-ins, run")]
pub fn run(session: &mut Session, options: Options) -> Result<i32, ReplError> {
    let terminal = std::io::stdin().is_terminal();
    let history = std::env::var_os("HOME").map(|home| std::path::PathBuf::from(home).join(".sentra_history"));
    let mut input = if terminal {
        let mut editor = DefaultEditor::new()?;
        if let Some(path) = &history {
            // A missing history file is the first session.
            let _ = editor.load_history(path);
        }
        Input::Editor(Box::new(editor))
    } else {
        Input::Pipe(std::io::stdin().lock())
    };
    if !options.check {
        session.lifecycle("session_start")?;
    }
    if terminal && !session.quiet {
        eprintln!(
            "Sentra shell: policy {} ({} rules, {} mode), identity {}. Type `help`.",
            session.gate.settings.policy.display(),
            session.gate.matcher.rule_count(),
            mode_name(session.gate.mode()),
            session.gate.settings.identity
        );
    }
    let mut status = 0;
    let mut any_denied = false;
    loop {
        let prompt = if session.quiet {
            "$ ".to_string()
        } else {
            format!("[sentra:{}]$ ", mode_name(session.gate.mode()))
        };
        let mut line = match input.read(&prompt) {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(ReplError::Editor(ReadlineError::Interrupted)) => continue,
            Err(err) => return Err(err),
        };
        // Quotes, `if`… left open continue on the next lines.
        while is_incomplete(&line) {
            match input.read("> ") {
                Ok(Some(more)) => {
                    line.push('\n');
                    line.push_str(&more);
                }
                Ok(None) => break,
                Err(ReplError::Editor(ReadlineError::Interrupted)) => {
                    line.clear();
                    break;
                }
                Err(err) => return Err(err),
            }
        }
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Input::Editor(editor) = &mut input {
            let _ = editor.add_history_entry(trimmed);
        }
        match trimmed {
            "exit" | "quit" => break,
            "help" => {
                print_help();
                continue;
            }
            "status" => {
                print_status(session);
                continue;
            }
            _ => {}
        }
        if let Some(code) = trimmed.strip_prefix("exit ").and_then(|c| c.trim().parse::<i32>().ok()) {
            status = code;
            break;
        }
        if options.check {
            let decision = session.check(&line);
            let denied = !decision.runs() || decision.decision == sentra_common::event::Decision::AuditDenied;
            any_denied |= denied;
            let verdict = if denied { "DENY" } else { "ALLOW" };
            let reason = decision.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default();
            println!("{verdict}\t{}\t{}{reason}", line.trim_end(), decision.rule_id);
            continue;
        }
        status = match session.execute(&line)? {
            Outcome::Ran { status, .. } => exec::status_code(status),
            Outcome::Denied(_) => 126,
        };
    }
    if let Input::Editor(editor) = &mut input
        && let Some(path) = &history
    {
        let _ = editor.save_history(path);
    }
    if options.check {
        return Ok(i32::from(any_denied));
    }
    session.lifecycle("session_end")?;
    if terminal && !session.quiet {
        eprintln!("Session ended: {} executed, {} denied.", session.gate.executed, session.gate.denied);
    }
    Ok(status)
}

const fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Enforce => "enforce",
        Mode::Audit => "audit",
    }
}

fn print_help() {
    println!(
        "Commands run through the policy; a denied line prints why.\n\
         Built-ins: help, status, exit, quit. `cd` and `export` carry over between lines.\n\
         Ctrl-C cancels the line, Ctrl-D ends the session."
    );
}

fn print_status(session: &Session) {
    let gate = &session.gate;
    println!("Session:    {}", gate.settings.session_id);
    println!("Identity:   {}", gate.settings.identity);
    println!(
        "Policy:     {} ({} rules, mode {}, default {}, hash {:016x})",
        gate.settings.policy.display(),
        gate.matcher.rule_count(),
        mode_name(gate.mode()),
        gate.matcher.default_effect().as_str(),
        gate.policy.hash
    );
    println!("Executed:   {}", gate.executed);
    println!("Denied:     {}", gate.denied);
    match gate.rate_limit() {
        Some(limit) if gate.log.is_controller() => println!(
            "Rate limit: {} in {} s (counted by the controller)",
            limit.max_commands, limit.window_seconds
        ),
        Some(limit) => println!(
            "Rate limit: {}/{} in {} s",
            ratelimit::usage(&gate.rate_state(), limit),
            limit.max_commands,
            limit.window_seconds
        ),
        None => println!("Rate limit: none"),
    }
    println!("Audit log:  {}", gate.settings.log.display());
    println!(
        "Kernel:     {}",
        if gate.kernel_enforced { "enforcing (governed cgroup)" } else { "not enforcing" }
    );
    println!("Directory:  {}", session.cwd.display());
}
