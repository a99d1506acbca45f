//! Flushing the queue: for each account, one SMTP session for all of its due messages,
//! oldest first. A message leaves the queue only after the server's final 250 (logged
//! first, with the server's queue id from that reply); a permanent refusal moves it to
//! `failed/` with the reply; a temporary one backs off, until the message is older than
//! `queue::MAX_AGE_SECS`. Failing to open a session never fails a message: they all wait.
//!
//! Accounts are flushed one after another, so a flush holds at most one connection per
//! mailbox (Exchange Online allows 3), and the flush lock keeps a second flush out.
//!
//! `queue flush` (a person asking) tries every message now; `-q` (a timer) only those
//! whose back-off has passed, and then renews each refresh token unused for
//! `IDLE_RENEWAL_SECS`. Both report one line per account that needs a login.

use std::fmt::Write as _;

use crate::clock;
use crate::config::Config;
use crate::error::{Class, EX_NOPERM, EX_TEMPFAIL, EX_UNAVAILABLE, Error, Result};
use crate::journal::Journal;
use crate::oauth::{self, store::TokenStore};
use crate::provider::{self, AccountSettings};
use crate::queue::{self, Entry, Queue};
use crate::transport::{Receipt, Transport};
use crate::{notify, transport};

/// `-q` renews a refresh token not used for this long (30 days): Microsoft's expire after
/// 90 days of inactivity, so a timer keeps every account alive with room to spare.
pub const IDLE_RENEWAL_SECS: u64 = 30 * 86_400;

/// Which messages a flush tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `queue flush`, `login`: every queued message, now.
    Everything,
    /// `-q`: those whose back-off has passed.
    Due,
}

/// How one queued message fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// A temporary failure: it stays queued, with its next attempt later.
    Deferred,
    /// Permanently refused (or too old): moved to `failed/`.
    Failed,
    /// Its files could not be read: skipped, left in place for the user.
    Unreadable,
    /// Its outcome could not be written to the queue (a full disk): left as it was, so it
    /// is tried again at the next flush.
    Unrecorded,
}

/// What a flush did: one line per message (`ID: sent: 250 …`), in order.
#[derive(Debug, Default)]
pub struct Report {
    lines: Vec<(Outcome, String)>,
    /// One line per account that needs a login (or another fix by the user).
    logins: Vec<(String, String)>,
}

impl Report {
    fn note(&mut self, outcome: Outcome, line: String) {
        self.lines.push((outcome, line));
    }

    /// Notes that `account` needs the user; once per account.
    fn needs_user(&mut self, account: &str, line: String) {
        if !self.logins.iter().any(|(a, _)| a == account) {
            self.logins.push((account.to_owned(), line));
        }
    }

    /// The lines for accounts that need a login: `queue flush` and `-q` print them all.
    pub fn logins(&self) -> impl Iterator<Item = &str> {
        self.logins.iter().map(|(_, l)| l.as_str())
    }

    #[must_use]
    pub fn count(&self, outcome: Outcome) -> usize {
        self.lines.iter().filter(|(o, _)| *o == outcome).count()
    }

    /// Every line, for `queue flush`.
    pub fn lines(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().map(|(_, l)| l.as_str())
    }

    /// The lines that need the user: failed, unreadable and unrecorded messages. `-q`
    /// prints only these, because cron mails any output, and a deferral is the queue doing
    /// its job (`queue list` shows it).
    pub fn problems(&self) -> impl Iterator<Item = &str> {
        self.lines
            .iter()
            .filter(|(o, _)| {
                matches!(
                    o,
                    Outcome::Failed | Outcome::Unreadable | Outcome::Unrecorded
                )
            })
            .map(|(_, l)| l.as_str())
    }

    /// 69 when a message failed for good in this flush; 77 when an account needs a
    /// login; 75 when some still wait (a deferral, an unreadable entry left in place, an
    /// outcome the queue could not record);
    /// else 0 (all due ones sent, or none due).
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        if self.count(Outcome::Failed) > 0 {
            EX_UNAVAILABLE
        } else if !self.logins.is_empty() {
            EX_NOPERM
        } else if self.count(Outcome::Deferred)
            + self.count(Outcome::Unreadable)
            + self.count(Outcome::Unrecorded)
            > 0
        {
            EX_TEMPFAIL
        } else {
            0
        }
    }
}

