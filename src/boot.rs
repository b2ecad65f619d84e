//! Boot steps of the upstream entrypoint (SPEC 8) that run before licensing: the logs folder
//! and the `boot.d` BOOT hooks.
//!
//! Owns only these steps; the hook is started and reaped with supervision's spawn and reaper,
//! and licensing has not run yet (the hooks see `ACTIVATE_PRO` as the user set it).

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;

use crate::config::Settings;
use crate::supervision::emulator::{self, Plan};
use crate::supervision::reaper;
use crate::supervision::signals::{self, SignalReader};

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

/// Runs `<venv>/bin/python -m localstack.runtime.init BOOT` when `<config>/init/boot.d` exists,
/// and waits for it while reading signals. `Err(status)` means lsinit must exit with it: the
/// hooks failed, could not start, or a `TERM`/`INT` arrived (then the hook's process group got
/// `TERM`).
pub async fn run_hooks(settings: &Settings, signals: &mut SignalReader) -> Result<(), u8> {
    let boot_d = settings.roots.config.join("init/boot.d");
    if !boot_d.is_dir() {
        log::debug!("no {}, thus no BOOT hooks to run", boot_d.display());
        return Ok(());
    }
    let plan = Plan {
        program: settings.roots.venv.join("bin/python").into_os_string(),
        args: vec!["-m".into(), "localstack.runtime.init".into(), "BOOT".into()],
        environment: emulator::environment(settings, None),
        cwd: std::env::current_dir().ok(),
        foreground: false,
    };
    let hook = match emulator::spawn(&plan) {
        Ok(hook) => hook,
        Err(e) => {
            log::error!("the BOOT hooks of {} cannot run: {e}", boot_d.display());
            return Err(e.exit_code());
        }
    };
    log::info!("running the BOOT hooks of {}", boot_d.display());
    loop {
        let signo = match signals.recv().await {
            Ok(signo) => signo,
            Err(e) => {
                log::error!("cannot read signals while the BOOT hooks run: {e}");
                reaper::send(-hook.pid.as_raw(), libc::SIGKILL);
                return Err(1);
            }
        };
        match signo {
            libc::SIGCHLD => {
                if let Some(status) = reap_until(hook.pid) {
                    if status == 0 {
                        log::debug!("the BOOT hooks finished");
                        return Ok(());
                    }
                    log::error!(
                        "the BOOT hooks of {} failed with status {status}; fix or remove the \
                         failing script, the container stops",
                        boot_d.display()
                    );
                    return Err(status.clamp(1, 255) as u8);
                }
            }
            libc::SIGTERM | libc::SIGINT => {
                log::info!(
                    "got {} while the BOOT hooks run: stopping them and exiting",
                    signals::name(signo)
                );
                reaper::send(-hook.pid.as_raw(), libc::SIGTERM);
                return Err((128 + signo) as u8);
            }
            other => log::debug!(
                "got {} before the emulator exists, dropping it",
                signals::name(other)
            ),
        }
    }
}

/// Reaps what has exited; the status of `pid` once it is among them.
fn reap_until(pid: nix::unistd::Pid) -> Option<i32> {
    let mut found = None;
    loop {
        let drained = reaper::drain();
        for (reaped, status) in drained.exited {
            if reaped == pid {
                found = Some(status);
            }
        }
        if !drained.more {
            return found;
        }
    }
}
