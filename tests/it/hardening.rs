//! Regression tests for issue 10 (hardening): every peer bounded, every secret scrubbed,
//! every folder checked. Each test is named after the behaviour it pins down; all run the
//! real binary against the fakes on 127.0.0.1.

// AADSTS codes are identifiers, written as Microsoft prints them.
#![allow(clippy::unreadable_literal)]

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::fake_idp::Failure;
use super::fake_smtp::{Behaviour, FakeSmtp};
use super::setup::{Setup, setup};
use super::support::now;

/// An account `work` with a valid cached token, sending to a fake SMTP server that accepts
/// the tokens the fake identity platform issued; `extra` goes into the account table.
fn with_smtp(behaviour: Behaviour, extra: &str) -> (Setup, FakeSmtp) {
    let s = setup();
    let smtp = s.smtp(behaviour);
    s.config(&format!(
        "smtp_host = \"127.0.0.1\"\nsmtp_port = {}\nqueue = \"never\"\n{extra}",
        smtp.port()
    ));
    s.seed_valid();
    (s, smtp)
}

// 1. Unbounded token-endpoint answers.

#[test]
fn an_endless_token_answer_is_cut_at_the_body_limit_with_exit_75() {
    let s = setup();
    s.config_with("", "");
    s.seed_expired();
    s.idp.set_failure(Some(Failure::Endless));
    let run = s.run(&["token", "work"]);
    let line = run.assert_failure(75);
    assert!(line.contains("larger than 1048576 bytes"), "{line}");
    assert!(line.contains("try again later"), "{line}");
}

#[test]
fn an_endless_device_code_answer_is_cut_at_the_body_limit_with_exit_75() {
    let s = setup();
    s.account()
        .device_code_url()
        .extra("flow = \"devicecode\"\n")
        .write();
    s.idp.set_failure(Some(Failure::Endless));
    let run = s.run(&["login", "work", "--no-browser"]);
    let line = run.assert_failure(75);
    assert!(line.contains("larger than 1048576 bytes"), "{line}");
}

// 2. `*_cmd` without limits.

#[test]
fn a_hanging_password_cmd_is_stopped_at_command_timeout_with_a_line_naming_it() {
    let s = setup();
    // Through a shell that waits for its own child: the shell is stopped, its child left alone.
    s.config_with(
        "command_timeout = 1",
        "flow = \"password\"\npassword_cmd = [\"sh\", \"-c\", \"sleep 30; echo pw\"]\n",
    );
    let run = s.run(&["token", "work"]);
    let line = run.assert_failure(78);
    assert!(
        line.contains("password_cmd") && line.contains("did not finish within 1 s"),
        "{line}"
    );
    assert!(s.idp.requests().is_empty(), "no request without a password");
}

#[test]
fn a_flooding_password_cmd_is_stopped_with_a_line_naming_it() {
    let s = setup();
    s.config_with("", "flow = \"password\"\npassword_cmd = [\"yes\"]\n");
    let run = s.run(&["token", "work"]);
    let line = run.assert_failure(78);
    assert!(
        line.contains("password_cmd") && line.contains("printed more than"),
        "{line}"
    );
}

#[test]
fn command_timeout_zero_is_a_config_error() {
    let s = setup();
    s.config_with("command_timeout = 0", "");
    let run = s.run(&["token", "work"]);
    let line = run.assert_failure(78);
    assert!(line.contains("command_timeout"), "{line}");
}

#[test]
fn a_hanging_notify_cmd_runs_detached_and_never_holds_up_the_command() {
    let s = setup();
    let done = s.sandbox.path().join("notified");
    s.config_with(
        "",
        &format!(
            "notify_cmd = [\"sh\", \"-c\", \"sleep 2; echo \\\"$OAUTH2_SENDMAIL_ACCOUNT\\\" > '{}'\"]\n",
            done.display()
        ),
    );
    s.seed_expired();
    s.idp.push_failure(Failure::invalid_grant(700082));
    // As cron calls it (-oem): queued after the token service's refusal, while the
    // notifier still sleeps.
    let run = s
        .sandbox
        .run(&["-oem", "-t"], b"To: bob@example.org\n\nhi\n");
    run.assert_silent_success();
    assert!(!done.exists(), "the command waited for its notifier");
    assert_eq!(super::support::wait_for_line(&done), "work\n");
}

