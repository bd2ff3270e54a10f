//! Every policy in `tests/corpus/policy` is loaded and compiled; the outcome, and for errors the line,
//! column and message, must be the one `expected.tsv` gives.

use std::path::Path;

use sentra_ctl::policy::{Policy, PolicyError, PolicyFile, exec, network, shell::ShellMatcher};

fn load(path: &Path) -> Result<(), PolicyError> {
    let policy = Policy::load(path)?;
    // The parsed-policy cache stores the model as JSON: reading it back must give the same model.
    let json = serde_json::to_string(&policy.model).expect("a parsed model serializes");
    let back: PolicyFile = serde_json::from_str(&json).expect("and reads back");
    assert_eq!(format!("{back:?}"), format!("{:?}", policy.model), "{}: cache round trip", path.display());
    ShellMatcher::validate(&policy)?;
    exec::compile(&policy)?;
    network::compile(&policy)?;
    Ok(())
}

#[test]
fn corpus_outcomes_match() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/policy");
    let expected = std::fs::read_to_string(dir.join("expected.tsv")).expect("expected.tsv");
    let mut checked = 0;
    let mut failures = Vec::new();
    for line in expected.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split('\t').collect();
        let file = dir.join(fields[0]);
        let outcome = load(&file);
        match (fields.get(1).copied(), outcome) {
            (Some("ok"), Ok(())) => {}
            (Some("error"), Err(err)) => {
                let text = err.to_string();
                let place = format!("{}:{}:", file.display(), fields.get(2).copied().unwrap_or(""));
                if !text.starts_with(&place) || !text.contains(fields.get(3).copied().unwrap_or("")) {
                    failures.push(format!(
                        "{}: expected {place} … {:?}, got {text}",
                        fields[0],
                        fields.get(3)
                    ));
                }
            }
            (want, got) => failures.push(format!("{}: expected {want:?}, got {got:?}", fields[0])),
        }
        checked += 1;
    }
    assert!(checked >= 30, "the corpus must hold at least 30 policies ({checked})");
    let files = std::fs::read_dir(&dir)
        .expect("dir")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "yaml"))
        .count();
    assert_eq!(files, checked, "every corpus file has an expected outcome");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn shipped_policies_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("policies").flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|x| x == "yaml") {
            load(&path).unwrap_or_else(|err| panic!("{err}"));
            count += 1;
        }
    }
    assert!(count >= 6, "default, strict, gateway, whatsapp_agent, isolated_agent, original-67");
}
