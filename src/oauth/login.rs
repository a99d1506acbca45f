//! `oauth2-sendmail login`: get a first set of tokens by the account's flow, then save them
//! under the account's lock.
//!
//! ```text
//! --import-refresh-token FILE ─► refresh_token grant (redeemed once, proving it works)
//! authcode           PKCE + state ─► browser / printed URL ─► loopback listener or pasted URL
//!                    ─► authorization_code grant
//! devicecode         device authorization ─► print code and URL ─► poll the token endpoint
//! password           password_cmd, or a no-echo prompt on a terminal ─► password grant (ROPC)
//! client-credentials client secret ─► client_credentials grant (no refresh token)
//!                                      │
//!                    lock the account ─► save atomically ─► unlock
//! ```
//!
//! Everything the user must read goes to stderr; `manage` prints the one success line on
//! stdout. No token, code, verifier, password or secret is ever printed.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;

use super::authcode::{self, Pkce, Redirect};
use super::grants::{self, Answer, DeviceAuthorization, Grant, TokenResponse};
use super::store::{StoredToken, TokenStore};
use super::{blocking, is_class, merge};
use crate::clock::now;
use crate::config::Flow;
use crate::error::{Error, Result, TokenClass};
use crate::provider::AccountSettings;

/// Shortest wait between two device-code polls, whatever the server says: a server that
/// sends `interval: 0` must not turn us into a busy loop against it.
const MIN_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// RFC 8628 §3.5: on `slow_down`, "the interval MUST be increased by 5 seconds for this
/// and all subsequent requests".
const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);
/// The longest wait between polls, whatever the server asks.
const MAX_POLL: Duration = Duration::from_secs(grants::MAX_POLL_INTERVAL);

/// What `login` was asked to do, beyond the account's own settings.
#[derive(Debug, Default)]
pub struct Options {
    /// Print the URL only; never start a browser.
    pub no_browser: bool,
    /// Redeem this refresh token (`-` = stdin) instead of running a flow.
    pub import_refresh_token: Option<PathBuf>,
}

/// What a successful login stored (no secret in it).
#[derive(Debug)]
pub struct LoggedIn {
    /// Unix seconds.
    pub expires_at: u64,
    pub has_refresh_token: bool,
}

/// Runs the login for `account` and saves the tokens.
pub async fn login(account: &AccountSettings, options: &Options) -> Result<LoggedIn> {
    let (response, imported) = match &options.import_refresh_token {
        Some(path) => {
            let rt = read_refresh_token(path)?;
            let response = grants::request(account, Grant::RefreshToken(rt.clone())).await?;
            (response, Some(rt))
        }
        None => (run_flow(account, options).await?, None),
    };
    save(account, response, imported).await
}

async fn run_flow(account: &AccountSettings, options: &Options) -> Result<TokenResponse> {
    match account.oauth.flow {
        Flow::Authcode => authcode_flow(account, options.no_browser).await,
        Flow::Devicecode => devicecode_flow(account).await,
        Flow::Password => {
            let account_for_prompt = account.clone();
            let grant = blocking(move || password_grant(&account_for_prompt)).await?;
            grants::request(account, grant).await
        }
        Flow::ClientCredentials => grants::request(account, Grant::ClientCredentials).await,
    }
}

/// Saves a login's tokens under the account's lock. A login starts afresh: only an imported
/// refresh token that the server did not rotate is kept (Google does not rotate).
async fn save(
    account: &AccountSettings,
    response: TokenResponse,
    imported: Option<String>,
) -> Result<LoggedIn> {
    let store = TokenStore::new(account)?;
    let mut stored: StoredToken = merge(None, response, now());
    if stored.refresh_token.is_none() {
        stored.refresh_token = imported;
    }
    blocking(move || {
        let lock = store.lock()?;
        store.save(&stored)?;
        drop(lock);
        Ok(LoggedIn {
            expires_at: stored.expires_at,
            has_refresh_token: stored.refresh_token.is_some(),
        })
    })
    .await
}

/// `oauth2-sendmail: account NAME: ` before every line meant for the user.
fn say(account: &AccountSettings, text: &str) {
    eprintln!(
        "oauth2-sendmail: account {}: {}",
        account.name,
        crate::scrub::for_output(text, 2000)
    );
}

// ---------------------------------------------------------------------------------------
// Authorization code with PKCE

