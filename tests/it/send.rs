//! The send path end to end: the real binary in sendmail mode, a token from the cache (or
//! refreshed at the fake identity platform over HTTPS), submitted to the fake SMTP server
//! over STARTTLS with XOAUTH2. Each test checks the exit code, stdout/stderr, what the
//! server saw, and that no token ever shows in any output.

use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;

use super::fake_idp::Failure;
use super::fake_smtp::{Behaviour, Delivery, FakeSmtp};
use super::setup::{BUSYBOX_CRON, CRONIE, DEBIAN_CRON, SYSTEMD_CRON, Setup};
use super::support::{Run, TestCa, now, run_command};

/// A sandbox with one account `work` (alice@contoso.com) pointing at a fake SMTP server
/// and a fake token endpoint that share a CA; the cache holds a token the server accepts.
struct World {
    setup: Setup,
    smtp: FakeSmtp,
    /// The cached access token (every output is checked for it).
    token: String,
    refresh: String,
}

impl std::ops::Deref for World {
    type Target = Setup;

    fn deref(&self) -> &Setup {
        &self.setup
    }
}

impl World {
    fn new() -> World {
        World::with(Behaviour::default(), "")
    }

    /// `behaviour` for the server, accepting every token the identity platform issued;
    /// `extra` TOML lines for the account.
    fn with(behaviour: Behaviour, extra: &str) -> World {
        World::build(behaviour, extra, true)
    }

    /// A server that refuses every token.
    fn refusing_tokens(behaviour: Behaviour) -> World {
        World::build(behaviour, "", false)
    }

    fn build(behaviour: Behaviour, extra: &str, accept_issued: bool) -> World {
        let setup = super::setup::setup();
        let smtp = setup.smtp_accepting_issued(behaviour, accept_issued);
        let world = World {
            token: setup.idp.issue_access_token(),
            refresh: setup.idp.issue_refresh_token(),
            setup,
            smtp,
        };
        world.config(extra);
        world.seed(&json!({
            "access_token": world.token,
            "expires_at": now() + 3600,
            "refresh_token": world.refresh,
        }));
        world
    }

    fn config(&self, extra: &str) {
        self.config_with_port(self.smtp.port(), extra);
    }

    fn config_with_port(&self, port: u16, extra: &str) {
        self.account()
            .top("[aliases]\nroot = \"ops@contoso.com\"\n")
            .smtp("127.0.0.1", port)
            .extra(&format!(
                "from = [\"*@contoso.com\"]\nqueue = \"never\"\n{extra}"
            ))
            .write();
    }

    /// Replaces the cached access token with an expired one (the refresh token stays).
    fn expire_token(&self) {
        self.sandbox.seed_token(
            "work",
            &json!({"access_token": "at-stale", "expires_at": now() - 5, "refresh_token": self.refresh}),
        );
    }

    fn send(&self, args: &[&str], message: &[u8]) -> Run {
        let run = self.sandbox.run(args, message);
        self.assert_no_secret(&run);
        run
    }

    /// Every token this world knows, cached or issued, is absent from the run's output.
    fn assert_no_secret(&self, run: &Run) {
        run.assert_never_shows(&self.token);
        run.assert_never_shows(&self.refresh);
        for t in self.idp.valid_access_tokens().lock().unwrap().iter() {
            run.assert_never_shows(t);
        }
    }

    fn delivered(&self) -> Vec<Delivery> {
        self.smtp.deliveries()
    }

    fn stored_refresh_token(&self) -> String {
        self.stored()["refresh_token"].as_str().unwrap().to_owned()
    }
}

const MESSAGE: &[u8] = b"From: Alice <alice@contoso.com>\nTo: Bob <bob@fabrikam.example>\n\
Cc: carol@fabrikam.example\nBcc: dave@fabrikam.example\nSubject: hi\n\
Date: Sun, 22 Nov 2026 21:59:36 +0000\nMessage-ID: <m1@contoso.com>\n\nHello.\n";

