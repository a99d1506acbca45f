//! Flushing the queue: for each account, one SMTP session for all of its due messages,
//! oldest first. A message leaves the queue only after the server's final 250; a
//! permanent refusal moves it to `failed/` with the reply; a temporary one backs off.
//! Failing to open a session never fails a message: they all wait for the next flush.

use std::fmt::Write as _;

use crate::config::Config;
use crate::deliver;
use crate::error::{EX_TEMPFAIL, EX_UNAVAILABLE, Error, Result};
use crate::provider::{self, AccountSettings};
use crate::queue::{self, Entry, Queue};
use crate::smtp::Session;

/// What a flush did, one line per message, and how it went overall.
#[derive(Debug, Default)]
pub struct Report {
    pub lines: Vec<String>,
    pub sent: usize,
    pub deferred: usize,
    pub failed: usize,
    pub unreadable: usize,
}

impl Report {
    /// 69 when a message failed for good in this flush, 75 when some wait for another
    /// try, else 0.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        if self.failed > 0 {
            EX_UNAVAILABLE
        } else if self.deferred > 0 || self.unreadable > 0 {
            EX_TEMPFAIL
        } else {
            0
        }
    }
}

/// Flushes every account's due messages (or only `only`'s), holding the flush lock.
pub fn flush(config: &Config, only: Option<&str>, verbose: bool) -> Result<Report> {
    let queue = Queue::open()?;
    let _lock = queue.lock_flush()?;
    // Listed under the lock: a flush that waited sees what the previous one left.
    let (entries, unreadable) = queue.list()?;
    let mut report = Report::default();
    for bad in &unreadable {
        report.unreadable += 1;
        report.lines.push(format!(
            "{}: unreadable, skipped (left in place): {}",
            bad.id, bad.reason
        ));
    }
    let now = queue::now();
    let mut accounts: Vec<&str> = Vec::new();
    for e in &entries {
        if !accounts.contains(&e.meta.account.as_str()) && only.is_none_or(|o| o == e.meta.account)
        {
            accounts.push(&e.meta.account);
        }
    }
    let runtime = crate::runtime()?;
    for name in accounts {
        let mine: Vec<&Entry> = entries.iter().filter(|e| e.meta.account == name).collect();
        let due = expire_old(&queue, &mine, now, &mut report)?;
        if due.is_empty() {
            continue;
        }
        let settings = config
            .account(name)
            .and_then(|a| provider::resolve(name, a));
        match settings {
            Ok(settings) => runtime.block_on(flush_account(
                &queue,
                &settings,
                &due,
                None,
                verbose,
                &mut report,
            ))?,
            Err(e) => defer_all(&queue, &due, &e, now, &mut report)?,
        }
    }
    Ok(report)
}

/// After a direct send: flush the same account's due messages over the open session (if
/// no other flush is running), then QUIT. Problems here never fail the send just made.
pub async fn flush_after_send(settings: &AccountSettings, session: Session, verbose: bool) {
    let due = Queue::open().and_then(|queue| {
        let lock = queue.try_lock_flush()?;
        let (entries, _) = queue.list()?;
        Ok((queue, lock, entries))
    });
    let Ok((queue, Some(_lock), entries)) = due else {
        session.quit().await;
        return;
    };
    let now = queue::now();
    let due: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.meta.account == settings.name && e.state.next_attempt <= now)
        .collect();
    let mut report = Report::default();
    let _ = flush_account(&queue, settings, &due, Some(session), verbose, &mut report).await;
}

/// Moves entries older than the maximum age to `failed/`; returns the ones due now.
fn expire_old<'a>(
    queue: &Queue,
    entries: &[&'a Entry],
    now: u64,
    report: &mut Report,
) -> Result<Vec<&'a Entry>> {
    let mut due = Vec::new();
    for &e in entries {
        if now.saturating_sub(e.meta.created_at) > queue::MAX_AGE_SECS {
            let why = format!(
                "gave up after {} days; last error: {}",
                queue::MAX_AGE_SECS / 86400,
                e.state.last_error.as_deref().unwrap_or("none")
            );
            queue.fail(e, &why)?;
            report.failed += 1;
            report.lines.push(format!("{}: failed: {why}", e.id));
        } else if e.state.next_attempt <= now {
            due.push(e);
        }
    }
    Ok(due)
}

