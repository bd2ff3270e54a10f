//! `aya::Pod` for every type that crosses the user/kernel boundary.

use crate::{
    event::{EventHeader, ExecEvent},
    exec::{AppletKey, GovernedCgroup, InodeKey, LoaderPath, MultiCall, NameKey, RuleValue},
    offsets::KernelOffsets,
    settings::{ActiveGeneration, Settings},
};

// SAFETY: all of these are #[repr(C)], contain only integers and integer arrays, and have explicit padding
// fields, so every bit pattern is valid and there are no implicit padding bytes.
unsafe impl aya::Pod for InodeKey {}
// SAFETY: as above.
unsafe impl aya::Pod for NameKey {}
// SAFETY: as above.
unsafe impl aya::Pod for RuleValue {}
// SAFETY: as above.
unsafe impl aya::Pod for AppletKey {}
// SAFETY: as above.
unsafe impl aya::Pod for MultiCall {}
// SAFETY: as above.
unsafe impl aya::Pod for LoaderPath {}
// SAFETY: as above.
unsafe impl aya::Pod for GovernedCgroup {}
// SAFETY: as above.
unsafe impl aya::Pod for Settings {}
// SAFETY: as above.
unsafe impl aya::Pod for ActiveGeneration {}
// SAFETY: as above.
unsafe impl aya::Pod for KernelOffsets {}
// SAFETY: as above.
unsafe impl aya::Pod for EventHeader {}
// SAFETY: as above.
unsafe impl aya::Pod for ExecEvent {}

// Network governance (sentra_common::net, event::NetEvent).
// SAFETY: as above: #[repr(C)], integers and integer arrays only, explicit padding.
unsafe impl aya::Pod for crate::net::CidrKey {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::net::HostKey {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::net::NetAllow {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::net::NetSettings {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::net::DnsOrigin {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::event::NetEvent {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::event::GuardEvent {}
// SAFETY: as above.
unsafe impl aya::Pod for crate::exec::FileKey {}
