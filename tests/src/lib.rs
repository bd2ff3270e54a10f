//! Helpers for Sentra's integration tests: locating the controller, building test scenes (real files
//! in a temporary directory), running commands governed, and reading the audit log they produced.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod costs;
pub mod daemon;
pub mod dns_fixture;
pub mod netbench;
pub mod netns;
pub mod netprobe;
pub mod smtp_sink;

/// The `sentra-ctl` binary under test: `$SENTRA_CTL`, else the workspace's release build.
///
/// # Panics
/// When it does not exist: the tests cannot run without it and must not pass silently.
#[must_use]
pub fn sentra_ctl() -> PathBuf {
    let path = std::env::var_os("SENTRA_CTL").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/sentra-ctl"),
        PathBuf::from,
    );
    assert!(path.exists(), "sentra-ctl not found at {} (build it, or set SENTRA_CTL)", path.display());
    path
}

/// A command running `sentra-ctl`, without `LD_LIBRARY_PATH`: `cargo test` points it at its own build
/// directories for the test binaries, and the programs a test governs would inherit it, where the
/// `signal` backend kills a program whose loader is told to look outside what the policy allows.
#[must_use]
pub fn ctl_command() -> Command {
    let mut cmd = Command::new(sentra_ctl());
    cmd.env_remove("LD_LIBRARY_PATH");
    cmd
}

/// The backend the tests ask for (`$SENTRA_TEST_BACKEND`, default `auto`).
#[must_use]
pub fn requested_backend() -> String {
    std::env::var("SENTRA_TEST_BACKEND").unwrap_or_else(|_| "auto".into())
}

/// The backend the environment promises (`$SENTRA_EXPECT_BACKEND`), checked by the tests.
#[must_use]
pub fn expected_backend() -> Option<String> {
    std::env::var("SENTRA_EXPECT_BACKEND").ok()
}

/// The outcome of one governed run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// Every audit record written during the run.
    pub records: Vec<Value>,
}

impl Run {
    /// The backend the controller reported.
    #[must_use]
    pub fn backend(&self) -> String {
        self.records
            .iter()
            .find(|r| r["event"] == "controller_start")
            .and_then(|r| r["backend"].as_str())
            .unwrap_or("none")
            .to_string()
    }

    /// Exec records whose executable is `path`.
    #[must_use]
    pub fn execs_of(&self, path: &Path) -> Vec<&Value> {
        let path = path.to_string_lossy();
        self.records.iter().filter(|r| r["event"] == "exec" && r["executable"] == path.as_ref()).collect()
    }

    /// The controller's closing counters.
    #[must_use]
    pub fn stop_detail(&self) -> &Value {
        self.records.iter().find(|r| r["event"] == "controller_stop").map_or(&Value::Null, |r| &r["detail"])
    }

    /// What `sentra-fixture spawn` prints for a denied exec under this run's backend.
    #[must_use]
    pub fn denied_marker(&self) -> &'static str {
        if self.backend() == "lsm" { "exec-errno=1" } else { "signal=9" }
    }
}

/// `sentra-ctl run --policy POLICY --audit-log AUDIT --backend (requested) -- COMMAND…`, to be run.
#[must_use]
pub fn run_command<S: AsRef<std::ffi::OsStr>>(policy: &Path, audit: &Path, command: &[S]) -> Command {
    let mut cmd = ctl_command();
    cmd.arg("run").arg("--policy").arg(policy).arg("--audit-log").arg(audit);
    cmd.arg("--backend").arg(requested_backend()).arg("--").args(command);
    cmd
}

/// Runs `command` under `sentra-ctl run` with `policy` (YAML text) and returns what happened.
///
/// # Panics
/// If the controller cannot be started at all.
#[must_use]
pub fn run_governed(dir: &Path, policy: &str, command: &[&str]) -> Run {
    let policy_path = dir.join(format!("policy-{}.yaml", unique()));
    std::fs::write(&policy_path, policy).expect("write policy");
    std::fs::set_permissions(&policy_path, std::fs::Permissions::from_mode(0o644)).expect("chmod policy");
    let audit = dir.join(format!("audit-{}.jsonl", unique()));
    let output = run_command(&policy_path, &audit, command).output().expect("start sentra-ctl");
    let records = read_records(&audit);
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        records,
    }
}

