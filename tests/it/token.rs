//! `oauth2-sendmail token|status|logout` against the fake identity platform over real HTTPS:
//! the cache, the refresh under the lock, the grants, and the errors with their exit codes.

// AADSTS codes are identifiers, written as Microsoft prints them.
#![allow(clippy::unreadable_literal)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::fake_idp::{ExpiresIn, Failure, FakeIdp};
use super::support::{Run, Sandbox, TestCa, now};

const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";

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
    /// A Microsoft account `work` whose token endpoint is the fake's v2 one, plus `extra`.
    fn config(&self, extra: &str) {
        self.config_with_url(&self.idp.token_url_v2("contoso"), extra);
    }

    fn config_with_url(&self, token_url: &str, extra: &str) {
        self.sandbox.write_config(&format!(
            "[accounts.work]\nprovider = \"microsoft\"\nemail = \"alice@contoso.com\"\n\
             client_id = \"{CLIENT_ID}\"\ntoken_url = \"{token_url}\"\ntls_ca_file = \"{}\"\n{extra}",
            self.ca_file.display()
        ));
    }

    fn seed(&self, json: &Value) {
        self.sandbox.seed_token("work", json);
    }

    /// Seeds an expired access token with a valid refresh token; returns the refresh token.
    fn seed_expired(&self) -> String {
        let rt = self.idp.issue_refresh_token();
        self.seed(&json!({
            "access_token": "at-stale-0",
            "expires_at": now() - 10,
            "refresh_token": rt,
        }));
        rt
    }

    fn run(&self, args: &[&str]) -> Run {
        self.sandbox.run(args, b"")
    }

    fn stored(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.sandbox.token_file("work")).unwrap()).unwrap()
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// The token printed by `token`, checked to be one line.
fn printed(run: &Run) -> &str {
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert_eq!(run.stderr, "");
    let t = run.stdout.strip_suffix('\n').expect("ends in a newline");
    assert!(!t.is_empty() && !t.contains('\n'));
    t
}

#[test]
fn a_valid_cached_token_is_printed_without_asking_the_idp() {
    let s = setup();
    s.config("");
    let rt = s.idp.issue_refresh_token();
    s.seed(
        &json!({"access_token": "at-cached-1", "expires_at": now() + 3000, "refresh_token": rt}),
    );
    let run = s.run(&["token", "work"]);
    assert_eq!(printed(&run), "at-cached-1");
    assert_eq!(s.idp.requests().len(), 0);
    // The default account works the same.
    assert_eq!(printed(&s.run(&["token"])), "at-cached-1");
}

#[test]
fn an_expired_token_is_refreshed_once_and_the_rotated_refresh_token_saved() {
    let s = setup();
    s.config("");
    let old_rt = s.seed_expired();
    let run = s.run(&["token", "work"]);
    let token = printed(&run).to_owned();
    assert!(s.idp.is_valid_access_token(&token), "{token}");
    assert_eq!(s.idp.refresh_count(), 1);
    let req = &s.idp.requests()[0];
    assert_eq!(req.path, "/contoso/oauth2/v2.0/token");
    assert_eq!(req.grant_type(), "refresh_token");
    assert_eq!(req.field("refresh_token"), Some(old_rt.as_str()));
    assert_eq!(req.field("client_id"), Some(CLIENT_ID));
    // The cache does not say what was granted. Microsoft's refresh tokens are
    // multi-resource, so the refresh names the audience with the configured scopes (what
    // the login asked for); other providers get none (see
    // `a_refresh_asks_for_the_scopes_that_were_granted_never_more`).
    let scope = req.field("scope").unwrap_or_default();
    assert!(
        scope.starts_with("https://outlook.office.com/SMTP.Send "),
        "{scope}"
    );
    assert_eq!(
        req.field("client_secret"),
        None,
        "a public client sends no secret"
    );
    assert_eq!(req.field("resource"), None);
    assert_eq!(
        req.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(req.method, "POST");

    let stored = s.stored();
    assert_eq!(stored["access_token"], token.as_str());
    let new_rt = stored["refresh_token"].as_str().unwrap();
    assert_ne!(new_rt, old_rt, "the rotated refresh token is saved");
    assert!(s.idp.refresh_token_valid(new_rt));
    let expires_at = stored["expires_at"].as_u64().unwrap();
    assert!(
        (now() + 3500..=now() + 3600).contains(&expires_at),
        "{expires_at}"
    );
    assert_eq!(stored["token_type"], "Bearer");
    assert!(stored["obtained_at"].as_u64().unwrap() + 60 > now());
    let file = s.sandbox.token_file("work");
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(file.parent().unwrap()), 0o700);
    run.assert_never_shows(&old_rt);
    run.assert_never_shows(new_rt);

    // The next call uses the cache.
    assert_eq!(printed(&s.run(&["token", "work"])), token);
    assert_eq!(s.idp.requests().len(), 1);
}

