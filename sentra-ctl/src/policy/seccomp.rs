//! Seccomp profiles (`seccomp_profiles:`) compiled to the filters the launcher installs.
//!
//! A profile resolves (through its `extends` chain) to one action per system call, possibly
//! depending on argument masks (`conditional`), and a default. The kernel runs every installed filter
//! and keeps the most restrictive answer (kernel/seccomp.c, `seccomp_run_filters`), and a seccompiler
//! filter has one action for matches and one for the rest; so a profile becomes one filter per
//! action stronger than `allow` (log, deny, trap), each answering its action exactly when the
//! profile's answer is at least that strong. Conditions are masked comparisons; "no condition
//! matched" is spelled bit by bit, so each filter's rules are plain disjunctions of conjunctions.
//!
//! Every profile also gets what no profile may leave out: `clone3` answers `ENOSYS` (its flags sit in
//! memory a filter cannot read, and libc falls back to `clone`, whose flags it can), the `io_uring`
//! calls are denied (their operations never pass through seccomp), other architectures' entry points
//! kill the process (seccompiler's architecture check) and, on `x86_64`, so do x32 numbers
//! (`__X32_SYSCALL_BIT`: the same architecture value, other numbers).

use std::{collections::BTreeMap, str::FromStr as _};

use seccompiler::{
    BpfProgram, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

use super::{
    Policy, PolicyError,
    model::{SeccompAction, SeccompProfile, SyscallCondition},
};

/// System calls every profile denies, whatever it says.
pub const ALWAYS_DENIED: [&str; 3] = ["io_uring_setup", "io_uring_enter", "io_uring_register"];
/// The call every profile answers with `ENOSYS`.
pub const NOT_IMPLEMENTED: &str = "clone3";
/// What the launcher itself calls between installing the filters and the exec: a profile must let
/// them through.
pub const LAUNCHER_NEEDS: [&str; 3] = ["sendmsg", "close", "execve"];

/// Conjunctions a profile may need for one system call before it is refused as too complex.
const MAX_CONJUNCTIONS: usize = 256;

/// Strength of an action: the kernel keeps the strongest answer of all filters (trap, errno, user
/// notification, log, allow, in that order).
fn strength(action: SeccompAction) -> u8 {
    match action {
        SeccompAction::Allow => 0,
        SeccompAction::Log => 1,
        SeccompAction::Deny => 2,
        SeccompAction::Trap => 3,
    }
}

/// Where a system call name exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// On the architecture this binary runs on.
    Here,
    /// Only on another supported architecture (`x86_64`, `aarch64`): nothing to filter here.
    Elsewhere,
    /// Nowhere: a typo.
    Nowhere,
}

/// C library function names that policies use for the system call behind them (glibc's `fstatat`
/// is the `newfstatat` system call on both 64-bit architectures, `include/uapi/asm-generic/unistd.h`
/// and `arch/x86/entry/syscalls/syscall_64.tbl`).
const ALIASES: [(&str, &str); 6] = [
    ("fstatat", "newfstatat"),
    ("fstatat64", "newfstatat"),
    ("pread", "pread64"),
    ("pwrite", "pwrite64"),
    ("prlimit", "prlimit64"),
    ("fadvise64_64", "fadvise64"),
];

/// The system call a policy's name stands for.
#[must_use]
pub fn canonical(name: &str) -> &str {
    ALIASES.iter().find(|(alias, _)| *alias == name).map_or(name, |(_, syscall)| syscall)
}

/// The number of a system call on this architecture.
#[must_use]
pub fn number(name: &str) -> Option<i64> {
    syscalls::Sysno::from_str(canonical(name)).ok().map(|s| i64::from(s.id()))
}

/// The name of a system call number on this architecture.
#[must_use]
pub fn name(number: i32) -> Option<&'static str> {
    usize::try_from(number).ok().and_then(syscalls::Sysno::new).map(|s| s.name())
}

