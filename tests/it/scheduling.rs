//! The cron line and the systemd user timer that README offers for flushing the queue.

use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// `systemd-analyze verify` accepts the units (with `ExecStart` pointing at this build).
#[test]
fn systemd_units_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze not installed; skipping the unit check");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for unit in [
        "oauth2-sendmail-flush.service",
        "oauth2-sendmail-flush.timer",
    ] {
        let text = std::fs::read_to_string(format!("{ROOT}/contrib/systemd/{unit}")).unwrap();
        let text = text.replace(
            "%h/.cargo/bin/oauth2-sendmail",
            env!("CARGO_BIN_EXE_oauth2-sendmail"),
        );
        std::fs::write(dir.path().join(unit), text).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.path().join("oauth2-sendmail-flush.service"))
        .arg(dir.path().join("oauth2-sendmail-flush.timer"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze: {stderr}"
    );
}

/// The crontab line has five valid time fields and runs a flush.
#[test]
fn cron_line_is_well_formed() {
    let text = std::fs::read_to_string(format!("{ROOT}/contrib/cron/oauth2-sendmail")).unwrap();
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .expect("a crontab line");
    let fields: Vec<&str> = line.split_whitespace().collect();
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
    assert_eq!(&fields[5..], ["oauth2-sendmail", "-q"]);
}
