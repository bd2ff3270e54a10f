//! Writing policy generations and governed cgroups into the exec maps.

use std::collections::BTreeMap;

use aya::maps::{
    Array, HashMap, MapData,
    lpm_trie::{Key, LpmTrie},
};
use sentra_common::{
    event::{PROBE_SITES, ProbeSite},
    exec::{
        AppletKey, FileKey, GovernedCgroup, InodeKey, LOADER_PATH_LEN, LoaderPath, MultiCall, NameKey,
        RuleValue,
    },
    names::map::{
        ACTIVE_GENERATION, EXEC_APPLETS, EXEC_DIR_RULES, EXEC_INODE_RULES, EXEC_LIBRARIES, EXEC_MULTICALL,
        EXEC_NAME_RULES, GOVERNED, LOADER_PATHS, PROTECTED, PROTECTED_FILES, SETTINGS, STATS,
    },
    settings::{ActiveGeneration, Backend, GENERATIONS, Settings, stats},
};

use super::{
    KernelError,
    store::{MapStore, counters, map_err, typed_mut},
};
use crate::policy::exec::{CompiledExec, FileId, MulticallBinary};

fn hash<'a, K: aya::Pod, V: aya::Pod, S: MapStore + ?Sized>(
    ebpf: &'a mut S,
    name: &'static str,
) -> Result<HashMap<&'a mut MapData, K, V>, KernelError> {
    typed_mut(ebpf, name)
}

fn array<'a, V: aya::Pod, S: MapStore + ?Sized>(
    ebpf: &'a mut S,
    name: &'static str,
) -> Result<Array<&'a mut MapData, V>, KernelError> {
    typed_mut(ebpf, name)
}

/// Counters summed over CPUs.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    pub events_dropped: u64,
    pub exec_decisions: u64,
    pub exec_denied: u64,
    pub probe_errors: u64,
    /// Probe errors (exec and network) by the site that failed; only sites that failed.
    pub probe_errors_by_site: BTreeMap<&'static str, u64>,
}

/// The kernel's count of events lost to a full ring buffer (exec and network), summed over CPUs.
///
/// # Errors
/// The map cannot be read.
pub fn events_dropped<S: MapStore + ?Sized>(ebpf: &S) -> Result<u64, KernelError> {
    let [dropped] = counters(ebpf, STATS, [stats::EVENTS_DROPPED])?;
    Ok(dropped)
}

/// Reads `STATS`.
///
/// # Errors
/// The map cannot be read.
pub fn read_stats<S: MapStore + ?Sized>(ebpf: &S) -> Result<Stats, KernelError> {
    let [events_dropped, exec_decisions, exec_denied, probe_errors] = counters(
        ebpf,
        STATS,
        [stats::EVENTS_DROPPED, stats::EXEC_DECISIONS, stats::EXEC_DENIED, stats::PROBE_ERRORS],
    )?;
    let sites: [u32; PROBE_SITES as usize] = std::array::from_fn(|i| u32::try_from(i).unwrap_or(u32::MAX));
    let by_site = counters(ebpf, STATS, sites.map(|site| stats::PROBE_SITE_BASE + site))?;
    let probe_errors_by_site = sites
        .into_iter()
        .zip(by_site)
        .filter(|&(_, n)| n > 0)
        .filter_map(|(site, n)| Some((ProbeSite::try_from(site).ok()?.as_str(), n)))
        .collect();
    Ok(Stats { events_dropped, exec_decisions, exec_denied, probe_errors, probe_errors_by_site })
}

/// The generation currently deciding.
///
/// # Errors
/// The map cannot be read.
pub fn active_generation<S: MapStore + ?Sized>(ebpf: &mut S) -> Result<ActiveGeneration, KernelError> {
    array::<ActiveGeneration, S>(ebpf, ACTIVE_GENERATION)?.get(&0, 0).map_err(map_err(ACTIVE_GENERATION))
}

