//! Adding entries to a policy file's lists as text, so that its comments, order and layout survive
//! (a YAML round trip would drop every comment). Places come from [`super::locate::Locator`]; the
//! result is checked by parsing it again before anyone writes it.

use super::locate::Locator;

/// Why entries could not be added.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error(
        "line {line}: `{list}` is written in flow style ([…]); add the entries by hand or write it as a block list (one `- …` per line)"
    )]
    FlowStyle { list: String, line: usize },
    #[error("`{0}` is not a list in the policy")]
    NotAList(String),
}

/// One entry to add: a flow mapping (`{ id: x, path: /usr/bin/x }`) and the comment lines above it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The entry's id (also in `mapping`).
    pub id: String,
    pub comments: Vec<String>,
    pub mapping: String,
}

/// A list of the policy: its dotted path (`exec.allow`, `network.allow`, `rules`).
fn parts(list: &str) -> (Option<&str>, &str) {
    match list.rsplit_once('.') {
        Some((parent, key)) => (Some(parent), key),
        None => (None, list),
    }
}

fn indentation(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Whether a line carries YAML content (not blank, not only a comment).
fn content(line: &str) -> bool {
    let trimmed = line.trim_start();
    !trimmed.is_empty() && !trimmed.starts_with('#')
}

/// The index of the line after the last content line of the block that starts at line `start`
/// (0-based) with a key indented by `indent`: where an entry appended to that block goes.
fn block_end(lines: &[&str], start: usize, indent: usize) -> usize {
    let mut end = start + 1;
    for (i, line) in lines.iter().enumerate().skip(start + 1) {
        if !content(line) {
            continue;
        }
        // A sequence may sit at its key's own indentation (`allow:` then `- …` at the same column).
        let sequence_item = indentation(line) == indent && line.trim_start().starts_with("- ");
        if indentation(line) <= indent && !sequence_item {
            break;
        }
        end = i + 1;
    }
    end
}

/// Appends `items` to the end of the list at `list`, creating the list (and its parent section)
/// when the policy has none.
///
/// # Errors
/// The list is written in flow style, or the path names something else than a list.
pub fn append(text: &str, list: &str, items: &[Item]) -> Result<String, EditError> {
    if items.is_empty() {
        return Ok(text.to_string());
    }
    let locator = Locator::new(text.to_string());
    let lines: Vec<&str> = text.lines().collect();
    let render = |prefix: &str, indent: &str| -> Vec<String> {
        let mut out = Vec::new();
        for item in items {
            out.extend(item.comments.iter().map(|c| format!("{indent}# {c}")));
            out.push(format!("{prefix}{}", item.mapping));
        }
        out
    };
    let (insert_at, new_lines) = if let Some((line, _)) = locator.exact(&format!("{list}[0]")) {
        // A block list: its items start with the first one's prefix (`    - `).
        let first = lines.get(line.saturating_sub(1)).copied().unwrap_or_default();
        if !first.trim_start().starts_with("- ") {
            return Err(EditError::FlowStyle { list: list.into(), line });
        }
        let indent = " ".repeat(indentation(first));
        let prefix = format!("{indent}- ");
        let (key_line, _) = locator.exact(list).ok_or_else(|| EditError::NotAList(list.into()))?;
        let key_indent = lines.get(key_line.saturating_sub(1)).map_or(0, |l| indentation(l));
        // The list's key may share the first item's line (`- allow:` is not a thing here): walk from
        // the key's line.
        let start = key_line.saturating_sub(1).min(line.saturating_sub(1));
        (block_end(&lines, start, key_indent), render(&prefix, &indent))
    } else if locator.exact(list).is_some() {
        let (line, _) = locator.exact(list).unwrap_or_default();
        let here = lines.get(line.saturating_sub(1)).copied().unwrap_or_default();
        if here.contains('[') || here.contains('{') {
            return Err(EditError::FlowStyle { list: list.into(), line });
        }
        return Err(EditError::NotAList(list.into()));
    } else {
        let (parent, key) = parts(list);
        if let Some((parent, (line, _))) = parent.and_then(|p| locator.exact(p).map(|place| (p, place))) {
            let parent_key_line = (1..=line)
                .rev()
                .find(|&l| {
                    lines.get(l - 1).is_some_and(|t| {
                        content(t) && t.trim_start().starts_with(&format!("{}:", parts(parent).1))
                    })
                })
                .unwrap_or(line);
            let parent_indent = lines.get(parent_key_line - 1).map_or(0, |l| indentation(l));
            // The child keys' indentation: the parent's first content line below its key.
            let child = lines
                .iter()
                .skip(parent_key_line)
                .find(|l| content(l))
                .map(|l| indentation(l))
                .filter(|&i| i > parent_indent)
                .unwrap_or(parent_indent + 2);
            let end = block_end(&lines, parent_key_line - 1, parent_indent);
            let indent = " ".repeat(child);
            let mut out = vec![format!("{indent}{key}:")];
            out.extend(render(&format!("{indent}  - "), &format!("{indent}  ")));
            (end, out)
        } else {
            // No parent section (or a top-level list): append it to the file.
            let mut out = Vec::new();
            let mut indent = String::new();
            if let Some(parent) = parent {
                out.push(format!("{parent}:"));
                indent.push_str("  ");
            }
            out.push(format!("{indent}{key}:"));
            out.extend(render(&format!("{indent}  - "), &format!("{indent}  ")));
            (lines.len(), out)
        }
    };
    let mut result: Vec<String> = lines.iter().map(ToString::to_string).collect();
    let at = insert_at.min(result.len());
    result.splice(at..at, new_lines);
    let mut joined = result.join("\n");
    joined.push('\n');
    Ok(joined)
}

/// A YAML scalar for a flow mapping: plain when that is safe, double-quoted otherwise.
#[must_use]
pub fn scalar(text: &str) -> String {
    let plain = !text.is_empty()
        && text.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+@".contains(c))
        && !text.starts_with(['-', '.', '@'])
        && !matches!(text, "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "~")
        && text.parse::<f64>().is_err();
    if plain { text.to_string() } else { serde_json::Value::String(text.into()).to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(mapping: &str) -> Item {
        Item { id: "n".into(), comments: vec!["seen twice".into()], mapping: mapping.into() }
    }

    #[test]
    fn appends_to_a_block_list_keeping_comments() {
        let text = "# top\nexec:\n  default: deny\n  allow:\n    # system\n    - { id: a, dir: /usr/bin }\n    - id: b\n      path: /x\n\n  # the denies\n  deny:\n    - { id: c, name: su }\nrules: []\n";
        let out = append(text, "exec.allow", &[item("{ id: n, path: /opt/n }")]).expect("append");
        assert_eq!(
            out,
            "# top\nexec:\n  default: deny\n  allow:\n    # system\n    - { id: a, dir: /usr/bin }\n    - id: b\n      path: /x\n    # seen twice\n    - { id: n, path: /opt/n }\n\n  # the denies\n  deny:\n    - { id: c, name: su }\nrules: []\n"
        );
    }

    #[test]
    fn a_list_at_its_keys_indentation() {
        let text = "network:\n  allow:\n  - { id: a, cidr: 10.0.0.0/8 }\n  loopback: true\n";
        let out = append(text, "network.allow", &[item("{ id: n, cidr: 10.1.1.1/32 }")]).expect("append");
        assert_eq!(
            out,
            "network:\n  allow:\n  - { id: a, cidr: 10.0.0.0/8 }\n  # seen twice\n  - { id: n, cidr: 10.1.1.1/32 }\n  loopback: true\n"
        );
    }

    #[test]
    fn creates_the_list_and_the_section() {
        let text = "version: \"2.0\"\nexec:\n  default: deny\nrules:\n  - { id: r, match: { executable: x }, effect: deny }\n";
        let out = append(text, "exec.allow", &[item("{ id: n, path: /n }")]).expect("append");
        assert_eq!(
            out,
            "version: \"2.0\"\nexec:\n  default: deny\n  allow:\n    # seen twice\n    - { id: n, path: /n }\nrules:\n  - { id: r, match: { executable: x }, effect: deny }\n"
        );
        let out = append(text, "network.allow", &[item("{ id: n, cidr: 1.2.3.4/32 }")]).expect("append");
        assert!(
            out.ends_with("network:\n  allow:\n    # seen twice\n    - { id: n, cidr: 1.2.3.4/32 }\n"),
            "{out}"
        );
    }

    #[test]
    fn flow_lists_are_left_to_people() {
        let text = "exec:\n  allow: [{ id: a, dir: /usr/bin }]\n";
        assert!(matches!(append(text, "exec.allow", &[item("{ id: n }")]), Err(EditError::FlowStyle { .. })));
    }

    #[test]
    fn scalars_are_quoted_when_needed() {
        assert_eq!(scalar("/usr/bin/node"), "/usr/bin/node");
        assert_eq!(scalar("a b"), "\"a b\"");
        assert_eq!(scalar("*.example.com"), "\"*.example.com\"");
        assert_eq!(scalar("yes"), "\"yes\"");
        assert_eq!(scalar("443"), "\"443\"");
    }
}
