//! `sentra-ctl`: the Sentra controller.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand};
use sentra_ctl::{audit::DEFAULT_AUDIT_LOG, controller, doctor, enforce, kernel::BackendChoice, launch, run};

/// Sends a request to the controller, prints its answer as JSON; exit 0 on success, 1 if refused.
fn answer(request: &controller::protocol::Request) -> anyhow::Result<i32> {
    answer_with(request, |body| {
        println!("{}", serde_json::to_string_pretty(&body)?);
        Ok(())
    })
}

/// Sends a request to the controller and hands its answer to `print`; exit 0 on success, 1 if refused.
fn answer_with(
    request: &controller::protocol::Request,
    print: impl FnOnce(serde_json::Value) -> anyhow::Result<()>,
) -> anyhow::Result<i32> {
    let response = controller::client::send(request)?;
    if response.ok {
        print(response.body.unwrap_or_default())?;
        Ok(0)
    } else {
        eprintln!("sentra-ctl: {}", response.error.unwrap_or_default());
        Ok(1)
    }
}

#[derive(Parser)]
#[command(
    name = "sentra-ctl",
    version,
    about = "Kernel-enforced command governance for AI agents",
    after_help = "Examples:\n  sentra-ctl run --policy /etc/sentra/policies/default.yaml -- /bin/sh scripts/demo.sh\n  sentra-ctl status\n  sentra-ctl policy check /etc/sentra/policy.yaml"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a command in a governed cgroup until it exits; exits with its exit code.
    #[command(
        after_help = "Example:\n  sentra-ctl run --policy /etc/sentra/policies/default.yaml -- /bin/sh -c 'ls /tmp'"
    )]
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
    #[command(
        after_help = "Examples:\n  sentra-ctl daemon --policy /etc/sentra/policy.yaml\n  sentra-ctl daemon --policy /etc/sentra/policy.yaml --delegated-only   (sentra.service does this)"
    )]
    Daemon {
        #[arg(long, default_value = "/etc/sentra/policy.yaml")]
        policy: PathBuf,
        #[arg(long, default_value = DEFAULT_AUDIT_LOG)]
        audit_log: PathBuf,
        #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
        backend: BackendChoice,
        /// Governed cgroup, created as <cgroup2 root>/sentra/NAME [default: the policy's
        /// `governed.cgroups`, else `agent`].
        #[arg(long, conflicts_with = "delegated_only")]
        cgroup: Option<String>,
        /// Govern no cgroup of its own, only the launch cgroups of `sentra-ctl launch --delegated`
        /// (systemd services with `Delegate=yes`): nothing is created outside systemd's delegation.
        #[arg(long)]
        delegated_only: bool,
        /// A reload may read the configured policy or a regular file below this directory, nothing
        /// else.
        #[arg(long, default_value = "/etc/sentra")]
        policy_dir: PathBuf,
        /// Serve Prometheus metrics at ADDRESS:PORT (e.g. 127.0.0.1:9464) or at a unix socket
        /// (`unix:/PATH`).
        #[arg(long, value_name = "ENDPOINT")]
        metrics: Option<controller::metrics::Endpoint>,
        /// Also report each BPF program's run count and time (turns the kernel's run-time
        /// statistics on while the controller runs, which costs a little on every program run).
        #[arg(long, requires = "metrics")]
        metrics_bpf_stats: bool,
    },
    /// Start the agent inside the daemon's governed cgroup: as an unprivileged user, with no new
    /// privileges, a clean environment and a seccomp profile; exits with its exit code.
    #[command(
        after_help = "Examples:\n  sentra-ctl launch --user agent --env HOME=/home/agent -- /usr/bin/node gateway.js\n  sentra-ctl launch --delegated -- openclaw gateway   (from a unit with Delegate=yes)\n  sentra-ctl launch --list-profiles"
    )]
    Launch(LaunchArgs),
    /// The running controller's state: backend, policy, generation, counters.
    #[command(after_help = "Examples:\n  sentra-ctl status\n  sentra-ctl status --json | jq .counters")]
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Cleans up after a killed `run` (started by `run` itself).
    #[command(hide = true)]
    Reap {
        #[arg(long)]
        cgroup: PathBuf,
        #[arg(long)]
        pin_root: PathBuf,
        #[arg(long)]
        audit_log: PathBuf,
        #[arg(long)]
        run_pid: u32,
    },
    /// Runs one sandbox request for the controller (started by the daemon itself, see
    /// `sentra_ctl::sandbox::agent`).
    #[command(hide = true)]
    SandboxRun {
        #[arg(long)]
        policy: PathBuf,
        #[arg(long)]
        policy_hash: String,
        #[arg(long)]
        requested_by: String,
    },
    /// Stop enforcing: remove every pin (the daemon exits).
    #[command(
        after_help = "Examples:\n  sentra-ctl stop\n  sentra-ctl stop --force   (no controller is running, its pins remain)"
    )]
    Stop {
        /// Remove the pins directly, without a running controller (e.g. after its state was lost).
        #[arg(long)]
        force: bool,
    },
    /// Check the kernel prerequisites.
    #[command(after_help = "Examples:\n  sentra-ctl doctor\n  sentra-ctl doctor --json | jq .backend")]
    Doctor {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Sentra's BPF programs in the kernel: runs and nanoseconds per run (the kernel's own accounting),
    /// and what the verifier walked to accept each.
    #[command(
        after_help = "Examples:\n  sentra-ctl programs --sample 10\n  sentra-ctl programs --run 4242 --json"
    )]
    Programs {
        /// Turn the kernel's run-time statistics on for this many seconds and report what ran
        /// meanwhile. Without it: the counts since loading, which grow only while statistics are on
        /// (`sysctl kernel.bpf_stats_enabled=1`).
        #[arg(long, value_name = "SECONDS")]
        sample: Option<u64>,
        /// The programs of the `sentra-ctl run` with this process id, instead of the daemon's.
        #[arg(long, value_name = "PID")]
        run: Option<u32>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Read the audit log: filtered, followed, or one command's whole process tree.
    #[command(
        after_help = "Examples:\n  sentra-ctl audit --denied --since 1h\n  sentra-ctl audit -f --layer kernel\n  sentra-ctl audit --session 1f2e3d4c-… --json | jq .command\n  sentra-ctl audit --exec-id 8c1f03aa:91822:4711 --tree"
    )]
    Audit(AuditArgs),
    /// What was refused, grouped: each file, destination, name or shell rule once, with how often
    /// and when first and last.
    #[command(
        after_help = "Examples:\n  sentra-ctl pending\n  sentra-ctl pending --since 1d --json | jq 'select(.kind==\"connect\")'"
    )]
    Pending {
        /// The log to read.
        #[arg(long, default_value = DEFAULT_AUDIT_LOG)]
        file: PathBuf,
        /// Only refusals since a time: a duration back from now (30s, 10m, 2h, 1d) or RFC 3339.
        #[arg(long, value_name = "WHEN")]
        since: Option<String>,
        /// JSON lines (the default when the output is not a terminal).
        #[arg(long)]
        json: bool,
    },
    /// Allow what a refusal of `pending` refused: the narrowest entry, added to the policy file (the
    /// diff is shown), reloaded at once, and recorded with who approved it.
    #[command(
        after_help = "Examples:\n  sentra-ctl pending\n  sentra-ctl allow 3f2a91c0\n  sentra-ctl allow 3f2a91c0 --for 1h   (lapses by itself)"
    )]
    Allow {
        /// The refusal's id, as `pending` prints it.
        id: String,
        /// Lapse after this long (30m, 2h, 1d): the controller reloads then, without the entry.
        #[arg(long = "for", value_name = "DURATION")]
        duration: Option<String>,
        /// The log the refusal is in.
        #[arg(long, default_value = DEFAULT_AUDIT_LOG)]
        file: PathBuf,
        /// The policy file to add to [default: the one the controller enforces].
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// Policy tools.
    #[command(
        after_help = "Examples:\n  sentra-ctl policy check /etc/sentra/policy.yaml\n  sentra-ctl policy explain /etc/sentra/policy.yaml -- git push\n  sentra-ctl policy reload"
    )]
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Print a shell completion script for sentra-ctl or sentra.
    #[command(
        after_help = "Examples:\n  sentra-ctl completions bash > /usr/share/bash-completion/completions/sentra-ctl\n  sentra-ctl completions zsh --binary sentra > /usr/share/zsh/vendor-completions/_sentra"
    )]
    Completions {
        shell: clap_complete::Shell,
        /// Which program the script completes.
        #[arg(long, value_enum, default_value_t = Program::SentraCtl)]
        binary: Program,
    },
    /// Write the manual pages of sentra-ctl (one per command) and sentra into a directory.
    #[command(
        after_help = "Example:\n  sentra-ctl manpages /usr/local/share/man/man1 && man sentra-ctl-launch"
    )]
    Manpages { dir: PathBuf },
}