// 3. Echoed secrets.

/// A client secret long enough to straddle any cut, with characters that URL-encoding and
/// JSON-escaping change.
fn long_secret() -> String {
    format!("cs/{}+Tail Secret\"x\\y", "S3cr3t".repeat(50))
}

/// Fails when any 12-character piece of `secret` (raw or URL-encoded) is in `text`.
#[track_caller]
fn assert_no_piece_of(secret: &str, text: &str) {
    let encoded: String = secret
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    for form in [secret, encoded.as_str()] {
        let chars: Vec<char> = form.chars().collect();
        for w in chars.windows(12) {
            let piece: String = w.iter().collect();
            assert!(!text.contains(&piece), "`{piece}` of a secret in: {text}");
        }
    }
}

#[test]
fn secrets_echoed_by_the_token_service_are_scrubbed_before_the_cut_on_stderr() {
    let s = setup();
    let secret = long_secret();
    s.config_with(
        "",
        &format!(
            "client_secret = {}\n",
            serde_json::to_string(&secret).unwrap()
        ),
    );
    let rt = s.seed_expired();
    s.idp.set_failure(Some(Failure::EchoForm));
    let run = s.run(&["token", "work"]);
    let line = run.assert_failure(77);
    assert!(line.contains("AADSTS70008"), "{line}");
    assert!(line.contains("<redacted>"), "the echo was there: {line}");
    assert_no_piece_of(&rt, line);
    assert_no_piece_of(&secret, line);
}

#[test]
fn a_password_echoed_by_the_token_service_reaches_neither_stderr_the_log_nor_notify_cmd() {
    let s = setup();
    let password = format!("pw {}/+&=%", "Pa55w0rd".repeat(40));
    let pw_file = s.sandbox.write_file("pw", &format!("{password}\n"));
    let notified = s.sandbox.path().join("notified");
    let log = s.sandbox.path().join("state/log");
    s.config_with(
        &format!("logfile = \"{}\"", log.display()),
        &format!(
            "flow = \"password\"\npassword_cmd = [\"cat\", \"{}\"]\nqueue = \"never\"\n\
             smtp_host = \"127.0.0.1\"\nsmtp_port = 1\n\
             notify_cmd = [\"sh\", \"-c\", \"echo \\\"$OAUTH2_SENDMAIL_REASON\\\" > '{}'\"]\n",
            pw_file.display(),
            notified.display()
        ),
    );
    s.idp.set_failure(Some(Failure::EchoForm));
    let run = s.sandbox.run(
        &["-t"],
        b"From: alice@contoso.com\nTo: bob@example.org\n\nhi\n",
    );
    let line = run.assert_failure(77);
    assert!(line.contains("<redacted>"), "the echo was there: {line}");
    assert_no_piece_of(&password, line);
    let note = super::support::wait_for_line(&notified);
    assert!(note.contains("AADSTS70008"), "{note}");
    assert_no_piece_of(&password, &note);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("AADSTS70008"), "{logged}");
    assert_no_piece_of(&password, &logged);
}

// 4. Hostile numbers.

#[test]
fn a_huge_expires_in_in_a_device_code_answer_is_clamped_not_a_panic() {
    let s = setup();
    s.account()
        .device_code_url()
        .extra("flow = \"devicecode\"\n")
        .write();
    s.idp.push_failure(Failure::Json {
        status: 200,
        body: json!({
            "device_code": "dc-unknown-to-the-fake",
            "user_code": "ABCD",
            "verification_uri": "https://microsoft.com/devicelogin",
            "expires_in": u64::MAX,
            "interval": 1,
        }),
    });
    // The unknown device code is refused at the first poll: a clean error, not exit 101.
    let run = s.run(&["login", "work", "--no-browser"]);
    assert!(
        run.code != 101 && !run.stderr.contains("panicked"),
        "{run:?}"
    );
    assert!(run.stderr.contains("expires in 60 min"), "{}", run.stderr);
}

