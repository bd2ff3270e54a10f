//! Types shared by the BPF programs (`sentra-ebpf`) and userspace (`sentra-ctl`).
//!
//! Every type here is `#[repr(C)]`, `Copy`, and laid out with explicit padding so that both sides agree
//! byte for byte. Flags are integers, not `bool`; enums travel as `u32` and are converted on the user
//! side with `TryFrom`.
#![no_std]

pub mod event;
pub mod exec;
pub mod layout;
pub mod names;
pub mod net;
pub mod offsets;
pub mod settings;

#[cfg(feature = "user")]
mod pod;

#[cfg(feature = "user")]
extern crate std;

/// Error for a `u32` that names no variant of the enum it is converted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: u32,
}

impl core::fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "unknown {} value {}", self.what, self.value)
    }
}

/// Declares a `#[repr(u32)]` enum together with its `TryFrom<u32>` (user side) and `as_str`.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident : $what:literal { $($(#[$vmeta:meta])* $variant:ident = $value:literal => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[repr(u32)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($(#[$vmeta])* $variant = $value),+ }

        #[cfg(feature = "user")]
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        #[cfg(feature = "user")]
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                // A unit-variant enum of the same name, so that errors read as for any serde enum
                // ("unknown variant `x`, expected `a` or `b`").
                #[derive(serde::Deserialize)]
                enum $name { $(#[serde(rename = $text)] $variant),+ }
                Ok(match <$name as serde::Deserialize>::deserialize(deserializer)? {
                    $($name::$variant => Self::$variant),+
                })
            }
        }

        impl $name {
            /// The name used in policies and audit records.
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl TryFrom<u32> for $name {
            type Error = $crate::UnknownValue;
            fn try_from(value: u32) -> Result<Self, Self::Error> {
                match value {
                    $($value => Ok(Self::$variant),)+
                    _ => Err($crate::UnknownValue { what: $what, value }),
                }
            }
        }
    };
}
pub(crate) use wire_enum;
