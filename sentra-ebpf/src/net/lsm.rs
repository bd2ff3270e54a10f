//! The `lsm` backend's network hook: `lsm/socket_connect` (security/security.c
//! `security_socket_connect`, called from net/socket.c `__sys_connect_file` before the protocol's
//! connect, hence before the cgroup `connect4/6` programs). It denies what the policy denies, so a
//! connect is refused even if the cgroup programs were detached; DNS (port 53) is left to the cgroup
//! programs, which steer it.

use aya_ebpf::programs::LsmContext;
use sentra_common::event::{NetHook, ProbeSite};

use super::{IPPROTO_TCP, IPPROTO_UDP, Outcome, decide, dest4, dest6, fail_closed};
use crate::{kernel, maps::ACTIVE_GENERATION, task};

const EPERM: i64 = 1;
/// include/linux/socket.h.
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
/// include/linux/net.h `enum sock_type`.
const SOCK_STREAM: i16 = 1;
const SOCK_DGRAM: i16 = 2;

crate::lsm_program!("lsm/socket_connect", net_lsm_connect, net_lsm_connect_verdict);

#[inline(always)]
fn net_lsm_connect_verdict(ctx: LsmContext) -> i64 {
    try_net_lsm_connect(&ctx).unwrap_or_else(|kernel::ReadError(site)| {
        let active = ACTIVE_GENERATION.get(0).copied().unwrap_or_default();
        let _ = fail_closed(None, NetHook::LsmConnect, &active, site);
        -EPERM
    })
}

/// `Err` only for a governed task whose connect could not be read: it is denied (fail closed) and
/// reported with the site.
fn try_net_lsm_connect(ctx: &LsmContext) -> Result<i64, kernel::ReadError> {
    // Arguments: (struct socket *sock, struct sockaddr *address, int addrlen, int retval).
    // As in `exec_lsm`: the earlier programs' verdict, kept 64-bit so that its range stays known.
    let retval: i64 = ctx.arg(3);
    if retval != 0 {
        return Ok(retval);
    }
    let Some(governing) = task::governing(task::Program::Tracing) else {
        return Ok(0);
    };
    let sock: u64 = ctx.arg(0);
    let address: u64 = ctx.arg(1);
    let addrlen: i32 = ctx.arg(2);
    let off = kernel::offsets();
    if off.valid == 0 {
        return Err(kernel::ReadError(ProbeSite::Offsets));
    }
    // `address` is the kernel's copy of the caller's sockaddr (net/socket.c `move_addr_to_kernel`).
    let family: u16 = kernel::read(address, 0, ProbeSite::SockAddr)?;
    let sock_type: i16 = kernel::read(sock, off.socket_type, ProbeSite::SocketType)?;
    let ip_proto = match sock_type {
        SOCK_STREAM => IPPROTO_TCP,
        SOCK_DGRAM => IPPROTO_UDP,
        // Raw and other socket types match no rule (denied unless loopback is allowed).
        _ => 0,
    };
    // sin_port / sin6_port at offset 2, network order (include/uapi/linux/in.h, in6.h).
    let dest = match family {
        AF_INET if addrlen >= 16 => {
            let port: u16 = kernel::read(address, 2, ProbeSite::SockAddr)?;
            let ip: [u8; 4] = kernel::read(address, 4, ProbeSite::SockAddr)?;
            dest4(ip, u16::from_be(port), ip_proto)
        }
        AF_INET6 if addrlen >= 24 => {
            let port: u16 = kernel::read(address, 2, ProbeSite::SockAddr)?;
            let ip: [u8; 16] = kernel::read(address, 8, ProbeSite::SockAddr)?;
            dest6(ip, u16::from_be(port), ip_proto)
        }
        // AF_UNSPEC (dissolving a UDP association), AF_UNIX and the rest are not network
        // destinations; a short sockaddr fails in the protocol's own connect with EINVAL.
        _ => return Ok(0),
    };
    match decide(&dest, NetHook::LsmConnect, Some(governing)) {
        Outcome::Allow | Outcome::Steer(_) => Ok(0),
        Outcome::Deny => Ok(-EPERM),
    }
}

sentra_common::same_name!(sentra_common::names::program::NET_LSM_CONNECT, net_lsm_connect);
