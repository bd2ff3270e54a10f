//! Judging a whole line: every program it can run is matched against the rules; the line is allowed
//! only when every part is.

use std::path::{Path, PathBuf};

use super::{
    identity::SystemPrograms,
    parse::{self, Analysis, ParseError, Word},
    runners,
    unwrap::{self, Action},
};
use crate::policy::{
    exec::LazyExecFiles,
    model::Effect,
    shell::{Query, ShellMatcher},
};

/// `eval`, `sh -c` and scripts nest; past this depth the line is refused.
const MAX_NESTING: usize = 16;
/// Scripts run by `.`/`source`/`sh FILE` are read and judged up to this size.
const MAX_SCRIPT: u64 = 1 << 20;
/// A line that may be in more working directories than this is judged as if in an unknown one. Each
/// relative `cd` may apply to every directory already possible, so without the bound the set doubles
/// with each one.
const MAX_DIRECTORIES: usize = 64;
/// A line that sets `PATH` to more different values than this is judged as if it set an unknown one
/// (every command name is looked up in each value, in each possible working directory).
const MAX_PATHS: usize = 64;

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
    /// `PATH` values the line sets, besides the one it starts with: a command name is looked up in
    /// each, since any of them may be in force when it runs.
    paths: Vec<String>,
    /// The line sets `PATH` to a value only known when it runs (as written).
    path_unknown: Option<String>,
    /// Directories the line changes to (`cd`, `pushd`), besides the one it starts in: a relative path
    /// is looked up in each, since any of them may be the working directory when it is used.
    cwds: Vec<PathBuf>,
    /// The line changes to a directory only known when it runs (as written).
    cwd_unknown: Option<String>,
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
    /// `PATH`, for `. name` and for the file a command name runs.
    pub path: Option<String>,
    /// The policy's exec entries, to judge the file each program will be (`None`: names only).
    pub files: Option<&'m LazyExecFiles>,
    /// The system programs, to tell what a copy or hard link of one is.
    pub programs: &'m SystemPrograms,
    /// Variables of [`runners::VARIABLES`] the shell inherits (the agent can set them): judged on
    /// every line, since every program the line starts inherits them too.
    pub inherited: &'m [(String, String)],
}

