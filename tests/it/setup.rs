//! The one set-up the integration tests start from: a sandboxed home, the fake identity
//! platform and (on request) a fake SMTP server sharing one private CA, and a writer for the
//! usual account `work` with builder methods for what a module varies. Also the exact flag
//! sets real callers pass, named once so every module tests the same invocations.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::{Value, json};

use super::fake_idp::FakeIdp;
use super::fake_smtp::{Behaviour, FakeSmtp};
use super::support::{Run, Sandbox, TestCa, now};

/// The client id of the app registration the tests' accounts use.
pub const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";

/// Debian's cron (`cron` 3.0pl1): cannot keep a message whose send failed.
pub const DEBIAN_CRON: &[&str] = &["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"];
/// cronie (Fedora, Arch): cannot keep it either; the recipient comes from the header.
pub const CRONIE: &[&str] = &[
    "-FCronDaemon",
    "-i",
    "-odi",
    "-oem",
    "-oi",
    "-t",
    "-f",
    "root",
];
/// busybox's crond: the recipients come from the header.
pub const BUSYBOX_CRON: &[&str] = &["-ti"];
/// systemd-cron's `mail_on_failure`.
pub const SYSTEMD_CRON: &[&str] = &["-i", "-B", "8BITMIME", "root"];
/// Emacs message-mode (with `message-sendmail-envelope-from` set to `header`).
pub const EMACS: &[&str] = &["-oi", "--read-envelope-from", "-t"];

/// A sandbox, the fake identity platform and a CA file the binary trusts for both it and any
/// fake SMTP server started with [`Setup::smtp`].
pub struct Setup {
    pub ca: TestCa,
    pub sandbox: Sandbox,
    pub idp: FakeIdp,
    pub ca_file: PathBuf,
}

/// A fresh [`Setup`]; nothing is configured or cached yet.
#[must_use]
pub fn setup() -> Setup {
    let ca = TestCa::new();
    let idp = FakeIdp::start(&ca);
    let sandbox = Sandbox::new();
    let ca_file = sandbox.write_file("ca.pem", &ca.ca_pem);
    Setup {
        ca,
        sandbox,
        idp,
        ca_file,
    }
}

impl Setup {
    /// A fake SMTP server under the same CA that accepts every access token the fake
    /// identity platform issued (and whatever else `behaviour` accepts).
    #[must_use]
    pub fn smtp(&self, behaviour: Behaviour) -> FakeSmtp {
        FakeSmtp::start(
            &self.ca,
            behaviour.accept_tokens(&self.idp.valid_access_tokens()),
        )
    }

    /// [`Setup::smtp`] when `accept_issued`, else a fake SMTP server that refuses every
    /// token, issued or not.
    #[must_use]
    pub fn smtp_accepting_issued(&self, behaviour: Behaviour, accept_issued: bool) -> FakeSmtp {
        if accept_issued {
            return self.smtp(behaviour);
        }
        FakeSmtp::start(
            &self.ca,
            Behaviour {
                accept: std::sync::Arc::new(|_, _| false),
                ..behaviour
            },
        )
    }

    /// The config of account `work` (Microsoft, alice@contoso.com, the fake's v2 token
    /// endpoint, the CA file), to vary and then [`Account::write`].
    pub fn account(&self) -> Account<'_> {
        Account {
            setup: self,
            top: String::new(),
            provider: Some("microsoft".to_owned()),
            email: "alice@contoso.com".to_owned(),
            client_id: Some(CLIENT_ID.to_owned()),
            token_url: self.idp.token_url_v2("contoso"),
            authorize_url: false,
            device_code_url: false,
            smtp: None,
            tls_ca_file: None,
            extra: String::new(),
        }
    }

    /// Writes account `work` with `extra` lines in its table.
    pub fn config(&self, extra: &str) -> PathBuf {
        self.account().extra(extra).write()
    }

    /// Writes account `work` with `top` lines before its table and `extra` lines in it.
    pub fn config_with(&self, top: &str, extra: &str) -> PathBuf {
        self.account().top(top).extra(extra).write()
    }

    /// Caches `json` as account `work`'s tokens.
    pub fn seed(&self, json: &Value) {
        self.sandbox.seed_token("work", json);
    }

    /// Caches an expired access token with a valid refresh token; returns the refresh token.
    pub fn seed_expired(&self) -> String {
        let rt = self.idp.issue_refresh_token();
        self.seed(&json!({
            "access_token": "at-stale-0",
            "expires_at": now() - 10,
            "refresh_token": rt,
        }));
        rt
    }

    /// Caches an access token valid for an hour and a refresh token, both issued by the
    /// fake; returns them in that order.
    pub fn seed_valid(&self) -> (String, String) {
        let token = self.idp.issue_access_token();
        let rt = self.idp.issue_refresh_token();
        self.seed(&json!({"access_token": token, "expires_at": now() + 3600, "refresh_token": rt}));
        (token, rt)
    }

    /// Account `work`'s token cache as stored.
    #[must_use]
    pub fn stored(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.sandbox.token_file("work")).unwrap()).unwrap()
    }

    /// Runs the binary with empty stdin.
    pub fn run(&self, args: &[&str]) -> Run {
        self.sandbox.run(args, b"")
    }

    /// The default log file.
    #[must_use]
    pub fn log(&self) -> PathBuf {
        self.sandbox.path().join("state/oauth2-sendmail/log")
    }

    /// The default log's text, empty when there is none.
    #[must_use]
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// The default queue folder.
    #[must_use]
    pub fn queue_dir(&self) -> PathBuf {
        self.sandbox.path().join("state/oauth2-sendmail/queue")
    }
}

