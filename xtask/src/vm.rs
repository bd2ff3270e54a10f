//! `cargo xtask vm-test`: the integration tests inside real kernels.
//!
//! Builds the controller and the test binaries, packs them with busybox into an initramfs (binaries at
//! the same absolute paths as on the host, so compiled-in paths hold), boots each test kernel under qemu
//! (software emulation: nested KVM does not work here), runs the tests as root inside, and reports per
//! test and per kernel. A kernel that does not boot, or a run without its closing line, is a failure.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::arch::Arch;

#[derive(clap::Args)]
pub struct VmTestArgs {
    /// The guests' architectures: `arm64` cross-builds the binaries and boots Debian's arm64 kernels
    /// under `qemu-system-aarch64`.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = vec![Arch::X86_64])]
    pub arch: Vec<Arch>,
    /// Exact configurations instead of every architecture × kernel × backend: `KERNEL/BACKEND` on
    /// `x86_64`, `arm64-KERNEL/BACKEND` on arm64 (e.g. `6.12/lsm,5.10/signal,arm64-6.12/lsm`).
    #[arg(long, value_delimiter = ',')]
    pub configs: Vec<String>,
    /// Kernels to boot (directories under $`SENTRA_CACHE/kernels`).
    #[arg(long, value_delimiter = ',', default_values_t = vec!["6.1".to_string(), "6.12".to_string()])]
    pub kernels: Vec<String>,
    /// Backends to test: `lsm` boots with BPF LSM active; `signal` boots with an `lsm=` list lacking bpf.
    #[arg(long, value_delimiter = ',', default_values_t = vec!["lsm".to_string(), "signal".to_string()])]
    pub backends: Vec<String>,
    /// Only run tests whose name contains this.
    #[arg(long)]
    pub filter: Option<String>,
    /// Execs in the storm tests (software-emulated guests are slow; the host runs 2000).
    #[arg(long, default_value_t = 500)]
    pub storm: u32,
    /// VMs booted at a time (each takes one core).
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// Runs of each test binary per VM (to bring out flaky tests).
    #[arg(long, default_value_t = 1)]
    pub repeat: u32,
    /// Seconds before a VM is declared hung: a whole configuration's suite, which on 6.1 with BPF LSM
    /// spends most of its time in the verifier (every controller start loads every program, about 30 s
    /// of verification there under software emulation; the suite takes about 25 minutes on a quiet
    /// machine).
    #[arg(long, default_value_t = 2700)]
    pub timeout: u64,
}

/// The outcome of one VM boot.
struct VmResult {
    label: String,
    passed: Vec<String>,
    failed: Vec<String>,
    completed: bool,
    log: PathBuf,
    /// What the failing tests printed (libtest's `---- NAME stdout ----` sections), so that a CI log
    /// shows why without the VM log file.
    failure_output: Vec<String>,
    /// Each finished test's duration in seconds (libtest's `--report-time`), to show where a
    /// configuration's time goes.
    seconds: Vec<(String, f64)>,
}

/// The seconds of libtest's `--report-time` suffix (`ok <12.345s>`), if present.
fn reported_seconds(outcome: &str) -> Option<f64> {
    outcome.split_once('<')?.1.strip_suffix("s>")?.parse().ok()
}

