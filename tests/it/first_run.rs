//! `oauth2-sendmail login EMAIL` on a first run, through the real binary: the provider from
//! a well-known domain, from MX records served by a DNS server on loopback, or from
//! `--provider`; the account added to the config (created 0600, or appended with every
//! existing byte kept); the login started (stopped at the printed authorisation URL, which
//! is Microsoft's with Thunderbird's client id, PKCE and a loopback redirect); and, after a
//! login, the lines to paste into mutt, Emacs and mbsync.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use super::fake_dns::FakeDns;
use super::setup::{Setup, setup, spawn_reading_stderr};
use super::support::Sandbox;

const THUNDERBIRD: &str = "9e5f94bc-e8a4-4e73-b8be-63364c29d753";

fn config_path(s: &Sandbox) -> PathBuf {
    s.path().join("config/oauth2-sendmail/config.toml")
}

/// Starts `login …` and returns the authorisation URL it prints, with the stderr before it;
/// the login (waiting for a browser) is then stopped.
fn url_of_login(s: &Sandbox, args: &[&str], env: &[(&str, &str)]) -> (String, Vec<String>) {
    let mut cmd = s.command(args);
    cmd.envs(env.iter().copied()).stdin(Stdio::null());
    let (mut child, rx) = spawn_reading_stderr(cmd);
    let mut seen = Vec::new();
    let url = loop {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) if line.starts_with("https://") => break line,
            Ok(line) => seen.push(line),
            Err(e) => {
                let _ = child.kill();
                panic!("no URL ({e}); stderr: {seen:#?}; exit: {:?}", child.wait());
            }
        }
    };
    child.kill().unwrap();
    child.wait().unwrap();
    (url, seen)
}

fn query(url: &str) -> std::collections::BTreeMap<String, String> {
    reqwest::Url::parse(url)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The redirect is a loopback listener with the port chosen at run time.
fn assert_loopback_redirect(redirect: &str) {
    let url = reqwest::Url::parse(redirect).unwrap();
    assert_eq!(url.scheme(), "http", "{redirect}");
    // Thunderbird's registration holds http://127.0.0.1, not http://localhost (AADSTS50011).
    assert_eq!(url.host_str(), Some("127.0.0.1"), "{redirect}");
    assert!(url.port().is_some_and(|p| p > 0), "{redirect}");
    assert_eq!(url.path(), "/", "{redirect}");
}

#[test]
fn first_run_for_a_well_known_domain_adds_the_account_and_opens_microsofts_sign_in() {
    let s = Sandbox::new();
    assert!(!config_path(&s).exists());
    let (url, stderr) = url_of_login(&s, &["login", "japinli@hotmail.com", "--no-browser"], &[]);
    assert!(
        url.starts_with("https://login.microsoftonline.com/common/oauth2/v2.0/authorize?"),
        "{url}"
    );
    let q = query(&url);
    assert_eq!(q["client_id"], THUNDERBIRD);
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(q["code_challenge"].len() >= 43, "{url}");
    assert_eq!(q["login_hint"], "japinli@hotmail.com");
    assert!(
        q["scope"].contains("https://outlook.office.com/SMTP.Send"),
        "{url}"
    );
    assert_loopback_redirect(&q["redirect_uri"]);
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("added account japinli (provider microsoft")),
        "{stderr:#?}"
    );

    let path = config_path(&s);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "[accounts.japinli]\nprovider = \"microsoft\"\nemail = \"japinli@hotmail.com\"\n"
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // A second run finds the account by its address and adds nothing.
    let (_, stderr) = url_of_login(&s, &["login", "japinli@hotmail.com", "--no-browser"], &[]);
    assert!(
        !stderr.iter().any(|l| l.contains("added account")),
        "{stderr:#?}"
    );
    assert_eq!(
        std::fs::read_to_string(&path)
            .unwrap()
            .matches("[accounts.")
            .count(),
        1
    );
}

#[test]
fn first_run_infers_microsoft_365_from_mx_records_and_keeps_the_commented_config() {
    let dns = FakeDns::start(&[(
        "contoso.example",
        &["contoso-example.mail.protection.outlook.com"],
    )]);
    let s = Sandbox::new();
    let old = "# my mail setup\ndefault_account = \"home\"   # keep this comment\n\n\
               [accounts.home]\n# the personal one\nemail = \"me@gmail.com\"\n\
               client_id = \"x.apps.googleusercontent.com\"\n\n[aliases]\nroot = \"me@gmail.com\"";
    let path = s.write_config(old);
    let (url, _) = url_of_login(
        &s,
        &["login", "alice@contoso.example", "--no-browser"],
        &[("OAUTH2_SENDMAIL_NAMESERVER", &dns.address())],
    );
    assert!(
        url.starts_with("https://login.microsoftonline.com/contoso.example/oauth2/v2.0/authorize?"),
        "the domain is the tenant: {url}"
    );
    assert_eq!(query(&url)["client_id"], THUNDERBIRD);
    assert!(
        dns.asked()
            .iter()
            .any(|(n, t)| n == "contoso.example." && t.to_string() == "MX"),
        "{:?}",
        dns.asked()
    );
    let new = std::fs::read_to_string(&path).unwrap();
    assert!(new.starts_with(old), "the old bytes are kept: {new}");
    assert_eq!(
        &new[old.len()..],
        "\n\n[accounts.alice]\nprovider = \"microsoft\"\nemail = \"alice@contoso.example\"\n\
         tenant = \"contoso.example\"\n"
    );
    let status = s.run(&["status"], b"");
    assert!(status.stderr.is_empty(), "{}", status.stderr);
    assert!(
        status.stdout.contains("alice\n  provider: microsoft\n"),
        "{}",
        status.stdout
    );
    // The Gmail account without `provider` is Gmail's, not silently Microsoft's.
    assert!(
        status.stdout.contains(
            "home (default)\n  provider: gmail\n  email: me@gmail.com\n  server: smtp.gmail.com:587"
        ),
        "{}",
        status.stdout
    );
}

