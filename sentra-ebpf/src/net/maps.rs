//! Network maps, named as `sentra_common::names::map` says (checked at build time). Events go through the
//! shared `EVENTS` ring buffer; the generation switch is the shared `ACTIVE_GENERATION`.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray},
};
use sentra_common::{
    net::{CidrKey, DnsOrigin, HostKey, NetAllow, NetSettings, stats},
    settings::GENERATIONS,
};

/// Network settings per generation.
#[map]
pub static NET_SETTINGS: Array<NetSettings> = Array::with_max_entries(GENERATIONS, 0);
sentra_common::same_name!(sentra_common::names::map::NET_SETTINGS, NET_SETTINGS);

/// CIDR entries of both generations (the key starts with the generation). Sized for two generations of
/// a 10,000-entry policy plus the sub-prefixes that compile-time merging adds.
#[map]
pub static NET_CIDR: LpmTrie<CidrKey, NetAllow> = LpmTrie::with_max_entries(65536, BPF_F_NO_PREALLOC);
sentra_common::same_name!(sentra_common::names::map::NET_CIDR, NET_CIDR);

/// Addresses the resolver learned for domain rules, while their TTL lasts.
#[map]
pub static NET_HOSTS: HashMap<HostKey, NetAllow> = HashMap::with_max_entries(65536, BPF_F_NO_PREALLOC);
sentra_common::same_name!(sentra_common::names::map::NET_HOSTS, NET_HOSTS);

/// Original destination of steered DNS sockets, by socket cookie (LRU: sockets are never announced
/// closed to these programs, so old entries must age out on their own).
#[map]
pub static NET_DNS_ORIGIN: LruHashMap<u64, DnsOrigin> = LruHashMap::with_max_entries(16384, 0);
sentra_common::same_name!(sentra_common::names::map::NET_DNS_ORIGIN, NET_DNS_ORIGIN);

/// Counters (see `sentra_common::net::stats`).
#[map]
pub static NET_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stats::COUNT, 0);
sentra_common::same_name!(sentra_common::names::map::NET_STATS, NET_STATS);

/// Adds one to a counter in `NET_STATS`.
#[inline(always)]
pub fn count(index: u32) {
    if let Some(ptr) = NET_STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot; BPF programs are not preempted on the same CPU within one run.
        unsafe { *ptr += 1 };
    }
}
