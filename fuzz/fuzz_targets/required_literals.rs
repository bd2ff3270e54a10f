//! The shell index is sound only if what it reads from a pattern's syntax tree is true of the engine's
//! matches. Input is a pattern and a text, separated by the first NUL byte.
//! - Required literals (`sentra_ctl::policy::required`): a catch-all rule is skipped when the
//!   arguments contain none of them, so every match of the pattern in the text must contain one.
//! - Exact names (`sentra_ctl::policy::exact`): a rule is looked up by name instead of matched, so
//!   the pattern must match the whole text exactly when the text is one of the names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sentra_ctl::policy::{exact::exact_names, required::required_literals, shell::compile};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else { return };
    let Some((pattern, text)) = input.split_once('\0') else { return };
    let Ok(regex) = compile(&[pattern]) else { return };
    if let Some(names) = exact_names(pattern) {
        assert_eq!(
            regex.is_match(text),
            names.iter().any(|n| n == text),
            "{pattern:?} on {text:?}: the engine and the exact names {names:?} disagree"
        );
        for name in &names {
            assert!(regex.is_match(name.as_str()), "{pattern:?} does not match its own name {name:?}");
        }
    }
    let Some(literals) = required_literals(pattern) else { return };
    // Each match is checked (not just the first): the shell asks whether any match exists, and the
    // required set must hold for whichever one that is.
    for found in regex.find_iter(text) {
        let matched = &text.as_bytes()[found.range()];
        assert!(
            literals.iter().any(|l| matched.windows(l.len()).any(|w| w == l.as_slice())),
            "{pattern:?} matched {:?} in {text:?}, which contains none of {literals:?}",
            String::from_utf8_lossy(matched)
        );
    }
});
