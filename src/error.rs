//! One error type for the whole program. Each failure knows its phase and, where there
//! is one, the server's own reply; `exit_code()` maps it to sysexits.h and `Display`
//! gives the one line a user reads on stderr: what failed, for which account, the
//! server's words, and what to do next. Nothing here ever holds a secret.

use std::fmt;

use crate::reply::Reply;

/// Where in the SMTP dialogue something went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Connect,
    Greeting,
    Ehlo,
    StartTls,
    Tls,
    Auth,
    Mail,
    Rcpt,
    Data,
    /// The reply after the end of the message data.
    Message,
    /// An HTTP request (Microsoft Graph) whose body had not all left, or whose answer
    /// cannot mean the message was sent.
    Request,
}

impl Phase {
    fn describe(self) -> &'static str {
        match self {
            Phase::Connect => "connecting",
            Phase::Greeting => "waiting for the greeting",
            Phase::Ehlo => "at EHLO",
            Phase::StartTls => "at STARTTLS",
            Phase::Tls => "in the TLS handshake",
            Phase::Auth => "authenticating",
            Phase::Mail => "at MAIL FROM",
            Phase::Rcpt => "at RCPT TO",
            Phase::Data => "at DATA",
            Phase::Message => "after the message data",
            Phase::Request => "during the request",
        }
    }
}

/// How a token problem is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenClass {
    /// Network, timeout, 408/429/5xx, `temporarily_unavailable`: try again later.
    Transient,
    /// The refresh token is gone or refused: a new `login` is needed.
    NeedsLogin,
    /// The app registration or the config is wrong (client id, tenant, redirect, scope).
    Config,
}

/// Who can fix a failure, which decides what becomes of the message (the contract's
/// "Failures and the queue"): decided here, from the kind, the phase and the reply, and
/// nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Clears by itself: network, timeout, any 4xx, the token service unreachable.
    /// Queued under `queue = "on-failure"`.
    Transient,
    /// Needs the user: a login, a failing `*_cmd`, refused authentication, configuration,
    /// a local file that cannot be read or written.
    /// Queued only when the caller cannot keep the message (`-oem`/`-oee`).
    NeedsUser,
    /// Refused for good (5xx, a recipient, the size, bad data): never queued.
    Permanent,
    /// The connection was lost, or no reply came, after the end of the data: the server
    /// may have delivered the message. Queued only with `-oem`/`-oee` (at least once).
    Uncertain,
}

/// What went wrong, private to this module: callers ask [`Error`] named questions
/// (`closes_session`, `is_smtp_auth_disabled`, …) instead of matching on it.
#[derive(Debug)]
enum Kind {
    /// Bad command line.
    Usage(String),
    /// Unusable message: empty, NUL byte, no recipient, bad address.
    Data(String),
    /// The message is larger than the server's advertised SIZE.
    TooLarge { size: u64, limit: u64 },
    /// Configuration error, already naming file, line and key where known.
    Config(String),
    /// Reading input or writing local files failed.
    Io(String),
    /// A bug or an impossible state.
    Internal(String),
    /// The message did not encode to the size announced for it (BDAT): a bug, caught
    /// before the message went whole, so the connection must be dropped rather than
    /// the message finished. Told and exited as [`Kind::Internal`] is.
    SizeMismatch(String),
    /// The network failed: refused, reset, timed out, closed.
    Network { phase: Phase, detail: String },
    /// The server broke the protocol, or refused what security requires (no STARTTLS).
    Protocol { phase: Phase, detail: String },
    /// A server's certificate did not verify (SMTP server, token service or Graph alike):
    /// exit 76 wherever it happens, and never "try again later": a wrong or missing
    /// `tls_ca_file`, an intercepting proxy or a wrong host does not clear by itself.
    /// `service` names what was being reached, e.g. "the token service (https://…)".
    Certificate { service: String, why: String },
    /// The server refused, in its own words.
    Reply { phase: Phase, reply: Reply },
    /// One or more recipients were refused permanently; nothing was delivered.
    RecipientsRefused(Vec<(String, Reply)>),
    /// Getting a token failed.
    Token { class: TokenClass, detail: String },
    /// Microsoft Graph answered with an error status: its `error.code` and message, what to
    /// do (e.g. the permission to grant) and any `Retry-After` (seconds).
    Graph(Box<GraphRefusal>),
    /// Already told the user (e.g. a flush's per-message lines): only the exit code is left.
    Reported(u8),
}

