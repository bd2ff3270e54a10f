//! Exec governance: one decision procedure, two enforcement backends.

mod applet;
mod args;
pub mod decide;
mod loader;
mod lsm;
mod signal;

use sentra_common::{
    event::{Decision, ExecEvent, ProbeSite, flags},
    exec::RULE_INTERNAL_ERROR,
    offsets::KernelOffsets,
    settings::{ActiveGeneration, Effect, Mode, Settings, stats},
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
/// `bprm` is the hook's `struct linux_binprm *`. Any failure decides closed (deny) and is reported with
/// its site: this runs only for governed tasks, so a failure never affects the rest of the host.
#[inline(always)]
pub fn govern(bprm: u64, args: ArgSource) -> Action {
    let off = kernel::offsets();
    let active = ACTIVE_GENERATION.get(0).copied().unwrap_or_default();
    let settings = ready(off, active.generation);
    // Without settings nothing says audit: enforce.
    let mode = settings.map_or(Mode::Enforce as u32, |s| s.mode);

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
        event.dev = 0;
        event.ino = 0;
        event.applet_arg = 0;
        event.args_len = 0;
        let verdict = settle(
            settings.and_then(|s| decide::decide(bprm, off, active.generation, &s, Some(&mut *event))),
        );
        let (decision, action) = apply(&verdict, mode);
        finish(event, bprm, off, active, (decision, mode, &verdict), args);
        entry.submit(crate::maps::submit_flags(decision != Decision::Allowed));
        action
    } else {
        count(stats::EVENTS_DROPPED);
        let verdict = settle(settings.and_then(|s| decide::decide(bprm, off, active.generation, &s, None)));
        apply(&verdict, mode).1
    }
}

/// Decides a multi-call binary's applet for a governed task whose new image is in place
/// (`sched_process_exec`, both backends), emits an event when it is refused, and returns the action.
/// Every other exec, and every allowed applet, leaves no trace here: the file's own decision
/// (`exec_lsm`, `exec_signal`) recorded it.
///
/// Without settings it decides nothing: the file's decision failed closed already.
#[inline(always)]
pub fn govern_applet(bprm: u64) -> Action {
    let off = kernel::offsets();
    let active = ACTIVE_GENERATION.get(0).copied().unwrap_or_default();
    let Ok(settings) = ready(off, active.generation) else { return Action::Allow };
    let (verdict, arg) = match applet::check(bprm, off, active.generation, &settings) {
        applet::Outcome::None => return Action::Allow,
        applet::Outcome::Decided(applet) if applet.verdict.effect == Effect::Allow as u32 => {
            return Action::Allow;
        }
        applet::Outcome::Decided(applet) => (settle(Ok(applet.verdict)), applet.arg),
        applet::Outcome::Failed => (settle(Err(kernel::ReadError(ProbeSite::AppletArgs))), 0),
    };
    let (decision, action) = apply(&verdict, settings.mode);
    // As in `govern`: tested for null once, submitted on every path of the arm.
    if let Some(mut entry) = EVENTS.reserve::<ExecEvent>(0) {
        // SAFETY: as in `govern`.
        let event = unsafe { &mut *entry.as_mut_ptr() };
        // The file's identity, not its path: walking the path here too would multiply the states the
        // verifier explores past its limit on older kernels. Userspace knows each multi-call
        // binary's path by its identity.
        let (dev, ino) = decide::file_identity(bprm, off).unwrap_or_default();
        event.flags = flags::APPLET;
        event.path_components = 0;
        event.dev = dev;
        event.ino = ino;
        event.applet_arg = arg;
        event.args_len = 0;
        finish(event, bprm, off, active, (decision, settings.mode, &verdict), ArgSource::NewImage);
        entry.submit(crate::maps::submit_flags(true));
    } else {
        count(stats::EVENTS_DROPPED);
    }
    action
}

/// Fills what every exec event carries besides the file: the task, the decision `(decision, mode,
/// verdict)` under `active`, and the arguments from `args`.
#[inline(always)]
fn finish(
    event: &mut ExecEvent,
    bprm: u64,
    off: &KernelOffsets,
    active: ActiveGeneration,
    (decision, mode, verdict): (Decision, u32, &Settled),
    args: ArgSource,
) {
    task::fill_header(&mut event.header, off, active.backend);
    event.decision = decision as u32;
    event.mode = mode;
    event.rule = verdict.rule;
    event.probe_site = verdict.site;
    event.generation = active.generation;
    event.argc = kernel::read::<i32>(bprm, off.binprm_argc, ProbeSite::None).map_or(0, i32::cast_unsigned);
    args::capture(event, off, args);
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

/// A failed decision is a denial (fail closed: only governed tasks get here), counted by its site.
#[inline(always)]
fn settle(verdict: Result<decide::Verdict, kernel::ReadError>) -> Settled {
    match verdict {
        Ok(verdict) => Settled { effect: verdict.effect, rule: verdict.rule, site: ProbeSite::None as u32 },
        Err(kernel::ReadError(site)) => {
            count(stats::PROBE_ERRORS);
            count(stats::PROBE_SITE_BASE + site as u32);
            Settled { effect: Effect::Deny as u32, rule: RULE_INTERNAL_ERROR, site: site as u32 }
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
