//! Keys and values of the exec rule maps.
//!
//! A file being executed is identified in the kernel by what `bprm->file` resolves to, never by the
//! string the caller passed:
//! - `EXEC_INODE_RULES`: the file's own (device, inode): denies that follow a binary through hard links.
//! - `EXEC_NAME_RULES`: (device, inode) of its parent directory plus its name: exact paths. Keyed by the
//!   directory, not the file, so that a package upgrade that replaces the file keeps the rule.
//! - `EXEC_DIR_RULES`: (device, inode) of a directory: prefix rules; the nearest ancestor wins.
//!
//! Device numbers are the kernel's internal `dev_t` (`MAJOR << 20 | MINOR`, `include/linux/kdev_t.h`),
//! which userspace derives from `stat`'s `st_dev`.

/// How many entries each per-generation exec map holds (`max_entries`), for both generations
/// together: a policy whose compiled tables do not fit half of each (the old generation stays in
/// the maps until the new one is active) is refused when it is compiled, not by the kernel's
/// `ENOSPC` halfway through a load.
pub mod capacity {
    /// `EXEC_INODE_RULES`.
    pub const INODE_RULES: u32 = 32768;
    /// `EXEC_NAME_RULES`.
    pub const NAME_RULES: u32 = 65536;
    /// `EXEC_DIR_RULES`.
    pub const DIR_RULES: u32 = 32768;
    /// `EXEC_LIBRARIES`.
    pub const LIBRARIES: u32 = 8192;
    /// `EXEC_MULTICALL`.
    pub const MULTICALL: u32 = 1024;
    /// `EXEC_APPLETS`.
    pub const APPLETS: u32 = 16384;
    /// `LOADER_PATHS`.
    pub const LOADER_PATHS: u32 = 32768;
}

/// Longest file-name component matched by a name rule, including the terminating NUL.
pub const NAME_LEN: usize = 64;
/// Deepest directory nesting walked when looking for directory rules.
pub const MAX_WALK_DEPTH: u32 = 32;
/// Rule index meaning "no rule matched, the default decided".
pub const RULE_DEFAULT: u32 = u32::MAX;
/// Rule index meaning "the probe failed and decided closed".
pub const RULE_INTERNAL_ERROR: u32 = u32::MAX - 1;
/// Rule index meaning "the path is deeper than the walk goes and no rule matched on the way": denied.
pub const RULE_PATH_TOO_DEEP: u32 = u32::MAX - 2;
/// Rule index meaning "a multi-call binary's applet could not be told from its arguments" (an
/// argument too long to read, or dispatchers nested deeper than [`MAX_DISPATCH`]): denied.
pub const RULE_APPLET_UNKNOWN: u32 = u32::MAX - 3;
/// Every rule index from here up is one of the `RULE_*` values above, not a policy rule.
pub const RULE_SPECIAL_MIN: u32 = u32::MAX - 7;

/// Longest name of a multi-call binary's dispatcher (`busybox`, `toybox`) in [`MultiCall`].
pub const STEM_LEN: usize = 16;
/// How many dispatcher names in a row (`busybox busybox mount`) the kernel follows to the applet.
pub const MAX_DISPATCH: u32 = 4;
/// Longest argument the kernel reads to find an applet's name (the bytes after the last `/`).
pub const APPLET_ARG_LEN: usize = 256;

