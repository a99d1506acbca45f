//! Microsoft Graph `sendMail`: the second way out, for tenants that switch SMTP AUTH off.
//!
//! ```text
//! open:  Graph token (cache) ── cached ──────────────────────────► ready
//!        └─ expired: refresh ∥ connect (TCP, TLS, HTTP/2; a HEAD) ─► ready
//! send:  the copy for Graph (envelope → headers) ─► base64 ─► ≤ 4 MB?
//!        POST {graph_url}/v1.0/me/sendMail   (app-only: /v1.0/users/{email}/sendMail)
//!        Content-Type: text/plain, body: the MIME message in base64
//!        202 ─► Receipt │ 401 ─► one forced refresh, once more │ else ─► Kind::Graph
//! ```
//!
//! Graph takes the recipients from the message's headers, not from an envelope, so the
//! copy handed to it carries exactly the envelope ([`for_graph`]). Microsoft documents the
//! MIME form at <https://learn.microsoft.com/graph/outlook-send-mime-message>.

use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::error::{Error, GraphRefusal, Kind, Phase, Result};
use crate::message::Message;
use crate::oauth::{self, AccessToken};
use crate::provider::{AccountSettings, GraphSettings};
use crate::smtp::Envelope;
use crate::spool::Payload;

/// Graph refuses a request above 4 MB (its REST request limit); the base64 body is what
/// counts. Checked before the upload, so nothing is sent that cannot succeed.
pub const MAX_REQUEST_BYTES: usize = 4_000_000;
/// Graph's error bodies are small JSON objects; more than this is not read (a proxy's
/// page, or a hostile server).
pub const MAX_ERROR_BODY: usize = 1024 * 1024;
/// Connecting (TCP and TLS) gives up after this long, as for the token endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// No byte from Graph for this long while uploading or waiting for the answer: give up.
/// Longer than the token endpoint's: a 3 MB upload on a slow line takes a while.
const READ_TIMEOUT: Duration = Duration::from_mins(1);

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
        let http = http_client(account.smtp.ca_file.as_deref())?;
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
                network(&e)
                    .for_account(&self.account.name)
                    .at_server(&self.host)
            })
    }

    /// Sends one message as Graph wants it; `202 Accepted` is success.
    pub async fn send(&mut self, envelope: &Envelope, message: &Payload<'_>) -> Result<Receipt> {
        // Too large already before the Bcc field is added: refused without reading it.
        let size = message.len();
        if size > MAX_REQUEST_BYTES as u64 || base64_len(size as usize) > MAX_REQUEST_BYTES {
            return Err(Kind::TooLarge {
                size,
                limit: (MAX_REQUEST_BYTES / 4 * 3) as u64,
            }
            .into());
        }
        let whole = message
            .to_vec()
            .map_err(|e| Error::io(format!("cannot read the message to send: {e}")))?;
        let mime = for_graph(envelope, &[&whole])?;
        drop(whole);
        if base64_len(mime.len()) > MAX_REQUEST_BYTES {
            return Err(Kind::TooLarge {
                size: mime.len() as u64,
                limit: (MAX_REQUEST_BYTES / 4 * 3) as u64,
            }
            .into());
        }
        if let Some((until, status, _)) = self.throttled {
            let left = until.saturating_duration_since(Instant::now());
            if !left.is_zero() {
                return Err(throttled(status, left.as_secs().max(1)));
            }
            self.throttled = None;
        }
        // A long queue flush can outlast the token it started with.
        if self.token.expires_at <= crate::clock::now() + oauth::MIN_VALIDITY {
            self.token = oauth::graph_token(&self.account, None).await?;
        }
        let body = base64::engine::general_purpose::STANDARD.encode(&mime);
        drop(mime);
        let mut answer = self.post(&body).await?;
        if answer.status == 401 && !self.token.fresh {
            // The cached token may have been revoked: a new one (not this one), once more.
            self.token = oauth::graph_token(&self.account, Some(&self.token.secret)).await?;
            answer = self.post(&body).await?;
        }
        if (200..300).contains(&answer.status) {
            return Ok(Receipt {
                status: answer.status,
                request_id: answer.request_id,
            });
        }
        let error = self.refusal(&answer);
        if let Some(secs) = answer.retry_after {
            self.throttled = Some((
                Instant::now() + Duration::from_secs(secs),
                answer.status,
                secs,
            ));
        }
        Err(error)
    }

    async fn post(&self, body: &str) -> Result<Answer> {
        if self.verbose {
            crate::stderr::transcript(
                crate::stderr::Mark::Request,
                &format!(
                    "POST {} (Authorization: Bearer <redacted>, Content-Type: text/plain, {} bytes)",
                    self.url,
                    body.len()
                ),
            );
        }
        let response = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token.secret)
            .header(reqwest::header::CONTENT_TYPE, "text/plain")
            .body(body.to_owned())
            .send()
            .await
            .map_err(|e| network(&e))?;
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
        let body = if (200..300).contains(&status) {
            Vec::new()
        } else {
            // Bounded like every answer; one too large to read says no more than its status.
            crate::oauth::grants::read_body(response, MAX_ERROR_BODY)
                .await
                .unwrap_or_default()
        };
        Ok(Answer {
            status,
            request_id,
            retry_after,
            body,
        })
    }

    /// Graph's refusal as an error: its `error.code` and message, and what to do.
    fn refusal(&self, answer: &Answer) -> Error {
        let (code, message) = error_fields(&answer.body);
        let name = &self.account.name;
        let hint = match answer.status {
            401 => Some(format!(
                "the Graph token was refused: run `oauth2-sendmail login {name}`"
            )),
            403 => Some(permission_hint(&self.account)),
            413 => Some("the message is larger than Microsoft Graph accepts".to_owned()),
            _ => None,
        };
        Error::from(Kind::Graph(Box::new(GraphRefusal {
            status: answer.status,
            code,
            message,
            hint,
            retry_after: answer.retry_after,
        })))
        .for_account(name)
        .at_server(&self.host)
    }
}

