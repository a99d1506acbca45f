//! The message as read on stdin: the bytes, where its header block ends (decided here, as
//! sendmail does, not by mail-parser), the byte range of every header field, and views of
//! the fields `plan` needs. A large message keeps only its header block (and the start of
//! its body) in memory; the rest waits in a nameless temporary file (`spool`). `render`
//! gives the bytes to send as a `spool::Payload` of slices of the input and the spooled
//! rest, so the body is never copied. mail-parser stays behind this module: it only
//! decodes address lists, one field at a time.

use std::borrow::Cow;
use std::io::Read;

use mail_parser::{Address, HeaderValue, MessageParser};

use crate::error::{Error, Result};
use crate::spool::{IN_MEMORY_MAX, Payload, Spool, SpoolWriter};

/// A message as read on stdin (a leading mbox `From ` line dropped), with a view of its
/// header block.
#[derive(Debug)]
pub struct Message {
    /// The input up to the end of the header block at least (all of a small message).
    raw: Vec<u8>,
    /// The bytes after `raw`: none, or the rest of a large message's body on disk.
    rest: Spool,
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
    /// Reads all of the input once. A small message stays in memory; a large one keeps its
    /// header block (and the start of the body) in memory and the rest goes to a nameless
    /// private temporary file as it arrives, with the same checks on the way, so memory
    /// does not grow with the message. Empty input or a NUL byte is `Error::data` (exit
    /// 65).
    pub fn read(input: impl Read) -> Result<Message> {
        Message::read_spooling(input, spool_dir, IN_MEMORY_MAX)
    }

