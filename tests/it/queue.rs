//! The durable queue end to end: the real binary against the fake SMTP server on
//! 127.0.0.1, with a cached token so no token endpoint is needed. Covers the queue
//! policies, flush (one connection, oldest first, defer, fail, the flush lock), the
//! listings, and crashes at named points (`OAUTH2_SENDMAIL_TEST_CRASH`).

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;

use super::fake_smtp::{Behaviour, FakeSmtp};
use super::setup::{Setup, closed_port, ids_in};
use super::support::{Run, now, run_command};

/// Every network wait in these tests is capped at this (a refused connection needs none).
const TEST_TIMEOUT_MS: &str = "2000";

/// A complete message: nothing is added to it, so a direct send and a flush of the same
/// input must deliver the same bytes.
const FULL: &str = "From: Alice <alice@contoso.example>\nTo: Bob <bob@fabrikam.example>\n\
                    Date: Sun, 22 Nov 2026 21:59:36 +0000\nMessage-ID: <m1@contoso.example>\n\
                    Subject: hello\n\nbody line\n.leading dot\n";

const BOB: &str = "bob@fabrikam.example";

/// The shared set-up with a cached token, so no token endpoint is needed.
struct Queue(Setup);

impl std::ops::Deref for Queue {
    type Target = Setup;

    fn deref(&self) -> &Setup {
        &self.0
    }
}

fn setup() -> Queue {
    let setup = super::setup::setup();
    setup.seed(
        &json!({"access_token": "at-1", "expires_at": now() + 3600, "refresh_token": "rt-1"}),
    );
    Queue(setup)
}

impl Queue {
    fn fake(&self, behaviour: Behaviour) -> FakeSmtp {
        FakeSmtp::start(&self.ca, behaviour)
    }

    /// Account `work` on 127.0.0.1:`port`, plus `extra` config lines for the account.
    fn config(&self, port: u16, extra: &str) {
        self.account()
            .top(&format!("logfile = \"{}\"\n", self.log().display()))
            .email("alice@contoso.example")
            .client_id(None)
            .token_url("https://127.0.0.1:1/")
            .smtp("127.0.0.1", port)
            .extra(extra)
            .write();
    }

    fn command(&self, args: &[&str], crash: Option<&str>) -> Command {
        let mut cmd = self.sandbox.command(args);
        // A crash's core file (if any) lands in the sandbox, never in the source tree.
        cmd.current_dir(self.sandbox.path())
            .env("OAUTH2_SENDMAIL_TEST_TIMEOUT_MS", TEST_TIMEOUT_MS);
        if let Some(point) = crash {
            cmd.env("OAUTH2_SENDMAIL_TEST_CRASH", point);
        }
        cmd
    }

    fn run(&self, args: &[&str], stdin: &str) -> Run {
        run_command(self.command(args, None), stdin.as_bytes())
    }

    fn crash(&self, point: &str, args: &[&str], stdin: &str) -> Run {
        run_command(self.command(args, Some(point)), stdin.as_bytes())
    }

    /// `-odq`: queued without any network use.
    fn enqueue(&self, stdin: &str) {
        self.run(&["-odq", "-i", BOB], stdin)
            .assert_silent_success();
    }

    fn queued(&self) -> Vec<String> {
        ids_in(&self.queue_dir())
    }

    fn failed(&self) -> Vec<String> {
        ids_in(&self.queue_dir().join("failed"))
    }

    /// The message bytes stored for a queued entry (after its metadata line).
    fn stored_message(&self, id: &str) -> Vec<u8> {
        let bytes = std::fs::read(self.queue_dir().join(format!("{id}.mail"))).unwrap();
        let start = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
        bytes[start..].to_vec()
    }

    fn list(&self) -> String {
        let run = self.run(&["queue", "list"], "");
        assert_eq!((run.code, run.stderr.as_str()), (0, ""), "{}", run.stdout);
        run.stdout
    }
}

/// `n`th numbered test message.
fn numbered(n: usize) -> String {
    format!(
        "From: alice@contoso.example\nTo: {BOB}\nDate: Sun, 22 Nov 2026 21:59:36 +0000\n\
         Message-ID: <m{n}@contoso.example>\nSubject: message {n}\n\nbody {n}\n"
    )
}

fn subject_of(data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    text.lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap_or("")
        .to_owned()
}

