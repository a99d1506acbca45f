//! Who can fix a failed send decides what becomes of the message (the contract's
//! "Failures and the queue"), with the callers' exact flag sets: mail programs keep a
//! message whose send failed, cron cannot and says so with `-oem`. For each failure
//! class: the exit code, stderr, the queue, what the server received, and whether
//! `notify_cmd` ran (a command that records its environment). Also the log, `status`,
//! `queue flush` against `-q`, the flush after `login`, and the 30-day renewal.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::fake_idp::{Failure, FakeIdp};
use super::fake_smtp::{AfterData, Behaviour, FakeSmtp};
use super::support::{self, Run, Sandbox, TestCa, now, run_command};

const CLIENT_ID: &str = "11111111-2222-3333-4444-555555555555";
const BOB: &str = "bob@example.org";
const MESSAGE: &str = "From: alice@contoso.com\nTo: bob@example.org\nSubject: hi\n\nbody\n";

/// Emacs message-mode: keeps the message on failure.
const EMACS: &[&str] = &["-oi", "--read-envelope-from", "-t"];
/// mutt: keeps the message on failure.
const MUTT: &[&str] = &["-oi", "--", BOB];
/// Debian cron: cannot keep it.
const DEBIAN_CRON: &[&str] = &["-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"];
/// cronie: cannot keep it.
const CRONIE: &[&str] = &[
    "-FCronDaemon",
    "-i",
    "-odi",
    "-oem",
    "-oi",
    "-t",
    "-f",
    "root",
];

const MAIL_PROGRAMS: [&[&str]; 2] = [EMACS, MUTT];
const CRONS: [&[&str]; 2] = [DEBIAN_CRON, CRONIE];

/// One account `work` on the fake SMTP server and token endpoint, `queue = "on-failure"`
/// (the default), a `notify_cmd` that writes its environment to a file, and a cached
/// token the server accepts.
struct World {
    sandbox: Sandbox,
    idp: FakeIdp,
    smtp: FakeSmtp,
    ca_file: PathBuf,
    token: String,
    refresh: String,
}

impl World {
    fn new(behaviour: Behaviour) -> World {
        World::build(behaviour, true, "")
    }

    fn build(behaviour: Behaviour, accept_issued: bool, extra: &str) -> World {
        let ca = TestCa::new();
        let idp = FakeIdp::start(&ca);
        let behaviour = if accept_issued {
            behaviour.accept_tokens(&idp.valid_access_tokens())
        } else {
            Behaviour {
                accept: std::sync::Arc::new(|_, _| false),
                ..behaviour
            }
        };
        let smtp = FakeSmtp::start(&ca, behaviour);
        let sandbox = Sandbox::new();
        let ca_file = sandbox.write_file("ca.pem", &ca.ca_pem);
        let world = World {
            token: idp.issue_access_token(),
            refresh: idp.issue_refresh_token(),
            sandbox,
            idp,
            smtp,
            ca_file,
        };
        world.config(extra);
        world.sandbox.seed_token(
            "work",
            &json!({
                "access_token": world.token,
                "expires_at": now() + 3600,
                "refresh_token": world.refresh,
                "obtained_at": now() - 60,
            }),
        );
        world
    }

    fn config(&self, extra: &str) {
        self.config_with("", extra);
    }

    /// `top` lines before any table, `extra` lines for the account.
    fn config_with(&self, top: &str, extra: &str) {
        self.sandbox.write_config(&format!(
            "{top}[aliases]\nroot = \"{BOB}\"\n\n[accounts.work]\nprovider = \"microsoft\"\n\
             email = \"alice@contoso.com\"\nfrom = [\"*@contoso.com\"]\nclient_id = \"{CLIENT_ID}\"\n\
             token_url = \"{}\"\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\ntls_ca_file = \"{}\"\n\
             notify_cmd = [\"sh\", \"-c\", \"env > '{}'\"]\n{extra}",
            self.idp.token_url_v2("contoso"),
            self.smtp.port(),
            self.ca_file.display(),
            self.notified_file().display(),
        ));
    }

