//! `sentra python`: agent-written Python in a sandbox the policy's `profiles` describe.
//!
//! Each run gets new mount, PID, IPC, UTS, network (loopback only) and user namespaces, a root with
//! only the interpreter's runtime and the profile's paths in it, Landlock over the same paths, the
//! profile's seccomp filter (denials answered `EPERM` by the runner and recorded as violations), a
//! cgroup leaf with memory, swap, process and CPU limits, a wall-clock timeout that kills the whole
//! run, capped output, no capabilities, no new privileges and a clean environment. See [`child`] for
//! the order of the steps and [`supervise`] for what the runner does while it runs.

pub mod agent;
mod child;
pub mod limits;
mod observe;
mod supervise;

use std::{
    collections::BTreeMap,
    ffi::CString,
    io::Write as _,
    os::{
        fd::{FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::{
    audit::{self, Record},
    policy::{
        Policy,
        model::{SeccompAction, SyscallCondition},
        sandbox::{self as model, Limits, NetworkDefault, SandboxProfile},
        seccomp::Entry,
    },
};

/// What the runner calls between installing the filters and the exec (the listener handshake, the
/// exit on failure): a profile must allow them.
pub const SANDBOX_NEEDS: [&str; 3] = ["read", "write", "exit_group"];

/// `CLONE_THREAD` (include/uapi/linux/sched.h): a thread, not a process.
const CLONE_THREAD: u64 = 0x0001_0000;

/// The original project's request (JSON on stdin).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub code: String,
    pub profile: Option<String>,
    pub cwd: Option<String>,
    pub fs_read_allow: Option<Vec<String>>,
    pub fs_write_allow: Option<Vec<String>>,
    pub timeout_sec: Option<u64>,
    pub mem_max_mb: Option<u64>,
    pub pids_max: Option<u32>,
    pub max_stdout_bytes: Option<u64>,
    pub max_stderr_bytes: Option<u64>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

/// What the interpreter runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Program {
    Code(String),
    Module(String),
    /// A script, read inside the sandbox (it must be in a readable path there).
    File(String),
}

/// One sandbox run as asked: a profile (or capability), the program, and what the request narrows
/// (also what an unprivileged caller sends the controller, see [`agent`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Invocation {
    pub profile: Option<String>,
    pub capability: Option<String>,
    pub program: Option<Program>,
    pub args: Vec<String>,
    /// `-u`: unbuffered output.
    pub unbuffered: bool,
    pub cwd: Option<String>,
    pub read_allow: Option<Vec<String>>,
    pub write_allow: Option<Vec<String>>,
    pub timeout_sec: Option<u64>,
    pub mem_max_mb: Option<u64>,
    pub pids_max: Option<u32>,
    pub max_stdout_bytes: Option<u64>,
    pub max_stderr_bytes: Option<u64>,
    pub env: BTreeMap<String, String>,
    /// The sandbox's uid on the host (a name or number) [default: `nobody`]: root's choice alone,
    /// never part of a request.
    #[serde(skip)]
    pub user: Option<String>,
}

impl From<Request> for Invocation {
    fn from(r: Request) -> Self {
        Self {
            profile: r.profile,
            program: Some(Program::Code(r.code)),
            cwd: r.cwd,
            read_allow: r.fs_read_allow,
            write_allow: r.fs_write_allow,
            timeout_sec: r.timeout_sec,
            mem_max_mb: r.mem_max_mb,
            pids_max: r.pids_max,
            max_stdout_bytes: r.max_stdout_bytes,
            max_stderr_bytes: r.max_stderr_bytes,
            env: r.env,
            ..Self::default()
        }
    }
}

/// One thing the sandbox refused or a limit that fired.
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    /// `syscall` or `limit`.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syscall: Option<String>,
    /// `timeout`, `memory`, `pids`, `stdout`, `stderr`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<&'static str>,
    /// The host pid of the (first) process (syscalls).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// How many times (the same system call denied again is counted here, not listed again).
    pub count: u64,
    /// The path a file violation named (as the sandbox sees it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The process, read while it waited for the answer (for the audit record).
    #[serde(skip)]
    pub task: Option<audit::Task>,
    pub detail: String,
}

impl Violation {
    /// A limit that fired.
    #[must_use]
    pub fn limit(limit: &'static str, detail: String) -> Self {
        Self {
            kind: "limit",
            syscall: None,
            limit: Some(limit),
            pid: None,
            count: 1,
            path: None,
            task: None,
            detail,
        }
    }
}

