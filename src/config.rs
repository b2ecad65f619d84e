//! The container's environment, read once into validated [`Settings`].
//!
//! Owns SPEC sections 2 and 7's prefix mapping: boolean parsers, durations, filesystem roots, the
//! `LOCALSTACK_<NAME>` → `<NAME>` mapping. Problems that only matter to licensing (a bad proxy
//! URL, an unreadable CA bundle) are kept as given and judged by the licensing module, because
//! SPEC 3.6 makes them licensing failures rather than setup errors.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;

use crate::licensing::credential::{CredentialKind, Secret};

/// The licensing API used when neither `API_ENDPOINT` nor `LOCALSTACK_API_ENDPOINT` is set.
pub const DEFAULT_API_ENDPOINT: &str = "https://api.localstack.cloud/v1";

/// Variables that name a proxy, in the order in which the first one set wins.
const PROXY_VARIABLES: [&str; 5] = [
    "OUTBOUND_HTTPS_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
];

/// Variables that name extra trusted CA certificates (PEM), all of them used.
const CA_VARIABLES: [&str; 4] = [
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// Names that `LOCALSTACK_<NAME>` may never override: they change how every program in the
/// container is found or started.
const PROTECTED_NAMES: [&str; 8] = [
    "PATH",
    "HOME",
    "IFS",
    "SHELL",
    "ENV",
    "BASH_ENV",
    "PYTHONHOME",
    "PYTHONPATH",
];

/// The longest time any setting may name: far beyond any real use, and small enough that a
/// deadline computed from it can never overflow the clock.
const MAX_SECONDS: Duration = Duration::from_secs(1_000_000);

/// The shortest network timeout: below a millisecond nothing could ever connect.
const MIN_TIMEOUT: Duration = Duration::from_millis(1);

/// The environment as a name → value map; values are kept verbatim as the OS gave them.
#[derive(Clone, Default)]
pub struct Environment {
    vars: BTreeMap<OsString, OsString>,
}

impl Environment {
    pub fn from_vars(vars: impl IntoIterator<Item = (OsString, OsString)>) -> Environment {
        Environment {
            vars: vars.into_iter().collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&OsStr> {
        self.vars.get(OsStr::new(name)).map(OsString::as_os_str)
    }

    /// The value as UTF-8; a value that is not UTF-8 counts as unset for settings.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(OsStr::to_str)
    }

    pub fn set(&mut self, name: impl Into<OsString>, value: impl Into<OsString>) {
        self.vars.insert(name.into(), value.into());
    }

    pub fn remove(&mut self, name: &str) {
        self.vars.remove(OsStr::new(name));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&OsString, &OsString)> {
        self.vars.iter()
    }
}

// Values of the environment may hold secrets: never print them.
impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Environment({} variables)", self.vars.len())
    }
}

/// A URL from the environment that may carry `user:password@`. Formatting it in any way
/// prints the userinfo masked; [`UrlSetting::expose`] is for the HTTP client only.
#[derive(Clone, PartialEq, Eq)]
pub struct UrlSetting(String);

impl UrlSetting {
    pub fn new(url: impl Into<String>) -> UrlSetting {
        UrlSetting(url.into())
    }

    /// Only for handing the URL to the HTTP client.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any userinfo replaced by `****`.
    pub fn redacted(&self) -> String {
        redact_url_password(&self.0)
    }
}

impl fmt::Debug for UrlSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for UrlSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Where a proxy came from, so that messages can name the variable.
#[derive(Clone)]
pub struct ProxySetting {
    pub variable: &'static str,
    pub url: UrlSetting,
}

impl ProxySetting {
    /// The URL with any password replaced by `****`.
    pub fn redacted(&self) -> String {
        self.url.redacted()
    }
}

impl fmt::Debug for ProxySetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.variable, self.redacted())
    }
}

/// An extra CA certificate source named by one of [`CA_VARIABLES`].
#[derive(Clone, Debug)]
pub struct CaSource {
    pub variable: &'static str,
    pub path: PathBuf,
}

