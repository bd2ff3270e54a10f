//! Judging a whole line: every program it can run is matched against the rules; the line is allowed
//! only when every part is.

use std::path::{Path, PathBuf};

use super::{
    parse::{self, Analysis, ParseError, Word},
    unwrap::{self, Action},
};
use crate::policy::{
    model::Effect,
    shell::{Query, ShellMatcher},
};

/// `eval`, `sh -c` and scripts nest; past this depth the line is refused.
const MAX_NESTING: usize = 16;
/// Scripts run by `.`/`source`/`sh FILE` are read and judged up to this size.
const MAX_SCRIPT: u64 = 1 << 20;

/// Rule ids of denials that no policy rule decided.
pub const RULE_PARSE_ERROR: &str = "parse_error";
pub const RULE_UNKNOWN: &str = "unknown_program";
pub const RULE_DEFAULT: &str = "default";

/// The verdict on one program (or one thing that cannot be judged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartVerdict {
    /// The simple command it comes from, as written.
    pub text: String,
    /// The program as written (path or name); empty when unknown.
    pub executable: String,
    pub args: Vec<String>,
    pub allowed: bool,
    /// The deciding rule, or [`RULE_DEFAULT`], [`RULE_UNKNOWN`], [`RULE_PARSE_ERROR`].
    pub rule_id: String,
    pub reason: Option<String>,
}

/// The verdict on a line.
#[derive(Debug, Clone, Default)]
pub struct LineVerdict {
    pub parts: Vec<PartVerdict>,
    /// The line uses bash syntax.
    pub needs_bash: bool,
}

impl LineVerdict {
    /// The first denied part, which names the denial.
    #[must_use]
    pub fn denied(&self) -> Option<&PartVerdict> {
        self.parts.iter().find(|part| !part.allowed)
    }

    /// The part reported in the audit record: the denied one, else the first program.
    #[must_use]
    pub fn deciding(&self) -> Option<&PartVerdict> {
        self.denied().or_else(|| self.parts.first())
    }
}

/// Judges lines for one identity.
pub struct Evaluator<'m> {
    pub matcher: &'m ShellMatcher,
    pub identity: String,
    /// Where relative script paths are resolved.
    pub cwd: PathBuf,
    /// `PATH`, for `. name`.
    pub path: Option<String>,
}

