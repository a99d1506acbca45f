//! The one seam between the callers (`sendmail`, `flush`, `check`) and the ways out: an
//! authenticated SMTP session or a Microsoft Graph client. Callers only `send` and `close`;
//! `deliver::open` decides which one an account gets (its `transport`, and for `auto` what
//! the state folder remembers).
//!
//! `auto`: the first `5.7.139` (SMTP AUTH disabled for the tenant or mailbox) switches the
//! account to Graph, for that message and, remembered in
//! `$XDG_STATE_HOME/oauth2-sendmail/transport/ACCOUNT`, for the following ones.

use std::path::PathBuf;

use crate::error::{Error, Kind, Phase, Result};
use crate::graph;
use crate::provider::AccountSettings;
use crate::smtp::{Envelope, Reply, Session};
use crate::spool::Payload;

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
    /// Sends one message to the envelope's recipients. Errors carry the server.
    pub async fn send(&mut self, envelope: &Envelope, message: &Payload<'_>) -> Result<Receipt> {
        match self {
            Transport::Smtp(s) => s.send(envelope, message).await.map(Receipt::Smtp),
            Transport::Graph(g) => {
                let host = g.host().to_owned();
                g.send(envelope, message)
                    .await
                    .map(Receipt::Graph)
                    .map_err(|e| e.at_server(&host))
            }
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

/// A `5.7.139` from SMTP: SMTP AUTH is disabled for the tenant or the mailbox.
#[must_use]
pub fn is_smtp_auth_disabled(e: &Error) -> bool {
    matches!(&e.kind, Kind::Reply { phase: Phase::Auth, reply } if reply.enhanced() == Some("5.7.139"))
}

/// Where `auto` remembers that an account switched to Graph.
fn memory_file(account: &str) -> Option<PathBuf> {
    crate::paths::state_dir().map(|d| d.join("transport").join(account))
}

/// What `auto` remembers for the account: `Some(line)` when it sends through Graph (the
/// line says since when and why).
#[must_use]
pub fn remembered_graph(account: &str) -> Option<String> {
    let text = std::fs::read_to_string(memory_file(account)?).ok()?;
    let line = text.lines().next()?.trim();
    line.starts_with("graph").then(|| line.to_owned())
}

/// Remembers that the account sends through Graph from now on (best effort: without it,
/// the next message tries SMTP once more and switches again).
pub fn remember_graph(account: &str, why: &Error) {
    let Some(path) = memory_file(account) else {
        return;
    };
    if let Some(dir) = path.parent()
        && crate::private_dir::ensure_dir(dir, "state folder").is_err()
    {
        return;
    }
    let why = server_words(why);
    let line = format!(
        "graph since {}: SMTP said: {why}\n",
        crate::clock::utc(crate::clock::now())
    );
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, line).is_ok() {
        let _ = std::fs::rename(&tmp, &path);
    }
}

/// What the SMTP server said (its reply, without our advice, which is for `transport =
/// "smtp"`), fit for one line on a terminal: control characters escaped.
#[must_use]
pub fn server_words(e: &Error) -> String {
    let said = match &e.kind {
        Kind::Reply { reply, .. } => reply.to_string(),
        _ => e.to_string(),
    };
    crate::scrub::for_output(&said, 1000)
}

/// The account's transport as `status` shows it.
#[must_use]
pub fn describe(account: &AccountSettings) -> String {
    use crate::config::TransportKind;
    match account.config.transport {
        TransportKind::Smtp => "smtp".to_owned(),
        TransportKind::Graph => format!("graph ({})", graph_url(account)),
        TransportKind::Auto => match remembered_graph(&account.name) {
            // Escaped here too: a memory file from an older version holds the raw reply.
            Some(line) => format!(
                "auto: {} ({})",
                crate::scrub::for_output(&line, 1000),
                graph_url(account)
            ),
            None => "auto: smtp (graph after a 5.7.139)".to_owned(),
        },
    }
}

fn graph_url(account: &AccountSettings) -> &str {
    account.graph.as_ref().map_or("", |g| g.url.as_str())
}
