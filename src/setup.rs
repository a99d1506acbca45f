//! `oauth2-sendmail login EMAIL`, the first run: when no account has that address, infer
//! its provider and add the account to the config file; `manage` then logs it in and
//! prints what to paste into mutt, Emacs and mbsync (`paste_lines`).
//!
//! ```text
//! EMAIL ─► an account with that email? ──yes──► login it
//!            │ no
//!            ▼
//!          --provider, else a well-known domain (provider::for_email), else the MX records
//!            ─► [accounts.LOCALPART] appended to the config (created 0600; old bytes kept)
//!            ─► login it ─► the lines for mutt, Emacs and mbsync
//! ```
//!
//! The config is only ever read through `config`; this module edits its text (with
//! `toml_edit`) and checks every edit by parsing the result with `config::parse`.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hickory_resolver::Resolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;

use crate::cli::{LoginArgs, ProviderArg};
use crate::config::{self, ProviderKind};
use crate::error::{Error, Result};
use crate::provider;

/// `IP:PORT` of the one DNS server to ask instead of the system's (tests, split DNS).
pub const NAMESERVER_ENV: &str = "OAUTH2_SENDMAIL_NAMESERVER";

/// How long one DNS query may take before it is asked again (twice at most).
const DNS_TIMEOUT: Duration = Duration::from_secs(5);

/// True when `login`'s argument is an address rather than an account name.
#[must_use]
pub fn is_email(arg: &str) -> bool {
    arg.contains('@')
}

/// `login EMAIL [--provider P]`: the account with that address, added first when there is
/// none; returns the config as it now is and the login to run for that account.
pub fn account_for_email(
    config_file: Option<&Path>,
    args: &LoginArgs,
    email: &str,
) -> Result<(config::Config, LoginArgs)> {
    let (local, domain) = split_address(email)?;
    let path = config::locate(config_file)
        .ok_or_else(|| Error::config("cannot find a home directory for the config"))?;
    regular_or_missing(&path)?;
    let name = if let Some(name) = known_account(&path, email)? {
        name
    } else {
        // Asked before the lock: a slow DNS answer must not hold up another login.
        let inferred = match args.provider {
            Some(p) => Inference {
                provider: provider_of(p),
                tenant: None,
                reason: "--provider".to_owned(),
            },
            None => infer(&domain)?,
        };
        add_or_find(&path, email, &local, &domain, &inferred)?
    };
    let config = config::load(Some(&path))?;
    let named = LoginArgs {
        account: Some(name.clone()),
        provider: None,
        flow: args.flow,
        no_browser: args.no_browser,
        import_refresh_token: args.import_refresh_token.clone(),
    };
    Ok((config, named))
}

