//! The Microsoft Graph transport end to end: the real binary with `transport = "graph"`
//! (or `auto`), a Graph token from the cache or from the fake identity platform (the
//! account's one refresh token), the message handed to the fake Graph over HTTPS. Every
//! run is checked for every token this world knows.

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

use serde_json::json;

use super::fake_graph::{FakeGraph, Fault};
use super::fake_idp::FakeIdp;
use super::fake_smtp::{Behaviour, FakeSmtp};
use super::support::{Run, Sandbox, TestCa, now};

pub(super) const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";

pub(super) struct World {
    pub(super) sandbox: Sandbox,
    pub(super) idp: FakeIdp,
    pub(super) graph: FakeGraph,
    smtp: FakeSmtp,
    ca_file: PathBuf,
    /// The cached SMTP token and the refresh token (in `work.json`).
    smtp_token: String,
    refresh: String,
    /// The cached Graph token (in `graph/work.json`).
    graph_token: String,
}

impl World {
    /// `transport` for account `work`, a cached SMTP token and refresh token, and a cached
    /// Graph token; `extra` TOML lines for the account.
    pub(super) fn new(transport: &str, extra: &str) -> World {
        World::with_smtp(transport, extra, Behaviour::default())
    }

    fn with_smtp(transport: &str, extra: &str, behaviour: Behaviour) -> World {
        World::with_graph_ca(transport, extra, behaviour, None)
    }

    /// With `graph_ca` Graph presents a certificate of that CA (e.g. one for another name);
    /// the config trusts only the world's own CA.
    pub(super) fn with_graph_ca(
        transport: &str,
        extra: &str,
        behaviour: Behaviour,
        graph_ca: Option<&TestCa>,
    ) -> World {
        let ca = TestCa::new();
        let idp = FakeIdp::start(&ca);
        let graph = FakeGraph::start(graph_ca.unwrap_or(&ca), &idp);
        let graph_audience = graph.audience();
        let smtp_tokens = idp.valid_access_tokens();
        let audiences = idp.audiences();
        // The SMTP server takes only tokens for Exchange's audience, as Exchange does.
        let behaviour = if behaviour.auth_refusal.is_some() {
            Behaviour {
                accept: std::sync::Arc::new(|_, _| false),
                ..behaviour
            }
        } else {
            Behaviour {
                accept: std::sync::Arc::new(move |_, t| {
                    smtp_tokens.lock().unwrap().contains(t)
                        && audiences.lock().unwrap().get(t).map(|(a, _)| a.as_str())
                            != Some(graph_audience.as_str())
                }),
                ..behaviour
            }
        };
        let smtp = FakeSmtp::start(&ca, behaviour);
        let sandbox = Sandbox::new();
        let ca_file = sandbox.write_file("ca.pem", &ca.ca_pem);
        let w = World {
            smtp_token: idp.issue_access_token(),
            refresh: idp.issue_refresh_token(),
            graph_token: idp.issue_access_token_for(&graph.audience(), false),
            sandbox,
            idp,
            graph,
            smtp,
            ca_file,
        };
        w.config(transport, extra);
        w.sandbox.seed_token(
            "work",
            &json!({"access_token": w.smtp_token, "expires_at": now() + 3600, "refresh_token": w.refresh}),
        );
        w.seed_graph(&w.graph_token, now() + 3600);
        w
    }

    fn config(&self, transport: &str, extra: &str) {
        self.sandbox.write_config(&format!(
            "[aliases]\nroot = \"ops@contoso.com\"\n\n[accounts.work]\nprovider = \"microsoft\"\n\
             email = \"alice@contoso.com\"\nfrom = [\"*@contoso.com\"]\nclient_id = \"{CLIENT_ID}\"\n\
             token_url = \"{}\"\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\ntls_ca_file = \"{}\"\n\
             graph_url = \"{}\"\ntransport = \"{transport}\"\n{}{extra}",
            self.idp.token_url_v2("contoso"),
            self.smtp.port(),
            self.ca_file.display(),
            self.graph.base_url(),
            if extra.contains("queue =") {
                ""
            } else {
                "queue = \"never\"\n"
            },
        ));
    }

