//! Self-protection: what no governed task may do, whatever its uid and capabilities, because it would
//! switch Sentra off or reach around it. These hooks are not policy (they hold in audit mode too) and
//! run on the `lsm` backend; `guard_sysctl` is a cgroup program and runs on both.
//!
//! Every hook tests what is cheap first (the arguments) and only then whether the task is governed, so
//! the host pays one comparison for the common case. A read that fails before the task is known to be
//! governed lets the call through (fail safe for the host); after, it refuses (fail closed).

use aya_ebpf::{
    EbpfContext as _,
    bindings::bpf_sysctl,
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_uid_gid, bpf_ktime_get_boot_ns},
    macros::cgroup_sysctl,
    programs::{LsmContext, SysctlContext},
};
use sentra_common::{
    event::{
        Decision, EVENT_VERSION, EventKind, FileOp, Filesystem, GuardEvent, GuardHook, MountOp, ProbeSite,
    },
    exec::FileKey,
    offsets::KernelOffsets,
    settings::stats,
};

use crate::{
    exec::decide::Place,
    kernel::{self, ReadError},
    maps::{ACTIVE_GENERATION, EVENTS, GOVERNED, PROTECTED, PROTECTED_FILES, count, submit_flags},
    task, trusted,
};

const EPERM: i32 = 1;

/// Capabilities that reach the kernel itself (include/uapi/linux/capability.h): module loading,
/// raw I/O (`/dev/mem`, `iopl`), `reboot` and `kexec_load`.
const CAP_SYS_MODULE: i32 = 16;
const CAP_SYS_RAWIO: i32 = 17;
const CAP_SYS_BOOT: i32 = 22;
/// include/linux/security.h: the check is a probe, not an attempt; refuse without a record.
const CAP_OPT_NOAUDIT: u32 = 1 << 1;
/// include/linux/ptrace.h.
const PTRACE_MODE_NOAUDIT: u32 = 0x04;

/// include/linux/socket.h, include/linux/net.h, include/uapi/linux/in.h.
const AF_INET: i32 = 2;
const AF_INET6: i32 = 10;
const AF_PACKET: i32 = 17;
const SOCK_DGRAM: i32 = 2;
const SOCK_RAW: i32 = 3;
const SOCK_PACKET: i32 = 10;
/// `type` also carries `SOCK_NONBLOCK`/`SOCK_CLOEXEC` (include/linux/net.h `SOCK_TYPE_MASK`).
const SOCK_TYPE_MASK: i32 = 0xf;
const IPPROTO_ICMP: i32 = 1;
const IPPROTO_ICMPV6: i32 = 58;

/// include/linux/fs.h `FMODE_WRITE`.
const FMODE_WRITE: u32 = 0x2;
/// include/uapi/linux/stat.h.
const S_IFMT: u16 = 0o170_000;
const S_IFBLK: u16 = 0o060_000;

/// Deepest cgroup nesting walked up (as in `task`).
const MAX_CGROUP_DEPTH: u32 = 32;

/// What a refusal records.
#[derive(Clone, Copy)]
pub struct Refusal {
    pub hook: GuardHook,
    pub detail: u32,
    pub target: u32,
    pub extra: u32,
    /// The dentry of the file involved, or 0.
    pub dentry: u64,
    /// [`Decision`]: `AuditDenied` records the refusal and lets the call through (trusted execution in
    /// audit mode).
    pub decision: Decision,
    /// Trusted execution: the exec rule that decided the file, and its generation.
    pub rule: u32,
    pub generation: u32,
}

impl Refusal {
    pub const fn new(hook: GuardHook, detail: u32) -> Self {
        Self {
            hook,
            detail,
            target: 0,
            extra: 0,
            dentry: 0,
            decision: Decision::Denied,
            rule: 0,
            generation: 0,
        }
    }
}

