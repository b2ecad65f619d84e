//! One licensing request over HTTP (SPEC 3.5–3.6): the endpoint and proxy checks, the TLS roots,
//! the request body, the limits, retries with backoff, and the classification of every outcome
//! into rejected, broken or transient.
//!
//! Owns the network; what a license means is `document`'s business, what to do with the result
//! is `mod.rs`'s.

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use ureq::http::Uri;
use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

use super::credential::Credential;
use crate::config::{ProxySetting, Settings, redact_url_password};

/// Responses larger than this are not licenses.
const MAX_BODY_BYTES: u64 = 1 << 20;
/// Full-jitter backoff: the n-th wait is uniform in [0, min(CAP, BASE·2ⁿ⁻¹)].
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(8);
/// Where Debian-like images keep the system's trusted CAs.
const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The error codes of the licensing API (SPEC 3.6), each with its plain-words reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    CredentialsInvalid,
    CredentialsFormat,
    ActivationError,
    LicenseNotFound,
    InvalidStatus(String),
    LicenseExpired,
}

impl ErrorCode {
    pub fn parse(code: &str) -> Option<ErrorCode> {
        Some(match code {
            "licensing.credentials.invalid" => ErrorCode::CredentialsInvalid,
            "licensing.credentials.format" => ErrorCode::CredentialsFormat,
            "licensing.activation_error" => ErrorCode::ActivationError,
            "licensing.license.not_found" => ErrorCode::LicenseNotFound,
            "licensing.license.expired" => ErrorCode::LicenseExpired,
            other => {
                let status = other.strip_prefix("licensing.license.invalid_status:")?;
                let status: String = status
                    .chars()
                    .filter(char::is_ascii_alphanumeric)
                    .take(32)
                    .collect();
                ErrorCode::InvalidStatus(status)
            }
        })
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorCode::CredentialsInvalid => f.write_str(
                "the credential is not known to LocalStack; check it in the LocalStack web app",
            ),
            ErrorCode::CredentialsFormat => f.write_str(
                "the server says the credential is malformed; copy it again from the web app",
            ),
            ErrorCode::ActivationError => f.write_str(
                "the server could not activate a license for this credential; check your \
                 subscription and its seats in the LocalStack web app",
            ),
            ErrorCode::LicenseNotFound => f.write_str(
                "no license is assigned to this credential; assign one in the LocalStack web app",
            ),
            ErrorCode::InvalidStatus(status) => write!(
                f,
                "the license's status is {status}; check the subscription in the LocalStack web app"
            ),
            ErrorCode::LicenseExpired => f.write_str(
                "the license has expired; renew the subscription in the LocalStack web app",
            ),
        }
    }
}

/// How a request ended when it did not bring a license.
#[derive(Debug)]
pub enum RequestError {
    /// Activation cannot even be tried with these settings (bad endpoint, proxy, CA bundle).
    Settings(String),
    /// Provably never reached the server: DNS, connect, TLS handshake, proxy `CONNECT`.
    NotSent(String),
    /// 429, or 503 with `Retry-After`: the server asks to come back.
    Refused {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// Sent, and perhaps processed and charged: never repeated.
    MaybeProcessed(String),
    /// A definitive answer with a licensing error code.
    Rejected { status: u16, code: ErrorCode },
    /// An answer that is no license and no licensing error.
    Broken(String),
}

impl RequestError {
    fn retryable(&self) -> bool {
        matches!(
            self,
            RequestError::NotSent(_) | RequestError::Refused { .. }
        )
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Settings(what)
            | RequestError::NotSent(what)
            | RequestError::MaybeProcessed(what)
            | RequestError::Broken(what) => f.write_str(what),
            RequestError::Refused { status, .. } => {
                write!(f, "the licensing server is busy (HTTP {status})")
            }
            RequestError::Rejected { status, code } => write!(f, "{code} (HTTP {status})"),
        }
    }
}

/// Which of the two endpoints.
#[derive(Clone, Copy, Debug)]
pub enum Call<'a> {
    Request,
    Activate { license_id: &'a str },
}