    fn notified_file(&self) -> PathBuf {
        self.sandbox.path().join("notified.env")
    }

    /// The environment `notify_cmd` ran with (it runs detached, so this waits for its whole
    /// output, up to 20 s); the file is removed, and so is the memory of the notice, as if
    /// the hour in which the same notice is not given again had passed.
    fn take_notification(&self) -> String {
        let text = support::wait_for_line(&self.notified_file());
        std::fs::remove_file(self.notified_file()).unwrap();
        self.forget_notices();
        text
    }

    /// Forgets which notices were given (each is given once an hour at most).
    fn forget_notices(&self) {
        let _ = std::fs::remove_file(
            self.sandbox
                .path()
                .join("state/oauth2-sendmail/notices.json"),
        );
    }

    /// True when no `notify_cmd` ran, allowing a detached one half a second to show.
    fn no_notification(&self) -> bool {
        std::thread::sleep(std::time::Duration::from_millis(500));
        !self.notified_file().exists()
    }

    /// An expired access token whose refresh the token endpoint refuses (AADSTS700082).
    fn dead_refresh_token(&self) {
        self.sandbox.seed_token(
            "work",
            &json!({"access_token": "at-expired", "expires_at": now() - 10,
                    "refresh_token": self.refresh, "obtained_at": now() - 3600}),
        );
        self.idp.set_failure(Some(Failure::invalid_grant(700_082)));
    }

    fn run(&self, args: &[&str], stdin: &str) -> Run {
        let mut cmd = self.sandbox.command(args);
        cmd.env("OAUTH2_SENDMAIL_TEST_TIMEOUT_MS", "1500");
        let run = run_command(cmd, stdin.as_bytes());
        for secret in [&self.token, &self.refresh] {
            run.assert_never_shows(secret);
        }
        run
    }

    fn queue_dir(&self) -> PathBuf {
        self.sandbox.path().join("state/oauth2-sendmail/queue")
    }

    fn queued(&self) -> Vec<String> {
        ids_in(&self.queue_dir())
    }

    fn list(&self) -> String {
        let run = self.run(&["queue", "list"], "");
        assert_eq!(run.code, 0, "{run:?}");
        run.stdout
    }

    fn clear_queue(&self) {
        let _ = std::fs::remove_dir_all(self.queue_dir());
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.sandbox.path().join("state/oauth2-sendmail/log"))
            .unwrap_or_default()
    }

    /// Makes every queued entry's next attempt lie in the future (a back-off).
    fn back_off_all(&self) {
        for id in self.queued() {
            let state = json!({"attempts": 1, "next_attempt": now() + 3000,
                               "last_error": "451 4.3.0 try later"});
            std::fs::write(
                self.queue_dir().join(format!("{id}.state")),
                serde_json::to_vec(&state).unwrap(),
            )
            .unwrap();
        }
    }
}

fn ids_in(dir: &Path) -> Vec<String> {
    let Ok(read) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = read
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".mail").map(str::to_owned))
        .filter(|n| !n.starts_with('.'))
        .collect();
    ids.sort();
    ids
}

fn env_var<'a>(env: &'a str, name: &str) -> Option<&'a str> {
    env.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
}

// ---- clears by itself ---------------------------------------------------------------

#[test]
fn a_4xx_is_queued_silently_for_every_caller_with_the_attempt_and_the_reply() {
    let w = World::new(Behaviour {
        end_reply: Some("451 4.3.0 Mail server temporarily rejected message".into()),
        ..Behaviour::default()
    });
    for caller in MAIL_PROGRAMS.into_iter().chain(CRONS) {
        w.run(caller, MESSAGE).assert_silent_success();
        assert_eq!(w.queued().len(), 1, "{caller:?}");
        let list = w.list();
        assert!(list.contains("attempts 1"), "{caller:?}: {list}");
        assert!(
            list.contains("451 4.3.0 Mail server temporarily rejected"),
            "{list}"
        );
        assert!(list.contains("next try in"), "{list}");
        assert!(w.no_notification(), "{caller:?}: no one needs telling");
        w.clear_queue();
    }
    assert!(w.smtp.deliveries().is_empty());
    assert!(w.log().contains("result=queued"), "{}", w.log());
}