/// Whether `name` is a system call here, elsewhere, or nowhere.
#[must_use]
pub fn known(name: &str) -> Known {
    let name = canonical(name);
    if number(name).is_some() {
        Known::Here
    } else if syscalls::x86_64::Sysno::from_str(name).is_ok()
        || syscalls::aarch64::Sysno::from_str(name).is_ok()
    {
        Known::Elsewhere
    } else {
        Known::Nowhere
    }
}

/// One system call's answer in a resolved profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The answer when no condition matches.
    pub base: SeccompAction,
    /// Conditions with their own answers; the strongest matching one decides.
    pub conditions: Vec<SyscallCondition>,
    /// Listed in `deny_dangerous`.
    pub dangerous: bool,
}

/// A profile with its `extends` chain applied.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub name: String,
    pub default: SeccompAction,
    /// Every system call a list names (on any architecture), by name.
    pub syscalls: BTreeMap<String, Entry>,
}

/// Errors compiling a profile.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("no seccomp profile named `{0}` (the policy defines: {1})")]
    Unknown(String, String),
    #[error("profile `{profile}`: the conditions on `{syscall}` need more than {MAX_CONJUNCTIONS} rules")]
    TooComplex { profile: String, syscall: String },
    #[error(
        "profile `{profile}` denies `{syscall}`, which {who} calls after installing the filter: allow it"
    )]
    LauncherNeeds { profile: String, syscall: &'static str, who: &'static str },
    #[error("profile `{profile}`: seccompiler: {source}")]
    Backend {
        profile: String,
        #[source]
        source: seccompiler::BackendError,
    },
}

impl Policy {
    /// The profile `name` with its `extends` chain applied (parents first; a child's lists replace
    /// its parents' answers for the calls they name; the nearest `default` counts, else `allow`).
    ///
    /// # Errors
    /// No such profile.
    pub fn seccomp_profile(&self, name: &str) -> Result<Resolved, SeccompError> {
        resolve(&self.model.seccomp_profiles, name)
    }

    /// The sandbox profile `name` (`syscall_profiles`), resolved as [`Policy::seccomp_profile`] does.
    ///
    /// # Errors
    /// No such profile.
    pub fn syscall_profile(&self, name: &str) -> Result<Resolved, SeccompError> {
        resolve(&self.model.syscall_profiles, name)
    }
}

fn resolve(profiles: &BTreeMap<String, SeccompProfile>, name: &str) -> Result<Resolved, SeccompError> {
    let mut chain: Vec<&SeccompProfile> = Vec::new();
    let mut next = Some(name);
    while let Some(current) = next {
        let profile = profiles.get(current).ok_or_else(|| {
            SeccompError::Unknown(
                current.to_string(),
                profiles.keys().cloned().collect::<Vec<_>>().join(", "),
            )
        })?;
        // Cycles are rejected when the policy is loaded; this bound only keeps a bug finite.
        if chain.len() > profiles.len() {
            break;
        }
        chain.push(profile);
        next = profile.extends.as_deref();
    }
    let mut resolved =
        Resolved { name: name.to_string(), default: SeccompAction::Allow, syscalls: BTreeMap::new() };
    let mut default = None;
    for profile in chain.iter().rev() {
        default = profile.default.or(default);
        let mut own: BTreeMap<&str, Entry> = BTreeMap::new();
        let lists = [
            (&profile.allow, SeccompAction::Allow, false),
            (&profile.deny, SeccompAction::Deny, false),
            (&profile.deny_dangerous, SeccompAction::Deny, true),
        ];
        for (names, action, dangerous) in lists {
            for syscall in names {
                let entry = own.entry(canonical(syscall)).or_insert(Entry {
                    base: action,
                    conditions: Vec::new(),
                    dangerous,
                });
                // Named in two lists of one profile: the stronger answer.
                if strength(action) > strength(entry.base) {
                    entry.base = action;
                }
                entry.dangerous |= dangerous;
            }
        }
        // Conditions add to the inherited ones, unless this profile's lists name the call anew.
        for (syscall, conditions) in &profile.conditional {
            let syscall = canonical(syscall);
            let inherited = resolved.syscalls.get(syscall).cloned();
            let entry = own.entry(syscall).or_insert_with(|| {
                inherited.unwrap_or(Entry {
                    base: default.unwrap_or(SeccompAction::Allow),
                    conditions: Vec::new(),
                    dangerous: false,
                })
            });
            entry.conditions.extend(conditions.iter().cloned());
        }
        for (syscall, entry) in own {
            resolved.syscalls.insert(syscall.to_string(), entry);
        }
    }
    resolved.default = default.unwrap_or(SeccompAction::Allow);
    resolved.deny_always_denied();
    Ok(resolved)
}

