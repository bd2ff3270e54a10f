//! Offsets of kernel struct members, read from the running kernel's BTF by userspace at load time and
//! handed to the BPF programs as a read-only global (`KERNEL_OFFSETS`).
//!
//! bpf-linker emits no CO-RE relocations, so compiling offsets in would tie the object to one kernel.

/// Byte offsets of the members the exec probes read. Names are `struct_member`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KernelOffsets {
    /// `struct linux_binprm::file`
    pub binprm_file: u32,
    /// `struct file::f_path` + `struct path::dentry`
    pub file_dentry: u32,
    /// `struct file::f_path` + `struct path::mnt`
    pub file_vfsmount: u32,
    /// `struct dentry::d_parent`
    pub dentry_parent: u32,
    /// `struct dentry::d_name` + `struct qstr::name`
    pub dentry_name: u32,
    /// `struct dentry::d_inode`
    pub dentry_inode: u32,
    /// `struct inode::i_ino`
    pub inode_ino: u32,
    /// `struct inode::i_sb`
    pub inode_sb: u32,
    /// `struct super_block::s_dev`
    pub sb_dev: u32,
    /// `struct mount::mnt` (the `struct vfsmount` embedded in `struct mount`)
    pub mount_vfsmount: u32,
    /// `struct mount::mnt_parent`
    pub mount_parent: u32,
    /// `struct mount::mnt_mountpoint`
    pub mount_mountpoint: u32,
    /// `struct vfsmount::mnt_root`
    pub vfsmount_root: u32,
    /// `struct task_struct::real_parent`
    pub task_real_parent: u32,
    /// `struct task_struct::tgid`
    pub task_tgid: u32,
    /// `struct task_struct::group_leader`
    pub task_group_leader: u32,
    /// `struct task_struct::start_boottime` (process identity in events: `exec_id`)
    pub task_start_boottime: u32,
    /// `struct task_struct::mm`
    pub task_mm: u32,
    /// `struct mm_struct::arg_start`
    pub mm_arg_start: u32,
    /// `struct mm_struct::arg_end`
    pub mm_arg_end: u32,
    /// `struct linux_binprm::argc`
    pub binprm_argc: u32,
    /// `struct mm_struct::exe_file` (network events name the task's executable)
    pub mm_exe_file: u32,
    /// `struct socket::type` (a `short`: `SOCK_STREAM`, `SOCK_DGRAM`; lsm `socket_connect`)
    pub socket_type: u32,
    /// `struct file::f_mode` (`FMODE_WRITE`: opened for writing)
    pub file_mode: u32,
    /// `struct dentry::d_sb`
    pub dentry_sb: u32,
    /// `struct super_block::s_magic`
    pub sb_magic: u32,
    /// `struct super_block::s_root`
    pub sb_root: u32,
    /// `struct inode::i_mode` (a `umode_t`: `S_IFBLK`)
    pub inode_mode: u32,
    /// `struct path::dentry` (the `path_*` hooks' argument)
    pub path_dentry: u32,
    /// `struct path::mnt`
    pub path_mnt: u32,
    /// `struct vm_area_struct::vm_file` (`file_mprotect`: the mapped file, or null)
    pub vma_file: u32,
    /// `struct task_struct::cgroups` (the task's `css_set`)
    pub task_cgroups: u32,
    /// `struct css_set::dfl_cgrp` (its cgroup on the v2 hierarchy)
    pub css_set_dfl_cgrp: u32,
    /// `struct cgroup::kn` (the cgroup's directory: its `id` is the cgroup id)
    pub cgroup_kn: u32,
    /// `struct kernfs_node::id`
    pub kernfs_node_id: u32,
    /// `struct cgroup::self` + `struct cgroup_subsys_state::parent` (the parent's `self`, or null at
    /// the root)
    pub cgroup_parent: u32,
    /// `struct cgroup_subsys_state::cgroup`
    pub css_cgroup: u32,
    /// Non-zero where tracing and LSM programs may not call `bpf_get_current_ancestor_cgroup_id`
    /// (before Linux 5.14, which added it to `bpf_tracing_func_proto`): they walk the cgroup's
    /// parents through the members above instead. Set by userspace from a load-time probe.
    pub cgroup_parent_walk: u32,
    /// `struct mm_struct::env_start` (the new image's environment: the signal backend's check of the
    /// dynamic loader's variables)
    pub mm_env_start: u32,
    /// `struct mm_struct::env_end`
    pub mm_env_end: u32,
    /// Non-zero once filled by userspace; probes refuse to decide on zeroed offsets.
    pub valid: u32,
}
