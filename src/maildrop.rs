//! The maildrop: how a user without an account of their own sends through the host's
//! system account without ever seeing its config or tokens, as Postfix's `postdrop` and
//! `pickup` do, with no setuid or setgid program.
//!
//! **The drop** (any user, `sendmail` in system mode): the message and the sendmail
//! arguments that shape it go into `/var/spool/oauth2-sendmail/maildrop/` (root's, mode
//! `1733`: anyone may create a file, nobody but root may list the folder, and the sticky
//! bit keeps each user's files theirs). The file is written `0600` under a temporary name
//! that starts with a dot, fsynced, then renamed to `UID.TIME.PID.RANDOM`; the program
//! exits 0. The system's path unit starts the flusher when a name without a dot appears.
//!
//! **The pickup** (root, `--system -q` and `--system queue flush`), in two stages, as
//! Postfix's `pickup` copies into its incoming queue. First, before the config is read,
//! each entry is opened without following a link and without blocking, and taken only if
//! it is a regular file with one link, owned by the uid its name and its first line claim,
//! no larger than [`MAX_MESSAGE`], complete (the first line gives the size), and unchanged
//! while it was read; root writes its own copy to `incoming/` (fsynced) and only then
//! removes the entry. An entry that fails a check is removed and logged. So the maildrop
//! empties even while the system config is broken. Then each copy is resolved with the
//! system config: only the recipients, `-t`, `-f`, `-F`, `-a`, the DSN and `-o`/`-B`
//! options are taken from it (never a config file, a log, a verbosity or a mode), it goes
//! into the system queue (fsynced) with the submitting user's login name, and the copy is
//! removed. A message the config refuses (no recipient, a bad address) is moved to `held/`,
//! root's, logged, and a notice goes to the submitter's alias.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use clap::Parser;
use serde::{Deserialize, Serialize};

use crate::cli::SendArgs;
use crate::clock;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::journal::Journal;
use crate::message::Message;
use crate::paths::system;
use crate::plan;
use crate::queue::{self, Queue};

/// Largest message a user may drop (64 MiB): above what Exchange Online (35 MB with its
/// encoding) or Gmail (25 MB) accept over SMTP, and small enough that a user cannot make
/// root read an arbitrary amount in one entry.
pub const MAX_MESSAGE: u64 = 64 * 1024 * 1024;
/// Longest first line (the arguments): sendmail arguments, not a message.
const MAX_HEADER: usize = 64 * 1024;
/// Entries looked at in one pickup: a flood of files is taken in bounded runs (the path
/// unit starts the next run while entries remain).
pub const MAX_PER_RUN: usize = 1000;
/// A temporary file older than this (a day) was left by a writer that died: removed.
const STALE_TEMP_SECS: u64 = 86_400;
/// A complete temporary file older than this (10 minutes) lost its rename in a crash (its
/// writer takes milliseconds): taken like an entry.
const ORPHAN_SECS: u64 = 600;
/// The maildrop's mode: anyone may create and enter, nobody but root may list, and the
/// sticky bit keeps a file removable and renameable only by its owner (and root).
pub const MAILDROP_MODE: u32 = 0o1733;
/// Format of the first line.
const VERSION: u32 = 1;

/// The first line of an entry: who wrote it, how the message is to be sent, its size.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    version: u32,
    uid: u32,
    args: Vec<String>,
    size: u64,
}

/// Drops the message (stdin) for the system flusher: the caller is not root and has no
/// config of their own. Exit 0 once the entry is on disk.
pub fn drop_message(args: &SendArgs) -> Result<()> {
    if args.recipients.is_empty() && !args.read_recipients {
        return Err(Error::data(
            "no recipient: name one, or pass -t to read them from the message",
        ));
    }
    let mut raw = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_MESSAGE + 1)
        .read_to_end(&mut raw)
        .map_err(|e| Error::io(format!("cannot read the message on stdin: {e}")))?;
    if raw.len() as u64 > MAX_MESSAGE {
        return Err(Error::data(format!(
            "the message is larger than the {} MiB the host's maildrop takes",
            MAX_MESSAGE / 1024 / 1024
        )));
    }
    // Refused here what the flusher would refuse: empty input, a NUL byte.
    if raw.is_empty() {
        return Err(Error::data("empty message on stdin; nothing was sent"));
    }
    if let Some(pos) = raw.iter().position(|&b| b == 0) {
        return Err(Error::data(format!(
            "the message holds a NUL byte (at byte {pos}); nothing was sent"
        )));
    }
    write_entry(Path::new(system::MAILDROP), &drop_args(args), &raw)
}

