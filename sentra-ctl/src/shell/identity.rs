//! What a program file outside the system directories really is. A hard link to a system program,
//! or a byte-for-byte copy of one, is that program whatever it is called: `cp /usr/bin/python3 ./ls`
//! must not turn python3 into an `ls` for the name rules (the only rules a policy without an `exec:`
//! section has). Programs in the system directories are judged by their names, as packages install
//! them.

use std::{
    cell::OnceCell,
    collections::HashMap,
    fs,
    io::Read as _,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

/// Where system programs live: the standard `PATH` of a Debian root shell.
pub const SYSTEM_DIRS: [&str; 6] =
    ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/// Files larger than this are not compared byte for byte (no program in a system directory is).
const MAX_COMPARED: u64 = 1 << 30;

/// A system program file and every name it has in the system directories (its own, hard links,
/// symlinks to it).
#[derive(Debug, Clone)]
pub struct Program {
    pub path: PathBuf,
    pub names: Vec<String>,
}

/// How a file is a system program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kinship {
    HardLink,
    Copy,
}

impl Kinship {
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::HardLink => "a hard link to",
            Self::Copy => "a copy of",
        }
    }
}

/// The system programs, scanned once, on the first question that needs them (most lines only run
/// programs that are in a system directory, and never pay for the scan).
#[derive(Debug, Default)]
pub struct SystemPrograms {
    dirs: OnceCell<Vec<PathBuf>>,
    index: OnceCell<Index>,
}

#[derive(Debug, Default)]
struct Index {
    /// By (device, inode).
    files: HashMap<(u64, u64), Program>,
    /// The (device, inode) of the files of each size.
    by_size: HashMap<u64, Vec<(u64, u64)>>,
}

impl SystemPrograms {
    /// The system directories, canonical and without repeats (`/bin` is `/usr/bin` on merged-usr
    /// systems).
    fn dirs(&self) -> &[PathBuf] {
        self.dirs.get_or_init(|| {
            let mut dirs: Vec<PathBuf> = Vec::new();
            for dir in SYSTEM_DIRS {
                if let Ok(real) = fs::canonicalize(dir)
                    && !dirs.contains(&real)
                {
                    dirs.push(real);
                }
            }
            dirs
        })
    }

    /// Whether `real` (a canonical path) is directly in a system directory.
    #[must_use]
    pub fn is_system(&self, real: &Path) -> bool {
        real.parent().is_some_and(|parent| self.dirs().iter().any(|dir| dir == parent))
    }

    fn index(&self) -> &Index {
        self.index.get_or_init(|| {
            let mut index = Index::default();
            for dir in self.dirs() {
                let Ok(entries) = fs::read_dir(dir) else { continue };
                for entry in entries.flatten() {
                    let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
                    let path = entry.path();
                    // Follows symlinks: a link names the file it leads to.
                    let Ok(meta) = fs::metadata(&path) else { continue };
                    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
                        continue;
                    }
                    let key = (meta.dev(), meta.ino());
                    let program = index.files.entry(key).or_insert_with(|| {
                        index.by_size.entry(meta.len()).or_default().push(key);
                        let real = if entry.file_type().is_ok_and(|t| t.is_symlink()) {
                            fs::canonicalize(&path).unwrap_or_else(|_| path.clone())
                        } else {
                            path.clone()
                        };
                        Program { path: real, names: Vec::new() }
                    });
                    if !program.names.contains(&name) {
                        program.names.push(name);
                    }
                }
            }
            index
        })
    }

    /// The system program `real` (canonical, outside the system directories) is a hard link to or a
    /// copy of, if any.
    #[must_use]
    pub fn identify(&self, real: &Path) -> Option<(Kinship, &Program)> {
        let meta = fs::metadata(real).ok().filter(fs::Metadata::is_file)?;
        let index = self.index();
        if let Some(program) = index.files.get(&(meta.dev(), meta.ino())) {
            return Some((Kinship::HardLink, program));
        }
        if meta.len() > MAX_COMPARED {
            return None;
        }
        index
            .by_size
            .get(&meta.len())?
            .iter()
            .filter_map(|key| index.files.get(key))
            .find(|program| same_content(real, &program.path))
            .map(|program| (Kinship::Copy, program))
    }
}

/// Whether two files hold the same bytes (an unreadable file holds nothing known: `false`).
fn same_content(a: &Path, b: &Path) -> bool {
    let (Ok(mut a), Ok(mut b)) = (fs::File::open(a), fs::File::open(b)) else { return false };
    let mut left = vec![0u8; 64 * 1024];
    let mut right = vec![0u8; 64 * 1024];
    loop {
        let Ok(n) = read_full(&mut a, &mut left) else { return false };
        let Ok(m) = read_full(&mut b, &mut right) else { return false };
        if n != m || left[..n] != right[..m] {
            return false;
        }
        if n == 0 {
            return true;
        }
    }
}

/// Reads until `buf` is full or the file ends.
fn read_full(file: &mut fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::{Kinship, SystemPrograms};

    #[test]
    fn copies_and_hard_links_of_system_programs_are_found() {
        let programs = SystemPrograms::default();
        let id = std::fs::canonicalize("/usr/bin/id").expect("/usr/bin/id");
        assert!(programs.is_system(&id));
        let dir = tempfile::tempdir().expect("tempdir");
        let copy = dir.path().join("ls");
        std::fs::copy(&id, &copy).expect("copy");
        let copy = std::fs::canonicalize(copy).expect("canonical");
        assert!(!programs.is_system(&copy));
        let (kinship, program) = programs.identify(&copy).expect("a copy of id");
        assert_eq!(kinship, Kinship::Copy);
        assert!(program.names.iter().any(|n| n == "id"), "{program:?}");
        // One byte more is another program.
        let mut bytes = std::fs::read(&id).expect("read");
        bytes.push(0);
        let other = dir.path().join("other");
        std::fs::write(&other, bytes).expect("write");
        assert!(programs.identify(&other).is_none());
    }

    #[test]
    fn a_hard_link_is_the_program_it_links() {
        let programs = SystemPrograms::default();
        let id = std::fs::canonicalize("/usr/bin/id").expect("/usr/bin/id");
        // A hard link needs the program's own filesystem: /var/tmp is on the root filesystem on the
        // machines this runs on, and a failure here says so rather than passing.
        let dir = tempfile::tempdir_in("/var/tmp").expect("tempdir in /var/tmp");
        let link = dir.path().join("ls");
        std::fs::hard_link(&id, &link).expect("hard link /usr/bin/id into /var/tmp (same filesystem)");
        let (kinship, program) = programs.identify(&link).expect("a hard link to id");
        assert_eq!(kinship, Kinship::HardLink);
        assert!(program.names.iter().any(|n| n == "id"), "{program:?}");
    }
}
