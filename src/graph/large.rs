//! Microsoft Graph above its 4 MB request limit: the message as a draft, its large
//! attachments added apart, then the draft sent, as Microsoft documents for large files
//! (<https://learn.microsoft.com/graph/outlook-large-attachments>).
//!
//! ```text
//! split (mime_split): the message less its largest attachments ≤ 4 MB of base64
//! POST {mailbox}/messages           text/plain, base64 MIME   ─► 201 {id}   (Mail.ReadWrite)
//! each attachment < 3 MB:  POST {mailbox}/messages/{id}/attachments  (fileAttachment)
//! each attachment ≥ 3 MB:  POST …/attachments/createUploadSession ─► {uploadUrl}
//!                          PUT uploadUrl, Content-Range, ≤ 4 MB a range, no bearer token
//!                          (a failed range: ask the session where to resume)
//! POST {mailbox}/messages/{id}/send ─► 202
//! any failure before the send: DELETE {mailbox}/messages/{id}
//! ```
//!
//! Only the last request can send the message, so only its lost answer is "may have been
//! delivered"; every earlier failure leaves nothing sent and no draft behind.

use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use serde_json::json;

use super::{Answer, Body, Client, MAX_REQUEST_BYTES, Receipt, Request};
use crate::error::{Error, Result};
use crate::mime_split::{self, Detached, Unsplittable};
use crate::spool::Payload;

/// Graph attaches files up to 150 MB (upload sessions).
pub const MAX_ATTACHMENT: usize = 150 * 1024 * 1024;
/// Below this an attachment goes in one `POST …/attachments` (Microsoft: "under 3 MB"); the
/// base64 of 3,000,000 bytes plus its JSON stays under the 4 MB request limit.
const SMALL_ATTACHMENT: usize = 3_000_000;
/// One upload range: "up to 4 MB each time", read as the smaller of 4 MB and 4 MiB.
pub const RANGE: usize = 4_000_000;
/// Failed ranges tolerated per attachment before the message is given up for now.
const RANGE_RETRIES: u32 = 3;

/// Refuses (65) a message holding a file above 150 MB, read as a stream before the copy
/// for Graph is made: such a message costs no more memory than the scan's buffer.
pub fn refuse_oversized(message: &Payload<'_>) -> Result<()> {
    use std::io::Read as _;
    let io = |e: std::io::Error| Error::io(format!("cannot read the message to send: {e}"));
    let Some((start, size)) =
        mime_split::oversized_run(message.reader(), MAX_ATTACHMENT).map_err(io)?
    else {
        return Ok(());
    };
    // The part's name is in the lines just above its body.
    let above = start.min(4096);
    let mut reader = message.reader();
    std::io::copy(&mut (&mut reader).take(start - above), &mut std::io::sink()).map_err(io)?;
    let mut header = vec![0; usize::try_from(above).unwrap_or(0)];
    reader.read_exact(&mut header).map_err(io)?;
    Err(too_large(Unsplittable::AttachmentTooLarge {
        name: mime_split::name_before(&header),
        size,
    }))
}

/// Sends `mime` (the copy with the envelope) as a draft with its attachments added apart.
pub async fn send(client: &mut Client, mime: Vec<u8>) -> Result<Receipt> {
    let split = mime_split::split(&mime, MAX_REQUEST_BYTES, MAX_ATTACHMENT).map_err(too_large)?;
    drop(mime);
    let mailbox = client.mailbox_url();
    let draft = create_draft(client, &mailbox, split.draft).await?;
    let message = format!("{mailbox}/messages/{draft}");
    let attached = attach_all(client, &message, split.detached).await;
    if let Err(e) = attached {
        delete_draft(client, &message).await;
        return Err(e);
    }
    let url = format!("{message}/send");
    let answer = client
        .authorized(Request {
            content_type: None,
            ..Request::post(&url, "", None)
        })
        .await?;
    if (200..300).contains(&answer.status) {
        return Ok(Receipt {
            status: answer.status,
            request_id: answer.request_id,
        });
    }
    // Refused: nothing was sent, and the draft would linger.
    let error = client.refusal(&answer, "Mail.Send");
    delete_draft(client, &message).await;
    Err(error)
}

