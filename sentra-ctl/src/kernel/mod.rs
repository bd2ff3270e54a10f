//! The kernel side: loading the BPF object, choosing the backend, filling the maps, reading events.

pub mod batch;
pub mod events;
pub mod maps;
pub mod net;
pub mod offsets;
pub mod pin;
pub mod rcu;

use aya::{
    Btf, Ebpf, EbpfLoader,
    programs::{BtfTracePoint, Lsm, TracePoint, links::FdLink, trace_point::TracePointLink},
};
use sentra_common::settings::Backend;

/// The BPF object built by `build.rs` from `sentra-ebpf`.
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sentra-bpf"));

/// Which backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// `lsm` if it loads and attaches here, else `signal`.
    Auto,
    Lsm,
    Signal,
}

/// Errors of the kernel layer, naming the program or map involved.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("kernel BTF: {0}")]
    Btf(String),
    #[error(
        "the BPF object is empty: this build skipped it (AYA_BUILD_SKIP); rebuild without it (needs bpf-linker and nightly)"
    )]
    NoObject,
    #[error("loading the BPF object: {0}")]
    Object(#[source] aya::EbpfError),
    #[error("program {program} is missing from the BPF object")]
    MissingProgram { program: &'static str },
    #[error("program {program}: load failed: {detail}")]
    Load { program: &'static str, detail: String },
    #[error("program {program}: attach failed: {detail}")]
    Attach { program: &'static str, detail: String },
    #[error("map {map}: {detail}")]
    Map { map: &'static str, detail: String },
    #[error(
        "BPF LSM is not usable here: {0}. Enable it by adding `bpf` to the `lsm=` boot parameter (e.g. lsm=lockdown,capability,landlock,yama,apparmor,bpf), or use --backend signal"
    )]
    LsmUnavailable(String),
}

/// A program's attachment, owned here: dropping it detaches the program unless it was pinned.
pub enum OwnedLink {
    /// A BPF link (pinnable).
    Fd(FdLink),
    /// A perf-event attachment on a kernel without BPF links for perf events (not pinnable).
    Perf(TracePointLink),
}

/// The loaded object with its enforcement backend attached.
pub struct Kernel {
    pub ebpf: Ebpf,
    pub backend: Backend,
    /// Why `lsm` was not chosen under `auto`, if it was not.
    pub lsm_refusal: Option<String>,
    /// Attachments by program name.
    pub links: Vec<(String, OwnedLink)>,
}

impl Kernel {
    /// Loads the object with this kernel's offsets and attaches the chosen backend.
    ///
    /// # Errors
    /// BTF missing, a program failing to load (with the verifier's log) or attach.
    pub fn load(choice: BackendChoice) -> Result<Self, KernelError> {
        if BPF_OBJECT.is_empty() {
            return Err(KernelError::NoObject);
        }
        let offsets = offsets::read()?;
        let btf = Btf::from_sys_fs().map_err(|err| KernelError::Btf(err.to_string()))?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .override_global("KERNEL_OFFSETS", &offsets, true)
            .load(BPF_OBJECT)
            .map_err(KernelError::Object)?;

        let mut links = Vec::new();
        let (backend, lsm_refusal) = match choice {
            BackendChoice::Lsm => {
                attach_lsm(&mut ebpf, &btf, &mut links)
                    .map_err(|err| KernelError::LsmUnavailable(err.to_string()))?;
                (Backend::Lsm, None)
            }
            BackendChoice::Signal => {
                attach_signal(&mut ebpf, &btf, &mut links)?;
                (Backend::Signal, None)
            }
            BackendChoice::Auto => match attach_lsm(&mut ebpf, &btf, &mut links) {
                Ok(()) => (Backend::Lsm, None),
                Err(err) => {
                    tracing::info!("lsm backend unavailable ({err}); using signal");
                    links.clear();
                    attach_signal(&mut ebpf, &btf, &mut links)?;
                    (Backend::Signal, Some(err.to_string()))
                }
            },
        };
        drop(btf);
        release_freed_memory();
        Ok(Self { ebpf, backend, lsm_refusal, links })
    }
}

/// Makes glibc keep the memory it frees instead of handing it back to the operating system at once.
/// A controller reloading a large policy allocates ~15 MB (YAML events, the model, map entries) and
/// frees it; returned and then touched again at the next reload, those pages cost ~4,000 page faults
/// (10 ms of a 10,000-rule reload on a small VM). Kept, the next reload reuses them: the controller
/// holds the memory its largest reload needed. Memory freed once, after loading the programs, is
/// still released with [`release_freed_memory`].
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

/// An aya program error with the verifier's log, when there is one.
pub(crate) fn program_err(err: &aya::programs::ProgramError) -> String {
    match err {
        aya::programs::ProgramError::LoadError { io_error, verifier_log } => {
            // The log's useful part (the failing instruction and the totals) is at its end.
            let log = verifier_log.to_string();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            format!(
                "{io_error}; verifier log (last {} of {} lines):\n{tail}",
                lines.len().min(40),
                lines.len()
            )
        }
        other => other.to_string(),
    }
}

/// The active LSMs (`/sys/kernel/security/lsm`), mounting securityfs first if it is not.
///
/// # Errors
/// The list cannot be read.
pub fn active_lsms() -> Result<Vec<String>, String> {
    const LIST: &str = "/sys/kernel/security/lsm";
    if !std::path::Path::new(LIST).exists() {
        let _ = nix::mount::mount(
            Some("securityfs"),
            "/sys/kernel/security",
            Some("securityfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        );
    }
    std::fs::read_to_string(LIST)
        .map(|text| text.trim().split(',').map(str::to_string).collect())
        .map_err(|err| format!("{LIST}: {err}"))
}

/// Attaches the `lsm` backend: `exec_lsm` plus the argv recorders. BPF LSM enforces only when both
/// hold, so both are checked: `bpf` is among the active LSMs (observed: Debian's 6.1 booted with an
/// `lsm=` list lacking it attaches the program, which then never runs), and the program really
/// attaches (observed: arm64 6.1 lists `bpf` but cannot attach, having no BPF trampoline).
fn attach_lsm(ebpf: &mut Ebpf, btf: &Btf, links: &mut Vec<(String, OwnedLink)>) -> Result<(), KernelError> {
    const PROGRAM: &str = "exec_lsm";
    let lsms = active_lsms().map_err(|detail| KernelError::Attach { program: PROGRAM, detail })?;
    if !lsms.iter().any(|m| m == "bpf") {
        return Err(KernelError::Attach {
            program: PROGRAM,
            detail: format!("`bpf` is not among the active LSMs ({})", lsms.join(",")),
        });
    }
    let program: &mut Lsm = ebpf
        .program_mut(PROGRAM)
        .ok_or(KernelError::MissingProgram { program: PROGRAM })?
        .try_into()
        .map_err(|err| KernelError::Load { program: PROGRAM, detail: format!("{err}") })?;
    program
        .load("bprm_check_security", btf)
        .map_err(|err| KernelError::Load { program: PROGRAM, detail: program_err(&err) })?;
    let id = program
        .attach()
        .map_err(|err| KernelError::Attach { program: PROGRAM, detail: program_err(&err) })?;
    let link = program
        .take_link(id)
        .map_err(|err| KernelError::Attach { program: PROGRAM, detail: program_err(&err) })?;
    links.push((PROGRAM.to_string(), OwnedLink::Fd(link.into())));
    for (name, syscall) in [("execve_enter", "sys_enter_execve"), ("execveat_enter", "sys_enter_execveat")] {
        attach_tracepoint(ebpf, name, "syscalls", syscall, links)?;
    }
    Ok(())
}

fn attach_tracepoint(
    ebpf: &mut Ebpf,
    name: &'static str,
    category: &str,
    event: &str,
    links: &mut Vec<(String, OwnedLink)>,
) -> Result<(), KernelError> {
    let program: &mut TracePoint = ebpf
        .program_mut(name)
        .ok_or(KernelError::MissingProgram { program: name })?
        .try_into()
        .map_err(|err| KernelError::Load { program: name, detail: format!("{err}") })?;
    program.load().map_err(|err| KernelError::Load { program: name, detail: program_err(&err) })?;
    let id = program
        .attach(category, event)
        .map_err(|err| KernelError::Attach { program: name, detail: program_err(&err) })?;
    let link = program
        .take_link(id)
        .map_err(|err| KernelError::Attach { program: name, detail: program_err(&err) })?;
    // A BPF link where the kernel has them for perf events (5.15+), so that it can be pinned.
    let owned = match FdLink::try_from(link) {
        Ok(fd) => OwnedLink::Fd(fd),
        Err(err) => {
            tracing::debug!("{name}: not a BPF link ({err}); it cannot be pinned");
            let id = program
                .attach(category, event)
                .map_err(|err| KernelError::Attach { program: name, detail: program_err(&err) })?;
            OwnedLink::Perf(
                program
                    .take_link(id)
                    .map_err(|err| KernelError::Attach { program: name, detail: program_err(&err) })?,
            )
        }
    };
    links.push((name.to_string(), owned));
    Ok(())
}

/// Attaches the `signal` backend: `exec_signal` on `tp_btf/sched_process_exec`.
fn attach_signal(
    ebpf: &mut Ebpf,
    btf: &Btf,
    links: &mut Vec<(String, OwnedLink)>,
) -> Result<(), KernelError> {
    const PROGRAM: &str = "exec_signal";
    let program: &mut BtfTracePoint = ebpf
        .program_mut(PROGRAM)
        .ok_or(KernelError::MissingProgram { program: PROGRAM })?
        .try_into()
        .map_err(|err| KernelError::Load { program: PROGRAM, detail: format!("{err}") })?;
    program
        .load("sched_process_exec", btf)
        .map_err(|err| KernelError::Load { program: PROGRAM, detail: program_err(&err) })?;
    let id = program
        .attach()
        .map_err(|err| KernelError::Attach { program: PROGRAM, detail: program_err(&err) })?;
    let link = program
        .take_link(id)
        .map_err(|err| KernelError::Attach { program: PROGRAM, detail: program_err(&err) })?;
    links.push((PROGRAM.to_string(), OwnedLink::Fd(link.into())));
    Ok(())
}