impl Evaluator<'_> {
    /// Judges `line`.
    #[must_use]
    pub fn evaluate(&self, line: &str) -> LineVerdict {
        let mut verdict = LineVerdict::default();
        self.line(line, line, 0, &mut verdict);
        verdict
    }

    fn line(&self, text: &str, context: &str, depth: usize, out: &mut LineVerdict) {
        if depth > MAX_NESTING {
            return out.parts.push(refusal(
                context,
                RULE_UNKNOWN,
                format!("nested more than {MAX_NESTING} levels"),
            ));
        }
        match parse::analyze(text) {
            Ok(analysis) => self.analysis(&analysis, depth, out),
            Err(err) => out.parts.push(refusal(context, RULE_PARSE_ERROR, err.to_string())),
        }
    }

    fn analysis(&self, analysis: &Analysis, depth: usize, out: &mut LineVerdict) {
        out.needs_bash |= analysis.needs_bash;
        for file in &analysis.startup_files {
            let context = format!("BASH_ENV/ENV={}", file.raw);
            match &file.value {
                Some(path) if path.is_empty() => {}
                Some(path) => match self.read_script(path) {
                    Ok(script) => self.line(&script, &context, depth + 1, out),
                    Err(reason) => out.parts.push(refusal(&context, RULE_UNKNOWN, reason)),
                },
                None => out.parts.push(refusal(
                    &context,
                    RULE_UNKNOWN,
                    format!("the startup script `{}` is only known when the line runs", file.raw),
                )),
            }
        }
        for command in &analysis.commands {
            if let Some(name) = command.words.first().and_then(|w| w.value.as_deref())
                && unwrap::BASH_BUILTINS.contains(&name)
            {
                out.needs_bash = true;
            }
            for action in unwrap::unwrap(&command.words, &analysis.functions) {
                match action {
                    Action::Program { words, extra_args, wrapper } => {
                        if let Some(part) = self.program(&command.text, words, extra_args, wrapper) {
                            out.parts.push(part);
                        }
                    }
                    Action::Line(line) => self.line(&line, &command.text, depth + 1, out),
                    Action::File(file) => match self.read_script(&file) {
                        Ok(script) => self.line(&script, &command.text, depth + 1, out),
                        Err(reason) => out.parts.push(refusal(&command.text, RULE_UNKNOWN, reason)),
                    },
                    Action::Unknown(reason) => out.parts.push(refusal(&command.text, RULE_UNKNOWN, reason)),
                }
            }
        }
    }

    fn program(&self, text: &str, words: &[Word], extra_args: bool, wrapper: bool) -> Option<PartVerdict> {
        let (first, rest) = words.split_first()?;
        let basename = first.basename.as_deref().unwrap_or_default();
        let args: Vec<String> = rest.iter().map(|w| w.text().to_string()).collect();
        let joined = args.join(" ");
        let query = Query {
            executable: basename,
            args: &joined,
            args_known: !extra_args && rest.iter().all(|w| w.value.is_some()),
            identity: &self.identity,
        };
        let verdict = self.matcher.evaluate(&query);
        if wrapper && verdict.rule_id.is_none() {
            // A wrapper no rule names is judged by the program it runs.
            return None;
        }
        let allowed = verdict.effect == Effect::Allow;
        let reason = match (verdict.rule_id, verdict.reason) {
            (None, _) if !allowed => Some(format!("no rule allows `{basename}` (default: deny)")),
            (Some(id), reason) if verdict.assumed_args => Some(format!(
                "{}; its arguments are only known when the line runs, so rule `{id}` is assumed to match",
                reason.unwrap_or("denied by policy")
            )),
            (_, reason) => reason.map(str::to_string),
        };
        Some(PartVerdict {
            text: text.to_string(),
            executable: first.text().to_string(),
            args,
            allowed,
            rule_id: verdict.rule_id.unwrap_or(RULE_DEFAULT).to_string(),
            reason,
        })
    }

    /// Reads a script run by `.`/`source`/`sh FILE`, so that its commands are judged too.
    fn read_script(&self, file: &str) -> Result<String, String> {
        let path = self.resolve(file).ok_or_else(|| format!("script `{file}` not found"))?;
        // What `/dev/stdin`, `/dev/fd/N` or `/proc/*/fd/N` hold is whatever the shell running the line
        // will have open there (a here-document, a pipe), not what this process would read: unknown
        // code. So is a FIFO or a device, whose content is made as it is read.
        let real = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        if [&path, &real].iter().any(|p| p.starts_with("/dev") || p.starts_with("/proc")) {
            return Err(format!(
                "script `{file}` is a descriptor or device: its content is only known when the line runs"
            ));
        }
        let meta = std::fs::metadata(&path).map_err(|err| format!("script `{file}`: {err}"))?;
        if !meta.is_file() {
            return Err(format!(
                "script `{file}` is not a regular file: its content is only known when read"
            ));
        }
        if meta.len() > MAX_SCRIPT {
            return Err(format!("script `{file}` is larger than {MAX_SCRIPT} bytes"));
        }
        std::fs::read_to_string(&path).map_err(|err| format!("script `{file}` cannot be read: {err}"))
    }

    fn resolve(&self, file: &str) -> Option<PathBuf> {
        let path = Path::new(file);
        if file.contains('/') {
            return Some(self.cwd.join(path));
        }
        let search = self.path.as_deref().unwrap_or_default();
        search
            .split(':')
            .filter(|dir| !dir.is_empty())
            .map(|dir| Path::new(dir).join(file))
            .chain(std::iter::once(self.cwd.join(file)))
            .find(|candidate| candidate.is_file())
    }
}

fn refusal(text: &str, rule_id: &str, reason: String) -> PartVerdict {
    PartVerdict {
        text: text.to_string(),
        executable: String::new(),
        args: Vec::new(),
        allowed: false,
        rule_id: rule_id.to_string(),
        reason: Some(reason),
    }
}

/// Whether `err` means more input could complete the line (for the REPL's continuation lines).
#[must_use]
pub fn is_incomplete(line: &str) -> bool {
    matches!(parse::analyze(line), Err(ParseError::Incomplete(_)))
}
