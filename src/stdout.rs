//! Writing what a command answers to stdout, with a failed write (a closed pipe, a full
//! disk) turned into an error and an exit code rather than a panic.

use std::io::Write as _;

use crate::error::{Error, Result};

/// Writes `text` to stdout as it is.
pub fn print(text: &str) -> Result<()> {
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(|e| Error::io(format!("cannot write to stdout: {e}")))
}
