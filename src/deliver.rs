//! One account's SMTP session, ready to send: the token and the connection are got at the
//! same time (the user waits for the slower, not the sum), then XOAUTH2 with one retry
//! when the server refuses a token that came from the cache.

use crate::error::{Error, Result, TokenClass};
use crate::oauth;
use crate::provider::AccountSettings;
use crate::smtp::Session;

/// An authenticated session for `account`.
pub async fn open(account: &AccountSettings, verbose: bool) -> Result<Session> {
    let (token, session) = tokio::join!(
        oauth::access_token(account, None),
        Session::connect(&account.smtp, verbose)
    );
    let server = account.smtp.address();
    let with_context = |e: Error| e.for_account(&account.name);
    // Both have run to the end (a refresh is never cut off halfway, so a rotated refresh
    // token is always saved). A token that needs a login or a config fix says more than
    // a network error; otherwise the connection's error comes first.
    let (token, mut session) = match (token, session) {
        (Ok(t), Ok(s)) => (t, s),
        (Err(t), _)
            if !matches!(
                t.kind,
                crate::error::Kind::Token {
                    class: TokenClass::Transient,
                    ..
                }
            ) =>
        {
            return Err(with_context(t));
        }
        (_, Err(e)) => return Err(with_context(e.at_server(&server))),
        (Err(e), Ok(_)) => return Err(with_context(e)),
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
    let server = account.smtp.address();
    let user = account.xoauth2_user();
    match session.authenticate(user, &token.secret).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_auth_refused() && !token.fresh => {
            // The cached token may have been revoked or issued for another scope: get a
            // new one (not this one) and try once more on the same connection.
            let refusal = e.at_server(&server);
            let fresh = oauth::access_token(account, Some(&token.secret))
                .await
                .map_err(|renewal| oauth::explain_refused_cached_token(renewal, &refusal))?;
            session
                .authenticate(user, &fresh.secret)
                .await
                .map_err(|e| e.at_server(&server))
        }
        Err(e) => Err(e.at_server(&server)),
    }
}
