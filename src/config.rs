//! The TOML config: its model, where it is found, and errors that name the file, the line
//! and the key. Secrets may come from commands (`*_cmd`), run without a shell.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Deserialize;

use crate::error::{Error, Result};

/// Environment variable naming the config file when `-C` is not given.
pub const CONFIG_ENV: &str = "OAUTH2_SENDMAIL_CONFIG";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub default_account: Option<String>,
    /// Seconds any `*_cmd` may run (default 60).
    pub command_timeout: Option<u64>,
    pub logfile: Option<PathBuf>,
    /// Bare local names (cron's `root`) to addresses; `"*"` catches any other name.
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    /// In file order: the first account whose addresses match the sender wins.
    #[serde(default)]
    pub accounts: IndexMap<String, Account>,
    /// Where the config was read from (not a TOML key).
    #[serde(skip)]
    pub path: PathBuf,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// `provider` as written; `None` when the key is absent (`provider::kind_of` then
    /// guesses it from the address).
    #[serde(default)]
    pub provider: Option<ProviderKind>,
    pub email: String,
    /// The identity that signs in and the XOAUTH2 user, when it is not `email` (shared
    /// mailboxes, Send As, a Microsoft login that differs from the address).
    pub user: Option<String>,
    #[serde(default)]
    pub from: Vec<String>,
    pub tenant: Option<String>,
    pub flow: Option<Flow>,
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    pub client_secret_cmd: Option<CommandSpec>,
    pub password_cmd: Option<CommandSpec>,
    #[serde(default)]
    pub rewrite_from: RewriteFrom,
    #[serde(default)]
    pub queue: QueuePolicy,
    /// After a direct send, send this account's due queue over the same connection.
    #[serde(default = "default_flush_on_send")]
    pub flush_on_send: bool,
    pub redirect_uri: Option<String>,
    pub token_encrypt_cmd: Option<CommandSpec>,
    pub token_decrypt_cmd: Option<CommandSpec>,
    pub notify_cmd: Option<CommandSpec>,
    pub smtp_host: Option<String>,
    pub smtp_port: Option<u16>,
    pub tls: Option<TlsMode>,
    pub tls_ca_file: Option<PathBuf>,
    pub authorize_url: Option<String>,
    pub token_url: Option<String>,
    pub device_code_url: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub resource: Option<String>,
    /// How mail leaves: SMTP, Microsoft Graph `sendMail`, or SMTP until a 5.7.139.
    #[serde(default)]
    pub transport: TransportKind,
    /// Microsoft Graph's base URL (default per provider).
    pub graph_url: Option<String>,
    /// Scopes of the Graph token (delegated; app-only uses `{graph_url}/.default`).
    pub graph_scopes: Option<Vec<String>>,
    /// The SASL mechanism that carries the token.
    #[serde(default)]
    pub sasl: SaslChoice,
    /// `socks5://`, `socks5h://` or `http://` (CONNECT) proxy for SMTP and HTTPS.
    pub proxy: Option<String>,
    /// Where the tokens are protected: a plain `0600` file, or sealed with a key in the keyring.
    #[serde(default)]
    pub token_store: TokenStoreKind,
}

/// `token_store`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenStoreKind {
    /// The token file as it is (or `token_encrypt_cmd`'s output).
    #[default]
    File,
    /// The token file sealed with a data key kept in the Secret Service.
    Keyring,
}

/// `sasl`: which SASL mechanism carries the token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SaslChoice {
    /// XOAUTH2 for Microsoft (it offers nothing else); OAUTHBEARER where a gmail or custom
    /// server offers it, else XOAUTH2.
    #[default]
    Auto,
    Xoauth2,
    /// RFC 7628.
    Oauthbearer,
}

/// `transport`: which way an account's mail leaves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TransportKind {
    #[default]
    Smtp,
    /// Microsoft Graph `sendMail` (tenants that disable SMTP AUTH).
    Graph,
    /// SMTP, and Graph from the first `5.7.139` on (remembered in the state folder).
    Auto,
}

