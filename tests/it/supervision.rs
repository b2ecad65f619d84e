//! Supervision (SPEC 6) with real processes: exit statuses, signal forwarding, shutdown and its
//! deadline, restarts, reaping, storms, the emulator's inherited state, terminals and idleness.
//!
//! Every family runs twice: as PID 1 of a new PID namespace (`unshare --pid --fork --mount-proc`,
//! so PID-1 code paths never run on the host) and as a child subreaper. The emulators are the
//! fixtures in `tests/fixtures/`: they acknowledge what they get on stdout, and the tests wait
//! for those lines instead of sleeping.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use license_server::time::{self, OffsetDateTime};
use license_server::{
    Credential, Fault, LicenseServer, LicenseTemplate, make_license, new_license_id, parse_date,
};

use crate::harness::{
    Outcome, Running, Sandbox, TOKEN, VERSION, as_pid1, copy_of, only_child, run, wait_with_limit,
    wrapped,
};

/// How long any single wait may take before the test fails: generous, for a loaded machine.
const PATIENCE: Duration = Duration::from_secs(15);

/// Where lsinit runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// PID 1 of a new PID namespace.
    Pid1,
    /// An ordinary child of the test, which lsinit turns into a child subreaper.
    Subreaper,
}

/// Runs each named family once per [`Mode`], as `<family>::pid1` and `<family>::subreaper`.
macro_rules! in_both_modes {
    ($($family:ident),* $(,)?) => {$(
        mod $family {
            #[test]
            fn pid1() {
                super::$family(super::Mode::Pid1);
            }
            #[test]
            fn subreaper() {
                super::$family(super::Mode::Subreaper);
            }
        }
    )*};
}

in_both_modes!(
    exit_status_passes_through,
    forwarded_signals_arrive_once_and_in_order,
    cooperative_emulator_stops_with_its_status,
    stubborn_emulator_is_killed_at_the_deadline,
    second_term_kills_at_once,
    int_stops_the_emulator_with_one_term,
    int_after_term_kills_at_once,
    leftover_is_killed_at_the_original_deadline,
    leftovers_get_term_and_are_gone,
    stubborn_leftover_is_killed_at_the_deadline,
    restart_gives_a_new_emulator,
    restart_waits_for_the_old_emulators_group,
    usr1_burst_restarts_one_at_a_time,
    term_during_restart_wins,
    restart_reactivates_a_stale_license,
    term_during_reactivation_starts_no_emulator,
    abandoned_orphans_are_reaped,
    zombie_storm_never_hangs_lsinit,
    signal_storm_leaves_the_emulator_alive,
    signal_flood_cannot_hold_off_the_deadline,
    emulator_gets_the_callers_state,
    ctrl_c_on_the_terminal_stops_the_emulator,
    interactive_shell_has_job_control,
    idle_lsinit_never_wakes_up,
);

// ---------------------------------------------------------------------------------------------
// Helpers

/// The Python interpreter itself, not a version manager's shim that would add a process and
/// startup time to every emulator.
fn python() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let output = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 runs");
        let path = String::from_utf8(output.stdout).expect("utf-8 path");
        path.trim().to_string()
    })
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The emulator fixture's command line with `options`.
fn emulator(options: &[&str]) -> Vec<OsString> {
    let mut words = vec![
        OsString::from(python()),
        fixture("emulator.py").into_os_string(),
    ];
    words.extend(options.iter().map(OsString::from));
    words
}

fn sh(script: &str) -> Vec<OsString> {
    ["sh", "-c", script].iter().map(OsString::from).collect()
}

/// lsinit running `command` in community mode (no credentials, no network).
fn lsinit(sandbox: &Sandbox, command: &[OsString]) -> Command {
    let mut lsinit = sandbox
        .command(std::iter::once(OsStr::new("--")).chain(command.iter().map(OsString::as_os_str)));
    lsinit.env("ACTIVATE_PRO", "0");
    lsinit
}

/// The same program, arguments, environment and directory as `lsinit`, started the way `mode`
/// says. Pre-exec hooks and stdio are set on the result.
fn launcher(mode: Mode, lsinit: &Command) -> Command {
    match mode {
        Mode::Subreaper => copy_of(lsinit),
        Mode::Pid1 => as_pid1(lsinit),
    }
}

/// A running lsinit in either mode, with its own pid as the test sees it.
struct Init {
    running: Option<Running>,
    /// lsinit's pid in the test's PID namespace (under `unshare`, the child of `unshare`).
    pid: i32,
    mode: Mode,
}

impl Init {
    fn start(mode: Mode, lsinit: &Command) -> Init {
        Init::start_command(mode, launcher(mode, lsinit))
    }

    fn start_command(mode: Mode, mut command: Command) -> Init {
        let running = Running::start(&mut command);
        let pid = match mode {
            Mode::Subreaper => running.pid(),
            Mode::Pid1 => only_child(running.pid()),
        };
        Init {
            running: Some(running),
            pid,
            mode,
        }
    }

    fn running(&mut self) -> &mut Running {
        self.running.as_mut().expect("not finished")
    }

    fn wait_for_line(&mut self, needle: &str) -> String {
        self.running().wait_for_line(needle, PATIENCE)
    }

    fn wait_for_lines(&mut self, needle: &str) -> Vec<String> {
        self.running().wait_for_lines(needle, PATIENCE)
    }

    fn signal(&self, signo: i32) {
        send(self.pid, signo);
    }

    /// Waits until lsinit has read `signo` (it stays pending in the kernel until then).
    fn wait_until_read(&self, signo: i32) {
        let bit = signal_bit(signo);
        wait_until(&format!("lsinit reads signal {signo}"), || {
            pending_signals(self.pid) & bit == 0
        });
    }

    /// What the emulator sees as lsinit's pid.
    fn pid_inside(&self) -> String {
        match self.mode {
            Mode::Pid1 => "1".to_string(),
            Mode::Subreaper => self.pid.to_string(),
        }
    }

    fn finish(mut self) -> Outcome {
        self.running.take().expect("finished once").finish(PATIENCE)
    }
}

impl Drop for Init {
    /// A failed test must not leave processes behind: everything below lsinit gets KILL. Under
    /// `unshare --kill-child`, killing lsinit (PID 1) takes the whole namespace.
    fn drop(&mut self) {
        if self.running.is_none() {
            return;
        }
        for pid in descendants(self.pid) {
            send_quietly(pid, libc::SIGKILL);
        }
        send_quietly(self.pid, libc::SIGKILL);
    }
}

fn send(pid: i32, signo: i32) {
    // SAFETY: kill(2) to a process this test started.
    let result = unsafe { libc::kill(pid, signo) };
    assert_eq!(result, 0, "kill({pid}, {signo}) failed");
}

fn send_quietly(pid: i32, signo: i32) {
    // SAFETY: kill(2) to a process this test started; it may be gone already.
    unsafe { libc::kill(pid, signo) };
}

/// Polls a condition about processes (no readiness signal exists for a process being reaped or
/// a signal being read) every 5 ms, for at most [`PATIENCE`].
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn status_field(pid: i32, field: &str) -> Option<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .map(|value| value.trim().to_string())
}

/// Signals pending for the whole process (a blocked signal stays there until lsinit reads it).
fn pending_signals(pid: i32) -> u64 {
    status_field(pid, "ShdPnd")
        .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
        .unwrap_or(0)
}

