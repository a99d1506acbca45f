//! OAuth2 tokens: the cache on disk (`store`), the HTTP grants against the identity
//! platform (`grants`), and the one question the send path asks: a valid access token.

pub mod authcode;
pub mod grants;
pub mod store;

use crate::error::Result;
use crate::provider::AccountSettings;

/// An access token ready for XOAUTH2.
#[derive(Clone)]
pub struct AccessToken {
    pub secret: String,
    /// Unix seconds.
    pub expires_at: u64,
    /// True when this call got it from the token endpoint (not the cache): a server that
    /// refuses a fresh token will not accept another one either.
    pub fresh: bool,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccessToken(<redacted>, expires_at {})", self.expires_at)
    }
}

/// A valid access token for the account: from the cache when it is valid for a while yet,
/// else refreshed under the account's lock (the rotated refresh token saved atomically).
/// `reject` is a token the server has just refused: the result will not be that one.
pub async fn access_token(account: &AccountSettings, reject: Option<&str>) -> Result<AccessToken> {
    let _ = (account, reject);
    unimplemented!()
}
