//! `sentra-ctl run`: govern one command in a fresh cgroup until it exits.

use std::{
    os::{fd::AsRawFd as _, unix::process::ExitStatusExt as _},
    path::{Path, PathBuf},
    process::ExitStatus,
    sync::Arc,
};

use anyhow::{Context as _, bail};
use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use crate::{
    audit::{self, AuditLog, Record},
    cgroup::{self, Cgroup},
    kernel::{BackendChoice, Kernel, events, maps},
    policy::{
        self, Policy,
        exec::{CompiledExec, RuleTable},
        network::CompiledNet,
    },
    record::{self, Clock},
};

/// Options of `run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub policy: PathBuf,
    pub audit_log: PathBuf,
    pub backend: BackendChoice,
    pub command: Vec<String>,
}

/// Loads, checks and compiles a policy for the kernel: its exec and network parts.
///
/// # Errors
/// Unsafe file ownership or permissions, parse or compile errors (a network section with domain rules
/// but no upstream resolver among them).
pub fn prepare_policy(path: &Path) -> anyhow::Result<(Policy, CompiledExec, Arc<CompiledNet>)> {
    policy::check_file_safety(path)?;
    // Not stored in the parsed-policy cache here: each caller does it when no one waits for it.
    let policy = Policy::read(path)?;
    // The shell layer's regexes are part of the policy too: a bad one rejects the whole file here, so
    // that `policy check` and a reload refuse what sentra-shell could not use.
    policy::shell::ShellMatcher::validate(&policy)?;
    let compiled = policy::exec::compile(&policy)?;
    let net = Arc::new(policy::network::compile(&policy)?);
    crate::dns::check_upstream(&net)?;
    Ok((policy, compiled, net))
}

/// Logs a policy's warnings (once, when a controller starts enforcing it).
pub fn log_warnings(policy: &Policy, compiled: &CompiledExec) {
    for warning in policy.warnings.iter().chain(&compiled.warnings) {
        tracing::warn!("{}: {}", policy.file.display(), warning.message);
    }
}

/// Runs the command governed; returns its exit code (128 + signal when killed).
///
/// # Errors
/// Anything that prevents governing the command; the command is then not started.
pub async fn run(options: RunOptions) -> anyhow::Result<i32> {
    if options.command.is_empty() {
        bail!("no command given: sentra-ctl run --policy FILE -- CMD ARGS…");
    }
    require_root()?;
    let (mut policy, compiled, net) = prepare_policy(&options.policy)?;
    policy.remember();
    log_warnings(&policy, &compiled);
    let mut audit = AuditLog::open(&options.audit_log)?;

    let mut kernel = Kernel::load(options.backend)?;
    maps::write_generation(&mut kernel.ebpf, 0, &compiled, policy.model.mode.into())?;
    maps::activate(&mut kernel.ebpf, 0, kernel.backend)?;
    crate::kernel::release_freed_memory();

    let root = cgroup::cgroup2_root()?;
    let relative = PathBuf::from(format!("{}/run-{}", cgroup::GOVERNED_PARENT, std::process::id()));
    let group = Cgroup::create(&root, &relative)?;
    maps::govern(&mut kernel.ebpf, group.id, group.level)?;
    // Network governance (issue 6): sock_addr programs on the cgroup, generation 0's network part,
    // the resolver when the policy has domain rules. Before the command starts.
    let network = crate::dns::NetworkGovernance::start_run(
        &mut kernel,
        &group.path,
        &net,
        policy.model.mode.into(),
        &options.audit_log,
    )
    .await?;
    tracing::info!(
        backend = kernel.backend.as_str(),
        cgroup = %group.path.display(),
        "governing {:?}",
        options.command
    );

    let clock = Clock::new();
    audit.write(&Record {
        timestamp: audit::now(),
        event: "controller_start".into(),
        layer: "kernel",
        backend: Some(kernel.backend.as_str()),
        mode: Some(sentra_common::settings::Mode::from(policy.model.mode).as_str()),
        command: Some(options.command.join(" ")),
        cgroup_id: Some(group.id),
        detail: Some(serde_json::json!({
            "policy": policy.file.display().to_string(),
            "policy_hash": format!("{:016x}", policy.hash),
            "exec_rules": compiled.rules.len(),
            "lsm_refusal": kernel.lsm_refusal,
        })),
        ..Record::default()
    })?;

    let ring = kernel.ebpf.take_map(maps::EVENTS).context("map EVENTS missing")?;
    let ring: RingBuf<MapData> = RingBuf::try_from(ring).context("map EVENTS is not a ring buffer")?;
    // SAFETY: the ring buffer owns its map fd, which stays open and unchanged while the AsyncFd owns it.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|err| anyhow::anyhow!("polling the EVENTS ring buffer: {}", std::io::Error::from(err)))?;

    let mut child = spawn_in(&group.procs_file(), &options.command)?;
    let tables = [compiled.table(), compiled.table()];
    let nets = [std::sync::Arc::clone(&network.policy), std::sync::Arc::clone(&network.policy)];
    let mut drainer = Drainer { audit: &mut audit, tables: &tables, clock, written: 0, undecodable: 0 };
    // Routine events do not wake the controller (`submit_flags` in sentra-ebpf/src/maps.rs): a short
    // timer drains them.
    let mut tick = tokio::time::interval(crate::kernel::events::DRAIN_EVERY);
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.context("waiting for the command")?,
            _ = tick.tick() => drainer.drain(ring.get_mut(), &nets)?,
            guard = ring.readable_mut() => {
                let mut guard = guard.context("polling the EVENTS ring buffer")?;
                drainer.drain(guard.get_inner_mut(), &nets)?;
                guard.clear_ready();
            }
        }
    };
    // Events of the last execs may still be in the ring: take them before reporting.
    drainer.drain(ring.get_mut(), &nets)?;
    let (written, undecodable) = (drainer.written, drainer.undecodable);

    maps::release(&mut kernel.ebpf, group.id)?;
    drop(network);
    drop(group);
    let counters = maps::read_stats(&kernel.ebpf)?;
    audit.write(&Record {
        timestamp: audit::now(),
        event: "controller_stop".into(),
        layer: "kernel",
        backend: Some(kernel.backend.as_str()),
        exit_code: Some(exit_code(status)),
        detail: Some(serde_json::json!({
            "events_written": written,
            "events_undecodable": undecodable,
            "events_dropped": counters.events_dropped,
            "exec_decisions": counters.exec_decisions,
            "exec_denied": counters.exec_denied,
            "probe_errors": counters.probe_errors,
        })),
        ..Record::default()
    })?;
    if counters.events_dropped > 0 {
        tracing::warn!("{} events were lost because the ring buffer was full", counters.events_dropped);
    }
    Ok(exit_code(status))
}

