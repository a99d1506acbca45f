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
//! at least one recipient, each an address (a bare `root` is `ErrorInvalidRecipients`). A request without a valid token for this server's audience gets
//! `401` (so does the connection warm-up's `HEAD`, which only needs the connection); any
//! other route `404`.
//! Faults: 429 with `Retry-After`, 503 with `Retry-After`, 403 `ErrorAccessDenied`, 401
//! `InvalidAuthenticationToken`, 413, 400 `ErrorInvalidRecipients`, and the answer lost
//! after the message was accepted; each applies to one `sendMail` or draft `send` request.
//!
//! The large-message path, as Microsoft documents it (docs/graph.md lists the sources):
//! `POST /v1.0/{me|users/{id}}/messages` (a draft from base64 MIME, `Mail.ReadWrite`, at
//! most 4 MB), `…/messages/{id}/attachments` (a `fileAttachment`, at most 4 MB of request),
//! `…/attachments/createUploadSession` (`AttachmentItem` of at most 150 MB; `201` with an
//! `uploadUrl` on another origin, this fake's second listener, and `nextExpectedRanges`),
//! `…/messages/{id}/send` (`202`; the message is recorded in [`FakeGraph::sent`] with its
//! attachments and leaves Drafts) and `DELETE …/messages/{id}`. The upload URL refuses a
//! bearer token (`401`), takes `PUT` ranges of at most 4 MiB in order with a `Content-Range`
//! matching the body and the session's size (`416` otherwise), answers `200` with
//! `nextExpectedRanges` and `201` with a `Location` for the last range, answers `GET` with
//! the session's state, and is gone (`404`) once expired. Upload faults
//! ([`UploadFault`]): a range lost after it was stored, a `503` for a range, the session
//! expiring.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use serde_json::json;

use super::fake_idp::{Audiences, FakeIdp, Scopes};
use super::support::{TestCa, spawn_server};

/// The status recorded for a request whose answer was lost (`Fault::LostAnswer`).
pub const LOST: u16 = 0;

/// Graph's request limit: 4 MB.
pub const MAX_REQUEST: usize = 4 * 1024 * 1024;

/// One upload range: "up to 4 MB each time".
pub const MAX_RANGE: usize = 4 * 1024 * 1024;

/// One attachment through an upload session: up to 150 MB.
pub const MAX_ATTACHMENT: u64 = 150 * 1024 * 1024;

/// A scripted failure of the next upload range (`PUT` to an upload URL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadFault {
    /// The range is stored, then the answer is lost (the stream is reset).
    Lost,
    /// `503 Service Unavailable`; the range is not stored.
    Unavailable,
    /// The session expires before this range: `404` from now on.
    Expire,
}

/// An attachment added to a draft (through `…/attachments` or an upload session).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub name: String,
    pub content_type: String,
    pub content_id: Option<String>,
    pub is_inline: bool,
    pub bytes: Vec<u8>,
    /// Through an upload session (rather than one `POST`).
    pub uploaded: bool,
}

/// A draft in a mailbox's Drafts folder.
#[derive(Debug, Clone)]
pub struct Draft {
    pub mailbox: String,
    pub mime: Vec<u8>,
    pub attachments: Vec<Attached>,
}

/// One request to the draft routes.
#[derive(Clone, Copy)]
struct DraftRequest<'a> {
    method: &'a str,
    mailbox: &'a str,
    tail: &'a str,
    token: &'a str,
    app_only: bool,
    content_type: Option<&'a str>,
    body: &'a [u8],
    version: &'a str,
}

/// An upload session in progress.
#[derive(Debug, Clone)]
struct UploadSession {
    draft: String,
    item: Attached,
    size: usize,
    expired: bool,
}

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
    /// The stream is reset as soon as the request's header arrives, before its body is
    /// read (a connection lost during the upload): nothing is recorded.
    ResetBeforeBody,
    /// `503` whose error body then trickles, one byte a second for ten minutes (a broken
    /// proxy): the client must give up on the body in bounded time.
    TrickleError,
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
    /// Attachments added to the draft apart from its MIME (empty for `sendMail`).
    pub attachments: Vec<Attached>,
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
    /// An `Authorization` header came with it.
    pub authorized: bool,
    /// The request's body length.
    pub length: usize,
    /// On the upload URLs' listener.
    pub upload: bool,
}

