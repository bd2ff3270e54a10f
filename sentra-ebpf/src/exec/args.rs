//! Capturing the first arguments of an exec into its event.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_user, bpf_probe_read_user_str_bytes};
use sentra_common::{
    event::{ARG_LEN, ExecEvent, MAX_ARGS, ProbeSite, flags},
    offsets::KernelOffsets,
};

use super::ArgSource;
use crate::kernel;

/// Fills `event.args` from `source`, flagging truncation.
#[inline(always)]
pub fn capture(event: &mut ExecEvent, off: &KernelOffsets, source: ArgSource) {
    let captured = match source {
        ArgSource::UserArgv(argv) => from_argv(event, argv),
        ArgSource::NewImage => from_new_image(event, off),
        ArgSource::None => None,
    };
    match captured {
        None => event.flags |= flags::ARGS_UNAVAILABLE,
        Some(count) => {
            if count < event.argc || count as usize > MAX_ARGS {
                event.flags |= flags::ARGS_TRUNCATED;
            }
        }
    }
    // Clear the unused slots so userspace never sees stale ring-buffer bytes.
    event.args_len = 0;
    let mut i = captured.unwrap_or(0) as usize;
    while i < MAX_ARGS {
        event.args[i][0] = 0;
        i += 1;
    }
}

/// Reads one argument string; returns its length, flagging one cut short.
#[inline(always)]
fn read_arg(event: &mut ExecEvent, i: usize, src: u64) -> Option<usize> {
    if i >= MAX_ARGS {
        return None;
    }
    // SAFETY: bpf_probe_read_user_str checks the address.
    let len = unsafe { bpf_probe_read_user_str_bytes(src as *const u8, &mut event.args[i]) }.ok()?.len();
    if len + 1 >= ARG_LEN {
        event.flags |= flags::ARGS_TRUNCATED;
    }
    Some(len)
}

/// From the caller's `argv` (an array of user pointers, still mapped during `bprm_check_security`).
#[inline(always)]
fn from_argv(event: &mut ExecEvent, argv: u64) -> Option<u32> {
    let mut i: usize = 0;
    while i < MAX_ARGS {
        // SAFETY: as above.
        let ptr: u64 = unsafe { bpf_probe_read_user((argv + 8 * i as u64) as *const u64) }.ok()?;
        if ptr == 0 {
            break;
        }
        if read_arg(event, i, ptr).is_none() {
            break;
        }
        i += 1;
    }
    #[expect(clippy::cast_possible_truncation, reason = "i <= MAX_ARGS")]
    Some(i as u32)
}

/// From the new image's argument area (`mm->arg_start..arg_end`, NUL-separated strings).
#[inline(always)]
fn from_new_image(event: &mut ExecEvent, off: &KernelOffsets) -> Option<u32> {
    // A failed read here flags the event ARGS_UNAVAILABLE; it decides nothing (no site).
    // SAFETY: helper without pointer arguments.
    let task = unsafe { bpf_get_current_task() };
    let mm = kernel::read_ptr(task, off.task_mm, ProbeSite::None).ok()?;
    let start: u64 = kernel::read(mm, off.mm_arg_start, ProbeSite::None).ok()?;
    let end: u64 = kernel::read(mm, off.mm_arg_end, ProbeSite::None).ok()?;
    let mut cursor = start;
    let mut i: usize = 0;
    while i < MAX_ARGS && cursor < end {
        let len = read_arg(event, i, cursor)?;
        cursor += len as u64 + 1;
        i += 1;
    }
    #[expect(clippy::cast_possible_truncation, reason = "i <= MAX_ARGS")]
    Some(i as u32)
}
