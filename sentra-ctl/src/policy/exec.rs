//! Compiling the `exec` section to kernel map entries.
//!
//! Paths are resolved now, on this machine: symlinks followed (the kernel sees the file a symlink points
//! to), files and directories identified by (device, inode) as the kernel knows them.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use sentra_common::exec::{NAME_LEN, RuleValue};

use super::{
    Policy, PolicyError, Warning,
    model::{Effect, ExecEntry},
};

/// What kind of target an exec rule names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Path,
    Dir,
    Name,
}

/// A rule as userspace remembers it; the kernel knows it by its index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInfo {
    pub id: String,
    pub reason: Option<String>,
    pub effect: Effect,
}

/// A (device, inode) pair, device in the kernel's encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

/// Kernel map entries for one policy generation (without the generation, which the loader adds).
#[derive(Debug, Clone, Default)]
pub struct CompiledExec {
    pub default: Option<Effect>,
    pub rules: Vec<RuleInfo>,
    pub inode: Vec<(FileId, RuleValue)>,
    pub name: Vec<((FileId, [u8; NAME_LEN]), RuleValue)>,
    pub dir: Vec<(FileId, RuleValue)>,
    pub warnings: Vec<Warning>,
    /// Deny rules whose target is not on this machine (nothing to deny; listed by `policy check`).
    pub absent: Vec<String>,
}

impl CompiledExec {
    /// Adds a kernel entry; when two rules land on the same key, a deny beats an allow, and otherwise
    /// the first rule keeps it; either way the overlap is reported.
    fn add<K: PartialEq + Copy>(
        entries: &mut Vec<(K, RuleValue)>,
        rules: &[RuleInfo],
        warnings: &mut Vec<Warning>,
        key: K,
        value: RuleValue,
    ) {
        let deny = sentra_common::settings::Effect::Deny as u32;
        let Some(slot) = entries.iter_mut().find(|(k, _)| *k == key) else {
            entries.push((key, value));
            return;
        };
        let name = |v: &RuleValue| rules.get(v.rule as usize).map_or("?", |r| r.id.as_str()).to_string();
        let kept = if value.effect == deny && slot.1.effect != deny { value } else { slot.1 };
        warnings.push(Warning {
            message: format!(
                "exec rules `{}` and `{}` name the same file or directory; `{}` applies",
                name(&slot.1),
                name(&value),
                name(&kept)
            ),
        });
        slot.1 = kept;
    }

    /// The effect when no entry covers a file.
    #[must_use]
    pub fn default_effect(&self) -> Effect {
        self.default.unwrap_or(Effect::Deny)
    }

    /// Id and reason of a rule index found in an event.
    #[must_use]
    pub fn rule(&self, index: u32) -> Option<&RuleInfo> {
        self.rules.get(usize::try_from(index).ok()?)
    }
}

/// Converts `stat`'s `st_dev` to the kernel's internal `dev_t` (`MAJOR << 20 | MINOR`,
/// `include/linux/kdev_t.h`), which is what `super_block::s_dev` holds.
#[must_use]
pub fn kernel_dev(st_dev: u64) -> u64 {
    let major = u64::from(libc::major(st_dev));
    let minor = u64::from(libc::minor(st_dev));
    (major << 20) | minor
}

fn file_id(path: &Path) -> std::io::Result<FileId> {
    let meta = std::fs::metadata(path)?;
    Ok(FileId { dev: kernel_dev(meta.dev()), ino: meta.ino() })
}

