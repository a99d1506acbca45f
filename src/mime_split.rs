//! Splitting a MIME message for Microsoft Graph's large-message path: the message less its
//! largest attachments (the draft, small enough for one request) and those attachments
//! decoded, with what Graph needs to re-attach them (name, type, Content-ID, inline).
//!
//! Only whole leaf parts are cut out, from their delimiter line to the next one, so every
//! byte that stays (headers, bodies, the other parts) is the original's. The parts are
//! found with `mail-parser`, whose offsets point at each part's header and at the line
//! break before the next delimiter (RFC 2046 §5.1.1: that line break belongs to the
//! delimiter).

use mail_parser::decoders::base64::base64_decode;
use mail_parser::decoders::quoted_printable::quoted_printable_decode;
use mail_parser::{Encoding, MessageParser, MimeHeaders as _, PartType};

/// An attachment taken out of the draft, to be added to it through Graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detached {
    /// The file name Graph shows (`attachment` when the part names none).
    pub name: String,
    /// `type/subtype` of the part.
    pub content_type: String,
    /// The part's `Content-ID` without angle brackets: an HTML body refers to it (`cid:`).
    pub content_id: Option<String>,
    /// Shown in the body rather than as a file (`Content-Disposition: inline`, or a
    /// Content-ID without a disposition).
    pub is_inline: bool,
    /// The decoded content: what the recipient's file holds.
    pub bytes: Vec<u8>,
}

/// The draft and what was taken out of it.
#[derive(Debug)]
pub struct Split {
    pub draft: Vec<u8>,
    pub detached: Vec<Detached>,
}

/// Why a message cannot be split to fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsplittable {
    /// Even without every attachment the message needs more than `limit` bytes of base64.
    TooLargeWithoutAttachments { draft: usize },
    /// One attachment is larger than Graph takes for one file.
    AttachmentTooLarge { name: String, size: usize },
}

/// Cuts attachments out of `raw`, largest first, until the draft's base64 is at most
/// `limit` bytes; an attachment above `max_attachment` decoded bytes is refused.
pub fn split(raw: &[u8], limit: usize, max_attachment: usize) -> Result<Split, Unsplittable> {
    // Before parsing (which decodes every part): a run of base64 lines that alone decodes to
    // more than any file may hold cannot go, whatever part it is (a text part that large
    // could not stay in a 4 MB draft either).
    if let Some(e) = oversized(&[raw], max_attachment) {
        return Err(e);
    }
    let mut candidates = candidates(raw, max_attachment)?;
    // Largest first: the fewest extra requests.
    candidates.sort_by_key(|(span, _)| std::cmp::Reverse(span.len()));
    let mut size = raw.len();
    let mut cut = Vec::new();
    for (span, detached) in candidates {
        if base64_len(size) <= limit {
            break;
        }
        size -= span.len();
        cut.push((span, detached));
    }
    if base64_len(size) > limit {
        return Err(Unsplittable::TooLargeWithoutAttachments { draft: size });
    }
    cut.sort_by_key(|(span, _)| span.start);
    let mut draft = Vec::with_capacity(size);
    let mut at = 0;
    let mut detached = Vec::with_capacity(cut.len());
    for (span, d) in cut {
        draft.extend_from_slice(&raw[at..span.start]);
        at = span.end;
        detached.push(d);
    }
    draft.extend_from_slice(&raw[at..]);
    Ok(Split { draft, detached })
}