fn default_flush_on_send() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderKind {
    #[default]
    Microsoft,
    MicrosoftChina,
    Gmail,
    Custom,
}

impl ProviderKind {
    /// The provider as the config spells it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::Microsoft => "microsoft",
            ProviderKind::MicrosoftChina => "microsoft-china",
            ProviderKind::Gmail => "gmail",
            ProviderKind::Custom => "custom",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flow {
    Authcode,
    Devicecode,
    Password,
    ClientCredentials,
}

impl Flow {
    /// The flow as the config spells it.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Flow::Authcode => "authcode",
            Flow::Devicecode => "devicecode",
            Flow::Password => "password",
            Flow::ClientCredentials => "client-credentials",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RewriteFrom {
    Never,
    /// Add a From when there is none, or replace one without a domain (cron's `root`).
    #[default]
    IfMissing,
    /// Also replace a From that is not one of the account's addresses.
    IfForeign,
    Always,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueuePolicy {
    Never,
    #[default]
    OnFailure,
    Always,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    Starttls,
    Implicit,
}

/// A secret written in the config file: its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the one place that sends it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A command from the config: an argument list, or a string split into words the way a
/// shell would split it (but never run by a shell).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum CommandSpec {
    Args(Vec<String>),
    Line(String),
}

impl CommandSpec {
    /// The program and its arguments.
    pub fn argv(&self) -> Result<Vec<String>> {
        let argv = match self {
            CommandSpec::Args(v) => v.clone(),
            CommandSpec::Line(s) => shell_words::split(s).map_err(|e| {
                Error::config(format!("command `{s}` cannot be split into words: {e}"))
            })?,
        };
        if argv.is_empty() || argv[0].is_empty() {
            return Err(Error::config("a *_cmd value is empty"));
        }
        Ok(argv)
    }

    /// Runs the command with `input` on stdin and returns its stdout; a non-zero exit, a
    /// hang past `command_timeout` or an output past `max_output` bytes is an error that
    /// names the command (`what` says which setting it is). See [`crate::command`].
    pub fn run(
        &self,
        what: &str,
        input: Option<&[u8]>,
        env: &[(&str, &str)],
        max_output: usize,
    ) -> Result<Vec<u8>> {
        crate::command::run(what, &self.argv()?, input, env, max_output)
    }

    /// Runs the command and takes the first line of its output as a secret (remembered by
    /// [`crate::scrub`], so that no output ever shows it).
    pub fn secret(&self, what: &str) -> Result<String> {
        let secret = crate::command::secret(what, &self.argv()?)?;
        crate::scrub::register(&secret);
        Ok(secret)
    }
}

/// The config file to read: `-C`, then `$OAUTH2_SENDMAIL_CONFIG`, then the XDG location.
#[must_use]
pub fn locate(cli: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = cli {
        return Some(p.to_owned());
    }
    if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    crate::paths::config_file()
}

/// Reads and checks the config.
pub fn load(cli: Option<&Path>) -> Result<Config> {
    let path =
        locate(cli).ok_or_else(|| Error::config("cannot find a home directory for the config"))?;
    let text = std::fs::read_to_string(&path).map_err(|e| {
        Error::config(format!(
            "cannot read config {}: {e}{}",
            path.display(),
            if e.kind() == std::io::ErrorKind::NotFound {
                " (create it; see `man oauth2-sendmail`)"
            } else {
                ""
            }
        ))
    })?;
    parse(&text, &path)
}

/// Parses config text; `path` is used in error messages.
pub fn parse(text: &str, path: &Path) -> Result<Config> {
    let de = toml::Deserializer::parse(text).map_err(|e| located(path, text, None, &e))?;
    let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let error = located(path, text, Some(&key), e.inner());
        match misplaced_top_level_key(&key) {
            Some(top) => Error::config(format!(
                "{error} (`{top}` belongs at the top of the file, before the first [table])"
            )),
            None => error,
        }
    })?;
    config.path = path.to_path_buf();
    if config.command_timeout == Some(0) {
        return Err(Error::config(format!(
            "{}: key `command_timeout`: must be at least 1 (seconds)",
            path.display()
        )));
    }
    crate::command::set_timeout(
        config
            .command_timeout
            .unwrap_or(crate::command::DEFAULT_TIMEOUT_SECS),
    );
    config.logfile = config.logfile.map(|p| expand_tilde(&p));
    for (name, account) in &mut config.accounts {
        if account.email.trim().is_empty() {
            return Err(Error::config(format!(
                "{}: key `accounts.{name}.email`: must not be empty",
                path.display()
            )));
        }
        if !is_whole_address(&account.email) {
            return Err(Error::config(format!(
                "{}{}: key `accounts.{name}.email`: `{}` is not an address (write it as \
                 name@domain)",
                path.display(),
                line_of(text, &["accounts", name, "email"])
                    .map(|l| format!(":{l}"))
                    .unwrap_or_default(),
                account.email.escape_debug()
            )));
        }
        if account.user.as_deref().is_some_and(|u| u.trim().is_empty()) {
            return Err(Error::config(format!(
                "{}: key `accounts.{name}.user`: must not be empty",
                path.display()
            )));
        }
        account.tls_ca_file = account.tls_ca_file.as_deref().map(expand_tilde);
    }
    if let Some(default) = &config.default_account
        && !config.accounts.contains_key(default)
    {
        return Err(Error::config(format!(
            "{}: key `default_account`: no account named `{default}`",
            path.display()
        )));
    }
    Ok(config)
}