#[test]
fn a_token_about_to_expire_is_renewed_ahead_of_time() {
    let s = setup();
    s.config("");
    let rt = s.idp.issue_refresh_token();
    s.seed(&json!({"access_token": "at-dying", "expires_at": now() + 120, "refresh_token": rt}));
    let token = printed(&s.run(&["token", "work"])).to_owned();
    assert_ne!(token, "at-dying");
    assert_eq!(s.idp.refresh_count(), 1);
}

#[test]
fn twenty_concurrent_invocations_refresh_once_and_agree() {
    let s = setup();
    s.config("");
    let old_rt = s.seed_expired();
    // Old refresh tokens die on use: a second refresh with the old one would fail.
    s.idp.set_rotation_revokes_old(true);
    s.idp.set_delay(Duration::from_millis(700));
    let children: Vec<_> = (0..20)
        .map(|_| {
            let mut cmd = s.sandbox.command(&["token", "work"]);
            cmd.stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            cmd.spawn().unwrap()
        })
        .collect();
    let outputs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let mut tokens = std::collections::HashSet::new();
    for out in &outputs {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "stderr: {stderr}");
        assert_eq!(stderr, "");
        tokens.insert(String::from_utf8(out.stdout.clone()).unwrap());
    }
    assert_eq!(s.idp.refresh_count(), 1, "exactly one refresh");
    assert_eq!(tokens.len(), 1, "all print the same token: {tokens:?}");
    let token = tokens.into_iter().next().unwrap();
    assert!(s.idp.is_valid_access_token(token.trim_end()));
    let saved_rt = s.stored()["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(saved_rt, old_rt);
    assert!(
        s.idp.refresh_token_valid(&saved_rt),
        "the saved refresh token works"
    );
}

#[test]
fn an_expired_refresh_token_asks_for_login_with_exit_77() {
    let s = setup();
    s.config("");
    let rt = s.seed_expired();
    s.idp.push_failure(Failure::invalid_grant(700082));
    let run = s.run(&["token", "work"]);
    let line = run.assert_failure(77);
    assert!(line.contains("oauth2-sendmail login work"), "{line}");
    assert!(line.contains("AADSTS700082"), "{line}");
    assert!(
        line.contains("The refresh token has expired due to inactivity."),
        "{line}"
    );
    assert!(!line.contains("Trace ID") && !line.contains('\r'), "{line}");
    assert!(
        line.starts_with("oauth2-sendmail: account work: "),
        "{line}"
    );
    run.assert_never_shows(&rt);
    // The cache is left as it was: `status` can still tell what happened.
    assert_eq!(s.stored()["refresh_token"], rt.as_str());
}

#[test]
fn no_token_at_all_asks_for_login() {
    let s = setup();
    s.config("");
    let line = s.run(&["token", "work"]).assert_failure(77).to_owned();
    assert!(
        line.contains("no token stored") && line.contains("oauth2-sendmail login work"),
        "{line}"
    );
    assert_eq!(s.idp.requests().len(), 0);
}

