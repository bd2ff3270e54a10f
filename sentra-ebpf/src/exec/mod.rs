//! Exec governance: one decision procedure, two enforcement backends.

mod args;
mod decide;
mod lsm;
mod signal;

use sentra_common::{
    event::{Decision, ExecEvent},
    exec::RULE_INTERNAL_ERROR,
    settings::{Effect, Mode, Settings, stats},
};

use crate::{
    kernel,
    maps::{ACTIVE_GENERATION, EVENTS, SETTINGS, count},
    task,
};

/// What the backend must do with the exec.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
}

/// Where the arguments of the exec can be read from, which differs by hook.
#[derive(Clone, Copy)]
pub enum ArgSource {
    /// The caller's `argv` array (old image still mapped): LSM backend.
    UserArgv(u64),
    /// `mm->arg_start..arg_end` of the new image: signal backend.
    NewImage,
    None,
}

/// Decides an exec by a task already known to be governed, emits its event, and returns the action.
///
/// `bprm` is the hook's `struct linux_binprm *`. Any failure decides closed (deny): this runs only for
/// governed tasks, so a failure never affects the rest of the host.
#[inline(always)]
pub fn govern(bprm: u64, args: ArgSource) -> Action {
    let off = kernel::offsets();
    let Some(active) = ACTIVE_GENERATION.get(0).copied() else {
        return fail_closed();
    };
    let Some(settings) = SETTINGS.get(active.generation).copied() else {
        return fail_closed();
    };
    if off.valid == 0 || settings.loaded == 0 {
        return fail_closed();
    }

    count(stats::EXEC_DECISIONS);
    // The reservation is tested for null exactly once and, when it succeeded, submitted on every path
    // of that arm: older verifiers (6.1) do not treat a ring-buffer pointer as non-null when it is
    // tested again, and would see a leaked reference.
    if let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) {
        // SAFETY: the reservation is sizeof(ExecEvent) bytes; every field userspace reads is
        // written below (arrays only up to the counts written alongside them).
        let event = unsafe { &mut *entry.as_mut_ptr() };
        event.flags = 0;
        event.path_components = 0;
        let verdict = settle(decide::decide(bprm, &off, active.generation, &settings, Some(&mut *event)));
        let (decision, action) = apply(verdict, &settings);
        task::fill_header(&mut event.header, &off, active.backend);
        event.decision = decision as u32;
        event.mode = settings.mode;
        event.rule = verdict.rule;
        event.generation = active.generation;
        event.argc = kernel::read::<i32>(bprm, off.binprm_argc).map_or(0, i32::cast_unsigned);
        args::capture(event, &off, args);
        entry.submit(crate::maps::submit_flags(decision != Decision::Allowed));
        action
    } else {
        count(stats::EVENTS_DROPPED);
        let verdict = settle(decide::decide(bprm, &off, active.generation, &settings, None));
        apply(verdict, &settings).1
    }
}

/// A failed decision is a denial (fail closed: only governed tasks get here).
#[inline(always)]
fn settle(verdict: Result<decide::Verdict, kernel::ReadError>) -> decide::Verdict {
    verdict.unwrap_or_else(|_| {
        count(stats::PROBE_ERRORS);
        decide::Verdict { effect: Effect::Deny as u32, rule: RULE_INTERNAL_ERROR }
    })
}

/// Applies the mode: what the event records, and what the backend does.
#[inline(always)]
fn apply(verdict: decide::Verdict, settings: &Settings) -> (Decision, Action) {
    let denied = verdict.effect != Effect::Allow as u32;
    if denied {
        count(stats::EXEC_DENIED);
    }
    match (denied, settings.mode == Mode::Audit as u32) {
        (false, _) => (Decision::Allowed, Action::Allow),
        (true, true) => (Decision::AuditDenied, Action::Allow),
        (true, false) => (Decision::Denied, Action::Deny),
    }
}

/// Decision for a governed task when the probe cannot work (no settings, no offsets).
#[inline(always)]
fn fail_closed() -> Action {
    count(stats::PROBE_ERRORS);
    Action::Deny
}
