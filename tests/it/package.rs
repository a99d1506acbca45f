//! The Debian packages as `cargo deb` and `cargo deb --variant mta` built them (`.ci/run`
//! builds them before `cargo test` and sets `OAUTH2_SENDMAIL_TEST_DEB=1`, which makes them
//! required here; elsewhere the test checks them when they are present): their contents
//! (`dpkg-deb -c`), their relationships (`dpkg-deb -f`), and the packaged binary and links
//! run from a `dpkg-deb -x` into a temporary directory. Nothing is installed.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::support::{Sandbox, run_command};

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
        PathBuf::from,
    )
}

/// The newest `.deb` of `package` at this version.
fn deb(package: &str) -> Option<PathBuf> {
    let prefix = format!("{package}_{VERSION}-");
    let dir = target_dir().join("debian");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
                && p.extension().is_some_and(|e| e == "deb")
        })
        .collect();
    found.sort_by_key(|p| p.metadata().and_then(|m| m.modified()).ok());
    found.pop()
}

fn dpkg_deb(args: &[&str]) -> String {
    let out = Command::new("dpkg-deb").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "dpkg-deb {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `./usr/bin/x` → `usr/bin/x`, with ` -> target` kept for links.
fn contents(deb: &Path) -> Vec<String> {
    dpkg_deb(&["-c", deb.to_str().unwrap()])
        .lines()
        .filter_map(|l| l.split_once(" ./").map(|(_, p)| p.to_owned()))
        .filter(|p| !p.ends_with('/'))
        .collect()
}

#[test]
fn the_debian_packages_hold_the_binary_manual_completions_units_and_mta_links() {
    let required = std::env::var_os("OAUTH2_SENDMAIL_TEST_DEB").is_some();
    let (Some(main), Some(mta)) = (deb("oauth2-sendmail"), deb("oauth2-sendmail-mta")) else {
        assert!(
            !required,
            "no .deb in {}/debian: run `cargo deb && cargo deb --variant mta`",
            target_dir().display()
        );
        eprintln!("skipped: no .deb built (cargo deb && cargo deb --variant mta)");
        return;
    };
    let files = contents(&main);
    for want in [
        "usr/bin/oauth2-sendmail",
        "usr/share/bash-completion/completions/oauth2-sendmail",
        "usr/share/zsh/vendor-completions/_oauth2-sendmail",
        "usr/share/fish/vendor_completions.d/oauth2-sendmail.fish",
        "usr/lib/systemd/user/oauth2-sendmail-flush.service",
        "usr/lib/systemd/user/oauth2-sendmail-flush.timer",
        "usr/share/doc/oauth2-sendmail/examples/cron/oauth2-sendmail",
        "usr/share/doc/oauth2-sendmail/copyright",
    ] {
        assert!(
            files.iter().any(|f| f == want),
            "{want} missing from {files:#?}"
        );
    }
    assert!(
        files
            .iter()
            .any(|f| f.starts_with("usr/share/man/man1/oauth2-sendmail.1")),
        "the man page is missing: {files:#?}"
    );
    assert!(
        !files.iter().any(|f| f.contains("sbin/sendmail")),
        "the main package takes no MTA path"
    );
    assert_eq!(
        dpkg_deb(&["-f", main.to_str().unwrap()])
            .lines()
            .find(|l| l.starts_with("Provides:")),
        None
    );

    check_mta(&mta);
    check_unpacked(&main, &mta);
    check_system_mode(&main, &mta);
}

fn check_mta(mta: &Path) {
    let links = contents(mta);
    for want in [
        "usr/sbin/sendmail -> ../bin/oauth2-sendmail",
        "usr/lib/sendmail -> ../sbin/sendmail",
        "usr/bin/mailq -> oauth2-sendmail",
    ] {
        assert!(
            links.iter().any(|f| f == want),
            "{want} missing from {links:#?}"
        );
    }
    let control = dpkg_deb(&["-f", mta.to_str().unwrap()]);
    for field in [
        "Package: oauth2-sendmail-mta",
        "Provides: mail-transport-agent",
        "Conflicts: mail-transport-agent",
        "Replaces: mail-transport-agent",
    ] {
        assert!(
            control.lines().any(|l| l == field),
            "{field} missing:\n{control}"
        );
    }
    assert!(
        control
            .lines()
            .any(|l| l.starts_with("Depends: oauth2-sendmail")),
        "{control}"
    );
    // The flusher's units and the cron.d line for hosts without systemd.
    for unit in [
        "systemd/system/oauth2-sendmail-mta.service",
        "systemd/system/oauth2-sendmail-mta.path",
        "systemd/system/oauth2-sendmail-mta.timer",
    ] {
        assert!(
            links.iter().any(|f| f.ends_with(unit)),
            "{unit} missing from {links:#?}"
        );
    }
    assert!(
        links.iter().any(|f| f == "etc/cron.d/oauth2-sendmail-mta"),
        "{links:#?}"
    );
    // The maintainer scripts: the host's folders with their modes, the units enabled.
    let scripts = tempfile::tempdir().unwrap();
    dpkg_deb(&[
        "-e",
        mta.to_str().unwrap(),
        scripts.path().to_str().unwrap(),
    ]);
    let read = |name: &str| std::fs::read_to_string(scripts.path().join(name)).unwrap_or_default();
    let postinst = read("postinst");
    assert!(
        postinst.contains("-m 1733 /var/spool/oauth2-sendmail/maildrop")
            && postinst.contains("-m 0700 /etc/oauth2-sendmail"),
        "{postinst}"
    );
    for unit in ["oauth2-sendmail-mta.path", "oauth2-sendmail-mta.timer"] {
        assert!(
            postinst.contains(&format!("deb-systemd-helper enable {unit}")),
            "{unit} is not enabled by postinst:\n{postinst}"
        );
    }
    assert!(
        postinst.contains(
            "deb-systemd-invoke $_dh_action oauth2-sendmail-mta.path oauth2-sendmail-mta.service \
             oauth2-sendmail-mta.timer"
        ),
        "the units are started where systemd runs:\n{postinst}"
    );
    assert!(!postinst.contains("#DEBHELPER#"), "{postinst}");
    assert!(
        read("postrm").contains("rm -rf /var/lib/oauth2-sendmail"),
        "purge removes the host's tokens"
    );
    assert!(
        read("conffiles")
            .lines()
            .any(|l| l == "/etc/cron.d/oauth2-sendmail-mta"),
        "{}",
        read("conffiles")
    );
}

/// Runs `script` (sh) in a private mount namespace where `/usr/bin/oauth2-sendmail` is the
/// unpacked one, and `/etc`, `/run`, `/var/lib`, `/var/spool` and `/var/log` are throwaway
/// copies: the machine's own are never touched. `None` where namespaces cannot be made
/// (a failure under CI).
fn in_host(root: &Path, script: &str) -> Option<std::process::Output> {
    let work = tempfile::tempdir().unwrap();
    let setup = r#"set -e
for d in usr/bin etc; do
  mkdir -p "$W/$d/u" "$W/$d/w"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$W/$d/u,workdir=$W/$d/w" "/$d"
done
cp "$R/usr/bin/oauth2-sendmail" /usr/bin/oauth2-sendmail
for d in /run /var/lib /var/spool /var/log; do mount -t tmpfs -o mode=755 tmpfs "$d"; done
"#;
    let out = Command::new("unshare")
        .args(["--mount", "sh", "-c"])
        .arg(format!("{setup}{script}"))
        .env("W", work.path())
        .env("R", root)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("mount") && stderr.contains("ermission") {
        assert!(
            std::env::var_os("CI").is_none(),
            "the package tests need mount namespaces: {stderr}"
        );
        eprintln!("SKIPPED: no mount namespaces here; the system-mode package checks did NOT run");
        return None;
    }
    Some(out)
}

/// The installed system mode, as the packages leave it: postinst's folders and modes,
/// every shipped unit through `systemd-analyze verify`, and the cron.d line run by `/bin/sh`
/// with cron's PATH (quiet where systemd runs; the flusher where it does not).
fn check_system_mode(main: &Path, mta: &Path) {
    let s = Sandbox::new();
    let root = s.path().join("root");
    for deb in [main, mta] {
        dpkg_deb(&["-x", deb.to_str().unwrap(), root.to_str().unwrap()]);
    }
    let scripts = s.path().join("control");
    dpkg_deb(&["-e", mta.to_str().unwrap(), scripts.to_str().unwrap()]);
    let units: Vec<PathBuf> = [
        "usr/lib/systemd/user",
        "usr/lib/systemd/system",
        "lib/systemd/system",
    ]
    .iter()
    .filter_map(|d| std::fs::read_dir(root.join(d)).ok())
    .flatten()
    .map(|e| e.unwrap().path())
    .collect();
    assert_eq!(
        units.len(),
        5,
        "two user units, three system units: {units:?}"
    );
    let units: Vec<String> = units.iter().map(|u| format!("'{}'", u.display())).collect();
    let units = units.join(" ");
    // The main package's cron example names the packaged binary (no placeholder).
    let example = std::fs::read_to_string(
        root.join("usr/share/doc/oauth2-sendmail/examples/cron/oauth2-sendmail"),
    )
    .unwrap();
    assert!(
        example
            .lines()
            .any(|l| l == "*/5 * * * * /usr/bin/oauth2-sendmail -q")
            && !example.contains('@'),
        "{example}"
    );
    let cron = std::fs::read_to_string(root.join("etc/cron.d/oauth2-sendmail-mta")).unwrap();
    let line = cron
        .lines()
        .find(|l| !l.starts_with('#') && !l.is_empty())
        .unwrap();
    // m h dom mon dow user command
    let command = line.splitn(7, ' ').nth(6).unwrap();
    assert!(line.starts_with("*/5 * * * * root "), "{line}");
    let script = format!(
        r#"sh "$R/../control/postinst" configure >/dev/null
stat -c '%n %a %U' /etc/oauth2-sendmail /var/lib/oauth2-sendmail /var/log/oauth2-sendmail   /var/spool/oauth2-sendmail /var/spool/oauth2-sendmail/queue /var/spool/oauth2-sendmail/maildrop
systemd-analyze verify --man=no {units} && echo verified
cron() {{ env -i PATH=/usr/bin:/bin SHELL=/bin/sh HOME=/root /bin/sh -c '{command}'; echo "cron rc=$?"; }}
cron
printf '[accounts.ops]
email = "ops@contoso.com"
' > /etc/oauth2-sendmail/config.toml
chmod 600 /etc/oauth2-sendmail/config.toml
cron
mkdir -p /run/systemd/system
chmod 666 /etc/oauth2-sendmail/config.toml
cron
"#
    );
    let Some(out) = in_host(&root, &script) else {
        return;
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for want in [
        "/etc/oauth2-sendmail 700 root",
        "/var/lib/oauth2-sendmail 700 root",
        "/var/log/oauth2-sendmail 700 root",
        "/var/spool/oauth2-sendmail 755 root",
        "/var/spool/oauth2-sendmail/queue 700 root",
        "/var/spool/oauth2-sendmail/maildrop 1733 root",
        "verified",
    ] {
        assert!(
            stdout.lines().any(|l| l == want),
            "{want}: {stdout}\n{stderr}"
        );
    }
    // No config yet: quiet. A config: the flusher runs, quietly (nothing to send). Under
    // systemd: not run at all (a loose config would have made it fail loudly).
    assert_eq!(stdout.matches("cron rc=0").count(), 3, "{stdout}\n{stderr}");
    assert!(!stderr.contains("oauth2-sendmail:"), "{stderr}");
}

fn check_unpacked(main: &Path, mta: &Path) {
    // Unpacked side by side, as dpkg would install them.
    let s = Sandbox::new();
    let root = s.path().join("root");
    for deb in [main, mta] {
        dpkg_deb(&["-x", deb.to_str().unwrap(), root.to_str().unwrap()]);
    }
    let mut version = s.program(root.join("usr/bin/oauth2-sendmail"));
    version.arg("--version");
    let run = run_command(version, b"");
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, format!("oauth2-sendmail {VERSION}\n"));
    let mut sendmail = s.program(root.join("usr/sbin/sendmail"));
    sendmail.args(["--dry-run", "status"]);
    let run = run_command(sendmail, b"To: x@example.org\n\nbody\n");
    // As `sendmail`, `status` is a recipient: the dry run fails on the missing config, not
    // on a management word.
    assert_eq!(run.code, 78, "{}", run.stderr);
    let run = run_command(s.program(root.join("usr/bin/mailq")), b"");
    assert_eq!(run.code, 0, "{}", run.stderr);
    // The packaged man page is the committed one.
    let out = Command::new("gzip")
        .arg("-dc")
        .arg(root.join("usr/share/man/man1/oauth2-sendmail.1.gz"))
        .output()
        .unwrap();
    let committed = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/man/oauth2-sendmail.1"
    ))
    .unwrap();
    assert!(
        out.stdout == committed,
        "the packaged man page is stale: rebuild with cargo deb"
    );
}
