//! The connection under the SMTP dialogue: TCP (direct or through the configured proxy,
//! `TCP_NODELAY`), the TLS handshake, and `Conn`, which writes commands and reads replies
//! with a bound on every wait and the `-v` transcript. It knows SMTP's framing (replies,
//! the 220 greeting, EHLO, STARTTLS) but not the transaction: that is `session`'s.

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::Reply;
use super::wire::{Capabilities, Command, Ehlo, MAX_REPLY_LINE, ReplyParser, Simple};
use crate::error::{Error, Phase, Result};
use crate::provider::Server;
use crate::tls;

/// Test hook: when set to a number of milliseconds, every wait below is capped at that
/// (so a "silent server" test ends in about a second). Not meant for users.
pub const TEST_TIMEOUT_ENV: &str = "OAUTH2_SENDMAIL_TEST_TIMEOUT_MS";

/// How long each wait may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub greeting: Duration,
    pub tls: Duration,
    pub reply: Duration,
    pub write: Duration,
    pub data_end: Duration,
    pub quit: Duration,
}

/// TCP connect: a submission server that has not answered a SYN in 30 s is down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The 220 greeting. RFC 5321 §4.5.3.2.1 allows 5 min for MTAs that tarpit; submission
/// servers greet at once, and a cron job should not hang for minutes before queueing.
const GREETING_TIMEOUT: Duration = Duration::from_mins(1);
/// The TLS handshake: a few round trips.
const TLS_TIMEOUT: Duration = Duration::from_secs(30);
/// Replies to EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA, RSET. RFC 5321 §4.5.3.2 suggests
/// 5 min for MAIL/RCPT; submission servers answer in well under a second, so 60 s leaves
/// room for a slow token check and still fails a hung server in reasonable time.
const REPLY_TIMEOUT: Duration = Duration::from_mins(1);
/// Each write (a command batch or one 64 KiB chunk of data): RFC 5321 §4.5.3.2.5 gives
/// 3 min per data block.
const WRITE_TIMEOUT: Duration = Duration::from_mins(3);
/// The reply after the final `.`: RFC 5321 §4.5.3.2.6 says 10 min, as the server may scan
/// the message before accepting it; a timeout here risks a duplicate, so be patient.
const DATA_END_TIMEOUT: Duration = Duration::from_mins(10);
/// Writing QUIT and closing: best effort, the message is already accepted.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: CONNECT_TIMEOUT,
            greeting: GREETING_TIMEOUT,
            tls: TLS_TIMEOUT,
            reply: REPLY_TIMEOUT,
            write: WRITE_TIMEOUT,
            data_end: DATA_END_TIMEOUT,
            quit: QUIT_TIMEOUT,
        }
    }
}

impl Timeouts {
    /// The standard values, capped by `OAUTH2_SENDMAIL_TEST_TIMEOUT_MS` when set.
    #[must_use]
    pub fn from_env() -> Timeouts {
        let cap = std::env::var(TEST_TIMEOUT_ENV)
            .ok()
            .and_then(|ms| ms.trim().parse().ok())
            .map(Duration::from_millis);
        match cap {
            Some(cap) => Timeouts::default().capped(cap),
            None => Timeouts::default(),
        }
    }

    /// Every wait at most `cap`.
    #[must_use]
    pub fn capped(self, cap: Duration) -> Timeouts {
        Timeouts {
            connect: self.connect.min(cap),
            greeting: self.greeting.min(cap),
            tls: self.tls.min(cap),
            reply: self.reply.min(cap),
            write: self.write.min(cap),
            data_end: self.data_end.min(cap),
            quit: self.quit.min(cap),
        }
    }
}

pub(super) async fn open_tcp(server: &Server, wait: Duration) -> Result<TcpStream> {
    if let Some(proxy) = &server.proxy {
        // The tunnel is set up within the same limit; TLS then runs end to end through it.
        return proxy.connect(&server.host, server.port, wait).await;
    }
    let address = server.address();
    let tcp = match tokio::time::timeout(
        wait,
        TcpStream::connect((server.host.as_str(), server.port)),
    )
    .await
    {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            return Err(Error::network(
                Phase::Connect,
                format!("cannot connect to {address}: {e}"),
            ));
        }
        Err(_) => {
            return Err(Error::network(
                Phase::Connect,
                format!("no connection to {address} within {}", human(wait)),
            ));
        }
    };
    // Each flight is one write; Nagle would hold the last one back for a delayed ACK.
    tcp.set_nodelay(true)
        .map_err(|e| Error::network(Phase::Connect, e.to_string()))?;
    Ok(tcp)
}

