//! What was typed: clap definitions for sendmail mode and for the management words.
//!
//! Nothing here reads a file or decides anything; `plan` turns these values into what
//! they mean. The sendmail flags keep sendmail's spellings (`-oi`, `-FCronDaemon`,
//! `-fme@x`, `-r`, `-bm`), so `-h` (hop count) and `-V` (DSN envelope id) are not
//! clap's help and version flags: those are only `--help` and `--version`.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

/// The words that select a management command when they come first.
pub const MANAGEMENT_WORDS: &[&str] = &["login", "token", "status", "check", "logout", "queue"];

/// Files and exit codes, for `--help` and the man page.
const AFTER_HELP: &str = "\
Files:
  $XDG_CONFIG_HOME/oauth2-sendmail/config.toml   the config (or -C FILE, or $OAUTH2_SENDMAIL_CONFIG)
  $XDG_DATA_HOME/oauth2-sendmail/tokens/ACCOUNT.json   the token cache (0600): access_token,
      expires_at (Unix seconds), refresh_token, token_type, scope, obtained_at
  $XDG_STATE_HOME/oauth2-sendmail/queue/   messages waiting to be sent; failed/ keeps refusals
  /etc/oauth2-sendmail/config.toml   the system config, when the caller has none (system mode;
      root sends with it, other users' mail goes through /var/spool/oauth2-sendmail/maildrop/)

Exit status (sysexits.h):
  0 sent (or queued)   64 bad command line   65 unusable message   67 a recipient refused
  69 refused by the server   70 internal error   74 local I/O error
  75 temporary failure: try again later   76 protocol error (e.g. no STARTTLS)
  77 authentication refused or a new login needed   78 configuration error

Nothing is printed on success. A token is only sent over verified TLS and never printed
except by `oauth2-sendmail token`.";

/// Sendmail mode: read a message on stdin and submit it.
// Sendmail's flags are many independent switches; a bool each is what was typed.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Default, Clone, Parser)]
#[command(
    name = "oauth2-sendmail",
    version,
    about = "A drop-in sendmail that submits mail over STARTTLS with OAuth2 (XOAUTH2)",
    long_about = "Reads an RFC 5322 message on standard input and submits it over STARTTLS with \
                  SASL XOAUTH2, using a cached OAuth2 token that is refreshed when needed.\n\n\
                  Management commands: login, token, status, check, logout, queue \
                  (`oauth2-sendmail WORD --help`).",
    disable_help_flag = true,
    disable_version_flag = true,
    args_override_self = true,
    override_usage = "oauth2-sendmail [OPTIONS] [--] [RECIPIENT ...] < message\n       \
                      oauth2-sendmail login|token|status|check|logout|queue ...",
    after_long_help = AFTER_HELP
)]
pub struct SendArgs {
    /// Recipients (addresses, lists with commas, `Name <addr>`, or local names resolved through [aliases])
    #[arg(value_name = "RECIPIENT")]
    pub recipients: Vec<String>,

    /// Add recipients from To, Cc and Bcc (or from the newest Resent-* block)
    #[arg(short = 't', long = "read-recipients")]
    pub read_recipients: bool,

    /// Accepted: input is always read to end of file
    #[arg(short = 'i')]
    pub ignore_dots: bool,

    /// Envelope sender (`<>` for the null sender); also picks the account
    #[arg(short = 'f', short_alias = 'r', long = "from", value_name = "ADDR")]
    pub from: Option<String>,

    /// Take the envelope sender from the From header (-f wins)
    #[arg(long = "read-envelope-from")]
    pub read_envelope_from: bool,

    /// Display name for a From header that is added or rewritten
    #[arg(short = 'F', value_name = "NAME")]
    pub full_name: Option<String>,

    /// Use this account
    #[arg(short = 'a', long = "account", value_name = "NAME")]
    pub account: Option<String>,

    /// Config file
    #[arg(short = 'C', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print the SMTP dialogue to stderr (authentication data redacted)
    #[arg(short = 'v', action = ArgAction::Count)]
    pub verbose: u8,

    /// DSN: when to notify (never, or a list of success,failure,delay)
    #[arg(short = 'N', value_name = "WHEN")]
    pub dsn_notify: Option<String>,

    /// DSN: what to return (full or hdrs)
    #[arg(short = 'R', value_name = "WHAT")]
    pub dsn_return: Option<String>,

    /// DSN: envelope id
    #[arg(short = 'V', value_name = "ENVID")]
    pub dsn_envid: Option<String>,

    /// Body type (7BIT or 8BITMIME); accepted
    #[arg(short = 'B', value_name = "TYPE")]
    pub body_type: Option<String>,

