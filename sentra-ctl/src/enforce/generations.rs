//! The policy generations held in the kernel and the switch between them. This is the one owner of
//! the two-generation protocol: which generation decides, what each holds (exec rules and network
//! policy together), and the order of every switch: write the inactive generation, flip the active
//! index (one map update), and only after a grace period clear the old one.

use std::sync::Arc;

use sentra_common::settings::{Backend, GENERATIONS, Mode};
use serde::{Deserialize, Serialize};

use crate::{
    dns::Resolver,
    kernel::{KernelError, maps, net as knet, rcu::RcuBarrier, store::MapStore},
    policy::{
        exec::{CompiledExec, RuleTable},
        network::CompiledNet,
    },
};

const SLOTS: usize = GENERATIONS as usize;

/// The exec rule tables of every generation (index = generation): what names the rules of exec
/// events, and what a restarted controller needs to adopt the pinned maps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecTables([RuleTable; SLOTS]);

/// A switch whose flip is done: `generation` decides; `old` keeps its entries until retired.
#[derive(Debug, Clone, Copy)]
pub struct Flipped {
    pub generation: u32,
    pub old: u32,
    /// From the start until the flip: every decision after it uses the new generation.
    pub until_flip: std::time::Duration,
}

/// A generation replaced by a flip, still holding its entries.
struct Retiring {
    flipped: Flipped,
    /// What this process wrote into it, when it did (its keys are deleted exactly).
    written: Option<CompiledExec>,
}

/// The generations: what each holds, which one decides, and the one being retired.
pub struct Generations {
    exec: ExecTables,
    net: [Arc<CompiledNet>; SLOTS],
    active: u32,
    /// The exec entries this process wrote into the active generation (`None` when a predecessor
    /// did): retiring it clears exactly their keys instead of walking the maps.
    written: Option<CompiledExec>,
    retiring: Option<Retiring>,
}

fn slot(generation: u32) -> usize {
    usize::try_from(generation % GENERATIONS).unwrap_or(0)
}

impl Generations {
    /// Writes the first generation into freshly loaded maps and makes it decide.
    ///
    /// # Errors
    /// A map update fails.
    pub fn install(
        store: &mut dyn MapStore,
        backend: Backend,
        mut compiled: CompiledExec,
        net: Arc<CompiledNet>,
        mode: Mode,
        resolver: Option<&Resolver>,
    ) -> Result<Self, KernelError> {
        const FIRST: u32 = 0;
        maps::write_generation(store, FIRST, &compiled, mode)?;
        knet::write_generation(store, FIRST, &net, mode, resolver.map(|r| r.addr))?;
        maps::activate(store, FIRST, backend)?;
        let mut exec = ExecTables::default();
        exec.0[slot(FIRST)] = std::mem::take(&mut compiled.table);
        Ok(Self {
            exec,
            net: [Arc::clone(&net), net],
            active: FIRST,
            written: Some(compiled),
            retiring: None,
        })
    }

    /// Takes over the generations a previous controller left pinned: `exec` from its state file,
    /// `net` the active generation's network policy (when the policy file still holds it).
    ///
    /// # Errors
    /// The active generation cannot be read.
    pub fn adopt(
        store: &mut dyn MapStore,
        exec: ExecTables,
        net: Arc<CompiledNet>,
    ) -> Result<Self, KernelError> {
        let active = maps::active_generation(store)?.generation;
        Ok(Self { exec, net: [Arc::clone(&net), net], active, written: None, retiring: None })
    }

    /// The generation that decides.
    #[must_use]
    pub const fn active(&self) -> u32 {
        self.active
    }

    /// The exec rules of `generation` (names the rules of its events).
    #[must_use]
    pub fn exec(&self, generation: u32) -> &RuleTable {
        &self.exec.0[slot(generation)]
    }

    /// The network policy of `generation`.
    #[must_use]
    pub fn net(&self, generation: u32) -> &Arc<CompiledNet> {
        &self.net[slot(generation)]
    }

