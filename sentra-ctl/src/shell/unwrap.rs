//! What a simple command runs: shell builtins that run nothing, builtins that run something
//! (`eval`, `exec`, `command`, `builtin`, `.`, `trap`), and programs that run programs (`env`, `sudo`,
//! `xargs`, `find -exec`, `timeout`, shells with `-c`, …), unwrapped to the program they run.

use std::{collections::BTreeSet, sync::LazyLock};

use super::parse::Word;

/// Something a simple command asks for, to be judged by the policy.
#[derive(Debug, Clone)]
pub enum Action<'w> {
    /// A program with its arguments (`words[0]` names it).
    Program {
        words: &'w [Word],
        /// Arguments are added when it runs (`xargs`, `find -exec … {}`).
        extra_args: bool,
        /// A program that runs another one: judged only when a rule names it, since the program it
        /// runs is judged too.
        wrapper: bool,
        /// A shell builtin: no file runs.
        builtin: bool,
    },
    /// Shell text run by `eval`, `sh -c`, `su -c`, `trap`, `watch`…
    Line(String),
    /// A script file run by `.`/`source` or `sh FILE`.
    File(String),
    /// A program file of a language that can run commands (`awk -f`, `sed -f`): read, and checked by
    /// `check`, which says why the program may run a command (`what` names the option).
    CheckedFile { file: String, check: fn(&str) -> Option<&'static str>, what: String },
    /// Something that cannot be known before the line runs: denied with this reason.
    Unknown(String),
}

/// Where a command name is looked up.
#[derive(Debug, Clone, Copy)]
struct Scope {
    builtins: bool,
    functions: bool,
}

/// Shell builtins (POSIX and bash) that run no program.
const INERT_BUILTINS: &[&str] = &[
    ":",
    "true",
    "false",
    "cd",
    "export",
    "unset",
    "readonly",
    "local",
    "declare",
    "typeset",
    "set",
    "shift",
    "echo",
    "printf",
    "test",
    "[",
    "pwd",
    "read",
    "return",
    "exit",
    "break",
    "continue",
    "wait",
    "umask",
    "ulimit",
    "getopts",
    "type",
    "let",
    "shopt",
    "jobs",
    "fg",
    "bg",
    "kill",
    "times",
    "dirs",
    "pushd",
    "popd",
    "history",
    "bind",
    "complete",
    "compgen",
    "compopt",
    "caller",
    "disown",
    "logout",
    "mapfile",
    "readarray",
    "suspend",
    "help",
    "unalias",
];

/// Builtins that exist only in bash (the line then runs with bash).
pub const BASH_BUILTINS: &[&str] = &[
    "source",
    "declare",
    "typeset",
    "local",
    "shopt",
    "let",
    "pushd",
    "popd",
    "dirs",
    "mapfile",
    "readarray",
    "compgen",
    "complete",
    "compopt",
    "caller",
    "disown",
    "bind",
    "help",
    "builtin",
    "enable",
    "suspend",
    "logout",
];

/// Shells: `-c TEXT` runs TEXT, `FILE` runs a script, otherwise they read commands from stdin.
const SHELLS: &[&str] =
    &["sh", "bash", "dash", "zsh", "ksh", "ash", "mksh", "yash", "hush", "rbash", "posh", "sentra-shell"];

/// Unwraps the simple command `words` (never empty).
#[must_use]
pub fn unwrap<'w>(words: &'w [Word], functions: &BTreeSet<String>) -> Vec<Action<'w>> {
    let mut out = Vec::new();
    unwrap_into(words, Scope { builtins: true, functions: true }, functions, false, &mut out);
    out
}