    /// `read`, keeping in memory up to `in_memory_max` bytes (a parameter for the tests).
    fn read_spooling(
        mut input: impl Read,
        dir: impl FnOnce() -> Option<std::path::PathBuf>,
        in_memory_max: usize,
    ) -> Result<Message> {
        let io = |e: std::io::Error| Error::io(format!("cannot read the message on stdin: {e}"));
        let mut buf = vec![0u8; READ_PIECE];
        let mut raw = Vec::new();
        // Whatever fits in memory stays there: the common case, as before.
        let mut more = fill(&mut input, &mut raw, in_memory_max + 1, &mut buf).map_err(io)?;
        if more {
            // Bare CRs are normalised to the first line's ending; without any LF in the
            // first megabyte the whole message is read as one (a degenerate case).
            more = raw.contains(&b'\n')
                || fill(&mut input, &mut raw, usize::MAX, &mut buf).map_err(io)?;
        }
        if !more {
            return Message::from_bytes(raw);
        }
        let mut checks = StreamChecks::new(line_ending(&raw));
        let mut head = Vec::with_capacity(raw.len() + READ_PIECE);
        checks.push(&raw, &mut head)?;
        drop(raw);
        // The header block must end in memory: it is small in any real message.
        while !header_ends_in(&head) {
            let n = read_some(&mut input, &mut buf).map_err(io)?;
            if n == 0 {
                checks.finish(&mut head);
                return Message::from_checked(head, Spool::memory(Vec::new()), checks.eight_bit);
            }
            checks.push(&buf[..n], &mut head)?;
        }
        // Only a message this large needs the folder: a small one touches no disk.
        let dir = dir();
        let mut rest = SpoolWriter::new(dir.as_deref(), in_memory_max);
        let mut out = Vec::with_capacity(READ_PIECE + 64);
        let spool_error = |e: std::io::Error| {
            Error::io(format!("cannot keep the message in a temporary file: {e}"))
        };
        loop {
            let n = read_some(&mut input, &mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            out.clear();
            checks.push(&buf[..n], &mut out)?;
            rest.write(&out).map_err(spool_error)?;
        }
        out.clear();
        checks.finish(&mut out);
        rest.write(&out).map_err(spool_error)?;
        let rest = rest.finish().map_err(spool_error)?;
        Message::from_checked(head, rest, checks.eight_bit)
    }

    /// The same checks and header scan as `read`, on bytes already in memory.
    pub fn from_bytes(raw: Vec<u8>) -> Result<Message> {
        if let Some(pos) = raw.iter().position(|&b| b == 0) {
            return Err(nul_at(pos as u64));
        }
        let raw = normalize_bare_cr(raw);
        let eight_bit = raw.iter().any(|&b| b > 0x7f);
        Message::from_checked(raw, Spool::memory(Vec::new()), eight_bit)
    }

    /// The header scan of checked, normalised bytes: `raw` holds at least the whole header
    /// block, `rest` the bytes after `raw`.
    fn from_checked(mut raw: Vec<u8>, rest: Spool, eight_bit: bool) -> Result<Message> {
        let start = mbox_line_end(&raw);
        if start == raw.len() && rest.is_empty() {
            return Err(Error::data("empty message on stdin; nothing was sent"));
        }
        let eol = line_ending(&raw[start..]);
        let (mut fields, mut header_end, mut body_start) = scan_header(&raw, start);
        if let Some(last) = fields.last_mut()
            && header_end == raw.len()
            && rest.is_empty()
            && !raw.ends_with(b"\n")
        {
            // The input ends inside the last field: terminate it so fields can follow.
            raw.extend_from_slice(eol);
            last.end = raw.len();
            header_end = raw.len();
            body_start = raw.len();
        }
        let has_separator = body_start > header_end;
        Ok(Message {
            raw,
            rest,
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
        self.fields
            .iter()
            .any(|f| f.name.eq_ignore_ascii_case(name))
    }

    /// The first mailbox of the first From field, if any.
    pub fn from(&self) -> Result<Option<Mailbox>> {
        let Some(field) = self
            .fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case("From"))
        else {
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

    /// Every mailbox of every field with one of these names (case-insensitive), in order.
    pub fn addresses_in(&self, names: &[&str]) -> Result<Vec<Mailbox>> {
        let mut out = Vec::new();
        for field in &self.fields {
            if names.iter().any(|n| field.name.eq_ignore_ascii_case(n)) {
                out.extend(self.addresses(field)?);
            }
        }
        Ok(out)
    }

    /// The message with each bare local name in these fields (cron's `To: root`) written
    /// as the addresses `resolve` gives for it (names it gives none for stay). Only the
    /// fields that hold one are rewritten; every other byte is kept. `None`: nothing to do.
    pub fn with_local_names_resolved(
        &self,
        names: &[&str],
        resolve: &dyn Fn(&str) -> Option<Vec<String>>,
    ) -> Result<Option<Vec<u8>>> {
        let mut out = Vec::new();
        let mut pos = self.start;
        for field in &self.fields {
            if !names.iter().any(|n| field.name.eq_ignore_ascii_case(n)) {
                continue;
            }
            let mailboxes = self.addresses(field)?;
            let mut changed = false;
            let mut value: Vec<String> = Vec::new();
            for m in mailboxes {
                match m.is_local().then(|| resolve(&m.address)).flatten() {
                    Some(addresses) => {
                        changed = true;
                        value.extend(addresses);
                    }
                    None => value.push(match &m.name {
                        Some(n) => format!("\"{}\" <{}>", n.replace(['\\', '"'], ""), m.address),
                        None => m.address.clone(),
                    }),
                }
            }
            if changed {
                out.extend_from_slice(&self.raw[pos..field.start]);
                let eol = line_ending(&self.raw[field.start..field.end]);
                out.extend(field_line(&field.name, &value.join(", "), eol));
                pos = field.end;
            }
        }
        if out.is_empty() {
            return Ok(None);
        }
        out.extend_from_slice(&self.raw[pos..]);
        Ok(Some(out))
    }

    /// The message's bytes (after a dropped mbox `From ` line), without a copy.
    #[must_use]
    pub fn into_bytes(mut self) -> Vec<u8> {
        self.raw.drain(..self.start);
        self.raw
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
    /// (byte ranges of the input), Bcc/Resent-Bcc removed, edits applied, the body untouched
    /// (and never copied: a large one is read from its temporary file as it is sent).
    #[must_use]
    pub fn render<'a>(&'a self, edits: &'a HeaderEdits) -> Payload<'a> {
        let mut parts = Payload::new();
        let push = |parts: &mut Payload<'a>, slice: &'a [u8]| {
            parts.push_bytes(Cow::Borrowed(slice));
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
                parts.push_bytes(Cow::Owned(field_line("From", from, eol)));
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
            parts.push_bytes(Cow::Owned(added));
            kept_any = true;
        }
        if !self.has_separator && kept_any {
            push(&mut parts, self.eol);
        }
        push(&mut parts, &self.raw[self.header_end..]);
        parts.push_spool(&self.rest);
        parts
    }
}

/// Pieces read from stdin at a time.
const READ_PIECE: usize = 64 * 1024;

/// Where a large message waits while it is sent: a private folder in the state folder
/// (the temporary file itself has no name). `None`: the system's temporary folder.
fn spool_dir() -> Option<std::path::PathBuf> {
    let dir = crate::paths::state_dir()?.join("spool");
    crate::private_dir::ensure_dir(&dir, "spool folder")
        .ok()
        .map(|()| dir)
}

/// Reads until `into` holds `limit` bytes or the input ends; true when there may be more.
fn fill(
    input: &mut impl Read,
    into: &mut Vec<u8>,
    limit: usize,
    buf: &mut [u8],
) -> std::io::Result<bool> {
    while into.len() < limit {
        let n = read_some(input, buf)?;
        if n == 0 {
            return Ok(false);
        }
        into.extend_from_slice(&buf[..n]);
    }
    Ok(true)
}

/// One read, retried when interrupted; 0 at the end.
fn read_some(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match input.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// Whether the header block (after any mbox line) ends within the complete lines of
/// `head`, so that the rest can be kept out of memory.
fn header_ends_in(head: &[u8]) -> bool {
    let Some(last_lf) = head.iter().rposition(|&b| b == b'\n') else {
        return false;
    };
    let lines = &head[..=last_lf];
    let (_, header_end, body_start) = scan_header(lines, mbox_line_end(lines));
    header_end < lines.len() || body_start < lines.len()
}

/// `from_bytes`'s checks on a stream: NUL refused, bare CR normalised (a CR at the end of
/// one piece waits for the next), 8-bit bytes noted.
struct StreamChecks {
    eol: &'static [u8],
    pending_cr: bool,
    offset: u64,
    eight_bit: bool,
}

impl StreamChecks {
    /// `eol`: the first line's ending, which a bare CR becomes.
    fn new(first_line_ending: &'static [u8]) -> StreamChecks {
        StreamChecks {
            eol: first_line_ending,
            pending_cr: false,
            offset: 0,
            eight_bit: false,
        }
    }

    fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if let Some(pos) = input.iter().position(|&b| b == 0) {
            return Err(nul_at(self.offset + pos as u64));
        }
        self.offset += input.len() as u64;
        self.eight_bit |= input.iter().any(|&b| b > 0x7f);
        if !self.pending_cr && !input.contains(&b'\r') {
            out.extend_from_slice(input);
            return Ok(());
        }
        for &b in input {
            if self.pending_cr {
                self.pending_cr = false;
                if b == b'\n' {
                    out.push(b'\r');
                } else {
                    out.extend_from_slice(self.eol);
                }
            }
            if b == b'\r' {
                self.pending_cr = true;
            } else {
                out.push(b);
            }
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.pending_cr) {
            out.extend_from_slice(self.eol);
        }
    }
}

fn nul_at(pos: u64) -> Error {
    Error::data(format!(
        "the message holds a NUL byte (at byte {pos}); nothing was sent"
    ))
}

/// Where the message starts: after a leading mbox `From ` (or `>From `) line, if any.
/// `From:` is a header; `From ` with a space is the mbox separator.
fn mbox_line_end(raw: &[u8]) -> usize {
    if !(raw.starts_with(b"From ") || raw.starts_with(b">From ")) {
        return 0;
    }
    raw.iter()
        .position(|&b| b == b'\n')
        .map_or(raw.len(), |i| i + 1)
}

/// A CR not followed by LF becomes a line break in the message's own style (CRLF when it
/// has no LF at all). Servers (Exchange among them) end a line at a bare CR, and RFC 5321
/// §2.3.8 forbids sending one: after this, the header block we read is the one the server
/// reads (`To: a\rBcc: b` is two fields, and the Bcc is removed), and no bare CR reaches
/// the wire.
fn normalize_bare_cr(raw: Vec<u8>) -> Vec<u8> {
    let bare = |i: usize| raw[i] == b'\r' && raw.get(i + 1) != Some(&b'\n');
    if !(0..raw.len()).any(bare) {
        return raw;
    }
    let eol: &[u8] = if raw.contains(&b'\n') {
        line_ending(&raw)
    } else {
        b"\r\n"
    };
    let mut out = Vec::with_capacity(raw.len() + 64);
    for (i, &b) in raw.iter().enumerate() {
        if bare(i) {
            out.extend_from_slice(eol);
        } else {
            out.push(b);
        }
    }
    out
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
    // mail-parser recovers from broken syntax by dropping what it cannot read; a list
    // must parse whole, or a recipient silently goes missing.
    if let Some(problem) = unbalanced(value) {
        return Err(Error::data(format!(
            "cannot read the addresses in {what}: {problem} in `{}`; nothing was sent",
            shown(value)
        )));
    }
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
    addrs
        .into_iter()
        .filter_map(|a| mailbox(a, what).transpose())
        .collect()
}

/// What keeps an address list from parsing whole (RFC 5322 §3.4): an unterminated comment,
/// quoted string or `<…>`, or a `>` that closes nothing.
fn unbalanced(value: &[u8]) -> Option<&'static str> {
    let mut comment = 0usize;
    let mut quoted = false;
    let mut angle = false;
    let mut escaped = false;
    for &b in value {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' if quoted || comment > 0 => escaped = true,
            b'"' if comment == 0 => quoted = !quoted,
            _ if quoted => {}
            b'(' => comment += 1,
            b')' if comment > 0 => comment -= 1,
            _ if comment > 0 => {}
            b')' => return Some("a `)` that closes no comment"),
            b'<' if angle => return Some("a `<` inside `<…>`"),
            b'<' => angle = true,
            b'>' if angle => angle = false,
            b'>' => return Some("a `>` that closes no `<`"),
            b',' | b';' if angle => return Some("an unterminated `<`"),
            _ => {}
        }
    }
    if comment > 0 {
        Some("an unterminated comment")
    } else if quoted {
        Some("an unterminated quoted string")
    } else if angle {
        Some("an unterminated `<`")
    } else {
        None
    }
}

/// One parsed address as a checked mailbox; `None` when it holds nothing at all.
fn mailbox(addr: &mail_parser::Addr, what: &str) -> Result<Option<Mailbox>> {
    let name = addr
        .name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    match addr
        .address
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
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
    address.parse::<lettre::Address>().map(drop).map_err(|e| {
        Error::data(format!(
            "invalid address `{}` in {what}: {e}",
            shown(address.as_bytes())
        ))
    })
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
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    let mut out: String = text
        .chars()
        .take(MAX_SHOWN)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().count() > MAX_SHOWN {
        out.push('…');
    }
    out
}

/// Longest piece of input echoed in an error (characters).
const MAX_SHOWN: usize = 200;
/// Where the fields we write are folded (RFC 5322 §2.2.3: lines SHOULD be at most 78
/// characters).
const FOLD_AT: usize = 78;

/// `Name: value` with the given line ending; a CR or LF in the value becomes a space, so
/// nothing from `-F` or the config can start a field of its own.
fn field_line(name: &str, value: &str, eol: &[u8]) -> Vec<u8> {
    let value = value.replace(['\r', '\n'], " ");
    let mut line = Vec::with_capacity(name.len() + value.len() + 8);
    line.extend_from_slice(name.as_bytes());
    line.push(b':');
    // Folded before a space once a line would pass FOLD_AT (RFC 5322 §2.2.3): unfolding
    // (removing the line breaks) gives the value back exactly.
    let mut width = line.len();
    // Never fold before the first word of a line (that would leave a blank line).
    let mut word_on_line = false;
    for word in value.split(' ') {
        if word_on_line && !word.is_empty() && width + 1 + word.len() > FOLD_AT {
            line.extend_from_slice(eol);
            width = 0;
        }
        line.push(b' ');
        line.extend_from_slice(word.as_bytes());
        width += 1 + word.len();
        word_on_line |= !word.is_empty();
    }
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
const SPECIALS: &[char] = &[
    '(', ')', '<', '>', '[', ']', ':', ';', '@', '\\', ',', '.', '"',
];

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

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(text: &str) -> Message {
        Message::from_bytes(text.as_bytes().to_vec()).unwrap()
    }

    fn rendered(m: &Message, edits: &HeaderEdits) -> String {
        let bytes: Vec<u8> = m.render(edits).to_vec().unwrap();
        String::from_utf8(bytes).unwrap()
    }

    fn plain(m: &Message) -> String {
        rendered(m, &HeaderEdits::default())
    }

    fn addrs(list: &[Mailbox]) -> Vec<&str> {
        list.iter().map(|m| m.address.as_str()).collect()
    }

    #[test]
    fn a_bare_cr_ends_a_header_line_as_the_server_reads_it() {
        let m =
            msg("To: a@b.example, c@d.example\rBcc: hidden@x.example\nSubject: s\n\nbody\rmore\n");
        assert_eq!(
            addrs(&m.recipients().unwrap()),
            ["a@b.example", "c@d.example", "hidden@x.example"]
        );
        let out = plain(&m);
        assert!(!out.contains("Bcc") && !out.contains("hidden"), "{out:?}");
        assert!(!out.contains('\r'), "LF message, no CR at all: {out:?}");
        assert!(out.ends_with("\n\nbody\nmore\n"), "{out:?}");
        // A CRLF message gets CRLF; a message with no LF at all too.
        let out = plain(&msg("Subject: s\r\nX: a\rY: b\r\n\r\nbody\r\n"));
        assert_eq!(out, "Subject: s\r\nX: a\r\nY: b\r\n\r\nbody\r\n");
        let out = plain(&msg("Subject: s\rTo: a@b.example\r\rbody\r"));
        assert_eq!(out, "Subject: s\r\nTo: a@b.example\r\n\r\nbody\r\n");
    }

    #[test]
    fn an_address_list_that_does_not_parse_whole_is_refused_naming_the_header() {
        for value in [
            " a@b.example (unterminated comment, c@d.example",
            " \"open quote a@b.example",
            " x@y.example> SIZE=1 <z",
            " <a@b.example, c@d.example>",
            " a@b.example)",
        ] {
            let e = parse_addresses(value.as_bytes(), "To").unwrap_err();
            assert_eq!(e.exit_code(), 65, "{value}");
            assert!(e.to_string().contains("in To:"), "{e}");
        }
        for value in [
            " \"Doe, (J)\" <j@d.example>, (a comment (nested)) k@d.example",
            " \"a\\\"b\" <a@b.example>",
            " undisclosed-recipients:;",
        ] {
            assert!(parse_addresses(value.as_bytes(), "To").is_ok(), "{value}");
        }
    }

    #[test]
    fn long_fields_we_write_are_folded_and_unfold_to_the_value() {
        let name = "word ".repeat(60);
        let value = format!("\"{}\" <a@b.example>", name.trim_end());
        let line = field_line("From", &value, b"\r\n");
        let text = String::from_utf8(line).unwrap();
        for l in text.trim_end().split("\r\n") {
            assert!(l.len() <= FOLD_AT, "{l:?}");
        }
        assert!(text.matches("\r\n ").count() > 2, "{text}");
        assert_eq!(text.replace("\r\n", ""), format!("From: {value}"));
        // A short field stays on one line; a word longer than a line is not broken.
        assert_eq!(field_line("Date", "x y", b"\n"), b"Date: x y\n");
        let long = "x".repeat(200);
        assert_eq!(
            field_line("X", &long, b"\n"),
            format!("X: {long}\n").into_bytes()
        );
    }

    #[test]
    fn echoed_input_is_cut_with_an_ellipsis() {
        let e = parse_addresses(format!(" <{}", "a".repeat(5000)).as_bytes(), "To").unwrap_err();
        let line = e.to_string();
        assert!(line.len() < 400 && line.contains('…'), "{line}");
    }

    #[test]
    fn empty_input_is_refused_with_65() {
        let e = Message::read(&b""[..]).unwrap_err();
        assert_eq!(e.exit_code(), 65);
        assert!(e.to_string().contains("empty"));
    }

    #[test]
    fn only_an_mbox_line_is_empty() {
        assert_eq!(
            Message::from_bytes(b"From x Sat Jan  1 00:00:00 2000\n".to_vec())
                .unwrap_err()
                .exit_code(),
            65
        );
    }

    #[test]
    fn nul_byte_anywhere_is_refused_with_65() {
        for input in [
            &b"To: a@b.example\n\nbo\0dy\n"[..],
            b"\0",
            b"Subject: x\0\n\nbody",
        ] {
            let e = Message::from_bytes(input.to_vec()).unwrap_err();
            assert_eq!(e.exit_code(), 65, "{input:?}");
            assert!(e.to_string().contains("NUL"));
        }
    }

    #[test]
    fn read_error_is_io() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("boom"))
            }
        }
        assert_eq!(Message::read(Broken).unwrap_err().exit_code(), 74);
    }

    #[test]
    fn lone_dot_line_does_not_end_input() {
        let m = msg("Subject: x\n\nline\n.\nafter the dot\n");
        assert_eq!(plain(&m), "Subject: x\n\nline\n.\nafter the dot\n");
    }

    #[test]
    fn mbox_from_line_is_dropped() {
        let m =
            msg("From alice@x.example Sat Jan  1 00:00:00 2000\nFrom: alice@x.example\n\nbody\n");
        assert_eq!(plain(&m), "From: alice@x.example\n\nbody\n");
        let m = msg(">From alice Sat Jan  1\r\nSubject: s\r\n\r\nbody\r\n");
        assert_eq!(plain(&m), "Subject: s\r\n\r\nbody\r\n");
    }

    #[test]
    fn from_header_is_not_an_mbox_line() {
        let m = msg("From: a@x.example\n\nbody\n");
        assert_eq!(m.from().unwrap().unwrap().address, "a@x.example");
        assert_eq!(plain(&m), "From: a@x.example\n\nbody\n");
    }

    #[test]
    fn body_mbox_like_lines_are_kept() {
        let m = msg("Subject: s\n\nFrom here on\n>From there\n");
        assert_eq!(plain(&m), "Subject: s\n\nFrom here on\n>From there\n");
    }

    #[test]
    fn bcc_and_resent_bcc_removed_byte_exact_rest_untouched() {
        let input = "Received: x\r\nTo: a@x.example\r\nBcc: hidden1@example.com,\r\n\t=?ISO-8859-1?Q?Andr=E9?= <andre@example.net>\r\nSubject:  spaced   \r\nRESENT-BCC: h2@example.com\r\nbcc:\r\nX-Long: one\r\n two\r\n\r\nBody\r\nBcc: not a header\r\n";
        let m = msg(input);
        assert_eq!(
            plain(&m),
            "Received: x\r\nTo: a@x.example\r\nSubject:  spaced   \r\nX-Long: one\r\n two\r\n\r\nBody\r\nBcc: not a header\r\n"
        );
        assert_eq!(m.removed_fields(), ["Bcc", "Resent-Bcc", "Bcc"]);
    }

    #[test]
    fn bcc_as_last_field_before_body_removed() {
        let m = msg("To: a@x.example\nBcc: b@x.example\n  c@x.example\n\nbody");
        assert_eq!(plain(&m), "To: a@x.example\n\nbody");
    }

    #[test]
    fn header_ends_at_first_non_header_line_and_a_blank_line_is_inserted() {
        let m = msg("Subject: s\nthis is body text\nmore\n");
        assert_eq!(plain(&m), "Subject: s\n\nthis is body text\nmore\n");
        let m = msg("Subject: s\r\nnot: a header because of the space? no: it is\r\n");
        assert!(m.has("not"));
        let m = msg("Subject: s\r\nHello world.\r\n");
        assert_eq!(plain(&m), "Subject: s\r\n\r\nHello world.\r\n");
    }

    #[test]
    fn input_without_header_is_all_body() {
        let m = msg("body\n");
        assert!(!m.has("From") && m.fields.is_empty());
        assert_eq!(plain(&m), "body\n");
        let edits = HeaderEdits {
            add: vec![("Date".into(), "D".into())],
            from: Some("a@x.example".into()),
        };
        assert_eq!(rendered(&m, &edits), "From: a@x.example\nDate: D\n\nbody\n");
        let m = msg(" indented first line\nx: y\n");
        assert_eq!(
            rendered(&m, &edits),
            "From: a@x.example\nDate: D\n\n indented first line\nx: y\n"
        );
    }

    #[test]
    fn headers_without_blank_line_or_body_get_one() {
        let m = msg("Subject: s\n");
        assert_eq!(plain(&m), "Subject: s\n\n");
        let m = msg("Subject: s");
        let edits = HeaderEdits {
            add: vec![("Date".into(), "D".into())],
            from: None,
        };
        assert_eq!(rendered(&m, &edits), "Subject: s\nDate: D\n\n");
    }

    #[test]
    fn added_fields_use_the_message_line_endings() {
        let m = msg("Subject: s\r\n\r\nbody\r\n");
        let edits = HeaderEdits {
            add: vec![
                ("Date".into(), "D".into()),
                ("Message-ID".into(), "<m@x>".into()),
            ],
            from: Some("A <a@x.example>".into()),
        };
        assert_eq!(
            rendered(&m, &edits),
            "Subject: s\r\nFrom: A <a@x.example>\r\nDate: D\r\nMessage-ID: <m@x>\r\n\r\nbody\r\n"
        );
    }

    #[test]
    fn first_from_replaced_in_place_with_its_folding() {
        let m = msg(
            "To: t@x.example\nFrom: root\n (Cron Daemon)\nSubject: s\nFrom: second@x.example\n\nbody\n",
        );
        let edits = HeaderEdits {
            add: vec![],
            from: Some("Cron <a@x.example>".into()),
        };
        assert_eq!(
            rendered(&m, &edits),
            "To: t@x.example\nFrom: Cron <a@x.example>\nSubject: s\nFrom: second@x.example\n\nbody\n"
        );
    }

    #[test]
    fn written_values_cannot_inject_fields() {
        let m = msg("Subject: s\n\nbody\n");
        let edits = HeaderEdits {
            add: vec![],
            from: Some("x\r\nBcc: evil@x.example".into()),
        };
        assert_eq!(
            rendered(&m, &edits),
            "Subject: s\nFrom: x  Bcc: evil@x.example\n\nbody\n"
        );
        assert_eq!(
            format_mailbox(Some("A\r\nBcc: e@x"), "a@x.example"),
            "\"A  Bcc: e@x\" <a@x.example>"
        );
    }

    #[test]
    fn a_large_body_is_spooled_and_sent_unchanged() {
        let body = "line of the body\n".repeat(100_000);
        let input = format!("From: a@b.example\nBcc: x@y.example\nSubject: s\n\n{body}");
        let dir = tempfile::tempdir().unwrap();
        let m = Message::read_spooling(input.as_bytes(), || Some(dir.path().into()), IN_MEMORY_MAX)
            .unwrap();
        assert!(
            m.raw.len() <= IN_MEMORY_MAX + READ_PIECE + 1,
            "{}",
            m.raw.len()
        );
        assert!(!m.rest.is_empty());
        assert_eq!(
            plain(&m),
            format!("From: a@b.example\nSubject: s\n\n{body}")
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn reading_in_pieces_gives_what_reading_at_once_gives() {
        let dir = tempfile::tempdir().unwrap();
        let inputs: [&[u8]; 7] = [
            b"To: a@b.example\rBcc: c@d.example\nSubject: s\n\nbody\rmore\r\nend\r",
            b"From x Sat Jan  1 00:00:00 2000\nSubject: s\r\n\r\nbody\r\n.\r\nafter\r\n",
            b"Subject: s\nX-Long: a\n b\n c\nnot a field\nbody\n",
            b"Subject: s\n\n\xc3\xa9t\xc3\xa9\n",
            b"Subject: only a header\nTo: a@b.example",
            b"Subject: s\r\r\rx\n\nb\r",
            b"no line end at all\rbut a bare CR",
        ];
        for input in inputs {
            let whole = Message::from_bytes(input.to_vec()).unwrap();
            for limit in [0, 1, 5, 17] {
                let m = Message::read_spooling(input, || Some(dir.path().into()), limit).unwrap();
                assert_eq!(plain(&m), plain(&whole), "{input:?} at {limit}");
                let edits = HeaderEdits {
                    add: vec![("Date".into(), "D".into())],
                    from: Some("A <a@b.example>".into()),
                };
                assert_eq!(rendered(&m, &edits), rendered(&whole, &edits));
                assert_eq!(m.eight_bit(), whole.eight_bit());
                assert_eq!(m.recipients().unwrap(), whole.recipients().unwrap());
            }
        }
        let e = Message::read_spooling(&b"Subject: s\n\nbody body\0"[..], || None, 4).unwrap_err();
        assert_eq!(e.exit_code(), 65);
        assert!(e.to_string().contains("at byte 21"), "{e}");
    }

    #[test]
    fn eight_bit_detected_anywhere() {
        assert!(!msg("Subject: s\n\nascii\n").eight_bit());
        assert!(msg("Subject: s\n\nGr\u{fc}\u{df}e\n").eight_bit());
        assert!(msg("Subject: \u{e9}\n\nx\n").eight_bit());
    }

    #[test]
    fn recipients_from_to_cc_bcc_all_occurrences() {
        let m = msg(
            "To: a@x.example, \"B\" <b@x.example>\nCc: c@x.example\nBcc: d@x.example\nTo: e@x.example\nReply-To: r@x.example\n\nbody\n",
        );
        assert_eq!(
            addrs(&m.recipients().unwrap()),
            [
                "a@x.example",
                "b@x.example",
                "c@x.example",
                "d@x.example",
                "e@x.example"
            ]
        );
    }

    #[test]
    fn resent_rule_uses_only_the_first_block() {
        let m = msg(
            "Resent-From: me@x.example\nResent-To: new1@x.example\nResent-Cc: new2@x.example\nResent-Bcc: new3@x.example\n\
             Resent-From: older@x.example\nResent-To: old@x.example\n\
             From: orig@x.example\nTo: orig-to@x.example\nBcc: orig-bcc@x.example\n\nbody\n",
        );
        assert_eq!(
            addrs(&m.recipients().unwrap()),
            ["new1@x.example", "new2@x.example", "new3@x.example"]
        );
    }

    #[test]
    fn resent_block_ends_at_a_non_resent_field() {
        let m = msg(
            "Received: x\nResent-To: a@x.example\nResent-Date: d\nReceived: y\nResent-To: b@x.example\nTo: t@x.example\n\n",
        );
        assert_eq!(addrs(&m.recipients().unwrap()), ["a@x.example"]);
    }

    #[test]
    fn address_lists_flatten_groups_decode_names_and_strip_routes() {
        let list = parse_addresses(
            b" undisclosed-recipients:;, team: a@x.example, <@r.example:b@x.example>;, =?UTF-8?B?SsO8cmdlbg==?= <j@x.de>\n",
            "To",
        )
        .unwrap();
        assert_eq!(addrs(&list), ["a@x.example", "b@x.example", "j@x.de"]);
        assert_eq!(list[2].name.as_deref(), Some("J\u{fc}rgen"));
        assert!(
            parse_addresses(b" undisclosed-recipients:;\n", "To")
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            addrs(&parse_addresses(b"a@x.example; b@x.example", "To").unwrap()),
            ["a@x.example", "b@x.example"]
        );
    }

    #[test]
    fn bare_local_name_is_kept_for_aliases() {
        let m = msg("From: root (Cron Daemon)\nTo: root\n\nbody\n");
        let from = m.from().unwrap().unwrap();
        assert_eq!(
            (from.name.as_deref(), from.address.as_str()),
            (Some("Cron Daemon"), "root")
        );
        assert!(from.is_local());
        let to = m.recipients().unwrap();
        assert_eq!(addrs(&to), ["root"]);
        assert!(to[0].is_local());
    }

    #[test]
    fn invalid_addresses_are_refused_with_65_naming_them() {
        for (value, shows) in [
            (&b" \"quoted local\"@example.com"[..], "@example.com"),
            (b" a@b (x) <c@d>", "a@bc@d"),
            (b" Some Name", "Some Name"),
            (b" a@b.", "a@b."),
        ] {
            let e = parse_addresses(value, "To").unwrap_err();
            assert_eq!(e.exit_code(), 65);
            assert!(e.to_string().contains(shows), "{e}");
            assert!(e.to_string().contains("To"), "{e}");
        }
    }

    #[test]
    fn address_literals_and_utf8_addresses_pass() {
        let list =
            parse_addresses(b" user@[192.0.2.1], j\xc3\xbcrgen@b\xc3\xbccher.de", "To").unwrap();
        assert_eq!(
            addrs(&list),
            ["user@[192.0.2.1]", "j\u{fc}rgen@b\u{fc}cher.de"]
        );
    }

    #[test]
    fn header_names_are_case_insensitive() {
        let m = msg("TO: a@x.example\ncc: b@x.example\nDATE: x\nmessage-id: <x@y>\n\n");
        assert_eq!(
            addrs(&m.recipients().unwrap()),
            ["a@x.example", "b@x.example"]
        );
        assert!(m.has("Date") && m.has("Message-ID"));
    }

    #[test]
    fn mailbox_formatting_quotes_and_encodes() {
        assert_eq!(format_mailbox(None, "a@x.example"), "a@x.example");
        assert_eq!(format_mailbox(Some("  "), "a@x.example"), "a@x.example");
        assert_eq!(
            format_mailbox(Some("CronDaemon"), "a@x.example"),
            "CronDaemon <a@x.example>"
        );
        assert_eq!(
            format_mailbox(Some("Smith, John"), "a@x.example"),
            "\"Smith, John\" <a@x.example>"
        );
        assert_eq!(
            format_mailbox(Some("say \"hi\""), "a@x.example"),
            "\"say \\\"hi\\\"\" <a@x.example>"
        );
        assert_eq!(
            format_mailbox(Some("J\u{fc}rgen"), "j@x.de"),
            "=?UTF-8?B?SsO8cmdlbg==?= <j@x.de>"
        );
    }

    #[test]
    fn long_non_ascii_names_split_into_short_encoded_words() {
        let name = "\u{4f60}\u{597d}".repeat(30);
        let formatted = format_mailbox(Some(&name), "a@x.example");
        let words: Vec<&str> = formatted
            .split(' ')
            .filter(|w| w.starts_with("=?"))
            .collect();
        assert!(words.len() > 1);
        assert!(words.iter().all(|w| w.len() <= 75));
        // Decoding the words gives the name back.
        let back = parse_addresses(formatted.as_bytes(), "From").unwrap();
        assert_eq!(back[0].name.as_deref(), Some(name.as_str()));
    }

    #[test]
    fn obsolete_space_before_colon_is_a_field() {
        let m = msg("Subject : s\nTo : a@x.example\n\nbody\n");
        assert_eq!(addrs(&m.recipients().unwrap()), ["a@x.example"]);
    }
}
