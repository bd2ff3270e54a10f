//! Decoding ring-buffer records into events.

use std::net::IpAddr;

use sentra_common::{
    event::{
        Decision, EventHeader, EventKind, ExecEvent, GuardEvent, GuardHook, NetEvent, NetHook, ProbeSite,
        flags,
    },
    exec::{RULE_APPLET_UNKNOWN, RULE_DEFAULT, RULE_INTERNAL_ERROR, RULE_PATH_TOO_DEEP},
    settings::{Backend, Mode},
};

/// How often a controller drains the ring buffer of events that did not wake it (allowed execs are
/// submitted without a wakeup; denials wake it at once).
pub const DRAIN_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// The decoded [`EventHeader`]: when, which task, which backend. Every event has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub boot_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub comm: String,
    pub backend: Backend,
    /// Start of the process and of its parent, nanoseconds since boot (0: not read).
    pub start_ns: u64,
    pub parent_start_ns: u64,
}

impl Header {
    fn decode(header: &EventHeader) -> Result<Self, DecodeError> {
        Ok(Self {
            boot_ns: header.boot_ns,
            pid: header.pid,
            tid: header.tid,
            ppid: header.ppid,
            uid: header.uid,
            gid: header.gid,
            cgroup_id: header.cgroup_id,
            comm: c_string(&header.comm),
            backend: Backend::try_from(header.backend).map_err(value)?,
            start_ns: header.start_ns,
            parent_start_ns: header.parent_start_ns,
        })
    }
}

/// A decoded exec event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    pub header: Header,
    pub decision: Decision,
    pub mode: Mode,
    pub rule: RuleRef,
    pub generation: u32,
    /// The executed file's path as the kernel resolved it.
    pub path: String,
    pub path_truncated: bool,
    pub dev: u64,
    pub ino: u64,
    pub argc: u32,
    pub args: Vec<String>,
    pub args_truncated: bool,
    /// The file is a multi-call binary and this applet's name decided (`sentra-ebpf`'s
    /// `exec/applet.rs`); `None` when the name could not be read or the file decided.
    pub applet: Option<Applet>,
}

/// The applet of a multi-call binary's run, as the kernel found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applet {
    /// Index of the argument that named it.
    pub arg: u32,
    /// Its name (the argument after its last `/`), if the event carries that argument.
    pub name: Option<String>,
}

impl Applet {
    /// The applet the argument `arg` of `args` names, read as the kernel reads it: after the last
    /// `/`, and for `argv[0]` without a login shell's leading `-`.
    fn of(args: &[String], arg: u32) -> Self {
        let name = usize::try_from(arg).ok().and_then(|i| args.get(i)).map(|raw| {
            let raw = if arg == 0 { raw.strip_prefix('-').unwrap_or(raw) } else { raw.as_str() };
            raw.rsplit('/').next().unwrap_or(raw).to_string()
        });
        Self { arg, name }
    }
}

/// A decoded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Exec(Exec),
    Net(Net),
    Guard(Guard),
}

/// A decoded guard refusal: self-protection (always enforced: not policy) or trusted execution
/// (decided by an exec rule; recorded without refusing in audit mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    pub header: Header,
    pub hook: GuardHook,
    /// Hook-specific number (`sentra_common::event::GuardHook` says which).
    pub detail: u32,
    pub target: u32,
    pub extra: u32,
    pub decision: Decision,
    /// Trusted execution: the exec rule that decided the file, in `generation`.
    pub rule: RuleRef,
    pub generation: u32,
    /// The file involved, if any.
    pub file: Option<GuardFile>,
}

/// The file a guard event names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardFile {
    pub dev: u64,
    pub ino: u64,
    /// Its last path component.
    pub name: String,
}

/// A decoded network event (a denial, or a would-be denial in audit mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Net {
    pub header: Header,
    pub decision: Decision,
    pub mode: Mode,
    pub hook: NetHook,
    /// Index of the deciding network rule, or one of `sentra_common::net::NET_RULE_*`.
    pub rule: u32,
    /// Which step failed, for `NET_RULE_INTERNAL_ERROR`.
    pub site: ProbeSite,
    pub generation: u32,
    pub destination: IpAddr,
    pub port: u16,
    /// IP protocol number (6 TCP, 17 UDP).
    pub protocol: u32,
    /// The executable: `/proc/<pid>/exe` while the task lives, else the file name the kernel saw.
    pub exe: String,
}