    /// The exec tables, for the state file.
    #[must_use]
    pub const fn exec_tables(&self) -> &ExecTables {
        &self.exec
    }

    /// Writes `compiled` and `net` into the inactive generation and flips to it: no decision ever
    /// sees half a policy. A retirement still pending is finished first (the generation it clears
    /// is the one written here). On failure the inactive generation is discarded and the active one
    /// stays.
    ///
    /// # Errors
    /// A map update fails.
    #[expect(clippy::too_many_arguments, reason = "both parts of a generation and where they go")]
    pub fn switch(
        &mut self,
        store: &mut dyn MapStore,
        backend: Backend,
        barrier: &RcuBarrier,
        mut compiled: CompiledExec,
        net: Arc<CompiledNet>,
        mode: Mode,
        resolver: Option<&Resolver>,
    ) -> Result<Flipped, KernelError> {
        if let Err(err) = self.retire(store, barrier, resolver) {
            // It stays marked dirty: the write below sweeps it.
            tracing::warn!("clearing the retired generation: {}", crate::describe(&err));
        }
        let started = std::time::Instant::now();
        let old = self.active;
        let new = (old + 1) % GENERATIONS;
        if let Err(err) = Self::write(store, new, &compiled, &net, mode, resolver) {
            self.discard(store, new, &compiled, resolver);
            return Err(err);
        }
        maps::activate(store, new, backend)?;
        self.active = new;
        let flipped = Flipped { generation: new, old, until_flip: started.elapsed() };
        self.exec.0[slot(new)] = std::mem::take(&mut compiled.table);
        self.net[slot(new)] = net;
        let written = self.written.replace(compiled);
        self.retiring = Some(Retiring { flipped, written });
        Ok(flipped)
    }

    /// Writes both parts of `generation` (not active).
    fn write(
        store: &mut dyn MapStore,
        generation: u32,
        compiled: &CompiledExec,
        net: &Arc<CompiledNet>,
        mode: Mode,
        resolver: Option<&Resolver>,
    ) -> Result<(), KernelError> {
        maps::write_generation(store, generation, compiled, mode)?;
        knet::write_generation(store, generation, net, mode, resolver.map(|r| r.addr))?;
        if let Some(resolver) = resolver {
            resolver.grant_into(net, generation)?;
        }
        Ok(())
    }

    /// Undoes a [`Self::write`] of a generation that will not be activated (best effort: what stays
    /// is marked dirty and swept by the next write).
    fn discard(
        &self,
        store: &mut dyn MapStore,
        generation: u32,
        compiled: &CompiledExec,
        resolver: Option<&Resolver>,
    ) {
        let _ = maps::clear_generation(store, generation, Some(compiled));
        if let Some(resolver) = resolver {
            let _ = resolver.discard(generation, self.net(self.active));
        }
        let _ = knet::clear_generation(store, generation);
    }

    /// Clears the generation the last switch replaced, once no program can still be deciding with
    /// it (an RCU grace period); returns how long that took, or `None` when nothing was pending.
    ///
    /// # Errors
    /// The grace period cannot be awaited, or a map update fails (the generation then stays marked
    /// dirty, and the next write into it sweeps it).
    pub fn retire(
        &mut self,
        store: &mut dyn MapStore,
        barrier: &RcuBarrier,
        resolver: Option<&Resolver>,
    ) -> Result<Option<std::time::Duration>, KernelError> {
        let Some(retiring) = self.retiring.take() else {
            return Ok(None);
        };
        let started = std::time::Instant::now();
        barrier.wait().map_err(KernelError::Barrier)?;
        let Flipped { generation: new, old, .. } = retiring.flipped;
        maps::clear_generation(store, old, retiring.written.as_ref())?;
        if let Some(resolver) = resolver {
            resolver.retire(old, new)?;
        }
        knet::clear_generation(store, old)?;
        Ok(Some(started.elapsed()))
    }
}
