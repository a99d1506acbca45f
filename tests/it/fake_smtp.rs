//! A fake ESMTP submission server over real TCP and TLS on `127.0.0.1`, Exchange Online
//! by default, for end-to-end tests. Configure it with a [`Behaviour`], start it with
//! [`FakeSmtp::start`], point the client at [`FakeSmtp::port`], then read what happened:
//! [`FakeSmtp::deliveries`], [`FakeSmtp::auth_attempts`], [`FakeSmtp::transcript`],
//! [`FakeSmtp::flights_of`], [`FakeSmtp::connections`], [`FakeSmtp::quit_received`].
//!
//! ```ignore
//! let ca = TestCa::new();
//! let tokens = Arc::new(Mutex::new(HashSet::from(["tok".to_owned()])));
//! let smtp = FakeSmtp::start(&ca, Behaviour::default().accept_tokens(&tokens));
//! // ... run the client against 127.0.0.1:smtp.port() with ca.ca_pem as tls_ca_file ...
//! assert_eq!(smtp.deliveries()[0].rcpts, ["you@example.org"]);
//! ```
//!
//! It is strict where our client must be right: commands end in CRLF, AUTH only after
//! TLS, MAIL only after AUTH, a message is only recorded after its final `.` line (or its
//! `BDAT LAST` chunk, with MAIL and a RCPT accepted), and a connection that closes during
//! DATA or a BDAT chunk delivers nothing (as real servers do). [`AfterData`] makes it
//! close, or fall silent, once a message has arrived (a lost final reply). Knobs make it
//! as strict as
//! Gmail and Dovecot about long AUTH lines ([`Behaviour::auth_line_limit`],
//! [`Behaviour::gmail_line_limit`]) and as Exchange about recipients per transaction
//! ([`Behaviour::recipient_limit`]).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::support::{self, TestCa};

/// Decides whether an XOAUTH2 user and token are accepted.
pub type AcceptFn = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// How the fake behaves. `Default` is Exchange Online on port 587.
// Each switch is one independent server feature, as an EHLO reply lists them.
#[allow(clippy::struct_excessive_bools)]
#[derive(Clone)]
pub struct Behaviour {
    /// The 220 greeting line, without CRLF.
    pub greeting: String,
    /// Accept TCP but never greet nor answer (a hung server).
    pub silent: bool,
    /// TLS from the first byte (port 465 style) instead of STARTTLS.
    pub implicit_tls: bool,
    /// Advertise and accept STARTTLS before TLS.
    pub offer_starttls: bool,
    /// Refuse STARTTLS with this reply although it is offered (e.g. `454 4.7.0 TLS not available`).
    pub starttls_reply: Option<String>,
    /// Advertise AUTH (and accept it) before TLS too, like a careless server.
    pub auth_before_tls: bool,
    /// The AUTH mechanisms advertised after TLS; empty = no AUTH line.
    pub auth_mechanisms: Vec<String>,
    /// Require a successful AUTH before MAIL (`530 5.7.57` otherwise).
    pub require_auth: bool,
    pub pipelining: bool,
    /// `SIZE n`; `None` = not advertised. Larger messages get `552 5.3.4`.
    pub size: Option<u64>,
    pub dsn: bool,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    /// Advertise CHUNKING (and BINARYMIME) and take BDAT (RFC 3030). BDAT is answered
    /// whether or not CHUNKING is advertised, as Exchange does.
    pub chunking: bool,
    /// XOAUTH2 user and token → accepted?
    pub accept: AcceptFn,
    /// Gmail style: a refused token gets `334 <base64 JSON>`, then `535` after the
    /// client's empty line.
    pub challenge_on_failure: bool,
    /// Answer `AUTH XOAUTH2` (without initial response) with `334` and no text at all.
    pub bare_334: bool,
    /// Replies for given recipients (lower-case address → reply line), e.g.
    /// `"550 5.1.1 no such user"`. Others get `250 2.1.5 Recipient OK`.
    pub rcpt_replies: HashMap<String, String>,
    /// Scripted reply to MAIL FROM instead of `250 2.1.0 Sender OK`.
    pub mail_reply: Option<String>,
    /// Scripted reply to DATA instead of `354 Start mail input`.
    pub data_reply: Option<String>,
    /// Scripted reply after the final `.` (or to `BDAT LAST`, when MAIL and a RCPT were
    /// accepted) instead of `250 2.0.0 OK <id> queued`; a non-2xx reply records no
    /// delivery.
    pub end_reply: Option<String>,
    /// Wait this long before each reply (a slow server).
    pub reply_delay: Duration,
    /// Reply lines sent unasked right after a successful `235` (CRLF-separated; a broken
    /// or hostile server whose replies run ahead of the commands).
    pub after_auth: Option<String>,
    /// An `AUTH` command line longer than this many octets (with its CRLF) is answered
    /// with the reply and not processed: Gmail's `555 5.5.2 Syntax error, command line
    /// too long`, Dovecot's `500 5.5.2 Line too long`. The SASL response line after a
    /// `334` is not limited (both servers take long ones).
    pub auth_line_limit: Option<(usize, String)>,
    /// At most this many accepted recipients per transaction; each further RCPT gets the
    /// reply (Exchange: `452 4.5.3 Too many recipients`; Dovecot: `451 4.5.3 …`).
    pub max_rcpts: Option<(usize, String)>,
    /// What happens once a whole message has arrived (after its final `.`, or its
    /// `BDAT LAST` chunk with MAIL and a RCPT accepted).
    pub after_data: AfterData,
    /// The reply to a refused XOAUTH2 token instead of `535 5.7.3 …`, e.g. Exchange's
    /// `535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled …`.
    pub auth_refusal: Option<String>,
    /// A reply sent in the same write as the `354`, before any message data (a broken or
    /// hostile server that answers the data before its final `.`, e.g. `250 2.0.0 OK`).
    /// The data is then read as usual and answered with `end_reply`.
    pub early_data_reply: Option<String>,
    /// A reply sent once the first line of message data has arrived, a few bytes at a
    /// time (trickled), after which the connection closes, unread data and all: Exchange's
    /// `421 4.3.2 Service not available` in the middle of DATA.
    pub mid_data_reply: Option<String>,
}

