//! `sentra-shell`: a drop-in `SHELL` for `OpenClaw`. Every line is parsed, each program it can run is
//! judged by the policy, and an approved line runs with `/bin/sh` (or bash for bash syntax); a denied
//! line exits 126 with the denial on stderr. The exit status is the command's.
//!
//! Arguments are parsed by hand, like a shell's: `-c CMD [ARG0 ARGS…]`, `-lc`, `-l -c`, `-i`, `-s`,
//! a script file, or commands on stdin; `-e`, `-x`, `-o NAME`… are passed on to the real shell.
//! It never reads `$SHELL` (`OpenClaw` removes it).

use std::{
    ffi::OsString,
    io::{IsTerminal as _, Read as _},
    path::PathBuf,
    process::ExitCode,
};

use sentra_ctl::shell::{
    exec,
    gate::{Gate, RULE_UNREADABLE, Settings},
    session::{self, Once, Outcome},
};

/// Status of a refused command (as a shell reports "cannot execute").
const DENIED: u8 = 126;

#[derive(Debug, Default)]
#[expect(clippy::struct_excessive_bools, reason = "one flag per shell option, as sh has")]
struct Args {
    policy: Option<PathBuf>,
    log: Option<PathBuf>,
    identity: Option<String>,
    quiet: bool,
    command: bool,
    interactive: bool,
    stdin: bool,
    /// Options passed on to the real shell.
    options: Vec<String>,
    /// Operands: the command text (with `-c`) or script, then `$0` and arguments, as given: they are
    /// checked for UTF-8 once the audit log is open, so that a refusal is recorded.
    operands: Vec<OsString>,
}

fn parse_args(raw: impl Iterator<Item = OsString>) -> Result<Args, String> {
    let mut args =
        Args { quiet: std::env::var_os("SENTRA_QUIET").is_some_and(|v| v == "1"), ..Args::default() };
    let mut raw = raw.peekable();
    let text = |arg: OsString| {
        arg.into_string().map_err(|arg| format!("option {} is not valid UTF-8", arg.to_string_lossy()))
    };
    while let Some(os_arg) = raw.next() {
        // An operand is kept as given; everything before the first one is an option, which is text.
        if !os_arg.to_string_lossy().starts_with(['-', '+']) || os_arg == "-" {
            args.operands.push(os_arg);
            args.operands.extend(raw.by_ref());
            break;
        }
        let arg = text(os_arg)?;
        let mut value = |name: &str, inline: Option<&str>| {
            inline
                .map(str::to_string)
                .map(Ok)
                .or_else(|| raw.next().map(text))
                .unwrap_or_else(|| Err(format!("{name} needs a value")))
        };
        let (name, inline) = arg.split_once('=').map_or((arg.as_str(), None), |(n, v)| (n, Some(v)));
        match name {
            "--policy" => args.policy = Some(value(name, inline)?.into()),
            "--log" => args.log = Some(value(name, inline)?.into()),
            "--identity" => args.identity = Some(value(name, inline)?),
            "--quiet" => args.quiet = true,
            "--version" => return Err(format!("sentra-shell {}", env!("CARGO_PKG_VERSION"))),
            "--help" => return Err(USAGE.to_string()),
            // Login and startup-file options: a login environment is the caller's.
            "--login" | "--noprofile" | "--norc" | "--posix" | "--noediting" => {}
            "--" => {
                args.operands.extend(raw.by_ref());
                break;
            }
            "-o" | "+o" => {
                let option = text(raw.next().ok_or("-o needs an option name")?)?;
                args.options.extend([arg.clone(), option]);
            }
            _ if (arg.starts_with('-') || arg.starts_with('+'))
                && arg.len() > 1
                && !arg.starts_with("--") =>
            {
                let sign = &arg[..1];
                for flag in arg[1..].chars() {
                    match flag {
                        'c' if sign == "-" => args.command = true,
                        'i' if sign == "-" => args.interactive = true,
                        's' if sign == "-" => args.stdin = true,
                        'l' => {}
                        'o' => {
                            let option = text(raw.next().ok_or("-o needs an option name")?)?;
                            args.options.extend([format!("{sign}o"), option]);
                        }
                        _ if flag.is_ascii_alphabetic() => args.options.push(format!("{sign}{flag}")),
                        _ => return Err(format!("unknown option {sign}{flag}")),
                    }
                }
            }
            _ => return Err(format!("unknown option {arg}")),
        }
    }
    Ok(args)
}

const USAGE: &str = "usage: sentra-shell [--policy FILE] [--log FILE] [--identity NAME] [--quiet] \
[-e|-x|-o OPT…] (-c COMMAND [ARG0 [ARG…]] | -s [ARG…] | -i | SCRIPT [ARG…])
Policy: --policy, else $SENTRA_POLICY, else /etc/sentra/policy.yaml.
Audit log: --log, else $SENTRA_AUDIT_LOG, else /var/log/sentra/audit.jsonl.";

