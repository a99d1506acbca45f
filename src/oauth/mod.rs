//! OAuth tokens: the cache on disk (`store`), the HTTP grants against the identity
//! platform (`grants`), the first sign-in (`login`, `authcode`), and the one question the
//! send path asks: a valid access token.
//!
//! ```text
//! access_token(account, reject)
//!   read the cache (no lock) ── valid > REFRESH_MARGIN and ≠ reject ──► cached token
//!   no refresh token, unattended flow: password_cmd / client_secret_cmd run here, unlocked
//!   └─ spawned task (runs to its save even if the caller gives up):
//!        lock the account (off the async thread)
//!        re-read ── another process refreshed meanwhile ──► its token
//!        refresh_token grant │ client_credentials │ password │ else "run login"
//!        save atomically (rotated refresh token) ─► unlock ──► fresh token
//! ```

pub mod aadsts;
pub mod authcode;
pub mod grants;
pub mod login;
pub mod store;

use crate::error::{Error, Result, TokenClass};
use crate::provider::AccountSettings;

use grants::{Grant, TokenResponse};
use store::{StoredToken, TokenStore};

/// A cached token is used only while it stays valid this much longer (seconds): see
/// [`crate::provider::REFRESH_MARGIN`] for why it is 10 minutes.
pub const REFRESH_MARGIN: u64 = crate::provider::REFRESH_MARGIN;
/// A token another process saved while we waited for the lock is taken when it is still
/// valid this much longer (seconds): enough to authenticate with it.
pub const MIN_VALIDITY: u64 = 60;

/// An access token ready for XOAUTH2.
#[derive(Clone)]
pub struct AccessToken {
    pub secret: String,
    /// Unix seconds.
    pub expires_at: u64,
    /// True when this call got it from the token endpoint (not the cache): a server that
    /// refuses a fresh token will not accept another one either.
    pub fresh: bool,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccessToken(<redacted>, expires_at {})", self.expires_at)
    }
}

use crate::clock::now;

/// A valid access token for the account: from the cache when it is valid for a while yet,
/// else refreshed under the account's lock (the rotated refresh token saved atomically).
/// `reject` is a token the server has just refused: the result will not be that one.
pub async fn access_token(account: &AccountSettings, reject: Option<&str>) -> Result<AccessToken> {
    let name = account.name.clone();
    let result = match TokenStore::new(account) {
        Ok(store) => access_token_in(store, account, reject).await,
        Err(e) => Err(e),
    };
    result.map_err(|e| e.for_account(&name))
}

/// The cached access token, when it has more than [`REFRESH_MARGIN`] left and is not the
/// one the server just refused.
fn usable(t: &StoredToken, reject: Option<&str>) -> Option<AccessToken> {
    (t.valid_for(now(), REFRESH_MARGIN) && Some(t.access_token.as_str()) != reject).then(|| {
        AccessToken {
            secret: t.access_token.clone(),
            expires_at: t.expires_at,
            fresh: false,
        }
    })
}

/// [`access_token`] with the cache in `store`.
pub async fn access_token_in(
    store: TokenStore,
    account: &AccountSettings,
    reject: Option<&str>,
) -> Result<AccessToken> {
    // Reading may run token_decrypt_cmd: keep it off the thread that sets up SMTP.
    let (store, seen) = blocking(move || {
        let seen = store.load()?;
        Ok((store, seen))
    })
    .await?;
    if let Some(cached) = seen.as_ref().and_then(|t| usable(t, reject)) {
        return Ok(cached);
    }
    // Without a refresh token the renewal runs password_cmd or client_secret_cmd: run them
    // now, before the account's lock, so a slow command never holds up the other senders.
    let prepared = match (
        seen.as_ref().and_then(|t| t.refresh_token.as_ref()),
        grants::unattended_grant(account),
    ) {
        (None, Some(grant)) => Some(grants::prepare(account, grant).await?),
        _ => None,
    };
    // Once started, a renewal runs to its save even if our caller is dropped: the server
    // may have rotated the refresh token, and the new one must not be lost.
    let renewal = renew(
        account.clone(),
        store,
        seen.map(|t| t.access_token),
        reject.map(str::to_owned),
        Cache::Main { prepared },
    );
    tokio::spawn(renewal)
        .await
        .map_err(|e| Error::internal(format!("the token renewal task failed: {e}")))?
}

