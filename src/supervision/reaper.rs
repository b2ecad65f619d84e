//! Reaping and process-tree chores: draining `waitpid(-1)`, finding what is left of the
//! container's processes, and signalling them.
//!
//! The emulator's exit is seen only here (SPEC 6): nothing else in lsinit waits for a child.
//! Does not own which process is the emulator, what a status means, or when anything gets a
//! signal: those are the supervisor's (`mod.rs`) and the boot steps' decisions.

use std::collections::{HashMap, VecDeque};
use std::fs;

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// The most processes one drain reaps. A storm of exits (a fork loop abandoning children) could
/// otherwise keep the drain going while signals wait; the caller drains again at once when
/// [`Drained::more`] says so, after looking at the signals.
pub const BATCH: usize = 256;

/// What a drain found.
pub struct Drained {
    /// Processes reaped, with their exit status in shell form (code, or 128 + signal).
    pub exited: Vec<(Pid, i32)>,
    /// Whether any child is still alive (or not reaped yet, when [`Drained::more`] is set).
    pub children_remain: bool,
    /// The batch was full: more exited children may be waiting.
    pub more: bool,
}

/// Reaps up to [`BATCH`] children that have exited, adopted orphans included, without blocking.
pub fn drain() -> Drained {
    let mut exited = Vec::new();
    let drained = |exited, children_remain, more| Drained {
        exited,
        children_remain,
        more,
    };
    while exited.len() < BATCH {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => exited.push((pid, code)),
            Ok(WaitStatus::Signaled(pid, signal, _)) => exited.push((pid, 128 + signal as i32)),
            Ok(WaitStatus::StillAlive) => return drained(exited, true, false),
            // Stopped/continued reports are only given with WUNTRACED/WCONTINUED.
            Ok(_) => {}
            Err(Errno::EINTR) => {}
            // ECHILD: no child at all. Nothing else is possible with these arguments.
            Err(_) => return drained(exited, false, false),
        }
    }
    drained(exited, true, true)
}

/// Reaps every exited child, batch after batch, for the time before the emulator exists, when
/// nothing else waits on the loop; returns the status of `watched` when it was among them.
/// Reaped processes are counted in one debug line, not one line each.
pub fn drain_all(watched: Option<Pid>) -> Option<i32> {
    let mut found = None;
    let mut count = 0;
    loop {
        let drained = drain();
        count += drained.exited.len();
        for (pid, status) in drained.exited {
            if Some(pid) == watched {
                found = Some(status);
            }
        }
        if !drained.more {
            break;
        }
    }
    if count > 0 {
        log::debug!("reaped {count} process(es)");
    }
    found
}

/// Whether no process is left in the process group `group` (zombies not yet reaped count).
pub fn group_is_empty(group: Pid) -> bool {
    // SAFETY: kill(2) with signal 0 only checks for existence and permission.
    let result = unsafe { libc::kill(-group.as_raw(), 0) };
    result != 0 && Errno::last() == Errno::ESRCH
}

/// Every descendant of `root`, from `/proc` (parents before children); `None` when `/proc` is
/// missing or belongs to another PID namespace, whose numbers would name other processes.
pub fn descendants(root: Pid) -> Option<Vec<Pid>> {
    let own_proc = fs::read_link("/proc/self")
        .ok()
        .and_then(|link| link.to_str()?.parse::<i32>().ok())
        == Some(nix::unistd::getpid().as_raw());
    if !own_proc {
        return None;
    }
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    let entries = fs::read_dir("/proc").ok()?;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(ppid) = parent_of(pid) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut queue = VecDeque::from([root.as_raw()]);
    while let Some(pid) = queue.pop_front() {
        for &child in children.get(&pid).into_iter().flatten() {
            found.push(Pid::from_raw(child));
            queue.push_back(child);
        }
    }
    Some(found)
}

/// The parent PID from `/proc/<pid>/stat`; the command name may hold spaces and parentheses,
/// so the fields are read after its last `)`.
fn parent_of(pid: i32) -> Option<i32> {
    // Bytes, not a String: the kernel cuts the name at 15 bytes, which can split a multi-byte
    // character, and such a process must still be found.
    let stat = fs::read(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.iter().rposition(|&b| b == b')')? + 1..];
    let rest = std::str::from_utf8(rest).ok()?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Sends a raw signal number (real-time ones included) to a process or, negative, a group.
/// Failures are not reported: a target that is already gone (`ESRCH`) is the usual case, and a
/// full real-time queue (`EAGAIN`) loses only that one signal, as it would without lsinit.
pub fn send(target: i32, signo: i32) {
    // SAFETY: kill(2) has no memory effects; any pid and signal number are valid inputs.
    unsafe { libc::kill(target, signo) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_of_reads_our_own_stat() {
        let me = std::process::id() as i32;
        assert_eq!(parent_of(me), Some(nix::unistd::getppid().as_raw()));
    }
}
