//! Microsoft Graph `sendMail`: the second way out, for tenants that switch SMTP AUTH off.
//!
//! ```text
//! open:  Graph token (cache) ── cached ──────────────────────────► ready
//!        └─ expired: refresh ∥ connect (TCP, TLS, HTTP/2; a HEAD) ─► ready
//! send:  the copy for Graph (envelope → headers) ─► base64 ─► ≤ 4 MB?
//!        POST {graph_url}/v1.0/me/sendMail   (app-only: /v1.0/users/{email}/sendMail)
//!        Content-Type: text/plain, body: the MIME message in base64
//!        202 ─► Receipt │ 401 ─► one forced refresh, once more │ else ─► Error::graph
//! ```
//!
//! Graph takes the recipients from the message's headers, not from an envelope, so the
//! copy handed to it carries exactly the envelope ([`for_graph`]). Microsoft documents the
//! MIME form at <https://learn.microsoft.com/graph/outlook-send-mime-message>.

use std::time::{Duration, Instant};

use bytes::Bytes;

mod body;
mod large;

use crate::error::{Error, GraphRefusal, Phase, Result};
use crate::message::Message;
use crate::oauth::{self, AccessToken};
use crate::provider::{AccountSettings, GraphSettings};
use crate::smtp::Envelope;
use crate::spool::Payload;
use body::Streamed;

/// Graph refuses a request above 4 MB (its REST request limit); the base64 body is what
/// counts. Checked before the upload, so nothing is sent that cannot succeed.
pub const MAX_REQUEST_BYTES: usize = 4_000_000;
/// Graph's error bodies are small JSON objects; more than this is not read (a proxy's
/// page, or a hostile server).
pub const MAX_ERROR_BODY: usize = 1024 * 1024;
/// Graph's answers that carry a resource (a draft echoes its body) are read up to this.
pub const MAX_ANSWER_BODY: usize = 16 * 1024 * 1024;
/// Connecting (TCP and TLS) gives up after this long, as for the token endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// No byte of the request moved for this long (uploading), or no answer this long after
/// the last byte: give up. Idle time, not total time: a 3 MB upload on a slow line takes
/// minutes and is fine as long as it moves.
const IDLE_TIMEOUT: Duration = Duration::from_mins(1);
/// An answer's body (after its status) is read for at most this long in all: an error
/// page that trickles a byte at a time does not hold the message up.
const ANSWER_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// An open Graph client for one account: one HTTP/2 connection, reused for every message.
pub struct Client {
    http: reqwest::Client,
    account: AccountSettings,
    url: String,
    host: String,
    token: AccessToken,
    verbose: bool,
    /// Throttled (429/503 with Retry-After) until then: later messages wait without asking.
    throttled: Option<(Instant, u16, u64)>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "graph::Client({}, token <redacted>)", self.url)
    }
}

impl Client {
    /// The Graph token and the connection at once: a cached token goes straight to the
    /// first request (TCP, TLS and the POST: three round trips); an expired one is renewed
    /// while a `HEAD` sets up the connection the POST then reuses.
    pub async fn open(account: &AccountSettings, verbose: bool) -> Result<Client> {
        let graph = settings(account)?;
        let http = http_client(account.smtp.ca_file.as_deref(), account.smtp.proxy.as_ref())?;
        let url = graph.send_url(&account.email);
        let host = host_of(&graph.url);
        let token = if let Some(t) = oauth::graph_token_cached(account).await {
            t
        } else {
            let (token, ()) = tokio::join!(
                oauth::graph_token(account, None),
                warm_up(&http, &graph.url, verbose)
            );
            token?
        };
        Ok(Client {
            http,
            account: account.clone(),
            url,
            host,
            token,
            verbose,
            throttled: None,
        })
    }

    /// `host` of the Graph URL, as errors name the server.
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Proves the connection (TCP, TLS with the certificate verified, HTTP): for `check`,
    /// which sends nothing. Any HTTP answer will do.
    pub async fn reach(&self) -> Result<()> {
        let graph = settings(&self.account)?;
        self.http
            .head(format!("{}/v1.0/", graph.url))
            .send()
            .await
            .map(drop)
            .map_err(|e| {
                network(&e, false)
                    .for_account(&self.account.name)
                    .at_server(&self.host)
            })
    }

