//! Telling a person that an account needs them (a new login, a failing `*_cmd`, refused
//! authentication), when the program that hit the problem (cron, a queue flush, a timer)
//! has no terminal: the account's `notify_cmd`, run without a shell, with
//! `OAUTH2_SENDMAIL_ACCOUNT` and `OAUTH2_SENDMAIL_REASON` in its environment; without
//! one, on a graphical session with `notify-send` installed, a desktop notification.
//!
//! A notice is given at most once an hour per account and reason (remembered by
//! `throttle`), and never from inside a notifier: its environment carries
//! `OAUTH2_SENDMAIL_NOTIFYING`, so a notifier that mails the user through this program
//! (which needs the same login) cannot start a loop. The notifier runs under a keeper, a
//! second process of this program that outlives the sender: it kills the notifier's process
//! group at `command_timeout` and writes a failure to the log.
//!
//! It also remembers a refused token refresh (since when, and the AADSTS code) in
//! `$XDG_STATE_HOME/oauth2-sendmail/accounts/ACCOUNT.json`, for `status`: the token file
//! alone cannot say that its refresh token is dead.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::error::{Class, Error, Result};
use crate::journal::Journal;
use crate::provider::AccountSettings;

/// Longest reason handed to the notifier (characters).
const MAX_REASON: usize = 1000;

/// Set in a notifier's environment: a process that sees it is inside a notification.
pub const NOTIFYING_ENV: &str = "OAUTH2_SENDMAIL_NOTIFYING";
/// The keeper's `argv[0]`: how `main` knows it is one (and how `ps` shows it).
pub const KEEPER_ARG0: &str = "oauth2-sendmail: notify_cmd";
/// How often the same account and reason may be told (seconds).
const NOTICE_PERIOD_SECS: u64 = 3600;

/// Tells the user about `error` when it needs them (`Class::NeedsUser`); remembers a
/// needed login for `status`. At most once an hour per account and reason, and never from
/// inside a notifier. A notifier that cannot start is reported on stderr, one that fails or
/// hangs in the log (`journal`), and nothing else changes: the mail's own outcome stands.
pub fn needs_user(account: &AccountSettings, error: &Error, journal: &Journal) {
    if error.class() != Class::NeedsUser {
        return;
    }
    remember(account, error);
    tell(account, &error.to_string(), journal);
}

/// System mode: a message that failed for good, for the admin's `notify_cmd` too (the
/// submitter gets a mailed notice). Without `notify_cmd`, nothing: a root flusher has no
/// desktop.
pub fn failed_for_good(account: &AccountSettings, reason: &str, journal: &Journal) {
    if account.config.notify_cmd.is_some() {
        tell(account, reason, journal);
    }
}

/// Runs `notify_cmd` (or the desktop notice) with the account and the reason: at most once
/// an hour per account and reason, and never from inside a notifier.
fn tell(account: &AccountSettings, reason: &str, journal: &Journal) {
    if std::env::var_os(NOTIFYING_ENV).is_some() {
        return;
    }
    let reason = crate::scrub::for_output(reason, MAX_REASON);
    let key = format!("notify {} {}", account.name, reason_key(&reason));
    // Nothing can be remembered: tell anyway (the environment mark still stops a loop).
    if crate::throttle::first_in(&key, NOTICE_PERIOD_SECS) == Some(false) {
        return;
    }
    match &account.config.notify_cmd {
        Some(cmd) => {
            if let Err(e) = cmd
                .argv()
                .and_then(|argv| keep(account, &reason, &argv, journal))
            {
                let line = crate::scrub::for_output(&e.to_string(), 1000);
                journal.account(
                    &account.name,
                    &format!("event=notify-failed error={line:?}"),
                );
                crate::stderr::account(&account.name, &line);
            }
        }
        None => desktop_notice(&account.name, &reason),
    }
}

/// What makes two notices "the same reason": the identity platform's code when there is
/// one (the rest of its text carries trace ids and times), else the line itself.
fn reason_key(reason: &str) -> String {
    aadsts_code(reason).unwrap_or_else(|| reason.chars().take(200).collect())
}

