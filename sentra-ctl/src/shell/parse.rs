//! Parsing a command line into every simple command it can run, with brush-parser (a maintained
//! POSIX/bash parser): pipelines, lists, subshells, compound commands, function bodies, command and
//! process substitutions (also inside quotes, parameter defaults, redirections, here-documents and
//! arithmetic), assignments and redirections.
//!
//! Nothing is expanded: a word's value is known only when quote removal alone produces it.

use std::collections::BTreeSet;

use brush_parser::{
    ParserOptions,
    ast::{
        self, AndOr, Command, CommandPrefixOrSuffixItem, CompoundCommand, CompoundList, ExtendedTestExpr,
        IoFileRedirectTarget, IoRedirect, Pipeline,
    },
    word::{ParameterExpr, WordPiece, WordPieceWithSource},
};

use super::nesting::{self, MAX_NESTING};

/// Why a line cannot be analysed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("cannot parse: {0}")]
    Syntax(String),
    /// The input ends inside a construct (open quote, `if` without `fi`…): more lines may complete it.
    #[error("incomplete command: {0}")]
    Incomplete(String),
    #[error("nested more than {MAX_NESTING} levels deep")]
    TooDeep,
}

/// One word of a simple command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// As written.
    pub raw: String,
    /// Its value when quote removal alone produces it (no expansion, no unquoted glob or brace).
    pub value: Option<String>,
    /// The last path component of its value, when that is known even though the whole value is not
    /// (`"$HOME"/bin/tool`, `~/bin/tool`): expansions that cannot split into several words.
    pub basename: Option<String>,
    /// Unquoted glob characters: the value above is the pattern as written.
    pub glob: bool,
}

impl Word {
    /// The value if known, else the text as written.
    #[must_use]
    pub fn text(&self) -> &str {
        self.value.as_deref().unwrap_or(&self.raw)
    }
}

/// A simple command: what the shell executes (builtin, function or program).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimpleCommand {
    /// Command name and arguments (assignments and redirections removed).
    pub words: Vec<Word>,
    /// The command as written, for messages.
    pub text: String,
}

/// Everything found in a line.
#[derive(Debug, Clone, Default)]
pub struct Analysis {
    pub commands: Vec<SimpleCommand>,
    /// Functions the line defines: calling them runs their bodies, which are analysed.
    pub functions: BTreeSet<String>,
    /// The line uses syntax `/bin/sh` (POSIX) does not have.
    pub needs_bash: bool,
    /// Variables the line sets (assigned, exported or passed through `env`) that make the programs
    /// started after them run code ([`super::runners::VARIABLES`]: `BASH_ENV`, `LESSOPEN`,
    /// `LD_PRELOAD`…), or that choose which file a command name runs (`PATH`): name and value.
    pub variables: Vec<(String, Word)>,
}

/// Whether the evaluator needs the value the line gives the variable `name`.
fn watched(name: &str) -> bool {
    name == "PATH" || super::runners::VARIABLES.iter().any(|(known, _)| *known == name)
}

/// Commands whose `NAME=VALUE` arguments set variables for the shells started after them.
const ASSIGNING_COMMANDS: [&str; 7] = ["export", "declare", "typeset", "readonly", "local", "env", "sudo"];

/// Parses `line` and collects its simple commands.
///
/// # Errors
/// The line is not valid shell syntax, or is incomplete, or nests too deeply.
pub fn analyze(line: &str) -> Result<Analysis, ParseError> {
    // Before the parser, which recurses once per level: a line nested thousands deep would overflow
    // the stack.
    if let Some(number) = unparsable_number(line) {
        return Err(ParseError::Syntax(format!("the number {number} is out of range")));
    }
    let Some(shape) = nesting::shape(line, MAX_NESTING) else {
        return Err(ParseError::TooDeep);
    };
    // A paren, substitution or parameter expansion the line never closes makes it incomplete whatever
    // else it holds, and on such lines the tokenizer can loop allocating without bound (a here-document
    // inside an unclosed `$(`) or the parser backtrack exponentially (runs of unclosed `(`): answered
    // without them.
    if shape.unclosed {
        return Err(ParseError::Incomplete(
            "a parenthesis, substitution, `${` or `case` is not closed".into(),
        ));
    }
    let mut analysis = Analysis::default();
    Walker { out: &mut analysis, depth: 0 }.program(line)?;
    Ok(analysis)
}

