//! A fake Microsoft identity platform: a real HTTPS server on `127.0.0.1:0` (tokio-rustls
//! with [`TestCa`]) that answers token requests in Microsoft's shapes, records them, and can
//! be scripted to fail.
//!
//! ```ignore
//! let ca = TestCa::new();
//! let idp = FakeIdp::start(&ca);
//! let rt = idp.issue_refresh_token();              // seed a cache with it
//! let url = idp.token_url_v2("contoso");           // or token_url_v1 (21Vianet shape)
//! idp.set_delay(Duration::from_millis(500));       // make concurrent refreshes overlap
//! idp.push_failure(Failure::invalid_grant(700082)); // the next request fails once
//! idp.set_failure(Some(Failure::Status(503)));      // every request fails until cleared
//! // … run the binary …
//! assert_eq!(idp.refresh_count(), 1);
//! let sent = idp.requests();                       // every request, form fields decoded
//! assert_eq!(sent[0].field("scope"), Some("https://outlook.office.com/SMTP.Send offline_access"));
//! let valid = idp.valid_access_tokens();            // share with a fake SMTP server
//! ```
//!
//! Endpoints: `POST /{tenant}/oauth2/v2.0/token` (v2: `scope`, numbers as numbers; a
//! `resource` field is refused with AADSTS901002 as Microsoft does) and
//! `POST /{tenant}/oauth2/token` (v1: `resource`, numbers as strings, `expires_on`).
//! Grants: `refresh_token` (the refresh token must be one this fake issued and not revoked;
//! a new one is issued on every use and the old one stays valid unless
//! [`FakeIdp::set_rotation_revokes_old`]), `client_credentials` (needs the client's
//! registered secret, see [`FakeIdp::register_client_secret`]), `password` (checks the
//! pair registered with [`FakeIdp::add_user`]), `authorization_code` (codes from
//! [`FakeIdp::issue_auth_code`] or from the authorize endpoint, single use; a code from the
//! authorize endpoint must come with the same `redirect_uri` and a `code_verifier` whose S256
//! hash is the `code_challenge` it saw) and the device-code grant (codes from
//! [`FakeIdp::issue_device_code`] or the devicecode endpoint: `authorization_pending` until
//! approved, `authorization_declined` when declined, `expired_token` after `expires_in`).
//!
//! Interactive endpoints, for `login`:
//! - `GET /{tenant}/oauth2/v2.0/authorize` and v1 `GET /{tenant}/oauth2/authorize` act like a
//!   browser session that is already signed in: `302 Found` with `Location:
//!   <redirect_uri>?code=…&state=<state>`, or `?error=access_denied…` after
//!   [`FakeIdp::set_authorize_error`]. Scripted failures do not apply here. For
//!   Thunderbird's client id, a redirect its registration does not hold (`http://localhost:*`)
//!   gets the browser page with AADSTS50011 (`400`, no redirect), as Microsoft does, and a
//!   code redeemed with one gets `invalid_grant` AADSTS50011.
//! - `POST /{tenant}/oauth2/v2.0/devicecode` (and v1 `/oauth2/devicecode`) answer
//!   `device_code`, `user_code`, `verification_uri`, `expires_in`, `interval` and `message`.
//!   The interval is [`DEVICE_INTERVAL`] (1 s, not Microsoft's 5 s, so tests stay fast) and
//!   the lifetime is set with [`FakeIdp::set_device_expires_in`]; a test reads the code with
//!   [`FakeIdp::last_user_code`] and approves or declines it by that code.
//!
//! As strict as the real service where our client must be right:
//! - access tokens are of realistic size ([`ACCESS_TOKEN_LEN`]: an XOAUTH2 string over
//!   2,500 bytes);
//! - Thunderbird's client id ([`THUNDERBIRD_CLIENT_ID`]) may only be sent back to the
//!   redirects its registration holds ([`THUNDERBIRD_REDIRECTS`]);
//! - a grant after an interactive sign-in that asked for `openid` returns an `id_token` for
//!   whoever signed in ([`FakeIdp::sign_in_as`], else the `login_hint`), with
//!   `preferred_username` only for `profile` and `email` only for `email`, as Microsoft;
//! - with [`FakeIdp::set_strict_refresh_scopes`], a refresh asking for more than its refresh
//!   token was granted is `invalid_scope`, as oidc-provider answers;
//! - [`FakeIdp::set_redirect_iss`] adds an RFC 9207 `iss` to the authorize redirect.
//!
//! Every connection gets one answer and is closed (`Connection: close`).

// AADSTS codes are identifiers, written as Microsoft prints them.
#![allow(clippy::unreadable_literal)]

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::support::{TestCa, now, spawn_server};

/// The longest request head the fake reads (a token request is a few hundred bytes).
const MAX_HEAD: usize = 64 * 1024;
/// Default access-token lifetime, as Microsoft usually reports it.
pub const DEFAULT_EXPIRES_IN: u64 = 3599;
/// Seconds between device-code polls the fake asks for: Microsoft says 5; 1 keeps a
/// device-code test to a second or two.
pub const DEVICE_INTERVAL: u64 = 1;
/// Device codes live this long unless a test says otherwise (Microsoft's 15 minutes).
pub const DEVICE_EXPIRES_IN: u64 = 900;
/// Where the fake sends device-code users (Microsoft's page; nobody opens it in a test).
pub const VERIFICATION_URI: &str = "https://microsoft.com/devicelogin";