/// Network limits of the activation (SPEC 3.5).
#[derive(Clone, Debug)]
pub struct NetworkLimits {
    /// Defaults to 5 s (`LSINIT_CONNECT_TIMEOUT`).
    pub connect_timeout: Duration,
    /// Defaults to 10 s per request (`LSINIT_REQUEST_TIMEOUT`).
    pub request_timeout: Duration,
    /// Defaults to 30 s for the whole activation, retries included (`LSINIT_ACTIVATION_TIMEOUT`).
    pub activation_timeout: Duration,
    /// Defaults to 5 (`LSINIT_MAX_ATTEMPTS`).
    pub max_attempts: u32,
}

/// Filesystem roots, relocatable for tests and unusual images.
#[derive(Clone, Debug)]
pub struct Roots {
    /// Defaults to `/var/lib/localstack` (`LSINIT_VOLUME_DIR`).
    pub volume: PathBuf,
    /// Defaults to `/etc/localstack` (`LSINIT_CONFIG_DIR`).
    pub config: PathBuf,
    /// Defaults to `/usr/lib/localstack` (`LSINIT_STATIC_DIR`).
    pub static_files: PathBuf,
    /// Defaults to `/opt/code/localstack/.venv` (`LSINIT_VENV_DIR`).
    pub venv: PathBuf,
}

/// The credentials as the user gave them, trimmed (SPEC 3.1); judged by licensing.
#[derive(Clone, Debug, Default)]
pub struct CredentialInput {
    pub auth_token: Option<Secret>,
    pub api_key: Option<Secret>,
}

/// Everything lsinit needs to know from its environment, checked once.
#[derive(Debug)]
pub struct Settings {
    pub credentials: CredentialInput,
    /// On-unless-false: a licensing failure is fatal (exit 55).
    pub activate_pro: bool,
    /// Whether `ACTIVATE_PRO` was given at all, as the emulator must see what the user set.
    pub activate_pro_raw: Option<OsString>,
    /// On-unless-false: off silences licensing warnings and the failure banner.
    pub log_license_issues: bool,
    /// Base URL of the licensing API, without a trailing slash.
    pub api_endpoint: UrlSetting,
    pub proxy: Option<ProxySetting>,
    /// `no_proxy` (or `NO_PROXY`) entries, trimmed, empty ones dropped.
    pub no_proxy: Vec<String>,
    pub ca_sources: Vec<CaSource>,
    /// Off-unless-true: skip TLS verification.
    pub ssl_no_verify: bool,
    /// `CI` is set to any value.
    pub ci: bool,
    pub log_level: LevelFilter,
    /// Defaults to 5 s for the whole shutdown (`SHUTDOWN_TIMEOUT`).
    pub shutdown_timeout: Duration,
    /// `LOCALSTACK_SUPERVISOR_COMMAND`, split by shell word rules.
    pub supervisor_command: Option<Vec<String>>,
    /// `LOCALSTACK_BUILD_VERSION`, when set.
    pub build_version: Option<String>,
    pub limits: NetworkLimits,
    pub roots: Roots,
    /// The environment after the `LOCALSTACK_` prefix mapping: the emulator's starting point.
    pub environment: Environment,
    /// Problems worth a warning, logged once the logger exists.
    pub warnings: Vec<String>,
}

