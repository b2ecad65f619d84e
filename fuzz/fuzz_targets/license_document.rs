//! Any bytes as a license file: parsing never panics, a parsed license survives a write and a
//! re-read unchanged, and checking it against any credential and version never panics.
#![no_main]

use std::ffi::OsStr;

use libfuzzer_sys::fuzz_target;
use lsinit::licensing::credential::{CredentialKind, Secret};
use lsinit::licensing::document::License;

fuzz_target!(|data: &[u8]| {
    let now = time::OffsetDateTime::now_utc();
    if let Ok(license) = License::from_disk(data) {
        let again = License::from_disk(&license.to_bytes()).expect("a written license re-reads");
        assert_eq!(again.canonical_message(), license.canonical_message());
        let key = Secret::from_env_value(CredentialKind::AuthToken, OsStr::new("ls-Wxyz0123-4567-89ab-cdef-ghijklmnf90e"))
            .expect("non-blank");
        let _ = license.check(&key, "4.14.0", now);
        let _ = license.check(&key, "", now);
    }
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Ok((license, _)) = License::from_server(value, "4.14.0") {
            assert_eq!(license.localstack_version, "4.14.0");
            License::from_disk(&license.to_bytes()).expect("an accepted license re-reads");
        }
    }
});
