//! `cargo xtask release`: the binaries `scripts/install.sh --prebuilt` installs, for each architecture
//! (the host's `x86_64` and, cross-built, `arm64`), in `target/dist/<arch>/`. Each binary's glibc
//! requirement is checked against the oldest glibc of the systems Sentra supports, so that a binary
//! built on Debian 12 does not fail to start on Oracle Linux 9 with `GLIBC_2.36 not found`.

use std::path::Path;

use anyhow::{Context as _, bail};

use crate::{
    arch::{Arch, Elf, MAX_GLIBC},
    vm::workspace_root,
};

/// A glibc version as (major, minor).
type GlibcVersion = (u32, u32);

/// The binaries an installation takes (scripts/install.sh).
const SHIPPED: [&str; 4] = ["sentra-ctl", "sentra", "sentra-shell", "sentra-email"];

#[derive(clap::Args)]
pub struct ReleaseArgs {
    /// Architectures to build.
    #[arg(long, value_delimiter = ',', default_values_t = vec![Arch::X86_64, Arch::Arm64])]
    #[arg(value_enum)]
    pub arch: Vec<Arch>,
}

pub fn run(args: &ReleaseArgs) -> anyhow::Result<()> {
    let workspace = workspace_root()?;
    for &arch in &args.arch {
        build(&workspace, arch)?;
        let dist = workspace.join("target/dist").join(arch.name());
        std::fs::create_dir_all(&dist)?;
        let release = arch.release_dir(&workspace);
        for (name, newest) in check_shipped(&release)? {
            let binary = release.join(name);
            std::fs::copy(&binary, dist.join(name))
                .with_context(|| format!("copying {}", binary.display()))?;
            println!(
                "{:<7} {name:<13} needs glibc {} (limit {}.{})",
                arch.name(),
                newest.map_or_else(|| "nothing".into(), |(a, b)| format!("{a}.{b}")),
                MAX_GLIBC.0,
                MAX_GLIBC.1
            );
        }
        println!("{:<7} -> {}", arch.name(), dist.display());
    }
    Ok(())
}

/// A release build of the shipped binaries for `arch` (the BPF object inside is the same `bpfel`
/// object on every architecture).
pub fn build(workspace: &Path, arch: Arch) -> anyhow::Result<()> {
    let status = arch
        .cargo()
        .current_dir(workspace)
        .args(["build", "--release", "-p", "sentra-ctl", "--bins"])
        .args(arch.target_args())
        .status()?;
    if !status.success() {
        bail!("the {} release build failed", arch.name());
    }
    Ok(())
}

/// Each shipped binary in `release` with the newest glibc version it needs; an error when one needs a
/// glibc newer than [`MAX_GLIBC`].
pub fn check_shipped(release: &Path) -> anyhow::Result<Vec<(&'static str, Option<GlibcVersion>)>> {
    SHIPPED.into_iter().map(|name| Ok((name, check_glibc(&release.join(name))?))).collect()
}

/// The newest glibc version `binary` needs; an error when it is newer than [`MAX_GLIBC`].
fn check_glibc(binary: &Path) -> anyhow::Result<Option<GlibcVersion>> {
    let elf = Elf::read(binary)?;
    let newest = elf.glibc.iter().max().copied();
    if let Some(version) = newest
        && version > MAX_GLIBC
    {
        bail!(
            "{} needs GLIBC_{}.{}, newer than {}.{} (Oracle Linux 9): it would not start there",
            binary.display(),
            version.0,
            version.1,
            MAX_GLIBC.0,
            MAX_GLIBC.1
        );
    }
    Ok(newest)
}
