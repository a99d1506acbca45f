//! Sendmail mode, from parsed arguments to the outcome: read the config and the message,
//! resolve the plan, then print it (`--dry-run`) or deliver it. Prints nothing on success.

use std::io::Write;
use std::path::Path;

use crate::cli::SendArgs;
use crate::clock;
use crate::config::{self, Config, QueuePolicy};
use crate::error::{Error, Result};
use crate::message::Message;
use crate::plan::{self, SendPlan};
use crate::provider;
use crate::provider::AccountSettings;
use crate::queue::{self, Queue};
use crate::smtp::Envelope;
use crate::transport::Receipt;
use crate::{deliver, flush, notify};

pub fn run(args: &SendArgs) -> Result<()> {
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
    let config = config::load(args.config.as_deref())?;
    if args.queue_run.is_some() {
        return flush_queue(&config, args.verbose > 0);
    }
    let message = Message::read(std::io::stdin().lock())?;
    let plan = plan::resolve(args, &config, &message, context())?;
    let account = provider::resolve(&plan.account, config.account(&plan.account)?)?;
    let rendered = message.render(&plan.edits);
    let parts: Vec<&[u8]> = rendered.iter().map(AsRef::as_ref).collect();
    if args.dry_run {
        return print_plan(&plan, &account, &parts);
    }
    let size: usize = parts.iter().map(|p| p.len()).sum();
    let policy = account.config.queue;
    if args.queue_only() || policy == QueuePolicy::Always {
        let id = enqueue(&plan, &parts)?;
        log(&config, &plan, size, &format!("result=queued id={id}"));
        return Ok(());
    }
    let logfile = config.logfile.as_deref();
    let outcome =
        crate::runtime()?.block_on(send_now(&account, &plan, &parts, logfile, args.verbose > 0));
    if let Err(e) = &outcome {
        notify::login_needed(&account, e);
    }
    match outcome {
        // Exit 0: the message is safe on disk, and the next flush sends it.
        Err(e) if e.is_temporary() && policy == QueuePolicy::OnFailure => {
            let id = enqueue(&plan, &parts)?;
            let result = format!("result=queued id={id} after={:?}", e.to_string());
            log(&config, &plan, size, &result);
            Ok(())
        }
        Ok(reply) => {
            let result = format!("result=sent reply={:?}", reply.to_string());
            log(&config, &plan, size, &result);
            Ok(())
        }
        Err(e) => {
            let result = format!(
                "result=failed exit={} error={:?}",
                e.exit_code(),
                e.to_string()
            );
            log(&config, &plan, size, &result);
            Err(e)
        }
    }
}

/// Sends over a fresh session; with `flush_on_send`, the account's queue follows over the
/// same connection.
async fn send_now(
    account: &AccountSettings,
    plan: &SendPlan,
    parts: &[&[u8]],
    logfile: Option<&Path>,
    verbose: bool,
) -> Result<Receipt> {
    let mut session = deliver::open(account, verbose).await?;
    let reply = session.send(&plan.envelope, parts).await.map_err(|e| {
        e.for_account(&account.name)
            .at_server(&account.smtp.address())
    })?;
    if account.config.flush_on_send {
        flush::flush_after_send(account, session, logfile, verbose).await;
    } else {
        session.close().await;
    }
    Ok(reply)
}

fn enqueue(plan: &SendPlan, parts: &[&[u8]]) -> Result<String> {
    let meta = queue::Meta {
        account: plan.account.clone(),
        envelope: plan.envelope.clone(),
        created_at: clock::now(),
    };
    Queue::open()?
        .enqueue(&meta, parts)
        .map_err(|e| e.for_account(&plan.account))
}

/// `-bp` (and `mailq`): the queue listing.
pub fn list_queue() -> Result<()> {
    let text = flush::listing(&Queue::open()?)?;
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(|e| Error::io(format!("cannot write to stdout: {e}")))
}

/// `-q`: flush quietly, as cron runs it and mails any output: only messages that failed
/// for good or cannot be read are printed (stderr, one line each). The exit code is
/// `queue flush`'s (0, 75 some deferred, 69 some failed).
fn flush_queue(config: &Config, verbose: bool) -> Result<()> {
    let report = flush::flush(config, verbose)?;
    for line in report.problems() {
        eprintln!("oauth2-sendmail: {line}");
    }
    match report.exit_code() {
        0 => Ok(()),
        code => Err(Error::from(crate::error::Kind::Reported(code))),
    }
}

/// The clock, the local UTC offset and a random seed for the plan.
fn context() -> plan::Context {
    let now = crate::clock::now();
    let mut seed = [0u8; 8];
    // A Message-ID needs uniqueness, not secrecy; the time and pid still vary without it.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed);
    plan::Context {
        now,
        random: u64::from_le_bytes(seed) ^ u64::from(std::process::id()),
    }
}

fn print_plan(plan: &SendPlan, account: &provider::AccountSettings, parts: &[&[u8]]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let size: usize = parts.iter().map(|p| p.len()).sum();
    let tls = match account.smtp.tls {
        config::TlsMode::Starttls => "starttls",
        config::TlsMode::Implicit => "implicit tls",
    };
    let text = format!(
        "account: {} ({}, {tls}, user {})\n{plan}size: {size} bytes\n",
        account.name,
        account.smtp.address(),
        account.email,
    );
    out.write_all(text.as_bytes())
        .map_err(|e| Error::io(format!("cannot write to stdout: {e}")))
}

/// One line per message in the optional logfile; never a secret (errors hold none).
fn log(config: &Config, plan: &SendPlan, size: usize, result: &str) {
    let size = u64::try_from(size).unwrap_or(u64::MAX);
    append_log(
        config.logfile.as_deref(),
        &plan.account,
        &plan.envelope,
        size,
        result,
    );
}

/// Appends `TIME account=… from=<…> recipients=… size=… RESULT` to the logfile, if any.
/// Also used by the queue flush, so each message's whole story is in one place.
pub fn append_log(
    logfile: Option<&Path>,
    account: &str,
    envelope: &Envelope,
    size: u64,
    result: &str,
) {
    let Some(path) = logfile else { return };
    let from = envelope.from.as_deref().unwrap_or("");
    let rcpts = envelope.recipients.join(",");
    let line = format!(
        "{} account={account} from=<{from}> recipients={rcpts} size={size} {result}\n",
        clock::now()
    );
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    // The log is a convenience: failing to write it must not fail a sent message.
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
}
