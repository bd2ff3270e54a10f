//! Multi-call binaries (`BusyBox`, toybox): one file that runs whichever program its `argv[0]` names
//! (or, under its own name, the one its `argv[1]` names). Allowing the file must not allow every
//! applet in it, so a run of one is decided again by the applet's name, as `EXEC_APPLETS` says the
//! policy covers a program of that name.
//!
//! The arguments are read from the new image's argument area (`mm->arg_start..arg_end`) at
//! `sched_process_exec`: they are then exactly what the binary will read (for a script, the ones
//! `fs/binfmt_script.c` built), in memory no other task can change any more (`fs/exec.c`
//! `begin_new_exec` has killed the other threads and installed a fresh mm).

use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_probe_read_user_str_bytes, bpf_send_signal},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use sentra_common::{
    event::ProbeSite,
    exec::{APPLET_ARG_LEN, MAX_DISPATCH, MultiCall, NAME_LEN, RULE_APPLET_UNKNOWN, RULE_DEFAULT, STEM_LEN},
    offsets::KernelOffsets,
    settings::{Effect, Settings},
};

use super::{Action, decide::Verdict, govern_applet};
use crate::{
    kernel::{self, ReadError},
    maps::{APPLET_SCRATCH, AppletScratch, EXEC_APPLETS},
    task,
};

const SITE: ProbeSite = ProbeSite::AppletArgs;

/// The applet a run of a multi-call binary starts, and how the policy decides it.
#[derive(Clone, Copy)]
pub struct Applet {
    pub verdict: Verdict,
    /// Index of the argument that names it.
    pub arg: u32,
}

/// What the applet check found.
#[derive(Clone, Copy)]
pub enum Outcome {
    /// The file is no multi-call binary, or its run starts no applet: the file's verdict stands.
    None,
    /// The applet's verdict, and the argument that named it.
    Decided(Applet),
    /// The check could not be made: decided closed.
    Failed,
}

const NONE: u32 = 0;
const DECIDED: u32 = 1;
const FAILED: u32 = 2;

/// The applet check for the exec `bprm` (`None` unless its file is a multi-call binary).
///
/// Handed back through map memory: what follows (the event, the argument capture) then sees one
/// unknown outcome instead of each path's constants, which would multiply the states the verifier
/// walks.
#[inline(always)]
pub fn check(bprm: u64, off: &KernelOffsets, generation: u32, settings: &Settings) -> Outcome {
    let Some(slot) = APPLET_SCRATCH.get_ptr_mut(0) else { return Outcome::Failed };
    // SAFETY: this CPU's slot; a BPF program is not preempted by another on the same CPU mid-run.
    let scratch = unsafe { &mut *slot };
    let result = match super::decide::multicall_of(bprm, off, generation) {
        Ok(Some(multicall)) => judge(&multicall, scratch, off, generation, settings),
        Ok(None) => Ok(None),
        Err(err) => Err(err),
    };
    let words = match result {
        Ok(None) => [NONE, 0, 0, 0],
        Ok(Some(applet)) => [DECIDED, applet.verdict.effect, applet.verdict.rule, applet.arg],
        Err(_) => [FAILED, 0, 0, 0],
    };
    // SAFETY: fields of this CPU's scratch slot.
    unsafe { core::ptr::write_volatile(&raw mut scratch.outcome, words) };
    // SAFETY: as above.
    let [kind, effect, rule, arg] = unsafe { core::ptr::read_volatile(&raw const scratch.outcome) };
    match kind {
        NONE => Outcome::None,
        DECIDED => Outcome::Decided(Applet { verdict: Verdict { effect, rule }, arg }),
        _ => Outcome::Failed,
    }
}

/// Decides the applet the current task's new image runs; `None` when it runs none (the dispatcher's
/// own usage or options): the file's verdict stands.
#[inline(always)]
fn judge(
    multicall: &MultiCall,
    scratch: &mut AppletScratch,
    off: &KernelOffsets,
    generation: u32,
    settings: &Settings,
) -> Result<Option<Applet>, ReadError> {
    // SAFETY: helper without pointer arguments.
    let task = unsafe { bpf_get_current_task() };
    let mm = kernel::read_ptr(task, off.task_mm, SITE)?;
    let mut cursor: u64 = kernel::read(mm, off.mm_arg_start, SITE)?;
    let end: u64 = kernel::read(mm, off.mm_arg_end, SITE)?;
    let mut arg: u32 = 0;
    while arg < MAX_DISPATCH {
        if cursor >= end {
            // The dispatcher without an applet prints its usage.
            return Ok(None);
        }
        // SAFETY: bpf_probe_read_user_str checks the address.
        let len = unsafe { bpf_probe_read_user_str_bytes(cursor as *const u8, &mut scratch.arg) }
            .map_err(|_| ReadError(SITE))?
            .len();
        if len + 1 >= APPLET_ARG_LEN {
            // Too long to find the name's start in: decided closed.
            return Ok(Some(Applet { verdict: unknown(), arg }));
        }
        let first = scratch.arg[0];
        if arg > 0 && first == b'-' {
            // `busybox --list`, `--install`, `--help`: the dispatcher's options, no applet.
            return Ok(None);
        }
        // A login shell's `argv[0]` starts with `-`, which `BusyBox` drops before taking the basename
        // (libbb/appletlib.c `main`).
        let start = usize::from(arg == 0 && first == b'-');
        let base = basename(scratch, start);
        if !dispatches(&scratch.arg, base, multicall) {
            let verdict = decide(scratch, cursor + base as u64, generation, settings)?;
            return Ok(Some(Applet { verdict, arg }));
        }
        cursor += len as u64 + 1;
        arg += 1;
    }
    Ok(Some(Applet { verdict: unknown(), arg }))
}