/// LF → CRLF, as the message travels on the wire.
fn crlf(bytes: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(bytes)
        .replace("\r\n", "\n")
        .replace('\n', "\r\n")
        .into_bytes()
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn server_down_queues_silently_then_flush_delivers_the_same_bytes() {
    let s = setup();
    let fake = s.fake(Behaviour::default());
    // What a direct send delivers, for comparison.
    s.config(fake.port(), "");
    s.run(&["-i", BOB], FULL).assert_silent_success();

    s.config(closed_port(), "queue = \"on-failure\"\n");
    s.run(&["-i", BOB], FULL).assert_silent_success();
    let ids = s.queued();
    assert_eq!(ids.len(), 1);
    assert_eq!(mode(&s.queue_dir()), 0o700);
    assert_eq!(mode(&s.queue_dir().join(format!("{}.mail", ids[0]))), 0o600);
    assert!(
        s.log_text()
            .contains(&format!("result=queued id={}", ids[0])),
        "{}",
        s.log_text()
    );

    s.config(fake.port(), "");
    let run = s.run(&["queue", "flush"], "");
    assert_eq!(run.code, 0, "{run:?}");
    // The server's own queue id is shown, and logged.
    assert!(
        run.stdout.starts_with(&format!(
            "{}: sent: 250 2.0.0 OK <fake@fake.outlook.test>",
            ids[0]
        )),
        "{}",
        run.stdout
    );
    assert!(
        s.log_text().contains("<fake@fake.outlook.test>"),
        "{}",
        s.log_text()
    );
    let deliveries = fake.deliveries();
    assert_eq!(deliveries.len(), 2);
    assert_eq!(deliveries[1].data, deliveries[0].data, "byte-identical");
    assert_eq!(deliveries[1].from, deliveries[0].from);
    assert_eq!(deliveries[1].rcpts, [BOB]);
    assert_eq!(deliveries[1].mail_params, deliveries[0].mail_params);
    assert!(s.queued().is_empty());
    assert_eq!(s.list(), "Mail queue is empty\n");
}

#[test]
fn date_and_message_id_are_added_at_enqueue_and_kept() {
    let s = setup();
    let fake = s.fake(Behaviour::default());
    s.config(fake.port(), "");
    s.enqueue("Subject: no date\n\nbody\n");
    let id = &s.queued()[0];
    let stored = s.stored_message(id);
    let text = String::from_utf8_lossy(&stored);
    assert!(
        text.contains("\nDate: ") || text.starts_with("Date: "),
        "{text}"
    );
    assert!(text.contains("Message-ID: <"), "{text}");
    s.run(&["-q"], "").assert_silent_success();
    assert_eq!(fake.deliveries()[0].data, crlf(&stored));
}

#[test]
fn odq_and_always_queue_without_connecting() {
    let s = setup();
    let fake = s.fake(Behaviour::default());
    s.config(fake.port(), "");
    s.enqueue(FULL);
    s.config(fake.port(), "queue = \"always\"\n");
    s.run(&["-i", BOB], FULL).assert_silent_success();
    assert_eq!(s.queued().len(), 2);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(fake.connections(), 0);
}

#[test]
fn queue_never_with_the_server_down_fails_75_and_queues_nothing() {
    let s = setup();
    s.config(closed_port(), "queue = \"never\"\n");
    let run = s.run(&["-i", BOB], FULL);
    let line = run.assert_failure(75);
    assert!(line.contains("account work"), "{line}");
    assert!(s.queued().is_empty());
}

#[test]
fn token_service_unreachable_is_queued_under_on_failure() {
    let s = setup();
    // An expired token and a token endpoint nothing listens on.
    s.sandbox.seed_token(
        "work",
        &json!({"access_token": "at-old", "expires_at": now() - 10, "refresh_token": "rt-1"}),
    );
    let fake = s.fake(Behaviour::default());
    s.config(fake.port(), "");
    s.run(&["-i", BOB], FULL).assert_silent_success();
    assert_eq!(s.queued().len(), 1);
    assert!(fake.deliveries().is_empty());
}

#[test]
fn a_permanent_refusal_is_not_queued() {
    let s = setup();
    let fake = s.fake(Behaviour::default().refuse_rcpt(BOB, "550 5.1.1 User unknown"));
    s.config(fake.port(), "queue = \"on-failure\"\n");
    let run = s.run(&["-i", BOB], FULL);
    let line = run.assert_failure(67);
    assert!(line.contains("550 5.1.1"), "{line}");
    assert!(s.queued().is_empty());
}

const TEMPORARY: &str = "451 4.3.0 Mail server temporarily rejected message";

#[test]
fn temporary_refusal_at_data_stays_queued_with_backoff() {
    // DATA is only used without CHUNKING when there is one recipient.
    temporary_refusal_stays_queued_with_backoff(Behaviour {
        chunking: false,
        data_reply: Some(TEMPORARY.into()),
        ..Behaviour::default()
    });
}

#[test]
fn temporary_refusal_of_bdat_last_stays_queued_with_backoff() {
    temporary_refusal_stays_queued_with_backoff(Behaviour {
        end_reply: Some(TEMPORARY.into()),
        ..Behaviour::default()
    });
}

fn temporary_refusal_stays_queued_with_backoff(behaviour: Behaviour) {
    let s = setup();
    let chunking = behaviour.chunking;
    let fake = s.fake(behaviour);
    s.config(fake.port(), "");
    for n in 0..3 {
        s.enqueue(&numbered(n));
    }
    let run = s.run(&["queue", "flush"], "");
    assert_eq!(run.code, 75, "{run:?}");
    assert_eq!(
        run.stdout.matches(": deferred: ").count(),
        3,
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("451 4.3.0"), "{}", run.stdout);
    assert!(fake.deliveries().is_empty());
    assert_eq!(s.queued().len(), 3);
    // The session survives a refused message (RSET): one connection for all three.
    assert_eq!(fake.connections(), 1);
    let (used, unused) = if chunking {
        ("BDAT", "DATA")
    } else {
        ("DATA", "BDAT")
    };
    assert_eq!(fake.flights_of(&[used]).len(), 3);
    assert!(fake.flights_of(&[unused]).is_empty());
    assert_eq!(fake.flights_of(&["RSET"]).len(), 3);
    let state = std::fs::read(s.queue_dir().join(format!("{}.state", s.queued()[0]))).unwrap();
    let state: serde_json::Value = serde_json::from_slice(&state).unwrap();
    assert_eq!(state["attempts"], 1);
    let next = state["next_attempt"].as_u64().unwrap();
    assert!(
        (now() + 50..=now() + 60).contains(&next),
        "first backoff ~1 min: {state}"
    );

    let list = s.list();
    assert!(list.contains("attempts 1"), "{list}");
    assert!(list.contains("next try in "), "{list}");
    assert!(list.contains("last error: "), "{list}");
    assert!(list.contains("451 4.3.0"), "{list}");
    assert!(list.contains("account work"), "{list}");
    assert!(list.contains(&format!("<{BOB}>")), "{list}");

    // Not due yet: the next flush leaves it alone and does not connect.
    let connections = fake.connections();
    s.run(&["-q"], "").assert_silent_success();
    assert_eq!(fake.connections(), connections);
    assert!(s.list().contains("attempts 1"));
}

#[test]
fn cron_flush_is_quiet_about_deferrals() {
    let s = setup();
    s.config(closed_port(), "");
    s.enqueue(FULL);
    let run = s.run(&["-q"], "");
    assert_eq!(
        (run.code, run.stdout.as_str(), run.stderr.as_str()),
        (75, "", "")
    );
    assert!(s.list().contains("attempts 1"));
}

#[test]
fn permanent_refusal_moves_to_failed_with_the_reply() {
    let s = setup();
    let fake = s.fake(Behaviour {
        end_reply: Some(
            "550 5.7.520 Access denied, Your organization does not allow external forwarding"
                .into(),
        ),
        ..Behaviour::default()
    });
    s.config(fake.port(), "");
    s.enqueue(FULL);
    let id = s.queued()[0].clone();
    let run = s.run(&["-q"], "");
    assert_eq!(run.code, 69, "{run:?}");
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr.contains(&format!("{id}: failed: ")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("550 5.7.520"), "{}", run.stderr);
    assert!(s.queued().is_empty());
    assert_eq!(s.failed(), std::slice::from_ref(&id));

    let list = s.list();
    assert!(list.contains(&format!("{id}  failed")), "{list}");
    assert!(list.contains("550 5.7.520"), "{list}");
    let status = s.run(&["status"], "");
    assert!(
        status.stdout.contains("queue: 0 queued, 1 failed"),
        "{}",
        status.stdout
    );

    // Never retried.
    let connections = fake.connections();
    s.run(&["-q"], "").assert_silent_success();
    assert_eq!(fake.connections(), connections);
    // Removable like a queued one.
    assert_eq!(
        s.run(&["queue", "remove", &id], "").stdout,
        format!("{id}: removed\n")
    );
    assert!(s.failed().is_empty());
}

#[test]
fn a_hundred_messages_go_over_one_connection_oldest_first() {
    let s = setup();
    let fake = s.fake(Behaviour::default());
    s.config(fake.port(), "");
    for n in 0..100 {
        s.enqueue(&numbered(n));
    }
    assert_eq!(s.queued().len(), 100);
    let started = std::time::Instant::now();
    s.run(&["-q"], "").assert_silent_success();
    let took = started.elapsed();
    assert_eq!(fake.connections(), 1);
    let subjects: Vec<String> = fake
        .deliveries()
        .iter()
        .map(|d| subject_of(&d.data))
        .collect();
    let expected: Vec<String> = (0..100).map(|n| format!("message {n}")).collect();
    assert_eq!(subjects, expected);
    assert!(s.queued().is_empty());
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(fake.wait_for(Duration::from_secs(2), FakeSmtp::quit_received));
}

#[test]
fn two_concurrent_flushes_send_each_message_once() {
    let s = setup();
    // A slow server, so that the two flushes overlap.
    let fake = s.fake(Behaviour {
        reply_delay: Duration::from_millis(2),
        ..Behaviour::default()
    });
    s.config(fake.port(), "");
    for n in 0..20 {
        s.enqueue(&numbered(n));
    }
    let mut children: Vec<_> = (0..2)
        .map(|_| {
            s.command(&["queue", "flush"], None)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in &mut children {
        assert!(child.wait().unwrap().success());
    }
    let subjects: Vec<String> = fake
        .deliveries()
        .iter()
        .map(|d| subject_of(&d.data))
        .collect();
    assert_eq!(subjects.len(), 20, "{subjects:?}");
    assert_eq!(subjects.iter().collect::<HashSet<_>>().len(), 20);
    assert!(s.queued().is_empty());
}

#[test]
fn crash_before_the_rename_reports_failure_and_leaves_a_readable_queue() {
    let s = setup();
    s.config(closed_port(), "");
    let run = s.crash("enqueue-before-rename", &["-odq", "-i", BOB], FULL);
    assert_ne!(run.code, 0, "the caller must keep the message");
    assert!(s.queued().is_empty());
    // The leftover temp file is there and harmless.
    let leftovers: Vec<_> = std::fs::read_dir(s.queue_dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| Path::new(n).extension().is_some_and(|e| e == "tmp"))
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    assert_eq!(s.list(), "Mail queue is empty\n");
    s.run(&["-q"], "").assert_silent_success();
    s.enqueue(FULL);
    assert_eq!(s.queued().len(), 1);
}

#[test]
fn crash_after_the_rename_keeps_the_message_queued() {
    let s = setup();
    let fake = s.fake(Behaviour::default());
    s.config(closed_port(), "");
    let run = s.crash("enqueue-after-rename", &["-i", BOB], FULL);
    assert_ne!(run.code, 0);
    assert_eq!(s.queued().len(), 1);
    s.config(fake.port(), "");
    s.run(&["-q"], "").assert_silent_success();
    assert_eq!(fake.deliveries().len(), 1);
}

#[test]
fn crash_after_the_250_sends_that_message_again_and_loses_nothing() {
    let s = setup();
    let fake = s.fake(Behaviour::default());
    s.config(fake.port(), "");
    for n in 0..3 {
        s.enqueue(&numbered(n));
    }
    let first = s.queued()[0].clone();
    let run = s.crash("flush-after-250", &["-q"], "");
    assert_ne!(run.code, 0);
    assert_eq!(fake.deliveries().len(), 1);
    assert_eq!(
        s.queued().len(),
        3,
        "removed only after the 250 is recorded"
    );
    // The first delivery is on record with the server's queue id, before the crash.
    let sent_first =
        format!("result=sent id={first} reply=\"250 2.0.0 OK <fake@fake.outlook.test>");
    assert_eq!(
        s.log_text().matches(&sent_first).count(),
        1,
        "{}",
        s.log_text()
    );
    s.run(&["-q"], "").assert_silent_success();
    let subjects: Vec<String> = fake
        .deliveries()
        .iter()
        .map(|d| subject_of(&d.data))
        .collect();
    // At least once: the first message twice (documented), none lost.
    assert_eq!(
        subjects,
        ["message 0", "message 0", "message 1", "message 2"]
    );
    assert_eq!(
        s.log_text().matches(&sent_first).count(),
        2,
        "the duplicate shows"
    );
    assert!(s.queued().is_empty());
}

#[test]
fn crash_between_messages_loses_and_duplicates_nothing() {
    let s = setup();
    let fake = s.fake(Behaviour::default());
    s.config(fake.port(), "");
    for n in 0..3 {
        s.enqueue(&numbered(n));
    }
    let run = s.crash("flush-after-remove", &["-q"], "");
    assert_ne!(run.code, 0);
    assert_eq!(s.queued().len(), 2);
    s.run(&["-q"], "").assert_silent_success();
    let subjects: Vec<String> = fake
        .deliveries()
        .iter()
        .map(|d| subject_of(&d.data))
        .collect();
    assert_eq!(subjects, ["message 0", "message 1", "message 2"]);
}

#[test]
fn crash_while_moving_to_failed_keeps_the_message() {
    let s = setup();
    let fake = s.fake(Behaviour {
        end_reply: Some("554 5.6.0 Corrupt message content".into()),
        ..Behaviour::default()
    });
    s.config(fake.port(), "");
    s.enqueue(FULL);
    let id = s.queued()[0].clone();
    let run = s.crash("fail-before-rename", &["-q"], "");
    assert_ne!(run.code, 0);
    assert_eq!(s.queued(), std::slice::from_ref(&id));
    assert!(s.list().contains(&id));
    let run = s.run(&["-q"], "");
    assert_eq!(run.code, 69, "{run:?}");
    assert_eq!(s.failed(), [id]);
    assert!(s.queued().is_empty());
}

#[test]
fn crash_while_deferring_keeps_the_message() {
    let s = setup();
    s.config(closed_port(), "");
    s.enqueue(FULL);
    let run = s.crash("defer-before-rename", &["-q"], "");
    assert_ne!(run.code, 0);
    assert_eq!(s.queued().len(), 1);
    assert!(s.list().contains("attempts 0"));
}

#[test]
fn a_corrupt_entry_is_reported_and_skipped_never_deleted() {
    let s = setup();
    let fake = s.fake(Behaviour::default());
    s.config(fake.port(), "");
    s.enqueue(FULL);
    let bad = "00000000001000000-1-deadbeef";
    let bad_path = s.queue_dir().join(format!("{bad}.mail"));
    std::fs::write(&bad_path, b"{not json\nSubject: x\n\nbody\n").unwrap();

    let list = s.list();
    assert!(
        list.contains(&format!("{bad}  queued  unreadable: ")),
        "{list}"
    );
    assert!(list.ends_with(", 1 unreadable\n"), "{list}");
    let run = s.run(&["-q"], "");
    assert_eq!(run.code, 75, "{run:?}");
    assert!(run.stderr.contains(bad), "{}", run.stderr);
    assert_eq!(fake.deliveries().len(), 1, "the good one is sent");
    assert!(bad_path.exists());
    // The user decides: remove it by id.
    s.run(&["queue", "remove", bad], "");
    assert!(!bad_path.exists());
}

#[test]
fn queue_remove_by_id() {
    let s = setup();
    s.config(closed_port(), "");
    s.enqueue(FULL);
    s.enqueue(&numbered(1));
    let ids = s.queued();
    let run = s.run(&["queue", "remove", &ids[0]], "");
    assert_eq!(
        (run.code, run.stdout.clone()),
        (0, format!("{}: removed\n", ids[0]))
    );
    assert_eq!(s.queued(), [ids[1].clone()]);
    s.run(&["queue", "remove", &ids[0]], "").assert_failure(64);
    s.run(&["queue", "remove", "../../config"], "")
        .assert_failure(64);
}

#[test]
fn mailq_and_bp_list_the_queue() {
    let s = setup();
    s.config(closed_port(), "");
    s.enqueue(FULL);
    let id = s.queued()[0].clone();
    let list = s.list();
    assert!(list.starts_with(&format!("{id}  queued  ")), "{list}");
    assert!(list.contains("age "), "{list}");
    assert!(list.contains("attempts 0"), "{list}");
    assert!(list.ends_with("-- 1 queued, 0 failed\n"), "{list}");

    let bp = s.run(&["-bp"], "");
    assert_eq!(
        (bp.code, bp.stdout.as_str(), bp.stderr.as_str()),
        (0, list.as_str(), "")
    );

    let link = s.sandbox.path().join("mailq");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_oauth2-sendmail"), &link).unwrap();
    // The sandbox's environment, with the link as the program.
    let mailq = || {
        let sandboxed = s.command(&[], None);
        let mut mailq = Command::new(&link);
        mailq.env_clear().current_dir(s.sandbox.path());
        for (key, value) in sandboxed.get_envs() {
            if let Some(value) = value {
                mailq.env(key, value);
            }
        }
        mailq
    };
    let run = run_command(mailq(), b"");
    assert_eq!(
        (run.code, run.stdout.as_str(), run.stderr.as_str()),
        (0, list.as_str(), "")
    );

    // Like `-bp`, listing needs no config: `mailq` answers before any setup.
    std::fs::remove_file(s.sandbox.path().join("config/oauth2-sendmail/config.toml")).unwrap();
    let run = run_command(mailq(), b"");
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, list.as_str()),
        "{}",
        run.stderr
    );
    let run = s.run(&["queue", "list"], "");
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, list.as_str()),
        "{}",
        run.stderr
    );
}

