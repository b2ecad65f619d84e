//! Licenses and the machine id on disk (SPEC 3.2, 3.5): where they are read from, the atomic
//! write, and the deletion after a rejection.
//!
//! Every write goes through [`write_atomically`] and holds [`WRITES`], so that an early `TERM`
//! can wait for a write in flight to finish and never leaves a half-written or temp file.
//!
//! Not owned here: whether a file holds a usable license (`document`) or which one wins
//! (`mod.rs`).

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::config::Roots;

/// The file name of a license in every location.
pub const LICENSE_FILE: &str = "license.json";

/// Larger files are not licenses; reading stops there instead of filling memory.
const MAX_FILE_BYTES: u64 = 1 << 20;

static WRITES: Mutex<()> = Mutex::new(());

/// Blocks until no write is in flight and keeps new ones from starting while held. Taken by the
/// main thread before it exits early.
pub fn hold_writes() -> MutexGuard<'static, ()> {
    WRITES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The places a license is read from, in order (SPEC 3.2 step 2).
pub fn read_locations(roots: &Roots) -> [PathBuf; 3] {
    [
        roots.config.join("conf.d").join(LICENSE_FILE),
        cache_dir(roots).join(LICENSE_FILE),
        roots.static_files.join(LICENSE_FILE),
    ]
}

/// `<volume>/cache`: the only directory lsinit writes to.
pub fn cache_dir(roots: &Roots) -> PathBuf {
    roots.volume.join("cache")
}

pub fn cached_license_path(roots: &Roots) -> PathBuf {
    cache_dir(roots).join(LICENSE_FILE)
}

/// Reads a small regular file; `Ok(None)` when it does not exist.
pub fn read_small_file(path: &Path) -> io::Result<Option<Vec<u8>>> {
    // O_NONBLOCK: opening a FIFO put in the file's place must not hang the start.
    let file = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(io::Error::other("larger than 1 MiB"));
    }
    Ok(Some(bytes))
}

/// Writes `bytes` to `path` so that readers see the old file or the new one, never a part:
/// a temp file in the same directory, fsync, rename over the target, fsync the directory.
/// A symlink at `path` is replaced, never followed.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let _writing = hold_writes();
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("path has no directory"))?;
    create_dir_0755(dir)?;

    let mut temp = tempfile::Builder::new()
        .prefix(".lsinit-")
        .suffix(".tmp")
        .permissions(fs::Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    temp.write_all(bytes)?;
    // The umask may have narrowed the mode at creation; set it exactly.
    temp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    fs::File::open(dir)?.sync_all()
}

/// Creates `dir` (and its parents) when missing. The directory itself gets exactly 0755, as the
/// umask may have narrowed it (SPEC 3.2); one that exists is left as it is.
fn create_dir_0755(dir: &Path) -> io::Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)?;
    }
    match fs::DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(0o755)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes a file if present; a missing file is not an error.
pub fn remove(path: &Path) -> io::Result<()> {
    let _writing = hold_writes();
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The machine id sent with every request, read from `<volume>/cache/machine.json`, or made:
/// then `fresh`, to be kept with [`keep_machine_id`] once a request has been made, so that a
/// start stopped before its request touches no file.
pub struct MachineId {
    pub id: String,
    pub fresh: bool,
}

pub fn machine_id(roots: &Roots) -> MachineId {
    let path = cache_dir(roots).join("machine.json");
    let existing = match read_small_file(&path) {
        Ok(bytes) => bytes,
        Err(e) => {
            log::debug!(
                "cannot read {}: {e}, thus making a new machine id",
                path.display()
            );
            None
        }
    };
    if let Some(bytes) = existing {
        let id = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| {
                v.get("machine_id")
                    .and_then(|id| id.as_str())
                    .map(str::to_string)
            });
        match id {
            Some(id) if !id.is_empty() => return MachineId { id, fresh: false },
            _ => log::debug!(
                "{} holds no machine_id, thus making a new one",
                path.display()
            ),
        }
    }
    MachineId {
        id: format!("gen_{:012x}", fastrand::u64(..) & 0xffff_ffff_ffff),
        fresh: true,
    }
}

/// Persists a fresh machine id (mode 0644); a failed write keeps it for this start only.
pub fn keep_machine_id(roots: &Roots, machine: &mut MachineId) {
    if !machine.fresh {
        return;
    }
    machine.fresh = false;
    let path = cache_dir(roots).join("machine.json");
    let document = serde_json::json!({ "machine_id": machine.id });
    if let Err(e) = write_atomically(&path, document.to_string().as_bytes(), 0o644) {
        log::debug!("cannot keep the machine id in {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn atomic_write_sets_mode_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache").join("license.json");
        write_atomically(&path, b"{}", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"{}");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let dir_mode = fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o755);
        let names: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn atomic_write_replaces_a_symlink_instead_of_following_it() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        fs::write(&elsewhere, b"keep").unwrap();
        let path = dir.path().join("license.json");
        symlink(&elsewhere, &path).unwrap();
        write_atomically(&path, b"new", 0o600).unwrap();
        assert_eq!(fs::read(&elsewhere).unwrap(), b"keep");
        assert!(
            !fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    #[test]
    fn reading_a_fifo_in_place_of_the_file_fails_instead_of_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("license.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(read_small_file(&fifo).is_err());
    }

    #[test]
    fn reading_refuses_directories_and_huge_files() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_small_file(dir.path()).is_err());
        assert!(
            read_small_file(&dir.path().join("absent"))
                .unwrap()
                .is_none()
        );
        let huge = dir.path().join("huge");
        fs::write(&huge, vec![b' '; (MAX_FILE_BYTES + 1) as usize]).unwrap();
        assert!(read_small_file(&huge).is_err());
    }

    #[test]
    fn machine_id_is_made_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let roots = Roots {
            volume: dir.path().to_path_buf(),
            config: dir.path().join("etc"),
            static_files: dir.path().join("usr"),
            venv: dir.path().join("venv"),
        };
        let mut made = machine_id(&roots);
        assert!(made.fresh);
        let path = dir.path().join("cache/machine.json");
        assert!(!path.exists(), "nothing is written before a request");
        keep_machine_id(&roots, &mut made);
        let first = machine_id(&roots).id;
        assert!(first.starts_with("gen_") && first.len() == 16, "{first}");
        assert_eq!(machine_id(&roots).id, made.id);
        assert_eq!(
            fs::metadata(path).unwrap().permissions().mode() & 0o777,
            0o644
        );
    }
}