/// A setting so wrong that lsinit cannot start (exit 1).
#[derive(Debug)]
pub enum ConfigError {
    SupervisorCommand { reason: &'static str },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::SupervisorCommand { reason } => write!(
                f,
                "LOCALSTACK_SUPERVISOR_COMMAND {reason}; give a command line such as \
                 \"python -m localstack.runtime.main\", or unset it for the default"
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Settings {
    /// Reads the settings from an environment (the process's, or a test's).
    pub fn from_environment(raw: Environment) -> Result<Settings, ConfigError> {
        let mut warnings = Vec::new();
        let env = map_prefixed(&raw, &mut warnings);
        let mut read = Reader {
            env: &env,
            warnings: &mut warnings,
        };

        let credentials = CredentialInput {
            auth_token: raw
                .get("LOCALSTACK_AUTH_TOKEN")
                .and_then(|v| Secret::from_env_value(CredentialKind::AuthToken, v)),
            api_key: raw
                .get("LOCALSTACK_API_KEY")
                .and_then(|v| Secret::from_env_value(CredentialKind::ApiKey, v)),
        };
        let activate_pro = read.on_unless_false("ACTIVATE_PRO");
        let log_license_issues = read.on_unless_false("LOG_LICENSE_ISSUES");
        let ssl_no_verify = read.off_unless_true("SSL_NO_VERIFY");
        if ssl_no_verify {
            // Part of the settings' warnings, so it is logged on every start, cached or not.
            read.warnings.push(
                "SSL_NO_VERIFY is on: the licensing server's certificate is not verified, so \
                 anyone in between can read the credential; trust your proxy's CA with \
                 REQUESTS_CA_BUNDLE instead"
                    .to_string(),
            );
        }
        let log_level = read.log_level();
        let api_endpoint = read
            .url("API_ENDPOINT")
            .map(|url| UrlSetting::new(url.expose().trim_end_matches('/')))
            .unwrap_or_else(|| UrlSetting::new(DEFAULT_API_ENDPOINT));
        let proxy = PROXY_VARIABLES.iter().find_map(|&variable| {
            Some(ProxySetting {
                variable,
                url: read.url(variable)?,
            })
        });
        let no_proxy = env
            .get_str("no_proxy")
            .or_else(|| env.get_str("NO_PROXY"))
            .map(split_list)
            .unwrap_or_default();
        let ca_sources = CA_VARIABLES
            .iter()
            .filter_map(|&variable| {
                let path = read.non_empty(variable)?;
                Some(CaSource {
                    variable,
                    path: PathBuf::from(path),
                })
            })
            .collect();
        let shutdown_timeout = read.seconds("SHUTDOWN_TIMEOUT", 5.0, true);
        let limits = NetworkLimits {
            connect_timeout: read.seconds("LSINIT_CONNECT_TIMEOUT", 5.0, false),
            request_timeout: read.seconds("LSINIT_REQUEST_TIMEOUT", 10.0, false),
            activation_timeout: read.seconds("LSINIT_ACTIVATION_TIMEOUT", 30.0, false),
            max_attempts: read.count("LSINIT_MAX_ATTEMPTS", 5),
        };
        let roots = Roots {
            volume: read.path("LSINIT_VOLUME_DIR", "/var/lib/localstack"),
            config: read.path("LSINIT_CONFIG_DIR", "/etc/localstack"),
            static_files: read.path("LSINIT_STATIC_DIR", "/usr/lib/localstack"),
            venv: read.path("LSINIT_VENV_DIR", "/opt/code/localstack/.venv"),
        };
        let supervisor_command = supervisor_command(&raw)?;
        let build_version = read
            .non_empty("LOCALSTACK_BUILD_VERSION")
            .map(str::to_string);

        Ok(Settings {
            credentials,
            activate_pro,
            activate_pro_raw: env.get("ACTIVATE_PRO").map(OsStr::to_os_string),
            log_license_issues,
            api_endpoint,
            proxy,
            no_proxy,
            ca_sources,
            ssl_no_verify,
            ci: raw.get("CI").is_some(),
            log_level,
            shutdown_timeout,
            supervisor_command,
            build_version,
            limits,
            roots,
            environment: env,
            warnings,
        })
    }
}

/// Reads typed values and records a warning for each value it had to ignore.
struct Reader<'a> {
    env: &'a Environment,
    warnings: &'a mut Vec<String>,
}

impl Reader<'_> {
    /// The trimmed value, `None` when unset, blank or not UTF-8.
    fn non_empty(&self, name: &str) -> Option<&str> {
        self.env
            .get_str(name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
    }

    /// A URL-valued setting. A value that is not UTF-8 is kept with replacement characters, so
    /// that it fails as a bad URL naming its variable instead of silently counting as unset.
    fn url(&self, name: &str) -> Option<UrlSetting> {
        let value = self.env.get(name)?.to_string_lossy();
        let value = value.trim();
        (!value.is_empty()).then(|| UrlSetting::new(value))
    }

    fn on_unless_false(&mut self, name: &str) -> bool {
        self.boolean(name, true)
    }

    fn off_unless_true(&mut self, name: &str) -> bool {
        self.boolean(name, false)
    }

    /// Upstream's two boolean parsers: `default` is what any value other than the explicit
    /// opposite means; an unrecognised spelling keeps that result and earns a warning.
    fn boolean(&mut self, name: &str, default: bool) -> bool {
        let Some(raw) = self.env.get(name) else {
            return default;
        };
        let value = raw.to_string_lossy().trim().to_ascii_lowercase();
        match value.as_str() {
            "" => default,
            "1" | "true" => true,
            "0" | "false" => false,
            _ => {
                self.warnings.push(format!(
                    "{name}={:?} is not a recognised boolean, treating it as {}; use 1/true or \
                     0/false",
                    raw.to_string_lossy(),
                    if default { "on" } else { "off" }
                ));
                default
            }
        }
    }

    /// `LS_LOG` overrides `DEBUG`; the default is info.
    fn log_level(&mut self) -> LevelFilter {
        let debug = if self.off_unless_true("DEBUG") {
            LevelFilter::Debug
        } else {
            LevelFilter::Info
        };
        let Some(value) = self.non_empty("LS_LOG") else {
            return debug;
        };
        match value.to_ascii_lowercase().as_str() {
            "trace" | "trace-internal" => LevelFilter::Trace,
            "debug" => LevelFilter::Debug,
            "info" => LevelFilter::Info,
            "warn" | "warning" => LevelFilter::Warn,
            "error" => LevelFilter::Error,
            other => {
                let other = other.to_string();
                self.warnings.push(format!(
                    "LS_LOG={other:?} is not a log level, using {debug}; use trace, debug, info, \
                     warn or error"
                ));
                debug
            }
        }
    }

    /// Decimal seconds; a bad value earns a warning and the default.
    fn seconds(&mut self, name: &str, default: f64, zero_allowed: bool) -> Duration {
        let fallback = Duration::from_secs_f64(default);
        let Some(value) = self.non_empty(name) else {
            return fallback;
        };
        let least = if zero_allowed {
            Duration::ZERO
        } else {
            MIN_TIMEOUT
        };
        match parse_seconds(value) {
            Some(d) if d >= least => d,
            _ => {
                let value = value.to_string();
                self.warnings.push(format!(
                    "{name}={value:?} is not a number of seconds from {} to {}, using {default}; \
                     give a decimal number such as 2.5",
                    least.as_secs_f64(),
                    MAX_SECONDS.as_secs()
                ));
                fallback
            }
        }
    }

    fn count(&mut self, name: &str, default: u32) -> u32 {
        let Some(value) = self.non_empty(name) else {
            return default;
        };
        match value.parse::<u32>() {
            Ok(n) if n >= 1 => n,
            _ => {
                let value = value.to_string();
                self.warnings.push(format!(
                    "{name}={value:?} is not a whole number of at least 1, using {default}"
                ));
                default
            }
        }
    }

    fn path(&self, name: &str, default: &str) -> PathBuf {
        match self.env.get(name) {
            Some(value) if !value.is_empty() => PathBuf::from(value),
            _ => PathBuf::from(default),
        }
    }
}

/// Parses non-negative, finite decimal seconds that fit a `Duration`.
pub fn parse_seconds(value: &str) -> Option<Duration> {
    let seconds: f64 = value.trim().parse().ok()?;
    if !seconds.is_finite() || seconds < 0.0 {
        return None;
    }
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| *d <= MAX_SECONDS)
}