fn unwrap_into<'w>(
    words: &'w [Word],
    scope: Scope,
    functions: &BTreeSet<String>,
    extra_args: bool,
    out: &mut Vec<Action<'w>>,
) {
    let Some(first) = words.first() else { return };
    let Some(name) = first.value.as_deref().filter(|_| !first.glob) else {
        if first.basename.is_some() && !first.glob {
            // `"$HOME"/bin/tool`: the program's name is known, its directory is not.
            return program(words, first, functions, extra_args, out);
        }
        return out
            .push(Action::Unknown(format!("the program `{}` is only known when the line runs", first.raw)));
    };
    if !name.contains('/') {
        if scope.functions && functions.contains(name) {
            // The function's body is part of the line and judged with it.
            return;
        }
        if scope.builtins {
            // A rule written for the name applies to the builtin too (`kill`, `cd`, `exec`, `source`…):
            // judged like a wrapper, only when a rule names it, so builtins stay usable under a deny
            // default. Whatever the builtin runs is judged as well.
            let at = out.len();
            if builtin(name, words, functions, out) {
                out.insert(at, Action::Program { words, extra_args: false, wrapper: true, builtin: true });
                return;
            }
        }
    }
    program(words, first, functions, extra_args, out);
}

/// Handles shell builtins; false when `name` is not one.
fn builtin<'w>(
    name: &str,
    words: &'w [Word],
    functions: &BTreeSet<String>,
    out: &mut Vec<Action<'w>>,
) -> bool {
    let args = words.get(1..).unwrap_or_default();
    let all_known = || args.iter().map(|w| w.value.clone()).collect::<Option<Vec<_>>>();
    match name {
        "hash" if args.iter().any(|w| w.text().starts_with("-p")) => {
            out.push(Action::Unknown("`hash -p` rebinds a command name to another program".into()));
        }
        "alias" if args.iter().any(|w| w.text().contains('=')) => {
            out.push(Action::Unknown("alias definitions are not followed; call the command directly".into()));
        }
        "alias" => {}
        "enable" if !args.is_empty() => {
            out.push(Action::Unknown("`enable` with arguments can load or hide builtins".into()));
        }
        "fc" => out.push(Action::Unknown("`fc` re-runs commands from history".into())),
        _ if INERT_BUILTINS.contains(&name) || matches!(name, "enable" | "hash") => {}
        "eval" => match all_known() {
            Some(parts) => out.push(Action::Line(parts.join(" "))),
            None => out.push(Action::Unknown("`eval` of text that is only known when the line runs".into())),
        },
        "trap" => trap(args, out),
        "." | "source" => match args.first() {
            None => {}
            Some(Word { value: Some(file), .. }) => out.push(Action::File(file.clone())),
            Some(word) => out
                .push(Action::Unknown(format!("the script `{}` is only known when the line runs", word.raw))),
        },
        "exec" => {
            let rest = skip_options(args, &["-a"]);
            unwrap_into(rest, Scope { builtins: false, functions: false }, functions, false, out);
        }
        "command" => {
            if args.iter().take_while(|w| w.text().starts_with('-')).any(|w| w.text().contains(['v', 'V'])) {
                return true;
            }
            let rest = skip_options(args, &[]);
            unwrap_into(rest, Scope { builtins: true, functions: false }, functions, false, out);
        }
        "builtin" => match args.first() {
            // A name that is not a builtin makes bash refuse: nothing runs.
            Some(Word { value: Some(inner), .. }) => _ = builtin(inner, args, functions, out),
            Some(word) => {
                out.push(Action::Unknown(format!("`builtin {}` is only known when the line runs", word.raw)));
            }
            None => {}
        },
        _ => return false,
    }
    true
}

fn trap<'w>(args: &'w [Word], out: &mut Vec<Action<'w>>) {
    let args = match args.first().map(Word::text) {
        Some("--") => args.get(1..).unwrap_or_default(),
        Some(flag) if flag.starts_with('-') && flag != "-" => return,
        _ => args,
    };
    // `trap ACTION SIGNAL…`; a lone argument or `-` resets.
    if args.len() < 2 {
        return;
    }
    match args.first() {
        Some(Word { value: Some(action), .. }) if action == "-" || action.is_empty() => {}
        Some(Word { value: Some(action), .. }) => out.push(Action::Line(action.clone())),
        _ => out.push(Action::Unknown("`trap` with an action only known when the line runs".into())),
    }
}

