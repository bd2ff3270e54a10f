//! The shell layer's evaluator on arbitrary lines: every line gets a verdict, never a panic, a stack
//! overflow or a hang (libFuzzer's `-timeout` flags a slow input), nor a blow-up in its length. The
//! policy is the shipped 67-rule original-format one, so rules, wrappers and builtins are all
//! exercised.
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
        programs: &sentra_ctl::shell::identity::SystemPrograms::default(),
        inherited: &[],
    };
    let start = std::time::Instant::now();
    let verdict = evaluator.evaluate(line);
    let one = start.elapsed();
    // A line that runs nothing has no parts; one that runs something is judged part by part.
    let _ = verdict.denied();
    // No blow-up: sixteen copies of the line, one per line of a script, take at most 4096 times as
    // long as one, with 250 ms of slack. Joined copies are not sixteen commands (an unclosed quote or
    // `${` in one is closed by the next, so a line refused at once becomes one that is evaluated), so
    // this bound only catches exponential growth, as runs of unclosed `case` showed (40,000 times);
    // tests/shell_linear.rs holds each construct to linear time.
    let copies = vec![line; 16].join("\n");
    let start = std::time::Instant::now();
    let _ = evaluator.evaluate(&copies).denied();
    let sixteen = start.elapsed();
    assert!(
        sixteen <= one * 4096 + std::time::Duration::from_millis(250),
        "16 copies took {sixteen:?}, one {one:?}: evaluation blows up with the line's length"
    );
});
