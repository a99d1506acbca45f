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
    /// The client id an imported token file named and the redeem used (to be kept in the
    /// config, since the token only works with it).
    pub client_id_from_file: Option<String>,
    /// Who signed in, when the `id_token` said.
    pub identity: Option<String>,
}

/// Runs the login for `account` and saves the tokens.
pub async fn login(account: &AccountSettings, options: &Options) -> Result<LoggedIn> {
    let (response, imported, file_client_id) = match &options.import_refresh_token {
        Some(path) => {
            let found = read_refresh_token(path, &account.name)?;
            // mutt_oauth2.py-style files may name the client the token was issued to; it is
            // used when the account sets no client_id of its own.
            let file_client_id = found.client_id.filter(|id| {
                account.config.client_id.is_none() && account.oauth.client_id.as_deref() != Some(id)
            });
            let mut redeemer = account.clone();
            if let Some(id) = &file_client_id {
                redeemer.oauth.client_id = Some(id.clone());
            }
            let response = redeem_imported(&redeemer, &found.refresh_token).await?;
            (response, Some(found.refresh_token), file_client_id)
        }
        None => (run_flow(account, options).await?, None, None),
    };
    let identity = check_identity(account, &response)?;
    let mut done = save(account, response, imported, identity).await?;
    done.client_id_from_file = file_client_id;
    Ok(done)
}

/// AADSTS70000: "the provided grant is invalid or malformed", which is what Microsoft says
/// to a refresh token issued to another application.
const GRANT_OF_ANOTHER_CLIENT: u64 = 70000;

/// Redeems an imported refresh token once; a token of another client says which setting
/// fixes it.
async fn redeem_imported(account: &AccountSettings, refresh_token: &str) -> Result<TokenResponse> {
    let form = grants::prepare(account, Grant::RefreshToken(refresh_token.to_owned())).await?;
    match form.answer().await? {
        Answer::Tokens(tokens) => Ok(tokens),
        Answer::Refused { status, body } if body.error_codes.contains(&GRANT_OF_ANOTHER_CLIENT) => {
            let refused = form.refused(status, &body).to_string();
            Err(Error::token(
                TokenClass::Config,
                format!(
                    "{refused}; this refresh token was issued to another client id: set client_id \
                     in [accounts.{}] to the one the old tool used (mutt_oauth2.py: the \
                     registration's client_id), then import it again",
                    account.name
                ),
            ))
        }
        Answer::Refused { status, body } => Err(form.refused(status, &body)),
    }
}

/// Who signed in, from the `id_token`'s `preferred_username` or `email` (`OpenID` Connect
/// Core §5.1), compared case-insensitively with the account's `user` (or `email`): a
/// browser signed in as somebody else is refused, and nothing is stored. The `id_token` came
/// straight from the token endpoint over verified TLS, so its signature need not be
/// checked (`OpenID` Connect Core §3.1.3.7). No `id_token`, or one naming nobody: `None`.
fn check_identity(account: &AccountSettings, response: &TokenResponse) -> Result<Option<String>> {
    let Some(claims) = response.id_token.as_deref().and_then(id_token_claims) else {
        return Ok(None);
    };
    let named: Vec<&str> = ["preferred_username", "email"]
        .iter()
        .filter_map(|k| claims.get(*k).and_then(serde_json::Value::as_str))
        .filter(|v| !v.is_empty())
        .collect();
    let Some(first) = named.first() else {
        return Ok(None);
    };
    let expected = account.xoauth2_user();
    if let Some(same) = named.iter().find(|n| n.eq_ignore_ascii_case(expected)) {
        return Ok(Some((*same).to_owned()));
    }
    let key = if account.config.user.is_some() {
        "user"
    } else {
        "email"
    };
    Err(Error::token(
        TokenClass::NeedsLogin,
        format!(
            "the browser signed in as {first}, but this account's {key} is {expected}: nothing \
             was stored; run the login again and sign in as {expected} (a private window helps), \
             or set `user = \"{first}\"` for the account if that identity sends its mail"
        ),
    ))
}