pub fn run(args: &VmTestArgs) -> anyhow::Result<()> {
    let workspace = workspace_root()?;
    let cache = cache();
    let out = workspace.join("target/vm");
    std::fs::create_dir_all(&out)?;
    let configs = configurations(args)?;
    let mut built: Vec<Binaries> = Vec::new();
    for &(arch, _, _) in &configs {
        if !built.iter().any(|b| b.arch == arch) {
            built.push(build(&workspace, arch)?);
        }
    }

    // Pack every initramfs first, then boot the VMs on `--jobs` workers (each qemu TCG guest uses one
    // host core). A worker takes the next configuration as soon as its VM powers off.
    let mut runs = Vec::new();
    for (arch, kernel, backend) in &configs {
        let (arch, kernel, backend) = (*arch, kernel.as_str(), backend.as_str());
        let binaries = built.iter().find(|b| b.arch == arch).context("no build for an architecture")?;
        let dir = arch.kernel_dir(kernel);
        let vmlinuz = find_kernel(&cache, &dir)?;
        let initrd = out.join(format!("initrd-{dir}-{backend}.cpio.gz"));
        let label = format!("{dir}/{backend}");
        let python = SANDBOX_CONFIGS.contains(&label.as_str());
        let extra = if python { python_files()? } else { Extra::default() };
        let scope = scope(&label);
        pack_with(binaries, &init_script(binaries, backend, args, python, scope), &initrd, &extra)?;
        runs.push((
            label,
            vmlinuz,
            initrd,
            append_for(arch, kernel, backend)?,
            out.join(format!("{dir}-{backend}.log")),
            arch,
        ));
    }
    let mut order: Vec<usize> = (0..runs.len()).collect();
    // Longest first, so that the short ones fill the gaps at the end: the full suite with BPF LSM,
    // then arm64 (a minute per controller start under emulation), then the rest with BPF LSM.
    order.sort_by_key(|&i| {
        let label = runs[i].0.as_str();
        (scope(label).is_some(), !label.starts_with("arm64"), !label.ends_with("/lsm"))
    });
    let next = std::sync::atomic::AtomicUsize::new(0);
    let timeout = Duration::from_secs(args.timeout);
    let mut outcomes: Vec<(usize, anyhow::Result<VmResult>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..args.jobs.clamp(1, runs.len().max(1)))
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    while let Some(&index) =
                        order.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                    {
                        let (label, vmlinuz, initrd, append, log, arch) = &runs[index];
                        let machine = Machine { arch: *arch, ..Machine::SMALL };
                        done.push((index, boot_one(label, vmlinuz, initrd, append, log, timeout, machine)));
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|_| vec![(usize::MAX, Err(anyhow::anyhow!("VM worker panicked")))])
            })
            .collect()
    });
    outcomes.sort_by_key(|(index, _)| *index);
    let mut results = Vec::new();
    for (_, outcome) in outcomes {
        results.push(outcome?);
    }
    report(&results)
}

/// The configurations to boot, as (architecture, kernel, backend): `--configs`, else every
/// architecture × kernel × backend asked for.
fn configurations(args: &VmTestArgs) -> anyhow::Result<Vec<(Arch, String, String)>> {
    if args.configs.is_empty() {
        let mut all = Vec::new();
        for &arch in &args.arch {
            for kernel in &args.kernels {
                for backend in &args.backends {
                    all.push((arch, kernel.clone(), backend.clone()));
                }
            }
        }
        return Ok(all);
    }
    args.configs
        .iter()
        .map(|config| {
            let (kernel, backend) =
                config.split_once('/').with_context(|| format!("{config}: expected KERNEL/BACKEND"))?;
            Ok(match kernel.strip_prefix("arm64-") {
                Some(kernel) => (Arch::Arm64, kernel.to_string(), backend.to_string()),
                None => (Arch::X86_64, kernel.to_string(), backend.to_string()),
            })
        })
        .collect()
}

/// Boots one configuration and parses its log; says when it starts and how it ended.
fn boot_one(
    label: &str,
    vmlinuz: &Path,
    initrd: &Path,
    append: &str,
    log: &Path,
    timeout: Duration,
    machine: Machine,
) -> anyhow::Result<VmResult> {
    eprintln!("[vm-test] booting {label} ({})", vmlinuz.display());
    let started = Instant::now();
    boot(vmlinuz, initrd, append, log, timeout, machine)?;
    let result = parse(label, log)?;
    eprintln!(
        "[vm-test] {label}: {} passed, {} failed{} in {:.0?}",
        result.passed.len(),
        result.failed.len(),
        if result.completed { "" } else { ", RUN DID NOT COMPLETE" },
        started.elapsed()
    );
    Ok(result)
}

pub fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    Ok(manifest.parent().context("xtask has no parent directory")?.to_path_buf())
}