    /// Sends one message as Graph wants it; `202 Accepted` is success. Above Graph's
    /// request limit the message goes as a draft with its large attachments uploaded
    /// apart ([`large`]).
    /// Errors name the server (the Graph host).
    pub async fn send(&mut self, envelope: &Envelope, message: &Payload<'_>) -> Result<Receipt> {
        let result = self.send_unnamed(envelope, message).await;
        result.map_err(|e| e.at_server(&self.host))
    }

    async fn send_unnamed(
        &mut self,
        envelope: &Envelope,
        message: &Payload<'_>,
    ) -> Result<Receipt> {
        let size = usize::try_from(message.len()).unwrap_or(usize::MAX);
        if base64_len(size) > MAX_REQUEST_BYTES {
            // A file too large for Graph is refused before the message is read into memory.
            large::refuse_oversized(message)?;
        }
        // The one copy in memory: Graph's request bodies are made from it.
        let whole = message
            .to_vec()
            .map_err(|e| Error::io(format!("cannot read the message to send: {e}")))?;
        let mime = for_graph(envelope, whole, &self.account.aliases)?;
        self.wait_for_throttling()?;
        self.renew_if_expiring().await?;
        if base64_len(mime.len()) > MAX_REQUEST_BYTES {
            return large::send(self, mime).await;
        }
        let mime = Bytes::from(mime);
        let url = self.url.clone();
        let answer = self
            .authorized(Request::post(&url, "text/plain", Some(Body::Base64(mime))))
            .await?;
        if (200..300).contains(&answer.status) {
            return Ok(Receipt {
                status: answer.status,
                request_id: answer.request_id,
            });
        }
        Err(self.refusal(&answer, "Mail.Send"))
    }

    /// A still-throttled account's next message gets the same temporary answer.
    pub(crate) fn wait_for_throttling(&mut self) -> Result<()> {
        if let Some((until, status, _)) = self.throttled {
            let left = until.saturating_duration_since(Instant::now());
            if !left.is_zero() {
                return Err(throttled(status, left.as_secs().max(1)));
            }
            self.throttled = None;
        }
        Ok(())
    }

    /// A long queue flush can outlast the token it started with.
    async fn renew_if_expiring(&mut self) -> Result<()> {
        if self.token.expires_at <= crate::clock::now() + oauth::MIN_VALIDITY {
            self.token = oauth::graph_token(&self.account, None).await?;
        }
        Ok(())
    }

    /// `{graph_url}/v1.0/me`, or `/v1.0/users/{email}` app-only: the mailbox's resources.
    pub(crate) fn mailbox_url(&self) -> String {
        self.url
            .strip_suffix("/sendMail")
            .unwrap_or(&self.url)
            .to_owned()
    }

    /// The request with the bearer token; a `401` to a token from the cache renews it
    /// (not that one) and asks once more.
    pub(crate) async fn authorized(&mut self, request: Request<'_>) -> Result<Answer> {
        let mut answer = self.exchange(&request, true).await?;
        if answer.status == 401 && !self.token.fresh {
            self.token = oauth::graph_token(&self.account, Some(&self.token.secret)).await?;
            answer = self.exchange(&request, true).await?;
        }
        Ok(answer)
    }

