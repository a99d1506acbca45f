//! `oauth2-sendmail`: a drop-in `sendmail` that submits over STARTTLS with SASL XOAUTH2,
//! using a cached `OAuth2` token that is refreshed when needed.
//!
//! The one path that matters (sendmail mode):
//!
//! ```text
//! argv ─► cli ─► config ─► message (stdin; a large one spooled) ─► plan::resolve (pure)
//!                                                  │
//!          transport: Route::for_account (smtp, graph, or auto: smtp then graph)
//!                   ─► oauth::access_token ∥ smtp::Session::connect
//!                   ─► authenticate (XOAUTH2, one retry on a refused cached token)
//!                   ─► send (MAIL/RCPT/DATA pipelined) ─► exit 0
//!          (transport = "graph", or "auto" after a 5.7.139: oauth::graph_token ∥ the
//!           HTTPS connection ─► POST /v1.0/me/sendMail, the MIME message in base64)
//! ```
//!
//! | module | one job |
//! |---|---|
//! | `cli` | what was typed: sendmail flags and management words (clap) |
//! | `config` | the TOML model (and the names it spells), errors with file/line/key, secret commands |
//! | `command` | the one runner for every `*_cmd`: time limit, bounded output, kill and reap |
//! | `scrub` | peer text made printable: secrets removed in every encoding, control characters escaped, cut |
//! | `scope` | who runs us, decided once: user mode, or system mode (root sends with the host's account, anyone else drops) |
//! | `paths` | where config, tokens, queue and log live: the caller's XDG folders, or the host's in system mode |
//! | `private_dir` | folders 0700 and files 0600 whatever the umask, loose or foreign folders refused, no symlinks followed |
//! | `proxy` | the account's SOCKS5 or HTTP CONNECT proxy: the SMTP tunnel, reqwest's proxy, never its credentials shown |
//! | `provider` | presets (microsoft, microsoft-china, gmail, custom) → hosts, endpoints, scopes; the provider guessed from the address |
//! | `message` | reading stdin once, the header view, Bcc stripping, header edits |
//! | `spool` | the message's bytes: small in memory, large in a nameless private file; `Payload`, read as a stream by SMTP, Graph and the queue |
//! | `plan` | pure resolution of account, envelope and header edits |
//! | `oauth` | the token cache (`store`), the HTTP grants (`grants`), Microsoft's AADSTS codes and what each asks of the user (`aadsts`), the interactive flows (`login`, `authcode`) |
//! | `http` | HTTP answers read with a bound on their size (`read_body`), for the token endpoint and Graph |
//! | `smtp` | our ESMTP client: wire bytes (`wire`), the stream and its timeouts (`net`), the envelope's checks (`envelope`), the dialogue (`session`) |
//! | `reply` | an SMTP server's reply and its enhanced status code (below `smtp` and `error`) |
//! | `tls` | certificate trust for SMTP and the token endpoint: system roots, `tls_ca_file` |
//! | `transport` | the whole way out: the seam callers use (`send` and `close`, over an SMTP session or a Graph client) |
//! | `transport::route` | one `Route` per account (SMTP, Graph, or SMTP then Graph for `auto`), read by sending, `--dry-run`, `check` and `status`; `auto`'s decision and its memory |
//! | `transport::open` | opening a route: token and SMTP connection at once, XOAUTH2 with one retry, `auto`'s switch on a 5.7.139 |
//! | `graph` | Microsoft Graph `sendMail`: the copy that carries the envelope, the HTTP/2 client, its outcomes |
//! | `graph::large` | Graph above its 4 MB request limit: a draft, attachments and upload sessions, then send |
//! | `graph::body` | Graph request bodies that stream (base64 on the way) and their idle time limit |
//! | `mime_split` | a MIME message less its largest attachments, every other byte kept |
//! | `queue` | the durable queue on disk: enqueue (fsync), list, defer, fail, remove; the due index |
//! | `maildrop` | other users' messages for the system account: the drop (any user) and the pickup (root's checks) |
//! | `flush` | sending the queue: one session per account, oldest first, backoff; `-q` renews idle refresh tokens; the listing of `mailq`/`queue list` (`flush::listing`) |
//! | `keyring` | `token_store = "keyring"`: the per-account data key in the Secret Service, the sealed token file |
//! | `journal` | the log: one line per message and outcome, RFC 3339, `0600` |
//! | `throttle` | a notice at most once per period across runs (an unwritable log, the notifier) |
//! | `sendmail` | sendmail mode from argv to exit status; which failures are queued |
//! | `manage` | the management words: login, token, check, logout, queue |
//! | `status` | `status` and `status --json`: one model of every account's facts and health, two renderings |
//! | `setup` | `login EMAIL` on a first run: infer the provider (domain, MX), add or find the account in the config (`manage` runs the login) |
//! | `manual` | the man page (clap's options plus the hand-written reference) and completions: `--generate` |
//! | `clock` | times as people read them (`status`, `login`) |
//! | `notice` | system mode: a short mail to the submitter (their alias, or root's) when their message fails for good |
//! | `notify` | telling the user an account needs them (`notify_cmd`, desktop); a refused refresh remembered for `status` |
//! | `error` | one error type → the stderr line, the exit code, the failure class |
//! | `runtime` | the single-threaded async runtime every network step runs on |
//! | `stdout` | what a command answers, written to stdout (a failed write is an error) |
//! | `stderr` | the one door to stderr: the prefix, scrubbed, escaped and cut lines; the `-v` transcript |
//!
//! Rules that hold everywhere: nothing is printed on success in sendmail mode; a token is
//! only sent after TLS is up and verified; no token, refresh token, password or secret ever
//! reaches stdout (except `token`, whose job it is), stderr, a log or an error.

