//! A fake Microsoft Graph `sendMail`: a real HTTPS server on `127.0.0.1:0` (HTTP/2 and
//! HTTP/1.1 by ALPN, as Graph) that checks the bearer token against the fake identity
//! platform's tokens and their audience, decodes the base64 MIME body, stores it with its
//! recipients, answers `202 Accepted`, and can be scripted to fail.
//!
//! ```ignore
//! let graph = FakeGraph::start(&ca, &idp);
//! let token = idp.issue_access_token_for(&graph.audience(), false);
//! let url = graph.base_url();                  // graph_url in the config
//! graph.push_fault(Fault::Throttle(30));       // the next sendMail: 429, Retry-After: 30
//! // … run the binary …
//! let sent = graph.sent();                     // each accepted message, decoded
//! assert_eq!(sent[0].bcc, ["carol@x.example"]);
//! ```
//!
//! Routes: `POST /v1.0/me/sendMail` (delegated tokens only: an app-only token gets Graph's
//! 400 "/me request is only valid with delegated authentication flow") and `POST
//! /v1.0/users/{id}/sendMail` (any valid token; the mailbox is recorded). The body must be
//! `Content-Type: text/plain`, valid base64, at most Graph's 4 MB, and a MIME message with
//! at least one recipient. A request without a valid token for this server's audience gets
//! `401` (so does the connection warm-up's `HEAD`, which only needs the connection); any
//! other route `404`.
//! Faults: 429 with `Retry-After`, 503 with `Retry-After`, 403 `ErrorAccessDenied`, 401
//! `InvalidAuthenticationToken`, 413, 400 `ErrorInvalidRecipients`, and the answer lost
//! after the message was accepted; each applies to one `sendMail` request.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use serde_json::json;

use super::fake_idp::{Audiences, FakeIdp};
use super::support::{TestCa, spawn_server};

/// The status recorded for a request whose answer was lost (`Fault::LostAnswer`).
pub const LOST: u16 = 0;

/// Graph's request limit: 4 MB.
pub const MAX_REQUEST: usize = 4 * 1024 * 1024;

/// A scripted answer to the next `sendMail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `429 Too Many Requests` with `Retry-After: N` (Graph's throttling).
    Throttle(u64),
    /// `503 Service Unavailable` with `Retry-After: N`.
    Unavailable(u64),
    /// `403` `ErrorAccessDenied` (no Mail.Send, or no consent).
    AccessDenied,
    /// `401` `InvalidAuthenticationToken` (a revoked token).
    Unauthorized,
    /// `413` `RequestEntityTooLarge`.
    TooLarge,
    /// `400` `ErrorInvalidRecipients` (any other refusal of the message).
    InvalidRecipients,
    /// The message is checked and accepted (recorded as sent: the worst case for the
    /// client, which cannot know), then the answer is lost: the stream is reset
    /// (HTTP/2 `RST_STREAM`; HTTP/1.1: the connection closes) instead of the `202`.
    LostAnswer,
}

/// One message Graph accepted.
#[derive(Debug, Clone)]
pub struct Sent {
    /// `me` or the `{id}` of `/users/{id}`.
    pub mailbox: String,
    /// The MIME message as decoded from the base64 body.
    pub mime: Vec<u8>,
    pub to: Vec<String>,
    pub cc: Vec<String>,
    pub bcc: Vec<String>,
    /// `HTTP/2.0` or `HTTP/1.1`.
    pub version: String,
}

impl Sent {
    /// Every recipient Graph delivers to: To, Cc and Bcc.
    #[must_use]
    pub fn recipients(&self) -> Vec<String> {
        let mut all = self.to.clone();
        all.extend(self.cc.iter().cloned());
        all.extend(self.bcc.iter().cloned());
        all
    }
}

/// One request as received (any route).
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub connection: usize,
    pub version: String,
}

#[derive(Default)]
struct State {
    faults: VecDeque<Fault>,
    sent: Vec<Sent>,
    seen: Vec<Seen>,
    connections: usize,
    delay: Duration,
}

