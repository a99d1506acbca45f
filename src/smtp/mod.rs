//! The SMTP submission client: our own ESMTP session on tokio + tokio-rustls (not lettre's
//! connection: it has no pipelining, no timeout after connecting, and mishandles bare LF).
//!
//! - `wire`: commands as exact bytes, reply parsing, the message codec (CRLF, and
//!   dot-stuffing for DATA; none for BDAT);
//! - `net`: the stream (TCP or proxy tunnel, TLS) and `Conn`, which writes commands and
//!   reads replies with every wait bounded;
//! - `envelope`: what may go on MAIL and RCPT lines, and how their replies are judged;
//! - `session`: the dialogue: connect, STARTTLS, AUTH XOAUTH2, the pipelined transaction
//!   (DATA, or `BDAT LAST` in one flight), QUIT.

mod envelope;
mod net;
pub mod session;
pub mod wire;

use serde::{Deserialize, Serialize};

// The reply lives below both the session and the errors (`crate::reply`).
pub use crate::reply::Reply;
pub use session::Session;

/// What goes in MAIL FROM and RCPT TO, resolved by `plan`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// `None` is the null sender, `MAIL FROM:<>`.
    pub from: Option<String>,
    /// Validated addresses, de-duplicated, in order.
    pub recipients: Vec<String>,
    pub dsn: Dsn,
    /// The message holds 8-bit bytes: `BODY=8BITMIME` when the server offers it.
    pub eight_bit: bool,
    /// An envelope address is not ASCII: `SMTPUTF8` is required.
    pub smtputf8: bool,
}

/// Delivery status notification parameters (RFC 3461), from `-N`, `-R`, `-V`; sent only
/// when the server offers DSN.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dsn {
    /// `NEVER`, or a comma list of `SUCCESS`, `FAILURE`, `DELAY` (upper case).
    pub notify: Option<String>,
    /// `FULL` or `HDRS`.
    pub ret: Option<String>,
    /// The envelope id, as given (xtext-encoded on the wire).
    pub envid: Option<String>,
}