/// The claims of a JWT (its middle part, base64url), or `None` if it is not one.
fn id_token_claims(jwt: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        serde_json::Value::Object(map) => Some(map),
        _ => None,
    }
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
    identity: Option<String>,
) -> Result<LoggedIn> {
    let store = TokenStore::new(account)?;
    let mut stored: StoredToken = merge(None, response, now());
    if stored.refresh_token.is_none() {
        stored.refresh_token = imported;
    }
    stored.identity = identity;
    stored.flow = Some(account.oauth.flow.name().to_owned());
    blocking(move || {
        let lock = store.lock()?;
        store.save(&stored)?;
        drop(lock);
        Ok(LoggedIn {
            expires_at: stored.expires_at,
            has_refresh_token: stored.refresh_token.is_some(),
            client_id_from_file: None,
            identity: stored.identity,
        })
    })
    .await
}

/// `oauth2-sendmail: account NAME: ` before every line meant for the user.
fn say(account: &AccountSettings, text: &str) {
    crate::stderr::account(&account.name, text);
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
    crate::provider::check_redirect_registered(&account.name, oauth)?;
    let pkce = Pkce::new()?;
    let state = authcode::new_state()?;
    let redirect = Redirect::bind(&oauth.redirect_uri)
        .await?
        .expecting_issuer(Some(oauth.authorize_url.clone()));
    let url = authcode::authorize_url(
        oauth,
        client_id,
        &redirect.uri,
        &state,
        &pkce,
        account.xoauth2_user(),
    )?;
    let browser = if no_browser {
        Browser::NotAsked
    } else {
        match authcode::open_browser(&url) {
            Ok(()) => Browser::Opened,
            Err(e) => Browser::Failed(e.to_string()),
        }
    };
    tell_authcode(account, &url, &redirect, &browser);
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

/// What became of the browser; a failure is no error, since the URL is printed anyway.
enum Browser {
    Opened,
    /// `--no-browser`.
    NotAsked,
    /// Why not (one plain sentence).
    Failed(String),
}

/// The URL on a line of its own (easy to copy), once, and how the code will come back.
fn tell_authcode(account: &AccountSettings, url: &str, redirect: &Redirect, browser: &Browser) {
    let minutes = authcode::LOGIN_TIMEOUT.as_secs() / 60;
    let who = account.xoauth2_user();
    say(
        account,
        &match browser {
            Browser::Opened => {
                format!(
                    "a browser was opened to sign in as {who}; if it did not open, open this URL:"
                )
            }
            Browser::NotAsked => format!("to sign in as {who}, open this URL in a browser:"),
            Browser::Failed(why) => {
                // Without a browser here, the device code signs in from any other device;
                // not for Gmail, whose device flow does not grant the mail scope
                // (https://developers.google.com/identity/protocols/oauth2/limited-input-device#allowedscopes).
                let device = if account.oauth.device_code_url.is_empty()
                    || account.provider == crate::config::ProviderKind::Gmail
                {
                    String::new()
                } else {
                    format!(
                        " (or sign in on another device: `oauth2-sendmail login {} --flow devicecode`)",
                        account.name
                    )
                };
                format!("{why}; to sign in as {who}, open this URL in a browser{device}:")
            }
        },
    );
    crate::stderr::url(url);
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
            account.xoauth2_user(),
            device.verification_uri,
            device.user_code
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
    let password = rpassword::prompt_password(format!("Password for {}: ", account.xoauth2_user()))
        .map_err(|e| Error::io(format!("cannot read the password from the terminal: {e}")))?;
    if password.is_empty() {
        return Err(Error::usage("no password was typed"));
    }
    Ok(Grant::Password(Some(password)))
}

// ---------------------------------------------------------------------------------------
// Import of a refresh token

/// What an import file holds.
#[derive(Debug, PartialEq, Eq)]
struct Imported {
    refresh_token: String,
    /// The `client_id` field of a JSON token file, when it has one.
    client_id: Option<String>,
}

/// The refresh token in `path` (`-` = stdin). An OpenPGP-encrypted file (gpg's binary
/// packets or ASCII armour) is refused with the pipe that decrypts it.
fn read_refresh_token(path: &Path, account: &str) -> Result<Imported> {
    let stdin = path == Path::new("-");
    let bytes = if stdin {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
            .map_err(|e| Error::io(format!("cannot read a refresh token from stdin: {e}")))?;
        buf
    } else {
        std::fs::read(path).map_err(|e| {
            Error::io(format!(
                "cannot read a refresh token from {}: {e}",
                path.display()
            ))
        })?
    };
    let from = if stdin {
        "stdin".to_owned()
    } else {
        path.display().to_string()
    };
    if is_openpgp(&bytes) {
        let file = if stdin {
            "FILE".to_owned()
        } else {
            shell_words::quote(&path.display().to_string()).into_owned()
        };
        return Err(Error::data(format!(
            "{from} is encrypted (OpenPGP): decrypt it first: `gpg -d {file} | oauth2-sendmail \
             login {account} --import-refresh-token -`"
        )));
    }
    let text = String::from_utf8_lossy(&bytes);
    parse_refresh_token(&text).ok_or_else(|| {
        Error::data(format!(
            "{from} holds no refresh token: give a bare token, or JSON with a \"refresh_token\" \
             field (such as mutt_oauth2.py's decrypted token file)"
        ))
    })
}

/// gpg's output: ASCII armour, or a binary `OpenPGP` packet that starts an encrypted message
/// (public- or symmetric-key session key, encrypted or compressed data; RFC 9580 §4.2, §5).
fn is_openpgp(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(64)]);
    if text.trim_start().starts_with("-----BEGIN PGP MESSAGE-----") {
        return true;
    }
    let Some(&first) = bytes.first() else {
        return false;
    };
    if first & 0x80 == 0 {
        return false;
    }
    let tag = if first & 0x40 != 0 {
        first & 0x3f
    } else {
        (first >> 2) & 0x0f
    };
    matches!(tag, 1 | 3 | 8 | 9 | 18 | 20)
}

