//! Microsoft Graph above its 4 MB request limit, end to end: the real binary sends a large
//! message as a draft, its large attachments through upload sessions on another origin,
//! then `send`; the fake Graph enforces Microsoft's documented rules (docs/graph.md).

use base64::Engine as _;
use mail_parser::MimeHeaders as _;

use super::fake_graph::{Fault, MAX_RANGE, Sent, UploadFault};
use super::graph::World;
use super::support::now;

const RCPT: &str = "bob@fabrikam.example";

/// Deterministic bytes that do not compress or repeat in a way that could hide an offset.
fn bytes(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn b64_lines(data: &[u8]) -> String {
    let s = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = String::with_capacity(s.len() + s.len() / 38);
    for chunk in s.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push_str("\r\n");
    }
    out
}

/// The files of the large message: (name, type, inline Content-ID, bytes).
struct Files {
    pdf: Vec<u8>,
    zip: Vec<u8>,
    png: Vec<u8>,
    doc: Vec<u8>,
    csv: Vec<u8>,
}

fn files() -> Files {
    Files {
        pdf: bytes(9_000_000, 1),
        zip: bytes(8_000_001, 2),
        png: bytes(3_500_002, 3),
        doc: bytes(2_000_000, 4),
        // Text: lines of digits and commas.
        csv: bytes(1_500_000, 5)
            .iter()
            .enumerate()
            .map(|(i, b)| match i % 40 {
                39 => b'\n',
                _ if b % 5 == 0 => b',',
                _ => b'0' + b % 10,
            })
            .collect(),
    }
}

/// About 25 MB of files (33 MB of MIME): a PDF and a ZIP (upload sessions), an inline
/// image referred to by the HTML (upload session, keeps its Content-ID), a 2 MB document
/// (one `POST …/attachments`) and a 1.5 MB CSV (stays in the draft's MIME).
fn large_message(f: &Files) -> Vec<u8> {
    let part = |ctype: &str, disposition: &str, extra: &str, data: &[u8]| {
        format!(
            "Content-Type: {ctype}\r\nContent-Disposition: {disposition}\r\n{extra}\
             Content-Transfer-Encoding: base64\r\n\r\n{}",
            b64_lines(data)
        )
    };
    format!(
        "From: Alice <alice@contoso.com>\r\nTo: Bob <{RCPT}>\r\nSubject: Quarterly report\r\n\
         Date: Sun, 22 Nov 2026 21:59:36 +0000\r\nMessage-ID: <big1@contoso.com>\r\n\
         X-Mailer: report-bot 2.1\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"=_mix\"\r\n\r\n\
         --=_mix\r\nContent-Type: multipart/related; boundary=\"=_rel\"\r\n\r\n\
         --=_rel\r\nContent-Type: text/html; charset=utf-8\r\n\r\n\
         <p>Report</p><img src=\"cid:logo@contoso.com\">\r\n\
         --=_rel\r\n{}--=_rel--\r\n\
         --=_mix\r\n{}--=_mix\r\n{}--=_mix\r\n{}--=_mix\r\n{}--=_mix--\r\n",
        part(
            "image/png",
            "inline; filename=\"logo.png\"",
            "Content-ID: <logo@contoso.com>\r\n",
            &f.png
        ),
        part(
            "application/pdf",
            "attachment; filename=\"report.pdf\"",
            "",
            &f.pdf
        ),
        part(
            "application/zip",
            "attachment; filename=\"data.zip\"",
            "",
            &f.zip
        ),
        part(
            "application/msword",
            "attachment; filename=\"notes.doc\"",
            "",
            &f.doc
        ),
        part("text/csv", "attachment; filename=\"rows.csv\"", "", &f.csv),
    )
    .into_bytes()
}

