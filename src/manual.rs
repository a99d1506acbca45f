//! The manual: the man page (NAME, SYNOPSIS, DESCRIPTION and OPTIONS generated from the clap
//! definitions, the management words generated from their subcommands, then the
//! hand-written reference in `manual.roff`: CONFIGURATION, EXIT STATUS, FILES, ENVIRONMENT,
//! EXAMPLES, SEE ALSO) and the shell completions. `--generate man|bash|zsh|fish` prints
//! them, so an install from a built binary (`cargo install`) can add them.

use std::fmt::Write as _;
use std::io::Write as _;

use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::{GenerateArg, ManageArgs, SendArgs};
use crate::error::{Error, Result};

/// The hand-written sections, in roff.
const REFERENCE: &str = include_str!("manual.roff");

/// The whole interface as one command: sendmail flags plus the management words.
#[must_use]
pub fn command() -> clap::Command {
    let manage = ManageArgs::command();
    without_help_words(SendArgs::command().subcommands(manage.get_subcommands().cloned()))
}

/// No `help` word anywhere, as the parser has none: clap would add one to the combined
/// command and to `queue`, and completion would then offer `oauth2-sendmail help`, which
/// mails a local user called `help`.
fn without_help_words(cmd: clap::Command) -> clap::Command {
    cmd.disable_help_subcommand(true)
        .mut_subcommands(without_help_words)
}

/// Prints what `--generate` asks for on stdout.
pub fn generate(what: GenerateArg) -> Result<()> {
    let text = match what {
        GenerateArg::Man => man_page(),
        GenerateArg::Bash => completion(Shell::Bash),
        GenerateArg::Zsh => completion(Shell::Zsh),
        GenerateArg::Fish => completion(Shell::Fish),
    };
    std::io::stdout()
        .lock()
        .write_all(&text)
        .map_err(|e| Error::io(format!("cannot write to stdout: {e}")))
}

/// The man page, section 1.
#[must_use]
pub fn man_page() -> Vec<u8> {
    let cmd = command();
    let man = clap_mangen::Man::new(cmd.clone());
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = man.render_title(&mut out);
    let _ = man.render_name_section(&mut out);
    let _ = man.render_synopsis_section(&mut out);
    let _ = man.render_description_section(&mut out);
    let _ = man.render_options_section(&mut out);
    out.extend_from_slice(management_section(&cmd).as_bytes());
    out.extend_from_slice(REFERENCE.as_bytes());
    let _ = man.render_version_section(&mut out);
    out
}

/// A completion script for `shell`.
#[must_use]
pub fn completion(shell: Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command(), BIN, &mut out);
    if shell == Shell::Bash {
        return bash_names_matched(&out);
    }
    out
}

const BIN: &str = "oauth2-sendmail";

/// `clap_complete`'s bash script names a word's state `oauth2__sendmail__subcmd__queue` where
/// it parses the words, but `oauth2__subcmd__sendmail__subcmd__queue` where it completes
/// them (the hyphen in the binary's name is mangled two ways: clap-rs/clap#6421), so
/// completion stopped after the first word. The second spelling is made the first.
fn bash_names_matched(script: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(script);
    let wrong = format!("{}__subcmd__", BIN.replace('-', "__subcmd__"));
    let right = format!("{}__subcmd__", BIN.replace('-', "__"));
    text.replace(&wrong, &right).into_bytes()
}

/// Text for roff: backslashes, leading dots and quotes, and hyphens escaped.
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    match escaped.chars().next() {
        Some('.' | '\'') => format!("\\&{escaped}"),
        _ => escaped,
    }
}

/// MANAGEMENT COMMANDS: each word with its arguments, options and help, from clap.
fn management_section(cmd: &clap::Command) -> String {
    let mut out = String::from(
        ".SH \"MANAGEMENT COMMANDS\"\n\
         Only as the first word (after an optional \\fB\\-C\\fR \\fIFILE\\fR); a recipient that \
         is literally one of these words must follow \\fB\\-\\-\\fR. Not recognised when the \
         binary is invoked as \\fBsendmail\\fR; invoked as \\fBmailq\\fR it lists the queue.\n",
    );
    for sub in cmd.get_subcommands() {
        write_command(
            &mut out,
            &format!("oauth2-sendmail {}", sub.get_name()),
            sub,
        );
    }
    out
}