/// The original project's response (JSON on stdout), with what Sentra adds.
#[derive(Debug, Clone, Serialize)]
pub struct Response {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    pub wall_time_ms: u64,
    pub peak_mem_mb: Option<f64>,
    pub timed_out: bool,
    pub oom_killed: bool,
    pub truncated: bool,
    pub code_sha256: Option<String>,
    pub violations: Vec<Violation>,
    /// Violations beyond the first [`supervise::MAX_VIOLATIONS`], counted.
    pub violations_dropped: u64,
    pub profile: String,
    /// How much of the Landlock ruleset the kernel enforces: `full`, `partial`, `none`.
    pub landlock: String,
    /// The limit that ended the run, if one did.
    pub limit: Option<&'static str>,
}

/// A run, resolved from the policy and the invocation.
#[derive(Debug)]
pub struct Plan {
    pub profile: String,
    pub limits: Limits,
    pub code_sha256: Option<String>,
    child: child::ChildPlan,
    /// The profile's syscall profile, if it names one.
    seccomp: Option<String>,
    watch: observe::Watch,
    /// Who asked the controller for this run (an agent's pid, uid and cgroup), for the records.
    pub requested_by: Option<serde_json::Value>,
}

impl Plan {
    /// A record's detail with who asked for the run, when someone asked the controller.
    fn detail(&self, mut detail: serde_json::Value) -> serde_json::Value {
        if let (Some(by), Some(fields)) = (&self.requested_by, detail.as_object_mut()) {
            fields.insert("requested_by".into(), by.clone());
        }
        detail
    }
}

fn narrowed(asked: Option<u64>, allowed: u64, key: &str) -> anyhow::Result<u64> {
    match asked {
        Some(v) if v > allowed => {
            bail!("{key} {v} is above the profile's {allowed}; a request may only lower limits")
        }
        Some(0) => bail!("{key} must be at least 1"),
        Some(v) => Ok(v),
        None => Ok(allowed),
    }
}

/// Paths a request names must lie within the profile's (a request narrows, never widens).
fn within(asked: Option<&Vec<String>>, allowed: &[String], key: &str) -> anyhow::Result<Vec<String>> {
    let Some(asked) = asked else { return Ok(allowed.to_vec()) };
    for path in asked {
        let ok = path.starts_with('/')
            && !path.split('/').any(|c| c == "..")
            && allowed.iter().any(|a| Path::new(path).starts_with(a));
        if !ok {
            bail!("{key}: {path} is not within the profile's {key} ({})", allowed.join(", "));
        }
    }
    Ok(asked.clone())
}

