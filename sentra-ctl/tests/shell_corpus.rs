//! The verdict corpus (`tests/corpus/shell/verdicts.tsv`) under `policies/original-67.yaml`: through
//! the library, and through the real `sentra --check` process for the one-line cases.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use sentra_ctl::{
    policy::{Policy, exec::LazyExecFiles, shell::ShellMatcher},
    shell::evaluate::Evaluator,
};

struct Case {
    line: usize,
    allow: bool,
    rule: String,
    command: String,
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn corpus() -> Vec<Case> {
    let text = std::fs::read_to_string(workspace().join("tests/corpus/shell/verdicts.tsv")).expect("corpus");
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.starts_with('#') && !l.trim().is_empty())
        .map(|(i, l)| {
            let mut fields = l.splitn(3, '\t');
            let verdict = fields.next().expect("verdict");
            let rule = fields.next().expect("rule").to_string();
            let command = fields
                .next()
                .unwrap_or_else(|| panic!("line {}: no command", i + 1))
                .replace('⏎', "\n")
                .replace('␍', "\r")
                .replace('␌', "\x0c");
            assert!(verdict == "allow" || verdict == "deny", "line {}: bad verdict {verdict}", i + 1);
            Case { line: i + 1, allow: verdict == "allow", rule, command }
        })
        .collect()
}

#[test]
fn corpus_has_at_least_100_cases() {
    assert!(corpus().len() >= 100, "{} cases", corpus().len());
}

#[test]
fn corpus_verdicts_through_the_library() {
    let path = workspace().join("policies/original-67.yaml");
    let policy = Policy::load(&path).expect("policy");
    assert_eq!(policy.model.rules.len(), 67);
    ShellMatcher::validate(&policy).expect("every regex compiles");
    let matcher = ShellMatcher::new(&policy).expect("matcher");
    // As sentra-shell judges: the file each program will be too.
    let files = LazyExecFiles::new(std::rc::Rc::new(policy.clone()));
    let evaluator = Evaluator {
        matcher: &matcher,
        identity: "agent".into(),
        cwd: std::env::temp_dir(),
        path: Some("/usr/bin:/bin".into()),
        files: Some(&files),
        programs: &sentra_ctl::shell::identity::SystemPrograms::default(),
        inherited: &[],
    };
    let mut failures = Vec::new();
    for case in corpus() {
        let verdict = evaluator.evaluate(&case.command);
        let allow = verdict.denied().is_none();
        let rule = verdict.deciding().map_or("-", |p| p.rule_id.as_str());
        if allow != case.allow || rule != case.rule {
            failures.push(format!(
                "line {}: {:?}: expected {} {}, got {} {} ({:?})",
                case.line,
                case.command,
                if case.allow { "allow" } else { "deny" },
                case.rule,
                if allow { "allow" } else { "deny" },
                rule,
                verdict.deciding().and_then(|p| p.reason.clone())
            ));
        }
    }
    assert!(failures.is_empty(), "{} corpus failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn corpus_verdicts_through_sentra_check() {
    // One line per case: multi-line cases and open quotes (which the REPL continues on the next
    // line) are left to the library test.
    let cases: Vec<Case> =
        corpus().into_iter().filter(|c| !c.command.contains('\n') && c.rule != "parse_error").collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sentra"))
        .args(["--check", "--quiet", "--policy"])
        .arg(workspace().join("policies/original-67.yaml"))
        .arg("--log")
        .arg(dir.path().join("audit.jsonl"))
        .env_remove("SHELL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sentra");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut input = String::new();
    for case in &cases {
        input.push_str(&case.command);
        input.push('\n');
    }
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("sentra output");
    writer.join().expect("writer").expect("write");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Comment-only and empty lines print nothing; every other line prints one verdict.
    let expected: Vec<&Case> = cases.iter().filter(|c| !c.command.trim_start().starts_with('#')).collect();
    let verdicts: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        verdicts.len(),
        expected.len(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (case, verdict) in expected.iter().zip(verdicts) {
        let word = if case.allow { "ALLOW\t" } else { "DENY\t" };
        assert!(verdict.starts_with(word), "line {}: {:?} -> {verdict}", case.line, case.command);
    }
    assert_eq!(out.status.code(), Some(1), "a denied line makes --check exit 1");
}