/// Microsoft Graph's error answer, as [`Error::graph`] takes it.
#[derive(Debug)]
pub struct GraphRefusal {
    pub status: u16,
    /// Graph's `error.code`, e.g. `ErrorAccessDenied`; empty when the body had none.
    pub code: String,
    pub message: String,
    pub hint: Option<String>,
    /// Seconds, from `Retry-After`.
    pub retry_after: Option<u64>,
}

/// One failure. Boxed, as lettre's SMTP error is: an `Err` stays one pointer wide, and
/// what is inside is this module's to read.
#[derive(Debug)]
pub struct Error {
    inner: Box<Inner>,
}

#[derive(Debug)]
struct Inner {
    kind: Kind,
    /// The account it happened for, once known.
    account: Option<String>,
    /// The server's `host:port`, once known.
    server: Option<String>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Exchange Online's enhanced code for "SMTP AUTH is disabled", what it means, and where
/// Microsoft says how to change it: the advice is written here once.
const SMTP_AUTH_DISABLED_CODE: &str = "5.7.139";
const SMTP_AUTH_DISABLED: &str = "SMTP AUTH is disabled for this tenant or mailbox";
const SMTP_AUTH_DISABLED_DOCS: &str = "https://aka.ms/smtp_auth_disabled";

impl From<Kind> for Error {
    fn from(kind: Kind) -> Self {
        Error {
            inner: Box::new(Inner {
                kind,
                account: None,
                server: None,
            }),
        }
    }
}

impl Error {
    pub fn usage(msg: impl Into<String>) -> Self {
        Kind::Usage(msg.into()).into()
    }
    pub fn data(msg: impl Into<String>) -> Self {
        Kind::Data(msg.into()).into()
    }
    pub fn config(msg: impl Into<String>) -> Self {
        Kind::Config(msg.into()).into()
    }
    pub fn io(msg: impl Into<String>) -> Self {
        Kind::Io(msg.into()).into()
    }
    pub fn internal(msg: impl Into<String>) -> Self {
        Kind::Internal(msg.into()).into()
    }
    pub fn network(phase: Phase, detail: impl Into<String>) -> Self {
        Kind::Network {
            phase,
            detail: detail.into(),
        }
        .into()
    }
    pub fn protocol(phase: Phase, detail: impl Into<String>) -> Self {
        Kind::Protocol {
            phase,
            detail: detail.into(),
        }
        .into()
    }
    #[must_use]
    pub fn reply(phase: Phase, reply: Reply) -> Self {
        Kind::Reply { phase, reply }.into()
    }
    pub fn certificate(service: impl Into<String>, why: impl Into<String>) -> Self {
        Kind::Certificate {
            service: service.into(),
            why: why.into(),
        }
        .into()
    }