/// A number the parser would fail to convert (it unwraps the conversion, which would panic): a
/// descriptor before `<`/`>` beyond `u32`, or any number beyond `i64` (brace sequences, `~+N`).
fn unparsable_number(line: &str) -> Option<&str> {
    let bytes = line.as_bytes();
    let mut start = 0;
    while start < bytes.len() {
        if !bytes[start].is_ascii_digit() {
            start += 1;
            continue;
        }
        let end = bytes[start..].iter().position(|b| !b.is_ascii_digit()).map_or(bytes.len(), |n| start + n);
        let digits = &line[start..end];
        let redirect = matches!(bytes.get(end), Some(b'<' | b'>'));
        if digits.parse::<i64>().is_err() || (redirect && digits.parse::<u32>().is_err()) {
            return Some(digits);
        }
        start = end;
    }
    None
}

/// Runs the parser so that a panic inside it (it unwraps some numbers it reads, such as an
/// out-of-range descriptor in `3999999999999999999<file`) refuses the line instead of ending the shell.
fn contained<T>(parse: impl FnOnce() -> T) -> Result<T, ParseError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(parse))
        .map_err(|_| ParseError::Syntax("the shell parser failed on this line".into()))
}

fn options() -> ParserOptions {
    // Extended globs off: `sh` has none, and bash enables them only with `shopt -s extglob`.
    ParserOptions { enable_extended_globbing: false, ..ParserOptions::default() }
}

struct Walker<'a> {
    out: &'a mut Analysis,
    depth: usize,
}

