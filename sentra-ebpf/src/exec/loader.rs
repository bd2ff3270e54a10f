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
    exec::{
        LOADER_ENV_CHUNK, LOADER_PATH_LEN, MAX_ENV_READS, MAX_LOADER_CANDIDATES, MAX_LOADER_ENTRIES,
        MAX_LOADER_ENTRY, MAX_LOADER_VARS, NAME_LEN,
    },
    settings::{Mode, stats},
};

use crate::{
    kernel,
    maps::{ACTIVE_GENERATION, EVENTS, LOADER_PATHS, LOADER_SCRATCH, LoaderScratch, count, submit_flags},
    task,
};

const SIGKILL: u32 = 9;

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
/// environment one string (or [`LOADER_ENV_CHUNK`] bytes of a long one) at a time. The loop only
/// notes the strings that open with `LD` or `GC` (the verifier walks it once per read, so it does
/// as little as it can); they are classified after it.
#[inline(always)]
fn find(scratch: &mut LoaderScratch, start: u64, end: u64) -> Result<(), Fault> {
    store(&raw mut scratch.found, 0);
    store(&raw mut scratch.candidates_found, 0);
    store(&raw mut scratch.at_start, 1);
    let mut cursor = start;
    let mut reads: u32 = 0;
    while reads < MAX_ENV_READS && cursor < end {
        // SAFETY: bpf_probe_read_user_str checks the address.
        let Ok(read) = (unsafe { bpf_probe_read_user_str_bytes(cursor as *const u8, &mut scratch.buf) })
        else {
            return Err((LoaderVar::Environment, LoaderFault::Unreadable));
        };
        let len = read.len();
        let opening = u16::from_le_bytes([scratch.buf[0], scratch.buf[1]]);
        if load(&raw const scratch.at_start) != 0
            && (opening == u16::from_le_bytes(*b"LD") || opening == u16::from_le_bytes(*b"GC"))
        {
            let n = load(&raw const scratch.candidates_found) as usize;
            if n >= MAX_LOADER_CANDIDATES {
                return Err((LoaderVar::Environment, LoaderFault::TooMany));
            }
            scratch.candidates[n] = cursor;
            #[expect(clippy::cast_possible_truncation, reason = "n < MAX_LOADER_CANDIDATES")]
            store(&raw mut scratch.candidates_found, n as u32 + 1);
        }
        // A read that filled the buffer ended inside the string: the next one continues it.
        let whole = u32::from(len + 1 < LOADER_ENV_CHUNK);
        store(&raw mut scratch.at_start, whole);
        cursor += len as u64 + u64::from(whole);
        reads += 1;
    }
    if cursor < end {
        return Err((LoaderVar::Environment, LoaderFault::TooMany));
    }
    let mut c = 0;
    while c < MAX_LOADER_CANDIDATES {
        if c >= load(&raw const scratch.candidates_found) as usize {
            break;
        }
        let at = scratch.candidates[c];
        // SAFETY: bpf_probe_read_user_str checks the address.
        if unsafe { bpf_probe_read_user_str_bytes(at as *const u8, &mut scratch.buf) }.is_err() {
            return Err((LoaderVar::Environment, LoaderFault::Unreadable));
        }
        let kind = variable(&scratch.buf);
        if kind != NO_VARIABLE {
            let found = load(&raw const scratch.found) as usize;
            if found >= MAX_LOADER_VARS {
                return Err((LoaderVar::Environment, LoaderFault::TooMany));
            }
            scratch.values[found] = at + u64::from(kind >> 8);
            scratch.vars[found] = kind & 0xff;
            #[expect(clippy::cast_possible_truncation, reason = "found < MAX_LOADER_VARS")]
            store(&raw mut scratch.found, found as u32 + 1);
        }
        c += 1;
    }
    Ok(())
}

/// What [`variable`] returns for a string that sets no loader variable.
const NO_VARIABLE: u32 = u32::MAX;

