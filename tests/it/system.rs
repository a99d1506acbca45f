//! System mode end to end: the real binary as root and as an unprivileged user
//! (`setpriv --reuid=65534`), each run in its own private mount namespace (`unshare
//! --mount`) where `/etc/oauth2-sendmail` (on an overlay of `/etc`), `/var/lib`,
//! `/var/spool` and `/var/log` are this test's folders: no test touches the machine's own.
//! Against the fake SMTP server and token endpoint on 127.0.0.1.
//!
//! Where a namespace cannot be made (not root, no `unshare`), each test says so on stderr
//! and passes, except under CI (`CI` set), where that is a failure.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::json;

use super::fake_idp::{Failure, FakeIdp};
use super::fake_smtp::{Behaviour, FakeSmtp};
use super::support::{Run, TestCa, now, run_command, set_mode};

const CLIENT_ID: &str = "9e5f94bc-e8a4-4e73-b8be-63364c29d753";
const OPS: &str = "ops@contoso.com";
const NOBODY: u32 = 65_534;
/// The `[aliases]` entry of the unprivileged user `nobody`.
const HELPDESK: &str = "helpdesk@contoso.com";

/// The private mount namespace each run gets (see the script's comment).
const NAMESPACE: &str = include_str!("namespace.sh");
/// Where the namespace puts the binary under test.
const EXE_IN_NAMESPACE: &str = "/var/lib/oauth2-sendmail-under-test";