/// The arguments that shape the message, in a spelling `SendArgs` parses back.
fn drop_args(args: &SendArgs) -> Vec<String> {
    let mut out = Vec::new();
    if args.read_recipients {
        out.push("-t".to_owned());
    }
    if args.read_envelope_from {
        out.push("--read-envelope-from".to_owned());
    }
    let pairs = [
        ("-f", &args.from),
        ("-F", &args.full_name),
        ("-a", &args.account),
        ("-N", &args.dsn_notify),
        ("-R", &args.dsn_return),
        ("-V", &args.dsn_envid),
        ("-B", &args.body_type),
    ];
    for (flag, value) in pairs {
        if let Some(v) = value {
            out.extend([flag.to_owned(), v.clone()]);
        }
    }
    for option in &args.options {
        out.extend(["-o".to_owned(), option.clone()]);
    }
    out.push("--".to_owned());
    out.extend(args.recipients.iter().cloned());
    out
}

/// Writes one entry: a dotted temporary name, fsync, rename (as Postfix's `postdrop` does).
/// A user cannot fsync the folder (it is not readable): if a crash loses the rename, the
/// fsynced temporary file is still complete, and the flusher takes it after
/// [`ORPHAN_SECS`].
fn write_entry(dir: &Path, args: &[String], message: &[u8]) -> Result<()> {
    let uid = rustix::process::geteuid().as_raw();
    let header = Header {
        version: VERSION,
        uid,
        args: args.to_vec(),
        size: message.len() as u64,
    };
    let mut first = serde_json::to_vec(&header).map_err(|e| Error::internal(e.to_string()))?;
    if first.len() >= MAX_HEADER {
        return Err(Error::usage(
            "the command line is too long for the maildrop",
        ));
    }
    first.push(b'\n');
    let name = entry_name(uid);
    let tmp = dir.join(format!(".{name}.tmp"));
    let error = |e: std::io::Error| {
        Error::io(format!(
            "cannot write to the host's maildrop {}: {e} (is the -mta package's spool in place?)",
            dir.display()
        ))
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(crate::private_dir::nofollow())
        .open(&tmp)
        .map_err(error)?;
    let written = file
        .write_all(&first)
        .and_then(|()| file.write_all(message))
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&tmp, dir.join(&name)));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(error(e));
    }
    Ok(())
}

/// `UID.SECONDS.NANOS.PID.RANDOM`: unique, and the owner's uid first (checked at pickup).
fn entry_name(uid: u32) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut random = [0u8; 6];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random);
    let random = u64::from_le_bytes([
        random[0], random[1], random[2], random[3], random[4], random[5], 0, 0,
    ]);
    format!(
        "{uid}.{}.{:09}.{}.{random:012x}",
        now.as_secs(),
        now.subsec_nanos(),
        std::process::id()
    )
}

/// Root's side, first stage (no config needed): each maildrop entry that passes the checks
/// is copied to `incoming/` (root's, fsynced) and removed from the maildrop; one that fails
/// them is removed and logged. So the maildrop empties even while the system config is
/// broken, and the path unit never fires on the same entry twice. Holds the queue's flush
/// lock, so two flushers never take the same entry.
pub fn intake() -> Result<()> {
    let dir = Path::new(system::MAILDROP);
    ensure_spool()?;
    // Before the config is read: the log in its default place.
    let journal = Journal::to(crate::paths::log_file());
    let queue = Queue::open()?;
    let _lock = queue.lock_flush()?;
    let entries = fs::read_dir(dir)
        .map_err(|e| Error::io(format!("cannot list the maildrop {}: {e}", dir.display())))?;
    let now = clock::now();
    let mut looked_at = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let path = dir.join(&name);
        if looked_at == MAX_PER_RUN {
            break;
        }
        let taken = if name.as_encoded_bytes().starts_with(b".") {
            match orphan(&path, &name, now) {
                Some(taken) => Ok(taken),
                None => continue,
            }
        } else {
            take(&path, &name)
        };
        looked_at += 1;
        match taken {
            Ok((file, submission)) => {
                let real = name.to_string_lossy();
                let real = real.trim_start_matches('.').trim_end_matches(".tmp");
                submission.store(&Path::new(system::INCOMING).join(real))?;
                remove_same(&path, &file);
            }
            Err(why) => {
                journal.event(&format!(
                    "maildrop={} result=refused reason={why:?}",
                    name.to_string_lossy()
                ));
                discard(&path, &name);
            }
        }
    }
    Ok(())
}

