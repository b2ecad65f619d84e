//! Licensing end to end: the real binary against the reference license server.

use std::time::Duration;

use license_server::{Credential, LicenseServer};

use crate::harness::*;

#[test]
fn activation_writes_the_cache_and_the_emulator_gets_activate_pro() {
    let sandbox = Sandbox::new();
    let server = LicenseServer::start().expect("server");
    server.add_credential(Credential::auth_token(TOKEN));
    let seen = sandbox.scratch().join("env");

    let outcome = run(
        sandbox
            .command(["sh", "-c", "env > \"$0\"", seen.to_str().unwrap()])
            .env("LOCALSTACK_AUTH_TOKEN", TOKEN)
            .env("API_ENDPOINT", server.url()),
        Duration::from_secs(30),
    );

    assert_eq!(outcome.code(), Some(0), "{}", outcome.stderr);
    assert_eq!(server.request_count(), 1);
    let env = std::fs::read_to_string(&seen).unwrap();
    assert!(env.lines().any(|l| l == "ACTIVATE_PRO=1"), "{env}");
    assert!(
        env.lines()
            .any(|l| l == format!("LOCALSTACK_AUTH_TOKEN={TOKEN}"))
    );
    assert!(sandbox.cache_file().is_file());
}