/// A valid Microsoft Graph token for the account (`graph_scopes`): cached in
/// `tokens/graph/ACCOUNT.json`, renewed under the account's one lock with the account's one
/// refresh token (Microsoft's refresh tokens are multi-resource), whose rotation is saved
/// in `ACCOUNT.json`, where the SMTP renewal reads it too.
pub async fn graph_token(account: &AccountSettings, reject: Option<&str>) -> Result<AccessToken> {
    let name = account.name.clone();
    let result = match (TokenStore::new(account), account.for_graph()) {
        (Ok(main), Some(graph)) => graph_token_in(main, &graph, reject).await,
        (Err(e), _) => Err(e),
        (_, None) => Err(Error::config(
            "Microsoft Graph is not configured for this account: set `graph_url`",
        )),
    };
    result.map_err(|e| e.for_account(&name))
}

/// The cached Graph token when it stays valid for a while yet; `None` otherwise (and on
/// any error: [`graph_token`] then says what is wrong).
pub async fn graph_token_cached(account: &AccountSettings) -> Option<AccessToken> {
    let graph = account.for_graph()?;
    let store = TokenStore::new(account).ok()?.graph();
    let seen = blocking(move || store.load()).await.ok()??;
    usable(&seen, None).filter(|_| asked_as_configured(&seen, &graph))
}

/// What a token request for `account` asks for: its scopes, or (v1 endpoints) its
/// resource. Recorded with the Graph token.
fn request_key(account: &AccountSettings) -> String {
    match &account.oauth.resource {
        Some(r) => format!("resource={r}"),
        None => format!("scope={}", account.oauth.scopes.join(" ")),
    }
}

/// A Graph token asked for what the configuration asks for now (or of unknown origin:
/// a cache written before the request was recorded).
fn asked_as_configured(token: &StoredToken, graph: &AccountSettings) -> bool {
    token
        .requested
        .as_deref()
        .is_none_or(|r| r == request_key(graph))
}

/// [`graph_token`] with the account's main cache in `main`; `graph` is the account with
/// Graph's scopes ([`AccountSettings::for_graph`]).
pub async fn graph_token_in(
    main: TokenStore,
    graph: &AccountSettings,
    reject: Option<&str>,
) -> Result<AccessToken> {
    let store = main.graph();
    let (main, store, seen) = blocking(move || {
        let seen = store.load()?;
        Ok((main, store, seen))
    })
    .await?;
    let seen = seen.filter(|t| asked_as_configured(t, graph));
    if let Some(cached) = seen.as_ref().and_then(|t| usable(t, reject)) {
        return Ok(cached);
    }
    let renewal = renew(
        graph.clone(),
        store,
        seen.map(|t| t.access_token),
        reject.map(str::to_owned),
        Cache::Graph { main },
    );
    tokio::spawn(renewal)
        .await
        .map_err(|e| Error::internal(format!("the token renewal task failed: {e}")))?
}

/// Which cache a renewal fills: the one thing the SMTP and the Graph renewals do
/// differently.
enum Cache {
    /// The account's own cache (SMTP's token). `prepared` is the unattended grant's form,
    /// built before the lock.
    Main { prepared: Option<grants::Form> },
    /// The Graph cache, under the same lock: the refresh token read from (and a rotated one
    /// saved to) the main cache `main`; the access token, with what was asked for, saved in
    /// the Graph cache.
    Graph { main: TokenStore },
}

