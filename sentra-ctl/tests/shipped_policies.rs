//! Every shipped policy enforced by the real kernel on this machine (`sentra-ctl run`, root): its exec
//! rules and network part load and attach, an allowed command runs with its exit status, and a
//! program the policy keeps out does not run. Needs root and BPF like the integration tests; a
//! missing prerequisite fails the test.

use std::{path::Path, process::Command};

/// (policy, a command line it allows, a program it denies)
const CASES: [(&str, &str, &str); 6] = [
    ("default.yaml", "ls / > /dev/null; exit 3", "/usr/bin/mount"),
    ("gateway.yaml", "ls / > /dev/null; exit 3", "/usr/bin/nsenter"),
    ("strict.yaml", "ls / > /dev/null; exit 3", "/usr/bin/id"),
    ("whatsapp_agent.yaml", "ls / > /dev/null; exit 3", "/usr/bin/id"),
    ("isolated_agent.yaml", "ls / > /dev/null; exit 3", "/usr/bin/id"),
    ("original-67.yaml", "ls / > /dev/null; exit 3", "/usr/bin/mount"),
];

#[test]
fn shipped_policies_enforce_in_the_kernel() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let scratch = tempfile::tempdir().expect("tempdir");
    let backend = std::env::var("SENTRA_TEST_BACKEND").unwrap_or_else(|_| "auto".into());
    for (policy, allowed, denied) in CASES {
        assert!(Path::new(denied).exists(), "{denied} is not on this machine: pick another denied program");
        let audit = scratch.path().join(format!("{policy}.jsonl"));
        let script = format!("{denied} --version > /dev/null 2>&1 && echo DENIED-PROGRAM-RAN; {allowed}");
        // Without cargo's LD_LIBRARY_PATH (its build directories): the signal backend kills a
        // governed program whose loader is pointed outside what the policy allows.
        let out = Command::new(env!("CARGO_BIN_EXE_sentra-ctl"))
            .env_remove("LD_LIBRARY_PATH")
            .args(["run", "--backend", &backend, "--policy"])
            .arg(dir.join(policy))
            .arg("--audit-log")
            .arg(&audit)
            .args(["--", "/bin/sh", "-c", &script])
            .output()
            .expect("sentra-ctl");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{policy}: stdout {stdout} stderr {stderr}");
        assert!(!stdout.contains("DENIED-PROGRAM-RAN"), "{policy}: {denied} ran");
        let log = std::fs::read_to_string(&audit).expect("audit log");
        let denied_event = log.lines().any(|l| {
            l.contains("\"event\":\"exec\"") && l.contains("\"decision\":\"denied\"") && l.contains(denied)
        });
        assert!(denied_event, "{policy}: no denial of {denied} in the audit log:\n{log}");
    }
}
