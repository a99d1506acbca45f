//! The SMTP wire format, without any I/O: commands as types whose `Display` is their
//! exact bytes (CRLF included), reply parsing, EHLO capabilities, and the message codec
//! (CRLF normalisation, and dot-stuffing for DATA, RFC 5321 §4.5.2; none for BDAT).

use std::fmt::{self, Write as _};
use std::net::IpAddr;

use super::Reply;

/// The longest reply line we accept (RFC 5321 §4.5.3.1.5 says 512 octets; servers
/// exceed it with long texts, so allow generously before calling it garbage).
pub const MAX_REPLY_LINE: usize = 4096;
/// The most lines one reply may have (an EHLO reply has about a dozen).
pub const MAX_REPLY_LINES: usize = 100;
/// RFC 5321 §4.5.3.1.4: a command line is at most 512 octets, CRLF included. RFC 4954 §4
/// forbids an initial response that would make `AUTH` longer than that.
pub const MAX_COMMAND_LINE: usize = 512;

/// A command: its `Display` is the exact line on the wire; `log_line` is what `-v` shows.
pub trait Command: fmt::Display {
    /// The line without CRLF, with any secret replaced by `<redacted>`.
    fn log_line(&self) -> String {
        self.to_string().trim_end_matches("\r\n").to_owned()
    }
}

/// `EHLO <domain or address literal>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ehlo {
    pub name: String,
}

impl Ehlo {
    /// EHLO with the local address as an address literal (RFC 5321 §4.1.3): we have no
    /// host name the server could check, and the literal is always true.
    #[must_use]
    pub fn from_ip(ip: IpAddr) -> Ehlo {
        let name = match ip {
            IpAddr::V4(v4) => format!("[{v4}]"),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => format!("[{v4}]"),
                None => format!("[IPv6:{v6}]"),
            },
        };
        Ehlo { name }
    }
}

impl fmt::Display for Ehlo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EHLO {}\r\n", self.name)
    }
}
impl Command for Ehlo {}

/// A command without arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Simple {
    StartTls,
    Data,
    Rset,
    Quit,
}

impl fmt::Display for Simple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Simple::StartTls => "STARTTLS\r\n",
            Simple::Data => "DATA\r\n",
            Simple::Rset => "RSET\r\n",
            Simple::Quit => "QUIT\r\n",
        })
    }
}
impl Command for Simple {}

/// `BDAT <size> [LAST]` (RFC 3030): exactly `size` octets of message follow the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bdat {
    pub size: u64,
    pub last: bool,
}

impl fmt::Display for Bdat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last = if self.last { " LAST" } else { "" };
        write!(f, "BDAT {}{last}\r\n", self.size)
    }
}
impl Command for Bdat {}

/// The SASL mechanisms we speak: both carry an `OAuth2` bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    /// Google's and Microsoft's `XOAUTH2`.
    Xoauth2,
    /// RFC 7628's `OAUTHBEARER`.
    Oauthbearer,
}

impl Mechanism {
    /// The name on the `AUTH` line and in the EHLO reply.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Xoauth2 => "XOAUTH2",
            Mechanism::Oauthbearer => "OAUTHBEARER",
        }
    }
}

/// `AUTH XOAUTH2` or `AUTH OAUTHBEARER`, with the initial response (SASL-IR) or without it.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthStart {
    pub mechanism: Mechanism,
    /// The base64 payload (a secret).
    pub initial_response: Option<String>,
}

impl fmt::Display for AuthStart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.mechanism.name();
        match &self.initial_response {
            Some(ir) => write!(f, "AUTH {name} {ir}\r\n"),
            None => write!(f, "AUTH {name}\r\n"),
        }
    }
}
impl Command for AuthStart {
    fn log_line(&self) -> String {
        let name = self.mechanism.name();
        match self.initial_response {
            Some(_) => format!("AUTH {name} <redacted>"),
            None => format!("AUTH {name}"),
        }
    }
}

/// A SASL response line after a `334`: the payload, or empty to end a failed exchange.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthResponse(pub String);

impl fmt::Display for AuthResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}\r\n", self.0)
    }
}
impl Command for AuthResponse {
    fn log_line(&self) -> String {
        // The empty line and OAUTHBEARER's %x01 end a failed exchange: no secret in them.
        if self.0.is_empty() || self.0 == OAUTHBEARER_ABORT {
            self.0.clone()
        } else {
            "<redacted>".to_owned()
        }
    }
}

