//! Names of the maps, programs and globals in the BPF object: the one list both sides use. The BPF
//! side declares each item with exactly this name and checks it at compile time ([`crate::same_name`]);
//! userspace looks items up only through these constants.

/// Map names.
pub mod map {
    pub const EVENTS: &str = "EVENTS";
    pub const STATS: &str = "STATS";
    pub const GOVERNED: &str = "GOVERNED";
    pub const ACTIVE_GENERATION: &str = "ACTIVE_GENERATION";
    pub const SETTINGS: &str = "SETTINGS";
    pub const EXEC_INODE_RULES: &str = "EXEC_INODE_RULES";
    pub const EXEC_NAME_RULES: &str = "EXEC_NAME_RULES";
    pub const EXEC_DIR_RULES: &str = "EXEC_DIR_RULES";
    pub const EXEC_ARGV: &str = "EXEC_ARGV";
    pub const NET_SETTINGS: &str = "NET_SETTINGS";
    pub const NET_CIDR: &str = "NET_CIDR";
    pub const NET_HOSTS: &str = "NET_HOSTS";
    pub const NET_DNS_ORIGIN: &str = "NET_DNS_ORIGIN";
    pub const NET_STATS: &str = "NET_STATS";
    /// Process ids (tgid) of the controller's own processes: no signal or ptrace from governed tasks.
    pub const PROTECTED: &str = "PROTECTED";
    /// Sentra's own files by (device, inode): governed tasks may not write, remove or rename them.
    pub const PROTECTED_FILES: &str = "PROTECTED_FILES";
    /// `exec.libraries`: files and directories (by device, inode, per generation) from which governed
    /// tasks may map executable code besides what the exec policy allows.
    pub const EXEC_LIBRARIES: &str = "EXEC_LIBRARIES";
    /// Multi-call binaries (`BusyBox`, toybox) by (device, inode, per generation): their runs are
    /// decided by the applet they run.
    pub const EXEC_MULTICALL: &str = "EXEC_MULTICALL";
    /// The exec rule covering each program name (per generation): how an applet is decided.
    pub const EXEC_APPLETS: &str = "EXEC_APPLETS";
    /// Per-CPU scratch space for reading an applet's argument.
    pub const APPLET_SCRATCH: &str = "APPLET_SCRATCH";
    /// Path prefixes (per generation) the dynamic loader's variables may name on the `signal` backend:
    /// `exec.libraries` and the exec rules' paths, as text.
    pub const LOADER_PATHS: &str = "LOADER_PATHS";
    /// Per-CPU scratch space for reading the new image's environment.
    pub const LOADER_SCRATCH: &str = "LOADER_SCRATCH";

    /// Every map of the object.
    pub const ALL: [&str; 22] = [
        EVENTS,
        STATS,
        GOVERNED,
        ACTIVE_GENERATION,
        SETTINGS,
        EXEC_INODE_RULES,
        EXEC_NAME_RULES,
        EXEC_DIR_RULES,
        EXEC_ARGV,
        NET_SETTINGS,
        NET_CIDR,
        NET_HOSTS,
        NET_DNS_ORIGIN,
        NET_STATS,
        PROTECTED,
        PROTECTED_FILES,
        EXEC_LIBRARIES,
        EXEC_MULTICALL,
        EXEC_APPLETS,
        APPLET_SCRATCH,
        LOADER_PATHS,
        LOADER_SCRATCH,
    ];
}

/// Program names.
pub mod program {
    /// `lsm/bprm_check_security`: the `lsm` backend's exec decision.
    pub const EXEC_LSM: &str = "exec_lsm";
    /// `tp_btf/sched_process_exec`: the `signal` backend's exec decision.
    pub const EXEC_SIGNAL: &str = "exec_signal";
    /// `tp_btf/sched_process_exec` on both backends: a multi-call binary's applet (its arguments are
    /// final only here).
    pub const EXEC_APPLET: &str = "exec_applet";
    /// `tp_btf/sched_process_exec` on the `signal` backend: the dynamic loader's variables
    /// (`LD_PRELOAD`, …) in the new image's environment may name only `exec.libraries`.
    pub const EXEC_LOADER_ENV: &str = "exec_loader_env";
    /// `syscalls/sys_enter_execve`: records `argv` for the `lsm` backend's event.
    pub const EXECVE_ENTER: &str = "execve_enter";
    /// `syscalls/sys_enter_execveat`: as [`EXECVE_ENTER`].
    pub const EXECVEAT_ENTER: &str = "execveat_enter";
    /// `lsm/socket_connect`: the `lsm` backend's network check.
    pub const NET_LSM_CONNECT: &str = "net_lsm_connect";
    pub const NET_CONNECT4: &str = "net_connect4";
    pub const NET_CONNECT6: &str = "net_connect6";
    pub const NET_SENDMSG4: &str = "net_sendmsg4";
    pub const NET_SENDMSG6: &str = "net_sendmsg6";
    pub const NET_RECVMSG4: &str = "net_recvmsg4";
    pub const NET_RECVMSG6: &str = "net_recvmsg6";

