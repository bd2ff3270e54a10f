//! A `sentra-ctl daemon` for the tests: its own pin root, runtime directory and cgroup (so tests never
//! touch a real controller's), optionally inside a test network namespace. Dropping it removes every
//! pin and stops the process, whatever the test's outcome.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output},
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{netns::NetNs, requested_backend, sentra_ctl};

/// A test controller; `cgroup` empty lets the policy's `governed.cgroups` decide.
pub struct TestDaemon<'a> {
    /// Holds `run/` (socket and state), `audit.jsonl` and `daemon.log`.
    pub dir: PathBuf,
    pub pin_root: PathBuf,
    pub cgroup: String,
    pub child: Option<Child>,
    ns: Option<&'a NetNs>,
}

impl<'a> TestDaemon<'a> {
    /// A controller named after `tag` and this process, keeping its files in `dir`.
    #[must_use]
    pub fn new(tag: &str, dir: &Path, ns: Option<&'a NetNs>) -> Self {
        let id = format!("{tag}-{}", std::process::id());
        Self {
            dir: dir.to_path_buf(),
            pin_root: PathBuf::from(format!("/sys/fs/bpf/sentra-test-{id}")),
            cgroup: format!("test-{id}"),
            child: None,
            ns,
        }
    }

    #[must_use]
    pub fn audit(&self) -> PathBuf {
        self.dir.join("audit.jsonl")
    }

    #[must_use]
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }

    /// `sentra-ctl` aimed at this controller (inside the namespace, if any).
    #[must_use]
    pub fn ctl(&self) -> Command {
        let mut cmd = match self.ns {
            Some(ns) => ns.command(sentra_ctl()),
            None => Command::new(sentra_ctl()),
        };
        // As `crate::ctl_command`.
        cmd.env_remove("LD_LIBRARY_PATH");
        cmd.env("SENTRA_RUN_DIR", self.run_dir()).env("SENTRA_PIN_ROOT", &self.pin_root);
        cmd
    }

    /// Starts the daemon with `policy` and waits until its socket answers.
    ///
    /// # Panics
    /// If it cannot start, exits early, or does not answer within two minutes.
    pub fn start(&mut self, policy: &Path) {
        self.start_with(policy, &[]);
    }

    /// [`Self::start`] with more `daemon` options.
    ///
    /// # Panics
    /// As [`Self::start`].
    pub fn start_with(&mut self, policy: &Path, options: &[&str]) {
        // Its messages go to a file: on the console they would interleave with the test report.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))
            .expect("log");
        let mut cmd = self.ctl();
        cmd.args(["daemon", "--policy"]).arg(policy).arg("--audit-log").arg(self.audit());
        cmd.args(["--backend", &requested_backend()]);
        // Reloads in tests name the test's own policy files.
        if let Some(dir) = policy.parent() {
            cmd.arg("--policy-dir").arg(dir);
        }
        if !self.cgroup.is_empty() {
            cmd.args(["--cgroup", &self.cgroup]);
        }
        cmd.args(options);
        let socket = self.run_dir().join("ctl.sock");
        let child = self.child.insert(cmd.stderr(log).spawn().expect("start daemon"));
        let deadline = Instant::now() + Duration::from_mins(2);
        // The socket of a killed controller may still be on disk: wait until one answers.
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if let Some(status) = child.try_wait().ok().flatten() {
                let said = std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default();
                panic!("daemon exited early: {status}; it said:\n{said}");
            }
            assert!(Instant::now() < deadline, "daemon socket never appeared");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the daemon with SIGKILL (pins stay).
    ///
    /// # Panics
    /// If none runs.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("daemon running");
        child.kill().expect("SIGKILL");
        let _ = child.wait();
    }

    /// `sentra-ctl launch` as the enforcement tests use it: as uid 65534 (no passwd entry needed),
    /// without a seccomp profile (the launcher's own tests cover profiles); `args` are `launch`'s
    /// (options, `--`, the command).
    #[must_use]
    pub fn launch_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = self.ctl();
        cmd.args(["launch", "--user", "65534", "--no-seccomp"]).args(args);
        cmd
    }

    /// Runs [`Self::launch_cmd`] to its end.
    ///
    /// # Panics
    /// If `sentra-ctl` cannot be started.
    #[must_use]
    pub fn launch(&self, args: &[&str]) -> Output {
        self.launch_cmd(args).output().expect("sentra-ctl launch")
    }

    /// Runs `sentra-ctl ARGS` against this controller.
    ///
    /// # Panics
    /// If `sentra-ctl` cannot be started.
    #[must_use]
    pub fn run(&self, args: &[&str]) -> Output {
        self.ctl().args(args).output().expect("sentra-ctl")
    }

    /// `sentra-ctl status`, parsed.
    ///
    /// # Panics
    /// If it fails.
    #[must_use]
    pub fn status(&self) -> Value {
        let out = self.run(&["status", "--json"]);
        assert!(out.status.success(), "status failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("status json")
    }
}

impl Drop for TestDaemon<'_> {
    fn drop(&mut self) {
        // Leave nothing behind on the shared kernel, whatever happened.
        let _ = self.run(&["stop", "--force"]);
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
