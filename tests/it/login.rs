//! `oauth2-sendmail login` through the real binary against the fake identity platform over
//! real HTTPS: the test reads the binary's stderr as it comes, plays the browser (GET the
//! authorize URL, read `Location`, GET it on the loopback listener) or the user at the
//! device-code page, then checks what was stored, that a send works with it, and that no
//! token, code, verifier, password or secret was ever printed.

// AADSTS codes are identifiers, written as Microsoft prints them.
#![allow(clippy::unreadable_literal)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::fake_idp::{Failure, FakeIdp, THUNDERBIRD_CLIENT_ID};
use super::fake_smtp::{Behaviour, FakeSmtp};
use super::support::{Run, Sandbox, TestCa, now, set_mode};

const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
/// Longest a test waits for one line from the binary: far above the second it takes.
const LINE_WAIT: Duration = Duration::from_secs(20);
const MESSAGE: &[u8] = b"From: alice@contoso.com\nTo: bob@example.org\nSubject: hi\n\nbody\n";

struct Setup {
    sandbox: Sandbox,
    idp: FakeIdp,
    smtp: FakeSmtp,
    ca_file: PathBuf,
}

fn setup() -> Setup {
    let ca = TestCa::new();
    let idp = FakeIdp::start(&ca);
    let smtp = FakeSmtp::start(
        &ca,
        Behaviour::default().accept_tokens(&idp.valid_access_tokens()),
    );
    let sandbox = Sandbox::new();
    let ca_file = sandbox.write_file("ca.pem", &ca.ca_pem);
    Setup {
        sandbox,
        idp,
        smtp,
        ca_file,
    }
}

impl Setup {
    /// Account `work` (Microsoft, v2 endpoints of the fake, SMTP on the fake), plus `extra`.
    fn config(&self, extra: &str) {
        self.config_client(CLIENT_ID, extra);
    }

    /// `config` with another app's client id (e.g. Thunderbird's).
    fn config_client(&self, client_id: &str, extra: &str) {
        self.sandbox.write_config(&format!(
            "[accounts.work]\nprovider = \"microsoft\"\nemail = \"alice@contoso.com\"\n\
             client_id = \"{client_id}\"\ntls_ca_file = \"{ca}\"\n\
             authorize_url = \"{}\"\ntoken_url = \"{}\"\ndevice_code_url = \"{}\"\n\
             smtp_host = \"localhost\"\nsmtp_port = {}\n{extra}",
            self.idp.authorize_url_v2("contoso"),
            self.idp.token_url_v2("contoso"),
            self.idp.device_code_url_v2("contoso"),
            self.smtp.port(),
            ca = self.ca_file.display(),
        ));
    }

    /// Starts the binary; its stderr is read line by line as it comes.
    fn spawn(&self, args: &[&str], env: &[(&str, &str)], stdin: Stdio) -> Live {
        let mut cmd = self.sandbox.command(args);
        cmd.envs(env.iter().copied())
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Live {
            child,
            lines: rx,
            seen: Vec::new(),
            started: Instant::now(),
        }
    }

    fn stored(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.sandbox.token_file("work")).unwrap()).unwrap()
    }

    fn run(&self, args: &[&str], stdin: &[u8]) -> Run {
        self.sandbox.run(args, stdin)
    }

    /// A send with the stored token: `check`, then a real message.
    fn assert_sending_works(&self) {
        let run = self.run(&["check", "work"], b"");
        assert_eq!(run.code, 0, "check: {}", run.stderr);
        self.run(&["-t"], MESSAGE).assert_silent_success();
        assert_eq!(self.smtp.deliveries().len(), 1);
    }

    /// Every secret the fake knows of: stored tokens, codes, verifiers, passwords.
    fn secrets(&self) -> Vec<String> {
        let mut secrets = Vec::new();
        if let Ok(raw) = std::fs::read(self.sandbox.token_file("work"))
            && let Ok(v) = serde_json::from_slice::<Value>(&raw)
        {
            for key in ["access_token", "refresh_token"] {
                if let Some(s) = v[key].as_str() {
                    secrets.push(s.to_owned());
                }
            }
        }
        for r in self.idp.requests() {
            for key in [
                "code",
                "code_verifier",
                "device_code",
                "password",
                "client_secret",
                "refresh_token",
            ] {
                if let Some(s) = r.field(key) {
                    secrets.push(s.to_owned());
                }
            }
        }
        secrets
    }

    fn assert_no_secret_in(&self, run: &Run) {
        for secret in self.secrets() {
            run.assert_never_shows(&secret);
        }
    }
}

/// A running binary whose stderr the test reads as it comes.
struct Live {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    started: Instant,
}

