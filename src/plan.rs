//! What to do with one message, decided from what was typed, the config and the message:
//! the account, the envelope (sender, recipients after `[aliases]`, DSN) and the header
//! edits. Pure: no I/O and no clock (the time and a random seed come in `Context`), so
//! every caller's flag set is a unit test.

use std::fmt;

use std::collections::BTreeMap;

use crate::cli::SendArgs;
use crate::clock;
use crate::config::{Account, Config, RewriteFrom};
use crate::error::{Error, Result};
use crate::message::{self, HeaderEdits, Mailbox, Message};
use crate::smtp::{Dsn, Envelope};

/// What to do with one message: which account, which envelope, which header edits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendPlan {
    pub account: String,
    pub envelope: Envelope,
    pub edits: HeaderEdits,
    /// The fields left out of the message (Bcc, Resent-Bcc), one per occurrence.
    pub removed: Vec<String>,
    /// `edits.from` replaces an existing From field (rather than adding one).
    pub replaces_from: bool,
}

/// Inputs that are not pure: the clock and a random seed (for Message-ID).
#[derive(Debug, Clone, Copy)]
pub struct Context {
    /// Unix seconds.
    pub now: u64,
    pub random: u64,
}

impl Context {
    /// The clock and a fresh seed, as every caller of [`resolve`] passes them.
    #[must_use]
    pub fn current() -> Context {
        let mut seed = [0u8; 8];
        // A Message-ID needs uniqueness, not secrecy; the time and pid still vary without it.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed);
        Context {
            now: clock::now(),
            random: u64::from_le_bytes(seed) ^ u64::from(std::process::id()),
        }
    }
}

/// Aliases may point at other local names; this bounds a loop in the config.
const MAX_ALIAS_DEPTH: usize = 8;
/// Most recipients one message may have after alias expansion (Exchange Online allows 1000
/// per message).
const MAX_RECIPIENTS: usize = 1000;

/// The envelope sender as asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sender {
    /// Neither `-f` nor `--read-envelope-from`: the account's address.
    Unset,
    /// `-f '<>'`: the null sender, `MAIL FROM:<>`.
    Null,
    /// A bare local name (cronie's `-f root`): it picks no account, and the account's own
    /// address is sent instead.
    Local,
    Address(String),
}

/// Pure: account choice, envelope, aliases, header edits.
pub fn resolve(
    args: &SendArgs,
    config: &Config,
    message: &Message,
    ctx: Context,
) -> Result<SendPlan> {
    let dsn = dsn(args)?;
    let sender = sender(args, message)?;
    // For choosing the account and keeping the display name, an unreadable From counts as none.
    let header_from = message.from().ok().flatten();
    let account_name = choose_account(args, config, &sender, header_from.as_ref())?;
    let account = config.account(&account_name)?;
    check_account_email(config, &account_name, account)?;
    let from = match sender {
        Sender::Null => None,
        Sender::Address(a) => Some(a),
        Sender::Unset | Sender::Local => Some(account.email.clone()),
    };
    let recipients = recipients(args, config, message)?;
    let smtputf8 = from.iter().chain(&recipients).any(|a| !a.is_ascii());
    let (edits, replaces_from) = header_edits(args, account, message, header_from.as_ref(), ctx);
    Ok(SendPlan {
        account: account_name,
        envelope: Envelope {
            from,
            recipients,
            dsn,
            eight_bit: message.eight_bit(),
            smtputf8,
        },
        edits,
        removed: message.removed_fields(),
        replaces_from,
    })
}

/// The account's `email` is the envelope sender and the From we write: it must be a
/// whole address (a config error otherwise, exit 78).
fn check_account_email(config: &Config, name: &str, account: &Account) -> Result<()> {
    if account.email.contains('@') && message::check_address(&account.email, "email").is_ok() {
        return Ok(());
    }
    Err(Error::config(format!(
        "{}: key `accounts.{name}.email`: `{}` is not an address",
        config.path.display(),
        account.email.escape_debug()
    )))
}

/// `-f`/`-r` first, then `--read-envelope-from` (so both together work: `-f` wins).
fn sender(args: &SendArgs, message: &Message) -> Result<Sender> {
    if let Some(f) = &args.from {
        return parse_sender(f);
    }
    if !args.read_envelope_from {
        return Ok(Sender::Unset);
    }
    match message.from()? {
        Some(m) if m.is_local() => Ok(Sender::Local),
        Some(m) => Ok(Sender::Address(m.address)),
        None => Err(Error::data(
            "--read-envelope-from: the message has no From address; add one or use -f",
        )),
    }
}

