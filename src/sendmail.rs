//! Sendmail mode, from parsed arguments to the outcome: read the config and the message,
//! resolve the plan, then print it (`--dry-run`) or deliver it. Prints nothing on success.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::cli::SendArgs;
use crate::config::{self, Config};
use crate::error::{Error, Result};
use crate::message::Message;
use crate::plan::{self, SendPlan};
use crate::provider;
use crate::{deliver, runtime};

pub fn run(args: &SendArgs) -> Result<()> {
    match args.mode.as_deref() {
        None | Some("m") => {}
        Some("p") => return Err(Error::usage("-bp: there is no queue in this version yet")),
        Some(m @ ("s" | "d" | "i")) => {
            return Err(Error::usage(format!(
                "-b{m} is not supported: oauth2-sendmail submits one message from stdin"
            )));
        }
        Some(m) => return Err(Error::usage(format!("unsupported mode -b{m}"))),
    }
    if args.queue_run.is_some() {
        return Err(Error::usage("-q: there is no queue in this version yet"));
    }
    let config = config::load(args.config.as_deref())?;
    let message = Message::read(std::io::stdin().lock())?;
    let plan = plan::resolve(args, &config, &message, context())?;
    let account = provider::resolve(&plan.account, config.account(&plan.account)?)?;
    let rendered = message.render(&plan.edits);
    let parts: Vec<&[u8]> = rendered.iter().map(AsRef::as_ref).collect();
    if args.dry_run {
        return print_plan(&plan, &account, &parts);
    }
    let size: usize = parts.iter().map(|p| p.len()).sum();
    let outcome = runtime()?.block_on(deliver::deliver(
        &account,
        &plan.envelope,
        &parts,
        args.verbose > 0,
    ));
    log(
        &config,
        &plan,
        size,
        outcome.as_ref().map(ToString::to_string),
    );
    outcome.map(drop)
}

/// The clock, the local UTC offset and a random seed for the plan.
fn context() -> plan::Context {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
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
fn log(config: &Config, plan: &SendPlan, size: usize, outcome: Result<String, &Error>) {
    let Some(path) = &config.logfile else { return };
    let from = plan.envelope.from.as_deref().unwrap_or("");
    let rcpts = plan.envelope.recipients.join(",");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let result = match outcome {
        Ok(reply) => format!("result=sent reply={reply:?}"),
        Err(e) => format!(
            "result=failed exit={} error={:?}",
            e.exit_code(),
            e.to_string()
        ),
    };
    let line = format!(
        "{now} account={} from=<{from}> recipients={rcpts} size={size} {result}\n",
        plan.account
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
