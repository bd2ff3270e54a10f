//! The sandbox's first process, between the clone and the interpreter's exec.
//!
//! It was cloned into new mount, PID, IPC, UTS (and, unless the profile allows the network, network)
//! namespaces, as root, and waits until the runner has put it in its cgroup. Then, in this order:
//! a cgroup namespace rooted there; a root of its own (a tmpfs with only the allowed paths bound in,
//! read-only unless writable, its own `/proc`), pivoted into; loopback up; the sandbox's ids; a user
//! namespace of its own (so nothing it holds is privileged on the host, and the mount namespace,
//! owned by the host's, can never be changed from inside); every capability dropped; no new
//! privileges; Landlock over the same paths; the seccomp filters, whose deny filter's listener the
//! runner takes (`pidfd_getfd`) before the exec; then the exec.
//!
//! The runner was single-threaded when it cloned, so this process may allocate.

use std::{
    ffi::{CStr, CString},
    io::{Read as _, Write as _},
    os::{
        fd::{AsRawFd as _, OwnedFd},
        unix::{ffi::OsStrExt as _, fs::DirBuilderExt as _},
    },
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

/// A path made visible inside the sandbox.
#[derive(Debug, Clone)]
pub struct Bind {
    pub source: PathBuf,
    /// Where it appears inside.
    pub target: PathBuf,
    pub writable: bool,
    /// A device node (`/dev/null`…): no `nodev`.
    pub device: bool,
}

/// Everything the child does, decided by the runner before the clone.
#[derive(Debug)]
pub struct ChildPlan {
    /// An empty directory the sandbox's root tmpfs is mounted on.
    pub root: PathBuf,
    pub binds: Vec<Bind>,
    /// `(inside path, link target)`: how the host spells its merged `/usr` (`/lib -> usr/lib`).
    pub symlinks: Vec<(PathBuf, PathBuf)>,
    /// Covered by an empty read-only directory or file.
    pub hide: Vec<PathBuf>,
    pub cwd: PathBuf,
    pub own_network: bool,
    pub uid: u32,
    pub gid: u32,
    /// Landlock: readable (and executable) beneath, and fully usable beneath.
    pub landlock_read: Vec<PathBuf>,
    pub landlock_write: Vec<PathBuf>,
    /// The seccomp programs in installation order; the last one's answers go to the runner.
    pub filters: Vec<seccompiler::BpfProgram>,
    pub exec: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
}

/// The child's ends of the runner's pipes.
pub struct Ends {
    /// The runner says "go" (in the cgroup) and then "taken" (the listener).
    pub go: OwnedFd,
    /// Lines to the runner: `K<landlock state>`, `L<listener fd>`, or `E<error>`; closed by the exec.
    pub status: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// Runs the child; never returns (the exec replaces it, or it exits 127 after telling why).
pub fn run(plan: &ChildPlan, ends: &Ends) -> ! {
    let mut status = std::fs::File::from(ends.status.try_clone().unwrap_or_else(|_| exit()));
    let err = match setup(plan, ends, &mut status) {
        Ok(never) => match never {},
        Err(err) => err,
    };
    let _ = writeln!(status, "E{}", format!("{err:#}").replace('\n', " "));
    exit()
}

fn exit() -> ! {
    // SAFETY: ends the process without running the runner's destructors or atexit handlers.
    unsafe { libc::_exit(127) }
}

fn check(rc: libc::c_long, what: &str) -> anyhow::Result<()> {
    if rc < 0 { Err(std::io::Error::last_os_error()).context(what.to_string()) } else { Ok(()) }
}

fn cstr(path: &Path) -> anyhow::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).with_context(|| format!("{} has a NUL byte", path.display()))
}

