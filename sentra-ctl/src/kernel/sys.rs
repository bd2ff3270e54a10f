//! The raw `bpf(2)` system call, for the commands aya 0.14 does not offer (map-in-map creation,
//! batch updates and deletions).

use std::io;

/// `union bpf_attr` for the element commands (`BPF_MAP_UPDATE_ELEM`, `BPF_MAP_DELETE_ELEM`).
#[repr(C)]
#[derive(Default)]
pub(crate) struct MapUpdate {
    pub(crate) map_fd: u32,
    pub(crate) pad0: u32,
    pub(crate) key: u64,
    pub(crate) value: u64,
    pub(crate) flags: u64,
    pub(crate) pad: [u64; 12],
}

pub(crate) fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: attr points to a properly sized, zero-padded bpf_attr for `cmd`.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), size_of::<T>()) };
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}
