//! `sentra-ctl daemon`: pins enforcement, serves the socket, drains events, reloads atomically (a
//! front over [`crate::enforce::Session`]).

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, bail};
use sd_notify::NotifyState;
use sentra_common::net::profile_id;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    signal::unix::{SignalKind, signal},
    sync::{mpsc, oneshot},
};

use super::{
    metrics::{Metrics, Snapshot},
    protocol::{
        ADMIT_KEY, Admitted, DENIALS_KEY, DENIALS_MAX, Denials, EMAIL_KEY, EmailAnswer, EmailRequest,
        Greeting, PYTHON_KEY, Request, Response, records_socket, socket,
    },
    state::{GovernedPath, Loaded, State, run_dir, state_file},
};
use crate::{
    audit::{self, Record},
    cgroup::{self, Cgroup},
    dns::Resolver,
    email::{Broker, Job, Refusal},
    enforce::{ResolverWhen, Session, Start, prepare_policy, require_root},
    kernel::{BackendChoice, maps, net as knet, pin},
    policy::{email::EmailSection, model::RateLimit},
    shell::ratelimit::{Admission, Budgets},
};

/// Options of `daemon`.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    pub policy: PathBuf,
    pub audit_log: PathBuf,
    pub backend: BackendChoice,
    /// Name of the governed cgroup under `<cgroup2 root>/sentra/`; `None`: the policy's
    /// `governed.cgroups`.
    pub cgroup: Option<String>,
    /// Govern no cgroup of its own, only delegated launch cgroups (systemd services with
    /// `Delegate=yes`): nothing is created outside systemd's delegation.
    pub delegated_only: bool,
    pub pin_root: PathBuf,
    /// Policies a reload may name: the configured one and regular files below this directory.
    pub policy_dir: PathBuf,
    /// Where to serve Prometheus metrics, if at all.
    pub metrics: Option<super::metrics::Endpoint>,
    /// Turn the kernel's BPF run-time statistics on while the controller runs (each program's run
    /// count and time in the metrics; costs a little on every program run).
    pub metrics_bpf_stats: bool,
}

struct Daemon {
    session: Session,
    state: State,
    /// How long clearing the last retired generation took.
    last_retire_ms: Option<f64>,
    pin_root: PathBuf,
    /// `--cgroup`, which overrides the policy's `governed.cgroups`.
    cgroup_override: Option<String>,
    /// `--delegated-only`: no governed cgroup of its own.
    delegated_only: bool,
    /// The policy the daemon was started with, and the directory reloads may read from.
    configured_policy: PathBuf,
    policy_dir: PathBuf,
    /// Shell connections refused because too many were open.
    records_refused: u64,
    /// What shells are told of the enforced policy (made when it changes, not per connection).
    greeting: Greeting,
    /// The enforced policy's `rate_limit`, and the shells' budgets under it.
    rate_limit: Option<RateLimit>,
    budgets: Budgets,
    /// The enforced policy's `email:` section, and the mail broker's hourly count under it.
    email: Option<EmailSection>,
    /// When the next temporary allow of the enforced policy lapses: the policy is reloaded then.
    next_expiry: Option<chrono::DateTime<chrono::Utc>>,
    mailer: Broker,
    /// `--metrics`: counted as records are written, the rest read when scraped.
    metrics: Option<Arc<Metrics>>,
}