/// The profile's name: asked, through a capability, or the policy's only/`python_sandbox` profile.
fn choose<'a>(policy: &'a Policy, invocation: &Invocation) -> anyhow::Result<(String, &'a SandboxProfile)> {
    let profiles = &policy.model.profiles;
    let name = if let Some(cap) = &invocation.capability {
        let capability = policy.model.capabilities.get(cap).with_context(|| {
            format!(
                "no capability named `{cap}` in {} (it defines: {})",
                policy.file.display(),
                policy.model.capabilities.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        if invocation.profile.as_ref().is_some_and(|p| p != &capability.profile) {
            bail!("capability `{cap}` runs profile `{}`, not the one asked", capability.profile);
        }
        let mut used: Vec<String> = Vec::new();
        match &invocation.program {
            Some(Program::Code(_)) => used.push("-c".into()),
            Some(Program::Module(_)) => used.push("-m".into()),
            Some(Program::File(file)) => used.push(file.clone()),
            None => {}
        }
        if invocation.unbuffered {
            used.push("-u".into());
        }
        for argument in used {
            if !capability.allows(&argument) {
                bail!(
                    "capability `{cap}` does not allow `{argument}` (allowed_python_argv: {})",
                    capability.allowed_python_argv.join(", ")
                );
            }
        }
        capability.profile.clone()
    } else if let Some(name) = &invocation.profile {
        name.clone()
    } else if profiles.len() == 1 {
        profiles.keys().next().cloned().unwrap_or_default()
    } else if profiles.contains_key("python_sandbox") {
        "python_sandbox".to_string()
    } else {
        bail!(
            "{} defines {} sandbox profiles; name one with --profile ({})",
            policy.file.display(),
            profiles.len(),
            profiles.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    };
    let profile = profiles.get(&name).with_context(|| {
        format!(
            "no sandbox profile named `{name}` in {} (it defines: {})",
            policy.file.display(),
            profiles.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    })?;
    Ok((name, profile))
}

/// The directories the interpreter's own code lives in: the system library directories and the
/// `lib` beside its `bin` (a Python built into its own prefix).
fn runtime(python: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> =
        ["/lib", "/lib64", "/lib32", "/usr/lib", "/usr/lib64", "/etc/ld.so.cache", "/etc/localtime"]
            .iter()
            .map(PathBuf::from)
            .collect();
    if let Some(prefix) = prefix(python) {
        paths.push(prefix.join("lib"));
    }
    paths.push(python.to_path_buf());
    paths
}

/// The interpreter's installation prefix (`/usr` for `/usr/bin/python3.11`).
fn prefix(python: &Path) -> Option<&Path> {
    python.parent().and_then(Path::parent)
}

/// The devices a program expects.
const DEVICES: [&str; 5] = ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom"];

/// Resolves a run.
///
/// # Errors
/// No such profile or capability, a request that widens the profile, an interpreter that is not
/// there, or a syscall profile that cannot be compiled.
pub fn plan(policy: &Policy, invocation: &Invocation) -> anyhow::Result<Plan> {
    let (name, profile) = choose(policy, invocation)?;
    if profile.default_network == NetworkDefault::Allow {
        bail!(
            "profile `{name}`: default_network: allow is not supported yet (a sandbox's network is its own loopback); set it to deny"
        );
    }
    let limits = limits(invocation, &profile.limits_defaults.resolve())?;
    let python_bin = profile.python_bin.as_deref().unwrap_or(model::DEFAULT_PYTHON);
    let python = std::fs::canonicalize(python_bin)
        .with_context(|| format!("profile `{name}`: the interpreter {python_bin} is not there"))?;
    let identity = identity(invocation)?;
    let files = Files::new(profile, invocation, &python, &identity)?;
    let Interpreter { argv, env, code_sha256 } = program(invocation, python_bin, &files.cwd)?;
    let (filters, calls) = filters(policy, profile)?;
    let mut watch_read: Vec<PathBuf> = files.landlock_read.clone();
    watch_read.extend(files.landlock_write.iter().cloned());
    watch_read.extend(files.symlinks.iter().map(|(link, _)| link.clone()));
    let mut watch_write = files.landlock_write.clone();
    watch_write.extend(DEVICES.iter().map(PathBuf::from));
    let watch = observe::Watch {
        calls,
        read: watch_read,
        write: watch_write,
        protected: profile.fs_defaults.protected_deny.iter().map(PathBuf::from).collect(),
        prefix: prefix(&python).map(Path::to_path_buf),
    };
    let cstring = |s: &str| CString::new(s).with_context(|| format!("`{s}` has a NUL byte"));
    let child = child::ChildPlan {
        root: std::env::temp_dir().join(format!("sentra-sandbox-{}-{}", std::process::id(), nanos())),
        binds: files.binds,
        symlinks: files.symlinks,
        hide: files.hide,
        cwd: files.cwd,
        own_network: profile.default_network == NetworkDefault::Deny,
        uid: identity.uid,
        gid: identity.gid,
        landlock_read: files.landlock_read,
        landlock_write: files.landlock_write,
        filters: filters.filters.into_iter().map(|(_, p)| p).collect(),
        exec: CString::new(python.as_os_str().as_bytes())?,
        argv: argv.iter().map(|a| cstring(a)).collect::<anyhow::Result<_>>()?,
        envp: env.iter().map(|(k, v)| cstring(&format!("{k}={v}"))).collect::<anyhow::Result<_>>()?,
    };
    Ok(Plan {
        profile: name,
        limits,
        code_sha256,
        child,
        seccomp: profile.syscall_profile.clone(),
        watch,
        requested_by: None,
    })
}

/// The profile's limits, lowered where the invocation asks.
fn limits(invocation: &Invocation, base: &Limits) -> anyhow::Result<Limits> {
    Ok(Limits {
        timeout_sec: narrowed(invocation.timeout_sec, base.timeout_sec, "timeout_sec")?,
        cpu_max_percent: base.cpu_max_percent,
        mem_max_mb: narrowed(invocation.mem_max_mb, base.mem_max_mb, "mem_max_mb")?,
        pids_max: u32::try_from(narrowed(
            invocation.pids_max.map(u64::from),
            u64::from(base.pids_max),
            "pids_max",
        )?)
        .unwrap_or(base.pids_max),
        max_stdout_bytes: narrowed(invocation.max_stdout_bytes, base.max_stdout_bytes, "max_stdout_bytes")?,
        max_stderr_bytes: narrowed(invocation.max_stderr_bytes, base.max_stderr_bytes, "max_stderr_bytes")?,
    })
}

/// The user the code runs as: never root.
fn identity(invocation: &Invocation) -> anyhow::Result<crate::launch::Identity> {
    let identity = match (&invocation.user, nix::unistd::geteuid().is_root()) {
        (_, false) => bail!(
            "sentra python runs as root: it creates the sandbox's cgroup and namespaces, then runs the code as an unprivileged user"
        ),
        (Some(user), true) => crate::launch::Identity::lookup(user)?,
        (None, true) => {
            crate::launch::Identity::lookup("nobody").or_else(|_| crate::launch::Identity::lookup("65534"))?
        }
    };
    if identity.uid == 0 {
        bail!("the sandbox does not run code as root; pass --user with an unprivileged user");
    }
    Ok(identity)
}

/// The sandbox's file system: what is bound in, linked, covered, and the same for Landlock.
struct Files {
    binds: Vec<child::Bind>,
    symlinks: Vec<(PathBuf, PathBuf)>,
    hide: Vec<PathBuf>,
    cwd: PathBuf,
    landlock_read: Vec<PathBuf>,
    landlock_write: Vec<PathBuf>,
}

impl Files {
    fn new(
        profile: &SandboxProfile,
        invocation: &Invocation,
        python: &Path,
        identity: &crate::launch::Identity,
    ) -> anyhow::Result<Self> {
        let fs = &profile.fs_defaults;
        let read_allow = within(invocation.read_allow.as_ref(), &fs.read_allow, "fs_read_allow")?;
        let write_allow = within(invocation.write_allow.as_ref(), &fs.write_allow, "fs_write_allow")?;
        let cwd = match &invocation.cwd {
            Some(cwd) => {
                let all: Vec<String> = read_allow.iter().chain(&write_allow).cloned().collect();
                within(Some(&vec![cwd.clone()]), &all, "cwd")?;
                PathBuf::from(cwd)
            }
            None => PathBuf::from(fs.cwd.as_deref().unwrap_or("/")),
        };
        let mut files = Self {
            binds: Vec::new(),
            symlinks: Vec::new(),
            hide: Vec::new(),
            cwd,
            landlock_read: Vec::new(),
            landlock_write: Vec::new(),
        };
        for path in runtime(python) {
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.file_type().is_symlink() => {
                    if let Ok(target) = std::fs::read_link(&path) {
                        files.symlinks.push((path.clone(), target));
                    }
                }
                Ok(_) => files.bind(&path, false, false),
                Err(_) => continue,
            }
            files.landlock_read.push(path);
        }
        for path in DEVICES.iter().map(PathBuf::from).chain(read_allow.iter().map(PathBuf::from)) {
            if path.exists() {
                files.bind(&path, false, path.starts_with("/dev"));
                files.landlock_read.push(path);
            }
        }
        for path in write_allow.iter().map(PathBuf::from) {
            if !path.exists() && path.parent().is_some_and(Path::is_dir) {
                // A writable directory that is not there yet is made for the sandbox's user, by
                // whichever of several runs starting at once gets there first.
                match std::fs::create_dir(&path) {
                    Ok(()) => {
                        std::os::unix::fs::chown(&path, Some(identity.uid), Some(identity.gid))?;
                        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
                    }
                    Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(err) => return Err(err).with_context(|| path.display().to_string()),
                }
            }
            if path.exists() {
                files.bind(&path, true, false);
                files.landlock_write.push(path);
            }
        }
        // Parents before children, so that a child path is bound on top of its parent's bind.
        files.binds.sort_by_key(|b| b.target.components().count());
        files.hide = fs
            .protected_deny
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.exists() && files.binds.iter().any(|b| p != &b.target && p.starts_with(&b.target)))
            .collect();
        files.landlock_read.push(files.cwd.clone());
        files.landlock_read.push(PathBuf::from("/proc"));
        Ok(files)
    }

    fn bind(&mut self, path: &Path, writable: bool, device: bool) {
        self.binds.push(child::Bind {
            source: path.to_path_buf(),
            target: path.to_path_buf(),
            writable,
            device,
        });
    }
}

/// The interpreter's command line and environment.
struct Interpreter {
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    code_sha256: Option<String>,
}

/// The interpreter's arguments and environment, and the code's SHA-256 when it is given as text.
fn program(invocation: &Invocation, python_bin: &str, cwd: &Path) -> anyhow::Result<Interpreter> {
    let mut argv = vec![python_bin.to_string(), "-s".to_string()];
    if invocation.unbuffered {
        argv.push("-u".into());
    }
    let code_sha256 = match &invocation.program {
        Some(Program::Code(code)) => {
            argv.extend(["-c".to_string(), code.clone()]);
            Some(hex(&sha2::Sha256::digest(code.as_bytes())))
        }
        Some(Program::Module(module)) => {
            argv.extend(["-m".to_string(), module.clone()]);
            None
        }
        Some(Program::File(file)) => {
            argv.push(file.clone());
            None
        }
        None => bail!("nothing to run: give -c CODE, -m MODULE or FILE.py"),
    };
    argv.extend(invocation.args.iter().cloned());
    let mut env: BTreeMap<String, String> = BTreeMap::from([
        ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
        ("HOME".into(), cwd.display().to_string()),
        ("LANG".into(), "C.UTF-8".into()),
        ("PYTHONDONTWRITEBYTECODE".into(), "1".into()),
    ]);
    for (key, value) in &invocation.env {
        if key.is_empty() || key.contains('=') || key.contains('\0') || value.contains('\0') {
            bail!("env: `{key}` is not a usable variable");
        }
        env.insert(key.clone(), value.clone());
    }
    Ok(Interpreter { argv, env, code_sha256 })
}

/// The profile's seccomp filters with the sandbox's own rules, and the calls the runner watches.
fn filters(
    policy: &Policy,
    profile: &SandboxProfile,
) -> anyhow::Result<(crate::policy::seccomp::Compiled, BTreeMap<i64, observe::PathCall>)> {
    let mut resolved = match &profile.syscall_profile {
        Some(syscalls) => policy.syscall_profile(syscalls)?,
        None => crate::policy::seccomp::Resolved::permissive("(none)"),
    };
    spawn_rules(&mut resolved.syscalls, profile.deny_spawn_processes);
    let calls = observe::apply(&mut resolved);
    let compiled =
        resolved.compile_for(true, &SANDBOX_NEEDS, "the sandbox runner (the listener handshake)")?;
    Ok((compiled, calls))
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
        use std::fmt::Write as _;
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// `deny_spawn_processes`: no process creation or exec (threads stay). Every denial goes to the
/// runner, and `execve` always does: the runner lets the interpreter's own exec through (the first,
/// made by the runner's code before anything untrusted runs) and refuses every later one the
/// profile does not allow.
fn spawn_rules(syscalls: &mut BTreeMap<String, Entry>, deny_spawn: bool) {
    let deny = || Entry { base: SeccompAction::Deny, conditions: Vec::new(), dangerous: true };
    if deny_spawn {
        for name in ["fork", "vfork", "execve", "execveat"] {
            syscalls.insert(name.into(), deny());
        }
        // Threads stay possible: `clone` with CLONE_THREAD (clone3 answers ENOSYS, so libc uses clone).
        syscalls.insert(
            "clone".into(),
            Entry {
                base: SeccompAction::Deny,
                conditions: vec![SyscallCondition {
                    arg: 0,
                    mask: CLONE_THREAD,
                    value: CLONE_THREAD,
                    action: SeccompAction::Allow,
                }],
                dangerous: true,
            },
        );
    } else if syscalls
        .get("execve")
        .is_some_and(|e| e.base != SeccompAction::Allow || !e.conditions.is_empty())
    {
        syscalls.insert("execve".into(), deny());
    }
}

/// Where the run's records go: the controller (the one writer of the audit log), or a file when the
/// runner was given one.
pub enum Sink {
    Controller,
    File(audit::AuditLog),
}

impl Sink {
    fn write(&self, record: &Record) {
        match self {
            Self::Controller => crate::launch::report(record),
            Self::File(log) => {
                if let Err(err) = log.write(record) {
                    eprintln!("sentra python: audit record not written ({err}): {}", record.event);
                }
            }
        }
    }
}

fn record(
    event: &str,
    decision: Option<&'static str>,
    reason: Option<String>,
    detail: serde_json::Value,
) -> Record {
    Record {
        timestamp: audit::now(),
        event: event.into(),
        layer: "sandbox",
        decision,
        reason,
        detail: Some(detail),
        ..Record::default()
    }
}

/// Runs the plan to its end and says how it went; the run's cgroup, mounts and processes are gone
/// when this returns.
///
/// # Errors
/// The sandbox could not be set up (nothing ran).
pub fn run(plan: &Plan, sink: &Sink) -> anyhow::Result<Response> {
    let threads = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        s.lines().find_map(|l| l.strip_prefix("Threads:").and_then(|v| v.trim().parse::<u32>().ok()))
    });
    if threads != Some(1) {
        bail!("the sandbox runner must be single-threaded when it clones (it has {threads:?} threads)");
    }
    let leaf = limits::Leaf::create(&plan.limits)?;
    std::fs::create_dir(&plan.child.root).with_context(|| plan.child.root.display().to_string())?;
    let root_dir = RemoveDir(plan.child.root.clone());
    sink.write(&record(
        "sandbox_exec",
        Some("allowed"),
        None,
        plan.detail(serde_json::json!({
            "profile": plan.profile,
            "code_sha256": plan.code_sha256,
            "limits": plan.limits,
            "syscall_profile": plan.seccomp,
            "python": plan.child.exec.to_string_lossy(),
            "cwd": plan.child.cwd,
            "uid": plan.child.uid,
            "cgroup": leaf.path(),
        })),
    ));
    let started = std::time::Instant::now();
    let outcome = supervise::start_and_watch(&plan.child, &leaf, &plan.limits, &plan.watch);
    drop(root_dir);
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(err) => {
            sink.write(&record(
                "sandbox_exit",
                Some("denied"),
                Some(format!("{err:#}")),
                plan.detail(serde_json::json!({ "profile": plan.profile, "setup_failed": true })),
            ));
            return Err(err);
        }
    };
    let usage = leaf.usage();
    drop(leaf);
    let mut violations = outcome.violations;
    let limit = cgroup_limits(&usage, &plan.limits, &mut violations).or(outcome.limit);
    #[expect(clippy::cast_precision_loss, reason = "megabytes for people; exact to far beyond any limit")]
    let peak_mem_mb = usage.peak_bytes.map(|b| (b as f64 / f64::from(1u32 << 20) * 10.0).round() / 10.0);
    let response = Response {
        exit_code: outcome.exit_code,
        stdout: String::from_utf8_lossy(&outcome.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&outcome.stderr).into_owned(),
        wall_time_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        peak_mem_mb,
        timed_out: outcome.timed_out,
        oom_killed: usage.oom_kills > 0,
        truncated: outcome.truncated,
        code_sha256: plan.code_sha256.clone(),
        violations,
        violations_dropped: outcome.violations_dropped,
        profile: plan.profile.clone(),
        landlock: outcome.landlock,
        limit,
    };
    write_outcome(sink, plan, &response);
    Ok(response)
}

/// The cgroup limits that fired, as violations; the one that ended the run.
fn cgroup_limits(
    usage: &limits::Usage,
    limits: &Limits,
    violations: &mut Vec<Violation>,
) -> Option<&'static str> {
    let mut fired = None;
    let mut add = |limit: &'static str, detail: String| {
        fired = fired.or(Some(limit));
        violations.push(Violation::limit(limit, detail));
    };
    if usage.oom_kills > 0 {
        add("memory", format!("{} OOM kill(s) at mem_max_mb {}", usage.oom_kills, limits.mem_max_mb));
    }
    if usage.pids_refused > 0 {
        add("pids", format!("{} fork(s) refused at pids_max {}", usage.pids_refused, limits.pids_max));
    }
    fired
}

