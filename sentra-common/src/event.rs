//! Events sent from the BPF programs to userspace through the `EVENTS` ring buffer.
//!
//! Every event starts with [`EventHeader`]; `kind` says which struct follows.

use crate::{exec::NAME_LEN, wire_enum};

/// Version of the event layout; bump on any change to these structs.
pub const EVENT_VERSION: u32 = 5;
/// Arguments captured per exec (`argv[0]` included).
pub const MAX_ARGS: usize = 8;
/// Bytes captured per argument, including the terminating NUL.
pub const ARG_LEN: usize = 128;
/// Bytes of [`ExecEvent::args`]: with [`flags::ARGS_PACKED`], of the argument area as it is.
pub const ARGS_AREA: usize = MAX_ARGS * ARG_LEN;
/// Path components captured per exec, innermost first.
pub const MAX_PATH_COMPONENTS: usize = 16;
/// Length of a task's `comm` (`TASK_COMM_LEN`, include/linux/sched.h).
pub const COMM_LEN: usize = 16;

wire_enum! {
    /// What an event reports.
    EventKind: "event kind" {
        Exec = 1 => "exec",
        /// A network destination decision ([`NetEvent`]).
        Net = 2 => "net",
        /// A governed task refused by a self-protection hook ([`GuardEvent`]).
        Guard = 3 => "guard",
    }
}

wire_enum! {
    /// The verdict an exec event records.
    Decision: "decision" {
        Allowed = 0 => "allowed",
        Denied = 1 => "denied",
        /// Audit mode: the policy denies, the exec ran.
        AuditDenied = 2 => "auditonly",
    }
}

wire_enum! {
    /// Which step of a probe failed when it decided closed ([`ExecEvent::probe_site`],
    /// [`NetEvent::probe_site`]); each failure is also counted per site in `STATS`
    /// ([`crate::settings::stats::PROBE_SITE_BASE`] + site).
    ProbeSite: "probe site" {
        /// The probe did not fail.
        None = 0 => "none",
        /// The kernel offsets were never filled in (no BTF at load).
        Offsets = 1 => "offsets",
        /// The active generation has no loaded settings.
        Settings = 2 => "settings",
        /// `bprm->file`.
        BprmFile = 3 => "bprm_file",
        /// `file->f_path.dentry`.
        FileDentry = 4 => "file_dentry",
        /// `file->f_path.mnt`.
        FileMount = 5 => "file_mount",
        /// A dentry's inode identity: `d_inode`, `i_ino`, `i_sb`, `s_dev`.
        Inode = 6 => "inode",
        /// `dentry->d_parent`.
        DentryParent = 7 => "dentry_parent",
        /// `dentry->d_name.name`.
        DentryName = 8 => "dentry_name",
        /// `vfsmount->mnt_root`.
        MountRoot = 9 => "mount_root",
        /// `mount->mnt_parent`.
        MountParent = 10 => "mount_parent",
        /// `mount->mnt_mountpoint`.
        Mountpoint = 11 => "mountpoint",
        /// The kernel's copy of the caller's `sockaddr`.
        SockAddr = 12 => "sockaddr",
        /// `socket->type`.
        SocketType = 13 => "socket_type",
        /// The new image's arguments, read to find a multi-call binary's applet.
        AppletArgs = 14 => "applet_args",
    }
}

/// Number of [`ProbeSite`] values (the per-site counters in `STATS`).
pub const PROBE_SITES: u32 = 15;

/// Flags in [`ExecEvent::flags`].
pub mod flags {
    /// More than `MAX_ARGS` arguments, or one longer than `ARG_LEN`; with [`ARGS_PACKED`], an
    /// argument area longer than [`super::ARGS_AREA`].
    pub const ARGS_TRUNCATED: u32 = 1 << 0;
    /// The path has more than `MAX_PATH_COMPONENTS` components, or one longer than `NAME_LEN`.
    pub const PATH_TRUNCATED: u32 = 1 << 1;
    /// The arguments could not be read (the event carries none).
    pub const ARGS_UNAVAILABLE: u32 = 1 << 2;
    /// The path walk crossed the root of the task's filesystem namespace view (it is complete).
    pub const PATH_COMPLETE: u32 = 1 << 3;
    /// A multi-call binary ran as an applet, and the applet's name decided: the argument at
    /// `applet_arg` names it (its part after the last `/`).
    pub const APPLET: u32 = 1 << 4;
    /// `args` holds the new image's argument area as it lies in memory (`mm->arg_start..arg_end`:
    /// the arguments one after another, each ending with a NUL), its first `args_len` bytes: one
    /// read instead of one per argument.
    pub const ARGS_PACKED: u32 = 1 << 5;
}

