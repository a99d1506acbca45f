//! The management words: `login` (the flows are in `oauth::login`), `token`, `status`,
//! `check`, `logout`, `queue`.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use crate::cli::{FlowArg, LoginArgs, Manage, ManageArgs, QueueAction};
use crate::clock;
use crate::config::{self, Config, Flow, ProviderKind};
use crate::error::{Error, Result};
use crate::oauth::{self, store::TokenStore};
use crate::provider::{self, AccountSettings};
use crate::queue::Queue;
use crate::{deliver, flush, runtime, sendmail};

pub fn run(args: ManageArgs) -> Result<()> {
    if let Manage::Queue { action } = &args.command {
        return queue(args.config.as_deref(), action);
    }
    let config = config::load(args.config.as_deref())?;
    match args.command {
        Manage::Token { account } => token(&settings(&config, account.as_deref())?),
        Manage::Status { account } => status(&config, account.as_deref()),
        Manage::Check { account } => check(&settings(&config, account.as_deref())?),
        Manage::Logout { account } => logout(&settings(&config, Some(&account))?),
        Manage::Login(args) => login(&config, &args),
        Manage::Queue { .. } => unreachable!("the queue is handled above"),
    }
}

/// The named account (or the default one) with its provider's defaults.
fn settings(config: &Config, name: Option<&str>) -> Result<AccountSettings> {
    let name = match name {
        Some(n) => n,
        None => config.default_account_name()?,
    };
    provider::resolve(name, config.account(name)?)
}

fn print(text: &str) -> Result<()> {
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(|e| Error::io(format!("cannot write to stdout: {e}")))
}

/// Signs in by the account's flow (or `--flow`) and stores the tokens; one line on stdout.
fn login(config: &Config, args: &LoginArgs) -> Result<()> {
    let name = match args.account.as_deref() {
        Some(n) => n,
        None => config.default_account_name()?,
    };
    let mut configured = config.account(name)?.clone();
    if let Some(flow) = args.flow {
        // Before resolving: the flow decides the default scopes (app-only or delegated).
        configured.flow = Some(flow_of(flow));
    }
    let account = provider::resolve(name, &configured)?;
    let options = oauth::login::Options {
        no_browser: args.no_browser,
        import_refresh_token: args.import_refresh_token.clone(),
    };
    let runtime = runtime()?;
    let outcome = runtime.block_on(oauth::login::login(&account, &options));
    // Paste mode may leave a read of stdin blocked on its thread: do not wait for it.
    runtime.shutdown_background();
    let done = outcome.map_err(|e| e.for_account(&account.name))?;
    if !done.has_refresh_token && account.oauth.flow != Flow::ClientCredentials {
        eprintln!(
            "oauth2-sendmail: account {}: warning: no refresh token was issued (is offline_access \
             among the scopes?): a new login is needed when the access token expires",
            account.name
        );
    }
    let who =
        if account.oauth.flow == Flow::ClientCredentials && args.import_refresh_token.is_none() {
            format!("app-only access for {} works", account.email)
        } else {
            format!("logged in as {}", account.email)
        };
    print(&format!(
        "account {}: {who}; access token valid until {}\n",
        account.name,
        clock::utc(done.expires_at)
    ))
}

fn flow_of(flow: FlowArg) -> Flow {
    match flow {
        FlowArg::Authcode => Flow::Authcode,
        FlowArg::Devicecode => Flow::Devicecode,
        FlowArg::Password => Flow::Password,
        FlowArg::ClientCredentials => Flow::ClientCredentials,
    }
}

/// Prints a valid access token: for mbsync `PassCmd`, msmtp `passwordeval`, scripts.
fn token(account: &AccountSettings) -> Result<()> {
    let token = runtime()?
        .block_on(oauth::access_token(account, None))
        .map_err(|e| e.for_account(&account.name))?;
    print(&format!("{}\n", token.secret))
}

/// Connects, authenticates and quits, sending nothing; `auto` checks SMTP and Graph.
fn check(account: &AccountSettings) -> Result<()> {
    use crate::config::TransportKind;
    let rt = runtime()?;
    let smtp = || {
        rt.block_on(async {
            let session = deliver::open_smtp(account, false).await?;
            session.quit().await;
            Ok::<_, Error>(format!(
                "account {}: {} accepted XOAUTH2 for {}\n",
                account.name,
                account.smtp.address(),
                account.email
            ))
        })
    };
    let graph = || {
        rt.block_on(async {
            let client = crate::graph::Client::open(account, false)
                .await
                .map_err(|e| e.for_account(&account.name))?;
            client.reach().await?;
            Ok::<_, Error>(format!(
                "account {}: Microsoft Graph ({}) reachable, token for {} valid (sending \
                 needs Mail.Send, which only a send proves)\n",
                account.name,
                client.host(),
                account
                    .graph
                    .as_ref()
                    .map_or(String::new(), |g| g.scopes.join(" "))
            ))
        })
    };
    match account.config.transport {
        TransportKind::Smtp => print(&smtp()?),
        TransportKind::Graph => print(&graph()?),
        TransportKind::Auto => {
            let first = match smtp() {
                Ok(line) => {
                    print(&line)?;
                    None
                }
                Err(e) if crate::transport::is_smtp_auth_disabled(&e) => {
                    crate::transport::remember_graph(&account.name, &e);
                    print(&format!(
                        "account {}: SMTP AUTH is disabled ({e}); transport = \"auto\" sends \
                         through Microsoft Graph\n",
                        account.name
                    ))?;
                    None
                }
                Err(e) => Some(e),
            };
            let second = graph().and_then(|line| print(&line));
            match (first, second) {
                (Some(e), _) | (None, Err(e)) => Err(e),
                (None, Ok(())) => Ok(()),
            }
        }
    }
}