/// Which rule decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleRef {
    Index(u32),
    Default,
    /// The probe failed at this site and decided closed.
    InternalError(ProbeSite),
    PathTooDeep,
    /// A multi-call binary's applet could not be told from its arguments: denied.
    AppletUnknown,
}

/// Errors decoding a record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is too short")]
    Short(usize),
    #[error("{0}")]
    Value(String),
}

fn value(err: sentra_common::UnknownValue) -> DecodeError {
    DecodeError::Value(err.to_string())
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn read<T: Copy>(bytes: &[u8]) -> Result<T, DecodeError> {
    if bytes.len() < size_of::<T>() {
        return Err(DecodeError::Short(bytes.len()));
    }
    // SAFETY: length checked; T is a repr(C) integer-only type (Pod), any bit pattern is valid;
    // read_unaligned makes no alignment assumption about the ring buffer's bytes.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Decodes one ring-buffer record.
///
/// # Errors
/// A short record, or a field with a value this build does not know.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let header: EventHeader = read(bytes)?;
    let kind = EventKind::try_from(header.kind).map_err(|e| DecodeError::Value(e.to_string()))?;
    match kind {
        EventKind::Exec => decode_exec(&read::<ExecEvent>(bytes)?).map(Event::Exec),
        EventKind::Net => decode_net(&read::<NetEvent>(bytes)?).map(Event::Net),
        EventKind::Guard => decode_guard(&read::<GuardEvent>(bytes)?).map(Event::Guard),
    }
}

fn decode_guard(event: &GuardEvent) -> Result<Guard, DecodeError> {
    let name = c_string(&event.name);
    let file =
        (event.ino != 0 || !name.is_empty()).then_some(GuardFile { dev: event.dev, ino: event.ino, name });
    Ok(Guard {
        header: Header::decode(&event.header)?,
        hook: GuardHook::try_from(event.hook).map_err(value)?,
        detail: event.detail,
        target: event.target,
        extra: event.extra,
        decision: Decision::try_from(event.decision).map_err(value)?,
        rule: rule_ref(event.rule, ProbeSite::None as u32)?,
        generation: event.generation,
        file,
    })
}

/// An event's rule index as a reference (`probe_site` names the failed step of an internal error).
fn rule_ref(rule: u32, probe_site: u32) -> Result<RuleRef, DecodeError> {
    Ok(match rule {
        RULE_DEFAULT => RuleRef::Default,
        RULE_INTERNAL_ERROR => RuleRef::InternalError(ProbeSite::try_from(probe_site).map_err(value)?),
        RULE_PATH_TOO_DEEP => RuleRef::PathTooDeep,
        RULE_APPLET_UNKNOWN => RuleRef::AppletUnknown,
        index => RuleRef::Index(index),
    })
}

fn decode_net(event: &NetEvent) -> Result<Net, DecodeError> {
    let header = Header::decode(&event.header)?;
    let destination = if event.family == sentra_common::net::FAMILY_V4 {
        IpAddr::from([event.addr[0], event.addr[1], event.addr[2], event.addr[3]])
    } else {
        IpAddr::from(event.addr)
    };
    let kernel_name = c_string(&event.exe);
    // The task usually still runs (its syscall just failed); its /proc link gives the full path.
    let exe = std::fs::read_link(format!("/proc/{}/exe", header.pid))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| kernel_name.is_empty() || p.ends_with(&kernel_name))
        .unwrap_or(kernel_name);
    Ok(Net {
        header,
        decision: Decision::try_from(event.decision).map_err(value)?,
        mode: Mode::try_from(event.mode).map_err(value)?,
        hook: NetHook::try_from(event.hook).map_err(value)?,
        rule: event.rule,
        site: ProbeSite::try_from(event.probe_site).map_err(value)?,
        generation: event.generation,
        destination,
        port: u16::try_from(event.port).map_err(|_| DecodeError::Value(format!("port {}", event.port)))?,
        protocol: event.protocol,
        exe,
    })
}

