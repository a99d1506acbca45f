//! The cron line and the systemd user timer that README offers for flushing the queue,
//! installed by `contrib/install` with the binary's absolute path (cron's PATH has no
//! `~/.cargo/bin`). `crontab` and `systemctl` are stand-ins on PATH that record what
//! they were given; `systemd-analyze verify` checks the units as written.

use std::path::Path;
use std::process::{Command, Output};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_oauth2-sendmail");

/// A temporary home with stand-in `crontab` (its table in `home/crontab`, replaced only
/// after all of its input was read, as the real one does) and
/// `systemctl` (its calls in `home/systemctl.log`) first on PATH.
fn home() -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let bin = home.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let h = home.path().display();
    for (name, script) in [
        (
            "crontab",
            format!(
                "#!/bin/sh\nif [ \"$1\" = -l ]; then cat '{h}/crontab' 2>/dev/null; exit; fi\n\
                 [ \"$1\" = - ] && cat > '{h}/crontab.new' && mv '{h}/crontab.new' '{h}/crontab'\n"
            ),
        ),
        (
            "systemctl",
            format!("#!/bin/sh\necho \"$@\" >> '{h}/systemctl.log'\n"),
        ),
    ] {
        let path = bin.join(name);
        std::fs::write(&path, script).unwrap();
        super::support::set_mode(&path, 0o755);
    }
    home
}

fn install(home: &Path, args: &[&str]) -> Output {
    let path = format!(
        "{}:{}",
        home.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(format!("{ROOT}/contrib/install"))
        .args(args)
        .env_clear()
        .env("PATH", path)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "contrib/install {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `contrib/install cron BIN` adds one well-formed line that runs the binary by its
/// absolute path, keeps the rest of the crontab, and replaces its own line when run again.
#[test]
fn cron_install_adds_one_line_with_the_absolute_path() {
    let home = home();
    std::fs::write(home.path().join("crontab"), "0 3 * * * backup\n").unwrap();
    install(home.path(), &["cron", BIN]);
    install(home.path(), &["cron", BIN]);
    let table = std::fs::read_to_string(home.path().join("crontab")).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert_eq!(lines[0], "0 3 * * * backup");
    let fields: Vec<&str> = lines[1].split_whitespace().collect();
    let ranges = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)];
    for (field, (lo, hi)) in fields.iter().zip(ranges) {
        for part in field.split(',') {
            let (range, step) = part.split_once('/').unwrap_or((part, "1"));
            assert!(step.parse::<u32>().is_ok_and(|s| s > 0), "step in {field}");
            if range == "*" {
                continue;
            }
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            for n in [a, b] {
                let n: u32 = n.parse().unwrap_or_else(|_| panic!("number in {field}"));
                assert!((lo..=hi).contains(&n), "{n} out of range in {field}");
            }
        }
    }
    assert_eq!(&fields[5..], [BIN, "-q"]);
    assert!(Path::new(fields[5]).is_absolute());
}

/// Without a path argument the binary on PATH is used, made absolute.
#[test]
fn cron_install_finds_the_binary_on_path() {
    let home = home();
    let bin = home.path().join("bin/oauth2-sendmail");
    std::os::unix::fs::symlink(BIN, &bin).unwrap();
    install(home.path(), &["cron"]);
    let table = std::fs::read_to_string(home.path().join("crontab")).unwrap();
    assert!(
        table
            .trim_end()
            .ends_with(&format!(" {} -q", bin.display())),
        "{table}"
    );
}

/// `contrib/install systemd BIN` writes units that run `BIN -q`, which
/// `systemd-analyze verify` accepts, and enables the timer.
#[test]
fn systemd_install_writes_verified_units_and_enables_the_timer() {
    let home = home();
    install(home.path(), &["systemd", BIN]);
    let dir = home.path().join("config/systemd/user");
    let service = std::fs::read_to_string(dir.join("oauth2-sendmail-flush.service")).unwrap();
    assert!(
        service.contains(&format!("\nExecStart={BIN} -q\n")),
        "{service}"
    );
    assert!(!service.contains("@BINARY@"));
    let calls = std::fs::read_to_string(home.path().join("systemctl.log")).unwrap();
    assert_eq!(
        calls,
        "--user daemon-reload\n--user enable --now oauth2-sendmail-flush.timer\n"
    );
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze not installed; skipping the unit check");
        return;
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.join("oauth2-sendmail-flush.service"))
        .arg(dir.join("oauth2-sendmail-flush.timer"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze: {stderr}"
    );
}
