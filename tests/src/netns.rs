//! Network namespaces the tests create, so that every packet a test sends stays on a machine of its
//! own: a fresh namespace has only `lo`, and the tests add the addresses they use to it.
//!
//! The namespace is held by an fd (no name under /var/run/netns); it disappears with its last user.

use std::{
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::process::CommandExt as _,
    },
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use crate::{Run, read_records, requested_backend, sentra_ctl};

/// A network namespace created by the test.
pub struct NetNs {
    fd: OwnedFd,
}

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

impl NetNs {
    /// Creates a namespace with `lo` up and `addrs` (`10.200.0.1/32`, `fd00:200::1/128`, …) on it.
    ///
    /// # Panics
    /// If the namespace cannot be created or configured (the tests need root).
    #[must_use]
    pub fn new(addrs: &[&str]) -> Self {
        // unshare(CLONE_NEWNET) affects only the calling thread: do it on a throwaway thread and keep
        // an fd of its namespace.
        let fd = std::thread::spawn(|| -> Result<OwnedFd, String> {
            // SAFETY: plain syscalls on this thread.
            unsafe {
                if libc::unshare(libc::CLONE_NEWNET) != 0 {
                    return Err(os_err("unshare(CLONE_NEWNET)"));
                }
                let fd = libc::open(c"/proc/thread-self/ns/net".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(os_err("open /proc/thread-self/ns/net"));
                }
                Ok(OwnedFd::from_raw_fd(fd))
            }
        })
        .join()
        .expect("netns thread")
        .unwrap_or_else(|e| panic!("creating a network namespace (root needed): {e}"));
        let ns = Self { fd };
        ns.ip(&["link", "set", "lo", "up"]);
        for addr in addrs {
            if addr.contains(':') {
                // No DAD on loopback (net/ipv6/addrconf.c skips it for IFF_LOOPBACK): usable at once.
                ns.ip(&["-6", "addr", "add", addr, "dev", "lo"]);
            } else {
                ns.ip(&["addr", "add", addr, "dev", "lo"]);
            }
        }
        ns
    }

    /// Runs `ip ARGS` inside the namespace.
    ///
    /// # Panics
    /// If it fails.
    pub fn ip(&self, args: &[&str]) {
        let ip = ["/sbin/ip", "/usr/sbin/ip", "/bin/ip", "/usr/bin/ip"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("no `ip` binary (iproute2 or busybox)");
        let output = self.command(ip).args(args).output().expect("run ip");
        assert!(output.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    }

    /// A command that runs inside the namespace.
    #[must_use]
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        let raw = self.fd.as_raw_fd();
        // SAFETY: setns is async-signal-safe; the fd stays open until after spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(raw, libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        cmd
    }

    /// Runs `f` on a thread inside the namespace (sockets it creates belong to the namespace and
    /// keep belonging to it wherever they are used later).
    ///
    /// # Panics
    /// If entering the namespace fails, or `f` panics.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let fd = self.fd.as_raw_fd();
        std::thread::spawn(move || {
            // SAFETY: setns on this thread only, with an fd the NetNs keeps open until join.
            assert_eq!(unsafe { libc::setns(fd, libc::CLONE_NEWNET) }, 0, "{}", os_err("setns"));
            f()
        })
        .join()
        .expect("thread in netns")
    }

    /// Runs `command` under `sentra-ctl run` inside the namespace with `policy` (YAML text).
    ///
    /// # Panics
    /// If the controller cannot be started at all.
    #[must_use]
    pub fn run_governed(&self, dir: &Path, policy: &str, command: &[&str], env: &[(&str, String)]) -> Run {
        let (mut cmd, audit) = self.governed_command(dir, policy, command, env);
        let output = cmd.output().expect("start sentra-ctl");
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            records: read_records(&audit),
        }
    }

    /// The `sentra-ctl run` command (not started) and its audit log's path.
    ///
    /// # Panics
    /// If the policy cannot be written.
    #[must_use]
    pub fn governed_command(
        &self,
        dir: &Path,
        policy: &str,
        command: &[&str],
        env: &[(&str, String)],
    ) -> (Command, std::path::PathBuf) {
        use std::os::unix::fs::PermissionsExt as _;
        let n = unique();
        let policy_path = dir.join(format!("net-policy-{n}.yaml"));
        std::fs::write(&policy_path, policy).expect("write policy");
        std::fs::set_permissions(&policy_path, std::fs::Permissions::from_mode(0o644)).expect("chmod policy");
        let audit = dir.join(format!("net-audit-{n}.jsonl"));
        let mut cmd = self.command(sentra_ctl());
        // As `crate::ctl_command`.
        cmd.env_remove("LD_LIBRARY_PATH");
        cmd.arg("run")
            .arg("--policy")
            .arg(&policy_path)
            .arg("--audit-log")
            .arg(&audit)
            .arg("--backend")
            .arg(requested_backend())
            .arg("--")
            .args(command);
        for (key, value) in env {
            cmd.env(key, value);
        }
        (cmd, audit)
    }
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!("{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Waits (bounded) until `cond` holds.
///
/// # Panics
/// When it does not hold within `limit`.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