#[test]
fn a_huge_expires_in_in_a_token_answer_is_clamped_to_a_day() {
    let s = setup();
    s.config_with("", "");
    s.seed_expired();
    s.idp
        .set_expires_in(super::fake_idp::ExpiresIn::Number(u64::MAX));
    let run = s.run(&["token", "work"]);
    assert_eq!(run.code, 0, "{run:?}");
    let stored: Value =
        serde_json::from_slice(&std::fs::read(s.sandbox.token_file("work")).unwrap()).unwrap();
    let expires_at = stored["expires_at"].as_u64().unwrap();
    assert!(expires_at <= now() + 24 * 3600, "{expires_at}");
    let status = s.run(&["status", "work"]);
    assert_eq!(status.code, 0, "{status:?}");
}

// 10. A token store that cannot be read back.

#[test]
fn a_token_encrypt_cmd_whose_output_does_not_decrypt_back_fails_the_login_and_keeps_the_file() {
    let s = setup();
    // `true` prints nothing: an empty "ciphertext".
    s.config_with(
        "",
        "token_encrypt_cmd = [\"true\"]\ntoken_decrypt_cmd = [\"cat\"]\n",
    );
    let rt = s.idp.issue_refresh_token();
    let run = s.sandbox.run(
        &["login", "work", "--import-refresh-token", "-"],
        rt.as_bytes(),
    );
    let line = run.assert_failure(78);
    assert!(
        line.contains("token_encrypt_cmd") && line.contains("does not decrypt back"),
        "{line}"
    );
    assert!(!s.sandbox.token_file("work").exists(), "nothing was stored");
}

// 11. The rotated refresh token cannot be saved.

#[test]
fn tokens_that_cannot_be_saved_after_a_refresh_are_still_used_with_a_warning() {
    let s = setup();
    // Saving fails deterministically: the encrypt command fails (as a full disk would).
    s.config_with(
        "",
        "token_encrypt_cmd = [\"false\"]\ntoken_decrypt_cmd = [\"cat\"]\n",
    );
    s.seed_expired();
    let before = std::fs::read(s.sandbox.token_file("work")).unwrap();
    let run = s.run(&["token", "work"]);
    assert_eq!(run.code, 0, "{run:?}");
    let token = run.stdout.trim_end();
    assert!(s.idp.is_valid_access_token(token), "{token}");
    let warning = run.stderr.trim_end();
    assert!(
        warning.contains("not saved") && warning.contains("oauth2-sendmail login work"),
        "{warning}"
    );
    assert!(!warning.contains('\n'), "{warning}");
    run.assert_never_shows("rt-");
    assert_eq!(std::fs::read(s.sandbox.token_file("work")).unwrap(), before);
}

// 5. Bare CR.

#[test]
fn a_bare_cr_in_the_header_is_a_line_break_so_a_smuggled_bcc_is_removed_and_no_bare_cr_is_sent() {
    let (s, smtp) = with_smtp(Behaviour::default(), "");
    let run = s.sandbox.run(
        &["-t"],
        b"From: alice@contoso.com\nTo: bob@example.org, carol@example.org\rBcc: hidden@example.net\n\
          Subject: s\n\nbody\rline\n",
    );
    run.assert_silent_success();
    let d = &smtp.deliveries()[0];
    let data = String::from_utf8_lossy(&d.data).into_owned();
    assert!(
        !data.contains("Bcc") && !data.contains("hidden"),
        "{data:?}"
    );
    let bare_cr = d
        .data
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\r' && d.data.get(i + 1) != Some(&b'\n'));
    assert!(!bare_cr, "a bare CR reached the wire: {data:?}");
    assert!(data.contains("body\r\nline\r\n"), "{data:?}");
}

// 8. Files and folders.

fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_token_folder_owned_by_another_user_is_refused_with_the_fix() {
    let s = setup();
    s.config_with("", "");
    s.seed(&json!({"access_token": "at-planted-1", "expires_at": now() + 3000}));
    let dir = s.sandbox.token_file("work").parent().unwrap().to_owned();
    std::os::unix::fs::chown(&dir, Some(54321), None).unwrap();
    let run = s.run(&["token", "work"]);
    let line = run.assert_failure(74);
    assert!(
        line.contains("token folder")
            && line.contains("belongs to user 54321")
            && line.contains("chown"),
        "{line}"
    );
    run.assert_never_shows("at-planted-1");
}