/// Writes `compiled` as generation `generation` (not yet active), replacing whatever it held.
///
/// # Errors
/// A map update fails (for instance a map is full).
pub fn write_generation<S: MapStore + ?Sized>(
    ebpf: &mut S,
    generation: u32,
    compiled: &CompiledExec,
    mode: sentra_common::settings::Mode,
) -> Result<(), KernelError> {
    debug_assert!(generation < GENERATIONS);
    // A generation cleared completely before is empty: sweeping the maps for it would walk every key
    // of the active generation (one syscall each) for nothing.
    let previous = array::<Settings, S>(ebpf, SETTINGS)?.get(&generation, 0).map_err(map_err(SETTINGS))?;
    if previous.dirty != 0 || previous.loaded != 0 {
        clear_generation(ebpf, generation, None)?;
    }
    array::<Settings, S>(ebpf, SETTINGS)?
        .set(generation, Settings { dirty: 1, ..Settings::default() }, 0)
        .map_err(map_err(SETTINGS))?;
    let inode: Vec<(InodeKey, RuleValue)> =
        compiled.inode.iter().map(|(id, value)| (inode_key(generation, *id), *value)).collect();
    super::batch::update(ebpf, EXEC_INODE_RULES, &inode)?;
    let name: Vec<(NameKey, RuleValue)> = compiled
        .name
        .iter()
        .map(|((dir, name), value)| (name_key(generation, *dir, *name), *value))
        .collect();
    super::batch::update(ebpf, EXEC_NAME_RULES, &name)?;
    let dir: Vec<(InodeKey, RuleValue)> =
        compiled.dir.iter().map(|(id, value)| (inode_key(generation, *id), *value)).collect();
    super::batch::update(ebpf, EXEC_DIR_RULES, &dir)?;
    let library: Vec<(InodeKey, u32)> =
        compiled.library.iter().map(|id| (inode_key(generation, *id), 1)).collect();
    super::batch::update(ebpf, EXEC_LIBRARIES, &library)?;
    {
        let mut trie: LpmTrie<&mut MapData, LoaderPath, u32> = typed_mut(ebpf, LOADER_PATHS)?;
        for (path, allow) in &compiled.loader_paths {
            if let Some(key) = loader_key(generation, path) {
                trie.insert(&key, u32::from(*allow), 0).map_err(map_err(LOADER_PATHS))?;
            }
        }
    }
    let multicall: Vec<(InodeKey, MultiCall)> = compiled
        .table
        .multicall
        .iter()
        .map(|b| (multicall_key(generation, b), multicall_value(&b.stem)))
        .collect();
    super::batch::update(ebpf, EXEC_MULTICALL, &multicall)?;
    let applet: Vec<(AppletKey, RuleValue)> =
        compiled.applet.iter().map(|(name, value)| (applet_key(generation, *name), *value)).collect();
    super::batch::update(ebpf, EXEC_APPLETS, &applet)?;
    let settings = Settings {
        mode: mode as u32,
        exec_default: compiled.table.default_effect() as u32,
        dirty: 1,
        loaded: 1,
    };
    array::<Settings, S>(ebpf, SETTINGS)?.set(generation, settings, 0).map_err(map_err(SETTINGS))?;
    Ok(())
}

