//! The exec decision: what `bprm->file` is, and which rule covers it.
//!
//! Precedence, most specific first:
//! 1. the file's own (device, inode) in `EXEC_INODE_RULES` (denies that follow hard links);
//! 2. (parent directory, name) in `EXEC_NAME_RULES` (exact paths);
//! 3. the nearest ancestor directory in `EXEC_DIR_RULES` (prefixes), crossing mount points;
//! 4. the generation's default.
//!
//! Everything is resolved from the kernel's dentries, so symlinks have already been followed and the
//! string the caller passed plays no part. The walk also records the path components for the event.

use sentra_common::{
    event::{ExecEvent, MAX_PATH_COMPONENTS, ProbeSite, flags},
    exec::{
        InodeKey, MAX_WALK_DEPTH, MultiCall, NAME_LEN, NameKey, RULE_DEFAULT, RULE_PATH_TOO_DEEP,
        RULE_SPECIAL_MIN, RuleValue,
    },
    offsets::KernelOffsets,
    settings::{Effect, Settings},
};

use crate::{
    kernel::{self, ReadError},
    maps::{EXEC_DIR_RULES, EXEC_INODE_RULES, EXEC_LIBRARIES, EXEC_MULTICALL, EXEC_NAME_RULES},
};

/// The rule (or default) that decided, and its effect.
#[derive(Clone, Copy)]
pub struct Verdict {
    pub effect: u32,
    pub rule: u32,
}

/// "No rule matched yet": below every rule index with a meaning of its own, above every policy rule.
const NO_MATCH: u32 = RULE_SPECIAL_MIN - 1;

impl Verdict {
    pub const NONE: Self = Self { effect: 0, rule: NO_MATCH };

    /// Whether a rule (not the default) matched.
    #[inline(always)]
    pub fn found(self) -> bool {
        self.rule != NO_MATCH
    }

    /// Copies a map value into scalars at once. Volatile reads keep LLVM from carrying the map-value
    /// pointer along and merging it with flags, which the verifier rejects ("bitwise operator on
    /// pointer prohibited").
    #[inline(always)]
    pub fn from_value(value: Option<&RuleValue>) -> Self {
        match value {
            // SAFETY: a valid reference to a map value, read once.
            Some(value) => unsafe {
                Self {
                    effect: core::ptr::read_volatile(&raw const value.effect),
                    rule: core::ptr::read_volatile(&raw const value.rule),
                }
            },
            None => Self::NONE,
        }
    }
}

#[inline(always)]
fn dir_rule(generation: u32, dentry: u64, off: &KernelOffsets) -> Result<Verdict, ReadError> {
    let (dev, ino) = kernel::identity(dentry, off)?;
    let key = InodeKey { generation, pad: 0, dev, ino };
    // SAFETY: lookup with a stack key; the value is copied out at once.
    Ok(Verdict::from_value(unsafe { EXEC_DIR_RULES.get(key) }))
}

/// Records a path component (a dentry's name) at `index` of the event.
#[inline(always)]
fn record(event: &mut Option<&mut ExecEvent>, index: u32, dentry: u64, off: &KernelOffsets) {
    let Some(event) = event.as_deref_mut() else { return };
    let i = index as usize;
    if i >= MAX_PATH_COMPONENTS {
        event.flags |= flags::PATH_TRUNCATED;
        return;
    }
    let Ok(name) = kernel::read_ptr(dentry, off.dentry_name, ProbeSite::DentryName) else {
        event.flags |= flags::PATH_TRUNCATED;
        return;
    };
    match kernel::read_str(name, &mut event.path[i], ProbeSite::DentryName) {
        Ok(len) => {
            if len + 1 >= NAME_LEN {
                event.flags |= flags::PATH_TRUNCATED;
            }
        }
        Err(_) => event.path[i][0] = 0,
    }
    event.path_components = index + 1;
}

/// Where a file sits: its dentry, which may be negative (a name about to be created), and the mount
/// it was reached through (a `struct vfsmount *`).
#[derive(Clone, Copy)]
pub struct Place {
    pub dentry: u64,
    pub vfsmount: u64,
}

