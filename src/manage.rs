//! The management words: `login` (the flows are in `oauth::login`), `token`, `status`,
//! `check`, `logout`, `queue`.

use std::fmt::Write as _;
use std::path::Path;

use crate::cli::{FlowArg, LoginArgs, Manage, ManageArgs, QueueAction};
use crate::clock;
use crate::config::{self, Config, Flow};
use crate::error::{Error, Result};
use crate::oauth::{self, store::TokenStore};
use crate::provider::{self, AccountSettings};
use crate::queue::Queue;
use crate::stdout::print;
use crate::{flush, notify, sendmail, setup, transport};

/// `login EMAIL` without `--system`: a first run that writes the caller's own config.
#[must_use]
pub fn creates_own_config(args: &ManageArgs) -> bool {
    !args.system
        && matches!(&args.command, Manage::Login(login)
            if login.account.as_deref().is_some_and(setup::is_email))
}

pub fn run(args: ManageArgs) -> Result<()> {
    if crate::scope::current() == crate::scope::Mode::Drop {
        return Err(crate::scope::not_yours(word(&args.command)));
    }
    if let Manage::Queue { action } = &args.command {
        return queue(args.config.as_deref(), action);
    }
    if let Manage::Login(given) = &args.command
        && let Some(email) = given.account.as_deref().filter(|a| setup::is_email(a))
    {
        let (config, named) = setup::account_for_email(args.config.as_deref(), given, email)?;
        login(&config, &named)?;
        let name = named.account.as_deref().unwrap_or_default();
        return print(&setup::paste_lines(name));
    }
    let config = config::load(args.config.as_deref())?;
    match args.command {
        Manage::Token { account } => token(&settings(&config, account.as_deref())?),
        Manage::Status { account, json } => crate::status::run(&config, account.as_deref(), json),
        Manage::Check { account } => check(&settings(&config, account.as_deref())?),
        Manage::Logout { account } => logout(&settings(&config, Some(&account))?),
        Manage::Login(args) => login(&config, &args),
        Manage::Queue { .. } => unreachable!("the queue is handled above"),
    }
}

