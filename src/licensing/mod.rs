//! License activation (SPEC 3–5): from the credentials in the settings to an [`Activation`],
//! and from an activation and `ACTIVATE_PRO` to the [`Edition`] the emulator starts in.
//!
//! The submodules own the parts: `credential` (trimming, checks, masking), `document` (format
//! and signature), `cache` (files on disk), `client` (the network). This file owns the order of
//! the steps and what is logged about them.

pub mod cache;
pub mod client;
pub mod credential;
pub mod document;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use time::OffsetDateTime;

use self::client::{Call, Client, Machine, RequestError};
use self::credential::{Credential, CredentialKind, Secret};
use self::document::{Invalid, License};
use crate::config::Settings;

/// A license issued further in the future than this means the clock is wrong.
const CLOCK_SKEW_TOLERANCE: time::Duration = time::Duration::minutes(5);

/// Where the active license came from.
#[derive(Clone, Debug)]
pub enum LicenseSource {
    /// The credential `test`: development mode, no license.
    TestCredential,
    /// A valid license file; no request was made.
    Cached(PathBuf),
    /// A stale license re-activated through `/license/activate`.
    Reactivated,
    /// A new license from `/license/request`.
    Requested,
}

/// The result of the activation steps.
#[derive(Debug)]
pub enum Activation {
    Active {
        license: Option<Box<License>>,
        kind: CredentialKind,
        masked: String,
        source: LicenseSource,
    },
    Failed(Failure),
}

/// Why there is no active license, in words meant for the user.
#[derive(Clone, Debug)]
pub struct Failure {
    pub reason: String,
    /// No credential at all: not an issue when `ACTIVATE_PRO` is off.
    pub no_credentials: bool,
}