/// The top-level keys: written under an `[accounts.NAME]` table they are read as the
/// account's (TOML puts every key after a table header into that table).
const TOP_LEVEL_KEYS: [&str; 4] = ["default_account", "command_timeout", "logfile", "aliases"];

/// `accounts.work.default_account` → `default_account`: a top-level key under a table.
fn misplaced_top_level_key(key: &str) -> Option<&'static str> {
    let (table, last) = key.rsplit_once('.')?;
    (table.starts_with("accounts.") && !table[9..].contains('.'))
        .then(|| TOP_LEVEL_KEYS.into_iter().find(|k| *k == last))
        .flatten()
}

/// `local@domain`: something before and after the one `@`, no space. The full syntax is
/// checked where the address is used (the envelope); this catches `email = "japinli"` at once,
/// for every command.
fn is_whole_address(email: &str) -> bool {
    email.rsplit_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && !domain.is_empty() && !domain.contains('@')
    }) && !email.chars().any(char::is_whitespace)
}

/// The line (from 1) where the value at `keys` starts in `text`, when it can be found.
fn line_of(text: &str, keys: &[&str]) -> Option<usize> {
    let doc = toml_edit::Document::parse(text).ok()?;
    let mut item = doc.as_item();
    for key in keys {
        item = item.get(key)?;
    }
    let start = item.span()?.start;
    Some(text[..start.min(text.len())].matches('\n').count() + 1)
}

fn located(path: &Path, text: &str, key: Option<&str>, e: &toml::de::Error) -> Error {
    let line = e
        .span()
        .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
    let line = line.map(|l| format!(":{l}")).unwrap_or_default();
    let key = key
        .filter(|k| !k.is_empty() && *k != ".")
        .map(|k| format!(": key `{k}`"))
        .unwrap_or_default();
    let detail = e.message().trim().replace('\n', " ");
    Error::config(format!("{}{line}{key}: {detail}", path.display()))
}

/// `~/x` → `$HOME/x`, as users write paths in config files.
#[must_use]
pub fn expand_tilde(p: &Path) -> PathBuf {
    match (p.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => p.to_owned(),
    }
}

impl Config {
    /// The account to use when nothing else picks one.
    pub fn default_account_name(&self) -> Result<&str> {
        if let Some(name) = &self.default_account {
            return Ok(name);
        }
        match self.accounts.len() {
            1 => Ok(self
                .accounts
                .keys()
                .next()
                .map(String::as_str)
                .unwrap_or_default()),
            0 => Err(Error::config(format!(
                "{}: no [accounts.NAME] defined",
                self.path.display()
            ))),
            _ => Err(Error::config(format!(
                "{}: several accounts and no default_account; set default_account or use -a NAME",
                self.path.display()
            ))),
        }
    }