impl Walker<'_> {
    fn program(&mut self, text: &str) -> Result<(), ParseError> {
        // The nesting bound already covers this; kept so the walk can never recurse without end.
        if self.depth > MAX_NESTING {
            return Err(ParseError::TooDeep);
        }
        self.depth += 1;
        let program = contained(|| {
            brush_parser::Parser::new(std::io::Cursor::new(text.as_bytes()), &options()).parse_program()
        })?
        .map_err(|err| classify(&err))?;
        for list in &program.complete_commands {
            self.list(list)?;
        }
        self.depth -= 1;
        Ok(())
    }

    fn list(&mut self, list: &CompoundList) -> Result<(), ParseError> {
        for item in &list.0 {
            self.pipeline(&item.0.first)?;
            for next in &item.0.additional {
                match next {
                    AndOr::And(pipeline) | AndOr::Or(pipeline) => self.pipeline(pipeline)?,
                }
            }
        }
        Ok(())
    }

    fn pipeline(&mut self, pipeline: &Pipeline) -> Result<(), ParseError> {
        if pipeline.timed.is_some() {
            self.out.needs_bash = true;
        }
        pipeline.seq.iter().try_for_each(|command| self.command(command))
    }

    fn command(&mut self, command: &Command) -> Result<(), ParseError> {
        match command {
            Command::Simple(simple) => self.simple(simple),
            Command::Compound(compound, redirects) => {
                self.compound(compound)?;
                redirects.iter().flat_map(|list| &list.0).try_for_each(|redirect| self.redirect(redirect))
            }
            Command::Function(function) => {
                self.out.functions.insert(function.fname.value.clone());
                if function.fname.value.contains(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                    self.out.needs_bash = true;
                }
                self.compound(&function.body.0)?;
                function
                    .body
                    .1
                    .iter()
                    .flat_map(|list| &list.0)
                    .try_for_each(|redirect| self.redirect(redirect))
            }
            Command::ExtendedTest(test, redirects) => {
                self.out.needs_bash = true;
                self.test_expr(&test.expr)?;
                redirects.iter().flat_map(|list| &list.0).try_for_each(|redirect| self.redirect(redirect))
            }
        }
    }

    fn test_expr(&mut self, expr: &ExtendedTestExpr) -> Result<(), ParseError> {
        match expr {
            ExtendedTestExpr::And(a, b) | ExtendedTestExpr::Or(a, b) => {
                self.test_expr(a)?;
                self.test_expr(b)
            }
            ExtendedTestExpr::Not(a) | ExtendedTestExpr::Parenthesized(a) => self.test_expr(a),
            ExtendedTestExpr::UnaryTest(_, word) => self.word(&word.value).map(drop),
            ExtendedTestExpr::BinaryTest(_, a, b) => {
                self.word(&a.value)?;
                self.word(&b.value).map(drop)
            }
        }
    }

    fn compound(&mut self, compound: &CompoundCommand) -> Result<(), ParseError> {
        match compound {
            CompoundCommand::Arithmetic(arith) => {
                self.out.needs_bash = true;
                self.text(&arith.expr.value)
            }
            CompoundCommand::ArithmeticForClause(clause) => {
                self.out.needs_bash = true;
                for expr in [&clause.initializer, &clause.condition, &clause.updater].into_iter().flatten() {
                    self.text(&expr.value)?;
                }
                self.list(&clause.body.list)
            }
            CompoundCommand::BraceGroup(group) => self.list(&group.list),
            CompoundCommand::Subshell(subshell) => self.list(&subshell.list),
            CompoundCommand::ForClause(clause) => {
                for word in clause.values.iter().flatten() {
                    self.word(&word.value)?;
                }
                self.list(&clause.body.list)
            }
            CompoundCommand::CaseClause(case) => {
                self.word(&case.value.value)?;
                for item in &case.cases {
                    for pattern in &item.patterns {
                        self.word(&pattern.value)?;
                    }
                    if let Some(body) = &item.cmd {
                        self.list(body)?;
                    }
                }
                Ok(())
            }
            CompoundCommand::IfClause(clause) => {
                self.list(&clause.condition)?;
                self.list(&clause.then)?;
                for branch in clause.elses.iter().flatten() {
                    if let Some(condition) = &branch.condition {
                        self.list(condition)?;
                    }
                    self.list(&branch.body)?;
                }
                Ok(())
            }
            CompoundCommand::WhileClause(clause) | CompoundCommand::UntilClause(clause) => {
                self.list(&clause.0)?;
                self.list(&clause.1.list)
            }
            CompoundCommand::Coprocess(coprocess) => {
                self.out.needs_bash = true;
                self.command(&coprocess.body)
            }
        }
    }

    fn redirect(&mut self, redirect: &IoRedirect) -> Result<(), ParseError> {
        match redirect {
            IoRedirect::File(_, _, target) => match target {
                IoFileRedirectTarget::Filename(word) | IoFileRedirectTarget::Duplicate(word) => {
                    self.word(&word.value).map(drop)
                }
                IoFileRedirectTarget::Fd(_) => Ok(()),
                IoFileRedirectTarget::ProcessSubstitution(_, subshell) => {
                    self.out.needs_bash = true;
                    self.list(&subshell.list)
                }
            },
            IoRedirect::HereDocument(_, doc) => {
                if doc.requires_expansion {
                    let pieces = contained(|| brush_parser::word::parse_heredoc(&doc.doc.value, &options()))?
                        .map_err(|err| ParseError::Syntax(err.to_string()))?;
                    self.pieces(&pieces, false)?;
                }
                Ok(())
            }
            IoRedirect::HereString(_, word) | IoRedirect::OutputAndError(word, _) => {
                self.out.needs_bash = true;
                self.word(&word.value).map(drop)
            }
        }
    }

    fn simple(&mut self, simple: &ast::SimpleCommand) -> Result<(), ParseError> {
        let mut words = Vec::new();
        let items = simple.prefix.iter().flat_map(|p| &p.0);
        let name = simple.word_or_name.iter();
        let suffix = simple.suffix.iter().flat_map(|s| &s.0);
        for item in items {
            self.item(item, None)?;
        }
        for word in name {
            words.push(self.word(&word.value)?);
        }
        for item in suffix {
            self.item(item, Some(&mut words))?;
        }
        if words
            .first()
            .and_then(|w| w.value.as_deref())
            .is_some_and(|name| ASSIGNING_COMMANDS.contains(&name))
        {
            for word in &words[1..] {
                if let Some((name, value)) = word.raw.split_once('=') {
                    // `export PATH+=…` appends, as `PATH+=…` does.
                    let (name, append) = name.strip_suffix('+').map_or((name, false), |name| (name, true));
                    self.out.needs_bash |= append;
                    if watched(name) {
                        let value = self.appended(name, value, append)?;
                        self.out.variables.push((name.to_string(), value));
                    }
                }
            }
        }
        if !words.is_empty() {
            self.out.commands.push(SimpleCommand { words, text: simple.to_string() });
        }
        Ok(())
    }

    /// A prefix item (`words` is `None`: assignments and redirections only) or suffix item.
    fn item(
        &mut self,
        item: &CommandPrefixOrSuffixItem,
        words: Option<&mut Vec<Word>>,
    ) -> Result<(), ParseError> {
        match item {
            CommandPrefixOrSuffixItem::IoRedirect(redirect) => self.redirect(redirect),
            CommandPrefixOrSuffixItem::Word(word) => {
                let word = self.word(&word.value)?;
                if let Some(words) = words {
                    words.push(word);
                }
                Ok(())
            }
            CommandPrefixOrSuffixItem::AssignmentWord(assignment, word) => {
                if let Some(words) = words {
                    // After the command name (`export X=…`) an assignment is an argument; parsing the
                    // whole word also collects the substitutions in its value.
                    words.push(self.word(&word.value)?);
                    return Ok(());
                }
                match &assignment.value {
                    ast::AssignmentValue::Scalar(value) => {
                        // `NAME+=…` is bash: sh takes `X+=…` for a command of that name.
                        self.out.needs_bash |= assignment.append;
                        if let ast::AssignmentName::VariableName(name) = &assignment.name
                            && watched(name)
                        {
                            let value = self.appended(name, &value.value, assignment.append)?;
                            self.out.variables.push((name.clone(), value));
                        } else {
                            self.word(&value.value)?;
                        }
                    }
                    ast::AssignmentValue::Array(elements) => {
                        self.out.needs_bash = true;
                        for (key, value) in elements {
                            if let Some(key) = key {
                                self.word(&key.value)?;
                            }
                            self.word(&value.value)?;
                        }
                    }
                }
                if let ast::AssignmentName::ArrayElementName(_, index) = &assignment.name {
                    self.out.needs_bash = true;
                    self.text(index)?;
                }
                Ok(())
            }
            CommandPrefixOrSuffixItem::ProcessSubstitution(_, subshell) => {
                self.out.needs_bash = true;
                if let Some(words) = words {
                    words.push(Word { raw: "<(…)".into(), value: None, basename: None, glob: false });
                }
                self.list(&subshell.list)
            }
        }
    }

    /// Analyses free text that may hold substitutions (arithmetic, array indices).
    fn text(&mut self, text: &str) -> Result<(), ParseError> {
        if text.contains('$') || text.contains('`') {
            self.word(text)?;
        }
        Ok(())
    }

    /// The value a variable `name` is given by an assignment of `raw`: with `append` (`NAME+=…`),
    /// the variable's value before it, followed by `raw`.
    fn appended(&mut self, name: &str, raw: &str, append: bool) -> Result<Word, ParseError> {
        if !append {
            return self.word(raw);
        }
        // Parsed once, so the substitutions of `raw` are collected once; `${NAME}` adds none, and
        // makes the value one only known when the line runs (the evaluator expands `PATH` itself).
        self.word(&format!("${{{name}}}{raw}"))
    }

    /// Parses a word: collects its substitutions, and works out its value.
    fn word(&mut self, raw: &str) -> Result<Word, ParseError> {
        let pieces = contained(|| brush_parser::word::parse(raw, &options()))?
            .map_err(|err| ParseError::Syntax(err.to_string()))?;
        let shape = self.pieces(&pieces, false)?;
        let glob = shape.glob;
        let value = shape.dynamic.is_none().then(|| shape.literal.clone());
        let basename = match (&value, shape.dynamic) {
            (Some(value), _) => Some(value.rsplit('/').next().unwrap_or(value).to_string()),
            (None, Some(Dynamic::Contained)) => {
                shape.tail.rsplit_once('/').map(|(_, base)| base.to_string()).filter(|base| !base.is_empty())
            }
            (None, _) => None,
        };
        Ok(Word { raw: raw.to_string(), value, basename, glob })
    }

    /// Walks word pieces; `quoted` when inside double quotes.
    fn pieces(&mut self, pieces: &[WordPieceWithSource], quoted: bool) -> Result<Shape, ParseError> {
        let mut shape = Shape::default();
        for piece in pieces {
            match &piece.piece {
                WordPiece::Text(text) => {
                    if !quoted && is_pattern(text) {
                        shape.glob = true;
                        if text.contains('{') {
                            // A brace expansion (bash) can produce several words.
                            shape.mark(Dynamic::Splitting);
                        }
                    }
                    shape.push_literal(text);
                }
                WordPiece::SingleQuotedText(text) => shape.push_literal(text),
                WordPiece::AnsiCQuotedText(text) => {
                    self.out.needs_bash = true;
                    if text.contains('\\') {
                        shape.mark(Dynamic::Splitting);
                    } else {
                        shape.push_literal(text);
                    }
                }
                WordPiece::EscapeSequence(escape) => {
                    let unescaped = unescape(escape, quoted);
                    shape.push_literal(&unescaped);
                }
                WordPiece::DoubleQuotedSequence(inner) | WordPiece::GettextDoubleQuotedSequence(inner) => {
                    if matches!(piece.piece, WordPiece::GettextDoubleQuotedSequence(_)) {
                        self.out.needs_bash = true;
                    }
                    let inner = self.pieces(inner, true)?;
                    shape.absorb(inner);
                }
                WordPiece::TildeExpansion(_) => shape.mark(Dynamic::Contained),
                WordPiece::ParameterExpansion(expr) => {
                    self.parameter(expr)?;
                    shape.mark(if quoted { Dynamic::Contained } else { Dynamic::Splitting });
                }
                WordPiece::CommandSubstitution(program) => {
                    self.program(program)?;
                    shape.mark(Dynamic::Substituted);
                }
                WordPiece::BackquotedCommandSubstitution(program) => {
                    self.program(&unescape_backquoted(program))?;
                    shape.mark(Dynamic::Substituted);
                }
                WordPiece::ArithmeticExpression(expr) => {
                    self.text(&expr.value)?;
                    shape.mark(if quoted { Dynamic::Contained } else { Dynamic::Splitting });
                }
            }
        }
        Ok(shape)
    }

    /// Substitutions inside a parameter expansion's operands (`${X:-$(cmd)}`).
    fn parameter(&mut self, expr: &ParameterExpr) -> Result<(), ParseError> {
        let operands: Vec<&str> = match expr {
            ParameterExpr::Parameter { .. }
            | ParameterExpr::ParameterLength { .. }
            | ParameterExpr::VariableNames { .. }
            | ParameterExpr::MemberKeys { .. } => Vec::new(),
            ParameterExpr::UseDefaultValues { default_value: value, .. }
            | ParameterExpr::AssignDefaultValues { default_value: value, .. }
            | ParameterExpr::IndicateErrorIfNullOrUnset { error_message: value, .. }
            | ParameterExpr::UseAlternativeValue { alternative_value: value, .. }
            | ParameterExpr::RemoveSmallestSuffixPattern { pattern: value, .. }
            | ParameterExpr::RemoveLargestSuffixPattern { pattern: value, .. }
            | ParameterExpr::RemoveSmallestPrefixPattern { pattern: value, .. }
            | ParameterExpr::RemoveLargestPrefixPattern { pattern: value, .. } => {
                value.as_deref().into_iter().collect()
            }
            ParameterExpr::UppercaseFirstChar { pattern, .. }
            | ParameterExpr::UppercasePattern { pattern, .. }
            | ParameterExpr::LowercaseFirstChar { pattern, .. }
            | ParameterExpr::LowercasePattern { pattern, .. } => {
                self.out.needs_bash = true;
                pattern.as_deref().into_iter().collect()
            }
            ParameterExpr::Substring { offset, length, .. } => {
                self.out.needs_bash = true;
                std::iter::once(offset.value.as_str())
                    .chain(length.iter().map(|l| l.value.as_str()))
                    .collect()
            }
            ParameterExpr::ReplaceSubstring { pattern, replacement, .. } => {
                self.out.needs_bash = true;
                std::iter::once(pattern.as_str()).chain(replacement.as_deref()).collect()
            }
            ParameterExpr::Transform { .. } => {
                self.out.needs_bash = true;
                Vec::new()
            }
        };
        for operand in operands {
            self.text(operand)?;
        }
        Ok(())
    }
}

