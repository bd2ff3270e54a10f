//! A bound on how deeply a command line nests, found without parsing it.
//!
//! The parser (and the tokenizer under it) recurses once per level of nesting, and the walk parses each
//! substitution again: a line nested thousands of levels deep would overflow the stack, and one nested
//! hundreds of levels deep costs time quadratic in its length. Lines nested deeper than
//! [`MAX_NESTING`] are refused before the parser sees them.
//!
//! The bound must never be lower than the parser's real depth (an underestimate is a crash), so the
//! scan follows the shell's quoting rules where they decide what closes a level, and otherwise errs
//! high: a word that only looks like a keyword (`echo if`) opens a level that never closes.
//! - Single quotes hold nothing; a backslash escapes the next character.
//! - `$(`, `` ` ``, `${` and a here-document body start a new quoting context (double quotes outside
//!   do not apply inside); the context ends with its closer and the outer quoting comes back.
//! - `(` opens a level outside double quotes; `)` closes one only when the innermost level is a paren
//!   (a `case` pattern's `)` closes nothing).
//! - `{` in command position opens a group, closed only by `}` in command position; `${` opens a
//!   parameter expansion, closed by `}`.
//! - `if`/`elif`, `while`/`until`/`for`/`select` and `case` in command position open levels; `fi`,
//!   `done` and `esac` in command position close up to their opener.
//! - A here-document body (from the line after `<<WORD` to the line `WORD`) is data when `WORD` is
//!   quoted, and holds expansions otherwise: it is scanned as double-quoted text.

/// Deepest nesting analysed: far beyond any real command line, far below what the stack holds.
pub const MAX_NESTING: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Level {
    /// `(`, `$(`, `<(`, `>(`: closed by `)`; remembers the double-quoting outside it.
    Paren { quoted: bool },
    /// `` ` ``: closed by the next unescaped backquote.
    Backquote { quoted: bool },
    /// `${`: closed by `}`.
    Param { quoted: bool },
    /// `{` in command position: closed by `}` in command position.
    Group,
    /// `if`: closed by `fi`.
    If,
    /// `elif`, which the grammar nests inside its `if`: closed by that `fi`.
    Elif,
    /// `while`, `until`, `for`, `select`: closed by `done`.
    Loop,
    /// `case`: closed by `esac`.
    Case,
}

/// The deepest nesting of `text` (never less than the parser's), or `None` past `limit`.
#[must_use]
pub fn nesting_bound(text: &str, limit: usize) -> Option<usize> {
    shape(text, limit).map(|shape| shape.deepest)
}

/// What the scan found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Never less than the parser's depth.
    pub deepest: usize,
    /// A substitution (`$(`, `` ` ``, `${`, `(`) or a `case` is still open at the end: the line is
    /// incomplete.
    pub unclosed: bool,
    /// The line has a here-document operator.
    pub heredoc: bool,
}

/// The shape of `text`, or `None` when it nests deeper than `limit`.
#[must_use]
pub fn shape(text: &str, limit: usize) -> Option<Shape> {
    let mut scanner = Scanner { bytes: text.as_bytes(), limit, deepest: 0, unclosed: false, heredoc: false };
    scanner.scan(0, false)?;
    Some(Shape { deepest: scanner.deepest, unclosed: scanner.unclosed, heredoc: scanner.heredoc })
}

struct Scanner<'a> {
    bytes: &'a [u8],
    limit: usize,
    deepest: usize,
    unclosed: bool,
    heredoc: bool,
}

