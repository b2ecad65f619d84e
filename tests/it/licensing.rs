//! Licensing end to end (SPEC 3, 4, 5 and 9): the real binary against the reference license
//! server on loopback, a shell script as the emulator that writes down the environment it got,
//! and assertions on what can be observed: exit status, files on disk, what the emulator saw,
//! what the server received, and lsinit's log lines.
//!
//! Every test has its own sandbox and its own server; the harness checks every run's output and
//! every file under the sandbox's roots for raw secrets.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use license_server::time::Duration as Offset;
use license_server::{
    Credential, Fault, LicenseServer, LicenseTemplate, Product, RecordedRequest, make_license,
    parse_date, sign,
};
use serde_json::Value;

use crate::harness::*;

/// Generous upper bound for one run that should take milliseconds.
const LIMIT: Duration = Duration::from_secs(30);

/// The keys of license format "1" (SPEC 3.3), sorted.
const FORMAT_1_KEYS: [&str; 12] = [
    "expiry_date",
    "id",
    "issue_date",
    "last_activated",
    "license_format",
    "license_secret",
    "license_status",
    "license_type",
    "offline_data",
    "products",
    "reactivate_after",
    "signature",
];

/// The masked form of [`TOKEN`] (SPEC 3.1).
const TOKEN_MASKED: &str = "ls-Wxyz0123-****-****-****-************";

/// A sandbox, a license server, and an emulator that writes its environment to a file.
struct Rig {
    sandbox: Sandbox,
    server: LicenseServer,
}

impl Rig {
    /// A server that knows no credential: every activation is rejected as unknown.
    fn new() -> Rig {
        Rig {
            sandbox: Sandbox::new(),
            server: LicenseServer::start().expect("license server starts"),
        }
    }

    /// A server that issues default licenses to [`TOKEN`].
    fn knowing_token() -> Rig {
        let rig = Rig::new();
        rig.server.add_credential(Credential::auth_token(TOKEN));
        rig
    }

    /// Where the emulator writes its environment; absent when it never started.
    fn env_file(&self) -> PathBuf {
        self.sandbox.scratch().join("emulator-env")
    }

    /// lsinit pointed at this rig's server, with the env-writing emulator as its command.
    fn command(&self) -> Command {
        let file = self.env_file();
        let script = "env > \"$0\"";
        let mut command =
            self.sandbox
                .command(["sh", "-c", script, file.to_str().expect("UTF-8 path")]);
        command.env("API_ENDPOINT", self.server.url());
        command
    }

    /// Runs lsinit to completion with the settings `configure` adds.
    fn run(&self, configure: impl FnOnce(&mut Command)) -> Outcome {
        let mut command = self.command();
        configure(&mut command);
        run(&mut command, LIMIT)
    }

    /// The emulator's environment as `env` printed it, or `None` if it never started.
    fn emulator_env(&self) -> Option<String> {
        fs::read_to_string(self.env_file()).ok()
    }

    /// The emulator's environment; panics if it never started.
    fn started_env(&self, outcome: &Outcome) -> String {
        self.emulator_env()
            .unwrap_or_else(|| panic!("the emulator never started:\n{}", outcome.stderr))
    }

    fn requests(&self) -> Vec<RecordedRequest> {
        self.server.requests()
    }

    /// The request paths the server received, in order.
    fn paths(&self) -> Vec<String> {
        self.requests().into_iter().map(|r| r.path).collect()
    }

    fn cache_file(&self) -> PathBuf {
        self.sandbox.cache_file()
    }

    /// The three places a license is read from, in SPEC 3.2's order.
    fn read_locations(&self) -> [PathBuf; 3] {
        [
            self.sandbox.config().join("conf.d/license.json"),
            self.sandbox.cache_file(),
            self.sandbox.static_dir().join("license.json"),
        ]
    }

    /// The license lsinit cached, parsed.
    fn cached_license(&self) -> Value {
        let bytes = fs::read(self.cache_file()).expect("a cached license");
        serde_json::from_slice(&bytes).expect("the cached license is JSON")
    }
}

/// Sets `name` when a value is given; `None` leaves it unset (the harness clears the rest).
fn set(command: &mut Command, name: &str, value: Option<&str>) {
    if let Some(value) = value {
        command.env(name, value);
    }
}

fn has_line(env: &str, line: &str) -> bool {
    env.lines().any(|l| l == line)
}

/// lsinit's log lines at `level` (`ERROR`, `WARN`, `INFO`, `DEBUG`).
/// The messages (the part after ` : `) of the log lines at `level`: asserting on whole lines
/// would let the timestamp satisfy a check for a number.
fn lines_at<'a>(stderr: &'a str, level: &str) -> Vec<&'a str> {
    stderr
        .lines()
        .filter(|line| line.split_whitespace().nth(1) == Some(level))
        .map(|line| line.split_once(" : ").map_or(line, |(_, message)| message))
        .collect()
}

/// A signed license for `key`, made from `template` with dates relative to now.
fn license_for(template: LicenseTemplate, key: &str, id: &str) -> Value {
    make_license(&template, key, VERSION, id)
}

fn valid_license(id: &str) -> Value {
    license_for(LicenseTemplate::default(), TOKEN, id)
}

fn write_json(path: &Path, document: &Value) {
    write_bytes(path, &serde_json::to_vec_pretty(document).expect("JSON"));
}

fn write_bytes(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().expect("a parent")).expect("fixture directory");
    fs::write(path, bytes).expect("fixture written");
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("exists").permissions().mode() & 0o777
}

/// Names in `dir`, sorted; empty when it does not exist.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn body(request: &RecordedRequest) -> &Value {
    request.json.as_ref().expect("the request body is JSON")
}