#[test]
fn first_run_with_google_mx_adds_a_gmail_account_and_asks_for_its_client_id() {
    let dns = FakeDns::start(&[(
        "fabrikam.example",
        &["aspmx.l.google.com", "alt1.aspmx.l.google.com"],
    )]);
    let s = Sandbox::new();
    let run = s.run_env(
        &["login", "bob@fabrikam.example", "--no-browser"],
        &[("OAUTH2_SENDMAIL_NAMESERVER", &dns.address())],
    );
    assert_eq!(run.code, 78, "{}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert!(
        lines[0]
            .contains("added account bob (provider gmail, from the MX record aspmx.l.google.com)"),
        "{lines:?}"
    );
    assert!(lines[1].contains("client_id"), "{lines:?}");
    assert!(
        std::fs::read_to_string(config_path(&s))
            .unwrap()
            .contains("[accounts.bob]\nprovider = \"gmail\"\n")
    );
}

#[test]
fn first_run_with_an_unknown_mail_host_asks_for_provider_and_writes_nothing() {
    let dns = FakeDns::start(&[
        ("tailspin.example", &["mx1.tailspin.example"]),
        ("nomx.example", &[]),
    ]);
    let s = Sandbox::new();
    for email in [
        "carol@tailspin.example",
        "dave@nomx.example",
        "erin@nxdomain.example",
    ] {
        let run = s.run_env(
            &["login", email, "--no-browser"],
            &[("OAUTH2_SENDMAIL_NAMESERVER", &dns.address())],
        );
        let line = run.assert_failure(64);
        assert!(
            line.contains("--provider microsoft|microsoft-china|gmail|custom"),
            "{line}"
        );
        assert!(line.contains("MX records"), "{line}");
        assert!(!config_path(&s).exists(), "nothing written for {email}");
    }
    // --provider overrides the inference (no DNS asked).
    let asked = dns.asked().len();
    let (url, _) = url_of_login(
        &s,
        &[
            "login",
            "carol@tailspin.example",
            "--provider",
            "microsoft",
            "--no-browser",
        ],
        &[("OAUTH2_SENDMAIL_NAMESERVER", &dns.address())],
    );
    assert!(
        url.starts_with("https://login.microsoftonline.com/common/"),
        "{url}"
    );
    assert_eq!(dns.asked().len(), asked);
    // --provider with an account name is a usage error.
    let run = s.run(&["login", "carol", "--provider", "gmail"], b"");
    assert!(run.assert_failure(64).contains("--provider"));
}

#[test]
fn login_by_address_ends_with_the_lines_for_mutt_emacs_and_mbsync() {
    let kit = setup();
    kit.account().provider(None).write();
    let Setup {
        sandbox: s, idp, ..
    } = kit;
    let rt = idp.issue_refresh_token();
    let run = s.run(
        &["login", "Alice@Contoso.com", "--import-refresh-token", "-"],
        format!("{rt}\n").as_bytes(),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    run.assert_never_shows(&rt);
    let exe = env!("CARGO_BIN_EXE_oauth2-sendmail");
    let out = &run.stdout;
    assert!(
        out.starts_with("account work: logged in as alice@contoso.com; "),
        "{out}"
    );
    assert!(
        out.contains(&format!("set sendmail = \"{exe} -oi\"\n")),
        "{out}"
    );
    assert!(
        out.contains(&format!("sendmail-program \"{exe}\"\n")),
        "{out}"
    );
    assert!(out.contains("message-sendmail-f-is-evil t\n"), "{out}");
    assert!(out.contains("'(\"--read-envelope-from\")"), "{out}");
    assert!(
        out.contains(&format!("PassCmd \"{exe} token work\"\n")),
        "{out}"
    );
    assert!(out.contains("AuthMechs XOAUTH2\n"), "{out}");
    // The pasted mbsync command works.
    let token = s.run(&["token", "work"], b"");
    assert_eq!(token.code, 0, "{}", token.stderr);
    assert!(idp.is_valid_access_token(token.stdout.trim()));
}