/// The hook's return value. The verifier accepts only constants in the LSM range here
/// (kernel/bpf/verifier.c `check_return_code` for `BPF_PROG_TYPE_LSM`: `-MAX_ERRNO..=0`).
#[inline(always)]
pub fn verdict(refused: Result<Option<Refusal>, ReadError>, record: bool) -> i32 {
    match refused {
        Ok(None) => 0,
        Ok(Some(refusal)) => {
            if record {
                emit(&refusal);
            }
            if refusal.decision == Decision::AuditDenied { 0 } else { -EPERM }
        }
        Err(ReadError(site)) => {
            count(stats::PROBE_ERRORS);
            count(stats::PROBE_SITE_BASE + site as u32);
            -EPERM
        }
    }
}

/// Writes the refusal's event (best effort: a full ring buffer is counted).
#[inline(always)]
fn emit(refusal: &Refusal) {
    let off = kernel::offsets();
    let backend = ACTIVE_GENERATION.get(0).map_or(0, |active| active.backend);
    let Some(mut entry) = EVENTS.reserve::<GuardEvent>(0) else {
        count(stats::EVENTS_DROPPED);
        return;
    };
    // SAFETY: the reservation is sizeof(GuardEvent) bytes; every field is written below (`name` up
    // to its NUL).
    let event = unsafe { &mut *entry.as_mut_ptr() };
    task::fill_header(&mut event.header, off, backend);
    event.header.kind = EventKind::Guard as u32;
    event.hook = refusal.hook as u32;
    event.detail = refusal.detail;
    event.target = refusal.target;
    event.extra = refusal.extra;
    event.decision = refusal.decision as u32;
    event.rule = refusal.rule;
    event.generation = refusal.generation;
    event.pad = 0;
    event.dev = 0;
    event.ino = 0;
    event.name[0] = 0;
    if refusal.dentry != 0 {
        if let Ok((dev, ino)) = kernel::identity(refusal.dentry, off) {
            event.dev = dev;
            event.ino = ino;
        }
        let named = kernel::read_ptr(refusal.dentry, off.dentry_name, ProbeSite::None)
            .and_then(|name| kernel::read_str(name, &mut event.name, ProbeSite::None));
        if named.is_err() {
            event.name[0] = 0;
        }
    }
    entry.submit(submit_flags(true));
}

/// The offsets, if userspace filled them (a governed task is refused without them).
#[inline(always)]
pub fn offsets() -> Result<&'static KernelOffsets, ReadError> {
    let off = kernel::offsets();
    if off.valid == 0 { Err(ReadError(ProbeSite::Offsets)) } else { Ok(off) }
}

crate::lsm_program!("lsm/bpf", guard_bpf, guard_bpf_verdict);

#[inline(always)]
fn guard_bpf_verdict(ctx: LsmContext) -> i32 {
    // Arguments: (int cmd, union bpf_attr *attr, unsigned int size, …).
    let cmd: i32 = ctx.arg(0);
    let refused = task::is_governed().then(|| Refusal::new(GuardHook::Bpf, cmd.cast_unsigned()));
    verdict(Ok(refused), true)
}

crate::lsm_program!("lsm/kernel_read_file", guard_read_file, guard_read_file_verdict);

#[inline(always)]
fn guard_read_file_verdict(ctx: LsmContext) -> i32 {
    verdict(try_guard_read_file(&ctx), true)
}

#[inline(always)]
fn try_guard_read_file(ctx: &LsmContext) -> Result<Option<Refusal>, ReadError> {
    // Arguments: (struct file *file, enum kernel_read_file_id id, bool contents).
    if !task::is_governed() {
        return Ok(None);
    }
    let file: u64 = ctx.arg(0);
    let id: u32 = ctx.arg(1);
    let off = offsets()?;
    let dentry = kernel::read_ptr(file, off.file_dentry, ProbeSite::FileDentry).unwrap_or(0);
    Ok(Some(Refusal { dentry, ..Refusal::new(GuardHook::KernelReadFile, id) }))
}

crate::lsm_program!("lsm/kernel_load_data", guard_load_data, guard_load_data_verdict);

#[inline(always)]
fn guard_load_data_verdict(ctx: LsmContext) -> i32 {
    // Arguments: (enum kernel_load_data_id id, bool contents).
    let id: u32 = ctx.arg(0);
    let refused = task::is_governed().then(|| Refusal::new(GuardHook::KernelLoadData, id));
    verdict(Ok(refused), true)
}

