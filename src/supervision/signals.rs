//! Signals as data (SPEC 6): every asynchronous signal is blocked before any thread exists and
//! then read synchronously from a `signalfd` through tokio's `AsyncFd`.
//!
//! Owns the mask, the reading, and the signal state a freshly forked emulator is given back;
//! what each signal means is decided in `mod.rs`.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// Whether lsinit's caller left `SIGPIPE` ignored. Rust's runtime sets `SIGPIPE` to ignored
/// before `main` and keeps no record of what it was, so this is read earlier still, by
/// [`record_caller_sigpipe`], which the loader runs before the runtime starts.
static CALLER_IGNORES_SIGPIPE: AtomicBool = AtomicBool::new(false);

/// Records the caller's `SIGPIPE` disposition. Runs from `.init_array`, before `main` and before
/// the Rust runtime's own set-up, so it only makes one system call and stores one flag.
extern "C" fn record_caller_sigpipe() {
    // SAFETY: an all-zero sigaction is a valid value to be overwritten; with a null new action,
    // sigaction(2) only reads the current disposition into it.
    let ignored = unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut current) == 0
            && current.sa_sigaction == libc::SIG_IGN
    };
    CALLER_IGNORES_SIGPIPE.store(ignored, Ordering::Relaxed);
}

/// Puts [`record_caller_sigpipe`] in the ELF constructor list: the loader calls it before
/// `main`, ahead of the Rust runtime, which is the only point where the caller's disposition can
/// still be seen on stable Rust.
#[used]
// SAFETY: `.init_array` holds pointers to `extern "C" fn()` called once by the loader; the
// function touches no Rust runtime state (no allocation, no I/O, no thread locals).
#[unsafe(link_section = ".init_array")]
static RECORD_CALLER_SIGPIPE: extern "C" fn() = record_caller_sigpipe;

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
    // The constructor's object must be linked in: naming its static here makes sure of that.
    std::hint::black_box(&RECORD_CALLER_SIGPIPE);
    // SAFETY: setting a default disposition installs no handler and runs before any thread
    // exists, so no other code can be racing on the disposition.
    unsafe { signal(Signal::SIGCHLD, SigHandler::SigDfl) }.map_err(io::Error::from)?;
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&handled_set()), None).map_err(io::Error::from)
}

/// Gives a freshly forked child the signal state of lsinit's caller: no blocked signal, and
/// `SIGPIPE` as the caller had it (std has set it to default by now). Other dispositions were
/// never changed by lsinit, except `SIGCHLD`, which stays at its default on purpose (SPEC 1).
///
/// Async-signal-safe: an atomic load and two system calls on values on the stack.
pub fn restore_caller_state_in_child() -> io::Result<()> {
    let sigpipe = if CALLER_IGNORES_SIGPIPE.load(Ordering::Relaxed) {
        libc::SIG_IGN
    } else {
        libc::SIG_DFL
    };
    // SAFETY: signal(2) with SIG_IGN or SIG_DFL installs no handler; the child is single-threaded.
    if unsafe { libc::signal(libc::SIGPIPE, sigpipe) } == libc::SIG_ERR {
        return Err(io::Error::last_os_error());
    }
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None).map_err(io::Error::from)
}

/// Blocks `SIGTTOU` in a freshly forked child, so that it may make itself the terminal's
/// foreground group from the background without being stopped. Async-signal-safe.
pub fn block_ttou_in_child() -> io::Result<()> {
    let mut ttou = SigSet::empty();
    ttou.add(Signal::SIGTTOU);
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&ttou), None).map_err(io::Error::from)
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

    /// The next pending signal's number. Pending signals that arrived before the reader was
    /// opened are read too: blocking keeps them queued on the process.
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
        for signo in [
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGUSR2,
            libc::SIGWINCH,
            libc::SIGCONT,
            libc::SIGRTMIN(),
            libc::SIGRTMAX(),
        ] {
            assert!(is_forwarded(signo), "{}", name(signo));
        }
        for signo in [
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGUSR1,
            libc::SIGCHLD,
            libc::SIGTSTP,
            libc::SIGTTIN,
            libc::SIGTTOU,
            libc::SIGPIPE,
        ] {
            assert!(!is_forwarded(signo), "{}", name(signo));
        }
    }

    #[test]
    fn synchronous_faults_are_never_blocked() {
        let set = handled_set();
        assert!(!set.contains(Signal::SIGSEGV));
        assert!(set.contains(Signal::SIGTERM) && set.contains(Signal::SIGCHLD));
        assert!(set.contains(Signal::SIGTTOU) && set.contains(Signal::SIGUSR1));
    }
}