#[test]
fn a_queue_folder_others_may_write_or_a_symlink_to_one_is_refused_with_the_fix() {
    let s = setup();
    s.config_with("", "");
    let queue = s.sandbox.path().join("state/oauth2-sendmail/queue");
    let loose = s.sandbox.path().join("loose");
    std::fs::create_dir_all(&loose).unwrap();
    super::support::set_mode(&loose, 0o777);
    std::fs::create_dir_all(queue.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(&loose, &queue).unwrap();
    let run = s
        .sandbox
        .run(&["-odq", "-t"], b"To: bob@example.org\n\nhi\n");
    let line = run.assert_failure(74);
    assert!(
        line.contains("queue folder") && line.contains("chmod 700"),
        "{line}"
    );
    assert_eq!(
        std::fs::read_dir(&loose).unwrap().count(),
        0,
        "nothing queued"
    );
    let run = s.run(&["queue", "list"]);
    assert!(run.assert_failure(74).contains("chmod 700"));
}

#[test]
fn a_symlink_at_the_lock_path_is_not_followed() {
    let s = setup();
    s.config_with("", "");
    s.seed_expired();
    let target = s.sandbox.path().join("elsewhere");
    let lock = s.sandbox.token_file("work").with_extension("lock");
    std::os::unix::fs::symlink(&target, &lock).unwrap();
    let run = s.run(&["token", "work"]);
    run.assert_failure(74);
    assert!(!target.exists(), "the symlink's target was created");
    assert_eq!(s.idp.refresh_count(), 0);
}

#[test]
fn the_log_is_created_0600_in_a_0700_folder_even_under_umask_000() {
    let (s, _smtp) = with_smtp(Behaviour::default(), "");
    let log = s.sandbox.path().join("state/logs/sent.log");
    let config =
        std::fs::read_to_string(s.sandbox.path().join("config/oauth2-sendmail/config.toml"))
            .unwrap();
    s.sandbox
        .write_config(&format!("logfile = \"{}\"\n{config}", log.display()));
    let exe = env!("CARGO_BIN_EXE_oauth2-sendmail");
    let mut cmd = s.sandbox.program("sh");
    cmd.args(["-c", "umask 000; exec \"$0\" \"$@\"", exe, "-t"]);
    let run =
        super::support::run_command(cmd, b"From: alice@contoso.com\nTo: bob@example.org\n\nhi\n");
    run.assert_silent_success();
    assert_eq!(mode(&log), 0o600);
    assert_eq!(mode(log.parent().unwrap()), 0o700);
}

// 9. Envelope and headers.

#[test]
fn a_sender_that_is_no_address_or_not_one_address_is_refused_with_65() {
    let s = setup();
    s.config_with("", "");
    for f in [";", "x@y.example> SIZE=1 <z", "(comment only)"] {
        let run = s.sandbox.run(
            &["--dry-run", "-f", f, "bob@example.org"],
            b"Subject: s\n\nhi\n",
        );
        let line = run.assert_failure(65);
        assert!(line.contains("-f"), "{f}: {line}");
    }
    // The null sender is still spelled `<>`.
    let run = s.sandbox.run(
        &["--dry-run", "-f", "<>", "bob@example.org"],
        b"Subject: s\n\nhi\n",
    );
    assert_eq!(run.code, 0, "{run:?}");
}

#[test]
fn an_address_list_that_does_not_parse_whole_is_refused_with_65_naming_the_header() {
    let s = setup();
    s.config_with("", "");
    let run = s.sandbox.run(
        &["--dry-run", "-t"],
        b"To: a@b.example (unterminated comment, c@d.example\nSubject: s\n\nhi\n",
    );
    let line = run.assert_failure(65);
    assert!(
        line.contains("To") && line.contains("unterminated comment"),
        "{line}"
    );
}

#[test]
fn aliases_are_expanded_once_per_name_with_a_depth_limit() {
    let s = setup();
    // Each name forty times the next: 40^7 paths (hours, expanded path by path), one address.
    let mut aliases = String::from("[aliases]\n");
    for i in 0..7 {
        let next = vec![format!("a{}", i + 1); 40].join(", ");
        let _ = writeln!(aliases, "a{i} = \"{next}\"");
    }
    aliases.push_str("a7 = \"ops@contoso.com\"\n");
    s.config_with(&aliases, "");
    let run = s.sandbox.run(&["--dry-run", "a0"], b"Subject: s\n\nhi\n");
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        run.stdout.matches("ops@contoso.com").count(),
        1,
        "{}",
        run.stdout
    );
    // Deeper than the limit: a clear config error, not a long wait.
    let mut deep = String::from("[aliases]\n");
    for i in 0..20 {
        let _ = writeln!(deep, "d{i} = \"d{}\"", i + 1);
    }
    deep.push_str("d20 = \"ops@contoso.com\"\n");
    s.config_with(&deep, "");
    let run = s.sandbox.run(&["--dry-run", "d0"], b"Subject: s\n\nhi\n");
    let line = run.assert_failure(78);
    assert!(
        line.contains("[aliases]") && line.contains("deep"),
        "{line}"
    );
}