/// The end of a transaction, as a server that crashes or hangs there shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterData {
    /// Answer (`end_reply`, or 250).
    Reply,
    /// Close the connection without a reply. The message has fully arrived, so it is
    /// recorded as delivered: the worst case for the client, which cannot know.
    Close,
    /// Never answer, holding the connection open until the client goes; recorded as
    /// delivered, as for `Close`.
    Silent,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            greeting: "220 fake.outlook.test ESMTP".to_owned(),
            silent: false,
            implicit_tls: false,
            offer_starttls: true,
            starttls_reply: None,
            auth_before_tls: false,
            auth_mechanisms: vec!["LOGIN".to_owned(), "XOAUTH2".to_owned()],
            require_auth: true,
            pipelining: true,
            size: Some(157_286_400),
            dsn: true,
            eight_bit_mime: true,
            smtputf8: true,
            chunking: true,
            accept: Arc::new(|_, _| true),
            challenge_on_failure: false,
            bare_334: false,
            rcpt_replies: HashMap::new(),
            mail_reply: None,
            data_reply: None,
            end_reply: None,
            reply_delay: Duration::ZERO,
            after_data: AfterData::Reply,
            auth_line_limit: None,
            max_rcpts: None,
            after_auth: None,
            auth_refusal: None,
            early_data_reply: None,
            mid_data_reply: None,
        }
    }
}

impl Behaviour {
    /// Accept exactly the tokens in `tokens` (shared: a fake token endpoint may add the
    /// tokens it issues), for any user.
    #[must_use]
    pub fn accept_tokens(mut self, tokens: &Arc<Mutex<HashSet<String>>>) -> Self {
        let tokens = tokens.clone();
        self.accept = Arc::new(move |_, token| tokens.lock().unwrap().contains(token));
        self
    }

    /// Accept only `user` with `token`.
    #[must_use]
    pub fn accept_only(mut self, user: &str, token: &str) -> Self {
        let (u, t) = (user.to_owned(), token.to_owned());
        self.accept = Arc::new(move |user, token| user == u && token == t);
        self
    }

    /// Gmail's limit on command lines: an `AUTH` line over about 1,000 octets gets `555`.
    #[must_use]
    pub fn gmail_line_limit(mut self) -> Self {
        self.auth_line_limit = Some((
            1000,
            "555 5.5.2 Syntax error, command line too long. - gsmtp".to_owned(),
        ));
        self
    }

    /// Exchange Online's answer past `n` recipients in one transaction.
    #[must_use]
    pub fn recipient_limit(mut self, n: usize) -> Self {
        self.max_rcpts = Some((n, "452 4.5.3 Too many recipients".to_owned()));
        self
    }

    /// Reply `reply` (e.g. `550 5.1.1 no such user`) to RCPT TO this address.
    #[must_use]
    pub fn refuse_rcpt(mut self, address: &str, reply: &str) -> Self {
        self.rcpt_replies
            .insert(address.to_ascii_lowercase(), reply.to_owned());
        self
    }
}