/// `(args[arg] & mask) == value`, as one comparison.
type Atom = (u8, u64, u64);
/// A disjunction of conjunctions; `[]` is false, `[[]]` true.
type Dnf = Vec<Vec<Atom>>;

fn matches(c: &SyscallCondition) -> Dnf {
    if c.value & !c.mask == 0 { vec![vec![(c.arg, c.mask, c.value)]] } else { Vec::new() }
}

/// `(args[arg] & mask) != value`: some bit of the mask differs.
fn differs(c: &SyscallCondition) -> Dnf {
    if c.value & !c.mask != 0 {
        return vec![Vec::new()];
    }
    (0..64)
        .map(|bit| 1u64 << bit)
        .filter(|bit| c.mask & bit != 0)
        .map(|bit| vec![(c.arg, bit, (c.value & bit) ^ bit)])
        .collect()
}

fn and(a: &Dnf, b: &Dnf, limit: usize) -> Option<Dnf> {
    let mut out = Vec::with_capacity(a.len() * b.len());
    for x in a {
        for y in b {
            if out.len() == limit {
                return None;
            }
            out.push(x.iter().chain(y).copied().collect());
        }
    }
    Some(out)
}

fn none_of<'a>(mut conditions: impl Iterator<Item = &'a SyscallCondition>) -> Option<Dnf> {
    conditions.try_fold(vec![Vec::new()], |acc, c| and(&acc, &differs(c), MAX_CONJUNCTIONS))
}

impl Entry {
    /// When this call's answer is at least `level` strong.
    fn at_least(&self, level: u8) -> Option<Dnf> {
        let mut out: Dnf =
            self.conditions.iter().filter(|c| strength(c.action) >= level).flat_map(matches).collect();
        if strength(self.base) >= level {
            out.extend(none_of(self.conditions.iter())?);
        }
        Some(out)
    }

    /// When this call's answer is weaker than `level`.
    fn below(&self, level: u8) -> Option<Dnf> {
        let stronger: Vec<&SyscallCondition> =
            self.conditions.iter().filter(|c| strength(c.action) >= level).collect();
        let none_stronger = none_of(stronger.iter().copied())?;
        let mut out = Dnf::new();
        for c in self.conditions.iter().filter(|c| strength(c.action) < level) {
            out.extend(and(&matches(c), &none_stronger, MAX_CONJUNCTIONS)?);
        }
        if strength(self.base) < level {
            out.extend(none_of(self.conditions.iter())?);
        }
        (out.len() <= MAX_CONJUNCTIONS).then_some(out)
    }
}

/// The filters of a profile, in the order to install them; the last one (when `notify`) is the
/// deny filter, whose answer goes to the launcher's listener.
pub struct Compiled {
    pub profile: String,
    /// `(what it answers, program)`.
    pub filters: Vec<(&'static str, BpfProgram)>,
    /// Names the profile lists that do not exist on this architecture (nothing to filter).
    pub absent_here: Vec<String>,
}

const fn target() -> TargetArch {
    #[cfg(target_arch = "aarch64")]
    {
        TargetArch::aarch64
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        TargetArch::x86_64
    }
}

fn rules(dnf: Dnf) -> Vec<SeccompRule> {
    if dnf.iter().any(Vec::is_empty) {
        // One conjunction is always true: the call matches whatever its arguments.
        return Vec::new();
    }
    dnf.into_iter()
        .filter_map(|conjunction| {
            let conditions = conjunction
                .into_iter()
                .filter_map(|(arg, mask, value)| {
                    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(mask), value)
                        .ok()
                })
                .collect();
            SeccompRule::new(conditions).ok()
        })
        .collect()
}

