//! `token_store = "keyring"`: a small per-account data key lives in the desktop's keyring
//! (the freedesktop Secret Service: GNOME Keyring, `KWallet`), and the documented token file
//! holds the token JSON sealed with it (AES-256-GCM, `ring`). Only 32 bytes sit in the
//! keyring: no item size limit can cut a rotated refresh token short, the file keeps its
//! atomic writes, its lock and its backups, and `status` still reads it.
//!
//! Never a silent fallback to a plain file: a locked keyring is a temporary failure (75,
//! the message is queued until a session unlocks it), and no Secret Service on the session
//! bus (cron, SSH without a session) is a configuration error (78); both name the store and
//! what to do. Nothing here prompts: a prompt would hang a cron job.
//!
//! The Secret Service is spoken through the `secret-service` crate (zbus, pure-Rust session
//! encryption): it reports a locked collection or item as such, without prompting, which is
//! what the two failures above need. The macOS Keychain is not built in yet.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use crate::error::{Error, Result, TokenClass};

/// The attributes that find an account's key.
const APPLICATION: &str = "oauth2-sendmail";
/// How long one conversation with the Secret Service may take.
const WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Keys already read by this process (a send reads its key once).
fn cache() -> &'static Mutex<HashMap<String, Vec<u8>>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Vec<u8>>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The account's data key, if the keyring holds one.
pub fn data_key(account: &str) -> Result<Option<Vec<u8>>> {
    if let Some(key) = cache().lock().ok().and_then(|c| c.get(account).cloned()) {
        return Ok(Some(key));
    }
    let key = run(account, Op::Find)?;
    if let (Some(k), Ok(mut c)) = (&key, cache().lock()) {
        c.insert(account.to_owned(), k.clone());
    }
    Ok(key)
}

/// The account's data key, created (32 random bytes) when the keyring holds none.
pub fn data_key_or_new(account: &str) -> Result<Vec<u8>> {
    if let Some(key) = data_key(account)? {
        return Ok(key);
    }
    let key = run(account, Op::Create)?.unwrap_or_default();
    if let Ok(mut c) = cache().lock() {
        c.insert(account.to_owned(), key.clone());
    }
    Ok(key)
}

/// Deletes the account's key; false when there was none.
pub fn delete(account: &str) -> Result<bool> {
    if let Ok(mut c) = cache().lock() {
        c.remove(account);
    }
    Ok(run(account, Op::Delete)?.is_some())
}

#[derive(Clone, Copy)]
enum Op {
    Find,
    Create,
    Delete,
}

/// Runs `op` on a thread of its own with its own runtime, so that it works from plain code
/// and from the blocking threads of the send path alike.
fn run(account: &str, op: Op) -> Result<Option<Vec<u8>>> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| Error::internal(format!("cannot start a runtime: {e}")))?;
                runtime.block_on(async {
                    match tokio::time::timeout(WAIT, platform::op(account, op)).await {
                        Ok(r) => r,
                        Err(_) => Err(Error::token(
                            TokenClass::Transient,
                            format!(
                                "token_store = \"keyring\": the Secret Service did not answer within {} s; try again later",
                                WAIT.as_secs()
                            ),
                        )),
                    }
                })
            })
            .join()
            .unwrap_or_else(|_| Err(Error::internal("the keyring thread panicked")))
    })
}

/// A locked keyring: temporary (a session will unlock it), and the message is queued.
fn locked() -> Error {
    Error::token(
        TokenClass::Transient,
        "token_store = \"keyring\": the keyring (Secret Service) is locked: unlock it (log in to \
         the desktop session, or run `gnome-keyring-daemon --unlock`); queued mail goes at the \
         next `oauth2-sendmail -q`",
    )
}

/// No Secret Service: nothing will unlock it; the configuration must change.
fn unavailable(detail: &str) -> Error {
    Error::config(format!(
        "token_store = \"keyring\": no Secret Service on the session bus ({detail}): run it in a \
         desktop session with GNOME Keyring or KWallet, or set token_store = \"file\" for cron \
         and SSH (then `oauth2-sendmail login`)"
    ))
}

#[cfg(target_os = "linux")]
mod platform {
    use std::collections::HashMap;

    use secret_service::{EncryptionType, Error as SsError, SecretService};

    use super::{APPLICATION, Op, locked, unavailable};
    use crate::error::{Error, Result};

    fn failed(e: &SsError) -> Error {
        match e {
            SsError::Locked | SsError::Prompt | SsError::PromptDisconnected => locked(),
            SsError::Unavailable | SsError::Zbus(_) | SsError::ZbusFdo(_) => {
                unavailable(&crate::scrub::for_output(&e.to_string(), 300))
            }
            other => Error::io(format!(
                "token_store = \"keyring\": the Secret Service failed: {}",
                crate::scrub::for_output(&other.to_string(), 300)
            )),
        }
    }