impl Scanner<'_> {
    /// Scans all of `bytes`, starting `base` levels deep, in double quotes when `quoted` (a here-document
    /// body). `None` when the limit is passed.
    #[expect(
        clippy::too_many_lines,
        reason = "one state machine over the line's bytes: its arms share the cursor, the quoting and the stack"
    )]
    fn scan(&mut self, base: usize, quoted: bool) -> Option<usize> {
        let bytes = self.bytes;
        let mut stack: Vec<Level> = Vec::new();
        let mut quoted = quoted;
        // Whether the next word is in command position (keywords and `{`/`}` count only there).
        let mut command = !quoted;
        // Here-documents whose bodies start at the next newline: (delimiter, expands, strip tabs).
        let mut pending: Vec<(Vec<u8>, bool, bool)> = Vec::new();
        // Whether a word may start here: a `#` there begins a comment.
        let mut boundary = true;
        let mut i = 0;
        while i < bytes.len() {
            let c = bytes[i];
            let mut next_command = false;
            match c {
                b'\\' => i += 1,
                b'\'' if !quoted => {
                    i += bytes[i + 1..].iter().position(|&b| b == b'\'').map_or(bytes.len(), |at| at + 1);
                }
                b'"' => quoted = !quoted,
                b'#' if boundary && !quoted => {
                    i += bytes[i..].iter().position(|&b| b == b'\n').map_or(bytes.len() - i, |at| at - 1);
                }
                b'$' if bytes.get(i + 1) == Some(&b'(') => {
                    stack.push(Level::Paren { quoted });
                    quoted = false;
                    next_command = true;
                    i += 1;
                }
                b'$' if bytes.get(i + 1) == Some(&b'{') => {
                    stack.push(Level::Param { quoted });
                    quoted = false;
                    i += 1;
                }
                b'`' => {
                    if let Some(Level::Backquote { quoted: outer }) = stack.last().copied() {
                        stack.pop();
                        quoted = outer;
                    } else {
                        stack.push(Level::Backquote { quoted });
                        quoted = false;
                        next_command = true;
                    }
                }
                b'(' if !quoted => {
                    stack.push(Level::Paren { quoted });
                    next_command = true;
                }
                b')' if !quoted => {
                    if let Some(Level::Paren { quoted: outer }) = stack.last().copied() {
                        stack.pop();
                        quoted = outer;
                    }
                    next_command = true;
                }
                b'{' if !quoted && command && is_delimiter(bytes.get(i + 1)) => {
                    stack.push(Level::Group);
                    next_command = true;
                }
                b'}' if !quoted => match stack.last().copied() {
                    Some(Level::Param { quoted: outer }) => {
                        stack.pop();
                        quoted = outer;
                    }
                    Some(Level::Group) if command => {
                        stack.pop();
                        next_command = true;
                    }
                    _ => {}
                },
                b'<' if !quoted && bytes.get(i + 1) == Some(&b'<') && bytes.get(i + 2) != Some(&b'<') => {
                    self.heredoc = true;
                    let (delimiter, expands, strip, end) = heredoc_operator(bytes, i + 2);
                    pending.push((delimiter, expands, strip));
                    i = end.saturating_sub(1);
                }
                b'\n' if !quoted && !pending.is_empty() => {
                    let depth = base + stack.len();
                    i = self.bodies(std::mem::take(&mut pending), i + 1, depth)?;
                    next_command = true;
                }
                b';' | b'&' | b'|' | b'\n' if !quoted => next_command = true,
                _ if !quoted && command && c.is_ascii_lowercase() => {
                    let end = bytes[i..]
                        .iter()
                        .position(|b| !b.is_ascii_lowercase())
                        .map_or(bytes.len(), |n| i + n);
                    if is_delimiter(bytes.get(end)) {
                        next_command = keyword(&mut stack, &bytes[i..end]);
                    }
                    i = end - 1;
                }
                _ => {}
            }
            if !quoted && is_blank(c) {
                next_command |= command;
            }
            // An escaped character (the `\\` arm stepped over it) is part of a word.
            boundary = c != b'\\' && !quoted && (is_blank(c) || b"\n;&|()".contains(&c));
            command = next_command;
            self.deepest = self.deepest.max(base + stack.len());
            if self.deepest > self.limit {
                return None;
            }
            i += 1;
        }
        // An unclosed `case` too: the parser backtracks exponentially over runs of them (each pattern's
        // `)` can end an item or not).
        self.unclosed |= stack.iter().any(|level| {
            matches!(level, Level::Paren { .. } | Level::Backquote { .. } | Level::Param { .. } | Level::Case)
        });
        Some(self.deepest)
    }

    /// Skips the bodies of `docs`, which start at `start`, scanning those that expand; returns where
    /// the last ends.
    fn bodies(&mut self, docs: Vec<(Vec<u8>, bool, bool)>, start: usize, depth: usize) -> Option<usize> {
        let bytes = self.bytes;
        let mut at = start;
        for (delimiter, expands, strip) in docs {
            let body_start = at;
            let mut body_end = bytes.len();
            while at < bytes.len() {
                let line_end = bytes[at..].iter().position(|&b| b == b'\n').map_or(bytes.len(), |n| at + n);
                let mut line = &bytes[at..line_end];
                if strip {
                    while let [b'\t', rest @ ..] = line {
                        line = rest;
                    }
                }
                if line == delimiter.as_slice() {
                    body_end = at;
                    at = line_end + 1;
                    break;
                }
                at = line_end + 1;
            }
            if expands {
                // Both ends within the text: a body may run to its end (no delimiter line), and the
                // next one then starts past it.
                let end = body_end.min(bytes.len());
                let body = &bytes[body_start.min(end)..end];
                let mut inner =
                    Scanner { bytes: body, limit: self.limit, deepest: 0, unclosed: false, heredoc: false };
                let inner_deepest = inner.scan(depth, true)?;
                self.deepest = self.deepest.max(inner_deepest);
                self.unclosed |= inner.unclosed;
                self.heredoc |= inner.heredoc;
            }
        }
        // Back up to the newline ending the last body, which the caller steps over.
        Some(at.min(bytes.len()).saturating_sub(1))
    }
}

