//! Exec governance: one decision procedure, two enforcement backends.

mod applet;
mod args;
pub mod decide;
mod lsm;
mod signal;

use sentra_common::{
    event::{Decision, ExecEvent, ProbeSite, flags},
    exec::RULE_INTERNAL_ERROR,
    offsets::KernelOffsets,
    settings::{Backend, Effect, Mode, Settings, stats},
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

/// The hook deciding.
#[derive(Clone, Copy)]
pub enum Hook {
    /// `lsm/bprm_check_security` (the `lsm` backend): the file, with the arguments read from here.
    Check(ArgSource),
    /// `sched_process_exec`, the new image in place: on the `signal` backend the whole decision; on
    /// the `lsm` backend only a multi-call binary's applet, whose arguments are final only here (the
    /// file itself was decided at `Check`).
    Exec,
}

/// Decides an exec by a task already known to be governed, emits its event, and returns the action.
///
/// `bprm` is the hook's `struct linux_binprm *`. Any failure decides closed (deny) and is reported with
/// its site: this runs only for governed tasks, so a failure never affects the rest of the host.
#[inline(always)]
pub fn govern(bprm: u64, hook: Hook) -> Action {
    let off = kernel::offsets();
    let active = ACTIVE_GENERATION.get(0).copied().unwrap_or_default();
    let settings = ready(off, active.generation);
    // Without settings nothing says audit: enforce.
    let mode = settings.map_or(Mode::Enforce as u32, |s| s.mode);
    let (args, applet, applets_only) = match hook {
        Hook::Check(args) => (args, applet::Outcome::None, false),
        Hook::Exec => (
            ArgSource::NewImage,
            applet::check(bprm, off, active.generation, &settings),
            active.backend == Backend::Lsm as u32,
        ),
    };
    if applets_only {
        // Most files are no multi-call binary: `Check` decided and recorded them alone. Without
        // settings, or after a failed check, the whole decision below runs, and fails closed.
        if settings.is_ok() && applet == applet::Outcome::None {
            return Action::Allow;
        }
    } else {
        count(stats::EXEC_DECISIONS);
    }
    // The reservation is tested for null exactly once and, when it succeeded, submitted on every path
    // of that arm: older verifiers (6.1) do not treat a ring-buffer pointer as non-null when it is
    // tested again, and would see a leaked reference.
    if let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) {
        // SAFETY: the reservation is sizeof(ExecEvent) bytes; every field userspace reads is
        // written below (arrays only up to the counts written alongside them).
        let event = unsafe { &mut *entry.as_mut_ptr() };
        event.flags = 0;
        event.path_components = 0;
        event.dev = 0;
        event.ino = 0;
        event.applet_arg = 0;
        event.pad = 0;
        let (verdict, by_applet) = settle(
            settings.and_then(|s| decide_exec(bprm, off, active.generation, &s, Some(&mut *event), applet)),
        );
        if applets_only && !by_applet {
            entry.discard(0);
            return Action::Allow;
        }
        let (decision, action) = apply(&verdict, mode);
        if applets_only && decision == Decision::Allowed {
            // `Check` recorded this exec already.
            entry.discard(0);
            return action;
        }
        task::fill_header(&mut event.header, off, active.backend);
        event.decision = decision as u32;
        event.mode = mode;
        event.rule = verdict.rule;
        event.probe_site = verdict.site;
        event.generation = active.generation;
        event.argc =
            kernel::read::<i32>(bprm, off.binprm_argc, ProbeSite::None).map_or(0, i32::cast_unsigned);
        args::capture(event, off, args);
        entry.submit(crate::maps::submit_flags(decision != Decision::Allowed));
        action
    } else {
        count(stats::EVENTS_DROPPED);
        let (verdict, by_applet) =
            settle(settings.and_then(|s| decide_exec(bprm, off, active.generation, &s, None, applet)));
        if applets_only && !by_applet {
            return Action::Allow;
        }
        apply(&verdict, mode).1
    }
}

/// The file's verdict, unless the file is allowed and `applet` decided its run (a denial of the file
/// stands whatever the applet); also whether the applet decided.
#[inline(always)]
fn decide_exec(
    bprm: u64,
    off: &KernelOffsets,
    generation: u32,
    settings: &Settings,
    mut event: Option<&mut ExecEvent>,
    applet: applet::Outcome,
) -> Result<(decide::Verdict, bool), kernel::ReadError> {
    let found = decide::decide(bprm, off, generation, settings, event.as_deref_mut())?;
    if found.verdict.effect != Effect::Allow as u32 {
        return Ok((found.verdict, false));
    }
    match applet {
        applet::Outcome::None => Ok((found.verdict, false)),
        applet::Outcome::Failed => Err(kernel::ReadError(ProbeSite::AppletArgs)),
        applet::Outcome::Decided(applet) => {
            if let Some(event) = event {
                event.flags |= flags::APPLET;
                event.applet_arg = applet.arg;
            }
            Ok((applet.verdict, true))
        }
    }
}

/// The active generation's settings, if the probe can decide under them at all.
#[inline(always)]
pub fn ready(off: &KernelOffsets, generation: u32) -> Result<Settings, kernel::ReadError> {
    if off.valid == 0 {
        return Err(kernel::ReadError(ProbeSite::Offsets));
    }
    match SETTINGS.get(generation) {
        Some(settings) if settings.loaded != 0 => Ok(*settings),
        _ => Err(kernel::ReadError(ProbeSite::Settings)),
    }
}

/// A decision, or the site that failed.
struct Settled {
    effect: u32,
    rule: u32,
    /// [`ProbeSite`] as `u32`.
    site: u32,
}

/// A failed decision is a denial (fail closed: only governed tasks get here), counted by its site;
/// with whether a multi-call binary's applet decided (a failure counts as one: it is this hook's own
/// decision).
#[inline(always)]
fn settle(verdict: Result<(decide::Verdict, bool), kernel::ReadError>) -> (Settled, bool) {
    match verdict {
        Ok((verdict, by_applet)) => {
            (Settled { effect: verdict.effect, rule: verdict.rule, site: ProbeSite::None as u32 }, by_applet)
        }
        Err(kernel::ReadError(site)) => {
            count(stats::PROBE_ERRORS);
            count(stats::PROBE_SITE_BASE + site as u32);
            (Settled { effect: Effect::Deny as u32, rule: RULE_INTERNAL_ERROR, site: site as u32 }, true)
        }
    }
}

/// Applies the mode: what the event records, and what the backend does.
#[inline(always)]
fn apply(verdict: &Settled, mode: u32) -> (Decision, Action) {
    let denied = verdict.effect != Effect::Allow as u32;
    if denied {
        count(stats::EXEC_DENIED);
    }
    match (denied, mode == Mode::Audit as u32) {
        (false, _) => (Decision::Allowed, Action::Allow),
        (true, true) => (Decision::AuditDenied, Action::Allow),
        (true, false) => (Decision::Denied, Action::Deny),
    }
}