/// Binaries that go into the VM.
pub struct Binaries {
    pub arch: Arch,
    pub sentra_ctl: PathBuf,
    /// The REPL, which also runs the Python sandbox (`sentra python`).
    pub sentra: PathBuf,
    /// The shell layer (the self-protection tests run it inside a launched agent).
    pub sentra_shell: PathBuf,
    /// The agent's side of the mail broker, and himalaya, which the broker sends through (built for
    /// the host only: the arm64 guests leave the e-mail test out).
    pub sentra_email: PathBuf,
    pub himalaya: Option<PathBuf>,
    pub fixture: PathBuf,
    pub bench: PathBuf,
    pub tests: Vec<PathBuf>,
}

/// Integration test binaries the VMs do not run. `metrics`: a real Prometheus server (the host's
/// cached binary) scrapes the controller; the metrics exercise no kernel feature the VMs add over the
/// host, and the server's start under emulation would cost every configuration minutes.
const HOST_ONLY: [&str; 1] = ["metrics"];

/// Builds every binary the VMs need with exactly the command the host test step runs (`cargo test
/// --workspace --exclude sentra-ebpf`): the same feature unification means the same artifacts, so after
/// `scripts/test.sh`'s host step this is a no-op instead of a second release build. Integration tests
/// build their package's binaries too (cargo places them in `target/release`).
///
/// For arm64 the same command cross-builds (`--target aarch64-unknown-linux-gnu`), and the shipped
/// binaries' glibc requirement is checked: they must start on Oracle Linux 9 and Ubuntu 22.04.
pub fn build(workspace: &Path, arch: Arch) -> anyhow::Result<Binaries> {
    let mut cargo = arch.cargo();
    cargo.current_dir(workspace);
    if arch == Arch::X86_64 {
        cargo.args(["test", "--release", "--workspace", "--exclude", "sentra-ebpf", "--no-run"]);
    } else {
        // Cross-built: only what the guests run (the shipped binaries, then the integration tests and
        // their fixtures), not every package's unit tests, which the host runs.
        crate::release::build(workspace, arch)?;
        cargo.args(["test", "--release", "-p", "sentra-tests", "--no-run"]).args(arch.target_args());
    }
    let output = cargo.arg("--message-format=json").stderr(Stdio::inherit()).output()?;
    if !output.status.success() {
        bail!("building the binaries and test binaries failed");
    }
    let mut tests = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] == "compiler-artifact"
            && message["profile"]["test"] == true
            && message["package_id"].as_str().is_some_and(|id| id.contains("#sentra-tests@"))
            && message["target"]["kind"].as_array().is_some_and(|k| k.iter().any(|v| v == "test"))
            && !HOST_ONLY.contains(&message["target"]["name"].as_str().unwrap_or_default())
            && let Some(path) = message["executable"].as_str()
        {
            tests.push(PathBuf::from(path));
        }
    }
    if tests.is_empty() {
        bail!("no integration test binaries were built");
    }
    let release = arch.release_dir(workspace);
    let himalaya = if arch == Arch::X86_64 { Some(himalaya()?) } else { None };
    let binaries = Binaries {
        arch,
        sentra_ctl: release.join("sentra-ctl"),
        sentra: release.join("sentra"),
        sentra_shell: release.join("sentra-shell"),
        sentra_email: release.join("sentra-email"),
        himalaya,
        fixture: release.join("sentra-fixture"),
        bench: release.join("sentra-bench"),
        tests,
    };
    for binary in [
        &binaries.sentra_ctl,
        &binaries.sentra,
        &binaries.sentra_shell,
        &binaries.sentra_email,
        &binaries.fixture,
        &binaries.bench,
    ] {
        if !binary.is_file() {
            bail!("the build did not leave {}", binary.display());
        }
    }
    if arch != Arch::X86_64 {
        crate::release::check_shipped(&release)?;
    }
    Ok(binaries)
}

pub fn find_kernel(cache: &Path, version: &str) -> anyhow::Result<PathBuf> {
    let boot = cache.join("kernels").join(version).join("boot");
    let entries = std::fs::read_dir(&boot)
        .with_context(|| format!("{}: no test kernel {version}; run scripts/setup.sh", boot.display()))?;
    entries
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("vmlinuz-")))
        .with_context(|| format!("no vmlinuz-* in {}", boot.display()))
}

