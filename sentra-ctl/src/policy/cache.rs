//! Parsed policies kept on disk, so `sentra-shell` (one process per agent command) does not parse
//! YAML every time: parsing YAML is a large share of its start, where reading the parsed form back
//! costs a few page faults (`cargo xtask bench shell` measures both).
//!
//! An entry is JSON holding the policy text it was parsed from and the parsed model. It stands for
//! exactly that text: it is used only when the file's text equals it byte for byte, so an entry can
//! never say more than its own text says, and a changed policy simply misses. It is trusted as a
//! policy is: owned by root and writable by no one else. Only root writes entries (the controller,
//! `sentra-ctl policy check`, the installer, `sentra-shell` run as root), and only for policies that
//! passed validation; the validation that follows parsing is redone on every load. Anything amiss
//! (no directory, a foreign owner, a short read, JSON that does not parse) is a miss, never an error.

use std::{
    fs::File,
    io::{Read as _, Write as _},
    os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    time::SystemTime,
};

use serde::{Deserialize, Serialize};

use super::model::PolicyFile;

/// Where entries live.
pub const CACHE_DIR: &str = "/var/cache/sentra/policy";
/// Entries kept; the least recently written are removed beyond this (tests create many policies).
const MAX_ENTRIES: usize = 64;

/// Each rule's exact executable names ([`super::exact::exact_names`]), by index in the model's
/// `rules`: derived from the text like the model, and kept with it.
pub type RuleNames = Vec<Option<Vec<String>>>;

#[derive(Serialize)]
struct EntryRef<'a> {
    text: &'a str,
    model: &'a PolicyFile,
    rule_names: &'a RuleNames,
}

#[derive(Deserialize)]
struct Entry {
    text: String,
    model: PolicyFile,
    rule_names: RuleNames,
}

/// The entry file for a text with this fingerprint (several texts may share one; the text decides).
fn entry_path(dir: &Path, hash: u64) -> PathBuf {
    dir.join(format!("{hash:016x}.json"))
}

/// The model parsed from `text` and its rules' names, if `dir` holds a trusted entry for exactly this
/// text (an entry without names, from an older build, misses).
#[must_use]
pub fn lookup(dir: &Path, hash: u64, text: &str) -> Option<(PolicyFile, RuleNames)> {
    let mut file = File::open(entry_path(dir, hash)).ok()?;
    // Checked on the open file, so the checked file is the one read.
    let meta = file.metadata().ok()?;
    if meta.uid() != 0 || meta.mode() & 0o022 != 0 || !meta.is_file() {
        return None;
    }
    let mut json = String::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_string(&mut json).ok()?;
    let entry: Entry = serde_json::from_str(&json).ok()?;
    (entry.text == text && entry.rule_names.len() == entry.model.rules.len())
        .then_some((entry.model, entry.rule_names))
}

/// Writes the entry for `text` when this process is root; failures are ignored (the next load parses
/// the YAML again).
pub fn store(dir: &Path, hash: u64, text: &str, model: &PolicyFile, rule_names: &RuleNames) {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    if let Err(err) = try_store(dir, hash, &EntryRef { text, model, rule_names }) {
        tracing::debug!("policy cache: not written: {err}");
    }
}

fn try_store(dir: &Path, hash: u64, entry: &EntryRef<'_>) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir)?;
    let meta = std::fs::metadata(dir)?;
    if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return Err(std::io::Error::other(format!("{} is not root's alone", dir.display())));
    }
    let json = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
    let path = entry_path(dir, hash);
    let temporary = dir.join(format!(".{hash:016x}.{}.tmp", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&temporary)
        .and_then(|mut file| file.write_all(&json))
        .and_then(|()| std::fs::rename(&temporary, &path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written?;
    prune(dir);
    Ok(())
}

/// Removes the oldest entries beyond [`MAX_ENTRIES`].
fn prune(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if files.len() <= MAX_ENTRIES {
        return;
    }
    files.sort_unstable();
    for (_, path) in &files[..files.len() - MAX_ENTRIES] {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn model(text: &str) -> PolicyFile {
        serde_yaml::from_str(text).expect("valid")
    }

    #[test]
    fn an_entry_stands_for_its_exact_text_and_must_be_roots_alone() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root: entries are written and trusted only when owned by root"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let text = "version: \"2.0\"\ndefault: deny\nrules:\n  - {id: ls, match: {executable: '^ls$'}, effect: allow}\n";
        assert!(lookup(dir.path(), 7, text).is_none(), "empty cache");
        let names: RuleNames = vec![Some(vec!["ls".into()])];
        store(dir.path(), 7, text, &model(text), &names);
        let (cached, cached_names) = lookup(dir.path(), 7, text).expect("hit");
        assert_eq!(format!("{cached:?}"), format!("{:?}", model(text)));
        assert_eq!(cached_names, names);
        assert!(lookup(dir.path(), 7, &text.replace("allow", "deny")).is_none(), "another text misses");
        let path = entry_path(dir.path(), 7);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        assert!(lookup(dir.path(), 7, text).is_none(), "a writable entry is not trusted");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        std::os::unix::fs::chown(&path, Some(65534), None).expect("chown");
        assert!(lookup(dir.path(), 7, text).is_none(), "an entry not owned by root is not trusted");
    }

    #[test]
    fn old_entries_are_pruned() {
        let dir = tempfile::tempdir().expect("tempdir");
        for i in 0..MAX_ENTRIES + 3 {
            std::fs::write(dir.path().join(format!("{i:016x}.json")), "{}").expect("write");
        }
        prune(dir.path());
        let left = std::fs::read_dir(dir.path()).expect("dir").count();
        assert_eq!(left, MAX_ENTRIES);
    }
}
