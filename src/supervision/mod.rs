//! Supervision (SPEC 6): the emulator's life from its start to lsinit's exit status. Signals
//! arrive as data from [`signals::SignalReader`]; exits are seen only through [`reaper::drain`].
//!
//! Owns the state machine of running, stopping, restarting and cleaning up, and the one shared
//! shutdown deadline. Does not own licensing: a restart asks `crate::licensing` through a
//! callback, so this module can be read without it.

pub mod emulator;
pub mod reaper;
pub mod signals;

use std::future::pending;
use std::io::{self, IsTerminal};
use std::os::fd::AsFd;
use std::time::Duration;

use nix::unistd::{getpgrp, getpid, tcgetpgrp, tcsetpgrp};
use tokio::time::{Instant, sleep_until};

use self::emulator::{Emulator, Plan};
use self::signals::SignalReader;

/// Extra time to collect the processes killed at the deadline before lsinit exits.
const REAP_AFTER_KILL: Duration = Duration::from_secs(1);

/// Registers lsinit as child subreaper when it is not PID 1, so orphans are still its to reap.
pub fn become_subreaper_unless_pid1() {
    if getpid().as_raw() == 1 {
        return;
    }
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) only sets a flag on this process.
    let result = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if result != 0 {
        log::warn!(
            "cannot become child subreaper ({}): orphaned processes will not be reaped by lsinit",
            io::Error::last_os_error()
        );
    }
}

/// Whether stdin is a terminal whose foreground group lsinit may hand to the emulator.
pub fn owns_terminal() -> bool {
    let stdin = io::stdin();
    stdin.is_terminal() && tcgetpgrp(stdin.as_fd()).is_ok_and(|group| group == getpgrp())
}

/// What the supervisor is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// The emulator runs; nothing is pending.
    Running,
    /// The emulator got `TERM`; when it exits, lsinit cleans up and exits.
    Stopping,
    /// The emulator got `TERM` for a restart; when it exits, a new one starts.
    Restarting,
    /// The emulator is gone; what is left got `TERM` and is being waited for.
    CleaningUp,
}

/// The supervisor's state between events.
struct Supervisor<'a> {
    plan: &'a Plan,
    shutdown_timeout: Duration,
    emulator: Option<Emulator>,
    phase: Phase,
    /// The shared shutdown deadline, when one is running.
    deadline: Option<Instant>,
    /// Everything left was sent `KILL`; the deadline now only bounds the final reaping.
    killed: bool,
    /// The emulator's last status, in shell form.
    status: i32,
    /// Whether the last drain saw a live child.
    children_remain: bool,
    /// The processes killed at the deadline outlived the final grace: exit regardless.
    give_up: bool,
}

/// Supervises `first` until it is gone and the container is cleaned up; returns the exit status.
pub async fn supervise(
    signals: &mut SignalReader,
    plan: &Plan,
    first: Emulator,
    shutdown_timeout: Duration,
) -> u8 {
    let mut supervisor = Supervisor {
        plan,
        shutdown_timeout,
        emulator: Some(first),
        phase: Phase::Running,
        deadline: None,
        killed: false,
        status: 0,
        children_remain: true,
        give_up: false,
    };
    loop {
        let deadline = supervisor.deadline;
        let wait_for_deadline = async move {
            match deadline {
                Some(at) => sleep_until(at).await,
                None => pending().await,
            }
        };
        tokio::select! {
            biased;
            signal = signals.recv() => match signal {
                Ok(signo) => supervisor.on_signal(signo),
                Err(e) => {
                    log::error!("cannot read signals any more ({e}); stopping the emulator");
                    supervisor.kill_everything();
                    break;
                }
            },
            () = wait_for_deadline => supervisor.on_deadline(),
        }
        if supervisor.phase == Phase::CleaningUp && supervisor.is_done() {
            break;
        }
    }
    if plan.foreground {
        let _ = tcsetpgrp(io::stdin().as_fd(), getpgrp());
    }
    supervisor.status.clamp(0, 255) as u8
}

