//! The shape of the source: no import circle between the top-level modules of `src/`
//! (a file `src/x.rs` or a folder `src/x/` is module `x`). A circle means two modules can
//! only be understood, changed and tested together; the map at the top of `src/main.rs`
//! promises layers instead. Module `a` uses module `b` when code of `a` names `crate::b`
//! (in a path or a `use crate::{…}` group); comments and `#[cfg(test)]` items do not count,
//! so tests may reach across.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[test]
fn no_import_circle_between_top_level_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let uses = module_uses(&src);
    assert!(
        uses.len() > 10,
        "the source was not read: {:?}",
        uses.keys()
    );
    let circles: Vec<String> = uses
        .iter()
        .flat_map(|(a, targets)| targets.iter().map(move |(b, at)| (a, b, at)))
        .filter(|(a, b, _)| reaches(&uses, b, a))
        .map(|(a, b, at)| format!("{a} -> {b} ({at})"))
        .collect();
    assert!(
        circles.is_empty(),
        "import circles between modules (each edge below lies on one):\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_circle_check_sees_a_circle() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write("main.rs", "mod a;\nmod b;\nmod c;\n");
    write(
        "a.rs",
        "use crate::{b::One, c};\n// crate::c in a comment\n",
    );
    write(
        "b.rs",
        "pub fn f() {\n    crate::a::g();\n}\n#[cfg(test)]\nmod tests {\n    use crate::c;\n}\n",
    );
    write("c.rs", "pub fn h() {}\n");
    let uses = module_uses(dir.path());
    assert!(reaches(&uses, "a", "b") && reaches(&uses, "b", "a"));
    assert!(reaches(&uses, "a", "c"));
    assert!(!uses["b"].contains_key("c"), "a test's use does not count");
    assert_eq!(
        uses["a"].keys().collect::<Vec<_>>(),
        ["b", "c"],
        "not the comment either"
    );
    assert_eq!(uses["b"]["a"], "src/b.rs:2");
    assert!(!reaches(&uses, "c", "a"));
}

/// The one door to stderr (`src/stderr.rs`) is the only code that writes there: every
/// other line would miss the prefix, the scrubbing of secrets, the escaping or the cut.
#[test]
fn only_the_stderr_module_writes_to_stderr() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    assert!(
        src.join(DOOR).is_file(),
        "the door is not where this test looks"
    );
    let writers = stderr_writers(&src);
    assert!(
        writers.is_empty(),
        "stderr written outside src/{DOOR} (use crate::stderr::line, account, url or \
         transcript):\n{}",
        writers.join("\n")
    );
}

#[test]
fn the_stderr_check_sees_a_stray_print() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write(DOOR, "pub fn line(t: &str) {\n    eprintln!(\"{t}\");\n}\n");
    write(
        "a.rs",
        "fn f() {\n    // eprintln!(\"in a comment\")\n    crate::stderr::line(\"x\");\n    \
         eprintln!(\"stray\");\n}\n#[cfg(test)]\nmod tests {\n    fn g() { eprint!(\"t\"); }\n}\n",
    );
    write(
        "b.rs",
        "fn f() {\n    let _ = std::io::stderr();\n    cmd.stderr(Stdio::null());\n    dbg!(1);\n}\n",
    );
    assert_eq!(
        stderr_writers(dir.path()),
        [
            "src/a.rs:4: eprintln!",
            "src/b.rs:2: io::stderr",
            "src/b.rs:4: dbg!"
        ]
    );
}

/// The file that may write to stderr.
const DOOR: &str = "stderr.rs";

/// `src/FILE:LINE: WHAT` for each write to stderr outside [`DOOR`], comments and tests
/// left out. A child's stderr (`.stderr(Stdio::…)`) is not ours and is allowed.
fn stderr_writers(src: &Path) -> Vec<String> {
    let mut files = rust_files(src);
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap();
        if rel == Path::new(DOOR) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in code_lines(&text) {
            let bare_call = line
                .match_indices("stderr()")
                .any(|(i, _)| !line[..i].ends_with('.') && !line[..i].ends_with("io::"));
            let found = ["eprintln!", "eprint!", "io::stderr", "dbg!"]
                .into_iter()
                .find(|w| line.contains(w))
                .or(bare_call.then_some("stderr()"));
            if let Some(what) = found {
                out.push(format!("src/{}:{n}: {what}", rel.display()));
            }
        }
    }
    out
}

