//! Interop with an independent XOAUTH2 and OAUTHBEARER server: Dovecot's submission service (Debian
//! `dovecot-core` + `dovecot-submissiond`), run in the foreground (`dovecot -F`) with its
//! own base dir and config in a temporary directory, on a loopback port. Tokens are
//! checked by Dovecot's `oauth2` passdb against an RFC 7662 introspection endpoint served
//! here; Dovecot relays the accepted message to the fake SMTP server, where it must arrive
//! byte for byte. Dovecot refuses a long `AUTH XOAUTH2 <initial response>` line
//! (`500 5.5.2 Line too long`), so a `custom` account must use the two-step form. Dovecot
//! offers both mechanisms: `sasl = "auto"` takes OAUTHBEARER (RFC 7628) there.
//!
//! `.ci/run` installs Dovecot. Without it the test fails when `CI` is set, and is skipped
//! with a note otherwise.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use serde_json::json;

use super::fake_idp::FakeIdp;
use super::fake_smtp::{Behaviour, FakeSmtp};
use super::support::{Sandbox, TestCa, now};

const DOVECOT: &str = "/usr/sbin/dovecot";
const USER: &str = "alice@contoso.com";

/// Whether to run: Dovecot installed, or (outside CI) a note and skip. In CI a missing
/// Dovecot is a failure: `.ci/run` installs it.
fn dovecot_available() -> bool {
    let installed = Path::new(DOVECOT).exists()
        && Path::new("/usr/lib/dovecot/submission").exists()
        && Path::new("/usr/lib/dovecot/submission-login").exists();
    if !installed {
        assert!(
            std::env::var_os("CI").is_none(),
            "Dovecot is not installed, and CI is set: .ci/run installs dovecot-core and \
             dovecot-submissiond"
        );
        eprintln!(
            "dovecot is not installed; skipping (apt-get install dovecot-core dovecot-submissiond)"
        );
    }
    installed
}

/// An RFC 7662 token introspection endpoint over plain HTTP on 127.0.0.1: `POST` with
/// `token=…` (Dovecot's `introspection_mode = post`) → `{"active": true, "username": …}`
/// for the tokens in `valid`, `{"active": false}` for any other. Records every token seen.
struct Introspection {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Introspection {
    fn start(valid: Arc<Mutex<HashSet<String>>>) -> Introspection {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let valid = valid.clone();
                let record = record.clone();
                std::thread::spawn(move || {
                    let _ = answer(stream, &valid, &record);
                });
            }
        });
        Introspection { port, seen }
    }
}

fn answer(
    stream: TcpStream,
    valid: &Mutex<HashSet<String>>,
    seen: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut length = 0usize;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" || header == "\n" {
            break;
        }
        if let Some((k, v)) = header.split_once(':')
            && k.trim().eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let body = String::from_utf8_lossy(&body).into_owned();
    let token: String = reqwest::Url::parse(&format!("http://x/?{body}"))
        .ok()
        .and_then(|u| {
            u.query_pairs()
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.into_owned())
        })
        .unwrap_or_default();
    seen.lock().unwrap().push(token.clone());
    let reply = if valid.lock().unwrap().contains(&token) {
        json!({"active": true, "username": USER, "scope": "mail"})
    } else {
        json!({"active": false})
    }
    .to_string();
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{reply}",
        reply.len()
    )?;
    stream.flush()
}

