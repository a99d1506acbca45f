//! A slow link for the test kit: a TCP relay on `127.0.0.1:0` that forwards every
//! connection to `target` at most `rate` bytes a second in each direction, as a poor
//! mobile line would. It stops accepting after `lifetime`, so a test cannot leave it behind.
//!
//! ```ignore
//! let link = SlowLink::start(graph.addr, 16 * 1024, Duration::from_secs(600));
//! // point the client at https://127.0.0.1:{link.port()} (TLS passes through untouched)
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::support::spawn_server;

pub struct SlowLink {
    addr: SocketAddr,
}

impl SlowLink {
    #[must_use]
    pub fn start(target: SocketAddr, rate: usize, lifetime: Duration) -> SlowLink {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        spawn_server(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let end = Instant::now() + lifetime;
            while let Ok(Ok((client, _))) =
                tokio::time::timeout_at(end.into(), listener.accept()).await
            {
                let Ok(server) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, rate, end));
                tokio::spawn(pump(sr, cw, rate, end));
            }
        });
        SlowLink { addr }
    }

    #[must_use]
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

/// Copies `from` to `to` at `rate` bytes a second: small reads, each followed by the
/// pause its size costs at that rate.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, rate: usize, end: Instant) {
    let mut buf = vec![0u8; 1024];
    while Instant::now() < end {
        let Ok(n) = from.read(&mut buf).await else {
            break;
        };
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        // What these bytes cost at `rate` (no credit saved up while idle: no bursts).
        let secs = u32::try_from(n).unwrap_or(u32::MAX);
        let rate = u32::try_from(rate).unwrap_or(u32::MAX);
        tokio::time::sleep(Duration::from_secs(1) * secs / rate).await;
    }
    let _ = to.shutdown().await;
}
