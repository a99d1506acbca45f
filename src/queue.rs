//! The durable queue: messages that could not be sent now wait here, exactly as they
//! would have been sent, until a flush delivers them.
//!
//! Layout, under `$XDG_STATE_HOME/oauth2-sendmail/queue/` (folder `0700`, files `0600`):
//!
//! - `ID.mail`: one JSON line (`Meta`: account, envelope, creation time), then the message
//!   bytes. Written to a temp file, fsynced, renamed, and the folder fsynced before the
//!   command reports success: the rename is the commit. Never changed afterwards.
//! - `ID.state`: JSON (`State`: attempts, next attempt, last error), replaced atomically
//!   after each failed attempt. Missing means "never tried".
//! - `failed/ID.mail` + `failed/ID.state`: permanently refused messages, with the server's
//!   reply; kept for the user, never retried.
//! - `.flush.lock`: held by a flush, so two flushes never send the same message.
//! - `.due`: the due index, JSON `{"ACCOUNT": UNIX_SECONDS, …}`: for each account with
//!   queued messages, a time at or before which one of them is due. A send asks it whether
//!   the account has anything due (`may_have_due`) in time that does not grow with the
//!   queue. It is only ever early, never late: an enqueue lowers it (holding its `flock`,
//!   before the entry is committed), a flush recomputes it from the entries it lists.
//!   Missing or empty (a queue written by an older version) means "not built": the next
//!   reader or writer builds it from the entries.
//!
//! - `.ID.mail.PID.tmp`, `.ID.state.PID.tmp`: a write in progress, or left by a crash
//!   before its rename (the message was then never reported as queued). Listing ignores
//!   them; a flush deletes the ones older than a day.
//!
//! Delivery is at least once: a crash after the server's final 250 and before the entry
//! is removed sends that message again at the next flush. IDs start with the creation
//! time in microseconds, so sorting them gives the oldest first.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::smtp::Envelope;
use crate::spool::{Payload, Spool};

/// The first attempt after a temporary failure waits this long; each further failure
/// doubles it. A minute is long enough for a network blip, short enough for a laptop
/// that just came back online.
const FIRST_BACKOFF_SECS: u64 = 60;
/// The longest wait between attempts: an hour, so a day-long outage costs ~30 attempts.
const MAX_BACKOFF_SECS: u64 = 3600;
/// After five days of temporary failures a message is treated as failed, as sendmail's
/// default queue timeout does.
pub const MAX_AGE_SECS: u64 = 5 * 24 * 3600;
/// A temp file this old belongs to no running write (a write takes well under a second):
/// it was left by a crash, and its message was never reported as queued.
const STALE_TEMP_SECS: u64 = 24 * 3600;
/// The flush lock's file name, in the queue folder.
const LOCK_FILE: &str = ".flush.lock";
/// The due index's file name, in the queue folder.
const DUE_INDEX: &str = ".due";

/// Test hook: `OAUTH2_SENDMAIL_TEST_CRASH=<point>` aborts the process at that named point,
/// as `kill -9` would, so tests can prove that no crash loses or corrupts a message.
const CRASH_ENV: &str = "OAUTH2_SENDMAIL_TEST_CRASH";

/// Aborts here when the crash test hook names this point.
pub fn crash_point(point: &str) {
    if std::env::var(CRASH_ENV).is_ok_and(|p| p == point) {
        std::process::abort();
    }
}

/// What an entry is: written once, with the message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub account: String,
    pub envelope: Envelope,
    /// Unix seconds.
    pub created_at: u64,
    /// System mode: the local user whose message came through the maildrop (their login
    /// name, as the flusher found it from the file's owner); notices go to their alias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitter: Option<String>,
}

/// How delivery has gone so far.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub attempts: u32,
    /// Unix seconds; 0 = as soon as possible.
    pub next_attempt: u64,
    /// The last error, as the one line a user reads.
    pub last_error: Option<String>,
}

/// One queued (or failed) message.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    pub meta: Meta,
    pub state: State,
    pub size: u64,
}

/// An entry that could not be read: reported and skipped, never deleted.
#[derive(Debug, Clone)]
pub struct Unreadable {
    pub id: String,
    pub reason: String,
}

