//! `sentra-ctl run`: govern one command in a fresh cgroup until it exits (a front over
//! [`crate::enforce::Session`]).

use std::{
    os::{fd::AsRawFd as _, unix::process::ExitStatusExt as _},
    path::{Path, PathBuf},
    process::ExitStatus,
};

use anyhow::{Context as _, bail};
use nix::sys::signal::Signal;
use sentra_common::settings::{Backend, Mode};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    audit::Record,
    cgroup::{self, Cgroup},
    enforce::{ResolverWhen, Session, Start, prepare_policy, require_root},
    kernel::{BackendChoice, pin},
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
    // Taken over before anything else: a signal that comes while loading must not kill `run`
    // between the start of its command and the cleanup.
    let signals = Signals::new()?;
    let prepared = prepare_policy(&options.policy)?;
    prepared.log_warnings();
    // What the kernel's check of the dynamic loader's variables (signal backend) will make of the
    // environment the command inherits: judged now, while the policy's loader paths are at hand.
    let inherited: Vec<_> = std::env::vars_os().collect();
    let loader_refusal = crate::policy::loader_env::refusal(
        inherited.iter().map(|(name, value)| (name.as_os_str(), value.as_os_str())),
        &prepared.exec.loader_paths,
    );
    let root = cgroup::cgroup2_root()?;
    let relative = PathBuf::from(format!("{}/run-{}", cgroup::GOVERNED_PARENT, std::process::id()));
    let group = Cgroup::create(&root, &relative)?;
    // Pinned for the run's lifetime: if this process is killed (even by SIGKILL), its command stays
    // governed until the reaper has killed it, then the pins go.
    let pin_root = pin_root_of(std::process::id());
    let reaper = Reaper::start(&group.path, &pin_root, &options.audit_log)?;
    let cgroups = [(String::from("run"), group)];
    let started = Session::start(Start {
        prepared,
        path: &options.policy,
        backend: options.backend,
        cgroups: &cgroups,
        audit_log: &options.audit_log,
        resolver: ResolverWhen::Governed,
        pin_root: Some(&pin_root),
    })
    .await;
    let mut session = match started {
        Ok(session) => session,
        Err(err) => {
            let _ = pin::remove(&pin_root);
            reaper.finished();
            return Err(err);
        }
    };
    // The command may not signal or trace this controller, nor write its policy or log.
    if let Err(err) = session.protect(&[options.policy.clone(), options.audit_log.clone()]) {
        tracing::warn!("protecting the controller: {}", crate::describe(&err));
    }
    let [(_, group)] = cgroups;
    let governed = match refuse_loader_env(&session, loader_refusal.as_ref(), &options.policy) {
        Ok(()) => govern(&mut session, group, &options.command, signals).await,
        Err(err) => Err(err),
    };
    // Whatever happened, the command's cgroup is gone by now (`govern` and the Cgroup's drop kill
    // it): the pins go, and the reaper is told there is nothing left to do.
    if let Err(err) = pin::remove(&pin_root) {
        tracing::warn!("removing the run's pins: {}", crate::describe(&err));
    }
    reaper.finished();
    governed
}

/// Refuses to start the command when the `signal` backend's kernel would kill every program it
/// starts for its environment's dynamic-loader variables (`LD_PRELOAD`, `LD_LIBRARY_PATH`, …): one
/// clear error instead of a killed program and a record per exec. In audit mode, a warning. The `lsm`
/// backend judges the files actually mapped, not the variables: nothing to say in advance.
fn refuse_loader_env(
    session: &Session,
    refusal: Option<&crate::policy::loader_env::Refusal>,
    policy: &Path,
) -> anyhow::Result<()> {
    let Some(refusal) = refusal else { return Ok(()) };
    if session.backend != Backend::Signal {
        return Ok(());
    }
    let what = format!(
        "the environment this command would start with points the dynamic loader at code {} does not let programs load ({refusal}); on the signal backend the kernel kills every program started with it",
        policy.display()
    );
    if session.policy.mode == Mode::Audit {
        tracing::warn!("{what} (audit mode: it would only be recorded)");
        return Ok(());
    }
    bail!("{what}. Unset the variable, or allow the directory in exec.libraries")
}

/// Runs the command in `group` until it exits, forwarding signals; kills what it leaves behind and
/// writes the stop record. Returns its exit code.
async fn govern(
    session: &mut Session,
    mut group: Cgroup,
    command: &[String],
    mut signals: Signals,
) -> anyhow::Result<i32> {
    tracing::info!(
        backend = session.backend.as_str(),
        cgroup = %group.path.display(),
        "governing {command:?}"
    );
    session.write(&Record {
        command: Some(command.join(" ")),
        cgroup_id: Some(group.id),
        ..session.start_record("controller_start")
    })?;

    let mut child = spawn_in(&group.procs_file(), command)?;
    // A signal that came while loading is buffered by its stream: the first turn forwards it.
    let mut forwarded = None;
    let status = loop {
        let forward = tokio::select! {
            status = child.wait() => break status.context("waiting for the command")?,
            drained = session.drain_when_due() => { drained?; continue; }
            forward = signals.next() => forward,
        };
        // Passed on to the command; whatever it leaves behind is killed with its cgroup below.
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), forward);
        }
        forwarded = Some(forward);
    };
    // Events of the last execs may still be in the ring: take them before reporting.
    session.drain()?;
    // Nothing of the command may outlive it ungoverned: its cgroup is killed before release.
    group.destroy();
    session.release(group.id)?;
    drop(group);
    let mut stop = Record { exit_code: Some(exit_code(status)), ..session.stop_record() };
    if let (Some(signal), Some(detail)) = (forwarded, stop.detail.as_mut()) {
        detail["signal_forwarded"] = signal.as_str().into();
    }
    session.write(&stop)?;
    Ok(exit_code(status))
}