/// Flushes every account's messages in `scope`, holding the flush lock (waiting for a
/// flush already running: the entries are listed after it, so none is sent twice). With
/// `Scope::Due` (`-q`), idle refresh tokens are renewed afterwards.
pub fn flush(config: &Config, scope: Scope, verbose: bool) -> Result<Report> {
    flush_accounts(config, scope, None, verbose)
}

/// Sends `only`'s queued messages now (after a `login`).
pub fn flush_account(config: &Config, only: &AccountSettings, verbose: bool) -> Result<Report> {
    flush_accounts(config, Scope::Everything, Some(only), verbose)
}

fn flush_accounts(
    config: &Config,
    scope: Scope,
    only: Option<&AccountSettings>,
    verbose: bool,
) -> Result<Report> {
    let queue = Queue::open()?;
    let _lock = queue.lock_flush()?;
    let now = clock::now();
    queue.tidy(now);
    let (entries, unreadable) = queue.list()?;
    let waiting = waiting_per_account(&entries);
    let entries: Vec<Entry> = entries
        .into_iter()
        .filter(|e| only.is_none_or(|a| a.name == e.meta.account))
        .filter(|e| scope == Scope::Everything || is_due(e, now))
        .collect();
    let journal = Journal::from_config(config);
    let mut flusher = Flusher::new(&queue, &journal, verbose);
    for bad in &unreadable {
        flusher.report.note(
            Outcome::Unreadable,
            format!(
                "{}: unreadable, skipped and left in place (`oauth2-sendmail queue remove {}` \
                 deletes it): {}",
                bad.id, bad.id, bad.reason
            ),
        );
    }
    if crate::scope::current() == crate::scope::Mode::System {
        flusher.notices = Some(config);
    }
    let runtime = crate::runtime::single_threaded()?;
    flusher.accounts(config, &runtime, &entries);
    // System mode: the notices of this flush's failures go out now, not a timer later.
    let notice_ids = std::mem::take(&mut flusher.noticed);
    if !notice_ids.is_empty() {
        let (queued, _) = queue.list()?;
        let written: Vec<Entry> = queued
            .into_iter()
            .filter(|e| notice_ids.contains(&e.id))
            .collect();
        flusher.accounts(config, &runtime, &written);
    }
    // What was sent, deferred or failed moved the accounts' due times.
    let _ = queue.refresh_due_index();
    if scope == Scope::Due && only.is_none() {
        report_known_logins(config, &waiting, &mut flusher.report);
        runtime.block_on(renew_idle_tokens(config, &journal, &mut flusher.report));
        record_timer_run(now);
    }
    Ok(flusher.report)
}

/// The file that remembers when `-q` last ran (Unix seconds), for `status`: a timer that
/// runs `-q` keeps every refresh token alive. A file of its own rather than a log line,
/// because a timer every few minutes would drown the log, and `logfile = ""` turns it off.
fn timer_stamp() -> Option<std::path::PathBuf> {
    crate::paths::state_dir().map(|d| d.join("last-q-run"))
}