    /// The certificate failure behind an error from any TLS client (rustls directly, or
    /// reqwest and hyper wrapping it, however deep), as [`Kind::Certificate`]; `None` when
    /// the chain holds no certificate refusal.
    pub fn certificate_in(service: &str, e: &(dyn std::error::Error + 'static)) -> Option<Self> {
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = next {
            if let Some(rustls::Error::InvalidCertificate(why)) =
                err.downcast_ref::<rustls::Error>()
            {
                return Some(Self::certificate(service, why.to_string()));
            }
            // tokio-rustls and hyper wrap rustls's error in an io::Error (even in two),
            // whose source() skips the error it wraps: step into it instead.
            next = match err
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
            {
                Some(inner) => Some(inner),
                None => err.source(),
            };
        }
        None
    }

    /// The message is larger than the server's advertised SIZE.
    pub fn too_large(size: u64, limit: u64) -> Self {
        Kind::TooLarge { size, limit }.into()
    }
    /// One or more recipients were refused permanently; nothing was delivered.
    pub fn recipients_refused(refused: Vec<(String, Reply)>) -> Self {
        Kind::RecipientsRefused(refused).into()
    }
    /// The message did not encode to the size announced for it: see [`Error::must_abandon`].
    pub fn size_mismatch(detail: impl Into<String>) -> Self {
        Kind::SizeMismatch(detail.into()).into()
    }
    /// Microsoft Graph's error answer.
    pub fn graph(refusal: GraphRefusal) -> Self {
        Kind::Graph(Box::new(refusal)).into()
    }
    /// Already told the user: only the exit code `code` is left.
    pub fn reported(code: u8) -> Self {
        Kind::Reported(code).into()
    }

    pub fn token(class: TokenClass, detail: impl Into<String>) -> Self {
        Kind::Token {
            class,
            detail: detail.into(),
        }
        .into()
    }

    /// Adds the account name, unless one is already known.
    #[must_use]
    pub fn for_account(mut self, account: &str) -> Self {
        self.inner.account.get_or_insert_with(|| account.to_owned());
        self
    }

    /// Adds the server `host:port`, unless one is already known.
    #[must_use]
    pub fn at_server(mut self, server: &str) -> Self {
        self.inner.server.get_or_insert_with(|| server.to_owned());
        self
    }

    /// Who can fix this failure (see [`Class`]).
    #[must_use]
    pub fn class(&self) -> Class {
        match &self.inner.kind {
            Kind::Network {
                phase: Phase::Message,
                ..
            }
            | Kind::Protocol {
                phase: Phase::Message,
                ..
            } => Class::Uncertain,
            Kind::Network { .. }
            | Kind::Token {
                class: TokenClass::Transient,
                ..
            } => Class::Transient,
            // A local file (token cache, queue) that cannot be read or written is the
            // user's to fix, like the configuration and a certificate that does not verify.
            Kind::Token { .. } | Kind::Config(_) | Kind::Io(_) | Kind::Certificate { .. } => {
                Class::NeedsUser
            }
            Kind::Reply { reply, .. } if reply.is_transient() => Class::Transient,
            Kind::Reply {
                phase: Phase::Auth,
                reply,
            } if reply.is_permanent() => Class::NeedsUser,
            // Graph's answers by their exit code: throttled or unavailable clears by
            // itself, a refused token or permission needs the user, the rest is for good.
            Kind::Graph(g) => match graph_exit_code(g.status) {
                EX_TEMPFAIL => Class::Transient,
                EX_NOPERM => Class::NeedsUser,
                _ => Class::Permanent,
            },
            Kind::Reported(code) => match *code {
                EX_TEMPFAIL => Class::Transient,
                EX_NOPERM | EX_CONFIG => Class::NeedsUser,
                _ => Class::Permanent,
            },
            _ => Class::Permanent,
        }
    }

    /// The seconds the server asked to wait before the next try (Graph's `Retry-After`
    /// on a 429 or 503), when it said.
    #[must_use]
    pub fn retry_after(&self) -> Option<u64> {
        match &self.inner.kind {
            Kind::Graph(g) => g.retry_after,
            _ => None,
        }
    }

    /// True when the user must run `oauth2-sendmail login` (no token, refresh refused).
    #[must_use]
    pub fn needs_login(&self) -> bool {
        matches!(
            self.inner.kind,
            Kind::Token {
                class: TokenClass::NeedsLogin,
                ..
            }
        )
    }

    /// True when the server refused the credentials (a fresh token may help once).
    #[must_use]
    pub fn is_auth_refused(&self) -> bool {
        matches!(&self.inner.kind, Kind::Reply { phase: Phase::Auth, reply } if reply.is_permanent())
    }

    /// The class of a token failure; `None` for any other failure.
    #[must_use]
    pub fn token_class(&self) -> Option<TokenClass> {
        match &self.inner.kind {
            Kind::Token { class, .. } => Some(*class),
            _ => None,
        }
    }

    /// What the token service's failure says (`None` for any other failure).
    #[must_use]
    pub fn token_detail(&self) -> Option<&str> {
        match &self.inner.kind {
            Kind::Token { detail, .. } => Some(detail),
            _ => None,
        }
    }

    /// Rewrites a token failure's words (e.g. to scrub what a server echoed); any other
    /// failure is returned as it is.
    #[must_use]
    pub fn map_token_detail(mut self, f: impl FnOnce(&str) -> String) -> Self {
        if let Kind::Token { detail, .. } = &mut self.inner.kind {
            *detail = f(detail);
        }
        self
    }

    /// The server's refusal, in its own words, when this failure is one.
    #[must_use]
    pub fn server_reply(&self) -> Option<&Reply> {
        match &self.inner.kind {
            Kind::Reply { reply, .. } => Some(reply),
            _ => None,
        }
    }

    /// Where in the dialogue this failed, for a network or protocol failure or a refusal.
    #[must_use]
    pub fn phase(&self) -> Option<Phase> {
        match &self.inner.kind {
            Kind::Network { phase, .. }
            | Kind::Protocol { phase, .. }
            | Kind::Reply { phase, .. } => Some(*phase),
            _ => None,
        }
    }

    /// The network failed (refused, reset, timed out, closed).
    #[must_use]
    pub fn is_network(&self) -> bool {
        matches!(self.inner.kind, Kind::Network { .. })
    }

    /// A server's certificate did not verify.
    #[cfg(test)]
    #[must_use]
    pub fn is_certificate(&self) -> bool {
        matches!(self.inner.kind, Kind::Certificate { .. })
    }

    /// Reading input or writing a local file failed (e.g. a full disk).
    #[must_use]
    pub fn is_local_io(&self) -> bool {
        matches!(self.inner.kind, Kind::Io(_))
    }

    /// Already told the user: nothing is left to print, only the exit code.
    #[must_use]
    pub fn is_reported(&self) -> bool {
        matches!(self.inner.kind, Kind::Reported(_))
    }

    /// The message's size and the server's limit, when it was too large.
    #[cfg(test)]
    #[must_use]
    pub fn too_large_by(&self) -> Option<(u64, u64)> {
        match self.inner.kind {
            Kind::TooLarge { size, limit } => Some((size, limit)),
            _ => None,
        }
    }

    /// The recipients refused for good, with the server's replies.
    #[must_use]
    pub fn refused_recipients(&self) -> Option<&[(String, Reply)]> {
        match &self.inner.kind {
            Kind::RecipientsRefused(refused) => Some(refused),
            _ => None,
        }
    }

    /// A `5.7.139` to the authentication: SMTP AUTH is disabled for the tenant or the
    /// mailbox (Exchange Online).
    #[must_use]
    pub fn is_smtp_auth_disabled(&self) -> bool {
        self.phase() == Some(Phase::Auth)
            && self
                .server_reply()
                .is_some_and(|r| r.enhanced() == Some(SMTP_AUTH_DISABLED_CODE))
    }

    /// A `421`: the server closes the connection after it, so the session is done even
    /// though the dialogue itself is in step.
    #[must_use]
    pub fn closes_session(&self) -> bool {
        self.server_reply().is_some_and(|r| r.code == 421)
    }

    /// After this failure the SMTP dialogue is out of step (the network failed or the
    /// server broke the protocol): the session must not be used again.
    #[must_use]
    pub fn breaks_dialogue(&self) -> bool {
        matches!(
            self.inner.kind,
            Kind::Network { .. } | Kind::Protocol { .. }
        )
    }

    /// The message did not match its announced size, or the server answered it before
    /// it was whole: nothing more may go on the connection, not even the end of the
    /// message, so it is dropped rather than finished.
    #[must_use]
    pub fn must_abandon(&self) -> bool {
        matches!(
            self.inner.kind,
            Kind::SizeMismatch(_) | Kind::Protocol { .. }
        )
    }

    /// A network failure once the end of the data was sent becomes one "after the
    /// message data" (`Phase::Message`): the server may have taken the message
    /// ([`Class::Uncertain`]). Any other failure is returned as it is.
    #[must_use]
    pub fn lost_after_end_of_data(mut self) -> Self {
        if let Kind::Network { phase, .. } = &mut self.inner.kind {
            *phase = Phase::Message;
        }
        self
    }

    /// The server refused a cached token that had not expired, and renewing it (this
    /// error) says a login is needed: the server's own reply says more than "expired",
    /// so the result names it and what to check. Any other renewal failure, or a
    /// refusal without a reply, leaves this error as it is.
    #[must_use]
    pub fn explained_by_refusal(self, refusal: &Error) -> Self {
        let (Some(detail), Some(reply)) = (
            self.token_detail().filter(|_| self.needs_login()),
            refusal.server_reply(),
        ) else {
            return self;
        };
        let server = refusal
            .inner
            .server
            .as_deref()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        let check = if reply.enhanced() == Some(SMTP_AUTH_DISABLED_CODE) {
            format!("{SMTP_AUTH_DISABLED} ({SMTP_AUTH_DISABLED_DOCS})")
        } else {
            "check that `user` (or `email`) is the identity that signed in and that SMTP AUTH \
             is enabled for the mailbox"
                .to_owned()
        };
        let mut e = Error::token(
            TokenClass::NeedsLogin,
            format!(
                "the server{server} refused the cached access token, which has not expired: \
                 {reply}; {check}; {detail}"
            ),
        );
        e.inner.account = self.inner.account;
        e
    }

    /// sysexits.h, as sendmail and msmtp use it.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match &self.inner.kind {
            Kind::Usage(_) => EX_USAGE,
            Kind::Data(_) | Kind::TooLarge { .. } => EX_DATAERR,
            Kind::Config(_) => EX_CONFIG,
            Kind::Io(_) => EX_IOERR,
            Kind::Internal(_) | Kind::SizeMismatch(_) => EX_SOFTWARE,
            Kind::Network { .. } => EX_TEMPFAIL,
            Kind::Protocol { .. } | Kind::Certificate { .. } => EX_PROTOCOL,
            Kind::RecipientsRefused(_) => EX_NOUSER,
            Kind::Token { class, .. } => match class {
                TokenClass::Transient => EX_TEMPFAIL,
                TokenClass::NeedsLogin => EX_NOPERM,
                TokenClass::Config => EX_CONFIG,
            },
            Kind::Reply { phase, reply } => reply_exit_code(*phase, reply),
            Kind::Graph(g) => graph_exit_code(g.status),
            Kind::Reported(code) => *code,
        }
    }
}

