//! `sentra-ctl`: the Sentra controller.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sentra_ctl::{audit::DEFAULT_AUDIT_LOG, controller, doctor, kernel::BackendChoice, run};

/// Sends a request to the controller, prints its answer as JSON; exit 0 on success, 1 if refused.
fn answer(request: &controller::protocol::Request) -> anyhow::Result<i32> {
    let response = controller::client::send(request)?;
    if response.ok {
        println!("{}", serde_json::to_string_pretty(&response.body.unwrap_or_default())?);
        Ok(0)
    } else {
        eprintln!("sentra-ctl: {}", response.error.unwrap_or_default());
        Ok(1)
    }
}

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
    /// Run the controller: pin enforcement for a governed cgroup, serve the control socket, write the
    /// audit log. Adopts pinned state left by a previous controller.
    Daemon {
        #[arg(long, default_value = "/etc/sentra/policy.yaml")]
        policy: PathBuf,
        #[arg(long, default_value = DEFAULT_AUDIT_LOG)]
        audit_log: PathBuf,
        #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
        backend: BackendChoice,
        /// Governed cgroup, created as <cgroup2 root>/sentra/NAME.
        #[arg(long, default_value = "agent")]
        cgroup: String,
    },
    /// Start a command inside the daemon's governed cgroup; exits with its exit code.
    Launch {
        #[arg(trailing_var_arg = true, required = true, num_args = 1..)]
        command: Vec<String>,
    },
    /// The running controller's state: backend, policy, generation, counters.
    Status,
    /// Stop enforcing: remove every pin (the daemon exits).
    Stop {
        /// Remove the pins directly, without a running controller (e.g. after its state was lost).
        #[arg(long)]
        force: bool,
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
    /// Swap the running controller's policy atomically (FILE, or the one loaded last).
    Reload { file: Option<PathBuf> },
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
        Command::Daemon { policy, audit_log, backend, cgroup } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(controller::daemon::run(controller::daemon::DaemonOptions {
                policy,
                audit_log,
                backend,
                cgroup,
                pin_root: controller::state::pin_root(),
            }))?;
            Ok(0)
        }
        Command::Launch { command } => {
            let state = controller::state::State::load(&controller::state::state_file())
                .context("no controller state (start `sentra-ctl daemon` first)")?;
            let group = state.cgroups.first().context("the controller governs no cgroup")?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(async {
                let mut child = run::spawn_in(&group.path.join("cgroup.procs"), &command)?;
                let status = child.wait().await?;
                Ok(run::exit_code(status))
            })
        }
        Command::Status => answer(&controller::protocol::Request::Status),
        Command::Stop { force: false } => answer(&controller::protocol::Request::Stop),
        Command::Stop { force: true } => {
            run::require_root()?;
            if let Ok(state) = controller::state::State::load(&controller::state::state_file()) {
                for group in &state.cgroups {
                    // Only when empty: processes still inside run on, ungoverned.
                    let _ = std::fs::remove_dir(&group.path);
                }
            }
            sentra_ctl::kernel::pin::remove(&controller::state::pin_root())?;
            let _ = std::fs::remove_file(controller::state::state_file());
            let _ = std::fs::remove_file(controller::protocol::socket());
            println!("pins under {} removed", controller::state::pin_root().display());
            Ok(0)
        }
        Command::Policy { command: PolicyCommand::Reload { file } } => {
            let policy = file
                .map(|f| std::fs::canonicalize(&f).with_context(|| format!("{}", f.display())))
                .transpose()?
                .map(|p| p.to_string_lossy().into_owned());
            answer(&controller::protocol::Request::Reload { policy })
        }
        Command::Doctor { json } => doctor(json),
        Command::Policy { command: PolicyCommand::Check { file } } => Ok(policy_check(&file)),
    }
}

/// `doctor`: prints each check; exit 0 when a backend can enforce here.
fn doctor(json: bool) -> anyhow::Result<i32> {
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

/// `policy check`: validate and summarise; exit 0 if valid, 1 if not.
fn policy_check(file: &std::path::Path) -> i32 {
    match run::prepare_policy(file) {
        Ok((policy, compiled)) => {
            println!("{}: valid", file.display());
            println!("  mode: {:?}, exec default: {}", policy.model.mode, compiled.default_effect().as_str());
            println!(
                "  kernel layer: {} rules -> {} name, {} dir, {} inode entries",
                compiled.rules.len(),
                compiled.name.len(),
                compiled.dir.len(),
                compiled.inode.len()
            );
            println!(
                "  shell layer: {} rules ({} also kernel-enforced: {}; {} shell-only)",
                policy.model.rules.len(),
                compiled.kernel_rules.len(),
                compiled.kernel_rules.join(", "),
                compiled.shell_only.len()
            );
            for (id, why) in &compiled.shell_only {
                println!("    shell-only: {id} ({why})");
            }
            for w in policy.warnings.iter().chain(&compiled.warnings) {
                println!("  warning: {}", w.message);
            }
            if !compiled.absent.is_empty() {
                println!("  deny targets not present on this machine ({}):", compiled.absent.len());
                for a in &compiled.absent {
                    println!("    {a}");
                }
            }
            0
        }
        Err(err) => {
            eprintln!("{err:#}");
            1
        }
    }
}