fn crlf(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, &b) in text.iter().enumerate() {
        if b == b'\n' && (i == 0 || text[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

#[test]
fn mutt_send_is_silent_pipelined_and_authenticated_inline() {
    let w = World::new();
    let run = w.send(&["-oi", "-oem", "--", "bob@fabrikam.example"], MESSAGE);
    run.assert_silent_success();
    let d = w.delivered();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].from, "alice@contoso.com");
    assert_eq!(d[0].rcpts, ["bob@fabrikam.example"]);
    // MAIL, RCPT and BDAT LAST in one flight (PIPELINING, CHUNKING, one recipient), AUTH
    // with the initial response.
    let flights = w.smtp.flights_of(&["MAIL", "RCPT", "BDAT"]);
    assert_eq!(flights.len(), 3);
    assert!(flights.iter().all(|f| *f == flights[0]), "{flights:?}");
    assert!(w.smtp.flights_of(&["DATA"]).is_empty());
    let auth = w.smtp.auth_attempts();
    assert_eq!(auth.len(), 1);
    assert!(auth[0].accepted && auth[0].inline);
    assert_eq!(auth[0].user, "alice@contoso.com");
    // Bcc is never transmitted; the rest is as written.
    assert!(!contains(&d[0].data, "Bcc:"));
    assert!(contains(&d[0].data, "To: Bob <bob@fabrikam.example>\r\n"));
    assert!(d[0].data.ends_with(b"\r\n\r\nHello.\r\n"));
    assert_eq!(
        w.idp.requests().len(),
        0,
        "a valid cached token needs no HTTP request"
    );
}

/// A caller: its name, its arguments, its message, the expected envelope sender and
/// recipients.
type CallerCase<'a> = (&'a str, Vec<&'a str>, &'a [u8], &'a str, Vec<&'a str>);

/// What each real caller passes (contract §2), and who must receive the message.
// The table of callers reads best in one place.
#[allow(clippy::too_many_lines)]
#[test]
fn every_callers_flags_deliver() {
    let cron_debian: &[u8] =
        b"From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@host> ls\n\nout\n";
    let cronie: &[u8] = b"From: root (Cron Daemon)\nTo: root\nSubject: Cron\nAuto-Submitted: auto-generated\n\nout\n";
    let cases: Vec<CallerCase> = vec![
        (
            "mutt",
            vec!["-oi", "--", "bob@fabrikam.example"],
            MESSAGE,
            "alice@contoso.com",
            vec!["bob@fabrikam.example"],
        ),
        (
            "mutt -f",
            vec![
                "-oi",
                "-f",
                "alice@contoso.com",
                "--",
                "bob@fabrikam.example",
            ],
            MESSAGE,
            "alice@contoso.com",
            vec!["bob@fabrikam.example"],
        ),
        (
            "emacs",
            vec!["-oi", "-t"],
            MESSAGE,
            "alice@contoso.com",
            vec![
                "bob@fabrikam.example",
                "carol@fabrikam.example",
                "dave@fabrikam.example",
            ],
        ),
        (
            "mu4e",
            vec![
                "-oi",
                "-f",
                "alice@contoso.com",
                "--read-envelope-from",
                "-t",
            ],
            MESSAGE,
            "alice@contoso.com",
            vec![
                "bob@fabrikam.example",
                "carol@fabrikam.example",
                "dave@fabrikam.example",
            ],
        ),
        (
            "git send-email",
            vec!["-i", "bob@fabrikam.example", "carol@fabrikam.example"],
            MESSAGE,
            "alice@contoso.com",
            vec!["bob@fabrikam.example", "carol@fabrikam.example"],
        ),
        (
            "debian cron",
            DEBIAN_CRON.to_vec(),
            cron_debian,
            "alice@contoso.com",
            vec!["ops@contoso.com"],
        ),
        (
            "cronie",
            CRONIE.to_vec(),
            cronie,
            "alice@contoso.com",
            vec!["ops@contoso.com"],
        ),
        (
            "busybox",
            BUSYBOX_CRON.to_vec(),
            cronie,
            "alice@contoso.com",
            vec!["ops@contoso.com"],
        ),
        (
            "systemd-cron",
            SYSTEMD_CRON.to_vec(),
            cron_debian,
            "alice@contoso.com",
            vec!["ops@contoso.com"],
        ),
        (
            "mailx",
            vec!["-i", "bob@fabrikam.example"],
            MESSAGE,
            "alice@contoso.com",
            vec!["bob@fabrikam.example"],
        ),
        (
            "script",
            vec!["bob@fabrikam.example"],
            b"just a body\n",
            "alice@contoso.com",
            vec!["bob@fabrikam.example"],
        ),
    ];
    for (who, args, message, from, rcpts) in cases {
        let w = World::new();
        let run = w.send(&args, message);
        assert_eq!(
            (run.code, run.stdout.as_str(), run.stderr.as_str()),
            (0, "", ""),
            "{who}"
        );
        let d = w.delivered();
        assert_eq!(d.len(), 1, "{who}");
        assert_eq!(d[0].from, from, "{who}");
        assert_eq!(d[0].rcpts, rcpts, "{who}");
        assert!(!contains(&d[0].data, "\nBcc:"), "{who}: Bcc leaked");
        if who.contains("cron") || who == "busybox" {
            // Exchange refuses a From the mailbox may not send as: cron's is rewritten.
            // -F names the sender; without it the comment cron wrote is kept as the name.
            let name = if args.contains(&"-FCronDaemon") {
                "CronDaemon"
            } else {
                "Cron Daemon"
            };
            assert!(
                contains(&d[0].data, &format!("From: {name} <alice@contoso.com>\r\n")),
                "{who}: {}",
                String::from_utf8_lossy(&d[0].data)
            );
            assert!(
                contains(&d[0].data, "\r\nDate: ") && contains(&d[0].data, "\r\nMessage-ID: <"),
                "{who}"
            );
        }
    }
}