    /// One request (with the bearer token when `authorized`), its answer read in bounded
    /// size and time; a failure is classified by how far the request got.
    pub(crate) async fn exchange(&self, request: &Request<'_>, authorized: bool) -> Result<Answer> {
        let progress = body::Progress::new();
        let (body, length) = match &request.body {
            Some(Body::Base64(data)) => {
                let b = Streamed::new(data.clone(), true, progress.clone());
                let n = b.len();
                (Some(b.into_body()), n)
            }
            Some(Body::Raw(data)) => {
                let b = Streamed::new(data.clone(), false, progress.clone());
                let n = b.len();
                (Some(b.into_body()), n)
            }
            None => (None, 0),
        };
        if self.verbose {
            crate::stderr::transcript(
                crate::stderr::Mark::Request,
                &format!(
                    "{} {} ({}{}, {length} bytes)",
                    request.method,
                    shown_url(request.url),
                    if authorized {
                        "Authorization: Bearer <redacted>"
                    } else {
                        "pre-authenticated URL, no Authorization"
                    },
                    request
                        .content_type
                        .map(|c| format!(", Content-Type: {c}"))
                        .unwrap_or_default(),
                ),
            );
        }
        let mut builder = self
            .http
            .request(request.method.clone(), request.url)
            .header(reqwest::header::CONTENT_LENGTH, length);
        if authorized {
            builder = builder.bearer_auth(&self.token.secret);
        }
        if let Some(c) = request.content_type {
            builder = builder.header(reqwest::header::CONTENT_TYPE, c);
        }
        for (name, value) in &request.headers {
            builder = builder.header(*name, value);
        }
        if let Some(body) = body {
            builder = builder.body(body);
        }
        let sent = body::idle_limited(builder.send(), &progress, IDLE_TIMEOUT).await;
        // Whether the request that sends has gone whole (a bodiless one: once asked).
        let left = || request.final_step && (request.body.is_none() || progress.all_sent());
        let response = match sent {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(network(&e, left())),
            Err(stalled) => {
                let phase = if left() {
                    Phase::Message
                } else {
                    Phase::Request
                };
                return Err(Error::network(
                    phase,
                    format!("nothing moved for {} s", stalled.0.as_secs()),
                ));
            }
        };
        Ok(self.read_answer(response).await)
    }

    /// Status, the headers that matter, and the body read in bounded size and time.
    async fn read_answer(&self, response: reqwest::Response) -> Answer {
        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let request_id = header("request-id");
        let retry_after =
            header("retry-after").and_then(|v| retry_after(&v, std::time::SystemTime::now()));
        if self.verbose {
            crate::stderr::transcript(
                crate::stderr::Mark::Response,
                &format!(
                    "{:?} {status}{}",
                    response.version(),
                    request_id
                        .as_deref()
                        .map(|r| format!(" request-id {r}"))
                        .unwrap_or_default()
                ),
            );
        }
        let limit = if (200..300).contains(&status) {
            MAX_ANSWER_BODY
        } else {
            MAX_ERROR_BODY
        };
        // Bounded in size and in time, like every answer: one too large or too slow to
        // read says no more than its status.
        let body =
            tokio::time::timeout(ANSWER_BODY_TIMEOUT, crate::http::read_body(response, limit))
                .await
                .ok()
                .and_then(std::result::Result::ok)
                .unwrap_or_default();
        Answer {
            status,
            request_id,
            retry_after,
            body,
        }
    }

    /// Graph's refusal as an error: its `error.code` and message, and what to do
    /// (`permission`: what a 403 lacks). A `Retry-After` also holds back this client's
    /// later messages.
    pub(crate) fn refusal(&mut self, answer: &Answer, permission: &str) -> Error {
        let (code, message) = error_fields(&answer.body);
        let name = &self.account.name;
        let hint = match answer.status {
            401 if message.contains("Invalid audience") => Some(audience_hint(&self.account)),
            401 => Some(format!(
                "the Graph token was refused: run `oauth2-sendmail login {name}`"
            )),
            403 => Some(permission_hint(&self.account, permission)),
            413 => Some("the message is larger than Microsoft Graph accepts".to_owned()),
            _ => None,
        };
        if let Some(secs) = answer.retry_after {
            self.throttled = Some((
                Instant::now() + Duration::from_secs(secs),
                answer.status,
                secs,
            ));
        }
        Error::graph(GraphRefusal {
            status: answer.status,
            code,
            message,
            hint,
            retry_after: answer.retry_after,
        })
        .for_account(name)
        .at_server(&self.host)
    }
}

/// What a request sends: bytes as they are (an upload range), or base64-encoded as it
/// streams (a MIME message).
#[derive(Clone)]
pub(crate) enum Body {
    Raw(Bytes),
    Base64(Bytes),
}

/// One request to Graph or to an upload URL.
pub(crate) struct Request<'a> {
    pub method: reqwest::Method,
    pub url: &'a str,
    pub content_type: Option<&'static str>,
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<Body>,
    /// The request that makes Graph send (`sendMail`, `…/send`): once its body has left, a
    /// lost answer may hide a sent message. A lost answer to any other request cannot.
    pub final_step: bool,
}

