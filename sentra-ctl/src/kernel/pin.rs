//! Pinning under bpffs, so that enforcement outlives the controller, and adopting what is pinned.
//!
//! Layout: `/sys/fs/bpf/sentra/maps/<MAP_NAME>`, `/sys/fs/bpf/sentra/links/<program>` and
//! `/sys/fs/bpf/sentra/progs/<program>`. A pinned link keeps its program attached with no process
//! holding it; pinned maps keep the policy, the governed cgroups and the event ring buffer. A
//! restarted controller reopens the maps and goes on. The cgroup programs are pinned themselves too,
//! so that any controller (a restarted one included) can attach them to a cgroup that appears later
//! (a systemd unit's delegated launch cgroup, see [`attach_cgroup`]).

use std::path::{Path, PathBuf};

use aya::maps::{Map, MapData};

use super::{Kernel, KernelError, OwnedLink, store::PinnedMaps};

/// Root of Sentra's pins.
pub const PIN_ROOT: &str = "/sys/fs/bpf/sentra";

fn maps_dir(root: &Path) -> PathBuf {
    root.join("maps")
}

pub(super) fn links_dir(root: &Path) -> PathBuf {
    root.join("links")
}

fn progs_dir(root: &Path) -> PathBuf {
    root.join("progs")
}

fn pin_err(path: &Path, what: &'static str) -> impl Fn(std::io::Error) -> KernelError {
    let path = path.to_path_buf();
    move |source| KernelError::Pin { path: path.clone(), what, source }
}

/// Whether a pinned controller state exists.
#[must_use]
pub fn exists(root: &Path) -> bool {
    maps_dir(root).is_dir()
}

/// Whether `path` is on a bpffs.
#[must_use]
pub fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type().0 == i64::from(sentra_common::event::Filesystem::BPF))
}

/// Makes sure `/sys/fs/bpf` is a bpffs when the pins go below it, mounting it if needed (systemd does
/// this on most hosts; minimal systems and some VMs do not).
///
/// # Errors
/// The mount fails.
pub fn ensure_bpffs(root: &Path) -> Result<(), KernelError> {
    let mount_point = Path::new("/sys/fs/bpf");
    if !root.starts_with(mount_point) || is_bpffs(mount_point) {
        return Ok(());
    }
    nix::mount::mount(Some("bpf"), mount_point, Some("bpf"), nix::mount::MsFlags::empty(), None::<&str>)
        .map_err(KernelError::NoBpffs)
}

/// Pins every map of the object and every pinnable link; returns the names of links that could not
/// be pinned (their programs stop when this process exits).
///
/// # Errors
/// bpffs is not mounted or a pin cannot be created.
pub fn pin(kernel: &mut Kernel, root: &Path) -> Result<Vec<String>, KernelError> {
    ensure_bpffs(root)?;
    for dir in [maps_dir(root), links_dir(root), progs_dir(root)] {
        std::fs::create_dir_all(&dir).map_err(pin_err(&dir, "creating"))?;
    }
    for (name, _) in super::attach::CGROUP_ATTACH {
        // Loaded by `Kernel::govern_network`, which runs before pinning even with no cgroup.
        if let Some(program) = kernel.ebpf.program_mut(name) {
            let path = progs_dir(root).join(name);
            program.pin(&path).map_err(|source| KernelError::PinCreate { path: path.clone(), source })?;
        }
    }
    for (name, map) in kernel.ebpf.maps() {
        if name.starts_with('.') {
            continue; // .rodata and other data sections: nothing to keep
        }
        let path = maps_dir(root).join(name);
        map.pin(&path).map_err(|source| KernelError::PinCreate { path: path.clone(), source })?;
    }
    let mut unpinned = Vec::new();
    for (name, link) in kernel.links.drain(..) {
        match link {
            OwnedLink::Fd(link) => {
                let path = links_dir(root).join(&name);
                let pinned = link
                    .pin(&path)
                    .map_err(|source| KernelError::PinCreate { path: path.clone(), source })?;
                // A pinned link stays attached after its fd is closed.
                drop(pinned);
            }
            OwnedLink::Raw(link) => {
                use std::os::fd::AsFd as _;
                let path = links_dir(root).join(&name);
                super::sys::obj_pin(link.as_fd(), &path).map_err(pin_err(&path, "pinning"))?;
            }
            OwnedLink::Perf(link) => {
                // Keep it attached for this process's lifetime.
                std::mem::forget(link);
                unpinned.push(name);
            }
        }
    }
    Ok(unpinned)
}

/// Reopens the pinned maps.
///
/// # Errors
/// Nothing is pinned, or a pin cannot be opened.
pub fn open(root: &Path) -> Result<PinnedMaps, KernelError> {
    let dir = maps_dir(root);
    let entries = std::fs::read_dir(&dir).map_err(pin_err(&dir, "reading"))?;
    let mut maps = PinnedMaps::default();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let map = MapData::from_pin(&path)
            .and_then(Map::from_map_data)
            .map_err(|source| KernelError::PinOpen { path, source })?;
        maps.maps.insert(name, map);
    }
    Ok(maps)
}

/// Attaches the pinned cgroup programs (network and sysctl) to `cgroup`, each with a BPF link pinned
/// as `links/<program>@<tag>`, so that they stay attached without a controller; on failure, removes
/// the links it made. The links die with the cgroup's last reference after [`detach_cgroup`].
///
/// # Errors
/// A program is not pinned (pins of an older controller), or the kernel refuses the link.
pub fn attach_cgroup(root: &Path, cgroup: std::os::fd::BorrowedFd<'_>, tag: &str) -> Result<(), KernelError> {
    use std::os::fd::AsFd as _;
    let attach = || -> Result<(), KernelError> {
        for (name, attach_type) in super::attach::CGROUP_ATTACH {
            let path = progs_dir(root).join(name);
            let program = super::sys::obj_get(&path).map_err(pin_err(&path, "opening"))?;
            let link = super::sys::link_create(program.as_fd(), cgroup, attach_type).map_err(|err| {
                KernelError::Attach { program: name, detail: format!("BPF_LINK_CREATE: {err}") }
            })?;
            let path = links_dir(root).join(format!("{name}@{tag}"));
            super::sys::obj_pin(link.as_fd(), &path).map_err(pin_err(&path, "pinning"))?;
        }
        Ok(())
    };
    attach().inspect_err(|_| detach_cgroup(root, tag))
}

/// Removes the links [`attach_cgroup`] pinned for `tag` (their programs detach once the links' last
/// reference is gone).
pub fn detach_cgroup(root: &Path, tag: &str) {
    for (name, _) in super::attach::CGROUP_ATTACH {
        let _ = std::fs::remove_file(links_dir(root).join(format!("{name}@{tag}")));
    }
}

/// Names of the pinned links (attached programs).
#[must_use]
pub fn pinned_links(root: &Path) -> Vec<String> {
    std::fs::read_dir(links_dir(root))
        .map(|entries| entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// Removes every pin: programs whose last reference was a pin are detached, maps freed once no one
/// holds them.
///
/// # Errors
/// A pin cannot be removed.
pub fn remove(root: &Path) -> Result<(), KernelError> {
    if root.exists() {
        std::fs::remove_dir_all(root).map_err(pin_err(root, "removing"))?;
    }
    Ok(())
}
