//! The `signal` backend, for kernels without BPF LSM: `tp_btf/sched_process_exec`.
//!
//! The tracepoint fires in fs/exec.c `exec_binprm` after the new image is set up and before the task
//! returns to user mode; a SIGKILL sent here is delivered on that return, so the new image never runs an
//! instruction. Arguments: `(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`.
//! For a script, `bprm->file` is by then the interpreter: the script itself is not judged here.

use aya_ebpf::{helpers::bpf_send_signal, macros::btf_tracepoint, programs::BtfTracePointContext};

use super::{Action, ArgSource, govern};
use crate::task;

const SIGKILL: u32 = 9;

#[btf_tracepoint(function = "sched_process_exec")]
pub fn exec_signal(ctx: BtfTracePointContext) -> i32 {
    try_exec_signal(&ctx).unwrap_or(0)
}

#[expect(
    clippy::unnecessary_wraps,
    reason = "probe convention: a thin wrapper maps the try_ function's Err to the fail-safe value"
)]
fn try_exec_signal(ctx: &BtfTracePointContext) -> Result<i32, i32> {
    if !task::is_governed() {
        return Ok(0);
    }
    let bprm: u64 = ctx.arg(2);
    if govern(bprm, ArgSource::NewImage) == Action::Deny {
        // SAFETY: signals the current task only.
        unsafe { bpf_send_signal(SIGKILL) };
    }
    Ok(0)
}

sentra_common::same_name!(sentra_common::names::program::EXEC_SIGNAL, exec_signal);