/// Removes every entry of `generation` and marks it unloaded. With `known`, the policy this process
/// wrote into that generation, exactly its keys are deleted; otherwise (a generation a predecessor
/// wrote, or whose writing was interrupted) every key of every generation is walked to find them,
/// one system call per key, which for a large policy costs more than writing it.
///
/// # Errors
/// A map cannot be read or updated.
pub fn clear_generation<S: MapStore + ?Sized>(
    ebpf: &mut S,
    generation: u32,
    known: Option<&CompiledExec>,
) -> Result<(), KernelError> {
    // Unloaded at once, marked clean only once every entry is gone (a controller killed midway leaves
    // it dirty, and the next write sweeps it).
    array::<Settings, S>(ebpf, SETTINGS)?
        .set(generation, Settings { dirty: 1, ..Settings::default() }, 0)
        .map_err(map_err(SETTINGS))?;
    if let Some(compiled) = known {
        let inode: Vec<InodeKey> = compiled.inode.iter().map(|(id, _)| inode_key(generation, *id)).collect();
        super::batch::delete(ebpf, EXEC_INODE_RULES, &inode)?;
        let dir: Vec<InodeKey> = compiled.dir.iter().map(|(id, _)| inode_key(generation, *id)).collect();
        super::batch::delete(ebpf, EXEC_DIR_RULES, &dir)?;
        let name: Vec<NameKey> =
            compiled.name.iter().map(|((dir, name), _)| name_key(generation, *dir, *name)).collect();
        super::batch::delete(ebpf, EXEC_NAME_RULES, &name)?;
        let library: Vec<InodeKey> = compiled.library.iter().map(|id| inode_key(generation, *id)).collect();
        super::batch::delete(ebpf, EXEC_LIBRARIES, &library)?;
        let mut trie: LpmTrie<&mut MapData, LoaderPath, u32> = typed_mut(ebpf, LOADER_PATHS)?;
        for key in compiled.loader_paths.iter().filter_map(|(path, _)| loader_key(generation, path)) {
            // A key already gone (a write interrupted midway) is what deleting it would achieve.
            let _ = trie.remove(&key);
        }
        let multicall: Vec<InodeKey> =
            compiled.table.multicall.iter().map(|b| multicall_key(generation, b)).collect();
        super::batch::delete(ebpf, EXEC_MULTICALL, &multicall)?;
        let applet: Vec<AppletKey> =
            compiled.applet.iter().map(|(name, _)| applet_key(generation, *name)).collect();
        super::batch::delete(ebpf, EXEC_APPLETS, &applet)?;
    } else {
        sweep::<InodeKey, RuleValue, S>(ebpf, EXEC_INODE_RULES, generation, |k| k.generation)?;
        sweep::<InodeKey, RuleValue, S>(ebpf, EXEC_DIR_RULES, generation, |k| k.generation)?;
        sweep::<NameKey, RuleValue, S>(ebpf, EXEC_NAME_RULES, generation, |k| k.generation)?;
        sweep::<InodeKey, u32, S>(ebpf, EXEC_LIBRARIES, generation, |k| k.generation)?;
        let mut trie: LpmTrie<&mut MapData, LoaderPath, u32> = typed_mut(ebpf, LOADER_PATHS)?;
        let stale: Vec<Key<LoaderPath>> =
            trie.keys().filter_map(Result::ok).filter(|k| k.data().generation == generation).collect();
        for key in stale {
            trie.remove(&key).map_err(map_err(LOADER_PATHS))?;
        }
        sweep::<InodeKey, MultiCall, S>(ebpf, EXEC_MULTICALL, generation, |k| k.generation)?;
        sweep::<AppletKey, RuleValue, S>(ebpf, EXEC_APPLETS, generation, |k| k.generation)?;
    }
    array::<Settings, S>(ebpf, SETTINGS)?.set(generation, Settings::default(), 0).map_err(map_err(SETTINGS))
}

/// Deletes every key of `generation` from the generation-keyed map `name`, found by walking all its
/// keys (one system call each).
fn sweep<K: aya::Pod, V: aya::Pod, S: MapStore + ?Sized>(
    ebpf: &mut S,
    name: &'static str,
    generation: u32,
    generation_of: impl Fn(&K) -> u32,
) -> Result<(), KernelError> {
    let map = hash::<K, V, S>(ebpf, name)?;
    let stale: Vec<K> =
        map.keys().filter_map(Result::ok).filter(|k| generation_of(k) == generation).collect();
    super::batch::delete(ebpf, name, &stale)
}

/// The `LOADER_PATHS` key of a loader path (a directory ends with `/` and covers what is below it; a
/// file is matched with its NUL, exactly); `None` for a path too long for the key, which is then left
/// out: an allowed one allows nothing there, a denied one is covered by its directory's entry or the
/// default (a deny too long to store under an allowed directory is the one case that widens; no
/// file name reaches 250 bytes in practice).
fn loader_key(generation: u32, path: &str) -> Option<Key<LoaderPath>> {
    let bytes = path.as_bytes();
    let stored = if path.ends_with('/') { bytes.len() } else { bytes.len() + 1 };
    if stored > LOADER_PATH_LEN || bytes.contains(&0) {
        return None;
    }
    let mut data = LoaderPath { generation, ..LoaderPath::default() };
    data.path[..bytes.len()].copy_from_slice(bytes);
    let bits = u32::try_from(32 + 8 * stored).ok()?;
    Some(Key::new(bits, data))
}

const fn inode_key(generation: u32, id: FileId) -> InodeKey {
    InodeKey { generation, pad: 0, dev: id.dev, ino: id.ino }
}

