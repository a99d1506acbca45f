//! Real mail clients driving the binary as their `sendmail`: mutt and Emacs message-mode,
//! each in batch mode, against the fake SMTP server. Skipped (with a note) where the client
//! is not installed; `.ci/run` installs both.

use std::process::Command;

use serde_json::json;

use super::fake_smtp::{Behaviour, FakeSmtp};
use super::setup::setup;
use super::support::{Sandbox, now, run_command};

fn installed(program: &str) -> bool {
    let found = Command::new(program).arg("--version").output().is_ok();
    if !found {
        eprintln!("{program} is not installed; skipping (apt-get install {program})");
    }
    found
}

/// A sandbox whose account `work` sends to a fake server that accepts the cached token.
fn world() -> (Sandbox, FakeSmtp, String) {
    let s = setup();
    let smtp = s.smtp(Behaviour::default());
    s.account()
        .provider(Some("custom"))
        .client_id(None)
        .smtp("127.0.0.1", smtp.port())
        .extra("queue = \"never\"\n")
        .write();
    let token = s.idp.issue_access_token();
    s.seed(&json!({"access_token": token, "expires_at": now() + 3600}));
    (s.sandbox, smtp, token)
}

#[test]
fn mutt_sends_through_it() {
    if !installed("mutt") {
        return;
    }
    let (sandbox, smtp, token) = world();
    let muttrc = sandbox.write_file(
        "muttrc",
        &format!(
            "set sendmail=\"{} -oi\"\nset from=\"alice@contoso.com\"\nset realname=\"Alice\"\n\
             set use_envelope_from=yes\nset tmpdir=\"{}\"\n",
            env!("CARGO_BIN_EXE_oauth2-sendmail"),
            sandbox.path().display()
        ),
    );
    let mut mutt = sandbox.program("mutt");
    mutt.args(["-n", "-F"]).arg(&muttrc).args([
        "-s",
        "from mutt",
        "-b",
        "carol@fabrikam.example",
        "bob@fabrikam.example",
    ]);
    let run = run_command(mutt, b"Hello from mutt.\n.\nA lone dot above.\n");
    run.assert_never_shows(&token);
    assert_eq!(run.code, 0, "mutt: {}", run.stderr);
    let d = smtp.deliveries();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].from, "alice@contoso.com");
    assert_eq!(
        d[0].rcpts,
        ["bob@fabrikam.example", "carol@fabrikam.example"]
    );
    let data = String::from_utf8_lossy(&d[0].data);
    assert!(data.contains("Subject: from mutt\r\n"), "{data}");
    assert!(
        !data.contains("carol@"),
        "the Bcc recipient stays hidden: {data}"
    );
    assert!(
        data.ends_with("\r\n\r\nHello from mutt.\r\n.\r\nA lone dot above.\r\n"),
        "{data}"
    );
}

/// Emacs message-mode: `-oi -f ADDR -t` (with `message-sendmail-envelope-from` set), and
/// Emacs reports any output of the program as a failure.
#[test]
fn emacs_message_mode_sends_through_it() {
    if !installed("emacs") {
        return;
    }
    let (sandbox, smtp, token) = world();
    let script = sandbox.write_file(
        "send.el",
        &format!(
            "(require 'message)\n\
             (setq message-send-mail-function 'message-send-mail-with-sendmail\n\
                   sendmail-program \"{}\"\n\
                   message-sendmail-envelope-from 'header\n\
                   user-mail-address \"alice@contoso.com\" user-full-name \"Alice\")\n\
             (message-mail \"bob@fabrikam.example\" \"from emacs\")\n\
             (message-goto-body)\n\
             (insert \"Hello from Emacs.\\n.\\nA lone dot above.\\n\")\n\
             (message-add-header \"Bcc: carol@fabrikam.example\")\n\
             (message-send-and-exit)\n",
            env!("CARGO_BIN_EXE_oauth2-sendmail")
        ),
    );
    let mut emacs = sandbox.program("emacs");
    emacs.args(["--batch", "-Q", "-l"]).arg(&script);
    let run = run_command(emacs, b"");
    run.assert_never_shows(&token);
    assert_eq!(run.code, 0, "emacs: {}", run.stderr);
    let d = smtp.deliveries();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].from, "alice@contoso.com");
    assert_eq!(
        d[0].rcpts,
        ["bob@fabrikam.example", "carol@fabrikam.example"]
    );
    let data = String::from_utf8_lossy(&d[0].data);
    assert!(data.contains("Subject: from emacs\r\n"), "{data}");
    assert!(!data.contains("Bcc:"), "{data}");
    assert!(
        data.contains("\r\n\r\nHello from Emacs.\r\n.\r\nA lone dot above.\r\n"),
        "{data}"
    );
}
