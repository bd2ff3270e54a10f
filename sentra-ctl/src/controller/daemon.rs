//! `sentra-ctl daemon`: pins enforcement, serves the socket, drains events, reloads atomically (a
//! front over [`crate::enforce::Session`]).

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context as _, bail};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    signal::unix::{SignalKind, signal},
};

use super::{
    protocol::{Request, Response, socket},
    state::{GovernedPath, Loaded, State, run_dir, state_file},
};
use crate::{
    audit::{self, Record},
    cgroup::{self, Cgroup},
    dns::Resolver,
    enforce::{ResolverWhen, Session, Start, prepare_policy, require_root},
    kernel::{BackendChoice, maps, net as knet, pin},
};

/// Options of `daemon`.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub policy: PathBuf,
    pub audit_log: PathBuf,
    pub backend: BackendChoice,
    /// Name of the governed cgroup under `<cgroup2 root>/sentra/`; `None`: the policy's
    /// `governed.cgroups`.
    pub cgroup: Option<String>,
    pub pin_root: PathBuf,
}

struct Daemon {
    session: Session,
    state: State,
    /// How long clearing the last retired generation took.
    last_retire_ms: Option<f64>,
    pin_root: PathBuf,
    /// `--cgroup`, which overrides the policy's `governed.cgroups`.
    cgroup_override: Option<String>,
}