/// Root's side, second stage (after [`intake`]): each message in `incoming/` is resolved
/// with the system config and put in the system queue; one the config refuses is held,
/// with a notice.
pub fn pickup(config: &Config, journal: &Journal) -> Result<()> {
    let queue = Queue::open()?;
    let _lock = queue.lock_flush()?;
    let dir = Path::new(system::INCOMING);
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    let mut told = std::collections::HashSet::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.as_encoded_bytes().starts_with(b".") {
            continue;
        }
        let path = dir.join(&name);
        let submission = match Submission::load(&path) {
            Ok(s) => s,
            Err(e) => {
                journal.event(&format!(
                    "incoming={} result=unreadable error={:?}",
                    name.to_string_lossy(),
                    e.to_string()
                ));
                continue;
            }
        };
        match admit(config, &queue, &submission, journal) {
            Ok(()) => {
                let _ = fs::remove_file(&path);
            }
            // The system queue cannot be written (a full disk): the message stays in
            // incoming/ for the next run, and this one stops with the error.
            Err(e) if e.is_local_io() => return Err(e),
            Err(e) => {
                journal.event(&format!(
                    "maildrop={} submitter={} result=held error={:?}",
                    name.to_string_lossy(),
                    submission.submitter,
                    e.to_string()
                ));
                let _ = fs::rename(&path, held_dir().join(&name));
                // One notice per user and run: a flood of bad messages is not a flood of
                // notices to root.
                if told.insert(submission.uid) {
                    crate::notice::held(
                        config,
                        &queue,
                        journal,
                        &submission.submitter,
                        &name.to_string_lossy(),
                        &e.to_string(),
                    );
                }
            }
        }
    }
    Ok(())
}

/// A message that passed the checks: who sent it (the uid from the file's owner, their
/// login name), the arguments that shape it, the message.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Submission {
    uid: u32,
    submitter: String,
    args: Vec<String>,
    #[serde(skip)]
    message: Vec<u8>,
}

impl Submission {
    /// Writes the copy in `incoming/` (root's): a JSON line, the message; temporary name,
    /// fsync, rename, folder fsync.
    fn store(&self, path: &Path) -> Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        crate::private_dir::ensure_dir(dir, "incoming folder")?;
        let mut line = serde_json::to_vec(self).map_err(|e| Error::internal(e.to_string()))?;
        line.push(b'\n');
        let tmp = dir.join(format!(
            ".{}.tmp",
            path.file_name().unwrap_or_default().to_string_lossy()
        ));
        let error = |e: std::io::Error| Error::io(format!("cannot write {}: {e}", path.display()));
        let mut file = crate::private_dir::open(
            &tmp,
            OpenOptions::new().write(true).create(true).truncate(true),
        )
        .map_err(error)?;
        file.write_all(&line)
            .and_then(|()| file.write_all(&self.message))
            .and_then(|()| file.sync_all())
            .and_then(|()| fs::rename(&tmp, path))
            .and_then(|()| File::open(dir)?.sync_all())
            .map_err(error)
    }

    /// Reads a copy that `store` wrote.
    fn load(path: &Path) -> Result<Submission> {
        let mut bytes = crate::private_dir::read(path)
            .map_err(|e| Error::io(format!("cannot read {}: {e}", path.display())))?;
        let end = bytes
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| Error::internal(format!("{}: no first line", path.display())))?;
        let mut submission: Submission = serde_json::from_slice(&bytes[..end])
            .map_err(|e| Error::internal(format!("{}: {e}", path.display())))?;
        submission.message = bytes.split_off(end + 1);
        Ok(submission)
    }
}

fn held_dir() -> &'static Path {
    let held = Path::new(system::HELD);
    let _ = fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(held);
    held
}