#[test]
fn resent_bcc_is_removed_and_resent_recipients_used() {
    let w = World::new();
    let message = b"Resent-From: alice@contoso.com\nResent-To: erin@fabrikam.example\n\
Resent-Bcc: frank@fabrikam.example\nFrom: bob@fabrikam.example\nTo: alice@contoso.com\n\
Subject: fwd\n\nbody\n";
    w.send(&["-t"], message).assert_silent_success();
    let d = w.delivered();
    assert_eq!(
        d[0].rcpts,
        ["erin@fabrikam.example", "frank@fabrikam.example"]
    );
    assert!(!contains(&d[0].data, "Resent-Bcc"));
    assert!(!contains(&d[0].data, "frank@"));
}

#[test]
fn body_arrives_byte_for_byte() {
    let w = World::new();
    // Lone dots, dot-led lines, bare LF and CRLF mixed, 8-bit bytes, a long line, no final newline.
    let mut message = b"From: alice@contoso.com\nTo: bob@fabrikam.example\nSubject: bytes\n\
Date: Sun, 22 Nov 2026 21:59:36 +0000\nMessage-ID: <b@contoso.com>\n\n.\n..\n.dot\r\nline\r\n\
caf\xc3\xa9 \xff\n\n\n"
        .to_vec();
    message.extend(std::iter::repeat_n(b'x', 1200));
    message.extend_from_slice(b"\n.\nend without newline");
    w.send(&["bob@fabrikam.example"], &message)
        .assert_silent_success();
    let d = w.delivered();
    assert_eq!(d[0].data, crlf(&message));
    assert!(
        d[0].mail_params.iter().any(|p| p == "BODY=8BITMIME"),
        "{:?}",
        d[0].mail_params
    );
}

#[test]
fn a_large_message_is_spooled_and_arrives_byte_for_byte_without_its_bcc() {
    for chunking in [true, false] {
        let w = World::with(
            Behaviour {
                chunking,
                ..Behaviour::default()
            },
            "",
        );
        let head = "From: alice@contoso.com\nTo: bob@fabrikam.example\nBcc: dave@fabrikam.example\n\
                    Subject: big\nDate: Sun, 22 Nov 2026 21:59:36 +0000\nMessage-ID: <big@contoso.com>\n\n";
        // Over 3 MB: past what is kept in memory. Dot-led lines and 8-bit bytes throughout,
        // so the codec meets them at every offset of the pieces it reads.
        let mut body = Vec::new();
        for i in 0..60_000u32 {
            body.extend_from_slice(format!(".{i} café line of the body {i:08}\n").as_bytes());
        }
        body.extend_from_slice(b".\nend without newline");
        let mut message = head.as_bytes().to_vec();
        message.extend_from_slice(&body);
        w.send(&["-t"], &message).assert_silent_success();
        let d = w.delivered();
        assert_eq!(d.len(), 1);
        let mut expected = head
            .replace("Bcc: dave@fabrikam.example\n", "")
            .into_bytes();
        expected.extend_from_slice(&body);
        assert!(
            d[0].data == crlf(&expected),
            "chunking {chunking}: the message changed"
        );
        assert_eq!(
            d[0].rcpts,
            ["bob@fabrikam.example", "dave@fabrikam.example"]
        );
        // The temporary copy had no name and is gone; its folder is private.
        let spool = w.sandbox.path().join("state/oauth2-sendmail/spool");
        assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&spool).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o700);
    }
}

