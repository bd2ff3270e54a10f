//! The dynamic loader's variables of an environment about to be handed to a governed program, judged
//! as the `signal` backend's kernel check judges them at each exec (`sentra-ebpf/src/exec/loader.rs`)
//! and as the `lsm` backend's mapping hook would refuse what they name. `run` looks before it
//! starts its command: an environment the kernel would refuse kills every program the agent
//! starts, one record at a time, where one clear refusal up front says what to change.

use std::ffi::OsStr;

use sentra_common::{
    event::{LoaderFault, LoaderVar},
    exec::{
        LOADER_ENV_CHUNK, MAX_ENV_READS, MAX_LOADER_CANDIDATES, MAX_LOADER_ENTRIES, MAX_LOADER_ENTRY,
        MAX_LOADER_VARS,
    },
};

/// One refusal: which variable, which of its entries (empty when the environment as a whole is at
/// fault), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub variable: LoaderVar,
    pub entry: String,
    pub fault: LoaderFault,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let why = match self.fault {
            LoaderFault::NotAllowed => "neither exec.libraries nor an exec rule allows it",
            LoaderFault::Relative => "a relative path (an empty search-path entry is the working directory)",
            LoaderFault::DotDot => "a `..` component",
            LoaderFault::Expansion => "a `$` the loader would expand",
            LoaderFault::TooLong => "longer than the kernel checks",
            LoaderFault::TooMany => "more loader variables or entries than the kernel checks",
            LoaderFault::Unreadable => "unreadable",
        };
        if self.entry.is_empty() {
            write!(f, "{}: {why}", self.variable.as_str())
        } else {
            write!(f, "{}: `{}`: {why}", self.variable.as_str(), self.entry)
        }
    }
}

/// The variable a `NAME` sets, if it is one the kernel checks (their wire names are theirs).
fn variable(name: &[u8]) -> Option<LoaderVar> {
    [LoaderVar::Preload, LoaderVar::Audit, LoaderVar::LibraryPath, LoaderVar::GconvPath]
        .into_iter()
        .find(|var| var.as_str().as_bytes() == name)
}

/// The first refusal the kernel would make of `env` under `paths` (a compiled policy's
/// [`super::exec::CompiledExec::loader_paths`]), or `None` when every program may start with it.
#[must_use]
pub fn refusal<'a>(
    env: impl IntoIterator<Item = (&'a OsStr, &'a OsStr)>,
    paths: &[(String, bool)],
) -> Option<Refusal> {
    use std::os::unix::ffi::OsStrExt as _;
    let whole = |fault| Some(Refusal { variable: LoaderVar::Environment, entry: String::new(), fault });
    let (mut reads, mut candidates) = (0usize, 0usize);
    let mut found: Vec<(LoaderVar, &[u8])> = Vec::new();
    for (name, value) in env {
        let (name, value) = (name.as_bytes(), value.as_bytes());
        // `NAME=VALUE`, read up to LOADER_ENV_CHUNK - 1 bytes (and a NUL) at a time, until a read
        // ends before the buffer does.
        reads += (name.len() + 1 + value.len()) / (LOADER_ENV_CHUNK - 1) + 1;
        if name.starts_with(b"LD") || name.starts_with(b"GC") {
            candidates += 1;
            if candidates > MAX_LOADER_CANDIDATES {
                return whole(LoaderFault::TooMany);
            }
            if let Some(var) = variable(name) {
                if found.len() == MAX_LOADER_VARS {
                    return whole(LoaderFault::TooMany);
                }
                found.push((var, value));
            }
        }
    }
    if reads > MAX_ENV_READS as usize {
        return whole(LoaderFault::TooMany);
    }
    let mut entries = 0;
    for (var, value) in found {
        let dir = matches!(var, LoaderVar::LibraryPath | LoaderVar::GconvPath);
        // Every separator any of them uses: each entry the loader sees, and perhaps more.
        let split: Vec<&[u8]> = value.split(|b| matches!(b, b':' | b';' | b' ' | b'\t')).collect();
        let last = split.len() - 1;
        for (i, entry) in split.into_iter().enumerate() {
            entries += 1;
            let refuse = |fault| {
                Some(Refusal { variable: var, entry: String::from_utf8_lossy(entry).into_owned(), fault })
            };
            if entries > MAX_LOADER_ENTRIES {
                return refuse(LoaderFault::TooMany);
            }
            if entry.len() >= MAX_LOADER_ENTRY {
                return refuse(LoaderFault::TooLong);
            }
            if let Some(fault) = judge(entry, dir, i == 0 && i == last, paths) {
                return refuse(fault);
            }
        }
    }
    None
}