const fn applet_key(generation: u32, name: [u8; sentra_common::exec::NAME_LEN]) -> AppletKey {
    AppletKey { generation, pad: 0, name }
}

const fn multicall_key(generation: u32, binary: &MulticallBinary) -> InodeKey {
    InodeKey { generation, pad: 0, dev: binary.dev, ino: binary.ino }
}

/// `EXEC_MULTICALL`'s value for a dispatcher name (the stems are short constants).
fn multicall_value(stem: &str) -> MultiCall {
    let mut value = MultiCall::default();
    let len = stem.len().min(value.stem.len());
    value.stem[..len].copy_from_slice(&stem.as_bytes()[..len]);
    value.stem_len = u32::try_from(len).unwrap_or(0);
    value
}

const fn name_key(generation: u32, dir: FileId, name: [u8; sentra_common::exec::NAME_LEN]) -> NameKey {
    NameKey { generation, pad: 0, dir_dev: dir.dev, dir_ino: dir.ino, name }
}

/// Makes `generation` the deciding one, in one map update (a single 8-byte value): every later
/// decision uses it entirely, none mixes generations.
///
/// # Errors
/// The map cannot be updated.
pub fn activate<S: MapStore + ?Sized>(
    ebpf: &mut S,
    generation: u32,
    backend: Backend,
) -> Result<(), KernelError> {
    let value = ActiveGeneration { generation, backend: backend as u32 };
    array::<ActiveGeneration, S>(ebpf, ACTIVE_GENERATION)?
        .set(0, value, 0)
        .map_err(map_err(ACTIVE_GENERATION))
}

/// Governs a cgroup (and its descendants). `net_profile`: the launch profile whose network policy
/// decides its network (`sentra_common::net::profile_id`), 0 for the `network:` section.
///
/// # Errors
/// The map cannot be updated.
pub fn govern<S: MapStore + ?Sized>(
    ebpf: &mut S,
    cgroup_id: u64,
    level: u32,
    net_profile: u32,
) -> Result<(), KernelError> {
    hash::<u64, GovernedCgroup, S>(ebpf, GOVERNED)?
        .insert(cgroup_id, GovernedCgroup { level, net_profile }, 0)
        .map_err(map_err(GOVERNED))
}

/// Stops governing a cgroup.
///
/// # Errors
/// The map cannot be updated.
pub fn release<S: MapStore + ?Sized>(ebpf: &mut S, cgroup_id: u64) -> Result<(), KernelError> {
    hash::<u64, GovernedCgroup, S>(ebpf, GOVERNED)?.remove(&cgroup_id).map_err(map_err(GOVERNED))
}

/// Cgroups in `GOVERNED`.
///
/// # Errors
/// The map cannot be read.
pub fn governed<S: MapStore + ?Sized>(ebpf: &mut S) -> Result<Vec<(u64, GovernedCgroup)>, KernelError> {
    Ok(hash::<u64, GovernedCgroup, S>(ebpf, GOVERNED)?.iter().filter_map(Result::ok).collect())
}

/// Makes `tgid` the one protected process (no signal or ptrace from governed tasks) and `files` the
/// protected files (no write, truncation, removal or renaming), replacing what was there: a
/// controller that adopts pins protects itself, not its dead predecessor.
///
/// # Errors
/// A map cannot be read or updated.
pub fn protect<S: MapStore + ?Sized>(ebpf: &mut S, tgid: u32, files: &[FileKey]) -> Result<(), KernelError> {
    let mut processes = hash::<u32, u32, S>(ebpf, PROTECTED)?;
    let old: Vec<u32> = processes.keys().filter_map(Result::ok).filter(|&pid| pid != tgid).collect();
    processes.insert(tgid, 1, 0).map_err(map_err(PROTECTED))?;
    for pid in old {
        processes.remove(&pid).map_err(map_err(PROTECTED))?;
    }
    let mut protected = hash::<FileKey, u32, S>(ebpf, PROTECTED_FILES)?;
    let stale: Vec<FileKey> =
        protected.keys().filter_map(Result::ok).filter(|k| !files.contains(k)).collect();
    for file in files {
        protected.insert(*file, 1, 0).map_err(map_err(PROTECTED_FILES))?;
    }
    for file in stale {
        protected.remove(&file).map_err(map_err(PROTECTED_FILES))?;
    }
    Ok(())
}