impl Call<'_> {
    fn path(&self) -> &'static str {
        match self {
            Call::Request => "/license/request",
            Call::Activate { .. } => "/license/activate",
        }
    }
}

/// A client ready to talk to the configured endpoint, built once per activation.
pub struct Client {
    endpoint: String,
    agent_config: AgentConfig,
    limits: crate::config::NetworkLimits,
    deadline: Instant,
    attempts: u32,
}

struct AgentConfig {
    proxy: Option<ureq::Proxy>,
    tls: TlsConfig,
    connect_timeout: Duration,
    request_timeout: Duration,
}

/// What a request carries besides the credential.
pub struct Machine {
    pub id: String,
    pub ci: bool,
}

impl Client {
    /// Checks the endpoint, proxy and CA settings; starts the activation budget.
    pub fn new(settings: &Settings) -> Result<Client, RequestError> {
        let endpoint = settings.api_endpoint.clone();
        let uri: Uri = endpoint.parse().map_err(|_| {
            RequestError::Settings(format!(
                "API_ENDPOINT {endpoint:?} is not a URL; give a base URL such as {}",
                crate::config::DEFAULT_API_ENDPOINT
            ))
        })?;
        let host = uri
            .host()
            .unwrap_or("")
            .trim_start_matches('[')
            .trim_end_matches(']');
        let loopback = is_loopback(host);
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if loopback => {}
            Some("http") => {
                return Err(RequestError::Settings(format!(
                    "API_ENDPOINT {endpoint} uses plain http:// to a host that is not loopback, \
                     which would send the credential in clear; use https://"
                )));
            }
            _ => {
                return Err(RequestError::Settings(format!(
                    "API_ENDPOINT {endpoint:?} is not an http(s) URL; give a base URL such as {}",
                    crate::config::DEFAULT_API_ENDPOINT
                )));
            }
        }

