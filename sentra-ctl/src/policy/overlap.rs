//! Whether two patterns can match the same text, decided on the patterns themselves: both are
//! compiled to DFAs and their product is explored for a text that both match (a match anywhere, as
//! the shell layer's `is_match` searches). Used by `policy check` to find deny rules that an earlier
//! allow rule reaches first.

use std::collections::{HashMap, HashSet, VecDeque};

use regex_automata::{
    Anchored,
    dfa::{Automaton as _, StartKind, dense},
    util::{primitives::StateID, start},
};

/// The answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// Some text matches both.
    Yes,
    /// No text does.
    No,
    /// The patterns are beyond what is explored here (a DFA too large, look-arounds a DFA lacks).
    Unknown,
}

/// Product states explored before giving up.
const MAX_STATES: usize = 200_000;
/// Size limit of each DFA.
const DFA_LIMIT: usize = 4 << 20;

fn dfa(pattern: &str) -> Option<dense::DFA<Vec<u32>>> {
    let config = dense::DFA::config()
        .start_kind(StartKind::Unanchored)
        // `\b` is Unicode-aware in policies; a DFA knows it only over ASCII and quits at other
        // bytes. Texts are then explored over ASCII only: a text found is a real witness.
        .unicode_word_boundary(true)
        .dfa_size_limit(Some(DFA_LIMIT))
        .determinize_size_limit(Some(DFA_LIMIT));
    dense::Builder::new().configure(config).build(pattern).ok()
}

/// Patterns compiled once for many comparisons.
#[derive(Default)]
pub struct Automata {
    dfas: HashMap<String, Option<dense::DFA<Vec<u32>>>>,
}

impl Automata {
    /// Whether some text matches both `a` and `b` (`None`: the field is not constrained).
    pub fn overlap(&mut self, a: Option<&str>, b: Option<&str>) -> Overlap {
        let (Some(a), Some(b)) = (a, b) else { return Overlap::Yes };
        if a == b {
            return Overlap::Yes;
        }
        for pattern in [a, b] {
            if !self.dfas.contains_key(pattern) {
                self.dfas.insert(pattern.to_string(), dfa(pattern));
            }
        }
        match (self.dfas.get(a), self.dfas.get(b)) {
            (Some(Some(da)), Some(Some(db))) => product(da, db),
            _ => Overlap::Unknown,
        }
    }
}

/// Whether some text matches both `a` and `b` (`None`: the field is not constrained).
#[must_use]
pub fn overlap(a: Option<&str>, b: Option<&str>) -> Overlap {
    Automata::default().overlap(a, b)
}

/// Explores the product of two DFAs for a text both match.
fn product(da: &dense::DFA<Vec<u32>>, db: &dense::DFA<Vec<u32>>) -> Overlap {
    let config = start::Config::new().anchored(Anchored::No);
    let (Ok(sa), Ok(sb)) = (da.start_state(&config), db.start_state(&config)) else {
        return Overlap::Unknown;
    };
    // A side that has matched stays matched whatever follows (`None`): `is_match` semantics.
    let matched = |dfa: &dense::DFA<Vec<u32>>, state: Option<StateID>| match state {
        None => true,
        Some(id) => dfa.is_match_state(id),
    };
    let mut seen: HashSet<(Option<StateID>, Option<StateID>)> = HashSet::new();
    let mut queue = VecDeque::from([(Some(sa), Some(sb))]);
    while let Some((sa, sb)) = queue.pop_front() {
        // DFAs report a match one byte late; matched states collapse to `None`.
        let sa = if matched(da, sa) { None } else { sa };
        let sb = if matched(db, sb) { None } else { sb };
        if sa.is_none() && sb.is_none() {
            return Overlap::Yes;
        }
        if !seen.insert((sa, sb)) {
            continue;
        }
        if seen.len() > MAX_STATES {
            return Overlap::Unknown;
        }
        if [(da, sa), (db, sb)]
            .iter()
            .any(|(dfa, s)| s.is_some_and(|id| dfa.is_dead_state(id) || dfa.is_quit_state(id)))
        {
            continue;
        }
        // The text ends here.
        let end_a = sa.is_none_or(|id| da.is_match_state(da.next_eoi_state(id)));
        let end_b = sb.is_none_or(|id| db.is_match_state(db.next_eoi_state(id)));
        if end_a && end_b {
            return Overlap::Yes;
        }
        for byte in 0..=u8::MAX {
            let next = (sa.map(|id| da.next_state(id, byte)), sb.map(|id| db.next_state(id, byte)));
            if !seen.contains(&next) {
                queue.push_back(next);
            }
        }
    }
    Overlap::No
}

#[cfg(test)]
mod tests {
    use super::{Overlap, overlap};

    #[test]
    fn decided_on_the_patterns() {
        let yes = [
            ("^(cat|head|tail)$", "^cat$"),
            ("^cat$", "^(cat|less)$"),
            (r"\.env", r"^\S*\.env\b|secret"),
            ("^git$", "^g"),
            (".*", "^rm$"),
            (r"(^|\s)/etc/shadow", "/etc/"),
            ("^python[0-9.]*$", "^python3$"),
        ];
        for (a, b) in yes {
            assert_eq!(overlap(Some(a), Some(b)), Overlap::Yes, "{a} / {b}");
            assert_eq!(overlap(Some(b), Some(a)), Overlap::Yes, "{b} / {a}");
        }
        let no = [("^cat$", "^ls$"), ("^(cat|head)$", "^tail$"), ("^[0-9]+$", "^[a-z]+$"), ("^a$", "^ab")];
        for (a, b) in no {
            assert_eq!(overlap(Some(a), Some(b)), Overlap::No, "{a} / {b}");
        }
        assert_eq!(overlap(None, Some("^x$")), Overlap::Yes);
        assert_eq!(overlap(Some("(unclosed"), Some("x")), Overlap::Unknown);
    }
}
