//! Unit-test grading for code records that carry `reference.tests` (MBPP-style `assert` lines):
//! the response's Python code plus the tests run in a sandboxed subprocess with no network (its
//! own network namespace), its own PID namespace (everything it spawned dies with it), CPU,
//! address-space, file-size and process limits, a wall-clock limit, an unprivileged user when we
//! are root, an empty environment and a scratch directory. If the sandbox cannot be built the code
//! is not run: the grade is a recorded failure, never an unsandboxed run.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Resource limits of one sandboxed run.
#[derive(Debug, Clone)]
pub struct SandboxLimits {
    pub wall: Duration,
    pub cpu_seconds: u64,
    pub memory_bytes: u64,
    pub file_bytes: u64,
    pub processes: u64,
    /// Interpreter to run (`python3` on PATH by default).
    pub python: PathBuf,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            wall: Duration::from_secs(10),
            cpu_seconds: 5,
            memory_bytes: 512 << 20,
            file_bytes: 1 << 20,
            processes: 32,
            python: PathBuf::from("python3"),
        }
    }
}

/// What happened to the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeOutcome {
    /// Every test passed (exit status 0).
    Passed,
    /// A test failed or the code raised; `detail` is the tail of stderr.
    Failed { detail: String },
    /// Killed at the wall-clock limit.
    TimedOut,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("sandbox unavailable: {0}")]
    Unavailable(String),
    #[error("sandbox i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// The code to test from a response: the last fenced ```python (or bare ```) block, else the
/// whole text.
pub fn extract_code(response: &str) -> String {
    let mut blocks = Vec::new();
    let mut rest = response;
    while let Some(start) = rest.find("```") {
        let after = &rest[start + 3..];
        let body_start = after.find('\n').map_or(after.len(), |i| i + 1);
        let lang = after[..body_start].trim();
        let body = &after[body_start..];
        let Some(end) = body.find("```") else { break };
        if lang.is_empty() || lang.eq_ignore_ascii_case("python") || lang.eq_ignore_ascii_case("py")
        {
            blocks.push(&body[..end]);
        }
        rest = &body[end + 3..];
    }
    blocks
        .last()
        .map_or_else(|| response.to_string(), |b| b.to_string())
}

/// Runs `code` followed by `tests` in the sandbox.
pub fn run_python_tests(
    code: &str,
    tests: &str,
    limits: &SandboxLimits,
) -> Result<CodeOutcome, SandboxError> {
    let dir = tempfile::tempdir()?;
    let program = dir.path().join("main.py");
    std::fs::write(&program, format!("{code}\n\n{tests}\n"))?;
    let as_root = is_root();
    if as_root {
        // The unprivileged user must be able to read the program and use the directory.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))?;
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o644))?;
    }
    let mut child = sandbox_command(dir.path(), limits, as_root)
        .spawn()
        .map_err(|e| SandboxError::Unavailable(format!("cannot start unshare: {e}")))?;
    let status = wait_or_kill(&mut child, limits.wall)?;
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.by_ref().take(64 << 10).read_to_string(&mut stderr);
    }
    let Some(status) = status else {
        return Ok(CodeOutcome::TimedOut);
    };
    if status.success() {
        return Ok(CodeOutcome::Passed);
    }
    if stderr.contains("unshare: ") && !stderr.contains("Traceback") {
        return Err(SandboxError::Unavailable(stderr.trim().to_string()));
    }
    let tail: String = stderr
        .lines()
        .rev()
        .take(5)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    Ok(CodeOutcome::Failed { detail: tail })
}

/// `python main.py` in `dir` inside new network and PID namespaces, under `prlimit`, as
/// `nobody` when we are root, with an empty environment.
fn sandbox_command(dir: &Path, limits: &SandboxLimits, as_root: bool) -> Command {
    let mut cmd = Command::new("unshare");
    if !as_root {
        // Unprivileged: a user namespace grants the right to make the others.
        cmd.arg("--map-root-user");
    }
    cmd.args([
        "--net",
        "--pid",
        "--fork",
        "--kill-child=SIGKILL",
        "--",
        "prlimit",
    ])
    .arg(format!("--cpu={}", limits.cpu_seconds))
    .arg(format!("--as={}", limits.memory_bytes))
    .arg(format!("--fsize={}", limits.file_bytes))
    .arg(format!("--nproc={}", limits.processes))
    .arg("--core=0")
    .arg("--");
    if as_root {
        cmd.args([
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
        ]);
    }
    cmd.arg(&limits.python)
        .args(["-I", "-B", "main.py"])
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills the whole chain at once: `--kill-child`
        // alone is not enough, since dropping privileges clears the child's parent-death signal.
        .process_group(0);
    cmd
}

