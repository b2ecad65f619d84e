//! The license cache under hostile conditions (issue: cache robustness): whatever sits at
//! `<volume>/cache/license.json`, lsinit neither crashes nor writes through a link, leaves no
//! temp file, and activates as SPEC 3.2 says.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use license_server::{Credential, LicenseServer};

use crate::harness::*;

const LIMIT: Duration = Duration::from_secs(30);

fn start_server() -> LicenseServer {
    let server = LicenseServer::start().expect("server");
    server.add_credential(Credential::auth_token(TOKEN));
    server
}

/// `lsinit check` with the token against `server`.
fn check(sandbox: &Sandbox, server: &LicenseServer) -> Command {
    let mut command = sandbox.command(["check"]);
    command
        .env("LOCALSTACK_AUTH_TOKEN", TOKEN)
        .env("API_ENDPOINT", server.url());
    command
}

/// Names in the cache folder other than the two files lsinit keeps there.
fn strays(cache: &Path) -> Vec<String> {
    fs::read_dir(cache)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "license.json" && n != "machine.json")
                .collect()
        })
        .unwrap_or_default()
}

fn is_license(path: &Path) -> bool {
    fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .is_some_and(|doc| doc["license_format"] == "1")
}

#[test]
fn unusable_cache_files_are_replaced_by_a_fresh_license() {
    let cases: [(&str, Vec<u8>); 4] = [
        ("empty", Vec::new()),
        (
            "truncated",
            br#"{"id": "license_1", "license_format": "1", "sig"#.to_vec(),
        ),
        ("binary", (0..=255u8).cycle().take(4096).collect()),
        ("huge", vec![b' '; 3 << 20]),
    ];
    for (case, bytes) in cases {
        let sandbox = Sandbox::new();
        let server = start_server();
        let cache = sandbox.volume().join("cache");
        fs::create_dir_all(&cache).unwrap();
        fs::write(cache.join("license.json"), bytes).unwrap();

        let outcome = run(&mut check(&sandbox, &server), LIMIT);

        assert_eq!(outcome.code(), Some(0), "{case}: {}", outcome.stderr);
        assert_eq!(server.request_count(), 1, "{case}");
        assert!(
            is_license(&cache.join("license.json")),
            "{case}: not replaced"
        );
        assert!(strays(&cache).is_empty(), "{case}: {:?}", strays(&cache));
    }
}

#[test]
fn a_directory_in_place_of_the_cache_file_is_a_warning_not_a_failure() {
    let sandbox = Sandbox::new();
    let server = start_server();
    let cache = sandbox.volume().join("cache");
    fs::create_dir_all(cache.join("license.json")).unwrap();

    let outcome = run(&mut check(&sandbox, &server), LIMIT);

    assert_eq!(outcome.code(), Some(0), "{}", outcome.stderr);
    assert_eq!(server.request_count(), 1);
    assert!(
        cache.join("license.json").is_dir(),
        "the directory was left alone"
    );
    let warning = outcome
        .stderr
        .lines()
        .find(|l| l.contains(" WARN "))
        .unwrap_or("");
    assert!(
        warning.contains("cannot cache the license"),
        "{}",
        outcome.stderr
    );
    assert!(strays(&cache).is_empty(), "{:?}", strays(&cache));
}

#[test]
fn a_symlink_in_place_of_the_cache_file_is_replaced_never_written_through() {
    let sandbox = Sandbox::new();
    let server = start_server();
    let cache = sandbox.volume().join("cache");
    fs::create_dir_all(&cache).unwrap();
    let elsewhere = sandbox.scratch().join("precious");
    fs::write(&elsewhere, b"keep me").unwrap();
    symlink(&elsewhere, cache.join("license.json")).unwrap();

    let outcome = run(&mut check(&sandbox, &server), LIMIT);

    assert_eq!(outcome.code(), Some(0), "{}", outcome.stderr);
    assert_eq!(fs::read(&elsewhere).unwrap(), b"keep me");
    let meta = fs::symlink_metadata(cache.join("license.json")).unwrap();
    assert!(
        meta.file_type().is_file(),
        "the link was replaced by a file"
    );
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(is_license(&cache.join("license.json")));
}

#[test]
fn a_missing_volume_is_created_and_a_read_only_one_only_warns() {
    // Missing: the whole path is created.
    let sandbox = Sandbox::new();
    let server = start_server();
    let outcome = run(&mut check(&sandbox, &server), LIMIT);
    assert_eq!(outcome.code(), Some(0), "{}", outcome.stderr);
    assert!(is_license(&sandbox.cache_file()));

    // Read-only (a read-only bind mount in a private mount namespace: root ignores modes).
    let sandbox = Sandbox::new();
    let server = start_server();
    fs::create_dir_all(sandbox.volume()).unwrap();
    let volume = sandbox.volume();
    let script = format!(
        "mount --bind '{v}' '{v}' && mount -o remount,bind,ro '{v}' && exec \"$@\"",
        v = volume.display()
    );
    let mut unshare = Command::new("unshare");
    unshare.args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
        "sh",
    ]);
    let mut wrapped = wrapped(unshare, &check(&sandbox, &server));
    // mount lives in /usr/sbin, which the harness's PATH may lack.
    wrapped.env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");

    let outcome = run(&mut wrapped, LIMIT);

    assert_eq!(outcome.code(), Some(0), "{}", outcome.stderr);
    assert_eq!(server.request_count(), 1);
    assert!(
        outcome.stderr.contains("cannot cache the license"),
        "{}",
        outcome.stderr
    );
    assert!(!sandbox.cache_file().exists());
}

#[test]
fn two_lsinits_activating_at_once_leave_one_whole_license_and_no_temp_file() {
    let sandbox = Sandbox::new();
    let server = start_server();
    let mut first = check(&sandbox, &server);
    let mut second = check(&sandbox, &server);
    let first = std::thread::spawn(move || run(&mut first, LIMIT));
    let second = std::thread::spawn(move || run(&mut second, LIMIT));

    for outcome in [first.join().unwrap(), second.join().unwrap()] {
        assert_eq!(outcome.code(), Some(0), "{}", outcome.stderr);
    }
    let cache = sandbox.volume().join("cache");
    assert!(is_license(&cache.join("license.json")));
    assert!(strays(&cache).is_empty(), "{:?}", strays(&cache));
    // And the file that won is one a third start accepts without a request.
    let before = server.request_count();
    let outcome = run(&mut check(&sandbox, &server), LIMIT);
    assert_eq!(outcome.code(), Some(0), "{}", outcome.stderr);
    assert_eq!(
        server.request_count(),
        before,
        "the cached license was not accepted"
    );
}