#[test]
fn an_unavailable_idp_is_a_tempfail_75() {
    let s = setup();
    s.config("");
    let rt = s.seed_expired();
    for failure in [
        Failure::Status(503),
        Failure::Status(429),
        Failure::temporarily_unavailable(),
    ] {
        s.idp.push_failure(failure.clone());
        let run = s.run(&["token", "work"]);
        let line = run.assert_failure(75);
        assert!(
            line.contains("token service unreachable") && line.contains("try again later"),
            "{failure:?}: {line}"
        );
        run.assert_never_shows(&rt);
    }
    // Nothing listens: a connection failure is temporary too.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    s.config_with_url(
        &format!("https://127.0.0.1:{port}/contoso/oauth2/v2.0/token"),
        "",
    );
    let line = s.run(&["token", "work"]).assert_failure(75).to_owned();
    assert!(line.contains("try again later"), "{line}");
}

#[test]
fn a_wrong_client_secret_is_a_config_error_78() {
    let s = setup();
    s.config("client_secret = \"wrong-secret-value\"\n");
    s.idp
        .register_client_secret(CLIENT_ID, "right-secret-value");
    let rt = s.seed_expired();
    let run = s.run(&["token", "work"]);
    let line = run.assert_failure(78);
    assert!(
        line.contains("AADSTS7000215") && line.contains("client_secret"),
        "{line}"
    );
    run.assert_never_shows("wrong-secret-value");
    run.assert_never_shows(&rt);
    assert_eq!(
        s.idp.requests()[0].field("client_secret"),
        Some("wrong-secret-value")
    );
}

#[test]
fn client_credentials_with_a_secret_command() {
    let s = setup();
    s.config(
        "flow = \"client-credentials\"\nclient_secret_cmd = [\"printf\", \"app-secret-42\\n\"]\n",
    );
    s.idp.register_client_secret(CLIENT_ID, "app-secret-42");
    let run = s.run(&["token", "work"]);
    let token = printed(&run).to_owned();
    assert!(s.idp.is_valid_access_token(&token));
    let req = &s.idp.requests()[0];
    assert_eq!(req.grant_type(), "client_credentials");
    assert_eq!(req.field("client_secret"), Some("app-secret-42"));
    assert_eq!(
        req.field("scope"),
        Some("https://outlook.office365.com/.default")
    );
    let stored = s.stored();
    assert_eq!(stored["access_token"], token.as_str());
    assert!(
        stored.get("refresh_token").is_none(),
        "app-only tokens have no refresh token"
    );

    // Expired: a new client-credentials grant, not a login.
    s.seed(&json!({"access_token": token, "expires_at": now() - 1}));
    let again = printed(&s.run(&["token", "work"])).to_owned();
    assert_ne!(again, token);
    assert_eq!(s.idp.requests()[1].grant_type(), "client_credentials");

    // The secret command's exit status is checked.
    s.config("flow = \"client-credentials\"\nclient_secret_cmd = \"sh -c 'echo leaked-secret; exit 3'\"\n");
    s.seed(&json!({"access_token": "at-x", "expires_at": 0}));
    let run = s.run(&["token", "work"]);
    let line = run.assert_failure(78);
    assert!(line.contains("client_secret_cmd"), "{line}");
    run.assert_never_shows("leaked-secret");
    assert_eq!(s.idp.requests().len(), 2, "no request without the secret");
}

#[test]
fn password_flow_renews_without_a_refresh_token() {
    let s = setup();
    s.config("flow = \"password\"\npassword_cmd = [\"echo\", \"hunter2-pass\"]\n");
    s.idp.add_user("alice@contoso.com", "hunter2-pass");
    let run = s.run(&["token", "work"]);
    let token = printed(&run).to_owned();
    let req = &s.idp.requests()[0];
    assert_eq!(req.grant_type(), "password");
    assert_eq!(req.field("username"), Some("alice@contoso.com"));
    assert_eq!(req.field("password"), Some("hunter2-pass"));
    assert!(s.idp.is_valid_access_token(&token));
    assert!(s.stored()["refresh_token"].is_string());

    // A dead refresh token: the password grant takes over.
    s.idp.revoke_refresh_tokens();
    s.seed(&json!({"access_token": token, "expires_at": 0, "refresh_token": "rt-dead"}));
    printed(&s.run(&["token", "work"]));
    let grants: Vec<String> = s
        .idp
        .requests()
        .iter()
        .map(|r| r.grant_type().to_owned())
        .collect();
    assert_eq!(grants, ["password", "refresh_token", "password"]);

    // A wrong password: a config problem (fix password_cmd), and never shown.
    s.config("flow = \"password\"\npassword_cmd = [\"echo\", \"wrong-pass-9\"]\n");
    s.seed(&json!({"access_token": "at-x", "expires_at": 0}));
    let run = s.run(&["token", "work"]);
    let line = run.assert_failure(78);
    assert!(line.contains("AADSTS50126"), "{line}");
    run.assert_never_shows("wrong-pass-9");
}