// ---- needs the user -----------------------------------------------------------------

#[test]
fn a_dead_refresh_token_exits_77_for_mail_programs_and_queues_nothing() {
    let w = World::new(Behaviour::default());
    w.dead_refresh_token();
    for caller in MAIL_PROGRAMS {
        let run = w.run(caller, MESSAGE);
        let line = run.assert_failure(77);
        assert!(line.contains("oauth2-sendmail login work"), "{line}");
        assert!(line.contains("AADSTS700082"), "{line}");
        assert!(
            w.queued().is_empty(),
            "{caller:?}: the mail program keeps it"
        );
        let env = w.take_notification();
        assert_eq!(env_var(&env, "OAUTH2_SENDMAIL_ACCOUNT"), Some("work"));
        assert!(env_var(&env, "OAUTH2_SENDMAIL_REASON").is_some_and(|r| r.contains("login work")));
    }
    assert_eq!(
        w.smtp.connections(),
        2,
        "connected while the token was tried"
    );
    assert!(w.smtp.auth_attempts().is_empty(), "no token was sent");
    assert!(w.smtp.deliveries().is_empty());
}

#[test]
fn a_dead_refresh_token_is_queued_for_cron_with_exit_0_and_notify_cmd() {
    let w = World::new(Behaviour::default());
    w.dead_refresh_token();
    // `-oee` ("mail back, exit zero") says the same as cron's `-oem`.
    for caller in CRONS.into_iter().chain([&["-oee", "-i", BOB][..]]) {
        w.run(caller, MESSAGE).assert_silent_success();
        assert_eq!(w.queued().len(), 1, "{caller:?}");
        let list = w.list();
        assert!(list.contains("attempts 1"), "{list}");
        assert!(list.contains("AADSTS700082"), "{list}");
        let env = w.take_notification();
        assert_eq!(env_var(&env, "OAUTH2_SENDMAIL_ACCOUNT"), Some("work"));
        assert!(
            env_var(&env, "OAUTH2_SENDMAIL_REASON").is_some_and(|r| r.contains("AADSTS700082"))
        );
        w.clear_queue();
    }
    assert!(w.smtp.deliveries().is_empty());
}

#[test]
fn queue_never_hands_a_needed_login_back_even_to_cron() {
    let w = World::new(Behaviour::default());
    w.config("queue = \"never\"\n");
    w.dead_refresh_token();
    let line = w.run(DEBIAN_CRON, MESSAGE).assert_failure(77).to_owned();
    assert!(line.contains("oauth2-sendmail login work"), "{line}");
    assert!(w.queued().is_empty());
    w.take_notification();
}

#[test]
fn refused_authentication_needs_the_user_not_the_queue() {
    let w = World::build(Behaviour::default(), false, "");
    let run = w.run(MUTT, MESSAGE);
    let line = run.assert_failure(77);
    assert!(line.contains("535 5.7.3"), "{line}");
    assert!(w.queued().is_empty());
    w.take_notification();
    w.run(DEBIAN_CRON, MESSAGE).assert_silent_success();
    assert_eq!(w.queued().len(), 1);
    assert!(w.list().contains("535 5.7.3"));
    w.take_notification();
    assert!(w.smtp.deliveries().is_empty());
}

// ---- permanent ----------------------------------------------------------------------

#[test]
fn a_permanent_refusal_is_never_queued_whoever_calls() {
    let w = World::new(
        Behaviour {
            end_reply: Some("554 5.6.0 Message content rejected".into()),
            ..Behaviour::default()
        }
        .refuse_rcpt("nobody@example.org", "550 5.1.1 User unknown"),
    );
    for caller in MAIL_PROGRAMS.into_iter().chain(CRONS) {
        let line = w.run(caller, MESSAGE).assert_failure(69).to_owned();
        assert!(
            line.contains("554 5.6.0 Message content rejected"),
            "{line}"
        );
        assert!(w.queued().is_empty(), "{caller:?}");
        assert!(w.no_notification());
    }
    let run = w.run(&["-oem", "-i", "nobody@example.org"], MESSAGE);
    assert!(run.assert_failure(67).contains("550 5.1.1"));
    assert!(w.queued().is_empty());
    assert!(w.smtp.deliveries().is_empty());
}

