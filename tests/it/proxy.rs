//! `proxy`: the SMTP connection and the token request through real proxies from Debian,
//! started here on loopback with their own config files in a temporary folder: Dante's
//! `danted` (SOCKS5) and `tinyproxy` (HTTP CONNECT). Each send must succeed and the proxy's
//! own log must show the tunnels to the SMTP server and to the token endpoint. Also the
//! refusals: a proxy that is down, one that refuses the tunnel, both temporary failures
//! that name the proxy without its credentials.
//!
//! `.ci/run` installs `dante-server` and `tinyproxy`. Without them the tests fail when
//! `CI` is set, and are skipped with a note otherwise.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::fake_idp::FakeIdp;
use super::fake_smtp::{Behaviour, FakeSmtp};
use super::support::{Run, Sandbox, TestCa, now};

const DANTED: &str = "/usr/sbin/danted";
const TINYPROXY: &str = "/usr/bin/tinyproxy";
const MESSAGE: &[u8] =
    b"From: alice@contoso.com\nTo: bob@example.org\nSubject: via proxy\n\nbody\n";

fn available(program: &str, package: &str) -> bool {
    if Path::new(program).exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{program} is not installed, and CI is set: .ci/run installs {package}"
    );
    eprintln!("{program} is not installed; skipping (apt-get install {package})");
    false
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A proxy daemon in the foreground, stopped (and reaped) when dropped.
struct Daemon {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Dante on `port`, logging every tunnel.
    fn danted() -> Daemon {
        Daemon::danted_with(
            "socks pass { from: 127.0.0.0/8 to: 0.0.0.0/0 log: connect disconnect }\n",
        )
    }