fn sorted_keys(document: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = document
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

// SPEC 4: every cell of the ACTIVATE_PRO table, with and without LOG_LICENSE_ISSUES=0.

/// `LOG_LICENSE_ISSUES` unset (on) and `0`.
const LOG_ISSUES: [Option<&str>; 2] = [None, Some("0")];

#[test]
fn activated_license_starts_pro_whatever_activate_pro_says() {
    for activate_pro in [None, Some("1"), Some("0"), Some("false")] {
        for log_issues in LOG_ISSUES {
            let case = format!("ACTIVATE_PRO={activate_pro:?} LOG_LICENSE_ISSUES={log_issues:?}");
            let rig = Rig::knowing_token();

            let outcome = rig.run(|c| {
                c.env("LOCALSTACK_AUTH_TOKEN", TOKEN);
                set(c, "ACTIVATE_PRO", activate_pro);
                set(c, "LOG_LICENSE_ISSUES", log_issues);
            });

            assert_eq!(outcome.code(), Some(0), "{case}\n{}", outcome.stderr);
            let env = rig.started_env(&outcome);
            assert!(has_line(&env, "ACTIVATE_PRO=1"), "{case}\n{env}");
            assert_eq!(rig.server.request_count(), 1, "{case}");
            assert!(lines_at(&outcome.stderr, "WARN").is_empty(), "{case}");
            assert!(lines_at(&outcome.stderr, "ERROR").is_empty(), "{case}");
        }
    }
}

#[test]
fn failed_activation_with_activate_pro_on_exits_55_with_a_banner_and_no_emulator() {
    for activate_pro in [None, Some("1")] {
        let rig = Rig::new();

        let outcome = rig.run(|c| {
            c.env("LOCALSTACK_AUTH_TOKEN", TOKEN);
            set(c, "ACTIVATE_PRO", activate_pro);
        });

        assert_eq!(outcome.code(), Some(55), "{}", outcome.stderr);
        assert!(rig.emulator_env().is_none(), "the emulator started");
        assert_eq!(rig.server.request_count(), 1);
        let banner = lines_at(&outcome.stderr, "ERROR").join("\n");
        assert!(banner.contains("not known to LocalStack"), "{banner}");
        assert!(banner.contains("ACTIVATE_PRO=0"), "{banner}");
        assert!(banner.contains("status 55"), "{banner}");
    }
}

#[test]
fn failed_activation_with_log_license_issues_0_still_prints_one_line_and_exits_55() {
    let rig = Rig::new();

    let outcome = rig.run(|c| {
        c.env("LOCALSTACK_AUTH_TOKEN", TOKEN);
        c.env("LOG_LICENSE_ISSUES", "0");
    });

    assert_eq!(outcome.code(), Some(55), "{}", outcome.stderr);
    assert!(rig.emulator_env().is_none(), "the emulator started");
    let lines: Vec<&str> = outcome.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", outcome.stderr);
    assert_eq!(
        lines_at(&outcome.stderr, "ERROR").len(),
        1,
        "{}",
        outcome.stderr
    );
    let message = lines_at(&outcome.stderr, "ERROR")[0];
    assert!(message.contains("not known to LocalStack"), "{message}");
    assert!(message.contains("status 55"), "{message}");
}

#[test]
fn failed_activation_with_activate_pro_off_starts_community_with_one_warning() {
    let rig = Rig::new();

    let outcome = rig.run(|c| {
        c.env("LOCALSTACK_AUTH_TOKEN", TOKEN);
        c.env("ACTIVATE_PRO", "0");
    });

    assert_eq!(outcome.code(), Some(0), "{}", outcome.stderr);
    let env = rig.started_env(&outcome);
    assert!(has_line(&env, "ACTIVATE_PRO=0"), "{env}");
    let warnings = lines_at(&outcome.stderr, "WARN");
    assert_eq!(warnings.len(), 1, "{}", outcome.stderr);
    assert!(
        warnings[0].contains("not known to LocalStack"),
        "{}",
        warnings[0]
    );
    assert!(
        lines_at(&outcome.stderr, "ERROR").is_empty(),
        "{}",
        outcome.stderr
    );
}

#[test]
fn failed_activation_with_activate_pro_off_and_log_license_issues_0_is_silent() {
    let rig = Rig::new();

    let outcome = rig.run(|c| {
        c.env("LOCALSTACK_AUTH_TOKEN", TOKEN);
        c.env("ACTIVATE_PRO", "0");
        c.env("LOG_LICENSE_ISSUES", "0");
    });

    assert_eq!(outcome.code(), Some(0), "{}", outcome.stderr);
    let env = rig.started_env(&outcome);
    assert!(has_line(&env, "ACTIVATE_PRO=0"), "{env}");
    assert_eq!(rig.server.request_count(), 1);
    assert!(
        lines_at(&outcome.stderr, "WARN").is_empty(),
        "{}",
        outcome.stderr
    );
    assert!(
        lines_at(&outcome.stderr, "ERROR").is_empty(),
        "{}",
        outcome.stderr
    );
}

#[test]
fn no_credentials_with_activate_pro_on_exits_55_asking_for_a_token() {
    for log_issues in LOG_ISSUES {
        let rig = Rig::knowing_token();

        let outcome = rig.run(|c| set(c, "LOG_LICENSE_ISSUES", log_issues));

        let case = format!("LOG_LICENSE_ISSUES={log_issues:?}");
        assert_eq!(outcome.code(), Some(55), "{case}\n{}", outcome.stderr);
        assert!(rig.emulator_env().is_none(), "{case}: the emulator started");
        assert_eq!(rig.server.request_count(), 0, "{case}");
        let errors = lines_at(&outcome.stderr, "ERROR");
        let text = errors.join("\n");
        assert!(text.contains("no credentials found"), "{case}\n{text}");
        assert!(text.contains("LOCALSTACK_AUTH_TOKEN"), "{case}\n{text}");
        assert!(text.contains("status 55"), "{case}\n{text}");
        if log_issues.is_none() {
            assert!(text.contains("ACTIVATE_PRO=0"), "{case}\n{text}");
        } else {
            assert_eq!(
                outcome.stderr.lines().count(),
                1,
                "{case}\n{}",
                outcome.stderr
            );
        }
    }
}

#[test]
fn no_credentials_with_activate_pro_off_starts_community_with_only_a_debug_line() {
    for log_issues in LOG_ISSUES {
        for level in [None, Some("debug")] {
            let case = format!("LOG_LICENSE_ISSUES={log_issues:?} LS_LOG={level:?}");
            let rig = Rig::knowing_token();

            let outcome = rig.run(|c| {
                c.env("ACTIVATE_PRO", "0");
                set(c, "LOG_LICENSE_ISSUES", log_issues);
                set(c, "LS_LOG", level);
            });

            assert_eq!(outcome.code(), Some(0), "{case}\n{}", outcome.stderr);
            let env = rig.started_env(&outcome);
            assert!(has_line(&env, "ACTIVATE_PRO=0"), "{case}\n{env}");
            assert_eq!(rig.server.request_count(), 0, "{case}");
            assert!(lines_at(&outcome.stderr, "WARN").is_empty(), "{case}");
            assert!(lines_at(&outcome.stderr, "ERROR").is_empty(), "{case}");
            let said = lines_at(&outcome.stderr, "DEBUG")
                .iter()
                .any(|l| l.contains("no credentials"));
            assert_eq!(said, level.is_some(), "{case}\n{}", outcome.stderr);
        }
    }
}

// SPEC 3.1: credentials.

#[test]
fn single_space_token_from_docker_default_counts_as_unset() {
    let rig = Rig::knowing_token();
    let outcome = rig.run(|c| {
        c.env("LOCALSTACK_AUTH_TOKEN", " ");
    });
    assert_eq!(outcome.code(), Some(55), "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains("no credentials found"),
        "{}",
        outcome.stderr
    );
    assert_eq!(rig.server.request_count(), 0);

    // Not "both set": the blank token is no credential, the API key is.
    let rig = Rig::new();
    rig.server.add_credential(Credential::api_key(API_KEY));
    let outcome = rig.run(|c| {
        c.env("LOCALSTACK_AUTH_TOKEN", " ");
        c.env("LOCALSTACK_API_KEY", API_KEY);
    });
    assert_eq!(outcome.code(), Some(0), "{}", outcome.stderr);
    assert_eq!(rig.server.request_count(), 1);
}

#[test]
fn quoted_token_activates_with_the_quotes_stripped() {
    for value in [
        format!("\"{TOKEN}\""),
        format!("'{TOKEN}'"),
        format!(" \"'{TOKEN}'\" "),
    ] {
        let env = activates_with_the_trimmed_token(&value);
        // The emulator gets the variable as the user gave it.
        assert!(
            has_line(&env, &format!("LOCALSTACK_AUTH_TOKEN={value}")),
            "{env}"
        );
    }
}

#[test]
fn token_wrapped_in_crlf_activates_and_the_server_gets_it_trimmed() {
    for value in [
        format!("{TOKEN}\r\n"),
        format!("\r\n{TOKEN}\r\n"),
        format!("\t{TOKEN} \n"),
    ] {
        let env = activates_with_the_trimmed_token(&value);
        assert!(has_line(&env, "ACTIVATE_PRO=1"), "{env}");
    }
}

/// Starts with `LOCALSTACK_AUTH_TOKEN=value`, checks that one request carried the trimmed
/// token and the start succeeded; returns the emulator's environment.
fn activates_with_the_trimmed_token(value: &str) -> String {
    let rig = Rig::knowing_token();

    let outcome = rig.run(|c| {
        c.env("LOCALSTACK_AUTH_TOKEN", value);
    });

    assert_eq!(outcome.code(), Some(0), "{value:?}\n{}", outcome.stderr);
    let requests = rig.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(body(&requests[0])["credentials"]["token"], TOKEN);
    rig.started_env(&outcome)
}

#[test]
fn both_credentials_set_is_a_failure_naming_both_without_a_request() {
    let rig = Rig::knowing_token();
    rig.server.add_credential(Credential::api_key(API_KEY));
    let outcome = rig.run(|c| {
        c.env("LOCALSTACK_AUTH_TOKEN", TOKEN);
        c.env("LOCALSTACK_API_KEY", API_KEY);
    });
    assert_eq!(outcome.code(), Some(55), "{}", outcome.stderr);
    assert!(rig.emulator_env().is_none(), "the emulator started");
    let errors = lines_at(&outcome.stderr, "ERROR").join("\n");
    assert!(
        errors.contains("either LOCALSTACK_AUTH_TOKEN or LOCALSTACK_API_KEY, not both"),
        "{errors}"
    );
    assert_eq!(rig.server.request_count(), 0);

    let outcome = rig.run(|c| {
        c.env("LOCALSTACK_AUTH_TOKEN", TOKEN);
        c.env("LOCALSTACK_API_KEY", API_KEY);
        c.env("ACTIVATE_PRO", "0");
    });
    assert_eq!(outcome.code(), Some(0), "{}", outcome.stderr);
    assert!(has_line(&rig.started_env(&outcome), "ACTIVATE_PRO=0"));
    let warnings = lines_at(&outcome.stderr, "WARN");
    assert_eq!(warnings.len(), 1, "{}", outcome.stderr);
    assert!(warnings[0].contains("not both"), "{}", warnings[0]);
    assert_eq!(rig.server.request_count(), 0);
}

#[test]
fn malformed_token_fails_without_a_request() {
    let malformed = "ls-not-a-real-token-but-secret";
    let rig = Rig::new();
    rig.server.add_credential(Credential::auth_token(malformed));

    let outcome = rig.run(|c| {
        c.env("LOCALSTACK_AUTH_TOKEN", malformed);
    });

    assert_eq!(outcome.code(), Some(55), "{}", outcome.stderr);
    assert!(rig.emulator_env().is_none(), "the emulator started");
    assert!(
        outcome.stderr.contains("does not look like an auth token"),
        "{}",
        outcome.stderr
    );
    assert_eq!(rig.server.request_count(), 0);
    outcome.assert_free_of(malformed);
    rig.sandbox.assert_files_free_of(malformed);
}

#[test]
fn token_with_a_bad_checksum_fails_without_a_request() {
    let rig = Rig::new();
    // Known to the server, so only lsinit's own check can stop it.
    rig.server
        .add_credential(Credential::auth_token(TYPO_TOKEN));

    let outcome = rig.run(|c| {
        c.env("LOCALSTACK_AUTH_TOKEN", TYPO_TOKEN);
    });

    assert_eq!(outcome.code(), Some(55), "{}", outcome.stderr);
    assert!(rig.emulator_env().is_none(), "the emulator started");
    assert!(outcome.stderr.contains("checksum"), "{}", outcome.stderr);
    assert_eq!(rig.server.request_count(), 0);
    outcome.assert_free_of(TYPO_TOKEN);
    rig.sandbox.assert_files_free_of(TYPO_TOKEN);
}

#[test]
fn api_key_activates_as_licensing_api_key() {
    let rig = Rig::new();
    rig.server.add_credential(Credential::api_key(API_KEY));

    let outcome = rig.run(|c| {
        c.env("LOCALSTACK_API_KEY", API_KEY);
    });

    assert_eq!(outcome.code(), Some(0), "{}", outcome.stderr);
    let requests = rig.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/v1/license/request");
    let credentials = &body(&requests[0])["credentials"];
    assert_eq!(credentials["type"], "licensing-api-key");
    assert_eq!(credentials["token"], API_KEY);
    let env = rig.started_env(&outcome);
    assert!(has_line(&env, "ACTIVATE_PRO=1"), "{env}");
    assert!(
        has_line(&env, &format!("LOCALSTACK_API_KEY={API_KEY}")),
        "{env}"
    );
    let info = lines_at(&outcome.stderr, "INFO").join("\n");
    assert!(
        info.contains("LOCALSTACK_API_KEY=Xq7...<16 chars>"),
        "{info}"
    );
    let license = rig.cached_license();
    assert_eq!(license["signature"], sign(&license, API_KEY).unwrap());
}

#[test]
fn test_credential_starts_pro_without_a_request_and_with_credentials_unchanged() {
    for variable in ["LOCALSTACK_AUTH_TOKEN", "LOCALSTACK_API_KEY"] {
        let rig = Rig::knowing_token();

        let outcome = rig.run(|c| {
            c.env(variable, "test");
        });

        assert_eq!(outcome.code(), Some(0), "{variable}\n{}", outcome.stderr);
        assert_eq!(rig.server.request_count(), 0, "{variable}");
        let env = rig.started_env(&outcome);
        assert!(has_line(&env, "ACTIVATE_PRO=1"), "{variable}\n{env}");
        assert!(
            has_line(&env, &format!("{variable}=test")),
            "{variable}\n{env}"
        );
        assert!(
            !rig.cache_file().exists(),
            "{variable}: a license was cached"
        );
        let info = lines_at(&outcome.stderr, "INFO").join("\n");
        assert!(info.contains("test license"), "{variable}\n{info}");
    }
}

// SPEC 3.2 and 3.3: the cache.

#[test]
fn valid_license_in_any_read_location_is_used_without_a_request() {
    for index in 0..3 {
        let rig = Rig::knowing_token();
        let location = rig.read_locations()[index].clone();
        let id = "license_cached-in-place";
        write_json(&location, &valid_license(id));
        let before = fs::read(&location).unwrap();

        let outcome = rig.run(|c| {
            c.env("LOCALSTACK_AUTH_TOKEN", TOKEN);
        });

        let case = location.display().to_string();
        assert_eq!(outcome.code(), Some(0), "{case}\n{}", outcome.stderr);
        assert_eq!(rig.server.request_count(), 0, "{case}");
        assert!(
            has_line(&rig.started_env(&outcome), "ACTIVATE_PRO=1"),
            "{case}"
        );
        let info = lines_at(&outcome.stderr, "INFO").join("\n");
        assert!(info.contains(&format!("from {case}")), "{case}\n{info}");
        assert!(info.contains(id), "{case}\n{info}");
        assert_eq!(fs::read(&location).unwrap(), before, "{case} was changed");
    }
}

#[test]
fn first_valid_location_wins_and_invalid_ones_are_skipped() {
    let rig = Rig::knowing_token();
    let [conf_d, cache, static_file] = rig.read_locations();
    write_json(
        &conf_d,
        &license_for(LicenseTemplate::default(), OTHER_TOKEN, "license_other"),
    );
    write_json(&cache, &valid_license("license_second"));
    write_json(&static_file, &valid_license("license_third"));

    let outcome = rig.run(|c| {
        c.env("LOCALSTACK_AUTH_TOKEN", TOKEN);
    });

    assert_eq!(outcome.code(), Some(0), "{}", outcome.stderr);
    assert_eq!(rig.server.request_count(), 0);
    let info = lines_at(&outcome.stderr, "INFO").join("\n");
    assert!(info.contains("license_second"), "{info}");
    assert!(
        info.contains(&format!("from {}", cache.display())),
        "{info}"
    );
}

fn stale() -> LicenseTemplate {
    LicenseTemplate {
        reactivate_after: Offset::hours(-1),
        ..LicenseTemplate::default()
    }
}

#[test]
fn stale_license_is_reactivated_with_exactly_one_activate_request() {
    let rig = Rig::knowing_token();
    let id = "license_stale-but-known";
    write_json(&rig.cache_file(), &license_for(stale(), TOKEN, id));
    rig.server.remember_license(id, TOKEN);

    let outcome = rig.run(|c| {
        c.env("LOCALSTACK_AUTH_TOKEN", TOKEN);
    });

    assert_eq!(outcome.code(), Some(0), "{}", outcome.stderr);
    assert!(has_line(&rig.started_env(&outcome), "ACTIVATE_PRO=1"));
    let requests = rig.requests();
    assert_eq!(requests.len(), 1, "{:?}", rig.paths());
    assert_eq!(requests[0].path, "/v1/license/activate");
    assert_eq!(body(&requests[0])["license_id"], id);
    assert_eq!(body(&requests[0])["credentials"]["token"], TOKEN);

    let renewed = rig.cached_license();
    assert_eq!(renewed["id"], id);
    let reactivate_after = parse_date(renewed["reactivate_after"].as_str().unwrap()).unwrap();
    assert!(reactivate_after > license_server::time::OffsetDateTime::now_utc());
    let warnings = lines_at(&outcome.stderr, "WARN").join("\n");
    assert!(
        warnings.contains("needs re-activation"),
        "{}",
        outcome.stderr
    );
    let info = lines_at(&outcome.stderr, "INFO").join("\n");
    assert!(info.contains("re-activated online"), "{info}");
}

#[test]
fn stale_license_warning_is_silenced_by_log_license_issues_0() {
    let rig = Rig::knowing_token();
    let id = "license_stale-quietly";
    write_json(&rig.cache_file(), &license_for(stale(), TOKEN, id));
    rig.server.remember_license(id, TOKEN);

    let outcome = rig.run(|c| {
        c.env("LOCALSTACK_AUTH_TOKEN", TOKEN);
        c.env("LOG_LICENSE_ISSUES", "0");
    });

    assert_eq!(outcome.code(), Some(0), "{}", outcome.stderr);
    assert_eq!(rig.paths(), ["/v1/license/activate"]);
    assert!(
        lines_at(&outcome.stderr, "WARN").is_empty(),
        "{}",
        outcome.stderr
    );
}

#[test]
fn stale_license_rejected_on_both_calls_is_deleted() {
    let rig = Rig::new();
    rig.server.add_credential(
        Credential::auth_token(TOKEN).rejected_with("licensing.license.invalid_status:CANCELLED"),
    );
    let id = "license_stale-cancelled";
    write_json(&rig.cache_file(), &license_for(stale(), TOKEN, id));
    rig.server.remember_license(id, TOKEN);

    let outcome = rig.run(|c| {
        c.env("LOCALSTACK_AUTH_TOKEN", TOKEN);
    });

    assert_eq!(outcome.code(), Some(55), "{}", outcome.stderr);
    assert_eq!(rig.paths(), ["/v1/license/activate", "/v1/license/request"]);
    assert!(outcome.stderr.contains("CANCELLED"), "{}", outcome.stderr);
    assert!(!rig.cache_file().exists(), "the rejected license was kept");
}

#[test]
fn stale_license_refused_on_reactivation_is_replaced_by_a_requested_one() {
    let rig = Rig::knowing_token();
    let id = "license_stale-and-unknown";
    write_json(&rig.cache_file(), &license_for(stale(), TOKEN, id));

    let outcome = rig.run(|c| {
        c.env("LOCALSTACK_AUTH_TOKEN", TOKEN);
    });

    assert_eq!(outcome.code(), Some(0), "{}", outcome.stderr);
    assert_eq!(rig.paths(), ["/v1/license/activate", "/v1/license/request"]);
    let license = rig.cached_license();
    assert_ne!(license["id"], id);
    assert_eq!(license["signature"], sign(&license, TOKEN).unwrap());
}

#[test]
fn stale_license_whose_reactivation_fails_transiently_is_a_failure() {
    let rig = Rig::knowing_token();
    let id = "license_stale-server-down";
    let document = license_for(stale(), TOKEN, id);
    write_json(&rig.cache_file(), &document);
    let before = fs::read(rig.cache_file()).unwrap();
    rig.server.remember_license(id, TOKEN);
    rig.server.push_fault(Fault::Status {
        status: 500,
        body: "{}".into(),
        headers: Vec::new(),
    });

    let outcome = rig.run(|c| {
        c.env("LOCALSTACK_AUTH_TOKEN", TOKEN);
    });

    assert_eq!(outcome.code(), Some(55), "{}", outcome.stderr);
    assert!(rig.emulator_env().is_none(), "the emulator started");
    assert_eq!(rig.paths(), ["/v1/license/activate"]);
    let since = document["reactivate_after"].as_str().unwrap();
    let errors = lines_at(&outcome.stderr, "ERROR").join("\n");
    assert!(
        errors.contains(&format!("needs re-activation since {since}")),
        "{errors}"
    );
    assert_eq!(
        fs::read(rig.cache_file()).unwrap(),
        before,
        "the cache changed"
    );
}

#[test]
fn rejection_deletes_the_cached_license_of_this_credential_and_nothing_else() {
    let rig = Rig::new();
    rig.server
        .add_credential(Credential::auth_token(TOKEN).rejected_with("licensing.license.expired"));
    let expired = LicenseTemplate {
        expiry_date: Offset::hours(-1),
        ..LicenseTemplate::default()
    };
    let [conf_d, cache, static_file] = rig.read_locations();
    write_json(
        &cache,
        &license_for(expired.clone(), TOKEN, "license_cache"),
    );
    write_json(
        &conf_d,
        &license_for(expired.clone(), TOKEN, "license_conf_d"),
    );
    write_json(&static_file, &license_for(expired, TOKEN, "license_static"));

    let outcome = rig.run(|c| {
        c.env("LOCALSTACK_AUTH_TOKEN", TOKEN);
    });

    assert_eq!(outcome.code(), Some(55), "{}", outcome.stderr);
    assert_eq!(rig.paths(), ["/v1/license/request"]);
    assert!(
        outcome.stderr.contains("the license has expired"),
        "{}",
        outcome.stderr
    );
    assert!(
        !cache.exists(),
        "the rejected credential's cached license was kept"
    );
    assert!(conf_d.exists(), "a license outside the cache was deleted");
    assert!(
        static_file.exists(),
        "a license outside the cache was deleted"
    );
}

#[test]
fn rejection_keeps_a_cached_license_of_another_credential() {
    let rig = Rig::knowing_token();
    write_json(
        &rig.cache_file(),
        &license_for(LicenseTemplate::default(), OTHER_TOKEN, "license_other"),
    );
    let before = fs::read(rig.cache_file()).unwrap();
    rig.server
        .push_fault(Fault::Reject("licensing.credentials.invalid".into()));

    let outcome = rig.run(|c| {
        c.env("LOCALSTACK_AUTH_TOKEN", TOKEN);
    });

    assert_eq!(outcome.code(), Some(55), "{}", outcome.stderr);
    assert_eq!(rig.server.request_count(), 1);
    assert_eq!(fs::read(rig.cache_file()).unwrap(), before);
}

#[test]
fn broken_answer_keeps_the_cached_license_of_this_credential() {
    let rig = Rig::knowing_token();
    let expired = LicenseTemplate {
        expiry_date: Offset::hours(-1),
        ..LicenseTemplate::default()
    };
    write_json(
        &rig.cache_file(),
        &license_for(expired, TOKEN, "license_keep"),
    );
    let before = fs::read(rig.cache_file()).unwrap();
    rig.server.push_fault(Fault::Status {
        status: 403,
        body: "<html>Forbidden by the firewall</html>".into(),
        headers: vec![("Content-Type".into(), "text/html".into())],
    });

    let outcome = rig.run(|c| {
        c.env("LOCALSTACK_AUTH_TOKEN", TOKEN);
    });

    assert_eq!(outcome.code(), Some(55), "{}", outcome.stderr);
    assert_eq!(rig.server.request_count(), 1);
    let errors = lines_at(&outcome.stderr, "ERROR").join("\n");
    assert!(errors.contains("HTTP 403"), "{errors}");
    assert!(errors.contains("Forbidden by the firewall"), "{errors}");
    assert_eq!(fs::read(rig.cache_file()).unwrap(), before);
}

/// Puts `bytes` in `<volume>/cache/license.json` and checks that lsinit does not use it: it says
/// why (`why`, in a debug line naming the file), requests a new license once and caches that.
fn assert_cached_bytes_not_used(bytes: &[u8], why: &str) {
    let rig = Rig::knowing_token();
    write_bytes(&rig.cache_file(), bytes);

    let outcome = rig.run(|c| {
        c.env("LOCALSTACK_AUTH_TOKEN", TOKEN);
        c.env("LS_LOG", "debug");
    });

    assert_eq!(outcome.code(), Some(0), "{why}\n{}", outcome.stderr);
    assert!(
        has_line(&rig.started_env(&outcome), "ACTIVATE_PRO=1"),
        "{why}"
    );
    assert_eq!(rig.paths(), ["/v1/license/request"], "{why}");
    let path = rig.cache_file().display().to_string();
    let explained = lines_at(&outcome.stderr, "DEBUG")
        .iter()
        .any(|l| l.contains(&path) && l.contains(why));
    assert!(
        explained,
        "no debug line on {path} with {why:?}:\n{}",
        outcome.stderr
    );
    let license = rig.cached_license();
    assert_ne!(license["id"], "license_fixture", "{why}");
    assert_eq!(
        license["signature"],
        sign(&license, TOKEN).unwrap(),
        "{why}"
    );
    let info = lines_at(&outcome.stderr, "INFO").join("\n");
    assert!(info.contains("online"), "{why}\n{info}");
}

fn fixture_bytes(document: &Value) -> Vec<u8> {
    serde_json::to_vec_pretty(document).unwrap()
}

fn fixture(template: LicenseTemplate) -> Value {
    license_for(template, TOKEN, "license_fixture")
}

#[test]
fn cached_license_with_a_tampered_signature_is_not_used() {
    let mut document = fixture(LicenseTemplate::default());
    let signature = document["signature"].as_str().unwrap().to_string();
    let flipped = if signature.starts_with('0') { "1" } else { "0" };
    document["signature"] = Value::String(format!("{flipped}{}", &signature[1..]));
    assert_cached_bytes_not_used(&fixture_bytes(&document), "signature does not match");
}

#[test]
fn cached_license_with_a_tampered_field_is_not_used() {
    let mut document = fixture(LicenseTemplate::default());
    document["license_type"] = Value::String("enterprise".into());
    assert_cached_bytes_not_used(&fixture_bytes(&document), "signature does not match");
}

#[test]
fn cached_license_of_another_credential_is_not_used() {
    let document = license_for(LicenseTemplate::default(), OTHER_TOKEN, "license_fixture");
    assert_cached_bytes_not_used(&fixture_bytes(&document), "signature does not match");
}

#[test]
fn cached_license_for_another_runtime_minor_version_is_not_used() {
    let document = fixture(LicenseTemplate {
        localstack_version: Some("4.13.2".into()),
        ..LicenseTemplate::default()
    });
    assert_cached_bytes_not_used(&fixture_bytes(&document), "activated for LocalStack 4.13.2");
}

#[test]
fn cached_license_whose_first_product_is_another_version_is_not_used() {
    let document = fixture(LicenseTemplate {
        products: vec![
            Product::new("localstack-pro", "3.8"),
            Product::new("localstack-pro", "*"),
        ],
        ..LicenseTemplate::default()
    });
    assert_cached_bytes_not_used(&fixture_bytes(&document), "covers LocalStack 3.8");
}

#[test]
fn expired_cached_license_is_not_used() {
    let document = fixture(LicenseTemplate {
        expiry_date: Offset::minutes(-1),
        ..LicenseTemplate::default()
    });
    assert_cached_bytes_not_used(&fixture_bytes(&document), "expired");
}

#[test]
fn inactive_cached_license_is_not_used() {
    let document = fixture(LicenseTemplate {
        license_status: "SUSPENDED".into(),
        ..LicenseTemplate::default()
    });
    assert_cached_bytes_not_used(&fixture_bytes(&document), "status is SUSPENDED");
}

#[test]
fn cached_license_with_an_unknown_key_is_not_used() {
    let mut document = fixture(LicenseTemplate::default());
    document["bonus_seats"] = Value::from(10);
    assert_cached_bytes_not_used(&fixture_bytes(&document), "unknown key \"bonus_seats\"");
}

#[test]
fn cached_license_with_a_missing_key_is_not_used() {
    let mut document = fixture(LicenseTemplate::default());
    document.as_object_mut().unwrap().remove("last_activated");
    assert_cached_bytes_not_used(
        &fixture_bytes(&document),
        "lacks the key \"last_activated\"",
    );
}

#[test]
fn truncated_cached_license_is_not_used() {
    let bytes = fixture_bytes(&fixture(LicenseTemplate::default()));
    assert_cached_bytes_not_used(&bytes[..bytes.len() / 2], "is not JSON");
}

#[test]
fn license_issued_in_the_future_is_used_with_a_clock_warning() {
    for log_issues in LOG_ISSUES {
        let rig = Rig::knowing_token();
        let template = LicenseTemplate {
            issue_date: Offset::days(2),
            ..LicenseTemplate::default()
        };
        write_json(
            &rig.cache_file(),
            &license_for(template, TOKEN, "license_future"),
        );

        let outcome = rig.run(|c| {
            c.env("LOCALSTACK_AUTH_TOKEN", TOKEN);
            set(c, "LOG_LICENSE_ISSUES", log_issues);
        });

        let case = format!("LOG_LICENSE_ISSUES={log_issues:?}");
        assert_eq!(outcome.code(), Some(0), "{case}\n{}", outcome.stderr);
        assert_eq!(rig.server.request_count(), 0, "{case}");
        let warnings = lines_at(&outcome.stderr, "WARN");
        if log_issues.is_none() {
            assert_eq!(warnings.len(), 1, "{case}\n{}", outcome.stderr);
            assert!(warnings[0].contains("clock"), "{}", warnings[0]);
        } else {
            assert!(warnings.is_empty(), "{case}\n{}", outcome.stderr);
        }
    }
}

#[test]
fn unwritable_cache_is_a_warning_and_the_license_still_activates() {
    for log_issues in LOG_ISSUES {
        let rig = Rig::knowing_token();
        // A file where the cache directory should be: nothing can be written below it.
        write_bytes(&rig.sandbox.volume().join("cache"), b"not a directory");

        let outcome = rig.run(|c| {
            c.env("LOCALSTACK_AUTH_TOKEN", TOKEN);
            set(c, "LOG_LICENSE_ISSUES", log_issues);
        });

        let case = format!("LOG_LICENSE_ISSUES={log_issues:?}");
        assert_eq!(outcome.code(), Some(0), "{case}\n{}", outcome.stderr);
        assert!(
            has_line(&rig.started_env(&outcome), "ACTIVATE_PRO=1"),
            "{case}"
        );
        assert_eq!(rig.server.request_count(), 1, "{case}");
        let warnings = lines_at(&outcome.stderr, "WARN");
        if log_issues.is_none() {
            assert_eq!(warnings.len(), 1, "{case}\n{}", outcome.stderr);
            let path = rig.cache_file().display().to_string();
            assert!(warnings[0].contains(&path), "{}", warnings[0]);
        } else {
            assert!(warnings.is_empty(), "{case}\n{}", outcome.stderr);
        }
    }
}

#[test]
fn written_license_is_private_format_1_and_stamped_with_the_runtime_version() {
    let rig = Rig::knowing_token();
    // The server sends an extra key and another runtime's version: lsinit must fix both.
    let mut document = make_license(&LicenseTemplate::default(), TOKEN, "3.0.0", "license_sent");
    document["bonus_seats"] = Value::from(10);
    rig.server.push_fault(Fault::Body {
        status: 200,
        body: document.to_string(),
    });

    let outcome = rig.run(|c| {
        c.env("LOCALSTACK_AUTH_TOKEN", TOKEN);
    });

    assert_eq!(outcome.code(), Some(0), "{}", outcome.stderr);
    let path = rig.cache_file();
    assert_eq!(mode(&path), 0o600);
    let written = rig.cached_license();
    assert_eq!(sorted_keys(&written), FORMAT_1_KEYS);
    assert_eq!(written["id"], "license_sent");
    assert_eq!(
        written["offline_data"],
        serde_json::json!({ "localstack_version": VERSION })
    );
    // Everything signed is kept verbatim.
    for key in [
        "signature",
        "issue_date",
        "expiry_date",
        "reactivate_after",
        "products",
    ] {
        assert_eq!(written[key], document[key], "{key}");
    }
    // No temp file is left beside it.
    let cache_dir = path.parent().unwrap();
    assert_eq!(names_in(cache_dir), ["license.json", "machine.json"]);
}

#[test]
fn cache_directory_is_created_0755_and_files_keep_their_modes_under_a_strict_umask() {
    let rig = Rig::knowing_token();
    let mut command = rig.command();
    command.env("LOCALSTACK_AUTH_TOKEN", TOKEN);
    // SAFETY: umask(2) is async-signal-safe and touches only the child about to exec.
    unsafe {
        command.pre_exec(|| {
            libc::umask(0o077);
            Ok(())
        });
    }

    let outcome = run(&mut command, LIMIT);

    assert_eq!(outcome.code(), Some(0), "{}", outcome.stderr);
    let cache_dir = rig.cache_file().parent().unwrap().to_path_buf();
    assert_eq!(mode(&cache_dir), 0o755, "{}", cache_dir.display());
    assert_eq!(mode(&rig.cache_file()), 0o600);
    assert_eq!(mode(&cache_dir.join("machine.json")), 0o644);
}

#[test]
fn machine_id_is_persisted_and_sent_again_on_the_next_activation() {
    let rig = Rig::knowing_token();

    for _ in 0..2 {
        let outcome = rig.run(|c| {
            c.env("LOCALSTACK_AUTH_TOKEN", TOKEN);
        });
        assert_eq!(outcome.code(), Some(0), "{}", outcome.stderr);
        // Forget the license, not the machine, so the next start asks again.
        fs::remove_file(rig.cache_file()).unwrap();
    }

    let ids: Vec<String> = rig
        .requests()
        .iter()
        .map(|r| body(r)["machine"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[0], ids[1]);
    let hex = ids[0].strip_prefix("gen_").expect("gen_ prefix");
    assert!(
        hex.len() == 12 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{hex}"
    );
    let machine_file = rig.sandbox.volume().join("cache/machine.json");
    let machine: Value = serde_json::from_slice(&fs::read(&machine_file).unwrap()).unwrap();
    assert_eq!(machine, serde_json::json!({ "machine_id": ids[0] }));
    assert_eq!(mode(&machine_file), 0o644);
}

#[test]
fn existing_machine_id_is_sent_unchanged() {
    let rig = Rig::knowing_token();
    let machine_file = rig.sandbox.volume().join("cache/machine.json");
    write_bytes(&machine_file, br#"{"machine_id": "gen_0123456789ab"}"#);

    let outcome = rig.run(|c| {
        c.env("LOCALSTACK_AUTH_TOKEN", TOKEN);
    });

    assert_eq!(outcome.code(), Some(0), "{}", outcome.stderr);
    assert_eq!(
        body(&rig.requests()[0])["machine"]["id"],
        "gen_0123456789ab"
    );
}

// SPEC 3.5: the request.

#[test]
fn request_carries_product_machine_and_ci_flag() {
    for ci in [None, Some("true"), Some("")] {
        let rig = Rig::knowing_token();

        let outcome = rig.run(|c| {
            c.env("LOCALSTACK_AUTH_TOKEN", TOKEN);
            set(c, "CI", ci);
        });

        assert_eq!(outcome.code(), Some(0), "CI={ci:?}\n{}", outcome.stderr);
        let requests = rig.requests();
        assert_eq!(requests.len(), 1);
        let request = &requests[0];
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/v1/license/request");
        assert_eq!(request.header("content-type"), Some("application/json"));
        let agent = request.header("user-agent").unwrap_or_default();
        assert!(agent.starts_with("lsinit/"), "{agent}");
        let sent = body(request);
        assert_eq!(
            sent["credentials"],
            serde_json::json!({ "type": "licensing-auth-token", "token": TOKEN })
        );
        assert_eq!(
            sent["product"],
            serde_json::json!({ "name": "localstack-pro", "version": VERSION })
        );
        assert_eq!(sent["machine"]["cli"], false);
        assert_eq!(sent["machine"]["ci"], ci.is_some(), "CI={ci:?}");
        let system = sent["machine"]["system"].as_str().unwrap();
        assert!(system.starts_with("Linux(Container),"), "{system}");
        assert_eq!(system.split(',').count(), 3, "{system}");
        assert!(sent.get("license_id").is_none());
    }
}

#[test]
fn api_endpoint_may_come_from_localstack_api_endpoint_with_a_trailing_slash() {
    let rig = Rig::knowing_token();
    let mut command = rig.command();
    command
        .env_remove("API_ENDPOINT")
        .env("LOCALSTACK_API_ENDPOINT", format!("{}/", rig.server.url()))
        .env("LOCALSTACK_AUTH_TOKEN", TOKEN);

    let outcome = run(&mut command, LIMIT);

    assert_eq!(outcome.code(), Some(0), "{}", outcome.stderr);
    assert_eq!(rig.paths(), ["/v1/license/request"]);
}

// SPEC 3.4: the runtime version.

#[test]
fn runtime_version_comes_from_the_installed_core_package() {
    let rig = Rig::knowing_token();
    let dist_info = rig
        .sandbox
        .venv()
        .join("lib/python3.11/site-packages/localstack_core-4.14.3.dist-info");
    write_bytes(
        &dist_info.join("METADATA"),
        b"Metadata-Version: 2.1\nName: localstack-core\nVersion: 4.14.3\n",
    );
    let mut command = rig.command();
    command
        .env_remove("LOCALSTACK_BUILD_VERSION")
        .env("LOCALSTACK_AUTH_TOKEN", TOKEN);

    let outcome = run(&mut command, LIMIT);

    assert_eq!(outcome.code(), Some(0), "{}", outcome.stderr);
    assert_eq!(body(&rig.requests()[0])["product"]["version"], "4.14.3");
    assert_eq!(
        rig.cached_license()["offline_data"]["localstack_version"],
        "4.14.3"
    );
}

#[test]
fn unknown_runtime_version_fails_without_a_request() {
    let rig = Rig::knowing_token();
    let mut command = rig.command();
    command
        .env_remove("LOCALSTACK_BUILD_VERSION")
        .env("LOCALSTACK_AUTH_TOKEN", TOKEN);

    let outcome = run(&mut command, LIMIT);

    assert_eq!(outcome.code(), Some(55), "{}", outcome.stderr);
    assert!(rig.emulator_env().is_none(), "the emulator started");
    assert_eq!(rig.server.request_count(), 0);
    let errors = lines_at(&outcome.stderr, "ERROR").join("\n");
    assert!(errors.contains("set LOCALSTACK_BUILD_VERSION"), "{errors}");
}

#[test]
fn runtime_version_without_major_minor_fails_before_any_request() {
    let rig = Rig::knowing_token();
    for version in ["4", "latest", "4."] {
        let mut command = rig.command();
        command
            .env("LOCALSTACK_BUILD_VERSION", version)
            .env("LOCALSTACK_AUTH_TOKEN", TOKEN);

        let outcome = run(&mut command, LIMIT);

        assert_eq!(outcome.code(), Some(55), "{version}: {}", outcome.stderr);
        let errors = lines_at(&outcome.stderr, "ERROR").join("\n");
        assert!(
            errors.contains("no major.minor form"),
            "{version}: {errors}"
        );
        assert!(
            errors.contains("LOCALSTACK_BUILD_VERSION"),
            "{version}: {errors}"
        );
    }
    assert_eq!(
        rig.server.request_count(),
        0,
        "a version check must not cost a request"
    );
}

#[test]
fn fifo_in_place_of_the_runtime_metadata_fails_instead_of_hanging() {
    let rig = Rig::knowing_token();
    let dist_info = rig
        .sandbox
        .venv()
        .join("lib/python3.11/site-packages/localstack_core-4.14.0.dist-info");
    fs::create_dir_all(&dist_info).unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(dist_info.join("METADATA"))
        .status()
        .unwrap();
    assert!(status.success());
    let mut command = rig.command();
    command
        .env_remove("LOCALSTACK_BUILD_VERSION")
        .env("LOCALSTACK_AUTH_TOKEN", TOKEN);

    let outcome = run(&mut command, LIMIT);

    assert_eq!(outcome.code(), Some(55), "{}", outcome.stderr);
    let errors = lines_at(&outcome.stderr, "ERROR").join("\n");
    assert!(errors.contains("set LOCALSTACK_BUILD_VERSION"), "{errors}");
    assert_eq!(rig.server.request_count(), 0);
}

// SPEC 3.7: `lsinit check`.

#[test]
fn check_activates_as_a_start_would_and_exits_0() {
    let rig = Rig::knowing_token();
    let mut command = rig.sandbox.command(["check"]);
    command
        .env("API_ENDPOINT", rig.server.url())
        .env("LOCALSTACK_AUTH_TOKEN", TOKEN);

    let outcome = run(&mut command, LIMIT);

    assert_eq!(outcome.code(), Some(0), "{}", outcome.stderr);
    assert_eq!(rig.paths(), ["/v1/license/request"]);
    let license = rig.cached_license();
    let id = license["id"].as_str().unwrap();
    assert!(
        outcome.stdout.contains("edition: pro"),
        "{}",
        outcome.stdout
    );
    assert!(outcome.stdout.contains(id), "{}", outcome.stdout);
    assert!(outcome.stdout.contains(TOKEN_MASKED), "{}", outcome.stdout);
    assert!(rig.sandbox.volume().join("cache/machine.json").is_file());
}

#[test]
fn check_without_an_active_license_exits_55_whatever_activate_pro_says() {
    for activate_pro in [None, Some("0")] {
        let rig = Rig::new();
        let mut command = rig.sandbox.command(["check"]);
        command
            .env("API_ENDPOINT", rig.server.url())
            .env("LOCALSTACK_AUTH_TOKEN", TOKEN);
        set(&mut command, "ACTIVATE_PRO", activate_pro);

        let outcome = run(&mut command, LIMIT);

        let case = format!("ACTIVATE_PRO={activate_pro:?}");
        assert_eq!(outcome.code(), Some(55), "{case}\n{}", outcome.stderr);
        assert!(
            outcome.stdout.contains("not known to LocalStack"),
            "{case}\n{}",
            outcome.stdout
        );
        assert_eq!(rig.server.request_count(), 1, "{case}");
    }
}

// SPEC 10: every line lsinit logs is in the runtime's layout.

/// `2026-12-04T15:35:23.216  INFO --- [      lsinit] lsinit.licensing           : message`.
fn assert_runtime_layout(line: &str) {
    let (stamp, rest) = line.split_at_checked(23).unwrap_or(("", line));
    let digits = |range: std::ops::Range<usize>| {
        stamp
            .get(range)
            .is_some_and(|s| s.bytes().all(|b| b.is_ascii_digit()))
    };
    let stamp_ok = digits(0..4)
        && &stamp[4..5] == "-"
        && digits(5..7)
        && &stamp[7..8] == "-"
        && digits(8..10)
        && &stamp[10..11] == "T"
        && digits(11..13)
        && digits(14..16)
        && digits(17..19)
        && &stamp[19..20] == "."
        && digits(20..23);
    assert!(stamp_ok, "timestamp: {line:?}");
    let level = rest.get(2..7).unwrap_or_default();
    assert!(
        ["ERROR", " WARN", " INFO", "DEBUG", "TRACE"].contains(&level),
        "level: {line:?}"
    );
    assert!(rest.starts_with("  "), "{line:?}");
    let rest = &rest[7..];
    let Some(rest) = rest.strip_prefix(" --- [      lsinit] ") else {
        panic!("thread: {line:?}");
    };
    let (logger, message) = rest.split_at_checked(26).unwrap_or((rest, ""));
    let Some(message) = message.strip_prefix(" : ") else {
        panic!("separator: {line:?}");
    };
    // The HTTP and TLS crates' debug lines keep their own logger names and wording.
    if ["ureq", "ureq_proto", "rustls"].contains(&logger.trim_end()) {
        assert_eq!(level, "DEBUG", "{line:?}");
        return;
    }
    let logger = logger.trim_end();
    assert!(
        logger == "lsinit" || logger.starts_with("lsinit."),
        "logger: {line:?}"
    );
    let first_word: String = message
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let is_variable = first_word.len() > 1
        && first_word
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    let starts_lowercase = message.chars().next().is_some_and(char::is_lowercase);
    assert!(
        starts_lowercase || is_variable,
        "capitalised message: {line:?}"
    );
    assert!(!message.ends_with('.'), "trailing period: {line:?}");
}

#[test]
fn every_log_line_follows_the_runtime_layout() {
    let mut stderrs = Vec::new();
    // Activated online, then from the cache.
    let rig = Rig::knowing_token();
    for _ in 0..2 {
        stderrs.push(rig.run(|c| {
            c.env("LOCALSTACK_AUTH_TOKEN", TOKEN);
            c.env("LS_LOG", "debug");
        }));
    }
    // The failure banner, the one-line fatal exit, the community warning, no credentials.
    let settings: [&[(&str, &str)]; 4] = [
        &[("LOCALSTACK_AUTH_TOKEN", TOKEN)],
        &[
            ("LOCALSTACK_AUTH_TOKEN", TOKEN),
            ("LOG_LICENSE_ISSUES", "0"),
        ],
        &[("LOCALSTACK_AUTH_TOKEN", TOKEN), ("ACTIVATE_PRO", "0")],
        &[("ACTIVATE_PRO", "0"), ("LS_LOG", "debug")],
    ];
    for pairs in settings {
        let rig = Rig::new();
        stderrs.push(rig.run(|c| {
            c.envs(pairs.iter().copied());
        }));
    }

    for outcome in &stderrs {
        assert!(!outcome.stderr.is_empty());
        for line in outcome.stderr.lines() {
            assert_runtime_layout(line);
        }
    }
}

// SPEC 3.1: secrets.

#[test]
fn raw_token_reaches_the_emulator_but_nothing_lsinit_writes() {
    for (rejected, level) in [(false, "trace"), (true, "trace"), (false, "info")] {
        let rig = if rejected {
            Rig::new()
        } else {
            Rig::knowing_token()
        };

        let outcome = rig.run(|c| {
            c.env("LOCALSTACK_AUTH_TOKEN", TOKEN);
            c.env("LS_LOG", level);
            c.env("ACTIVATE_PRO", "0");
        });

        let case = format!("rejected={rejected} LS_LOG={level}");
        assert_eq!(outcome.code(), Some(0), "{case}\n{}", outcome.stderr);
        let env = rig.started_env(&outcome);
        assert!(
            has_line(&env, &format!("LOCALSTACK_AUTH_TOKEN={TOKEN}")),
            "{case}"
        );
        assert!(has_line(&env, &format!("AUTH_TOKEN={TOKEN}")), "{case}");
        // The harness has checked stdout and stderr; the files are checked here and on drop.
        outcome.assert_free_of(TOKEN);
        rig.sandbox.assert_files_free_of(TOKEN);
        if !rejected {
            assert!(
                outcome.stderr.contains(TOKEN_MASKED),
                "{case}\n{}",
                outcome.stderr
            );
        }
    }
}

// SPEC 5: the info line.

#[test]
fn info_line_names_masked_credential_license_dates_and_origin() {
    let rig = Rig::knowing_token();

    let online = rig.run(|c| {
        c.env("LOCALSTACK_AUTH_TOKEN", TOKEN);
    });
    let cached = rig.run(|c| {
        c.env("LOCALSTACK_AUTH_TOKEN", TOKEN);
    });

    assert_eq!(online.code(), Some(0), "{}", online.stderr);
    assert_eq!(cached.code(), Some(0), "{}", cached.stderr);
    assert_eq!(rig.server.request_count(), 1);
    let license = rig.cached_license();
    let field = |key: &str| license[key].as_str().unwrap().to_string();
    let from_cache = format!("from {}", rig.cache_file().display());
    for (outcome, origin) in [(&online, "online"), (&cached, from_cache.as_str())] {
        let lines: Vec<&str> = lines_at(&outcome.stderr, "INFO")
            .into_iter()
            .filter(|l| l.contains("activated"))
            .collect();
        assert_eq!(lines.len(), 1, "{}", outcome.stderr);
        let line = lines[0];
        for part in [
            format!("LOCALSTACK_AUTH_TOKEN={TOKEN_MASKED}"),
            field("id"),
            format!("({})", field("license_type")),
            format!("valid until {}", field("expiry_date")),
            format!("re-activate after {}", field("reactivate_after")),
            format!(", {origin},"),
            " ms".to_string(),
        ] {
            assert!(line.contains(&part), "{part:?} missing from\n{line}");
        }
        let logger = outcome
            .stderr
            .lines()
            .find(|l| l.contains("activated LocalStack Pro"));
        assert!(
            logger.is_some_and(|l| l.contains("lsinit.licensing")),
            "{}",
            outcome.stderr
        );
    }
}

// SPEC 9: the emulator's exit status becomes lsinit's. ACTIVATE_PRO=0 without credentials
// reaches the emulator without any request.

/// lsinit in community mode running `script` with `sh -c`, `$0` being a marker path.
fn run_emulator_script(rig: &Rig, script: &str) -> (Outcome, PathBuf) {
    let marker = rig.sandbox.scratch().join("started");
    let mut command = rig
        .sandbox
        .command(["sh", "-c", script, marker.to_str().unwrap()]);
    command
        .env("API_ENDPOINT", rig.server.url())
        .env("ACTIVATE_PRO", "0");
    (run(&mut command, LIMIT), marker)
}

#[test]
fn emulator_exit_code_becomes_lsinit_exit_code() {
    for code in [0, 1, 55, 255] {
        let rig = Rig::new();

        let (outcome, marker) = run_emulator_script(&rig, &format!(": > \"$0\"; exit {code}"));

        assert_eq!(outcome.code(), Some(code), "{}", outcome.stderr);
        assert!(marker.exists(), "exit {code}: the emulator never started");
        assert_eq!(rig.server.request_count(), 0);
    }
}

#[test]
fn emulator_killed_by_a_signal_gives_128_plus_its_number() {
    let rig = Rig::new();

    let (outcome, marker) = run_emulator_script(&rig, ": > \"$0\"; kill -KILL $$");

    assert_eq!(outcome.code(), Some(128 + 9), "{}", outcome.stderr);
    assert!(marker.exists(), "the emulator never started");
}

#[test]
fn emulator_that_is_not_executable_gives_126_and_one_line_naming_it() {
    let rig = Rig::new();
    let program = rig.sandbox.scratch().join("not-executable");
    fs::write(&program, "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(&program, fs::Permissions::from_mode(0o644)).unwrap();
    let mut command = rig.sandbox.command([&program]);
    command
        .env("API_ENDPOINT", rig.server.url())
        .env("ACTIVATE_PRO", "0");

    let outcome = run(&mut command, LIMIT);

    assert_eq!(outcome.code(), Some(126), "{}", outcome.stderr);
    let path = program.display().to_string();
    let naming: Vec<&str> = outcome
        .stderr
        .lines()
        .filter(|l| l.contains(&path))
        .collect();
    assert_eq!(naming.len(), 1, "{}", outcome.stderr);
}

#[test]
fn missing_emulator_gives_127_and_one_line_naming_it() {
    let rig = Rig::new();
    let program = rig.sandbox.scratch().join("no-such-program");
    let mut command = rig.sandbox.command([&program]);
    command
        .env("API_ENDPOINT", rig.server.url())
        .env("ACTIVATE_PRO", "0");

    let outcome = run(&mut command, LIMIT);

    assert_eq!(outcome.code(), Some(127), "{}", outcome.stderr);
    let path = program.display().to_string();
    let naming: Vec<&str> = outcome
        .stderr
        .lines()
        .filter(|l| l.contains(&path))
        .collect();
    assert_eq!(naming.len(), 1, "{}", outcome.stderr);
}

// SPEC 1: TERM or INT during the activation.

/// Starts an activation that the server never answers, waits until the request is in, sends
/// `signal`, and checks the prompt exit with `expected` and that nothing was left behind.
fn assert_stops_during_activation(fault: Fault, signal: i32, expected: i32) {
    let rig = Rig::knowing_token();
    rig.server.push_fault(fault);
    let mut command = rig.command();
    command.env("LOCALSTACK_AUTH_TOKEN", TOKEN);
    let running = Running::start(&mut command);

    assert!(
        rig.server.wait_for_requests(1, LIMIT),
        "no request reached the server"
    );
    let signalled = Instant::now();
    running.signal(signal);
    let outcome = running.finish(LIMIT);

    assert_eq!(outcome.code(), Some(expected), "{}", outcome.stderr);
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "took {:?}",
        signalled.elapsed()
    );
    assert!(rig.emulator_env().is_none(), "the emulator started");
    assert_eq!(rig.server.request_count(), 1);
    // Nothing at all: no license, no temp file, and no machine.json (kept only once a request
    // has come back). <volume>/logs is the boot step's, before licensing.
    let left = names_in(&rig.sandbox.volume().join("cache"));
    assert!(left.is_empty(), "left in the cache: {left:?}");
}

#[test]
fn term_during_a_retry_after_wait_exits_143_at_once_leaving_nothing() {
    let rig = Rig::knowing_token();
    rig.server.push_fault(Fault::Status {
        status: 429,
        body: String::new(),
        headers: vec![("Retry-After".into(), "20".into())],
    });
    let mut command = rig.command();
    command
        .env("LOCALSTACK_AUTH_TOKEN", TOKEN)
        .env("LSINIT_ACTIVATION_TIMEOUT", "60");
    let running = Running::start(&mut command);
    assert!(
        rig.server.wait_for_requests(1, LIMIT),
        "no request reached the server"
    );

    // The 429 came back; lsinit now waits 20 s before its second attempt.
    let signalled = Instant::now();
    running.signal(libc::SIGTERM);
    let outcome = running.finish(LIMIT);

    assert_eq!(outcome.code(), Some(143), "{}", outcome.stderr);
    assert!(
        signalled.elapsed() < Duration::from_secs(3),
        "took {:?}",
        signalled.elapsed()
    );
    assert_eq!(rig.server.request_count(), 1, "the wait was not cut short");
    assert!(rig.emulator_env().is_none(), "the emulator started");
    assert!(!rig.cache_file().exists());
    let left = names_in(&rig.sandbox.volume().join("cache"));
    assert!(
        left.iter().all(|name| name == "machine.json"),
        "left in the cache: {left:?}"
    );
}

#[test]
fn supervisor_command_is_the_emulator_when_no_command_is_given() {
    let rig = Rig::new();
    let marker = rig.sandbox.scratch().join("ran");
    let mut command = rig.sandbox.command(Vec::<&str>::new());
    command.env("ACTIVATE_PRO", "0").env(
        "LOCALSTACK_SUPERVISOR_COMMAND",
        format!(
            "sh -c 'echo \"$1 $ACTIVATE_PRO\" > \"$0\"' '{}' 'from the variable'",
            marker.display()
        ),
    );

    let outcome = run(&mut command, LIMIT);

    assert_eq!(outcome.code(), Some(0), "{}", outcome.stderr);
    assert_eq!(
        fs::read_to_string(&marker).unwrap(),
        "from the variable 0\n"
    );
}

#[test]
fn term_during_a_stalled_activation_exits_143_promptly_leaving_nothing() {
    assert_stops_during_activation(Fault::Stall(Duration::from_secs(60)), libc::SIGTERM, 143);
}

#[test]
fn int_during_an_unanswered_activation_exits_130_promptly_leaving_nothing() {
    assert_stops_during_activation(Fault::NoAnswer, libc::SIGINT, 130);
}

#[test]
fn term_during_an_unanswered_activation_exits_143_promptly_leaving_nothing() {
    assert_stops_during_activation(Fault::NoAnswer, libc::SIGTERM, 143);
}
