//! Migrating from `mutt_oauth2.py` (or any tool with a refresh token) through the real binary:
//! a gpg-encrypted token file is refused with the pipe that decrypts it, a token of another
//! client says to set `client_id`, and a token file that names its `client_id` is redeemed
//! with it and the config keeps it.

// AADSTS codes are identifiers, written as Microsoft prints them.
#![allow(clippy::unreadable_literal)]

use serde_json::json;

use super::fake_idp::Failure;
use super::setup::{Setup, setup};

/// Account `work` on the fake identity platform, its provider left to the address;
/// `client_id` only when given.
fn world(client_id: Option<&str>) -> Setup {
    let w = setup();
    w.account()
        .top("# migrated from mutt_oauth2.py")
        .provider(None)
        .client_id(client_id)
        .write();
    w
}

#[test]
fn a_gpg_encrypted_token_file_is_refused_with_the_pipe_that_decrypts_it() {
    let w = world(Some("11111111-2222-3333-4444-555555555555"));
    // gpg's binary output starts with a public-key session key packet; -a gives armour.
    let binary = w.sandbox.path().join("token.gpg");
    std::fs::write(&binary, [0x85, 0x01, 0x0c, 0x03, 0xde, 0xad, 0xbe, 0xef]).unwrap();
    let armoured = w.sandbox.write_file(
        "token.asc",
        "-----BEGIN PGP MESSAGE-----\n\nhQEMA1234\n-----END PGP MESSAGE-----\n",
    );
    for file in [&binary, &armoured] {
        let path = file.to_str().unwrap();
        let run = w
            .sandbox
            .run(&["login", "work", "--import-refresh-token", path], b"");
        let line = run.assert_failure(65);
        assert!(
            line.contains(&format!(
                "`gpg -d {path} | oauth2-sendmail login work --import-refresh-token -`"
            )),
            "{line}"
        );
    }
    let run = w.sandbox.run(
        &["login", "work", "--import-refresh-token", "-"],
        b"-----BEGIN PGP MESSAGE-----\n\nhQEMA\n",
    );
    assert!(run.assert_failure(65).contains("decrypt it first"));
    assert!(w.idp.requests().is_empty(), "nothing was sent");
    assert!(!w.sandbox.token_file("work").exists());
}

#[test]
fn a_refresh_token_of_another_client_says_to_set_client_id() {
    let w = world(None);
    w.idp.push_failure(Failure::invalid_grant(70000));
    let rt = w.idp.issue_refresh_token();
    let run = w.sandbox.run(
        &["login", "work", "--import-refresh-token", "-"],
        format!("{rt}\n").as_bytes(),
    );
    let line = run.assert_failure(78);
    assert!(line.contains("AADSTS70000"), "{line}");
    assert!(
        line.contains("issued to another client id: set client_id in [accounts.work]"),
        "{line}"
    );
    run.assert_never_shows(&rt);
    assert!(!w.sandbox.token_file("work").exists());
}

#[test]
fn the_client_id_in_a_token_file_is_used_and_kept_in_the_config() {
    let w = world(None);
    let rt = w.idp.issue_refresh_token();
    let file = w.sandbox.write_file(
        "mutt.json",
        &json!({"registration": "microsoft", "authflow": "authcode",
            "email": "alice@contoso.com", "client_id": "aaaaaaaa-0000-1111-2222-bbbbbbbbbbbb",
            "access_token": "", "access_token_expiration": "", "refresh_token": rt})
        .to_string(),
    );
    let before =
        std::fs::read_to_string(w.sandbox.path().join("config/oauth2-sendmail/config.toml"))
            .unwrap();
    let run = w.sandbox.run(
        &[
            "login",
            "work",
            "--import-refresh-token",
            file.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    run.assert_never_shows(&rt);
    assert!(
        run.stderr
            .contains("client_id = \"aaaaaaaa-0000-1111-2222-bbbbbbbbbbbb\" from the token file"),
        "{}",
        run.stderr
    );
    let redeem = &w.idp.requests()[0];
    assert_eq!(
        redeem.field("client_id"),
        Some("aaaaaaaa-0000-1111-2222-bbbbbbbbbbbb")
    );
    let after =
        std::fs::read_to_string(w.sandbox.path().join("config/oauth2-sendmail/config.toml"))
            .unwrap();
    assert!(
        after.starts_with("# migrated from mutt_oauth2.py\n[accounts.work]\n"),
        "{after}"
    );
    assert!(
        after.contains("client_id = \"aaaaaaaa-0000-1111-2222-bbbbbbbbbbbb\"\n"),
        "{after}"
    );
    assert_eq!(
        after.len(),
        before.len() + "client_id = \"aaaaaaaa-0000-1111-2222-bbbbbbbbbbbb\"\n".len()
    );
    // The stored token serves `token`.
    let token = w.sandbox.run(&["token", "work"], b"");
    assert_eq!(token.code, 0, "{}", token.stderr);
}
