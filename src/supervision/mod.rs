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

/// Extra time, after `KILL` at the deadline, to see the killed processes exit before lsinit
/// gives up on them. A shutdown thus takes at most `SHUTDOWN_TIMEOUT` plus this second.
const REAP_AFTER_KILL: Duration = Duration::from_secs(1);

/// The status lsinit reports when the emulator got `KILL` and its exit was never seen (it could
/// not be reaped within [`REAP_AFTER_KILL`]): what the kill would have produced.
const STATUS_KILLED_UNSEEN: i32 = 128 + libc::SIGKILL;

/// The status lsinit reports when it lost its signals and had to kill the emulator: lsinit
/// failed, so no status of the emulator's stands for the container's.
const STATUS_SUPERVISION_FAILED: i32 = 1;

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

/// What the supervisor is doing. `killed` means everything concerned got `KILL` at the deadline,
/// which then only bounds the reaping ([`REAP_AFTER_KILL`]); at the next deadline lsinit gives
/// up. Every stopping phase has a deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// The emulator runs; nothing is pending.
    Running,
    /// The emulator got `TERM`; when it exits, lsinit cleans up and exits.
    Stopping { killed: bool },
    /// Restart, first step: the emulator got `TERM` (`KILL` once `killed`); when it exits, its
    /// group gets `TERM`.
    RestartStopping { killed: bool },
    /// Restart, second step: the old emulator is gone; what is left of its process group is
    /// waited for, under the same deadline.
    RestartClearing { group: Pid },
    /// Restart, last step: the [`RestartHook`] runs; then the new emulator starts.
    RestartPreparing,
    /// The emulator is gone for good; what is left got `TERM` (`KILL` once `killed`) and is
    /// being waited for.
    CleaningUp { killed: bool },
    /// Nothing more to wait for, or lsinit gave up waiting: exit.
    Done,
}

/// The supervisor's state between events.
struct Supervisor<'a> {
    plan: &'a Plan,
    shutdown_timeout: Duration,
    before_restart: RestartHook,
    emulator: Option<Emulator>,
    /// The process group of the emulator started last, until it is known to be empty (then its
    /// number may belong to an unrelated group).
    group: Option<Pid>,
    phase: Phase,
    /// The shared shutdown deadline, when one is running.
    deadline: Option<Instant>,
    /// The last emulator's status in shell form, once its exit was seen (or the status of a
    /// failed restart's spawn). `None` while an emulator runs or when its exit was never seen.
    exit: Option<i32>,
    /// lsinit could not read signals any more and killed everything.
    failed: bool,
    /// Whether the last drain saw a child not reaped yet.
    children_remain: bool,
    /// The last drain stopped at its batch size: drain again before sleeping.
    more_to_reap: bool,
    /// Fires when the restart hook has finished (or died).
    hook_done: Option<oneshot::Receiver<()>>,
    /// Signals forwarded to the emulator, for one debug line at the end instead of one each.
    forwarded: u64,
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
        group: Some(first.pid),
        phase: Phase::Running,
        deadline: None,
        exit: None,
        failed: false,
        children_remain: true,
        // The emulator may have died before the supervision began; its SIGCHLD is queued, but
        // reaping first costs nothing.
        more_to_reap: true,
        hook_done: None,
        forwarded: 0,
    };
    while !supervisor.is_done() {
        // The deadline is checked before anything else: a steady flood of signals would otherwise
        // keep the signal branch ready forever and the deadline would never be looked at.
        if supervisor.deadline.is_some_and(|at| at <= Instant::now()) {
            supervisor.on_deadline();
            continue;
        }
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
            () = wait_for_deadline => supervisor.on_deadline(),
            signal = signals.recv() => match signal {
                Ok(signo) => supervisor.on_signal(signo),
                Err(e) => supervisor.on_lost_signals(&e),
            },
            () = wait_for_hook => supervisor.on_hook_done(),
            () = std::future::ready(()), if more_to_reap => supervisor.reap(),
        }
    }
    if plan.foreground {
        // SIGTTOU is blocked, so lsinit can take the terminal back from the background.
        let _ = tcsetpgrp(io::stdin().as_fd(), getpgrp());
    }
    if supervisor.forwarded > 0 {
        log::debug!(
            "forwarded {} signal(s) to the emulator",
            supervisor.forwarded
        );
    }
    supervisor.exit_status()
}