/// Compiles `policy`'s exec section.
///
/// # Errors
/// Duplicate ids, an entry with not exactly one target, relative paths, an allowed path that does not
/// exist, a name too long for the kernel's key.
pub fn compile(policy: &Policy) -> Result<CompiledExec, PolicyError> {
    let mut out = CompiledExec { default: policy.model.default, ..CompiledExec::default() };
    let Some(section) = &policy.model.exec else {
        return Ok(out);
    };
    if section.default.is_some() {
        out.default = section.default;
    }
    let search: Vec<PathBuf> = section.path.iter().map(PathBuf::from).collect();
    for dir in &search {
        if !dir.is_absolute() {
            return Err(policy.error(format!("exec.path: `{}` is not an absolute path", dir.display())));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for (effect, entries) in [(Effect::Deny, &section.deny), (Effect::Allow, &section.allow)] {
        for entry in entries {
            if !seen.insert(entry.id.clone()) {
                return Err(policy.error(format!("exec rule id `{}` is used twice", entry.id)));
            }
            compile_entry(policy, &search, entry, effect, &mut out)?;
        }
    }
    Ok(out)
}

fn compile_entry(
    policy: &Policy,
    search: &[PathBuf],
    entry: &ExecEntry,
    effect: Effect,
    out: &mut CompiledExec,
) -> Result<(), PolicyError> {
    let kind = match (&entry.path, &entry.dir, &entry.name) {
        (Some(_), None, None) => Target::Path,
        (None, Some(_), None) => Target::Dir,
        (None, None, Some(_)) => Target::Name,
        _ => {
            return Err(
                policy.error(format!("exec rule `{}`: give exactly one of `path`, `dir`, `name`", entry.id))
            );
        }
    };
    let index = u32::try_from(out.rules.len()).map_err(|_| policy.error("too many exec rules"))?;
    out.rules.push(RuleInfo { id: entry.id.clone(), reason: entry.reason.clone(), effect });
    let value = RuleValue { rule: index, effect: sentra_common::settings::Effect::from(effect) as u32 };

    let targets = targets_of(policy, search, entry, kind, effect)?;
    if targets.is_empty() {
        return unresolved(policy, entry, effect, out, "not found in exec.path");
    }
    for target in targets {
        let Ok(resolved) = std::fs::canonicalize(&target) else {
            unresolved(policy, entry, effect, out, &format!("`{}` does not exist", target.display()))?;
            continue;
        };
        let id = file_id(&resolved).map_err(|err| {
            policy.error(format!("exec rule `{}`: {}: {err}", entry.id, resolved.display()))
        })?;
        if kind == Target::Dir {
            if !resolved.is_dir() {
                return Err(policy.error(format!(
                    "exec rule `{}`: `dir` {} is not a directory",
                    entry.id,
                    resolved.display()
                )));
            }
            CompiledExec::add(&mut out.dir, &out.rules, &mut out.warnings, id, value);
            continue;
        }
        let (Some(parent), Some(name)) = (resolved.parent(), resolved.file_name()) else {
            return Err(policy.error(format!(
                "exec rule `{}`: {} is not a file",
                entry.id,
                resolved.display()
            )));
        };
        let name = name.as_encoded_bytes();
        if name.len() >= NAME_LEN {
            return Err(policy.error(format!(
                "exec rule `{}`: file name of {} is longer than {} bytes, which the kernel key holds",
                entry.id,
                resolved.display(),
                NAME_LEN - 1
            )));
        }
        let mut key = [0u8; NAME_LEN];
        key[..name.len()].copy_from_slice(name);
        let dir = file_id(parent)
            .map_err(|err| policy.error(format!("exec rule `{}`: {}: {err}", entry.id, parent.display())))?;
        CompiledExec::add(&mut out.name, &out.rules, &mut out.warnings, (dir, key), value);
        if effect == Effect::Deny {
            // Follow the binary through hard links.
            CompiledExec::add(&mut out.inode, &out.rules, &mut out.warnings, id, value);
        }
    }
    Ok(())
}

/// The files (or directory) an entry names: its absolute path, or a name looked up in `exec.path`.
fn targets_of(
    policy: &Policy,
    search: &[PathBuf],
    entry: &ExecEntry,
    kind: Target,
    effect: Effect,
) -> Result<Vec<PathBuf>, PolicyError> {
    Ok(match kind {
        Target::Path | Target::Dir => {
            let raw = PathBuf::from(entry.path.as_ref().or(entry.dir.as_ref()).map_or("", String::as_str));
            if !raw.is_absolute() {
                return Err(policy.error(format!(
                    "exec rule `{}`: `{}` is not an absolute path",
                    entry.id,
                    raw.display()
                )));
            }
            vec![raw]
        }
        Target::Name => {
            let name = entry.name.as_deref().unwrap_or_default();
            if name.contains('/') || name.is_empty() {
                return Err(policy.error(format!("exec rule `{}`: `{name}` is not a program name", entry.id)));
            }
            let found: Vec<PathBuf> =
                search.iter().map(|dir| dir.join(name)).filter(|p| p.is_file()).collect();
            // The shell runs the first match; an allow covers that one, a deny covers all of them.
            match effect {
                Effect::Allow => found.into_iter().take(1).collect(),
                Effect::Deny => found,
            }
        }
    })
}

/// An entry whose target does not exist: an error for an allow (it would allow nothing, likely a typo);
/// for a deny it is noted (denying an absent program is harmless, and shipped policies list programs that
/// only some distributions have). Installing the program later needs a reload for the deny to apply.
fn unresolved(
    policy: &Policy,
    entry: &ExecEntry,
    effect: Effect,
    out: &mut CompiledExec,
    why: &str,
) -> Result<(), PolicyError> {
    match effect {
        Effect::Allow => Err(policy.error(format!("exec rule `{}`: {why}", entry.id))),
        Effect::Deny => {
            out.absent.push(format!("{}: {why}", entry.id));
            Ok(())
        }
    }
}
