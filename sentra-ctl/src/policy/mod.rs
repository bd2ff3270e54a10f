//! The policy: parsing with precise errors, and compilation to the kernel's maps.

pub mod cache;
pub mod edit;
pub mod email;
pub mod exact;
pub mod exec;
pub mod learn;
pub mod loader_env;
pub mod locate;
pub mod model;
pub mod multicall;
pub mod network;
pub mod overlap;
pub mod required;
pub mod sandbox;
pub mod seccomp;
pub mod shell;

use std::{
    fmt,
    path::{Path, PathBuf},
};

pub use model::PolicyFile;

/// A policy that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{file}: cannot read policy")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", Located::fmt_line(.0))]
    Invalid(Located),
}

/// An error at a place in a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub file: PathBuf,
    /// 1-based; 0 when the place is unknown.
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl Located {
    fn fmt_line(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.column, self.message)
        }
    }
}

/// A warning about a policy that is still usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub message: String,
}

/// A parsed policy with its source.
#[derive(Debug, Clone)]
pub struct Policy {
    pub file: PathBuf,
    pub model: PolicyFile,
    pub warnings: Vec<Warning>,
    /// Content fingerprint (FNV-1a 64), reported by `status`.
    pub hash: u64,
    /// The exact executable names of each rule in `model.rules` (same index), when its executable
    /// pattern is such a list ([`exact::exact_names`]): the one reading of those patterns that the
    /// shell index, the kernel split and shadowing warnings share.
    pub rule_names: cache::RuleNames,
    /// Places of values in the text, for errors found after parsing.
    pub locator: std::sync::Arc<locate::Locator>,
    /// Whether the parsed-policy [`cache`] needs nothing more from this policy: it was read from
    /// there, or storing it was done or tried (only root stores).
    pub cached: bool,
    /// Allow entries left out because their `expires` has passed (`list: id`).
    pub lapsed: Vec<String>,
}

impl Policy {
    /// Reads and parses `file`. A valid policy's parsed form is kept in the [`cache`] (written when
    /// running as root), so later loads of the same text skip the YAML parser.
    ///
    /// # Errors
    /// The file cannot be read, or is not a valid policy (with line and column).
    pub fn load(file: &Path) -> Result<Self, PolicyError> {
        let mut policy = Self::read(file)?;
        policy.remember();
        Ok(policy)
    }

    /// [`Self::load`] without storing a newly parsed policy in the cache: the caller does that with
    /// [`Self::remember`] once no one waits (the controller, after replying to a reload).
    ///
    /// # Errors
    /// The file cannot be read, or is not a valid policy (with line and column).
    pub fn read(file: &Path) -> Result<Self, PolicyError> {
        let text = read_text(file)?;
        let hash = fnv1a(text.as_bytes());
        if let Some((model, rule_names)) = cache::lookup(Path::new(cache::CACHE_DIR), hash, &text) {
            let mut policy = Self::from_model(file, text, hash, model, Some(rule_names))?;
            policy.cached = true;
            return Ok(policy);
        }
        let model = Self::parse_yaml(file, &text)?;
        Self::from_model(file, text, hash, model, None)
    }

    /// Stores this policy's parsed form in the [`cache`], unless it came from there.
    pub fn remember(&mut self) {
        if !self.cached {
            cache::store(
                Path::new(cache::CACHE_DIR),
                self.hash,
                self.locator.text(),
                &self.model,
                &self.rule_names,
            );
            self.cached = true;
        }
    }

    /// Parses policy text; `file` names it in errors.
    ///
    /// # Errors
    /// The text is empty or not a valid policy (with line and column).
    pub fn parse(file: &Path, text: &str) -> Result<Self, PolicyError> {
        if is_empty(text) {
            return Err(empty(file));
        }
        Self::from_model(file, text.to_string(), fnv1a(text.as_bytes()), Self::parse_yaml(file, text)?, None)
    }

    fn parse_yaml(file: &Path, text: &str) -> Result<PolicyFile, PolicyError> {
        serde_yaml::from_str(text).map_err(|err| {
            let (line, column) = err.location().map_or((0, 0), |loc| (loc.line(), loc.column()));
            PolicyError::Invalid(Located {
                file: file.to_path_buf(),
                line,
                column,
                message: strip_location(&err.to_string()),
            })
        })
    }