impl Supervisor<'_> {
    fn on_signal(&mut self, signo: i32) {
        match signo {
            libc::SIGCHLD => self.reap(),
            libc::SIGTERM | libc::SIGINT => self.on_stop_request(signo),
            libc::SIGUSR1 => self.on_restart_request(),
            _ if signals::is_forwarded(signo) => self.forward(signo),
            // Trace, not debug: a storm of these would be a log line each.
            _ => log::trace!("got {}, which lsinit does not act on", signals::name(signo)),
        }
    }

    /// The signal descriptor failed: nothing can be supervised any more. Everything is killed
    /// and briefly reaped, and lsinit exits with the emulator's status if its exit was seen
    /// before, else with 1: the emulator did not end on its own, lsinit ended it.
    fn on_lost_signals(&mut self, error: &io::Error) {
        log::error!("cannot read signals any more ({error}); killing the emulator and exiting");
        self.kill_everything();
        let give_up_at = std::time::Instant::now() + REAP_AFTER_KILL;
        // LIMITATION: polls (every 10 ms, for at most REAP_AFTER_KILL): without signals, SIGCHLD
        // cannot say when the killed processes are gone.
        while reaper::drain().children_remain && std::time::Instant::now() < give_up_at {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.failed = true;
        self.phase = Phase::Done;
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
                self.phase = Phase::Stopping { killed: false };
            }
            Phase::RestartStopping { killed } => {
                // The emulator got TERM (or KILL) already and its deadline runs: only the restart
                // is called off.
                log::info!("got {name} during a restart: stopping instead of restarting");
                self.phase = Phase::Stopping { killed };
            }
            Phase::RestartClearing { .. } | Phase::RestartPreparing => {
                log::info!("got {name} during a restart: stopping, no new emulator");
                // An abandoned hook thread is left to finish or to die with lsinit.
                self.hook_done = None;
                self.start_cleanup(false);
            }
            Phase::Stopping { .. } => {
                log::info!("got {name} again: killing the emulator now");
                self.kill_emulator_group();
            }
            Phase::CleaningUp { .. } => {
                log::info!("got {name} again: killing what is left now");
                self.kill_everything();
            }
            Phase::Done => {}
        }
    }

    fn on_restart_request(&mut self) {
        if self.phase != Phase::Running {
            log::debug!(
                "got SIGUSR1 while not running (a restart or shutdown is under way), thus ignoring it"
            );
            return;
        }
        log::info!("got SIGUSR1: restarting the emulator");
        self.terminate_emulator();
        self.phase = Phase::RestartStopping { killed: false };
    }

    fn forward(&mut self, signo: i32) {
        match self.emulator {
            Some(emulator) => {
                // Trace, not debug: a storm of forwarded signals would be a log line each; the
                // count is logged at the end.
                log::trace!("forwarding {} to the emulator", signals::name(signo));
                reaper::send(emulator.pid.as_raw(), signo);
                self.forwarded += 1;
            }
            None => log::trace!("got {} with no emulator, dropping it", signals::name(signo)),
        }
    }

    /// `TERM` to the emulator and the start of the shared deadline.
    fn terminate_emulator(&mut self) {
        if let Some(emulator) = self.emulator {
            reaper::send(emulator.pid.as_raw(), libc::SIGTERM);
            // A stopped emulator (Ctrl-Z, SIGSTOP) would hold the TERM pending until the KILL:
            // CONT lets it act on it, and is harmless to a running one.
            reaper::send(emulator.pid.as_raw(), libc::SIGCONT);
        }
        self.deadline = Some(Instant::now() + self.shutdown_timeout);
    }

    /// `KILL` to the emulator and its process group, alive or already gone.
    fn kill_emulator_group(&mut self) {
        if let Some(group) = self.group {
            reaper::send(-group.as_raw(), libc::SIGKILL);
        }
        if let Some(emulator) = self.emulator {
            reaper::send(emulator.pid.as_raw(), libc::SIGKILL);
        }
    }

    fn on_deadline(&mut self) {
        let timeout = self.shutdown_timeout.as_secs_f64();
        match self.phase {
            Phase::Stopping { killed: false } => {
                log::warn!(
                    "the emulator did not stop within {timeout:.1} s (SHUTDOWN_TIMEOUT): killing \
                     it and everything left"
                );
                self.kill_everything();
            }
            Phase::RestartStopping { killed: false } => {
                log::warn!(
                    "the emulator did not stop within {timeout:.1} s (SHUTDOWN_TIMEOUT): killing \
                     it for the restart"
                );
                self.kill_emulator_group();
                self.phase = Phase::RestartStopping { killed: true };
                self.deadline = Some(Instant::now() + REAP_AFTER_KILL);
            }
            Phase::Stopping { killed: true } | Phase::RestartStopping { killed: true } => {
                log::warn!(
                    "the emulator's exit was not seen {:.1} s after SIGKILL; exiting anyway, \
                     with status {STATUS_KILLED_UNSEEN}",
                    REAP_AFTER_KILL.as_secs_f64()
                );
                self.signal_leftovers(libc::SIGKILL);
                self.phase = Phase::Done;
            }
            Phase::RestartClearing { group } => {
                log::warn!(
                    "processes of the old emulator did not stop within {timeout:.1} s \
                     (SHUTDOWN_TIMEOUT): killing them for the restart"
                );
                reaper::send(-group.as_raw(), libc::SIGKILL);
                self.prepare_restart();
            }
            Phase::CleaningUp { killed: false } => {
                log::warn!("processes left by the emulator did not stop in time: killing them");
                self.kill_everything();
            }
            Phase::CleaningUp { killed: true } => {
                log::warn!("some processes could not be reaped after SIGKILL; exiting anyway");
                self.phase = Phase::Done;
            }
            Phase::Running | Phase::RestartPreparing | Phase::Done => self.deadline = None,
        }
    }

    fn reap(&mut self) {
        let drained = reaper::drain();
        self.children_remain = drained.children_remain;
        self.more_to_reap = drained.more;
        let mut others = 0;
        for (pid, status) in drained.exited {
            if self.emulator.is_some_and(|e| e.pid == pid) {
                self.on_emulator_exit(status);
            } else {
                others += 1;
            }
        }
        if others > 0 {
            log::debug!("reaped {others} process(es) other than the emulator");
        }
        // Once the group's leader is reaped and no member is left, its number is free for reuse:
        // it is never signalled again.
        if self.emulator.is_none()
            && let Some(group) = self.group
            && reaper::group_is_empty(group)
        {
            self.group = None;
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
        self.exit = Some(status);
        match self.phase {
            Phase::RestartStopping { killed } => {
                log::info!("the emulator stopped with status {status} for the restart");
                let Some(group) = self.group else {
                    self.prepare_restart();
                    return;
                };
                if killed {
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
                self.start_cleanup(false);
            }
            Phase::Stopping { killed } => {
                log::info!("the emulator stopped with status {status}");
                self.start_cleanup(killed);
            }
            // No emulator runs in these phases (its exit was seen when they began), so its exit
            // cannot be reaped in them.
            Phase::RestartClearing { .. }
            | Phase::RestartPreparing
            | Phase::CleaningUp { .. }
            | Phase::Done => {}
        }
    }

    /// The old emulator and its group are gone: run the restart hook on its own thread.
    fn prepare_restart(&mut self) {
        self.phase = Phase::RestartPreparing;
        self.deadline = None;
        // Empty or killed: a later signal to its number could reach an unrelated group.
        self.group = None;
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
                self.group = Some(new.pid);
                // The status to report is now the new emulator's, once seen.
                self.exit = None;
                self.phase = Phase::Running;
            }
            Err(e) => {
                log::error!("{e}");
                self.exit = Some(i32::from(e.exit_code()));
                self.start_cleanup(false);
            }
        }
    }

    /// `TERM` to everything that is left (`KILL` once everything got it: anything forked since
    /// gets it too), then wait for it under the shared deadline.
    fn start_cleanup(&mut self, killed: bool) {
        self.phase = Phase::CleaningUp { killed };
        let signo = if killed { libc::SIGKILL } else { libc::SIGTERM };
        if let Some(group) = self.group {
            reaper::send(-group.as_raw(), signo);
        }
        self.signal_leftovers(signo);
        if self.deadline.is_none() {
            self.deadline = Some(Instant::now() + self.shutdown_timeout);
        }
        // The leftovers may all be gone already; the next turn of the loop finds out.
        self.more_to_reap = true;
    }

    /// `KILL` to the emulator, its group and everything left; the deadline then bounds only the
    /// reaping. Once everything got `KILL`, a repeated request does not push the deadline back.
    fn kill_everything(&mut self) {
        self.kill_emulator_group();
        self.signal_leftovers(libc::SIGKILL);
        let already_killed = match &mut self.phase {
            Phase::Stopping { killed }
            | Phase::RestartStopping { killed }
            | Phase::CleaningUp { killed } => std::mem::replace(killed, true),
            _ => false,
        };
        if !already_killed {
            self.deadline = Some(Instant::now() + REAP_AFTER_KILL);
        }
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
        match reaper::descendants(getpid()) {
            Some(pids) => {
                for pid in pids {
                    reaper::send(pid.as_raw(), signo);
                }
            }
            None => log::warn!(
                "cannot find the processes the emulator left outside its group: /proc is missing \
                 or belongs to another PID namespace; mount this namespace's /proc (as docker \
                 does) so that they can be stopped"
            ),
        }
    }

    fn is_done(&self) -> bool {
        match self.phase {
            Phase::Done => true,
            Phase::CleaningUp { .. } => !self.children_remain && !self.more_to_reap,
            _ => false,
        }
    }

    /// The emulator's status when its exit was seen; otherwise why it was not, as a status.
    fn exit_status(&self) -> u8 {
        final_status(self.exit, self.failed).clamp(0, 255) as u8
    }
}

/// lsinit's status from the emulator's last seen status: never 0 for an exit that was not seen.
fn final_status(exit: Option<i32>, signals_lost: bool) -> i32 {
    match exit {
        Some(status) => status,
        None if signals_lost => STATUS_SUPERVISION_FAILED,
        None => STATUS_KILLED_UNSEEN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_never_seen_is_never_reported_as_success() {
        assert_eq!(final_status(Some(0), false), 0);
        assert_eq!(final_status(Some(0), true), 0);
        assert_eq!(final_status(Some(7), false), 7);
        assert_eq!(final_status(None, false), 137);
        assert_eq!(final_status(None, true), 1);
    }
}
