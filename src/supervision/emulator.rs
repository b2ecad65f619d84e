//! The emulator process (SPEC 7): its command line, its environment, and starting it in its own
//! process group with the signal state and descriptors of lsinit's caller, not lsinit's own.
//!
//! Starting is here; watching it is the reaping loop's job, so nothing here ever waits.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

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
    /// 127 not found, 126 not executable (SPEC 9); any other failure (no memory, too many
    /// processes) is lsinit failing to set up, 1.
    pub fn exit_code(&self) -> u8 {
        let not_executable = self.error.kind() == io::ErrorKind::PermissionDenied
            || matches!(
                self.error.raw_os_error(),
                Some(libc::ENOEXEC | libc::EISDIR | libc::ENOTDIR | libc::ELOOP)
            );
        if self.error.kind() == io::ErrorKind::NotFound {
            127
        } else if not_executable {
            126
        } else {
            1
        }
    }
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let program = Path::new(&self.program).display();
        match self.exit_code() {
            127 => write!(
                f,
                "cannot start the emulator: {program} was not found; check the command"
            ),
            126 => write!(
                f,
                "cannot start the emulator: {program} is not executable ({})",
                self.error
            ),
            _ => write!(
                f,
                "cannot start the emulator {program}: {}; check the container's memory and \
                 process limits",
                self.error
            ),
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

/// The directory lsinit was started in, for the emulator and the BOOT hooks. `None`, with a
/// warning, when it cannot be read (e.g. it was removed): they then start in lsinit's directory.
pub fn starting_directory() -> Option<PathBuf> {
    match std::env::current_dir() {
        Ok(dir) => Some(dir),
        Err(e) => {
            log::warn!(
                "cannot read the current directory ({e}); the emulator starts in lsinit's \
                 directory instead, check the container's working directory"
            );
            None
        }
    }
}

/// The descriptors lsinit was started with, which pass through to the emulator (as in tini).
/// `None` when they could not be listed: then only close-on-exec keeps lsinit's own away.
static INHERITED_DESCRIPTORS: OnceLock<Option<Vec<RawFd>>> = OnceLock::new();

/// Notes which descriptors came from lsinit's caller. Call it first thing in `main`, before
/// anything opens a file or a socket.
pub fn remember_inherited_descriptors() {
    let _ = INHERITED_DESCRIPTORS.set(open_descriptors().ok());
}

/// The descriptors open in this process, from `/proc/self/fd`.
fn open_descriptors() -> io::Result<Vec<RawFd>> {
    let listed: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")?
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect();
    // The listing saw its own directory descriptor, closed by now: keep only what is still open.
    // SAFETY: F_GETFD reads a flag and has no effect; an unknown descriptor fails with EBADF.
    Ok(listed
        .into_iter()
        .filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1)
        .collect())
}

/// lsinit's own descriptors now open (signalfd, event loop, anything a library opened), which the
/// emulator must not get even if one lacks close-on-exec by mistake.
fn own_descriptors() -> Vec<RawFd> {
    let Some(Some(inherited)) = INHERITED_DESCRIPTORS.get() else {
        return Vec::new();
    };
    match open_descriptors() {
        Ok(open) => open
            .into_iter()
            .filter(|fd| *fd > 2 && !inherited.contains(fd))
            .collect(),
        Err(e) => {
            // LIMITATION: without /proc, a descriptor of lsinit's that lacks close-on-exec (none
            // does today: std, tokio and nix all set it) would reach the emulator.
            log::debug!("cannot list /proc/self/fd ({e}), thus relying on close-on-exec alone");
            Vec::new()
        }
    }
}

/// Starts the emulator in a new process group with an empty signal mask, the caller's `SIGPIPE`
/// disposition, the caller's descriptors and none of lsinit's, in `plan.cwd`.
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
    match &plan.cwd {
        Some(cwd) if cwd.is_dir() => {
            command.current_dir(cwd);
        }
        // Gone since lsinit started (a restart much later): a missing directory would fail the
        // spawn as if the program were missing.
        Some(cwd) => {
            log::warn!(
                "the starting directory {} is gone; starting the emulator in /",
                cwd.display()
            );
            command.current_dir("/");
        }
        None => {}
    }
    let foreground = plan.foreground;
    // Listed here, in the parent: the child may not allocate. Descriptors std opens for the spawn
    // itself come later and are close-on-exec.
    let own = own_descriptors();
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // system calls (sigprocmask, tcsetpgrp, fcntl, signal) on values on the stack or captured
    // before the fork; it allocates nothing. std has run setpgid and emptied the mask by then.
    unsafe {
        command.pre_exec(move || {
            if foreground {
                // The child is in its own, background, group already: with SIGTTOU blocked it
                // can take the terminal without being stopped. The parent does the same after
                // the spawn; whichever runs first wins the race harmlessly.
                signals::block_ttou_in_child()?;
                let stdin = BorrowedFd::borrow_raw(0);
                let _ = tcsetpgrp(stdin, getpid());
            }
            for &fd in &own {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
            }
            signals::restore_caller_state_in_child()
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
        // SIGTTOU is blocked in lsinit, so this works from lsinit's background group too.
        let _ = tcsetpgrp(io::stdin().as_fd(), pid);
    }
    Ok(Emulator { pid })
}
