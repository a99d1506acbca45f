//! The authorization code flow's local half (RFC 6749 §4.1 with PKCE, RFC 7636; loopback
//! redirect, RFC 8252 §7.3): the verifier and challenge, the `state`, the authorize URL,
//! the browser, and the listener that catches the redirect — or the redirected URL pasted
//! by the user when no listener can be reached (`https://localhost`, another machine).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::error::{Error, Result, TokenClass};
use crate::provider::OAuthSettings;

/// How long a login waits for the browser to come back: long enough to type a password
/// and pass MFA, short enough that a forgotten terminal does not hold the port forever.
pub const LOGIN_TIMEOUT: Duration = Duration::from_mins(5);
/// A redirect request is one short GET line plus headers; anything larger is not a browser
/// coming back from the identity platform (pizauth uses the same bound).
const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// A connection that does not send its request in this time is dropped (e.g. a browser's
/// speculative pre-connect), so it cannot block the real redirect.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept()` (a transient EMFILE) before listening again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// PKCE (S256): the secret verifier and its challenge.
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

fn random_urlsafe(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| Error::internal("the system random generator failed"))?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

impl Pkce {
    pub fn new() -> Result<Pkce> {
        // 32 random bytes → a 43-character verifier, the minimum RFC 7636 allows and plenty.
        let verifier = random_urlsafe(32)?;
        let challenge = challenge_of(&verifier);
        Ok(Pkce {
            verifier,
            challenge,
        })
    }
}

fn challenge_of(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ))
}

/// A fresh random `state`, checked when the browser comes back.
pub fn new_state() -> Result<String> {
    random_urlsafe(16)
}

/// The URL the user opens to sign in.
pub fn authorize_url(
    oauth: &OAuthSettings,
    client_id: &str,
    redirect_uri: &str,
    state: &str,
    pkce: &Pkce,
    login_hint: &str,
) -> Result<String> {
    let mut params: Vec<(&str, String)> = vec![
        ("client_id", client_id.to_owned()),
        ("response_type", "code".to_owned()),
        ("redirect_uri", redirect_uri.to_owned()),
        ("response_mode", "query".to_owned()),
        ("state", state.to_owned()),
        ("code_challenge", pkce.challenge.clone()),
        ("code_challenge_method", "S256".to_owned()),
        ("login_hint", login_hint.to_owned()),
    ];
    if !oauth.scopes.is_empty() {
        // Consent to Graph's scopes too, where the account may send through Graph; the
        // code is redeemed for `scopes` alone.
        let all: Vec<&str> = oauth
            .scopes
            .iter()
            .chain(&oauth.consent_scopes)
            .map(String::as_str)
            .collect();
        params.push(("scope", all.join(" ")));
    }
    if let Some(resource) = &oauth.resource {
        params.push(("resource", resource.clone()));
    }
    for (key, value) in &oauth.authorize_params {
        params.push((key, (*value).to_owned()));
    }
    reqwest::Url::parse_with_params(&oauth.authorize_url, &params)
        .map(String::from)
        .map_err(|e| {
            Error::config(format!(
                "authorize_url `{}` is not a URL: {e}",
                oauth.authorize_url
            ))
        })
}

/// Where the browser will be sent back to, and the listener waiting there (none for an
/// `https` redirect: the user pastes the URL the browser ends at).
pub struct Redirect {
    pub uri: String,
    listener: Option<TcpListener>,
    /// RFC 9207: an `iss` in the redirect must be this issuer (see [`issuer_matches`]).
    issuer: Option<String>,
}