/// Refuses a config path that is there but is no regular file (followed through symlinks):
/// a device (`-C /dev/null`), a folder or a pipe is never read as a config nor replaced.
fn regular_or_missing(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err(Error::config(format!(
            "the config {} is not a regular file (a device, a folder or a pipe): give -C a \
             config file, or a path where one may be created",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::config(format!(
            "cannot read the config {}: {e}",
            path.display()
        ))),
    }
}

/// The account of the config at `path` for `email`: one named like the address
/// (`[accounts."a@b.c"]`), else one with that email; `None` when there is no config yet.
fn known_account(path: &Path, email: &str) -> Result<Option<String>> {
    if !path.exists() {
        return Ok(None);
    }
    let config = config::load(Some(path))?;
    Ok(config
        .accounts
        .keys()
        .find(|n| *n == email)
        .or_else(|| {
            config
                .accounts
                .iter()
                .find(|(_, a)| a.email.eq_ignore_ascii_case(email))
                .map(|(n, _)| n)
        })
        .cloned())
}

/// Adds the account for `email` to the config, holding the lock beside it, so that logins
/// run at once neither trip over a file one of them just created nor lose each other's
/// account; the config is read again under the lock (another login may have added this very
/// address). The second account added also makes the first one `default_account`, so that
/// what relied on the only account keeps working. Returns the account's name.
fn add_or_find(
    path: &Path,
    email: &str,
    local: &str,
    domain: &str,
    inferred: &Inference,
) -> Result<String> {
    let _lock = lock_beside(path)?;
    if let Some(name) = known_account(path, email)? {
        return Ok(name);
    }
    let existing = if path.exists() {
        Some(config::load(Some(path))?)
    } else {
        None
    };
    let taken: Vec<&str> = existing
        .as_ref()
        .map(|c| c.accounts.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let name = account_name(local, domain, &taken);
    let first = existing
        .as_ref()
        .filter(|c| c.default_account.is_none() && c.accounts.len() == 1)
        .and_then(|c| c.accounts.keys().next().cloned());
    add_account(path, &name, email, inferred, first.as_deref())?;
    crate::stderr::line(&format!(
        "added account {name} (provider {}, from {}) to {}",
        inferred.provider.name(),
        inferred.reason,
        path.display()
    ));
    if let Some(first) = first {
        crate::stderr::line(&format!(
            "set default_account = \"{first}\" at the top of {}: mail that \
             names no account (no -a, no From of {name}) still goes through {first}",
            path.display()
        ));
    }
    Ok(name)
}

/// An exclusive lock on `.NAME.lock` beside the config file (its folder created `0700`
/// when missing), held until dropped.
fn lock_beside(path: &Path) -> Result<std::fs::File> {
    let io = |what: &str, p: &Path, e: std::io::Error| {
        Error::io(format!("cannot {what} {}: {e}", p.display()))
    };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io("create", dir, e))?;
    }
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let lock_path = path.with_file_name(format!(".{file_name}.lock"));
    let file = crate::private_dir::open(
        &lock_path,
        OpenOptions::new().read(true).write(true).create(true),
    )
    .map_err(|e| io("create the lock", &lock_path, e))?;
    file.lock().map_err(|e| io("lock", &lock_path, e))?;
    Ok(file)
}

/// `local@domain`, checked enough to be written into a config file.
fn split_address(email: &str) -> Result<(String, String)> {
    let bad = || {
        Error::usage(format!(
            "`{}` is not an email address (login EMAIL adds an account for it)",
            email.escape_debug()
        ))
    };
    let (local, domain) = email.rsplit_once('@').ok_or_else(bad)?;
    let clean = |s: &str| {
        !s.is_empty()
            && !s
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "<>\"',;".contains(c))
    };
    if !clean(local) || !clean(domain) || !domain.contains('.') || domain.contains('@') {
        return Err(bad());
    }
    Ok((local.to_owned(), domain.to_ascii_lowercase()))
}

fn provider_of(p: ProviderArg) -> ProviderKind {
    match p {
        ProviderArg::Microsoft => ProviderKind::Microsoft,
        ProviderArg::MicrosoftChina => ProviderKind::MicrosoftChina,
        ProviderArg::Gmail => ProviderKind::Gmail,
        ProviderArg::Custom => ProviderKind::Custom,
    }
}

/// What the new account's provider is, and why we think so.
#[derive(Debug, PartialEq, Eq)]
pub struct Inference {
    pub provider: ProviderKind,
    /// Microsoft 365 domains: the domain itself, as the tenant to sign in to.
    pub tenant: Option<String>,
    /// For the user: "the domain", "the MX record X", "--provider".
    pub reason: String,
}

/// A well-known domain, else the domain's MX records.
fn infer(domain: &str) -> Result<Inference> {
    if let Some(provider) = provider::for_email(&format!("x@{domain}")) {
        return Ok(Inference {
            provider,
            tenant: None,
            reason: format!("the domain {domain}"),
        });
    }
    let exchanges = crate::runtime::single_threaded()?.block_on(mx_lookup(domain))?;
    from_mx(domain, &exchanges).ok_or_else(|| {
        Error::usage(format!(
            "cannot tell the provider of {domain} from its MX records ({}): add \
             --provider microsoft|microsoft-china|gmail|custom",
            if exchanges.is_empty() {
                "there are none".to_owned()
            } else {
                exchanges.join(", ")
            }
        ))
    })
}