pub struct Queue {
    dir: PathBuf,
}

impl Queue {
    /// The queue in its usual place.
    pub fn open() -> Result<Queue> {
        let dir = crate::paths::queue_dir()
            .ok_or_else(|| Error::io("cannot find a home directory for the queue"))?;
        Ok(Queue { dir })
    }

    #[cfg(test)]
    #[must_use]
    pub fn at(dir: PathBuf) -> Queue {
        Queue { dir }
    }

    fn failed_dir(&self) -> PathBuf {
        self.dir.join("failed")
    }

    /// Stores a message durably and returns its id. When this returns, the message is on
    /// disk (file and folder fsynced).
    pub fn enqueue(&self, meta: &Meta, message: &Payload<'_>) -> Result<String> {
        self.enqueue_with(meta, message, None)
    }

    /// Stores a message whose first attempt (at send time) just failed with `error`: it
    /// counts as attempt 1, and the next one waits the first back-off, or `wait_at_least`
    /// seconds when the server asked for longer (Graph's `Retry-After`; at most
    /// `MAX_BACKOFF_SECS`). A crash between the two writes leaves the message queued as
    /// never tried, which loses nothing.
    pub fn enqueue_after_attempt(
        &self,
        meta: &Meta,
        message: &Payload<'_>,
        error: &str,
        now: u64,
        wait_at_least: u64,
    ) -> Result<String> {
        let state = State {
            attempts: 1,
            next_attempt: next_attempt(now, FIRST_BACKOFF_SECS, wait_at_least),
            last_error: Some(crate::scrub::for_output(error, crate::stderr::MAX_LINE)),
        };
        self.enqueue_with(meta, message, Some(&state))
    }

    /// The entry, then its state (when tried already), holding the due index's lock
    /// throughout: its time for the account is lowered first, so no recomputation can
    /// come between and a crash leaves it early, never late.
    fn enqueue_with(
        &self,
        meta: &Meta,
        message: &Payload<'_>,
        state: Option<&State>,
    ) -> Result<String> {
        create_private_dir(&self.dir)?;
        let mut index = self.due_index_for_update()?;
        let due = state.map_or(0, |s| s.next_attempt);
        index.lower(&meta.account, due);
        index.save()?;
        let id = new_id();
        let mut line = serde_json::to_vec(meta).map_err(|e| Error::internal(e.to_string()))?;
        line.push(b'\n');
        let path = self.dir.join(format!("{id}.mail"));
        let write = |file: &mut File| {
            file.write_all(&line)?;
            // Streamed: a large message is copied from its temporary file, never held.
            std::io::copy(&mut message.reader(), file).map(drop)
        };
        write_atomically(&path, write, "enqueue-before-rename").map_err(|e| {
            Error::io(format!(
                "cannot write to the queue {}: {e}",
                self.dir.display()
            ))
        })?;
        crash_point("enqueue-after-rename");
        if let Some(state) = state {
            write_state(&self.dir, &id, state, "enqueue-state-before-rename")?;
        }
        Ok(id)
    }

