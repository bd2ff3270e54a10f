//! The long-running controller (`sentra-ctl daemon`) and the commands that talk to it.
//!
//! The daemon pins its programs and maps, so enforcement continues if it dies; a restarted daemon
//! adopts the pinned state. It serves a Unix socket that only root may use, one JSON request per line.

pub mod client;
pub mod daemon;
pub mod metrics;
pub mod protocol;
pub mod state;