/// Applies SPEC 7's mapping: each `LOCALSTACK_<NAME>=v` also sets `<NAME>=v`, overriding, except
/// for `LOCALSTACK_HOST*`, names with a digit right after the prefix, and protected names.
pub fn map_prefixed(raw: &Environment, warnings: &mut Vec<String>) -> Environment {
    let mut mapped = raw.clone();
    for (name, value) in raw.iter() {
        let Some(target) = name.to_str().and_then(|n| n.strip_prefix("LOCALSTACK_")) else {
            continue;
        };
        let skipped = target.is_empty()
            || target.starts_with("HOST")
            || target.starts_with(|c: char| c.is_ascii_digit());
        if skipped {
            continue;
        }
        if PROTECTED_NAMES.contains(&target) || target.starts_with("LD_") {
            warnings.push(format!(
                "LOCALSTACK_{target} is not copied to {target}: {target} decides how programs \
                 are found and started; set {target} itself if you really mean it"
            ));
            continue;
        }
        mapped.set(target, value.clone());
    }
    mapped
}

fn supervisor_command(raw: &Environment) -> Result<Option<Vec<String>>, ConfigError> {
    let Some(value) = raw.get("LOCALSTACK_SUPERVISOR_COMMAND") else {
        return Ok(None);
    };
    let Some(value) = value.to_str() else {
        return Err(ConfigError::SupervisorCommand {
            reason: "is not valid UTF-8",
        });
    };
    if value.trim().is_empty() {
        return Ok(None);
    }
    match shlex::split(value) {
        Some(words) if words.iter().any(String::is_empty) => Err(ConfigError::SupervisorCommand {
            reason: "holds an empty word",
        }),
        Some(words) if !words.is_empty() => Ok(Some(words)),
        Some(_) => Err(ConfigError::SupervisorCommand {
            reason: "holds no command",
        }),
        None => Err(ConfigError::SupervisorCommand {
            reason: "has unbalanced quotes",
        }),
    }
}

fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// `http://user:secret@proxy:3128` → `http://user:****@proxy:3128`.
///
/// The userinfo runs to the last `@`: a password may hold `/`, `?`, `#` or `@`, and masking a
/// path that happens to hold an `@` costs nothing. A userinfo without `:` is masked whole, as a
/// token may be given as the user name.
pub fn redact_url_password(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let masked = match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:****@{host}"),
            None => format!("****@{host}"),
        },
        None => rest.to_string(),
    };
    match scheme {
        Some(scheme) => format!("{scheme}://{masked}"),
        None => masked,
    }
}

/// Masks the userinfo of every `scheme://…@` word in free text (error bodies, library errors);
/// words are separated by spaces, and other text is left as it is.
pub fn redact_urls_in_text(text: &str) -> String {
    text.split(' ')
        .map(|word| match word.find("://") {
            Some(at) if word[at..].contains('@') => redact_url_password(word),
            _ => word.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Environment {
        Environment::from_vars(pairs.iter().map(|(k, v)| (k.into(), v.into())))
    }

    fn settings(pairs: &[(&str, &str)]) -> Settings {
        Settings::from_environment(env(pairs)).expect("valid settings")
    }

    #[test]
    fn booleans_follow_upstream_parsers() {
        for (value, on) in [
            ("", true),
            ("0", false),
            (" FALSE ", false),
            ("1", true),
            ("yes", true),
        ] {
            assert_eq!(
                settings(&[("ACTIVATE_PRO", value)]).activate_pro,
                on,
                "{value:?}"
            );
        }
        for (value, on) in [
            ("", false),
            ("1", true),
            ("True", true),
            ("0", false),
            ("on", false),
        ] {
            assert_eq!(
                settings(&[("SSL_NO_VERIFY", value)]).ssl_no_verify,
                on,
                "{value:?}"
            );
        }
        assert!(settings(&[]).activate_pro);
        assert!(!settings(&[]).ssl_no_verify);
    }

    #[test]
    fn unrecognised_boolean_warns_with_name_value_and_spellings() {
        let s = settings(&[("ACTIVATE_PRO", "no")]);
        assert!(s.activate_pro);
        assert_eq!(s.warnings.len(), 1);
        assert!(
            s.warnings[0].contains("ACTIVATE_PRO=\"no\""),
            "{}",
            s.warnings[0]
        );
        assert!(s.warnings[0].contains("1/true or 0/false"));
    }

    #[test]
    fn prefix_mapping_overrides_but_protects() {
        let s = settings(&[
            ("DEBUG", "0"),
            ("LOCALSTACK_DEBUG", "1"),
            ("LOCALSTACK_PATH", "/evil"),
            ("LOCALSTACK_LD_PRELOAD", "x.so"),
            ("LOCALSTACK_HOSTNAME", "h"),
            ("LOCALSTACK_1X", "y"),
            ("LOCALSTACK_API_ENDPOINT", "http://127.0.0.1:9/v1/"),
        ]);
        assert_eq!(s.environment.get_str("DEBUG"), Some("1"));
        assert_eq!(s.log_level, LevelFilter::Debug);
        assert_eq!(s.environment.get("PATH"), None);
        assert_eq!(s.environment.get("LD_PRELOAD"), None);
        assert_eq!(s.environment.get("HOSTNAME"), None);
        assert_eq!(s.environment.get("1X"), None);
        assert_eq!(s.api_endpoint.expose(), "http://127.0.0.1:9/v1");
        assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
    }

    #[test]
    fn mapped_values_are_verbatim() {
        let s = settings(&[("LOCALSTACK_FOO", "a\nBAR=b")]);
        assert_eq!(s.environment.get_str("FOO"), Some("a\nBAR=b"));
        assert_eq!(s.environment.get("BAR"), None);
    }

    #[test]
    fn first_proxy_variable_wins_and_http_proxy_is_ignored() {
        let s = settings(&[("HTTP_PROXY", "http://a:1"), ("ALL_PROXY", "http://b:2")]);
        assert_eq!(s.proxy.as_ref().map(|p| p.variable), Some("ALL_PROXY"));
        let s = settings(&[("HTTPS_PROXY", "http://c:3"), ("https_proxy", "http://d:4")]);
        assert_eq!(s.proxy.as_ref().map(|p| p.url.expose()), Some("http://d:4"));
        assert!(settings(&[("HTTP_PROXY", "http://a:1")]).proxy.is_none());
    }

    #[test]
    fn non_utf8_url_settings_stay_set_and_fail_as_urls() {
        use std::os::unix::ffi::OsStringExt;
        let bad = OsString::from_vec(b"http://127.0.0.1:1/v1\xff".to_vec());
        let s = Settings::from_environment(Environment::from_vars([("API_ENDPOINT".into(), bad)]))
            .unwrap();
        assert_eq!(s.api_endpoint.expose(), "http://127.0.0.1:1/v1\u{fffd}");
    }

    #[test]
    fn lower_case_no_proxy_wins() {
        let s = settings(&[("no_proxy", " a.com, ,b "), ("NO_PROXY", "c")]);
        assert_eq!(s.no_proxy, ["a.com", "b"]);
    }

    #[test]
    fn durations_fall_back_with_a_warning() {
        let s = settings(&[("SHUTDOWN_TIMEOUT", "2.5")]);
        assert_eq!(s.shutdown_timeout, Duration::from_millis(2500));
        for bad in ["-1", "abc", "inf", "NaN", "1e400"] {
            let s = settings(&[("SHUTDOWN_TIMEOUT", bad)]);
            assert_eq!(s.shutdown_timeout, Duration::from_secs(5), "{bad}");
            assert!(s.warnings[0].contains("SHUTDOWN_TIMEOUT"), "{bad}");
        }
        assert_eq!(
            settings(&[("SHUTDOWN_TIMEOUT", "0")]).shutdown_timeout,
            Duration::ZERO
        );
        // A deadline of now + 1e19 s would overflow the clock and panic.
        for huge in ["1e19", "1e7", "1000001"] {
            let s = settings(&[("SHUTDOWN_TIMEOUT", huge)]);
            assert_eq!(s.shutdown_timeout, Duration::from_secs(5));
        }
        let s = settings(&[("LSINIT_CONNECT_TIMEOUT", "1e-12")]);
        assert_eq!(s.limits.connect_timeout, Duration::from_secs(5));
        assert!(
            s.warnings[0].contains("from 0.001 to 1000000"),
            "{:?}",
            s.warnings
        );
        let s = settings(&[
            ("LSINIT_CONNECT_TIMEOUT", "0"),
            ("LSINIT_MAX_ATTEMPTS", "0"),
        ]);
        assert_eq!(s.limits.connect_timeout, Duration::from_secs(5));
        assert_eq!(s.limits.max_attempts, 5);
    }

    #[test]
    fn log_level_prefers_ls_log() {
        assert_eq!(
            settings(&[("DEBUG", "1"), ("LS_LOG", "warn")]).log_level,
            LevelFilter::Warn
        );
        assert_eq!(settings(&[("DEBUG", "1")]).log_level, LevelFilter::Debug);
        assert_eq!(settings(&[]).log_level, LevelFilter::Info);
    }

    #[test]
    fn supervisor_command_uses_shell_words() {
        let s = settings(&[("LOCALSTACK_SUPERVISOR_COMMAND", "sh -c 'echo \"a b\"'")]);
        assert_eq!(s.supervisor_command.unwrap(), ["sh", "-c", "echo \"a b\""]);
        let err = Settings::from_environment(env(&[("LOCALSTACK_SUPERVISOR_COMMAND", "sh 'x")]));
        assert!(err.unwrap_err().to_string().contains("unbalanced quotes"));
        let err = Settings::from_environment(env(&[("LOCALSTACK_SUPERVISOR_COMMAND", "\"\"")]));
        let err = err.unwrap_err().to_string();
        assert!(
            err.contains("LOCALSTACK_SUPERVISOR_COMMAND holds an empty word"),
            "{err}"
        );
    }

    #[test]
    fn proxy_password_is_redacted() {
        assert_eq!(
            redact_url_password("http://u:pw@h:3128/x"),
            "http://u:****@h:3128/x"
        );
        assert_eq!(redact_url_password("http://h:3128"), "http://h:3128");
        assert_eq!(redact_url_password("u:p@w@h:1"), "u:****@h:1");
        for password in ["p#ss", "p/ss", "p?ss", "p@ss", "p:ss"] {
            let url = format!("http://user:{password}@proxy:3128/x");
            let shown = redact_url_password(&url);
            assert_eq!(shown, "http://user:****@proxy:3128/x", "{password}");
        }
        assert_eq!(
            redact_url_password("https://tok3n@h/v1"),
            "https://****@h/v1"
        );
    }

    #[test]
    fn every_url_in_free_text_is_redacted_and_nothing_else() {
        let text = "via http://a:one@p:1 then https://b:two#x@q/ for support@example.com";
        let shown = redact_urls_in_text(text);
        assert!(
            !shown.contains("one") && !shown.contains("two#x"),
            "{shown}"
        );
        assert!(shown.ends_with("for support@example.com"), "{shown}");
    }

    #[test]
    fn ssl_no_verify_warns_whether_or_not_a_request_follows() {
        let s = settings(&[("SSL_NO_VERIFY", "1")]);
        assert!(
            s.warnings.iter().any(|w| w.contains("SSL_NO_VERIFY is on")),
            "{:?}",
            s.warnings
        );
        assert!(settings(&[("SSL_NO_VERIFY", "0")]).warnings.is_empty());
    }

    #[test]
    fn ci_counts_when_present_with_any_value() {
        assert!(settings(&[("CI", "")]).ci);
        assert!(settings(&[("CI", "false")]).ci);
        assert!(!settings(&[]).ci);
    }
}