/// Whether `task` (a `struct task_struct *`) belongs to a protected process; its tgid.
#[inline(always)]
fn protected_task(task: u64, off: &KernelOffsets) -> Option<u32> {
    let tgid: u32 = kernel::read(task, off.task_tgid, ProbeSite::None).ok()?;
    // SAFETY: lookup with a stack key.
    unsafe { PROTECTED.get(tgid) }.map(|_| tgid)
}

crate::lsm_program!("lsm/task_kill", guard_kill, guard_kill_verdict);

#[inline(always)]
fn guard_kill_verdict(ctx: LsmContext) -> i32 {
    // Arguments: (struct task_struct *p, struct kernel_siginfo *info, int sig, const struct cred *cred).
    let sig: i32 = ctx.arg(2);
    // Signal 0 only asks whether the process exists.
    if sig == 0 {
        return 0;
    }
    let off = kernel::offsets();
    let target: u64 = ctx.arg(0);
    let refused = protected_task(target, off)
        .filter(|_| task::is_governed())
        .map(|tgid| Refusal { target: tgid, ..Refusal::new(GuardHook::Signal, sig.cast_unsigned()) });
    verdict(Ok(refused), true)
}

crate::lsm_program!("lsm/ptrace_access_check", guard_ptrace, guard_ptrace_verdict);

#[inline(always)]
fn guard_ptrace_verdict(ctx: LsmContext) -> i32 {
    // Arguments: (struct task_struct *child, unsigned int mode).
    let mode: u32 = ctx.arg(1);
    let off = kernel::offsets();
    let child: u64 = ctx.arg(0);
    let refused = protected_task(child, off)
        .filter(|_| task::is_governed())
        .map(|tgid| Refusal { target: tgid, ..Refusal::new(GuardHook::Ptrace, mode) });
    verdict(Ok(refused), mode & PTRACE_MODE_NOAUDIT == 0)
}

crate::lsm_program!("lsm/capable", guard_capable, guard_capable_verdict);

#[inline(always)]
fn guard_capable_verdict(ctx: LsmContext) -> i32 {
    // Arguments: (const struct cred *cred, struct user_namespace *ns, int cap, unsigned int opts).
    let cap: i32 = ctx.arg(2);
    if cap != CAP_SYS_MODULE && cap != CAP_SYS_RAWIO && cap != CAP_SYS_BOOT {
        return 0;
    }
    let opts: u32 = ctx.arg(3);
    let refused = task::is_governed().then(|| Refusal::new(GuardHook::Capability, cap.cast_unsigned()));
    verdict(Ok(refused), opts & CAP_OPT_NOAUDIT == 0)
}

crate::lsm_program!("lsm/socket_create", guard_socket, guard_socket_verdict);

#[inline(always)]
fn guard_socket_verdict(ctx: LsmContext) -> i32 {
    // Arguments: (int family, int type, int protocol, int kern).
    let family: i32 = ctx.arg(0);
    let kind: i32 = ctx.arg::<i32>(1) & SOCK_TYPE_MASK;
    let protocol: i32 = ctx.arg(2);
    let kern: i32 = ctx.arg(3);
    let ip = family == AF_INET || family == AF_INET6;
    let icmp = kind == SOCK_DGRAM && (protocol == IPPROTO_ICMP || protocol == IPPROTO_ICMPV6);
    let raw = family == AF_PACKET || kind == SOCK_PACKET || (ip && (kind == SOCK_RAW || icmp));
    if kern != 0 || !raw {
        return 0;
    }
    let refused = task::is_governed().then(|| Refusal {
        target: kind.cast_unsigned(),
        extra: protocol.cast_unsigned(),
        ..Refusal::new(GuardHook::Socket, family.cast_unsigned())
    });
    verdict(Ok(refused), true)
}

