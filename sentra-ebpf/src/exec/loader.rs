//! The dynamic loader's variables on the `signal` backend: the stand-in for `lsm/mmap_file`.
//!
//! Without BPF LSM nothing stops a governed task from mapping code: `LD_PRELOAD=/tmp/x.so
//! /usr/bin/true` runs the library's code inside an allowed program, with no exec of anything the
//! policy denies. What can be stopped is the loader being told to: at `sched_process_exec` the new
//! image's environment (`mm->env_start..env_end`) is final and no other task can change it
//! (`fs/exec.c` `begin_new_exec` has killed the other threads and installed a fresh mm), and a
//! SIGKILL sent here is delivered before the image's first instruction, the loader's included.
//!
//! Each entry of `LD_PRELOAD`, `LD_AUDIT`, `LD_LIBRARY_PATH` and `GCONV_PATH` must lie where the
//! `lsm` backend would let code be mapped from: under `exec.libraries` or what an exec rule allows,
//! not under what one denies (`LOADER_PATHS`, those paths as text, looked up by longest prefix). A bare library
//! name in `LD_PRELOAD`/`LD_AUDIT` is searched in the library path, which is checked itself. Refused:
//! relative paths and, in a search path, empty entries (the working directory, glibc elf/dl-load.c
//! `fill_in_rpath`); `..` components; `$` (the loader expands `$ORIGIN`, `$LIB`, `$PLATFORM`);
//! entries, values or environments longer than is read here. The check is textual: a symbolic link
//! under an allowed directory is followed by the loader, so the allowed directories must not be
//! writable by the agent (the launcher runs it unprivileged).

use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_probe_read_user_str_bytes, bpf_send_signal},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use sentra_common::{
    event::{Decision, EventKind, GuardEvent, GuardHook, LoaderFault, LoaderVar, ProbeSite},
    exec::{LOADER_ENV_CHUNK, LOADER_PATH_LEN, MAX_ENV_READS, MAX_LOADER_VARS},
    settings::{Mode, stats},
};

use crate::{
    kernel,
    maps::{ACTIVE_GENERATION, EVENTS, LOADER_PATHS, LOADER_SCRATCH, LoaderScratch, count, submit_flags},
    task,
};

const SIGKILL: u32 = 9;

/// Bytes of all the variables' values together that are scanned; a longer total is refused.
const MAX_VALUE_STEPS: u32 = 512;

/// What was refused: the variable and why.
type Fault = (LoaderVar, LoaderFault);

/// `tp_btf/sched_process_exec`, `signal` backend only (the `lsm` backend refuses the mapping itself).
/// Arguments: `(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn exec_loader_env(ctx: BtfTracePointContext) -> i32 {
    try_exec_loader_env(&ctx).unwrap_or(0)
}

#[expect(
    clippy::unnecessary_wraps,
    reason = "probe convention: a thin wrapper maps the try_ function's Err to the fail-safe value"
)]
fn try_exec_loader_env(_ctx: &BtfTracePointContext) -> Result<i32, i32> {
    if !task::is_governed() {
        return Ok(0);
    }
    let off = kernel::offsets();
    let active = ACTIVE_GENERATION.get(0).copied().unwrap_or_default();
    // Without settings `exec_signal` has refused the exec already (fail closed).
    let Ok(settings) = super::ready(off, active.generation) else { return Ok(0) };
    let Some(slot) = LOADER_SCRATCH.get_ptr_mut(0) else { return Ok(0) };
    // SAFETY: this CPU's slot; a BPF program is not preempted by another on the same CPU mid-run.
    let scratch = unsafe { &mut *slot };
    let Some(fault) = check(scratch, active.generation) else { return Ok(0) };
    let audit = settings.mode == Mode::Audit as u32;
    emit(scratch, fault, audit);
    if !audit {
        // SAFETY: signals the current task only.
        unsafe { bpf_send_signal(SIGKILL) };
    }
    Ok(0)
}

/// The first entry at fault in the current task's environment, if any.
#[inline(always)]
fn check(scratch: &mut LoaderScratch, generation: u32) -> Option<Fault> {
    let off = kernel::offsets();
    let unreadable = (LoaderVar::Environment, LoaderFault::Unreadable);
    // No entry read yet: a refusal before the scan names none.
    store(&raw mut scratch.len, 0);
    // SAFETY: helper without pointer arguments.
    let task = unsafe { bpf_get_current_task() };
    let Ok(mm) = kernel::read_ptr(task, off.task_mm, ProbeSite::None) else { return Some(unreadable) };
    let Ok(start) = kernel::read::<u64>(mm, off.mm_env_start, ProbeSite::None) else {
        return Some(unreadable);
    };
    let Ok(end) = kernel::read::<u64>(mm, off.mm_env_end, ProbeSite::None) else { return Some(unreadable) };
    if let Err(fault) = find(scratch, start, end) {
        return Some(fault);
    }
    if load(&raw const scratch.found) == 0 {
        return None;
    }
    scan(scratch, generation)
}

