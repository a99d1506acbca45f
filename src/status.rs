//! `status` and `status --json`: one model of every account's facts (provider, servers,
//! transport, identity, token and refresh-token health, the last refused refresh, queue
//! counts), built once and rendered either as text for people or as one JSON object for
//! monitoring. Never a secret: the model holds no token, only times and states.
//!
//! Refresh-token health: a refresh token is used at every renewal (which saves the time in
//! the cache's `obtained_at`), and the identity platform drops one that stays unused for
//! its idle lifetime (Microsoft: 90 days; Google: six months). `-q` on a timer renews any
//! refresh token unused for 30 days, so a recent `-q` run keeps every account alive.
//! Within two weeks of the date, `notify_cmd` is told once ([`notify::warn_if_expiring`]).

use std::fmt::Write as _;

use serde::Serialize;

use crate::clock;
use crate::config::{Config, Flow, SaslChoice};
use crate::error::{EX_CONFIG, EX_NOPERM, Error, Result};
use crate::oauth::store::{StoredToken, TokenStore};
use crate::provider::{self, AccountSettings};
use crate::queue::{Entry, Queue};
use crate::{flush, notify};

/// Version of the JSON document's schema; raised only when a field changes meaning or
/// goes away (new fields may appear at any time).
pub const SCHEMA: u32 = 1;
/// A `-q` run this recent counts as a timer that keeps refresh tokens alive: it renews
/// those unused for 30 days, long before any idle expiry.
const TIMER_RECENT_SECS: u64 = 2 * 86_400;
/// Where an app-only account's client secret expiry can be read (not visible to us).
const SECRET_EXPIRY_WHERE: &str = "the Microsoft Entra admin center: App registrations, the \
     app, Certificates & secrets (the Expires column); a secret that expired is refused \
     with AADSTS7000222";

/// A time: Unix seconds in the model, RFC 3339 (`2026-11-22T23:14:05Z`) in the JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time(pub u64);

impl Serialize for Time {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&clock::rfc3339(self.0))
    }
}

/// Everything `status` knows.
#[derive(Debug, Serialize)]
pub struct Status {
    pub schema: u32,
    pub generated_at: Time,
    /// What the command exits with: 0, 77 (a login is needed) or 78 (configuration).
    pub exit_code: u8,
    /// The last `-q` run (RFC 3339), if one ever ran.
    pub last_timer_run: Option<Time>,
    /// Why the log cannot be written, when it cannot.
    pub log_problem: Option<String>,
    pub queue: Counts,
    pub accounts: Vec<AccountStatus>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Counts {
    pub queued: usize,
    pub failed: usize,
}

/// One account; on a configuration error only `name`, `default` and
/// `configuration_error` are set.
#[derive(Debug, Serialize)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "a report: each bool is one documented fact of the JSON"
)]
pub struct AccountStatus {
    pub name: String,
    pub default: bool,
    pub configuration_error: Option<String>,
    pub can_send: bool,
    pub needs_login: bool,
    pub provider: Option<&'static str>,
    pub email: Option<String>,
    pub user: Option<String>,
    pub server: Option<Server>,
    pub transport: Option<Transport>,
    pub flow: Option<&'static str>,
    /// The flow of the login that stored the tokens (`login --flow` may differ).
    pub last_login_flow: Option<String>,
    /// The tenant, for providers whose endpoints name one.
    pub tenant: Option<String>,
    pub client_id: Option<String>,
    /// True when `client_id` is the provider's built-in one.
    pub client_id_default: bool,
    pub endpoints: Option<Endpoints>,
    pub token_store: Option<&'static str>,
    /// `sasl` as configured.
    pub sasl: Option<&'static str>,
    /// The proxy, without its credentials.
    pub proxy: Option<String>,
    /// Who signed in, as the login recorded it.
    pub identity: Option<String>,
    pub token: Option<TokenStatus>,
    pub refresh_token: Option<RefreshStatus>,
    pub last_refresh_failure: Option<Failure>,
    /// App-only accounts: the client secret's expiry is not visible to us.
    pub client_secret: Option<ClientSecret>,
    pub queue: Counts,
}