/// Leaf parts the parser counts as attachments (inline images included), not the message's
/// text or HTML body, each with the byte span that removes it cleanly and its content.
fn candidates(
    raw: &[u8],
    max_attachment: usize,
) -> Result<Vec<(std::ops::Range<usize>, Detached)>, Unsplittable> {
    let Some(mut message) = MessageParser::default().parse(raw) else {
        return Err(Unsplittable::TooLargeWithoutAttachments { draft: raw.len() });
    };
    let mut candidates: Vec<(std::ops::Range<usize>, Detached)> = Vec::new();
    let ids = message.attachments.clone();
    for id in ids {
        let (text_body, html_body) = (
            message.text_body.contains(&id),
            message.html_body.contains(&id),
        );
        let Some(part) = message.parts.get_mut(id as usize) else {
            continue;
        };
        if id == 0
            || matches!(part.body, PartType::Multipart(_) | PartType::Message(_))
            || text_body
            || html_body
        {
            continue;
        }
        let Some(span) = removable_span(raw, part.offset_header as usize, part.offset_end as usize)
        else {
            continue;
        };
        // The content as the sender's file held it: the transfer encoding undone, and no
        // charset conversion (the parser turns text parts into UTF-8). A binary part's
        // decoded bytes are taken from the parser, not copied.
        let bytes = match &mut part.body {
            PartType::Binary(b) | PartType::InlineBinary(b) => Some(std::mem::take(b).into_owned()),
            _ => {
                let body = &raw[part.offset_body as usize..part.offset_end as usize];
                match part.encoding {
                    Encoding::Base64 => base64_decode(body),
                    Encoding::QuotedPrintable => quoted_printable_decode(body),
                    Encoding::None => Some(body.to_vec()),
                }
            }
        };
        let Some(bytes) = bytes else {
            continue;
        };
        let part = &message.parts[id as usize];
        let name = part.attachment_name().unwrap_or("attachment").to_owned();
        if bytes.len() > max_attachment {
            return Err(Unsplittable::AttachmentTooLarge {
                name,
                size: bytes.len(),
            });
        }
        let content_type = part.content_type().map_or_else(
            || "application/octet-stream".to_owned(),
            |c| match c.subtype() {
                Some(sub) => format!("{}/{sub}", c.ctype()),
                None => c.ctype().to_owned(),
            },
        );
        let content_id = part.content_id().map(|c| {
            c.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_owned()
        });
        let disposition = part
            .content_disposition()
            .map(|d| d.ctype().to_ascii_lowercase());
        let is_inline = match disposition.as_deref() {
            Some("inline") => true,
            Some(_) => false,
            None => content_id.is_some(),
        };
        candidates.push((
            span,
            Detached {
                name,
                content_type,
                content_id,
                is_inline,
                bytes,
            },
        ));
    }
    Ok(candidates)
}

/// The span from the start of the delimiter line before the part (`--boundary`) to the
/// start of the next delimiter line: removing it leaves a well-formed multipart. `None`
/// when the bytes around the part are not laid out that way (then the part stays).
fn removable_span(raw: &[u8], header: usize, end: usize) -> Option<std::ops::Range<usize>> {
    if header == 0 || end <= header || end > raw.len() {
        return None;
    }
    // The delimiter line ends just before the part's header.
    let line_end = header - 1;
    if raw[line_end] != b'\n' {
        return None;
    }
    let start = raw[..line_end]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    if !raw[start..].starts_with(b"--") {
        return None;
    }
    // `end` is at the line break that belongs to the next delimiter.
    let next = match raw.get(end..end + 2) {
        Some(b"\r\n") => end + 2,
        _ if raw.get(end) == Some(&b'\n') => end + 1,
        _ => return None,
    };
    raw[next..].starts_with(b"--").then_some(start..next)
}

/// A base64 run in `parts` (a message as slices, e.g. before its copy for Graph is made)
/// that decodes to more than `max_attachment` bytes: no file that large can go, and the
/// message need not be copied or parsed to know it.
#[must_use]
pub fn oversized(parts: &[&[u8]], max_attachment: usize) -> Option<Unsplittable> {
    parts.iter().find_map(|raw| {
        let (start, longest) = longest_base64_run(raw);
        (longest > max_attachment).then(|| Unsplittable::AttachmentTooLarge {
            name: name_above(&raw[start.saturating_sub(4096)..start]),
            size: longest,
        })
    })
}

/// [`oversized`] over a stream (a spooled message), without holding it: where the first
/// base64 run that decodes to more than `max_attachment` bytes starts (its offset) and
/// what it decodes to. The caller names it from the bytes above that offset.
pub fn oversized_run(
    input: impl std::io::Read,
    max_attachment: usize,
) -> std::io::Result<Option<(u64, usize)>> {
    let mut input = std::io::BufReader::with_capacity(64 * 1024, input);
    let mut scan = RunScan::default();
    loop {
        let buf = std::io::BufRead::fill_buf(&mut input)?;
        if buf.is_empty() {
            break;
        }
        let n = buf.len();
        for &b in buf {
            scan.byte(b);
        }
        std::io::BufRead::consume(&mut input, n);
        // Found, and its run has ended: its whole size is known.
        if scan.longest > max_attachment && scan.run == 0 {
            break;
        }
    }
    scan.end_line();
    Ok((scan.longest > max_attachment).then_some((scan.longest_start, scan.longest)))
}