/// A volatile load: the verifier then sees one unknown value, not the constant last stored.
#[inline(always)]
fn load(at: *const u32) -> u32 {
    // SAFETY: callers pass fields of this CPU's scratch slot.
    unsafe { core::ptr::read_volatile(at) }
}

#[inline(always)]
fn store(at: *mut u32, value: u32) {
    // SAFETY: as for `load`.
    unsafe { core::ptr::write_volatile(at, value) };
}

/// Records where each loader variable's value starts (`values`, `vars`, `found`), reading the
/// environment one string (or [`LOADER_ENV_CHUNK`] bytes of a long one) at a time.
#[inline(always)]
fn find(scratch: &mut LoaderScratch, start: u64, end: u64) -> Result<(), Fault> {
    store(&raw mut scratch.found, 0);
    store(&raw mut scratch.at_start, 1);
    let mut cursor = start;
    let mut reads: u32 = 0;
    while reads < MAX_ENV_READS {
        if cursor >= end {
            return Ok(());
        }
        // SAFETY: bpf_probe_read_user_str checks the address.
        let Ok(read) = (unsafe { bpf_probe_read_user_str_bytes(cursor as *const u8, &mut scratch.buf) })
        else {
            return Err((LoaderVar::Environment, LoaderFault::Unreadable));
        };
        let len = read.len();
        if load(&raw const scratch.at_start) != 0
            && let Some((var, skip)) = variable(&scratch.buf)
        {
            let found = load(&raw const scratch.found) as usize;
            if found >= MAX_LOADER_VARS {
                return Err((var, LoaderFault::TooMany));
            }
            scratch.values[found] = cursor + skip;
            scratch.vars[found] = var as u32;
            #[expect(clippy::cast_possible_truncation, reason = "found < MAX_LOADER_VARS")]
            store(&raw mut scratch.found, found as u32 + 1);
        }
        // A read that filled the buffer ended inside the string: the next one continues it.
        if len + 1 >= LOADER_ENV_CHUNK {
            store(&raw mut scratch.at_start, 0);
            cursor += len as u64;
        } else {
            store(&raw mut scratch.at_start, 1);
            cursor += len as u64 + 1;
        }
        reads += 1;
    }
    if cursor < end { Err((LoaderVar::Environment, LoaderFault::TooMany)) } else { Ok(()) }
}

/// The loader variable the string in `buf` sets, and the length of its `NAME=`. A string ends at its
/// NUL, so a shorter one never matches a longer name's `=` (bytes after the NUL are not compared
/// unless everything before them matched).
#[inline(always)]
fn variable(buf: &[u8; LOADER_ENV_CHUNK]) -> Option<(LoaderVar, u64)> {
    // SAFETY: the buffer holds at least 16 bytes.
    let head = unsafe { core::ptr::read_unaligned(buf.as_ptr().cast::<u64>()) };
    // SAFETY: as above.
    let tail = unsafe { core::ptr::read_unaligned(buf.as_ptr().add(8).cast::<u64>()) };
    let word = |s: &[u8; 8]| u64::from_le_bytes(*s);
    if head == word(b"LD_PRELO") && tail & 0xff_ffff == u64::from_le_bytes(*b"AD=\0\0\0\0\0") {
        Some((LoaderVar::Preload, 11))
    } else if head == word(b"LD_AUDIT") && tail & 0xff == u64::from(b'=') {
        Some((LoaderVar::Audit, 9))
    } else if head == word(b"LD_LIBRA") && tail == word(b"RY_PATH=") {
        Some((LoaderVar::LibraryPath, 16))
    } else if head == word(b"GCONV_PA") && tail & 0xff_ffff == u64::from_le_bytes(*b"TH=\0\0\0\0\0") {
        Some((LoaderVar::GconvPath, 11))
    } else {
        None
    }
}

/// Whether the variable is a search path (directories, an empty entry meaning the working
/// directory) rather than a list of libraries.
#[inline(always)]
fn searched(var: u32) -> bool {
    var == LoaderVar::LibraryPath as u32 || var == LoaderVar::GconvPath as u32
}