#[derive(Debug, Serialize)]
pub struct Server {
    pub host: String,
    pub port: u16,
    pub tls: &'static str,
    /// True when `smtp_host` or `smtp_port` replace the provider's.
    pub overridden: bool,
}

/// The identity platform's endpoints in use (what to compare with the app registration).
#[derive(Debug, Serialize)]
pub struct Endpoints {
    pub token: Option<Endpoint>,
    pub authorize: Option<Endpoint>,
    pub device_code: Option<Endpoint>,
}

#[derive(Debug, Serialize)]
pub struct Endpoint {
    pub url: String,
    /// True when the config sets it in place of the provider's.
    pub overridden: bool,
}

#[derive(Debug, Serialize)]
pub struct Transport {
    /// As configured: smtp, graph or auto.
    pub configured: &'static str,
    /// What sends now: smtp or graph.
    pub in_use: &'static str,
    /// Graph's base URL, for graph and auto.
    pub graph_url: Option<String>,
    /// The text form, e.g. `auto: graph since … (https://graph.microsoft.com)`.
    pub detail: String,
}

/// The access token.
#[derive(Debug, Serialize)]
pub struct TokenStatus {
    /// `valid`, `expired`, `none`, `needs_login` or `unreadable`.
    pub state: &'static str,
    pub expires_at: Option<Time>,
    /// When the token endpoint last issued tokens for the account.
    pub last_refresh: Option<Time>,
    /// The reason a cache could not be read.
    pub error: Option<String>,
}

/// The refresh token's health.
#[derive(Debug, Serialize)]
pub struct RefreshStatus {
    pub present: bool,
    /// The last renewal that used it (SMTP's or Graph's).
    pub last_used: Option<Time>,
    /// How long the provider keeps an unused one (days); `null` when unknown (custom).
    pub idle_lifetime_days: Option<u64>,
    /// When the provider drops it if it stays unused.
    pub expires_if_unused_at: Option<Time>,
    pub days_left: Option<i64>,
    /// True when a `-q` ran in the last two days and the token is not older than the 30
    /// days after which `-q` renews it.
    pub kept_alive_by_timer: bool,
}

