//! Boot steps (SPEC 8): the logs folder and the `boot.d` BOOT hooks, run with a stand-in
//! `<venv>/bin/python` that records how it was called.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::*;

const LIMIT: Duration = Duration::from_secs(30);

/// A venv whose `bin/python` runs `script` (sh) with `$MARKS` set to a scratch folder, and a
/// `boot.d` folder when `with_boot_d`.
fn stand_in_runtime(sandbox: &Sandbox, script: &str, with_boot_d: bool) -> PathBuf {
    let marks = sandbox.scratch();
    let bin = sandbox.venv().join("bin");
    fs::create_dir_all(&bin).unwrap();
    let python = bin.join("python");
    let body = format!("#!/bin/sh\nMARKS='{}'\n{script}\n", marks.display());
    fs::write(&python, body).unwrap();
    fs::set_permissions(&python, fs::Permissions::from_mode(0o755)).unwrap();
    if with_boot_d {
        fs::create_dir_all(sandbox.config().join("init/boot.d")).unwrap();
    }
    marks
}

/// An emulator that leaves a mark when it starts.
fn emulator(marks: &Path) -> Vec<String> {
    let started = marks.join("emulator-started");
    vec![
        "sh".into(),
        "-c".into(),
        format!("touch '{}'", started.display()),
    ]
}

/// An emulator that exits 9 unless the hook left its mark, else leaves its own.
fn emulator_after_the_hook(marks: &Path) -> Vec<String> {
    let hook = marks.join("hook-ran");
    let started = marks.join("emulator-started");
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "[ -e '{}' ] || exit 9; touch '{}'",
            hook.display(),
            started.display()
        ),
    ]
}

/// Whether `pid` is still a live process (not gone, not a zombie).
fn is_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat[stat.rfind(')')? + 1..]
                .split_whitespace()
                .next()?
                .to_string();
            Some(state != "Z")
        })
        .unwrap_or(false)
}

#[test]
fn boot_hooks_run_before_the_emulator_with_the_users_activate_pro() {
    let sandbox = Sandbox::new();
    let record = "echo \"$@\" > \"$MARKS/args\"; echo \"ACTIVATE_PRO=[${ACTIVATE_PRO-unset}] \
                  SUPERVISOR_PID=$SUPERVISOR_PID\" > \"$MARKS/env\"; \
                  [ ! -e \"$MARKS/emulator-started\" ] && touch \"$MARKS/hook-ran\"";
    let marks = stand_in_runtime(&sandbox, record, true);

    // A raw value that means "off": the hooks must see it as the user wrote it.
    let mut command = sandbox.command(emulator_after_the_hook(&marks));
    let running = Running::start(command.env("ACTIVATE_PRO", " False "));
    let lsinit_pid = running.pid();
    let outcome = running.finish(LIMIT);

    assert_eq!(outcome.code(), Some(0), "{}", outcome.stderr);
    assert_eq!(
        fs::read_to_string(marks.join("args")).unwrap(),
        "-m localstack.runtime.init BOOT\n"
    );
    let env = fs::read_to_string(marks.join("env")).unwrap();
    assert_eq!(
        env,
        format!("ACTIVATE_PRO=[ False ] SUPERVISOR_PID={lsinit_pid}\n")
    );
    assert!(
        marks.join("emulator-started").exists(),
        "the emulator started after the hooks"
    );
    assert!(sandbox.volume().join("logs").is_dir());
}

#[test]
fn without_boot_d_no_hook_runs() {
    let sandbox = Sandbox::new();
    let marks = stand_in_runtime(&sandbox, "touch \"$MARKS/hook-ran\"", false);

    let outcome = run(
        sandbox.command(emulator(&marks)).env("ACTIVATE_PRO", "0"),
        LIMIT,
    );

    assert_eq!(outcome.code(), Some(0), "{}", outcome.stderr);
    assert!(!marks.join("hook-ran").exists());
    assert!(marks.join("emulator-started").exists());
}

#[test]
fn failing_boot_hooks_stop_the_container_with_their_status() {
    let sandbox = Sandbox::new();
    let marks = stand_in_runtime(&sandbox, "exit 3", true);

    let outcome = run(
        sandbox.command(emulator(&marks)).env("ACTIVATE_PRO", "0"),
        LIMIT,
    );

    assert_eq!(outcome.code(), Some(3), "{}", outcome.stderr);
    assert!(
        !marks.join("emulator-started").exists(),
        "the emulator must not start"
    );
    let error = outcome
        .stderr
        .lines()
        .find(|l| l.contains(" ERROR "))
        .unwrap_or("");
    assert!(error.contains("BOOT hooks"), "{}", outcome.stderr);
    assert!(error.contains("failed with status 3"), "{}", outcome.stderr);
}

/// lsinit as PID 1 of a new PID namespace (never on the host), or as an ordinary child.
fn launch(pid1: bool, lsinit: &Command) -> Command {
    if pid1 {
        as_pid1(lsinit)
    } else {
        copy_of(lsinit)
    }
}

