//! Placeholder: replaced by the oauth work. The interface:

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::provider::AccountSettings;

/// The token file's JSON object (a documented, stable format).
#[derive(Clone, Serialize, Deserialize)]
pub struct StoredToken {
    pub access_token: String,
    /// Unix seconds.
    pub expires_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// When the token endpoint last issued these tokens (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub obtained_at: Option<u64>,
}

pub struct TokenStore {}

impl TokenStore {
    pub fn new(account: &AccountSettings) -> Result<TokenStore> {
        let _ = account;
        unimplemented!()
    }
    pub fn load(&self) -> Result<Option<StoredToken>> {
        unimplemented!()
    }
    /// Deletes the stored tokens; false when there were none.
    pub fn remove(&self) -> Result<bool> {
        unimplemented!()
    }
}
