//! Running an approved line with a real shell, so that its semantics are exactly `sh`'s (or bash's,
//! for bash syntax), and reporting its status as a shell would.

use std::{
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus},
    sync::atomic::{AtomicI32, Ordering},
};

use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};

/// Environment variables removed before the real shell starts: they make it run code that was not
/// judged (`BASH_ENV`/`ENV` scripts, functions exported through `BASH_FUNC_*`).
pub const UNSAFE_ENV: &[&str] = &["BASH_ENV", "ENV"];

/// Whether a variable holds a credential of the agent's own (its LLM API key, its gateway token):
/// those reach the gateway process and are removed from every command the shell runs, so that a
/// command the model wrote cannot print or send them. By name: `OPENCLAW_GATEWAY_*`, and anything
/// ending in `_API_KEY`, `_TOKEN`, `_SECRET` or `_PASSWORD`.
#[must_use]
pub fn is_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    upper.starts_with("OPENCLAW_GATEWAY_")
        || ["_API_KEY", "_TOKEN", "_SECRET", "_PASSWORD"].iter().any(|suffix| upper.ends_with(suffix))
}

/// Lines longer than this reach the shell through a sealed memory file instead of its arguments: one
/// argument holds at most `MAX_ARG_STRLEN`, 32 pages (include/uapi/linux/binfmts.h).
const LONG_LINE: usize = 64 << 10;
/// The descriptor the shell reads a long line from.
const SCRIPT_FD: i32 = 62;

/// A shell command ready to spawn, with the memory file holding a long line (kept open until then).
pub struct ShellCommand {
    pub command: Command,
    _script: Option<std::os::fd::OwnedFd>,
}

/// The shells lines run with.
#[derive(Debug, Clone)]
pub struct Shells {
    pub sh: PathBuf,
    pub bash: Option<PathBuf>,
}

impl Shells {
    /// Finds `/bin/sh` and bash without `$SHELL` (`OpenClaw` removes it).
    #[must_use]
    pub fn find() -> Self {
        let sh = ["/bin/sh", "/usr/bin/sh"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .unwrap_or_else(|| "sh".into());
        let bash = ["/bin/bash", "/usr/bin/bash", "/usr/local/bin/bash"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file());
        Self { sh, bash }
    }

    /// The shell for a line; bash syntax without bash falls back to `sh` (which then reports the error).
    #[must_use]
    pub fn pick(&self, needs_bash: bool) -> &Path {
        match (&self.bash, needs_bash) {
            (Some(bash), true) => bash,
            _ => &self.sh,
        }
    }
}

/// A `sh -c` invocation.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    pub shell: &'a Path,
    /// Shell options given before `-c` (`-e`, `-x`, `-o pipefail`…).
    pub options: &'a [String],
    pub line: &'a str,
    /// `$0` and the positional parameters.
    pub arg0: Option<&'a str>,
    pub args: &'a [String],
}

impl Invocation<'_> {
    /// The command, with the environment cleaned of variables that run unjudged code. A long line is
    /// written to a sealed memory file the shell sources (`-c '. /dev/fd/N'`, so `$0` and the
    /// positional parameters are the same as with the line itself).
    ///
    /// # Errors
    /// The memory file for a long line cannot be made.
    pub fn command(&self) -> std::io::Result<ShellCommand> {
        let mut command = Command::new(self.shell);
        command.args(self.options).arg("-c");
        let script = if self.line.len() > LONG_LINE {
            let file = sealed_script(self.line)?;
            let raw = std::os::fd::AsRawFd::as_raw_fd(&file);
            // SAFETY: dup2 is async-signal-safe; it runs in the child between fork and exec.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
                    if libc::dup2(raw, SCRIPT_FD) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            command.arg(format!(". /dev/fd/{SCRIPT_FD}"));
            Some(file)
        } else {
            command.arg(self.line);
            None
        };
        if let Some(arg0) = self.arg0 {
            command.arg(arg0).args(self.args);
        }
        for key in UNSAFE_ENV {
            command.env_remove(key);
        }
        for (key, _) in std::env::vars_os() {
            let name = key.to_string_lossy();
            if name.starts_with("BASH_FUNC_") || is_secret(&name) {
                command.env_remove(key);
            }
        }
        Ok(ShellCommand { command, _script: script })
    }
}