/// Why a governed task may not change the file at `dentry`: its filesystem's magic when that is a
/// kernel-control filesystem (or procfs at its top level), else `Filesystem::PROTECTED_FILE` when it is
/// a block device or one of Sentra's own files.
#[inline(always)]
fn protected_file(dentry: u64, off: &KernelOffsets) -> Result<Option<u32>, ReadError> {
    let sb = kernel::read_ptr(dentry, off.dentry_sb, ProbeSite::Inode)?;
    let magic = fs_magic(sb, off)?;
    if magic == Filesystem::CGROUP2 && in_governed_subtree(dentry, off)? {
        return Ok(None);
    }
    let mut index = 0;
    while index < Filesystem::CONTROL.len() {
        if Filesystem::CONTROL[index] == magic {
            return Ok(Some(magic));
        }
        index += 1;
    }
    // procfs: its top-level files (`/proc/sysrq-trigger`, …) act on the whole machine; the
    // per-process directories below it do not (sysctls under `/proc/sys` are `guard_sysctl`'s).
    if magic == Filesystem::PROC {
        let parent = kernel::read_ptr(dentry, off.dentry_parent, ProbeSite::DentryParent)?;
        let root = kernel::read_ptr(sb, off.sb_root, ProbeSite::MountRoot)?;
        return Ok((parent == root).then_some(magic));
    }
    // A negative dentry (a name about to be created) has no inode: nothing of ours.
    let Ok(inode) = kernel::read_ptr(dentry, off.dentry_inode, ProbeSite::Inode) else {
        return Ok(None);
    };
    let mode: u16 = kernel::read(inode, off.inode_mode, ProbeSite::Inode)?;
    if mode & S_IFMT == S_IFBLK {
        return Ok(Some(Filesystem::PROTECTED_FILE));
    }
    sentra_file(dentry, off)
}

/// A superblock's magic (`s_magic`, an `unsigned long`); one no guard names, as 0, when it does not
/// fit 32 bits.
#[inline(always)]
fn fs_magic(sb: u64, off: &KernelOffsets) -> Result<u32, ReadError> {
    let magic: u64 = kernel::read(sb, off.sb_magic, ProbeSite::Inode)?;
    Ok(u32::try_from(magic).unwrap_or(0))
}

/// Whether the cgroup2 file at `dentry` belongs to a governed cgroup or one below it: a governed task
/// may manage its own subtree (create child cgroups, move into them, set their limits), never a
/// cgroup outside it. A cgroup's id, the key of `GOVERNED`, is its directory's inode number
/// (fs/kernfs/inode.c `kernfs_init_inode`: `i_ino` is the kernfs node id, as `cgroup_id` is).
#[inline(always)]
fn in_governed_subtree(dentry: u64, off: &KernelOffsets) -> Result<bool, ReadError> {
    let mut dir = kernel::read_ptr(dentry, off.dentry_parent, ProbeSite::DentryParent)?;
    let mut level = 0;
    while level < MAX_CGROUP_DEPTH {
        let (_, ino) = kernel::identity(dir, off)?;
        // SAFETY: lookup with a stack key.
        if unsafe { GOVERNED.get(ino) }.is_some() {
            return Ok(true);
        }
        let parent = kernel::read_ptr(dir, off.dentry_parent, ProbeSite::DentryParent)?;
        if parent == dir {
            return Ok(false);
        }
        dir = parent;
        level += 1;
    }
    Ok(false)
}

/// `Some(Filesystem::PROTECTED_FILE)` when `dentry` is one of Sentra's own files (`PROTECTED_FILES`); a negative dentry is not.
#[inline(always)]
fn sentra_file(dentry: u64, off: &KernelOffsets) -> Result<Option<u32>, ReadError> {
    if kernel::read_ptr(dentry, off.dentry_inode, ProbeSite::Inode).is_err() {
        return Ok(None);
    }
    let (dev, ino) = kernel::identity(dentry, off)?;
    // SAFETY: lookup with a stack key.
    Ok(unsafe { PROTECTED_FILES.get(FileKey { dev, ino }) }.map(|_| Filesystem::PROTECTED_FILE))
}

crate::lsm_program!("lsm/file_open", guard_file_open, guard_file_open_verdict);

#[inline(always)]
fn guard_file_open_verdict(ctx: LsmContext) -> i32 {
    verdict(try_guard_file_open(&ctx), true)
}