/// One request as the fake received it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// The path, e.g. `/contoso/oauth2/v2.0/token`.
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The form fields, decoded; a repeated field keeps its last value.
    pub form: BTreeMap<String, String>,
    /// The body as received (the URL-encoded form).
    pub body: String,
}

impl Request {
    /// The `grant_type` field, or "".
    #[must_use]
    pub fn grant_type(&self) -> &str {
        self.field("grant_type").unwrap_or("")
    }

    #[must_use]
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form.get(name).map(String::as_str)
    }

    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The path without its query string.
    #[must_use]
    pub fn route(&self) -> &str {
        self.path.split('?').next().unwrap_or("")
    }

    /// The query string's parameters, decoded.
    #[must_use]
    pub fn query(&self) -> BTreeMap<String, String> {
        self.path
            .split_once('?')
            .map(|(_, q)| {
                q.split('&')
                    .filter(|p| !p.is_empty())
                    .map(|pair| {
                        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                        (percent_decode(k), percent_decode(v))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// True for a `/{tenant}/oauth2/token` (v1) request.
    #[must_use]
    pub fn is_v1(&self) -> bool {
        !self.path.contains("/v2.0/")
    }
}

/// A scripted failure.
#[derive(Clone, Debug)]
pub enum Failure {
    /// HTTP `status` with Microsoft's error JSON: `error`, an `AADSTS<code>:` description with
    /// CRLF Trace/Correlation ID lines, `error_codes: [code]`, trace ids, `error_uri`.
    Aad {
        status: u16,
        error: &'static str,
        code: u64,
    },
    /// This status with a non-JSON body (a proxy or load balancer answering).
    Status(u16),
    /// This status and JSON body, as given.
    Json { status: u16, body: Value },
    /// `200 OK`, chunked, and a JSON-looking body that never ends (a broken or hostile peer).
    Endless,
    /// 400 `invalid_grant` (AADSTS70008) whose `error_description` echoes the request body
    /// as received (the URL-encoded form, secrets and all), as some endpoints and proxies do.
    EchoForm,
    /// The same refusal, but the echo is the form re-encoded as another stack would write
    /// it: every byte but letters and digits escaped, lower-case hex, `+` for a space (so a
    /// `~` comes back as `%7e`, a space as `+`).
    EchoFormReencoded,
}

impl Failure {
    /// 400 `invalid_grant` with `code` (700082: expired by inactivity; 70008: expired or revoked).
    #[must_use]
    pub fn invalid_grant(code: u64) -> Failure {
        Failure::Aad {
            status: 400,
            error: "invalid_grant",
            code,
        }
    }

    /// 401 `invalid_client` with `code` (7000215: invalid client secret).
    #[must_use]
    pub fn invalid_client(code: u64) -> Failure {
        Failure::Aad {
            status: 401,
            error: "invalid_client",
            code,
        }
    }

    /// 503 `temporarily_unavailable` (JSON).
    #[must_use]
    pub fn temporarily_unavailable() -> Failure {
        Failure::Aad {
            status: 503,
            error: "temporarily_unavailable",
            code: 50196,
        }
    }
}

/// How `expires_in` is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpiresIn {
    /// The endpoint's usual form: a number on v2, a string on v1.
    Usual(u64),
    Number(u64),
    String(u64),
    Missing,
}

struct State {
    counter: u64,
    random: RandomState,
    refresh_tokens: HashSet<String>,
    /// The scope each refresh token was granted (those from `issue_refresh_token_for` and
    /// from grants that asked for a scope).
    granted: HashMap<String, String>,
    /// As oidc-provider: a refresh asking for a scope not granted is `invalid_scope`.
    strict_refresh_scopes: bool,
    /// An `iss` parameter added to the authorize redirect (RFC 9207), as Google sends one.
    redirect_iss: Option<String>,
    rotation_revokes_old: bool,
    omit_refresh_token_on_refresh: bool,
    expires_in: ExpiresIn,
    delay: Duration,
    failures: VecDeque<Failure>,
    always: Option<Failure>,
    requests: Vec<Request>,
    refreshes: usize,
    users: HashMap<String, String>,
    client_secrets: HashMap<String, String>,
    /// Unused codes; `Some` when the authorize endpoint issued it (bound to PKCE and redirect).
    auth_codes: HashMap<String, Option<CodeBinding>>,
    authorize_error: Option<String>,
    device_codes: HashMap<String, Device>,
    device_expires_in: u64,
    /// Who signs in at the browser or the device page; `None`: the `login_hint`, else
    /// [`DEFAULT_USER`].
    signed_in: Option<String>,
}

/// What an authorization code was issued for.
#[derive(Clone, Debug)]
struct CodeBinding {
    redirect_uri: String,
    code_challenge: Option<String>,
    /// Who signed in at the authorize endpoint.
    user: String,
    /// The scopes the authorize request asked for (the `id_token` follows them).
    scope: String,
}

/// A device code: its user code, whether the user acted, and when it expires.
#[derive(Clone, Debug)]
struct Device {
    user_code: String,
    /// The scopes the device authorization asked for.
    scope: String,
    decision: Option<bool>,
    expires: std::time::Instant,
}

impl State {
    fn unique(&mut self, prefix: &str) -> String {
        self.counter += 1;
        let r = self.random.hash_one(self.counter);
        format!("{prefix}-{}-{r:016x}", self.counter)
    }

    /// A pending device with a fresh user code (`ABCD1234`-like, as users type it).
    fn new_device(&mut self) -> Device {
        self.counter += 1;
        let r = self.random.hash_one(self.counter);
        Device {
            user_code: format!("{:08X}", r & 0xffff_ffff),
            scope: String::new(),
            decision: None,
            expires: std::time::Instant::now() + Duration::from_secs(self.device_expires_in),
        }
    }
}

/// The fake identity platform. Cheap to clone: clones share the server.
#[derive(Clone)]
pub struct FakeIdp {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    issued: Arc<Mutex<HashSet<String>>>,
    /// Each issued access token's audience (the resource it is for) and whether it is
    /// app-only (client credentials): what a fake resource server checks.
    audiences: Audiences,
    /// Each access token the token endpoint issued → the scopes it was granted: a fake
    /// resource server checks permissions with it (tokens made by a test directly have
    /// none recorded and hold every permission, as an admin-consented app).
    scopes: Scopes,
}

/// Access token → (audience, app-only), shared with a fake resource server (Graph).
pub type Audiences = Arc<Mutex<HashMap<String, (String, bool)>>>;

/// Access token → the `scope` it was granted.
pub type Scopes = Arc<Mutex<HashMap<String, String>>>;

/// The audience Microsoft gives tokens for SMTP/IMAP/POP (`https://outlook.office.com/…`).
pub const OUTLOOK_AUDIENCE: &str = "https://outlook.office.com";

impl FakeIdp {
    /// Starts the server on its own thread; it lives until the test process ends.
    #[must_use]
    pub fn start(ca: &TestCa) -> FakeIdp {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let idp = FakeIdp {
            addr,
            state: Arc::new(Mutex::new(State {
                counter: 0,
                random: RandomState::new(),
                refresh_tokens: HashSet::new(),
                rotation_revokes_old: false,
                omit_refresh_token_on_refresh: false,
                expires_in: ExpiresIn::Usual(DEFAULT_EXPIRES_IN),
                delay: Duration::ZERO,
                failures: VecDeque::new(),
                always: None,
                requests: Vec::new(),
                refreshes: 0,
                users: HashMap::new(),
                client_secrets: HashMap::new(),
                auth_codes: HashMap::new(),
                authorize_error: None,
                device_codes: HashMap::new(),
                device_expires_in: DEVICE_EXPIRES_IN,
                signed_in: None,
                granted: HashMap::new(),
                strict_refresh_scopes: false,
                redirect_iss: None,
            })),
            issued: Arc::new(Mutex::new(HashSet::new())),
            audiences: Arc::new(Mutex::new(HashMap::new())),
            scopes: Arc::new(Mutex::new(HashMap::new())),
        };
        let acceptor = ca.acceptor();
        let server = idp.clone();
        spawn_server(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                // As a real server does: a reply written in pieces (TLS tickets, HTTP head
                // and body) must not wait for the client's delayed ACK.
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let idp = server.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        idp.serve(tls).await;
                    }
                });
            }
        });
        idp
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// `https://127.0.0.1:PORT`.
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// `https://127.0.0.1:PORT/{tenant}/oauth2/v2.0/token`.
    #[must_use]
    pub fn token_url_v2(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/token", self.base_url())
    }

    /// `https://127.0.0.1:PORT/{tenant}/oauth2/token` (v1, `resource`, 21Vianet's shape).
    #[must_use]
    pub fn token_url_v1(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/token", self.base_url())
    }

    /// `https://127.0.0.1:PORT/{tenant}/oauth2/v2.0/authorize`.
    #[must_use]
    pub fn authorize_url_v2(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/authorize", self.base_url())
    }

    /// `https://127.0.0.1:PORT/{tenant}/oauth2/v2.0/devicecode`.
    #[must_use]
    pub fn device_code_url_v2(&self, tenant: &str) -> String {
        format!("{}/{tenant}/oauth2/v2.0/devicecode", self.base_url())
    }

    /// A new valid refresh token (as a login would have stored).
    #[must_use]
    pub fn issue_refresh_token(&self) -> String {
        let mut s = self.state();
        let rt = s.unique("rt");
        s.refresh_tokens.insert(rt.clone());
        rt
    }

    /// A new valid refresh token granted `scope`.
    #[must_use]
    pub fn issue_refresh_token_for(&self, scope: &str) -> String {
        let rt = self.issue_refresh_token();
        self.state().granted.insert(rt.clone(), scope.to_owned());
        rt
    }

    /// From now on a refresh that asks for a scope its refresh token was not granted gets
    /// `invalid_scope` (RFC 6749 §6, as oidc-provider answers); Microsoft is lenient.
    pub fn set_strict_refresh_scopes(&self, strict: bool) {
        self.state().strict_refresh_scopes = strict;
    }

    /// A new valid access token (as a login would have stored), for SMTP's audience, of
    /// realistic size.
    #[must_use]
    pub fn issue_access_token(&self) -> String {
        self.issue_access_token_for(OUTLOOK_AUDIENCE, false)
    }

    /// A new valid access token for `audience` (e.g. `https://graph.microsoft.com`),
    /// delegated or app-only.
    #[must_use]
    pub fn issue_access_token_for(&self, audience: &str, app_only: bool) -> String {
        let at = realistic_size(self.state().unique("at"));
        self.issued.lock().unwrap().insert(at.clone());
        self.audiences
            .lock()
            .unwrap()
            .insert(at.clone(), (audience.to_owned(), app_only));
        at
    }

    /// A new valid delegated access token for `audience` granted only `scope` (e.g. a
    /// token consented for `Mail.Send` and nothing else).
    #[must_use]
    pub fn issue_access_token_scoped(&self, audience: &str, scope: &str) -> String {
        let at = self.issue_access_token_for(audience, false);
        self.scopes
            .lock()
            .unwrap()
            .insert(at.clone(), scope.to_owned());
        at
    }

    /// Every issued access token's granted scopes, for a fake resource server.
    #[must_use]
    pub fn scopes(&self) -> Scopes {
        self.scopes.clone()
    }

    /// Every issued access token's audience, for a fake resource server.
    #[must_use]
    pub fn audiences(&self) -> Audiences {
        self.audiences.clone()
    }

    /// The audience `token` was issued for, if this fake issued it.
    #[must_use]
    pub fn audience_of(&self, token: &str) -> Option<String> {
        self.audiences
            .lock()
            .unwrap()
            .get(token)
            .map(|(a, _)| a.clone())
    }

    /// A single-use authorization code.
    #[must_use]
    pub fn issue_auth_code(&self) -> String {
        let mut s = self.state();
        let code = s.unique("code");
        s.auth_codes.insert(code.clone(), None);
        code
    }

    /// From now on the authorize redirect carries `iss=<iss>` (RFC 9207); `None` undoes it.
    pub fn set_redirect_iss(&self, iss: Option<&str>) {
        self.state().redirect_iss = iss.map(str::to_owned);
    }

    /// Who signs in at the browser or the device page from now on (`None`: the
    /// `login_hint`, else [`DEFAULT_USER`]): the `id_token` names that user.
    pub fn sign_in_as(&self, user: Option<&str>) {
        self.state().signed_in = user.map(str::to_owned);
    }

    /// From now on the authorize endpoint sends the browser back with `error=<error>`
    /// (e.g. `access_denied`, as when the user cancels or refuses consent); `None` undoes it.
    pub fn set_authorize_error(&self, error: Option<&str>) {
        self.state().authorize_error = error.map(str::to_owned);
    }

    /// A device code, pending until [`FakeIdp::approve_device_code`].
    #[must_use]
    pub fn issue_device_code(&self) -> String {
        let mut s = self.state();
        let device = s.new_device();
        let code = s.unique("dc");
        s.device_codes.insert(code.clone(), device);
        code
    }

    pub fn approve_device_code(&self, code: &str) {
        if let Some(d) = self.state().device_codes.get_mut(code) {
            d.decision = Some(true);
        }
    }

    /// The user code of the device code issued last, as the user would read it.
    #[must_use]
    pub fn last_user_code(&self) -> Option<String> {
        let s = self.state();
        s.device_codes
            .values()
            .max_by_key(|d| d.expires)
            .map(|d| d.user_code.clone())
    }

    /// The user entered `user_code` and signed in (`true`) or declined (`false`).
    pub fn decide_user_code(&self, user_code: &str, approve: bool) {
        for d in self.state().device_codes.values_mut() {
            if d.user_code == user_code {
                d.decision = Some(approve);
            }
        }
    }

    /// Device codes issued from now on expire after this many seconds.
    pub fn set_device_expires_in(&self, seconds: u64) {
        self.state().device_expires_in = seconds;
    }

    /// Makes every refresh token issued so far invalid (a password change, an admin revoke).
    pub fn revoke_refresh_tokens(&self) {
        self.state().refresh_tokens.clear();
    }

    /// Whether a refresh token is still accepted.
    #[must_use]
    pub fn refresh_token_valid(&self, rt: &str) -> bool {
        self.state().refresh_tokens.contains(rt)
    }

    /// When true, a used refresh token stops working (default: it stays valid, as on Microsoft).
    pub fn set_rotation_revokes_old(&self, revoke: bool) {
        self.state().rotation_revokes_old = revoke;
    }

    /// When true, a refresh answers without a `refresh_token` (the client keeps the old one).
    pub fn set_omit_refresh_token_on_refresh(&self, omit: bool) {
        self.state().omit_refresh_token_on_refresh = omit;
    }

    pub fn set_expires_in(&self, expires_in: ExpiresIn) {
        self.state().expires_in = expires_in;
    }

    /// Waits this long before answering each request.
    pub fn set_delay(&self, delay: Duration) {
        self.state().delay = delay;
    }

    /// The next request fails this way (queued: one failure per request).
    pub fn push_failure(&self, failure: Failure) {
        self.state().failures.push_back(failure);
    }

    /// Every request fails this way until `None`.
    pub fn set_failure(&self, failure: Option<Failure>) {
        self.state().always = failure;
    }

    /// A user for the password grant.
    pub fn add_user(&self, username: &str, password: &str) {
        self.state()
            .users
            .insert(username.to_owned(), password.to_owned());
    }

    /// A confidential client: its requests must carry this `client_secret`.
    pub fn register_client_secret(&self, client_id: &str, secret: &str) {
        self.state()
            .client_secrets
            .insert(client_id.to_owned(), secret.to_owned());
    }

    /// Every request received so far, in order.
    #[must_use]
    pub fn requests(&self) -> Vec<Request> {
        self.state().requests.clone()
    }

    /// How many `refresh_token` grant requests arrived (whatever the answer).
    #[must_use]
    pub fn refresh_count(&self) -> usize {
        self.state().refreshes
    }

    /// The access tokens this fake issued (and that a fake SMTP server should accept).
    #[must_use]
    pub fn valid_access_tokens(&self) -> Arc<Mutex<HashSet<String>>> {
        self.issued.clone()
    }

    /// Whether `token` is an access token this fake issued.
    #[must_use]
    pub fn is_valid_access_token(&self, token: &str) -> bool {
        self.issued.lock().unwrap().contains(token)
    }

    async fn serve<S>(&self, mut stream: S)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let Some(request) = read_request(&mut stream).await else {
            return;
        };
        let delay = {
            let mut s = self.state();
            if request.grant_type() == "refresh_token" {
                s.refreshes += 1;
            }
            s.requests.push(request.clone());
            s.delay
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if request.method == "GET" && request.route().ends_with("/authorize") {
            let head = match self.authorize(&request) {
                Ok(location) => format!(
                    "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n\
                     Connection: close\r\n\r\n"
                ),
                Err(why) => format!(
                    "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{why}",
                    why.len()
                ),
            };
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.shutdown().await;
            return;
        }
        let endless = {
            let mut s = self.state();
            if matches!(s.failures.front(), Some(Failure::Endless)) {
                s.failures.pop_front();
                true
            } else {
                s.failures.is_empty() && matches!(s.always, Some(Failure::Endless))
            }
        };
        if endless {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                        Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let piece = format!("{:x}\r\n{}\r\n", 64 * 1024, "a".repeat(64 * 1024));
            // Until the client hangs up.
            while stream.write_all(piece.as_bytes()).await.is_ok() {}
            return;
        }
        let (status, body) = self.answer(&request);
        let reason = match status {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            404 => "Not Found",
            429 => "Too Many Requests",
            503 => "Service Unavailable",
            _ => "Status",
        };
        let head = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n\
             Cache-Control: no-store, no-cache\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes()).await;
        let _ = stream.write_all(body.as_bytes()).await;
        let _ = stream.flush().await;
        let _ = stream.shutdown().await;
    }

    fn answer(&self, req: &Request) -> (u16, String) {
        let mut s = self.state();
        let failure = s.failures.pop_front().or_else(|| s.always.clone());
        if let Some(f) = failure {
            return match f {
                Failure::Aad {
                    status,
                    error,
                    code,
                } => aad_error(status, error, code),
                Failure::Status(status) => (
                    status,
                    format!("<html><body>{status} Service Unavailable</body></html>"),
                ),
                Failure::Json { status, body } => (status, body.to_string()),
                Failure::Endless => (500, json!({"error": "server_error"}).to_string()),
                Failure::EchoForm => echo_form(&req.body),
                Failure::EchoFormReencoded => echo_form(&reencode(&req.form)),
            };
        }
        if req.method == "POST" && req.path.ends_with("/devicecode") {
            return device_authorization(&mut s, req);
        }
        let path_ok = req.method == "POST"
            && (req.path.ends_with("/oauth2/v2.0/token") || req.path.ends_with("/oauth2/token"));
        if !path_ok {
            return (404, json!({"error": "not_found"}).to_string());
        }
        if !req.is_v1() && req.field("resource").is_some() {
            return aad_error(400, "invalid_request", 901002);
        }
        let Some(client_id) = req.field("client_id") else {
            return aad_error(400, "invalid_request", 900144);
        };
        if let Some(secret) = s.client_secrets.get(client_id) {
            let needs =
                req.grant_type() == "client_credentials" || req.field("client_secret").is_some();
            if needs && req.field("client_secret") != Some(secret.as_str()) {
                return aad_error(401, "invalid_client", 7000215);
            }
        } else if req.field("client_secret").is_some() {
            return aad_error(401, "invalid_client", 700025);
        }
        // One token is for one resource: scopes of two resources are refused (AADSTS28000),
        // as Microsoft does, before any grant is used.
        if !req.is_v1() && resources(req.field("scope").unwrap_or("")).len() > 1 {
            return aad_error(400, "invalid_scope", 28000);
        }
        match check_grant(&mut s, req, client_id) {
            Ok((refresh, signed_in)) => {
                let mut answer = self.tokens(&mut s, req, refresh);
                if let Some((user, scope)) = signed_in
                    && scope.split(' ').any(|w| w == "openid")
                    && answer.0 == 200
                {
                    let mut body: Value = serde_json::from_str(&answer.1).unwrap();
                    let iss = format!("{}/{}/v2.0", self.base_url(), body_tenant(&req.path));
                    body["id_token"] = json!(id_token(&iss, client_id, &user, &scope));
                    answer.1 = body.to_string();
                }
                answer
            }
            Err(refused) => refused,
        }
    }

    /// The signed-in browser session: where the browser is sent back to, with a code bound to
    /// the redirect URI and the PKCE challenge, or with the scripted error.
    fn authorize(&self, req: &Request) -> Result<String, String> {
        let q = req.query();
        let get = |k: &str| q.get(k).map(String::as_str);
        let redirect_uri = get("redirect_uri").ok_or("no redirect_uri")?.to_owned();
        if get("response_type") != Some("code") || get("client_id").is_none() {
            return Err("response_type=code and client_id are required".into());
        }
        let challenge = match (get("code_challenge"), get("code_challenge_method")) {
            (Some(c), Some("S256")) => Some(c.to_owned()),
            (None, None) => None,
            _ => return Err("only code_challenge_method=S256 is accepted".into()),
        };
        let mut url = reqwest::Url::parse(&redirect_uri).map_err(|e| e.to_string())?;
        if !redirect_registered(get("client_id").unwrap_or(""), &url) {
            // Microsoft cannot send the browser back to an address the app does not hold:
            // it shows the error in the browser, and the program never hears of it.
            return Err(format!(
                "<html><body>Sign in: Sorry, but we're having trouble signing you in. AADSTS50011: \
                 The redirect URI '{redirect_uri}' specified in the request does not match the \
                 redirect URIs configured for the application '{THUNDERBIRD_CLIENT_ID}'.</body></html>"
            ));
        }
        let mut s = self.state();
        {
            let mut pairs = url.query_pairs_mut();
            if let Some(error) = &s.authorize_error {
                pairs.append_pair("error", error);
                pairs.append_pair(
                    "error_description",
                    "AADSTS65004: User declined to consent to access the app.",
                );
            } else {
                let code = s.unique("code");
                let user = s
                    .signed_in
                    .clone()
                    .or(get("login_hint").map(str::to_owned))
                    .unwrap_or_else(|| DEFAULT_USER.to_owned());
                s.auth_codes.insert(
                    code.clone(),
                    Some(CodeBinding {
                        redirect_uri: redirect_uri.clone(),
                        code_challenge: challenge,
                        user,
                        scope: get("scope").unwrap_or("").to_owned(),
                    }),
                );
                pairs.append_pair("code", &code);
            }
            if let Some(state) = get("state") {
                pairs.append_pair("state", state);
            }
            if let Some(iss) = &s.redirect_iss {
                pairs.append_pair("iss", iss);
            }
        }
        Ok(url.to_string())
    }

    /// The success body: a new access token, and a new refresh token when `refresh`.
    fn tokens(&self, s: &mut State, req: &Request, refresh: bool) -> (u16, String) {
        let v1 = req.is_v1();
        let scope = req
            .field("scope")
            .map(str::to_owned)
            .or_else(|| {
                req.field("refresh_token")
                    .and_then(|old| s.granted.get(old).cloned())
            })
            .unwrap_or_else(|| "https://outlook.office.com/SMTP.Send".to_owned());
        let audience = if v1 {
            req.field("resource").unwrap_or(OUTLOOK_AUDIENCE).to_owned()
        } else {
            resources(&scope)
                .pop()
                .unwrap_or_else(|| OUTLOOK_AUDIENCE.to_owned())
        };
        let access = realistic_size(s.unique("at"));
        self.issued.lock().unwrap().insert(access.clone());
        let app_only = req.grant_type() == "client_credentials";
        self.audiences
            .lock()
            .unwrap()
            .insert(access.clone(), (audience, app_only));
        if !v1 {
            // v1 tokens carry what the app was consented, whatever was asked: none recorded.
            self.scopes
                .lock()
                .unwrap()
                .insert(access.clone(), scope.clone());
        }
        let expires = match s.expires_in {
            ExpiresIn::Usual(n) if v1 => Some(json!(n.to_string())),
            ExpiresIn::Usual(n) | ExpiresIn::Number(n) => Some(json!(n)),
            ExpiresIn::String(n) => Some(json!(n.to_string())),
            ExpiresIn::Missing => None,
        };
        let mut body = json!({
            "token_type": "Bearer",
            "scope": scope,
            "access_token": access,
        });
        if let Some(e) = expires {
            body["expires_in"] = e.clone();
            body["ext_expires_in"] = e;
        }
        if v1 {
            let n = match s.expires_in {
                ExpiresIn::Usual(n) | ExpiresIn::Number(n) | ExpiresIn::String(n) => n,
                ExpiresIn::Missing => DEFAULT_EXPIRES_IN,
            };
            body["expires_on"] = json!((now() + n).to_string());
            body["not_before"] = json!(now().to_string());
            if let Some(r) = req.field("resource") {
                body["resource"] = json!(r);
            }
        }
        if refresh {
            let rt = s.unique("rt");
            s.refresh_tokens.insert(rt.clone());
            // What a refresh token is granted: what was asked, or on a refresh without
            // scope what its predecessor had.
            let inherited = req
                .field("refresh_token")
                .and_then(|old| s.granted.get(old).cloned());
            if let Some(g) = req.field("scope").map(str::to_owned).or(inherited) {
                s.granted.insert(rt.clone(), g);
            }
            body["refresh_token"] = json!(rt);
        }
        (200, body.to_string())
    }
}