// 13. Replies out of step.

#[test]
fn replies_that_arrive_before_their_commands_are_a_protocol_error_never_a_sent() {
    // Exactly the replies the flight expects, ahead of it: read in step they would be a
    // false "sent" (BDAT: MAIL, RCPT, BDAT LAST; DATA: MAIL, RCPT, DATA, the final dot).
    let bdat = "250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n250 2.0.0 OK <fake> queued";
    let data = "250 2.1.0 Sender OK\r\n250 2.1.5 Recipient OK\r\n354 go ahead\r\n\
                250 2.0.0 OK <fake> queued";
    for (chunking, extra) in [(true, bdat), (false, data)] {
        let (s, smtp) = with_smtp(
            Behaviour {
                chunking,
                after_auth: Some(extra.to_owned()),
                ..Behaviour::default()
            },
            "",
        );
        let run = s.sandbox.run(
            &["-t"],
            b"From: alice@contoso.com\nTo: bob@example.org\nSubject: s\n\nhi\n",
        );
        let line = run.assert_failure(76);
        assert!(line.contains("out of step"), "chunking {chunking}: {line}");
        assert!(smtp.deliveries().is_empty(), "chunking {chunking}");
    }
}

// 7. Control characters from peers.

#[test]
fn control_characters_from_the_server_are_escaped_on_stderr_and_in_the_transcript() {
    let (s, _smtp) = with_smtp(
        Behaviour {
            greeting: "554 \u{1b}]0;owned\u{7}\u{1b}[2J go away".to_owned(),
            ..Behaviour::default()
        },
        "",
    );
    let msg = b"From: alice@contoso.com\nTo: bob@example.org\n\nhi\n";
    let run = s.sandbox.run(&["-t"], msg);
    let line = run.assert_failure(69);
    assert!(
        line.contains("\\x1b]0;owned\\x07\\x1b[2J go away"),
        "{line}"
    );
    let run = s.sandbox.run(&["-v", "-t"], msg);
    assert!(
        !run.stderr.contains('\u{1b}') && !run.stderr.contains('\u{7}'),
        "{:?}",
        run.stderr
    );
    assert!(
        run.stderr.contains("S: 554 \\x1b]0;owned"),
        "{}",
        run.stderr
    );
}

#[test]
fn control_characters_in_a_device_code_message_are_escaped() {
    let s = setup();
    s.account()
        .device_code_url()
        .extra("flow = \"devicecode\"\n")
        .write();
    s.idp.push_failure(Failure::Json {
        status: 200,
        body: json!({
            "device_code": "dc-unknown-to-the-fake",
            "user_code": "ABCD",
            "verification_uri": "https://microsoft.com/devicelogin",
            "expires_in": 900,
            "interval": 1,
            "message": "Open \u{1b}[8mhidden\u{1b}[0m now",
        }),
    });
    let run = s.run(&["login", "work", "--no-browser"]);
    assert!(!run.stderr.contains('\u{1b}'), "{:?}", run.stderr);
    assert!(run.stderr.contains("Open \\x1b[8mhidden"), "{}", run.stderr);
}

// 12. Sizes of what we print and write.

