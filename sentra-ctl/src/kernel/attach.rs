//! Loading and attaching the programs: one path for every program type, and the backend choice.

use std::os::fd::AsFd;

use aya::{
    Btf, Ebpf,
    programs::{
        BtfTracePoint, CgroupAttachMode, CgroupSockAddr, CgroupSysctl, Lsm, Program, ProgramError,
        TracePoint, links::FdLink, trace_point::TracePointLink,
    },
};
use sentra_common::{names::program, settings::Backend};

use super::KernelError;

/// Which backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// `lsm` if it loads and attaches here, else `signal`.
    Auto,
    Lsm,
    Signal,
}

/// A program's attachment, owned here: dropping it detaches the program unless it was pinned.
pub enum OwnedLink {
    /// A BPF link (pinnable).
    Fd(FdLink),
    /// A perf-event attachment on a kernel without BPF links for perf events (not pinnable).
    Perf(TracePointLink),
    /// A BPF link made with `bpf(2)` directly, for program types whose links aya 0.14 cannot hand
    /// over (cgroup sysctl); pinnable.
    Raw(std::os::fd::OwnedFd),
}

/// `BPF_CGROUP_SYSCTL` (include/uapi/linux/bpf.h `enum bpf_attach_type`).
const BPF_CGROUP_SYSCTL: u32 = 18;

/// The cgroup programs with their attach types (include/uapi/linux/bpf.h `enum bpf_attach_type`),
/// for attaching pinned programs to a cgroup that appears after the controller started.
pub(super) const CGROUP_ATTACH: [(&str, u32); 7] = [
    (program::NET_CONNECT4, 10),
    (program::NET_CONNECT6, 11),
    (program::NET_SENDMSG4, 14),
    (program::NET_SENDMSG6, 15),
    (program::NET_RECVMSG4, 19),
    (program::NET_RECVMSG6, 20),
    (program::GUARD_SYSCTL, BPF_CGROUP_SYSCTL),
];

/// The program `name` of `ebpf` as type `P`, loaded by `load` unless it already is.
fn loaded<'e, P>(
    ebpf: &'e mut Ebpf,
    name: &'static str,
    load: impl FnOnce(&mut P) -> Result<(), ProgramError>,
) -> Result<&'e mut P, KernelError>
where
    for<'p> &'p mut P: TryFrom<&'p mut Program, Error = ProgramError>,
{
    let program = ebpf.program_mut(name).ok_or(KernelError::MissingProgram { program: name })?;
    let already = program.fd().is_ok();
    let program: &mut P = program
        .try_into()
        .map_err(|err: ProgramError| KernelError::Load { program: name, detail: err.to_string() })?;
    if !already {
        // The verifier's time is most of a controller's start on older kernels: say what each costs.
        let started = std::time::Instant::now();
        load(program).map_err(|err| KernelError::Load { program: name, detail: program_err(&err) })?;
        tracing::debug!(program = name, load_ms = started.elapsed().as_millis(), "program loaded");
    }
    Ok(program)
}

/// Runs `attach` (attach, then take the link) for program `name`, naming it in the error.
fn attached<L>(
    name: &'static str,
    attach: impl FnOnce() -> Result<L, ProgramError>,
) -> Result<L, KernelError> {
    attach().map_err(|err| KernelError::Attach { program: name, detail: program_err(&err) })
}

/// Loads program `name` as type `P`, attaches it with `attach` (which hands back its BPF link) and
/// keeps the link in `links` under the program's name.
fn attach_link<P>(
    ebpf: &mut Ebpf,
    name: &'static str,
    links: &mut Vec<(String, OwnedLink)>,
    load: impl FnOnce(&mut P) -> Result<(), ProgramError>,
    attach: impl FnOnce(&mut P) -> Result<FdLink, ProgramError>,
) -> Result<(), KernelError>
where
    for<'p> &'p mut P: TryFrom<&'p mut Program, Error = ProgramError>,
{
    let program = loaded(ebpf, name, load)?;
    let link = attached(name, || attach(program))?;
    links.push((name.to_string(), OwnedLink::Fd(link)));
    Ok(())
}

/// Attaches the BPF LSM program `name` to the LSM hook `hook`.
fn lsm_hook(
    ebpf: &mut Ebpf,
    btf: &Btf,
    name: &'static str,
    hook: &str,
    links: &mut Vec<(String, OwnedLink)>,
) -> Result<(), KernelError> {
    attach_link::<Lsm>(
        ebpf,
        name,
        links,
        |p| p.load(hook, btf),
        |p| {
            let id = p.attach()?;
            Ok(p.take_link(id)?.into())
        },
    )
}