impl Redirect {
    /// Binds 127.0.0.1 on the configured port, or an ephemeral one when none is given
    /// (Microsoft ignores the port when matching loopback redirect URIs).
    pub async fn bind(configured: &str) -> Result<Redirect> {
        let url = reqwest::Url::parse(configured)
            .map_err(|e| Error::config(format!("redirect_uri `{configured}` is not a URL: {e}")))?;
        let host = url.host_str().unwrap_or_default().to_owned();
        if !matches!(host.as_str(), "localhost" | "127.0.0.1") {
            return Err(Error::config(format!(
                "redirect_uri `{configured}` must point at localhost or 127.0.0.1"
            )));
        }
        if url.scheme() == "https" {
            // A browser cannot be given a certificate it trusts for localhost: the user
            // copies the address it ends at instead.
            return Ok(Redirect {
                uri: configured.to_owned(),
                listener: None,
                issuer: None,
            });
        }
        let listener = TcpListener::bind(("127.0.0.1", url.port().unwrap_or(0)))
            .await
            .map_err(|e| {
                Error::io(format!(
                    "cannot listen on 127.0.0.1 for the login redirect: {e}"
                ))
            })?;
        let port = listener
            .local_addr()
            .map_err(|e| Error::io(format!("cannot read the listener's port: {e}")))?
            .port();
        let mut uri = url.clone();
        let _ = uri.set_port(Some(port));
        Ok(Redirect {
            uri: uri.to_string(),
            listener: Some(listener),
            issuer: None,
        })
    }

    /// An `iss` parameter in the redirect (RFC 9207) must name `issuer`.
    #[must_use]
    pub fn expecting_issuer(mut self, issuer: Option<String>) -> Redirect {
        self.issuer = issuer;
        self
    }

    /// The loopback port waiting for the browser; `None` in paste-only mode (`https`).
    #[must_use]
    pub fn port(&self) -> Option<u16> {
        self.listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port())
    }

    /// Waits for the authorization code: from the browser's redirect to the listener, or
    /// from a redirected URL typed or pasted on stdin, whichever comes first.
    pub async fn code(&self, state: &str, timeout: Duration) -> Result<String> {
        let wait = async {
            tokio::select! {
                result = self.wait_on_listener(state), if self.listener.is_some() => result,
                result = from_pasted_url(state, self.issuer.as_deref(), self.listener.is_none()) => result,
            }
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| {
            Error::token(
                TokenClass::NeedsLogin,
                format!(
                    "no sign-in came back within {} s; run the login again",
                    timeout.as_secs()
                ),
            )
        })?
    }

    async fn wait_on_listener(&self, state: &str) -> Result<String> {
        let Some(listener) = &self.listener else {
            return std::future::pending().await;
        };
        // Each connection is read on its own task, so a browser's idle pre-connect cannot
        // hold up the real redirect behind it.
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((mut stream, _)) = accepted else {
                        // EMFILE, ECONNABORTED and the like pass: keep listening, without
                        // spinning while the condition lasts.
                        tokio::time::sleep(ACCEPT_RETRY).await;
                        continue;
                    };
                    let tx = tx.clone();
                    tokio::spawn(async move {
                        let read = tokio::time::timeout(REQUEST_TIMEOUT, read_request_target(&mut stream)).await;
                        if let Ok(Ok(target)) = read {
                            let _ = tx.send((stream, target)).await;
                        }
                    });
                }
                Some((mut stream, target)) = rx.recv() => {
                    let Some((_, query)) = target.split_once('?') else {
                        // favicon.ico and friends: not the redirect.
                        let _ = respond(&mut stream, "404 Not Found", "Not the sign-in redirect.").await;
                        continue;
                    };
                    if !state_matches(query, state) {
                        // Any local program can send a request here: only the redirect of
                        // this login (its state) may end it.
                        let _ = respond(
                            &mut stream,
                            "400 Bad Request",
                            "This is not the redirect of the sign-in oauth2-sendmail is waiting for.",
                        )
                        .await;
                        crate::stderr::line(
                            "a redirect with a wrong or missing state was refused; \
                             still waiting for the sign-in",
                        );
                        continue;
                    }
                    let outcome = code_from_query_from(query, state, self.issuer.as_deref());
                    let page = match &outcome {
                        Ok(_) => "Signed in. oauth2-sendmail has its token; you may close this window.",
                        Err(_) => "Sign-in failed; see the terminal for why. You may close this window.",
                    };
                    let _ = respond(&mut stream, "200 OK", page).await;
                    return outcome;
                }
            }
        }
    }
}

