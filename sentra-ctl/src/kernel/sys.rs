//! The raw `bpf(2)` system call, for the commands aya 0.14 does not offer (map-in-map creation,
//! batch updates and deletions, BPF links for cgroup sysctl programs and pinning them).

use std::io;

/// `union bpf_attr` for the element commands (`BPF_MAP_UPDATE_ELEM`, `BPF_MAP_DELETE_ELEM`).
#[repr(C)]
#[derive(Default)]
pub(crate) struct MapUpdate {
    pub(crate) map_fd: u32,
    pub(crate) pad0: u32,
    pub(crate) key: u64,
    pub(crate) value: u64,
    pub(crate) flags: u64,
    pub(crate) pad: [u64; 12],
}

pub(crate) fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: attr points to a properly sized, zero-padded bpf_attr for `cmd`.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), size_of::<T>()) };
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

/// `BPF_LINK_CREATE` (include/uapi/linux/bpf.h `enum bpf_cmd`).
const BPF_LINK_CREATE: libc::c_long = 28;
/// `BPF_OBJ_PIN`.
const BPF_OBJ_PIN: libc::c_long = 6;
/// `BPF_OBJ_GET`.
const BPF_OBJ_GET: libc::c_long = 7;

/// `union bpf_attr` for `BPF_LINK_CREATE` (the common head; no type-specific fields).
#[repr(C)]
#[derive(Default)]
struct LinkCreate {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    pad: [u64; 6],
}

/// `union bpf_attr` for `BPF_OBJ_PIN` and `BPF_OBJ_GET`.
#[repr(C)]
#[derive(Default)]
struct ObjPin {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    pad: [u64; 6],
}

/// Attaches `program` to `target` with a new BPF link of `attach_type`; the link's fd.
pub(crate) fn link_create(
    program: std::os::fd::BorrowedFd<'_>,
    target: std::os::fd::BorrowedFd<'_>,
    attach_type: u32,
) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _};
    let mut attr = LinkCreate {
        prog_fd: program.as_raw_fd().cast_unsigned(),
        target_fd: target.as_raw_fd().cast_unsigned(),
        attach_type,
        ..LinkCreate::default()
    };
    let fd = bpf(BPF_LINK_CREATE, &mut attr)?;
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("BPF_LINK_CREATE returned no fd"))?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Pins the BPF object `fd` at `path` (on a bpffs).
pub(crate) fn obj_pin(fd: std::os::fd::BorrowedFd<'_>, path: &std::path::Path) -> io::Result<()> {
    use std::os::{fd::AsRawFd as _, unix::ffi::OsStrExt as _};
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut attr = ObjPin {
        pathname: path.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd().cast_unsigned(),
        ..ObjPin::default()
    };
    bpf(BPF_OBJ_PIN, &mut attr).map(|_| ())
}

/// Opens the BPF object pinned at `path` (a program, map or link); its new fd.
pub(crate) fn obj_get(path: &std::path::Path) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::{fd::FromRawFd as _, unix::ffi::OsStrExt as _};
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut attr = ObjPin { pathname: path.as_ptr() as u64, ..ObjPin::default() };
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("BPF_OBJ_GET returned no fd"))?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// `BPF_PROG_LOAD`.
const BPF_PROG_LOAD: libc::c_long = 5;
/// `BPF_PROG_TYPE_TRACEPOINT`: its helpers are `bpf_tracing_func_proto`'s, as for `tp_btf` and BPF LSM
/// programs (`kernel/trace/bpf_trace.c`, `kernel/bpf/bpf_lsm.c`).
const BPF_PROG_TYPE_TRACEPOINT: u32 = 5;
/// `BPF_FUNC_get_current_ancestor_cgroup_id`.
const BPF_FUNC_GET_CURRENT_ANCESTOR_CGROUP_ID: i32 = 123;
/// `BPF_FUNC_ktime_get_coarse_ns`: Linux 5.11, the release that moved BPF memory from
/// `RLIMIT_MEMLOCK` to the memory cgroup (libbpf uses the same helper as the sign of it).
const BPF_FUNC_KTIME_GET_COARSE_NS: i32 = 160;

/// `union bpf_attr` for `BPF_PROG_LOAD`, up to `kern_version` (the rest zero).
#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    pad: [u64; 12],
}

/// One `struct bpf_insn`: opcode, registers (dst in the low nibble), offset, immediate.
#[repr(C)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

/// Whether tracing programs may call `bpf_get_current_ancestor_cgroup_id` here (Linux 5.14 added it
/// to `bpf_tracing_func_proto`; cgroup programs have had it since 5.7). The BPF programs walk the
/// cgroup's parents where it is missing.
/// Probed once per process: the kernel does not change under it, and `Kernel::load` and `doctor` ask
/// again.
#[must_use]
pub fn tracing_has_ancestor_cgroup_id() -> bool {
    static ANSWER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ANSWER.get_or_init(|| tracing_has_helper(BPF_FUNC_GET_CURRENT_ANCESTOR_CGROUP_ID))
}

/// Whether this kernel charges BPF maps to `RLIMIT_MEMLOCK` (before Linux 5.11,
/// kernel/bpf/syscall.c `bpf_map_charge_init`) rather than to the memory cgroup. Probed once per
/// process (`Kernel::load` and the RCU barrier both ask).
#[must_use]
pub fn maps_charge_memlock() -> bool {
    static ANSWER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ANSWER.get_or_init(|| !tracing_has_helper(BPF_FUNC_KTIME_GET_COARSE_NS))
}

/// Whether a tracing program may call helper `id`: loads `r1 = 1; call id; r0 = 0; exit` as a
/// tracepoint program, which the verifier refuses when the program type lacks the helper.
fn tracing_has_helper(id: i32) -> bool {
    use std::os::fd::FromRawFd as _;
    // BPF_ALU64 | BPF_MOV | BPF_K = 0xb7, BPF_JMP | BPF_CALL = 0x85, BPF_JMP | BPF_EXIT = 0x95.
    let program = [
        Insn { code: 0xb7, regs: 1, off: 0, imm: 1 },
        Insn { code: 0x85, regs: 0, off: 0, imm: id },
        Insn { code: 0xb7, regs: 0, off: 0, imm: 0 },
        Insn { code: 0x95, regs: 0, off: 0, imm: 0 },
    ];
    let license = c"GPL";
    let mut attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_TRACEPOINT,
        insn_cnt: 4,
        insns: program.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..ProgLoad::default()
    };
    match bpf(BPF_PROG_LOAD, &mut attr).ok().and_then(|fd| i32::try_from(fd).ok()) {
        Some(fd) => {
            // SAFETY: the kernel returned a new fd that nothing else owns; dropping closes it.
            drop(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
            true
        }
        None => false,
    }
}