/// `(pid, ppid, state)` of every process in the test's /proc.
fn processes() -> Vec<(i32, i32, char)> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
            let state = fields.next()?.chars().next()?;
            let ppid = fields.next()?.parse().ok()?;
            Some((pid, ppid, state))
        })
        .collect()
}

fn children(parent: i32) -> Vec<i32> {
    processes()
        .into_iter()
        .filter(|&(_, ppid, _)| ppid == parent)
        .map(|(pid, _, _)| pid)
        .collect()
}

fn descendants(root: i32) -> Vec<i32> {
    let all = processes();
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(parent) = queue.pop() {
        for &(pid, ppid, _) in &all {
            if ppid == parent {
                found.push(pid);
                queue.push(pid);
            }
        }
    }
    found
}

/// Children of `parent` that have exited and not been reaped.
fn zombie_children(parent: i32) -> usize {
    processes()
        .into_iter()
        .filter(|&(_, ppid, state)| ppid == parent && state == 'Z')
        .count()
}

fn is_alive(pid: i32) -> bool {
    processes()
        .into_iter()
        .any(|(p, _, state)| p == pid && state != 'Z')
}

/// The value of `key=` in a fixture's line such as `ready pid=12 ppid=1`.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

/// The `got <signo>` acknowledgements in the emulator's output, in order.
fn acknowledged(stdout: &str) -> Vec<i32> {
    stdout
        .lines()
        .filter_map(|line| line.strip_prefix("got ")?.trim().parse().ok())
        .collect()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

/// Prints a measurement; shown with `--nocapture`.
fn measured(what: &str, mode: Mode, value: impl std::fmt::Debug) {
    eprintln!("measured ({mode:?}): {what}: {value:?}");
}

// ---------------------------------------------------------------------------------------------
// Exit status (SPEC 9)

fn exit_status_passes_through(mode: Mode) {
    let sandbox = Sandbox::new();
    for code in 0..=255 {
        let command = lsinit(&sandbox, &sh(&format!("exit {code}")));
        let outcome = run(&mut launcher(mode, &command), PATIENCE);
        assert_eq!(
            outcome.code(),
            Some(code),
            "exit {code}: {}",
            outcome.stderr
        );
    }
    for (name, signo) in [
        ("TERM", 15),
        ("HUP", 1),
        ("QUIT", 3),
        ("KILL", 9),
        ("INT", 2),
    ] {
        // No core file from QUIT: this is about the status only.
        let script = format!("ulimit -c 0; kill -{name} $$");
        let command = lsinit(&sandbox, &sh(&script));
        let outcome = run(&mut launcher(mode, &command), PATIENCE);
        assert_eq!(
            outcome.code(),
            Some(128 + signo),
            "{name}: {}",
            outcome.stderr
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Forwarding

fn forwarded_signals_arrive_once_and_in_order(mode: Mode) {
    let sandbox = Sandbox::new();
    let mut init = Init::start(mode, &lsinit(&sandbox, &emulator(&["--on-term", "exit:4"])));
    init.wait_for_line("ready");

    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    let forwarded = [
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR2,
        libc::SIGWINCH,
        libc::SIGCONT,
        min,
        min + 1,
        min + 7,
        max - 1,
        max,
    ];
    for (i, &signo) in forwarded.iter().enumerate() {
        // Job-control signals in between: lsinit neither forwards them nor stops.
        let job_control = [libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU][i % 3];
        init.signal(job_control);
        init.wait_until_read(job_control);
        init.signal(signo);
        init.wait_for_line(&format!("got {signo}"));
        let state = status_field(init.pid, "State").unwrap_or_default();
        assert!(!state.starts_with('T'), "lsinit is stopped: {state}");
    }
    init.signal(libc::SIGTERM);
    let outcome = init.finish();

    assert_eq!(outcome.code(), Some(4), "{}", outcome.stderr);
    let mut expected = forwarded.to_vec();
    expected.push(libc::SIGTERM);
    assert_eq!(
        acknowledged(&outcome.stdout),
        expected,
        "{}",
        outcome.stdout
    );
}

// ---------------------------------------------------------------------------------------------
// Shutdown

fn cooperative_emulator_stops_with_its_status(mode: Mode) {
    let sandbox = Sandbox::new();
    // A non-zero status: a status lsinit lost (and reported as 0) would pass otherwise.
    let mut init = Init::start(mode, &lsinit(&sandbox, &emulator(&["--on-term", "exit:3"])));
    init.wait_for_line("ready");

    let asked = Instant::now();
    init.signal(libc::SIGTERM);
    let outcome = init.finish();
    let took = asked.elapsed();

    assert_eq!(outcome.code(), Some(3), "{}", outcome.stderr);
    assert!(took < Duration::from_secs(3), "took {took:?}");
    measured("shutdown, TERM to exit, cooperative emulator", mode, took);
}

fn stubborn_emulator_is_killed_at_the_deadline(mode: Mode) {
    let sandbox = Sandbox::new();
    let mut command = lsinit(&sandbox, &emulator(&["--on-term", "ignore"]));
    command.env("SHUTDOWN_TIMEOUT", "1").env("LS_LOG", "debug");
    let mut init = Init::start(mode, &command);
    init.wait_for_line("ready");

    let asked = Instant::now();
    init.signal(libc::SIGTERM);
    init.wait_for_line("got 15");
    // A restart request during the shutdown is read, and ignored.
    init.signal(libc::SIGUSR1);
    init.wait_until_read(libc::SIGUSR1);
    let outcome = init.finish();
    let took = asked.elapsed();

    assert_eq!(outcome.code(), Some(137), "{}", outcome.stderr);
    assert!(
        took >= Duration::from_secs(1),
        "killed before the deadline: {took:?}"
    );
    assert!(took < Duration::from_secs(4), "took {took:?}");
    let starts = outcome.stdout.matches("ready").count();
    assert_eq!(
        starts, 1,
        "restarted during the shutdown: {}",
        outcome.stdout
    );
    assert!(
        outcome.stderr.contains("got SIGUSR1 while not running"),
        "the USR1 was never read: {}",
        outcome.stderr
    );
}

fn second_term_kills_at_once(mode: Mode) {
    second_stop_signal_kills_at_once(mode, libc::SIGTERM);
}

fn int_after_term_kills_at_once(mode: Mode) {
    second_stop_signal_kills_at_once(mode, libc::SIGINT);
}

/// TERM, then `second` while the emulator ignores the TERM: KILL at once, not at the deadline.
fn second_stop_signal_kills_at_once(mode: Mode, second: i32) {
    let sandbox = Sandbox::new();
    let mut command = lsinit(&sandbox, &emulator(&["--on-term", "ignore"]));
    command.env("SHUTDOWN_TIMEOUT", "60");
    let mut init = Init::start(mode, &command);
    init.wait_for_line("ready");

    init.signal(libc::SIGTERM);
    init.wait_for_line("got 15");
    let again = Instant::now();
    init.signal(second);
    let outcome = init.finish();
    let took = again.elapsed();

    assert_eq!(outcome.code(), Some(137), "{}", outcome.stderr);
    assert!(took < Duration::from_secs(3), "took {took:?}");
    // One TERM reached the emulator (with the CONT that lsinit sends after it), INT never.
    let got = acknowledged(&outcome.stdout);
    let terms = got.iter().filter(|&&signo| signo == libc::SIGTERM).count();
    assert_eq!(terms, 1, "{}", outcome.stdout);
    assert!(!got.contains(&libc::SIGINT), "{}", outcome.stdout);
}

fn int_stops_the_emulator_with_one_term(mode: Mode) {
    let sandbox = Sandbox::new();
    // A non-zero status of the emulator's own, so a lost status (reported as 0) or lsinit's own
    // death by INT (130) cannot pass.
    let mut init = Init::start(mode, &lsinit(&sandbox, &emulator(&["--on-term", "exit:5"])));
    init.wait_for_line("ready");

    let asked = Instant::now();
    init.signal(libc::SIGINT);
    let outcome = init.finish();
    let took = asked.elapsed();

    assert_eq!(outcome.code(), Some(5), "{}", outcome.stderr);
    // INT becomes one TERM: the fixture acknowledges INT too, so a forwarded INT would show.
    assert_eq!(
        acknowledged(&outcome.stdout),
        [libc::SIGTERM],
        "{}",
        outcome.stdout
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

fn leftover_is_killed_at_the_original_deadline(mode: Mode) {
    let sandbox = Sandbox::new();
    let record = sandbox.scratch().join("terms");
    let record_arg = record.to_str().expect("utf-8 path");
    // The emulator acknowledges TERM and exits 12 only on the HUP the test sends 2 s later;
    // its group child ignores TERM.
    let options = ["--stubborn-child", record_arg, "--on-term", "wait-hup:12"];
    let mut command = lsinit(&sandbox, &emulator(&options));
    command.env("SHUTDOWN_TIMEOUT", "3");
    let mut init = Init::start(mode, &command);
    let ready = init.wait_for_line("ready");
    let stubborn: i32 = field(&ready, "helpers").parse().expect("pid");

    let asked = Instant::now();
    init.signal(libc::SIGTERM);
    init.wait_for_line("got 15");
    // Deliberately time-based: the emulator uses 2 s of the 3 s deadline.
    std::thread::sleep(Duration::from_secs(2).saturating_sub(asked.elapsed()));
    init.signal(libc::SIGHUP);
    init.wait_for_line("got 1");
    let outcome = init.finish();
    let took = asked.elapsed();

    // The emulator's own status, not the leftover's (137).
    assert_eq!(outcome.code(), Some(12), "{}", outcome.stderr);
    assert!(read(&record).contains("stubborn-child got 15"));
    // One deadline, 3 s after the TERM: a fresh one when the emulator exited would be 2 + 3 s.
    assert!(
        took >= Duration::from_millis(2900),
        "killed before the deadline: {took:?}"
    );
    assert!(
        took < Duration::from_millis(4500),
        "the deadline started again: {took:?}"
    );
    if mode == Mode::Subreaper {
        assert!(!is_alive(stubborn), "process {stubborn} outlived lsinit");
    }
    measured(
        "shutdown with a slow emulator and a stubborn leftover",
        mode,
        took,
    );
}

fn leftovers_get_term_and_are_gone(mode: Mode) {
    let sandbox = Sandbox::new();
    let record = sandbox.scratch().join("terms");
    let record_arg = record.to_str().expect("utf-8 path");
    let options = [
        "--group-child",
        record_arg,
        "--session-child",
        record_arg,
        "--on-term",
        "exit:6",
    ];
    let mut init = Init::start(mode, &lsinit(&sandbox, &emulator(&options)));
    let ready = init.wait_for_line("ready");
    let helpers: Vec<i32> = field(&ready, "helpers")
        .split(',')
        .map(|pid| pid.parse().expect("pid"))
        .collect();

    let asked = Instant::now();
    init.signal(libc::SIGTERM);
    let outcome = init.finish();
    let took = asked.elapsed();

    assert_eq!(outcome.code(), Some(6), "{}", outcome.stderr);
    assert!(took < Duration::from_secs(4), "took {took:?}");
    let terms = read(&record);
    assert!(terms.contains("group-child got 15"), "{terms:?}");
    assert!(terms.contains("session-child got 15"), "{terms:?}");
    if mode == Mode::Subreaper {
        // Under PID 1 the namespace is gone with lsinit; here they must be gone by lsinit's hand.
        for pid in helpers {
            assert!(!is_alive(pid), "process {pid} outlived lsinit");
        }
    }
}

fn stubborn_leftover_is_killed_at_the_deadline(mode: Mode) {
    let sandbox = Sandbox::new();
    let record = sandbox.scratch().join("terms");
    let record_arg = record.to_str().expect("utf-8 path");
    let options = ["--stubborn-child", record_arg, "--on-term", "exit:8"];
    let mut command = lsinit(&sandbox, &emulator(&options));
    command.env("SHUTDOWN_TIMEOUT", "1");
    let mut init = Init::start(mode, &command);
    let ready = init.wait_for_line("ready");
    let stubborn: i32 = field(&ready, "helpers").parse().expect("pid");

    let asked = Instant::now();
    init.signal(libc::SIGTERM);
    let outcome = init.finish();
    let took = asked.elapsed();

    // The emulator's own status, not the leftover's.
    assert_eq!(outcome.code(), Some(8), "{}", outcome.stderr);
    assert!(
        took >= Duration::from_secs(1),
        "killed before the deadline: {took:?}"
    );
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert!(read(&record).contains("stubborn-child got 15"));
    if mode == Mode::Subreaper {
        assert!(!is_alive(stubborn), "process {stubborn} outlived lsinit");
    }
}

// ---------------------------------------------------------------------------------------------
// Restart

fn restart_gives_a_new_emulator(mode: Mode) {
    let sandbox = Sandbox::new();
    let pids = sandbox.scratch().join("pids");
    let options = [
        "--pids",
        pids.to_str().expect("utf-8"),
        "--on-term",
        "exit:9",
    ];
    let mut init = Init::start(mode, &lsinit(&sandbox, &emulator(&options)));
    let first = init.wait_for_line("ready");

    let asked = Instant::now();
    init.signal(libc::SIGUSR1);
    let second = init.wait_for_line("ready");
    let took = asked.elapsed();

    assert_ne!(
        field(&first, "pid"),
        field(&second, "pid"),
        "no new emulator"
    );
    // The old emulator was gone before the new one started.
    assert_eq!(field(&second, "overlap"), "0", "{second}");
    // lsinit is the same process: the new emulator's parent and SUPERVISOR_PID.
    for line in [&first, &second] {
        assert_eq!(field(line, "ppid"), init.pid_inside(), "{line}");
        assert_eq!(field(line, "supervisor"), init.pid_inside(), "{line}");
    }
    assert!(is_alive(init.pid));
    measured("restart, USR1 to the new emulator's ready line", mode, took);

    init.signal(libc::SIGTERM);
    let outcome = init.finish();
    assert_eq!(outcome.code(), Some(9), "{}", outcome.stderr);
}

fn restart_waits_for_the_old_emulators_group(mode: Mode) {
    let sandbox = Sandbox::new();
    let pids = sandbox.scratch().join("pids");
    let record = sandbox.scratch().join("terms");
    let options = [
        "--pids",
        pids.to_str().expect("utf-8"),
        "--group-child",
        record.to_str().expect("utf-8"),
        "--linger",
        "0.3",
        "--on-term",
        "exit:10",
    ];
    let mut init = Init::start(mode, &lsinit(&sandbox, &emulator(&options)));
    init.wait_for_line("ready");

    init.signal(libc::SIGUSR1);
    let second = init.wait_for_line("ready");

    // The old emulator's group child got TERM and took its time; the new emulator started only
    // when it was gone.
    assert!(read(&record).contains("group-child got 15"));
    assert_eq!(field(&second, "overlap"), "0", "{second}");
    init.signal(libc::SIGTERM);
    let outcome = init.finish();
    assert_eq!(outcome.code(), Some(10), "{}", outcome.stderr);
}

fn usr1_burst_restarts_one_at_a_time(mode: Mode) {
    let sandbox = Sandbox::new();
    let pids = sandbox.scratch().join("pids");
    let options = [
        "--pids",
        pids.to_str().expect("utf-8"),
        "--on-term",
        "exit:11",
    ];
    let mut init = Init::start(mode, &lsinit(&sandbox, &emulator(&options)));
    init.wait_for_line("ready");

    let (bursts, per_burst) = (4, 20);
    for _ in 0..bursts {
        for _ in 0..per_burst {
            init.signal(libc::SIGUSR1);
        }
        init.wait_until_read(libc::SIGUSR1);
        init.wait_for_line("ready");
    }
    wait_until_no_restart_in_flight(&mut init);
    init.signal(libc::SIGTERM);
    let outcome = init.finish();

    // The emulator that got the TERM had blocked its signals (it said ready): its own status.
    assert_eq!(outcome.code(), Some(11), "{}", outcome.stderr);
    // lsinit's log of each restart: asked, old one stopped, new one started. One restart in
    // flight at a time means these never interleave.
    let steps: Vec<&str> = outcome
        .stderr
        .lines()
        .filter_map(|line| {
            if line.contains("got SIGUSR1: restarting") {
                Some("asked")
            } else if line.contains("for the restart") {
                Some("stopped")
            } else if line.contains("restarted the emulator") {
                Some("started")
            } else {
                None
            }
        })
        .collect();
    for (i, step) in steps.iter().enumerate() {
        assert_eq!(*step, ["asked", "stopped", "started"][i % 3], "{steps:?}");
    }
    let restarts = steps.iter().filter(|s| **s == "started").count();
    assert!(
        restarts >= 1 && restarts < bursts * per_burst,
        "{restarts} restarts"
    );
    for line in outcome.stdout.lines().filter(|l| l.starts_with("ready")) {
        assert_eq!(field(line, "overlap"), "0", "two emulators at once: {line}");
    }
    let started = read(&pids);
    let mut distinct: Vec<&str> = started.lines().collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), started.lines().count(), "{started}");
    measured("restarts from 4 bursts of 20 USR1", mode, restarts);
}

/// Waits until lsinit runs an emulator that is ready and no restart is under way. A probe
/// (`WINCH`) is read by lsinit after any `USR1` before it, so a restart that `USR1` began has sent
/// its `TERM` by then: the emulator that got it exits on that `TERM` (it is read first) and never
/// acknowledges the probe, so an acknowledgement means the probe reached a running emulator.
/// Otherwise the new emulator's `ready` comes first, and the probe is sent again.
fn wait_until_no_restart_in_flight(init: &mut Init) {
    let probe = libc::SIGWINCH;
    let acknowledged = format!("got {probe}");
    loop {
        init.signal(probe);
        init.wait_until_read(probe);
        let line = init
            .running()
            .wait_for_any_line(&[&acknowledged, "ready"], PATIENCE);
        if line.contains(&acknowledged) {
            return;
        }
    }
}

fn term_during_restart_wins(mode: Mode) {
    let sandbox = Sandbox::new();
    let options = ["--on-term", "wait-hup:7"];
    let mut init = Init::start(mode, &lsinit(&sandbox, &emulator(&options)));
    init.wait_for_line("ready");

    init.signal(libc::SIGUSR1);
    // The emulator got the restart's TERM and takes its time; now lsinit gets TERM.
    init.wait_for_line("got 15");
    init.signal(libc::SIGTERM);
    init.wait_until_read(libc::SIGTERM);
    // HUP is still forwarded during the shutdown; it lets the old emulator exit with 7.
    init.signal(libc::SIGHUP);
    init.wait_for_line("got 1");
    let outcome = init.finish();

    assert_eq!(outcome.code(), Some(7), "{}", outcome.stderr);
    let starts = outcome.stdout.matches("ready").count();
    assert_eq!(starts, 1, "a new emulator started: {}", outcome.stdout);
}

/// A sandbox whose cached license goes stale `stale_in` from now, and a server that knows it.
fn stale_license_setup(
    stale_in: time::Duration,
) -> (Sandbox, LicenseServer, String, OffsetDateTime) {
    let sandbox = Sandbox::new();
    let server = LicenseServer::start().expect("license server");
    server.add_credential(Credential::auth_token(TOKEN));
    let id = new_license_id();
    let template = LicenseTemplate {
        reactivate_after: stale_in,
        ..LicenseTemplate::default()
    };
    let license = make_license(&template, TOKEN, VERSION, &id);
    server.remember_license(&id, TOKEN);
    let stale_at = parse_date(license["reactivate_after"].as_str().expect("date")).expect("date");
    fs::create_dir_all(sandbox.cache_file().parent().expect("cache dir")).expect("cache dir");
    fs::write(
        sandbox.cache_file(),
        serde_json::to_vec(&license).expect("json"),
    )
    .expect("cached license");
    (sandbox, server, id, stale_at)
}

fn licensed(sandbox: &Sandbox, server: &LicenseServer, command: &[OsString]) -> Command {
    let mut lsinit =
        sandbox.command(std::iter::once(OsString::from("--")).chain(command.iter().cloned()));
    lsinit
        .env("LOCALSTACK_AUTH_TOKEN", TOKEN)
        .env("API_ENDPOINT", server.url());
    lsinit
}

fn wait_until_past(at: OffsetDateTime) {
    // Wall-clock time has no readiness signal: sleep until it has passed.
    let left = at - OffsetDateTime::now_utc() + time::Duration::milliseconds(100);
    if left.is_positive() {
        std::thread::sleep(left.unsigned_abs());
    }
}

/// How long the cached license stays fresh in the re-activation tests: long enough for lsinit and
/// the first emulator to start on a loaded machine, so that only the restart re-activates.
const STALE_IN: time::Duration = time::Duration::seconds(5);

fn restart_reactivates_a_stale_license(mode: Mode) {
    let (sandbox, server, id, stale_at) = stale_license_setup(STALE_IN);
    let command = licensed(&sandbox, &server, &emulator(&["--on-term", "exit:12"]));
    let mut init = Init::start(mode, &command);
    init.wait_for_line("ready");
    assert_eq!(
        server.request_count(),
        0,
        "the cached license was valid at the start"
    );

    wait_until_past(stale_at);
    let asked = Instant::now();
    init.signal(libc::SIGUSR1);
    init.wait_for_line("ready");
    let took = asked.elapsed();

    let requests = server.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert!(
        requests[0].path.ends_with("/license/activate"),
        "{}",
        requests[0].path
    );
    let sent_id = requests[0]
        .json
        .as_ref()
        .and_then(|body| body["license_id"].as_str());
    assert_eq!(sent_id, Some(id.as_str()));
    let cached: serde_json::Value =
        serde_json::from_slice(&fs::read(sandbox.cache_file()).expect("cache")).expect("json");
    let renewed = parse_date(cached["reactivate_after"].as_str().expect("date")).expect("date");
    assert!(
        renewed > OffsetDateTime::now_utc(),
        "the cache was not renewed"
    );
    measured("restart with a re-activation, USR1 to ready", mode, took);

    init.signal(libc::SIGTERM);
    let outcome = init.finish();
    assert_eq!(outcome.code(), Some(12), "{}", outcome.stderr);
}

fn term_during_reactivation_starts_no_emulator(mode: Mode) {
    let (sandbox, server, id, stale_at) = stale_license_setup(STALE_IN);
    server.push_fault(Fault::NoAnswer);
    let command = licensed(&sandbox, &server, &emulator(&["--on-term", "exit:7"]));
    let mut init = Init::start(mode, &command);
    init.wait_for_line("ready");

    wait_until_past(stale_at);
    init.signal(libc::SIGUSR1);
    init.wait_for_line("got 15");
    wait_until("the re-activation request arrives", || {
        server.request_count() == 1
    });
    let asked = Instant::now();
    init.signal(libc::SIGTERM);
    let outcome = init.finish();
    let took = asked.elapsed();

    // The old emulator's status, and no new emulator.
    assert_eq!(outcome.code(), Some(7), "{}", outcome.stderr);
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(
        outcome.stdout.matches("ready").count(),
        1,
        "{}",
        outcome.stdout
    );
    let cached: serde_json::Value =
        serde_json::from_slice(&fs::read(sandbox.cache_file()).expect("cache")).expect("json");
    assert_eq!(cached["id"].as_str(), Some(id.as_str()));
    let cache_dir = sandbox.cache_file().parent().expect("dir").to_path_buf();
    for entry in fs::read_dir(cache_dir).expect("cache dir").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".tmp"), "temp file left: {name}");
    }
}

#[test]
fn term_while_the_license_server_stalls_exits_at_once_as_pid1() {
    let sandbox = Sandbox::new();
    let server = LicenseServer::start().expect("license server");
    server.add_credential(Credential::auth_token(TOKEN));
    server.push_fault(Fault::NoAnswer);
    let started = sandbox.scratch().join("started");
    let script = format!("touch '{}'", started.display());
    let init = Init::start(Mode::Pid1, &licensed(&sandbox, &server, &sh(&script)));
    wait_until("the activation request arrives", || {
        server.request_count() == 1
    });

    // Before the emulator exists, a restart request and forwardable signals are dropped.
    for signo in [libc::SIGUSR1, libc::SIGHUP, libc::SIGWINCH] {
        init.signal(signo);
        init.wait_until_read(signo);
    }
    let asked = Instant::now();
    init.signal(libc::SIGTERM);
    let outcome = init.finish();
    let took = asked.elapsed();

    assert_eq!(outcome.code(), Some(143), "{}", outcome.stderr);
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(!started.exists(), "the emulator was started");
    let cache_dir = sandbox.cache_file().parent().expect("dir").to_path_buf();
    for entry in fs::read_dir(cache_dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            name != "license.json" && !name.ends_with(".tmp"),
            "left in the cache: {name}"
        );
    }
    measured("early TERM to exit while activating", Mode::Pid1, took);
}

