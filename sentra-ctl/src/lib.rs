//! Sentra controller library: policy, kernel maps, cgroups, audit, the controller daemon.

pub mod audit;
pub mod cgroup;
pub mod controller;
pub mod dns;
pub mod doctor;
pub mod email;
pub mod enforce;
pub mod kernel;
pub mod launch;
pub mod policy;
pub mod record;
pub mod run;
pub mod sandbox;
pub mod shell;

/// An error and its sources on one line (`a: b: c`), for messages printed outside `anyhow`. Library
/// errors keep their source instead of repeating its text, so this is where the whole story is told.
#[must_use]
pub fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(next) = source {
        text.push_str(": ");
        text.push_str(&next.to_string());
        source = next.source();
    }
    text
}