/// A bare token (one word), or the `refresh_token` (and `client_id`) of a JSON object.
fn parse_refresh_token(text: &str) -> Option<Imported> {
    let text = text.trim();
    if text.starts_with('{') {
        let json: serde_json::Value = serde_json::from_str(text).ok()?;
        let rt = json.get("refresh_token")?.as_str()?.trim();
        let client_id = json
            .get("client_id")
            .and_then(serde_json::Value::as_str)
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .map(str::to_owned);
        return (!rt.is_empty()).then(|| Imported {
            refresh_token: rt.to_owned(),
            client_id,
        });
    }
    let one_word = !text.is_empty() && !text.contains(char::is_whitespace);
    one_word.then(|| Imported {
        refresh_token: text.to_owned(),
        client_id: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(text: &str) -> Option<String> {
        parse_refresh_token(text).map(|i| i.refresh_token)
    }

    #[test]
    fn refresh_tokens_bare_or_in_json() {
        assert_eq!(rt("  rt-1.abc\n").as_deref(), Some("rt-1.abc"));
        let mutt = r#"{"access_token": "at", "access_token_expiration": "2026-01-01T00:00:00",
            "refresh_token": "rt-2", "registration": "microsoft", "email": "a@b.c"}"#;
        assert_eq!(
            parse_refresh_token(mutt),
            Some(Imported {
                refresh_token: "rt-2".into(),
                client_id: None
            })
        );
        let with_client = r#"{"refresh_token": "rt-3", "client_id": "abc-123"}"#;
        assert_eq!(
            parse_refresh_token(with_client)
                .unwrap()
                .client_id
                .as_deref(),
            Some("abc-123")
        );
        assert_eq!(rt(""), None);
        assert_eq!(rt("two words"), None);
        assert_eq!(rt(r#"{"access_token": "at"}"#), None);
        assert_eq!(rt(r#"{"refresh_token": ""}"#), None);
        assert_eq!(rt("{not json"), None);
    }

    #[test]
    fn openpgp_messages_are_recognised() {
        assert!(is_openpgp(b"-----BEGIN PGP MESSAGE-----\n\nhQEMA..."));
        assert!(is_openpgp(&[0x85, 0x01, 0x0c])); // old format, public-key session key
        assert!(is_openpgp(&[0xc1, 0x5e])); // new format, public-key session key
        assert!(is_openpgp(&[0x8c, 0x0d])); // symmetric (gpg -c)
        assert!(!is_openpgp(b"M.R3_BAY.-Cd...token"));
        assert!(!is_openpgp(b"{\"refresh_token\": \"x\"}"));
        assert!(!is_openpgp(b""));
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
