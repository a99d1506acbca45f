//! The one runner for every `*_cmd` (`password_cmd`, `client_secret_cmd`,
//! `token_encrypt_cmd`, `token_decrypt_cmd`, `notify_cmd`): no shell, a time limit
//! (`command_timeout`, 60 s by default), a bounded output, and a child that is always killed
//! and reaped. A command that hangs or floods fails with one line
//! naming it; a notifier runs in a process group of its own, killed whole at the limit.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// `command_timeout` when the config does not set it (seconds).
pub const DEFAULT_TIMEOUT_SECS: u64 = 60;
/// Output kept from a command that prints a secret (`pass show` prints the password and
/// perhaps a few lines of notes): more than this is a flood.
pub const SECRET_OUTPUT: usize = 64 * 1024;
/// The longest first line taken as a secret.
pub const SECRET_LINE: usize = 4 * 1024;
/// Output kept from `token_decrypt_cmd` / `token_encrypt_cmd`: a token file is a few KiB.
pub const TOKEN_OUTPUT: usize = 1024 * 1024;
/// How much of a failing command's stderr is read for its first line.
const STDERR_KEPT: usize = 4 * 1024;

static TIMEOUT_SECS: AtomicU64 = AtomicU64::new(DEFAULT_TIMEOUT_SECS);

/// Sets the time limit for every command run from now on (the config's `command_timeout`).
pub fn set_timeout(seconds: u64) {
    TIMEOUT_SECS.store(seconds.max(1), Ordering::Relaxed);
}

/// The time limit for a command.
#[must_use]
pub fn timeout() -> Duration {
    Duration::from_secs(TIMEOUT_SECS.load(Ordering::Relaxed))
}

/// What came back from a pipe reader.
enum Output {
    Done(Vec<u8>),
    Flood,
    Failed(std::io::Error),
}

/// Runs `argv` with `input` on stdin and returns its stdout; `what` names the setting in
/// errors. Fails when the command cannot start, outlives [`timeout`], prints more than
/// `max_output` bytes, or exits non-zero (with the first line of its stderr).
pub fn run(
    what: &str,
    argv: &[String],
    input: Option<&[u8]>,
    env: &[(&str, &str)],
    max_output: usize,
) -> Result<Vec<u8>> {
    let limit = timeout();
    let program = &argv[0];
    let mut child = Command::new(program)
        .args(&argv[1..])
        .envs(env.iter().copied())
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // In our process group, not its own: a command that asks on the terminal (gpg with
        // a loopback pinentry, a `read` from /dev/tty) must stay in the foreground group or
        // it is stopped (SIGTTIN). A timeout kills the child; whatever it left running
        // keeps only its own end of our pipes, which we stop reading.
        .spawn()
        .map_err(|e| Error::config(format!("{what}: cannot run `{program}`: {e}")))?;
    let deadline = Instant::now() + limit;
    if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
        let data = data.to_vec();
        // A command that exits without reading all of its input is judged by its status.
        std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
    }
    let stdout = reader(child.stdout.take(), max_output, false);
    let stderr = reader(child.stderr.take(), STDERR_KEPT, true);
    let stopped = |child: &mut Child, why: String| {
        kill(child);
        Error::config(format!("{what}: `{program}` {why}; it was stopped"))
    };
    let out = match stdout.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(Output::Done(out)) => out,
        Ok(Output::Flood) => {
            return Err(stopped(
                &mut child,
                format!("printed more than {max_output} bytes"),
            ));
        }
        Ok(Output::Failed(e)) => {
            return Err(stopped(&mut child, format!("could not be read: {e}")));
        }
        Err(_) => {
            return Err(stopped(
                &mut child,
                format!(
                    "did not finish within {} s (command_timeout)",
                    limit.as_secs()
                ),
            ));
        }
    };
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(None) => {
                return Err(stopped(
                    &mut child,
                    format!(
                        "did not finish within {} s (command_timeout)",
                        limit.as_secs()
                    ),
                ));
            }
            Err(e) => return Err(stopped(&mut child, format!("could not be waited for: {e}"))),
        }
    };
    if !status.success() {
        let err = match stderr.recv_timeout(Duration::from_millis(100)) {
            Ok(Output::Done(e)) => e,
            _ => Vec::new(),
        };
        let text = String::from_utf8_lossy(&err);
        let first = crate::scrub::printable(text.lines().next().unwrap_or("").trim(), 200);
        return Err(Error::config(format!(
            "{what}: `{program}` exited with {status}{}{first}",
            if first.is_empty() { "" } else { ": " }
        )));
    }
    Ok(out)
}