/// For each module, the modules it uses, each with one `file:line` that does.
fn module_uses(src: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let modules: BTreeSet<String> = std::fs::read_dir(src)
        .unwrap()
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_name()?.to_str()?.to_owned();
            match name.strip_suffix(".rs") {
                Some(stem) => Some(stem.to_owned()),
                None => path.is_dir().then_some(name),
            }
        })
        .filter(|m| m != "main" && m != "lib")
        .collect();
    let mut uses: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for file in rust_files(src) {
        let rel = file.strip_prefix(src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap();
        let module = first.strip_suffix(".rs").unwrap_or(first).to_owned();
        if !modules.contains(&module) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let targets = uses.entry(module.clone()).or_default();
        for (line, name) in crate_names(&code_lines(&text)) {
            if name != module && modules.contains(&name) {
                targets
                    .entry(name)
                    .or_insert_with(|| format!("src/{}:{line}", rel.display()));
            }
        }
    }
    uses
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The lines outside comments and `#[cfg(test)]` items, with their numbers.
fn code_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let (mut depth, mut skip_above, mut pending_test) = (0i64, None::<i64>, false);
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        if code.contains("#[cfg(test)]") {
            pending_test = true;
            continue;
        }
        let opens = i64::try_from(code.matches('{').count()).unwrap();
        let closes = i64::try_from(code.matches('}').count()).unwrap();
        if pending_test && opens > 0 {
            skip_above = Some(depth);
            pending_test = false;
        }
        depth += opens - closes;
        if let Some(level) = skip_above {
            if depth <= level {
                skip_above = None;
            }
            continue;
        }
        if pending_test && code.trim_end().ends_with(';') {
            pending_test = false; // `#[cfg(test)] mod x;` and the like
            continue;
        }
        out.push((n + 1, code.to_owned()));
    }
    out
}

/// Every module named after `crate::`, directly or in a `use crate::{…}` group that may
/// span lines.
fn crate_names(lines: &[(usize, String)]) -> Vec<(usize, String)> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    let mut group: Option<usize> = None;
    for (n, line) in lines {
        let mut rest = line.as_str();
        if let Some(start) = group {
            let (inside, closed) = match rest.find('}') {
                Some(i) if rest[..i].matches('{').count() == 0 => (&rest[..i], true),
                _ => (rest, false),
            };
            out.extend(group_heads(inside).into_iter().map(|m| (start, m)));
            if closed {
                group = None;
            }
            continue;
        }
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            if let Some(inside) = rest.strip_prefix('{') {
                if let Some(end) = inside.find(';') {
                    let body = inside[..end].trim_end();
                    let body = body.strip_suffix('}').unwrap_or(body);
                    out.extend(group_heads(body).into_iter().map(|m| (*n, m)));
                } else {
                    out.extend(group_heads(inside).into_iter().map(|m| (*n, m)));
                    group = Some(*n);
                }
            } else {
                out.push((*n, ident(rest)));
            }
        }
    }
    out
}

/// The first segment of each path in a `{…}` group: `b::One, c` → `b`, `c` (nested groups'
/// inner names are not first segments and are skipped).
fn group_heads(inside: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut at_start = true;
    let mut word = String::new();
    for c in inside.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
            continue;
        }
        if at_start && depth == 0 && !word.is_empty() {
            heads.push(std::mem::take(&mut word));
            at_start = false;
        }
        word.clear();
        if c == ',' && depth == 0 {
            at_start = true;
        }
    }
    if at_start && !word.is_empty() {
        heads.push(word);
    }
    heads
}

/// Whether `to` can be reached from `from` along uses.
fn reaches(uses: &BTreeMap<String, BTreeMap<String, String>>, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from.to_owned()];
    while let Some(m) = todo.pop() {
        if m == to {
            return true;
        }
        if seen.insert(m.clone())
            && let Some(next) = uses.get(&m)
        {
            todo.extend(next.keys().cloned());
        }
    }
    false
}