#[inline(always)]
fn try_guard_file_open(ctx: &LsmContext) -> Result<Option<Refusal>, ReadError> {
    // Arguments: (struct file *file). Most opens are for reading: test that first.
    let file: u64 = ctx.arg(0);
    // An unreadable mode counts as a write: the governed test below still spares the host.
    let mode = kernel::read::<u32>(file, kernel::offsets().file_mode, ProbeSite::None).unwrap_or(FMODE_WRITE);
    if mode & FMODE_WRITE == 0 || !task::is_governed() {
        return Ok(None);
    }
    let off = offsets()?;
    let place = Place::of_file(file, off)?;
    if let Some(why) = protected_file(place.dentry, off)? {
        return Ok(Some(Refusal { dentry: place.dentry, ..Refusal::new(GuardHook::FileWrite, why) }));
    }
    trusted::exec_write(place, off, FileOp::OpenWrite)
}

crate::lsm_program!("lsm/path_truncate", guard_truncate, guard_truncate_verdict);

#[inline(always)]
fn guard_truncate_verdict(ctx: LsmContext) -> i32 {
    verdict(try_guard_truncate(&ctx), true)
}

#[inline(always)]
fn try_guard_truncate(ctx: &LsmContext) -> Result<Option<Refusal>, ReadError> {
    // Arguments: (const struct path *path).
    if !task::is_governed() {
        return Ok(None);
    }
    let path: u64 = ctx.arg(0);
    let off = offsets()?;
    let place = Place::of_path(path, off)?;
    if let Some(why) = protected_file(place.dentry, off)? {
        return Ok(Some(Refusal { dentry: place.dentry, ..Refusal::new(GuardHook::FileWrite, why) }));
    }
    trusted::exec_write(place, off, FileOp::Truncate)
}

crate::lsm_program!("lsm/path_unlink", guard_unlink, guard_unlink_verdict);

#[inline(always)]
fn guard_unlink_verdict(ctx: LsmContext) -> i32 {
    verdict(try_guard_removal(&ctx, FileOp::Unlink), true)
}

crate::lsm_program!("lsm/path_rmdir", guard_rmdir, guard_rmdir_verdict);

#[inline(always)]
fn guard_rmdir_verdict(ctx: LsmContext) -> i32 {
    verdict(try_guard_removal(&ctx, FileOp::Rmdir), true)
}

#[inline(always)]
fn try_guard_removal(ctx: &LsmContext, op: FileOp) -> Result<Option<Refusal>, ReadError> {
    // Arguments: (const struct path *dir, struct dentry *dentry).
    if !task::is_governed() {
        return Ok(None);
    }
    let dir: u64 = ctx.arg(0);
    let dentry: u64 = ctx.arg(1);
    let off = offsets()?;
    if let Some(why) = removable(dentry, off)? {
        return Ok(Some(Refusal { dentry, ..Refusal::new(GuardHook::Unlink, why) }));
    }
    trusted::exec_write(Place::of_path(dir, off)?.child(dentry), off, op)
}

/// As [`protected_file`], for removing or renaming: of the control filesystems only bpffs (pins)
/// counts, since a cgroup directory can only be removed once empty and the rest have no entries a
/// task can remove.
#[inline(always)]
fn removable(dentry: u64, off: &KernelOffsets) -> Result<Option<u32>, ReadError> {
    let sb = kernel::read_ptr(dentry, off.dentry_sb, ProbeSite::Inode)?;
    if fs_magic(sb, off)? == Filesystem::BPF {
        return Ok(Some(Filesystem::BPF));
    }
    sentra_file(dentry, off)
}

crate::lsm_program!("lsm/path_rename", guard_rename, guard_rename_verdict);

#[inline(always)]
fn guard_rename_verdict(ctx: LsmContext) -> i32 {
    verdict(try_guard_rename(&ctx), true)
}