/// The provider that the first recognised MX host (in order of preference) belongs to.
#[must_use]
pub fn from_mx(domain: &str, exchanges: &[String]) -> Option<Inference> {
    exchanges.iter().find_map(|host| {
        let h = host.trim_end_matches('.').to_ascii_lowercase();
        let (provider, tenant) = if h.ends_with(".mail.protection.outlook.com") {
            (ProviderKind::Microsoft, Some(domain.to_owned()))
        } else if h.ends_with(".mail.protection.partner.outlook.cn") {
            (ProviderKind::MicrosoftChina, Some(domain.to_owned()))
        } else if h == "smtp.google.com"
            || h == "aspmx.l.google.com"
            || h.ends_with(".aspmx.l.google.com")
            || (h.starts_with("aspmx") && h.ends_with(".googlemail.com"))
        {
            (ProviderKind::Gmail, None)
        } else {
            return None;
        };
        Some(Inference {
            provider,
            tenant,
            reason: format!("the MX record {h}"),
        })
    })
}

/// The MX hosts of `domain`, most preferred first; none when the domain has no MX records.
async fn mx_lookup(domain: &str) -> Result<Vec<String>> {
    let mut builder = match std::env::var(NAMESERVER_ENV) {
        Ok(server) if !server.is_empty() => {
            let addr: SocketAddr = server.parse().map_err(|_| {
                Error::usage(format!(
                    "{NAMESERVER_ENV}={server}: give IP:PORT, e.g. 192.0.2.53:53"
                ))
            })?;
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            let server = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
            Resolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![server]),
                TokioRuntimeProvider::default(),
            )
        }
        _ => Resolver::builder_tokio().map_err(|e| {
            Error::config(format!(
                "cannot read the system's DNS configuration: {e}; add --provider"
            ))
        })?,
    };
    builder.options_mut().timeout = DNS_TIMEOUT;
    builder.options_mut().attempts = 2;
    let resolver = builder
        .build()
        .map_err(|e| Error::internal(format!("cannot start the DNS resolver: {e}")))?;
    let fqdn = format!("{domain}.");
    match resolver.mx_lookup(fqdn.as_str()).await {
        Ok(lookup) => {
            let mut mx: Vec<(u16, String)> = lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                    _ => None,
                })
                .collect();
            mx.sort();
            Ok(mx.into_iter().map(|(_, h)| h).collect())
        }
        Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(Vec::new()),
        Err(e) => Err(Error::usage(format!(
            "cannot look up the MX records of {domain} ({e}): try again, or add \
             --provider microsoft|microsoft-china|gmail|custom"
        ))),
    }
}

/// The new account's name: the address's local part (without `+tag`), as a bare TOML key;
/// `-2`, `-3`, … when that name is taken.
#[must_use]
pub fn account_name(local: &str, domain: &str, taken: &[&str]) -> String {
    let key = |s: &str| -> String {
        let mapped: String = s
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        mapped.trim_matches('-').to_owned()
    };
    let mut base = key(local.split('+').next().unwrap_or(local));
    if base.is_empty() {
        base = key(domain.split('.').next().unwrap_or(domain));
    }
    if base.is_empty() {
        "mail".clone_into(&mut base);
    }
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains(&name.as_str()) {
        name = format!("{base}-{n}");
        n += 1;
    }
    name
}

/// The `[accounts.NAME]` table for a new account, as TOML text.
fn account_table(name: &str, email: &str, inferred: &Inference) -> String {
    let mut table = toml_edit::Table::new();
    table["provider"] = toml_edit::value(inferred.provider.name());
    table["email"] = toml_edit::value(email);
    if let Some(tenant) = &inferred.tenant {
        table["tenant"] = toml_edit::value(tenant.as_str());
    }
    let mut accounts = toml_edit::Table::new();
    accounts.set_implicit(true);
    accounts.insert(name, toml_edit::Item::Table(table));
    let mut doc = toml_edit::DocumentMut::new();
    doc.insert("accounts", toml_edit::Item::Table(accounts));
    doc.to_string()
}

