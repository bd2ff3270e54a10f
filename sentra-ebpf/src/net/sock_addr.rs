//! cgroup `sock_addr` programs, attached to the governed cgroup (they apply to its descendants too,
//! `kernel/bpf/cgroup.c` `compute_effective_progs`). They work with or without BPF LSM.
//!
//! - `connect4`/`connect6`: TCP connects and UDP connects (`net/ipv4/af_inet.c` `inet_dgram_connect`,
//!   `tcp_v4_pre_connect`; `udpv6_pre_connect`), and TCP Fast Open's implicit connect.
//! - `sendmsg4`/`sendmsg6`: UDP datagrams sent with an explicit destination (net/ipv4/udp.c
//!   `udp_sendmsg` runs them only when a destination is given); connected UDP sockets were decided
//!   at connect time.
//! - `recvmsg4`/`recvmsg6`: replies of the steered resolver are given the address the client sent to.
//!
//! Returning 0 makes the syscall fail with `EPERM` (kernel/bpf/cgroup.c,
//! `__cgroup_bpf_run_filter_sock_addr`); 1 lets it go ahead.

use aya_ebpf::{
    bindings::bpf_sock_addr,
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use sentra_common::{
    event::NetHook,
    net::{DnsOrigin, FAMILY_V4, FAMILY_V6, NetSettings, stats},
};

use super::{
    Dest, Outcome, decide, dest4, dest6, dns_from_other_netns,
    maps::{NET_DNS_ORIGIN, NET_SETTINGS, count},
};
use crate::maps::ACTIVE_GENERATION;

const ALLOW: i32 = 1;
const DENY: i32 = 0;

#[cgroup_sock_addr(connect4)]
pub fn net_connect4(ctx: SockAddrContext) -> i32 {
    v4(&ctx, NetHook::Connect)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn net_sendmsg4(ctx: SockAddrContext) -> i32 {
    v4(&ctx, NetHook::Sendmsg)
}

#[cgroup_sock_addr(connect6)]
pub fn net_connect6(ctx: SockAddrContext) -> i32 {
    v6(&ctx, NetHook::Connect)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn net_sendmsg6(ctx: SockAddrContext) -> i32 {
    v6(&ctx, NetHook::Sendmsg)
}

#[cgroup_sock_addr(recvmsg4)]
pub fn net_recvmsg4(ctx: SockAddrContext) -> i32 {
    restore_origin(&ctx, false);
    // recvmsg programs must return 1 (kernel/bpf/cgroup.c rejects other values for them).
    ALLOW
}

#[cgroup_sock_addr(recvmsg6)]
pub fn net_recvmsg6(ctx: SockAddrContext) -> i32 {
    restore_origin(&ctx, true);
    ALLOW
}

/// The port as `user_port` holds it: network order in the low 16 bits.
#[inline(always)]
fn port_of(user_port: u32) -> u16 {
    #[expect(clippy::cast_possible_truncation, reason = "the port is the low 16 bits")]
    u16::from_be(user_port as u16)
}

#[inline(always)]
fn v4(ctx: &SockAddrContext, hook: NetHook) -> i32 {
    // SAFETY: the context pointer the kernel passed; the verifier checks each field access.
    let sa = unsafe { &mut *ctx.sock_addr };
    let dest = dest4(sa.user_ip4.to_ne_bytes(), port_of(sa.user_port), sa.protocol);
    match decide(&dest, hook, crate::task::governing(crate::task::Program::Cgroup)) {
        Outcome::Allow => ALLOW,
        Outcome::Deny => DENY,
        Outcome::Steer(settings) => {
            if !in_resolver_netns(ctx, &settings) {
                let outcome = dns_from_other_netns(&dest, hook, &settings);
                return if matches!(outcome, Outcome::Allow) { ALLOW } else { DENY };
            }
            remember_origin(ctx, sa, FAMILY_V4);
            sa.user_ip4 = settings.resolver_ip4;
            sa.user_port = resolver_port(&settings);
            ALLOW
        }
    }
}

#[inline(always)]
fn v6(ctx: &SockAddrContext, hook: NetHook) -> i32 {
    // SAFETY: as in `v4`.
    let sa = unsafe { &mut *ctx.sock_addr };
    let words = [sa.user_ip6[0], sa.user_ip6[1], sa.user_ip6[2], sa.user_ip6[3]];
    let mut addr = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let bytes = words[i].to_ne_bytes();
        addr[i * 4] = bytes[0];
        addr[i * 4 + 1] = bytes[1];
        addr[i * 4 + 2] = bytes[2];
        addr[i * 4 + 3] = bytes[3];
        i += 1;
    }
    let dest: Dest = dest6(addr, port_of(sa.user_port), sa.protocol);
    match decide(&dest, hook, crate::task::governing(crate::task::Program::Cgroup)) {
        Outcome::Allow => ALLOW,
        Outcome::Deny => DENY,
        Outcome::Steer(settings) => {
            if !in_resolver_netns(ctx, &settings) {
                let outcome = dns_from_other_netns(&dest, hook, &settings);
                return if matches!(outcome, Outcome::Allow) { ALLOW } else { DENY };
            }
            if dest.family == FAMILY_V4 {
                // An IPv4-mapped destination on an IPv6 socket: steer to the mapped IPv4 resolver.
                remember_origin(ctx, sa, FAMILY_V6);
                sa.user_ip6[0] = 0;
                sa.user_ip6[1] = 0;
                sa.user_ip6[2] = u32::from_ne_bytes([0, 0, 0xff, 0xff]);
                sa.user_ip6[3] = settings.resolver_ip4;
            } else if settings.resolver_has_ip6 != 0 {
                remember_origin(ctx, sa, FAMILY_V6);
                sa.user_ip6[0] = settings.resolver_ip6[0];
                sa.user_ip6[1] = settings.resolver_ip6[1];
                sa.user_ip6[2] = settings.resolver_ip6[2];
                sa.user_ip6[3] = settings.resolver_ip6[3];
            } else {
                // No IPv6 resolver (IPv6 loopback unavailable to the controller): the query cannot be
                // governed, so it does not leave.
                count(stats::ERRORS);
                return DENY;
            }
            sa.user_port = resolver_port(&settings);
            ALLOW
        }
    }
}

/// Whether the socket is in the network namespace the resolver listens in (or that is unknown).
/// `bpf_get_netns_cookie` takes the `bpf_sock_addr` context for this program type
/// (net/core/filter.c `bpf_get_netns_cookie_sock_addr`, Linux 5.7).
#[inline(always)]
fn in_resolver_netns(ctx: &SockAddrContext, settings: &NetSettings) -> bool {
    if settings.resolver_netns == 0 {
        return true;
    }
    // SAFETY: the helper reads the context's socket's namespace; the context is the kernel's.
    let cookie = unsafe { bpf_get_netns_cookie(ctx.sock_addr.cast()) };
    cookie == settings.resolver_netns
}

#[inline(always)]
fn resolver_port(settings: &NetSettings) -> u32 {
    #[expect(clippy::cast_possible_truncation, reason = "userspace stores a 16-bit port")]
    u32::from((settings.resolver_port as u16).to_be())
}

/// Records where a steered socket meant to send, for `restore_origin`.
#[inline(always)]
fn remember_origin(ctx: &SockAddrContext, sa: &bpf_sock_addr, family: u32) {
    // SAFETY: helper taking the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    let addr = if family == FAMILY_V4 {
        [sa.user_ip4, 0, 0, 0]
    } else {
        [sa.user_ip6[0], sa.user_ip6[1], sa.user_ip6[2], sa.user_ip6[3]]
    };
    let origin = DnsOrigin { family, port: sa.user_port, addr };
    let _ = NET_DNS_ORIGIN.insert(cookie, origin, 0);
}

/// Gives a datagram from the resolver the source address the client sent its query to.
#[inline(always)]
fn restore_origin(ctx: &SockAddrContext, v6: bool) {
    // SAFETY: helper taking the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    // SAFETY: lookup with a stack key; the value is copied.
    let Some(origin) = (unsafe { NET_DNS_ORIGIN.get(cookie) }).copied() else {
        return;
    };
    // SAFETY: as in `v4`.
    let sa = unsafe { &mut *ctx.sock_addr };
    // Only datagrams from the resolver: the socket may also talk to others.
    let Some(active) = ACTIVE_GENERATION.get(0).copied() else { return };
    let Some(settings) = NET_SETTINGS.get(active.generation).copied() else { return };
    if sa.user_port != resolver_port(&settings) {
        return;
    }
    if v6 {
        let from_resolver = (sa.user_ip6[0] == settings.resolver_ip6[0]
            && sa.user_ip6[1] == settings.resolver_ip6[1]
            && sa.user_ip6[2] == settings.resolver_ip6[2]
            && sa.user_ip6[3] == settings.resolver_ip6[3])
            || (sa.user_ip6[0] == 0
                && sa.user_ip6[1] == 0
                && sa.user_ip6[2] == u32::from_ne_bytes([0, 0, 0xff, 0xff])
                && sa.user_ip6[3] == settings.resolver_ip4);
        if origin.family != FAMILY_V6 || !from_resolver {
            return;
        }
        sa.user_ip6[0] = origin.addr[0];
        sa.user_ip6[1] = origin.addr[1];
        sa.user_ip6[2] = origin.addr[2];
        sa.user_ip6[3] = origin.addr[3];
    } else {
        if origin.family != FAMILY_V4 || sa.user_ip4 != settings.resolver_ip4 {
            return;
        }
        sa.user_ip4 = origin.addr[0];
    }
    sa.user_port = origin.port;
}

sentra_common::same_name!(sentra_common::names::program::NET_CONNECT4, net_connect4);

sentra_common::same_name!(sentra_common::names::program::NET_SENDMSG4, net_sendmsg4);

sentra_common::same_name!(sentra_common::names::program::NET_CONNECT6, net_connect6);

sentra_common::same_name!(sentra_common::names::program::NET_SENDMSG6, net_sendmsg6);

sentra_common::same_name!(sentra_common::names::program::NET_RECVMSG4, net_recvmsg4);

sentra_common::same_name!(sentra_common::names::program::NET_RECVMSG6, net_recvmsg6);
