//! The exact names an executable pattern matches, when it matches only a few whole strings:
//! `^sudo$`, `^(rm|rmdir)$`, `^python3\.11$`, `^python3?$`, `^python[23]$`, `(?i)^ls$`.
//!
//! Read from the regex syntax tree, parsed by the same function with the same syntax as the engine
//! the shell layer matches with ([`super::shell::compile`]), so escapes, groups, flags and anchors
//! mean what they mean to the engine: `^ls|cat$` is "`ls` at the start or `cat` at the end" and has
//! no exact names, `^a\$` ends in a literal dollar and is not anchored at the end.
//!
//! This is the one recogniser for such patterns: the shell layer's index looks names up instead of
//! running the pattern, the kernel enforces the rules of original policies that are such lists, and
//! shadowed-rule warnings compare the lists. Each use relies on the set being exact: a pattern
//! matches a string if and only if the string is one of its names.

use regex_syntax::hir::{Class, Hir, HirKind, Look};

/// Names beyond this many give no set (the pattern is then matched as a regex).
const MAX_NAMES: usize = 64;
/// Characters a class may have to be expanded.
const MAX_CLASS_CHARS: u32 = 16;
/// Repetitions with a larger upper bound are not expanded.
const MAX_REPEAT: u32 = 4;

/// The names a whole-string match of `pattern` can be, or `None` when the pattern is not anchored at
/// both ends, matches the empty name, or matches more than a few names (or does not parse).
#[must_use]
pub fn exact_names(pattern: &str) -> Option<Vec<String>> {
    let hir = regex_automata::util::syntax::parse(pattern).ok()?;
    let HirKind::Concat(parts) = hir.kind() else { return None };
    let (first, rest) = parts.split_first()?;
    let (last, middle) = rest.split_last()?;
    if !matches!(first.kind(), HirKind::Look(Look::Start)) || !matches!(last.kind(), HirKind::Look(Look::End))
    {
        return None;
    }
    let names = concat(middle)?;
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        let name = String::from_utf8(name).ok()?;
        if name.is_empty() {
            return None;
        }
        if !out.contains(&name) {
            out.push(name);
        }
    }
    Some(out)
}

/// Every string `hir` matches, if they are few.
fn strings(hir: &Hir) -> Option<Vec<Vec<u8>>> {
    match hir.kind() {
        HirKind::Empty => Some(vec![Vec::new()]),
        HirKind::Literal(literal) => Some(vec![literal.0.to_vec()]),
        HirKind::Class(class) => class_strings(class),
        HirKind::Capture(capture) => strings(&capture.sub),
        HirKind::Concat(parts) => concat(parts),
        HirKind::Alternation(branches) => {
            let mut union = Vec::new();
            for branch in branches {
                union.extend(strings(branch)?);
                if union.len() > MAX_NAMES {
                    return None;
                }
            }
            Some(union)
        }
        HirKind::Repetition(repetition) => {
            let max = repetition.max.filter(|&max| max <= MAX_REPEAT)?;
            let body = strings(&repetition.sub)?;
            let mut union = Vec::new();
            for count in repetition.min..=max {
                let mut repeated = vec![Vec::new()];
                for _ in 0..count {
                    repeated = product(&repeated, &body)?;
                }
                union.extend(repeated);
                if union.len() > MAX_NAMES {
                    return None;
                }
            }
            Some(union)
        }
        // An anchor or word boundary inside the name: not a plain list.
        HirKind::Look(_) => None,
    }
}

/// Every string the concatenation of `parts` matches, if they are few.
fn concat(parts: &[Hir]) -> Option<Vec<Vec<u8>>> {
    let mut out = vec![Vec::new()];
    for part in parts {
        out = product(&out, &strings(part)?)?;
    }
    Some(out)
}

/// Each of `prefixes` followed by each of `suffixes`, if they are few.
fn product(prefixes: &[Vec<u8>], suffixes: &[Vec<u8>]) -> Option<Vec<Vec<u8>>> {
    if prefixes.len().saturating_mul(suffixes.len()) > MAX_NAMES {
        return None;
    }
    Some(
        prefixes
            .iter()
            .flat_map(|prefix| {
                suffixes.iter().map(move |suffix| {
                    let mut joined = prefix.clone();
                    joined.extend_from_slice(suffix);
                    joined
                })
            })
            .collect(),
    )
}