/// RFC 7628 §3.2.3: after the server's error (a `334` with base64 JSON), the client
/// answers a single %x01, base64-encoded, and the server then sends its final reply.
pub const OAUTHBEARER_ABORT: &str = "AQ==";

/// The OAUTHBEARER initial client response (RFC 7628 §3.1), base64-encoded:
/// `n,a=USER,^Ahost=HOST^Aport=PORT^Aauth=Bearer TOKEN^A^A`. In the GS2 header's
/// `saslname`, `,` and `=` are written `=2C` and `=3D` (RFC 5801 §4).
#[must_use]
pub fn oauthbearer_payload(user: &str, host: &str, port: u16, access_token: &str) -> String {
    use base64::Engine as _;
    let user = user.replace('=', "=3D").replace(',', "=2C");
    let raw =
        format!("n,a={user},\x01host={host}\x01port={port}\x01auth=Bearer {access_token}\x01\x01");
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// The XOAUTH2 initial client response, base64-encoded (Google's and Microsoft's format).
#[must_use]
pub fn xoauth2_payload(user: &str, access_token: &str) -> String {
    use base64::Engine as _;
    let raw = format!("user={user}\x01auth=Bearer {access_token}\x01\x01");
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// A MAIL FROM parameter (RFC 1870, 6152, 6531, 3461).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailParam {
    Size(u64),
    Body8BitMime,
    SmtpUtf8,
    /// `FULL` or `HDRS`.
    Ret(String),
    /// Sent xtext-encoded.
    EnvId(String),
}

impl fmt::Display for MailParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MailParam::Size(n) => write!(f, "SIZE={n}"),
            MailParam::Body8BitMime => f.write_str("BODY=8BITMIME"),
            MailParam::SmtpUtf8 => f.write_str("SMTPUTF8"),
            MailParam::Ret(r) => write!(f, "RET={r}"),
            MailParam::EnvId(id) => write!(f, "ENVID={}", xtext(id)),
        }
    }
}

/// `MAIL FROM:<addr> [params]`; `None` is the null sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub from: Option<String>,
    pub params: Vec<MailParam>,
}

impl fmt::Display for Mail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MAIL FROM:<{}>", self.from.as_deref().unwrap_or(""))?;
        for p in &self.params {
            write!(f, " {p}")?;
        }
        f.write_str("\r\n")
    }
}
impl Command for Mail {}

/// A RCPT TO parameter (RFC 3461).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptParam {
    /// `NEVER` or a comma list of `SUCCESS`, `FAILURE`, `DELAY`.
    Notify(String),
    /// The original recipient, sent as `rfc822;` + xtext.
    Orcpt(String),
}

impl fmt::Display for RcptParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RcptParam::Notify(n) => write!(f, "NOTIFY={n}"),
            RcptParam::Orcpt(addr) => write!(f, "ORCPT=rfc822;{}", xtext(addr)),
        }
    }
}

/// `RCPT TO:<addr> [params]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rcpt {
    pub to: String,
    pub params: Vec<RcptParam>,
}

impl fmt::Display for Rcpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RCPT TO:<{}>", self.to)?;
        for p in &self.params {
            write!(f, " {p}")?;
        }
        f.write_str("\r\n")
    }
}
impl Command for Rcpt {}

/// RFC 3461 §4: printable ASCII except `+` and `=` as is, every other byte as `+HH`.
#[must_use]
pub fn xtext(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "+{b:02X}");
        }
    }
    out
}

/// Why a reply could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedReply(pub String);

impl fmt::Display for MalformedReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Assembles one reply from its lines (`250-first`, …, `250 last`).
#[derive(Debug, Default)]
pub struct ReplyParser {
    code: Option<u16>,
    lines: Vec<String>,
}

