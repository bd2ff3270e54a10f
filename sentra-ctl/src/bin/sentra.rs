//! `sentra`: the policy-checked interactive shell (the original Sentra's REPL), and the documented way
//! to test a policy: `echo "cmd" | sentra --policy FILE`, or `--check` to judge without running.

use std::process::ExitCode;

use clap::Parser as _;
use sentra_ctl::{
    policy::{model::Mode, shell::ShellMatcher},
    shell::{
        cli::{Cli, CliMode},
        gate::{Gate, Settings},
        repl,
        session::Session,
    },
};

fn main() -> ExitCode {
    // `sentra python …`: the Python sandbox (see sentra_ctl::sandbox).
    if std::env::args_os().nth(1).is_some_and(|a| a == "python") {
        let code = sentra_ctl::sandbox::main(std::env::args_os().skip(1));
        return ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1));
    }
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
