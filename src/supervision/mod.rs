//! Supervision (SPEC 6): the emulator's life from its start to lsinit's exit status. Signals
//! arrive as data from [`signals::SignalReader`]; exits are seen only through [`reaper::drain`].
//!
//! Owns the state machine of running, stopping, restarting and cleaning up, and the one shared
//! shutdown deadline. Does not own licensing: a restart runs a [`RestartHook`] given by `main`,
//! so this module can be read without it.

pub mod emulator;
pub mod reaper;
pub mod signals;

use std::future::pending;
use std::io::{self, IsTerminal};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use nix::unistd::{Pid, getpgrp, getpid, tcgetpgrp, tcsetpgrp};
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep_until};

use self::emulator::{Emulator, Plan};
use self::signals::SignalReader;

/// Extra time to collect the processes killed at the deadline before lsinit exits.
const REAP_AFTER_KILL: Duration = Duration::from_secs(1);

/// Work between the old emulator's exit and the new one's start on a restart (re-activating a
/// stale license). Blocking: it runs on its own thread while signals keep being read; a `TERM`
/// meanwhile abandons it and no new emulator starts.
pub type RestartHook = Arc<dyn Fn() + Send + Sync>;

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
    /// Restart, first step: the emulator got `TERM`; when it exits, its group gets `TERM`.
    RestartStopping,
    /// Restart, second step: the old emulator is gone; what is left of its process group is
    /// waited for, under the same deadline.
    RestartClearing { group: Pid },
    /// Restart, last step: the [`RestartHook`] runs; then the new emulator starts.
    RestartPreparing,
    /// The emulator is gone for good; what is left got `TERM` and is being waited for.
    CleaningUp,
}

/// The supervisor's state between events.
struct Supervisor<'a> {
    plan: &'a Plan,
    shutdown_timeout: Duration,
    before_restart: RestartHook,
    emulator: Option<Emulator>,
    /// The process group of the emulator started last, alive or not.
    group: Pid,
    phase: Phase,
    /// The shared shutdown deadline, when one is running.
    deadline: Option<Instant>,
    /// Everything left was sent `KILL`; the deadline now only bounds the final reaping.
    killed: bool,
    /// The old emulator's group got `KILL` during a restart: no need to wait for it.
    old_group_killed: bool,
    /// The emulator's last status, in shell form.
    status: i32,
    /// Whether the last drain saw a child not reaped yet.
    children_remain: bool,
    /// The last drain stopped at its batch size: drain again before sleeping.
    more_to_reap: bool,
    /// Fires when the restart hook has finished (or died).
    hook_done: Option<oneshot::Receiver<()>>,
    /// The processes killed at the deadline outlived the final grace: exit regardless.
    give_up: bool,
}