#[derive(clap::Args)]
#[expect(clippy::struct_excessive_bools, reason = "independent command-line switches")]
struct AuditArgs {
    /// The log to read.
    #[arg(long, default_value = DEFAULT_AUDIT_LOG)]
    file: PathBuf,
    /// Keep reading: print records as they are written (across rotation and truncation).
    #[arg(short, long, conflicts_with = "tree")]
    follow: bool,
    /// Only refusals (denied, and auditonly: what enforce mode would refuse).
    #[arg(long)]
    denied: bool,
    /// Only this layer (kernel, shell, seccomp, launcher) or event kind (exec, net, dns, guard…);
    /// repeat for several.
    #[arg(long, value_name = "LAYER")]
    layer: Vec<String>,
    /// Only records decided by this rule id.
    #[arg(long, value_name = "ID")]
    rule: Option<String>,
    /// Only records since a time: a duration back from now (30s, 10m, 2h, 1d) or RFC 3339.
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,
    /// Only one shell session: its shell records and the kernel records of everything it started.
    #[arg(long, value_name = "ID")]
    session: Option<String>,
    /// Only one process (its `exec_id`).
    #[arg(long, value_name = "ID")]
    exec_id: Option<String>,
    /// With --exec-id: the process and everything it started, as a tree.
    #[arg(long, requires = "exec_id")]
    tree: bool,
    /// JSON lines (the default when the output is not a terminal).
    #[arg(long, conflicts_with = "text")]
    json: bool,
    /// Aligned columns even when the output is not a terminal.
    #[arg(long)]
    text: bool,
    /// Colour on a terminal.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// The programs whose command line is defined with clap.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Program {
    SentraCtl,
    Sentra,
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy and summarise it; exit 0 if valid, 1 if not.
    #[command(after_help = "Example:\n  sentra-ctl policy check policies/default.yaml")]
    Check { file: PathBuf },
    /// Which rule decides a command, in the shell layer and in the kernel layer, and why.
    #[command(
        after_help = "Examples:\n  sentra-ctl policy explain policies/default.yaml -- ls -la /tmp\n  sentra-ctl policy explain policies/openclaw.yaml --identity agent -- 'curl https://example.com | sh'"
    )]
    Explain {
        file: PathBuf,
        /// Identity for identity-scoped rules (default: the current user).
        #[arg(long)]
        identity: Option<String>,
        #[arg(trailing_var_arg = true, required = true, num_args = 1..)]
        command: Vec<String>,
    },
    /// A policy that allows what an audit log shows a default refused (explicit denies stay).
    #[command(
        after_help = "Examples:\n  sentra-ctl policy learn --from /var/log/sentra/audit.jsonl --base /etc/sentra/policy.yaml > learned.yaml\n  sentra-ctl policy learn --from audit.jsonl --base policies/default.yaml --since 2h -o learned.yaml"
    )]
    Learn {
        /// The audit log to learn from.
        #[arg(long)]
        from: PathBuf,
        /// The policy to add to (its comments, entries and denies are kept).
        #[arg(long)]
        base: PathBuf,
        /// Only records this recent (30m, 2h, 1d) or since this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Files of one root-only directory that become one `dir:` entry.
        #[arg(long, default_value_t = 3)]
        dir_threshold: usize,
        /// Write the policy here instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Swap the running controller's policy atomically (FILE, or the one loaded last).
    #[command(
        after_help = "Examples:\n  sentra-ctl policy reload\n  sentra-ctl policy reload /etc/sentra/policies/openclaw.yaml"
    )]
    Reload { file: Option<PathBuf> },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SENTRA_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
    if !matches!(
        cli.command,
        Command::Run { .. }
            | Command::Daemon { .. }
            | Command::Launch(_)
            | Command::Reap { .. }
            | Command::SandboxRun { .. }
    ) {
        // Commands that only print end quietly when their reader goes away (`… | head`), as other
        // Unix tools do, instead of failing a print. The long-running ones keep ignoring SIGPIPE:
        // a peer closing a socket must not kill them.
        // SAFETY: restoring a signal's default disposition before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match cli.command {
        Command::Run { policy, audit_log, backend, command } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(run::run(run::RunOptions { policy, audit_log, backend, command }))
        }
        Command::Daemon {
            policy,
            audit_log,
            backend,
            cgroup,
            delegated_only,
            policy_dir,
            metrics,
            metrics_bpf_stats,
        } => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(controller::daemon::run(controller::daemon::DaemonOptions {
                policy,
                audit_log,
                backend,
                cgroup,
                delegated_only,
                pin_root: controller::state::pin_root(),
                policy_dir,
                metrics,
                metrics_bpf_stats,
            }))?;
            Ok(0)
        }
        Command::Launch(args) => launch_command(args),
        Command::Reap { cgroup, pin_root, audit_log, run_pid } => {
            run::reap(&cgroup, &pin_root, &audit_log, run_pid)?;
            Ok(0)
        }
        Command::SandboxRun { policy, policy_hash, requested_by } => {
            Ok(sentra_ctl::sandbox::agent::main(&policy, &policy_hash, &requested_by))
        }
        Command::Status { json: true } => answer(&controller::protocol::Request::Status),
        Command::Status { json: false } => answer_with(&controller::protocol::Request::Status, |body| {
            print_status(&body);
            Ok(())
        }),
        Command::Stop { force: false } => answer(&controller::protocol::Request::Stop),
        Command::Stop { force: true } => {
            enforce::require_root()?;
            if let Ok(loaded) = controller::state::State::load(&controller::state::state_file()) {
                for group in &loaded.state.cgroups {
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
        Command::Policy { command } => policy(command),
        Command::Allow { id, duration, file, policy } => {
            allow(&id, duration.as_deref(), &file, policy.as_deref())
        }
        Command::Doctor { json } => doctor(json),
        Command::Audit(args) => audit(&args),
        Command::Pending { file, since, json } => pending(&file, since.as_deref(), json),
        Command::Programs { sample, run, json } => programs(sample, run, json),
        Command::Completions { shell, binary } => {
            let (mut command, name) = match binary {
                Program::SentraCtl => (Cli::command(), "sentra-ctl"),
                Program::Sentra => (sentra_ctl::shell::cli::Cli::command(), "sentra"),
            };
            clap_complete::generate(shell, &mut command, name, &mut std::io::stdout());
            Ok(0)
        }
        Command::Manpages { dir } => manpages(&dir),
    }
}

/// `launch`'s arguments.
#[derive(clap::Args)]
struct LaunchArgs {
    /// Which governed cgroup, by name [default: the first].
    #[arg(long, conflicts_with = "delegated")]
    cgroup: Option<String>,
    /// Make the agent's cgroup below this process's own cgroup, which systemd delegated to it
    /// (`Delegate=yes`), instead of below the controller's: the agent stays in its unit, and does not
    /// start unless the controller governs it.
    #[arg(long)]
    delegated: bool,
    /// Run as this user [default: the policy's `governed.user`]; root only with
    /// `governed.allow_root: true`.
    #[arg(long)]
    user: Option<String>,
    /// Seccomp profile from the policy's `seccomp_profiles` [default: `governed.seccomp_profile`,
    /// else `gateway`].
    #[arg(long, conflicts_with = "no_seccomp")]
    seccomp_profile: Option<String>,
    /// Launch without a seccomp profile (warned about and recorded).
    #[arg(long)]
    no_seccomp: bool,
    /// List the policy's seccomp profiles and exit.
    #[arg(long)]
    list_profiles: bool,
    /// Pass a variable of this environment (`NAME`) or set one (`NAME=VALUE`); nothing else is
    /// passed.
    #[arg(long = "env", value_name = "NAME[=VALUE]")]
    env: Vec<String>,
    /// Policy for --list-profiles [default: the running controller's, else
    /// /etc/sentra/policy.yaml].
    #[arg(long)]
    policy: Option<PathBuf>,
    #[arg(trailing_var_arg = true, required_unless_present = "list_profiles", num_args = 1..)]
    command: Vec<String>,
}

/// `launch`: the agent in the daemon's governed cgroup, with the policy the daemon enforces.
fn launch_command(args: LaunchArgs) -> anyhow::Result<i32> {
    let LaunchArgs {
        cgroup,
        delegated,
        user,
        seccomp_profile,
        no_seccomp,
        list_profiles,
        env,
        policy,
        command,
    } = args;
    let loaded = controller::state::State::load(&controller::state::state_file());
    if list_profiles {
        let file = policy
            .or_else(|| loaded.as_ref().ok().map(|l| l.policy.policy.clone()))
            .unwrap_or_else(|| PathBuf::from("/etc/sentra/policy.yaml"));
        let policy = sentra_ctl::policy::Policy::read(&file)?;
        print!("{}", launch::list_profiles(&policy));
        return Ok(0);
    }
    let loaded = loaded.context("no controller state (start `sentra-ctl daemon` first)")?;
    let procs = if delegated {
        let own = sentra_ctl::cgroup::own_cgroup().context("reading this process's cgroup")?;
        sentra_ctl::cgroup::dir_of(&own)?.join("cgroup.procs")
    } else {
        let group = match &cgroup {
            None => loaded.state.cgroups.first().context(
                "the controller governs no cgroup of its own (started with --delegated-only?): launch from a systemd service with Delegate=yes and --delegated",
            )?,
            Some(name) => loaded
                .state
                .cgroups
                .iter()
                .find(|g| g.path.file_name().is_some_and(|n| n == name.as_str()))
                .with_context(|| {
                    let names: Vec<String> =
                        loaded.state.cgroups.iter().map(|g| g.path.display().to_string()).collect();
                    format!(
                        "the controller governs no cgroup named {name} (it governs {})",
                        names.join(", ")
                    )
                })?,
        };
        group.path.join("cgroup.procs")
    };
    // The policy the controller enforces: its user, root permission and profiles.
    let file = &loaded.policy.policy;
    sentra_ctl::policy::check_file_safety(file)?;
    let policy = sentra_ctl::policy::Policy::read(file)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(launch::launch(
        &policy,
        launch::Launch {
            procs,
            delegated,
            command,
            user,
            seccomp: if no_seccomp {
                launch::Seccomp::Off
            } else {
                launch::Seccomp::Profile(seccomp_profile)
            },
            env,
            hide: launch::Hidden {
                files: vec![loaded.state.audit_log.clone(), controller::state::state_file()],
                dirs: vec![controller::state::pin_root()],
                read_only: sentra_ctl::cgroup::cgroup2_root().into_iter().collect(),
                records: Some(controller::protocol::records_socket()),
            },
        },
    ))
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
    match enforce::prepare_policy(file) {
        Ok(enforce::Prepared { mut policy, exec: compiled, net }) => {
            policy.remember();
            println!("{}: valid", file.display());
            println!(
                "  mode: {:?}, exec default: {}",
                policy.model.mode,
                compiled.table.default_effect().as_str()
            );
            println!(
                "  kernel layer: {} rules -> {} name, {} dir, {} inode entries",
                compiled.table.rules.len(),
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
            if net.governed {
                println!(
                    "  network: {} rules -> {} CIDR entries, {} domain rules (with the launch profiles'); loopback {}",
                    net.section_rules,
                    net.cidr.len(),
                    net.domains.len(),
                    if net.loopback { "allowed" } else { "denied" }
                );
            } else {
                println!("  network: not governed (no `network:` section)");
            }
            for profile in &net.profiles {
                let prefix = format!("{}.network_policy[", profile.name);
                let targets: Vec<&str> = net.rules[net.section_rules..]
                    .iter()
                    .filter(|r| r.id.starts_with(&prefix))
                    .map(|r| r.target.as_str())
                    .collect();
                println!(
                    "  launch profile {}: its network_policy is the network allowlist of agents launched with it: [{}]; loopback {}",
                    profile.name,
                    targets.join(", "),
                    if profile.loopback { "allowed" } else { "denied" }
                );
            }
            let governed = &policy.model.governed;
            println!(
                "  governed: cgroups {} (below <cgroup2>/sentra/), identities {}",
                governed.cgroup_names().join(", "),
                if governed.identities.is_empty() {
                    "any".to_string()
                } else {
                    governed.identities.join(", ")
                }
            );
            let reached = policy.denies_reached_by_allows();
            let own_tools = compiled.own_tools_reachable();
            for w in policy.warnings.iter().chain(&compiled.warnings).chain(&reached).chain(&own_tools) {
                println!("  warning: {}", w.message);
            }
            if !compiled.absent.is_empty() {
                println!(
                    "  targets not present on this machine, inactive until a reload finds them ({}):",
                    compiled.absent.len()
                );
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

/// Quotes a word for a POSIX shell line when it needs it.
fn shell_word(word: &str) -> String {
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// `policy explain`: the shell layer's verdict on the line, and the kernel layer's on the program.
fn policy_explain(
    file: &std::path::Path,
    identity: Option<String>,
    command: &[String],
) -> anyhow::Result<i32> {
    use sentra_ctl::{
        policy::{Policy, exec, shell::ShellMatcher},
        shell::{evaluate::Evaluator, gate::os_user},
    };
    let policy = Policy::load(file)?;
    let compiled = exec::compile(&policy)?;
    let files = exec::LazyExecFiles::from(exec::ExecFiles::new(&compiled, policy.model.exec.is_some()));
    let matcher = ShellMatcher::new(&policy)?;
    let line: Vec<String> = command.iter().map(|w| shell_word(w)).collect();
    let line = line.join(" ");
    let inherited = Evaluator::inherited_from(std::env::vars());
    let evaluator = Evaluator {
        matcher: &matcher,
        identity: identity.unwrap_or_else(os_user),
        cwd: std::env::current_dir()?,
        path: std::env::var("PATH").ok(),
        files: Some(&files),
        programs: &sentra_ctl::shell::identity::SystemPrograms::default(),
        inherited: &inherited,
    };
    let verdict = evaluator.evaluate(&line);
    println!("shell layer (sentra-shell) on: {line}");
    for part in &verdict.parts {
        println!(
            "  {:<7} {:<30} rule {}{}",
            if part.allowed { "allowed" } else { "DENIED" },
            part.text,
            part.rule_id,
            part.reason.as_deref().map(|r| format!(" — {r}")).unwrap_or_default()
        );
    }
    let program = &command[0];
    let search: Vec<PathBuf> = match policy.model.exec.as_ref().filter(|e| !e.path.is_empty()) {
        Some(section) => section.path.iter().map(PathBuf::from).collect(),
        None => std::env::var("PATH").unwrap_or_default().split(':').map(PathBuf::from).collect(),
    };
    let resolved = if program.contains('/') {
        Some(PathBuf::from(program))
    } else {
        search.iter().map(|d| d.join(program)).find(|p| p.is_file())
    };
    println!("kernel layer (every exec in the governed cgroup):");
    let shell_ok = verdict.denied().is_none();
    let kernel_ok = match resolved {
        None => {
            println!("  `{program}` is not found in exec.path (or PATH): nothing to execute");
            false
        }
        Some(path) => {
            // Every file the kernel judges for this exec: a script's interpreter (and what `env` runs)
            // too; the exec goes through only if each is allowed.
            let chain = exec::exec_chain(&path, &search);
            let mut all = true;
            for (step, file) in chain.iter().enumerate() {
                let explanation = compiled.explain(file)?;
                let allowed = explanation.effect == sentra_ctl::policy::model::Effect::Allow;
                println!(
                    "  {}{:<7} {} — {}{}",
                    if step == 0 { "" } else { "then " },
                    if allowed { "allowed" } else { "DENIED" },
                    explanation.file.display(),
                    explanation.how,
                    explanation.rule.map(|r| format!(" (rule {r})")).unwrap_or_default()
                );
                all &= allowed;
            }
            if chain.len() > 1 {
                println!(
                    "  (a script: the lsm backend judges each file above; the signal backend only the last)"
                );
            }
            all
        }
    };
    println!(
        "overall: {}",
        match (shell_ok, kernel_ok) {
            (true, true) => "runs",
            (false, _) => "refused by the shell layer",
            (true, false) => "allowed by the shell layer but the kernel refuses the exec",
        }
    );
    Ok(i32::from(!(shell_ok && kernel_ok)))
}

/// `sentra-ctl programs`.
fn programs(sample: Option<u64>, run: Option<u32>, json: bool) -> anyhow::Result<i32> {
    use sentra_ctl::kernel::stats;
    enforce::require_root()?;
    let root = run.map_or_else(controller::state::pin_root, run::pin_root_of);
    if !sentra_ctl::kernel::pin::exists(&root) {
        anyhow::bail!("nothing is pinned under {}: no controller is enforcing there", root.display());
    }
    let (programs, seconds) = match sample {
        Some(seconds) => {
            let on = stats::enable_run_time_stats()?;
            let before = stats::pinned(&root)?;
            std::thread::sleep(std::time::Duration::from_secs(seconds));
            let after = stats::pinned(&root)?;
            drop(on);
            (stats::delta(&before, &after), Some(seconds))
        }
        None => (stats::pinned(&root)?, None),
    };
    if json {
        let value = serde_json::json!({
            "pin_root": root,
            "sample_seconds": seconds,
            "programs": programs
                .iter()
                .map(|p| {
                    let mut value = serde_json::json!(p);
                    value["ns_per_run"] = serde_json::json!(p.ns_per_run());
                    value
                })
                .collect::<Vec<_>>(),
        });
        println!("{value}");
        return Ok(0);
    }
    match seconds {
        Some(s) => println!("Sentra's programs under {}, what ran in {s} s:", root.display()),
        None => println!("Sentra's programs under {}, counted while statistics were on:", root.display()),
    }
    println!(
        "{:<22} {:>7} {:>12} {:>10} {:>14} {:>9}",
        "program", "id", "runs", "ns/run", "verified insns", "jited B"
    );
    for p in &programs {
        println!(
            "{:<22} {:>7} {:>12} {:>10} {:>14} {:>9}",
            p.name,
            p.id,
            p.run_count,
            p.ns_per_run().map_or_else(|| "-".to_string(), |ns| format!("{ns:.0}")),
            p.verified_insns.map_or_else(|| "-".to_string(), |n| n.to_string()),
            p.jited_bytes
        );
    }
    Ok(0)
}

/// The controller's status answer as aligned `key  value` lines (nested fields joined with dots,
/// lists with commas).
fn print_status(body: &serde_json::Value) {
    let mut lines = Vec::new();
    flatten("", body, &mut lines);
    let width = lines.iter().map(|(key, _)| key.len()).max().unwrap_or(0);
    for (key, value) in lines {
        println!("{key:<width$}  {value}");
    }
}

/// `key`'s scalar fields as (dotted name, text); a list of scalars is one comma-separated field, a
/// list of objects one field per element (`name.0.field`).
fn flatten(key: &str, value: &serde_json::Value, out: &mut Vec<(String, String)>) {
    use serde_json::Value;
    let join = |name: &str| if key.is_empty() { name.to_string() } else { format!("{key}.{name}") };
    match value {
        Value::Object(fields) => {
            for (name, field) in fields {
                flatten(&join(name), field, out);
            }
        }
        Value::Array(items) if items.iter().any(|i| i.is_object() || i.is_array()) => {
            for (i, item) in items.iter().enumerate() {
                flatten(&join(&i.to_string()), item, out);
            }
        }
        Value::Array(items) => {
            let text: Vec<String> = items.iter().map(scalar).collect();
            out.push((key.to_string(), if text.is_empty() { "-".into() } else { text.join(", ") }));
        }
        other => out.push((key.to_string(), scalar(other))),
    }
}

fn scalar(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "-".into(),
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// `sentra-ctl manpages DIR`: sentra-ctl.1, one page per command (sentra-ctl-policy-check.1, …), and
/// sentra.1.
fn manpages(dir: &std::path::Path) -> anyhow::Result<i32> {
    fn write_all(
        command: &clap::Command,
        name: &str,
        dir: &std::path::Path,
        count: &mut usize,
    ) -> anyhow::Result<()> {
        let command = command.clone().name(name.to_string());
        let path = dir.join(format!("{name}.1"));
        let mut page = Vec::new();
        clap_mangen::Man::new(command.clone())
            .render(&mut page)
            .with_context(|| format!("rendering {name}"))?;
        std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
        *count += 1;
        for sub in command.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
            write_all(sub, &format!("{name}-{}", sub.get_name()), dir, count)?;
        }
        Ok(())
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut count = 0;
    let mut ctl = Cli::command();
    ctl.build();
    write_all(&ctl, "sentra-ctl", dir, &mut count)?;
    write_all(&sentra_ctl::shell::cli::Cli::command(), "sentra", dir, &mut count)?;
    println!("{count} manual pages written to {}", dir.display());
    Ok(0)
}

/// `sentra-ctl audit`. A reader that goes away (`| head`) ends it by SIGPIPE, as for other tools.
fn audit(args: &AuditArgs) -> anyhow::Result<i32> {
    use std::io::{IsTerminal as _, Write as _};

    use sentra_ctl::audit::query::{self, Entry, Filter, Follower, Log, Processes, View};

    let terminal = std::io::stdout().is_terminal();
    let json = args.json || (!terminal && !args.text);
    let view = View {
        color: match args.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => terminal && std::env::var_os("NO_COLOR").is_none(),
        },
    };
    let filter = Filter {
        denied: args.denied,
        layers: args.layer.clone(),
        rule: args.rule.clone(),
        since: args.since.as_deref().map(|s| query::parse_since(s, chrono::Utc::now())).transpose()?,
        session: args.session.clone(),
        exec_id: args.exec_id.clone(),
        tree: args.tree,
    };
    let log = Log::read(&args.file)?;
    let mut processes = Processes::of(&log.entries);
    // Line-buffered: each record reaches a follower's reader as it is printed.
    let mut out = std::io::stdout().lock();
    let shown = |entry: &Entry, processes: &Processes| {
        if json { query::json_line(entry, processes) } else { view.line(entry) }
    };
    let matched: Vec<&Entry> = log.entries.iter().filter(|e| filter.matches(e, &processes)).collect();
    match (&args.exec_id, args.tree && !json) {
        (Some(root), true) => write!(out, "{}", view.tree(&matched, root))?,
        _ => {
            for entry in matched {
                writeln!(out, "{}", shown(entry, &processes))?;
            }
        }
    }
    if log.unreadable > 0 {
        eprintln!(
            "sentra-ctl audit: {} line(s) of {} are not JSON records",
            log.unreadable,
            args.file.display()
        );
    }
    if !args.follow {
        return Ok(0);
    }
    let mut follower = Follower::new(&args.file, false);
    loop {
        for line in follower.poll() {
            let Some(entry) = Entry::parse(&line) else { continue };
            processes.learn(&entry);
            if filter.matches(&entry, &processes) {
                writeln!(out, "{}", shown(&entry, &processes))?;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// `allow`: the narrowest entry for a refusal, written into the policy, reloaded and recorded.
fn allow(id: &str, duration: Option<&str>, log: &Path, policy: Option<&Path>) -> anyhow::Result<i32> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

    use sentra_ctl::audit::query::parse_since;

    let now = chrono::Utc::now();
    let expires = duration
        .map(|d| {
            anyhow::ensure!(
                chrono::DateTime::parse_from_rfc3339(d).is_err(),
                "--for takes a duration (30m, 2h, 1d), not a time"
            );
            let span = now - parse_since(d, now)?;
            anyhow::ensure!(span > chrono::TimeDelta::zero(), "--for {d}: a duration longer than zero");
            Ok((now + span).to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        })
        .transpose()?;
    let path = if let Some(path) = policy {
        path.to_path_buf()
    } else {
        let status = controller::client::send(&controller::protocol::Request::Status)?;
        let body = status.body.unwrap_or_default();
        PathBuf::from(body["policy"].as_str().context("the controller names no policy file")?)
    };
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let entries = entries_since(log, None)?;
    let who = std::env::var("SUDO_USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| {
        let uid = nix::unistd::getuid();
        nix::unistd::User::from_uid(uid).ok().flatten().map_or_else(|| uid.to_string(), |u| u.name)
    });
    let note = match &expires {
        Some(at) => format!("approved by {who} at {} (refusal {id}), until {at}", sentra_ctl::audit::now()),
        None => format!("approved by {who} at {} (refusal {id})", sentra_ctl::audit::now()),
    };
    let approval = sentra_ctl::policy::learn::approve(&path, &text, &entries, id, expires.as_deref(), &note)
        .map_err(|err| anyhow::anyhow!(sentra_ctl::describe(&err)))?;
    // Replace the file whole, with its owner and mode: a reader never sees half of it.
    let meta = std::fs::metadata(&path)?;
    let staged = path.with_extension("sentra-new");
    std::fs::write(&staged, &approval.text).with_context(|| staged.display().to_string())?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    std::os::unix::fs::chown(&staged, Some(meta.uid()), Some(meta.gid()))?;
    std::fs::rename(&staged, &path).with_context(|| path.display().to_string())?;
    println!("{}:", path.display());
    for line in approval
        .item
        .comments
        .iter()
        .map(|c| format!("# {c}"))
        .chain([format!("- {}", approval.item.mapping)])
    {
        println!("+ {line}");
    }
    let reloaded = controller::client::send(&controller::protocol::Request::Reload {
        policy: Some(std::fs::canonicalize(&path)?.to_string_lossy().into_owned()),
    })?;
    if !reloaded.ok {
        anyhow::bail!(
            "the policy file has the entry, but the controller refused the reload: {}",
            reloaded.error.unwrap_or_default()
        );
    }
    let record = serde_json::json!({
        "timestamp": sentra_ctl::audit::now(),
        "event": "approval",
        "layer": "operator",
        "decision": "allowed",
        "rule_id": approval.id,
        "reason": note,
        "detail": {
            "refusal": id,
            "kind": approval.kind,
            "what": approval.what,
            "expires": expires,
            "approved_by": who,
            "policy": path,
        },
    });
    let recorded = controller::client::send(&controller::protocol::Request::Record { record })?;
    if !recorded.ok {
        eprintln!("sentra-ctl allow: the approval was not recorded: {}", recorded.error.unwrap_or_default());
    }
    println!(
        "allowed {} `{}` as `{}`{}; the controller enforces it now",
        approval.kind,
        approval.what,
        approval.id,
        expires.map(|at| format!(" until {at}")).unwrap_or_default()
    );
    Ok(0)
}

/// `sentra-ctl policy …`.
fn policy(command: PolicyCommand) -> anyhow::Result<i32> {
    match command {
        PolicyCommand::Reload { file } => {
            let policy = file
                .map(|f| std::fs::canonicalize(&f).with_context(|| format!("{}", f.display())))
                .transpose()?
                .map(|p| p.to_string_lossy().into_owned());
            answer(&controller::protocol::Request::Reload { policy })
        }
        PolicyCommand::Check { file } => Ok(policy_check(&file)),
        PolicyCommand::Learn { from, base, since, dir_threshold, output } => {
            policy_learn(&from, &base, since.as_deref(), dir_threshold, output.as_deref())
        }
        PolicyCommand::Explain { file, identity, command } => policy_explain(&file, identity, &command),
    }
}

/// `policy learn`: the base policy with what the log shows a default refused allowed, checked; a
/// summary on stderr.
fn policy_learn(
    from: &Path,
    base: &Path,
    since: Option<&str>,
    dir_threshold: usize,
    output: Option<&Path>,
) -> anyhow::Result<i32> {
    let entries = entries_since(from, since)?;
    let entries: Vec<_> = entries.iter().collect();
    let text = std::fs::read_to_string(base).with_context(|| base.display().to_string())?;
    let (learned, added) = sentra_ctl::policy::learn::learn(base, &text, &entries, dir_threshold)
        .map_err(|err| anyhow::anyhow!(sentra_ctl::describe(&err)))?;
    match output {
        Some(path) => std::fs::write(path, &learned).with_context(|| path.display().to_string())?,
        None => print!("{learned}"),
    }
    eprintln!(
        "policy learn: {} records read; added {} exec, {} network and {} shell entries to {}{}",
        entries.len(),
        added.exec.len(),
        added.network.len(),
        added.rules.len(),
        base.display(),
        if added.is_empty() { " (nothing a default refused)" } else { "" }
    );
    Ok(0)
}

/// The records of the log at `file`, in time order, since `since` (a duration back or RFC 3339).
fn entries_since(file: &Path, since: Option<&str>) -> anyhow::Result<Vec<sentra_ctl::audit::query::Entry>> {
    use sentra_ctl::audit::query::{Filter, Log, Processes, parse_since};

    let filter =
        Filter { since: since.map(|s| parse_since(s, chrono::Utc::now())).transpose()?, ..Filter::default() };
    let processes = Processes::default();
    Ok(Log::read(file)?.entries.into_iter().filter(|e| filter.matches(e, &processes)).collect())
}

/// `sentra-ctl pending`.
fn pending(file: &Path, since: Option<&str>, json: bool) -> anyhow::Result<i32> {
    use std::io::{IsTerminal as _, Write as _};

    let groups = sentra_ctl::audit::query::pending(&entries_since(file, since)?);
    let mut out = std::io::stdout().lock();
    if json || !std::io::stdout().is_terminal() {
        for group in &groups {
            writeln!(out, "{}", serde_json::to_string(group)?)?;
        }
        return Ok(0);
    }
    if groups.is_empty() {
        writeln!(out, "nothing was refused")?;
        return Ok(0);
    }
    writeln!(
        out,
        "{:<8} {:>6}  {:<8} {:<10} {:<24} {:<19} {:<19} WHAT",
        "ID", "COUNT", "KIND", "DECISION", "RULE", "FIRST", "LAST"
    )?;
    let short = |t: &str| t.get(..19).unwrap_or(t).replace('T', " ");
    for g in &groups {
        writeln!(
            out,
            "{:<8} {:>6}  {:<8} {:<10} {:<24} {:<19} {:<19} {}",
            g.id,
            g.count,
            g.kind,
            g.decision,
            g.rule,
            short(&g.first),
            short(&g.last),
            g.what
        )?;
    }
    Ok(0)
}
