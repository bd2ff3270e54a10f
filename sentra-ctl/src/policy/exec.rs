//! Compiling the `exec` section to kernel map entries.
//!
//! Paths are resolved now, on this machine: symlinks followed (the kernel sees the file a symlink points
//! to), files and directories identified by (device, inode) as the kernel knows them.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    os::unix::fs::MetadataExt as _,
    path::{Component, Path, PathBuf},
    rc::Rc,
};

use sentra_common::exec::{NAME_LEN, RuleValue};

use super::{
    Policy, PolicyError, Warning,
    model::{Effect, ExecEntry},
    multicall,
};

/// What kind of target an exec rule names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Path,
    Dir,
    Name,
}

/// A rule as userspace remembers it; the kernel knows it by its index.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

impl FileId {
    /// The (device, inode) of what `meta` describes, device in the kernel's encoding.
    pub(super) fn of(meta: &std::fs::Metadata) -> Self {
        Self { dev: kernel_dev(meta.dev()), ino: meta.ino() }
    }
}

/// Kernel map entries for one policy generation (without the generation, which the loader adds).
#[derive(Debug, Clone, Default)]
pub struct CompiledExec {
    /// The rules by index, and the default: what names the rules of this generation's events.
    pub table: RuleTable,
    pub inode: Vec<(FileId, RuleValue)>,
    pub name: Vec<((FileId, [u8; NAME_LEN]), RuleValue)>,
    pub dir: Vec<(FileId, RuleValue)>,
    /// `exec.libraries` (or its default): files and directories executable code may be mapped from.
    pub library: Vec<FileId>,
    /// What executable code may be mapped from, as text, for the `signal` backend's check of the
    /// dynamic loader's variables: `exec.libraries` and the exec rules' files and directories (a
    /// directory with a trailing `/`; each as listed and as resolved; `/` when the default allows),
    /// each with whether it is allowed (an exec rule's deny decides over a library entry).
    pub loader_paths: Vec<(String, bool)>,
    /// The exec rule covering each program name, for the applets of the multi-call binaries in
    /// `table.multicall` (only when there are any).
    pub applet: Vec<([u8; NAME_LEN], RuleValue)>,
    pub warnings: Vec<Warning>,
    /// Deny rules whose target is not on this machine (nothing to deny; listed by `policy check`).
    pub absent: Vec<String>,
    /// Original `rules` compiled into the kernel too (plain program names).
    pub kernel_rules: Vec<String>,
    /// Original `rules` the kernel cannot express, with why: enforced by the shell layer only.
    pub shell_only: Vec<(String, String)>,
}

/// What turns a kernel event's rule index back into words: the rules of one generation and its
/// default; and a multi-call binary's (device, inode) back into its path (the kernel's applet events
/// carry only the identity).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RuleTable {
    pub rules: Vec<RuleInfo>,
    pub default: Option<Effect>,
    /// The multi-call binaries on this machine (`BusyBox`, toybox): a run of one is decided by its
    /// applet (`policy::multicall`). Empty when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub multicall: Vec<MulticallBinary>,
}

/// A multi-call binary, as the kernel knows it (`EXEC_MULTICALL`) and as records name it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct MulticallBinary {
    /// Device (kernel `dev_t`) and inode.
    pub dev: u64,
    pub ino: u64,
    /// The dispatcher name (an applet name starting with it means "the next argument").
    pub stem: String,
    pub path: PathBuf,
}

impl RuleTable {
    /// Id and reason of a rule index found in an event.
    #[must_use]
    pub fn rule(&self, index: u32) -> Option<&RuleInfo> {
        self.rules.get(usize::try_from(index).ok()?)
    }

    /// The effect when no entry covers a file.
    #[must_use]
    pub fn default_effect(&self) -> Effect {
        self.default.unwrap_or(Effect::Deny)
    }

    /// The path of the multi-call binary with this (device, inode).
    #[must_use]
    pub fn multicall_path(&self, dev: u64, ino: u64) -> Option<&Path> {
        self.multicall.iter().find(|b| (b.dev, b.ino) == (dev, ino)).map(|b| b.path.as_path())
    }
}

impl CompiledExec {
    /// Refuses a policy whose tables do not fit the kernel's maps: each holds two generations, the
    /// active one and the one being loaded ([`sentra_common::exec::capacity`]).
    fn check_capacity(&self, policy: &Policy) -> Result<(), PolicyError> {
        use sentra_common::{exec::capacity, settings::GENERATIONS};
        let tables = [
            (
                "exec",
                "inode rules (programs named by `path:` or found by `name:`)",
                self.inode.len(),
                capacity::INODE_RULES,
            ),
            ("exec", "name rules (exact paths)", self.name.len(), capacity::NAME_RULES),
            ("exec", "directory rules", self.dir.len(), capacity::DIR_RULES),
            ("exec.libraries", "library files and directories", self.library.len(), capacity::LIBRARIES),
            ("exec", "multi-call binaries", self.table.multicall.len(), capacity::MULTICALL),
            ("exec", "applet names", self.applet.len(), capacity::APPLETS),
            (
                "exec",
                "loader paths (`exec.libraries` and the rules' paths, as text)",
                self.loader_paths.len(),
                capacity::LOADER_PATHS,
            ),
        ];
        for (at, what, len, capacity) in tables {
            let fits = usize::try_from(capacity / GENERATIONS).unwrap_or(usize::MAX);
            if len > fits {
                return Err(policy.error_at(
                    at,
                    format!("the exec section compiles to {len} {what}; the kernel's table holds {fits} per policy"),
                ));
            }
        }
        Ok(())
    }

