//! A barrier that returns once every BPF program that could still be running has finished.
//!
//! After a policy flip, programs that read the old generation may still be deciding; the old
//! generation must not be cleared until they are done. The kernel offers exactly this wait: an update
//! of a map-in-map returns only after an RCU grace period (kernel/bpf/syscall.c,
//! `maybe_wait_bpf_programs` → `synchronize_rcu()`), and non-sleepable BPF programs (all of Sentra's)
//! run inside an RCU read-side critical section. aya 0.14 cannot create maps from userspace, so the two
//! tiny maps are made with the raw `bpf(2)` calls here.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use super::sys::{MapUpdate, bpf};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

/// The leading fields of `union bpf_attr` for `BPF_MAP_CREATE` (include/uapi/linux/bpf.h); the rest
/// of the 128-byte union stays zero.
#[repr(C)]
#[derive(Default)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    pad: [u64; 13],
}

fn create(attr: &mut MapCreate) -> io::Result<OwnedFd> {
    let fd = bpf(BPF_MAP_CREATE, attr)?;
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("fd out of range"))?;
    // SAFETY: the kernel just returned this new fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Holds the two maps; `wait` may be called any number of times.
pub struct RcuBarrier {
    outer: OwnedFd,
    inner: OwnedFd,
}

impl RcuBarrier {
    /// Creates the maps (needs `CAP_BPF`).
    ///
    /// # Errors
    /// The kernel refuses to create them.
    pub fn new() -> io::Result<Self> {
        // A controller adopting pinned programs creates these before anything else.
        super::lift_memlock();
        let inner = create(&mut MapCreate {
            map_type: BPF_MAP_TYPE_ARRAY,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            ..MapCreate::default()
        })?;
        let outer = create(&mut MapCreate {
            map_type: BPF_MAP_TYPE_ARRAY_OF_MAPS,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            inner_map_fd: u32::try_from(inner.as_raw_fd()).map_err(|_| io::Error::other("bad fd"))?,
            ..MapCreate::default()
        })?;
        Ok(Self { outer, inner })
    }

    /// Returns after an RCU grace period: every BPF program running when this was called has finished.
    ///
    /// # Errors
    /// The map update fails.
    pub fn wait(&self) -> io::Result<()> {
        let key: u32 = 0;
        let value: u32 = u32::try_from(self.inner.as_raw_fd()).map_err(|_| io::Error::other("bad fd"))?;
        bpf(
            BPF_MAP_UPDATE_ELEM,
            &mut MapUpdate {
                map_fd: u32::try_from(self.outer.as_raw_fd()).map_err(|_| io::Error::other("bad fd"))?,
                key: std::ptr::from_ref(&key) as u64,
                value: std::ptr::from_ref(&value) as u64,
                ..MapUpdate::default()
            },
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn barrier_waits_without_error() {
        // Needs root (CAP_BPF), as every test of this crate that touches the kernel; fails otherwise.
        let barrier = super::RcuBarrier::new().expect("create map-in-map (run as root)");
        let start = std::time::Instant::now();
        barrier.wait().expect("update");
        barrier.wait().expect("update again");
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }
}
