//! Sendmail mode, from parsed arguments to the outcome: read the config and the message,
//! resolve the plan, then print it (`--dry-run`) or deliver it. Prints nothing on success.
//!
//! A failed send is decided by who can fix it (`error::Class`, the contract's "Failures
//! and the queue"): a passing failure is queued (`queue = "on-failure"`); one that needs
//! the user, or whose outcome is uncertain, is queued only when the caller cannot keep
//! the message (`-oem`/`-oee`, as cron passes), else the caller gets the exit code and
//! keeps it; a permanent refusal is never queued.

use crate::cli::SendArgs;
use crate::clock;
use crate::config::{self, Config, QueuePolicy};
use crate::error::{Class, Error, Result};
use crate::journal::Journal;
use crate::message::Message;
use crate::plan::{self, SendPlan};
use crate::provider;
use crate::provider::AccountSettings;
use crate::queue::{self, Queue};
use crate::scope::{self, Mode};
use crate::spool::Payload;
use crate::transport::Receipt;
use crate::{flush, graph, maildrop, notify, transport};

pub fn run(args: &SendArgs) -> Result<()> {
    if scope::current() == Mode::Drop {
        return drop_for_the_system(args);
    }
    match args.mode.as_deref() {
        None | Some("m") => {}
        Some("p") => return list_queue(),
        Some(m @ ("s" | "d" | "i")) => {
            return Err(Error::usage(format!(
                "-b{m} is not supported: oauth2-sendmail submits one message from stdin"
            )));
        }
        Some(m) => return Err(Error::usage(format!("unsupported mode -b{m}"))),
    }
    if args.queue_run.is_some() && scope::current() == Mode::System {
        // Before the config: the maildrop empties even while the config is broken.
        maildrop::intake()?;
    }
    let config = config::load(args.config.as_deref())?;
    if args.queue_run.is_some() {
        return flush_queue(&config, args.verbose > 0);
    }
    let message = Message::read(std::io::stdin().lock())?;
    let plan = plan::resolve(args, &config, &message, plan::Context::current())?;
    let mut account = provider::resolve(&plan.account, config.account(&plan.account)?)?;
    // Graph's copy writes cron's `To: root` as its alias.
    account.aliases = plan::expanded_aliases(&config);
    let parts = message.render(&plan.edits);
    if args.dry_run {
        return print_plan(&plan, &account, &parts);
    }
    let size = parts.len();
    let journal = Journal::from_config(&config);
    let log = |result: &str| journal.message(&plan.account, &plan.envelope, size, result);
    let policy = account.config.queue;
    if args.queue_only() || policy == QueuePolicy::Always {
        let id = enqueue(&plan, &parts, None)?;
        log(&format!("result=queued id={id}"));
        return Ok(());
    }
    let runtime = crate::runtime::single_threaded()?;
    let outcome = runtime.block_on(send_now(
        &account,
        &plan,
        &parts,
        &journal,
        args.verbose > 0,
    ));
    // Every task the send awaited has ended; a blocking thread that outlives it (a file
    // read, the system's roots after an early failure) is not waited for.
    runtime.shutdown_background();
    let e = match outcome {
        Ok(reply) => {
            log(&format!("result=sent reply={:?}", reply.to_string()));
            return Ok(());
        }
        Err(e) => e,
    };
    notify::needs_user(&account, &e, &journal);
    if scope::current() == Mode::System
        && e.class() == Class::Permanent
        && args.caller_cannot_keep()
    {
        return keep_refused(&config, &plan, &parts, &e, &journal);
    }
    if should_queue(e.class(), policy, args.caller_cannot_keep()) {
        // Exit 0: the message is safe on disk, and the next flush sends it.
        let id = enqueue(&plan, &parts, Some(&e))?;
        log(&format!("result=queued id={id} after={:?}", e.to_string()));
        return Ok(());
    }
    log(&format!(
        "result=failed exit={} error={:?}",
        e.exit_code(),
        e.to_string()
    ));
    Err(e)
}

/// System mode, a caller that cannot keep the message (cron's `-oem`): a permanent refusal
/// is kept in the system queue's `failed/` and a notice goes to root's alias (exit 0),
/// since cron would otherwise lose the job's output with nobody told.
fn keep_refused(
    config: &Config,
    plan: &SendPlan,
    parts: &Payload<'_>,
    e: &Error,
    journal: &Journal,
) -> Result<()> {
    let id = enqueue(plan, parts, Some(e))?;
    let queue = Queue::open()?;
    let (entries, _) = queue.list()?;
    let Some(entry) = entries.into_iter().find(|x| x.id == id) else {
        return Err(Error::io(format!(
            "queued message {id} cannot be read back"
        )));
    };
    let why = e.to_string();
    queue.fail(&entry, &why)?;
    journal.message(
        &plan.account,
        &plan.envelope,
        entry.size,
        &format!("result=failed id={id} error={why:?}"),
    );
    crate::notice::failed(config, &queue, journal, &entry, &why);
    Ok(())
}