/// Notes that `-q` ran at `now`; failing to is harmless (`status` then says it never ran).
fn record_timer_run(now: u64) {
    use std::io::Write;
    let Some(path) = timer_stamp() else { return };
    let write = || -> Result<()> {
        if let Some(dir) = path.parent() {
            crate::private_dir::ensure_dir(dir, "state folder")?;
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        crate::private_dir::open(
            &tmp,
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true),
        )
        .and_then(|mut f| f.write_all(format!("{now}\n").as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| Error::io(format!("cannot write {}: {e}", path.display())))
    };
    let _ = write();
}

/// When `-q` last ran (Unix seconds), if it ever did.
#[must_use]
pub fn last_timer_run() -> Option<u64> {
    let bytes = crate::private_dir::read(&timer_stamp()?).ok()?;
    String::from_utf8(bytes).ok()?.trim().parse().ok()
}

/// How many messages each account has queued, due or not.
fn waiting_per_account(entries: &[Entry]) -> Vec<(String, usize)> {
    by_account(entries)
        .into_iter()
        .map(|(name, e)| (name.to_owned(), e.len()))
        .collect()
}

/// `-q` with nothing due for an account still says when its queued messages wait for a
/// login (as `status` knows it: a refused refresh remembered, no token stored), so a timer
/// that runs between back-offs is not silent about it.
fn report_known_logins(config: &Config, waiting: &[(String, usize)], report: &mut Report) {
    for (name, count) in waiting {
        if report.logins.iter().any(|(a, _)| a == name) {
            continue;
        }
        let Ok(settings) = config
            .account(name)
            .and_then(|a| provider::resolve(name, a))
        else {
            continue;
        };
        if let Some(line) = notify::known_login_needed(&settings) {
            report.needs_user(name, format!("{line} ({})", messages_wait(*count)));
        }
    }
}

/// "1 queued message waits", "2 queued messages wait".
fn messages_wait(n: usize) -> String {
    if n == 1 {
        "1 queued message waits".to_owned()
    } else {
        format!("{n} queued messages wait")
    }
}

/// Renews each refresh token unused for `IDLE_RENEWAL_SECS` (or of unknown age), so an
/// account that sends rarely never loses it. A refused renewal is heard: a line in the
/// report, `notify_cmd`, the log. A renewal that fails for a passing reason waits for the
/// next run.
async fn renew_idle_tokens(config: &Config, journal: &Journal, report: &mut Report) {
    let now = clock::now();
    for (name, configured) in &config.accounts {
        if report.logins.iter().any(|(a, _)| a == name) {
            continue;
        }
        let Ok(settings) = provider::resolve(name, configured) else {
            continue;
        };
        let Ok(Some(token)) = TokenStore::new(&settings).and_then(|s| s.load()) else {
            continue;
        };
        let idle = token
            .obtained_at
            .is_none_or(|at| now.saturating_sub(at) > IDLE_RENEWAL_SECS);
        if token.refresh_token.is_none() || !idle {
            continue;
        }
        // Passing the cached access token as the one to avoid makes this a real renewal.
        match oauth::access_token(&settings, Some(&token.access_token)).await {
            Ok(_) => journal.account(name, "result=renewed refresh token unused for 30 days"),
            Err(e) => {
                let e = e.for_account(name);
                if e.class() == Class::NeedsUser {
                    journal.account(
                        name,
                        &format!("result=renewal-refused error={:?}", e.to_string()),
                    );
                    notify::needs_user(&settings, &e, journal);
                    report.needs_user(name, format!("{e}"));
                } else {
                    // A passing failure: the next run retries, unless time runs out first.
                    notify::warn_if_expiring(&settings, true, token.obtained_at, now, journal);
                }
            }
        }
    }
}

/// After a direct send (`flush_on_send`): flush the same account's due messages over the
/// open session, unless another flush is running, then QUIT. Problems here never fail
/// the send just made; they are in the logfile and in `queue list`.
pub async fn flush_after_send(
    settings: &AccountSettings,
    session: Transport,
    journal: &Journal,
    verbose: bool,
) {
    let Some((queue, _lock, entries)) = locked_listing() else {
        session.close().await;
        return;
    };
    let now = clock::now();
    let due: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.meta.account == settings.name && is_due(e, now))
        .collect();
    let mut flusher = Flusher::new(&queue, journal, verbose);
    let _ = flusher.account(settings, &due, Some(session)).await;
    let _ = queue.refresh_due_index();
}

/// Whether `account` has queued messages due now: a direct send that has none to carry
/// can end its session at once (QUIT in the same flight as the end of the data). The due
/// index answers in time that does not grow with the queue; only when it says "maybe" is
/// the queue listed, and a stale index then recomputed. Without a readable queue there is
/// nothing to carry.
pub fn has_due(account: &str) -> bool {
    let now = clock::now();
    let Ok(queue) = Queue::open() else {
        return false;
    };
    if !queue.may_have_due(account, now) {
        return false;
    }
    let due = queue.list().is_ok_and(|(entries, _)| {
        entries
            .iter()
            .any(|e| e.meta.account == account && is_due(e, now))
    });
    if !due {
        let _ = queue.refresh_due_index();
    }
    due
}

/// The queue, its flush lock and its entries; `None` when a flush is running or the
/// queue cannot be read.
fn locked_listing() -> Option<(Queue, std::fs::File, Vec<Entry>)> {
    let queue = Queue::open().ok()?;
    let lock = queue.try_lock_flush().ok()??;
    let (entries, _) = queue.list().ok()?;
    Some((queue, lock, entries))
}

fn is_due(entry: &Entry, now: u64) -> bool {
    entry.state.next_attempt <= now
}

/// The entries of each account, accounts in the order of their oldest message.
fn by_account(entries: &[Entry]) -> Vec<(&str, Vec<&Entry>)> {
    let mut groups: Vec<(&str, Vec<&Entry>)> = Vec::new();
    for entry in entries {
        let name = entry.meta.account.as_str();
        match groups.iter_mut().find(|(n, _)| *n == name) {
            Some((_, due)) => due.push(entry),
            None => groups.push((name, vec![entry])),
        }
    }
    groups
}

