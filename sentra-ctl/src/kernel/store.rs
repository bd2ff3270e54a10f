//! Where the maps are: the freshly loaded object, or maps reopened from their pins.

use std::collections::BTreeMap;

use aya::{
    Ebpf,
    maps::{Map, MapData},
};

use super::KernelError;

/// The maps by name (names from `sentra_common::names::map`).
pub trait MapStore {
    fn map(&self, name: &str) -> Option<&Map>;
    fn map_mut(&mut self, name: &str) -> Option<&mut Map>;
    fn take_map(&mut self, name: &str) -> Option<Map>;
}

impl MapStore for Ebpf {
    fn map(&self, name: &str) -> Option<&Map> {
        Ebpf::map(self, name)
    }
    fn map_mut(&mut self, name: &str) -> Option<&mut Map> {
        Ebpf::map_mut(self, name)
    }
    fn take_map(&mut self, name: &str) -> Option<Map> {
        Ebpf::take_map(self, name)
    }
}

/// Maps reopened from bpffs pins, by name.
#[derive(Default)]
pub struct PinnedMaps {
    pub maps: BTreeMap<String, Map>,
}

impl MapStore for PinnedMaps {
    fn map(&self, name: &str) -> Option<&Map> {
        self.maps.get(name)
    }
    fn map_mut(&mut self, name: &str) -> Option<&mut Map> {
        self.maps.get_mut(name)
    }
    fn take_map(&mut self, name: &str) -> Option<Map> {
        self.maps.remove(name)
    }
}

/// The map `name`, or the error naming it.
///
/// # Errors
/// The store has no such map.
pub fn get<'a, S: MapStore + ?Sized>(store: &'a S, name: &'static str) -> Result<&'a Map, KernelError> {
    store.map(name).ok_or(KernelError::MissingMap { map: name })
}

/// The map `name` for writing, or the error naming it.
///
/// # Errors
/// The store has no such map.
pub fn get_mut<'a, S: MapStore + ?Sized>(
    store: &'a mut S,
    name: &'static str,
) -> Result<&'a mut Map, KernelError> {
    store.map_mut(name).ok_or(KernelError::MissingMap { map: name })
}

/// The map `name` as aya's typed map `T` (`Array`, `HashMap`, `LpmTrie`, `PerCpuArray`…), read-only.
///
/// # Errors
/// The map is missing or not of that type.
pub fn typed<'a, T, S>(store: &'a S, name: &'static str) -> Result<T, KernelError>
where
    S: MapStore + ?Sized,
    T: TryFrom<&'a Map, Error = aya::maps::MapError>,
{
    T::try_from(get(store, name)?).map_err(map_err(name))
}

/// The map `name` as aya's typed map `T`, for writing.
///
/// # Errors
/// The map is missing or not of that type.
pub fn typed_mut<'a, T, S>(store: &'a mut S, name: &'static str) -> Result<T, KernelError>
where
    S: MapStore + ?Sized,
    T: TryFrom<&'a mut Map, Error = aya::maps::MapError>,
{
    T::try_from(get_mut(store, name)?).map_err(map_err(name))
}

/// The per-CPU `u64` counters of `name` at `indexes`, each summed over CPUs.
///
/// # Errors
/// The map is missing, not a per-CPU array, or cannot be read.
pub fn counters<const N: usize, S: MapStore + ?Sized>(
    store: &S,
    name: &'static str,
    indexes: [u32; N],
) -> Result<[u64; N], KernelError> {
    let map: aya::maps::PerCpuArray<&MapData, u64> = typed(store, name)?;
    let mut sums = [0; N];
    for (sum, index) in sums.iter_mut().zip(indexes) {
        *sum = map.get(&index, 0).map_err(map_err(name))?.iter().sum();
    }
    Ok(sums)
}

/// The data of the hash map `name` (for the raw batch calls).
///
/// # Errors
/// The map is missing or not a hash map.
pub fn hash_data<'a, S: MapStore + ?Sized>(
    store: &'a S,
    name: &'static str,
) -> Result<&'a MapData, KernelError> {
    match get(store, name)? {
        Map::HashMap(data) => Ok(data),
        _ => Err(KernelError::MapKind { map: name, expected: "hash map" }),
    }
}

/// Maps an aya map error to the error naming the map.
pub fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> KernelError {
    move |source| KernelError::Map { map, source }
}