#[test]
fn an_error_line_echoing_huge_input_is_cut_with_an_ellipsis() {
    let s = setup();
    s.config_with("", "");
    // As long as one argument may be (128 KiB), and 3 MB in a header.
    let long = format!("<{}", "a".repeat(100_000));
    let run = s.sandbox.run(
        &["--dry-run", "-f", &long, "bob@example.org"],
        b"Subject: s\n\nhi\n",
    );
    let line = run.assert_failure(65);
    assert!(
        line.len() < 3000 && line.contains('…'),
        "{} bytes",
        line.len()
    );
    let run = s.sandbox.run(&["--dry-run", &long], b"Subject: s\n\nhi\n");
    let line = run.assert_failure(65);
    assert!(
        line.len() < 3000 && line.contains('…'),
        "{} bytes",
        line.len()
    );
    let message = format!("To: <{}\nSubject: s\n\nhi\n", "b".repeat(3_000_000));
    let run = s.sandbox.run(&["--dry-run", "-t"], message.as_bytes());
    let line = run.assert_failure(65);
    assert!(
        line.len() < 3000 && line.contains('…'),
        "{} bytes",
        line.len()
    );
}

#[test]
fn a_long_full_name_makes_a_folded_from_line() {
    let (s, smtp) = with_smtp(Behaviour::default(), "");
    let name = "Alice Longname ".repeat(2000);
    let run = s.sandbox.run(
        &["-F", name.trim_end(), "bob@example.org"],
        b"Subject: s\n\nhi\n",
    );
    run.assert_silent_success();
    let data = String::from_utf8_lossy(&smtp.deliveries()[0].data).into_owned();
    let header = data.split("\r\n\r\n").next().unwrap();
    for line in header.split("\r\n") {
        assert!(line.len() <= 78, "{} bytes: {}…", line.len(), &line[..60]);
    }
    let from = header
        .split("\r\nFrom:")
        .nth(1)
        .or_else(|| header.strip_prefix("From:"))
        .expect("a From field");
    assert!(
        from.contains("\r\n Alice") || from.contains("\r\n Longname"),
        "folded"
    );
}

#[test]
fn a_slow_password_cmd_runs_without_holding_the_account_lock() {
    let s = setup();
    let started = s.sandbox.path().join("started");
    s.config_with(
        "",
        &format!(
            "flow = \"password\"\npassword_cmd = [\"sh\", \"-c\", \"touch '{}'; sleep 2; echo pw-1234\"]\n",
            started.display()
        ),
    );
    s.idp.add_user("alice@contoso.com", "pw-1234");
    let child = s
        .sandbox
        .command(&["token", "work"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let begin = std::time::Instant::now();
    while !started.exists() {
        assert!(begin.elapsed().as_secs() < 20, "password_cmd never ran");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // While the command runs, another sender can take the account's lock.
    let lock_path = s.sandbox.token_file("work").with_extension("lock");
    std::fs::create_dir_all(lock_path.parent().unwrap()).unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .unwrap();
    assert!(
        lock.try_lock().is_ok(),
        "the lock is held during password_cmd"
    );
    drop(lock);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    assert!(s.idp.is_valid_access_token(token.trim_end()), "{token}");
}

#[test]
fn a_secret_echoed_by_the_token_service_never_reaches_a_queue_file() {
    let s = setup();
    let secret = long_secret();
    s.config_with(
        "",
        &format!(
            "client_secret = {}\nsmtp_host = \"127.0.0.1\"\nsmtp_port = 1\n",
            serde_json::to_string(&secret).unwrap()
        ),
    );
    let rt = s.seed_expired();
    // Queued without trying, then a flush meets the echoing token service.
    let run = s.sandbox.run(
        &["-odq", "-t"],
        b"From: alice@contoso.com\nTo: bob@example.org\n\nhi\n",
    );
    run.assert_silent_success();
    s.idp.set_failure(Some(Failure::EchoForm));
    let flush = s.run(&["queue", "flush"]);
    assert_ne!(flush.code, 0, "{flush:?}");
    let queue = s.sandbox.path().join("state/oauth2-sendmail/queue");
    let mut seen_state = false;
    for entry in std::fs::read_dir(&queue).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
            seen_state |= text.contains("AADSTS70008");
            assert_no_piece_of(&secret, &text);
            assert_no_piece_of(&rt, &text);
        }
    }
    assert!(seen_state, "the flush recorded the refusal");
    assert_no_piece_of(&secret, &flush.stdout);
    assert_no_piece_of(&secret, &flush.stderr);
}
