//! Multi-call binaries (`BusyBox`, toybox): one file that runs whichever program its `argv[0]` names.
//! The kernel decides a run of one by the applet it runs, as a program of that name
//! (`sentra-ebpf/src/exec/applet.rs`); this module finds them on this machine and works out which
//! exec rule covers each program name.
//!
//! Which names count:
//! - a `name:` rule's name and an original `rules` entry's names;
//! - a denying `path:` rule's file name (denying `/usr/sbin/nsenter` denies the `nsenter` applet too);
//! - an allowing `path:` rule's file name when the path leads to a multi-call binary (`/bin/sh` on a
//!   system whose `sh` is `BusyBox`);
//! - the names in a `dir:` rule's directory that are symbolic or hard links to a multi-call binary,
//!   unless a rule above names them.
//!
//! Any other name is decided by the default.

use std::{
    collections::{BTreeMap, HashMap},
    os::unix::fs::{DirEntryExt as _, MetadataExt as _},
    path::{Path, PathBuf},
};

use sentra_common::{exec::RuleValue, settings::Effect};

use super::exec::FileId;

/// The dispatcher names of the multi-call binaries Sentra knows: a binary whose file name starts with
/// one is a multi-call binary, and so is an applet name that starts with one (`BusyBox`'s
/// `is_prefixed_with(applet_name, "busybox")`, libbb/appletlib.c).
pub const STEMS: [&str; 2] = ["busybox", "toybox"];

/// Where multi-call binaries are looked for, besides the directories the policy names.
pub const SYSTEM_BIN: [&str; 6] =
    ["/bin", "/sbin", "/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin"];

/// The stem a file name starts with, if any.
fn stem_of(name: &str) -> Option<&'static str> {
    STEMS.iter().copied().find(|stem| name.starts_with(stem))
}

/// A multi-call binary: its dispatcher name and where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binary {
    pub stem: &'static str,
    pub path: PathBuf,
}

/// The multi-call binaries in `dirs` (each directory once, by its canonical path).
#[must_use]
pub fn find(dirs: &[PathBuf]) -> HashMap<FileId, Binary> {
    let mut seen = std::collections::HashSet::new();
    let mut found = HashMap::new();
    for dir in dirs {
        let Ok(canonical) = std::fs::canonicalize(dir) else { continue };
        if !seen.insert(canonical.clone()) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&canonical) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(stem) = name.to_str().and_then(stem_of) else { continue };
            let path = entry.path();
            if let Ok(meta) = std::fs::metadata(&path)
                && meta.is_file()
            {
                let path = std::fs::canonicalize(&path).unwrap_or(path);
                found.entry(FileId::of(&meta)).or_insert(Binary { stem, path });
            }
        }
    }
    found
}

/// The names in `dir` that run a multi-call binary of `multicall`: symbolic links to one, and hard
/// links (same inode). Only symbolic links cost a `stat`; the rest is what `readdir` returns.
#[must_use]
pub fn links_in<S: std::hash::BuildHasher>(
    dir: &Path,
    multicall: &HashMap<FileId, Binary, S>,
) -> Vec<String> {
    let Ok(dir_meta) = std::fs::metadata(dir) else { return Vec::new() };
    let dev = super::exec::kernel_dev(dir_meta.dev());
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut names = Vec::new();
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else { continue };
        let id = if kind.is_symlink() {
            match std::fs::metadata(entry.path()) {
                Ok(meta) => FileId::of(&meta),
                Err(_) => continue,
            }
        } else if kind.is_file() {
            FileId { dev, ino: entry.ino() }
        } else {
            continue;
        };
        if multicall.contains_key(&id)
            && let Some(name) = entry.file_name().to_str()
        {
            names.push(name.to_string());
        }
    }
    names.sort();
    names
}

/// The rules that name programs, gathered while the exec section compiles.
#[derive(Debug, Default)]
pub struct Names {
    /// Names a rule gives explicitly (`name:`, a path's file name, original `rules`).
    explicit: Vec<(String, RuleValue)>,
    /// Names found as links to a multi-call binary in a `dir:` rule's directory.
    linked: Vec<(String, RuleValue)>,
}

impl Names {
    pub fn explicit(&mut self, name: &str, value: RuleValue) {
        self.explicit.push((name.to_string(), value));
    }

    pub fn linked(&mut self, name: String, value: RuleValue) {
        self.linked.push((name, value));
    }

    /// The rule covering each name: an explicit name over a linked one, and among either kind a deny
    /// over an allow (as for files).
    #[must_use]
    pub fn resolve(self) -> BTreeMap<String, RuleValue> {
        let merge = |entries: Vec<(String, RuleValue)>| {
            let mut out: BTreeMap<String, RuleValue> = BTreeMap::new();
            for (name, value) in entries {
                out.entry(name)
                    .and_modify(|kept| {
                        if value.effect == Effect::Deny as u32 && kept.effect != Effect::Deny as u32 {
                            *kept = value;
                        }
                    })
                    .or_insert(value);
            }
            out
        };
        let mut names = merge(self.explicit);
        for (name, value) in merge(self.linked) {
            names.entry(name).or_insert(value);
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(rule: u32, effect: Effect) -> RuleValue {
        RuleValue { rule, effect: effect as u32 }
    }

    #[test]
    fn explicit_names_decide_over_linked_ones_and_denials_over_allows() {
        let mut names = Names::default();
        names.linked("mount".into(), value(0, Effect::Allow));
        names.explicit("mount", value(1, Effect::Deny));
        names.explicit("ls", value(2, Effect::Allow));
        names.explicit("ls", value(3, Effect::Deny));
        names.explicit("ls", value(4, Effect::Allow));
        names.linked("sh".into(), value(5, Effect::Allow));
        names.linked("sh".into(), value(6, Effect::Deny));
        let resolved = names.resolve();
        assert_eq!(resolved["mount"], value(1, Effect::Deny));
        assert_eq!(resolved["ls"], value(3, Effect::Deny));
        assert_eq!(resolved["sh"], value(6, Effect::Deny));
        assert_eq!(resolved.len(), 3);
    }

    #[test]
    fn a_dispatcher_name_is_recognised_by_its_prefix() {
        assert_eq!(stem_of("busybox"), Some("busybox"));
        assert_eq!(stem_of("busybox.static"), Some("busybox"));
        assert_eq!(stem_of("toybox"), Some("toybox"));
        assert_eq!(stem_of("bash"), None);
    }

    #[test]
    fn links_to_a_multicall_binary_are_found_by_symlink_and_by_hard_link() {
        let dir = std::env::temp_dir().join(format!("sentra-multicall-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let binary = dir.join("busybox");
        std::fs::write(&binary, b"\x7fELF").expect("binary");
        std::os::unix::fs::symlink("busybox", dir.join("sh")).expect("symlink");
        std::fs::hard_link(&binary, dir.join("mount")).expect("hard link");
        std::fs::write(dir.join("other"), b"x").expect("other");
        let found = find(std::slice::from_ref(&dir));
        assert_eq!(found.values().map(|b| b.stem).collect::<Vec<_>>(), vec!["busybox"]);
        assert_eq!(links_in(&dir, &found), vec!["busybox", "mount", "sh"]);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
