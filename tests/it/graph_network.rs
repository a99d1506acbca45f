//! The Microsoft Graph path's network truths, end to end: a certificate for another name
//! is 76 and not queued, as for SMTP; a slow link that keeps moving is never cut off.

use std::time::Duration;

use super::fake_graph::Fault;
use super::fake_smtp::Behaviour;
use super::graph::World;
use super::slow_link::SlowLink;
use super::support::TestCa;

const RCPT: &str = "bob@fabrikam.example";

#[test]
fn a_graph_certificate_for_another_name_is_76_as_for_smtp_and_queued_only_for_cron() {
    // Graph's certificate comes from a trusted CA but names another host.
    let other = TestCa::with_names(&["graph.other.example"]);
    let w = World::with_graph_ca(
        "graph",
        "queue = \"on-failure\"\n",
        Behaviour::default(),
        Some(&other),
    );
    let bundle = w.sandbox.path().join("ca.pem");
    let mut pem = std::fs::read_to_string(&bundle).unwrap();
    pem.push_str(&other.ca_pem);
    std::fs::write(&bundle, pem).unwrap();
    // mutt keeps the message: 76, not queued (a temporary failure would be queued).
    let line = w
        .send(&["-oi", "--", RCPT], b"To: bob@fabrikam.example\n\nx\n")
        .assert_failure(76)
        .to_owned();
    assert!(line.contains("certificate of Microsoft Graph"), "{line}");
    assert!(line.contains("does not verify"), "{line}");
    assert!(!line.contains("try again later"), "{line}");
    assert!(w.graph.sent().is_empty());
    let list = w.send(&["queue", "list"], b"");
    assert!(
        list.stdout.contains("Mail queue is empty"),
        "{}",
        list.stdout
    );
    // cron cannot keep it: queued, exit 0, as for an SMTP server's certificate.
    let run = w.send(
        &["-FCronDaemon", "-i", "-oem", RCPT],
        b"To: bob@fabrikam.example\n\nx\n",
    );
    assert_eq!((run.code, run.stderr.as_str()), (0, ""));
    assert!(w.send(&["queue", "list"], b"").stdout.contains("1 queued"));
}

#[test]
fn a_slow_link_uploads_3_mb_without_a_timeout() {
    let w = World::new("graph", "");
    // The upload URLs sit behind a 16 KiB/s link: one 3 MB range takes three minutes, far
    // longer than the 60 s a stalled request is given.
    let link = SlowLink::start(w.graph.upload_addr, 16 * 1024, Duration::from_mins(10));
    w.graph
        .set_upload_base(&format!("https://127.0.0.1:{}", link.port()));
    let file: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let msg = format!(
        "To: {RCPT}\r\nSubject: s\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
         --b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"a.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--b--\r\n",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &file)
    );
    let started = std::time::Instant::now();
    w.send(&["-oi", "--", RCPT], msg.as_bytes())
        .assert_silent_success();
    // The link really was slow (this is what makes the test able to fail).
    assert!(started.elapsed() > Duration::from_secs(90));
    let sent = w.graph.sent();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].attachments[0].bytes == file);
}

#[test]
fn a_cached_graph_token_asked_for_another_audience_is_not_used_and_login_renews_graph() {
    let w = World::new("graph", "");
    // A Graph token from before a config fix: asked for another Graph's scopes.
    let stale = w
        .idp
        .issue_access_token_for("https://graph.other.example", false);
    let dir = w.graph_file();
    std::fs::write(
        &dir,
        serde_json::json!({"access_token": stale, "expires_at": super::support::now() + 3600,
            "requested": "scope=https://graph.other.example/Mail.Send offline_access"})
        .to_string(),
    )
    .unwrap();
    let run = w.send(&["-oi", "--", RCPT], b"To: bob@fabrikam.example\n\nx\n");
    run.assert_silent_success();
    run.assert_never_shows(&stale);
    let reqs = w.idp.requests();
    assert_eq!(reqs.len(), 1, "renewed once, for the configured scopes");
    let scope = format!(
        "{0}/Mail.Send {0}/Mail.ReadWrite offline_access",
        w.graph.base_url()
    );
    assert_eq!(reqs[0].field("scope"), Some(scope.as_str()));
    let cache: serde_json::Value = serde_json::from_slice(&std::fs::read(&dir).unwrap()).unwrap();
    assert_eq!(cache["requested"], format!("scope={scope}"));
    // `login` renews the Graph token too: the old one is gone from the cache.
    let before = cache["access_token"].as_str().unwrap().to_owned();
    let rt = w.idp.issue_refresh_token();
    let login = w.send(
        &["login", "work", "--import-refresh-token", "-"],
        format!("{rt}\n").as_bytes(),
    );
    assert_eq!(login.code, 0, "{}", login.stderr);
    let cache: serde_json::Value = serde_json::from_slice(&std::fs::read(&dir).unwrap()).unwrap();
    assert_ne!(cache["access_token"].as_str().unwrap(), before);
    assert_eq!(
        w.idp.audience_of(cache["access_token"].as_str().unwrap()),
        Some(w.graph.audience())
    );
}

#[test]
fn a_401_invalid_audience_names_the_audience_sent_and_the_key_that_sets_it() {
    // graph_scopes name another Graph than graph_url: the token is for the wrong audience.
    let w = World::new(
        "graph",
        "graph_scopes = [\"https://graph.other.example/Mail.Send\", \"offline_access\"]\n",
    );
    std::fs::remove_file(w.graph_file()).unwrap();
    let line = w
        .send(&["-oi", "--", RCPT], b"To: bob@fabrikam.example\n\nx\n")
        .assert_failure(77)
        .to_owned();
    assert!(
        line.contains("https://graph.other.example/Mail.Send"),
        "{line}"
    );
    assert!(line.contains("`graph_scopes`"), "{line}");
    assert!(!line.contains("run `oauth2-sendmail login"), "{line}");
}

#[test]
fn a_request_cut_before_its_body_left_sent_nothing_and_is_temporary() {
    let w = World::new("graph", "");
    // 2.9 MB: one sendMail, far more than one HTTP/2 window, so the body cannot all have
    // left when the stream is reset at its header.
    let msg = format!("To: {RCPT}\nSubject: s\n\n{}\n", "x".repeat(2_900_000));
    w.graph.push_fault(Fault::ResetBeforeBody);
    let line = w
        .send(&["-oi", "--", RCPT], msg.as_bytes())
        .assert_failure(75)
        .to_owned();
    assert!(line.contains("nothing was sent"), "{line}");
    assert!(!line.contains("may have been delivered"), "{line}");
    assert!(w.graph.sent().is_empty());
}

#[test]
fn an_error_answer_that_trickles_is_read_for_bounded_time_then_temporary() {
    let w = World::new("graph", "");
    // The 503's body comes one byte a second for ten minutes.
    w.graph.push_fault(Fault::TrickleError);
    let run = w.send(&["-oi", "--", RCPT], b"To: bob@fabrikam.example\n\nx\n");
    let line = run.assert_failure(75).to_owned();
    assert!(line.contains("503"), "{line}");
    // Given up long before the body would have ended.
    assert!(run.elapsed < Duration::from_mins(5), "{:?}", run.elapsed);
}
