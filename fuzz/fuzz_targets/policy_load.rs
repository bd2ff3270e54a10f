//! The policy loader on arbitrary input: parsing, locating errors, and compiling must return an
//! error or a policy, never panic or hang; and the parsed-policy cache's JSON form of a valid policy
//! must read back as the same model (or not at all, which is a cache miss), never as another one.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sentra_ctl::policy::{Policy, PolicyFile, exec, network, shell::ShellMatcher};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(policy) = Policy::parse(Path::new("fuzz.yaml"), text) {
        let _ = exec::compile(&policy);
        let _ = network::compile(&policy);
        let _ = ShellMatcher::validate(&policy);
        if let Ok(json) = serde_json::to_string(&policy.model)
            && let Ok(back) = serde_json::from_str::<PolicyFile>(&json)
        {
            assert_eq!(format!("{back:?}"), format!("{:?}", policy.model), "cache round trip changed the model");
        }
    }
});