    /// Dante with `rules` for the SOCKS requests.
    fn danted_with(rules: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = dir.path().join("danted.log");
        let conf = dir.path().join("danted.conf");
        std::fs::write(
            &conf,
            format!(
                "logoutput: {}\ninternal: 127.0.0.1 port = {port}\nexternal: 127.0.0.1\n\
                 socksmethod: none\nclientmethod: none\n\
                 user.privileged: root\nuser.unprivileged: nobody\n\
                 client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 log: connect disconnect }}\n\
                 {rules}",
                log.display()
            ),
        )
        .unwrap();
        let child = Command::new(DANTED)
            .arg("-f")
            .arg(&conf)
            .arg("-p")
            .arg(dir.path().join("danted.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Daemon::listening(child, port, log, dir)
    }

    /// tinyproxy on `port`; `extra` config lines (e.g. `ConnectPort 443`).
    fn tinyproxy(extra: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        // tinyproxy drops to `nobody`, who must write its log.
        super::support::set_mode(dir.path(), 0o777);
        let port = free_port();
        let log = dir.path().join("tinyproxy.log");
        let conf = dir.path().join("tinyproxy.conf");
        std::fs::write(
            &conf,
            format!(
                "User nobody\nGroup nogroup\nPort {port}\nListen 127.0.0.1\nTimeout 60\n\
                 LogFile \"{}\"\nLogLevel Connect\nPidFile \"{}\"\nMaxClients 20\n\
                 Allow 127.0.0.1\n{extra}",
                log.display(),
                dir.path().join("tinyproxy.pid").display()
            ),
        )
        .unwrap();
        let child = Command::new(TINYPROXY)
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Daemon::listening(child, port, log, dir)
    }

    fn listening(child: Child, port: u16, log: PathBuf, dir: tempfile::TempDir) -> Daemon {
        let daemon = Daemon {
            child,
            port,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the proxy did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Dante's children follow their parent's SIGTERM.
        let _ = Command::new("kill")
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

/// Account `work` on the fake SMTP server and token endpoint, through `proxy`, with an
/// expired access token: the send renews it first (the token request goes through the
/// proxy too).
struct World {
    sandbox: Sandbox,
    idp: FakeIdp,
    smtp: FakeSmtp,
    refresh: String,
}

impl World {
    fn new(proxy: &str) -> World {
        let ca = TestCa::new();
        let idp = FakeIdp::start(&ca);
        let smtp = FakeSmtp::start(
            &ca,
            Behaviour::default().accept_tokens(&idp.valid_access_tokens()),
        );
        let sandbox = Sandbox::new();
        let ca_file = sandbox.write_file("ca.pem", &ca.ca_pem);
        sandbox.write_config(&format!(
            "[accounts.work]\nprovider = \"microsoft\"\nemail = \"alice@contoso.com\"\n\
             client_id = \"11111111-2222-3333-4444-555555555555\"\ntoken_url = \"{}\"\n\
             smtp_host = \"127.0.0.1\"\nsmtp_port = {}\ntls_ca_file = \"{}\"\n\
             queue = \"never\"\nproxy = \"{proxy}\"\n",
            idp.token_url_v2("contoso"),
            smtp.port(),
            ca_file.display()
        ));
        let refresh = idp.issue_refresh_token();
        sandbox.seed_token(
            "work",
            &json!({"access_token": "at-expired", "expires_at": now() - 10,
                    "refresh_token": refresh, "obtained_at": now() - 3600}),
        );
        World {
            sandbox,
            idp,
            smtp,
            refresh,
        }
    }

    fn send(&self) -> Run {
        self.sandbox
            .run(&["-v", "-oi", "--", "bob@example.org"], MESSAGE)
    }

    fn idp_port(&self) -> u16 {
        reqwest::Url::parse(&self.idp.token_url_v2("contoso"))
            .unwrap()
            .port()
            .unwrap()
    }
}

#[test]
fn a_send_goes_through_danteds_socks5_with_the_token_request() {
    if !available(DANTED, "dante-server") {
        return;
    }
    let dante = Daemon::danted();
    for scheme in ["socks5", "socks5h"] {
        let w = World::new(&format!("{scheme}://127.0.0.1:{}", dante.port));
        let run = w.send();
        run.assert_never_shows(&w.refresh);
        assert_eq!(
            run.code,
            0,
            "{scheme}: {run:?}\ndante: {}",
            dante.log_text()
        );
        assert_eq!(w.smtp.deliveries().len(), 1);
        // STARTTLS and the TLS handshake ran through the tunnel, end to end.
        assert!(
            run.stderr.contains("TLS established, certificate verified"),
            "{}",
            run.stderr
        );
        let log = dante.log_text();
        for port in [w.smtp.port(), w.idp_port()] {
            assert!(
                log.contains(&format!("-> 127.0.0.1.{port} "))
                    || log.contains(&format!("127.0.0.1.{port}\n")),
                "{scheme}: dante's log shows no tunnel to port {port}:\n{log}"
            );
        }
    }
}

#[test]
fn a_send_goes_through_tinyproxys_http_connect_with_the_token_request() {
    if !available(TINYPROXY, "tinyproxy") {
        return;
    }
    let proxy = Daemon::tinyproxy("");
    let w = World::new(&format!("http://127.0.0.1:{}", proxy.port));
    let run = w.send();
    run.assert_never_shows(&w.refresh);
    assert_eq!(run.code, 0, "{run:?}\ntinyproxy: {}", proxy.log_text());
    assert_eq!(w.smtp.deliveries().len(), 1);
    let log = proxy.log_text();
    for port in [w.smtp.port(), w.idp_port()] {
        assert!(
            log.contains(&format!("CONNECT 127.0.0.1:{port} ")),
            "tinyproxy's log shows no CONNECT to port {port}:\n{log}"
        );
    }
}

#[test]
fn a_proxy_that_is_down_is_a_temporary_failure_naming_it_without_its_password() {
    let port = free_port();
    let w = World::new(&format!("socks5://alice:pr0xy-s3cret@127.0.0.1:{port}"));
    // A cached token: only the SMTP connection needs the proxy.
    w.sandbox.seed_token(
        "work",
        &json!({"access_token": w.idp.issue_access_token(), "expires_at": now() + 3600,
                "refresh_token": w.refresh}),
    );
    let run = w.send();
    assert_eq!(run.code, 75, "{run:?}");
    let line = run.stderr.lines().last().unwrap_or("");
    assert!(
        line.contains(&format!("proxy socks5://127.0.0.1:{port}")),
        "{}",
        run.stderr
    );
    run.assert_never_shows("pr0xy-s3cret");
    run.assert_never_shows("alice:");
    // status shows the account, and no password either.
    let status = w.sandbox.run(&["status", "--json"], b"");
    status.assert_never_shows("pr0xy-s3cret");
    let v: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(
        v["accounts"][0]["proxy"],
        format!("socks5://127.0.0.1:{port}")
    );
}

#[test]
fn a_proxy_that_refuses_the_tunnel_is_a_temporary_failure_naming_it() {
    if !available(TINYPROXY, "tinyproxy") {
        return;
    }
    // Only CONNECT to port 443 is allowed: the SMTP port is refused (403).
    let proxy = Daemon::tinyproxy("ConnectPort 443\n");
    let w = World::new(&format!("http://127.0.0.1:{}", proxy.port));
    w.sandbox.seed_token(
        "work",
        &json!({"access_token": w.idp.issue_access_token(), "expires_at": now() + 3600,
                "refresh_token": w.refresh}),
    );
    let run = w.send();
    assert_eq!(run.code, 75, "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "proxy http://127.0.0.1:{}: refused the tunnel",
            proxy.port
        )),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("403"), "{}", run.stderr);
    assert!(w.smtp.deliveries().is_empty());
}

#[test]
fn a_socks5_proxy_whose_rules_refuse_the_tunnel_is_a_temporary_failure_naming_it() {
    if !available(DANTED, "dante-server") {
        return;
    }
    let w = World::new("socks5://127.0.0.1:1");
    let dante = Daemon::danted_with(&format!(
        "socks block {{ from: 0.0.0.0/0 to: 127.0.0.1/32 port = {} log: connect error }}\n\
         socks pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}\n",
        w.smtp.port()
    ));
    let cfg = w.sandbox.path().join("config/oauth2-sendmail/config.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("127.0.0.1:1\"", &format!("127.0.0.1:{}\"", dante.port));
    std::fs::write(&cfg, text).unwrap();
    w.sandbox.seed_token(
        "work",
        &json!({"access_token": w.idp.issue_access_token(), "expires_at": now() + 3600,
                "refresh_token": w.refresh}),
    );
    let run = w.send();
    assert_eq!(run.code, 75, "{run:?}\ndante: {}", dante.log_text());
    assert!(
        run.stderr.contains(&format!(
            "proxy socks5://127.0.0.1:{}: refused the tunnel to 127.0.0.1:{}: connection not allowed by ruleset",
            dante.port,
            w.smtp.port()
        )),
        "{}",
        run.stderr
    );
    assert!(w.smtp.deliveries().is_empty());
}

#[test]
fn a_bad_proxy_value_is_a_configuration_error() {
    let w = World::new("socks4://127.0.0.1:1080");
    let run = w.send();
    assert_eq!(run.code, 78, "{run:?}");
    assert!(run.stderr.contains("not supported"), "{}", run.stderr);
}
