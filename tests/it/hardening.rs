//! Regression tests for issue 10 (hardening): every peer bounded, every secret scrubbed,
//! every folder checked. Each test is named after the behaviour it pins down; all run the
//! real binary against the fakes on 127.0.0.1.

// AADSTS codes are identifiers, written as Microsoft prints them.
#![allow(clippy::unreadable_literal)]

use std::path::PathBuf;

use serde_json::{Value, json};

use super::fake_idp::{Failure, FakeIdp};
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
    /// A Microsoft account `work` whose token endpoint is the fake's v2 one; `top` goes before
    /// the account table, `extra` inside it.
    fn config(&self, top: &str, extra: &str) {
        self.sandbox.write_config(&format!(
            "{top}\n[accounts.work]\nprovider = \"microsoft\"\nemail = \"alice@contoso.com\"\n\
             client_id = \"{CLIENT_ID}\"\ntoken_url = \"{}\"\ndevice_code_url = \"{}\"\n\
             tls_ca_file = \"{}\"\n{extra}",
            self.idp.token_url_v2("contoso"),
            self.idp.device_code_url_v2("contoso"),
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
}

// 1. Unbounded token-endpoint answers.

#[test]
fn an_endless_token_answer_is_cut_at_the_body_limit_with_exit_75() {
    let s = setup();
    s.config("", "");
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
    s.config("", "flow = \"devicecode\"\n");
    s.idp.set_failure(Some(Failure::Endless));
    let run = s.run(&["login", "work", "--no-browser"]);
    let line = run.assert_failure(75);
    assert!(line.contains("larger than 1048576 bytes"), "{line}");
}
