//! Private folders and files for tokens, the queue and the log: folders `0700` and files
//! `0600` whatever the umask; a folder that another user owns, or that group or others may
//! write, is refused with a line saying how to fix it (as ssh refuses a loose `~/.ssh`);
//! token, lock and temporary files are opened without following a symlink (`O_NOFOLLOW`).
//!
//! Our own folders (named after the program: tokens, queue, state) are narrowed to `0700`
//! when others may read them. A folder the user named (the log's, which may be the home
//! folder or a folder shared with others) is only created, never changed: the folders we
//! create for it are `0700`, one that was there keeps its mode.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, Result};

/// Mode of a private folder: only its owner may list or enter it.
pub const DIR_MODE: u32 = 0o700;
/// Mode of a private file: only its owner may read it.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and its parents) `0700`, or checks the one there: it must belong to us
/// and not be writable by group or others; a folder others may only read is narrowed to
/// `0700`. `what` names it in errors ("token folder", "queue folder", "log folder").
pub fn ensure_dir(dir: &Path, what: &str) -> Result<()> {
    let error =
        |e: io::Error| Error::io(format!("cannot create the {what} {}: {e}", dir.display()));
    if !dir.exists() {
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(error)?;
        // The umask may have taken bits we need (or, at 0, left none away): set it exactly.
        fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)).map_err(error)?;
    }
    check_dir(dir, what)
}

/// The metadata of `dir`, which must be a folder (symlinks followed).
fn folder_metadata(dir: &Path, what: &str) -> Result<fs::Metadata> {
    let meta = fs::metadata(dir)
        .map_err(|e| Error::io(format!("cannot read the {what} {}: {e}", dir.display())))?;
    if !meta.is_dir() {
        return Err(Error::io(format!(
            "the {what} {} is not a folder: move it away",
            dir.display()
        )));
    }
    Ok(meta)
}

/// Refuses a folder another user owns or that group or others can write; narrows one that
/// group or others can only read or enter.
pub fn check_dir(dir: &Path, what: &str) -> Result<()> {
    let meta = folder_metadata(dir, what)?;
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(Error::io(format!(
            "the {what} {} belongs to user {} (not to you, user {me}), so it is not used: \
             fix it with `chown {me} {}` or remove it",
            dir.display(),
            meta.uid(),
            dir.display()
        )));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(Error::io(format!(
            "the {what} {} may be written by others (mode {mode:04o}), so it is not used: \
             fix it with `chmod 700 {}`",
            dir.display(),
            dir.display()
        )));
    }
    if mode & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)).map_err(|e| {
            Error::io(format!(
                "cannot narrow the {what} {} to 0700: {e}",
                dir.display()
            ))
        })?;
    }
    Ok(())
}

/// Creates the folders of `dir` that are missing, each `0700` whatever the umask, and checks
/// `dir` as [`check_dir`] does, except that a folder that was there is never changed: a
/// home folder or a folder shared with others (read-only for them) keeps its mode. For a
/// folder the user named (`logfile`'s).
pub fn ensure_named_dir(dir: &Path, what: &str) -> Result<()> {
    let error =
        |e: io::Error| Error::io(format!("cannot create the {what} {}: {e}", dir.display()));
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && fs::symlink_metadata(d).is_err())
        .collect();
    for folder in missing.into_iter().rev() {
        match DirBuilder::new().mode(DIR_MODE).create(folder) {
            // Ours: set exactly, the umask may have taken bits we need or left others.
            Ok(()) => {
                fs::set_permissions(folder, fs::Permissions::from_mode(DIR_MODE)).map_err(error)?;
            }
            // Made by another process at the same moment: checked below like any other.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(error(e)),
        }
    }
    check_named_dir(dir, what)
}

