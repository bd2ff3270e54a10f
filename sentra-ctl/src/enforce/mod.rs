//! One enforcement session: loading (or adopting pinned) programs and maps, governing cgroups,
//! attaching every program (exec and network), the policy generations, the resolver, draining the
//! ring buffer into the audit log, and the start and stop records. `sentra-ctl run` and the daemon
//! are fronts over it.

pub mod drain;
pub mod generations;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context as _, bail};
use sentra_common::settings::{Backend, Mode};
use serde::{Deserialize, Serialize};

use self::{
    drain::{Drained, Events},
    generations::{ExecTables, Flipped, Generations},
};
use crate::{
    audit::{self, AuditLog, Record},
    cgroup::Cgroup,
    dns::{self, Resolver},
    kernel::{
        BackendChoice, Kernel, KernelError, OwnedLink, maps, net as knet, pin, rcu::RcuBarrier,
        store::MapStore,
    },
    policy::{self, Policy, exec::CompiledExec, network::CompiledNet},
};

/// A policy loaded, checked and compiled for both kernel parts.
pub struct Prepared {
    pub policy: Policy,
    pub exec: CompiledExec,
    pub net: Arc<CompiledNet>,
}

/// Loads, checks and compiles a policy for the kernel: its exec and network parts.
///
/// # Errors
/// Unsafe file ownership or permissions, parse or compile errors (a network section with domain rules
/// but no upstream resolver among them).
pub fn prepare_policy(path: &Path) -> anyhow::Result<Prepared> {
    policy::check_file_safety(path)?;
    // Not stored in the parsed-policy cache here: each caller does it when no one waits for it.
    let policy = Policy::read(path)?;
    // The shell layer's regexes are part of the policy too: a bad one rejects the whole file here, so
    // that `policy check` and a reload refuse what sentra-shell could not use.
    policy::shell::ShellMatcher::validate(&policy)?;
    let exec = policy::exec::compile(&policy)?;
    let net = Arc::new(policy::network::compile(&policy)?);
    dns::check_upstream(&net)?;
    Ok(Prepared { policy, exec, net })
}

impl Prepared {
    /// Logs the policy's warnings (once, when a controller starts enforcing it).
    pub fn log_warnings(&self) {
        for warning in self.policy.warnings.iter().chain(&self.exec.warnings) {
            tracing::warn!("{}: {}", self.policy.file.display(), warning.message);
        }
    }
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

/// Which policy is enforced, as records, the state file and `status` name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyInfo {
    pub policy: PathBuf,
    pub policy_hash: String,
    pub policy_version: Option<String>,
    pub mode: Mode,
}

impl PolicyInfo {
    fn of(policy: &Policy, path: &Path) -> Self {
        Self {
            policy: path.to_path_buf(),
            policy_hash: format!("{:016x}", policy.hash),
            policy_version: policy.model.version.as_ref().map(ToString::to_string),
            mode: policy.model.mode,
        }
    }
}

/// When the resolver runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolverWhen {
    /// Only when the policy governs the network (`sentra-ctl run`: the policy never changes).
    Governed,
    /// Always (the daemon: a reload may start governing the network or add domain rules).
    Always,
}

/// How to start a fresh session.
pub struct Start<'a> {
    pub prepared: Prepared,
    /// The policy's path as given (what a reload without a file reads again).
    pub path: &'a Path,
    pub backend: BackendChoice,
    /// The governed cgroups, by name.
    pub cgroups: &'a [(String, Cgroup)],
    pub audit_log: &'a Path,
    pub resolver: ResolverWhen,
    /// Pin programs, links and maps here (the daemon): enforcement then outlives this process.
    pub pin_root: Option<&'a Path>,
}

/// What adopting pinned enforcement found.
pub struct Adopted {
    /// The pinned generation steers DNS to a resolver address this controller could not take over.
    pub steering_lost: bool,
    /// Learned addresses taken over from the previous controller.
    pub learned: usize,
}

/// A running enforcement session.
pub struct Session {
    store: Box<dyn MapStore>,
    /// Attachments this process holds: those it did not pin detach when the session is dropped.
    #[expect(dead_code, reason = "held for its Drop, never read")]
    links: Vec<(String, OwnedLink)>,
    pub backend: Backend,
    /// Why `lsm` was not chosen under `auto`, if it was not.
    pub lsm_refusal: Option<String>,
    /// Self-protection hooks this kernel cannot guard (empty for a session adopted from pins: the
    /// controller that loaded them reported its own).
    pub unguarded: Vec<String>,
    /// The enforced policy.
    pub policy: PolicyInfo,
    generations: Generations,
    resolver: Option<Resolver>,
    barrier: RcuBarrier,
    events: Events,
    /// The policy last switched to, to be stored in the parsed-policy cache once nobody waits.
    remember: Option<Policy>,
}