/// The state of a byte-by-byte search for the longest run of base64 lines.
#[derive(Default)]
struct RunScan {
    at: u64,
    line_start: u64,
    line_len: usize,
    line_base64: bool,
    line_padding: usize,
    run: usize,
    run_start: u64,
    longest: usize,
    longest_start: u64,
}

impl RunScan {
    fn byte(&mut self, b: u8) {
        if b == b'\n' {
            self.end_line();
            self.line_start = self.at + 1;
        } else if b != b'\r' {
            if self.line_len == 0 {
                self.line_base64 = true;
                self.line_padding = 0;
            }
            self.line_len += 1;
            if b == b'=' {
                self.line_padding += 1;
            } else if b.is_ascii_alphanumeric() || b == b'+' || b == b'/' {
                self.line_padding = 0;
            } else {
                self.line_base64 = false;
            }
        }
        self.at += 1;
    }

    fn end_line(&mut self) {
        if self.line_len > 0 && self.line_base64 {
            if self.run == 0 {
                self.run_start = self.line_start;
            }
            self.run += self.line_len;
            let decoded = (self.run / 4 * 3).saturating_sub(self.line_padding);
            if decoded > self.longest {
                (self.longest, self.longest_start) = (decoded, self.run_start);
            }
        } else {
            self.run = 0;
        }
        self.line_len = 0;
    }
}

/// The name of the part whose body starts at `start`, from the bytes just above it.
#[must_use]
pub fn name_before(above: &[u8]) -> String {
    name_above(above)
}

/// Where the longest run of lines made only of base64 starts, and the bytes it decodes to
/// (its characters, line breaks not counted, less padding, times 3/4).
fn longest_base64_run(raw: &[u8]) -> (usize, usize) {
    let (mut longest, mut longest_start) = (0, 0);
    let (mut run, mut run_start) = (0, 0);
    let mut at = 0;
    for line in raw.split(|&b| b == b'\n') {
        let text = line.strip_suffix(b"\r").unwrap_or(line);
        let base64 = !text.is_empty()
            && text
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=');
        if base64 {
            if run == 0 {
                run_start = at;
            }
            run += text.len();
            let padding = text.iter().rev().take_while(|&&b| b == b'=').count();
            let decoded = (run / 4 * 3).saturating_sub(padding);
            if decoded > longest {
                (longest, longest_start) = (decoded, run_start);
            }
        } else {
            run = 0;
        }
        at += line.len() + 1;
    }
    (longest_start, longest)
}

/// The last `filename=` or `name=` in `header` (the text just above a part's body), else
/// "a part".
fn name_above(header: &[u8]) -> String {
    let text = String::from_utf8_lossy(header);
    let found = ["filename=", "name="]
        .iter()
        .find_map(|key| text.rfind(key).map(|i| &text[i + key.len()..]))
        .and_then(|rest| {
            let rest = rest.trim_start_matches('"');
            let end = rest.find(['"', ';', '\r', '\n'])?;
            Some(rest[..end].trim().to_owned())
        })
        .filter(|n| !n.is_empty());
    found.unwrap_or_else(|| "a part".to_owned())
}