#[inline(always)]
fn try_guard_rename(ctx: &LsmContext) -> Result<Option<Refusal>, ReadError> {
    // Arguments: (const struct path *old_dir, struct dentry *old_dentry, const struct path *new_dir,
    // struct dentry *new_dentry[, unsigned int flags]): neither the file moved nor the one it replaces
    // may be ours, and neither place may be one the exec policy runs programs from.
    if !task::is_governed() {
        return Ok(None);
    }
    let off = offsets()?;
    let old: u64 = ctx.arg(1);
    if let Some(why) = removable(old, off)? {
        return Ok(Some(Refusal { dentry: old, ..Refusal::new(GuardHook::Rename, why) }));
    }
    let new: u64 = ctx.arg(3);
    if let Some(why) = removable(new, off)? {
        return Ok(Some(Refusal { dentry: new, ..Refusal::new(GuardHook::Rename, why) }));
    }
    let old_dir: u64 = ctx.arg(0);
    if let Some(refusal) =
        trusted::exec_write(Place::of_path(old_dir, off)?.child(old), off, FileOp::RenameFrom)?
    {
        return Ok(Some(refusal));
    }
    let new_dir: u64 = ctx.arg(2);
    trusted::exec_write(Place::of_path(new_dir, off)?.child(new), off, FileOp::RenameTo)
}

/// A new entry (argument `dentry_arg`) in the directory at the `struct path *` argument `dir_arg`:
/// `path_mknod` (also `open(O_CREAT)` of a new file, fs/namei.c `may_o_create`), `path_mkdir` and
/// `path_symlink` take (`dir`, `dentry`, …) first; `path_link` takes (`old_dentry`, `new_dir`,
/// `new_dentry`).
#[inline(always)]
fn try_guard_entry(
    ctx: &LsmContext,
    dir_arg: usize,
    dentry_arg: usize,
    op: FileOp,
) -> Result<Option<Refusal>, ReadError> {
    if !task::is_governed() {
        return Ok(None);
    }
    let off = offsets()?;
    let dir: u64 = ctx.arg(dir_arg);
    let dentry: u64 = ctx.arg(dentry_arg);
    trusted::exec_write(Place::of_path(dir, off)?.child(dentry), off, op)
}

crate::lsm_program!("lsm/path_mknod", guard_mknod, guard_mknod_verdict);

#[inline(always)]
fn guard_mknod_verdict(ctx: LsmContext) -> i32 {
    verdict(try_guard_entry(&ctx, 0, 1, FileOp::Create), true)
}

crate::lsm_program!("lsm/path_mkdir", guard_mkdir, guard_mkdir_verdict);

#[inline(always)]
fn guard_mkdir_verdict(ctx: LsmContext) -> i32 {
    verdict(try_guard_entry(&ctx, 0, 1, FileOp::Mkdir), true)
}

crate::lsm_program!("lsm/path_symlink", guard_symlink, guard_symlink_verdict);

#[inline(always)]
fn guard_symlink_verdict(ctx: LsmContext) -> i32 {
    verdict(try_guard_entry(&ctx, 0, 1, FileOp::Symlink), true)
}

crate::lsm_program!("lsm/path_link", guard_link, guard_link_verdict);

#[inline(always)]
fn guard_link_verdict(ctx: LsmContext) -> i32 {
    verdict(try_guard_entry(&ctx, 1, 2, FileOp::Link), true)
}

/// `path_chmod` (`const struct path *path, umode_t mode`), `path_chown` (`const struct path *path,
/// kuid_t uid, kgid_t gid`).
#[inline(always)]
fn try_guard_attr(ctx: &LsmContext, op: FileOp) -> Result<Option<Refusal>, ReadError> {
    if !task::is_governed() {
        return Ok(None);
    }
    let off = offsets()?;
    let path: u64 = ctx.arg(0);
    let place = Place::of_path(path, off)?;
    if let Some(why) = sentra_file(place.dentry, off)? {
        return Ok(Some(Refusal { dentry: place.dentry, ..Refusal::new(GuardHook::FileWrite, why) }));
    }
    trusted::exec_write(place, off, op)
}

crate::lsm_program!("lsm/path_chmod", guard_chmod, guard_chmod_verdict);

#[inline(always)]
fn guard_chmod_verdict(ctx: LsmContext) -> i32 {
    verdict(try_guard_attr(&ctx, FileOp::Chmod), true)
}

crate::lsm_program!("lsm/path_chown", guard_chown, guard_chown_verdict);

#[inline(always)]
fn guard_chown_verdict(ctx: LsmContext) -> i32 {
    verdict(try_guard_attr(&ctx, FileOp::Chown), true)
}

