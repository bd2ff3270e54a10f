//! Maps shared with userspace, named as `sentra_common::names::map` says (checked at build time).

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf, lpm_trie::Key},
};
use sentra_common::{
    exec::{
        APPLET_ARG_LEN, AppletKey, FileKey, GovernedCgroup, InodeKey, LOADER_ENV_CHUNK, LoaderPath,
        MAX_LOADER_CANDIDATES, MAX_LOADER_VARS, MultiCall, NameKey, RuleValue, capacity,
    },
    settings::{ActiveGeneration, GENERATIONS, Settings, stats},
};

/// Events to userspace. 4 MiB holds about 1,900 exec events.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);
sentra_common::same_name!(sentra_common::names::map::EVENTS, EVENTS);

/// Counters (see `sentra_common::settings::stats`).
#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stats::COUNT, 0);
sentra_common::same_name!(sentra_common::names::map::STATS, STATS);

/// Governed cgroups by id; their descendants are governed too.
#[map]
pub static GOVERNED: HashMap<u64, GovernedCgroup> = HashMap::with_max_entries(1024, 0);
sentra_common::same_name!(sentra_common::names::map::GOVERNED, GOVERNED);

/// `[0]`: which policy generation decides, and which backend enforces.
#[map]
pub static ACTIVE_GENERATION: Array<ActiveGeneration> = Array::with_max_entries(1, 0);
sentra_common::same_name!(sentra_common::names::map::ACTIVE_GENERATION, ACTIVE_GENERATION);

/// Settings per generation.
#[map]
pub static SETTINGS: Array<Settings> = Array::with_max_entries(GENERATIONS, 0);
sentra_common::same_name!(sentra_common::names::map::SETTINGS, SETTINGS);

/// Rules on a file's own (device, inode).
#[map]
pub static EXEC_INODE_RULES: HashMap<InodeKey, RuleValue> =
    HashMap::with_max_entries(capacity::INODE_RULES, BPF_F_NO_PREALLOC);
sentra_common::same_name!(sentra_common::names::map::EXEC_INODE_RULES, EXEC_INODE_RULES);

/// Rules on (parent directory, name): exact paths.
#[map]
pub static EXEC_NAME_RULES: HashMap<NameKey, RuleValue> =
    HashMap::with_max_entries(capacity::NAME_RULES, BPF_F_NO_PREALLOC);
sentra_common::same_name!(sentra_common::names::map::EXEC_NAME_RULES, EXEC_NAME_RULES);

/// Rules on a directory: prefixes.
#[map]
pub static EXEC_DIR_RULES: HashMap<InodeKey, RuleValue> =
    HashMap::with_max_entries(capacity::DIR_RULES, BPF_F_NO_PREALLOC);
sentra_common::same_name!(sentra_common::names::map::EXEC_DIR_RULES, EXEC_DIR_RULES);

/// `argv` pointer of each governed thread inside `execve`/`execveat`, keyed by `pid_tgid`.
#[map]
pub static EXEC_ARGV: LruHashMap<u64, u64> = LruHashMap::with_max_entries(4096, 0);
sentra_common::same_name!(sentra_common::names::map::EXEC_ARGV, EXEC_ARGV);

/// The controller's own processes (tgid → 1): governed tasks may not signal or trace them.
#[map]
pub static PROTECTED: HashMap<u32, u32> = HashMap::with_max_entries(64, 0);
sentra_common::same_name!(sentra_common::names::map::PROTECTED, PROTECTED);

/// Sentra's own files (→ 1): governed tasks may not open them for writing, truncate, remove or
/// rename them.
#[map]
pub static PROTECTED_FILES: HashMap<FileKey, u32> = HashMap::with_max_entries(1024, 0);
sentra_common::same_name!(sentra_common::names::map::PROTECTED_FILES, PROTECTED_FILES);

/// `exec.libraries`: files and directories (keyed with their generation) from which governed tasks
/// may map executable code although the exec policy does not allow them as programs (→ 1).
#[map]
pub static EXEC_LIBRARIES: HashMap<InodeKey, u32> =
    HashMap::with_max_entries(capacity::LIBRARIES, BPF_F_NO_PREALLOC);
sentra_common::same_name!(sentra_common::names::map::EXEC_LIBRARIES, EXEC_LIBRARIES);

/// Multi-call binaries (keyed with their generation): a run of one is decided by its applet's name.
#[map]
pub static EXEC_MULTICALL: HashMap<InodeKey, MultiCall> =
    HashMap::with_max_entries(capacity::MULTICALL, BPF_F_NO_PREALLOC);
sentra_common::same_name!(sentra_common::names::map::EXEC_MULTICALL, EXEC_MULTICALL);

