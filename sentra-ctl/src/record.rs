//! Turning kernel events into audit records.

use sentra_common::{
    event::{Decision, FileOp, Filesystem, GuardHook, LoaderFault, LoaderVar, MountOp},
    net::{NET_RULE_DEFAULT, NET_RULE_DNS_NETNS, NET_RULE_INTERNAL_ERROR, NET_RULE_UNKNOWN_PROFILE},
};

use crate::{
    audit::{Capture, Record, Task},
    kernel::events::{Exec, Guard, Header, Net, RuleRef},
    policy::{exec::RuleTable, network::CompiledNet},
};

/// Converts `bpf_ktime_get_boot_ns` times to wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Wall-clock nanoseconds at boot.
    boot_epoch_ns: i128,
}

impl Clock {
    #[must_use]
    pub fn new() -> Self {
        let ns = |clock| {
            nix::time::clock_gettime(clock)
                .map_or(0, |t| i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec()))
        };
        let boot = ns(nix::time::ClockId::CLOCK_BOOTTIME);
        let real = ns(nix::time::ClockId::CLOCK_REALTIME);
        Self { boot_epoch_ns: real - boot }
    }

    /// RFC 3339 UTC time of a boot-relative timestamp.
    #[must_use]
    pub fn format(&self, boot_ns: u64) -> String {
        let wall = self.boot_epoch_ns + i128::from(boot_ns);
        let secs = i64::try_from(wall.div_euclid(1_000_000_000)).unwrap_or_default();
        let nanos = u32::try_from(wall.rem_euclid(1_000_000_000)).unwrap_or_default();
        chrono::DateTime::from_timestamp(secs, nanos)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// A record's fields that every kernel event has: time, process, cgroup, backend.
fn from_header(event: &'static str, header: &Header, clock: &Clock) -> Record {
    Record {
        timestamp: clock.format(header.boot_ns),
        event: event.into(),
        layer: "kernel",
        backend: Some(header.backend.as_str()),
        task: Some(Task {
            pid: header.pid,
            ppid: header.ppid,
            uid: header.uid,
            comm: header.comm.clone(),
            exec_id: crate::audit::exec_id(header.pid, header.start_ns),
            parent_exec_id: crate::audit::exec_id(header.ppid, header.parent_start_ns),
        }),
        cgroup_id: Some(header.cgroup_id),
        ..Record::default()
    }
}

/// The audit record of a kernel exec event; `rules` resolves its rule index.
#[must_use]
pub fn exec_record(event: &Exec, rules: &RuleTable, clock: &Clock) -> Record {
    let (rule_id, mut reason, probe_site) = exec_rule(event.rule, rules);
    // An applet's event names its multi-call binary by identity alone.
    let path = match &event.applet {
        Some(_) => rules
            .multicall_path(event.dev, event.ino)
            .map_or_else(|| event.path.clone(), |p| p.display().to_string()),
        None => event.path.clone(),
    };
    let command = if event.args.is_empty() { path.clone() } else { event.args.join(" ") };
    let mut detail = None;
    if let Some(applet) = &event.applet {
        let name = applet.name.as_deref().unwrap_or("?");
        let why = match event.rule {
            RuleRef::Default => {
                format!(
                    "no exec rule covers a program of that name; default {}",
                    rules.default_effect().as_str()
                )
            }
            _ => reason.unwrap_or_else(|| format!("exec rule `{rule_id}`")),
        };
        reason = Some(format!("{path} ran as the applet `{name}`, decided as that program: {why}"));
        detail = Some(serde_json::json!({ "applet": name, "applet_arg": applet.arg }));
    }
    Record {
        action: Some("exec"),
        command: Some(command),
        executable: Some(path),
        args: Some(event.args.iter().skip(1).cloned().collect()),
        decision: Some(event.decision.as_str()),
        rule_id: Some(rule_id),
        reason,
        probe_site,
        mode: Some(event.mode.as_str()),
        capture: Some(Capture {
            argc: event.argc,
            args_truncated: event.args_truncated,
            path_truncated: event.path_truncated,
        }),
        policy_generation: Some(event.generation),
        detail,
        ..from_header("exec", &event.header, clock)
    }
}

/// The id and reason of the exec rule an event names, and the failed probe site of an internal error.
fn exec_rule(rule: RuleRef, rules: &RuleTable) -> (String, Option<String>, Option<&'static str>) {
    let mut probe_site = None;
    let (rule_id, reason) = match rule {
        RuleRef::Index(index) => match rules.rule(index) {
            Some(rule) => (rule.id.clone(), rule.reason.clone()),
            None => (format!("rule#{index}"), None),
        },
        RuleRef::Default => (
            "default".to_string(),
            Some(format!("no exec rule covers this file; default {}", rules.default_effect().as_str())),
        ),
        RuleRef::InternalError(site) => {
            probe_site = Some(site.as_str());
            (
                "internal_error".to_string(),
                Some(format!("the kernel probe could not read {}; denied (fail closed)", site.as_str())),
            )
        }
        RuleRef::PathTooDeep => (
            "path_too_deep".to_string(),
            Some("the file is nested deeper than the kernel walk reaches; denied (fail closed)".into()),
        ),
        RuleRef::AppletUnknown => (
            "applet_unknown".to_string(),
            Some(
                "a multi-call binary's applet could not be told from its arguments (an argument longer than the kernel reads, or dispatcher names nested too deep); denied (fail closed)"
                    .into(),
            ),
        ),
    };
    (rule_id, reason, probe_site)
}

/// A trusted-execution refusal: decided by the exec rule it names, in the generation's mode.
fn trusted_record(
    event: &Guard,
    rules: &RuleTable,
    mut detail: serde_json::Map<String, serde_json::Value>,
    clock: &Clock,
) -> Record {
    let (rule_id, rule_reason, probe_site) = exec_rule(event.rule, rules);
    let file = event.file.as_ref().map_or("?", |f| f.name.as_str());
    let reason = if event.hook == GuardHook::ExecMap {
        let op = if event.detail == 0 { "mmap" } else { "mprotect" };
        detail.insert("operand".into(), op.into());
        format!(
            "executable mapping of `{file}` refused: neither an exec rule nor exec.libraries allows it ({})",
            rule_reason.as_deref().unwrap_or(&rule_id)
        )
    } else {
        let op = FileOp::try_from(event.detail).map_or("write", FileOp::as_str);
        detail.insert("operand".into(), op.into());
        format!("`{file}` may run under exec rule `{rule_id}`: governed tasks may not change it ({op})")
    };
    let audit = event.decision == Decision::AuditDenied;
    Record {
        action: Some(event.hook.as_str()),
        decision: Some(event.decision.as_str()),
        rule_id: Some(rule_id),
        reason: Some(reason),
        probe_site,
        mode: Some(if audit { "audit" } else { "enforce" }),
        detail: Some(serde_json::Value::Object(detail)),
        policy_generation: Some(event.generation),
        ..from_header("guard", &event.header, clock)
    }
}

/// A program killed (`signal` backend) because its environment points the dynamic loader at code
/// neither `exec.libraries` nor an exec rule allows: follows the policy's mode, as an exec denial does.
fn loader_record(event: &Guard, clock: &Clock) -> Record {
    let variable = LoaderVar::try_from(event.detail).map_or("a loader variable", LoaderVar::as_str);
    let fault = LoaderFault::try_from(event.target).unwrap_or(LoaderFault::NotAllowed);
    let entry = event.file.as_ref().map(|f| f.name.clone()).unwrap_or_default();
    let why = match fault {
        LoaderFault::NotAllowed => {
            format!("names `{entry}`, which neither exec.libraries nor an exec rule allows")
        }
        LoaderFault::Relative if entry.is_empty() => {
            "has an empty entry, which the loader takes as the working directory".to_string()
        }
        LoaderFault::Relative => format!("names `{entry}`, a relative path"),
        LoaderFault::DotDot => format!("names `{entry}`, a path with a `..` component"),
        LoaderFault::Expansion => format!("names `{entry}`, which the loader would expand (`$`)"),
        LoaderFault::TooLong => format!("has an entry longer than the kernel checks (`{entry}…`)"),
        LoaderFault::TooMany => "has more entries than the kernel checks".to_string(),
        LoaderFault::Unreadable => "could not be read".to_string(),
    };
    let audit = event.decision == Decision::AuditDenied;
    let outcome = if audit {
        "it would have been killed before its first instruction (audit mode)"
    } else {
        "it was killed before its first instruction"
    };
    let mut detail = serde_json::Map::new();
    detail.insert("variable".into(), variable.into());
    detail.insert("fault".into(), fault.as_str().into());
    if !entry.is_empty() {
        detail.insert("entry".into(), entry.into());
    }
    Record {
        action: Some(GuardHook::LoaderEnv.as_str()),
        decision: Some(event.decision.as_str()),
        rule_id: Some("loader_env".into()),
        reason: Some(if variable == LoaderVar::Environment.as_str() {
            let why = match fault {
                LoaderFault::TooMany => "has more loader variables or strings than the kernel checks",
                _ => "could not be read",
            };
            format!("the program's environment {why}: {outcome}")
        } else {
            format!("the program's environment sets {variable}, which {why}: {outcome}")
        }),
        mode: Some(if audit { "audit" } else { "enforce" }),
        detail: Some(serde_json::Value::Object(detail)),
        policy_generation: Some(event.generation),
        ..from_header("guard", &event.header, clock)
    }
}

/// Name of an IP protocol number as the audit log writes it.
#[must_use]
pub fn protocol_name(protocol: u32) -> String {
    match protocol {
        6 => "tcp".into(),
        17 => "udp".into(),
        other => other.to_string(),
    }
}

/// The audit record of a kernel network event; `rules` resolves its rule index.
#[must_use]
pub fn net_record(event: &Net, rules: &CompiledNet, clock: &Clock) -> Record {
    let (rule_id, reason) = match event.rule {
        NET_RULE_DEFAULT => (
            "default".to_string(),
            Some("no network entry allows this destination (the `network:` section's, or the launch profile's network_policy); default deny".to_string()),
        ),
        NET_RULE_UNKNOWN_PROFILE => (
            "unknown_profile".to_string(),
            Some(
                "the task was launched with a seccomp profile whose network_policy the enforced policy no longer has; denied (fail closed)"
                    .to_string(),
            ),
        ),
        NET_RULE_DNS_NETNS => (
            "dns_other_netns".to_string(),
            Some(
                "a DNS query from another network namespace than the controller's (an agent in a container, the controller on the host): the controller's resolver cannot answer there, so the query is refused; run sentra-ctl daemon in the agent's network namespace to govern its DNS"
                    .to_string(),
            ),
        ),
        NET_RULE_INTERNAL_ERROR => (
            "internal_error".to_string(),
            Some(format!("the kernel probe could not read {}; denied (fail closed)", event.site.as_str())),
        ),
        index => match rules.rule(index) {
            Some(rule) => (rule.id.clone(), rule.reason.clone()),
            None => (format!("rule#{index}"), None),
        },
    };
    Record {
        action: Some(event.hook.as_str()),
        executable: Some(event.exe.clone()),
        decision: Some(event.decision.as_str()),
        rule_id: Some(rule_id),
        reason,
        probe_site: (event.rule == NET_RULE_INTERNAL_ERROR).then_some(event.site.as_str()),
        mode: Some(event.mode.as_str()),
        policy_generation: Some(event.generation),
        destination: Some(event.destination.to_string()),
        port: Some(event.port),
        protocol: Some(protocol_name(event.protocol)),
        ..from_header("net", &event.header, clock)
    }
}

/// Name of a `bpf(2)` command (include/uapi/linux/bpf.h `enum bpf_cmd`).
fn bpf_command(cmd: u32) -> String {
    const NAMES: [&str; 37] = [
        "BPF_MAP_CREATE",
        "BPF_MAP_LOOKUP_ELEM",
        "BPF_MAP_UPDATE_ELEM",
        "BPF_MAP_DELETE_ELEM",
        "BPF_MAP_GET_NEXT_KEY",
        "BPF_PROG_LOAD",
        "BPF_OBJ_PIN",
        "BPF_OBJ_GET",
        "BPF_PROG_ATTACH",
        "BPF_PROG_DETACH",
        "BPF_PROG_TEST_RUN",
        "BPF_PROG_GET_NEXT_ID",
        "BPF_MAP_GET_NEXT_ID",
        "BPF_PROG_GET_FD_BY_ID",
        "BPF_MAP_GET_FD_BY_ID",
        "BPF_OBJ_GET_INFO_BY_FD",
        "BPF_PROG_QUERY",
        "BPF_RAW_TRACEPOINT_OPEN",
        "BPF_BTF_LOAD",
        "BPF_BTF_GET_FD_BY_ID",
        "BPF_TASK_FD_QUERY",
        "BPF_MAP_LOOKUP_AND_DELETE_ELEM",
        "BPF_MAP_FREEZE",
        "BPF_BTF_GET_NEXT_ID",
        "BPF_MAP_LOOKUP_BATCH",
        "BPF_MAP_LOOKUP_AND_DELETE_BATCH",
        "BPF_MAP_UPDATE_BATCH",
        "BPF_MAP_DELETE_BATCH",
        "BPF_LINK_CREATE",
        "BPF_LINK_UPDATE",
        "BPF_LINK_GET_FD_BY_ID",
        "BPF_LINK_GET_NEXT_ID",
        "BPF_ENABLE_STATS",
        "BPF_ITER_CREATE",
        "BPF_LINK_DETACH",
        "BPF_PROG_BIND_MAP",
        "BPF_TOKEN_CREATE",
    ];
    usize::try_from(cmd).ok().and_then(|i| NAMES.get(i)).map_or_else(|| cmd.to_string(), |n| (*n).to_string())
}

/// Name of a kernel read or load kind: `enum kernel_read_file_id` (`include/linux/kernel_read_file.h`)
/// and `enum kernel_load_data_id` (`include/linux/security.h`) list the same kinds in the same order.
fn load_kind(id: u32) -> &'static str {
    match id {
        1 => "firmware",
        2 => "module",
        3 => "kexec_image",
        4 => "kexec_initramfs",
        5 => "policy",
        6 => "x509_certificate",
        _ => "unknown",
    }
}