/// A CA and a server certificate for 127.0.0.1, as PEM files for Dovecot.
fn certificate(dir: &Path) -> (PathBuf, PathBuf, String) {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "oauth2-sendmail dovecot test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let cert_file = dir.join("cert.pem");
    let key_file = dir.join("key.pem");
    std::fs::write(&cert_file, format!("{}{}", cert.pem(), ca.pem())).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    (cert_file, key_file, ca.pem())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `dovecot -F`; stopped with SIGTERM (the master then ends its children).
struct Dovecot {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Dovecot {
    /// `extra`: more settings for `dovecot.conf`.
    fn start(
        dir: &Path,
        relay_port: u16,
        introspection_port: u16,
        extra: &str,
    ) -> (Dovecot, String) {
        let (cert, key, ca_pem) = certificate(dir);
        let port = free_port();
        let log = dir.join("dovecot.log");
        let oauth2 = dir.join("dovecot-oauth2.conf.ext");
        std::fs::write(
            &oauth2,
            format!(
                "introspection_mode = post\n\
                 introspection_url = http://127.0.0.1:{introspection_port}/introspect\n\
                 username_attribute = username\nactive_attribute = active\nactive_value = true\n"
            ),
        )
        .unwrap();
        // The submission process runs as the mail user (dovenull): its home must be
        // creatable (a mail location is required even if nothing is stored).
        let home = dir.join("home");
        std::fs::create_dir(&home).unwrap();
        std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        let config = dir.join("dovecot.conf");
        std::fs::write(
            &config,
            format!(
                "base_dir = {dir}/run\nstate_dir = {dir}/state\n\
                 log_path = {log}\n\
                 protocols = submission\nlisten = 127.0.0.1\n\
                 hostname = dovecot.test\npostmaster_address = postmaster@dovecot.test\n\
                 default_internal_user = dovecot\ndefault_login_user = dovenull\n\
                 default_internal_group = dovecot\n\
                 first_valid_uid = 1\nmail_location = maildir:~/Maildir\n\
                 ssl = required\nssl_cert = <{cert}\nssl_key = <{key}\n\
                 auth_mechanisms = xoauth2 oauthbearer\n\
                 passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {oauth2}\n}}\n\
                 userdb {{\n  driver = static\n  args = uid=dovenull gid=dovenull home={dir}/home/%u\n}}\n\
                 submission_relay_host = 127.0.0.1\nsubmission_relay_port = {relay_port}\n\
                 submission_relay_trusted = yes\nsubmission_relay_ssl = no\n\
                 service submission-login {{\n  inet_listener submission {{\n    port = {port}\n  }}\n}}\n\
                 service anvil {{\n  chroot =\n}}\n{extra}",
                dir = dir.display(),
                log = log.display(),
                cert = cert.display(),
                key = key.display(),
                oauth2 = oauth2.display(),
            ),
        )
        .unwrap();
        let child = Command::new(DOVECOT)
            .arg("-F")
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let dovecot = Dovecot { child, port, log };
        dovecot.wait_listening();
        (dovecot, ca_pem)
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "dovecot did not listen on {}: {}",
                self.port,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything an interop test needs: the fake identity platform whose tokens the
/// introspection endpoint vouches for, Dovecot's submission service relaying to a fake
/// SMTP server, and a sandbox whose account `work` (`provider`) submits to Dovecot with a
/// cached token.
struct Interop {
    idp: FakeIdp,
    relay: FakeSmtp,
    introspection: Introspection,
    dovecot: Dovecot,
    sandbox: Sandbox,
    token: String,
    _dir: tempfile::TempDir,
}

impl Interop {
    fn start(provider: &str, dovecot_extra: &str) -> Interop {
        let ca = TestCa::new();
        let idp = FakeIdp::start(&ca);
        let token = idp.issue_access_token();
        let relay = FakeSmtp::start(
            &ca,
            Behaviour {
                require_auth: false,
                ..Behaviour::default()
            },
        );
        let introspection = Introspection::start(idp.valid_access_tokens());
        let dir = tempfile::tempdir().unwrap();
        // Dovecot's unprivileged processes must reach their sockets below base_dir.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let (dovecot, ca_pem) =
            Dovecot::start(dir.path(), relay.port(), introspection.port, dovecot_extra);
        let sandbox = Sandbox::new();
        // Dovecot's CA and the token endpoint's, one bundle.
        let ca_file = sandbox.write_file("dovecot-ca.pem", &format!("{ca_pem}{}", ca.ca_pem));
        sandbox.write_config(&format!(
            "[accounts.work]\nprovider = \"{provider}\"\nemail = \"{USER}\"\n\
             smtp_host = \"127.0.0.1\"\nsmtp_port = {}\ntoken_url = \"{}\"\n\
             tls_ca_file = \"{}\"\nqueue = \"never\"\n",
            dovecot.port,
            idp.token_url_v2("contoso"),
            ca_file.display()
        ));
        sandbox.seed_token(
            "work",
            &json!({"access_token": token, "expires_at": now() + 3600}),
        );
        Interop {
            idp,
            relay,
            introspection,
            dovecot,
            sandbox,
            token,
            _dir: dir,
        }
    }
}

impl Interop {
    /// Adds `lines` to the account `work`.
    fn account_lines(&self, lines: &str) {
        let path = self
            .sandbox
            .path()
            .join("config/oauth2-sendmail/config.toml");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(lines);
        std::fs::write(&path, text).unwrap();
    }
}

const MESSAGE: &[u8] = b"From: Alice <alice@contoso.com>\r\nTo: Bob <bob@fabrikam.example>\r\n\
Subject: through Dovecot\r\nDate: Tue, 01 Dec 2026 11:00:00 +0000\r\n\
Message-ID: <dovecot-1@contoso.com>\r\n\r\nHello through Dovecot.\r\n.leading dot\r\n\
\xc3\xa9t\xc3\xa9 8-bit\r\n";

#[test]
fn dovecot_submission_takes_the_two_step_xoauth2_and_relays_the_message_byte_exact() {
    if !dovecot_available() {
        return;
    }
    let started = Instant::now();
    let Interop {
        idp: _idp,
        relay,
        introspection,
        dovecot,
        sandbox,
        token,
        _dir,
    } = Interop::start("custom", "");
    // `auto` would take OAUTHBEARER, which Dovecot offers too (tested below).
    let path = sandbox.path().join("config/oauth2-sendmail/config.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("{config}sasl = \"xoauth2\"\n")).unwrap();
    let run = sandbox.run(&["-v", "-oi", "--", "bob@fabrikam.example"], MESSAGE);
    run.assert_never_shows(&token);
    assert_eq!(
        run.code,
        0,
        "stderr: {}\ndovecot: {}",
        run.stderr,
        dovecot.log_text()
    );
    // Two steps: AUTH XOAUTH2 alone, the 334, then the response on its own line.
    assert!(
        run.stderr
            .lines()
            .any(|l| l.trim_end().ends_with("AUTH XOAUTH2")),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("Line too long"),
        "no one-line attempt: {}",
        run.stderr
    );
    assert_eq!(
        introspection.seen.lock().unwrap().as_slice(),
        std::slice::from_ref(&token)
    );
    let delivered = relay.deliveries();
    assert_eq!(delivered.len(), 1, "dovecot: {}", dovecot.log_text());
    assert_eq!(delivered[0].from, USER);
    assert_eq!(delivered[0].rcpts, ["bob@fabrikam.example"]);
    // Dovecot adds nothing but may put its own trace header first; the message follows
    // byte for byte.
    assert!(
        delivered[0].data.ends_with(MESSAGE),
        "{}",
        String::from_utf8_lossy(&delivered[0].data)
    );
    let added = &delivered[0].data[..delivered[0].data.len() - MESSAGE.len()];
    assert!(
        added.is_empty() || added.starts_with(b"Received: "),
        "{}",
        String::from_utf8_lossy(added)
    );
    drop(dovecot);
    eprintln!("dovecot interop took {:?}", started.elapsed());
}

#[test]
fn dovecots_line_too_long_for_a_one_line_auth_is_retried_in_two_steps() {
    // A Microsoft-style account sends AUTH on one line; Dovecot answers a real-sized token
    // with `500 5.5.2 Line too long`, and the same connection then takes the two steps.
    if !dovecot_available() {
        return;
    }
    let Interop {
        idp: _idp,
        relay,
        introspection: _introspection,
        dovecot,
        sandbox,
        token,
        _dir,
    } = Interop::start("microsoft", "");
    let run = sandbox.run(&["-v", "-oi", "--", "bob@fabrikam.example"], MESSAGE);
    run.assert_never_shows(&token);
    assert_eq!(
        run.code,
        0,
        "stderr: {}\ndovecot: {}",
        run.stderr,
        dovecot.log_text()
    );
    assert!(run.stderr.contains("500 5.5.2"), "{}", run.stderr);
    assert!(run.stderr.contains("in two steps"), "{}", run.stderr);
    assert_eq!(relay.deliveries().len(), 1);
    assert_eq!(relay.connections(), 1);
}

#[test]
fn dovecots_451_4_5_3_too_many_recipients_sends_the_rest_in_further_transactions() {
    if !dovecot_available() {
        return;
    }
    let Interop {
        idp: _idp,
        relay,
        introspection: _introspection,
        dovecot,
        sandbox,
        token: _token,
        _dir,
    } = Interop::start("custom", "submission_max_recipients = 2\n");
    let rcpts = [
        "a@fabrikam.example",
        "b@fabrikam.example",
        "c@fabrikam.example",
    ];
    let mut args = vec!["-v", "-oi", "--"];
    args.extend(rcpts);
    let run = sandbox.run(&args, MESSAGE);
    assert_eq!(
        run.code,
        0,
        "stderr: {}\ndovecot: {}",
        run.stderr,
        dovecot.log_text()
    );
    assert!(
        run.stderr.contains("S: 451 4.5.3 Too many recipients"),
        "{}",
        run.stderr
    );
    // Our side: the transaction that showed the limit is reset before DATA, then the
    // recipients go two by two on the same connection, the one left over last.
    let dialogue: Vec<&str> = run.stderr.lines().collect();
    let mails: Vec<usize> = (0..dialogue.len())
        .filter(|&i| dialogue[i].starts_with("C: MAIL FROM:"))
        .collect();
    assert_eq!(mails.len(), 3, "{}", run.stderr);
    assert!(
        dialogue[mails[0]..mails[1]].contains(&"C: RSET"),
        "{}",
        run.stderr
    );
    assert!(
        !dialogue[mails[0]..mails[1]].contains(&"C: DATA"),
        "{}",
        run.stderr
    );
    let second: Vec<&str> = dialogue[mails[2]..]
        .iter()
        .filter(|l| l.starts_with("C: RCPT TO:"))
        .copied()
        .collect();
    assert_eq!(second, ["C: RCPT TO:<c@fabrikam.example>"]);
    assert_eq!(
        relay.deliveries().last().unwrap().rcpts,
        ["c@fabrikam.example"]
    );
    // Dovecot 2.3 passes a RCPT it answered 451 on to its relay host anyway: the first
    // transaction, which showed the limit, was abandoned before DATA, so the relay got
    // each recipient once.
    let mut got: Vec<String> = relay
        .deliveries()
        .iter()
        .flat_map(|d| d.rcpts.clone())
        .collect();
    got.sort();
    assert_eq!(got, rcpts, "each recipient exactly once");
}

#[test]
fn no_recipient_gets_the_message_twice_from_dovecot_with_a_recipient_limit() {
    // Dovecot 2.3 relays a RCPT it answered `451 4.5.3` on: a transaction that has shown
    // the limit is abandoned before DATA, and the recipients go in batches that fit.
    if !dovecot_available() {
        return;
    }
    let Interop {
        idp: _idp,
        relay,
        introspection: _introspection,
        dovecot,
        sandbox,
        token: _token,
        _dir,
    } = Interop::start("custom", "submission_max_recipients = 20\n");
    let rcpts: Vec<String> = (0..50)
        .map(|i| format!("r{i:02}@fabrikam.example"))
        .collect();
    let mut args = vec!["-v", "-oi", "--"];
    args.extend(rcpts.iter().map(String::as_str));
    let run = sandbox.run(&args, MESSAGE);
    assert_eq!(
        run.code,
        0,
        "stderr: {}\ndovecot: {}",
        run.stderr,
        dovecot.log_text()
    );
    let mut got: Vec<String> = relay
        .deliveries()
        .iter()
        .flat_map(|d| d.rcpts.clone())
        .collect();
    got.sort();
    assert_eq!(got, rcpts, "each recipient exactly once");
    // No transaction after the first carries more recipients than the server takes.
    let dialogue: Vec<&str> = run.stderr.lines().collect();
    let mut counts = Vec::new();
    for line in &dialogue {
        if line.starts_with("C: MAIL FROM:") {
            counts.push(0);
        } else if line.starts_with("C: RCPT TO:") {
            *counts.last_mut().unwrap() += 1;
        }
    }
    assert!(counts.len() >= 4, "{counts:?}");
    assert!(counts[1..].iter().all(|&n| n <= 20), "{counts:?}");
    assert_eq!(counts[1..].iter().sum::<usize>(), 50, "{counts:?}");
}

/// The lines of `-v` output from `C: AUTH` on, up to the `235`.
fn auth_dialogue(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .skip_while(|l| !l.contains("C: AUTH "))
        .take_while(|l| !l.contains("S: 235"))
        .collect()
}

#[test]
fn dovecot_takes_oauthbearer_in_two_steps_and_on_one_line() {
    if !dovecot_available() {
        return;
    }
    let interop = Interop::start("custom", "");
    // `auto` on a custom server that offers OAUTHBEARER takes it; a real-sized token
    // makes a response too long for the AUTH line (RFC 4954's 512 octets): two steps.
    let run = interop
        .sandbox
        .run(&["-v", "-oi", "--", "bob@fabrikam.example"], MESSAGE);
    run.assert_never_shows(&interop.token);
    assert_eq!(
        run.code,
        0,
        "stderr: {}\ndovecot: {}",
        run.stderr,
        interop.dovecot.log_text()
    );
    let dialogue = auth_dialogue(&run.stderr);
    assert!(
        dialogue[0].ends_with("C: AUTH OAUTHBEARER")
            && dialogue.iter().any(|l| l.ends_with("C: <redacted>")),
        "{dialogue:?}"
    );
    assert!(!run.stderr.contains("C: AUTH XOAUTH2"), "{}", run.stderr);
    assert_eq!(interop.relay.deliveries().len(), 1);

    // A short token fits on the AUTH line: one step.
    let short = "short-opaque-token-for-one-line".to_owned();
    interop
        .idp
        .valid_access_tokens()
        .lock()
        .unwrap()
        .insert(short.clone());
    interop.sandbox.seed_token(
        "work",
        &json!({"access_token": short, "expires_at": now() + 3600}),
    );
    let run = interop
        .sandbox
        .run(&["-v", "-oi", "--", "bob@fabrikam.example"], MESSAGE);
    run.assert_never_shows(&short);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let dialogue = auth_dialogue(&run.stderr);
    assert!(
        dialogue[0].ends_with("C: AUTH OAUTHBEARER <redacted>"),
        "{dialogue:?}"
    );
    assert_eq!(interop.relay.deliveries().len(), 2);
    assert!(interop.introspection.seen.lock().unwrap().contains(&short));

    // `check` says which mechanism the server accepted.
    let check = interop.sandbox.run(&["check"], b"");
    assert_eq!(check.code, 0, "{check:?}");
    assert!(
        check.stdout.contains("accepted OAUTHBEARER"),
        "{}",
        check.stdout
    );
}

#[test]
fn dovecots_oauthbearer_refusal_is_the_rfc_7628_error_exchange_then_a_fresh_token_works() {
    if !dovecot_available() {
        return;
    }
    let interop = Interop::start("custom", "");
    interop.account_lines("client_id = \"11111111-2222-3333-4444-555555555555\"\n");
    // A cached token Dovecot's introspection does not vouch for, with a refresh token.
    let stale = interop.idp.issue_access_token();
    interop
        .idp
        .valid_access_tokens()
        .lock()
        .unwrap()
        .remove(&stale);
    let refresh = interop.idp.issue_refresh_token();
    interop.sandbox.seed_token(
        "work",
        &json!({"access_token": stale, "expires_at": now() + 3600, "refresh_token": refresh}),
    );
    let run = interop
        .sandbox
        .run(&["-v", "-oi", "--", "bob@fabrikam.example"], MESSAGE);
    for secret in [&stale, &refresh] {
        run.assert_never_shows(secret);
    }
    assert_eq!(
        run.code,
        0,
        "stderr: {}\ndovecot: {}",
        run.stderr,
        interop.dovecot.log_text()
    );
    // The server's JSON error in a 334, our %x01, its 535; then a fresh token succeeds.
    let lines: Vec<&str> = run.stderr.lines().collect();
    let error = lines
        .iter()
        .position(|l| l.contains("S: 334 ey"))
        .unwrap_or_else(|| panic!("no error challenge: {}", run.stderr));
    assert!(lines[error + 1].ends_with("C: AQ=="), "{}", run.stderr);
    assert!(lines[error + 2].contains("S: 535"), "{}", run.stderr);
    assert!(
        lines[error + 2..].iter().any(|l| l.contains("S: 235")),
        "{}",
        run.stderr
    );
    let fresh = interop.idp.valid_access_tokens();
    let seen = interop.introspection.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0], stale);
    assert!(fresh.lock().unwrap().contains(&seen[1]));
    run.assert_never_shows(&seen[1]);
    assert_eq!(interop.relay.deliveries().len(), 1);
}