    pub(super) fn graph_file(&self) -> PathBuf {
        self.sandbox
            .path()
            .join("data/oauth2-sendmail/tokens/graph/work.json")
    }

    pub(super) fn seed_graph(&self, token: &str, expires_at: u64) {
        let dir = self.graph_file().parent().unwrap().to_owned();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .unwrap();
        std::fs::write(
            self.graph_file(),
            json!({"access_token": token, "expires_at": expires_at}).to_string(),
        )
        .unwrap();
    }

    fn read_json(path: &PathBuf) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    pub(super) fn send(&self, args: &[&str], message: &[u8]) -> Run {
        let run = self.sandbox.run(args, message);
        self.assert_no_secret(&run);
        run
    }

    fn assert_no_secret(&self, run: &Run) {
        for t in [&self.smtp_token, &self.refresh, &self.graph_token] {
            run.assert_never_shows(t);
        }
        for t in self.idp.valid_access_tokens().lock().unwrap().iter() {
            run.assert_never_shows(t);
        }
        for r in self.idp.requests() {
            if let Some(rt) = r.field("refresh_token") {
                run.assert_never_shows(rt);
            }
        }
    }

    fn posts(&self) -> usize {
        self.graph
            .seen()
            .iter()
            .filter(|s| s.method == "POST")
            .count()
    }
}

const MESSAGE: &[u8] = b"From: Alice <alice@contoso.com>\nTo: Bob <bob@fabrikam.example>\n\
Cc: carol@fabrikam.example\nBcc: dave@fabrikam.example\nSubject: hi\n\
Date: Sun, 22 Nov 2026 21:59:36 +0000\nMessage-ID: <m1@contoso.com>\n\nHello.\n";

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// A caller: its name, its arguments, its message, who must receive it.
type Case<'a> = (&'a str, Vec<&'a str>, &'a [u8], Vec<&'a str>);

#[test]
fn each_callers_flags_deliver_through_graph_with_exactly_the_envelope() {
    let w = World::new("graph", "");
    // (caller, args, message, who must receive it)
    let cron: &[u8] = b"From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@host> ls\n\nout\n";
    let cases: Vec<Case> = vec![
        (
            "mutt",
            vec!["-oi", "-oem", "--", "bob@fabrikam.example"],
            b"From: alice@contoso.com\nTo: bob@fabrikam.example\nSubject: s\n\nx\n",
            vec!["bob@fabrikam.example"],
        ),
        (
            "-t with Bcc",
            vec!["-t", "-i"],
            MESSAGE,
            vec![
                "bob@fabrikam.example",
                "carol@fabrikam.example",
                "dave@fabrikam.example",
            ],
        ),
        (
            "git send-email",
            vec![
                "-i",
                "-f",
                "alice@contoso.com",
                "bob@fabrikam.example",
                "carol@fabrikam.example",
                "erin@fabrikam.example",
            ],
            b"From: alice@contoso.com\nTo: bob@fabrikam.example\nCc: carol@fabrikam.example\nSubject: [PATCH] x\n\ndiff\n",
            vec![
                "bob@fabrikam.example",
                "carol@fabrikam.example",
                "erin@fabrikam.example",
            ],
        ),
        (
            "cron",
            vec!["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"],
            cron,
            vec!["ops@contoso.com"],
        ),        (
            "mu4e",
            vec![
                "-oi",
                "-f",
                "alice@contoso.com",
                "--read-envelope-from",
                "-t",
            ],
            MESSAGE,
            vec![
                "bob@fabrikam.example",
                "carol@fabrikam.example",
                "dave@fabrikam.example",
            ],
        ),
        (
            "cronie",
            vec![
                "-FCronDaemon",
                "-i",
                "-odi",
                "-oem",
                "-oi",
                "-t",
                "-f",
                "root",
            ],
            cron,
            vec!["ops@contoso.com"],
        ),
    ];
    for (i, (caller, args, message, rcpts)) in cases.iter().enumerate() {
        let run = w.send(args, message);
        run.assert_silent_success();
        let sent = w.graph.sent();
        assert_eq!(sent.len(), i + 1, "{caller}");
        let got = &sent[i];
        assert_eq!(got.mailbox, "me", "{caller}");
        assert_eq!(got.version, "HTTP/2.0", "{caller}");
        let mut delivered = got.recipients();
        delivered.sort();
        assert_eq!(
            delivered, *rcpts,
            "{caller}: Graph delivers to the envelope"
        );
    }
    let sent = w.graph.sent();
    // -t: Bcc stripped as for SMTP, the Bcc recipient handed to Graph only as Bcc.
    assert_eq!(sent[1].bcc, ["dave@fabrikam.example"]);
    assert_eq!(sent[1].to, ["bob@fabrikam.example"]);
    // git send-email: the extra envelope recipient hidden, the header untouched otherwise.
    assert_eq!(sent[2].bcc, ["erin@fabrikam.example"]);
    assert!(contains(&sent[2].mime, "Subject: [PATCH] x"));
    // cron's `To: root` is written as its alias (Graph refuses `root`), nothing hidden.
    assert!(contains(&sent[3].mime, "To: ops@contoso.com"));
    assert!(!contains(&sent[3].mime, "To: root"));
    assert!(contains(&sent[3].mime, "Subject: Cron <root@host> ls"));
    assert!(sent[3].bcc.is_empty());
    // The cached Graph token: no token request, and no SMTP connection at all.
    assert!(w.idp.requests().is_empty());
    assert_eq!(w.smtp.connections(), 0);
}

