//! Keys and values of the network maps, and the network event.
//!
//! Every destination is decided on (generation, family, address, port, protocol):
//! - `NET_CIDR` (LPM trie): CIDR entries of the policy. Each trie node's value already holds the port
//!   ranges of every policy entry whose CIDR covers it (userspace merges them at compile time), so one
//!   longest-prefix lookup answers, whatever the number of entries.
//! - `NET_HOSTS` (hash): single addresses learned by the controller's resolver for domain rules, for
//!   their TTL.
//!
//! Addresses are kept as 16 bytes in network order; an IPv4 address uses the first 4 (the rest zero).
//! An IPv4-mapped IPv6 destination (`::ffff:a.b.c.d`) is decided as the IPv4 address it is.

/// Port ranges one map value holds. Compile-time merging refuses a policy that needs more for one
/// prefix (with an error naming it), so the probes' loop over them is bounded.
pub const MAX_PORT_RANGES: usize = 8;

/// Bits of [`PortRange::protocols`].
pub mod proto {
    pub const TCP: u32 = 1 << 0;
    pub const UDP: u32 = 1 << 1;
}

/// Address family values of [`CidrKey::family`] and [`NetEvent::family`].
pub const FAMILY_V4: u32 = 4;
pub const FAMILY_V6: u32 = 6;

/// Rule index: no entry allowed the destination (default deny).
pub const NET_RULE_DEFAULT: u32 = u32::MAX;
/// Rule index: the probe failed (no settings for the generation) and decided closed.
pub const NET_RULE_INTERNAL_ERROR: u32 = u32::MAX - 1;
/// Rule index: allowed by the loopback switch.
pub const NET_RULE_LOOPBACK: u32 = u32::MAX - 3;
/// Rule index: a DNS query (port 53) steered to the controller's resolver.
pub const NET_RULE_DNS_STEERED: u32 = u32::MAX - 4;
/// Rule index: the cgroup was launched with a profile whose network policy the active generation
/// does not hold (the profile was removed by a reload): everything is denied (fail closed).
pub const NET_RULE_UNKNOWN_PROFILE: u32 = u32::MAX - 5;
/// Rule index: a DNS query from a network namespace other than the resolver's (an agent in a
/// container while the controller runs on the host): it cannot be steered, so it is refused.
pub const NET_RULE_DNS_NETNS: u32 = u32::MAX - 6;

/// Network scopes: which allowlist governs a cgroup. Scope 0 is the policy's `network:` section; scope
/// `i + 1` is the launch profile in `NetSettings::profiles[i]`. Each port range carries the scopes it
/// belongs to as a bit mask, so one lookup serves every scope.
pub const MAX_NET_PROFILES: usize = 15;
/// Scope bit of the `network:` section.
pub const SCOPE_SECTION: u32 = 1;

/// The id of a launch profile in `GovernedCgroup::net_profile` and `NetSettings::profiles`: FNV-1a of
/// its name, never 0 (0 means no profile). Stable across reloads and controller restarts, so a
/// launched cgroup keeps its allowlist when the policy is reloaded.
#[must_use]
pub const fn profile_id(name: &[u8]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < name.len() {
        hash ^= name[i] as u32;
        hash = hash.wrapping_mul(0x0100_0193);
        i += 1;
    }
    if hash == 0 { 1 } else { hash }
}

/// Data of a `NET_CIDR` key (the trie's key is `{prefix_len, data}`); `prefix_len` always covers
/// `generation` and `family` (64 bits) plus the CIDR's own length.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CidrKey {
    pub generation: u32,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u32,
    /// Network order; IPv4 in the first 4 bytes.
    pub addr: [u8; 16],
}

/// Bits of a [`CidrKey`] before the address: generation and family.
pub const CIDR_KEY_HEADER_BITS: u32 = 64;

/// Key of `NET_HOSTS`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct HostKey {
    pub generation: u32,
    pub family: u32,
    pub addr: [u8; 16],
}

/// One allowed (protocols, port range) of a rule.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PortRange {
    /// Index of the network rule in its generation.
    pub rule: u32,
    /// Bits of [`proto`].
    pub protocols: u32,
    /// Inclusive, host order.
    pub first: u16,
    pub last: u16,
    /// The scopes this range allows in (bit 0: [`SCOPE_SECTION`]; bit `i + 1`: `profiles[i]`).
    pub scopes: u32,
}

/// Value of `NET_CIDR` and `NET_HOSTS`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NetAllow {
    /// Valid entries in `ranges`.
    pub count: u32,
    pub pad: u32,
    pub ranges: [PortRange; MAX_PORT_RANGES],
}

/// Value of `NET_SETTINGS[generation]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NetSettings {
    /// Non-zero once userspace has filled this generation completely; a governed task whose active
    /// generation is not loaded is denied (fail closed).
    pub loaded: u32,
    /// Non-zero when the policy has a `network:` section; without one, the network is not governed.
    pub governed: u32,
    /// [`crate::settings::Mode`] as `u32`.
    pub mode: u32,
    /// Non-zero: every loopback destination (127.0.0.0/8, `::1`) is allowed.
    pub loopback: u32,
    /// Non-zero: port-53 traffic is steered to the resolver below.
    pub dns_steer: u32,
    /// The resolver's port, host order.
    pub resolver_port: u32,
    /// The resolver's IPv4 address as `bpf_sock_addr::user_ip4` holds it (network order in memory).
    pub resolver_ip4: u32,
    /// Non-zero when `resolver_ip6` is set (the resolver also listens on IPv6 loopback).
    pub resolver_has_ip6: u32,
    /// As `bpf_sock_addr::user_ip6` holds it.
    pub resolver_ip6: [u32; 4],
    /// The cookie of the network namespace the resolver listens in (`SO_NETNS_COOKIE`; 0: unknown,
    /// not checked). A query from another namespace cannot reach it there: it is refused at once,
    /// with an event, instead of being steered to a loopback where no one answers.
    pub resolver_netns: u64,
    /// Launch profiles with a network policy in this generation ([`profile_id`]s; 0: unused slot).
    pub profiles: [u32; MAX_NET_PROFILES],
    /// Scope bits (as in [`PortRange::scopes`]) of the profiles that allow every loopback destination.
    pub profile_loopback: u32,
}

/// Original destination of a steered DNS socket, keyed by socket cookie in `NET_DNS_ORIGIN`, so that
/// replies appear to come from the server the client addressed (resolvers such as glibc's drop
/// replies from any other source).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DnsOrigin {
    /// [`FAMILY_V4`] or [`FAMILY_V6`] of the socket's sockaddr.
    pub family: u32,
    /// Port as `user_port` holds it (network order in the low 16 bits).
    pub port: u32,
    /// As `user_ip4` (first word) or `user_ip6` holds it.
    pub addr: [u32; 4],
}

/// Indexes of `NET_STATS` (a per-CPU array of `u64` counters).
pub mod stats {
    /// Destinations decided for governed tasks.
    pub const DECISIONS: u32 = 0;
    /// Destinations denied (or would-deny in audit mode).
    pub const DENIED: u32 = 1;
    /// DNS packets and connects steered to the resolver.
    pub const DNS_STEERED: u32 = 2;
    /// Probe failures (each one failed closed).
    pub const ERRORS: u32 = 3;
    pub const COUNT: u32 = 4;
}