/// Thunderbird's public client id, whose app registration holds only the redirect URIs in
/// [`THUNDERBIRD_REDIRECTS`] (Microsoft ignores the port of a loopback redirect).
pub const THUNDERBIRD_CLIENT_ID: &str = "9e5f94bc-e8a4-4e73-b8be-63364c29d753";
/// Scheme, host and path of the redirects Thunderbird's registration holds.
pub const THUNDERBIRD_REDIRECTS: &[(&str, &str, &str)] =
    &[("http", "127.0.0.1", "/"), ("https", "localhost", "/")];

/// Whether the app `client_id` may send the browser back to `url`: Thunderbird's only to
/// its registered redirects, any other (a test's own app) anywhere.
fn redirect_registered(client_id: &str, url: &reqwest::Url) -> bool {
    client_id != THUNDERBIRD_CLIENT_ID
        || THUNDERBIRD_REDIRECTS.iter().any(|(scheme, host, path)| {
            url.scheme() == *scheme && url.host_str() == Some(*host) && url.path() == *path
        })
}

/// Who signs in when neither [`FakeIdp::sign_in_as`] nor a `login_hint` says.
pub const DEFAULT_USER: &str = "alice@contoso.com";

/// An `id_token` (`OpenID` Connect Core §2) for `user`, with the claims Microsoft puts in one:
/// `preferred_username` only when `profile` was asked for, `email` only with `email`
/// (<https://learn.microsoft.com/en-us/entra/identity-platform/id-token-claims-reference>).
/// Unsigned (`alg` as Microsoft's, a dummy signature): the client takes it straight from
/// the token endpoint over TLS and need not check it (`OpenID` Connect Core §3.1.3.7).
fn id_token(iss: &str, client_id: &str, user: &str, scope: &str) -> String {
    use base64::Engine as _;
    let has = |s: &str| scope.split(' ').any(|w| w == s);
    let mut claims = json!({
        "aud": client_id,
        "iss": iss,
        "iat": now(),
        "exp": now() + 3600,
        "name": "Test User",
        "tid": "9188040d-6c67-4c5b-b112-36a304b66dad",
        "ver": "2.0",
    });
    if has("profile") {
        claims["preferred_username"] = json!(user);
    }
    if has("email") {
        claims["email"] = json!(user);
    }
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.c2lnbmF0dXJl",
        b64(&json!({"typ": "JWT", "alg": "RS256", "kid": "fake"})),
        b64(&claims)
    )
}

