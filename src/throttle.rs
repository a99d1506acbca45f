//! Saying a thing at most once per period, across runs: a log that cannot be written is
//! told once a day (not on every send, which a mail client would take for a failure each
//! time), a notifier runs once an hour per account and reason (not for every queued
//! message, nor in a loop).
//!
//! When each notice was last given is kept in `$XDG_STATE_HOME/oauth2-sendmail/notices.json`
//! (`{"KEY": unix seconds}`), read and rewritten under a lock on the file, so processes
//! running at once agree on who gives it.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{self, Read, Seek, Write};
use std::path::Path;

/// A notice older than this is forgotten (the file never grows without end).
const FORGET_AFTER_SECS: u64 = 7 * 86_400;

/// Whether the notice `key` is due now: not given within the last `period` seconds; when
/// it is, it counts as given from now. `None` when nothing can be remembered (no state
/// folder, or an unusable one): the caller decides what is safer.
#[must_use]
pub fn first_in(key: &str, period: u64) -> Option<bool> {
    let dir = crate::paths::state_dir()?;
    crate::private_dir::ensure_dir(&dir, "state folder").ok()?;
    first_in_file(&dir.join("notices.json"), key, period, crate::clock::now()).ok()
}

fn first_in_file(path: &Path, key: &str, period: u64, now: u64) -> io::Result<bool> {
    let mut file =
        crate::private_dir::open(path, OpenOptions::new().read(true).write(true).create(true))?;
    file.lock()?;
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    // A damaged file only costs one notice too many.
    let mut given: BTreeMap<String, u64> = serde_json::from_str(&text).unwrap_or_default();
    // A time in the future (a clock set back) does not silence a notice for long.
    if given
        .get(key)
        .is_some_and(|&at| at <= now && now - at < period)
    {
        return Ok(false);
    }
    given.retain(|_, at| *at <= now && now - *at < FORGET_AFTER_SECS);
    given.insert(key.to_owned(), now);
    let json = serde_json::to_vec(&given).map_err(io::Error::other)?;
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(&json)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_is_due_once_per_period_and_per_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notices.json");
        assert!(first_in_file(&path, "a", 3600, 1000).unwrap());
        assert!(!first_in_file(&path, "a", 3600, 1000 + 3599).unwrap());
        assert!(first_in_file(&path, "b", 3600, 1000 + 3599).unwrap());
        assert!(first_in_file(&path, "a", 3600, 1000 + 3600).unwrap());
        // A clock set back does not silence it.
        assert!(first_in_file(&path, "a", 3600, 10).unwrap());
        std::fs::write(&path, "not json").unwrap();
        assert!(first_in_file(&path, "a", 3600, 20).unwrap());
    }
}