/// What [`backend`] attached.
pub struct Attached {
    pub backend: Backend,
    /// Why `lsm` was refused under `auto`.
    pub lsm_refusal: Option<String>,
    /// Self-protection hooks this kernel cannot guard, each with the reason.
    pub unguarded: Vec<String>,
}

/// Whether a guard's load failed only because the kernel's BPF trampolines cannot pass a struct by
/// value (`path_chown`'s `kuid_t` and `kgid_t`): Linux 6.1 added that; before, the verifier refuses
/// the program with "The function … arg1 type STRUCT is unsupported" (kernel/bpf/btf.c,
/// `btf_distill_func_proto`).
fn lacks_struct_arguments(err: &KernelError) -> bool {
    matches!(err, KernelError::Load { detail, .. } if detail.contains("type STRUCT is unsupported"))
}

/// Attaches the exec backend `choice` asks for (and, for `lsm`, the network LSM hook and the
/// self-protection guards).
///
/// # Errors
/// The chosen backend cannot be attached.
pub fn backend(
    ebpf: &mut Ebpf,
    btf: &Btf,
    choice: BackendChoice,
    links: &mut Vec<(String, OwnedLink)>,
) -> Result<Attached, KernelError> {
    let (backend, refusal) = match choice {
        BackendChoice::Lsm => {
            lsm(ebpf, btf, links).map_err(|err| {
                let detail = err.to_string();
                if detail.contains("(os error 524)") {
                    KernelError::LsmNoTrampoline(detail)
                } else {
                    KernelError::LsmUnavailable(detail)
                }
            })?;
            (Backend::Lsm, None)
        }
        BackendChoice::Signal => {
            signal(ebpf, btf, links)?;
            (Backend::Signal, None)
        }
        BackendChoice::Auto => match lsm(ebpf, btf, links) {
            Ok(()) => (Backend::Lsm, None),
            Err(err) => {
                tracing::info!("lsm backend unavailable ({err}); using signal");
                links.clear();
                signal(ebpf, btf, links)?;
                (Backend::Signal, Some(err.to_string()))
            }
        },
    };
    // A multi-call binary's applet is decided where the new image's arguments are final
    // (`sentra-ebpf/src/exec/applet.rs`), on either backend.
    on_exec(ebpf, btf, program::EXEC_APPLET, links)?;
    let mut unguarded = Vec::new();
    if backend == Backend::Lsm {
        // The network LSM hook needs BPF LSM too; the host kernel refuses LSM programs.
        lsm_hook(ebpf, btf, program::NET_LSM_CONNECT, "socket_connect", links)?;
        // Self-protection: every hook, or the backend fails. The one exception is a hook whose
        // arguments the kernel cannot hand to a BPF program at all; it is named in `unguarded`, which
        // the start record, `status` and `doctor` report, so that a partial guard is never reported
        // as a whole one.
        for (name, hook) in program::GUARDS {
            match lsm_hook(ebpf, btf, name, hook, links) {
                Err(err) if lacks_struct_arguments(&err) => unguarded.push(format!(
                    "{hook}: this kernel's BPF trampolines pass no struct arguments (Linux < 6.1), so {name} cannot load"
                )),
                other => other?,
            }
        }
    }
    Ok(Attached { backend, lsm_refusal: refusal, unguarded })
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
/// hold, so both are checked: `bpf` is among the active LSMs (a kernel booted with an `lsm=` list
/// lacking it attaches the program, which then never runs), and the program really attaches (arm64
/// kernels without BPF trampolines list `bpf` but cannot attach).
fn lsm(ebpf: &mut Ebpf, btf: &Btf, links: &mut Vec<(String, OwnedLink)>) -> Result<(), KernelError> {
    let lsms = active_lsms().map_err(|detail| KernelError::Attach { program: program::EXEC_LSM, detail })?;
    if !lsms.iter().any(|m| m == "bpf") {
        return Err(KernelError::Attach {
            program: program::EXEC_LSM,
            detail: format!("`bpf` is not among the active LSMs ({})", lsms.join(",")),
        });
    }
    lsm_hook(ebpf, btf, program::EXEC_LSM, "bprm_check_security", links)?;
    for (name, syscall) in
        [(program::EXECVE_ENTER, "sys_enter_execve"), (program::EXECVEAT_ENTER, "sys_enter_execveat")]
    {
        let tracepoint = loaded::<TracePoint>(ebpf, name, TracePoint::load)?;
        let link = attached(name, || {
            let id = tracepoint.attach("syscalls", syscall)?;
            tracepoint.take_link(id)
        })?;
        // A BPF link where the kernel has them for perf events (5.15+), so that it can be pinned.
        let owned = match FdLink::try_from(link) {
            Ok(fd) => OwnedLink::Fd(fd),
            Err(err) => {
                tracing::debug!("{name}: not a BPF link ({err}); it cannot be pinned");
                OwnedLink::Perf(attached(name, || {
                    let id = tracepoint.attach("syscalls", syscall)?;
                    tracepoint.take_link(id)
                })?)
            }
        };
        links.push((name.to_string(), owned));
    }
    Ok(())
}

/// Attaches the `signal` backend: `exec_signal` and `exec_loader_env` on `tp_btf/sched_process_exec`.
fn signal(ebpf: &mut Ebpf, btf: &Btf, links: &mut Vec<(String, OwnedLink)>) -> Result<(), KernelError> {
    on_exec(ebpf, btf, program::EXEC_SIGNAL, links)?;
    // Without `lsm/mmap_file`, the loader's variables are what can be checked (exec/loader.rs).
    on_exec(ebpf, btf, program::EXEC_LOADER_ENV, links)
}

/// Attaches the program `name` to `tp_btf/sched_process_exec`.
fn on_exec(
    ebpf: &mut Ebpf,
    btf: &Btf,
    name: &'static str,
    links: &mut Vec<(String, OwnedLink)>,
) -> Result<(), KernelError> {
    attach_link::<BtfTracePoint>(
        ebpf,
        name,
        links,
        |p| p.load("sched_process_exec", btf),
        |p| {
            let id = p.attach()?;
            Ok(p.take_link(id)?.into())
        },
    )
}

/// Loads the cgroup programs (the `sock_addr` network hooks and `guard_sysctl`) and attaches them to
/// each governed cgroup (`cgroups`: a name and an open fd of its directory); they then apply to every
/// process in it and in its descendants. The attachments go to `links` as `PROGRAM@NAME` (dropping
/// one detaches its program unless it was pinned).
///
/// # Errors
/// A program missing, failing to load (with the verifier's log) or to attach.
pub fn cgroup_programs<F: AsFd>(
    ebpf: &mut Ebpf,
    cgroups: &[(&str, F)],
    links: &mut Vec<(String, OwnedLink)>,
) -> Result<(), KernelError> {
    for name in program::SOCK_ADDR {
        let program = loaded::<CgroupSockAddr>(ebpf, name, CgroupSockAddr::load)?;
        for (cgroup_name, cgroup) in cgroups {
            let link = attached(name, || {
                // `Single` means flags 0: aya attaches through a BPF link where the kernel has them,
                // and links take no flags (kernel/bpf/cgroup.c `cgroup_bpf_link_attach` returns EINVAL
                // for any) while always coexisting with other programs on the cgroup.
                let id = program.attach(cgroup.as_fd(), CgroupAttachMode::Single)?;
                program.take_link(id)
            })?;
            links.push((format!("{name}@{cgroup_name}"), fd_link(name, FdLink::try_from(link))?));
        }
    }
    let name = program::GUARD_SYSCTL;
    let program = loaded::<CgroupSysctl>(ebpf, name, CgroupSysctl::load)?;
    let fd =
        program.fd().map_err(|err| KernelError::Load { program: name, detail: program_err(&err) })?.as_fd();
    for (cgroup_name, cgroup) in cgroups {
        // aya 0.14 attaches through a link too but keeps it (no `FdLink` from a sysctl link).
        let link = super::sys::link_create(fd, cgroup.as_fd(), BPF_CGROUP_SYSCTL).map_err(|err| {
            KernelError::Attach { program: name, detail: format!("BPF_LINK_CREATE: {err}") }
        })?;
        links.push((format!("{name}@{cgroup_name}"), OwnedLink::Raw(link)));
    }
    Ok(())
}

/// A cgroup attachment as a BPF link (kernel 5.7+; the ring buffer already needs 5.8), so that it can
/// be pinned.
fn fd_link(
    name: &'static str,
    link: Result<FdLink, aya::programs::links::LinkError>,
) -> Result<OwnedLink, KernelError> {
    link.map(OwnedLink::Fd)
        .map_err(|err| KernelError::Attach { program: name, detail: format!("not a BPF link: {err}") })
}

/// An aya program error with its sources and, for a load, the verifier's log (its useful part, the
/// failing instruction and the totals, is at its end).
fn program_err(err: &ProgramError) -> String {
    if let ProgramError::LoadError { io_error, verifier_log } = err {
        let log = verifier_log.to_string();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        return format!(
            "{io_error}; verifier log (last {} of {} lines):\n{tail}",
            lines.len().min(40),
            lines.len()
        );
    }
    // aya's attach errors keep the errno in their source.
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