#[test]
fn a_header_recipient_outside_the_envelope_is_refused_with_65() {
    let w = World::new("graph", "");
    let run = w.send(&["-oi", "--", "bob@fabrikam.example"], MESSAGE);
    let line = run.assert_failure(65);
    assert!(line.contains("<carol@fabrikam.example>"), "{line}");
    assert_eq!(w.posts(), 0);
}

#[test]
fn an_expired_graph_token_is_renewed_with_the_shared_refresh_token_and_its_rotation_kept_for_smtp()
{
    let w = World::new("graph", "");
    w.idp.set_rotation_revokes_old(true);
    w.seed_graph("at-graph-stale", now() - 5);
    w.send(
        &["-oi", "--", "bob@fabrikam.example"],
        b"To: bob@fabrikam.example\n\nx\n",
    )
    .assert_silent_success();
    let reqs = w.idp.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].grant_type(), "refresh_token");
    assert_eq!(reqs[0].field("refresh_token"), Some(w.refresh.as_str()));
    assert_eq!(
        reqs[0].field("scope"),
        Some(
            format!(
                "{0}/Mail.Send {0}/Mail.ReadWrite offline_access",
                w.graph.base_url()
            )
            .as_str()
        )
    );
    // The rotated refresh token is in work.json (the SMTP token kept), the Graph token
    // in graph/work.json without a refresh token of its own.
    let main = World::read_json(&w.sandbox.token_file("work"));
    let rotated = main["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(rotated, w.refresh);
    assert!(w.idp.refresh_token_valid(&rotated));
    assert!(!w.idp.refresh_token_valid(&w.refresh));
    assert_eq!(main["access_token"], w.smtp_token.as_str());
    let graph = World::read_json(&w.graph_file());
    assert!(graph.get("refresh_token").is_none());
    assert_eq!(w.graph.sent().len(), 1);
    // SMTP renews with the rotated refresh token: the old one is revoked.
    w.config("smtp", "");
    w.sandbox.seed_token(
        "work",
        &json!({"access_token": "at-stale", "expires_at": now() - 5, "refresh_token": rotated}),
    );
    w.send(
        &["-oi", "--", "bob@fabrikam.example"],
        b"To: bob@fabrikam.example\n\nx\n",
    )
    .assert_silent_success();
    assert_eq!(w.smtp.deliveries().len(), 1);
}

