//! `sentra-ctl launch`: starts the agent in a governed cgroup as an unprivileged user, with no new
//! privileges, no capabilities to regain, a clean environment and a seccomp profile installed last.
//!
//! The child prepares itself between fork and exec, in this order: it enters a mount namespace where
//! Sentra's files are out of sight ([`Hidden`]) and a PID namespace, whose init joins the cgroup (so
//! every exec from there on is governed) and a cgroup namespace rooted there before forking the
//! agent (see [`init`]); the agent takes the user's groups and ids (dropping the capability
//! bounding set first, which needs `CAP_SETPCAP`), clears the ambient set, sets
//! `PR_SET_NO_NEW_PRIVS`, installs the filters, and hands the deny filter's notification listener to
//! the launcher. The launcher answers
//! each denied call with `EPERM` and records it (see [`notify`]).

mod cgroup;
mod init;
pub mod notify;

use std::{
    ffi::CString,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, IntoRawFd as _, OwnedFd, RawFd},
        unix::fs::DirBuilderExt as _,
    },
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

use crate::{
    audit::{self, Record},
    policy::{Policy, seccomp::Compiled},
};

/// How the launch is filtered.
#[derive(Debug, Clone)]
pub enum Seccomp {
    /// The named profile (`None`: the policy's `governed.seccomp_profile`, else `gateway`).
    Profile(Option<String>),
    /// No filter (loud: a warning and an audit record).
    Off,
}

/// What `launch` was asked.
#[derive(Debug, Clone)]
pub struct Launch {
    /// `cgroup.procs` of the governed cgroup (the launch gets a cgroup of its own below it).
    pub procs: PathBuf,
    pub command: Vec<String>,
    /// `None`: the policy's `governed.user`.
    pub user: Option<String>,
    pub seccomp: Seccomp,
    /// Variables passed through (`NAME`) or set (`NAME=VALUE`).
    pub env: Vec<String>,
    /// What the agent must not reach (hidden in its own mount namespace).
    pub hide: Hidden,
    /// `procs` is the launcher's own cgroup, delegated to it (a systemd service with `Delegate=yes`):
    /// the launch cgroup is made there and must be governed (see [`cgroup::LaunchCgroup::create_delegated`]).
    pub delegated: bool,
}

/// Sentra's own files, hidden from the agent: files are covered by `/dev/null`, directories by an
/// empty read-only tmpfs, and the cgroup hierarchy is made read-only (in a mount namespace the agent
/// cannot leave: no `CAP_SYS_ADMIN`, and the profiles deny `mount`, `umount2` and `setns`).
#[derive(Debug, Clone, Default)]
pub struct Hidden {
    pub files: Vec<PathBuf>,
    pub dirs: Vec<PathBuf>,
    pub read_only: Vec<PathBuf>,
    /// The controller's records socket: the agent's `/run/sentra` holds it and nothing else.
    pub records: Option<PathBuf>,
}

/// The user the agent runs as.
#[derive(Debug, Clone)]
pub struct Identity {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: PathBuf,
}

impl Identity {
    /// Looks `name` up (a name or a numeric uid).
    ///
    /// # Errors
    /// No such user.
    pub fn lookup(name: &str) -> anyhow::Result<Self> {
        use nix::unistd::{Uid, User};
        let user = match name.parse::<u32>() {
            Ok(uid) => match User::from_uid(Uid::from_raw(uid)) {
                Ok(Some(user)) => user,
                // A numeric uid with no passwd entry (minimal systems have no /etc/passwd at all,
                // and glibc then answers ENOENT): its own group, home `/`.
                Ok(None) | Err(_) => {
                    return Ok(Self {
                        name: uid.to_string(),
                        uid,
                        gid: uid,
                        groups: vec![uid],
                        home: PathBuf::from("/"),
                    });
                }
            },
            Err(_) => User::from_name(name)?.with_context(|| format!("no user named {name}"))?,
        };
        let cname = CString::new(user.name.as_str())?;
        let groups = nix::unistd::getgrouplist(&cname, user.gid).map_or_else(
            |_| vec![user.gid.as_raw()],
            |g| g.into_iter().map(nix::unistd::Gid::as_raw).collect(),
        );
        Ok(Self { name: user.name, uid: user.uid.as_raw(), gid: user.gid.as_raw(), groups, home: user.dir })
    }
}

