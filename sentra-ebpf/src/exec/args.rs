//! Capturing the first arguments of an exec into its event.

use aya_ebpf::helpers::{
    bpf_get_current_task, bpf_probe_read_user, bpf_probe_read_user_str_bytes, generated,
};
use sentra_common::{
    event::{ARG_LEN, ARGS_AREA, ExecEvent, MAX_ARGS, ProbeSite, flags},
    offsets::KernelOffsets,
};

use super::ArgSource;
use crate::kernel;

/// Fills `event.args` from `source`, flagging truncation.
#[inline(always)]
pub fn capture(event: &mut ExecEvent, off: &KernelOffsets, source: ArgSource) {
    match source {
        ArgSource::UserArgv(argv) => {
            let captured = from_argv(event, argv);
            if captured < event.argc || captured as usize > MAX_ARGS {
                event.flags |= flags::ARGS_TRUNCATED;
            }
            // Clear the unused slots so userspace never sees stale ring-buffer bytes.
            let mut i = captured as usize;
            while i < MAX_ARGS {
                event.args[i][0] = 0;
                i += 1;
            }
        }
        ArgSource::NewImage => from_new_image(event, off),
        ArgSource::None => event.flags |= flags::ARGS_UNAVAILABLE,
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

/// From the caller's `argv` (an array of user pointers, still mapped during `bprm_check_security`):
/// how many arguments were read.
#[inline(always)]
fn from_argv(event: &mut ExecEvent, argv: u64) -> u32 {
    let mut i: usize = 0;
    while i < MAX_ARGS {
        // SAFETY: as above.
        let Ok(ptr) = (unsafe { bpf_probe_read_user((argv + 8 * i as u64) as *const u64) }) else { break };
        if ptr == 0 || read_arg(event, i, ptr).is_none() {
            break;
        }
        i += 1;
    }
    #[expect(clippy::cast_possible_truncation, reason = "i <= MAX_ARGS")]
    let read = i as u32;
    read
}

/// From the new image's argument area (`mm->arg_start..arg_end`, the strings one after another):
/// its first [`ARGS_AREA`] bytes in one read ([`flags::ARGS_PACKED`]). One `strncpy_from_user` per
/// argument costs a call and a hardened-usercopy check of the destination each
/// (`lib/strncpy_from_user.c`); userspace splits the area.
#[inline(always)]
fn from_new_image(event: &mut ExecEvent, off: &KernelOffsets) {
    event.args_len = 0;
    // A failed read here flags the event ARGS_UNAVAILABLE; it decides nothing (no site).
    let Some((start, len)) = area(off) else {
        event.flags |= flags::ARGS_UNAVAILABLE;
        return;
    };
    if len > ARGS_AREA as u64 {
        event.flags |= flags::ARGS_TRUNCATED;
    }
    #[expect(clippy::cast_possible_truncation, reason = "at most ARGS_AREA")]
    let size = len.min(ARGS_AREA as u64) as u32;
    // SAFETY: `args` is ARGS_AREA bytes and `size` at most that; the helper checks the source.
    let read = unsafe {
        generated::bpf_probe_read_user(
            event.args.as_mut_ptr().cast(),
            size,
            start as *const core::ffi::c_void,
        )
    };
    if read == 0 {
        event.flags |= flags::ARGS_PACKED;
        event.args_len = size;
    } else {
        event.flags |= flags::ARGS_UNAVAILABLE;
    }
}

/// Where the current task's argument area starts, and its length.
#[inline(always)]
fn area(off: &KernelOffsets) -> Option<(u64, u64)> {
    // SAFETY: helper without pointer arguments.
    let task = unsafe { bpf_get_current_task() };
    let mm = kernel::read_ptr(task, off.task_mm, ProbeSite::None).ok()?;
    let start: u64 = kernel::read(mm, off.mm_arg_start, ProbeSite::None).ok()?;
    let end: u64 = kernel::read(mm, off.mm_arg_end, ProbeSite::None).ok()?;
    Some((start, end.checked_sub(start)?))
}