    /// Sendmail options: -oi, -odq (queue only), -odb, -odi, -oem, ... (others accepted)
    #[arg(short = 'o', value_name = "OPTION", action = ArgAction::Append)]
    pub options: Vec<String>,

    /// Mode: -bm deliver (default), -bp list the queue
    #[arg(short = 'b', value_name = "MODE")]
    pub mode: Option<String>,

    /// Process the queue now (an optional interval is accepted and ignored)
    #[arg(short = 'q', value_name = "INTERVAL", num_args = 0..=1, default_missing_value = "")]
    pub queue_run: Option<String>,

    /// Resolve account, envelope and header changes, print them, send nothing
    #[arg(long = "dry-run")]
    pub dry_run: bool,

    /// Use the host's system account, config, tokens and queue (root only), e.g. `--system -q`
    #[arg(long = "system")]
    pub system: bool,

    /// Print the man page or a shell completion script on stdout (for installing them)
    #[arg(long = "generate", value_enum, value_name = "WHAT")]
    pub generate: Option<GenerateArg>,

    /// Accepted for compatibility
    #[arg(short = 'L', value_name = "TAG", hide = true)]
    pub log_tag: Option<String>,

    /// Accepted for compatibility (hop count)
    #[arg(short = 'h', value_name = "N", hide = true)]
    pub hop_count: Option<String>,

    /// Accepted for compatibility
    #[arg(short = 'n', hide = true)]
    pub no_aliasing: bool,

    /// Accepted for compatibility
    #[arg(short = 'U', hide = true)]
    pub initial_submission: bool,

    /// Accepted for compatibility
    #[arg(short = 'G', hide = true)]
    pub gateway: bool,

    /// Accepted for compatibility
    #[arg(short = 'm', hide = true)]
    pub me_too: bool,

    /// Accepted for compatibility (traffic log)
    #[arg(short = 'X', value_name = "FILE", hide = true)]
    pub traffic_log: Option<String>,

    /// Accepted for compatibility
    #[arg(short = 'A', value_name = "X", hide = true)]
    pub submission_file: Option<String>,

    /// Accepted for compatibility (sendmail debug level, e.g. -d0.1)
    #[arg(short = 'd', value_name = "X", hide = true)]
    pub debug_level: Option<String>,

    /// Print help
    #[arg(long = "help", action = ArgAction::Help)]
    pub help: Option<bool>,

    /// Print version
    #[arg(long = "version", action = ArgAction::Version)]
    pub version: Option<bool>,
}

impl SendArgs {
    /// `-odq` (or `-oDq`-style variants): put the message in the queue without sending.
    #[must_use]
    pub fn queue_only(&self) -> bool {
        self.delivery_mode() == Some('q')
    }

    /// `-oem` or `-oee` (the last `-oe?` given): the caller cannot keep a message whose
    /// send failed (cron passes `-oem`), so failures that need the user are queued too.
    #[must_use]
    pub fn caller_cannot_keep(&self) -> bool {
        let mode = self
            .options
            .iter()
            .filter_map(|o| o.strip_prefix('e'))
            .filter_map(|m| m.chars().next())
            .map(|c| c.to_ascii_lowercase())
            .next_back();
        matches!(mode, Some('m' | 'e'))
    }

    /// The last `-od?` delivery mode given, lower-cased.
    fn delivery_mode(&self) -> Option<char> {
        self.options
            .iter()
            .filter_map(|o| o.strip_prefix('d'))
            .filter_map(|m| m.chars().next())
            .map(|c| c.to_ascii_lowercase())
            .next_back()
    }
}

/// Management mode: `oauth2-sendmail WORD ...`.
#[derive(Debug, Parser)]
#[command(name = "oauth2-sendmail", version, disable_help_subcommand = true)]
pub struct ManageArgs {
    /// Config file
    #[arg(short = 'C', long = "config", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,

    /// Act on the host's system account, config, tokens and queue (root only)
    #[arg(long = "system", global = true)]
    pub system: bool,

    #[command(subcommand)]
    pub command: Manage,
}

