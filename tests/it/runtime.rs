//! The real LocalStack runtime under lsinit: `Ready.` passes through, health answers, restarts
//! through the health endpoint keep lsinit's PID, and `TERM` ends with the runtime's own status.
//!
//! Needs the runtime installed by `scripts/install-runtime.sh` (the test command does it); the
//! venv is found through `LSINIT_RUNTIME_VENV` or the script's default location.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use license_server::{Credential, LicenseServer};

use crate::harness::*;

/// The runtime takes a few seconds to start on two busy cores; this is only an upper bound.
const START_LIMIT: Duration = Duration::from_secs(120);

fn runtime_venv() -> PathBuf {
    let venv = std::env::var_os("LSINIT_RUNTIME_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".cache/lsinit/runtime-4.14.0")
        });
    assert!(
        venv.join(".lsinit-complete").is_file(),
        "the LocalStack runtime is not installed in {}; run scripts/install-runtime.sh",
        venv.display()
    );
    venv
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// The emulator's PID: the child of lsinit that runs the runtime. lsinit, a subreaper, may also
/// have adopted processes the runtime left behind, so the command line decides.
fn emulator_pid(lsinit: i32) -> Option<i32> {
    let children =
        std::fs::read_to_string(format!("/proc/{lsinit}/task/{lsinit}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .find(|pid: &i32| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                String::from_utf8_lossy(&cmdline).contains("localstack.runtime.main")
            })
        })
}

fn health(port: u16) -> serde_json::Value {
    let mut response = ureq::get(format!("http://127.0.0.1:{port}/_localstack/health"))
        .call()
        .expect("health answers");
    serde_json::from_slice(&response.body_mut().read_to_vec().expect("body")).expect("JSON")
}