/// One AUTH XOAUTH2 or OAUTHBEARER attempt, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthAttempt {
    /// `XOAUTH2` or `OAUTHBEARER`.
    pub mechanism: String,
    pub user: String,
    pub token: String,
    pub accepted: bool,
    /// The initial response came on the AUTH line (SASL-IR), not after a 334.
    pub inline: bool,
}

/// One message accepted after its final `.`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The reverse path without brackets (`""` for the null sender).
    pub from: String,
    /// The MAIL FROM parameters as sent, e.g. `["SIZE=12", "BODY=8BITMIME"]`.
    pub mail_params: Vec<String>,
    /// Accepted recipients, without brackets.
    pub rcpts: Vec<String>,
    /// Each accepted RCPT's parameters, as sent.
    pub rcpt_params: Vec<Vec<String>>,
    /// The message as the server reads it: after DATA, dot-stuffing undone and the final
    /// `.` line removed; after BDAT, the chunks' bytes exactly as received.
    pub data: Vec<u8>,
}

/// One command line as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRecord {
    /// Which connection (0, 1, ...).
    pub connection: usize,
    /// Which socket read delivered its last byte, numbered across all connections: two
    /// commands with the same flight arrived together (pipelined).
    pub flight: usize,
    /// The upper-case verb (`MAIL`, `RCPT`, ...); `""` for a SASL response line.
    pub verb: String,
}

#[derive(Default)]
struct Record {
    transcript: Vec<String>,
    commands: Vec<CommandRecord>,
    auth_attempts: Vec<AuthAttempt>,
    deliveries: Vec<Delivery>,
    connections: usize,
    quits: usize,
    /// The flight of each message's end (DATA's `.` line, or a `BDAT LAST` chunk).
    data_ends: Vec<usize>,
}

/// A running fake server; it lives until the test process ends.
pub struct FakeSmtp {
    addr: SocketAddr,
    record: Arc<Mutex<Record>>,
}

impl FakeSmtp {
    /// Binds `127.0.0.1:0` and serves on its own thread, one task per connection.
    #[must_use]
    pub fn start(ca: &TestCa, behaviour: Behaviour) -> FakeSmtp {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let record = Arc::new(Mutex::new(Record::default()));
        let server = Server {
            behaviour: Arc::new(behaviour),
            acceptor: ca.acceptor(),
            record: record.clone(),
            reads: Arc::new(AtomicUsize::new(0)),
        };
        support::spawn_server(async move {
            let listener = TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let server = server.clone();
                tokio::spawn(async move { server.serve(tcp).await });
            }
        });
        FakeSmtp { addr, record }
    }

    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    #[must_use]
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Every line, `C: ...` and `S: ...`, of all connections in order. AUTH payloads are
    /// shown as sent; message data as one `C: <message data, N bytes>` line.
    #[must_use]
    pub fn transcript(&self) -> Vec<String> {
        self.lock().transcript.clone()
    }

    #[must_use]
    pub fn commands(&self) -> Vec<CommandRecord> {
        self.lock().commands.clone()
    }

    /// The flight of each command whose verb is in `verbs`, in order of arrival.
    #[must_use]
    pub fn flights_of(&self, verbs: &[&str]) -> Vec<usize> {
        self.lock()
            .commands
            .iter()
            .filter(|c| verbs.contains(&c.verb.as_str()))
            .map(|c| c.flight)
            .collect()
    }

    #[must_use]
    pub fn auth_attempts(&self) -> Vec<AuthAttempt> {
        self.lock().auth_attempts.clone()
    }

    #[must_use]
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.lock().deliveries.clone()
    }

    /// TCP connections accepted so far.
    #[must_use]
    pub fn connections(&self) -> usize {
        self.lock().connections
    }

    /// The flight that brought the end of each message (the `.` line or the last byte of
    /// the `BDAT LAST` chunk): QUIT in the same flight was pipelined after the data.
    #[must_use]
    pub fn data_end_flights(&self) -> Vec<usize> {
        self.lock().data_ends.clone()
    }

    /// Whether any connection sent QUIT.
    #[must_use]
    pub fn quit_received(&self) -> bool {
        self.lock().quits > 0
    }

    /// Waits up to `within` for `done` to hold (the client does not wait for the 221, so
    /// a test may look before the fake has read QUIT).
    pub fn wait_for(&self, within: Duration, done: impl Fn(&FakeSmtp) -> bool) -> bool {
        let end = std::time::Instant::now() + within;
        while !done(self) {
            if std::time::Instant::now() > end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap()
    }
}

