//! Signals as data (SPEC 6): every asynchronous signal is blocked before any thread exists and
//! then read synchronously from a `signalfd` through tokio's `AsyncFd`.
//!
//! Owns the mask and the reading; what each signal means is decided in `mod.rs`.

use std::io;

use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Signals that report a fault of the thread that gets them; blocking them would turn a crash
/// into a hang, so they keep their default action.
const SYNCHRONOUS: [Signal; 6] = [
    Signal::SIGSEGV,
    Signal::SIGBUS,
    Signal::SIGILL,
    Signal::SIGFPE,
    Signal::SIGTRAP,
    Signal::SIGSYS,
];

/// The set lsinit blocks and reads.
fn handled_set() -> SigSet {
    let mut set = SigSet::all();
    for signal in SYNCHRONOUS {
        set.remove(signal);
    }
    set
}

/// Resets `SIGCHLD` to its default (an ignored `SIGCHLD` makes the kernel discard exit statuses)
/// and blocks every asynchronous signal. Must run before any thread is created, so that every
/// later thread inherits the mask and no signal is delivered anywhere but the `signalfd`.
pub fn block_all() -> io::Result<()> {
    // SAFETY: setting a default disposition installs no handler and runs before any thread
    // exists, so no other code can be racing on the disposition.
    unsafe { signal(Signal::SIGCHLD, SigHandler::SigDfl) }.map_err(io::Error::from)?;
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&handled_set()), None).map_err(io::Error::from)
}

/// Clears the mask in a freshly forked child, so the emulator starts with no blocked signal.
///
/// Async-signal-safe: a single system call on a set built on the stack.
pub fn unblock_all_in_child() -> io::Result<()> {
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None).map_err(io::Error::from)
}

/// Reads the blocked signals one at a time, sleeping in the kernel in between.
pub struct SignalReader {
    fd: AsyncFd<SignalFd>,
}

impl SignalReader {
    /// Opens the `signalfd` (close-on-exec, so the emulator never inherits it). Needs a tokio
    /// runtime with I/O enabled.
    pub fn open() -> io::Result<SignalReader> {
        let flags = SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC;
        let fd = SignalFd::with_flags(&handled_set(), flags).map_err(io::Error::from)?;
        // SAFETY: the SignalFd owns its descriptor and is moved into the AsyncFd, which owns it
        // until drop; SignalFd::as_raw_fd always returns that same descriptor.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(SignalReader { fd })
    }

    /// The next pending signal's number.
    pub async fn recv(&mut self) -> io::Result<i32> {
        loop {
            let mut guard = self.fd.readable_mut().await?;
            match guard.get_inner_mut().read_signal() {
                Ok(Some(info)) => return Ok(info.ssi_signo as i32),
                Ok(None) => guard.clear_ready(),
                Err(nix::Error::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// A signal's name for logs, e.g. `SIGTERM` or `SIGRTMIN+3`.
pub fn name(signo: i32) -> String {
    if let Ok(signal) = Signal::try_from(signo) {
        return signal.as_str().to_string();
    }
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    if (min..=max).contains(&signo) {
        return format!("SIGRTMIN+{}", signo - min);
    }
    format!("signal {signo}")
}

/// Signals passed to the emulator unchanged (SPEC 6).
pub fn is_forwarded(signo: i32) -> bool {
    const FORWARDED: [i32; 5] = [
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR2,
        libc::SIGWINCH,
        libc::SIGCONT,
    ];
    FORWARDED.contains(&signo) || (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&signo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cover_standard_and_realtime_signals() {
        assert_eq!(name(libc::SIGTERM), "SIGTERM");
        assert_eq!(name(libc::SIGRTMIN() + 2), "SIGRTMIN+2");
    }

    #[test]
    fn forwarding_table() {
        for signo in [libc::SIGHUP, libc::SIGWINCH, libc::SIGRTMAX()] {
            assert!(is_forwarded(signo), "{}", name(signo));
        }
        for signo in [
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGUSR1,
            libc::SIGTSTP,
            libc::SIGCHLD,
        ] {
            assert!(!is_forwarded(signo), "{}", name(signo));
        }
    }

    #[test]
    fn synchronous_faults_are_never_blocked() {
        let set = handled_set();
        assert!(!set.contains(Signal::SIGSEGV));
        assert!(set.contains(Signal::SIGTERM) && set.contains(Signal::SIGCHLD));
    }
}