// ---- uncertain ----------------------------------------------------------------------

/// The server took the whole message, then closed (BDAT path) or never answered (DATA
/// path): it may have delivered it.
fn uncertain_worlds() -> [World; 2] {
    [
        World::new(Behaviour {
            after_data: AfterData::Close,
            ..Behaviour::default()
        }),
        World::new(Behaviour {
            after_data: AfterData::Silent,
            chunking: false,
            ..Behaviour::default()
        }),
    ]
}

#[test]
fn a_lost_reply_after_the_data_exits_75_may_have_been_delivered_for_mail_programs() {
    for w in uncertain_worlds() {
        for caller in MAIL_PROGRAMS {
            let run = w.run(caller, MESSAGE);
            let line = run.assert_failure(75);
            assert!(line.contains("may have been delivered"), "{line}");
            assert!(!line.contains("nothing was sent"), "{line}");
            assert!(
                w.queued().is_empty(),
                "{caller:?}: a resend may duplicate it"
            );
            assert!(w.no_notification());
        }
        assert_eq!(w.smtp.deliveries().len(), 2, "the server received both");
    }
}

#[test]
fn a_lost_reply_after_the_data_is_queued_for_cron() {
    for w in uncertain_worlds() {
        for caller in CRONS {
            w.run(caller, MESSAGE).assert_silent_success();
            assert_eq!(w.queued().len(), 1, "{caller:?}: at least once");
            assert!(w.list().contains("may have been delivered"));
            w.clear_queue();
        }
        assert_eq!(w.smtp.deliveries().len(), 2);
    }
}

// ---- the log ------------------------------------------------------------------------

#[test]
fn the_log_is_on_by_default_rfc3339_one_line_per_outcome_private_and_secret_free() {
    use std::os::unix::fs::PermissionsExt;
    let w = World::new(Behaviour::default());
    w.run(MUTT, MESSAGE).assert_silent_success();
    w.run(&["-odq", "-i", BOB], MESSAGE).assert_silent_success();
    let log = w.log();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    for line in &lines {
        let time = line.split(' ').next().unwrap();
        // 2026-11-22T23:14:05Z
        assert_eq!(time.len(), 20, "{line}");
        assert!(time.ends_with('Z') && &time[10..11] == "T", "{line}");
        assert!(!line.contains(&w.token) && !line.contains(&w.refresh));
    }
    assert!(lines[0].contains("account=work from=<alice@contoso.com> recipients=bob@example.org"));
    assert!(
        lines[0].contains("result=sent reply=\"250 2.0.0 OK"),
        "{log}"
    );
    assert!(lines[1].contains("result=queued id="), "{log}");
    let state = w.sandbox.path().join("state");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state.join("oauth2-sendmail/log")), 0o600);
    assert_eq!(mode(&state.join("oauth2-sendmail")), 0o700);
}

#[test]
fn the_log_is_created_private_whatever_the_umask_and_logfile_empty_turns_it_off() {
    use std::os::unix::fs::PermissionsExt;
    let w = World::new(Behaviour::default());
    let path = w.sandbox.path().join("logs/deep/mail.log");
    w.config_with(&format!("logfile = \"{}\"\n", path.display()), "");
    // Under `umask 000`: the modes cannot come from the umask.
    let mut cmd = std::process::Command::new("sh");
    let exe = w.sandbox.command(&[]).get_program().to_owned();
    cmd.env_clear()
        .envs(
            w.sandbox
                .command(&[])
                .get_envs()
                .filter_map(|(k, v)| Some((k, v?))),
        )
        .arg("-c")
        .arg("umask 000; exec \"$0\" \"$@\"")
        .arg(exe)
        .args(MUTT);
    run_command(cmd, MESSAGE.as_bytes()).assert_silent_success();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    assert_eq!(mode(&w.sandbox.path().join("logs")), 0o700);
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);

    w.config_with("logfile = \"\"\n", "");
    std::fs::remove_file(&path).unwrap();
    w.run(MUTT, MESSAGE).assert_silent_success();
    assert!(!path.exists());
    assert_eq!(w.log(), "", "off means off");
}

