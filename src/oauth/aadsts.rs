//! Microsoft's AADSTS error codes and the identity platform's error JSON (`error`,
//! `error_codes`; see the AADSTS reference linked from `docs/provider-quirks.md`): which
//! kind of failure an answer is ([`TokenClass`]), and the one-line message with the next
//! step. Classified on `error` and `error_codes`, never on the wording of
//! `error_description`; the AADSTS number and the first sentence of the description only
//! go into the message.

// AADSTS codes are identifiers, written as Microsoft prints them (`AADSTS700082`) so that
// a search for one finds it here.
#![allow(clippy::unreadable_literal)]

use std::fmt::Write as _;

use serde::Deserialize;

use crate::error::{Error, TokenClass};

/// Longest error description kept in a message: one readable line, not a page.
const MAX_DESCRIPTION: usize = 200;

/// The error body (RFC 6749 §5.2 plus Microsoft's `error_codes`).
#[derive(Debug, Default, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub error_description: Option<String>,
    #[serde(default)]
    pub error_codes: Vec<u64>,
}

/// AADSTS codes that a new interactive sign-in resolves.
const RELOGIN_CODES: &[u64] = &[
    70008,  // refresh token or code expired or revoked
    700082, // refresh token expired after 90 days of inactivity
    70043,  // refresh token invalid under a Conditional Access sign-in frequency
    50173,  // grant revoked (password change)
    50132,  // session invalid after a password change
    50133,  // session invalid after a password change
    50076,  // MFA required
    50079,  // MFA enrollment required
    50072,  // MFA enrollment required
    50074,  // strong authentication required
    65001,  // consent not yet given
    65004,  // the user declined consent
    54005,  // authorization code already redeemed
    70019,  // device code expired
];

/// AADSTS codes that only a change of app registration, config or tenant policy resolves.
const CONFIG_CODES: &[(u64, &str)] = &[
    (
        7000215,
        "the client secret is wrong: check client_secret / client_secret_cmd",
    ),
    (
        7000222,
        "the client secret has expired: create a new one in the app registration",
    ),
    (
        7000218,
        "the app needs a client secret, or \"Allow public client flows\" turned on",
    ),
    (
        700025,
        "this is a public client: remove client_secret / client_secret_cmd",
    ),
    (
        700016,
        "no app with this client_id in the tenant: check client_id and tenant",
    ),
    (
        7000112,
        "the app is disabled (Microsoft or an administrator turned it off): use another client_id",
    ),
    (70001, "the app is disabled or unknown in this tenant"),
    (
        50011,
        "the redirect URI is not registered for this app: set redirect_uri to one it has \
         (Thunderbird's client id takes \"http://127.0.0.1\", the default, and \"https://localhost\", \
         then paste the address the browser ends at)",
    ),
    (
        50020,
        "this account is not in the tenant, or is a personal account the app does not take: \
         check tenant (\"consumers\" for personal accounts, your tenant for work accounts)",
    ),
    (16000, "this user is not in the tenant: check tenant"),
    (
        50194,
        "the app is single-tenant: set tenant to its tenant id",
    ),
    (
        9002331,
        "the app only accepts personal accounts: use tenant = \"consumers\"",
    ),
    (
        9002332,
        "the app does not accept personal accounts: do not use tenant = \"consumers\"",
    ),
    (70011, "a scope is invalid: check scopes"),
    (
        700022,
        "the scopes name more than one resource: check scopes",
    ),
    (28002, "a scope is invalid: check scopes"),
    (
        500011,
        "the resource of a scope does not exist in the tenant: check scopes",
    ),
    (90002, "the tenant does not exist: check tenant"),
    (
        90038,
        "the tenant is in another national cloud: check provider",
    ),
    (
        9001023,
        "this grant is not allowed on common/consumers: set tenant to your tenant",
    ),
    (
        90027,
        "v1 endpoints do not serve personal accounts: remove resource (use v2) or use a work account",
    ),
    (
        901002,
        "v2 endpoints do not accept `resource`: remove resource or use a v1 token_url",
    ),
    (
        700084,
        "the redirect URI is registered as a single-page app: register it as mobile/desktop",
    ),
    (90094, "an administrator must consent to this app"),
    (90095, "an administrator must consent to this app"),
    (
        53003,
        "blocked by Conditional Access: ask your administrator, or try another flow \
         (tenants often block device code sign-in)",
    ),
    (
        53000,
        "the device is not compliant with the tenant's policy: ask your administrator",
    ),
    (
        53001,
        "the device is not joined as the tenant's policy requires: ask your administrator",
    ),
    (
        530032,
        "blocked by the tenant's security policy: ask your administrator",
    ),
    (
        530035,
        "blocked by security defaults: ask your administrator",
    ),
    (
        50126,
        "bad user name or password: check email and password_cmd",
    ),
];