/// Any change to the mount tree by a governed task: a mount over or inside a directory the exec
/// policy allows would put writable files there, a bind mount or a move would rearrange what the
/// exec rules name, and an unmount would uncover what the launcher hid. `mount_point` is the
/// `struct path *` involved (0: none readable).
#[inline(always)]
fn mount_refusal(op: MountOp, mount_point: u64) -> Option<Refusal> {
    if !task::is_governed() {
        return None;
    }
    let off = kernel::offsets();
    let dentry = if mount_point == 0 {
        0
    } else {
        kernel::read_ptr(mount_point, off.path_dentry, ProbeSite::None).unwrap_or(0)
    };
    Some(Refusal { dentry, ..Refusal::new(GuardHook::Mount, op as u32) })
}

crate::lsm_program!("lsm/sb_mount", guard_mount, guard_mount_verdict);

#[inline(always)]
fn guard_mount_verdict(ctx: LsmContext) -> i32 {
    // Arguments: (const char *dev_name, const struct path *path, const char *type, unsigned long
    // flags, void *data): every mount(2), including bind, move and remount (fs/namespace.c
    // `path_mount`).
    verdict(Ok(mount_refusal(MountOp::Mount, ctx.arg(1))), true)
}

crate::lsm_program!("lsm/sb_umount", guard_umount, guard_umount_verdict);

#[inline(always)]
fn guard_umount_verdict(ctx: LsmContext) -> i32 {
    // Arguments: (struct vfsmount *mnt, int flags).
    let mnt: u64 = ctx.arg(0);
    let off = kernel::offsets();
    let refused = mount_refusal(MountOp::Umount, 0).map(|refusal| Refusal {
        dentry: kernel::read_ptr(mnt, off.vfsmount_root, ProbeSite::None).unwrap_or(0),
        ..refusal
    });
    verdict(Ok(refused), true)
}

crate::lsm_program!("lsm/sb_remount", guard_remount, guard_remount_verdict);

#[inline(always)]
fn guard_remount_verdict(_ctx: LsmContext) -> i32 {
    // Arguments: (struct super_block *sb, void *mnt_opts).
    verdict(Ok(mount_refusal(MountOp::Remount, 0)), true)
}

crate::lsm_program!("lsm/sb_pivotroot", guard_pivot_root, guard_pivot_root_verdict);

#[inline(always)]
fn guard_pivot_root_verdict(ctx: LsmContext) -> i32 {
    // Arguments: (const struct path *old_path, const struct path *new_path).
    verdict(Ok(mount_refusal(MountOp::PivotRoot, ctx.arg(1))), true)
}

crate::lsm_program!("lsm/move_mount", guard_move_mount, guard_move_mount_verdict);

#[inline(always)]
fn guard_move_mount_verdict(ctx: LsmContext) -> i32 {
    // Arguments: (const struct path *from_path, const struct path *to_path): attaching a mount made
    // with fsmount(2) or open_tree(2) (fs/namespace.c `do_move_mount`).
    verdict(Ok(mount_refusal(MountOp::MoveMount, ctx.arg(1))), true)
}

/// `cgroup/sysctl`, attached to each governed cgroup: a sysctl write (`/proc/sys/kernel/modprobe`,
/// `core_pattern`, …) would make the kernel run a program of the task's choosing outside the cgroup.
/// Returns 1 to allow, 0 to refuse with `EPERM` (kernel/bpf/cgroup.c `__cgroup_bpf_run_filter_sysctl`).
#[cgroup_sysctl]
pub fn guard_sysctl(ctx: SysctlContext) -> i32 {
    // SAFETY: the context points at the kernel's `struct bpf_sysctl` for this call.
    let write = unsafe { (*ctx.sysctl).write };
    if write == 0 {
        return 1;
    }
    emit_sysctl(&ctx);
    0
}