/// One flush's work: records each outcome in the queue, the logfile and the report.
struct Flusher<'a> {
    queue: &'a Queue,
    journal: &'a Journal,
    verbose: bool,
    report: Report,
    /// System mode: the config that a failure's notice is written with (`notice`).
    notices: Option<&'a Config>,
    /// The queue ids of the notices written in this flush.
    noticed: Vec<String>,
}

impl<'a> Flusher<'a> {
    fn new(queue: &'a Queue, journal: &'a Journal, verbose: bool) -> Self {
        Flusher {
            queue,
            journal,
            verbose,
            report: Report::default(),
            notices: None,
            noticed: Vec::new(),
        }
    }

    /// Each account's entries over one session per account.
    fn accounts(&mut self, config: &Config, runtime: &tokio::runtime::Runtime, entries: &[Entry]) {
        for (name, due) in by_account(entries) {
            let tried = match config
                .account(name)
                .and_then(|a| provider::resolve(name, a))
                .map(|mut a| {
                    // Graph's copy writes cron's `To: root` as its alias.
                    a.aliases = crate::plan::expanded_aliases(config);
                    a
                }) {
                Ok(settings) => runtime.block_on(self.account(&settings, &due, None)),
                Err(e) => self.temporary_all(&due, &e.for_account(name)),
            };
            // The queue failing under one account (a full disk) leaves its messages where
            // they were; the other accounts' messages are still tried.
            if let Err(e) = tried {
                self.report
                    .note(Outcome::Unrecorded, format!("account {name}: {e}"));
            }
        }
    }

    /// Sends `entries` over one session (`session`, or a new one), reopened only when a
    /// failed transaction left it unusable; then QUIT.
    async fn account(
        &mut self,
        settings: &AccountSettings,
        entries: &[&Entry],
        mut session: Option<Transport>,
    ) -> Result<()> {
        for (i, entry) in entries.iter().enumerate() {
            let mut open = match session.take() {
                Some(s) => s,
                None => match transport::open(settings, self.verbose).await {
                    Ok(s) => s,
                    Err(e) => {
                        if e.class() == Class::NeedsUser {
                            notify::needs_user(settings, &e, self.journal);
                            let waiting = entries.len() - i;
                            self.report.needs_user(
                                &settings.name,
                                format!("{e} ({})", messages_wait(waiting)),
                            );
                        }
                        // No message is to blame: all of them wait for the next flush.
                        return self.temporary_all(&entries[i..], &e);
                    }
                },
            };
            let keep = self.send(settings, &mut open, entry).await?;
            session = keep.then_some(open);
        }
        if let Some(s) = session {
            s.close().await;
        }
        Ok(())
    }

    /// Sends one entry and records the outcome; true when the session can go on.
    async fn send(
        &mut self,
        settings: &AccountSettings,
        session: &mut Transport,
        entry: &Entry,
    ) -> Result<bool> {
        let message = match self.queue.message(&entry.id) {
            Ok(m) => m,
            Err(e) => {
                // Removed (`queue remove`) since it was listed, or unreadable.
                let line = format!("{}: skipped: {e}", entry.id);
                self.report.note(Outcome::Unreadable, line);
                return Ok(true);
            }
        };
        let mut payload = crate::spool::Payload::new();
        payload.push_spool(&message);
        let result = session
            .send(&entry.meta.envelope, &payload)
            .await
            .map_err(|e| e.for_account(&settings.name));
        let keep = session.is_usable() && !result.as_ref().is_err_and(Error::closes_session);
        match result {
            Ok(reply) => self.sent(entry, &reply)?,
            Err(e) if e.class() == Class::Permanent => self.permanent(entry, &e.to_string())?,
            // Passing, waiting for the user, or a reply lost after the data (sent again
            // later: at least once).
            Err(e) => self.temporary(entry, &e)?,
        }
        Ok(keep)
    }

    /// After the final 250: logged (with the server's queue id, which the reply carries)
    /// before the entry is removed, so even a crash in between that causes a duplicate
    /// leaves a record of the first delivery.
    fn sent(&mut self, entry: &Entry, reply: &Receipt) -> Result<()> {
        self.log(
            entry,
            &format!("result=sent id={} reply={:?}", entry.id, reply.to_string()),
        );
        queue::crash_point("flush-after-250");
        self.queue.remove_delivered(&entry.id)?;
        self.report
            .note(Outcome::Sent, format!("{}: sent: {reply}", entry.id));
        queue::crash_point("flush-after-remove");
        Ok(())
    }

