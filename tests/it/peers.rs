//! The truth about failures, against hostile or broken peers: a certificate that does not
//! verify is exit 76 wherever it is met, a reply that comes before its command was complete
//! is never taken as the answer, a server's own words reach the user, and `-q` says when an
//! account waits for a login. The real binary against the fakes on 127.0.0.1.

use std::path::PathBuf;

use serde_json::json;

use super::fake_idp::FakeIdp;
use super::fake_smtp::{Behaviour, FakeSmtp};
use super::setup::CLIENT_ID;
use super::support::{Run, Sandbox, TestCa, now};

const BOB: &str = "bob@fabrikam.example";
const MESSAGE: &[u8] = b"From: Alice <alice@contoso.com>\nTo: Bob <bob@fabrikam.example>\n\
Subject: hi\n\nHello.\n";

/// Account `work` with a token endpoint (`idp`) and an SMTP server (`smtp`) that trust
/// `ca_file`; the message log in the sandbox.
struct World {
    sandbox: Sandbox,
    idp: FakeIdp,
    smtp: FakeSmtp,
    ca_file: PathBuf,
}

impl World {
    /// The token endpoint's certificate is issued by `idp_ca`, the SMTP server's by
    /// `smtp_ca`; only `trusted` is in `tls_ca_file`.
    fn with_cas(
        trusted: &TestCa,
        idp_ca: &TestCa,
        smtp_ca: &TestCa,
        behaviour: Behaviour,
    ) -> World {
        let idp = FakeIdp::start(idp_ca);
        let smtp = FakeSmtp::start(smtp_ca, behaviour.accept_tokens(&idp.valid_access_tokens()));
        let sandbox = Sandbox::new();
        let ca_file = sandbox.write_file("ca.pem", &trusted.ca_pem);
        let w = World {
            sandbox,
            idp,
            smtp,
            ca_file,
        };
        w.config("");
        w
    }

    fn new(behaviour: Behaviour) -> World {
        let ca = TestCa::new();
        let w = World::with_cas(&ca, &ca, &ca, behaviour);
        w.seed_valid();
        w
    }

    fn config(&self, extra: &str) {
        self.sandbox.write_config(&format!(
            "logfile = \"{}\"\n\n[accounts.work]\nprovider = \"microsoft\"\n\
             email = \"alice@contoso.com\"\nclient_id = \"{CLIENT_ID}\"\ntoken_url = \"{}\"\n\
             smtp_host = \"127.0.0.1\"\nsmtp_port = {}\ntls_ca_file = \"{}\"\n{extra}",
            self.logfile().display(),
            self.idp.token_url_v2("contoso"),
            self.smtp.port(),
            self.ca_file.display()
        ));
    }

    fn logfile(&self) -> PathBuf {
        self.sandbox.path().join("state/oauth2-sendmail/log")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.logfile()).unwrap_or_default()
    }

    fn queued(&self) -> usize {
        let dir = self.sandbox.path().join("state/oauth2-sendmail/queue");
        std::fs::read_dir(dir).map_or(0, |d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "mail"))
                .count()
        })
    }

    fn seed_valid(&self) {
        let token = self.idp.issue_access_token();
        let rt = self.idp.issue_refresh_token();
        self.sandbox.seed_token(
            "work",
            &json!({"access_token": token, "expires_at": now() + 3600, "refresh_token": rt}),
        );
    }

    fn seed_expired(&self) {
        let rt = self.idp.issue_refresh_token();
        self.sandbox.seed_token(
            "work",
            &json!({
                "access_token": "at-stale-0",
                "expires_at": now() - 10,
                "obtained_at": now() - 3610,
                "refresh_token": rt,
            }),
        );
    }

    fn send(&self, args: &[&str]) -> Run {
        let mut cmd = self.sandbox.command(args);
        cmd.env("OAUTH2_SENDMAIL_TEST_TIMEOUT_MS", "3000");
        super::support::run_command(cmd, MESSAGE)
    }
}

// Item: a certificate failure is 76 wherever it happens.

