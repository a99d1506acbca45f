//! An account's whole way out: which one it takes (`route`: SMTP, Graph, or for `auto` SMTP
//! then Graph), opening it (`open`: token and connection at once, auth with one retry, the
//! 5.7.139 switch), and the seam callers use once it is open (`Transport`: `send` and
//! `close`, over an SMTP session or a Graph client).
//!
//! `auto`: the first `5.7.139` (SMTP AUTH disabled for the tenant or mailbox) switches the
//! account to Graph, for that message and, remembered in
//! `$XDG_STATE_HOME/oauth2-sendmail/transport/ACCOUNT`, for the following ones.

mod open;
mod route;

pub use open::open_smtp;
pub use route::{Route, remember_graph};

use crate::error::{Error, Result};
use crate::graph;
use crate::smtp::{Envelope, Reply, Session};
use crate::spool::Payload;

/// The account's transport, open and authenticated, along its route now.
pub async fn open(account: &crate::provider::AccountSettings, verbose: bool) -> Result<Transport> {
    Route::for_account(account).open(account, verbose).await
}

/// How a message left: the SMTP server's final reply, or Graph's acceptance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Receipt {
    Smtp(Reply),
    Graph(graph::Receipt),
}

impl std::fmt::Display for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Receipt::Smtp(r) => r.fmt(f),
            Receipt::Graph(r) => r.fmt(f),
        }
    }
}

/// An account's open way out.
pub enum Transport {
    Smtp(Session),
    Graph(graph::Client),
}

impl Transport {
    /// Sends one message to the envelope's recipients. Errors carry the server (the
    /// session and the Graph client name their own).
    pub async fn send(&mut self, envelope: &Envelope, message: &Payload<'_>) -> Result<Receipt> {
        match self {
            Transport::Smtp(s) => s.send(envelope, message).await.map(Receipt::Smtp),
            Transport::Graph(g) => g.send(envelope, message).await.map(Receipt::Graph),
        }
    }

    /// Sends one message and closes: for SMTP, QUIT rides in the same flight as the end of
    /// the data (and is sent on error paths too).
    pub async fn send_and_close(
        self,
        envelope: &Envelope,
        message: &Payload<'_>,
    ) -> Result<Receipt> {
        match self {
            Transport::Smtp(s) => s.send_and_quit(envelope, message).await.map(Receipt::Smtp),
            mut graph @ Transport::Graph(_) => graph.send(envelope, message).await,
        }
    }

    /// False once the transport cannot send another message (a broken SMTP session).
    #[must_use]
    pub fn is_usable(&self) -> bool {
        match self {
            Transport::Smtp(s) => s.is_usable(),
            Transport::Graph(_) => true,
        }
    }

    /// QUIT for SMTP; Graph's connection just closes.
    pub async fn close(self) {
        match self {
            Transport::Smtp(s) => s.quit().await,
            Transport::Graph(g) => drop(g),
        }
    }
}

/// What the SMTP server said (its reply, without our advice, which is for `transport =
/// "smtp"`), fit for one line on a terminal: control characters escaped.
#[must_use]
pub fn server_words(e: &Error) -> String {
    let said = match e.server_reply() {
        Some(reply) => reply.to_string(),
        None => e.to_string(),
    };
    crate::scrub::for_output(&said, 1000)
}