/// Runs the controller until `stop` (pins removed) or SIGTERM/SIGINT (pins kept: enforcement goes on).
///
/// # Errors
/// Anything that prevents enforcing; nothing is left half-installed by a fresh start that fails before
/// pinning.
pub async fn run(options: DaemonOptions) -> anyhow::Result<()> {
    require_root()?;
    crate::kernel::keep_freed_memory();
    let dir = run_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let socket = socket();

    let adopting = pin::exists(&options.pin_root);
    let (session, state, steering_lost) =
        if adopting { adopt(&options).await? } else { start_fresh(&options).await? };
    let mut daemon = Daemon {
        session,
        state,
        last_retire_ms: None,
        pin_root: options.pin_root.clone(),
        cgroup_override: options.cgroup.clone(),
    };
    daemon.save_state();
    let mut start =
        daemon.session.start_record(if adopting { "controller_adopt" } else { "controller_start" });
    if let Some(detail) = start.detail.as_mut() {
        detail["cgroups"] = serde_json::json!(daemon.state.cgroups);
        detail["adoptions"] = serde_json::json!(daemon.state.adoptions);
    }
    daemon.session.write(&start)?;

    // A restarted controller given a different policy than the pinned one switches to it atomically;
    // so does one whose resolver could not take its predecessor's address (steered DNS must reach a
    // resolver again; until then steered queries find no one: fail closed).
    if adopting && (steering_lost || options.policy != daemon.session.policy.policy) {
        let reply = daemon.reload(Some(options.policy.to_string_lossy().into_owned()));
        if !reply.ok {
            tracing::warn!(
                "kept the pinned policy (DNS steering still names the previous controller's resolver): {}",
                reply.error.unwrap_or_default()
            );
        }
        daemon.retire_pending();
    }
    daemon.session.drain()?;

    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).with_context(|| format!("binding {}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    eprintln!(
        "sentra-ctl daemon: enforcing ({}), socket {}",
        daemon.session.backend.as_str(),
        socket.display()
    );
    loop {
        tokio::select! {
            drained = daemon.session.drain_when_due() => drained?,
            accepted = listener.accept() => {
                let (stream, _) = accepted.context("accepting on the socket")?;
                if daemon.serve(stream).await? {
                    daemon.session.drain()?;
                    return Ok(());
                }
                daemon.retire_pending();
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    daemon.session.drain()?;
    let _ = std::fs::remove_file(&socket);
    eprintln!("sentra-ctl daemon: exiting; enforcement stays pinned (sentra-ctl stop removes it)");
    Ok(())
}

/// The cgroup names a controller governs: `--cgroup`, else the policy's `governed.cgroups`.
fn cgroup_names(cgroup_override: Option<&String>, policy: &crate::policy::Policy) -> Vec<String> {
    cgroup_override.map_or_else(|| policy.model.governed.cgroup_names(), |name| vec![name.clone()])
}

fn governed_cgroup(name: &str) -> anyhow::Result<Cgroup> {
    if name.is_empty() || name.contains("..") || name.starts_with('/') {
        bail!(
            "--cgroup {name:?}: give a plain name (it is created under <cgroup2>/{}/)",
            cgroup::GOVERNED_PARENT
        );
    }
    let root = cgroup::cgroup2_root()?;
    let mut group = Cgroup::create(&root, &Path::new(cgroup::GOVERNED_PARENT).join(name))?;
    group.keep();
    Ok(group)
}

async fn start_fresh(options: &DaemonOptions) -> anyhow::Result<(Session, State, bool)> {
    let prepared = prepare_policy(&options.policy)?;
    prepared.log_warnings();
    let mut groups = Vec::new();
    for name in cgroup_names(options.cgroup.as_ref(), &prepared.policy) {
        let group = governed_cgroup(&name)?;
        groups.push((name, group));
    }
    let session = Session::start(Start {
        prepared,
        path: &options.policy,
        backend: options.backend,
        cgroups: &groups,
        audit_log: &options.audit_log,
        resolver: ResolverWhen::Always,
        pin_root: Some(&options.pin_root),
    })
    .await?;
    let state = State {
        cgroups: groups.iter().map(|(_, g)| GovernedPath { path: g.path.clone(), id: g.id }).collect(),
        audit_log: options.audit_log.clone(),
        started: audit::now(),
        adoptions: 0,
        reloads: 0,
    };
    Ok((session, state, false))
}

async fn adopt(options: &DaemonOptions) -> anyhow::Result<(Session, State, bool)> {
    let Loaded { mut state, policy, backend, tables } = State::load(&state_file()).with_context(|| {
        format!(
            "pins exist under {} but {} is unreadable; `sentra-ctl stop --force` clears them",
            options.pin_root.display(),
            state_file().display()
        )
    })?;
    state.adoptions += 1;
    let (session, adopted) =
        Session::adopt(&options.pin_root, policy, backend, tables, &options.audit_log).await?;
    tracing::info!("adopted {} addresses learned by the previous controller", adopted.learned);
    Ok((session, state, adopted.steering_lost))
}

impl Daemon {
    fn save_state(&self) {
        if let Err(err) = self.state.save(&state_file(), &self.session) {
            tracing::warn!("saving {}: {err:#}", state_file().display());
        }
    }

    /// Answers one connection; returns true when the controller must exit (after `stop`).
    async fn serve(&mut self, stream: UnixStream) -> anyhow::Result<bool> {
        // The socket's mode already keeps others out; the peer's credentials are checked as well.
        let uid = stream.peer_cred().map_or(u32::MAX, |c| c.uid());
        let (read, mut write) = stream.into_split();
        let mut line = String::new();
        let mut reader = BufReader::new(read);
        if reader.read_line(&mut line).await.is_err() {
            return Ok(false);
        }
        let mut stop = false;
        let response = if uid != 0 {
            Response::error(format!("uid {uid} may not control sentra (root only)"))
        } else {
            match serde_json::from_str::<Request>(&line) {
                Err(err) => Response::error(format!("bad request: {err}")),
                Ok(Request::Status) => self.status(),
                Ok(Request::Reload { policy }) => self.reload(policy),
                Ok(Request::Stop) => {
                    stop = true;
                    self.stop()
                }
            }
        };
        let mut reply = serde_json::to_vec(&response)?;
        reply.push(b'\n');
        let _ = write.write_all(&reply).await;
        Ok(stop && response.ok)
    }

    fn status(&mut self) -> Response {
        let store = self.session.store();
        let active = maps::active_generation(store);
        let counters = maps::read_stats(store);
        let governed = maps::governed(store);
        let net_counters = knet::read_stats(store);
        match (active, counters, governed, net_counters) {
            (Ok(active), Ok(counters), Ok(governed), Ok(net_counters)) => {
                let generations = self.session.generations();
                let table = generations.exec(active.generation);
                let net = generations.net(active.generation);
                let resolver = self.session.resolver();
                let drained = self.session.drained();
                Response::ok(serde_json::json!({
                    "backend": self.session.backend.as_str(),
                    "mode": self.session.policy.mode.as_str(),
                    "policy": self.session.policy.policy,
                    "policy_version": self.session.policy.policy_version,
                    "policy_hash": self.session.policy.policy_hash,
                    "generation": active.generation,
                    "exec_rules": table.rules.len(),
                    "exec_default": table.default_effect().as_str(),
                    "governed_cgroups": self.state.cgroups,
                    "governed_ids_in_kernel": governed.iter().map(|(id, _)| id).collect::<Vec<_>>(),
                    "pinned_links": pin::pinned_links(&self.pin_root),
                    "counters": counters,
                    "network": {
                        "governed": net.governed,
                        "loopback": net.loopback,
                        "cidr_entries": net.cidr.len(),
                        "domain_rules": net.domains.len(),
                        "resolver": resolver.map(|r| format!("{}:{}", r.addr.v4, r.addr.port)),
                        "learned_addresses": resolver.map_or(0, Resolver::learned),
                        "counters": net_counters,
                    },
                    "events_written_by_this_controller": drained.events_written,
                    "events_undecodable": drained.events_undecodable,
                    "adoptions": self.state.adoptions,
                    "reloads": self.state.reloads,
                    "last_retire_ms": self.last_retire_ms,
                    "started": self.state.started,
                }))
            }
            (a, c, g, n) => Response::error(format!(
                "reading the maps failed: {:?} {:?} {:?} {:?}",
                a.err().map(|e| e.to_string()),
                c.err().map(|e| e.to_string()),
                g.err().map(|e| e.to_string()),
                n.err().map(|e| e.to_string())
            )),
        }
    }

    /// Validates and compiles the policy; only then switches generations. A rejected policy changes
    /// nothing.
    fn reload(&mut self, policy: Option<String>) -> Response {
        let path = policy.map_or_else(|| self.session.policy.policy.clone(), PathBuf::from);
        let prepared = match prepare_policy(&path) {
            Ok(p) => p,
            Err(err) => return Response::error(format!("policy rejected, the enforced one stays: {err:#}")),
        };
        // The governed cgroups (and the programs attached to them) are fixed while a controller runs.
        let wanted = cgroup_names(self.cgroup_override.as_ref(), &prepared.policy);
        let governed: Vec<String> = self
            .state
            .cgroups
            .iter()
            .filter_map(|g| g.path.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        if wanted != governed {
            return Response::error(format!(
                "policy rejected, the enforced one stays: {}: governed.cgroups is [{}] but this controller governs [{}]; the governed cgroups are fixed while it runs: stop it (SIGTERM keeps enforcement pinned), then `sentra-ctl stop` and start the daemon with the new policy",
                path.display(),
                wanted.join(", "),
                governed.join(", ")
            ));
        }
        let exec_rules = prepared.exec.table.rules.len();
        let net = Arc::clone(&prepared.net);
        let flipped = match self.session.switch(prepared, &path) {
            Ok(flipped) => flipped,
            Err(err) => {
                return Response::error(format!(
                    "loading into the kernel failed, the enforced policy stays: {}",
                    crate::describe(&err)
                ));
            }
        };
        let generation = flipped.generation;
        let flip_ms = flipped.until_flip.as_secs_f64() * 1000.0;
        self.state.reloads += 1;
        self.save_state();
        let info = &self.session.policy;
        let (policy, policy_hash) = (info.policy.clone(), info.policy_hash.clone());
        let _ = self.session.write(&Record {
            timestamp: audit::now(),
            event: "policy_reload".into(),
            layer: "kernel",
            policy_generation: Some(generation),
            detail: Some(serde_json::json!({
                "policy": policy,
                "policy_hash": policy_hash,
                "exec_rules": exec_rules,
                "network_governed": net.governed,
                "cidr_entries": net.cidr.len(),
                "domain_rules": net.domains.len(),
                "flip_ms": flip_ms,
            })),
            ..Record::default()
        });
        Response::ok(serde_json::json!({
            "generation": generation,
            "policy": policy,
            "policy_hash": policy_hash,
            "exec_rules": exec_rules,
            "flip_ms": flip_ms,
        }))
    }

    /// Clears the generation the last reload retired (after the reply: the new policy already
    /// decides, and the wait for running programs is one RCU grace period). Requests are served one
    /// at a time, so nothing writes that generation before this is done.
    fn retire_pending(&mut self) {
        if let Some(took) = self.session.retire_pending() {
            self.last_retire_ms = Some(took.as_secs_f64() * 1000.0);
        }
    }

    /// Stops governing and removes every pin; programs detach once nothing holds them.
    fn stop(&mut self) -> Response {
        for group in &self.state.cgroups {
            let _ = self.session.release(group.id);
        }
        if let Err(err) = pin::remove(&self.pin_root) {
            return Response::error(format!("removing pins: {}", crate::describe(&err)));
        }
        let _ = std::fs::remove_file(state_file());
        let _ = std::fs::remove_file(socket());
        for group in &self.state.cgroups {
            // Left in place if processes are still inside (they run on, ungoverned).
            let _ = std::fs::remove_dir(&group.path);
        }
        let record = self.session.stop_record();
        let _ = self.session.write(&record);
        Response::ok(serde_json::json!({ "stopped": true }))
    }
}
