//! The activation's network behaviour end to end (SPEC 3.5–3.6, 3.7): TLS with a CA made here,
//! a real HTTP `CONNECT` proxy, misbehaving servers, DNS and connect failures, each through the
//! real binary and `lsinit check`.
//!
//! Every server, proxy and endpoint is on loopback and started here (SPEC 11). A name such as
//! `licensing.test` is never looked up on the host: either the test proxy, which knows it, is
//! used, or the case runs in a network namespace with only loopback (`unshare --net`), where no
//! query can leave the machine. As a safety net against regressions, every `lsinit check` on
//! the host also runs with DNS switched off ([`without_dns`]).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use license_server::{
    ConnectProxy, Credential, Fault, LicenseServer, LicenseTemplate, TlsFault, basic_credentials,
    make_license, new_license_id,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{Value, json};

use crate::harness::*;

/// Small budgets, so that each failure ends fast: connect, request, whole activation (seconds).
const BUDGETS: [(&str, &str); 3] = [
    ("LSINIT_CONNECT_TIMEOUT", "2"),
    ("LSINIT_REQUEST_TIMEOUT", "1"),
    ("LSINIT_ACTIVATION_TIMEOUT", "5"),
];
/// A generous upper bound for a run within those budgets.
const WITHIN_BUDGET: Duration = Duration::from_secs(8);
/// When a run is killed as hung.
const RUN_LIMIT: Duration = Duration::from_secs(60);
/// The proxy user's password: [`SECRETS`] has it, so the harness checks it is never printed.
const PROXY_PASSWORD: &str = "proxy-secret-pw";
/// The name only the test proxy resolves.
const PROXIED_HOST: &str = "licensing.test";

// ---------------------------------------------------------------------------------------------
// Fixtures

/// A CA made for one test and a server certificate it signed, with both written to disk.
struct Pki {
    cert_pem: String,
    key_pem: String,
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA and a certificate for `names` (DNS names or IP addresses).
    fn new(names: &[&str]) -> Pki {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca.distinguished_name
            .push(DnType::CommonName, "lsinit test CA");
        let ca_pem = ca.self_signed(&ca_key).expect("CA certificate").pem();
        let issuer = Issuer::new(ca, ca_key);

        let key = KeyPair::generate().expect("server key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut leaf = CertificateParams::new(names.clone()).expect("server params");
        leaf.distinguished_name.push(DnType::CommonName, &names[0]);
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert_pem = leaf.signed_by(&key, &issuer).expect("server cert").pem();

        let dir = tempfile::tempdir().expect("pki dir");
        std::fs::write(dir.path().join("ca.pem"), &ca_pem).expect("ca.pem");
        std::fs::create_dir(dir.path().join("certs")).expect("certs dir");
        std::fs::write(dir.path().join("certs/test-ca.pem"), &ca_pem).expect("certs/ca.pem");
        Pki {
            cert_pem,
            key_pem: key.serialize_pem(),
            dir,
        }
    }

    /// The CA certificate as a PEM file.
    fn ca_file(&self) -> String {
        path_string(self.dir.path().join("ca.pem"))
    }

    /// A directory holding the CA certificate.
    fn ca_dir(&self) -> String {
        path_string(self.dir.path().join("certs"))
    }

    /// A TLS license server with this certificate that knows [`TOKEN`].
    fn server(&self) -> LicenseServer {
        let server = LicenseServer::start_tls(&self.cert_pem, &self.key_pem).expect("TLS server");
        server.add_credential(Credential::auth_token(TOKEN));
        server
    }
}

fn path_string(path: PathBuf) -> String {
    path.to_str().expect("UTF-8 temp path").to_string()
}

/// A plain license server that knows [`TOKEN`].
fn plain_server() -> LicenseServer {
    let server = LicenseServer::start().expect("server");
    server.add_credential(Credential::auth_token(TOKEN));
    server
}

/// `lsinit check` for [`TOKEN`] against `endpoint`, small budgets, then `env`.
fn check_command(sandbox: &Sandbox, endpoint: &str, env: &[(&str, &str)]) -> Command {
    let mut command = sandbox.command(["check"]);
    command
        .env("LOCALSTACK_AUTH_TOKEN", TOKEN)
        .env("ACTIVATE_PRO", "1")
        .env("API_ENDPOINT", endpoint);
    for (name, value) in BUDGETS.iter().chain(env) {
        command.env(name, value);
    }
    command
}

/// Runs [`check_command`] with DNS off (see [`without_dns`]).
fn check(sandbox: &Sandbox, endpoint: &str, env: &[(&str, &str)]) -> Outcome {
    let command = check_command(sandbox, endpoint, env);
    run(&mut without_dns(sandbox, &command), RUN_LIMIT)
}

/// `command` in a private mount namespace where `/etc/nsswitch.conf` says `hosts: files`: names
/// resolve from `/etc/hosts` only, so even a regression that looked up `licensing.test` instead
/// of asking the proxy could not send a DNS query off the machine. Loopback stays reachable.
fn without_dns(sandbox: &Sandbox, command: &Command) -> Command {
    let nsswitch = sandbox.root().join("nsswitch-files-only.conf");
    std::fs::write(&nsswitch, "hosts: files\n").expect("nsswitch file");
    let script = "mount --bind \"$0\" /etc/nsswitch.conf && exec \"$@\"";
    unshare(command, "--mount", script, &path_string(nsswitch))
}

/// `command` inside a new network namespace with only loopback up: nothing it sends can leave
/// the machine.
fn isolated(command: &Command) -> Command {
    unshare(command, "--net", "ip link set lo up && exec \"$@\"", "sh")
}

/// `command` run by `unshare NAMESPACE -- sh -c SCRIPT ARG0 PROGRAM ARGS…`, same environment.
fn unshare(command: &Command, namespace: &str, script: &str, arg0: &str) -> Command {
    let mut unshare = Command::new("unshare");
    unshare.args([namespace, "--", "sh", "-c", script, arg0]);
    wrapped(unshare, command)
}

/// The `reason:` line of `lsinit check`.
fn reason(outcome: &Outcome) -> &str {
    outcome
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("reason: "))
        .unwrap_or_else(|| panic!("no reason in {outcome:#?}"))
}

/// Asserts a failed check (exit 55) whose reason contains every one of `words`; returns it.
/// Every reason is also checked for a run of spaces, the mark of a string literal whose line
/// continuation `\` went missing.
fn assert_failed<'a>(outcome: &'a Outcome, words: &[&str]) -> &'a str {
    assert_eq!(outcome.code(), Some(55), "{outcome:#?}");
    let reason = reason(outcome);
    for word in words {
        assert!(
            reason.contains(word),
            "{word:?} not in the reason: {reason}"
        );
    }
    assert!(
        !reason.contains("  "),
        "a run of spaces in the reason: {reason:?}"
    );
    reason
}

fn assert_active(outcome: &Outcome) {
    assert_eq!(outcome.code(), Some(0), "{outcome:#?}");
    assert!(
        outcome.stdout.contains("source: requested online"),
        "{}",
        outcome.stdout
    );
}

