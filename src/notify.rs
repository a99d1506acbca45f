//! Telling a person that an account needs them (a new login, a failing `*_cmd`, refused
//! authentication), when the program that hit the problem (cron, a queue flush, a timer)
//! has no terminal: the account's `notify_cmd`, run without a shell, with
//! `OAUTH2_SENDMAIL_ACCOUNT` and `OAUTH2_SENDMAIL_REASON` in its environment; without
//! one, on a graphical session with `notify-send` installed, a desktop notification.
//!
//! It also remembers a refused token refresh (since when, and the AADSTS code) in
//! `$XDG_STATE_HOME/oauth2-sendmail/accounts/ACCOUNT.json`, for `status`: the token file
//! alone cannot say that its refresh token is dead.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::error::{Class, Error};
use crate::provider::AccountSettings;

/// Longest reason handed to the notifier (characters).
const MAX_REASON: usize = 1000;

/// Tells the user about `error` when it needs them (`Class::NeedsUser`); remembers a
/// needed login for `status`. A notifier that fails is reported on stderr but changes
/// nothing else: the mail's own outcome stands.
pub fn needs_user(account: &AccountSettings, error: &Error) {
    if error.class() != Class::NeedsUser {
        return;
    }
    remember(account, error);
    tell(account, &error.to_string());
}

/// Runs the account's `notify_cmd` (or the desktop notice) with `reason`.
fn tell(account: &AccountSettings, reason: &str) {
    let reason = crate::scrub::for_output(reason, MAX_REASON);
    match &account.config.notify_cmd {
        Some(cmd) => {
            let env = [
                ("OAUTH2_SENDMAIL_ACCOUNT", account.name.as_str()),
                ("OAUTH2_SENDMAIL_REASON", reason.as_str()),
            ];
            // Detached: a notifier that hangs must never hold up the mail's own outcome.
            let started = cmd
                .argv()
                .and_then(|argv| crate::command::spawn_detached("notify_cmd", &argv, &env));
            if let Err(e) = started {
                eprintln!(
                    "oauth2-sendmail: account {}: {}",
                    account.name,
                    crate::scrub::for_output(&e.to_string(), 1000)
                );
            }
        }
        None => desktop_notice(&account.name, &reason),
    }
}