#[derive(Debug, Serialize)]
pub struct Failure {
    pub since: Time,
    pub reason: String,
    pub code: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ClientSecret {
    pub expiry_visible: bool,
    pub where_to_look: &'static str,
}

/// `status [--json] [ACCOUNT]`: prints the model, then exits 0, 77 or 78.
pub fn run(config: &Config, only: Option<&str>, json: bool) -> Result<()> {
    if let Some(name) = only {
        config.account(name)?;
    }
    let status = build(config, only, clock::now())?;
    let text = if json {
        let mut doc = serde_json::to_string_pretty(&status)
            .map_err(|e| Error::internal(format!("cannot write the status as JSON: {e}")))?;
        doc.push('\n');
        doc
    } else {
        render_text(&status)
    };
    crate::stdout::print(&text)?;
    match status.exit_code {
        0 => Ok(()),
        code => Err(Error::reported(code)),
    }
}

/// The model at `now`; a refresh token close to its idle expiry tells `notify_cmd` (once).
pub fn build(config: &Config, only: Option<&str>, now: u64) -> Result<Status> {
    let queue = Queue::open()?;
    let (queued, bad) = queue.list()?;
    let (failed, bad_failed) = queue.list_failed()?;
    let last_timer = flush::last_timer_run();
    let journal = crate::journal::Journal::from_config(config);
    let mut accounts = Vec::new();
    for name in config
        .accounts
        .keys()
        .filter(|n| only.is_none_or(|o| o == *n))
    {
        let default = config.default_account_name().ok() == Some(name.as_str());
        let mine = |entries: &[Entry]| entries.iter().filter(|e| e.meta.account == *name).count();
        let counts = Counts {
            queued: mine(&queued),
            failed: mine(&failed),
        };
        let account = match provider::resolve(name, &config.accounts[name]) {
            Ok(a) => account_status(&a, default, counts, now, last_timer, &journal),
            Err(e) => AccountStatus::misconfigured(name, default, &e, counts),
        };
        accounts.push(account);
    }
    let exit_code = if accounts.iter().any(|a| a.configuration_error.is_some()) {
        EX_CONFIG
    } else if accounts.iter().any(|a| a.needs_login) {
        EX_NOPERM
    } else {
        0
    };
    Ok(Status {
        schema: SCHEMA,
        generated_at: Time(now),
        exit_code,
        last_timer_run: last_timer.map(Time),
        log_problem: journal.problem(),
        queue: Counts {
            queued: queued.len() + bad.len(),
            failed: failed.len() + bad_failed.len(),
        },
        accounts,
    })
}

impl AccountStatus {
    fn misconfigured(name: &str, default: bool, e: &Error, queue: Counts) -> AccountStatus {
        AccountStatus {
            name: name.to_owned(),
            default,
            configuration_error: Some(e.to_string()),
            can_send: false,
            needs_login: false,
            provider: None,
            email: None,
            user: None,
            server: None,
            transport: None,
            flow: None,
            last_login_flow: None,
            tenant: None,
            client_id: None,
            client_id_default: false,
            endpoints: None,
            token_store: None,
            sasl: None,
            proxy: None,
            identity: None,
            token: None,
            refresh_token: None,
            last_refresh_failure: None,
            client_secret: None,
            queue,
        }
    }
}

fn account_status(
    account: &AccountSettings,
    default: bool,
    queue: Counts,
    now: u64,
    last_timer: Option<u64>,
    journal: &crate::journal::Journal,
) -> AccountStatus {
    let app_only = account.oauth.flow == Flow::ClientCredentials;
    let store = TokenStore::new(account);
    let loaded = match &store {
        Ok(s) => s.load(),
        Err(e) => Err(Error::config(e.to_string())),
    };
    // The Graph cache records its own renewals, which used the same refresh token.
    let graph_obtained = store
        .as_ref()
        .ok()
        .and_then(|s| s.graph().load().ok().flatten())
        .and_then(|t| t.obtained_at);
    let failure = notify::remembered(&account.name);
    let (token, refresh, can_send, last_failure) = match &loaded {
        Ok(Some(t)) => {
            // A refused refresh since these tokens were issued means a login is needed.
            let refused = failure
                .clone()
                .filter(|r| t.obtained_at.is_none_or(|o| r.since >= o));
            let health = refresh_health(account, t, graph_obtained, now, last_timer);
            notify::warn_if_expiring(
                account,
                t.refresh_token.is_some(),
                t.obtained_at.max(graph_obtained),
                now,
                journal,
            );
            let (token, can_send) = token_status(account, t, refused.is_some(), now);
            (Some(token), health, can_send, refused)
        }
        Ok(None) => (
            Some(TokenStatus {
                state: "none",
                expires_at: None,
                last_refresh: None,
                error: None,
            }),
            None,
            app_only,
            None,
        ),
        Err(e) => (
            Some(TokenStatus {
                state: "unreadable",
                expires_at: None,
                last_refresh: None,
                error: Some(e.to_string()),
            }),
            None,
            false,
            None,
        ),
    };
    AccountStatus {
        name: account.name.clone(),
        default,
        configuration_error: None,
        can_send,
        needs_login: !can_send,
        provider: Some(account.provider.name()),
        email: Some(account.email.clone()),
        user: Some(account.xoauth2_user().to_owned()),
        server: Some(server(account)),
        transport: Some(transport(account)),
        flow: Some(account.oauth.flow.name()),
        last_login_flow: match &loaded {
            Ok(Some(t)) => t
                .flow
                .as_deref()
                .map(|f| f.chars().filter(|c| !c.is_control()).take(40).collect()),
            _ => None,
        },
        tenant: provider::tenant(&account.config),
        client_id: account.oauth.client_id.clone(),
        client_id_default: account.oauth.client_id.is_some() && account.config.client_id.is_none(),
        endpoints: Some(endpoints(account)),
        token_store: Some(token_store_name(account)),
        sasl: Some(sasl_name(account)),
        proxy: account.smtp.proxy.as_ref().map(ToString::to_string),
        identity: match &loaded {
            Ok(Some(t)) => t.identity.as_deref().map(tidy),
            _ => None,
        },
        token,
        refresh_token: refresh,
        last_refresh_failure: last_failure.map(|r| Failure {
            since: Time(r.since),
            reason: r.reason,
            code: r.code,
        }),
        client_secret: app_only.then_some(ClientSecret {
            expiry_visible: false,
            where_to_look: SECRET_EXPIRY_WHERE,
        }),
        queue,
    }
}

/// Printed: one tidy line whatever the file says.
fn tidy(who: &str) -> String {
    who.chars().filter(|c| !c.is_control()).take(320).collect()
}

fn transport(account: &AccountSettings) -> Transport {
    let route = crate::transport::Route::for_account(account);
    Transport {
        configured: route.configured(),
        in_use: route.in_use(),
        graph_url: route
            .may_use_graph()
            .then(|| account.graph.as_ref().map(|g| g.url.clone()))
            .flatten(),
        detail: route.describe(account),
    }
}

/// The access token's state, and whether the account can send with it.
fn token_status(
    account: &AccountSettings,
    t: &StoredToken,
    refused: bool,
    now: u64,
) -> (TokenStatus, bool) {
    let renews_alone = t.refresh_token.is_some()
        || matches!(account.oauth.flow, Flow::ClientCredentials | Flow::Password);
    let valid = t.expires_at > now;
    let can_send = !refused && (valid || renews_alone);
    let state = match (refused, valid, can_send) {
        (true, _, _) | (false, false, false) => "needs_login",
        (false, true, _) => "valid",
        (false, false, true) => "expired",
    };
    (
        TokenStatus {
            state,
            expires_at: Some(Time(t.expires_at)),
            last_refresh: t.obtained_at.map(Time),
            error: None,
        },
        can_send,
    )
}

/// The refresh token's health (`None` for flows that have none: app-only).
fn refresh_health(
    account: &AccountSettings,
    t: &StoredToken,
    graph_obtained: Option<u64>,
    now: u64,
    last_timer: Option<u64>,
) -> Option<RefreshStatus> {
    if account.oauth.flow == Flow::ClientCredentials && t.refresh_token.is_none() {
        return None;
    }
    let last_used = t.obtained_at.max(graph_obtained);
    let lifetime =
        provider::refresh_idle_lifetime(account.provider).filter(|_| t.refresh_token.is_some());
    let expires = last_used.zip(lifetime).map(|(u, l)| u.saturating_add(l));
    Some(RefreshStatus {
        present: t.refresh_token.is_some(),
        last_used: last_used.map(Time),
        idle_lifetime_days: lifetime.map(|l| l / 86_400),
        expires_if_unused_at: expires.map(Time),
        days_left: expires.map(|e| days_between(now, e)),
        // A recent `-q` renews a token idle for 30 days: one idle for longer means its
        // renewals fail, and it keeps nothing alive.
        kept_alive_by_timer: t.refresh_token.is_some()
            && last_timer.is_some_and(|q| now.saturating_sub(q) <= TIMER_RECENT_SECS)
            && last_used.is_none_or(|u| {
                now.saturating_sub(u) <= flush::IDLE_RENEWAL_SECS + TIMER_RECENT_SECS
            }),
    })
}

/// Whole days from `now` to `then` (negative when past), rounded down.
fn days_between(now: u64, then: u64) -> i64 {
    let secs = i128::from(then) - i128::from(now);
    i64::try_from(secs.div_euclid(86_400)).unwrap_or(i64::MAX)
}

fn server(account: &AccountSettings) -> Server {
    Server {
        host: account.smtp.host.clone(),
        port: account.smtp.port,
        tls: match account.smtp.tls {
            crate::config::TlsMode::Implicit => "implicit",
            crate::config::TlsMode::Starttls => "starttls",
        },
        overridden: account.config.smtp_host.is_some() || account.config.smtp_port.is_some(),
    }
}

fn token_store_name(account: &AccountSettings) -> &'static str {
    match account.config.token_store {
        crate::config::TokenStoreKind::File => "file",
        crate::config::TokenStoreKind::Keyring => "keyring",
    }
}