#[test]
fn graph_refusals_map_to_the_contracts_exit_codes() {
    let w = World::new("graph", "");
    let msg: &[u8] = b"To: bob@fabrikam.example\n\nx\n";
    let args = ["-oi", "--", "bob@fabrikam.example"];
    // 429: temporary, Retry-After kept; with queue = never, exit 75.
    w.graph.push_fault(Fault::Throttle(30));
    let line = w.send(&args, msg).assert_failure(75).to_owned();
    assert!(line.contains("429") && line.contains("30 s"), "{line}");
    // 403 ErrorAccessDenied: 77, what to grant, the admin consent URL.
    w.graph.push_fault(Fault::AccessDenied);
    let line = w.send(&args, msg).assert_failure(77).to_owned();
    assert!(
        line.contains("ErrorAccessDenied") && line.contains("Mail.Send"),
        "{line}"
    );
    assert!(line.contains("/contoso/adminconsent?client_id="), "{line}");
    // 413: 65.
    w.graph.push_fault(Fault::TooLarge);
    w.send(&args, msg).assert_failure(65);
    // 503: temporary.
    w.graph.push_fault(Fault::Unavailable(5));
    w.send(&args, msg).assert_failure(75);
    // Another 4xx: 69 with Graph's code and message.
    w.graph.push_fault(Fault::InvalidRecipients);
    let line = w.send(&args, msg).assert_failure(69).to_owned();
    assert!(
        line.contains("400 ErrorInvalidRecipients: At least one recipient is not valid."),
        "{line}"
    );
    assert!(w.graph.sent().is_empty());
    // Over Graph's 4 MB request: 65 before any upload.
    let posts = w.posts();
    let mut big = b"To: bob@fabrikam.example\n\n".to_vec();
    big.extend(std::iter::repeat_n(b'a', 3_100_000));
    let line = w.send(&args, &big).assert_failure(65).to_owned();
    assert!(line.contains("larger"), "{line}");
    assert_eq!(w.posts(), posts);
}

#[test]
fn a_refused_cached_graph_token_is_renewed_once_then_77() {
    let w = World::new("graph", "");
    let msg: &[u8] = b"To: bob@fabrikam.example\n\nx\n";
    let args = ["-oi", "--", "bob@fabrikam.example"];
    w.graph.push_fault(Fault::Unauthorized);
    w.send(&args, msg).assert_silent_success();
    assert_eq!(w.idp.refresh_count(), 1);
    assert_eq!(w.posts(), 2);
    assert_eq!(w.graph.sent().len(), 1);
    // A fresh token refused as well: no third try.
    w.seed_graph("at-graph-stale", now() - 5);
    w.graph.push_fault(Fault::Unauthorized);
    let line = w.send(&args, msg).assert_failure(77).to_owned();
    assert!(line.contains("oauth2-sendmail login work"), "{line}");
    assert_eq!(w.posts(), 3);
}

#[test]
fn verbose_shows_the_request_line_and_status_without_the_token() {
    let w = World::new("graph", "");
    let run = w.send(
        &["-v", "-oi", "--", "bob@fabrikam.example"],
        b"To: bob@fabrikam.example\n\nx\n",
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("-> POST {}/v1.0/me/sendMail", w.graph.base_url())),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("Bearer <redacted>"));
    assert!(run.stderr.contains("<- HTTP/2.0 202"), "{}", run.stderr);
}

#[test]
fn auto_switches_to_graph_after_5_7_139_and_remembers_it() {
    let refusal = "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.";
    let w = World::with_smtp(
        "auto",
        "",
        Behaviour {
            auth_refusal: Some(refusal.to_owned()),
            ..Behaviour::default()
        },
    );
    let msg: &[u8] = b"To: bob@fabrikam.example\n\nx\n";
    let args = ["-oi", "--", "bob@fabrikam.example"];
    w.send(&args, msg).assert_silent_success();
    assert_eq!(w.smtp.connections(), 1);
    assert_eq!(w.graph.sent().len(), 1);
    // The next message goes straight to Graph.
    w.send(&args, msg).assert_silent_success();
    assert_eq!(w.smtp.connections(), 1, "SMTP is not tried again");
    assert_eq!(w.graph.sent().len(), 2);
    let status = w.send(&["status"], b"");
    assert!(
        status.stdout.contains("transport: auto: graph since"),
        "{}",
        status.stdout
    );
    assert!(status.stdout.contains("5.7.139"));
    // check tests both ways and says which one is used.
    let check = w.send(&["check", "work"], b"");
    assert_eq!(check.code, 0, "{}", check.stderr);
    assert!(
        check.stdout.contains("SMTP AUTH is disabled"),
        "{}",
        check.stdout
    );
    assert!(check.stdout.contains("Microsoft Graph"), "{}", check.stdout);
}