/// The capabilities a root agent (allowed by `governed.allow_root`) still loses: everything that
/// reaches the kernel's own state or other processes (include/uapi/linux/capability.h).
const ROOT_DROPS: [u32; 11] = [
    16, // CAP_SYS_MODULE
    17, // CAP_SYS_RAWIO
    19, // CAP_SYS_PTRACE
    21, // CAP_SYS_ADMIN
    22, // CAP_SYS_BOOT
    24, // CAP_SYS_RESOURCE
    32, // CAP_MAC_OVERRIDE
    33, // CAP_MAC_ADMIN
    37, // CAP_AUDIT_READ
    38, // CAP_PERFMON
    39, // CAP_BPF
];

/// The highest capability number the running kernel knows (`/proc/sys/kernel/cap_last_cap`).
fn cap_last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// The profile chosen for the launch, compiled.
///
/// # Errors
/// No such profile, or it cannot be compiled for this architecture.
pub fn compile_profile(policy: &Policy, wanted: Option<&str>) -> anyhow::Result<Compiled> {
    let name = match wanted.or(policy.model.governed.seccomp_profile.as_deref()) {
        Some(name) => name.to_string(),
        None if policy.model.seccomp_profiles.contains_key("gateway") => "gateway".to_string(),
        None => bail!(
            "{}: no seccomp profile to apply (no --seccomp-profile, no governed.seccomp_profile, no `gateway` profile); define one or pass --no-seccomp",
            policy.file.display()
        ),
    };
    let resolved = policy.seccomp_profile(&name)?;
    Ok(resolved.compile(true)?)
}

/// The environment the agent starts with: nothing of the launcher's except what `--env` passes,
/// plus the user's `HOME`, `USER`, `LOGNAME`, a `PATH` and `SHELL` (sentra-shell when installed
/// beside this binary).
fn environment(identity: &Identity, policy: &Policy, passed: &[String]) -> Vec<(String, String)> {
    let path = policy
        .model
        .exec
        .as_ref()
        .filter(|e| !e.path.is_empty())
        .map_or_else(|| "/usr/local/bin:/usr/bin:/bin".to_string(), |e| e.path.join(":"));
    let mut env = vec![
        ("HOME".to_string(), identity.home.display().to_string()),
        ("USER".to_string(), identity.name.clone()),
        ("LOGNAME".to_string(), identity.name.clone()),
        ("PATH".to_string(), path),
    ];
    if let Some(shell) = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("sentra-shell")))
        .filter(|p| p.is_file())
    {
        env.push(("SHELL".to_string(), shell.display().to_string()));
    }
    for item in passed {
        let (name, value) = match item.split_once('=') {
            Some((name, value)) => (name.to_string(), Some(value.to_string())),
            None => (item.clone(), std::env::var(item).ok()),
        };
        if let Some(value) = value {
            env.retain(|(n, _)| *n != name);
            env.push((name, value));
        }
    }
    env
}

/// A launch record, sent to the controller (the one writer of the audit log).
fn record(event: &str, detail: serde_json::Value) -> Record {
    Record {
        timestamp: audit::now(),
        event: event.into(),
        layer: "launcher",
        detail: Some(detail),
        ..Record::default()
    }
}

/// Sends a record to the controller; a record that cannot be sent is said on stderr.
pub fn report(record: &Record) {
    let sent = serde_json::to_value(record).map_err(anyhow::Error::from).and_then(|record| {
        let response =
            crate::controller::client::send(&crate::controller::protocol::Request::Record { record })?;
        if response.ok { Ok(()) } else { bail!("{}", response.error.unwrap_or_default()) }
    });
    if let Err(err) = sent {
        eprintln!("sentra-ctl launch: audit record not written ({err:#}): {}", record.event);
    }
}