        let proxy = match &settings.proxy {
            Some(proxy) if !loopback && !bypasses_proxy(host, &settings.no_proxy) => {
                log::debug!("using the proxy from {proxy:?} for {host}");
                Some(build_proxy(proxy)?)
            }
            Some(proxy) => {
                log::debug!("{host} is loopback or in no_proxy, thus not using {proxy:?}");
                None
            }
            None => None,
        };
        let tls = tls_config(settings)?;
        Ok(Client {
            endpoint,
            agent_config: AgentConfig {
                proxy,
                tls,
                connect_timeout: settings.limits.connect_timeout,
                request_timeout: settings.limits.request_timeout,
            },
            limits: settings.limits.clone(),
            deadline: Instant::now() + settings.limits.activation_timeout,
            attempts: 0,
        })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends one call, retrying only what provably never reached the server and what the server
    /// asked to retry, within the attempt and time budget of the whole activation.
    pub fn call(
        &mut self,
        call: Call<'_>,
        credential: &Credential,
        version: &str,
        machine: &Machine,
    ) -> Result<Value, RequestError> {
        let body = request_body(call, credential, version, machine);
        let url = format!("{}{}", self.endpoint, call.path());
        loop {
            self.attempts += 1;
            let remaining = self.deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(RequestError::MaybeProcessed(format!(
                    "the activation took longer than {:.1} s (LSINIT_ACTIVATION_TIMEOUT) at {url}",
                    self.limits.activation_timeout.as_secs_f64()
                )));
            }
            let error = match self.send_once(&url, &body, remaining) {
                Ok(document) => return Ok(document),
                Err(error) => error,
            };
            if !error.retryable() || self.attempts >= self.limits.max_attempts {
                return Err(self.final_error(error));
            }
            let delay = match &error {
                RequestError::Refused {
                    retry_after: Some(wait),
                    ..
                } => *wait,
                _ => backoff(self.attempts),
            };
            let remaining = self.deadline.saturating_duration_since(Instant::now());
            if delay >= remaining {
                return Err(RequestError::NotSent(format!(
                    "{error}; the next attempt would be in {:.1} s, after the activation budget \
                     of {:.1} s (LSINIT_ACTIVATION_TIMEOUT) runs out",
                    delay.as_secs_f64(),
                    self.limits.activation_timeout.as_secs_f64()
                )));
            }
            log::warn!(
                "attempt {}/{} in {:.1} s: {error}",
                self.attempts + 1,
                self.limits.max_attempts,
                delay.as_secs_f64()
            );
            std::thread::sleep(delay);
        }
    }

    fn final_error(&self, error: RequestError) -> RequestError {
        if error.retryable() && self.attempts > 1 {
            RequestError::NotSent(format!(
                "{error} (gave up after {} attempts)",
                self.attempts
            ))
        } else {
            error
        }
    }

    fn send_once(&self, url: &str, body: &str, remaining: Duration) -> Result<Value, RequestError> {
        let per_request = self.agent_config.request_timeout.min(remaining);
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .user_agent(concat!("lsinit/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(self.agent_config.connect_timeout.min(per_request)))
            .timeout_global(Some(per_request))
            .proxy(self.agent_config.proxy.clone())
            .tls_config(self.agent_config.tls.clone())
            .build();
        let agent = ureq::Agent::new_with_config(config);
        let mut response = agent
            .post(url)
            .header("Content-Type", "application/json")
            .send(body)
            .map_err(|e| classify_transport_error(e, url, per_request))?;

        let status = response.status().as_u16();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        if (300..400).contains(&status) {
            let target = header("location").unwrap_or_else(|| "nowhere".into());
            return Err(RequestError::Broken(format!(
                "{url} answered with a redirect (HTTP {status}) to {}; set API_ENDPOINT to the \
                 final URL",
                sanitise(&target)
            )));
        }
        if status == 407 {
            return Err(RequestError::Broken(format!(
                "the proxy wants credentials (HTTP 407) for {url}; put them in the proxy URL, \
                 e.g. https_proxy=http://user:password@proxy:3128"
            )));
        }
        let retry_after = header("retry-after").and_then(|v| parse_retry_after(&v));
        let bytes = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY_BYTES)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => RequestError::Broken(format!(
                    "{url} answered HTTP {status} with a body over 1 MiB, which is no license"
                )),
                other if (200..300).contains(&status) => RequestError::Broken(format!(
                    "{url} answered HTTP {status} but the body was cut short ({}); the license \
                     was lost on the way, try again",
                    describe_ureq_error(&other)
                )),
                other => RequestError::MaybeProcessed(format!(
                    "{url} answered HTTP {status} and then failed ({})",
                    describe_ureq_error(&other)
                )),
            })?;

        if (200..300).contains(&status) {
            return serde_json::from_slice(&bytes).map_err(|_| {
                RequestError::Broken(format!(
                    "{url} answered HTTP {status} with something that is not JSON: {}",
                    excerpt(&bytes)
                ))
            });
        }
        if status == 429 || (status == 503 && retry_after.is_some()) {
            return Err(RequestError::Refused {
                status,
                retry_after,
            });
        }
        let code = serde_json::from_slice::<Value>(&bytes).ok().and_then(|v| {
            v.get("message")
                .and_then(Value::as_str)
                .and_then(ErrorCode::parse)
        });
        match (status, code) {
            (400..=499, Some(code)) => Err(RequestError::Rejected { status, code }),
            (400..=499, None) => Err(RequestError::Broken(format!(
                "{url} answered HTTP {status} without a licensing error code: {}; check \
                 API_ENDPOINT, and any firewall or proxy between this container and it",
                excerpt(&bytes)
            ))),
            _ => Err(RequestError::MaybeProcessed(format!(
                "{url} answered HTTP {status}: {}; not retried, as the server may have counted \
                 the activation",
                excerpt(&bytes)
            ))),
        }
    }
}