impl<'a> Request<'a> {
    /// A `POST` of `body` that sends the message (`sendMail`).
    pub fn post(url: &'a str, content_type: &'static str, body: Option<Body>) -> Request<'a> {
        Request {
            method: reqwest::Method::POST,
            url,
            content_type: Some(content_type),
            headers: Vec::new(),
            body,
            final_step: true,
        }
    }

    /// A request that does not send the message (a draft, an attachment, a range).
    pub fn step(
        method: reqwest::Method,
        url: &'a str,
        content_type: Option<&'static str>,
        body: Option<Body>,
    ) -> Request<'a> {
        Request {
            method,
            url,
            content_type,
            headers: Vec::new(),
            body,
            final_step: false,
        }
    }
}

/// What Graph answered to one request.
pub(crate) struct Answer {
    pub status: u16,
    pub request_id: Option<String>,
    pub retry_after: Option<u64>,
    pub body: Vec<u8>,
}

/// Graph's acceptance of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub status: u16,
    pub request_id: Option<String>,
}

impl std::fmt::Display for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} Accepted by Microsoft Graph", self.status)?;
        match &self.request_id {
            Some(id) => write!(f, " (request-id {id})"),
            None => Ok(()),
        }
    }
}

/// The account's Graph settings, or the config error that says what is missing.
fn settings(account: &AccountSettings) -> Result<&GraphSettings> {
    account.graph.as_ref().ok_or_else(|| {
        Error::config(format!(
            "account {}: Microsoft Graph is not configured: set `graph_url`",
            account.name
        ))
    })
}

/// A still-throttled account's next message: the same temporary answer, not asked again.
fn throttled(status: u16, secs: u64) -> Error {
    Error::graph(GraphRefusal {
        status,
        code: "Throttled".to_owned(),
        message: "Microsoft Graph asked to wait (an earlier message in this run)".to_owned(),
        hint: None,
        retry_after: Some(secs),
    })
}

/// 403 `ErrorAccessDenied`: the token lacks `permission` (`Mail.Send`; `Mail.ReadWrite`
/// for a draft), or the app has no consent.
fn permission_hint(account: &AccountSettings, permission: &str) -> String {
    let consent = account
        .oauth
        .client_id
        .as_deref()
        .and_then(|id| oauth::aadsts::admin_consent_url(&account.oauth.token_url, id))
        .map(|u| format!(" (admin consent: {u})"))
        .unwrap_or_default();
    let graph = account.graph.as_ref().map_or("", |g| g.url.as_str());
    let kind = if account.graph.as_ref().is_some_and(|g| g.app_only) {
        "the application permission"
    } else {
        "the delegated permission"
    };
    format!(
        "the app may not {} as {}: grant it {kind} {permission} of Microsoft Graph ({graph}) \
         and have an administrator consent{consent}, then run `oauth2-sendmail login {}`",
        if permission == "Mail.Send" {
            "send mail"
        } else {
            "write drafts (a message above 4 MB goes as a draft)"
        },
        account.email,
        account.name
    )
}

/// 401 "Invalid audience": the token was issued for another resource than this Graph.
/// Says which audience was asked for and which setting decides it; a login would not help.
fn audience_hint(account: &AccountSettings) -> String {
    let Some(graph) = account.graph.as_ref() else {
        return String::new();
    };
    let asked = if account.oauth.resource.is_some() {
        format!(
            "resource {}",
            audience_of(&graph.scopes).unwrap_or(&graph.url)
        )
    } else {
        format!("scopes `{}`", graph.scopes.join(" "))
    };
    let key = if account.config.graph_scopes.is_some() {
        "`graph_scopes`"
    } else {
        "`graph_url` (the default scopes follow its origin)"
    };
    format!(
        "the Graph token was issued for {asked}, which {} does not accept; {key} sets it: \
         make `graph_url` and `graph_scopes` name the same cloud",
        graph.url
    )
}