/// Whether a redirect's query carries this login's `state`.
fn state_matches(query: &str, expected: &str) -> bool {
    reqwest::Url::parse(&format!("http://localhost/?{query}"))
        .ok()
        .and_then(|u| {
            u.query_pairs()
                .find(|(k, _)| k == "state")
                .map(|(_, v)| v.into_owned())
        })
        .is_some_and(|got| got == expected)
}

/// Reads lines on stdin until one holds a redirected URL with a code (paste mode). When
/// stdin closes, a listener may still get the redirect, so this waits on; without one
/// (`https` redirects) nothing else can come, so it says so at once.
async fn from_pasted_url(state: &str, issuer: Option<&str>, only_way: bool) -> Result<String> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let line = line.trim();
        if let Some((_, query)) = line.split_once('?') {
            return code_from_query_from(query, state, issuer);
        }
    }
    if only_way {
        return Err(Error::token(
            TokenClass::NeedsLogin,
            "standard input closed before the address the browser ended at was pasted; \
             run the login in a terminal",
        ));
    }
    std::future::pending().await
}

/// Reads one HTTP request head and returns its target (`/path?query`).
async fn read_request_target(stream: &mut tokio::net::TcpStream) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_REQUEST_BYTES {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    match (words.next(), words.next()) {
        (Some("GET"), Some(target)) => Ok(target.to_owned()),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a GET request",
        )),
    }
}

