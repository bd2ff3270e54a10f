//! `sentra-ctl daemon`: pins enforcement, serves the socket, drains events, reloads atomically.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context as _, bail};
use aya::maps::{MapData, RingBuf};
use sentra_common::settings::Backend;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, unix::AsyncFd},
    net::{UnixListener, UnixStream},
    signal::unix::{SignalKind, signal},
};

use super::{
    protocol::{Request, Response, socket},
    state::{GovernedPath, State, run_dir, state_file},
};
use crate::{
    audit::{self, AuditLog, Record},
    cgroup::{self, Cgroup},
    dns::{NetworkGovernance, ResolverWhen},
    kernel::{
        BackendChoice, Kernel,
        maps::{self, MapStore},
        net as knet, pin,
        rcu::RcuBarrier,
    },
    policy::{exec::CompiledExec, network::CompiledNet},
    record::Clock,
    run::{Drainer, prepare_policy, require_root},
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
    store: Box<dyn MapStore>,
    /// The network part: the resolver, and the compiled `network:` section being enforced.
    network: NetworkGovernance,
    /// The `network:` section of each generation (names the rules of network events).
    nets: [Arc<CompiledNet>; 2],
    /// The exec rules this process wrote into the active generation (`None` when a predecessor did):
    /// retiring it clears exactly their keys instead of walking the maps.
    active_exec: Option<CompiledExec>,
    /// The generation the last reload replaced, until it is cleared.
    retiring: Option<Retiring>,
    /// How long clearing the last retired generation took.
    last_retire_ms: Option<f64>,
    state: State,
    backend: Backend,
    barrier: RcuBarrier,
    audit: AuditLog,
    clock: Clock,
    written: u64,
    undecodable: u64,
    pin_root: PathBuf,
    /// `--cgroup`, which overrides the policy's `governed.cgroups`.
    cgroup_override: Option<String>,
}

/// A generation replaced by a reload, still holding its entries.
struct Retiring {
    flipped: maps::Flipped,
    /// What this process wrote into it, when it did.
    written: Option<CompiledExec>,
    net: Arc<CompiledNet>,
    mode: sentra_common::settings::Mode,
    /// The policy now enforced, to be stored in the parsed-policy cache.
    policy: crate::policy::Policy,
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
    let barrier = RcuBarrier::new().context("creating the RCU barrier maps")?;
    let mut audit = AuditLog::open(&options.audit_log)?;

    let adopted = pin::exists(&options.pin_root);
    let Started { store, state, backend, network, net, exec, steering_lost } =
        if adopted { adopt(&options).await? } else { start_fresh(&options).await? };
    let mut daemon = Daemon {
        store,
        network,
        nets: [Arc::clone(&net), net],
        active_exec: exec,
        retiring: None,
        last_retire_ms: None,
        state,
        backend,
        barrier,
        audit: AuditLog::open(&options.audit_log)?,
        clock: Clock::new(),
        written: 0,
        undecodable: 0,
        pin_root: options.pin_root.clone(),
        cgroup_override: options.cgroup.clone(),
    };
    daemon.state.save(&state_file())?;
    crate::kernel::release_freed_memory();
    audit.write(&Record {
        timestamp: audit::now(),
        event: if adopted { "controller_adopt" } else { "controller_start" }.into(),
        layer: "kernel",
        backend: Some(backend.as_str()),
        detail: Some(serde_json::json!({
            "policy": daemon.state.policy,
            "policy_hash": daemon.state.policy_hash,
            "cgroups": daemon.state.cgroups,
            "adoptions": daemon.state.adoptions,
        })),
        ..Record::default()
    })?;
    drop(audit);

    // A restarted controller given a different policy than the pinned one switches to it atomically;
    // so does one whose resolver could not take its predecessor's address (steered DNS must reach a
    // resolver again; until then steered queries find no one: fail closed).
    if adopted && (steering_lost || options.policy != daemon.state.policy) {
        let reply = daemon.reload(Some(options.policy.to_string_lossy().into_owned()));
        if !reply.ok {
            tracing::warn!(
                "kept the pinned policy (DNS steering still names the previous controller's resolver): {}",
                reply.error.unwrap_or_default()
            );
        }
    }