    /// Whether `account` may have a message due at `now`, from the due index: a few system
    /// calls whatever the queue's length. `false` is sure; `true` may be a stale early time
    /// (the caller lists the queue, then `refresh_due_index`). Without a queue folder there
    /// is nothing; without an index (an older version's queue) it is built now.
    #[must_use]
    pub fn may_have_due(&self, account: &str, now: u64) -> bool {
        let path = self.dir.join(DUE_INDEX);
        let read =
            crate::private_dir::open(&path, OpenOptions::new().read(true)).and_then(|file| {
                file.lock_shared()?;
                let mut text = Vec::new();
                (&file).read_to_end(&mut text)?;
                Ok(text)
            });
        let times = match read {
            Ok(text) => parse_due_index(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !self.dir.exists() => {
                return false;
            }
            Err(_) => None,
        };
        let times = match times {
            Some(t) => t,
            // Not built (or unreadable): build it from the entries.
            None => match self.refresh_due_index() {
                Ok(t) => t,
                Err(_) => return true,
            },
        };
        times.get(account).is_some_and(|&t| t <= now)
    }

    /// Recomputes the due index from the entries (holding its lock, so no enqueue comes
    /// between the listing and the write) and returns it.
    pub fn refresh_due_index(&self) -> Result<BTreeMap<String, u64>> {
        let mut index = self.due_index_for_update()?;
        index.times = due_times(&self.dir)?;
        index.save()?;
        Ok(index.times)
    }

    /// The due index, locked for writing; built from the entries if it was not.
    fn due_index_for_update(&self) -> Result<DueIndex> {
        let path = self.dir.join(DUE_INDEX);
        let io = |e: std::io::Error| Error::io(format!("cannot update {}: {e}", path.display()));
        let file = crate::private_dir::open(
            &path,
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
        )
        .map_err(io)?;
        file.lock().map_err(io)?;
        let mut text = Vec::new();
        (&file).read_to_end(&mut text).map_err(io)?;
        let times = match parse_due_index(&text) {
            Some(t) => t,
            None => due_times(&self.dir)?,
        };
        Ok(DueIndex { file, path, times })
    }

    /// Queued entries, oldest first, and the ones that could not be read.
    pub fn list(&self) -> Result<(Vec<Entry>, Vec<Unreadable>)> {
        list_dir(&self.dir)
    }

    /// Permanently failed entries.
    pub fn list_failed(&self) -> Result<(Vec<Entry>, Vec<Unreadable>)> {
        list_dir(&self.failed_dir())
    }

    /// The message of a queued entry (after its metadata line), read from its file as it
    /// is sent.
    pub fn message(&self, id: &str) -> Result<Spool> {
        let path = self.dir.join(format!("{id}.mail"));
        let cannot = |e: std::io::Error| Error::io(format!("cannot read {}: {e}", path.display()));
        let file = File::open(&path).map_err(cannot)?;
        let len = file.metadata().map_err(cannot)?.len();
        let mut line = Vec::new();
        BufReader::new(&file)
            .read_until(b'\n', &mut line)
            .map_err(cannot)?;
        let start = line.len() as u64;
        Ok(Spool::file_range(file, start, len.saturating_sub(start)))
    }

    /// Records a temporary failure: one more attempt, the next one later (the back-off,
    /// or `wait_at_least` seconds when the server asked for longer, e.g. Graph's
    /// `Retry-After`; at most `MAX_BACKOFF_SECS`).
    pub fn defer(&self, entry: &Entry, error: &str, now: u64, wait_at_least: u64) -> Result<()> {
        let attempts = entry.state.attempts.saturating_add(1);
        let backoff = FIRST_BACKOFF_SECS
            .saturating_mul(1 << (attempts - 1).min(16))
            .min(MAX_BACKOFF_SECS);
        let state = State {
            attempts,
            next_attempt: next_attempt(now, backoff, wait_at_least),
            last_error: Some(crate::scrub::for_output(error, crate::stderr::MAX_LINE)),
        };
        write_state(&self.dir, &entry.id, &state, "defer-before-rename")
    }

    /// Moves a permanently refused entry to `failed/`, keeping the reason.
    pub fn fail(&self, entry: &Entry, error: &str) -> Result<()> {
        let failed = self.failed_dir();
        create_private_dir(&failed)?;
        let state = State {
            attempts: entry.state.attempts.saturating_add(1),
            next_attempt: 0,
            last_error: Some(crate::scrub::for_output(error, crate::stderr::MAX_LINE)),
        };
        // The reason first: a crash between the two steps leaves the entry queued (to be
        // tried again), never a failed message without its reason.
        write_state(&failed, &entry.id, &state, "fail-state-before-rename")?;
        crash_point("fail-before-rename");
        let io = |e: std::io::Error| Error::io(format!("cannot move {} to failed/: {e}", entry.id));
        fs::rename(
            self.dir.join(format!("{}.mail", entry.id)),
            failed.join(format!("{}.mail", entry.id)),
        )
        .map_err(io)?;
        sync_dir(&failed).map_err(io)?;
        let _ = fs::remove_file(self.dir.join(format!("{}.state", entry.id)));
        sync_dir(&self.dir).map_err(io)
    }

    /// Removes a delivered entry.
    pub fn remove_delivered(&self, id: &str) -> Result<()> {
        remove_entry(&self.dir, id).map(drop)
    }

    /// Removes an entry by id, queued or failed; false when there is none.
    pub fn remove(&self, id: &str) -> Result<bool> {
        if id.is_empty() || id.contains(['/', '.']) {
            return Err(Error::usage(format!("`{id}` is not a queue id")));
        }
        Ok(remove_entry(&self.dir, id)? | remove_entry(&self.failed_dir(), id)?)
    }

    /// Takes the flush lock, waiting for a flush already running to finish. The lock is
    /// the kernel's (`flock`): a crashed flush never leaves it held.
    pub fn lock_flush(&self) -> Result<File> {
        let (file, path) = self.lock_file()?;
        file.lock()
            .map_err(|e| Error::io(format!("cannot lock {}: {e}", path.display())))?;
        Ok(file)
    }

    /// Takes the flush lock only if no flush is running.
    pub fn try_lock_flush(&self) -> Result<Option<File>> {
        let (file, path) = self.lock_file()?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => {
                Err(Error::io(format!("cannot lock {}: {e}", path.display())))
            }
        }
    }