fn assert_within_budget(outcome: &Outcome) {
    assert!(
        outcome.elapsed < WITHIN_BUDGET,
        "took {:?}: {outcome:#?}",
        outcome.elapsed
    );
}

/// One line of the fault table in the test output (`--nocapture` shows it).
fn record(case: &str, outcome: &Outcome, requests: usize) {
    let result = match outcome.code() {
        Some(0) => "active".to_string(),
        _ => outcome
            .stdout
            .lines()
            .find_map(|line| line.strip_prefix("reason: "))
            .unwrap_or("?")
            .trim_start_matches("activation with LOCALSTACK_AUTH_TOKEN failed: ")
            .to_string(),
    };
    eprintln!(
        "fault-table | {case} | {result} | {requests} | {:.2} s",
        outcome.elapsed.as_secs_f64()
    );
}

/// Runs `lsinit check` against a plain server whose first answer is `fault`.
fn with_fault(fault: Fault, env: &[(&str, &str)]) -> (Outcome, LicenseServer, Sandbox) {
    let sandbox = Sandbox::new();
    let server = plain_server();
    server.push_fault(fault);
    let outcome = check(&sandbox, &server.url(), env);
    (outcome, server, sandbox)
}

/// A valid license for [`TOKEN`] as the server would issue it.
fn issued_license() -> Value {
    make_license(
        &LicenseTemplate::default(),
        TOKEN,
        VERSION,
        &new_license_id(),
    )
}

fn http_date(at: time::OffsetDateTime) -> String {
    let format = time::format_description::parse_borrowed::<2>(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT",
    )
    .expect("format");
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .expect("date")
}

// ---------------------------------------------------------------------------------------------
// TLS

#[test]
fn tls_ca_is_trusted_through_each_of_the_four_variables() {
    let pki = Pki::new(&["127.0.0.1", "localhost"]);
    let server = pki.server();
    let ca_dir = pki.ca_dir();
    let ca_file = pki.ca_file();
    for (n, (variable, path)) in [
        ("REQUESTS_CA_BUNDLE", &ca_file),
        ("CURL_CA_BUNDLE", &ca_file),
        ("SSL_CERT_FILE", &ca_file),
        ("SSL_CERT_DIR", &ca_dir),
    ]
    .into_iter()
    .enumerate()
    {
        let sandbox = Sandbox::new();
        let outcome = check(&sandbox, &server.url(), &[(variable, path)]);
        assert_active(&outcome);
        assert_eq!(server.request_count(), n + 1, "{variable}");
        assert!(sandbox.cache_file().is_file(), "{variable}");
    }
    assert_eq!(server.tls_handshakes(), 4);
}

#[test]
fn untrusted_ca_is_a_tls_failure_naming_the_unknown_ca_and_the_fix() {
    let pki = Pki::new(&["127.0.0.1"]);
    let server = pki.server();
    let sandbox = Sandbox::new();

    let outcome = check(&sandbox, &server.url(), &[("LSINIT_MAX_ATTEMPTS", "2")]);

    assert_failed(
        &outcome,
        &[
            "TLS verification of 127.0.0.1:",
            "unknown CA",
            "REQUESTS_CA_BUNDLE",
            &server.url(),
        ],
    );
    // Nothing was sent, so it was retried; the server never saw a request.
    assert!(outcome.stderr.contains("attempt 2/2"), "{}", outcome.stderr);
    assert_eq!(server.request_count(), 0);
    assert_eq!(server.tls_connections(), 2);
    assert_eq!(server.tls_handshakes(), 0);
}

#[test]
fn certificate_for_another_name_has_its_own_message() {
    let pki = Pki::new(&["licensing.example"]);
    let server = pki.server();
    let ca = pki.ca_file();
    for host in ["127.0.0.1", "localhost"] {
        let sandbox = Sandbox::new();
        let endpoint = format!("https://{host}:{}/v1", server.port());
        let outcome = check(
            &sandbox,
            &endpoint,
            &[("REQUESTS_CA_BUNDLE", &ca), ("LSINIT_MAX_ATTEMPTS", "1")],
        );
        let reason = assert_failed(
            &outcome,
            &[
                &format!("TLS verification of {host}:"),
                "licensing.example",
                "not for that name",
                "API_ENDPOINT",
            ],
        );
        assert!(!reason.contains("unknown CA"), "{reason}");
    }
    assert_eq!(server.request_count(), 0);
}

#[test]
fn ssl_no_verify_skips_verification_and_warns() {
    let pki = Pki::new(&["licensing.example"]);
    let server = pki.server();
    let sandbox = Sandbox::new();

    let outcome = check(&sandbox, &server.url(), &[("SSL_NO_VERIFY", "1")]);

    assert_active(&outcome);
    assert!(
        outcome
            .stderr
            .lines()
            .any(|l| l.contains(" WARN ") && l.contains("SSL_NO_VERIFY is on")),
        "{}",
        outcome.stderr
    );
    assert_eq!(server.request_count(), 1);
}

#[test]
fn unreadable_or_empty_ca_bundle_is_a_licensing_failure_naming_the_variable() {
    let pki = Pki::new(&["127.0.0.1"]);
    let server = pki.server();
    let empty = pki.dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let empty = path_string(empty);
    let missing = path_string(pki.dir.path().join("missing.pem"));
    let ca = pki.ca_file();

    for (env, words) in [
        (
            vec![("REQUESTS_CA_BUNDLE", missing.as_str())],
            vec!["REQUESTS_CA_BUNDLE=", "cannot be read"],
        ),
        (
            // A good bundle does not hide a bad one: every variable is read.
            vec![("SSL_CERT_FILE", empty.as_str()), ("CURL_CA_BUNDLE", &ca)],
            vec!["SSL_CERT_FILE=", "holds no PEM certificate"],
        ),
    ] {
        let sandbox = Sandbox::new();
        let outcome = check(&sandbox, &server.url(), &env);
        assert_failed(&outcome, &words);
        assert!(outcome.elapsed < Duration::from_secs(3), "{outcome:#?}");
    }
    assert_eq!(server.tls_connections(), 0);
}

#[test]
fn a_ca_bundle_that_is_a_fifo_a_device_or_huge_fails_at_once_naming_the_variable() {
    let pki = Pki::new(&["127.0.0.1"]);
    let server = pki.server();
    let fifo = pki.dir.path().join("bundle.fifo");
    make_fifo(&fifo);
    let fifo = path_string(fifo);
    let huge = pki.dir.path().join("huge.pem");
    // Sparse: no disk space is used, yet reading it whole would take 17 MiB.
    std::fs::File::create(&huge)
        .and_then(|file| file.set_len(17 << 20))
        .expect("sparse file");
    let huge = path_string(huge);

    for (variable, path, words) in [
        (
            "SSL_CERT_FILE",
            fifo.as_str(),
            "is a FIFO, not a regular file",
        ),
        (
            "REQUESTS_CA_BUNDLE",
            "/dev/zero",
            "is a character device, not a regular file",
        ),
        (
            "CURL_CA_BUNDLE",
            huge.as_str(),
            "goes over the 16 MiB limit",
        ),
    ] {
        let sandbox = Sandbox::new();
        // Before the fix, the FIFO hung here until RUN_LIMIT and /dev/zero ate the memory.
        let outcome = check(&sandbox, &server.url(), &[(variable, path)]);
        assert_failed(
            &outcome,
            &[&format!("{variable}={path} {words}"), "point it at"],
        );
        assert!(outcome.elapsed < Duration::from_secs(3), "{outcome:#?}");
    }
    assert_eq!(server.tls_connections(), 0);
}