/// Every file arrived byte for byte: apart (name, type, inline, Content-ID) or in the MIME.
fn assert_every_file_arrived(sent: &Sent, f: &Files) {
    let apart = |name: &str| {
        sent.attachments
            .iter()
            .find(|a| a.name == name)
            .unwrap_or_else(|| panic!("{name} not attached: {:?}", names(sent)))
    };
    let pdf = apart("report.pdf");
    assert!(pdf.bytes == f.pdf && pdf.uploaded && !pdf.is_inline);
    assert_eq!(pdf.content_type, "application/pdf");
    let zip = apart("data.zip");
    assert!(zip.bytes == f.zip && zip.uploaded);
    let png = apart("logo.png");
    assert!(png.bytes == f.png && png.uploaded && png.is_inline);
    assert_eq!(png.content_id.as_deref(), Some("logo@contoso.com"));
    let doc = apart("notes.doc");
    assert!(doc.bytes == f.doc && !doc.uploaded, "under 3 MB: one POST");
    // The CSV stayed in the draft, with the HTML that refers to the image.
    let mime = mail_parser::MessageParser::default()
        .parse(&sent.mime)
        .unwrap();
    let csv = mime
        .attachments()
        .find(|a| a.attachment_name() == Some("rows.csv"))
        .expect("the CSV in the draft");
    assert!(csv.contents() == f.csv.as_slice());
    assert!(mime.body_html(0).unwrap().contains("cid:logo@contoso.com"));
    for header in [
        "Subject: Quarterly report",
        "Message-ID: <big1@contoso.com>",
        "Date: Sun, 22 Nov 2026 21:59:36 +0000",
        "X-Mailer: report-bot 2.1",
        "From: Alice <alice@contoso.com>",
    ] {
        assert!(
            sent.mime
                .windows(header.len())
                .any(|w| w == header.as_bytes()),
            "{header}"
        );
    }
}

fn names(sent: &Sent) -> Vec<String> {
    sent.attachments.iter().map(|a| a.name.clone()).collect()
}

#[test]
fn a_25_mb_message_with_two_large_attachments_and_an_inline_image_arrives_byte_exact() {
    let w = World::new("graph", "");
    let f = files();
    let msg = large_message(&f);
    assert!(msg.len() > 30_000_000);
    // git send-email's flags: the envelope names Bob and a Bcc-like carol.
    let run = w.send(&["-i", "--", RCPT, "carol@fabrikam.example"], &msg);
    run.assert_silent_success();
    let sent = w.graph.sent();
    assert_eq!(sent.len(), 1);
    assert_every_file_arrived(&sent[0], &f);
    let mut rcpts = sent[0].recipients();
    rcpts.sort();
    assert_eq!(
        rcpts,
        [RCPT, "carol@fabrikam.example"],
        "exactly the envelope"
    );
    assert!(w.graph.drafts().is_empty(), "nothing left in Drafts");
    let seen = w.graph.seen();
    for s in &seen {
        assert_eq!(s.authorized, !s.upload, "bearer token only to Graph: {s:?}");
        assert!(s.length <= MAX_RANGE, "{s:?}");
        assert!((200..300).contains(&s.status), "{s:?}");
    }
    let puts = seen.iter().filter(|s| s.method == "PUT").count();
    // 9 MB: 3 ranges, 8 MB: 3, 3.5 MB: 1 (ranges of 4,000,000 bytes).
    assert_eq!(puts, 7);
    // Draft, one attachment POST, three sessions, seven ranges, send: nothing more.
    assert_eq!(seen.len(), 1 + 1 + 3 + puts + 1, "{seen:?}");
    assert!(seen.last().unwrap().path.ends_with("/send"));
}

#[test]
fn a_lost_range_and_a_5xx_mid_upload_resume_where_the_session_says() {
    let w = World::new("graph", "");
    let data = bytes(9_000_000, 9);
    let msg = format!(
        "To: {RCPT}\r\nSubject: s\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
         --b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"a.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}--b--\r\n",
        b64_lines(&data)
    );
    // The first range arrives but its answer is lost; the second gets a 503.
    w.graph.push_upload_fault(UploadFault::Lost);
    w.graph.push_upload_fault(UploadFault::Unavailable);
    w.send(&["-oi", "--", RCPT], msg.as_bytes())
        .assert_silent_success();
    let sent = w.graph.sent();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].attachments[0].bytes == data);
    let gets = w
        .graph
        .seen()
        .iter()
        .filter(|s| s.method == "GET" && s.upload)
        .count();
    assert_eq!(
        gets, 2,
        "the session was asked where to resume after each failure"
    );
}