#[derive(Clone)]
struct Server {
    behaviour: Arc<Behaviour>,
    acceptor: TlsAcceptor,
    record: Arc<Mutex<Record>>,
    /// Socket reads across all connections: the flight counter.
    reads: Arc<AtomicUsize>,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Between the two, while the handshake runs.
    Gone,
}

/// One connection: its stream, the bytes read but not yet used, and the session state.
struct Conn {
    server: Server,
    id: usize,
    stream: Stream,
    buf: Vec<u8>,
    /// The flight that delivered the end of the last line read.
    flight: usize,
    authenticated: bool,
    mail: Option<(String, Vec<String>)>,
    rcpts: Vec<(String, Vec<String>)>,
    /// The BDAT chunks of the current transaction so far; `Some` once one was taken.
    chunks: Option<Vec<u8>>,
}

type Io<T> = std::io::Result<T>;

impl Server {
    async fn serve(self, tcp: TcpStream) {
        // Each reply is its own write: with Nagle on, the second reply to a pipelined
        // batch waits for the client's delayed ACK (~40 ms), as no real server does.
        let _ = tcp.set_nodelay(true);
        let id = {
            let mut r = self.record.lock().unwrap();
            r.connections += 1;
            r.connections - 1
        };
        let mut conn = Conn {
            server: self.clone(),
            id,
            stream: Stream::Plain(tcp),
            buf: Vec::new(),
            flight: 0,
            authenticated: false,
            mail: None,
            rcpts: Vec::new(),
            chunks: None,
        };
        // Errors end the connection, as a closed socket ends a real server's session.
        let _ = conn.run().await;
    }
}

impl Conn {
    fn b(&self) -> &Behaviour {
        &self.server.behaviour
    }

    fn log(&self, line: String) {
        self.server.record.lock().unwrap().transcript.push(line);
    }

    fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// The port the client connected to (OAUTHBEARER's `port=` must name it).
    fn local_port(&self) -> u16 {
        match &self.stream {
            Stream::Plain(tcp) => tcp.local_addr().map_or(0, |a| a.port()),
            Stream::Tls(tls) => tls.get_ref().0.local_addr().map_or(0, |a| a.port()),
            Stream::Gone => 0,
        }
    }

    async fn run(&mut self) -> Io<()> {
        if self.b().silent {
            // Hold the connection open without a word until the client gives up.
            while self.read_some().await? > 0 {}
            return Ok(());
        }
        if self.b().implicit_tls {
            self.start_tls().await?;
        }
        let greeting = self.b().greeting.clone();
        self.reply(&greeting).await?;
        while let Some(line) = self.read_line().await? {
            let text = String::from_utf8_lossy(&line).into_owned();
            self.log(format!("C: {text}"));
            let verb = text.split(' ').next().unwrap_or("").to_ascii_uppercase();
            self.note_command(&verb);
            if let Some((limit, reply)) = self.b().auth_line_limit.clone()
                && verb == "AUTH"
                && line.len() + 2 > limit
            {
                self.reply(&reply).await?;
                continue;
            }
            if !self.dispatch(&verb, &text).await? {
                return Ok(());
            }
        }
        Ok(())
    }

    fn note_command(&self, verb: &str) {
        let record = CommandRecord {
            connection: self.id,
            flight: self.flight,
            verb: verb.to_owned(),
        };
        self.server.record.lock().unwrap().commands.push(record);
    }

    /// Handles one command; `false` ends the session.
    async fn dispatch(&mut self, verb: &str, text: &str) -> Io<bool> {
        let arg = text.get(verb.len()..).unwrap_or("").trim_start();
        match verb {
            "EHLO" => self.ehlo(arg).await?,
            "HELO" => self.reply("250 fake.outlook.test").await?,
            "STARTTLS" => self.starttls().await?,
            "AUTH" => self.auth(arg).await?,
            "MAIL" => self.mail(arg).await?,
            "RCPT" => self.rcpt(arg).await?,
            "DATA" => self.data().await?,
            "BDAT" => return self.bdat(arg).await,
            "RSET" => {
                self.reset();
                self.reply("250 2.0.0 Resetting").await?;
            }
            "NOOP" => self.reply("250 2.0.0 OK").await?,
            "QUIT" => {
                self.server.record.lock().unwrap().quits += 1;
                self.reply("221 2.0.0 Service closing transmission channel")
                    .await?;
                return Ok(false);
            }
            _ => self.reply("500 5.3.3 Unrecognized command").await?,
        }
        Ok(true)
    }

