//! The log: one line per message and outcome (queued, sent with the server's reply,
//! deferred, failed), and per account event (a login needed, a refresh token renewed),
//! so each message's whole story is in one place. Sendmail mode and the queue flush both
//! write it; neither knows the other.
//!
//! `$XDG_STATE_HOME/oauth2-sendmail/log` unless `logfile` says otherwise (`logfile = ""`
//! turns it off). Each line starts with an RFC 3339 UTC timestamp. The file is created
//! `0600` in `0700` folders whatever the umask. Nothing written here holds a secret: the
//! lines are built from envelopes and from errors, and errors never hold one.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::clock;
use crate::config::Config;
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

    #[cfg(test)]
    #[must_use]
    pub fn at(path: Option<PathBuf>) -> Journal {
        Journal { path }
    }

    /// `TIME account=… from=<…> recipients=… size=… RESULT` for one message.
    pub fn message(&self, account: &str, envelope: &Envelope, size: u64, result: &str) {
        let from = envelope.from.as_deref().unwrap_or("");
        let rcpts = envelope.recipients.join(",");
        self.line(&format!(
            "account={account} from=<{from}> recipients={rcpts} size={size} {result}"
        ));
    }

    /// `TIME account=… EVENT` for something about an account, not a message.
    pub fn account(&self, account: &str, event: &str) {
        self.line(&format!("account={account} {event}"));
    }

    /// Appends one line. The log is a record, not the outcome: failing to write it never
    /// fails a message (and never prints, since sendmail mode must stay silent).
    fn line(&self, text: &str) {
        let Some(path) = &self.path else { return };
        let line = format!("{} {text}\n", clock::rfc3339(clock::now()));
        let _ = append(path, line.as_bytes());
    }
}

/// Appends `bytes` to `path`, creating its folders `0700` and the file `0600` (modes set
/// explicitly after creation, so the umask has no say).
fn append(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::fs::{OpenOptions, Permissions};
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dirs(dir)?;
    }
    let mut file = match OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => {
            f.set_permissions(Permissions::from_mode(0o600))?;
            f
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            OpenOptions::new().append(true).open(path)?
        }
        Err(e) => return Err(e),
    };
    // One write per line: lines from processes writing at once never interleave.
    file.write_all(bytes)
}

/// Creates the missing folders of `dir`, each `0700`; existing ones are left as they are.
pub fn create_private_dirs(dir: &Path) -> std::io::Result<()> {
    use std::fs::{self, Permissions};
    use std::os::unix::fs::PermissionsExt;
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dirs(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => fs::set_permissions(dir, Permissions::from_mode(0o700)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
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