#[test]
fn a_failure_before_the_send_deletes_the_draft_and_is_temporary() {
    let w = World::new("graph", "");
    let msg = large_message(&files());
    w.graph.push_upload_fault(UploadFault::Expire);
    let line = w
        .send(&["-oi", "--", RCPT], &msg)
        .assert_failure(75)
        .to_owned();
    assert!(line.contains("nothing was sent"), "{line}");
    assert!(w.graph.sent().is_empty());
    assert!(w.graph.drafts().is_empty(), "the draft was deleted");
    assert!(w.graph.seen().iter().any(|s| s.method == "DELETE"));
}

#[test]
fn a_draft_refused_for_want_of_mail_readwrite_is_77_naming_it_and_the_consent_url() {
    let w = World::new("graph", "");
    let only_send = w.idp.issue_access_token_scoped(
        &w.graph.audience(),
        &format!("{}/Mail.Send offline_access", w.graph.base_url()),
    );
    w.seed_graph(&only_send, now() + 3600);
    let line = w
        .send(&["-oi", "--", RCPT], &large_message(&files()))
        .assert_failure(77)
        .to_owned();
    assert!(line.contains("Mail.ReadWrite"), "{line}");
    assert!(line.contains("adminconsent"), "{line}");
    assert!(w.graph.drafts().is_empty());
    // A small message still goes with Mail.Send alone.
    w.send(&["-oi", "--", RCPT], b"To: bob@fabrikam.example\n\nx\n")
        .assert_silent_success();
}

#[test]
fn a_lost_answer_to_the_drafts_send_may_have_been_delivered_and_keeps_nothing_to_delete() {
    let w = World::new("graph", "");
    w.graph.push_fault(Fault::LostAnswer);
    let line = w
        .send(&["-oi", "--", RCPT], &large_message(&files()))
        .assert_failure(75)
        .to_owned();
    assert!(line.contains("may have been delivered"), "{line}");
    assert_eq!(w.graph.sent().len(), 1, "Graph did send it");
    assert!(!w.graph.seen().iter().any(|s| s.method == "DELETE"));
}

#[test]
fn app_only_sends_a_large_message_from_the_mailbox() {
    let w = World::new(
        "graph",
        "flow = \"client-credentials\"\nclient_secret = \"app-secret-123\"\n",
    );
    w.idp
        .register_client_secret(super::graph::CLIENT_ID, "app-secret-123");
    std::fs::remove_file(w.graph_file()).unwrap();
    let f = files();
    let run = w.send(&["-oi", "--", RCPT], &large_message(&f));
    run.assert_silent_success();
    let sent = w.graph.sent();
    assert_eq!(sent[0].mailbox, "alice@contoso.com");
    assert_every_file_arrived(&sent[0], &f);
    assert!(
        w.graph
            .seen()
            .iter()
            .filter(|s| !s.upload && s.method != "HEAD")
            .all(|s| s.path.starts_with("/v1.0/users/alice@contoso.com/messages"))
    );
}

/// `headers` (LF lines) above a 4.5 MB attachment: a message above Graph's 4 MB.
fn with_attachment(headers: &str, file: &[u8]) -> Vec<u8> {
    format!(
        "{headers}MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n\
         --b\nContent-Type: text/plain\n\nsee attached\n\
         --b\nContent-Type: application/pdf\nContent-Disposition: attachment; filename=\"a.pdf\"\n\
         Content-Transfer-Encoding: base64\n\n{}--b--\n",
        b64_lines(file).replace("\r\n", "\n")
    )
    .into_bytes()
}

