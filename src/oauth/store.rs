//! The token cache on disk: one file per account, a per-account lock, atomic writes.
//!
//! # Where
//!
//! `$XDG_DATA_HOME/oauth2-sendmail/tokens/ACCOUNT.json` (usually
//! `~/.local/share/oauth2-sendmail/tokens/`); an account that sends through Microsoft Graph
//! also has `tokens/graph/ACCOUNT.json`, the same format, holding the Graph access token (its
//! refresh token stays in `tokens/ACCOUNT.json`: Microsoft's refresh tokens serve both
//! audiences). A folder of its own, because an account name may hold a `.`: a
//! `tokens/ACCOUNT.graph.json` would be the SMTP cache of an account named `ACCOUNT.graph`,
//! while no account name holds a `/`. The folders are created `0700` (and put back to
//! `0700` when it is found wider); token files are created `0600` (and put back to `0600`
//! when read with a wider mode). Next to each token file
//! sits `ACCOUNT.lock`, an empty file that only serves as the account's lock
//! (`File::lock`, i.e. `flock(2)`); it may be deleted when no process runs.
//!
//! # Format (stable; users inspect it, back it up and script around it)
//!
//! One JSON object:
//!
//! ```json
//! {
//!   "access_token": "eyJ0eXAiOi…",
//!   "expires_at": 1767225600,
//!   "refresh_token": "1.AQwA…",
//!   "token_type": "Bearer",
//!   "scope": "https://outlook.office.com/SMTP.Send offline_access",
//!   "obtained_at": 1767221000
//! }
//! ```
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `access_token` | string, required | the bearer token sent in XOAUTH2 |
//! | `expires_at` | integer, required | when the access token expires, Unix seconds |
//! | `refresh_token` | string, optional | present when the flow has one (not client credentials); rotated on every refresh |
//! | `token_type` | string, optional | as the token endpoint returned it (`Bearer`) |
//! | `scope` | string, optional | the scopes granted, space-separated, as returned |
//! | `obtained_at` | integer, optional | when the token endpoint issued these tokens, Unix seconds |
//!
//! Unknown fields are ignored when reading (and not written back). A file written by hand
//! (e.g. `{"access_token":"…","expires_at":0,"refresh_token":"…"}`) is a valid cache: the
//! next use refreshes it.
//!
//! When the account sets `token_encrypt_cmd` and `token_decrypt_cmd`, the file holds what
//! the encrypt command printed when given the JSON on its stdin, and reading pipes the file
//! through the decrypt command. Both run without a shell; a non-zero exit is an error.
//!
//! # Concurrency
//!
//! Readers never lock: a save writes a temporary file in the same folder (`0600` from
//! its creation), fsyncs it, renames it over the old file and fsyncs the folder, so a reader
//! sees the old file or the new one, whole. Whoever refreshes holds the account's lock from
//! before re-reading the file until after the save, so a refresh token rotated by the
//! server is never lost to a concurrent refresh.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::CommandSpec;
use crate::error::{Error, Result};
use crate::paths;
use crate::private_dir;
use crate::provider::AccountSettings;

/// The token file's JSON object (a documented, stable format: see the module docs).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredToken {
    pub access_token: String,
    /// Unix seconds.
    pub expires_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// When the token endpoint last issued these tokens (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub obtained_at: Option<u64>,
    /// Who signed in (the `id_token`'s `preferred_username` or `email`), when the login's
    /// `id_token` named someone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// What the token was asked for (`scope=…` or `resource=…`): a Graph token asked for
    /// another audience or scopes than the configuration's now is not used. Absent in
    /// caches written before it was recorded (then the token is used until it expires).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<String>,
    /// The flow of the login that stored these tokens (`login --flow` may differ from the
    /// config's), as the config spells it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
}

impl fmt::Debug for StoredToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredToken")
            .field("access_token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("token_type", &self.token_type)
            .field("scope", &self.scope)
            .field("obtained_at", &self.obtained_at)
            .field("requested", &self.requested)
            .field("identity", &self.identity)
            .field("flow", &self.flow)
            .finish()
    }
}