/// The variable at `index` of `vars`.
#[inline(always)]
fn var_at(scratch: &LoaderScratch, index: u32) -> LoaderVar {
    match scratch.vars.get(index as usize & (MAX_LOADER_VARS - 1)).copied().unwrap_or(0) {
        0 => LoaderVar::Preload,
        1 => LoaderVar::Audit,
        2 => LoaderVar::LibraryPath,
        _ => LoaderVar::GconvPath,
    }
}

/// Reads value `index` into `buf` and starts its scan.
#[inline(always)]
fn read_value(scratch: &mut LoaderScratch, index: u32) -> Result<(), LoaderFault> {
    let at = scratch.values.get(index as usize & (MAX_LOADER_VARS - 1)).copied().unwrap_or(0);
    // SAFETY: bpf_probe_read_user_str checks the address.
    let len = unsafe { bpf_probe_read_user_str_bytes(at as *const u8, &mut scratch.buf) }
        .map_err(|_| LoaderFault::Unreadable)?
        .len();
    if len + 1 >= LOADER_ENV_CHUNK {
        return Err(LoaderFault::TooLong);
    }
    store(&raw mut scratch.var, index);
    store(&raw mut scratch.pos, 0);
    store(&raw mut scratch.len, 0);
    store(&raw mut scratch.entries, 0);
    Ok(())
}

/// Checks every entry of every value found, byte by byte, one loop for all of them.
#[inline(always)]
fn scan(scratch: &mut LoaderScratch, generation: u32) -> Option<Fault> {
    if let Err(fault) = read_value(scratch, 0) {
        return Some((var_at(scratch, 0), fault));
    }
    scratch.key.data.generation = generation;
    let mut step: u32 = 0;
    while step < MAX_VALUE_STEPS {
        step += 1;
        let index = load(&raw const scratch.var);
        let var = scratch.vars.get(index as usize & (MAX_LOADER_VARS - 1)).copied().unwrap_or(0);
        let pos = load(&raw const scratch.pos) as usize & (LOADER_ENV_CHUNK - 1);
        let byte = scratch.buf.get(pos).copied().unwrap_or(0);
        #[expect(clippy::cast_possible_truncation, reason = "pos < LOADER_ENV_CHUNK")]
        store(&raw mut scratch.pos, pos as u32 + 1);
        // glibc splits LD_PRELOAD at spaces and colons, LD_LIBRARY_PATH at colons and semicolons,
        // LD_AUDIT and GCONV_PATH at colons: splitting every value at all of them sees each entry the
        // loader sees (and perhaps more, never fewer).
        let result = if byte == 0 || byte == b':' || byte == b';' || byte == b' ' || byte == b'\t' {
            end_entry(scratch, var, byte == 0)
        } else {
            add_byte(scratch, var, byte)
        };
        if let Err(fault) = result {
            return Some((var_at(scratch, index), fault));
        }
        if byte == 0 {
            let next = index + 1;
            if next >= load(&raw const scratch.found) {
                return None;
            }
            if let Err(fault) = read_value(scratch, next) {
                return Some((var_at(scratch, next), fault));
            }
        }
    }
    Some((var_at(scratch, load(&raw const scratch.var)), LoaderFault::TooLong))
}

/// Adds `byte` to the entry being scanned (into the key). A fault is noted and raised when the entry
/// ends, so that the event names the whole entry; only one too long to hold is refused at once.
#[inline(always)]
fn add_byte(scratch: &mut LoaderScratch, var: u32, byte: u8) -> Result<(), LoaderFault> {
    let len = load(&raw const scratch.len);
    if len == 0 {
        store(&raw mut scratch.bare, u32::from(byte != b'/'));
        store(&raw mut scratch.component, 0);
        store(&raw mut scratch.dots, 0);
        store(&raw mut scratch.pending, 0);
        if byte != b'/' && searched(var) {
            note(scratch, LoaderFault::Relative);
        }
    }
    // Room is kept for a `/` and the NUL.
    let at = len as usize & 0xff;
    if at + 2 >= LOADER_PATH_LEN {
        return Err(LoaderFault::TooLong);
    }
    if let Some(slot) = scratch.key.data.path.get_mut(at) {
        *slot = byte;
    }
    store(&raw mut scratch.len, len + 1);
    if byte == b'$' {
        note(scratch, LoaderFault::Expansion);
    }
    if byte == b'/' {
        if dot_dot(scratch) {
            note(scratch, LoaderFault::DotDot);
        }
        if load(&raw const scratch.bare) != 0 {
            // `lib/x.so`: relative to the working directory.
            note(scratch, LoaderFault::Relative);
        }
        store(&raw mut scratch.component, 0);
        store(&raw mut scratch.dots, 0);
    } else {
        store(&raw mut scratch.component, load(&raw const scratch.component) + 1);
        if byte == b'.' {
            store(&raw mut scratch.dots, load(&raw const scratch.dots) + 1);
        }
    }
    Ok(())
}

