//! Sentra's BPF programs.
//!
//! - `exec_lsm` (`lsm/bprm_check_security`): the `lsm` backend; a denied exec fails with `EPERM`.
//! - `exec_signal` (`tp_btf/sched_process_exec`): the `signal` backend, for kernels without BPF LSM;
//!   a denied task gets `SIGKILL` before the new image runs; `exec_loader_env` (same hook, `signal`
//!   backend) kills an image whose environment points the dynamic loader outside `exec.libraries`.
//! - `execve_enter` / `execveat_enter` (syscall tracepoints): remember `argv` for the LSM backend, which
//!   decides while the caller's memory is still mapped.
//!
//! - `net_connect4/6`, `net_sendmsg4/6`, `net_recvmsg4/6` (cgroup `sock_addr`): network governance
//!   on both backends, DNS steering to the controller's resolver; `net_lsm_connect`
//!   (`lsm/socket_connect`): the `lsm` backend's network hook.
//!
//! Each program is a thin wrapper over a `try_*` function; all decisions go through [`exec::decide`].
#![no_std]
#![no_main]
#![expect(
    clippy::needless_pass_by_value,
    reason = "aya's program macros fix each probe's signature: the context is passed by value"
)]
#![expect(
    clippy::inline_always,
    reason = "BPF: inlining keeps verifier-visible state in one function and avoids BPF-to-BPF call limits"
)]

/// Declares the BPF LSM program `$name` in section `$section` (`lsm/<hook>`), whose verdict (0, or
/// `-errno`) comes from `$verdict`. The program returns it sign-extended to 64 bits: kernels that check
/// an LSM program's return value against the hook's range (`kernel/bpf/verifier.c`
/// `check_return_code`, `bpf_lsm_get_retval_range`: [-4095, 0]) read the whole of r0, and aya's `#[lsm]`
/// returns `i32`, leaving r0's upper half to the code generator, which may zero-extend a negative
/// verdict into `0xffff_fffX` and have the program rejected.
#[macro_export]
macro_rules! lsm_program {
    ($section:literal, $name:ident, $verdict:ident) => {
        #[unsafe(no_mangle)]
        #[unsafe(link_section = $section)]
        pub fn $name(ctx: *mut ::core::ffi::c_void) -> i64 {
            i64::from($verdict(::aya_ebpf::programs::LsmContext::new(ctx)))
        }
    };
}

mod exec;
mod guard;
mod kernel;
mod maps;
mod net;
mod task;
mod trusted;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach a panic, so this is never executed.
    loop {}
}

/// LSM programs must carry a GPL-compatible license or the kernel refuses them.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
