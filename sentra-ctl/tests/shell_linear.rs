//! Evaluation time is linear in the line's size. For each construct whose evaluation once grew
//! faster than the line (long pipelines, lists, and-or chains, substitutions, process substitutions,
//! brace groups, nesting at the limit, here-documents, long words), a line eight times larger may take
//! at most three times as long per byte; a quadratic evaluator takes eight times as long. The fastest
//! of several runs of each size is compared, so a busy machine slows both sizes alike.
//!
//! Nested expansions are measured by depth: the word parser once backtracked exponentially in the
//! depth of `${…}`, `$((…))`, `$[…]` and array subscripts (found by the fuzzer), so a word nested seven
//! times deeper may take at most eight times as long per byte (a quadratic parse takes seven).

use std::{
    io::Write,
    path::Path,
    sync::mpsc,
    time::{Duration, Instant},
};

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
        // Each relative `cd` may apply to every directory already possible: the set once doubled
        // with each (found by the fuzzer).
        ("relative directory changes", |n| "cd a; cd b; ls x; ".repeat(n)),
        ("PATH values", |n| (0..n).map(|i| ["PATH=/p", &i.to_string(), ":$PATH; ls; "].concat()).collect()),
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

/// Each nested expansion: its line `depth` levels deep. The parser parses an expansion that fails to
/// close again as text, and tries each operator of a closed one in turn: both kinds are here.
fn nested_expansions() -> Vec<Construct> {
    vec![
        ("subscripts, open", |d| format!("echo {}", "${a[".repeat(d))),
        ("subscripts, closed", |d| format!("echo {}x{}", "${a[".repeat(d), "]}".repeat(d))),
        ("subscripts closed by braces", |d| format!("echo {}x{}", "${a[".repeat(d), "}".repeat(d))),
        ("indirect subscripts", |d| format!("echo {}x{}", "${!a[".repeat(d), "]}".repeat(d))),
        ("alternative values", |d| format!("echo {}x{}", "${a:+".repeat(d), "}".repeat(d))),
        ("default values, closed", |d| format!("echo {}x{}", "${a:-".repeat(d), "}".repeat(d))),
        ("substrings", |d| format!("echo {}1{}", "${a:0:".repeat(d), "}".repeat(d))),
        ("patterns in double quotes", |d| format!("echo {}x{}", "\"${a%".repeat(d), "}\"".repeat(d))),
        ("replacements", |d| format!("echo {}y{}", "${a//x/".repeat(d), "}".repeat(d))),
        ("arithmetic", |d| format!("echo {}1{}", "$((".repeat(d), "))".repeat(d))),
        ("legacy arithmetic", |d| format!("echo {}1{}", "$[".repeat(d), "]".repeat(d))),
        ("arithmetic in subscripts", |d| {
            format!("echo {}1{}", "${a[$((".repeat(d / 2), "))]}".repeat(d / 2))
        }),
        ("subscripts in substitutions", |d| {
            format!("echo {}x{}", "$(echo ${a[".repeat(d / 2), "]})".repeat(d / 2))
        }),
        ("here-document body", |d| format!("cat <<E\n{}x{}\nE\n", "${a[".repeat(d), "]}".repeat(d))),
    ]
}

fn evaluator_for<T>(with: impl FnOnce(&Evaluator<'_>) -> T) -> T {
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
    with(&evaluator)
}

#[test]
fn evaluation_time_is_polynomial_in_expansion_depth() {
    const SHALLOW: usize = 4;
    const DEEP: usize = 28;
    evaluator_for(|evaluator| {
        let mut report = Vec::new();
        let mut failed = false;
        for (name, make) in nested_expansions() {
            let (small, large) = (make(SHALLOW), make(DEEP));
            let growth = growth_per_byte(evaluator, name, &small, &large);
            failed |= growth > 8.0;
            report.push(format!(
                "{name}: {SHALLOW} → {DEEP} levels ({} → {} bytes), time per byte ×{growth:.2}",
                small.len(),
                large.len()
            ));
        }
        eprintln!("{}", report.join("\n"));
        assert!(!failed, "evaluation grows faster than polynomially in depth:\n{}", report.join("\n"));
    });
}

/// How much longer per byte `large` takes than `small` (the fastest run of each, under the watchdog).
fn growth_per_byte(evaluator: &Evaluator<'_>, name: &'static str, small: &str, large: &str) -> f64 {
    let small_time = fastest_or_exit(evaluator, small, 0.0, name);
    let large_time = fastest_or_exit(evaluator, large, small_time, name);
    #[expect(clippy::cast_precision_loss, reason = "line lengths are far below 2^52")]
    let growth = (large_time / large.len() as f64) / (small_time / small.len() as f64);
    growth
}

/// [`fastest`], for a line larger than one that took `small_time` (0 for the smaller line itself): an
/// evaluation that grows exponentially would not end, so a watchdog exits the test binary with a
/// failure instead. A polynomial one finishes within a small multiple of the small line's time; it
/// gets a thousand times that, and never less than ten seconds.
fn fastest_or_exit(evaluator: &Evaluator<'_>, line: &str, small_time: f64, name: &'static str) -> f64 {
    let limit = Duration::from_secs_f64((small_time * 1000.0).max(10.0));
    let (done, watched) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if watched.recv_timeout(limit) == Err(mpsc::RecvTimeoutError::Timeout) {
            // Straight to the process's stderr: the test harness captures `eprintln!`, and
            // exiting discards what it captured.
            let _ = writeln!(
                std::io::stderr(),
                "{name}: a line did not finish within {limit:?}: exponential growth"
            );
            std::process::exit(1);
        }
    });
    let time = fastest(evaluator, line);
    done.send(()).expect("the watchdog waits");
    watchdog.join().expect("watchdog");
    time
}

#[test]
fn evaluation_time_is_linear_in_the_line() {
    evaluator_for(linear_in_the_line);
}

fn linear_in_the_line(evaluator: &Evaluator<'_>) {
    let mut report = Vec::new();
    let mut failed = false;
    for (name, make) in constructs() {
        let (small, large) = (make(100), make(100 * FACTOR));
        let growth = growth_per_byte(evaluator, name, &small, &large);
        failed |= growth > MAX_GROWTH_PER_BYTE;
        report.push(format!("{name}: {} → {} bytes, time per byte ×{growth:.2}", small.len(), large.len()));
    }
    eprintln!("{}", report.join("\n"));
    assert!(!failed, "evaluation grows faster than the line:\n{}", report.join("\n"));
}