/// Name of a capability the guard refuses (include/uapi/linux/capability.h).
fn capability_name(cap: u32) -> String {
    match cap {
        16 => "CAP_SYS_MODULE".into(),
        17 => "CAP_SYS_RAWIO".into(),
        22 => "CAP_SYS_BOOT".into(),
        other => format!("capability {other}"),
    }
}

/// The audit record of a self-protection refusal.
#[must_use]
pub fn guard_record(event: &Guard, rules: &RuleTable, clock: &Clock) -> Record {
    let mut detail = serde_json::Map::new();
    if let Some(file) = &event.file {
        detail.insert("file".into(), file.name.clone().into());
        if file.ino != 0 {
            detail.insert("dev".into(), file.dev.into());
            detail.insert("ino".into(), file.ino.into());
        }
    }
    if matches!(event.hook, GuardHook::ExecMap | GuardHook::ExecWrite) {
        return trusted_record(event, rules, detail, clock);
    }
    if event.hook == GuardHook::LoaderEnv {
        return loader_record(event, clock);
    }
    let reason = match event.hook {
        GuardHook::Bpf => {
            let command = bpf_command(event.detail);
            let text = format!("governed tasks may not use bpf(2) ({command})");
            detail.insert("operand".into(), command.into());
            text
        }
        GuardHook::KernelReadFile | GuardHook::KernelLoadData => {
            let kind = load_kind(event.detail);
            detail.insert("operand".into(), kind.into());
            format!("governed tasks may not load code or data into the kernel ({kind})")
        }
        GuardHook::Signal => {
            detail.insert("operand".into(), event.detail.into());
            detail.insert("target_pid".into(), event.target.into());
            format!("signal {} to Sentra's controller (pid {}) refused", event.detail, event.target)
        }
        GuardHook::Ptrace => {
            detail.insert("operand".into(), event.detail.into());
            detail.insert("target_pid".into(), event.target.into());
            format!("tracing or reading the memory of Sentra's controller (pid {}) refused", event.target)
        }
        GuardHook::Capability => {
            let cap = capability_name(event.detail);
            let text = format!("{cap} reaches the kernel itself: refused to governed tasks");
            detail.insert("operand".into(), cap.into());
            text
        }
        GuardHook::Socket => {
            detail.insert("operand".into(), event.detail.into());
            detail.insert("socket_type".into(), event.target.into());
            detail.insert("socket_protocol".into(), event.extra.into());
            format!(
                "raw, packet and ICMP sockets bypass the network rules (family {}, type {}, protocol {}): refused",
                event.detail, event.target, event.extra
            )
        }
        GuardHook::FileWrite | GuardHook::Unlink | GuardHook::Rename => {
            let what = Filesystem::name(event.detail);
            detail.insert("operand".into(), what.into());
            let verb = match event.hook {
                GuardHook::Unlink => "removing",
                GuardHook::Rename => "renaming",
                _ => "writing",
            };
            format!("{verb} a {what} file is refused to governed tasks")
        }
        GuardHook::Sysctl => "sysctl writes are refused to governed tasks".to_string(),
        GuardHook::Mount => {
            let op = MountOp::try_from(event.detail).map_or("mount", MountOp::as_str);
            detail.insert("operand".into(), op.into());
            format!("governed tasks may not change the mount tree ({op})")
        }
        // Answered by `trusted_record` and `loader_record` above.
        GuardHook::ExecMap | GuardHook::ExecWrite | GuardHook::LoaderEnv => String::new(),
    };
    Record {
        action: Some(event.hook.as_str()),
        decision: Some("denied"),
        rule_id: Some("self_protection".into()),
        reason: Some(reason),
        mode: Some("enforce"),
        detail: Some(serde_json::Value::Object(detail)),
        ..from_header("guard", &event.header, clock)
    }
}

/// A kernel exec denial as the shell that ran the command is told it: which file, which rule, why.
/// Kept briefly by the controller (see `enforce::drain::Events::denials_since`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KernelDenial {
    pub file: String,
    pub rule_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `lsm` (the exec failed with `EPERM`) or `signal` (the task was killed).
    pub backend: String,
}