fn sasl_name(account: &AccountSettings) -> &'static str {
    match account.config.sasl {
        SaslChoice::Auto => "auto",
        SaslChoice::Xoauth2 => "xoauth2",
        SaslChoice::Oauthbearer => "oauthbearer",
    }
}

/// The token, authorize and device-code endpoints in use, overrides marked.
fn endpoints(account: &AccountSettings) -> Endpoints {
    let (c, o) = (&account.config, &account.oauth);
    let endpoint = |url: &str, set: bool| {
        (!url.is_empty()).then(|| Endpoint {
            url: url.to_owned(),
            overridden: set,
        })
    };
    Endpoints {
        token: endpoint(&o.token_url, c.token_url.is_some()),
        authorize: endpoint(&o.authorize_url, c.authorize_url.is_some()),
        device_code: endpoint(&o.device_code_url, c.device_code_url.is_some()),
    }
}

// ---- text -------------------------------------------------------------------------------

/// People's form: one block per account, then the queue's totals.
#[must_use]
pub fn render_text(status: &Status) -> String {
    let mut out = String::new();
    let now = status.generated_at.0;
    for a in &status.accounts {
        let _ = writeln!(
            out,
            "{}{}",
            a.name,
            if a.default { " (default)" } else { "" }
        );
        if let Some(e) = &a.configuration_error {
            let _ = writeln!(out, "  configuration error: {e}");
            continue;
        }
        account_text(&mut out, a, now, status.last_timer_run);
    }
    // The whole queue, when it is more than the one account shown says.
    let shown: Vec<&AccountStatus> = status
        .accounts
        .iter()
        .filter(|a| a.configuration_error.is_none())
        .collect();
    let one = match shown.as_slice() {
        [a] => Some((a.queue.queued, a.queue.failed)),
        _ => None,
    };
    if one != Some((status.queue.queued, status.queue.failed)) {
        let _ = writeln!(
            out,
            "queue (all accounts): {} queued, {} failed",
            status.queue.queued, status.queue.failed
        );
    }
    if let Some(problem) = &status.log_problem {
        let _ = writeln!(out, "log: {problem}");
    }
    out
}

