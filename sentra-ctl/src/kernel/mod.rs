//! The kernel side: loading the BPF object, attaching its programs, filling the maps, reading events.
//!
//! Layering inside: `sys` (raw `bpf(2)`) and `store` (maps by name) at the bottom; `batch`, `rcu`,
//! `maps`, `net`, `pin`, `events` on them; `attach` and this module (loading) on top.

pub mod attach;
pub mod batch;
pub mod events;
pub mod maps;
pub mod net;
pub mod offsets;
pub mod pin;
pub mod rcu;
pub mod stats;
pub mod store;
mod sys;

use std::path::PathBuf;

use aya::{Ebpf, EbpfLoader, Endianness};
use sentra_common::{names, settings::Backend};

pub use self::{
    attach::{BackendChoice, OwnedLink, active_lsms},
    sys::tracing_has_ancestor_cgroup_id,
};

/// The BPF object built by `build.rs` from `sentra-ebpf`.
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sentra-bpf"));

/// Errors of the kernel layer, naming the program, map or file involved and keeping their sources.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("kernel BTF: {0}")]
    Btf(String),
    #[error("kernel BTF: reading {path}")]
    BtfFile {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the BPF object is empty: this build skipped it (AYA_BUILD_SKIP); rebuild without it (needs bpf-linker and nightly)"
    )]
    NoObject,
    #[error("loading the BPF object")]
    Object(#[source] aya::EbpfError),
    #[error("program {program} is missing from the BPF object")]
    MissingProgram { program: &'static str },
    #[error("program {program}: load failed: {detail}")]
    Load { program: &'static str, detail: String },
    #[error("program {program}: attach failed: {detail}")]
    Attach { program: &'static str, detail: String },
    #[error("map {map}: missing")]
    MissingMap { map: &'static str },
    #[error("map {map}: not a {expected}")]
    MapKind { map: &'static str, expected: &'static str },
    #[error("map {map}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("map {map}: {what}")]
    MapCall {
        map: &'static str,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("pin {}: {what}", path.display())]
    Pin {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// Pinning a map or a link.
    #[error("pin {}", path.display())]
    PinCreate {
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    /// Reopening a pinned map.
    #[error("pin {}", path.display())]
    PinOpen {
        path: PathBuf,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("/sys/fs/bpf is not a bpffs and mounting one failed (mount -t bpf bpf /sys/fs/bpf)")]
    NoBpffs(#[source] nix::Error),
    #[error("waiting for running BPF programs (RCU barrier)")]
    Barrier(#[source] std::io::Error),
    #[error(
        "BPF LSM is not usable here: {0}. Enable it by adding `bpf` to the `lsm=` boot parameter (e.g. lsm=lockdown,capability,landlock,yama,apparmor,bpf), or use --backend signal"
    )]
    LsmUnavailable(String),
    /// The kernel lists BPF LSM but cannot attach its programs: `ENOTSUPP` (524) from the attach,
    /// which needs a BPF trampoline that the architecture's kernel can attach (Debian's arm64 6.1 and
    /// the arm64 5.15 kernels cannot; arm64 6.12 can).
    #[error(
        "BPF LSM programs cannot attach on this kernel ({0}): this architecture's kernel has no BPF trampoline attachment (Debian's arm64 6.1, the arm64 5.15 kernels); use --backend signal, which --backend auto chooses here"
    )]
    LsmNoTrampoline(String),
    /// Reading the programs' statistics.
    #[error("program statistics: {what}")]
    Stats {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("program {name} (id {id}) is attached but not in the kernel's program list")]
    ProgramVanished { name: String, id: u32 },
}

/// The loaded object with its programs attached: the exec backend, and on the `lsm` backend the
/// network LSM hook. The cgroup programs are attached per governed cgroup ([`Self::govern_network`]).
pub struct Kernel {
    pub ebpf: Ebpf,
    pub backend: Backend,
    /// Why `lsm` was not chosen under `auto`, if it was not.
    pub lsm_refusal: Option<String>,
    /// Self-protection hooks this kernel cannot guard, with the reason (see `attach::Attached`).
    pub unguarded: Vec<String>,
    /// Attachments by program name.
    pub links: Vec<(String, OwnedLink)>,
}

impl Kernel {
    /// Loads the object with this kernel's offsets and attaches the chosen backend. The kernel's BTF
    /// is read once: aya parses it (program loading needs its types), btf-rs reads the member
    /// offsets from the same bytes (aya 0.14 does not expose its types); both are dropped here.
    ///
    /// # Errors
    /// BTF missing, a program failing to load (with the verifier's log) or attach.
    pub fn load(choice: BackendChoice) -> Result<Self, KernelError> {
        if BPF_OBJECT.is_empty() {
            return Err(KernelError::NoObject);
        }
        lift_memlock();
        let raw = std::fs::read(offsets::VMLINUX_BTF)
            .map_err(|source| KernelError::BtfFile { path: offsets::VMLINUX_BTF, source })?;
        let mut offsets = offsets::read(&raw)?;
        offsets.cgroup_parent_walk = u32::from(!sys::tracing_has_ancestor_cgroup_id());
        let btf = aya::Btf::parse(&raw, Endianness::default())
            .map_err(|err| KernelError::Btf(format!("{}: {err}", offsets::VMLINUX_BTF)))?;
        drop(raw);
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .override_global(names::KERNEL_OFFSETS, &offsets, true)
            .load(BPF_OBJECT)
            .map_err(KernelError::Object)?;
        let mut links = Vec::new();
        let attach::Attached { backend, lsm_refusal, unguarded } =
            attach::backend(&mut ebpf, &btf, choice, &mut links)?;
        for hook in &unguarded {
            tracing::warn!("self-protection incomplete on this kernel: {hook}");
        }
        drop(btf);
        release_freed_memory();
        Ok(Self { ebpf, backend, lsm_refusal, unguarded, links })
    }

    /// Attaches the cgroup programs (network, sysctl guard) to each governed cgroup (name, open
    /// directory).
    ///
    /// # Errors
    /// A program failing to load or attach.
    pub fn govern_network<F: std::os::fd::AsFd>(&mut self, cgroups: &[(&str, F)]) -> Result<(), KernelError> {
        attach::cgroup_programs(&mut self.ebpf, cgroups, &mut self.links)
    }
}

/// The `RLIMIT_MEMLOCK` this process started with, when [`lift_memlock`] raised it.
static STARTING_MEMLOCK: std::sync::OnceLock<libc::rlimit> = std::sync::OnceLock::new();

/// Lifts `RLIMIT_MEMLOCK` where the kernel charges BPF maps to it (before Linux 5.11): the default
/// 64 KiB (or 8 MiB) would refuse the controller's maps. A no-op on newer kernels, which charge the
/// memory cgroup. Processes the controller starts get the old limit back ([`restore_memlock`]).
pub fn lift_memlock() {
    if STARTING_MEMLOCK.get().is_some() || !sys::maps_charge_memlock() {
        return;
    }
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    let unlimited = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: plain system calls on local structs.
    let lifted = unsafe {
        libc::getrlimit(libc::RLIMIT_MEMLOCK, &raw mut old) == 0
            && libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const unlimited) == 0
    };
    if lifted {
        let _ = STARTING_MEMLOCK.set(old);
        tracing::debug!("RLIMIT_MEMLOCK lifted: this kernel charges BPF maps to it");
    } else {
        tracing::warn!(
            "this kernel charges BPF maps to RLIMIT_MEMLOCK and it could not be raised: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// In a child between fork and exec: the `RLIMIT_MEMLOCK` the controller started with, so that a
/// governed command does not inherit the lifted one. Async-signal-safe (one system call on memory
/// set before the fork).
///
/// # Errors
/// `setrlimit` failed.
pub fn restore_memlock() -> std::io::Result<()> {
    if let Some(old) = STARTING_MEMLOCK.get() {
        // SAFETY: a plain system call on a static.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, old) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Makes glibc keep the memory it frees instead of handing it back to the operating system at once.
/// A controller reloading a large policy allocates and frees several MB (YAML events, the model, map
/// entries); returned and then touched again at the next reload, those pages are faulted in anew
/// each time. Kept, the next reload reuses them: the controller holds the memory its largest reload
/// needed. Memory freed once, after loading the programs, is still released with
/// [`release_freed_memory`].
pub fn keep_freed_memory() {
    // Below this size blocks come from the heap, and are reused, instead of being mapped and unmapped
    // at each use (glibc's own ceiling for its adaptive threshold).
    const MMAP_THRESHOLD: libc::c_int = 32 << 20;
    // The heap's free top is handed back only beyond this (or by `malloc_trim`).
    const TRIM_THRESHOLD: libc::c_int = 256 << 20;
    // SAFETY: mallopt only changes allocator parameters; it has no memory-safety preconditions.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}

/// Hands memory freed after loading (the parsed kernel BTF, several MB) back to the operating system:
/// glibc keeps freed heap pages otherwise, and the controller runs for the host's lifetime.
pub fn release_freed_memory() {
    // SAFETY: malloc_trim only releases free heap memory; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