/// The sysctl refusal's event. Only helpers every cgroup program may call (kernel/bpf/cgroup.c
/// `cgroup_current_func_proto`): no task pointer, so no parent pid or comm.
#[inline(always)]
fn emit_sysctl(ctx: &SysctlContext) {
    let backend = ACTIVE_GENERATION.get(0).map_or(0, |active| active.backend);
    let Some(mut entry) = EVENTS.reserve::<GuardEvent>(0) else {
        count(stats::EVENTS_DROPPED);
        return;
    };
    // SAFETY: as in `emit`.
    let event = unsafe { &mut *entry.as_mut_ptr() };
    let header = &mut event.header;
    header.kind = EventKind::Guard as u32;
    header.version = EVENT_VERSION;
    // SAFETY: helpers without pointer arguments.
    header.boot_ns = unsafe { bpf_ktime_get_boot_ns() };
    header.pid = 0;
    header.tid = 0;
    header.ppid = 0;
    let uid_gid = bpf_get_current_uid_gid();
    #[expect(clippy::cast_possible_truncation, reason = "lower half is the uid, upper the gid")]
    {
        header.uid = uid_gid as u32;
        header.gid = (uid_gid >> 32) as u32;
    }
    header.backend = backend;
    // SAFETY: as above.
    header.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    header.comm = [0; 16];
    event.hook = GuardHook::Sysctl as u32;
    event.detail = 0;
    event.target = 0;
    event.extra = 0;
    event.decision = Decision::Denied as u32;
    event.rule = 0;
    event.generation = 0;
    event.pad = 0;
    event.dev = 0;
    event.ino = 0;
    // BPF_F_SYSCTL_BASE_NAME (include/uapi/linux/bpf.h): the last component only.
    // SAFETY: the helper writes at most `name.len()` bytes, NUL-terminated.
    let got = unsafe {
        aya_ebpf::helpers::generated::bpf_sysctl_get_name(
            ctx.as_ptr().cast::<bpf_sysctl>(),
            event.name.as_mut_ptr().cast(),
            event.name.len() as u64,
            1,
        )
    };
    if got < 0 {
        event.name[0] = 0;
    }
    entry.submit(submit_flags(true));
}

sentra_common::same_name!(sentra_common::names::program::GUARD_BPF, guard_bpf);
sentra_common::same_name!(sentra_common::names::program::GUARD_READ_FILE, guard_read_file);
sentra_common::same_name!(sentra_common::names::program::GUARD_LOAD_DATA, guard_load_data);
sentra_common::same_name!(sentra_common::names::program::GUARD_KILL, guard_kill);
sentra_common::same_name!(sentra_common::names::program::GUARD_PTRACE, guard_ptrace);
sentra_common::same_name!(sentra_common::names::program::GUARD_CAPABLE, guard_capable);
sentra_common::same_name!(sentra_common::names::program::GUARD_SOCKET, guard_socket);
sentra_common::same_name!(sentra_common::names::program::GUARD_FILE_OPEN, guard_file_open);
sentra_common::same_name!(sentra_common::names::program::GUARD_TRUNCATE, guard_truncate);
sentra_common::same_name!(sentra_common::names::program::GUARD_UNLINK, guard_unlink);
sentra_common::same_name!(sentra_common::names::program::GUARD_RMDIR, guard_rmdir);
sentra_common::same_name!(sentra_common::names::program::GUARD_RENAME, guard_rename);
sentra_common::same_name!(sentra_common::names::program::GUARD_SYSCTL, guard_sysctl);
sentra_common::same_name!(sentra_common::names::program::GUARD_MKNOD, guard_mknod);
sentra_common::same_name!(sentra_common::names::program::GUARD_MKDIR, guard_mkdir);
sentra_common::same_name!(sentra_common::names::program::GUARD_SYMLINK, guard_symlink);
sentra_common::same_name!(sentra_common::names::program::GUARD_LINK, guard_link);
sentra_common::same_name!(sentra_common::names::program::GUARD_CHMOD, guard_chmod);
sentra_common::same_name!(sentra_common::names::program::GUARD_CHOWN, guard_chown);
sentra_common::same_name!(sentra_common::names::program::GUARD_MOUNT, guard_mount);
sentra_common::same_name!(sentra_common::names::program::GUARD_UMOUNT, guard_umount);
sentra_common::same_name!(sentra_common::names::program::GUARD_REMOUNT, guard_remount);
sentra_common::same_name!(sentra_common::names::program::GUARD_PIVOT_ROOT, guard_pivot_root);
sentra_common::same_name!(sentra_common::names::program::GUARD_MOVE_MOUNT, guard_move_mount);