/// ` (override)` after a value the config sets in place of the provider's.
fn overridden(set: bool) -> &'static str {
    if set { " (override)" } else { "" }
}

/// Tenant, client id and the endpoints in use, overrides marked.
fn identity_platform_text(out: &mut String, a: &AccountStatus) {
    if let Some(tenant) = &a.tenant {
        let _ = writeln!(out, "  tenant: {tenant}");
    }
    match &a.client_id {
        Some(id) if a.client_id_default => {
            let _ = writeln!(out, "  client id: {id} (the provider's default)");
        }
        Some(id) => {
            let _ = writeln!(out, "  client id: {id}");
        }
        None => out.push_str("  client id: none (set client_id)\n"),
    }
    if let Some(e) = &a.endpoints {
        for (name, endpoint) in [
            ("token endpoint", &e.token),
            ("authorize endpoint", &e.authorize),
            ("device-code endpoint", &e.device_code),
        ] {
            if let Some(endpoint) = endpoint {
                let _ = writeln!(
                    out,
                    "  {name}: {}{}",
                    endpoint.url,
                    overridden(endpoint.overridden)
                );
            }
        }
    }
}

fn account_text(out: &mut String, a: &AccountStatus, now: u64, last_timer: Option<Time>) {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let server = a.server.as_ref().map_or(String::new(), |s| {
        let host = if s.host.contains(':') {
            format!("[{}]", s.host)
        } else {
            s.host.clone()
        };
        format!("{host}:{}{}", s.port, overridden(s.overridden))
    });
    let configured = a.flow.unwrap_or("");
    // The last login's flow when `login --flow` chose another: renewals without a refresh
    // token use the config's.
    let flow = match &a.last_login_flow {
        Some(last) if last != configured => {
            format!("{last} (the last login's; the config says {configured})")
        }
        _ => configured.to_owned(),
    };
    let _ = write!(
        out,
        "  provider: {}\n  email: {}\n  server: {server}\n  transport: {}\n  flow: {flow}\n",
        a.provider.unwrap_or(""),
        opt(&a.email),
        a.transport.as_ref().map_or("", |t| t.detail.as_str()),
    );
    identity_platform_text(out, a);
    let _ = writeln!(out, "  token store: {}", a.token_store.unwrap_or(""));
    if let Some(proxy) = &a.proxy {
        let _ = writeln!(out, "  proxy: {proxy}");
    }
    if let Some(who) = &a.identity {
        let _ = writeln!(out, "  signed in as: {who}");
    }
    token_text(out, a, now, last_timer);
    if let Some(c) = &a.client_secret {
        let _ = writeln!(
            out,
            "  client secret: its expiry is not visible to oauth2-sendmail: see {}",
            c.where_to_look
        );
    }
    let _ = writeln!(
        out,
        "  queue: {} queued, {} failed",
        a.queue.queued, a.queue.failed
    );
}