/// The management word, for messages.
fn word(command: &Manage) -> &'static str {
    match command {
        Manage::Login(_) => "login",
        Manage::Token { .. } => "token",
        Manage::Status { .. } => "status",
        Manage::Check { .. } => "check",
        Manage::Logout { .. } => "logout",
        Manage::Queue { .. } => "queue",
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

/// Signs in by the account's flow (or `--flow`) and stores the tokens; one line on stdout.
fn login(config: &Config, args: &LoginArgs) -> Result<()> {
    if args.provider.is_some() {
        return Err(Error::usage(
            "--provider is for `login EMAIL`, when it adds an account; set `provider` in the config",
        ));
    }
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
    let was_sealed = sealed_by_keyring(&account);
    let runtime = crate::runtime::single_threaded()?;
    let outcome = runtime.block_on(oauth::login::login(&account, &options));
    // Paste mode may leave a read of stdin blocked on its thread: do not wait for it.
    runtime.shutdown_background();
    let done = outcome.map_err(|e| e.for_account(&account.name))?;
    if let Some(client_id) = &done.client_id_from_file {
        // The imported token only works with the client it was issued to: keep it.
        setup::set_client_id(&config.path, name, client_id)?;
        crate::stderr::account(
            name,
            &format!(
                "client_id = \"{client_id}\" from the token file added to {}",
                config.path.display()
            ),
        );
    }
    if !done.has_refresh_token && account.oauth.flow != Flow::ClientCredentials {
        crate::stderr::account(
            &account.name,
            "warning: no refresh token was issued (is offline_access among the scopes?): \
             a new login is needed when the access token expires",
        );
    }
    let who =
        if account.oauth.flow == Flow::ClientCredentials && args.import_refresh_token.is_none() {
            format!("app-only access for {} works", account.email)
        } else {
            format!(
                "logged in as {}",
                done.identity.as_deref().unwrap_or(account.xoauth2_user())
            )
        };
    notify::forget(&account.name);
    if was_sealed == Some(true) && account.config.token_store == crate::config::TokenStoreKind::File
    {
        // Moving back from the keyring: the key left there protects nothing now.
        crate::stderr::account(
            &account.name,
            &format!(
                "the tokens are now in a plain token file (token_store = \"file\"); the key \
                 the keyring still holds for them can be removed: secret-tool clear application \
                 oauth2-sendmail account {}",
                account.name
            ),
        );
    }
    renew_graph_after_login(&account)?;
    print(&format!(
        "account {}: {who}; access token valid until {}\n",
        account.name,
        clock::utc(done.expires_at)
    ))?;
    flush_after_login(config, &account)
}

/// After a login, an account that sends through Graph gets a new Graph token too: a stale
/// one (for another audience or scopes, or from before a consent) would otherwise outlive
/// the login that was meant to cure it. A failure is one warning line: the login itself
/// (the refresh token) stands.
fn renew_graph_after_login(account: &AccountSettings) -> Result<()> {
    if !transport::Route::for_account(account).may_use_graph() || account.graph.is_none() {
        return Ok(());
    }
    TokenStore::new(account)?.graph().remove()?;
    let runtime = crate::runtime::single_threaded()?;
    if let Err(e) = runtime.block_on(oauth::graph_token(account, None)) {
        let why = e.to_string();
        let why = why
            .strip_prefix(&format!("account {}: ", account.name))
            .unwrap_or(&why);
        crate::stderr::account(
            &account.name,
            &format!("warning: no Microsoft Graph token yet: {why}"),
        );
    }
    Ok(())
}

/// Whether the account's token file is sealed with a keyring key (`None`: no file).
fn sealed_by_keyring(account: &AccountSettings) -> Option<bool> {
    let store = TokenStore::new(account).ok()?;
    let raw = std::fs::read(store.path()).ok()?;
    Some(crate::keyring::seal::is_sealed(&raw))
}

/// After a login: the account's queued messages go now; one line says how many.
fn flush_after_login(config: &Config, account: &AccountSettings) -> Result<()> {
    let report = flush::flush_account(config, account, false)?;
    let tried = [
        flush::Outcome::Sent,
        flush::Outcome::Deferred,
        flush::Outcome::Failed,
    ]
    .iter()
    .map(|o| report.count(*o))
    .sum::<usize>();
    if tried == 0 {
        return Ok(());
    }
    let sent = report.count(flush::Outcome::Sent);
    let mut text = format!(
        "account {}: {sent} of {tried} queued message{} sent\n",
        account.name,
        if tried == 1 { "" } else { "s" }
    );
    for line in report.lines().filter(|l| !l.contains(": sent: ")) {
        let _ = writeln!(
            text,
            "  {}",
            crate::scrub::for_output(line, crate::stderr::MAX_LINE)
        );
    }
    print(&text)
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
    let token = crate::runtime::single_threaded()?
        .block_on(oauth::access_token(account, None))
        .map_err(|e| {
            let e = e.for_account(&account.name);
            notify::remember(account, &e);
            e
        })?;
    print(&format!("{}\n", token.secret))
}

/// Connects, authenticates and quits, sending nothing; `auto` checks SMTP and Graph.
fn check(account: &AccountSettings) -> Result<()> {
    check_transports(account).inspect_err(|e| notify::remember(account, e))
}

/// `check`'s work: SMTP, Graph, or (`auto`) both.
fn check_transports(account: &AccountSettings) -> Result<()> {
    use transport::Route;
    let rt = crate::runtime::single_threaded()?;
    let smtp = || {
        rt.block_on(async {
            let session = transport::open_smtp(account, false).await?;
            let mechanism = session.mechanism().unwrap_or("XOAUTH2");
            session.quit().await;
            Ok::<_, Error>(format!(
                "account {}: {} accepted {mechanism} for {}\n",
                account.name,
                account.smtp.address(),
                account.xoauth2_user()
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
    // `auto` checks both, whatever it remembers: SMTP AUTH may have been turned back on.
    match Route::for_account(account) {
        Route::Smtp => print(&smtp()?),
        Route::Graph => print(&graph()?),
        Route::GraphSince(_) | Route::SmtpThenGraph => {
            let first = match smtp() {
                Ok(line) => {
                    print(&line)?;
                    None
                }
                Err(e) if e.is_smtp_auth_disabled() => {
                    transport::remember_graph(&account.name, &e);
                    print(&format!(
                        "account {}: SMTP AUTH is disabled ({}: {}); transport = \"auto\" sends \
                         through Microsoft Graph\n",
                        account.name,
                        account.smtp.address(),
                        transport::server_words(&e)
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

/// `queue list|flush|remove`. Only a flush reads the config: listing and removing work
/// before any setup, as `-bp` does, so `mailq` always answers.
fn queue(config_file: Option<&Path>, action: &QueueAction) -> Result<()> {
    match action {
        QueueAction::List => sendmail::list_queue(),
        QueueAction::Flush => {
            if crate::scope::current() == crate::scope::Mode::System {
                // Before the config: the maildrop empties even while the config is broken.
                crate::maildrop::intake()?;
            }
            let config = config::load(config_file)?;
            if crate::scope::current() == crate::scope::Mode::System {
                crate::maildrop::pickup(&config, &crate::journal::Journal::from_config(&config))?;
            }
            let report = flush::flush(&config, flush::Scope::Everything, false)?;
            let mut text = String::new();
            for line in report.lines().chain(report.logins()) {
                // The server's words, made safe for a terminal.
                text.push_str(&crate::scrub::for_output(line, crate::stderr::MAX_LINE));
                text.push('\n');
            }
            print(&text)?;
            match report.exit_code() {
                0 => Ok(()),
                code => Err(Error::reported(code)),
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