/// How much of a word is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Dynamic {
    /// An expansion that stays one word (`"$X"`, `~`).
    Contained,
    /// An expansion that may split into several words or be a glob (`$X` unquoted, braces).
    Splitting,
    /// A command substitution.
    Substituted,
}

#[derive(Debug, Default)]
struct Shape {
    /// Literal text (the whole value when nothing is dynamic).
    literal: String,
    /// Literal text after the last dynamic piece.
    tail: String,
    dynamic: Option<Dynamic>,
    glob: bool,
}

impl Shape {
    fn push_literal(&mut self, text: &str) {
        self.literal.push_str(text);
        self.tail.push_str(text);
    }

    fn mark(&mut self, dynamic: Dynamic) {
        self.dynamic = self.dynamic.max(Some(dynamic));
        self.tail.clear();
    }

    fn absorb(&mut self, inner: Self) {
        if let Some(dynamic) = inner.dynamic {
            self.dynamic = self.dynamic.max(Some(dynamic));
            self.tail = inner.tail;
        } else {
            self.tail.push_str(&inner.literal);
        }
        self.literal.push_str(&inner.literal);
        self.glob |= inner.glob;
    }
}

/// Unquoted text that the shell would expand as a pattern or brace expression.
fn is_pattern(text: &str) -> bool {
    text.contains(['*', '?', '[']) || (text.contains('{') && (text.contains(',') || text.contains("..")))
}