impl ReplyParser {
    /// Takes one line (with or without its CRLF). `Some` when the reply is complete.
    pub fn push(&mut self, line: &[u8]) -> Result<Option<Reply>, MalformedReply> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > MAX_REPLY_LINE {
            return Err(MalformedReply(format!(
                "a reply line longer than {MAX_REPLY_LINE} bytes"
            )));
        }
        let shown = || String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned();
        let code = parse_code(line)
            .ok_or_else(|| MalformedReply(format!("not a reply: {:?}", shown())))?;
        if self.code.is_some_and(|c| c != code) {
            return Err(MalformedReply(format!(
                "reply lines with different codes: {:?}",
                shown()
            )));
        }
        // RFC 5321 §4.2: the text is optional, so `334` alone is a whole last line.
        let last = match line.get(3) {
            None | Some(b' ') => true,
            Some(b'-') => false,
            Some(_) => return Err(MalformedReply(format!("not a reply: {:?}", shown()))),
        };
        self.code = Some(code);
        self.lines
            .push(String::from_utf8_lossy(line.get(4..).unwrap_or_default()).into_owned());
        if last {
            let lines = std::mem::take(&mut self.lines);
            self.code = None;
            return Ok(Some(Reply { code, lines }));
        }
        if self.lines.len() >= MAX_REPLY_LINES {
            return Err(MalformedReply(format!(
                "a reply of more than {MAX_REPLY_LINES} lines"
            )));
        }
        Ok(None)
    }
}

/// Three digits, the first 2 to 5 (RFC 5321 §4.2: no 1yz replies in SMTP).
fn parse_code(line: &[u8]) -> Option<u16> {
    let digits = line.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) || !(b'2'..=b'5').contains(&digits[0]) {
        return None;
    }
    Some(digits.iter().fold(0, |n, d| n * 10 + u16::from(d - b'0')))
}

/// What the server offers in its EHLO reply (only what we use or report).
// One flag per EHLO keyword: they are independent, an enum set would say no more.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub starttls: bool,
    /// Upper-case SASL mechanism names.
    pub auth: Vec<String>,
    pub pipelining: bool,
    /// `Some(0)`: SIZE offered without a limit.
    pub size: Option<u64>,
    pub dsn: bool,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    pub chunking: bool,
    pub enhanced_status_codes: bool,
}

impl Capabilities {
    /// From an EHLO reply: the first line is the server's name, each other line a keyword
    /// with parameters (RFC 5321 §4.1.1.1). Keywords are case-insensitive.
    #[must_use]
    pub fn from_ehlo(reply: &Reply) -> Capabilities {
        let mut caps = Capabilities::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(first) = words.next() else { continue };
            let keyword = first.to_ascii_uppercase();
            match keyword.as_str() {
                "STARTTLS" => caps.starttls = true,
                "PIPELINING" => caps.pipelining = true,
                "DSN" => caps.dsn = true,
                "8BITMIME" => caps.eight_bit_mime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "CHUNKING" => caps.chunking = true,
                "ENHANCEDSTATUSCODES" => caps.enhanced_status_codes = true,
                "SIZE" => caps.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "AUTH" => caps.add_mechanisms(words),
                // Old servers (and Exchange, for old clients) also say `AUTH=LOGIN`.
                k if k.starts_with("AUTH=") => {
                    caps.add_mechanisms(std::iter::once(&first[5..]).chain(words));
                }
                _ => {}
            }
        }
        caps
    }

    fn add_mechanisms<'a>(&mut self, names: impl Iterator<Item = &'a str>) {
        for name in names {
            let name = name.to_ascii_uppercase();
            if !self.auth.contains(&name) {
                self.auth.push(name);
            }
        }
    }

    #[must_use]
    pub fn offers_auth(&self, mechanism: &str) -> bool {
        self.auth.iter().any(|m| m.eq_ignore_ascii_case(mechanism))
    }
}

/// The message codec, fed the message in pieces: bare LF becomes CRLF (a CRLF is left
/// alone, a lone CR too) and `finish` adds a CRLF where the message does not end in a
/// line break. For DATA (`DataEncoder::default()`) it also doubles a `.` that starts a
/// line and ends with `.` CRLF; for BDAT (`DataEncoder::bdat()`) it does neither, so it
/// emits exactly `message_size` bytes. Its state carries across pieces, so any split (even
/// between CR and LF) gives the same bytes.
#[derive(Debug, Clone)]
pub struct DataEncoder {
    /// DATA: dot-stuffing and the `.` terminator line.
    dot_stuffing: bool,
    at_line_start: bool,
    /// The last byte taken was CR: an LF that follows completes a CRLF.
    prev_cr: bool,
}