#[test]
fn a_certificate_that_does_not_verify_at_the_token_endpoint_is_76_and_not_queued() {
    let trusted = TestCa::new();
    let w = World::with_cas(&trusted, &TestCa::new(), &trusted, Behaviour::default());
    w.config("queue = \"on-failure\"\n");
    w.seed_expired();
    let run = w.send(&["-oi", "--", BOB]);
    let line = run.assert_failure(76);
    assert!(line.contains("certificate of the token service"), "{line}");
    assert!(line.contains("does not verify"), "{line}");
    assert!(!line.contains("try again later"), "{line}");
    assert_eq!(w.queued(), 0, "mutt keeps the message; nothing queued");
    assert!(
        w.idp.requests().is_empty(),
        "no request crossed the bad TLS"
    );
    // `token` says the same.
    let run = w.send(&["token", "work"]);
    assert!(
        run.assert_failure(76)
            .contains("certificate of the token service")
    );
    // cron cannot keep the message: queued, exit 0.
    let run = w.send(&["-oem", "-oi", "--", BOB]);
    assert_eq!((run.code, run.stderr.as_str()), (0, ""));
    assert_eq!(w.queued(), 1);
}

#[test]
fn a_certificate_that_does_not_verify_at_the_smtp_server_is_76_and_queued_only_for_cron() {
    let trusted = TestCa::new();
    let w = World::with_cas(&trusted, &trusted, &TestCa::new(), Behaviour::default());
    w.config("queue = \"on-failure\"\n");
    w.seed_valid();
    let run = w.send(&["-oi", "--", BOB]);
    let line = run.assert_failure(76);
    assert!(line.contains("certificate of the SMTP server"), "{line}");
    assert_eq!(w.queued(), 0);
    let run = w.send(&["-oem", "-oi", "--", BOB]);
    assert_eq!((run.code, run.stderr.as_str()), (0, ""));
    assert_eq!(w.queued(), 1);
}

// Item: a reply before its command was complete is a protocol error, DATA included.

#[test]
fn a_250_sent_before_the_final_dot_is_a_protocol_error_and_never_a_sent() {
    let w = World::new(Behaviour {
        chunking: false,
        early_data_reply: Some("250 2.0.0 OK early".to_owned()),
        end_reply: Some("554 5.6.0 message refused".to_owned()),
        ..Behaviour::default()
    });
    w.config("queue = \"on-failure\"\n");
    let run = w.send(&["-oi", "--", BOB]);
    assert_answered_early(&w, &run);
}

/// Exit 76 naming the early reply; nothing delivered, logged as sent, or queued.
fn assert_answered_early(w: &World, run: &Run) {
    let line = run.assert_failure(76);
    assert!(line.contains("250 2.0.0 OK early"), "{line}");
    assert!(
        line.contains("before"),
        "says the reply came too early: {line}"
    );
    assert!(
        w.smtp.deliveries().is_empty(),
        "the message was never completed"
    );
    assert!(!w.log().contains("result=sent"), "{}", w.log());
    assert_eq!(w.queued(), 0);
}

/// A message of `lines` body lines (about 30 bytes each): large enough that the client is
/// still writing when the server has said something.
fn big_message(lines: usize) -> Vec<u8> {
    let mut big = MESSAGE.to_vec();
    for i in 0..lines {
        big.extend_from_slice(format!("line {i} of a long message body\n").as_bytes());
    }
    big
}

impl World {
    fn send_big(&self, message: &[u8]) -> Run {
        let mut cmd = self.sandbox.command(&["-oi", "--", BOB]);
        cmd.env("OAUTH2_SENDMAIL_TEST_TIMEOUT_MS", "3000");
        super::support::run_command(cmd, message)
    }
}

#[test]
fn a_reply_to_bdat_before_its_chunk_is_whole_is_a_protocol_error_and_never_a_sent() {
    // One recipient, PIPELINING and CHUNKING: MAIL, RCPT and `BDAT n LAST` go in one flight
    // with the message. MAIL's and RCPT's replies may come while it is being written; a
    // third reply can only be BDAT's, before the server has its chunk.
    let w = World::new(Behaviour {
        early_data_reply: Some("250 2.0.0 OK early".to_owned()),
        ..Behaviour::default()
    });
    w.config("queue = \"on-failure\"\n");
    let run = w.send_big(&big_message(1_000_000));
    assert_answered_early(&w, &run);
}

// Item: a 421 in the middle of DATA is reported with the server's words.