/// A user with no config of their own on a host whose MTA is the system account: the
/// message goes into the maildrop for the root flusher; what needs the system config
/// (the queue, a dry run) is root's.
fn drop_for_the_system(args: &SendArgs) -> Result<()> {
    match (args.mode.as_deref(), args.queue_run.is_some(), args.dry_run) {
        (Some("p"), _, _) => Err(scope::not_yours("queue list")),
        (_, true, _) => Err(scope::not_yours("-q")),
        (_, _, true) => Err(scope::not_yours("status")),
        (None | Some("m"), _, _) => maildrop::drop_message(args),
        (Some(m), _, _) => Err(Error::usage(format!("unsupported mode -b{m}"))),
    }
}

/// Whether a failed send is queued (exit 0) rather than handed back to the caller.
fn should_queue(class: Class, policy: QueuePolicy, caller_cannot_keep: bool) -> bool {
    policy == QueuePolicy::OnFailure
        && match class {
            Class::Transient => true,
            Class::NeedsUser | Class::Uncertain => caller_cannot_keep,
            Class::Permanent => false,
        }
}

/// Sends over a fresh session; with `flush_on_send`, the account's due queue follows over
/// the same connection.
async fn send_now(
    account: &AccountSettings,
    plan: &SendPlan,
    parts: &Payload<'_>,
    journal: &Journal,
    verbose: bool,
) -> Result<Receipt> {
    let mut transport = transport::open(account, verbose).await?;
    // The session and the Graph client name their server in their errors.
    let context = |e: Error| e.for_account(&account.name);
    if !(account.config.flush_on_send && flush::has_due(&account.name)) {
        // Nothing follows: SMTP's QUIT goes with the end of the data, and on errors too.
        return transport
            .send_and_close(&plan.envelope, parts)
            .await
            .map_err(context);
    }
    let receipt = match transport.send(&plan.envelope, parts).await {
        Ok(receipt) => receipt,
        Err(e) => {
            transport.close().await;
            return Err(context(e));
        }
    };
    flush::flush_after_send(account, transport, journal, verbose).await;
    Ok(receipt)
}

/// Queues the message; `attempt` is the failure of the attempt just made, which counts.
fn enqueue(plan: &SendPlan, parts: &Payload<'_>, attempt: Option<&Error>) -> Result<String> {
    let now = clock::now();
    let meta = queue::Meta {
        account: plan.account.clone(),
        envelope: plan.envelope.clone(),
        created_at: now,
        submitter: None,
    };
    let queue = Queue::open()?;
    match attempt {
        None => queue.enqueue(&meta, parts),
        Some(e) => queue.enqueue_after_attempt(
            &meta,
            parts,
            &e.to_string(),
            now,
            e.retry_after().unwrap_or(0),
        ),
    }
    .map_err(|e| e.for_account(&plan.account))
}

/// `-bp` (and `mailq`): the queue listing.
pub fn list_queue() -> Result<()> {
    crate::stdout::print(&flush::listing(&Queue::open()?)?)
}

/// `-q`: flush the due messages quietly, as cron runs it and mails any output: only
/// messages that failed for good or cannot be read, and accounts that need a login, are
/// printed (stderr, one line each); idle refresh tokens are renewed. The exit code is
/// `queue flush`'s (0; 75 some deferred; 77 an account needs a login; 69 some failed).
fn flush_queue(config: &Config, verbose: bool) -> Result<()> {
    if scope::current() == Mode::System {
        maildrop::pickup(config, &Journal::from_config(config))?;
    }
    let report = flush::flush(config, flush::Scope::Due, verbose)?;
    for line in report.problems().chain(report.logins()) {
        crate::stderr::line(line);
    }
    match report.exit_code() {
        0 => Ok(()),
        code => Err(Error::reported(code)),
    }
}

fn print_plan(
    plan: &SendPlan,
    account: &provider::AccountSettings,
    parts: &Payload<'_>,
) -> Result<()> {
    let size = parts.len();
    let route = transport::Route::for_account(account);
    if route.starts_with_graph() && account.graph.is_some() {
        // What Graph would refuse, a dry run refuses too (no network needed).
        graph_check(&plan.envelope, parts, &account.aliases)?;
    }
    let way = route.plan(account);
    let text = format!(
        "account: {} ({way})\n{plan}size: {size} bytes\n",
        account.name
    );
    crate::stdout::print(&text)
}

/// What Graph would refuse in the header, refused by a dry run too (no network needed).
fn graph_check(
    envelope: &crate::smtp::Envelope,
    parts: &Payload<'_>,
    aliases: &std::collections::BTreeMap<String, Vec<String>>,
) -> Result<()> {
    let whole = parts
        .to_vec()
        .map_err(|e| Error::io(format!("cannot read the message: {e}")))?;
    graph::for_graph(envelope, whole, aliases).map(drop)
}
