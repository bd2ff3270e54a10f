//! Compile-time checks of every type shared with the BPF programs: its size (no implicit padding:
//! each equals the sum of its fields, padding fields included) and the offsets the other side relies
//! on. A change to a struct that alters its layout fails the build here, on both sides at once.

use core::mem::{offset_of, size_of};

use crate::{
    event::{EventHeader, ExecEvent, GuardEvent, NetEvent},
    exec::{AppletKey, GovernedCgroup, InodeKey, LoaderPath, MultiCall, NameKey, RuleValue},
    net::{CIDR_KEY_HEADER_BITS, CidrKey, DnsOrigin, HostKey, NetAllow, NetSettings, PortRange},
    offsets::KernelOffsets,
    settings::{ActiveGeneration, Settings},
};

// Events: the header starts every event; userspace reads `kind` before knowing the rest.
const _: () = assert!(size_of::<EventHeader>() == 80);
const _: () = assert!(offset_of!(EventHeader, kind) == 0);
const _: () = assert!(offset_of!(EventHeader, boot_ns) == 8);
const _: () = assert!(offset_of!(EventHeader, cgroup_id) == 40);
const _: () = assert!(size_of::<ExecEvent>() == 2184);
const _: () = assert!(offset_of!(ExecEvent, probe_site) == 124);
const _: () = assert!(offset_of!(ExecEvent, header) == 0);
const _: () = assert!(offset_of!(ExecEvent, dev) == 104);
const _: () = assert!(offset_of!(ExecEvent, path) == 136);
const _: () = assert!(size_of::<NetEvent>() == 200);
const _: () = assert!(offset_of!(NetEvent, header) == 0);
const _: () = assert!(offset_of!(NetEvent, addr) == 120);
const _: () = assert!(size_of::<GuardEvent>() == 80 + 32 + 16 + crate::exec::NAME_LEN);
const _: () = assert!(offset_of!(GuardEvent, decision) == 96);
const _: () = assert!(offset_of!(GuardEvent, dev) == 112);
const _: () = assert!(size_of::<crate::exec::FileKey>() == 16);

// Exec rule maps: every key starts with its generation.
const _: () = assert!(size_of::<InodeKey>() == 24);
const _: () = assert!(offset_of!(InodeKey, generation) == 0);
const _: () = assert!(offset_of!(InodeKey, dev) == 8);
const _: () = assert!(size_of::<NameKey>() == 88);
const _: () = assert!(offset_of!(NameKey, generation) == 0);
const _: () = assert!(offset_of!(NameKey, name) == 24);
const _: () = assert!(offset_of!(ExecEvent, applet_arg) == 128);
const _: () = assert!(size_of::<RuleValue>() == 8);
const _: () = assert!(size_of::<AppletKey>() == 72);
const _: () = assert!(offset_of!(AppletKey, name) == 8);
const _: () = assert!(size_of::<MultiCall>() == 24);
const _: () = assert!(size_of::<LoaderPath>() == 256);
const _: () = assert!(offset_of!(MultiCall, stem_len) == 16);
const _: () = assert!(size_of::<GovernedCgroup>() == 8);
const _: () = assert!(offset_of!(GovernedCgroup, net_profile) == 4);
const _: () = assert!(size_of::<Settings>() == 16);
const _: () = assert!(size_of::<ActiveGeneration>() == 8);
const _: () = assert!(size_of::<KernelOffsets>() == 41 * 4);

// Network maps: the trie's prefix covers generation and family before the address.
const _: () = assert!(size_of::<CidrKey>() == 24);
const _: () = assert!(offset_of!(CidrKey, generation) == 0);
const _: () = assert!(offset_of!(CidrKey, addr) * 8 == CIDR_KEY_HEADER_BITS as usize);
const _: () = assert!(size_of::<HostKey>() == 24);
const _: () = assert!(size_of::<PortRange>() == 16);
const _: () = assert!(size_of::<NetAllow>() == 8 + 8 * 16);
const _: () = assert!(size_of::<NetSettings>() == 56 + 4 * crate::net::MAX_NET_PROFILES + 4);
const _: () = assert!(crate::net::MAX_NET_PROFILES < 32);
const _: () = assert!(size_of::<DnsOrigin>() == 24);

// Probe sites: the per-site counters cover every site.
const _: () = assert!(crate::event::ProbeSite::AppletArgs as u32 + 1 == crate::event::PROBE_SITES);
