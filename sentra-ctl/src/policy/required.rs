//! Literals a regex's matches cannot avoid: a set such that every match of the pattern contains at
//! least one of them. The shell layer uses it to skip catch-all rules whose pattern cannot match a
//! command (one substring search for all of them) instead of running every such pattern.
//!
//! Soundness is what matters here, not precision: a set that is too large only costs a regex search,
//! while a wrong set would silently skip a deny rule. So each construct gives a set only where that
//! is plainly true, and `None` (no requirement known: always check the pattern) otherwise:
//! - a literal requires itself;
//! - a small class requires one of its characters;
//! - a concatenation requires what any one of its parts requires (every part matches inside it), and
//!   the most selective part is chosen;
//! - an alternation requires the union of what its branches require, if every branch requires
//!   something;
//! - a repetition requires what its body requires if the body must occur at least once;
//! - assertions (`^`, `\b`, …) and empty patterns require nothing.

use regex_syntax::hir::{Class, Hir, HirKind};

/// Classes with more characters than this are not expanded (`\s` has 25).
const MAX_CLASS_CHARS: u32 = 16;
/// Alternations whose union grows beyond this many literals give no set.
const MAX_LITERALS: usize = 64;

/// Literals at least one of which every match of `pattern` contains (as UTF-8 bytes), or `None` when
/// no such set is known. Parsed by the same function, with the same default syntax, as the engine
/// [`super::shell::compile`] builds; a pattern that does not parse gives `None`.
#[must_use]
pub fn required_literals(pattern: &str) -> Option<Vec<Vec<u8>>> {
    let hir = regex_automata::util::syntax::parse(pattern).ok()?;
    required(&hir)
}

fn required(hir: &Hir) -> Option<Vec<Vec<u8>>> {
    match hir.kind() {
        HirKind::Repetition(repetition) if repetition.min >= 1 => required(&repetition.sub),
        // A repetition that may occur zero times requires nothing.
        HirKind::Empty | HirKind::Look(_) | HirKind::Repetition(_) => None,
        HirKind::Literal(literal) => (!literal.0.is_empty()).then(|| vec![literal.0.to_vec()]),
        HirKind::Class(class) => class_literals(class),
        HirKind::Capture(capture) => required(&capture.sub),
        HirKind::Concat(parts) => parts.iter().filter_map(required).max_by_key(|set| selectivity(set)),
        HirKind::Alternation(branches) => {
            let mut union: Vec<Vec<u8>> = Vec::new();
            for branch in branches {
                union.extend(required(branch)?);
                if union.len() > MAX_LITERALS {
                    return None;
                }
            }
            union.sort_unstable();
            union.dedup();
            Some(union)
        }
    }
}

/// Longer shortest literal first (rarer in text), then fewer literals.
fn selectivity(set: &[Vec<u8>]) -> (usize, std::cmp::Reverse<usize>) {
    (set.iter().map(Vec::len).min().unwrap_or(0), std::cmp::Reverse(set.len()))
}

/// The characters of a small class, each as a literal.
fn class_literals(class: &Class) -> Option<Vec<Vec<u8>>> {
    let literals: Vec<Vec<u8>> = match class {
        Class::Unicode(class) => {
            small(class.ranges().iter().map(|r| (u32::from(r.start()), u32::from(r.end()))))?
                .filter_map(char::from_u32)
                .map(|c| c.to_string().into_bytes())
                .collect()
        }
        Class::Bytes(class) => {
            small(class.ranges().iter().map(|r| (u32::from(r.start()), u32::from(r.end()))))?
                .filter_map(|b| u8::try_from(b).ok())
                .map(|b| vec![b])
                .collect()
        }
    };
    (!literals.is_empty()).then_some(literals)
}

/// The values of inclusive `ranges`, if there are at most [`MAX_CLASS_CHARS`] of them.
fn small(ranges: impl Iterator<Item = (u32, u32)> + Clone) -> Option<impl Iterator<Item = u32>> {
    let count = ranges.clone().try_fold(0u32, |count, (start, end)| {
        let count = count.checked_add(end.checked_sub(start)?.checked_add(1)?)?;
        (count <= MAX_CLASS_CHARS).then_some(count)
    });
    count.map(|_| ranges.flat_map(|(start, end)| start..=end))
}

#[cfg(test)]
mod tests {
    use super::required_literals;

    fn strings(pattern: &str) -> Option<Vec<String>> {
        required_literals(pattern)
            .map(|set| set.into_iter().map(|l| String::from_utf8(l).expect("utf-8")).collect())
    }

    #[test]
    fn literals_every_match_contains() {
        assert_eq!(strings(r"(^|\s)--secret-5(\s|$)"), Some(vec!["--secret-5".into()]));
        assert_eq!(strings(r"\.env\b"), Some(vec![".env".into()]));
        assert_eq!(strings(r"rm\s+-rf\s+/"), Some(vec!["-rf".into()]));
        assert_eq!(strings(r"/etc/(shadow|passwd)"), Some(vec!["passwd".into(), "shadow".into()]));
        assert_eq!(strings(r"(shadow|gshadow)$"), Some(vec!["gshadow".into(), "shadow".into()]));
        assert_eq!(strings(r"(?i)ab"), Some(vec!["B".into(), "b".into()]));
        assert_eq!(strings(r"x{2,}"), Some(vec!["x".into()]));
        assert_eq!(strings(r"[ab]"), Some(vec!["a".into(), "b".into()]));
        assert_eq!(strings(r"(?-u:[A-C])"), Some(vec!["A".into(), "B".into(), "C".into()]));
    }

    #[test]
    fn no_set_where_a_match_may_contain_no_literal() {
        for pattern in [".*", r"\w+", "a*", "(a|b*)", "^$", r"\b", "", "[a-z]{3}", "(a|.)", "(?s)."] {
            assert_eq!(required_literals(pattern), None, "{pattern}");
        }
        assert_eq!(required_literals("("), None, "a pattern that does not parse");
    }
}
