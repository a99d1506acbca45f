//! Reading HTTP answers without trusting their size: every HTTP caller (the token and
//! device-code endpoints, Microsoft Graph) reads a body through `read_body`, which stops at
//! a limit, and reports transport errors on one line.

use std::fmt;

/// Largest HTTP answer body read from a token, device-code or Graph endpoint. Real answers
/// are a few KiB (a token response with an `id_token` is under 10 KiB); anything past this is
/// a broken or hostile peer, and reading stops at once.
pub const MAX_BODY: usize = 1024 * 1024;

/// Why an answer's body could not be read whole.
#[derive(Debug)]
pub enum BodyError {
    /// More than the limit (announced by `Content-Length` or counted while reading).
    TooLarge(usize),
    /// The transport failed mid-body (the error on one line, without the URL).
    Read(String),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::TooLarge(limit) => {
                write!(
                    f,
                    "the answer is larger than {limit} bytes; reading stopped"
                )
            }
            BodyError::Read(e) => f.write_str(e),
        }
    }
}

/// Reads a response body chunk by chunk, stopping as soon as it exceeds `limit` bytes: an
/// endless or huge body costs at most `limit` bytes of memory. Every HTTP caller (token,
/// device code, Graph) reads its answers through this.
pub async fn read_body(
    mut response: reqwest::Response,
    limit: usize,
) -> std::result::Result<Vec<u8>, BodyError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge(limit));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| BodyError::Read(one_line(&e.without_url())))?
    {
        if body.len().saturating_add(chunk.len()) > limit {
            return Err(BodyError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// An error and its causes on one line.
pub fn one_line(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text.replace(['\r', '\n'], " ")
}