    fn lock_file(&self) -> Result<(File, PathBuf)> {
        create_private_dir(&self.dir)?;
        let path = self.dir.join(LOCK_FILE);
        let file = crate::private_dir::open(
            &path,
            OpenOptions::new().create(true).truncate(false).write(true),
        )
        .map_err(|e| Error::io(format!("cannot open {}: {e}", path.display())))?;
        Ok((file, path))
    }

    /// Deletes what crashes leave behind and nothing else: temp files older than a day,
    /// and state files whose message is gone (a crash while removing or failing an
    /// entry). Call it holding the flush lock (the only writer of state files). Best
    /// effort: a file that cannot be removed stays, harmless.
    pub fn tidy(&self, now: u64) {
        for dir in [self.dir.clone(), self.failed_dir()] {
            let Ok(read) = fs::read_dir(&dir) else {
                continue;
            };
            for name in read.filter_map(|e| e.ok()?.file_name().into_string().ok()) {
                if is_leftover(&dir, &name, now) {
                    let _ = fs::remove_file(dir.join(&name));
                }
            }
        }
    }
}

/// The due index, open and locked (`flock`, released when dropped).
struct DueIndex {
    file: File,
    path: PathBuf,
    times: BTreeMap<String, u64>,
}

impl DueIndex {
    /// Makes the account's time no later than `due`.
    fn lower(&mut self, account: &str, due: u64) {
        let t = self.times.entry(account.to_owned()).or_insert(due);
        *t = (*t).min(due);
    }

    /// Rewrites the file in place (under the lock) and syncs it: after a power loss the
    /// index must not be older than the entries it covers.
    fn save(&mut self) -> Result<()> {
        let io =
            |e: std::io::Error| Error::io(format!("cannot update {}: {e}", self.path.display()));
        let json = serde_json::to_vec(&self.times).map_err(|e| Error::internal(e.to_string()))?;
        self.file.set_len(0).map_err(io)?;
        self.file.write_all_at(&json, 0).map_err(io)?;
        self.file.sync_data().map_err(io)
    }
}

/// The index as written; `None` when it was never built (empty) or cannot be read.
fn parse_due_index(text: &[u8]) -> Option<BTreeMap<String, u64>> {
    serde_json::from_slice(text).ok()
}

/// For each account with readable entries, the earliest next attempt.
fn due_times(dir: &Path) -> Result<BTreeMap<String, u64>> {
    let (entries, _) = list_dir(dir)?;
    let mut times = BTreeMap::new();
    for e in entries {
        let t = times.entry(e.meta.account).or_insert(e.state.next_attempt);
        *t = (*t).min(e.state.next_attempt);
    }
    Ok(times)
}

