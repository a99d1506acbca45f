//! `status --json`: one JSON object on stdout with every fact `status` prints, parsed
//! field by field for a healthy account, one needing a login, one whose refresh token
//! nears the 90 days Microsoft keeps an unused one (with `notify_cmd` told once), and
//! Graph accounts (delegated and app-only); the same exit codes as `status`.

use serde_json::{Value, json};

use super::fake_idp::{Failure, FakeIdp};
use super::support::{Run, Sandbox, TestCa, now};

const DAY: u64 = 86_400;

/// A sandbox with a token endpoint; accounts are written by each test.
struct World {
    sandbox: Sandbox,
    idp: FakeIdp,
    ca_file: std::path::PathBuf,
}

impl World {
    fn new() -> World {
        let ca = TestCa::new();
        let idp = FakeIdp::start(&ca);
        let sandbox = Sandbox::new();
        let ca_file = sandbox.write_file("ca.pem", &ca.ca_pem);
        World {
            sandbox,
            idp,
            ca_file,
        }
    }

    /// `[accounts.NAME]` on the fake token endpoint, with `extra` lines.
    fn account(&self, name: &str, extra: &str) -> String {
        format!(
            "[accounts.{name}]\nprovider = \"microsoft\"\nemail = \"{name}@contoso.com\"\n\
             client_id = \"11111111-2222-3333-4444-555555555555\"\ntoken_url = \"{}\"\n\
             smtp_host = \"127.0.0.1\"\nsmtp_port = 2587\ntls_ca_file = \"{}\"\n\
             notify_cmd = [\"sh\", \"-c\", \"env >> '{}'\"]\n{extra}\n",
            self.idp.token_url_v2("contoso"),
            self.ca_file.display(),
            self.notified().display()
        )
    }

    fn notified(&self) -> std::path::PathBuf {
        self.sandbox.path().join("notified.env")
    }

    /// A token cache as a login left it `days` ago (refresh token last used then).
    fn seed(&self, name: &str, days: u64, identity: &str) -> (String, String) {
        let (at, rt) = (
            self.idp.issue_access_token(),
            self.idp.issue_refresh_token(),
        );
        self.sandbox.seed_token(
            name,
            &json!({"access_token": at, "expires_at": now() + 3000, "refresh_token": rt,
                    "obtained_at": now() - days * DAY, "identity": identity}),
        );
        (at, rt)
    }

    fn status(&self, args: &[&str]) -> (Run, Value) {
        let mut all = vec!["status", "--json"];
        all.extend_from_slice(args);
        let run = self.sandbox.run(&all, b"");
        let value: Value = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("stdout is one JSON object ({e}): {run:?}"));
        (run, value)
    }
}

fn rfc3339(v: &Value) -> u64 {
    let s = v.as_str().unwrap_or_else(|| panic!("a time: {v}"));
    // 2026-11-22T23:14:05Z
    assert!(
        s.len() == 20 && s.ends_with('Z') && &s[10..11] == "T",
        "{s}"
    );
    let date: Vec<u64> = s[..10].split('-').map(|p| p.parse().unwrap()).collect();
    let time: Vec<u64> = s[11..19].split(':').map(|p| p.parse().unwrap()).collect();
    let days = days_from_civil(date[0], date[1], date[2]);
    days * DAY + time[0] * 3600 + time[1] * 60 + time[2]
}

/// Howard Hinnant's `days_from_civil`, for years after 1970.
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn near(got: u64, want: u64) {
    assert!(got.abs_diff(want) <= 5, "{got} is not about {want}");
}