// ---------------------------------------------------------------------------------------------
// Reaping

fn abandoned_orphans_are_reaped(mode: Mode) {
    let sandbox = Sandbox::new();
    let command = lsinit(
        &sandbox,
        &emulator(&["--orphans", "1500", "--on-term", "exit:13"]),
    );
    let mut init = Init::start(mode, &command);
    init.wait_for_line("orphans=1500");
    init.wait_for_line("ready");
    let pid = init.pid;
    // Every orphan was adopted by lsinit (or exited before it could be): once none is left as a
    // zombie, lsinit's only child is the emulator.
    // An orphan may still be running when the zombies are counted, so wait for both: a reaping
    // failure keeps zombies (or children) above the mark until the wait times out.
    wait_until("only the emulator is left, no zombie", || {
        zombie_children(pid) == 0 && children(pid).len() == 1
    });

    init.signal(libc::SIGTERM);
    let outcome = init.finish();
    assert_eq!(outcome.code(), Some(13), "{}", outcome.stderr);
}

fn zombie_storm_never_hangs_lsinit(mode: Mode) {
    let sandbox = Sandbox::new();
    let options = ["--zombie-storm", "--on-term", "exit:14"];
    let mut init = Init::start(mode, &lsinit(&sandbox, &emulator(&options)));
    init.wait_for_line("ready");

    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let asked = Instant::now();
        init.signal(libc::SIGHUP);
        init.wait_for_line("got 1");
        slowest = slowest.max(asked.elapsed());
    }
    let asked = Instant::now();
    init.signal(libc::SIGTERM);
    let outcome = init.finish();
    let took = asked.elapsed();

    assert_eq!(outcome.code(), Some(14), "{}", outcome.stderr);
    assert!(took < Duration::from_secs(10), "took {took:?}");
    measured(
        "slowest HUP round trip during a zombie storm",
        mode,
        slowest,
    );
    measured("shutdown during a zombie storm", mode, took);
}