#[test]
fn a_421_in_the_middle_of_data_is_reported_with_the_servers_text_and_queued() {
    let w = World::new(Behaviour {
        chunking: false,
        mid_data_reply: Some("421 4.3.2 Service not available, closing channel".to_owned()),
        ..Behaviour::default()
    });
    w.config("queue = \"never\"\n");
    let big = big_message(500_000);
    let run = w.send_big(&big);
    let line = run.assert_failure(75);
    assert!(
        line.contains("421 4.3.2 Service not available, closing channel"),
        "{line}"
    );
    assert!(w.smtp.deliveries().is_empty());
    // Under the default policy it waits in the queue.
    w.config("queue = \"on-failure\"\n");
    let run = w.send_big(&big);
    assert_eq!((run.code, run.stderr.as_str()), (0, ""));
    assert_eq!(w.queued(), 1);
}

// Item: `-q` says when an account waits for a login, even with nothing due.

#[test]
fn minus_q_exits_77_naming_the_login_while_queued_mail_waits_for_one_and_nothing_is_due() {
    let w = World::new(Behaviour::default());
    // The server is down: the message is queued, due again in a minute.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    w.sandbox.write_config(&format!(
        "[accounts.work]\nprovider = \"microsoft\"\nemail = \"alice@contoso.com\"\n\
         client_id = \"{CLIENT_ID}\"\ntoken_url = \"{}\"\nsmtp_host = \"127.0.0.1\"\n\
         smtp_port = {port}\ntls_ca_file = \"{}\"\n",
        w.idp.token_url_v2("contoso"),
        w.ca_file.display()
    ));
    let run = w.send(&["-oi", "--", BOB]);
    assert_eq!((run.code, run.stderr.as_str()), (0, ""));
    assert_eq!(w.queued(), 1);
    // Then the refresh token is revoked, and the access token expires.
    w.seed_expired();
    w.idp.revoke_refresh_tokens();
    let status = w.send(&["status"]);
    assert_eq!(
        status.code, 0,
        "status cannot know before a refresh was tried"
    );
    // A person runs `token` (or a send fails): the refusal is remembered.
    assert_eq!(w.send(&["token", "work"]).code, 77);
    assert_eq!(w.send(&["status"]).code, 77, "status knows");
    let run = w.send(&["-q"]);
    assert_eq!(run.code, 77, "stderr: {}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().chain(run.stdout.lines()).collect();
    assert_eq!(lines.len(), 1, "one line per account: {lines:?}");
    assert!(
        lines[0].contains("oauth2-sendmail login work"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("1 queued message waits"), "{}", lines[0]);
    // Without queued mail, and with nothing to renew, `-q` stays quiet.
    std::fs::remove_dir_all(w.sandbox.path().join("state/oauth2-sendmail/queue")).unwrap();
    let run = w.send(&["-q"]);
    assert_eq!(
        (run.code, run.stdout.as_str(), run.stderr.as_str()),
        (0, "", "")
    );
}

#[test]
fn minus_q_exits_77_when_an_account_with_queued_mail_has_no_token_and_nothing_is_due() {
    let w = World::new(Behaviour::default());
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    w.sandbox.write_config(&format!(
        "[accounts.work]\nprovider = \"microsoft\"\nemail = \"alice@contoso.com\"\n\
         client_id = \"{CLIENT_ID}\"\ntoken_url = \"{}\"\nsmtp_host = \"127.0.0.1\"\n\
         smtp_port = {port}\ntls_ca_file = \"{}\"\n",
        w.idp.token_url_v2("contoso"),
        w.ca_file.display()
    ));
    assert_eq!(w.send(&["-oi", "--", BOB]).code, 0);
    assert_eq!(w.send(&["-oi", "--", BOB]).code, 0);
    assert_eq!(w.queued(), 2);
    std::fs::remove_file(w.sandbox.token_file("work")).unwrap();
    let run = w.send(&["-q"]);
    assert_eq!(run.code, 77, "stderr: {}", run.stderr);
    let line = run.stderr.trim_end();
    assert!(!line.contains('\n'), "{line}");
    assert!(line.contains("oauth2-sendmail login work"), "{line}");
    assert!(line.contains("2 queued messages wait"), "{line}");
}