/// Account `work`'s config being written; see [`Setup::account`].
#[must_use]
pub struct Account<'a> {
    setup: &'a Setup,
    top: String,
    provider: Option<String>,
    email: String,
    client_id: Option<String>,
    token_url: String,
    authorize_url: bool,
    device_code_url: bool,
    smtp: Option<(String, u16)>,
    tls_ca_file: Option<PathBuf>,
    extra: String,
}

impl Account<'_> {
    /// Lines before the account's table (global settings, `[aliases]`).
    pub fn top(mut self, top: &str) -> Self {
        top.clone_into(&mut self.top);
        self
    }

    /// Another provider; `None` leaves the key out (the program guesses it from the address).
    pub fn provider(mut self, provider: Option<&str>) -> Self {
        self.provider = provider.map(str::to_owned);
        self
    }

    pub fn email(mut self, email: &str) -> Self {
        email.clone_into(&mut self.email);
        self
    }

    /// Another app's client id (e.g. Thunderbird's); `None` leaves the key out.
    pub fn client_id(mut self, client_id: Option<&str>) -> Self {
        self.client_id = client_id.map(str::to_owned);
        self
    }

    pub fn token_url(mut self, url: &str) -> Self {
        url.clone_into(&mut self.token_url);
        self
    }

    /// Adds the fake's v2 authorize endpoint (for the browser login).
    pub fn authorize_url(mut self) -> Self {
        self.authorize_url = true;
        self
    }

    /// Adds the fake's v2 device-code endpoint (for the device-code login).
    pub fn device_code_url(mut self) -> Self {
        self.device_code_url = true;
        self
    }

    /// Sends to `host`:`port` (a fake SMTP server).
    pub fn smtp(mut self, host: &str, port: u16) -> Self {
        self.smtp = Some((host.to_owned(), port));
        self
    }

    /// Trusts `path` instead of the set-up's CA (a server with a CA of its own).
    pub fn tls_ca_file(mut self, path: &std::path::Path) -> Self {
        self.tls_ca_file = Some(path.to_owned());
        self
    }

    /// Lines at the end of the account's table.
    pub fn extra(mut self, extra: &str) -> Self {
        extra.clone_into(&mut self.extra);
        self
    }

    /// Writes `$XDG_CONFIG_HOME/oauth2-sendmail/config.toml`; returns its path.
    pub fn write(self) -> PathBuf {
        let idp = &self.setup.idp;
        let mut toml = format!("{}\n[accounts.work]\n", self.top);
        // Writing to a String cannot fail.
        let mut line = |key: &str, value: &str| writeln!(toml, "{key} = {value}").unwrap();
        if let Some(provider) = &self.provider {
            line("provider", &format!("\"{provider}\""));
        }
        line("email", &format!("\"{}\"", self.email));
        if let Some(id) = &self.client_id {
            line("client_id", &format!("\"{id}\""));
        }
        if self.authorize_url {
            line(
                "authorize_url",
                &format!("\"{}\"", idp.authorize_url_v2("contoso")),
            );
        }
        line("token_url", &format!("\"{}\"", self.token_url));
        if self.device_code_url {
            line(
                "device_code_url",
                &format!("\"{}\"", idp.device_code_url_v2("contoso")),
            );
        }
        if let Some((host, port)) = &self.smtp {
            line("smtp_host", &format!("\"{host}\""));
            line("smtp_port", &port.to_string());
        }
        line(
            "tls_ca_file",
            &format!(
                "\"{}\"",
                self.tls_ca_file
                    .as_ref()
                    .unwrap_or(&self.setup.ca_file)
                    .display()
            ),
        );
        toml += &self.extra;
        self.setup.sandbox.write_config(&toml)
    }
}

/// A port on 127.0.0.1 that nothing listens on: connecting is refused at once.
#[must_use]
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The ids of the `.mail` files in `dir` (a queue or its `failed` folder), sorted.
#[must_use]
pub fn ids_in(dir: &std::path::Path) -> Vec<String> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = read
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".mail").map(str::to_owned))
        .filter(|n| !n.starts_with('.'))
        .collect();
    ids.sort();
    ids
}

/// Starts `cmd` with stdout and stderr piped; its stderr lines arrive on the receiver as
/// the program writes them (a login prints its URL and then waits).
pub fn spawn_reading_stderr(
    mut cmd: std::process::Command,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}
