//! System mode (issue #14): a user's `sendmail` into the maildrop, the drop followed by the
//! flusher the path unit starts (`--system -q` as root), and one flush of N dropped messages
//! behind the emulated round-trip time. The binary runs in a private mount namespace whose
//! `/etc/oauth2-sendmail`, `/var/lib`, `/var/spool` and `/var/log` are this bench's folders,
//! as the integration tests do; the machine's own are never touched. Needs root and
//! `unshare --mount`; otherwise the section says why and is skipped.
//!
//! Inside the namespace this same bench binary (`BENCH_SYSTEM_CHILD`) spawns and times the
//! runs, so no shell or `date` process adds to a figure; the user's runs drop to uid 65534
//! through `Command::uid` (std clears the supplementary groups when root drops them).

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::fake_idp::FakeIdp;
use crate::fake_smtp::{Behaviour, FakeSmtp};
use crate::proxy::DelayProxy;
use crate::support::{TestCa, now, set_mode};
use crate::{median, ms};

const NOBODY: u32 = 65_534;
const OPS: &str = "ops@example.org";

/// The integration tests' private mount namespace (see the script's comment).
const NAMESPACE: &str = include_str!("../../tests/it/namespace.sh");

/// The message a daemon's user sends (1 KiB).
fn message() -> Vec<u8> {
    let mut m = b"Subject: bench\nTo: root\n\n".to_vec();
    while m.len() < 1024 {
        m.extend_from_slice(b"a line of a user's daemon's report, as logwatch writes it\n");
    }
    m
}

/// Child mode, inside the namespace as root: `drop N`, `drop-flush N` or `flood N`; prints
/// one duration in nanoseconds per timed run.
pub fn child(mode: &str) {
    let exe = PathBuf::from(std::env::var_os("BENCH_EXE").unwrap());
    let n: usize = std::env::var("BENCH_N").unwrap().parse().unwrap();
    let msg = message();
    let user_drop = || {
        let mut cmd = Command::new(&exe);
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", "/nonexistent")
            .args(["-i", "root"])
            .uid(NOBODY)
            .gid(NOBODY);
        spawn_ok(cmd, &msg);
    };
    let flush = || {
        let mut cmd = Command::new(&exe);
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", "/root")
            .args(["--system", "-q"]);
        spawn_ok(cmd, b"");
    };
    let mut out = std::io::stdout().lock();
    match mode {
        "drop" => {
            for _ in 0..n {
                let t = Instant::now();
                user_drop();
                writeln!(out, "{}", t.elapsed().as_nanos()).unwrap();
            }
        }
        "drop-flush" => {
            for _ in 0..n {
                let t = Instant::now();
                user_drop();
                flush();
                writeln!(out, "{}", t.elapsed().as_nanos()).unwrap();
            }
        }
        "flood" => {
            for _ in 0..n {
                user_drop();
            }
            let t = Instant::now();
            flush();
            writeln!(out, "{}", t.elapsed().as_nanos()).unwrap();
        }
        other => panic!("unknown child mode {other}"),
    }
}