/// The characters of a small class, each as a string.
fn class_strings(class: &Class) -> Option<Vec<Vec<u8>>> {
    let ranges: Vec<(u32, u32)> = match class {
        Class::Unicode(class) => {
            class.ranges().iter().map(|r| (u32::from(r.start()), u32::from(r.end()))).collect()
        }
        Class::Bytes(class) => {
            class.ranges().iter().map(|r| (u32::from(r.start()), u32::from(r.end()))).collect()
        }
    };
    let size: u32 = ranges.iter().map(|&(start, end)| end - start + 1).sum();
    if size == 0 || size > MAX_CLASS_CHARS {
        return None;
    }
    let unicode = matches!(class, Class::Unicode(_));
    ranges
        .into_iter()
        .flat_map(|(start, end)| start..=end)
        .map(|c| {
            if unicode {
                char::from_u32(c).map(|c| c.to_string().into_bytes())
            } else {
                u8::try_from(c).ok().map(|b| vec![b])
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::exact_names;

    fn names(pattern: &str) -> Option<Vec<String>> {
        exact_names(pattern)
    }

    fn list(items: &[&str]) -> Option<Vec<String>> {
        let names = items.iter().map(|s| (*s).to_string()).collect();
        (!items.is_empty()).then_some(names)
    }

    #[test]
    fn plain_lists_of_names() {
        assert_eq!(names("^sudo$"), list(&["sudo"]));
        assert_eq!(names("^(ls|cat|grep)$"), list(&["ls", "cat", "grep"]));
        assert_eq!(names("^(?:rm|rmdir)$"), list(&["rm", "rmdir"]));
        assert_eq!(names("^python3\\.11$"), list(&["python3.11"]));
        assert_eq!(names("^(?:g\\+\\+|cc)$"), list(&["g++", "cc"]));
        assert_eq!(names("\\Anc\\z"), list(&["nc"]));
    }

    #[test]
    fn small_classes_optional_parts_and_case_folding_expand() {
        assert_eq!(names("^python[23]$"), list(&["python2", "python3"]));
        assert_eq!(names("^python3?$"), list(&["python", "python3"]));
        // Unicode case folding: `s` also matches the long s `ſ` (U+017F), as the engine does.
        let mut folded = names("(?i)^ls$").expect("finite");
        folded.sort();
        assert_eq!(folded, ["LS", "Ls", "Lſ", "lS", "ls", "lſ"]);
    }

    #[test]
    fn what_is_not_a_list_of_names() {
        assert_eq!(names("^ls|cat$"), None, "`^ls` or `cat$`: not anchored at both ends");
        assert_eq!(names("^(ls|cat)"), None, "unanchored end");
        assert_eq!(names("ls"), None, "matches any name containing ls");
        assert_eq!(names("^py.*$"), None);
        assert_eq!(names("^a\\$"), None, "a literal dollar, not an anchor");
        assert_eq!(names("^a$|^b$"), None, "an alternation of anchored patterns is left to the engine");
        assert_eq!(names("^(a|)$"), None, "matches the empty name");
        assert_eq!(names("^(a||b)$"), None, "matches the empty name");
        assert_eq!(names("^$"), None);
        assert_eq!(names("(?m)^ls$"), None, "line anchors match inside a name");
        assert_eq!(names("^[a-z]$"), None, "too many names");
        assert_eq!(names("^a{1,10}$"), None, "too many repetitions");
        assert_eq!(names("^(ls"), None, "does not parse");
    }

    /// Exactness against the engine: every name matches, and strings near the names do not.
    #[test]
    fn names_are_exactly_what_the_engine_matches() {
        for pattern in
            ["^(rm|rmdir)$", "^python[23]?$", "(?i)^sudo$", "^(?:g\\+\\+|c(c|\\+\\+))$", "^x{2,3}$"]
        {
            let found = exact_names(pattern).expect("finite");
            let engine = crate::policy::shell::compile(&[pattern]).expect("compiles");
            for name in &found {
                assert!(engine.is_match(name.as_str()), "{pattern} must match {name}");
                let tail: String = name.chars().skip(1).collect();
                for near in [format!("{name}x"), format!("x{name}"), tail] {
                    assert_eq!(
                        engine.is_match(near.as_str()),
                        found.contains(&near),
                        "{pattern} vs {near:?}"
                    );
                }
            }
        }
    }
}
