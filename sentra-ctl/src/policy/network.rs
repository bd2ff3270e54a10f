//! The `network:` policy section: outbound destinations governed in the kernel.
//!
//! ```yaml
//! network:
//!   loopback: false            # true: every 127.0.0.0/8 and ::1 destination is allowed
//!   dns:                       # only needed with domain entries
//!     upstream: ["10.0.0.53:53"] # default: the nameservers of /etc/resolv.conf
//!     ttl_min: 30              # seconds an answered address stays allowed at least…
//!     ttl_max: 3600            # …and at most
//!     timeout_ms: 2000         # per upstream attempt; then SERVFAIL
//!   allow:
//!     - { id: wa_net, domain: "*.whatsapp.net", ports: [443] }
//!     - { id: lan_api, cidr: 10.1.0.0/16, ports: ["8000-8100", 9000], protocol: any }
//! ```
//!
//! Default deny: a destination no entry covers is refused. `protocol` is `tcp` (default), `udp` or
//! `any`; `ports` defaults to every port. `*.example.com` matches every name below example.com, not
//! example.com itself.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use sentra_common::net::{
    FAMILY_V4, FAMILY_V6, MAX_NET_PROFILES, MAX_PORT_RANGES, NetAllow, PortRange, SCOPE_SECTION, profile_id,
    proto,
};
use serde::{Deserialize, Serialize};

use super::{Policy, PolicyError};

/// `network:`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    /// Allow every loopback destination (127.0.0.0/8, `::1`).
    #[serde(default)]
    pub loopback: bool,
    pub dns: Option<DnsSection>,
    #[serde(default)]
    pub allow: Vec<NetEntry>,
}

/// `network.dns:`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DnsSection {
    /// `ip:port` or `ip` (port 53) of the real resolvers; default: `/etc/resolv.conf`.
    #[serde(default)]
    pub upstream: Vec<String>,
    pub ttl_min: Option<u32>,
    pub ttl_max: Option<u32>,
    pub timeout_ms: Option<u64>,
}

/// One allowed destination: exactly one of `cidr` and `domain`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NetEntry {
    pub id: String,
    /// `10.0.0.0/8`, `fd00::/8`, or a single address.
    pub cidr: Option<String>,
    /// `api.example.com` or `*.example.com`, optionally with `:port`.
    pub domain: Option<String>,
    /// Ports and ranges (`443`, `"8000-8100"`); default: all.
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    pub protocol: Option<Protocol>,
    pub reason: Option<String>,
    /// As `exec.allow[].expires`: lapses at this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

/// A port or an inclusive range.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum PortSpec {
    Number(u16),
    Text(String),
}

/// `tcp`, `udp` or `any`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Any,
}

impl Protocol {
    const fn bits(self) -> u32 {
        match self {
            Self::Tcp => proto::TCP,
            Self::Udp => proto::UDP,
            Self::Any => proto::TCP | proto::UDP,
        }
    }
}

