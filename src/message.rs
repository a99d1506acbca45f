//! The message as read on stdin: the bytes, where its header block ends (decided here, as
//! sendmail does, not by mail-parser), the byte range of every header field, and views of
//! the fields `plan` needs. `render` gives the bytes to send as slices of the input, so the
//! body (possibly 20 MB) is never copied. mail-parser stays behind this module: it only
//! decodes address lists, one field at a time.

use std::borrow::Cow;
use std::io::Read;

use mail_parser::{Address, HeaderValue, MessageParser};

use crate::error::{Error, Result};

/// A message as read on stdin (a leading mbox `From ` line dropped), with a view of its
/// header block.
#[derive(Debug)]
pub struct Message {
    raw: Vec<u8>,
    /// Where the message starts: after a dropped mbox `From ` line.
    start: usize,
    /// Header fields in order, byte ranges of `raw`.
    fields: Vec<Field>,
    /// End of the last header field (`start` when there is none).
    header_end: usize,
    /// The input had a blank line between header and body.
    has_separator: bool,
    /// The message's own line ending, for the fields we write.
    eol: &'static [u8],
    /// A byte above 0x7f anywhere (`BODY=8BITMIME`).
    eight_bit: bool,
}

/// One header field: `raw[start..end]` is the whole field, name through folded lines and
/// the line terminator.
#[derive(Debug, Clone)]
struct Field {
    name: String,
    start: usize,
    /// Where the value starts (after the colon).
    value: usize,
    end: usize,
}

/// A mailbox from a header or the command line: display name and address. An address
/// without `@` is a bare local name (cron's `root`), resolved through `[aliases]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub name: Option<String>,
    pub address: String,
}

impl Mailbox {
    /// A bare local name such as `root`, not an address.
    #[must_use]
    pub fn is_local(&self) -> bool {
        !self.address.contains('@')
    }
}

/// Header changes decided by `plan`: fields to add at the end of the header block, and a
/// replacement for the (first) From field. Bcc and Resent-Bcc are always removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderEdits {
    /// (name, value) pairs, e.g. ("Date", "Sun, 22 Nov 2026 21:59:36 +0000").
    pub add: Vec<(String, String)>,
    /// The whole new value of From (e.g. "Alice <alice@contoso.com>"); added if there is none.
    pub from: Option<String>,
}

/// Fields that are never transmitted: they would show hidden recipients to the others.
const HIDDEN: [&str; 2] = ["Bcc", "Resent-Bcc"];

impl Message {
    /// Reads all of the input. Empty input or a NUL byte is `Error::data` (exit 65).
    pub fn read(mut input: impl Read) -> Result<Message> {
        let mut raw = Vec::new();
        input
            .read_to_end(&mut raw)
            .map_err(|e| Error::io(format!("cannot read the message on stdin: {e}")))?;
        Message::from_bytes(raw)
    }

    /// The same checks and header scan as `read`, on bytes already in memory.
    pub fn from_bytes(mut raw: Vec<u8>) -> Result<Message> {
        if let Some(pos) = raw.iter().position(|&b| b == 0) {
            return Err(Error::data(format!(
                "the message holds a NUL byte (at byte {pos}); nothing was sent"
            )));
        }
        let start = mbox_line_end(&raw);
        if start == raw.len() {
            return Err(Error::data("empty message on stdin; nothing was sent"));
        }
        let eol = line_ending(&raw[start..]);
        let (mut fields, mut header_end, mut body_start) = scan_header(&raw, start);
        if let Some(last) = fields.last_mut()
            && header_end == raw.len()
            && !raw.ends_with(b"\n")
        {
            // The input ends inside the last field: terminate it so fields can follow.
            raw.extend_from_slice(eol);
            last.end = raw.len();
            header_end = raw.len();
            body_start = raw.len();
        }
        let has_separator = body_start > header_end;
        let eight_bit = raw.iter().any(|&b| b > 0x7f);
        Ok(Message {
            raw,
            start,
            fields,
            header_end,
            has_separator,
            eol,
            eight_bit,
        })
    }

    /// The message holds 8-bit bytes (header or body).
    #[must_use]
    pub fn eight_bit(&self) -> bool {
        self.eight_bit
    }