/// Longest entry of a dynamic-loader variable the kernel checks, with its terminating NUL, and the
/// size of the path in [`LoaderPath`]: with the generation, the 256 bytes an LPM trie key holds at
/// most (`kernel/bpf/lpm_trie.c` `LPM_DATA_SIZE_MAX`).
pub const LOADER_PATH_LEN: usize = 252;
/// How many dynamic-loader variables one environment may carry for the kernel to check them all.
pub const MAX_LOADER_VARS: usize = 4;
/// How many environment strings opening with `LD` or `GC` the kernel notes before it classifies
/// them; an environment with more is refused.
pub const MAX_LOADER_CANDIDATES: usize = 8;
/// How many entries of all the loader variables' values together the kernel checks; more are
/// refused.
pub const MAX_LOADER_ENTRIES: u32 = 8;
/// Longest entry of a loader variable the kernel checks (what it reads of a value into the key):
/// room stays in [`LoaderPath::path`] for a `/` and the NUL after it.
pub const MAX_LOADER_ENTRY: usize = LOADER_PATH_LEN - 3;
/// How many strings of an environment the kernel reads looking for them (each at most
/// [`LOADER_ENV_CHUNK`] bytes at a time); an environment with more is refused.
pub const MAX_ENV_READS: u32 = 256;
/// Bytes read from the environment at a time (a longer string takes several reads).
pub const LOADER_ENV_CHUNK: usize = 2048;

/// Data of a `LOADER_PATHS` key (an LPM trie: the longest stored prefix of a looked-up key wins): the
/// generation, whose 32 bits every stored prefix includes, then a path. A directory is stored with its
/// trailing `/` and covers everything below it; a file is stored with its NUL and covers itself only.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoaderPath {
    pub generation: u32,
    pub path: [u8; LOADER_PATH_LEN],
}

impl Default for LoaderPath {
    fn default() -> Self {
        Self { generation: 0, path: [0; LOADER_PATH_LEN] }
    }
}

/// Key of `EXEC_INODE_RULES` and `EXEC_DIR_RULES`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct InodeKey {
    pub generation: u32,
    pub pad: u32,
    pub dev: u64,
    pub ino: u64,
}

/// Key of `EXEC_NAME_RULES`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NameKey {
    pub generation: u32,
    pub pad: u32,
    pub dir_dev: u64,
    pub dir_ino: u64,
    /// NUL-padded file name.
    pub name: [u8; NAME_LEN],
}

impl Default for NameKey {
    fn default() -> Self {
        Self { generation: 0, pad: 0, dir_dev: 0, dir_ino: 0, name: [0; NAME_LEN] }
    }
}

/// Key of `EXEC_APPLETS`: the exec rule that covers a program *name*, consulted when a multi-call
/// binary runs as one of its applets.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AppletKey {
    pub generation: u32,
    pub pad: u32,
    /// NUL-padded program name.
    pub name: [u8; NAME_LEN],
}

impl Default for AppletKey {
    fn default() -> Self {
        Self { generation: 0, pad: 0, name: [0; NAME_LEN] }
    }
}

/// Value of `EXEC_MULTICALL` (key: [`InodeKey`]): a binary that runs the program its `argv[0]` names
/// (`BusyBox`, toybox), and the name under which it dispatches to `argv[1]` instead.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MultiCall {
    /// The dispatcher name: an applet name starting with it means "the applet is the next argument"
    /// (`BusyBox`'s `is_prefixed_with(applet_name, "busybox")`, libbb/appletlib.c).
    pub stem: [u8; STEM_LEN],
    /// Bytes of `stem` in use.
    pub stem_len: u32,
    pub pad: u32,
}

/// Value of every exec rule map.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RuleValue {
    /// Index of the rule in the policy generation (resolved to its id by userspace).
    pub rule: u32,
    /// [`crate::settings::Effect`] as `u32`.
    pub effect: u32,
}

/// Value of `GOVERNED` (key: cgroup id, the inode number of the cgroup2 directory).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GovernedCgroup {
    /// Depth of the cgroup below the root (root = 0), as `bpf_get_current_ancestor_cgroup_id` counts.
    pub level: u32,
    /// The launch profile whose `network_policy` governs this cgroup's network
    /// ([`crate::net::profile_id`] of its name), instead of the policy's `network:` section; 0: none.
    pub net_profile: u32,
}

/// Key of `PROTECTED_FILES`: one of Sentra's own files (binaries, policy, audit log, state), which
/// governed tasks may not open for writing, remove or rename.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FileKey {
    /// Kernel `dev_t`, as in [`InodeKey`].
    pub dev: u64,
    pub ino: u64,
}