/// A stale temp file, or a state file without its message.
fn is_leftover(dir: &Path, name: &str, now: u64) -> bool {
    // Our own names, so the exact spelling `.tmp` is the only one to match.
    if name.starts_with('.') && Path::new(name).extension().is_some_and(|e| e == "tmp") {
        let modified = fs::metadata(dir.join(name))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(now, |d| d.as_secs());
        return now.saturating_sub(modified) > STALE_TEMP_SECS;
    }
    name.strip_suffix(".state")
        .is_some_and(|id| !dir.join(format!("{id}.mail")).exists())
}

fn write_state(dir: &Path, id: &str, state: &State, crash: &str) -> Result<()> {
    let json = serde_json::to_vec(state).map_err(|e| Error::internal(e.to_string()))?;
    write_atomically(
        &dir.join(format!("{id}.state")),
        |f| f.write_all(&json),
        crash,
    )
    .map_err(|e| Error::io(format!("cannot update the queue entry {id}: {e}")))
}
fn remove_entry(dir: &Path, id: &str) -> Result<bool> {
    let mail = dir.join(format!("{id}.mail"));
    let existed = match fs::remove_file(&mail) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(Error::io(format!("cannot remove {}: {e}", mail.display()))),
    };
    let _ = fs::remove_file(dir.join(format!("{id}.state")));
    if existed {
        sync_dir(dir).map_err(|e| Error::io(format!("cannot sync {}: {e}", dir.display())))?;
    }
    Ok(existed)
}

fn list_dir(dir: &Path) -> Result<(Vec<Entry>, Vec<Unreadable>)> {
    if dir.exists() {
        // Messages in a folder others may write could be anyone's: not sent.
        crate::private_dir::check_dir(dir, "queue folder")?;
    }
    let read = match fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => {
            return Err(Error::io(format!(
                "cannot read the queue {}: {e}",
                dir.display()
            )));
        }
    };
    let mut ids: Vec<String> = read
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".mail").map(str::to_owned))
        .filter(|n| !n.starts_with('.'))
        .collect();
    ids.sort();
    let mut entries = Vec::new();
    let mut unreadable = Vec::new();
    for id in ids {
        match read_entry(dir, &id) {
            Ok(e) => entries.push(e),
            Err(reason) => unreadable.push(Unreadable { id, reason }),
        }
    }
    // Oldest first by the recorded time; the id (microseconds) orders within a second.
    entries.sort_by(|a, b| (a.meta.created_at, &a.id).cmp(&(b.meta.created_at, &b.id)));
    Ok((entries, unreadable))
}

fn read_entry(dir: &Path, id: &str) -> std::result::Result<Entry, String> {
    let path = dir.join(format!("{id}.mail"));
    let file = File::open(&path).map_err(|e| e.to_string())?;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let mut line = Vec::new();
    BufReader::new(file)
        .read_until(b'\n', &mut line)
        .map_err(|e| e.to_string())?;
    let meta: Meta =
        serde_json::from_slice(&line).map_err(|e| format!("bad metadata line: {e}"))?;
    let state = match fs::read(dir.join(format!("{id}.state"))) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("bad state file: {e}"))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
        Err(e) => return Err(e.to_string()),
    };
    Ok(Entry {
        id: id.to_owned(),
        meta,
        state,
        size: size - line.len() as u64,
    })
}

/// `MICROS-PID-RANDOM`: sorts by creation time (microseconds, so messages queued within
/// the same second keep their order); the pid and random part make it unique across
/// processes, which matters because the rename that commits an entry replaces any file
/// of the same name.
fn new_id() -> String {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let mut random = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random);
    format!(
        "{micros:016}-{}-{:08x}",
        std::process::id(),
        u32::from_le_bytes(random)
    )
}

fn create_private_dir(dir: &Path) -> Result<()> {
    crate::private_dir::ensure_dir(dir, "queue folder")
}