/// Refuses a folder the user named when another user owns it or when group or others may
/// write it, with the fix; changes nothing. A sticky folder that everyone may write (`/tmp`)
/// is no place for a private file: the fix is another folder, not a `chmod` of a shared one.
pub fn check_named_dir(dir: &Path, what: &str) -> Result<()> {
    let meta = folder_metadata(dir, what)?;
    let me = rustix::process::geteuid().as_raw();
    let mode = meta.permissions().mode() & 0o7777;
    let fix = if meta.uid() != me {
        format!("belongs to user {} (not to you, user {me})", meta.uid())
    } else if mode & 0o022 != 0 && mode & 0o1000 != 0 {
        format!("is shared with other users (mode {mode:04o})")
    } else if mode & 0o022 != 0 {
        return Err(Error::io(format!(
            "the {what} {} may be written by others (mode {mode:04o}), so it is not used: \
             fix it with `chmod go-w {}`",
            dir.display(),
            dir.display()
        )));
    } else {
        return Ok(());
    };
    Err(Error::io(format!(
        "the {what} {} {fix}, so it is not used: choose a folder of your own",
        dir.display()
    )))
}

/// `O_NOFOLLOW`: opening a symlink fails (`ELOOP`) instead of opening its target.
#[must_use]
pub fn nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits().cast_signed()
}

/// Opens `path` for reading without following a symlink.
pub fn open_read(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(nofollow())
        .open(path)
}

/// Reads `path` whole without following a symlink; a file that group or others may read is
/// put back to `0600` through the open file.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut file = open_read(path)?;
    if file.metadata()?.permissions().mode() & 0o077 != 0 {
        let _ = file.set_permissions(fs::Permissions::from_mode(FILE_MODE));
    }
    let mut data = Vec::new();
    file.read_to_end(&mut data)?;
    Ok(data)
}

/// Opens (creating `0600` when missing) `path` without following a symlink; `options`
/// says read/write/append/create. The mode is set on the open file, whatever the umask.
pub fn open(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    let file = options
        .mode(FILE_MODE)
        .custom_flags(nofollow())
        .open(path)?;
    let meta = file.metadata()?;
    if meta.permissions().mode() & 0o777 != FILE_MODE {
        file.set_permissions(fs::Permissions::from_mode(FILE_MODE))?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn folders_0700_and_files_0600_whatever_the_umask_and_symlinks_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        ensure_dir(&dir, "queue folder").unwrap();
        assert_eq!(mode(&dir), 0o700);
        let file = dir.join("f");
        open(&file, OpenOptions::new().write(true).create(true)).unwrap();
        assert_eq!(mode(&file), 0o600);
        let target = tmp.path().join("target");
        fs::write(&target, "x").unwrap();
        std::os::unix::fs::symlink(&target, dir.join("link")).unwrap();
        assert!(
            open(
                &dir.join("link"),
                OpenOptions::new().write(true).create(true)
            )
            .is_err()
        );
        assert!(read(&dir.join("link")).is_err());
    }

    #[test]
    fn a_named_folder_is_created_private_but_one_that_was_there_keeps_its_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        fs::create_dir(&home).unwrap();
        fs::set_permissions(&home, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_named_dir(&home.join("a/b"), "log folder").unwrap();
        assert_eq!(mode(&home), 0o755);
        assert_eq!(mode(&home.join("a")), 0o700);
        assert_eq!(mode(&home.join("a/b")), 0o700);
        fs::set_permissions(&home, fs::Permissions::from_mode(0o775)).unwrap();
        let e = ensure_named_dir(&home, "log folder")
            .unwrap_err()
            .to_string();
        assert!(e.contains("chmod go-w"), "{e}");
        assert_eq!(mode(&home), 0o775);
        fs::set_permissions(&home, fs::Permissions::from_mode(0o1777)).unwrap();
        let e = ensure_named_dir(&home, "log folder")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("chmod") && e.contains("shared"), "{e}");
        assert_eq!(
            fs::metadata(&home).unwrap().permissions().mode() & 0o7777,
            0o1777
        );
    }

    #[test]
    fn a_folder_others_may_write_is_refused_with_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("q");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let e = ensure_dir(&dir, "queue folder").unwrap_err().to_string();
        assert!(e.contains("chmod 700") && e.contains("queue folder"), "{e}");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_dir(&dir, "queue folder").unwrap();
        assert_eq!(mode(&dir), 0o700);
    }
}
