//! Shared test harness: a sandbox of relocated filesystem roots, the lsinit binary run with a
//! clean environment, and the suite-wide check that no secret ever appears in what lsinit
//! writes (stdout, stderr, files).

#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A well-formed auth token (the shared signature vector's).
pub const TOKEN: &str = "ls-Wxyz0123-4567-89ab-cdef-ghijklmnf90e";
/// Another well-formed auth token.
pub const OTHER_TOKEN: &str = "ls-Abcd9876-aaaa-bbbb-cccc-dddddddd9d61";
/// An auth token with a wrong checksum.
pub const TYPO_TOKEN: &str = "ls-Wxyz0123-4567-89ab-cdef-ghijklmnf900";
/// A legacy API key.
pub const API_KEY: &str = "Xq7vKzL2pW9mRt4N";
/// The runtime version every test pretends to run.
pub const VERSION: &str = "4.14.0";
/// A loopback port nothing listens on: the default endpoint for tests that need no server.
pub const NOWHERE: &str = "http://127.0.0.1:9/v1";

/// Secrets that must never appear in lsinit's output or files.
pub const SECRETS: [&str; 4] = [TOKEN, OTHER_TOKEN, API_KEY, "proxy-secret-pw"];

pub fn lsinit() -> &'static str {
    env!("CARGO_BIN_EXE_lsinit")
}

/// Relocated roots in a temp directory; on drop, every file under them is checked for secrets.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }
    pub fn volume(&self) -> PathBuf {
        self.root().join("volume")
    }
    pub fn config(&self) -> PathBuf {
        self.root().join("config")
    }
    pub fn static_dir(&self) -> PathBuf {
        self.root().join("static")
    }
    pub fn venv(&self) -> PathBuf {
        self.root().join("venv")
    }
    pub fn cache_file(&self) -> PathBuf {
        self.volume().join("cache/license.json")
    }
    /// A directory for files the emulator writes (not lsinit's, so not checked for secrets).
    pub fn scratch(&self) -> PathBuf {
        let dir = self.root().join("scratch");
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    /// lsinit with a clean environment: loopback endpoint, relocated roots, fixed version.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(lsinit());
        command
            .args(args)
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env("API_ENDPOINT", NOWHERE)
            .env("LOCALSTACK_BUILD_VERSION", VERSION)
            .env("LSINIT_VOLUME_DIR", self.volume())
            .env("LSINIT_CONFIG_DIR", self.config())
            .env("LSINIT_STATIC_DIR", self.static_dir())
            .env("LSINIT_VENV_DIR", self.venv())
            .stdin(Stdio::null());
        command
    }

    /// Panics when a file lsinit may have written contains `secret`: for secrets a test makes
    /// up beyond [`SECRETS`] (e.g. a malformed token).
    pub fn assert_files_free_of(&self, secret: &str) {
        for file in self.files() {
            let bytes = std::fs::read(&file).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(secret),
                "{} contains a raw secret",
                file.display()
            );
        }
    }

    /// Every regular file lsinit may have written.
    fn files(&self) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut stack = vec![self.volume(), self.config(), self.static_dir()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_dir() {
                    stack.push(entry.path());
                } else if kind.is_file() {
                    found.push(entry.path());
                }
            }
        }
        found
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        for file in self.files() {
            let bytes = std::fs::read(&file).unwrap_or_default();
            assert_no_secret(
                &String::from_utf8_lossy(&bytes),
                &file.display().to_string(),
            );
        }
    }
}

/// Panics when `text` contains any of [`SECRETS`].
pub fn assert_no_secret(text: &str, what: &str) {
    for secret in SECRETS {
        assert!(
            !text.contains(secret),
            "{what} contains a raw secret:\n{text}"
        );
    }
}

/// A finished lsinit run.
#[derive(Debug)]
pub struct Outcome {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Panics when stdout or stderr contains `secret`: for secrets beyond [`SECRETS`].
    pub fn assert_free_of(&self, secret: &str) {
        for (what, text) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            assert!(
                !text.contains(secret),
                "lsinit's {what} contains a raw secret:\n{text}"
            );
        }
    }
}