/// The start of every VM's /init: busybox applets, the filesystems the controller needs, and loopback
/// up as on any machine. /tmp gets
/// its own tmpfs (so tests also cross a mount point) unless the workspace, whose binaries sit at their
/// host paths in the initramfs, is itself under /tmp, which the tmpfs would hide.
pub fn base_init() -> String {
    let workspace = workspace_root().map(|p| p.display().to_string()).unwrap_or_default();
    format!("#!/bin/busybox sh\nexport SENTRA_WORKSPACE='{workspace}'\n")
        + &String::from(
            "/bin/busybox --install -s /bin\n\
         export PATH=/bin\n\
         mount -t proc proc /proc\n\
         mount -t sysfs sys /sys\n\
         mount -t devtmpfs dev /dev\n\
         mount -t securityfs none /sys/kernel/security\n\
         mount -t tracefs none /sys/kernel/tracing\n\
         mount -t cgroup2 none /sys/fs/cgroup\n\
         mount -t bpf bpf /sys/fs/bpf\n\
         ip link set lo up || ifconfig lo up\n\
         case \"$SENTRA_WORKSPACE\" in /tmp|/tmp/*) ;; *) mount -t tmpfs tmp /tmp ;; esac\n\
         echo SENTRA-VM-KERNEL $(uname -r) lsm=$(cat /sys/kernel/security/lsm)\n",
        )
}

/// The kernel command line for a backend on a kernel. 6.1 and 6.12 list `bpf` among their default
/// LSMs; bullseye's 5.10, like the seed's 5.15 kernels, builds BPF LSM but leaves it out, so `lsm`
/// there names the list with `bpf` added, as a user would on the boot line. `signal` boots with a
/// list lacking `bpf`, except on arm64's 6.1: BPF LSM is listed there but its programs cannot attach
/// (no BPF trampoline attachment on Debian's arm64 6.1), so that configuration tests that `auto`
/// finds this out by attaching and falls back to `signal`.
pub fn append_for(arch: Arch, kernel: &str, backend: &str) -> anyhow::Result<String> {
    let base = format!("console={} panic=-1 quiet", arch.console());
    Ok(match backend {
        "lsm" if kernel.starts_with("5.") => format!("{base} lsm=lockdown,capability,yama,bpf"),
        "lsm" => base,
        "signal" if arch == Arch::Arm64 && kernel == "6.1" => base,
        // Any LSM list without `bpf`: BPF LSM programs cannot attach, as on stock Ubuntu.
        "signal" => format!("{base} lsm=capability,landlock,yama"),
        other => bail!("unknown backend {other}"),
    })
}

/// The himalaya `scripts/setup.sh` builds into the cache: the mail broker's sender in the e-mail tests
/// and in the deployment test's machine.
///
/// # Errors
/// It has not been built.
pub fn himalaya() -> anyhow::Result<PathBuf> {
    let himalaya = cache().join("himalaya/bin/himalaya");
    if !himalaya.exists() {
        bail!("{}: no himalaya for the e-mail tests; run scripts/setup.sh", himalaya.display());
    }
    Ok(himalaya)
}

/// The test kernels' cache directory.
pub fn cache() -> PathBuf {
    PathBuf::from(std::env::var("SENTRA_CACHE").unwrap_or_else(|_| "/var/cache/sentra-dev".into()))
}

/// The configurations that run the Python sandbox's tests (`tests/tests/sandbox.rs`), one per VM
/// worker and kernel: the sandbox uses no BPF, so the backend does not change what they test, while
/// the kernel does (cgroup v2's files, Landlock's ABI, `mount_setattr`).
const SANDBOX_CONFIGS: [&str; 2] = ["6.12/lsm", "6.1/signal"];

/// Which tests a configuration runs: every test, or only these (exact names). The sandbox's test
/// binary runs whole wherever it runs.
type Scope = Option<&'static [&'static str]>;

