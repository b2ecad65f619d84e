//! Boot steps (SPEC 8): the logs folder and the `boot.d` BOOT hooks, run with a stand-in
//! `<venv>/bin/python` that records how it was called.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
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

#[test]
fn boot_hooks_run_before_the_emulator_with_the_users_activate_pro() {
    let sandbox = Sandbox::new();
    let record = "echo \"$@\" > \"$MARKS/args\"; echo \"ACTIVATE_PRO=${ACTIVATE_PRO-unset} \
                  SUPERVISOR_PID=$SUPERVISOR_PID\" > \"$MARKS/env\"; [ ! -e \"$MARKS/emulator-started\" ]";
    let marks = stand_in_runtime(&sandbox, record, true);

    let mut command = sandbox.command(emulator(&marks));
    let outcome = run(command.env("ACTIVATE_PRO", "0"), LIMIT);

    assert_eq!(outcome.code(), Some(0), "{}", outcome.stderr);
    assert_eq!(
        fs::read_to_string(marks.join("args")).unwrap(),
        "-m localstack.runtime.init BOOT\n"
    );
    let env = fs::read_to_string(marks.join("env")).unwrap();
    assert!(env.starts_with("ACTIVATE_PRO=0 SUPERVISOR_PID="), "{env}");
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

#[test]
fn term_during_boot_hooks_stops_them_and_exits_143() {
    let sandbox = Sandbox::new();
    let script = "trap 'echo got-term > \"$MARKS/hook-term\"; exit 0' TERM; echo hook-ready; \
                  sleep 60 & wait";
    let marks = stand_in_runtime(&sandbox, script, true);
    let mut running = Running::start(sandbox.command(emulator(&marks)).env("ACTIVATE_PRO", "0"));
    running.wait_for_line("hook-ready", LIMIT);

    running.signal(libc::SIGTERM);
    let outcome = running.finish(Duration::from_secs(10));

    assert_eq!(outcome.code(), Some(143), "{}", outcome.stderr);
    assert!(
        outcome.elapsed < Duration::from_secs(5),
        "{:?}",
        outcome.elapsed
    );
    assert!(
        !marks.join("emulator-started").exists(),
        "the emulator must not start"
    );
    // The hook got TERM through its process group; it records that as it exits.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !marks.join("hook-term").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(marks.join("hook-term").exists(), "the hook never got TERM");
}
