//! The ESMTP submission session: TCP (`TCP_NODELAY`), greeting, EHLO, STARTTLS (or
//! implicit TLS), EHLO again, AUTH XOAUTH2, one pipelined transaction (MAIL, RCPT, and
//! DATA or `BDAT LAST`), QUIT.
//!
//! Rules it keeps:
//! - every wait is bounded (`Timeouts`, kept by `net::Conn`); a timeout or a broken
//!   connection is a network error (exit 75);
//! - no credentials before TLS is up and verified; a server without STARTTLS gets none;
//! - recipients are all or nothing: when any RCPT is refused, the message is not sent
//!   (`envelope` judges the replies; see `Session::envelope_pipelined` for how a
//!   pipelined DATA is abandoned, and
//!   `Session::transaction` for when the one-flight BDAT is safe);
//! - `-v` shows the dialogue with AUTH payloads redacted and the message summarised.

use std::io;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::envelope::{envelope_commands, judge_envelope, partly_delivered};
pub use super::net::Timeouts;
use super::net::{Conn, after_end_of_data, handshake, open_tcp};
use super::wire::{
    AuthResponse, AuthStart, Bdat, Capabilities, Command, DataEncoder, Ehlo, MAX_COMMAND_LINE,
    Mail, Mechanism, Rcpt, Simple,
};
use super::{Envelope, Reply};
use crate::config::TlsMode;
use crate::error::{Error, Phase, Result};
use crate::provider::{AuthLine, Sasl, Server};
use crate::spool::Payload;
use crate::tls;

/// The message is encoded and written in pieces of this size: big TLS records and few
/// writes, without a second copy of a large message in memory.
const CHUNK: usize = 64 * 1024;

/// An authenticated-or-not SMTP session over verified TLS.
pub struct Session {
    conn: Conn<TlsStream<TcpStream>>,
    /// From the EHLO after TLS: what was offered before TLS is not trusted.
    caps: Capabilities,
    /// False once the connection is closed, broken or out of step with the server.
    usable: bool,
    /// The provider's form of the `AUTH` line.
    auth_line: AuthLine,
    /// Which SASL mechanism to use (`sasl`).
    sasl: Sasl,
    /// The server's name and port, which OAUTHBEARER's initial response carries.
    host: String,
    port: u16,
    /// `host:port` as errors name it: the session names its own server.
    address: String,
    /// The mechanism of the last successful AUTH.
    authenticated_with: Option<Mechanism>,
    /// `send_and_quit`: QUIT goes with the last flight when PIPELINING allows.
    quit_after: bool,
    /// QUIT is on the wire: nothing more may be sent.
    quit_sent: bool,
    /// The most recipients this server took in one transaction, once a `452`/`451 4.5.3`
    /// showed it: later transactions never carry more.
    rcpt_limit: Option<usize>,
}

/// How one transaction ended, short of an error.
enum Outcome {
    /// The server took the message: its reply after the data.
    Sent(Reply),
    /// The server showed its limit of recipients per transaction (it took this many):
    /// the transaction was reset before DATA, and the recipients go again in batches.
    Limited(usize),
}

impl Session {
    /// TCP (`TCP_NODELAY`), greeting, EHLO, STARTTLS (or implicit TLS), EHLO again.
    /// `verbose` prints the dialogue to stderr.
    /// Errors name the server (`host:port`), as every error of the session does.
    pub async fn connect(server: &Server, verbose: bool) -> Result<Session> {
        Session::connect_with(server, verbose, Timeouts::from_env())
            .await
            .map_err(|e| e.at_server(&server.address()))
    }

    /// AUTH XOAUTH2 or OAUTHBEARER (see `authenticate_unnamed`); errors name the server.
    pub async fn authenticate(&mut self, user: &str, access_token: &str) -> Result<()> {
        let result = self.authenticate_unnamed(user, access_token).await;
        result.map_err(|e| e.at_server(&self.address))
    }

    /// One message (see `send_unnamed`); errors name the server.
    pub async fn send(&mut self, envelope: &Envelope, message: &Payload<'_>) -> Result<Reply> {
        let result = self.send_unnamed(envelope, message).await;
        result.map_err(|e| e.at_server(&self.address))
    }

    /// `connect` with explicit timeouts.
    pub async fn connect_with(
        server: &Server,
        verbose: bool,
        timeouts: Timeouts,
    ) -> Result<Session> {
        // Config problems (CA file, host name) show before any network use; the
        // platform's roots load while the connection is set up.
        let config = tls::client_config_soon(server.ca_file.as_deref())?;
        let name = tls::server_name(&server.host)?;
        let tcp = open_tcp(server, timeouts.connect).await?;
        let local = tcp
            .local_addr()
            .map_err(|e| Error::network(Phase::Connect, e.to_string()))?;
        let ehlo = Ehlo::from_ip(local.ip());
        let tcp = match server.tls {
            TlsMode::Implicit => tcp,
            TlsMode::Starttls => {
                let mut plain = Conn::new(tcp, timeouts, verbose);
                plain.greeting().await?;
                let caps = plain.ehlo(&ehlo).await?;
                plain.starttls(&caps).await?;
                plain.into_inner()?
            }
        };
        let tls_stream = handshake(tcp, config.ready().await?, name, timeouts.tls, verbose).await?;
        let mut conn = Conn::new(tls_stream, timeouts, verbose);
        if server.tls == TlsMode::Implicit {
            conn.greeting().await?;
        }
        let caps = conn.ehlo(&ehlo).await?;
        Ok(Session {
            conn,
            caps,
            usable: true,
            auth_line: server.auth_line,
            sasl: server.sasl,
            host: server.host.clone(),
            port: server.port,
            address: server.address(),
            authenticated_with: None,
            quit_after: false,
            quit_sent: false,
            rcpt_limit: None,
        })
    }

    /// AUTH XOAUTH2 or OAUTHBEARER (by `sasl`, and for `auto` by what the server offers).
    /// A refusal is `Error::reply(Phase::Auth, ..)` (`is_auth_refused()`); the connection
    /// stays usable for another attempt with a fresh token.
    async fn authenticate_unnamed(&mut self, user: &str, access_token: &str) -> Result<()> {
        self.check_usable(Phase::Auth)?;
        let oauthbearer = match self.sasl {
            Sasl::Xoauth2 => false,
            Sasl::Oauthbearer => true,
            Sasl::OauthbearerWhenOffered => self.caps.offers_auth("OAUTHBEARER"),
        };
        let mechanism = if oauthbearer {
            Mechanism::Oauthbearer
        } else {
            Mechanism::Xoauth2
        };
        if !self.caps.offers_auth(mechanism.name()) {
            let offered = if self.caps.auth.is_empty() {
                "none".to_owned()
            } else {
                self.caps.auth.join(" ")
            };
            return Err(Error::protocol(
                Phase::Auth,
                format!(
                    "server does not offer AUTH {} (it offers: {offered})",
                    mechanism.name()
                ),
            ));
        }
        let payload = match mechanism {
            Mechanism::Xoauth2 => super::wire::xoauth2_payload(user, access_token),
            Mechanism::Oauthbearer => {
                super::wire::oauthbearer_payload(user, &self.host, self.port, access_token)
            }
        };
        let result = self.sasl_exchange(mechanism, payload).await;
        self.note_failure(&result);
        if result.is_ok() {
            self.authenticated_with = Some(mechanism);
        }
        result
    }