/// Opens and checks one entry; `Err` says why it is refused.
fn take(path: &Path, name: &std::ffi::OsStr) -> std::result::Result<(File, Submission), String> {
    let claimed: u32 = name
        .to_str()
        .and_then(|n| n.split('.').next())
        .and_then(|u| u.parse().ok())
        .ok_or("not a maildrop name")?;
    let flags = crate::private_dir::nofollow()
        | rustix::fs::OFlags::NONBLOCK.bits().cast_signed()
        | rustix::fs::OFlags::NOCTTY.bits().cast_signed();
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(code) if code == rustix::io::Errno::LOOP.raw_os_error() => {
                "a symbolic link".to_owned()
            }
            _ => format!("cannot open: {e}"),
        })?;
    let before = file.metadata().map_err(|e| e.to_string())?;
    if !before.file_type().is_file() {
        return Err("not a regular file".into());
    }
    if before.nlink() != 1 {
        return Err(format!("{} hard links (one expected)", before.nlink()));
    }
    if before.uid() != claimed {
        return Err(format!(
            "owned by uid {} but named for uid {claimed}",
            before.uid()
        ));
    }
    let limit = MAX_MESSAGE + MAX_HEADER as u64;
    if before.len() > limit {
        return Err(format!(
            "{} bytes, more than the maildrop takes",
            before.len()
        ));
    }
    let mut bytes = Vec::new();
    (&mut file)
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {e}"))?;
    let after = file.metadata().map_err(|e| e.to_string())?;
    if after.len() != before.len()
        || after.mtime() != before.mtime()
        || after.mtime_nsec() != before.mtime_nsec()
        || bytes.len() as u64 != after.len()
    {
        return Err("still being written".into());
    }
    let end = bytes
        .iter()
        .take(MAX_HEADER)
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let header: Header =
        serde_json::from_slice(&bytes[..end]).map_err(|e| format!("bad header line: {e}"))?;
    if header.version != VERSION {
        return Err(format!("unknown format version {}", header.version));
    }
    if header.uid != claimed {
        return Err(format!(
            "says uid {} but is named for uid {claimed}",
            header.uid
        ));
    }
    let message = bytes.split_off(end + 1);
    if message.len() as u64 != header.size {
        return Err(format!(
            "incomplete: {} of {} bytes",
            message.len(),
            header.size
        ));
    }
    Ok((
        file,
        Submission {
            uid: claimed,
            submitter: login_name(claimed),
            args: header.args,
            message,
        },
    ))
}

/// Resolves the entry with the system config and puts it in the system queue.
fn admit(config: &Config, queue: &Queue, taken: &Submission, journal: &Journal) -> Result<()> {
    let args = allowed_args(&taken.args)?;
    let message = Message::read(&taken.message[..])?;
    let plan = plan::resolve(&args, config, &message, plan::Context::current())?;
    config.account(&plan.account)?;
    let parts = message.render(&plan.edits);
    let meta = queue::Meta {
        account: plan.account.clone(),
        envelope: plan.envelope.clone(),
        created_at: clock::now(),
        submitter: Some(taken.submitter.clone()),
    };
    let id = queue.enqueue(&meta, &parts)?;
    journal.message(
        &plan.account,
        &plan.envelope,
        parts.len(),
        &format!(
            "result=picked-up id={id} submitter={} uid={}",
            taken.submitter, taken.uid
        ),
    );
    Ok(())
}

/// Parses the entry's arguments as sendmail's, then keeps only those that shape the
/// message: whatever else a hostile entry says (`-C`, `-X`, `-q`, `-v`, `--system`) is
/// never looked at.
fn allowed_args(args: &[String]) -> Result<SendArgs> {
    let command_line =
        std::iter::once(OsString::from("sendmail")).chain(args.iter().map(OsString::from));
    let parsed = SendArgs::try_parse_from(command_line)
        .map_err(|e| Error::usage(format!("the dropped command line does not parse: {e}")))?;
    Ok(SendArgs {
        recipients: parsed.recipients,
        read_recipients: parsed.read_recipients,
        from: parsed.from,
        read_envelope_from: parsed.read_envelope_from,
        full_name: parsed.full_name,
        account: parsed.account,
        dsn_notify: parsed.dsn_notify,
        dsn_return: parsed.dsn_return,
        dsn_envid: parsed.dsn_envid,
        body_type: parsed.body_type,
        options: parsed.options,
        ..SendArgs::default()
    })
}

/// Removes `path` if it is still the file we read (a user may have replaced their own
/// entry meanwhile; the new one waits for the next run).
fn remove_same(path: &Path, file: &File) {
    let (Ok(now), Ok(ours)) = (fs::symlink_metadata(path), file.metadata()) else {
        return;
    };
    if now.ino() == ours.ino() && now.dev() == ours.dev() {
        let _ = fs::remove_file(path);
    }
}

/// Removes a refused entry; one that cannot be unlinked (a folder a user made there) is
/// moved to `held/`, so that nothing is left for the path unit to fire on again and again.
fn discard(path: &Path, name: &std::ffi::OsStr) {
    if fs::remove_file(path).is_ok() {
        return;
    }
    let _ = fs::rename(path, held_dir().join(name));
}