/// The loader variable the string in `buf` sets (`LoaderVar`), with the length of its `NAME=` in the
/// bits above 8; [`NO_VARIABLE`] for any other. The first eight bytes name the candidate, and the `=`
/// must follow its name: a string ends at its NUL, so a shorter one never matches (bytes after the
/// NUL are not looked at unless everything before them matched).
#[inline(always)]
fn variable(buf: &[u8; LOADER_ENV_CHUNK]) -> u32 {
    #[expect(
        clippy::cast_ptr_alignment,
        reason = "`buf` starts the scratch slot, aligned for its u64 fields"
    )]
    // SAFETY: as the expectation says; eight bytes of the buffer.
    let head = unsafe { core::ptr::read(buf.as_ptr().cast::<u64>()) };
    let (var, name_len): (LoaderVar, u32) = if head == u64::from_le_bytes(*b"LD_PRELO") {
        (LoaderVar::Preload, 10)
    } else if head == u64::from_le_bytes(*b"LD_AUDIT") {
        (LoaderVar::Audit, 8)
    } else if head == u64::from_le_bytes(*b"LD_LIBRA") {
        (LoaderVar::LibraryPath, 15)
    } else if head == u64::from_le_bytes(*b"GCONV_PA") {
        (LoaderVar::GconvPath, 10)
    } else {
        return NO_VARIABLE;
    };
    let rest_matches = match var {
        LoaderVar::Preload => buf[8] == b'A' && buf[9] == b'D',
        LoaderVar::LibraryPath => buf[8..15] == *b"RY_PATH",
        LoaderVar::GconvPath => buf[8] == b'T' && buf[9] == b'H',
        _ => true,
    };
    if rest_matches && buf[name_len as usize] == b'=' {
        var as u32 | ((name_len + 1) << 8)
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

/// Every byte set: a word of eight bytes.
const ONES: u64 = 0x0101_0101_0101_0101;
const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
/// Words read to find an entry's end (the key's path, and the padding after it).
const ENTRY_WORDS: usize = LOADER_PATH_LEN.div_ceil(8);
/// What [`scan_entry`] found, as bits of `LoaderScratch::marks`.
const ENTRY_LAST: u32 = 1;
const ENTRY_SLASH: u32 = 2;
const ENTRY_DOLLAR: u32 = 4;
const ENTRY_DOT_DOT: u32 = 8;

/// `0x80` in each byte of `word` equal to `byte`, `0` in the others (exact: no borrow between bytes).
#[inline(always)]
const fn bytes_equal(word: u64, byte: u8) -> u64 {
    let x = word ^ (ONES * byte as u64);
    !(((x & LOW7) + LOW7) | x | LOW7)
}

/// The word of the key's path at byte `at` (which may run into the padding after it).
#[inline(always)]
fn word_at(scratch: &LoaderScratch, at: usize) -> u64 {
    let base = (&raw const scratch.key.data.path).cast::<u8>();
    // SAFETY: `at` + 8 stays within the path and the `pad` after it (callers bound `at`), all
    // inside this CPU's scratch slot; the read needs no alignment.
    unsafe { core::ptr::read_unaligned(base.add(at).cast::<u64>()) }
}

/// Scans the entry at the start of the key's path (the rest of a value, NUL-terminated), a word at
/// a time so that the verifier walks no branch per byte, into `len` (where the separator or NUL
/// ending it is) and `marks` (`ENTRY_*`). glibc splits `LD_PRELOAD` at spaces and colons,
/// `LD_LIBRARY_PATH` at colons and semicolons, `LD_AUDIT` and `GCONV_PATH` at colons: splitting every
/// value at all of them sees each entry the loader sees (and perhaps more, never fewer). Both go
/// through map memory: what follows sees one unknown value, not one per word the loop left at.
#[inline(always)]
fn scan_entry(scratch: &mut LoaderScratch) {
    let mut len = LOADER_PATH_LEN as u64;
    let mut marks = 0;
    let (mut slash, mut dollar, mut dot_dot) = (0, 0, 0);
    // The `/` and `.` bits of the word before, for a `/..` across two words.
    let (mut prev_slash, mut prev_dot) = (0, 0);
    let mut i = 0;
    while i < ENTRY_WORDS {
        let word = word_at(scratch, i * 8);
        let nul = bytes_equal(word, 0);
        let end = nul
            | bytes_equal(word, b':')
            | bytes_equal(word, b';')
            | bytes_equal(word, b' ')
            | bytes_equal(word, b'\t');
        // The bytes before the first end in this word (all of them when it has none).
        let lowest = end & end.wrapping_neg();
        let before = if end == 0 { u64::MAX } else { lowest.wrapping_sub(1) };
        let slashes = bytes_equal(word, b'/') & before;
        let dots = bytes_equal(word, b'.') & before;
        slash |= slashes;
        dollar |= bytes_equal(word, b'$') & before;
        // `/..` starting at byte m: in this word, or at byte 6 or 7 of the one before.
        dot_dot |= slashes & (dots >> 8) & (dots >> 16);
        dot_dot |= (prev_slash >> 56) & dots & (dots >> 8) & 0x80;
        dot_dot |= (prev_slash >> 48) & (prev_dot >> 56) & dots & 0x80;
        prev_slash = slashes;
        prev_dot = dots;
        if end != 0 {
            // `lowest` is 0x80 << 8j for the end's byte j in the word: j from a multiplication.
            let j = (lowest >> 7).wrapping_mul(0x0001_0203_0405_0607) >> 56;
            len = i as u64 * 8 + j;
            if nul & lowest != 0 {
                marks |= ENTRY_LAST;
            }
            break;
        }
        i += 1;
    }
    if slash != 0 {
        marks |= ENTRY_SLASH;
    }
    if dollar != 0 {
        marks |= ENTRY_DOLLAR;
    }
    if dot_dot != 0 {
        marks |= ENTRY_DOT_DOT;
    }
    #[expect(clippy::cast_possible_truncation, reason = "len <= LOADER_PATH_LEN")]
    store(&raw mut scratch.len, len as u32);
    store(&raw mut scratch.marks, marks);
}

/// Checks every entry of every value found: each is read into the key (the rest of its value from
/// where it starts), scanned, and looked up.
#[inline(always)]
fn scan(scratch: &mut LoaderScratch, generation: u32) -> Option<Fault> {
    scratch.key.data.generation = generation;
    store(&raw mut scratch.var, 0);
    store(&raw mut scratch.pos, 0);
    store(&raw mut scratch.entries, 0);
    let mut step: u32 = 0;
    while step < MAX_LOADER_ENTRIES {
        step += 1;
        let index = load(&raw const scratch.var);
        let var = var_at(scratch, index);
        match check_entry(scratch, index) {
            Err(fault) => return Some((var, fault)),
            Ok(false) => {}
            Ok(true) => {
                // The value ended: the next one, if any.
                let next = index + 1;
                if next >= load(&raw const scratch.found) {
                    return None;
                }
                store(&raw mut scratch.var, next);
                store(&raw mut scratch.pos, 0);
                store(&raw mut scratch.entries, 0);
            }
        }
    }
    Some((var_at(scratch, load(&raw const scratch.var)), LoaderFault::TooMany))
}

/// Reads, scans and judges the next entry of value `index`; whether it was the value's last.
#[inline(always)]
fn check_entry(scratch: &mut LoaderScratch, index: u32) -> Result<bool, LoaderFault> {
    let var = scratch.vars.get(index as usize & (MAX_LOADER_VARS - 1)).copied().unwrap_or(0);
    let dir = searched(var);
    let value = scratch.values.get(index as usize & (MAX_LOADER_VARS - 1)).copied().unwrap_or(0);
    let pos = load(&raw const scratch.pos);
    store(&raw mut scratch.len, 0);
    // The rest of the value from the entry on; cut short where the path ends, which matters only
    // when the entry reaches the cut (it is then too long).
    // SAFETY: bpf_probe_read_user_str checks the address.
    unsafe {
        bpf_probe_read_user_str_bytes((value + u64::from(pos)) as *const u8, &mut scratch.key.data.path)
    }
    .map_err(|_| LoaderFault::Unreadable)?;
    scan_entry(scratch);
    let len = load(&raw const scratch.len);
    let marks = load(&raw const scratch.marks);
    let last = marks & ENTRY_LAST != 0;
    if len as usize >= MAX_LOADER_ENTRY {
        store(&raw mut scratch.len, len.min(NAME_SHOWN));
        return Err(LoaderFault::TooLong);
    }
    store(&raw mut scratch.pos, pos + len + 1);
    let entries = load(&raw const scratch.entries);
    store(&raw mut scratch.entries, entries + 1);
    if len == 0 {
        // An empty search-path entry is the working directory; an empty value sets nothing.
        let empty_value = last && entries == 0;
        return if dir && !empty_value { Err(LoaderFault::Relative) } else { Ok(last) };
    }
    if marks & ENTRY_DOLLAR != 0 {
        return Err(LoaderFault::Expansion);
    }
    if marks & ENTRY_DOT_DOT != 0 {
        return Err(LoaderFault::DotDot);
    }
    if scratch.key.data.path[0] != b'/' {
        // A library name alone is searched in the library path, which is checked itself; a search
        // path entry, or a name with a `/`, is relative to the working directory.
        return if dir || marks & ENTRY_SLASH != 0 { Err(LoaderFault::Relative) } else { Ok(last) };
    }
    // A directory: stored prefixes end with `/`. A file: matched with its NUL. (`len` < MAX_LOADER_ENTRY.)
    let at = len as usize & 0xff;
    if at + 2 >= LOADER_PATH_LEN {
        return Err(LoaderFault::TooLong);
    }
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
    Ok(last)
}

/// How much of a refused entry the event shows (its `name` holds this many bytes and a NUL).
#[expect(clippy::cast_possible_truncation, reason = "NAME_LEN is 64")]
const NAME_SHOWN: u32 = NAME_LEN as u32 - 1;

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