/// Without `notify_cmd`: `notify-send` on a graphical session (`DISPLAY` or
/// `WAYLAND_DISPLAY` set, `notify-send` on `PATH`), started detached and never waited for;
/// elsewhere nothing.
fn desktop_notice(account: &str, reason: &str) {
    let graphical = ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
    if !graphical {
        return;
    }
    let Some(program) = on_path("notify-send") else {
        return;
    };
    let _ = Command::new(program)
        .args([
            "--app-name=oauth2-sendmail",
            &format!("oauth2-sendmail: account {account} needs you"),
            reason,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A refused refresh, remembered until the next login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginNeeded {
    /// Unix seconds: the first failure since the tokens were last good.
    pub since: u64,
    /// The error line (never a secret).
    pub reason: String,
    /// The identity platform's code, e.g. `AADSTS700082`, when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

fn state_file(account: &str) -> Option<PathBuf> {
    crate::paths::account_state_dir().map(|d| d.join(format!("{account}.json")))
}

/// Records that `account` needs a login (when `error` says so), keeping the first `since`
/// unless the tokens were saved after it (a refresh or a login made them good again).
pub fn remember(account: &AccountSettings, error: &Error) {
    if !error.needs_login() {
        return;
    }
    let Some(path) = state_file(&account.name) else {
        return;
    };
    let saved = crate::oauth::store::TokenStore::new(account)
        .ok()
        .and_then(|s| std::fs::metadata(s.path()).ok()?.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    if remembered(&account.name).is_some_and(|r| saved.is_none_or(|t| r.since >= t)) {
        return;
    }
    let reason = error.to_string();
    let note = LoginNeeded {
        since: crate::clock::now(),
        code: aadsts_code(&reason),
        reason,
    };
    let _ = write_private(&path, &note);
}

/// The remembered refused refresh of `account`, if any.
#[must_use]
pub fn remembered(account: &str) -> Option<LoginNeeded> {
    let bytes = std::fs::read(state_file(account)?).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Forgets it (after a successful login).
pub fn forget(account: &str) {
    if let Some(path) = state_file(account) {
        let _ = std::fs::remove_file(path);
    }
}

fn write_private(path: &std::path::Path, note: &LoginNeeded) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        crate::private_dir::ensure_dir(dir, "state folder")
            .map_err(|e| std::io::Error::other(e.to_string()))?;
    }
    let json = serde_json::to_vec(note).map_err(std::io::Error::other)?;
    crate::private_dir::open(
        path,
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true),
    )?
    .write_all(&json)
}

/// `notify_cmd` is told when a refresh token is this close to its idle expiry.
pub const EXPIRY_NOTICE_SECS: u64 = 14 * 86_400;

/// Tells `notify_cmd` once when a refresh token last used at `last_used` is within
/// [`EXPIRY_NOTICE_SECS`] of the provider's idle expiry: a timer's `-q` renews any refresh
/// token unused for 30 days, so one this old is one that nothing renews. `status` checks,
/// and `-q` when its renewal failed for a passing reason.
pub fn warn_if_expiring(
    account: &AccountSettings,
    has_refresh: bool,
    last_used: Option<u64>,
    now: u64,
) {
    let (Some(last_used), Some(lifetime), true) = (
        last_used,
        crate::provider::refresh_idle_lifetime(account.provider),
        has_refresh,
    ) else {
        return;
    };
    let expires = last_used.saturating_add(lifetime);
    if expires.saturating_sub(now) <= EXPIRY_NOTICE_SECS {
        refresh_token_expiring(account, last_used, expires);
    }
}

/// A refresh token that nothing has used for long is about to be dropped by the provider
/// (`expires_at`, Unix seconds): the user is told once per refresh token, i.e. once for
/// each `last_used`, through `notify_cmd` (or the desktop). The last notice is remembered in
/// `accounts/expiry-notices/ACCOUNT` (a folder of its own: account names hold no `/`).
fn refresh_token_expiring(account: &AccountSettings, last_used: u64, expires_at: u64) {
    let Some(dir) = crate::paths::account_state_dir().map(|d| d.join("expiry-notices")) else {
        return;
    };
    let path = dir.join(&account.name);
    let told = crate::private_dir::read(&path)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.trim().parse::<u64>().ok());
    if told == Some(last_used) {
        return;
    }
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        crate::private_dir::ensure_dir(&dir, "state folder")
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        crate::private_dir::open(
            &path,
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true),
        )?
        .write_all(format!("{last_used}\n").as_bytes())
    };
    // Told only when remembered: a notice that cannot be remembered would repeat forever.
    if write().is_ok() {
        tell(
            account,
            &format!(
                "the refresh token of account {} has not been used since {} and the provider \
                 drops it at {}: send a message, run `oauth2-sendmail -q` (or enable the \
                 timer), or the next send will need `oauth2-sendmail login {}`",
                account.name,
                crate::clock::utc(last_used),
                crate::clock::utc(expires_at),
                account.name
            ),
        );
    }
}

/// `AADSTS700082` out of an error line.
fn aadsts_code(text: &str) -> Option<String> {
    let start = text.find("AADSTS")?;
    let digits: String = text[start + 6..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!digits.is_empty()).then(|| format!("AADSTS{digits}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_aadsts_code_is_found_in_the_reason() {
        assert_eq!(
            aadsts_code("refused: AADSTS700082: The refresh token has expired").as_deref(),
            Some("AADSTS700082")
        );
        assert_eq!(aadsts_code("invalid_grant"), None);
        assert_eq!(aadsts_code("AADSTS"), None);
    }
}