/// The exec rule covering each program name, for applets of multi-call binaries.
#[map]
pub static EXEC_APPLETS: HashMap<AppletKey, RuleValue> =
    HashMap::with_max_entries(capacity::APPLETS, BPF_F_NO_PREALLOC);
sentra_common::same_name!(sentra_common::names::map::EXEC_APPLETS, EXEC_APPLETS);

/// Where an argument is read to find an applet's name, and the key it becomes (together too large for
/// the exec programs' stack).
#[repr(C)]
pub struct AppletScratch {
    pub arg: [u8; APPLET_ARG_LEN],
    pub key: AppletKey,
    /// Where the last path component of `arg` starts, kept in map memory while it is searched for:
    /// in a register, each of its values would be a verifier state of its own.
    pub base: u32,
    pub pad: u32,
    /// The check's outcome, handed back through memory (`exec/applet.rs` `check`).
    pub outcome: [u32; 4],
}

/// `[0]`: this CPU's [`AppletScratch`].
#[map]
pub static APPLET_SCRATCH: PerCpuArray<AppletScratch> = PerCpuArray::with_max_entries(1, 0);
sentra_common::same_name!(sentra_common::names::map::APPLET_SCRATCH, APPLET_SCRATCH);

/// `exec.libraries` and the exec rules' paths as text, per generation (→ 1 allowed, 0 denied): what
/// the dynamic loader's variables may name on the `signal` backend (`exec/loader.rs`).
#[map]
pub static LOADER_PATHS: LpmTrie<LoaderPath, u32> =
    LpmTrie::with_max_entries(capacity::LOADER_PATHS, BPF_F_NO_PREALLOC);
sentra_common::same_name!(sentra_common::names::map::LOADER_PATHS, LOADER_PATHS);

/// Where `exec/loader.rs` reads the environment and builds its keys (too large for the stack), and the
/// scan's state, kept in map memory: in registers, each of its values would be a verifier state of
/// its own (as `AppletScratch::base`).
#[repr(C)]
pub struct LoaderScratch {
    /// One environment string (or a piece of a long one); then each variable's value in turn.
    pub buf: [u8; LOADER_ENV_CHUNK],
    /// The entry being checked, as a `LOADER_PATHS` key.
    pub key: Key<LoaderPath>,
    /// Also where the word-wise scans of the key's path read past its end (`exec/loader.rs`).
    pub pad: u32,
    /// User addresses of the environment strings that open like a loader variable.
    pub candidates: [u64; MAX_LOADER_CANDIDATES],
    /// User addresses of the variables' values, and which [`sentra_common::event::LoaderVar`] each is.
    pub values: [u64; MAX_LOADER_VARS],
    pub vars: [u32; MAX_LOADER_VARS],
    /// How many of `values` are filled.
    pub found: u32,
    /// The environment string being read starts a variable (it is not the rest of a long one).
    pub at_start: u32,
    /// How many of `candidates` are filled.
    pub candidates_found: u32,
    /// Which value is being checked, where its next entry starts, and how many of its entries ended.
    pub var: u32,
    pub pos: u32,
    pub entries: u32,
    /// The length of the entry in the key (the event names it), and what its scan found.
    pub len: u32,
    pub marks: u32,
}

/// `[0]`: this CPU's [`LoaderScratch`].
#[map]
pub static LOADER_SCRATCH: PerCpuArray<LoaderScratch> = PerCpuArray::with_max_entries(1, 0);
sentra_common::same_name!(sentra_common::names::map::LOADER_SCRATCH, LOADER_SCRATCH);

/// Ring-buffer backlog (bytes waiting) above which even a routine event wakes the controller.
const WAKEUP_BACKLOG: u64 = 512 << 10;

/// Flags for submitting an event to `EVENTS`. A denial (`urgent`) wakes the controller at once; a
/// routine event does not, unless a backlog has built up: the controller also drains on a short timer.
/// A wakeup queues irq work from the exec path (kernel/bpf/ringbuf.c, `bpf_ringbuf_commit`) and, on a
/// busy or single CPU, schedules the controller in before the exec completes; most events need
/// neither.
#[inline(always)]
pub fn submit_flags(urgent: bool) -> u64 {
    if urgent || EVENTS.query(u64::from(BPF_RB_AVAIL_DATA)) > WAKEUP_BACKLOG {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}

/// Adds one to a counter in `STATS`.
#[inline(always)]
pub fn count(index: u32) {
    if let Some(ptr) = STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot; BPF programs are not preempted on the same CPU within one run.
        unsafe { *ptr += 1 };
    }
}
