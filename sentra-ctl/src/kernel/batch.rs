//! Hash map updates and deletions in batches: one `bpf(2)` call for many entries
//! (`BPF_MAP_UPDATE_BATCH`, `BPF_MAP_DELETE_BATCH`, Linux 5.6, kernel/bpf/hashtab.c
//! `htab_map_update_batch`/`__htab_map_lookup_and_delete_batch` through `generic_map_*_batch`).
//! One call per element costs a system call per rule, for writing a generation and again for
//! clearing it; aya 0.14 has no batch calls, so they are made here with the raw system call. A
//! kernel that refuses them (`EINVAL`, `ENOTSUPP`) gets one call per element instead.

use std::{
    io,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::maps::MapData;

use super::{
    KernelError,
    store::{MapStore, hash_data, map_err, typed_mut},
    sys::{MapUpdate, bpf},
};

const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
/// `ENOTSUPP` (include/linux/errno.h, kernel-internal, not in libc): the map type has no batch call.
const ENOTSUPP: i32 = 524;
/// Entries per call: bounds the kernel's temporary copy of keys and values.
const CHUNK: usize = 4096;

/// The `batch` member of `union bpf_attr` (include/uapi/linux/bpf.h), zero-padded to its full size.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
    pad: [u64; 10],
}

fn delete_one<K: aya::Pod>(map: &MapData, key: &K) -> io::Result<()> {
    let fd = map.fd().as_fd().as_raw_fd();
    let mut attr = MapUpdate {
        map_fd: u32::try_from(fd).map_err(|_| io::Error::other("fd out of range"))?,
        key: std::ptr::from_ref(key) as u64,
        ..MapUpdate::default()
    };
    bpf(BPF_MAP_DELETE_ELEM, &mut attr).map(|_| ())
}

/// One batch call over `keys` (and `values` for an update); `Ok(false)` when the kernel has no
/// batch call for this map.
fn call<K: aya::Pod, V: aya::Pod>(
    map: &MapData,
    command: libc::c_long,
    keys: &[K],
    values: Option<&[V]>,
) -> io::Result<bool> {
    let fd = map.fd().as_fd().as_raw_fd();
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.map_or(0, |v| v.as_ptr() as u64),
        count: u32::try_from(keys.len()).map_err(|_| io::Error::other("batch too large"))?,
        map_fd: u32::try_from(fd).map_err(|_| io::Error::other("fd out of range"))?,
        ..BatchAttr::default()
    };
    match bpf(command, &mut attr) {
        Ok(_) => Ok(true),
        Err(err) if matches!(err.raw_os_error(), Some(libc::EINVAL | ENOTSUPP)) => Ok(false),
        Err(err) => Err(err),
    }
}

/// Inserts or replaces `entries` in the hash map `name`.
///
/// # Errors
/// The map is missing or an update fails (for instance the map is full).
pub fn update<K: aya::Pod, V: aya::Pod, S: MapStore + ?Sized>(
    store: &mut S,
    name: &'static str,
    entries: &[(K, V)],
) -> Result<(), KernelError> {
    let fail = |source: io::Error| KernelError::MapCall { map: name, what: "batch update", source };
    for chunk in entries.chunks(CHUNK) {
        let keys: Vec<K> = chunk.iter().map(|(k, _)| *k).collect();
        let values: Vec<V> = chunk.iter().map(|(_, v)| *v).collect();
        if !call(hash_data(store, name)?, BPF_MAP_UPDATE_BATCH, &keys, Some(&values)).map_err(fail)? {
            update_each(store, name, chunk)?;
        }
    }
    Ok(())
}

/// [`update`] one element per call: what a kernel without batch calls gets.
///
/// # Errors
/// The map is missing or an update fails (for instance the map is full).
pub fn update_each<K: aya::Pod, V: aya::Pod, S: MapStore + ?Sized>(
    store: &mut S,
    name: &'static str,
    entries: &[(K, V)],
) -> Result<(), KernelError> {
    let mut map: aya::maps::HashMap<_, K, V> = typed_mut(store, name)?;
    for (key, value) in entries {
        map.insert(key, value, 0).map_err(map_err(name))?;
    }
    Ok(())
}

/// Deletes `keys` from the hash map `name`; a key already absent is not an error (a partly written
/// generation holds only some of its policy's keys). A batch stops at the first key that is absent (`ENOENT`);
/// the keys after it are then deleted one by one, absent ones skipped.
///
/// # Errors
/// The map is missing or a deletion fails otherwise.
pub fn delete<K: aya::Pod, S: MapStore + ?Sized>(
    store: &mut S,
    name: &'static str,
    keys: &[K],
) -> Result<(), KernelError> {
    let fail = |source: io::Error| KernelError::MapCall { map: name, what: "batch delete", source };
    for chunk in keys.chunks(CHUNK) {
        let done = match call::<K, u8>(hash_data(store, name)?, BPF_MAP_DELETE_BATCH, chunk, None) {
            Ok(done) => done,
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => false,
            Err(err) => return Err(fail(err)),
        };
        if !done {
            delete_each(store, name, chunk)?;
        }
    }
    Ok(())
}

/// [`delete`] one element per call (absent keys skipped): what a kernel without batch calls gets,
/// and the rest of a batch stopped by an absent key.
///
/// # Errors
/// The map is missing or a deletion fails otherwise.
pub fn delete_each<K: aya::Pod, S: MapStore + ?Sized>(
    store: &S,
    name: &'static str,
    keys: &[K],
) -> Result<(), KernelError> {
    let map = hash_data(store, name)?;
    for key in keys {
        match delete_one(map, key) {
            Err(err) if err.raw_os_error() != Some(libc::ENOENT) => {
                return Err(KernelError::MapCall { map: name, what: "delete", source: err });
            }
            _ => {}
        }
    }
    Ok(())
}