/// The pieces the child needs between fork and exec, prepared before the fork (nothing may be
/// allocated after it).
struct ChildPlan {
    procs: OwnedFd,
    identity: Identity,
    drop_caps: Vec<u32>,
    /// The seccomp programs in installation order (the deny filter last).
    filters: Vec<seccompiler::BpfProgram>,
    /// The child's end of the socket the listener travels through.
    channel: RawFd,
    hidden_files: Vec<CString>,
    hidden_dirs: Vec<CString>,
    read_only: Vec<CString>,
    /// The controller's records socket.
    records: Option<CString>,
}

impl ChildPlan {
    /// Everything the child needs, and the launcher's end of the channel the listener comes back on.
    fn new(
        options: &Launch,
        identity: &Identity,
        compiled: Option<&Compiled>,
    ) -> anyhow::Result<(Self, OwnedFd)> {
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(&options.procs)
            .with_context(|| format!("opening {}", options.procs.display()))?;
        let drop_caps: Vec<u32> =
            if identity.uid == 0 { ROOT_DROPS.to_vec() } else { (0..=cap_last_cap()).collect() };
        let filters: Vec<seccompiler::BpfProgram> =
            compiled.map(|c| c.filters.iter().map(|(_, p)| p.clone()).collect()).unwrap_or_default();
        if filters.iter().any(|p| u16::try_from(p.len()).is_err()) {
            bail!("a seccomp filter longer than 65535 instructions");
        }
        let (parent_end, child_end) = nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::SeqPacket,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        )?;
        let c_paths = |paths: &[PathBuf]| -> anyhow::Result<Vec<CString>> {
            paths
                .iter()
                .filter(|p| p.exists())
                .map(|p| CString::new(p.as_os_str().as_encoded_bytes()).context("a path with a NUL byte"))
                .collect()
        };
        let plan = Self {
            procs: procs.into(),
            identity: identity.clone(),
            drop_caps,
            filters,
            channel: child_end.into_raw_fd(),
            hidden_files: c_paths(&options.hide.files)?,
            hidden_dirs: c_paths(&options.hide.dirs)?,
            read_only: c_paths(&options.hide.read_only)?,
            records: match &options.hide.records {
                Some(socket) if socket.exists() => {
                    let agent_dir = Path::new(crate::controller::protocol::AGENT_RECORDS_SOCKET)
                        .parent()
                        .unwrap_or(Path::new("/run/sentra"));
                    // The mount point (the controller's own runtime directory, usually).
                    if !agent_dir.is_dir() {
                        std::fs::DirBuilder::new()
                            .recursive(true)
                            .mode(0o711)
                            .create(agent_dir)
                            .with_context(|| format!("creating {}", agent_dir.display()))?;
                    }
                    Some(
                        CString::new(socket.as_os_str().as_encoded_bytes())
                            .context("a path with a NUL byte")?,
                    )
                }
                _ => None,
            },
        };
        Ok((plan, parent_end))
    }
}

