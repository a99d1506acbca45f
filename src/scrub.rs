//! Text from outside made safe to print: secrets removed in every encoding a peer might echo
//! them in, control characters escaped, length bounded — in that order, so that no cut ever
//! leaves a prefix of a secret behind.
//!
//! Every secret the process handles (tokens read or received, refresh tokens, passwords,
//! client secrets, codes) is [`register`]ed once; [`scrub`] then removes each of them from a
//! text in raw, percent-encoded (any set of bytes escaped, `%XX` in either case, `+` for
//! space, in any mix), JSON-escaped and base64
//! (standard and URL-safe alphabets, at any byte alignment) forms. The sinks — the stderr
//! line, the log, `notify_cmd`'s environment, `-v`, queue files — call [`scrub`] (or
//! [`for_output`]) on what they write.

use std::fmt::Write as _;
use std::sync::{Mutex, MutexGuard};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

/// What a secret is replaced with.
pub const REDACTED: &str = "<redacted>";
/// Secrets shorter than this are not scrubbed (they would match ordinary words).
const MIN_SECRET: usize = 4;

static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn secrets() -> MutexGuard<'static, Vec<String>> {
    SECRETS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Remembers `secret` for every later [`scrub`].
pub fn register(secret: &str) {
    if secret.len() < MIN_SECRET {
        return;
    }
    let mut all = secrets();
    if !all.iter().any(|s| s == secret) {
        all.push(secret.to_owned());
    }
}

/// `text` with every registered secret removed in every encoding.
#[must_use]
pub fn scrub(text: &str) -> String {
    let all = secrets().clone();
    scrub_with(text, &all)
}

/// `text` without any of `secrets`, in any of the encodings.
#[must_use]
pub fn scrub_with(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_owned();
    for secret in secrets.iter().filter(|s| s.len() >= MIN_SECRET) {
        // Raw and percent-encoded in any mix, whatever the encoder chose to escape.
        out = redact_percent_spellings(&out, secret.as_bytes());
        for form in forms(secret) {
            if out.contains(&form) {
                out = out.replace(&form, REDACTED);
            }
        }
    }
    out
}

