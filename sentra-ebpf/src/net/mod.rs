//! Network governance: one decision procedure for the cgroup `sock_addr` hooks (both backends) and the
//! BPF LSM `socket_connect` hook (`lsm` backend).
//!
//! A destination is allowed by the loopback switch, by a CIDR entry (one LPM lookup) or by an address
//! the controller's resolver learned for a domain rule (one hash lookup); anything else is denied.
//! Port-53 traffic is steered to the controller's resolver when the policy has domain rules.

mod lsm;
pub mod maps;
mod sock_addr;

use aya_ebpf::maps::lpm_trie::Key;
use sentra_common::{
    event::{Decision, EventKind, NetEvent, NetHook, ProbeSite},
    exec::GovernedCgroup,
    net::{
        CIDR_KEY_HEADER_BITS, CidrKey, FAMILY_V4, HostKey, MAX_NET_PROFILES, MAX_PORT_RANGES,
        NET_RULE_DEFAULT, NET_RULE_DNS_NETNS, NET_RULE_INTERNAL_ERROR, NET_RULE_UNKNOWN_PROFILE, NetAllow,
        NetSettings, SCOPE_SECTION, proto, stats,
    },
    settings::{ActiveGeneration, Mode},
};

use self::maps::{NET_CIDR, NET_HOSTS, NET_SETTINGS, count};
use crate::{
    kernel,
    maps::{ACTIVE_GENERATION, EVENTS},
    task,
};

/// IP protocol numbers (include/uapi/linux/in.h).
pub const IPPROTO_TCP: u32 = 6;
pub const IPPROTO_UDP: u32 = 17;
/// The DNS port steered to the resolver.
pub const DNS_PORT: u16 = 53;

/// A destination as the hooks see it.
#[derive(Clone, Copy)]
pub struct Dest {
    /// `FAMILY_V4` (also for IPv4-mapped IPv6) or `FAMILY_V6`.
    pub family: u32,
    /// Network order; IPv4 in the first 4 bytes.
    pub addr: [u8; 16],
    /// Host order.
    pub port: u16,
    /// `IPPROTO_TCP` or `IPPROTO_UDP` (anything else matches no rule).
    pub ip_proto: u32,
}

/// What the hook must do.
#[derive(Clone, Copy)]
pub enum Outcome {
    Allow,
    Deny,
    /// Rewrite the destination to the resolver in these settings.
    Steer(NetSettings),
}

/// The allowlist deciding for a task: the scope bit its ranges must carry, and whether every
/// loopback destination is allowed.
struct Scope {
    bit: u32,
    loopback: bool,
}

/// Decides a destination of a governed task and emits the event of a denial. `governing` is the entry
/// of the innermost governed cgroup holding the task (`None`: decided by the `network:` section).
#[inline(always)]
pub fn decide(dest: &Dest, hook: NetHook, governing: Option<GovernedCgroup>) -> Outcome {
    // The controller writes generation 0 completely and activates it before it attaches any program,
    // so the active generation (and its backend) is always set when a hook runs.
    let active = ACTIVE_GENERATION.get(0).copied().unwrap_or_default();
    let settings = match NET_SETTINGS.get(active.generation) {
        Some(settings) if settings.loaded != 0 => *settings,
        _ => return fail_closed(Some(dest), hook, &active, ProbeSite::Settings),
    };
    let profile = governing.map_or(0, |g| g.net_profile);
    // A launch profile's network policy governs its cgroup whether or not the policy has a
    // `network:` section.
    if profile == 0 && settings.governed == 0 {
        return Outcome::Allow;
    }
    count(stats::DECISIONS);
    let scope = if profile == 0 {
        Scope { bit: SCOPE_SECTION, loopback: settings.loopback != 0 }
    } else {
        let Some(scope) = profile_scope(&settings, profile) else {
            // The profile the cgroup was launched with is not in this generation: deny all.
            count(stats::DENIED);
            emit(
                dest,
                hook,
                &active,
                Mode::Enforce as u32,
                Decision::Denied,
                NET_RULE_UNKNOWN_PROFILE,
                ProbeSite::None,
            );
            return Outcome::Deny;
        };
        scope
    };
    if settings.dns_steer != 0
        && dest.port == DNS_PORT
        && (dest.ip_proto == IPPROTO_TCP || dest.ip_proto == IPPROTO_UDP)
    {
        count(stats::DNS_STEERED);
        return Outcome::Steer(settings);
    }
    if scope.loopback && is_loopback(dest) {
        return Outcome::Allow;
    }
    if lookup(dest, active.generation, scope.bit).is_some() {
        return Outcome::Allow;
    }
    refuse(dest, hook, &active, &settings, NET_RULE_DEFAULT)
}