/// Runs the command and takes the first line of its output (at most [`SECRET_LINE`] bytes)
/// as a secret.
pub fn secret(what: &str, argv: &[String]) -> Result<String> {
    let out = run(what, argv, None, &[], SECRET_OUTPUT)?;
    let text = String::from_utf8(out)
        .map_err(|_| Error::config(format!("{what}: the command's output is not UTF-8")))?;
    let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if line.is_empty() {
        return Err(Error::config(format!(
            "{what}: the command printed nothing"
        )));
    }
    if line.len() > SECRET_LINE {
        return Err(Error::config(format!(
            "{what}: the first line of the command's output is longer than {SECRET_LINE} bytes"
        )));
    }
    Ok(line.to_owned())
}

/// Runs `argv` in a process group of its own, without input or output (its environment is
/// ours), and waits for it at most [`timeout`]: at the limit the whole group is killed, the
/// command and whatever it left running. Fails when it cannot start, outlives the limit, or
/// exits non-zero. For `notify_cmd`, whose keeper process calls it.
pub fn run_group(what: &str, argv: &[String]) -> Result<()> {
    let limit = timeout();
    let program = &argv[0];
    let mut child = Command::new(program)
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| Error::config(format!("{what}: cannot run `{program}`: {e}")))?;
    let group = pid(&child);
    let deadline = Instant::now() + limit;
    let mut status = None;
    loop {
        if status.is_none() {
            match child.try_wait() {
                Ok(done) => status = done,
                Err(e) => {
                    kill_group(&mut child);
                    return Err(Error::config(format!(
                        "{what}: `{program}` could not be waited for: {e}; it was stopped"
                    )));
                }
            }
        }
        // Done when the command has exited and nothing of its group is left running.
        if status.is_some() && rustix::process::test_kill_process_group(group).is_err() {
            break;
        }
        if Instant::now() >= deadline {
            kill_group(&mut child);
            if status.is_none() {
                return Err(Error::config(format!(
                    "{what}: `{program}` did not finish within {} s (command_timeout); it was \
                     stopped",
                    limit.as_secs()
                )));
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    match status {
        Some(s) if !s.success() => Err(Error::config(format!(
            "{what}: `{program}` exited with {s}"
        ))),
        _ => Ok(()),
    }
}

fn pid(child: &Child) -> rustix::process::Pid {
    // A spawned child's id is a positive pid.
    rustix::process::Pid::from_raw(child.id().cast_signed()).unwrap_or(rustix::process::Pid::INIT)
}

/// Kills and reaps the child.
fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Kills a child's process group (its own) and reaps the child.
fn kill_group(child: &mut Child) {
    let pid = pid(child);
    if pid != rustix::process::Pid::INIT {
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    kill(child);
}

/// Reads a pipe to its end on a thread: at most `max` bytes kept. When `drain`, the rest is
/// read and thrown away (stderr must not block the child); otherwise more than `max` bytes
/// is reported as a flood at once.
fn reader(
    pipe: Option<impl Read + Send + 'static>,
    max: usize,
    drain: bool,
) -> mpsc::Receiver<Output> {
    let (tx, rx) = mpsc::channel();
    let Some(mut pipe) = pipe else {
        let _ = tx.send(Output::Done(Vec::new()));
        return rx;
    };
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let room = max.saturating_sub(kept.len());
                    if n > room && !drain {
                        let _ = tx.send(Output::Flood);
                        return;
                    }
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.send(Output::Failed(e));
                    return;
                }
            }
        }
        let _ = tx.send(Output::Done(kept));
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_secret_is_the_first_line() {
        let out = secret("password_cmd", &argv(&["printf", "s3cret\\nnotes\\n"])).unwrap();
        assert_eq!(out, "s3cret");
    }

    #[test]
    fn a_flooding_command_is_stopped_and_named() {
        let e = secret("password_cmd", &argv(&["yes"])).unwrap_err();
        let line = e.to_string();
        assert!(
            line.contains("password_cmd") && line.contains("printed more than"),
            "{line}"
        );
    }

    #[test]
    fn a_failing_command_names_itself_and_its_stderr_first_line() {
        let e = run(
            "token_decrypt_cmd",
            &argv(&[
                "sh",
                "-c",
                "printf 'bad \\033[31mkey\\nmore\\n' >&2; exit 2",
            ]),
            Some(b"x"),
            &[],
            TOKEN_OUTPUT,
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("token_decrypt_cmd: `sh` exited with"), "{e}");
        assert!(e.ends_with(": bad \\x1b[31mkey"), "{e}");
    }
}