impl Default for DataEncoder {
    /// The DATA codec.
    fn default() -> Self {
        DataEncoder {
            dot_stuffing: true,
            at_line_start: true,
            prev_cr: false,
        }
    }
}

impl DataEncoder {
    /// The BDAT codec: line endings only; no dot-stuffing, no terminator.
    #[must_use]
    pub fn bdat() -> Self {
        DataEncoder {
            dot_stuffing: false,
            ..DataEncoder::default()
        }
    }

    /// Appends the encoding of `input` to `out`.
    pub fn encode(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while let Some(&first) = input.first() {
            if self.dot_stuffing && self.at_line_start && first == b'.' {
                out.push(b'.');
            }
            if let Some(lf) = input.iter().position(|&b| b == b'\n') {
                let line = &input[..lf];
                out.extend_from_slice(line);
                let cr_before = line.last().map_or(self.prev_cr, |&b| b == b'\r');
                out.extend_from_slice(if cr_before { b"\n" } else { b"\r\n" });
                self.at_line_start = true;
                self.prev_cr = false;
                input = &input[lf + 1..];
            } else {
                out.extend_from_slice(input);
                self.at_line_start = false;
                self.prev_cr = input.last() == Some(&b'\r');
                input = &[];
            }
        }
    }

    /// Ends the message: a final CRLF where it lacks one, then (DATA only) `.` CRLF. A
    /// trailing lone CR is kept as one (like any other lone CR) and gets its own CRLF.
    /// The encoder is then ready for another message of the same kind.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        if self.dot_stuffing {
            out.extend_from_slice(b".\r\n");
        }
        self.at_line_start = true;
        self.prev_cr = false;
    }
}

/// The message size as RFC 1870 counts it for `SIZE=`: CRLF line endings, a final line
/// break, no dot-stuffing, no terminating `.`: exactly what `DataEncoder::bdat()` emits,
/// so it is also the `BDAT` size.
#[cfg(test)]
#[must_use]
pub fn message_size(parts: &[&[u8]]) -> u64 {
    let mut size = MessageSize::default();
    for part in parts {
        size.push(part);
    }
    size.finish()
}

/// `message_size` over a stream of pieces.
#[derive(Debug, Clone, Copy)]
pub struct MessageSize {
    size: u64,
    /// The last byte taken; the start of the message is a line start, so a leading LF
    /// counts as CRLF.
    prev: u8,
}

impl Default for MessageSize {
    fn default() -> Self {
        MessageSize {
            size: 0,
            prev: b'\n',
        }
    }
}

impl MessageSize {
    pub fn push(&mut self, piece: &[u8]) {
        let Some(&last) = piece.last() else {
            return;
        };
        let mut bare_lf = 0u64;
        let mut prev = self.prev;
        for &b in piece {
            bare_lf += u64::from(b == b'\n' && prev != b'\r');
            prev = b;
        }
        self.size += piece.len() as u64 + bare_lf;
        self.prev = last;
    }

