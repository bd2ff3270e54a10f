//! The two architectures Sentra ships for: the host's `x86_64`, and `arm64` (the seed's Ampere A1
//! machine), cross-built here with Debian's cross toolchain and tested under `qemu-system-aarch64`.
//!
//! The BPF object is the same `bpfel` object for both: only the userspace binaries differ.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use object::{
    Endianness,
    read::elf::{Dyn as _, ElfFile64, FileHeader as _, ProgramHeader as _},
};

/// The newest glibc symbol version a shipped binary may need: Oracle Linux 9 has glibc 2.34,
/// Ubuntu 22.04 2.35 (the seed's two systems), Debian 12 2.36.
pub const MAX_GLIBC: (u32, u32) = (2, 34);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Arch {
    #[default]
    #[value(name = "x86_64")]
    X86_64,
    #[value(name = "arm64", alias = "aarch64")]
    Arm64,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64",
            Self::Arm64 => "arm64",
        }
    }

    /// The Rust target to build for; `None` builds for the host (`target/release`).
    pub fn target(self) -> Option<&'static str> {
        match self {
            Self::X86_64 => None,
            Self::Arm64 => Some("aarch64-unknown-linux-gnu"),
        }
    }

    /// Where cargo leaves this architecture's release binaries.
    pub fn release_dir(self, workspace: &Path) -> PathBuf {
        match self.target() {
            None => workspace.join("target/release"),
            Some(target) => workspace.join("target").join(target).join("release"),
        }
    }

    /// A `cargo` command set up to build for this architecture: the target, and Debian's cross gcc as
    /// its linker (`gcc-aarch64-linux-gnu`, which setup.sh installs).
    pub fn cargo(self) -> Command {
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        if self == Self::Arm64 {
            cargo.env("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER", "aarch64-linux-gnu-gcc");
        }
        cargo
    }

    /// Appends `--target` when cross-building.
    pub fn target_args(self) -> Vec<&'static str> {
        self.target().map(|t| vec!["--target", t]).unwrap_or_default()
    }

    /// The directory of this architecture's test kernel `version` under the cache's `kernels/`.
    pub fn kernel_dir(self, version: &str) -> String {
        match self {
            Self::X86_64 => version.to_string(),
            Self::Arm64 => format!("arm64-{version}"),
        }
    }

    /// A static busybox for the guest's shell and tools.
    pub fn busybox(self, cache: &Path) -> PathBuf {
        match self {
            Self::X86_64 => PathBuf::from("/bin/busybox"),
            Self::Arm64 => cache.join("arm64/busybox/bin/busybox"),
        }
    }

    /// The qemu binary and the machine arguments (software emulation: nested KVM does not work here).
    pub fn qemu(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Self::X86_64 => ("qemu-system-x86_64", &["-accel", "tcg", "-cpu", "max"]),
            Self::Arm64 => ("qemu-system-aarch64", &["-M", "virt", "-accel", "tcg", "-cpu", "max"]),
        }
    }

    /// The serial console's device name on the guest's kernel command line.
    pub fn console(self) -> &'static str {
        match self {
            Self::X86_64 => "ttyS0",
            Self::Arm64 => "ttyAMA0",
        }
    }

    /// The shared libraries a dynamic binary of this architecture loads, as (file on this machine,
    /// path in the guest). The host's own binaries keep their paths; an arm64 binary's come from
    /// Debian's cross glibc (`libc6-arm64-cross`), placed in the guest's `/lib`, which the dynamic
    /// loader always searches.
    pub fn libraries(self, binary: &Path) -> anyhow::Result<BTreeSet<(PathBuf, PathBuf)>> {
        match self {
            Self::X86_64 => host_libraries(binary),
            Self::Arm64 => cross_libraries(binary, Path::new("/usr/aarch64-linux-gnu/lib")),
        }
    }
}

/// Libraries a host binary needs, from `ldd`.
fn host_libraries(binary: &Path) -> anyhow::Result<BTreeSet<(PathBuf, PathBuf)>> {
    let output = Command::new("ldd").arg(binary).output()?;
    let mut libs = BTreeSet::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libs.insert((PathBuf::from(path), PathBuf::from(path)));
        }
    }
    Ok(libs)
}