#[test]
fn status_json_describes_a_healthy_account_field_by_field() {
    let w = World::new();
    w.sandbox.write_config(&w.account("work", ""));
    let (at, rt) = w.seed("work", 0, "work@contoso.com");
    // A timer's run: nothing is due, nothing idle; it is remembered.
    w.sandbox.run(&["-q"], b"").assert_silent_success();
    let (run, v) = w.status(&[]);
    assert_eq!((run.code, run.stderr.as_str()), (0, ""), "{run:?}");
    run.assert_never_shows(&at);
    run.assert_never_shows(&rt);
    assert_eq!(v["schema"], 1);
    assert_eq!(v["exit_code"], 0);
    near(rfc3339(&v["generated_at"]), now());
    near(rfc3339(&v["last_timer_run"]), now());
    assert_eq!(v["queue"], json!({"queued": 0, "failed": 0}));
    let a = &v["accounts"][0];
    assert_eq!(v["accounts"].as_array().unwrap().len(), 1);
    assert_eq!(a["name"], "work");
    assert_eq!(a["default"], true);
    assert_eq!(a["configuration_error"], Value::Null);
    assert_eq!(a["can_send"], true);
    assert_eq!(a["needs_login"], false);
    assert_eq!(a["provider"], "microsoft");
    assert_eq!(a["email"], "work@contoso.com");
    assert_eq!(a["user"], "work@contoso.com");
    assert_eq!(a["flow"], "authcode");
    assert_eq!(
        a["server"],
        json!({"host": "127.0.0.1", "port": 2587, "tls": "starttls", "overridden": true})
    );
    assert_eq!(a["last_login_flow"], Value::Null);
    assert_eq!(a["tenant"], "common");
    assert_eq!(a["client_id"], "11111111-2222-3333-4444-555555555555");
    assert_eq!(a["client_id_default"], false);
    assert_eq!(a["endpoints"]["token"]["overridden"], true);
    assert_eq!(
        a["endpoints"]["token"]["url"],
        w.idp.token_url_v2("contoso")
    );
    assert_eq!(a["endpoints"]["authorize"]["overridden"], false);
    assert_eq!(v["log_problem"], Value::Null);
    assert_eq!(a["transport"]["configured"], "smtp");
    assert_eq!(a["transport"]["in_use"], "smtp");
    assert_eq!(a["transport"]["graph_url"], Value::Null);
    assert_eq!(a["token_store"], "file");
    assert_eq!(a["sasl"], "auto");
    assert_eq!(a["proxy"], Value::Null);
    assert_eq!(a["identity"], "work@contoso.com");
    assert_eq!(a["token"]["state"], "valid");
    near(rfc3339(&a["token"]["expires_at"]), now() + 3000);
    near(rfc3339(&a["token"]["last_refresh"]), now());
    assert_eq!(a["token"]["error"], Value::Null);
    let r = &a["refresh_token"];
    assert_eq!(r["present"], true);
    near(rfc3339(&r["last_used"]), now());
    assert_eq!(r["idle_lifetime_days"], 90);
    near(rfc3339(&r["expires_if_unused_at"]), now() + 90 * DAY);
    assert!(matches!(r["days_left"].as_i64(), Some(89 | 90)), "{r}");
    assert_eq!(r["kept_alive_by_timer"], true);
    assert_eq!(a["last_refresh_failure"], Value::Null);
    assert_eq!(a["client_secret"], Value::Null);
    assert_eq!(a["queue"], json!({"queued": 0, "failed": 0}));

    // The text form says the same.
    let text = w.sandbox.run(&["status"], b"");
    assert_eq!(text.code, 0, "{text:?}");
    assert!(
        text.stdout.contains("refresh token expires if unused: 20"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout
            .contains("kept alive by the timer: yes: `-q` last ran "),
        "{}",
        text.stdout
    );
}

#[test]
fn status_json_names_the_accounts_that_need_a_login_and_why_with_exit_77() {
    let w = World::new();
    w.sandbox.write_config(&format!(
        "{}{}",
        w.account("refused", ""),
        w.account("never", "")
    ));
    // An expired access token whose refresh Microsoft refuses.
    w.sandbox.seed_token(
        "refused",
        &json!({"access_token": "at-expired", "expires_at": now() - 10,
                "refresh_token": w.idp.issue_refresh_token(), "obtained_at": now() - 3600}),
    );
    w.idp.set_failure(Some(Failure::invalid_grant(700_082)));
    assert_eq!(w.sandbox.run(&["token", "refused"], b"").code, 77);
    let (run, v) = w.status(&[]);
    assert_eq!(run.code, 77, "{run:?}");
    assert_eq!(v["exit_code"], 77);
    assert_eq!(v["last_timer_run"], Value::Null);
    let refused = &v["accounts"][0];
    assert_eq!(refused["name"], "refused");
    assert_eq!(refused["default"], false);
    assert_eq!(refused["can_send"], false);
    assert_eq!(refused["needs_login"], true);
    assert_eq!(refused["token"]["state"], "needs_login");
    let failure = &refused["last_refresh_failure"];
    assert_eq!(failure["code"], "AADSTS700082");
    near(rfc3339(&failure["since"]), now());
    assert!(
        failure["reason"]
            .as_str()
            .unwrap()
            .contains("oauth2-sendmail login refused"),
        "{failure}"
    );
    assert_eq!(refused["refresh_token"]["kept_alive_by_timer"], false);
    let never = &v["accounts"][1];
    assert_eq!(never["name"], "never");
    assert_eq!(never["needs_login"], true);
    assert_eq!(never["token"]["state"], "none");
    assert_eq!(never["refresh_token"], Value::Null);

    // One account asked for: only it, and its own exit status.
    let (run, v) = w.status(&["never"]);
    assert_eq!(run.code, 77);
    assert_eq!(v["accounts"].as_array().unwrap().len(), 1);

    // A configuration error: 78, said in the account's object.
    let mut config = w.account("refused", "");
    config.push_str("[accounts.broken]\nprovider = \"custom\"\nemail = \"x@example.net\"\n");
    w.sandbox.write_config(&config);
    let (run, v) = w.status(&[]);
    assert_eq!(run.code, 78, "{run:?}");
    assert_eq!(v["exit_code"], 78);
    let broken = &v["accounts"][1];
    assert!(
        broken["configuration_error"]
            .as_str()
            .unwrap()
            .contains("smtp_host"),
        "{broken}"
    );
    assert_eq!(broken["token"], Value::Null);
}

#[test]
fn a_refresh_token_near_its_90_days_is_shown_and_notify_cmd_is_told_once() {
    let w = World::new();
    w.sandbox.write_config(&w.account("old", ""));
    let (_, rt) = w.seed("old", 80, "old@contoso.com");
    let (run, v) = w.status(&[]);
    assert_eq!(run.code, 0, "{run:?}");
    let r = &v["accounts"][0]["refresh_token"];
    near(rfc3339(&r["last_used"]), now() - 80 * DAY);
    near(rfc3339(&r["expires_if_unused_at"]), now() + 10 * DAY);
    assert!(matches!(r["days_left"].as_i64(), Some(9 | 10)), "{r}");
    assert_eq!(r["kept_alive_by_timer"], false);
    let told = super::support::wait_for_line(&w.notified());
    assert!(told.contains("OAUTH2_SENDMAIL_ACCOUNT=old"), "{told}");
    assert!(
        told.contains("has not been used since") && told.contains("oauth2-sendmail -q"),
        "{told}"
    );
    assert!(!told.contains(&rt));
    // Once: a second look tells nobody again.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let before = std::fs::read_to_string(w.notified()).unwrap();
    let text = w.sandbox.run(&["status"], b"");
    assert!(
        text.stdout
            .contains("kept alive by the timer: no: `-q` never ran"),
        "{}",
        text.stdout
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(std::fs::read_to_string(w.notified()).unwrap(), before);
}

#[test]
fn a_token_used_recently_tells_nobody() {
    let w = World::new();
    w.sandbox.write_config(&w.account("fresh", ""));
    w.seed("fresh", 75, "fresh@contoso.com");
    let (run, v) = w.status(&[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(matches!(
        v["accounts"][0]["refresh_token"]["days_left"].as_i64(),
        Some(14 | 15)
    ));
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(!w.notified().exists(), "15 days left is not yet near");
}

#[test]
fn status_json_shows_graph_accounts_and_the_invisible_client_secret_expiry() {
    let w = World::new();
    w.sandbox.write_config(&format!(
        "{}{}",
        w.account(
            "delegated",
            "transport = \"graph\"\ngraph_url = \"https://127.0.0.1:9/\"\n"
        ),
        w.account(
            "app",
            "transport = \"graph\"\nflow = \"client-credentials\"\nclient_secret = \"s3cr3t-value\"\n"
        )
    ));
    w.seed("delegated", 1, "delegated@contoso.com");
    let (run, v) = w.status(&[]);
    assert_eq!(run.code, 0, "{run:?}");
    run.assert_never_shows("s3cr3t-value");
    let delegated = &v["accounts"][0];
    assert_eq!(delegated["transport"]["configured"], "graph");
    assert_eq!(delegated["transport"]["in_use"], "graph");
    assert_eq!(delegated["transport"]["graph_url"], "https://127.0.0.1:9");
    assert_eq!(delegated["client_secret"], Value::Null);
    let app = &v["accounts"][1];
    assert_eq!(app["flow"], "client-credentials");
    assert_eq!(
        app["can_send"], true,
        "app-only gets its token at the first send"
    );
    assert_eq!(app["token"]["state"], "none");
    assert_eq!(app["refresh_token"], Value::Null);
    assert_eq!(app["client_secret"]["expiry_visible"], false);
    assert!(
        app["client_secret"]["where_to_look"]
            .as_str()
            .unwrap()
            .contains("Certificates & secrets"),
        "{app}"
    );
    let text = w.sandbox.run(&["status", "app"], b"");
    assert!(
        text.stdout
            .contains("client secret: its expiry is not visible to oauth2-sendmail"),
        "{}",
        text.stdout
    );
}

#[test]
fn a_q_whose_renewal_keeps_failing_tells_notify_cmd_once_near_the_90_days() {
    let w = World::new();
    w.sandbox.write_config(&w.account("old", ""));
    w.seed("old", 80, "old@contoso.com");
    // The token endpoint is down: the idle renewal fails for a passing reason.
    w.idp.set_failure(Some(Failure::temporarily_unavailable()));
    let run = w.sandbox.run(&["-q"], b"");
    assert_eq!(run.code, 0, "{run:?}");
    let told = super::support::wait_for_line(&w.notified());
    assert!(told.contains("OAUTH2_SENDMAIL_ACCOUNT=old"), "{told}");
    assert!(told.contains("drops it at"), "{told}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let before = std::fs::read_to_string(w.notified()).unwrap();
    // Neither the next -q nor status tells again.
    w.sandbox.run(&["-q"], b"");
    let (_, v) = w.status(&[]);
    // -q runs, but its renewals fail: it keeps nothing alive.
    assert!(v["last_timer_run"].is_string(), "{v}");
    assert_eq!(
        v["accounts"][0]["refresh_token"]["kept_alive_by_timer"],
        false
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(std::fs::read_to_string(w.notified()).unwrap(), before);
}