fn reply_exit_code(phase: Phase, reply: &Reply) -> u8 {
    if reply.is_transient() {
        return EX_TEMPFAIL;
    }
    if !reply.is_permanent() {
        // A positive reply where a refusal was expected, or a code outside 2xx-5xx.
        return EX_PROTOCOL;
    }
    match phase {
        Phase::Auth => EX_NOPERM,
        Phase::Rcpt => EX_NOUSER,
        Phase::Mail | Phase::Data | Phase::Message if is_size_refusal(reply) => EX_DATAERR,
        _ => EX_UNAVAILABLE,
    }
}

/// Microsoft Graph's answers, mapped as SMTP's are: throttled or unavailable is temporary,
/// a refused token or permission needs the user, too large is the message's fault.
fn graph_exit_code(status: u16) -> u8 {
    match status {
        408 | 429 | 500..=599 => EX_TEMPFAIL,
        401 | 403 => EX_NOPERM,
        413 => EX_DATAERR,
        _ => EX_UNAVAILABLE,
    }
}

fn is_size_refusal(reply: &Reply) -> bool {
    reply.code == 552 || reply.enhanced() == Some("5.3.4")
}

pub const EX_USAGE: u8 = 64;
pub const EX_DATAERR: u8 = 65;
pub const EX_NOUSER: u8 = 67;
pub const EX_UNAVAILABLE: u8 = 69;
pub const EX_SOFTWARE: u8 = 70;
pub const EX_IOERR: u8 = 74;
pub const EX_TEMPFAIL: u8 = 75;
pub const EX_PROTOCOL: u8 = 76;
pub const EX_NOPERM: u8 = 77;
pub const EX_CONFIG: u8 = 78;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let body = Body(self).to_string();
        match &self.inner.account {
            // A message that names its account already (a config check) gets no second
            // `account NAME: `.
            Some(account) if !body.starts_with(&format!("account {account}: ")) => {
                write!(f, "account {account}: {body}")
            }
            _ => f.write_str(&body),
        }
    }
}