    /// The SASL mechanism of the last successful `authenticate` (for `check`).
    #[must_use]
    pub fn mechanism(&self) -> Option<&'static str> {
        self.authenticated_with.map(Mechanism::name)
    }

    async fn sasl_exchange(&mut self, mechanism: Mechanism, payload: String) -> Result<()> {
        let inline = AuthStart {
            mechanism,
            initial_response: Some(payload),
        };
        // `AuthLine::Rfc4954` (RFC 4954 §4): no initial response that makes the line
        // longer than 512 octets. `AuthLine::Inline`: one line whatever its length.
        let one_line =
            self.auth_line == AuthLine::Inline || inline.to_string().len() <= MAX_COMMAND_LINE;
        let payload = inline.initial_response.clone().unwrap_or_default();
        let mut reply = if one_line {
            let reply = self.conn.command(&inline, Phase::Auth).await?;
            if is_line_refused(&reply) {
                // Too long or not understood on one line (Gmail's 555, Dovecot's 500):
                // the same payload in two steps, on the same connection.
                self.conn
                    .log_note("the server refused the one-line AUTH; sending it in two steps");
                self.two_steps(mechanism, payload).await?
            } else {
                reply
            }
        } else {
            self.two_steps(mechanism, payload).await?
        };
        if reply.code == 334 {
            // A refusal with an error challenge (base64 JSON): XOAUTH2 (Google) ends it with
            // an empty line, OAUTHBEARER with %x01 (RFC 7628 §3.2.3); then comes the 5xx.
            let end = match mechanism {
                Mechanism::Xoauth2 => String::new(),
                Mechanism::Oauthbearer => super::wire::OAUTHBEARER_ABORT.to_owned(),
            };
            reply = self.conn.command(&AuthResponse(end), Phase::Auth).await?;
        }
        if reply.code == 235 {
            Ok(())
        } else {
            Err(Error::reply(Phase::Auth, reply))
        }
    }

    /// `AUTH MECHANISM`, the `334`, then the payload on a line of its own.
    async fn two_steps(&mut self, mechanism: Mechanism, payload: String) -> Result<Reply> {
        let start = AuthStart {
            mechanism,
            initial_response: None,
        };
        let go_ahead = self.conn.command(&start, Phase::Auth).await?;
        if go_ahead.code != 334 {
            return Err(Error::reply(Phase::Auth, go_ahead));
        }
        self.conn.command(&AuthResponse(payload), Phase::Auth).await
    }

    /// MAIL, RCPT..., DATA (pipelined when offered), the message, and the final reply; or
    /// MAIL, RCPT, `BDAT LAST` and the message in one flight (see `transaction`).
    /// `message` is the message as parts to be sent one after another, with LF or CRLF
    /// line endings; the session normalises to CRLF (and dot-stuffs for DATA).
    async fn send_unnamed(&mut self, envelope: &Envelope, message: &Payload<'_>) -> Result<Reply> {
        self.check_usable(Phase::Mail)?;
        let size = encoded_size(message)?;
        let (mail, rcpts) = envelope_commands(&self.caps, envelope, size)?;
        let mut pending: &[Rcpt] = &rcpts;
        let mut delivered: Vec<String> = Vec::new();
        loop {
            let take = pending.len().min(self.rcpt_limit.unwrap_or(usize::MAX));
            let (batch, rest) = pending.split_at(take);
            let result = self
                .transaction(&mail, batch, message, size, rest.is_empty())
                .await;
            self.note_failure(&result);
            let reply = match result {
                Ok(Outcome::Sent(reply)) => reply,
                Ok(Outcome::Limited(took)) => {
                    // Dovecot 2.3 relays a RCPT it answered `451 4.5.3` on: a transaction
                    // that showed the limit never reaches DATA; batches that fit follow.
                    self.conn.log_note(&format!(
                        "the server takes {took} recipient(s) per message: sending in batches of {took}"
                    ));
                    self.rcpt_limit = Some(took);
                    continue;
                }
                Err(e) if delivered.is_empty() => return Err(e),
                // All or nothing holds per transaction only: say who has the message, so
                // that nobody resends it to them (not a "try again later": not queued).
                Err(e) => return Err(partly_delivered(&delivered, &e)),
            };
            delivered.extend(batch.iter().map(|r| r.to.clone()));
            if rest.is_empty() {
                return Ok(reply);
            }
            // RFC 5321 §4.5.3.1.10: the others follow in the next transaction, on this
            // connection.
            self.conn.log_note(&format!(
                "{} more recipient(s) in another transaction (the server's limit per message)",
                rest.len()
            ));
            pending = rest;
        }
    }

    /// `send`, then QUIT: pipelined after the end of the data when the server offers
    /// PIPELINING (RFC 2920 §3.1: QUIT may end a group), and sent on error paths too.
    pub async fn send_and_quit(
        mut self,
        envelope: &Envelope,
        message: &Payload<'_>,
    ) -> Result<Reply> {
        self.quit_after = true;
        let result = self.send(envelope, message).await;
        self.quit().await;
        result
    }

    /// Picks the path. The one-flight `BDAT LAST` (RFC 3030, one round trip fewer) only
    /// with PIPELINING and CHUNKING and exactly one recipient: the message goes out before
    /// any RCPT reply is seen, so there is no abandoning it after a refusal. With one
    /// recipient that is safe: if MAIL or the RCPT is refused, the server has no valid
    /// recipient and must refuse the BDAT, so nothing is delivered. With several, one
    /// refused would leave the message delivered to the others, against all or nothing.
    ///
    /// DATA joins the MAIL and RCPT flight only when the recipients surely fit: one, or no
    /// more than the limit the server showed. Otherwise it waits for the RCPT replies, so
    /// that a transaction that shows the limit is reset before DATA (`Outcome::Limited`):
    /// Dovecot 2.3 delivers to a RCPT it answered `451 4.5.3` on once DATA goes ahead.
    /// `last`: no transaction follows (QUIT may share the final flight).
    async fn transaction(
        &mut self,
        mail: &Mail,
        rcpts: &[Rcpt],
        message: &Payload<'_>,
        size: u64,
        last: bool,
    ) -> Result<Outcome> {
        let quit = self.quit_after && last && self.caps.pipelining;
        if self.caps.pipelining && self.caps.chunking && rcpts.len() == 1 {
            // One recipient: a "too many" for it is a temporary refusal, nothing deferred.
            let reply = self
                .transaction_bdat(mail, &rcpts[0], message, size, quit)
                .await?;
            return Ok(Outcome::Sent(reply));
        }
        let data_in_flight = self.caps.pipelining
            && (rcpts.len() == 1 || self.rcpt_limit.is_some_and(|n| rcpts.len() <= n));
        let deferred = if self.caps.pipelining {
            self.envelope_pipelined(mail, rcpts, data_in_flight).await?
        } else {
            self.envelope_stepwise(mail, rcpts).await?
        };
        if !deferred.is_empty() {
            let took = rcpts.len() - deferred.len();
            if data_in_flight {
                // DATA was taken (354) although a recipient was not: only a close keeps
                // the message from the ones that were.
                self.abandon().await;
                return Err(Error::network(
                    Phase::Rcpt,
                    format!(
                        "the server took only {took} of {} recipients, fewer than before",
                        rcpts.len()
                    ),
                ));
            }
            self.reset().await;
            return Ok(Outcome::Limited(took));
        }
        if !data_in_flight {
            let data = self.conn.command(&Simple::Data, Phase::Data).await?;
            if data.code != 354 {
                self.reset().await;
                return Err(Error::reply(Phase::Data, data));
            }
        }
        if let Err(e) = self.write_message(message, quit).await {
            // In the middle of the data only a close ends the transaction undelivered.
            self.abandon().await;
            return Err(e);
        }
        let reply = self
            .conn
            .read_reply(Phase::Message, self.conn.timeouts.data_end)
            .await?;
        if reply.is_success() {
            Ok(Outcome::Sent(reply))
        } else {
            Err(Error::reply(Phase::Message, reply))
        }
    }

    /// MAIL, RCPT, `BDAT <size> LAST` and the message, written as one flight (in pieces of
    /// about `CHUNK` bytes), then the three replies in order: exactly one per command, so
    /// the dialogue stays in step whatever they say (RFC 3030 §2: the server answers a
    /// BDAT even when the transaction has failed, and must take its data).
    ///
    /// A refused MAIL or RCPT explains the failure better than BDAT's 503/554 and wins,
    /// as in `judge_envelope`; a refused BDAT after both were accepted is `Phase::Message`,
    /// like the reply after DATA's `.`. Any refusal is followed by RSET: after a failed
    /// BDAT the transaction state is indeterminate until one (RFC 3030 §2).
    async fn transaction_bdat(
        &mut self,
        mail: &Mail,
        rcpt: &Rcpt,
        message: &Payload<'_>,
        size: u64,
        quit: bool,
    ) -> Result<Reply> {
        let mut broken = match self
            .write_bdat_flight(mail, rcpt, message, size, quit)
            .await
        {
            Ok(()) => None,
            Err(e) if e.must_abandon() => {
                // The message did not match its size, or the server answered it before it
                // was whole: nothing more may go on this line.
                self.abandon().await;
                return Err(e);
            }
            Err(e) => Some(e),
        };
        // After a failed write, the replies already sent may still explain it; do not
        // wait long for them.
        let timeouts = self.conn.timeouts;
        let (reply_wait, end_wait) = match broken {
            None => (timeouts.reply, timeouts.data_end),
            Some(_) => (timeouts.quit, timeouts.quit),
        };
        let waits = [
            (Phase::Mail, reply_wait),
            (Phase::Rcpt, reply_wait),
            (Phase::Message, end_wait),
        ];
        let mut replies = Vec::with_capacity(waits.len());
        for (phase, wait) in waits {
            match self.conn.read_reply(phase, wait).await {
                Ok(reply) => replies.push(reply),
                Err(e) => {
                    // The whole message went out with the commands: a connection lost
                    // while waiting for any of the replies leaves the outcome unknown.
                    broken = broken.or_else(|| Some(after_end_of_data(e)));
                    break;
                }
            }
        }
        let verdict = judge_envelope(std::slice::from_ref(rcpt), &replies);
        if broken.is_some() {
            self.usable = false;
        }
        match (verdict, broken, replies.get(2)) {
            (Err(e), broken, end) => {
                if end.is_some_and(Reply::is_success) {
                    self.conn.log_note(
                        "the server accepted BDAT LAST after refusing MAIL or RCPT (a server bug)",
                    );
                }
                if broken.is_none() {
                    self.reset().await;
                }
                Err(e)
            }
            (Ok(_), Some(e), _) => Err(e),
            (Ok(_), None, Some(end)) if end.is_success() => Ok(end.clone()),
            (Ok(_), None, Some(end)) => {
                let e = Error::reply(Phase::Message, end.clone());
                self.reset().await;
                Err(e)
            }
            (Ok(_), None, None) => Err(Error::internal("a pipelined reply went missing")),
        }
    }

    /// The commands and the message as one stream of writes: the commands share the first
    /// write with the start of the message. Checks, before each write, that the message
    /// stays within the size announced, and at the end that it filled it exactly: a
    /// mismatch would turn message bytes into commands (or leave the server waiting).
    async fn write_bdat_flight(
        &mut self,
        mail: &Mail,
        rcpt: &Rcpt,
        message: &Payload<'_>,
        size: u64,
        quit: bool,
    ) -> Result<()> {
        self.conn.nothing_unasked(Phase::Mail).await?;
        let bdat = Bdat { size, last: true };
        let mut buf = Vec::with_capacity(2 * CHUNK + 3 * MAX_COMMAND_LINE);
        for cmd in [mail as &dyn Command, rcpt, &bdat] {
            self.conn.log_client(&cmd.log_line());
            buf.extend_from_slice(cmd.to_string().as_bytes());
        }
        // The commands at the start of the first write are not message data.
        let mut commands = buf.len();
        let mut encoder = DataEncoder::bdat();
        let mut sent = 0u64;
        let mut reader = message.reader();
        let mut piece = vec![0u8; CHUNK];
        loop {
            let n = read_piece(&mut reader, &mut piece)?;
            if n == 0 {
                break;
            }
            encoder.encode(&piece[..n], &mut buf);
            if buf.len() >= CHUNK {
                sent += (buf.len() - commands) as u64;
                if sent > size {
                    return Err(size_mismatch(size, sent));
                }
                self.bdat_not_answered_yet().await?;
                self.conn.write_bytes(&buf, Phase::Data).await?;
                buf.clear();
                commands = 0;
            }
        }
        encoder.finish(&mut buf);
        sent += (buf.len() - commands) as u64;
        if sent != size {
            return Err(size_mismatch(size, sent));
        }
        self.conn
            .log_client(&format!("<message data, {sent} bytes>"));
        // This path needs PIPELINING, so QUIT may follow in the same flight.
        if quit {
            self.push_quit(&mut buf);
        }
        self.bdat_not_answered_yet().await?;
        self.conn.write_bytes(&buf, Phase::Data).await
    }

    /// In the one-flight `BDAT LAST`, before each further write of the chunk: MAIL's and
    /// RCPT's replies may have come, BDAT's cannot have (its chunk is not complete). A third
    /// reply is an answer to data the server has not seen: out of step (exit 76), as a
    /// `250` before DATA's final `.` is.
    async fn bdat_not_answered_yet(&mut self) -> Result<()> {
        if self.conn.replies_so_far(Phase::Data).await? <= 2 {
            return Ok(());
        }
        let early = self.conn.last_early_reply();
        Err(Error::protocol(
            Phase::Data,
            format!(
                "the server sent a reply before the command it would answer was complete \
                 (`{}`, to BDAT before its chunk was whole); its replies are out of step, so \
                 nothing it says can be trusted",
                crate::scrub::printable(&early, 100)
            ),
        ))
    }

    /// Appends QUIT to a flight; from then on nothing else may be sent.
    fn push_quit(&mut self, buf: &mut Vec<u8>) {
        let quit = Simple::Quit;
        self.conn.log_client(&quit.log_line());
        buf.extend_from_slice(quit.to_string().as_bytes());
        self.quit_sent = true;
    }

    /// MAIL, every RCPT and (`with_data`) DATA in one write, then the replies in order
    /// (RFC 2920). Returns the recipients the server's limit left over.
    ///
    /// All or nothing: when a recipient is refused, DATA usually fails too (no valid
    /// recipient) or the server answers 354 because others were accepted. In that case
    /// the data phase has begun and any `.` would deliver to the accepted ones, so the
    /// connection is closed instead: the final `.` is what confirms the transaction
    /// (RFC 5321 §4.1.1.4), and without it a server discards the data. Either way nothing
    /// is delivered. Without DATA in the flight, a refusal is followed by RSET.
    async fn envelope_pipelined(
        &mut self,
        mail: &Mail,
        rcpts: &[Rcpt],
        with_data: bool,
    ) -> Result<Vec<Rcpt>> {
        let mut batch: Vec<&dyn Command> = vec![mail];
        batch.extend(rcpts.iter().map(|r| r as &dyn Command));
        if with_data {
            batch.push(&Simple::Data);
        }
        self.conn.write_commands(&batch, Phase::Mail).await?;
        let mut replies = Vec::with_capacity(batch.len());
        let mut broken = None;
        for i in 0..batch.len() {
            let phase = match i {
                0 => Phase::Mail,
                i if with_data && i == batch.len() - 1 => Phase::Data,
                _ => Phase::Rcpt,
            };
            match self.conn.read_reply(phase, self.conn.timeouts.reply).await {
                Ok(reply) => replies.push(reply),
                Err(e) => {
                    broken = Some(e);
                    break;
                }
            }
        }
        let data = if with_data {
            replies.get(batch.len() - 1).cloned()
        } else {
            None
        };
        // A refusal explains a connection the server then closed better than the I/O error.
        let verdict = judge_envelope(rcpts, &replies);
        match (verdict, broken, data) {
            (Err(e), None, Some(data)) if data.code == 354 => {
                self.abandon().await;
                Err(e)
            }
            (Err(e), None, _) => {
                self.reset().await;
                Err(e)
            }
            (Err(e), Some(_), _) | (Ok(_), Some(e), _) => {
                self.usable = false;
                Err(e)
            }
            (Ok(deferred), None, None) if !with_data => Ok(deferred),
            (Ok(deferred), None, Some(data)) if data.code == 354 => Ok(deferred),
            (Ok(_), None, Some(data)) => {
                self.reset().await;
                Err(Error::reply(Phase::Data, data))
            }
            (Ok(_), None, None) => Err(Error::internal("a pipelined reply went missing")),
        }
    }

    /// One command at a time, for servers without PIPELINING: MAIL and each RCPT (DATA
    /// follows in `transaction`). Returns the recipients the server's limit left over.
    async fn envelope_stepwise(&mut self, mail: &Mail, rcpts: &[Rcpt]) -> Result<Vec<Rcpt>> {
        let mut replies = vec![self.conn.command(mail, Phase::Mail).await?];
        judge_envelope(&[], &replies)?;
        for rcpt in rcpts {
            replies.push(self.conn.command(rcpt, Phase::Rcpt).await?);
        }
        match judge_envelope(rcpts, &replies) {
            Ok(deferred) => Ok(deferred),
            Err(e) => {
                self.reset().await;
                Err(e)
            }
        }
    }

    /// The message, encoded chunk by chunk into one reused buffer, then `.` CRLF.
    async fn write_message(&mut self, message: &Payload<'_>, quit: bool) -> Result<()> {
        let mut encoder = DataEncoder::default();
        // Room for a chunk whose every byte doubles (LF → CRLF, `.` → `..`).
        let mut buf = Vec::with_capacity(2 * CHUNK + 8);
        let mut sent = 0usize;
        let mut reader = message.reader();
        let mut piece = vec![0u8; CHUNK];
        loop {
            let n = read_piece(&mut reader, &mut piece)?;
            if n == 0 {
                break;
            }
            encoder.encode(&piece[..n], &mut buf);
            if buf.len() >= CHUNK {
                self.conn.write_data(&buf).await?;
                sent += buf.len();
                buf.clear();
            }
        }
        encoder.finish(&mut buf);
        sent += buf.len() - 3;
        self.conn
            .log_client(&format!("<message data, {sent} bytes>"));
        self.conn.log_client(".");
        if quit {
            self.push_quit(&mut buf);
        }
        self.conn.write_data(&buf).await
    }

    /// RSET after a failed envelope, so the connection can be used again; best effort.
    async fn reset(&mut self) {
        if self.quit_sent {
            return;
        }
        if self.conn.command(&Simple::Rset, Phase::Mail).await.is_err() {
            self.usable = false;
        }
    }

    /// Ends the connection in the middle of the data phase so the server discards the
    /// transaction. Only a close can do that: any byte we send would be message data.
    async fn abandon(&mut self) {
        self.usable = false;
        self.conn
            .log_note("closing the connection: the message must not be delivered");
        let stream = self.conn.io.get_mut();
        let _ = tokio::time::timeout(self.conn.timeouts.quit, stream.shutdown()).await;
    }

    /// False once the connection is closed, broken or out of step: a queue flush then
    /// opens a new session for its next message instead of failing that one.
    #[must_use]
    pub fn is_usable(&self) -> bool {
        self.usable
    }

    fn check_usable(&self, phase: Phase) -> Result<()> {
        if self.usable {
            Ok(())
        } else {
            Err(Error::internal(format!(
                "the SMTP session is closed; cannot continue {phase:?}"
            )))
        }
    }

    /// After a network or protocol failure the dialogue is out of step: stop using it.
    fn note_failure<T>(&mut self, result: &Result<T>) {
        if let Err(e) = result
            && e.breaks_dialogue()
        {
            self.usable = false;
        }
    }

    /// Sends QUIT and closes without waiting for the reply (the message is accepted; the
    /// 221 would only cost a round trip).
    pub async fn quit(mut self) {
        if !self.usable {
            return;
        }
        let mut bytes = Vec::new();
        if !self.quit_sent {
            self.push_quit(&mut bytes);
        }
        let stream = self.conn.io.get_mut();
        let _ = tokio::time::timeout(self.conn.timeouts.quit, async {
            stream.write_all(&bytes).await?;
            stream.shutdown().await
        })
        .await;
    }
}

