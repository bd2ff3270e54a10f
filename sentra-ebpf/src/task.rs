//! The current task: governed or not, and the event header.

use aya_ebpf::helpers::{
    bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_comm,
    bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_current_uid_gid, bpf_ktime_get_boot_ns,
};
use sentra_common::{
    event::{EVENT_VERSION, EventHeader, EventKind, ProbeSite},
    exec::GovernedCgroup,
    offsets::KernelOffsets,
};

use crate::{kernel, maps::GOVERNED};

/// Deepest cgroup level looked at; governed cgroups are created well above it.
const MAX_CGROUP_LEVEL: i32 = 32;

/// Whether the current task is in a governed cgroup or one of its descendants.
///
/// Walks the task's cgroup ancestors (level 1 up to its own level) and looks each up in `GOVERNED`, so
/// a cgroup created under a governed one later is governed without userspace knowing of it. The root
/// (level 0) is never governed.
#[inline(always)]
pub fn is_governed() -> bool {
    // Fast path: the task's own cgroup.
    // SAFETY: helper without pointer arguments.
    let own = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: map lookup with a stack key.
    if unsafe { GOVERNED.get(own) }.is_some() {
        return true;
    }
    let mut level = 1;
    while level < MAX_CGROUP_LEVEL {
        // SAFETY: helper without pointer arguments; returns 0 past the task's own level
        // (kernel/bpf/helpers.c, bpf_get_current_ancestor_cgroup_id → cgroup_ancestor).
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
        if id == 0 || id == own {
            return false;
        }
        // SAFETY: as above.
        if unsafe { GOVERNED.get(id) }.is_some() {
            return true;
        }
        level += 1;
    }
    false
}

/// The entry of the innermost governed cgroup holding the current task, if any.
///
/// A launch cgroup (below a governed one, with its own network profile) must decide for its tasks, so
/// unlike [`is_governed`] the walk does not stop at the first governed ancestor: it keeps the deepest.
#[inline(always)]
pub fn governing() -> Option<GovernedCgroup> {
    // SAFETY: helper without pointer arguments.
    let own = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: map lookup with a stack key; the value is copied out.
    if let Some(entry) = unsafe { GOVERNED.get(own) } {
        return Some(*entry);
    }
    let mut found = None;
    let mut level = 1;
    while level < MAX_CGROUP_LEVEL {
        // SAFETY: as in `is_governed`.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
        if id == 0 || id == own {
            break;
        }
        // SAFETY: as above.
        if let Some(entry) = unsafe { GOVERNED.get(id) } {
            found = Some(*entry);
        }
        level += 1;
    }
    found
}

/// Fills an event header for the current task.
#[inline(always)]
pub fn fill_header(header: &mut EventHeader, off: &KernelOffsets, backend: u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    header.kind = EventKind::Exec as u32;
    header.version = EVENT_VERSION;
    // SAFETY: helpers without pointer arguments.
    header.boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    #[expect(clippy::cast_possible_truncation, reason = "upper half is the tgid, lower the tid")]
    {
        header.pid = (pid_tgid >> 32) as u32;
        header.tid = pid_tgid as u32;
        header.uid = uid_gid as u32;
        header.gid = (uid_gid >> 32) as u32;
    }
    header.backend = backend;
    // SAFETY: as above.
    header.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    header.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    // SAFETY: as above.
    let task = unsafe { bpf_get_current_task() };
    // Best effort: the header is informational, not part of any decision (no site).
    header.start_ns = process_start(task, off);
    let parent = kernel::read_ptr(task, off.task_real_parent, ProbeSite::None);
    header.ppid =
        parent.and_then(|parent| kernel::read::<u32>(parent, off.task_tgid, ProbeSite::None)).unwrap_or(0);
    header.parent_start_ns = parent.map_or(0, |parent| process_start(parent, off));
}

/// When `task`'s process started: its thread group leader's `start_boottime`, which `de_thread`
/// (fs/exec.c) hands to a thread that execs, so it stays the same for the life of the process and is
/// what `/proc/<pid>/stat` reports (fs/proc/array.c, `do_task_stat`). 0 when it cannot be read.
#[inline(always)]
fn process_start(task: u64, off: &KernelOffsets) -> u64 {
    kernel::read_ptr(task, off.task_group_leader, ProbeSite::None)
        .and_then(|leader| kernel::read::<u64>(leader, off.task_start_boottime, ProbeSite::None))
        .unwrap_or(0)
}
