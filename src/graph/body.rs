//! Request bodies for Microsoft Graph that stream (base64 encoded on the way, or as is) and
//! say how far they got: when a byte last moved, and whether all of it has left.
//!
//! Why: a whole-message `String` of base64 plus the copy the HTTP client takes tripled the
//! memory of a large message; and a deadline on the whole request cut slow uploads that
//! were progressing. Here the body is encoded in small blocks as the connection takes
//! them, [`idle_limited`] gives up only when nothing moved for a while, and an error after
//! the body has left (`Progress::all_sent`) is the only one that may mean "delivered".
//!
//! The source is [`bytes::Bytes`] (a message in memory, shared without copying); a reader
//! over a spooled file would feed the same encoder block by block.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body::{Frame, SizeHint};

/// Input bytes per block: a multiple of 3, so blocks encode without padding in between,
/// and small enough that a slow link moves one every few seconds.
const BLOCK: usize = 48 * 1024;

/// How far one request body got.
#[derive(Debug)]
pub struct Progress {
    start: Instant,
    /// Milliseconds since `start` when a block last left.
    last_ms: AtomicU64,
    all_sent: AtomicBool,
}

impl Progress {
    #[must_use]
    pub fn new() -> Arc<Progress> {
        Arc::new(Progress {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            all_sent: AtomicBool::new(false),
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// When a byte of the body last moved (or the request started).
    #[must_use]
    pub fn last_moved(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// True once the whole body has been handed to the connection: from then on a lost
    /// answer may hide an accepted request.
    #[must_use]
    pub fn all_sent(&self) -> bool {
        self.all_sent.load(Ordering::Relaxed)
    }
}

/// A body over `data`, base64-encoded (`encode`) or as is, in blocks.
pub struct Streamed {
    data: Bytes,
    at: usize,
    encode: bool,
    progress: Arc<Progress>,
}

impl Streamed {
    #[must_use]
    pub fn new(data: Bytes, encode: bool, progress: Arc<Progress>) -> Streamed {
        Streamed {
            data,
            at: 0,
            encode,
            progress,
        }
    }

    /// The body's length on the wire.
    #[must_use]
    pub fn len(&self) -> u64 {
        let n = self.data.len();
        (if self.encode {
            crate::mime_split::base64_len(n)
        } else {
            n
        }) as u64
    }

    /// As a `reqwest` body.
    #[must_use]
    pub fn into_body(self) -> reqwest::Body {
        reqwest::Body::wrap(self)
    }
}

impl http_body::Body for Streamed {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.at >= this.data.len() {
            this.progress.all_sent.store(true, Ordering::Relaxed);
            return Poll::Ready(None);
        }
        let end = (this.at + BLOCK).min(this.data.len());
        let block = if this.encode {
            Bytes::from(base64::engine::general_purpose::STANDARD.encode(&this.data[this.at..end]))
        } else {
            this.data.slice(this.at..end)
        };
        this.at = end;
        this.progress.touch();
        if end == this.data.len() {
            this.progress.all_sent.store(true, Ordering::Relaxed);
        }
        Poll::Ready(Some(Ok(Frame::data(block))))
    }

    fn is_end_stream(&self) -> bool {
        self.at >= self.data.len()
    }

    fn size_hint(&self) -> SizeHint {
        let done = if self.encode {
            crate::mime_split::base64_len(self.at)
        } else {
            self.at
        } as u64;
        SizeHint::with_exact(self.len() - done)
    }
}

/// The request stalled: nothing moved for the idle limit.
#[derive(Debug)]
pub struct Stalled(pub Duration);

/// Runs `request` until it answers, giving up only when no byte of the body moved for
/// `idle`. Once the whole body has been handed over, the answer may wait twice that: the
/// last blocks may still be on their way (HTTP/2 lets up to one flow-control window, often
/// 1 MB, be in flight: a minute on a 16 KiB/s line), and Graph then takes its time.
pub async fn idle_limited<F, T>(
    request: F,
    progress: &Progress,
    idle: Duration,
) -> Result<T, Stalled>
where
    F: Future<Output = T>,
{
    let mut request = std::pin::pin!(request);
    loop {
        let allowed = if progress.all_sent() { idle * 2 } else { idle };
        let deadline = progress.last_moved() + allowed;
        tokio::select! {
            answer = &mut request => return Ok(answer),
            () = tokio::time::sleep_until(deadline.into()) => {
                if progress.last_moved() + allowed <= Instant::now() {
                    return Err(Stalled(allowed));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    #[tokio::test]
    async fn the_body_is_the_base64_of_the_message_in_blocks_and_says_when_it_has_left() {
        let data: Vec<u8> = (0..200_001u32).map(|i| (i * 31) as u8).collect();
        let progress = Progress::new();
        let body = Streamed::new(Bytes::from(data.clone()), true, progress.clone());
        assert_eq!(body.len(), crate::mime_split::base64_len(data.len()) as u64);
        assert!(!progress.all_sent());
        let out = body.collect().await.unwrap().to_bytes();
        assert_eq!(
            out,
            base64::engine::general_purpose::STANDARD
                .encode(&data)
                .as_bytes()
        );
        assert!(progress.all_sent());
        let raw = Streamed::new(Bytes::from(data.clone()), false, Progress::new());
        assert_eq!(raw.collect().await.unwrap().to_bytes(), data);
    }

    #[tokio::test]
    async fn only_idleness_ends_a_request() {
        let progress = Progress::new();
        // Moving every 50 ms for ten times the idle limit: never stalled.
        let p = progress.clone();
        let moving = async move {
            for _ in 0..40 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                p.touch();
            }
            "answered"
        };
        let idle = Duration::from_millis(200);
        assert_eq!(
            idle_limited(moving, &progress, idle).await.unwrap(),
            "answered"
        );
        let stuck = std::future::pending::<()>();
        assert!(idle_limited(stuck, &Progress::new(), idle).await.is_err());
    }
}