fn mount(
    source: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> anyhow::Result<()> {
    let ptr = |s: Option<&CStr>| s.map_or(std::ptr::null(), CStr::as_ptr);
    // SAFETY: NUL-terminated strings or null pointers.
    let rc = unsafe { libc::mount(ptr(source), target.as_ptr(), ptr(fstype), flags, ptr(data).cast()) };
    check(rc.into(), &format!("mount {:?} on {:?}", source.unwrap_or(c"none"), target))
}

/// `mount_setattr(2)` on a whole bind tree (Linux 5.12+); older kernels get the top mount remounted.
fn restrict(target: &CStr, writable: bool, device: bool) -> anyhow::Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    const AT_RECURSIVE: libc::c_uint = 0x8000;
    // Each attribute with its `mount(2)` flag, and whether it applies. What the sandbox writes it
    // cannot execute or map as code.
    let wanted = [
        (true, libc::MOUNT_ATTR_NOSUID, libc::MS_NOSUID),
        (writable, libc::MOUNT_ATTR_NOEXEC, libc::MS_NOEXEC),
        (!writable, libc::MOUNT_ATTR_RDONLY, libc::MS_RDONLY),
        (!device, libc::MOUNT_ATTR_NODEV, libc::MS_NODEV),
    ];
    let set = wanted.iter().filter(|w| w.0).fold(0, |all, w| all | w.1);
    let attr = MountAttr { attr_set: set, attr_clr: 0, propagation: 0, userns_fd: 0 };
    // SAFETY: a valid path and attribute struct of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            target.as_ptr(),
            AT_RECURSIVE,
            &raw const attr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    if std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS) {
        return check(rc, &format!("mount_setattr {target:?}"));
    }
    let flags = wanted.iter().filter(|w| w.0).fold(libc::MS_BIND | libc::MS_REMOUNT, |all, w| all | w.2);
    mount(None, target, None, flags, None)
}

fn inside(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

/// Creates the mount point for `source` at `target`: a directory, or an empty file.
fn mount_point(target: &Path, source: &Path) -> anyhow::Result<()> {
    if let Some(parent) = target.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .with_context(|| parent.display().to_string())?;
    }
    if source.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(target)
            .with_context(|| target.display().to_string())?;
    } else if !target.exists() {
        std::fs::File::create(target).with_context(|| target.display().to_string())?;
    }
    Ok(())
}

fn setup(
    plan: &ChildPlan,
    ends: &Ends,
    status: &mut std::fs::File,
) -> anyhow::Result<std::convert::Infallible> {
    let mut go = std::fs::File::from(ends.go.try_clone()?);
    let mut byte = [0u8; 1];
    go.read_exact(&mut byte).context("the runner went away before the sandbox was in its cgroup")?;
    // SAFETY: plain system calls on integers and prepared strings, in a single-threaded child.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWCGROUP).into(), "unshare(CLONE_NEWCGROUP)")?;
        check(libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0).into(), "PR_SET_DUMPABLE")?;
    }
    mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None)?;
    let root = &plan.root;
    let croot = cstr(root)?;
    mount(
        Some(c"sentra-sandbox"),
        &croot,
        Some(c"tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some(c"mode=0755,size=16m"),
    )?;
    for (link, target) in &plan.symlinks {
        let at = inside(root, link);
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::os::unix::fs::symlink(target, &at).with_context(|| at.display().to_string())?;
    }
    for bind in &plan.binds {
        let target = inside(root, &bind.target);
        mount_point(&target, &bind.source)?;
        let ctarget = cstr(&target)?;
        mount(Some(&cstr(&bind.source)?), &ctarget, None, libc::MS_BIND | libc::MS_REC, None)?;
        restrict(&ctarget, bind.writable, bind.device)?;
    }
    let proc_dir = inside(root, Path::new("/proc"));
    std::fs::DirBuilder::new()
        .mode(0o555)
        .create(&proc_dir)
        .or_else(|e| if proc_dir.is_dir() { Ok(()) } else { Err(e) })?;
    mount(
        Some(c"proc"),
        &cstr(&proc_dir)?,
        Some(c"proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )?;
    for hidden in &plan.hide {
        let target = inside(root, hidden);
        let ctarget = cstr(&target)?;
        if target.is_dir() {
            mount(
                Some(c"sentra-hidden"),
                &ctarget,
                Some(c"tmpfs"),
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                Some(c"size=4k,mode=0000"),
            )?;
        } else if target.exists() {
            // An empty regular file of the root tmpfs (a device node would be refused on a `nodev` mount).
            let empty = inside(root, Path::new("/.sentra-empty"));
            if !empty.exists() {
                std::fs::File::create(&empty)?;
                std::fs::set_permissions(&empty, std::os::unix::fs::PermissionsExt::from_mode(0o444))?;
            }
            mount(Some(&cstr(&empty)?), &ctarget, None, libc::MS_BIND, None)?;
            restrict(&ctarget, false, false)?;
        }
    }
    let cwd = inside(root, &plan.cwd);
    if !cwd.exists() {
        std::fs::DirBuilder::new().recursive(true).mode(0o755).create(&cwd)?;
    }
    // The root becomes this tmpfs: `pivot_root(".", ".")` stacks the old root on top of it, and the
    // lazy unmount takes the old root away (pivot_root(2), NOTES).
    std::env::set_current_dir(root)?;
    // SAFETY: NUL-terminated paths.
    let pivoted = unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) };
    if pivoted == 0 {
        // SAFETY: as above.
        check(unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) }.into(), "unmounting the old root")?;
    } else if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // The namespace's root is the initial ramfs, which cannot be pivoted away (pivot_root(2),
        // EINVAL; a machine running from its initramfs): the new root is moved over it and made this
        // process's root, as switch_root does. It then covers the old root, which nothing here can
        // reach: no descriptor to it is open, and chroot and umount need capabilities the sandbox
        // drops before any of its code runs.
        mount(Some(c"."), c"/", None, libc::MS_MOVE, None)?;
        // SAFETY: as above.
        check(unsafe { libc::chroot(c".".as_ptr()) }.into(), "chroot into the new root")?;
    } else {
        return Err(std::io::Error::last_os_error()).context("pivot_root");
    }
    std::env::set_current_dir("/")?;
    mount(None, c"/", None, libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV, None)?;
    std::env::set_current_dir(&plan.cwd).with_context(|| format!("cwd {}", plan.cwd.display()))?;
    nix::unistd::sethostname("sentra-sandbox").context("sethostname")?;
    if plan.own_network {
        loopback_up()?;
    }
    stdio(ends)?;
    become_unprivileged(plan)?;
    let landlock = landlock(plan)?;
    writeln!(status, "K{landlock}")?;
    install_filters(plan, status, &mut go)?;
    let argv: Vec<*const libc::c_char> =
        plan.argv.iter().map(|a| a.as_ptr()).chain([std::ptr::null()]).collect();
    let envp: Vec<*const libc::c_char> =
        plan.envp.iter().map(|a| a.as_ptr()).chain([std::ptr::null()]).collect();
    // SAFETY: NUL-terminated arrays of NUL-terminated strings that outlive the call.
    unsafe { libc::execve(plan.exec.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    Err(std::io::Error::last_os_error()).with_context(|| format!("exec {:?}", plan.exec))
}

/// `lo` up in the sandbox's own network namespace (`SIOCSIFFLAGS`, as `ip link set lo up` does).
fn loopback_up() -> anyhow::Result<()> {
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        pad: [u8; 22],
    }
    let socket = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let mut request = IfReq { name: [0; libc::IFNAMSIZ], flags: 0, pad: [0; 22] };
    request.name[..2].copy_from_slice(b"lo");
    // SAFETY: `request` has the kernel's `struct ifreq` layout for these two requests (40 bytes).
    unsafe {
        check(
            libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &raw mut request).into(),
            "SIOCGIFFLAGS lo",
        )?;
        #[expect(clippy::cast_possible_truncation, reason = "IFF_UP is bit 0 of a short")]
        {
            request.flags |= libc::IFF_UP as libc::c_short;
        }
        check(
            libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &raw const request).into(),
            "SIOCSIFFLAGS lo",
        )?;
    }
    Ok(())
}

