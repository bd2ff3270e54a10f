//! Where a value is in a policy file, for errors found after parsing (duplicate ids, bad regexes,
//! unresolvable paths). `serde_yaml` reports places only for its own errors, so the text is walked once
//! more with a parser that keeps marks (yaml-rust2), recording the line and column of every node by its
//! path: `exec.allow[2].id`, `rules[0].match.executable`.
//!
//! The walk happens at the first lookup: a valid policy usually needs none, and `sentra-shell` loads
//! the policy once per command, where the walk would cost more than everything else it does.

use std::{collections::HashMap, sync::OnceLock};

use yaml_rust2::{
    parser::{Event, MarkedEventReceiver, Parser},
    scanner::Marker,
};

/// Line and column (both 1-based) of each node, by path, indexed on first use.
#[derive(Debug, Default)]
pub struct Locator {
    text: String,
    places: OnceLock<HashMap<String, (usize, usize)>>,
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

#[derive(Default)]
struct Walker {
    stack: Vec<Frame>,
    places: HashMap<String, (usize, usize)>,
}

impl Walker {
    /// The path of the node that starts now, advancing the parent's position; `None` for a mapping key.
    fn next_path(&mut self, key_text: Option<&str>) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, index }) => {
                let p = format!("{path}[{index}]");
                *index += 1;
                Some(p)
            }
            Some(Frame::Map { path, key }) => {
                if let Some(k) = key.take() {
                    Some(if path.is_empty() { k } else { format!("{path}.{k}") })
                } else {
                    *key = Some(key_text.unwrap_or("?").to_string());
                    None
                }
            }
        }
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let place = (mark.line(), mark.col() + 1);
        match event {
            Event::Scalar(text, ..) => {
                if let Some(path) = self.next_path(Some(&text)) {
                    self.places.entry(path).or_insert(place);
                }
            }
            Event::MappingStart(..) => {
                let path = self.next_path(None).unwrap_or_default();
                self.places.entry(path.clone()).or_insert(place);
                self.stack.push(Frame::Map { path, key: None });
            }
            Event::SequenceStart(..) => {
                let path = self.next_path(None).unwrap_or_default();
                self.places.entry(path.clone()).or_insert(place);
                self.stack.push(Frame::Seq { path, index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

impl Locator {
    /// A locator for `text`, indexed at the first [`Locator::find`].
    #[must_use]
    pub const fn new(text: String) -> Self {
        Self { text, places: OnceLock::new() }
    }

    /// The policy text.
    #[must_use]
    pub fn text(&self) -> &str {
        &self.text
    }

    /// A text the parser rejects gives an empty index (`serde_yaml` has reported it).
    fn places(&self) -> &HashMap<String, (usize, usize)> {
        self.places.get_or_init(|| {
            let mut walker = Walker::default();
            let mut parser = Parser::new_from_str(&self.text);
            if parser.load(&mut walker, false).is_err() {
                return HashMap::new();
            }
            walker.places
        })
    }

    /// Line and column of `path` itself (`None` when the policy has no such node).
    #[must_use]
    pub fn exact(&self, path: &str) -> Option<(usize, usize)> {
        self.places().get(path).copied()
    }

    /// Line and column of `path`, or of its nearest ancestor that is known.
    #[must_use]
    pub fn find(&self, path: &str) -> Option<(usize, usize)> {
        let places = self.places();
        let mut path = path.to_string();
        loop {
            if let Some(place) = places.get(&path) {
                return Some(*place);
            }
            let cut = path.rfind(['.', '['])?;
            path.truncate(cut);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Locator;

    #[test]
    fn finds_nested_values() {
        let text = "version: \"2.0\"\nexec:\n  allow:\n    - id: a\n      dir: /usr\n    - { id: b, path: /x }\nrules:\n  - id: r\n    match:\n      executable: \"^(ls)$\"\n";
        let at = Locator::new(text.to_string());
        assert_eq!(at.find("version"), Some((1, 10)));
        assert_eq!(at.find("exec.allow[0].id"), Some((4, 11)));
        assert_eq!(at.find("exec.allow[1].path"), Some((6, 22)));
        assert_eq!(at.find("rules[0].match.executable"), Some((10, 19)));
        assert_eq!(at.find("exec.allow[1].reason"), Some((6, 7)), "falls back to the entry");
    }
}