    /// True when a field of this name (case-insensitive) is present.
    #[must_use]
    pub fn has(&self, name: &str) -> bool {
        self.fields.iter().any(|f| f.name.eq_ignore_ascii_case(name))
    }

    /// The first mailbox of the first From field, if any.
    pub fn from(&self) -> Result<Option<Mailbox>> {
        let Some(field) = self.fields.iter().find(|f| f.name.eq_ignore_ascii_case("From")) else {
            return Ok(None);
        };
        Ok(self.addresses(field)?.into_iter().next())
    }

    /// The recipients `-t` reads: To, Cc and Bcc; or, when any `Resent-*` field is present,
    /// Resent-To, Resent-Cc and Resent-Bcc of the first (newest) Resent block only.
    pub fn recipients(&self) -> Result<Vec<Mailbox>> {
        let (fields, names): (&[Field], [&str; 3]) = match self.resent_block() {
            Some(block) => (block, ["Resent-To", "Resent-Cc", "Resent-Bcc"]),
            None => (&self.fields, ["To", "Cc", "Bcc"]),
        };
        let mut out = Vec::new();
        for field in fields {
            if names.iter().any(|n| field.name.eq_ignore_ascii_case(n)) {
                out.extend(self.addresses(field)?);
            }
        }
        Ok(out)
    }

    /// The names of the fields `render` leaves out, one per occurrence.
    #[must_use]
    pub fn removed_fields(&self) -> Vec<String> {
        self.fields
            .iter()
            .filter_map(|f| HIDDEN.iter().find(|h| f.name.eq_ignore_ascii_case(h)))
            .map(|h| (*h).to_owned())
            .collect()
    }

    /// The first Resent block: a run of adjacent `Resent-*` fields starting at the first
    /// one; a second Resent-Date or Resent-From starts an older block and ends this one.
    fn resent_block(&self) -> Option<&[Field]> {
        let is_resent = |f: &Field| starts_with_ignore_case(&f.name, "Resent-");
        let first = self.fields.iter().position(is_resent)?;
        let mut seen: Vec<String> = Vec::new();
        let mut end = first;
        for field in &self.fields[first..] {
            let lower = field.name.to_ascii_lowercase();
            let opens_block = lower == "resent-date" || lower == "resent-from";
            if !is_resent(field) || (opens_block && seen.contains(&lower)) {
                break;
            }
            seen.push(lower);
            end += 1;
        }
        Some(&self.fields[first..end])
    }

    fn addresses(&self, field: &Field) -> Result<Vec<Mailbox>> {
        let value = &self.raw[field.value..field.end];
        parse_addresses(value, &field.name)
    }

    /// The message as parts to send one after another: header fields kept as they are
    /// (byte ranges of the input), Bcc/Resent-Bcc removed, edits applied, the body untouched.
    #[must_use]
    pub fn render<'a>(&'a self, edits: &'a HeaderEdits) -> Vec<Cow<'a, [u8]>> {
        let mut parts: Vec<Cow<'a, [u8]>> = Vec::new();
        let mut push = |parts: &mut Vec<Cow<'a, [u8]>>, slice: &'a [u8]| {
            if !slice.is_empty() {
                parts.push(Cow::Borrowed(slice));
            }
        };
        let mut pos = self.start;
        let mut from_pending = edits.from.as_deref();
        let mut kept_any = false;
        for field in &self.fields {
            let hidden = HIDDEN.iter().any(|h| field.name.eq_ignore_ascii_case(h));
            let replace = from_pending.is_some() && field.name.eq_ignore_ascii_case("From");
            if !hidden && !replace {
                kept_any = true;
                continue;
            }
            push(&mut parts, &self.raw[pos..field.start]);
            if let Some(from) = from_pending.filter(|_| replace) {
                let eol = line_ending(&self.raw[field.start..field.end]);
                parts.push(Cow::Owned(field_line("From", from, eol)));
                from_pending = None;
                kept_any = true;
            }
            pos = field.end;
        }
        push(&mut parts, &self.raw[pos..self.header_end]);
        let mut added = Vec::new();
        if let Some(from) = from_pending {
            added.extend(field_line("From", from, self.eol));
        }
        for (name, value) in &edits.add {
            added.extend(field_line(name, value, self.eol));
        }
        if !added.is_empty() {
            parts.push(Cow::Owned(added));
            kept_any = true;
        }
        if !self.has_separator && kept_any {
            parts.push(Cow::Borrowed(self.eol));
        }
        push(&mut parts, &self.raw[self.header_end..]);
        parts
    }
}

