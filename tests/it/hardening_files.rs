//! Regression tests for the third hardening round, first half: secrets echoed in another
//! encoder's spelling, folders and files the program does not own, the notifier (loops,
//! hangs), concurrent first runs, a full queue disk, and the first day with a second
//! account. Each test is named after the behaviour it pins down; all run the real binary
//! against the fakes on 127.0.0.1.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::fake_idp::{Failure, FakeIdp};
use super::fake_smtp::{Behaviour, FakeSmtp};
use super::support::{Run, Sandbox, TestCa, now, run_command, set_mode, wait_for_line};

const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
const MESSAGE: &[u8] = b"From: alice@contoso.com\nTo: bob@example.org\nSubject: hi\n\nhi\n";

struct Setup {
    sandbox: Sandbox,
    idp: FakeIdp,
    ca_file: PathBuf,
}

fn setup() -> Setup {
    let ca = TestCa::new();
    let idp = FakeIdp::start(&ca);
    let sandbox = Sandbox::new();
    let ca_file = sandbox.write_file("ca.pem", &ca.ca_pem);
    Setup {
        sandbox,
        idp,
        ca_file,
    }
}

impl Setup {
    /// A Microsoft account `work` whose token endpoint is the fake's; `top` goes before the
    /// account table, `extra` inside it.
    fn config(&self, top: &str, extra: &str) -> PathBuf {
        self.sandbox.write_config(&format!(
            "{top}\n[accounts.work]\nprovider = \"microsoft\"\nemail = \"alice@contoso.com\"\n\
             client_id = \"{CLIENT_ID}\"\ntoken_url = \"{}\"\ntls_ca_file = \"{}\"\n{extra}",
            self.idp.token_url_v2("contoso"),
            self.ca_file.display()
        ))
    }

    fn seed(&self, json: &Value) {
        self.sandbox.seed_token("work", json);
    }

    /// An expired access token with a refresh token the fake issued.
    fn seed_expired(&self) -> String {
        let rt = self.idp.issue_refresh_token();
        self.seed(
            &json!({"access_token": "at-stale-0", "expires_at": now() - 10, "refresh_token": rt}),
        );
        rt
    }

    fn log(&self) -> PathBuf {
        self.sandbox.path().join("state/oauth2-sendmail/log")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }
}

fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_oauth2-sendmail")
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// A port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

// 1. A secret with a `~`, echoed in another encoder's spelling.

/// Every spelling of `secret` a form encoder may produce: raw, with only the characters
/// outside RFC 3986's unreserved set escaped, with every non-alphanumeric byte escaped, in
/// either hex case, `+` for a space.
fn spellings(secret: &str) -> Vec<String> {
    let escape = |keep: &dyn Fn(u8) -> bool, upper: bool| -> String {
        secret
            .bytes()
            .map(|b| {
                if keep(b) {
                    char::from(b).to_string()
                } else if b == b' ' {
                    "+".to_owned()
                } else if upper {
                    format!("%{b:02X}")
                } else {
                    format!("%{b:02x}")
                }
            })
            .collect()
    };
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || b"-._~".contains(&b);
    let form = |b: u8| b.is_ascii_alphanumeric() || b"-._*".contains(&b);
    let alnum = |b: u8| b.is_ascii_alphanumeric();
    let mut all = vec![secret.to_owned()];
    for upper in [true, false] {
        all.push(escape(&unreserved, upper));
        all.push(escape(&form, upper));
        all.push(escape(&alnum, upper));
    }
    all
}

/// Fails when any 12-character piece of any spelling of `secret` is in `text`.
#[track_caller]
fn assert_no_piece_of(secret: &str, text: &str) {
    for form in spellings(secret) {
        let chars: Vec<char> = form.chars().collect();
        for w in chars.windows(12) {
            let piece: String = w.iter().collect();
            assert!(!text.contains(&piece), "`{piece}` of a secret in: {text}");
        }
    }
}

