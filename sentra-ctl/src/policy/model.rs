//! The policy file's structure. One model for both layers: the original Sentra keys (shell layer) and
//! the kernel sections (`exec`, …). Unknown keys are errors, never silently ignored.

use std::collections::BTreeMap;

/// `enforce` or `audit`, `allow` or `deny`: the kernel's own enums, read from YAML by their names.
pub use sentra_common::settings::{Effect, Mode};
use serde::{Deserialize, Serialize};

/// A version written as `"2.0"` or `2.0`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Version {
    Text(String),
    Number(f64),
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Text(text) => f.write_str(text),
            Self::Number(number) => write!(f, "{number}"),
        }
    }
}

/// The whole policy file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    pub version: Option<Version>,
    #[serde(default)]
    pub mode: Mode,
    /// Effect for commands no rule matches (shell layer; also the kernel's unless `exec.default` says).
    pub default: Option<Effect>,
    pub rate_limit: Option<RateLimit>,
    /// The original Sentra rules: first match wins, unless `evaluation` says otherwise.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// How the rules decide a command that several of them match.
    #[serde(default)]
    pub evaluation: Evaluation,
    /// Kernel exec governance.
    pub exec: Option<ExecSection>,
    /// Kernel network governance (outbound destinations; DNS through the controller's resolver).
    pub network: Option<super::network::NetworkSection>,
    /// Where and for whom the policy applies.
    #[serde(default)]
    pub governed: GovernedSection,
    /// What the agent may send through the controller's mail broker (`email`, `send-email`).
    pub email: Option<super::email::EmailSection>,
    /// Seccomp profiles for the launcher (validated here; applied by the launcher).
    #[serde(default)]
    pub seccomp_profiles: BTreeMap<String, SeccompProfile>,
    /// Python sandbox profiles (`sentra python --profile NAME`).
    #[serde(default)]
    pub profiles: BTreeMap<String, super::sandbox::SandboxProfile>,
    /// Named ways to reach a sandbox profile, each limiting how the interpreter may be invoked.
    #[serde(default)]
    pub capabilities: BTreeMap<String, super::sandbox::Capability>,
    /// Seccomp profiles for the sandbox (the original's `syscall_profiles`; the same compiler as
    /// `seccomp_profiles`).
    #[serde(default)]
    pub syscall_profiles: BTreeMap<String, SeccompProfile>,
    // Sections of the original format that this Sentra does not implement: accepted with a warning.
    pub cost_routing: Option<Unimplemented>,
    pub launcher: Option<Unimplemented>,
}

/// How the shell rules decide a command several of them match.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Evaluation {
    /// The first matching rule decides (the original Sentra's semantics).
    #[default]
    FirstMatch,
    /// Any matching deny rule decides; else the first matching allow rule (IAM-style).
    DenyOverrides,
}

/// A section this Sentra does not implement: whatever it holds is skipped, only its presence is kept
/// (to warn about it). Keeping its content would give the parsed-policy cache a value JSON cannot
/// carry faithfully (YAML mappings may have non-string keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unimplemented;

impl<'de> Deserialize<'de> for Unimplemented {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer).map(|_| Self)
    }
}

impl Serialize for Unimplemented {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bool(true)
    }
}

/// `governed:`: which cgroups the controller governs with this policy, and which identities the shell
/// layer accepts under it.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GovernedSection {
    /// Cgroup names below `<cgroup2>/sentra/`; each is governed with all its descendants. Empty means
    /// `[agent]`; `sentra-ctl daemon --cgroup NAME` overrides the list.
    #[serde(default)]
    pub cgroups: Vec<String>,
    /// Identities `sentra`/`sentra-shell` accept; a shell running as any other identity refuses every
    /// command (the identity can come from `$SENTRA_IDENTITY`, which the agent can set). Empty: any.
    #[serde(default)]
    pub identities: Vec<String>,
    /// The user `sentra-ctl launch` runs the agent as (`--user` overrides it).
    pub user: Option<String>,
    /// Whether `launch` may run the agent as root (refused unless this says so).
    #[serde(default)]
    pub allow_root: bool,
    /// The seccomp profile `launch` applies (`--seccomp-profile` overrides it) [default: `gateway`
    /// when the policy defines it].
    pub seccomp_profile: Option<String>,
}

