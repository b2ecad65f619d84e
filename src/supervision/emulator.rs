//! The emulator process (SPEC 7): its command line, its environment, and starting it in its own
//! process group with a clean signal state.
//!
//! Starting is here; watching it is the reaping loop's job, so nothing here ever waits.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::unistd::{Pid, getpid, tcsetpgrp};

use super::signals;
use crate::config::{Environment, Settings};

/// What to start, decided once and reused for every restart.
#[derive(Clone, Debug)]
pub struct Plan {
    pub program: OsString,
    pub args: Vec<OsString>,
    pub environment: Environment,
    /// The directory lsinit was started in, kept as a path for restarts.
    pub cwd: Option<PathBuf>,
    /// Make the emulator's group the terminal's foreground group.
    pub foreground: bool,
}

/// A running emulator.
#[derive(Clone, Copy, Debug)]
pub struct Emulator {
    pub pid: Pid,
}

/// Why the emulator could not start; maps to 127 or 126.
#[derive(Debug)]
pub struct SpawnError {
    pub program: OsString,
    pub error: io::Error,
}

impl SpawnError {
    pub fn exit_code(&self) -> u8 {
        if self.error.kind() == io::ErrorKind::NotFound {
            127
        } else {
            126
        }
    }
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let program = Path::new(&self.program).display();
        if self.exit_code() == 127 {
            write!(
                f,
                "cannot start the emulator: {program} was not found; check the command"
            )
        } else {
            write!(
                f,
                "cannot start the emulator: {program} is not executable ({})",
                self.error
            )
        }
    }
}

/// The emulator's command: the one given, else `LOCALSTACK_SUPERVISOR_COMMAND`, else the
/// runtime in the venv.
pub fn command_line(given: Vec<OsString>, settings: &Settings) -> Vec<OsString> {
    if !given.is_empty() {
        return given;
    }
    if let Some(words) = &settings.supervisor_command {
        return words.iter().map(OsString::from).collect();
    }
    vec![
        settings.roots.venv.join("bin/python").into_os_string(),
        "-m".into(),
        "localstack.runtime.main".into(),
    ]
}

/// SPEC 7's environment: the mapped environment, `SUPERVISOR_PID`, `ACTIVATE_PRO`, and the venv.
/// `activate_pro` is `None` to keep what the user set (the BOOT hooks see that).
pub fn environment(settings: &Settings, activate_pro: Option<&str>) -> Environment {
    let mut env = settings.environment.clone();
    env.set("SUPERVISOR_PID", getpid().to_string());
    match activate_pro {
        Some(value) => env.set("ACTIVATE_PRO", value),
        None => match &settings.activate_pro_raw {
            Some(raw) => env.set("ACTIVATE_PRO", raw.clone()),
            None => env.remove("ACTIVATE_PRO"),
        },
    }
    let venv = &settings.roots.venv;
    if venv.is_dir() {
        let bin = venv.join("bin");
        let mut path = bin.into_os_string();
        if let Some(old) = env.get("PATH").filter(|p| !p.is_empty()) {
            path.push(":");
            path.push(old);
        }
        env.set("PATH", path);
        env.set("VIRTUAL_ENV", venv.clone().into_os_string());
        env.remove("PYTHONHOME");
    }
    env
}

/// Starts the emulator in a new process group with an empty signal mask.
pub fn spawn(plan: &Plan) -> Result<Emulator, SpawnError> {
    let mut command = Command::new(&plan.program);
    command
        .args(&plan.args)
        .env_clear()
        .envs(plan.environment.iter())
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .process_group(0);
    if let Some(cwd) = &plan.cwd {
        command.current_dir(cwd);
    }
    let foreground = plan.foreground;
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // system calls (tcsetpgrp, sigprocmask) on values on the stack; it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if foreground {
                // The child is in its own group already; with every signal still blocked it can
                // take the terminal without being stopped by SIGTTOU. The parent does the same,
                // whichever runs first wins the race harmlessly.
                let stdin = BorrowedFd::borrow_raw(0);
                let _ = tcsetpgrp(stdin, getpid());
            }
            signals::unblock_all_in_child()
        });
    }
    let child = command.spawn().map_err(|error| SpawnError {
        program: plan.program.clone(),
        error,
    })?;
    let pid = Pid::from_raw(child.id() as i32);
    // The Child handle is dropped without waiting: the reaping loop collects the status.
    drop(child);
    if plan.foreground {
        let _ = tcsetpgrp(io::stdin().as_fd(), pid);
    }
    Ok(Emulator { pid })
}