#[test]
fn a_secret_with_a_tilde_is_scrubbed_when_percent_encoded() {
    // An Azure client secret (40 characters, `~` fourth or fifth) and a refresh token with
    // `~`, echoed by a token endpoint as the client encoded them (`~` → `%7E`) and as
    // another stack would (every byte escaped, lower-case hex).
    for echo in [Failure::EchoForm, Failure::EchoFormReencoded] {
        let s = setup();
        let secret = "aB3Q~k.Jr_5vXw~Ty9-Lm2Nq.Ps7Rt~Uv4Wx_Yz1A";
        let notified = s.sandbox.path().join("notified");
        s.config(
            "",
            &format!(
                "client_secret = \"{secret}\"\nqueue = \"never\"\nsmtp_host = \"127.0.0.1\"\n\
                 smtp_port = 1\n\
                 notify_cmd = [\"sh\", \"-c\", \"echo \\\"$OAUTH2_SENDMAIL_REASON\\\" > '{}'\"]\n",
                notified.display()
            ),
        );
        let rt = format!("0.AXkA~rt~{}", "R3fr3sh~Tok.en_-".repeat(12));
        s.seed(
            &json!({"access_token": "at-stale-0", "expires_at": now() - 10, "refresh_token": rt}),
        );
        s.idp.set_failure(Some(echo.clone()));
        let run = s.sandbox.run(&["-t"], MESSAGE);
        let line = run.assert_failure(77);
        assert!(
            line.contains("<redacted>"),
            "{echo:?}: the echo was there: {line}"
        );
        assert_no_piece_of(secret, line);
        assert_no_piece_of(&rt, line);
        let note = wait_for_line(&notified);
        assert!(note.contains("AADSTS70008"), "{note}");
        assert_no_piece_of(secret, &note);
        assert_no_piece_of(&rt, &note);
        let logged = s.log_text();
        assert!(logged.contains("AADSTS70008"), "{logged}");
        assert_no_piece_of(secret, &logged);
        assert_no_piece_of(&rt, &logged);
    }
}

// 2. The log's folder.

/// `-odq`: queued without any network use, and logged.
fn queue_one(s: &Setup) -> Run {
    s.sandbox.run(&["-odq", "-i", "bob@example.org"], MESSAGE)
}

#[test]
fn a_logfile_in_a_folder_the_program_did_not_create_keeps_that_folders_mode() {
    let s = setup();
    let home = s.sandbox.path();
    set_mode(home, 0o755);
    let shared = home.join("shared-logs");
    std::fs::create_dir(&shared).unwrap();
    set_mode(&shared, 0o750);
    for logfile in ["~/x.log".to_owned(), format!("{}/x.log", shared.display())] {
        s.config(&format!("logfile = \"{logfile}\""), "");
        queue_one(&s).assert_silent_success();
    }
    assert_eq!(mode(home), 0o755, "the home folder was narrowed");
    assert_eq!(mode(&shared), 0o750, "a shared log folder was narrowed");
    assert!(
        std::fs::read_to_string(home.join("x.log"))
            .unwrap()
            .contains("result=queued")
    );
    assert!(
        std::fs::read_to_string(shared.join("x.log"))
            .unwrap()
            .contains("result=queued")
    );
    assert_eq!(mode(&home.join("x.log")), 0o600);
    // A folder it creates is its own, and private.
    let new = home.join("new/logs");
    s.config(&format!("logfile = \"{}/x.log\"", new.display()), "");
    queue_one(&s).assert_silent_success();
    assert_eq!(mode(&new), 0o700);
    assert_eq!(mode(&home.join("new")), 0o700);
}

#[test]
fn a_log_that_cannot_be_written_is_said_once_a_day_and_in_status_not_on_every_send() {
    let s = setup();
    let open = s.sandbox.path().join("open");
    std::fs::create_dir(&open).unwrap();
    set_mode(&open, 0o777);
    s.config(&format!("logfile = \"{}/x.log\"", open.display()), "");
    let first = queue_one(&s);
    assert_eq!(first.code, 0, "{first:?}");
    assert!(
        first.stderr.contains("chmod"),
        "the fix is said once: {first:?}"
    );
    assert_eq!(mode(&open), 0o777, "a folder it did not create was changed");
    assert!(!open.join("x.log").exists());
    // The next sends are silent, as Emacs needs them to be.
    queue_one(&s).assert_silent_success();
    queue_one(&s).assert_silent_success();
    let status = s.sandbox.run(&["status"], b"");
    assert!(
        status.stdout.contains("log:") && status.stdout.contains(&open.display().to_string()),
        "{status:?}"
    );

    // A sticky shared folder (as /tmp): refused too, but `chmod 700` is never the advice.
    let s = setup();
    let tmp = s.sandbox.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    set_mode(&tmp, 0o1777);
    s.config(&format!("logfile = \"{}/x.log\"", tmp.display()), "");
    let first = queue_one(&s);
    assert_eq!(first.code, 0, "{first:?}");
    assert!(first.stderr.contains("logfile"), "{first:?}");
    assert!(!first.stderr.contains("chmod"), "{first:?}");
    assert_eq!(mode(&tmp), 0o1777);
    queue_one(&s).assert_silent_success();
}