/// Runs the controller until `stop` (pins removed) or SIGTERM/SIGINT (pins kept: enforcement goes on).
///
/// # Errors
/// Anything that prevents enforcing; nothing is left half-installed by a fresh start that fails before
/// pinning.
pub async fn run(options: DaemonOptions) -> anyhow::Result<()> {
    require_root()?;
    crate::kernel::keep_freed_memory();
    let dir = run_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Others may traverse it (to the records socket), not list it; the control socket is root's.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))?;
    let socket = socket();

    let adopting = pin::exists(&options.pin_root);
    let (session, state, steering_lost) =
        if adopting { adopt(&options).await? } else { start_fresh(&options).await? };
    let mut daemon = Daemon::new(session, state, &options);
    let (_run_time_stats, mut scrapes) = start_metrics(&daemon, &options).await?;
    daemon.read_enforced_settings();
    daemon.greet();
    daemon.save_state();
    let mut start =
        daemon.session.start_record(if adopting { "controller_adopt" } else { "controller_start" });
    if let Some(detail) = start.detail.as_mut() {
        detail["cgroups"] = serde_json::json!(daemon.state.cgroups);
        detail["adoptions"] = serde_json::json!(daemon.state.adoptions);
    }
    daemon.session.write(&start)?;

    // A restarted controller given a different policy than the pinned one switches to it atomically;
    // so does one whose resolver could not take its predecessor's address (steered DNS must reach a
    // resolver again; until then steered queries find no one: fail closed).
    if adopting && (steering_lost || options.policy != daemon.session.policy.policy) {
        let reply = daemon.reload(Some(options.policy.to_string_lossy().into_owned()));
        if !reply.ok {
            tracing::warn!(
                "kept the pinned policy (DNS steering still names the previous controller's resolver): {}",
                reply.error.unwrap_or_default()
            );
        }
        daemon.retire_pending();
    }
    daemon.session.drain()?;

    // The records socket first: once the control socket answers, both are there.
    let records_path = records_socket();
    let records_listener = bind_with_mode(&records_path, 0o666)?;
    let listener = bind_with_mode(&socket, 0o600)?;
    daemon.protect();
    let record_slots = Arc::new(tokio::sync::Semaphore::new(RECORD_CONNECTIONS));
    let (records, mut shell_records) = mpsc::channel::<(Peer, ShellLine)>(RECORDS_QUEUED);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    // SIGHUP: the audit log was rotated (deploy/logrotate/sentra sends it).
    let mut hup = signal(SignalKind::hangup())?;
    let (watchdog, mut watchdog_tick) = ready(&daemon.session, &socket);
    // Each connection is served by its own task (reading with a deadline); this loop only decides
    // requests, which never wait for a peer, so draining never waits for the control plane.
    let (requests, mut incoming) = mpsc::channel::<Incoming>(CONNECTIONS_QUEUED);
    loop {
        tokio::select! {
            drained = daemon.session.drain_when_due() => drained?,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(connection(stream, requests.clone()));
                }
                // Out of descriptors and the like: the peer is refused, the controller goes on.
                Err(err) => tracing::warn!("accepting on the control socket: {err}"),
            },
            accepted = records_listener.accept() => match accepted {
                Ok((stream, _)) => match Arc::clone(&record_slots).try_acquire_owned() {
                    Ok(slot) => {
                        let greeting = daemon.greeting.clone();
                        tokio::spawn(shell_records_connection(stream, greeting, records.clone(), slot));
                    }
                    Err(_) => daemon.count_refused_record_connection(),
                },
                Err(err) => tracing::warn!("accepting on the records socket: {err}"),
            },
            Some((peer, line)) = shell_records.recv() => daemon.shell_line(&peer, line),
            Some(request) = incoming.recv() => {
                if daemon.decide(request).await {
                    daemon.session.drain()?;
                    return Ok(());
                }
                daemon.retire_pending();
            }
            () = until(daemon.next_expiry), if daemon.next_expiry.is_some() => daemon.lapse(),
            _ = watchdog_tick.tick(), if watchdog => {
                let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
            }
            Some(reply) = scrapes.recv(), if daemon.metrics.is_some() => {
                let _ = reply.send(daemon.metrics_text());
            }
            _ = hup.recv() => {
                if let Err(err) = daemon.session.reopen_log() {
                    tracing::error!("reopening the audit log after SIGHUP: {err:#}");
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    daemon.session.drain()?;
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(&records_path);
    eprintln!("sentra-ctl daemon: exiting; enforcement stays pinned (sentra-ctl stop removes it)");
    Ok(())
}

/// Resolves at `at` (at once when it has passed; never without a time).
async fn until(at: Option<chrono::DateTime<chrono::Utc>>) {
    let Some(at) = at else { return std::future::pending().await };
    let wait = (at - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait).await;
}

/// `--metrics`: counts the records the log writes from now on, turns the kernel's run-time statistics
/// on if asked (for as long as the returned handle is held) and serves the endpoint; scrapes arrive on
/// the returned channel.
///
/// # Errors
/// The statistics cannot be turned on, or the endpoint cannot be bound.
async fn start_metrics(
    daemon: &Daemon,
    options: &DaemonOptions,
) -> anyhow::Result<(Option<crate::kernel::stats::RunTimeStats>, mpsc::Receiver<oneshot::Sender<String>>)> {
    let (requests, scrapes) = mpsc::channel::<oneshot::Sender<String>>(super::metrics::SCRAPES);
    let (Some(metrics), Some(endpoint)) = (&daemon.metrics, &options.metrics) else {
        return Ok((None, scrapes));
    };
    daemon.session.observe_log(Arc::clone(metrics) as Arc<dyn crate::audit::Observe>);
    let stats =
        if options.metrics_bpf_stats { Some(crate::kernel::stats::enable_run_time_stats()?) } else { None };
    serve_metrics(endpoint, requests).await?;
    Ok((stats, scrapes))
}

/// Binds `--metrics` and serves it from a task of its own: each scrape asks the daemon loop (through
/// `requests`) for the text, at most [`super::metrics::SCRAPES`] connections at once.
///
/// # Errors
/// The address cannot be bound.
async fn serve_metrics(
    endpoint: &super::metrics::Endpoint,
    requests: mpsc::Sender<oneshot::Sender<String>>,
) -> anyhow::Result<()> {
    use super::metrics::{Endpoint, SCRAPES};

    let slots = Arc::new(tokio::sync::Semaphore::new(SCRAPES));
    match endpoint {
        Endpoint::Tcp(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the metrics endpoint {addr}"))?;
            tokio::spawn(async move {
                loop {
                    admit_scrape(listener.accept().await.map(|(s, _)| s), &slots, &requests).await;
                }
            });
        }
        Endpoint::Unix(path) => {
            let listener = bind_with_mode(path, 0o600)?;
            tokio::spawn(async move {
                loop {
                    admit_scrape(listener.accept().await.map(|(s, _)| s), &slots, &requests).await;
                }
            });
        }
    }
    Ok(())
}

/// Serves one accepted metrics connection in a task of its own if a slot is free (else closes it);
/// after a failed accept (out of descriptors), waits a moment.
async fn admit_scrape<S>(
    accepted: std::io::Result<S>,
    slots: &Arc<tokio::sync::Semaphore>,
    requests: &mpsc::Sender<oneshot::Sender<String>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let Ok(stream) = accepted else {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        return;
    };
    let Ok(slot) = Arc::clone(slots).try_acquire_owned() else { return };
    let requests = requests.clone();
    tokio::spawn(async move {
        super::metrics::serve(stream, || async move {
            let (reply, answer) = oneshot::channel();
            requests.send(reply).await.ok()?;
            answer.await.ok()
        })
        .await;
        drop(slot);
    });
}

/// Says the controller is enforcing: on stderr, and to systemd (`Type=notify`: ready only now, with
/// the programs attached, the policy active and the control socket answering, so units ordered after
/// sentra.service start governed). Returns whether systemd wants watchdog pings, and their interval:
/// they are sent from the main loop, so a loop that stops turning (not only a dead process) is
/// noticed and restarted, while the pins keep enforcing.
fn ready(session: &Session, socket: &Path) -> (bool, tokio::time::Interval) {
    let backend = session.backend.as_str();
    eprintln!("sentra-ctl daemon: enforcing ({backend}), socket {}", socket.display());
    let status = format!(
        "enforcing ({backend} backend), policy {} version {}",
        session.policy.policy.display(),
        session.policy.policy_version.as_deref().unwrap_or("-"),
    );
    if let Err(err) = sd_notify::notify(false, &[NotifyState::Ready, NotifyState::Status(&status)]) {
        tracing::warn!("telling systemd we are ready: {err}");
    }
    let mut usec = 0;
    let watchdog = sd_notify::watchdog_enabled(false, &mut usec);
    (watchdog, tokio::time::interval(Duration::from_micros((usec / 2).max(100_000))))
}

/// The suffix of the pinned links of a delegated launch cgroup (`<program>@delegated-<id>`).
fn delegated_tag(id: u64) -> String {
    format!("delegated-{id}")
}

/// Requests waiting for the loop; a full queue makes connection tasks wait, never the loop.
const CONNECTIONS_QUEUED: usize = 16;
/// How long a peer may take to send its request line, and how long it may be.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
const REQUEST_MAX_BYTES: u64 = super::protocol::LINE_MAX_BYTES;

/// Records connections served at once (each holds a descriptor); more are closed at once, counted.
const RECORD_CONNECTIONS: usize = 256;
/// Records waiting for the loop; a full queue makes the shells wait, never the loop.
const RECORDS_QUEUED: usize = 1024;
/// How long a shell's connection may stay idle (a REPL session waits for its user).
const RECORDS_IDLE: Duration = Duration::from_hours(1);

/// The fields of a record that name its process ([`Record::set_process`]).
const PROCESS_FIELDS: [&str; 7] = ["pid", "ppid", "uid", "comm", "exec_id", "parent_exec_id", "cgroup_id"];

/// The process fields of `pid` as the controller reads them from `/proc`.
fn process_fields(pid: u32) -> serde_json::Map<String, serde_json::Value> {
    let mut named = Record::default();
    named.set_process(pid);
    match serde_json::to_value(&named) {
        Ok(serde_json::Value::Object(fields)) => fields,
        _ => serde_json::Map::new(),
    }
}

/// The record with its process fields replaced by `process` (a field `process` lacks is removed).
fn named(
    mut record: serde_json::Value,
    process: Option<&serde_json::Map<String, serde_json::Value>>,
) -> serde_json::Value {
    if let (Some(process), Some(fields)) = (process, record.as_object_mut()) {
        for key in PROCESS_FIELDS {
            match process.get(key) {
                Some(value) => fields.insert(key.into(), value.clone()),
                None => fields.remove(key),
            };
        }
    }
    record
}

/// What a shell sent on the records socket.
enum ShellLine {
    Record(serde_json::Value),
    /// A request for one command from the peer's rate-limit budget, answered on the connection.
    Admit(tokio::sync::oneshot::Sender<Admitted>),
    /// The kernel's exec denials in the peer's cgroup since a time (`CLOCK_BOOTTIME` ns), answered on
    /// the connection.
    Denials(u64, tokio::sync::oneshot::Sender<Denials>),
    /// A message for the mail broker (or why the request was malformed): decided by the loop, which
    /// answers with the job to send or the refusal (already recorded).
    Email(Result<EmailRequest, String>, tokio::sync::oneshot::Sender<Result<Job, EmailAnswer>>),
    /// The record of a message the broker was allowed to send, once it was sent or failed.
    EmailDone(serde_json::Value),
    /// The policy enforced now (a sandbox run is planned under it).
    Enforced(tokio::sync::oneshot::Sender<Greeting>),
}

/// Serves one shell: greets it with the enforced policy, then takes one JSON object per line (at
/// most [`REQUEST_MAX_BYTES`] each) until it closes: a record, or an admission request it answers.
async fn shell_records_connection(
    stream: UnixStream,
    greeting: Greeting,
    loop_: mpsc::Sender<(Peer, ShellLine)>,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    let peer = Peer::of(&stream);
    // The shell's process as the controller sees it now, while it is connected (it may be gone by
    // the time its last record is written): its records carry these fields, not what it claimed.
    let process = peer.pid.map(process_fields);
    let (read, mut write) = stream.into_split();
    let Ok(mut hello) = serde_json::to_vec(&greeting) else { return };
    hello.push(b'\n');
    if tokio::time::timeout(REQUEST_DEADLINE, write.write_all(&hello)).await.is_err() {
        return;
    }
    let mut reader = BufReader::new(read);
    loop {
        let mut line = Vec::new();
        let mut limited = (&mut reader).take(REQUEST_MAX_BYTES);
        match tokio::time::timeout(RECORDS_IDLE, limited.read_until(b'\n', &mut line)).await {
            Ok(Ok(0) | Err(_)) | Err(_) => return,
            Ok(Ok(_)) => {}
        }
        let record = match serde_json::from_slice::<serde_json::Value>(&line) {
            Ok(request) if request.get(ADMIT_KEY).is_some() => {
                let Some(admitted) = ask_loop(&loop_, &peer, ShellLine::Admit).await else { return };
                if !answer(&mut write, &admitted).await {
                    return;
                }
                continue;
            }
            Ok(request) if request.get(DENIALS_KEY).is_some() => {
                let since = request.get(DENIALS_KEY).and_then(serde_json::Value::as_u64).unwrap_or(u64::MAX);
                let asked = ask_loop(&loop_, &peer, |tx| ShellLine::Denials(since, tx));
                let Some(denials) = asked.await else { return };
                if !answer(&mut write, &denials).await {
                    return;
                }
                continue;
            }
            Ok(mut request) if request.get(PYTHON_KEY).is_some() => {
                let invocation = request.get_mut(PYTHON_KEY).map(serde_json::Value::take).unwrap_or_default();
                let Some(reply) = sandbox_reply(&loop_, &peer, &mut reader, invocation).await else { return };
                if !answer(&mut write, &reply).await {
                    return;
                }
                continue;
            }
            Ok(mut request) if request.get(EMAIL_KEY).is_some() => {
                let parsed = request
                    .get_mut(EMAIL_KEY)
                    .map(serde_json::Value::take)
                    .map(serde_json::from_value::<EmailRequest>)
                    .and_then(Result::ok)
                    .ok_or_else(|| "not an e-mail request (`to`, `subject`, `body`)".to_string());
                let Some(reply) = email_reply(&loop_, &peer, parsed).await else { return };
                if !answer(&mut write, &reply).await {
                    return;
                }
                continue;
            }
            Ok(record) if record.is_object() => named(record, process.as_ref()),
            // A line that is not a record is itself worth recording: it says who sent what.
            _ => serde_json::json!({
                "event": "bad_shell_record",
                "bytes": line.len(),
                "reason": "not one JSON object on a line of at most 64 KiB",
            }),
        };
        if loop_.send((peer.clone(), ShellLine::Record(record))).await.is_err() {
            return;
        }
    }
}

/// Asks the daemon loop one question for a shell and waits for its answer (`None`: the loop is gone).
async fn ask_loop<T>(
    loop_: &mpsc::Sender<(Peer, ShellLine)>,
    peer: &Peer,
    question: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> ShellLine,
) -> Option<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    loop_.send((peer.clone(), question(tx))).await.ok()?;
    rx.await.ok()
}

/// Runs a sandbox request under the policy enforced now (a reload since the greeting counts);
/// `None`: the caller went away (killed at its own timeout), taking its run with it.
async fn sandbox_reply(
    loop_: &mpsc::Sender<(Peer, ShellLine)>,
    peer: &Peer,
    reader: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
    invocation: serde_json::Value,
) -> Option<crate::sandbox::agent::Answer> {
    let enforced = ask_loop(loop_, peer, ShellLine::Enforced).await?;
    let requested_by = peer.stamp();
    let run =
        crate::sandbox::agent::serve(invocation, &enforced.policy, &enforced.policy_hash, &requested_by);
    tokio::select! {
        reply = run => Some(reply),
        () = closed(reader) => None,
    }
}

/// Has the loop decide an e-mail request and sends an allowed one (recording it once sent);
/// `None`: the loop is gone.
async fn email_reply(
    loop_: &mpsc::Sender<(Peer, ShellLine)>,
    peer: &Peer,
    parsed: Result<EmailRequest, String>,
) -> Option<EmailAnswer> {
    let job = match ask_loop(loop_, peer, |tx| ShellLine::Email(parsed, tx)).await? {
        Ok(job) => job,
        Err(refused) => return Some(refused),
    };
    let outcome = job.send().await;
    let record = email_record(
        peer,
        "allowed",
        &job.rule,
        outcome.as_ref().err(),
        serde_json::json!({
            "to": job.to,
            "subject": job.subject,
            "bytes": job.size(),
            "message_id": job.message.message_id,
            "delivered": outcome.is_ok(),
        }),
    );
    loop_.send((peer.clone(), ShellLine::EmailDone(record))).await.ok()?;
    Some(EmailAnswer {
        sent: outcome.is_ok(),
        denied: false,
        rule: job.rule.clone(),
        reason: outcome.err(),
        message_id: Some(job.message.message_id.clone()),
    })
}

/// Resolves once the peer has closed its end (anything more it sends meanwhile is discarded).
async fn closed(reader: &mut BufReader<tokio::net::unix::OwnedReadHalf>) {
    let mut sink = [0u8; 512];
    while let Ok(read) = tokio::io::AsyncReadExt::read(reader, &mut sink).await {
        if read == 0 {
            return;
        }
    }
}

/// The audit record of one e-mail request: refused (`denied`), or handed to himalaya (`allowed`, with
/// `reason` saying why it was not delivered, if it was not).
fn email_record(
    peer: &Peer,
    decision: &str,
    rule: &str,
    reason: Option<&String>,
    detail: serde_json::Value,
) -> serde_json::Value {
    let mut record = serde_json::json!({
        "timestamp": audit::now(),
        "event": "email",
        "layer": "email",
        "decision": decision,
        "rule_id": rule,
        "reason": reason,
        "reported_by": peer.stamp(),
    });
    record["detail"] = detail;
    record
}

/// Writes one answer line to a shell within [`REQUEST_DEADLINE`]; `false`: the shell is gone or stuck.
async fn answer<T: serde::Serialize>(write: &mut tokio::net::unix::OwnedWriteHalf, value: &T) -> bool {
    let Ok(mut line) = serde_json::to_vec(value) else { return false };
    line.push(b'\n');
    matches!(tokio::time::timeout(REQUEST_DEADLINE, write.write_all(&line)).await, Ok(Ok(())))
}

/// The peer's pidfd (`SO_PEERPIDFD`, net/core/sock.c), or `None` on kernels before 6.5.
fn peer_pidfd(stream: &UnixStream) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _};
    let mut fd: libc::c_int = -1;
    let mut len = libc::socklen_t::try_from(size_of::<libc::c_int>()).ok()?;
    // SAFETY: getsockopt writes at most `len` bytes into `fd`, a c_int.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERPIDFD,
            (&raw mut fd).cast(),
            &raw mut len,
        )
    };
    // SAFETY: on success the kernel installed a new descriptor that this process now owns.
    (rc == 0 && fd >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Whether the process of a pidfd has not been reaped (signal 0 checks without sending; a zombie
/// still holds its pid).
fn still_alive(pidfd: &std::os::fd::OwnedFd) -> bool {
    use std::os::fd::AsRawFd as _;
    // SAFETY: pidfd_send_signal with signal 0 and no siginfo only checks the target.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    // EPERM: alive, only not signallable by us (cannot happen as root, but it still means alive).
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Who is on the other end of a connection, from the kernel's credentials of the connecting
/// process (`SO_PEERCRED`) and its cgroup at the time it was served.
#[derive(Debug, Clone)]
struct Peer {
    pid: Option<u32>,
    uid: Option<u32>,
    /// Its cgroup v2 path (`/proc/PID/cgroup`), if it could be read.
    cgroup: Option<String>,
}

impl Peer {
    fn of(stream: &UnixStream) -> Self {
        let cred = stream.peer_cred().ok();
        let pid = cred.and_then(|c| c.pid()).and_then(|p| u32::try_from(p).ok());
        // A pidfd of the connecting process (Linux 6.5+), taken before its cgroup is read and
        // checked after: a process still alive then still owns its pid, so the cgroup read was its
        // own and not that of a process that reused the pid after it exited.
        let pidfd = peer_pidfd(stream);
        let cgroup = pid
            .and_then(|pid| cgroup::cgroup_of(&pid.to_string()))
            .filter(|_| pidfd.as_ref().is_none_or(still_alive));
        Self { pid, uid: cred.map(|c| c.uid()), cgroup }
    }

    /// Whether the peer may be governed: inside `<cgroup2>/sentra/` (every cgroup a controller
    /// governs, or a `run`'s, is there), or unknown (its process is gone, its cgroup unreadable:
    /// fail closed). Decided from the cgroup, not the uid: a governed agent may be root.
    fn governed(&self) -> bool {
        self.cgroup.as_deref().is_none_or(|path| {
            path == format!("/{}", cgroup::GOVERNED_PARENT) || cgroup::is_governed_path(path)
        })
    }

    /// Who sent a record, as the controller stamps it (`reported_by`).
    fn stamp(&self) -> serde_json::Value {
        serde_json::json!({ "pid": self.pid, "uid": self.uid, "cgroup": self.cgroup })
    }
}

/// A request handed from a connection task to the loop.
struct Incoming {
    peer: Peer,
    /// `None`: refused before it was read (a governed peer).
    request: Option<Result<Request, String>>,
    reply: oneshot::Sender<Response>,
    /// Told once the reply is written (so that `stop` answers before the controller exits).
    written: Option<oneshot::Sender<()>>,
}

/// Serves one connection: a governed peer is refused without reading anything; others have
/// [`REQUEST_DEADLINE`] to send one line of at most [`REQUEST_MAX_BYTES`].
async fn connection(stream: UnixStream, loop_: mpsc::Sender<Incoming>) {
    let peer = Peer::of(&stream);
    let (read, mut write) = stream.into_split();
    let request = if peer.governed() {
        None
    } else {
        let mut line = String::new();
        let mut reader = BufReader::new(read.take(REQUEST_MAX_BYTES));
        match tokio::time::timeout(REQUEST_DEADLINE, reader.read_line(&mut line)).await {
            Ok(Ok(n)) if n > 0 && line.ends_with('\n') => {
                Some(serde_json::from_str::<Request>(&line).map_err(|e| format!("bad request: {e}")))
            }
            Ok(Ok(_)) => {
                Some(Err(format!("bad request: one JSON line of at most {REQUEST_MAX_BYTES} bytes expected")))
            }
            Ok(Err(err)) => Some(Err(format!("bad request: {err}"))),
            Err(_) => Some(Err(format!("no request within {} s", REQUEST_DEADLINE.as_secs()))),
        }
    };
    let (reply, answer) = oneshot::channel();
    let (written, done) = oneshot::channel();
    if loop_.send(Incoming { peer, request, reply, written: Some(written) }).await.is_err() {
        return;
    }
    let Ok(response) = answer.await else { return };
    if let Ok(mut text) = serde_json::to_vec(&response) {
        text.push(b'\n');
        let _ = tokio::time::timeout(REQUEST_DEADLINE, write.write_all(&text)).await;
    }
    drop(done);
}

/// Binds a socket that has `mode` from the start (chmod after bind would leave a window in which
/// anyone may connect).
fn bind_with_mode(path: &Path, mode: u32) -> anyhow::Result<UnixListener> {
    use nix::sys::stat::{Mode, umask};
    let _ = std::fs::remove_file(path);
    // The process's umask, for the one bind(2): the daemon starts no thread that creates files here.
    let previous = umask(Mode::from_bits_truncate(!mode & 0o777));
    let bound = UnixListener::bind(path);
    umask(previous);
    let listener = bound.with_context(|| format!("binding {}", path.display()))?;
    // The umask can only take bits away: make sure of the exact mode.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

/// The cgroup names a controller governs: `--cgroup`, else the policy's `governed.cgroups`.
fn cgroup_names(
    cgroup_override: Option<&String>,
    delegated_only: bool,
    policy: &crate::policy::Policy,
) -> Vec<String> {
    if delegated_only {
        return Vec::new();
    }
    cgroup_override.map_or_else(|| policy.model.governed.cgroup_names(), |name| vec![name.clone()])
}

fn governed_cgroup(name: &str) -> anyhow::Result<Cgroup> {
    if name.is_empty() || name.contains("..") || name.starts_with('/') {
        bail!(
            "--cgroup {name:?}: give a plain name (it is created under <cgroup2>/{}/)",
            cgroup::GOVERNED_PARENT
        );
    }
    let root = cgroup::cgroup2_root()?;
    let mut group = Cgroup::create(&root, &Path::new(cgroup::GOVERNED_PARENT).join(name))?;
    group.keep();
    Ok(group)
}

async fn start_fresh(options: &DaemonOptions) -> anyhow::Result<(Session, State, bool)> {
    let prepared = prepare_policy(&options.policy)?;
    prepared.log_warnings();
    let mut groups = Vec::new();
    for name in cgroup_names(options.cgroup.as_ref(), options.delegated_only, &prepared.policy) {
        let group = governed_cgroup(&name)?;
        groups.push((name, group));
    }
    let session = Session::start(Start {
        prepared,
        path: &options.policy,
        backend: options.backend,
        cgroups: &groups,
        audit_log: &options.audit_log,
        resolver: ResolverWhen::Always,
        pin_root: Some(&options.pin_root),
    })
    .await?;
    let state = State {
        cgroups: groups.iter().map(|(_, g)| GovernedPath { path: g.path.clone(), id: g.id }).collect(),
        delegated: Vec::new(),
        audit_log: options.audit_log.clone(),
        started: audit::now(),
        adoptions: 0,
        reloads: 0,
    };
    Ok((session, state, false))
}

async fn adopt(options: &DaemonOptions) -> anyhow::Result<(Session, State, bool)> {
    let Loaded { mut state, policy, backend, tables } = State::load(&state_file()).with_context(|| {
        format!(
            "pins exist under {} but {} is unreadable; `sentra-ctl stop --force` clears them",
            options.pin_root.display(),
            state_file().display()
        )
    })?;
    state.adoptions += 1;
    let (session, adopted) =
        Session::adopt(&options.pin_root, policy, backend, tables, &options.audit_log).await?;
    tracing::info!("adopted {} addresses learned by the previous controller", adopted.learned);
    Ok((session, state, adopted.steering_lost))
}

impl Daemon {
    fn new(session: Session, state: State, options: &DaemonOptions) -> Self {
        Self {
            session,
            state,
            last_retire_ms: None,
            pin_root: options.pin_root.clone(),
            cgroup_override: options.cgroup.clone(),
            delegated_only: options.delegated_only,
            configured_policy: std::fs::canonicalize(&options.policy)
                .unwrap_or_else(|_| options.policy.clone()),
            policy_dir: std::fs::canonicalize(&options.policy_dir)
                .unwrap_or_else(|_| options.policy_dir.clone()),
            records_refused: 0,
            greeting: Greeting { policy: PathBuf::new(), policy_hash: String::new() },
            rate_limit: None,
            budgets: Budgets::default(),
            email: None,
            next_expiry: None,
            mailer: Broker::default(),
            metrics: options.metrics.as_ref().map(|_| Arc::new(Metrics::new())),
        }
    }

    /// Sentra's own files, which governed tasks may not write, truncate, remove or rename (the
    /// binaries are added by `Session::protect`): the policy and its directory, the audit log, the
    /// runtime directory, state file and sockets.
    fn protected_paths(&self) -> Vec<PathBuf> {
        vec![
            self.session.policy.policy.clone(),
            self.configured_policy.clone(),
            self.policy_dir.clone(),
            self.state.audit_log.clone(),
            run_dir(),
            state_file(),
            socket(),
            records_socket(),
        ]
    }

    /// Protects the controller and its files (again after a reload: the policy may be a new file).
    fn protect(&mut self) {
        let paths = self.protected_paths();
        match self.session.protect(&paths) {
            Ok(count) => tracing::debug!("protecting this process and {count} files"),
            Err(err) => tracing::warn!("protecting the controller's files: {}", crate::describe(&err)),
        }
    }

    fn save_state(&self) {
        if let Err(err) = self.state.save(&state_file(), &self.session) {
            tracing::warn!("saving {}: {err:#}", state_file().display());
        }
    }

    /// Answers one request; returns true when the controller must exit (after `stop`, once the
    /// reply is written).
    async fn decide(&mut self, incoming: Incoming) -> bool {
        let Incoming { peer, request, reply, written } = incoming;
        let mut stop = false;
        let response = match request {
            None => self.refuse(&peer, "the peer runs in a governed cgroup"),
            Some(_) if peer.uid != Some(0) => {
                self.refuse(&peer, &format!("uid {} is not root", peer.uid.map_or(-1, i64::from)))
            }
            Some(Err(err)) => Response::error(err),
            Some(Ok(Request::Status)) => self.status(),
            Some(Ok(Request::Reload { policy })) => {
                let started = std::time::Instant::now();
                let reply = self.reload(policy);
                if let Some(metrics) = &self.metrics {
                    metrics.reload(reply.ok, started.elapsed());
                }
                reply
            }
            Some(Ok(Request::Record { record })) => self.record(&peer, record),
            Some(Ok(Request::GovernLaunch { cgroup, net_profile })) => {
                self.govern_launch(&peer, &cgroup, net_profile.as_deref())
            }
            Some(Ok(Request::ReleaseLaunch { cgroup, id })) => self.release_launch(&peer, &cgroup, id),
            Some(Ok(Request::Stop)) => {
                let response = self.stop();
                stop = response.ok;
                response
            }
        };
        let _ = reply.send(response);
        if stop && let Some(mut written) = written {
            // The connection task drops its end once the reply is out (or the peer is gone).
            let _ = tokio::time::timeout(REQUEST_DEADLINE, written.closed()).await;
        }
        stop
    }

    /// Makes the greeting for the policy now enforced.
    fn greet(&mut self) {
        let policy = &self.session.policy.policy;
        self.greeting = Greeting {
            // Absolute: the shell's working directory is not the controller's.
            policy: std::fs::canonicalize(policy).unwrap_or_else(|_| policy.clone()),
            policy_hash: self.session.policy.policy_hash.clone(),
        };
    }

    /// A temporary allow lapsed: the same file again, which now leaves it out.
    fn lapse(&mut self) {
        self.next_expiry = None;
        let reply = self.reload(None);
        if !reply.ok {
            // Fail closed: the lapsed allow must go; try again shortly.
            tracing::error!("reloading as a temporary allow lapsed: {}", reply.error.unwrap_or_default());
            self.next_expiry = Some(chrono::Utc::now() + chrono::TimeDelta::seconds(10));
        }
        self.retire_pending();
    }

    /// The enforced policy's settings the daemon applies itself (rate limit, e-mail), read from its
    /// file: the pinned one, when adopting, whose hash must match (else none apply: fail closed).
    fn read_enforced_settings(&mut self) {
        if let Some(enforced) = crate::policy::Policy::read(&self.session.policy.policy)
            .ok()
            .filter(|p| format!("{:016x}", p.hash) == self.session.policy.policy_hash)
        {
            self.rate_limit = enforced.model.rate_limit;
            // An allow that lapsed while no controller ran is still in the pinned maps: reload now.
            self.next_expiry =
                if enforced.lapsed.is_empty() { enforced.next_expiry() } else { Some(chrono::Utc::now()) };
            self.email = enforced.model.email;
        }
    }

    /// A shell's line: a record to append, or an admission to answer.
    fn shell_line(&mut self, peer: &Peer, line: ShellLine) {
        match line {
            ShellLine::Record(record) => self.shell_record(peer, record),
            ShellLine::Admit(reply) => {
                let _ = reply.send(self.admit(peer));
            }
            ShellLine::Denials(since, reply) => {
                let _ = reply.send(self.denials(peer, since));
            }
            ShellLine::Email(request, reply) => {
                let _ = reply.send(self.email(peer, request.as_ref().map_err(String::as_str)));
            }
            ShellLine::EmailDone(record) => self.write_email_record(&record),
            ShellLine::Enforced(reply) => {
                let _ = reply.send(self.greeting.clone());
            }
        }
    }

    /// Decides a message under the enforced `email:` section: the job to send, or the refusal,
    /// recorded here (a sent message is recorded once himalaya is done with it).
    fn email(&mut self, peer: &Peer, request: Result<&EmailRequest, &str>) -> Result<Job, EmailAnswer> {
        let decided = match request {
            Ok(request) => self.mailer.decide(self.email.as_ref(), request, std::time::Instant::now()),
            Err(problem) => Err(Refusal { rule: "email".into(), reason: problem.to_string() }),
        };
        let refusal = match decided {
            Ok(job) => return Ok(job),
            Err(refusal) => refusal,
        };
        let (to, subject, bytes) = request.map_or((Vec::new(), None, 0), |r| {
            (r.to.clone(), Some(r.subject.clone()), r.subject.len() + r.body.len())
        });
        let record = email_record(
            peer,
            "denied",
            &refusal.rule,
            Some(&refusal.reason),
            serde_json::json!({ "to": to, "subject": subject, "bytes": bytes, "delivered": false }),
        );
        self.write_email_record(&record);
        Err(EmailAnswer {
            sent: false,
            denied: true,
            rule: refusal.rule,
            reason: Some(refusal.reason),
            message_id: None,
        })
    }

    fn write_email_record(&mut self, record: &serde_json::Value) {
        if let Err(err) = self.session.write_value(record) {
            tracing::warn!("writing an e-mail record: {}", crate::describe(&err));
        }
    }

    /// The kernel's exec denials in a shell's own cgroup since `since` (what its command's processes
    /// were refused): only its own cgroup's, so an agent learns nothing of other agents.
    fn denials(&mut self, peer: &Peer, since: u64) -> Denials {
        let Some(path) = peer.cgroup.as_deref() else { return Denials::default() };
        let Ok(dir) = cgroup::dir_of(path) else { return Denials::default() };
        let Ok(meta) = std::fs::metadata(dir) else {
            return Denials::default();
        };
        let id = std::os::unix::fs::MetadataExt::ino(&meta);
        match self.session.denials_since(id, since, DENIALS_MAX) {
            Ok(denials) => Denials { denials },
            Err(err) => {
                tracing::warn!("draining for a shell's question: {err:#}");
                Denials::default()
            }
        }
    }

    /// Takes one command from the budget of a shell's peer (its cgroup and uid) under the enforced
    /// policy's rate limit.
    fn admit(&mut self, peer: &Peer) -> Admitted {
        let Some(limit) = self.rate_limit else {
            return Admitted { admitted: true, used: 0, retry_after_ms: 0 };
        };
        let key = (peer.cgroup.clone().unwrap_or_default(), peer.uid.unwrap_or(u32::MAX));
        match self.budgets.admit(key, limit, std::time::SystemTime::now()) {
            Admission::Admitted { used } => Admitted { admitted: true, used, retry_after_ms: 0 },
            Admission::Limited { used, retry_after } => Admitted {
                admitted: false,
                used,
                retry_after_ms: u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX),
            },
        }
    }

    /// Appends a shell's record, stamped with who sent it; a shell record stays one (`layer`).
    fn shell_record(&mut self, peer: &Peer, mut record: serde_json::Value) {
        if let Some(fields) = record.as_object_mut() {
            fields.insert("layer".into(), "shell".into());
            if !fields.get("event").is_some_and(serde_json::Value::is_string) {
                fields.insert("event".into(), "shell_record".into());
            }
            if !fields.get("timestamp").is_some_and(serde_json::Value::is_string) {
                fields.insert("timestamp".into(), audit::now().into());
            }
            fields.insert("reported_by".into(), peer.stamp());
        }
        if let Err(err) = self.session.write_value(&record) {
            tracing::warn!("writing a shell record: {}", crate::describe(&err));
        }
    }

    /// A shell connection refused because too many are open: counted, and recorded once per
    /// thousand (a flood must not become a flood of records).
    fn count_refused_record_connection(&mut self) {
        self.records_refused += 1;
        if self.records_refused % 1000 == 1 {
            let _ = self.session.write(&Record {
                timestamp: audit::now(),
                event: "shell_records_refused".into(),
                layer: "kernel",
                reason: Some(format!("more than {RECORD_CONNECTIONS} shells connected at once")),
                detail: Some(serde_json::json!({ "refused_total": self.records_refused })),
                ..Record::default()
            });
        }
    }

    /// Appends a record a trusted peer (the launcher) sent, stamped with who sent it.
    fn record(&mut self, peer: &Peer, mut record: serde_json::Value) -> Response {
        let Some(fields) = record.as_object_mut() else {
            return Response::error("a record is a JSON object");
        };
        if !fields.get("event").is_some_and(serde_json::Value::is_string) {
            return Response::error("a record needs an `event`");
        }
        fields.insert("reported_by".into(), peer.stamp());
        match self.session.write_value(&record) {
            Ok(()) => Response::ok(serde_json::json!({ "written": true })),
            Err(err) => Response::error(format!("writing the audit log: {}", crate::describe(&err))),
        }
    }

    /// Whether `path` is strictly below one of the configured governed cgroups (where launches make
    /// theirs).
    fn below_governed(&self, path: &Path) -> bool {
        self.state.cgroups.iter().any(|g| path.starts_with(&g.path) && path != g.path)
    }

    /// Whether `path` is a launch cgroup made where its launcher was delegated a cgroup (a systemd
    /// service with `Delegate=yes`): named `sentra-launch-<pid>` (see [`cgroup::DELEGATED_PREFIX`]).
    fn delegated_launch(path: &Path) -> bool {
        path.file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with(cgroup::DELEGATED_PREFIX))
    }

    /// Governs a launch cgroup, with its launch profile's network policy: one strictly below a
    /// governed cgroup, or a delegated one (see [`Self::delegated_launch`]), to which the pinned
    /// cgroup programs (network, sysctl) are attached here since no governed ancestor carries them.
    fn govern_launch(&mut self, peer: &Peer, cgroup: &Path, net_profile: Option<&str>) -> Response {
        let real = match std::fs::canonicalize(cgroup) {
            Ok(real) if real.is_dir() => real,
            Ok(_) => return Response::error(format!("{}: not a directory", cgroup.display())),
            Err(err) => return Response::error(format!("{}: {err}", cgroup.display())),
        };
        let delegated = !self.below_governed(&real);
        if delegated && !Self::delegated_launch(&real) {
            return Response::error(format!(
                "{}: neither below a governed cgroup nor a delegated launch cgroup ({}<pid>)",
                real.display(),
                cgroup::DELEGATED_PREFIX
            ));
        }
        let level = match cgroup::cgroup2_root() {
            Ok(root) => match real.strip_prefix(&root) {
                Ok(relative) => u32::try_from(relative.components().count()).unwrap_or(u32::MAX),
                Err(_) => {
                    return Response::error(format!("{}: not in the cgroup2 hierarchy", real.display()));
                }
            },
            Err(err) => return Response::error(err.to_string()),
        };
        let dir = match std::fs::File::open(&real) {
            Ok(dir) => dir,
            Err(err) => return Response::error(format!("{}: {err}", real.display())),
        };
        let id = match dir.metadata() {
            Ok(meta) => std::os::unix::fs::MetadataExt::ino(&meta),
            Err(err) => return Response::error(format!("{}: {err}", real.display())),
        };
        let profile_id = net_profile.map_or(0, |name| profile_id(name.as_bytes()));
        if let Err(err) = self.session.govern(id, level, profile_id) {
            return Response::error(format!("governing {}: {}", real.display(), crate::describe(&err)));
        }
        if delegated {
            use std::os::fd::AsFd as _;
            if let Err(err) = pin::attach_cgroup(&self.pin_root, dir.as_fd(), &delegated_tag(id)) {
                let _ = self.session.release(id);
                return Response::error(format!(
                    "attaching the network programs to {}: {}",
                    real.display(),
                    crate::describe(&err)
                ));
            }
            self.state.delegated.retain(|g| g.id != id);
            self.state.delegated.push(GovernedPath { path: real.clone(), id });
            self.save_state();
        }
        let _ = self.session.write(&Record {
            timestamp: audit::now(),
            event: "launch_governed".into(),
            layer: "kernel",
            detail: Some(serde_json::json!({
                "cgroup": real,
                "cgroup_id": id,
                "delegated": delegated,
                "network_profile": net_profile,
                "reported_by": peer.stamp(),
            })),
            ..Record::default()
        });
        Response::ok(serde_json::json!({ "id": id }))
    }

    /// Forgets a launch cgroup that is gone (and, for a delegated one, unpins its program links).
    fn release_launch(&mut self, peer: &Peer, cgroup: &Path, id: u64) -> Response {
        if self.state.cgroups.iter().any(|g| g.id == id) {
            return Response::error("a configured governed cgroup is released only by `stop`");
        }
        let delegated = self.state.delegated.iter().any(|g| g.id == id && g.path == cgroup);
        if !delegated && !self.below_governed(cgroup) {
            return Response::error(format!("{}: not below a governed cgroup", cgroup.display()));
        }
        if std::fs::symlink_metadata(cgroup).is_ok() {
            return Response::error(format!("{}: still exists; remove it first", cgroup.display()));
        }
        if let Err(err) = self.session.release(id) {
            // Absent already: nothing to forget.
            tracing::debug!("releasing launch cgroup {id}: {}", crate::describe(&err));
        }
        if delegated {
            pin::detach_cgroup(&self.pin_root, &delegated_tag(id));
            self.state.delegated.retain(|g| g.id != id);
            self.save_state();
        }
        let _ = self.session.write(&Record {
            timestamp: audit::now(),
            event: "launch_released".into(),
            layer: "kernel",
            detail: Some(
                serde_json::json!({ "cgroup": cgroup, "cgroup_id": id, "reported_by": peer.stamp() }),
            ),
            ..Record::default()
        });
        Response::ok(serde_json::json!({ "released": id }))
    }

    /// Refuses a peer, with a record saying who and why.
    fn refuse(&mut self, peer: &Peer, why: &str) -> Response {
        let _ = self.session.write(&Record {
            timestamp: audit::now(),
            event: "control_refused".into(),
            layer: "kernel",
            decision: Some("denied"),
            reason: Some(why.into()),
            detail: Some(serde_json::json!({
                "peer_pid": peer.pid,
                "peer_uid": peer.uid,
                "peer_cgroup": peer.cgroup,
            })),
            ..Record::default()
        });
        Response::error(format!("refused: {why}: only root outside the governed cgroups controls sentra"))
    }

    fn status(&mut self) -> Response {
        let store = self.session.store();
        let active = maps::active_generation(store);
        let counters = maps::read_stats(store);
        let governed = maps::governed(store);
        let net_counters = knet::read_stats(store);
        match (active, counters, governed, net_counters) {
            (Ok(active), Ok(counters), Ok(governed), Ok(net_counters)) => {
                let generations = self.session.generations();
                let table = generations.exec(active.generation);
                let net = generations.net(active.generation);
                let resolver = self.session.resolver();
                let drained = self.session.drained();
                Response::ok(serde_json::json!({
                    "backend": self.session.backend.as_str(),
                    // Why `auto` fell back to the signal backend, if it did.
                    "lsm_refusal": self.session.lsm_refusal,
                    // Self-protection hooks this kernel cannot guard.
                    "unguarded": self.session.unguarded,
                    "mode": self.session.policy.mode.as_str(),
                    "policy": self.session.policy.policy,
                    "policy_version": self.session.policy.policy_version,
                    "policy_hash": self.session.policy.policy_hash,
                    "generation": active.generation,
                    "exec_rules": table.rules.len(),
                    "exec_default": table.default_effect().as_str(),
                    "governed_cgroups": self.state.cgroups,
                    "delegated_cgroups": self.state.delegated,
                    "governed_ids_in_kernel": governed.iter().map(|(id, _)| id).collect::<Vec<_>>(),
                    "pinned_links": pin::pinned_links(&self.pin_root),
                    "counters": counters,
                    "network": {
                        "governed": net.governed,
                        "loopback": net.loopback,
                        "cidr_entries": net.cidr.len(),
                        "domain_rules": net.domains.len(),
                        "resolver": resolver.map(|r| format!("{}:{}", r.addr.v4, r.addr.port)),
                        "learned_addresses": resolver.map_or(0, Resolver::learned),
                        "counters": net_counters,
                    },
                    "events_written_by_this_controller": drained.events_written,
                    "events_undecodable": drained.events_undecodable,
                    "events_lost_recorded": drained.events_lost_recorded,
                    "audit_write_failures": self.session.audit_stats().audit_write_failures,
                    "shell_connections_refused": self.records_refused,
                    "adoptions": self.state.adoptions,
                    "reloads": self.state.reloads,
                    "last_retire_ms": self.last_retire_ms,
                    "started": self.state.started,
                }))
            }
            (a, c, g, n) => Response::error(format!(
                "reading the maps failed: {:?} {:?} {:?} {:?}",
                a.err().map(|e| e.to_string()),
                c.err().map(|e| e.to_string()),
                g.err().map(|e| e.to_string()),
                n.err().map(|e| e.to_string())
            )),
        }
    }

    /// The metrics' exposition text, with the kernel's counters, the drain's and each program's run
    /// time read now.
    fn metrics_text(&mut self) -> String {
        let Some(metrics) = self.metrics.clone() else { return String::new() };
        let mut snapshot = Snapshot::default();
        let store = self.session.store();
        // The counters by the names `status` gives them (its `counters` and `network.counters`).
        let counters = [
            maps::read_stats(store).ok().and_then(|c| serde_json::to_value(c).ok()),
            knet::read_stats(store).ok().and_then(|n| serde_json::to_value(n).ok()),
        ];
        for fields in counters.iter().flatten().filter_map(serde_json::Value::as_object) {
            snapshot.kernel.extend(fields.iter().filter_map(|(name, v)| Some((name.clone(), v.as_u64()?))));
        }
        let drained = self.session.drained();
        snapshot.events_written = drained.events_written;
        snapshot.events_undecodable = drained.events_undecodable;
        snapshot.learned_addresses = self.session.resolver().map_or(0, Resolver::learned);
        match crate::kernel::stats::pinned(&self.pin_root) {
            Ok(programs) => snapshot.programs = programs,
            Err(err) => {
                tracing::warn!("metrics: reading the programs' statistics: {}", crate::describe(&err));
            }
        }
        metrics.encode(&snapshot)
    }

    /// Validates and compiles the policy; only then switches generations. A rejected policy changes
    /// nothing.
    fn reload(&mut self, policy: Option<String>) -> Response {
        let path = policy.map_or_else(|| self.session.policy.policy.clone(), PathBuf::from);
        if let Err(why) = self.reloadable(&path) {
            return Response::error(format!("policy rejected, the enforced one stays: {why}"));
        }
        let prepared = match prepare_policy(&path) {
            Ok(p) => p,
            Err(err) => return Response::error(format!("policy rejected, the enforced one stays: {err:#}")),
        };
        // The governed cgroups (and the programs attached to them) are fixed while a controller runs.
        let wanted = cgroup_names(self.cgroup_override.as_ref(), self.delegated_only, &prepared.policy);
        let governed: Vec<String> = self
            .state
            .cgroups
            .iter()
            .filter_map(|g| g.path.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        if wanted != governed {
            return Response::error(format!(
                "policy rejected, the enforced one stays: {}: governed.cgroups is [{}] but this controller governs [{}]; the governed cgroups are fixed while it runs: stop it (SIGTERM keeps enforcement pinned), then `sentra-ctl stop` and start the daemon with the new policy",
                path.display(),
                wanted.join(", "),
                governed.join(", ")
            ));
        }
        let exec_rules = prepared.exec.table.rules.len();
        let rate_limit = prepared.policy.model.rate_limit;
        let email = prepared.policy.model.email.clone();
        let next_expiry = prepared.policy.next_expiry();
        let net = Arc::clone(&prepared.net);
        let flipped = match self.session.switch(prepared, &path) {
            Ok(flipped) => flipped,
            Err(err) => {
                return Response::error(format!(
                    "loading into the kernel failed, the enforced policy stays: {}",
                    crate::describe(&err)
                ));
            }
        };
        let generation = flipped.generation;
        let flip_ms = flipped.until_flip.as_secs_f64() * 1000.0;
        self.state.reloads += 1;
        if self.rate_limit != rate_limit {
            // A new limit starts from fresh budgets.
            self.budgets = Budgets::default();
        }
        self.rate_limit = rate_limit;
        self.email = email;
        self.next_expiry = next_expiry;
        self.greet();
        self.save_state();
        self.protect();
        let info = &self.session.policy;
        let (policy, policy_hash) = (info.policy.clone(), info.policy_hash.clone());
        let _ = self.session.write(&Record {
            timestamp: audit::now(),
            event: "policy_reload".into(),
            layer: "kernel",
            policy_generation: Some(generation),
            detail: Some(serde_json::json!({
                "policy": policy,
                "policy_hash": policy_hash,
                "exec_rules": exec_rules,
                "network_governed": net.governed,
                "cidr_entries": net.cidr.len(),
                "domain_rules": net.domains.len(),
                "flip_ms": flip_ms,
            })),
            ..Record::default()
        });
        Response::ok(serde_json::json!({
            "generation": generation,
            "policy": policy,
            "policy_hash": policy_hash,
            "exec_rules": exec_rules,
            "flip_ms": flip_ms,
        }))
    }

    /// A reload reads only the configured policy or a file below the policy directory (so that no
    /// root-owned file elsewhere, such as a permissive example, can become the policy).
    fn reloadable(&self, path: &Path) -> Result<(), String> {
        let real = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if real == self.configured_policy || real.starts_with(&self.policy_dir) {
            Ok(())
        } else {
            Err(format!(
                "{}: a reload reads only {} or files below {} (--policy-dir)",
                path.display(),
                self.configured_policy.display(),
                self.policy_dir.display()
            ))
        }
    }

    /// Clears the generation the last reload retired (after the reply: the new policy already
    /// decides, and the wait for running programs is one RCU grace period). Requests are served one
    /// at a time, so nothing writes that generation before this is done.
    fn retire_pending(&mut self) {
        if let Some(took) = self.session.retire_pending() {
            self.last_retire_ms = Some(took.as_secs_f64() * 1000.0);
        }
    }

    /// Stops governing and removes every pin; programs detach once nothing holds them.
    fn stop(&mut self) -> Response {
        // A delegated launch cgroup (a systemd unit's agent) is not left running ungoverned: its
        // processes are killed (`cgroup.kill`, Linux 5.14) before enforcement goes.
        for group in &self.state.delegated {
            if let Err(err) = std::fs::write(group.path.join("cgroup.kill"), "1") {
                tracing::warn!("killing {}: {err}", group.path.display());
            }
        }
        for group in &self.state.cgroups {
            let _ = self.session.release(group.id);
        }
        if let Err(err) = pin::remove(&self.pin_root) {
            return Response::error(format!("removing pins: {}", crate::describe(&err)));
        }
        let _ = std::fs::remove_file(state_file());
        let _ = std::fs::remove_file(socket());
        let _ = std::fs::remove_file(records_socket());
        for group in &self.state.cgroups {
            // Left in place if processes are still inside (they run on, ungoverned).
            let _ = std::fs::remove_dir(&group.path);
        }
        let record = self.session.stop_record();
        let _ = self.session.write(&record);
        Response::ok(serde_json::json!({ "stopped": true }))
    }
}