/// SIGTERM, SIGINT and SIGHUP, taken over from the start of `run` and passed on to its command.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next one; cancel-safe.
    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::SIGTERM,
            _ = self.int.recv() => Signal::SIGINT,
            _ = self.hup.recv() => Signal::SIGHUP,
        }
    }
}

/// A process outside the governed cgroup that outlives `run` if it is killed: it waits for `run`'s
/// end of a pipe to close; unless `run` said it finished, it kills the command's cgroup, removes the
/// run's pins and records what happened (`sentra-ctl reap`).
struct Reaper {
    /// Writing `done` here tells the reaper that `run` cleaned up itself.
    pipe: std::fs::File,
    child: std::process::Child,
}

impl Reaper {
    fn start(cgroup: &Path, pin_root: &Path, audit_log: &Path) -> anyhow::Result<Self> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let exe = std::env::current_exe().context("finding sentra-ctl for the reaper")?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("reap")
            .arg("--cgroup")
            .arg(cgroup)
            .arg("--pin-root")
            .arg(pin_root)
            .arg("--audit-log")
            .arg(audit_log)
            .arg("--run-pid")
            .arg(std::process::id().to_string())
            .stdin(std::process::Stdio::from(read))
            .stdout(std::process::Stdio::null());
        // Its own process group: a Ctrl-C meant for `run` does not reach it.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().context("starting the reaper")?;
        Ok(Self { pipe: std::fs::File::from(write), child })
    }

    /// Tells the reaper there is nothing left to do, and waits for it.
    fn finished(mut self) {
        use std::io::Write as _;
        let _ = self.pipe.write_all(b"done");
        drop(self.pipe);
        let _ = self.child.wait();
    }
}

/// `sentra-ctl reap`: waits on stdin until `run` is gone; if it did not say `done`, kills the
/// cgroup, removes the pins and records that the controller was killed.
///
/// # Errors
/// Reading stdin fails.
pub fn reap(cgroup: &Path, pin_root: &Path, audit_log: &Path, run_pid: u32) -> anyhow::Result<()> {
    use std::io::Read as _;
    let mut said = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut said);
    if said == b"done" {
        return Ok(());
    }
    let root = cgroup::cgroup2_root()?;
    let killed = cgroup.starts_with(&root) && cgroup.is_dir();
    if killed {
        let relative = cgroup.strip_prefix(&root).unwrap_or(cgroup).to_path_buf();
        let mut group = Cgroup::create(&root, &relative)?;
        group.destroy();
    }
    let pins_removed = pin::remove(pin_root).is_ok();
    let record = Record {
        timestamp: crate::audit::now(),
        event: "controller_killed".into(),
        layer: "kernel",
        reason: Some(format!(
            "sentra-ctl run (pid {run_pid}) ended without cleaning up: its command was killed with its cgroup while still governed (the run's links were pinned)"
        )),
        detail: Some(serde_json::json!({
            "run_pid": run_pid,
            "cgroup": cgroup,
            "cgroup_killed": killed,
            "pins_removed": pins_removed,
        })),
        ..Record::default()
    };
    crate::audit::AuditLog::open(audit_log)?.write(&record)?;
    Ok(())
}

/// Starts the command with the child moving itself into the cgroup before it execs, so the command's
/// own exec is already governed.
///
/// # Errors
/// The cgroup cannot be opened or the command cannot be started.
fn spawn_in(procs_path: &Path, command: &[String]) -> anyhow::Result<tokio::process::Child> {
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(procs_path)
        .with_context(|| format!("opening {}", procs_path.display()))?;
    let fd = procs.as_raw_fd();
    let mut cmd = tokio::process::Command::new(&command[0]);
    cmd.args(&command[1..]);
    // SAFETY: the closure only calls setrlimit(2) and write(2), which are async-signal-safe; `procs`
    // outlives the spawn.
    unsafe {
        cmd.pre_exec(move || {
            crate::kernel::restore_memlock()?;
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

/// Where the `run` with process id `run_pid` pins its enforcement (beside the daemon's pin root).
#[must_use]
pub fn pin_root_of(run_pid: u32) -> PathBuf {
    PathBuf::from(format!("{}-run-{run_pid}", crate::controller::state::pin_root().display()))
}
