//! The Python sandbox's sections: `profiles` (what a sandbox may see, how much it may use, which
//! system calls it may make), `capabilities` (named ways to reach a profile, limiting the interpreter's
//! arguments) and the `syscall_profiles` they name. The original format's keys, validated with line
//! and column like every other section; `sentra python` (see `crate::sandbox`) applies them.

use serde::{Deserialize, Serialize};

use super::{Policy, PolicyError};

/// The interpreter a profile runs when it names none.
pub const DEFAULT_PYTHON: &str = "/usr/bin/python3";

/// The limits a profile gets for what it leaves out (the seed's figures: 512 MB, 30 s).
pub const DEFAULT_LIMITS: Limits = Limits {
    timeout_sec: 30,
    cpu_max_percent: 100,
    mem_max_mb: 512,
    pids_max: 64,
    max_stdout_bytes: 1 << 20,
    max_stderr_bytes: 1 << 20,
};

/// `profiles.<name>`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxProfile {
    /// The original's external runner program. Sentra's runner is built in (`sentra python`); the
    /// key is accepted so the original files load, and otherwise unused.
    pub runner: Option<String>,
    /// The interpreter (absolute) [default: `/usr/bin/python3`].
    pub python_bin: Option<String>,
    /// No process creation or exec once the interpreter runs (threads stay possible).
    #[serde(default)]
    pub deny_spawn_processes: bool,
    #[serde(default)]
    pub default_network: NetworkDefault,
    #[serde(default)]
    pub fs_defaults: FsDefaults,
    #[serde(default)]
    pub limits_defaults: LimitsDefaults,
    /// A `syscall_profiles` entry; none: no system call filter beyond the always-denied calls.
    pub syscall_profile: Option<String>,
}

/// What the sandbox's network namespace reaches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkDefault {
    /// A network namespace of its own with only loopback.
    #[default]
    Deny,
    /// The host's network (not supported yet: refused when a sandbox starts).
    Allow,
}

/// `fs_defaults`: the sandbox's file system.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FsDefaults {
    /// The working directory inside the sandbox.
    pub cwd: Option<String>,
    /// Visible read-only (what exists of it).
    #[serde(default)]
    pub read_allow: Vec<String>,
    /// Visible and writable.
    #[serde(default)]
    pub write_allow: Vec<String>,
    /// Never visible, even below an allowed path.
    #[serde(default)]
    pub protected_deny: Vec<String>,
}

/// `limits_defaults`: each absent value takes [`DEFAULT_LIMITS`]'s.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsDefaults {
    pub timeout_sec: Option<u64>,
    pub cpu_max_percent: Option<u32>,
    pub mem_max_mb: Option<u64>,
    pub pids_max: Option<u32>,
    pub max_stdout_bytes: Option<u64>,
    pub max_stderr_bytes: Option<u64>,
}

/// Limits with every value set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    pub timeout_sec: u64,
    /// Percent of one CPU.
    pub cpu_max_percent: u32,
    pub mem_max_mb: u64,
    pub pids_max: u32,
    pub max_stdout_bytes: u64,
    pub max_stderr_bytes: u64,
}

impl LimitsDefaults {
    /// These limits, with [`DEFAULT_LIMITS`] for what is absent.
    #[must_use]
    pub fn resolve(&self) -> Limits {
        let d = DEFAULT_LIMITS;
        Limits {
            timeout_sec: self.timeout_sec.unwrap_or(d.timeout_sec),
            cpu_max_percent: self.cpu_max_percent.unwrap_or(d.cpu_max_percent),
            mem_max_mb: self.mem_max_mb.unwrap_or(d.mem_max_mb),
            pids_max: self.pids_max.unwrap_or(d.pids_max),
            max_stdout_bytes: self.max_stdout_bytes.unwrap_or(d.max_stdout_bytes),
            max_stderr_bytes: self.max_stderr_bytes.unwrap_or(d.max_stderr_bytes),
        }
    }
}

/// `capabilities.<name>`: a profile reached under a name, with the interpreter arguments allowed.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Capability {
    /// Only `python`.
    #[serde(rename = "type")]
    pub kind: String,
    pub profile: String,
    /// `-c`, `-m`, `-u` and script patterns (`script.py`, `*.py`); empty: any.
    #[serde(default)]
    pub allowed_python_argv: Vec<String>,
}

impl Capability {
    /// Whether an interpreter option (`-c`, `-m`, `-u`) or a script path is allowed.
    #[must_use]
    pub fn allows(&self, argument: &str) -> bool {
        if self.allowed_python_argv.is_empty() {
            return true;
        }
        self.allowed_python_argv.iter().any(|allowed| {
            if argument.starts_with('-') {
                allowed == argument
            } else {
                let name =
                    std::path::Path::new(argument).file_name().and_then(|n| n.to_str()).unwrap_or(argument);
                match allowed.strip_prefix('*') {
                    Some(suffix) => name.ends_with(suffix) || argument.ends_with(suffix),
                    None => allowed == argument || allowed == name,
                }
            }
        })
    }
}

