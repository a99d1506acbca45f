//! Which way an account's mail leaves, decided once from its `transport` and, for `auto`,
//! what the state folder remembers. Sending, `--dry-run`, `check` and `status` all read
//! this one `Route` instead of deciding `auto` again.

use std::path::PathBuf;

use crate::config::{TlsMode, TransportKind};
use crate::error::Error;
use crate::provider::AccountSettings;

/// The account's way out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `transport = "smtp"`.
    Smtp,
    /// `transport = "graph"`.
    Graph,
    /// `transport = "auto"`, switched to Graph by a `5.7.139`: the remembered line says
    /// since when and why.
    GraphSince(String),
    /// `transport = "auto"`: SMTP, and Graph from the first `5.7.139` on.
    SmtpThenGraph,
}

impl Route {
    /// The account's route now: its configuration and `auto`'s memory.
    #[must_use]
    pub fn for_account(account: &AccountSettings) -> Route {
        match account.config.transport {
            TransportKind::Smtp => Route::Smtp,
            TransportKind::Graph => Route::Graph,
            TransportKind::Auto => match remembered_graph(&account.name) {
                Some(line) => Route::GraphSince(line),
                None => Route::SmtpThenGraph,
            },
        }
    }

    /// The configured word: `smtp`, `graph` or `auto`.
    #[must_use]
    pub fn configured(&self) -> &'static str {
        match self {
            Route::Smtp => "smtp",
            Route::Graph => "graph",
            Route::GraphSince(_) | Route::SmtpThenGraph => "auto",
        }
    }

    /// What the next message is sent through: `smtp` or `graph`.
    #[must_use]
    pub fn in_use(&self) -> &'static str {
        if self.starts_with_graph() {
            "graph"
        } else {
            "smtp"
        }
    }

    /// True when the next message goes straight to Graph (no SMTP tried first).
    #[must_use]
    pub fn starts_with_graph(&self) -> bool {
        matches!(self, Route::Graph | Route::GraphSince(_))
    }

    /// True when the account may send through Graph at all (so it needs a Graph token).
    #[must_use]
    pub fn may_use_graph(&self) -> bool {
        !matches!(self, Route::Smtp)
    }

    /// The route as `status` shows it.
    #[must_use]
    pub fn describe(&self, account: &AccountSettings) -> String {
        let url = account.graph.as_ref().map_or("", |g| g.url.as_str());
        match self {
            Route::Smtp => "smtp".to_owned(),
            Route::Graph => format!("graph ({url})"),
            // Escaped here too: a memory file from an older version holds the raw reply.
            Route::GraphSince(line) => {
                format!("auto: {} ({url})", crate::scrub::for_output(line, 1000))
            }
            Route::SmtpThenGraph => "auto: smtp (graph after a 5.7.139)".to_owned(),
        }
    }

    /// Where a message would go, as `--dry-run` says it.
    #[must_use]
    pub fn plan(&self, account: &AccountSettings) -> String {
        match self {
            Route::Smtp => smtp_way(account),
            Route::Graph => graph_way(account),
            Route::GraphSince(_) => format!(
                "{}; transport auto: Graph since a 5.7.139",
                graph_way(account)
            ),
            Route::SmtpThenGraph => format!(
                "{}; transport auto: {} after a 5.7.139",
                smtp_way(account),
                graph_way(account)
            ),
        }
    }
}

/// `HOST:PORT, starttls, user EMAIL`: where an SMTP send goes.
fn smtp_way(account: &AccountSettings) -> String {
    let tls = match account.smtp.tls {
        TlsMode::Starttls => "starttls",
        TlsMode::Implicit => "implicit tls",
    };
    format!("{}, {tls}, user {}", account.smtp.address(), account.email)
}

/// `Microsoft Graph POST URL, user EMAIL`: where a Graph send goes (an account without
/// Graph settings, refused by the configuration check, would go through SMTP).
fn graph_way(account: &AccountSettings) -> String {
    match &account.graph {
        Some(g) => format!(
            "Microsoft Graph POST {}, user {}",
            g.send_url(&account.email),
            account.email
        ),
        None => smtp_way(account),
    }
}

/// Where `auto` remembers that an account switched to Graph.
fn memory_file(account: &str) -> Option<PathBuf> {
    crate::paths::state_dir().map(|d| d.join("transport").join(account))
}

/// What `auto` remembers for the account: `Some(line)` when it sends through Graph (the
/// line says since when and why).
fn remembered_graph(account: &str) -> Option<String> {
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
    let why = super::server_words(why);
    let line = format!(
        "graph since {}: SMTP said: {why}\n",
        crate::clock::utc(crate::clock::now())
    );
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, line).is_ok() {
        let _ = std::fs::rename(&tmp, &path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Account, ProviderKind};

    fn microsoft(transport: TransportKind) -> AccountSettings {
        let account = Account {
            provider: Some(ProviderKind::Microsoft),
            email: "a@contoso.com".into(),
            transport,
            ..Account::default()
        };
        crate::provider::resolve("w", &account).unwrap()
    }

    #[test]
    fn smtp_and_graph_routes_follow_the_configured_transport() {
        let smtp = microsoft(TransportKind::Smtp);
        assert_eq!(Route::for_account(&smtp), Route::Smtp);
        assert!(!Route::Smtp.may_use_graph());
        assert_eq!(Route::Smtp.describe(&smtp), "smtp");
        let graph = microsoft(TransportKind::Graph);
        assert_eq!(Route::for_account(&graph), Route::Graph);
        assert_eq!(
            (Route::Graph.configured(), Route::Graph.in_use()),
            ("graph", "graph")
        );
    }

    #[test]
    fn auto_shows_smtp_then_graph_until_a_5_7_139_is_remembered() {
        let auto = microsoft(TransportKind::Auto);
        let graph =
            "Microsoft Graph POST https://graph.microsoft.com/v1.0/me/sendMail, user a@contoso.com";
        assert_eq!(
            Route::SmtpThenGraph.plan(&auto),
            format!(
                "smtp.office365.com:587, starttls, user a@contoso.com; transport auto: {graph} after a 5.7.139"
            )
        );
        assert_eq!(Route::SmtpThenGraph.in_use(), "smtp");
        let switched = Route::GraphSince("graph since 2026-01-01: SMTP said: 535 5.7.139".into());
        assert_eq!(
            switched.plan(&auto),
            format!("{graph}; transport auto: Graph since a 5.7.139")
        );
        assert_eq!(
            (switched.configured(), switched.in_use()),
            ("auto", "graph")
        );
        assert!(
            switched
                .describe(&auto)
                .starts_with("auto: graph since 2026-01-01")
        );
    }
}