/// A memory file holding `text`, sealed so that nothing (the line it holds included) can change it.
fn sealed_script(text: &str) -> std::io::Result<std::os::fd::OwnedFd> {
    use nix::{
        fcntl::{FcntlArg, SealFlag, fcntl},
        sys::memfd::{MFdFlags, memfd_create},
    };
    let fd = memfd_create("sentra-line", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)?;
    let mut file = std::fs::File::from(fd);
    std::io::Write::write_all(&mut file, text.as_bytes())?;
    let seals =
        SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_SEAL;
    fcntl(&file, FcntlArg::F_ADD_SEALS(seals))?;
    Ok(file.into())
}

/// The child being waited for, for the signal forwarder.
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Waits for `child` while forwarding SIGTERM and SIGHUP to it (a supervisor that kills the shell
/// means the command) and ignoring SIGINT and SIGQUIT (the terminal sends those to the child too),
/// as `system(3)` does. Dispositions are restored afterwards.
///
/// # Errors
/// Waiting fails.
pub fn wait_forwarding(child: &mut Child) -> std::io::Result<ExitStatus> {
    CHILD.store(i32::try_from(child.id()).unwrap_or(0), Ordering::SeqCst);
    let forwarder = SigAction::new(SigHandler::Handler(forward), SaFlags::SA_RESTART, SigSet::empty());
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    let mut previous = Vec::new();
    for (sig, action) in [
        (Signal::SIGTERM, &forwarder),
        (Signal::SIGHUP, &forwarder),
        (Signal::SIGINT, &ignore),
        (Signal::SIGQUIT, &ignore),
    ] {
        // SAFETY: the handler only calls kill(2) with a pid read atomically.
        if let Ok(old) = unsafe { signal::sigaction(sig, action) } {
            previous.push((sig, old));
        }
    }
    let status = child.wait();
    for (sig, old) in previous {
        // SAFETY: restores the disposition that was in place before.
        let _ = unsafe { signal::sigaction(sig, &old) };
    }
    CHILD.store(0, Ordering::SeqCst);
    status
}

/// The status as a shell reports it: the exit code, or 128 + the signal.
#[must_use]
pub fn status_code(status: ExitStatus) -> i32 {
    status.code().or_else(|| status.signal().map(|sig| 128 + sig)).unwrap_or(1)
}

/// Ends this process the way the child ended: with its code, or killed by the same signal (so that
/// a caller sees `WIFSIGNALED`, as with a shell that exec'd the command).
pub fn exit_like(status: ExitStatus) -> ! {
    let dumps_core = |sig: Signal| {
        matches!(
            sig,
            Signal::SIGQUIT
                | Signal::SIGILL
                | Signal::SIGABRT
                | Signal::SIGFPE
                | Signal::SIGSEGV
                | Signal::SIGBUS
                | Signal::SIGSYS
                | Signal::SIGTRAP
                | Signal::SIGXCPU
                | Signal::SIGXFSZ
        )
    };
    // Signals that dump core are reported as 128 + signal rather than dumping this process's core.
    if let Some(sig) = status.signal().and_then(|s| Signal::try_from(s).ok()).filter(|&s| !dumps_core(s)) {
        let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
        // SAFETY: restoring the default disposition has no handler to be unsafe.
        let _ = unsafe { signal::sigaction(sig, &default) };
        let _ = signal::raise(sig);
    }
    std::process::exit(status_code(status))
}

#[cfg(test)]
mod tests {
    use super::is_secret;

    #[test]
    fn the_agents_credentials_are_secrets() {
        for name in [
            "OPENCLAW_GATEWAY_TOKEN",
            "OPENCLAW_GATEWAY_PASSWORD",
            "OPENROUTER_API_KEY",
            "openai_api_key",
            "GH_TOKEN",
            "SMTP_PASSWORD",
            "CLIENT_SECRET",
        ] {
            assert!(is_secret(name), "{name}");
        }
        for name in ["PATH", "HOME", "OPENCLAW_SHELL", "OPENCLAW_PREPEND_PATH", "TOKENIZER", "API_KEY_FILE"] {
            assert!(!is_secret(name), "{name}");
        }
    }
}