    /// Self-protection hooks (`lsm` backend): see `sentra_common::event::GuardHook`.
    pub const GUARD_BPF: &str = "guard_bpf";
    pub const GUARD_READ_FILE: &str = "guard_read_file";
    pub const GUARD_LOAD_DATA: &str = "guard_load_data";
    pub const GUARD_KILL: &str = "guard_kill";
    pub const GUARD_PTRACE: &str = "guard_ptrace";
    pub const GUARD_CAPABLE: &str = "guard_capable";
    pub const GUARD_SOCKET: &str = "guard_socket";
    pub const GUARD_FILE_OPEN: &str = "guard_file_open";
    pub const GUARD_TRUNCATE: &str = "guard_truncate";
    pub const GUARD_UNLINK: &str = "guard_unlink";
    pub const GUARD_RMDIR: &str = "guard_rmdir";
    pub const GUARD_RENAME: &str = "guard_rename";
    pub const GUARD_MKNOD: &str = "guard_mknod";
    pub const GUARD_MKDIR: &str = "guard_mkdir";
    pub const GUARD_SYMLINK: &str = "guard_symlink";
    pub const GUARD_LINK: &str = "guard_link";
    pub const GUARD_CHMOD: &str = "guard_chmod";
    pub const GUARD_CHOWN: &str = "guard_chown";
    pub const GUARD_MOUNT: &str = "guard_mount";
    pub const GUARD_UMOUNT: &str = "guard_umount";
    pub const GUARD_REMOUNT: &str = "guard_remount";
    pub const GUARD_PIVOT_ROOT: &str = "guard_pivot_root";
    pub const GUARD_MOVE_MOUNT: &str = "guard_move_mount";
    pub const GUARD_MMAP: &str = "guard_mmap";
    pub const GUARD_MPROTECT: &str = "guard_mprotect";
    /// `cgroup/sysctl`: refuses sysctl writes; attached to each governed cgroup on both backends.
    pub const GUARD_SYSCTL: &str = "guard_sysctl";

    /// The self-protection LSM programs and the hook each attaches to.
    pub const GUARDS: [(&str, &str); 25] = [
        (GUARD_BPF, "bpf"),
        (GUARD_READ_FILE, "kernel_read_file"),
        (GUARD_LOAD_DATA, "kernel_load_data"),
        (GUARD_KILL, "task_kill"),
        (GUARD_PTRACE, "ptrace_access_check"),
        (GUARD_CAPABLE, "capable"),
        (GUARD_SOCKET, "socket_create"),
        (GUARD_FILE_OPEN, "file_open"),
        (GUARD_TRUNCATE, "path_truncate"),
        (GUARD_UNLINK, "path_unlink"),
        (GUARD_RMDIR, "path_rmdir"),
        (GUARD_RENAME, "path_rename"),
        (GUARD_MKNOD, "path_mknod"),
        (GUARD_MKDIR, "path_mkdir"),
        (GUARD_SYMLINK, "path_symlink"),
        (GUARD_LINK, "path_link"),
        (GUARD_CHMOD, "path_chmod"),
        (GUARD_CHOWN, "path_chown"),
        (GUARD_MOUNT, "sb_mount"),
        (GUARD_UMOUNT, "sb_umount"),
        (GUARD_REMOUNT, "sb_remount"),
        (GUARD_PIVOT_ROOT, "sb_pivotroot"),
        (GUARD_MOVE_MOUNT, "move_mount"),
        (GUARD_MMAP, "mmap_file"),
        (GUARD_MPROTECT, "file_mprotect"),
    ];

    /// The cgroup `sock_addr` programs, attached to each governed cgroup.
    pub const SOCK_ADDR: [&str; 6] =
        [NET_CONNECT4, NET_CONNECT6, NET_SENDMSG4, NET_SENDMSG6, NET_RECVMSG4, NET_RECVMSG6];

    /// Every program of the object.
    pub const ALL: [&str; 39] = [
        EXEC_LSM,
        EXEC_SIGNAL,
        EXEC_APPLET,
        EXEC_LOADER_ENV,
        EXECVE_ENTER,
        EXECVEAT_ENTER,
        NET_LSM_CONNECT,
        NET_CONNECT4,
        NET_CONNECT6,
        NET_SENDMSG4,
        NET_SENDMSG6,
        NET_RECVMSG4,
        NET_RECVMSG6,
        GUARD_BPF,
        GUARD_READ_FILE,
        GUARD_LOAD_DATA,
        GUARD_KILL,
        GUARD_PTRACE,
        GUARD_CAPABLE,
        GUARD_SOCKET,
        GUARD_FILE_OPEN,
        GUARD_TRUNCATE,
        GUARD_UNLINK,
        GUARD_RMDIR,
        GUARD_RENAME,
        GUARD_MKNOD,
        GUARD_MKDIR,
        GUARD_SYMLINK,
        GUARD_LINK,
        GUARD_CHMOD,
        GUARD_CHOWN,
        GUARD_MOUNT,
        GUARD_UMOUNT,
        GUARD_REMOUNT,
        GUARD_PIVOT_ROOT,
        GUARD_MOVE_MOUNT,
        GUARD_MMAP,
        GUARD_MPROTECT,
        GUARD_SYSCTL,
    ];
}

/// The read-only global holding [`crate::offsets::KernelOffsets`].
pub const KERNEL_OFFSETS: &str = "KERNEL_OFFSETS";

/// Byte-wise string equality usable in constants (for [`crate::same_name`]).
#[must_use]
pub const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Fails the build unless the item `$item` is named exactly as the shared constant `$constant`.
#[macro_export]
macro_rules! same_name {
    ($constant:path, $item:ident) => {
        const _: () = assert!(
            $crate::names::same($constant, stringify!($item)),
            concat!(stringify!($item), " is not named as ", stringify!($constant))
        );
        // Names the item itself, so that the check fails to build if it is renamed or removed.
        const _: fn() = || {
            let _ = &$item;
        };
    };
}
