//! Where things live on disk (XDG base directories through the `directories` crate).

use std::path::PathBuf;

use directories::ProjectDirs;

fn project() -> Option<ProjectDirs> {
    ProjectDirs::from("", "", "oauth2-sendmail")
}

/// `$XDG_CONFIG_HOME/oauth2-sendmail/config.toml`.
#[must_use]
pub fn config_file() -> Option<PathBuf> {
    project().map(|p| p.config_dir().join("config.toml"))
}

/// `$XDG_DATA_HOME/oauth2-sendmail/tokens`: one `ACCOUNT.json` per account.
#[must_use]
pub fn token_dir() -> Option<PathBuf> {
    project().map(|p| p.data_dir().join("tokens"))
}

/// `$XDG_STATE_HOME/oauth2-sendmail/queue`.
#[must_use]
pub fn queue_dir() -> Option<PathBuf> {
    project().and_then(|p| p.state_dir().map(|s| s.join("queue")))
}

/// `$XDG_STATE_HOME/oauth2-sendmail/log`: the default log file.
#[must_use]
pub fn log_file() -> Option<PathBuf> {
    project().and_then(|p| p.state_dir().map(|s| s.join("log")))
}

/// `$XDG_STATE_HOME/oauth2-sendmail/accounts`: what is remembered about each account
/// between runs (the last refused token refresh), one `ACCOUNT.json` each.
#[must_use]
pub fn account_state_dir() -> Option<PathBuf> {
    project().and_then(|p| p.state_dir().map(|s| s.join("accounts")))
}

/// `$XDG_STATE_HOME/oauth2-sendmail`: what the program remembers between runs.
#[must_use]
pub fn state_dir() -> Option<PathBuf> {
    project().and_then(|p| p.state_dir().map(std::path::Path::to_path_buf))
}