/// The verdict when the applet cannot be told: denied.
#[inline(always)]
const fn unknown() -> Verdict {
    Verdict { effect: Effect::Deny as u32, rule: RULE_APPLET_UNKNOWN }
}

/// Index where the last path component of the NUL-terminated string in `scratch.arg` starts (not
/// before `start`). The candidate goes through map memory (volatile, so that it stays there): the
/// verifier treats what it loads back as one unknown value, where a register holding each possible
/// index would multiply the states it explores by the argument's length. For the same reason the
/// loop stops at the NUL byte, not at a length held in a register (each comparison with it would
/// narrow its range differently on each exit).
#[inline(always)]
fn basename(scratch: &mut AppletScratch, start: usize) -> usize {
    #[expect(clippy::cast_possible_truncation, reason = "start <= 1")]
    // SAFETY: a field of this CPU's scratch slot.
    unsafe {
        core::ptr::write_volatile(&raw mut scratch.base, start as u32);
    };
    let mut i = 0;
    while i < APPLET_ARG_LEN {
        let byte = scratch.arg[i];
        if byte == 0 {
            break;
        }
        if byte == b'/' {
            #[expect(clippy::cast_possible_truncation, reason = "i < APPLET_ARG_LEN")]
            // SAFETY: as above.
            unsafe {
                core::ptr::write_volatile(&raw mut scratch.base, i as u32 + 1);
            };
        }
        i += 1;
    }
    // SAFETY: as above.
    let base = unsafe { core::ptr::read_volatile(&raw const scratch.base) };
    // The string is shorter than the buffer (checked by the caller), so the mask changes nothing but
    // tells the verifier the bound.
    base as usize & (APPLET_ARG_LEN - 1)
}

/// Whether the name at `arg[base..]` starts with the dispatcher's name: the applet is the next argument.
#[inline(always)]
fn dispatches(arg: &[u8; APPLET_ARG_LEN], base: usize, multicall: &MultiCall) -> bool {
    let mut k = 0;
    while k < STEM_LEN {
        if k >= multicall.stem_len as usize {
            return k > 0;
        }
        let Some(&byte) = arg.get(base + k) else { return false };
        if byte != multicall.stem[k] {
            return false;
        }
        k += 1;
    }
    true
}

/// The verdict on the program name at user address `name`, as `EXEC_APPLETS` (or the default) says.
#[inline(always)]
fn decide(
    scratch: &mut AppletScratch,
    name: u64,
    generation: u32,
    settings: &Settings,
) -> Result<Verdict, ReadError> {
    scratch.key.generation = generation;
    scratch.key.pad = 0;
    scratch.key.name = [0; NAME_LEN];
    // SAFETY: as above.
    let len = unsafe { bpf_probe_read_user_str_bytes(name as *const u8, &mut scratch.key.name) }
        .map_err(|_| ReadError(SITE))?
        .len();
    // A name the key cannot hold whole names no rule (policy validation refuses such rules): the
    // default decides, as it would for a program of that name.
    let found = if len + 1 >= NAME_LEN {
        Verdict::NONE
    } else {
        #[expect(
            clippy::needless_borrows_for_generic_args,
            reason = "the key stays in map memory: by value it would take 72 bytes of the stack"
        )]
        // SAFETY: lookup with a key in map memory; the value is copied out at once.
        Verdict::from_value(unsafe { EXEC_APPLETS.get(&scratch.key) })
    };
    Ok(if found.found() { found } else { Verdict { effect: settings.exec_default, rule: RULE_DEFAULT } })
}

const SIGKILL: u32 = 9;

/// `tp_btf/sched_process_exec` on both backends: a multi-call binary's applet. Arguments:
/// `(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`. A SIGKILL sent here is
/// delivered on the return to user mode: the applet never runs an instruction.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn exec_applet(ctx: BtfTracePointContext) -> i32 {
    try_exec_applet(&ctx).unwrap_or(0)
}

#[expect(
    clippy::unnecessary_wraps,
    reason = "probe convention: a thin wrapper maps the try_ function's Err to the fail-safe value"
)]
fn try_exec_applet(ctx: &BtfTracePointContext) -> Result<i32, i32> {
    if !task::is_governed() {
        return Ok(0);
    }
    let bprm: u64 = ctx.arg(2);
    if govern_applet(bprm) == Action::Deny {
        // SAFETY: signals the current task only.
        unsafe { bpf_send_signal(SIGKILL) };
    }
    Ok(0)
}

sentra_common::same_name!(sentra_common::names::program::EXEC_APPLET, exec_applet);