/// Runs the launch; returns the command's exit code.
///
/// # Errors
/// The user is unknown or root without `governed.allow_root`, the profile cannot be compiled, or the
/// command cannot be started.
pub async fn launch(policy: &Policy, options: Launch) -> anyhow::Result<i32> {
    crate::enforce::require_root()?;
    let user = options.user.clone().or_else(|| policy.model.governed.user.clone()).with_context(|| {
        format!("{}: no user to run as: pass --user NAME or set governed.user", policy.file.display())
    })?;
    let identity = Identity::lookup(&user)?;
    if identity.uid == 0 && !policy.model.governed.allow_root {
        bail!(
            "refusing to launch as root ({user}): a root agent can fight its governance; run it as an unprivileged user, or set governed.allow_root: true in {}",
            policy.file.display()
        );
    }
    let compiled = match &options.seccomp {
        Seccomp::Profile(name) => Some(compile_profile(policy, name.as_deref())?),
        Seccomp::Off => {
            eprintln!(
                "sentra-ctl launch: WARNING: --no-seccomp: the agent runs without a seccomp profile (bpf, ptrace, mount… are open to it)"
            );
            None
        }
    };
    // The profile's network policy, when it has one, is the kernel allowlist of this launch's cgroup.
    let net_profile = match &compiled {
        Some(compiled) => crate::policy::network::compile(policy)?
            .profiles
            .iter()
            .any(|p| p.name == compiled.profile)
            .then(|| compiled.profile.clone()),
        None => None,
    };
    let parent = options.procs.parent().context("no governed cgroup")?;
    let own = if options.delegated {
        cgroup::LaunchCgroup::create_delegated(parent, net_profile.as_deref())?
    } else {
        cgroup::LaunchCgroup::create(parent, net_profile.as_deref())?
    };
    let options = Launch { procs: own.procs(), ..options };
    let (plan, parent_end) = ChildPlan::new(&options, &identity, compiled.as_ref())?;
    let env = environment(&identity, policy, &options.env);
    let agent_path = env.iter().find(|(name, _)| name == "PATH").map(|(_, value)| value.clone());
    let mut cmd = tokio::process::Command::new(&options.command[0]);
    cmd.args(&options.command[1..]).env_clear().envs(env).current_dir(if identity.home.is_dir() {
        identity.home.as_path()
    } else {
        Path::new("/")
    });
    let plan_channel = plan.channel;
    // SAFETY: `prepare` only makes system calls (async-signal-safe) on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || prepare(&plan));
    }
    let profile = compiled.as_ref().map(|c| c.profile.clone());
    let channel = plan_channel;
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(err) => {
            let why = refused_start(policy, &options.command[0], agent_path.as_deref());
            return Err(anyhow::Error::new(err).context(format!(
                "starting {}{}",
                options.command[0],
                why.map(|w| format!(": {w}")).unwrap_or_default()
            )));
        }
    };
    // The child's end, open in this process only to be inherited across the fork.
    // SAFETY: `channel` was leaked from an OwnedFd for the child and is closed once, here.
    drop(unsafe { OwnedFd::from_raw_fd(channel) });
    let pid = child.id().unwrap_or(0);
    report(&record(
        "launch",
        serde_json::json!({
            "pid": pid,
            "command": options.command,
            "user": identity.name,
            "uid": identity.uid,
            "seccomp_profile": profile,
            "seccomp": compiled.is_some(),
            "cgroup": own.path(),
            "network_profile": net_profile,
            "absent_on_this_architecture": compiled.as_ref().map(|c| &c.absent_here),
        }),
    ));
    if compiled.is_none() {
        report(&Record {
            reason: Some("launched with --no-seccomp".into()),
            ..record("seccomp_disabled", serde_json::json!({ "pid": pid, "command": options.command }))
        });
    }
    let listener = match &profile {
        Some(profile) => {
            let fd = notify::receive_listener(&parent_end).context("receiving the seccomp listener")?;
            Some(notify::serve(fd, profile.clone()))
        }
        None => None,
    };
    let status = forward_signals_until_exit(&mut child).await?;
    let code = crate::run::exit_code(status);
    report_exit(policy, &options.command[0], agent_path.as_deref(), pid, code);
    drop(listener);
    Ok(code)
}

/// Records the agent's exit. Exec refused (126/127) or killed (137, the signal backend): says so when
/// the policy is why, instead of leaving a bare status.
fn report_exit(policy: &Policy, program: &str, path: Option<&str>, pid: u32, code: i32) {
    let refused = if matches!(code, 126 | 127 | 137) { refused_start(policy, program, path) } else { None };
    if let Some(why) = &refused {
        eprintln!("sentra-ctl launch: {why}");
    }
    report(&Record {
        reason: refused,
        ..record("launch_exit", serde_json::json!({ "pid": pid, "exit_code": code }))
    });
}

