//! `sentra-ctl`: the Sentra controller.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sentra_ctl::{audit::DEFAULT_AUDIT_LOG, doctor, kernel::BackendChoice, run};

#[derive(Parser)]
#[command(name = "sentra-ctl", version, about = "Kernel-enforced command governance for AI agents")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a command in a governed cgroup until it exits; exits with its exit code.
    Run {
        #[arg(long)]
        policy: PathBuf,
        #[arg(long, default_value = DEFAULT_AUDIT_LOG)]
        audit_log: PathBuf,
        #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
        backend: BackendChoice,
        #[arg(trailing_var_arg = true, required = true, num_args = 1..)]
        command: Vec<String>,
    },
    /// Check the kernel prerequisites.
    Doctor {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy and summarise it; exit 0 if valid, 1 if not.
    Check { file: PathBuf },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SENTRA_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match real_main() {
        Ok(code) => std::process::ExitCode::from(u8::try_from(code.clamp(0, 255)).unwrap_or(255)),
        Err(err) => {
            eprintln!("sentra-ctl: {err:#}");
            std::process::ExitCode::from(1)
        }
    }
}

fn real_main() -> anyhow::Result<i32> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { policy, audit_log, backend, command } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(run::run(run::RunOptions { policy, audit_log, backend, command }))
        }
        Command::Doctor { json } => {
            let checks = doctor::run(true);
            if json {
                println!("{}", serde_json::to_string_pretty(&checks)?);
            } else {
                for c in &checks {
                    println!("[{}] {:<16} {}", if c.ok { "PASS" } else { "FAIL" }, c.name, c.detail);
                    if let Some(fix) = &c.fix {
                        println!("       {:<16} fix: {fix}", "");
                    }
                }
                let backend = if checks.iter().any(|c| c.name == "backend-lsm" && c.ok) {
                    "lsm"
                } else if checks.iter().any(|c| c.name == "backend-signal" && c.ok) {
                    "signal"
                } else {
                    "none"
                };
                println!("backend that `run` would choose: {backend}");
            }
            let essential = ["root", "btf", "cgroup2"];
            let usable = checks.iter().filter(|c| essential.contains(&c.name)).all(|c| c.ok)
                && checks.iter().any(|c| c.name.starts_with("backend-") && c.ok);
            Ok(i32::from(!usable))
        }
        Command::Policy { command: PolicyCommand::Check { file } } => match run::prepare_policy(&file) {
            Ok((policy, compiled)) => {
                println!("{}: valid", file.display());
                println!(
                    "  mode: {:?}, exec default: {}",
                    policy.model.mode,
                    compiled.default_effect().as_str()
                );
                println!(
                    "  shell rules: {}, exec rules: {} ({} name, {} dir, {} inode kernel entries)",
                    policy.model.rules.len(),
                    compiled.rules.len(),
                    compiled.name.len(),
                    compiled.dir.len(),
                    compiled.inode.len()
                );
                for w in policy.warnings.iter().chain(&compiled.warnings) {
                    println!("  warning: {}", w.message);
                }
                if !compiled.absent.is_empty() {
                    println!("  deny targets not present on this machine ({}):", compiled.absent.len());
                    for a in &compiled.absent {
                        println!("    {a}");
                    }
                }
                Ok(0)
            }
            Err(err) => {
                eprintln!("{err:#}");
                Ok(1)
            }
        },
    }
}