/// The scope of each configuration, within the CI's time (two emulated cores for every guest):
/// - 6.12/lsm runs the full suite (the host runs it too, with the signal backend);
/// - 6.12/signal and 5.10 run [`KERNEL_CORE`]: 5.10 stands in for the seed's 5.15 kernels (the
///   cgroup walk, the memory-lock charge, which guards load, the kernel's answers to the exec and
///   network programs);
/// - 6.1 and arm64 6.12 run [`SMOKE`] (6.1/signal the sandbox's tests too). Every controller start
///   loads every program, so any test there passes the whole object through that kernel's verifier
///   (6.1's is the tight one); what 6.1 decides differently from 6.12 after loading is little, and
///   on 6.1/lsm and arm64 a controller start takes half a minute to a minute under emulation;
/// - arm64 6.1 runs [`AUTO_CHOICE`]: it lists BPF LSM but cannot attach it, so `auto` must find
///   that out and the signal backend must refuse an exec there.
fn scope(label: &str) -> Scope {
    match label {
        "6.12/lsm" => None,
        "6.1/lsm" | "6.1/signal" | "arm64-6.12/lsm" | "arm64-6.12/signal" => Some(&SMOKE),
        "arm64-6.1/signal" => Some(&AUTO_CHOICE),
        _ => Some(&KERNEL_CORE),
    }
}

/// What a kernel other than the full suite's must show: the exec decision (names, inodes, argv read
/// from the syscall tracepoint, applets, the storm's exact accounting), cgroup descent, the guards,
/// the maps and generations, adoption of pins, and the network programs. (The DNS query from another
/// network namespace is not here: before Linux 5.14 there is no `SO_NETNS_COOKIE` to tell it apart,
/// and `sentra-ctl doctor` says so.)
const KERNEL_CORE: [&str; 19] = [
    "backend_is_the_one_this_environment_promises",
    "allowed_exec_runs",
    "denied_exec_fails_and_its_event_names_the_rule",
    "grandchild_started_through_sh_is_governed",
    "hard_link_of_a_denied_binary_is_denied_by_inode",
    "child_cgroup_created_after_start_is_governed",
    "exec_storm_produces_one_event_per_exec_or_an_exact_loss_count",
    "killed_before_the_first_instruction_or_refused",
    "long_argument_lists_are_flagged_truncated",
    "a_multicall_binary_runs_only_the_applets_the_policy_allows_by_name",
    "a_governed_root_task_cannot_reach_the_kernel_or_sentra",
    "a_governed_root_task_cannot_run_code_around_the_exec_rules",
    "the_object_holds_exactly_the_shared_names",
    "batched_and_one_by_one_writes_leave_the_same_entries",
    "kill_9_keeps_enforcement_and_a_restarted_controller_adopts",
    "reload_under_an_exec_storm_never_mixes_generations",
    "net_allowed_name_resolves_and_connects_denied_name_is_refused_and_unreachable",
    "net_cidr_port_and_protocol_allowlist_ipv4_ipv6_tcp_udp",
    "net_daemon_pins_network_governance_reloads_and_adopts",
];

/// The backend `auto` chooses, an exec refused with its record (on arm64, its argv read from arm64's
/// syscall tracepoint), cgroup descent, the guards, and the network programs. (The e-mail test could
/// not run on arm64 anyway: setup.sh builds himalaya for the host only.)
const SMOKE: [&str; 5] = [
    "backend_is_the_one_this_environment_promises",
    "denied_exec_fails_and_its_event_names_the_rule",
    "child_cgroup_created_after_start_is_governed",
    "a_governed_root_task_cannot_reach_the_kernel_or_sentra",
    "net_cidr_port_and_protocol_allowlist_ipv4_ipv6_tcp_udp",
];

/// The backend `auto` chooses, and an exec refused by it with its record.
const AUTO_CHOICE: [&str; 2] =
    ["backend_is_the_one_this_environment_promises", "denied_exec_fails_and_its_event_names_the_rule"];

/// Whether a test binary is the sandbox's (`target/release/deps/sandbox-<hash>`).
fn is_sandbox_test(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("sandbox-"))
}

/// Files (and symlinks) an initramfs carries besides the binaries.
#[derive(Default)]
pub struct Extra {
    pub files: Vec<PathBuf>,
    pub symlinks: Vec<(PathBuf, PathBuf)>,
}