impl Live {
    /// The next stderr line for which `want` holds (earlier lines are kept for the end).
    fn line(&mut self, want: impl Fn(&str) -> bool) -> String {
        loop {
            match self.lines.recv_timeout(LINE_WAIT) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if want(&line) {
                        return line;
                    }
                }
                Err(e) => panic!("no such line ({e}); stderr so far: {:#?}", self.seen),
            }
        }
    }

    /// The authorize URL the binary printed on its own line.
    fn url(&mut self) -> String {
        self.line(|l| l.starts_with("https://"))
    }

    fn stdin(&mut self) -> std::process::ChildStdin {
        self.child.stdin.take().unwrap()
    }

    /// Waits for the exit; everything it printed.
    fn finish(mut self) -> Run {
        let deadline = Instant::now() + LINE_WAIT;
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "the login hangs: {:#?}",
                self.seen
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut stdout = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        let code = self.child.wait().unwrap().code().unwrap_or(-1);
        let mut stderr = self.seen.join("\n");
        if !stderr.is_empty() {
            stderr.push('\n');
        }
        Run {
            code,
            stdout,
            stderr,
            elapsed: self.started.elapsed(),
        }
    }
}

/// Plays the signed-in browser at the authorize URL: returns where it is sent back to.
fn authorize(ca_file: &std::path::Path, url: &str) -> String {
    super::support::install_provider();
    let pem = std::fs::read(ca_file).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let response = client.get(url).send().await.unwrap();
        assert_eq!(
            response.status().as_u16(),
            302,
            "{:?}",
            response.text().await
        );
        response.headers()["location"].to_str().unwrap().to_owned()
    })
}

/// Follows the redirect to the loopback listener with a plain HTTP GET; returns the page.
fn follow(location: &str) -> String {
    let url = reqwest::Url::parse(location).unwrap();
    assert_eq!(url.scheme(), "http", "{location}");
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", url.port().unwrap())).unwrap();
    let target = format!("{}?{}", url.path(), url.query().unwrap_or(""));
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        url.host_str().unwrap()
    )
    .unwrap();
    let mut page = String::new();
    stream.read_to_string(&mut page).unwrap();
    page
}