/// Whether this machine can run the tests; `false` after saying why (CI fails instead).
fn namespaces_work() -> bool {
    static WORKS: OnceLock<Result<(), String>> = OnceLock::new();
    let works = WORKS.get_or_init(|| {
        if !rustix_is_root() {
            return Err("not root".into());
        }
        let out = Command::new("unshare")
            .args(["--mount", "sh", "-c", "mount -t tmpfs tmpfs /var/spool"])
            .output()
            .map_err(|e| format!("unshare: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    });
    match works {
        Ok(()) => true,
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("system-mode tests need root and mount namespaces: {why}")
        }
        Err(why) => {
            eprintln!(
                "SKIPPED: the system-mode tests need root and `unshare --mount`, which this \
                 machine does not allow ({why}); they are NOT run"
            );
            false
        }
    }
}

fn rustix_is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// One host: the system config, tokens, spool and log in a temporary folder.
struct Host {
    dir: tempfile::TempDir,
    idp: FakeIdp,
    smtp: FakeSmtp,
    token: String,
    refresh: String,
}

impl Host {
    fn new(behaviour: Behaviour) -> Host {
        let ca = TestCa::new();
        let idp = FakeIdp::start(&ca);
        let smtp = FakeSmtp::start(&ca, behaviour.accept_tokens(&idp.valid_access_tokens()));
        let dir = tempfile::tempdir().unwrap();
        for (sub, mode) in [
            ("etc", 0o755),
            ("lib", 0o700),
            ("spool", 0o755),
            ("log", 0o700),
            ("home", 0o700),
        ] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
            set_mode(&dir.path().join(sub), mode);
        }
        // The user reaches the maildrop through the spool: the way in must be open.
        set_mode(dir.path(), 0o755);
        std::fs::write(dir.path().join("ca.pem"), &ca.ca_pem).unwrap();
        let host = Host {
            token: idp.issue_access_token(),
            refresh: idp.issue_refresh_token(),
            dir,
            idp,
            smtp,
        };
        host.config("");
        host.seed_token(now() + 3600);
        // What the package's postinst makes.
        std::fs::create_dir(host.path("spool/maildrop")).unwrap();
        set_mode(&host.path("spool/maildrop"), 0o1733);
        host
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn config(&self, extra_top: &str) {
        let text = format!(
            "{extra_top}[aliases]\nroot = \"{OPS}\"\nnobody = \"{HELPDESK}\"\n\"*\" = \"{OPS}\"\n\n\
             [accounts.ops]\n\
             provider = \"microsoft\"\nemail = \"{OPS}\"\nclient_id = \"{CLIENT_ID}\"\n\
             token_url = \"{}\"\ndevice_code_url = \"{}\"\nsmtp_host = \"127.0.0.1\"\n\
             smtp_port = {}\ntls_ca_file = \"{}\"\n\
             notify_cmd = [\"sh\", \"-c\", \"env > '{}'\"]\n",
            self.idp.token_url_v2("contoso"),
            self.idp.device_code_url_v2("contoso"),
            self.smtp.port(),
            self.path("ca.pem").display(),
            self.path("notified.env").display(),
        );
        std::fs::write(self.path("etc/config.toml"), text).unwrap();
        set_mode(&self.path("etc/config.toml"), 0o600);
    }

    fn seed_token(&self, expires_at: u64) {
        let dir = self.path("lib/tokens");
        std::fs::create_dir_all(&dir).unwrap();
        set_mode(&dir, 0o700);
        let file = dir.join("ops.json");
        let token = json!({"access_token": self.token, "expires_at": expires_at,
                           "refresh_token": self.refresh, "obtained_at": now() - 60});
        std::fs::write(&file, serde_json::to_vec(&token).unwrap()).unwrap();
        set_mode(&file, 0o600);
    }

    /// The binary in the host's namespace, as `user` (root when `None`), with cron's
    /// bare environment: no XDG folders, a home without a config.
    fn command(&self, user: Option<u32>, args: &[&str]) -> Command {
        let exe = env!("CARGO_BIN_EXE_oauth2-sendmail");
        let mut cmd = Command::new("unshare");
        cmd.env_clear()
            .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
            .env("T", self.dir.path())
            .env(
                "HOME",
                if user.is_some() {
                    "/nonexistent".into()
                } else {
                    self.path("home")
                },
            )
            .env("OAUTH2_SENDMAIL_TEST_TIMEOUT_MS", "1500")
            .env("NS_EXE", exe)
            .args(["--mount", "sh", "-c", NAMESPACE, "sh", EXE_IN_NAMESPACE])
            .args(args);
        if let Some(uid) = user {
            cmd.env("NS_USER", uid.to_string());
        }
        cmd
    }

    fn run(&self, user: Option<u32>, args: &[&str], stdin: &str) -> Run {
        let run = run_command(self.command(user, args), stdin.as_bytes());
        for secret in [&self.token, &self.refresh] {
            run.assert_never_shows(secret);
        }
        run
    }

    fn maildrop(&self) -> Vec<String> {
        names_in(&self.path("spool/maildrop"))
    }

    fn queued(&self) -> Vec<String> {
        names_in(&self.path("spool/queue"))
            .into_iter()
            .filter(|n| Path::new(n).extension().is_some_and(|e| e == "mail"))
            .collect()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("log/log")).unwrap_or_default()
    }

    /// `--system login ops --flow devicecode` as an admin does it: the code shown on stderr
    /// is approved at the fake identity platform as the account's mailbox.
    fn login_devicecode(&self) -> Run {
        use std::io::BufRead as _;
        self.idp.sign_in_as(Some(OPS));
        let start = std::time::Instant::now();
        let mut child = self
            .command(None, &["--system", "login", "ops", "--flow", "devicecode"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = String::new();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        for line in lines.by_ref() {
            let line = line.unwrap();
            stderr.push_str(&line);
            stderr.push('\n');
            if line.contains("enter the code") {
                let code = self.idp.last_user_code().unwrap();
                assert!(line.contains(&code), "{line}");
                self.idp.decide_user_code(&code, true);
                break;
            }
        }
        for line in lines {
            stderr.push_str(&line.unwrap());
            stderr.push('\n');
        }
        let out = child.wait_with_output().unwrap();
        let run = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
            elapsed: start.elapsed(),
        };
        for secret in [&self.token, &self.refresh] {
            run.assert_never_shows(secret);
        }
        run
    }

    /// Writes a maildrop entry as `uid` would (the file's owner set to `uid`).
    fn plant(&self, name: &str, contents: &[u8], uid: u32) -> PathBuf {
        let path = self.path("spool/maildrop").join(name);
        std::fs::write(&path, contents).unwrap();
        std::os::unix::fs::chown(&path, Some(uid), Some(uid)).unwrap();
        set_mode(&path, 0o600);
        path
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = read
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// A maildrop entry in the format the drop writes.
fn entry(uid: u32, args: &[&str], message: &str) -> Vec<u8> {
    let header = json!({"version": 1, "uid": uid, "args": args, "size": message.len()});
    let mut bytes = serde_json::to_vec(&header).unwrap();
    bytes.push(b'\n');
    bytes.extend_from_slice(message.as_bytes());
    bytes
}

const CRON_MAIL: &str =
    "From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@vm> test\n\nhello\n";

#[test]
fn roots_cron_mail_goes_out_at_once_with_the_system_account_and_its_aliases() {
    if !namespaces_work() {
        return;
    }
    let host = Host::new(Behaviour::default());
    let run = host.run(
        None,
        &["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"],
        CRON_MAIL,
    );
    run.assert_silent_success();
    let deliveries = host.smtp.deliveries();
    assert_eq!(deliveries.len(), 1, "{:?}", host.smtp.transcript());
    assert_eq!(deliveries[0].rcpts, [OPS]);
    assert_eq!(deliveries[0].from, OPS);
    let data = String::from_utf8_lossy(&deliveries[0].data);
    // Cron's From without a domain follows rewrite_from (if-missing): the account's address.
    assert!(
        data.contains(&format!("From: CronDaemon <{OPS}>")),
        "{data}"
    );
    assert!(host.log().contains("result=sent"), "{}", host.log());
    assert!(host.queued().is_empty());
}

#[test]
fn a_users_message_waits_in_the_maildrop_owned_by_them_and_the_root_flusher_sends_it() {
    if !namespaces_work() {
        return;
    }
    let host = Host::new(Behaviour::default());
    let run = host.run(
        Some(NOBODY),
        &["-i", "root"],
        "Subject: from nobody\n\nhi\n",
    );
    run.assert_silent_success();
    assert!(host.smtp.deliveries().is_empty(), "the user never sends");
    let dropped = host.maildrop();
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    assert!(dropped[0].starts_with("65534."), "{dropped:?}");
    let meta = std::fs::metadata(host.path("spool/maildrop").join(&dropped[0])).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (NOBODY, 0o600));

    let flush = host.run(None, &["--system", "-q"], "");
    flush.assert_silent_success();
    assert!(host.maildrop().is_empty(), "{:?}", host.maildrop());
    let deliveries = host.smtp.deliveries();
    assert_eq!(deliveries.len(), 1, "{:?}", host.smtp.transcript());
    assert_eq!(deliveries[0].rcpts, [OPS]);
    assert_eq!(deliveries[0].from, OPS);
    assert!(host.queued().is_empty());
    let log = host.log();
    assert!(
        log.contains("result=picked-up") && log.contains("submitter=nobody uid=65534"),
        "{log}"
    );
    assert!(log.contains("result=sent"), "{log}");
}

#[test]
fn an_unprivileged_user_never_reads_the_system_account() {
    if !namespaces_work() {
        return;
    }
    let host = Host::new(Behaviour::default());
    let status = host.run(Some(NOBODY), &["status"], "");
    let line = status.assert_failure(77);
    assert!(
        line.contains("sudo oauth2-sendmail --system status"),
        "{line}"
    );
    let system = host.run(Some(NOBODY), &["--system", "status"], "");
    let line = system.assert_failure(77);
    assert!(line.contains("only root"), "{line}");
    let token = host.run(Some(NOBODY), &["token"], "");
    token.assert_failure(77);
    let mailq = host.run(Some(NOBODY), &["-bp"], "");
    mailq.assert_failure(77);
    let flush = host.run(Some(NOBODY), &["-q"], "");
    flush.assert_failure(77);
    let dry = host.run(Some(NOBODY), &["--dry-run", "-i", "root"], CRON_MAIL);
    dry.assert_failure(77);
    assert!(host.maildrop().is_empty(), "nothing was dropped by these");
}

#[test]
fn a_system_config_others_can_write_is_refused_with_the_fix() {
    if !namespaces_work() {
        return;
    }
    let host = Host::new(Behaviour::default());
    set_mode(&host.path("etc/config.toml"), 0o666);
    let run = host.run(None, &["-i", "root"], CRON_MAIL);
    let line = run.assert_failure(78);
    assert!(
        line.contains("chmod go-w /etc/oauth2-sendmail/config.toml"),
        "{line}"
    );
    set_mode(&host.path("etc/config.toml"), 0o600);
    set_mode(&host.path("etc"), 0o777);
    let run = host.run(None, &["--system", "status"], "");
    let line = run.assert_failure(78);
    assert!(line.contains("system config folder"), "{line}");
    // No config yet (a fresh install): `--system` words say so when they read it.
    set_mode(&host.path("etc"), 0o700);
    std::fs::remove_file(host.path("etc/config.toml")).unwrap();
    let run = host.run(None, &["--system", "status"], "");
    let line = run.assert_failure(78);
    assert!(
        line.contains("cannot read config /etc/oauth2-sendmail/config.toml"),
        "{line}"
    );
    assert!(host.smtp.deliveries().is_empty());
}

#[test]
fn a_loose_maildrop_or_token_folder_is_refused() {
    if !namespaces_work() {
        return;
    }
    let host = Host::new(Behaviour::default());
    // Without the sticky bit, any user could remove or replace another's message.
    set_mode(&host.path("spool/maildrop"), 0o777);
    let run = host.run(None, &["--system", "-q"], "");
    let line = run.assert_failure(74);
    assert!(line.contains("chmod 1733"), "{line}");
    set_mode(&host.path("spool/maildrop"), 0o1733);
    set_mode(&host.path("lib/tokens"), 0o777);
    let run = host.run(None, &["-i", "root"], CRON_MAIL);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("may be written by others"), "{run:?}");
}

#[test]
fn a_users_own_config_still_wins_for_that_user() {
    if !namespaces_work() {
        return;
    }
    let host = Host::new(Behaviour::default());
    // Root's own config (in its home) names another server: root's mail goes there.
    let own = host.path("home/.config/oauth2-sendmail");
    std::fs::create_dir_all(&own).unwrap();
    std::fs::write(
        own.join("config.toml"),
        "[accounts.mine]\nemail = \"me@contoso.com\"\nsmtp_host = \"127.0.0.1\"\nsmtp_port = 1\n",
    )
    .unwrap();
    let run = host.run(None, &["--dry-run", "-i", "x@fabrikam.example"], CRON_MAIL);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("account: mine"), "{}", run.stdout);
    // And -C means what it says.
    let run = host.run(
        None,
        &[
            "-C",
            "/etc/oauth2-sendmail/config.toml",
            "--dry-run",
            "-i",
            "root",
        ],
        CRON_MAIL,
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("account: ops"), "{}", run.stdout);
}

#[test]
fn hostile_maildrop_entries_are_refused_and_nothing_of_roots_is_read_or_sent() {
    if !namespaces_work() {
        return;
    }
    let host = Host::new(Behaviour::default());
    let secret = host.path("root-secret");
    std::fs::write(&secret, "Subject: root's secret\n\nSECRET-ROOT-CONTENT\n").unwrap();
    set_mode(&secret, 0o600);
    let drop_dir = host.path("spool/maildrop");
    // A symlink to a root file.
    std::os::unix::fs::symlink(&secret, drop_dir.join("65534.1.1.1.link")).unwrap();
    // A hard link to a root file, named as root's own entry.
    std::fs::hard_link(&secret, drop_dir.join("0.1.1.1.hard")).unwrap();
    // A file of another owner than the uid it names.
    host.plant(
        "1000.1.1.1.other",
        &entry(1000, &["--", "x@fabrikam.example"], "Subject: a\n\nb\n"),
        NOBODY,
    );
    // A header claiming another uid than its name and owner.
    host.plant(
        "65534.1.1.1.claim",
        &entry(0, &["--", "x@fabrikam.example"], "Subject: a\n\nb\n"),
        NOBODY,
    );
    // A partial file (the size says more than is there).
    let mut partial = entry(
        NOBODY,
        &["--", "x@fabrikam.example"],
        "Subject: a\n\nbody\n",
    );
    partial.truncate(partial.len() - 3);
    host.plant("65534.1.1.1.partial", &partial, NOBODY);
    // An oversized file (sparse: no disk used).
    let big = drop_dir.join("65534.1.1.1.big");
    let file = std::fs::File::create(&big).unwrap();
    file.set_len(65 * 1024 * 1024 + 1).unwrap();
    std::os::unix::fs::chown(&big, Some(NOBODY), Some(NOBODY)).unwrap();
    // A folder (it cannot be unlinked; it must not stay to fire the path unit forever).
    std::fs::create_dir(drop_dir.join("65534.1.1.1.dir")).unwrap();
    std::os::unix::fs::chown(drop_dir.join("65534.1.1.1.dir"), Some(NOBODY), Some(NOBODY)).unwrap();
    // A FIFO (opening it must not block the flusher).
    let fifo = drop_dir.join("65534.1.1.1.fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    // A config file of root's named in the entry's own command line.
    host.plant(
        "65534.1.1.1.minusc",
        &entry(
            NOBODY,
            &[
                "-C",
                "/tmp/evil.toml",
                "-X",
                "/etc/shadow",
                "--",
                "x@fabrikam.example",
            ],
            "Subject: ok\n\nfine\n",
        ),
        NOBODY,
    );

    let run = host.run(None, &["--system", "-q"], "");
    assert_eq!(run.code, 0, "{run:?}");
    assert!(host.maildrop().is_empty(), "{:?}", host.maildrop());
    // Only the well-formed entry went out; root's file is untouched and never sent.
    let deliveries = host.smtp.deliveries();
    assert_eq!(deliveries.len(), 1, "{:?}", host.smtp.transcript());
    assert_eq!(deliveries[0].rcpts, ["x@fabrikam.example"]);
    assert!(!String::from_utf8_lossy(&deliveries[0].data).contains("SECRET"));
    assert_eq!(
        std::fs::read_to_string(&secret).unwrap(),
        "Subject: root's secret\n\nSECRET-ROOT-CONTENT\n"
    );
    assert_eq!(std::fs::metadata(&secret).unwrap().nlink(), 1);
    let log = host.log();
    for reason in [
        "a symbolic link",
        "2 hard links",
        "owned by uid 65534 but named for uid 1000",
        "says uid 0 but is named for uid 65534",
        "incomplete",
        "more than the maildrop takes",
        "not a regular file",
    ] {
        assert!(log.contains(reason), "{reason}: {log}");
    }
    assert!(!log.contains("SECRET"), "{log}");
}

#[test]
fn a_flood_of_maildrop_files_is_taken_in_bounded_runs() {
    if !namespaces_work() {
        return;
    }
    let host = Host::new(Behaviour::default());
    for i in 0..1100 {
        host.plant(&format!("65534.{i}.0.0.junk"), b"junk", NOBODY);
    }
    let run = host.run(None, &["--system", "-q"], "");
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(host.maildrop().len(), 100, "one run looks at 1000 entries");
    let run = host.run(None, &["--system", "-q"], "");
    assert_eq!(run.code, 0, "{run:?}");
    assert!(host.maildrop().is_empty());
    assert!(host.smtp.deliveries().is_empty());
}

#[test]
fn a_dead_login_keeps_the_mail_notifies_and_status_says_77_until_login() {
    if !namespaces_work() {
        return;
    }
    let host = Host::new(Behaviour::default());
    host.seed_token(now() - 10);
    host.idp.set_failure(Some(Failure::invalid_grant(700_082)));
    let run = host.run(None, &["-FCronDaemon", "-i", "-oem", "root"], CRON_MAIL);
    run.assert_silent_success();
    assert_eq!(host.queued().len(), 1, "kept in the system queue");
    let notified = super::support::wait_for_line(&host.path("notified.env"));
    assert!(notified.contains("ops"), "{notified}");
    let status = host.run(None, &["--system", "status"], "");
    assert_eq!(status.code, 77, "{status:?}");
    // A user's message waits too.
    host.run(Some(NOBODY), &["-i", "root"], "Subject: u\n\nx\n")
        .assert_silent_success();
    let flush = host.run(None, &["--system", "-q"], "");
    assert_eq!(flush.code, 77, "{flush:?}");
    assert_eq!(host.queued().len(), 2);
    // The admin signs in again with the device code, and the login sends what waited.
    host.idp.set_failure(None);
    let login = host.login_devicecode();
    assert_eq!(login.code, 0, "{login:?}");
    assert_eq!(host.smtp.deliveries().len(), 2, "{login:?}");
    assert!(host.queued().is_empty());
    let stored = std::fs::metadata(host.path("lib/tokens/ops.json")).unwrap();
    assert_eq!((stored.uid(), stored.mode() & 0o777), (0, 0o600));
    let status = host.run(None, &["--system", "status"], "");
    assert_eq!(status.code, 0, "{status:?}");
    assert!(host.log().contains("result=sent"));
    let check = host.run(None, &["--system", "check"], "");
    assert_eq!(check.code, 0, "{check:?}");
    let logout = host.run(None, &["--system", "logout", "ops"], "");
    assert_eq!(logout.code, 0, "{logout:?}");
    assert!(!host.path("lib/tokens/ops.json").exists());
    let status = host.run(None, &["--system", "status"], "");
    assert_eq!(status.code, 77, "{status:?}");
}

#[test]
fn a_users_message_refused_for_good_is_kept_and_a_notice_goes_to_their_alias() {
    if !namespaces_work() {
        return;
    }
    let host = Host::new(
        Behaviour::default().refuse_rcpt("gone@fabrikam.example", "550 5.1.1 User unknown"),
    );
    host.run(
        Some(NOBODY),
        &["-i", "gone@fabrikam.example"],
        "Subject: lost\n\nx\n",
    )
    .assert_silent_success();
    let flush = host.run(None, &["--system", "-q"], "");
    assert_eq!(flush.code, 69, "{flush:?}");
    assert!(flush.stderr.contains("550 5.1.1"), "{flush:?}");
    let failed: Vec<String> = names_in(&host.path("spool/queue/failed"))
        .into_iter()
        .filter(|n| Path::new(n).extension().is_some_and(|e| e == "mail"))
        .collect();
    assert_eq!(failed.len(), 1, "kept in failed/");
    // The notice went out in the same flush, from the system account to nobody's alias.
    let deliveries = host.smtp.deliveries();
    assert_eq!(deliveries.len(), 1, "{:?}", host.smtp.transcript());
    assert_eq!(deliveries[0].rcpts, [HELPDESK]);
    let notice = String::from_utf8_lossy(&deliveries[0].data);
    for want in [
        "Subject: Undelivered mail on ",
        "550 5.1.1 User unknown",
        "submitted by: nobody",
        "gone@fabrikam.example",
        "oauth2-sendmail --system queue list",
        "Auto-Submitted: auto-generated",
    ] {
        assert!(notice.contains(want), "{want}: {notice}");
    }
    assert!(host.queued().is_empty(), "{:?}", host.queued());
    let log = host.log();
    assert!(
        log.contains("result=failed") && log.contains("notice="),
        "{log}"
    );
    // The admin's notify_cmd heard of it too.
    let notified = super::support::wait_for_line(&host.path("notified.env"));
    assert!(
        notified.contains("OAUTH2_SENDMAIL_ACCOUNT=ops")
            && notified.contains("failed for good: ")
            && notified.contains("550 5.1.1"),
        "{notified}"
    );
}

#[test]
fn a_dropped_message_the_system_config_refuses_is_held_and_its_sender_told() {
    if !namespaces_work() {
        return;
    }
    let host = Host::new(Behaviour::default());
    for _ in 0..3 {
        host.run(Some(NOBODY), &["-i", "not valid@"], "Subject: x\n\ny\n")
            .assert_silent_success();
    }
    let flush = host.run(None, &["--system", "-q"], "");
    assert_eq!(flush.code, 0, "{flush:?}");
    assert!(host.maildrop().is_empty());
    let held = names_in(&host.path("spool/held"));
    assert_eq!(held.len(), 3, "{held:?}");
    // One notice per user and run, however many were held.
    assert!(held[0].starts_with("65534."), "{held:?}");
    let deliveries = host.smtp.deliveries();
    assert_eq!(deliveries.len(), 1, "{:?}", host.smtp.transcript());
    assert_eq!(deliveries[0].rcpts, [HELPDESK]);
    let notice = String::from_utf8_lossy(&deliveries[0].data);
    assert!(
        notice.contains("Subject: Unsent mail on ")
            && notice.contains("not valid@")
            && held
                .iter()
                .any(|h| notice.contains(&format!("/var/spool/oauth2-sendmail/held/{h}"))),
        "{notice}"
    );
    assert!(host.log().contains("result=held"), "{}", host.log());
}

#[test]
fn roots_cron_mail_refused_for_good_is_kept_and_root_is_told() {
    if !namespaces_work() {
        return;
    }
    let host = Host::new(
        Behaviour::default().refuse_rcpt("gone@fabrikam.example", "550 5.1.1 User unknown"),
    );
    let run = host.run(
        None,
        &["-FCronDaemon", "-i", "-oem", "gone@fabrikam.example"],
        CRON_MAIL,
    );
    run.assert_silent_success();
    let failed = names_in(&host.path("spool/queue/failed"));
    assert!(
        failed
            .iter()
            .any(|n| Path::new(n).extension().is_some_and(|e| e == "mail")),
        "{failed:?}"
    );
    assert!(host.smtp.deliveries().is_empty());
    // The notice waits in the system queue for the next flush (the timer's).
    let flush = host.run(None, &["--system", "-q"], "");
    assert_eq!(flush.code, 0, "{flush:?}");
    let deliveries = host.smtp.deliveries();
    assert_eq!(deliveries.len(), 1, "{:?}", host.smtp.transcript());
    assert_eq!(deliveries[0].rcpts, [OPS]);
    let notice = String::from_utf8_lossy(&deliveries[0].data);
    assert!(
        notice.contains("550 5.1.1 User unknown") && notice.contains("submitted by: root"),
        "{notice}"
    );
    // Without -oem the caller keeps the message: sendmail's exit code, nothing kept.
    let run = host.run(None, &["-i", "gone@fabrikam.example"], CRON_MAIL);
    assert_eq!(run.code, 67, "{run:?}");
    assert_eq!(names_in(&host.path("spool/queue/failed")), failed);
}

#[test]
fn a_complete_temporary_file_whose_rename_a_crash_lost_is_still_sent() {
    if !namespaces_work() {
        return;
    }
    let host = Host::new(Behaviour::default());
    let ago = |secs: u64| std::time::SystemTime::now() - std::time::Duration::from_secs(secs);
    let age = |path: &Path, secs: u64| {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(ago(secs))
            .unwrap();
    };
    let whole = entry(
        NOBODY,
        &["--", "lost@fabrikam.example"],
        "Subject: a\n\nb\n",
    );
    // Fsynced before a crash that lost its rename, 20 minutes ago: taken.
    let lost = host.plant(".65534.1.1.1.lost.tmp", &whole, NOBODY);
    age(&lost, 1200);
    // Being written right now: left alone.
    let young = host.plant(".65534.1.1.1.young.tmp", &whole, NOBODY);
    // Its writer died half way, an hour ago: left (removed after a day), never sent.
    let mut half = whole.clone();
    half.truncate(whole.len() - 2);
    let died = host.plant(".65534.1.1.1.died.tmp", &half, NOBODY);
    age(&died, 3600);
    // Its writer died two days ago: removed.
    let old = host.plant(".65534.1.1.1.old.tmp", &half, NOBODY);
    age(&old, 2 * 86_400);

    let run = host.run(None, &["--system", "-q"], "");
    assert_eq!(run.code, 0, "{run:?}");
    let deliveries = host.smtp.deliveries();
    assert_eq!(deliveries.len(), 1, "{:?}", host.smtp.transcript());
    assert_eq!(deliveries[0].rcpts, ["lost@fabrikam.example"]);
    assert!(!lost.exists() && !old.exists());
    assert!(young.exists() && died.exists());
}

#[test]
fn a_broken_system_config_still_empties_the_maildrop_and_sends_once_fixed() {
    if !namespaces_work() {
        return;
    }
    let host = Host::new(Behaviour::default());
    host.run(Some(NOBODY), &["-i", "root"], "Subject: u\n\nx\n")
        .assert_silent_success();
    std::fs::write(host.path("etc/config.toml"), "[accounts.ops\n").unwrap();
    let flush = host.run(None, &["--system", "-q"], "");
    flush.assert_failure(78);
    // Nothing is left for the path unit to fire on again and again; the copy is root's.
    assert!(host.maildrop().is_empty(), "{:?}", host.maildrop());
    let incoming = names_in(&host.path("spool/incoming"));
    assert_eq!(incoming.len(), 1, "{incoming:?}");
    let copy = std::fs::metadata(host.path("spool/incoming").join(&incoming[0])).unwrap();
    assert_eq!((copy.uid(), copy.mode() & 0o777), (0, 0o600));
    host.config("");
    let flush = host.run(None, &["--system", "-q"], "");
    flush.assert_silent_success();
    assert_eq!(host.smtp.deliveries().len(), 1);
    assert!(names_in(&host.path("spool/incoming")).is_empty());
}

#[test]
fn a_users_dash_t_message_keeps_its_recipients_and_loses_its_bcc_through_the_maildrop() {
    if !namespaces_work() {
        return;
    }
    let host = Host::new(Behaviour::default());
    let message = "From: nobody\nTo: Ann <ann@fabrikam.example>\nCc: root\n\
                   Bcc: hidden@fabrikam.example\nSubject: caf\u{e9}\n\n8-bit body: \u{e9}\n";
    host.run(Some(NOBODY), &["-t", "-i", "-FBackup Job"], message)
        .assert_silent_success();
    host.run(None, &["--system", "-q"], "")
        .assert_silent_success();
    let deliveries = host.smtp.deliveries();
    assert_eq!(deliveries.len(), 1, "{:?}", host.smtp.transcript());
    let mut rcpts = deliveries[0].rcpts.clone();
    rcpts.sort();
    assert_eq!(
        rcpts,
        ["ann@fabrikam.example", "hidden@fabrikam.example", OPS]
    );
    let data = String::from_utf8_lossy(&deliveries[0].data);
    assert!(
        !data.contains("Bcc:") && !data.contains("hidden@"),
        "{data}"
    );
    assert!(data.contains("8-bit body: \u{e9}"), "{data}");
    // A daemon's From without a domain follows rewrite_from: the account's, with -F's name.
    assert!(
        data.contains(&format!("From: Backup Job <{OPS}>")),
        "{data}"
    );
}
