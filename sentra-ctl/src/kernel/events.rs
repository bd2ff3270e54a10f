//! Decoding ring-buffer records into events.

use sentra_common::{
    event::{Decision, EventHeader, EventKind, ExecEvent, flags},
    exec::{RULE_DEFAULT, RULE_INTERNAL_ERROR, RULE_PATH_TOO_DEEP},
    settings::{Backend, Mode},
};

/// A decoded exec event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    pub boot_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub comm: String,
    pub backend: Backend,
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
}

/// Which rule decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleRef {
    Index(u32),
    Default,
    InternalError,
    PathTooDeep,
}

/// Errors decoding a record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is too short")]
    Short(usize),
    #[error("{0}")]
    Value(String),
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
pub fn decode(bytes: &[u8]) -> Result<Exec, DecodeError> {
    let header: EventHeader = read(bytes)?;
    let kind = EventKind::try_from(header.kind).map_err(|e| DecodeError::Value(e.to_string()))?;
    match kind {
        EventKind::Exec => decode_exec(&read::<ExecEvent>(bytes)?),
    }
}

fn decode_exec(event: &ExecEvent) -> Result<Exec, DecodeError> {
    let value = |e: sentra_common::UnknownValue| DecodeError::Value(e.to_string());
    let header = &event.header;
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
    let args = if event.flags & flags::ARGS_UNAVAILABLE != 0 {
        Vec::new()
    } else {
        let captured = usize::try_from(event.argc).unwrap_or(usize::MAX).min(event.args.len());
        event.args[..captured].iter().map(|a| c_string(a)).collect()
    };
    Ok(Exec {
        boot_ns: header.boot_ns,
        pid: header.pid,
        tid: header.tid,
        ppid: header.ppid,
        uid: header.uid,
        gid: header.gid,
        cgroup_id: header.cgroup_id,
        comm: c_string(&header.comm),
        backend: Backend::try_from(header.backend).map_err(value)?,
        decision: Decision::try_from(event.decision).map_err(value)?,
        mode: Mode::try_from(event.mode).map_err(value)?,
        rule: match event.rule {
            RULE_DEFAULT => RuleRef::Default,
            RULE_INTERNAL_ERROR => RuleRef::InternalError,
            RULE_PATH_TOO_DEEP => RuleRef::PathTooDeep,
            index => RuleRef::Index(index),
        },
        generation: event.generation,
        path,
        path_truncated,
        dev: event.dev,
        ino: event.ino,
        argc: event.argc,
        args,
        args_truncated: event.flags & flags::ARGS_TRUNCATED != 0,
    })
}