async fn authcode_flow(account: &AccountSettings, no_browser: bool) -> Result<TokenResponse> {
    let oauth = &account.oauth;
    if oauth.authorize_url.is_empty() {
        return Err(Error::config(format!(
            "account {}: flow = \"authcode\" needs authorize_url",
            account.name
        )));
    }
    let client_id = oauth.client_id(&account.name, account.provider)?;
    let pkce = Pkce::new()?;
    let state = authcode::new_state()?;
    let redirect = Redirect::bind(&oauth.redirect_uri).await?;
    let url = authcode::authorize_url(
        oauth,
        client_id,
        &redirect.uri,
        &state,
        &pkce,
        &account.email,
    )?;
    let opened = !no_browser && open_browser(account, &url);
    tell_authcode(account, &url, &redirect, opened);
    let code = redirect.code(&state, authcode::LOGIN_TIMEOUT).await?;
    grants::request(
        account,
        Grant::AuthorizationCode {
            code,
            redirect_uri: redirect.uri.clone(),
            code_verifier: pkce.verifier,
        },
    )
    .await
}

/// Starts the browser; a failure is only a warning, since the URL is printed anyway.
fn open_browser(account: &AccountSettings, url: &str) -> bool {
    match authcode::open_browser(url) {
        Ok(()) => true,
        Err(e) => {
            say(account, &format!("{e}; open the URL below yourself"));
            false
        }
    }
}

/// The URL on a line of its own (easy to copy), and how the code will come back.
fn tell_authcode(account: &AccountSettings, url: &str, redirect: &Redirect, opened: bool) {
    let minutes = authcode::LOGIN_TIMEOUT.as_secs() / 60;
    say(
        account,
        &if opened {
            format!(
                "a browser was opened to sign in as {}; if it did not open, open this URL:",
                account.email
            )
        } else {
            format!(
                "to sign in as {}, open this URL in a browser:",
                account.email
            )
        },
    );
    eprintln!("{url}");
    let next = match redirect.port() {
        Some(port) => format!(
            "waiting up to {minutes} min for the browser to come back to {uri} \
             (from another machine: `ssh -L {port}:127.0.0.1:{port} THIS-HOST`, then open the URL \
             there); or paste here the address the browser ends at",
            uri = redirect.uri
        ),
        None => format!(
            "after the sign-in the browser is sent to {uri} with `?code=…` and shows an error \
             page (nothing listens there): copy that whole address from the address bar, paste it \
             here and press Enter (waiting up to {minutes} min)",
            uri = redirect.uri
        ),
    };
    say(account, &next);
}

// ---------------------------------------------------------------------------------------
// Device code (RFC 8628)