    let ring = daemon.store.take_map(maps::EVENTS).context("map EVENTS missing")?;
    let ring: RingBuf<MapData> = RingBuf::try_from(ring).context("map EVENTS is not a ring buffer")?;
    // SAFETY: the ring buffer owns its map fd, which stays open and unchanged while the AsyncFd owns it.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|err| anyhow::anyhow!("polling the EVENTS ring buffer: {}", std::io::Error::from(err)))?;
    daemon.drain(ring.get_mut())?;

    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).with_context(|| format!("binding {}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    eprintln!("sentra-ctl daemon: enforcing ({}), socket {}", backend.as_str(), socket.display());
    // Routine events do not wake the controller (`submit_flags` in sentra-ebpf/src/maps.rs): a short
    // timer drains them.
    let mut tick = tokio::time::interval(crate::kernel::events::DRAIN_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => daemon.drain(ring.get_mut())?,
            guard = ring.readable_mut() => {
                let mut guard = guard.context("polling the EVENTS ring buffer")?;
                daemon.drain(guard.get_inner_mut())?;
                guard.clear_ready();
            }
            accepted = listener.accept() => {
                let (stream, _) = accepted.context("accepting on the socket")?;
                if daemon.serve(stream).await? {
                    daemon.drain(ring.get_mut())?;
                    return Ok(());
                }
                daemon.retire_pending();
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    daemon.drain(ring.get_mut())?;
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

/// What starting (fresh or by adoption) yields.
struct Started {
    store: Box<dyn MapStore>,
    state: State,
    backend: Backend,
    network: NetworkGovernance,
    net: Arc<CompiledNet>,
    /// The exec rules written into the active generation, when this process wrote them.
    exec: Option<CompiledExec>,
    /// An adopted generation steers DNS to a resolver address this controller could not take over.
    steering_lost: bool,
}

async fn start_fresh(options: &DaemonOptions) -> anyhow::Result<Started> {
    let (mut policy, compiled, net) = prepare_policy(&options.policy)?;
    policy.remember();
    crate::run::log_warnings(&policy, &compiled);
    let mode = policy.model.mode.into();
    let mut kernel = Kernel::load(options.backend)?;
    maps::write_generation(&mut kernel.ebpf, 0, &compiled, mode)?;
    maps::activate(&mut kernel.ebpf, 0, kernel.backend)?;
    let mut groups = Vec::new();
    for name in cgroup_names(options.cgroup.as_ref(), &policy) {
        let group = governed_cgroup(&name)?;
        maps::govern(&mut kernel.ebpf, group.id, group.level)?;
        groups.push((name, group));
    }
    // The network programs are attached even when this policy does not govern the network, and the
    // resolver runs: a reload can then start governing it.
    let dirs: Vec<(&str, &Path)> = groups.iter().map(|(name, g)| (name.as_str(), g.path.as_path())).collect();
    let network =
        NetworkGovernance::start(&mut kernel, &dirs, 0, &net, mode, &options.audit_log, ResolverWhen::Always)
            .await?;
    let unpinned = pin::pin(&mut kernel, &options.pin_root)?;
    if !unpinned.is_empty() {
        tracing::warn!("not pinnable on this kernel (stop with the controller): {unpinned:?}");
    }
    let state = State {
        policy: options.policy.clone(),
        policy_hash: format!("{:016x}", policy.hash),
        policy_version: policy.model.version.as_ref().map(ToString::to_string),
        mode: sentra_common::settings::Mode::from(policy.model.mode).as_str().into(),
        backend: kernel.backend.as_str().into(),
        tables: [compiled.table(), crate::policy::exec::RuleTable::default()],
        cgroups: groups.iter().map(|(_, g)| GovernedPath { path: g.path.clone(), id: g.id }).collect(),
        audit_log: options.audit_log.clone(),
        started: audit::now(),
        adoptions: 0,
        reloads: 0,
    };
    let backend = kernel.backend;
    Ok(Started {
        store: Box::new(kernel.ebpf),
        state,
        backend,
        network,
        net,
        exec: Some(compiled),
        steering_lost: false,
    })
}

async fn adopt(options: &DaemonOptions) -> anyhow::Result<Started> {
    let mut store = pin::open(&options.pin_root)?;
    let mut state = State::load(&state_file()).with_context(|| {
        format!(
            "pins exist under {} but {} is unreadable; `sentra-ctl stop --force` clears them",
            options.pin_root.display(),
            state_file().display()
        )
    })?;
    state.adoptions += 1;
    let backend = match state.backend.as_str() {
        "lsm" => Backend::Lsm,
        _ => Backend::Signal,
    };
    let generation = maps::active_generation(&mut store)?.generation;
    // The network rules of the pinned generation, from the policy file if it is still the one pinned
    // (they name the rules in events, and tell the resolver which names to forward).
    let net = prepare_policy(&state.policy)
        .ok()
        .filter(|(policy, _, _)| format!("{:016x}", policy.hash) == state.policy_hash)
        .map(|(_, _, net)| net)
        .unwrap_or_default();
    // The resolver takes its predecessor's address if it can: the pinned generation steers there.
    let steering = knet::steering(&store, generation)?;
    let network = NetworkGovernance::serve(
        &store,
        generation,
        &net,
        &options.audit_log,
        ResolverWhen::Always,
        steering.map(|r| r.port),
    )
    .await?;
    let steering_lost = steering.is_some() && network.resolver != steering;
    let adopted = network.adopt_learned();
    tracing::info!("adopted {adopted} addresses learned by the previous controller");
    Ok(Started { store: Box::new(store), state, backend, network, net, exec: None, steering_lost })
}

impl Daemon {
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> anyhow::Result<()> {
        let mut drainer = Drainer {
            audit: &mut self.audit,
            tables: &self.state.tables,
            clock: self.clock,
            written: 0,
            undecodable: 0,
        };
        drainer.drain(ring, &self.nets)?;
        self.written += drainer.written;
        self.undecodable += drainer.undecodable;
        Ok(())
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
        let active = maps::active_generation(self.store.as_mut());
        let counters = maps::read_stats(self.store.as_ref());
        let governed = maps::governed(self.store.as_mut());
        let net_counters = knet::read_stats(self.store.as_ref());
        match (active, counters, governed, net_counters) {
            (Ok(active), Ok(counters), Ok(governed), Ok(net_counters)) => {
                let table = &self.state.tables[usize::try_from(active.generation).unwrap_or(0) % 2];
                let net = &self.nets[usize::try_from(active.generation).unwrap_or(0) % 2];
                Response::ok(serde_json::json!({
                    "backend": self.backend.as_str(),
                    "mode": self.state.mode,
                    "policy": self.state.policy,
                    "policy_version": self.state.policy_version,
                    "policy_hash": self.state.policy_hash,
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
                        "resolver": self.network.resolver.map(|r| format!("{}:{}", r.v4, r.port)),
                        "learned_addresses": self.network.learned(),
                        "counters": net_counters,
                    },
                    "events_written_by_this_controller": self.written,
                    "events_undecodable": self.undecodable,
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
        let path = policy.map_or_else(|| self.state.policy.clone(), PathBuf::from);
        let (policy, mut compiled, net) = match prepare_policy(&path) {
            Ok(p) => p,
            Err(err) => return Response::error(format!("policy rejected, the enforced one stays: {err:#}")),
        };
        // The governed cgroups (and the programs attached to them) are fixed while a controller runs.
        let wanted = cgroup_names(self.cgroup_override.as_ref(), &policy);
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
        // A retirement still pending (normally done right after the previous reply) must finish
        // first: the generation it clears is the one this reload writes.
        self.retire_pending();
        let mode = policy.model.mode.into();
        let flipped = match maps::flip_generation(
            self.store.as_mut(),
            &compiled,
            mode,
            self.backend,
            &mut self.network.reload_part(Arc::clone(&net), mode),
        ) {
            Ok(flipped) => flipped,
            Err(err) => {
                return Response::error(format!(
                    "loading into the kernel failed, the enforced policy stays: {err}"
                ));
            }
        };
        let generation = flipped.generation;
        let flip_ms = flipped.until_flip.as_secs_f64() * 1000.0;
        let exec_rules = compiled.rules.len();
        // The rules move to the table; what stays in `active_exec` is the keys written.
        self.state.tables[usize::try_from(generation).unwrap_or(0) % 2] = compiled.take_table();
        let written = self.active_exec.replace(compiled);
        self.nets[usize::try_from(generation).unwrap_or(0) % 2] = Arc::clone(&net);
        self.state.policy = path;
        self.state.policy_hash = format!("{:016x}", policy.hash);
        self.state.policy_version = policy.model.version.as_ref().map(ToString::to_string);
        self.state.mode = sentra_common::settings::Mode::from(policy.model.mode).as_str().into();
        self.retiring = Some(Retiring { flipped, written, net: Arc::clone(&net), mode, policy });
        self.state.reloads += 1;
        if let Err(err) = self.state.save(&state_file()) {
            tracing::warn!("saving {}: {err:#}", state_file().display());
        }
        let _ = self.audit.write(&Record {
            timestamp: audit::now(),
            event: "policy_reload".into(),
            layer: "kernel",
            policy_generation: Some(generation),
            detail: Some(serde_json::json!({
                "policy": self.state.policy,
                "policy_hash": self.state.policy_hash,
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
            "policy": self.state.policy,
            "policy_hash": self.state.policy_hash,
            "exec_rules": exec_rules,
            "flip_ms": flip_ms,
        }))
    }

    /// Clears the generation the last reload retired (after the reply: the new policy already decides,
    /// and the wait for running programs is an RCU grace period, ~10 ms). Requests are served one at a
    /// time, so nothing writes that generation before this is done.
    fn retire_pending(&mut self) {
        let Some(mut retiring) = self.retiring.take() else {
            return;
        };
        let started = std::time::Instant::now();
        let retired = maps::retire_generation(
            self.store.as_mut(),
            &retiring.flipped,
            &self.barrier,
            retiring.written.as_ref(),
            &mut self.network.reload_part(retiring.net, retiring.mode),
        );
        self.last_retire_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
        // It stays marked dirty if this failed: the next reload's write sweeps it.
        if let Err(err) = retired {
            tracing::warn!("clearing retired generation {}: {err}", retiring.flipped.old);
        }
        // What the reload freed stays with the allocator for the next one (`keep_freed_memory`).
        retiring.policy.remember();
    }

    /// Stops governing and removes every pin; programs detach once nothing holds them.
    fn stop(&mut self) -> Response {
        for group in &self.state.cgroups {
            let _ = maps::release(self.store.as_mut(), group.id);
        }
        if let Err(err) = pin::remove(&self.pin_root) {
            return Response::error(format!("removing pins: {err}"));
        }
        let _ = std::fs::remove_file(state_file());
        let _ = std::fs::remove_file(socket());
        for group in &self.state.cgroups {
            // Left in place if processes are still inside (they run on, ungoverned).
            let _ = std::fs::remove_dir(&group.path);
        }
        let _ = self.audit.write(&Record {
            timestamp: audit::now(),
            event: "controller_stop".into(),
            layer: "kernel",
            detail: Some(serde_json::json!({ "events_written": self.written })),
            ..Record::default()
        });
        Response::ok(serde_json::json!({ "stopped": true }))
    }
}
