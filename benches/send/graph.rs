//! The Microsoft Graph scenario (issue #11): one `transport = "graph"` send through the
//! latency proxy to the fake Graph (and the fake token endpoint), with a cached Graph token
//! and with an expired one, beside the same runs without latency. Targets: at most 4 round
//! trips of wall time with a cached token (the floor is 3: TCP, TLS 1.3, one request), and
//! the refresh overlapped with the Graph connection's set-up when the token has expired
//! (about 4, where one after the other would be 6 or more).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::fake_graph::FakeGraph;
use crate::fake_idp::FakeIdp;
use crate::proxy::{ConnLog, DelayProxy};
use crate::support::{Sandbox, TestCa, now};

const ACCOUNT: &str = "graph";
const SETTLE: Duration = Duration::from_secs(3);

/// Runs the scenario and prints its rows.
pub fn run(exe: &Path, rtt: Duration, reps: usize) {
    let ca = TestCa::new();
    let idp = FakeIdp::start(&ca);
    let graph = FakeGraph::start(&ca, &idp);
    let sandbox = Sandbox::new();
    let ca_file = sandbox.write_file("ca.pem", &ca.ca_pem);
    let nets = [
        (
            "local",
            DelayProxy::start(graph.addr, Duration::ZERO),
            DelayProxy::start(idp.addr, Duration::ZERO),
        ),
        (
            "rtt",
            DelayProxy::start(graph.addr, rtt),
            DelayProxy::start(idp.addr, rtt),
        ),
    ];
    let message = b"From: alice@example.org\nTo: bob@example.net\nSubject: bench\n\nHello.\n";
    let mut medians = Vec::new();
    println!();
    println!(
        "graph: one `transport = \"graph\"` send, {} ms RTT (median of {reps}; HTTP/2 to the fake Graph)",
        rtt.as_millis()
    );
    for cached in [true, false] {
        for (net, graph_proxy, idp_proxy) in &nets {
            let mut walls = Vec::new();
            let mut turns = (0, 0);
            for _ in 0..reps {
                let run = Run {
                    exe,
                    sandbox: &sandbox,
                    idp: &idp,
                    graph: &graph,
                    ca_file: &ca_file,
                };
                match run.once(graph_proxy, idp_proxy, cached, message) {
                    Ok((wall, t)) => {
                        walls.push(wall);
                        turns = t;
                    }
                    Err(e) => {
                        println!("  failed: {e}");
                        return;
                    }
                }
            }
            walls.sort();
            let median = walls[walls.len() / 2];
            medians.push(median);
            let token = if cached { "cached" } else { "expired" };
            let ratio = if *net == "rtt" {
                let local = medians[medians.len() - 2];
                format!(
                    "  (wall−local)/RTT {:.2}",
                    (median.as_secs_f64() - local.as_secs_f64()) / rtt.as_secs_f64()
                )
            } else {
                String::new()
            };
            println!(
                "  {token:7} {net:5}  wall {:7.1} ms{ratio}  connections' turns: graph {}, token endpoint {}",
                median.as_secs_f64() * 1000.0,
                turns.0,
                turns.1
            );
        }
    }
    println!(
        "  targets: cached ≤ 4 RTT (floor 3: TCP, TLS 1.3, the POST); expired: the refresh \
         overlapped with the Graph connection's set-up (≈ 4, not 6+)"
    );
}

/// What one timed send needs.
struct Run<'a> {
    exe: &'a Path,
    sandbox: &'a Sandbox,
    idp: &'a FakeIdp,
    graph: &'a FakeGraph,
    ca_file: &'a Path,
}