#[test]
fn auto_keeps_smtp_while_it_works() {
    let w = World::new("auto", "");
    w.send(
        &["-oi", "--", "bob@fabrikam.example"],
        b"To: bob@fabrikam.example\n\nx\n",
    )
    .assert_silent_success();
    assert_eq!(w.smtp.deliveries().len(), 1);
    assert!(w.graph.seen().is_empty());
    let status = w.send(&["status"], b"");
    assert!(
        status.stdout.contains("transport: auto: smtp"),
        "{}",
        status.stdout
    );
}

#[test]
fn app_only_sends_as_the_mailbox_with_a_default_scope_token() {
    let w = World::new(
        "graph",
        "flow = \"client-credentials\"\nclient_secret = \"app-secret-123\"\n",
    );
    w.idp.register_client_secret(CLIENT_ID, "app-secret-123");
    std::fs::remove_file(w.graph_file()).unwrap();
    std::fs::remove_file(w.sandbox.token_file("work")).unwrap();
    let run = w.send(
        &["-oi", "--", "bob@fabrikam.example"],
        b"To: bob@fabrikam.example\n\nx\n",
    );
    run.assert_silent_success();
    run.assert_never_shows("app-secret-123");
    let reqs = w.idp.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].grant_type(), "client_credentials");
    assert_eq!(
        reqs[0].field("scope"),
        Some(format!("{}/.default", w.graph.base_url()).as_str())
    );
    let sent = w.graph.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].mailbox, "alice@contoso.com");
}

#[test]
fn china_accounts_default_to_the_21vianet_graph() {
    let w = World::new("graph", "");
    w.sandbox.write_config(
        "[accounts.cn]\nprovider = \"microsoft-china\"\nemail = \"a@contoso.partner.onmschina.cn\"\n\
         client_id = \"c\"\ntransport = \"graph\"\n",
    );
    let status = w.send(&["status"], b"");
    assert!(
        status
            .stdout
            .contains("transport: graph (https://microsoftgraph.chinacloudapi.cn)"),
        "{}",
        status.stdout
    );
    // With the fake as graph_url and token endpoint: the Graph scopes follow graph_url.
    w.sandbox.write_config(&format!(
        "[accounts.work]\nprovider = \"microsoft-china\"\nemail = \"alice@contoso.com\"\n\
         client_id = \"{CLIENT_ID}\"\ntoken_url = \"{}\"\ntls_ca_file = \"{}\"\ngraph_url = \"{}\"\n\
         transport = \"graph\"\nqueue = \"never\"\n",
        w.idp.token_url_v2("contoso"),
        w.ca_file.display(),
        w.graph.base_url()
    ));
    w.seed_graph("at-graph-stale", now() - 5);
    w.send(
        &["-oi", "--", "bob@fabrikam.example"],
        b"To: bob@fabrikam.example\n\nx\n",
    )
    .assert_silent_success();
    assert_eq!(w.graph.sent().len(), 1);
}

#[test]
fn the_queue_waits_out_graph_throttling_then_flushes_over_one_http2_connection() {
    let w = World::new("graph", "");
    let msg: &[u8] = b"To: bob@fabrikam.example\n\nx\n";
    for _ in 0..3 {
        w.send(&["-odq", "-oi", "--", "bob@fabrikam.example"], msg)
            .assert_silent_success();
    }
    w.graph.push_fault(Fault::Throttle(120));
    let run = w.send(&["queue", "flush"], b"");
    assert_eq!(run.code, 75, "{}", run.stdout);
    assert_eq!(run.stdout.matches("deferred").count(), 3, "{}", run.stdout);
    assert!(run.stdout.contains("429"), "{}", run.stdout);
    assert_eq!(
        w.posts(),
        1,
        "throttled: the other messages wait without asking"
    );
    let list = w.send(&["queue", "list"], b"");
    assert_eq!(
        list.stdout.matches("attempts 1").count(),
        3,
        "{}",
        list.stdout
    );
    // Next flush, once they are due: all three, one connection, HTTP/2.
    make_all_due(&w.sandbox);
    let before = w.graph.connections();
    let run = w.send(&["queue", "flush"], b"");
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(w.graph.sent().len(), 3);
    assert_eq!(w.graph.connections(), before + 1);
    assert!(w.graph.sent().iter().all(|s| s.version == "HTTP/2.0"));
}

