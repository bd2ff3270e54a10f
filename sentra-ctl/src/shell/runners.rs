//! Programs that run commands handed to them in an option, an operand or an environment variable
//! (`tar --to-command`, `git -c alias.x='!…'`, `ssh -o ProxyCommand`, `LESSOPEN`, `awk 'system()'`…):
//! one table, so that the embedded command is judged like any line when its text is known, and denied
//! as unknown code when it is not.
//!
//! Programs that run the rest of their own command line (`env`, `nice`, `xargs`, `find -exec`, shells
//! with `-c`…) are unwrapped in [`super::unwrap`]; this table covers commands given as text.

use super::{parse::Word, unwrap::Action};

/// What an option, operand or variable holds.
#[derive(Debug, Clone, Copy)]
pub enum Runs {
    /// Shell text (run with `sh -c`, or split into a program and its arguments: judged the same).
    Line,
    /// Shell text only when it starts with `!` (git aliases, credential helpers); else a git command.
    Bang,
    /// Programs separated by this character (`gcc -wrapper gdb,--args`).
    List(char),
    /// A script file a shell runs (`BASH_ENV`).
    File,
    /// Code that cannot be judged here: denied, with this reason.
    Unknown(&'static str),
    /// Program text in a language that can run commands (awk, sed): checked by this function, which
    /// says why the text may run a command.
    Check(fn(&str) -> Option<&'static str>),
}

/// How the command is spelled on the command line.
#[derive(Debug, Clone, Copy)]
pub enum Spelling {
    /// `--name=VALUE` or `--name VALUE`.
    Long(&'static str),
    /// `-n VALUE` or `-nVALUE`.
    Short(&'static str),
    /// `--name=…PREFIX…VALUE`: the value follows the prefix inside one word.
    Prefix(&'static str),
    /// `OPTION KEY=VALUE` (also `OPTION KEY VALUE` in one word, and `OPTIONKEY=VALUE`): settings given
    /// on the command line (`git -c`, `ssh -o`), for keys matching these patterns (lowercase; `*`
    /// stands for one dotted segment or, at the end, for the rest).
    Setting { option: &'static str, keys: &'static [&'static str] },
    /// Every word after this operand, as one command (`git submodule foreach CMD…`).
    Rest(&'static str),
    /// The program text of awk or sed (see [`Script`]).
    Script(Script),
}

/// How awk or sed is given its program: inline with one of `inline` or as the first operand, from a
/// file with one of `files` (read and checked like inline text), native code loaded with one of
/// `loads` (unknown code); `values` are the other options that take a value.
#[derive(Debug, Clone, Copy)]
pub struct Script {
    pub inline: &'static [&'static str],
    pub files: &'static [&'static str],
    pub loads: &'static [&'static str],
    pub values: &'static [&'static str],
}

/// One row: a way for `programs` to run a command.
#[derive(Debug, Clone, Copy)]
pub struct Runner {
    pub programs: &'static [&'static str],
    /// The row applies only after this operand (`git rebase -x`: `rebase`).
    pub subcommand: Option<&'static str>,
    pub spelling: Spelling,
    pub runs: Runs,
    /// A line this row must deny when the policy denies `python3` (tested for every row), and the
    /// same line running `true` instead, which it must allow.
    pub example: (&'static str, &'static str),
}

const GIT: &[&str] = &["git"];
const TAR: &[&str] = &["tar", "bsdtar", "gtar"];
const CC: &[&str] = &["gcc", "g++", "cc", "c++", "clang", "clang++", "gfortran"];
const VIM: &[&str] = &["vim", "vi", "nvim", "view", "ex", "vimdiff", "rvim", "gvim"];
const AWK: &[&str] = &["awk", "gawk", "mawk", "nawk", "original-awk"];

/// Keys of `git -c` whose value is a command run through the shell (git's documentation, `git
/// config`: core.sshCommand, core.pager, core.editor, diff.external, diff.<driver>.textconv,
/// filter.<driver>.clean/smudge/process, …).
const GIT_COMMAND_KEYS: &[&str] = &[
    "core.sshcommand",
    "core.pager",
    "core.editor",
    "core.askpass",
    "core.fsmonitor",
    "core.gitproxy",
    "sequence.editor",
    "diff.external",
    "diff.*.textconv",
    "diff.*.command",
    "difftool.*.cmd",
    "mergetool.*.cmd",
    "merge.*.driver",
    "filter.*.clean",
    "filter.*.smudge",
    "filter.*.process",
    "gpg.program",
    "gpg.*.program",
    "pager.*",
    "web.browser",
    "browser.*.cmd",
    "uploadpack.packobjectshook",
    "remote.*.uploadpack",
    "remote.*.receivepack",
    "sendemail.smtpserver",
    "sendemail.tocmd",
    "sendemail.cccmd",
    "man.*.cmd",
];

/// The table. A row per spelling; one test runs every row's example ([`tests`]).
pub const RUNNERS: &[Runner] = &[
    Runner {
        programs: TAR,
        subcommand: None,
        spelling: Spelling::Long("--to-command"),
        runs: Runs::Line,
        example: ("tar -xf a.tar --to-command='python3 -c 1'", "tar -xf a.tar --to-command='true'"),
    },
    Runner {
        programs: TAR,
        subcommand: None,
        spelling: Spelling::Long("--use-compress-program"),
        runs: Runs::Line,
        example: (
            "tar --use-compress-program=python3 -cf a.tar x",
            "tar --use-compress-program=true -cf a.tar x",
        ),
    },
    Runner {
        programs: TAR,
        subcommand: None,
        spelling: Spelling::Short("-I"),
        runs: Runs::Line,
        example: ("tar -I 'python3 -c 1' -cf a.tar x", "tar -I true -cf a.tar x"),
    },
    Runner {
        programs: TAR,
        subcommand: None,
        spelling: Spelling::Prefix("--checkpoint-action=exec="),
        runs: Runs::Line,
        example: (
            "tar -cf a.tar --checkpoint=1 --checkpoint-action=exec=python3 x",
            "tar -cf a.tar --checkpoint=1 --checkpoint-action=exec=true x",
        ),
    },
    Runner {
        programs: TAR,
        subcommand: None,
        spelling: Spelling::Long("--info-script"),
        runs: Runs::Line,
        example: ("tar -cf a.tar --info-script=python3 x", "tar -cf a.tar --info-script=true x"),
    },
    Runner {
        programs: TAR,
        subcommand: None,
        spelling: Spelling::Long("--new-volume-script"),
        runs: Runs::Line,
        example: ("tar -cf a.tar --new-volume-script=python3 x", "tar -cf a.tar --new-volume-script=true x"),
    },
    Runner {
        programs: TAR,
        subcommand: None,
        spelling: Spelling::Short("-F"),
        runs: Runs::Line,
        example: ("tar -cf a.tar -F python3 x", "tar -cf a.tar -F true x"),
    },
    Runner {
        programs: TAR,
        subcommand: None,
        spelling: Spelling::Long("--rsh-command"),
        runs: Runs::Line,
        example: ("tar -cf h:a.tar --rsh-command=python3 x", "tar -cf h:a.tar --rsh-command=true x"),
    },
    Runner {
        programs: &["split"],
        subcommand: None,
        spelling: Spelling::Long("--filter"),
        runs: Runs::Line,
        example: ("split --filter='python3 -c 1' big", "split --filter='true' big"),
    },
    Runner {
        programs: &["zip"],
        subcommand: None,
        spelling: Spelling::Short("-TT"),
        runs: Runs::Line,
        example: ("zip -T -TT 'python3 -c 1' a.zip x", "zip -T -TT 'true' a.zip x"),
    },
    Runner {
        programs: &["zip"],
        subcommand: None,
        spelling: Spelling::Long("--unzip-command"),
        runs: Runs::Line,
        example: ("zip -T --unzip-command 'python3 -c 1' a.zip x", "zip -T --unzip-command true a.zip x"),
    },
    Runner {
        programs: CC,
        subcommand: None,
        spelling: Spelling::Short("-wrapper"),
        runs: Runs::List(','),
        example: ("gcc -wrapper python3,-c,1 a.c", "gcc -wrapper true a.c"),
    },
    Runner {
        programs: CC,
        subcommand: None,
        spelling: Spelling::Prefix("-fplugin="),
        runs: Runs::Unknown("a compiler plugin is a library loaded into the compiler"),
        example: ("gcc -fplugin=./python3.so a.c", "gcc -O2 a.c"),
    },
    Runner {
        programs: CC,
        subcommand: None,
        spelling: Spelling::Short("-B"),
        runs: Runs::Unknown("`-B` runs the compiler's stages from another directory"),
        example: ("gcc -B/tmp/python3 a.c", "gcc -O2 a.c"),
    },
    Runner {
        programs: VIM,
        subcommand: None,
        spelling: Spelling::Short("-c"),
        runs: Runs::Check(ex_command),
        example: ("vim -c '!python3' f", "vim -c 'set number' f"),
    },
    Runner {
        programs: VIM,
        subcommand: None,
        spelling: Spelling::Long("--cmd"),
        runs: Runs::Check(ex_command),
        example: ("vim --cmd 'call system(\"python3\")' f", "vim --cmd 'set number' f"),
    },
    Runner {
        programs: VIM,
        subcommand: None,
        spelling: Spelling::Short("+"),
        runs: Runs::Check(ex_command),
        example: ("vim '+!python3' f", "vim +12 f"),
    },
    Runner {
        programs: VIM,
        subcommand: None,
        spelling: Spelling::Short("-S"),
        runs: Runs::Unknown("`vim -S` runs the ex commands of a file"),
        example: ("vim -S python3.vim f", "vim -R f"),
    },
    Runner {
        programs: &["make", "gmake"],
        subcommand: None,
        spelling: Spelling::Long("--eval"),
        runs: Runs::Unknown("`make --eval` adds make rules, which run commands"),
        example: ("make --eval='x:;python3'", "make -j4"),
    },
    Runner {
        programs: &["make", "gmake"],
        subcommand: None,
        spelling: Spelling::Short("-E"),
        runs: Runs::Unknown("`make -E` adds make rules, which run commands"),
        example: ("make -E 'x:;python3'", "make -j4"),
    },
    Runner {
        programs: &["make", "gmake"],
        subcommand: None,
        spelling: Spelling::Prefix("SHELL="),
        runs: Runs::Line,
        example: ("make SHELL=python3", "make SHELL=true"),
    },
    Runner {
        programs: GIT,
        subcommand: None,
        spelling: Spelling::Setting {
            option: "-c",
            keys: &["alias.*", "credential.helper", "credential.*.helper"],
        },
        runs: Runs::Bang,
        example: ("git -c alias.x='!python3 -c 1' x", "git -c alias.x='!true' x"),
    },
    Runner {
        programs: GIT,
        subcommand: None,
        spelling: Spelling::Setting { option: "-c", keys: GIT_COMMAND_KEYS },
        runs: Runs::Line,
        example: ("git -c core.sshCommand=python3 fetch", "git -c core.sshCommand=true fetch"),
    },
    Runner {
        programs: GIT,
        subcommand: None,
        spelling: Spelling::Setting { option: "-c", keys: &["core.hookspath"] },
        runs: Runs::Unknown("`core.hooksPath` runs hooks from another directory"),
        example: ("git -c core.hooksPath=/tmp/python3 commit", "git -c core.quotePath=false status"),
    },
    Runner {
        programs: GIT,
        subcommand: None,
        spelling: Spelling::Prefix("--config-env="),
        runs: Runs::Unknown("`git --config-env` takes a setting from a variable only known when git runs"),
        example: ("git --config-env=core.sshCommand=PYTHON3 fetch", "git status"),
    },
    Runner {
        programs: GIT,
        subcommand: None,
        spelling: Spelling::Long("--upload-pack"),
        runs: Runs::Line,
        example: ("git clone --upload-pack='python3 -c 1' h:r", "git clone --upload-pack=true h:r"),
    },
    Runner {
        programs: GIT,
        subcommand: Some("clone"),
        spelling: Spelling::Short("-u"),
        runs: Runs::Line,
        example: ("git clone -u 'python3 -c 1' h:r", "git clone -u true h:r"),
    },
    Runner {
        programs: GIT,
        subcommand: None,
        spelling: Spelling::Long("--receive-pack"),
        runs: Runs::Line,
        example: ("git push --receive-pack=python3 h:r", "git push --receive-pack=true h:r"),
    },
    Runner {
        programs: GIT,
        subcommand: None,
        spelling: Spelling::Long("--exec"),
        runs: Runs::Line,
        example: ("git rebase --exec 'python3 -c 1' main", "git rebase --exec true main"),
    },
    Runner {
        programs: GIT,
        subcommand: Some("rebase"),
        spelling: Spelling::Short("-x"),
        runs: Runs::Line,
        example: ("git rebase -x 'python3 -c 1' main", "git rebase -x true main"),
    },
    Runner {
        programs: GIT,
        subcommand: Some("difftool"),
        spelling: Spelling::Short("-x"),
        runs: Runs::Line,
        example: ("git difftool -x python3", "git difftool -x true"),
    },
    Runner {
        programs: GIT,
        subcommand: Some("difftool"),
        spelling: Spelling::Long("--extcmd"),
        runs: Runs::Line,
        example: ("git difftool --extcmd=python3", "git difftool --extcmd=true"),
    },
    Runner {
        programs: GIT,
        subcommand: None,
        spelling: Spelling::Rest("foreach"),
        runs: Runs::Line,
        example: ("git submodule foreach 'python3 -c 1'", "git submodule foreach true"),
    },
    Runner {
        programs: GIT,
        subcommand: Some("bisect"),
        spelling: Spelling::Rest("run"),
        runs: Runs::Line,
        example: ("git bisect run python3 t.py", "git bisect run true"),
    },
    Runner {
        programs: GIT,
        subcommand: Some("filter-branch"),
        spelling: Spelling::Prefix("--"),
        runs: Runs::Unknown("`git filter-branch` filters are shell text run for every commit"),
        example: ("git filter-branch --tree-filter 'python3 -c 1' HEAD", "git status"),
    },
    Runner {
        programs: GIT,
        subcommand: None,
        spelling: Spelling::Prefix("ext::"),
        runs: Runs::Line,
        example: ("git clone 'ext::python3 -c 1' r", "git clone 'ext::true' r"),
    },
    Runner {
        programs: &["man"],
        subcommand: None,
        spelling: Spelling::Short("-P"),
        runs: Runs::Line,
        example: ("man -P 'python3 -c 1' ls", "man -P cat ls"),
    },
    Runner {
        programs: &["man"],
        subcommand: None,
        spelling: Spelling::Long("--pager"),
        runs: Runs::Line,
        example: ("man --pager=python3 ls", "man --pager=cat ls"),
    },
    Runner {
        programs: &["man"],
        subcommand: None,
        spelling: Spelling::Long("--html"),
        runs: Runs::Line,
        example: ("man --html=python3 ls", "man --html=true ls"),
    },
    Runner {
        programs: &["ssh", "scp", "sftp", "autossh"],
        subcommand: None,
        spelling: Spelling::Setting {
            option: "-o",
            keys: &["proxycommand", "localcommand", "knownhostscommand", "remotecommand"],
        },
        runs: Runs::Line,
        example: ("ssh -o ProxyCommand='python3 -c 1' h", "ssh -o ProxyCommand=true h"),
    },
    Runner {
        programs: &["scp", "sftp"],
        subcommand: None,
        spelling: Spelling::Short("-S"),
        runs: Runs::Line,
        example: ("scp -S python3 a h:b", "scp -S true a h:b"),
    },
    Runner {
        programs: &["rsync"],
        subcommand: None,
        spelling: Spelling::Short("-e"),
        runs: Runs::Line,
        example: ("rsync -e 'python3 -c 1' a h:b", "rsync -e true a h:b"),
    },
    Runner {
        programs: &["rsync"],
        subcommand: None,
        spelling: Spelling::Long("--rsh"),
        runs: Runs::Line,
        example: ("rsync --rsh=python3 a h:b", "rsync --rsh=true a h:b"),
    },
    Runner {
        programs: &["script"],
        subcommand: None,
        spelling: Spelling::Short("-c"),
        runs: Runs::Line,
        example: ("script -q -c 'python3 -c 1' /dev/null", "script -q -c true /dev/null"),
    },
    Runner {
        programs: &["script"],
        subcommand: None,
        spelling: Spelling::Long("--command"),
        runs: Runs::Line,
        example: ("script --command=python3 /dev/null", "script --command=true /dev/null"),
    },
    Runner {
        programs: &["less", "more", "most"],
        subcommand: None,
        spelling: Spelling::Prefix("+!"),
        runs: Runs::Line,
        example: ("less '+!python3' f", "less +G f"),
    },
    Runner {
        programs: AWK,
        subcommand: None,
        spelling: Spelling::Script(Script {
            inline: &["-e", "--source"],
            files: &["-f", "--file", "-i", "--include"],
            loads: &["-l", "--load"],
            values: &["-F", "-v", "--field-separator", "--assign", "-W"],
        }),
        runs: Runs::Check(awk_program),
        example: ("awk 'BEGIN{system(\"python3\")}'", "awk '{print $1 || $2}' f"),
    },
    Runner {
        programs: &["sed", "gsed"],
        subcommand: None,
        spelling: Spelling::Script(Script {
            inline: &["-e", "--expression"],
            files: &["-f", "--file"],
            loads: &[],
            values: &["-l", "--line-length"],
        }),
        runs: Runs::Check(sed_script),
        example: ("sed '1e python3' f", "sed -e 's/e/E/g;/x/d' f"),
    },
    Runner {
        programs: &["perl", "ruby"],
        subcommand: None,
        spelling: Spelling::Short("-M"),
        runs: Runs::Unknown("`-M` loads a module, code from a file"),
        example: ("perl -Mpython3 -e 1", "perl -w -e 1"),
    },
];

/// Variables that make the programs started after them run a command or load code.
pub const VARIABLES: &[(&str, Runs)] = &[
    // A shell started non-interactively runs the file first (bash(1) INVOCATION, POSIX `ENV`).
    ("BASH_ENV", Runs::File),
    ("ENV", Runs::File),
    // less(1) INPUT PREPROCESSOR: `|cmd %s`, `||cmd %s`, `cmd %s`.
    ("LESSOPEN", Runs::Line),
    ("LESSCLOSE", Runs::Line),
    ("PAGER", Runs::Line),
    ("MANPAGER", Runs::Line),
    ("GIT_PAGER", Runs::Line),
    ("SYSTEMD_PAGER", Runs::Line),
    ("EDITOR", Runs::Line),
    ("VISUAL", Runs::Line),
    ("GIT_EDITOR", Runs::Line),
    ("GIT_SEQUENCE_EDITOR", Runs::Line),
    ("GIT_SSH_COMMAND", Runs::Line),
    ("GIT_SSH", Runs::Line),
    ("GIT_EXTERNAL_DIFF", Runs::Line),
    ("GIT_PROXY_COMMAND", Runs::Line),
    ("GIT_ASKPASS", Runs::Line),
    ("SSH_ASKPASS", Runs::Line),
    ("SUDO_ASKPASS", Runs::Line),
    ("BROWSER", Runs::Line),
    ("RSYNC_RSH", Runs::Line),
    ("TAR_RSH", Runs::Line),
    // ld.so(8): a library mapped into every dynamically linked program started after it.
    ("LD_PRELOAD", Runs::Unknown("`LD_PRELOAD` loads a library into every program")),
    ("LD_AUDIT", Runs::Unknown("`LD_AUDIT` loads a library into every program")),
    ("PERL5OPT", Runs::Unknown("`PERL5OPT` adds options, modules included, to every perl")),
];

/// What `variable` set to `value` makes the programs after it run, if anything.
pub fn variable(name: &str, value: &Word, out: &mut Vec<Action<'_>>) {
    let Some((_, runs)) = VARIABLES.iter().find(|(known, _)| *known == name) else { return };
    if value.value.as_deref() == Some("") {
        return;
    }
    let what = format!("`{name}`");
    embedded(*runs, value.value.as_deref().map(|v| v.trim_start_matches(['|', '-'])), &what, out);
}

/// The commands `base` (a program's name) runs from its arguments `args`, by the table.
pub fn scan(base: &str, args: &[Word], out: &mut Vec<Action<'_>>) {
    for runner in RUNNERS.iter().filter(|r| r.programs.contains(&base)) {
        let args = match runner.subcommand {
            Some(sub) => match args.iter().position(|w| w.text() == sub) {
                Some(at) => args.get(at + 1..).unwrap_or_default(),
                None => continue,
            },
            None => args,
        };
        let what = format!("`{base}`");
        for value in values(runner.spelling, args) {
            embedded(runner.runs, value.as_deref(), &what, out);
        }
        if let Spelling::Script(options) = runner.spelling {
            script(runner.runs, args, options, &what, out);
        }
    }
}

/// Judges one embedded value (`None`: only known when the line runs).
fn embedded(runs: Runs, value: Option<&str>, what: &str, out: &mut Vec<Action<'_>>) {
    let Some(value) = value else {
        return out.push(Action::Unknown(format!("{what} runs a command only known when the line runs")));
    };
    match runs {
        Runs::Line => out.push(Action::Line(value.to_string())),
        Runs::Bang => {
            if let Some(line) = value.strip_prefix('!') {
                out.push(Action::Line(line.to_string()));
            }
        }
        Runs::List(separator) => out.push(Action::Line(value.split(separator).collect::<Vec<_>>().join(" "))),
        Runs::File => out.push(Action::File(value.to_string())),
        Runs::Unknown(reason) => out.push(Action::Unknown(format!("{what}: {reason}"))),
        Runs::Check(check) => {
            if let Some(reason) = check(value) {
                out.push(Action::Unknown(format!("{what}: {reason}")));
            }
        }
    }
}

/// The values the spelling finds in `args` (`None`: a value only known when the line runs). Options
/// end at `--`.
fn values(spelling: Spelling, args: &[Word]) -> Vec<Option<String>> {
    let mut found = Vec::new();
    let mut iter = args.iter().peekable();
    while let Some(word) = iter.next() {
        let text = word.text();
        let known = |s: &str| word.value.as_ref().map(|_| s.to_string());
        match spelling {
            _ if text == "--" && !matches!(spelling, Spelling::Rest(_)) => break,
            Spelling::Long(name) => {
                if text == name {
                    found.push(iter.next().and_then(|w| w.value.clone()));
                } else if let Some(value) = text.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
                    found.push(known(value));
                }
            }
            Spelling::Short(name) => {
                if text == name {
                    found.push(iter.next().and_then(|w| w.value.clone()));
                } else if let Some(value) = text.strip_prefix(name).filter(|v| !v.is_empty()) {
                    found.push(known(value));
                }
            }
            Spelling::Prefix(prefix) => {
                if let Some(value) = text.strip_prefix(prefix) {
                    found.push(known(value));
                }
            }
            Spelling::Setting { option, keys } => {
                let setting = if text == option {
                    iter.next().map(|w| (w.text().to_string(), w.value.is_some()))
                } else {
                    text.strip_prefix(option)
                        .filter(|v| !v.is_empty() && !option.starts_with("--"))
                        .map(|v| (v.to_string(), word.value.is_some()))
                };
                let Some((setting, is_known)) = setting else { continue };
                let (key, value) = setting
                    .split_once(|c: char| c == '=' || c.is_whitespace())
                    .unwrap_or((setting.as_str(), ""));
                if keys.iter().any(|pattern| key_matches(pattern, &key.to_ascii_lowercase())) {
                    found.push(is_known.then(|| value.trim_start().to_string()));
                }
            }
            Spelling::Rest(operand) => {
                if text == operand {
                    let rest: Vec<&Word> = iter.collect();
                    if !rest.is_empty() {
                        found.push(
                            rest.iter()
                                .map(|w| w.value.clone())
                                .collect::<Option<Vec<_>>>()
                                .map(|v| v.join(" ")),
                        );
                    }
                    break;
                }
            }
            Spelling::Script(_) => break,
        }
    }
    found
}

/// A `git config`-style key pattern: `*` matches one dotted segment, or everything when last.
fn key_matches(pattern: &str, key: &str) -> bool {
    let mut pattern_parts = pattern.split('.');
    let mut key_parts = key.split('.').peekable();
    loop {
        match (pattern_parts.next(), key_parts.next()) {
            (None, None) => return true,
            (Some("*"), Some(_)) if key_parts.peek().is_none() => return pattern_parts.next().is_none(),
            (Some("*"), Some(_)) => {}
            (Some(p), Some(k)) if p == k => {}
            _ => return false,
        }
    }
}

/// How a word spells one of `names`: alone (its value is the next word) or with the value attached
/// (`None` inside: only known when the line runs).
enum Given {
    Alone,
    Attached(Option<String>),
}

fn given(word: &Word, names: &[&str]) -> Option<Given> {
    let text = word.text();
    names.iter().find_map(|name| {
        if text == *name {
            return Some(Given::Alone);
        }
        let attached = if name.starts_with("--") {
            text.strip_prefix(name).and_then(|r| r.strip_prefix('='))
        } else {
            text.strip_prefix(name).filter(|r| !r.is_empty())
        };
        attached.map(|value| Given::Attached(word.value.as_ref().map(|_| value.to_string())))
    })
}

/// The program texts of awk or sed in `args`, each checked.
fn script(runs: Runs, args: &[Word], options: Script, what: &str, out: &mut Vec<Action<'_>>) {
    let Script { inline, files, loads, values } = options;
    let mut from_options = false;
    let mut iter = args.iter();
    while let Some(word) = iter.next() {
        let text = word.text();
        if text == "--" {
            break;
        }
        if !text.starts_with('-') || text == "-" {
            if !from_options {
                embedded(runs, word.value.as_deref(), what, out);
            }
            return;
        }
        if let Some(spelled) = given(word, inline) {
            from_options = true;
            let value = match spelled {
                Given::Alone => iter.next().and_then(|w| w.value.clone()),
                Given::Attached(value) => value,
            };
            embedded(runs, value.as_deref(), what, out);
        } else if let Some(spelled) = given(word, files) {
            from_options = true;
            let file = match spelled {
                Given::Alone => iter.next().and_then(|w| w.value.clone()),
                Given::Attached(value) => value,
            };
            match (file, runs) {
                (Some(file), Runs::Check(check)) => {
                    out.push(Action::CheckedFile { file, check, what: what.to_string() });
                }
                _ => out.push(Action::Unknown(format!(
                    "{what} runs a program file only known when the line runs"
                ))),
            }
        } else if let Some(spelled) = given(word, loads) {
            from_options = true;
            if matches!(spelled, Given::Alone) {
                iter.next();
            }
            out.push(Action::Unknown(format!("{what} loads native code")));
        } else if values.contains(&text) {
            iter.next();
        }
    }
}

/// Whether an ex command line (vim `-c`, `--cmd`, `+…`) can run a program: a line number, a search
/// or a setting cannot; filters (`!`), `system()`, `:terminal`, `:shell`, sourcing and the script
/// interfaces can.
fn ex_command(text: &str) -> Option<&'static str> {
    let text = text.trim();
    if text.is_empty() || text.bytes().all(|b| b.is_ascii_digit()) || text.starts_with('/') {
        return None;
    }
    let harmless = ["set ", "se ", "setlocal ", "syntax ", "colorscheme ", "normal! G", "noh"];
    if !text.contains(['!', '|', '`', '(', '=']) && harmless.iter().any(|p| text.starts_with(p)) {
        return None;
    }
    Some("vim runs ex commands, which can run programs (`!`, `system()`, `:terminal`)")
}

/// Whether an awk program can run a command: `system()`, a pipe to or from a command (`print | "cmd"`,
/// `"cmd" | getline`, gawk's `|&`), or a gawk extension loaded with `@load`. String literals are
/// skipped; `||` is a logical or.
fn awk_program(text: &str) -> Option<&'static str> {
    let mut code = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '"' {
            code.push_str("\"\"");
            while let Some(c) = chars.next() {
                match c {
                    '\\' => _ = chars.next(),
                    '"' => break,
                    _ => {}
                }
            }
        } else {
            code.push(c);
        }
    }
    if code.contains("system") || code.contains("@load") || code.contains("@include") {
        return Some("the awk program calls system() or loads code");
    }
    let bytes = code.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        let before = i.checked_sub(1).and_then(|j| bytes.get(j)).copied();
        let after = bytes.get(i + 1).copied();
        if b == b'|' && before != Some(b'|') && after != Some(b'|') {
            return Some("the awk program pipes to or from a command");
        }
    }
    None
}