impl Session {
    /// Loads the programs, installs the policy as the first generation, governs the cgroups and
    /// attaches every program to them; pins everything when asked.
    ///
    /// # Errors
    /// Anything that prevents enforcing.
    pub async fn start(start: Start<'_>) -> anyhow::Result<Self> {
        let Start { prepared, path, backend, cgroups, audit_log, resolver, pin_root } = start;
        let Prepared { mut policy, exec, net } = prepared;
        let mode = policy.model.mode;
        let barrier = RcuBarrier::new().context("creating the RCU barrier maps")?;
        // Opened once: the event drain and the resolver write through clones of it.
        let audit = AuditLog::open_owned(audit_log)?;
        let mut kernel = Kernel::load(backend)?;
        // The resolver binds first: the network generation steers DNS to its address.
        let resolver = if net.governed || resolver == ResolverWhen::Always {
            Some(Resolver::start(&kernel.ebpf, 0, &net, audit.clone(), None).await?)
        } else {
            None
        };
        let generations =
            Generations::install(&mut kernel.ebpf, kernel.backend, exec, net, mode, resolver.as_ref())?;
        let mut dirs = Vec::new();
        for (name, group) in cgroups {
            maps::govern(&mut kernel.ebpf, group.id, group.level, 0)?;
            let dir = std::fs::File::open(&group.path)
                .with_context(|| format!("opening {}", group.path.display()))?;
            dirs.push((name.as_str(), dir));
        }
        // The network programs are attached even when this policy does not govern the network: a
        // reload can then start governing it.
        kernel.govern_network(&dirs)?;
        if let Some(root) = pin_root {
            let unpinned = pin::pin(&mut kernel, root)?;
            if !unpinned.is_empty() {
                tracing::warn!("not pinnable on this kernel (stop with the controller): {unpinned:?}");
            }
        }
        policy.remember();
        let Kernel { mut ebpf, backend, lsm_refusal, unguarded, links } = kernel;
        let events = Events::open(&mut ebpf, audit)?;
        // What compiling and writing the first generation allocated is not needed again soon.
        crate::kernel::release_freed_memory();
        Ok(Self {
            store: Box::new(ebpf),
            links,
            backend,
            lsm_refusal,
            unguarded,
            policy: PolicyInfo::of(&policy, path),
            generations,
            resolver,
            barrier,
            events,
            remember: None,
        })
    }

    /// Takes over the enforcement a previous controller left pinned under `pin_root`, with what its
    /// state file said (`policy`, `backend`, `tables`). The resolver takes its predecessor's port
    /// if it can (the pinned generation steers there) and the addresses it learned.
    ///
    /// # Errors
    /// The pins or maps cannot be opened, the resolver cannot start.
    pub async fn adopt(
        pin_root: &Path,
        policy: PolicyInfo,
        backend: Backend,
        tables: ExecTables,
        audit_log: &Path,
    ) -> anyhow::Result<(Self, Adopted)> {
        let barrier = RcuBarrier::new().context("creating the RCU barrier maps")?;
        let audit = AuditLog::open_owned(audit_log)?;
        let mut store = pin::open(pin_root)?;
        let generation = maps::active_generation(&mut store)?.generation;
        // The network rules of the pinned generation, from the policy file if it is still the one
        // pinned (they name the rules in events, and tell the resolver which names to forward). Only
        // the network part is compiled: the exec tables come from the state file.
        let net = policy::check_file_safety(&policy.policy)
            .ok()
            .and_then(|()| Policy::read(&policy.policy).ok())
            .filter(|pinned| format!("{:016x}", pinned.hash) == policy.policy_hash)
            .and_then(|pinned| policy::network::compile(&pinned).ok())
            .map(Arc::new)
            .unwrap_or_default();
        let steering = knet::steering(&store, generation)?;
        let resolver =
            Resolver::start(&store, generation, &net, audit.clone(), steering.map(|r| r.port)).await?;
        let adopted = Adopted {
            steering_lost: steering.is_some_and(|s| s != resolver.addr),
            learned: resolver.adopt_learned(),
        };
        let generations = Generations::adopt(&mut store, tables, net)?;
        let events = Events::open(&mut store, audit)?;
        // What compiling the pinned policy's network part allocated is not needed again soon.
        crate::kernel::release_freed_memory();
        let session = Self {
            store: Box::new(store),
            links: Vec::new(),
            backend,
            lsm_refusal: None,
            unguarded: Vec::new(),
            policy,
            generations,
            resolver: Some(resolver),
            barrier,
            events,
            remember: None,
        };
        Ok((session, adopted))
    }

