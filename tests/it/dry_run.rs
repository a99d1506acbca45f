//! `--dry-run` through the real binary, with each real caller's flag set: the account,
//! envelope and header changes it reports, and the refusals (exit codes and one stderr
//! line). The SMTP host and the token endpoint point at closed ports: a dry run must not
//! touch the network, so these pass only if nothing connects.

use crate::setup::{BUSYBOX_CRON, CRONIE, DEBIAN_CRON, EMACS, SYSTEMD_CRON};
use crate::support::{Run, Sandbox};

const CONFIG: &str = r#"
default_account = "work"

[aliases]
root = "ops@contoso.example"
admins = "ops@contoso.example, boss@contoso.example"

[accounts.work]
provider = "microsoft"
email = "alice@contoso.example"
from = ["*@contoso.example"]
smtp_host = "127.0.0.1"
smtp_port = 1
token_url = "https://127.0.0.1:1/"
rewrite_from = "if-missing"

[accounts.home]
provider = "custom"
email = "alice@home.example"
from = ["alice.*@home.example"]
smtp_host = "127.0.0.1"
smtp_port = 1
tls = "implicit"
client_id = "test-client"
token_url = "https://127.0.0.1:1/"
"#;

const WORK: &str = "account: work (127.0.0.1:1, starttls, user alice@contoso.example)";
const HOME: &str = "account: home (127.0.0.1:1, implicit tls, user alice@home.example)";

/// A complete message: nothing to add.
const FULL: &str = "From: Alice <alice@contoso.example>\nTo: Bob <bob@fabrikam.example>\n\
                    Date: Sun, 22 Nov 2026 21:59:36 +0000\nMessage-ID: <m1@contoso.example>\n\
                    Subject: hello\n\nbody\n";

fn sandbox() -> Sandbox {
    let s = Sandbox::new();
    s.write_config(CONFIG);
    s
}

fn dry_run(args: &[&str], stdin: &str) -> Run {
    dry_run_bytes(args, stdin.as_bytes())
}

fn dry_run_bytes(flags: &[&str], stdin: &[u8]) -> Run {
    let mut command_line = vec!["--dry-run"];
    command_line.extend_from_slice(flags);
    sandbox().run(&command_line, stdin)
}

/// Asserts success with an empty stderr; returns the report lines.
#[track_caller]
fn report(run: &Run) -> Vec<&str> {
    assert_eq!(
        (run.code, run.stderr.as_str()),
        (0, ""),
        "stdout: {}",
        run.stdout
    );
    run.stdout.lines().collect()
}

/// The report lines that start with `prefix`.
fn lines_starting<'a>(lines: &[&'a str], prefix: &str) -> Vec<&'a str> {
    lines
        .iter()
        .copied()
        .filter(|l| l.starts_with(prefix))
        .collect()
}

#[test]
fn mutt_recipients_after_double_dash() {
    let run = dry_run(
        &[
            "-oem",
            "-oi",
            "--",
            "bob@fabrikam.example",
            "Carol <carol@fabrikam.example>",
        ],
        FULL,
    );
    assert_eq!(
        report(&run),
        [
            WORK,
            "envelope-from: <alice@contoso.example>",
            "recipients: <bob@fabrikam.example>, <carol@fabrikam.example>",
            &format!("size: {} bytes", FULL.len()),
        ]
    );
}

#[test]
fn mutt_envelope_from_selects_the_account() {
    let run = dry_run(
        &[
            "-oi",
            "-f",
            "alice.lists@home.example",
            "--",
            "bob@fabrikam.example",
        ],
        FULL,
    );
    let lines = report(&run);
    assert_eq!(lines[0], HOME);
    assert_eq!(lines[1], "envelope-from: <alice.lists@home.example>");
}

#[test]
fn emacs_t_with_from_header_choosing_the_account() {
    let msg = "From: Alice <alice@home.example>\nTo: bob@fabrikam.example\nCc: carol@fabrikam.example\nSubject: s\n\nbody\n";
    let run = dry_run(&["-oi", "-t"], msg);
    let lines = report(&run);
    assert_eq!(lines[0], HOME);
    assert_eq!(lines[1], "envelope-from: <alice@home.example>");
    assert_eq!(
        lines[2],
        "recipients: <bob@fabrikam.example>, <carol@fabrikam.example>"
    );
    assert_eq!(
        lines_starting(&lines, "add header: ").len(),
        2,
        "Date and Message-ID"
    );
}

#[test]
fn emacs_read_envelope_from_with_f_too() {
    let msg = "From: alice.x@home.example\nTo: bob@fabrikam.example\n\nbody\n";
    let lines_of = |args: &[&str]| dry_run(args, msg).stdout;
    let run = lines_of(EMACS);
    assert!(
        run.contains("envelope-from: <alice.x@home.example>\n"),
        "{run}"
    );
    let run = lines_of(&[
        "-oi",
        "-f",
        "ops@contoso.example",
        "--read-envelope-from",
        "-t",
    ]);
    assert!(
        run.starts_with(WORK) && run.contains("envelope-from: <ops@contoso.example>\n"),
        "{run}"
    );
}

