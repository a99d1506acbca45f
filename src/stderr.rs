//! The one door to stderr: every line said to the person at the terminal (or to cron's
//! mail) and every line of the `-v` transcript is written here, and nowhere else (a test
//! of the source holds every other file to it).
//!
//! One door, so that the rules hold for every line without each caller remembering them:
//! the `oauth2-sendmail: ` prefix, registered secrets scrubbed in every encoding
//! ([`crate::scrub`]), control characters escaped, and one length limit. A line says
//! what happened; whether the run failed is the exit code's business (`error`).

use std::io::Write as _;

use crate::scrub;

/// Longest line of outside text we print or keep (characters): an error line, a queued
/// message's last error, a line of a flush report. Long enough for a whole multi-line SMTP
/// reply or Microsoft's JSON error with its description and trace ids; short enough that a
/// peer echoing a megabyte of our input floods neither a terminal nor cron's mail nor a
/// queue file.
pub const MAX_LINE: usize = 2000;

/// Longest `-v` transcript line (characters): an SMTP reply line is at most 512 bytes by
/// RFC 5321, and ours and Graph's status lines are shorter.
const TRANSCRIPT_LINE: usize = 1000;

/// Before every line meant for the user, so that cron's mail and a pipeline's stderr say
/// which program spoke.
const PREFIX: &str = "oauth2-sendmail: ";

/// `oauth2-sendmail: TEXT`, scrubbed, escaped and cut at [`MAX_LINE`].
pub fn line(text: &str) {
    write(&said(text));
}

/// The line [`line`] writes for `text`.
fn said(text: &str) -> String {
    format!("{PREFIX}{}", scrub::for_output(text, MAX_LINE))
}

/// `oauth2-sendmail: account NAME: TEXT`: a line about one account.
pub fn account(name: &str, text: &str) {
    line(&format!("account {name}: {text}"));
}

/// A URL on a line of its own, without the prefix (easy to copy), scrubbed and escaped
/// but never cut: a cut URL would not open.
pub fn url(url: &str) {
    write(&scrub::for_output(url, usize::MAX));
}

/// Who speaks on a line of the `-v` transcript.
#[derive(Clone, Copy)]
pub enum Mark {
    /// `C:` what we sent the SMTP server.
    Client,
    /// `S:` what the SMTP server answered.
    Server,
    /// `->` an HTTP request we made (Graph).
    Request,
    /// `<-` its answer.
    Response,
    /// `--` what we did or decided between the lines.
    Note,
}

impl Mark {
    fn as_str(self) -> &'static str {
        match self {
            Mark::Client => "C:",
            Mark::Server => "S:",
            Mark::Request => "->",
            Mark::Response => "<-",
            Mark::Note => "--",
        }
    }
}

/// One `-v` transcript line: `MARK TEXT`, TEXT scrubbed, escaped and cut at
/// [`TRANSCRIPT_LINE`]. The caller decides whether `-v` was given.
pub fn transcript(mark: Mark, text: &str) {
    write(&transcribed(mark, text));
}

/// The line [`transcript`] writes.
fn transcribed(mark: Mark, text: &str) -> String {
    format!(
        "{} {}",
        mark.as_str(),
        scrub::for_output(text, TRANSCRIPT_LINE)
    )
}

/// The write itself. A stderr that cannot be written (closed, a full disk) is not a reason
/// to panic or to fail a delivery: the line is lost, the exit code still tells.
fn write(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_has_the_prefix_and_no_secret_control_character_or_flood() {
        let secret = "door-test-secret-8f2c91ab";
        scrub::register(secret);
        let said = said(&format!("refused {secret}\x1b[2J{}", "y".repeat(5000)));
        assert!(said.starts_with("oauth2-sendmail: refused <redacted>\\x1b[2J"));
        assert!(!said.contains(secret));
        assert!(said.ends_with('…'));
        let long = super::said(&"y".repeat(5000));
        assert_eq!(
            long.chars().count(),
            PREFIX.len() + MAX_LINE + 1,
            "cut, with …"
        );
    }

    #[test]
    fn a_transcript_line_is_marked_scrubbed_and_cut_shorter() {
        let secret = "door-test-secret-0c77e4d2";
        scrub::register(secret);
        let line = transcribed(Mark::Client, &format!("AUTH XOAUTH2 {secret}"));
        assert_eq!(line, "C: AUTH XOAUTH2 <redacted>");
        let long = transcribed(Mark::Server, &"5".repeat(3000));
        assert_eq!(long.chars().count(), "S: ".len() + TRANSCRIPT_LINE + 1);
    }
}