    /// The named account, or a config error that lists the known ones.
    pub fn account(&self, name: &str) -> Result<&Account> {
        self.accounts.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.accounts.keys().map(String::as_str).collect();
            Error::config(format!(
                "{}: no account named `{name}` (known: {})",
                self.path.display(),
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Config> {
        parse(text, Path::new("/c.toml"))
    }

    #[test]
    fn full_example_parses() {
        let c = p(r#"
default_account = "work"
logfile = "/tmp/log"
[aliases]
root = "ops@contoso.com"
"*" = "alice@contoso.com"
[accounts.work]
provider = "microsoft"
email = "alice@contoso.com"
from = ["alice@contoso.com", "*@contoso.com"]
tenant = "common"
flow = "authcode"
client_secret_cmd = "pass show contoso/app"
rewrite_from = "if-foreign"
queue = "on-failure"
token_encrypt_cmd = ["gpg", "--encrypt", "-r", "me"]
smtp_port = 587
tls = "starttls"
[accounts.cn]
provider = "microsoft-china"
email = "bob@contoso.cn"
resource = "https://partner.outlook.cn"
"#)
        .unwrap();
        assert_eq!(c.accounts.keys().collect::<Vec<_>>(), ["work", "cn"]);
        let w = &c.accounts["work"];
        assert_eq!(w.rewrite_from, RewriteFrom::IfForeign);
        assert_eq!(
            w.client_secret_cmd.as_ref().unwrap().argv().unwrap(),
            ["pass", "show", "contoso/app"]
        );
        assert_eq!(
            c.accounts["cn"].provider,
            Some(ProviderKind::MicrosoftChina)
        );
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = p("[accounts.work]\nemail = \"a@b.c\"\nsmtp_hots = \"x\"\n").unwrap_err();
        assert_eq!(e.exit_code(), 78);
        let s = e.to_string();
        assert!(s.starts_with("/c.toml:3: key `accounts.work"), "{s}");
        assert!(s.contains("smtp_hots"), "{s}");
    }

    #[test]
    fn wrong_type_and_missing_value() {
        let s = p("[accounts.w]\nemail = \"a@b.c\"\nsmtp_port = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(s.contains(":3: key `accounts.w.smtp_port`"), "{s}");
        let s = p("[accounts.w]\nprovider = \"gmail\"\n")
            .unwrap_err()
            .to_string();
        assert!(s.contains("email"), "{s}");
        let s = p("default_account = \"x\"\n[accounts.w]\nemail = \"a@b.c\"\n")
            .unwrap_err()
            .to_string();
        assert!(s.contains("default_account"), "{s}");
        let s = p("[accounts.w]\nemail = \"a@b.c\"\nflow = \"magic\"\n")
            .unwrap_err()
            .to_string();
        assert!(s.contains(":3: key `accounts.w.flow`"), "{s}");
    }

    #[test]
    fn a_secret_in_the_file_never_shows_in_debug() {
        let c = p("[accounts.w]\nemail = \"a@b.c\"\nclient_secret = \"hunter2\"\n").unwrap();
        assert_eq!(
            c.accounts["w"].client_secret.as_ref().unwrap().expose(),
            "hunter2"
        );
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn secret_command_checks_exit_status() {
        let ok = CommandSpec::Args(vec!["printf".into(), "s3cret\\nsecond\\n".into()]);
        assert_eq!(ok.secret("client_secret_cmd").unwrap(), "s3cret");
        let bad = CommandSpec::Line("sh -c 'echo garbage; exit 3'".into());
        let e = bad.secret("client_secret_cmd").unwrap_err();
        assert_eq!(e.exit_code(), 78);
        assert!(!e.to_string().contains("garbage"));
    }
}