/// The fixed header of every event.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EventHeader {
    /// [`EventKind`] as `u32`.
    pub kind: u32,
    /// [`EVENT_VERSION`].
    pub version: u32,
    /// `bpf_ktime_get_boot_ns()`: nanoseconds since boot, suspend included.
    pub boot_ns: u64,
    /// Thread group id (the process id userspace sees).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Parent's thread group id.
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    /// [`crate::settings::Backend`] as `u32`.
    pub backend: u32,
    /// Cgroup id of the task (inode number of its cgroup2 directory).
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
    /// The process's start (`task->group_leader->start_boottime`, the value `/proc/<pid>/stat`
    /// reports in clock ticks): with `pid` it names the process uniquely for the boot, across execs.
    pub start_ns: u64,
    /// The same for the parent process (`real_parent`), or 0 when it could not be read.
    pub parent_start_ns: u64,
}

/// An exec decision.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ExecEvent {
    pub header: EventHeader,
    /// [`Decision`] as `u32`.
    pub decision: u32,
    /// [`crate::settings::Mode`] as `u32`.
    pub mode: u32,
    /// Index of the deciding rule, or [`crate::exec::RULE_DEFAULT`] / [`crate::exec::RULE_INTERNAL_ERROR`].
    pub rule: u32,
    /// Policy generation that decided.
    pub generation: u32,
    /// See [`flags`].
    pub flags: u32,
    /// Number of arguments the task passed (may exceed [`MAX_ARGS`]).
    pub argc: u32,
    /// Device (kernel `dev_t`) and inode of the executed file.
    pub dev: u64,
    pub ino: u64,
    /// Number of valid entries in `path`.
    pub path_components: u32,
    /// [`ProbeSite`] as `u32`: which read failed when `rule` is `RULE_INTERNAL_ERROR`.
    pub probe_site: u32,
    /// With [`flags::APPLET`]: the index of the argument that named the applet.
    pub applet_arg: u32,
    /// With [`flags::ARGS_PACKED`]: how many bytes of `args` hold the argument area.
    pub args_len: u32,
    /// Path components of the executed file, innermost (the file name) first, each NUL-terminated.
    pub path: [[u8; NAME_LEN]; MAX_PATH_COMPONENTS],
    /// The first arguments, each NUL-terminated in a slot of its own; with [`flags::ARGS_PACKED`],
    /// one after another.
    pub args: [[u8; ARG_LEN]; MAX_ARGS],
}

wire_enum! {
    /// Which hook decided a network event.
    NetHook: "network hook" {
        /// cgroup `connect4`/`connect6` (TCP connect, UDP connect).
        Connect = 0 => "connect",
        /// cgroup `sendmsg4`/`sendmsg6` (UDP `sendto`/`sendmsg` with a destination).
        Sendmsg = 1 => "sendmsg",
        /// BPF LSM `socket_connect`.
        LsmConnect = 2 => "lsm_connect",
    }
}

/// A network destination decision (denials and audit-mode would-be denials).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct NetEvent {
    pub header: EventHeader,
    /// [`Decision`] as `u32`.
    pub decision: u32,
    /// [`crate::settings::Mode`] as `u32`.
    pub mode: u32,
    /// Index of the deciding network rule, or one of the `NET_RULE_*` values of [`crate::net`].
    pub rule: u32,
    /// Policy generation that decided.
    pub generation: u32,
    /// [`NetHook`] as `u32`.
    pub hook: u32,
    /// IP protocol number (6 TCP, 17 UDP).
    pub protocol: u32,
    /// [`crate::net::FAMILY_V4`] or [`crate::net::FAMILY_V6`].
    pub family: u32,
    /// Destination port, host order.
    pub port: u32,
    /// [`ProbeSite`] as `u32`: which step failed when `rule` is `NET_RULE_INTERNAL_ERROR`.
    pub probe_site: u32,
    pub pad: u32,
    /// Destination address, network order (IPv4 in the first 4 bytes).
    pub addr: [u8; 16],
    /// File name of the task's executable (`mm->exe_file`), NUL-terminated; empty if unreadable.
    pub exe: [u8; crate::exec::NAME_LEN],
}