// ---- the queue drives itself --------------------------------------------------------

#[test]
fn queue_flush_tries_a_backed_off_message_now_and_q_waits_for_it() {
    let w = World::new(Behaviour::default());
    w.run(&["-odq", "-i", BOB], MESSAGE).assert_silent_success();
    w.back_off_all();
    let quiet = w.run(&["-q"], "");
    quiet.assert_silent_success();
    assert_eq!(w.queued().len(), 1, "-q leaves a message in back-off alone");
    assert!(w.smtp.deliveries().is_empty());
    let asked = w.run(&["queue", "flush"], "");
    assert_eq!(asked.code, 0, "{asked:?}");
    assert!(asked.stdout.contains(": sent: 250"), "{}", asked.stdout);
    assert!(w.queued().is_empty());
    assert_eq!(w.smtp.deliveries().len(), 1);
}

#[test]
fn a_direct_send_carries_the_due_queue_by_default() {
    let w = World::new(Behaviour::default());
    w.run(&["-odq", "-i", BOB], MESSAGE).assert_silent_success();
    w.run(MUTT, MESSAGE).assert_silent_success();
    assert!(w.queued().is_empty(), "flush_on_send is on by default");
    assert_eq!(w.smtp.deliveries().len(), 2);
    assert_eq!(w.smtp.connections(), 1, "over the same connection");
}

#[test]
fn both_flushes_print_one_line_per_account_that_needs_a_login() {
    let w = World::new(Behaviour::default());
    w.run(&["-odq", "-i", BOB], MESSAGE).assert_silent_success();
    w.run(&["-odq", "-i", BOB], MESSAGE).assert_silent_success();
    w.dead_refresh_token();
    let quiet = w.run(&["-q"], "");
    assert_eq!(quiet.code, 77, "{quiet:?}");
    let lines: Vec<&str> = quiet.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", quiet.stderr);
    assert!(
        lines[0].contains("oauth2-sendmail login work"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("2 queued messages wait"), "{}", lines[0]);
    w.take_notification();
    let asked = w.run(&["queue", "flush"], "");
    assert_eq!(asked.code, 77, "{asked:?}");
    let logins: Vec<&str> = asked
        .stdout
        .lines()
        .filter(|l| l.contains("oauth2-sendmail login work"))
        .filter(|l| l.starts_with("account work"))
        .collect();
    assert_eq!(logins.len(), 1, "{}", asked.stdout);
    assert_eq!(w.queued().len(), 2, "nothing is lost");
}

#[test]
fn a_successful_login_sends_the_accounts_queue_and_says_how_many() {
    let w = World::new(Behaviour::default());
    w.dead_refresh_token();
    w.run(DEBIAN_CRON, MESSAGE).assert_silent_success();
    w.run(CRONIE, MESSAGE).assert_silent_success();
    assert_eq!(w.queued().len(), 2);
    w.back_off_all();
    w.idp.set_failure(None);
    let fresh = w.idp.issue_refresh_token();
    let mut cmd = w
        .sandbox
        .command(&["login", "work", "--import-refresh-token", "-"]);
    cmd.env("OAUTH2_SENDMAIL_TEST_TIMEOUT_MS", "1500");
    let run = run_command(cmd, format!("{fresh}\n").as_bytes());
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("account work: logged in as"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("account work: 2 of 2 queued messages sent"),
        "{}",
        run.stdout
    );
    run.assert_never_shows(&fresh);
    assert!(w.queued().is_empty());
    assert_eq!(w.smtp.deliveries().len(), 2);
}

// ---- no silent death of a refresh token ---------------------------------------------

fn seed_obtained(w: &World, days_ago: u64) {
    w.sandbox.seed_token(
        "work",
        &json!({"access_token": w.token, "expires_at": now() + 3600,
                "refresh_token": w.refresh, "obtained_at": now() - days_ago * 86_400}),
    );
}

fn stored(w: &World) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(w.sandbox.token_file("work")).unwrap()).unwrap()
}