#[test]
fn a_ca_directory_skips_fifos_and_devices_and_trusts_the_rest() {
    let pki = Pki::new(&["127.0.0.1"]);
    let server = pki.server();
    let certs = pki.dir.path().join("certs");
    make_fifo(&certs.join("0-fifo.pem"));
    std::os::unix::fs::symlink("/dev/zero", certs.join("1-zero.pem")).expect("symlink");
    let sandbox = Sandbox::new();

    let outcome = check(&sandbox, &server.url(), &[("SSL_CERT_DIR", &pki.ca_dir())]);

    assert_active(&outcome);
    assert_eq!(server.request_count(), 1);
}

fn make_fifo(path: &std::path::Path) {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: `c_path` is a valid NUL-terminated path for the duration of the call.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0, "mkfifo");
}

// ---------------------------------------------------------------------------------------------
// Proxies

/// A TLS server for [`PROXIED_HOST`] and a proxy that routes that name to it.
fn proxied_server() -> (Pki, LicenseServer, ConnectProxy) {
    let pki = Pki::new(&[PROXIED_HOST]);
    let server = pki.server();
    let proxy = ConnectProxy::start().expect("proxy");
    proxy.route(PROXIED_HOST, server.port());
    (pki, server, proxy)
}

fn proxied_endpoint() -> String {
    format!("https://{PROXIED_HOST}/v1")
}

#[test]
fn check_activates_through_tls_and_the_connect_proxy() {
    let (pki, server, proxy) = proxied_server();
    let sandbox = Sandbox::new();

    let outcome = check(
        &sandbox,
        &proxied_endpoint(),
        &[
            ("https_proxy", &proxy.url()),
            ("REQUESTS_CA_BUNDLE", &pki.ca_file()),
        ],
    );

    assert_active(&outcome);
    let connects = proxy.connects();
    assert_eq!(connects.len(), 1, "{connects:?}");
    assert_eq!(connects[0].target, "licensing.test:443");
    assert_eq!(connects[0].status, 200);
    assert_eq!(server.request_count(), 1);
    assert_eq!(
        server.requests()[0].header("host"),
        Some(PROXIED_HOST),
        "the request is for the endpoint's name"
    );
}