/// A run's violations and its end, in the audit log.
fn write_outcome(sink: &Sink, plan: &Plan, response: &Response) {
    for violation in &response.violations {
        let mut rec = record(
            "sandbox_violation",
            Some("denied"),
            Some(violation.detail.clone()),
            plan.detail(serde_json::json!({
                "profile": plan.profile,
                "code_sha256": plan.code_sha256,
                "violation": violation,
            })),
        );
        rec.rule_id = Some(format!("sandbox:{}", plan.profile));
        rec.task.clone_from(&violation.task);
        sink.write(&rec);
    }
    sink.write(&record(
        "sandbox_exit",
        None,
        None,
        plan.detail(serde_json::json!({
            "profile": plan.profile,
            "code_sha256": plan.code_sha256,
            "exit_code": response.exit_code,
            "wall_time_ms": response.wall_time_ms,
            "peak_mem_mb": response.peak_mem_mb,
            "timed_out": response.timed_out,
            "oom_killed": response.oom_killed,
            "truncated": response.truncated,
            "limit": response.limit,
            "violations": response.violations.iter().map(|v| v.count).sum::<u64>() + response.violations_dropped,
            "landlock": response.landlock,
        })),
    ));
}

/// Removes the (empty) mount point of the sandbox's root once the run is over.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// An owned descriptor from a raw one just returned by the kernel.
fn owned(fd: i64) -> anyhow::Result<OwnedFd> {
    let fd = i32::try_from(fd).context("descriptor out of range")?;
    if fd < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: a descriptor the kernel just returned, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `sentra python`'s command line.
#[derive(Debug, clap::Parser)]
#[command(
    name = "sentra python",
    about = "Run Python in the policy's sandbox: namespaces, a minimal root, Landlock, seccomp, cgroup limits",
    after_help = "With --request, a JSON request ({\"code\": …, \"profile\": …, …}) is read from stdin and a JSON response written to stdout."
)]
pub struct Cli {
    /// The policy [default: `$SENTRA_POLICY`, then /etc/sentra/policy.yaml].
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// A `profiles` entry [default: the policy's only profile, or `python_sandbox`].
    #[arg(long)]
    pub profile: Option<String>,
    /// A `capabilities` entry (limits the interpreter's arguments).
    #[arg(long, conflicts_with = "profile")]
    pub capability: Option<String>,
    /// The sandbox's user on the host [default: nobody].
    #[arg(long)]
    pub user: Option<String>,
    /// Write audit records to this file instead of sending them to the controller.
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Read a JSON request on stdin, write a JSON response on stdout.
    #[arg(long, conflicts_with_all = ["code", "module"])]
    pub request: bool,
    /// Print the JSON response (with -c/-m/FILE) instead of passing the output through.
    #[arg(long)]
    pub json: bool,
    /// Program passed in as a string.
    #[arg(short = 'c', conflicts_with = "module")]
    pub code: Option<String>,
    /// Library module run as a script.
    #[arg(short = 'm')]
    pub module: Option<String>,
    /// Unbuffered output.
    #[arg(short = 'u')]
    pub unbuffered: bool,
    /// Lower the profile's timeout (seconds).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Lower the profile's memory limit (MB).
    #[arg(long)]
    pub mem: Option<u64>,
    /// FILE.py (unless -c or -m) and the arguments the program gets.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Runs `sentra python`; the exit code is the program's (126: the sandbox could not run it).
#[must_use]
pub fn main(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    use clap::Parser as _;
    let (ours, program_args) = split_program(args.into_iter().collect());
    let cli = match Cli::try_parse_from(ours).map(|mut cli| {
        cli.args.extend(program_args);
        cli
    }) {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() { 2 } else { 0 };
        }
    };
    match main_with(&cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("sentra python: {err:#}");
            126
        }
    }
}