#[test]
fn china_v1_sends_resource_and_reads_string_numbers() {
    let s = setup();
    s.sandbox.write_config(&format!(
        "[accounts.work]\nprovider = \"microsoft-china\"\nemail = \"bob@contoso.partner.onmschina.cn\"\n\
         client_id = \"{CLIENT_ID}\"\nresource = \"https://partner.outlook.cn\"\n\
         token_url = \"{}\"\ntls_ca_file = \"{}\"\n",
        s.idp.token_url_v1("contoso.partner.onmschina.cn"),
        s.ca_file.display()
    ));
    s.idp.set_expires_in(ExpiresIn::Usual(1800));
    s.seed_expired();
    let token = printed(&s.run(&["token", "work"])).to_owned();
    let req = &s.idp.requests()[0];
    assert_eq!(req.path, "/contoso.partner.onmschina.cn/oauth2/token");
    assert_eq!(req.field("resource"), Some("https://partner.outlook.cn"));
    assert_eq!(req.field("scope"), None, "v1 takes resource, not scope");
    let stored = s.stored();
    assert_eq!(stored["access_token"], token.as_str());
    let expires_at = stored["expires_at"].as_u64().unwrap();
    assert!(
        (now() + 1700..=now() + 1800).contains(&expires_at),
        "\"1800\" was read: {expires_at}"
    );
}

#[test]
fn a_missing_expires_in_means_an_hour_and_an_unrotated_refresh_token_is_kept() {
    let s = setup();
    s.config("");
    s.idp.set_expires_in(ExpiresIn::Missing);
    s.idp.set_omit_refresh_token_on_refresh(true);
    let rt = s.seed_expired();
    printed(&s.run(&["token", "work"]));
    let stored = s.stored();
    assert_eq!(stored["refresh_token"], rt.as_str());
    let expires_at = stored["expires_at"].as_u64().unwrap();
    assert!(
        (now() + 3500..=now() + 3600).contains(&expires_at),
        "{expires_at}"
    );
}

#[test]
fn a_plain_http_token_url_is_refused() {
    let s = setup();
    s.config_with_url("http://127.0.0.1:9/contoso/oauth2/v2.0/token", "");
    let rt = s.seed_expired();
    let run = s.run(&["token", "work"]);
    let line = run.assert_failure(78);
    assert!(line.contains("https"), "{line}");
    run.assert_never_shows(&rt);
}

#[test]
fn an_untrusted_certificate_gets_no_token_request() {
    let s = setup();
    // Without tls_ca_file, the fake's private CA is not trusted.
    s.sandbox.write_config(&format!(
        "[accounts.work]\nprovider = \"microsoft\"\nemail = \"alice@contoso.com\"\ntoken_url = \"{}\"\n",
        s.idp.token_url_v2("contoso")
    ));
    s.seed_expired();
    // A certificate that does not verify does not clear by itself: 76, not "try again".
    let run = s.run(&["token", "work"]);
    let line = run.assert_failure(76);
    assert!(line.contains("certificate of the token service"), "{line}");
    assert_eq!(
        s.idp.requests().len(),
        0,
        "nothing was sent to an unverified server"
    );
}