/// `-f` as callers write it: `a@b`, `<a@b>`, `Name <a@b>`, `<>` or empty (null sender),
/// `MAILER-DAEMON` (null, as sendmail and msmtp read it), or a local name.
fn parse_sender(text: &str) -> Result<Sender> {
    if text.contains(['\r', '\n']) {
        return Err(Error::data(
            "-f: the sender address holds a line break; nothing was sent",
        ));
    }
    let text = text.trim();
    if text.is_empty() || text == "<>" || text.eq_ignore_ascii_case("MAILER-DAEMON") {
        return Ok(Sender::Null);
    }
    match message::parse_addresses(text.as_bytes(), "-f")?.as_slice() {
        // Only the spellings above are the null sender: `-f ';'` is a mistake.
        [] => Err(Error::data(format!(
            "-f: `{text}` holds no address (the null sender is `-f '<>'`); nothing was sent"
        ))),
        [one] if one.is_local() => Ok(Sender::Local),
        [one] => Ok(Sender::Address(one.address.clone())),
        _ => Err(Error::data(format!("-f takes one address, not `{text}`"))),
    }
}

/// `-a`; else the first account (file order) owning the envelope sender; else the one
/// owning the From address; else the default account.
fn choose_account(
    args: &SendArgs,
    config: &Config,
    sender: &Sender,
    header_from: Option<&Mailbox>,
) -> Result<String> {
    if let Some(name) = &args.account {
        config.account(name)?;
        return Ok(name.clone());
    }
    let from_header = header_from
        .filter(|m| !m.is_local())
        .map(|m| m.address.as_str());
    let sender = match sender {
        Sender::Address(a) => Some(a.as_str()),
        _ => None,
    };
    for address in [sender, from_header].into_iter().flatten() {
        if let Some((name, _)) = config.accounts.iter().find(|(_, a)| owns(a, address)) {
            return Ok(name.clone());
        }
    }
    config.default_account_name().map(str::to_owned)
}

/// The account's `email` or one of its `from` patterns matches the address, ignoring
/// case; `user+tag@x` counts as `user@x`.
fn owns(account: &Account, address: &str) -> bool {
    let untagged = without_tag(address);
    [address, untagged.as_str()].iter().any(|a| {
        a.eq_ignore_ascii_case(&account.email) || account.from.iter().any(|p| glob_match(p, a))
    })
}

/// `user+tag@x` → `user@x`; other addresses unchanged.
fn without_tag(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => match local.split_once('+') {
            Some((base, _)) if !base.is_empty() => format!("{base}@{domain}"),
            _ => address.to_owned(),
        },
        None => address.to_owned(),
    }
}

/// A shell-style pattern with `*` and `?`, case-insensitive (msmtp's is case-sensitive,
/// so `X@Fabrikam.Example` missed `*@fabrikam.example`).
fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and how much of the text it has swallowed so far.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            star = Some((sp, st + 1));
            pi = sp + 1;
            ti = st + 1;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Command-line recipients (lists and `Name <addr>` allowed), plus the message's with
/// `-t`; local names through `[aliases]`; each address once, first spelling kept.
fn recipients(args: &SendArgs, config: &Config, message: &Message) -> Result<Vec<String>> {
    let mut wanted = Vec::new();
    for arg in &args.recipients {
        if arg.contains(['\r', '\n']) {
            return Err(Error::data(
                "a recipient on the command line holds a line break",
            ));
        }
        wanted.extend(message::parse_addresses(
            arg.as_bytes(),
            "the command line",
        )?);
    }
    if args.read_recipients {
        wanted.extend(message.recipients()?);
    }
    let mut addresses = Vec::new();
    let mut expanded = std::collections::HashSet::new();
    for mailbox in wanted {
        expand(
            &mailbox.address,
            config,
            &mut Vec::new(),
            &mut expanded,
            &mut addresses,
        )?;
    }
    let mut seen = std::collections::HashSet::new();
    addresses.retain(|a| seen.insert(dedup_key(a)));
    if addresses.is_empty() {
        return Err(Error::data(
            "no recipients: give them on the command line, or use -t to read To, Cc and Bcc",
        ));
    }
    Ok(addresses)
}

/// Addresses compare with the domain in lower case; local parts may be case-sensitive.
fn dedup_key(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => format!("{local}@{}", domain.to_lowercase()),
        None => address.to_owned(),
    }
}

/// An address as is; a local name through `[aliases]` (`"*"` for any other name), whose
/// values may be lists and may name other local names. Each name is expanded once (`done`),
/// at most [`MAX_ALIAS_DEPTH`] deep, into at most [`MAX_RECIPIENTS`] addresses; `path` is
/// the chain of names being expanded (a name in it again is a loop).
fn expand(
    address: &str,
    config: &Config,
    path: &mut Vec<String>,
    done: &mut std::collections::HashSet<String>,
    out: &mut Vec<String>,
) -> Result<()> {
    if address.contains('@') {
        if out.len() >= MAX_RECIPIENTS {
            return Err(Error::data(format!(
                "more than {MAX_RECIPIENTS} recipients (after [aliases] in {}); nothing was sent",
                config.path.display()
            )));
        }
        out.push(address.to_owned());
        return Ok(());
    }
    let key = address.to_ascii_lowercase();
    if path.contains(&key) || path.len() >= MAX_ALIAS_DEPTH {
        return Err(Error::config(format!(
            "{}: [aliases]: `{address}` is part of a loop or nested more than {MAX_ALIAS_DEPTH} deep",
            config.path.display()
        )));
    }
    if !done.insert(key.clone()) {
        return Ok(());
    }
    let value = alias(config, address).ok_or_else(|| {
        Error::data(format!(
            "recipient `{address}` is a local name and [aliases] in {} has no entry for it; \
             add e.g. {address} = \"you@example.com\" (or \"*\" = \"you@example.com\")",
            config.path.display()
        ))
    })?;
    let what = format!("[aliases] {address}");
    let targets = message::parse_addresses(value.as_bytes(), &what)
        .map_err(|e| Error::config(format!("{}: {e}", config.path.display())))?;
    path.push(key);
    for target in targets {
        expand(&target.address, config, path, done, out)?;
    }
    path.pop();
    Ok(())
}