#[test]
fn q_renews_a_refresh_token_unused_for_31_days_and_not_one_used_29_days_ago() {
    let w = World::new(Behaviour::default());
    seed_obtained(&w, 29);
    w.run(&["-q"], "").assert_silent_success();
    assert_eq!(w.idp.refresh_count(), 0, "29 days: still fresh enough");
    seed_obtained(&w, 31);
    w.run(&["-q"], "").assert_silent_success();
    assert_eq!(w.idp.refresh_count(), 1, "31 days: renewed");
    let token = stored(&w);
    let obtained = token["obtained_at"].as_u64().unwrap();
    assert!(now() - obtained < 60, "{token}");
    assert_ne!(
        token["refresh_token"],
        json!(w.refresh),
        "the rotated one is kept"
    );
    assert!(
        w.log().contains("account=work result=renewed"),
        "{}",
        w.log()
    );
    w.run(&["-q"], "").assert_silent_success();
    assert_eq!(w.idp.refresh_count(), 1, "renewed once, not at every run");
}

#[test]
fn a_refused_renewal_is_heard_on_the_q_line_and_through_notify_cmd() {
    let w = World::new(Behaviour::default());
    seed_obtained(&w, 31);
    w.idp.set_failure(Some(Failure::invalid_grant(700_082)));
    let run = w.run(&["-q"], "");
    assert_eq!(run.code, 77, "{run:?}");
    let line = run.stderr.trim_end();
    assert!(!line.contains('\n'), "{line}");
    assert!(line.contains("oauth2-sendmail login work") && line.contains("AADSTS700082"));
    let env = w.take_notification();
    assert_eq!(env_var(&env, "OAUTH2_SENDMAIL_ACCOUNT"), Some("work"));
    assert!(w.log().contains("result=renewal-refused"), "{}", w.log());
}

// ---- status -------------------------------------------------------------------------

#[test]
fn status_exits_0_when_every_account_can_send() {
    let w = World::new(Behaviour::default());
    let cache = w.sandbox.token_file("work");
    let mut token = stored(&w);
    token["identity"] = json!("alice@contoso.com");
    std::fs::write(&cache, serde_json::to_vec(&token).unwrap()).unwrap();
    w.run(&["-odq", "-i", BOB], MESSAGE).assert_silent_success();
    let run = w.run(&["status"], "");
    assert_eq!((run.code, run.stderr.as_str()), (0, ""), "{run:?}");
    let out = &run.stdout;
    for want in [
        "provider: microsoft",
        &format!("server: 127.0.0.1:{}", w.smtp.port()),
        "signed in as: alice@contoso.com",
        "access token: valid until",
        "refresh token: present",
        "  queue: 1 queued, 0 failed",
    ] {
        assert!(out.contains(want), "{want:?} in {out}");
    }
}

#[test]
fn status_remembers_a_refused_refresh_and_exits_77_until_the_next_login() {
    let w = World::new(Behaviour::default());
    w.dead_refresh_token();
    w.run(MUTT, MESSAGE).assert_failure(77);
    let run = w.run(&["status"], "");
    assert_eq!(run.code, 77, "{run:?}");
    assert!(run.stdout.contains("needs login since"), "{}", run.stdout);
    assert!(run.stdout.contains("AADSTS700082"), "{}", run.stdout);
    assert!(
        !run.stdout.contains("refresh token: present"),
        "{}",
        run.stdout
    );
    w.idp.set_failure(None);
    let fresh = w.idp.issue_refresh_token();
    let login = w.run(
        &["login", "work", "--import-refresh-token", "-"],
        &format!("{fresh}\n"),
    );
    assert_eq!(login.code, 0, "{login:?}");
    let run = w.run(&["status"], "");
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stdout.contains("needs login"), "{}", run.stdout);
}