/// Splits the command line as the interpreter does: everything after `-c CODE`, `-m MODULE` or the
/// script belongs to the program (`sentra python -m json.tool --help` asks `json.tool` for help).
fn split_program(args: Vec<std::ffi::OsString>) -> (Vec<std::ffi::OsString>, Vec<String>) {
    const TAKES_VALUE: [&str; 9] =
        ["--policy", "--profile", "--capability", "--user", "--log", "--timeout", "--mem", "-c", "-m"];
    let mut ours = Vec::new();
    let mut iter = args.into_iter();
    // argv[0]
    ours.extend(iter.next());
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy().into_owned();
        if text == "-c" || text == "-m" {
            ours.push(arg);
            ours.extend(iter.next());
            break;
        }
        if TAKES_VALUE.contains(&text.as_str()) {
            ours.push(arg);
            ours.extend(iter.next());
            continue;
        }
        if !text.starts_with('-') || text == "-" {
            // The script: it and what follows are the program's.
            ours.push("--".into());
            ours.push(arg);
            break;
        }
        ours.push(arg);
    }
    (ours, iter.map(|a| a.to_string_lossy().into_owned()).collect())
}

fn main_with(cli: &Cli) -> anyhow::Result<i32> {
    let mut invocation = if cli.request {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
        let request: Request = serde_json::from_str(&text).context("the request on stdin")?;
        Invocation::from(request)
    } else {
        let mut args = cli.args.clone();
        let program = match (&cli.code, &cli.module) {
            (Some(code), _) => Program::Code(code.clone()),
            (None, Some(module)) => Program::Module(module.clone()),
            (None, None) if !args.is_empty() => Program::File(args.remove(0)),
            (None, None) => bail!("nothing to run: give -c CODE, -m MODULE or FILE.py"),
        };
        Invocation { program: Some(program), args, ..Invocation::default() }
    };
    invocation.profile = cli.profile.clone().or(invocation.profile);
    invocation.capability.clone_from(&cli.capability);
    invocation.user.clone_from(&cli.user);
    invocation.unbuffered |= cli.unbuffered;
    invocation.timeout_sec = cli.timeout.or(invocation.timeout_sec);
    invocation.mem_max_mb = cli.mem.or(invocation.mem_max_mb);
    let response = if nix::unistd::geteuid().is_root() {
        let path = cli
            .policy
            .clone()
            .or_else(|| std::env::var_os("SENTRA_POLICY").filter(|v| !v.is_empty()).map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(crate::shell::gate::DEFAULT_POLICY));
        let policy = Policy::load(&path)?;
        let plan = plan(&policy, &invocation)?;
        let sink = match &cli.log {
            Some(log) => Sink::File(audit::AuditLog::open(log)?),
            None => Sink::Controller,
        };
        serde_json::to_value(run(&plan, &sink)?)?
    } else {
        if cli.policy.is_some() || cli.log.is_some() || cli.user.is_some() {
            bail!(
                "--policy, --log and --user are root's: an unprivileged caller's sandbox is run by the controller, under the policy it enforces, as its user, into its audit log"
            );
        }
        agent::ask(invocation)?
    };
    if cli.request || cli.json {
        println!("{}", serde_json::to_string(&response)?);
        return Ok(0);
    }
    let text = |key: &str| response[key].as_str().unwrap_or_default().to_string();
    let mut out = std::io::stdout().lock();
    out.write_all(text("stdout").as_bytes())?;
    out.flush()?;
    eprint!("{}", text("stderr"));
    for violation in response["violations"].as_array().into_iter().flatten() {
        eprintln!(
            "sentra python: DENIED ({}): {}",
            text("profile"),
            violation["detail"].as_str().unwrap_or_default()
        );
    }
    let code = response["exit_code"].as_i64().and_then(|c| i32::try_from(c).ok());
    code.context("the response has no exit code")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(args: &[&str]) -> (Vec<String>, Vec<String>) {
        let (ours, rest) = split_program(args.iter().map(std::ffi::OsString::from).collect());
        (ours.into_iter().map(|a| a.to_string_lossy().into_owned()).collect(), rest)
    }

    #[test]
    fn what_follows_the_program_is_the_programs() {
        let (ours, rest) = split(&["python", "--json", "-m", "json.tool", "--help"]);
        assert_eq!(ours, ["python", "--json", "-m", "json.tool"]);
        assert_eq!(rest, ["--help"]);
        let (ours, rest) = split(&["python", "--profile", "p", "script.py", "-c", "x"]);
        assert_eq!(ours, ["python", "--profile", "p", "--", "script.py"]);
        assert_eq!(rest, ["-c", "x"]);
        let (ours, rest) = split(&["python", "-c", "print(1)", "a", "--json"]);
        assert_eq!(ours, ["python", "-c", "print(1)"]);
        assert_eq!(rest, ["a", "--json"]);
    }

    #[test]
    fn a_request_narrows_and_never_widens() {
        let allowed = vec!["/work".to_string(), "/tmp/out".to_string()];
        assert_eq!(within(None, &allowed, "k").expect("default"), allowed);
        assert!(within(Some(&vec!["/work/sub".into()]), &allowed, "k").is_ok());
        for wider in ["/etc", "/work/../etc", "work", "/workshop"] {
            assert!(within(Some(&vec![wider.into()]), &allowed, "k").is_err(), "{wider}");
        }
        assert_eq!(narrowed(Some(5), 30, "t").expect("lower"), 5);
        assert!(narrowed(Some(31), 30, "t").is_err());
        assert!(narrowed(Some(0), 30, "t").is_err());
    }

    #[test]
    fn a_request_to_the_controller_cannot_name_the_user() {
        let asked: Invocation =
            serde_json::from_str(r#"{"program": {"module": "json.tool"}, "timeout_sec": 3}"#).expect("parse");
        assert!(matches!(asked.program, Some(Program::Module(ref m)) if m == "json.tool"));
        assert_eq!(asked.timeout_sec, Some(3));
        let with_user = r#"{"program": {"code": "1"}, "user": "root"}"#;
        assert!(serde_json::from_str::<Invocation>(with_user).is_err(), "`user` is not part of a request");
        let sent = serde_json::to_value(Invocation { user: Some("root".into()), ..asked }).expect("encode");
        assert!(sent.get("user").is_none(), "{sent}");
    }

    #[test]
    fn deny_spawn_keeps_threads() {
        let mut syscalls = BTreeMap::new();
        spawn_rules(&mut syscalls, true);
        let clone = &syscalls["clone"];
        assert_eq!(clone.base, SeccompAction::Deny);
        assert_eq!(clone.conditions[0].value, CLONE_THREAD);
        assert_eq!(clone.conditions[0].action, SeccompAction::Allow);
        for name in ["fork", "vfork", "execve", "execveat"] {
            assert_eq!(syscalls[name].base, SeccompAction::Deny, "{name}");
        }
    }
}