    /// The policy of a parsed model (`hash`: its text's fingerprint; `rule_names`: its rules' names
    /// when the cache had them): warnings, and the checks the YAML schema cannot express.
    fn from_model(
        file: &Path,
        text: String,
        hash: u64,
        model: PolicyFile,
        rule_names: Option<cache::RuleNames>,
    ) -> Result<Self, PolicyError> {
        let mut warnings = Vec::new();
        for (present, key) in
            [(model.cost_routing.is_some(), "cost_routing"), (model.launcher.is_some(), "launcher")]
        {
            if present {
                warnings.push(Warning {
                    message: format!("section `{key}` is not implemented by this Sentra; ignored"),
                });
            }
        }
        let rule_names = rule_names.unwrap_or_else(|| {
            model
                .rules
                .iter()
                .map(|rule| rule.matcher.executable.as_deref().and_then(exact::exact_names))
                .collect()
        });
        let policy = Self {
            file: file.to_path_buf(),
            model,
            warnings,
            hash,
            rule_names,
            locator: std::sync::Arc::new(locate::Locator::new(text)),
            cached: false,
            lapsed: Vec::new(),
        };
        let mut policy = policy;
        policy.drop_expired()?;
        policy.validate_seccomp()?;
        policy.validate_governed()?;
        policy.validate_email()?;
        policy.validate_sandbox()?;
        let mut policy = policy;
        let shadowed = policy.shadowed_rules();
        policy.warnings.extend(shadowed);
        Ok(policy)
    }

    /// Leaves out the allow entries whose `expires` has passed (each named in a warning); a time that
    /// is not RFC 3339 is an error at its place.
    fn drop_expired(&mut self) -> Result<(), PolicyError> {
        let exec: Vec<(String, Option<String>)> = self
            .model
            .exec
            .as_ref()
            .map(|e| e.allow.iter().map(|e| (e.id.clone(), e.expires.clone())).collect())
            .unwrap_or_default();
        let net: Vec<(String, Option<String>)> = self
            .model
            .network
            .as_ref()
            .map(|n| n.allow.iter().map(|e| (e.id.clone(), e.expires.clone())).collect())
            .unwrap_or_default();
        let keep_exec = self.unexpired("exec.allow", &exec)?;
        let keep_net = self.unexpired("network.allow", &net)?;
        if let Some(section) = self.model.exec.as_mut() {
            let mut keep = keep_exec.iter();
            section.allow.retain(|_| keep.next().copied().unwrap_or(true));
        }
        if let Some(section) = self.model.network.as_mut() {
            let mut keep = keep_net.iter();
            section.allow.retain(|_| keep.next().copied().unwrap_or(true));
        }
        Ok(())
    }

    /// Which of `entries` (id, `expires`) of `list` still apply; a warning for each that lapsed.
    fn unexpired(
        &mut self,
        list: &str,
        entries: &[(String, Option<String>)],
    ) -> Result<Vec<bool>, PolicyError> {
        let now = chrono::Utc::now();
        let mut keep = Vec::with_capacity(entries.len());
        for (index, (id, expires)) in entries.iter().enumerate() {
            let Some(text) = expires else {
                keep.push(true);
                continue;
            };
            let at = chrono::DateTime::parse_from_rfc3339(text).map_err(|err| {
                self.error_at(
                    format!("{list}[{index}].expires"),
                    format!("{list}: `{id}`: expires {text:?} is not an RFC 3339 time ({err})"),
                )
            })?;
            let applies = at > now;
            if !applies {
                self.lapsed.push(format!("{list}: {id}"));
                self.warnings
                    .push(Warning { message: format!("{list}: `{id}` expired at {text}; not enforced") });
            }
            keep.push(applies);
        }
        Ok(keep)
    }