/// Skips leading options: `with_value` take the next word, any other word starting with `-` is a flag
/// (attached values such as `-n5` included). Stops at `--` (skipped) or the first operand.
fn skip_options<'w>(args: &'w [Word], with_value: &[&str]) -> &'w [Word] {
    let mut i = 0;
    while let Some(word) = args.get(i) {
        let text = word.text();
        if text == "--" {
            return args.get(i + 1..).unwrap_or_default();
        }
        if !text.starts_with('-') || text == "-" {
            break;
        }
        i += if with_value.contains(&text) { 2 } else { 1 };
    }
    args.get(i..).unwrap_or_default()
}

/// A program: judged itself, and unwrapped when it runs another program.
#[expect(clippy::too_many_lines, reason = "one arm per known wrapper program")]
fn program<'w>(
    words: &'w [Word],
    first: &'w Word,
    functions: &BTreeSet<String>,
    extra_args: bool,
    out: &mut Vec<Action<'w>>,
) {
    let base = first.basename.as_deref().unwrap_or_default();
    let args = words.get(1..).unwrap_or_default();
    let inner_scope = Scope { builtins: false, functions: false };
    let wrap = |out: &mut Vec<Action<'w>>, rest: &'w [Word], extra: bool| {
        out.push(Action::Program { words, extra_args, wrapper: true, builtin: false });
        unwrap_into(rest, inner_scope, functions, extra || extra_args, out);
    };
    match base {
        "env" => env(words, functions, extra_args, out),
        "nohup" | "setsid" | "unbuffer" | "catchsegv" => wrap(out, skip_options(args, &[]), false),
        "nice" => wrap(out, skip_options(args, &["-n"]), false),
        "time" => wrap(out, skip_options(args, &["-f", "-o"]), false),
        "stdbuf" => wrap(out, skip_options(args, &["-i", "-o", "-e"]), false),
        "timeout" => {
            let rest = skip_options(args, &["-s", "-k"]);
            wrap(out, rest.get(1..).unwrap_or_default(), false);
        }
        "taskset" | "chrt" | "ionice"
            if args.iter().any(|w| w.text() == "-p" || w.text().starts_with("--pid")) =>
        {
            out.push(Action::Program { words, extra_args, wrapper: false, builtin: false });
        }
        "taskset" | "chrt" => {
            let rest = skip_options(args, &["-T", "-P", "-D"]);
            wrap(out, rest.get(1..).unwrap_or_default(), false);
        }
        "ionice" => wrap(out, skip_options(args, &["-c", "-n"]), false),
        "strace" | "ltrace" if args.iter().any(|w| w.text() == "-p") => {
            out.push(Action::Program { words, extra_args, wrapper: false, builtin: false });
        }
        "strace" | "ltrace" => wrap(
            out,
            skip_options(
                args,
                &["-o", "-e", "-s", "-u", "-E", "-a", "-b", "-I", "-O", "-S", "-P", "-X", "-U", "-n"],
            ),
            false,
        ),
        "sudo" | "doas" => {
            let rest = skip_options(args, &["-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-T", "-U"]);
            let opts = args.get(..args.len() - rest.len()).unwrap_or_default();
            let shell = opts.iter().any(|w| matches!(w.text(), "-s" | "-i" | "--shell" | "--login"));
            if rest.is_empty() && shell {
                out.push(Action::Program { words, extra_args, wrapper: true, builtin: false });
                out.push(Action::Unknown(format!("`{base}` starts an interactive shell")));
            } else if rest.is_empty() {
                out.push(Action::Program { words, extra_args, wrapper: false, builtin: false });
            } else {
                wrap(out, rest, false);
            }
        }
        "su" | "runuser" => su(words, base, extra_args, out),
        "chroot" => {
            let rest = skip_options(args, &[]);
            if rest.len() < 2 {
                out.push(Action::Program { words, extra_args, wrapper: true, builtin: false });
                out.push(Action::Unknown("`chroot` without a command starts a shell".into()));
            } else {
                wrap(out, rest.get(1..).unwrap_or_default(), false);
            }
        }
        "flock" => {
            let rest = skip_options(args, &["-w", "-E", "--timeout", "--conflict-exit-code"]);
            match rest.get(1..).unwrap_or_default() {
                [flag, command, ..] if matches!(flag.text(), "-c" | "--command") => {
                    out.push(Action::Program { words, extra_args, wrapper: true, builtin: false });
                    push_line(command, "flock -c", out);
                }
                inner => wrap(out, inner, false),
            }
        }
        "watch" => {
            let exec = args.iter().any(|w| matches!(w.text(), "-x" | "--exec"));
            let rest = skip_options(args, &["-n", "--interval", "-q", "--equexit"]);
            if exec {
                wrap(out, rest, false);
            } else {
                out.push(Action::Program { words, extra_args, wrapper: true, builtin: false });
                match rest.iter().map(|w| w.value.clone()).collect::<Option<Vec<_>>>() {
                    Some(parts) if !parts.is_empty() => out.push(Action::Line(parts.join(" "))),
                    Some(_) => {}
                    None => out.push(Action::Unknown("`watch` of text only known when the line runs".into())),
                }
            }
        }
        "xargs" => {
            let rest =
                skip_options(args, &["-a", "-E", "-I", "-L", "-n", "-P", "-s", "-d", "--process-slot-var"]);
            out.push(Action::Program { words, extra_args, wrapper: true, builtin: false });
            if rest.is_empty() {
                out.push(Action::Program {
                    words: &ECHO[..],
                    extra_args: true,
                    wrapper: false,
                    builtin: false,
                });
            } else {
                unwrap_into(rest, inner_scope, functions, true, out);
            }
        }
        "find" => {
            out.push(Action::Program { words, extra_args, wrapper: false, builtin: false });
            let mut rest = args;
            while let Some(pos) =
                rest.iter().position(|w| matches!(w.text(), "-exec" | "-execdir" | "-ok" | "-okdir"))
            {
                let after = rest.get(pos + 1..).unwrap_or_default();
                let end = after.iter().position(|w| matches!(w.text(), ";" | "+")).unwrap_or(after.len());
                let command = after.get(..end).unwrap_or_default();
                let extra = command.iter().any(|w| w.text().contains("{}"));
                if command.is_empty() {
                    out.push(Action::Unknown("`find -exec` without a command".into()));
                } else {
                    unwrap_into(command, inner_scope, functions, extra, out);
                }
                rest = after.get(end + 1..).unwrap_or_default();
            }
        }
        "busybox" => match args.first() {
            Some(applet) if !applet.text().starts_with('-') => {
                out.push(Action::Program { words, extra_args, wrapper: true, builtin: false });
                unwrap_into(args, inner_scope, functions, extra_args, out);
            }
            _ => out.push(Action::Program { words, extra_args, wrapper: false, builtin: false }),
        },
        _ if SHELLS.contains(&base) => shell(words, base, extra_args, out),
        _ => out.push(Action::Program { words, extra_args, wrapper: false, builtin: false }),
    }
    // Commands given as text in its options (`tar --to-command`, `git -c alias.x='!…'`…).
    super::runners::scan(base, args, out);
}