    fn reset(&mut self) {
        self.mail = None;
        self.rcpts.clear();
        self.chunks = None;
    }

    async fn ehlo(&mut self, arg: &str) -> Io<()> {
        self.reset();
        let b = self.b();
        let mut lines = vec![format!("fake.outlook.test Hello [{arg}]")];
        let tls = self.is_tls();
        if let Some(limit) = b.size {
            lines.push(format!("SIZE {limit}"));
        }
        let offered = [
            (b.pipelining, "PIPELINING"),
            (b.dsn, "DSN"),
            (true, "ENHANCEDSTATUSCODES"),
        ];
        for (on, word) in offered {
            if on {
                lines.push(word.to_owned());
            }
        }
        if b.offer_starttls && !tls {
            lines.push("STARTTLS".to_owned());
        }
        if (tls || b.auth_before_tls) && !b.auth_mechanisms.is_empty() {
            lines.push(format!("AUTH {}", b.auth_mechanisms.join(" ")));
        }
        for (on, word) in [
            (b.eight_bit_mime, "8BITMIME"),
            (b.chunking, "BINARYMIME"),
            (b.chunking, "CHUNKING"),
            (b.smtputf8, "SMTPUTF8"),
        ] {
            if on {
                lines.push(word.to_owned());
            }
        }
        self.multiline(250, &lines).await
    }

    async fn starttls(&mut self) -> Io<()> {
        if self.is_tls() || !self.b().offer_starttls {
            return self.reply("502 5.5.1 Command not implemented").await;
        }
        if let Some(refusal) = self.b().starttls_reply.clone() {
            return self.reply(&refusal).await;
        }
        self.reply("220 2.0.0 SMTP server ready").await?;
        // Bytes sent before the handshake must not survive it (STARTTLS injection).
        self.buf.clear();
        self.start_tls().await?;
        self.authenticated = false;
        self.reset();
        Ok(())
    }

