//! The shell layer skips a catch-all rule when the arguments contain none of the literals its pattern
//! requires (`sentra_ctl::policy::required`). That is sound only if every match of the pattern
//! contains one of them: input is a pattern and a text, separated by the first NUL byte, and a match
//! of the pattern in the text must contain one of the pattern's required literals.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sentra_ctl::policy::{required::required_literals, shell::compile};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else { return };
    let Some((pattern, text)) = input.split_once('\0') else { return };
    let Some(literals) = required_literals(pattern) else { return };
    let Ok(regex) = compile(&[pattern]) else { return };
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
