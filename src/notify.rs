//! Telling a person that an account needs a new login, when the program that hit the
//! problem (cron, a queue flush) has no terminal: the account's `notify_cmd`, run without a
//! shell, with `OAUTH2_SENDMAIL_ACCOUNT` and `OAUTH2_SENDMAIL_REASON` in its environment.

use crate::error::{Error, Kind, TokenClass};
use crate::provider::AccountSettings;

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

/// Runs `notify_cmd` when `error` means a login is needed. A notifier that fails is
/// reported on stderr but changes nothing else: the mail's own outcome stands.
pub fn login_needed(account: &AccountSettings, error: &Error) {
    if !needs_login(error) {
        return;
    }
    let Some(cmd) = &account.config.notify_cmd else {
        return;
    };
    let reason = error.to_string();
    let env = [
        ("OAUTH2_SENDMAIL_ACCOUNT", account.name.as_str()),
        ("OAUTH2_SENDMAIL_REASON", reason.as_str()),
    ];
    if let Err(e) = cmd.run("notify_cmd", None, &env) {
        eprintln!("oauth2-sendmail: account {}: {e}", account.name);
    }
}