#[test]
fn status_exits_77_without_tokens_and_78_on_a_configuration_error() {
    let w = World::new(Behaviour::default());
    std::fs::remove_file(w.sandbox.token_file("work")).unwrap();
    let run = w.run(&["status"], "");
    assert_eq!(run.code, 77, "{run:?}");
    assert!(
        run.stdout.contains("oauth2-sendmail login work"),
        "{}",
        run.stdout
    );
    let cfg = w.sandbox.path().join("config/oauth2-sendmail/config.toml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("\n[accounts.broken]\nprovider = \"custom\"\nemail = \"x@example.net\"\n");
    std::fs::write(&cfg, text).unwrap();
    let run = w.run(&["status"], "");
    assert_eq!(run.code, 78, "{run:?}");
    assert!(run.stdout.contains("configuration error"), "{}", run.stdout);
    assert!(run.stdout.contains("smtp_host"), "{}", run.stdout);
}

// ---- default desktop notice ---------------------------------------------------------

#[test]
fn without_notify_cmd_a_graphical_session_gets_a_desktop_notice_and_others_nothing() {
    let w = World::new(Behaviour::default());
    // The account without notify_cmd.
    let cfg = w.sandbox.path().join("config/oauth2-sendmail/config.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("notify_cmd"))
        .collect();
    let text = text.join("\n");
    std::fs::write(&cfg, text).unwrap();
    w.dead_refresh_token();
    let bin = w.sandbox.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let seen = w.sandbox.path().join("notice");
    let script = bin.join("notify-send");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}.tmp' && mv '{0}.tmp' '{0}'\n",
            seen.display()
        ),
    )
    .unwrap();
    super::support::set_mode(&script, 0o755);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let mut cmd = w.sandbox.command(MUTT);
    cmd.env("PATH", &path);
    run_command(cmd, MESSAGE.as_bytes()).assert_failure(77);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!seen.exists(), "no graphical session: nothing extra");

    for display in [("DISPLAY", ":0"), ("WAYLAND_DISPLAY", "wayland-0")] {
        w.forget_notices();
        let mut cmd = w.sandbox.command(MUTT);
        cmd.env("PATH", &path).env(display.0, display.1);
        run_command(cmd, MESSAGE.as_bytes()).assert_failure(77);
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !seen.exists() && std::time::Instant::now() < end {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let notice = std::fs::read_to_string(&seen).expect("notify-send ran");
        assert!(notice.contains("account work"), "{notice}");
        assert!(notice.contains("oauth2-sendmail login work"), "{notice}");
        std::fs::remove_file(&seen).unwrap();
    }
}

#[test]
fn status_forgets_a_refused_refresh_once_a_refresh_works_and_hears_the_next_one() {
    let w = World::new(Behaviour::default());
    w.dead_refresh_token();
    w.run(MUTT, MESSAGE).assert_failure(77);
    assert_eq!(w.run(&["status"], "").code, 77);
    // A second later the refresh works again (e.g. the tenant's policy was fixed).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    w.idp.set_failure(None);
    w.sandbox.seed_token(
        "work",
        &json!({"access_token": "at-expired", "expires_at": now() - 10,
                "refresh_token": w.refresh, "obtained_at": now() - 3600}),
    );
    w.run(MUTT, MESSAGE).assert_silent_success();
    let run = w.run(&["status"], "");
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stdout.contains("needs login"), "{}", run.stdout);
    // Then the refreshed token is refused in turn: that is heard, not the old failure.
    let mut token = stored(&w);
    token["expires_at"] = json!(now() - 10);
    std::fs::write(
        w.sandbox.token_file("work"),
        serde_json::to_vec(&token).unwrap(),
    )
    .unwrap();
    w.idp.set_failure(Some(Failure::invalid_grant(70_008)));
    w.run(MUTT, MESSAGE).assert_failure(77);
    let run = w.run(&["status"], "");
    assert_eq!(run.code, 77, "{run:?}");
    assert!(run.stdout.contains("needs login since"), "{}", run.stdout);
    assert!(
        run.stdout.contains("AADSTS70008:") || run.stdout.contains("AADSTS70008,"),
        "{}",
        run.stdout
    );
}