    /// A temporary failure: back off, unless the message has waited too long already.
    fn temporary(&mut self, entry: &Entry, error: &Error) -> Result<()> {
        let why = error.to_string();
        let now = clock::now();
        if now.saturating_sub(entry.meta.created_at) > queue::MAX_AGE_SECS {
            let days = queue::MAX_AGE_SECS / 86400;
            return self.permanent(
                entry,
                &format!("gave up after {days} days in the queue; last error: {why}"),
            );
        }
        let wait = error.retry_after().unwrap_or(0);
        if let Err(e) = self.queue.defer(entry, &why, now, wait) {
            // Still queued as it was (due now): the next flush tries it again.
            self.log(
                entry,
                &format!(
                    "result=deferred id={} error={why:?} unrecorded={:?}",
                    entry.id,
                    e.to_string()
                ),
            );
            self.report.note(
                Outcome::Unrecorded,
                format!(
                    "{}: deferred: {why}; the queue could not record it: {e}",
                    entry.id
                ),
            );
            return Ok(());
        }
        self.log(
            entry,
            &format!(
                "result=deferred id={} attempts={} error={why:?}",
                entry.id,
                entry.state.attempts.saturating_add(1)
            ),
        );
        self.report
            .note(Outcome::Deferred, format!("{}: deferred: {why}", entry.id));
        Ok(())
    }

    fn temporary_all(&mut self, entries: &[&Entry], error: &Error) -> Result<()> {
        entries.iter().try_for_each(|e| self.temporary(e, error))
    }

    /// Moves the entry to `failed/` with the reason; it is never retried.
    fn permanent(&mut self, entry: &Entry, why: &str) -> Result<()> {
        self.queue.fail(entry, why)?;
        self.log(
            entry,
            &format!("result=failed id={} error={why:?}", entry.id),
        );
        self.report
            .note(Outcome::Failed, format!("{}: failed: {why}", entry.id));
        if let Some(config) = self.notices
            && let Some(id) = crate::notice::failed(config, self.queue, self.journal, entry, why)
        {
            self.noticed.push(id);
        }
        Ok(())
    }

    fn log(&self, entry: &Entry, result: &str) {
        self.journal.message(
            &entry.meta.account,
            &entry.meta.envelope,
            entry.size,
            result,
        );
    }
}

/// `mailq`-style listing of queued and failed messages: per message a line with id,
/// state, size, age, account, attempts (and when the next try is due), then the envelope,
/// then the last error. Unreadable entries are listed too, so none goes unnoticed.
pub fn listing(queue: &Queue) -> Result<String> {
    let (queued, bad) = queue.list()?;
    let (failed, bad_failed) = queue.list_failed()?;
    if queued.is_empty() && failed.is_empty() && bad.is_empty() && bad_failed.is_empty() {
        return Ok("Mail queue is empty\n".to_owned());
    }
    let now = clock::now();
    let mut out = String::new();
    for e in &queued {
        write_entry(&mut out, e, "queued", now);
    }
    for e in &failed {
        write_entry(&mut out, e, "failed", now);
    }
    for (b, label) in bad
        .iter()
        .map(|b| (b, "queued"))
        .chain(bad_failed.iter().map(|b| (b, "failed")))
    {
        let _ = writeln!(out, "{}  {label}  unreadable: {}", b.id, b.reason);
    }
    let unreadable = bad.len() + bad_failed.len();
    let _ = write!(out, "-- {} queued, {} failed", queued.len(), failed.len());
    let _ = match unreadable {
        0 => writeln!(out),
        n => writeln!(out, ", {n} unreadable"),
    };
    Ok(out)
}

fn write_entry(out: &mut String, e: &Entry, label: &str, now: u64) {
    let next = if label == "queued" && e.state.next_attempt > now {
        format!("  next try in {}", age(e.state.next_attempt - now))
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "{}  {label}  {} bytes  age {}  account {}  attempts {}{next}",
        e.id,
        e.size,
        age(now.saturating_sub(e.meta.created_at)),
        e.meta.account,
        e.state.attempts,
    );
    let envelope = &e.meta.envelope;
    let rcpts: Vec<String> = envelope
        .recipients
        .iter()
        .map(|r| format!("<{r}>"))
        .collect();
    let from = envelope.from.as_deref().unwrap_or("");
    let _ = writeln!(out, "  <{from}> -> {}", rcpts.join(", "));
    if let Some(err) = &e.state.last_error {
        let _ = writeln!(out, "  last error: {err}");
    }
}

fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}
