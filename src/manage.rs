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
use crate::{deliver, flush, notify, sendmail, setup};

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
        Manage::Status { account } => status(&config, account.as_deref()),
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
    print(&format!(
        "account {}: {who}; access token valid until {}\n",
        account.name,
        clock::utc(done.expires_at)
    ))?;
    flush_after_login(config, &account)
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
    use crate::config::TransportKind;
    let rt = crate::runtime::single_threaded()?;
    let smtp = || {
        rt.block_on(async {
            let session = deliver::open_smtp(account, false).await?;
            session.quit().await;
            Ok::<_, Error>(format!(
                "account {}: {} accepted XOAUTH2 for {}\n",
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
                        "account {}: SMTP AUTH is disabled ({}: {}); transport = \"auto\" sends \
                         through Microsoft Graph\n",
                        account.name,
                        account.smtp.address(),
                        crate::transport::server_words(&e)
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

/// Per account: provider, server, the identity that signed in, the token's state (with
/// a refused refresh remembered: since when, and the AADSTS code), queued and failed
/// counts; never a secret. Exit 0 when every account can send, 77 when one needs a
/// login, 78 when one's configuration is wrong (for monitoring).
fn status(config: &Config, only: Option<&str>) -> Result<()> {
    if let Some(name) = only {
        config.account(name)?;
    }
    let now = clock::now();
    let queue = Queue::open()?;
    let (queued, bad) = queue.list()?;
    let (failed, bad_failed) = queue.list_failed()?;
    let mut out = String::new();
    let (mut needs_login, mut misconfigured) = (false, false);
    let (mut shown, mut shown_counts) = (0usize, (0usize, 0usize));
    for name in config
        .accounts
        .keys()
        .filter(|n| only.is_none_or(|o| o == *n))
    {
        let default = config.default_account_name().ok() == Some(name.as_str());
        let _ = writeln!(out, "{name}{}", if default { " (default)" } else { "" });
        let account = match provider::resolve(name, &config.accounts[name]) {
            Ok(a) => a,
            Err(e) => {
                let _ = writeln!(out, "  configuration error: {e}");
                misconfigured = true;
                continue;
            }
        };
        let _ = write!(
            out,
            "  provider: {}\n  email: {}\n  server: {}{}\n  transport: {}\n  flow: {}\n",
            account.provider.name(),
            account.email,
            account.smtp.address(),
            overridden(account.config.smtp_host.is_some() || account.config.smtp_port.is_some()),
            crate::transport::describe(&account),
            flow_line(&account),
        );
        out.push_str(&identity_platform(&account));
        if let Some(who) = signed_in_identity(&account) {
            let _ = writeln!(out, "  signed in as: {who}");
        }
        let (state, can_send) = match TokenStore::new(&account).and_then(|s| s.load()) {
            Ok(Some(t)) => token_state(&account, &t, now),
            Ok(None) if account.oauth.flow == Flow::ClientCredentials => (
                "  token: none yet (app-only: obtained at the first send)\n".to_owned(),
                true,
            ),
            Ok(None) => (
                format!("  token: none: needs login (run `oauth2-sendmail login {name}`)\n"),
                false,
            ),
            Err(e) => (format!("  token: unreadable: {e}\n"), false),
        };
        out.push_str(&state);
        needs_login |= !can_send;
        let mine = |entries: &[crate::queue::Entry]| {
            entries.iter().filter(|e| e.meta.account == *name).count()
        };
        let _ = writeln!(
            out,
            "  queue: {} queued, {} failed",
            mine(&queued),
            mine(&failed)
        );
        shown += 1;
        shown_counts = (mine(&queued), mine(&failed));
    }
    // The whole queue, when it is more than the one account shown says.
    let (all_queued, all_failed) = (queued.len() + bad.len(), failed.len() + bad_failed.len());
    if shown != 1 || (all_queued, all_failed) != shown_counts {
        let _ = writeln!(
            out,
            "queue (all accounts): {all_queued} queued, {all_failed} failed"
        );
    }
    if let Some(problem) = crate::journal::Journal::from_config(config).problem() {
        let _ = writeln!(out, "log: {problem}");
    }
    print(&out)?;
    let code = if misconfigured {
        crate::error::EX_CONFIG
    } else if needs_login {
        crate::error::EX_NOPERM
    } else {
        return Ok(());
    };
    Err(Error::from(crate::error::Kind::Reported(code)))
}

/// ` (override)` after a value the config sets in place of the provider's.
fn overridden(set: bool) -> &'static str {
    if set { " (override)" } else { "" }
}

/// The config's flow, and the flow of the login that stored the tokens when that differs
/// (`login --flow`): renewals without a refresh token use the config's.
fn flow_line(account: &AccountSettings) -> String {
    let configured = account.oauth.flow.name();
    let stored = TokenStore::new(account)
        .ok()
        .filter(|_| account.config.token_decrypt_cmd.is_none())
        .and_then(|s| std::fs::read(s.path()).ok())
        .and_then(|raw| serde_json::from_slice::<serde_json::Value>(&raw).ok())
        .and_then(|v| v.get("flow")?.as_str().map(str::to_owned));
    match stored {
        Some(flow) if flow != configured => {
            let flow: String = flow.chars().filter(|c| !c.is_control()).take(40).collect();
            format!("{flow} (the last login's; the config says {configured})")
        }
        _ => configured.to_owned(),
    }
}

/// Tenant, client id and the endpoints in use, overrides marked: what to compare with the
/// app registration when a login fails.
fn identity_platform(account: &AccountSettings) -> String {
    let c = &account.config;
    let o = &account.oauth;
    let mut out = String::new();
    if let Some(tenant) = crate::provider::tenant(c) {
        let _ = writeln!(out, "  tenant: {tenant}");
    }
    match &o.client_id {
        Some(id) if c.client_id.is_none() => {
            let _ = writeln!(out, "  client id: {id} (the provider's default)");
        }
        Some(id) => {
            let _ = writeln!(out, "  client id: {id}");
        }
        None => out.push_str("  client id: none (set client_id)\n"),
    }
    for (name, url, set) in [
        ("token endpoint", &o.token_url, c.token_url.is_some()),
        (
            "authorize endpoint",
            &o.authorize_url,
            c.authorize_url.is_some(),
        ),
        (
            "device-code endpoint",
            &o.device_code_url,
            c.device_code_url.is_some(),
        ),
    ] {
        if !url.is_empty() {
            let _ = writeln!(out, "  {name}: {url}{}", overridden(set));
        }
    }
    out
}

/// The identity that signed in, as the token cache records it (its `identity` field),
/// when the cache is readable without running `token_decrypt_cmd`.
fn signed_in_identity(account: &AccountSettings) -> Option<String> {
    if account.config.token_decrypt_cmd.is_some() {
        return None;
    }
    let store = TokenStore::new(account).ok()?;
    let raw = std::fs::read(store.path()).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&raw).ok()?;
    let who = value.get("identity")?.as_str()?;
    // Printed: keep it to one tidy line whatever the file says.
    Some(who.chars().filter(|c| !c.is_control()).take(320).collect())
}

/// The stored token's state for `status`, and whether the account can send with it. A
/// refused refresh remembered since these tokens were issued means a login is needed.
fn token_state(
    account: &AccountSettings,
    t: &oauth::store::StoredToken,
    now: u64,
) -> (String, bool) {
    let name = &account.name;
    let when = |at: u64| format!("{} ({})", clock::utc(at), clock::relative(at, now));
    let refused = notify::remembered(name).filter(|r| t.obtained_at.is_none_or(|o| r.since >= o));
    if let Some(r) = refused {
        let code = r.code.map(|c| format!(", {c}")).unwrap_or_default();
        return (
            format!(
                "  token: needs login since {}{code}: run `oauth2-sendmail login {name}`\n  \
                 last refresh failure: {}\n",
                when(r.since),
                r.reason
            ),
            false,
        );
    }
    let valid = t.expires_at > now;
    let access = if valid {
        format!("valid until {}", when(t.expires_at))
    } else {
        format!("expired {}", when(t.expires_at))
    };
    let renews_alone = t.refresh_token.is_some()
        || matches!(account.oauth.flow, Flow::ClientCredentials | Flow::Password);
    let refresh = if t.refresh_token.is_some() {
        "present"
    } else {
        "none"
    };
    let last = t.obtained_at.map_or_else(|| "unknown".to_owned(), when);
    let mut text =
        format!("  access token: {access}\n  refresh token: {refresh}\n  last refresh: {last}\n");
    let can_send = valid || renews_alone;
    if !can_send {
        let _ = writeln!(
            text,
            "  token: needs login: run `oauth2-sendmail login {name}`"
        );
    }
    (text, can_send)
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
