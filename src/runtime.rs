//! The async runtime every network step runs on.

use crate::error::{Error, Result};

/// A single-threaded runtime: one process sends one message; the token refresh and the
/// SMTP set-up overlap as tasks on it.
pub fn single_threaded() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("cannot start the runtime: {e}")))
}
