//! A TCP proxy on `127.0.0.1:0` that emulates a network round-trip time, and counts how
//! often the client had to wait for the server.
//!
//! Every chunk read from either side is stamped when read and written to the other side
//! `rtt / 2` later, in order. Connecting costs one round trip as on a real network: the
//! kernel completes the client's `connect()` at once, so the proxy opens its upstream
//! connection `1.5 × rtt` after accepting (when a real server would see the handshake's
//! last ACK) and holds the client's first bytes until then. With `rtt = 0` it only relays.
//!
//! The fakes write each reply of a pipelined batch (and the TLS session tickets before the
//! EHLO reply, and the token endpoint's head before its body) separately. They set
//! `TCP_NODELAY` now, but a server without it would have Nagle hold its second write until
//! the first is acknowledged (~40 ms of delayed ACK). Real submission servers answer a
//! batch in one write; to keep any such artifact out of both clients' figures, the proxy
//! acknowledges the server's bytes at once (`TCP_QUICKACK`). Its side towards the client is
//! a plain socket, so the client's own Nagle stalls still show.
//!
//! What it cannot emulate: TCP's own ACKs still come back at loopback speed, so a Nagle
//! stall (a small write held until the previous one is acknowledged) costs the delayed-ACK
//! timer (40 ms on Linux) here, where a real network would add up to one round trip more.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::os::linux::net::TcpStreamExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};

use super::support;

/// What happened on the client's side of one proxied connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The proxy read this many bytes from the client.
    ClientSent(usize),
    /// The client closed its sending side (or the connection broke).
    ClientClosed,
    /// The proxy wrote this many of the server's bytes to the client.
    Delivered(usize),
}

/// One connection's client-side events, in time order.
#[derive(Debug, Default, Clone)]
pub struct ConnLog {
    pub events: Vec<(std::time::Instant, Event)>,
    /// Both client-side pumps have ended.
    done: u8,
}

impl ConnLog {
    /// Turns: how many times the client sent something (or closed) only after server data
    /// had reached it since it last sent. A client cannot answer bytes it has not seen, so
    /// each turn is one wait for the server: one round trip on a real network. Bytes sent
    /// without waiting (TLS Finished and the EHLO after it, a pipelined batch) make no turn.
    #[must_use]
    pub fn turns(&self) -> usize {
        let mut received = false;
        let mut turns = 0;
        for (_, event) in &self.events {
            match event {
                Event::Delivered(_) => received = true,
                Event::ClientSent(_) | Event::ClientClosed => {
                    if received {
                        turns += 1;
                    }
                    received = false;
                }
            }
        }
        turns
    }

    /// The events as `+ms dir bytes` lines, for `BENCH_TRACE=1`.
    #[must_use]
    pub fn timeline(&self) -> String {
        let Some((t0, _)) = self.events.first() else {
            return String::new();
        };
        let mut out = String::new();
        for (t, e) in &self.events {
            let at = t.duration_since(*t0).as_secs_f64() * 1000.0;
            let what = match e {
                Event::ClientSent(n) => format!("C→ {n}"),
                Event::ClientClosed => "C→ close".to_owned(),
                Event::Delivered(n) => format!("  ←S {n}"),
            };
            let _ = writeln!(out, "  {at:8.2} ms  {what}");
        }
        out
    }
}

type Shared = Arc<Mutex<ConnLog>>;

/// A running proxy; it lives until the process ends.
pub struct DelayProxy {
    port: u16,
    conns: Arc<Mutex<Vec<Shared>>>,
}

