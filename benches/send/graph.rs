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