fn decode_exec(event: &ExecEvent) -> Result<Exec, DecodeError> {
    let count = usize::try_from(event.path_components).unwrap_or(usize::MAX).min(event.path.len());
    // Components are innermost first; the path is their reverse.
    let mut path = String::new();
    for component in event.path[..count].iter().rev() {
        let name = c_string(component);
        // Filesystem roots are named "/" (a real name never contains '/'): they add nothing to the path.
        if name == "/" || name.is_empty() {
            continue;
        }
        path.push('/');
        path.push_str(&name);
    }
    if path.is_empty() {
        path.push('/');
    }
    let path_truncated = event.flags & flags::PATH_TRUNCATED != 0;
    if path_truncated {
        path.insert(0, '…');
    }
    let passed = usize::try_from(event.argc).unwrap_or(usize::MAX);
    let mut args_truncated = event.flags & flags::ARGS_TRUNCATED != 0;
    let args = if event.flags & flags::ARGS_UNAVAILABLE != 0 {
        Vec::new()
    } else if event.flags & flags::ARGS_PACKED != 0 {
        let captured = packed_args(event, passed);
        args_truncated |= captured.len() < passed;
        captured
    } else {
        event.args[..passed.min(event.args.len())].iter().map(|a| c_string(a)).collect()
    };
    let applet = (event.flags & flags::APPLET != 0).then(|| Applet::of(&args, event.applet_arg));
    Ok(Exec {
        header: Header::decode(&event.header)?,
        decision: Decision::try_from(event.decision).map_err(value)?,
        mode: Mode::try_from(event.mode).map_err(value)?,
        rule: rule_ref(event.rule, event.probe_site)?,
        generation: event.generation,
        path,
        path_truncated,
        dev: event.dev,
        ino: event.ino,
        argc: event.argc,
        args,
        args_truncated,
        applet,
    })
}

/// The arguments of a [`flags::ARGS_PACKED`] event: its argument area split at each NUL, at most
/// `argc` of them; an area cut short ends with the part of an argument it holds.
fn packed_args(event: &ExecEvent, argc: usize) -> Vec<String> {
    let area = event.args.as_flattened();
    let len = usize::try_from(event.args_len).unwrap_or(usize::MAX).min(area.len());
    let area = &area[..len];
    let area = area.strip_suffix(&[0]).unwrap_or(area);
    if area.is_empty() {
        return Vec::new();
    }
    area.split(|&b| b == 0).take(argc).map(|arg| String::from_utf8_lossy(arg).into_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::Applet;

    #[test]
    fn a_packed_argument_area_is_split_as_the_kernel_laid_it_out() {
        // SAFETY: every field of ExecEvent is an integer or an array of them.
        let mut event: sentra_common::event::ExecEvent = unsafe { std::mem::zeroed() };
        let area = b"ls\0-l\0\0/tmp\0";
        event.args.as_flattened_mut()[..area.len()].copy_from_slice(area);
        event.args_len = u32::try_from(area.len()).expect("len");
        assert_eq!(super::packed_args(&event, 9), ["ls", "-l", "", "/tmp"], "an empty argument stays");
        assert_eq!(super::packed_args(&event, 2), ["ls", "-l"], "no more than argc");
        event.args_len = 5;
        assert_eq!(super::packed_args(&event, 4), ["ls", "-l"], "an area cut within an argument");
        event.args_len = 0;
        assert!(super::packed_args(&event, 4).is_empty());
        event.args_len = u32::MAX;
        assert_eq!(super::packed_args(&event, 4).len(), 4, "a length past the area is the area");
    }

    #[test]
    fn an_applet_is_named_as_the_kernel_reads_it() {
        let args: Vec<String> =
            ["-/bin/sh", "/usr/sbin/mount", "-a"].iter().map(ToString::to_string).collect();
        assert_eq!(Applet::of(&args, 0).name.as_deref(), Some("sh"));
        assert_eq!(Applet::of(&args, 1).name.as_deref(), Some("mount"));
        // Only argv[0] loses a leading dash.
        assert_eq!(Applet::of(&args, 2).name.as_deref(), Some("-a"));
        assert_eq!(Applet::of(&args, 3).name, None);
    }
}