fn defer_all(
    queue: &Queue,
    entries: &[&Entry],
    error: &Error,
    now: u64,
    report: &mut Report,
) -> Result<()> {
    let why = error.to_string();
    for e in entries {
        queue.defer(e, &why, now)?;
        report.deferred += 1;
        report.lines.push(format!("{}: deferred: {why}", e.id));
    }
    Ok(())
}

/// Sends `entries` over one session (reopened only after a failed transaction, whose
/// connection may be gone), then QUIT.
async fn flush_account(
    queue: &Queue,
    settings: &AccountSettings,
    entries: &[&Entry],
    mut session: Option<Session>,
    verbose: bool,
    report: &mut Report,
) -> Result<()> {
    let server = settings.smtp.address();
    for (i, entry) in entries.iter().enumerate() {
        let mut open = match session.take() {
            Some(s) => s,
            None => match deliver::open(settings, verbose).await {
                Ok(s) => s,
                Err(e) => {
                    crate::notify::login_needed(settings, &e);
                    return defer_all(queue, &entries[i..], &e, queue::now(), report);
                }
            },
        };
        let message = queue.message(&entry.id)?;
        match open.send(&entry.meta.envelope, &[&message]).await {
            Ok(reply) => {
                queue::crash_point("flush-after-250");
                queue.remove_delivered(&entry.id)?;
                report.sent += 1;
                report.lines.push(format!("{}: sent: {reply}", entry.id));
                session = Some(open);
            }
            Err(e) => {
                let e = e.for_account(&settings.name).at_server(&server);
                let why = e.to_string();
                if e.is_temporary() {
                    queue.defer(entry, &why, queue::now())?;
                    report.deferred += 1;
                    report.lines.push(format!("{}: deferred: {why}", entry.id));
                } else {
                    queue.fail(entry, &why)?;
                    report.failed += 1;
                    report.lines.push(format!("{}: failed: {why}", entry.id));
                }
            }
        }
    }
    if let Some(s) = session {
        s.quit().await;
    }
    Ok(())
}

/// `mailq`-style listing of queued and failed messages.
pub fn listing(queue: &Queue) -> Result<String> {
    let (queued, bad) = queue.list()?;
    let (failed, bad_failed) = queue.list_failed()?;
    if queued.is_empty() && failed.is_empty() && bad.is_empty() && bad_failed.is_empty() {
        return Ok("Mail queue is empty\n".to_owned());
    }
    let now = queue::now();
    let mut out = String::new();
    for (label, entries) in [("queued", &queued), ("failed", &failed)] {
        for e in entries {
            let _ = writeln!(
                out,
                "{}  {label}  {} bytes  age {}  account {}  attempts {}{}",
                e.id,
                e.size,
                age(now.saturating_sub(e.meta.created_at)),
                e.meta.account,
                e.state.attempts,
                if label == "queued" && e.state.next_attempt > now {
                    format!("  next try in {}", age(e.state.next_attempt - now))
                } else {
                    String::new()
                }
            );
            let from = e.meta.envelope.from.as_deref().unwrap_or("");
            let rcpts: Vec<String> = e
                .meta
                .envelope
                .recipients
                .iter()
                .map(|r| format!("<{r}>"))
                .collect();
            let _ = writeln!(out, "  <{from}> -> {}", rcpts.join(", "));
            if let Some(err) = &e.state.last_error {
                let _ = writeln!(out, "  last error: {err}");
            }
        }
    }
    for b in bad.iter().chain(&bad_failed) {
        let _ = writeln!(out, "{}  unreadable: {}", b.id, b.reason);
    }
    let _ = writeln!(out, "-- {} queued, {} failed", queued.len(), failed.len());
    Ok(out)
}

fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}