#[derive(Debug, Subcommand)]
pub enum Manage {
    /// Authorise an account and store its tokens
    Login(LoginArgs),
    /// Print a valid access token (refreshed if needed), e.g. for mbsync `PassCmd`
    Token {
        /// Account (default: the default account)
        account: Option<String>,
    },
    /// Show accounts, their servers and token state (no secrets)
    Status {
        /// Account (default: all)
        account: Option<String>,
        /// One JSON object on stdout, for monitoring (schema in the man page)
        #[arg(long)]
        json: bool,
    },
    /// Connect, STARTTLS, authenticate and quit, sending nothing
    Check {
        /// Account (default: the default account)
        account: Option<String>,
    },
    /// Delete an account's stored tokens
    Logout {
        /// Account
        account: String,
    },
    /// The queue of messages waiting to be sent
    Queue {
        #[command(subcommand)]
        action: QueueAction,
    },
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Account (default: the default account), or an email address: when no account has it,
    /// one is added to the config (first run)
    #[arg(value_name = "ACCOUNT|EMAIL")]
    pub account: Option<String>,
    /// With `login EMAIL`: the provider of a new account, instead of inferring it from the
    /// address's domain or its MX records
    #[arg(long, value_enum, value_name = "PROVIDER")]
    pub provider: Option<ProviderArg>,
    /// The flow to use instead of the account's configured one
    #[arg(long, value_enum)]
    pub flow: Option<FlowArg>,
    /// Do not open a browser; the URL is printed to stderr
    #[arg(long)]
    pub no_browser: bool,
    /// Read a refresh token from FILE (`-` = stdin), redeem it once and store the result
    #[arg(long, value_name = "FILE")]
    pub import_refresh_token: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProviderArg {
    Microsoft,
    MicrosoftChina,
    Gmail,
    Custom,
}

/// What `--generate` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GenerateArg {
    /// The man page (section 1, with the configuration reference)
    Man,
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FlowArg {
    Authcode,
    Devicecode,
    Password,
    ClientCredentials,
}

#[derive(Debug, Subcommand)]
pub enum QueueAction {
    /// List queued and failed messages
    List,
    /// Try to send every queued message now
    Flush,
    /// Remove a message from the queue
    Remove {
        /// The message id shown by `queue list`
        id: String,
    },
}

/// What the command line asks for, decided by the program name and the first word.
#[derive(Debug)]
pub enum Invocation {
    Send(Box<SendArgs>),
    Manage(ManageArgs),
}

/// Parses `argv` (program name first). Errors are clap's, with `--help`/`--version` among them.
pub fn parse(argv: Vec<OsString>) -> Result<Invocation, clap::Error> {
    let program = argv
        .first()
        .and_then(|p| std::path::Path::new(p).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if program == "mailq" {
        // Like Postfix's and sendmail's `mailq`: list the queue, whatever the arguments.
        return Ok(Invocation::Manage(ManageArgs {
            config: None,
            system: false,
            command: Manage::Queue {
                action: QueueAction::List,
            },
        }));
    }
    if program == "sendmail" || !starts_with_management_word(&argv[1.min(argv.len())..]) {
        return SendArgs::try_parse_from(argv).map(|a| Invocation::Send(Box::new(a)));
    }
    ManageArgs::try_parse_from(argv).map(Invocation::Manage)
}

/// True when the first word (after an optional leading `-C FILE` or `--system`) is a
/// management word.
fn starts_with_management_word(args: &[OsString]) -> bool {
    let mut rest = args
        .iter()
        .map(|a| a.to_string_lossy())
        .filter(|a| a != "--system");
    let mut first = rest.next();
    match first.as_deref() {
        Some("-C" | "--config") => {
            rest.next();
            first = rest.next();
        }
        Some(a) if a.starts_with("--config=") || (a.starts_with("-C") && a.len() > 2) => {
            first = rest.next();
        }
        _ => {}
    }
    first.is_some_and(|w| MANAGEMENT_WORDS.contains(&w.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(args: &[&str]) -> SendArgs {
        let full = std::iter::once("oauth2-sendmail")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect();
        match parse(full).expect("parses") {
            Invocation::Send(s) => *s,
            Invocation::Manage(m) => panic!("parsed as management: {m:?}"),
        }
    }

    #[test]
    fn oem_and_oee_say_the_caller_cannot_keep_the_message() {
        assert!(send(&["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"]).caller_cannot_keep());
        assert!(send(&["-i", "-odi", "-oem", "-oi", "-t", "-f", "root"]).caller_cannot_keep());
        assert!(send(&["-oee", "x@y"]).caller_cannot_keep());
        assert!(send(&["-o", "em", "x@y"]).caller_cannot_keep());
        assert!(!send(&["-oi", "--", "x@y"]).caller_cannot_keep());
        assert!(!send(&["-oi", "--read-envelope-from", "-t"]).caller_cannot_keep());
        assert!(!send(&["-ti"]).caller_cannot_keep());
        assert!(!send(&["-oem", "-oep", "x@y"]).caller_cannot_keep());
    }

    #[test]
    fn debian_cron_flags() {
        let a = send(&["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"]);
        assert_eq!(a.full_name.as_deref(), Some("CronDaemon"));
        assert!(a.ignore_dots);
        assert_eq!(a.body_type.as_deref(), Some("8BITMIME"));
        assert_eq!(a.options, ["em"]);
        assert_eq!(a.recipients, ["root"]);
    }

    #[test]
    fn cronie_flags() {
        let a = send(&[
            "-FCronDaemon",
            "-i",
            "-odi",
            "-oem",
            "-oi",
            "-t",
            "-f",
            "root",
        ]);
        assert!(a.read_recipients);
        assert_eq!(a.from.as_deref(), Some("root"));
        assert!(!a.queue_only());
        assert!(a.recipients.is_empty());
    }

    #[test]
    fn grouped_and_joined_spellings() {
        let a = send(&["-ti"]);
        assert!(a.read_recipients && a.ignore_dots);
        let a = send(&["-fme@x.example", "-r", "other@x.example"]);
        assert_eq!(a.from.as_deref(), Some("other@x.example"));
        let a = send(&["-i", "-B", "8BITMIME", "bob@x.example"]);
        assert_eq!(a.body_type.as_deref(), Some("8BITMIME"));
        assert_eq!(a.recipients, ["bob@x.example"]);
    }

    #[test]
    fn mutt_and_emacs_flags() {
        let a = send(&[
            "-oi",
            "-oem",
            "-f",
            "me@x.example",
            "--",
            "a@x.example",
            "-b@x",
        ]);
        assert_eq!(a.recipients, ["a@x.example", "-b@x"]);
        let a = send(&["-oi", "--read-envelope-from", "-t"]);
        assert!(a.read_envelope_from && a.read_recipients);
    }

    #[test]
    fn queue_and_dsn_flags() {
        let a = send(&[
            "-odq",
            "-N",
            "success,failure",
            "-R",
            "hdrs",
            "-V",
            "id1",
            "x@y.example",
        ]);
        assert!(a.queue_only());
        assert_eq!(a.dsn_notify.as_deref(), Some("success,failure"));
        assert_eq!(a.dsn_return.as_deref(), Some("hdrs"));
        assert_eq!(a.dsn_envid.as_deref(), Some("id1"));
        assert_eq!(send(&["-q"]).queue_run.as_deref(), Some(""));
        assert_eq!(send(&["-bp"]).mode.as_deref(), Some("p"));
    }

    #[test]
    fn compatibility_flags_are_accepted() {
        let a = send(&[
            "-L",
            "tag",
            "-h",
            "3",
            "-n",
            "-U",
            "-G",
            "-X",
            "/dev/null",
            "-oQ/x",
            "a@b.example",
        ]);
        assert_eq!(a.recipients, ["a@b.example"]);
    }

    #[test]
    fn management_words_only_first() {
        let argv = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(matches!(
            parse(argv(&["oauth2-sendmail", "token", "work"])).unwrap(),
            Invocation::Manage(_)
        ));
        assert!(matches!(
            parse(argv(&["oauth2-sendmail", "-C", "/x.toml", "status"])).unwrap(),
            Invocation::Manage(_)
        ));
        assert!(matches!(
            parse(argv(&["oauth2-sendmail", "--", "token"])).unwrap(),
            Invocation::Send(_)
        ));
        assert!(matches!(
            parse(argv(&["oauth2-sendmail", "--system", "login", "ops"])).unwrap(),
            Invocation::Manage(m) if m.system
        ));
        assert!(matches!(
            parse(argv(&["oauth2-sendmail", "--system", "-q"])).unwrap(),
            Invocation::Send(s) if s.system && s.queue_run.is_some()
        ));
        // Invoked as `sendmail`, a word is a recipient.
        assert!(matches!(
            parse(argv(&["/usr/sbin/sendmail", "status"])).unwrap(),
            Invocation::Send(_)
        ));
    }
}

/// The man page and shell completions are generated from the clap definitions above and
/// committed; this test fails when they are out of date. `UPDATE_GENERATED=1 cargo test`
/// rewrites them.
#[cfg(test)]
mod generated_docs {
    use std::path::Path;

    use clap_complete::Shell;

    fn man_page() -> Vec<u8> {
        crate::manual::man_page()
    }

    fn completion(shell: Shell) -> Vec<u8> {
        crate::manual::completion(shell)
    }

    #[test]
    fn committed_man_page_and_completions_are_current() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let files = [
            ("man/oauth2-sendmail.1", man_page()),
            ("completions/oauth2-sendmail.bash", completion(Shell::Bash)),
            ("completions/_oauth2-sendmail", completion(Shell::Zsh)),
            ("completions/oauth2-sendmail.fish", completion(Shell::Fish)),
        ];
        let update = std::env::var_os("UPDATE_GENERATED").is_some();
        for (path, fresh) in files {
            let path = root.join(path);
            if update {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, &fresh).unwrap();
                continue;
            }
            let committed = std::fs::read(&path).unwrap_or_default();
            assert!(
                committed == fresh,
                "{} is out of date: run `UPDATE_GENERATED=1 cargo test generated_docs`",
                path.display()
            );
        }
    }
}