fn logout(account: &AccountSettings) -> Result<()> {
    let store = TokenStore::new(account)?;
    let removed = store.remove()?;
    // The Graph token goes too; it was got with the refresh token just deleted.
    let removed = store.graph().remove()? || removed;
    print(&format!(
        "account {}: {}\n",
        account.name,
        if removed {
            "tokens deleted"
        } else {
            "no tokens were stored"
        }
    ))
}

/// Accounts, their provider and server, and the state of their tokens: never a secret.
fn status(config: &Config, only: Option<&str>) -> Result<()> {
    if let Some(name) = only {
        config.account(name)?;
    }
    let now = clock::now();
    let mut out = String::new();
    for name in config
        .accounts
        .keys()
        .filter(|n| only.is_none_or(|o| o == *n))
    {
        let account = provider::resolve(name, &config.accounts[name])?;
        let default = config.default_account_name().ok() == Some(name.as_str());
        let _ = write!(
            out,
            "{name}{}\n  provider: {}\n  email: {}\n  server: {}\n  transport: {}\n  flow: {}\n",
            if default { " (default)" } else { "" },
            provider_name(account.provider),
            account.email,
            account.smtp.address(),
            crate::transport::describe(&account),
            flow_name(account.oauth.flow),
        );
        let state = match TokenStore::new(&account).and_then(|s| s.load()) {
            Ok(Some(t)) => token_state(&t, now),
            Ok(None) => format!("  token: none (needs login: oauth2-sendmail login {name})\n"),
            Err(e) => format!("  token: unreadable: {e}\n"),
        };
        out.push_str(&state);
    }
    let queue = Queue::open()?;
    let count = |(entries, bad): (Vec<_>, Vec<_>)| entries.len() + bad.len();
    let _ = writeln!(
        out,
        "queue: {} queued, {} failed",
        count(queue.list()?),
        count(queue.list_failed()?)
    );
    print(&out)
}

/// The provider as the config spells it.
fn provider_name(provider: ProviderKind) -> &'static str {
    match provider {
        ProviderKind::Microsoft => "microsoft",
        ProviderKind::MicrosoftChina => "microsoft-china",
        ProviderKind::Gmail => "gmail",
        ProviderKind::Custom => "custom",
    }
}

/// The flow as the config spells it.
fn flow_name(flow: Flow) -> &'static str {
    match flow {
        Flow::Authcode => "authcode",
        Flow::Devicecode => "devicecode",
        Flow::Password => "password",
        Flow::ClientCredentials => "client-credentials",
    }
}

/// The stored token's state for `status`: times, and whether a refresh token is there.
fn token_state(t: &oauth::store::StoredToken, now: u64) -> String {
    let when = |at: u64| format!("{} ({})", clock::utc(at), clock::relative(at, now));
    let access = if t.expires_at > now {
        format!("valid until {}", when(t.expires_at))
    } else {
        format!("expired {}", when(t.expires_at))
    };
    let refresh = if t.refresh_token.is_some() {
        "present"
    } else {
        "none"
    };
    let last = t.obtained_at.map_or_else(|| "unknown".to_owned(), when);
    format!("  access token: {access}\n  refresh token: {refresh}\n  last refresh: {last}\n")
}

/// `queue list|flush|remove`. Only a flush reads the config: listing and removing work
/// before any setup, as `-bp` does, so `mailq` always answers.
fn queue(config_file: Option<&Path>, action: &QueueAction) -> Result<()> {
    match action {
        QueueAction::List => sendmail::list_queue(),
        QueueAction::Flush => {
            let report = flush::flush(&config::load(config_file)?, false)?;
            let mut text = String::new();
            for line in report.lines() {
                text.push_str(line);
                text.push('\n');
            }
            print(&text)?;
            match report.exit_code() {
                0 => Ok(()),
                code => Err(Error::from(crate::error::Kind::Reported(code))),
            }
        }
        QueueAction::Remove { id } => {
            if Queue::open()?.remove(id)? {
                print(&format!("{id}: removed\n"))
            } else {
                Err(Error::usage(format!(
                    "no queued message with id {id} (see `oauth2-sendmail queue list`)"
                )))
            }
        }
    }
}