/// Exchange Online access tokens are JWTs of about 2,000 characters and more (some users
/// get over 4,096: <https://github.com/jstedfast/MailKit/issues/1948>), so the XOAUTH2
/// string passes 2,500 bytes: the fake's tokens are that long, a unique head and a
/// JWT-like tail.
pub const ACCESS_TOKEN_LEN: usize = 2048;

fn realistic_size(unique: String) -> String {
    let tail = "eyJ0eXAiOiJKV1QiLCJub25jZSI6IkZha2UiLCJhbGciOiJSUzI1NiJ9.";
    let mut token = unique;
    token.push('.');
    while token.len() < ACCESS_TOKEN_LEN {
        token.push_str(tail);
    }
    token.truncate(ACCESS_TOKEN_LEN);
    token
}

/// The tenant segment of a token path (`/contoso/oauth2/v2.0/token` → `contoso`).
fn body_tenant(path: &str) -> &str {
    path.trim_start_matches('/').split('/').next().unwrap_or("")
}

/// Who signed in and the scopes asked for, for a grant that follows an interactive sign-in.
type SignedIn = Option<(String, String)>;

/// `https://graph.microsoft.com` of `https://graph.microsoft.com/Mail.Send`; `None` for a
/// scope without a resource (`offline_access`, `openid`). The global Outlook hosts are one
/// resource (Exchange Online).
fn resource_of(scope: &str) -> Option<String> {
    let rest = scope.strip_prefix("https://")?;
    let host = rest.split('/').next()?;
    Some(match host {
        "outlook.office.com" | "outlook.office365.com" => OUTLOOK_AUDIENCE.to_owned(),
        h => format!("https://{h}"),
    })
}