async fn devicecode_flow(account: &AccountSettings) -> Result<TokenResponse> {
    let device = grants::device_authorization(account).await?;
    tell_devicecode(account, &device);
    let form = grants::prepare(account, Grant::DeviceCode(device.device_code.clone())).await?;
    // Clamped when parsed; checked here too: a peer's number never panics a clock.
    let start = Instant::now();
    let deadline = start
        .checked_add(Duration::from_secs(device.expires_in))
        .unwrap_or(start);
    let mut interval = Duration::from_secs(device.interval).clamp(MIN_POLL_INTERVAL, MAX_POLL);
    // An outage while the user signs in is no reason to give up a valid code; it is
    // reported if the code runs out before the service comes back.
    let mut outage: Option<Error> = None;
    loop {
        if Instant::now()
            .checked_add(interval)
            .is_none_or(|t| t > deadline)
        {
            return Err(outage.unwrap_or_else(|| device_expired(account)));
        }
        tokio::time::sleep(interval).await;
        let (status, body) = match form.answer().await {
            Ok(Answer::Tokens(tokens)) => return Ok(tokens),
            Ok(Answer::Refused { status, body }) => (status, body),
            Err(e) if is_class(&e, TokenClass::Transient) => {
                outage = Some(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        outage = None;
        match poll_outcome(&body.error) {
            Poll::Pending => {}
            Poll::SlowDown => interval = (interval + SLOW_DOWN_STEP).min(MAX_POLL),
            Poll::Expired => return Err(device_expired(account)),
            Poll::Declined => {
                return Err(Error::token(
                    TokenClass::NeedsLogin,
                    format!(
                        "the sign-in was declined on the device login page; run `oauth2-sendmail login {}` again",
                        account.name
                    ),
                ));
            }
            Poll::Failed => return Err(form.refused(status, &body)),
        }
    }
}

/// Microsoft's own instruction when it sent one (it names the page and the code), else ours.
fn tell_devicecode(account: &AccountSettings, device: &DeviceAuthorization) {
    let text = device.message.clone().unwrap_or_else(|| {
        format!(
            "to sign in as {}, open {} in a browser and enter the code {}",
            account.email, device.verification_uri, device.user_code
        )
    });
    say(account, text.trim());
    say(
        account,
        &format!(
            "waiting for the sign-in (the code expires in {} min)",
            device.expires_in.div_ceil(60)
        ),
    );
}

fn device_expired(account: &AccountSettings) -> Error {
    Error::token(
        TokenClass::NeedsLogin,
        format!(
            "the device code expired before the sign-in was completed; run `oauth2-sendmail login {}` again",
            account.name
        ),
    )
}

/// What one refused poll means (RFC 8628 §3.5).
#[derive(Debug, PartialEq, Eq)]
enum Poll {
    /// The user has not finished yet: poll again after the interval.
    Pending,
    /// Poll again, 5 s slower from now on.
    SlowDown,
    Expired,
    Declined,
    /// Anything else: a real refusal, reported as such.
    Failed,
}

fn poll_outcome(error: &str) -> Poll {
    match error {
        "authorization_pending" => Poll::Pending,
        "slow_down" => Poll::SlowDown,
        "expired_token" | "code_expired" => Poll::Expired,
        "authorization_declined" | "access_denied" => Poll::Declined,
        _ => Poll::Failed,
    }
}

// ---------------------------------------------------------------------------------------
// Password (ROPC)

/// The password grant: from `password_cmd`, or typed at a no-echo prompt on a terminal.
/// Blocking (the prompt).
fn password_grant(account: &AccountSettings) -> Result<Grant> {
    if account.oauth.password_cmd.is_some() {
        return Ok(Grant::Password(None));
    }
    if !std::io::stdin().is_terminal() {
        return Err(Error::config(format!(
            "account {}: flow = \"password\" needs password_cmd when there is no terminal to ask on",
            account.name
        )));
    }
    let password = rpassword::prompt_password(format!("Password for {}: ", account.email))
        .map_err(|e| Error::io(format!("cannot read the password from the terminal: {e}")))?;
    if password.is_empty() {
        return Err(Error::usage("no password was typed"));
    }
    Ok(Grant::Password(Some(password)))
}

// ---------------------------------------------------------------------------------------
// Import of a refresh token

/// The refresh token in `path` (`-` = stdin).
fn read_refresh_token(path: &Path) -> Result<String> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| Error::io(format!("cannot read a refresh token from stdin: {e}")))?
    } else {
        std::fs::read_to_string(path).map_err(|e| {
            Error::io(format!(
                "cannot read a refresh token from {}: {e}",
                path.display()
            ))
        })?
    };
    parse_refresh_token(&text).ok_or_else(|| {
        let from = if path == Path::new("-") {
            "stdin".to_owned()
        } else {
            path.display().to_string()
        };
        Error::data(format!(
            "{from} holds no refresh token: give a bare token, or JSON with a \"refresh_token\" \
             field (such as mutt_oauth2.py's decrypted token file)"
        ))
    })
}

/// A bare token (one word), or the `refresh_token` field of a JSON object.
fn parse_refresh_token(text: &str) -> Option<String> {
    let text = text.trim();
    if text.starts_with('{') {
        let json: serde_json::Value = serde_json::from_str(text).ok()?;
        let rt = json.get("refresh_token")?.as_str()?.trim();
        return (!rt.is_empty()).then(|| rt.to_owned());
    }
    let one_word = !text.is_empty() && !text.contains(char::is_whitespace);
    one_word.then(|| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_bare_or_in_json() {
        assert_eq!(
            parse_refresh_token("  rt-1.abc\n").as_deref(),
            Some("rt-1.abc")
        );
        let mutt = r#"{"access_token": "at", "access_token_expiration": "2026-01-01T00:00:00",
            "refresh_token": "rt-2", "registration": "microsoft", "email": "a@b.c"}"#;
        assert_eq!(parse_refresh_token(mutt).as_deref(), Some("rt-2"));
        assert_eq!(parse_refresh_token(""), None);
        assert_eq!(parse_refresh_token("two words"), None);
        assert_eq!(parse_refresh_token(r#"{"access_token": "at"}"#), None);
        assert_eq!(parse_refresh_token(r#"{"refresh_token": ""}"#), None);
        assert_eq!(parse_refresh_token("{not json"), None);
    }

    #[test]
    fn poll_outcomes() {
        assert_eq!(poll_outcome("authorization_pending"), Poll::Pending);
        assert_eq!(poll_outcome("slow_down"), Poll::SlowDown);
        assert_eq!(poll_outcome("expired_token"), Poll::Expired);
        assert_eq!(poll_outcome("authorization_declined"), Poll::Declined);
        assert_eq!(poll_outcome("access_denied"), Poll::Declined);
        assert_eq!(poll_outcome("invalid_client"), Poll::Failed);
        assert_eq!(poll_outcome(""), Poll::Failed);
    }
}