// ---------------------------------------------------------------------------------------------
// Storms

fn signal_storm_leaves_the_emulator_alive(mode: Mode) {
    let sandbox = Sandbox::new();
    let options = ["--quiet-storm", "--on-term", "exit:16"];
    let mut init = Init::start(mode, &lsinit(&sandbox, &emulator(&options)));
    init.wait_for_line("ready");

    let storm = [libc::SIGHUP, libc::SIGUSR2, libc::SIGWINCH];
    for i in 0..10_000 {
        init.signal(storm[i % storm.len()]);
    }
    // Still there and listening: a QUIT comes back, then TERM is honoured.
    init.signal(libc::SIGQUIT);
    init.wait_for_line("got 3");
    let asked = Instant::now();
    init.signal(libc::SIGTERM);
    let outcome = init.finish();

    assert_eq!(outcome.code(), Some(16), "{}", outcome.stderr);
    assert!(asked.elapsed() < Duration::from_secs(5));
    assert_eq!(
        acknowledged(&outcome.stdout),
        [libc::SIGQUIT, libc::SIGTERM]
    );
    let count = outcome
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("count="))
        .expect("count line");
    measured(
        "storm signals that reached the emulator (of 10000)",
        mode,
        count,
    );
}

/// Sends `signo` to `pid` as fast as it can for at most `length`, until `stop` is set or the
/// process is gone. Through a pidfd: the signals can never reach another process that got the
/// same pid after lsinit exited and was reaped.
fn flood(pid: i32, signo: i32, length: Duration, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    assert!(fd >= 0, "pidfd_open: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a freshly opened descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd) };
    std::thread::spawn(move || {
        let until = Instant::now() + length;
        let mut sent = 0;
        while !stop.load(Ordering::Relaxed) && Instant::now() < until {
            // SAFETY: pidfd_send_signal(2) on our own pidfd with no siginfo; the process it
            // names was started by this test.
            let result = unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    pidfd.as_raw_fd(),
                    signo,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
            match result {
                0 => sent += 1,
                // A full real-time queue: the flood is at its peak, go on.
                _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN) => {}
                _ => break,
            }
        }
        sent
    })
}

