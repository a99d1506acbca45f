//! The snippets in `docs/*.md` and README.md that are config or offline commands, run for
//! real: every fenced `toml` block is a config the binary loads (`--dry-run` on a message),
//! and every `sh` block that starts with `# offline` runs in a sandbox with the binary on
//! PATH and that guide's first `toml` block as the config, and must succeed.

use std::path::{Path, PathBuf};

use super::support::{Sandbox, run_command};

/// (info string, body) of each fenced block.
fn blocks(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(info)) => current = Some((info.trim().to_owned(), String::new())),
            (Some(_), Some("")) => out.push(current.take().unwrap()),
            (Some((_, body)), _) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(current.is_none(), "an unterminated fenced block");
    out
}

fn documents() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    docs.push(root.join("README.md"));
    docs
}

#[test]
fn every_toml_snippet_in_the_docs_is_a_config_that_loads() {
    let mut checked = 0;
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        for (info, body) in blocks(&text) {
            if info != "toml" {
                continue;
            }
            let s = Sandbox::new();
            s.write_config(&body);
            let run = s.run(
                &["--dry-run", "-t"],
                b"To: bob@example.org\nSubject: docs\n\nbody\n",
            );
            assert_eq!(
                run.code,
                0,
                "{}: this config does not load:\n{body}\n{}",
                doc.display(),
                run.stderr
            );
            checked += 1;
        }
    }
    assert!(checked >= 8, "only {checked} toml snippets");
}

#[test]
fn every_offline_shell_snippet_in_the_docs_runs() {
    let exe = Path::new(env!("CARGO_BIN_EXE_oauth2-sendmail"));
    let path = format!(
        "{}:{}",
        exe.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut ran = 0;
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        let all = blocks(&text);
        let config = all
            .iter()
            .find(|(i, _)| i == "toml")
            .map(|(_, b)| b.clone());
        for (info, body) in &all {
            if info != "sh" || !body.starts_with("# offline\n") {
                continue;
            }
            let s = Sandbox::new();
            if let Some(config) = &config {
                s.write_config(config);
            }
            let mut sh = s.program("sh");
            sh.env("PATH", &path)
                .current_dir(s.path())
                .args(["-e", "-c", body]);
            let run = run_command(sh, b"");
            assert_eq!(
                run.code,
                0,
                "{}: this snippet fails:\n{body}\nstdout: {}\nstderr: {}",
                doc.display(),
                run.stdout,
                run.stderr
            );
            ran += 1;
        }
    }
    assert!(ran >= 5, "only {ran} offline snippets");
}