/// AADSTS codes that mean "back off and try later".
const TRANSIENT_CODES: &[u64] = &[
    50196, // loop detected: too many requests in a short time
    90055, // the tenant is throttled
];

/// Which kind of failure a token-endpoint answer is. `status` is the HTTP status.
#[must_use]
pub fn classify(status: u16, body: &ErrorBody) -> TokenClass {
    let codes = &body.error_codes;
    if codes.iter().any(|c| RELOGIN_CODES.contains(c)) {
        return TokenClass::NeedsLogin;
    }
    if codes
        .iter()
        .any(|c| CONFIG_CODES.iter().any(|(k, _)| k == c))
    {
        return TokenClass::Config;
    }
    if codes.iter().any(|c| TRANSIENT_CODES.contains(c)) {
        return TokenClass::Transient;
    }
    match body.error.as_str() {
        "temporarily_unavailable" | "server_error" | "slow_down" => TokenClass::Transient,
        "invalid_grant"
        | "interaction_required"
        | "login_required"
        | "consent_required"
        | "expired_token"
        | "access_denied" => TokenClass::NeedsLogin,
        "invalid_client"
        | "unauthorized_client"
        | "invalid_scope"
        | "invalid_request"
        | "unsupported_grant_type"
        | "invalid_resource" => TokenClass::Config,
        _ if status == 408 || status == 429 || status >= 500 => TokenClass::Transient,
        _ => TokenClass::Config,
    }
}

/// The first sentence of a description, on one line, without the `AADSTSnnn: ` prefix and
/// the Trace/Correlation ID lines.
#[must_use]
pub fn first_sentence(description: &str) -> String {
    let line = description.split(['\r', '\n']).next().unwrap_or("").trim();
    let line = match line.strip_prefix("AADSTS") {
        Some(rest) => rest
            .split_once(':')
            .filter(|(n, _)| n.chars().all(|c| c.is_ascii_digit()))
            .map_or(line, |(_, text)| text.trim_start()),
        None => line,
    };
    let end = line.find(". ").map_or(line.len(), |i| i + 1);
    let sentence: String = line[..end]
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if sentence.chars().count() > MAX_DESCRIPTION {
        let cut: String = sentence.chars().take(MAX_DESCRIPTION).collect();
        format!("{cut}…")
    } else {
        sentence
    }
}

/// The one-line error for a refused request. `client_id` only serves the admin-consent URL.
#[must_use]
pub fn refusal(account: &str, url: &str, client_id: &str, status: u16, body: &ErrorBody) -> Error {
    let class = classify(status, body);
    let said = what_was_said(status, body);
    let detail = match class {
        TokenClass::Transient => {
            format!("token service unreachable ({url}: {said}); try again later")
        }
        TokenClass::NeedsLogin => {
            let next = relogin_hint(account, url, client_id, &body.error_codes);
            format!("the token service wants a new sign-in ({said}): {next}")
        }
        TokenClass::Config => {
            let why = body
                .error_codes
                .iter()
                .find_map(|c| CONFIG_CODES.iter().find(|(k, _)| k == c))
                .map_or_else(
                    || match body.error.as_str() {
                        "invalid_client" => "check client_id and client_secret",
                        "unauthorized_client" => {
                            "the app may not use this grant: check the app registration and flow"
                        }
                        "invalid_scope" => "check scopes",
                        _ => "check the account's token_url, client_id, tenant and scopes",
                    },
                    |(_, why)| why,
                );
            format!("the token service refused the request ({said}): {why}")
        }
    };
    Error::token(class, detail)
}

/// `HTTP 400 invalid_grant, AADSTS700082: The refresh token has expired…`: the server's
/// own words, cut to one line.
fn what_was_said(status: u16, body: &ErrorBody) -> String {
    let mut said = if body.error.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status} {}", body.error.escape_debug())
    };
    if let Some(code) = body.error_codes.first() {
        let _ = write!(said, ", AADSTS{code}");
    }
    if let Some(text) = body.error_description.as_deref().map(first_sentence)
        && !text.is_empty()
    {
        let _ = write!(said, ": {text}");
    }
    said
}