#[test]
fn git_send_email() {
    let run = dry_run(&["-i", "a@fabrikam.example", "b@fabrikam.example"], FULL);
    assert_eq!(
        report(&run)[2],
        "recipients: <a@fabrikam.example>, <b@fabrikam.example>"
    );
}

#[test]
fn debian_cron_root_alias_and_from_rewritten() {
    let msg = "From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@host> run-parts\n\
               Content-Type: text/plain; charset=UTF-8\n\njob output\n";
    let run = dry_run(DEBIAN_CRON, msg);
    let lines = report(&run);
    assert_eq!(lines[0], WORK);
    assert_eq!(lines[1], "envelope-from: <alice@contoso.example>");
    assert_eq!(lines[2], "recipients: <ops@contoso.example>");
    assert_eq!(
        lines[3],
        "set header: From: CronDaemon <alice@contoso.example>"
    );
    assert!(
        lines[4].starts_with("add header: Date: ") && lines[4].ends_with(" +0000"),
        "{}",
        lines[4]
    );
    assert!(
        lines[5].starts_with("add header: Message-ID: <")
            && lines[5].ends_with("@contoso.example>")
    );
    assert!(lines[6].starts_with("size: "));
}

#[test]
fn cronie_f_root_and_t() {
    let msg = "From: root (Cron Daemon)\nTo: root\nSubject: s\nAuto-Submitted: auto-generated\nX-Cron-Env: <SHELL=/bin/sh>\n\nout\n";
    let run = dry_run(CRONIE, msg);
    let lines = report(&run);
    assert_eq!(
        &lines[..4],
        [
            WORK,
            "envelope-from: <alice@contoso.example>",
            "recipients: <ops@contoso.example>",
            "set header: From: CronDaemon <alice@contoso.example>",
        ]
    );
}

#[test]
fn busybox_and_systemd_cron_and_mailx() {
    let lines = report(&dry_run(BUSYBOX_CRON, "To: admins\nSubject: s\n\nout\n")).join("\n");
    assert!(
        lines.contains("recipients: <ops@contoso.example>, <boss@contoso.example>\n"),
        "{lines}"
    );
    assert!(
        lines.contains("add header: From: alice@contoso.example\n"),
        "{lines}"
    );
    let lines = report(&dry_run(SYSTEMD_CRON, "Subject: s\n\nout\n")).join("\n");
    assert!(
        lines.contains("recipients: <ops@contoso.example>\n"),
        "{lines}"
    );
    let run = dry_run(&["-i", "bob@fabrikam.example"], FULL);
    let lines = report(&run);
    assert_eq!(lines[2], "recipients: <bob@fabrikam.example>");
}

#[test]
fn echo_body_to_an_address() {
    let run = dry_run(&["user@fabrikam.example"], "body\n");
    let lines = report(&run);
    assert_eq!(lines[2], "recipients: <user@fabrikam.example>");
    assert_eq!(lines[3], "add header: From: alice@contoso.example");
    assert_eq!(lines_starting(&lines, "add header: ").len(), 3);
}

#[test]
fn bcc_and_resent_bcc_removed_and_size_counts_it() {
    let msg = "From: alice@contoso.example\nTo: bob@fabrikam.example\nBcc: secret@fabrikam.example,\n  other@fabrikam.example\n\
               Date: d\nMessage-ID: <m@x>\n\nbody\n";
    let run = dry_run(&["-t"], msg);
    let lines = report(&run);
    assert_eq!(
        lines[2],
        "recipients: <bob@fabrikam.example>, <secret@fabrikam.example>, <other@fabrikam.example>"
    );
    assert_eq!(lines[3], "remove header: Bcc");
    let removed = "Bcc: secret@fabrikam.example,\n  other@fabrikam.example\n".len();
    assert_eq!(lines[4], format!("size: {} bytes", msg.len() - removed));
}

#[test]
fn resent_uses_the_newest_block() {
    let msg = "Resent-From: alice@contoso.example\nResent-To: new@fabrikam.example\nResent-Bcc: hidden@fabrikam.example\n\
               From: x@fabrikam.example\nTo: old@fabrikam.example\nDate: d\nMessage-ID: <m@x>\n\nbody\n";
    let run = dry_run(&["-t"], msg);
    let lines = report(&run);
    assert_eq!(
        lines[2],
        "recipients: <new@fabrikam.example>, <hidden@fabrikam.example>"
    );
    assert_eq!(lines[3], "remove header: Resent-Bcc");
}

#[test]
fn null_sender_dsn_and_dedup() {
    let run = dry_run(
        &[
            "-f",
            "<>",
            "-N",
            "success,failure",
            "-R",
            "hdrs",
            "-V",
            "env1",
            "b@fabrikam.example",
            "b@FABRIKAM.example",
        ],
        FULL,
    );
    let lines = report(&run);
    assert_eq!(
        &lines[1..4],
        [
            "envelope-from: <>",
            "recipients: <b@fabrikam.example>",
            "dsn: notify=SUCCESS,FAILURE ret=HDRS envid=env1"
        ]
    );
}

