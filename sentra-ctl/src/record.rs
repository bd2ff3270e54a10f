//! Turning kernel events into audit records.

use sentra_common::net::{NET_RULE_DEFAULT, NET_RULE_INTERNAL_ERROR, NET_RULE_UNKNOWN_PROFILE};

use crate::{
    audit::{Capture, Record, Task},
    kernel::events::{Exec, Header, Net, RuleRef},
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
        task: Some(Task { pid: header.pid, ppid: header.ppid, uid: header.uid, comm: header.comm.clone() }),
        cgroup_id: Some(header.cgroup_id),
        ..Record::default()
    }
}

/// The audit record of a kernel exec event; `rules` resolves its rule index.
#[must_use]
pub fn exec_record(event: &Exec, rules: &RuleTable, clock: &Clock) -> Record {
    let mut probe_site = None;
    let (rule_id, reason) = match event.rule {
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
    };
    let command = if event.args.is_empty() { event.path.clone() } else { event.args.join(" ") };
    Record {
        action: Some("exec"),
        command: Some(command),
        executable: Some(event.path.clone()),
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
        ..from_header("exec", &event.header, clock)
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