/// The line without its `account NAME: ` prefix.
struct Body<'a>(&'a Error);

impl fmt::Display for Body<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Body(this) = self;
        let at = this
            .inner
            .server
            .as_deref()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        match &this.inner.kind {
            // A message that already points somewhere gets no second pointer.
            Kind::Usage(m) if m.contains("(see ") => f.write_str(m),
            Kind::Usage(m) => write!(f, "{m} (see --help)"),
            Kind::Data(m) | Kind::Config(m) | Kind::Io(m) => f.write_str(m),
            Kind::Internal(m) | Kind::SizeMismatch(m) => {
                write!(f, "internal error: {m}; please report it")
            }
            Kind::TooLarge { size, limit } => write!(
                f,
                "the message ({size} bytes) is larger than the server{at} accepts ({limit} bytes); nothing was sent"
            ),
            Kind::Network {
                phase: Phase::Message,
                detail,
            } => write!(
                f,
                "connection lost after the message data{at}: {detail}; the message may have \
                 been delivered: check before sending it again"
            ),
            Kind::Network { phase, detail } => write!(
                f,
                "network failure {}{at}: {detail}; nothing was sent, try again later",
                phase.describe()
            ),
            Kind::Protocol {
                phase: Phase::Message,
                detail,
            } => write!(
                f,
                "server{at} failed {}: {detail}; the message may have been delivered: check \
                 before sending it again",
                Phase::Message.describe()
            ),
            Kind::Protocol { phase, detail } => {
                write!(f, "server{at} failed {}: {detail}", phase.describe())
            }
            Kind::Certificate { service, why } => write!(
                f,
                "the certificate of {service}{at} does not verify ({why}); nothing was sent: \
                 check the host name, tls_ca_file and any proxy that intercepts TLS"
            ),
            Kind::Reply { phase, reply } => {
                let what = match phase {
                    Phase::Auth => "authentication refused".to_owned(),
                    p => format!("refused {}", p.describe()),
                };
                write!(f, "{what}{at}: {reply}")?;
                let account = this.inner.account.as_deref().unwrap_or("ACCOUNT");
                match hint(*phase, reply, account) {
                    Some(h) => write!(f, "; {h}"),
                    None if reply.is_transient() => f.write_str("; try again later"),
                    None => Ok(()),
                }
            }
            Kind::RecipientsRefused(refused) => {
                f.write_str("recipients refused, nothing was delivered: ")?;
                for (i, (addr, reply)) in refused.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "<{addr}>: {reply}")?;
                }
                write!(f, "{at}; fix or remove them and send again")
            }
            Kind::Token { detail, .. } => f.write_str(detail),
            Kind::Graph(g) => {
                let GraphRefusal {
                    status,
                    code,
                    message,
                    hint,
                    retry_after,
                } = &**g;
                write!(f, "Microsoft Graph{at} refused the message: HTTP {status}")?;
                if !code.is_empty() {
                    write!(f, " {code}")?;
                }
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                if let Some(h) = hint {
                    write!(f, "; {h}")?;
                }
                match retry_after {
                    Some(s) => write!(f, "; try again after {s} s (Retry-After)"),
                    None if graph_exit_code(*status) == EX_TEMPFAIL => {
                        f.write_str("; try again later")
                    }
                    None => Ok(()),
                }
            }
            Kind::Reported(code) => write!(f, "exit status {code}"),
        }
    }
}