fn signal_flood_cannot_hold_off_the_deadline(mode: Mode) {
    let sandbox = Sandbox::new();
    let mut command = lsinit(&sandbox, &emulator(&["--on-term", "ignore"]));
    command.env("SHUTDOWN_TIMEOUT", "1");
    let mut init = Init::start(mode, &command);
    init.wait_for_line("ready");

    // Real-time signals queue, so lsinit always has one more to read than it can handle.
    let stop = Arc::new(AtomicBool::new(false));
    let flooding = flood(
        init.pid,
        libc::SIGRTMIN() + 1,
        Duration::from_secs(12),
        Arc::clone(&stop),
    );
    let asked = Instant::now();
    init.signal(libc::SIGTERM);
    let status = wait_with_limit(&mut init.running().child, PATIENCE);
    let took = asked.elapsed();
    stop.store(true, Ordering::Relaxed);
    let sent = flooding.join().expect("flood");
    let outcome = init.finish();

    assert_eq!(status.code(), Some(137), "{}", outcome.stderr);
    assert!(
        took >= Duration::from_secs(1),
        "killed before the deadline: {took:?}"
    );
    assert!(
        took < Duration::from_secs(4),
        "the flood held off the deadline: {took:?}"
    );
    measured("signals sent during a 1 s shutdown", mode, sent);
}

