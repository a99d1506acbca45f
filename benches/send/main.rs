//! The send benchmark: the release binary and msmtp against the in-process fake SMTP
//! server and identity platform, on loopback, with and without an emulated round-trip
//! time. Run it with `scripts/bench` (see `benches/README.md`); `cargo test` never runs it,
//! and it asserts nothing about timings: it measures, compares with the targets of issues
//! #2 and #4, and prints a table.
//!
//! Layout: `proxy` is the latency-emulating TCP proxy that also counts waits; this file
//! sets up the fakes, writes both clients' configs into one sandbox, runs the scenarios
//! and prints the table.

// Figures are durations and small counts turned into ratios for a table.
#![allow(clippy::cast_precision_loss)]

#[allow(dead_code, reason = "the bench uses part of the integration-test kit")]
#[path = "../../tests/it/fake_graph.rs"]
mod fake_graph;
#[allow(dead_code, reason = "the bench uses part of the integration-test kit")]
#[path = "../../tests/it/fake_idp.rs"]
mod fake_idp;
#[allow(dead_code, reason = "the bench uses part of the integration-test kit")]
#[path = "../../tests/it/fake_smtp.rs"]
mod fake_smtp;
mod graph;
mod proxy;
mod stores;
#[allow(dead_code, reason = "the bench uses part of the integration-test kit")]
#[path = "../../tests/it/support.rs"]
mod support;
mod system;

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use fake_idp::FakeIdp;
use fake_smtp::{Behaviour, FakeSmtp};
use proxy::DelayProxy;
use support::{Sandbox, TestCa, now};

const ACCOUNT: &str = "bench";
const EMAIL: &str = "alice@example.org";
const RCPT: &str = "bob@example.net";
const CLIENT_ID: &str = "bench-client";
/// How long a run may take before the bench gives up on it.
const SETTLE: Duration = Duration::from_secs(3);

/// What `scripts/bench` may tune through the environment.
struct Options {
    rtt: Duration,
    reps: usize,
    big_reps: usize,
    big_bytes: usize,
    /// The second large message (0 skips its row).
    huge_bytes: usize,
    queue_n: usize,
    queue_reps: usize,
    /// Backed-off messages in the queue during the backlog row (0 skips it).
    backlog: usize,
}

impl Options {
    fn from_env() -> Options {
        let get = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(default)
        };
        Options {
            rtt: Duration::from_millis(get("BENCH_RTT_MS", 50) as u64),
            reps: get("BENCH_REPS", 5).max(1),
            big_reps: get("BENCH_BIG_REPS", 3).max(1),
            big_bytes: get("BENCH_BIG_MB", 20) << 20,
            huge_bytes: get("BENCH_HUGE_MB", 200) << 20,
            queue_n: get("BENCH_QUEUE", 100),
            queue_reps: get("BENCH_QUEUE_REPS", 1),
            backlog: get("BENCH_BACKLOG", 10_000),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    Ours,
    Msmtp,
}

impl Client {
    fn name(self) -> &'static str {
        match self {
            Client::Ours => "oauth2-sendmail",
            Client::Msmtp => "msmtp",
        }
    }
}

/// Where the clients connect: straight to the fakes, or through the delaying proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Net {
    Local,
    Rtt,
    /// With latency, to a fake server that does not offer CHUNKING (DATA, not BDAT).
    RttNoChunking,
    /// Local, to a second fake server, so that cloning its recorded deliveries (to check
    /// them) never copies the large messages into every other run's check.
    LocalBig,
}

/// The token cache before a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// Valid for an hour: no request to the token endpoint.
    Cached,
    /// Expired, with a valid refresh token: one refresh first.
    Expired,
}

/// One run's figures.
#[derive(Debug, Clone)]
struct Sample {
    wall: Duration,
    /// Peak RSS in KiB (GNU time's `%M`: the largest process of the run's tree).
    rss_kib: Option<u64>,
    /// User + system CPU time of the run's processes (GNU time's `%U + %S`).
    cpu: Option<Duration>,
    /// SMTP waits (see `proxy::ConnLog::turns`; the greeting is not counted).
    waits: Option<usize>,
    /// Turns on the token endpoint's connections.
    token_turns: Option<usize>,
}

struct Bench {
    opts: Options,
    sandbox: Sandbox,
    idp: FakeIdp,
    smtp: FakeSmtp,
    big_smtp: FakeSmtp,
    /// Without CHUNKING, behind its own delaying proxy.
    plain_smtp: FakeSmtp,
    plain_proxy: DelayProxy,
    smtp_proxy: DelayProxy,
    idp_proxy: DelayProxy,
    /// Zero-delay relays for the local rows (so their waits are counted too).
    smtp_relay: DelayProxy,
    big_relay: DelayProxy,
    idp_relay: DelayProxy,
    ca_file: PathBuf,
    exe: PathBuf,
    msmtp: Option<PathBuf>,
    gnu_time: Option<PathBuf>,
    notes: Vec<String>,
}