mod cli;
mod clock;
mod command;
mod config;
mod error;
mod flush;
mod graph;
mod http;
mod journal;
mod keyring;
mod maildrop;
mod manage;
mod manual;
mod message;
mod mime_split;
mod notice;
mod notify;
mod oauth;
mod paths;
mod plan;
mod private_dir;
mod provider;
mod proxy;
mod queue;
mod reply;
mod runtime;
mod scope;
mod scrub;
mod sendmail;
mod setup;
mod smtp;
mod spool;
mod status;
mod stderr;
mod stdout;
mod throttle;
mod tls;
mod transport;

// The integration tests' harness and fake servers, shared with the unit tests that drive
// the SMTP session and the token cache over real sockets (the fakes name `super::support`).
#[cfg(test)]
#[allow(
    dead_code,
    reason = "each unit test uses a part of the integration-test kit"
)]
#[path = "../tests/it/fake_idp.rs"]
mod fake_idp;
#[cfg(test)]
#[allow(
    dead_code,
    reason = "each unit test uses a part of the integration-test kit"
)]
#[path = "../tests/it/fake_smtp.rs"]
mod fake_smtp;
#[cfg(test)]
#[allow(
    dead_code,
    reason = "each unit test uses a part of the integration-test kit"
)]
#[path = "../tests/it/support.rs"]
mod support;
// Property tests of the readers of peer and user input (proptest).
#[cfg(test)]
mod proptests;

use std::process::ExitCode;

use clap::error::ErrorKind;

fn main() -> ExitCode {
    // One TLS provider for the process: reqwest and tokio-rustls share it.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // This program started again to keep a notifier (see `notify`): not a command line.
    if args.first().is_some_and(|a| a == notify::KEEPER_ARG0) {
        return notify::keeper(&args);
    }
    let invocation = match cli::parse(args) {
        Ok(i) => i,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("bad command line");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            stderr::line(&format!("{first} (see --help)"));
            return ExitCode::from(error::EX_USAGE);
        }
    };
    let result = match invocation {
        cli::Invocation::Send(args) if args.generate.is_some() => {
            manual::generate(args.generate.unwrap_or(cli::GenerateArg::Man))
        }
        cli::Invocation::Send(args) => scope::decide(scope::Asked {
            config: args.config.as_deref(),
            system: args.system,
            creates_own_config: false,
        })
        .and_then(|_| sendmail::run(&args)),
        cli::Invocation::Manage(args) => scope::decide(scope::Asked {
            config: args.config.as_deref(),
            system: args.system,
            creates_own_config: manage::creates_own_config(&args),
        })
        .and_then(|_| manage::run(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !e.is_reported() {
                // The last guard on every error line: no secret, no control character,
                // no megabyte of echoed input.
                stderr::line(&e.to_string());
            }
            ExitCode::from(e.exit_code())
        }
    }
}