/// Why one entry is refused, if it is.
fn judge(entry: &[u8], dir: bool, whole_value: bool, paths: &[(String, bool)]) -> Option<LoaderFault> {
    if entry.is_empty() {
        // An empty value sets nothing; an empty search-path entry is the working directory.
        return (dir && !whole_value).then_some(LoaderFault::Relative);
    }
    if entry.contains(&b'$') {
        return Some(LoaderFault::Expansion);
    }
    if entry.windows(3).any(|w| w == b"/..") {
        return Some(LoaderFault::DotDot);
    }
    if entry.first() != Some(&b'/') {
        // A library name alone is searched in the library path, which is judged itself.
        return (dir || entry.contains(&b'/')).then_some(LoaderFault::Relative);
    }
    (!allowed(entry, dir, paths)).then_some(LoaderFault::NotAllowed)
}

/// The kernel's lookup: the longest stored prefix of the entry (a directory's with its `/`, a
/// file's with its NUL) decides; nothing stored is a refusal.
fn allowed(entry: &[u8], dir: bool, paths: &[(String, bool)]) -> bool {
    let mut key = entry.to_vec();
    if dir {
        key.push(b'/');
    }
    key.push(0);
    paths
        .iter()
        .filter(|(stored, _)| {
            let stored = stored.as_bytes();
            if stored.ends_with(b"/") {
                key.starts_with(stored)
            } else {
                key.strip_suffix(&[0]) == Some(stored)
            }
        })
        .max_by_key(|(stored, _)| stored.len())
        .is_some_and(|&(_, allow)| allow)
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use sentra_common::event::{LoaderFault, LoaderVar};

    use super::refusal;

    fn paths() -> Vec<(String, bool)> {
        [("/usr/lib/", true), ("/usr/lib/evil/", false), ("/opt/agent/bin/tool", true)]
            .iter()
            .map(|&(p, a)| (p.to_string(), a))
            .collect()
    }

    /// An environment, and what is expected of it.
    type Case<'a> = (&'a [(&'a str, &'a str)], LoaderVar, &'a str, LoaderFault);

    fn judge(env: &[(&str, &str)]) -> Option<(LoaderVar, String, LoaderFault)> {
        refusal(env.iter().map(|(n, v)| (OsStr::new(n), OsStr::new(v))), &paths())
            .map(|r| (r.variable, r.entry, r.fault))
    }

    #[test]
    fn the_environment_is_judged_as_the_kernel_judges_it() {
        let ok: &[&[(&str, &str)]] = &[
            &[("PATH", "/usr/bin"), ("HOME", "/root")],
            &[("LD_PRELOAD", "/usr/lib/libm.so.6 libc.so.6")],
            &[("LD_PRELOAD", "")],
            &[("LD_LIBRARY_PATH", "")],
            &[("LD_LIBRARY_PATH", "/usr/lib:/usr/lib/x86_64-linux-gnu")],
            &[("LD_AUDIT", "/opt/agent/bin/tool")],
            &[("LD_PRELOADX", "/tmp/x.so"), ("XLD_PRELOAD", "/tmp/x.so"), ("LDFLAGS", "-L/tmp")],
        ];
        for env in ok {
            assert_eq!(judge(env), None, "{env:?}");
        }
        let refused: &[Case<'_>] = &[
            (&[("LD_PRELOAD", "/tmp/x.so")], LoaderVar::Preload, "/tmp/x.so", LoaderFault::NotAllowed),
            (
                &[("LD_PRELOAD", "libm.so.6:/usr/lib/evil/x.so")],
                LoaderVar::Preload,
                "/usr/lib/evil/x.so",
                LoaderFault::NotAllowed,
            ),
            (&[("LD_AUDIT", "$ORIGIN/x.so")], LoaderVar::Audit, "$ORIGIN/x.so", LoaderFault::Expansion),
            (&[("LD_LIBRARY_PATH", "/usr/lib::/usr/lib")], LoaderVar::LibraryPath, "", LoaderFault::Relative),
            (&[("LD_LIBRARY_PATH", "lib")], LoaderVar::LibraryPath, "lib", LoaderFault::Relative),
            (
                &[("LD_LIBRARY_PATH", "/usr/lib/../../tmp")],
                LoaderVar::LibraryPath,
                "/usr/lib/../../tmp",
                LoaderFault::DotDot,
            ),
            (&[("GCONV_PATH", "/tmp/gconv")], LoaderVar::GconvPath, "/tmp/gconv", LoaderFault::NotAllowed),
            (&[("LD_PRELOAD", "./x.so")], LoaderVar::Preload, "./x.so", LoaderFault::Relative),
            (&[("LD_PRELOAD", "a b c d e f g h i")], LoaderVar::Preload, "i", LoaderFault::TooMany),
        ];
        for (env, var, entry, fault) in refused {
            assert_eq!(judge(env), Some((*var, (*entry).to_string(), *fault)), "{env:?}");
        }
        let long = format!("/usr/lib/{}", "a".repeat(250));
        assert_eq!(judge(&[("LD_PRELOAD", &long)]).map(|r| r.2), Some(LoaderFault::TooLong));
        let many: Vec<(String, String)> = (0..9).map(|i| (format!("LDX{i}"), String::new())).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        assert_eq!(judge(&many), Some((LoaderVar::Environment, String::new(), LoaderFault::TooMany)));
    }
}