impl StoredToken {
    /// Tells [`crate::scrub`] about the tokens, so that no output ever shows them.
    pub fn register_secrets(&self) {
        crate::scrub::register(&self.access_token);
        if let Some(rt) = &self.refresh_token {
            crate::scrub::register(rt);
        }
    }

    /// True when the access token is still valid `margin` seconds after `now`.
    #[must_use]
    pub fn valid_for(&self, now: u64, margin: u64) -> bool {
        self.expires_at > now.saturating_add(margin)
    }
}

/// One account's token cache.
#[derive(Debug)]
pub struct TokenStore {
    account: String,
    dir: PathBuf,
    file: PathBuf,
    lock_file: PathBuf,
    encrypt: Option<CommandSpec>,
    decrypt: Option<CommandSpec>,
    /// `token_store = "keyring"`: the file is sealed with a data key from the keyring.
    keyring: bool,
}

/// The account's exclusive lock; released when dropped.
#[derive(Debug)]
pub struct TokenLock {
    _file: File,
}

impl TokenStore {
    /// The cache of `account`, in the XDG data folder.
    pub fn new(account: &AccountSettings) -> Result<TokenStore> {
        let dir = paths::token_dir()
            .ok_or_else(|| Error::config("cannot find a home directory for the token cache"))?;
        let mut store = TokenStore::in_dir(
            &dir,
            &account.name,
            account.config.token_encrypt_cmd.clone(),
            account.config.token_decrypt_cmd.clone(),
        )?;
        if account.config.token_store == crate::config::TokenStoreKind::Keyring {
            if store.encrypt.is_some() {
                return Err(Error::config(format!(
                    "account {}: token_store = \"keyring\" already seals the token file: drop \
                     `token_encrypt_cmd` and `token_decrypt_cmd`, or use token_store = \"file\"",
                    account.name
                )));
            }
            store.keyring = true;
        }
        Ok(store)
    }

    /// The cache of `account` in `dir`, with optional encryption commands.
    pub fn in_dir(
        dir: &Path,
        account: &str,
        encrypt: Option<CommandSpec>,
        decrypt: Option<CommandSpec>,
    ) -> Result<TokenStore> {
        let unsafe_name =
            account.is_empty() || account.starts_with('.') || account.contains(['/', '\\', '\0']);
        if unsafe_name {
            return Err(Error::config(format!(
                "account name `{}` cannot name a token file: use letters, digits, `-` or `_`",
                account.escape_debug()
            )));
        }
        if encrypt.is_some() != decrypt.is_some() {
            return Err(Error::config(format!(
                "account {account}: `token_encrypt_cmd` and `token_decrypt_cmd` must be set together"
            )));
        }
        Ok(TokenStore {
            account: account.to_owned(),
            dir: dir.to_owned(),
            file: dir.join(format!("{account}.json")),
            lock_file: dir.join(format!("{account}.lock")),
            encrypt,
            decrypt,
            keyring: false,
        })
    }

    /// The same account's Microsoft Graph token: `graph/ACCOUNT.json` below the folder of
    /// `ACCOUNT.json` (no account's own cache can have that path: names hold no `/`), in
    /// the same format, under the same lock (the two share one refresh token, kept in
    /// `ACCOUNT.json`).
    #[must_use]
    pub fn graph(&self) -> TokenStore {
        let dir = self.dir.join("graph");
        TokenStore {
            account: self.account.clone(),
            file: dir.join(format!("{}.json", self.account)),
            dir,
            lock_file: self.lock_file.clone(),
            encrypt: self.encrypt.clone(),
            decrypt: self.decrypt.clone(),
            keyring: self.keyring,
        }
    }

    /// The token file.
    #[must_use]
    #[allow(dead_code, reason = "for `login` and tests")]
    pub fn path(&self) -> &Path {
        &self.file
    }