impl Supervisor<'_> {
    fn on_signal(&mut self, signo: i32) {
        match signo {
            libc::SIGCHLD => self.reap(),
            libc::SIGTERM | libc::SIGINT => self.on_stop_request(signo),
            libc::SIGUSR1 => self.on_restart_request(),
            _ if signals::is_forwarded(signo) => self.forward(signo),
            _ => log::debug!("got {}, which lsinit does not act on", signals::name(signo)),
        }
    }

    fn on_stop_request(&mut self, signo: i32) {
        let name = signals::name(signo);
        match self.phase {
            Phase::Running => {
                log::info!(
                    "got {name}: stopping the emulator, {:.1} s before it is killed \
                     (SHUTDOWN_TIMEOUT)",
                    self.shutdown_timeout.as_secs_f64()
                );
                self.terminate_emulator();
                self.phase = Phase::Stopping;
            }
            Phase::Restarting => {
                log::info!("got {name} during a restart: stopping instead of restarting");
                self.phase = Phase::Stopping;
            }
            Phase::Stopping => {
                log::info!("got {name} again: killing the emulator now");
                self.kill_emulator_group();
            }
            Phase::CleaningUp => {
                log::info!("got {name} again: killing what is left now");
                self.kill_everything();
            }
        }
    }

    fn on_restart_request(&mut self) {
        if self.phase != Phase::Running {
            log::debug!("got SIGUSR1 while {:?}, thus ignoring it", self.phase);
            return;
        }
        log::info!("got SIGUSR1: restarting the emulator");
        self.terminate_emulator();
        self.phase = Phase::Restarting;
    }

    fn forward(&mut self, signo: i32) {
        match self.emulator {
            Some(emulator) => {
                log::debug!("forwarding {} to the emulator", signals::name(signo));
                reaper::send(emulator.pid.as_raw(), signo);
            }
            None => log::debug!("got {} with no emulator, dropping it", signals::name(signo)),
        }
    }

    /// `TERM` to the emulator and the start of the shared deadline.
    fn terminate_emulator(&mut self) {
        if let Some(emulator) = self.emulator {
            reaper::send(emulator.pid.as_raw(), libc::SIGTERM);
        }
        self.deadline = Some(Instant::now() + self.shutdown_timeout);
    }

    fn kill_emulator_group(&mut self) {
        if let Some(emulator) = self.emulator {
            reaper::send(-emulator.pid.as_raw(), libc::SIGKILL);
            reaper::send(emulator.pid.as_raw(), libc::SIGKILL);
        }
    }

    fn on_deadline(&mut self) {
        match self.phase {
            Phase::Stopping => {
                log::warn!(
                    "the emulator did not stop within {:.1} s (SHUTDOWN_TIMEOUT): killing it and \
                     everything left",
                    self.shutdown_timeout.as_secs_f64()
                );
                self.kill_everything();
            }
            Phase::Restarting => {
                log::warn!(
                    "the emulator did not stop within {:.1} s (SHUTDOWN_TIMEOUT): killing it",
                    self.shutdown_timeout.as_secs_f64()
                );
                self.kill_emulator_group();
                // The exit is still to be reaped; the deadline has served its purpose.
                self.deadline = None;
            }
            Phase::CleaningUp if !self.killed => {
                log::warn!("processes left by the emulator did not stop in time: killing them");
                self.kill_everything();
            }
            Phase::CleaningUp => {
                log::warn!("some processes could not be reaped after SIGKILL; exiting anyway");
                self.deadline = None;
                self.give_up = true;
            }
            Phase::Running => self.deadline = None,
        }
    }

    fn reap(&mut self) {
        let drained = reaper::drain();
        self.children_remain = drained.children_remain;
        for (pid, status) in drained.exited {
            if self.emulator.is_some_and(|e| e.pid == pid) {
                self.on_emulator_exit(status);
            } else {
                log::debug!("reaped process {pid} (status {status})");
            }
        }
    }

    fn on_emulator_exit(&mut self, status: i32) {
        let old = self.emulator.take();
        self.status = status;
        match self.phase {
            Phase::Restarting => {
                if let Some(old) = old {
                    // Whatever is left of the old emulator's group must not outlive it.
                    reaper::send(-old.pid.as_raw(), libc::SIGTERM);
                }
                self.deadline = None;
                match emulator::spawn(self.plan) {
                    Ok(new) => {
                        log::info!("restarted the emulator as process {}", new.pid);
                        self.emulator = Some(new);
                        self.phase = Phase::Running;
                    }
                    Err(e) => {
                        log::error!("{e}");
                        self.status = i32::from(e.exit_code());
                        self.start_cleanup();
                    }
                }
            }
            Phase::Running => {
                log::info!("the emulator exited with status {status}");
                self.deadline = Some(Instant::now() + self.shutdown_timeout);
                self.start_cleanup();
            }
            Phase::Stopping | Phase::CleaningUp => {
                log::info!("the emulator stopped with status {status}");
                self.start_cleanup();
            }
        }
    }

    /// `TERM` to everything that is left, then wait for it under the shared deadline.
    fn start_cleanup(&mut self) {
        self.phase = Phase::CleaningUp;
        self.signal_leftovers(libc::SIGTERM);
        if self.deadline.is_none() {
            self.deadline = Some(Instant::now() + self.shutdown_timeout);
        }
        self.reap();
    }

    fn kill_everything(&mut self) {
        self.kill_emulator_group();
        self.signal_leftovers(libc::SIGKILL);
        self.killed = true;
        self.deadline = Some(Instant::now() + REAP_AFTER_KILL);
        self.reap();
    }

    /// PID 1: every other process of the container. Otherwise: every descendant of lsinit.
    fn signal_leftovers(&self, signo: i32) {
        if getpid().as_raw() == 1 {
            reaper::send(-1, signo);
            return;
        }
        for pid in reaper::descendants(getpid()) {
            reaper::send(pid.as_raw(), signo);
        }
    }

    fn is_done(&self) -> bool {
        self.give_up || !self.children_remain
    }
}