/// The program `xargs` runs when given none.
static ECHO: LazyLock<[Word; 1]> = LazyLock::new(|| {
    [Word { raw: "echo".into(), value: Some("echo".into()), basename: Some("echo".into()), glob: false }]
});

fn push_line<'w>(command: &'w Word, what: &str, out: &mut Vec<Action<'w>>) {
    match &command.value {
        Some(text) => out.push(Action::Line(text.clone())),
        None => out.push(Action::Unknown(format!("`{what}` of text only known when the line runs"))),
    }
}

/// `env [-i] [-u NAME] [-C DIR] [-S TEXT] [NAME=VALUE…] [COMMAND [ARG…]]`.
fn env<'w>(words: &'w [Word], functions: &BTreeSet<String>, extra_args: bool, out: &mut Vec<Action<'w>>) {
    let args = words.get(1..).unwrap_or_default();
    let mut i = 0;
    while let Some(word) = args.get(i) {
        let text = word.text();
        if text == "--" {
            i += 1;
            break;
        }
        if matches!(text, "-S" | "--split-string")
            || text.starts_with("--split-string=")
            || text.starts_with("-S")
        {
            out.push(Action::Program { words, extra_args, wrapper: true, builtin: false });
            let split = text
                .strip_prefix("--split-string=")
                .or_else(|| text.strip_prefix("-S").filter(|s| !s.is_empty()));
            match (split, args.get(i + 1)) {
                (Some(text), _) if word.value.is_some() => out.push(Action::Line(text.to_string())),
                (None, Some(next)) => push_line(next, "env -S", out),
                _ => out.push(Action::Unknown("`env -S` of text only known when the line runs".into())),
            }
            return;
        }
        if text.starts_with('-') && text != "-" {
            i += if matches!(text, "-u" | "-C" | "--unset" | "--chdir") { 2 } else { 1 };
        } else if text == "-" || text.contains('=') {
            i += 1;
        } else {
            break;
        }
    }
    let rest = args.get(i..).unwrap_or_default();
    if rest.is_empty() {
        out.push(Action::Program { words, extra_args, wrapper: false, builtin: false });
    } else {
        out.push(Action::Program { words, extra_args, wrapper: true, builtin: false });
        unwrap_into(rest, Scope { builtins: false, functions: false }, functions, extra_args, out);
    }
}

