//! The token store and proxy scenario (issue #18): a cached send with `token_store =
//! "keyring"` beside the same send with the plain file (target: the keyring's median within
//! 5 ms of the file's), and a send through a SOCKS5 proxy (Dante's `danted`) at the
//! emulated RTT beside the same send without it (target: the proxy's handshake adds one
//! round trip at most). Rows whose programs are missing (GNOME Keyring, dbus-daemon,
//! danted) are skipped with a note.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::fake_idp::FakeIdp;
use crate::fake_smtp::{Behaviour, FakeSmtp};
use crate::proxy::DelayProxy;
use crate::support::{Sandbox, TestCa, now};

const ACCOUNT: &str = "stores";
const MESSAGE: &[u8] = b"From: alice@example.org\nTo: bob@example.net\nSubject: bench\n\nHello.\n";

/// Runs the scenario and prints its rows.
pub fn run(exe: &Path, rtt: Duration, reps: usize) {
    let ca = TestCa::new();
    let idp = FakeIdp::start(&ca);
    let smtp = FakeSmtp::start(
        &ca,
        Behaviour::default().accept_tokens(&idp.valid_access_tokens()),
    );
    let sandbox = Sandbox::new();
    let ca_file = sandbox.write_file("ca.pem", &ca.ca_pem);
    let reps = reps.max(11);
    println!();
    println!("stores and proxy: one cached 1 KiB send (median of {reps})");
    let ctx = Ctx {
        exe,
        sandbox: &sandbox,
        idp: &idp,
        ca_file: &ca_file,
    };

    // File against keyring, no latency: the difference is the keyring's cost.
    let file = ctx.median(reps, smtp.port(), "", None);
    match (file, Keyring::start()) {
        (Ok(file), Some(keyring)) => {
            match ctx.median(
                reps,
                smtp.port(),
                "token_store = \"keyring\"\n",
                Some(&keyring),
            ) {
                Ok(kr) => println!(
                    "  token_store file     {:7.1} ms\n  token_store keyring  {:7.1} ms  (+{:.1} ms; target ≤ 5 ms)",
                    ms(file),
                    ms(kr),
                    ms(kr) - ms(file)
                ),
                Err(e) => println!("  keyring: failed: {e}"),
            }
        }
        (Ok(file), None) => println!(
            "  token_store file     {:7.1} ms\n  keyring: skipped (needs dbus-daemon and gnome-keyring-daemon)",
            ms(file)
        ),
        (Err(e), _) => println!("  file: failed: {e}"),
    }

    // Direct against SOCKS5, both over a link with the emulated RTT.
    let Some(dante) = Dante::start() else {
        println!("  socks5: skipped (needs danted: apt-get install dante-server)");
        return;
    };
    let direct_link = DelayProxy::start(smtp.addr(), rtt);
    let proxy_link = DelayProxy::start(format!("127.0.0.1:{}", dante.port).parse().unwrap(), rtt);
    let direct = ctx.median(reps, direct_link.port(), "", None);
    let socks = ctx.median(
        reps,
        smtp.port(),
        &format!("proxy = \"socks5://127.0.0.1:{}\"\n", proxy_link.port()),
        None,
    );
    match (direct, socks) {
        (Ok(d), Ok(s)) => println!(
            "  {} ms RTT direct    {:7.1} ms\n  {} ms RTT socks5     {:7.1} ms  (+{:.2} RTT; target ≤ 1)",
            rtt.as_millis(),
            ms(d),
            rtt.as_millis(),
            ms(s),
            (s.as_secs_f64() - d.as_secs_f64()) / rtt.as_secs_f64()
        ),
        (d, s) => println!("  socks5: failed: {:?} {:?}", d.err(), s.err()),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Ctx<'a> {
    exe: &'a Path,
    sandbox: &'a Sandbox,
    idp: &'a FakeIdp,
    ca_file: &'a Path,
}

impl Ctx<'_> {
    /// The median wall time of `reps` cached sends to `port`, with `extra` config lines;
    /// the first send (which seals the cache for the keyring) is not counted.
    fn median(
        &self,
        reps: usize,
        port: u16,
        extra: &str,
        keyring: Option<&Keyring>,
    ) -> Result<Duration, String> {
        self.sandbox.write_config(&format!(
            "[accounts.{ACCOUNT}]\nprovider = \"microsoft\"\nemail = \"alice@example.org\"\n\
             client_id = \"bench\"\ntoken_url = \"{}\"\nsmtp_host = \"127.0.0.1\"\n\
             smtp_port = {port}\ntls_ca_file = \"{}\"\nqueue = \"never\"\n{extra}",
            self.idp.token_url_v2("bench"),
            self.ca_file.display(),
        ));
        self.sandbox.seed_token(
            ACCOUNT,
            &json!({"access_token": "at-expired", "expires_at": now() - 10,
                    "refresh_token": self.idp.issue_refresh_token()}),
        );
        let mut walls = Vec::new();
        for i in 0..=reps {
            let mut cmd = self.sandbox.program(self.exe);
            cmd.args(["-oi", "-t"])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            if let Some(k) = keyring {
                cmd.env("DBUS_SESSION_BUS_ADDRESS", k.address());
            }
            let start = Instant::now();
            let mut child = cmd.spawn().map_err(|e| e.to_string())?;
            {
                use std::io::Write;
                let mut stdin = child.stdin.take().ok_or("no stdin")?;
                stdin.write_all(MESSAGE).map_err(|e| e.to_string())?;
            }
            let out = child.wait_with_output().map_err(|e| e.to_string())?;
            let wall = start.elapsed();
            if !out.status.success() {
                return Err(format!(
                    "exit {:?}: {}",
                    out.status.code(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            // The first run renews the token (and seals the cache): not a cached send.
            if i > 0 {
                walls.push(wall);
            }
        }
        walls.sort();
        Ok(walls[walls.len() / 2])
    }
}

/// GNOME Keyring on a private session bus, its login keyring unlocked.
struct Keyring {
    dir: tempfile::TempDir,
    children: Vec<Child>,
}

impl Keyring {
    fn start() -> Option<Keyring> {
        let dir = tempfile::tempdir().ok()?;
        let run = dir.path().join("run");
        std::fs::create_dir(&run).ok()?;
        std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o700)).ok()?;
        let socket = dir.path().join("bus");
        let bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork"])
            .arg(format!("--address=unix:path={}", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let mut keyring = Keyring {
            dir,
            children: vec![bus],
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut daemon = keyring
            .command("gnome-keyring-daemon")
            .args(["--foreground", "--unlock", "--components=secrets"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        {
            use std::io::Write;
            daemon.stdin.take()?.write_all(b"bench-password").ok()?;
        }
        keyring.children.push(daemon);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let owned = keyring
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
                .ok()?;
            if String::from_utf8_lossy(&owned.stdout).contains("boolean true") {
                break;
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The login keyring appears once the password is read.
        std::thread::sleep(Duration::from_millis(500));
        Some(keyring)
    }

    fn address(&self) -> String {
        format!("unix:path={}", self.dir.path().join("bus").display())
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        let dir = self.dir.path();
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir)
            .env("XDG_DATA_HOME", dir.join("data"))
            .env("XDG_RUNTIME_DIR", dir.join("run"))
            .env("DBUS_SESSION_BUS_ADDRESS", self.address());
        cmd
    }
}

impl Drop for Keyring {
    fn drop(&mut self) {
        for child in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Dante on a loopback port.
struct Dante {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Dante {
    fn start() -> Option<Dante> {
        if !Path::new("/usr/sbin/danted").exists() {
            return None;
        }
        let dir = tempfile::tempdir().ok()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let conf = dir.path().join("danted.conf");
        std::fs::write(
            &conf,
            format!(
                "logoutput: {}\ninternal: 127.0.0.1 port = {port}\nexternal: 127.0.0.1\n\
                 socksmethod: none\nclientmethod: none\nuser.privileged: root\n\
                 user.unprivileged: nobody\n\
                 client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}\n\
                 socks pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}\n",
                dir.path().join("danted.log").display()
            ),
        )
        .ok()?;
        let child = Command::new("/usr/sbin/danted")
            .arg("-f")
            .arg(&conf)
            .arg("-p")
            .arg(dir.path().join("danted.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let dante = Dante {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(dante)
    }
}

impl Drop for Dante {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}
