//! System mode: a short mail to the person whose message failed for good — what failed,
//! the server's reply, what to run — since a daemon or a user behind the maildrop has no
//! terminal to read an exit code on. It goes to the submitting user's `[aliases]` entry
//! (root's when they have none, or for root's own mail), from the system account, through
//! the system queue like any message; a notice is never sent about a notice. The account's
//! `notify_cmd` runs too.

use crate::cli::SendArgs;
use crate::clock;
use crate::config::Config;
use crate::error::Result;
use crate::journal::Journal;
use crate::message::Message;
use crate::plan;
use crate::queue::{self, Entry, Queue};

/// The `submitter` of a notice in the queue: a failed notice is not noticed again.
pub const NOTICE_SUBMITTER: &str = "MAILER-DAEMON";

/// Queues a notice that `entry` failed for good with `why`; returns its queue id, or
/// `None` when there is nobody to tell (a notice, or no alias for the user nor root).
pub fn failed(
    config: &Config,
    queue: &Queue,
    journal: &Journal,
    entry: &Entry,
    why: &str,
) -> Option<String> {
    let submitter = entry.meta.submitter.as_deref();
    if submitter == Some(NOTICE_SUBMITTER) {
        return None;
    }
    if let Ok(settings) = config
        .account(&entry.meta.account)
        .and_then(|a| crate::provider::resolve(&entry.meta.account, a))
    {
        crate::notify::failed_for_good(
            &settings,
            &format!("message {} failed for good: {why}", entry.id),
            journal,
        );
    }
    let text = failed_body(entry, why);
    tell(
        config,
        queue,
        journal,
        Some(&entry.meta.account),
        submitter,
        &entry.id,
        &text,
    )
}

/// Queues a notice that the maildrop entry `name` of `submitter` was held: the system
/// config refused the message itself (`why`), so it waits in `held/` for the admin.
pub fn held(
    config: &Config,
    queue: &Queue,
    journal: &Journal,
    submitter: &str,
    name: &str,
    why: &str,
) -> Option<String> {
    let host = hostname();
    let why = why.replace(['\r', '\n'], " ");
    let text = format!(
        "Subject: Unsent mail on {host}\nAuto-Submitted: auto-generated\n\
         Content-Type: text/plain; charset=utf-8\n\n\
         A message that {submitter} handed to sendmail on {host} could not be sent:\n\n\
         \x20 {why}\n\n\
         It is kept for the admin in {}/{name}.\n",
        crate::paths::system::HELD
    );
    tell(config, queue, journal, None, Some(submitter), name, &text)
}

/// Queues `text` to the submitter's alias, else root's; logs what was done.
fn tell(
    config: &Config,
    queue: &Queue,
    journal: &Journal,
    account: Option<&str>,
    submitter: Option<&str>,
    about: &str,
    text: &str,
) -> Option<String> {
    let to = [submitter.unwrap_or("root"), "root"];
    let queued = to
        .iter()
        .find_map(|name| enqueue(config, queue, account, name, text).ok());
    let who = submitter.unwrap_or("root");
    match &queued {
        Some(id) => journal.event(&format!("notice={id} about={about} to={who}")),
        None => journal.event(&format!(
            "about={about} result=no-notice (no [aliases] entry for {who} nor root, or no \
             default account)"
        )),
    }
    queued
}

fn enqueue(
    config: &Config,
    queue: &Queue,
    account: Option<&str>,
    to: &str,
    text: &str,
) -> Result<String> {
    let message = Message::read(text.as_bytes())?;
    let args = SendArgs {
        recipients: vec![to.to_owned()],
        account: account.map(str::to_owned),
        full_name: Some("oauth2-sendmail".to_owned()),
        ..SendArgs::default()
    };
    let plan = plan::resolve(&args, config, &message, plan::Context::current())?;
    let parts = message.render(&plan.edits);
    queue.enqueue(
        &queue::Meta {
            account: plan.account,
            envelope: plan.envelope,
            created_at: clock::now(),
            submitter: Some(NOTICE_SUBMITTER.to_owned()),
        },
        &parts,
    )
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "this host".to_owned(), |h| h.trim().to_owned())
}

/// The notice: headers (no From: the plan adds the account's) and a few lines.
fn failed_body(entry: &Entry, why: &str) -> String {
    let host = hostname();
    let why = why.replace(['\r', '\n'], " ");
    let from = entry.meta.envelope.from.as_deref().unwrap_or("");
    format!(
        "Subject: Undelivered mail on {host}\nAuto-Submitted: auto-generated\n\
         Content-Type: text/plain; charset=utf-8\n\n\
         A message could not be delivered and was kept on {host}.\n\n\
         \x20 queue id:     {id}\n\
         \x20 submitted by: {by}\n\
         \x20 from:         <{from}>\n\
         \x20 to:           {to}\n\
         \x20 reason:       {why}\n\n\
         It is kept in the system queue's failed/ folder. To see it:\n\
         \x20 sudo oauth2-sendmail --system queue list\n\
         To remove it:\n\
         \x20 sudo oauth2-sendmail --system queue remove {id}\n",
        id = entry.id,
        by = entry.meta.submitter.as_deref().unwrap_or("root"),
        to = entry.meta.envelope.recipients.join(", "),
    )
}