/// Libraries a cross-built binary needs: its `DT_NEEDED` entries, transitively, found in `sysroot`,
/// and its program interpreter.
fn cross_libraries(binary: &Path, sysroot: &Path) -> anyhow::Result<BTreeSet<(PathBuf, PathBuf)>> {
    let mut libs = BTreeSet::new();
    let mut pending = vec![binary.to_path_buf()];
    let mut seen = BTreeSet::new();
    while let Some(file) = pending.pop() {
        let info = Elf::read(&file)?;
        if let Some(interpreter) = info.interpreter {
            let name = interpreter.file_name().context("interpreter without a name")?;
            libs.insert((sysroot.join(name), interpreter.clone()));
        }
        for needed in info.needed {
            if seen.insert(needed.clone()) {
                let source = sysroot.join(&needed);
                if !source.exists() {
                    bail!(
                        "{} needs {needed}, which is not in {} (setup.sh installs libc6-dev-arm64-cross)",
                        file.display(),
                        sysroot.display()
                    );
                }
                libs.insert((source.clone(), Path::new("/lib").join(&needed)));
                pending.push(source);
            }
        }
    }
    Ok(libs)
}

/// What the dynamic loader needs from an ELF file.
pub struct Elf {
    pub interpreter: Option<PathBuf>,
    pub needed: Vec<String>,
    /// Every `GLIBC_x.y` version it requires (`.gnu.version_r`).
    pub glibc: BTreeSet<(u32, u32)>,
}

impl Elf {
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let data = std::fs::read(path).with_context(|| path.display().to_string())?;
        Self::parse(&data).with_context(|| format!("reading the ELF headers of {}", path.display()))
    }

    fn parse(data: &[u8]) -> anyhow::Result<Self> {
        let file = ElfFile64::<Endianness>::parse(data)?;
        let endian = file.endian();
        let header = file.elf_header();
        let mut interpreter = None;
        for segment in header.program_headers(endian, data)? {
            if let Some(path) = segment.interpreter(endian, data)? {
                interpreter = Some(PathBuf::from(String::from_utf8_lossy(path).into_owned()));
            }
        }
        let sections = header.sections(endian, data)?;
        let mut needed = Vec::new();
        if let Some((entries, link)) = sections.dynamic(endian, data)? {
            let strings = sections.strings(endian, data, link)?;
            for entry in entries {
                if entry.tag32(endian).map(i64::from) == Some(object::elf::DT_NEEDED) {
                    needed.push(String::from_utf8_lossy(entry.string(endian, strings)?).into_owned());
                }
            }
        }
        let mut glibc = BTreeSet::new();
        if let Some((mut needs, link)) = sections.gnu_verneed(endian, data)? {
            let strings = sections.strings(endian, data, link)?;
            while let Some((_, mut auxes)) = needs.next()? {
                while let Some(aux) = auxes.next()? {
                    if let Some(version) = glibc_version(aux.name(endian, strings)?) {
                        glibc.insert(version);
                    }
                }
            }
        }
        Ok(Self { interpreter, needed, glibc })
    }
}

/// `GLIBC_2.34` as (2, 34); other version names (`GLIBC_PRIVATE`, `GCC_3.0`) as `None`.
fn glibc_version(name: &[u8]) -> Option<(u32, u32)> {
    let rest = std::str::from_utf8(name).ok()?.strip_prefix("GLIBC_")?;
    let mut parts = rest.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_version_names_parse() {
        assert_eq!(glibc_version(b"GLIBC_2.34"), Some((2, 34)));
        assert_eq!(glibc_version(b"GLIBC_2.2.5"), Some((2, 2)));
        assert_eq!(glibc_version(b"GLIBC_PRIVATE"), None);
        assert_eq!(glibc_version(b"GCC_3.0"), None);
    }

    /// This test binary is a dynamic glibc executable: its loader and its libc, with their versions,
    /// must be found (a parser that found nothing would let every binary pass the release check).
    #[test]
    fn a_dynamic_glibc_binary_reads_its_loader_libraries_and_versions() -> anyhow::Result<()> {
        let elf = Elf::read(&std::env::current_exe()?)?;
        assert!(elf.interpreter.is_some_and(|p| p.to_string_lossy().contains("ld-linux")));
        assert!(elf.needed.iter().any(|n| n.starts_with("libc.so")), "{:?}", elf.needed);
        assert!(elf.glibc.iter().any(|&(major, _)| major == 2), "{:?}", elf.glibc);
        Ok(())
    }
}