    /// Two rules on the same key with the same effect are merely redundant (the first keeps it); an
    /// allow and a deny on the same key conflict: the deny wins, and it is reported. One pass with an
    /// index: looking each key up in the list so far would be quadratic in the rule count.
    fn merge_duplicates<K: Eq + std::hash::Hash + Copy>(
        entries: Vec<(K, RuleValue)>,
        rules: &[RuleInfo],
        warnings: &mut Vec<Warning>,
    ) -> Vec<(K, RuleValue)> {
        let deny = sentra_common::settings::Effect::Deny as u32;
        let mut index: std::collections::HashMap<K, usize> =
            std::collections::HashMap::with_capacity(entries.len());
        let mut merged: Vec<(K, RuleValue)> = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let Some(slot) = index.get(&key).and_then(|&at| merged.get_mut(at)) else {
                index.insert(key, merged.len());
                merged.push((key, value));
                continue;
            };
            if slot.1.effect == value.effect {
                continue;
            }
            let name = |v: &RuleValue| rules.get(v.rule as usize).map_or("?", |r| r.id.as_str()).to_string();
            let kept = if value.effect == deny { value } else { slot.1 };
            warnings.push(Warning {
                message: format!(
                    "exec rules `{}` and `{}` allow and deny the same file or directory; `{}` (deny) applies",
                    name(&slot.1),
                    name(&value),
                    name(&kept)
                ),
            });
            slot.1 = kept;
        }
        merged
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

/// `name` as the kernel's file-name key (NUL-padded), if it fits with its terminating NUL.
fn name_key(name: &[u8]) -> Option<[u8; NAME_LEN]> {
    if name.len() >= NAME_LEN {
        return None;
    }
    let mut key = [0u8; NAME_LEN];
    key[..name.len()].copy_from_slice(name);
    Some(key)
}

fn file_id(path: &Path) -> std::io::Result<FileId> {
    Ok(FileId::of(&std::fs::metadata(path)?))
}

/// Whether someone other than root could replace or add files at what `meta` describes.
fn writable_meta(meta: &std::fs::Metadata) -> bool {
    meta.uid() != 0 || meta.mode() & 0o022 != 0
}

/// A directory as a compilation sees it.
#[derive(Debug, Clone)]
struct Dir {
    canonical: PathBuf,
    id: FileId,
    writable: bool,
}

/// A file or directory an entry names, resolved.
#[derive(Debug)]
struct Resolved {
    path: PathBuf,
    id: FileId,
    is_dir: bool,
    writable: bool,
    /// The directory holding it.
    parent: Option<Rc<Dir>>,
}

/// The file system lookups of one compilation. Policies name thousands of files in a few
/// directories: each directory is resolved and examined once, and a file that is not a symbolic link
/// costs one `lstat`. Resolving every path whole (`realpath`, one `readlink` per component) and
/// examining file and directory again for each rule cost ~8 system calls per rule.
#[derive(Default)]
struct Lookups<'p> {
    dirs: HashMap<PathBuf, Option<Rc<Dir>>>,
    /// `lstat` results fetched ahead, in parallel ([`Self::prefetch`]), in the order the compilation
    /// asks for them; each is used once. A path not at the front (not prefetched) is looked up then.
    prefetched: VecDeque<(&'p Path, Option<std::fs::Metadata>)>,
}

impl<'p> Lookups<'p> {
    /// Below this many paths per thread, starting a thread costs more than it saves.
    const PREFETCH_PER_THREAD: usize = 512;
    /// Paths a thread takes at a time: threads start late (up to milliseconds on a busy VM), so the
    /// work is shared out as they come rather than split in advance.
    const PREFETCH_BATCH: usize = 128;

    /// `lstat`s `paths` on every CPU at once. A large policy names thousands of files, one system
    /// call each, which dominate compiling it when made one after another. If a thread cannot be
    /// started, the others do its share.
    fn prefetch(&mut self, paths: &[&'p Path]) {
        type Batch<'p> = (usize, Vec<(&'p Path, Option<std::fs::Metadata>)>);
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get).min(8);
        let threads = cpus.min(paths.len() / Self::PREFETCH_PER_THREAD);
        if threads < 2 {
            return;
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let work = || -> Vec<Batch<'p>> {
            let mut done = Vec::new();
            loop {
                let batch = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(part) = paths.chunks(Self::PREFETCH_BATCH).nth(batch) else { return done };
                done.push((batch, part.iter().map(|&p| (p, std::fs::symlink_metadata(p).ok())).collect()));
            }
        };
        let mut batches: Vec<Batch<'p>> = std::thread::scope(|scope| {
            let helpers: Vec<_> = (1..threads)
                .filter_map(|_| std::thread::Builder::new().spawn_scoped(scope, work).ok())
                .collect();
            let mut batches = work();
            for helper in helpers {
                // A helper that failed loses its batches: those paths are looked up again later.
                batches.extend(helper.join().unwrap_or_default());
            }
            batches
        });
        batches.sort_unstable_by_key(|(batch, _)| *batch);
        self.prefetched.extend(batches.into_iter().flat_map(|(_, found)| found));
    }

    fn lstat(&mut self, path: &Path) -> std::io::Result<std::fs::Metadata> {
        if self.prefetched.front().is_some_and(|(p, _)| *p == path)
            && let Some((_, Some(meta))) = self.prefetched.pop_front()
        {
            return Ok(meta);
        }
        std::fs::symlink_metadata(path)
    }

    fn dir(&mut self, path: &Path) -> Option<Rc<Dir>> {
        if let Some(known) = self.dirs.get(path) {
            return known.clone();
        }
        let found = std::fs::canonicalize(path).ok().and_then(|canonical| {
            let meta = std::fs::metadata(&canonical).ok()?;
            Some(Rc::new(Dir { id: FileId::of(&meta), writable: writable_meta(&meta), canonical }))
        });
        self.dirs.insert(path.to_path_buf(), found.clone());
        found
    }

    /// `target` resolved through every symbolic link, as `realpath` would.
    fn resolve(&mut self, target: &Path) -> std::io::Result<Resolved> {
        if let (true, Some(parent), Some(name)) = (is_plain(target), target.parent(), target.file_name()) {
            let meta = self.lstat(target)?;
            if !meta.file_type().is_symlink()
                && let Some(dir) = self.dir(parent)
            {
                return Ok(Resolved {
                    path: dir.canonical.join(name),
                    id: FileId::of(&meta),
                    is_dir: meta.is_dir(),
                    writable: writable_meta(&meta),
                    parent: Some(dir),
                });
            }
        }
        let path = std::fs::canonicalize(target)?;
        let meta = std::fs::metadata(&path)?;
        let parent = path.parent().and_then(|p| self.dir(p));
        Ok(Resolved {
            id: FileId::of(&meta),
            is_dir: meta.is_dir(),
            writable: writable_meta(&meta),
            parent,
            path,
        })
    }
}

/// An absolute path without `.` or `..`: [`Lookups::resolve`] takes it apart without `realpath`.
fn is_plain(path: &Path) -> bool {
    path.is_absolute() && path.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// Where an exec entry is in the policy (`exec.allow[3]`), spelled out only for an error.
struct At<'a> {
    list: &'a str,
    index: usize,
}

impl std::fmt::Display for At<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exec.{}[{}]", self.list, self.index)
    }
}

/// Compiles `policy`'s exec section.
///
/// # Errors
/// Duplicate ids, an entry with not exactly one target, relative paths, an allowed path that does not
/// exist, a name too long for the kernel's key.
pub fn compile(policy: &Policy) -> Result<CompiledExec, PolicyError> {
    compile_with(policy, true)
}

/// Compiles the entries alone, without the warnings about what allowed directories hold (which read
/// every directory an allow entry names) and without resolving `exec.libraries` (which only the
/// kernel enforces; its entries are still validated): what the shell layer needs to decide files.
///
/// # Errors
/// As [`compile`].
pub fn compile_entries(policy: &Policy) -> Result<CompiledExec, PolicyError> {
    compile_with(policy, false)
}