impl Policy {
    /// Profiles name an existing syscall profile and absolute paths; limits are in range; capabilities
    /// name an existing profile and the one type there is.
    pub(super) fn validate_sandbox(&self) -> Result<(), PolicyError> {
        for (name, profile) in &self.model.profiles {
            let at = format!("profiles.{name}");
            if let Some(syscalls) = &profile.syscall_profile
                && !self.model.syscall_profiles.contains_key(syscalls)
            {
                return Err(self.error_at(
                    format!("{at}.syscall_profile"),
                    format!("no profile named `{syscalls}` in `syscall_profiles`"),
                ));
            }
            if let Some(python) = &profile.python_bin
                && !python.starts_with('/')
            {
                return Err(
                    self.error_at(format!("{at}.python_bin"), format!("`{python}` is not an absolute path"))
                );
            }
            let fs = &profile.fs_defaults;
            if let Some(cwd) = &fs.cwd
                && !cwd.starts_with('/')
            {
                return Err(self
                    .error_at(format!("{at}.fs_defaults.cwd"), format!("`{cwd}` is not an absolute path")));
            }
            for (list, paths) in [
                ("read_allow", &fs.read_allow),
                ("write_allow", &fs.write_allow),
                ("protected_deny", &fs.protected_deny),
            ] {
                for (i, path) in paths.iter().enumerate() {
                    if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
                        return Err(self.error_at(
                            format!("{at}.fs_defaults.{list}[{i}]"),
                            format!("`{path}` is not an absolute path without `..`"),
                        ));
                    }
                }
            }
            let limits = &profile.limits_defaults;
            let checks = [
                (
                    "timeout_sec",
                    limits.timeout_sec.is_some_and(|v| v == 0 || v > 86_400),
                    "1 to 86400 seconds",
                ),
                (
                    "cpu_max_percent",
                    limits.cpu_max_percent.is_some_and(|v| v == 0 || v > 100_000),
                    "1 to 100000 (percent of one CPU)",
                ),
                (
                    "mem_max_mb",
                    limits.mem_max_mb.is_some_and(|v| !(16..=1 << 24).contains(&v)),
                    "16 MB to 16 TB",
                ),
                ("pids_max", limits.pids_max.is_some_and(|v| v == 0), "at least 1"),
            ];
            for (key, bad, range) in checks {
                if bad {
                    return Err(self.error_at(
                        format!("{at}.limits_defaults.{key}"),
                        format!("`{key}` must be {range}"),
                    ));
                }
            }
        }
        for (name, capability) in &self.model.capabilities {
            let at = format!("capabilities.{name}");
            if capability.kind != "python" {
                return Err(self.error_at(
                    format!("{at}.type"),
                    format!("capability type `{}` is not known (the one type is `python`)", capability.kind),
                ));
            }
            if !self.model.profiles.contains_key(&capability.profile) {
                return Err(self.error_at(
                    format!("{at}.profile"),
                    format!("no profile named `{}` in `profiles`", capability.profile),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn the_sections_are_checked_with_their_place() {
        let err = Policy::parse(Path::new("p.yaml"), "profiles:\n  p:\n    syscall_profile: nope\n")
            .expect_err("missing syscall profile");
        assert!(err.to_string().starts_with("p.yaml:3:22: no profile named `nope`"), "{err}");
        let err =
            Policy::parse(Path::new("p.yaml"), "profiles:\n  p:\n    limits_defaults: { mem_max_mb: 1 }\n")
                .expect_err("tiny memory");
        assert!(err.to_string().contains("`mem_max_mb` must be"), "{err}");
        let err =
            Policy::parse(Path::new("p.yaml"), "profiles:\n  p:\n    fs_defaults: { read_allow: [work] }\n")
                .expect_err("relative");
        assert!(err.to_string().contains("not an absolute path"), "{err}");
        let err =
            Policy::parse(Path::new("p.yaml"), "profiles:\n  p:\n    fs_defualts: {}\n").expect_err("typo");
        assert!(err.to_string().starts_with("p.yaml:3:"), "{err}");
        let err = Policy::parse(Path::new("p.yaml"), "capabilities:\n  c: { type: python, profile: p }\n")
            .expect_err("missing profile");
        assert!(err.to_string().contains("no profile named `p`"), "{err}");
    }

    #[test]
    fn capabilities_limit_the_interpreter_arguments() {
        let cap = Capability {
            kind: "python".into(),
            profile: "p".into(),
            allowed_python_argv: vec!["-c".into(), "*.py".into()],
        };
        assert!(cap.allows("-c"));
        assert!(!cap.allows("-m"));
        assert!(cap.allows("/work/run.py"));
        assert!(!cap.allows("/work/run.sh"));
        let exact = Capability { allowed_python_argv: vec!["script.py".into()], ..cap };
        assert!(exact.allows("script.py") && exact.allows("/work/script.py") && !exact.allows("other.py"));
    }
}