/// The running fake; it lives until the test process ends.
#[derive(Clone)]
pub struct FakeGraph {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    audiences: Audiences,
    audience: String,
}

impl FakeGraph {
    /// Serves on its own thread; accepts the tokens `idp` issued for this server's own
    /// URL as audience (as Graph accepts those for `https://graph.microsoft.com`: the
    /// resource of the `graph_url/Mail.Send` scope).
    #[must_use]
    pub fn start(ca: &TestCa, idp: &FakeIdp) -> FakeGraph {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let graph = FakeGraph {
            addr,
            state: Arc::new(Mutex::new(State::default())),
            audiences: idp.audiences(),
            audience: format!("https://127.0.0.1:{}", addr.port()),
        };
        let mut config = (*ca.server_config).clone();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let server = graph.clone();
        spawn_server(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let connection = {
                    let mut s = server.state.lock().unwrap();
                    s.connections += 1;
                    s.connections - 1
                };
                let acceptor = acceptor.clone();
                let graph = server.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let graph = graph.clone();
                        async move { graph.handle(req, connection).await }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
        graph
    }

    /// `https://127.0.0.1:PORT` (the `graph_url`).
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    /// The audience this fake accepts tokens for (its base URL).
    #[must_use]
    pub fn audience(&self) -> String {
        self.audience.clone()
    }

    /// The next `sendMail` fails this way (faults queue up).
    pub fn push_fault(&self, fault: Fault) {
        self.state.lock().unwrap().faults.push_back(fault);
    }

    /// Each answer waits this long first.
    pub fn set_delay(&self, delay: Duration) {
        self.state.lock().unwrap().delay = delay;
    }

    /// The messages accepted, in order.
    #[must_use]
    pub fn sent(&self) -> Vec<Sent> {
        self.state.lock().unwrap().sent.clone()
    }

    /// Every request, in order.
    #[must_use]
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// TCP connections accepted.
    #[must_use]
    pub fn connections(&self) -> usize {
        self.state.lock().unwrap().connections
    }

    /// The answer, or an error when it is to be lost (`Fault::LostAnswer`): hyper then
    /// resets the stream.
    async fn handle(
        &self,
        req: Request<Incoming>,
        connection: usize,
    ) -> std::io::Result<Response<Full<Bytes>>> {
        let method = req.method().as_str().to_owned();
        let path = req.uri().path().to_owned();
        let version = format!("{:?}", req.version());
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let content_type = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .unwrap_or_default();
        let delay = self.state.lock().unwrap().delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let (status, retry_after, body) = self.answer(
            &method,
            &path,
            auth.as_deref(),
            content_type.as_deref(),
            &body,
            &version,
        );
        self.state.lock().unwrap().seen.push(Seen {
            method,
            path,
            status,
            connection,
            version,
        });
        if status == LOST {
            return Err(std::io::Error::other(
                "the answer is lost (Fault::LostAnswer)",
            ));
        }
        let mut response = Response::builder()
            .status(status)
            .header("request-id", format!("req-{connection}-{status}"))
            .header("content-type", "application/json");
        if let Some(secs) = retry_after {
            response = response.header("retry-after", secs.to_string());
        }
        Ok(response.body(Full::new(Bytes::from(body))).unwrap())
    }

    /// Status, Retry-After and body for one request; `LOST` for no answer at all.
    fn answer(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        content_type: Option<&str>,
        body: &[u8],
        version: &str,
    ) -> (u16, Option<u64>, Vec<u8>) {
        let error = |status: u16, code: &str, message: &str| {
            let body = json!({"error": {"code": code, "message": message,
                "innerError": {"date": "2026-12-01T11:00:00", "request-id": "r", "client-request-id": "c"}}});
            (status, None, body.to_string().into_bytes())
        };
        let Some(token) = auth.and_then(|a| a.strip_prefix("Bearer ")) else {
            return error(401, "InvalidAuthenticationToken", "Access token is empty.");
        };
        let issued = self.audiences.lock().unwrap().get(token).cloned();
        let Some((audience, app_only)) = issued else {
            return error(
                401,
                "InvalidAuthenticationToken",
                "IDX14100: JWT is not well formed.",
            );
        };
        if audience != self.audience {
            return error(
                401,
                "InvalidAuthenticationToken",
                "Access token validation failure. Invalid audience.",
            );
        }
        let mailbox = match path
            .strip_prefix("/v1.0/")
            .and_then(|p| p.strip_suffix("/sendMail"))
        {
            Some("me") if method == "POST" => "me".to_owned(),
            Some(user) if method == "POST" && user.starts_with("users/") => {
                user["users/".len()..].to_owned()
            }
            _ => {
                return error(
                    404,
                    "ResourceNotFound",
                    "Resource not found for the segment.",
                );
            }
        };
        if mailbox == "me" && app_only {
            return error(
                400,
                "BadRequest",
                "/me request is only valid with delegated authentication flow.",
            );
        }
        let fault = self.state.lock().unwrap().faults.pop_front();
        let lose = fault == Some(Fault::LostAnswer);
        if let Some(fault) = fault.filter(|_| !lose) {
            let (status, code, message, retry) = fault_answer(fault);
            let (status, _, body) = error(status, code, message);
            return (status, retry, body);
        }
        if body.len() > MAX_REQUEST {
            return error(
                413,
                "RequestEntityTooLarge",
                "The request is larger than the limit.",
            );
        }
        if content_type.is_none_or(|c| !c.starts_with("text/plain")) {
            return error(
                400,
                "ErrorInvalidRequest",
                "Cannot process input of JSON type.",
            );
        }
        let Ok(mime) = base64::engine::general_purpose::STANDARD.decode(body) else {
            return error(
                400,
                "ErrorMimeContentInvalidBase64String",
                "Invalid base64 string for MIME content.",
            );
        };
        let Some(sent) = parse_sent(mailbox, mime, version) else {
            return error(
                400,
                "ErrorMimeContentInvalid",
                "The MIME content is invalid.",
            );
        };
        if sent.recipients().is_empty() {
            return error(
                400,
                "ErrorInvalidRecipients",
                "At least one recipient is not valid.",
            );
        }
        self.state.lock().unwrap().sent.push(sent);
        (if lose { LOST } else { 202 }, None, Vec::new())
    }
}

/// Status, `error.code`, message and Retry-After of a scripted fault, as Graph sends them.
fn fault_answer(fault: Fault) -> (u16, &'static str, &'static str, Option<u64>) {
    match fault {
        Fault::Throttle(s) => (
            429,
            "ApplicationThrottled",
            "Application is over its MailboxConcurrency limit.",
            Some(s),
        ),
        Fault::Unavailable(s) => (503, "ServiceUnavailable", "Service unavailable.", Some(s)),
        Fault::AccessDenied => (
            403,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
            None,
        ),
        Fault::Unauthorized => (
            401,
            "InvalidAuthenticationToken",
            "Lifetime validation failed, the token is expired.",
            None,
        ),
        Fault::TooLarge => (
            413,
            "RequestEntityTooLarge",
            "The request is larger than the limit.",
            None,
        ),
        Fault::InvalidRecipients => (
            400,
            "ErrorInvalidRecipients",
            "At least one recipient is not valid.",
            None,
        ),
        Fault::LostAnswer => unreachable!("answered by losing the answer"),
    }
}

/// The accepted message with its recipients as Graph reads them (To, Cc, Bcc).
fn parse_sent(mailbox: String, mime: Vec<u8>, version: &str) -> Option<Sent> {
    let parsed = mail_parser::MessageParser::default().parse(&mime)?;
    let (to, cc, bcc) = {
        let list = |a: Option<&mail_parser::Address>| -> Vec<String> {
            a.map(|a| {
                a.iter()
                    .filter_map(|m| m.address().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
        };
        (list(parsed.to()), list(parsed.cc()), list(parsed.bcc()))
    };
    drop(parsed);
    Some(Sent {
        mailbox,
        to,
        cc,
        bcc,
        mime,
        version: version.to_owned(),
    })
}