#[test]
fn the_first_proxy_variable_set_wins_and_http_proxy_is_never_used() {
    const ORDER: [&str; 5] = [
        "OUTBOUND_HTTPS_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ];
    let (pki, server, proxy) = proxied_server();
    let ca = pki.ca_file();
    let good = proxy.url();
    // Nothing listens there: using one of these fails the activation.
    let dead = "http://127.0.0.1:9";

    for (n, winner) in ORDER.iter().enumerate() {
        let sandbox = Sandbox::new();
        let mut env = vec![
            ("REQUESTS_CA_BUNDLE", ca.as_str()),
            ("LSINIT_MAX_ATTEMPTS", "1"),
            ("HTTP_PROXY", dead),
            ("http_proxy", dead),
            (winner, good.as_str()),
        ];
        env.extend(ORDER[n + 1..].iter().map(|later| (*later, dead)));

        let outcome = check(&sandbox, &proxied_endpoint(), &env);

        assert_active(&outcome);
        assert_eq!(proxy.connects().len(), n + 1, "{winner}");
    }
    assert_eq!(server.request_count(), ORDER.len());
}

#[test]
fn proxy_credentials_are_sent_but_never_printed() {
    let (pki, server, proxy) = proxied_server();
    proxy.require_credentials("lsuser", PROXY_PASSWORD);
    let ca = pki.ca_file();
    let with_password =
        |password: &str| format!("http://lsuser:{password}@127.0.0.1:{}", proxy.port());

    // Debug logging on, so every line that mentions the proxy is checked.
    let sandbox = Sandbox::new();
    let outcome = check(
        &sandbox,
        &proxied_endpoint(),
        &[
            ("https_proxy", &with_password(PROXY_PASSWORD)),
            ("REQUESTS_CA_BUNDLE", &ca),
            ("DEBUG", "1"),
        ],
    );
    assert_active(&outcome);
    assert!(
        outcome
            .stderr
            .contains("https_proxy=http://lsuser:****@127.0.0.1:"),
        "{}",
        outcome.stderr
    );
    let expected = basic_credentials("lsuser", PROXY_PASSWORD);
    assert_eq!(
        proxy.connects()[0].authorization.as_deref(),
        Some(expected.as_str())
    );
    assert_eq!(server.request_count(), 1);

    // A wrong password: the failure shows the proxy, masked.
    let wrong = "proxy-secret-pw-but-wrong";
    let sandbox = Sandbox::new();
    let outcome = check(
        &sandbox,
        &proxied_endpoint(),
        &[
            ("https_proxy", &with_password(wrong)),
            ("REQUESTS_CA_BUNDLE", &ca),
            ("DEBUG", "1"),
        ],
    );
    let reason = assert_failed(
        &outcome,
        &[
            "the proxy https_proxy=http://lsuser:****@127.0.0.1:",
            "refused the credentials in its URL (HTTP 407)",
            "check the user name and password in https_proxy",
        ],
    );
    // Not the advice for a proxy URL without credentials.
    assert!(!reason.contains("put them in the proxy URL"), "{reason}");
    outcome.assert_free_of(wrong);
    assert_eq!(server.request_count(), 1);
}

#[test]
fn proxy_that_wants_credentials_gets_a_407_message_and_no_retry() {
    let (pki, server, proxy) = proxied_server();
    proxy.require_credentials("lsuser", PROXY_PASSWORD);
    let sandbox = Sandbox::new();

    let outcome = check(
        &sandbox,
        &proxied_endpoint(),
        &[
            ("HTTPS_PROXY", &proxy.url()),
            ("REQUESTS_CA_BUNDLE", &pki.ca_file()),
        ],
    );

    assert_failed(
        &outcome,
        &[
            "HTTPS_PROXY=http://127.0.0.1:",
            "wants credentials (HTTP 407)",
            "http://user:password@",
        ],
    );
    assert_eq!(proxy.connects().len(), 1);
    assert_eq!(proxy.connects()[0].status, 407);
    assert_eq!(server.request_count(), 0);
}

#[test]
fn proxy_that_cannot_reach_the_endpoint_is_retried_and_named() {
    let (pki, server, proxy) = proxied_server();
    let sandbox = Sandbox::new();

    // The proxy knows no route for this name: it answers 502.
    let outcome = check(
        &sandbox,
        "https://elsewhere.test/v1",
        &[
            ("https_proxy", &proxy.url()),
            ("REQUESTS_CA_BUNDLE", &pki.ca_file()),
            ("LSINIT_MAX_ATTEMPTS", "2"),
        ],
    );

    assert_failed(
        &outcome,
        &[
            "the proxy https_proxy=http://127.0.0.1:",
            "did not open a tunnel to elsewhere.test:443",
            "502",
        ],
    );
    assert_eq!(proxy.connects().len(), 2);
    assert_eq!(server.request_count(), 0);
}

/// A TLS server for [`PROXIED_HOST`] and an `https://` proxy routing that name to it, both with
/// certificates of one test CA.
fn https_proxied_server() -> (Pki, LicenseServer, ConnectProxy) {
    let pki = Pki::new(&[PROXIED_HOST, "127.0.0.1"]);
    let server = pki.server();
    let proxy = ConnectProxy::start_tls(&pki.cert_pem, &pki.key_pem).expect("TLS proxy");
    proxy.route(PROXIED_HOST, server.port());
    (pki, server, proxy)
}

#[test]
fn check_activates_through_an_https_proxy() {
    let (pki, server, proxy) = https_proxied_server();
    let sandbox = Sandbox::new();

    let outcome = check(
        &sandbox,
        &proxied_endpoint(),
        &[
            ("https_proxy", &proxy.url()),
            ("REQUESTS_CA_BUNDLE", &pki.ca_file()),
        ],
    );

    assert_active(&outcome);
    assert!(proxy.url().starts_with("https://"), "{}", proxy.url());
    assert_eq!(proxy.tls_handshakes(), 1);
    assert_eq!(proxy.connects().len(), 1);
    assert_eq!(server.request_count(), 1);
}

#[test]
fn an_https_proxy_with_an_untrusted_certificate_is_a_tls_failure_of_the_proxy() {
    let (_pki, server, proxy) = https_proxied_server();
    let sandbox = Sandbox::new();

    let outcome = check(
        &sandbox,
        &proxied_endpoint(),
        &[("https_proxy", &proxy.url()), ("LSINIT_MAX_ATTEMPTS", "2")],
    );

    assert_failed(
        &outcome,
        &[
            "TLS verification of the proxy https_proxy=https://127.0.0.1:",
            "unknown CA",
            "REQUESTS_CA_BUNDLE",
            "https://licensing.test/v1/license/request",
        ],
    );
    // Not sent, so retried; the proxy never got a CONNECT.
    assert!(outcome.stderr.contains("attempt 2/2"), "{}", outcome.stderr);
    assert_eq!(proxy.tls_handshakes(), 0);
    assert!(proxy.connects().is_empty());
    assert_eq!(server.request_count(), 0);
}

#[test]
fn an_https_url_for_a_plain_proxy_is_a_tls_failure_of_the_proxy() {
    let (pki, server, proxy) = proxied_server();
    let sandbox = Sandbox::new();
    let as_https = format!("https://127.0.0.1:{}", proxy.port());

    let outcome = check(
        &sandbox,
        &proxied_endpoint(),
        &[
            ("https_proxy", &as_https),
            ("REQUESTS_CA_BUNDLE", &pki.ca_file()),
            ("LSINIT_MAX_ATTEMPTS", "1"),
        ],
    );

    let reason = assert_failed(
        &outcome,
        &[
            "the TLS handshake with the proxy https_proxy=https://127.0.0.1:",
            "give https_proxy as http://",
        ],
    );
    assert!(!reason.contains("opening a tunnel"), "{reason}");
    assert!(proxy.connects().is_empty());
    assert_eq!(server.request_count(), 0);
}

#[test]
fn a_proxy_port_over_65535_is_a_settings_failure_not_port_80() {
    let proxy = ConnectProxy::start().expect("proxy");
    let sandbox = Sandbox::new();
    // Truncated to 16 bits, this would be the proxy's own port.
    let wrapped = format!(
        "http://lsuser:{PROXY_PASSWORD}@127.0.0.1:{}",
        u32::from(proxy.port()) + 65536
    );

    let outcome = check(&sandbox, &proxied_endpoint(), &[("https_proxy", &wrapped)]);

    assert_failed(
        &outcome,
        &[
            "https_proxy=http://lsuser:****@127.0.0.1:",
            "which is no TCP port (1 to 65535)",
        ],
    );
    assert!(outcome.elapsed < Duration::from_secs(3), "{outcome:#?}");
    assert!(proxy.connects().is_empty());
}

#[test]
fn no_proxy_bypasses_the_proxy_by_name_suffix_address_and_range() {
    // In a namespace with only loopback: a bypassed endpoint is tried directly and fails there
    // (no DNS server, no route), a proxied one fails at the proxy's address, where nothing
    // listens in the namespace. The two failures tell which way lsinit went.
    let proxy = "http://127.0.0.1:9";
    let run_isolated = |endpoint: &str, env: &[(&str, &str)]| {
        let sandbox = Sandbox::new();
        let mut env = env.to_vec();
        env.extend([("https_proxy", proxy), ("LSINIT_MAX_ATTEMPTS", "1")]);
        run(
            &mut isolated(&check_command(&sandbox, endpoint, &env)),
            RUN_LIMIT,
        )
    };
    let by_name = "https://licensing.test/v1";
    let by_address = "https://192.0.2.10/v1";

    for (endpoint, no_proxy) in [
        (by_name, "licensing.test"),
        (by_name, "other.example, .test"),
        (by_name, "test:443"),
        (by_address, "192.0.2.10"),
        (by_address, "192.0.2.0/24"),
        (by_name, "*"),
    ] {
        let outcome = run_isolated(endpoint, &[("no_proxy", no_proxy)]);
        let reason = if endpoint == by_name {
            assert_failed(&outcome, &["DNS lookup of licensing.test failed"])
        } else {
            assert_failed(&outcome, &["cannot connect to 192.0.2.10:443"])
        };
        assert!(
            reason.contains("no_proxy") && !reason.contains("127.0.0.1:9"),
            "{no_proxy}: {reason}"
        );
    }

    for (endpoint, env) in [
        (by_name, vec![]),
        (
            by_name,
            vec![("no_proxy", "licensing.testing, test.licensing")],
        ),
        (
            by_address,
            vec![("no_proxy", "192.0.2.0/25x, 192.0.3.0/24")],
        ),
        // Lower case wins, even when upper case would match.
        (
            by_name,
            vec![
                ("no_proxy", "other.example"),
                ("NO_PROXY", "licensing.test"),
            ],
        ),
    ] {
        let outcome = run_isolated(endpoint, &env);
        assert_failed(
            &outcome,
            &["cannot connect to the proxy https_proxy=http://127.0.0.1:9"],
        );
    }

    // Upper case is used when lower case is unset.
    let outcome = run_isolated(by_name, &[("NO_PROXY", "licensing.test")]);
    assert_failed(&outcome, &["DNS lookup of licensing.test failed"]);
}

#[test]
fn loopback_endpoints_are_never_proxied() {
    let server = plain_server();
    let proxy = ConnectProxy::start().expect("proxy");
    let sandbox = Sandbox::new();

    let outcome = check(&sandbox, &server.url(), &[("https_proxy", &proxy.url())]);

    assert_active(&outcome);
    assert!(proxy.connects().is_empty());
}

#[test]
fn settings_that_cannot_work_fail_before_any_connection() {
    let server = plain_server();
    for (endpoint, env, words) in [
        (
            "http://licensing.test/v1",
            vec![],
            vec!["plain http://", "use https://"],
        ),
        (
            "https://licensing.test/v1",
            vec![("ALL_PROXY", "socks5://127.0.0.1:1080")],
            vec!["ALL_PROXY=socks5://127.0.0.1:1080", "not supported"],
        ),
        (
            "ftp://licensing.test/v1",
            vec![],
            vec!["API_ENDPOINT", "not an http(s) URL"],
        ),
        ("licensing test", vec![], vec!["API_ENDPOINT", "not a URL"]),
    ] {
        let sandbox = Sandbox::new();
        let outcome = check(&sandbox, endpoint, &env);
        assert_failed(&outcome, &words);
        assert!(outcome.elapsed < Duration::from_secs(3), "{outcome:#?}");
    }
    assert_eq!(server.request_count(), 0);
}

#[test]
fn an_endpoint_with_a_query_fragment_or_bad_port_fails_before_the_token_is_sent() {
    let server = plain_server();
    let query_secret = "ls-in-the-query-0123456789";
    for (endpoint, words) in [
        (
            format!("{}?token={query_secret}", server.url()),
            "has a query or fragment",
        ),
        (
            format!("{}#{query_secret}", server.url()),
            "has a query or fragment",
        ),
        (
            // Truncated to 16 bits, this would be the server's own port.
            format!("http://127.0.0.1:{}/v1", u32::from(server.port()) + 65536),
            "which is no TCP port (1 to 65535)",
        ),
        (
            "https://licensing.test:99999/v1".to_string(),
            "has the port \"99999\", which is no TCP port",
        ),
    ] {
        let sandbox = Sandbox::new();
        let outcome = check(&sandbox, &endpoint, &[]);
        assert_failed(&outcome, &["API_ENDPOINT", words]);
        outcome.assert_free_of(query_secret);
        assert!(outcome.elapsed < Duration::from_secs(3), "{outcome:#?}");
    }
    assert_eq!(server.request_count(), 0);
}

// ---------------------------------------------------------------------------------------------
// DNS and connect failures

#[test]
fn dns_failure_and_connection_refused_have_distinct_messages() {
    let sandbox = Sandbox::new();
    let mut command = check_command(
        &sandbox,
        "https://licensing.invalid/v1",
        &[("LSINIT_MAX_ATTEMPTS", "2")],
    );
    let dns = run(&mut isolated(&command), RUN_LIMIT);
    let dns_reason = assert_failed(
        &dns,
        &[
            "DNS lookup of licensing.invalid failed",
            "https://licensing.invalid/v1/license/request",
            "DNS",
        ],
    );
    assert!(dns.stderr.contains("attempt 2/2"), "{}", dns.stderr);
    record("DNS failure (netns)", &dns, 0);

    command = check_command(&sandbox, NOWHERE, &[("LSINIT_MAX_ATTEMPTS", "2")]);
    let refused = run(&mut command, RUN_LIMIT);
    let refused_reason = assert_failed(
        &refused,
        &[
            "connection refused by 127.0.0.1:9",
            "http://127.0.0.1:9/v1/license/request",
            "API_ENDPOINT",
        ],
    );
    assert!(refused.stderr.contains("attempt 2/2"), "{}", refused.stderr);
    assert!(!refused_reason.contains("DNS") && !dns_reason.contains("refused"));
    record("connection refused", &refused, 0);
}

#[test]
fn connection_refused_is_retried_within_the_activation_budget() {
    let sandbox = Sandbox::new();
    let outcome = check(
        &sandbox,
        NOWHERE,
        &[
            ("LSINIT_MAX_ATTEMPTS", "1000"),
            ("LSINIT_ACTIVATION_TIMEOUT", "4"),
        ],
    );
    assert_failed(
        &outcome,
        &["connection refused", "LSINIT_ACTIVATION_TIMEOUT"],
    );
    // Retries stop once a wait would leave less than LSINIT_REQUEST_TIMEOUT (1 s) of the 4 s:
    // the waits (up to 0.5 s, then 1 s) leave room for at least two.
    assert!(outcome.elapsed < Duration::from_secs(5), "{outcome:#?}");
    let retries = outcome.stderr.matches("connection refused by").count();
    assert!(retries >= 2, "{}", outcome.stderr);
    record("connection refused, 4 s budget", &outcome, 0);
}

/// A loopback listener that accepts connections (the kernel does, into its backlog) and never
/// answers: a TLS handshake with it stalls.
fn silent_listener() -> (std::net::TcpListener, String) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = listener.local_addr().expect("address").port();
    (listener, format!("https://127.0.0.1:{port}/v1"))
}

