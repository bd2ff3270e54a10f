//! Library target so that `sentra-ctl` can name this crate as a build dependency (see aya-build).
#![no_std]