/// Starts the keeper (this program again, named [`KEEPER_ARG0`]) for `argv`, detached: in
/// a process group of its own, without input or output, never waited for by the sender.
/// Arguments: the log file (`""` = off), `command_timeout` in seconds, the account, then
/// the notifier's argv.
fn keep(account: &AccountSettings, reason: &str, argv: &[String], journal: &Journal) -> Result<()> {
    let exe = std::env::current_exe().map_err(|e| {
        Error::config(format!(
            "notify_cmd: cannot find this program to run it: {e}"
        ))
    })?;
    let log = journal
        .path()
        .map(|p| p.as_os_str().to_owned())
        .unwrap_or_default();
    let mut child = Command::new(exe)
        .arg0(KEEPER_ARG0)
        .arg(log)
        .arg(crate::command::timeout().as_secs().to_string())
        .arg(&account.name)
        .args(argv)
        .env("OAUTH2_SENDMAIL_ACCOUNT", &account.name)
        .env("OAUTH2_SENDMAIL_REASON", reason)
        .env(NOTIFYING_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| Error::config(format!("notify_cmd: cannot start its keeper: {e}")))?;
    // Reaped if the sender lives that long (a flush); otherwise init adopts it.
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(())
}

/// The keeper's whole run (`args`: its argv, see [`keep`]): the notifier under
/// `command_timeout`, its group killed at the limit, a failure written to the log.
#[must_use]
pub fn keeper(args: &[OsString]) -> std::process::ExitCode {
    let text: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let [_, log, seconds, account, notifier @ ..] = text.as_slice() else {
        return std::process::ExitCode::from(crate::error::EX_USAGE);
    };
    let Ok(seconds) = seconds.parse::<u64>() else {
        return std::process::ExitCode::from(crate::error::EX_USAGE);
    };
    if notifier.is_empty() {
        return std::process::ExitCode::from(crate::error::EX_USAGE);
    }
    crate::command::set_timeout(seconds);
    let journal = Journal::to((!log.is_empty()).then(|| PathBuf::from(log)));
    match crate::command::run_group("notify_cmd", notifier) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let line = crate::scrub::for_output(&e.to_string(), 1000);
            journal.account(account, &format!("event=notify-failed error={line:?}"));
            std::process::ExitCode::from(e.exit_code())
        }
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

/// Whether `account` needs a login as far as is known without the network (and without
/// running `token_decrypt_cmd`): a refused refresh remembered since its tokens were last
/// saved, or no stored token where the flow cannot get one alone. The line that says so.
#[must_use]
pub fn known_login_needed(account: &AccountSettings) -> Option<String> {
    let store = crate::oauth::store::TokenStore::new(account).ok()?;
    let saved = std::fs::symlink_metadata(store.path())
        .ok()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    let prefix = format!("account {}: ", account.name);
    if let Some(r) = remembered(&account.name).filter(|r| saved.is_none_or(|t| r.since >= t)) {
        let reason = crate::scrub::for_output(&r.reason, MAX_REASON);
        return Some(if reason.starts_with(&prefix) {
            reason
        } else {
            format!("{prefix}{reason}")
        });
    }
    (saved.is_none() && crate::oauth::grants::unattended_grant(account).is_none()).then(|| {
        format!(
            "{prefix}no token stored: run `oauth2-sendmail login {}`",
            account.name
        )
    })
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
    journal: &Journal,
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
        refresh_token_expiring(account, last_used, expires, journal);
    }
}

/// A refresh token that nothing has used for long is about to be dropped by the provider
/// (`expires_at`, Unix seconds): the user is told once per refresh token, i.e. once for
/// each `last_used`, through `notify_cmd` (or the desktop). The last notice is remembered in
/// `accounts/expiry-notices/ACCOUNT` (a folder of its own: account names hold no `/`).
fn refresh_token_expiring(
    account: &AccountSettings,
    last_used: u64,
    expires_at: u64,
    journal: &Journal,
) {
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
            journal,
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
