//! Boot steps of the upstream entrypoint (SPEC 8) that run before licensing: the logs folder
//! and the `boot.d` BOOT hooks.
//!
//! Owns only these steps and stopping the hooks on `TERM`/`INT`; the hook is started and reaped
//! with supervision's spawn and reaper, and licensing has not run yet (the hooks see
//! `ACTIVATE_PRO` as the user set it).

use std::ffi::OsStr;
use std::fs::DirBuilder;
use std::os::fd::AsFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::unistd::{Pid, getpgrp, tcsetpgrp};
use tokio::time::{Instant, sleep_until};

use crate::config::Settings;
use crate::supervision::emulator::{self, Plan};
use crate::supervision::signals::{self, SignalReader};
use crate::supervision::{self, reaper};

/// Creates `<volume>/logs`; a failure is a warning, as the runtime can live without it.
pub fn prepare(settings: &Settings) {
    let logs = settings.roots.volume.join("logs");
    if let Err(e) = DirBuilder::new().recursive(true).mode(0o755).create(&logs) {
        log::warn!(
            "cannot create {} as uid {} ({e}); make the volume writable for that user, e.g. \
             chown it, or mount it elsewhere",
            logs.display(),
            nix::unistd::getuid()
        );
    }
}

/// Extra time, after `KILL` to the hooks' group, to see it gone before lsinit exits anyway.
const REAP_AFTER_KILL: Duration = Duration::from_secs(1);

/// Runs `<venv>/bin/python -m localstack.runtime.init BOOT` when `<config>/init/boot.d` exists,
/// in `cwd`, and waits for it while reading signals. `Err(status)` means lsinit must exit with
/// it: the hooks failed, could not start, or a `TERM`/`INT` arrived. Then the hooks' process
/// group gets `TERM` and `SHUTDOWN_TIMEOUT` to finish, `KILL` at the deadline or on a second
/// `TERM`/`INT`, and lsinit exits with 143 or 130 once the group is gone.
pub async fn run_hooks(
    settings: &Settings,
    cwd: Option<PathBuf>,
    signals: &mut SignalReader,
) -> Result<(), u8> {
    let boot_d = settings.roots.config.join("init/boot.d");
    if !boot_d.is_dir() {
        log::debug!("no {}, thus no BOOT hooks to run", boot_d.display());
        return Ok(());
    }
    let plan = Plan {
        program: settings.roots.venv.join("bin/python").into_os_string(),
        args: vec!["-m".into(), "localstack.runtime.init".into(), "BOOT".into()],
        environment: emulator::environment(settings, None),
        cwd,
        // Like the emulator: a hook that reads the terminal under `docker run -t` must not stop.
        foreground: supervision::owns_terminal(),
    };
    let hook = match emulator::spawn(&plan) {
        Ok(hook) => hook,
        Err(e) => {
            let command = format!(
                "{} {}",
                Path::new(&plan.program).display(),
                plan.args.join(OsStr::new(" ")).to_string_lossy()
            );
            if e.exit_code() == 127 {
                log::error!(
                    "cannot run the BOOT hooks of {}: `{command}` was not found; set \
                     LSINIT_VENV_DIR to the LocalStack runtime's venv, or remove {}",
                    boot_d.display(),
                    boot_d.display()
                );
            } else if e.exit_code() == 126 {
                log::error!(
                    "cannot run the BOOT hooks of {}: `{command}` is not executable ({}); fix \
                     the venv's python or remove {}",
                    boot_d.display(),
                    e.error,
                    boot_d.display()
                );
            } else {
                log::error!("cannot run the BOOT hooks of {}: {e}", boot_d.display());
            }
            return Err(e.exit_code());
        }
    };
    log::info!("running the BOOT hooks of {}", boot_d.display());
    let outcome = wait_for_hooks(hook.pid, &boot_d, settings.shutdown_timeout, signals).await;
    if plan.foreground {
        // SIGTTOU is blocked, so lsinit can take the terminal back from the background.
        let _ = tcsetpgrp(std::io::stdin().as_fd(), getpgrp());
    }
    outcome
}