/// glibc's internal signals 32 and 33 (which glibc's own `sigprocmask` cannot block) sent to
/// lsinit: it neither dies of them nor passes them on to the emulator, also after a restart (a
/// new thread makes glibc unblock them).
#[test]
fn glibc_internal_signals_neither_end_lsinit_nor_reach_the_emulator() {
    let mode = Mode::Subreaper;
    let sandbox = Sandbox::new();
    let mut launch = launcher(
        mode,
        &lsinit(&sandbox, &emulator(&["--on-term", "exit:18"])),
    );
    // As in a container: 32 and 33 at their default (glibc's posix_spawn, which std would use
    // here, leaves them ignored). Their default action ends a process.
    // SAFETY: runs in the forked child before exec; rt_sigaction is async-signal-safe and the
    // action (SIG_DFL, no flags, no restorer, empty mask: the kernel's x86_64/aarch64 layout,
    // four words) is on the stack.
    unsafe {
        launch.pre_exec(|| {
            let default_action = [0usize; 4];
            for signo in [32, 33] {
                let result = libc::syscall(
                    libc::SYS_rt_sigaction,
                    signo,
                    default_action.as_ptr(),
                    std::ptr::null_mut::<usize>(),
                    8usize,
                );
                if result != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut init = Init::start_command(mode, launch);
    init.wait_for_line("ready");

    for round in ["first emulator", "after a restart"] {
        for signo in [32, 33] {
            init.signal(signo);
        }
        // Still there, and the emulator still answers (a glibc emulator dies of 32 or 33).
        init.signal(libc::SIGHUP);
        init.wait_for_line("got 1");
        assert!(is_alive(init.pid), "{round}: lsinit died");
        if round == "first emulator" {
            init.signal(libc::SIGUSR1);
            init.wait_for_line("ready");
        }
    }
    init.signal(libc::SIGTERM);
    let outcome = init.finish();

    assert_eq!(outcome.code(), Some(18), "{}", outcome.stderr);
    assert_eq!(
        outcome.stdout.matches("ready").count(),
        2,
        "{}",
        outcome.stdout
    );
}

// ---------------------------------------------------------------------------------------------
// What the emulator inherits

/// Prints the shell's signal mask, ignored signals, descriptors and directory between
/// `state-begin` and `state-end`, then becomes `sleep` (TERM ends it: status 143). The shell
/// reads its own status with builtins (a child reading it would catch the mask the shell holds
/// while it forks), and opens no descriptor while `ls` and `readlink` look at it from outside.
const STATE_PROBE: &str = "echo state-begin; \
    while read -r key value; do \
        case $key in SigBlk:|SigIgn:) echo \"$key $value\";; esac; \
    done < /proc/$$/status; \
    echo fds; ls /proc/$$/fd; echo cwd; readlink /proc/$$/cwd; echo state-end; \
    echo ready; exec sleep 1000";

/// The signals this test process ignores, as a child of it starts with them: std resets
/// `SIGPIPE`, which Rust's runtime ignores, and leaves the rest (whatever the test's own caller
/// ignored) as it is.
fn ignored_by_the_test_process() -> u64 {
    let ignored = status_field(std::process::id() as i32, "SigIgn").expect("SigIgn");
    u64::from_str_radix(&ignored, 16).expect("hex") & !signal_bit(libc::SIGPIPE)
}

/// The signals a program started the way [`launcher`] starts lsinit finds ignored, that is the
/// state lsinit's caller gives it. Not simply the test's own: without a pre-exec hook std uses
/// glibc's `posix_spawn`, which starts the child with glibc's internal signals 32 and 33 ignored.
fn ignored_by_a_plain_child(mode: Mode) -> String {
    let mut probe = Command::new("/usr/bin/grep");
    probe.args(["SigIgn", "/proc/self/status"]);
    let output = launcher(mode, &probe).output().expect("the probe runs");
    let line = String::from_utf8(output.stdout).expect("utf-8");
    line.trim()
        .strip_prefix("SigIgn:")
        .expect("SigIgn line")
        .trim()
        .to_string()
}

fn signal_bit(signo: i32) -> u64 {
    1 << (signo - 1)
}

struct ChildState {
    blocked: String,
    ignored: String,
    fds: Vec<String>,
    cwd: String,
}

fn child_state(init: &mut Init) -> ChildState {
    let lines = init.wait_for_lines("state-end");
    let start = lines
        .iter()
        .position(|l| l == "state-begin")
        .expect("state-begin");
    let lines = &lines[start + 1..];
    let value = |prefix: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let fds_at = lines.iter().position(|l| l == "fds").expect("fds");
    let cwd_at = lines.iter().position(|l| l == "cwd").expect("cwd");
    ChildState {
        blocked: value("SigBlk:"),
        ignored: value("SigIgn:"),
        fds: lines[fds_at + 1..cwd_at].to_vec(),
        cwd: lines[cwd_at + 1].clone(),
    }
}

/// Has the process started by `command` begin with exactly descriptors 0, 1, 2 and `passed`
/// (pointing at /dev/null), and `ignored` signals ignored; everything else is close-on-exec.
fn as_a_caller_would(command: &mut Command, passed: i32, ignored: &'static [i32]) {
    let null = fs::File::open("/dev/null").expect("/dev/null");
    // SAFETY: runs in the forked child before exec; dup2, fcntl, close_range and signal are
    // async-signal-safe and nothing here allocates.
    unsafe {
        command.pre_exec(move || {
            for &signo in ignored {
                libc::signal(signo, libc::SIG_IGN);
            }
            // dup2 clears close-on-exec on the copy, unless it is a copy onto itself.
            let copied = if null.as_raw_fd() == passed {
                libc::fcntl(passed, libc::F_SETFD, 0)
            } else {
                libc::dup2(null.as_raw_fd(), passed)
            };
            if copied == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // Whatever the test process holds (its own pipes, other tests' sockets) stays out.
            let cloexec = libc::CLOSE_RANGE_CLOEXEC as libc::c_int;
            libc::syscall(libc::SYS_close_range, 3u32, (passed - 1) as u32, cloexec);
            libc::syscall(
                libc::SYS_close_range,
                (passed + 1) as u32,
                u32::MAX,
                cloexec,
            );
            Ok(())
        });
    }
}

fn emulator_gets_the_callers_state(mode: Mode) {
    const PASSED_FD: i32 = 5;
    let sandbox = Sandbox::new();
    let work_dir = sandbox.scratch().join("work dir");
    fs::create_dir_all(&work_dir).expect("work dir");

    // Licensed, so lsinit has had a socket of its own before it starts the emulator.
    let server = LicenseServer::start().expect("license server");
    server.add_credential(Credential::auth_token(TOKEN));
    let mut command = licensed(&sandbox, &server, &sh(STATE_PROBE));
    command.current_dir(&work_dir);
    let mut launch = launcher(mode, &command);
    as_a_caller_would(&mut launch, PASSED_FD, &[libc::SIGHUP, libc::SIGPIPE]);
    let mut init = Init::start_command(mode, launch);

    let callers_ignored = format!(
        "{:016x}",
        ignored_by_the_test_process() | signal_bit(libc::SIGHUP) | signal_bit(libc::SIGPIPE)
    );
    let expected_fds = ["0", "1", "2", &PASSED_FD.to_string()].map(String::from);
    let first = child_state(&mut init);
    init.wait_for_line("ready");
    // lsinit itself keeps no directory busy.
    let own_cwd = fs::read_link(format!("/proc/{}/cwd", init.pid)).expect("lsinit's cwd");
    assert_eq!(own_cwd, Path::new("/"));
    init.signal(libc::SIGUSR1);
    let second = child_state(&mut init);
    init.wait_for_line("ready");
    for (when, state) in [("first start", first), ("after a restart", second)] {
        assert_eq!(state.blocked, "0000000000000000", "{when}: blocked signals");
        assert_eq!(state.ignored, callers_ignored, "{when}: ignored signals");
        assert_eq!(state.fds, expected_fds, "{when}: descriptors");
        assert_eq!(Path::new(&state.cwd), work_dir, "{when}: directory");
    }
    assert_eq!(server.request_count(), 1, "one activation, online");
    init.signal(libc::SIGTERM);
    let outcome = init.finish();
    assert_eq!(outcome.code(), Some(143), "{}", outcome.stderr);

    // A caller that leaves SIGPIPE at its default: so does the emulator, although lsinit itself
    // runs with SIGPIPE ignored (Rust's runtime does that).
    let mut init = Init::start(mode, &lsinit(&sandbox, &sh(STATE_PROBE)));
    let plain = child_state(&mut init);
    assert_eq!(plain.blocked, "0000000000000000");
    assert_eq!(plain.ignored, ignored_by_a_plain_child(mode));
    init.wait_for_line("ready");
    init.signal(libc::SIGTERM);
    assert_eq!(init.finish().code(), Some(143));
}

// ---------------------------------------------------------------------------------------------
// Terminal

/// The master side of a pseudo-terminal whose output is collected by a thread.
struct Terminal {
    master: OwnedFd,
    slave: PathBuf,
    output: Arc<(Mutex<Vec<u8>>, Condvar)>,
}

impl Terminal {
    fn open() -> Terminal {
        // SAFETY: posix_openpt returns a new descriptor or -1; close-on-exec from the start, so
        // processes other tests start at the same time never inherit it.
        let fd = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
        assert!(fd >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
        // SAFETY: fd is a freshly opened descriptor that nothing else owns.
        let master = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut name = [0 as libc::c_char; 128];
        // SAFETY: grantpt/unlockpt take the master descriptor; ptsname_r writes at most
        // name.len() bytes, NUL included, into the buffer.
        let slave = unsafe {
            assert_eq!(libc::grantpt(fd), 0);
            assert_eq!(libc::unlockpt(fd), 0);
            assert_eq!(libc::ptsname_r(fd, name.as_mut_ptr(), name.len()), 0);
            std::ffi::CStr::from_ptr(name.as_ptr())
        };
        let slave = PathBuf::from(slave.to_str().expect("utf-8 tty name"));

        let output = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let mut reader = fs::File::from(master.try_clone().expect("dup master"));
        let sink = Arc::clone(&output);
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            // Ends with EIO once no process holds the slave side any more.
            while let Ok(n @ 1..) = reader.read(&mut buffer) {
                let (bytes, changed) = &*sink;
                bytes.lock().expect("lock").extend_from_slice(&buffer[..n]);
                changed.notify_all();
            }
        });
        Terminal {
            master,
            slave,
            output,
        }
    }

    fn type_in(&self, text: &str) {
        // SAFETY: writes from a valid buffer to a descriptor we own.
        let written =
            unsafe { libc::write(self.master.as_raw_fd(), text.as_ptr().cast(), text.len()) };
        assert_eq!(written, text.len() as isize, "write to the terminal");
    }

    /// Waits until the terminal has shown `needle`; returns everything shown so far.
    fn wait_for(&self, needle: &str) -> String {
        let (bytes, changed) = &*self.output;
        let deadline = Instant::now() + PATIENCE;
        let mut shown = bytes.lock().expect("lock");
        loop {
            let text = String::from_utf8_lossy(&shown).into_owned();
            if text.contains(needle) {
                return text;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "the terminal never showed {needle:?}:\n{text}"
            );
            shown = changed.wait_timeout(shown, left).expect("lock").0;
        }
    }
}

/// lsinit on `terminal`, as `docker run -t` starts it: through the ctty helper, which makes
/// itself a session leader with the terminal as controlling terminal and stdio. As PID 1 the
/// helper becomes lsinit (exec); otherwise it runs lsinit as its child and reports on the
/// terminal whether it got the terminal back.
fn on_terminal(mode: Mode, terminal: &Terminal, lsinit: &Command) -> Init {
    let how = match mode {
        Mode::Pid1 => "exec",
        Mode::Subreaper => "fork",
    };
    let mut helper = match mode {
        Mode::Pid1 => {
            let mut unshare = Command::new("unshare");
            unshare.args([
                "--pid",
                "--fork",
                "--mount-proc",
                "--kill-child",
                "--",
                python(),
            ]);
            unshare
        }
        Mode::Subreaper => Command::new(python()),
    };
    helper.arg(fixture("ctty.py")).arg(how).arg(&terminal.slave);
    let command = wrapped(helper, lsinit);
    let mut init = Init::start_command(Mode::Subreaper, command);
    // lsinit is the child of unshare (after the helper's exec) or of the helper.
    init.pid = only_child(init.pid);
    init.mode = mode;
    init
}

fn ctrl_c_on_the_terminal_stops_the_emulator(mode: Mode) {
    let sandbox = Sandbox::new();
    let terminal = Terminal::open();
    let command = lsinit(&sandbox, &sh("echo emulator-ready; exec sleep 100"));
    let init = on_terminal(mode, &terminal, &command);
    terminal.wait_for("emulator-ready");

    terminal.type_in("\x03");
    let outcome = init.finish();

    assert_eq!(outcome.code(), Some(130), "{}", terminal.wait_for(""));
    if mode == Mode::Subreaper {
        let shown = terminal.wait_for("terminal-back=");
        assert!(shown.contains("terminal-back=1 status=130"), "{shown}");
    }
}

fn interactive_shell_has_job_control(mode: Mode) {
    let sandbox = Sandbox::new();
    let terminal = Terminal::open();
    let shell = ["bash", "--norc", "--noprofile", "-i"].map(OsString::from);
    let mut command = lsinit(&sandbox, &shell);
    command.env("PS1", "prompt> ");
    let init = on_terminal(mode, &terminal, &command);
    terminal.wait_for("prompt> ");

    // Quoting splits the markers, so the terminal's echo of the typed line never matches.
    terminal.type_in("sleep 100 &\n");
    terminal.type_in("jobs; echo job''s-listed\n");
    let listed = terminal.wait_for("jobs-listed\r\n");
    terminal.type_in("kill %1; wait; echo 'mon''itor='$-\n");
    let shown = terminal.wait_for("monitor=");
    terminal.type_in("exit 3\n");
    let outcome = init.finish();

    assert_eq!(outcome.code(), Some(3), "{shown}");
    assert!(!shown.contains("no job control"), "{shown}");
    assert!(listed.contains("Running"), "jobs lists the sleep: {listed}");
    let flags = shown
        .split("monitor=")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_default();
    assert!(
        flags.contains('m'),
        "monitor mode is off: {flags:?}\n{shown}"
    );
    if mode == Mode::Subreaper {
        assert!(
            terminal
                .wait_for("terminal-back=")
                .contains("terminal-back=1 status=3")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Idle

/// Context switches of every thread of `pid`, and its CPU ticks.
fn activity(pid: i32) -> Vec<String> {
    let mut counters = Vec::new();
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).expect("lsinit's tasks");
    for task in tasks.flatten() {
        let tid = task.file_name().to_string_lossy().into_owned();
        let status = fs::read_to_string(task.path().join("status")).expect("task status");
        for line in status.lines().filter(|l| l.contains("ctxt_switches")) {
            counters.push(format!("{tid} {line}"));
        }
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let fields: Vec<&str> = stat[stat.rfind(')').expect(")") + 1..]
        .split_whitespace()
        .collect();
    // utime and stime: fields 14 and 15 of stat, 12 and 13 after the command name.
    counters.push(format!("cpu {} {}", fields[11], fields[12]));
    counters.sort();
    counters
}

fn idle_lsinit_never_wakes_up(mode: Mode) {
    let sandbox = Sandbox::new();
    let mut init = Init::start(
        mode,
        &lsinit(&sandbox, &emulator(&["--on-term", "exit:17"])),
    );
    init.wait_for_line("ready");
    let pid = init.pid;
    // The emulator's start is lsinit's last event: let it settle into its sleep.
    wait_until("lsinit sleeps", || {
        status_field(pid, "State").is_some_and(|s| s.starts_with('S'))
    });

    let before = activity(pid);
    std::thread::sleep(Duration::from_secs(3));
    let after = activity(pid);
    assert_eq!(before, after, "lsinit woke up while idle");
    measured("lsinit's counters over 3 s idle", mode, &after);

    init.signal(libc::SIGTERM);
    assert_eq!(init.finish().code(), Some(17));
}

// Regressions from an adversarial run.

/// A stopped emulator (Ctrl-Z, SIGSTOP) still acts on the shutdown's TERM: CONT follows it.
fn stopped_emulator_still_stops_with_its_status(mode: Mode) {
    let sandbox = Sandbox::new();
    let script = "trap 'exit 7' TERM; echo ready; kill -STOP $$; while :; do sleep 1; done";
    let mut init = Init::start(
        mode,
        lsinit(&sandbox, &sh(script)).env("SHUTDOWN_TIMEOUT", "30"),
    );
    init.wait_for_line("ready");
    let emulator = only_child(init.pid);
    wait_until("the emulator is stopped", || {
        status_field(emulator, "State").is_some_and(|s| s.starts_with('T'))
    });

    let signalled = Instant::now();
    init.signal(libc::SIGTERM);
    let outcome = init.finish();

    assert_eq!(outcome.code(), Some(7), "{}", outcome.stderr);
    let took = signalled.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "waited for the deadline: {took:?}"
    );
}

in_both_modes!(stopped_emulator_still_stops_with_its_status);

/// Without this namespace's /proc, lsinit cannot walk its descendants: it must say so, and
/// must never signal pids read from another namespace's /proc.
#[test]
fn a_foreign_proc_is_not_trusted_for_leftovers() {
    let sandbox = Sandbox::new();
    let marks = sandbox.scratch();
    let lsinit_command = lsinit(&sandbox, &sh("exit 3"));
    // A new PID namespace without --mount-proc: /proc still shows the host's numbers. A sibling
    // of lsinit that it must not touch records any TERM it gets.
    let script = format!(
        "(trap 'echo term > \"{m}/sibling\"; exit 0' TERM; echo up > \"{m}/sibling-up\"; \
         while :; do sleep 1; done) & sibling=$!; \
         while [ ! -e \"{m}/sibling-up\" ]; do sleep 0.01; done; \
         \"$@\"; status=$?; kill -KILL $sibling; exit $status",
        m = marks.display()
    );
    let mut unshare = Command::new("unshare");
    unshare.args(["--pid", "--fork", "--kill-child", "sh", "-c", &script, "sh"]);
    let mut command = wrapped(unshare, &lsinit_command);

    let outcome = run(&mut command, PATIENCE);

    assert_eq!(outcome.code(), Some(3), "{}", outcome.stderr);
    assert!(
        !marks.join("sibling").exists(),
        "lsinit signalled a process that is not its own"
    );
    assert!(
        outcome.stderr.contains("belongs to another PID namespace"),
        "{}",
        outcome.stderr
    );
}

/// A usage error with a broken stderr still exits 2 (no panic on EPIPE).
#[test]
fn usage_error_with_a_closed_stderr_still_exits_2() {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills the two descriptors, which are owned below.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors were just created and are owned exactly once.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read_end);
    let sandbox = Sandbox::new();
    let mut command = sandbox.command(["-x"]);
    command.stdout(Stdio::null()).stderr(Stdio::from(write_end));

    let status = command.status().expect("lsinit runs");

    assert_eq!(status.code(), Some(2));
}

/// `--help` and `--version` with a closed stdout still exit 0 (no panic on EPIPE).
#[test]
fn help_and_version_with_a_closed_stdout_still_exit_0() {
    for flag in ["--help", "--version"] {
        let mut fds = [0; 2];
        // SAFETY: pipe(2) fills the two descriptors, which are owned below.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: both descriptors were just created and are owned exactly once.
        let (read_end, write_end) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        drop(read_end);
        let sandbox = Sandbox::new();
        let mut command = sandbox.command([flag]);
        command.stdout(Stdio::from(write_end)).stderr(Stdio::null());

        let status = command.status().expect("lsinit runs");

        assert_eq!(status.code(), Some(0), "{flag}");
    }
}
