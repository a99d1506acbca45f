//! Telling a person that an account needs a new login, when the program that hit the
//! problem (cron, a queue flush) has no terminal: the account's `notify_cmd`, run without a
//! shell, with `OAUTH2_SENDMAIL_ACCOUNT` and `OAUTH2_SENDMAIL_REASON` in its environment.

use crate::error::{Error, Kind, TokenClass};
use crate::provider::AccountSettings;

/// Longest reason handed to the notifier (characters).
const MAX_REASON: usize = 1000;

/// True when `error` means the user must run `oauth2-sendmail login`.
#[must_use]
pub fn needs_login(error: &Error) -> bool {
    matches!(
        error.kind,
        Kind::Token {
            class: TokenClass::NeedsLogin,
            ..
        }
    )
}

/// Starts `notify_cmd` (detached) when `error` means a login is needed. A notifier that
/// cannot start is reported on stderr but changes nothing else: the mail's own outcome stands.
pub fn login_needed(account: &AccountSettings, error: &Error) {
    if !needs_login(error) {
        return;
    }
    let Some(cmd) = &account.config.notify_cmd else {
        return;
    };
    let reason = crate::scrub::for_output(&error.to_string(), MAX_REASON);
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
