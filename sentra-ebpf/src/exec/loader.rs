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
const MAX_VALUE_STEPS: u32 = 256;

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
        // The variable found (`LoaderVar`, and the length of its `NAME=` above it) goes through map
        // memory: what follows then sees one unknown value, not each match's constants, which
        // would multiply the states the verifier walks per string.
        let kind = if load(&raw const scratch.at_start) != 0 { variable(&scratch.buf) } else { NO_VARIABLE };
        store(&raw mut scratch.kind, kind);
        let kind = load(&raw const scratch.kind);
        if kind != NO_VARIABLE {
            let found = load(&raw const scratch.found) as usize;
            if found >= MAX_LOADER_VARS {
                return Err((LoaderVar::Environment, LoaderFault::TooMany));
            }
            scratch.values[found] = cursor + u64::from(kind >> 8);
            scratch.vars[found] = kind & 0xff;
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

/// What [`variable`] returns for a string that sets no loader variable.
const NO_VARIABLE: u32 = u32::MAX;

/// The loader variable the string in `buf` sets (`LoaderVar`), with the length of its `NAME=` in the
/// bits above 8; [`NO_VARIABLE`] for any other. A string ends at its NUL, so a shorter one never
/// matches a longer name's `=` (bytes after the NUL are not compared unless everything before them
/// matched).
#[inline(always)]
fn variable(buf: &[u8; LOADER_ENV_CHUNK]) -> u32 {
    // SAFETY: the buffer holds at least 16 bytes.
    let head = unsafe { core::ptr::read_unaligned(buf.as_ptr().cast::<u64>()) };
    // SAFETY: as above.
    let tail = unsafe { core::ptr::read_unaligned(buf.as_ptr().add(8).cast::<u64>()) };
    let word = |s: &[u8; 8]| u64::from_le_bytes(*s);
    if head == word(b"LD_PRELO") && tail & 0xff_ffff == u64::from_le_bytes(*b"AD=\0\0\0\0\0") {
        LoaderVar::Preload as u32 | 11 << 8
    } else if head == word(b"LD_AUDIT") && tail & 0xff == u64::from(b'=') {
        LoaderVar::Audit as u32 | 9 << 8
    } else if head == word(b"LD_LIBRA") && tail == word(b"RY_PATH=") {
        LoaderVar::LibraryPath as u32 | 16 << 8
    } else if head == word(b"GCONV_PA") && tail & 0xff_ffff == u64::from_le_bytes(*b"TH=\0\0\0\0\0") {
        LoaderVar::GconvPath as u32 | 11 << 8
    } else {
        NO_VARIABLE
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

/// Marks of an entry: a `$`, a `..` component.
const MARK_EXPANSION: u32 = 1;
const MARK_DOT_DOT: u32 = 2;
/// `/..` as the last three bytes of an entry's window (the oldest byte highest).
const SLASH_DOT_DOT: u32 = (b'/' as u32) << 16 | (b'.' as u32) << 8 | b'.' as u32;

/// Starts an entry: nothing read yet, as if after a `/` (so that a leading `..` is a component).
#[inline(always)]
fn start_entry(scratch: &mut LoaderScratch) {
    store(&raw mut scratch.len, 0);
    store(&raw mut scratch.slash, 0);
    store(&raw mut scratch.marks, 0);
    store(&raw mut scratch.window, u32::from(b'/'));
}

/// Reads value `index` into `buf` and starts its scan.
#[inline(always)]
fn read_value(scratch: &mut LoaderScratch, index: u32) -> Result<(), LoaderFault> {
    let at = scratch.values.get(index as usize & (MAX_LOADER_VARS - 1)).copied().unwrap_or(0);
    start_entry(scratch);
    // SAFETY: bpf_probe_read_user_str checks the address.
    let len = unsafe { bpf_probe_read_user_str_bytes(at as *const u8, &mut scratch.buf) }
        .map_err(|_| LoaderFault::Unreadable)?
        .len();
    if len + 1 >= LOADER_ENV_CHUNK {
        return Err(LoaderFault::TooLong);
    }
    store(&raw mut scratch.var, index);
    store(&raw mut scratch.pos, 0);
    store(&raw mut scratch.entries, 0);
    Ok(())
}

/// Checks every entry of every value found, byte by byte, one loop for all of them. The loop's
/// state lives in map memory and its body branches little: older verifiers walk each iteration.
#[inline(always)]
fn scan(scratch: &mut LoaderScratch, generation: u32) -> Option<Fault> {
    if let Err(fault) = read_value(scratch, 0) {
        return Some((var_at(scratch, 0), fault));
    }
    scratch.key.data.generation = generation;
    let mut step: u32 = 0;
    while step < MAX_VALUE_STEPS {
        step += 1;
        let pos = load(&raw const scratch.pos) as usize & (LOADER_ENV_CHUNK - 1);
        let byte = scratch.buf.get(pos).copied().unwrap_or(0);
        #[expect(clippy::cast_possible_truncation, reason = "pos < LOADER_ENV_CHUNK")]
        store(&raw mut scratch.pos, pos as u32 + 1);
        // glibc splits LD_PRELOAD at spaces and colons, LD_LIBRARY_PATH at colons and semicolons,
        // LD_AUDIT and GCONV_PATH at colons: splitting every value at all of them sees each entry the
        // loader sees (and perhaps more, never fewer).
        if byte == 0 || byte == b':' || byte == b';' || byte == b' ' || byte == b'\t' {
            let index = load(&raw const scratch.var);
            if let Err(fault) = end_entry(scratch, index, byte == 0) {
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
        } else if let Err(fault) = add_byte(scratch, byte) {
            return Some((var_at(scratch, load(&raw const scratch.var)), fault));
        }
    }
    Some((var_at(scratch, load(&raw const scratch.var)), LoaderFault::TooLong))
}

/// Adds `byte` to the entry being scanned (into the key), marking what is checked when it ends, so
/// that the event names the whole entry; only an entry too long to hold is refused at once.
#[inline(always)]
fn add_byte(scratch: &mut LoaderScratch, byte: u8) -> Result<(), LoaderFault> {
    let len = load(&raw const scratch.len);
    // Room is kept for a `/` and the NUL.
    let at = len as usize & 0xff;
    if at + 3 >= LOADER_PATH_LEN {
        return Err(LoaderFault::TooLong);
    }
    if let Some(slot) = scratch.key.data.path.get_mut(at) {
        *slot = byte;
    }
    store(&raw mut scratch.len, len + 1);
    let window = load(&raw const scratch.window);
    if byte == b'$' {
        store(&raw mut scratch.marks, load(&raw const scratch.marks) | MARK_EXPANSION);
    }
    if byte == b'/' {
        store(&raw mut scratch.slash, 1);
        if window & 0xff_ffff == SLASH_DOT_DOT {
            store(&raw mut scratch.marks, load(&raw const scratch.marks) | MARK_DOT_DOT);
        }
    }
    store(&raw mut scratch.window, (window << 8) | u32::from(byte));
    Ok(())
}

/// Ends the entry being scanned in value `index` (at a separator, or at the value's end when
/// `last`) and checks it. A refused entry stays in the key (and `len`): the event names it.
#[inline(always)]
fn end_entry(scratch: &mut LoaderScratch, index: u32, last: bool) -> Result<(), LoaderFault> {
    let var = scratch.vars.get(index as usize & (MAX_LOADER_VARS - 1)).copied().unwrap_or(0);
    let dir = searched(var);
    let len = load(&raw const scratch.len);
    let entries = load(&raw const scratch.entries);
    store(&raw mut scratch.entries, entries + 1);
    if len == 0 {
        // An empty search-path entry is the working directory; an empty value sets nothing.
        let empty_value = last && entries == 0;
        return if dir && !empty_value { Err(LoaderFault::Relative) } else { Ok(()) };
    }
    // `add_byte` kept `len` below this; the test tells the verifier.
    let at = len as usize & 0xff;
    if at + 2 >= LOADER_PATH_LEN {
        return Err(LoaderFault::TooLong);
    }
    let marks = load(&raw const scratch.marks);
    if marks & MARK_EXPANSION != 0 {
        return Err(LoaderFault::Expansion);
    }
    if marks & MARK_DOT_DOT != 0 || load(&raw const scratch.window) & 0xff_ffff == SLASH_DOT_DOT {
        return Err(LoaderFault::DotDot);
    }
    if scratch.key.data.path[0] != b'/' {
        // A library name alone is searched in the library path, which is checked itself; a search
        // path entry, or a name with a `/`, is relative to the working directory.
        if dir || load(&raw const scratch.slash) != 0 {
            return Err(LoaderFault::Relative);
        }
        start_entry(scratch);
        return Ok(());
    }
    // A directory: stored prefixes end with `/`. A file: matched with its NUL.
    if let Some(slot) = scratch.key.data.path.get_mut(at) {
        *slot = if dir { b'/' } else { 0 };
    }
    if let Some(slot) = scratch.key.data.path.get_mut(at + 1) {
        *slot = 0;
    }
    let end = at + usize::from(dir);
    #[expect(clippy::cast_possible_truncation, reason = "end < LOADER_PATH_LEN")]
    let bits = 32 + 8 * (end as u32 + 1);
    scratch.key.prefix_len = bits;
    // The key stays in map memory: on the stack it would take 260 of its 512 bytes. An exec rule's
    // deny is stored as 0: the longest prefix decides, as the nearest rule does.
    if LOADER_PATHS.get(&scratch.key).is_none_or(|allowed| *allowed == 0) {
        return Err(LoaderFault::NotAllowed);
    }
    start_entry(scratch);
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