/// `text` with every spelling of `secret` in which each byte is either itself or `%XX`
/// (either hex case), and a space may also be `+`, replaced by [`REDACTED`]. Encoders
/// disagree on what to escape (`~` is `%7E` for one form encoder and left alone by
/// another), and a peer may echo the form re-encoded by its own stack, so no single
/// encoding can be guessed.
fn redact_percent_spellings(text: &str, secret: &[u8]) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut at = 0;
    while at < bytes.len() {
        match spelled_at(bytes, at, secret) {
            Some(end) => {
                // A match starts on `%`, `+` or the secret's first byte (a character's
                // first byte) and ends after a whole escape or the secret's last byte: both
                // are character boundaries.
                out.push_str(&text[copied..at]);
                out.push_str(REDACTED);
                copied = end;
                at = end;
            }
            None => at += 1,
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// Where a spelling of `secret` that starts at `at` ends, if one does. Only a `%` in the
/// secret leaves a choice (`%25` or itself); those choices are tried in turn.
fn spelled_at(text: &[u8], at: usize, secret: &[u8]) -> Option<usize> {
    // (position in text, bytes of the secret matched): where to resume after a dead end.
    let mut choices: Vec<(usize, usize)> = Vec::new();
    let (mut t, mut matched) = (at, 0);
    loop {
        let Some(&want) = secret.get(matched) else {
            return Some(t);
        };
        let escaped = match text.get(t..t + 3) {
            Some([b'%', hi, lo]) => hex(*hi).zip(hex(*lo)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        let raw = text.get(t).copied();
        let raw_fits = raw == Some(want) || (want == b' ' && raw == Some(b'+'));
        if escaped == Some(want) {
            if raw_fits {
                // A raw `%` in the secret may also stand for itself.
                choices.push((t + 1, matched + 1));
            }
            (t, matched) = (t + 3, matched + 1);
        } else if raw_fits {
            (t, matched) = (t + 1, matched + 1);
        } else {
            (t, matched) = choices.pop()?;
        }
    }
}

fn hex(digit: u8) -> Option<u8> {
    char::from(digit).to_digit(16).map(|d| d as u8)
}

/// The scrubbed, escaped, cut form of peer text for one output line.
#[must_use]
pub fn for_output(text: &str, max_chars: usize) -> String {
    printable(&scrub(text), max_chars)
}

/// The spellings of `secret` a peer may send back besides the percent-encoded ones:
/// JSON-escaped, and the alignment-independent core of its base64 encodings.
fn forms(secret: &str) -> Vec<String> {
    let mut forms = vec![secret.to_owned()];
    let mut push = |f: String| {
        if f.len() >= MIN_SECRET && !forms.contains(&f) {
            forms.push(f);
        }
    };
    if let Ok(json) = serde_json::to_string(secret) {
        push(json[1..json.len() - 1].to_owned());
        push(json[1..json.len() - 1].replace('/', "\\/"));
    }
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        for shift in 0..3usize {
            // With `shift` bytes before it, the secret's bits start mid-character; only the
            // characters made of its bytes alone are the same in every message around it.
            let mut bytes = vec![0u8; shift];
            bytes.extend_from_slice(secret.as_bytes());
            let encoded = engine.encode(&bytes);
            let skip = if shift == 0 { 0 } else { 4 };
            let whole = (shift + secret.len()) / 3 * 4;
            if whole > skip + 4 {
                push(encoded[skip..whole].to_owned());
            }
        }
    }
    forms
}

/// `text` with control characters escaped (`\x1b`, `\u{9b}`; a tab is a space) and cut to
/// `max_chars` characters with an ellipsis: what came from outside, fit for a terminal.
#[must_use]
pub fn printable(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    for (count, c) in text.chars().enumerate() {
        if count >= max_chars {
            out.push('…');
            return out;
        }
        if c == '\t' {
            out.push(' ');
        } else if c.is_control() || is_format(c) {
            let code = u32::from(c);
            if code < 0x100 {
                let _ = write!(out, "\\x{code:02x}");
            } else {
                let _ = write!(out, "\\u{{{code:x}}}");
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Characters that reorder or hide text on a terminal (bidi overrides, zero-width).
fn is_format(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::*;

    const RT: &str = "0.AXkA-rt/Secret+value=with_odd~chars and space";

    /// One encoder's choice: RFC 3986's unreserved characters and `*` kept.
    fn percent_encode(s: &str, upper: bool) -> String {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'*') {
                out.push(char::from(b));
            } else if upper {
                let _ = write!(out, "%{b:02X}");
            } else {
                let _ = write!(out, "%{b:02x}");
            }
        }
        out
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn a_secret_is_scrubbed_raw_url_encoded_json_escaped_and_base64() {
        let secrets = s(&[RT]);
        let url = format!(
            "refresh_token={}",
            percent_encode(RT, true).replace("%20", "+")
        );
        let json = serde_json::to_string(RT).unwrap();
        for text in [
            format!("echo {RT} end"),
            format!("echo {url}&x=1"),
            format!("echo {} end", percent_encode(RT, false)),
            format!("echo {} end", percent_encode(RT, true)),
            format!("{{\"x\":{json}}}"),
        ] {
            let out = scrub_with(&text, &secrets);
            assert!(!out.contains("Secret"), "{text} → {out}");
            assert!(out.contains(REDACTED), "{out}");
        }
        // base64 of a string that embeds the secret at any offset, as XOAUTH2 does.
        for prefix in ["", "u", "us", "user=a\u{1}auth=Bearer "] {
            for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
                let plain = format!("{prefix}{RT}\u{1}\u{1}");
                let enc = engine.encode(plain.as_bytes());
                let out = scrub_with(&enc, &secrets);
                assert!(out.contains(REDACTED), "{prefix:?}: {out}");
                // At most a few bytes at either edge survive: never the secret.
                let left = out.replace(REDACTED, "");
                assert!(left.len() <= 16 + prefix.len() * 2, "{prefix:?}: {out}");
            }
        }
    }

    #[test]
    fn a_secret_with_a_tilde_is_scrubbed_whatever_the_encoder_escaped() {
        let azure = "aB3Q~k.Jr_5vXw~Ty9-Lm2Nq.Ps7Rt~Uv4Wx_Yz1A";
        let secrets = s(&[azure, RT, "50%off%25"]);
        let every = |text: &str, upper: bool| -> String {
            text.bytes()
                .map(|b| match b {
                    b' ' => "+".to_owned(),
                    b if b.is_ascii_alphanumeric() => char::from(b).to_string(),
                    b if upper => format!("%{b:02X}"),
                    b => format!("%{b:02x}"),
                })
                .collect()
        };
        for text in [
            azure.replace('~', "%7E"),
            azure.replace('~', "%7e"),
            every(azure, false),
            every(RT, true),
            every(RT, false),
            // Mixed: one escape in each case, the rest raw.
            RT.replacen('~', "%7e", 1).replacen('/', "%2F", 1),
            "50%25off%2525".to_owned(),
            "50%off%25".to_owned(),
        ] {
            let out = scrub_with(&format!("x={text}&y=1"), &secrets);
            assert_eq!(out, "x=<redacted>&y=1", "{text}");
        }
        // Text around a near miss is left as it was, multi-byte characters included.
        let out = scrub_with("é aB3Q%7Ek.J ü", &secrets);
        assert_eq!(out, "é aB3Q%7Ek.J ü");
    }

    #[test]
    fn scrubbing_comes_before_the_cut() {
        let secrets = s(&[RT]);
        let text = format!("Received: refresh_token={}", percent_encode(RT, true));
        let out = printable(&scrub_with(&text, &secrets), 30);
        assert!(!out.contains("0.AXkA"), "{out}");
    }

    #[test]
    fn registered_secrets_are_scrubbed_everywhere() {
        register("registered-secret-xyz");
        register("abc"); // too short to scrub safely
        assert_eq!(scrub("a registered-secret-xyz b abc"), "a <redacted> b abc");
    }

    #[test]
    fn control_characters_are_escaped_and_long_text_cut() {
        assert_eq!(
            printable("a\u{1b}[2Jb\r\n\tc\u{9b}d\u{202e}", 100),
            "a\\x1b[2Jb\\x0d\\x0a c\\x9bd\\u{202e}"
        );
        assert_eq!(printable("abcdef", 3), "abc…");
        assert_eq!(printable("abc", 3), "abc");
    }
}