/// The interpreter the sandbox tests run, its libraries and its standard library (the compiled
/// modules included: under emulation, compiling the imports at every start would dominate), without
/// the test suites, GUI toolkits and build configuration no test imports.
fn python_files() -> anyhow::Result<Extra> {
    let link = Path::new("/usr/bin/python3");
    let real = std::fs::canonicalize(link).context("/usr/bin/python3: scripts/setup.sh installs python3")?;
    let version = real.file_name().and_then(|n| n.to_str()).context("python's name")?.to_string();
    let stdlib = Path::new("/usr/lib").join(&version);
    let skip = |name: &str| {
        [
            "test",
            "tests",
            "idlelib",
            "tkinter",
            "turtledemo",
            "lib2to3",
            "ensurepip",
            "pydoc_data",
            "site-packages",
            "dist-packages",
        ]
        .contains(&name)
            || name.starts_with("config-")
    };
    let mut files = vec![real.clone()];
    let mut stack = vec![stdlib];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| dir.display().to_string())?.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let kind = entry.file_type()?;
            if kind.is_dir() && !skip(&name) {
                stack.push(path);
            } else if kind.is_file() && !name.contains(".opt-") {
                files.push(path);
            }
        }
    }
    let mut libs = BTreeSet::new();
    for file in files.iter().filter(|f| *f == &real || f.extension().is_some_and(|e| e == "so")) {
        libs.extend(Arch::X86_64.libraries(file)?.into_iter().map(|(source, _)| source));
    }
    files.extend(libs);
    files.extend(["/etc/localtime", "/etc/ld.so.cache"].iter().map(PathBuf::from).filter(|p| p.exists()));
    Ok(Extra { files, symlinks: vec![(link.to_path_buf(), PathBuf::from(version))] })
}

/// The VM's `/init`: every test binary in turn (the sandbox's only with `sandbox`), each test named in
/// `skip` left out.
fn init_script(binaries: &Binaries, backend: &str, args: &VmTestArgs, sandbox: bool, scope: Scope) -> String {
    let mut script = base_init();
    let _ = writeln!(script, "export SENTRA_CTL={}", binaries.sentra_ctl.display());
    if let Some(himalaya) = &binaries.himalaya {
        let _ = writeln!(script, "export SENTRA_HIMALAYA={}", himalaya.display());
    }
    let _ = writeln!(script, "export SENTRA_EXPECT_BACKEND={backend} SENTRA_TEST_BACKEND=auto");
    let _ = writeln!(script, "export SENTRA_STORM={}", args.storm);
    // libtest's per-test durations (`--report-time`) are an unstable option: a stable test binary
    // accepts it when RUSTC_BOOTSTRAP is set.
    let _ = writeln!(script, "export RUSTC_BOOTSTRAP=1");
    let _ = writeln!(script, "{} doctor", binaries.sentra_ctl.display());
    // `--filter` (by hand) replaces the configuration's own list of tests.
    let filter = match (args.filter.as_deref(), scope) {
        (Some(words), _) => words.to_string(),
        (None, Some(only)) => only.join(" ") + " --exact",
        (None, None) => String::new(),
    };
    let _ = writeln!(script, "for round in $(seq {}); do", args.repeat.max(1));
    for test in binaries.tests.iter().filter(|t| sandbox || !is_sandbox_test(t)) {
        let filter = if is_sandbox_test(test) && args.filter.is_none() { "" } else { filter.as_str() };
        let _ = writeln!(
            script,
            "echo SENTRA-VM-BEGIN {0}\n{0} --test-threads=1 -Z unstable-options --report-time {filter}\necho SENTRA-VM-EXIT $?",
            test.display()
        );
    }
    script.push_str("done\n");
    script.push_str("echo SENTRA-VM-DONE\npoweroff -f\n");
    script
}

fn copy_into(root: &Path, file: &Path) -> anyhow::Result<()> {
    copy_as(root, file, file)
}

/// Copies `file` to `at` (an absolute path in the guest) under `root`.
fn copy_as(root: &Path, file: &Path, at: &Path) -> anyhow::Result<()> {
    let target = root.join(at.strip_prefix("/").unwrap_or(at));
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::copy(file, &target).with_context(|| format!("copying {}", file.display()))?;
    Ok(())
}