/// The config text with the new account added: appended after the existing bytes, which
/// stay as they were; when the file spells `accounts` so that a new `[accounts.NAME]`
/// header cannot follow (an inline table), the document is edited in place instead.
pub fn with_account(old: &str, name: &str, email: &str, inferred: &Inference) -> Result<String> {
    let path = Path::new("config.toml");
    let accepted = |text: &str| {
        config::parse(text, path)
            .ok()
            .is_some_and(|c| c.accounts.get(name).is_some_and(|a| a.email == email))
    };
    let separator = if old.is_empty() || old.ends_with("\n\n") {
        ""
    } else if old.ends_with('\n') {
        "\n"
    } else {
        "\n\n"
    };
    let appended = format!("{old}{separator}{}", account_table(name, email, inferred));
    if accepted(&appended) {
        return Ok(appended);
    }
    let cannot = |why: String| {
        Error::config(format!(
            "cannot add [accounts.{name}] to the config ({why}); add it yourself"
        ))
    };
    let mut doc: toml_edit::DocumentMut = old.parse().map_err(|e| cannot(format!("{e}")))?;
    let added: toml_edit::DocumentMut = account_table(name, email, inferred)
        .parse()
        .map_err(|e| cannot(format!("{e}")))?;
    let table = added["accounts"][name].clone();
    match doc.get_mut("accounts") {
        Some(toml_edit::Item::Value(toml_edit::Value::InlineTable(inline))) => {
            let value = table
                .into_table()
                .map(toml_edit::Table::into_inline_table)
                .map_err(|_| cannot("unexpected table".to_owned()))?;
            inline.insert(name, toml_edit::Value::InlineTable(value));
        }
        Some(toml_edit::Item::Table(accounts)) => {
            accounts.insert(name, table);
        }
        _ => return Err(cannot("`accounts` is not a table".to_owned())),
    }
    let edited = doc.to_string();
    if accepted(&edited) {
        Ok(edited)
    } else {
        Err(cannot("the edited file does not load".to_owned()))
    }
}

/// Adds the account to the config file (and `default_account = "FIRST"` when given): a new
/// file is created `0600` (its folder `0700`); an existing one is replaced atomically,
/// keeping its mode (through a symlink: its target).
fn add_account(
    path: &Path,
    name: &str,
    email: &str,
    inferred: &Inference,
    first: Option<&str>,
) -> Result<()> {
    let io = |what: &str, p: &Path, e: std::io::Error| {
        Error::io(format!("cannot {what} {}: {e}", p.display()))
    };
    if !path.exists() {
        let text = with_account("", name, email, inferred)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| io("create", dir, e))?;
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| io("create", path, e))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| io("write", path, e))?;
        return Ok(());
    }
    let target: PathBuf = std::fs::canonicalize(path).map_err(|e| io("read", path, e))?;
    let old = std::fs::read_to_string(&target).map_err(|e| io("read", &target, e))?;
    let mut text = with_account(&old, name, email, inferred)?;
    if let Some(first) = first {
        text = with_default_account(&text, first)?;
    }
    replace_file(&target, &text)
}

/// The config text with `default_account = "FIRST"` as its first line: a top-level key
/// must come before any table, and the top of the file is where people look for it. Every
/// other byte, comments included, stays.
pub fn with_default_account(text: &str, first: &str) -> Result<String> {
    let line = format!("default_account = {}\n", toml_edit::Value::from(first));
    let edited = format!("{line}{text}");
    match config::parse(&edited, Path::new("config.toml")) {
        Ok(c) if c.default_account.as_deref() == Some(first) => Ok(edited),
        _ => Err(Error::config(format!(
            "cannot set default_account = \"{first}\" in the config; set it yourself, at the \
             top of the file"
        ))),
    }
}