    pub async fn op(account: &str, op: Op) -> Result<Option<Vec<u8>>> {
        if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none()
            && std::env::var_os("XDG_RUNTIME_DIR").is_none()
        {
            return Err(unavailable("DBUS_SESSION_BUS_ADDRESS is not set"));
        }
        let service = SecretService::connect(EncryptionType::Dh)
            .await
            .map_err(|e| failed(&e))?;
        let attributes = HashMap::from([("application", APPLICATION), ("account", account)]);
        let found = service
            .search_items(attributes.clone())
            .await
            .map_err(|e| failed(&e))?;
        match op {
            Op::Find | Op::Create => {
                if let Some(item) = found.unlocked.first() {
                    let secret = item.get_secret().await.map_err(|e| failed(&e))?;
                    return Ok(Some(secret));
                }
                if !found.locked.is_empty() {
                    return Err(locked());
                }
                if matches!(op, Op::Find) {
                    return Ok(None);
                }
                // The default collection (the login keyring), by its alias.
                let collection = match service.get_default_collection().await {
                    Err(SsError::NoResult) => service.get_collection_by_alias("login").await,
                    other => other,
                }
                .map_err(|e| match e {
                    SsError::NoResult => {
                        unavailable("it has no default collection to keep the key in")
                    }
                    e => failed(&e),
                })?;
                if collection.is_locked().await.map_err(|e| failed(&e))? {
                    return Err(locked());
                }
                let mut key = vec![0u8; 32];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
                    .map_err(|_| Error::internal("no random numbers for the data key"))?;
                collection
                    .create_item(
                        &format!("oauth2-sendmail: token key of account {account}"),
                        attributes,
                        &key,
                        true,
                        "application/octet-stream",
                    )
                    .await
                    .map_err(|e| failed(&e))?;
                Ok(Some(key))
            }
            Op::Delete => {
                if !found.locked.is_empty() {
                    return Err(locked());
                }
                let mut any = false;
                for item in &found.unlocked {
                    item.delete().await.map_err(|e| failed(&e))?;
                    any = true;
                }
                Ok(any.then(Vec::new))
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod platform {
    use super::{Op, unavailable};
    use crate::error::Result;

    pub async fn op(_account: &str, _op: Op) -> Result<Option<Vec<u8>>> {
        Err(unavailable(
            "only the freedesktop Secret Service is built in on this platform",
        ))
    }
}

/// The sealed token file: `{"sealed_with": "keyring", "nonce": …, "ciphertext": …}`
/// (base64), AES-256-GCM with the account's data key and the account's name as associated
/// data (a file copied to another account does not open).
pub mod seal {
    use base64::Engine as _;
    use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    use serde::{Deserialize, Serialize};

    use crate::error::{Error, Result};

    #[derive(Serialize, Deserialize)]
    struct SealedFile {
        sealed_with: String,
        nonce: String,
        ciphertext: String,
    }

    fn aad(account: &str) -> String {
        format!("oauth2-sendmail token cache of account {account}")
    }

    fn key(bytes: &[u8]) -> Result<LessSafeKey> {
        UnboundKey::new(&AES_256_GCM, bytes)
            .map(LessSafeKey::new)
            .map_err(|_| Error::io("the keyring's data key is not 32 bytes: run `oauth2-sendmail logout` and `login`"))
    }

    /// True when `raw` is a sealed file (not plain token JSON).
    #[must_use]
    pub fn is_sealed(raw: &[u8]) -> bool {
        serde_json::from_slice::<SealedFile>(raw).is_ok_and(|s| s.sealed_with == "keyring")
    }

    pub fn seal(account: &str, data_key: &[u8], json: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; 12];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
            .map_err(|_| Error::internal("no random numbers for the nonce"))?;
        let mut data = json.to_vec();
        key(data_key)?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(account)),
                &mut data,
            )
            .map_err(|_| Error::internal("cannot seal the token cache"))?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut out = serde_json::to_vec_pretty(&SealedFile {
            sealed_with: "keyring".into(),
            nonce: b64.encode(nonce),
            ciphertext: b64.encode(data),
        })
        .map_err(|e| Error::internal(e.to_string()))?;
        out.push(b'\n');
        Ok(out)
    }

    pub fn open(account: &str, data_key: &[u8], raw: &[u8]) -> Result<Vec<u8>> {
        let bad = || {
            Error::io(format!(
                "the token file of account {account} does not open with the keyring's key: run \
                 `oauth2-sendmail login {account}`"
            ))
        };
        let sealed: SealedFile = serde_json::from_slice(raw).map_err(|_| bad())?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let nonce: [u8; 12] = b64
            .decode(&sealed.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(bad)?;
        let mut data = b64.decode(&sealed.ciphertext).map_err(|_| bad())?;
        let plain = key(data_key)?
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(account)),
                &mut data,
            )
            .map_err(|_| bad())?;
        Ok(plain.to_vec())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn sealed_tokens_open_with_the_key_and_account_only() {
            let key = [7u8; 32];
            let json = br#"{"access_token":"at","expires_at":1}"#;
            let sealed = seal("work", &key, json).unwrap();
            assert!(is_sealed(&sealed));
            assert!(!is_sealed(json));
            assert!(!String::from_utf8_lossy(&sealed).contains("access_token"));
            assert_eq!(open("work", &key, &sealed).unwrap(), json);
            assert!(open("home", &key, &sealed).is_err(), "another account");
            assert!(open("work", &[8u8; 32], &sealed).is_err(), "another key");
        }
    }
}