/// What Graph answered to one POST.
struct Answer {
    status: u16,
    request_id: Option<String>,
    retry_after: Option<u64>,
    body: Vec<u8>,
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
    Error::from(Kind::Graph(Box::new(GraphRefusal {
        status,
        code: "Throttled".to_owned(),
        message: "Microsoft Graph asked to wait (an earlier message in this run)".to_owned(),
        hint: None,
        retry_after: Some(secs),
    })))
}

/// 403 `ErrorAccessDenied`: the token has no `Mail.Send`, or the app no consent.
fn permission_hint(account: &AccountSettings) -> String {
    let consent = account
        .oauth
        .client_id
        .as_deref()
        .and_then(|id| oauth::grants::admin_consent_url(&account.oauth.token_url, id))
        .map(|u| format!(" (admin consent: {u})"))
        .unwrap_or_default();
    let graph = account.graph.as_ref().map_or("", |g| g.url.as_str());
    let kind = if account.graph.as_ref().is_some_and(|g| g.app_only) {
        "the application permission"
    } else {
        "the delegated permission"
    };
    format!(
        "the app may not send mail as {}: grant it {kind} Mail.Send of Microsoft Graph ({graph}) \
         and have an administrator consent{consent}, then run `oauth2-sendmail login {}`",
        account.email, account.name
    )
}

/// The copy of the message handed to Graph, which reads the recipients from the headers:
/// envelope recipients that no `To`/`Cc` names are added in one `Bcc` field (Graph never
/// shows Bcc to the recipients), and a `To`/`Cc` address outside the envelope is refused
/// (exit 65, naming it), because Graph would deliver to it. Bare local names in the headers
/// (cron's `To: root`) are not addresses Graph delivers to and are left alone.
pub fn for_graph(envelope: &Envelope, message: &[&[u8]]) -> Result<Vec<u8>> {
    let raw = message.concat();
    let parsed = Message::from_bytes(raw)?;
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
    let mut raw = message.concat();
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
    // At the top: the field order of a header block carries no meaning for Bcc.
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

/// The length of `n` bytes in padded base64.
fn base64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

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

/// A network failure talking to Graph. Connecting (TCP, TLS) failed: nothing was sent, a
/// passing failure (`Class::Transient`). Anything later: the request may have reached
/// Graph, which may have accepted the message (phase `Message`: `Class::Uncertain`, "may
/// have been delivered", as for SMTP after the end of the data).
fn network(e: &reqwest::Error) -> Error {
    let phase = if e.is_connect() {
        Phase::Connect
    } else {
        Phase::Message
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
    Error::network(phase, parts.join(": ").replace(['\r', '\n'], " "))
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
fn http_client(ca_file: Option<&std::path::Path>) -> Result<reqwest::Client> {
    let mut tls = (*crate::tls::client_config(ca_file)?).clone();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .https_only(true)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
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
        for_graph(&envelope(rcpts), &[msg.as_bytes()]).map(|v| String::from_utf8(v).unwrap())
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
        // A bare local name (cron's `To: root`) is not an address and is left alone.
        let cron = "To: root\r\n\r\nbody\r\n";
        assert_eq!(
            graph_copy(&["ops@contoso.com"], cron).unwrap(),
            format!("Bcc: ops@contoso.com\r\n{cron}")
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
            Error::from(Kind::Graph(Box::new(GraphRefusal {
                status,
                code: "C".into(),
                message: "m".into(),
                hint: None,
                retry_after: Some(7),
            })))
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
            host_of("https://graph.microsoft.com"),
            "graph.microsoft.com"
        );
    }
}