fn compile_with(policy: &Policy, full: bool) -> Result<CompiledExec, PolicyError> {
    let empty = super::model::ExecSection::default();
    let section = policy.model.exec.as_ref().unwrap_or(&empty);
    let search: Vec<PathBuf> = section.path.iter().map(PathBuf::from).collect();
    for dir in &search {
        if !dir.is_absolute() {
            return Err(policy
                .error_at("exec.path", format!("exec.path: `{}` is not an absolute path", dir.display())));
        }
    }
    let mut compiler = Compiler {
        policy,
        search,
        lookups: Lookups::default(),
        seen: HashSet::new(),
        out: CompiledExec::default(),
        full,
        program_dirs: Vec::new(),
        names: multicall::Names::default(),
        allowed_files: Vec::new(),
        dir_rules: Vec::new(),
        loader_paths: BTreeMap::new(),
    };
    compiler.out.table.default = section.default.or(policy.model.default);
    let named: Vec<&Path> = section
        .deny
        .iter()
        .chain(&section.allow)
        .filter_map(|entry| entry.path.as_deref().or(entry.dir.as_deref()))
        .map(Path::new)
        // Only what `resolve` will `lstat`, in its order.
        .filter(|path| is_plain(path))
        .collect();
    compiler.lookups.prefetch(&named);
    for (effect, list, entries) in
        [(Effect::Deny, "deny", &section.deny), (Effect::Allow, "allow", &section.allow)]
    {
        for (i, entry) in entries.iter().enumerate() {
            compiler.entry(&At { list, index: i }, entry, effect)?;
        }
    }
    compiler.original_rules()?;
    compiler.libraries(section.libraries.as_deref())?;
    if full {
        compiler.applets();
        if compiler.out.table.default_effect() == Effect::Allow {
            compiler.loader_path(Path::new("/"), true, true);
        }
    }
    let mut out = compiler.out;
    out.loader_paths = minimal_loader_paths(compiler.loader_paths);
    out.inode =
        CompiledExec::merge_duplicates(std::mem::take(&mut out.inode), &out.table.rules, &mut out.warnings);
    out.name =
        CompiledExec::merge_duplicates(std::mem::take(&mut out.name), &out.table.rules, &mut out.warnings);
    out.dir =
        CompiledExec::merge_duplicates(std::mem::take(&mut out.dir), &out.table.rules, &mut out.warnings);
    out.check_capacity(policy)?;
    Ok(out)
}

/// The loader paths without those the kernel's longest-prefix lookup does not need: an entry is left
/// out when its effect is what its nearest kept ancestor directory gives anyway (or, with none, the
/// deny a lookup that finds nothing gets). Exact: a lookup that would have found a left-out entry
/// finds that ancestor instead, since every shorter stored prefix of the looked-up path is a prefix
/// of the entry too. A policy allowing thousands of programs in one directory that the default
/// libraries allow whole thus stores that directory once.
fn minimal_loader_paths(paths: BTreeMap<String, bool>) -> Vec<(String, bool)> {
    // In sorted order a directory comes before everything below it, and all of that comes next to
    // it: the kept ancestors of an entry are a stack.
    let mut ancestors: Vec<(String, bool)> = Vec::new();
    let mut kept = Vec::new();
    for (path, allow) in paths {
        while ancestors.last().is_some_and(|(dir, _)| !path.starts_with(dir.as_str())) {
            ancestors.pop();
        }
        if ancestors.last().is_some_and(|&(_, inherited)| inherited) == allow {
            continue;
        }
        if path.ends_with('/') {
            ancestors.push((path.clone(), allow));
        }
        kept.push((path, allow));
    }
    kept
}