impl Failure {
    fn new(reason: impl Into<String>) -> Failure {
        Failure {
            reason: reason.into(),
            no_credentials: false,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// The edition the emulator starts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edition {
    Pro,
    Community,
}

impl Edition {
    /// The value of `ACTIVATE_PRO` in the emulator's environment.
    pub fn activate_pro_value(self) -> &'static str {
        match self {
            Edition::Pro => "1",
            Edition::Community => "0",
        }
    }
}

/// Runs the activation algorithm of SPEC 3.2 and logs its outcome. Blocking; the caller runs it
/// off the thread that reads signals.
pub fn activate(settings: &Settings) -> Activation {
    let started = Instant::now();
    let activation = match activate_steps(settings) {
        Ok(active) => active,
        Err(failure) => return Activation::Failed(failure),
    };
    if let Activation::Active {
        license: Some(license),
        kind,
        masked,
        source,
    } = &activation
    {
        let origin = match source {
            LicenseSource::Cached(path) => format!("from {}", path.display()),
            LicenseSource::Reactivated => "re-activated online".to_string(),
            LicenseSource::Requested => "online".to_string(),
            // The test credential has no license, so this line is never reached for it.
            LicenseSource::TestCredential => "without activation".to_string(),
        };
        log::info!(
            "activated LocalStack Pro with {}={masked}: license {} ({}), valid until {}, \
             re-activate after {}, {origin}, in {} ms",
            kind.variable(),
            license.id,
            license.license_type,
            license.expiry_date,
            license.reactivate_after,
            started.elapsed().as_millis()
        );
    }
    activation
}

fn activate_steps(settings: &Settings) -> Result<Activation, Failure> {
    let credential = choose_credential(settings)?;
    let masked = credential.secret.masked();
    if credential.is_test() {
        log::info!(
            "using the test license ({}=test): no activation",
            credential.kind.variable()
        );
        return Ok(Activation::Active {
            license: None,
            kind: credential.kind,
            masked,
            source: LicenseSource::TestCredential,
        });
    }
    credential
        .check_format()
        .map_err(|e| Failure::new(e.to_string()))?;
    let version = runtime_version(settings)?;
    let active = |license, source| Activation::Active {
        license: Some(Box::new(license)),
        kind: credential.kind,
        masked: masked.clone(),
        source,
    };

    let now = OffsetDateTime::now_utc();
    let mut stale: Option<License> = None;
    for path in cache::read_locations(&settings.roots) {
        let Some(license) = read_license(&path) else {
            continue;
        };
        match license.check(&credential.secret, &version, now) {
            Ok(()) => {
                warn_if_clock_is_wrong(settings, &license, now);
                return Ok(active(license, LicenseSource::Cached(path)));
            }
            Err(Invalid::Stale { since }) => {
                log::debug!(
                    "found {}, but it needs re-activation since {since}",
                    path.display()
                );
                stale.get_or_insert(license);
            }
            Err(why) => log::debug!("found {}, but {why}, thus not using it", path.display()),
        }
    }

    let mut client = Client::new(settings).map_err(|e| Failure::new(e.to_string()))?;
    let mut machine_id = cache::machine_id(&settings.roots);
    let machine = Machine {
        id: machine_id.id.clone(),
        ci: settings.ci,
    };
    if let Some(license) = stale {
        let since = license.reactivate_after.canonical();
        warn_issue(
            settings,
            format_args!(
                "the cached license {} needs re-activation since {since}",
                license.id
            ),
        );
        let call = Call::Activate {
            license_id: &license.id,
        };
        let answer = client.call(call, &credential, &version, &machine);
        cache::keep_machine_id(&settings.roots, &mut machine_id);
        match answer {
            Ok(document) => {
                let license = accept(document, &credential, &version, client.endpoint(), settings)?;
                return Ok(active(license, LicenseSource::Reactivated));
            }
            Err(RequestError::Rejected { code, .. }) => {
                log::debug!(
                    "re-activation of {} was refused ({code}), thus requesting",
                    license.id
                );
                forget_cached_license(settings, &credential.secret);
            }
            Err(e) => {
                return Err(Failure::new(format!(
                    "the license {} needs re-activation since {since}, and re-activation failed: \
                     {e}",
                    license.id
                )));
            }
        }
    }
    let answer = client.call(Call::Request, &credential, &version, &machine);
    cache::keep_machine_id(&settings.roots, &mut machine_id);
    match answer {
        Ok(document) => {
            let license = accept(document, &credential, &version, client.endpoint(), settings)?;
            Ok(active(license, LicenseSource::Requested))
        }
        Err(error) => {
            if matches!(error, RequestError::Rejected { .. }) {
                forget_cached_license(settings, &credential.secret);
            }
            Err(Failure::new(format!(
                "activation with {} failed: {error}",
                credential.kind.variable()
            )))
        }
    }
}

/// SPEC 3.1: exactly one credential, or none.
fn choose_credential(settings: &Settings) -> Result<Credential, Failure> {
    let input = &settings.credentials;
    match (&input.auth_token, &input.api_key) {
        (Some(_), Some(_)) => Err(Failure::new(
            "specify either LOCALSTACK_AUTH_TOKEN or LOCALSTACK_API_KEY, not both",
        )),
        (Some(secret), None) => Ok(credential(CredentialKind::AuthToken, secret)),
        (None, Some(secret)) => Ok(credential(CredentialKind::ApiKey, secret)),
        (None, None) => Err(Failure {
            reason: "no credentials found; set LOCALSTACK_AUTH_TOKEN".to_string(),
            no_credentials: true,
        }),
    }
}

fn credential(kind: CredentialKind, secret: &Secret) -> Credential {
    Credential {
        kind,
        secret: secret.clone(),
    }
}

/// A license from the server: keys outside format "1" dropped, stamped with the runtime version,
/// validated, then cached. A failed write only costs a request next time.
fn accept(
    document: Value,
    credential: &Credential,
    version: &str,
    endpoint: &str,
    settings: &Settings,
) -> Result<License, Failure> {
    let unusable = |why: String, fix: &str| {
        Failure::new(format!(
            "{endpoint} sent a license that cannot be used: {why}; {fix}"
        ))
    };
    const SERVER_FIX: &str =
        "this is a problem on the server's side or in a proxy between, try again later";
    let (license, dropped) = License::from_server(document, version)
        .map_err(|e| unusable(format!("it {e}"), SERVER_FIX))?;
    if !dropped.is_empty() {
        log::debug!(
            "dropped keys outside license format 1: {}",
            dropped.join(", ")
        );
    }
    let now = OffsetDateTime::now_utc();
    // A license issued a moment ago that looks expired or stale says more about this clock
    // than about the server.
    warn_if_clock_is_wrong(settings, &license, now);
    license
        .check(&credential.secret, version, now)
        .map_err(|e| {
            let fix = match &e {
                Invalid::Expired { .. } | Invalid::Stale { .. } => format!(
                    "if this container's clock ({}) is wrong, fix the host's clock; else contact \
                 LocalStack support",
                    document::Date::now_canonical(now)
                ),
                Invalid::Product { .. } | Invalid::RuntimeVersion { .. } => format!(
                    "your plan does not cover LocalStack {version}; use a covered version or check \
                 the plan in the LocalStack web app"
                ),
                Invalid::Status(_) => {
                    "check the subscription's state in the LocalStack web app".to_string()
                }
                Invalid::Format(_) | Invalid::Signature => SERVER_FIX.to_string(),
            };
            unusable(e.to_string(), &fix)
        })?;

    let path = cache::cached_license_path(&settings.roots);
    if let Err(e) = cache::write_atomically(&path, &license.to_bytes(), 0o600) {
        warn_issue(
            settings,
            format_args!(
                "cannot cache the license in {}: {e}; the next start will activate again, make \
                 that folder writable to avoid it",
                path.display()
            ),
        );
    }
    Ok(license)
}

/// SPEC 3.2 step 6: after a rejection, delete the cached license if it belongs to this credential,
/// so that a renewed plan is picked up on the next start.
fn forget_cached_license(settings: &Settings, key: &Secret) {
    let path = cache::cached_license_path(&settings.roots);
    let Some(license) = read_license(&path) else {
        return;
    };
    if !license.signature_matches(key) {
        return;
    }
    match cache::remove(&path) {
        Ok(()) => log::debug!("removed {} after the rejection", path.display()),
        Err(e) => warn_issue(
            settings,
            format_args!("cannot remove the rejected license {}: {e}", path.display()),
        ),
    }
}

/// Reads and parses a license file; anything unusable is a debug line and `None`.
fn read_license(path: &Path) -> Option<License> {
    match cache::read_small_file(path) {
        Ok(None) => None,
        Ok(Some(bytes)) => match License::from_disk(&bytes) {
            Ok(license) => Some(license),
            Err(why) => {
                log::debug!("found {}, but it {why}, thus not using it", path.display());
                None
            }
        },
        Err(e) => {
            log::debug!("cannot read {}: {e}, thus not using it", path.display());
            None
        }
    }
}

fn warn_if_clock_is_wrong(settings: &Settings, license: &License, now: OffsetDateTime) {
    if license.issue_date.at > now + CLOCK_SKEW_TOLERANCE {
        warn_issue(
            settings,
            format_args!(
                "the license {} was issued on {}, which is in the future: this container's \
                 clock looks wrong, and licenses may expire early or late",
                license.id, license.issue_date
            ),
        );
    }
}

/// A licensing warning; `LOG_LICENSE_ISSUES=0` turns it into a debug line (SPEC 2).
fn warn_issue(settings: &Settings, message: fmt::Arguments<'_>) {
    if settings.log_license_issues {
        log::warn!("{message}");
    } else {
        log::debug!("{message}");
    }
}

/// The restart hook (SPEC 6): when the license the emulator runs with has passed its
/// `reactivate_after`, activate again before the new emulator starts. Nothing happens without a
/// license (community edition, test credential), so a restart never costs a request then. A
/// failure is a warning: the new emulator starts anyway and the runtime decides.
pub fn reactivation_hook(
    settings: Arc<Settings>,
    activation: &Activation,
) -> Arc<dyn Fn() + Send + Sync> {
    let stale_after = Mutex::new(reactivate_after(activation));
    Arc::new(move || {
        let mut stale_after = stale_after.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(since) = *stale_after else {
            return;
        };
        if OffsetDateTime::now_utc() < since {
            log::debug!("the license is good until {since}, thus not re-activating it");
            return;
        }
        log::info!(
            "the license needs re-activation since {since}: re-activating before the restart"
        );
        match activate(&settings) {
            Activation::Failed(failure) => warn_issue(
                &settings,
                format_args!(
                    "cannot re-activate the license ({failure}); starting the emulator anyway, \
                     the runtime decides whether it runs as pro"
                ),
            ),
            // `activate` logged the outcome; the next restart checks the new date.
            active => *stale_after = reactivate_after(&active),
        }
    })
}

/// When the active license needs re-activation; `None` without one.
fn reactivate_after(activation: &Activation) -> Option<OffsetDateTime> {
    match activation {
        Activation::Active {
            license: Some(license),
            ..
        } => Some(license.reactivate_after.at),
        _ => None,
    }
}

/// SPEC 3.4: `LOCALSTACK_BUILD_VERSION`, else the installed `localstack-core` package's version.
pub fn runtime_version(settings: &Settings) -> Result<String, Failure> {
    let (version, source) = match &settings.build_version {
        Some(version) => (version.clone(), "LOCALSTACK_BUILD_VERSION".to_string()),
        None => {
            let version = installed_core_version(&settings.roots.venv).ok_or_else(|| {
                Failure::new(format!(
                    "cannot tell the LocalStack runtime version (no localstack-core package in \
                     {}); set LOCALSTACK_BUILD_VERSION",
                    settings.roots.venv.display()
                ))
            })?;
            (
                version,
                format!(
                    "the localstack-core package in {}",
                    settings.roots.venv.display()
                ),
            )
        }
    };
    // Licenses are matched on major.minor: without both, every license would be refused after
    // its request was paid for.
    let mut parts = version.split('.');
    let two_parts =
        parts.next().is_some_and(|p| !p.is_empty()) && parts.next().is_some_and(|p| !p.is_empty());
    let printable = version.len() <= 64 && !version.chars().any(char::is_control);
    if !(two_parts && printable) {
        return Err(Failure::new(format!(
            "the LocalStack runtime version {version:?} from {source} has no major.minor form; \
             set LOCALSTACK_BUILD_VERSION to a version such as 4.14.0"
        )));
    }
    Ok(version)
}

fn installed_core_version(venv: &Path) -> Option<String> {
    let lib = std::fs::read_dir(venv.join("lib")).ok()?;
    for python in lib.flatten() {
        let Ok(packages) = std::fs::read_dir(python.path().join("site-packages")) else {
            continue;
        };
        for entry in packages.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let is_core = (name.starts_with("localstack_core-")
                || name.starts_with("localstack-core-"))
                && name.ends_with(".dist-info");
            if !is_core {
                continue;
            }
            // Bounded and non-blocking: a FIFO or /dev/zero in its place must not hang the start.
            let Ok(Some(bytes)) = cache::read_small_file(&entry.path().join("METADATA")) else {
                continue;
            };
            return String::from_utf8_lossy(&bytes)
                .lines()
                .find_map(|line| line.strip_prefix("Version:"))
                .map(|v| v.trim().to_string());
        }
    }
    None
}

