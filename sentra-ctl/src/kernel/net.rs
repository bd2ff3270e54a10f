//! Network governance in the kernel: attaching the cgroup `sock_addr` programs (and, on the `lsm`
//! backend, `lsm/socket_connect`), writing network generations, and the resolver's address table.
//! Map names are those of `sentra-ebpf/src/net/maps.rs`.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::AsFd,
};

use aya::{
    Btf, Ebpf,
    maps::{
        Array, HashMap, Map, MapData, PerCpuArray,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{CgroupAttachMode, CgroupSockAddr, Lsm, links::FdLink},
};
use sentra_common::{
    net::{CIDR_KEY_HEADER_BITS, CidrKey, HostKey, NetAllow, NetSettings, stats},
    settings::{GENERATIONS, Mode},
};

use super::{KernelError, OwnedLink, maps::MapStore, program_err};
use crate::policy::network::CompiledNet;

pub const NET_SETTINGS: &str = "NET_SETTINGS";
pub const NET_CIDR: &str = "NET_CIDR";
pub const NET_HOSTS: &str = "NET_HOSTS";
pub const NET_DNS_ORIGIN: &str = "NET_DNS_ORIGIN";
pub const NET_STATS: &str = "NET_STATS";

/// The cgroup `sock_addr` programs, by name in the object.
pub const SOCK_ADDR_PROGRAMS: [&str; 6] =
    ["net_connect4", "net_connect6", "net_sendmsg4", "net_sendmsg6", "net_recvmsg4", "net_recvmsg6"];
/// The `lsm` backend's network program.
pub const LSM_PROGRAM: &str = "net_lsm_connect";

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> KernelError {
    move |err| KernelError::Map { map, detail: err.to_string() }
}

fn missing(map: &'static str) -> KernelError {
    KernelError::Map { map, detail: "missing".into() }
}

/// Loads the `sock_addr` programs and attaches them to each governed cgroup (`cgroups`: a name and an
/// open fd of its directory); they then apply to every process in it and in its descendants. The
/// attachments go to `links` as `PROGRAM@NAME` (dropping one detaches its program unless it was pinned).
///
/// # Errors
/// A program missing, failing to load (with the verifier's log) or to attach.
pub fn attach_sock_addr<F: AsFd>(
    ebpf: &mut Ebpf,
    cgroups: &[(&str, F)],
    links: &mut Vec<(String, OwnedLink)>,
) -> Result<(), KernelError> {
    for name in SOCK_ADDR_PROGRAMS {
        let program: &mut CgroupSockAddr = ebpf
            .program_mut(name)
            .ok_or(KernelError::MissingProgram { program: name })?
            .try_into()
            .map_err(|err| KernelError::Load { program: name, detail: format!("{err}") })?;
        program.load().map_err(|err| KernelError::Load { program: name, detail: program_err(&err) })?;
        for (cgroup_name, cgroup) in cgroups {
            let id = program
                // `Single` means flags 0: aya attaches through a BPF link where the kernel has them,
                // and links take no flags (kernel/bpf/cgroup.c `cgroup_bpf_link_attach` returns EINVAL
                // for any) while always coexisting with other programs on the cgroup.
                .attach(cgroup.as_fd(), CgroupAttachMode::Single)
                .map_err(|err| KernelError::Attach { program: name, detail: with_source(&err) })?;
            let link = program
                .take_link(id)
                .map_err(|err| KernelError::Attach { program: name, detail: program_err(&err) })?;
            // A BPF link (kernel 5.7+; the ring buffer already needs 5.8), so that it can be pinned.
            let link = FdLink::try_from(link).map_err(|err| KernelError::Attach {
                program: name,
                detail: format!("not a BPF link: {err}"),
            })?;
            links.push((format!("{name}@{cgroup_name}"), OwnedLink::Fd(link)));
        }
    }
    Ok(())
}

/// An error with its chain of sources (aya's attach errors keep the errno in the source).
fn with_source(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Attaches `lsm/socket_connect` (the `lsm` backend only: the host kernel refuses LSM programs).
///
/// # Errors
/// The program is missing or fails to load or attach.
pub fn attach_lsm(
    ebpf: &mut Ebpf,
    btf: &Btf,
    links: &mut Vec<(String, OwnedLink)>,
) -> Result<(), KernelError> {
    let program: &mut Lsm = ebpf
        .program_mut(LSM_PROGRAM)
        .ok_or(KernelError::MissingProgram { program: LSM_PROGRAM })?
        .try_into()
        .map_err(|err| KernelError::Load { program: LSM_PROGRAM, detail: format!("{err}") })?;
    program
        .load("socket_connect", btf)
        .map_err(|err| KernelError::Load { program: LSM_PROGRAM, detail: program_err(&err) })?;
    let id = program
        .attach()
        .map_err(|err| KernelError::Attach { program: LSM_PROGRAM, detail: program_err(&err) })?;
    let link = program
        .take_link(id)
        .map_err(|err| KernelError::Attach { program: LSM_PROGRAM, detail: program_err(&err) })?;
    links.push((LSM_PROGRAM.to_string(), OwnedLink::Fd(link.into())));
    Ok(())
}

/// Where the controller's resolver listens (steered DNS goes there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolverAddr {
    pub v4: Ipv4Addr,
    pub v6: Option<Ipv6Addr>,
    pub port: u16,
}

fn cidr_key(generation: u32, family: u32, addr: [u8; 16], len: u8) -> Key<CidrKey> {
    Key::new(CIDR_KEY_HEADER_BITS + u32::from(len), CidrKey { generation, family, addr })
}

/// Writes the network part of `generation` (not yet active), replacing whatever it held. Learned
/// addresses (`NET_HOSTS`) are the resolver's business ([`HostTable`]).
///
/// # Errors
/// A map update fails (for instance the trie is full).
pub fn write_generation<S: MapStore + ?Sized>(
    ebpf: &mut S,
    generation: u32,
    compiled: &CompiledNet,
    mode: Mode,
    resolver: Option<ResolverAddr>,
) -> Result<(), KernelError> {
    debug_assert!(generation < GENERATIONS);
    clear_generation(ebpf, generation)?;
    {
        let map = ebpf.map_mut(NET_CIDR).ok_or_else(|| missing(NET_CIDR))?;
        let mut trie: LpmTrie<&mut MapData, CidrKey, NetAllow> =
            LpmTrie::try_from(map).map_err(map_err(NET_CIDR))?;
        for (cidr, allow) in &compiled.cidr {
            trie.insert(&cidr_key(generation, cidr.family, cidr.addr, cidr.len), allow, 0)
                .map_err(map_err(NET_CIDR))?;
        }
    }
    let mut settings = NetSettings {
        loaded: 1,
        governed: u32::from(compiled.governed),
        mode: mode as u32,
        loopback: u32::from(compiled.loopback),
        ..NetSettings::default()
    };
    if let Some(resolver) = resolver.filter(|_| compiled.has_domains()) {
        settings.dns_steer = 1;
        settings.resolver_port = u32::from(resolver.port);
        // user_ip4/user_ip6 hold the address in network order in memory.
        settings.resolver_ip4 = u32::from_ne_bytes(resolver.v4.octets());
        if let Some(v6) = resolver.v6 {
            settings.resolver_has_ip6 = 1;
            let octets = v6.octets();
            for (i, word) in settings.resolver_ip6.iter_mut().enumerate() {
                *word = u32::from_ne_bytes([
                    octets[i * 4],
                    octets[i * 4 + 1],
                    octets[i * 4 + 2],
                    octets[i * 4 + 3],
                ]);
            }
        }
    }
    let map = ebpf.map_mut(NET_SETTINGS).ok_or_else(|| missing(NET_SETTINGS))?;
    let mut array: Array<&mut MapData, NetSettings> = Array::try_from(map).map_err(map_err(NET_SETTINGS))?;
    array.set(generation, settings, 0).map_err(map_err(NET_SETTINGS))
}

/// Where `generation` steers DNS to, if it does.
///
/// # Errors
/// The map cannot be read.
pub fn steering<S: MapStore + ?Sized>(
    store: &S,
    generation: u32,
) -> Result<Option<ResolverAddr>, KernelError> {
    let map = store.map(NET_SETTINGS).ok_or_else(|| missing(NET_SETTINGS))?;
    let array: Array<&MapData, NetSettings> = Array::try_from(map).map_err(map_err(NET_SETTINGS))?;
    let settings = array.get(&generation, 0).map_err(map_err(NET_SETTINGS))?;
    if settings.dns_steer == 0 {
        return Ok(None);
    }
    let v6 = (settings.resolver_has_ip6 != 0).then(|| {
        let mut octets = [0u8; 16];
        for (i, word) in settings.resolver_ip6.iter().enumerate() {
            octets[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
        }
        Ipv6Addr::from(octets)
    });
    Ok(Some(ResolverAddr {
        v4: Ipv4Addr::from(settings.resolver_ip4.to_ne_bytes()),
        v6,
        port: u16::try_from(settings.resolver_port).unwrap_or(0),
    }))
}

/// Removes every CIDR entry of `generation` and marks its network settings unloaded.
///
/// # Errors
/// A map cannot be read or updated.
pub fn clear_generation<S: MapStore + ?Sized>(ebpf: &mut S, generation: u32) -> Result<(), KernelError> {
    {
        let map = ebpf.map_mut(NET_SETTINGS).ok_or_else(|| missing(NET_SETTINGS))?;
        let mut array: Array<&mut MapData, NetSettings> =
            Array::try_from(map).map_err(map_err(NET_SETTINGS))?;
        array.set(generation, NetSettings::default(), 0).map_err(map_err(NET_SETTINGS))?;
    }
    let map = ebpf.map_mut(NET_CIDR).ok_or_else(|| missing(NET_CIDR))?;
    let mut trie: LpmTrie<&mut MapData, CidrKey, NetAllow> =
        LpmTrie::try_from(map).map_err(map_err(NET_CIDR))?;
    let stale: Vec<Key<CidrKey>> =
        trie.keys().filter_map(Result::ok).filter(|k| k.data().generation == generation).collect();
    for key in stale {
        trie.remove(&key).map_err(map_err(NET_CIDR))?;
    }
    Ok(())
}

/// Network counters summed over CPUs.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct NetStats {
    pub net_decisions: u64,
    pub net_denied: u64,
    pub dns_steered: u64,
    pub net_errors: u64,
}

/// Reads `NET_STATS`.
///
/// # Errors
/// The map cannot be read.
pub fn read_stats<S: MapStore + ?Sized>(ebpf: &S) -> Result<NetStats, KernelError> {
    let map = ebpf.map(NET_STATS).ok_or_else(|| missing(NET_STATS))?;
    let counters: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map).map_err(map_err(NET_STATS))?;
    let sum = |index: u32| -> Result<u64, KernelError> {
        Ok(counters.get(&index, 0).map_err(map_err(NET_STATS))?.iter().sum())
    };
    Ok(NetStats {
        net_decisions: sum(stats::DECISIONS)?,
        net_denied: sum(stats::DENIED)?,
        dns_steered: sum(stats::DNS_STEERED)?,
        net_errors: sum(stats::ERRORS)?,
    })
}