/// AADSTS codes for multi-factor authentication: only an interactive flow can satisfy them.
const MFA_CODES: &[u64] = &[50076, 50079, 50072, 50074];
/// AADSTS65001: nobody has consented to the app in this tenant yet.
const CONSENT_CODE: u64 = 65001;

/// What to do when a new sign-in is wanted; some codes need more than `login`.
fn relogin_hint(account: &str, url: &str, client_id: &str, codes: &[u64]) -> String {
    let login = format!("`oauth2-sendmail login {account}`");
    if codes.contains(&CONSENT_CODE) {
        return match admin_consent_url(url, client_id) {
            Some(consent) => format!(
                "the app has no consent in this tenant: sign in with {login} and accept, or ask \
                 your administrator to grant consent at {consent}"
            ),
            None => format!(
                "the app has no consent: sign in with {login} and accept, or ask your administrator"
            ),
        };
    }
    if codes.iter().any(|c| MFA_CODES.contains(c)) {
        return format!(
            "multi-factor authentication is required: run {login} with the authcode or devicecode \
             flow (the password flow cannot do it)"
        );
    }
    format!("run {login}")
}

/// `https://login.microsoftonline.com/{tenant}/adminconsent?client_id=…`, from the token URL's
/// authority (everything before `/oauth2/`); `None` when the URL has no such shape.
#[must_use]
pub fn admin_consent_url(token_url: &str, client_id: &str) -> Option<String> {
    let authority = &token_url[..token_url.find("/oauth2/")?];
    if client_id.is_empty() {
        return None;
    }
    reqwest::Url::parse_with_params(
        &format!("{authority}/adminconsent"),
        [("client_id", client_id)],
    )
    .ok()
    .map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(error: &str, codes: &[u64]) -> ErrorBody {
        ErrorBody {
            error: error.into(),
            error_description: None,
            error_codes: codes.to_vec(),
        }
    }

    #[test]
    fn the_classification_table() {
        use TokenClass::{Config, NeedsLogin, Transient};
        let table: &[(u16, &str, &[u64], TokenClass)] = &[
            (400, "invalid_grant", &[700082], NeedsLogin),
            (400, "invalid_grant", &[70008], NeedsLogin),
            (400, "invalid_grant", &[70043], NeedsLogin),
            (400, "invalid_grant", &[50173], NeedsLogin),
            (400, "interaction_required", &[50076], NeedsLogin),
            (400, "interaction_required", &[50079], NeedsLogin),
            (400, "invalid_grant", &[65001], NeedsLogin),
            (400, "invalid_grant", &[], NeedsLogin),
            (401, "invalid_client", &[7000215], Config),
            (401, "invalid_client", &[7000222], Config),
            (400, "invalid_client", &[7000218], Config),
            (400, "unauthorized_client", &[700016], Config),
            (400, "unauthorized_client", &[7000112], Config),
            (400, "invalid_request", &[50011], Config),
            (400, "invalid_request", &[9002331], Config),
            (400, "invalid_request", &[90002], Config),
            (400, "invalid_request", &[901002], Config),
            // A code beats the generic error: a bad ROPC password is not fixed by `login`.
            (400, "invalid_grant", &[50126], Config),
            (400, "invalid_grant", &[700084], Config),
            (400, "invalid_client", &[], Config),
            (400, "unauthorized_client", &[], Config),
            (400, "invalid_scope", &[70011], Config),
            (400, "", &[], Config),
            (503, "temporarily_unavailable", &[], Transient),
            (400, "temporarily_unavailable", &[], Transient),
            (500, "server_error", &[], Transient),
            (429, "", &[], Transient),
            (408, "", &[], Transient),
            (502, "", &[], Transient),
            (503, "", &[], Transient),
            (400, "invalid_request", &[90055], Transient),
        ];
        for (status, error, codes, class) in table {
            assert_eq!(
                classify(*status, &body(error, codes)),
                *class,
                "{status} {error} {codes:?}"
            );
        }
    }

    #[test]
    fn the_message_is_one_line_with_the_code_and_the_first_sentence() {
        let mut b = body("invalid_grant", &[700082]);
        b.error_description = Some(
            "AADSTS700082: The refresh token has expired due to inactivity. The token was issued on \
             2026-01-01.\r\nTrace ID: abc\r\nCorrelation ID: def\r\nTimestamp: 2026"
                .into(),
        );
        let e = refusal("work", "https://idp/token", "cid", 400, &b);
        assert_eq!(e.exit_code(), 77);
        assert_eq!(
            e.to_string(),
            "the token service wants a new sign-in (HTTP 400 invalid_grant, AADSTS700082: The refresh \
             token has expired due to inactivity.): run `oauth2-sendmail login work`"
        );
        let mut b = body("invalid_client", &[7000215]);
        b.error_description =
            Some("AADSTS7000215: Invalid client secret provided. Ensure…\r\nTrace ID: x".into());
        let line = refusal("w", "https://idp/token", "cid", 401, &b).to_string();
        assert!(
            line.contains("AADSTS7000215: Invalid client secret provided.")
                && line.contains("client_secret"),
            "{line}"
        );
        assert!(!line.contains("Trace") && !line.contains('\n'));
        let line = refusal("w", "https://idp/token", "cid", 503, &ErrorBody::default()).to_string();
        assert_eq!(
            line,
            "token service unreachable (https://idp/token: HTTP 503); try again later"
        );
    }

    /// The line a user reads for `code`, from the global token endpoint of tenant contoso.
    fn line_for(error: &str, code: u64) -> (u8, String) {
        let e = refusal(
            "work",
            "https://login.microsoftonline.com/contoso/oauth2/v2.0/token",
            "cid-1",
            400,
            &body(error, &[code]),
        );
        (e.exit_code(), e.to_string())
    }

    #[test]
    fn each_class_of_microsoft_error_gets_its_own_next_step() {
        let table: &[(&str, u64, u8, &[&str])] = &[
            (
                "invalid_grant",
                65001,
                77,
                &[
                    "AADSTS65001",
                    "ask your administrator",
                    "https://login.microsoftonline.com/contoso/adminconsent?client_id=cid-1",
                    "oauth2-sendmail login work",
                ],
            ),
            (
                "invalid_grant",
                53003,
                78,
                &["Conditional Access", "administrator", "another flow"],
            ),
            (
                "invalid_request",
                50020,
                78,
                &["not in the tenant", "consumers"],
            ),
            ("invalid_request", 9002331, 78, &["tenant = \"consumers\""]),
            (
                "invalid_request",
                90027,
                78,
                &["v1", "personal", "resource"],
            ),
            (
                "invalid_request",
                50011,
                78,
                &[
                    "redirect_uri",
                    "\"http://127.0.0.1\"",
                    "\"https://localhost\"",
                ],
            ),
            (
                "unauthorized_client",
                7000112,
                78,
                &["disabled", "client_id"],
            ),
            (
                "invalid_client",
                7000218,
                78,
                &["Allow public client flows", "client secret"],
            ),
            (
                "interaction_required",
                50076,
                77,
                &["multi-factor", "oauth2-sendmail login work", "authcode"],
            ),
            (
                "invalid_grant",
                700082,
                77,
                &["run `oauth2-sendmail login work`"],
            ),
            (
                "invalid_grant",
                70008,
                77,
                &["run `oauth2-sendmail login work`"],
            ),
        ];
        for (error, code, exit, needles) in table {
            let (got, line) = line_for(error, *code);
            assert_eq!(got, *exit, "{code}: {line}");
            assert!(line.contains(&format!("AADSTS{code}")), "{line}");
            assert!(!line.contains('\n'), "{line}");
            for needle in *needles {
                assert!(
                    line.contains(needle),
                    "{code}: `{needle}` missing in: {line}"
                );
            }
        }
    }

    #[test]
    fn admin_consent_url_from_the_token_url() {
        assert_eq!(
            admin_consent_url(
                "https://login.partner.microsoftonline.cn/x.onmschina.cn/oauth2/token",
                "a b"
            )
            .as_deref(),
            Some(
                "https://login.partner.microsoftonline.cn/x.onmschina.cn/adminconsent?client_id=a+b"
            )
        );
        assert_eq!(
            admin_consent_url("https://oauth2.googleapis.com/token", "c"),
            None
        );
        assert_eq!(
            admin_consent_url(
                "https://login.microsoftonline.com/common/oauth2/v2.0/token",
                ""
            ),
            None
        );
    }

    #[test]
    fn first_sentence_cuts_prefix_lines_and_length() {
        assert_eq!(
            first_sentence("AADSTS50011: The redirect URI 'x' does not match. More."),
            "The redirect URI 'x' does not match."
        );
        assert_eq!(
            first_sentence("plain text without period"),
            "plain text without period"
        );
        assert_eq!(first_sentence("\r\nTrace ID: x"), "");
        assert!(first_sentence(&"a".repeat(500)).chars().count() <= MAX_DESCRIPTION + 1);
        assert_eq!(first_sentence("tab\there"), "tab here");
    }
}
