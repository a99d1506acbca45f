//! The HTTP side of OAuth 2.0: form POSTs to the token endpoint (RFC 6749 §4–6, RFC 8628),
//! their answers parsed, and refusals turned into one-line errors by `aadsts`. No token,
//! refresh token, client secret or password ever reaches a message or a `Debug` output.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;

use super::aadsts::{ErrorBody, refusal};
use crate::config::Flow;
use crate::error::{Error, Result, TokenClass};
use crate::http::{MAX_BODY, one_line, read_body};
use crate::provider::AccountSettings;

/// Time to set up TCP and TLS with the token endpoint. A healthy endpoint answers in well
/// under a second; an unreachable one should turn into a "try again later" (exit 75) soon
/// enough that a mail client waiting on us does not look hung.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence while waiting for the endpoint's answer (each read).
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on the whole exchange, connect to last byte: the send path waits for the slower of
/// this and the SMTP set-up, and a tempfail lets the caller's queue retry later.
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(30);
/// Lifetime assumed when a response has no usable `expires_in` (some providers omit it;
/// Microsoft's access tokens live 60–90 minutes).
pub const DEFAULT_EXPIRES_IN: u64 = 3600;
/// Longest access-token lifetime believed (seconds): Microsoft's live 60–90 minutes; a
/// longer claim only makes us renew earlier than needed, never overflow a clock.
pub const MAX_EXPIRES_IN: u64 = 24 * 3600;

/// What to trade for tokens.
pub enum Grant {
    /// Redeem a refresh token whose grant is unknown (`--import-refresh-token`), asking
    /// for the account's scopes (`grant_type=refresh_token`).
    RefreshToken(String),
    /// Renew with a stored refresh token, asking for the scopes that were granted, or for
    /// none (RFC 6749 §6: the same as granted), never more: a standard provider answers a
    /// refresh that asks for more with `invalid_scope`.
    Renew {
        refresh_token: String,
        /// The `scope` the token endpoint reported, as stored in the cache.
        granted: Option<String>,
    },
    /// App-only, with the client secret (`grant_type=client_credentials`).
    ClientCredentials,
    /// ROPC (`grant_type=password`): the account's email and this password, or when `None`
    /// the output of `password_cmd`.
    Password(Option<String>),
    /// Redeem an authorization code (PKCE).
    AuthorizationCode {
        code: String,
        redirect_uri: String,
        code_verifier: String,
    },
    /// Poll a device code (RFC 8628).
    DeviceCode(String),
}

impl Grant {
    fn grant_type(&self) -> &'static str {
        match self {
            Grant::RefreshToken(_) | Grant::Renew { .. } => "refresh_token",
            Grant::ClientCredentials => "client_credentials",
            Grant::Password(_) => "password",
            Grant::AuthorizationCode { .. } => "authorization_code",
            Grant::DeviceCode(_) => "urn:ietf:params:oauth:grant-type:device_code",
        }
    }
}

impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Grant({}, <redacted>)", self.grant_type())
    }
}