/// The next attempt of each queued message, in seconds from `now`.
fn next_attempts_from(sandbox: &Sandbox, now: u64) -> Vec<i64> {
    let dir = sandbox.path().join("state/oauth2-sendmail/queue");
    let mut waits = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "state") {
            let next = World::read_json(&path)["next_attempt"].as_u64().unwrap();
            waits.push(i64::try_from(next).unwrap() - i64::try_from(now).unwrap());
        }
    }
    waits
}

#[test]
fn a_throttled_send_is_queued_until_graphs_retry_after_and_minus_q_waits_for_it() {
    let w = World::new("graph", "queue = \"on-failure\"\n");
    // 15 minutes: well past the queue's first back-off (60 s).
    w.graph.push_fault(Fault::Throttle(900));
    let before = now();
    w.send(
        &["-oi", "--", "bob@fabrikam.example"],
        b"To: bob@fabrikam.example\n\nx\n",
    )
    .assert_silent_success();
    let waits = next_attempts_from(&w.sandbox, before);
    assert_eq!(waits.len(), 1);
    assert!((900..=905).contains(&waits[0]), "{waits:?}");
    // A timer run before then leaves it alone: Graph is not asked again.
    let run = w.send(&["-q"], b"");
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(w.posts(), 1);
    assert!(w.send(&["queue", "list"], b"").stdout.contains("1 queued"));
}

#[test]
fn a_flush_defers_by_graphs_retry_after_clamped_to_the_queues_hour() {
    let w = World::new("graph", "");
    let msg: &[u8] = b"To: bob@fabrikam.example\n\nx\n";
    for _ in 0..2 {
        w.send(&["-odq", "-oi", "--", "bob@fabrikam.example"], msg)
            .assert_silent_success();
    }
    // 503 with half an hour: both wait that long (the second without asking Graph).
    w.graph.push_fault(Fault::Unavailable(1800));
    let before = now();
    let run = w.send(&["queue", "flush"], b"");
    assert_eq!(run.code, 75, "{}", run.stdout);
    assert_eq!(w.posts(), 1);
    let waits = next_attempts_from(&w.sandbox, before);
    assert_eq!(waits.len(), 2);
    assert!(waits.iter().all(|s| (1790..=1805).contains(s)), "{waits:?}");
    // A day is more than the queue ever waits: an hour.
    make_all_due(&w.sandbox);
    w.graph.push_fault(Fault::Throttle(86_400));
    let before = now();
    let run = w.send(&["queue", "flush"], b"");
    assert_eq!(run.code, 75, "{}", run.stdout);
    let waits = next_attempts_from(&w.sandbox, before);
    assert!(waits.iter().all(|s| (3600..=3605).contains(s)), "{waits:?}");
}

/// Sets every queued message's next attempt to now.
fn make_all_due(sandbox: &Sandbox) {
    let dir = sandbox.path().join("state/oauth2-sendmail/queue");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "state") {
            let mut state = World::read_json(&path);
            state["next_attempt"] = json!(0);
            std::fs::write(&path, state.to_string()).unwrap();
        }
    }
}

#[test]
fn on_failure_queues_a_throttled_message() {
    let w = World::new("graph", "");
    w.config("graph", "queue = \"on-failure\"\n");
    w.graph.push_fault(Fault::Throttle(30));
    w.send(
        &["-oi", "--", "bob@fabrikam.example"],
        b"To: bob@fabrikam.example\n\nx\n",
    )
    .assert_silent_success();
    let list = w.send(&["queue", "list"], b"");
    assert!(list.stdout.contains("1 queued"), "{}", list.stdout);
    assert_eq!(w.posts(), 1);
}