/// The resource a list of v2 scopes names: `https://host` of `https://host/Mail.Send`.
fn audience_of(scopes: &[String]) -> Option<&str> {
    scopes.iter().find_map(|s| {
        let rest = s.strip_prefix("https://")?;
        let host_end = rest.find('/')?;
        Some(&s[..8 + host_end])
    })
}

/// The copy of the message handed to Graph, which reads the recipients from the headers:
/// a bare local name in `To`/`Cc` (cron's `To: root`, which Graph refuses) is written as its
/// `[aliases]` addresses (`aliases`: lower-case name or `*` → addresses); envelope
/// recipients that no `To`/`Cc` names are added in one `Bcc` field (Graph never shows Bcc
/// to the recipients), and a `To`/`Cc` address outside the envelope is refused (exit 65,
/// naming it), because Graph would deliver to it.
/// `message` (the whole message in one buffer) becomes the copy: no second one is made.
pub fn for_graph(
    envelope: &Envelope,
    message: Vec<u8>,
    aliases: &std::collections::BTreeMap<String, Vec<String>>,
) -> Result<Vec<u8>> {
    let mut parsed = Message::from_bytes(message)?;
    let resolve = |name: &str| {
        aliases
            .get(&name.to_ascii_lowercase())
            .or_else(|| aliases.get("*"))
            .cloned()
    };
    if let Some(rewritten) = parsed.with_local_names_resolved(&["To", "Cc"], &resolve)? {
        parsed = Message::from_bytes(rewritten)?;
    }
    let listed = parsed.addresses_in(&["To", "Cc", "Bcc"])?;
    let in_envelope = |a: &str| {
        envelope
            .recipients
            .iter()
            .any(|r| r.eq_ignore_ascii_case(a))
    };
    if let Some(outside) = listed
        .iter()
        .find(|m| !m.is_local() && !in_envelope(&m.address))
    {
        return Err(Error::data(format!(
            "<{}> is in the message's header but not among the recipients: Microsoft Graph \
             sends to the header's recipients, so this message cannot go through it; remove \
             it from To/Cc or add it to the recipients",
            outside.address
        )));
    }
    let hidden: Vec<&str> = envelope
        .recipients
        .iter()
        .filter(|r| !listed.iter().any(|m| m.address.eq_ignore_ascii_case(r)))
        .map(String::as_str)
        .collect();
    let mut raw = parsed.into_bytes();
    if hidden.is_empty() {
        return Ok(raw);
    }
    let eol: &[u8] = match raw.iter().position(|&b| b == b'\n') {
        Some(i) if i > 0 && raw[i - 1] == b'\r' => b"\r\n",
        _ => b"\n",
    };
    let mut field = b"Bcc: ".to_vec();
    for (i, address) in hidden.iter().enumerate() {
        if i > 0 {
            // Folded: one address a line keeps long lists within the line limit.
            field.push(b',');
            field.extend_from_slice(eol);
            field.push(b' ');
        }
        field.extend_from_slice(address.as_bytes());
    }
    field.extend_from_slice(eol);
    // At the top: the field order of a header block carries no meaning for Bcc. Reserved
    // first so the message is moved (or its allocation grown in place), not copied twice.
    raw.reserve_exact(field.len());
    raw.splice(0..0, field);
    Ok(raw)
}

/// `Retry-After` (RFC 9110 §10.2.3) in seconds from `now`: a number of seconds, as Graph
/// sends it, or an HTTP-date (a date already past is 0). Anything else is ignored.
fn retry_after(value: &str, now: std::time::SystemTime) -> Option<u64> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(secs);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).map_or(0, |d| d.as_secs()))
}

use crate::mime_split::base64_len;

/// `error.code` and `error.message` of Graph's error JSON; the status text otherwise.
fn error_fields(body: &[u8]) -> (String, String) {
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let field = |k: &str| {
        json["error"][k]
            .as_str()
            .unwrap_or_default()
            .replace(['\r', '\n'], " ")
    };
    let mut message = field("message");
    if message.chars().count() > 300 {
        message = message.chars().take(300).collect::<String>() + "…";
    }
    (field("code"), message)
}