/// Quote removal of a backslash escape: inside double quotes only a backslash before `$`, a
/// backquote, `"`, `\\` or a newline is removed.
fn unescape(escape: &str, quoted: bool) -> String {
    let mut chars = escape.chars();
    match (chars.next(), chars.next()) {
        (Some('\\'), Some('\n')) => String::new(),
        (Some('\\'), Some(c)) if !quoted || matches!(c, '$' | '`' | '"' | '\\') => c.to_string(),
        _ => escape.to_string(),
    }
}

/// Inside backquotes, a backslash before `$`, `` ` `` or `\` is removed before the text is parsed.
fn unescape_backquoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(&next) = chars.peek()
            && matches!(next, '$' | '`' | '\\')
        {
            out.push(next);
            chars.next();
        } else {
            out.push(c);
        }
    }
    out
}

fn classify(err: &brush_parser::ParseError) -> ParseError {
    let message = err.to_string();
    let incomplete = matches!(err, brush_parser::ParseError::ParsingAtEndOfInput)
        || message.contains("unterminated")
        || message.contains("end of input");
    if incomplete { ParseError::Incomplete(message) } else { ParseError::Syntax(message) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(line: &str) -> Vec<String> {
        analyze(line)
            .expect("parses")
            .commands
            .iter()
            .map(|c| {
                c.words
                    .first()
                    .map(|w| w.basename.clone().unwrap_or_else(|| format!("?{}", w.raw)))
                    .unwrap_or_default()
            })
            .collect()
    }

    #[test]
    fn finds_every_simple_command() {
        assert_eq!(names("ls;rm -rf /"), ["ls", "rm"]);
        assert_eq!(names("a&&b||c&d|e"), ["a", "b", "c", "d", "e"]);
        assert_eq!(names("echo $(id) `whoami`"), ["id", "whoami", "echo"]);
        assert_eq!(names("cat <(curl x) >(tee y)"), ["curl", "tee", "cat"]);
        assert_eq!(names("echo \"${X:-$(rm -rf /)}\""), ["rm", "echo"]);
        assert_eq!(names("X=$(wget y) true"), ["wget", "true"]);
        assert_eq!(names("cat <<EOF\n$(id)\nEOF\n"), ["id", "cat"]);
        assert_eq!(names("cat <<'EOF'\n$(id)\nEOF\n"), ["cat"]);
        assert_eq!(names("f() { sudo x; }; f"), ["sudo", "f"]);
        assert_eq!(names("for i in $(seq 3); do echo $i; done"), ["seq", "echo"]);
        assert_eq!(names("if a; then b; elif c; then d; else e; fi"), ["a", "b", "c", "d", "e"]);
        assert_eq!(names("(( $(id) ))"), ["id"]);
        assert_eq!(names("echo `echo \\`id\\``"), ["id", "echo", "echo"]);
    }

    #[test]
    fn word_values() {
        let first = |line: &str| analyze(line).expect("parses").commands.remove(0).words.remove(0);
        assert_eq!(first("'/usr/bin/l's").value.as_deref(), Some("/usr/bin/ls"));
        assert_eq!(first("\\sudo").value.as_deref(), Some("sudo"));
        assert_eq!(first("$CMD x").value, None);
        assert_eq!(first("$CMD x").basename, None);
        assert_eq!(first("\"$HOME\"/bin/tool").basename.as_deref(), Some("tool"));
        assert_eq!(first("$HOME/bin/tool").basename, None, "unquoted expansions can split");
        assert_eq!(first("~/bin/tool").basename.as_deref(), Some("tool"));
        assert!(first("/bin/s?").glob);
        let outer = analyze("$(echo sudo) x").expect("parses").commands.pop().expect("outer command");
        assert_eq!(
            outer.words.first().and_then(|w| w.basename.clone()),
            None,
            "substituted program names are unknown"
        );
    }

    #[test]
    fn errors() {
        assert!(matches!(analyze("echo \"open"), Err(ParseError::Incomplete(_))));
        assert!(matches!(analyze("if true; then"), Err(ParseError::Incomplete(_))));
        assert!(analyze("echo )").is_err());
        assert!(analyze("[[ -f x ]]").expect("parses").needs_bash);
        assert!(!analyze("ls -l | wc").expect("parses").needs_bash);
    }
}