/// Whether a sed script can run a command: GNU sed's `e` command and the `e` flag of `s`. The script
/// is read command by command (addresses, `s`/`y` with their delimiters, text and file arguments);
/// what cannot be read is treated as able to.
fn sed_script(text: &str) -> Option<&'static str> {
    const RUNS: &str = "the sed script runs a command (`e`)";
    let mut chars = text.chars().peekable();
    let skip_regex = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>, end: char| -> bool {
        while let Some(c) = chars.next() {
            if c == '\\' {
                chars.next();
            } else if c == end {
                return true;
            }
        }
        false
    };
    loop {
        // Separators and addresses.
        while let Some(&c) = chars.peek() {
            if c.is_whitespace()
                || c == ';'
                || c == '}'
                || c == '{'
                || c.is_ascii_digit()
                || "$,~+!".contains(c)
            {
                chars.next();
            } else if c == '/' {
                chars.next();
                if !skip_regex(&mut chars, '/') {
                    return Some(RUNS);
                }
                while chars.peek().is_some_and(|c| matches!(c, 'I' | 'M')) {
                    chars.next();
                }
            } else if c == '\\' {
                chars.next();
                let Some(end) = chars.next() else { return Some(RUNS) };
                if !skip_regex(&mut chars, end) {
                    return Some(RUNS);
                }
            } else {
                break;
            }
        }
        let command = chars.next()?;
        match command {
            's' | 'y' => {
                let Some(delimiter) = chars.next().filter(|c| *c != '\n' && *c != '\\') else {
                    return Some(RUNS);
                };
                if !skip_regex(&mut chars, delimiter) || !skip_regex(&mut chars, delimiter) {
                    return Some(RUNS);
                }
                if command == 's' {
                    while let Some(&flag) = chars.peek() {
                        match flag {
                            'e' => return Some(RUNS),
                            // The rest of the line names a file to write.
                            'w' => {
                                while chars.next().is_some_and(|c| c != '\n') {}
                                break;
                            }
                            ';' | '\n' | '}' => break,
                            _ => _ = chars.next(),
                        }
                    }
                }
            }
            // Text runs to the end of the line, and on while lines end with a backslash (`a\`).
            'a' | 'i' | 'c' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if c == '\n' && !escaped {
                        break;
                    }
                    escaped = c == '\\' && !escaped;
                }
            }
            // File names and labels run to the end of the line.
            'r' | 'R' | 'w' | 'W' | ':' => while chars.next().is_some_and(|c| c != '\n') {},
            // Labels run to `;` or the end of the line.
            'b' | 't' | 'T' => {
                while chars.peek().is_some_and(|c| *c != ';' && *c != '\n') {
                    chars.next();
                }
            }
            // Commands that may take a number.
            'q' | 'Q' | 'l' | 'L' => {
                while chars.peek().is_some_and(char::is_ascii_digit) {
                    chars.next();
                }
            }
            '=' | 'd' | 'D' | 'g' | 'G' | 'h' | 'H' | 'n' | 'N' | 'p' | 'P' | 'x' | 'z' | 'F' | '#' => {
                if command == '#' {
                    while chars.next().is_some_and(|c| c != '\n') {}
                }
            }
            // `e` runs its argument or the pattern space; anything unreadable may as well.
            _ => return Some(RUNS),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{RUNNERS, VARIABLES, awk_program, key_matches, sed_script};
    use crate::{
        policy::{Policy, shell::ShellMatcher},
        shell::evaluate::{Evaluator, RULE_UNKNOWN},
    };

    /// Everything runs but python3.
    fn matcher() -> ShellMatcher {
        let text = "version: \"2.0\"\ndefault: allow\nrules:\n  - id: no_python\n    match: { executable: '^python3$' }\n    effect: deny\n";
        let policy = Policy::parse(Path::new("p.yaml"), text).expect("valid policy");
        ShellMatcher::new(&policy).expect("compiles")
    }

    fn evaluator(matcher: &ShellMatcher) -> Evaluator<'_> {
        Evaluator {
            matcher,
            identity: "agent".into(),
            cwd: "/".into(),
            path: None,
            files: None,
            // Leaked: one small value per test.
            programs: Box::leak(Box::default()),
            inherited: &[],
        }
    }

    /// Every row: its example is denied, by the python3 rule when the command is judged as a line and
    /// as unknown code otherwise; the same line without python3 is allowed.
    #[test]
    fn every_row_judges_the_command_it_runs() {
        let matcher = matcher();
        let evaluator = evaluator(&matcher);
        for runner in RUNNERS {
            let (denied, allowed) = runner.example;
            let verdict = evaluator.evaluate(denied);
            let part = verdict.denied().unwrap_or_else(|| panic!("`{denied}` is allowed: {verdict:?}"));
            let expected = match runner.runs {
                super::Runs::Unknown(_) | super::Runs::Check(_) => RULE_UNKNOWN,
                _ => "no_python",
            };
            assert_eq!(part.rule_id, expected, "`{denied}`: {part:?}");
            let verdict = evaluator.evaluate(allowed);
            assert!(verdict.denied().is_none(), "`{allowed}` is denied: {verdict:?}");
        }
    }

    /// Every variable: set by assignment, export or env, its command is judged.
    #[test]
    fn every_variable_judges_the_command_it_runs() {
        let matcher = matcher();
        let evaluator = evaluator(&matcher);
        for (name, runs) in VARIABLES {
            let value = match runs {
                super::Runs::File => "/dev/stdin",
                _ => "|python3 %s",
            };
            for line in [
                format!("{name}='{value}' less f"),
                format!("export {name}='{value}'; less f"),
                format!("env {name}='{value}' less f"),
            ] {
                let verdict = evaluator.evaluate(&line);
                let part = verdict.denied().unwrap_or_else(|| panic!("`{line}` is allowed: {verdict:?}"));
                let expected = match runs {
                    super::Runs::Line => "no_python",
                    _ => RULE_UNKNOWN,
                };
                assert_eq!(part.rule_id, expected, "`{line}`: {part:?}");
            }
            assert!(evaluator.evaluate(&format!("{name}= less f")).denied().is_none(), "{name} empty");
        }
    }

    /// Rows of other programs do not apply: `tar -I` is not `grep -I`.
    #[test]
    fn rows_apply_to_their_programs_only() {
        let matcher = matcher();
        let evaluator = evaluator(&matcher);
        for line in [
            "grep -I python3 f",
            "ls -F python3",
            "git log -x python3",
            "cat -e python3",
            "git commit -c HEAD",
        ] {
            assert!(evaluator.evaluate(line).denied().is_none(), "{line}");
        }
    }

    #[test]
    fn git_keys() {
        assert!(key_matches("alias.*", "alias.x"));
        assert!(key_matches("diff.*.textconv", "diff.pdf.textconv"));
        assert!(!key_matches("diff.*.textconv", "diff.textconv"));
        assert!(key_matches("pager.*", "pager.log"));
        assert!(!key_matches("core.pager", "core.pagerx"));
    }

    #[test]
    fn awk_programs() {
        assert!(awk_program("{print $1}").is_none());
        assert!(awk_program("$1 == 1 || $2 == 2 {print}").is_none());
        assert!(awk_program("{print \"a|b\"}").is_none());
        assert!(awk_program("BEGIN{system(\"id\")}").is_some());
        assert!(awk_program("{print | \"sh\"}").is_some());
        assert!(awk_program("BEGIN{\"id\" | getline x}").is_some());
        assert!(awk_program("BEGIN{print \"id\" |& \"sh\"}").is_some());
        assert!(awk_program("@load \"x\"").is_some());
    }

    #[test]
    fn sed_scripts() {
        for harmless in [
            "s/a/b/g",
            "s/e/E/g;/x/d",
            "1d",
            "/^#/d; s|x|y|",
            "$!N;P;D",
            "s/x/y/w out.txt",
            "y/abc/xyz/",
            "/start/,/end/{s/a/b/;p}",
            "1i\\\nheader",
            ":a;N;$!ba;s/\\n/ /g",
            "# comment e\np",
        ] {
            assert!(sed_script(harmless).is_none(), "{harmless}");
        }
        for runs in ["e id", "1e id", "s/x/id/e", "s/x/y/ge", "/x/e", "s/x/y/;e", "s/unterminated", "k"] {
            assert!(sed_script(runs).is_some(), "{runs}");
        }
    }
}
