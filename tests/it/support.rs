//! The test harness: a private CA for the fake servers, and a sandbox that runs the real
//! binary with `HOME` and `XDG_*` in a temporary directory.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A CA with one server certificate for `localhost` and `127.0.0.1`.
pub struct TestCa {
    pub ca_pem: String,
    pub server_config: Arc<rustls::ServerConfig>,
}

impl TestCa {
    #[must_use]
    pub fn new() -> TestCa {
        TestCa::with_names(&["localhost", "127.0.0.1"])
    }

    /// A CA whose server certificate names only `names` (to test host name checks).
    #[must_use]
    pub fn with_names(names: &[&str]) -> TestCa {
        install_provider();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "oauth2-sendmail test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let chain = vec![cert.der().clone(), CertificateDer::from(ca.der().to_vec())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let server_config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        TestCa {
            ca_pem: ca.pem(),
            server_config: Arc::new(server_config),
        }
    }

    /// One self-signed certificate with `CA:TRUE` serving as its own root, as
    /// `openssl req -x509` makes for a test server; `ca_pem` is that certificate.
    #[must_use]
    pub fn self_signed(names: &[&str]) -> TestCa {
        install_provider();
        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let server_config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        TestCa {
            ca_pem: cert.pem(),
            server_config: Arc::new(server_config),
        }
    }

    #[must_use]
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server_config.clone())
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

pub fn install_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// Asserts exit 0 with nothing on stdout or stderr (what Emacs requires).
    #[track_caller]
    pub fn assert_silent_success(&self) {
        assert_eq!(
            (self.code, self.stdout.as_str(), self.stderr.as_str()),
            (0, "", ""),
            "expected a silent success"
        );
    }

    /// Asserts the exit code and that stderr is one line; returns that line.
    #[track_caller]
    pub fn assert_failure(&self, code: i32) -> &str {
        assert_eq!(self.code, code, "exit code; stderr: {}", self.stderr);
        assert_eq!(self.stdout, "", "stdout must stay empty on failure");
        let line = self.stderr.trim_end_matches('\n');
        assert!(
            !line.is_empty() && !line.contains('\n'),
            "one stderr line: {:?}",
            self.stderr
        );
        line
    }

    /// Asserts that `secret` appears in neither stdout nor stderr.
    #[track_caller]
    pub fn assert_never_shows(&self, secret: &str) {
        assert!(!self.stdout.contains(secret), "secret on stdout");
        assert!(!self.stderr.contains(secret), "secret on stderr");
    }
}

/// A temporary home for one test: config, token cache and queue live inside it.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    #[must_use]
    pub fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["config", "data", "state", "cache"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        Sandbox { dir }
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `$XDG_CONFIG_HOME/oauth2-sendmail/config.toml`.
    pub fn write_config(&self, toml: &str) -> PathBuf {
        let path = self.path().join("config/oauth2-sendmail/config.toml");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, toml).unwrap();
        path
    }

    /// Writes a file in the sandbox and returns its path (e.g. a CA bundle).
    pub fn write_file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// `$XDG_DATA_HOME/oauth2-sendmail/tokens/ACCOUNT.json`.
    #[must_use]
    pub fn token_file(&self, account: &str) -> PathBuf {
        self.path()
            .join(format!("data/oauth2-sendmail/tokens/{account}.json"))
    }

    /// Seeds the token cache as a login would have left it.
    pub fn seed_token(&self, account: &str, json: &serde_json::Value) {
        let path = self.token_file(account);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_vec_pretty(json).unwrap()).unwrap();
        set_mode(path.parent().unwrap(), 0o700);
        set_mode(&path, 0o600);
    }

    /// The command, with a clean environment pointing into the sandbox.
    #[must_use]
    pub fn command(&self, args: &[&str]) -> Command {
        // option_env!: this file is also included by unit tests, which have no binary path.
        let Some(exe) = option_env!("CARGO_BIN_EXE_oauth2-sendmail") else {
            panic!("the binary's path is only known to integration tests")
        };
        let mut cmd = self.program(exe);
        cmd.args(args);
        cmd
    }

    /// Any program (a mail client, say) with the same clean environment.
    #[must_use]
    pub fn program(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path())
            .env("XDG_CONFIG_HOME", self.path().join("config"))
            .env("XDG_DATA_HOME", self.path().join("data"))
            .env("XDG_STATE_HOME", self.path().join("state"))
            .env("XDG_CACHE_HOME", self.path().join("cache"));
        cmd
    }

    /// Runs the binary with `stdin` and waits for it.
    pub fn run(&self, args: &[&str], stdin: &[u8]) -> Run {
        run_command(self.command(args), stdin)
    }

    /// Runs the binary with extra environment variables and empty stdin.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut cmd = self.command(args);
        cmd.envs(env.iter().copied());
        run_command(cmd, b"")
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::new()
    }
}

/// Runs a prepared command with `stdin`; a run longer than a minute is a hang.
pub fn run_command(mut cmd: Command, stdin: &[u8]) -> Run {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        // The binary may refuse input early and close its end; that is not a test failure.
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

/// The contents of `path` once a detached writer (a notifier) has finished a line there;
/// panics after 20 s.
#[must_use]
pub fn wait_for_line(path: &Path) -> String {
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "nothing was written to {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Unix seconds now.
#[must_use]
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Starts `server` on its own thread with its own single-threaded runtime, so the fake
/// outlives any one test step and never shares a runtime with the code under test.
pub fn spawn_server<F>(server: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(server);
    });
}