pub(super) async fn handshake(
    tcp: TcpStream,
    config: std::sync::Arc<rustls::ClientConfig>,
    name: rustls_pki_types::ServerName<'static>,
    wait: Duration,
    verbose: bool,
) -> Result<TlsStream<TcpStream>> {
    let connecting = TlsConnector::from(config).connect(name, tcp);
    let stream = match tokio::time::timeout(wait, connecting).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(tls::handshake_error(&e)),
        Err(_) => {
            return Err(Error::network(
                Phase::Tls,
                format!("no TLS handshake within {}", human(wait)),
            ));
        }
    };
    if verbose {
        let (_, state) = stream.get_ref();
        let version = state
            .protocol_version()
            .map(|v| format!("{v:?}"))
            .unwrap_or_default();
        let suite = state
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_default();
        crate::stderr::transcript(
            crate::stderr::Mark::Note,
            &format!("TLS established, certificate verified: {version} {suite}"),
        );
    }
    Ok(stream)
}

/// `30 s`, `250 ms`.
fn human(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// A connection (plain or TLS) with the reply reader, the timeouts and the `-v` log.
pub(super) struct Conn<S> {
    pub(super) io: BufReader<S>,
    /// Whole replies taken off the line while a flight was still being written (see
    /// `replies_so_far`), handed out first by the next reads.
    early: VecDeque<Reply>,
    pub(super) timeouts: Timeouts,
    verbose: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub(super) fn new(stream: S, timeouts: Timeouts, verbose: bool) -> Conn<S> {
        Conn {
            io: BufReader::new(stream),
            early: VecDeque::new(),
            timeouts,
            verbose,
        }
    }

    /// The stream back, for the TLS handshake. Anything the server sent after its
    /// STARTTLS reply would be plain text smuggled into the TLS session: refused.
    pub(super) fn into_inner(self) -> Result<S> {
        if !self.io.buffer().is_empty() {
            return Err(Error::protocol(
                Phase::StartTls,
                "the server sent data before the TLS handshake; refusing to continue",
            ));
        }
        Ok(self.io.into_inner())
    }

    pub(super) async fn greeting(&mut self) -> Result<()> {
        let reply = self
            .read_reply(Phase::Greeting, self.timeouts.greeting)
            .await?;
        if reply.code == 220 {
            Ok(())
        } else {
            Err(Error::reply(Phase::Greeting, reply))
        }
    }

    pub(super) async fn ehlo(&mut self, ehlo: &Ehlo) -> Result<Capabilities> {
        let reply = self.command(ehlo, Phase::Ehlo).await?;
        if reply.code == 250 {
            Ok(Capabilities::from_ehlo(&reply))
        } else {
            Err(Error::reply(Phase::Ehlo, reply))
        }
    }

    pub(super) async fn starttls(&mut self, caps: &Capabilities) -> Result<()> {
        const NO_TLS: &str = "refusing to send credentials without TLS";
        if !caps.starttls {
            return Err(Error::protocol(
                Phase::StartTls,
                format!("server does not offer STARTTLS; {NO_TLS}"),
            ));
        }
        let reply = self.command(&Simple::StartTls, Phase::StartTls).await?;
        if reply.code == 220 {
            Ok(())
        } else {
            Err(Error::protocol(
                Phase::StartTls,
                format!("server refused STARTTLS ({reply}); {NO_TLS}"),
            ))
        }
    }

    /// Writes one command and reads its reply.
    pub(super) async fn command(&mut self, cmd: &dyn Command, phase: Phase) -> Result<Reply> {
        self.write_commands(&[cmd], phase).await?;
        self.read_reply(phase, self.timeouts.reply).await
    }

    /// Writes commands in one write (one TCP segment, one TLS record).
    pub(super) async fn write_commands(
        &mut self,
        cmds: &[&dyn Command],
        phase: Phase,
    ) -> Result<()> {
        self.nothing_unasked(phase).await?;
        let mut bytes = String::new();
        for cmd in cmds {
            self.log_client(&cmd.log_line());
            bytes.push_str(&cmd.to_string());
        }
        self.write_bytes(bytes.as_bytes(), phase).await
    }

    pub(super) async fn write_bytes(&mut self, bytes: &[u8], phase: Phase) -> Result<()> {
        let stream = self.io.get_mut();
        let writing = async {
            stream.write_all(bytes).await?;
            stream.flush().await
        };
        match tokio::time::timeout(self.timeouts.write, writing).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io_error(phase, &e)),
            Err(_) => Err(Error::network(
                phase,
                format!("the server took no data for {}", human(self.timeouts.write)),
            )),
        }
    }

    /// Every reply so far has been read as the answer to a command we sent; a byte waiting
    /// now (buffered, or ready on the socket) came before the command it would answer, and
    /// would shift every later reply by one (a false "sent"). A protocol error (exit 76),
    /// in every phase, the message data included: a `250` before the final `.` is no
    /// answer to the message. Only a `421` is taken at its word: RFC 5321 §3.8 lets a
    /// server that is closing say so at any time (exit 75, with its text).
    pub(super) async fn nothing_unasked(&mut self, phase: Phase) -> Result<()> {
        let waiting = if !self.early.is_empty() {
            true
        } else if self.io.buffer().is_empty() {
            // Polled once, without waiting: only data already there counts. Not with a
            // zero timeout: tokio's timer rounds it up to its next millisecond tick, and
            // the runtime then sleeps that millisecond before every command we send.
            let io = &mut self.io;
            std::future::poll_fn(|cx| {
                std::task::Poll::Ready(matches!(
                    std::pin::Pin::new(&mut *io).poll_fill_buf(cx),
                    std::task::Poll::Ready(Ok(buf)) if !buf.is_empty()
                ))
            })
            .await
        } else {
            true
        };
        if !waiting {
            return Ok(());
        }
        // The whole reply, if it comes soon (a server may send it a few bytes at a time).
        let early = match self.read_reply(phase, self.timeouts.quit).await {
            Ok(reply) if reply.code == 421 => return Err(Error::reply(phase, reply)),
            Ok(reply) => reply.to_string(),
            Err(_) => String::from_utf8_lossy(self.io.buffer())
                .lines()
                .next()
                .unwrap_or("")
                .to_owned(),
        };
        Err(Error::protocol(
            phase,
            format!(
                "the server sent a reply before the command it would answer was complete \
                 (`{}`); its replies are out of step, so nothing it says can be trusted",
                crate::scrub::printable(&early, 100)
            ),
        ))
    }

    /// How many whole replies the server has sent so far in this flight, taken off the line
    /// without waiting (kept for the reads that follow). In a one-flight `BDAT LAST`, the
    /// replies to MAIL and RCPT may come while the message is still being written; a third
    /// can only answer BDAT before its chunk was complete.
    pub(super) async fn replies_so_far(&mut self, phase: Phase) -> Result<usize> {
        loop {
            if !complete_reply_waiting(self.io.buffer()) {
                if !self.io.buffer().is_empty() {
                    break;
                }
                // Polled once, without waiting (as in `nothing_unasked`).
                let io = &mut self.io;
                let arrived = std::future::poll_fn(|cx| {
                    std::task::Poll::Ready(matches!(
                        std::pin::Pin::new(&mut *io).poll_fill_buf(cx),
                        std::task::Poll::Ready(Ok(buf)) if !buf.is_empty()
                    ))
                })
                .await;
                if !arrived || !complete_reply_waiting(self.io.buffer()) {
                    break;
                }
            }
            // The whole reply is in the buffer: reading it does not wait.
            let reply = self.read_reply_off_the_line(phase).await?;
            self.early.push_back(reply);
        }
        Ok(self.early.len())
    }

    /// The last reply taken early, as the server wrote it.
    pub(super) fn last_early_reply(&self) -> String {
        self.early
            .back()
            .map(ToString::to_string)
            .unwrap_or_default()
    }

    /// One write of message data (DATA's, before and with the final `.`): nothing may have
    /// been answered yet. When the write fails, the server's reply, if it sent one before
    /// it closed (a `421` in the middle of DATA), says more than the broken pipe.
    pub(super) async fn write_data(&mut self, bytes: &[u8]) -> Result<()> {
        self.nothing_unasked(Phase::Data).await?;
        match self.write_bytes(bytes, Phase::Data).await {
            Err(e) if e.is_network() => {
                match self.read_reply(Phase::Data, self.timeouts.quit).await {
                    Ok(reply) if !reply.is_success() => Err(Error::reply(Phase::Data, reply)),
                    _ => Err(e),
                }
            }
            other => other,
        }
    }

    pub(super) async fn read_reply(&mut self, phase: Phase, wait: Duration) -> Result<Reply> {
        match tokio::time::timeout(wait, self.read_reply_now(phase)).await {
            Ok(result) => result,
            Err(_) => Err(Error::network(
                phase,
                format!("no reply from the server within {}", human(wait)),
            )),
        }
    }

    async fn read_reply_now(&mut self, phase: Phase) -> Result<Reply> {
        if let Some(reply) = self.early.pop_front() {
            return Ok(reply);
        }
        self.read_reply_off_the_line(phase).await
    }

    /// The next reply as the server sends it (not one taken earlier).
    async fn read_reply_off_the_line(&mut self, phase: Phase) -> Result<Reply> {
        let mut parser = ReplyParser::default();
        let mut line = Vec::new();
        // One more than the longest line with its CRLF tells "too long" from "complete".
        let limit = (MAX_REPLY_LINE + 3) as u64;
        loop {
            line.clear();
            let n = (&mut self.io)
                .take(limit)
                .read_until(b'\n', &mut line)
                .await
                .map_err(|e| io_error(phase, &e))?;
            if !line.ends_with(b"\n") {
                return Err(if n as u64 == limit {
                    Error::protocol(
                        phase,
                        format!("a reply line longer than {MAX_REPLY_LINE} bytes"),
                    )
                } else {
                    Error::network(phase, "the server closed the connection")
                });
            }
            self.log_server(&line);
            let parsed = parser
                .push(&line)
                .map_err(|e| Error::protocol(phase, format!("malformed reply: {e}")))?;
            if let Some(reply) = parsed {
                return Ok(reply);
            }
        }
    }

    pub(super) fn log_client(&self, line: &str) {
        if self.verbose {
            crate::stderr::transcript(crate::stderr::Mark::Client, line);
        }
    }

    fn log_server(&self, line: &[u8]) {
        if self.verbose {
            let text = String::from_utf8_lossy(line);
            let text = text.trim_end_matches(['\r', '\n']);
            crate::stderr::transcript(crate::stderr::Mark::Server, text);
        }
    }

    pub(super) fn log_note(&self, note: &str) {
        if self.verbose {
            crate::stderr::transcript(crate::stderr::Mark::Note, note);
        }
    }
}