fn request_body(
    call: Call<'_>,
    credential: &Credential,
    version: &str,
    machine: &Machine,
) -> String {
    let mut body = json!({
        "credentials": {
            "type": credential.kind.wire_type(),
            "token": credential.secret.expose(),
        },
        "product": { "name": "localstack-pro", "version": version },
        "machine": {
            "id": machine.id,
            "cli": false,
            "ci": machine.ci,
            "system": system_description(),
        },
    });
    if let Call::Activate { license_id } = call {
        body["license_id"] = Value::String(license_id.to_string());
    }
    body.to_string()
}

/// `Linux(Container),<kernel release>,<arch>`.
fn system_description() -> String {
    match nix::sys::utsname::uname() {
        Ok(uts) => format!(
            "Linux(Container),{},{}",
            uts.release().to_string_lossy(),
            uts.machine().to_string_lossy()
        ),
        Err(_) => "Linux(Container),unknown,unknown".to_string(),
    }
}

fn classify_transport_error(error: ureq::Error, url: &str, timeout: Duration) -> RequestError {
    use ureq::Error as E;
    use ureq::Timeout as T;
    let host = url
        .split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or(url);
    match error {
        E::HostNotFound => RequestError::NotSent(format!(
            "DNS could not resolve {host} (for {url}); check the container's DNS, or set \
             API_ENDPOINT"
        )),
        E::Timeout(T::Resolve) => {
            RequestError::NotSent(format!("DNS lookup of {host} timed out (for {url})"))
        }
        E::Timeout(T::Connect) => RequestError::NotSent(format!(
            "connecting to {host} timed out (LSINIT_CONNECT_TIMEOUT); check the network or the \
             proxy"
        )),
        E::Timeout(_) => RequestError::MaybeProcessed(format!(
            "{url} did not answer within {:.1} s (LSINIT_REQUEST_TIMEOUT); not retried, as the \
             server may have counted the activation",
            timeout.as_secs_f64()
        )),
        E::ConnectProxyFailed(reason) if reason.contains(" 407") => RequestError::Broken(format!(
            "the proxy wants credentials (HTTP 407) to reach {host}; put them in the proxy URL, \
             e.g. https_proxy=http://user:password@proxy:3128"
        )),
        E::ConnectProxyFailed(reason) => RequestError::NotSent(format!(
            "the proxy could not connect to {host}: {}",
            sanitise(&reason)
        )),
        E::Io(e) if is_connect_error(&e) => RequestError::NotSent(format!(
            "connection refused or unreachable at {host} ({e}); check API_ENDPOINT and the network"
        )),
        E::ConnectionFailed => {
            RequestError::NotSent(format!("could not connect to {host}; check the network"))
        }
        E::Tls(reason) => RequestError::NotSent(format!("TLS with {host} failed: {reason}")),
        E::Rustls(e) => RequestError::NotSent(describe_tls_error(&e, host)),
        E::InvalidProxyUrl => RequestError::Settings(
            "the proxy URL is not valid; give it as http://host:port".to_string(),
        ),
        other => RequestError::MaybeProcessed(format!(
            "the request to {url} failed after it was sent ({}); not retried, as the server may \
             have counted the activation",
            describe_ureq_error(&other)
        )),
    }
}

fn is_connect_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::ConnectionRefused | K::HostUnreachable | K::NetworkUnreachable | K::AddrNotAvailable
    )
}

fn describe_tls_error(error: &rustls::Error, host: &str) -> String {
    use rustls::{CertificateError as C, Error as R};
    match error {
        R::InvalidCertificate(C::UnknownIssuer) => format!(
            "TLS verification of {host} failed: its certificate is signed by an unknown CA \
             (a proxy that re-signs TLS?); add that CA with REQUESTS_CA_BUNDLE=/path/ca.pem"
        ),
        R::InvalidCertificate(C::NotValidForName)
        | R::InvalidCertificate(C::NotValidForNameContext { .. }) => format!(
            "TLS verification of {host} failed: its certificate is not valid for that name; \
             check API_ENDPOINT"
        ),
        R::InvalidCertificate(C::Expired) | R::InvalidCertificate(C::ExpiredContext { .. }) => {
            format!(
                "TLS verification of {host} failed: its certificate has expired (or this \
                 container's clock is wrong)"
            )
        }
        other => format!("TLS with {host} failed: {other}"),
    }
}