/// One compilation: the policy, where program names are looked up, the file lookups, the rule ids
/// seen so far, and the entries built.
struct Compiler<'p> {
    policy: &'p Policy,
    /// `exec.path` (absolute directories).
    search: Vec<PathBuf>,
    lookups: Lookups<'p>,
    seen: HashSet<&'p str>,
    out: CompiledExec,
    /// The controller's and `policy check`'s compilation: warnings about allowed entries are worked
    /// out and `exec.libraries` is resolved.
    full: bool,
    /// Directories of programs allowed by path or name, and directories allowed whole: the default
    /// libraries include the `lib` beside each that is a `bin`.
    program_dirs: Vec<PathBuf>,
    /// The program names rules give, for multi-call binaries' applets.
    names: multicall::Names,
    /// Files allowed by `path:`: the name the path gives, the file, the rule, and its id.
    allowed_files: Vec<(String, Resolved, RuleValue, &'p str)>,
    /// `dir:` rules: the directory, the rule, its id.
    dir_rules: Vec<(PathBuf, RuleValue, &'p str)>,
    /// [`CompiledExec::loader_paths`], while they are gathered.
    loader_paths: BTreeMap<String, bool>,
}

/// Where the system keeps shared libraries (and the dynamic loader, which the kernel maps for every
/// dynamically linked program): the default `exec.libraries`, with the `lib` beside each allowed
/// program's `bin` (a Node installed under `/opt/node` keeps its native modules in `/opt/node/lib`).
pub const SYSTEM_LIBRARIES: [&str; 8] =
    ["/lib", "/lib32", "/lib64", "/usr/lib", "/usr/lib32", "/usr/lib64", "/usr/local/lib", "/usr/libexec"];

impl<'p> Compiler<'p> {
    /// Registers a rule under a new index (`what` names the kind in the error for too many).
    fn rule(
        &mut self,
        at: impl std::fmt::Display,
        what: &str,
        info: RuleInfo,
    ) -> Result<RuleValue, PolicyError> {
        let index = u32::try_from(self.out.table.rules.len())
            .map_err(|_| self.policy.error_at(at, format!("too many {what}")))?;
        let value = RuleValue { rule: index, effect: info.effect as u32 };
        self.out.table.rules.push(info);
        Ok(value)
    }

    /// The program name an entry gives (a `name:`, or a `path:`'s file name), noted for multi-call
    /// binaries' applets when it names the program whatever file it turns out to be (a `name:`, a
    /// denied path); an allowed path's name counts only if it leads to one (see [`Self::applets`]).
    fn program_name(
        &mut self,
        entry: &'p ExecEntry,
        kind: Target,
        effect: Effect,
        value: RuleValue,
    ) -> Option<&'p str> {
        let name = match kind {
            Target::Name => entry.name.as_deref(),
            Target::Path => {
                entry.path.as_deref().and_then(|p| Path::new(p).file_name()).and_then(|n| n.to_str())
            }
            Target::Dir => None,
        }?;
        if kind == Target::Name || effect == Effect::Deny {
            self.names.explicit(name, value);
        }
        Some(name)
    }

    /// The multi-call binaries on this machine and the rule covering each program name, for their
    /// applets (`policy::multicall`), with a warning for each rule that allows one.
    fn applets(&mut self) {
        let mut dirs: Vec<PathBuf> = multicall::SYSTEM_BIN.iter().map(PathBuf::from).collect();
        dirs.extend(self.search.iter().cloned());
        dirs.extend(self.program_dirs.iter().cloned());
        let found = multicall::find(&dirs);
        if found.is_empty() {
            return;
        }
        let mut names = std::mem::take(&mut self.names);
        let mut allowing: Vec<(&str, PathBuf)> = Vec::new();
        for (name, resolved, value, rule) in std::mem::take(&mut self.allowed_files) {
            if found.contains_key(&resolved.id) {
                names.explicit(&name, value);
                allowing.push((rule, resolved.path));
            }
        }
        for (dir, value, rule) in &self.dir_rules {
            let links = multicall::links_in(dir, &found);
            if value.effect == Effect::Allow as u32 && !links.is_empty() {
                allowing.push((rule, dir.clone()));
            }
            for link in links {
                names.linked(link, *value);
            }
        }
        let resolved = names.resolve();
        self.out.applet =
            resolved.iter().filter_map(|(name, value)| Some((name_key(name.as_bytes())?, *value))).collect();
        let mut binaries: Vec<MulticallBinary> = found
            .into_iter()
            .map(|(id, binary)| MulticallBinary {
                dev: id.dev,
                ino: id.ino,
                stem: binary.stem.to_string(),
                path: binary.path,
            })
            .collect();
        binaries.sort_unstable();
        self.out.table.multicall = binaries;
        if allowing.is_empty() {
            return;
        }
        let allowed: Vec<&str> = resolved
            .iter()
            .filter(|(_, v)| v.effect == Effect::Allow as u32)
            .map(|(n, _)| n.as_str())
            .collect();
        let shown = allowed.iter().take(12).copied().collect::<Vec<_>>().join(", ");
        let more = allowed.len().saturating_sub(12);
        let default = self.out.table.default_effect().as_str();
        for (rule, path) in allowing {
            self.out.warnings.push(Warning {
                message: format!(
                    "exec rule `{rule}` allows {}, a multi-call binary (or links to one): the kernel decides each of its runs by the applet it starts (its argv[0], or the argument after `busybox`/`toybox`) as a program of that name; a name no rule covers gets the default ({default}). Names the policy allows: {}{}",
                    path.display(),
                    if shown.is_empty() { "none" } else { &shown },
                    if more > 0 { format!(" and {more} more") } else { String::new() },
                ),
            });
        }
    }

    /// Adds `path` (a directory when `dir`) to the loader paths, as given and as resolved; a deny of
    /// either text stays a deny.
    fn loader_path(&mut self, path: &Path, dir: bool, allow: bool) {
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        for text in [path, canonical.as_path()] {
            let mut text = text.to_string_lossy().into_owned();
            if dir && !text.ends_with('/') {
                text.push('/');
            }
            let entry = self.loader_paths.entry(text).or_insert(allow);
            *entry &= allow;
        }
    }

    /// `exec.libraries`, or the default when the policy has none.
    fn libraries(&mut self, listed: Option<&[String]>) -> Result<(), PolicyError> {
        let policy = self.policy;
        let mut targets: Vec<(Option<usize>, PathBuf)> = Vec::new();
        if let Some(listed) = listed {
            for (i, path) in listed.iter().enumerate() {
                let path = PathBuf::from(path);
                if !path.is_absolute() {
                    return Err(policy.error_at(
                        format!("exec.libraries[{i}]"),
                        format!("exec.libraries: `{}` is not an absolute path", path.display()),
                    ));
                }
                targets.push((Some(i), path));
            }
        }
        if !self.full {
            return Ok(());
        }
        if listed.is_none() {
            targets.extend(SYSTEM_LIBRARIES.iter().map(|p| (None, PathBuf::from(p))));
            for dir in &self.program_dirs {
                if dir.file_name().is_some_and(|n| n == "bin")
                    && let Some(prefix) = dir.parent()
                {
                    targets.push((None, prefix.join("lib")));
                }
            }
        }
        let mut seen = HashSet::new();
        for (index, path) in targets {
            match std::fs::metadata(&path) {
                Ok(meta) => {
                    if seen.insert(FileId::of(&meta)) {
                        self.out.library.push(FileId::of(&meta));
                    }
                    self.loader_path(&path, meta.is_dir(), true);
                }
                Err(err) => {
                    if let Some(i) = index {
                        self.out.warnings.push(Warning {
                            message: format!(
                                "exec.libraries[{i}]: {}: {err}; nothing to allow",
                                path.display()
                            ),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// The original Sentra `rules` that the kernel can enforce: those matching on the executable
    /// alone, with a regex that is a plain alternation of names. Everything else stays with the shell
    /// layer. Missing programs are noted, not errors: original policies list programs not every host
    /// has.
    fn original_rules(&mut self) -> Result<(), PolicyError> {
        let policy = self.policy;
        let search: Vec<PathBuf> = if self.search.is_empty() {
            ["/usr/local/bin", "/usr/bin", "/bin"].iter().map(PathBuf::from).collect()
        } else {
            self.search.clone()
        };
        for (i, rule) in policy.model.rules.iter().enumerate() {
            let at = format!("rules[{i}]");
            let m = &rule.matcher;
            let why = if m.args_pattern.is_some() {
                Some("it matches arguments")
            } else if m.identity.is_some() {
                Some("it matches the identity")
            } else if m.executable.is_none() {
                Some("it names no executable")
            } else {
                None
            };
            let names = match (why, policy.rule_names.get(i).cloned().flatten()) {
                (Some(why), _) => {
                    self.out.shell_only.push((rule.id.clone(), why.to_string()));
                    continue;
                }
                (None, None) => {
                    self.out
                        .shell_only
                        .push((rule.id.clone(), "its executable regex is not a plain list of names".into()));
                    continue;
                }
                (None, Some(names)) => names,
            };
            if !self.seen.insert(&rule.id) {
                return Err(
                    policy.error_at(format!("{at}.id"), format!("rule id `{}` is used twice", rule.id))
                );
            }
            let info = RuleInfo { id: rule.id.clone(), reason: rule.reason.clone(), effect: rule.effect };
            let value = self.rule(&at, "rules", info)?;
            for name in &names {
                self.names.explicit(name, value);
            }
            for name in names {
                let chosen = find_in_path(&search, &name, rule.effect);
                if chosen.is_empty() {
                    self.out.absent.push(format!("{}: `{name}` not found in exec.path", rule.id));
                }
                for target in chosen {
                    let Ok(resolved) = self.lookups.resolve(&target) else { continue };
                    let (Some(parent), Some(key)) = (
                        &resolved.parent,
                        resolved.path.file_name().and_then(|n| name_key(n.as_encoded_bytes())),
                    ) else {
                        continue;
                    };
                    self.out.name.push(((parent.id, key), value));
                    if rule.effect == Effect::Deny {
                        self.out.inode.push((resolved.id, value));
                    }
                }
            }
            self.out.kernel_rules.push(rule.id.clone());
        }
        Ok(())
    }

    /// One `exec.allow` or `exec.deny` entry.
    #[expect(clippy::too_many_lines, reason = "one entry's targets, each checked and turned into its keys")]
    fn entry(&mut self, at: &At<'_>, entry: &'p ExecEntry, effect: Effect) -> Result<(), PolicyError> {
        let policy = self.policy;
        if !self.seen.insert(&entry.id) {
            return Err(
                policy.error_at(format!("{at}.id"), format!("exec rule id `{}` is used twice", entry.id))
            );
        }
        let kind = match (&entry.path, &entry.dir, &entry.name) {
            (Some(_), None, None) => Target::Path,
            (None, Some(_), None) => Target::Dir,
            (None, None, Some(_)) => Target::Name,
            _ => {
                return Err(policy.error_at(
                    at,
                    format!("exec rule `{}`: give exactly one of `path`, `dir`, `name`", entry.id),
                ));
            }
        };
        let info = RuleInfo { id: entry.id.clone(), reason: entry.reason.clone(), effect };
        let value = self.rule(at, "exec rules", info)?;
        let given_name = self.program_name(entry, kind, effect, value);
        let targets = targets_of(policy, at, &self.search, entry, kind, effect)?;
        let out = &mut self.out;
        // What the loader may be pointed at (`loader_path`), added once `out` is no longer borrowed.
        let mut loader: Vec<(PathBuf, bool)> = Vec::new();
        if targets.is_empty() {
            return unresolved(policy, at, entry, effect, out, "not found in exec.path");
        }
        for target in targets {
            let Ok(resolved) = self.lookups.resolve(&target) else {
                unresolved(
                    policy,
                    at,
                    entry,
                    effect,
                    out,
                    &format!("`{}` does not exist", target.display()),
                )?;
                continue;
            };
            let id = resolved.id;
            if kind == Target::Dir {
                if !resolved.is_dir {
                    return Err(policy.error_at(
                        at,
                        format!(
                            "exec rule `{}`: `dir` {} is not a directory",
                            entry.id,
                            resolved.path.display()
                        ),
                    ));
                }
                if effect == Effect::Allow && self.full {
                    allow_warnings(entry, kind, &resolved, out);
                }
                if effect == Effect::Allow {
                    self.program_dirs.push(resolved.path.clone());
                }
                loader.push((target.clone(), true));
                self.dir_rules.push((resolved.path.clone(), value, &entry.id));
                out.dir.push((id, value));
                continue;
            }
            let (Some(parent), Some(name)) = (&resolved.parent, resolved.path.file_name()) else {
                return Err(policy.error_at(
                    at,
                    format!(
                        "exec rule `{}`: {} is not a file in a directory",
                        entry.id,
                        resolved.path.display()
                    ),
                ));
            };
            let Some(key) = name_key(name.as_encoded_bytes()) else {
                return Err(policy.error_at(
                    at,
                    format!(
                        "exec rule `{}`: file name of {} is longer than {} bytes, which the kernel key holds",
                        entry.id,
                        resolved.path.display(),
                        NAME_LEN - 1
                    ),
                ));
            };
            out.name.push(((parent.id, key), value));
            if effect == Effect::Allow && self.full {
                allow_warnings(entry, kind, &resolved, out);
            }
            loader.push((target.clone(), false));
            if effect == Effect::Allow {
                self.program_dirs.push(parent.canonical.clone());
                if kind == Target::Path
                    && let Some(name) = given_name
                {
                    self.allowed_files.push((name.to_string(), resolved, value, &entry.id));
                }
            } else {
                // Follow the binary through hard links.
                out.inode.push((id, value));
            }
        }
        if self.full {
            for (path, dir) in loader {
                self.loader_path(&path, dir, effect == Effect::Allow);
            }
        }
        Ok(())
    }
}

/// The files (or directory) an entry names: its absolute path, or a name looked up in `exec.path`.
fn targets_of(
    policy: &Policy,
    at: &At<'_>,
    search: &[PathBuf],
    entry: &ExecEntry,
    kind: Target,
    effect: Effect,
) -> Result<Vec<PathBuf>, PolicyError> {
    Ok(match kind {
        Target::Path | Target::Dir => {
            let raw = PathBuf::from(entry.path.as_ref().or(entry.dir.as_ref()).map_or("", String::as_str));
            if !raw.is_absolute() {
                return Err(policy.error_at(
                    at,
                    format!("exec rule `{}`: `{}` is not an absolute path", entry.id, raw.display()),
                ));
            }
            vec![raw]
        }
        Target::Name => {
            let name = entry.name.as_deref().unwrap_or_default();
            if name.contains('/') || name.is_empty() {
                return Err(
                    policy.error_at(at, format!("exec rule `{}`: `{name}` is not a program name", entry.id))
                );
            }
            find_in_path(search, name, effect)
        }
    })
}

/// The files named `name` in the `search` directories that a rule with `effect` covers: the shell
/// runs the first match, so an allow covers that one, and a deny covers all of them.
fn find_in_path(search: &[PathBuf], name: &str, effect: Effect) -> Vec<PathBuf> {
    let found =
        path_candidates(search.iter().map(PathBuf::as_path), Path::new("/"), name).filter(|p| p.is_file());
    match effect {
        Effect::Allow => found.take(1).collect(),
        Effect::Deny => found.collect(),
    }
}

/// Each `DIR/name` of a search list, in order, as the kernel and the shells look names up: a
/// relative entry (an empty one is `.`) is taken from `base`. The one walk over `PATH`-like lists
/// (the exec section's `path`, the shell's `PATH` for programs and for sourced scripts); each caller
/// says which candidate counts.
pub fn path_candidates<'a>(
    search: impl IntoIterator<Item = &'a Path> + 'a,
    base: &'a Path,
    name: &'a str,
) -> impl Iterator<Item = PathBuf> + 'a {
    search.into_iter().map(move |dir| base.join(dir).join(name))
}

/// Programs that run arbitrary code given to them as text: allowing one allows whatever it is told to
/// do, within what the kernel lets it exec.
const INTERPRETERS: &[&str] = &[
    "sh", "dash", "bash", "zsh", "ksh", "fish", "csh", "tcsh", "busybox", "python", "python3", "perl",
    "ruby", "node", "nodejs", "php", "lua", "tclsh", "awk", "gawk", "mawk", "env", "xargs",
];

fn is_interpreter(name: &str) -> bool {
    INTERPRETERS.contains(&name)
        || (name.starts_with("python3.") && name[8..].chars().all(|c| c.is_ascii_digit()))
}

/// Warnings about an allow entry: interpreters it opens, files others can change.
fn allow_warnings(entry: &ExecEntry, kind: Target, resolved: &Resolved, out: &mut CompiledExec) {
    let mut found: Vec<String> = Vec::new();
    let writable_dir = resolved.parent.as_ref().is_some_and(|d| d.writable);
    let resolved_writable = resolved.writable;
    let resolved = resolved.path.as_path();
    if kind == Target::Dir {
        if let Ok(entries) = std::fs::read_dir(resolved) {
            found = entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| is_interpreter(n))
                .collect();
            found.sort();
        }
        if resolved_writable {
            out.warnings.push(Warning {
                message: format!(
                    "exec rule `{}`: {} is writable by non-root users: anything put there may run",
                    entry.id,
                    resolved.display()
                ),
            });
        }
    } else {
        if resolved.file_name().and_then(|n| n.to_str()).is_some_and(is_interpreter) {
            found.push(resolved.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        }
        if resolved_writable || writable_dir {
            out.warnings.push(Warning {
                message: format!(
                    "exec rule `{}`: {} (or its directory) is writable by non-root users, who could replace it",
                    entry.id,
                    resolved.display()
                ),
            });
        }
    }
    if !found.is_empty() {
        out.warnings.push(Warning {
            message: format!(
                "exec rule `{}` allows shells or interpreters ({}): they run any code given to them as text; the kernel still governs every program they start",
                entry.id,
                found.join(", ")
            ),
        });
    }
}

/// An entry whose target does not exist: an error for an allow (it would allow nothing, likely a typo)
/// unless it is marked `optional`; for a deny it is noted (denying an absent program is harmless, and
/// shipped policies list programs that only some distributions have). Installing the program later
/// needs a reload for the entry to apply.
fn unresolved(
    policy: &Policy,
    at: &At<'_>,
    entry: &ExecEntry,
    effect: Effect,
    out: &mut CompiledExec,
    why: &str,
) -> Result<(), PolicyError> {
    match effect {
        Effect::Allow if !entry.optional => Err(policy.error_at(
            at,
            format!("exec rule `{}`: {why} (mark it `optional: true` if it is installed later)", entry.id),
        )),
        Effect::Allow | Effect::Deny => {
            out.absent.push(format!("{}: {why}", entry.id));
            Ok(())
        }
    }
}

/// The files the kernel judges when `program` is executed, in order: the file itself, then for a script
/// (`#!`) its interpreter (`fs/binfmt_script.c` re-runs the exec on it, and `bprm_check_security` sees
/// both), and through `#!/usr/bin/env NAME` the program `env` then executes, found in `search` as `env`
/// finds it in `PATH`. Nested scripts are followed up to the kernel's own limit of interpreter nesting
/// (`BINPRM_MAX_RECURSION`, 4).
#[must_use]
pub fn exec_chain(program: &Path, search: &[PathBuf]) -> Vec<PathBuf> {
    use std::io::Read as _;
    let mut chain = vec![program.to_path_buf()];
    let mut current = program.to_path_buf();
    for _ in 0..4 {
        let mut head = [0u8; 256];
        let Ok(read) = std::fs::File::open(&current).and_then(|mut f| f.read(&mut head)) else { break };
        let Some(line) = head[..read].strip_prefix(b"#!") else { break };
        let line =
            String::from_utf8_lossy(line.split(|&b| b == b'\n').next().unwrap_or_default()).into_owned();
        let mut words = line.split_whitespace();
        let Some(interpreter) = words.next() else { break };
        let interpreter = PathBuf::from(interpreter);
        chain.push(interpreter.clone());
        current.clone_from(&interpreter);
        if interpreter.file_name().is_some_and(|name| name == "env") {
            // `env [-S] [-i] [NAME=VALUE…] PROGRAM …`: the first word that is neither an option nor
            // an assignment.
            let Some(name) = words.find(|w| !w.starts_with('-') && !w.contains('=')) else { break };
            let found = if name.contains('/') {
                Some(PathBuf::from(name))
            } else {
                search.iter().map(|dir| dir.join(name)).find(|p| p.is_file())
            };
            let Some(found) = found else { break };
            chain.push(found.clone());
            current = found;
        }
    }
    chain
}

/// How the kernel layer would decide one file, worked out in userspace with the same precedence as
/// `sentra-ebpf/src/exec/decide.rs` (used by `policy explain` and its tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelExplanation {
    /// The file the kernel would see (symlinks resolved).
    pub file: PathBuf,
    pub effect: Effect,
    /// The deciding rule's id, or `None` for the default.
    pub rule: Option<String>,
    /// Which kind of entry matched, in words.
    pub how: String,
}

impl CompiledExec {
    /// Explains the kernel layer's decision on executing `path`.
    ///
    /// # Errors
    /// The file does not exist or cannot be inspected.
    pub fn explain(&self, path: &Path) -> std::io::Result<KernelExplanation> {
        std::fs::metadata(path)?;
        ExecFiles::new(self, true).decide(path)
    }

    /// Warnings for each of Sentra's own tools installed here (the controller beside this binary and
    /// in the usual places, `bpftool`) that the governed agent may execute: with it, a root agent
    /// talks to the kernel's BPF state or the controller directly.
    #[must_use]
    pub fn own_tools_reachable(&self) -> Vec<super::Warning> {
        let mut candidates: Vec<PathBuf> =
            ["/usr/local/bin/sentra-ctl", "/usr/bin/sentra-ctl", "/usr/sbin/bpftool", "/usr/bin/bpftool"]
                .iter()
                .map(PathBuf::from)
                .collect();
        if let Ok(exe) = std::env::current_exe() {
            candidates.insert(0, exe);
        }
        let mut seen = Vec::new();
        let files = ExecFiles::new(self, true);
        let mut warnings = Vec::new();
        for candidate in candidates {
            let Ok(real) = std::fs::canonicalize(&candidate) else { continue };
            if seen.contains(&real) {
                continue;
            }
            seen.push(real.clone());
            if let Ok(decision) = files.decide(&real)
                && decision.effect == Effect::Allow
            {
                warnings.push(super::Warning {
                    message: format!(
                        "the governed agent may execute {} ({}{}): deny it, e.g. `- {{ id: no_{}, name: {} }}` under exec.deny",
                        real.display(),
                        decision.how,
                        decision.rule.map(|r| format!(", rule {r}")).unwrap_or_default(),
                        real.file_name().map(|n| n.to_string_lossy().replace('-', "_")).unwrap_or_default(),
                        real.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                    ),
                });
            }
        }
        warnings
    }
}

/// [`ExecFiles`] compiled on first use: compiling looks up every rule's target, which a line that
/// runs only builtins (or a shell that judges no line) never needs.
#[derive(Debug)]
pub struct LazyExecFiles {
    policy: Option<std::rc::Rc<Policy>>,
    files: std::cell::OnceCell<Result<ExecFiles, String>>,
}

impl LazyExecFiles {
    #[must_use]
    pub fn new(policy: std::rc::Rc<Policy>) -> Self {
        Self { policy: Some(policy), files: std::cell::OnceCell::new() }
    }

    /// The entries, compiled now if not yet.
    ///
    /// # Errors
    /// The exec section does not compile on this machine (the message says why).
    pub fn get(&self) -> Result<&ExecFiles, &str> {
        self.files
            .get_or_init(|| match &self.policy {
                // Without an `exec:` section the entries are the original rules' plain names, which
                // the shell already judges by name (and by the real file's name): looking each up
                // would cost more than the rest of the shell's start.
                Some(policy) if policy.model.exec.is_none() => Ok(ExecFiles::default()),
                Some(policy) => compile_entries(policy)
                    .map(|compiled| ExecFiles::new(&compiled, true))
                    .map_err(|err| crate::describe(&err)),
                None => Ok(ExecFiles::default()),
            })
            .as_ref()
            .map_err(String::as_str)
    }
}

impl From<ExecFiles> for LazyExecFiles {
    fn from(files: ExecFiles) -> Self {
        Self { policy: None, files: std::cell::OnceCell::from(Ok(files)) }
    }
}

/// The exec entries of one compiled policy indexed by key, to decide files in userspace as the kernel
/// does (`sentra-ebpf/src/exec/decide.rs`: the file's inode, then its exact path, then the nearest
/// directory, then the default). The shell layer uses it to judge the file a command will run.
#[derive(Debug, Clone, Default)]
pub struct ExecFiles {
    table: RuleTable,
    inode: HashMap<FileId, RuleValue>,
    name: HashMap<(FileId, [u8; NAME_LEN]), RuleValue>,
    dir: HashMap<FileId, RuleValue>,
    /// Files no entry covers take the default (a policy with an `exec:` section); otherwise only the
    /// entries decide.
    default_applies: bool,
}

impl ExecFiles {
    #[must_use]
    pub fn new(compiled: &CompiledExec, default_applies: bool) -> Self {
        Self {
            table: compiled.table.clone(),
            inode: compiled.inode.iter().copied().collect(),
            name: compiled.name.iter().copied().collect(),
            dir: compiled.dir.iter().copied().collect(),
            default_applies,
        }
    }

    /// The reason the policy gives for the rule with this id.
    #[must_use]
    pub fn reason(&self, id: &str) -> Option<&str> {
        self.table.rules.iter().find(|r| r.id == id).and_then(|r| r.reason.as_deref())
    }

    /// Whether no entry can decide anything (nothing to look up).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        !self.default_applies && self.inode.is_empty() && self.name.is_empty() && self.dir.is_empty()
    }

    /// How the kernel would decide executing `path` (symlinks followed). A file that does not exist
    /// yet (a line may create it before running it) is decided by where it would be: the directory
    /// entries above it, else the default.
    ///
    /// # Errors
    /// A directory above the file cannot be inspected.
    pub fn decide(&self, path: &Path) -> std::io::Result<KernelExplanation> {
        let (file, exists) = match std::fs::canonicalize(path) {
            Ok(file) => (file, true),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
                let name = path.file_name().unwrap_or_default();
                (std::fs::canonicalize(parent)?.join(name), false)
            }
            Err(err) => return Err(err),
        };
        self.decide_canonical(file, exists)
    }

    /// [`Self::decide`] on a path already canonical (`exists`: the file is there).
    ///
    /// # Errors
    /// The file or a directory above it cannot be inspected.
    pub fn decide_canonical(&self, file: PathBuf, exists: bool) -> std::io::Result<KernelExplanation> {
        let decided = |file: PathBuf, value: &RuleValue, how: String| {
            let rule = self.table.rule(value.rule);
            KernelExplanation {
                file,
                effect: rule.map_or(Effect::Deny, |r| r.effect),
                rule: rule.map(|r| r.id.clone()),
                how,
            }
        };
        if exists {
            let id = file_id(&file)?;
            if let Some(value) = self.inode.get(&id) {
                return Ok(decided(
                    file,
                    value,
                    "the file itself (device and inode: follows hard links)".into(),
                ));
            }
            if let (Some(parent), Some(key)) =
                (file.parent(), file.file_name().and_then(|n| name_key(n.as_encoded_bytes())))
                && let Some(value) = self.name.get(&(file_id(parent)?, key))
            {
                let how = format!("exact path {}", file.display());
                return Ok(decided(file, value, how));
            }
        }
        for ancestor in file.ancestors().skip(1) {
            let Ok(dir) = file_id(ancestor) else { continue };
            if let Some(value) = self.dir.get(&dir) {
                let how = format!("directory {}", ancestor.display());
                return Ok(decided(file, value, how));
            }
        }
        let (effect, how) = if self.default_applies {
            (self.table.default_effect(), "no exec entry covers this file: the default applies")
        } else {
            (Effect::Allow, "no exec entry covers this file and the policy has no `exec:` section")
        };
        Ok(KernelExplanation { file, effect, rule: None, how: how.into() })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_chain_of_a_script_names_its_interpreter_and_what_env_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("bin");
        std::fs::write(bin.join("tool"), "\x7fELF").expect("tool");
        let script = dir.path().join("run.mjs");
        std::fs::write(&script, "#!/usr/bin/env -S tool --flag\nbody\n").expect("script");
        let chain = super::exec_chain(&script, std::slice::from_ref(&bin));
        assert_eq!(chain, vec![script.clone(), "/usr/bin/env".into(), bin.join("tool")]);
        std::fs::write(&script, "#!/bin/sh -e\n").expect("script");
        assert_eq!(super::exec_chain(&script, &[]), vec![script.clone(), "/bin/sh".into()]);
        assert_eq!(super::exec_chain(&bin.join("tool"), &[]), vec![bin.join("tool")]);
    }

    use std::path::{Path, PathBuf};

    use super::{Lookups, file_id};

    #[test]
    fn lookups_resolve_as_realpath_does() {
        let root = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(root.path()).expect("canonical");
        std::fs::create_dir_all(root.join("real/bin")).expect("mkdir");
        std::fs::write(root.join("real/bin/tool"), b"").expect("write");
        std::os::unix::fs::symlink(root.join("real/bin"), root.join("linked")).expect("symlink dir");
        std::os::unix::fs::symlink(root.join("real/bin/tool"), root.join("real/alias"))
            .expect("symlink file");
        let mut lookups = Lookups::default();
        for target in ["real/bin/tool", "linked/tool", "real/alias", "real/bin/../bin/tool"] {
            let target = root.join(target);
            let resolved = lookups.resolve(&target).expect("resolves");
            let expected = std::fs::canonicalize(&target).expect("canonical");
            assert_eq!(resolved.path, expected, "{}", target.display());
            assert_eq!(resolved.id, file_id(&expected).expect("id"));
            let parent = resolved.parent.expect("parent");
            assert_eq!(parent.canonical, root.join("real/bin"));
            assert_eq!(parent.id, file_id(&root.join("real/bin")).expect("id"));
        }
        assert!(lookups.resolve(&root.join("real/bin/missing")).is_err());
    }

    #[test]
    fn prefetched_lookups_resolve_as_one_by_one_lookups_do() {
        let root = tempfile::tempdir().expect("tempdir");
        let root = std::fs::canonicalize(root.path()).expect("canonical");
        std::fs::create_dir_all(root.join("bin")).expect("mkdir");
        let mut targets = Vec::new();
        for i in 0..1500 {
            let path = root.join(format!("bin/f{i}"));
            match i % 100 {
                // A symbolic link (the slow path) and a missing file among prefetched ones.
                7 => std::os::unix::fs::symlink(root.join("bin/f0"), &path).expect("symlink"),
                8 => {}
                _ => std::fs::write(&path, b"").expect("write"),
            }
            targets.push(path);
        }
        let named: Vec<&Path> = targets.iter().map(PathBuf::as_path).collect();
        let mut prefetched = Lookups::default();
        prefetched.prefetch(&named);
        if std::thread::available_parallelism().map_or(1, std::num::NonZero::get) > 1 {
            assert_eq!(prefetched.prefetched.len(), targets.len(), "every path prefetched, in order");
        }
        let mut plain = Lookups::default();
        for target in &targets {
            match (prefetched.resolve(target), plain.resolve(target)) {
                (Ok(a), Ok(b)) => {
                    assert_eq!((a.path, a.id, a.is_dir, a.writable), (b.path, b.id, b.is_dir, b.writable));
                }
                (Err(_), Err(_)) => {}
                (a, b) => panic!("{}: {a:?} vs {b:?}", target.display()),
            }
        }
        assert!(prefetched.prefetched.is_empty(), "each prefetched result used once");
    }
}

#[cfg(test)]
mod explain_tests {
    use std::path::Path;

    use super::{Effect, compile};
    use crate::policy::Policy;

    #[test]
    fn precedence_is_inode_then_exact_path_then_nearest_directory_then_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        for sub in ["bin", "bin/inner", "other"] {
            std::fs::create_dir_all(root.join(sub)).expect("mkdir");
        }
        for file in ["bin/tool", "bin/inner/tool", "bin/denied", "other/tool"] {
            std::fs::write(root.join(file), b"").expect("file");
        }
        std::fs::hard_link(root.join("bin/denied"), root.join("other/alias")).expect("hard link");
        std::os::unix::fs::symlink(root.join("bin/denied"), root.join("other/link")).expect("symlink");
        let text = format!(
            "exec:\n  default: deny\n  allow:\n    - {{ id: bin, dir: {0}/bin }}\n  deny:\n    - {{ id: inner, dir: {0}/bin/inner }}\n    - {{ id: denied, path: {0}/bin/denied }}\n",
            root.display()
        );
        let policy = Policy::parse(Path::new("p.yaml"), &text).expect("policy");
        let compiled = compile(&policy).expect("compile");
        let explain = |p: &str| compiled.explain(&root.join(p)).expect("explain");
        assert_eq!(explain("bin/tool").rule.as_deref(), Some("bin"));
        assert_eq!(explain("bin/tool").effect, Effect::Allow);
        assert_eq!(explain("bin/inner/tool").rule.as_deref(), Some("inner"), "nearest directory wins");
        assert_eq!(explain("bin/denied").rule.as_deref(), Some("denied"));
        assert_eq!(explain("other/alias").rule.as_deref(), Some("denied"), "hard link keeps the inode");
        assert_eq!(explain("other/link").rule.as_deref(), Some("denied"), "symlink resolved");
        let other = explain("other/tool");
        assert_eq!((other.rule, other.effect), (None, Effect::Deny));
    }
}

#[cfg(test)]
mod loader_path_tests {
    use std::collections::BTreeMap;

    use super::minimal_loader_paths;

    /// The kernel's lookup: the longest stored directory prefix, or the file itself; nothing: denied.
    fn lookup(stored: &[(String, bool)], path: &str) -> bool {
        stored
            .iter()
            .filter(
                |(entry, _)| {
                    if entry.ends_with('/') { path.starts_with(entry.as_str()) } else { entry == path }
                },
            )
            .max_by_key(|(entry, _)| entry.len())
            .is_some_and(|&(_, allow)| allow)
    }

    #[test]
    fn left_out_loader_paths_change_no_lookup() {
        let entries = [
            ("/", false),
            ("/usr/", true),
            ("/usr/lib/", true),
            ("/usr/lib/x86_64-linux-gnu/", true),
            ("/usr/lib/evil/", false),
            ("/usr/lib/evil/ok.so", true),
            ("/usr/lib/evil/sub/", false),
            ("/usr/lib/evil/sub/deeper/", true),
            ("/usr/libexec/", false),
            ("/usr/bin/python3", true),
            ("/opt/tools/", true),
            ("/opt/tools/a", true),
            ("/opt/tools/b", false),
            ("/opt/toolsx", true),
            ("/srv/a", false),
        ];
        let all: Vec<(String, bool)> = entries.iter().map(|&(p, a)| (p.to_string(), a)).collect();
        let kept = minimal_loader_paths(all.iter().cloned().collect::<BTreeMap<_, _>>());
        let kept_names: Vec<&str> = kept.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            kept_names,
            [
                "/opt/tools/",
                "/opt/tools/b",
                "/opt/toolsx",
                "/usr/",
                "/usr/lib/evil/",
                "/usr/lib/evil/ok.so",
                "/usr/lib/evil/sub/deeper/",
                "/usr/libexec/"
            ]
        );
        let probes = [
            "/",
            "/etc/passwd",
            "/usr/",
            "/usr/x",
            "/usr/lib/libc.so.6",
            "/usr/lib/x86_64-linux-gnu/libm.so",
            "/usr/lib/evil/x.so",
            "/usr/lib/evil/ok.so",
            "/usr/lib/evil/ok.so.1",
            "/usr/lib/evil/sub/x",
            "/usr/lib/evil/sub/deeper/x",
            "/usr/libexec/x",
            "/usr/libexecx",
            "/usr/bin/python3",
            "/opt/tools/a",
            "/opt/tools/b",
            "/opt/tools/c",
            "/opt/toolsx",
            "/opt/toolsy",
            "/srv/a",
            "/srv/b",
        ];
        for probe in probes {
            assert_eq!(lookup(&kept, probe), lookup(&all, probe), "{probe}");
        }
    }

    #[test]
    fn thousands_of_programs_in_an_allowed_directory_store_it_once() {
        let mut paths = BTreeMap::from([("/opt/bench/".to_string(), true)]);
        for i in 0..10_000 {
            paths.insert(format!("/opt/bench/tool{i}"), true);
        }
        assert_eq!(minimal_loader_paths(paths), [("/opt/bench/".to_string(), true)]);
    }
}

#[cfg(test)]
mod capacity_tests {
    use std::{fmt::Write as _, path::Path};

    use super::{Policy, PolicyError, compile};

    #[test]
    fn a_policy_larger_than_the_kernels_tables_is_refused_when_compiled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut text = String::from("# too many libraries\nexec:\n  default: deny\n  libraries:\n");
        for i in 0..4097 {
            let lib = dir.path().join(format!("lib{i}"));
            std::fs::create_dir(&lib).expect("mkdir");
            let _ = writeln!(text, "    - {}", lib.display());
        }
        let policy = Policy::parse(Path::new("p.yaml"), &text).expect("policy");
        let Err(PolicyError::Invalid(err)) = compile(&policy) else { panic!("compiled") };
        assert!(err.message.contains("4097 library files and directories;"), "{}", err.message);
        assert!(err.message.contains("holds 4096 per policy"), "{}", err.message);
        assert_eq!((err.line, err.column), (5, 5), "the list: {err:?}");
        text = text.replacen(&format!("    - {}\n", dir.path().join("lib0").display()), "", 1);
        let policy = Policy::parse(Path::new("p.yaml"), &text).expect("policy");
        assert_eq!(compile(&policy).expect("fits").library.len(), 4096);
    }
}