/// Writes (`write`) a `0600` temp file beside `path`, fsyncs it, renames it over `path`
/// and fsyncs the folder. `crash` names the crash test hook's point before the rename.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut File) -> std::io::Result<()>,
    crash: &str,
) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut file = crate::private_dir::open(&tmp, OpenOptions::new().write(true).create_new(true))?;
    let written = write(&mut file).and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    crash_point(crash);
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// When the next attempt is due: after the back-off, or after the wait the server asked
/// for when that is longer; never more than `MAX_BACKOFF_SECS` away, so a bogus huge
/// `Retry-After` cannot park a message for days.
fn next_attempt(now: u64, backoff: u64, wait_at_least: u64) -> u64 {
    now.saturating_add(backoff.max(wait_at_least).min(MAX_BACKOFF_SECS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::now;
    use std::os::unix::fs::PermissionsExt;

    fn meta(account: &str, created_at: u64) -> Meta {
        Meta {
            submitter: None,
            account: account.into(),
            envelope: Envelope {
                from: Some("a@contoso.com".into()),
                recipients: vec!["b@fabrikam.example".into()],
                ..Envelope::default()
            },
            created_at,
        }
    }

    #[test]
    fn the_due_index_says_who_has_something_due_and_is_never_late() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::at(dir.path().join("queue"));
        // No queue folder at all: nothing, and nothing created.
        assert!(!q.may_have_due("w", 1000));
        assert!(!dir.path().join("queue").exists());
        q.enqueue(&meta("w", 1), &Payload::from_slices(&[b"x\n"]))
            .unwrap();
        q.enqueue_after_attempt(
            &meta("v", 1),
            &Payload::from_slices(&[b"x\n"]),
            "451",
            1000,
            0,
        )
        .unwrap();
        assert!(q.may_have_due("w", 1000));
        assert!(!q.may_have_due("v", 1000), "backed off until 1060");
        assert!(q.may_have_due("v", 1060));
        assert!(!q.may_have_due("nobody", u64::MAX));
        let index = dir.path().join("queue/.due");
        assert_eq!(
            fs::metadata(&index).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Sent: the index still says "maybe" until a flush recomputes it.
        let w = q
            .list()
            .unwrap()
            .0
            .into_iter()
            .find(|e| e.meta.account == "w")
            .unwrap();
        q.remove_delivered(&w.id).unwrap();
        assert!(q.may_have_due("w", 1000));
        let times = q.refresh_due_index().unwrap();
        assert_eq!(
            times.into_iter().collect::<Vec<_>>(),
            [("v".to_owned(), 1060)]
        );
        assert!(!q.may_have_due("w", 1000));
        // A queue written before the index existed: built on first use.
        fs::remove_file(&index).unwrap();
        assert!(q.may_have_due("v", 2000));
        assert!(index.exists());
        fs::write(&index, b"").unwrap();
        q.enqueue(&meta("w", 2), &Payload::from_slices(&[b"x\n"]))
            .unwrap();
        assert!(q.may_have_due("v", 2000), "rebuilt before lowering, v kept");
        assert!(q.may_have_due("w", 2000));
    }

    #[test]
    fn enqueue_list_message_remove() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::at(dir.path().join("queue"));
        let second = q
            .enqueue(
                &meta("w", 200),
                &Payload::from_slices(&[b"Subject: 2\n\nbody\n"]),
            )
            .unwrap();
        let first = q
            .enqueue(
                &meta("w", 100),
                &Payload::from_slices(&[b"Subject: 1\n", b"\nbody\r\n"]),
            )
            .unwrap();
        let (entries, bad) = q.list().unwrap();
        assert!(bad.is_empty());
        assert_eq!(
            entries.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            [&first, &second]
        );
        let spool = q.message(&first).unwrap();
        let mut message = Payload::new();
        message.push_spool(&spool);
        assert_eq!(message.to_vec().unwrap(), b"Subject: 1\n\nbody\r\n");
        assert_eq!(entries[0].size, 18);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("queue")), 0o700);
        assert_eq!(mode(&dir.path().join(format!("queue/{first}.mail"))), 0o600);
        assert!(q.remove(&first).unwrap());
        assert!(!q.remove(&first).unwrap());
        assert_eq!(q.list().unwrap().0.len(), 1);
    }

    #[test]
    fn defer_backs_off_and_fail_moves_with_reason() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::at(dir.path().to_owned());
        q.enqueue(&meta("w", 1), &Payload::from_slices(&[b"x\n"]))
            .unwrap();
        let entry = q.list().unwrap().0.remove(0);
        q.defer(&entry, "451 4.7.0 later", 1000, 0).unwrap();
        let entry = q.list().unwrap().0.remove(0);
        assert_eq!((entry.state.attempts, entry.state.next_attempt), (1, 1060));
        q.defer(&entry, "451 again", 2000, 0).unwrap();
        let entry = q.list().unwrap().0.remove(0);
        assert_eq!(entry.state.next_attempt, 2120);
        q.fail(&entry, "550 5.1.1 no such user").unwrap();
        assert!(q.list().unwrap().0.is_empty());
        let failed = q.list_failed().unwrap().0;
        assert_eq!(
            failed[0].state.last_error.as_deref(),
            Some("550 5.1.1 no such user")
        );
    }

    #[test]
    fn a_retry_after_delays_the_next_attempt_up_to_the_longest_back_off() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::at(dir.path().to_owned());
        let id = q
            .enqueue_after_attempt(
                &meta("w", 1),
                &Payload::from_slices(&[b"x\n"]),
                "429",
                1000,
                600,
            )
            .unwrap();
        let entry = q.list().unwrap().0.remove(0);
        assert_eq!(entry.id, id);
        assert_eq!((entry.state.attempts, entry.state.next_attempt), (1, 1600));
        // Shorter than the back-off: the back-off (120 s at attempt 2) wins.
        q.defer(&entry, "429", 2000, 5).unwrap();
        let entry = q.list().unwrap().0.remove(0);
        assert_eq!(entry.state.next_attempt, 2120);
        // A day: clamped to the hour the queue waits at most.
        q.defer(&entry, "503", 3000, 86_400).unwrap();
        let entry = q.list().unwrap().0.remove(0);
        assert_eq!(entry.state.next_attempt, 3000 + MAX_BACKOFF_SECS);
        q.defer(&entry, "503", u64::MAX - 10, u64::MAX).unwrap();
        assert_eq!(q.list().unwrap().0[0].state.next_attempt, u64::MAX);
    }

    #[test]
    fn corrupt_entry_is_reported_not_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::at(dir.path().to_owned());
        fs::write(
            dir.path().join("00000000001-1-deadbeef.mail"),
            b"not json\nbody",
        )
        .unwrap();
        let (entries, bad) = q.list().unwrap();
        assert!(entries.is_empty());
        assert_eq!(bad[0].id, "00000000001-1-deadbeef");
        assert!(dir.path().join("00000000001-1-deadbeef.mail").exists());
    }

    #[test]
    fn same_second_entries_keep_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::at(dir.path().to_owned());
        let ids: Vec<String> = (0..20)
            .map(|_| {
                q.enqueue(&meta("w", 7), &Payload::from_slices(&[b"x\n"]))
                    .unwrap()
            })
            .collect();
        let listed: Vec<String> = q.list().unwrap().0.into_iter().map(|e| e.id).collect();
        assert_eq!(listed, ids);
    }

    #[test]
    fn tidy_removes_only_stale_temp_files_and_orphan_states() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::at(dir.path().to_owned());
        let id = q
            .enqueue(&meta("w", 1), &Payload::from_slices(&[b"x\n"]))
            .unwrap();
        let entry = q.list().unwrap().0.remove(0);
        q.defer(&entry, "451", 10, 0).unwrap();
        let fresh_tmp = dir.path().join(format!(".{id}.mail.1.tmp"));
        let orphan = dir.path().join("00000000000000001-1-00000000.state");
        fs::write(&fresh_tmp, b"partial").unwrap();
        fs::write(&orphan, b"{}").unwrap();
        q.tidy(now());
        assert!(fresh_tmp.exists(), "a write may be in progress");
        assert!(!orphan.exists());
        assert!(dir.path().join(format!("{id}.state")).exists());
        q.tidy(now() + STALE_TEMP_SECS + 10);
        assert!(!fresh_tmp.exists());
        assert_eq!(q.list().unwrap().0[0].state.attempts, 1);
    }

    #[test]
    fn flush_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::at(dir.path().to_owned());
        let held = q.lock_flush().unwrap();
        assert!(q.try_lock_flush().unwrap().is_none());
        drop(held);
        assert!(q.try_lock_flush().unwrap().is_some());
    }
}