async fn respond(
    stream: &mut tokio::net::TcpStream,
    status: &str,
    text: &str,
) -> std::io::Result<()> {
    let body =
        format!("<!doctype html><meta charset=utf-8><title>oauth2-sendmail</title><p>{text}</p>\n");
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// The code from a redirect's query string, after checking `state` and `error` (no issuer
/// to check: the tests' shorthand for [`code_from_query_from`]).
#[cfg(test)]
pub fn code_from_query(query: &str, expected_state: &str) -> Result<String> {
    code_from_query_from(query, expected_state, None)
}

/// Whether the `iss` of a redirect names the provider's issuer: the same origin (scheme,
/// host, port) as its authorize endpoint, e.g. Google's `https://accounts.google.com`;
/// Microsoft's issuers are `https://login.microsoftonline.com/{tenant id}/v2.0`, below
/// the authority the request went to.
#[must_use]
pub fn issuer_matches(iss: &str, authorize_url: &str) -> bool {
    match (reqwest::Url::parse(iss), reqwest::Url::parse(authorize_url)) {
        (Ok(i), Ok(a)) => i.origin() == a.origin() && i.scheme() == "https",
        _ => false,
    }
}

/// [`code_from_query`], and when the redirect carries `iss` (RFC 9207 §2.4) it must match
/// `issuer` (the authorize endpoint's URL): a mix-up attack sends another provider's code.
pub fn code_from_query_from(
    query: &str,
    expected_state: &str,
    issuer: Option<&str>,
) -> Result<String> {
    if let Some(authorize_url) = issuer
        && let Some(iss) = query_value(query, "iss")
        && !issuer_matches(&iss, authorize_url)
    {
        return Err(Error::token(
            TokenClass::NeedsLogin,
            format!(
                "the redirect names another issuer ({iss}) than this account's provider \
                 (RFC 9207); nothing was stored, run the login again"
            ),
        ));
    }
    code_from_query_checked(query, expected_state)
}

fn query_value(query: &str, key: &str) -> Option<String> {
    reqwest::Url::parse(&format!("http://localhost/?{query}"))
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

fn code_from_query_checked(query: &str, expected_state: &str) -> Result<String> {
    let pairs: Vec<(String, String)> = reqwest::Url::parse(&format!("http://localhost/?{query}"))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default();
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    if let Some(error) = get("error") {
        let description = get("error_description")
            .map(|d| d.lines().next().unwrap_or("").trim().to_owned())
            .unwrap_or_default();
        let hint = if error == "access_denied" {
            "the sign-in was cancelled or consent was refused"
        } else {
            "the identity platform refused the sign-in"
        };
        let after = if description.contains("AADSTS50011") {
            format!("; {}", crate::provider::REDIRECT_HINT)
        } else {
            String::new()
        };
        return Err(Error::token(
            TokenClass::NeedsLogin,
            format!(
                "{hint}: {error}{}{description}{after}",
                if description.is_empty() { "" } else { ": " }
            ),
        ));
    }
    if get("state") != Some(expected_state) {
        return Err(Error::token(
            TokenClass::NeedsLogin,
            "the redirect's state does not match this login (a stale or forged redirect); run the login again",
        ));
    }
    get("code")
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| {
            Error::token(
                TokenClass::NeedsLogin,
                "the redirect carries no authorization code",
            )
        })
}

/// Opens `url` in a browser: the command in `$BROWSER` (as `gh` and Python's webbrowser
/// use it; `%s` is replaced by the URL, else the URL is appended), else the system opener.
pub fn open_browser(url: &str) -> Result<()> {
    if let Some(browser) = std::env::var_os("BROWSER").filter(|b| !b.is_empty()) {
        let browser = browser.to_string_lossy().into_owned();
        // Python's convention: several commands separated by ':'; the first that starts wins.
        for candidate in browser.split(':') {
            let Ok(mut words) = shell_words::split(candidate) else {
                continue;
            };
            if words.is_empty() {
                continue;
            }
            if words.iter().any(|w| w.contains("%s")) {
                words = words.into_iter().map(|w| w.replace("%s", url)).collect();
            } else {
                words.push(url.to_owned());
            }
            let started = std::process::Command::new(&words[0])
                .args(&words[1..])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .spawn();
            if started.is_ok() {
                return Ok(());
            }
        }
        return Err(Error::config(format!(
            "cannot start the browser from $BROWSER (`{browser}`)"
        )));
    }
    // The opener's error names each launcher it tried with the whole URL, in Rust's debug
    // form: the user gets one plain sentence, and the URL once, from the caller.
    open::that_detached(url).map_err(|_| Error::io("no browser could be opened"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_matches_rfc7636_example() {
        // RFC 7636 Appendix B.
        assert_eq!(
            challenge_of("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let p = Pkce::new().unwrap();
        assert_eq!(p.verifier.len(), 43);
        assert_ne!(p.verifier, Pkce::new().unwrap().verifier);
    }

    #[test]
    fn query_checks_state_and_errors() {
        assert_eq!(code_from_query("code=abc&state=s1", "s1").unwrap(), "abc");
        let e = code_from_query("code=abc&state=evil", "s1").unwrap_err();
        assert!(e.to_string().contains("state"));
        let e = code_from_query(
            "error=access_denied&error_description=AADSTS65004%3A+User+declined&state=s1",
            "s1",
        )
        .unwrap_err();
        assert!(e.to_string().contains("access_denied"), "{e}");
        assert_eq!(e.exit_code(), 77);
    }

    #[tokio::test]
    async fn listener_takes_the_redirect_and_answers_a_page() {
        let redirect = Redirect::bind("http://localhost").await.unwrap();
        assert!(
            redirect.uri.starts_with("http://localhost:"),
            "{}",
            redirect.uri
        );
        let port: u16 = redirect
            .uri
            .trim_end_matches('/')
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let browser = tokio::spawn(async move {
            // A pre-connect that says nothing, a favicon request, then the redirect.
            let _idle = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            s.write_all(b"GET /favicon.ico HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            s.write_all(b"GET /?code=the-code&state=st HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .await
                .unwrap();
            let mut page = String::new();
            s.read_to_string(&mut page).await.unwrap();
            page
        });
        let code = redirect.code("st", Duration::from_secs(20)).await.unwrap();
        assert_eq!(code, "the-code");
        let page = browser.await.unwrap();
        assert!(page.starts_with("HTTP/1.1 200 OK") && page.contains("you may close this window"));
    }

    #[test]
    fn authorize_url_carries_pkce_state_and_scopes() {
        let oauth = crate::provider::resolve(
            "w",
            &crate::config::Account {
                email: "a@contoso.com".into(),
                ..Default::default()
            },
        )
        .unwrap()
        .oauth;
        let pkce = Pkce::new().unwrap();
        let url = authorize_url(
            &oauth,
            "cid",
            "http://localhost:1234/",
            "st",
            &pkce,
            "a@contoso.com",
        )
        .unwrap();
        assert!(url.starts_with(
            "https://login.microsoftonline.com/common/oauth2/v2.0/authorize?client_id=cid"
        ));
        assert!(url.contains("code_challenge_method=S256"));
        assert!(url.contains(&format!("code_challenge={}", pkce.challenge)));
        assert!(url.contains("redirect_uri=http%3A%2F%2Flocalhost%3A1234%2F"));
        assert!(url.contains("offline_access"));
    }

    #[test]
    fn a_pasted_aadsts50011_error_address_names_the_redirects_that_work() {
        let query = "error=invalid_request&error_description=AADSTS50011%3a+The+redirect+URI+\
                     %27http%3a%2f%2flocalhost%3a1234%2f%27+specified+in+the+request+does+not+match\
                     &state=st";
        let e = code_from_query(query, "st").unwrap_err().to_string();
        assert!(e.contains("AADSTS50011"), "{e}");
        assert!(
            e.contains("\"http://127.0.0.1\"") && e.contains("\"https://localhost\""),
            "{e}"
        );
        let e = code_from_query("error=access_denied&state=st", "st").unwrap_err();
        assert!(!e.to_string().contains("127.0.0.1"), "{e}");
    }

    #[test]
    fn a_redirect_naming_another_issuer_is_refused_rfc_9207() {
        let google = "https://accounts.google.com/o/oauth2/v2/auth";
        let ok = "code=abc&state=st&iss=https%3A%2F%2Faccounts.google.com";
        assert_eq!(code_from_query_from(ok, "st", Some(google)).unwrap(), "abc");
        let evil = "code=abc&state=st&iss=https%3A%2F%2Fidp.attacker.example";
        let e = code_from_query_from(evil, "st", Some(google)).unwrap_err();
        assert!(e.to_string().contains("RFC 9207"), "{e}");
        // No iss: nothing to check (Microsoft sends none).
        assert_eq!(
            code_from_query_from("code=abc&state=st", "st", Some(google)).unwrap(),
            "abc"
        );
        assert!(issuer_matches(
            "https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0",
            "https://login.microsoftonline.com/common/oauth2/v2.0/authorize"
        ));
    }

    #[test]
    fn the_authorize_url_carries_the_providers_prompt_parameters() {
        let mut a = crate::config::Account {
            provider: Some(crate::config::ProviderKind::Gmail),
            email: "a@gmail.com".into(),
            client_id: Some("cid".into()),
            ..crate::config::Account::default()
        };
        let pkce = Pkce::new().unwrap();
        let url = |a: &crate::config::Account| {
            let s = crate::provider::resolve("g", a).unwrap();
            authorize_url(
                &s.oauth,
                "cid",
                "http://127.0.0.1:1/",
                "st",
                &pkce,
                "a@gmail.com",
            )
            .unwrap()
        };
        let g = url(&a);
        assert!(
            g.contains("access_type=offline") && g.contains("prompt=consent"),
            "{g}"
        );
        a.provider = Some(crate::config::ProviderKind::Microsoft);
        assert!(!url(&a).contains("prompt="));
    }
}