/// What to do next for the server replies users meet most (Exchange Online first).
fn hint(phase: Phase, reply: &Reply, account: &str) -> Option<String> {
    let enhanced = reply.enhanced().unwrap_or("");
    let text = reply.text();
    let send_as_denied = enhanced == "5.7.60"
        || enhanced == "5.2.252"
        || text.contains("SendAsDenied")
        || text.contains("send as this sender");
    Some(match enhanced {
        _ if send_as_denied => {
            "the From address is not one this mailbox may send as: set rewrite_from = \"if-foreign\" \
             (or \"always\") for the account, or ask for Send As rights"
                .to_owned()
        }
        SMTP_AUTH_DISABLED_CODE => format!(
            "{SMTP_AUTH_DISABLED}: an administrator must enable Authenticated SMTP \
             ({SMTP_AUTH_DISABLED_DOCS}), or set transport = \"auto\" (or \"graph\") to send \
             through Microsoft Graph"
        ),
        "5.7.3" => format!(
            "the token was refused: check that `user` (or `email`) is the identity that signed in and that SMTP AUTH \
             is enabled for it, or run `oauth2-sendmail login {account}`"
        ),
        "5.7.57" => format!(
            "the server did not take the authentication: run `oauth2-sendmail check {account}`"
        ),
        "5.7.30" => "the server only offers basic authentication for this mailbox".to_owned(),
        "4.3.2" => "too many connections to this mailbox at once (Exchange allows 3); try again later"
            .to_owned(),
        "5.3.4" => "the message is larger than the server accepts".to_owned(),
        "5.7.4" if phase == Phase::Auth => {
            "the server does not accept XOAUTH2 here; check smtp_host and tls".to_owned()
        }
        _ if phase == Phase::Auth && reply.is_permanent() => {
            format!("run `oauth2-sendmail login {account}` if the token is no longer valid")
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_by_phase() {
        let r = |c, t| Reply::new(c, t);
        assert_eq!(Error::reply(Phase::Auth, r(535, "5.7.3 x")).exit_code(), 77);
        assert_eq!(Error::reply(Phase::Auth, r(454, "4.7.0 x")).exit_code(), 75);
        assert_eq!(
            Error::reply(Phase::Mail, r(550, "5.7.60 x")).exit_code(),
            69
        );
        assert_eq!(
            Error::reply(Phase::Message, r(552, "5.3.4 big")).exit_code(),
            65
        );
        assert_eq!(
            Error::reply(Phase::Message, r(554, "5.2.252 SendAsDenied")).exit_code(),
            69
        );
        assert_eq!(
            Error::reply(Phase::Greeting, r(421, "4.3.2 busy")).exit_code(),
            75
        );
        assert_eq!(
            Error::reply(Phase::Greeting, r(554, "go away")).exit_code(),
            69
        );
        assert_eq!(Error::reply(Phase::Data, r(250, "odd")).exit_code(), 76);
    }

    #[test]
    fn failure_classes_decide_who_can_fix_it() {
        let r = |c, t| Reply::new(c, t);
        let class = |e: Error| e.class();
        assert_eq!(
            class(Error::network(Phase::Connect, "refused")),
            Class::Transient
        );
        assert_eq!(
            class(Error::network(Phase::Data, "reset")),
            Class::Transient
        );
        assert_eq!(
            class(Error::reply(Phase::Message, r(451, "4.3.0 x"))),
            Class::Transient
        );
        assert_eq!(
            class(Error::token(TokenClass::Transient, "down")),
            Class::Transient
        );
        assert_eq!(
            class(Error::token(TokenClass::NeedsLogin, "x")),
            Class::NeedsUser
        );
        assert_eq!(
            class(Error::config("client_secret_cmd failed")),
            Class::NeedsUser
        );
        assert_eq!(
            class(Error::reply(Phase::Auth, r(535, "5.7.3 x"))),
            Class::NeedsUser
        );
        assert_eq!(
            class(Error::reply(Phase::Auth, r(535, "5.7.139 x"))),
            Class::NeedsUser
        );
        assert_eq!(
            class(Error::reply(Phase::Auth, r(454, "4.7.0 x"))),
            Class::Transient
        );
        assert_eq!(
            class(Error::reply(Phase::Rcpt, r(550, "5.1.1 x"))),
            Class::Permanent
        );
        assert_eq!(
            class(Error::reply(Phase::Message, r(554, "5.6.0 x"))),
            Class::Permanent
        );
        assert_eq!(class(Error::data("empty")), Class::Permanent);
        assert_eq!(class(Error::io("bad token file")), Class::NeedsUser);
        assert_eq!(
            class(Error::network(Phase::Message, "closed")),
            Class::Uncertain
        );
        assert_eq!(
            class(Error::protocol(Phase::Message, "bad")),
            Class::Uncertain
        );
        // A certificate that does not verify needs the user wherever it is met: exit 76.
        let cert = Error::certificate("the token service (https://x/)", "BadSignature");
        assert_eq!((cert.class(), cert.exit_code()), (Class::NeedsUser, 76));
        assert!(!cert.to_string().contains("try again"), "{cert}");
        let lost = Error::network(Phase::Message, "the server closed the connection").to_string();
        assert!(lost.contains("may have been delivered"), "{lost}");
        assert!(!lost.contains("nothing was sent"), "{lost}");
    }

    #[test]
    fn lines_name_account_server_reply_and_next_step() {
        let e = Error::reply(
            Phase::Auth,
            Reply::new(535, "5.7.3 Authentication unsuccessful"),
        )
        .for_account("work")
        .at_server("smtp.office365.com:587");
        let line = e.to_string();
        assert!(line.starts_with(
            "account work: authentication refused (smtp.office365.com:587): 535 5.7.3"
        ));
        assert!(line.contains("oauth2-sendmail login work"));
        assert!(!line.contains('\n'));
        let e = Error::reply(
            Phase::Message,
            Reply::new(554, "5.2.252 SendAsDenied; a not allowed to send as b"),
        );
        assert!(e.to_string().contains("rewrite_from"));
    }

    #[test]
    fn a_421_closes_the_session_and_other_replies_do_not() {
        let r = |c, t| Reply::new(c, t);
        assert!(Error::reply(Phase::Mail, r(421, "4.3.2 bye")).closes_session());
        assert!(!Error::reply(Phase::Mail, r(451, "4.3.0 later")).closes_session());
        assert!(!Error::network(Phase::Mail, "reset").closes_session());
    }

    #[test]
    fn a_size_mismatch_abandons_the_connection_and_reads_as_a_bug() {
        let e =
            Error::size_mismatch("BDAT 10 announced but the message encodes to 11 bytes or more");
        assert!(e.must_abandon());
        assert!(!e.breaks_dialogue());
        assert_eq!(e.exit_code(), EX_SOFTWARE);
        assert_eq!(
            e.to_string(),
            "internal error: BDAT 10 announced but the message encodes to 11 bytes or more; please report it"
        );
        assert!(Error::protocol(Phase::Data, "early reply").must_abandon());
        assert!(!Error::internal("x").must_abandon());
        assert!(!Error::network(Phase::Data, "reset").must_abandon());
    }

    #[test]
    fn only_a_5_7_139_to_the_authentication_says_smtp_auth_is_disabled() {
        let r = |c, t| Reply::new(c, t);
        assert!(
            Error::reply(Phase::Auth, r(535, "5.7.139 Authentication unsuccessful"))
                .is_smtp_auth_disabled()
        );
        assert!(!Error::reply(Phase::Auth, r(535, "5.7.3 x")).is_smtp_auth_disabled());
        assert!(!Error::reply(Phase::Mail, r(550, "5.7.139 x")).is_smtp_auth_disabled());
    }

    #[test]
    fn a_refused_cached_token_names_the_servers_words_when_a_login_is_needed() {
        let r = |c, t| Reply::new(c, t);
        let renewal = || {
            Error::token(TokenClass::NeedsLogin, "run `oauth2-sendmail login w`").for_account("w")
        };
        let refusal = Error::reply(Phase::Auth, r(535, "5.7.139 Authentication unsuccessful"))
            .at_server("smtp.office365.com:587");
        let e = renewal().explained_by_refusal(&refusal);
        assert!(e.needs_login());
        assert_eq!(
            e.to_string(),
            "account w: the server (smtp.office365.com:587) refused the cached access token, which \
             has not expired: 535 5.7.139 Authentication unsuccessful; SMTP AUTH is disabled for \
             this tenant or mailbox (https://aka.ms/smtp_auth_disabled); run `oauth2-sendmail login w`"
        );
        let other = renewal().explained_by_refusal(&Error::reply(Phase::Auth, r(535, "5.7.3 x")));
        assert!(
            other.to_string().contains(
                "5.7.3 x; check that `user` (or `email`) is the identity that signed in and that \
                 SMTP AUTH is enabled for the mailbox; run"
            ),
            "{other}"
        );
        // A transient renewal failure, or a refusal without a reply, stays as it was.
        let transient = Error::token(TokenClass::Transient, "later").explained_by_refusal(&refusal);
        assert_eq!(transient.to_string(), "later");
        let no_reply = renewal().explained_by_refusal(&Error::network(Phase::Auth, "reset"));
        assert_eq!(
            no_reply.to_string(),
            "account w: run `oauth2-sendmail login w`"
        );
    }

    #[test]
    fn a_network_failure_after_the_end_of_data_is_uncertain() {
        let e = Error::network(Phase::Data, "reset").lost_after_end_of_data();
        assert_eq!(e.phase(), Some(Phase::Message));
        assert_eq!(e.class(), Class::Uncertain);
        let refused = Error::reply(Phase::Data, Reply::new(554, "no")).lost_after_end_of_data();
        assert_eq!(refused.phase(), Some(Phase::Data));
    }
}
