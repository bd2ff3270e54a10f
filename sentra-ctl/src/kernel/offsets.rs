//! Struct member offsets from the running kernel's BTF (`/sys/kernel/btf/vmlinux`).

use btf_rs::{Btf, Type};
use sentra_common::offsets::KernelOffsets;

use super::KernelError;

/// Where the kernel publishes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Reads every offset the BPF programs need from `raw`, the bytes of [`VMLINUX_BTF`].
///
/// # Errors
/// Unparseable BTF, or a struct or member missing from it (named in the error).
pub fn read(raw: &[u8]) -> Result<KernelOffsets, KernelError> {
    let btf = Btf::from_bytes(raw).map_err(|err| KernelError::Btf(format!("{VMLINUX_BTF}: {err}")))?;
    let lookup = Lookup { btf: &btf };
    Ok(KernelOffsets {
        binprm_file: lookup.offset("linux_binprm", &["file"])?,
        file_dentry: lookup.offset("file", &["f_path", "dentry"])?,
        file_vfsmount: lookup.offset("file", &["f_path", "mnt"])?,
        dentry_parent: lookup.offset("dentry", &["d_parent"])?,
        dentry_name: lookup.offset("dentry", &["d_name", "name"])?,
        dentry_inode: lookup.offset("dentry", &["d_inode"])?,
        inode_ino: lookup.offset("inode", &["i_ino"])?,
        inode_sb: lookup.offset("inode", &["i_sb"])?,
        sb_dev: lookup.offset("super_block", &["s_dev"])?,
        mount_vfsmount: lookup.offset("mount", &["mnt"])?,
        mount_parent: lookup.offset("mount", &["mnt_parent"])?,
        mount_mountpoint: lookup.offset("mount", &["mnt_mountpoint"])?,
        vfsmount_root: lookup.offset("vfsmount", &["mnt_root"])?,
        task_real_parent: lookup.offset("task_struct", &["real_parent"])?,
        task_tgid: lookup.offset("task_struct", &["tgid"])?,
        task_group_leader: lookup.offset("task_struct", &["group_leader"])?,
        task_start_boottime: lookup.offset("task_struct", &["start_boottime"])?,
        task_mm: lookup.offset("task_struct", &["mm"])?,
        mm_arg_start: lookup.offset("mm_struct", &["arg_start"])?,
        mm_arg_end: lookup.offset("mm_struct", &["arg_end"])?,
        mm_env_start: lookup.offset("mm_struct", &["env_start"])?,
        mm_env_end: lookup.offset("mm_struct", &["env_end"])?,
        binprm_argc: lookup.offset("linux_binprm", &["argc"])?,
        mm_exe_file: lookup.offset("mm_struct", &["exe_file"])?,
        socket_type: lookup.offset("socket", &["type"])?,
        file_mode: lookup.offset("file", &["f_mode"])?,
        dentry_sb: lookup.offset("dentry", &["d_sb"])?,
        sb_magic: lookup.offset("super_block", &["s_magic"])?,
        sb_root: lookup.offset("super_block", &["s_root"])?,
        inode_mode: lookup.offset("inode", &["i_mode"])?,
        path_dentry: lookup.offset("path", &["dentry"])?,
        path_mnt: lookup.offset("path", &["mnt"])?,
        vma_file: lookup.offset("vm_area_struct", &["vm_file"])?,
        task_cgroups: lookup.offset("task_struct", &["cgroups"])?,
        css_set_dfl_cgrp: lookup.offset("css_set", &["dfl_cgrp"])?,
        cgroup_kn: lookup.offset("cgroup", &["kn"])?,
        kernfs_node_id: lookup.offset("kernfs_node", &["id"])?,
        cgroup_parent: lookup.offset("cgroup", &["self", "parent"])?,
        css_cgroup: lookup.offset("cgroup_subsys_state", &["cgroup"])?,
        // A kernel probe, not BTF: the loader sets it (`super::sys::tracing_has_ancestor_cgroup_id`).
        cgroup_parent_walk: 0,
        valid: 1,
    })
}

struct Lookup<'a> {
    btf: &'a Btf,
}

impl Lookup<'_> {
    /// Byte offset of `path` (member, then member of that member, …) inside `struct name`.
    fn offset(&self, name: &str, path: &[&str]) -> Result<u32, KernelError> {
        let missing = || KernelError::Btf(format!("struct {name}: no member {}", path.join(".")));
        let types = self
            .btf
            .resolve_types_by_name(name)
            .map_err(|err| KernelError::Btf(format!("struct {name}: {err}")))?;
        let mut current = types
            .into_iter()
            .find(|t| matches!(t, Type::Struct(_)))
            .ok_or_else(|| KernelError::Btf(format!("struct {name} not found")))?;
        let mut bits = 0u32;
        for member in path {
            let (offset, ty) = self.member(&current, member)?.ok_or_else(missing)?;
            bits += offset;
            current = ty;
        }
        if !bits.is_multiple_of(8) {
            return Err(KernelError::Btf(format!("struct {name}: {} is a bitfield", path.join("."))));
        }
        Ok(bits / 8)
    }

    /// Finds `wanted` in a struct or union, descending into anonymous members (the kernel wraps
    /// fields in unnamed structs, e.g. `mm_struct`'s randomized block). Returns its bit offset and
    /// its type with typedefs and qualifiers peeled.
    fn member(&self, ty: &Type, wanted: &str) -> Result<Option<(u32, Type)>, KernelError> {
        let members = match ty {
            Type::Struct(s) | Type::Union(s) => &s.members,
            _ => return Ok(None),
        };
        for member in members {
            let name = self.btf.resolve_name(member).unwrap_or_default();
            let member_ty = self.peel(self.btf.resolve_chained_type(member).map_err(btf_err)?)?;
            if name == wanted {
                return Ok(Some((member.bit_offset(), member_ty)));
            }
            if name.is_empty()
                && let Some((inner, found)) = self.member(&member_ty, wanted)?
            {
                return Ok(Some((member.bit_offset() + inner, found)));
            }
        }
        Ok(None)
    }

    fn peel(&self, mut ty: Type) -> Result<Type, KernelError> {
        for _ in 0..16 {
            match &ty {
                Type::Typedef(_)
                | Type::Const(_)
                | Type::Volatile(_)
                | Type::Restrict(_)
                | Type::TypeTag(_) => {
                    let inner = ty.as_btf_type().ok_or_else(|| KernelError::Btf("bad BTF chain".into()))?;
                    ty = self.btf.resolve_chained_type(inner).map_err(btf_err)?;
                }
                _ => return Ok(ty),
            }
        }
        Ok(ty)
    }
}

fn btf_err(err: impl std::fmt::Display) -> KernelError {
    KernelError::Btf(err.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn offsets_are_read_from_the_running_kernel() {
        // Every supported kernel publishes its BTF; without it this test fails, as it must.
        let raw = std::fs::read(super::VMLINUX_BTF).expect("kernel BTF");
        let offsets = super::read(&raw).expect("BTF offsets");
        assert_eq!(offsets.valid, 1);
        // `struct path` is {mnt, dentry}: dentry sits 8 bytes after mnt (include/linux/path.h).
        assert_eq!(offsets.file_dentry, offsets.file_vfsmount + 8);
        assert!(offsets.mm_arg_end > offsets.mm_arg_start);
    }
}