#[test]
fn a_budget_that_runs_out_in_the_handshake_says_so() {
    let (_listener, endpoint) = silent_listener();
    let sandbox = Sandbox::new();

    let outcome = check(
        &sandbox,
        &endpoint,
        &[
            ("LSINIT_CONNECT_TIMEOUT", "5"),
            ("LSINIT_REQUEST_TIMEOUT", "5"),
            ("LSINIT_ACTIVATION_TIMEOUT", "1"),
        ],
    );

    let reason = assert_failed(
        &outcome,
        &[
            "the activation budget of 1.0 s (LSINIT_ACTIVATION_TIMEOUT) ran out during the TLS \
             handshake with 127.0.0.1:",
            "before the request was sent",
            "raise LSINIT_ACTIVATION_TIMEOUT",
        ],
    );
    assert!(!reason.contains("failed before it was sent"), "{reason}");
    assert!(outcome.elapsed < Duration::from_secs(3), "{outcome:#?}");
}

#[test]
fn a_timeout_names_the_variable_whose_limit_ran_out() {
    let (_listener, endpoint) = silent_listener();
    for (env, words, not_named) in [
        (
            // 1 ms may end while connecting or in the handshake: either way it is this limit.
            [
                ("LSINIT_CONNECT_TIMEOUT", "5"),
                ("LSINIT_REQUEST_TIMEOUT", "0.001"),
            ],
            [
                "127.0.0.1:",
                "timed out after 1ms",
                "LSINIT_REQUEST_TIMEOUT",
            ],
            "LSINIT_CONNECT_TIMEOUT",
        ),
        (
            [
                ("LSINIT_CONNECT_TIMEOUT", "0.3"),
                ("LSINIT_REQUEST_TIMEOUT", "1"),
            ],
            [
                "the TLS handshake with 127.0.0.1:",
                "timed out after 0.3 s",
                "LSINIT_CONNECT_TIMEOUT",
            ],
            "LSINIT_REQUEST_TIMEOUT",
        ),
    ] {
        let sandbox = Sandbox::new();
        let mut env = env.to_vec();
        env.push(("LSINIT_MAX_ATTEMPTS", "1"));
        let outcome = check(&sandbox, &endpoint, &env);
        let reason = assert_failed(&outcome, &words);
        assert!(!reason.contains(not_named), "{reason}");
    }
}