/// Why the kernel refuses to start `program` under `policy`: the first file of its exec chain (the
/// program, a script's interpreter, what `env` runs; see [`crate::policy::exec::exec_chain`]) the exec
/// rules deny, with the deciding rule, its reason and how to allow it. `None` when the policy allows
/// them all (the start failed for another reason).
fn refused_start(policy: &Policy, program: &str, path: Option<&str>) -> Option<String> {
    use crate::policy::{exec, model::Effect};
    let compiled = exec::compile(policy).ok()?;
    let search: Vec<PathBuf> =
        path.unwrap_or("/usr/local/bin:/usr/bin:/bin").split(':').map(PathBuf::from).collect();
    let resolved = if program.contains('/') {
        PathBuf::from(program)
    } else {
        search.iter().map(|dir| dir.join(program)).find(|p| p.is_file())?
    };
    exec::exec_chain(&resolved, &search).iter().find_map(|file| {
        let explanation = compiled.explain(file).ok()?;
        if explanation.effect == Effect::Allow {
            return None;
        }
        let rule = explanation.rule.as_deref().unwrap_or("default");
        let reason = explanation
            .rule
            .as_ref()
            .and_then(|id| compiled.table.rules.iter().find(|r| &r.id == id))
            .and_then(|r| r.reason.clone())
            .unwrap_or_else(|| explanation.how.clone());
        let fix = if explanation.rule.is_some() {
            format!("the deny rule `{rule}` in {} decides; change it, then `sentra-ctl policy reload`", policy.file.display())
        } else {
            format!(
                "to allow it, add `- {{ id: allow_{}, path: {} }}` under exec.allow in {}, then `sentra-ctl policy reload`",
                explanation.file.file_name().map(|n| n.to_string_lossy().replace(['.', '-'], "_")).unwrap_or_default(),
                explanation.file.display(),
                policy.file.display()
            )
        };
        Some(format!("DENIED (kernel): {} — rule {rule}: {reason}; {fix}", explanation.file.display()))
    })
}

/// Waits for the child; SIGTERM, SIGINT and SIGHUP sent to the launcher are passed on to it.
async fn forward_signals_until_exit(
    child: &mut tokio::process::Child,
) -> anyhow::Result<std::process::ExitStatus> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        let forward = tokio::select! {
            status = child.wait() => return Ok(status?),
            _ = term.recv() => nix::sys::signal::Signal::SIGTERM,
            _ = int.recv() => nix::sys::signal::Signal::SIGINT,
            _ = hup.recv() => nix::sys::signal::Signal::SIGHUP,
        };
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), forward);
        }
    }
}

/// Between fork and exec, in the child. Only system calls: no allocation, no locks.
fn prepare(plan: &ChildPlan) -> std::io::Result<()> {
    let check = |rc: libc::c_long| if rc < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) };
    let id = &plan.identity;
    // SAFETY: plain system calls on values and buffers prepared before the fork.
    unsafe {
        // Every mount is made before the cgroup is joined: a governed task may not change the mount
        // tree on the `lsm` backend (`guard_mount`), the launcher's own steps included.
        enter_namespaces(plan)?;
        // From here on this is the agent, pid 2 of its own PID namespace (see `init`); the namespace's
        // init joined the cgroup before forking it.
        init::split(&|| join(plan))?;
        check(libc::setgroups(id.groups.len(), id.groups.as_ptr()).into())?;
        check(libc::setresgid(id.gid, id.gid, id.gid).into())?;
        for &cap in &plan.drop_caps {
            // EINVAL: a capability this kernel does not know.
            if libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) < 0
                && *libc::__errno_location() != libc::EINVAL
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        check(libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0).into())?;
        check(libc::setresuid(id.uid, id.uid, id.uid).into())?;
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0).into())?;
        if let Some((deny, others)) = plan.filters.split_last() {
            for filter in others {
                let program = fprog(filter);
                check(libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    &raw const program,
                ))?;
            }
            let program = fprog(deny);
            let listener = libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
                &raw const program,
            );
            check(listener)?;
            let listener = i32::try_from(listener).unwrap_or(-1);
            notify::send_listener(plan.channel, listener)?;
            libc::close(listener);
        }
        libc::close(plan.channel);
    }
    Ok(())
}