/// Sets up the connection (TCP, TLS, HTTP/2) while the token is being renewed: the answer
/// does not matter, the pooled connection does.
async fn warm_up(http: &reqwest::Client, base: &str, verbose: bool) {
    let url = format!("{base}/v1.0/");
    if verbose {
        crate::stderr::transcript(
            crate::stderr::Mark::Request,
            &format!("HEAD {url} (connection set-up while the token is renewed)"),
        );
    }
    if let Ok(r) = http.head(&url).send().await
        && verbose
    {
        crate::stderr::transcript(
            crate::stderr::Mark::Response,
            &format!("{:?} {}", r.version(), r.status().as_u16()),
        );
    }
}

/// A network failure talking to Graph. A certificate that does not verify is the
/// server's fault and no retry cures it (76, as for SMTP). A request that failed before its
/// body had all left (`sent`) sent nothing that could act: a passing failure
/// (`Class::Transient`). Only after the whole body of the request that sends has left may
/// Graph have accepted the message (phase `Message`: `Class::Uncertain`, "may have been
/// delivered", as for SMTP after the end of the data).
fn network(e: &reqwest::Error, sent: bool) -> Error {
    let phase = if e.is_connect() {
        Phase::Connect
    } else if sent {
        Phase::Message
    } else {
        Phase::Request
    };
    // The causes, not reqwest's own line (which repeats the URL).
    let mut parts: Vec<String> = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let part = s.to_string();
        if !parts.iter().any(|p| p.contains(&part)) {
            parts.push(part);
        }
        source = s.source();
    }
    if parts.is_empty() {
        parts.push(
            if e.is_timeout() {
                "timed out"
            } else {
                "request failed"
            }
            .to_owned(),
        );
    }
    if let Some(certificate) = Error::certificate_in("Microsoft Graph", e) {
        return certificate;
    }
    Error::network(phase, parts.join(": ").replace(['\r', '\n'], " "))
}

/// A URL as `-v` shows it: an upload URL carries its authorization in the query
/// (`?authtoken=…`), which is a secret like the bearer token.
fn shown_url(url: &str) -> String {
    match url.split_once('?') {
        Some((path, _)) => format!("{path}?<redacted>"),
        None => url.to_owned(),
    }
}

/// `graph.microsoft.com` of `https://graph.microsoft.com/…`.
fn host_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.host_str()
                .map(|h| u.port().map_or(h.to_owned(), |p| format!("{h}:{p}")))
        })
        .unwrap_or_else(|| url.to_owned())
}