#[test]
fn flush_on_send_sends_the_queue_over_the_same_connection() {
    let s = setup();
    let fake = s.fake(Behaviour::default());
    s.config(fake.port(), "flush_on_send = true\n");
    s.enqueue(&numbered(1));
    s.enqueue(&numbered(2));
    s.run(&["-i", BOB], &numbered(3)).assert_silent_success();
    let subjects: Vec<String> = fake
        .deliveries()
        .iter()
        .map(|d| subject_of(&d.data))
        .collect();
    assert_eq!(subjects, ["message 3", "message 1", "message 2"]);
    assert_eq!(fake.connections(), 1);
    assert!(s.queued().is_empty());
    // The flushed ones are logged with the server's reply.
    assert_eq!(
        s.log_text().matches("result=sent").count(),
        3,
        "{}",
        s.log_text()
    );
}

#[test]
fn a_queue_written_before_the_due_index_is_still_flushed_on_send() {
    let s = setup();
    let fake = s.fake(Behaviour::default());
    s.config(fake.port(), "flush_on_send = true\n");
    s.enqueue(&numbered(1));
    // An older version kept no due index.
    std::fs::remove_file(s.queue_dir().join(".due")).unwrap();
    s.run(&["-i", BOB], &numbered(2)).assert_silent_success();
    let subjects: Vec<String> = fake
        .deliveries()
        .iter()
        .map(|d| subject_of(&d.data))
        .collect();
    assert_eq!(subjects, ["message 2", "message 1"]);
    assert_eq!(fake.connections(), 1);
    assert!(s.queued().is_empty());
}