#[test]
fn an_encrypted_cache_goes_through_the_commands() {
    let s = setup();
    s.config("token_encrypt_cmd = [\"base64\"]\ntoken_decrypt_cmd = [\"base64\", \"-d\"]\n");
    let rt = s.idp.issue_refresh_token();
    let plain = serde_json::to_vec(
        &json!({"access_token": "at-old", "expires_at": 0, "refresh_token": rt}),
    )
    .unwrap();
    let file = s.sandbox.token_file("work");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, base64_encode(&plain)).unwrap();
    let token = printed(&s.run(&["token", "work"])).to_owned();
    let raw = std::fs::read_to_string(&file).unwrap();
    assert!(
        !raw.contains("access_token"),
        "the file holds the command's output"
    );
    let decoded = std::process::Command::new("base64")
        .arg("-d")
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .unwrap();
    let stored: Value = serde_json::from_slice(&decoded.stdout).unwrap();
    assert_eq!(stored["access_token"], token.as_str());
    assert_eq!(mode(&file), 0o600);
    // And it reads back through the decrypt command.
    assert_eq!(printed(&s.run(&["token", "work"])), token);
    assert_eq!(s.idp.refresh_count(), 1);
}

fn base64_encode(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new("base64")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    child.wait_with_output().unwrap().stdout
}

#[test]
fn status_shows_validity_but_no_secret_and_logout_deletes() {
    let s = setup();
    s.config("client_secret = \"status-secret-7\"\n");
    let rt = s.idp.issue_refresh_token();
    s.seed(&json!({"access_token": "at-status-1", "expires_at": now() + 3000, "refresh_token": rt, "obtained_at": now()}));
    let run = s.run(&["status", "work"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("valid until"), "{}", run.stdout);
    assert!(
        run.stdout.contains("refresh token: present"),
        "{}",
        run.stdout
    );
    for secret in ["at-status-1", rt.as_str(), "status-secret-7"] {
        run.assert_never_shows(secret);
    }

    let run = s.run(&["logout", "work"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!s.sandbox.token_file("work").exists());
    let run = s.run(&["status", "work"]);
    assert!(run.stdout.contains("needs login"), "{}", run.stdout);
    s.run(&["token", "work"]).assert_failure(77);
    assert_eq!(s.idp.requests().len(), 0);
}

#[test]
fn a_refresh_asks_for_the_scopes_that_were_granted_never_more() {
    let s = setup();
    s.config("");
    // As a standard OpenID provider (oidc-provider) does: more than granted is invalid_scope.
    s.idp.set_strict_refresh_scopes(true);
    let granted = "https://outlook.office.com/SMTP.Send offline_access";
    let rt = s.idp.issue_refresh_token_for(granted);
    s.seed(&json!({
        "access_token": "at-stale-0",
        "expires_at": now() - 10,
        "refresh_token": rt,
        "scope": granted,
    }));
    let run = s.run(&["token", "work"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(s.idp.requests()[0].field("scope"), Some(granted));
    // The answer's scope is kept for the next refresh, which also works.
    assert_eq!(s.stored()["scope"], granted);
    s.seed(&json!({
        "access_token": "at-stale-1",
        "expires_at": now() - 10,
        "refresh_token": s.stored()["refresh_token"],
        "scope": granted,
    }));
    assert_eq!(s.run(&["token", "work"]).code, 0);
}

#[test]
fn the_strict_fake_refuses_a_refresh_asking_for_more_than_was_granted() {
    let s = setup();
    s.config("");
    s.idp.set_strict_refresh_scopes(true);
    let rt = s
        .idp
        .issue_refresh_token_for("https://outlook.office.com/SMTP.Send");
    // A cache that claims more than was granted: the fake says invalid_scope, as
    // oidc-provider does.
    s.seed(&json!({
        "access_token": "at-stale-0",
        "expires_at": now() - 10,
        "refresh_token": rt,
        "scope": "https://outlook.office.com/SMTP.Send https://outlook.office.com/IMAP.AccessAsUser.All",
    }));
    let run = s.run(&["token", "work"]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("invalid_scope") || run.stderr.contains("70011"),
        "{}",
        run.stderr
    );
}