wire_enum! {
    /// Which self-protection hook refused a governed task ([`GuardEvent::hook`]). These hooks are not
    /// policy: they hold in every mode, on the `lsm` backend (the sysctl one on both backends).
    GuardHook: "guard hook" {
        /// `lsm/bpf`: any `bpf(2)` command; `detail` is the command.
        Bpf = 0 => "bpf",
        /// `lsm/kernel_read_file`: the kernel reading a file for the caller (`finit_module`,
        /// `kexec_file_load`, firmware, policy); `detail` is `enum kernel_read_file_id`.
        KernelReadFile = 1 => "kernel_read_file",
        /// `lsm/kernel_load_data`: `init_module`, `kexec_load`, …; `detail` is
        /// `enum kernel_load_data_id`.
        KernelLoadData = 2 => "kernel_load_data",
        /// `lsm/task_kill` aimed at a protected process; `detail` is the signal, `target` its pid.
        Signal = 3 => "signal",
        /// `lsm/ptrace_access_check` aimed at a protected process (`ptrace`, `/proc/PID/mem`,
        /// `process_vm_*`, `pidfd_getfd`); `detail` is the `PTRACE_MODE_*` mask, `target` its pid.
        Ptrace = 4 => "ptrace",
        /// `lsm/capable`: a capability that reaches the kernel itself; `detail` is its number.
        Capability = 5 => "capability",
        /// `lsm/socket_create`: raw, packet and ICMP sockets, which no network rule can allow;
        /// `detail` is the family, `target` the type, `extra` the protocol.
        Socket = 6 => "socket",
        /// `lsm/file_open` for writing: a file of a kernel-control filesystem or one of Sentra's
        /// own files; `detail` is the filesystem magic, the file in `dev`/`ino`/`name`.
        FileWrite = 7 => "file_write",
        /// `lsm/inode_unlink`, `inode_rmdir`: removing a protected file; as [`Self::FileWrite`].
        Unlink = 8 => "unlink",
        /// `lsm/inode_rename`: renaming a protected file or over one; as [`Self::FileWrite`].
        Rename = 9 => "rename",
        /// `cgroup/sysctl`: a sysctl write (`/proc/sys`); `name` is the sysctl's last component.
        Sysctl = 10 => "sysctl",
        /// `lsm/sb_mount`, `sb_umount`, `sb_remount`, `sb_pivotroot`, `move_mount`: any change to
        /// the mount tree; `detail` is a [`MountOp`], the mount point in the file fields.
        Mount = 11 => "mount",
        /// `lsm/mmap_file`, `file_mprotect` (trusted execution, policy: follows the mode): executable
        /// code mapped from a file neither the exec policy nor `exec.libraries` allows; `detail` is 0
        /// for `mmap`, 1 for `mprotect`, the file in the file fields, the exec decision in
        /// `decision`, `rule` and `generation`.
        ExecMap = 12 => "exec_map",
        /// The `path_*` hooks and `file_open` (trusted execution, policy: follows the mode): a change
        /// to a file or directory the exec policy allows to run (W^X); `detail` is a [`FileOp`].
        ExecWrite = 13 => "exec_write",
        /// `tp_btf/sched_process_exec` (`signal` backend, policy: follows the mode): the new image's
        /// environment has a dynamic-loader variable naming code outside what `exec.libraries` and the
        /// exec rules allow; `detail`
        /// is a [`LoaderVar`], `target` a [`LoaderFault`], `name` the entry at fault (cut to fit),
        /// the executed file in `dev`/`ino`. Enforced by killing the task before its first
        /// instruction.
        LoaderEnv = 14 => "loader_env",
    }
}

wire_enum! {
    /// Which dynamic-loader variable a [`GuardHook::LoaderEnv`] refusal found (glibc `elf/rtld.c`
    /// `process_envvars`, `iconv/gconv_conf.c`).
    LoaderVar: "loader variable" {
        /// `LD_PRELOAD`: libraries loaded into the program before its own.
        Preload = 0 => "LD_PRELOAD",
        /// `LD_AUDIT`: auditing libraries the loader runs.
        Audit = 1 => "LD_AUDIT",
        /// `LD_LIBRARY_PATH`: directories searched before the system's.
        LibraryPath = 2 => "LD_LIBRARY_PATH",
        /// `GCONV_PATH`: directories `iconv` loads its conversion modules from.
        GconvPath = 3 => "GCONV_PATH",
        /// None in particular: the environment as a whole (see [`LoaderFault::TooMany`]).
        Environment = 4 => "environment",
    }
}

wire_enum! {
    /// Why a dynamic-loader variable's entry was refused.
    LoaderFault: "loader fault" {
        /// The entry is a path neither `exec.libraries` nor an exec rule allows.
        NotAllowed = 0 => "not_allowed",
        /// A relative path (or, in a search path, an empty entry: the working directory).
        Relative = 1 => "relative",
        /// A `..` component, which could leave an allowed directory.
        DotDot = 2 => "dot_dot",
        /// A `$` (the loader expands `$ORIGIN`, `$LIB`, `$PLATFORM`).
        Expansion = 3 => "expansion",
        /// The entry or the variable is longer than the kernel checks.
        TooLong = 4 => "too_long",
        /// More loader variables, or more environment strings, than the kernel checks.
        TooMany = 5 => "too_many",
        /// The environment could not be read.
        Unreadable = 6 => "unreadable",
    }
}