/// The `x86_64` guard against x32 numbers (`nr >= __X32_SYSCALL_BIT`, arch/x86/include/uapi/asm/unistd.h):
/// seccompiler's filters match numbers exactly, so a range needs these four instructions.
#[cfg(target_arch = "x86_64")]
fn x32_guard() -> BpfProgram {
    use seccompiler::sock_filter;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    #[expect(clippy::cast_possible_truncation, reason = "BPF opcodes are 16-bit by definition")]
    let op = |code: u32| code as u16;
    vec![
        // A = seccomp_data.nr (offset 0, include/uapi/linux/seccomp.h).
        sock_filter { code: op(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS), jt: 0, jf: 0, k: 0 },
        sock_filter {
            code: op(libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K),
            jt: 0,
            jf: 1,
            k: X32_SYSCALL_BIT,
        },
        sock_filter {
            code: op(libc::BPF_RET | libc::BPF_K),
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_KILL_PROCESS,
        },
        sock_filter { code: op(libc::BPF_RET | libc::BPF_K), jt: 0, jf: 0, k: libc::SECCOMP_RET_ALLOW },
    ]
}

impl Resolved {
    /// A profile that allows everything but what no profile may leave out.
    #[must_use]
    pub fn permissive(name: &str) -> Self {
        let mut resolved =
            Self { name: name.to_string(), default: SeccompAction::Allow, syscalls: BTreeMap::new() };
        resolved.deny_always_denied();
        resolved
    }

    /// Denies [`ALWAYS_DENIED`], whatever the profile said of them.
    fn deny_always_denied(&mut self) {
        for syscall in ALWAYS_DENIED {
            self.syscalls.insert(
                syscall.to_string(),
                Entry { base: SeccompAction::Deny, conditions: Vec::new(), dangerous: true },
            );
        }
    }

    /// Compiles the profile for this architecture; with `notify`, denials go to a user-notification
    /// listener (the launcher answers `EPERM` and records them) instead of failing in the kernel.
    ///
    /// # Errors
    /// Conditions too complex, or a profile that denies what the launcher needs before the exec.
    pub fn compile(&self, notify: bool) -> Result<Compiled, SeccompError> {
        self.compile_for(notify, &LAUNCHER_NEEDS, "the launcher (to hand over the audit channel, then exec)")
    }