/// Under the account's lock: re-read, then renew and save unless another process just did.
async fn renew(
    account: AccountSettings,
    store: TokenStore,
    seen: Option<String>,
    reject: Option<String>,
    cache: Cache,
) -> Result<AccessToken> {
    let (store, lock, current, primary, cache) = blocking(move || {
        let lock = store.lock()?;
        let current = store.load()?;
        let primary = match &cache {
            Cache::Main { .. } => None,
            Cache::Graph { main } => main.load()?,
        };
        Ok((store, lock, current, primary, cache))
    })
    .await?;
    let cached = |t: &StoredToken| AccessToken {
        secret: t.access_token.clone(),
        expires_at: t.expires_at,
        fresh: false,
    };
    // A Graph token another process renewed meanwhile counts only when it was asked for
    // what the configuration asks.
    let current = match cache {
        Cache::Main { .. } => current,
        Cache::Graph { .. } => current.filter(|t| asked_as_configured(t, &account)),
    };
    if let Some(t) = &current
        && Some(&t.access_token) != seen.as_ref()
        && Some(&t.access_token) != reject.as_ref()
        && t.valid_for(now(), MIN_VALIDITY)
    {
        return Ok(cached(t));
    }
    let (basis, prepared, main) = match cache {
        Cache::Main { prepared } => (current.clone(), prepared, None),
        Cache::Graph { main } => (
            graph_basis(&account, current.as_ref(), primary.as_ref()),
            None,
            Some(main),
        ),
    };
    let response = match fetch(&account, basis.as_ref(), prepared).await {
        Ok(r) => r,
        Err(e) => {
            // An outage during an early renewal: the cached token still works for a while.
            if let Some(t) = &current
                && is_class(&e, TokenClass::Transient)
                && t.valid_for(now(), MIN_VALIDITY)
                && Some(&t.access_token) != reject.as_ref()
            {
                return Ok(cached(t));
            }
            return Err(e);
        }
    };
    let name = account.name.clone();
    let requested = request_key(&account);
    // The save runs on a blocking thread: it completes even if this task is cancelled,
    // and the lock is released only after it.
    blocking(move || {
        let saved = match main {
            None => save_main(&store, &name, current, response),
            Some(main) => save_graph(&main, &store, primary, response, requested)?,
        };
        drop(lock);
        Ok(AccessToken {
            secret: saved.access_token,
            expires_at: saved.expires_at,
            fresh: true,
        })
    })
    .await
}

/// What a Graph renewal trades: the account's refresh token, which lives in the main cache
/// (a Graph cache written by hand may hold one of its own).
fn graph_basis(
    account: &AccountSettings,
    current: Option<&StoredToken>,
    primary: Option<&StoredToken>,
) -> Option<StoredToken> {
    let refresh = primary
        .and_then(|t| t.refresh_token.clone())
        .or_else(|| current.and_then(|t| t.refresh_token.clone()));
    // The renewal names the configured Graph scopes (not what an older Graph token was
    // granted: a fixed `graph_url` or `graph_scopes` must take effect): without a scope
    // Microsoft could issue a token for SMTP's audience.
    let graph_scope = account
        .refresh_scope_when_unknown()
        .or_else(|| current.and_then(|t| t.scope.clone()));
    match refresh {
        Some(rt) => Some(StoredToken {
            access_token: String::new(),
            expires_at: 0,
            refresh_token: Some(rt),
            token_type: None,
            scope: graph_scope,
            obtained_at: None,
            identity: None,
            requested: None,
            flow: None,
        }),
        None => current.or(primary).cloned(),
    }
}

/// The main cache's save. A failure does not fail the renewal: a full disk, a read-only
/// folder, a failing `token_encrypt_cmd` leave the access token in hand good for an hour, so
/// it is used; the refresh token may be lost, which the warning says.
fn save_main(
    store: &TokenStore,
    name: &str,
    current: Option<StoredToken>,
    response: TokenResponse,
) -> StoredToken {
    let stored = merge(current, response, now());
    if let Err(e) = store.save(&stored) {
        crate::stderr::account(
            name,
            &format!(
                "{e}; the new tokens were used but not saved: \
                 if the next renewal fails, run `oauth2-sendmail login {name}`"
            ),
        );
    }
    stored
}

/// The Graph cache's save: a rotated refresh token goes to the main cache first (it is the
/// one thing that cannot be got again), then the access token to the Graph cache with
/// `requested`, what was asked for.
fn save_graph(
    main: &TokenStore,
    store: &TokenStore,
    primary: Option<StoredToken>,
    mut response: TokenResponse,
    requested: String,
) -> Result<StoredToken> {
    let rotated = response.refresh_token.take();
    let mut graph = merge(None, response, now());
    graph.requested = Some(requested);
    match (rotated, primary) {
        (Some(rt), Some(mut p)) => {
            p.refresh_token = Some(rt);
            main.save(&p)?;
        }
        (Some(rt), None) => graph.refresh_token = Some(rt),
        (None, _) => {}
    }
    store.save(&graph)?;
    Ok(graph)
}