/// `NET_HOSTS` through a handle of the resolver's own (a second fd on the same kernel map), so that
/// the resolver's tasks can own it while the controller keeps, pins and reloads the rest.
pub struct HostTable {
    map: HashMap<MapData, HostKey, NetAllow>,
}

impl HostTable {
    /// Opens `NET_HOSTS` of the loaded object or of the pinned maps.
    ///
    /// # Errors
    /// The map is missing, of the wrong type, or its fd cannot be duplicated.
    pub fn open<S: MapStore + ?Sized>(store: &S) -> Result<Self, KernelError> {
        let map = store.map(NET_HOSTS).ok_or_else(|| missing(NET_HOSTS))?;
        let hosts: HashMap<&MapData, HostKey, NetAllow> =
            HashMap::try_from(map).map_err(map_err(NET_HOSTS))?;
        let fd = std::os::fd::AsFd::as_fd(aya::maps::IterableMap::map(&hosts).fd())
            .try_clone_to_owned()
            .map_err(|err| KernelError::Map { map: NET_HOSTS, detail: format!("dup: {err}") })?;
        let data = MapData::from_fd(fd).map_err(map_err(NET_HOSTS))?;
        let map = Map::from_map_data(data).map_err(map_err(NET_HOSTS))?;
        Ok(Self { map: HashMap::try_from(map).map_err(map_err(NET_HOSTS))? })
    }

    /// Allows `addr` (16-byte map form, see `policy::network::addr_bytes`) in `generation`.
    ///
    /// # Errors
    /// The map is full or the update fails.
    pub fn insert(
        &mut self,
        generation: u32,
        family: u32,
        addr: [u8; 16],
        allow: &NetAllow,
    ) -> Result<(), KernelError> {
        self.map.insert(HostKey { generation, family, addr }, allow, 0).map_err(map_err(NET_HOSTS))
    }

    /// Stops allowing `addr` in `generation` (absent is not an error).
    ///
    /// # Errors
    /// The update fails for another reason.
    pub fn remove(&mut self, generation: u32, family: u32, addr: [u8; 16]) -> Result<(), KernelError> {
        match self.map.remove(&HostKey { generation, family, addr }) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(aya::maps::MapError::SyscallError(aya::sys::SyscallError { io_error, .. }))
                if io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(())
            }
            Err(err) => Err(map_err(NET_HOSTS)(err)),
        }
    }

    /// Every key of `generation` (for clearing a retired generation).
    #[must_use]
    pub fn keys_of(&self, generation: u32) -> Vec<HostKey> {
        self.map.keys().filter_map(Result::ok).filter(|k| k.generation == generation).collect()
    }
}