    #[must_use]
    pub fn finish(self) -> u64 {
        self.size + if self.prev == b'\n' { 0 } else { 2 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_bytes() {
        let ehlo = Ehlo::from_ip("127.0.0.1".parse().unwrap());
        assert_eq!(ehlo.to_string(), "EHLO [127.0.0.1]\r\n");
        assert_eq!(
            Ehlo::from_ip("2001:db8::1".parse().unwrap()).to_string(),
            "EHLO [IPv6:2001:db8::1]\r\n"
        );
        assert_eq!(
            Ehlo::from_ip("::ffff:10.0.0.1".parse().unwrap()).to_string(),
            "EHLO [10.0.0.1]\r\n"
        );
        assert_eq!(Simple::StartTls.to_string(), "STARTTLS\r\n");
        assert_eq!(Simple::Data.to_string(), "DATA\r\n");
        assert_eq!(Simple::Rset.to_string(), "RSET\r\n");
        assert_eq!(Simple::Quit.to_string(), "QUIT\r\n");
        assert_eq!(Simple::Quit.log_line(), "QUIT");
        let last = Bdat {
            size: 1234,
            last: true,
        };
        assert_eq!(last.to_string(), "BDAT 1234 LAST\r\n");
        assert_eq!(last.log_line(), "BDAT 1234 LAST");
        let chunk = Bdat {
            size: 0,
            last: false,
        };
        assert_eq!(chunk.to_string(), "BDAT 0\r\n");
    }

    #[test]
    fn the_oauthbearer_payload_is_rfc_7628s_with_the_gs2_name_escaped() {
        use base64::Engine as _;
        let decode = |p: &str| {
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(p).unwrap()).unwrap()
        };
        // RFC 7628 §4.1's example, with its host, port and token.
        assert_eq!(
            decode(&oauthbearer_payload(
                "user@example.com",
                "server.example.com",
                143,
                "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="
            )),
            "n,a=user@example.com,\x01host=server.example.com\x01port=143\x01\
             auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01"
        );
        assert!(
            decode(&oauthbearer_payload("a,b=c@d", "h", 587, "t"))
                .starts_with("n,a=a=2Cb=3Dc@d,\x01")
        );
    }

    #[test]
    fn auth_bytes_and_redaction() {
        let payload = xoauth2_payload("a@b.c", "tok");
        // base64("user=a@b.c\x01auth=Bearer tok\x01\x01")
        assert_eq!(payload, "dXNlcj1hQGIuYwFhdXRoPUJlYXJlciB0b2sBAQ==");
        let inline = AuthStart {
            mechanism: Mechanism::Xoauth2,
            initial_response: Some(payload.clone()),
        };
        assert_eq!(inline.to_string(), format!("AUTH XOAUTH2 {payload}\r\n"));
        assert_eq!(inline.log_line(), "AUTH XOAUTH2 <redacted>");
        let bare = AuthStart {
            mechanism: Mechanism::Oauthbearer,
            initial_response: None,
        };
        assert_eq!(bare.to_string(), "AUTH OAUTHBEARER\r\n");
        assert_eq!(bare.log_line(), "AUTH OAUTHBEARER");
        assert_eq!(AuthResponse(OAUTHBEARER_ABORT.into()).log_line(), "AQ==");
        let resp = AuthResponse(payload.clone());
        assert_eq!(resp.to_string(), format!("{payload}\r\n"));
        assert_eq!(resp.log_line(), "<redacted>");
        assert_eq!(AuthResponse(String::new()).to_string(), "\r\n");
    }

    #[test]
    fn mail_bytes() {
        let null = Mail {
            from: None,
            params: vec![],
        };
        assert_eq!(null.to_string(), "MAIL FROM:<>\r\n");
        let full = Mail {
            from: Some("me@x.org".into()),
            params: vec![
                MailParam::Size(1234),
                MailParam::Body8BitMime,
                MailParam::SmtpUtf8,
                MailParam::Ret("HDRS".into()),
                MailParam::EnvId("id+1=x y\u{e9}".into()),
            ],
        };
        assert_eq!(
            full.to_string(),
            "MAIL FROM:<me@x.org> SIZE=1234 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=id+2B1+3Dx+20y+C3+A9\r\n"
        );
    }

    #[test]
    fn rcpt_bytes() {
        let plain = Rcpt {
            to: "you@y.org".into(),
            params: vec![],
        };
        assert_eq!(plain.to_string(), "RCPT TO:<you@y.org>\r\n");
        let dsn = Rcpt {
            to: "a+b@y.org".into(),
            params: vec![
                RcptParam::Notify("SUCCESS,FAILURE".into()),
                RcptParam::Orcpt("a+b@y.org".into()),
            ],
        };
        assert_eq!(
            dsn.to_string(),
            "RCPT TO:<a+b@y.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bb@y.org\r\n"
        );
    }

    fn parse(text: &[u8]) -> Result<Reply, MalformedReply> {
        let mut p = ReplyParser::default();
        for line in text.split_inclusive(|&b| b == b'\n') {
            if let Some(r) = p.push(line)? {
                return Ok(r);
            }
        }
        Err(MalformedReply("incomplete".into()))
    }

    #[test]
    fn replies() {
        let r = parse(
            b"250-fake.outlook.test Hello [127.0.0.1]\r\n250-SIZE 157286400\r\n250 PIPELINING\r\n",
        )
        .unwrap();
        assert_eq!(r.code, 250);
        assert_eq!(
            r.lines,
            [
                "fake.outlook.test Hello [127.0.0.1]",
                "SIZE 157286400",
                "PIPELINING"
            ]
        );
        let r = parse(b"334\r\n").unwrap();
        assert_eq!((r.code, r.lines.as_slice()), (334, &[String::new()][..]));
        let r = parse(b"334 \r\n").unwrap();
        assert_eq!(r.lines, [""]);
        let r = parse(b"550 5.1.1 no such user\r\n").unwrap();
        assert_eq!(r.enhanced(), Some("5.1.1"));
        // LF alone is tolerated from servers.
        assert_eq!(parse(b"235 2.7.0 ok\n").unwrap().code, 235);
    }

    #[test]
    fn garbage_replies() {
        for bad in [
            &b"hello\r\n"[..],
            b"25\r\n",
            b"2500 x\r\n",
            b"abc ok\r\n",
            b"150 one-xx\r\n",
            b"650 x\r\n",
            b"250-a\r\n251 b\r\n",
            b"250_x\r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let long = [b"250 ".as_slice(), &[b'x'; MAX_REPLY_LINE]].concat();
        assert!(parse(&long).is_err());
        let many = b"250-x\r\n".repeat(MAX_REPLY_LINES);
        assert!(parse(&[many.as_slice(), b"250 x\r\n"].concat()).is_err());
        let just_enough = b"250-x\r\n".repeat(MAX_REPLY_LINES - 1);
        assert!(parse(&[just_enough.as_slice(), b"250 x\r\n"].concat()).is_ok());
    }

    #[test]
    fn capabilities() {
        let r = parse(
            b"250-fake.outlook.test Hello [127.0.0.1]\r\n250-SIZE 157286400\r\n250-pipelining\r\n\
              250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-CHUNKING\r\n\
              250-AUTH LOGIN xoauth2\r\n250-AUTH=PLAIN\r\n250 STARTTLS\r\n",
        )
        .unwrap();
        let c = Capabilities::from_ehlo(&r);
        assert_eq!(
            c,
            Capabilities {
                starttls: true,
                auth: vec!["LOGIN".into(), "XOAUTH2".into(), "PLAIN".into()],
                pipelining: true,
                size: Some(157_286_400),
                dsn: true,
                eight_bit_mime: true,
                smtputf8: true,
                chunking: true,
                enhanced_status_codes: true,
            }
        );
        assert!(c.offers_auth("XOAUTH2"));
        let bare = Capabilities::from_ehlo(&parse(b"250-x\r\n250 SIZE\r\n").unwrap());
        assert_eq!(bare.size, Some(0));
        // The greeting line is not a keyword.
        let only = Capabilities::from_ehlo(&parse(b"250 STARTTLS\r\n").unwrap());
        assert!(!only.starttls);
    }

    fn encode(parts: &[&[u8]], chunk: usize) -> Vec<u8> {
        encode_with(DataEncoder::default(), parts, chunk)
    }

    fn encode_with(mut enc: DataEncoder, parts: &[&[u8]], chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for part in parts {
            for piece in part.chunks(chunk) {
                enc.encode(piece, &mut out);
            }
        }
        enc.finish(&mut out);
        out
    }

    /// Every case at every chunk size, as one part and split in two parts anywhere.
    fn check(input: &[u8], expected: &[u8]) {
        for chunk in [1, 2, 3, 5, 64 * 1024] {
            assert_eq!(
                String::from_utf8_lossy(&encode(&[input], chunk)),
                String::from_utf8_lossy(expected),
                "chunk {chunk}"
            );
        }
        for split in 0..=input.len() {
            let (a, b) = input.split_at(split);
            assert_eq!(encode(&[a, b], 7), expected, "split at {split}");
        }
        let size = message_size(&[input]);
        let unstuffed = expected.len() - 3 - count_stuffed(expected);
        assert_eq!(
            size,
            unstuffed as u64,
            "SIZE of {:?}",
            String::from_utf8_lossy(input)
        );
        // BDAT: the same bytes without dot-stuffing and terminator, `size` of them.
        let bdat = encode_with(DataEncoder::bdat(), &[input], 3);
        assert_eq!(bdat, unstuff(expected));
        assert_eq!(bdat.len() as u64, size);
    }

    /// DATA bytes back to the message: each line's leading `.` removed, `.` CRLF dropped.
    fn unstuff(encoded: &[u8]) -> Vec<u8> {
        let body = encoded.strip_suffix(b".\r\n").expect("terminator");
        let mut out = Vec::new();
        for line in body.split_inclusive(|&b| b == b'\n') {
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
        }
        out
    }

    fn count_stuffed(encoded: &[u8]) -> usize {
        let mut n = usize::from(encoded.starts_with(b".."));
        n += encoded.windows(3).filter(|w| w == b"\n..").count();
        n
    }

    #[test]
    fn data_codec() {
        check(b"a\nb\n", b"a\r\nb\r\n.\r\n");
        check(b"a\r\nb\r\n", b"a\r\nb\r\n.\r\n");
        check(b"a\r\nb", b"a\r\nb\r\n.\r\n");
        check(b"no newline", b"no newline\r\n.\r\n");
        check(b".\n", b"..\r\n.\r\n");
        check(b"x\n.\ny\n", b"x\r\n..\r\ny\r\n.\r\n");
        check(b"x\r\n.\r\n", b"x\r\n..\r\n.\r\n");
        check(b"x\n..dots\n.", b"x\r\n...dots\r\n..\r\n.\r\n");
        check(
            b"mixed\r\nbare\nlone\rcr\n",
            b"mixed\r\nbare\r\nlone\rcr\r\n.\r\n",
        );
        check(b"\r.not a line start\n", b"\r.not a line start\r\n.\r\n");
        check(b"ends in cr\r", b"ends in cr\r\r\n.\r\n");
        check(b"\n\n", b"\r\n\r\n.\r\n");
        check(
            b"8bit \xe9\xff\x80 \xc3\xa9\n",
            b"8bit \xe9\xff\x80 \xc3\xa9\r\n.\r\n",
        );
        check(b"", b".\r\n");
    }

    /// Every message of up to 6 bytes from `a . CR LF é`, whole and split anywhere: the
    /// BDAT encoding is exactly `message_size` bytes, is the DATA encoding unstuffed, and
    /// has only CRLF line breaks, with one at the end of a non-empty message.
    #[test]
    fn bdat_size_is_exactly_the_bytes_sent() {
        const ALPHABET: [u8; 5] = [b'a', b'.', b'\r', b'\n', 0xe9];
        let mut checked = 0;
        for len in 0..=6u32 {
            for mut n in 0..ALPHABET.len().pow(len) {
                let mut input = Vec::new();
                for _ in 0..len {
                    input.push(ALPHABET[n % ALPHABET.len()]);
                    n /= ALPHABET.len();
                }
                let whole = encode_with(DataEncoder::bdat(), &[&input], input.len().max(1));
                let size = message_size(&[&input]);
                assert_eq!(whole.len() as u64, size, "{input:?}");
                assert_eq!(whole, unstuff(&encode(&[&input], 64)), "{input:?}");
                for (i, &b) in whole.iter().enumerate() {
                    if b == b'\n' {
                        assert!(i > 0 && whole[i - 1] == b'\r', "bare LF in {whole:?}");
                    }
                }
                assert!(input.is_empty() || whole.ends_with(b"\r\n"), "{whole:?}");
                for split in 0..=input.len() {
                    let (a, b) = input.split_at(split);
                    assert_eq!(message_size(&[a, b]), size, "{input:?} at {split}");
                    let pieces = encode_with(DataEncoder::bdat(), &[a, b], 1);
                    assert_eq!(pieces, whole, "{input:?} split at {split}");
                }
                checked += 1;
            }
        }
        assert_eq!(checked, (0..=6).map(|l| 5usize.pow(l)).sum::<usize>());
        // One encoder, several messages: each is encoded from a fresh line start.
        let mut enc = DataEncoder::bdat();
        let mut out = Vec::new();
        enc.encode(b"x\r", &mut out);
        enc.finish(&mut out);
        enc.encode(b".\n", &mut out);
        enc.finish(&mut out);
        assert_eq!(out, b"x\r\r\n.\r\n");
    }

    #[test]
    fn message_size_counts_parts_across_boundaries() {
        assert_eq!(message_size(&[b"a\r", b"\nb"]), 6);
        assert_eq!(message_size(&[b"a", b"\n"]), 3);
        assert_eq!(message_size(&[]), 0);
    }
}