#[test]
fn message_ending_in_crlf_gets_no_extra_blank_line() {
    let w = World::new();
    let message = b"From: alice@contoso.com\r\nTo: bob@fabrikam.example\r\nDate: Sun, 22 Nov 2026 21:59:36 +0000\r\nMessage-ID: <c@contoso.com>\r\n\r\nbody\r\n";
    w.send(&["bob@fabrikam.example"], message)
        .assert_silent_success();
    assert_eq!(w.delivered()[0].data, message);
}

#[test]
fn expired_token_is_refreshed_once_and_the_rotated_refresh_token_saved() {
    let w = World::new();
    w.expire_token();
    w.send(&["bob@fabrikam.example"], MESSAGE)
        .assert_silent_success();
    assert_eq!(w.idp.refresh_count(), 1);
    assert_eq!(w.delivered().len(), 1);
    let stored = w.stored_refresh_token();
    assert_ne!(stored, w.refresh, "the rotated refresh token is saved");
    assert!(w.idp.refresh_token_valid(&stored));
    // The next send uses the new cached token: no second refresh.
    w.send(&["bob@fabrikam.example"], MESSAGE)
        .assert_silent_success();
    assert_eq!(w.idp.refresh_count(), 1);
}

#[test]
fn twenty_concurrent_sends_with_an_expired_token_refresh_once() {
    let w = World::new();
    w.expire_token();
    // Old refresh tokens die on use: a second refresh would fail, so all 20 succeed only
    // if they share one refresh.
    w.idp.set_rotation_revokes_old(true);
    w.idp.set_delay(Duration::from_millis(300));
    let children: Vec<_> = (0..20)
        .map(|_| {
            let mut cmd = w.sandbox.command(&["bob@fabrikam.example"]);
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = cmd.spawn().unwrap();
            std::io::Write::write_all(child.stdin.as_mut().unwrap(), MESSAGE).unwrap();
            drop(child.stdin.take());
            child
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout.is_empty() && out.stderr.is_empty());
    }
    assert_eq!(w.idp.refresh_count(), 1);
    assert_eq!(w.delivered().len(), 20);
}

#[test]
fn a_refused_cached_token_forces_one_refresh_and_one_retry() {
    let w = World::new();
    // A token the cache believes valid but the server refuses (revoked, wrong scope).
    w.sandbox.seed_token(
        "work",
        &json!({"access_token": "at-revoked", "expires_at": now() + 3600, "refresh_token": w.refresh}),
    );
    let run = w.send(&["bob@fabrikam.example"], MESSAGE);
    run.assert_silent_success();
    run.assert_never_shows("at-revoked");
    let auth = w.smtp.auth_attempts();
    assert_eq!(
        auth.iter().map(|a| a.accepted).collect::<Vec<_>>(),
        [false, true]
    );
    assert_eq!(
        w.smtp.connections(),
        1,
        "the retry uses the same connection"
    );
    assert_eq!(w.idp.refresh_count(), 1);
    assert_eq!(w.delivered().len(), 1);
}

#[test]
fn gmail_style_challenge_is_answered_and_reported() {
    let w = World::refusing_tokens(Behaviour {
        challenge_on_failure: true,
        ..Behaviour::default()
    });
    let run = w.send(&["bob@fabrikam.example"], MESSAGE);
    let line = run.assert_failure(77);
    assert!(line.contains("535"), "{line}");
    assert!(line.contains("account work"), "{line}");
    // One refresh and retry after the first refusal, then the final answer.
    assert_eq!(w.smtp.auth_attempts().len(), 2);
    assert_eq!(w.idp.refresh_count(), 1);
    assert!(w.delivered().is_empty());
}

