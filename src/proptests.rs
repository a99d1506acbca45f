//! Property tests (proptest) of what reads peer and user input: the message reader, the
//! reply parser, address parsing and the scrubber. Random and mutated inputs never panic, and
//! the invariants hold: no Bcc and no bare CR in what is sent, body bytes preserved, reply
//! lines bounded, no secret left after scrubbing. Kept to a few hundred cases each so that
//! the whole file runs in a few seconds.

use proptest::prelude::*;

use crate::message::{HeaderEdits, Message, parse_addresses};
use crate::smtp::wire::{MAX_REPLY_LINE, MAX_REPLY_LINES, ReplyParser};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Pieces header blocks are made of, hostile ones included.
fn header_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("To: a@b.example".to_owned()),
        Just("Bcc: hidden@x.example".to_owned()),
        Just("bcc:hidden@x.example".to_owned()),
        Just("BCC:\thidden@x.example".to_owned()),
        Just("Resent-Bcc: hidden@x.example".to_owned()),
        Just("Cc: c@d.example (comment".to_owned()),
        Just(" folded continuation".to_owned()),
        Just("\tBcc: not a field".to_owned()),
        Just("Subject: s".to_owned()),
        Just("From: \"A, B\" <a@b.example>".to_owned()),
        Just("X-Odd: =?utf-8?q?x?=".to_owned()),
        Just("no colon line".to_owned()),
        "[ -~]{0,40}",
    ]
}

fn line_end() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("\n"), Just("\r\n"), Just("\r")]
}

/// True when a line of the rendered header block is a Bcc or Resent-Bcc field.
fn has_bcc_field(header: &[u8]) -> bool {
    header
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.first().is_some_and(|b| *b == b' ' || *b == b'\t'))
        .any(|l| {
            let name = l.split(|&b| b == b':').next().unwrap_or_default();
            l.contains(&b':') && {
                let name = String::from_utf8_lossy(name)
                    .trim_end()
                    .to_ascii_lowercase();
                name == "bcc" || name == "resent-bcc"
            }
        })
}

/// The length of the header block: up to the first empty line (LF or CRLF).
fn header_len(out: &[u8]) -> usize {
    let mut pos = 0;
    for line in out.split_inclusive(|&b| b == b'\n') {
        if line == b"\n" || line == b"\r\n" {
            return pos;
        }
        pos += line.len();
    }
    out.len()
}

fn bare_cr(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\r' && bytes.get(i + 1) != Some(&b'\n'))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_message_reader_never_panics_on_random_bytes(raw in proptest::collection::vec(any::<u8>(), 0..2000)) {
        if let Ok(m) = Message::from_bytes(raw) {
            let out = m.render(&HeaderEdits::default()).to_vec().unwrap();
            prop_assert!(!bare_cr(&out));
            let _ = m.recipients();
            let _ = m.from();
        }
    }

    #[test]
    fn no_bcc_and_no_bare_cr_is_sent_and_the_body_is_kept(
        pieces in proptest::collection::vec((header_piece(), line_end()), 1..12),
        body in "[ -~\n]{0,200}",
        from in proptest::option::of("[ -~]{0,30}"),
    ) {
        let mut raw = String::new();
        for (piece, end) in &pieces {
            raw.push_str(piece);
            raw.push_str(end);
        }
        // A blank line whatever the last piece's line end was.
        raw.push_str("\n\n");
        raw.push_str(&body);
        let Ok(m) = Message::from_bytes(raw.into_bytes()) else { return Ok(()) };
        let edits = HeaderEdits {
            add: vec![("Date".to_owned(), "Tue, 1 Dec 2026 11:00:00 +0000".to_owned())],
            from: from.map(|f| format!("{f} <a@b.example>")),
        };
        let out = m.render(&edits).to_vec().unwrap();
        prop_assert!(!bare_cr(&out), "{:?}", String::from_utf8_lossy(&out));
        let header_end = header_len(&out);
        prop_assert!(!has_bcc_field(&out[..header_end]), "{:?}", String::from_utf8_lossy(&out));
        if !body.is_empty() {
            prop_assert!(out.ends_with(body.as_bytes()), "{:?}", String::from_utf8_lossy(&out));
        }
    }

    #[test]
    fn address_parsing_never_panics_and_yields_clean_addresses(value in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(list) = parse_addresses(&value, "To") {
            for m in list {
                prop_assert!(!m.address.is_empty());
                prop_assert!(!m.address.chars().any(char::is_control), "{:?}", m.address);
                if m.address.contains('@') {
                    prop_assert!(m.address.parse::<lettre::Address>().is_ok(), "{:?}", m.address);
                }
            }
        }
    }

    #[test]
    fn address_lists_with_unbalanced_syntax_are_refused(
        good in "[a-z]{1,8}@[a-z]{1,8}\\.example",
        broken in prop_oneof![Just(" ("), Just(" \""), Just(" <x"), Just(" x>"), Just(")")],
        other in "[a-z]{1,8}@[a-z]{1,8}\\.example",
    ) {
        let value = format!("{good}{broken}, {other}");
        prop_assert!(parse_addresses(value.as_bytes(), "To").is_err(), "{value}");
    }

    #[test]
    fn the_reply_parser_never_panics_and_bounds_lines(
        lines in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 1..120),
    ) {
        let mut parser = ReplyParser::default();
        for line in lines {
            match parser.push(&line) {
                Ok(Some(reply)) => {
                    prop_assert!(reply.lines.len() <= MAX_REPLY_LINES);
                    prop_assert!(reply.lines.iter().all(|l| l.len() <= MAX_REPLY_LINE * 3));
                    prop_assert!((100..1000).contains(&reply.code));
                    parser = ReplyParser::default();
                }
                Ok(None) => {}
                Err(_) => parser = ReplyParser::default(),
            }
        }
    }

    #[test]
    fn no_piece_of_a_secret_survives_scrubbing_and_cutting(
        secret in "[!-~]{8,80}",
        prefix in "[ -~]{0,300}",
        cut in 1usize..400,
    ) {
        use base64::Engine as _;
        let secrets = vec![secret.clone()];
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{prefix}{secret}"));
        let json = serde_json::to_string(&secret).unwrap();
        for text in [
            format!("{prefix}{secret} tail"),
            format!("{prefix}{json}"),
            b64,
        ] {
            let out = crate::scrub::printable(&crate::scrub::scrub_with(&text, &secrets), cut);
            prop_assert!(!out.contains(&secret), "{out}");
            // Not even a long prefix of it (as cutting before scrubbing left).
            let head: String = secret.chars().take(8).collect();
            prop_assert!(!out.contains(&head) || prefix.contains(&head), "{out}");
        }
    }
}