/// Asks the runtime to restart; the reply may be cut short by the restart itself.
fn request_restart(port: u16) {
    let _ = ureq::post(format!("http://127.0.0.1:{port}/_localstack/health"))
        .config()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .send(r#"{"action":"restart"}"#);
}

/// Starts lsinit with the real runtime, retrying on a port clash; returns it when `Ready.`.
fn start_runtime(sandbox: &Sandbox, server: &LicenseServer, venv: &PathBuf) -> (Running, u16) {
    start_runtime_with(sandbox, server, venv, |lsinit| lsinit)
}

/// As [`start_runtime`], with lsinit's command passed through `launch` first (to run it under
/// another program).
fn start_runtime_with(
    sandbox: &Sandbox,
    server: &LicenseServer,
    venv: &PathBuf,
    launch: impl Fn(Command) -> Command,
) -> (Running, u16) {
    for _ in 0..3 {
        let port = free_port();
        let mut lsinit = sandbox.command(Vec::<&str>::new());
        lsinit
            .env("LOCALSTACK_AUTH_TOKEN", TOKEN)
            .env("API_ENDPOINT", server.url())
            .env("LSINIT_VENV_DIR", venv)
            .env_remove("LOCALSTACK_BUILD_VERSION")
            .env(
                "HOME",
                std::env::var_os("HOME").unwrap_or_else(|| "/root".into()),
            )
            .env("DNS_ADDRESS", "0")
            .env("DISABLE_EVENTS", "1")
            .env("SKIP_SSL_CERT_DOWNLOAD", "1")
            .env("GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
            .env("SHUTDOWN_TIMEOUT", "30");
        let mut running = Running::start(&mut launch(lsinit));
        if running.try_wait_for_line("Ready.", START_LIMIT) {
            return (running, port);
        }
        let outcome = running.finish(Duration::from_secs(40));
        assert!(
            outcome.stderr.contains("Address already in use")
                || outcome.stderr.contains("[Errno 98]"),
            "the runtime did not start:\n{}",
            outcome.stderr
        );
    }
    panic!("the runtime could not bind a free port three times in a row");
}

#[test]
fn real_runtime_starts_restarts_twice_and_stops_with_its_own_status() {
    let venv = runtime_venv();
    let sandbox = Sandbox::new();
    let server = LicenseServer::start().expect("server");
    server.add_credential(Credential::auth_token(TOKEN));

    let (mut running, port) = start_runtime(&sandbox, &server, &venv);
    let lsinit_pid = running.pid();
    assert!(health(port)["services"].is_object());
    assert_eq!(server.request_count(), 1, "one activation request");
    let first = emulator_pid(lsinit_pid).expect("the emulator runs");
    let environ = std::fs::read(format!("/proc/{first}/environ")).expect("environ");
    let environ = String::from_utf8_lossy(&environ);
    assert!(environ.split('\0').any(|v| v == "ACTIVATE_PRO=1"));
    assert!(
        environ
            .split('\0')
            .any(|v| v == format!("LOCALSTACK_AUTH_TOKEN={TOKEN}"))
    );
    assert!(
        environ
            .split('\0')
            .any(|v| v == format!("SUPERVISOR_PID={lsinit_pid}"))
    );

    let mut previous = first;
    for _ in 0..2 {
        request_restart(port);
        running.wait_for_line("Ready.", START_LIMIT);
        let current = emulator_pid(lsinit_pid).expect("a new emulator runs");
        assert_ne!(
            current, previous,
            "the restart started a new emulator process"
        );
        assert!(
            !std::path::Path::new(&format!("/proc/{previous}")).exists(),
            "old one gone"
        );
        assert!(health(port)["services"].is_object());
        previous = current;
    }
    assert_eq!(running.pid(), lsinit_pid);
    assert_eq!(
        server.request_count(),
        1,
        "restarts reuse the cached license"
    );

    running.signal(libc::SIGTERM);
    let outcome = running.finish(Duration::from_secs(60));
    assert_eq!(outcome.code(), Some(0), "{}", outcome.stderr);
    assert_eq!(outcome.stdout.matches("Ready.").count(), 3);
    assert!(
        outcome.stderr.contains("activated LocalStack Pro"),
        "{}",
        outcome.stderr
    );
    assert!(!std::path::Path::new(&format!("/proc/{previous}")).exists());
}

#[test]
fn real_runtime_as_pid1_starts_restarts_and_stops_with_its_own_status() {
    let venv = runtime_venv();
    let sandbox = Sandbox::new();
    let server = LicenseServer::start().expect("server");
    server.add_credential(Credential::auth_token(TOKEN));

    let (mut running, port) =
        start_runtime_with(&sandbox, &server, &venv, |lsinit| as_pid1(&lsinit));
    // The pid the test signals: unshare's child, PID 1 inside the namespace.
    let lsinit_pid = only_child(running.pid());
    assert!(health(port)["services"].is_object());
    assert_eq!(server.request_count(), 1, "one activation request");
    let first = emulator_pid(lsinit_pid).expect("the emulator runs");
    let environ = std::fs::read(format!("/proc/{first}/environ")).expect("environ");
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        environ.split('\0').any(|v| v == "SUPERVISOR_PID=1"),
        "the runtime must signal PID 1 inside the namespace"
    );

    request_restart(port);
    running.wait_for_line("Ready.", START_LIMIT);
    let second = emulator_pid(lsinit_pid).expect("a new emulator runs");
    assert_ne!(second, first, "the restart started a new emulator process");
    assert!(
        !std::path::Path::new(&format!("/proc/{first}")).exists(),
        "old one gone"
    );
    assert!(health(port)["services"].is_object());
    assert_eq!(
        only_child(running.pid()),
        lsinit_pid,
        "lsinit's pid never changes"
    );
    assert_eq!(
        server.request_count(),
        1,
        "the restart reuses the cached license"
    );

    // SAFETY: kill(2) to lsinit, which this test started (through unshare).
    assert_eq!(unsafe { libc::kill(lsinit_pid, libc::SIGTERM) }, 0);
    let outcome = running.finish(Duration::from_secs(60));
    assert_eq!(outcome.code(), Some(0), "{}", outcome.stderr);
    assert_eq!(outcome.stdout.matches("Ready.").count(), 2);
    assert!(!std::path::Path::new(&format!("/proc/{second}")).exists());
}
