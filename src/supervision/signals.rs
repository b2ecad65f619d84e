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

/// glibc's two internal signals, 32 (`SIGCANCEL`, for `pthread_cancel`) and 33 (`SIGSETXID`, for
/// `setuid` and friends in threaded programs). glibc's `sigfillset` and `sigprocmask` silently
/// leave them out, and its `pthread_create` unblocks them again in the new thread and in the
/// thread that created it; their default action ends the process. lsinit uses neither feature.
const GLIBC_INTERNAL: [i32; 2] = [32, 33];

/// The kernel's signal set: 64 bits, bit `n - 1` for signal `n` (`_NSIG / 8` bytes on Linux).
type KernelSigset = u64;

fn glibc_internal_mask() -> KernelSigset {
    GLIBC_INTERNAL.iter().map(|signo| 1 << (signo - 1)).sum()
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("KernelSigaction's layout is only checked for x86_64 and aarch64");

/// The kernel's `struct sigaction` as `rt_sigaction(2)` takes it on x86_64 and aarch64 (both
/// define `SA_RESTORER`, so the field is there); glibc's own wrapper refuses signals 32 and 33.
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    restorer: usize,
    mask: KernelSigset,
}

/// Whether lsinit's caller left signal 32 or 33 ignored, so the emulator gets them back that way.
static CALLER_IGNORES_GLIBC_INTERNAL: [AtomicBool; 2] =
    [AtomicBool::new(false), AtomicBool::new(false)];

/// Sets the disposition of `signo` with the raw system call; returns whether it was ignored.
/// Async-signal-safe: one system call on values on the stack.
fn set_disposition_raw(signo: i32, handler: libc::sighandler_t) -> io::Result<bool> {
    let new = KernelSigaction {
        handler,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    let mut old = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // SAFETY: both pointers are to live KernelSigaction values laid out as the kernel's struct
    // for this architecture, with the kernel's sigset size; SIG_IGN and SIG_DFL install no code.
    let result = unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            signo,
            &new as *const KernelSigaction,
            &mut old as *mut KernelSigaction,
            std::mem::size_of::<KernelSigset>(),
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(old.handler == libc::SIG_IGN)
}

/// `rt_sigprocmask(2)` without glibc's filtering, for signals 32 and 33.
/// Async-signal-safe: one system call on a value on the stack.
fn sigprocmask_raw(how: libc::c_int, set: KernelSigset) -> io::Result<()> {
    // SAFETY: `set` is a live 8-byte kernel sigset and the size passed says so; the old set is
    // not asked for (null). The call changes only the calling thread's mask.
    let result = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            how,
            &set as *const KernelSigset,
            std::ptr::null_mut::<KernelSigset>(),
            std::mem::size_of::<KernelSigset>(),
        )
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Resets `SIGCHLD` to its default (an ignored `SIGCHLD` makes the kernel discard exit statuses)
/// and blocks every asynchronous signal. Must run before any thread is created, so that every
/// later thread inherits the mask and no signal is delivered anywhere but the `signalfd`.
///
/// Signals 32 and 33 (see [`GLIBC_INTERNAL`]) are blocked with the raw system call and also
/// ignored, because glibc unblocks them whenever a thread is created (lsinit's own activation
/// and restart threads, and any a library starts). They are never read or forwarded: glibc
/// uses them internally, and sending them on to a glibc emulator could cancel its threads.
pub fn block_all() -> io::Result<()> {
    // The constructor's object must be linked in: naming its static here makes sure of that.
    std::hint::black_box(&RECORD_CALLER_SIGPIPE);
    // SAFETY: setting a default disposition installs no handler and runs before any thread
    // exists, so no other code can be racing on the disposition.
    unsafe { signal(Signal::SIGCHLD, SigHandler::SigDfl) }.map_err(io::Error::from)?;
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&handled_set()), None).map_err(io::Error::from)?;
    sigprocmask_raw(libc::SIG_BLOCK, glibc_internal_mask())?;
    for (signo, caller_ignores) in GLIBC_INTERNAL.iter().zip(&CALLER_IGNORES_GLIBC_INTERNAL) {
        let ignored = set_disposition_raw(*signo, libc::SIG_IGN)?;
        caller_ignores.store(ignored, Ordering::Relaxed);
    }
    Ok(())
}

/// Gives a freshly forked child the signal state of lsinit's caller: no blocked signal (32 and
/// 33 included), and `SIGPIPE`, 32 and 33 as the caller had them (std has set `SIGPIPE` to
/// default by now, lsinit ignores 32 and 33). Other dispositions were never changed by lsinit.
///
/// LIMITATION: `SIGCHLD` stays at its default even when the caller ignored it: SPEC 1 resets it
/// first thing so that lsinit sees exit statuses, and the caller's choice is not kept for the
/// emulator (an ignored `SIGCHLD` would only make the emulator's own children vanish unreaped).
///
/// Async-signal-safe: atomic loads and system calls on values on the stack.
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
    for (signo, caller_ignores) in GLIBC_INTERNAL.iter().zip(&CALLER_IGNORES_GLIBC_INTERNAL) {
        let handler = if caller_ignores.load(Ordering::Relaxed) {
            libc::SIG_IGN
        } else {
            libc::SIG_DFL
        };
        set_disposition_raw(*signo, handler)?;
    }
    // The raw call: glibc's sigprocmask would leave 32 and 33 as they are.
    sigprocmask_raw(libc::SIG_SETMASK, 0)
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

    /// Reads, without waiting, every signal that came before the emulator exists: `TERM` or
    /// `INT` is returned (lsinit must exit without starting it), exited children are reaped,
    /// and anything else is dropped as SPEC 1 says (`USR1` then is no restart request).
    pub fn settle_before_start(&mut self) -> Option<i32> {
        loop {
            match self.fd.get_ref().read_signal() {
                Ok(Some(info)) => match info.ssi_signo as i32 {
                    signo @ (libc::SIGTERM | libc::SIGINT) => return Some(signo),
                    libc::SIGCHLD => {
                        super::reaper::drain_all(None);
                    }
                    signo => log::debug!(
                        "got {} before the emulator exists, dropping it",
                        name(signo)
                    ),
                },
                // Nothing left (the descriptor does not block), or unreadable: the loop sees it.
                Ok(None) | Err(_) => return None,
            }
        }
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

    #[test]
    fn glibc_internal_signals_are_bits_31_and_32() {
        assert_eq!(glibc_internal_mask(), 0x1_8000_0000);
        assert!(!is_forwarded(32) && !is_forwarded(33));
    }
}
