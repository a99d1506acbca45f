//! Opening an account's way out, ready to send: an SMTP session or a Microsoft Graph
//! client, as its `Route` says (`auto`: SMTP, and Graph from the first 5.7.139 on). For
//! SMTP the token and the connection are got at the same time (the user waits for the
//! slower, not the sum), then XOAUTH2 with one retry when the server refuses a token that
//! came from the cache.

use super::{Route, Transport};
use crate::error::{Error, Result, TokenClass};
use crate::graph;
use crate::oauth;
use crate::provider::AccountSettings;
use crate::smtp::Session;

impl Route {
    /// The account's transport along this route, open and authenticated.
    pub async fn open(&self, account: &AccountSettings, verbose: bool) -> Result<Transport> {
        match self {
            Route::Smtp => open_smtp(account, verbose).await.map(Transport::Smtp),
            Route::Graph | Route::GraphSince(_) => open_graph(account, verbose).await,
            Route::SmtpThenGraph => match open_smtp(account, verbose).await {
                Ok(s) => Ok(Transport::Smtp(s)),
                Err(e) if e.is_smtp_auth_disabled() => {
                    if verbose {
                        crate::stderr::transcript(
                            crate::stderr::Mark::Note,
                            "SMTP AUTH is disabled (5.7.139): sending through Microsoft Graph",
                        );
                    }
                    super::remember_graph(&account.name, &e);
                    open_graph(account, verbose).await
                }
                Err(e) => Err(e),
            },
        }
    }
}

/// A Microsoft Graph client for `account` (its token and connection at once).
async fn open_graph(account: &AccountSettings, verbose: bool) -> Result<Transport> {
    graph::Client::open(account, verbose)
        .await
        .map(Transport::Graph)
        .map_err(|e| e.for_account(&account.name))
}

/// An authenticated SMTP session for `account`.
pub async fn open_smtp(account: &AccountSettings, verbose: bool) -> Result<Session> {
    let (token, session) = tokio::join!(
        oauth::access_token(account, None),
        Session::connect(&account.smtp, verbose)
    );
    let with_context = |e: Error| e.for_account(&account.name);
    // Both have run to the end (a refresh is never cut off halfway, so a rotated refresh
    // token is always saved). A token that needs a login or a config fix says more than
    // a network error; otherwise the connection's error comes first.
    let (token, mut session) = match (token, session) {
        (Ok(t), Ok(s)) => (t, s),
        (Err(t), _) if t.token_class() != Some(TokenClass::Transient) => {
            return Err(with_context(t));
        }
        (_, Err(e)) | (Err(e), Ok(_)) => return Err(with_context(e)),
    };
    match authenticate(account, &mut session, &token).await {
        Ok(()) => Ok(session),
        Err(e) => {
            // QUIT on the way out too: the server ends the session cleanly.
            session.quit().await;
            Err(with_context(e))
        }
    }
}

/// XOAUTH2 with `token`; a refused cached token is renewed once and tried again on the
/// same connection.
async fn authenticate(
    account: &AccountSettings,
    session: &mut Session,
    token: &oauth::AccessToken,
) -> Result<()> {
    let user = account.xoauth2_user();
    match session.authenticate(user, &token.secret).await {
        Ok(()) => Ok(()),
        // 5.7.139 says SMTP AUTH is off for the tenant or mailbox: no new token changes
        // that, so it goes straight back (and `auto` straight on to Graph).
        Err(e) if e.is_auth_refused() && !token.fresh && !e.is_smtp_auth_disabled() => {
            // The cached token may have been revoked or issued for another scope: get a
            // new one (not this one) and try once more on the same connection.
            let fresh = oauth::access_token(account, Some(&token.secret))
                .await
                .map_err(|renewal| renewal.explained_by_refusal(&e))?;
            session.authenticate(user, &fresh.secret).await
        }
        Err(e) => Err(e),
    }
}