/// The draft from the MIME message (less its large attachments): its id.
async fn create_draft(client: &mut Client, mailbox: &str, draft: Vec<u8>) -> Result<String> {
    let url = format!("{mailbox}/messages");
    let answer = client
        .authorized(Request::step(
            Method::POST,
            &url,
            Some("text/plain"),
            Some(Body::Base64(Bytes::from(draft))),
        ))
        .await?;
    if answer.status != 201 && answer.status != 200 {
        return Err(client.refusal(&answer, "Mail.ReadWrite"));
    }
    json_field(&answer, "id").ok_or_else(|| odd_answer(client, "the new draft has no id"))
}

/// Adds every detached attachment to the draft `message` (its URL).
async fn attach_all(client: &mut Client, message: &str, detached: Vec<Detached>) -> Result<()> {
    for attachment in detached {
        if attachment.bytes.len() < SMALL_ATTACHMENT {
            attach_small(client, message, &attachment).await?;
        } else {
            attach_large(client, message, attachment).await?;
        }
    }
    Ok(())
}

/// One `fileAttachment` with its bytes in base64.
async fn attach_small(client: &mut Client, message: &str, a: &Detached) -> Result<()> {
    use base64::Engine as _;
    let mut item = json!({
        "@odata.type": "#microsoft.graph.fileAttachment",
        "name": a.name,
        "contentType": a.content_type,
        "isInline": a.is_inline,
        "contentBytes": base64::engine::general_purpose::STANDARD.encode(&a.bytes),
    });
    if let Some(id) = &a.content_id {
        item["contentId"] = json!(id);
    }
    let url = format!("{message}/attachments");
    let answer = client
        .authorized(Request::step(
            Method::POST,
            &url,
            Some("application/json"),
            Some(Body::Raw(Bytes::from(item.to_string()))),
        ))
        .await?;
    if (200..300).contains(&answer.status) {
        Ok(())
    } else {
        Err(client.refusal(&answer, "Mail.ReadWrite"))
    }
}

/// An upload session for one large attachment, then its bytes in ranges.
async fn attach_large(client: &mut Client, message: &str, a: Detached) -> Result<()> {
    let mut item = json!({
        "attachmentType": "file",
        "name": a.name,
        "size": a.bytes.len(),
        "contentType": a.content_type,
        "isInline": a.is_inline,
    });
    if let Some(id) = &a.content_id {
        item["contentId"] = json!(id);
    }
    let url = format!("{message}/attachments/createUploadSession");
    let answer = client
        .authorized(Request::step(
            Method::POST,
            &url,
            Some("application/json"),
            Some(Body::Raw(Bytes::from(
                json!({ "AttachmentItem": item }).to_string(),
            ))),
        ))
        .await?;
    if !(200..300).contains(&answer.status) {
        return Err(client.refusal(&answer, "Mail.ReadWrite"));
    }
    let upload_url = json_field(&answer, "uploadUrl")
        .ok_or_else(|| odd_answer(client, "the upload session has no uploadUrl"))?;
    if !upload_url.starts_with("https://") {
        return Err(odd_answer(client, "the upload URL is not https://"));
    }
    let start = next_expected(&answer).unwrap_or(0);
    upload(client, &upload_url, Bytes::from(a.bytes), start).await
}

