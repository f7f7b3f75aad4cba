//! Where vault files live and how they are created, opened and removed.
//!
//! ```text
//! <data_dir>/vault/<h[0..2]>/<h[2..4]>/<h>/rec-<file id>.vcv   call audio
//!                                         /txt-<file id>.vcv   transcript
//!                                         /prm-<name>.vcv      cached personalised prompt
//! ```
//! `h` is the subject's keyed hash in hex (按用户ID分片: one directory per data subject, two
//! levels of 256 shards above it), so erasing a subject removes one directory, and no path
//! reveals a phone number. Directories are 0700, files 0600, created exclusively (never
//! overwritten); a new file's directory entry is made durable when it is finished.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use super::format::ContentType;
use crate::ids::SubjectKey;

/// Directory under the data directory that holds all vault files.
pub const VAULT_DIR: &str = "vault";
/// File name extension of vault files.
pub const EXTENSION: &str = "vcv";

/// The subject's directory, relative to the data directory.
pub fn subject_dir(subject: &SubjectKey) -> PathBuf {
    let h = subject.to_hex();
    Path::new(VAULT_DIR).join(&h[0..2]).join(&h[2..4]).join(&h)
}

/// A file's path relative to the data directory.
pub fn file_path(subject: &SubjectKey, content_type: ContentType, name: &str) -> PathBuf {
    subject_dir(subject).join(format!("{}-{name}.{EXTENSION}", content_type.file_prefix()))
}

/// Whether a stored relative path is one the vault could have made (no `..`, absolute parts or
/// other directories), so a modified database row cannot point the reader elsewhere.
pub fn is_vault_path(rel: &Path) -> bool {
    let mut comps = rel.components();
    matches!(comps.next(), Some(Component::Normal(c)) if c == VAULT_DIR)
        && rel.components().all(|c| matches!(c, Component::Normal(_)))
        && rel.components().count() == 5
        && rel.extension().is_some_and(|e| e == EXTENSION)
}

/// Creates a new file (mode 0600, failing if it exists) and its private directories.
pub fn create_new(abs: &Path) -> io::Result<File> {
    if let Some(dir) = abs.parent() {
        crate::fs::ensure_private_dir(dir)?;
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(abs)
}

/// Makes a finished file durable: its data, then its directory entry.
pub fn sync_file(file: &File, abs: &Path) -> io::Result<()> {
    file.sync_all()?;
    if let Some(dir) = abs.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Removes every file in a subject's directory and the directory itself; returns how many
/// files were removed. A missing directory is not an error (already removed, or never made).
pub fn remove_subject_dir(data_dir: &Path, subject: &SubjectKey) -> io::Result<u64> {
    let dir = data_dir.join(subject_dir(subject));
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut n = 0;
    for entry in rd {
        let entry = entry?;
        let p = entry.path();
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(&p)?;
        } else {
            remove_file(&p)?;
            n += 1;
        }
    }
    std::fs::remove_dir(&dir)?;
    if let Some(parent) = dir.parent() {
        File::open(parent)?.sync_all()?;
    }
    Ok(n)
}

/// Files currently in a subject's directory.
pub fn count_subject_files(data_dir: &Path, subject: &SubjectKey) -> io::Result<u64> {
    match std::fs::read_dir(data_dir.join(subject_dir(subject))) {
        Ok(rd) => {
            let mut n = 0;
            for e in rd {
                if e?.file_type()?.is_file() {
                    n += 1;
                }
            }
            Ok(n)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// Removes one file; a missing file is not an error.
pub fn remove_file(abs: &Path) -> io::Result<bool> {
    match std::fs::remove_file(abs) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_sharded_by_subject_hash() {
        let s = SubjectKey([0xab; 32]);
        let p = file_path(&s, ContentType::CallAudio, "00ff");
        let text = p.to_string_lossy().to_string();
        assert!(text.starts_with(&format!("vault/ab/ab/{}/rec-00ff.vcv", "ab".repeat(32))[..12]));
        assert!(is_vault_path(&p));
        assert!(!is_vault_path(Path::new("vault/../../etc/passwd")));
        assert!(!is_vault_path(Path::new("/etc/passwd")));
        assert!(!is_vault_path(Path::new("vault/ab/ab/x/y/z.vcv")));
    }

    #[test]
    fn files_are_private_exclusive_and_removed_with_their_subject() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let s = SubjectKey([1; 32]);
        let abs = d.path().join(file_path(&s, ContentType::Transcript, "aa"));
        let f = create_new(&abs).unwrap();
        sync_file(&f, &abs).unwrap();
        assert_eq!(
            std::fs::metadata(&abs).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(create_new(&abs).is_err());
        assert_eq!(count_subject_files(d.path(), &s).unwrap(), 1);
        assert_eq!(remove_subject_dir(d.path(), &s).unwrap(), 1);
        assert!(!abs.exists());
        assert_eq!(remove_subject_dir(d.path(), &s).unwrap(), 0);
    }
}