/// A dotted temporary file: taken when it is complete and older than [`ORPHAN_SECS`] (a
/// crash lost its rename); removed when older than a day (its writer died); else left.
fn orphan(path: &Path, name: &std::ffi::OsStr, now: u64) -> Option<(File, Submission)> {
    let meta = fs::symlink_metadata(path).ok()?;
    let age = now.saturating_sub(u64::try_from(meta.mtime()).unwrap_or(0));
    if age < ORPHAN_SECS {
        return None;
    }
    let real = name
        .to_str()
        .and_then(|n| n.strip_prefix('.')?.strip_suffix(".tmp"));
    if let Some(Ok(taken)) = real.map(|r| take(path, std::ffi::OsStr::new(r))) {
        return Some(taken);
    }
    if age > STALE_TEMP_SECS {
        let _ = fs::remove_file(path);
    }
    None
}

/// The login name of `uid` (from `/etc/passwd`), or `uid N` when it has none there.
fn login_name(uid: u32) -> String {
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|l| {
            let mut fields = l.split(':');
            let name = fields.next()?;
            let id: u32 = fields.nth(1)?.parse().ok()?;
            (id == uid).then(|| name.to_owned())
        })
        .unwrap_or_else(|| format!("uid{uid}"))
}

/// Creates the spool (`0755`) and the maildrop (`1733`) when missing, and refuses ones
/// that would let a user touch another's message: not root's, or a maildrop others may
/// write without the sticky bit, or a spool others may write.
fn ensure_spool() -> Result<()> {
    let spool = Path::new(system::SPOOL);
    let maildrop = Path::new(system::MAILDROP);
    make_dir(spool, 0o755)?;
    make_dir(maildrop, MAILDROP_MODE)?;
    for dir in [spool, maildrop] {
        let meta = fs::symlink_metadata(dir)
            .map_err(|e| Error::io(format!("cannot read {}: {e}", dir.display())))?;
        let mode = meta.mode() & 0o7777;
        let loose = if dir == maildrop {
            mode & 0o002 != 0 && mode & 0o1000 == 0
        } else {
            mode & 0o022 != 0
        };
        if !meta.is_dir() || meta.uid() != 0 || loose {
            let fix = if dir == maildrop { "1733" } else { "755" };
            return Err(Error::io(format!(
                "{} must be a folder of root's that only root may change (mode {mode:04o}), \
                 so it is not used: fix it with `chown root: {} && chmod {fix} {}`",
                dir.display(),
                dir.display(),
                dir.display()
            )));
        }
    }
    Ok(())
}

fn make_dir(dir: &Path, mode: u32) -> Result<()> {
    if fs::symlink_metadata(dir).is_ok() {
        return Ok(());
    }
    let error = |e: std::io::Error| Error::io(format!("cannot create {}: {e}", dir.display()));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(error)?;
    // The umask takes bits (and the sticky bit) away: set the mode exactly.
    fs::set_permissions(dir, fs::Permissions::from_mode(mode)).map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(args: &[&str]) -> SendArgs {
        SendArgs::try_parse_from(std::iter::once("sendmail").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn the_dropped_arguments_parse_back_to_the_same_message_shaping_flags() {
        let a = send(&[
            "-FCronDaemon",
            "-i",
            "-B8BITMIME",
            "-oem",
            "-f",
            "root",
            "-N",
            "never",
            "--",
            "root",
            "-odd@x.example",
        ]);
        let back = allowed_args(&drop_args(&a)).unwrap();
        assert_eq!(back.full_name.as_deref(), Some("CronDaemon"));
        assert_eq!(back.body_type.as_deref(), Some("8BITMIME"));
        assert_eq!(back.from.as_deref(), Some("root"));
        assert_eq!(back.dsn_notify.as_deref(), Some("never"));
        assert!(back.caller_cannot_keep());
        assert_eq!(back.recipients, ["root", "-odd@x.example"]);
    }

    #[test]
    fn a_dropped_command_line_never_chooses_a_config_a_log_or_a_mode() {
        let hostile: Vec<String> = [
            "-C",
            "/tmp/evil.toml",
            "-X",
            "/etc/shadow",
            "-v",
            "-q",
            "-bp",
            "--dry-run",
            "--system",
            "--",
            "x@y.example",
        ]
        .map(String::from)
        .to_vec();
        let args = allowed_args(&hostile).unwrap();
        assert!(args.config.is_none() && args.traffic_log.is_none());
        assert!(args.queue_run.is_none() && args.mode.is_none());
        assert!(!args.dry_run && !args.system && args.verbose == 0);
        assert_eq!(args.recipients, ["x@y.example"]);
    }

    #[test]
    fn entry_names_start_with_the_owners_uid() {
        let name = entry_name(1000);
        assert!(name.starts_with("1000."), "{name}");
        assert_ne!(name, entry_name(1000));
    }
}