/// Supervises `first` until it is gone and the container is cleaned up; returns the exit status.
/// `before_restart` runs on every restart before the new emulator starts.
pub async fn supervise(
    signals: &mut SignalReader,
    plan: &Plan,
    first: Emulator,
    shutdown_timeout: Duration,
    before_restart: RestartHook,
) -> u8 {
    let mut supervisor = Supervisor {
        plan,
        shutdown_timeout,
        before_restart,
        emulator: Some(first),
        group: first.pid,
        phase: Phase::Running,
        deadline: None,
        killed: false,
        old_group_killed: false,
        status: 0,
        children_remain: true,
        // The emulator may have died before the supervision began; its SIGCHLD is queued, but
        // reaping first costs nothing.
        more_to_reap: true,
        hook_done: None,
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
        let hook_done = supervisor.hook_done.as_mut();
        let wait_for_hook = async move {
            match hook_done {
                // An error means the hook's thread died: the restart goes on all the same.
                Some(done) => {
                    let _ = done.await;
                }
                None => pending().await,
            }
        };
        let more_to_reap = supervisor.more_to_reap;
        // Nothing here polls: without a signal, a deadline or a finished hook, the thread sleeps
        // in epoll_wait.
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
            () = wait_for_hook => supervisor.on_hook_done(),
            () = std::future::ready(()), if more_to_reap => supervisor.reap(),
        }
        if supervisor.is_done() {
            break;
        }
    }
    if plan.foreground {
        // SIGTTOU is blocked, so lsinit can take the terminal back from the background.
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
            Phase::RestartStopping => {
                // The emulator got TERM already and its grace period runs: only the restart is
                // called off.
                log::info!("got {name} during a restart: stopping instead of restarting");
                self.phase = Phase::Stopping;
            }
            Phase::RestartClearing { .. } | Phase::RestartPreparing => {
                log::info!("got {name} during a restart: stopping, no new emulator");
                // An abandoned hook thread is left to finish or to die with lsinit.
                self.hook_done = None;
                self.start_cleanup();
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
        self.old_group_killed = false;
        self.terminate_emulator();
        self.phase = Phase::RestartStopping;
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

    /// `KILL` to the emulator and its process group, alive or already gone.
    fn kill_emulator_group(&mut self) {
        reaper::send(-self.group.as_raw(), libc::SIGKILL);
        if let Some(emulator) = self.emulator {
            reaper::send(emulator.pid.as_raw(), libc::SIGKILL);
        }
    }

    fn on_deadline(&mut self) {
        let timeout = self.shutdown_timeout.as_secs_f64();
        match self.phase {
            Phase::Stopping => {
                log::warn!(
                    "the emulator did not stop within {timeout:.1} s (SHUTDOWN_TIMEOUT): killing \
                     it and everything left"
                );
                self.kill_everything();
            }
            Phase::RestartStopping => {
                log::warn!(
                    "the emulator did not stop within {timeout:.1} s (SHUTDOWN_TIMEOUT): killing \
                     it for the restart"
                );
                self.kill_emulator_group();
                self.old_group_killed = true;
                // The exit is still to be reaped; the deadline has served its purpose.
                self.deadline = None;
            }
            Phase::RestartClearing { group } => {
                log::warn!(
                    "processes of the old emulator did not stop within {timeout:.1} s \
                     (SHUTDOWN_TIMEOUT): killing them for the restart"
                );
                reaper::send(-group.as_raw(), libc::SIGKILL);
                self.prepare_restart();
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
            Phase::Running | Phase::RestartPreparing => self.deadline = None,
        }
    }

    fn reap(&mut self) {
        let drained = reaper::drain();
        self.children_remain = drained.children_remain;
        self.more_to_reap = drained.more;
        for (pid, status) in drained.exited {
            if self.emulator.is_some_and(|e| e.pid == pid) {
                self.on_emulator_exit(status);
            } else {
                log::debug!("reaped process {pid} (status {status})");
            }
        }
        // LIMITATION: a group member reaped by a parent other than lsinit sends lsinit no
        // SIGCHLD; if it was the last one, the restart waits for the next event or the deadline.
        if let Phase::RestartClearing { group } = self.phase
            && reaper::group_is_empty(group)
        {
            log::debug!("the old emulator's process group {group} is gone");
            self.prepare_restart();
        }
    }

    fn on_emulator_exit(&mut self, status: i32) {
        self.emulator = None;
        self.status = status;
        match self.phase {
            Phase::RestartStopping => {
                log::info!("the emulator stopped with status {status} for the restart");
                let group = self.group;
                if self.old_group_killed {
                    reaper::send(-group.as_raw(), libc::SIGKILL);
                    self.prepare_restart();
                } else {
                    // Whatever is left of the old emulator's group must not outlive it; it is
                    // checked for after each reaping (its members are adopted as they orphan).
                    // LIMITATION: only the group: processes the old emulator moved into a
                    // session or group of their own live on until the shutdown, as "everything
                    // else" in a container also means `docker exec` sessions.
                    reaper::send(-group.as_raw(), libc::SIGTERM);
                    self.phase = Phase::RestartClearing { group };
                }
            }
            Phase::Running => {
                log::info!("the emulator exited with status {status}");
                self.deadline = Some(Instant::now() + self.shutdown_timeout);
                self.start_cleanup();
            }
            Phase::Stopping
            | Phase::RestartClearing { .. }
            | Phase::RestartPreparing
            | Phase::CleaningUp => {
                log::info!("the emulator stopped with status {status}");
                self.start_cleanup();
            }
        }
    }

    /// The old emulator and its group are gone: run the restart hook on its own thread.
    fn prepare_restart(&mut self) {
        self.phase = Phase::RestartPreparing;
        self.deadline = None;
        let (done, hook_done) = oneshot::channel();
        let hook = Arc::clone(&self.before_restart);
        let spawned = std::thread::Builder::new()
            .name("restart".into())
            .spawn(move || {
                hook();
                let _ = done.send(());
            });
        match spawned {
            Ok(_) => self.hook_done = Some(hook_done),
            Err(e) => {
                log::warn!("cannot check the license before the restart ({e}); restarting anyway");
                self.start_new_emulator();
            }
        }
    }

    fn on_hook_done(&mut self) {
        self.hook_done = None;
        if self.phase == Phase::RestartPreparing {
            self.start_new_emulator();
        }
    }

    fn start_new_emulator(&mut self) {
        match emulator::spawn(self.plan) {
            Ok(new) => {
                log::info!("restarted the emulator as process {}", new.pid);
                self.emulator = Some(new);
                self.group = new.pid;
                self.phase = Phase::Running;
            }
            Err(e) => {
                log::error!("{e}");
                self.status = i32::from(e.exit_code());
                self.start_cleanup();
            }
        }
    }

    /// `TERM` to everything that is left, then wait for it under the shared deadline.
    fn start_cleanup(&mut self) {
        self.phase = Phase::CleaningUp;
        // Once everything got KILL, anything forked since gets KILL as well.
        let signo = if self.killed {
            libc::SIGKILL
        } else {
            libc::SIGTERM
        };
        reaper::send(-self.group.as_raw(), signo);
        self.signal_leftovers(signo);
        if self.deadline.is_none() {
            self.deadline = Some(Instant::now() + self.shutdown_timeout);
        }
        // The leftovers may all be gone already; the next turn of the loop finds out.
        self.more_to_reap = true;
    }

    fn kill_everything(&mut self) {
        self.kill_emulator_group();
        self.signal_leftovers(libc::SIGKILL);
        self.killed = true;
        self.deadline = Some(Instant::now() + REAP_AFTER_KILL);
        self.more_to_reap = true;
    }

    /// PID 1: every other process of the container. Otherwise: every descendant of lsinit,
    /// which covers the emulator's process group and every process lsinit adopted.
    ///
    /// LIMITATION: not PID 1, the walk of /proc is a snapshot: a process forked during it is
    /// signalled the next time (KILL at the deadline); a fork loop that outruns that too is left
    /// running when lsinit gives up, REAP_AFTER_KILL after the deadline.
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
        self.phase == Phase::CleaningUp
            && (self.give_up || (!self.children_remain && !self.more_to_reap))
    }
}