/// New tokens: with the refresh token, else by a grant the flow can do unattended.
/// `prepared` is the unattended grant's form, built before the lock.
async fn fetch(
    account: &AccountSettings,
    current: Option<&StoredToken>,
    prepared: Option<grants::Form>,
) -> Result<TokenResponse> {
    match current.and_then(|t| t.refresh_token.clone()) {
        Some(rt) => match grants::request(
            account,
            Grant::Renew {
                refresh_token: rt,
                granted: current
                    .and_then(|t| t.scope.clone())
                    .or_else(|| account.refresh_scope_when_unknown()),
            },
        )
        .await
        {
            // A dead refresh token is no dead end for a flow that can sign in unattended.
            Err(e) if is_class(&e, TokenClass::NeedsLogin) => {
                match grants::unattended_grant(account) {
                    Some(grant) => grants::request(account, grant).await,
                    None => Err(e),
                }
            }
            other => other,
        },
        None => match (prepared, grants::unattended_grant(account)) {
            (Some(form), _) => form.send().await,
            (None, Some(grant)) => grants::request(account, grant).await,
            (None, None) => Err(Error::token(
                TokenClass::NeedsLogin,
                format!(
                    "{}: run `oauth2-sendmail login {}`",
                    if current.is_some_and(|t| t.valid_for(now(), 0)) {
                        "no refresh token is stored to renew the access token"
                    } else if current.is_some() {
                        "the access token has expired and no refresh token is stored"
                    } else {
                        "no token stored"
                    },
                    account.name
                ),
            )),
        },
    }
}

/// The new cache contents: a refresh token the server did not rotate is kept.
fn merge(old: Option<StoredToken>, new: TokenResponse, now: u64) -> StoredToken {
    let (old_refresh, old_scope, identity, flow) = match old {
        Some(t) => (t.refresh_token, t.scope, t.identity, t.flow),
        None => (None, None, None, None),
    };
    StoredToken {
        access_token: new.access_token,
        expires_at: now.saturating_add(new.expires_in),
        refresh_token: new.refresh_token.or(old_refresh),
        token_type: new.token_type,
        // RFC 6749 §5.1: a response without `scope` granted what was asked, i.e. the
        // scopes granted before.
        scope: new.scope.or(old_scope),
        obtained_at: Some(now),
        // Who signed in, and how, does not change with a refresh.
        identity,
        requested: None,
        flow,
    }
}

fn is_class(e: &Error, class: TokenClass) -> bool {
    e.token_class() == Some(class)
}