// 3. `-C` naming something that is not a regular file.

/// Runs `login …` until it prints the authorisation URL (then stops it) or exits; returns
/// the exit code (`None` when stopped at the URL) and stderr.
fn login_until_url(cmd: std::process::Command) -> (Option<i32>, Vec<String>) {
    let mut cmd = cmd;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child: Child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.starts_with("https://") => {
                let _ = child.kill();
                let _ = child.wait();
                return (None, seen);
            }
            Ok(line) => seen.push(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().unwrap();
                return (status.code(), seen);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                panic!("login neither printed a URL nor ended; stderr: {seen:#?}");
            }
        }
    }
}

#[test]
fn login_email_with_a_config_path_that_is_a_device_refuses_and_keeps_the_device() {
    let s = Sandbox::new();
    let device = s.path().join("null");
    // The same device as /dev/null (CI runs as root, which may create it).
    let made = std::process::Command::new("mknod")
        .args([device.to_str().unwrap(), "c", "1", "3"])
        .status()
        .unwrap();
    assert!(made.success(), "mknod needs root");
    set_mode(&device, 0o666);
    let (code, stderr) = login_until_url(s.command(&[
        "-C",
        device.to_str().unwrap(),
        "login",
        "bob@contoso.com",
        "--provider",
        "microsoft",
        "--no-browser",
    ]));
    let meta = std::fs::symlink_metadata(&device).unwrap();
    assert!(meta.file_type().is_char_device(), "the device was replaced");
    assert_eq!(mode(&device), 0o666);
    assert_eq!(code, Some(78), "{stderr:#?}");
    assert_eq!(stderr.len(), 1, "{stderr:#?}");
    assert!(stderr[0].contains("not a regular file"), "{stderr:#?}");
}

// 4. and 5. The notifier.

/// `notify_cmd` and the sandbox's log, with an expired token whose refresh is refused.
fn refused_refresh(s: &Setup, top: &str, notify: &str) {
    s.config(top, &format!("notify_cmd = {notify}\n"));
    s.seed_expired();
    s.idp.set_failure(Some(Failure::invalid_grant(700_082)));
}

