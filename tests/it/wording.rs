//! What a new user reads on the first day with a second account: each line says a thing
//! once, in plain words, with the address or URL needed to act on it. The real binary.

use serde_json::json;

use super::fake_idp::FakeIdp;
use super::support::{Sandbox, TestCa, now};

const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";

/// A sandbox whose account `work` (Microsoft) gets its tokens from the fake.
fn microsoft(extra: &str) -> (Sandbox, FakeIdp) {
    let ca = TestCa::new();
    let idp = FakeIdp::start(&ca);
    let sandbox = Sandbox::new();
    let ca_file = sandbox.write_file("ca.pem", &ca.ca_pem);
    sandbox.write_config(&format!(
        "[accounts.work]\nprovider = \"microsoft\"\nemail = \"alice@contoso.com\"\n\
         tenant = \"contoso\"\nclient_id = \"{CLIENT_ID}\"\ntoken_url = \"{}\"\n\
         tls_ca_file = \"{}\"\n{extra}",
        idp.token_url_v2("contoso"),
        ca_file.display()
    ));
    (sandbox, idp)
}

#[test]
fn a_config_error_names_its_account_once() {
    let s = Sandbox::new();
    s.write_config(
        "[accounts.chen]\nprovider = \"microsoft-china\"\nemail = \"chen@contoso.cn\"\n",
    );
    let run = s.run(&["login", "chen", "--no-browser"], b"");
    let line = run.assert_failure(78);
    assert_eq!(line.matches("account chen:").count(), 1, "{line}");
    assert!(line.contains("`client_id` is required"), "{line}");
}

#[test]
fn the_gmail_client_id_hint_gives_the_consoles_url() {
    let s = Sandbox::new();
    s.write_config("[accounts.g]\nprovider = \"gmail\"\nemail = \"me@gmail.com\"\n");
    let run = s.run(&["login", "g", "--no-browser"], b"");
    let line = run.assert_failure(78);
    assert!(
        line.contains("https://console.cloud.google.com/apis/credentials"),
        "{line}"
    );
    assert_eq!(line.matches("account g:").count(), 1, "{line}");
}

#[test]
fn a_usage_error_that_points_somewhere_gets_no_second_pointer() {
    let s = Sandbox::new();
    let run = s.run(&["queue", "remove", "no-such-id"], b"");
    let line = run.assert_failure(64);
    assert_eq!(line.matches("(see ").count(), 1, "{line}");
    assert!(line.contains("oauth2-sendmail queue list"), "{line}");
}

#[test]
fn an_ipv6_server_is_written_in_brackets() {
    let (s, _idp) = microsoft("smtp_host = \"::1\"\nsmtp_port = 1\n");
    s.seed_token(
        "work",
        &json!({"access_token": "at-1", "expires_at": now() + 3600}),
    );
    let dry = s.run(
        &["--dry-run", "-i", "bob@example.org"],
        b"Subject: s\n\nhi\n",
    );
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(dry.stdout.contains("[::1]:1"), "{}", dry.stdout);
    let status = s.run(&["status"], b"");
    assert!(
        status.stdout.contains("server: [::1]:1"),
        "{}",
        status.stdout
    );
    let check = s.run(&["check", "work"], b"");
    assert_ne!(check.code, 0);
    assert!(check.stderr.contains("[::1]:1"), "{}", check.stderr);
    assert!(!check.stderr.contains(" ::1:1"), "{}", check.stderr);
}

#[test]
fn status_says_each_thing_once_with_the_login_flow_tenant_client_id_and_endpoints() {
    let (s, idp) = microsoft(
        "flow = \"password\"\npassword_cmd = [\"echo\", \"pw\"]\nclient_secret = \"app-secret-99\"\n",
    );
    idp.register_client_secret(CLIENT_ID, "app-secret-99");
    let login = s.run(&["login", "work", "--flow", "client-credentials"], b"");
    assert_eq!(login.code, 0, "{}", login.stderr);
    let status = s.run(&["status"], b"");
    assert_eq!(status.code, 0, "{}", status.stdout);
    let out = &status.stdout;
    assert_eq!(out.matches("queue:").count(), 1, "one queue line: {out}");
    assert!(
        out.contains("flow: client-credentials (the last login's; the config says password)"),
        "{out}"
    );
    assert!(out.contains("tenant: contoso"), "{out}");
    assert!(out.contains(&format!("client id: {CLIENT_ID}\n")), "{out}");
    assert!(
        out.contains(&format!(
            "token endpoint: {} (override)",
            idp.token_url_v2("contoso")
        )),
        "{out}"
    );
    assert!(
        out.contains(
            "authorize endpoint: https://login.microsoftonline.com/contoso/oauth2/v2.0/authorize\n"
        ),
        "{out}"
    );
}

#[test]
fn status_with_two_accounts_adds_the_whole_queue_once() {
    let s = Sandbox::new();
    s.write_config(
        "[accounts.a]\nprovider = \"microsoft\"\nemail = \"a@contoso.com\"\n\
         [accounts.b]\nprovider = \"gmail\"\nemail = \"b@gmail.com\"\nclient_id = \"x\"\n",
    );
    let status = s.run(&["status"], b"");
    let out = &status.stdout;
    assert_eq!(out.matches("  queue:").count(), 2, "{out}");
    assert_eq!(out.matches("queue (all accounts):").count(), 1, "{out}");
    // Microsoft's account uses the built-in client id, and says so.
    assert!(out.contains("(the provider's default)"), "{out}");
}