impl Evaluator<'_> {
    /// Judges `line`.
    #[must_use]
    pub fn evaluate(&self, line: &str) -> LineVerdict {
        let mut verdict = LineVerdict::default();
        for (name, value) in self.inherited {
            let word = Word { raw: value.clone(), value: Some(value.clone()), basename: None, glob: false };
            let mut actions = Vec::new();
            runners::variable(name, &word, &mut actions);
            self.actions(actions, &format!("inherited {name}={value}"), 0, &mut verdict);
        }
        self.line(line, line, 0, &mut verdict);
        verdict
    }

    /// The inherited variables of [`runners::VARIABLES`] with a value, from `vars`.
    #[must_use]
    pub fn inherited_from(vars: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
        vars.filter(|(name, value)| {
            // The shell removes these before it starts the line's shell (exec::UNSAFE_ENV).
            !value.is_empty()
                && !super::exec::UNSAFE_ENV.contains(&name.as_str())
                && runners::VARIABLES.iter().any(|(known, _)| known == name)
        })
        .collect()
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
        for (name, value) in &analysis.variables {
            if name == "PATH" {
                match assigned_path(&value.raw, self.path.as_deref().unwrap_or_default()) {
                    Some(path) if out.paths.contains(&path) => {}
                    Some(_) if out.paths.len() >= MAX_PATHS => {
                        out.path_unknown = Some(format!("one of more than {MAX_PATHS} values"));
                    }
                    Some(path) => out.paths.push(path),
                    None => out.path_unknown = Some(value.raw.clone()),
                }
                continue;
            }
            let context = format!("{name}={}", value.raw);
            let mut actions = Vec::new();
            runners::variable(name, value, &mut actions);
            self.actions(actions, &context, depth, out);
        }
        for command in &analysis.commands {
            self.directory_change(&command.words, out);
        }
        for command in &analysis.commands {
            if let Some(name) = command.words.first().and_then(|w| w.value.as_deref())
                && unwrap::BASH_BUILTINS.contains(&name)
            {
                out.needs_bash = true;
            }
            self.actions(unwrap::unwrap(&command.words, &analysis.functions), &command.text, depth, out);
        }
    }

    /// Judges what one simple command (or variable, `text`) asks for.
    fn actions(&self, actions: Vec<Action<'_>>, text: &str, depth: usize, out: &mut LineVerdict) {
        for action in actions {
            match action {
                Action::Program { words, extra_args, wrapper, builtin } => {
                    if let Some(part) = self.program(text, words, extra_args, wrapper) {
                        out.parts.push(part);
                    }
                    if !builtin && let Some(part) = self.file(text, words, out) {
                        out.parts.push(part);
                    }
                }
                Action::Line(line) => self.line(&line, text, depth + 1, out),
                Action::File(file) => match self.read_scripts(&file, true, out) {
                    Ok(scripts) => {
                        for script in scripts {
                            self.line(&script, text, depth + 1, out);
                        }
                    }
                    Err(reason) => out.parts.push(refusal(text, RULE_UNKNOWN, reason)),
                },
                Action::CheckedFile { file, check, what } => {
                    let found = self.read_scripts(&file, false, out).and_then(|programs| {
                        programs
                            .iter()
                            .find_map(|program| check(program))
                            .map_or(Ok(()), |reason| Err(format!("{what}: {reason} (program file `{file}`)")))
                    });
                    if let Err(reason) = found {
                        out.parts.push(refusal(text, RULE_UNKNOWN, reason));
                    }
                }
                Action::Unknown(reason) => out.parts.push(refusal(text, RULE_UNKNOWN, reason)),
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

    /// Judges the file a program will be, as the kernel will: looked up in `PATH` (each value the
    /// line may give it), symlinks followed, decided by the exec entries; and the name rules are asked
    /// about the real file's name too, so a symlink named like an allowed program that leads to one a
    /// rule denies is denied. `None` when nothing denies it (or the name is found nowhere: the shell
    /// will say so, and a file the line creates meanwhile meets the kernel).
    fn file(&self, text: &str, words: &[Word], verdict: &LineVerdict) -> Option<PartVerdict> {
        let first = words.first()?;
        let name = first.value.as_deref().filter(|_| !first.glob)?;
        let files = match self.files?.get() {
            Ok(files) => files,
            Err(err) => {
                return Some(refusal(
                    text,
                    RULE_UNKNOWN,
                    format!(
                        "the policy's exec entries cannot be compiled, so `{name}` cannot be judged: {err}"
                    ),
                ));
            }
        };
        let candidates: Vec<PathBuf> = if name.contains('/') {
            match self.bases(name, verdict) {
                // Where the file exists, if it does anywhere the line may look (a file the line
                // creates meanwhile is judged by where it would be, as the kernel will).
                Ok(bases) => {
                    let paths: Vec<PathBuf> = bases.into_iter().map(|base| base.join(name)).collect();
                    let existing: Vec<PathBuf> = paths
                        .iter()
                        .filter(|path| std::fs::symlink_metadata(path).is_ok())
                        .cloned()
                        .collect();
                    if existing.is_empty() { paths } else { existing }
                }
                Err(reason) => return Some(refusal(text, RULE_UNKNOWN, reason)),
            }
        } else {
            if let Some(raw) = &verdict.path_unknown {
                return Some(refusal(
                    text,
                    RULE_UNKNOWN,
                    format!(
                        "the line sets PATH to `{raw}`, only known when it runs: `{name}` cannot be located"
                    ),
                ));
            }
            let mut found = Vec::new();
            for search in std::iter::once(self.path.as_deref().unwrap_or_default())
                .chain(verdict.paths.iter().map(String::as_str))
            {
                match self.lookup(search, name, verdict) {
                    Ok(path) => found.extend(path),
                    Err(reason) => return Some(refusal(text, RULE_UNKNOWN, reason)),
                }
            }
            found
        };
        let denied = |rule: &str, reason: String| PartVerdict {
            text: text.to_string(),
            executable: first.text().to_string(),
            args: words.iter().skip(1).map(|w| w.text().to_string()).collect(),
            allowed: false,
            rule_id: rule.to_string(),
            reason: Some(reason),
        };
        for path in candidates {
            let real = std::fs::canonicalize(&path).ok();
            if let Some(part) = real.as_deref().and_then(|real| self.real_name(real, name, words, &denied)) {
                return Some(part);
            }
            if let Some(part) = real.as_deref().and_then(|real| self.copy_of(real, name, words, &denied)) {
                return Some(part);
            }
            if files.is_empty() {
                continue;
            }
            let decided = match real {
                Some(real) => files.decide_canonical(real, true),
                None => files.decide(&path),
            };
            let explanation = match decided {
                Ok(explanation) => explanation,
                Err(err) => {
                    return Some(refusal(
                        text,
                        RULE_UNKNOWN,
                        format!("`{name}` ({}) cannot be inspected: {err}", path.display()),
                    ));
                }
            };
            if explanation.effect == Effect::Deny {
                let rule = explanation.rule.as_deref().unwrap_or(RULE_DEFAULT);
                let why = files.reason(rule).map(|r| format!(": {r}")).unwrap_or_default();
                return Some(denied(
                    rule,
                    format!(
                        "`{name}` is {}, which the exec policy denies ({}){why}",
                        explanation.file.display(),
                        explanation.how
                    ),
                ));
            }
        }
        None
    }

    /// The name rules on the real name of the file (`real`, canonical) when it differs from the name typed: a
    /// rule that denies that name denies the line. Only a deny counts: system programs are often
    /// reached through links (`awk` is `mawk`, `python3` is `python3.11`) that allow rules name by
    /// their link.
    fn real_name(
        &self,
        real: &Path,
        typed: &str,
        words: &[Word],
        denied: &dyn Fn(&str, String) -> PartVerdict,
    ) -> Option<PartVerdict> {
        let real_name = real.file_name()?.to_str()?;
        let (rule, name, why) = self.denied_names(&[real_name], typed, words)?;
        Some(denied(rule, format!("`{typed}` is {}, and rule `{rule}` denies `{name}`{why}", real.display())))
    }

    /// The name rules on every name of the system program that `real` (canonical, outside the
    /// system directories) is a hard link to or a copy of: a file's bytes, not its name, say what
    /// runs. Only a deny counts, as for [`Self::real_name`].
    fn copy_of(
        &self,
        real: &Path,
        typed: &str,
        words: &[Word],
        denied: &dyn Fn(&str, String) -> PartVerdict,
    ) -> Option<PartVerdict> {
        if self.programs.is_system(real) {
            return None;
        }
        let (kinship, program) = self.programs.identify(real)?;
        let names: Vec<&str> = program.names.iter().map(String::as_str).collect();
        let (rule, name, why) = self.denied_names(&names, typed, words)?;
        Some(denied(
            rule,
            format!(
                "`{typed}` is {}, {} {} (`{name}`), and rule `{rule}` denies `{name}`{why}",
                real.display(),
                kinship.as_str(),
                program.path.display()
            ),
        ))
    }

    /// The first of `names` (other than the name typed) that a name rule denies with the line's
    /// arguments: its rule, the name and the rule's reason (`": reason"`, or empty).
    fn denied_names<'n>(
        &self,
        names: &[&'n str],
        typed: &str,
        words: &[Word],
    ) -> Option<(&str, &'n str, String)> {
        let typed_name = Path::new(typed).file_name().and_then(|n| n.to_str());
        let args: Vec<&str> = words.iter().skip(1).map(Word::text).collect();
        let joined = args.join(" ");
        names.iter().filter(|name| typed_name != Some(**name)).find_map(|name| {
            let query = Query {
                executable: name,
                args: &joined,
                args_known: words.iter().skip(1).all(|w| w.value.is_some()),
                identity: &self.identity,
            };
            let verdict = self.matcher.evaluate(&query);
            let rule = verdict.rule_id.filter(|_| verdict.effect == Effect::Deny)?;
            Some((rule, *name, verdict.reason.map(|r| format!(": {r}")).unwrap_or_default()))
        })
    }

    /// Where a relative `path` may be looked up: the starting directory and every one the line
    /// changes to. An absolute path has one base, `/`.
    fn bases(&self, path: &str, verdict: &LineVerdict) -> Result<Vec<PathBuf>, String> {
        if path.starts_with('/') {
            return Ok(vec![PathBuf::from("/")]);
        }
        if let Some(raw) = &verdict.cwd_unknown {
            return Err(format!(
                "the line changes directory to `{raw}`, only known when it runs: `{path}` cannot be located"
            ));
        }
        Ok(std::iter::once(self.cwd.clone()).chain(verdict.cwds.iter().cloned()).collect())
    }

    /// `cd DIR`, `pushd DIR`: records the directories the line may change to (relative ones from
    /// each directory it may already be in, and `CDPATH`).
    fn directory_change(&self, words: &[Word], out: &mut LineVerdict) {
        let Some(name) = words.first().and_then(|w| w.value.as_deref()) else { return };
        // Once one possible directory is unknown, relative paths cannot be located whatever follows.
        if !matches!(name, "cd" | "pushd" | "popd") || out.cwd_unknown.is_some() {
            return;
        }
        // The first word after the options (`-L`, `-P`, `-e`, `-@`, pushd's `-n`) and `--`.
        let is_option = |text: &str| {
            text.len() > 1 && text.starts_with('-') && text[1..].chars().all(|c| "LPe@n".contains(c))
        };
        let mut rest = words[1..].iter();
        let operand = loop {
            match rest.next() {
                Some(word) if word.text() == "--" => break rest.next(),
                Some(word) if is_option(word.text()) => {}
                other => break other,
            }
        };
        let env = |key: &str| std::env::var(key).ok().filter(|v| !v.is_empty());
        let target = match (name, operand) {
            // `popd` and `pushd` without a directory go back to one only the shell knows.
            ("popd", _) | ("pushd", None) => None,
            (_, None) => env("HOME"),
            (_, Some(word)) => match word.value.as_deref() {
                Some("-") => env("OLDPWD"),
                Some(value) if value.starts_with('+') || (name == "pushd" && value.starts_with('-')) => None,
                Some(value) => Some(value.to_string()),
                None => known_value(&word.raw),
            },
        };
        let Some(target) = target.map(|t| tilde(&t)) else {
            let raw = operand.map_or_else(|| name.to_string(), |w| format!("{name} {}", w.raw));
            out.cwd_unknown = Some(raw);
            return;
        };
        let mut dirs = Vec::new();
        if target.starts_with('/') {
            dirs.push(PathBuf::from(&target));
        } else {
            let from: Vec<PathBuf> =
                std::iter::once(self.cwd.clone()).chain(out.cwds.iter().cloned()).collect();
            dirs.extend(from.iter().map(|base| base.join(&target)));
            let explicit =
                target == "." || target == ".." || target.starts_with("./") || target.starts_with("../");
            if !explicit && let Some(cdpath) = env("CDPATH") {
                for entry in cdpath.split(':').filter(|e| !e.is_empty()) {
                    dirs.extend(from.iter().map(|base| base.join(entry).join(&target)));
                }
            }
        }
        for dir in dirs {
            if out.cwds.contains(&dir) {
                continue;
            }
            if out.cwds.len() >= MAX_DIRECTORIES {
                out.cwd_unknown = Some(format!("one of more than {MAX_DIRECTORIES} directories"));
                return;
            }
            out.cwds.push(dir);
        }
    }

    /// The executable regular files named `name` that a `PATH` of `search` may find: the first in
    /// its directories, for each working directory the line may be in (empty entries and `.` are the
    /// working directory, as in the shell).
    fn lookup(&self, search: &str, name: &str, verdict: &LineVerdict) -> Result<Vec<PathBuf>, String> {
        use std::os::unix::fs::PermissionsExt as _;
        let relative = search.split(':').any(|dir| !dir.starts_with('/'));
        let bases = if relative { self.bases(name, verdict)? } else { vec![self.cwd.clone()] };
        Ok(bases
            .iter()
            .filter_map(|base| {
                crate::policy::exec::path_candidates(search.split(':').map(Path::new), base, name).find(
                    |candidate| {
                        std::fs::metadata(candidate)
                            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                    },
                )
            })
            .collect())
    }

    /// Reads every file `file` may be when the line runs (a script run by `.`/`source`/`sh FILE`,
    /// or a program file of awk or sed), so that what it runs is judged too. `sourced`: `file` is
    /// looked up like `.` does, in `PATH` first.
    fn read_scripts(&self, file: &str, sourced: bool, verdict: &LineVerdict) -> Result<Vec<String>, String> {
        let bases = self.bases(file, verdict)?;
        let mut found = Vec::new();
        for base in &bases {
            if let Some(path) = self.resolve(file, base, sourced)
                && !found.contains(&path)
            {
                found.push(path);
            }
        }
        if found.is_empty() {
            return Err(format!("script `{file}` not found"));
        }
        found.iter().map(|path| read_script(file, path)).collect()
    }

    fn resolve(&self, file: &str, base: &Path, sourced: bool) -> Option<PathBuf> {
        let path = Path::new(file);
        if file.contains('/') || !sourced {
            let path = base.join(path);
            return path.exists().then_some(path);
        }
        // Sourcing searches `PATH` (not its empty entries), then the working directory.
        let search = self.path.as_deref().unwrap_or_default();
        let dirs = search.split(':').filter(|dir| !dir.is_empty()).map(Path::new);
        crate::policy::exec::path_candidates(dirs, base, file)
            .chain(std::iter::once(base.join(file)))
            .find(|candidate| candidate.is_file())
    }
}

/// Reads a script `file` found at `path`.
fn read_script(file: &str, path: &Path) -> Result<String, String> {
    // What `/dev/stdin`, `/dev/fd/N` or `/proc/*/fd/N` hold is whatever the shell running the line
    // will have open there (a here-document, a pipe), not what this process would read: unknown
    // code. So is a FIFO or a device, whose content is made as it is read.
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    if [path, real.as_path()].iter().any(|p| p.starts_with("/dev") || p.starts_with("/proc")) {
        return Err(format!(
            "script `{file}` is a descriptor or device: its content is only known when the line runs"
        ));
    }
    let meta = std::fs::metadata(path).map_err(|err| format!("script `{file}`: {err}"))?;
    if !meta.is_file() {
        return Err(format!("script `{file}` is not a regular file: its content is only known when read"));
    }
    if meta.len() > MAX_SCRIPT {
        return Err(format!("script `{file}` is larger than {MAX_SCRIPT} bytes"));
    }
    std::fs::read_to_string(path).map_err(|err| format!("script `{file}` cannot be read: {err}"))
}

/// The value of a word written `raw` whose expansions are all of the environment the line inherits
/// (`$HOME/x`, `"${DIR}"`); `None` when any part is only known when the line runs.
fn known_value(raw: &str) -> Option<String> {
    literal(expand_unquoted(raw, &|name| std::env::var(name).ok())?)
}

/// A leading `~` or `~/` made `$HOME`.
fn tilde(path: &str) -> String {
    match (path.strip_prefix('~'), std::env::var("HOME")) {
        (Some(rest), Ok(home)) if rest.is_empty() || rest.starts_with('/') => format!("{home}{rest}"),
        _ => path.to_string(),
    }
}

/// The value of a `PATH` assignment written `raw`: quotes removed, `$NAME`, `${NAME}`,
/// `${NAME:+WORD}`, `${NAME:-WORD}` (and without the colon) expanded from the environment the line
/// inherits (`PATH` from `current`), a leading `~` in each entry made `$HOME`. `None` when anything
/// else is only known when the line runs. `OpenClaw` prefixes its commands with
/// `export PATH="${OPENCLAW_PREPEND_PATH}${PATH:+:$PATH}"`.
fn assigned_path(raw: &str, current: &str) -> Option<String> {
    let lookup =
        |name: &str| if name == "PATH" { Some(current.to_string()) } else { std::env::var(name).ok() };
    let value = expand_unquoted(raw, &lookup)?;
    let home = std::env::var("HOME").unwrap_or_default();
    let value = value
        .split(':')
        .map(|dir| dir.strip_prefix('~').map_or_else(|| dir.to_string(), |rest| format!("{home}{rest}")))
        .collect::<Vec<_>>()
        .join(":");
    literal(value)
}

/// `raw` with its quotes removed and the parameter forms [`expand`] accepts expanded by `lookup`.
fn expand_unquoted(raw: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    expand(&raw.replace(['"', '\''], ""), lookup, 0)
}

/// `value` if nothing is left in it that only the running shell can expand (a parameter, a
/// substitution, an escape, a glob).
fn literal(value: String) -> Option<String> {
    (!value.contains(['$', '`', '\\', '*', '?', '['])).then_some(value)
}

/// Expands the parameter forms [`assigned_path`] accepts in `text`; `None` on any other.
fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>, depth: usize) -> Option<String> {
    if depth > 8 {
        return None;
    }
    let name_len = |s: &str| s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(rest.get(..at)?);
        let after = rest.get(at + 1..)?;
        if let Some(inner) = after.strip_prefix('{') {
            // The matching brace, counting nested ones.
            let mut level = 1usize;
            let close = inner.char_indices().find_map(|(i, c)| {
                match c {
                    '{' => level += 1,
                    '}' => level -= 1,
                    _ => {}
                }
                (level == 0).then_some(i)
            })?;
            let body = inner.get(..close)?;
            let len = name_len(body);
            let (name, op) = (body.get(..len)?, body.get(len..)?);
            if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
                return None;
            }
            let value = lookup(name);
            let set = |colon: bool| value.as_deref().is_some_and(|v| !colon || !v.is_empty());
            let expanded = match op {
                "" => value.clone().unwrap_or_default(),
                _ if op.starts_with(":+") || op.starts_with('+') => {
                    let colon = op.starts_with(':');
                    let word = op.get(if colon { 2 } else { 1 }..)?;
                    if set(colon) { expand(word, lookup, depth + 1)? } else { String::new() }
                }
                _ if op.starts_with(":-") || op.starts_with('-') => {
                    let colon = op.starts_with(':');
                    let word = op.get(if colon { 2 } else { 1 }..)?;
                    if set(colon) {
                        value.clone().unwrap_or_default()
                    } else {
                        expand(word, lookup, depth + 1)?
                    }
                }
                _ => return None,
            };
            out.push_str(&expanded);
            rest = inner.get(close + 1..)?;
        } else {
            let len = name_len(after);
            let name = after.get(..len)?;
            if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
                return None;
            }
            out.push_str(&lookup(name).unwrap_or_default());
            rest = after.get(len..)?;
        }
    }
    out.push_str(rest);
    Some(out)
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
