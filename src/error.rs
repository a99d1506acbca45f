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

#[derive(Debug)]
pub enum Kind {
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

/// Microsoft Graph's error answer, as [`Kind::Graph`] carries it.
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

#[derive(Debug)]
pub struct Error {
    pub kind: Kind,
    pub account: Option<String>,
    pub server: Option<String>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Kind> for Error {
    fn from(kind: Kind) -> Self {
        Error {
            kind,
            account: None,
            server: None,
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
        self.account.get_or_insert_with(|| account.to_owned());
        self
    }

    /// Adds the server `host:port`, unless one is already known.
    #[must_use]
    pub fn at_server(mut self, server: &str) -> Self {
        self.server.get_or_insert_with(|| server.to_owned());
        self
    }

    /// Who can fix this failure (see [`Class`]).
    #[must_use]
    pub fn class(&self) -> Class {
        match &self.kind {
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
        match &self.kind {
            Kind::Graph(g) => g.retry_after,
            _ => None,
        }
    }

    /// True when the user must run `oauth2-sendmail login` (no token, refresh refused).
    #[must_use]
    pub fn needs_login(&self) -> bool {
        matches!(
            self.kind,
            Kind::Token {
                class: TokenClass::NeedsLogin,
                ..
            }
        )
    }

    /// True when the server refused the credentials (a fresh token may help once).
    #[must_use]
    pub fn is_auth_refused(&self) -> bool {
        matches!(&self.kind, Kind::Reply { phase: Phase::Auth, reply } if reply.is_permanent())
    }

    /// sysexits.h, as sendmail and msmtp use it.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match &self.kind {
            Kind::Usage(_) => EX_USAGE,
            Kind::Data(_) | Kind::TooLarge { .. } => EX_DATAERR,
            Kind::Config(_) => EX_CONFIG,
            Kind::Io(_) => EX_IOERR,
            Kind::Internal(_) => EX_SOFTWARE,
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
        match &self.account {
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
            .server
            .as_deref()
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        match &this.kind {
            // A message that already points somewhere gets no second pointer.
            Kind::Usage(m) if m.contains("(see ") => f.write_str(m),
            Kind::Usage(m) => write!(f, "{m} (see --help)"),
            Kind::Data(m) | Kind::Config(m) | Kind::Io(m) => f.write_str(m),
            Kind::Internal(m) => write!(f, "internal error: {m}; please report it"),
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
                let account = this.account.as_deref().unwrap_or("ACCOUNT");
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
        "5.7.139" => "SMTP AUTH is disabled for this tenant or mailbox: an administrator must enable \
                     Authenticated SMTP (https://aka.ms/smtp_auth_disabled), or set transport = \"auto\" \
                     (or \"graph\") to send through Microsoft Graph"
            .to_owned(),
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
}