// ---------------------------------------------------------------------------------------------
// Misbehaving servers: one case each, with the number of requests the server saw

#[test]
fn no_answer_at_all_is_maybe_processed_and_not_repeated() {
    let (outcome, server, _sandbox) = with_fault(Fault::NoAnswer, &[]);
    assert_failed(&outcome, &["no answer came within 1.0 s", "not repeated"]);
    assert_within_budget(&outcome);
    assert_eq!(server.request_count(), 1);
    record("no answer", &outcome, server.request_count());
}

#[test]
fn headers_trickling_one_byte_a_second_time_out_once() {
    let fault = Fault::TrickleHeaders {
        interval: Duration::from_secs(1),
    };
    let (outcome, server, _sandbox) = with_fault(fault, &[]);
    assert_failed(
        &outcome,
        &["within 1.0 s (LSINIT_REQUEST_TIMEOUT)", "not repeated"],
    );
    assert_within_budget(&outcome);
    assert_eq!(server.request_count(), 1);
    record("headers trickle 1 B/s", &outcome, server.request_count());
}

#[test]
fn a_body_that_stalls_times_out_once() {
    let fault = Fault::StallBody {
        after: 10,
        duration: Duration::from_secs(30),
    };
    let (outcome, server, _sandbox) = with_fault(fault, &[]);
    assert_failed(
        &outcome,
        &[
            "answered HTTP 200",
            "did not arrive within 1.0 s",
            "not repeated",
        ],
    );
    assert_within_budget(&outcome);
    assert_eq!(server.request_count(), 1);
    record("body stalls", &outcome, server.request_count());
}

#[test]
fn a_truncated_body_is_cut_short_and_not_repeated() {
    let (outcome, server, _sandbox) = with_fault(Fault::TruncatedBody, &[]);
    assert_failed(
        &outcome,
        &["answered HTTP 200", "cut short", "not repeated"],
    );
    assert_within_budget(&outcome);
    assert_eq!(server.request_count(), 1);
    record("truncated body", &outcome, server.request_count());
}

#[test]
fn a_100_mb_body_is_refused_after_1_mib() {
    let fault = Fault::Oversized {
        bytes: 100 * 1000 * 1000,
    };
    let (outcome, server, _sandbox) = with_fault(fault, &[]);
    assert_failed(&outcome, &["body over 1 MiB", "no license"]);
    assert_within_budget(&outcome);
    assert_eq!(server.request_count(), 1);
    record("100 MB body", &outcome, server.request_count());
}

#[test]
fn invalid_json_is_broken_with_an_excerpt() {
    let fault = Fault::Body {
        status: 200,
        body: "<html><body>\x1b[31mproxy login</body></html>".into(),
    };
    let (outcome, server, _sandbox) = with_fault(fault, &[]);
    let reason = assert_failed(&outcome, &["HTTP 200", "not JSON", "<html><body>"]);
    assert!(!reason.contains('\x1b'), "{reason:?}");
    assert_within_budget(&outcome);
    assert_eq!(server.request_count(), 1);
    record("invalid JSON", &outcome, server.request_count());
}

#[test]
fn json_with_wrong_types_is_broken() {
    let mut license = issued_license();
    license["expiry_date"] = json!(20271231);
    license["products"] = json!("localstack-pro");
    let fault = Fault::Body {
        status: 200,
        body: license.to_string(),
    };
    let (outcome, server, sandbox) = with_fault(fault, &[]);
    assert_failed(&outcome, &["sent a license that cannot be used"]);
    assert_within_budget(&outcome);
    assert_eq!(server.request_count(), 1);
    assert!(!sandbox.cache_file().exists());
    record("wrong types", &outcome, server.request_count());
}

#[test]
fn extra_fields_are_accepted_and_dropped_from_the_file() {
    let mut license = issued_license();
    license["surprise"] = json!({"nested": true});
    license["offline_data"]["also_new"] = json!(1);
    let fault = Fault::Body {
        status: 200,
        body: license.to_string(),
    };
    let (outcome, server, sandbox) = with_fault(fault, &[]);
    assert_active(&outcome);
    assert_within_budget(&outcome);
    assert_eq!(server.request_count(), 1);
    let cached: Value =
        serde_json::from_slice(&std::fs::read(sandbox.cache_file()).unwrap()).unwrap();
    assert!(cached.get("surprise").is_none(), "{cached}");
    assert_eq!(cached["id"], license["id"]);
    record("extra fields", &outcome, server.request_count());
}

#[test]
fn a_bad_signature_is_broken() {
    let mut license = issued_license();
    license["signature"] = json!("00".repeat(32));
    let fault = Fault::Body {
        status: 200,
        body: license.to_string(),
    };
    let (outcome, server, sandbox) = with_fault(fault, &[]);
    assert_failed(&outcome, &["cannot be used", "signature does not match"]);
    assert_within_budget(&outcome);
    assert_eq!(server.request_count(), 1);
    assert!(!sandbox.cache_file().exists());
    record("bad signature", &outcome, server.request_count());
}

/// A server whose licenses for [`TOKEN`] come from `template`.
fn check_license(template: LicenseTemplate) -> (Outcome, LicenseServer) {
    let sandbox = Sandbox::new();
    let server = LicenseServer::start().expect("server");
    server.add_credential(Credential::auth_token(TOKEN).with_license(template));
    let outcome = check(&sandbox, &server.url(), &[]);
    assert!(!sandbox.cache_file().exists());
    (outcome, server)
}

#[test]
fn an_expired_license_is_broken() {
    let (outcome, server) = check_license(LicenseTemplate {
        expiry_date: time::Duration::days(-1),
        ..LicenseTemplate::default()
    });
    assert_failed(&outcome, &["cannot be used", "expired on"]);
    assert_within_budget(&outcome);
    assert_eq!(server.request_count(), 1);
    record("expired license", &outcome, server.request_count());
}

#[test]
fn an_inactive_license_is_broken() {
    let (outcome, server) = check_license(LicenseTemplate {
        license_status: "INACTIVE".into(),
        ..LicenseTemplate::default()
    });
    assert_failed(&outcome, &["cannot be used", "status is INACTIVE"]);
    assert_within_budget(&outcome);
    assert_eq!(server.request_count(), 1);
    record("inactive license", &outcome, server.request_count());
}

#[test]
fn a_rejection_code_is_definitive() {
    let fault = Fault::Reject("licensing.license.expired".into());
    let (outcome, server, _sandbox) = with_fault(fault, &[]);
    assert_failed(&outcome, &["the license has expired", "HTTP 403 from"]);
    assert_within_budget(&outcome);
    assert_eq!(server.request_count(), 1);
    record(
        "403 licensing.license.expired",
        &outcome,
        server.request_count(),
    );
}

fn status(status: u16, body: &str, headers: &[(&str, &str)]) -> Fault {
    Fault::Status {
        status,
        body: body.into(),
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect(),
    }
}

