//! The `lsm` backend: `lsm/bprm_check_security` (security/security.c, called from
//! fs/exec.c `search_binary_handler` for the file and again for a script's interpreter).

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::tracepoint,
    programs::{LsmContext, TracePointContext},
};

use super::{Action, ArgSource, govern};
use crate::{maps::EXEC_ARGV, task};

const EPERM: i64 = 1;

crate::lsm_program!("lsm/bprm_check_security", exec_lsm, exec_lsm_verdict);

#[inline(always)]
fn exec_lsm_verdict(ctx: LsmContext) -> i64 {
    try_exec_lsm(&ctx).unwrap_or(0)
}

#[expect(
    clippy::unnecessary_wraps,
    reason = "probe convention: a thin wrapper maps the try_ function's Err to the fail-safe value"
)]
fn try_exec_lsm(ctx: &LsmContext) -> Result<i64, i64> {
    // Arguments: (struct linux_binprm *bprm, int retval); retval is what earlier BPF LSM programs
    // decided: never overturn a denial. Read and returned as the 64-bit register the kernel passed (it
    // holds the int sign-extended): narrowing it to 32 bits and back would lose the [-4095, 0] range
    // the verifier knows for it, and the program would be refused (see `lsm_program!`).
    let retval: i64 = ctx.arg(1);
    if retval != 0 {
        return Ok(retval);
    }
    if !task::is_governed() {
        return Ok(0);
    }
    let bprm: u64 = ctx.arg(0);
    // SAFETY: lookup keyed by our own pid_tgid; the value is copied.
    let argv = unsafe { EXEC_ARGV.get(bpf_get_current_pid_tgid()) }
        .copied()
        .map_or(ArgSource::None, ArgSource::UserArgv);
    match govern(bprm, argv) {
        Action::Allow => Ok(0),
        Action::Deny => Ok(-EPERM),
    }
}

/// `syscalls/sys_enter_execve`: remembers `argv` for `exec_lsm`.
#[tracepoint(category = "syscalls", name = "sys_enter_execve")]
pub fn execve_enter(ctx: TracePointContext) -> u32 {
    // Format (tracefs events/syscalls/sys_enter_execve/format): common fields (8 bytes),
    // __syscall_nr (int, padded to 8), then one 8-byte slot per syscall argument:
    // filename at 16, argv at 24. Stable: generated from SYSCALL_DEFINE3(execve, …).
    remember_argv(&ctx, 24)
}

/// `syscalls/sys_enter_execveat`: as above; arguments (fd, filename, argv, …): argv at 32.
#[tracepoint(category = "syscalls", name = "sys_enter_execveat")]
pub fn execveat_enter(ctx: TracePointContext) -> u32 {
    remember_argv(&ctx, 32)
}

fn remember_argv(ctx: &TracePointContext, offset: usize) -> u32 {
    if !task::is_governed() {
        return 0;
    }
    // SAFETY: reads the tracepoint record at a fixed offset within it.
    if let Ok(argv) = unsafe { ctx.read_at::<u64>(offset) } {
        let _ = EXEC_ARGV.insert(bpf_get_current_pid_tgid(), argv, 0);
    }
    0
}

sentra_common::same_name!(sentra_common::names::program::EXEC_LSM, exec_lsm);

sentra_common::same_name!(sentra_common::names::program::EXECVE_ENTER, execve_enter);

sentra_common::same_name!(sentra_common::names::program::EXECVEAT_ENTER, execveat_enter);