/// A destination the policy refuses by `rule`: counted and reported, then denied, or let through in
/// audit mode.
#[inline(always)]
fn refuse(
    dest: &Dest,
    hook: NetHook,
    active: &ActiveGeneration,
    settings: &NetSettings,
    rule: u32,
) -> Outcome {
    count(stats::DENIED);
    let audit = settings.mode == Mode::Audit as u32;
    let decision = if audit { Decision::AuditDenied } else { Decision::Denied };
    // In audit mode the LSM hook lets the connect go on to the cgroup hook, which reports it: one
    // event per connect.
    if !(audit && matches!(hook, NetHook::LsmConnect)) {
        emit(dest, hook, active, settings.mode, decision, rule, ProbeSite::None);
    }
    if audit { Outcome::Allow } else { Outcome::Deny }
}

/// A DNS query to steer from a network namespace other than the resolver's: the resolver's loopback
/// address does not exist there, so steering it would leave the query unanswered. Refused at once
/// (the client's resolver library fails fast) and reported; in audit mode reported and let through
/// unsteered.
#[inline(always)]
pub fn dns_from_other_netns(dest: &Dest, hook: NetHook, settings: &NetSettings) -> Outcome {
    let active = ACTIVE_GENERATION.get(0).copied().unwrap_or_default();
    refuse(dest, hook, &active, settings, NET_RULE_DNS_NETNS)
}

/// The scope of a launch profile in `settings`, if the generation holds it.
#[inline(always)]
fn profile_scope(settings: &NetSettings, profile: u32) -> Option<Scope> {
    let mut i = 0;
    while i < MAX_NET_PROFILES {
        if settings.profiles[i] == profile {
            let bit = 1u32 << (i + 1);
            return Some(Scope { bit, loopback: settings.profile_loopback & bit != 0 });
        }
        i += 1;
    }
    None
}

/// The rule allowing `dest` in the scope `scope`, if one does.
#[inline(always)]
fn lookup(dest: &Dest, generation: u32, scope: u32) -> Option<u32> {
    let bits = if dest.family == FAMILY_V4 { 32 } else { 128 };
    let key =
        Key::new(CIDR_KEY_HEADER_BITS + bits, CidrKey { generation, family: dest.family, addr: dest.addr });
    if let Some(allow) = NET_CIDR.get(&key)
        && let Some(rule) = matching_range(allow, dest, scope)
    {
        return Some(rule);
    }
    let key = HostKey { generation, family: dest.family, addr: dest.addr };
    // SAFETY: map lookup with a stack key; the value is only read.
    if let Some(allow) = unsafe { NET_HOSTS.get(key) }
        && let Some(rule) = matching_range(allow, dest, scope)
    {
        return Some(rule);
    }
    None
}

/// The first range of `allow` in `scope` covering the port and protocol. Bounded by `MAX_PORT_RANGES`.
#[inline(always)]
fn matching_range(allow: &NetAllow, dest: &Dest, scope: u32) -> Option<u32> {
    let bit = match dest.ip_proto {
        IPPROTO_TCP => proto::TCP,
        IPPROTO_UDP => proto::UDP,
        _ => return None,
    };
    let count = allow.count as usize;
    let mut i = 0;
    while i < MAX_PORT_RANGES {
        if i >= count {
            break;
        }
        let range = &allow.ranges[i];
        if range.scopes & scope != 0
            && range.protocols & bit != 0
            && range.first <= dest.port
            && dest.port <= range.last
        {
            return Some(range.rule);
        }
        i += 1;
    }
    None
}

/// 127.0.0.0/8 or `::1`.
#[inline(always)]
fn is_loopback(dest: &Dest) -> bool {
    if dest.family == FAMILY_V4 {
        return dest.addr[0] == 127;
    }
    let mut i = 0;
    while i < 15 {
        if dest.addr[i] != 0 {
            return false;
        }
        i += 1;
    }
    dest.addr[15] == 1
}