/// Moves events from the ring buffer to the audit log; `tables[g]` names the rules of generation `g`.
pub struct Drainer<'a> {
    pub audit: &'a mut AuditLog,
    pub tables: &'a [RuleTable; 2],
    pub clock: Clock,
    pub written: u64,
    pub undecodable: u64,
}

impl Drainer<'_> {
    /// Writes every event waiting in the ring buffer; `nets[g]` names the network rules of generation
    /// `g` (as `tables[g]` names its exec rules).
    ///
    /// # Errors
    /// The audit log cannot be written.
    pub fn drain(
        &mut self,
        ring: &mut RingBuf<MapData>,
        nets: &[std::sync::Arc<policy::network::CompiledNet>; 2],
    ) -> anyhow::Result<()> {
        while let Some(item) = ring.next() {
            match events::decode(&item) {
                Ok(event) => {
                    let record = match &event {
                        events::Event::Exec(exec) => {
                            let table = &self.tables[usize::try_from(exec.generation).unwrap_or(0) % 2];
                            record::exec_record(exec, table, &self.clock)
                        }
                        events::Event::Net(net) => {
                            let rules = &nets[usize::try_from(net.generation).unwrap_or(0) % 2];
                            record::net_record(net, rules, &self.clock)
                        }
                    };
                    self.audit.write(&record)?;
                    self.written += 1;
                }
                Err(err) => {
                    self.undecodable += 1;
                    tracing::warn!("undecodable event: {err}");
                }
            }
        }
        Ok(())
    }
}

/// Starts the command with the child moving itself into the cgroup before it execs, so the command's
/// own exec is already governed.
///
/// # Errors
/// The cgroup cannot be opened or the command cannot be started.
pub fn spawn_in(procs_path: &Path, command: &[String]) -> anyhow::Result<tokio::process::Child> {
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(procs_path)
        .with_context(|| format!("opening {}", procs_path.display()))?;
    let fd = procs.as_raw_fd();
    let mut cmd = tokio::process::Command::new(&command[0]);
    cmd.args(&command[1..]);
    // SAFETY: the closure only calls write(2), which is async-signal-safe; `procs` outlives the spawn.
    unsafe {
        cmd.pre_exec(move || {
            // "0" moves the writing process itself (kernel/cgroup/cgroup.c, cgroup_procs_write_start).
            if libc::write(fd, b"0".as_ptr().cast(), 1) == 1 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let child = cmd.spawn().with_context(|| format!("starting {}", command[0]))?;
    drop(procs);
    Ok(child)
}

/// The shell convention: the exit code, or 128 + the signal that killed it.
#[must_use]
pub fn exit_code(status: ExitStatus) -> i32 {
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Fails unless running as root (loading BPF and creating cgroups need it).
///
/// # Errors
/// Not root.
pub fn require_root() -> anyhow::Result<()> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        bail!("sentra-ctl must run as root: it loads BPF programs and creates cgroups (try sudo)")
    }
}