/// Applies `ACTIVATE_PRO` (SPEC 4) and logs accordingly: the edition to start, or `None` when
/// lsinit must exit 55.
pub fn enforce(settings: &Settings, activation: &Activation) -> Option<Edition> {
    let Activation::Failed(failure) = activation else {
        return Some(Edition::Pro);
    };
    if settings.activate_pro {
        if settings.log_license_issues {
            log::error!("the LocalStack license could not be activated: {failure}");
            log::error!(
                "an active license is needed to start LocalStack Pro: fix the above, or set \
                 ACTIVATE_PRO=0 to start the community edition instead"
            );
            log::error!("exiting with status 55");
        } else {
            log::error!("license activation failed, exiting with status 55: {failure}");
        }
        return None;
    }
    if failure.no_credentials {
        log::debug!("no credentials and ACTIVATE_PRO=0, thus starting the community edition");
    } else if settings.log_license_issues {
        log::warn!(
            "starting the community edition, as the license could not be activated: {failure}"
        );
    }
    Some(Edition::Community)
}

/// Prints `lsinit check`'s report (SPEC 3.7) on stdout; true when a license is active.
pub fn report(activation: &Activation, elapsed: Duration) -> bool {
    use std::fmt::Write as _;
    let mut text = String::new();
    // Writing to a String cannot fail.
    let active = match activation {
        Activation::Active {
            license,
            kind,
            masked,
            source,
        } => {
            let _ = writeln!(text, "edition: pro");
            let _ = writeln!(text, "credential: {}={masked}", kind.variable());
            if let Some(license) = license {
                let _ = writeln!(text, "license: {} ({})", license.id, license.license_type);
                let _ = writeln!(text, "issued: {}", license.issue_date);
                let _ = writeln!(text, "valid until: {}", license.expiry_date);
                let _ = writeln!(text, "re-activate after: {}", license.reactivate_after);
            }
            let origin = match source {
                LicenseSource::TestCredential => "test credential, no activation".to_string(),
                LicenseSource::Cached(path) => format!("cached license {}", path.display()),
                LicenseSource::Reactivated => "re-activated online".to_string(),
                LicenseSource::Requested => "requested online".to_string(),
            };
            let _ = writeln!(text, "source: {origin}");
            let _ = writeln!(text, "took: {} ms", elapsed.as_millis());
            true
        }
        Activation::Failed(failure) => {
            let _ = writeln!(text, "edition: none (license activation failed)");
            let _ = writeln!(text, "reason: {failure}");
            let _ = writeln!(
                text,
                "fix: follow the reason above; with ACTIVATE_PRO=0 LocalStack would start as the \
                 community edition"
            );
            false
        }
    };
    // println! would panic on a closed stdout (`lsinit check | head -1`); the status still counts.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
    active
}