/// A network failure once the end of the data was sent is one "after the message data"
/// (`Phase::Message`): the server may have taken the message (`Class::Uncertain`).
pub(super) fn after_end_of_data(e: Error) -> Error {
    e.lost_after_end_of_data()
}

fn io_error(phase: Phase, e: &io::Error) -> Error {
    let detail = match e.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe => {
            "the server closed the connection".to_owned()
        }
        io::ErrorKind::ConnectionReset => "the connection was reset".to_owned(),
        _ => e.to_string(),
    };
    Error::network(phase, detail)
}

/// Whether `buffered` holds a whole reply: a final line (`ddd` then a space or the line's
/// end) ended by LF. Continuation lines (`ddd-`) before it belong to the same reply.
fn complete_reply_waiting(buffered: &[u8]) -> bool {
    buffered.split_inclusive(|&b| b == b'\n').any(|line| {
        line.ends_with(b"\n")
            && line.len() >= 4
            && line[..3].iter().all(u8::is_ascii_digit)
            && matches!(line[3], b' ' | b'\r' | b'\n')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_hook_caps_every_wait() {
        let t = Timeouts::default().capped(Duration::from_millis(700));
        assert_eq!(t.data_end, Duration::from_millis(700));
        assert_eq!(t.connect, Duration::from_millis(700));
        assert_eq!(Timeouts::default().data_end, Duration::from_mins(10));
    }
}