#[test]
fn too_many_requests_with_retry_after_seconds_then_200() {
    let (outcome, server, _sandbox) = with_fault(status(429, "", &[("Retry-After", "1")]), &[]);
    assert_active(&outcome);
    assert_within_budget(&outcome);
    assert_eq!(server.request_count(), 2);
    assert!(outcome.elapsed >= Duration::from_secs(1), "{outcome:#?}");
    assert!(
        outcome.stderr.contains("attempt 2/5 in 1.0 s")
            && outcome
                .stderr
                .contains("busy (HTTP 429, Retry-After 1.0 s)"),
        "{}",
        outcome.stderr
    );
    record(
        "429 Retry-After: 1, then 200",
        &outcome,
        server.request_count(),
    );
}

#[test]
fn too_many_requests_with_retry_after_date_then_200() {
    let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(3);
    let date = http_date(at);
    let (outcome, server, _sandbox) = with_fault(status(429, "", &[("Retry-After", &date)]), &[]);
    assert_active(&outcome);
    assert_eq!(server.request_count(), 2);
    // HTTP dates have whole seconds: the wait is between 2 and 3 s.
    assert!(
        outcome.elapsed >= Duration::from_millis(1500),
        "{outcome:#?}"
    );
    assert_within_budget(&outcome);
    record(
        "429 Retry-After: <date>, then 200",
        &outcome,
        server.request_count(),
    );
}

#[test]
fn unavailable_with_retry_after_then_200() {
    let (outcome, server, _sandbox) = with_fault(status(503, "", &[("Retry-After", "1")]), &[]);
    assert_active(&outcome);
    assert_within_budget(&outcome);
    // The retry waited the full Retry-After, no less.
    assert!(outcome.elapsed >= Duration::from_secs(1), "{outcome:#?}");
    assert_eq!(server.request_count(), 2);
    assert!(
        outcome.stderr.contains("attempt 2/5 in 1.0 s"),
        "{}",
        outcome.stderr
    );
    record(
        "503 Retry-After: 1, then 200",
        &outcome,
        server.request_count(),
    );
}

#[test]
fn retry_after_beyond_the_budget_fails_at_once() {
    let (outcome, server, _sandbox) = with_fault(status(429, "", &[("Retry-After", "60")]), &[]);
    assert_failed(
        &outcome,
        &[
            "HTTP 429",
            "next attempt would be in 60.0 s",
            "LSINIT_ACTIVATION_TIMEOUT",
        ],
    );
    assert!(outcome.elapsed < Duration::from_secs(3), "{outcome:#?}");
    assert_eq!(server.request_count(), 1);
    record(
        "429 Retry-After: 60 (over budget)",
        &outcome,
        server.request_count(),
    );
}

#[test]
fn retry_after_zero_still_backs_off_instead_of_hammering_the_server() {
    let sandbox = Sandbox::new();
    let server = plain_server();
    for _ in 0..200 {
        server.push_fault(status(429, "", &[("Retry-After", "0")]));
    }

    let outcome = check(
        &sandbox,
        &server.url(),
        &[
            ("LSINIT_MAX_ATTEMPTS", "100000"),
            ("LSINIT_ACTIVATION_TIMEOUT", "3"),
        ],
    );

    assert_failed(&outcome, &["HTTP 429", "LSINIT_ACTIVATION_TIMEOUT"]);
    // Waits of up to 0.5, 1, 2 s… inside 3 s, each retry leaving 1 s for its request: a handful
    // of requests (without backoff, thousands).
    let requests = server.request_count();
    assert!((2..=8).contains(&requests), "{requests} requests");
    assert_within_budget(&outcome);
    record("429 Retry-After: 0, forever", &outcome, requests);
}

#[test]
fn retry_after_in_decimal_seconds_is_honoured() {
    let (outcome, server, _sandbox) = with_fault(status(429, "", &[("Retry-After", "1.5")]), &[]);
    assert_active(&outcome);
    assert_within_budget(&outcome);
    assert_eq!(server.request_count(), 2);
    assert!(
        outcome.elapsed >= Duration::from_millis(1500),
        "{outcome:#?}"
    );
    assert!(
        outcome.stderr.contains("attempt 2/5 in 1.5 s"),
        "{}",
        outcome.stderr
    );
}

#[test]
fn unavailable_with_a_negative_or_garbage_retry_after_is_not_repeated() {
    for value in ["-1", "soon", "1e3"] {
        let fault = status(503, "", &[("Retry-After", value)]);
        let (outcome, server, _sandbox) = with_fault(fault, &[]);
        assert_failed(&outcome, &["HTTP 503", "not repeated"]);
        assert_within_budget(&outcome);
        assert_eq!(server.request_count(), 1, "{value}");
    }
}

#[test]
fn a_retry_the_remaining_budget_cannot_hold_is_not_sent() {
    // After a 1 s wait, 1.5 s would be left: less than the 2 s a request may take, so the
    // retry could be cut off after sending and be counted without bringing a license.
    let fault = status(429, "", &[("Retry-After", "1")]);
    let (outcome, server, _sandbox) = with_fault(
        fault,
        &[
            ("LSINIT_REQUEST_TIMEOUT", "2"),
            ("LSINIT_ACTIVATION_TIMEOUT", "2.5"),
        ],
    );
    assert_failed(
        &outcome,
        &[
            "HTTP 429",
            "the activation budget of 2.5 s (LSINIT_ACTIVATION_TIMEOUT) is too short for another \
             attempt",
            "LSINIT_REQUEST_TIMEOUT",
            "raise LSINIT_ACTIVATION_TIMEOUT",
        ],
    );
    assert_eq!(server.request_count(), 1);
    assert!(!outcome.stderr.contains("attempt 2/"), "{}", outcome.stderr);
    assert!(outcome.elapsed < Duration::from_secs(2), "{outcome:#?}");
    record("429, budget too short to retry", &outcome, 1);
}

