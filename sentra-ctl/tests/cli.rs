//! The command line's finish, from the built binary: `manpages` writes a page for sentra-ctl, each of
//! its commands and sentra; every one of those commands' `--help` shows an example; `completions`
//! prints a script for every supported shell that knows every command (bash's passes `bash -n`).

use std::{path::Path, process::Command};

const CTL: &str = env!("CARGO_BIN_EXE_sentra-ctl");

fn ctl(args: &[&str]) -> std::process::Output {
    Command::new(CTL).args(args).output().expect("run sentra-ctl")
}

/// The manual pages `manpages` writes, by name without `.1`.
fn pages(dir: &Path) -> Vec<String> {
    let out = ctl(&["manpages", dir.to_str().expect("utf-8")]);
    assert!(out.status.success(), "manpages: {}", String::from_utf8_lossy(&out.stderr));
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("the manual page directory")
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".1").map(String::from))
        .collect();
    names.sort();
    names
}

#[test]
fn every_command_has_a_manual_page_and_an_example_in_its_help() {
    let dir = tempfile::tempdir().expect("tempdir");
    let names = pages(dir.path());
    for expected in ["sentra", "sentra-ctl", "sentra-ctl-run", "sentra-ctl-launch", "sentra-ctl-policy-check"]
    {
        assert!(names.iter().any(|n| n == expected), "no page {expected} in {names:?}");
    }
    assert!(!names.iter().any(|n| n == "sentra-ctl-reap"), "a hidden command got a page: {names:?}");
    for name in &names {
        let page = std::fs::read_to_string(dir.path().join(format!("{name}.1"))).expect("page");
        assert!(page.contains(".TH") && page.contains(".SH NAME"), "{name}.1 is not a manual page:\n{page}");
        // `sentra-ctl-policy-check` is `sentra-ctl policy check`.
        let mut words = name.split('-').collect::<Vec<_>>();
        let program = if name.starts_with("sentra-ctl") {
            words.drain(..2);
            CTL.to_string()
        } else {
            words.drain(..1);
            Path::new(CTL).with_file_name("sentra").to_string_lossy().into_owned()
        };
        let out = Command::new(&program).args(&words).arg("--help").output().expect("--help");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name} --help failed");
        assert!(help.contains("Example"), "`{name} --help` shows no example:\n{help}");
    }
}

#[test]
fn completions_cover_every_command_in_every_shell() {
    let dir = tempfile::tempdir().expect("tempdir");
    let commands: Vec<String> = pages(dir.path())
        .iter()
        .filter_map(|n| n.strip_prefix("sentra-ctl-").map(|c| c.split('-').next().unwrap_or(c).to_string()))
        .collect();
    assert!(commands.len() >= 10, "{commands:?}");
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        for binary in ["sentra-ctl", "sentra"] {
            let out = ctl(&["completions", shell, "--binary", binary]);
            assert!(out.status.success(), "{shell} {binary}: {}", String::from_utf8_lossy(&out.stderr));
            let script = String::from_utf8_lossy(&out.stdout);
            if binary == "sentra-ctl" {
                for command in &commands {
                    assert!(script.contains(command.as_str()), "the {shell} script lacks {command}");
                }
            } else {
                assert!(
                    script.contains("policy") && script.contains("identity"),
                    "the {shell} script for sentra lacks its options"
                );
            }
            if shell == "bash" {
                let file = dir.path().join(format!("{binary}.bash"));
                std::fs::write(&file, script.as_bytes()).expect("write");
                let check = Command::new("bash").arg("-n").arg(&file).output().expect("bash -n");
                assert!(check.status.success(), "bash -n: {}", String::from_utf8_lossy(&check.stderr));
            }
        }
    }
    let out = ctl(&["completions", "tcsh"]);
    assert!(!out.status.success(), "an unknown shell was accepted");
}