/// `su [-] [USER] [-c TEXT]`: without `-c` it starts a shell.
fn su<'w>(words: &'w [Word], base: &str, extra_args: bool, out: &mut Vec<Action<'w>>) {
    let args = words.get(1..).unwrap_or_default();
    out.push(Action::Program { words, extra_args, wrapper: true, builtin: false });
    let mut iter = args.iter();
    while let Some(word) = iter.next() {
        let text = word.text();
        if matches!(text, "-c" | "--command" | "--session-command") {
            return match iter.next() {
                Some(command) => push_line(command, base, out),
                None => out.push(Action::Unknown(format!("`{base} -c` without a command"))),
            };
        }
        if let Some(command) = text.strip_prefix("--command=") {
            return out.push(Action::Line(command.to_string()));
        }
    }
    out.push(Action::Unknown(format!("`{base}` without `-c` starts a shell")));
}

/// `sh [-options] -c TEXT [ARG0 ARGS…]`, `sh [-options] FILE [ARGS…]`, `sh` (stdin).
fn shell<'w>(words: &'w [Word], base: &str, extra_args: bool, out: &mut Vec<Action<'w>>) {
    let args = words.get(1..).unwrap_or_default();
    out.push(Action::Program { words, extra_args, wrapper: true, builtin: false });
    let mut command = false;
    let mut stdin = false;
    let mut iter = args.iter();
    while let Some(word) = iter.next() {
        let text = word.text();
        if text == "--" || text == "-" {
            break;
        }
        if matches!(text, "-o" | "+o" | "-O" | "+O" | "--rcfile" | "--init-file") {
            iter.next();
            continue;
        }
        if text.starts_with("--") {
            continue;
        }
        if let Some(flags) = text.strip_prefix('-').or_else(|| text.strip_prefix('+')) {
            command |= text.starts_with('-') && flags.contains('c');
            stdin |= text.starts_with('-') && (flags.contains('s') || flags.contains('i'));
            continue;
        }
        // The first operand: the command text with -c, else a script file.
        if command {
            push_line(word, base, out);
        } else if stdin {
            out.push(Action::Unknown(format!("`{base}` reads its commands from standard input")));
        } else {
            match &word.value {
                Some(file) => out.push(Action::File(file.clone())),
                None => out.push(Action::Unknown(format!(
                    "the script `{}` is only known when the line runs",
                    word.raw
                ))),
            }
        }
        return;
    }
    let rest: Vec<&Word> = iter.collect();
    match (command, rest.first()) {
        (true, Some(word)) => push_line(word, base, out),
        (true, None) => out.push(Action::Unknown(format!("`{base} -c` without a command"))),
        (false, Some(word)) => match &word.value {
            Some(file) => out.push(Action::File(file.clone())),
            None => out
                .push(Action::Unknown(format!("the script `{}` is only known when the line runs", word.raw))),
        },
        (false, None) => out.push(Action::Unknown(format!(
            "`{base}` reads its commands from standard input, which cannot be checked"
        ))),
    }
}