    /// Waits until events are due, then writes them to the audit log ([`Events::due`]).
    ///
    /// # Errors
    /// The ring buffer cannot be polled, or the audit log written.
    pub async fn drain_when_due(&mut self) -> anyhow::Result<()> {
        self.events.due().await?;
        self.drain()
    }

    /// Writes every event waiting in the ring buffer to the audit log.
    ///
    /// # Errors
    /// The audit log cannot be written.
    pub fn drain(&mut self) -> anyhow::Result<()> {
        self.events.drain(&self.generations)?;
        // Read after the ring is empty: a loss counted now happened before this drain.
        match maps::events_dropped(self.store.as_ref()) {
            Ok(dropped) => self.events.record_loss(dropped)?,
            Err(err) => tracing::warn!("reading the lost-event count: {}", crate::describe(&err)),
        }
        Ok(())
    }

    /// After a rotation (SIGHUP): the events so far are written, then the log is reopened at its path
    /// if it was renamed or replaced, with a record saying so.
    ///
    /// # Errors
    /// The log cannot be written or reopened.
    pub fn reopen_log(&mut self) -> anyhow::Result<()> {
        self.drain()?;
        self.events.revalidate_log()?;
        Ok(())
    }

    /// The exec denials of tasks in cgroup `cgroup_id` since `since_boot_ns`, after draining what the
    /// kernel has submitted (a denial wakes the drain, but the question may come first).
    ///
    /// # Errors
    /// The audit log cannot be written.
    pub fn denials_since(
        &mut self,
        cgroup_id: u64,
        since_boot_ns: u64,
        limit: usize,
    ) -> anyhow::Result<Vec<crate::record::KernelDenial>> {
        self.drain()?;
        Ok(self.events.denials_since(cgroup_id, since_boot_ns, limit))
    }

    /// Switches to `prepared` atomically (see [`Generations::switch`]); the old generation is
    /// cleared by [`Self::retire_pending`].
    ///
    /// # Errors
    /// A map update fails; the enforced policy stays.
    pub fn switch(&mut self, prepared: Prepared, path: &Path) -> Result<Flipped, KernelError> {
        let Prepared { policy, exec, net } = prepared;
        self.remember_pending();
        let flipped = self.generations.switch(
            self.store.as_mut(),
            self.backend,
            &self.barrier,
            exec,
            net,
            policy.model.mode,
            self.resolver.as_ref(),
        )?;
        self.policy = PolicyInfo::of(&policy, path);
        self.remember = Some(policy);
        Ok(flipped)
    }

    /// Clears the generation the last switch replaced (after the reply: the new policy already
    /// decides) and stores that policy's parsed form; returns how long clearing took.
    pub fn retire_pending(&mut self) -> Option<std::time::Duration> {
        let retired = self.generations.retire(self.store.as_mut(), &self.barrier, self.resolver.as_ref());
        self.remember_pending();
        match retired {
            Ok(took) => took,
            Err(err) => {
                // It stays marked dirty: the next write into it sweeps it.
                tracing::warn!("clearing the retired generation: {}", crate::describe(&err));
                None
            }
        }
    }

    fn remember_pending(&mut self) {
        // What the switch freed stays with the allocator for the next one (`keep_freed_memory`).
        if let Some(mut policy) = self.remember.take() {
            policy.remember();
        }
    }

    /// The generations (what each holds, which decides).
    #[must_use]
    pub const fn generations(&self) -> &Generations {
        &self.generations
    }

    /// The exec tables of every generation, for the state file.
    #[must_use]
    pub const fn exec_tables(&self) -> &ExecTables {
        self.generations.exec_tables()
    }

    /// The maps (loaded or pinned).
    pub fn store(&mut self) -> &mut dyn MapStore {
        self.store.as_mut()
    }

    /// The resolver, when it runs.
    #[must_use]
    pub const fn resolver(&self) -> Option<&Resolver> {
        self.resolver.as_ref()
    }

    /// Tells `observer` of every record the audit log writes from now on (the metrics).
    pub fn observe_log(&self, observer: std::sync::Arc<dyn audit::Observe>) {
        self.events.observe_log(observer);
    }

    /// The audit log writer's counters.
    #[must_use]
    pub fn audit_stats(&self) -> audit::WriteStats {
        self.events.audit_stats()
    }

    /// What the drains of this process did.
    #[must_use]
    pub const fn drained(&self) -> Drained {
        self.events.drained()
    }

    /// Governs `cgroup_id` (a launch's own cgroup), its network decided by the launch profile
    /// `net_profile` (0: the `network:` section).
    ///
    /// # Errors
    /// The map cannot be updated.
    pub fn govern(&mut self, cgroup_id: u64, level: u32, net_profile: u32) -> Result<(), KernelError> {
        maps::govern(self.store.as_mut(), cgroup_id, level, net_profile)
    }