/// Short description of a ureq error that never includes a URL's credentials.
fn describe_ureq_error(error: &ureq::Error) -> String {
    sanitise(&error.to_string())
}

/// A short, printable excerpt of a response body for a message.
fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(120)]);
    let cleaned = sanitise(&text);
    if bytes.len() > 120 {
        format!("{cleaned:?}…")
    } else {
        format!("{cleaned:?}")
    }
}

/// Drops control characters and redacts anything that looks like a URL password.
fn sanitise(text: &str) -> String {
    let printable: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    redact_url_password(&printable)
}

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let format = time::format_description::well_known::Rfc2822;
    let at = time::OffsetDateTime::parse(value, &format).ok()?;
    let at: SystemTime = at.into();
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Full jitter: uniform in [0, min(cap, base·2^(attempt-1))].
pub fn backoff(attempt: u32) -> Duration {
    let ceiling = BACKOFF_BASE.saturating_mul(1 << attempt.saturating_sub(1).min(16));
    ceiling.min(BACKOFF_CAP).mul_f64(fastrand::f64())
}

fn build_proxy(setting: &ProxySetting) -> Result<ureq::Proxy, RequestError> {
    ureq::Proxy::new(&setting.url).map_err(|_| {
        RequestError::Settings(format!(
            "{}={} is not a proxy URL; give it as http://host:port",
            setting.variable,
            setting.redacted()
        ))
    })
}

/// Loopback hosts: 127.0.0.0/8, `::1`, `localhost`.
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// SPEC 2's `no_proxy` matching: `*`, names (also their subdomains, with or without a leading
/// dot), IP addresses and CIDR ranges; ports are ignored.
pub fn bypasses_proxy(host: &str, no_proxy: &[String]) -> bool {
    let host = host.to_ascii_lowercase();
    let host_ip = host.parse::<IpAddr>().ok();
    no_proxy.iter().any(|entry| {
        let entry = entry.trim().to_ascii_lowercase();
        let entry = strip_port(&entry);
        if entry == "*" {
            return true;
        }
        if let Some((net, bits)) = entry.split_once('/') {
            return match (host_ip, net.parse::<IpAddr>(), bits.parse::<u8>()) {
                (Some(ip), Ok(net), Ok(bits)) => in_cidr(ip, net, bits),
                _ => false,
            };
        }
        if let (Some(ip), Ok(entry_ip)) = (host_ip, entry.parse::<IpAddr>()) {
            return ip == entry_ip;
        }
        let name = entry.trim_start_matches('.');
        !name.is_empty() && (host == name || host.ends_with(&format!(".{name}")))
    })
}

fn strip_port(entry: &str) -> &str {
    if let Some(rest) = entry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match entry.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            host
        }
        _ => entry,
    }
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) if bits <= 32 => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) if bits <= 128 => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// The trusted roots: the bundled web roots, the system store when present, and every PEM
/// named by the CA variables, added together.
fn tls_config(settings: &Settings) -> Result<TlsConfig, RequestError> {
    if settings.ssl_no_verify {
        return Ok(TlsConfig::builder().disable_verification(true).build());
    }
    let mut certs: Vec<Certificate<'static>> = Vec::new();
    if let Ok(bytes) = std::fs::read(SYSTEM_CA_FILE) {
        certs.extend(pem_certificates(&bytes));
    }
    for source in &settings.ca_sources {
        let found = read_ca_source(&source.path).map_err(|why| {
            RequestError::Settings(format!(
                "{}={} {why}; point it at a PEM file (or a directory of them) with your CA",
                source.variable,
                source.path.display()
            ))
        })?;
        certs.extend(found);
    }
    certs.extend(
        webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .map(|der| Certificate::from_der(der.as_ref()).to_owned()),
    );
    Ok(TlsConfig::builder()
        .root_certs(RootCerts::new_with_certs(&certs))
        .build())
}

