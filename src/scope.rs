//! Who runs us, decided once at start: user mode (the caller's own config, tokens, queue
//! and log) or system mode (the host's, in `paths::system`), from the caller's uid, `-C`,
//! `OAUTH2_SENDMAIL_CONFIG`, whether the caller has a config of their own, and `--system`.
//!
//! The order: `-C`, then the environment, then the caller's own config when it exists, else
//! the system config. In system mode root sends with the system account; anyone else
//! cannot read it, and their message goes into the maildrop for the root flusher.
//! Nothing else asks which mode this is except through [`current`].

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::OnceLock;

use crate::error::{EX_NOPERM, Error, Result};
use crate::paths;

/// Which account and folders this run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The caller's own config, tokens, queue and log.
    User,
    /// Root with the system config: sends with the system account.
    System,
    /// Anyone else on a host whose MTA is the system account: messages go into the
    /// maildrop; nothing of the system account is readable.
    Drop,
}

static MODE: OnceLock<Mode> = OnceLock::new();

/// What the command line said that bears on the mode.
#[derive(Debug, Clone, Copy, Default)]
pub struct Asked<'a> {
    /// `-C FILE`.
    pub config: Option<&'a Path>,
    /// `--system`.
    pub system: bool,
    /// `login EMAIL`: a first run that writes the caller's own config.
    pub creates_own_config: bool,
}

/// The mode decided at start (`User` if nothing decided one, as in unit tests).
#[must_use]
pub fn current() -> Mode {
    MODE.get().copied().unwrap_or(Mode::User)
}

/// Decides the mode once, and points `paths` at the system folders in system mode.
pub fn decide(asked: Asked<'_>) -> Result<Mode> {
    let root = rustix::process::geteuid().is_root();
    let mode = choose(
        asked,
        root,
        std::env::var_os(crate::config::CONFIG_ENV).is_some_and(|v| !v.is_empty()),
        paths::user_config_file().is_some_and(|p| p.exists()),
        Path::new(paths::system::CONFIG).exists(),
        Path::new(paths::system::MAILDROP).is_dir(),
    )?;
    if mode == Mode::System {
        check_system_config()?;
    }
    if mode != Mode::User {
        paths::use_system_folders();
    }
    let _ = MODE.set(mode);
    Ok(mode)
}

/// The decision itself, without I/O.
// Each bool is one fact about the host, named at the call; a struct would only rename them.
#[allow(clippy::fn_params_excessive_bools)]
fn choose(
    asked: Asked<'_>,
    root: bool,
    env_config: bool,
    own_config: bool,
    system_config: bool,
    maildrop: bool,
) -> Result<Mode> {
    if asked.system {
        if asked.config.is_some() {
            return Err(Error::usage(
                "--system uses the system config: leave out -C (or drop --system)",
            ));
        }
        if !root {
            crate::stderr::line(
                "--system acts on the host's account, which only root may \
                 use: run it as root (e.g. `sudo oauth2-sendmail --system ...`)",
            );
            return Err(Error::reported(EX_NOPERM));
        }
        return Ok(Mode::System);
    }
    if asked.config.is_some() || env_config || own_config || asked.creates_own_config {
        return Ok(Mode::User);
    }
    Ok(match (root, system_config, maildrop) {
        (true, true, _) => Mode::System,
        (false, _, true) => Mode::Drop,
        // No system MTA here: the caller's own (missing) config, with its error.
        _ => Mode::User,
    })
}

/// Refuses a system config (or its folder) that is not root's or that another user can
/// write: whoever could edit it could point root's `*_cmd` at their own program.
fn check_system_config() -> Result<()> {
    for (path, what) in [
        (paths::system::CONFIG_DIR, "system config folder"),
        (paths::system::CONFIG, "system config"),
    ] {
        let meta = match std::fs::symlink_metadata(path) {
            Ok(meta) => meta,
            // `--system login EMAIL` writes a missing config; any other word says it is
            // missing when it reads it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && path == paths::system::CONFIG => {
                return Ok(());
            }
            Err(e) => {
                return Err(Error::config(format!(
                    "cannot read the {what} {path}: {e} (is the oauth2-sendmail-mta package installed?)"
                )));
            }
        };
        let mode = meta.mode() & 0o7777;
        if meta.file_type().is_symlink() {
            return Err(Error::config(format!(
                "the {what} {path} is a symbolic link, so it is not used: put the file itself there"
            )));
        }
        if meta.uid() != 0 {
            return Err(Error::config(format!(
                "the {what} {path} belongs to user {} (not root), so it is not used: \
                 fix it with `chown root: {path}`",
                meta.uid()
            )));
        }
        if mode & 0o022 != 0 {
            return Err(Error::config(format!(
                "the {what} {path} may be written by others (mode {mode:04o}), so it is not \
                 used: fix it with `chmod go-w {path}`"
            )));
        }
    }
    Ok(())
}

/// The line for a management word that an unprivileged caller asks of the system account.
#[must_use]
pub fn not_yours(word: &str) -> Error {
    crate::stderr::line(&format!(
        "you have no config of your own ({}), and the host's account is \
         root's: run `sudo oauth2-sendmail --system {word}`, or `oauth2-sendmail login \
         EMAIL` to add an account of your own",
        paths::user_config_file()
            .map_or_else(|| "no home folder".to_owned(), |p| p.display().to_string())
    ));
    Error::reported(EX_NOPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked() -> Asked<'static> {
        Asked::default()
    }

    #[test]
    fn the_callers_own_config_wins_over_the_system_one() {
        assert_eq!(
            choose(asked(), true, false, true, true, true).unwrap(),
            Mode::User
        );
        assert_eq!(
            choose(asked(), false, false, true, true, true).unwrap(),
            Mode::User
        );
    }

    #[test]
    fn minus_c_and_the_environment_mean_what_they_say() {
        let c = Asked {
            config: Some(Path::new("/x.toml")),
            ..asked()
        };
        assert_eq!(
            choose(c, true, false, false, true, true).unwrap(),
            Mode::User
        );
        assert_eq!(
            choose(asked(), true, true, false, true, true).unwrap(),
            Mode::User
        );
    }

    #[test]
    fn without_a_config_root_uses_the_system_account_and_others_the_maildrop() {
        assert_eq!(
            choose(asked(), true, false, false, true, true).unwrap(),
            Mode::System
        );
        assert_eq!(
            choose(asked(), false, false, false, true, true).unwrap(),
            Mode::Drop
        );
        // No system MTA installed: user mode, and its missing-config error.
        assert_eq!(
            choose(asked(), true, false, false, false, false).unwrap(),
            Mode::User
        );
        assert_eq!(
            choose(asked(), false, false, false, false, false).unwrap(),
            Mode::User
        );
    }

    #[test]
    fn minus_minus_system_is_for_root_only_and_not_with_minus_c() {
        let system = Asked {
            system: true,
            ..asked()
        };
        assert_eq!(
            choose(system, true, false, true, false, false).unwrap(),
            Mode::System
        );
        assert_eq!(
            choose(system, false, false, false, true, true)
                .unwrap_err()
                .exit_code(),
            EX_NOPERM
        );
        let both = Asked {
            config: Some(Path::new("/x.toml")),
            ..system
        };
        assert_eq!(
            choose(both, true, false, false, true, true)
                .unwrap_err()
                .exit_code(),
            crate::error::EX_USAGE
        );
    }

    #[test]
    fn a_first_login_writes_the_callers_own_config() {
        let first = Asked {
            creates_own_config: true,
            ..asked()
        };
        assert_eq!(
            choose(first, false, false, false, true, true).unwrap(),
            Mode::User
        );
    }
}
