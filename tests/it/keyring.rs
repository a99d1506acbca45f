//! `token_store = "keyring"` against a real Secret Service: GNOME Keyring's daemon on a
//! private session bus (`dbus-daemon`) started here, its login keyring created and unlocked
//! from the test (`gnome-keyring-daemon --unlock` reads the password on stdin), locked
//! through the Secret Service's own `Lock` call. Through the binary: login, sends with
//! rotation, 20 concurrent sends that refresh once, status, token, logout deleting the item;
//! a locked keyring (75, one line naming the store) and no bus at all (78).
//!
//! `.ci/run` installs `gnome-keyring`, `dbus-daemon`, `dbus-bin` and `libsecret-tools`.
//! Without them the tests fail when `CI` is set, and are skipped with a note otherwise.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::fake_idp::{ExpiresIn, FakeIdp};
use super::fake_smtp::{Behaviour, FakeSmtp};
use super::support::{Run, Sandbox, TestCa, run_command};

const PROGRAMS: [(&str, &str); 4] = [
    ("/usr/bin/dbus-daemon", "dbus-daemon"),
    ("/usr/bin/gnome-keyring-daemon", "gnome-keyring"),
    ("/usr/bin/dbus-send", "dbus-bin"),
    ("/usr/bin/secret-tool", "libsecret-tools"),
];
const MESSAGE: &[u8] = b"From: alice@contoso.com\nTo: bob@example.org\nSubject: keyring\n\nbody\n";

fn available() -> bool {
    for (program, package) in PROGRAMS {
        if !Path::new(program).exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{program} is not installed, and CI is set: .ci/run installs {package}"
            );
            eprintln!("{program} is not installed; skipping (apt-get install {package})");
            return false;
        }
    }
    true
}

/// A session bus with GNOME Keyring on it, both stopped when dropped.
struct Keyring {
    dir: tempfile::TempDir,
    bus: Child,
    daemon: Child,
}