wire_enum! {
    /// Which mount-tree change a [`GuardHook::Mount`] refusal stopped.
    MountOp: "mount operation" {
        Mount = 0 => "mount",
        Umount = 1 => "umount",
        Remount = 2 => "remount",
        PivotRoot = 3 => "pivot_root",
        MoveMount = 4 => "move_mount",
    }
}

wire_enum! {
    /// Which change a [`GuardHook::ExecWrite`] refusal stopped.
    FileOp: "file operation" {
        OpenWrite = 0 => "open_for_write",
        Create = 1 => "create",
        Mkdir = 2 => "mkdir",
        Symlink = 3 => "symlink",
        Link = 4 => "link",
        RenameFrom = 5 => "rename_from",
        RenameTo = 6 => "rename_to",
        Unlink = 7 => "unlink",
        Rmdir = 8 => "rmdir",
        Chmod = 9 => "chmod",
        Chown = 10 => "chown",
        Truncate = 11 => "truncate",
    }
}

/// Filesystem magic numbers (include/uapi/linux/magic.h, `super_block::s_magic`) the guard's file
/// hooks act on; a file refusal's [`GuardEvent::detail`] is one of them, or [`Self::PROTECTED_FILE`].
/// Every value fits 32 bits.
pub struct Filesystem;

impl Filesystem {
    pub const CGROUP: u32 = 0x0027_e0eb;
    pub const CGROUP2: u32 = 0x6367_7270;
    pub const BPF: u32 = 0xcafe_4a11;
    pub const SECURITY: u32 = 0x7363_6673;
    pub const DEBUG: u32 = 0x6462_6720;
    pub const TRACE: u32 = 0x7472_6163;
    pub const SYS: u32 = 0x6265_6572;
    pub const EFIVAR: u32 = 0xde5e_81e4;
    pub const CONFIG: u32 = 0x6265_6570;
    pub const PROC: u32 = 0x9fa0;
    /// Not a filesystem: the file is a block device or one of Sentra's own files.
    pub const PROTECTED_FILE: u32 = 1;

    /// Filesystems through which a root task controls the kernel or Sentra: cgroup membership and
    /// controllers (cgroup2 outside the task's governed subtree), BPF pins, LSM and tracing control,
    /// sysfs (`uevent_helper`, module parameters), EFI variables and configfs.
    pub const CONTROL: [u32; 9] = [
        Self::CGROUP,
        Self::CGROUP2,
        Self::BPF,
        Self::SECURITY,
        Self::DEBUG,
        Self::TRACE,
        Self::SYS,
        Self::EFIVAR,
        Self::CONFIG,
    ];

    /// The name the audit log gives a [`GuardEvent::detail`] of a file refusal.
    #[must_use]
    pub const fn name(detail: u32) -> &'static str {
        match detail {
            Self::PROTECTED_FILE => "protected file",
            Self::CGROUP | Self::CGROUP2 => "cgroupfs",
            Self::BPF => "bpffs",
            Self::SECURITY => "securityfs",
            Self::DEBUG => "debugfs",
            Self::TRACE => "tracefs",
            Self::SYS => "sysfs",
            Self::EFIVAR => "efivarfs",
            Self::CONFIG => "configfs",
            Self::PROC => "procfs",
            _ => "filesystem",
        }
    }
}

/// A governed task refused by a self-protection hook.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct GuardEvent {
    pub header: EventHeader,
    /// [`GuardHook`] as `u32`.
    pub hook: u32,
    /// Hook-specific number (see [`GuardHook`]).
    pub detail: u32,
    /// Process id the hook aimed at, or the socket type; 0 when none.
    pub target: u32,
    /// The socket protocol; 0 otherwise.
    pub extra: u32,
    /// [`Decision`] as `u32`: `Denied`, or `AuditDenied` for a trusted-execution refusal in audit
    /// mode (the call went through).
    pub decision: u32,
    /// Trusted execution: the exec rule index (or `RULE_*` of [`crate::exec`]) that decided the file.
    pub rule: u32,
    /// Trusted execution: the policy generation that decided.
    pub generation: u32,
    pub pad: u32,
    /// The file involved, if any: device (kernel `dev_t`) and inode, 0 when none.
    pub dev: u64,
    pub ino: u64,
    /// Its name (last path component), NUL-terminated; empty when none.
    pub name: [u8; NAME_LEN],
}