    /// The stored tokens, or `None` when there are none. Takes no lock.
    pub fn load(&self) -> Result<Option<StoredToken>> {
        if !self.dir.exists() {
            return Ok(None);
        }
        // A folder another user owns or may write could hold anyone's tokens.
        private_dir::check_dir(&self.dir, "token folder")?;
        let raw = match private_dir::read(&self.file) {
            Ok(raw) => raw,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::io(format!(
                    "cannot read the token file {}: {e}",
                    self.file.display()
                )));
            }
        };
        let sealed = crate::keyring::seal::is_sealed(&raw);
        let json = match &self.decrypt {
            // token_store = "keyring"; a plain file left by token_store = "file" still reads
            // (the next save seals it).
            _ if sealed && self.keyring => {
                let key = crate::keyring::data_key(&self.account)?.ok_or_else(|| {
                    Error::token(
                        crate::error::TokenClass::NeedsLogin,
                        format!(
                            "the keyring holds no key for the token file of account {a}: run \
                             `oauth2-sendmail login {a}`",
                            a = self.account
                        ),
                    )
                })?;
                crate::keyring::seal::open(&self.account, &key, &raw)?
            }
            _ if sealed => {
                return Err(Error::config(format!(
                    "the token file {} is sealed with a key in the keyring, but account {a} has \
                     token_store = \"file\": set token_store = \"keyring\", or run \
                     `oauth2-sendmail login {a}` to store the tokens in a plain file",
                    self.file.display(),
                    a = self.account
                )));
            }
            Some(cmd) => match cmd.run(
                "token_decrypt_cmd",
                Some(&raw),
                &[],
                crate::command::TOKEN_OUTPUT,
            ) {
                Ok(json) => json,
                // Encryption turned on after a login: the file still holds the plain JSON.
                Err(e) => match serde_json::from_slice::<StoredToken>(&raw) {
                    Ok(plain) => return Ok(Some(self.encrypt_plain(&raw, plain))),
                    Err(_) => return Err(e),
                },
            },
            None => raw,
        };
        let token: StoredToken = serde_json::from_slice(&json).map_err(|e| {
            // Only the position: serde's own message may quote the file's contents.
            Error::io(format!(
                "the token file {} is not a valid token cache ({:?} error at line {}, column {}): \
                 run `oauth2-sendmail logout {a}` and `oauth2-sendmail login {a}`",
                self.file.display(),
                e.classify(),
                e.line(),
                e.column(),
                a = self.account,
            ))
        })?;
        token.register_secrets();
        Ok(Some(token))
    }

    /// Tokens read from a plain-JSON file while `token_decrypt_cmd` is set (encryption was
    /// turned on after the login): used, and written again through `token_encrypt_cmd` when
    /// no other process holds the account (one that does will save them encrypted anyway),
    /// with a line saying so. A failure to encrypt is said and leaves the file as it was.
    fn encrypt_plain(&self, raw: &[u8], token: StoredToken) -> StoredToken {
        token.register_secrets();
        let Ok(Some(_lock)) = self.try_lock() else {
            return token;
        };
        // Under the lock: only the file we read is replaced, never newer tokens.
        if private_dir::read(&self.file).ok().as_deref() != Some(raw) {
            return token;
        }
        match self.save(&token) {
            Ok(()) => crate::stderr::account(
                &self.account,
                &format!(
                    "the token file {} held plain JSON; it is now encrypted with token_encrypt_cmd",
                    self.file.display()
                ),
            ),
            Err(e) => crate::stderr::account(
                &self.account,
                &format!(
                    "the token file {} holds plain JSON and could not be encrypted: {e}",
                    self.file.display()
                ),
            ),
        }
        token
    }

    /// Replaces the stored tokens atomically (temp file, fsync, rename, fsync the folder).
    pub fn save(&self, token: &StoredToken) -> Result<()> {
        self.ensure_dir()?;
        let json = serde_json::to_vec_pretty(token)
            .map_err(|e| Error::internal(format!("cannot encode the token cache: {e}")))?;
        token.register_secrets();
        let data = match (&self.encrypt, &self.decrypt) {
            (Some(encrypt), Some(decrypt)) => {
                let data = encrypt.run(
                    "token_encrypt_cmd",
                    Some(&json),
                    &[],
                    crate::command::TOKEN_OUTPUT,
                )?;
                // The file is only replaced by something that reads back: an encrypt command
                // that printed nothing (or garbage) must not cost the refresh token.
                let back = decrypt.run(
                    "token_decrypt_cmd",
                    Some(&data),
                    &[],
                    crate::command::TOKEN_OUTPUT,
                )?;
                let same = serde_json::from_slice::<StoredToken>(&back).is_ok_and(|t| t == *token);
                if !same {
                    return Err(Error::config(format!(
                        "account {}: what token_encrypt_cmd printed ({} bytes) does not decrypt back                          to the tokens with token_decrypt_cmd; the token file was not replaced: check                          both commands",
                        self.account,
                        data.len()
                    )));
                }
                data
            }
            _ if self.keyring => {
                let key = crate::keyring::data_key_or_new(&self.account)?;
                crate::keyring::seal::seal(&self.account, &key, &json)?
            }
            _ => {
                let mut json = json;
                json.push(b'\n');
                json
            }
        };
        let name = self.file.file_name().unwrap_or_default().to_string_lossy();
        let tmp = self.dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let io_error = |what: &str, e: io::Error| {
            Error::io(format!(
                "cannot save the token cache: {what} {}: {e}",
                self.dir.display()
            ))
        };
        let written = (|| {
            // A leftover from a killed process with our pid would only be ours; replace it.
            let _ = fs::remove_file(&tmp);
            let mut file =
                private_dir::open(&tmp, OpenOptions::new().write(true).create_new(true))?;
            file.write_all(&data)?;
            file.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_error("writing a temporary file in", e));
        }
        if let Err(e) = fs::rename(&tmp, &self.file) {
            let _ = fs::remove_file(&tmp);
            return Err(io_error("renaming a temporary file in", e));
        }
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error("syncing", e))
    }

    /// Waits for the account's exclusive lock (blocking: call it off the async thread).
    pub fn lock(&self) -> Result<TokenLock> {
        self.ensure_dir()?;
        let file = self.open_lock_file()?;
        file.lock()
            .map_err(|e| Error::io(format!("cannot lock {}: {e}", self.lock_file.display())))?;
        Ok(TokenLock { _file: file })
    }

    /// The account's exclusive lock if no one holds it now.
    pub fn try_lock(&self) -> Result<Option<TokenLock>> {
        self.ensure_dir()?;
        let file = self.open_lock_file()?;
        match file.try_lock() {
            Ok(()) => Ok(Some(TokenLock { _file: file })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(Error::io(format!(
                "cannot lock {}: {e}",
                self.lock_file.display()
            ))),
        }
    }

    fn open_lock_file(&self) -> Result<File> {
        private_dir::open(
            &self.lock_file,
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
        )
        .map_err(|e| {
            Error::io(format!(
                "cannot open the lock file {}: {e}",
                self.lock_file.display()
            ))
        })
    }

    /// Deletes the stored tokens (and, with `token_store = "keyring"`, the account's key in
    /// the keyring); false when there were none.
    pub fn remove(&self) -> Result<bool> {
        let key_deleted = self.keyring && crate::keyring::delete(&self.account)?;
        match fs::remove_file(&self.file) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(key_deleted),
            Err(e) => {
                return Err(Error::io(format!(
                    "cannot delete the token file {}: {e}",
                    self.file.display()
                )));
            }
        }
        if let Ok(dir) = File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(true)
    }

    /// Creates the token folder `0700`, narrows it to `0700` when others may only read it,
    /// and refuses one that another user owns or that others may write.
    fn ensure_dir(&self) -> Result<()> {
        // The token folder (where the lock lives) and, for the Graph cache, its `graph/`.
        let lock_dir = self.lock_file.parent().unwrap_or(&self.dir);
        private_dir::ensure_dir(lock_dir, "token folder")?;
        private_dir::ensure_dir(&self.dir, "token folder")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn token(at: &str, rt: Option<&str>) -> StoredToken {
        StoredToken {
            access_token: at.into(),
            expires_at: 1_767_225_600,
            refresh_token: rt.map(str::to_owned),
            token_type: Some("Bearer".into()),
            scope: Some("a b".into()),
            obtained_at: Some(1_767_222_000),
            identity: None,
            requested: None,
            flow: None,
        }
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn save_creates_0600_in_0700_and_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data/oauth2-sendmail/tokens");
        let store = TokenStore::in_dir(&dir, "work", None, None).unwrap();
        assert!(store.load().unwrap().is_none());
        let t = token("at-1", Some("rt-1"));
        store.save(&t).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(store.path()), 0o600);
        assert_eq!(store.load().unwrap(), Some(t.clone()));
        // Replacing keeps the mode and leaves no temporary file behind.
        store.save(&token("at-2", Some("rt-2"))).unwrap();
        assert_eq!(mode(store.path()), 0o600);
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["work.json"], "no temp file left");
        assert_eq!(store.load().unwrap().unwrap().access_token, "at-2");
        assert!(store.remove().unwrap());
        assert!(!store.remove().unwrap());
        assert!(store.load().unwrap().is_none());
    }

    #[test]
    fn the_graph_cache_cannot_be_another_accounts_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("tokens");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let work = TokenStore::in_dir(&dir, "work", None, None).unwrap();
        // An account may be named `work.graph`: its own cache is not `work`'s Graph cache.
        let dotted = TokenStore::in_dir(&dir, "work.graph", None, None).unwrap();
        assert_ne!(work.graph().path(), dotted.path());
        assert_ne!(work.graph().path(), dotted.graph().path());
        assert_eq!(work.graph().path(), dir.join("graph/work.json"));
        work.graph().save(&token("graph-at", None)).unwrap();
        dotted.save(&token("smtp-at", Some("rt"))).unwrap();
        assert_eq!(
            work.graph().load().unwrap().unwrap().access_token,
            "graph-at"
        );
        assert_eq!(dotted.load().unwrap().unwrap().access_token, "smtp-at");
        // Both folders private; the Graph cache shares the account's lock.
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("graph")), 0o700);
        assert_eq!(mode(work.graph().path()), 0o600);
        assert_eq!(work.graph().lock_file, work.lock_file);
        assert!(work.graph().remove().unwrap());
        assert!(dotted.load().unwrap().is_some());
    }

    #[test]
    fn a_wide_folder_is_narrowed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("tokens");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let store = TokenStore::in_dir(&dir, "w", None, None).unwrap();
        store.save(&token("a", None)).unwrap();
        assert_eq!(mode(&dir), 0o700);
        fs::set_permissions(store.path(), fs::Permissions::from_mode(0o644)).unwrap();
        assert!(store.load().unwrap().is_some());
        assert_eq!(
            mode(store.path()),
            0o600,
            "a readable file is narrowed on read"
        );
    }

    #[test]
    fn the_documented_format_with_unknown_fields_is_read() {
        let tmp = tempfile::tempdir().unwrap();
        let store = TokenStore::in_dir(tmp.path(), "w", None, None).unwrap();
        fs::write(
            store.path(),
            r#"{"access_token":"at","expires_at":5,"refresh_token":"rt","note":"mine","ext_expires_in":7}"#,
        )
        .unwrap();
        let t = store.load().unwrap().unwrap();
        assert_eq!((t.access_token.as_str(), t.expires_at), ("at", 5));
        assert_eq!(t.refresh_token.as_deref(), Some("rt"));
        assert_eq!(t.obtained_at, None);
        // Written in the documented order, for people who read the file.
        let text = String::from_utf8(serde_json::to_vec(&token("x", Some("y"))).unwrap()).unwrap();
        let fields = [
            "access_token",
            "expires_at",
            "refresh_token",
            "token_type",
            "scope",
            "obtained_at",
        ];
        let at: Vec<usize> = fields
            .iter()
            .map(|f| text.find(&format!("\"{f}\":")).unwrap())
            .collect();
        assert!(at.is_sorted(), "{text}");
    }

    #[test]
    fn a_corrupt_file_is_an_error_that_does_not_quote_it() {
        let tmp = tempfile::tempdir().unwrap();
        let store = TokenStore::in_dir(tmp.path(), "w", None, None).unwrap();
        fs::write(
            store.path(),
            r#"{"access_token":"sekrit-token","expires_at":"soon"}"#,
        )
        .unwrap();
        let e = store.load().unwrap_err().to_string();
        assert!(!e.contains("sekrit"), "{e}");
        assert!(e.contains("oauth2-sendmail login w"), "{e}");
    }

    #[test]
    fn debug_is_redacted() {
        let s = format!("{:?}", token("at-secret", Some("rt-secret")));
        assert!(!s.contains("at-secret") && !s.contains("rt-secret"), "{s}");
    }

    #[test]
    fn encrypted_round_trip_with_real_commands() {
        let tmp = tempfile::tempdir().unwrap();
        let enc = CommandSpec::Line("openssl enc -aes-256-cbc -pbkdf2 -pass pass:x".into());
        let dec = CommandSpec::Args(
            [
                "openssl",
                "enc",
                "-d",
                "-aes-256-cbc",
                "-pbkdf2",
                "-pass",
                "pass:x",
            ]
            .map(str::to_owned)
            .to_vec(),
        );
        let store = TokenStore::in_dir(tmp.path(), "w", Some(enc), Some(dec)).unwrap();
        let t = token("at-plain", Some("rt-plain"));
        store.save(&t).unwrap();
        let raw = fs::read(store.path()).unwrap();
        assert!(raw.starts_with(b"Salted__"), "openssl's output is stored");
        assert!(!String::from_utf8_lossy(&raw).contains("rt-plain"));
        assert_eq!(mode(store.path()), 0o600);
        assert_eq!(store.load().unwrap(), Some(t));

        // A failing decrypt command is an error, not an empty cache.
        let bad = TokenStore::in_dir(
            tmp.path(),
            "w",
            Some(CommandSpec::Line("cat".into())),
            Some(CommandSpec::Line("sh -c 'exit 2'".into())),
        )
        .unwrap();
        assert_eq!(bad.load().unwrap_err().exit_code(), 78);
        // A failing encrypt command leaves the old file as it was.
        let bad = TokenStore::in_dir(
            tmp.path(),
            "w",
            Some(CommandSpec::Line("false".into())),
            Some(CommandSpec::Line("cat".into())),
        )
        .unwrap();
        assert!(bad.save(&token("new", None)).is_err());
        assert_eq!(fs::read(store.path()).unwrap(), raw);
    }

    #[test]
    fn only_one_of_the_commands_or_a_path_like_name_is_refused() {
        let d = Path::new("/nonexistent");
        let cat = || Some(CommandSpec::Line("cat".into()));
        assert_eq!(
            TokenStore::in_dir(d, "w", cat(), None)
                .unwrap_err()
                .exit_code(),
            78
        );
        for name in ["", "../x", "a/b", ".hidden"] {
            assert!(TokenStore::in_dir(d, name, None, None).is_err(), "{name:?}");
        }
    }

    #[test]
    fn the_lock_is_exclusive_across_open_files() {
        let tmp = tempfile::tempdir().unwrap();
        let a = TokenStore::in_dir(tmp.path(), "w", None, None).unwrap();
        let b = TokenStore::in_dir(tmp.path(), "w", None, None).unwrap();
        let other = TokenStore::in_dir(tmp.path(), "v", None, None).unwrap();
        let held = a.lock().unwrap();
        assert_eq!(mode(&tmp.path().join("w.lock")), 0o600);
        assert!(b.try_lock().unwrap().is_none(), "second holder refused");
        assert!(other.try_lock().unwrap().is_some(), "locks are per account");
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let _l = b.lock().unwrap();
            tx.send(()).unwrap();
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(200))
                .is_err(),
            "waits"
        );
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        waiter.join().unwrap();
    }
}
