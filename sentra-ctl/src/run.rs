//! `sentra-ctl run`: govern one command in a fresh cgroup until it exits (a front over
//! [`crate::enforce::Session`]).

use std::{
    os::{fd::AsRawFd as _, unix::process::ExitStatusExt as _},
    path::{Path, PathBuf},
    process::ExitStatus,
};

use anyhow::{Context as _, bail};

use crate::{
    audit::Record,
    cgroup::{self, Cgroup},
    enforce::{ResolverWhen, Session, Start, prepare_policy, require_root},
    kernel::BackendChoice,
};

/// Options of `run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub policy: PathBuf,
    pub audit_log: PathBuf,
    pub backend: BackendChoice,
    pub command: Vec<String>,
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
    let prepared = prepare_policy(&options.policy)?;
    prepared.log_warnings();
    let root = cgroup::cgroup2_root()?;
    let relative = PathBuf::from(format!("{}/run-{}", cgroup::GOVERNED_PARENT, std::process::id()));
    let group = Cgroup::create(&root, &relative)?;
    let cgroups = [(String::from("run"), group)];
    let mut session = Session::start(Start {
        prepared,
        path: &options.policy,
        backend: options.backend,
        cgroups: &cgroups,
        audit_log: &options.audit_log,
        resolver: ResolverWhen::Governed,
        pin_root: None,
    })
    .await?;
    let [(_, group)] = cgroups;
    tracing::info!(
        backend = session.backend.as_str(),
        cgroup = %group.path.display(),
        "governing {:?}",
        options.command
    );
    session.write(&Record {
        command: Some(options.command.join(" ")),
        cgroup_id: Some(group.id),
        ..session.start_record("controller_start")
    })?;

    let mut child = spawn_in(&group.procs_file(), &options.command)?;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.context("waiting for the command")?,
            drained = session.drain_when_due() => drained?,
        }
    };
    // Events of the last execs may still be in the ring: take them before reporting.
    session.drain()?;
    session.release(group.id)?;
    drop(group);
    session.write(&Record { exit_code: Some(exit_code(status)), ..session.stop_record() })?;
    Ok(exit_code(status))
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