pub fn pack(binaries: &Binaries, init: &str, initrd: &Path) -> anyhow::Result<()> {
    pack_with(binaries, init, initrd, &Extra::default())
}

/// As [`pack`], with `extra` files and symlinks.
pub fn pack_with(binaries: &Binaries, init: &str, initrd: &Path, extra: &Extra) -> anyhow::Result<()> {
    let root = initrd.with_extension("d");
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    for dir in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(dir))?;
    }
    let busybox = binaries.arch.busybox(&cache());
    std::fs::copy(&busybox, root.join("bin/busybox"))
        .with_context(|| format!("{}: a static busybox is required (setup.sh)", busybox.display()))?;
    let mut files: Vec<PathBuf> = vec![
        binaries.sentra_ctl.clone(),
        binaries.sentra.clone(),
        binaries.sentra_shell.clone(),
        binaries.sentra_email.clone(),
        binaries.fixture.clone(),
        binaries.bench.clone(),
    ];
    files.extend(binaries.himalaya.iter().cloned());
    files.extend(binaries.tests.iter().cloned());
    let mut libs = BTreeSet::new();
    for file in &files {
        libs.extend(binaries.arch.libraries(file)?);
    }
    for file in files.iter().chain(&extra.files) {
        copy_into(&root, file)?;
    }
    for (file, at) in &libs {
        copy_as(&root, file, at)?;
    }
    for (link, target) in &extra.symlinks {
        let at = root.join(link.strip_prefix("/").unwrap_or(link));
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::os::unix::fs::symlink(target, &at).with_context(|| at.display().to_string())?;
    }
    let init_path = root.join("init");
    std::fs::write(&init_path, init)?;
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd '{}' && chmod 755 init && find . | cpio -o -H newc --quiet | gzip -1 > '{}'",
            root.display(),
            initrd.display()
        ))
        .status()?;
    if !status.success() {
        bail!("packing the initramfs failed");
    }
    Ok(())
}

/// A guest's size.
#[derive(Clone, Copy)]
pub struct Machine {
    pub cpus: u32,
    pub memory_mb: u32,
    pub arch: Arch,
}

impl Machine {
    /// One core and 1 GiB: the integration tests' VMs.
    pub const SMALL: Self = Self { cpus: 1, memory_mb: 1024, arch: Arch::X86_64 };
}