/// Decision for a governed task when the probe cannot decide: denied, counted by site, and reported
/// (with the destination when it could be read, else with an empty one).
#[inline(always)]
pub fn fail_closed(
    dest: Option<&Dest>,
    hook: NetHook,
    active: &ActiveGeneration,
    site: ProbeSite,
) -> Outcome {
    count(stats::ERRORS);
    crate::maps::count(sentra_common::settings::stats::PROBE_ERRORS);
    crate::maps::count(sentra_common::settings::stats::PROBE_SITE_BASE + site as u32);
    let unknown = Dest { family: 0, addr: [0; 16], port: 0, ip_proto: 0 };
    let dest = dest.unwrap_or(&unknown);
    emit(dest, hook, active, Mode::Enforce as u32, Decision::Denied, NET_RULE_INTERNAL_ERROR, site);
    Outcome::Deny
}

/// Sends a network event for the current task.
#[inline(always)]
fn emit(
    dest: &Dest,
    hook: NetHook,
    active: &ActiveGeneration,
    mode: u32,
    decision: Decision,
    rule: u32,
    site: ProbeSite,
) {
    let Some(mut entry) = EVENTS.reserve::<NetEvent>(0) else {
        crate::maps::count(sentra_common::settings::stats::EVENTS_DROPPED);
        return;
    };
    // SAFETY: the reservation is sizeof(NetEvent) bytes; every field is written below (`exe` is
    // zeroed first, then filled as far as the kernel read goes).
    let event = unsafe { &mut *entry.as_mut_ptr() };
    let off = kernel::offsets();
    task::fill_header(&mut event.header, off, active.backend);
    event.header.kind = EventKind::Net as u32;
    event.decision = decision as u32;
    event.mode = mode;
    event.rule = rule;
    event.generation = active.generation;
    event.hook = hook as u32;
    event.protocol = dest.ip_proto;
    event.family = dest.family;
    event.port = u32::from(dest.port);
    event.probe_site = site as u32;
    event.pad = 0;
    event.addr = dest.addr;
    event.exe = [0; sentra_common::exec::NAME_LEN];
    if off.valid != 0 {
        // task->mm->exe_file->f_path.dentry->d_name.name: only the file name; userspace adds the
        // full path from /proc/<pid>/exe while the task lives.
        // SAFETY: helper without pointer arguments.
        let task = unsafe { aya_ebpf::helpers::bpf_get_current_task() };
        // Informational: a failed read leaves the name empty (no site).
        if let Ok(name) = kernel::read_ptr(task, off.task_mm, ProbeSite::None)
            .and_then(|mm| kernel::read_ptr(mm, off.mm_exe_file, ProbeSite::None))
            .and_then(|file| kernel::read_ptr(file, off.file_dentry, ProbeSite::None))
            .and_then(|dentry| kernel::read_ptr(dentry, off.dentry_name, ProbeSite::None))
        {
            let _ = kernel::read_str(name, &mut event.exe, ProbeSite::None);
        }
    }
    // Network events are denials (or audit-mode would-be denials): the controller wakes at once.
    entry.submit(crate::maps::submit_flags(true));
}

/// The IPv4 address of an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, RFC 4291 2.5.5.2).
#[inline(always)]
pub fn v4_mapped(addr: &[u8; 16]) -> Option<[u8; 4]> {
    let mut i = 0;
    while i < 10 {
        if addr[i] != 0 {
            return None;
        }
        i += 1;
    }
    if addr[10] == 0xff && addr[11] == 0xff { Some([addr[12], addr[13], addr[14], addr[15]]) } else { None }
}

/// A destination from an IPv6 address (an IPv4-mapped one is decided as IPv4).
#[inline(always)]
pub fn dest6(addr: [u8; 16], port: u16, ip_proto: u32) -> Dest {
    match v4_mapped(&addr) {
        Some(v4) => dest4(v4, port, ip_proto),
        None => Dest { family: sentra_common::net::FAMILY_V6, addr, port, ip_proto },
    }
}

/// A destination from an IPv4 address.
#[inline(always)]
pub fn dest4(v4: [u8; 4], port: u16, ip_proto: u32) -> Dest {
    let mut addr = [0u8; 16];
    addr[0] = v4[0];
    addr[1] = v4[1];
    addr[2] = v4[2];
    addr[3] = v4[3];
    Dest { family: FAMILY_V4, addr, port, ip_proto }
}