impl Place {
    /// Where an open file sits (`file->f_path`).
    #[inline(always)]
    pub fn of_file(file: u64, off: &KernelOffsets) -> Result<Self, ReadError> {
        Ok(Self {
            dentry: kernel::read_ptr(file, off.file_dentry, ProbeSite::FileDentry)?,
            vfsmount: kernel::read_ptr(file, off.file_vfsmount, ProbeSite::FileMount)?,
        })
    }

    /// Where a `struct path` points.
    #[inline(always)]
    pub fn of_path(path: u64, off: &KernelOffsets) -> Result<Self, ReadError> {
        Ok(Self {
            dentry: kernel::read_ptr(path, off.path_dentry, ProbeSite::FileDentry)?,
            vfsmount: kernel::read_ptr(path, off.path_mnt, ProbeSite::FileMount)?,
        })
    }

    /// The entry `dentry` of the directory at `self` (same mount).
    #[inline(always)]
    pub const fn child(self, dentry: u64) -> Self {
        Self { dentry, vfsmount: self.vfsmount }
    }
}

/// The exec decision for a file, and whether `exec.libraries` covers it (looked up only when asked,
/// and only while no exec rule has matched: a rule, allow or deny, decides over a library entry).
#[derive(Clone, Copy)]
pub struct Found {
    pub verdict: Verdict,
    pub library: bool,
}

impl Found {
    /// Whether an exec rule (not the default) allows running the file: what a governed task may not
    /// change (W^X).
    #[inline(always)]
    pub fn allowed_by_rule(&self) -> bool {
        // Rule indexes lie below every special value (`NO_MATCH`, the `RULE_*` of sentra_common::exec).
        self.verdict.rule < NO_MATCH && self.verdict.effect == Effect::Allow as u32
    }
}

/// Decides the exec described by `bprm` under policy generation `generation`.
#[inline(always)]
pub fn decide(
    bprm: u64,
    off: &KernelOffsets,
    generation: u32,
    settings: &Settings,
    event: Option<&mut ExecEvent>,
) -> Result<Verdict, ReadError> {
    let file = kernel::read_ptr(bprm, off.binprm_file, ProbeSite::BprmFile)?;
    let place = Place::of_file(file, off)?;
    Ok(decide_at(place, off, generation, settings, event, false)?.verdict)
}

/// The (device, inode) of the file `bprm` runs.
#[inline(always)]
pub fn file_identity(bprm: u64, off: &KernelOffsets) -> Result<(u64, u64), ReadError> {
    let file = kernel::read_ptr(bprm, off.binprm_file, ProbeSite::BprmFile)?;
    let dentry = kernel::read_ptr(file, off.file_dentry, ProbeSite::FileDentry)?;
    kernel::identity(dentry, off)
}

/// Whether the file `bprm` runs is a multi-call binary, and how it dispatches.
#[inline(always)]
pub fn multicall_of(bprm: u64, off: &KernelOffsets, generation: u32) -> Result<Option<MultiCall>, ReadError> {
    let (dev, ino) = file_identity(bprm, off)?;
    // SAFETY: lookup with a stack key; the value is copied out at once.
    Ok(unsafe { EXEC_MULTICALL.get(InodeKey { generation, pad: 0, dev, ino }) }.copied())
}