/// The governed cgroup when a policy names none.
pub const DEFAULT_CGROUP: &str = "agent";

impl GovernedSection {
    /// The cgroup names to govern (the default when none are listed).
    #[must_use]
    pub fn cgroup_names(&self) -> Vec<String> {
        if self.cgroups.is_empty() { vec![DEFAULT_CGROUP.to_string()] } else { self.cgroups.clone() }
    }

    /// Whether the shell layer applies this policy to `identity`.
    #[must_use]
    pub fn admits(&self, identity: &str) -> bool {
        self.identities.is_empty() || self.identities.iter().any(|i| i == identity)
    }
}

/// `rate_limit: {max_commands, window_seconds}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub max_commands: u32,
    pub window_seconds: u64,
}

/// One original rule.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub id: String,
    #[serde(rename = "match", default)]
    pub matcher: RuleMatch,
    pub effect: Effect,
    pub reason: Option<String>,
}

/// `match:` of an original rule; every present field must match (regexes).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleMatch {
    pub executable: Option<String>,
    pub args_pattern: Option<String>,
    pub identity: Option<String>,
}

/// `exec:`: what may be executed, decided in the kernel on the file actually executed.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExecSection {
    /// Effect when no exec entry covers the file; defaults to the top-level `default`, then `deny`.
    pub default: Option<Effect>,
    /// Directories searched, in order, for `name` entries (like `PATH`).
    #[serde(default)]
    pub path: Vec<String>,
    #[serde(default)]
    pub allow: Vec<ExecEntry>,
    #[serde(default)]
    pub deny: Vec<ExecEntry>,
    /// Absolute files and directories (everything below) from which governed tasks may map executable
    /// code (shared libraries, Python C extensions, npm native modules) besides the programs the exec
    /// rules allow; enforced on the `lsm` backend. Absent: the system library directories and the
    /// `lib` directory beside each allowed program's `bin`.
    pub libraries: Option<Vec<String>>,
}

/// One exec entry: exactly one of `path`, `dir`, `name`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExecEntry {
    pub id: String,
    /// An absolute file path (symlinks resolved when the policy is loaded).
    pub path: Option<String>,
    /// An absolute directory: everything below it.
    pub dir: Option<String>,
    /// A program name, resolved through `exec.path`.
    pub name: Option<String>,
    pub reason: Option<String>,
    /// An allow whose target may be absent when the policy is loaded (software installed later, such
    /// as the Node `OpenClaw` runs on): noted instead of rejected; it applies from the next load or reload after
    /// the target appears.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
    /// An allow that lapses at this time (RFC 3339; `sentra-ctl allow --for`): from then on every load
    /// leaves it out, and the controller reloads at that moment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

/// One seccomp profile of the original format.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SeccompProfile {
    /// What happens to system calls no list names.
    pub default: Option<SeccompAction>,
    /// Another profile this one starts from.
    pub extends: Option<String>,
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    #[serde(default)]
    pub deny_dangerous: Vec<String>,
    /// Per-syscall argument conditions.
    #[serde(default)]
    pub conditional: BTreeMap<String, Vec<SyscallCondition>>,
    pub network_policy: Option<NetworkPolicy>,
}

/// `{arg, mask, value, action}`: the action applies when `(args[arg] & mask) == value`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SyscallCondition {
    pub arg: u8,
    pub mask: u64,
    pub value: u64,
    pub action: SeccompAction,
}

/// What a seccomp profile does with a system call (the original's four actions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SeccompAction {
    Allow,
    /// Fails with `EPERM`.
    Deny,
    /// Allowed and logged by the kernel.
    Log,
    /// `SIGSYS`.
    Trap,
}

/// The original's per-profile network list (`"*.whatsapp.net:443"`), which it only printed. Here it is
/// the kernel network allowlist of every cgroup launched with the profile, in place of the `network:`
/// section (see `policy::network`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkPolicy {
    /// Loopback connections allowed.
    #[serde(default)]
    pub allow_loopback: bool,
    #[serde(default)]
    pub allow_outbound: Vec<String>,
}