/// Sets `client_id` in `[accounts.NAME]` of the config file, keeping everything else; under
/// the lock beside the file, as every edit.
pub fn set_client_id(path: &Path, name: &str, client_id: &str) -> Result<()> {
    regular_or_missing(path)?;
    let _lock = lock_beside(path)?;
    let target: PathBuf = std::fs::canonicalize(path)
        .map_err(|e| Error::io(format!("cannot read {}: {e}", path.display())))?;
    let old = std::fs::read_to_string(&target)
        .map_err(|e| Error::io(format!("cannot read {}: {e}", target.display())))?;
    let cannot = |why: &str| {
        Error::config(format!(
            "cannot set client_id = \"{client_id}\" in [accounts.{name}] of {} ({why}); set it yourself",
            target.display()
        ))
    };
    let mut doc: toml_edit::DocumentMut = old.parse().map_err(|_| cannot("not TOML"))?;
    let account = doc
        .get_mut("accounts")
        .and_then(|a| a.get_mut(name))
        .and_then(toml_edit::Item::as_table_like_mut)
        .ok_or_else(|| cannot("no such table"))?;
    account.insert("client_id", toml_edit::value(client_id));
    let text = doc.to_string();
    let loaded = config::parse(&text, &target).map_err(|_| cannot("the result does not load"))?;
    if loaded
        .accounts
        .get(name)
        .and_then(|a| a.client_id.as_deref())
        != Some(client_id)
    {
        return Err(cannot("the result does not load"));
    }
    replace_file(&target, &text)
}

/// Replaces `target` atomically (a temporary file beside it, renamed), keeping its mode;
/// only ever a regular file.
fn replace_file(target: &Path, text: &str) -> Result<()> {
    let io = |what: &str, p: &Path, e: std::io::Error| {
        Error::io(format!("cannot {what} {}: {e}", p.display()))
    };
    regular_or_missing(target)?;
    let mode = std::fs::metadata(target)
        .map_err(|e| io("read", target, e))?
        .permissions()
        .mode()
        & 0o7777;
    let file_name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = target.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, target)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io("write", target, e));
    }
    Ok(())
}