/// The token's lines: its state, the refresh token's health, what to run.
fn token_text(out: &mut String, a: &AccountStatus, now: u64, last_timer: Option<Time>) {
    let name = &a.name;
    let when = |at: Time| format!("{} ({})", clock::utc(at.0), clock::relative(at.0, now));
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    let Some(token) = &a.token else { return };
    match token.state {
        "none" if a.can_send => {
            out.push_str("  token: none yet (app-only: obtained at the first send)\n");
        }
        "none" => {
            let _ = writeln!(
                out,
                "  token: none: needs login (run `oauth2-sendmail login {name}`)"
            );
        }
        "unreadable" => {
            let _ = writeln!(out, "  token: unreadable: {}", opt(&token.error));
        }
        _ if a.last_refresh_failure.is_some() => {
            let r = a.last_refresh_failure.as_ref().expect("checked");
            let code = r
                .code
                .as_ref()
                .map(|c| format!(", {c}"))
                .unwrap_or_default();
            let _ = write!(
                out,
                "  token: needs login since {}{code}: run `oauth2-sendmail login {name}`\n  \
                 last refresh failure: {}\n",
                when(r.since),
                r.reason
            );
        }
        state => {
            let expires = token.expires_at.map(when).unwrap_or_default();
            let access = if state == "valid" {
                format!("valid until {expires}")
            } else {
                format!("expired {expires}")
            };
            let present = a.refresh_token.as_ref().is_some_and(|r| r.present);
            let _ = write!(
                out,
                "  access token: {access}\n  refresh token: {}\n  last refresh: {}\n",
                if present { "present" } else { "none" },
                token
                    .last_refresh
                    .map_or_else(|| "unknown".to_owned(), when)
            );
            if let Some(r) = a.refresh_token.as_ref().filter(|r| r.present) {
                refresh_text(out, r, a.provider.unwrap_or(""), last_timer, &when);
            }
            if state == "needs_login" {
                let _ = writeln!(
                    out,
                    "  token: needs login: run `oauth2-sendmail login {name}`"
                );
            }
        }
    }
}