#[test]
fn the_fake_graph_is_as_strict_as_graph() {
    let w = World::new("graph", "");
    let app = w.idp.issue_access_token_for(&w.graph.audience(), true);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let post = |path: &str, token: &str, body: &str| {
        let mut tls = rustls::ClientConfig::builder()
            .with_root_certificates({
                let mut roots = rustls::RootCertStore::empty();
                let pem = std::fs::read(&w.ca_file).unwrap();
                for c in <rustls_pki_types::CertificateDer as rustls_pki_types::pem::PemObject>::pem_slice_iter(&pem) {
                    roots.add(c.unwrap()).unwrap();
                }
                roots
            })
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .build()
            .unwrap();
        let url = format!("{}{path}", w.graph.base_url());
        let body = body.to_owned();
        let token = token.to_owned();
        rt.block_on(async move {
            let r = client
                .post(url)
                .bearer_auth(token)
                .header("content-type", "text/plain")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap())
        })
    };
    let (s, body) = post("/v1.0/me/sendMail", &w.graph_token, "not base64!");
    assert_eq!(s, 400);
    assert!(
        body.contains("ErrorMimeContentInvalidBase64String"),
        "{body}"
    );
    let (s, body) = post("/v1.0/me/sendMail", &w.smtp_token, "VG86IGJAeA0KDQp4");
    assert_eq!(s, 401, "an SMTP token is for another audience");
    assert!(body.contains("Invalid audience"), "{body}");
    let (s, _) = post("/v1.0/me/sendMail", &app, "VG86IGJAeA0KDQp4");
    assert_eq!(s, 400, "/me needs a delegated token");
    let (s, _) = post("/v1.0/users/b@x/sendMail", &app, "VG86IGJAeA0KDQp4");
    assert_eq!(s, 202);
}

#[test]
fn check_proves_the_graph_token_and_connection_and_logout_deletes_both_caches() {
    let w = World::new("graph", "");
    w.seed_graph("at-graph-stale", now() - 5);
    let check = w.send(&["check", "work"], b"");
    assert_eq!(check.code, 0, "{}", check.stderr);
    assert!(check.stdout.contains("Microsoft Graph"), "{}", check.stdout);
    assert_eq!(w.idp.refresh_count(), 1, "check renews the Graph token");
    assert!(w.graph.connections() >= 1);
    assert!(w.graph.sent().is_empty(), "check sends nothing");
    let logout = w.send(&["logout", "work"], b"");
    assert_eq!(logout.code, 0, "{}", logout.stderr);
    assert!(!w.graph_file().exists());
    assert!(!w.sandbox.token_file("work").exists());
}

#[test]
fn an_unreachable_graph_is_temporary_75_or_queued() {
    let w = World::new("graph", "");
    // A closed port: bind one, then let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config =
        std::fs::read_to_string(w.sandbox.path().join("config/oauth2-sendmail/config.toml"))
            .unwrap()
            .replace(&w.graph.base_url(), &format!("https://127.0.0.1:{port}"));
    w.sandbox.write_config(&config);
    let msg: &[u8] = b"To: bob@fabrikam.example\n\nx\n";
    let args = ["-oi", "--", "bob@fabrikam.example"];
    let line = w.send(&args, msg).assert_failure(75).to_owned();
    // Before any request: nothing can have been delivered, and the queue may try again.
    assert!(line.contains("network failure"), "{line}");
    assert!(line.contains("nothing was sent"), "{line}");
    w.sandbox
        .write_config(&config.replace("queue = \"never\"", "queue = \"on-failure\""));
    w.send(&args, msg).assert_silent_success();
    assert!(w.send(&["queue", "list"], b"").stdout.contains("1 queued"));
}