/// What to paste into mutt, Emacs and mbsync, with the binary's absolute path (Emacs and
/// cron do not always have `~/.cargo/bin` on their PATH).
#[must_use]
pub fn paste_lines(account: &str) -> String {
    let exe = std::env::current_exe()
        .ok()
        .map_or_else(|| "oauth2-sendmail".to_owned(), |p| p.display().to_string());
    let shell = shell_words::quote(&exe);
    let elisp = exe.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        "\nmutt, neomutt (~/.muttrc):\n\
         set sendmail = \"{shell} -oi\"\n\
         set use_envelope_from = yes\n\
         \nEmacs, message-mode and mu4e (init.el):\n\
         (setq send-mail-function 'sendmail-send-it\n      \
               message-send-mail-function 'message-send-mail-with-sendmail\n      \
               sendmail-program \"{elisp}\"\n      \
               message-sendmail-f-is-evil t\n      \
               message-sendmail-extra-arguments '(\"--read-envelope-from\"))\n\
         \nmbsync (~/.mbsyncrc, in the IMAPAccount; needs the XOAUTH2 SASL plugin):\n\
         PassCmd \"{shell} token {account}\"\n\
         AuthMechs XOAUTH2\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inference(provider: ProviderKind, tenant: Option<&str>) -> Inference {
        Inference {
            provider,
            tenant: tenant.map(str::to_owned),
            reason: String::new(),
        }
    }

    #[test]
    fn mx_hosts_name_their_provider() {
        let mx =
            |hosts: &[&str]| -> Vec<String> { hosts.iter().map(|h| (*h).to_owned()).collect() };
        let ms = from_mx(
            "contoso.com",
            &mx(&["contoso-com.mail.protection.outlook.com."]),
        )
        .unwrap();
        assert_eq!(ms.provider, ProviderKind::Microsoft);
        assert_eq!(ms.tenant.as_deref(), Some("contoso.com"));
        let cn = from_mx(
            "contoso.cn",
            &mx(&["contoso-cn.mail.protection.partner.outlook.cn"]),
        );
        assert_eq!(cn.unwrap().provider, ProviderKind::MicrosoftChina);
        for google in [
            "aspmx.l.google.com.",
            "ALT1.ASPMX.L.GOOGLE.COM",
            "smtp.google.com",
            "aspmx2.googlemail.com",
        ] {
            assert_eq!(
                from_mx("x.org", &mx(&[google])).unwrap().provider,
                ProviderKind::Gmail,
                "{google}"
            );
        }
        // The first recognised host decides; unknown ones are skipped.
        let mixed = from_mx("x.org", &mx(&["mx1.x.org", "aspmx.l.google.com"])).unwrap();
        assert_eq!(mixed.provider, ProviderKind::Gmail);
        assert_eq!(
            from_mx("x.org", &mx(&["mx.x.org", "evil-google.com"])),
            None
        );
        assert_eq!(
            from_mx("x.org", &mx(&["mail.protection.outlook.com.evil.org"])),
            None
        );
        assert_eq!(from_mx("x.org", &[]), None);
    }

    #[test]
    fn account_names_from_the_local_part() {
        assert_eq!(account_name("japinli", "hotmail.com", &[]), "japinli");
        assert_eq!(
            account_name("Alice.Smith+mutt", "contoso.com", &[]),
            "alice-smith"
        );
        assert_eq!(
            account_name("alice", "contoso.com", &["alice", "alice-2"]),
            "alice-3"
        );
        assert_eq!(account_name("+", "contoso.com", &[]), "contoso");
    }

    #[test]
    fn adding_keeps_every_existing_byte_and_comment() {
        let old = "# my accounts\ndefault_account = \"work\" # the default\n\n[accounts.work]\n\
                   email = \"a@contoso.com\"   # spacing kept\n[aliases]\nroot = \"a@contoso.com\"";
        let new = with_account(
            old,
            "bob",
            "bob@gmail.com",
            &inference(ProviderKind::Gmail, None),
        )
        .unwrap();
        assert!(new.starts_with(old), "{new}");
        assert_eq!(
            &new[old.len()..],
            "\n\n[accounts.bob]\nprovider = \"gmail\"\nemail = \"bob@gmail.com\"\n"
        );
        let c = config::parse(&new, Path::new("/c.toml")).unwrap();
        assert_eq!(c.accounts["bob"].provider, Some(ProviderKind::Gmail));
        assert_eq!(c.default_account.as_deref(), Some("work"));
    }

    #[test]
    fn adding_to_an_empty_file_and_to_an_inline_accounts_table() {
        let new = with_account(
            "",
            "alice",
            "alice@contoso.com",
            &inference(ProviderKind::Microsoft, Some("contoso.com")),
        )
        .unwrap();
        assert_eq!(
            new,
            "[accounts.alice]\nprovider = \"microsoft\"\nemail = \"alice@contoso.com\"\ntenant = \"contoso.com\"\n"
        );
        let inline = "accounts = { w = { email = \"w@contoso.com\" } } # inline\n";
        let new = with_account(
            inline,
            "x",
            "x@gmail.com",
            &inference(ProviderKind::Gmail, None),
        )
        .unwrap();
        let c = config::parse(&new, Path::new("/c.toml")).unwrap();
        assert_eq!(c.accounts.keys().collect::<Vec<_>>(), ["w", "x"]);
        assert!(new.contains("# inline"), "{new}");
    }

    #[test]
    fn addresses_that_cannot_be_written_are_refused() {
        for bad in ["a@", "@b.c", "a b@c.d", "a@b", "a@b.c\n[x]", "a\"@b.c"] {
            assert_eq!(split_address(bad).unwrap_err().exit_code(), 64, "{bad:?}");
        }
        assert_eq!(
            split_address("Alice@Contoso.COM").unwrap(),
            ("Alice".to_owned(), "contoso.com".to_owned())
        );
    }
}