/// Boots a guest with no network card (its only network is its own loopback) until it powers off
/// or `timeout` passes; the serial console goes to `log`.
pub fn boot(
    vmlinuz: &Path,
    initrd: &Path,
    append: &str,
    log: &Path,
    timeout: Duration,
    machine: Machine,
) -> anyhow::Result<()> {
    let log_file = std::fs::File::create(log)?;
    let (qemu, machine_args) = machine.arch.qemu();
    let mut child = Command::new(qemu)
        .args(machine_args)
        .args(["-nographic", "-no-reboot", "-nic", "none"])
        .args(["-smp", &machine.cpus.to_string(), "-m", &machine.memory_mb.to_string()])
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(append)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("starting {qemu} (setup.sh installs it)"))?;
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("[vm-test] VM timed out after {timeout:?}; log: {}", log.display());
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn parse(label: &str, log: &Path) -> anyhow::Result<VmResult> {
    let text = String::from_utf8_lossy(&std::fs::read(log)?).into_owned();
    let mut result = VmResult {
        label: label.to_string(),
        passed: Vec::new(),
        failed: Vec::new(),
        completed: false,
        log: log.into(),
        failure_output: Vec::new(),
        seconds: Vec::new(),
    };
    let mut in_failure = false;
    let mut begun = 0;
    let mut exited_ok = 0;
    // A test's result can land on a later line when something else printed meanwhile:
    // remember the test that is running until its "ok"/"FAILED" shows up.
    let mut pending: Option<String> = None;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        let trimmed = line.trim();
        // libtest prints each failure as `---- NAME stdout ----` followed by its output, then
        // `failures:` and the list of names.
        if line.starts_with("---- ") && line.ends_with(" stdout ----") {
            in_failure = true;
        } else if trimmed == "failures:" || line.starts_with("SENTRA-VM-") {
            in_failure = false;
        }
        if in_failure {
            result.failure_output.push(line.to_string());
        }
        if let Some(rest) = line.strip_prefix("test ")
            && let Some((name, outcome)) = rest.split_once(" ... ")
        {
            pending = None;
            if let Some(seconds) = reported_seconds(outcome) {
                result.seconds.push((name.to_string(), seconds));
            }
            if outcome.starts_with("ok") {
                result.passed.push(name.to_string());
            } else if outcome.starts_with("FAILED") {
                result.failed.push(name.to_string());
            } else {
                pending = Some(name.to_string());
            }
        } else if let Some(name) =
            pending.as_ref().filter(|_| trimmed.starts_with("ok") || trimmed.starts_with("FAILED"))
        {
            if let Some(seconds) = reported_seconds(trimmed) {
                result.seconds.push((name.clone(), seconds));
            }
            if trimmed.starts_with("ok") {
                result.passed.push(name.clone());
            } else {
                result.failed.push(name.clone());
            }
            pending = None;
        } else if line.starts_with("SENTRA-VM-BEGIN") {
            begun += 1;
        } else if let Some(code) = line.strip_prefix("SENTRA-VM-EXIT ") {
            if code.trim() == "0" {
                exited_ok += 1;
            } else {
                result.failed.push(format!("(test binary exited {code})"));
            }
        } else if line.starts_with("SENTRA-VM-DONE") {
            result.completed = begun > 0;
        }
    }
    if exited_ok < begun {
        result.completed = result.completed && result.failed.iter().any(|f| f.starts_with("(test binary"));
    }
    if result.passed.is_empty() && result.failed.is_empty() {
        result.completed = false;
    }
    Ok(result)
}

fn report(results: &[VmResult]) -> anyhow::Result<()> {
    let mut names: BTreeSet<&str> = BTreeSet::new();
    for r in results {
        names.extend(r.passed.iter().map(String::as_str));
        names.extend(r.failed.iter().map(String::as_str));
    }
    println!();
    print!("{:<62}", "test");
    for r in results {
        print!(" {:>11}", r.label);
    }
    println!();
    for name in &names {
        print!("{name:<62}");
        for r in results {
            let mark = if r.failed.iter().any(|f| f == name) {
                "FAIL"
            } else if r.passed.iter().any(|p| p == name) {
                "ok"
            } else {
                "-"
            };
            print!(" {mark:>11}");
        }
        println!();
    }
    // Where each configuration's time went: its slowest tests.
    for r in results {
        let mut slowest: Vec<&(String, f64)> = r.seconds.iter().collect();
        slowest.sort_by(|a, b| b.1.total_cmp(&a.1));
        let total: f64 = r.seconds.iter().map(|(_, s)| s).sum();
        let top: Vec<String> = slowest.iter().take(5).map(|(name, s)| format!("{name} {s:.0}s")).collect();
        println!("{}: tests took {total:.0}s; slowest: {}", r.label, top.join(", "));
    }
    let mut failed = 0;
    let mut passed = 0;
    for r in results {
        passed += r.passed.len();
        failed += r.failed.len();
        if !r.completed {
            failed += 1;
            println!(
                "{}: the VM run did not complete (no boot, hang or crash); see {}",
                r.label,
                r.log.display()
            );
        } else if !r.failed.is_empty() {
            println!("{}: failures; see {}", r.label, r.log.display());
        }
        if !r.failure_output.is_empty() {
            // Bounded: a failure's own message comes first; a flood of output does not bury the table.
            const MAX_LINES: usize = 400;
            println!("--- {}: what the failing tests printed", r.label);
            for line in r.failure_output.iter().take(MAX_LINES) {
                println!("    {line}");
            }
            if r.failure_output.len() > MAX_LINES {
                println!("    … {} more lines in {}", r.failure_output.len() - MAX_LINES, r.log.display());
            }
        }
    }
    println!("vm-test: {passed} passed, {failed} failed");
    if failed > 0 {
        bail!("vm-test failed");
    }
    Ok(())
}
