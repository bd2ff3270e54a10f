//! `sentra-shell` as a real process: exit statuses, denials, `OpenClaw`'s way of calling it, shell
//! syntax run exactly, audit records, fail-closed audit, cross-process rate limiting, and the REPL.

use std::{
    io::Write as _,
    os::unix::{ffi::OsStringExt as _, process::ExitStatusExt as _},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

const POLICY: &str = "version: \"2.0\"\nmode: enforce\ndefault: allow\nrules:\n  - id: block_sudo\n    match: { executable: \"^sudo$\" }\n    effect: deny\n    reason: \"Privilege escalation via sudo is blocked\"\n  - id: block_rm_rf_root\n    match: { executable: \"^rm$\", args_pattern: \"-rf /\" }\n    effect: deny\n    reason: no\n";

struct Env {
    dir: tempfile::TempDir,
    policy: PathBuf,
}

impl Env {
    fn new(policy: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("policy.yaml");
        std::fs::write(&path, policy).expect("write policy");
        Self { dir, policy: path }
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("log/audit.jsonl")
    }

    fn shell(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sentra-shell"));
        command
            .env("SENTRA_POLICY", &self.policy)
            .env("SENTRA_AUDIT_LOG", self.log())
            .env_remove("SHELL")
            .env_remove("SENTRA_QUIET")
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.shell().args(args).output().expect("sentra-shell")
    }

    fn records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.log())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn exit_status_is_propagated_exactly() {
    let env = Env::new(POLICY);
    for code in [0, 1, 2, 7, 42, 125, 127, 255] {
        let out = env.run(&["-c", &format!("exit {code}")]);
        assert_eq!(out.status.code(), Some(code), "exit {code}");
    }
    assert_eq!(env.run(&["-c", "false"]).status.code(), Some(1));
    assert_eq!(env.run(&["-c", "nonexistent-program-xyz"]).status.code(), Some(127));
    let out = env.run(&["-c", "kill -TERM $$"]);
    assert!(out.status.signal() == Some(15) || out.status.code() == Some(143), "{:?}", out.status);
}

#[test]
fn denied_line_exits_126_with_the_denial_on_stderr() {
    let env = Env::new(POLICY);
    let out = env.run(&["-c", "echo start; sudo id"]);
    assert_eq!(out.status.code(), Some(126));
    assert!(out.stdout.is_empty(), "nothing ran: {}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains("[X] DENIED: echo start; sudo id"), "{err}");
    assert!(err.contains("Rule:   block_sudo"), "{err}");
    assert!(err.contains("Reason: Privilege escalation via sudo is blocked"), "{err}");
    assert!(err.contains("sudo id"), "names the part: {err}");
    let quiet = env.run(&["--quiet", "-c", "sudo id"]);
    assert_eq!(quiet.status.code(), Some(126));
    assert_eq!(text(&quiet.stderr).lines().count(), 1, "{}", text(&quiet.stderr));
    let records = env.records();
    let last = records.last().expect("record");
    assert_eq!(last["decision"], "denied");
    assert_eq!(last["layer"], "shell");
    assert_eq!(last["rule_id"], "block_sudo");
    assert_eq!(last["exit_code"], 126);
    assert!(last["kernel_enforced"].is_boolean());
}

#[test]
fn openclaw_invocation() {
    // OpenClaw: `/bin/sh -c '…; exec "$0" "$@"' <SHELL> -c <COMMAND>`, SHELL unset, stdin a pipe.
    let env = Env::new(POLICY);
    let command = "export PATH=\"${OPENCLAW_PREPEND_PATH}${PATH:+:$PATH}\"; unset OPENCLAW_PREPEND_PATH; echo \"$PATH\" | grep -c /extra; exit 3";
    let mut child = Command::new("/bin/sh")
        .args(["-c", "echo 1000 > /proc/self/oom_score_adj 2>/dev/null; exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_sentra-shell"))
        .args(["-c", command])
        .env("SENTRA_POLICY", &env.policy)
        .env("SENTRA_AUDIT_LOG", env.log())
        .env("OPENCLAW_PREPEND_PATH", "/extra")
        .env_remove("SHELL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child.stdin.take().expect("stdin").write_all(b"ignored\n").expect("write");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "1");
    // The login-environment probe.
    let out = env.run(&["-l", "-c", "printf '\\0'; env -0"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(out.stdout.first(), Some(&0));
    assert!(text(&out.stdout).contains("SENTRA_POLICY="));
    let out = env.run(&["-lc", "echo ok"]);
    assert_eq!(text(&out.stdout), "ok\n");
    let record = env.records().into_iter().find(|r| r["command"] == command).expect("record of the command");
    assert_eq!(record["decision"], "allowed");
    assert_eq!(record["exit_code"], 3);
    assert_eq!(record["identity"], record["user"]);
    for field in
        ["timestamp", "session_id", "host", "user", "action", "command", "cwd", "rule_id", "exec_duration_ms"]
    {
        assert!(!record[field].is_null(), "missing {field}: {record}");
    }
}

#[test]
fn shell_semantics_are_sh_semantics() {
    let env = Env::new(POLICY);
    let out = env.run(&["-c", "f() { echo \"f:$1\"; }\nf one\ncat <<EOF\nline $((1+2))\nEOF\nfor i in a b; do printf '%s' $i; done; echo"]);
    assert_eq!(text(&out.stdout), "f:one\nline 3\nab\n", "{}", text(&out.stderr));
    let out = env.run(&["-c", "set -e; false; echo not-reached"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let out = env.run(&["-e", "-c", "false; echo not-reached"]);
    assert_eq!(out.status.code(), Some(1));
    let out = env.run(&["-c", "echo \"$0|$1|$2|$#\"", "zero", "one", "two"]);
    assert_eq!(text(&out.stdout), "zero|one|two|2\n");
    // Bash syntax runs with bash.
    let out = env.run(&["-c", "[[ -n x ]] && echo bash-ok; cat <(echo ps)"]);
    assert_eq!(text(&out.stdout), "bash-ok\nps\n", "{}", text(&out.stderr));
    // Script file and stdin.
    let script = env.dir.path().join("s.sh");
    std::fs::write(&script, "echo \"script:$1\"\nexit 4\n").expect("script");
    let out = env.run(&[script.to_str().expect("utf-8"), "arg"]);
    assert_eq!((out.status.code(), text(&out.stdout)), (Some(4), "script:arg\n".into()));
    let mut child =
        env.shell().arg("-s").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("spawn");
    child.stdin.take().expect("stdin").write_all(b"echo from-stdin\nexit 5\n").expect("write");
    let out = child.wait_with_output().expect("wait");
    assert_eq!((out.status.code(), text(&out.stdout)), (Some(5), "from-stdin\n".into()));
    // A script whose contents are denied is refused before anything runs.
    std::fs::write(&script, "echo first\nsudo id\n").expect("script");
    let out = env.run(&[script.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(126));
    assert!(out.stdout.is_empty());
}

#[test]
fn bash_exported_functions_and_bash_env_do_not_reach_the_real_shell() {
    let env = Env::new(POLICY);
    let evil = env.dir.path().join("evil.sh");
    std::fs::write(&evil, "echo EVIL\n").expect("write");
    let out = env
        .shell()
        .args(["-c", "[[ 1 ]]; ls >/dev/null; echo done"])
        .env("BASH_ENV", &evil)
        .env("BASH_FUNC_ls%%", "() { echo HIJACKED; }")
        .output()
        .expect("run");
    assert_eq!(text(&out.stdout), "done\n", "{}", text(&out.stderr));
}

#[test]
fn the_agents_credentials_do_not_reach_its_commands() {
    let env = Env::new(POLICY);
    let out = env
        .shell()
        .args(["-c", "env"])
        .env("OPENCLAW_GATEWAY_TOKEN", "gateway-secret-1")
        .env("OPENROUTER_API_KEY", "sk-or-secret-2")
        .env("KEPT_VARIABLE", "kept")
        .output()
        .expect("run");
    let printed = text(&out.stdout);
    assert!(printed.contains("KEPT_VARIABLE=kept"), "{printed}");
    assert!(!printed.contains("secret-1") && !printed.contains("secret-2"), "{printed}");
}

#[test]
fn audit_log_failure_refuses_the_command() {
    let env = Env::new(POLICY);
    let marker = env.dir.path().join("ran");
    let out = env
        .shell()
        .env("SENTRA_AUDIT_LOG", "/proc/sentra-cannot-write/audit.jsonl")
        .args(["-c", &format!("touch {}", marker.display())])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(126));
    assert!(text(&out.stderr).contains("refusing to run"), "{}", text(&out.stderr));
    assert!(!marker.exists(), "the command must not run");
    // An unusable policy also refuses.
    let out = env
        .shell()
        .env("SENTRA_POLICY", env.dir.path().join("missing.yaml"))
        .args(["-c", "true"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(126));
}

#[test]
fn flags_beat_environment() {
    let env = Env::new(POLICY);
    let other = env.dir.path().join("deny-all.yaml");
    std::fs::write(&other, "default: deny\nrules: []\n").expect("write");
    let log = env.dir.path().join("flag.jsonl");
    let out = env
        .shell()
        .arg("--policy")
        .arg(&other)
        .arg(format!("--log={}", log.display()))
        .args(["-c", "ls"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(126));
    assert!(std::fs::read_to_string(&log).expect("flag log").contains("\"decision\":\"denied\""));
}

#[test]
fn rate_limit_holds_across_processes() {
    let env = Env::new(&format!("{POLICY}rate_limit: {{ max_commands: 3, window_seconds: 60 }}\n"));
    let state = env.dir.path().join("state");
    let statuses: Vec<Option<i32>> = (0..5)
        .map(|_| {
            env.shell()
                .env("SENTRA_STATE_DIR", &state)
                .args(["-c", "true"])
                .output()
                .expect("run")
                .status
                .code()
        })
        .collect();
    assert_eq!(statuses, [Some(0), Some(0), Some(0), Some(126), Some(126)]);
    let limited = env.records().into_iter().filter(|r| r["rule_id"] == "rate_limit").count();
    assert_eq!(limited, 2);
    // Another identity has its own budget.
    let out = env
        .shell()
        .env("SENTRA_STATE_DIR", &state)
        .args(["--identity", "other", "-c", "true"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn audit_mode_runs_and_records_auditonly() {
    let env = Env::new(&POLICY.replace("mode: enforce", "mode: audit"));
    let out = env.run(&["-c", "sudo -n true 2>/dev/null; echo ran"]);
    assert_eq!(text(&out.stdout), "ran\n");
    assert_eq!(env.records().last().expect("record")["decision"], "auditonly");
}

fn repl(env: &Env, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sentra"))
        .arg("--policy")
        .arg(&env.policy)
        .arg("--log")
        .arg(env.log())
        .args(args)
        .current_dir(env.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sentra");
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write");
    child.wait_with_output().expect("wait")
}

#[test]
fn repl_keeps_cd_and_exports_and_prints_denials() {
    let env = Env::new(POLICY);
    std::fs::create_dir(env.dir.path().join("sub")).expect("mkdir");
    let out = repl(
        &env,
        &[],
        "cd sub\nexport GREETING='hi there'\npwd\necho \"$GREETING\"\nsudo id\nif true; then\necho multi\nfi\nstatus\nexit\necho not-reached\n",
    );
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(stdout.contains("/sub\nhi there\nmulti\n"), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.contains("[X] DENIED: sudo id"), "{stderr}");
    assert!(stderr.contains("Rule:   block_sudo"), "{stderr}");
    assert!(stdout.contains("Denied:     1"), "{stdout}");
    assert!(!stdout.contains("not-reached"));
    let events: Vec<String> =
        env.records().iter().map(|r| r["event"].as_str().unwrap_or_default().to_string()).collect();
    assert_eq!(events.first().map(String::as_str), Some("session_start"));
    assert_eq!(events.last().map(String::as_str), Some("session_end"));
}

#[test]
fn repl_check_mode_runs_nothing() {
    let env = Env::new(POLICY);
    let marker = env.dir.path().join("made");
    let out = repl(&env, &["--check"], &format!("touch {}\nsudo id\n", marker.display()));
    let stdout = text(&out.stdout);
    assert!(stdout.starts_with("ALLOW\t"), "{stdout}");
    assert!(stdout.contains("DENY\tsudo id\tblock_sudo"), "{stdout}");
    assert_eq!(out.status.code(), Some(1));
    assert!(!marker.exists());
    assert!(!Path::new(&env.log()).exists() || env.records().is_empty(), "check mode writes no records");
}

#[test]
fn a_policy_named_by_the_environment_must_be_roots() {
    // The agent can set environment variables: a policy it wrote must not be used.
    let env = Env::new("version: \"2.0\"\ndefault: allow\nrules: []\n");
    std::os::unix::fs::chown(&env.policy, Some(65534), Some(65534)).expect("chown (tests run as root)");
    let out = env.run(&["-c", "true"]);
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("not root"), "{}", text(&out.stderr));
    // Made root's again, it is used.
    std::os::unix::fs::chown(&env.policy, Some(0), Some(0)).expect("chown back");
    let out = env.run(&["-c", "true"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn identities_the_policy_does_not_govern_run_nothing() {
    let env = Env::new(&format!("{POLICY}governed:\n  identities: [openclaw, ops]\n"));
    let ran = env.dir.path().join("ran");
    let command = format!("touch {}", ran.display());
    // A governed identity runs as usual.
    let out = env.shell().env("SENTRA_IDENTITY", "openclaw").args(["-c", &command]).output().expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(ran.exists());
    std::fs::remove_file(&ran).expect("rm");
    // Another one (the agent can set $SENTRA_IDENTITY) is refused whole, before the line runs.
    let out = env.shell().env("SENTRA_IDENTITY", "admin").args(["-c", &command]).output().expect("run");
    assert_eq!(out.status.code(), Some(126));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("identity_not_governed") && stderr.contains("`admin`"), "{stderr}");
    assert!(!ran.exists(), "the line ran for an identity the policy does not govern");
    let records = env.records();
    let last = records.last().expect("a record");
    assert_eq!(last["decision"], "denied");
    assert_eq!(last["rule_id"], "identity_not_governed");
    assert_eq!(last["identity"], "admin");
}

/// Inputs that once crashed the shell layer (stack overflow, a panic on bytes that are not UTF-8, a
/// line too long for `argv`): each is now refused with a record, or runs.
#[test]
fn no_input_crashes_it_and_every_refusal_is_recorded() {
    let env = Env::new(POLICY);
    let nested = [
        format!("{}true; {}", "{ ".repeat(2_000), "}; ".repeat(2_000)),
        format!("{}true; {}", "if true; then ".repeat(5_000), "fi; ".repeat(5_000)),
        format!("echo {}true{}", "$(".repeat(10_000), ")".repeat(10_000)),
        format!("cat {}/dev/null{}", "<(cat ".repeat(2_000), ")".repeat(2_000)),
        format!("echo {}x{}", "${a:-".repeat(2_000), "}".repeat(2_000)),
        format!("if a; then b; {}fi", "elif c; then d; ".repeat(5_000)),
    ];
    for line in &nested {
        let out = env.run(&["-c", line]);
        assert_eq!(out.status.code(), Some(126), "{}…: {}", &line[..40], text(&out.stderr));
        assert!(text(&out.stderr).contains("nested more than"), "{}", text(&out.stderr));
    }
    let records = env.records();
    assert_eq!(records.len(), nested.len(), "one record per refusal");
    assert!(records.iter().all(|r| r["decision"] == "denied" && r["rule_id"] == "parse_error"));

    // A command that is not UTF-8: refused, recorded, no panic.
    let bad = std::ffi::OsString::from_vec(b"echo caf\xe9".to_vec());
    let out = env.shell().arg("-c").arg(&bad).output().expect("run");
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("not valid UTF-8"), "{}", text(&out.stderr));
    let last = env.records().pop().expect("record");
    assert_eq!(last["rule_id"], "unreadable_input", "{last}");
    assert_eq!(last["decision"], "denied");

    // A 10,000-stage pipeline is judged (and refused here: `sudo` is in it).
    let pipeline = format!("{} | sudo ls", vec!["ls"; 10_000].join(" | "));
    let out = env.run(&["-c", &pipeline]);
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));

    // A line longer than one argument may be (here from stdin) reaches the shell whole.
    let long = format!("x={}; echo ${{#x}}", "a".repeat(300_000));
    let mut child = env.shell().stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("spawn");
    child.stdin.take().expect("stdin").write_all(long.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(text(&out.stdout), "300000\n", "{}", text(&out.stderr));
}

/// A rule written for a builtin's name applies to the builtin; builtins no rule names stay usable.
#[test]
fn rules_for_builtin_names_apply_to_builtins() {
    let policy = "version: \"2.0\"\ndefault: deny\nrules:\n  - id: block_kill\n    match: { executable: \"^kill$\" }\n    effect: deny\n  - id: allow_echo\n    match: { executable: \"^echo$\" }\n    effect: allow\n";
    let env = Env::new(policy);
    let out = env.run(&["-c", "kill -0 $$"]);
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));
    assert_eq!(env.records().pop().expect("record")["rule_id"], "block_kill");
    let out = env.run(&["-c", "cd /tmp && echo ok"]);
    assert_eq!(text(&out.stdout), "ok\n", "{}", text(&out.stderr));
}

/// Everything may run but `id`, and only from the system directories (the kernel's exec rules).
const EXEC_POLICY: &str = "version: \"2.0\"\nmode: enforce\ndefault: allow\nexec:\n  default: deny\n  path: [/usr/bin, /bin]\n  allow:\n    - { id: usr_bin, dir: /usr/bin }\n    - { id: bin, dir: /bin }\n    - { id: usr_local_bin, dir: /usr/local/bin }\n  deny:\n    - { id: no_id, name: id, reason: \"id is not for agents\" }\n";

/// A line, variables handed to the shell, and the rule that denies it (`None`: it runs).
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], Option<&'a str>);

/// The shell judges the file a command will run, as the kernel will: symlinks, copies and `PATH`
/// entries named like an allowed program are judged as what they are, before anything runs.
#[test]
fn the_file_that_will_run_is_judged() {
    let env = Env::new(EXEC_POLICY);
    let dir = env.dir.path();
    let id = std::fs::canonicalize("/usr/bin/id").expect("/usr/bin/id");
    std::os::unix::fs::symlink(&id, dir.join("ls")).expect("symlink");
    std::fs::create_dir_all(dir.join("bin")).expect("mkdir");
    std::fs::copy(&id, dir.join("bin/ls")).expect("copy");
    std::fs::create_dir_all(dir.join("shadow")).expect("mkdir");
    std::os::unix::fs::symlink(&id, dir.join("shadow/ls")).expect("symlink");
    let cases: &[Case<'_>] = &[
        ("./ls", &[], Some("no_id")),
        ("ls -la >/dev/null", &[], None),
        ("/usr/bin/ls >/dev/null", &[], None),
        ("bin/ls", &[], Some("default")),
        ("PATH=./shadow:$PATH ls", &[], Some("no_id")),
        ("export PATH=shadow:$PATH; ls", &[], Some("no_id")),
        ("PATH=$(pwd)/shadow ls", &[], Some("unknown_program")),
        ("cp /usr/bin/id ./made && ./made", &[], Some("default")),
        // OpenClaw's own prefix, with the directory it prepends from its environment.
        (
            "export PATH=\"${OPENCLAW_PREPEND_PATH}${PATH:+:$PATH}\"; ls >/dev/null",
            &[("OPENCLAW_PREPEND_PATH", "shadow")],
            Some("no_id"),
        ),
        // Unset, it leaves an empty first entry: the working directory, where `ls` is `id`.
        ("export PATH=\"${OPENCLAW_PREPEND_PATH}${PATH:+:$PATH}\"; ls >/dev/null", &[], Some("no_id")),
        (
            "export PATH=\"${OPENCLAW_PREPEND_PATH}${PATH:+:$PATH}\"; ls >/dev/null",
            &[("OPENCLAW_PREPEND_PATH", "/usr/local/bin")],
            None,
        ),
        // A variable the agent hands the shell makes every program after it run a command.
        ("ls >/dev/null", &[("GIT_SSH_COMMAND", "id")], Some("no_id")),
        ("ls >/dev/null", &[("LD_PRELOAD", "/tmp/x.so")], Some("unknown_program")),
    ];
    for (line, vars, denied_by) in cases {
        let mut shell = env.shell();
        shell.env_remove("OPENCLAW_PREPEND_PATH").env_remove("GIT_SSH_COMMAND").env_remove("LD_PRELOAD");
        for (key, value) in *vars {
            shell.env(key, value);
        }
        let out = shell.args(["-c", line]).output().expect("sentra-shell");
        let record = env.records().pop().expect("a record per line");
        match denied_by {
            Some(rule) => {
                assert_eq!(out.status.code(), Some(126), "{line}: {}", text(&out.stderr));
                assert_eq!(record["rule_id"], *rule, "{line}: {record}");
                assert!(text(&out.stderr).contains("DENIED"), "{line}: {}", text(&out.stderr));
            }
            None => assert_eq!(out.status.code(), Some(0), "{line}: {}", text(&out.stderr)),
        }
    }
    assert!(!dir.join("made").exists(), "a denied line runs nothing");
    // Directory changes and appended `PATH` entries are followed through the line.
    std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
    std::os::unix::fs::symlink(&id, dir.join("sub/tool")).expect("symlink");
    std::fs::create_dir_all(dir.join("tools")).expect("mkdir");
    std::os::unix::fs::symlink(&id, dir.join("tools/tool")).expect("symlink");
    let tools = dir.join("tools").display().to_string();
    let exports =
        |n: usize| (0..n).map(|i| ["export PATH+=:/p", &i.to_string(), "; "].concat()).collect::<String>();
    let lines: Vec<(String, Option<&str>)> = vec![
        ("cd sub && ./tool".into(), Some("no_id")),
        ("cd /usr/bin && ./id".into(), Some("no_id")),
        ("cd sub; cd ..; cd sub; ./tool".into(), Some("no_id")),
        ("pushd sub >/dev/null && ./tool".into(), Some("no_id")),
        ("cd -P -- sub && ./tool".into(), Some("no_id")),
        ("cd \"$(mktemp -d)\" && ./tool".into(), Some("unknown_program")),
        ("cd sub && ls >/dev/null && cd .. && ls >/dev/null".into(), None),
        ("cd /usr/bin && ./true".into(), None),
        (format!("export PATH+=:{tools}; tool"), Some("no_id")),
        (format!("PATH+=:{tools} tool"), Some("no_id")),
        // Appended, the entry comes after the system directories: `ls` is still /usr/bin/ls (the
        // working directory's `ls` is `id`, and an empty first entry would find it).
        ("PATH+=:/nonexistent ls >/dev/null".into(), None),
        ("export PATH+=:/nonexistent; ls >/dev/null".into(), None),
        // Past 64 possible directories or `PATH` values, a relative name cannot be located.
        (format!("{}./tool", "cd sub; cd tools; ".repeat(4)), Some("unknown_program")),
        (format!("{}tool", exports(65)), Some("unknown_program")),
        (format!("{}ls >/dev/null", exports(10)), None),
    ];
    for (line, denied_by) in &lines {
        let out = env.run(&["-c", line]);
        let record = env.records().pop().expect("a record per line");
        match denied_by {
            Some(rule) => {
                assert_eq!(out.status.code(), Some(126), "{line}: {}", text(&out.stderr));
                assert_eq!(record["rule_id"], *rule, "{line}: {record}");
            }
            None => assert_eq!(out.status.code(), Some(0), "{line}: {}", text(&out.stderr)),
        }
    }
    let out = env.run(&["-c", "./ls"]);
    assert!(
        text(&out.stderr).contains(&id.display().to_string()),
        "names the real file: {}",
        text(&out.stderr)
    );
}

/// Without an `exec:` section, the name rules are asked about the real file's name too: a symlink
/// named like an allowed program that leads to a denied one is denied; links system packages make
/// (`awk` to `mawk`) are not, since only a deny of the real name counts.
#[test]
fn a_link_is_judged_by_the_name_of_what_it_leads_to() {
    let env = Env::new(
        "version: \"2.0\"\nmode: enforce\ndefault: deny\nrules:\n  - id: no_id\n    match: { executable: \"^id$\" }\n    effect: deny\n  - id: listing\n    match: { executable: \"^(ls|awk)$\" }\n    effect: allow\n",
    );
    let id = std::fs::canonicalize("/usr/bin/id").expect("/usr/bin/id");
    std::os::unix::fs::symlink(&id, env.dir.path().join("ls")).expect("symlink");
    let out = env.run(&["-c", "./ls"]);
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));
    assert_eq!(env.records().pop().expect("record")["rule_id"], "no_id");
    let out = env.run(&["-c", "ls / >/dev/null"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // A copy or a hard link is the program it copies, whatever its name.
    std::fs::create_dir_all(env.dir.path().join("bin")).expect("mkdir");
    std::fs::copy(&id, env.dir.path().join("bin/ls")).expect("copy");
    let linked = tempfile::tempdir_in("/var/tmp").expect("tempdir in /var/tmp");
    std::fs::hard_link(&id, linked.path().join("ls"))
        .expect("hard link /usr/bin/id (same filesystem as /var/tmp)");
    let copy_of_ls = env.dir.path().join("bin/lister");
    std::fs::copy("/usr/bin/ls", &copy_of_ls).expect("copy ls");
    let listing = env.dir.path().join("bin/ls-copy");
    std::fs::copy("/usr/bin/ls", &listing).expect("copy ls");
    for line in ["bin/ls".to_string(), format!("{}/ls", linked.path().display())] {
        let out = env.run(&["-c", &line]);
        assert_eq!(out.status.code(), Some(126), "{line}: {}", text(&out.stderr));
        let record = env.records().pop().expect("record");
        assert_eq!(record["rule_id"], "no_id", "{line}: {record}");
        assert!(text(&out.stderr).contains("/usr/bin/id"), "names what it is: {}", text(&out.stderr));
    }
    // A copy of an allowed program is judged by its name, like any program (`ls-copy` matches no
    // allow rule here: default deny), and nothing about it is denied for what it is.
    let out = env.run(&["-c", "bin/ls-copy >/dev/null"]);
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));
    assert_eq!(env.records().pop().expect("record")["rule_id"], "default");
    if std::fs::canonicalize("/usr/bin/awk").is_ok_and(|real| !real.ends_with("awk")) {
        let out = env.run(&["-c", "echo a | awk '{print}' >/dev/null"]);
        assert_eq!(out.status.code(), Some(0), "awk through its alternatives link: {}", text(&out.stderr));
    }
}

/// The program files of awk and sed (`-f`) are read and judged like their inline programs.
#[test]
fn awk_and_sed_program_files_are_read() {
    let env = Env::new(POLICY);
    let dir = env.dir.path();
    std::fs::write(dir.join("plain.awk"), "{ print $1 || $2 }\n").expect("write");
    std::fs::write(dir.join("evil.awk"), "BEGIN { system(\"id\") }\n").expect("write");
    std::fs::write(dir.join("plain.sed"), "s/a/b/g\n/x/d\n").expect("write");
    std::fs::write(dir.join("evil.sed"), "1e id\n").expect("write");
    std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
    let cases: &[(&str, Option<&str>)] = &[
        ("awk -f plain.awk /dev/null", None),
        ("sed -f plain.sed /dev/null", None),
        ("sed -n -f plain.sed /dev/null", None),
        ("awk -f evil.awk /dev/null", Some("system()")),
        ("awk -fevil.awk /dev/null", Some("system()")),
        ("awk -f plain.awk -f evil.awk /dev/null", Some("system()")),
        ("sed -f evil.sed /dev/null", Some("runs a command")),
        ("cd sub && awk -f ../evil.awk /dev/null", Some("system()")),
        ("awk -f missing.awk /dev/null", Some("not found")),
        ("awk -f /dev/stdin /dev/null <<'EOF'\nBEGIN { system(\"id\") }\nEOF", Some("descriptor")),
        ("awk -f \"$(mktemp)\" /dev/null", Some("only known when the line runs")),
        ("awk -l ext '{print}' /dev/null", Some("native code")),
    ];
    for (line, denied) in cases {
        let out = env.run(&["-c", line]);
        match denied {
            Some(why) => {
                assert_eq!(out.status.code(), Some(126), "{line}: {}", text(&out.stderr));
                let record = env.records().pop().expect("record");
                assert_eq!(record["rule_id"], "unknown_program", "{line}: {record}");
                assert!(text(&out.stderr).contains(why), "{line}: {}", text(&out.stderr));
            }
            None => assert_eq!(out.status.code(), Some(0), "{line}: {}", text(&out.stderr)),
        }
    }
}