/// The one stdout line of a successful login, checked for its shape.
#[track_caller]
fn assert_logged_in(run: &Run, who: &str) {
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let line = run.stdout.strip_suffix('\n').expect("one line");
    let prefix = format!("account work: {who}; access token valid until ");
    let when = line
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{line:?}"));
    // `2026-11-22 23:14:05 UTC`
    let shape: String = when
        .chars()
        .map(|c| if c.is_ascii_digit() { '9' } else { c })
        .collect();
    assert_eq!(shape, "9999-99-99 99:99:99 UTC", "{line}");
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// A `$BROWSER` that records the URL it was given in `file`.
fn recording_browser(s: &Setup) -> (String, PathBuf) {
    let record = s.sandbox.path().join("browser-got");
    let script = s.sandbox.write_file(
        "browser.sh",
        &format!(
            "#!/bin/sh\nprintf '%s\\n' \"$1\" > '{}'\n",
            record.display()
        ),
    );
    set_mode(&script, 0o755);
    (script.display().to_string(), record)
}

#[test]
fn authcode_with_no_browser_prints_the_url_and_the_listener_takes_the_redirect() {
    let s = setup();
    s.config("");
    // --no-browser wins over $BROWSER.
    let (browser, record) = recording_browser(&s);
    let mut live = s.spawn(
        &["login", "work", "--no-browser"],
        &[("BROWSER", &browser)],
        Stdio::null(),
    );
    let url = live.url();
    let how = live.line(|l| l.contains("waiting up to"));
    assert!(how.contains("ssh -L"), "{how}");
    let location = authorize(&s.ca_file, &url);
    let port = reqwest::Url::parse(&location).unwrap().port().unwrap();
    assert!(
        location.starts_with(&format!("http://127.0.0.1:{port}/?code=")),
        "{location}"
    );
    let page = follow(&location);
    assert!(
        page.starts_with("HTTP/1.1 200") && page.contains("you may close this window"),
        "{page}"
    );
    let run = live.finish();
    assert_logged_in(&run, "logged in as alice@contoso.com");
    assert!(!record.exists(), "no browser with --no-browser");

    // What the identity platform saw: PKCE S256, state, the loopback redirect.
    let requests = s.idp.requests();
    let asked = requests[0].query();
    assert_eq!(asked["code_challenge_method"], "S256");
    assert_eq!(asked["redirect_uri"], format!("http://127.0.0.1:{port}/"));
    assert_eq!(asked["client_id"], CLIENT_ID);
    assert_eq!(asked["login_hint"], "alice@contoso.com");
    assert!(asked["scope"].contains("offline_access"));
    assert!(asked["state"].len() >= 16);
    let redeem = &requests[1];
    assert_eq!(redeem.grant_type(), "authorization_code");
    assert_eq!(
        redeem.field("redirect_uri"),
        Some(format!("http://127.0.0.1:{port}/").as_str())
    );
    assert!(redeem.field("code_verifier").is_some_and(|v| v.len() >= 43));

    let file = s.sandbox.token_file("work");
    assert_eq!(mode(&file), 0o600);
    let stored = s.stored();
    assert!(
        s.idp
            .is_valid_access_token(stored["access_token"].as_str().unwrap())
    );
    assert!(
        s.idp
            .refresh_token_valid(stored["refresh_token"].as_str().unwrap())
    );
    s.assert_no_secret_in(&run);

    s.assert_sending_works();
    let status = s.run(&["status", "work"], b"");
    assert!(
        status.stdout.contains(" UTC (in 59 min)") || status.stdout.contains(" UTC (in 60 min)"),
        "{}",
        status.stdout
    );
    assert!(status.stdout.contains("refresh token: present"));
    assert!(status.stdout.contains("provider: microsoft\n"));
    assert!(status.stdout.contains("flow: authcode\n"));
    assert!(
        status.stdout.contains("last refresh: 20"),
        "{}",
        status.stdout
    );
    s.assert_no_secret_in(&status);
}

#[test]
fn authcode_opens_the_browser_from_dollar_browser() {
    let s = setup();
    s.config("redirect_uri = \"http://127.0.0.1\"\n");
    let (browser, record) = recording_browser(&s);
    let mut live = s.spawn(&["login"], &[("BROWSER", &browser)], Stdio::null());
    let printed = live.url();
    live.line(|l| l.contains("waiting up to"));
    let deadline = Instant::now() + LINE_WAIT;
    // The script's file exists before its line is written: wait for the whole line.
    let opened = loop {
        let got = std::fs::read_to_string(&record).unwrap_or_default();
        if got.ends_with('\n') {
            break got;
        }
        assert!(Instant::now() < deadline, "the browser was not started");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(
        opened.trim_end(),
        printed,
        "the browser got the printed URL"
    );
    let location = authorize(&s.ca_file, &printed);
    assert!(location.starts_with("http://127.0.0.1:"), "{location}");
    follow(&location);
    let run = live.finish();
    assert_logged_in(&run, "logged in as alice@contoso.com");
    assert!(
        run.stderr.contains("a browser was opened"),
        "{}",
        run.stderr
    );
    s.assert_no_secret_in(&run);
}

#[test]
fn authcode_refuses_a_redirect_with_a_wrong_or_missing_state_and_waits_for_the_real_one() {
    let s = setup();
    s.config("");
    let mut live = s.spawn(&["login", "work", "--no-browser"], &[], Stdio::null());
    let location = authorize(&s.ca_file, &live.url());
    let mut url = reqwest::Url::parse(&location).unwrap();
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    url.query_pairs_mut().clear();
    for (k, v) in &pairs {
        let v = if k == "state" { "forged-state" } else { v };
        url.query_pairs_mut().append_pair(k, v);
    }
    let page = follow(url.as_str());
    assert!(
        page.contains("400 Bad Request") && page.contains("not the redirect"),
        "{page}"
    );
    // Any local program could end the login with an error, were the state not checked.
    let mut forged_error = url.clone();
    forged_error.set_query(Some("error=access_denied"));
    let page = follow(forged_error.as_str());
    assert!(page.contains("not the redirect"), "{page}");
    live.line(|l| l.contains("wrong or missing state was refused"));
    // The real redirect still signs in.
    follow(&location);
    let run = live.finish();
    assert_logged_in(&run, "logged in as alice@contoso.com");
    assert_eq!(
        s.idp
            .requests()
            .iter()
            .filter(|r| r.grant_type() == "authorization_code")
            .count(),
        1,
        "only the real code was redeemed"
    );
}

#[test]
fn authcode_keeps_accepting_after_accept_fails_with_too_many_open_files() {
    let s = setup();
    s.config("");
    let mut live = s.spawn(&["login", "work", "--no-browser"], &[], Stdio::null());
    let location = authorize(&s.ca_file, &live.url());
    let port = reqwest::Url::parse(&location).unwrap().port().unwrap();
    let pid = live.child.id().to_string();
    let open_fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let limit = |n: usize| {
        let status = std::process::Command::new("prlimit")
            .args(["--pid", &pid, &format!("--nofile={n}:")])
            .status()
            .unwrap();
        assert!(status.success(), "prlimit");
    };
    // Room for two more descriptors: the third connection makes accept() fail (EMFILE).
    limit(open_fds + 2);
    let crowd: Vec<_> = (0..8)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    drop(crowd);
    limit(1024);
    follow(&location);
    let run = live.finish();
    assert_logged_in(&run, "logged in as alice@contoso.com");
}

/// Takes the last stderr line (the error) of a run whose earlier lines were instructions.
fn last_line(run: &Run) -> &str {
    run.stderr.trim_end().lines().last().unwrap_or("")
}

#[test]
fn authcode_reports_access_denied() {
    let s = setup();
    s.config("");
    s.idp.set_authorize_error(Some("access_denied"));
    let mut live = s.spawn(&["login", "work", "--no-browser"], &[], Stdio::null());
    let location = authorize(&s.ca_file, &live.url());
    assert!(location.contains("error=access_denied"), "{location}");
    follow(&location);
    let run = live.finish();
    assert_eq!(run.code, 77, "{}", run.stderr);
    let error = last_line(&run);
    assert!(
        error.contains("access_denied") && error.contains("cancelled or consent was refused"),
        "{error}"
    );
    assert!(!s.sandbox.token_file("work").exists());
}

#[test]
fn authcode_with_an_https_redirect_takes_the_pasted_address() {
    let s = setup();
    s.config("redirect_uri = \"https://localhost\"\n");
    let mut live = s.spawn(&["login", "work", "--no-browser"], &[], Stdio::piped());
    let url = live.url();
    let how = live.line(|l| l.contains("paste it"));
    assert!(how.contains("sent to https://localhost with"), "{how}");
    let location = authorize(&s.ca_file, &url);
    assert!(
        location.starts_with("https://localhost/?code="),
        "{location}"
    );
    let mut stdin = live.stdin();
    writeln!(stdin, "  {location}  ").unwrap();
    let run = live.finish();
    drop(stdin);
    assert_logged_in(&run, "logged in as alice@contoso.com");
    assert_eq!(
        s.idp.requests()[1].field("redirect_uri"),
        Some("https://localhost")
    );
    s.assert_no_secret_in(&run);
}

/// With an `https` redirect nothing but a pasted address can finish the login: closed
/// stdin ends it at once instead of after the five-minute wait.
#[test]
fn authcode_with_an_https_redirect_and_no_stdin_fails_at_once() {
    let s = setup();
    s.config("redirect_uri = \"https://localhost\"\n");
    let run = s.sandbox.run(&["login", "work", "--no-browser"], b"");
    assert_eq!(run.code, 77, "{}", run.stderr);
    assert!(
        last_line(&run).contains("standard input closed"),
        "{}",
        run.stderr
    );
    assert!(
        run.elapsed < std::time::Duration::from_secs(30),
        "{:?}",
        run.elapsed
    );
    assert!(!s.sandbox.token_file("work").exists());
}

#[test]
fn devicecode_pending_then_approved() {
    let s = setup();
    s.config("");
    let mut live = s.spawn(
        &["login", "work", "--flow", "devicecode"],
        &[],
        Stdio::null(),
    );
    let shown = live.line(|l| l.contains("enter the code"));
    let user_code = s.idp.last_user_code().unwrap();
    assert!(
        shown.contains(&user_code) && shown.contains("https://microsoft.com/devicelogin"),
        "{shown}"
    );
    // Let one poll find it pending, then sign in.
    let deadline = Instant::now() + LINE_WAIT;
    while !s
        .idp
        .requests()
        .iter()
        .any(|r| r.field("device_code").is_some())
    {
        assert!(Instant::now() < deadline, "no poll");
        std::thread::sleep(Duration::from_millis(20));
    }
    s.idp.decide_user_code(&user_code, true);
    let run = live.finish();
    assert_logged_in(&run, "logged in as alice@contoso.com");
    let requests = s.idp.requests();
    assert_eq!(requests[0].path, "/contoso/oauth2/v2.0/devicecode");
    assert_eq!(requests[0].field("client_id"), Some(CLIENT_ID));
    assert!(requests[0].field("scope").unwrap().contains("SMTP.Send"));
    let polls: Vec<_> = requests
        .iter()
        .filter(|r| r.grant_type() == "urn:ietf:params:oauth:grant-type:device_code")
        .collect();
    assert!(polls.len() >= 2, "pending, then approved: {}", polls.len());
    assert!(run.elapsed < Duration::from_secs(10), "{:?}", run.elapsed);
    s.assert_no_secret_in(&run);
    s.assert_sending_works();
}

#[test]
fn devicecode_expired_or_declined_is_a_clear_77() {
    let s = setup();
    s.config("flow = \"devicecode\"\n");
    s.idp.set_device_expires_in(2);
    let mut live = s.spawn(&["login", "work"], &[], Stdio::null());
    live.line(|l| l.contains("enter the code"));
    let run = live.finish();
    assert_eq!(run.code, 77, "{}", run.stderr);
    assert!(
        last_line(&run).contains("device code expired"),
        "{}",
        run.stderr
    );
    assert!(!s.sandbox.token_file("work").exists());

    s.idp.set_device_expires_in(60);
    let mut live = s.spawn(&["login", "work"], &[], Stdio::null());
    live.line(|l| l.contains("enter the code"));
    s.idp
        .decide_user_code(&s.idp.last_user_code().unwrap(), false);
    let run = live.finish();
    assert_eq!(run.code, 77, "{}", run.stderr);
    assert!(last_line(&run).contains("declined"), "{}", run.stderr);
    assert!(!s.sandbox.token_file("work").exists());
    s.assert_no_secret_in(&run);
}

#[test]
fn devicecode_blocked_by_conditional_access_says_so() {
    let s = setup();
    s.config("flow = \"devicecode\"\n");
    s.idp.push_failure(Failure::Aad {
        status: 400,
        error: "invalid_grant",
        code: 53003,
    });
    let run = s.run(&["login", "work"], b"");
    let line = run.assert_failure(78);
    assert!(
        line.contains("AADSTS53003") && line.contains("Conditional Access"),
        "{line}"
    );
}

#[test]
fn password_flow_for_21vianet_v1_sends_resource() {
    let s = setup();
    s.sandbox.write_config(&format!(
        "[accounts.work]\nprovider = \"microsoft-china\"\nemail = \"bob@contoso.partner.onmschina.cn\"\n\
         client_id = \"{CLIENT_ID}\"\nflow = \"password\"\nresource = \"https://partner.outlook.cn\"\n\
         password_cmd = [\"echo\", \"china-pass-1\"]\ntoken_url = \"{}\"\ntls_ca_file = \"{}\"\n",
        s.idp.token_url_v1("contoso.partner.onmschina.cn"),
        s.ca_file.display()
    ));
    s.idp
        .add_user("bob@contoso.partner.onmschina.cn", "china-pass-1");
    let run = s.run(&["login"], b"");
    assert_logged_in(&run, "logged in as bob@contoso.partner.onmschina.cn");
    let req = &s.idp.requests()[0];
    assert_eq!(req.path, "/contoso.partner.onmschina.cn/oauth2/token");
    assert_eq!(req.grant_type(), "password");
    assert_eq!(
        req.field("username"),
        Some("bob@contoso.partner.onmschina.cn")
    );
    assert_eq!(req.field("password"), Some("china-pass-1"));
    assert_eq!(req.field("resource"), Some("https://partner.outlook.cn"));
    assert_eq!(req.field("client_id"), Some(CLIENT_ID));
    assert_eq!(req.field("scope"), None);
    assert!(s.stored()["refresh_token"].is_string());
    s.assert_no_secret_in(&run);
}

#[test]
fn password_flow_without_password_cmd_or_terminal_is_a_config_error() {
    let s = setup();
    s.config("flow = \"password\"\n");
    let run = s.run(&["login", "work"], b"typed-pass\n");
    let line = run.assert_failure(78);
    assert!(
        line.contains("password_cmd") && line.contains("terminal"),
        "{line}"
    );
    assert!(s.idp.requests().is_empty());
}

#[test]
fn client_credentials_login_proves_the_secret() {
    let s = setup();
    s.config("flow = \"client-credentials\"\nclient_secret_cmd = [\"echo\", \"app-secret-77\"]\n");
    s.idp.register_client_secret(CLIENT_ID, "app-secret-77");
    let run = s.run(&["login", "work"], b"");
    assert_logged_in(&run, "app-only access for alice@contoso.com works");
    assert_eq!(run.stderr, "", "no warning about a missing refresh token");
    let req = &s.idp.requests()[0];
    assert_eq!(req.grant_type(), "client_credentials");
    assert_eq!(
        req.field("scope"),
        Some("https://outlook.office365.com/.default")
    );
    assert!(s.stored().get("refresh_token").is_none());
    s.assert_no_secret_in(&run);
    s.assert_sending_works();

    s.config("flow = \"client-credentials\"\nclient_secret = \"wrong-secret-88\"\n");
    let run = s.run(&["login", "work"], b"");
    let line = run.assert_failure(78);
    assert!(line.contains("AADSTS7000215"), "{line}");
    run.assert_never_shows("wrong-secret-88");
}

#[test]
fn the_flow_option_picks_app_only_scopes_too() {
    let s = setup();
    s.config("client_secret = \"app-secret-99\"\n");
    s.idp.register_client_secret(CLIENT_ID, "app-secret-99");
    let run = s.run(&["login", "work", "--flow", "client-credentials"], b"");
    assert_logged_in(&run, "app-only access for alice@contoso.com works");
    assert_eq!(
        s.idp.requests()[0].field("scope"),
        Some("https://outlook.office365.com/.default")
    );
}

#[test]
fn import_a_refresh_token_bare_as_json_and_from_stdin() {
    let s = setup();
    s.config("");
    let bare = s.idp.issue_refresh_token();
    let file = s.sandbox.write_file("rt.txt", &format!("{bare}\n"));
    let run = s.run(
        &[
            "login",
            "work",
            "--import-refresh-token",
            file.to_str().unwrap(),
        ],
        b"",
    );
    assert_logged_in(&run, "logged in as alice@contoso.com");
    let req = &s.idp.requests()[0];
    assert_eq!(req.grant_type(), "refresh_token");
    assert_eq!(req.field("refresh_token"), Some(bare.as_str()));
    let stored = s.stored();
    let rotated = stored["refresh_token"].as_str().unwrap();
    assert_ne!(rotated, bare, "the rotated refresh token is stored");
    assert!(s.idp.refresh_token_valid(rotated));
    s.assert_no_secret_in(&run);

    // mutt_oauth2.py's decrypted token file.
    let from_mutt = s.idp.issue_refresh_token();
    let json = json!({"registration": "microsoft", "authflow": "authcode",
        "email": "alice@contoso.com", "access_token": "", "access_token_expiration": "",
        "refresh_token": from_mutt});
    let file = s.sandbox.write_file("mutt.json", &json.to_string());
    let run = s.run(
        &[
            "login",
            "work",
            "--import-refresh-token",
            file.to_str().unwrap(),
        ],
        b"",
    );
    assert_logged_in(&run, "logged in as alice@contoso.com");
    assert_eq!(
        s.idp.requests()[1].field("refresh_token"),
        Some(from_mutt.as_str())
    );
    s.assert_no_secret_in(&run);

    let piped = s.idp.issue_refresh_token();
    let run = s.run(
        &["login", "work", "--import-refresh-token", "-"],
        format!("{piped}\n").as_bytes(),
    );
    assert_logged_in(&run, "logged in as alice@contoso.com");
    assert_eq!(
        s.idp.requests()[2].field("refresh_token"),
        Some(piped.as_str())
    );
    s.assert_no_secret_in(&run);
    s.assert_sending_works();
}

#[test]
fn importing_a_dead_or_missing_refresh_token_stores_nothing() {
    let s = setup();
    s.config("");
    let run = s.run(
        &["login", "work", "--import-refresh-token", "-"],
        b"rt-not-issued-by-the-fake\n",
    );
    let line = run.assert_failure(77);
    assert!(line.contains("AADSTS70008"), "{line}");
    run.assert_never_shows("rt-not-issued-by-the-fake");
    assert!(!s.sandbox.token_file("work").exists());

    let run = s.run(
        &["login", "work", "--import-refresh-token", "-"],
        br#"{"access_token": "at-only"}"#,
    );
    let line = run.assert_failure(65);
    assert!(line.contains("no refresh token"), "{line}");
    run.assert_never_shows("at-only");
}

#[test]
fn login_into_an_encrypted_store_with_openssl() {
    let s = setup();
    s.config(
        "token_encrypt_cmd = [\"openssl\", \"enc\", \"-aes-256-cbc\", \"-pbkdf2\", \"-pass\", \"pass:x\"]\n\
         token_decrypt_cmd = [\"openssl\", \"enc\", \"-d\", \"-aes-256-cbc\", \"-pbkdf2\", \"-pass\", \"pass:x\"]\n",
    );
    let rt = s.idp.issue_refresh_token();
    let run = s.run(
        &["login", "work", "--import-refresh-token", "-"],
        rt.as_bytes(),
    );
    assert_logged_in(&run, "logged in as alice@contoso.com");
    let file = s.sandbox.token_file("work");
    assert_eq!(mode(&file), 0o600);
    let raw = std::fs::read(&file).unwrap();
    assert!(raw.starts_with(b"Salted__"), "openssl's output is stored");
    let plain = std::process::Command::new("openssl")
        .args([
            "enc",
            "-d",
            "-aes-256-cbc",
            "-pbkdf2",
            "-pass",
            "pass:x",
            "-in",
        ])
        .arg(&file)
        .output()
        .unwrap();
    let stored: Value = serde_json::from_slice(&plain.stdout).unwrap();
    let access = stored["access_token"].as_str().unwrap();
    assert!(s.idp.is_valid_access_token(access));
    // It reads back through the decrypt command.
    let token = s.run(&["token", "work"], b"");
    assert_eq!(token.stdout.trim_end(), access, "{}", token.stderr);
    s.assert_no_secret_in(&run);
    s.assert_sending_works();
}

/// `notify_cmd` that writes the account and the reason to `file`.
fn notify_config(s: &Setup, policy: &str) -> PathBuf {
    let file = s.sandbox.path().join("notified");
    s.config(&format!(
        "queue = \"{policy}\"\nnotify_cmd = [\"sh\", \"-c\", \"echo \\\"$OAUTH2_SENDMAIL_ACCOUNT $OAUTH2_SENDMAIL_REASON\\\" > '{}'\"]\n",
        file.display()
    ));
    let rt = s.idp.issue_refresh_token();
    s.sandbox.seed_token(
        "work",
        &json!({"access_token": "at-expired", "expires_at": now() - 10, "refresh_token": rt}),
    );
    s.idp.push_failure(Failure::invalid_grant(700082));
    file
}

#[test]
fn a_send_that_needs_a_login_exits_77_and_notifies() {
    let s = setup();
    let notified = notify_config(&s, "never");
    let run = s.run(&["-t"], MESSAGE);
    let line = run.assert_failure(77);
    assert!(line.contains("oauth2-sendmail login work"), "{line}");
    let note = super::support::wait_for_line(&notified);
    assert!(
        note.starts_with("work ") && note.contains("oauth2-sendmail login work"),
        "{note}"
    );
    assert!(s.smtp.deliveries().is_empty());
    s.assert_no_secret_in(&run);
}

#[test]
fn a_cron_send_that_needs_a_login_is_queued_under_on_failure_and_notifies() {
    let s = setup();
    let notified = notify_config(&s, "on-failure");
    s.run(&["-oem", "-t"], MESSAGE).assert_silent_success();
    let note = super::support::wait_for_line(&notified);
    assert!(note.contains("AADSTS700082"), "{note}");
    let list = s.run(&["queue", "list"], b"");
    assert!(list.stdout.contains("bob@example.org"), "{list:?}");
    assert!(s.smtp.deliveries().is_empty());
}

/// GET the authorize URL as a browser: the status and the page (no redirect followed).
fn browse(ca_file: &std::path::Path, url: &str) -> (u16, String) {
    super::support::install_provider();
    let pem = std::fs::read(ca_file).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_merge(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let response = client.get(url).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    })
}

#[test]
fn thunderbirds_client_id_with_http_localhost_is_refused_before_the_browser_opens() {
    let s = setup();
    s.config_client(
        THUNDERBIRD_CLIENT_ID,
        "redirect_uri = \"http://localhost\"\n",
    );
    let (browser, record) = recording_browser(&s);
    let mut cmd = s.sandbox.command(&["login", "work"]);
    cmd.env("BROWSER", &browser);
    let run = super::support::run_command(cmd, b"");
    assert_eq!(run.code, 78, "{}", run.stderr);
    let line = last_line(&run);
    assert!(
        line.contains("AADSTS50011") && line.contains("`http://localhost`"),
        "{line}"
    );
    assert!(
        line.contains("\"http://127.0.0.1\"") && line.contains("\"https://localhost\""),
        "{line}"
    );
    assert!(!record.exists(), "no browser was opened");
    assert!(s.idp.requests().is_empty());
    assert!(!s.sandbox.token_file("work").exists());
}

#[test]
fn thunderbirds_client_id_logs_in_with_the_default_loopback_redirect() {
    let s = setup();
    s.config_client(THUNDERBIRD_CLIENT_ID, "");
    let mut live = s.spawn(&["login", "work", "--no-browser"], &[], Stdio::null());
    let location = authorize(&s.ca_file, &live.url());
    assert!(location.starts_with("http://127.0.0.1:"), "{location}");
    follow(&location);
    let run = live.finish();
    assert_logged_in(&run, "logged in as alice@contoso.com");
}

#[test]
fn the_fake_identity_platform_refuses_http_localhost_for_thunderbird_in_the_browser() {
    let s = setup();
    let url = |client: &str, redirect: &str| {
        reqwest::Url::parse_with_params(
            &s.idp.authorize_url_v2("common"),
            &[
                ("client_id", client),
                ("response_type", "code"),
                ("redirect_uri", redirect),
                ("state", "st"),
            ],
        )
        .unwrap()
        .to_string()
    };
    let (status, page) = browse(
        &s.ca_file,
        &url(THUNDERBIRD_CLIENT_ID, "http://localhost:7598/"),
    );
    assert_eq!(status, 400);
    assert!(page.contains("AADSTS50011"), "{page}");
    for ok in ["http://127.0.0.1:7598/", "https://localhost"] {
        assert_eq!(
            browse(&s.ca_file, &url(THUNDERBIRD_CLIENT_ID, ok)).0,
            302,
            "{ok}"
        );
    }
    assert_eq!(
        browse(&s.ca_file, &url(CLIENT_ID, "http://localhost:7598/")).0,
        302
    );
}

/// An authcode login with `--no-browser`: the test plays the browser.
fn login_through_the_browser(s: &Setup) -> Run {
    let mut live = s.spawn(&["login", "work", "--no-browser"], &[], Stdio::null());
    let location = authorize(&s.ca_file, &live.url());
    follow(&location);
    live.finish()
}

#[test]
fn a_browser_signed_in_as_somebody_else_is_refused_naming_both_and_nothing_is_stored() {
    let s = setup();
    s.config("");
    s.idp.sign_in_as(Some("mallory@fabrikam.example"));
    let run = login_through_the_browser(&s);
    assert_eq!(run.code, 77, "{}", run.stderr);
    let line = last_line(&run);
    assert!(
        line.contains("signed in as mallory@fabrikam.example")
            && line.contains("email is alice@contoso.com")
            && line.contains("nothing was stored"),
        "{line}"
    );
    assert!(!s.sandbox.token_file("work").exists());
    // What made the id_token name someone: Microsoft's OpenID scopes were asked for.
    let asked = s.idp.requests()[0].query();
    for scope in ["openid", "profile", "email", "offline_access"] {
        assert!(
            asked["scope"].split(' ').any(|w| w == scope),
            "{}",
            asked["scope"]
        );
    }
}

#[test]
fn the_signed_in_identity_is_compared_case_insensitively_stored_and_shown_by_status() {
    let s = setup();
    s.config("");
    s.idp.sign_in_as(Some("Alice@Contoso.com"));
    let run = login_through_the_browser(&s);
    assert_logged_in(&run, "logged in as Alice@Contoso.com");
    assert_eq!(s.stored()["identity"], "Alice@Contoso.com");
    let status = s.run(&["status", "work"], b"");
    assert!(
        status.stdout.contains("signed in as: Alice@Contoso.com\n"),
        "{}",
        status.stdout
    );
}

#[test]
fn devicecode_signed_in_as_somebody_else_is_refused() {
    let s = setup();
    s.config("flow = \"devicecode\"\n");
    s.idp.sign_in_as(Some("mallory@fabrikam.example"));
    let mut live = s.spawn(&["login", "work"], &[], Stdio::null());
    live.line(|l| l.contains("enter the code"));
    let code = s.idp.last_user_code().unwrap();
    s.idp.decide_user_code(&code, true);
    let run = live.finish();
    assert_eq!(run.code, 77, "{}", run.stderr);
    assert!(
        last_line(&run).contains("mallory@fabrikam.example"),
        "{}",
        run.stderr
    );
    assert!(!s.sandbox.token_file("work").exists());
}

#[test]
fn the_user_key_signs_in_and_authenticates_while_email_stays_the_sender() {
    let s = setup();
    s.config("user = \"delegate@contoso.com\"\n");
    let run = login_through_the_browser(&s);
    assert_logged_in(&run, "logged in as delegate@contoso.com");
    assert_eq!(
        s.idp.requests()[0].query()["login_hint"],
        "delegate@contoso.com"
    );
    assert_eq!(s.stored()["identity"], "delegate@contoso.com");
    s.run(&["-t"], MESSAGE).assert_silent_success();
    let auth = s.smtp.auth_attempts();
    assert_eq!(auth.last().unwrap().user, "delegate@contoso.com");
    assert_eq!(s.smtp.deliveries()[0].from, "alice@contoso.com");
    // Someone else than `user` is refused, naming the key.
    s.idp.sign_in_as(Some("alice@contoso.com"));
    let run = login_through_the_browser(&s);
    assert_eq!(run.code, 77, "{}", run.stderr);
    assert!(
        last_line(&run).contains("user is delegate@contoso.com"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_redirect_from_another_issuer_is_refused_and_the_own_issuer_accepted() {
    let s = setup();
    s.config("");
    s.idp.set_redirect_iss(Some("https://idp.attacker.example"));
    let run = login_through_the_browser(&s);
    assert_eq!(run.code, 77, "{}", run.stderr);
    assert!(last_line(&run).contains("another issuer"), "{}", run.stderr);
    assert!(!s.sandbox.token_file("work").exists());
    s.idp
        .set_redirect_iss(Some(&format!("{}/contoso/v2.0", s.idp.base_url())));
    assert_logged_in(
        &login_through_the_browser(&s),
        "logged in as alice@contoso.com",
    );
}

#[test]
fn a_headless_login_says_once_that_no_browser_opened_with_the_url_once_and_the_device_code_hint() {
    let s = setup();
    s.config("redirect_uri = \"http://127.0.0.1\"\n");
    // No graphical session: the system opener is there but fails, as xdg-open does.
    let bin = s.sandbox.path().join("headless-bin");
    std::fs::create_dir_all(&bin).unwrap();
    for opener in ["xdg-open", "gio", "gnome-open", "kde-open", "wslview"] {
        let path = bin.join(opener);
        std::fs::write(
            &path,
            "#!/bin/sh\necho \"$0: no method available for opening '$*'\" >&2\nexit 3\n",
        )
        .unwrap();
        set_mode(&path, 0o755);
    }
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let mut live = s.spawn(
        &["login"],
        &[
            ("BROWSER", ""),
            ("DISPLAY", ""),
            ("WAYLAND_DISPLAY", ""),
            ("PATH", &path),
        ],
        Stdio::null(),
    );
    let url = live.url();
    live.line(|l| l.contains("waiting up to"));
    let _ = live.child.kill();
    let run = live.finish();
    assert_eq!(run.stderr.matches(&url).count(), 1, "{}", run.stderr);
    for debug in ["Launcher", "ExitStatus", "no method available"] {
        assert!(!run.stderr.contains(debug), "{debug}: {}", run.stderr);
    }
    let before_url: Vec<&str> = run
        .stderr
        .lines()
        .take_while(|l| !l.starts_with("https://"))
        .collect();
    assert_eq!(before_url.len(), 1, "{before_url:?}");
    assert!(
        before_url[0].contains("no browser could be opened"),
        "{before_url:?}"
    );
    assert!(
        before_url[0].contains("oauth2-sendmail login work --flow devicecode"),
        "{before_url:?}"
    );
}