/// A successful token response.
#[derive(Clone)]
pub struct TokenResponse {
    pub access_token: String,
    /// Seconds from now; [`DEFAULT_EXPIRES_IN`] when the response had none.
    pub expires_in: u64,
    /// `None` when the server did not send one (keep the old one).
    pub refresh_token: Option<String>,
    pub token_type: Option<String>,
    pub scope: Option<String>,
    /// `OpenID` Connect's `id_token` (a JWT naming who signed in), when `openid` was asked.
    pub id_token: Option<String>,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("token_type", &self.token_type)
            .field("scope", &self.scope)
            .field("id_token", &self.id_token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The success body as sent; numbers may come as strings (v1 endpoints).
#[derive(Deserialize)]
struct RawSuccess {
    access_token: Option<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    refresh_token: Option<String>,
    token_type: Option<String>,
    scope: Option<String>,
    id_token: Option<String>,
}

/// Parses a 2xx body. `None` when it holds no access token.
#[must_use]
pub fn parse_success(body: &[u8]) -> Option<TokenResponse> {
    let raw: RawSuccess = serde_json::from_slice(body).ok()?;
    let access_token = raw.access_token.filter(|t| !t.is_empty())?;
    crate::scrub::register(&access_token);
    if let Some(rt) = &raw.refresh_token {
        crate::scrub::register(rt);
    }
    let expires_in = number(raw.expires_in)
        .unwrap_or(DEFAULT_EXPIRES_IN)
        .min(MAX_EXPIRES_IN);
    Some(TokenResponse {
        access_token,
        expires_in,
        refresh_token: raw.refresh_token.filter(|t| !t.is_empty()),
        token_type: raw.token_type,
        scope: raw.scope,
        id_token: raw.id_token.filter(|t| !t.is_empty()),
    })
}

/// A JSON number, or a number in a string (v1 endpoints send `"3599"`).
fn number(value: Option<serde_json::Value>) -> Option<u64> {
    match value {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A device authorization (RFC 8628 §3.2): the code the user types, where, and how to poll.
pub struct DeviceAuthorization {
    /// Secret: whoever holds it collects the tokens.
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    /// Seconds until the codes expire.
    pub expires_in: u64,
    /// Seconds to wait between polls.
    pub interval: u64,
    /// Microsoft's ready-made instruction, e.g. "To sign in, use a web browser to open…".
    pub message: Option<String>,
}

impl fmt::Debug for DeviceAuthorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceAuthorization")
            .field("device_code", &"<redacted>")
            .field("user_code", &self.user_code)
            .field("verification_uri", &self.verification_uri)
            .field("expires_in", &self.expires_in)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

/// How long device codes live when the answer does not say (Microsoft's default).
pub const DEFAULT_DEVICE_EXPIRES_IN: u64 = 900;
/// RFC 8628 §3.2: "If no value is provided, clients MUST use 5 as the default."
pub const DEFAULT_POLL_INTERVAL: u64 = 5;
/// Longest device-code lifetime believed (seconds): Microsoft's is 15 minutes; a peer's huge
/// number must not overflow a clock.
pub const MAX_DEVICE_EXPIRES_IN: u64 = 3600;
/// Longest poll interval believed (seconds).
pub const MAX_POLL_INTERVAL: u64 = 60;

#[derive(Deserialize)]
struct RawDevice {
    device_code: Option<String>,
    user_code: Option<String>,
    verification_uri: Option<String>,
    /// Google's spelling.
    verification_url: Option<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    interval: Option<serde_json::Value>,
    message: Option<String>,
}

/// Parses a 2xx device authorization body; `None` when a required field is missing.
#[must_use]
pub fn parse_device_authorization(body: &[u8]) -> Option<DeviceAuthorization> {
    let raw: RawDevice = serde_json::from_slice(body).ok()?;
    let non_empty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    let device_code = non_empty(raw.device_code)?;
    crate::scrub::register(&device_code);
    Some(DeviceAuthorization {
        device_code,
        user_code: non_empty(raw.user_code)?,
        verification_uri: non_empty(raw.verification_uri.or(raw.verification_url))?,
        expires_in: number(raw.expires_in)
            .unwrap_or(DEFAULT_DEVICE_EXPIRES_IN)
            .min(MAX_DEVICE_EXPIRES_IN),
        interval: number(raw.interval)
            .unwrap_or(DEFAULT_POLL_INTERVAL)
            .min(MAX_POLL_INTERVAL),
        message: non_empty(raw.message),
    })
}

/// The form to POST, built from the account (secrets fetched by their commands here).
/// Blocking: runs `client_secret_cmd` / `password_cmd`.
pub fn form(account: &AccountSettings, grant: &Grant) -> Result<Form> {
    let oauth = &account.oauth;
    let client_id = oauth.client_id(&account.name, account.provider)?;
    let mut fields: Vec<(&'static str, String)> = vec![
        ("grant_type", grant.grant_type().to_owned()),
        ("client_id", client_id.to_owned()),
    ];
    let mut secrets = Vec::new();
    let client_secret = oauth.client_secret()?;
    match grant {
        Grant::RefreshToken(rt)
        | Grant::Renew {
            refresh_token: rt, ..
        } => {
            fields.push(("refresh_token", rt.clone()));
            secrets.push(rt.clone());
        }
        Grant::ClientCredentials => {
            if client_secret.is_none() {
                return Err(Error::token(
                    TokenClass::Config,
                    "flow = \"client-credentials\" needs client_secret or client_secret_cmd",
                ));
            }
        }
        Grant::Password(given) => {
            let password = match given {
                Some(p) => p.clone(),
                None => oauth
                    .password_cmd
                    .as_ref()
                    .ok_or_else(|| {
                        Error::token(TokenClass::Config, "flow = \"password\" needs password_cmd")
                    })?
                    .secret("password_cmd")?,
            };
            fields.push(("username", account.xoauth2_user().to_owned()));
            fields.push(("password", password.clone()));
            secrets.push(password);
        }
        Grant::AuthorizationCode {
            code,
            redirect_uri,
            code_verifier,
        } => {
            fields.push(("code", code.clone()));
            fields.push(("redirect_uri", redirect_uri.clone()));
            fields.push(("code_verifier", code_verifier.clone()));
            secrets.push(code.clone());
            secrets.push(code_verifier.clone());
        }
        Grant::DeviceCode(code) => {
            fields.push(("device_code", code.clone()));
            secrets.push(code.clone());
        }
    }
    match grant {
        Grant::Renew { granted, .. } => {
            if let Some(granted) = granted.as_deref().filter(|g| !g.trim().is_empty()) {
                fields.push(("scope", granted.to_owned()));
            }
        }
        _ if !oauth.scopes.is_empty() => fields.push(("scope", oauth.scopes.join(" "))),
        _ => {}
    }
    if let Some(resource) = &oauth.resource {
        fields.push(("resource", resource.clone()));
    }
    if let Some(secret) = client_secret {
        fields.push(("client_secret", secret.clone()));
        secrets.push(secret);
    }
    for secret in &secrets {
        crate::scrub::register(secret);
    }
    Ok(Form {
        url: oauth.token_url.clone(),
        ca_file: oauth.ca_file.clone(),
        proxy: oauth.proxy.clone(),
        account: account.name.clone(),
        fields,
        secrets,
    })
}

/// A ready request: where to, and the fields (some of them secret).
pub struct Form {
    url: String,
    ca_file: Option<std::path::PathBuf>,
    proxy: Option<crate::proxy::Proxy>,
    account: String,
    fields: Vec<(&'static str, String)>,
    /// Values that must never appear in a message, even if a server echoes them.
    secrets: Vec<String>,
}

impl fmt::Debug for Form {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.fields.iter().map(|(k, _)| *k).collect();
        write!(f, "Form({}, fields {names:?}, values <redacted>)", self.url)
    }
}

/// What the token endpoint answered: tokens, or its refusal as sent (RFC 6749 §5.2).
pub enum Answer {
    Tokens(TokenResponse),
    Refused { status: u16, body: ErrorBody },
}

impl Form {
    /// POSTs the form and parses the answer; a refusal becomes its one-line error.
    pub async fn send(&self) -> Result<TokenResponse> {
        match self.answer().await? {
            Answer::Tokens(t) => Ok(t),
            Answer::Refused { status, body } => Err(self.refused(status, &body)),
        }
    }

    /// POSTs the form and keeps a refusal as data: device-code polling reacts on the raw
    /// `error` (`authorization_pending`, `slow_down`, …). Only a transport failure or a
    /// success without a token is an error here.
    pub async fn answer(&self) -> Result<Answer> {
        let (status, body) = self.exchange().await.map_err(|e| self.scrub(e))?;
        if (200..300).contains(&status) {
            return parse_success(&body).map(Answer::Tokens).ok_or_else(|| {
                self.scrub(Error::token(
                    TokenClass::Transient,
                    format!(
                        "token service unreachable ({}): HTTP {status} without an access token; try again later",
                        self.url
                    ),
                ))
            });
        }
        let body = self.error_body(&body);
        Ok(Answer::Refused { status, body })
    }

    /// The one-line error for a refusal of this form, secrets scrubbed.
    #[must_use]
    pub fn refused(&self, status: u16, body: &ErrorBody) -> Error {
        let client_id = self.field("client_id").unwrap_or_default();
        self.scrub(refusal(&self.account, &self.url, client_id, status, body))
    }

    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// POSTs the form; returns the status and the body, whatever the status.
    async fn exchange(&self) -> Result<(u16, Vec<u8>)> {
        let client = client(&self.url, self.ca_file.as_deref(), self.proxy.as_ref())?;
        let transient = |what: &str, e: reqwest::Error| {
            Error::token(
                TokenClass::Transient,
                format!(
                    "token service unreachable ({}): {what}: {}; try again later",
                    self.url,
                    one_line(&e.without_url())
                ),
            )
        };
        let response = client
            .post(&self.url)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&self.fields)
            .send()
            .await
            .map_err(|e| {
                // A certificate that does not verify will not verify in an hour either.
                Error::certificate_in(&format!("the token service ({})", self.url), &e)
                    .unwrap_or_else(|| transient("request failed", e))
            })?;
        let status = response.status().as_u16();
        // The body first: error_for_status() would throw Microsoft's error JSON away.
        let body = read_body(response, MAX_BODY).await.map_err(|e| {
            Error::token(
                TokenClass::Transient,
                format!(
                    "token service unreachable ({}): reading the answer failed: {e}; try again later",
                    self.url
                ),
            )
        })?;
        Ok((status, body))
    }

    /// The error JSON of a refusal, with every secret the server may have echoed (in any
    /// encoding) scrubbed from its text before anything cuts it short.
    fn error_body(&self, body: &[u8]) -> ErrorBody {
        let mut body: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
        body.error = self.scrub_text(&body.error);
        body.error_description = body.error_description.map(|d| self.scrub_text(&d));
        body
    }

    fn scrub_text(&self, text: &str) -> String {
        crate::scrub::scrub(&crate::scrub::scrub_with(text, &self.secrets))
    }

    /// Replaces any secret a server might have echoed, and keeps the message on one line.
    fn scrub(&self, e: Error) -> Error {
        e.map_token_detail(|detail| self.scrub_text(detail).replace(['\r', '\n'], " "))
    }
}

/// Requests `grant` for `account` (runs secret commands off the async thread).
pub async fn request(account: &AccountSettings, grant: Grant) -> Result<TokenResponse> {
    prepare(account, grant).await?.send().await
}

/// The form for `grant`, built off the async thread (secret commands run here); to send
/// more than once, as device-code polling does.
pub async fn prepare(account: &AccountSettings, grant: Grant) -> Result<Form> {
    let account = account.clone();
    tokio::task::spawn_blocking(move || form(&account, &grant))
        .await
        .map_err(|e| Error::internal(format!("the secret command task failed: {e}")))?
}

/// Starts a device-code sign-in (RFC 8628 §3.1): POSTs `client_id` and `scope` (or
/// `resource`) to the account's `device_code_url`.
pub async fn device_authorization(account: &AccountSettings) -> Result<DeviceAuthorization> {
    let form = device_form(account)?;
    let (status, body) = form.exchange().await.map_err(|e| form.scrub(e))?;
    if (200..300).contains(&status) {
        return parse_device_authorization(&body).ok_or_else(|| {
            Error::token(
                TokenClass::Transient,
                format!(
                    "device code service unreachable ({}): HTTP {status} without a device code; try again later",
                    form.url
                ),
            )
        });
    }
    let body = form.error_body(&body);
    Err(form.refused(status, &body))
}

fn device_form(account: &AccountSettings) -> Result<Form> {
    let oauth = &account.oauth;
    if oauth.device_code_url.is_empty() {
        return Err(Error::config(format!(
            "account {}: flow = \"devicecode\" needs device_code_url",
            account.name
        )));
    }
    let mut fields: Vec<(&'static str, String)> = vec![(
        "client_id",
        oauth.client_id(&account.name, account.provider)?.to_owned(),
    )];
    if !oauth.scopes.is_empty() {
        fields.push(("scope", oauth.scopes.join(" ")));
    }
    if let Some(resource) = &oauth.resource {
        fields.push(("resource", resource.clone()));
    }
    Ok(Form {
        url: oauth.device_code_url.clone(),
        ca_file: oauth.ca_file.clone(),
        proxy: oauth.proxy.clone(),
        account: account.name.clone(),
        fields,
        secrets: Vec::new(),
    })
}

/// The renewal a flow can do without a person, if any.
#[must_use]
pub fn unattended_grant(account: &AccountSettings) -> Option<Grant> {
    match account.oauth.flow {
        Flow::ClientCredentials => Some(Grant::ClientCredentials),
        Flow::Password if account.oauth.password_cmd.is_some() => Some(Grant::Password(None)),
        _ => None,
    }
}

/// An HTTPS client with timeouts and the account's extra trusted roots. Refuses any URL that
/// is not `https://`: tokens never cross an unencrypted connection.
pub fn client(
    url: &str,
    ca_file: Option<&std::path::Path>,
    proxy: Option<&crate::proxy::Proxy>,
) -> Result<reqwest::Client> {
    let scheme_ok = url
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
    if !scheme_ok {
        return Err(Error::token(
            TokenClass::Config,
            format!("token_url `{url}` is not https://: tokens are only sent over TLS"),
        ));
    }
    // main() installs ring for the whole process; this keeps any other caller from panicking.
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let mut builder = reqwest::Client::builder()
        .https_only(true)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .timeout(TOTAL_TIMEOUT)
        .user_agent(concat!("oauth2-sendmail/", env!("CARGO_PKG_VERSION")));
    // The same trust as for SMTP: system roots, `tls_ca_file`, a pinned self-signed cert.
    let tls = crate::tls::client_config(ca_file)?;
    builder = builder.tls_backend_preconfigured((*tls).clone());
    if let Some(proxy) = proxy {
        builder = builder.proxy(proxy.for_http()?);
    }
    builder
        .build()
        .map_err(|e| Error::internal(format!("cannot build the HTTPS client: {}", one_line(&e))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_bodies_with_number_string_or_missing_expires_in() {
        let t = parse_success(br#"{"token_type":"Bearer","scope":"s","expires_in":3599,"ext_expires_in":3599,"access_token":"at","refresh_token":"rt"}"#).unwrap();
        assert_eq!((t.access_token.as_str(), t.expires_in), ("at", 3599));
        assert_eq!(t.refresh_token.as_deref(), Some("rt"));
        assert_eq!(t.token_type.as_deref(), Some("Bearer"));
        let t = parse_success(br#"{"access_token":"at","expires_in":"1800","expires_on":"1767225600","resource":"r"}"#).unwrap();
        assert_eq!(t.expires_in, 1800);
        assert_eq!(t.refresh_token, None);
        assert_eq!(
            parse_success(br#"{"access_token":"at"}"#)
                .unwrap()
                .expires_in,
            DEFAULT_EXPIRES_IN
        );
        assert_eq!(
            parse_success(br#"{"access_token":"at","expires_in":"soon"}"#)
                .unwrap()
                .expires_in,
            DEFAULT_EXPIRES_IN
        );
        assert_eq!(
            parse_success(br#"{"access_token":"at","expires_in":-5}"#)
                .unwrap()
                .expires_in,
            DEFAULT_EXPIRES_IN
        );
        assert!(parse_success(br#"{"token_type":"Bearer"}"#).is_none());
        assert!(parse_success(br#"{"access_token":""}"#).is_none());
        assert!(parse_success(b"<html>").is_none());
    }

    #[test]
    fn device_authorizations_as_microsoft_and_google_send_them() {
        let d = parse_device_authorization(
            br#"{"user_code":"ABCD-EFGH","device_code":"dc-secret","verification_uri":"https://microsoft.com/devicelogin","expires_in":900,"interval":5,"message":"To sign in, use a web browser."}"#,
        )
        .unwrap();
        assert_eq!(
            (d.user_code.as_str(), d.expires_in, d.interval),
            ("ABCD-EFGH", 900, 5)
        );
        assert_eq!(d.message.as_deref(), Some("To sign in, use a web browser."));
        assert!(!format!("{d:?}").contains("dc-secret"));
        let g = parse_device_authorization(
            br#"{"device_code":"dc","user_code":"U","verification_url":"https://www.google.com/device","expires_in":"1800"}"#,
        )
        .unwrap();
        assert_eq!(g.verification_uri, "https://www.google.com/device");
        assert_eq!((g.expires_in, g.interval), (1800, DEFAULT_POLL_INTERVAL));
        assert!(
            parse_device_authorization(br#"{"user_code":"U","verification_uri":"x"}"#).is_none()
        );
    }

    #[test]
    fn plain_http_is_refused_before_any_connection() {
        let e = client("http://login.example/token", None, None).unwrap_err();
        assert_eq!(e.exit_code(), 78);
        assert!(client("HTTPS://login.example/token", None, None).is_ok());
    }

    #[test]
    fn debug_output_is_redacted() {
        let g = Grant::RefreshToken("rt-secret".into());
        assert!(!format!("{g:?}").contains("rt-secret"));
        let f = Form {
            url: "https://x".into(),
            ca_file: None,
            proxy: None,
            account: "w".into(),
            fields: vec![("client_secret", "cs-secret".into())],
            secrets: vec!["cs-secret".into()],
        };
        let d = format!("{f:?}");
        assert!(
            d.contains("client_secret") && !d.contains("cs-secret"),
            "{d}"
        );
        // A server that echoes a secret does not get it into our message.
        let e = f.scrub(Error::token(TokenClass::Config, "bad: cs-secret\r\nmore"));
        assert_eq!(e.to_string(), "bad: <redacted>  more");
    }
}