/// `PUT`s the ranges from `next` on to the pre-authenticated `url` (no bearer token: it
/// may be on another host, and carries its own authorization).
async fn upload(client: &mut Client, url: &str, data: Bytes, mut next: usize) -> Result<()> {
    let total = data.len();
    let mut failures = 0;
    while next < total {
        let end = (next + RANGE).min(total);
        let mut request = Request::step(
            Method::PUT,
            url,
            Some("application/octet-stream"),
            Some(Body::Raw(data.slice(next..end))),
        );
        request
            .headers
            .push(("content-range", format!("bytes {next}-{}/{total}", end - 1)));
        let result = client.exchange(&request, false).await;
        let retry = match result {
            // The last range: the attachment is made.
            Ok(answer) if answer.status == 201 => return Ok(()),
            Ok(answer) if (200..300).contains(&answer.status) => {
                next = next_expected(&answer).unwrap_or(end);
                continue;
            }
            // The session is gone (expired): the message can go again later, whole.
            Ok(answer) if answer.status == 404 => {
                return Err(Error::network(
                    crate::error::Phase::Request,
                    "the attachment's upload session expired or is gone",
                )
                .at_server(client.host()));
            }
            Ok(answer) if answer.status == 429 || answer.status >= 500 => {
                Err(client.refusal(&answer, "Mail.ReadWrite"))
            }
            Ok(answer) => return Err(client.refusal(&answer, "Mail.ReadWrite")),
            Err(e) if e.exit_code() == crate::error::EX_TEMPFAIL => Err(e),
            Err(e) => return Err(e),
        };
        failures += 1;
        if failures > RANGE_RETRIES {
            return retry;
        }
        // A range that failed may or may not have arrived: the session says where to go on.
        tokio::time::sleep(Duration::from_millis(500 * u64::from(failures))).await;
        match session_status(client, url).await {
            Some(at) if at <= total => next = at,
            _ => {}
        }
    }
    // The session took every byte without confirming the attachment (the last answer was
    // lost): the message goes again later, whole, rather than perhaps without the file.
    Err(Error::network(
        crate::error::Phase::Request,
        "the upload session took every byte without confirming the attachment",
    )
    .at_server(client.host()))
}

/// Where the upload session expects the next range (`GET` on the upload URL).
async fn session_status(client: &Client, url: &str) -> Option<usize> {
    let answer = client
        .exchange(&Request::step(Method::GET, url, None, None), false)
        .await
        .ok()?;
    if answer.status != 200 {
        return None;
    }
    next_expected(&answer)
}

/// Deletes the draft so that a failed message leaves nothing in Drafts (best effort: the
/// error that led here is what the user needs to read).
async fn delete_draft(client: &mut Client, message: &str) {
    let _ = client
        .authorized(Request::step(Method::DELETE, message, None, None))
        .await;
}

/// `nextExpectedRanges`: `["2097152"]` for Outlook (or `"2097152-"`).
fn next_expected(answer: &Answer) -> Option<usize> {
    let json: serde_json::Value = serde_json::from_slice(&answer.body).ok()?;
    let first = json["nextExpectedRanges"].as_array()?.first()?.as_str()?;
    first.split('-').next()?.trim().parse().ok()
}

fn json_field(answer: &Answer, key: &str) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(&answer.body).ok()?;
    json[key].as_str().map(str::to_owned)
}

/// An answer Graph documents otherwise.
fn odd_answer(client: &Client, what: &str) -> Error {
    Error::protocol(
        crate::error::Phase::Request,
        format!("Microsoft Graph: {what}"),
    )
    .at_server(client.host())
}

/// What cannot go through Graph at all, named by its limit.
fn too_large(e: Unsplittable) -> Error {
    match e {
        Unsplittable::AttachmentTooLarge { name, size } => Error::data(format!(
            "the attachment `{name}` is {size} bytes: Microsoft Graph takes files up to 150 MB \
             ({MAX_ATTACHMENT} bytes) each; nothing was sent"
        )),
        Unsplittable::TooLargeWithoutAttachments { draft } => {
            Error::too_large(draft as u64, (MAX_REQUEST_BYTES / 4 * 3) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: &str) -> Answer {
        Answer {
            status: 200,
            request_id: None,
            retry_after: None,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn the_next_range_is_read_as_outlook_and_onedrive_write_it() {
        assert_eq!(
            next_expected(&answer(r#"{"nextExpectedRanges":["4000000"]}"#)),
            Some(4_000_000)
        );
        assert_eq!(
            next_expected(&answer(r#"{"nextExpectedRanges":["12-"]}"#)),
            Some(12)
        );
        assert_eq!(next_expected(&answer(r#"{"nextExpectedRanges":[]}"#)), None);
        assert_eq!(next_expected(&answer("<html>")), None);
    }

    #[test]
    fn an_attachment_above_150_mb_is_65_naming_the_limit() {
        let e = too_large(Unsplittable::AttachmentTooLarge {
            name: "big.iso".into(),
            size: MAX_ATTACHMENT + 1,
        });
        assert_eq!(e.exit_code(), 65);
        assert!(
            e.to_string().contains("big.iso") && e.to_string().contains("150 MB"),
            "{e}"
        );
    }
}
