//! `sentra-shell`: a drop-in `SHELL` for `OpenClaw`. Every line is parsed, each program it can run is
//! judged by the policy, and an approved line runs with `/bin/sh` (or bash for bash syntax); a denied
//! line exits 126 with the denial on stderr. The exit status is the command's.
//!
//! Arguments are parsed by hand, like a shell's: `-c CMD [ARG0 ARGS…]`, `-lc`, `-l -c`, `-i`, `-s`,
//! a script file, or commands on stdin; `-e`, `-x`, `-o NAME`… are passed on to the real shell.
//! It never reads `$SHELL` (`OpenClaw` removes it).

use std::{
    io::{IsTerminal as _, Read as _},
    path::PathBuf,
    process::ExitCode,
};

use sentra_ctl::shell::{
    exec,
    gate::{Gate, Settings},
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
    /// Operands: the command text (with `-c`) or script, then `$0` and arguments.
    operands: Vec<String>,
}

fn parse_args(raw: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args =
        Args { quiet: std::env::var_os("SENTRA_QUIET").is_some_and(|v| v == "1"), ..Args::default() };
    let mut raw = raw.peekable();
    while let Some(arg) = raw.next() {
        let mut value = |name: &str, inline: Option<&str>| {
            inline.map(str::to_string).or_else(|| raw.next()).ok_or_else(|| format!("{name} needs a value"))
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
                let option = raw.next().ok_or("-o needs an option name")?;
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
                            let option = raw.next().ok_or("-o needs an option name")?;
                            args.options.extend([format!("{sign}o"), option]);
                        }
                        _ if flag.is_ascii_alphabetic() => args.options.push(format!("{sign}{flag}")),
                        _ => return Err(format!("unknown option {sign}{flag}")),
                    }
                }
            }
            _ if arg.starts_with("--") => return Err(format!("unknown option {arg}")),
            _ => {
                args.operands.push(arg);
                args.operands.extend(raw.by_ref());
                break;
            }
        }
    }
    Ok(args)
}

const USAGE: &str = "usage: sentra-shell [--policy FILE] [--log FILE] [--identity NAME] [--quiet] \
[-e|-x|-o OPT…] (-c COMMAND [ARG0 [ARG…]] | -s [ARG…] | -i | SCRIPT [ARG…])
Policy: --policy, else $SENTRA_POLICY, else /etc/sentra/policy.yaml.
Audit log: --log, else $SENTRA_AUDIT_LOG, else /var/log/sentra/audit.jsonl.";

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
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
    let (line, dollar0, rest): (String, Option<String>, Vec<String>) = if args.command {
        let mut operands = args.operands.into_iter();
        let Some(line) = operands.next() else {
            eprintln!("sentra-shell: -c: option requires an argument");
            return ExitCode::from(2);
        };
        let dollar0 = operands.next();
        (line, dollar0, operands.collect())
    } else if !args.stdin && !args.operands.is_empty() {
        let mut operands = args.operands.into_iter();
        let script = operands.next().unwrap_or_default();
        match std::fs::read_to_string(&script) {
            Ok(text) => (text, Some(script), operands.collect()),
            Err(err) => {
                eprintln!("sentra-shell: {script}: {err}");
                return ExitCode::from(127);
            }
        }
    } else if args.interactive || (!args.stdin && std::io::stdin().is_terminal()) {
        return repl(gate, args.quiet);
    } else {
        // Commands on stdin are read whole, judged as one script, then run.
        let mut text = String::new();
        if let Err(err) = std::io::stdin().read_to_string(&mut text) {
            eprintln!("sentra-shell: cannot read commands from stdin: {err}");
            return ExitCode::from(2);
        }
        (text, Some("sentra-shell".to_string()), args.operands)
    };
    let mut gate = gate;
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
        parse_args(args.iter().map(ToString::to_string)).expect("valid")
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
