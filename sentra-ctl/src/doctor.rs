//! `sentra-ctl doctor`: each kernel prerequisite, pass or fail, and what to do about a failure.

use std::path::Path;

use crate::{cgroup, kernel};

/// The policy an installed deployment enforces (scripts/install.sh, sentra.service).
const INSTALLED_POLICY: &str = "/etc/sentra/policy.yaml";

/// One check's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// What to do when it failed.
    pub fix: Option<String>,
}

fn check(name: &'static str, result: Result<String, (String, String)>) -> Check {
    match result {
        Ok(detail) => Check { name, ok: true, detail, fix: None },
        Err((detail, fix)) => Check { name, ok: false, detail, fix: Some(fix) },
    }
}

/// Runs every check. `probe_backends` also loads and attaches the programs for real (needs root).
#[must_use]
pub fn run(probe_backends: bool) -> Vec<Check> {
    let mut checks = Vec::new();
    let root = nix::unistd::geteuid().is_root();
    checks.push(check(
        "root",
        if root {
            Ok("running as root".into())
        } else {
            Err(("not root".into(), "run sentra-ctl as root (sudo): loading BPF needs CAP_BPF and CAP_PERFMON, cgroups need CAP_SYS_ADMIN".into()))
        },
    ));
    checks.push(check(
        "btf",
        match std::fs::read(kernel::offsets::VMLINUX_BTF)
            .map_err(|source| kernel::KernelError::BtfFile { path: kernel::offsets::VMLINUX_BTF, source })
            .and_then(|raw| kernel::offsets::read(&raw))
        {
            Ok(_) => Ok(format!("{} present; struct offsets resolved", kernel::offsets::VMLINUX_BTF)),
            Err(err) => Err((
                err.to_string(),
                "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (Debian, Ubuntu, Oracle UEK all are)".into(),
            )),
        },
    ));
    if root {
        checks.push(cgroup_ancestry());
    }
    checks.push(Check {
        name: "dns-netns",
        ok: true,
        detail: if kernel::net::own_netns_cookie() == 0 {
            "SO_NETNS_COOKIE is not available (Linux < 5.14): a DNS query from another network namespace inside a governed cgroup is steered to the resolver, which cannot answer it there, instead of being refused at once with a record".into()
        } else {
            "DNS queries from other network namespaces are refused at once, with a record".into()
        },
        fix: None,
    });
    let lsm_list = std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
    checks.push(check(
        "bpf-lsm-listed",
        if lsm_list.split(',').any(|m| m.trim() == "bpf") {
            Ok(format!("active LSMs: {}", lsm_list.trim()))
        } else if lsm_list.is_empty() {
            Err(("/sys/kernel/security/lsm unreadable (securityfs not mounted?)".into(), "mount -t securityfs none /sys/kernel/security".into()))
        } else {
            Err((
                format!("`bpf` is not among the active LSMs: {}", lsm_list.trim()),
                format!("add bpf to the lsm= boot parameter, e.g. lsm={},bpf (GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub and reboot); until then the `signal` backend enforces", lsm_list.trim()),
            ))
        },
    ));
    // The backends are probed first (when asked) so that the self-protection line says what holds
    // on this kernel: `bpf` may be listed and still not attach (Debian's arm64 6.1).
    let probed = if probe_backends && root { backends() } else { Vec::new() };
    let lsm_active = match probed.first() {
        Some(lsm) => lsm.ok,
        None => lsm_list.split(',').any(|m| m.trim() == "bpf"),
    };
    checks.extend(protections(lsm_active));
    checks.push(check(
        "cgroup2",
        match cgroup::cgroup2_root() {
            Ok(path) => Ok(format!("cgroup v2 mounted at {}", path.display())),
            Err(err) => Err((
                err.to_string(),
                "mount -t cgroup2 none /sys/fs/cgroup (or boot with systemd.unified_cgroup_hierarchy=1)"
                    .into(),
            )),
        },
    ));
    checks.push(check(
        "bpffs",
        if kernel::pin::is_bpffs(Path::new("/sys/fs/bpf")) {
            Ok("bpffs mounted at /sys/fs/bpf".into())
        } else {
            Err((
                "/sys/fs/bpf is not a bpffs mount (needed to pin programs and maps; `sentra-ctl daemon` mounts it)".into(),
                "mount -t bpf bpf /sys/fs/bpf".into(),
            ))
        },
    ));
    checks.push(check("sandbox", sandbox_readiness()));
    // The mail broker under the installed policy (informational when there is none).
    if let Ok(policy) = crate::policy::Policy::read(Path::new(INSTALLED_POLICY)) {
        checks.push(check("email", crate::email::broker::readiness(policy.model.email.as_ref())));
    }
    checks.extend(probed);
    checks
}