fn lines_in(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

#[test]
fn a_notifier_that_sends_mail_through_this_program_is_not_notified_again() {
    let s = setup();
    let count = s.sandbox.path().join("count");
    let done = s.sandbox.path().join("done");
    let msg = s
        .sandbox
        .write_file("msg", std::str::from_utf8(MESSAGE).unwrap());
    // Mails the user about it through this program, which needs the same login; five
    // levels at most, so that a loop ends even when the test fails.
    let script = format!(
        "echo x >> '{c}'; if [ $(wc -l < '{c}') -lt 5 ]; then '{b}' -oem -t < '{m}'; fi; \
         echo done >> '{d}'",
        c = count.display(),
        b = binary(),
        m = msg.display(),
        d = done.display()
    );
    refused_refresh(
        &s,
        "",
        &serde_json::to_string(&["sh", "-c", &script]).unwrap(),
    );
    s.sandbox
        .run(&["-oem", "-t"], MESSAGE)
        .assert_silent_success();
    let _ = wait_for_line(&done);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(lines_in(&count), 1, "the notifier was notified");
}

#[test]
fn a_second_failure_within_the_hour_notifies_once() {
    let s = setup();
    let notified = s.sandbox.path().join("notified");
    let script = format!(
        "echo \"$OAUTH2_SENDMAIL_ACCOUNT\" >> '{}'",
        notified.display()
    );
    refused_refresh(
        &s,
        "",
        &serde_json::to_string(&["sh", "-c", &script]).unwrap(),
    );
    s.sandbox
        .run(&["-oem", "-t"], MESSAGE)
        .assert_silent_success();
    assert_eq!(wait_for_line(&notified), "work\n");
    s.sandbox
        .run(&["-oem", "-t"], MESSAGE)
        .assert_silent_success();
    let flush = s.sandbox.run(&["queue", "flush"], b"");
    assert_eq!(flush.code, 77, "{flush:?}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        lines_in(&notified),
        1,
        "notified more than once within the hour"
    );
}

fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

#[test]
fn a_hung_notify_cmd_is_killed_with_its_group_at_command_timeout_and_logged() {
    let s = setup();
    let pids = s.sandbox.path().join("pids");
    // The shell and a child of its own: both must go.
    let script = format!("sleep 300 & echo \"$$ $!\" > '{}'; wait", pids.display());
    refused_refresh(
        &s,
        "command_timeout = 1",
        &serde_json::to_string(&["sh", "-c", &script]).unwrap(),
    );
    s.sandbox
        .run(&["-oem", "-t"], MESSAGE)
        .assert_silent_success();
    let line = wait_for_line(&pids);
    let both: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(both.len(), 2, "{line}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while both.iter().any(|p| alive(p)) {
        assert!(
            Instant::now() < deadline,
            "the notifier outlived command_timeout"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.log_text().contains("notify_cmd") {
        assert!(Instant::now() < deadline, "not logged: {}", s.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = s.log_text();
    assert!(
        log.contains("command_timeout") && log.contains("account=work"),
        "{log}"
    );
}

// 6. Simultaneous first runs.

#[test]
fn simultaneous_first_run_logins_all_add_their_account() {
    let s = Sandbox::new();
    let config = s.path().join("config/oauth2-sendmail/config.toml");
    let n = 6;
    let runs: Vec<_> = (0..n)
        .map(|i| {
            let cmd = s.command(&[
                "login",
                &format!("user{i}@contoso.com"),
                "--provider",
                "microsoft",
                "--no-browser",
            ]);
            std::thread::spawn(move || login_until_url(cmd))
        })
        .collect();
    for run in runs {
        let (code, stderr) = run.join().unwrap();
        assert_eq!(code, None, "a login failed: {stderr:#?}");
    }
    let text = std::fs::read_to_string(&config).unwrap();
    for i in 0..n {
        assert!(text.contains(&format!("user{i}@contoso.com")), "{text}");
    }
    assert_eq!(mode(&config), 0o600);
    let status = s.run(&["status"], b"");
    assert!(!status.stderr.contains("config"), "{status:?}");
}

// 12. A full queue disk.

#[test]
fn with_the_queue_disk_full_one_offline_account_does_not_stop_the_others() {
    let ca = TestCa::new();
    let s = Sandbox::new();
    let ca_file = s.write_file("ca.pem", &ca.ca_pem);
    let fake = FakeSmtp::start(&ca, Behaviour::default());
    let account = |name: &str, port: u16| {
        format!(
            "[accounts.{name}]\nprovider = \"microsoft\"\nemail = \"{name}@contoso.example\"\n\
             smtp_host = \"127.0.0.1\"\nsmtp_port = {port}\ntoken_url = \"https://127.0.0.1:1/\"\n\
             tls_ca_file = \"{}\"\n",
            ca_file.display()
        )
    };
    s.write_config(&format!(
        "default_account = \"offline\"\nlogfile = \"{}\"\n\n{}\n{}",
        s.path().join("log").display(),
        account("offline", closed_port()),
        account("online", fake.port())
    ));
    for name in ["offline", "online"] {
        s.seed_token(
            name,
            &json!({"access_token": "at-1", "expires_at": now() + 3600, "refresh_token": "rt-1"}),
        );
    }
    // A small file system of its own as the state folder (where the queue lives), in a
    // mount namespace of this command only: filled up after the two messages are queued.
    let state = s.path().join("state");
    let script = format!(
        "set -e; mount -t tmpfs -o size=256k,mode=0700 tmpfs '{state}'; \
         '{b}' -odq -a offline -i bob@fabrikam.example < '{m}'; \
         '{b}' -odq -a online -i bob@fabrikam.example < '{m}'; \
         dd if=/dev/zero of='{state}/filler' bs=4k 2>/dev/null || true; \
         set +e; '{b}' queue flush; echo \"exit=$?\"",
        state = state.display(),
        b = binary(),
        m = s
            .write_file("msg", std::str::from_utf8(MESSAGE).unwrap())
            .display()
    );
    let mut cmd = s.program("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env("OAUTH2_SENDMAIL_TEST_TIMEOUT_MS", "2000");
    let run = run_command(cmd, b"");
    assert!(run.stdout.contains("exit="), "{run:?}");
    assert_eq!(
        fake.deliveries().len(),
        1,
        "the online account was not tried: {run:?}"
    );
    assert!(run.stdout.contains("exit=75"), "{run:?}");
    assert!(
        run.stdout.contains("the queue could not record it"),
        "{run:?}"
    );
}

// 14. A second account on the first day.

#[test]
fn a_second_login_email_sets_default_account_to_the_first_and_says_so() {
    let s = setup();
    let path = s.config("# my mail\n", "");
    let before = std::fs::read_to_string(&path).unwrap();
    let (code, stderr) = login_until_url(s.sandbox.command(&[
        "login",
        "bob@fabrikam.com",
        "--provider",
        "microsoft",
        "--no-browser",
    ]));
    assert_eq!(code, None, "{stderr:#?}");
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("default_account") && l.contains("work")),
        "{stderr:#?}"
    );
    let after = std::fs::read_to_string(&path).unwrap();
    assert!(after.starts_with("default_account = \"work\"\n"), "{after}");
    assert!(after.contains(before.trim_start()), "{after}");
    assert!(after.contains("bob@fabrikam.com"), "{after}");
    // Mail that relied on the only account still goes through it.
    queue_one(&s).assert_silent_success();
    // A third login leaves default_account alone.
    let (code, stderr) = login_until_url(s.sandbox.command(&[
        "login",
        "carol@fabrikam.com",
        "--provider",
        "microsoft",
        "--no-browser",
    ]));
    assert_eq!(code, None, "{stderr:#?}");
    let third = std::fs::read_to_string(&path).unwrap();
    assert_eq!(third.matches("default_account").count(), 1, "{third}");
    assert!(
        !stderr.iter().any(|l| l.contains("default_account")),
        "{stderr:#?}"
    );
}

#[test]
fn default_account_under_an_account_table_gets_a_hint_that_it_belongs_at_the_top() {
    let s = setup();
    s.config("", "default_account = \"work\"\n");
    let run = queue_one(&s);
    let line = run.assert_failure(78);
    assert!(line.contains("default_account"), "{line}");
    assert!(line.contains("top of the file"), "{line}");
}

// 15. `token_encrypt_cmd` turned on after a login.

#[test]
fn a_plain_token_cache_is_read_once_and_encrypted_when_token_decrypt_cmd_is_set() {
    let s = setup();
    let at = s.idp.issue_access_token();
    s.seed(&json!({"access_token": at, "expires_at": now() + 3600, "refresh_token": "rt-plain"}));
    // base64 stands for gpg: it refuses input that is not its own output, as gpg does.
    s.config(
        "",
        "token_encrypt_cmd = [\"base64\"]\ntoken_decrypt_cmd = [\"base64\", \"-d\"]\n",
    );
    let run = s.sandbox.run(&["token", "work"], b"");
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout.trim_end(), at);
    assert!(run.stderr.contains("token_encrypt_cmd"), "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    let stored = std::fs::read(s.sandbox.token_file("work")).unwrap();
    assert!(
        serde_json::from_slice::<Value>(&stored).is_err(),
        "still plain JSON"
    );
    assert_eq!(mode(&s.sandbox.token_file("work")), 0o600);
    // From then on it is read through token_decrypt_cmd, and nothing more is said.
    let again = s.sandbox.run(&["token", "work"], b"");
    assert_eq!((again.code, again.stderr.as_str()), (0, ""), "{again:?}");
    assert_eq!(again.stdout.trim_end(), at);
}

// 20. An email without a domain.

#[test]
fn an_email_without_a_domain_is_refused_with_the_key_and_line() {
    let s = setup();
    s.sandbox
        .write_config("# mine\n[accounts.work]\nprovider = \"microsoft\"\nemail = \"japinli\"\n");
    let run = queue_one(&s);
    let line = run.assert_failure(78);
    assert!(line.contains("config.toml:4"), "{line}");
    assert!(line.contains("accounts.work.email"), "{line}");
    assert!(line.contains("japinli"), "{line}");
}
