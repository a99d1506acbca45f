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

/// What bash offers for `words` (the last one being completed), with the generated script
/// loaded as bash-completion loads it: `COMP_WORDS`, `COMP_CWORD`, then the function
/// `complete -p` names, called as bash calls it.
fn bash_offers(script: &std::path::Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source '{}'\n\
         COMP_WORDS=({})\n\
         COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))\n\
         COMP_LINE=\"${{COMP_WORDS[*]}}\"\n\
         COMP_POINT=${{#COMP_LINE}}\n\
         fn=$(complete -p oauth2-sendmail | sed -n 's/.*-F \\([^ ]*\\) .*/\\1/p')\n\
         \"$fn\" oauth2-sendmail \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script.display(),
        quoted.join(" ")
    );
    let out = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completes_every_word_and_never_offers_help_as_a_word() {
    if !require("bash") {
        return;
    }
    let s = Sandbox::new();
    let script = s.write_file("c.bash", &generate("bash"));
    let committed =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("completions/oauth2-sendmail.bash");
    for file in [script.as_path(), committed.as_path()] {
        let first = bash_offers(file, &["oauth2-sendmail", ""]);
        for word in [
            "login", "token", "status", "check", "logout", "queue", "--help",
        ] {
            assert!(first.iter().any(|w| w == word), "{word} in {first:?}");
        }
        assert_eq!(
            bash_offers(file, &["oauth2-sendmail", "queue", ""]),
            ["list", "flush", "remove"]
        );
        assert_eq!(
            bash_offers(file, &["oauth2-sendmail", "queue", "fl"]),
            ["flush"]
        );
        assert_eq!(
            bash_offers(file, &["oauth2-sendmail", "login", "--flow", ""]),
            ["authcode", "devicecode", "password", "client-credentials"]
        );
        assert_eq!(
            bash_offers(file, &["oauth2-sendmail", "--generate", ""]),
            ["man", "bash", "zsh", "fish"]
        );
        let login = bash_offers(file, &["oauth2-sendmail", "login", "--"]);
        assert!(login.iter().any(|w| w == "--no-browser"), "{login:?}");
        // `oauth2-sendmail help` would mail a local user called help.
        for words in [
            &["oauth2-sendmail", ""][..],
            &["oauth2-sendmail", "he"][..],
            &["oauth2-sendmail", "queue", ""][..],
        ] {
            let offered = bash_offers(file, words);
            assert!(
                !offered.iter().any(|w| w == "help"),
                "{words:?}: {offered:?}"
            );
        }
    }
}

/// The README's block that installs the man page after `cargo install`.
fn readme_install_block() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("```sh\n# the man page next to the binary")
        .expect("README shows where the man page goes");
    let body = &readme[start + 6..];
    body[..body.find("```").unwrap()].to_owned()
}

#[test]
fn man_finds_the_page_after_the_readmes_cargo_install_steps_without_manpath() {
    if !require("man") || !require("bash") {
        return;
    }
    // A new user's shell after rustup: ~/.cargo/bin on PATH, no MANPATH, no ~/.local/bin.
    let s = Sandbox::new();
    let home = s.path().join("home");
    let bin = home.join(".cargo/bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_oauth2-sendmail"),
        bin.join("oauth2-sendmail"),
    )
    .unwrap();
    let path = format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display());
    let shell = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .env_clear()
            .env("HOME", &home)
            .env("PATH", &path)
            .env("LANG", "C.UTF-8")
            .current_dir(&home)
            .output()
            .unwrap()
    };
    let before = shell("man", &["-w", "oauth2-sendmail"]);
    assert!(!before.status.success(), "no page before the steps");
    let steps = shell("bash", &["-e", "-c", &readme_install_block()]);
    assert!(
        steps.status.success(),
        "{}",
        String::from_utf8_lossy(&steps.stderr)
    );
    let found = shell("man", &["-w", "oauth2-sendmail"]);
    let where_ = String::from_utf8_lossy(&found.stdout);
    assert!(
        found.status.success(),
        "man -w: {}",
        String::from_utf8_lossy(&found.stderr)
    );
    assert!(
        where_.trim_end().ends_with("man1/oauth2-sendmail.1")
            && where_.starts_with(&home.display().to_string()),
        "{where_}"
    );
    let page = shell("man", &["-P", "cat", "oauth2-sendmail"]);
    assert!(page.status.success());
    assert!(String::from_utf8_lossy(&page.stdout).contains("CONFIGURATION"));
}