/// Where the message starts: after a leading mbox `From ` (or `>From `) line, if any.
/// `From:` is a header; `From ` with a space is the mbox separator.
fn mbox_line_end(raw: &[u8]) -> usize {
    if !(raw.starts_with(b"From ") || raw.starts_with(b">From ")) {
        return 0;
    }
    raw.iter().position(|&b| b == b'\n').map_or(raw.len(), |i| i + 1)
}

/// The line ending of the first line: CRLF or LF (LF when there is no line end at all).
fn line_ending(text: &[u8]) -> &'static [u8] {
    match text.iter().position(|&b| b == b'\n') {
        Some(i) if i > 0 && text[i - 1] == b'\r' => b"\r\n",
        _ => b"\n",
    }
}

/// Scans the header block from `start` as sendmail does: it ends at the first blank line,
/// or at the first line that is neither a field nor a continuation (that line is the first
/// of the body). Returns the fields, the end of the last field and the start of the body.
fn scan_header(raw: &[u8], start: usize) -> (Vec<Field>, usize, usize) {
    let mut fields: Vec<Field> = Vec::new();
    let mut pos = start;
    while pos < raw.len() {
        let end = raw[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(raw.len(), |i| pos + i + 1);
        let line = &raw[pos..end];
        if line == b"\n" || line == b"\r\n" {
            return (fields, pos, end);
        }
        if matches!(line[0], b' ' | b'\t') && !fields.is_empty() {
            if let Some(last) = fields.last_mut() {
                last.end = end;
            }
        } else if let Some((name, colon)) = field_name(line) {
            fields.push(Field {
                name,
                start: pos,
                value: pos + colon + 1,
                end,
            });
        } else {
            return (fields, pos, pos);
        }
        pos = end;
    }
    (fields, pos, pos)
}

/// `Name:` at the start of a line: printable non-space ASCII other than `:`, optionally
/// followed by blanks (an obsolete form), then a colon. Returns the name and the colon's index.
fn field_name(line: &[u8]) -> Option<(String, usize)> {
    let len = line
        .iter()
        .position(|&b| !(b.is_ascii_graphic() && b != b':'))
        .unwrap_or(line.len());
    if len == 0 {
        return None;
    }
    let colon = len + line[len..].iter().position(|&b| b != b' ' && b != b'\t')?;
    (line[colon] == b':').then(|| (String::from_utf8_lossy(&line[..len]).into_owned(), colon))
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// Parses an address list (a header value, a command-line argument, an alias value):
/// groups flattened, encoded-word names decoded, source routes stripped, every address
/// checked with `lettre::Address`. A bare word without `@` is a local name. `what` names
/// the source in errors.
pub fn parse_addresses(value: &[u8], what: &str) -> Result<Vec<Mailbox>> {
    // mail-parser reads a whole header block; give it one To field and its end.
    let mut block = b"To:".to_vec();
    block.extend_from_slice(value);
    if !value.ends_with(b"\n") {
        block.push(b'\n');
    }
    block.push(b'\n');
    let parsed = MessageParser::default().parse_headers(&block);
    let Some(header) = parsed.as_ref().and_then(|m| m.headers().first()) else {
        return Ok(Vec::new());
    };
    let addrs: Vec<&mail_parser::Addr> = match &header.value {
        HeaderValue::Address(Address::List(list)) => list.iter().collect(),
        HeaderValue::Address(Address::Group(groups)) => {
            groups.iter().flat_map(|g| g.addresses.iter()).collect()
        }
        HeaderValue::Empty => Vec::new(),
        _ => {
            return Err(Error::data(format!(
                "cannot read the addresses in {what}: `{}`",
                shown(value)
            )));
        }
    };
    addrs.into_iter().filter_map(|a| mailbox(a, what).transpose()).collect()
}

/// One parsed address as a checked mailbox; `None` when it holds nothing at all.
fn mailbox(addr: &mail_parser::Addr, what: &str) -> Result<Option<Mailbox>> {
    let name = addr.name.as_deref().map(str::trim).filter(|n| !n.is_empty());
    match addr.address.as_deref().map(str::trim).filter(|a| !a.is_empty()) {
        Some(address) => {
            let address = strip_source_route(address);
            check_address(address, what)?;
            Ok(Some(Mailbox {
                name: name.map(str::to_owned),
                address: address.to_owned(),
            }))
        }
        // mail-parser reads a bare word (`root`) as a display name without an address.
        None => match name {
            Some(local) => {
                check_local_name(local, what)?;
                Ok(Some(Mailbox {
                    name: None,
                    address: local.to_owned(),
                }))
            }
            None => Ok(None),
        },
    }
}

/// `@route.example:user@example.com` → `user@example.com` (RFC 5322 obs-route).
fn strip_source_route(address: &str) -> &str {
    match address.split_once(':') {
        Some((route, rest)) if route.starts_with('@') => rest,
        _ => address,
    }
}

/// An address with `@` must be one `lettre::Address` accepts (which also refuses what
/// mail-parser mis-parses, such as `@example.com` from a bare quoted local part); one
/// without is a local name.
pub fn check_address(address: &str, what: &str) -> Result<()> {
    if !address.contains('@') {
        return check_local_name(address, what);
    }
    address
        .parse::<lettre::Address>()
        .map(drop)
        .map_err(|e| Error::data(format!("invalid address `{}` in {what}: {e}", shown(address.as_bytes()))))
}

/// A bare local name must be a valid local part (so `Some Name` alone is refused).
fn check_local_name(local: &str, what: &str) -> Result<()> {
    format!("{local}@localhost")
        .parse::<lettre::Address>()
        .map(drop)
        .map_err(|_| {
            Error::data(format!(
                "`{}` in {what} is neither an address nor a local name",
                shown(local.as_bytes())
            ))
        })
}

/// Input quoted in an error line: one line, control characters escaped.
fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim()
        .chars()
        .flat_map(char::escape_debug)
        .collect()
}

/// `Name: value` with the given line ending; a CR or LF in the value becomes a space, so
/// nothing from `-F` or the config can start a field of its own.
fn field_line(name: &str, value: &str, eol: &[u8]) -> Vec<u8> {
    let mut line = format!("{name}: {}", value.replace(['\r', '\n'], " ")).into_bytes();
    line.extend_from_slice(eol);
    line
}

/// `Name <address>` (or the bare address) as a header value: a non-ASCII name becomes
/// RFC 2047 encoded words, a name with specials a quoted string; control characters in the
/// name become spaces.
#[must_use]
pub fn format_mailbox(name: Option<&str>, address: &str) -> String {
    let name: String = name
        .unwrap_or("")
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let name = name.trim();
    if name.is_empty() {
        return address.to_owned();
    }
    format!("{} <{address}>", encode_phrase(name))
}

/// RFC 5322 `specials`: a name holding one of them must be quoted.
const SPECIALS: &[char] = &['(', ')', '<', '>', '[', ']', ':', ';', '@', '\\', ',', '.', '"'];

fn encode_phrase(name: &str) -> String {
    if !name.is_ascii() {
        return encoded_words(name);
    }
    if name.contains(SPECIALS) {
        return format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""));
    }
    name.to_owned()
}

/// RFC 2047 `=?UTF-8?B?…?=` words of at most 75 characters, split on character boundaries.
fn encoded_words(text: &str) -> String {
    use base64::Engine as _;
    /// 45 bytes make 60 base64 characters: with `=?UTF-8?B?` and `?=`, 72 ≤ 75.
    const MAX_BYTES: usize = 45;
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in text.chars() {
        if chunk.len() + c.len_utf8() > MAX_BYTES {
            words.push(std::mem::take(&mut chunk));
        }
        chunk.push(c);
    }
    words.push(chunk);
    words
        .iter()
        .map(|w| {
            format!(
                "=?UTF-8?B?{}?=",
                base64::engine::general_purpose::STANDARD.encode(w.as_bytes())
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}