fn main() -> ExitCode {
    let args = match parse_args(std::env::args_os().skip(1)) {
        Ok(args) => args,
        Err(message) if message.starts_with("sentra-shell ") || message.starts_with("usage:") => {
            println!("{message}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("sentra-shell: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let settings = Settings::resolve(args.policy.clone(), args.log.clone(), args.identity.clone());
    let gate = match Gate::open(settings) {
        Ok(gate) => gate,
        Err(err) => {
            eprintln!("sentra-shell: refusing to run: {}", sentra_ctl::describe(&err));
            return ExitCode::from(DENIED);
        }
    };
    let mut gate = gate;
    let read = match input(&args) {
        Ok(Input::Repl) => return repl(gate, args.quiet),
        Ok(Input::Line { line, dollar0, rest }) => (line, dollar0, rest),
        Err(Failure::Usage(message, code)) => {
            eprintln!("sentra-shell: {message}");
            return ExitCode::from(code);
        }
        Err(Failure::Unreadable { shown, what }) => {
            let reason = format!("{what} is not valid UTF-8: it cannot be judged, so it does not run");
            let decision = Gate::refusal(RULE_UNREADABLE, reason);
            if let Err(err) = session::refuse_once(&mut gate, &shown, decision, args.quiet) {
                eprintln!("sentra-shell: {}", sentra_ctl::describe(&err));
            }
            return ExitCode::from(DENIED);
        }
    };
    let (line, dollar0, rest) = read;
    let once = Once { options: &args.options, arg0: dollar0.as_deref(), args: &rest, quiet: args.quiet };
    match session::run_once(&mut gate, &line, &once) {
        Ok(Outcome::Ran { status, .. }) => exec::exit_like(status),
        Ok(Outcome::Denied(_)) => ExitCode::from(DENIED),
        Err(err) => {
            eprintln!("sentra-shell: {}", sentra_ctl::describe(&err));
            ExitCode::from(DENIED)
        }
    }
}

/// What to judge and run.
enum Input {
    Line { line: String, dollar0: Option<String>, rest: Vec<String> },
    Repl,
}

enum Failure {
    /// A usage or I/O error, with its exit status.
    Usage(String, u8),
    /// Input that is not UTF-8: `shown` is how records show it, `what` names it.
    Unreadable { shown: String, what: &'static str },
}

/// The line (`-c`, a script file or stdin), `$0` and the arguments, all checked to be UTF-8.
fn input(args: &Args) -> Result<Input, Failure> {
    let unreadable =
        |bytes: &[u8], what| Failure::Unreadable { shown: String::from_utf8_lossy(bytes).into_owned(), what };
    let text = |arg: &OsString, what| {
        arg.to_str().map(str::to_string).ok_or_else(|| unreadable(arg.as_encoded_bytes(), what))
    };
    let texts =
        |rest: &[OsString]| rest.iter().map(|a| text(a, "an argument")).collect::<Result<Vec<_>, _>>();
    if args.command {
        let Some((line, rest)) = args.operands.split_first() else {
            return Err(Failure::Usage("-c: option requires an argument".into(), 2));
        };
        let line = text(line, "the command")?;
        let (dollar0, rest) = match rest.split_first() {
            Some((dollar0, rest)) => (Some(text(dollar0, "$0")?), texts(rest)?),
            None => (None, Vec::new()),
        };
        return Ok(Input::Line { line, dollar0, rest });
    }
    if !args.stdin
        && let Some((script, rest)) = args.operands.split_first()
    {
        let bytes = std::fs::read(script)
            .map_err(|err| Failure::Usage(format!("{}: {err}", script.to_string_lossy()), 127))?;
        let line = String::from_utf8(bytes).map_err(|err| unreadable(err.as_bytes(), "the script"))?;
        return Ok(Input::Line { line, dollar0: Some(text(script, "the script name")?), rest: texts(rest)? });
    }
    if args.interactive || (!args.stdin && std::io::stdin().is_terminal()) {
        return Ok(Input::Repl);
    }
    // Commands on stdin are read whole, judged as one script, then run.
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .map_err(|err| Failure::Usage(format!("cannot read commands from stdin: {err}"), 2))?;
    let line = String::from_utf8(bytes).map_err(|err| unreadable(err.as_bytes(), "the input"))?;
    Ok(Input::Line { line, dollar0: Some("sentra-shell".into()), rest: texts(&args.operands)? })
}

/// `sentra-shell -i`: the same session as the `sentra` REPL.
fn repl(gate: Gate, quiet: bool) -> ExitCode {
    let mut session = session::Session::new(gate, quiet, false);
    match sentra_ctl::shell::repl::run(&mut session, sentra_ctl::shell::repl::Options::default()) {
        Ok(code) => ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1)),
        Err(err) => {
            eprintln!("sentra-shell: {}", sentra_ctl::describe(&err));
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Args {
        parse_args(args.iter().map(OsString::from)).expect("valid")
    }

    #[test]
    fn shell_invocations() {
        let a = parse(&["-lc", "ls -l"]);
        assert!(a.command && a.options.is_empty());
        assert_eq!(a.operands, ["ls -l"]);
        let a = parse(&["-l", "-c", "echo $0 $1", "zero", "one"]);
        assert_eq!(a.operands, ["echo $0 $1", "zero", "one"]);
        let a = parse(&["--policy", "p.yaml", "-e", "-o", "pipefail", "-c", "x"]);
        assert_eq!(a.policy, Some(PathBuf::from("p.yaml")));
        assert_eq!(a.options, ["-e", "-o", "pipefail"]);
        let a = parse(&["script.sh", "-c"]);
        assert!(!a.command);
        assert_eq!(a.operands, ["script.sh", "-c"]);
        assert!(parse(&["-i"]).interactive);
    }
}