#[test]
fn after_a_flush_on_send_the_due_index_is_recomputed() {
    let s = setup();
    let fake = s.fake(Behaviour::default());
    s.config(fake.port(), "flush_on_send = true\n");
    s.enqueue(&numbered(1));
    s.run(&["-i", BOB], &numbered(2)).assert_silent_success();
    assert_eq!(fake.deliveries().len(), 2, "the due one went along");
    assert!(s.queued().is_empty());
    let index = std::fs::read_to_string(s.queue_dir().join(".due")).unwrap();
    assert_eq!(index.trim(), "{}", "recomputed after the flush");
}

#[test]
fn a_message_older_than_five_days_fails_at_its_next_temporary_failure() {
    let s = setup();
    s.config(closed_port(), "");
    s.enqueue(FULL);
    let id = s.queued()[0].clone();
    // Back-date the entry as if it had been queued six days ago.
    let path = s.queue_dir().join(format!("{id}.mail"));
    let bytes = std::fs::read(&path).unwrap();
    let split = bytes.iter().position(|&b| b == b'\n').unwrap();
    let mut meta: serde_json::Value = serde_json::from_slice(&bytes[..split]).unwrap();
    meta["created_at"] = json!(now() - 6 * 24 * 3600);
    let mut rewritten = serde_json::to_vec(&meta).unwrap();
    rewritten.extend_from_slice(&bytes[split..]);
    std::fs::write(&path, rewritten).unwrap();

    let run = s.run(&["-q"], "");
    assert_eq!(run.code, 69, "{run:?}");
    assert!(
        run.stderr
            .contains("gave up after 5 days in the queue; last error: "),
        "{}",
        run.stderr
    );
    assert_eq!(s.failed(), std::slice::from_ref(&id));
    assert!(s.list().contains("Connection refused"));
}