/// Runs blocking file and command work off the async thread.
async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("a token cache task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::config;
    use crate::fake_idp::{Failure, FakeIdp};
    use crate::provider;
    use crate::support::TestCa;

    struct Env {
        idp: FakeIdp,
        dir: tempfile::TempDir,
        account: AccountSettings,
    }

    /// A Microsoft account whose token endpoint is a fake identity platform over real HTTPS.
    fn env() -> Env {
        let ca = TestCa::new();
        let idp = FakeIdp::start(&ca);
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &ca.ca_pem).unwrap();
        let text = format!(
            "[accounts.w]\nemail = \"a@contoso.com\"\ntoken_url = \"{}\"\ntls_ca_file = \"{}\"\n",
            idp.token_url_v2("contoso"),
            ca_file.display()
        );
        let config = config::parse(&text, Path::new("/t.toml")).unwrap();
        let account = provider::resolve("w", config.account("w").unwrap()).unwrap();
        Env { idp, dir, account }
    }

    impl Env {
        fn store(&self) -> TokenStore {
            TokenStore::in_dir(&self.dir.path().join("tokens"), "w", None, None).unwrap()
        }

        fn seed(&self, access: &str, expires_at: u64) -> String {
            let rt = self.idp.issue_refresh_token();
            self.store()
                .save(&StoredToken {
                    access_token: access.into(),
                    expires_at,
                    refresh_token: Some(rt.clone()),
                    token_type: None,
                    scope: None,
                    obtained_at: None,
                    identity: None,
                    requested: None,
                    flow: None,
                })
                .unwrap();
            rt
        }

        async fn token(&self, reject: Option<&str>) -> Result<AccessToken> {
            access_token_in(self.store(), &self.account, reject).await
        }
    }

    #[tokio::test]
    async fn cached_refreshed_and_rejected_tokens() {
        let e = env();
        e.seed("at-cached", now() + 3000);
        let t = e.token(None).await.unwrap();
        assert_eq!((t.secret.as_str(), t.fresh), ("at-cached", false));
        assert!(e.idp.requests().is_empty());

        // The server refused the cached token: a new one, though the old one looks valid.
        let t = e.token(Some("at-cached")).await.unwrap();
        assert!(t.fresh && t.secret != "at-cached");
        assert!(e.idp.is_valid_access_token(&t.secret));
        assert_eq!(e.store().load().unwrap().unwrap().access_token, t.secret);
        assert_eq!(e.idp.refresh_count(), 1);
    }

    #[tokio::test]
    async fn a_refresh_runs_to_its_save_when_the_caller_gives_up() {
        let e = env();
        let old_rt = e.seed("at-old", 0);
        e.idp.set_rotation_revokes_old(true);
        e.idp.set_delay(Duration::from_millis(400));
        let gave_up = tokio::time::timeout(Duration::from_millis(100), e.token(None)).await;
        assert!(
            gave_up.is_err(),
            "the caller's future was dropped mid-refresh"
        );
        // The spawned renewal still owns the lock and finishes on this runtime.
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if e.store().load().unwrap().unwrap().access_token != "at-old" {
                break;
            }
        }
        let saved = e.store().load().unwrap().unwrap();
        assert!(e.idp.is_valid_access_token(&saved.access_token), "saved");
        let rt = saved.refresh_token.unwrap();
        assert!(
            rt != old_rt && e.idp.refresh_token_valid(&rt),
            "rotated and saved"
        );
        assert!(!e.idp.refresh_token_valid(&old_rt));
    }

    #[tokio::test]
    async fn concurrent_callers_in_one_process_share_one_refresh() {
        let e = std::sync::Arc::new(env());
        e.seed("at-old", 0);
        e.idp.set_delay(Duration::from_millis(300));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let e = e.clone();
                tokio::spawn(async move { e.token(None).await.unwrap().secret })
            })
            .collect();
        let mut tokens = std::collections::HashSet::new();
        for t in tasks {
            tokens.insert(t.await.unwrap());
        }
        assert_eq!(e.idp.refresh_count(), 1);
        assert_eq!(tokens.len(), 1);
    }

    #[tokio::test]
    async fn an_outage_during_an_early_renewal_keeps_the_cached_token() {
        let e = env();
        e.seed("at-dying", now() + REFRESH_MARGIN - 100);
        e.idp.push_failure(Failure::Status(503));
        let t = e.token(None).await.unwrap();
        assert_eq!((t.secret.as_str(), t.fresh), ("at-dying", false));
        assert_eq!(e.idp.refresh_count(), 1, "a renewal was tried");
        // Not when the server has just refused that token, and not for a login problem.
        e.idp.push_failure(Failure::Status(503));
        assert_eq!(e.token(Some("at-dying")).await.unwrap_err().exit_code(), 75);
        e.idp.push_failure(Failure::invalid_grant(70043));
        assert_eq!(e.token(None).await.unwrap_err().exit_code(), 77);
    }

    #[tokio::test]
    async fn errors_name_the_account_and_leave_the_cache() {
        let e = env();
        e.seed("at-old", 0);
        e.idp.push_failure(Failure::invalid_grant(70008));
        let err = e.token(None).await.unwrap_err();
        assert_eq!(err.exit_code(), 77);
        assert!(err.to_string().contains("oauth2-sendmail login w"), "{err}");
        assert_eq!(e.store().load().unwrap().unwrap().access_token, "at-old");
        e.idp.push_failure(Failure::Status(502));
        assert_eq!(e.token(None).await.unwrap_err().exit_code(), 75);
        // And it recovers once the service does.
        assert!(e.token(None).await.unwrap().fresh);
    }

    /// The same account with Graph configured (the fake's URL as `graph_url`).
    fn graph_account(e: &Env) -> AccountSettings {
        let mut a = e.account.clone();
        a.graph = Some(crate::provider::GraphSettings {
            url: "https://graph.example".into(),
            scopes: vec![
                "https://graph.example/Mail.Send".into(),
                "offline_access".into(),
            ],
            app_only: false,
        });
        a.for_graph().unwrap()
    }

    #[tokio::test]
    async fn smtp_and_graph_renewals_share_one_rotating_refresh_token() {
        let e = std::sync::Arc::new(env());
        e.seed("at-smtp-old", 0);
        e.idp.set_rotation_revokes_old(true);
        e.idp.set_delay(Duration::from_millis(200));
        let graph = graph_account(&e);
        // Both audiences renew at once: the lock orders them, and the second one uses the
        // refresh token the first one's rotation saved (the old one is revoked).
        let smtp = {
            let e = e.clone();
            tokio::spawn(async move { e.token(None).await })
        };
        let g = graph_token_in(e.store(), &graph, None).await.unwrap();
        let s = smtp.await.unwrap().unwrap();
        assert!(g.fresh && s.fresh && g.secret != s.secret);
        assert_eq!(e.idp.refresh_count(), 2);
        let scopes: Vec<String> = e
            .idp
            .requests()
            .iter()
            .map(|r| r.field("scope").unwrap_or("").to_owned())
            .collect();
        assert!(scopes.contains(&"https://graph.example/Mail.Send offline_access".to_owned()));
        let main = e.store().load().unwrap().unwrap();
        assert_eq!(main.access_token, s.secret);
        assert!(
            e.idp
                .refresh_token_valid(main.refresh_token.as_ref().unwrap())
        );
        let cached = e.store().graph().load().unwrap().unwrap();
        assert_eq!(cached.access_token, g.secret);
        assert_eq!(
            cached.refresh_token, None,
            "one refresh token, in the main file"
        );
        // Cached now: no request; a refused one is renewed with the latest refresh token.
        let again = graph_token_in(e.store(), &graph, None).await.unwrap();
        assert_eq!(
            (again.secret.as_str(), again.fresh),
            (g.secret.as_str(), false)
        );
        let renewed = graph_token_in(e.store(), &graph, Some(&g.secret))
            .await
            .unwrap();
        assert!(renewed.fresh && renewed.secret != g.secret);
        let main2 = e.store().load().unwrap().unwrap();
        assert_ne!(main2.refresh_token, main.refresh_token, "rotation saved");
        assert_eq!(main2.access_token, s.secret, "the SMTP token is kept");
        assert!(
            e.idp
                .refresh_token_valid(main2.refresh_token.as_ref().unwrap())
        );
    }

    #[tokio::test]
    async fn a_graph_token_without_any_refresh_token_asks_for_a_login() {
        let e = env();
        let graph = graph_account(&e);
        let err = graph_token_in(e.store(), &graph, None).await.unwrap_err();
        assert_eq!(err.exit_code(), 77);
        assert!(err.to_string().contains("oauth2-sendmail login w"), "{err}");
    }

    fn response(rt: Option<&str>) -> TokenResponse {
        TokenResponse {
            access_token: "at-new".into(),
            expires_in: 3599,
            refresh_token: rt.map(str::to_owned),
            token_type: Some("Bearer".into()),
            scope: None,
            id_token: None,
        }
    }

    fn old() -> StoredToken {
        StoredToken {
            access_token: "at-old".into(),
            expires_at: 1,
            refresh_token: Some("rt-old".into()),
            token_type: None,
            scope: None,
            obtained_at: None,
            identity: None,
            requested: None,
            flow: None,
        }
    }

    #[test]
    fn rotated_refresh_tokens_replace_and_missing_ones_are_kept() {
        let t = merge(Some(old()), response(Some("rt-new")), 1000);
        assert_eq!(t.refresh_token.as_deref(), Some("rt-new"));
        assert_eq!((t.expires_at, t.obtained_at), (4599, Some(1000)));
        let t = merge(Some(old()), response(None), 1000);
        assert_eq!(t.refresh_token.as_deref(), Some("rt-old"));
        assert_eq!(merge(None, response(None), 0).refresh_token, None);
    }

    #[test]
    fn a_refresh_keeps_the_granted_scope_and_the_identity_when_the_answer_omits_them() {
        let mut before = old();
        before.scope = Some("https://outlook.office.com/SMTP.Send offline_access".into());
        before.identity = Some("alice@contoso.com".into());
        let t = merge(Some(before), response(None), 1000);
        assert_eq!(
            t.scope.as_deref(),
            Some("https://outlook.office.com/SMTP.Send offline_access")
        );
        assert_eq!(t.identity.as_deref(), Some("alice@contoso.com"));
        let mut newer = response(None);
        newer.scope = Some("https://outlook.office.com/SMTP.Send".into());
        let t = merge(Some(old()), newer, 1000);
        assert_eq!(
            t.scope.as_deref(),
            Some("https://outlook.office.com/SMTP.Send")
        );
    }

    #[test]
    fn debug_is_redacted() {
        let t = AccessToken {
            secret: "at-secret".into(),
            expires_at: 5,
            fresh: true,
        };
        assert!(!format!("{t:?}").contains("at-secret"));
        assert!(!format!("{:?}", response(Some("rt-secret"))).contains("secret"));
    }
}