#[derive(Default)]
struct State {
    faults: VecDeque<Fault>,
    sent: Vec<Sent>,
    seen: Vec<Seen>,
    connections: usize,
    drafts: HashMap<String, Draft>,
    sessions: HashMap<String, UploadSession>,
    upload_faults: VecDeque<UploadFault>,
    next_id: usize,
}

/// The running fake; it lives until the test process ends.
#[derive(Clone)]
pub struct FakeGraph {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    audiences: Audiences,
    scopes: Scopes,
    audience: String,
    /// `https://127.0.0.1:PORT` of the upload URLs' listener (another origin, as
    /// `outlook.office.com` is to `graph.microsoft.com`).
    upload_base: Arc<Mutex<String>>,
    /// The upload listener's address.
    pub upload_addr: SocketAddr,
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
        let uploads = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        uploads.set_nonblocking(true).unwrap();
        let graph = FakeGraph {
            addr,
            state: Arc::new(Mutex::new(State::default())),
            audiences: idp.audiences(),
            scopes: idp.scopes(),
            audience: format!("https://127.0.0.1:{}", addr.port()),
            upload_base: Arc::new(Mutex::new(format!(
                "https://127.0.0.1:{}",
                uploads.local_addr().unwrap().port()
            ))),
            upload_addr: uploads.local_addr().unwrap(),
        };
        graph.serve(ca, listener, false);
        graph.serve(ca, uploads, true);
        graph
    }

    /// Serves `listener` on its own thread: Graph's API, or the upload URLs (`upload`).
    fn serve(&self, ca: &TestCa, listener: std::net::TcpListener, upload: bool) {
        let mut config = (*ca.server_config).clone();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let server = self.clone();
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
                        async move { graph.handle(req, connection, upload).await }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
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

    /// Upload URLs name this origin from now on (e.g. a slow link in front of
    /// [`FakeGraph::upload_addr`]).
    pub fn set_upload_base(&self, base: &str) {
        base.clone_into(&mut self.upload_base.lock().unwrap());
    }

    /// The next upload range fails this way (faults queue up).
    pub fn push_upload_fault(&self, fault: UploadFault) {
        self.state.lock().unwrap().upload_faults.push_back(fault);
    }

    /// The drafts still in Drafts (a failed large message must leave none).
    #[must_use]
    pub fn drafts(&self) -> Vec<Draft> {
        self.state
            .lock()
            .unwrap()
            .drafts
            .values()
            .cloned()
            .collect()
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
        upload: bool,
    ) -> std::io::Result<Response<BoxBody<Bytes, std::io::Error>>> {
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
        let content_range = req
            .headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let early = self.take_early_fault(upload, &method);
        if early == Some(Fault::ResetBeforeBody) {
            return Err(std::io::Error::other(
                "reset before the body (Fault::ResetBeforeBody)",
            ));
        }
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec())
            .unwrap_or_default();
        if early == Some(Fault::TrickleError) {
            return Ok(trickling_503());
        }
        let length = body.len();
        let (status, retry_after, body, location) = if upload {
            let (s, b, l) = self.upload_answer(
                &method,
                &path,
                auth.is_some(),
                content_range.as_deref(),
                &body,
            );
            (s, None, b, l)
        } else {
            let (s, r, b) = self.answer(
                &method,
                &path,
                auth.as_deref(),
                content_type.as_deref(),
                &body,
                &version,
            );
            (s, r, b, None)
        };
        self.state.lock().unwrap().seen.push(Seen {
            method,
            path,
            status,
            authorized: auth.is_some(),
            length,
            upload,
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
        if let Some(l) = location {
            response = response.header("location", l);
        }
        Ok(response
            .body(
                Full::new(Bytes::from(body))
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .unwrap())
    }

    /// A fault that acts before the request is answered (a reset, a trickling answer),
    /// taken off the queue when it is next and applies to this request.
    fn take_early_fault(&self, upload: bool, method: &str) -> Option<Fault> {
        let mut s = self.state.lock().unwrap();
        let next = *s.faults.front()?;
        let applies = !upload
            && method == "POST"
            && matches!(next, Fault::ResetBeforeBody | Fault::TrickleError);
        applies.then(|| s.faults.pop_front()).flatten()
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
        let error = graph_error;
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
        if let Some((mailbox, tail)) = mailbox_route(path)
            && (tail == "messages" || tail.starts_with("messages/"))
        {
            return self.message_answer(&DraftRequest {
                method,
                mailbox: &mailbox,
                tail,
                token,
                app_only,
                content_type,
                body,
                version,
            });
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
        // Graph delivers to addresses only: a bare `root` is refused.
        if sent.recipients().is_empty() || sent.recipients().iter().any(|r| !r.contains('@')) {
            return error(
                400,
                "ErrorInvalidRecipients",
                "At least one recipient is not valid.",
            );
        }
        self.state.lock().unwrap().sent.push(sent);
        (if lose { LOST } else { 202 }, None, Vec::new())
    }

    /// The draft routes: create, attach, upload session, send, delete.
    fn message_answer(&self, r: &DraftRequest<'_>) -> (u16, Option<u64>, Vec<u8>) {
        let DraftRequest {
            method,
            mailbox,
            tail,
            content_type,
            body,
            version,
            ..
        } = *r;
        if mailbox == "me" && r.app_only {
            return graph_error(
                400,
                "BadRequest",
                "/me request is only valid with delegated authentication flow.",
            );
        }
        let scope = self.scopes.lock().unwrap().get(r.token).cloned();
        let granted = |permission: &str| {
            scope
                .as_deref()
                .is_none_or(|s| s.contains(permission) || s.contains(".default"))
        };
        let denied = || {
            let (s, _, b) = graph_error(
                403,
                "ErrorAccessDenied",
                "Access is denied. Check credentials and try again.",
            );
            (s, None, b)
        };
        let parts: Vec<&str> = tail.split('/').collect();
        if body.len() > MAX_REQUEST {
            return graph_error(
                413,
                "RequestEntityTooLarge",
                "The request is larger than the limit.",
            );
        }
        match (method, parts.as_slice()) {
            ("POST", ["messages"]) if granted("Mail.ReadWrite") => {
                self.create_draft(mailbox, content_type, body)
            }
            ("POST", ["messages"]) => denied(),
            (_, ["messages", id, rest @ ..]) => {
                let known = self
                    .state
                    .lock()
                    .unwrap()
                    .drafts
                    .get(*id)
                    .is_some_and(|d| d.mailbox == mailbox);
                if !known {
                    return graph_error(
                        404,
                        "ErrorItemNotFound",
                        "The specified object was not found in the store.",
                    );
                }
                match (method, rest) {
                    ("DELETE", []) => {
                        if !granted("Mail.ReadWrite") {
                            return denied();
                        }
                        self.state.lock().unwrap().drafts.remove(*id);
                        (204, None, Vec::new())
                    }
                    ("POST", ["send"]) => self.send_draft(id, version),
                    ("POST", ["attachments"]) if granted("Mail.ReadWrite") => {
                        self.add_attachment(id, content_type, body)
                    }
                    ("POST", ["attachments", "createUploadSession"])
                        if granted("Mail.ReadWrite") =>
                    {
                        self.create_session(id, content_type, body)
                    }
                    ("POST", ["attachments", ..]) => denied(),
                    _ => graph_error(
                        404,
                        "ResourceNotFound",
                        "Resource not found for the segment.",
                    ),
                }
            }
            _ => graph_error(
                404,
                "ResourceNotFound",
                "Resource not found for the segment.",
            ),
        }
    }

    /// `POST …/messages` with a base64 MIME body: a draft in Drafts.
    fn create_draft(
        &self,
        mailbox: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> (u16, Option<u64>, Vec<u8>) {
        if content_type.is_none_or(|c| !c.starts_with("text/plain")) {
            return graph_error(
                400,
                "ErrorInvalidRequest",
                "Cannot process input of JSON type.",
            );
        }
        let Ok(mime) = base64::engine::general_purpose::STANDARD.decode(body) else {
            return graph_error(
                400,
                "ErrorMimeContentInvalidBase64String",
                "Invalid base64 string for MIME content.",
            );
        };
        if mail_parser::MessageParser::default().parse(&mime).is_none() {
            return graph_error(
                400,
                "ErrorMimeContentInvalid",
                "The MIME content is invalid.",
            );
        }
        let mut s = self.state.lock().unwrap();
        s.next_id += 1;
        let id = format!("AAMkADraft{}=", s.next_id);
        s.drafts.insert(
            id.clone(),
            Draft {
                mailbox: mailbox.to_owned(),
                mime,
                attachments: Vec::new(),
            },
        );
        let answer = json!({"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users('x')/messages/$entity",
            "id": id, "isDraft": true});
        (201, None, answer.to_string().into_bytes())
    }

    /// `POST …/messages/{id}/send`: the draft leaves Drafts and is recorded as sent.
    fn send_draft(&self, id: &str, version: &str) -> (u16, Option<u64>, Vec<u8>) {
        let fault = self.state.lock().unwrap().faults.pop_front();
        let lose = fault == Some(Fault::LostAnswer);
        if let Some(fault) = fault.filter(|_| !lose) {
            let (status, code, message, retry) = fault_answer(fault);
            let (status, _, body) = graph_error(status, code, message);
            return (status, retry, body);
        }
        let Some(draft) = self.state.lock().unwrap().drafts.remove(id) else {
            return graph_error(
                404,
                "ErrorItemNotFound",
                "The specified object was not found in the store.",
            );
        };
        let Some(mut sent) = parse_sent(draft.mailbox, draft.mime, version) else {
            return graph_error(
                400,
                "ErrorMimeContentInvalid",
                "The MIME content is invalid.",
            );
        };
        // Graph delivers to addresses only: a bare `root` is refused.
        if sent.recipients().is_empty() || sent.recipients().iter().any(|r| !r.contains('@')) {
            return graph_error(
                400,
                "ErrorInvalidRecipients",
                "At least one recipient is not valid.",
            );
        }
        sent.attachments = draft.attachments;
        self.state.lock().unwrap().sent.push(sent);
        (if lose { LOST } else { 202 }, None, Vec::new())
    }

    /// `POST …/attachments`: one `fileAttachment` with `contentBytes`.
    fn add_attachment(
        &self,
        id: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> (u16, Option<u64>, Vec<u8>) {
        let item = match json_body(content_type, body) {
            Ok(item) => item,
            Err(refusal) => return refusal,
        };
        if item["@odata.type"] != "#microsoft.graph.fileAttachment" {
            return graph_error(
                400,
                "BadRequest",
                "@odata.type is required: #microsoft.graph.fileAttachment.",
            );
        }
        let Some(bytes) = item["contentBytes"]
            .as_str()
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        else {
            return graph_error(
                400,
                "ErrorInvalidProperty",
                "contentBytes is not valid base64.",
            );
        };
        let Some(attached) = attached(&item, bytes, false) else {
            return graph_error(400, "ErrorInvalidProperty", "The attachment has no name.");
        };
        let answer = json!({"@odata.type": "#microsoft.graph.fileAttachment", "id": "AAMkAtt=",
            "name": attached.name, "size": attached.bytes.len()});
        self.state
            .lock()
            .unwrap()
            .drafts
            .get_mut(id)
            .unwrap()
            .attachments
            .push(attached);
        (201, None, answer.to_string().into_bytes())
    }

    /// `POST …/attachments/createUploadSession` with an `AttachmentItem`.
    fn create_session(
        &self,
        id: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> (u16, Option<u64>, Vec<u8>) {
        let json = match json_body(content_type, body) {
            Ok(json) => json,
            Err(refusal) => return refusal,
        };
        let item = &json["AttachmentItem"];
        if item["attachmentType"] != "file" {
            return graph_error(400, "BadRequest", "attachmentType must be file.");
        }
        let Some(size) = item["size"].as_u64() else {
            return graph_error(400, "BadRequest", "size is required.");
        };
        if size > MAX_ATTACHMENT {
            return graph_error(
                400,
                "ErrorAttachmentSizeLimitExceeded",
                "The attachment size exceeds the maximum of 150 MB.",
            );
        }
        let Some(meta) = attached(item, Vec::new(), true) else {
            return graph_error(400, "ErrorInvalidProperty", "The attachment has no name.");
        };
        let mut s = self.state.lock().unwrap();
        s.next_id += 1;
        let key = format!("sess{}", s.next_id);
        s.sessions.insert(
            key.clone(),
            UploadSession {
                draft: id.to_owned(),
                item: meta,
                size: size as usize,
                expired: false,
            },
        );
        let answer = json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.uploadSession",
            "uploadUrl": format!("{}/api/v2.0/AttachmentSessions('{key}')?authtoken=eyJ0eXAi", self.upload_base.lock().unwrap()),
            "expirationDateTime": "2026-12-01T11:15:00.000Z",
            "nextExpectedRanges": ["0"],
        });
        (201, None, answer.to_string().into_bytes())
    }

    /// The upload URLs: `PUT` a range, `GET` the session's state.
    fn upload_answer(
        &self,
        method: &str,
        path: &str,
        authorized: bool,
        content_range: Option<&str>,
        body: &[u8],
    ) -> (u16, Vec<u8>, Option<String>) {
        let error = |status: u16, code: &str, message: &str| {
            let (s, _, b) = graph_error(status, code, message);
            (s, b, None)
        };
        let Some(key) = path
            .strip_prefix("/api/v2.0/AttachmentSessions('")
            .and_then(|k| k.strip_suffix("')"))
            .map(str::to_owned)
        else {
            return error(404, "ResourceNotFound", "Resource not found.");
        };
        if authorized {
            // Pre-authenticated: a bearer token for Graph is not for this host.
            return error(
                401,
                "InvalidAudience",
                "The audience claim value is invalid.",
            );
        }
        let mut s = self.state.lock().unwrap();
        let Some(session) = s.sessions.get(&key).cloned().filter(|x| !x.expired) else {
            return error(
                404,
                "ErrorItemNotFound",
                "The upload session was not found or has expired.",
            );
        };
        let status = |received: usize| {
            json!({"expirationDateTime": "2026-12-01T11:15:00.000Z",
                "nextExpectedRanges": [received.to_string()]})
            .to_string()
            .into_bytes()
        };
        if method == "GET" {
            return (200, status(session.item.bytes.len()), None);
        }
        if method != "PUT" {
            return error(405, "MethodNotAllowed", "Use PUT.");
        }
        Self::put_range(&mut s, &key, &session, content_range, body)
    }

    /// One `PUT` of a range to the session `key`.
    fn put_range(
        s: &mut State,
        key: &str,
        session: &UploadSession,
        content_range: Option<&str>,
        body: &[u8],
    ) -> (u16, Vec<u8>, Option<String>) {
        let error = |status: u16, code: &str, message: &str| {
            let (s, _, b) = graph_error(status, code, message);
            (s, b, None)
        };
        let status = |received: usize| {
            json!({"expirationDateTime": "2026-12-01T11:15:00.000Z",
                "nextExpectedRanges": [received.to_string()]})
            .to_string()
            .into_bytes()
        };
        match s.upload_faults.pop_front() {
            Some(UploadFault::Unavailable) => {
                return error(503, "ServiceUnavailable", "Service unavailable.");
            }
            Some(UploadFault::Expire) => {
                s.sessions.get_mut(key).unwrap().expired = true;
                return error(
                    404,
                    "ErrorItemNotFound",
                    "The upload session was not found or has expired.",
                );
            }
            Some(UploadFault::Lost) => {
                // Stored, then the answer is lost.
                let received = session.item.bytes.len();
                if content_range
                    == Some(&format!(
                        "bytes {received}-{}/{}",
                        received + body.len() - 1,
                        session.size
                    ))
                {
                    s.sessions
                        .get_mut(key)
                        .unwrap()
                        .item
                        .bytes
                        .extend_from_slice(body);
                }
                return (LOST, Vec::new(), None);
            }
            None => {}
        }
        let received = session.item.bytes.len();
        let Some((start, end, total)) = content_range.and_then(parse_content_range) else {
            return error(
                400,
                "InvalidContentRange",
                "Content-Range is missing or malformed.",
            );
        };
        if total != session.size
            || start != received
            || end < start
            || end - start + 1 != body.len()
            || body.len() > MAX_RANGE
            || end >= total
        {
            return error(
                416,
                "InvalidRange",
                "The range is not the next one expected.",
            );
        }
        let session = s.sessions.get_mut(key).unwrap();
        session.item.bytes.extend_from_slice(body);
        if session.item.bytes.len() < session.size {
            return (200, status(session.item.bytes.len()), None);
        }
        let done = s.sessions.remove(key).unwrap();
        let location = format!(
            "https://outlook.office.com/api/v2.0/Users('x')/Messages('{}')/Attachments('{key}')",
            done.draft
        );
        match s.drafts.get_mut(&done.draft) {
            Some(d) => d.attachments.push(done.item),
            None => return error(404, "ErrorItemNotFound", "The message is gone."),
        }
        (201, Vec::new(), Some(location))
    }
}

/// `503` whose body trickles for ten minutes.
fn trickling_503() -> Response<BoxBody<Bytes, std::io::Error>> {
    Response::builder()
        .status(503)
        .header("content-type", "application/json")
        .body(Trickle::new(Duration::from_mins(10)).boxed())
        .unwrap()
}

/// A body of one byte a second until `end`.
struct Trickle {
    end: std::time::Instant,
    tick: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl Trickle {
    fn new(length: Duration) -> Trickle {
        Trickle {
            end: std::time::Instant::now() + length,
            tick: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }
}

impl http_body::Body for Trickle {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        if std::time::Instant::now() >= self.end {
            return std::task::Poll::Ready(None);
        }
        match self.tick.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => {
                let next = tokio::time::Instant::now() + Duration::from_secs(1);
                self.tick.as_mut().reset(next);
                std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from_static(b" ")))))
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

/// A JSON request body as Graph reads one: `415` without `application/json`, `400` when it
/// does not parse.
fn json_body(
    content_type: Option<&str>,
    body: &[u8],
) -> Result<serde_json::Value, (u16, Option<u64>, Vec<u8>)> {
    if content_type.is_none_or(|c| !c.starts_with("application/json")) {
        return Err(graph_error(
            415,
            "UnsupportedMediaType",
            "Content-Type must be application/json.",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|_| graph_error(400, "BadRequest", "Unable to read JSON request payload."))
}

/// Graph's error JSON with `status`.
fn graph_error(status: u16, code: &str, message: &str) -> (u16, Option<u64>, Vec<u8>) {
    let body = json!({"error": {"code": code, "message": message,
        "innerError": {"date": "2026-12-01T11:00:00", "request-id": "r", "client-request-id": "c"}}});
    (status, None, body.to_string().into_bytes())
}

/// `me` or `users/{id}` and the rest of a `/v1.0/…` path.
fn mailbox_route(path: &str) -> Option<(String, &str)> {
    let rest = path.strip_prefix("/v1.0/")?;
    if let Some(tail) = rest.strip_prefix("me/") {
        return Some(("me".to_owned(), tail));
    }
    let rest = rest.strip_prefix("users/")?;
    let (user, tail) = rest.split_once('/')?;
    Some((user.to_owned(), tail))
}

/// `bytes A-B/TOTAL`.
fn parse_content_range(v: &str) -> Option<(usize, usize, usize)> {
    let (range, total) = v.strip_prefix("bytes ")?.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?, total.parse().ok()?))
}

/// An attachment's fields from Graph's JSON (`fileAttachment` or `AttachmentItem`).
fn attached(item: &serde_json::Value, bytes: Vec<u8>, uploaded: bool) -> Option<Attached> {
    Some(Attached {
        name: item["name"].as_str().filter(|n| !n.is_empty())?.to_owned(),
        content_type: item["contentType"]
            .as_str()
            .unwrap_or("application/octet-stream")
            .to_owned(),
        content_id: item["contentId"].as_str().map(str::to_owned),
        is_inline: item["isInline"].as_bool().unwrap_or(false),
        bytes,
        uploaded,
    })
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
        Fault::LostAnswer | Fault::ResetBeforeBody | Fault::TrickleError => {
            unreachable!("answered by losing the answer")
        }
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
        attachments: Vec::new(),
    })
}