/// Joins the governed cgroup and enters a cgroup namespace rooted there: no move to a cgroup outside
/// it is permitted, whatever the uid (kernel/cgroup/cgroup.c, `cgroup_procs_write_permission`). In
/// the PID namespace's init, before it forks the agent: system calls only.
fn join(plan: &ChildPlan) -> std::io::Result<()> {
    // SAFETY: write(2) and unshare(2) on a descriptor and flags prepared before the fork.
    unsafe {
        // "0" moves the writing process itself (kernel/cgroup/cgroup.c, cgroup_procs_write_start).
        if libc::write(plan.procs.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::unshare(libc::CLONE_NEWCGROUP) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The agent's own mount namespace, with Sentra's files out of sight, and a PID namespace for the
/// processes forked next. In the child, between fork and exec: system calls only.
///
/// # Safety
/// Called in the child, as root, before it joins the governed cgroup.
unsafe fn enter_namespaces(plan: &ChildPlan) -> std::io::Result<()> {
    let check = |rc: libc::c_long| if rc < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) };
    // SAFETY: plain system calls on C strings prepared before the fork.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWPID).into())?;
        check(
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
            .into(),
        )?;
        for file in &plan.hidden_files {
            check(
                libc::mount(
                    c"/dev/null".as_ptr(),
                    file.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                )
                .into(),
            )?;
        }
        for dir in &plan.hidden_dirs {
            let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
            check(
                libc::mount(
                    c"sentra-hidden".as_ptr(),
                    dir.as_ptr(),
                    c"tmpfs".as_ptr(),
                    flags,
                    c"size=4k,mode=0500".as_ptr().cast(),
                )
                .into(),
            )?;
        }
        if let Some(source) = &plan.records {
            mount_records(source)?;
        }
        for dir in &plan.read_only {
            check(
                libc::mount(
                    dir.as_ptr(),
                    dir.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                )
                .into(),
            )?;
            let flags = libc::MS_BIND
                | libc::MS_REMOUNT
                | libc::MS_RDONLY
                | libc::MS_NOSUID
                | libc::MS_NODEV
                | libc::MS_NOEXEC;
            check(
                libc::mount(std::ptr::null(), dir.as_ptr(), std::ptr::null(), flags, std::ptr::null()).into(),
            )?;
        }
    }
    Ok(())
}

/// The agent's `/run/sentra`: a read-only tmpfs holding only the controller's records socket, at the
/// fixed path its shells look for. In the child, between fork and exec: system calls only.
///
/// # Safety
/// Called in the child after `unshare(CLONE_NEWNS)`; `source` names the socket.
unsafe fn mount_records(source: &CString) -> std::io::Result<()> {
    let check = |rc: libc::c_int| if rc < 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) };
    let dir = c"/run/sentra";
    let target = c"/run/sentra/records.sock";
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    // SAFETY: plain system calls with valid C strings and a stack buffer.
    unsafe {
        // The socket usually lives in the very directory the tmpfs is about to cover (the
        // controller's `/run/sentra`): it is held open first and bound from the descriptor. Opened
        // here, in the new mount namespace, because a bind mount's source must be a mount of the
        // caller's namespace (fs/namespace.c `do_loopback`, `check_mnt`).
        let held = libc::open(source.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
        check(held)?;
        let mut buffer = [0u8; 32];
        let via = fd_path(held, &mut buffer);
        check(libc::mount(
            c"sentra-run".as_ptr(),
            dir.as_ptr(),
            c"tmpfs".as_ptr(),
            flags,
            c"size=16k,mode=0755".as_ptr().cast(),
        ))?;
        let fd = libc::open(target.as_ptr(), libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC, 0o644);
        check(fd)?;
        libc::close(fd);
        let bound =
            libc::mount(via.as_ptr(), target.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null());
        libc::close(held);
        check(bound)?;
        check(libc::mount(
            std::ptr::null(),
            dir.as_ptr(),
            std::ptr::null(),
            libc::MS_REMOUNT | libc::MS_RDONLY | flags,
            std::ptr::null(),
        ))?;
    }
    Ok(())
}

