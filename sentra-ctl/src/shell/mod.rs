//! The shell layer: `sentra-shell` (a drop-in `SHELL` for `OpenClaw`) and the `sentra` REPL.
//!
//! A line nested too deeply to analyse is refused before parsing ([`nesting`]); a line is parsed into
//! every simple command it can run ([`parse`]), wrappers and builtins are
//! unwrapped to the programs they run ([`unwrap`]), each program is judged by the policy's rules
//! ([`evaluate`]), the rate limit is taken across processes ([`ratelimit`]), the decision is audited
//! ([`gate`]), and an approved line runs with a real shell ([`exec`]). The kernel layer, when a
//! controller governs the cgroup, enforces every exec the line makes: the shell is never the only guard.

pub mod cli;
pub mod evaluate;
pub mod exec;
pub mod gate;
pub mod identity;
pub mod nesting;
pub mod parse;
pub mod ratelimit;
pub mod repl;
pub mod runners;
pub mod session;
pub mod unwrap;