#[test]
fn each_callers_flags_send_a_large_message_to_exactly_the_envelope() {
    let w = World::new("graph", "");
    let file = bytes(4_500_000, 7);
    let cases: Vec<(&str, Vec<&str>, String, Vec<&str>)> = vec![
        (
            "mutt",
            vec!["-oi", "-oem", "--", RCPT],
            format!("From: alice@contoso.com\nTo: {RCPT}\nSubject: s\n"),
            vec![RCPT],
        ),
        (
            "-t with Bcc",
            vec!["-t", "-i"],
            format!(
                "From: Alice <alice@contoso.com>\nTo: Bob <{RCPT}>\nCc: carol@fabrikam.example\n\
                 Bcc: dave@fabrikam.example\nSubject: hi\n"
            ),
            vec![RCPT, "carol@fabrikam.example", "dave@fabrikam.example"],
        ),
        (
            "git send-email",
            vec![
                "-i",
                "-f",
                "alice@contoso.com",
                RCPT,
                "erin@fabrikam.example",
            ],
            format!("From: alice@contoso.com\nTo: {RCPT}\nSubject: [PATCH] x\n"),
            vec![RCPT, "erin@fabrikam.example"],
        ),
        (
            "cron",
            vec!["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"],
            "From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@host> backup\n".to_owned(),
            vec!["ops@contoso.com"],
        ),
    ];
    for (i, (caller, args, headers, rcpts)) in cases.iter().enumerate() {
        w.send(args, &with_attachment(headers, &file))
            .assert_silent_success();
        let sent = w.graph.sent();
        assert_eq!(sent.len(), i + 1, "{caller}");
        let got = &sent[i];
        let mut delivered = got.recipients();
        delivered.sort();
        let mut want: Vec<String> = rcpts.iter().map(|r| (*r).to_owned()).collect();
        want.sort();
        assert_eq!(delivered, want, "{caller}: exactly the envelope");
        assert!(
            got.attachments.len() == 1 && got.attachments[0].bytes == file,
            "{caller}"
        );
        assert!(w.graph.drafts().is_empty(), "{caller}");
    }
    // -t: the Bcc recipient only as Bcc; cron's root written as its alias.
    assert_eq!(w.graph.sent()[1].bcc, ["dave@fabrikam.example"]);
    assert_eq!(w.graph.sent()[3].to, ["ops@contoso.com"]);
}

#[test]
fn a_china_account_sends_a_large_message_with_a_renewed_token() {
    let w = World::new("graph", "");
    w.sandbox.write_config(&format!(
        "[aliases]\nroot = \"ops@contoso.com\"\n\n[accounts.work]\nprovider = \"microsoft-china\"\n\
         email = \"alice@contoso.com\"\nclient_id = \"{}\"\ntoken_url = \"{}\"\n\
         tls_ca_file = \"{}\"\ngraph_url = \"{}\"\ntransport = \"graph\"\nqueue = \"never\"\n",
        super::graph::CLIENT_ID,
        w.idp.token_url_v2("contoso"),
        w.sandbox.path().join("ca.pem").display(),
        w.graph.base_url()
    ));
    w.seed_graph("at-graph-stale", now() - 5);
    let file = bytes(4_500_000, 8);
    w.send(
        &["-oi", "--", RCPT],
        &with_attachment(&format!("To: {RCPT}\nSubject: s\n"), &file),
    )
    .assert_silent_success();
    let scope = w.idp.requests()[0].field("scope").unwrap().to_owned();
    assert!(scope.contains("/Mail.ReadWrite"), "{scope}");
    assert!(w.graph.sent()[0].attachments[0].bytes == file);
}

#[test]
fn verbose_shows_each_step_but_never_the_upload_urls_authorization() {
    let w = World::new("graph", "");
    let file = bytes(4_500_000, 9);
    let run = w.send(
        &["-v", "-oi", "--", RCPT],
        &with_attachment(&format!("To: {RCPT}\nSubject: s\n"), &file),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    for step in [
        "POST ",
        "/messages ",
        "createUploadSession",
        "-> PUT ",
        "/send ",
    ] {
        assert!(run.stderr.contains(step), "{step}: {}", run.stderr);
    }
    assert!(run.stderr.contains("?<redacted>"), "{}", run.stderr);
    assert!(!run.stderr.contains("authtoken"), "{}", run.stderr);
}