#[test]
fn internal_server_error_is_not_repeated() {
    let (outcome, server, _sandbox) = with_fault(status(500, r#"{"error":"boom"}"#, &[]), &[]);
    assert_failed(&outcome, &["HTTP 500", "boom", "not repeated"]);
    assert_within_budget(&outcome);
    assert_eq!(server.request_count(), 1);
    record("500", &outcome, server.request_count());
}

#[test]
fn unavailable_without_retry_after_is_not_repeated() {
    let (outcome, server, _sandbox) = with_fault(status(503, "", &[]), &[]);
    assert_failed(&outcome, &["HTTP 503", "not repeated"]);
    assert_within_budget(&outcome);
    assert_eq!(server.request_count(), 1);
    record("503 without Retry-After", &outcome, server.request_count());
}

#[test]
fn proxy_authentication_required_from_the_server_path() {
    let (outcome, server, _sandbox) = with_fault(status(407, "", &[]), &[]);
    assert_failed(
        &outcome,
        &[
            "wants credentials (HTTP 407)",
            "https_proxy=http://user:password@",
        ],
    );
    assert_within_budget(&outcome);
    assert_eq!(server.request_count(), 1);
    record("407", &outcome, server.request_count());
}

#[test]
fn forbidden_without_a_licensing_code_is_broken() {
    let body = format!("<h1>Blocked by policy</h1> echo: {TOKEN}");
    let (outcome, server, _sandbox) = with_fault(status(403, &body, &[]), &[]);
    assert_failed(
        &outcome,
        &[
            "HTTP 403 without a licensing error code",
            "Blocked by policy",
            "firewall",
        ],
    );
    assert_within_budget(&outcome);
    assert_eq!(server.request_count(), 1);
    record("403 without code", &outcome, server.request_count());
}

#[test]
fn a_json_escaped_echo_of_the_token_is_masked_in_the_excerpt() {
    // `\u002d` is `-`: the raw token is not in the body, but it is in what the body says.
    let escaped = TOKEN.replacen('-', "\\u002d", 2);
    let body = format!(r#"{{"error": "token {escaped} is blocked by policy"}}"#);
    let (outcome, server, _sandbox) = with_fault(status(403, &body, &[]), &[]);
    let reason = assert_failed(
        &outcome,
        &[
            "HTTP 403 without a licensing error code",
            "blocked by policy",
            "ls-Wxyz0123-****",
        ],
    );
    assert!(!reason.contains("u002d"), "{reason}");
    outcome.assert_free_of("ghijklmnf90e");
    assert_within_budget(&outcome);
    assert_eq!(server.request_count(), 1);
}

#[test]
fn not_found_from_a_mistyped_endpoint_is_broken() {
    let sandbox = Sandbox::new();
    let server = plain_server();
    let endpoint = format!("http://127.0.0.1:{}/v2", server.port());
    let outcome = check(&sandbox, &endpoint, &[]);
    assert_failed(
        &outcome,
        &[
            "HTTP 404 without a licensing error code",
            "check API_ENDPOINT",
        ],
    );
    assert_within_budget(&outcome);
    assert_eq!(server.request_count(), 1);
    record("404", &outcome, server.request_count());
}

#[test]
fn a_redirect_is_not_followed_and_its_target_is_named() {
    let fault = status(
        302,
        "",
        &[("Location", "https://elsewhere.test/v1/license/request")],
    );
    let (outcome, server, _sandbox) = with_fault(fault, &[]);
    assert_failed(
        &outcome,
        &[
            "redirect (HTTP 302) to https://elsewhere.test/v1/license/request",
            "API_ENDPOINT",
        ],
    );
    assert_within_budget(&outcome);
    assert_eq!(server.request_count(), 1);
    record("302 redirect", &outcome, server.request_count());
}

#[test]
fn reset_after_the_request_was_sent_is_not_repeated() {
    let (outcome, server, _sandbox) = with_fault(Fault::ResetAfterRequest, &[]);
    assert_failed(
        &outcome,
        &[
            "after the request was sent",
            "connection reset",
            "not repeated",
        ],
    );
    assert_within_budget(&outcome);
    assert_eq!(server.request_count(), 1);
    assert!(!outcome.stderr.contains("attempt 2/"), "{}", outcome.stderr);
    record(
        "reset after request (http)",
        &outcome,
        server.request_count(),
    );
}

#[test]
fn tls_reset_after_the_request_was_sent_is_not_repeated() {
    let pki = Pki::new(&["127.0.0.1"]);
    let server = pki.server();
    server.push_fault(Fault::ResetAfterRequest);
    let sandbox = Sandbox::new();

    let outcome = check(
        &sandbox,
        &server.url(),
        &[("SSL_CERT_FILE", &pki.ca_file())],
    );

    assert_failed(
        &outcome,
        &[
            "after the request was sent",
            "connection reset",
            "not repeated",
        ],
    );
    assert_within_budget(&outcome);
    assert_eq!(server.request_count(), 1);
    assert_eq!(server.tls_connections(), 1);
    record(
        "reset after request (TLS)",
        &outcome,
        server.request_count(),
    );
}

#[test]
fn tls_reset_or_close_during_the_handshake_is_retried() {
    for (fault, words) in [
        (TlsFault::ResetDuringHandshake, "(connection reset)"),
        (TlsFault::CloseDuringHandshake, "(connection closed)"),
    ] {
        let pki = Pki::new(&["127.0.0.1"]);
        let server = pki.server();
        server.push_tls_fault(fault);
        let sandbox = Sandbox::new();

        let outcome = check(
            &sandbox,
            &server.url(),
            &[("SSL_CERT_FILE", &pki.ca_file())],
        );

        assert_active(&outcome);
        assert!(
            outcome.stderr.contains("attempt 2/5")
                && outcome.stderr.contains("the TLS handshake with 127.0.0.1:")
                && outcome.stderr.contains(words),
            "{}",
            outcome.stderr
        );
        assert_eq!(server.tls_connections(), 2);
        assert_eq!(server.tls_handshakes(), 1);
        assert_within_budget(&outcome);
        assert_eq!(server.request_count(), 1);
        record(
            &format!("{fault:?}, then 200"),
            &outcome,
            server.request_count(),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The calls of one activation: a re-activation, then a request

#[test]
fn each_call_of_an_activation_gets_its_own_attempts() {
    let sandbox = Sandbox::new();
    let server = plain_server();
    let stale = LicenseTemplate {
        reactivate_after: license_server::time::Duration::hours(-1),
        ..LicenseTemplate::default()
    };
    let cached = make_license(&stale, TOKEN, VERSION, &new_license_id());
    std::fs::create_dir_all(sandbox.cache_file().parent().expect("cache dir")).expect("mkdir");
    std::fs::write(sandbox.cache_file(), cached.to_string()).expect("stale license");
    // Re-activation: busy, then refused (this server never issued that license); the request
    // that follows: busy, then a license.
    server.push_fault(status(429, "", &[("Retry-After", "0")]));
    server.push_fault(Fault::Reject("licensing.license.not_found".into()));
    server.push_fault(status(429, "", &[("Retry-After", "0")]));

    let outcome = check(
        &sandbox,
        &server.url(),
        &[
            ("LSINIT_MAX_ATTEMPTS", "2"),
            ("LSINIT_ACTIVATION_TIMEOUT", "10"),
        ],
    );

    // With the attempts counted across both calls, the request had none left to retry with.
    assert_active(&outcome);
    let paths: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        [
            "/v1/license/activate",
            "/v1/license/activate",
            "/v1/license/request",
            "/v1/license/request"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// The same outcomes when starting an emulator

#[test]
fn a_start_with_activate_pro_exits_55_with_the_reason_or_starts_the_emulator() {
    let server = plain_server();
    server.push_fault(status(500, "", &[]));
    let sandbox = Sandbox::new();
    let mut command = sandbox.command(["true"]);
    command
        .env("LOCALSTACK_AUTH_TOKEN", TOKEN)
        .env("ACTIVATE_PRO", "1")
        .env("API_ENDPOINT", server.url())
        .envs(BUDGETS);

    let failed = run(&mut command, RUN_LIMIT);
    assert_eq!(failed.code(), Some(55), "{failed:#?}");
    assert!(
        failed.stderr.contains("HTTP 500") && failed.stderr.contains("ACTIVATE_PRO=0"),
        "{}",
        failed.stderr
    );

    let started = run(&mut command, RUN_LIMIT);
    assert_eq!(started.code(), Some(0), "{started:#?}");
    assert_eq!(server.request_count(), 2);
}
