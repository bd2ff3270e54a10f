//! Evaluation time is linear in the line's size. For each construct whose evaluation once grew
//! faster than the line (long pipelines, lists, and-or chains, substitutions, process substitutions,
//! brace groups, nesting at the limit, here-documents, long words), a line eight times larger may take
//! at most three times as long per byte; a quadratic evaluator takes eight times as long. The fastest
//! of several runs of each size is compared, so a busy machine slows both sizes alike.

use std::{path::Path, time::Instant};

use sentra_ctl::{
    policy::{Policy, shell::ShellMatcher},
    shell::evaluate::Evaluator,
};

/// Size factor between the two lines of a construct, and the most the time per byte may grow.
const FACTOR: usize = 8;
const MAX_GROWTH_PER_BYTE: f64 = 3.0;
const RUNS: usize = 5;

/// A construct's name, and its line of `n` units.
type Construct = (&'static str, fn(usize) -> String);

/// Each construct.
fn constructs() -> Vec<Construct> {
    vec![
        ("pipeline", |n| vec!["cat"; n].join(" | ")),
        ("list", |n| "echo a; ".repeat(n)),
        ("and-or chain", |n| format!("{}true", "true && ".repeat(n))),
        ("command substitutions", |n| "echo $(echo $(echo x)); ".repeat(n)),
        ("process substitutions", |n| format!("cat {}", "<(cat a) ".repeat(n))),
        ("brace groups", |n| "{ echo a; } ; ".repeat(n)),
        ("nesting at the limit, repeated", |n| {
            format!("echo {}x{}; ", "$(echo ".repeat(60), ")".repeat(60)).repeat(n.div_ceil(20))
        }),
        ("here-document", |n| format!("cat <<EOF\n{}EOF\n", "line of text\n".repeat(n))),
        ("long word", |n| format!("echo \"{}\"", "a".repeat(n * 20))),
        ("quoted arguments", |n| format!("echo {}", "'x y' ".repeat(n))),
        // Runs of unclosed `case` made the parser backtrack exponentially (found by the fuzzer).
        ("unclosed case items", |n| "case x in x) sudo e ;i;dsac\n".repeat(n / 10)),
    ]
}

/// The fastest of [`RUNS`] evaluations of `line`, in seconds.
fn fastest(evaluator: &Evaluator<'_>, line: &str) -> f64 {
    (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            let verdict = evaluator.evaluate(line);
            let elapsed = start.elapsed().as_secs_f64();
            std::hint::black_box(verdict);
            elapsed
        })
        .fold(f64::INFINITY, f64::min)
}

#[test]
fn evaluation_time_is_linear_in_the_line() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/original-67.yaml");
    let policy = Policy::load(&path).expect("policy");
    let matcher = ShellMatcher::new(&policy).expect("matcher");
    let evaluator = Evaluator {
        matcher: &matcher,
        identity: "agent".into(),
        cwd: "/nonexistent".into(),
        path: Some("/usr/bin:/bin".into()),
        files: None,
        programs: &sentra_ctl::shell::identity::SystemPrograms::default(),
        inherited: &[],
    };
    let mut report = Vec::new();
    let mut failed = false;
    for (name, make) in constructs() {
        let (small, large) = (make(100), make(100 * FACTOR));
        #[expect(clippy::cast_precision_loss, reason = "line lengths are far below 2^52")]
        let per_byte = |line: &str| fastest(&evaluator, line) / line.len() as f64;
        let growth = per_byte(&large) / per_byte(&small);
        failed |= growth > MAX_GROWTH_PER_BYTE;
        report.push(format!("{name}: {} → {} bytes, time per byte ×{growth:.2}", small.len(), large.len()));
    }
    eprintln!("{}", report.join("\n"));
    assert!(!failed, "evaluation grows faster than the line:\n{}", report.join("\n"));
}
