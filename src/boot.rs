//! Boot steps of the upstream entrypoint (SPEC 8) that run before licensing.
//!
//! LIMITATION: the `boot.d` BOOT hooks are not run yet; SPEC 8 places them with the image work.

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;

use crate::config::Settings;

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
