//! Trusted execution on the `lsm` backend: what a governed task may run, it may not change (W^X), and
//! it may map executable code only from files the exec policy allows or `exec.libraries` covers.
//!
//! Both follow the policy: they decide with the active generation's exec rules, through the same walk
//! as an exec ([`decide::decide_at`]), and in audit mode they record without refusing.
//!
//! Without these, code runs around the exec check: a copy of a denied interpreter placed in an
//! allowed directory, `LD_PRELOAD` or `dlopen` of a library written to `/tmp`, or the dynamic loader
//! mapping a denied program (`ld.so /usr/bin/python3`), none of which execs the denied file.

use aya_ebpf::programs::LsmContext;
use sentra_common::{
    event::{Decision, FileOp, GuardHook, ProbeSite},
    exec::RULE_DEFAULT,
    offsets::KernelOffsets,
    settings::{Effect, Mode, Settings},
};

use crate::{
    exec::{
        self,
        decide::{self, Found, Place},
    },
    guard::{self, Refusal},
    kernel::{self, ReadError},
    maps::ACTIVE_GENERATION,
    task,
};

/// include/uapi/asm-generic/mman-common.h.
const PROT_EXEC: u64 = 0x4;

/// The active generation and its settings (a governed task is refused without them).
#[inline(always)]
fn active(off: &KernelOffsets) -> Result<(u32, Settings), ReadError> {
    let generation = ACTIVE_GENERATION.get(0).map_or(0, |active| active.generation);
    Ok((generation, exec::ready(off, generation)?))
}

/// The refusal for `found`, a file the policy decided, in the generation's mode.
#[inline(always)]
fn refusal(
    hook: GuardHook,
    detail: u32,
    dentry: u64,
    found: Found,
    generation: u32,
    settings: &Settings,
) -> Refusal {
    let decision = if settings.mode == Mode::Audit as u32 { Decision::AuditDenied } else { Decision::Denied };
    Refusal { dentry, decision, rule: found.verdict.rule, generation, ..Refusal::new(hook, detail) }
}

/// W^X: refuses `op` on the file (or name about to be created) at `place` when an exec rule allows
/// running it. Called for governed tasks only.
#[inline(always)]
pub fn exec_write(place: Place, off: &KernelOffsets, op: FileOp) -> Result<Option<Refusal>, ReadError> {
    let (generation, settings) = active(off)?;
    let found = decide::decide_at(place, off, generation, &settings, None, false)?;
    Ok(found
        .allowed_by_rule()
        .then(|| refusal(GuardHook::ExecWrite, op as u32, place.dentry, found, generation, &settings)))
}

/// Whether a governed task may map `file` executable: the exec policy allows running it, or no rule
/// covers it (the default decided) and `exec.libraries` does. A rule that denies the file decides
/// over a library entry.
#[inline(always)]
fn exec_map(file: u64, detail: u32) -> Result<Option<Refusal>, ReadError> {
    let off = guard::offsets()?;
    let (generation, settings) = active(off)?;
    let place = Place::of_file(file, off)?;
    let found = decide::decide_at(place, off, generation, &settings, None, true)?;
    let allowed =
        found.verdict.effect == Effect::Allow as u32 || (found.verdict.rule == RULE_DEFAULT && found.library);
    Ok((!allowed).then(|| refusal(GuardHook::ExecMap, detail, place.dentry, found, generation, &settings)))
}

crate::lsm_program!("lsm/mmap_file", guard_mmap, guard_mmap_verdict);

#[inline(always)]
fn guard_mmap_verdict(ctx: LsmContext) -> i32 {
    guard::verdict(try_guard_mmap(&ctx), true)
}

#[inline(always)]
fn try_guard_mmap(ctx: &LsmContext) -> Result<Option<Refusal>, ReadError> {
    // Arguments: (struct file *file, unsigned long reqprot, unsigned long prot, unsigned long flags);
    // `prot` is what will be applied (READ_IMPLIES_EXEC included, mm/mmap.c `do_mmap`). Anonymous
    // memory (JITs) has no file.
    let file: u64 = ctx.arg(0);
    let prot: u64 = ctx.arg(2);
    if file == 0 || prot & PROT_EXEC == 0 || !task::is_governed() {
        return Ok(None);
    }
    exec_map(file, 0)
}

crate::lsm_program!("lsm/file_mprotect", guard_mprotect, guard_mprotect_verdict);

#[inline(always)]
fn guard_mprotect_verdict(ctx: LsmContext) -> i32 {
    guard::verdict(try_guard_mprotect(&ctx), true)
}

#[inline(always)]
fn try_guard_mprotect(ctx: &LsmContext) -> Result<Option<Refusal>, ReadError> {
    // Arguments: (struct vm_area_struct *vma, unsigned long reqprot, unsigned long prot).
    let prot: u64 = ctx.arg(2);
    if prot & PROT_EXEC == 0 {
        return Ok(None);
    }
    let vma: u64 = ctx.arg(0);
    // Before the task is known to be governed a failed read lets the call through (fail safe for the
    // host); anonymous memory has no file.
    let Ok(file) = kernel::read::<u64>(vma, kernel::offsets().vma_file, ProbeSite::None) else {
        return Ok(None);
    };
    if file == 0 || !task::is_governed() {
        return Ok(None);
    }
    exec_map(file, 1)
}

sentra_common::same_name!(sentra_common::names::program::GUARD_MMAP, guard_mmap);
sentra_common::same_name!(sentra_common::names::program::GUARD_MPROTECT, guard_mprotect);