/// A CIDR, normalised: `addr` in network order, IPv4 in the first 4 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub family: u32,
    pub addr: [u8; 16],
    pub len: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`, `x::y/n` or a bare address.
    ///
    /// # Errors
    /// Not an address, a length out of range, or host bits set.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (ip, len) = match text.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (text, None),
        };
        let ip: IpAddr = ip.trim().parse().map_err(|_| format!("`{text}` is not an IP address or CIDR"))?;
        let (family, max) = if ip.is_ipv4() { (FAMILY_V4, 32u8) } else { (FAMILY_V6, 128u8) };
        let len = match len {
            Some(len) => len
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("`{text}`: prefix length must be 0..={max}"))?,
            None => max,
        };
        let addr = addr_bytes(ip);
        let cidr = Self { family, addr, len };
        if cidr.masked(len) != cidr {
            let fixed = cidr.masked(len);
            return Err(format!("`{text}` has host bits set; did you mean {fixed}?"));
        }
        Ok(cidr)
    }

    /// This CIDR's address cut to `len` bits.
    #[must_use]
    pub fn masked(&self, len: u8) -> Self {
        let mut addr = [0u8; 16];
        for (i, byte) in self.addr.iter().enumerate() {
            let start = i * 8;
            let keep = usize::from(len).saturating_sub(start).min(8);
            let mask = if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
            addr[i] = byte & mask;
        }
        Self { family: self.family, addr, len }
    }

    /// The address as `IpAddr`.
    #[must_use]
    pub fn ip(&self) -> IpAddr {
        if self.family == FAMILY_V4 {
            IpAddr::from([self.addr[0], self.addr[1], self.addr[2], self.addr[3]])
        } else {
            IpAddr::from(self.addr)
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.ip(), self.len)
    }
}

/// An address as the maps hold it: 16 bytes, IPv4 (also IPv4-mapped IPv6) in the first 4.
#[must_use]
pub fn addr_bytes(ip: IpAddr) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => bytes[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => bytes[..4].copy_from_slice(&v4.octets()),
            None => bytes = v6.octets(),
        },
    }
    bytes
}

/// The map family of an address (IPv4-mapped IPv6 counts as IPv4, as the probes decide it).
#[must_use]
pub fn family_of(ip: IpAddr) -> u32 {
    match ip {
        IpAddr::V4(_) => FAMILY_V4,
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => FAMILY_V4,
        IpAddr::V6(_) => FAMILY_V6,
    }
}

/// A domain pattern: an exact name, or `*.` and a suffix (any name below it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainPattern {
    Exact(String),
    Below(String),
}

impl DomainPattern {
    /// Parses a pattern (case-insensitive, a trailing dot is ignored).
    ///
    /// # Errors
    /// Empty labels, characters outside letters, digits, `-` and `_`, or a `*` other than a leading
    /// `*.`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let lower = text.trim().trim_end_matches('.').to_ascii_lowercase();
        let (wild, rest) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, lower.clone()),
        };
        if rest.is_empty() || rest.len() > 253 {
            return Err(format!("`{text}` is not a domain name"));
        }
        for label in rest.split('.') {
            if label.is_empty()
                || label.len() > 63
                || !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(format!(
                    "`{text}`: label `{label}` is not valid (letters, digits, `-`, `_`; `*` only as a leading `*.`)"
                ));
            }
        }
        Ok(if wild { Self::Below(rest) } else { Self::Exact(rest) })
    }

    /// Whether `name` (lower case, no trailing dot) matches.
    #[must_use]
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Self::Exact(exact) => name == exact,
            Self::Below(suffix) => {
                name.len() > suffix.len() + 1
                    && name.ends_with(suffix.as_str())
                    && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
            }
        }
    }
}

impl std::fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Below(suffix) => write!(f, "*.{suffix}"),
        }
    }
}

/// A compiled network rule (its index is what the kernel reports).
#[derive(Debug, Clone)]
pub struct NetRule {
    pub id: String,
    pub reason: Option<String>,
    /// The CIDR or domain pattern, for messages.
    pub target: String,
}

/// A domain rule for the resolver.
#[derive(Debug, Clone)]
pub struct DomainRule {
    pub pattern: DomainPattern,
    pub rule: u32,
    pub ranges: Vec<PortRange>,
}

/// Resolver settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Empty: read `/etc/resolv.conf` when the resolver starts.
    pub upstream: Vec<SocketAddr>,
    pub ttl_min: Duration,
    pub ttl_max: Duration,
    pub timeout: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            upstream: Vec::new(),
            ttl_min: Duration::from_secs(30),
            ttl_max: Duration::from_hours(1),
            timeout: Duration::from_secs(2),
        }
    }
}

/// The network section compiled for the kernel and the resolver.
#[derive(Debug, Clone, Default)]
pub struct CompiledNet {
    /// False without a `network:` section: the network is then not governed.
    pub governed: bool,
    pub loopback: bool,
    /// The `network:` section's rules first, then the launch profiles'.
    pub rules: Vec<NetRule>,
    /// How many of `rules` are the section's.
    pub section_rules: usize,
    /// One trie entry per distinct prefix, holding the ranges of every entry covering it.
    pub cidr: Vec<(Cidr, NetAllow)>,
    pub domains: Vec<DomainRule>,
    pub dns: DnsConfig,
    /// Launch profiles with a network policy, each a scope of its own.
    pub profiles: Vec<NetProfile>,
    /// `mode: audit`: the resolver answers names no rule allows too (recording `auditonly`), as the
    /// kernel lets the connections through, so that an audited agent behaves as it would unguarded.
    pub audit: bool,
}

impl CompiledNet {
    #[must_use]
    pub fn rule(&self, index: u32) -> Option<&NetRule> {
        self.rules.get(usize::try_from(index).ok()?)
    }

    /// Whether DNS must be steered to the resolver (the policy has domain rules).
    #[must_use]
    pub fn has_domains(&self) -> bool {
        !self.domains.is_empty()
    }

    /// Whether the `network:` section itself has domain rules (not only the launch profiles).
    #[must_use]
    pub fn section_domains(&self) -> bool {
        self.domains.iter().any(|d| (d.rule as usize) < self.section_rules)
    }

    /// The domain rules matching `name` (lower case, no trailing dot).
    pub fn matching_domains<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a DomainRule> + 'a {
        self.domains.iter().filter(move |d| d.pattern.matches(name))
    }
}

/// Packs ranges into a map value.
///
/// # Errors
/// More than `MAX_PORT_RANGES` ranges.
pub fn pack(ranges: &[PortRange]) -> Result<NetAllow, usize> {
    if ranges.len() > MAX_PORT_RANGES {
        return Err(ranges.len());
    }
    let mut allow = NetAllow::default();
    allow.ranges[..ranges.len()].copy_from_slice(ranges);
    allow.count = u32::try_from(ranges.len()).unwrap_or(0);
    Ok(allow)
}

fn parse_ports(specs: &[PortSpec]) -> Result<Vec<(u16, u16)>, String> {
    if specs.is_empty() {
        return Ok(vec![(0, u16::MAX)]);
    }
    let mut out = Vec::new();
    for spec in specs {
        let range = match spec {
            PortSpec::Number(port) => (*port, *port),
            PortSpec::Text(text) => {
                let number =
                    |s: &str| s.trim().parse::<u16>().map_err(|_| format!("`{text}` is not a port or range"));
                if let Some((a, b)) = text.split_once('-') {
                    (number(a)?, number(b)?)
                } else {
                    let port = number(text)?;
                    (port, port)
                }
            }
        };
        if range.0 > range.1 {
            return Err(format!("port range {}-{} is empty", range.0, range.1));
        }
        out.push(range);
    }
    Ok(out)
}

fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>()
        .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| format!("dns.upstream `{text}` is not `ip`, `ip:port` or `[ip6]:port`"))
}

/// Compiles `network.dns`.
fn compile_dns(dns: &DnsSection) -> Result<DnsConfig, String> {
    let mut config = DnsConfig::default();
    for upstream in &dns.upstream {
        config.upstream.push(parse_socket_addr(upstream)?);
    }
    if let Some(min) = dns.ttl_min {
        config.ttl_min = Duration::from_secs(u64::from(min));
    }
    if let Some(max) = dns.ttl_max {
        config.ttl_max = Duration::from_secs(u64::from(max));
    }
    if config.ttl_min > config.ttl_max {
        return Err(format!("dns.ttl_min ({:?}) exceeds dns.ttl_max ({:?})", config.ttl_min, config.ttl_max));
    }
    if config.ttl_max > Duration::from_hours(24) {
        return Err("dns.ttl_max is capped at 86400 seconds".into());
    }
    if let Some(ms) = dns.timeout_ms {
        if !(10..=30_000).contains(&ms) {
            return Err(format!("dns.timeout_ms {ms} is outside 10..=30000"));
        }
        config.timeout = Duration::from_millis(ms);
    }
    Ok(config)
}

/// A launch profile's network scope: its `network_policy` (the nearest in its `extends` chain) is the
/// allowlist of every cgroup launched with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetProfile {
    pub name: String,
    /// [`sentra_common::net::profile_id`] of the name.
    pub id: u32,
    /// Its bit in [`PortRange::scopes`].
    pub scope: u32,
    pub loopback: bool,
}

/// Compiles `network:` and the launch profiles' `network_policy` lists.
///
/// # Errors
/// Invalid entries (named by id), duplicate ids, too many port ranges on one prefix, more than
/// `MAX_NET_PROFILES` profiles with a network policy.
pub fn compile(policy: &Policy) -> Result<CompiledNet, PolicyError> {
    let section = policy.model.network.as_ref();
    let profiles = profile_policies(policy);
    if section.is_none() && profiles.is_empty() {
        return Ok(CompiledNet::default());
    }
    let mut out = CompiledNet {
        governed: section.is_some(),
        loopback: section.is_some_and(|s| s.loopback),
        audit: policy.model.mode == super::model::Mode::Audit,
        ..CompiledNet::default()
    };
    if let Some(dns) = section.and_then(|s| s.dns.as_ref()) {
        out.dns = compile_dns(dns).map_err(|m| policy.error_at("network.dns", format!("network: {m}")))?;
    }
    // Ranges of each CIDR as written, before merging.
    let mut by_cidr: BTreeMap<Cidr, Vec<PortRange>> = BTreeMap::new();
    if let Some(section) = section {
        let mut ids = BTreeSet::new();
        for (i, entry) in section.allow.iter().enumerate() {
            let site = Site { policy, path: format!("network.allow[{i}]"), fields: true, id: &entry.id };
            if !ids.insert(entry.id.as_str()) {
                return Err(site.error(".id", "duplicate id"));
            }
            add_entry(&mut out, &mut by_cidr, entry, &site, SCOPE_SECTION)?;
        }
    }
    out.section_rules = out.rules.len();
    for (index, (name, origin, network)) in profiles.iter().enumerate() {
        let at = format!("seccomp_profiles.{origin}.network_policy");
        if index >= MAX_NET_PROFILES {
            return Err(policy.error_at(
                &at,
                format!(
                    "at most {MAX_NET_PROFILES} launch profiles may have a network_policy (their own or inherited); `{name}` is one too many"
                ),
            ));
        }
        let scope = 1u32 << (index + 1);
        out.profiles.push(NetProfile {
            name: (*name).to_string(),
            id: profile_id(name.as_bytes()),
            scope,
            loopback: network.allow_loopback,
        });
        for (j, target) in network.allow_outbound.iter().enumerate() {
            let entry = outbound_entry(name, j, target);
            let site =
                Site { policy, path: format!("{at}.allow_outbound[{j}]"), fields: false, id: &entry.id };
            add_entry(&mut out, &mut by_cidr, &entry, &site, scope)?;
        }
    }

    out.cidr = merge_cidrs(&by_cidr).map_err(|m| policy.error_at("network", format!("network: {m}")))?;
    if out.has_domains() && out.dns.upstream.is_empty() {
        out.dns.upstream = system_resolvers();
    }
    Ok(out)
}

/// Every launch profile with a network policy of its own or inherited through `extends`: (name,
/// the profile that wrote the policy, the policy), in name order.
fn profile_policies(policy: &Policy) -> Vec<(&str, &str, &super::model::NetworkPolicy)> {
    let profiles = &policy.model.seccomp_profiles;
    profiles
        .keys()
        .filter_map(|name| {
            let mut current = name.as_str();
            // Cycles are rejected when the policy is loaded; the bound only keeps a bug finite.
            for _ in 0..=profiles.len() {
                let profile = profiles.get(current)?;
                if let Some(network) = &profile.network_policy {
                    return Some((name.as_str(), current, network));
                }
                current = profile.extends.as_deref()?;
            }
            None
        })
        .collect()
}

/// An `allow_outbound` item (`"*.whatsapp.net:443"`, `"10.0.0.0/8"`, `"10.1.2.3:8080"`) as a network
/// entry: an address or CIDR with an optional port, else a domain with an optional port.
fn outbound_entry(profile: &str, index: usize, target: &str) -> NetEntry {
    let id = format!("{profile}.network_policy[{index}]");
    let entry = |cidr: Option<String>, domain: Option<String>, ports: Vec<PortSpec>| NetEntry {
        id: id.clone(),
        cidr,
        domain,
        ports,
        protocol: None,
        reason: Some(format!("seccomp profile `{profile}` allows {target}")),
        expires: None,
    };
    if Cidr::parse(target).is_ok() {
        return entry(Some(target.to_string()), None, Vec::new());
    }
    if let Some((host, port)) = target.rsplit_once(':')
        && Cidr::parse(host.trim_start_matches('[').trim_end_matches(']')).is_ok()
    {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        return entry(Some(host.to_string()), None, vec![PortSpec::Text(port.to_string())]);
    }
    entry(None, Some(target.to_string()), Vec::new())
}

/// Where an entry is written, for errors.
struct Site<'a> {
    policy: &'a Policy,
    /// `network.allow[2]` or `seccomp_profiles.x.network_policy.allow_outbound[0]`.
    path: String,
    /// Whether the entry has fields of its own to point at (a map, not a string).
    fields: bool,
    id: &'a str,
}

impl Site<'_> {
    fn error(&self, field: &str, message: &str) -> PolicyError {
        let path = if self.fields { format!("{}{field}", self.path) } else { self.path.clone() };
        self.policy.error_at(&path, format!("network: allow `{}`: {message}", self.id))
    }
}

/// Compiles one entry into `out` (its rule, and its ranges in `by_cidr` or as a domain rule), allowed
/// in the scopes `scopes`.
fn add_entry(
    out: &mut CompiledNet,
    by_cidr: &mut BTreeMap<Cidr, Vec<PortRange>>,
    entry: &NetEntry,
    site: &Site<'_>,
    scopes: u32,
) -> Result<(), PolicyError> {
    let rule = u32::try_from(out.rules.len()).map_err(|_| site.error("", "too many rules"))?;
    let protocols = entry.protocol.unwrap_or_default().bits();
    let mut specs = entry.ports.clone();
    let range = |(first, last): (u16, u16)| PortRange { rule, protocols, first, last, scopes };
    match (&entry.cidr, &entry.domain) {
        (Some(cidr_text), None) => {
            let cidr = Cidr::parse(cidr_text).map_err(|m| site.error(".cidr", &m))?;
            let ranges = parse_ports(&specs).map_err(|m| site.error(".ports", &m))?;
            by_cidr.entry(cidr).or_default().extend(ranges.into_iter().map(range));
            out.rules.push(NetRule {
                id: entry.id.clone(),
                reason: entry.reason.clone(),
                target: cidr.to_string(),
            });
        }
        (None, Some(domain_text)) => {
            // `name:port` shorthand (the seed's `*.whatsapp.net:443`).
            let mut name = domain_text.as_str();
            if let Some((host, port)) = domain_text.rsplit_once(':') {
                if !specs.is_empty() {
                    return Err(
                        site.error(".domain", "give the port either in `domain` or in `ports`, not both")
                    );
                }
                specs.push(PortSpec::Text(port.to_string()));
                name = host;
            }
            let pattern = DomainPattern::parse(name).map_err(|m| site.error(".domain", &m))?;
            let ranges: Vec<PortRange> = parse_ports(&specs)
                .map_err(|m| site.error(if entry.ports.is_empty() { ".domain" } else { ".ports" }, &m))?
                .into_iter()
                .map(range)
                .collect();
            if ranges.len() > MAX_PORT_RANGES {
                return Err(site.error(".ports", &format!("at most {MAX_PORT_RANGES} port ranges per entry")));
            }
            out.rules.push(NetRule {
                id: entry.id.clone(),
                reason: entry.reason.clone(),
                target: pattern.to_string(),
            });
            out.domains.push(DomainRule { pattern, rule, ranges });
        }
        _ => return Err(site.error("", "give exactly one of `cidr` and `domain`")),
    }
    Ok(())
}

/// A longest-prefix lookup finds only the most specific prefix: gives every prefix the ranges of all
/// prefixes covering it, so that one lookup answers for all of them.
fn merge_cidrs(by_cidr: &BTreeMap<Cidr, Vec<PortRange>>) -> Result<Vec<(Cidr, NetAllow)>, String> {
    let mut out = Vec::with_capacity(by_cidr.len());
    for cidr in by_cidr.keys() {
        let mut ranges: Vec<PortRange> = Vec::new();
        for len in (0..=cidr.len).rev() {
            if let Some(covering) = by_cidr.get(&cidr.masked(len)) {
                for range in covering {
                    if !ranges.contains(range) {
                        ranges.push(*range);
                    }
                }
            }
        }
        let allow = pack(&ranges).map_err(|n| {
            format!(
                "{cidr}: {n} port ranges apply to this prefix (its own and those of entries covering it); at most {MAX_PORT_RANGES}: merge ports into ranges"
            )
        })?;
        out.push((*cidr, allow));
    }
    Ok(out)
}

/// The nameservers of `/etc/resolv.conf` (port 53).
#[must_use]
pub fn system_resolvers() -> Vec<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.trim().split('%').next()?.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn compile_text(network: &str) -> Result<CompiledNet, PolicyError> {
        let text = format!("version: \"2.0\"\nnetwork:\n{network}");
        let policy = Policy::parse(Path::new("p.yaml"), &text)?;
        compile(&policy)
    }

    #[test]
    fn no_section_means_ungoverned() {
        let policy = Policy::parse(Path::new("p.yaml"), "version: \"2.0\"\n").expect("parses");
        let compiled = compile(&policy).expect("compiles");
        assert!(!compiled.governed);
    }

    #[test]
    fn covering_prefixes_contribute_their_ranges() {
        let compiled = compile_text(
            "  allow:\n    - { id: wide, cidr: 10.0.0.0/8, ports: [443] }\n    - { id: narrow, cidr: 10.1.0.0/16, ports: [\"80-81\"], protocol: udp }\n",
        )
        .expect("compiles");
        let narrow = compiled.cidr.iter().find(|(c, _)| c.len == 16).expect("narrow prefix");
        assert_eq!(narrow.1.count, 2);
        let wide = compiled.cidr.iter().find(|(c, _)| c.len == 8).expect("wide prefix");
        assert_eq!(wide.1.count, 1);
        assert_eq!(
            wide.1.ranges[0],
            PortRange { rule: 0, protocols: proto::TCP, first: 443, last: 443, scopes: SCOPE_SECTION }
        );
    }

    #[test]
    fn host_bits_and_bad_ports_are_errors() {
        let err = compile_text("  allow:\n    - { id: a, cidr: 10.0.0.1/8 }\n").expect_err("host bits");
        assert!(err.to_string().contains("did you mean 10.0.0.0/8"), "{err}");
        let err = compile_text("  allow:\n    - { id: a, cidr: 10.0.0.0/8, ports: [\"9-1\"] }\n")
            .expect_err("range");
        assert!(err.to_string().contains("empty"), "{err}");
        let err =
            compile_text("  allow:\n    - { id: a, cidr: \"::1\", domain: x.com }\n").expect_err("both");
        assert!(err.to_string().contains("exactly one"), "{err}");
        let err = compile_text("  bogus: 1\n").expect_err("unknown key");
        assert!(err.to_string().contains("unknown field `bogus`"), "{err}");
    }

    #[test]
    fn domain_shorthand_and_wildcards() {
        let compiled =
            compile_text("  dns: { upstream: [\"127.0.0.1:5353\"] }\n  allow:\n    - { id: wa, domain: \"*.WhatsApp.net:443\" }\n")
                .expect("compiles");
        let rule = &compiled.domains[0];
        assert_eq!(
            rule.ranges,
            vec![PortRange { rule: 0, protocols: proto::TCP, first: 443, last: 443, scopes: SCOPE_SECTION }]
        );
        assert!(rule.pattern.matches("web.whatsapp.net"));
        assert!(rule.pattern.matches("a.b.whatsapp.net"));
        assert!(!rule.pattern.matches("whatsapp.net"));
        assert!(!rule.pattern.matches("evilwhatsapp.net"));
        assert_eq!(compiled.dns.upstream, vec!["127.0.0.1:5353".parse::<SocketAddr>().expect("addr")]);
    }

    #[test]
    fn launch_profiles_are_scopes_of_their_own_inherited_through_extends() {
        let text = "version: \"2.0\"\nnetwork:\n  allow:\n    - { id: a, cidr: 10.0.0.0/8, ports: [443] }\nseccomp_profiles:\n  base:\n    network_policy: { allow_loopback: true, allow_outbound: [\"10.0.0.0/8:80\", \"10.1.2.3\", \"*.wa.net:443\", \"[::1]:53\"] }\n  child:\n    extends: base\n  plain: {}\n";
        let policy = Policy::parse(Path::new("p.yaml"), text).expect("parses");
        let net = compile(&policy).expect("compiles");
        let names: Vec<(&str, u32, bool)> =
            net.profiles.iter().map(|p| (p.name.as_str(), p.scope, p.loopback)).collect();
        assert_eq!(names, [("base", 1 << 1, true), ("child", 1 << 2, true)]);
        assert_eq!(net.profiles[0].id, profile_id(b"base"));
        assert_eq!(net.section_rules, 1);
        // 10.0.0.0/8 holds the section's 443 and each profile's 80, each in its own scope.
        let (_, wide) = net.cidr.iter().find(|(c, _)| c.len == 8).expect("10/8");
        let scopes: Vec<(u16, u32)> =
            wide.ranges[..wide.count as usize].iter().map(|r| (r.first, r.scopes)).collect();
        assert_eq!(scopes, [(443, SCOPE_SECTION), (80, 1 << 1), (80, 1 << 2)]);
        // A single address is a /32 of every port; `*.wa.net:443` a domain rule in both scopes.
        assert!(
            net.cidr
                .iter()
                .any(|(c, a)| c.len == 32 && a.ranges[0].first == 0 && a.ranges[0].last == u16::MAX)
        );
        let scopes: Vec<u32> = net.domains.iter().map(|d| d.ranges[0].scopes).collect();
        assert_eq!(scopes, [1 << 1, 1 << 2]);
        assert!(net.cidr.iter().any(|(c, a)| c.family == FAMILY_V6 && a.ranges[0].first == 53));
    }

    #[test]
    fn a_bad_outbound_item_and_too_many_profiles_are_located() {
        use std::fmt::Write as _;
        let text = "version: \"2.0\"\nseccomp_profiles:\n  p:\n    network_policy:\n      allow_outbound: [\"ok.example:443\", \"bad..name:1\"]\n";
        let err = compile(&Policy::parse(Path::new("p.yaml"), text).expect("parses")).expect_err("bad name");
        assert!(err.to_string().starts_with("p.yaml:5:"), "{err}");
        assert!(err.to_string().contains("p.network_policy[1]"), "{err}");
        let mut text = "version: \"2.0\"\nseccomp_profiles:\n".to_string();
        for i in 0..=MAX_NET_PROFILES {
            let _ = writeln!(text, "  p{i:02}: {{ network_policy: {{ allow_outbound: [] }} }}");
        }
        let err = compile(&Policy::parse(Path::new("p.yaml"), &text).expect("parses")).expect_err("too many");
        assert!(err.to_string().contains("one too many"), "{err}");
        assert!(err.to_string().starts_with(&format!("p.yaml:{}:", MAX_NET_PROFILES + 3)), "{err}");
    }

    #[test]
    fn v4_mapped_addresses_are_ipv4() {
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().expect("ip");
        assert_eq!(family_of(mapped), FAMILY_V4);
        assert_eq!(&addr_bytes(mapped)[..4], &[10, 1, 2, 3]);
    }
}