#[test]
fn a_server_without_starttls_gets_no_credentials() {
    let w = World::with(
        Behaviour {
            offer_starttls: false,
            auth_before_tls: true,
            ..Behaviour::default()
        },
        "",
    );
    let run = w.send(&["bob@fabrikam.example"], MESSAGE);
    let line = run.assert_failure(76);
    assert!(line.contains("STARTTLS"), "{line}");
    assert!(w.smtp.auth_attempts().is_empty());
    let client_auth = |l: &String| l.starts_with("C:") && l.contains("AUTH");
    assert!(!w.smtp.transcript().iter().any(client_auth));
}

#[test]
fn a_certificate_from_another_ca_is_refused_before_auth() {
    let w = World::new();
    let other = TestCa::new();
    std::fs::write(&w.ca_file, other.ca_pem).unwrap();
    let run = w.send(&["bob@fabrikam.example"], MESSAGE);
    run.assert_failure(76);
    assert!(w.smtp.auth_attempts().is_empty());
}

/// `openssl req -x509` test servers: a self-signed certificate with `CA:TRUE`, given in
/// `tls_ca_file`, is trusted as pinned; its host name is still checked.
#[test]
fn a_self_signed_server_certificate_in_tls_ca_file_is_pinned() {
    let serving = TestCa::self_signed(&["localhost", "127.0.0.1"]);
    let smtp = FakeSmtp::start(
        &serving,
        Behaviour::default().accept_only("alice@contoso.com", "at-pinned"),
    );
    let w = World::new();
    std::fs::write(&w.ca_file, &serving.ca_pem).unwrap();
    w.sandbox.seed_token(
        "work",
        &json!({"access_token": "at-pinned", "expires_at": now() + 3600}),
    );
    w.config_with_port(smtp.port(), "");
    w.send(&["bob@fabrikam.example"], MESSAGE)
        .assert_silent_success();
    assert_eq!(smtp.deliveries().len(), 1);

    // The same pinned certificate for a name it does not carry: refused before AUTH.
    let other_name = TestCa::self_signed(&["mail.example"]);
    let smtp = FakeSmtp::start(&other_name, Behaviour::default());
    std::fs::write(&w.ca_file, &other_name.ca_pem).unwrap();
    w.config_with_port(smtp.port(), "");
    let line = w
        .send(&["bob@fabrikam.example"], MESSAGE)
        .assert_failure(76)
        .to_owned();
    assert!(line.contains("certificate"), "{line}");
    assert!(smtp.auth_attempts().is_empty());
}

#[test]
fn a_silent_server_is_a_temporary_failure_within_the_timeout() {
    let w = World::with(
        Behaviour {
            silent: true,
            ..Behaviour::default()
        },
        "",
    );
    let mut cmd = w.sandbox.command(&["bob@fabrikam.example"]);
    cmd.env("OAUTH2_SENDMAIL_TEST_TIMEOUT_MS", "500");
    let run = run_command(cmd, MESSAGE);
    let line = run.assert_failure(75);
    assert!(line.contains("try again later"), "{line}");
    assert!(run.elapsed < Duration::from_secs(10), "{:?}", run.elapsed);
}

#[test]
fn nothing_listening_is_a_temporary_failure() {
    let w = World::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    w.config_with_port(port, "");
    let run = w.send(&["bob@fabrikam.example"], MESSAGE);
    run.assert_failure(75);
}