/// Informational lines (never failures by themselves): what holds on this kernel against a governed
/// task, with the `lsm` backend or without it.
fn protections(lsm_active: bool) -> [Check; 2] {
    [
        // Informational: which self-protection holds on this kernel (never a failure by itself).
        Check {
            name: "self-protection",
            ok: true,
            detail: if lsm_active {
                "lsm backend: governed tasks, root included, cannot use bpf(2), load modules or kexec, reboot, signal or trace the controller, open raw/packet sockets, write cgroup/bpffs/sysfs/securityfs/tracefs files or Sentra's own files; sysctl writes are refused on both backends".into()
            } else {
                "signal backend only: sysctl writes are refused in the kernel; the rest (bpf(2), module loading, signals to the controller, writes to Sentra's files, dlopen of writable files) is stopped only by running the agent unprivileged under the launcher's seccomp profile (sentra-ctl launch)".into()
            },
            fix: None,
        },
        // Informational: how code other than the allowed programs is kept from running.
        Check {
            name: "trusted-execution",
            ok: true,
            detail: if lsm_active {
                "lsm backend: executable mappings only from files the exec rules or exec.libraries allow (LD_PRELOAD, dlopen, ld.so of a denied program fail with EPERM); nothing an exec rule allows can be written; no mounts".into()
            } else {
                "signal backend: a program whose LD_PRELOAD, LD_AUDIT, LD_LIBRARY_PATH or GCONV_PATH names code neither exec.libraries nor an exec rule allows is killed before its first instruction; dlopen of a file the agent wrote and writes into allowed directories are stopped only by running the agent unprivileged (sentra-ctl launch)".into()
            },
            fix: None,
        },
    ]
}

/// Loads and attaches each backend for real (needs root).
fn backends() -> Vec<Check> {
    let mut checks = Vec::new();
    for choice in [kernel::BackendChoice::Lsm, kernel::BackendChoice::Signal] {
        let name = match choice {
            kernel::BackendChoice::Lsm => "backend-lsm",
            _ => "backend-signal",
        };
        checks.push(check(
            name,
            match kernel::Kernel::load(choice) {
                Ok(k) if k.unguarded.is_empty() => Ok(format!("programs load and attach (ring buffer included); backend {} usable", k.backend.as_str())),
                Ok(k) => Ok(format!(
                    "programs load and attach (ring buffer included); backend {} usable; NOT GUARDED on this kernel: {}",
                    k.backend.as_str(),
                    k.unguarded.join("; ")
                )),
                Err(err) => Err((err.to_string(), match choice {
                    kernel::BackendChoice::Lsm => "enable BPF LSM (see bpf-lsm-listed); arm64 kernels without BPF trampoline attachment (Debian's 6.1, the 5.15 series) cannot attach LSM programs: the signal backend is used there".into(),
                    _ => "needs BTF and tp_btf support (Linux 5.5+)".into(),
                })),
            },
        ));
    }
    checks
}

/// Informational: how the tracing and LSM programs find a task's governed cgroup. Both answers
/// enforce; the walk costs a few kernel reads per decision.
fn cgroup_ancestry() -> Check {
    Check {
        name: "cgroup-ancestry",
        ok: true,
        detail: if kernel::tracing_has_ancestor_cgroup_id() {
            "tracing and LSM programs call bpf_get_current_ancestor_cgroup_id".into()
        } else {
            "bpf_get_current_ancestor_cgroup_id is not available to tracing and LSM programs (Linux < 5.14): they find a task's governed cgroup by reading its cgroup's parents (offsets from BTF)".into()
        },
        fix: None,
    }
}

/// What `sentra python` needs: Landlock (named with its ABI; the sandbox applies it best effort) and
/// the memory, pids and cpu controllers for its limits.
fn sandbox_readiness() -> Result<String, (String, String)> {
    // landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION) answers the ABI version
    // (include/uapi/linux/landlock.h).
    // SAFETY: the documented version query: no pointer is dereferenced.
    let abi =
        unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, std::ptr::null::<u8>(), 0usize, 1u32) };
    let landlock = if abi > 0 {
        format!("Landlock ABI {abi}")
    } else {
        return Err((
            format!("Landlock is not available ({})", std::io::Error::last_os_error()),
            "boot with landlock among the lsm= LSMs (CONFIG_SECURITY_LANDLOCK=y); the sandbox's mounts still fence it, without the second fence".into(),
        ));
    };
    match crate::sandbox::limits::check() {
        Ok(controllers) => Ok(format!("{landlock}; cgroup controllers {controllers}")),
        Err(err) => Err((
            format!("{landlock}; {err:#}"),
            "use cgroup v2 with the memory, pids and cpu controllers (systemd.unified_cgroup_hierarchy=1)"
                .into(),
        )),
    }
}