impl Keyring {
    fn start() -> Keyring {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        super::support::set_mode(&run, 0o700);
        let socket = dir.path().join("bus");
        let bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork"])
            .arg(format!("--address=unix:path={}", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "dbus-daemon did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut daemon = Keyring::command_in(dir.path(), "gnome-keyring-daemon")
            .args(["--foreground", "--unlock", "--components=secrets"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            let mut stdin = daemon.stdin.take().unwrap();
            stdin.write_all(b"test-keyring-password").unwrap();
        }
        let this = Keyring { dir, bus, daemon };
        // First our daemon must own the name: a Secret Service call before it does would
        // have the bus start another one (D-Bus activation), without the password.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let owned = this
                .command("dbus-send")
                .args([
                    "--session",
                    "--dest=org.freedesktop.DBus",
                    "--type=method_call",
                    "--print-reply",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus.NameHasOwner",
                    "string:org.freedesktop.secrets",
                ])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&owned.stdout).contains("boolean true") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "gnome-keyring-daemon took no name"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // Ready when an item can be stored in the default collection (the login keyring,
        // created and unlocked from the password); slow on a loaded machine.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut store = this
                .command("secret-tool")
                .args(["store", "--label=probe", "probe", "probe"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            {
                use std::io::Write;
                store.stdin.take().unwrap().write_all(b"probe").unwrap();
            }
            let probe = store.wait_with_output().unwrap();
            if probe.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "gnome-keyring-daemon did not come up: {}",
                String::from_utf8_lossy(&probe.stderr)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        this
    }

    fn address(&self) -> String {
        format!("unix:path={}", self.dir.path().join("bus").display())
    }

    fn command_in(dir: &Path, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir)
            .env("XDG_DATA_HOME", dir.join("data"))
            .env("XDG_RUNTIME_DIR", dir.join("run"))
            .env(
                "DBUS_SESSION_BUS_ADDRESS",
                format!("unix:path={}", dir.join("bus").display()),
            );
        cmd
    }

    fn command(&self, program: &str) -> Command {
        Keyring::command_in(self.dir.path(), program)
    }

    /// The Secret Service's `Lock` on the login collection.
    fn lock(&self) {
        let out = self
            .command("dbus-send")
            .args([
                "--session",
                "--dest=org.freedesktop.secrets",
                "--type=method_call",
                "--print-reply",
                "/org/freedesktop/secrets",
                "org.freedesktop.Secret.Service.Lock",
                "array:objpath:/org/freedesktop/secrets/collection/login",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    }

    /// Whether the keyring holds account `work`'s key.
    fn holds_key(&self, account: &str) -> bool {
        self.command("secret-tool")
            .args([
                "lookup",
                "application",
                "oauth2-sendmail",
                "account",
                account,
            ])
            .output()
            .unwrap()
            .status
            .success()
    }
}

impl Drop for Keyring {
    fn drop(&mut self) {
        for child in [&mut self.daemon, &mut self.bus] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Account `work` with `token_store = "keyring"` on the fake servers.
struct World {
    sandbox: Sandbox,
    idp: FakeIdp,
    smtp: FakeSmtp,
    keyring: Keyring,
}

impl World {
    fn new() -> World {
        let ca = TestCa::new();
        let idp = FakeIdp::start(&ca);
        idp.set_rotation_revokes_old(true);
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
             queue = \"never\"\ntoken_store = \"keyring\"\n",
            idp.token_url_v2("contoso"),
            smtp.port(),
            ca_file.display()
        ));
        World {
            sandbox,
            idp,
            smtp,
            keyring: Keyring::start(),
        }
    }

    fn run(&self, args: &[&str], stdin: &[u8]) -> Run {
        let mut cmd = self.sandbox.command(args);
        cmd.env("DBUS_SESSION_BUS_ADDRESS", self.keyring.address());
        run_command(cmd, stdin)
    }

    fn login(&self) -> String {
        let rt = self.idp.issue_refresh_token();
        let run = self.run(
            &["login", "work", "--import-refresh-token", "-"],
            format!("{rt}\n").as_bytes(),
        );
        assert_eq!(run.code, 0, "{run:?}");
        run.assert_never_shows(&rt);
        rt
    }

    fn token_file(&self) -> PathBuf {
        self.sandbox.token_file("work")
    }
}

#[test]
fn the_keyring_store_logs_in_sends_rotates_refreshes_once_for_20_and_logs_out() {
    if !available() {
        return;
    }
    let w = World::new();
    // Access tokens shorter than the refresh margin: every send renews (and rotates).
    w.idp.set_expires_in(ExpiresIn::Usual(30));
    let first = w.login();
    assert!(w.keyring.holds_key("work"));
    let file = std::fs::read_to_string(w.token_file()).unwrap();
    assert!(file.contains("\"sealed_with\": \"keyring\""), "{file}");
    assert!(
        !file.contains("access_token") && !file.contains(&first),
        "{file}"
    );

    // The import redeemed the refresh token once.
    let base = w.idp.refresh_count();
    for _ in 0..2 {
        let run = w.run(&["-oi", "--", "bob@example.org"], MESSAGE);
        run.assert_silent_success();
    }
    // Each send renewed with the refresh token the previous one saved (the old ones are
    // revoked at each rotation).
    assert_eq!(w.idp.refresh_count(), base + 2);
    assert!(!w.idp.refresh_token_valid(&first));

    // 20 at once, with an access token due for renewal: one refresh.
    w.idp.set_expires_in(ExpiresIn::Usual(3600));
    let sends: Vec<_> = (0..20)
        .map(|_| {
            let mut cmd = w.sandbox.command(&["-oi", "--", "bob@example.org"]);
            cmd.env("DBUS_SESSION_BUS_ADDRESS", w.keyring.address());
            std::thread::spawn(move || run_command(cmd, MESSAGE))
        })
        .collect();
    for send in sends {
        send.join().unwrap().assert_silent_success();
    }
    assert_eq!(
        w.idp.refresh_count(),
        base + 3,
        "20 concurrent sends refreshed once"
    );
    assert_eq!(w.smtp.deliveries().len(), 22);

    let status = w.run(&["status", "--json"], b"");
    assert_eq!(status.code, 0, "{status:?}");
    let v: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(v["accounts"][0]["token_store"], "keyring");
    assert_eq!(v["accounts"][0]["token"]["state"], "valid");
    let token = w.run(&["token"], b"");
    assert_eq!(token.code, 0, "{token:?}");
    assert!(
        w.idp
            .valid_access_tokens()
            .lock()
            .unwrap()
            .contains(token.stdout.trim())
    );

    let logout = w.run(&["logout", "work"], b"");
    assert_eq!(logout.code, 0, "{logout:?}");
    assert!(
        logout.stdout.contains("tokens deleted"),
        "{}",
        logout.stdout
    );
    assert!(
        !w.keyring.holds_key("work"),
        "logout deletes the keyring item"
    );
    assert!(!w.token_file().exists());
}

#[test]
fn a_locked_keyring_is_a_temporary_failure_naming_the_store() {
    if !available() {
        return;
    }
    let w = World::new();
    w.login();
    w.keyring.lock();
    let run = w.run(&["-oi", "--", "bob@example.org"], MESSAGE);
    assert_eq!(run.code, 75, "{run:?}");
    let line = run.stderr.trim_end();
    assert!(!line.contains('\n'), "one line: {line}");
    assert!(
        line.contains("token_store = \"keyring\"")
            && line.contains("locked")
            && line.contains("unlock"),
        "{line}"
    );
    assert!(w.smtp.deliveries().is_empty());
    // With the default queue policy a mail program's message waits in the queue.
    let cfg = w.sandbox.path().join("config/oauth2-sendmail/config.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("queue = \"never\"\n", "");
    std::fs::write(&cfg, text).unwrap();
    let run = w.run(&["-oi", "--", "bob@example.org"], MESSAGE);
    assert_eq!(run.code, 0, "queued: {run:?}");
    let list = w.run(&["queue", "list"], b"");
    assert!(list.stdout.contains("bob@example.org"), "{}", list.stdout);
}

#[test]
fn no_session_bus_is_a_configuration_error_naming_the_store() {
    if !available() {
        return;
    }
    let w = World::new();
    w.login();
    // As from cron: no session bus in the environment.
    let run = w.sandbox.run(&["-oi", "--", "bob@example.org"], MESSAGE);
    assert_eq!(run.code, 78, "{run:?}");
    let line = run.stderr.trim_end();
    assert!(!line.contains('\n'), "one line: {line}");
    assert!(
        line.contains("token_store = \"keyring\": no Secret Service")
            && line.contains("token_store = \"file\""),
        "{line}"
    );
    // A bus address that leads nowhere: the same.
    let mut cmd = w.sandbox.command(&["-oi", "--", "bob@example.org"]);
    cmd.env(
        "DBUS_SESSION_BUS_ADDRESS",
        format!("unix:path={}", w.sandbox.path().join("no-bus").display()),
    );
    let run = run_command(cmd, MESSAGE);
    assert_eq!(run.code, 78, "{run:?}");
    assert!(run.stderr.contains("no Secret Service"), "{}", run.stderr);

    // Back to the file store: `login` writes a plain file and says the key can go.
    let cfg = w.sandbox.path().join("config/oauth2-sendmail/config.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("token_store = \"keyring\"", "token_store = \"file\"");
    std::fs::write(&cfg, text).unwrap();
    let rt = w.idp.issue_refresh_token();
    let login = w.sandbox.run(
        &["login", "work", "--import-refresh-token", "-"],
        format!("{rt}\n").as_bytes(),
    );
    assert_eq!(login.code, 0, "{login:?}");
    assert!(
        login
            .stderr
            .contains("secret-tool clear application oauth2-sendmail account work"),
        "{}",
        login.stderr
    );
    let file = std::fs::read_to_string(w.token_file()).unwrap();
    assert!(file.contains("access_token"), "a plain file again");
    w.sandbox
        .run(&["-oi", "--", "bob@example.org"], MESSAGE)
        .assert_silent_success();
}