/// Reads a JSONL audit log; a line that is not JSON fails the test. A last line without its newline
/// is still being written (a read is not atomic with a concurrent write): it is left for the next read.
///
/// # Panics
/// On a malformed line.
#[must_use]
pub fn read_records(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..=end]);
    complete
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad audit line {l:?}: {e}")))
        .collect()
}

/// Reads the audit log until `done` holds for its records, or fails the test after `timeout`.
///
/// The controller drains the kernel's ring buffer on its own schedule, so a record of something a
/// test just did may not be in the log yet when the test looks.
///
/// # Panics
/// On a malformed line, or when `done` still does not hold after `timeout`; the message names
/// `what` and lists the records seen.
pub fn wait_for_records(
    path: &Path,
    timeout: Duration,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let records = read_records(path);
        if done(&records) {
            return records;
        }
        assert!(Instant::now() < deadline, "{what}: not in the audit log after {timeout:?}: {records:#?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!("{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Copies `from` to `to` (creating parents) and makes it executable.
///
/// # Panics
/// On any I/O failure.
pub fn install(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
    std::fs::copy(from, to).expect("copy");
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// A minimal static ELF executable for this architecture whose very first instructions write "ran\n"
/// to stdout and exit 0: if it is killed before it runs a single instruction, nothing is printed.
#[must_use]
pub fn tiny_elf() -> Vec<u8> {
    #[cfg(target_arch = "x86_64")]
    let (machine, code): (u16, Vec<u8>) = (
        0x3e,
        [
            &[0xb8, 1, 0, 0, 0][..],            // mov eax, 1 (write)
            &[0xbf, 1, 0, 0, 0],                // mov edi, 1
            &[0x48, 0x8d, 0x35, 0x10, 0, 0, 0], // lea rsi, [rip+16] (msg)
            &[0xba, 4, 0, 0, 0],                // mov edx, 4
            &[0x0f, 0x05],                      // syscall
            &[0xb8, 60, 0, 0, 0],               // mov eax, 60 (exit)
            &[0x31, 0xff],                      // xor edi, edi
            &[0x0f, 0x05],                      // syscall
            b"ran\n",
        ]
        .concat(),
    );
    #[cfg(target_arch = "aarch64")]
    let (machine, code): (u16, Vec<u8>) = (
        0xb7,
        [
            0xd280_0020_u32, // mov x0, #1
            0x1000_00e1,     // adr x1, msg (+28)
            0xd280_0082,     // mov x2, #4
            0xd280_0808,     // mov x8, #64 (write)
            0xd400_0001,     // svc #0
            0xd280_0000,     // mov x0, #0
            0xd280_0ba8,     // mov x8, #93 (exit)
            0xd400_0001,     // svc #0
        ]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .chain(*b"ran\n")
        .collect(),
    );
    let base: u64 = 0x40_0000;
    let header_len: u64 = 64 + 56;
    let total = header_len + code.len() as u64;
    let mut elf = Vec::new();
    elf.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf.extend_from_slice(&machine.to_le_bytes());
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&(base + header_len).to_le_bytes()); // entry
    elf.extend_from_slice(&64u64.to_le_bytes()); // phoff
    elf.extend_from_slice(&0u64.to_le_bytes()); // shoff
    elf.extend_from_slice(&0u32.to_le_bytes()); // flags
    for v in [64u16, 56, 1, 64, 0, 0] {
        elf.extend_from_slice(&v.to_le_bytes());
    }
    elf.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf.extend_from_slice(&5u32.to_le_bytes()); // R+X
    elf.extend_from_slice(&0u64.to_le_bytes()); // offset
    elf.extend_from_slice(&base.to_le_bytes()); // vaddr
    elf.extend_from_slice(&base.to_le_bytes()); // paddr
    elf.extend_from_slice(&total.to_le_bytes()); // filesz
    elf.extend_from_slice(&total.to_le_bytes()); // memsz
    elf.extend_from_slice(&0x1000u64.to_le_bytes()); // align
    elf.extend_from_slice(&code);
    elf
}