/// Standard input from `/dev/null`, output to the runner's pipes, and every other descriptor this
/// process inherited (from the runner's caller too) closed at the exec.
fn stdio(ends: &Ends) -> anyhow::Result<()> {
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .context("/proc/self/fd")?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds.into_iter().filter(|&fd| fd > 2) {
        // SAFETY: F_SETFD on a descriptor number; one that closed meanwhile fails harmlessly (EBADF).
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    let null = std::fs::File::open("/dev/null").context("/dev/null")?;
    // SAFETY: duplicating open descriptors onto 0, 1, 2.
    unsafe {
        check(libc::dup2(null.as_raw_fd(), 0).into(), "dup2 stdin")?;
        check(libc::dup2(ends.stdout.as_raw_fd(), 1).into(), "dup2 stdout")?;
        check(libc::dup2(ends.stderr.as_raw_fd(), 2).into(), "dup2 stderr")?;
    }
    Ok(())
}

/// The sandbox's uid and gid on the host, then a user namespace of its own mapping just them, and
/// no capability anywhere.
fn become_unprivileged(plan: &ChildPlan) -> anyhow::Result<()> {
    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct CapData {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    // SAFETY: plain system calls on integers.
    unsafe {
        check(libc::setgroups(0, std::ptr::null()).into(), "setgroups")?;
        check(libc::setresgid(plan.gid, plan.gid, plan.gid).into(), "setresgid")?;
        // From root to a non-zero uid: the kernel clears every capability (capabilities(7)).
        check(libc::setresuid(plan.uid, plan.uid, plan.uid).into(), "setresuid")?;
        check(libc::unshare(libc::CLONE_NEWUSER).into(), "unshare(CLONE_NEWUSER)")?;
        // The change of credentials made this process undumpable, which gives its /proc files to
        // root (proc(5), /proc/pid): dumpable just long enough to write its own maps.
        check(libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0).into(), "PR_SET_DUMPABLE")?;
    }
    // An unprivileged process may map its own ids once `setgroups` is denied (user_namespaces(7)).
    std::fs::write("/proc/self/setgroups", "deny").context("/proc/self/setgroups")?;
    std::fs::write("/proc/self/uid_map", format!("{0} {0} 1\n", plan.uid)).context("uid_map")?;
    std::fs::write("/proc/self/gid_map", format!("{0} {0} 1\n", plan.gid)).context("gid_map")?;
    // SAFETY: a plain system call.
    check(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) }.into(), "PR_SET_DUMPABLE")?;
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(40);
    // SAFETY: plain system calls on integers and stack structs of the kernel's layout.
    unsafe {
        for cap in 0..=last {
            check(
                libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0).into(),
                "PR_CAPBSET_DROP",
            )?;
        }
        check(libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0).into(), "ambient")?;
        let header = CapHeader { version: CAPABILITY_VERSION_3, pid: 0 };
        let data = [CapData { effective: 0, permitted: 0, inheritable: 0 }; 2];
        check(libc::syscall(libc::SYS_capset, &raw const header, data.as_ptr()), "capset")?;
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0).into(), "PR_SET_NO_NEW_PRIVS")?;
        // After the last change of credentials, which clears it (prctl(2), PR_SET_PDEATHSIG): if the
        // runner dies, this process (the PID namespace's init) dies, and the namespace with it.
        check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0).into(), "PR_SET_PDEATHSIG")?;
    }
    Ok(())
}