    /// As [`Resolved::compile`], for a caller that needs `needs` between installing the filters and
    /// its exec (`who` names it in the error).
    ///
    /// # Errors
    /// Conditions too complex, or a profile that denies one of `needs`.
    pub fn compile_for(
        &self,
        notify: bool,
        needs: &[&'static str],
        who: &'static str,
    ) -> Result<Compiled, SeccompError> {
        let mut absent_here = Vec::new();
        let mut numbered: Vec<(i64, &Entry)> = Vec::new();
        for (syscall, entry) in &self.syscalls {
            match number(syscall) {
                Some(nr) => numbered.push((nr, entry)),
                None => absent_here.push(syscall.clone()),
            }
        }
        for &needed in needs {
            let denied = match self.syscalls.get(needed) {
                Some(entry) => entry.at_least(strength(SeccompAction::Deny)).is_none_or(|d| !d.is_empty()),
                None => strength(self.default) >= strength(SeccompAction::Deny),
            };
            if denied {
                return Err(SeccompError::LauncherNeeds { profile: self.name.clone(), syscall: needed, who });
            }
        }
        let backend = |source| SeccompError::Backend { profile: self.name.clone(), source };
        let too_complex = |nr: i64| SeccompError::TooComplex {
            profile: self.name.clone(),
            syscall: i32::try_from(nr).ok().and_then(name).unwrap_or("?").to_string(),
        };
        let mut filters: Vec<(&'static str, BpfProgram)> = Vec::new();
        #[cfg(target_arch = "x86_64")]
        filters.push(("kill: x32 system calls", x32_guard()));
        let clone3 = number(NOT_IMPLEMENTED).into_iter().map(|nr| (nr, Vec::new())).collect();
        let filter = SeccompFilter::new(
            clone3,
            seccompiler::SeccompAction::Allow,
            seccompiler::SeccompAction::Errno(u32::try_from(libc::ENOSYS).unwrap_or(38)),
            target(),
        )
        .map_err(backend)?;
        filters.push(("ENOSYS: clone3", filter.try_into().map_err(backend)?));
        let deny = if notify {
            seccompiler::SeccompAction::Trace(0)
        } else {
            seccompiler::SeccompAction::Errno(u32::try_from(libc::EPERM).unwrap_or(1))
        };
        for (action, label, level) in [
            (seccompiler::SeccompAction::Log, "log", SeccompAction::Log),
            (seccompiler::SeccompAction::Trap, "trap", SeccompAction::Trap),
            (deny, "deny", SeccompAction::Deny),
        ] {
            // A filter per action the profile uses: the stronger filters already cover their calls.
            let used = self.default == level
                || self
                    .syscalls
                    .values()
                    .any(|e| e.base == level || e.conditions.iter().any(|c| c.action == level));
            if !used {
                continue;
            }
            let level = strength(level);
            let inverted = strength(self.default) >= level;
            let mut map = BTreeMap::new();
            for &(nr, entry) in &numbered {
                let dnf = if inverted { entry.below(level) } else { entry.at_least(level) };
                let dnf = dnf.ok_or_else(|| too_complex(nr))?;
                if !dnf.is_empty() {
                    map.insert(nr, rules(dnf));
                }
            }
            if !inverted && map.is_empty() {
                continue;
            }
            let (on_match, otherwise) = if inverted {
                (seccompiler::SeccompAction::Allow, action)
            } else {
                (action, seccompiler::SeccompAction::Allow)
            };
            let filter = SeccompFilter::new(map, otherwise, on_match, target()).map_err(backend)?;
            let mut program: BpfProgram = filter.try_into().map_err(backend)?;
            if notify && label == "deny" {
                to_user_notification(&mut program);
            }
            filters.push((label, program));
        }
        Ok(Compiled { profile: self.name.clone(), filters, absent_here })
    }
}

/// seccompiler has no action for user notification: the deny filter is compiled with
/// `SECCOMP_RET_TRACE` (which nothing else in it returns) and its returns rewritten.
fn to_user_notification(program: &mut BpfProgram) {
    #[expect(clippy::cast_possible_truncation, reason = "BPF opcodes are 16-bit by definition")]
    let ret = (libc::BPF_RET | libc::BPF_K) as u16;
    for instruction in program.iter_mut() {
        if instruction.code == ret && instruction.k == libc::SECCOMP_RET_TRACE {
            instruction.k = libc::SECCOMP_RET_USER_NOTIF;
        }
    }
}

/// Validates a policy's profiles: every name exists on some supported architecture.
///
/// # Errors
/// A name that is no system call anywhere, with its line and column.
pub fn validate_names(policy: &Policy) -> Result<(), PolicyError> {
    for (section, profiles) in policy.seccomp_sections() {
        validate_section_names(policy, section, profiles)?;
    }
    Ok(())
}

fn validate_section_names(
    policy: &Policy,
    section: &str,
    profiles: &BTreeMap<String, SeccompProfile>,
) -> Result<(), PolicyError> {
    for (name, profile) in profiles {
        let lists =
            [("allow", &profile.allow), ("deny", &profile.deny), ("deny_dangerous", &profile.deny_dangerous)];
        for (list, names) in lists {
            for (i, syscall) in names.iter().enumerate() {
                if known(syscall) == Known::Nowhere {
                    return Err(policy.error_at(
                        format!("{section}.{name}.{list}[{i}]"),
                        format!("`{syscall}` is not a system call on x86_64 or aarch64"),
                    ));
                }
            }
        }
        for syscall in profile.conditional.keys() {
            if known(syscall) == Known::Nowhere {
                return Err(policy.error_at(
                    format!("{section}.{name}.conditional.{syscall}"),
                    format!("`{syscall}` is not a system call on x86_64 or aarch64"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn policy(text: &str) -> Policy {
        Policy::parse(Path::new("p.yaml"), text).expect("valid policy")
    }

    #[test]
    fn names_are_checked_on_both_architectures() {
        assert_eq!(known("openat"), Known::Here);
        // `open` exists on x86_64 only, `renameat` on both; nothing calls itself `opne`.
        assert_ne!(known("open"), Known::Nowhere);
        assert_eq!(known("opne"), Known::Nowhere);
        let err = Policy::parse(Path::new("p.yaml"), "seccomp_profiles:\n  a: { deny: [ptrace, opne] }\n")
            .expect_err("typo");
        assert!(err.to_string().starts_with("p.yaml:2:23: `opne` is not a system call"), "{err}");
    }

    #[test]
    fn extends_applies_parents_first_and_children_replace() {
        let p = policy(
            "seccomp_profiles:\n  base:\n    default: allow\n    deny: [socket, ptrace]\n    conditional:\n      clone: [ { arg: 0, mask: 0x10000, value: 0, action: deny } ]\n  child:\n    extends: base\n    allow: [socket]\n",
        );
        let child = p.seccomp_profile("child").expect("resolves");
        assert_eq!(child.default, SeccompAction::Allow);
        assert_eq!(child.syscalls["socket"].base, SeccompAction::Allow);
        assert_eq!(child.syscalls["ptrace"].base, SeccompAction::Deny);
        assert_eq!(child.syscalls["clone"].conditions.len(), 1);
        let grandchild = policy(
            "seccomp_profiles:\n  a:\n    conditional: { clone: [ { arg: 0, mask: 1, value: 1, action: deny } ] }\n  b:\n    extends: a\n    conditional: { clone: [ { arg: 0, mask: 2, value: 0, action: deny } ] }\n",
        );
        assert_eq!(
            grandchild.seccomp_profile("b").expect("resolves").syscalls["clone"].conditions.len(),
            2,
            "conditions add up"
        );
        for always in ALWAYS_DENIED {
            assert_eq!(child.syscalls[always].base, SeccompAction::Deny);
        }
        assert!(p.seccomp_profile("nope").is_err());
    }

    #[test]
    fn conditions_become_exact_rules() {
        let c = SyscallCondition { arg: 0, mask: 0b110, value: 0b010, action: SeccompAction::Deny };
        // Differs: bit 1 clear, or bit 2 set.
        assert_eq!(differs(&c), vec![vec![(0, 0b010, 0)], vec![(0, 0b100, 0b100)]]);
        let entry = Entry { base: SeccompAction::Allow, conditions: vec![c.clone()], dangerous: false };
        assert_eq!(entry.at_least(2), Some(vec![vec![(0, 0b110, 0b010)]]));
        assert_eq!(entry.below(2), Some(differs(&c)));
        // A value outside the mask never matches.
        let never = SyscallCondition { value: 0b1000, ..c };
        assert!(matches(&never).is_empty());
    }

    #[test]
    fn a_profile_that_blocks_the_launcher_is_refused() {
        let p = policy("seccomp_profiles:\n  a: { default: deny, allow: [read, write] }\n");
        let err = p.seccomp_profile("a").expect("resolves").compile(true).err().expect("refused");
        assert!(matches!(err, SeccompError::LauncherNeeds { .. }), "{err}");
    }

    #[test]
    fn every_profile_gets_the_mandatory_filters() {
        let p = policy("seccomp_profiles:\n  a: { default: allow }\n");
        let compiled = p.seccomp_profile("a").expect("resolves").compile(true).expect("compiles");
        let labels: Vec<&str> = compiled.filters.iter().map(|(l, _)| *l).collect();
        assert!(labels.contains(&"ENOSYS: clone3") && labels.contains(&"deny"), "{labels:?}");
        let deny = &compiled.filters.last().expect("deny").1;
        assert!(deny.iter().any(|i| i.k == libc::SECCOMP_RET_USER_NOTIF));
        assert!(deny.iter().all(|i| i.k != libc::SECCOMP_RET_TRACE));
    }
}
