//! `aya::Pod` for every type that crosses the user/kernel boundary.

use crate::{
    event::{EventHeader, ExecEvent},
    exec::{GovernedCgroup, InodeKey, NameKey, RuleValue},
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