/// TERM (or INT) while a cooperative hook runs: the hook gets it through its process group, has
/// time to finish, and lsinit exits 128 + the signal without starting the emulator.
fn stop_during_boot_hooks(as_pid1: bool, signo: i32) {
    let sandbox = Sandbox::new();
    // A background child in the hook's group, announced only once it runs `sleep` (a signal to a
    // forked shell that has not exec'd yet could be lost in the shell's trap).
    let script = "trap 'sleep 0.3; echo got-term > \"$MARKS/hook-term\"; exit 0' TERM INT; \
                  sleep 60 & \
                  while [ \"$(cat /proc/$!/comm 2>/dev/null)\" != sleep ]; do :; done; \
                  echo hook-ready; wait";
    let marks = stand_in_runtime(&sandbox, script, true);
    let mut command = sandbox.command(emulator(&marks));
    command.env("ACTIVATE_PRO", "0");
    let mut running = Running::start(&mut launch(as_pid1, &command));
    running.wait_for_line("hook-ready", LIMIT);

    // Under unshare, the signal goes to lsinit, unshare's only child.
    let target = if as_pid1 {
        let children = format!("/proc/{0}/task/{0}/children", running.pid());
        fs::read_to_string(children)
            .unwrap()
            .split_whitespace()
            .next()
            .expect("lsinit under unshare")
            .parse()
            .unwrap()
    } else {
        running.pid()
    };
    // SAFETY: kill(2) to lsinit, which this test started.
    assert_eq!(unsafe { libc::kill(target, signo) }, 0);
    let outcome = running.finish(Duration::from_secs(10));

    assert_eq!(outcome.code(), Some(128 + signo), "{}", outcome.stderr);
    assert!(
        outcome.elapsed < Duration::from_secs(5),
        "{:?}",
        outcome.elapsed
    );
    assert!(
        !marks.join("emulator-started").exists(),
        "the emulator must not start"
    );
    // The hook had its grace: it recorded the signal before lsinit exited (as PID 1, lsinit's
    // exit ends the namespace, so the mark proves the hook was waited for).
    assert!(marks.join("hook-term").exists(), "the hook never finished");
}

#[test]
fn term_during_boot_hooks_stops_them_and_exits_143() {
    stop_during_boot_hooks(false, libc::SIGTERM);
}

#[test]
fn term_during_boot_hooks_stops_them_and_exits_143_as_pid1() {
    stop_during_boot_hooks(true, libc::SIGTERM);
}

#[test]
fn int_during_boot_hooks_stops_them_and_exits_130() {
    stop_during_boot_hooks(false, libc::SIGINT);
}

#[test]
fn boot_hook_that_ignores_term_is_killed_at_the_deadline() {
    let sandbox = Sandbox::new();
    let script = "trap '' TERM; echo \"hook-ready pid=$$\"; while :; do sleep 1; done";
    let marks = stand_in_runtime(&sandbox, script, true);
    let mut command = sandbox.command(emulator(&marks));
    command
        .env("ACTIVATE_PRO", "0")
        .env("SHUTDOWN_TIMEOUT", "1");
    let mut running = Running::start(&mut command);
    let ready = running.wait_for_line("hook-ready", LIMIT);
    let hook: i32 = ready
        .split("pid=")
        .nth(1)
        .and_then(|pid| pid.trim().parse().ok())
        .expect("the hook's pid");

    running.signal(libc::SIGTERM);
    let outcome = running.finish(Duration::from_secs(10));

    assert_eq!(outcome.code(), Some(143), "{}", outcome.stderr);
    assert!(
        outcome.elapsed >= Duration::from_secs(1),
        "the hook had no grace: {:?}",
        outcome.elapsed
    );
    assert!(
        outcome.elapsed < Duration::from_secs(4),
        "{:?}",
        outcome.elapsed
    );
    assert!(!is_alive(hook), "the hook outlived lsinit");
    assert!(!marks.join("emulator-started").exists());
}

#[test]
fn missing_venv_python_with_boot_d_names_the_hook_command_and_the_fix() {
    let sandbox = Sandbox::new();
    fs::create_dir_all(sandbox.config().join("init/boot.d")).unwrap();
    let marks = sandbox.scratch();

    let outcome = run(
        sandbox.command(emulator(&marks)).env("ACTIVATE_PRO", "0"),
        LIMIT,
    );

    assert_eq!(outcome.code(), Some(127), "{}", outcome.stderr);
    let error = outcome
        .stderr
        .lines()
        .find(|l| l.contains(" ERROR "))
        .unwrap_or("");
    assert!(
        error.contains("bin/python -m localstack.runtime.init BOOT"),
        "{}",
        outcome.stderr
    );
    assert!(error.contains("LSINIT_VENV_DIR"), "{}", outcome.stderr);
    assert!(error.contains("init/boot.d"), "{}", outcome.stderr);
    assert!(
        !error.contains("cannot start the emulator"),
        "{}",
        outcome.stderr
    );
    assert!(!marks.join("emulator-started").exists());
    assert!(sandbox.volume().join("logs").is_dir());
}

#[test]
fn failing_boot_hooks_do_not_leave_their_background_processes_running() {
    let sandbox = Sandbox::new();
    let script = "(trap 'echo term > \"$MARKS/bg-term\"; exit 0' TERM; echo up > \"$MARKS/bg-up\"; \
                  while :; do sleep 1; done) & \
                  while [ ! -e \"$MARKS/bg-up\" ]; do sleep 0.01; done; exit 9";
    let marks = stand_in_runtime(&sandbox, script, true);

    let outcome = run(
        sandbox.command(emulator(&marks)).env("ACTIVATE_PRO", "0"),
        LIMIT,
    );

    assert_eq!(outcome.code(), Some(9), "{}", outcome.stderr);
    // The background process got TERM through the hook's process group; it records that as it
    // exits, after lsinit may already be gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !marks.join("bg-term").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        marks.join("bg-term").exists(),
        "the hook's background process never got TERM"
    );
}