    async fn start_tls(&mut self) -> Io<()> {
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            return Err(std::io::Error::other("TLS twice"));
        };
        let tls = self.server.acceptor.accept(tcp).await?;
        self.stream = Stream::Tls(Box::new(tls));
        Ok(())
    }

    async fn auth(&mut self, arg: &str) -> Io<()> {
        let b = self.b().clone();
        let offered = self.is_tls() || b.auth_before_tls;
        if !offered {
            return self
                .reply("530 5.7.0 Must issue a STARTTLS command first")
                .await;
        }
        let mut words = arg.split(' ');
        let mechanism = words.next().unwrap_or("").to_ascii_uppercase();
        let known = mechanism == "XOAUTH2" || mechanism == "OAUTHBEARER";
        if !known || !b.auth_mechanisms.contains(&mechanism) {
            return self
                .reply("504 5.7.4 Unrecognized authentication type")
                .await;
        }
        let (payload, inline) = if let Some(ir) = words.next() {
            (ir.to_owned(), true)
        } else {
            self.reply(if b.bare_334 { "334" } else { "334 " }).await?;
            let Some(line) = self.read_line().await? else {
                return Ok(());
            };
            let line = String::from_utf8_lossy(&line).into_owned();
            self.log(format!("C: {line}"));
            self.note_command("");
            (line, false)
        };
        let port = self.local_port();
        let decoded = if mechanism == "XOAUTH2" {
            decode_xoauth2(&payload)
        } else {
            decode_oauthbearer(&payload, port)
        };
        let Some((user, token)) = decoded else {
            return self.reply("501 5.5.2 Cannot decode response").await;
        };
        let accepted = (b.accept)(&user, &token);
        self.server
            .record
            .lock()
            .unwrap()
            .auth_attempts
            .push(AuthAttempt {
                mechanism: mechanism.clone(),
                user,
                token,
                accepted,
                inline,
            });
        if accepted {
            self.authenticated = true;
            return match b.after_auth.clone() {
                Some(extra) => {
                    self.reply(&format!("235 2.7.0 Authentication successful\r\n{extra}"))
                        .await
                }
                None => self.reply("235 2.7.0 Authentication successful").await,
            };
        }
        if mechanism == "OAUTHBEARER" {
            // RFC 7628 §3.2.2: the error as base64 JSON in a 334; the client must answer
            // a single %x01 before the final reply (anything else is a protocol error).
            let json = format!(
                r#"{{"status":"invalid_token","schemes":"bearer","scope":"mail","port":"{port}"}}"#
            );
            let challenge = base64::engine::general_purpose::STANDARD.encode(json);
            self.reply(&format!("334 {challenge}")).await?;
            let Some(line) = self.read_line().await? else {
                return Ok(());
            };
            let line = String::from_utf8_lossy(&line).into_owned();
            self.log(format!("C: {line}"));
            self.note_command("");
            if line != "AQ==" {
                return self
                    .reply("501 5.5.2 Expected the %x01 response to the error")
                    .await;
            }
            return self
                .reply("535 5.7.8 Authentication credentials invalid")
                .await;
        }
        if b.challenge_on_failure {
            let json = r#"{"status":"401","schemes":"Bearer","scope":"https://mail.google.com/"}"#;
            let challenge = base64::engine::general_purpose::STANDARD.encode(json);
            self.reply(&format!("334 {challenge}")).await?;
            let Some(line) = self.read_line().await? else {
                return Ok(());
            };
            self.log(format!("C: {}", String::from_utf8_lossy(&line)));
            self.note_command("");
            return self
                .reply("535-5.7.8 Username and Password not accepted.\r\n535 5.7.8 https://support.google.com/mail/?p=BadCredentials")
                .await;
        }
        let refusal = b
            .auth_refusal
            .as_deref()
            .unwrap_or("535 5.7.3 Authentication unsuccessful [FAKE.PROD.OUTLOOK.COM]");
        self.reply(refusal).await
    }

    async fn mail(&mut self, arg: &str) -> Io<()> {
        if self.b().require_auth && !self.authenticated {
            return self
                .reply("530 5.7.57 Client not authenticated to send mail")
                .await;
        }
        let Some((from, params)) = parse_path(arg, "FROM:") else {
            return self.reply("501 5.5.4 Invalid arguments").await;
        };
        if let Some(reply) = self.b().mail_reply.clone() {
            return self.reply(&reply).await;
        }
        let limit = self.b().size.unwrap_or(0);
        let declared = params
            .iter()
            .find_map(|p| p.strip_prefix("SIZE=").and_then(|n| n.parse::<u64>().ok()));
        if limit > 0 && declared.is_some_and(|n| n > limit) {
            return self
                .reply("552 5.3.4 Message size exceeds fixed maximum message size")
                .await;
        }
        self.mail = Some((from, params));
        self.rcpts.clear();
        self.reply("250 2.1.0 Sender OK").await
    }

    async fn rcpt(&mut self, arg: &str) -> Io<()> {
        if self.mail.is_none() {
            return self.reply("503 5.5.1 Bad sequence of commands").await;
        }
        let Some((to, params)) = parse_path(arg, "TO:") else {
            return self.reply("501 5.5.4 Invalid arguments").await;
        };
        // The limit first, as Postfix's smtpd checks it before the recipient itself.
        if let Some((limit, reply)) = self.b().max_rcpts.clone()
            && self.rcpts.len() >= limit
        {
            return self.reply(&reply).await;
        }
        if let Some(reply) = self.b().rcpt_replies.get(&to.to_ascii_lowercase()).cloned() {
            return self.reply(&reply).await;
        }
        self.rcpts.push((to, params));
        self.reply("250 2.1.5 Recipient OK").await
    }

    async fn data(&mut self) -> Io<()> {
        if self.mail.is_none() || self.chunks.is_some() {
            // RFC 3030 §2: DATA and BDAT do not mix in one transaction.
            return self.reply("503 5.5.1 Bad sequence of commands").await;
        }
        if self.rcpts.is_empty() {
            // RFC 2920 §3.1: DATA without any valid recipient fails.
            return self.reply("554 5.5.1 Error: no valid recipients").await;
        }
        if let Some(reply) = self.b().data_reply.clone() {
            return self.reply(&reply).await;
        }
        let go_ahead = "354 Start mail input; end with <CRLF>.<CRLF>";
        match self.b().early_data_reply.clone() {
            Some(early) => self.reply(&format!("{go_ahead}\r\n{early}")).await?,
            None => self.reply(go_ahead).await?,
        }
        if let Some(reply) = self.b().mid_data_reply.clone() {
            return self.interrupt_data(&reply).await;
        }
        let Some(data) = self.read_data().await? else {
            // The client went away before the final dot: nothing is delivered.
            self.log("C: <connection closed during data>".to_owned());
            return Ok(());
        };
        self.log(format!("C: <message data, {} bytes>", data.len()));
        self.log("C: .".to_owned());
        self.finish_message(data).await
    }

    /// `mid_data_reply`: after the first data line, `reply` in pieces, then the connection
    /// closes with the rest of the data unread; nothing is delivered.
    async fn interrupt_data(&mut self, reply: &str) -> Io<()> {
        if self.read_raw_line().await?.is_none() {
            return Ok(());
        }
        self.log(format!("S: {reply}"));
        let bytes = format!("{reply}\r\n").into_bytes();
        for piece in bytes.chunks(bytes.len().div_ceil(3)) {
            self.write(piece).await?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.log("S: <connection closed during data>".to_owned());
        Err(std::io::Error::other("closed during the data"))
    }

    /// `BDAT <n> [LAST]` (RFC 3030): takes exactly n bytes after the line, whatever the
    /// reply (they may have come with the line or come in many reads), and answers each
    /// BDAT once. `LAST` delivers the chunks if MAIL and a RCPT were accepted; without a
    /// valid recipient it is `503` and nothing is delivered. `false`: the client closed
    /// the connection during the chunk.
    async fn bdat(&mut self, arg: &str) -> Io<bool> {
        let mut words = arg.split_ascii_whitespace();
        let size = words.next().and_then(|n| n.parse::<usize>().ok());
        let last = match words.next() {
            None => Some(false),
            Some(w) if w.eq_ignore_ascii_case("LAST") => Some(true),
            Some(_) => None,
        };
        let (Some(size), Some(last), None) = (size, last, words.next()) else {
            self.reply("501 5.5.4 Invalid arguments").await?;
            return Ok(true);
        };
        let Some(chunk) = self.read_exact(size).await? else {
            self.log("C: <connection closed during data>".to_owned());
            return Ok(false);
        };
        self.log(format!("C: <message data, {size} bytes>"));
        if last {
            self.server
                .record
                .lock()
                .unwrap()
                .data_ends
                .push(self.flight);
        }
        if self.mail.is_none() {
            self.reply("503 5.5.1 Bad sequence of commands").await?;
            return Ok(true);
        }
        if self.rcpts.is_empty() {
            self.reply("503 5.5.1 no valid recipients").await?;
            return Ok(true);
        }
        let chunks = self.chunks.get_or_insert_with(Vec::new);
        chunks.extend_from_slice(&chunk);
        if !last {
            self.reply(&format!("250 2.0.0 {size} octets received"))
                .await?;
            return Ok(true);
        }
        let data = self.chunks.take().unwrap_or_default();
        self.finish_message(data).await?;
        Ok(true)
    }

    /// Exactly `n` bytes, from what was read already and further reads; `None` at EOF.
    async fn read_exact(&mut self, n: usize) -> Io<Option<Vec<u8>>> {
        while self.buf.len() < n {
            if self.read_some().await? == 0 {
                return Ok(None);
            }
        }
        Ok(Some(self.buf.drain(..n).collect()))
    }

    /// The message lines up to the `.` line, dot-stuffing undone; `None` at EOF.
    async fn read_data(&mut self) -> Io<Option<Vec<u8>>> {
        let mut data = Vec::new();
        loop {
            let Some(line) = self.read_raw_line().await? else {
                return Ok(None);
            };
            if line == b".\r\n" {
                self.server
                    .record
                    .lock()
                    .unwrap()
                    .data_ends
                    .push(self.flight);
                return Ok(Some(data));
            }
            let unstuffed = line.strip_prefix(b".").unwrap_or(&line);
            data.extend_from_slice(unstuffed);
        }
    }

    async fn finish_message(&mut self, data: Vec<u8>) -> Io<()> {
        let limit = self.b().size.unwrap_or(0);
        let reply = match self.b().end_reply.clone() {
            Some(r) => r,
            None if limit > 0 && data.len() as u64 > limit => {
                "552 5.3.4 Message size exceeds fixed maximum message size".to_owned()
            }
            None => {
                "250 2.0.0 OK <fake@fake.outlook.test> [Hostname=FAKE] Queued mail for delivery"
                    .to_owned()
            }
        };
        let (from, mail_params) = self.mail.take().unwrap_or_default();
        let rcpts = std::mem::take(&mut self.rcpts);
        self.chunks = None;
        let after = self.b().after_data;
        if reply.starts_with('2') || after != AfterData::Reply {
            self.server
                .record
                .lock()
                .unwrap()
                .deliveries
                .push(Delivery {
                    from,
                    mail_params,
                    rcpts: rcpts.iter().map(|(r, _)| r.clone()).collect(),
                    rcpt_params: rcpts.into_iter().map(|(_, p)| p).collect(),
                    data,
                });
        }
        match after {
            AfterData::Reply => self.reply(&reply).await,
            AfterData::Close => {
                self.log("S: <connection closed after the data>".to_owned());
                Err(std::io::Error::other("closed after the data"))
            }
            AfterData::Silent => {
                self.log("S: <no reply after the data>".to_owned());
                while self.read_some().await? > 0 {}
                Err(std::io::Error::other("the client left"))
            }
        }
    }

    /// Writes one reply; `text` may hold several lines separated by CRLF.
    async fn reply(&mut self, text: &str) -> Io<()> {
        let delay = self.b().reply_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        for line in text.split("\r\n") {
            self.log(format!("S: {line}"));
        }
        self.write(format!("{text}\r\n").as_bytes()).await
    }

    async fn multiline(&mut self, code: u16, lines: &[String]) -> Io<()> {
        let last = lines.len() - 1;
        let text: Vec<String> = lines
            .iter()
            .enumerate()
            .map(|(i, l)| format!("{code}{}{l}", if i == last { ' ' } else { '-' }))
            .collect();
        self.reply(&text.join("\r\n")).await
    }

    async fn write(&mut self, bytes: &[u8]) -> Io<()> {
        match &mut self.stream {
            Stream::Plain(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Stream::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Stream::Gone => Err(std::io::Error::other("no stream")),
        }
    }

    /// One socket read into `buf`; returns the byte count (0 at EOF).
    async fn read_some(&mut self) -> Io<usize> {
        // On the heap: a 16 KiB array would make every future that awaits this one large.
        let mut chunk = vec![0u8; 16 * 1024];
        let n = match &mut self.stream {
            Stream::Plain(s) => s.read(&mut chunk).await?,
            Stream::Tls(s) => s.read(&mut chunk).await?,
            Stream::Gone => 0,
        };
        self.flight = self.server.reads.fetch_add(1, Ordering::SeqCst);
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// One line with its line ending; `None` at EOF.
    async fn read_raw_line(&mut self) -> Io<Option<Vec<u8>>> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                return Ok(Some(self.buf.drain(..=i).collect()));
            }
            if self.read_some().await? == 0 {
                return Ok(None);
            }
        }
    }

    /// A command line without its CRLF. A line ending in a bare LF is a client bug:
    /// refused as a real server would, and the line is not processed.
    async fn read_line(&mut self) -> Io<Option<Vec<u8>>> {
        loop {
            let Some(mut line) = self.read_raw_line().await? else {
                return Ok(None);
            };
            if line.ends_with(b"\r\n") {
                line.truncate(line.len() - 2);
                return Ok(Some(line));
            }
            self.log(format!("C: {} <bare LF>", String::from_utf8_lossy(&line)));
            self.reply("500 5.5.2 Line must end in CRLF").await?;
        }
    }
}