/// The message's size as `SIZE=` and `BDAT` count it, read through once (a spooled
/// message is read from its file, not held in memory).
fn encoded_size(message: &Payload<'_>) -> Result<u64> {
    let mut size = super::wire::MessageSize::default();
    let mut reader = message.reader();
    let mut piece = vec![0u8; CHUNK];
    loop {
        match read_piece(&mut reader, &mut piece)? {
            0 => return Ok(size.finish()),
            n => size.push(&piece[..n]),
        }
    }
}

/// The next piece of the message; reading our own spooled copy can only fail locally.
fn read_piece(reader: &mut impl std::io::Read, piece: &mut [u8]) -> Result<usize> {
    loop {
        match reader.read(piece) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => {
                return other
                    .map_err(|e| Error::io(format!("cannot read the message to send: {e}")));
            }
        }
    }
}

/// 500 (line too long, Dovecot), 501 (syntax), 555 (Gmail's "command line too long"):
/// the server did not take the one-line form; a refusal of the token is 535 or 334.
fn is_line_refused(reply: &Reply) -> bool {
    matches!(reply.code, 500 | 501 | 555)
}

/// The BDAT size did not match the bytes the encoder produced: a bug, never sent.
fn size_mismatch(size: u64, actual: u64) -> Error {
    Error::size_mismatch(format!(
        "BDAT {size} announced but the message encodes to {actual} bytes or more"
    ))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn p<'a>(parts: &[&'a [u8]]) -> Payload<'a> {
        Payload::from_slices(parts)
    }
    use crate::error::{
        EX_DATAERR, EX_NOPERM, EX_NOUSER, EX_PROTOCOL, EX_TEMPFAIL, EX_UNAVAILABLE,
    };
    use crate::fake_smtp::{Behaviour, FakeSmtp};
    use crate::smtp::Dsn;
    use crate::support::TestCa;

    struct Fixture {
        fake: FakeSmtp,
        server: Server,
        _dir: tempfile::TempDir,
    }

    /// A fake over TLS with its own CA, and a `Server` that trusts that CA.
    fn fixture(behaviour: Behaviour) -> Fixture {
        let ca = TestCa::new();
        fixture_with(&ca, &ca, behaviour)
    }

    /// The fake presents `serving_ca`'s certificate; the client trusts `trusted_ca`.
    fn fixture_with(serving_ca: &TestCa, trusted_ca: &TestCa, behaviour: Behaviour) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &trusted_ca.ca_pem).unwrap();
        let tls = if behaviour.implicit_tls {
            TlsMode::Implicit
        } else {
            TlsMode::Starttls
        };
        let fake = FakeSmtp::start(serving_ca, behaviour);
        let server = Server {
            host: "127.0.0.1".into(),
            port: fake.port(),
            tls,
            ca_file: Some(ca_file),
            auth_line: AuthLine::Rfc4954,
            sasl: Sasl::OauthbearerWhenOffered,
            proxy: None,
        };
        Fixture {
            fake,
            server,
            _dir: dir,
        }
    }

    fn quick() -> Timeouts {
        Timeouts::default().capped(Duration::from_secs(5))
    }

    async fn connect(f: &Fixture) -> Result<Session> {
        Session::connect_with(&f.server, false, quick()).await
    }

    async fn ready(f: &Fixture) -> Session {
        let mut s = connect(f).await.unwrap();
        s.authenticate("me@example.org", "tok").await.unwrap();
        s
    }

    fn envelope(rcpts: &[&str]) -> Envelope {
        Envelope {
            from: Some("me@example.org".into()),
            recipients: rcpts.iter().map(|r| (*r).to_owned()).collect(),
            ..Envelope::default()
        }
    }

    const MSG: &[u8] = b"Subject: hi\n\nhello\n";

    #[tokio::test]
    async fn happy_path_pipelines_the_envelope_in_one_flight() {
        let f = fixture(Behaviour::default());
        let mut s = ready(&f).await;
        let mut env = envelope(&["a@example.org", "b@example.org"]);
        env.eight_bit = true;
        let reply = s.send(&env, &p(&[MSG])).await.unwrap();
        assert_eq!(reply.code, 250);
        s.quit().await;

        let d = &f.fake.deliveries()[0];
        assert_eq!(d.from, "me@example.org");
        assert_eq!(d.rcpts, ["a@example.org", "b@example.org"]);
        assert_eq!(d.mail_params, ["SIZE=22", "BODY=8BITMIME"]);
        assert_eq!(d.data, b"Subject: hi\r\n\r\nhello\r\n");
        let flights = f.fake.flights_of(&["MAIL", "RCPT"]);
        assert_eq!(flights.len(), 3);
        assert!(flights.iter().all(|&x| x == flights[0]), "{flights:?}");
        // With several recipients DATA waits for their replies: a transaction that shows
        // the server's limit is reset before DATA (Dovecot delivers to a RCPT it answered
        // 451 once DATA goes ahead).
        let data = f.fake.flights_of(&["DATA"]);
        assert!(data[0] > flights[0], "{flights:?} {data:?}");
        let auth = f.fake.auth_attempts();
        assert_eq!(auth.len(), 1);
        assert_eq!(
            (auth[0].user.as_str(), auth[0].token.as_str()),
            ("me@example.org", "tok")
        );
        assert!(auth[0].inline, "a short token goes on the AUTH line");
        assert!(
            f.fake
                .wait_for(Duration::from_secs(5), FakeSmtp::quit_received)
        );
        assert_eq!(f.fake.connections(), 1);
        let t = f.fake.transcript();
        assert!(t.contains(&"C: EHLO [127.0.0.1]".to_owned()), "{t:?}");
        assert_eq!(t.iter().filter(|l| l.starts_with("C: EHLO")).count(), 2);
    }

    #[tokio::test]
    async fn one_recipient_without_chunking_sends_data_in_the_envelopes_flight() {
        let f = fixture(Behaviour {
            chunking: false,
            ..Behaviour::default()
        });
        let mut s = ready(&f).await;
        s.send(&envelope(&["a@example.org"]), &p(&[MSG]))
            .await
            .unwrap();
        let flights = f.fake.flights_of(&["MAIL", "RCPT", "DATA"]);
        assert_eq!(flights.len(), 3);
        assert!(flights.iter().all(|&x| x == flights[0]), "{flights:?}");
    }

    #[tokio::test]
    async fn without_pipelining_one_command_at_a_time() {
        let f = fixture(Behaviour {
            pipelining: false,
            ..Behaviour::default()
        });
        let mut s = ready(&f).await;
        assert!(!s.caps.pipelining);
        s.send(&envelope(&["a@example.org", "b@example.org"]), &p(&[MSG]))
            .await
            .unwrap();
        assert_eq!(f.fake.deliveries().len(), 1);
        let flights = f.fake.flights_of(&["MAIL", "RCPT", "DATA"]);
        let mut distinct = flights.clone();
        distinct.dedup();
        assert_eq!(distinct.len(), 4, "{flights:?}");
    }

    #[tokio::test]
    async fn body_arrives_byte_for_byte() {
        for chunking in [true, false] {
            body_arrives_byte_for_byte_with(chunking).await;
        }
    }

    /// With CHUNKING the fake keeps the BDAT bytes as received: lone dots arrive raw.
    async fn body_arrives_byte_for_byte_with(chunking: bool) {
        let f = fixture(Behaviour {
            chunking,
            ..Behaviour::default()
        });
        let mut s = ready(&f).await;
        let parts: &[&[u8]] = &[
            b"Subject: dots\r\n\r\n.\n..two\r\n.",
            b"\r\nbare\nlone\rcr 8bit \xe9\xff\r",
            b"\nno trailing newline",
        ];
        s.send(&envelope(&["a@example.org"]), &p(parts))
            .await
            .unwrap();
        let expected = b"Subject: dots\r\n\r\n.\r\n..two\r\n.\r\nbare\r\nlone\rcr 8bit \xe9\xff\r\nno trailing newline\r\n";
        assert_eq!(
            String::from_utf8_lossy(&f.fake.deliveries()[0].data),
            String::from_utf8_lossy(expected)
        );
        // Several chunks, with dots and line ends at every offset, in a 2.5 MB message.
        let line = b".a dotted line\nplain line\r\n";
        let big = line.repeat(100_000);
        s.send(
            &envelope(&["a@example.org"]),
            &p(&[&big[..1000], &big[1000..]]),
        )
        .await
        .unwrap();
        let expected = b".a dotted line\r\nplain line\r\n".repeat(100_000);
        let got = &f.fake.deliveries()[1].data;
        assert_eq!(got.len(), expected.len());
        assert!(*got == expected);
        assert_eq!(
            f.fake.deliveries()[1].mail_params[0],
            format!("SIZE={}", expected.len())
        );
        let (used, unused) = if chunking {
            ("BDAT", "DATA")
        } else {
            ("DATA", "BDAT")
        };
        assert_eq!(f.fake.flights_of(&[used]).len(), 2);
        assert!(f.fake.flights_of(&[unused]).is_empty());
        if chunking {
            let t = f.fake.transcript();
            let first = f.fake.deliveries()[0].data.len();
            for size in [first, expected.len()] {
                assert!(t.contains(&format!("C: BDAT {size} LAST")), "{size}");
                assert!(t.contains(&format!("C: <message data, {size} bytes>")));
            }
        }
    }

    #[tokio::test]
    async fn no_starttls_means_no_credentials() {
        let f = fixture(Behaviour {
            offer_starttls: false,
            auth_before_tls: true,
            ..Behaviour::default()
        });
        let e = connect(&f).await.err().unwrap();
        assert_eq!(e.exit_code(), EX_PROTOCOL);
        assert!(
            e.to_string().contains(
                "server does not offer STARTTLS; refusing to send credentials without TLS"
            ),
            "{e}"
        );
        assert!(f.fake.auth_attempts().is_empty());
        assert!(!f.fake.transcript().iter().any(|l| l.starts_with("C: AUTH")));
    }

    #[tokio::test]
    async fn refused_starttls_means_no_credentials() {
        let f = fixture(Behaviour {
            starttls_reply: Some("454 4.7.0 TLS not available".into()),
            auth_before_tls: true,
            ..Behaviour::default()
        });
        let e = connect(&f).await.err().unwrap();
        assert_eq!(e.exit_code(), EX_PROTOCOL);
        assert!(e.to_string().contains("454 4.7.0 TLS not available"), "{e}");
        assert!(f.fake.auth_attempts().is_empty());
    }

    #[tokio::test]
    async fn a_certificate_from_another_ca_is_refused() {
        let f = fixture_with(&TestCa::new(), &TestCa::new(), Behaviour::default());
        let e = connect(&f).await.err().unwrap();
        assert_eq!(e.exit_code(), EX_PROTOCOL);
        assert!(e.is_certificate(), "{e:?}");
        assert!(
            e.to_string().contains("the certificate of the SMTP server"),
            "{e}"
        );
        assert!(e.to_string().contains("does not verify"), "{e}");
        assert!(!f.fake.transcript().iter().any(|l| l.starts_with("C: AUTH")));
    }

    #[tokio::test]
    async fn a_certificate_for_another_name_is_refused() {
        let ca = TestCa::with_names(&["other.example"]);
        let f = fixture_with(&ca, &ca, Behaviour::default());
        let e = connect(&f).await.err().unwrap();
        assert!(e.is_certificate(), "{e:?}");
        assert!(
            e.to_string().contains("not valid for name \"127.0.0.1\""),
            "{e}"
        );
    }

    #[tokio::test]
    async fn implicit_tls() {
        let f = fixture(Behaviour {
            implicit_tls: true,
            offer_starttls: false,
            ..Behaviour::default()
        });
        let mut s = ready(&f).await;
        s.send(&envelope(&["a@example.org"]), &p(&[MSG]))
            .await
            .unwrap();
        assert_eq!(f.fake.deliveries().len(), 1);
        assert!(!f.fake.transcript().iter().any(|l| l == "C: STARTTLS"));
    }

    #[tokio::test]
    async fn a_silent_server_times_out_as_a_network_error() {
        let f = fixture(Behaviour {
            silent: true,
            ..Behaviour::default()
        });
        let start = Instant::now();
        let e = Session::connect_with(
            &f.server,
            false,
            Timeouts::default().capped(Duration::from_millis(300)),
        )
        .await
        .err()
        .unwrap();
        assert!(start.elapsed() < Duration::from_secs(3));
        assert_eq!(e.exit_code(), EX_TEMPFAIL);
        assert!(
            e.is_network() && e.phase() == Some(Phase::Greeting),
            "{e:?}"
        );
        assert!(e.to_string().contains("300 ms"), "{e}");
    }

    #[tokio::test]
    async fn a_second_authenticate_after_535_succeeds_on_the_same_connection() {
        let f = fixture(Behaviour::default().accept_only("me@example.org", "fresh"));
        let mut s = connect(&f).await.unwrap();
        let e = s.authenticate("me@example.org", "stale").await.unwrap_err();
        assert!(e.is_auth_refused());
        assert_eq!(e.exit_code(), EX_NOPERM);
        assert!(!e.to_string().contains("stale"));
        s.authenticate("me@example.org", "fresh").await.unwrap();
        s.send(&envelope(&["a@example.org"]), &p(&[MSG]))
            .await
            .unwrap();
        assert_eq!(f.fake.connections(), 1);
        let tokens: Vec<String> = f
            .fake
            .auth_attempts()
            .into_iter()
            .map(|a| a.token)
            .collect();
        assert_eq!(tokens, ["stale", "fresh"]);
    }

    #[tokio::test]
    async fn gmail_challenge_is_answered_with_an_empty_line() {
        let f = fixture(Behaviour {
            challenge_on_failure: true,
            ..Behaviour::default().accept_only("me@example.org", "good")
        });
        let mut s = connect(&f).await.unwrap();
        let e = s.authenticate("me@example.org", "bad").await.unwrap_err();
        assert_eq!(e.phase(), Some(Phase::Auth), "{e:?}");
        match e.server_reply() {
            Some(reply) => {
                assert_eq!(reply.code, 535);
                assert_eq!(reply.enhanced(), Some("5.7.8"));
            }
            None => panic!("{e:?}"),
        }
        let t = f.fake.transcript();
        let challenge = t.iter().position(|l| l.starts_with("S: 334 ")).unwrap();
        assert_eq!(t[challenge + 1], "C: ");
        // Still in step: the right token works on the same connection.
        s.authenticate("me@example.org", "good").await.unwrap();
    }

    fn offering(mechanisms: &[&str], behaviour: Behaviour) -> Behaviour {
        Behaviour {
            auth_mechanisms: mechanisms.iter().map(|m| (*m).to_owned()).collect(),
            ..behaviour
        }
    }

    #[tokio::test]
    async fn auto_takes_oauthbearer_where_offered_and_xoauth2_elsewhere() {
        for (offered, want) in [
            (&["XOAUTH2", "OAUTHBEARER"][..], "OAUTHBEARER"),
            (&["XOAUTH2"][..], "XOAUTH2"),
        ] {
            let f = fixture(offering(offered, Behaviour::default()));
            let mut s = connect(&f).await.unwrap();
            s.authenticate("me@example.org", "tok").await.unwrap();
            assert_eq!(s.mechanism(), Some(want));
            let attempts = f.fake.auth_attempts();
            assert_eq!(attempts.len(), 1);
            assert_eq!(attempts[0].mechanism, want);
            assert_eq!(
                (attempts[0].user.as_str(), attempts[0].token.as_str()),
                ("me@example.org", "tok")
            );
            assert!(attempts[0].inline, "a short response goes on the AUTH line");
        }
    }

    #[tokio::test]
    async fn a_chosen_mechanism_is_used_even_when_the_other_is_offered() {
        for (sasl, want) in [
            (Sasl::Xoauth2, "XOAUTH2"),
            (Sasl::Oauthbearer, "OAUTHBEARER"),
        ] {
            let mut f = fixture(offering(&["XOAUTH2", "OAUTHBEARER"], Behaviour::default()));
            f.server.sasl = sasl;
            let mut s = connect(&f).await.unwrap();
            s.authenticate("me@example.org", "tok").await.unwrap();
            assert_eq!(f.fake.auth_attempts()[0].mechanism, want);
        }
    }

    #[tokio::test]
    async fn oauthbearer_chosen_but_not_offered_is_a_clear_protocol_error() {
        let mut f = fixture(offering(&["XOAUTH2"], Behaviour::default()));
        f.server.sasl = Sasl::Oauthbearer;
        let mut s = connect(&f).await.unwrap();
        let e = s.authenticate("me@example.org", "tok").await.unwrap_err();
        assert_eq!(e.exit_code(), EX_PROTOCOL);
        assert!(
            e.to_string()
                .contains("does not offer AUTH OAUTHBEARER (it offers: XOAUTH2)"),
            "{e}"
        );
        assert!(f.fake.auth_attempts().is_empty());
    }

    #[tokio::test]
    async fn a_refused_oauthbearer_token_gets_the_rfc_7628_error_exchange_and_stays_in_step() {
        let f = fixture(offering(
            &["OAUTHBEARER"],
            Behaviour::default().accept_only("me@example.org", "good"),
        ));
        let mut s = connect(&f).await.unwrap();
        let e = s.authenticate("me@example.org", "bad").await.unwrap_err();
        assert!(e.is_auth_refused(), "{e}");
        match e.server_reply() {
            Some(reply) => assert_eq!(reply.code, 535),
            None => panic!("{e:?}"),
        }
        let t = f.fake.transcript();
        let challenge = t.iter().position(|l| l.starts_with("S: 334 ")).unwrap();
        assert_eq!(t[challenge + 1], "C: AQ==", "{t:?}");
        // The right token works on the same connection.
        s.authenticate("me@example.org", "good").await.unwrap();
        assert_eq!(s.mechanism(), Some("OAUTHBEARER"));
    }

    #[tokio::test]
    async fn a_long_oauthbearer_response_takes_two_steps_under_the_512_octet_rule() {
        let f = fixture(offering(&["OAUTHBEARER"], Behaviour::default()));
        let token = "t".repeat(2048);
        let mut s = connect(&f).await.unwrap();
        s.authenticate("me@example.org", &token).await.unwrap();
        let attempts = f.fake.auth_attempts();
        assert!(!attempts[0].inline);
        assert_eq!(attempts[0].token, token);
        assert!(
            f.fake
                .transcript()
                .contains(&"C: AUTH OAUTHBEARER".to_owned())
        );
    }

    #[tokio::test]
    async fn a_long_token_uses_the_two_step_form() {
        for bare_334 in [false, true] {
            let f = fixture(Behaviour {
                bare_334,
                ..Behaviour::default()
            });
            let token = "t".repeat(5000);
            let mut s = connect(&f).await.unwrap();
            s.authenticate("me@example.org", &token).await.unwrap();
            let attempts = f.fake.auth_attempts();
            assert_eq!(attempts.len(), 1);
            assert!(!attempts[0].inline);
            assert_eq!(attempts[0].token, token);
            assert!(f.fake.transcript().contains(&"C: AUTH XOAUTH2".to_owned()));
        }
    }

    #[tokio::test]
    async fn the_longest_inline_auth_line_is_512_octets() {
        // "AUTH XOAUTH2 " + base64 + CRLF: a 330-byte token makes a 364-byte payload, 488
        // base64 chars, a 503-octet line; 360 bytes make 532 octets.
        let f = fixture(Behaviour::default());
        let mut s = connect(&f).await.unwrap();
        s.authenticate("me@example.org", &"t".repeat(330))
            .await
            .unwrap();
        s.authenticate("me@example.org", &"t".repeat(360))
            .await
            .unwrap();
        let inline: Vec<bool> = f.fake.auth_attempts().iter().map(|a| a.inline).collect();
        assert_eq!(inline, [true, false]);
    }

    #[tokio::test]
    async fn no_xoauth2_offered_is_a_clear_protocol_error() {
        let f = fixture(Behaviour {
            auth_mechanisms: vec!["LOGIN".into(), "PLAIN".into()],
            ..Behaviour::default()
        });
        let mut s = connect(&f).await.unwrap();
        let e = s.authenticate("me@example.org", "tok").await.unwrap_err();
        assert_eq!(e.exit_code(), EX_PROTOCOL);
        assert!(e.to_string().contains("it offers: LOGIN PLAIN"), "{e}");
        assert!(f.fake.auth_attempts().is_empty());
    }

    #[tokio::test]
    async fn too_large_for_size_is_refused_before_upload() {
        let f = fixture(Behaviour {
            size: Some(100),
            ..Behaviour::default()
        });
        let mut s = ready(&f).await;
        let e = s
            .send(&envelope(&["a@example.org"]), &p(&[&[b'x'; 1000]]))
            .await
            .unwrap_err();
        assert!(e.too_large_by() == Some((1002, 100)), "{e:?}");
        assert_eq!(e.exit_code(), EX_DATAERR);
        assert!(f.fake.flights_of(&["MAIL"]).is_empty());
        // Nothing was sent, so the session is still good.
        s.send(&envelope(&["a@example.org"]), &p(&[b"small"]))
            .await
            .unwrap();
    }

    fn refused_names(e: &Error) -> Vec<String> {
        match e.refused_recipients() {
            Some(list) => list.iter().map(|(a, _)| a.clone()).collect(),
            None => panic!("{e:?}"),
        }
    }

    #[tokio::test]
    async fn one_refused_recipient_of_two_delivers_nothing() {
        for pipelining in [true, false] {
            let f = fixture(Behaviour {
                pipelining,
                ..Behaviour::default().refuse_rcpt("nobody@example.org", "550 5.1.1 no such user")
            });
            let mut s = ready(&f).await;
            let env = envelope(&["a@example.org", "nobody@example.org"]);
            let e = s.send(&env, &p(&[MSG])).await.unwrap_err();
            assert_eq!(refused_names(&e), ["nobody@example.org"]);
            assert_eq!(e.exit_code(), EX_NOUSER);
            assert!(
                e.to_string()
                    .contains("<nobody@example.org>: 550 5.1.1 no such user"),
                "{e}"
            );
            s.quit().await;
            // Give the fake time to see the close (pipelined) or the RSET (stepwise).
            let t = Duration::from_secs(5);
            assert!(f.fake.wait_for(t, |f| {
                f.transcript()
                    .iter()
                    .any(|l| l.contains("closed during data") || l == "C: RSET")
            }));
            assert!(f.fake.deliveries().is_empty(), "pipelining {pipelining}");
            // Two recipients on a CHUNKING server: DATA, so a refusal can still stop it.
            assert!(f.fake.flights_of(&["BDAT"]).is_empty());
        }
    }

    #[tokio::test]
    async fn all_recipients_refused_keeps_the_session_usable() {
        let f = fixture(
            Behaviour::default()
                .refuse_rcpt("x@example.org", "550 5.1.1 no such user")
                .refuse_rcpt("y@example.org", "550 5.1.1 no such user"),
        );
        let mut s = ready(&f).await;
        let e = s
            .send(&envelope(&["x@example.org", "y@example.org"]), &p(&[MSG]))
            .await
            .unwrap_err();
        assert_eq!(refused_names(&e), ["x@example.org", "y@example.org"]);
        s.send(&envelope(&["a@example.org"]), &p(&[MSG]))
            .await
            .unwrap();
        assert_eq!(f.fake.deliveries().len(), 1);
        assert_eq!(f.fake.deliveries()[0].rcpts, ["a@example.org"]);
    }

    #[tokio::test]
    async fn a_temporary_recipient_refusal_is_a_tempfail_and_delivers_nothing() {
        let f =
            fixture(Behaviour::default().refuse_rcpt("later@example.org", "451 4.4.0 try later"));
        let mut s = ready(&f).await;
        let e = s
            .send(
                &envelope(&["a@example.org", "later@example.org"]),
                &p(&[MSG]),
            )
            .await
            .unwrap_err();
        assert!(
            e.server_reply().is_some() && e.phase() == Some(Phase::Rcpt),
            "{e:?}"
        );
        assert_eq!(e.exit_code(), EX_TEMPFAIL);
        drop(s);
        std::thread::sleep(Duration::from_millis(100));
        assert!(f.fake.deliveries().is_empty());
    }

    async fn refusal_phase(behaviour: Behaviour) -> Error {
        let f = fixture(behaviour);
        let mut s = ready(&f).await;
        let e = s
            .send(&envelope(&["a@example.org"]), &p(&[MSG]))
            .await
            .unwrap_err();
        assert!(f.fake.deliveries().is_empty());
        e
    }

    fn phase_and_code(e: &Error) -> (Phase, u16) {
        match (e.phase(), e.server_reply()) {
            (Some(phase), Some(reply)) => (phase, reply.code),
            _ => panic!("{e:?}"),
        }
    }

    #[tokio::test]
    async fn refusals_carry_their_phase() {
        let mail = refusal_phase(Behaviour {
            mail_reply: Some("451 4.3.0 try later".into()),
            ..Behaviour::default()
        })
        .await;
        assert_eq!(phase_and_code(&mail), (Phase::Mail, 451));
        assert_eq!(mail.exit_code(), EX_TEMPFAIL);
        // DATA, with one recipient, only without CHUNKING.
        let data = refusal_phase(Behaviour {
            data_reply: Some("451 4.3.0 not now".into()),
            chunking: false,
            ..Behaviour::default()
        })
        .await;
        assert_eq!(phase_and_code(&data), (Phase::Data, 451));
        let end = refusal_phase(Behaviour {
            end_reply: Some("451 4.3.0 queue full".into()),
            ..Behaviour::default()
        })
        .await;
        assert_eq!(phase_and_code(&end), (Phase::Message, 451));
        let denied = refusal_phase(Behaviour {
            end_reply: Some("554 5.2.252 SendAsDenied; me@example.org not allowed".into()),
            ..Behaviour::default()
        })
        .await;
        assert_eq!(phase_and_code(&denied), (Phase::Message, 554));
        assert_eq!(denied.exit_code(), EX_UNAVAILABLE);
    }

    fn verbs_of(f: &Fixture) -> Vec<String> {
        f.fake
            .commands()
            .into_iter()
            .filter(|c| !matches!(c.verb.as_str(), "EHLO" | "STARTTLS" | "AUTH"))
            .map(|c| c.verb)
            .collect()
    }

    #[tokio::test]
    async fn one_recipient_with_chunking_is_one_flight_with_bdat_last() {
        let f = fixture(Behaviour::default());
        let mut s = ready(&f).await;
        let mut env = envelope(&["a@example.org"]);
        env.eight_bit = true;
        let msg: &[u8] = b"Subject: hi\n\n.\n..\r\n8bit \xe9\rend";
        let reply = s.send(&env, &p(&[msg])).await.unwrap();
        assert_eq!(reply.code, 250);
        let expected: &[u8] = b"Subject: hi\r\n\r\n.\r\n..\r\n8bit \xe9\rend\r\n";
        let d = &f.fake.deliveries()[0];
        assert_eq!(d.data, expected);
        assert_eq!(d.rcpts, ["a@example.org"]);
        let size = expected.len();
        assert_eq!(
            d.mail_params,
            [format!("SIZE={size}"), "BODY=8BITMIME".into()]
        );
        let flights = f.fake.flights_of(&["MAIL", "RCPT", "BDAT"]);
        assert_eq!(flights.len(), 3);
        assert!(flights.iter().all(|&x| x == flights[0]), "{flights:?}");
        assert_eq!(verbs_of(&f), ["MAIL", "RCPT", "BDAT"]);
        let t = f.fake.transcript();
        assert!(t.contains(&format!("C: BDAT {size} LAST")), "{t:?}");
        // The fake took exactly `size` bytes and found the next command right after.
        s.send(&env, &p(&[b""])).await.unwrap();
        assert_eq!(f.fake.deliveries()[1].data, b"");
        assert!(t.len() < f.fake.transcript().len());
        assert!(f.fake.transcript().contains(&"C: BDAT 0 LAST".to_owned()));
        assert_eq!(f.fake.connections(), 1);
    }

    #[tokio::test]
    async fn without_pipelining_or_with_two_recipients_chunking_is_not_used() {
        let f = fixture(Behaviour {
            pipelining: false,
            ..Behaviour::default()
        });
        let mut s = ready(&f).await;
        s.send(&envelope(&["a@example.org"]), &p(&[MSG]))
            .await
            .unwrap();
        assert_eq!(verbs_of(&f), ["MAIL", "RCPT", "DATA"]);

        let f = fixture(Behaviour::default());
        let mut s = ready(&f).await;
        s.send(&envelope(&["a@example.org", "b@example.org"]), &p(&[MSG]))
            .await
            .unwrap();
        assert_eq!(verbs_of(&f), ["MAIL", "RCPT", "RCPT", "DATA"]);
        assert_eq!(f.fake.deliveries()[0].data, b"Subject: hi\r\n\r\nhello\r\n");
    }

    #[tokio::test]
    async fn a_refused_sole_recipient_with_chunking_delivers_nothing_and_stays_in_step() {
        let f = fixture(
            Behaviour::default().refuse_rcpt("nobody@example.org", "550 5.1.1 no such user"),
        );
        let mut s = ready(&f).await;
        let e = s
            .send(&envelope(&["nobody@example.org"]), &p(&[MSG]))
            .await
            .unwrap_err();
        assert_eq!(refused_names(&e), ["nobody@example.org"]);
        assert_eq!(e.exit_code(), EX_NOUSER);
        assert!(e.to_string().contains("550 5.1.1 no such user"), "{e}");
        assert!(f.fake.deliveries().is_empty());
        let t = f.fake.transcript();
        assert!(
            t.contains(&"S: 503 5.5.1 no valid recipients".to_owned()),
            "{t:?}"
        );
        assert!(s.is_usable());
        // One reply read per command, then RSET: the next message goes on the same line.
        s.send(&envelope(&["a@example.org"]), &p(&[MSG]))
            .await
            .unwrap();
        assert_eq!(f.fake.deliveries().len(), 1);
        assert_eq!(f.fake.deliveries()[0].rcpts, ["a@example.org"]);
        assert_eq!(f.fake.connections(), 1);
        assert_eq!(
            verbs_of(&f),
            ["MAIL", "RCPT", "BDAT", "RSET", "MAIL", "RCPT", "BDAT"]
        );
    }

    #[tokio::test]
    async fn a_temporarily_refused_sole_recipient_with_chunking_is_a_tempfail() {
        let f =
            fixture(Behaviour::default().refuse_rcpt("later@example.org", "451 4.4.0 try later"));
        let mut s = ready(&f).await;
        let e = s
            .send(&envelope(&["later@example.org"]), &p(&[MSG]))
            .await
            .unwrap_err();
        assert_eq!(phase_and_code(&e), (Phase::Rcpt, 451));
        assert_eq!(e.exit_code(), EX_TEMPFAIL);
        assert!(f.fake.deliveries().is_empty());
        s.send(&envelope(&["a@example.org"]), &p(&[MSG]))
            .await
            .unwrap();
        assert_eq!(f.fake.connections(), 1);
    }

    #[tokio::test]
    async fn refusals_with_chunking_carry_the_phases_of_the_data_path() {
        for (mail, code) in [
            ("550 5.7.60 not as this sender", 550),
            ("451 4.3.0 later", 451),
        ] {
            let e = refusal_phase(Behaviour {
                mail_reply: Some(mail.into()),
                ..Behaviour::default()
            })
            .await;
            assert_eq!(phase_and_code(&e), (Phase::Mail, code), "{e}");
        }
        let big = refusal_phase(Behaviour {
            end_reply: Some("552 5.3.4 Message size exceeds fixed maximum message size".into()),
            ..Behaviour::default()
        })
        .await;
        assert_eq!(phase_and_code(&big), (Phase::Message, 552));
        assert_eq!(big.exit_code(), EX_DATAERR);
        let later = refusal_phase(Behaviour {
            end_reply: Some("451 4.3.0 queue full".into()),
            ..Behaviour::default()
        })
        .await;
        assert_eq!(phase_and_code(&later), (Phase::Message, 451));
        assert_eq!(later.exit_code(), EX_TEMPFAIL);
    }

    #[tokio::test]
    async fn a_refused_bdat_last_is_followed_by_rset_and_the_session_goes_on() {
        let f = fixture(Behaviour {
            end_reply: Some("451 4.3.0 queue full".into()),
            ..Behaviour::default()
        });
        let mut s = ready(&f).await;
        let e = s
            .send(&envelope(&["a@example.org"]), &p(&[MSG]))
            .await
            .unwrap_err();
        assert_eq!(phase_and_code(&e), (Phase::Message, 451));
        assert!(s.is_usable());
        let e = s
            .send(&envelope(&["a@example.org"]), &p(&[MSG]))
            .await
            .unwrap_err();
        assert_eq!(phase_and_code(&e), (Phase::Message, 451));
        assert_eq!(
            verbs_of(&f),
            [
                "MAIL", "RCPT", "BDAT", "RSET", "MAIL", "RCPT", "BDAT", "RSET"
            ]
        );
        assert_eq!(f.fake.connections(), 1);
    }

    #[tokio::test]
    async fn dsn_parameters_only_when_offered() {
        let mut env = envelope(&["a+b@example.org"]);
        env.dsn = Dsn {
            notify: Some("SUCCESS,FAILURE".into()),
            ret: Some("HDRS".into()),
            envid: Some("id 1".into()),
        };
        let f = fixture(Behaviour::default());
        let mut s = ready(&f).await;
        s.send(&env, &p(&[MSG])).await.unwrap();
        let d = &f.fake.deliveries()[0];
        assert_eq!(d.mail_params, ["SIZE=22", "RET=HDRS", "ENVID=id+201"]);
        assert_eq!(
            d.rcpt_params[0],
            ["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;a+2Bb@example.org"]
        );

        let f = fixture(Behaviour {
            dsn: false,
            size: None,
            ..Behaviour::default()
        });
        let mut s = ready(&f).await;
        s.send(&env, &p(&[MSG])).await.unwrap();
        let d = &f.fake.deliveries()[0];
        assert!(
            d.mail_params.is_empty() && d.rcpt_params[0].is_empty(),
            "{d:?}"
        );
    }

    #[tokio::test]
    async fn utf8_addresses_need_smtputf8() {
        let mut env = envelope(&["jürgen@example.org"]);
        env.smtputf8 = true;
        let f = fixture(Behaviour::default());
        let mut s = ready(&f).await;
        s.send(&env, &p(&[MSG])).await.unwrap();
        assert!(
            f.fake.deliveries()[0]
                .mail_params
                .contains(&"SMTPUTF8".to_owned())
        );

        let f = fixture(Behaviour {
            smtputf8: false,
            ..Behaviour::default()
        });
        let mut s = ready(&f).await;
        let e = s.send(&env, &p(&[MSG])).await.unwrap_err();
        assert_eq!(e.exit_code(), EX_DATAERR);
        assert!(f.fake.flights_of(&["MAIL"]).is_empty());
    }

    #[tokio::test]
    async fn addresses_cannot_inject_commands() {
        let f = fixture(Behaviour::default());
        let mut s = ready(&f).await;
        let env = envelope(&["a@example.org>\r\nRCPT TO:<evil@example.org"]);
        let e = s.send(&env, &p(&[MSG])).await.unwrap_err();
        assert_eq!(e.exit_code(), EX_DATAERR);
        assert!(f.fake.flights_of(&["MAIL", "RCPT"]).is_empty());
    }

    #[tokio::test]
    async fn a_slow_end_of_data_reply_times_out_as_a_network_error() {
        let f = fixture(Behaviour {
            reply_delay: Duration::from_millis(400),
            ..Behaviour::default()
        });
        let timeouts = Timeouts {
            data_end: Duration::from_millis(100),
            ..quick()
        };
        let mut s = Session::connect_with(&f.server, false, timeouts)
            .await
            .unwrap();
        s.authenticate("me@example.org", "tok").await.unwrap();
        let e = s
            .send(&envelope(&["a@example.org"]), &p(&[MSG]))
            .await
            .unwrap_err();
        assert!(e.is_network() && e.phase() == Some(Phase::Message), "{e:?}");
        assert!(
            s.send(&envelope(&["a@example.org"]), &p(&[MSG]))
                .await
                .is_err()
        );
    }

    /// A realistic Exchange token: XOAUTH2 strings of real ones pass 2,500 bytes.
    fn exchange_sized_token() -> String {
        "eyJ0eXAiOiJKV1QiLCJub25jZSI6".repeat(80)
    }

    #[tokio::test]
    async fn microsoft_sends_a_long_token_on_the_auth_line() {
        let mut f = fixture(Behaviour::default());
        f.server.auth_line = AuthLine::Inline;
        let token = exchange_sized_token();
        let mut s = connect(&f).await.unwrap();
        s.authenticate("me@example.org", &token).await.unwrap();
        let attempts = f.fake.auth_attempts();
        assert_eq!(attempts.len(), 1);
        assert!(attempts[0].inline, "one line, no 334 round trip");
        assert_eq!(attempts[0].token, token);
        assert!(super::super::wire::xoauth2_payload("me@example.org", &token).len() > 2500);
    }

    #[tokio::test]
    async fn a_one_line_auth_refused_as_too_long_is_retried_in_two_steps_on_the_same_connection() {
        for refusal in [
            "555 5.5.2 Syntax error, command line too long. - gsmtp",
            "500 5.5.2 Line too long",
            "501 5.5.4 Invalid arguments",
        ] {
            let mut f = fixture(Behaviour {
                auth_line_limit: Some((1000, refusal.to_owned())),
                ..Behaviour::default()
            });
            f.server.auth_line = AuthLine::Inline;
            let token = exchange_sized_token();
            let mut s = connect(&f).await.unwrap();
            s.authenticate("me@example.org", &token).await.unwrap();
            s.send(&envelope(&["a@example.org"]), &p(&[MSG]))
                .await
                .unwrap();
            let attempts = f.fake.auth_attempts();
            assert_eq!(attempts.len(), 1, "{refusal}");
            assert!(!attempts[0].inline);
            assert_eq!(attempts[0].token, token);
            assert_eq!(f.fake.connections(), 1);
            let t = f.fake.transcript();
            let refused = t
                .iter()
                .position(|l| *l == format!("S: {refusal}"))
                .unwrap();
            assert_eq!(t[refused + 1], "C: AUTH XOAUTH2", "{refusal}");
            assert_eq!(f.fake.deliveries().len(), 1);
        }
    }

    #[tokio::test]
    async fn gmail_and_custom_keep_the_512_octet_rule_against_a_line_limit() {
        let f = fixture(Behaviour::default().gmail_line_limit());
        assert_eq!(f.server.auth_line, AuthLine::Rfc4954);
        let mut s = connect(&f).await.unwrap();
        s.authenticate("me@example.org", &exchange_sized_token())
            .await
            .unwrap();
        assert!(!f.fake.transcript().iter().any(|l| l.starts_with("S: 555")));
        assert_eq!(f.fake.auth_attempts().len(), 1);
    }

    #[tokio::test]
    async fn a_refused_token_after_the_two_step_retry_is_still_an_auth_refusal() {
        let mut f = fixture(Behaviour {
            auth_line_limit: Some((1000, "500 5.5.2 Line too long".to_owned())),
            ..Behaviour::default().accept_only("me@example.org", "other")
        });
        f.server.auth_line = AuthLine::Inline;
        let mut s = connect(&f).await.unwrap();
        let e = s
            .authenticate("me@example.org", &exchange_sized_token())
            .await
            .unwrap_err();
        assert!(e.is_auth_refused(), "{e:?}");
        assert!(s.is_usable());
    }

    fn rcpts_of(f: &Fixture) -> Vec<Vec<String>> {
        f.fake.deliveries().into_iter().map(|d| d.rcpts).collect()
    }

    #[tokio::test]
    async fn too_many_recipients_go_in_further_transactions_on_the_same_connection() {
        for (pipelining, chunking) in [(true, true), (true, false), (false, false)] {
            let f = fixture(Behaviour {
                pipelining,
                chunking,
                ..Behaviour::default().recipient_limit(2)
            });
            let mut s = ready(&f).await;
            let all = ["a@x.org", "b@x.org", "c@x.org", "d@x.org", "e@x.org"];
            let reply = s.send(&envelope(&all), &p(&[MSG])).await.unwrap();
            assert_eq!(reply.code, 250);
            assert_eq!(
                rcpts_of(&f),
                [
                    vec!["a@x.org", "b@x.org"],
                    vec!["c@x.org", "d@x.org"],
                    vec!["e@x.org"]
                ],
                "pipelining {pipelining} chunking {chunking}"
            );
            assert!(
                f.fake
                    .deliveries()
                    .iter()
                    .all(|d| d.data == b"Subject: hi\r\n\r\nhello\r\n")
            );
            assert_eq!(f.fake.connections(), 1);
            assert!(s.is_usable());
            // The transaction that showed the limit never reached DATA: RSET, then
            // batches that fit.
            let verbs = verbs_of(&f);
            let first_rset = verbs.iter().position(|v| v == "RSET").unwrap();
            assert!(
                !verbs[..first_rset]
                    .iter()
                    .any(|v| v == "DATA" || v == "BDAT"),
                "{verbs:?}"
            );
            assert_eq!(
                verbs.iter().filter(|v| *v == "RCPT").count(),
                10,
                "{verbs:?}"
            );
        }
    }

    #[tokio::test]
    async fn dovecots_451_4_5_3_also_means_too_many_recipients() {
        let f = fixture(Behaviour {
            max_rcpts: Some((1, "451 4.5.3 Too many recipients".to_owned())),
            ..Behaviour::default()
        });
        let mut s = ready(&f).await;
        s.send(&envelope(&["a@x.org", "b@x.org"]), &p(&[MSG]))
            .await
            .unwrap();
        assert_eq!(rcpts_of(&f), [vec!["a@x.org"], vec!["b@x.org"]]);
    }

    #[tokio::test]
    async fn a_permanent_refusal_among_too_many_recipients_still_delivers_nothing() {
        let f = fixture(
            Behaviour::default()
                .recipient_limit(2)
                .refuse_rcpt("b@x.org", "550 5.1.1 no such user"),
        );
        let mut s = ready(&f).await;
        let e = s
            .send(&envelope(&["a@x.org", "b@x.org", "c@x.org"]), &p(&[MSG]))
            .await
            .unwrap_err();
        assert_eq!(e.exit_code(), EX_NOUSER);
        assert!(f.fake.deliveries().is_empty());
    }

    #[tokio::test]
    async fn no_room_for_any_recipient_is_a_temporary_failure() {
        let f = fixture(Behaviour::default().recipient_limit(0));
        let mut s = ready(&f).await;
        for rcpts in [&["a@x.org"][..], &["a@x.org", "b@x.org"]] {
            let e = s.send(&envelope(rcpts), &p(&[MSG])).await.unwrap_err();
            assert_eq!(e.exit_code(), EX_TEMPFAIL, "{e}");
        }
        assert!(f.fake.deliveries().is_empty());
    }

    #[tokio::test]
    async fn quit_is_pipelined_after_the_end_of_data_when_nothing_follows() {
        for chunking in [true, false] {
            let f = fixture(Behaviour {
                chunking,
                ..Behaviour::default()
            });
            let s = ready(&f).await;
            s.send_and_quit(&envelope(&["a@x.org"]), &p(&[MSG]))
                .await
                .unwrap();
            assert!(
                f.fake
                    .wait_for(Duration::from_secs(5), FakeSmtp::quit_received)
            );
            let quit = f.fake.flights_of(&["QUIT"]);
            assert_eq!(quit, f.fake.data_end_flights(), "chunking {chunking}");
            assert_eq!(f.fake.deliveries().len(), 1);
        }
    }

    #[tokio::test]
    async fn quit_is_sent_after_a_refused_message_too() {
        let f = fixture(Behaviour {
            mail_reply: Some(
                "550 5.7.60 SMTP; Client does not have permissions to send as this sender".into(),
            ),
            ..Behaviour::default()
        });
        let s = ready(&f).await;
        let e = s
            .send_and_quit(&envelope(&["a@x.org", "b@x.org"]), &p(&[MSG]))
            .await
            .unwrap_err();
        assert_eq!(e.exit_code(), EX_UNAVAILABLE);
        assert!(
            f.fake
                .wait_for(Duration::from_secs(5), FakeSmtp::quit_received)
        );
        assert!(f.fake.deliveries().is_empty());
    }

    #[tokio::test]
    async fn a_refusal_in_a_later_transaction_names_who_already_has_the_message() {
        let f = fixture(
            Behaviour::default()
                .recipient_limit(1)
                .refuse_rcpt("b@x.org", "550 5.1.1 no such user"),
        );
        let mut s = ready(&f).await;
        let e = s
            .send(&envelope(&["a@x.org", "b@x.org"]), &p(&[MSG]))
            .await
            .unwrap_err();
        let line = e.to_string();
        assert!(
            line.contains("for <a@x.org> in earlier transactions"),
            "{line}"
        );
        assert!(line.contains("<b@x.org>: 550 5.1.1 no such user"), "{line}");
        assert!(
            !matches!(
                e.class(),
                crate::error::Class::Transient | crate::error::Class::Uncertain
            ),
            "not queued: a resend would duplicate it for a@x.org"
        );
        assert_eq!(rcpts_of(&f), [vec!["a@x.org"]]);
    }
}