/// Notes `fault` for the entry being scanned, unless one is noted already.
#[inline(always)]
fn note(scratch: &mut LoaderScratch, fault: LoaderFault) {
    if load(&raw const scratch.pending) == 0 {
        store(&raw mut scratch.pending, fault as u32 + 1);
    }
}

/// The component just ended is `..`.
#[inline(always)]
fn dot_dot(scratch: &LoaderScratch) -> bool {
    load(&raw const scratch.component) == 2 && load(&raw const scratch.dots) == 2
}

/// Ends the entry being scanned (at a separator, or at the value's end when `last`) and checks it.
#[inline(always)]
fn end_entry(scratch: &mut LoaderScratch, var: u32, last: bool) -> Result<(), LoaderFault> {
    // The entry stays in the key (and `len`) when it is refused: the event names it.
    let len = load(&raw const scratch.len);
    let entries = load(&raw const scratch.entries);
    store(&raw mut scratch.entries, entries + 1);
    if len == 0 {
        // An empty search-path entry is the working directory; an empty value sets nothing.
        let empty_value = last && entries == 0;
        return if searched(var) && !empty_value { Err(LoaderFault::Relative) } else { Ok(()) };
    }
    if dot_dot(scratch) {
        note(scratch, LoaderFault::DotDot);
    }
    match load(&raw const scratch.pending) {
        0 => {}
        1 => return Err(LoaderFault::NotAllowed),
        2 => return Err(LoaderFault::Relative),
        3 => return Err(LoaderFault::DotDot),
        _ => return Err(LoaderFault::Expansion),
    }
    if load(&raw const scratch.bare) != 0 {
        // A library name: searched in the library path, which is checked itself.
        store(&raw mut scratch.len, 0);
        return Ok(());
    }
    let mut at = len as usize & 0xff;
    if searched(var) {
        // A directory: stored prefixes end with `/`.
        if let Some(slot) = scratch.key.data.path.get_mut(at) {
            *slot = b'/';
        }
        at += 1;
    }
    if let Some(slot) = scratch.key.data.path.get_mut(at) {
        *slot = 0;
    }
    #[expect(clippy::cast_possible_truncation, reason = "at < LOADER_PATH_LEN")]
    let bits = 32 + 8 * (at as u32 + 1);
    scratch.key.prefix_len = bits;
    // The key stays in map memory: on the stack it would take 260 of its 512 bytes.
    // An exec rule's deny is stored as 0: the longest prefix decides, as the nearest rule does.
    if LOADER_PATHS.get(&scratch.key).is_none_or(|allowed| *allowed == 0) {
        return Err(LoaderFault::NotAllowed);
    }
    store(&raw mut scratch.len, 0);
    Ok(())
}

/// Writes the refusal's event: the entry at fault (as far as it was read) in `name`.
#[inline(always)]
fn emit(scratch: &LoaderScratch, (var, fault): Fault, audit: bool) {
    let off = kernel::offsets();
    let active = ACTIVE_GENERATION.get(0).copied().unwrap_or_default();
    let Some(mut entry) = EVENTS.reserve::<GuardEvent>(0) else {
        count(stats::EVENTS_DROPPED);
        return;
    };
    // SAFETY: the reservation is sizeof(GuardEvent) bytes; every field is written below.
    let event = unsafe { &mut *entry.as_mut_ptr() };
    task::fill_header(&mut event.header, off, active.backend);
    event.header.kind = EventKind::Guard as u32;
    event.hook = GuardHook::LoaderEnv as u32;
    event.detail = var as u32;
    event.target = fault as u32;
    event.extra = 0;
    event.decision = if audit { Decision::AuditDenied } else { Decision::Denied } as u32;
    event.rule = 0;
    event.generation = active.generation;
    event.pad = 0;
    event.dev = 0;
    event.ino = 0;
    let len = load(&raw const scratch.len) as usize & 0xff;
    let mut i = 0;
    while i < event.name.len() {
        event.name[i] = if i < len { scratch.key.data.path.get(i).copied().unwrap_or(0) } else { 0 };
        i += 1;
    }
    if let Some(last) = event.name.last_mut() {
        *last = 0;
    }
    entry.submit(submit_flags(true));
}

sentra_common::same_name!(sentra_common::names::program::EXEC_LOADER_ENV, exec_loader_env);
