//! Reading kernel memory at offsets taken from the running kernel's BTF.

use aya_ebpf::helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes};
use sentra_common::{event::ProbeSite, offsets::KernelOffsets};

/// Filled by userspace from `/sys/kernel/btf/vmlinux` before load (read-only data).
#[unsafe(no_mangle)]
static KERNEL_OFFSETS: KernelOffsets = KernelOffsets {
    binprm_file: 0,
    file_dentry: 0,
    file_vfsmount: 0,
    dentry_parent: 0,
    dentry_name: 0,
    dentry_inode: 0,
    inode_ino: 0,
    inode_sb: 0,
    sb_dev: 0,
    mount_vfsmount: 0,
    mount_parent: 0,
    mount_mountpoint: 0,
    vfsmount_root: 0,
    task_real_parent: 0,
    task_tgid: 0,
    task_group_leader: 0,
    task_start_boottime: 0,
    task_mm: 0,
    mm_arg_start: 0,
    mm_arg_end: 0,
    binprm_argc: 0,
    mm_exe_file: 0,
    socket_type: 0,
    file_mode: 0,
    dentry_sb: 0,
    sb_magic: 0,
    sb_root: 0,
    inode_mode: 0,
    path_dentry: 0,
    path_mnt: 0,
    vma_file: 0,
    task_cgroups: 0,
    css_set_dfl_cgrp: 0,
    cgroup_kn: 0,
    kernfs_node_id: 0,
    cgroup_parent: 0,
    css_cgroup: 0,
    cgroup_parent_walk: 0,
    mm_env_start: 0,
    mm_env_end: 0,
    valid: 0,
};
sentra_common::same_name!(sentra_common::names::KERNEL_OFFSETS, KERNEL_OFFSETS);

/// The offsets. The pointer goes through a volatile load so that the compiler cannot fold the zero
/// initialiser into the reads; the struct itself is not copied (a copy costs every program its size
/// in stack, and the exec programs are near the verifier's 512 bytes).
#[inline(always)]
pub fn offsets() -> &'static KernelOffsets {
    let at: *const KernelOffsets = &raw const KERNEL_OFFSETS;
    // SAFETY: reading a local; the pointer is to a static we own, valid for the program's life.
    unsafe { &*core::ptr::read_volatile(&raw const at) }
}

/// A failed kernel read, named by its site (the helper's errno says only "bad address").
#[derive(Clone, Copy)]
pub struct ReadError(pub ProbeSite);

/// Reads a `T` at `base + off`.
#[inline(always)]
pub fn read<T>(base: u64, off: u32, site: ProbeSite) -> Result<T, ReadError> {
    // SAFETY: bpf_probe_read_kernel checks the address; a bad pointer yields an error, not a fault.
    unsafe { bpf_probe_read_kernel((base + u64::from(off)) as *const T) }.map_err(|_| ReadError(site))
}

/// Reads a pointer at `base + off`; a null pointer is an error.
#[inline(always)]
pub fn read_ptr(base: u64, off: u32, site: ProbeSite) -> Result<u64, ReadError> {
    let ptr: u64 = read(base, off, site)?;
    if ptr == 0 { Err(ReadError(site)) } else { Ok(ptr) }
}

/// Reads the NUL-terminated string at `src` into `dst`; returns the length without the NUL.
#[inline(always)]
pub fn read_str(src: u64, dst: &mut [u8], site: ProbeSite) -> Result<usize, ReadError> {
    // SAFETY: as for `read`.
    unsafe { bpf_probe_read_kernel_str_bytes(src as *const u8, dst) }
        .map(<[u8]>::len)
        .map_err(|_| ReadError(site))
}

/// (device, inode) of a dentry's inode, device as the kernel's `dev_t`.
#[inline(always)]
pub fn identity(dentry: u64, off: &KernelOffsets) -> Result<(u64, u64), ReadError> {
    let inode = read_ptr(dentry, off.dentry_inode, ProbeSite::Inode)?;
    let ino: u64 = read(inode, off.inode_ino, ProbeSite::Inode)?;
    let sb = read_ptr(inode, off.inode_sb, ProbeSite::Inode)?;
    let dev: u32 = read(sb, off.sb_dev, ProbeSite::Inode)?;
    Ok((u64::from(dev), ino))
}