/// The addresses `[aliases]` gives a local name (nested names expanded), as Graph's copy
/// writes a bare name in the header; `None` when it has none (or it loops).
#[must_use]
pub fn alias_addresses(config: &Config, name: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    expand(
        name,
        config,
        &mut Vec::new(),
        &mut std::collections::HashSet::new(),
        &mut out,
    )
    .ok()?;
    (!out.is_empty()).then_some(out)
}

/// Every `[aliases]` entry expanded, keyed in lower case (`*` included): what the Graph
/// copy needs to write a bare local name of the header as addresses.
#[must_use]
pub fn expanded_aliases(config: &Config) -> BTreeMap<String, Vec<String>> {
    config
        .aliases
        .keys()
        .filter_map(|k| Some((k.to_ascii_lowercase(), alias_addresses(config, k)?)))
        .collect()
}

/// The alias for a local name: exact, then ignoring case, then `"*"`.
fn alias<'c>(config: &'c Config, name: &str) -> Option<&'c String> {
    config
        .aliases
        .get(name)
        .or_else(|| {
            config
                .aliases
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        })
        .or_else(|| config.aliases.get("*"))
}

/// `-N`, `-R`, `-V` checked and normalised (a bad value is a usage error, exit 64).
fn dsn(args: &SendArgs) -> Result<Dsn> {
    let notify = args.dsn_notify.as_deref().map(dsn_notify).transpose()?;
    let ret = match args
        .dsn_return
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None => None,
        Some("full") => Some("FULL".to_owned()),
        Some("hdrs") => Some("HDRS".to_owned()),
        Some(other) => return Err(Error::usage(format!("-R {other}: use full or hdrs"))),
    };
    let envid = args.dsn_envid.clone();
    if let Some(id) = &envid {
        // RFC 3461: at most 100 characters, printable ASCII (xtext-encoded on the wire).
        if id.is_empty() || id.len() > 100 || !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::usage(
                "-V: the envelope id must be 1 to 100 printable ASCII characters without spaces",
            ));
        }
    }
    Ok(Dsn { notify, ret, envid })
}

/// `never`, or a list of `success`, `failure`, `delay`: upper case, each once.
fn dsn_notify(text: &str) -> Result<String> {
    let bad = || {
        Error::usage(format!(
            "-N {text}: use never, or a list of success,failure,delay"
        ))
    };
    let mut words: Vec<String> = Vec::new();
    for word in text.split(',').map(|w| w.trim().to_ascii_uppercase()) {
        if !["NEVER", "SUCCESS", "FAILURE", "DELAY"].contains(&word.as_str()) {
            return Err(bad());
        }
        if !words.contains(&word) {
            words.push(word);
        }
    }
    if words.contains(&"NEVER".to_owned()) && words.len() > 1 {
        return Err(bad());
    }
    Ok(words.join(","))
}

/// Date and Message-ID when missing; From by `rewrite_from`. Returns the edits and
/// whether the From edit replaces an existing field.
fn header_edits(
    args: &SendArgs,
    account: &Account,
    message: &Message,
    old_from: Option<&Mailbox>,
    ctx: Context,
) -> (HeaderEdits, bool) {
    let mut edits = HeaderEdits::default();
    let has_from = message.has("From");
    if sets_from(account, has_from, old_from) {
        let name = args
            .full_name
            .as_deref()
            .or_else(|| old_from.and_then(|m| m.name.as_deref()));
        edits.from = Some(message::format_mailbox(name, &account.email));
    }
    if !message.has("Date") {
        edits.add.push(("Date".to_owned(), clock::rfc5322(ctx.now)));
    }
    if !message.has("Message-ID") {
        edits
            .add
            .push(("Message-ID".to_owned(), message_id(ctx, &account.email)));
    }
    let replaces = has_from && edits.from.is_some();
    (edits, replaces)
}