#[test]
fn a_graph_answer_lost_after_the_upload_may_have_been_delivered_and_is_queued_only_for_cron() {
    let w = World::new("graph", "queue = \"on-failure\"\n");
    let msg: &[u8] = b"To: bob@fabrikam.example\n\nx\n";
    // mutt's flags: the caller keeps the message, so it is handed back, not queued.
    w.graph.push_fault(Fault::LostAnswer);
    let line = w
        .send(&["-oi", "--", "bob@fabrikam.example"], msg)
        .assert_failure(75)
        .to_owned();
    assert!(line.contains("may have been delivered"), "{line}");
    assert!(!line.contains("nothing was sent"), "{line}");
    assert_eq!(w.graph.sent().len(), 1, "Graph did accept it");
    assert_eq!(w.posts(), 1, "not posted again behind the user's back");
    let list = w.send(&["queue", "list"], b"");
    assert!(
        list.stdout.contains("Mail queue is empty"),
        "{}",
        list.stdout
    );
    // Debian cron cannot keep it: queued (at least once), exit 0.
    w.graph.push_fault(Fault::LostAnswer);
    w.send(
        &["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"],
        b"To: root\nSubject: cron\n\nout\n",
    )
    .assert_silent_success();
    assert_eq!(w.posts(), 2);
    let list = w.send(&["queue", "list"], b"");
    assert!(list.stdout.contains("1 queued"), "{}", list.stdout);
    assert!(
        list.stdout.contains("may have been delivered"),
        "{}",
        list.stdout
    );
    // A flush that loses the answer again keeps it for the next one, saying so.
    w.graph.push_fault(Fault::LostAnswer);
    let run = w.send(&["queue", "flush"], b"");
    assert_eq!(run.code, 75, "{}", run.stdout);
    assert!(
        run.stdout.contains("may have been delivered"),
        "{}",
        run.stdout
    );
    assert!(
        w.send(&["queue", "list"], b"")
            .stdout
            .contains("attempts 2")
    );
}

#[test]
fn auto_goes_to_graph_after_535_5_7_139_without_renewing_the_smtp_token() {
    // 5.7.139 says SMTP AUTH is off for the tenant or mailbox: no new token changes that.
    let refusal = "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.";
    let w = World::with_smtp(
        "auto",
        "",
        Behaviour {
            auth_refusal: Some(refusal.to_owned()),
            ..Behaviour::default()
        },
    );
    let msg: &[u8] = b"To: bob@fabrikam.example\n\nx\n";
    w.send(&["-oi", "--", "bob@fabrikam.example"], msg)
        .assert_silent_success();
    assert_eq!(w.smtp.auth_attempts().len(), 1, "AUTH is not tried again");
    assert_eq!(w.idp.refresh_count(), 0, "the SMTP token is not renewed");
    assert_eq!(w.graph.sent().len(), 1);
}

#[test]
fn smtp_transport_reports_535_5_7_139_at_once_without_renewing_the_token() {
    let refusal = "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.";
    let w = World::with_smtp(
        "smtp",
        "",
        Behaviour {
            auth_refusal: Some(refusal.to_owned()),
            ..Behaviour::default()
        },
    );
    let run = w.send(
        &["-oi", "--", "bob@fabrikam.example"],
        b"To: bob@fabrikam.example\n\nx\n",
    );
    let line = run.assert_failure(77);
    assert!(line.contains("5.7.139"), "{line}");
    assert!(line.contains("transport = \"auto\""), "{line}");
    assert_eq!(w.smtp.auth_attempts().len(), 1);
    assert_eq!(w.idp.refresh_count(), 0);
}

#[test]
fn status_and_check_escape_control_characters_in_a_remembered_5_7_139_reply() {
    let refusal = "535 5.7.139 SMTP AUTH \u{1b}[31mdisabled\u{7} for the Tenant.";
    let w = World::with_smtp(
        "auto",
        "",
        Behaviour {
            auth_refusal: Some(refusal.to_owned()),
            ..Behaviour::default()
        },
    );
    let check = w.send(&["check", "work"], b"");
    assert_eq!(check.code, 0, "{}", check.stderr);
    let status = w.send(&["status"], b"");
    // The account has transport = "auto": no advice to set it.
    assert!(!check.stdout.contains("set transport"), "{}", check.stdout);
    assert!(
        !status.stdout.contains("set transport"),
        "{}",
        status.stdout
    );
    for out in [&check.stdout, &status.stdout] {
        assert!(out.contains("5.7.139"), "{out}");
        assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{out:?}");
        assert!(out.contains("\\x1b[31m"), "{out:?}");
    }
    // A memory file written before this rule (raw control characters) is escaped too.
    let memory = w
        .sandbox
        .path()
        .join("state/oauth2-sendmail/transport/work");
    std::fs::write(
        &memory,
        "graph since 2026-12-01: SMTP said: 535 5.7.139 \u{1b}]0;x\u{7}\n",
    )
    .unwrap();
    let status = w.send(&["status"], b"");
    assert!(!status.stdout.contains('\u{1b}'), "{:?}", status.stdout);
}