/// Decides the file at `place` as an exec of it would be decided; with `libraries`, also whether an
/// `exec.libraries` entry covers it.
#[inline(always)]
pub fn decide_at(
    place: Place,
    off: &KernelOffsets,
    generation: u32,
    settings: &Settings,
    mut event: Option<&mut ExecEvent>,
    libraries: bool,
) -> Result<Found, ReadError> {
    let dentry = place.dentry;
    let mut vfsmount = place.vfsmount;
    // `struct mount` embeds the `struct vfsmount` (fs/mount.h): step back to the container.
    let mut mount = vfsmount - u64::from(off.mount_vfsmount);

    // A negative dentry (a name about to be created) has no inode: only its name and directories
    // decide.
    let inode: u64 = kernel::read(dentry, off.dentry_inode, ProbeSite::Inode)?;
    let mut verdict = Verdict::NONE;
    let mut library = false;
    if inode != 0 {
        let (dev, ino) = kernel::identity(dentry, off)?;
        if let Some(event) = event.as_deref_mut() {
            event.dev = dev;
            event.ino = ino;
        }
        let inode_key = InodeKey { generation, pad: 0, dev, ino };
        // SAFETY: lookup with a stack key.
        verdict = Verdict::from_value(unsafe { EXEC_INODE_RULES.get(inode_key) });
        // SAFETY: as above.
        library = libraries && unsafe { EXEC_LIBRARIES.get(inode_key) }.is_some();
    }
    record(&mut event, 0, dentry, off);

    let parent = kernel::read_ptr(dentry, off.dentry_parent, ProbeSite::DentryParent)?;
    if !verdict.found() {
        let (dir_dev, dir_ino) = kernel::identity(parent, off)?;
        let mut key = NameKey { generation, pad: 0, dir_dev, dir_ino, name: [0; NAME_LEN] };
        let name = kernel::read_ptr(dentry, off.dentry_name, ProbeSite::DentryName)?;
        // A name longer than the key holds is cut short; policy validation rejects rules on such names,
        // so a cut name never matches a rule by accident.
        let _ = kernel::read_str(name, &mut key.name, ProbeSite::DentryName);
        // SAFETY: lookup with a stack key.
        verdict = Verdict::from_value(unsafe { EXEC_NAME_RULES.get(key) });
    }

    // Walk up the directories: the first (nearest) directory rule decides; the walk goes on to the root
    // only to record the path for the event. One component per iteration, with the component index equal
    // to the iteration, keeps the verifier's states few enough to merge.
    let mut current = parent;
    let mut complete = false;
    let mut depth: u32 = 1;
    while depth <= MAX_WALK_DEPTH {
        if !verdict.found() {
            verdict = dir_rule(generation, current, off)?;
            if libraries && !library {
                library = library_dir(generation, current, off)?;
            }
        } else if event.is_none() {
            break;
        }
        let root = kernel::read_ptr(vfsmount, off.vfsmount_root, ProbeSite::MountRoot)?;
        if current == root {
            // Root of this mount: go on from its mount point in the parent mount (as fs/d_path.c
            // prepend_path does), or stop at the namespace's root mount.
            let parent_mount = kernel::read_ptr(mount, off.mount_parent, ProbeSite::MountParent)?;
            if parent_mount == mount {
                complete = true;
                break;
            }
            current = kernel::read_ptr(mount, off.mount_mountpoint, ProbeSite::Mountpoint)?;
            mount = parent_mount;
            vfsmount = mount + u64::from(off.mount_vfsmount);
        }
        record(&mut event, depth, current, off);
        let up = kernel::read_ptr(current, off.dentry_parent, ProbeSite::DentryParent)?;
        if up == current {
            complete = true;
            break;
        }
        current = up;
        depth += 1;
    }
    if let Some(event) = event {
        if complete {
            event.flags |= flags::PATH_COMPLETE;
        } else {
            event.flags |= flags::PATH_TRUNCATED;
        }
    }

    let verdict = if verdict.found() {
        verdict
    } else if complete {
        Verdict { effect: settings.exec_default, rule: RULE_DEFAULT }
    } else {
        // No rule found and the walk ended before the root: a directory rule above may apply. Decide
        // closed rather than let deep nesting evade a deny rule.
        Verdict { effect: Effect::Deny as u32, rule: RULE_PATH_TOO_DEEP }
    };
    Ok(Found { verdict, library })
}

/// Whether `exec.libraries` names the directory at `dentry`.
#[inline(always)]
fn library_dir(generation: u32, dentry: u64, off: &KernelOffsets) -> Result<bool, ReadError> {
    let (dev, ino) = kernel::identity(dentry, off)?;
    // SAFETY: lookup with a stack key.
    Ok(unsafe { EXEC_LIBRARIES.get(InodeKey { generation, pad: 0, dev, ino }) }.is_some())
}
