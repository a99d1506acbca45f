//! The Microsoft Graph path's network truths, end to end: a certificate for another name
//! is 76 and not queued, as for SMTP; a slow link that keeps moving is never cut off.

use std::time::Duration;

use super::fake_smtp::Behaviour;
use super::graph::World;
use super::slow_link::SlowLink;
use super::support::TestCa;

const RCPT: &str = "bob@fabrikam.example";

#[test]
fn a_graph_certificate_for_another_name_is_76_and_not_queued() {
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
    // Cron's flags: a temporary failure would be queued; this one is not.
    let line = w
        .send(
            &["-FCronDaemon", "-i", "-oem", RCPT],
            b"To: bob@fabrikam.example\n\nx\n",
        )
        .assert_failure(76)
        .to_owned();
    assert!(line.contains("certificate"), "{line}");
    assert!(w.graph.sent().is_empty());
    let list = w.send(&["queue", "list"], b"");
    assert!(
        list.stdout.contains("Mail queue is empty"),
        "{}",
        list.stdout
    );
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
        .map(|i| (i * 2_654_435_761 >> 24) as u8)
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