/// Runs to completion (killing it after `limit`), checking its output for secrets.
pub fn run(command: &mut Command, limit: Duration) -> Outcome {
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("lsinit starts");
    let stdout = drain(child.stdout.take().expect("piped"));
    let stderr = drain(child.stderr.take().expect("piped"));
    let status = wait_with_limit(&mut child, limit);
    let outcome = Outcome {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
        elapsed: started.elapsed(),
    };
    assert_no_secret(&outcome.stdout, "lsinit's stdout");
    assert_no_secret(&outcome.stderr, "lsinit's stderr");
    outcome
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Waits for a child, killing it when it outlives `limit` (a test failure, reported by status).
pub fn wait_with_limit(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("process {} still running after {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running lsinit whose stdout is read line by line, to wait for readiness lines.
pub struct Running {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Running {
    pub fn start(command: &mut Command) -> Running {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("lsinit starts");
        let (send, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = drain(child.stderr.take().expect("piped"));
        Running {
            child,
            lines,
            seen: Vec::new(),
            stderr: Some(stderr),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits for a stdout line containing `needle`; false when stdout ends or time runs out.
    pub fn try_wait_for_line(&mut self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    assert_no_secret(&line, "lsinit's stdout");
                    let found = line.contains(needle);
                    self.seen.push(line);
                    if found {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
    }

    /// Waits for a stdout line containing `needle`; returns that line.
    pub fn wait_for_line(&mut self, needle: &str, limit: Duration) -> String {
        if !self.try_wait_for_line(needle, limit) {
            let _ = self.child.kill();
            panic!(
                "no line with {needle:?} within {limit:?}; saw {:?}",
                self.seen
            );
        }
        self.seen
            .last()
            .cloned()
            .expect("the matching line was kept")
    }

    /// Waits for a stdout line containing any of `needles`; returns that line.
    pub fn wait_for_any_line(&mut self, needles: &[&str], limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.lines.recv_timeout(left) else {
                let _ = self.child.kill();
                panic!(
                    "no line with any of {needles:?} within {limit:?}; saw {:?}",
                    self.seen
                );
            };
            assert_no_secret(&line, "lsinit's stdout");
            let found = needles.iter().any(|needle| line.contains(needle));
            self.seen.push(line);
            if found {
                return self.seen.last().cloned().expect("just kept");
            }
        }
    }

    /// Waits for a stdout line containing `needle`; returns every line read up to and including
    /// it (lines before it that earlier waits skipped are not repeated).
    pub fn wait_for_lines(&mut self, needle: &str, limit: Duration) -> Vec<String> {
        let first = self.seen.len();
        self.wait_for_line(needle, limit);
        self.seen[first..].to_vec()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0, "kill failed");
    }

    /// Waits for the exit; returns the outcome with all of stdout and stderr.
    pub fn finish(mut self, limit: Duration) -> Outcome {
        let started = Instant::now();
        let status = wait_with_limit(&mut self.child, limit);
        let mut stdout: Vec<String> = std::mem::take(&mut self.seen);
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            stdout.push(line);
        }
        let outcome = Outcome {
            status,
            stdout: stdout.join("\n"),
            stderr: self
                .stderr
                .take()
                .expect("finished once")
                .join()
                .expect("stderr reader"),
            elapsed: started.elapsed(),
        };
        assert_no_secret(&outcome.stdout, "lsinit's stdout");
        assert_no_secret(&outcome.stderr, "lsinit's stderr");
        outcome
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A new command for lsinit's program with lsinit's arguments, environment (nothing else) and
/// directory, stdin from /dev/null: to start a prepared lsinit another way.
pub fn copy_of(lsinit: &Command) -> Command {
    take_over(Command::new(lsinit.get_program()), lsinit)
}

/// `wrapper` followed by lsinit's program and arguments, with lsinit's environment (nothing
/// else) and directory: lsinit under `unshare`, a shell script or a launcher.
pub fn wrapped(mut wrapper: Command, lsinit: &Command) -> Command {
    wrapper.arg(lsinit.get_program());
    take_over(wrapper, lsinit)
}

/// lsinit as PID 1 of a new PID namespace; `--kill-child` takes the namespace down with the
/// test if it dies. PID-1 code paths never run on the host.
pub fn as_pid1(lsinit: &Command) -> Command {
    let mut unshare = Command::new("unshare");
    unshare.args(["--pid", "--fork", "--mount-proc", "--kill-child", "--"]);
    wrapped(unshare, lsinit)
}

fn take_over(mut command: Command, lsinit: &Command) -> Command {
    command
        .args(lsinit.get_args())
        .env_clear()
        .stdin(Stdio::null());
    for (name, value) in lsinit.get_envs() {
        if let Some(value) = value {
            command.env(name, value);
        }
    }
    if let Some(dir) = lsinit.get_current_dir() {
        command.current_dir(dir);
    }
    command
}

/// The only child of `parent` once it exists: lsinit, forked by `unshare --fork` (or by a
/// launcher). Polled, as no readiness signal exists for another process's fork.
pub fn only_child(parent: i32) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let children = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
            .unwrap_or_default();
        if let Some(child) = children.split_whitespace().find_map(|p| p.parse().ok()) {
            return child;
        }
        assert!(Instant::now() < deadline, "process {parent} never forked");
        std::thread::sleep(Duration::from_millis(5));
    }
}