/// Server refusals at each phase: exit code, one stderr line naming the reply, no delivery.
// The table of refusals reads best in one place.
#[allow(clippy::too_many_lines)]
#[test]
fn refusals_at_each_phase_map_to_sysexits() {
    let cases: Vec<(&str, Behaviour, i32, &str)> = vec![
        (
            "greeting 421",
            Behaviour {
                greeting: "421 4.3.2 Concurrent connections limit exceeded".into(),
                ..Behaviour::default()
            },
            75,
            "4.3.2",
        ),
        (
            "greeting 554",
            Behaviour {
                greeting: "554 5.7.1 go away".into(),
                ..Behaviour::default()
            },
            69,
            "554",
        ),
        (
            "MAIL 550 5.7.60",
            Behaviour {
                mail_reply: Some(
                    "550 5.7.60 SMTP; Client does not have permissions to send as this sender"
                        .into(),
                ),
                ..Behaviour::default()
            },
            69,
            "rewrite_from",
        ),
        (
            "MAIL 451",
            Behaviour {
                mail_reply: Some("451 4.7.0 Temporary server error".into()),
                ..Behaviour::default()
            },
            75,
            "451",
        ),
        (
            "RCPT 550",
            Behaviour::default().refuse_rcpt("bob@fabrikam.example", "550 5.1.1 User unknown"),
            67,
            "<bob@fabrikam.example>",
        ),
        (
            "RCPT 450",
            Behaviour::default().refuse_rcpt("bob@fabrikam.example", "450 4.2.1 try later"),
            75,
            "450",
        ),
        (
            "DATA 451",
            Behaviour {
                data_reply: Some("451 4.7.500 Server busy".into()),
                ..Behaviour::default()
            },
            75,
            "451",
        ),
        (
            "end 554 SendAsDenied",
            Behaviour {
                end_reply: Some(
                    "554 5.2.252 SendAsDenied; alice@contoso.com not allowed to send as x@y".into(),
                ),
                ..Behaviour::default()
            },
            69,
            "rewrite_from",
        ),
        (
            "end 552 size",
            Behaviour {
                end_reply: Some("552 5.3.4 Message size exceeds fixed maximum message size".into()),
                ..Behaviour::default()
            },
            65,
            "5.3.4",
        ),
        (
            "end 451",
            Behaviour {
                end_reply: Some("451 4.7.0 Temporary server error".into()),
                ..Behaviour::default()
            },
            75,
            "451",
        ),
        (
            "SIZE too small",
            Behaviour {
                size: Some(100),
                ..Behaviour::default()
            },
            65,
            "larger",
        ),
    ];
    // Two recipients take the DATA path; one takes MAIL, RCPT, BDAT LAST in one flight
    // (the fake is Exchange: PIPELINING and CHUNKING), where DATA is never sent.
    let two: &[&str] = &["bob@fabrikam.example", "carol@fabrikam.example"];
    let one: &[&str] = &["bob@fabrikam.example"];
    for (what, behaviour, code, needle) in cases {
        for rcpts in [two, one] {
            if rcpts == one && what.starts_with("DATA") {
                continue;
            }
            let w = World::with(behaviour.clone(), "");
            let args: Vec<&str> = ["-oi", "--"].iter().chain(rcpts).copied().collect();
            let run = w.send(&args, MESSAGE);
            let line = run.assert_failure(code);
            let what = format!("{what}, {} recipient(s)", rcpts.len());
            assert!(line.contains(needle), "{what}: {line}");
            assert!(
                line.starts_with("oauth2-sendmail: account work"),
                "{what}: {line}"
            );
            assert!(w.delivered().is_empty(), "{what}: nothing may be delivered");
            let unused = if rcpts == one { "DATA" } else { "BDAT" };
            assert!(w.smtp.flights_of(&[unused]).is_empty(), "{what}");
        }
    }
}

#[test]
fn refused_tokens_name_the_login_command() {
    let w = World::refusing_tokens(Behaviour::default());
    let run = w.send(&["bob@fabrikam.example"], MESSAGE);
    let line = run.assert_failure(77);
    assert!(line.contains("535"), "{line}");
    assert!(line.contains("oauth2-sendmail login work"), "{line}");
    assert!(w.delivered().is_empty());
}

#[test]
fn one_refused_recipient_of_two_delivers_to_nobody_and_names_it() {
    let w = World::with(
        Behaviour::default().refuse_rcpt("carol@fabrikam.example", "550 5.1.1 User unknown"),
        "",
    );
    let run = w.send(&["bob@fabrikam.example", "carol@fabrikam.example"], MESSAGE);
    let line = run.assert_failure(67);
    assert!(
        line.contains("<carol@fabrikam.example>: 550 5.1.1 User unknown"),
        "{line}"
    );
    assert!(!line.contains("<bob@"), "{line}");
    assert!(w.delivered().is_empty());
}