    /// Stops governing `cgroup_id` (its processes go on, ungoverned).
    ///
    /// # Errors
    /// The map cannot be updated.
    pub fn release(&mut self, cgroup_id: u64) -> Result<(), KernelError> {
        maps::release(self.store.as_mut(), cgroup_id)
    }

    /// The start record: backend, mode, and the policy enforced; the front adds what it knows.
    #[must_use]
    pub fn start_record(&self, event: &str) -> Record {
        Record {
            timestamp: audit::now(),
            event: event.into(),
            layer: "kernel",
            backend: Some(self.backend.as_str()),
            mode: Some(self.policy.mode.as_str()),
            detail: Some(serde_json::json!({
                "policy": self.policy.policy,
                "policy_hash": self.policy.policy_hash,
                "exec_rules": self.generations.exec(self.generations.active()).rules.len(),
                "lsm_refusal": self.lsm_refusal,
                "unguarded": self.unguarded,
            })),
            ..Record::default()
        }
    }

    /// The stop record, with every counter: this process's drains and the kernel's own. It is
    /// written even when the kernel's counters cannot be read (`counters_error` says why).
    #[must_use]
    pub fn stop_record(&self) -> Record {
        let drained = self.events.drained();
        let mut detail = serde_json::json!({
            "events_written": drained.events_written,
            "events_undecodable": drained.events_undecodable,
            "events_lost_recorded": drained.events_lost_recorded,
            "audit_write_failures": self.events.audit_stats().audit_write_failures,
        });
        match (maps::read_stats(self.store.as_ref()), knet::read_stats(self.store.as_ref())) {
            (Ok(kernel), Ok(net)) => {
                if kernel.events_dropped > 0 {
                    tracing::warn!(
                        "{} events were lost because the ring buffer was full",
                        kernel.events_dropped
                    );
                }
                for (name, value) in [
                    ("events_dropped", kernel.events_dropped),
                    ("exec_decisions", kernel.exec_decisions),
                    ("exec_denied", kernel.exec_denied),
                    ("probe_errors", kernel.probe_errors),
                    ("net_decisions", net.net_decisions),
                    ("net_denied", net.net_denied),
                    ("dns_steered", net.dns_steered),
                    ("net_errors", net.net_errors),
                ] {
                    detail[name] = value.into();
                }
                if !kernel.probe_errors_by_site.is_empty() {
                    detail["probe_errors_by_site"] = serde_json::json!(kernel.probe_errors_by_site);
                }
            }
            (Err(err), _) | (_, Err(err)) => detail["counters_error"] = err.to_string().into(),
        }
        Record {
            timestamp: audit::now(),
            event: "controller_stop".into(),
            layer: "kernel",
            backend: Some(self.backend.as_str()),
            detail: Some(detail),
            ..Record::default()
        }
    }

    /// Protects this process, Sentra's binaries and `paths` (those that exist) from governed tasks
    /// (enforced by the `lsm` backend's guard hooks), replacing what was protected before; returns
    /// how many files are protected.
    ///
    /// # Errors
    /// The maps cannot be updated.
    pub fn protect(&mut self, paths: &[std::path::PathBuf]) -> Result<usize, crate::kernel::KernelError> {
        use std::os::unix::fs::MetadataExt as _;
        let mut all = paths.to_vec();
        if let Ok(exe) = std::env::current_exe() {
            if let Some(dir) = exe.parent() {
                all.extend(["sentra-shell", "sentra"].map(|name| dir.join(name)));
            }
            all.push(exe);
        }
        let mut files: Vec<sentra_common::exec::FileKey> = all
            .iter()
            .filter_map(|path| std::fs::metadata(path).ok())
            .map(|meta| sentra_common::exec::FileKey {
                dev: crate::policy::exec::kernel_dev(meta.dev()),
                ino: meta.ino(),
            })
            .collect();
        files.sort_unstable_by_key(|f| (f.dev, f.ino));
        files.dedup();
        maps::protect(self.store.as_mut(), std::process::id(), &files)?;
        Ok(files.len())
    }

    /// Appends a record to the audit log in its place by time among the kernel events submitted
    /// before it (drained with it: the log stays in time order).
    ///
    /// # Errors
    /// The write fails.
    pub fn write(&mut self, record: &Record) -> Result<(), audit::AuditError> {
        self.events.drain_with(&self.generations, Some(drain::Extra::Record(record)))
    }

    /// Appends a record another process built (see [`audit::AuditLog::write_value`]), placed as
    /// [`Self::write`] places its record.
    ///
    /// # Errors
    /// The write fails.
    pub fn write_value(&mut self, record: &serde_json::Value) -> Result<(), audit::AuditError> {
        self.events.drain_with(&self.generations, Some(drain::Extra::Value(record)))
    }
}