/// The length of `n` bytes in padded base64.
#[must_use]
pub fn base64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn b64(data: &[u8]) -> String {
        let s = base64::engine::general_purpose::STANDARD.encode(data);
        s.as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\r\n")
    }

    fn message(pdf: &[u8], png: &[u8]) -> Vec<u8> {
        format!(
            "From: a@contoso.com\r\nTo: b@x.example\r\nSubject: report\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"mix\"\r\n\r\npreamble\r\n\
             --mix\r\nContent-Type: multipart/related; boundary=\"rel\"\r\n\r\n\
             --rel\r\nContent-Type: text/html\r\n\r\n<img src=\"cid:logo@x\">\r\n\
             --rel\r\nContent-Type: image/png\r\nContent-ID: <logo@x>\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--rel--\r\n\
             --mix\r\nContent-Type: application/pdf; name=\"r.pdf\"\r\n\
             Content-Disposition: attachment; filename=\"r.pdf\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--mix--\r\n",
            b64(png),
            b64(pdf)
        )
        .into_bytes()
    }

    #[test]
    fn the_largest_attachments_leave_and_every_other_byte_stays() {
        let pdf: Vec<u8> = (0..300_000u32).map(|i| (i * 7) as u8).collect();
        let png: Vec<u8> = (0..100_000u32).map(|i| (i * 13) as u8).collect();
        let raw = message(&pdf, &png);
        // Room for the PNG but not the PDF: only the PDF leaves.
        let s = split(&raw, base64_len(raw.len() - 300_000), usize::MAX).unwrap();
        assert_eq!(s.detached.len(), 1);
        let d = &s.detached[0];
        assert_eq!(
            (d.name.as_str(), d.content_type.as_str(), d.is_inline),
            ("r.pdf", "application/pdf", false)
        );
        assert_eq!(d.bytes, pdf);
        let draft = String::from_utf8(s.draft.clone()).unwrap();
        assert!(draft.ends_with("--rel--\r\n--mix--\r\n"), "{draft}");
        assert!(draft.starts_with("From: a@contoso.com\r\n"));
        // The draft is the original less one contiguous span.
        let tail = raw.len() - s.draft.len();
        assert!(raw.starts_with(&s.draft[..s.draft.len() - 9]));
        assert!(tail > 400_000);
        // Room for neither: both leave; the inline image keeps its Content-ID.
        let s = split(&raw, 4_000, usize::MAX).unwrap();
        assert_eq!(s.detached.len(), 2);
        let png_part = s.detached.iter().find(|d| d.is_inline).unwrap();
        assert_eq!(png_part.content_id.as_deref(), Some("logo@x"));
        assert_eq!(png_part.content_type, "image/png");
        assert_eq!(png_part.bytes, png);
        let parsed = MessageParser::default().parse(&s.draft).unwrap();
        assert_eq!(parsed.attachment_count(), 0);
        assert_eq!(
            parsed.body_html(0).unwrap().trim(),
            "<img src=\"cid:logo@x\">"
        );
    }

    #[test]
    fn a_text_attachment_leaves_with_its_bytes_not_converted_to_utf8() {
        let latin1: Vec<u8> = (0..30_000u32).map(|i| 0xA0 + (i % 90) as u8).collect();
        let raw = [
            b"To: b@x.example\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
              Content-Type: text/plain\r\n\r\nhi\r\n--b\r\n\
              Content-Type: text/plain; charset=iso-8859-1\r\n\
              Content-Disposition: attachment; filename=l.txt\r\n\
              Content-Transfer-Encoding: base64\r\n\r\n"
                .as_slice(),
            b64(&latin1).as_bytes(),
            b"\r\n--b--\r\n",
        ]
        .concat();
        let s = split(&raw, 1_000, usize::MAX).unwrap();
        assert_eq!(s.detached.len(), 1);
        assert_eq!(s.detached[0].bytes, latin1);
        assert_eq!(s.detached[0].content_type, "text/plain");
    }

    #[test]
    fn a_stream_is_scanned_for_an_oversized_part_as_a_buffer_is() {
        let pdf = vec![7u8; 50_000];
        let raw = message(&pdf, b"png");
        let (start, size) = oversized_run(&raw[..], 49_999).unwrap().unwrap();
        assert_eq!(size, 50_000);
        assert_eq!(
            (usize::try_from(start).unwrap(), size),
            longest_base64_run(&raw)
        );
        assert_eq!(
            name_before(&raw[..usize::try_from(start).unwrap()]),
            "r.pdf"
        );
        assert_eq!(oversized_run(&raw[..], 50_000).unwrap(), None);
    }

    #[test]
    fn what_cannot_fit_is_refused_by_name_or_size() {
        let pdf = vec![7u8; 50_000];
        let raw = message(&pdf, b"png");
        // Just above the limit: refused before parsing, with the exact size.
        assert_eq!(
            split(&raw, 4_000_000, 49_999).unwrap_err(),
            Unsplittable::AttachmentTooLarge {
                name: "r.pdf".into(),
                size: 50_000
            }
        );
        // Known before any parsing: the longest base64 run, named from the lines above it.
        assert!(matches!(
            split(&raw, 4_000_000, 20_000).unwrap_err(),
            Unsplittable::AttachmentTooLarge { name, size } if name == "r.pdf" && size >= 50_000
        ));
        let plain = format!("To: b@x.example\r\n\r\n{}\r\n", "x".repeat(10_000));
        assert!(matches!(
            split(plain.as_bytes(), 1_000, usize::MAX).unwrap_err(),
            Unsplittable::TooLargeWithoutAttachments { .. }
        ));
    }
}