/// The here-document operator's word starting at `at` (after `<<`): its delimiter, whether the body
/// expands (the word is unquoted), whether tabs are stripped (`<<-`), and where the word ends.
fn heredoc_operator(bytes: &[u8], mut at: usize) -> (Vec<u8>, bool, bool, usize) {
    let strip = bytes.get(at) == Some(&b'-');
    if strip {
        at += 1;
    }
    while bytes.get(at).is_some_and(|&b| is_blank(b)) {
        at += 1;
    }
    let mut delimiter = Vec::new();
    let mut expands = true;
    let mut quote: Option<u8> = None;
    while let Some(&b) = bytes.get(at) {
        match (quote, b) {
            (Some(q), _) if b == q => quote = None,
            (None, b'\'' | b'"') => {
                quote = Some(b);
                expands = false;
            }
            (None, b'\\') => {
                expands = false;
                at += 1;
                if let Some(&escaped) = bytes.get(at) {
                    delimiter.push(escaped);
                }
            }
            (None, _) if is_blank(b) || b"\n;&|<>()".contains(&b) => break,
            _ => delimiter.push(b),
        }
        at += 1;
    }
    (delimiter, expands, strip, at)
}

/// Opens or closes the level of a keyword in command position; whether `word` is one (the next word
/// is then in command position too).
fn keyword(stack: &mut Vec<Level>, word: &[u8]) -> bool {
    match word {
        b"if" => stack.push(Level::If),
        b"elif" => stack.push(Level::Elif),
        b"while" | b"until" | b"for" | b"select" => stack.push(Level::Loop),
        b"case" => stack.push(Level::Case),
        b"fi" => close_to(stack, Level::If),
        b"done" => close_to(stack, Level::Loop),
        b"esac" => close_to(stack, Level::Case),
        b"then" | b"do" | b"else" | b"in" => {}
        _ => return false,
    }
    true
}