/// The child's exit status, or `None` when it outlived `wall` (it is then killed).
fn wait_or_kill(child: &mut Child, wall: Duration) -> std::io::Result<Option<ExitStatus>> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if started.elapsed() >= wall {
            // SIGKILL to the process group reaches the sandbox's PID 1; when it dies the kernel
            // kills everything left in its PID namespace.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox_or_skip(outcome: Result<CodeOutcome, SandboxError>) -> Option<CodeOutcome> {
        match outcome {
            Ok(o) => Some(o),
            Err(SandboxError::Unavailable(why)) => {
                eprintln!("skipping: sandbox unavailable here: {why}");
                None
            }
            Err(e) => panic!("{e}"),
        }
    }

    fn run(code: &str, tests: &str) -> Option<CodeOutcome> {
        sandbox_or_skip(run_python_tests(
            code,
            tests,
            &SandboxLimits {
                wall: Duration::from_secs(5),
                cpu_seconds: 2,
                ..SandboxLimits::default()
            },
        ))
    }

    #[test]
    fn extracts_the_last_python_block() {
        let r = "Here:\n```python\ndef f(): return 1\n```\nbetter:\n```python\ndef f(): return 2\n```\nDone.";
        assert_eq!(extract_code(r), "def f(): return 2\n");
        assert_eq!(extract_code("def g(): pass"), "def g(): pass");
        assert_eq!(extract_code("```bash\nls\n```"), "```bash\nls\n```");
    }

    #[test]
    fn passes_right_code_and_fails_wrong_code() {
        let tests = "assert add(2, 3) == 5\nassert add(-1, 1) == 0";
        let Some(ok) = run("def add(a, b):\n    return a + b", tests) else {
            return;
        };
        assert_eq!(ok, CodeOutcome::Passed);
        let Some(bad) = run("def add(a, b):\n    return a - b", tests) else {
            return;
        };
        assert!(
            matches!(bad, CodeOutcome::Failed { ref detail } if detail.contains("AssertionError")),
            "{bad:?}"
        );
    }

    #[test]
    fn cannot_reach_the_network() {
        let code =
            "import socket\ns = socket.socket()\ns.settimeout(1)\ns.connect(('127.0.0.1', 22))";
        let Some(outcome) = run(code, "") else { return };
        assert!(
            matches!(outcome, CodeOutcome::Failed { ref detail } if detail.contains("unreachable") || detail.contains("refused") || detail.contains("OSError")),
            "{outcome:?}"
        );
    }

    #[test]
    fn endless_loops_and_sleepers_are_stopped() {
        let Some(spin) = run("while True:\n    pass", "") else {
            return;
        };
        // CPU limit (SIGXCPU/SIGKILL) or the wall clock: either way it does not pass.
        assert_ne!(spin, CodeOutcome::Passed);
        let started = Instant::now();
        let Some(sleep) = run("import time\ntime.sleep(60)", "") else {
            return;
        };
        assert_eq!(sleep, CodeOutcome::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(20));
    }

    #[test]
    fn memory_and_files_are_bounded() {
        let Some(mem) = run("x = bytearray(2 << 30)", "") else {
            return;
        };
        assert!(
            matches!(mem, CodeOutcome::Failed { ref detail } if detail.contains("MemoryError")),
            "{mem:?}"
        );
        let Some(big) = run("open('big', 'wb').write(b'x' * (8 << 20))", "") else {
            return;
        };
        assert_ne!(big, CodeOutcome::Passed);
    }

    #[test]
    fn cannot_write_outside_its_directory() {
        let Some(outcome) = run("open('/etc/lookahead-sandbox-escape', 'w').write('x')", "") else {
            return;
        };
        assert_ne!(outcome, CodeOutcome::Passed);
        assert!(!std::path::Path::new("/etc/lookahead-sandbox-escape").exists());
    }
}