/// The distinct resources the scopes name.
fn resources(scope: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in scope.split(' ').filter_map(resource_of) {
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

/// Checks the grant itself; `Ok((true, _))` when the answer is to carry a new refresh
/// token, with who signed in for the authorization-code and device-code grants.
fn check_grant(
    s: &mut State,
    req: &Request,
    client_id: &str,
) -> Result<(bool, SignedIn), (u16, String)> {
    let requested = req.field("scope").unwrap_or("").to_owned();
    match req.grant_type() {
        "refresh_token" => {
            let rt = req.field("refresh_token").unwrap_or("");
            if !s.refresh_tokens.contains(rt) {
                return Err(aad_error(400, "invalid_grant", 70008));
            }
            if s.strict_refresh_scopes
                && let Some(granted) = s.granted.get(rt)
                && requested
                    .split(' ')
                    .any(|w| !w.is_empty() && !granted.split(' ').any(|g| g == w))
            {
                return Err(aad_error(400, "invalid_scope", 70011));
            }
            if s.rotation_revokes_old {
                s.refresh_tokens.remove(rt);
            }
            Ok((!s.omit_refresh_token_on_refresh, None))
        }
        "client_credentials" => {
            if !s.client_secrets.contains_key(client_id) {
                return Err(aad_error(400, "invalid_client", 7000218));
            }
            Ok((false, None))
        }
        "password" => {
            let user = req.field("username").unwrap_or("");
            let ok = s.users.get(user).map(String::as_str) == req.field("password");
            if !ok || user.is_empty() {
                return Err(aad_error(400, "invalid_grant", 50126));
            }
            Ok((true, None))
        }
        "authorization_code" => {
            let Some(binding) = s.auth_codes.remove(req.field("code").unwrap_or("")) else {
                return Err(aad_error(400, "invalid_grant", 54005));
            };
            let signed_in = match binding {
                Some(b) => {
                    check_binding(&b, req)?;
                    (b.user, b.scope)
                }
                None => (
                    s.signed_in
                        .clone()
                        .unwrap_or_else(|| DEFAULT_USER.to_owned()),
                    requested,
                ),
            };
            Ok((true, Some(signed_in)))
        }
        "urn:ietf:params:oauth:grant-type:device_code" | "device_code" => {
            let code = req.field("device_code").or(req.field("code")).unwrap_or("");
            let Some(device) = s.device_codes.get(code).cloned() else {
                return Err(aad_error(400, "expired_token", 70019));
            };
            if std::time::Instant::now() >= device.expires {
                s.device_codes.remove(code);
                return Err(aad_error(400, "expired_token", 70019));
            }
            match device.decision {
                Some(true) => {
                    s.device_codes.remove(code);
                    let user = s
                        .signed_in
                        .clone()
                        .unwrap_or_else(|| DEFAULT_USER.to_owned());
                    Ok((true, Some((user, device.scope))))
                }
                Some(false) => {
                    s.device_codes.remove(code);
                    Err(aad_error(400, "authorization_declined", 65004))
                }
                None => Err(aad_error(400, "authorization_pending", 70016)),
            }
        }
        _ => Err(aad_error(400, "unsupported_grant_type", 70003)),
    }
}

/// An authorize-endpoint code is redeemed with its redirect URI and PKCE verifier.
fn check_binding(b: &CodeBinding, req: &Request) -> Result<(), (u16, String)> {
    let registered = req
        .field("redirect_uri")
        .and_then(|r| reqwest::Url::parse(r).ok())
        .is_some_and(|r| redirect_registered(req.field("client_id").unwrap_or(""), &r));
    if req.field("redirect_uri") != Some(b.redirect_uri.as_str()) || !registered {
        return Err(aad_error(400, "invalid_grant", 50011));
    }
    if let Some(challenge) = &b.code_challenge {
        let verifier = req.field("code_verifier").unwrap_or("");
        if s256(verifier) != *challenge {
            return Err(aad_error(400, "invalid_grant", 501481));
        }
    }
    Ok(())
}

/// RFC 7636 S256: `BASE64URL(SHA256(verifier))` without padding.
fn s256(verifier: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ))
}