/// Stopping the hooks after a `TERM` or `INT`.
struct Stop {
    /// The first stop signal: lsinit exits with 128 + it.
    signo: i32,
    deadline: Instant,
    /// The group got `KILL`; the deadline now bounds only the reaping.
    killed: bool,
    /// The hook's own exit was seen.
    hook_gone: bool,
}

async fn wait_for_hooks(
    hook: Pid,
    boot_d: &Path,
    shutdown_timeout: Duration,
    signals: &mut SignalReader,
) -> Result<(), u8> {
    let mut stop: Option<Stop> = None;
    loop {
        if let Some(stop) = &mut stop {
            let group_gone = stop.hook_gone && reaper::group_is_empty(hook);
            if group_gone || (stop.killed && stop.deadline <= Instant::now()) {
                if !group_gone {
                    log::warn!("some BOOT hook processes could not be reaped after SIGKILL");
                }
                return Err((128 + stop.signo) as u8);
            }
            if stop.deadline <= Instant::now() {
                log::warn!(
                    "the BOOT hooks did not stop within {:.1} s (SHUTDOWN_TIMEOUT): killing them",
                    shutdown_timeout.as_secs_f64()
                );
                reaper::send(-hook.as_raw(), libc::SIGKILL);
                stop.killed = true;
                stop.deadline = Instant::now() + REAP_AFTER_KILL;
                continue;
            }
        }
        let deadline = stop.as_ref().map(|stop| stop.deadline);
        let signal = tokio::select! {
            biased;
            () = async {
                match deadline {
                    Some(at) => sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => continue,
            signal = signals.recv() => signal,
        };
        let signo = match signal {
            Ok(signo) => signo,
            Err(e) => {
                log::error!("cannot read signals while the BOOT hooks run ({e}); killing them");
                reaper::send(-hook.as_raw(), libc::SIGKILL);
                return Err(1);
            }
        };
        match signo {
            libc::SIGCHLD => {
                let Some(status) = reaper::drain_all(Some(hook)) else {
                    continue;
                };
                match &mut stop {
                    Some(stop) => stop.hook_gone = true,
                    None if status == 0 => {
                        log::debug!("the BOOT hooks finished");
                        return Ok(());
                    }
                    None => {
                        log::error!(
                            "the BOOT hooks of {} failed with status {status}; fix or remove the \
                             failing script, the container stops",
                            boot_d.display()
                        );
                        // The container stops: what the hooks started in the background must not
                        // outlive lsinit (as PID 1 the namespace ends anyway).
                        reaper::send(-hook.as_raw(), libc::SIGTERM);
                        return Err(status.clamp(1, 255) as u8);
                    }
                }
            }
            libc::SIGTERM | libc::SIGINT => {
                let name = signals::name(signo);
                match &mut stop {
                    None => {
                        log::info!(
                            "got {name} while the BOOT hooks run: stopping them, {:.1} s before \
                             they are killed (SHUTDOWN_TIMEOUT), then exiting",
                            shutdown_timeout.as_secs_f64()
                        );
                        reaper::send(-hook.as_raw(), libc::SIGTERM);
                        stop = Some(Stop {
                            signo,
                            deadline: Instant::now() + shutdown_timeout,
                            killed: false,
                            hook_gone: false,
                        });
                    }
                    Some(stop) if !stop.killed => {
                        log::info!("got {name} again: killing the BOOT hooks now");
                        reaper::send(-hook.as_raw(), libc::SIGKILL);
                        stop.killed = true;
                        stop.deadline = Instant::now() + REAP_AFTER_KILL;
                    }
                    Some(_) => {}
                }
            }
            other => log::trace!(
                "got {} before the emulator exists, dropping it",
                signals::name(other)
            ),
        }
    }
}
