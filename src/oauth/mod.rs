//! OAuth2 tokens: the cache on disk (`store`), the HTTP grants against the identity
//! platform (`grants`), and the one question the send path asks: a valid access token.
//!
//! ```text
//! access_token(account, reject)
//!   read the cache (no lock) ── valid > REFRESH_MARGIN and ≠ reject ──► cached token
//!   └─ spawned task (runs to its save even if the caller gives up):
//!        lock the account (off the async thread)
//!        re-read ── another process refreshed meanwhile ──► its token
//!        refresh_token grant │ client_credentials │ password │ else "run login"
//!        save atomically (rotated refresh token) ─► unlock ──► fresh token
//! ```

pub mod grants;
pub mod store;

use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Kind, Result, TokenClass};
use crate::provider::AccountSettings;

use grants::{Grant, TokenResponse};
use store::{StoredToken, TokenStore};

/// A cached token is used only while it stays valid this much longer (seconds). Microsoft
/// issues tokens for 60–90 minutes; renewing in the last five leaves room for a slow SMTP
/// set-up and clock skew, and a message queued for a retry never starts with a dying token.
pub const REFRESH_MARGIN: u64 = 300;
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

/// Unix seconds now.
#[must_use]
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A valid access token for the account: from the cache when it is valid for a while yet,
/// else refreshed under the account's lock (the rotated refresh token saved atomically).
/// `reject` is a token the server has just refused: the result will not be that one.
pub async fn access_token(account: &AccountSettings, reject: Option<&str>) -> Result<AccessToken> {
    let name = account.name.clone();
    obtain(account, reject)
        .await
        .map_err(|e| e.for_account(&name))
}

async fn obtain(account: &AccountSettings, reject: Option<&str>) -> Result<AccessToken> {
    let store = TokenStore::new(account)?;
    // Reading may run token_decrypt_cmd: keep it off the thread that sets up SMTP.
    let (store, seen) = blocking(move || {
        let seen = store.load()?;
        Ok((store, seen))
    })
    .await?;
    if let Some(t) = &seen
        && t.valid_for(now(), REFRESH_MARGIN)
        && Some(t.access_token.as_str()) != reject
    {
        return Ok(AccessToken {
            secret: t.access_token.clone(),
            expires_at: t.expires_at,
            fresh: false,
        });
    }
    // Once started, a renewal runs to its save even if our caller is dropped: the server
    // may have rotated the refresh token, and the new one must not be lost.
    let renewal = renew(
        account.clone(),
        store,
        seen.map(|t| t.access_token),
        reject.map(str::to_owned),
    );
    tokio::spawn(renewal)
        .await
        .map_err(|e| Error::internal(format!("the token renewal task failed: {e}")))?
}

/// Under the account's lock: re-read, then renew and save unless another process just did.
async fn renew(
    account: AccountSettings,
    store: TokenStore,
    seen: Option<String>,
    reject: Option<String>,
) -> Result<AccessToken> {
    let (store, lock, current) = blocking(move || {
        let lock = store.lock()?;
        let current = store.load()?;
        Ok((store, lock, current))
    })
    .await?;
    if let Some(t) = &current
        && Some(&t.access_token) != seen.as_ref()
        && Some(&t.access_token) != reject.as_ref()
        && t.valid_for(now(), MIN_VALIDITY)
    {
        return Ok(AccessToken {
            secret: t.access_token.clone(),
            expires_at: t.expires_at,
            fresh: false,
        });
    }
    let refresh_token = current.as_ref().and_then(|t| t.refresh_token.clone());
    let response = match refresh_token {
        Some(rt) => match grants::request(&account, Grant::RefreshToken(rt)).await {
            // A dead refresh token is no dead end for a flow that can sign in unattended.
            Err(e) if is_needs_login(&e) => match grants::unattended_grant(&account) {
                Some(grant) => grants::request(&account, grant).await?,
                None => return Err(e),
            },
            other => other?,
        },
        None => match grants::unattended_grant(&account) {
            Some(grant) => grants::request(&account, grant).await?,
            None => {
                return Err(Error::token(
                    TokenClass::NeedsLogin,
                    format!(
                        "no token stored: run `oauth2-sendmail login {}`",
                        account.name
                    ),
                ));
            }
        },
    };
    let stored = merge(current, response, now());
    // The save runs on a blocking thread: it completes even if this task is cancelled,
    // and the lock is released only after it.
    blocking(move || {
        store.save(&stored)?;
        drop(lock);
        Ok(AccessToken {
            secret: stored.access_token,
            expires_at: stored.expires_at,
            fresh: true,
        })
    })
    .await
}

/// The new cache contents: a refresh token the server did not rotate is kept.
fn merge(old: Option<StoredToken>, new: TokenResponse, now: u64) -> StoredToken {
    let old_refresh = old.and_then(|t| t.refresh_token);
    StoredToken {
        access_token: new.access_token,
        expires_at: now.saturating_add(new.expires_in),
        refresh_token: new.refresh_token.or(old_refresh),
        token_type: new.token_type,
        scope: new.scope,
        obtained_at: Some(now),
    }
}

fn is_needs_login(e: &Error) -> bool {
    matches!(
        e.kind,
        Kind::Token {
            class: TokenClass::NeedsLogin,
            ..
        }
    )
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
    use super::*;

    fn response(rt: Option<&str>) -> TokenResponse {
        TokenResponse {
            access_token: "at-new".into(),
            expires_in: 3599,
            refresh_token: rt.map(str::to_owned),
            token_type: Some("Bearer".into()),
            scope: None,
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
