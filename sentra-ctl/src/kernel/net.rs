//! Network governance in the kernel: writing network generations, and the resolver's address table.

use std::net::{Ipv4Addr, Ipv6Addr};

use aya::maps::{
    Array, HashMap, Map, MapData,
    lpm_trie::{Key, LpmTrie},
};
use sentra_common::{
    names::map::{NET_CIDR, NET_HOSTS, NET_SETTINGS, NET_STATS},
    net::{CIDR_KEY_HEADER_BITS, CidrKey, HostKey, NetAllow, NetSettings, stats},
    settings::{GENERATIONS, Mode},
};

use super::{
    KernelError,
    store::{MapStore, counters, map_err, typed, typed_mut},
};
use crate::policy::network::CompiledNet;

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
        let mut trie: LpmTrie<&mut MapData, CidrKey, NetAllow> = typed_mut(ebpf, NET_CIDR)?;
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
    for (slot, profile) in settings.profiles.iter_mut().zip(&compiled.profiles) {
        *slot = profile.id;
        if profile.loopback {
            settings.profile_loopback |= profile.scope;
        }
    }
    if let Some(resolver) = resolver.filter(|_| compiled.has_domains()) {
        settings.dns_steer = 1;
        settings.resolver_port = u32::from(resolver.port);
        settings.resolver_netns = own_netns_cookie();
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
    let mut array: Array<&mut MapData, NetSettings> = typed_mut(ebpf, NET_SETTINGS)?;
    array.set(generation, settings, 0).map_err(map_err(NET_SETTINGS))
}

/// The cookie of this process's network namespace, where the resolver listens (`SO_NETNS_COOKIE`,
/// Linux 5.14; 0 before: then the kernel cannot tell other namespaces' queries apart and steers them
/// all). Read once: a process does not change namespace.
#[must_use]
pub fn own_netns_cookie() -> u64 {
    /// `include/uapi/asm-generic/socket.h` (the same on `x86_64` and `aarch64`).
    const SO_NETNS_COOKIE: libc::c_int = 71;
    static COOKIE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *COOKIE.get_or_init(|| {
        let Ok(socket) = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else { return 0 };
        let mut cookie: u64 = 0;
        let mut len = libc::socklen_t::try_from(size_of::<u64>()).unwrap_or(8);
        // SAFETY: getsockopt writes at most `len` bytes into `cookie`, a u64.
        let rc = unsafe {
            libc::getsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&socket),
                libc::SOL_SOCKET,
                SO_NETNS_COOKIE,
                (&raw mut cookie).cast(),
                &raw mut len,
            )
        };
        if rc == 0 { cookie } else { 0 }
    })
}

/// Where `generation` steers DNS to, if it does.
///
/// # Errors
/// The map cannot be read.
pub fn steering<S: MapStore + ?Sized>(
    store: &S,
    generation: u32,
) -> Result<Option<ResolverAddr>, KernelError> {
    let array: Array<&MapData, NetSettings> = typed(store, NET_SETTINGS)?;
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
        let mut array: Array<&mut MapData, NetSettings> = typed_mut(ebpf, NET_SETTINGS)?;
        array.set(generation, NetSettings::default(), 0).map_err(map_err(NET_SETTINGS))?;
    }
    let mut trie: LpmTrie<&mut MapData, CidrKey, NetAllow> = typed_mut(ebpf, NET_CIDR)?;
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
    let [net_decisions, net_denied, dns_steered, net_errors] =
        counters(ebpf, NET_STATS, [stats::DECISIONS, stats::DENIED, stats::DNS_STEERED, stats::ERRORS])?;
    Ok(NetStats { net_decisions, net_denied, dns_steered, net_errors })
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
        let hosts: HashMap<&MapData, HostKey, NetAllow> = typed(store, NET_HOSTS)?;
        let fd = std::os::fd::AsFd::as_fd(aya::maps::IterableMap::map(&hosts).fd())
            .try_clone_to_owned()
            .map_err(|source| KernelError::MapCall { map: NET_HOSTS, what: "dup", source })?;
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