    /// When the next `expires` of an allow entry in force comes (the controller reloads then).
    #[must_use]
    pub fn next_expiry(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let exec = self.model.exec.iter().flat_map(|e| e.allow.iter().map(|e| e.expires.as_ref()));
        let net = self.model.network.iter().flat_map(|n| n.allow.iter().map(|e| e.expires.as_ref()));
        exec.chain(net)
            .flatten()
            .filter_map(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
            .min()
    }

    /// Seccomp profiles: `extends` names an existing profile and never loops back; system call names
    /// are plain identifiers; argument indexes exist (0..=5).
    fn validate_seccomp(&self) -> Result<(), PolicyError> {
        for (section, profiles) in self.seccomp_sections() {
            self.validate_seccomp_section(section, profiles)?;
        }
        seccomp::validate_names(self)
    }

    /// The two sections holding seccomp profiles: the launcher's and the sandbox's.
    #[must_use]
    pub fn seccomp_sections(
        &self,
    ) -> [(&'static str, &std::collections::BTreeMap<String, model::SeccompProfile>); 2] {
        [
            ("seccomp_profiles", &self.model.seccomp_profiles),
            ("syscall_profiles", &self.model.syscall_profiles),
        ]
    }

    fn validate_seccomp_section(
        &self,
        section: &str,
        profiles: &std::collections::BTreeMap<String, model::SeccompProfile>,
    ) -> Result<(), PolicyError> {
        for (name, profile) in profiles {
            let at = format!("{section}.{name}");
            if let Some(parent) = &profile.extends
                && !profiles.contains_key(parent)
            {
                return Err(self.error_at(
                    format!("{at}.extends"),
                    format!("profile `{name}` extends `{parent}`, which is not defined"),
                ));
            }
            let mut seen = vec![name.as_str()];
            let mut next = profile.extends.as_deref();
            while let Some(parent) = next {
                if seen.contains(&parent) {
                    seen.push(parent);
                    return Err(self.error_at(
                        format!("{at}.extends"),
                        format!("`extends` cycle: {}", seen.join(" -> ")),
                    ));
                }
                seen.push(parent);
                next = profiles.get(parent).and_then(|p| p.extends.as_deref());
            }
            for (list, names) in [
                ("allow", &profile.allow),
                ("deny", &profile.deny),
                ("deny_dangerous", &profile.deny_dangerous),
            ] {
                for (i, syscall) in names.iter().enumerate() {
                    if syscall.is_empty()
                        || !syscall.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                    {
                        return Err(self.error_at(
                            format!("{at}.{list}[{i}]"),
                            format!("`{syscall}` is not a system call name"),
                        ));
                    }
                }
            }
            for (syscall, conditions) in &profile.conditional {
                for (i, condition) in conditions.iter().enumerate() {
                    if condition.arg > 5 {
                        return Err(self.error_at(
                            format!("{at}.conditional.{syscall}[{i}].arg"),
                            format!(
                                "argument index {} does not exist (system calls take at most 6)",
                                condition.arg
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// `governed:`: cgroup names are plain names (created below `<cgroup2>/sentra/`), identities are
    /// not empty, and neither list repeats itself.
    fn validate_governed(&self) -> Result<(), PolicyError> {
        let governed = &self.model.governed;
        for (i, name) in governed.cgroups.iter().enumerate() {
            let plain = !name.is_empty()
                && name != "."
                && name != ".."
                && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !plain {
                return Err(self.error_at(
                    format!("governed.cgroups[{i}]"),
                    format!(
                        "`{name}` is not a plain cgroup name (letters, digits, `-`, `_`, `.`): it is created as <cgroup2>/{}/NAME",
                        crate::cgroup::GOVERNED_PARENT
                    ),
                ));
            }
            if governed.cgroups[..i].contains(name) {
                return Err(self
                    .error_at(format!("governed.cgroups[{i}]"), format!("cgroup `{name}` is listed twice")));
            }
        }
        if let Some(profile) = &governed.seccomp_profile
            && !self.model.seccomp_profiles.contains_key(profile)
        {
            return Err(self.error_at(
                "governed.seccomp_profile",
                format!("no seccomp profile named `{profile}` in `seccomp_profiles`"),
            ));
        }
        if let Some(user) = &governed.user
            && user.trim().is_empty()
        {
            return Err(self.error_at("governed.user", "a user cannot be empty"));
        }
        for (i, identity) in governed.identities.iter().enumerate() {
            if identity.trim().is_empty() {
                return Err(self.error_at(format!("governed.identities[{i}]"), "an identity cannot be empty"));
            }
            if governed.identities[..i].contains(identity) {
                return Err(self.error_at(
                    format!("governed.identities[{i}]"),
                    format!("identity `{identity}` is listed twice"),
                ));
            }
        }
        Ok(())
    }

    /// Rules that can never fire because an earlier rule matches everything they match (first match
    /// wins), e.g. the original's `allow cat` placed before `deny cat .env`.
    fn shadowed_rules(&self) -> Vec<Warning> {
        let rules = &self.model.rules;
        let names = &self.rule_names;
        let mut warnings = Vec::new();
        for (j, later) in rules.iter().enumerate() {
            let Some(earlier) = rules[..j]
                .iter()
                .zip(names)
                .find(|(earlier, earlier_names)| {
                    covers(
                        (&earlier.matcher, earlier_names.as_deref()),
                        (&later.matcher, names[j].as_deref()),
                    )
                })
                .map(|(earlier, _)| earlier)
            else {
                continue;
            };
            let (line, column) = self.locator.find(&format!("rules[{j}]")).unwrap_or((0, 0));
            warnings.push(Warning {
                message: format!(
                    "{}:{line}:{column}: rule `{}` can never fire: the earlier rule `{}` matches everything it matches{}",
                    self.file.display(),
                    later.id,
                    earlier.id,
                    if earlier.effect == later.effect { "" } else { " and decides the opposite" }
                ),
            });
        }
        warnings
    }

    /// Deny rules that an earlier allow rule reaches first for some of the commands they match (first
    /// match wins, so those commands run), decided on the regexes ([`overlap`]) with both rules'
    /// places; e.g. the original's `allow cat` before `deny … .env`. Not part of every load (building
    /// the automata takes milliseconds per rule): `policy check` asks for it. Nothing to say under
    /// `evaluation: deny_overrides`.
    #[must_use]
    pub fn denies_reached_by_allows(&self) -> Vec<Warning> {
        /// Comparisons made before the analysis stops (generated policies of thousands of rules).
        const MAX_COMPARISONS: usize = 20_000;
        if self.model.evaluation == model::Evaluation::DenyOverrides {
            return Vec::new();
        }
        let rules = &self.model.rules;
        let names = &self.rule_names;
        let name_of = |i: usize| names.get(i).and_then(Option::as_deref);
        let mut automata = overlap::Automata::default();
        let mut warnings = Vec::new();
        let mut comparisons = 0_usize;
        // Allow rules so far: by exact executable name, and the others.
        let mut allows_named: std::collections::HashMap<&str, Vec<usize>> = std::collections::HashMap::new();
        let mut allows_other: Vec<usize> = Vec::new();
        for (j, deny) in rules.iter().enumerate() {
            if deny.effect == model::Effect::Allow {
                match name_of(j) {
                    Some(list) => list.iter().for_each(|n| allows_named.entry(n).or_default().push(j)),
                    None => allows_other.push(j),
                }
                continue;
            }
            let mut candidates: Vec<usize> = match name_of(j) {
                // An exact list meets allows naming one of its names or matching names otherwise.
                Some(list) => {
                    list.iter().filter_map(|n| allows_named.get(n.as_str())).flatten().copied().collect()
                }
                None => allows_named.values().flatten().copied().collect(),
            };
            candidates.extend(&allows_other);
            candidates.sort_unstable();
            candidates.dedup();
            let found = candidates.into_iter().find(|&i| {
                let allow = &rules[i];
                if covers((&allow.matcher, name_of(i)), (&deny.matcher, name_of(j))) {
                    // Reported as a rule that can never fire.
                    return false;
                }
                comparisons += 1;
                if comparisons > MAX_COMPARISONS {
                    return false;
                }
                let (a, d) = (&allow.matcher, &deny.matcher);
                [
                    (&a.executable, &d.executable),
                    (&a.args_pattern, &d.args_pattern),
                    (&a.identity, &d.identity),
                ]
                .into_iter()
                .all(|(x, y)| automata.overlap(x.as_deref(), y.as_deref()) == overlap::Overlap::Yes)
            });
            if let Some(i) = found {
                let (line, column) = self.locator.find(&format!("rules[{j}]")).unwrap_or((0, 0));
                let (allow_line, allow_column) = self.locator.find(&format!("rules[{i}]")).unwrap_or((0, 0));
                warnings.push(Warning {
                    message: format!(
                        "{file}:{line}:{column}: deny rule `{deny}` is not reached for some commands it matches: the earlier allow rule `{allow}` ({file}:{allow_line}:{allow_column}) matches them first and they run (first match wins); move `{deny}` above it, or set `evaluation: deny_overrides`",
                        file = self.file.display(),
                        deny = deny.id,
                        allow = rules[i].id,
                    ),
                });
            }
        }
        if comparisons > MAX_COMPARISONS {
            warnings.push(Warning {
                message: format!(
                    "{}: deny rules reached by earlier allow rules: analysis stopped after {MAX_COMPARISONS} comparisons",
                    self.file.display()
                ),
            });
        }
        warnings
    }

    /// An error without a place in the file.
    #[must_use]
    pub fn error(&self, message: impl Into<String>) -> PolicyError {
        PolicyError::Invalid(Located { file: self.file.clone(), line: 0, column: 0, message: message.into() })
    }

    /// An error at the value found at `path` (e.g. `exec.allow[2].id`).
    #[must_use]
    pub fn error_at(&self, path: impl std::fmt::Display, message: impl Into<String>) -> PolicyError {
        let (line, column) = self.locator.find(&path.to_string()).unwrap_or((0, 0));
        PolicyError::Invalid(Located { file: self.file.clone(), line, column, message: message.into() })
    }
}

/// Whether `a` matches every command `b` matches (conservatively: only when that is certain); each
/// comes with the plain names of its executable pattern, when it is such an alternation.
fn covers(
    (a, a_names): (&model::RuleMatch, Option<&[String]>),
    (b, b_names): (&model::RuleMatch, Option<&[String]>),
) -> bool {
    let field = |x: &Option<String>, y: &Option<String>| x.is_none() || x == y;
    let executable = match (&a.executable, &b.executable) {
        (None, _) => true,
        (Some(x), Some(y)) if x == y => true,
        (Some(_), Some(_)) => match (a_names, b_names) {
            (Some(xs), Some(ys)) => ys.iter().all(|n| xs.contains(n)),
            _ => false,
        },
        (Some(_), None) => false,
    };
    executable && field(&a.args_pattern, &b.args_pattern) && field(&a.identity, &b.identity)
}

/// Largest policy file read: real policies are a few KiB, and a policy is held in memory (and parsed
/// by every `sentra-shell`).
pub const MAX_POLICY_BYTES: u64 = 16 << 20;

/// Reads a policy file's text without ever blocking or reading without bound: only a regular file
/// (opened non-blocking, so a FIFO cannot stall the reader), at most [`MAX_POLICY_BYTES`], valid
/// UTF-8 (else the line and column of the first bad byte), and not empty.
fn read_text(file: &Path) -> Result<String, PolicyError> {
    use std::{io::Read as _, os::unix::fs::OpenOptionsExt as _};
    let located = |line, column, message: String| {
        PolicyError::Invalid(Located { file: file.to_path_buf(), line, column, message })
    };
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(file)
        .map_err(|source| match source.raw_os_error() {
            Some(nix::libc::ELOOP) => located(0, 0, "cannot read policy: a loop of symbolic links".into()),
            _ => PolicyError::Read { file: file.to_path_buf(), source },
        })?;
    let meta = handle.metadata().map_err(|source| PolicyError::Read { file: file.to_path_buf(), source })?;
    if !meta.is_file() {
        let kind = match meta.file_type() {
            t if t.is_dir() => "a directory",
            t if std::os::unix::fs::FileTypeExt::is_fifo(&t) => "a FIFO",
            t if std::os::unix::fs::FileTypeExt::is_socket(&t) => "a socket",
            t if std::os::unix::fs::FileTypeExt::is_char_device(&t)
                || std::os::unix::fs::FileTypeExt::is_block_device(&t) =>
            {
                "a device"
            }
            _ => "not a regular file",
        };
        return Err(located(0, 0, format!("cannot read policy: {kind}, not a regular file")));
    }
    let too_large = || located(0, 0, format!("policy larger than {} MiB: refused", MAX_POLICY_BYTES >> 20));
    if meta.len() > MAX_POLICY_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    handle
        .take(MAX_POLICY_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| PolicyError::Read { file: file.to_path_buf(), source })?;
    if bytes.len() as u64 > MAX_POLICY_BYTES {
        return Err(too_large());
    }
    let text = String::from_utf8(bytes).map_err(|err| {
        let good = &err.as_bytes()[..err.utf8_error().valid_up_to()];
        let line = good.split(|&b| b == b'\n').count();
        let line_start = good.iter().rposition(|&b| b == b'\n').map_or(0, |at| at + 1);
        // Columns count characters, as the YAML parser's do.
        let column = String::from_utf8_lossy(&good[line_start..]).chars().count() + 1;
        let byte = err.as_bytes().get(good.len()).copied().unwrap_or_default();
        located(line, column, format!("not valid UTF-8 (byte 0x{byte:02x})"))
    })?;
    if is_empty(&text) {
        return Err(empty(file));
    }
    Ok(text)
}

/// Nothing but blank lines and comments: YAML reads that as a policy of defaults, which would deny
/// everything (or, for the shell layer, judge by nothing but `default`). A policy says something.
fn is_empty(text: &str) -> bool {
    text.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#') || line == "---" || line == "..."
    })
}

fn empty(file: &Path) -> PolicyError {
    PolicyError::Invalid(Located {
        file: file.to_path_buf(),
        line: 1,
        column: 1,
        message: "the policy is empty: write at least `default:` and the rules (see policies/)".into(),
    })
}

/// `serde_yaml` appends " at line L column C" to its messages; the location is reported separately.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Refuses a policy file that someone other than root could have changed.
///
/// # Errors
/// The file cannot be inspected, is not owned by root, or is group- or world-writable.
pub fn check_file_safety(path: &Path) -> Result<(), PolicyError> {
    use std::os::unix::fs::MetadataExt as _;
    let meta =
        std::fs::metadata(path).map_err(|source| PolicyError::Read { file: path.to_path_buf(), source })?;
    let located = |message: String| {
        PolicyError::Invalid(Located { file: path.to_path_buf(), line: 0, column: 0, message })
    };
    if meta.uid() != 0 {
        return Err(located(format!(
            "refused: owned by uid {}, not root (anyone who can edit the policy controls the agent)",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(located(format!(
            "refused: mode {:o} lets others write it; chmod go-w",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lapsed_allow_is_left_out_and_a_bad_time_is_placed() {
        let text = "version: \"2.0\"\nexec:\n  default: deny\n  allow:\n    - { id: gone, path: /usr/bin/true, expires: \"2020-01-01T00:00:00Z\" }\n    - { id: later, path: /usr/bin/false, expires: \"2999-01-01T00:00:00Z\" }\nnetwork:\n  allow:\n    - { id: old_net, cidr: 10.0.0.0/8, expires: \"2021-01-01T00:00:00Z\" }\n";
        let policy = Policy::parse(Path::new("p.yaml"), text).expect("parse");
        let ids: Vec<&str> = policy
            .model
            .exec
            .as_ref()
            .map(|e| e.allow.iter().map(|e| e.id.as_str()).collect())
            .unwrap_or_default();
        assert_eq!(ids, ["later"]);
        assert!(policy.model.network.as_ref().is_some_and(|n| n.allow.is_empty()));
        assert_eq!(policy.lapsed, ["exec.allow: gone", "network.allow: old_net"]);
        assert_eq!(
            policy.next_expiry().map(|t| t.to_rfc3339()),
            Some("2999-01-01T00:00:00+00:00".to_string())
        );
        let bad = text.replace("2999-01-01T00:00:00Z", "tomorrow");
        let err = Policy::parse(Path::new("p.yaml"), &bad).expect_err("a bad time");
        assert!(err.to_string().contains("p.yaml:6:"), "{err}");
    }

    #[test]
    fn unknown_key_is_rejected_with_line_and_column() {
        let text = "version: \"2.0\"\nmode: enforce\nrules:\n  - id: a\n    match:\n      args: x\n    effect: allow\n";
        let err = Policy::parse(Path::new("p.yaml"), text).expect_err("must fail");
        let PolicyError::Invalid(located) = err else { panic!("wrong error kind: {err}") };
        assert_eq!((located.line, located.column), (6, 7), "{located}");
        assert!(located.message.contains("unknown field `args`"), "{located}");
    }

    #[test]
    fn original_format_is_accepted_with_warnings_for_unimplemented_sections() {
        let text = "version: \"2.0\"\nmode: audit\ndefault: deny\nrate_limit: {max_commands: 60, window_seconds: 60}\nrules:\n  - id: block_sudo\n    match: {executable: \"^sudo$\"}\n    effect: deny\n    reason: no\ncost_routing: {a: 1}\n";
        let policy = Policy::parse(Path::new("p.yaml"), text).expect("valid");
        assert_eq!(policy.model.rules.len(), 1);
        assert_eq!(policy.warnings.len(), 1);
        assert_eq!(policy.model.mode, model::Mode::Audit);
    }

    #[test]
    fn seccomp_extends_cycles_and_unknown_parents_are_located() {
        let text = "seccomp_profiles:\n  a:\n    extends: b\n  b:\n    extends: a\n";
        let err = Policy::parse(Path::new("p.yaml"), text).expect_err("cycle");
        assert!(err.to_string().starts_with("p.yaml:3:14: `extends` cycle: a -> b -> a"), "{err}");
        let err = Policy::parse(Path::new("p.yaml"), "seccomp_profiles:\n  a: { extends: nope }\n")
            .expect_err("missing");
        assert!(err.to_string().contains("p.yaml:2:17:") && err.to_string().contains("`nope`"), "{err}");
        let err =
            Policy::parse(Path::new("p.yaml"), "seccomp_profiles:\n  a: { deny: [ptrace, \"Bad Name\"] }\n")
                .expect_err("bad name");
        assert!(err.to_string().contains("p.yaml:2:23:"), "{err}");
        let err = Policy::parse(Path::new("p.yaml"), "seccomp_profiles:\n  a: { deny_dangerus: [ptrace] }\n")
            .expect_err("unknown key");
        assert!(err.to_string().contains("unknown field `deny_dangerus`"), "{err}");
    }

    #[test]
    fn shadowed_rules_are_reported_with_their_place() {
        let text = "rules:\n  - id: allow_cat\n    match: { executable: \"^(cat|ls)$\" }\n    effect: allow\n  - id: deny_env\n    match: { executable: \"^cat$\", args_pattern: \"\\\\.env\" }\n    effect: deny\n  - id: deny_git_push\n    match: { executable: \"^git$\", args_pattern: push }\n    effect: deny\n";
        let policy = Policy::parse(Path::new("p.yaml"), text).expect("valid");
        assert_eq!(policy.warnings.len(), 1, "{:?}", policy.warnings);
        let message = &policy.warnings[0].message;
        assert!(message.starts_with("p.yaml:5:7: rule `deny_env` can never fire"), "{message}");
        assert!(message.contains("`allow_cat`") && message.contains("opposite"), "{message}");
    }

    /// An earlier allow that reaches some of a later deny's commands: both places; nothing when the
    /// rules cannot meet, when the allow shadows the deny entirely (reported as never firing), or
    /// under `evaluation: deny_overrides`.
    #[test]
    fn denies_reached_by_earlier_allows_are_reported_with_both_places() {
        let rules = "rules:\n  - id: allow_read\n    match: { executable: \"^(cat|head)$\" }\n    effect: allow\n  - id: allow_ls\n    match: { executable: \"^ls$\" }\n    effect: allow\n  - id: deny_env\n    match: { args_pattern: \"(^|\\\\s)\\\\S*\\\\.env\\\\b\" }\n    effect: deny\n  - id: deny_rm\n    match: { executable: \"^rm$\" }\n    effect: deny\n  - id: deny_shadow\n    match: { executable: \"^(head|tail)$\", args_pattern: \"/etc/shadow\" }\n    effect: deny\n";
        let policy = Policy::parse(Path::new("p.yaml"), rules).expect("valid");
        let warnings = policy.denies_reached_by_allows();
        let messages: Vec<&str> = warnings.iter().map(|w| w.message.as_str()).collect();
        assert_eq!(messages.len(), 2, "{messages:#?}");
        assert!(messages[0].starts_with("p.yaml:8:7: deny rule `deny_env`"), "{}", messages[0]);
        assert!(messages[0].contains("`allow_read` (p.yaml:2:7)"), "{}", messages[0]);
        assert!(messages[1].starts_with("p.yaml:14:7: deny rule `deny_shadow`"), "{}", messages[1]);
        let overriding = Policy::parse(Path::new("p.yaml"), &format!("evaluation: deny_overrides\n{rules}"))
            .expect("valid");
        assert!(overriding.denies_reached_by_allows().is_empty());
    }

    #[test]
    fn wrong_type_is_reported() {
        let err = Policy::parse(Path::new("p.yaml"), "mode: sometimes\n").expect_err("must fail");
        assert!(err.to_string().starts_with("p.yaml:1:7: "), "{err}");
    }
}