fn spawn_ok(mut cmd: Command, stdin: &[u8]) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The host's folders, the system config pointing at `smtp_port`, a valid token.
fn host(dir: &Path, idp: &FakeIdp, smtp_port: u16, ca: &TestCa) {
    for (sub, mode) in [
        ("etc", 0o755),
        ("lib", 0o700),
        ("spool", 0o755),
        ("log", 0o700),
    ] {
        let _ = std::fs::remove_dir_all(dir.join(sub));
        std::fs::create_dir(dir.join(sub)).unwrap();
        set_mode(&dir.join(sub), mode);
    }
    set_mode(dir, 0o755);
    std::fs::write(dir.join("ca.pem"), &ca.ca_pem).unwrap();
    std::fs::write(
        dir.join("etc/config.toml"),
        format!(
            "[aliases]\nroot = \"{OPS}\"\n\n[accounts.ops]\nprovider = \"microsoft\"\n\
             email = \"{OPS}\"\nclient_id = \"bench\"\ntoken_url = \"{}\"\n\
             smtp_host = \"127.0.0.1\"\nsmtp_port = {smtp_port}\ntls_ca_file = \"{}\"\n",
            idp.token_url_v2("bench"),
            dir.join("ca.pem").display()
        ),
    )
    .unwrap();
    set_mode(&dir.join("etc/config.toml"), 0o600);
    let tokens = dir.join("lib/tokens");
    std::fs::create_dir(&tokens).unwrap();
    set_mode(&tokens, 0o700);
    let token = json!({"access_token": idp.issue_access_token(), "expires_at": now() + 3600,
                       "refresh_token": idp.issue_refresh_token(), "obtained_at": now()});
    std::fs::write(tokens.join("ops.json"), token.to_string()).unwrap();
    set_mode(&tokens.join("ops.json"), 0o600);
    std::fs::create_dir(dir.join("spool/maildrop")).unwrap();
    set_mode(&dir.join("spool/maildrop"), 0o1733);
}

/// Runs the child in the namespace; the durations it printed, or why it could not run.
fn in_namespace(dir: &Path, exe: &Path, mode: &str, n: usize) -> Result<Vec<Duration>, String> {
    let me = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(["--mount", "sh", "-c", NAMESPACE, "sh"])
        .arg(me)
        .env("T", dir)
        .env("BENCH_SYSTEM_CHILD", mode)
        .env("NS_EXE", exe)
        .env("BENCH_EXE", "/var/lib/oauth2-sendmail-under-test")
        .env("BENCH_N", n.to_string())
        .output()
        .map_err(|e| format!("unshare: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| Duration::from_nanos(l.parse().unwrap()))
        .collect())
}

/// The system-mode rows.
pub fn run(exe: &Path, rtt: Duration, reps: usize, flood: usize) {
    println!();
    println!("System mode (a user's sendmail through the maildrop; the flusher as root)");
    let ca = TestCa::new();
    let idp = FakeIdp::start(&ca);
    let smtp = FakeSmtp::start(
        &ca,
        Behaviour::default().accept_tokens(&idp.valid_access_tokens()),
    );
    let relay = DelayProxy::start(smtp.addr(), Duration::ZERO);
    let proxy = DelayProxy::start(smtp.addr(), rtt);
    let dir = tempfile::tempdir().unwrap();
    let reps = reps.max(5) * 4;

    host(dir.path(), &idp, relay.port(), &ca);
    let drops = match in_namespace(dir.path(), exe, "drop", reps) {
        Ok(d) => d,
        Err(why) => {
            println!("  skipped: needs root and `unshare --mount` ({why})");
            return;
        }
    };
    println!(
        "  sendmail -> maildrop (fsync included), median of {reps}: {}   target <= 5 ms",
        ms(median(drops))
    );

    host(dir.path(), &idp, relay.port(), &ca);
    let before = smtp.deliveries().len();
    let both = in_namespace(dir.path(), exe, "drop-flush", reps / 2).unwrap();
    assert_eq!(
        smtp.deliveries().len() - before,
        reps / 2,
        "every drop delivered"
    );
    println!(
        "  drop + the path unit's flusher (--system -q) -> server 250, local, median of {}: {}",
        reps / 2,
        ms(median(both))
    );

    if flood > 0 {
        host(dir.path(), &idp, proxy.port(), &ca);
        let (before, conns) = (smtp.deliveries().len(), smtp.connections());
        let flush = in_namespace(dir.path(), exe, "flood", flood).unwrap();
        assert_eq!(
            smtp.deliveries().len() - before,
            flood,
            "every drop delivered"
        );
        println!(
            "  {flood} dropped messages, one --system -q at {} ms RTT: {} over {} connection(s)",
            rtt.as_millis(),
            ms(flush[0]),
            smtp.connections() - conns
        );
    }
}
