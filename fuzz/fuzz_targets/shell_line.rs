//! The shell layer's evaluator on arbitrary lines: every line gets a verdict, never a panic, a stack
//! overflow or a hang (libFuzzer's `-timeout` flags a slow input). The policy is the shipped 67-rule
//! original-format one, so rules, wrappers and builtins are all exercised.
#![no_main]

use std::{path::Path, sync::LazyLock};

use libfuzzer_sys::fuzz_target;
use sentra_ctl::{
    policy::{Policy, shell::ShellMatcher},
    shell::evaluate::Evaluator,
};

static MATCHER: LazyLock<ShellMatcher> = LazyLock::new(|| {
    let text = include_str!("../../policies/original-67.yaml");
    let policy = Policy::parse(Path::new("original-67.yaml"), text).expect("the shipped policy parses");
    ShellMatcher::new(&policy).expect("and compiles")
});

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else { return };
    let evaluator = Evaluator {
        matcher: &MATCHER,
        identity: "agent".into(),
        cwd: "/nonexistent".into(),
        path: Some("/usr/bin:/bin".into()),
        files: None,
        inherited: &[],
    };
    let verdict = evaluator.evaluate(line);
    // A line that runs nothing has no parts; one that runs something is judged part by part.
    let _ = verdict.denied();
});