impl DelayProxy {
    /// Listens on `127.0.0.1:0` and relays every connection to `upstream` with `rtt`.
    #[must_use]
    pub fn start(upstream: SocketAddr, rtt: Duration) -> DelayProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let conns: Arc<Mutex<Vec<Shared>>> = Arc::default();
        let registry = conns.clone();
        support::spawn_server(async move {
            let listener = TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let log = Shared::default();
                registry.lock().unwrap().push(log.clone());
                tokio::spawn(relay(client, upstream, rtt, log));
            }
        });
        DelayProxy { port, conns }
    }

    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The connections accepted since the last call, each once its client side has ended
    /// (or when `within` has passed).
    #[must_use]
    pub fn take(&self, within: Duration) -> Vec<ConnLog> {
        let end = std::time::Instant::now() + within;
        loop {
            let all_done = self
                .conns
                .lock()
                .unwrap()
                .iter()
                .all(|c| c.lock().unwrap().done >= 2);
            if all_done || std::time::Instant::now() > end {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        std::mem::take(&mut *self.conns.lock().unwrap())
            .into_iter()
            .map(|c| c.lock().unwrap().clone())
            .collect()
    }
}

/// A chunk to write when due; `None` closes the sending side.
type Chunk = (Instant, Option<Vec<u8>>);

async fn relay(client: TcpStream, upstream: SocketAddr, rtt: Duration, log: Shared) {
    let half = rtt / 2;
    // A real server accepts 1.5 round trips after the client started to connect.
    let accepted_at = Instant::now() + rtt + half;
    let _ = client.set_nodelay(true);
    let (mut from_client, mut to_client) = client.into_split();
    let (up_tx, mut up_rx) = mpsc::unbounded_channel::<Chunk>();
    let (down_tx, mut down_rx) = mpsc::unbounded_channel::<Chunk>();

    let record = |log: &Shared, event: Event| {
        log.lock()
            .unwrap()
            .events
            .push((std::time::Instant::now(), event));
    };

    let reader_log = log.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = from_client.read(&mut buf).await.unwrap_or(0);
            let due = (Instant::now() + half).max(accepted_at);
            if n == 0 {
                record(&reader_log, Event::ClientClosed);
                let _ = up_tx.send((due, None));
                break;
            }
            record(&reader_log, Event::ClientSent(n));
            if up_tx.send((due, Some(buf[..n].to_vec()))).is_err() {
                break;
            }
        }
        reader_log.lock().unwrap().done += 1;
    });

    let writer_log = log.clone();
    tokio::spawn(async move {
        while let Some((due, chunk)) = down_rx.recv().await {
            wait_until(due).await;
            let Some(bytes) = chunk else { break };
            if to_client.write_all(&bytes).await.is_err() {
                break;
            }
            record(&writer_log, Event::Delivered(bytes.len()));
        }
        let _ = to_client.shutdown().await;
        writer_log.lock().unwrap().done += 1;
    });

    wait_until(accepted_at).await;
    let Ok((server, acker)) = connect(upstream).await else {
        // Dropping the senders ends the client side.
        return;
    };
    let (mut from_server, mut to_server) = server.into_split();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = from_server.read(&mut buf).await.unwrap_or(0);
            let due = Instant::now() + half;
            // Linux leaves quick-ACK mode by itself: ask again after every read.
            let _ = acker.set_quickack(true);
            let chunk = (n > 0).then(|| buf[..n].to_vec());
            if down_tx.send((due, chunk)).is_err() || n == 0 {
                break;
            }
        }
    });
    while let Some((due, chunk)) = up_rx.recv().await {
        wait_until(due).await;
        let Some(bytes) = chunk else { break };
        if to_server.write_all(&bytes).await.is_err() {
            break;
        }
    }
    let _ = to_server.shutdown().await;
}

/// Sleeps until `due`; not at all when it has passed (a timer would round up to the next
/// millisecond, which a zero-delay relay must not add).
async fn wait_until(due: Instant) {
    if due > Instant::now() {
        sleep_until(due).await;
    }
}

/// Connects with `TCP_NODELAY`; the second value is the same socket, for `TCP_QUICKACK`.
async fn connect(upstream: SocketAddr) -> std::io::Result<(TcpStream, std::net::TcpStream)> {
    let server = TcpStream::connect(upstream).await?;
    server.set_nodelay(true)?;
    let std = server.into_std()?;
    let acker = std.try_clone()?;
    acker.set_quickack(true)?;
    Ok((TcpStream::from_std(std)?, acker))
}