/// Pops every level up to and including the innermost `level` (a `fi` also ends its `elif`s, which
/// lie above its `if`), if one is open.
fn close_to(stack: &mut Vec<Level>, level: Level) {
    if let Some(at) = stack.iter().rposition(|l| *l == level) {
        stack.truncate(at);
    }
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Whether a word ends before `next` (a keyword or `{` is a word of its own).
fn is_delimiter(next: Option<&u8>) -> bool {
    next.is_none_or(|b| is_blank(*b) || b"\n;&|()<>".contains(b))
}

#[cfg(test)]
mod tests {
    use super::{MAX_NESTING, nesting_bound};

    fn depth(text: &str) -> usize {
        nesting_bound(text, 10_000).expect("within the limit")
    }

    #[test]
    fn counts_what_nests() {
        assert_eq!(depth("ls -la | grep x && echo done"), 0);
        assert_eq!(depth("echo $(date)"), 1);
        assert_eq!(depth("echo \"$(echo \"$(date)\")\""), 2);
        assert_eq!(depth("{ { true; }; }"), 2);
        assert_eq!(depth("if a; then if b; then c; fi; elif d; then e; fi"), 2);
        assert_eq!(depth("for x in a b; do while true; do break; done; done"), 2);
        // A case pattern's optional `(` counts as a level: an overestimate, on the safe side.
        assert_eq!(depth("case $x in a) echo a;; (b) echo b;; esac"), 2);
        assert_eq!(depth("echo ${a:-${b:-c}}"), 2);
        assert_eq!(depth("echo $((1 + (2 * 3)))"), 3);
        assert_eq!(depth("echo `date`"), 1);
    }

    #[test]
    fn quotes_comments_and_heredocs() {
        assert_eq!(depth("echo '((((((((' \"))))\""), 0);
        assert_eq!(depth("echo \\( \\{ # ((((("), 0);
        assert_eq!(depth("cat <<'EOF'\n$($($(\nEOF\necho ok"), 0, "a quoted delimiter's body is data");
        assert_eq!(depth("cat <<EOF\n$(date)\nEOF\n"), 1, "an unquoted one's expands");
        assert_eq!(depth("cat <<-EOF\n\t((((\n\tEOF\necho $(x)"), 1);
        // Two here-documents on a line whose first body never ends (found by fuzzing).
        assert_eq!(depth("cat <<A <<B\n$(x)"), 1);
        let open = super::shape("echo $(cat <<E", MAX_NESTING).expect("shallow");
        assert!(open.unclosed && open.heredoc);
        let closed = super::shape("echo $(cat <<E\nx\nE\n)", MAX_NESTING).expect("shallow");
        assert!(!closed.unclosed && closed.heredoc);
    }

    /// What closes nothing in the parser's eyes closes nothing here: each of these nests as deep as
    /// its repetitions.
    #[test]
    fn closers_that_are_data_do_not_hide_levels() {
        let n = 100;
        let escaped_comment = format!("echo a\\ #{}", "$(".repeat(n));
        assert!(nesting_bound(&escaped_comment, MAX_NESTING).is_none(), "`\\ #` starts no comment");
        let quoted_paren = "$( echo \")\" ".repeat(n);
        assert!(nesting_bound(&quoted_paren, MAX_NESTING).is_none());
        let argument_brace = "{ echo } ; ".repeat(n);
        assert!(nesting_bound(&argument_brace, MAX_NESTING).is_none());
        let heredoc_paren = "$(cat <<E\n)\nE\n".repeat(n);
        assert!(nesting_bound(&heredoc_paren, MAX_NESTING).is_none());
        let case_paren = "$(case x in a) ".repeat(n);
        assert!(nesting_bound(&case_paren, MAX_NESTING).is_none());
        let argument_fi = "if echo fi; then ".repeat(n);
        assert!(nesting_bound(&argument_fi, MAX_NESTING).is_none());
        let elifs = format!("if a; then b; {}fi", "elif c; then d; ".repeat(n));
        assert!(nesting_bound(&elifs, MAX_NESTING).is_none(), "elif chains nest in the grammar");
    }
}
