//! Where things live on disk: the caller's XDG base directories (through the `directories`
//! crate) in user mode, or the host's fixed folders in system mode. `scope` decides which,
//! once, at start; everything else asks here and never knows the mode.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use directories::ProjectDirs;

/// The host's fixed folders (system mode), as a Debian MTA lays them out.
pub mod system {
    /// The system config: root's, refused if anyone else can write it or its folder.
    pub const CONFIG: &str = "/etc/oauth2-sendmail/config.toml";
    /// The system config's folder.
    pub const CONFIG_DIR: &str = "/etc/oauth2-sendmail";
    /// What the program remembers about the system accounts (tokens, refusals, auto's memory).
    pub const STATE: &str = "/var/lib/oauth2-sendmail";
    /// The spool: the system queue (root's) and the maildrop (everyone's way in).
    pub const SPOOL: &str = "/var/spool/oauth2-sendmail";
    /// Where other users' messages wait for the root flusher.
    pub const MAILDROP: &str = "/var/spool/oauth2-sendmail/maildrop";
    /// Checked maildrop entries, copied by root and waiting to be resolved with the system
    /// config (root's alone): the maildrop is emptied even while the config is broken.
    pub const INCOMING: &str = "/var/spool/oauth2-sendmail/incoming";
    /// Maildrop entries the flusher could not send for a reason in the entry itself
    /// (an unusable message), kept for the admin.
    pub const HELD: &str = "/var/spool/oauth2-sendmail/held";
    /// The system log.
    pub const LOG: &str = "/var/log/oauth2-sendmail/log";
}

/// Set once by `scope` when the system account is in use.
static SYSTEM: AtomicBool = AtomicBool::new(false);

/// From now on, every location below is the host's (system mode).
pub fn use_system_folders() {
    SYSTEM.store(true, Ordering::Relaxed);
}

fn system_mode() -> bool {
    SYSTEM.load(Ordering::Relaxed)
}

fn project() -> Option<ProjectDirs> {
    ProjectDirs::from("", "", "oauth2-sendmail")
}

/// The caller's own config, `$XDG_CONFIG_HOME/oauth2-sendmail/config.toml`, whatever the mode.
#[must_use]
pub fn user_config_file() -> Option<PathBuf> {
    project().map(|p| p.config_dir().join("config.toml"))
}

/// `$XDG_CONFIG_HOME/oauth2-sendmail/config.toml` (system: `/etc/oauth2-sendmail/config.toml`).
#[must_use]
pub fn config_file() -> Option<PathBuf> {
    if system_mode() {
        return Some(system::CONFIG.into());
    }
    user_config_file()
}

/// `$XDG_DATA_HOME/oauth2-sendmail/tokens`: one `ACCOUNT.json` per account
/// (system: `/var/lib/oauth2-sendmail/tokens`).
#[must_use]
pub fn token_dir() -> Option<PathBuf> {
    if system_mode() {
        return Some(PathBuf::from(system::STATE).join("tokens"));
    }
    project().map(|p| p.data_dir().join("tokens"))
}

/// `$XDG_STATE_HOME/oauth2-sendmail/queue` (system: `/var/spool/oauth2-sendmail/queue`).
#[must_use]
pub fn queue_dir() -> Option<PathBuf> {
    if system_mode() {
        return Some(PathBuf::from(system::SPOOL).join("queue"));
    }
    project().and_then(|p| p.state_dir().map(|s| s.join("queue")))
}

/// `$XDG_STATE_HOME/oauth2-sendmail/log`: the default log file
/// (system: `/var/log/oauth2-sendmail/log`).
#[must_use]
pub fn log_file() -> Option<PathBuf> {
    if system_mode() {
        return Some(system::LOG.into());
    }
    project().and_then(|p| p.state_dir().map(|s| s.join("log")))
}

/// `$XDG_STATE_HOME/oauth2-sendmail/accounts`: what is remembered about each account
/// between runs (the last refused token refresh), one `ACCOUNT.json` each.
#[must_use]
pub fn account_state_dir() -> Option<PathBuf> {
    state_dir().map(|s| s.join("accounts"))
}

/// `$XDG_STATE_HOME/oauth2-sendmail` (system: `/var/lib/oauth2-sendmail`): what the program
/// remembers between runs.
#[must_use]
pub fn state_dir() -> Option<PathBuf> {
    if system_mode() {
        return Some(system::STATE.into());
    }
    project().and_then(|p| p.state_dir().map(std::path::Path::to_path_buf))
}
