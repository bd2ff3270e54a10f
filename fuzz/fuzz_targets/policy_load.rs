//! The policy loader on arbitrary input: parsing, locating errors, and compiling must return an
//! error or a policy, never panic or hang.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sentra_ctl::policy::{Policy, exec, network, shell::ShellMatcher};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(policy) = Policy::parse(Path::new("fuzz.yaml"), text) {
        let _ = exec::compile(&policy);
        let _ = network::compile(&policy);
        let _ = ShellMatcher::validate(&policy);
    }
});