#[test]
fn refused_messages_exit_65_with_one_line() {
    let cases: &[(&[&str], &[u8], &str)] = &[
        (&["b@fabrikam.example"], b"", "empty"),
        (
            &["b@fabrikam.example"],
            b"Subject: s\n\nnul \0 here\n",
            "NUL",
        ),
        (&[], FULL.as_bytes(), "no recipients"),
        (&["-t"], b"Subject: s\n\nbody\n", "no recipients"),
        (&["not-an-address@"], FULL.as_bytes(), "not-an-address@"),
        (
            &["-t"],
            b"To: \"quoted local\"@example.com\n\nbody\n",
            "@example.com",
        ),
        (
            &[
                "-f",
                "a@contoso.example\r\nRCPT TO:<x@y>",
                "b@fabrikam.example",
            ],
            FULL.as_bytes(),
            "line break",
        ),
        (&["www-data"], FULL.as_bytes(), "[aliases]"),
    ];
    for (args, stdin, says) in cases {
        let run = dry_run_bytes(args, stdin);
        let line = run.assert_failure(65);
        assert!(line.contains(says), "{args:?}: {line}");
    }
}

#[test]
fn unknown_account_is_78() {
    let run = dry_run(&["-a", "nope", "b@fabrikam.example"], FULL);
    let line = run.assert_failure(78);
    assert!(
        line.contains("nope") && line.contains("work, home"),
        "{line}"
    );
}

#[test]
fn bad_config_is_78_with_file_and_line() {
    let s = Sandbox::new();
    let path =
        s.write_config("[accounts.work]\nemail = \"a@contoso.example\"\nsmtp_hots = \"x\"\n");
    let run = s.run(&["--dry-run", "b@fabrikam.example"], FULL.as_bytes());
    let line = run.assert_failure(78);
    assert!(line.contains(&format!("{}:3", path.display())), "{line}");
    assert!(line.contains("smtp_hots"), "{line}");
}

#[test]
fn usage_errors_are_64() {
    let run = dry_run(&["--no-such-flag", "b@fabrikam.example"], FULL);
    run.assert_failure(64);
    let run = dry_run(&["-bs"], FULL);
    assert!(run.assert_failure(64).contains("-bs"));
    let run = dry_run(&["-N", "sometimes", "b@fabrikam.example"], FULL);
    assert!(run.assert_failure(64).contains("-N"));
}

/// One Microsoft account `g` with `transport`; SMTP, Graph and the token endpoint at
/// closed ports.
fn graph_sandbox(transport: &str) -> Sandbox {
    let s = Sandbox::new();
    s.write_config(&format!(
        "[accounts.g]\nprovider = \"microsoft\"\nemail = \"alice@contoso.example\"\n\
         smtp_host = \"127.0.0.1\"\nsmtp_port = 1\ntoken_url = \"https://127.0.0.1:1/\"\n\
         graph_url = \"https://127.0.0.1:1\"\ntransport = \"{transport}\"\n"
    ));
    s
}

#[test]
fn a_graph_account_shows_the_graph_endpoint_instead_of_the_smtp_server() {
    let graph =
        "Microsoft Graph POST https://127.0.0.1:1/v1.0/me/sendMail, user alice@contoso.example";
    let smtp = "127.0.0.1:1, starttls, user alice@contoso.example";
    let args = ["--dry-run", "-oi", "--", "bob@fabrikam.example"];
    let s = graph_sandbox("graph");
    assert_eq!(
        report(&s.run(&args, FULL.as_bytes()))[0],
        format!("account: g ({graph})")
    );
    // auto: SMTP until a 5.7.139, then Graph, as remembered in the state folder.
    let s = graph_sandbox("auto");
    assert_eq!(
        report(&s.run(&args, FULL.as_bytes()))[0],
        format!("account: g ({smtp}; transport auto: {graph} after a 5.7.139)")
    );
    let memory = s.path().join("state/oauth2-sendmail/transport");
    std::fs::create_dir_all(&memory).unwrap();
    std::fs::write(
        memory.join("g"),
        "graph since 2026-12-01T11:00:00Z: SMTP said: 535 5.7.139\n",
    )
    .unwrap();
    assert_eq!(
        report(&s.run(&args, FULL.as_bytes()))[0],
        format!("account: g ({graph}; transport auto: Graph since a 5.7.139)")
    );
    // SMTP accounts are shown as before.
    assert_eq!(
        report(&graph_sandbox("smtp").run(&args, FULL.as_bytes()))[0],
        format!("account: g ({smtp})")
    );
}

#[test]
fn a_graph_dry_run_refuses_a_header_recipient_outside_the_envelope_as_the_send_would() {
    let run = graph_sandbox("graph").run(
        &["--dry-run", "-oi", "--", "carol@fabrikam.example"],
        FULL.as_bytes(),
    );
    let line = run.assert_failure(65);
    assert!(line.contains("<bob@fabrikam.example>"), "{line}");
    assert!(line.contains("Microsoft Graph"), "{line}");
}
