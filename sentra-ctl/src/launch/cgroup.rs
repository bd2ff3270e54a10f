//! The launch's own cgroup: created below the governed cgroup for one launch, governed by the
//! controller with the launch profile's network policy, killed and removed when the agent exits.
//!
//! A cgroup of its own is what lets the kernel tell this agent's connections from those of other
//! agents in the same governed cgroup: the network programs find the innermost governed cgroup of a
//! task and decide with its profile's allowlist.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

use crate::{
    cgroup::{Cgroup, cgroup2_root},
    controller::{client, protocol::Request},
};

/// Prefix of launch cgroup names (`launch-<launcher pid>`).
const PREFIX: &str = "launch-";

/// A launch cgroup, governed while it exists.
#[derive(Debug)]
pub struct LaunchCgroup {
    cgroup: Cgroup,
    /// Whether the controller has an entry for it (to forget once it is gone).
    entry: bool,
}

impl LaunchCgroup {
    /// Creates `<parent>/launch-<pid>` and has the controller govern it with `net_profile`'s network
    /// policy. Leftovers of launchers that died (empty, their launcher gone) are removed first.
    ///
    /// Without a network profile the cgroup is governed as a descendant of `parent` whether or not
    /// the controller answers (its pins keep enforcing while it is away), so a launch then goes on
    /// with a warning.
    ///
    /// # Errors
    /// The cgroup cannot be created, or, with a network profile, the controller does not govern it
    /// (the launch must not go on: its network policy would not apply).
    pub fn create(parent: &Path, net_profile: Option<&str>) -> anyhow::Result<Self> {
        Self::make(parent, PREFIX, net_profile, false)
    }

    /// Creates `<parent>/sentra-launch-<pid>` in the cgroup delegated to this launcher (a systemd
    /// service with `Delegate=yes`; `parent` is the launcher's own cgroup) and has the controller
    /// govern it. Nothing above it is governed, so the launch fails unless the controller answers:
    /// an agent that cannot be governed does not start.
    ///
    /// # Errors
    /// The cgroup cannot be created or the controller does not govern it.
    pub fn create_delegated(parent: &Path, net_profile: Option<&str>) -> anyhow::Result<Self> {
        Self::make(parent, crate::cgroup::DELEGATED_PREFIX, net_profile, true)
    }

    fn make(parent: &Path, prefix: &str, net_profile: Option<&str>, required: bool) -> anyhow::Result<Self> {
        sweep(parent, prefix);
        let root = cgroup2_root()?;
        let relative = parent
            .strip_prefix(&root)
            .with_context(|| {
                format!("{} is not below the cgroup2 root {}", parent.display(), root.display())
            })?
            .join(format!("{prefix}{}", std::process::id()));
        let cgroup = Cgroup::create(&root, &relative)?;
        let mut this = Self { cgroup, entry: false };
        let answer = client::send(&Request::GovernLaunch {
            cgroup: this.cgroup.path.clone(),
            net_profile: net_profile.map(str::to_string),
        })
        .and_then(|response| {
            if response.ok { Ok(()) } else { bail!("{}", response.error.unwrap_or_default()) }
        });
        match (answer, net_profile) {
            (Ok(()), _) => this.entry = true,
            (Err(err), _) if required => bail!(
                "the controller did not govern {} (is sentra.service running?): {err:#}",
                this.cgroup.path.display()
            ),
            (Err(err), Some(profile)) => bail!(
                "the controller did not govern {} with the network policy of profile `{profile}`: {err:#}",
                this.cgroup.path.display()
            ),
            (Err(err), None) => eprintln!(
                "sentra-ctl launch: warning: the controller did not answer ({err:#}); {} is governed as part of {}",
                this.cgroup.path.display(),
                parent.display()
            ),
        }
        Ok(this)
    }

    /// `cgroup.procs` of the launch cgroup.
    #[must_use]
    pub fn procs(&self) -> PathBuf {
        self.cgroup.procs_file()
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.cgroup.path
    }
}

impl Drop for LaunchCgroup {
    fn drop(&mut self) {
        self.cgroup.destroy();
        self.cgroup.keep();
        if self.entry {
            release(&self.cgroup.path, self.cgroup.id);
        }
    }
}

/// Tells the controller a launch cgroup is gone (it refuses while the directory exists).
fn release(path: &Path, id: u64) {
    if path.exists() {
        eprintln!("sentra-ctl launch: {} could not be removed; it stays governed", path.display());
        return;
    }
    match client::send(&Request::ReleaseLaunch { cgroup: path.to_path_buf(), id }) {
        Ok(response) if response.ok => {}
        Ok(response) => {
            eprintln!(
                "sentra-ctl launch: releasing {}: {}",
                path.display(),
                response.error.unwrap_or_default()
            );
        }
        Err(err) => eprintln!("sentra-ctl launch: releasing {}: {err:#}", path.display()),
    }
}

/// Removes the empty launch cgroups of launchers that no longer run (killed before they could clean
/// up), and has the controller forget them.
fn sweep(parent: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) =
            name.to_str().and_then(|n| n.strip_prefix(prefix)).and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        if alive {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        // rmdir fails while processes (or child cgroups) remain: then it stays, governed.
        if std::fs::remove_dir(&path).is_ok() {
            release(&path, meta.ino());
        }
    }
}