/// The devicecode endpoint's answer: a pending device code and its user code.
fn device_authorization(s: &mut State, req: &Request) -> (u16, String) {
    if req.field("client_id").is_none() {
        return aad_error(400, "invalid_request", 900144);
    }
    if !req.is_v1() && req.field("resource").is_some() {
        return aad_error(400, "invalid_request", 901002);
    }
    let mut device = s.new_device();
    req.field("scope")
        .unwrap_or("")
        .clone_into(&mut device.scope);
    let code = s.unique("dc");
    let body = json!({
        "device_code": code,
        "user_code": device.user_code,
        "verification_uri": VERIFICATION_URI,
        "expires_in": s.device_expires_in,
        "interval": DEVICE_INTERVAL,
        "message": format!(
            "To sign in, use a web browser to open the page {VERIFICATION_URI} and enter the code {} to authenticate.",
            device.user_code
        ),
    });
    s.device_codes.insert(code, device);
    (200, body.to_string())
}

/// Microsoft's error JSON for `code`.
fn aad_error(status: u16, error: &str, code: u64) -> (u16, String) {
    let text = match code {
        700082 => {
            "The refresh token has expired due to inactivity. The token was issued on 2026-01-01T00:00:00.0000000Z and was inactive for 90.00:00:00."
        }
        70008 => {
            "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource."
        }
        7000215 => {
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app 'x'."
        }
        7000218 => {
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'."
        }
        700025 => {
            "Client is public so neither 'client_assertion' nor 'client_secret' should be presented."
        }
        50126 => "Error validating credentials due to invalid username or password.",
        54005 => {
            "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token."
        }
        901002 => "The 'resource' request parameter is not supported.",
        70016 => "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
        70019 => "Verification code expired.",
        65004 => "User declined to consent to access the app.",
        50011 => {
            "The redirect URI specified in the request does not match the redirect URIs configured for the application."
        }
        501481 => {
            "The Code_Verifier does not match the code_challenge supplied in the authorization request."
        }
        70011 => {
            "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid."
        }
        50196 => "The server terminated an operation because it encountered a client request loop.",
        _ => "The request failed.",
    };
    let trace = "0c8ed7a1-5f3b-4a5e-9d4e-2f1b3c4d5e6f";
    let body = json!({
        "error": error,
        "error_description": format!(
            "AADSTS{code}: {text}\r\nTrace ID: {trace}\r\nCorrelation ID: 7e1c2d3b-aaaa-bbbb-cccc-000000000000\r\nTimestamp: 2026-11-22 10:00:00Z"
        ),
        "error_codes": [code],
        "timestamp": "2026-11-22 10:00:00Z",
        "trace_id": trace,
        "correlation_id": "7e1c2d3b-aaaa-bbbb-cccc-000000000000",
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    });
    (status, body.to_string())
}

/// Reads one HTTP/1.1 request: request line, headers, `Content-Length` body.
async fn read_request<S>(stream: &mut S) -> Option<Request>
where
    S: tokio::io::AsyncRead + Unpin,
{
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let path = first.next()?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    let form = String::from_utf8_lossy(&body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    Some(Request {
        method,
        path,
        headers,
        form,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(b) => {
                    out.push(b);
                    i += 2;
                }
                None => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// 400 `invalid_grant` (AADSTS70008) whose description quotes `form`.
fn echo_form(form: &str) -> (u16, String) {
    (
        400,
        json!({
            "error": "invalid_grant",
            "error_description": format!(
                "AADSTS70008: The provided grant is invalid for the request {form} (echoed)"
            ),
            "error_codes": [70008],
        })
        .to_string(),
    )
}

/// The decoded form written again with every byte but letters and digits escaped in
/// lower-case hex and `+` for a space: another encoder's choice than the client's.
fn reencode(form: &BTreeMap<String, String>) -> String {
    let encode = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b' ' => "+".to_owned(),
                b if b.is_ascii_alphanumeric() => char::from(b).to_string(),
                b => format!("%{b:02x}"),
            })
            .collect()
    };
    form.iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}