/// `FROM:<addr> P1 P2` → (addr, [P1, P2]).
fn parse_path(arg: &str, prefix: &str) -> Option<(String, Vec<String>)> {
    let head = arg.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = arg[prefix.len()..].trim_start().strip_prefix('<')?;
    let (addr, params) = rest.split_once('>')?;
    let params = params.split_whitespace().map(str::to_owned).collect();
    Some((addr.to_owned(), params))
}

/// `base64("user=U\x01auth=Bearer T\x01\x01")` → (U, T).
/// RFC 7628 §3.1, strictly: `n,a=USER,` then `host=…`, `port=PORT` (this server's) and
/// `auth=Bearer TOKEN`, each ended by %x01, and a final %x01.
fn decode_oauthbearer(b64: &str, port: u16) -> Option<(String, String)> {
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let rest = text.strip_prefix("n,a=")?;
    let (user, rest) = rest.split_once(",\x01")?;
    let user = user.replace("=2C", ",").replace("=3D", "=");
    let pairs = rest.strip_suffix("\x01\x01")?;
    let mut host = None;
    let mut seen_port = None;
    let mut token = None;
    for pair in pairs.split('\x01') {
        let (key, value) = pair.split_once('=')?;
        match key {
            "host" => host = Some(value.to_owned()),
            "port" => seen_port = value.parse::<u16>().ok(),
            "auth" => token = Some(value.strip_prefix("Bearer ")?.to_owned()),
            _ => return None,
        }
    }
    (host.is_some_and(|h| !h.is_empty()) && seen_port == Some(port)).then_some(())?;
    Some((user, token?))
}

fn decode_xoauth2(b64: &str) -> Option<(String, String)> {
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let rest = text.strip_prefix("user=")?;
    let (user, rest) = rest.split_once('\x01')?;
    let token = rest
        .strip_prefix("auth=Bearer ")?
        .strip_suffix("\x01\x01")?;
    Some((user.to_owned(), token.to_owned()))
}