#[test]
fn refresh_refused_needs_a_login_with_the_exact_command() {
    let w = World::new();
    w.expire_token();
    w.idp.set_failure(Some(Failure::invalid_grant(700_082)));
    let run = w.send(&["bob@fabrikam.example"], MESSAGE);
    let line = run.assert_failure(77);
    assert!(line.contains("oauth2-sendmail login work"), "{line}");
    assert!(w.smtp.auth_attempts().is_empty());
}

#[test]
fn token_service_down_is_a_temporary_failure() {
    let w = World::new();
    w.expire_token();
    w.idp.set_failure(Some(Failure::Status(503)));
    let run = w.send(&["bob@fabrikam.example"], MESSAGE);
    run.assert_failure(75);
    assert!(w.smtp.auth_attempts().is_empty(), "no stale token is tried");
}

#[test]
fn verbose_shows_the_dialogue_with_auth_redacted() {
    let w = World::new();
    let run = w.send(&["-v", "bob@fabrikam.example"], MESSAGE);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "");
    assert!(run.stderr.contains("EHLO"), "{}", run.stderr);
    assert!(run.stderr.contains("STARTTLS"));
    assert!(run.stderr.contains("<redacted>"), "{}", run.stderr);
    assert!(run.stderr.contains("250"));
    assert!(
        !run.stderr.contains("Hello."),
        "the message itself is not echoed"
    );
    // One recipient: BDAT with the exact size of the data that follows (Bcc removed).
    let size = w.delivered()[0].data.len();
    assert!(
        run.stderr.contains(&format!(
            "C: BDAT {size} LAST\nC: <message data, {size} bytes>\n"
        )),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("C: DATA"), "{}", run.stderr);

    // Two recipients: DATA, the data, and the `.` line.
    let run = w.send(
        &["-v", "bob@fabrikam.example", "carol@fabrikam.example"],
        MESSAGE,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains("C: DATA\n"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("C: <message data, {size} bytes>\nC: .\n")),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("C: BDAT"), "{}", run.stderr);
}

#[test]
fn check_proves_the_setup_without_sending() {
    let w = World::new();
    let run = w.send(&["check", "work"], b"");
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("accepted XOAUTH2"), "{}", run.stdout);
    assert!(w.delivered().is_empty());
    assert_eq!(w.smtp.auth_attempts().len(), 1);
}

#[test]
fn the_log_has_one_line_per_message_and_no_secret() {
    let w = World::new();
    let log = w.sandbox.path().join("state/send.log");
    let config =
        std::fs::read_to_string(w.sandbox.path().join("config/oauth2-sendmail/config.toml"))
            .unwrap();
    w.sandbox
        .write_config(&format!("logfile = \"{}\"\n{config}", log.display()));
    w.send(&["bob@fabrikam.example"], MESSAGE)
        .assert_silent_success();
    let refused = w.send(&["-N", "bogus", "bob@fabrikam.example"], MESSAGE);
    assert_eq!(refused.code, 64);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains("account=work") && text.contains("result=sent"),
        "{text}"
    );
    assert!(!text.contains(&w.token) && !text.contains(&w.refresh));
}

#[test]
fn dsn_flags_reach_the_server_when_offered() {
    let w = World::new();
    w.send(
        &[
            "-N",
            "success,failure",
            "-R",
            "hdrs",
            "-V",
            "env1",
            "bob@fabrikam.example",
        ],
        MESSAGE,
    )
    .assert_silent_success();
    let d = &w.delivered()[0];
    assert!(
        d.mail_params.contains(&"RET=HDRS".to_owned()),
        "{:?}",
        d.mail_params
    );
    assert!(
        d.mail_params.contains(&"ENVID=env1".to_owned()),
        "{:?}",
        d.mail_params
    );
    assert!(
        d.rcpt_params[0].contains(&"NOTIFY=SUCCESS,FAILURE".to_owned()),
        "{:?}",
        d.rcpt_params
    );
}