/// Whether From gets the account's address. A missing From is always added (a message
/// without one is refused by most servers), even with `never`, which only means that an
/// existing From is never touched.
fn sets_from(account: &Account, has_from: bool, old: Option<&Mailbox>) -> bool {
    // A From with an address that has a domain; `root (Cron Daemon)`, an empty or an
    // unreadable From have none.
    let usable = old.filter(|m| !m.is_local());
    match account.rewrite_from {
        _ if !has_from => true,
        RewriteFrom::Never => false,
        RewriteFrom::IfMissing => usable.is_none(),
        RewriteFrom::IfForeign => !usable.is_some_and(|m| owns(account, &m.address)),
        RewriteFrom::Always => true,
    }
}

/// `<time.random@domain-of-the-account>`: unique per (second, seed), and in a domain the
/// sender owns.
fn message_id(ctx: Context, email: &str) -> String {
    let domain = email.rsplit_once('@').map_or("localhost", |(_, d)| d);
    format!("<{}.{}@{domain}>", base36(ctx.now), base36(ctx.random))
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

impl fmt::Display for SendPlan {
    /// The dry-run report: envelope and header edits, one item per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env = &self.envelope;
        writeln!(f, "envelope-from: <{}>", env.from.as_deref().unwrap_or(""))?;
        let rcpts: Vec<String> = env.recipients.iter().map(|r| format!("<{r}>")).collect();
        writeln!(f, "recipients: {}", rcpts.join(", "))?;
        let dsn: Vec<String> = [
            ("notify", &env.dsn.notify),
            ("ret", &env.dsn.ret),
            ("envid", &env.dsn.envid),
        ]
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
        .collect();
        if !dsn.is_empty() {
            writeln!(f, "dsn: {}", dsn.join(" "))?;
        }
        if env.eight_bit {
            writeln!(f, "body: 8BITMIME")?;
        }
        if env.smtputf8 {
            writeln!(f, "smtputf8: required")?;
        }
        for name in &self.removed {
            writeln!(f, "remove header: {name}")?;
        }
        if let Some(from) = &self.edits.from {
            let verb = if self.replaces_from { "set" } else { "add" };
            writeln!(f, "{verb} header: From: {from}")?;
        }
        for (name, value) in &self.edits.add {
            writeln!(f, "add header: {name}: {value}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use clap::Parser;

    use super::*;

    const CONFIG: &str = r#"
default_account = "work"
[aliases]
root = "ops@contoso.com"
admins = "a1@contoso.com, root"
[accounts.work]
email = "alice@contoso.com"
from = ["*@contoso.com"]
[accounts.home]
provider = "gmail"
email = "alice@gmail.com"
from = ["alice.*@example.org"]
"#;

    const CTX: Context = Context {
        now: 1_795_384_776,
        random: 42,
    };

    fn config(text: &str) -> Config {
        crate::config::parse(text, Path::new("/c.toml")).unwrap()
    }

    fn args(a: &[&str]) -> SendArgs {
        SendArgs::try_parse_from(std::iter::once("oauth2-sendmail").chain(a.iter().copied()))
            .unwrap()
    }

    fn try_plan_with(cfg: &str, a: &[&str], msg: &str) -> Result<SendPlan> {
        let message = Message::from_bytes(msg.as_bytes().to_vec())?;
        resolve(&args(a), &config(cfg), &message, CTX)
    }

    fn try_plan(a: &[&str], msg: &str) -> Result<SendPlan> {
        try_plan_with(CONFIG, a, msg)
    }

    fn plan(a: &[&str], msg: &str) -> SendPlan {
        try_plan(a, msg).unwrap()
    }

    fn exit(a: &[&str], msg: &str) -> (u8, String) {
        let e = try_plan(a, msg).unwrap_err();
        (e.exit_code(), e.to_string())
    }

    const SIMPLE: &str = "From: Alice <alice@contoso.com>\nTo: bob@fabrikam.example\nDate: x\nMessage-ID: <m@x>\nSubject: s\n\nbody\n";

    #[test]
    fn mutt_recipients_after_double_dash() {
        let p = plan(
            &[
                "-oi",
                "--",
                "bob@fabrikam.example",
                "Carol <carol@fabrikam.example>",
            ],
            SIMPLE,
        );
        assert_eq!(p.account, "work");
        assert_eq!(p.envelope.from.as_deref(), Some("alice@contoso.com"));
        assert_eq!(
            p.envelope.recipients,
            ["bob@fabrikam.example", "carol@fabrikam.example"]
        );
        assert_eq!(p.edits, HeaderEdits::default());
    }

    #[test]
    fn mutt_envelope_from_picks_the_account() {
        let p = plan(
            &[
                "-oem",
                "-oi",
                "-f",
                "alice@gmail.com",
                "--",
                "bob@fabrikam.example",
            ],
            SIMPLE,
        );
        assert_eq!(p.account, "home");
        assert_eq!(p.envelope.from.as_deref(), Some("alice@gmail.com"));
    }

    #[test]
    fn emacs_t_reads_recipients_and_from_header_picks_the_account() {
        let msg = "From: Alice <Alice@GMail.com>\nTo: bob@fabrikam.example\nCc: carol@fabrikam.example\n\nbody\n";
        let p = plan(&["-oi", "-t"], msg);
        assert_eq!(p.account, "home");
        assert_eq!(p.envelope.from.as_deref(), Some("alice@gmail.com"));
        assert_eq!(
            p.envelope.recipients,
            ["bob@fabrikam.example", "carol@fabrikam.example"]
        );
    }

    #[test]
    fn emacs_read_envelope_from() {
        let msg = "From: Alice <alice.lists@example.org>\nTo: bob@fabrikam.example\n\nbody\n";
        let p = plan(&["-oi", "--read-envelope-from", "-t"], msg);
        assert_eq!(p.account, "home");
        assert_eq!(p.envelope.from.as_deref(), Some("alice.lists@example.org"));
    }

    #[test]
    fn f_wins_over_read_envelope_from() {
        let msg = "From: alice@gmail.com\nTo: bob@fabrikam.example\n\nbody\n";
        let p = plan(
            &["-oi", "-f", "ops@contoso.com", "--read-envelope-from", "-t"],
            msg,
        );
        assert_eq!(
            (p.account.as_str(), p.envelope.from.as_deref()),
            ("work", Some("ops@contoso.com"))
        );
    }

    #[test]
    fn read_envelope_from_without_from_is_65() {
        assert_eq!(
            exit(&["--read-envelope-from", "-t"], "To: b@x.example\n\n").0,
            65
        );
    }

    #[test]
    fn git_send_email_recipients() {
        let p = plan(&["-i", "a@x.example", "b@x.example"], SIMPLE);
        assert_eq!(p.envelope.recipients, ["a@x.example", "b@x.example"]);
    }

    #[test]
    fn debian_cron_root_through_aliases_and_from_rewritten() {
        let msg = "From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@host> job\n\noutput\n";
        let p = plan(&["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"], msg);
        assert_eq!(p.account, "work");
        assert_eq!(p.envelope.from.as_deref(), Some("alice@contoso.com"));
        assert_eq!(p.envelope.recipients, ["ops@contoso.com"]);
        assert_eq!(
            p.edits.from.as_deref(),
            Some("CronDaemon <alice@contoso.com>")
        );
        assert!(p.replaces_from);
    }

    #[test]
    fn cronie_f_root_selects_nothing_and_t_reads_root() {
        let msg = "From: root (Cron Daemon)\nTo: root\nSubject: s\nAuto-Submitted: auto-generated\n\noutput\n";
        let p = plan(
            &[
                "-FCronDaemon",
                "-i",
                "-odi",
                "-oem",
                "-oi",
                "-t",
                "-f",
                "root",
            ],
            msg,
        );
        assert_eq!(p.account, "work");
        assert_eq!(p.envelope.from.as_deref(), Some("alice@contoso.com"));
        assert_eq!(p.envelope.recipients, ["ops@contoso.com"]);
        assert_eq!(
            p.edits.from.as_deref(),
            Some("CronDaemon <alice@contoso.com>")
        );
    }

    #[test]
    fn busybox_ti_and_systemd_cron() {
        let p = plan(&["-ti"], "To: root\n\nout\n");
        assert_eq!(p.envelope.recipients, ["ops@contoso.com"]);
        let p = plan(&["-i", "-B", "8BITMIME", "root"], "Subject: s\n\nout\n");
        assert_eq!(p.envelope.recipients, ["ops@contoso.com"]);
    }

    #[test]
    fn mailx_and_echo_body_without_headers() {
        let p = plan(&["-i", "user@x.example"], "just a body\n");
        assert_eq!(p.envelope.recipients, ["user@x.example"]);
        assert_eq!(p.edits.from.as_deref(), Some("alice@contoso.com"));
        assert!(!p.replaces_from);
        let names: Vec<&str> = p.edits.add.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["Date", "Message-ID"]);
    }

    #[test]
    fn t_adds_to_command_line_recipients_and_dedups() {
        let msg = "To: b@x.example, B@X.EXAMPLE\nCc: c@x.example\nBcc: hidden@x.example\n\nbody\n";
        let p = plan(&["-t", "c@X.example", "a@x.example"], msg);
        // c@x.example is c@X.example again; B@X.EXAMPLE differs in its local part, so it stays.
        assert_eq!(
            p.envelope.recipients,
            [
                "c@X.example",
                "a@x.example",
                "b@x.example",
                "B@X.EXAMPLE",
                "hidden@x.example"
            ]
        );
        assert_eq!(p.removed, ["Bcc"]);
    }

    #[test]
    fn dedup_compares_domains_without_case_keeps_first_spelling() {
        let p = plan(&["b@X.Example", "b@x.example", "B@x.example"], SIMPLE);
        assert_eq!(p.envelope.recipients, ["b@X.Example", "B@x.example"]);
    }

    #[test]
    fn command_line_lists_with_commas_and_names() {
        let p = plan(
            &["a@x.example, \"Smith, Bob\" <b@x.example>", "admins"],
            SIMPLE,
        );
        assert_eq!(
            p.envelope.recipients,
            [
                "a@x.example",
                "b@x.example",
                "a1@contoso.com",
                "ops@contoso.com"
            ]
        );
    }

    #[test]
    fn t_with_resent_uses_first_block_only() {
        let msg = "Resent-From: alice@contoso.com\nResent-To: new@x.example\nResent-Bcc: secret@x.example\n\
                   Resent-From: x@y.example\nResent-To: older@x.example\nTo: orig@x.example\n\nbody\n";
        let p = plan(&["-t"], msg);
        assert_eq!(p.envelope.recipients, ["new@x.example", "secret@x.example"]);
        assert_eq!(p.removed, ["Resent-Bcc"]);
    }

    #[test]
    fn null_sender_spellings() {
        for f in ["<>", "", " <> ", "MAILER-DAEMON"] {
            let p = plan(&["-f", f, "b@x.example"], SIMPLE);
            assert_eq!(p.envelope.from, None, "-f {f:?}");
            assert_eq!(p.account, "work", "the From header still picks the account");
        }
    }

    #[test]
    fn f_with_name_and_brackets_is_parsed() {
        for f in [
            "Alice <alice@gmail.com>",
            "<alice@gmail.com>",
            "alice@gmail.com",
            "-falice@gmail.com",
        ] {
            let argv = if f.starts_with('-') {
                vec![f, "b@x.example"]
            } else {
                vec!["-f", f, "b@x.example"]
            };
            let p = plan(&argv, SIMPLE);
            assert_eq!(
                (p.account.as_str(), p.envelope.from.as_deref()),
                ("home", Some("alice@gmail.com")),
                "{f}"
            );
        }
    }

    #[test]
    fn refusals_with_65() {
        let cases: &[(&[&str], &str, &str)] = &[
            (
                &["-f", "a@x.example\r\nRCPT TO:<e@x>", "b@x.example"],
                SIMPLE,
                "line break",
            ),
            (
                &["-f", "a@x.example\n", "b@x.example"],
                SIMPLE,
                "line break",
            ),
            (
                &["-f", "not an address", "b@x.example"],
                SIMPLE,
                "not an address",
            ),
            (
                &["-f", "a@x.example, b@x.example", "b@x.example"],
                SIMPLE,
                "one address",
            ),
            (&[], SIMPLE, "no recipients"),
            (&["-t"], "Subject: s\n\nbody\n", "no recipients"),
            (
                &["-t"],
                "To: undisclosed-recipients:;\n\nbody\n",
                "no recipients",
            ),
            (&["bad@address."], SIMPLE, "bad@address."),
            (
                &["-t"],
                "To: \"quoted local\"@example.com\n\nbody\n",
                "@example.com",
            ),
            (&["b@x.example\nX: y"], SIMPLE, "line break"),
        ];
        for (a, msg, says) in cases {
            let (code, text) = exit(a, msg);
            assert_eq!(code, 65, "{a:?}: {text}");
            assert!(text.contains(says), "{a:?}: {text}");
        }
    }

    #[test]
    fn unresolvable_local_name_is_65_with_a_hint() {
        let cfg = "[accounts.w]\nemail = \"a@x.example\"\n";
        let e = try_plan_with(cfg, &["root"], SIMPLE).unwrap_err();
        assert_eq!(e.exit_code(), 65);
        assert!(e.to_string().contains("[aliases]"), "{e}");
    }

    #[test]
    fn star_alias_catches_other_names_and_loops_are_config_errors() {
        let cfg = "[aliases]\n\"*\" = \"catch@x.example\"\n[accounts.w]\nemail = \"a@x.example\"\n";
        let p = try_plan_with(cfg, &["www-data", "root"], SIMPLE).unwrap();
        assert_eq!(p.envelope.recipients, ["catch@x.example"]);
        let cfg = "[aliases]\na = \"b\"\nb = \"a\"\n[accounts.w]\nemail = \"a@x.example\"\n";
        assert_eq!(
            try_plan_with(cfg, &["a"], SIMPLE).unwrap_err().exit_code(),
            78
        );
        let cfg = "[aliases]\nroot = \"not valid@\"\n[accounts.w]\nemail = \"a@x.example\"\n";
        assert_eq!(
            try_plan_with(cfg, &["root"], SIMPLE)
                .unwrap_err()
                .exit_code(),
            78
        );
    }

    #[test]
    fn account_email_must_be_an_address() {
        // `alice` and `alice@` are refused when the config is read (with the line); what
        // only the address parser catches is refused here.
        for email in ["alice", "alice@", "a@b@", "a@x.example\\r\\nBcc: e@x"] {
            let cfg = format!("[accounts.w]\nemail = \"{email}\"\n");
            let e = crate::config::parse(&cfg, Path::new("/c.toml")).unwrap_err();
            assert_eq!(e.exit_code(), 78, "{email}");
            assert!(
                e.to_string().contains("/c.toml:2: key `accounts.w.email`"),
                "{e}"
            );
        }
        for email in ["<a@x.example>", "a,b@x.example"] {
            let cfg = format!("[accounts.w]\nemail = \"{email}\"\n");
            let e = try_plan_with(&cfg, &["b@x.example"], SIMPLE).unwrap_err();
            assert_eq!(e.exit_code(), 78, "{email}");
            assert!(e.to_string().contains("accounts.w.email"), "{e}");
        }
    }

    #[test]
    fn unknown_account_is_78() {
        assert_eq!(exit(&["-a", "nope", "b@x.example"], SIMPLE).0, 78);
        let p = plan(
            &["-a", "home", "-f", "ops@contoso.com", "b@x.example"],
            SIMPLE,
        );
        assert_eq!(p.account, "home");
    }

    #[test]
    fn account_choice_by_sender_then_from_header_then_default() {
        let cases: &[(&[&str], &str, &str)] = &[
            (
                &["-f", "alice+lists@gmail.com"],
                "home",
                "+tag matches the email",
            ),
            (&["-f", "ALICE@GMAIL.COM"], "home", "case-insensitive email"),
            (
                &["-f", "Alice.Work@Example.ORG"],
                "home",
                "case-insensitive glob",
            ),
            (&["-f", "anyone@CONTOSO.com"], "work", "glob *@contoso.com"),
            (
                &["-f", "stranger@elsewhere.example"],
                "home",
                "no match: From header (alice@gmail.com)",
            ),
            (
                &["-f", "root"],
                "home",
                "bare local sender selects nothing: From header",
            ),
            (&[], "home", "no -f: From header"),
        ];
        let msg = "From: alice@gmail.com\nTo: b@x.example\n\nbody\n";
        for (a, account, why) in cases {
            let mut argv = a.to_vec();
            argv.push("b@x.example");
            assert_eq!(plan(&argv, msg).account, *account, "{why}");
        }
        let p = plan(
            &["-f", "stranger@elsewhere.example", "b@x.example"],
            "Subject: s\n\nbody\n",
        );
        assert_eq!(p.account, "work", "default_account");
        assert_eq!(
            p.envelope.from.as_deref(),
            Some("stranger@elsewhere.example")
        );
    }

    #[test]
    fn first_account_in_file_order_wins() {
        let cfg = "[accounts.b]\nemail = \"x@b.example\"\nfrom = [\"*\"]\n[accounts.a]\nemail = \"y@a.example\"\n";
        let p = try_plan_with(
            cfg,
            &["-f", "y@a.example", "t@x.example"],
            "Subject: s\n\nbody\n",
        )
        .unwrap();
        assert_eq!(p.account, "b");
    }

    #[test]
    fn several_accounts_without_default_need_a_match() {
        let cfg = "[accounts.a]\nemail = \"x@a.example\"\n[accounts.b]\nemail = \"y@b.example\"\n";
        let e = try_plan_with(cfg, &["t@x.example"], "Subject: s\n\nbody\n").unwrap_err();
        assert_eq!(e.exit_code(), 78);
        let p = try_plan_with(cfg, &["t@x.example"], "From: y@b.example\n\nbody\n").unwrap();
        assert_eq!(p.account, "b");
    }

    /// The From edit and whether it replaces an existing field.
    type FromEdit = (Option<String>, bool);

    fn rewrite(mode: &str, from: &str, extra: &[&str]) -> FromEdit {
        let cfg = format!(
            "[accounts.w]\nemail = \"alice@contoso.com\"\nfrom = [\"*@contoso.com\"]\nrewrite_from = \"{mode}\"\n"
        );
        let msg = format!("{from}To: b@x.example\n\nbody\n");
        let mut argv = extra.to_vec();
        argv.push("b@x.example");
        let p = try_plan_with(&cfg, &argv, &msg).unwrap();
        (p.edits.from, p.replaces_from)
    }

    #[test]
    fn rewrite_from_modes() {
        let a = "alice@contoso.com";
        let set = |v: &str| (Some(v.to_owned()), true);
        let add = |v: &str| (Some(v.to_owned()), false);
        let keep = (None, false);
        let cases: Vec<(&str, &str, FromEdit)> = vec![
            ("never", "", add(a)),
            ("never", "From: root (Cron Daemon)\n", keep.clone()),
            ("never", "From: Eve <eve@elsewhere.example>\n", keep.clone()),
            ("if-missing", "", add(a)),
            (
                "if-missing",
                "From: root (Cron Daemon)\n",
                set("Cron Daemon <alice@contoso.com>"),
            ),
            ("if-missing", "From:\n", set(a)),
            (
                "if-missing",
                "From: Eve <eve@elsewhere.example>\n",
                keep.clone(),
            ),
            (
                "if-foreign",
                "From: Eve <eve@elsewhere.example>\n",
                set("Eve <alice@contoso.com>"),
            ),
            ("if-foreign", "From: Bob <bob@contoso.com>\n", keep.clone()),
            (
                "if-foreign",
                "From: Al <alice+x@contoso.com>\n",
                keep.clone(),
            ),
            (
                "always",
                "From: Bob <bob@contoso.com>\n",
                set("Bob <alice@contoso.com>"),
            ),
            ("always", "", add(a)),
        ];
        for (mode, from, want) in cases {
            assert_eq!(rewrite(mode, from, &[]), want, "{mode} {from:?}");
        }
    }

    #[test]
    fn f_name_wins_for_added_or_rewritten_from() {
        assert_eq!(
            rewrite("always", "From: Bob <bob@contoso.com>\n", &["-F", "Robert"])
                .0
                .unwrap(),
            "Robert <alice@contoso.com>"
        );
        assert_eq!(
            rewrite("if-missing", "", &["-F", "J\u{fc}rgen"]).0.unwrap(),
            "=?UTF-8?B?SsO8cmdlbg==?= <alice@contoso.com>"
        );
        assert_eq!(
            rewrite("if-missing", "", &["-F", "Smith, J."]).0.unwrap(),
            "\"Smith, J.\" <alice@contoso.com>"
        );
        assert_eq!(
            rewrite("if-missing", "From: Eve <eve@x.example>\n", &["-F", "X"]).0,
            None
        );
    }

    #[test]
    fn date_and_message_id_added_only_when_missing() {
        let p = plan(&["b@x.example"], SIMPLE);
        assert!(p.edits.add.is_empty());
        let p = plan(&["b@x.example"], "From: alice@contoso.com\n\nbody\n");
        assert_eq!(
            p.edits.add,
            [
                (
                    "Date".to_owned(),
                    "Sun, 22 Nov 2026 21:59:36 +0000".to_owned()
                ),
                (
                    "Message-ID".to_owned(),
                    "<toxbrc.16@contoso.com>".to_owned()
                )
            ]
        );
        let other = resolve(
            &args(&["b@x.example"]),
            &config(CONFIG),
            &Message::from_bytes(b"Subject: s\n\nbody\n".to_vec()).unwrap(),
            Context { random: 43, ..CTX },
        )
        .unwrap();
        assert_ne!(other.edits.add[1], p.edits.add[1]);
    }

    #[test]
    fn dsn_flags() {
        let p = plan(
            &[
                "-N",
                "success,failure,Delay",
                "-R",
                "hdrs",
                "-V",
                "id-1",
                "b@x.example",
            ],
            SIMPLE,
        );
        assert_eq!(
            p.envelope.dsn.notify.as_deref(),
            Some("SUCCESS,FAILURE,DELAY")
        );
        assert_eq!(p.envelope.dsn.ret.as_deref(), Some("HDRS"));
        assert_eq!(p.envelope.dsn.envid.as_deref(), Some("id-1"));
        assert_eq!(
            plan(&["-N", "never", "-R", "FULL", "b@x.example"], SIMPLE)
                .envelope
                .dsn
                .ret
                .as_deref(),
            Some("FULL")
        );
        for bad in [
            &["-N", "never,success"][..],
            &["-N", "sometimes"],
            &["-N", ""],
            &["-R", "body"],
            &["-V", "has space"],
        ] {
            let mut argv = bad.to_vec();
            argv.push("b@x.example");
            assert_eq!(exit(&argv, SIMPLE).0, 64, "{bad:?}");
        }
    }

    #[test]
    fn eight_bit_and_smtputf8() {
        let p = plan(&["b@x.example"], "Subject: s\n\nGr\u{fc}\u{df}e\n");
        assert!(p.envelope.eight_bit && !p.envelope.smtputf8);
        let p = plan(&["j\u{fc}rgen@b\u{fc}cher.example"], SIMPLE);
        assert!(p.envelope.smtputf8 && !p.envelope.eight_bit);
    }

    #[test]
    fn dry_run_report_format() {
        let msg = "From: root (Cron Daemon)\nTo: root\nBcc: x@y.example\n\nout\n";
        let p = plan(&["-FCronDaemon", "-N", "failure", "-t", "a@x.example"], msg);
        assert_eq!(
            p.to_string(),
            "envelope-from: <alice@contoso.com>\n\
             recipients: <a@x.example>, <ops@contoso.com>, <x@y.example>\n\
             dsn: notify=FAILURE\n\
             remove header: Bcc\n\
             set header: From: CronDaemon <alice@contoso.com>\n\
             add header: Date: Sun, 22 Nov 2026 21:59:36 +0000\n\
             add header: Message-ID: <toxbrc.16@contoso.com>\n"
        );
        let p = plan(&["-f", "<>", "b@x.example"], SIMPLE);
        assert_eq!(
            p.to_string(),
            "envelope-from: <>\nrecipients: <b@x.example>\n"
        );
    }

    #[test]
    fn glob_patterns() {
        for (p, t, m) in [
            ("*@contoso.com", "a@contoso.com", true),
            ("*@contoso.com", "a@contoso.com.evil", false),
            ("a?c@x", "abc@x", true),
            ("a?c@x", "ac@x", false),
            ("*", "", true),
            ("a*b*c", "aXbYbZc", true),
            ("exact@x", "EXACT@X", true),
        ] {
            assert_eq!(glob_match(p, t), m, "{p} {t}");
        }
    }
}