/// HTTPS only, HTTP/2 by ALPN, the project's certificate trust (system roots and
/// `tls_ca_file`), no redirects (a bearer token never follows one), timeouts.
fn http_client(
    ca_file: Option<&std::path::Path>,
    proxy: Option<&crate::proxy::Proxy>,
) -> Result<reqwest::Client> {
    let mut tls = (*crate::tls::client_config(ca_file)?).clone();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let builder = match proxy {
        Some(p) => reqwest::Client::builder().proxy(p.for_http()?),
        None => reqwest::Client::builder(),
    };
    builder
        .https_only(true)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!("oauth2-sendmail/", env!("CARGO_PKG_VERSION")))
        .tls_backend_preconfigured(tls)
        .build()
        .map_err(|e| Error::internal(format!("cannot build the HTTPS client: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(rcpts: &[&str]) -> Envelope {
        Envelope {
            from: Some("a@contoso.com".into()),
            recipients: rcpts.iter().map(|s| (*s).to_owned()).collect(),
            ..Envelope::default()
        }
    }

    fn graph_copy(rcpts: &[&str], msg: &str) -> Result<String> {
        let aliases = [("root".to_owned(), vec!["ops@contoso.com".to_owned()])].into();
        for_graph(&envelope(rcpts), msg.as_bytes().to_vec(), &aliases)
            .map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn envelope_recipients_missing_from_the_header_become_one_bcc() {
        let msg = "From: a@contoso.com\r\nTo: B <b@x.example>\r\nSubject: s\r\n\r\nbody\r\n";
        let out = graph_copy(&["b@x.example", "c@y.example", "d@z.example"], msg).unwrap();
        assert_eq!(out, format!("Bcc: c@y.example,\r\n d@z.example\r\n{msg}"));
        // Nothing to add: the message is handed over byte for byte.
        assert_eq!(graph_copy(&["B@X.example"], msg).unwrap(), msg);
        // LF messages get an LF field.
        let lf = "To: b@x.example\n\nbody\n";
        assert_eq!(
            graph_copy(&["b@x.example", "c@y.example"], lf).unwrap(),
            format!("Bcc: c@y.example\n{lf}")
        );
    }

    #[test]
    fn a_header_recipient_outside_the_envelope_is_refused_by_name() {
        let msg = "To: b@x.example\r\nCc: Eve <eve@x.example>\r\n\r\nbody\r\n";
        let e = graph_copy(&["b@x.example"], msg).unwrap_err();
        assert_eq!(e.exit_code(), 65);
        assert!(e.to_string().contains("<eve@x.example>"), "{e}");
        // A bare local name (cron's `To: root`) is written as its alias: Graph refuses
        // `root`. The other fields and the body stay as they were.
        let cron = "Subject: cron\r\nTo: root, Bob <b@x.example>\r\n\r\nbody\r\n";
        assert_eq!(
            graph_copy(&["ops@contoso.com", "b@x.example"], cron).unwrap(),
            "Subject: cron\r\nTo: ops@contoso.com, \"Bob\" <b@x.example>\r\n\r\nbody\r\n"
        );
        // A name without an alias stays (Graph then says what it thinks of it).
        let other = "To: nobody\r\n\r\nbody\r\n";
        assert_eq!(
            graph_copy(&["ops@contoso.com"], other).unwrap(),
            format!("Bcc: ops@contoso.com\r\n{other}")
        );
    }

    #[test]
    fn size_limit_counts_the_base64_body() {
        assert_eq!(base64_len(3), 4);
        assert_eq!(base64_len(4), 8);
        assert!(base64_len(MAX_REQUEST_BYTES / 4 * 3) <= MAX_REQUEST_BYTES);
        assert!(base64_len(MAX_REQUEST_BYTES / 4 * 3 + 1) > MAX_REQUEST_BYTES);
    }

    #[test]
    fn graph_errors_map_to_exit_codes_and_keep_code_message_and_retry_after() {
        let (code, message) = error_fields(
            br#"{"error":{"code":"ErrorAccessDenied","message":"Access is denied.\r\nCheck credentials."}}"#,
        );
        assert_eq!(code, "ErrorAccessDenied");
        assert_eq!(message, "Access is denied.  Check credentials.");
        assert_eq!(error_fields(b"<html>").0, "");
        let e = |status| {
            Error::graph(GraphRefusal {
                status,
                code: "C".into(),
                message: "m".into(),
                hint: None,
                retry_after: Some(7),
            })
        };
        for (status, exit) in [
            (429, 75),
            (503, 75),
            (401, 77),
            (403, 77),
            (413, 65),
            (400, 69),
        ] {
            assert_eq!(e(status).exit_code(), exit, "{status}");
        }
        assert!(e(429).to_string().contains("after 7 s"));
        assert_eq!(e(429).class(), crate::error::Class::Transient);
        assert_eq!(e(403).class(), crate::error::Class::NeedsUser);
        assert_eq!(e(400).class(), crate::error::Class::Permanent);
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(retry_after(" 120 ", now), Some(120));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:50:00 GMT", now),
            Some(1_320)
        );
        assert_eq!(retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), Some(0));
        assert_eq!(retry_after("-5", now), None);
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn receipts_read_like_a_server_reply() {
        let r = Receipt {
            status: 202,
            request_id: Some("abc".into()),
        };
        assert_eq!(
            r.to_string(),
            "202 Accepted by Microsoft Graph (request-id abc)"
        );
        assert_eq!(host_of("https://127.0.0.1:4443"), "127.0.0.1:4443");
        assert_eq!(
            shown_url("https://outlook.office.com/api/v2.0/AttachmentSessions('s')?authtoken=eyJ0"),
            "https://outlook.office.com/api/v2.0/AttachmentSessions('s')?<redacted>"
        );
        assert_eq!(
            shown_url("https://g.example/v1.0/me"),
            "https://g.example/v1.0/me"
        );
        assert_eq!(
            host_of("https://graph.microsoft.com"),
            "graph.microsoft.com"
        );
    }
}