/// Landlock over the same paths as the mounts (a second fence that holds if a mount is wrong);
/// best effort for the kernel's ABI. Returns how much the kernel enforces.
fn landlock(plan: &ChildPlan) -> anyhow::Result<&'static str> {
    use landlock::{
        ABI, Access as _, AccessFs, PathBeneath, PathFd, Ruleset, RulesetAttr as _, RulesetCreatedAttr as _,
        RulesetStatus,
    };
    let abi = ABI::V5;
    let mut ruleset = Ruleset::default().handle_access(AccessFs::from_all(abi))?.create()?;
    let read = AccessFs::from_read(abi);
    let devices = read | AccessFs::WriteFile;
    // Directory-only rights on a file would make the ruleset "partially enforced".
    let for_path = |path: &Path, access: landlock::BitFlags<AccessFs>| {
        if path.is_dir() { access } else { access & AccessFs::from_file(abi) }
    };
    for path in &plan.landlock_read {
        if let Ok(fd) = PathFd::new(path) {
            let access = if path.starts_with("/dev") { devices } else { read };
            ruleset = ruleset.add_rule(PathBeneath::new(fd, for_path(path, access)))?;
        }
    }
    for path in &plan.landlock_write {
        if let Ok(fd) = PathFd::new(path) {
            ruleset = ruleset.add_rule(PathBeneath::new(fd, for_path(path, AccessFs::from_all(abi))))?;
        }
    }
    let status = ruleset.restrict_self()?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => "full",
        RulesetStatus::PartiallyEnforced => "partial",
        RulesetStatus::NotEnforced => "none",
    })
}

/// The filters, the last with a listener the runner takes from this process before the exec.
fn install_filters(
    plan: &ChildPlan,
    status: &mut std::fs::File,
    go: &mut std::fs::File,
) -> anyhow::Result<()> {
    let Some((deny, others)) = plan.filters.split_last() else {
        return Ok(());
    };
    let fprog = |program: &seccompiler::BpfProgram| libc::sock_fprog {
        len: u16::try_from(program.len()).unwrap_or(u16::MAX),
        filter: program.as_ptr().cast::<libc::sock_filter>().cast_mut(),
    };
    for filter in others {
        let program = fprog(filter);
        // SAFETY: a valid program that outlives the call.
        check(
            unsafe { libc::syscall(libc::SYS_seccomp, libc::SECCOMP_SET_MODE_FILTER, 0, &raw const program) },
            "seccomp",
        )?;
    }
    let program = fprog(deny);
    // SAFETY: as above.
    let listener = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &raw const program,
        )
    };
    check(listener, "seccomp (listener)")?;
    // From here on only what the profile allows, plus what `SANDBOX_NEEDS` guarantees.
    writeln!(status, "L{listener}")?;
    let mut byte = [0u8; 1];
    go.read_exact(&mut byte).context("the runner did not take the seccomp listener")?;
    if byte[0] != b'T' {
        bail!("the runner refused the seccomp listener");
    }
    Ok(())
}