fn refresh_text(
    out: &mut String,
    r: &RefreshStatus,
    provider: &str,
    last_timer: Option<Time>,
    when: &dyn Fn(Time) -> String,
) {
    match (r.expires_if_unused_at, r.idle_lifetime_days) {
        (Some(at), Some(days)) => {
            let who = if provider == "gmail" {
                "Google"
            } else {
                "Microsoft"
            };
            let _ = writeln!(
                out,
                "  refresh token expires if unused: {}: {who} drops one unused for {days} days",
                when(at)
            );
        }
        _ => out.push_str("  refresh token expires if unused: not known for this provider\n"),
    }
    let timer = match (r.kept_alive_by_timer, last_timer) {
        (true, Some(q)) => format!("yes: `-q` last ran {}", when(q)),
        (false, Some(q)) => format!(
            "no: `-q` last ran {}; a timer running it renews refresh tokens unused for 30 days",
            when(q)
        ),
        (_, None) => "no: `-q` never ran; a timer running it renews refresh tokens unused for \
                      30 days"
            .to_owned(),
    };
    let _ = writeln!(out, "  kept alive by the timer: {timer}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model with every optional fact present, so that every field is serialised.
    fn full() -> Status {
        let t = Some(Time(1_795_389_245));
        Status {
            schema: SCHEMA,
            generated_at: Time(1_795_389_245),
            exit_code: 0,
            last_timer_run: t,
            log_problem: Some("p".into()),
            queue: Counts::default(),
            accounts: vec![AccountStatus {
                name: "work".into(),
                default: true,
                configuration_error: Some("x".into()),
                can_send: true,
                needs_login: false,
                provider: Some("microsoft"),
                email: Some("a@b".into()),
                user: Some("a@b".into()),
                server: Some(Server {
                    host: "h".into(),
                    port: 587,
                    tls: "starttls",
                    overridden: false,
                }),
                transport: Some(Transport {
                    configured: "auto",
                    in_use: "smtp",
                    graph_url: Some("u".into()),
                    detail: "d".into(),
                }),
                flow: Some("authcode"),
                last_login_flow: Some("devicecode".into()),
                tenant: Some("contoso".into()),
                client_id: Some("id".into()),
                client_id_default: true,
                endpoints: Some(Endpoints {
                    token: Some(Endpoint {
                        url: "u".into(),
                        overridden: false,
                    }),
                    authorize: Some(Endpoint {
                        url: "u".into(),
                        overridden: false,
                    }),
                    device_code: Some(Endpoint {
                        url: "u".into(),
                        overridden: true,
                    }),
                }),
                token_store: Some("file"),
                sasl: Some("auto"),
                proxy: Some("socks5://127.0.0.1:1080".into()),
                identity: Some("a@b".into()),
                token: Some(TokenStatus {
                    state: "valid",
                    expires_at: t,
                    last_refresh: t,
                    error: Some("e".into()),
                }),
                refresh_token: Some(RefreshStatus {
                    present: true,
                    last_used: t,
                    idle_lifetime_days: Some(90),
                    expires_if_unused_at: t,
                    days_left: Some(3),
                    kept_alive_by_timer: true,
                }),
                last_refresh_failure: Some(Failure {
                    since: Time(1),
                    reason: "r".into(),
                    code: Some("AADSTS1".into()),
                }),
                client_secret: Some(ClientSecret {
                    expiry_visible: false,
                    where_to_look: SECRET_EXPIRY_WHERE,
                }),
                queue: Counts::default(),
            }],
        }
    }

    fn leaf_paths(value: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    leaf_paths(v, &path, out);
                }
            }
            serde_json::Value::Array(items) => {
                for v in items {
                    leaf_paths(v, &format!("{prefix}[]"), out);
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }

    #[test]
    fn every_json_field_is_documented_in_the_man_page() {
        let manual = include_str!("manual.roff");
        let start = manual.find(".SH \"STATUS JSON\"").expect("the section");
        let section = &manual[start..];
        let section = &section[..section[4..].find(".SH ").map_or(section.len(), |e| e + 4)];
        let mut paths = Vec::new();
        leaf_paths(&serde_json::to_value(full()).unwrap(), "", &mut paths);
        assert!(paths.len() > 30, "{paths:?}");
        for path in paths {
            assert!(
                section.contains(&format!("\\fB{path}")) || section.contains(&format!(".B {path}")),
                "{path} is not documented in STATUS JSON"
            );
        }
    }

    #[test]
    fn times_are_rfc3339_and_unknowns_null() {
        let mut status = full();
        status.last_timer_run = None;
        let v = serde_json::to_value(&status).unwrap();
        assert_eq!(v["generated_at"], "2026-11-22T23:14:05Z");
        assert_eq!(v["last_timer_run"], serde_json::Value::Null);
        assert_eq!(
            v["accounts"][0]["last_refresh_failure"]["since"],
            "1970-01-01T00:00:01Z"
        );
    }

    #[test]
    fn days_between_rounds_down_and_goes_negative() {
        assert_eq!(days_between(0, 86_400 * 3 + 5), 3);
        assert_eq!(days_between(86_400, 0), -1);
        assert_eq!(days_between(10, 10), 0);
    }
}
