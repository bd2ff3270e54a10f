//! Denied system calls reach the audit log: the deny filter answers `SECCOMP_RET_USER_NOTIF`, and
//! the launcher, holding the filter's listener, fails each call with `EPERM` and records it
//! (Documentation/userspace-api/seccomp_filter.rst, "Userspace Notification"). Allowed calls never
//! leave the kernel. If the launcher dies, the kernel fails notified calls with `ENOSYS`: still
//! refused, no longer recorded.

use std::{
    io::IoSliceMut,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
};

use crate::audit::{self, Record, Task};

/// Sends the listener over the launch channel; called between fork and exec, so it uses only the
/// stack and one `sendmsg`.
///
/// # Errors
/// The message cannot be sent.
///
/// # Safety
/// `channel` and `listener` are open descriptors.
pub unsafe fn send_listener(channel: RawFd, listener: RawFd) -> std::io::Result<()> {
    #[repr(C, align(8))]
    struct Control([u8; 64]);
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    let mut control = Control([0; 64]);
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.0.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(4) as _;
        let cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
        if cmsg.is_null() {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(4) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>(), listener);
        if libc::sendmsg(channel, &raw const msg, 0) != 1 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Receives the listener the child sent.
///
/// # Errors
/// Nothing or no descriptor came.
pub fn receive_listener(channel: &OwnedFd) -> anyhow::Result<OwnedFd> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!(RawFd);
    let msg = recvmsg::<()>(channel.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg
            && let Some(&fd) = fds.first()
        {
            // SAFETY: the descriptor was just received and nothing else owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    anyhow::bail!("the child sent no seccomp listener")
}

/// Answers and records every notification until no task uses the filter any more.
#[must_use]
pub fn serve(listener: OwnedFd, profile: String) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while let Some(notification) = next(&listener) {
            // Read while the task waits for the answer (it may exit right after).
            let mut record = record(&notification, &profile);
            if !answer(&listener, &notification)
                && let Some(detail) = record.detail.as_mut()
            {
                detail["answered"] = false.into();
            }
            super::report(&record);
        }
    })
}

/// The next notification; `None` once the filter has no users left (the listener hangs up).
fn next(listener: &OwnedFd) -> Option<libc::seccomp_notif> {
    loop {
        let mut poll = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&raw mut poll, 1, -1) };
        if ready < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return None;
        }
        if poll.revents & libc::POLLIN == 0 {
            return None;
        }
        // SAFETY: the kernel wants a zeroed struct (kernel/seccomp.c, seccomp_notify_recv).
        let mut notification: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: the ioctl writes one seccomp_notif.
        let rc = unsafe {
            libc::ioctl(listener.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV, &raw mut notification)
        };
        if rc == 0 {
            return Some(notification);
        }
        match std::io::Error::last_os_error().raw_os_error() {
            // Interrupted, or the task went away between poll and receive.
            Some(libc::EINTR | libc::ENOENT) => {}
            _ => return None,
        }
    }
}

/// Fails the call with `EPERM`; false if the task was gone before the answer.
fn answer(listener: &OwnedFd, notification: &libc::seccomp_notif) -> bool {
    let response = libc::seccomp_notif_resp { id: notification.id, val: 0, error: -libc::EPERM, flags: 0 };
    // SAFETY: the ioctl reads one seccomp_notif_resp.
    unsafe { libc::ioctl(listener.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND, &raw const response) == 0 }
}

fn record(notification: &libc::seccomp_notif, profile: &str) -> Record {
    let nr = notification.data.nr;
    let syscall = crate::policy::seccomp::name(nr).map_or_else(|| format!("#{nr}"), str::to_string);
    Record {
        timestamp: audit::now(),
        event: "syscall_denied".into(),
        layer: "seccomp",
        decision: Some("denied"),
        rule_id: Some(format!("seccomp:{profile}")),
        reason: Some(format!("system call {syscall} is denied by seccomp profile {profile} (EPERM)")),
        task: Some(Task::from_proc(notification.pid)),
        detail: Some(serde_json::json!({
            "syscall": syscall,
            "nr": nr,
            "profile": profile,
            "args": notification.data.args,
            "answered": true,
        })),
        ..Record::default()
    }
}