fn main() {
    // Inside the system-mode bench's mount namespace: time the runs asked for, nothing else.
    if let Ok(mode) = std::env::var("BENCH_SYSTEM_CHILD") {
        system::child(&mode);
        return;
    }
    // `cargo bench` passes --bench; any other run (`cargo test --all-targets`) skips.
    if !std::env::args().any(|a| a == "--bench") {
        println!("send bench: skipped (run scripts/bench or cargo bench --bench send)");
        return;
    }
    let opts = Options::from_env();
    support::install_provider();
    // BENCH_ONLY=stores: only the token store and proxy rows.
    if std::env::var("BENCH_ONLY").is_ok_and(|v| v == "stores") {
        let exe = PathBuf::from(Sandbox::new().command(&[]).get_program());
        stores::run(&exe, opts.rtt, opts.reps);
        return;
    }
    // BENCH_ONLY=system: the system-mode rows alone (they need no msmtp and no table).
    if std::env::var("BENCH_ONLY").is_ok_and(|v| v == "system") {
        let exe = PathBuf::from(Sandbox::new().command(&[]).get_program());
        system::run(&exe, opts.rtt, opts.reps, opts.queue_n);
        return;
    }
    let ca = TestCa::new();
    let idp = FakeIdp::start(&ca);
    let smtp = FakeSmtp::start(
        &ca,
        Behaviour::default().accept_tokens(&idp.valid_access_tokens()),
    );
    // Exchange Online's 150 MiB SIZE would refuse the 200 MiB row's message.
    let big_smtp = FakeSmtp::start(
        &ca,
        Behaviour {
            size: Some(1 << 40),
            ..Behaviour::default().accept_tokens(&idp.valid_access_tokens())
        },
    );
    let plain_smtp = FakeSmtp::start(
        &ca,
        Behaviour {
            chunking: false,
            ..Behaviour::default().accept_tokens(&idp.valid_access_tokens())
        },
    );
    let plain_proxy = DelayProxy::start(plain_smtp.addr(), opts.rtt);
    let smtp_proxy = DelayProxy::start(smtp.addr(), opts.rtt);
    let big_relay = DelayProxy::start(big_smtp.addr(), Duration::ZERO);
    let idp_proxy = DelayProxy::start(idp.addr, opts.rtt);
    let smtp_relay = DelayProxy::start(smtp.addr(), Duration::ZERO);
    let idp_relay = DelayProxy::start(idp.addr, Duration::ZERO);
    let sandbox = Sandbox::new();
    let ca_file = sandbox.write_file("ca.pem", &ca.ca_pem);
    let exe = PathBuf::from(sandbox.command(&[]).get_program());
    let mut bench = Bench {
        opts,
        sandbox,
        idp,
        smtp,
        big_smtp,
        plain_smtp,
        plain_proxy,
        smtp_proxy,
        idp_proxy,
        smtp_relay,
        big_relay,
        idp_relay,
        ca_file,
        exe,
        msmtp: which("msmtp"),
        gnu_time: Some(PathBuf::from("/usr/bin/time")).filter(|p| p.exists()),
        notes: Vec::new(),
    };
    bench.run_all();
}

/// The first `name` on `$PATH`.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A plain-text message of about `size` bytes with LF line endings, as a mail user agent
/// pipes it to sendmail.
fn message(size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: Alice <{EMAIL}>\nTo: Bob <{RCPT}>\nSubject: bench\n\
         Date: Sun, 22 Nov 2026 10:00:00 +0000\nMessage-ID: <bench-{size}@example.org>\n\
         MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\n"
    )
    .into_bytes();
    // Base64-looking lines of 76 characters, from a small generator (no repetition to
    // flatter a compressor; TLS does not compress anyway).
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x: u32 = 0x9e37_79b9;
    while m.len() + 77 <= size {
        for _ in 0..76 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            m.push(alphabet[(x % 64) as usize]);
        }
        m.push(b'\n');
    }
    m
}

/// `n` queued messages for the bench account, each backed off for an hour, written in
/// the queue's format (`ID.mail`: the metadata line, then the message; `ID.state`).
fn write_backlog(queue: &Path, n: usize) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(queue).unwrap();
    std::fs::set_permissions(queue, std::fs::Permissions::from_mode(0o700)).unwrap();
    let meta = json!({
        "account": ACCOUNT,
        "envelope": {"from": EMAIL, "recipients": [RCPT],
                     "dsn": {"notify": null, "ret": null, "envid": null},
                     "eight_bit": false, "smtputf8": false},
        "created_at": now(),
    });
    let state =
        json!({"attempts": 1, "next_attempt": now() + 3600, "last_error": "451 4.3.0 later"});
    let mut mail = serde_json::to_vec(&meta).unwrap();
    mail.push(b'\n');
    mail.extend_from_slice(&message(1024));
    let state = serde_json::to_vec(&state).unwrap();
    for i in 0..n {
        let id = format!("{:016}-1-{i:08x}", 1_000_000 + i);
        let write = |name: String, bytes: &[u8]| {
            let path = queue.join(name);
            std::fs::write(&path, bytes).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        };
        write(format!("{id}.mail"), &mail);
        write(format!("{id}.state"), &state);
    }
}

