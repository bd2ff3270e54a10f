//! `sentra`: the policy-checked interactive shell (the original Sentra's REPL), and the documented way
//! to test a policy: `echo "cmd" | sentra --policy FILE`, or `--check` to judge without running.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, ValueEnum};
use sentra_ctl::{
    policy::{model::Mode, shell::ShellMatcher},
    shell::{
        gate::{Gate, Settings},
        repl,
        session::Session,
    },
};

#[derive(Parser)]
#[command(
    name = "sentra",
    version,
    about = "Policy-checked shell: every program a line can run is judged first"
)]
#[expect(clippy::doc_markdown, reason = "doc comments are the --help text")]
struct Cli {
    /// Policy file (default: $SENTRA_POLICY, else /etc/sentra/policy.yaml).
    #[arg(short, long)]
    policy: Option<PathBuf>,
    /// Audit log, JSONL (default: $SENTRA_AUDIT_LOG, else /var/log/sentra/audit.jsonl).
    #[arg(short, long)]
    log: Option<PathBuf>,
    /// Override the policy's mode; `audit` records what would be denied and runs it.
    #[arg(short, long, value_enum)]
    mode: Option<CliMode>,
    /// Identity matched by rules and rate-limited (default: $SENTRA_IDENTITY, else the OS user).
    #[arg(short, long)]
    identity: Option<String>,
    /// Print a line for every allowed command.
    #[arg(short, long)]
    verbose: bool,
    /// No banner, status lines or summary; prompt `$ `; one-line denials.
    #[arg(short, long)]
    quiet: bool,
    /// Judge each line and print ALLOW/DENY, rule and reason; run nothing (exit 1 if any is denied).
    #[arg(long)]
    check: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum CliMode {
    Enforce,
    Audit,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut settings = Settings::resolve(cli.policy, cli.log, cli.identity);
    settings.mode = cli.mode.map(|mode| match mode {
        CliMode::Enforce => Mode::Enforce,
        CliMode::Audit => Mode::Audit,
    });
    let gate = match Gate::open(settings) {
        Ok(gate) => gate,
        Err(err) => {
            eprintln!("sentra: refusing to run: {}", sentra_ctl::describe(&err));
            return ExitCode::from(126);
        }
    };
    // Startup cost matters less here than in sentra-shell: report every invalid regex up front.
    if let Err(err) = ShellMatcher::validate(&gate.policy) {
        eprintln!("sentra: refusing to run: {}", sentra_ctl::describe(&err));
        return ExitCode::from(126);
    }
    if cli.verbose {
        for warning in &gate.policy.warnings {
            eprintln!("sentra: warning: {}", warning.message);
        }
    }
    let mut session = Session::new(gate, cli.quiet, cli.verbose);
    match repl::run(&mut session, repl::Options { check: cli.check }) {
        Ok(code) => ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1)),
        Err(err) => {
            eprintln!("sentra: {}", sentra_ctl::describe(&err));
            ExitCode::from(1)
        }
    }
}