fn read_ca_source(path: &std::path::Path) -> Result<Vec<Certificate<'static>>, String> {
    let metadata = std::fs::metadata(path).map_err(|e| format!("cannot be read ({e})"))?;
    let files: Vec<std::path::PathBuf> = if metadata.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|e| format!("cannot be listed ({e})"))?;
        entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect()
    } else {
        vec![path.to_path_buf()]
    };
    let mut certs = Vec::new();
    for file in files {
        let bytes = std::fs::read(&file).map_err(|e| format!("cannot be read ({e})"))?;
        certs.extend(pem_certificates(&bytes));
    }
    if certs.is_empty() {
        return Err("holds no PEM certificate".to_string());
    }
    Ok(certs)
}

fn pem_certificates(bytes: &[u8]) -> Vec<Certificate<'static>> {
    ureq::tls::parse_pem(bytes)
        .filter_map(|item| match item {
            Ok(PemItem::Certificate(cert)) => Some(cert),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_map_to_their_reasons() {
        assert_eq!(
            ErrorCode::parse("licensing.license.expired"),
            Some(ErrorCode::LicenseExpired)
        );
        assert_eq!(
            ErrorCode::parse("licensing.license.invalid_status:SUSPENDED"),
            Some(ErrorCode::InvalidStatus("SUSPENDED".into()))
        );
        assert_eq!(ErrorCode::parse("licensing.other"), None);
        assert!(
            ErrorCode::LicenseNotFound
                .to_string()
                .contains("assign one")
        );
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        let in_a_minute = time::OffsetDateTime::now_utc() + time::Duration::seconds(60);
        let date = in_a_minute
            .format(&time::format_description::well_known::Rfc2822)
            .unwrap();
        let wait = parse_retry_after(&date).unwrap();
        assert!(
            wait > Duration::from_secs(55) && wait <= Duration::from_secs(60),
            "{wait:?}"
        );
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 +0000"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn backoff_stays_under_its_ceiling() {
        for attempt in 1..40 {
            let ceiling = (BACKOFF_BASE * 2u32.pow(attempt.min(10) - 1)).min(BACKOFF_CAP);
            assert!(backoff(attempt) <= ceiling, "attempt {attempt}");
        }
    }

    #[test]
    fn loopback_hosts() {
        for host in ["127.0.0.1", "127.9.9.9", "::1", "localhost", "LOCALHOST"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["10.0.0.1", "api.localstack.cloud", "localhost.evil.com"] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[test]
    fn no_proxy_matching() {
        let list = |s: &str| s.split(',').map(str::to_string).collect::<Vec<_>>();
        assert!(bypasses_proxy(
            "api.localstack.cloud",
            &list("localstack.cloud")
        ));
        assert!(bypasses_proxy(
            "api.localstack.cloud",
            &list(".localstack.cloud")
        ));
        assert!(bypasses_proxy(
            "localstack.cloud",
            &list("localstack.cloud:443")
        ));
        assert!(!bypasses_proxy(
            "notlocalstack.cloud",
            &list("localstack.cloud")
        ));
        assert!(bypasses_proxy("anything", &list("*")));
        assert!(bypasses_proxy("10.1.2.3", &list("10.0.0.0/8")));
        assert!(!bypasses_proxy("11.1.2.3", &list("10.0.0.0/8")));
        assert!(bypasses_proxy("10.1.2.3", &list("10.1.2.3")));
        assert!(bypasses_proxy("fd00::1", &list("fd00::/8")));
        assert!(bypasses_proxy("::1", &list("[::1]:80")));
    }

    #[test]
    fn excerpts_are_short_and_printable() {
        let text = excerpt(b"\x1b[31mhello\r\nworld http://u:pw@h/");
        assert!(!text.contains('\x1b') && !text.contains("pw@"), "{text}");
        assert!(excerpt(&[b'a'; 500]).len() < 140);
    }
}