/// `message(size)` written to `path` in pieces (the huge message is never in memory).
fn write_message(path: &Path, size: usize) {
    use std::io::Write as _;
    let piece = message(1 << 20);
    let head_end = piece.windows(2).position(|w| w == b"\n\n").unwrap() + 2;
    let mut out = std::io::BufWriter::new(File::create(path).unwrap());
    out.write_all(&piece).unwrap();
    let mut written = piece.len();
    while written + (piece.len() - head_end) <= size {
        out.write_all(&piece[head_end..]).unwrap();
        written += piece.len() - head_end;
    }
    out.flush().unwrap();
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 10_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

/// A table row.
struct Row {
    scenario: String,
    client: Client,
    samples: Vec<Sample>,
    /// The wall time of the same scenario without latency, for `(wall − local)/RTT`.
    local: Option<Duration>,
    /// `samples` are this many messages each (queue flush).
    per: usize,
    target: Target,
}

#[derive(Clone, Copy)]
enum Target {
    None,
    /// ≤ waits, ≤ ratio × msmtp.
    WaitsRatio(usize, f64),
    Ratio(f64),
    /// ≤ ratio × msmtp, peak RSS ≤ MiB.
    RatioRss(f64, u64),
    /// ≤ this many round trips per message.
    RttPerMessage(f64),
    /// Median wall time ≤ this many milliseconds.
    WallMs(f64),
    /// Peak RSS ≤ MiB.
    Rss(u64),
}

impl Row {
    fn wall(&self) -> Option<Duration> {
        (!self.samples.is_empty()).then(|| median(self.samples.iter().map(|s| s.wall).collect()))
    }

    fn waits(&self) -> Option<usize> {
        let mut w: Vec<usize> = self.samples.iter().filter_map(|s| s.waits).collect();
        w.sort_unstable();
        w.get(w.len() / 2).copied()
    }

    fn cpu(&self) -> Option<Duration> {
        let cpu: Vec<Duration> = self.samples.iter().filter_map(|s| s.cpu).collect();
        (!cpu.is_empty()).then(|| median(cpu))
    }

    fn rss(&self) -> Option<u64> {
        self.samples.iter().filter_map(|s| s.rss_kib).max()
    }
}

impl Bench {
    /// The sections with their own tables: Graph, and system mode.
    fn other_sections(&self) {
        // Microsoft Graph: its own rows; BENCH_GRAPH=0 skips them.
        if std::env::var("BENCH_GRAPH").map_or(true, |v| v != "0") {
            graph::run(&self.exe, self.opts.rtt, self.opts.reps);
            graph::run_large(
                &self.exe,
                self.opts.rtt,
                self.opts.big_bytes >> 20,
                self.gnu_time.as_deref(),
            );
        }
        // System mode: the maildrop and the flusher; BENCH_SYSTEM=0 skips them.
        if std::env::var("BENCH_SYSTEM").map_or(true, |v| v != "0") {
            system::run(&self.exe, self.opts.rtt, self.opts.reps, self.opts.queue_n);
        }
        // token_store and proxy (issue #18): BENCH_STORES=0 skips them.
        if std::env::var("BENCH_STORES").map_or(true, |v| v != "0") {
            stores::run(&self.exe, self.opts.rtt, self.opts.reps);
        }
    }

    fn run_all(&mut self) {
        self.print_header();
        let small = self.sandbox.path().join("msg-1k.eml");
        std::fs::write(&small, message(1024)).unwrap();
        let big = self.sandbox.path().join("msg-big.eml");
        std::fs::write(&big, message(self.opts.big_bytes)).unwrap();
        let clients: Vec<Client> = [Client::Ours, Client::Msmtp]
            .into_iter()
            .filter(|c| *c == Client::Ours || self.msmtp.is_some())
            .collect();
        // Warm the page cache and the dynamic loader for both programs.
        for &c in &clients {
            let _ = self.sample(c, Net::Local, Token::Cached, &small);
        }

        let rtt_ms = self.opts.rtt.as_millis();
        let (reps, big_reps) = (self.opts.reps, self.opts.big_reps);
        let local_1k = self.pair(&clients, Net::Local, Token::Cached, &small, reps);
        let local_exp = self.pair(&clients, Net::Local, Token::Expired, &small, reps);
        let rtt_1k = self.pair(&clients, Net::Rtt, Token::Cached, &small, reps);
        let rtt_exp = self.pair(&clients, Net::Rtt, Token::Expired, &small, reps);
        let rtt_plain = self.pair(&clients, Net::RttNoChunking, Token::Cached, &small, reps);
        let local_big = self.pair(&clients, Net::LocalBig, Token::Cached, &big, big_reps);
        let mib = self.opts.big_bytes >> 20;
        let huge_mib = self.opts.huge_bytes >> 20;
        let local_huge = self.huge_run();
        let mut rows = Vec::new();
        let mut add =
            |scenario: String, samples: &[Vec<Sample>], local: Option<&[Vec<Sample>]>, target| {
                for (i, &client) in clients.iter().enumerate() {
                    rows.push(Row {
                        scenario: scenario.clone(),
                        client,
                        samples: samples[i].clone(),
                        local: local.and_then(|l| (!l[i].is_empty()).then(|| median_of(&l[i]))),
                        per: 1,
                        target: if client == Client::Ours {
                            target
                        } else {
                            Target::None
                        },
                    });
                }
            };
        let name = |token: &str, net: &str, size: &str| format!("{token}, {net}, {size}");
        let rtt = format!("{rtt_ms} ms RTT");
        add(
            name("cached", &rtt, "CHUNKING, 1 KiB"),
            &rtt_1k,
            Some(&local_1k),
            Target::WaitsRatio(5, 0.82),
        );
        add(
            name("cached", &rtt, "no CHUNKING, 1 KiB"),
            &rtt_plain,
            None,
            Target::WaitsRatio(6, 0.82),
        );
        add(
            name("expired", &rtt, "1 KiB"),
            &rtt_exp,
            Some(&local_exp),
            Target::Ratio(0.6),
        );
        add(
            name("cached", "local", "1 KiB"),
            &local_1k,
            None,
            Target::WallMs(10.0),
        );
        add(
            name("expired", "local", "1 KiB"),
            &local_exp,
            None,
            Target::None,
        );
        let big_name = name("cached", "local", &format!("{mib} MiB"));
        add(big_name, &local_big, None, Target::RatioRss(0.3, 16));
        if self.opts.huge_bytes > 0 {
            rows.push(Row {
                scenario: name("cached", "local", &format!("{huge_mib} MiB")),
                client: Client::Ours,
                samples: local_huge,
                local: None,
                per: 1,
                target: Target::Rss(16),
            });
        }
        rows.extend(self.backlog_row(&small, &local_1k[0]));
        if self.opts.queue_n > 0 {
            rows.extend(self.queue_rows(&small, clients.contains(&Client::Msmtp)));
        }
        println!();
        print!("{}", self.table(&rows));
        self.other_sections();
        if !self.notes.is_empty() {
            println!();
            for n in &self.notes {
                println!("note: {n}");
            }
        }
    }

    /// The backlog row, against the local 1 KiB row's median (`local`).
    fn backlog_row(&mut self, msg: &Path, local: &[Sample]) -> Option<Row> {
        if self.opts.backlog == 0 || local.is_empty() {
            return None;
        }
        let local = median_of(local).as_secs_f64() * 1000.0;
        Some(Row {
            scenario: format!("cached, local, 1 KiB, {} queued", self.opts.backlog),
            client: Client::Ours,
            samples: self.backlog_run(msg),
            local: None,
            per: 1,
            // The queue's length must not show: within 2 ms of the row without it.
            target: Target::WallMs(((local + 2.0) * 10.0).round() / 10.0),
        })
    }

    /// Local 1 KiB sends (ours) with `backlog` messages of the same account queued and
    /// backed off, as an older version left them (no due index): the first send builds the
    /// index and is not counted; the others show whether the queue's length costs a send.
    fn backlog_run(&mut self, msg: &Path) -> Vec<Sample> {
        let queue = self.sandbox.path().join("state/oauth2-sendmail/queue");
        write_backlog(&queue, self.opts.backlog);
        let _ = self.sample(Client::Ours, Net::Local, Token::Cached, msg);
        let samples = self.pair(
            &[Client::Ours],
            Net::Local,
            Token::Cached,
            msg,
            self.opts.reps,
        );
        let _ = std::fs::remove_dir_all(&queue);
        samples.into_iter().next().unwrap_or_default()
    }

    /// The huge message: ours only (msmtp holds it all in memory and takes a long while),
    /// once; its file is removed afterwards.
    fn huge_run(&mut self) -> Vec<Sample> {
        if self.opts.huge_bytes == 0 {
            return Vec::new();
        }
        let huge = self.sandbox.path().join("msg-huge.eml");
        write_message(&huge, self.opts.huge_bytes);
        let samples = self.pair(&[Client::Ours], Net::LocalBig, Token::Cached, &huge, 1);
        let _ = std::fs::remove_file(&huge);
        samples.into_iter().next().unwrap_or_default()
    }

    fn print_header(&self) {
        let o = &self.opts;
        let msmtp = self.msmtp.as_ref().map_or_else(
            || "not installed, its rows are skipped".to_owned(),
            |p| p.display().to_string(),
        );
        let time = if self.gnu_time.is_some() {
            "yes"
        } else {
            "no (/usr/bin/time missing)"
        };
        println!(
            "send bench: RTT {} ms, {} reps ({} for {} MiB, {} for the queue of {}); binary {}; \
             msmtp: {msmtp}; peak RSS via GNU time: {time}",
            o.rtt.as_millis(),
            o.reps,
            o.big_reps,
            o.big_bytes >> 20,
            o.queue_reps,
            o.queue_n,
            self.exe.display(),
        );
        println!("{}", explanation(o.rtt));
    }

    /// The queue flush and, when msmtp is installed, as many separate msmtp runs.
    fn queue_rows(&mut self, msg: &Path, msmtp: bool) -> Vec<Row> {
        let n = self.opts.queue_n;
        let rtt_ms = self.opts.rtt.as_millis();
        let mut rows = vec![Row {
            scenario: format!("queue of {n}, {rtt_ms} ms RTT"),
            client: Client::Ours,
            samples: self.queue_flush(msg),
            local: None,
            per: n,
            target: Target::RttPerMessage(3.0),
        }];
        if msmtp {
            rows.push(Row {
                scenario: format!("{n} separate runs, {rtt_ms} ms RTT"),
                client: Client::Msmtp,
                samples: self.msmtp_runs(msg),
                local: None,
                per: n,
                target: Target::None,
            });
        }
        rows
    }

    /// `reps` runs of each client, alternating, so drift affects both alike.
    fn pair(
        &mut self,
        clients: &[Client],
        net: Net,
        token: Token,
        msg: &Path,
        reps: usize,
    ) -> Vec<Vec<Sample>> {
        let mut out = vec![Vec::new(); clients.len()];
        let mut failed = vec![false; clients.len()];
        for _ in 0..reps {
            for (i, &c) in clients.iter().enumerate() {
                if failed[i] {
                    continue;
                }
                match self.sample(c, net, token, msg) {
                    Ok(s) => out[i].push(s),
                    Err(e) => {
                        failed[i] = true;
                        out[i].clear();
                        self.notes.push(format!(
                            "{} failed ({net:?}, {token:?}, {}): {e}",
                            c.name(),
                            msg.file_name().unwrap().to_string_lossy()
                        ));
                    }
                }
            }
        }
        out
    }

    /// Points both clients at the fakes, directly or through the proxies.
    fn configure(&self, net: Net) {
        let (smtp_port, token_url) = match net {
            Net::Local => (self.smtp_relay.port(), self.idp_relay.port()),
            Net::LocalBig => (self.big_relay.port(), self.idp_relay.port()),
            Net::Rtt => (self.smtp_proxy.port(), self.idp_proxy.port()),
            Net::RttNoChunking => (self.plain_proxy.port(), self.idp_proxy.port()),
        };
        let token_url = format!("https://127.0.0.1:{token_url}/bench/oauth2/v2.0/token");
        let ca = self.ca_file.display();
        self.sandbox.write_config(&format!(
            "[accounts.{ACCOUNT}]\nprovider = \"microsoft\"\nemail = \"{EMAIL}\"\n\
             client_id = \"{CLIENT_ID}\"\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {smtp_port}\n\
             token_url = \"{token_url}\"\ntls_ca_file = \"{ca}\"\nqueue = \"never\"\n"
        ));
        let rc = self.sandbox.write_file(
            "msmtprc",
            &format!(
                "defaults\nsyslog off\n\naccount {ACCOUNT}\nhost 127.0.0.1\nport {smtp_port}\n\
                 tls on\ntls_starttls on\ntls_trust_file {ca}\nauth xoauth2\nuser {EMAIL}\n\
                 from {EMAIL}\npasswordeval \"{} token {ACCOUNT}\"\n\naccount default : {ACCOUNT}\n",
                self.exe.display()
            ),
        );
        support::set_mode(&rc, 0o600);
    }

    fn seed(&self, token: Token) {
        let rt = self.idp.issue_refresh_token();
        let (at, expires_at) = match token {
            Token::Cached => (self.idp.issue_access_token(), now() + 3600),
            Token::Expired => ("at-expired".to_owned(), now() - 10),
        };
        self.sandbox.seed_token(
            ACCOUNT,
            &json!({"access_token": at, "expires_at": expires_at, "refresh_token": rt}),
        );
    }

    /// The client's command under GNU time (peak RSS to `rss_file`), in the sandbox's
    /// environment.
    fn command(&self, client: Client, args: &[OsString], rss_file: &Path) -> Command {
        let program = match client {
            Client::Ours => self.exe.clone(),
            Client::Msmtp => self.msmtp.clone().expect("msmtp is installed"),
        };
        // BENCH_WRAP="strace -f -c -o /tmp/s" (say) runs our client under a tracer.
        let wrap: Vec<String> = std::env::var("BENCH_WRAP")
            .ok()
            .filter(|_| client == Client::Ours)
            .map(|w| w.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        let mut cmd = match &self.gnu_time {
            Some(time) => {
                let mut c = Command::new(time);
                c.arg("-o")
                    .arg(rss_file)
                    .args(["-f", "%M %U %S"])
                    .args(&wrap)
                    .arg(program);
                c
            }
            None if !wrap.is_empty() => {
                let mut c = Command::new(&wrap[0]);
                c.args(&wrap[1..]).arg(program);
                c
            }
            None => Command::new(program),
        };
        cmd.args(args).env_clear();
        for (k, v) in self.sandbox.command(&[]).get_envs() {
            if let Some(v) = v {
                cmd.env(k, v);
            }
        }
        cmd
    }

    /// One send of `msg`: a fresh config and token cache, then the timed run.
    fn sample(&self, client: Client, net: Net, token: Token, msg: &Path) -> Result<Sample, String> {
        self.configure(net);
        self.seed(token);
        let args: Vec<OsString> = match client {
            Client::Ours => vec!["-oi".into(), "-t".into()],
            Client::Msmtp => vec![
                "-C".into(),
                self.sandbox.path().join("msmtprc").into(),
                "-t".into(),
            ],
        };
        self.timed(client, net, &args, msg, 1)
    }

    /// Runs the client once and checks that `deliveries` messages arrived.
    fn timed(
        &self,
        client: Client,
        net: Net,
        args: &[OsString],
        stdin: &Path,
        deliveries: usize,
    ) -> Result<Sample, String> {
        let (fake, smtp_proxy, idp_proxy) = match net {
            Net::Local => (&self.smtp, &self.smtp_relay, &self.idp_relay),
            Net::LocalBig => (&self.big_smtp, &self.big_relay, &self.idp_relay),
            Net::Rtt => (&self.smtp, &self.smtp_proxy, &self.idp_proxy),
            Net::RttNoChunking => (&self.plain_smtp, &self.plain_proxy, &self.idp_proxy),
        };
        let before = fake.deliveries().len();
        // Anything left from an earlier run must not count for this one.
        let _ = smtp_proxy.take(SETTLE);
        let _ = idp_proxy.take(SETTLE);
        let rss_file = self.sandbox.path().join("rss.txt");
        let _ = std::fs::remove_file(&rss_file);
        let mut cmd = self.command(client, args, &rss_file);
        cmd.stdin(File::open(stdin).map_err(|e| e.to_string())?)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let start = Instant::now();
        let out = cmd.output().map_err(|e| format!("cannot run: {e}"))?;
        let wall = start.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // GNU time reports a failed command on its own output file, not on stderr.
        if !out.status.success() || !stderr.trim().is_empty() {
            return Err(format!(
                "exit {:?}; stderr: {}; stdout: {}",
                out.status.code(),
                stderr.trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            ));
        }
        let arrived = fake.wait_for(SETTLE, |s| s.deliveries().len() >= before + deliveries);
        if !arrived {
            return Err(format!(
                "{} of {deliveries} message(s) reached the fake server",
                fake.deliveries().len() - before
            ));
        }
        let time = std::fs::read_to_string(&rss_file).unwrap_or_default();
        let fields: Vec<&str> = time.lines().last().unwrap_or("").split(' ').collect();
        let rss_kib = fields.first().and_then(|f| f.parse().ok());
        let cpu = match fields[..] {
            [_, user, system] => user
                .parse::<f64>()
                .and_then(|u| Ok(Duration::from_secs_f64(u + system.parse::<f64>()?)))
                .ok(),
            _ => None,
        };
        let smtp = smtp_proxy.take(SETTLE);
        let idp = idp_proxy.take(SETTLE);
        if std::env::var_os("BENCH_TRACE").is_some() {
            println!(
                "trace: {} {net:?} {args:?}, wall {}",
                client.name(),
                ms(wall)
            );
            for c in &smtp {
                print!("{}", c.timeline());
            }
        }
        // With no delay, bytes a client sent without waiting can race the server's reply
        // to the proxy, so turns are only counted with latency.
        let (waits, token_turns) = match net {
            Net::Local | Net::LocalBig => (None, None),
            // Neither the greeting nor the TLS handshake (one round trip in TLS 1.3, the
            // same for every client) is counted, as the issue's list of waits has it.
            Net::Rtt | Net::RttNoChunking => (
                Some(smtp.iter().map(|c| c.turns().saturating_sub(2)).sum()),
                Some(idp.iter().map(proxy::ConnLog::turns).sum()),
            ),
        };
        Ok(Sample {
            wall,
            rss_kib,
            cpu,
            waits,
            token_turns,
        })
    }

    /// Enqueues `queue_n` messages with `-odq`, then times `queue flush` through the proxy.
    fn queue_flush(&mut self, msg: &Path) -> Vec<Sample> {
        let n = self.opts.queue_n;
        let mut samples = Vec::new();
        for _ in 0..self.opts.queue_reps {
            self.configure(Net::Rtt);
            self.seed(Token::Cached);
            let enqueue = ["-odq", "-oi", "-t"].map(OsString::from);
            let mut enqueued = Duration::ZERO;
            for _ in 0..n {
                match self.timed(Client::Ours, Net::Local, &enqueue, msg, 0) {
                    Ok(s) => enqueued += s.wall,
                    Err(e) => {
                        self.notes.push(format!("enqueue failed: {e}"));
                        return Vec::new();
                    }
                }
            }
            let flush = ["queue", "flush"].map(OsString::from);
            let connections = self.smtp.connections();
            match self.timed(Client::Ours, Net::Rtt, &flush, msg, n) {
                Ok(s) => {
                    self.notes.push(format!(
                        "queue: enqueueing {n} messages with -odq took {} in all ({} each, \
                         two fsyncs per message); the flush waited {} times on {} SMTP \
                         connection(s)",
                        ms(enqueued),
                        ms(enqueued / n as u32),
                        s.waits.unwrap_or(0),
                        self.smtp.connections() - connections
                    ));
                    samples.push(s);
                }
                Err(e) => {
                    let left = self.queue_listing();
                    self.notes
                        .push(format!("queue flush failed: {e}; queue now: {left}"));
                    return Vec::new();
                }
            }
        }
        samples
    }

    fn queue_listing(&self) -> String {
        let out = self
            .sandbox
            .command(&["queue", "list"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let lines = out.lines().count();
        format!("{lines} line(s), first: {:?}", out.lines().next())
    }

    /// `queue_n` separate msmtp runs (cached token) through the proxy; one sample each
    /// repetition with the summed wall time and waits and the largest RSS.
    fn msmtp_runs(&mut self, msg: &Path) -> Vec<Sample> {
        let mut samples = Vec::new();
        for _ in 0..self.opts.queue_reps {
            let mut total = Sample {
                wall: Duration::ZERO,
                rss_kib: None,
                cpu: Some(Duration::ZERO),
                waits: Some(0),
                token_turns: Some(0),
            };
            for _ in 0..self.opts.queue_n {
                match self.sample(Client::Msmtp, Net::Rtt, Token::Cached, msg) {
                    Ok(s) => {
                        total.wall += s.wall;
                        total.rss_kib = total.rss_kib.max(s.rss_kib);
                        total.cpu = total.cpu.zip(s.cpu).map(|(a, b)| a + b);
                        total.waits = Some(total.waits.unwrap_or(0) + s.waits.unwrap_or(0));
                    }
                    Err(e) => {
                        self.notes.push(format!("msmtp run failed: {e}"));
                        return Vec::new();
                    }
                }
            }
            samples.push(total);
        }
        samples
    }

    fn table(&self, rows: &[Row]) -> String {
        let mut lines = vec![
            [
                "scenario",
                "client",
                "median wall",
                "min–max",
                "waits",
                "(wall−local)/RTT",
                "peak RSS",
                "CPU",
                "× msmtp",
                "target",
                "met",
            ]
            .map(str::to_owned),
        ];
        lines.extend(rows.iter().map(|r| self.cells(r, rows)));
        let widths: Vec<usize> = (0..11)
            .map(|i| lines.iter().map(|l| l[i].chars().count()).max().unwrap())
            .collect();
        let mut out = String::new();
        for (n, l) in lines.iter().enumerate() {
            let cells: Vec<String> = l
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            let _ = writeln!(out, "{}", cells.join("  ").trim_end());
            if n == 0 {
                let _ = writeln!(out, "{}", "-".repeat(widths.iter().sum::<usize>() + 20));
            }
        }
        let turns: Vec<String> = rows
            .iter()
            .filter_map(|r| {
                let t = r.samples.iter().filter_map(|s| s.token_turns).max()?;
                (t > 0 && r.waits().is_some())
                    .then(|| format!("{} / {}: {t}", r.scenario, r.client.name()))
            })
            .collect();
        if !turns.is_empty() {
            let _ = writeln!(
                out,
                "\ntoken endpoint turns (HTTPS through the same proxy; connecting not counted): {}",
                turns.join("; ")
            );
        }
        out
    }

    /// One row's cells; `rows` holds msmtp's figures for the ratio.
    fn cells(&self, r: &Row, rows: &[Row]) -> [String; 11] {
        let rtt = self.opts.rtt.as_secs_f64();
        let Some(wall) = r.wall() else {
            let mut cells = [r.scenario.as_str(), r.client.name(), "failed"]
                .into_iter()
                .chain(std::iter::repeat_n("", 7))
                .chain(["no"])
                .map(str::to_owned);
            return std::array::from_fn(|_| cells.next().unwrap_or_default());
        };
        let min = r.samples.iter().map(|s| s.wall).min().unwrap();
        let max = r.samples.iter().map(|s| s.wall).max().unwrap();
        let waits = r.waits();
        let waits_text = match (waits, r.per) {
            (None, _) => "–".to_owned(),
            (Some(w), 1) => w.to_string(),
            (Some(w), per) => format!("{w} ({:.1}/msg)", w as f64 / per as f64),
        };
        let rtts = match (r.local, r.per) {
            (Some(local), _) => format!("{:.1}", (wall.as_secs_f64() - local.as_secs_f64()) / rtt),
            (None, per) if per > 1 => format!("{:.2}/msg", wall.as_secs_f64() / per as f64 / rtt),
            (None, _) => "–".to_owned(),
        };
        let rss = r.rss();
        let versus = (r.client == Client::Ours)
            .then(|| {
                rows.iter()
                    .find(|o| {
                        o.client == Client::Msmtp
                            && if r.per > 1 {
                                o.per == r.per
                            } else {
                                o.scenario == r.scenario
                            }
                    })
                    .and_then(Row::wall)
            })
            .flatten()
            .map(|m| wall.as_secs_f64() / m.as_secs_f64());
        let (target, met) = match r.target {
            Target::None => (String::new(), None),
            Target::WaitsRatio(w, x) => (
                format!("≤{w} waits, ≤{x}×"),
                versus.map(|v| v <= x && waits.is_some_and(|n| n <= w)),
            ),
            Target::Ratio(x) => (format!("≤{x}×"), versus.map(|v| v <= x)),
            Target::RatioRss(x, mib) => (
                format!("≤{x}×, RSS ≤{mib} MiB"),
                versus.map(|v| v <= x && rss.is_some_and(|k| k <= mib * 1024)),
            ),
            Target::WallMs(x) => (format!("≤{x} ms"), Some(wall.as_secs_f64() * 1000.0 <= x)),
            Target::Rss(mib) => (format!("RSS ≤{mib} MiB"), rss.map(|k| k <= mib * 1024)),
            Target::RttPerMessage(x) => (
                format!("≤{x} RTT/msg"),
                Some(wall.as_secs_f64() / r.per as f64 / rtt <= x),
            ),
        };
        let met = match met {
            None if target.is_empty() => String::new(),
            None => "n/a".to_owned(),
            Some(true) => "yes".to_owned(),
            Some(false) => "NO".to_owned(),
        };
        [
            r.scenario.clone(),
            r.client.name().to_owned(),
            ms(wall),
            format!("{}–{}", ms(min), ms(max)),
            waits_text,
            rtts,
            rss.map_or("–".to_owned(), |k| {
                format!("{:.1} MiB", k as f64 / 1024.0)
            }),
            r.cpu().map_or("–".to_owned(), ms),
            versus.map_or("–".to_owned(), |v| format!("{v:.2}")),
            target,
            met,
        ]
    }
}

fn median_of(samples: &[Sample]) -> Duration {
    median(samples.iter().map(|s| s.wall).collect())
}

/// The header that says what the columns mean.
fn explanation(rtt: Duration) -> String {
    let half = rtt.as_millis() / 2;
    format!(
        "\
Everything runs on 127.0.0.1: fake ESMTP servers (STARTTLS, PIPELINING, XOAUTH2; one with
CHUNKING as Exchange Online, one without) and a fake token endpoint (HTTPS), in this process.
Access tokens are of realistic size (2,048 characters: an XOAUTH2 string over 2,500 bytes);
our account is `provider = \"microsoft\"` (AUTH on one line, as Exchange takes it). \"RTT\" rows go through a TCP proxy that
delays every chunk by {half} ms each way, in order, and opens its upstream connection 1.5 RTT
after accepting (connecting costs one round trip). \"local\" rows go through a zero-delay relay.
Both acknowledge the fake server's bytes at once (TCP_QUICKACK), so no delayed-ACK stall of
the fakes' own can reach either client's figures (the fakes also set TCP_NODELAY).
waits: on the SMTP connection, how many times the client sent something (or closed) only after
  server data had reached it since it last sent, i.e. round trips it could not avoid by
  pipelining; neither the greeting nor the TLS handshake is counted. An ideal client has 6
  with DATA: EHLO, STARTTLS, EHLO, AUTH, MAIL+RCPT+DATA, the message (QUIT pipelined after it,
  its reply not awaited); 5 with CHUNKING and one recipient: MAIL+RCPT+BDAT LAST, the message
  and QUIT in one flight.
  Counted only with latency (without it, unrelated sends race the replies).
(wall−local)/RTT: the median minus the same scenario's local median, in round trips.
peak RSS: GNU time's %M, the largest process of the run (for msmtp, msmtp or its token helper).
CPU: GNU time's user + system time of the client's processes (10 ms resolution), median.
msmtp gets its token from `oauth2-sendmail token` via passwordeval (run before it connects)."
    )
}
