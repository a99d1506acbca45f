//! The log: one line per message and outcome (queued, sent with the server's reply,
//! deferred, failed), and per account event (a login needed, a refresh token renewed),
//! so each message's whole story is in one place. Sendmail mode and the queue flush both
//! write it; neither knows the other.
//!
//! `$XDG_STATE_HOME/oauth2-sendmail/log` unless `logfile` says otherwise (`logfile = ""`
//! turns it off). Each line starts with an RFC 3339 UTC timestamp. The file is created
//! `0600` whatever the umask; the folders created for it are `0700`, a folder that was
//! there (the home folder, a shared log folder) keeps its mode. Nothing written here holds
//! a secret: the lines are built from envelopes and from errors, and errors never hold one.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::clock;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::smtp::Envelope;

/// Where log lines go; `None` = off.
#[derive(Debug, Clone, Default)]
pub struct Journal {
    path: Option<PathBuf>,
}

impl Journal {
    /// The log the config asks for: `logfile`, else the default place; `""` = off.
    #[must_use]
    pub fn from_config(config: &Config) -> Journal {
        let path = match &config.logfile {
            Some(p) if p.as_os_str().is_empty() => None,
            Some(p) => Some(p.clone()),
            None => crate::paths::log_file(),
        };
        Journal { path }
    }

    /// The log at `path` (`None` = off): for the notifier's keeper, which has no config.
    #[must_use]
    pub fn to(path: Option<PathBuf>) -> Journal {
        Journal { path }
    }

    #[cfg(test)]
    #[must_use]
    pub fn at(path: Option<PathBuf>) -> Journal {
        Journal { path }
    }

    /// The log file, `None` when off.
    #[must_use]
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// `TIME account=… from=<…> recipients=… size=… RESULT` for one message.
    pub fn message(&self, account: &str, envelope: &Envelope, size: u64, result: &str) {
        let from = envelope.from.as_deref().unwrap_or("");
        let rcpts = envelope.recipients.join(",");
        self.line(&format!(
            "account={account} from=<{from}> recipients={rcpts} size={size} {result}"
        ));
    }

    /// `TIME EVENT` for something about no one account (the maildrop's pickup).
    pub fn event(&self, event: &str) {
        self.line(event);
    }

    /// `TIME account=… EVENT` for something about an account, not a message.
    pub fn account(&self, account: &str, event: &str) {
        self.line(&format!("account={account} {event}"));
    }

    /// Appends one line, secrets scrubbed and control characters escaped. The log is a
    /// record, not the outcome: failing to write it never fails a message. A log that
    /// cannot be written is said on stderr once a day at most (a mail client takes any
    /// output as a failed send) and by `status` every time.
    fn line(&self, text: &str) {
        let Some(path) = &self.path else { return };
        let line = format!(
            "{} {}\n",
            clock::rfc3339(clock::now()),
            crate::scrub::for_output(text, MAX_LINE)
        );
        if let Err(e) = append(path, line.as_bytes()) {
            let key = format!("log-unwritable {}", path.display());
            // Nothing remembered (no usable state folder): silence; `status` still says it.
            if crate::throttle::first_in(&key, TROUBLE_PERIOD_SECS) == Some(true) {
                crate::stderr::line(&format!(
                    "logfile: {e} (said once a day; `oauth2-sendmail status` shows it)"
                ));
            }
        }
    }

    /// Why the log cannot be written, for `status`: its folder refused, or the file not
    /// writable. Creates nothing; `None` when it is off or all is well.
    #[must_use]
    pub fn problem(&self) -> Option<String> {
        let path = self.path.as_ref()?;
        if let Some(dir) = path.parent().filter(|d| d.exists())
            && let Err(e) = crate::private_dir::check_named_dir(dir, "log folder")
        {
            return Some(format!("logfile: {e}"));
        }
        if !path.exists() {
            return None;
        }
        crate::private_dir::open(path, std::fs::OpenOptions::new().append(true))
            .err()
            .map(|e| format!("logfile: cannot open the log {}: {e}", path.display()))
    }
}

/// How often a log that cannot be written is said on stderr (seconds).
const TROUBLE_PERIOD_SECS: u64 = 86_400;

/// Longest log line (characters): a server reply or an error is cut, never a whole message.
const MAX_LINE: usize = 4000;

/// Appends `bytes` to `path`: its missing folders created `0700`, its folder checked (ours,
/// not writable by others) but never changed, the file `0600` whatever the umask, never
/// through a symlink.
fn append(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::private_dir::ensure_named_dir(dir, "log folder")?;
    }
    let mut file =
        crate::private_dir::open(path, std::fs::OpenOptions::new().create(true).append(true))
            .map_err(|e| Error::io(format!("cannot open the log {}: {e}", path.display())))?;
    // One write per line: lines from processes writing at once never interleave.
    file.write_all(bytes)
        .map_err(|e| Error::io(format!("cannot write the log {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn lines_are_rfc3339_one_per_call_in_private_files_and_folders() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/log");
        let journal = Journal::at(Some(path.clone()));
        let envelope = Envelope {
            from: Some("a@contoso.com".into()),
            recipients: vec!["b@x.example".into(), "c@x.example".into()],
            ..Envelope::default()
        };
        journal.message("work", &envelope, 12, "result=sent reply=\"250 ok\"");
        journal.account("work", "event=login-needed");
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let (time, rest) = lines[0].split_once(' ').unwrap();
        assert_eq!(time.len(), "2026-11-22T23:14:05Z".len(), "{time}");
        assert!(time.ends_with('Z') && time.as_bytes()[10] == b'T', "{time}");
        assert_eq!(
            rest,
            "account=work from=<a@contoso.com> recipients=b@x.example,c@x.example size=12 \
             result=sent reply=\"250 ok\""
        );
        assert!(lines[1].ends_with(" account=work event=login-needed"));
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&dir.path().join("a/b")), 0o700);
    }

    #[test]
    fn off_writes_nothing() {
        Journal::at(None).account("work", "event=x");
        let config = Config {
            logfile: Some(PathBuf::new()),
            ..Config::default()
        };
        assert!(Journal::from_config(&config).path.is_none());
    }
}