/// `/proc/self/fd/<fd>` written into `buffer` (NUL-terminated), without allocating: it runs between
/// fork and exec.
fn fd_path(fd: libc::c_int, buffer: &mut [u8; 32]) -> &std::ffi::CStr {
    const PREFIX: &[u8] = b"/proc/self/fd/";
    buffer[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 10];
    let mut count = 0;
    let mut rest = fd.unsigned_abs();
    loop {
        let digit = u8::try_from(rest % 10).unwrap_or(0);
        digits[count] = b'0' + digit;
        count += 1;
        rest /= 10;
        if rest == 0 || count == digits.len() {
            break;
        }
    }
    for i in 0..count {
        buffer[PREFIX.len() + i] = digits[count - 1 - i];
    }
    buffer[PREFIX.len() + count] = 0;
    std::ffi::CStr::from_bytes_until_nul(&buffer[..]).unwrap_or(c"/proc/self/fd/-1")
}

/// The kernel's view of a program (lengths were checked before the fork).
fn fprog(program: &seccompiler::BpfProgram) -> libc::sock_fprog {
    libc::sock_fprog {
        len: u16::try_from(program.len()).unwrap_or(u16::MAX),
        // seccompiler's `sock_filter` is the kernel's struct (include/uapi/linux/filter.h).
        filter: program.as_ptr().cast::<libc::sock_filter>().cast_mut(),
    }
}

/// Lists the policy's profiles as `--list-profiles` prints them.
#[must_use]
pub fn list_profiles(policy: &Policy) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let default = policy
        .model
        .governed
        .seccomp_profile
        .clone()
        .or_else(|| policy.model.seccomp_profiles.contains_key("gateway").then(|| "gateway".to_string()));
    if policy.model.seccomp_profiles.is_empty() {
        let _ = writeln!(out, "{}: no seccomp profiles", policy.file.display());
    }
    for (name, profile) in &policy.model.seccomp_profiles {
        let Ok(resolved) = policy.seccomp_profile(name) else { continue };
        let denied: Vec<&str> = resolved
            .syscalls
            .iter()
            .filter(|(_, e)| e.base != crate::policy::model::SeccompAction::Allow || !e.conditions.is_empty())
            .map(|(n, _)| n.as_str())
            .collect();
        let _ = writeln!(
            out,
            "{name}{}{}: default {:?}; denies or conditions {} calls: {}",
            if default.as_deref() == Some(name.as_str()) { " (default)" } else { "" },
            profile.extends.as_ref().map(|p| format!(" extends {p}")).unwrap_or_default(),
            resolved.default,
            denied.len(),
            denied.join(" ")
        );
        if let Err(err) = resolved.compile(true) {
            let _ = writeln!(out, "  cannot be launched: {err}");
        }
    }
    out
}

#[cfg(test)]
mod fd_path_tests {
    #[test]
    fn names_the_descriptor() {
        let mut buffer = [0u8; 32];
        assert_eq!(super::fd_path(7, &mut buffer), c"/proc/self/fd/7");
        assert_eq!(super::fd_path(1023, &mut buffer), c"/proc/self/fd/1023");
        assert_eq!(super::fd_path(0, &mut buffer), c"/proc/self/fd/0");
    }
}
