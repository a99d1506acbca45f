//! The manual and the completions as `--generate` prints them from the binary: the man page
//! renders with `man -l` without a warning and matches the committed copy; the completion
//! scripts parse in their shells.

use std::process::Command;

use super::support::Sandbox;

fn generate(what: &str) -> String {
    let run = Sandbox::new().run(&["--generate", what], b"");
    assert_eq!(
        (run.code, run.stderr.as_str()),
        (0, ""),
        "--generate {what}"
    );
    assert!(!run.stdout.is_empty());
    run.stdout
}

fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Under CI (`.ci/run` installs them) a missing tool is a failure, elsewhere a skip.
fn require(program: &str) -> bool {
    if installed(program) {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{program} is not installed"
    );
    eprintln!("skipped: {program} is not installed");
    false
}

#[test]
fn generated_man_page_renders_without_warnings_and_is_the_committed_one() {
    let page = generate("man");
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/man/oauth2-sendmail.1"
    ))
    .unwrap();
    assert_eq!(page, committed);
    if !require("man") {
        return;
    }
    let s = Sandbox::new();
    let file = s.write_file("oauth2-sendmail.1", &page);
    for width in ["80", "120"] {
        let out = s
            .program("man")
            .env("MANWIDTH", width)
            .env("LANG", "C.UTF-8")
            .args(["-l", "--warnings"])
            .arg(&file)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "man -l: {stderr}");
        assert_eq!(stderr, "", "man -l warns at width {width}");
        let text = String::from_utf8_lossy(&out.stdout);
        for heading in [
            "CONFIGURATION",
            "EXIT STATUS",
            "ENVIRONMENT",
            "EXAMPLES",
            "SEE ALSO",
        ] {
            assert!(
                text.contains(&format!("\n{heading}\n")),
                "{heading} not rendered"
            );
        }
        assert!(text.contains("default_account"), "{text}");
    }
}

#[test]
fn generated_completions_parse() {
    let s = Sandbox::new();
    let bash = s.write_file("c.bash", &generate("bash"));
    if require("bash") {
        let out = s.program("bash").arg("-n").arg(&bash).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let zsh = generate("zsh");
    assert!(zsh.starts_with("#compdef oauth2-sendmail"), "{zsh}");
    if installed("zsh") {
        let file = s.write_file("c.zsh", &zsh);
        let out = s.program("zsh").arg("-n").arg(&file).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let fish = generate("fish");
    assert!(fish.contains("complete -c oauth2-sendmail"), "{fish}");
    if installed("fish") {
        let file = s.write_file("c.fish", &fish);
        let out = s
            .program("fish")
            .arg("--no-execute")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A word no shell knows is a usage error.
    let run = s.run(&["--generate", "tcsh"], b"");
    run.assert_failure(64);
}