impl Run<'_> {
    /// A fresh config and token cache, then one timed send; its wall time and the turns on
    /// the Graph and token endpoint connections.
    fn once(
        &self,
        graph_proxy: &DelayProxy,
        idp_proxy: &DelayProxy,
        cached: bool,
        message: &[u8],
    ) -> Result<(Duration, (usize, usize)), String> {
        let (sandbox, idp, graph) = (self.sandbox, self.idp, self.graph);
        sandbox.write_config(&format!(
            "[accounts.{ACCOUNT}]\nprovider = \"microsoft\"\nemail = \"alice@example.org\"\n\
             client_id = \"bench\"\ntoken_url = \"https://127.0.0.1:{}/bench/oauth2/v2.0/token\"\n\
             tls_ca_file = \"{}\"\ntransport = \"graph\"\ngraph_url = \"https://127.0.0.1:{}\"\n\
             graph_scopes = [\"{}/Mail.Send\", \"offline_access\"]\nqueue = \"never\"\n",
            idp_proxy.port(),
            self.ca_file.display(),
            graph_proxy.port(),
            graph.audience(),
        ));
        sandbox.seed_token(
            ACCOUNT,
            &json!({"access_token": idp.issue_access_token(), "expires_at": now() + 3600,
                    "refresh_token": idp.issue_refresh_token()}),
        );
        let (at, exp) = if cached {
            (
                idp.issue_access_token_for(&graph.audience(), false),
                now() + 3600,
            )
        } else {
            ("at-expired".to_owned(), now() - 10)
        };
        let file = sandbox
            .path()
            .join(format!("data/oauth2-sendmail/tokens/graph/{ACCOUNT}.json"));
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        }
        std::fs::write(
            &file,
            json!({"access_token": at, "expires_at": exp}).to_string(),
        )
        .map_err(|e| e.to_string())?;
        let _ = graph_proxy.take(SETTLE);
        let _ = idp_proxy.take(SETTLE);
        let before = graph.sent().len();
        let mut cmd = sandbox.program(self.exe);
        cmd.args(["-oi", "-t"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let start = Instant::now();
        let mut child = cmd.spawn().map_err(|e| e.to_string())?;
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().ok_or("no stdin")?;
            stdin.write_all(message).map_err(|e| e.to_string())?;
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        let wall = start.elapsed();
        if !out.status.success() || graph.sent().len() != before + 1 {
            return Err(format!(
                "exit {:?}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let g: Vec<ConnLog> = graph_proxy.take(SETTLE);
        let i: Vec<ConnLog> = idp_proxy.take(SETTLE);
        if std::env::var_os("BENCH_TRACE").is_some() {
            println!("trace: graph (cached {cached}), wall {wall:?}");
            for c in g.iter().chain(&i) {
                print!("{}", c.timeline());
            }
        }
        Ok((
            wall,
            (
                g.iter().map(ConnLog::turns).sum(),
                i.iter().map(ConnLog::turns).sum(),
            ),
        ))
    }
}

/// A large message through Graph (issue #16): `mib` MiB of MIME, one attachment, at `rtt`
/// to Graph and to the upload URLs, with a cached token. Prints the requests made, the
/// upload ranges, the wall time and the client's peak RSS (GNU time, when installed).
/// Targets: at most 4 + ranges requests; peak RSS at most 32 MiB.
pub fn run_large(exe: &Path, rtt: Duration, mib: usize, gnu_time: Option<&Path>) {
    let ca = TestCa::new();
    let idp = FakeIdp::start(&ca);
    let graph = FakeGraph::start(&ca, &idp);
    let graph_proxy = DelayProxy::start(graph.addr, rtt);
    let upload_proxy = DelayProxy::start(graph.upload_addr, rtt);
    graph.set_upload_base(&format!("https://127.0.0.1:{}", upload_proxy.port()));
    let sandbox = Sandbox::new();
    let ca_file = sandbox.write_file("ca.pem", &ca.ca_pem);
    sandbox.write_config(&format!(
        "[accounts.{ACCOUNT}]\nprovider = \"microsoft\"\nemail = \"alice@example.org\"\n\
         client_id = \"bench\"\ntoken_url = \"https://127.0.0.1:{}/bench/oauth2/v2.0/token\"\n\
         tls_ca_file = \"{}\"\ntransport = \"graph\"\ngraph_url = \"https://127.0.0.1:{}\"\n\
         graph_scopes = [\"{}/Mail.Send\", \"{}/Mail.ReadWrite\", \"offline_access\"]\n\
         queue = \"never\"\n",
        idp.addr.port(),
        ca_file.display(),
        graph_proxy.port(),
        graph.audience(),
        graph.audience(),
    ));
    sandbox.seed_token(
        ACCOUNT,
        &json!({"access_token": idp.issue_access_token(), "expires_at": now() + 3600,
                "refresh_token": idp.issue_refresh_token()}),
    );
    let file = sandbox
        .path()
        .join(format!("data/oauth2-sendmail/tokens/graph/{ACCOUNT}.json"));
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(
        &file,
        json!({"access_token": idp.issue_access_token_for(&graph.audience(), false),
               "expires_at": now() + 3600})
        .to_string(),
    )
    .unwrap();
    let (message, data) = large_message(mib);
    let size = data.len();
    let rss_file = sandbox.path().join("rss-graph.txt");
    let mut cmd = match gnu_time {
        Some(time) => {
            let mut c = sandbox.program(time);
            c.arg("-o").arg(&rss_file).args(["-f", "%M"]).arg(exe);
            c
        }
        None => sandbox.program(exe),
    };
    cmd.args(["-oi", "-t"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let before = graph.seen().len();
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(message.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let wall = start.elapsed();
    println!();
    println!(
        "graph, large: one {:.1} MiB message (one {:.1} MB attachment), {} ms RTT, cached token",
        message.len() as f64 / 1_048_576.0,
        size as f64 / 1e6,
        rtt.as_millis()
    );
    let delivered = graph
        .sent()
        .last()
        .is_some_and(|s| s.attachments.first().is_some_and(|a| a.bytes == data));
    if !out.status.success() || !delivered {
        println!(
            "  failed: exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return;
    }
    let seen = graph.seen();
    let requests = seen.len() - before;
    let ranges = seen[before..].iter().filter(|s| s.method == "PUT").count();
    let rss = std::fs::read_to_string(&rss_file)
        .ok()
        .and_then(|t| t.trim().lines().last()?.trim().parse::<u64>().ok());
    println!(
        "  requests {requests} ({ranges} upload ranges; target ≤ {})  wall {:.1} ms  peak RSS {}",
        4 + ranges,
        wall.as_secs_f64() * 1000.0,
        rss.map_or("– (no /usr/bin/time)".to_owned(), |k| format!(
            "{:.1} MiB (target ≤ 32 MiB)",
            k as f64 / 1024.0
        )),
    );
}

/// A message of `mib` MiB: one attachment (returned) whose base64 in 76-column lines makes
/// up nearly all of it.
fn large_message(mib: usize) -> (String, Vec<u8>) {
    use base64::Engine as _;
    // One attachment whose base64 (76-column lines) makes the message `mib` MiB.
    let size = mib * 1024 * 1024 / 78 * 57;
    let data: Vec<u8> = (0..size as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&data);
    let mut message = String::from(
        "From: alice@example.org\nTo: bob@example.net\nSubject: bench\nMIME-Version: 1.0\n\
         Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\nsee attached\n\
         --b\nContent-Type: application/pdf\nContent-Disposition: attachment; filename=\"a.pdf\"\n\
         Content-Transfer-Encoding: base64\n\n",
    );
    for line in b64.as_bytes().chunks(76) {
        message.push_str(std::str::from_utf8(line).unwrap());
        message.push('\n');
    }
    message.push_str("--b--\n");
    (message, data)
}