/// Linked as `sendmail`, the binary is in sendmail mode only: a management word is a
/// recipient (here a bare local name, resolved through `[aliases]`).
#[test]
fn invoked_as_sendmail_words_are_recipients() {
    let w = World::new();
    let config =
        std::fs::read_to_string(w.sandbox.path().join("config/oauth2-sendmail/config.toml"))
            .unwrap();
    w.sandbox
        .write_config(&config.replace("[aliases]\n", "[aliases]\n\"*\" = \"alice@contoso.com\"\n"));
    // What a `/usr/sbin/sendmail -> oauth2-sendmail` link passes as argv[0].
    let mut cmd = w.sandbox.command(&["-i", "status"]);
    cmd.arg0(w.sandbox.path().join("sendmail"));
    let run = run_command(cmd, MESSAGE);
    w.assert_no_secret(&run);
    run.assert_silent_success();
    assert_eq!(w.delivered()[0].rcpts, ["alice@contoso.com"]);
}

#[test]
fn microsoft_sends_a_realistic_token_on_one_auth_line_and_quit_with_the_data() {
    let w = World::new();
    w.expire_token();
    let run = w.send(&["bob@fabrikam.example"], MESSAGE);
    run.assert_silent_success();
    let auth = w.smtp.auth_attempts();
    assert_eq!(auth.len(), 1);
    assert!(auth[0].accepted && auth[0].inline, "{:?}", auth[0].inline);
    // user=…\x01auth=Bearer …\x01\x01 in base64: over 2,500 bytes with a real-sized token.
    let xoauth2 = format!(
        "user={}\x01auth=Bearer {}\x01\x01",
        auth[0].user, auth[0].token
    );
    assert!(xoauth2.len() * 4 / 3 > 2500, "{}", xoauth2.len());
    assert!(
        w.smtp
            .wait_for(Duration::from_secs(5), FakeSmtp::quit_received)
    );
    assert_eq!(w.smtp.flights_of(&["QUIT"]), w.smtp.data_end_flights());
}

#[test]
fn a_server_refusing_the_long_auth_line_gets_it_in_two_steps_on_the_same_connection() {
    let w = World::with(
        Behaviour {
            auth_line_limit: Some((1000, "500 5.5.2 Line too long".to_owned())),
            ..Behaviour::default()
        },
        "",
    );
    w.expire_token();
    let run = w.send(&["bob@fabrikam.example"], MESSAGE);
    run.assert_silent_success();
    let auth = w.smtp.auth_attempts();
    assert_eq!(auth.len(), 1);
    assert!(auth[0].accepted && !auth[0].inline);
    assert_eq!(w.smtp.connections(), 1);
    assert_eq!(w.delivered().len(), 1);
}

#[test]
fn an_unexpired_cached_token_refused_without_a_refresh_token_reports_the_servers_reply() {
    let w = World::refusing_tokens(Behaviour::default());
    w.sandbox.seed_token(
        "work",
        &json!({"access_token": w.token, "expires_at": now() + 3000}),
    );
    let run = w.send(&["bob@fabrikam.example"], MESSAGE);
    let line = run.assert_failure(77);
    assert!(
        line.contains("535 5.7.3 Authentication unsuccessful"),
        "{line}"
    );
    assert!(line.contains("has not expired"), "{line}");
    assert!(!line.contains("has expired"), "{line}");
    assert!(line.contains("SMTP AUTH is enabled"), "{line}");
    assert!(line.contains("oauth2-sendmail login work"), "{line}");
    assert_eq!(w.idp.requests().len(), 0, "nothing to refresh with");
    // QUIT on the error path too.
    assert!(
        w.smtp
            .wait_for(Duration::from_secs(5), FakeSmtp::quit_received)
    );
}

#[test]
fn too_many_recipients_are_sent_in_further_transactions_on_one_connection() {
    let w = World::with(Behaviour::default().recipient_limit(2), "");
    let run = w.send(
        &[
            "bob@fabrikam.example",
            "carol@fabrikam.example",
            "erin@fabrikam.example",
        ],
        MESSAGE,
    );
    run.assert_silent_success();
    let d = w.delivered();
    let rcpts: Vec<Vec<String>> = d.iter().map(|d| d.rcpts.clone()).collect();
    assert_eq!(
        rcpts,
        [
            vec![
                "bob@fabrikam.example".to_owned(),
                "carol@fabrikam.example".to_owned()
            ],
            vec!["erin@fabrikam.example".to_owned()]
        ]
    );
    assert_eq!(d[0].data, d[1].data);
    assert_eq!(w.smtp.connections(), 1);
}