fn write_command(out: &mut String, words: &str, cmd: &clap::Command) {
    if cmd.has_subcommands() {
        for sub in cmd.get_subcommands() {
            write_command(out, &format!("{words} {}", sub.get_name()), sub);
        }
        return;
    }
    let mut synopsis = format!("\\fB{}\\fR", roff(words));
    let mut options = String::new();
    for arg in cmd.get_arguments() {
        if arg.is_hide_set() || arg.get_id() == "help" || arg.get_id() == "config" {
            continue;
        }
        let value = arg.get_value_names().and_then(|v| v.first()).map_or_else(
            || arg.get_id().to_string().to_ascii_uppercase(),
            ToString::to_string,
        );
        let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
        let takes_value = arg.get_action().takes_values();
        let possible: Vec<String> = arg
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| v.get_name().to_owned())
            .collect();
        let values = if possible.is_empty() || !takes_value {
            String::new()
        } else {
            format!(" (one of: {})", possible.join(", "))
        };
        if let Some(long) = arg.get_long() {
            let spelled = if takes_value {
                format!("\\fB\\-\\-{}\\fR \\fI{}\\fR", roff(long), roff(&value))
            } else {
                format!("\\fB\\-\\-{}\\fR", roff(long))
            };
            let _ = write!(synopsis, " [{spelled}]");
            let _ = write!(
                options,
                ".TP\n{spelled}\n{}{}\n",
                roff(&help),
                roff(&values)
            );
        } else if arg.is_required_set() {
            let _ = write!(synopsis, " \\fI{}\\fR", roff(&value));
        } else {
            let _ = write!(synopsis, " [\\fI{}\\fR]", roff(&value));
        }
    }
    let about = cmd
        .get_long_about()
        .or(cmd.get_about())
        .map(ToString::to_string)
        .unwrap_or_default();
    let _ = write!(out, ".TP\n{synopsis}\n{}\n", roff(&about));
    if !options.is_empty() {
        let _ = write!(out, ".RS\n{options}.RE\n");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::*;

    /// The keys the config accepts, read from the code: `deny_unknown_fields` lists them in
    /// its error for an unknown key, at the top level and in an account.
    fn accepted_keys(toml: &str) -> BTreeSet<String> {
        let e = crate::config::parse(toml, Path::new("/c.toml"))
            .unwrap_err()
            .to_string();
        let (_, expected) = e.split_once("expected").expect("serde lists the fields");
        let keys: BTreeSet<String> = expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        assert!(keys.len() > 3, "{e}");
        keys
    }

    /// The names documented as entries (`.TP` then `.B key`) of CONFIGURATION.
    fn documented_keys() -> BTreeSet<String> {
        let page = String::from_utf8(man_page()).unwrap();
        let start = page
            .find(".SH CONFIGURATION")
            .expect("a CONFIGURATION section");
        let rest = &page[start + 3..];
        let section = &rest[..rest.find("\n.SH ").unwrap_or(rest.len())];
        let lines: Vec<&str> = section.lines().collect();
        lines
            .windows(2)
            .filter(|w| w[0] == ".TP")
            .filter_map(|w| w[1].strip_prefix(".B "))
            .map(|k| k.replace("\\-", "-").replace('"', ""))
            .collect()
    }

    #[test]
    fn every_config_key_is_documented_in_configuration() {
        let top = accepted_keys("zz_not_a_key = 1\n");
        let account = accepted_keys("[accounts.w]\nemail = \"a@b.c\"\nzz_not_a_key = 1\n");
        let documented = documented_keys();
        let missing: Vec<&String> = top
            .iter()
            .chain(&account)
            .filter(|k| !documented.contains(*k))
            .collect();
        assert!(
            missing.is_empty(),
            "keys the config accepts but CONFIGURATION does not document: {missing:?}"
        );
        assert!(account.contains("provider") && account.contains("email"));
        assert!(top.contains("default_account"));
    }

    #[test]
    fn documented_boolean_defaults_are_the_configs_defaults() {
        let page = String::from_utf8(man_page()).unwrap();
        let config =
            crate::config::parse("[accounts.w]\nemail = \"a@b.c\"\n", Path::new("/c.toml"))
                .unwrap();
        let account = &config.accounts["w"];
        let documented = |key: &str| {
            let entry = &page[page.find(&format!(".B {key}\n")).expect(key)..];
            let line = entry.lines().nth(1).unwrap();
            line.strip_prefix("Boolean; default: \\fB")
                .and_then(|l| l.split("\\fR").next())
                .unwrap_or_else(|| panic!("{key}: {line}"))
                .to_owned()
        };
        assert_eq!(
            documented("flush_on_send"),
            account.flush_on_send.to_string()
        );
    }

    #[test]
    fn the_page_has_every_section_and_refers_only_to_pages_that_exist() {
        let page = String::from_utf8(man_page()).unwrap();
        for section in [
            ".SH NAME",
            ".SH SYNOPSIS",
            ".SH DESCRIPTION",
            ".SH OPTIONS",
            ".SH \"MANAGEMENT COMMANDS\"",
            ".SH CONFIGURATION",
            ".SH \"EXIT STATUS\"",
            ".SH FILES",
            ".SH ENVIRONMENT",
            ".SH EXAMPLES",
            ".SH \"SEE ALSO\"",
        ] {
            assert!(
                page.contains(&format!("\n{section}\n")),
                "{section} missing"
            );
        }
        // clap_mangen's SUBCOMMANDS section names oauth2-sendmail-login(1) and friends,
        // which do not exist.
        assert!(
            !page.contains("oauth2\\-sendmail\\-login"),
            "a page that does not exist"
        );
        for word in crate::cli::MANAGEMENT_WORDS {
            assert!(
                page.contains(&format!("\\fBoauth2\\-sendmail {word}")),
                "{word} is not documented"
            );
        }
        for example in [
            "message\\-sendmail\\-f\\-is\\-evil",
            "\\-\\-read\\-envelope\\-from",
            "sendmail\\-cmd",
            "PassCmd",
            "AuthMechs XOAUTH2",
            "passwordeval",
            "mutt_oauth2.py",
            "neomutt",
            "mu4e",
            "systemctl \\-\\-user",
            "crontab",
        ] {
            assert!(page.contains(example), "EXAMPLES lacks {example}");
        }
    }
}
