//! One licensing call over HTTP (SPEC 3.5–3.6): the endpoint checks, the request body, the
//! limits, retries with backoff, and the classification of every outcome into settings, not
//! sent, refused, maybe processed, rejected or broken.
//!
//! Owns the network. The submodules own its parts: `proxy` (which proxy, if any), `roots` (the
//! trusted CAs), `progress` (how far an attempt got, which is what makes "not sent" provable).
//! What a license means is `document`'s business, what to do with the result is `mod.rs`'s.

mod progress;
mod proxy;
mod roots;

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use ureq::http::Uri;
use ureq::tls::TlsConfig;

use self::progress::{Progress, Recorder};
use self::proxy::ChosenProxy;
pub use self::proxy::{bypasses_proxy, is_loopback};
use super::credential::{Credential, Secret};
use crate::config::{NetworkLimits, Settings, redact_url_password, redact_urls_in_text};

/// Responses larger than this are not licenses.
const MAX_BODY_BYTES: u64 = 1 << 20;
/// Full-jitter backoff: the n-th wait is uniform in [0, min(CAP, BASE·2ⁿ⁻¹)].
const BACKOFF_BASE: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(8);
/// How much of a response body a message quotes.
const EXCERPT_CHARS: usize = 120;
/// The end of every "maybe processed" reason.
const NOT_REPEATED: &str = "not repeated, as the server may have counted the activation; start \
                            again to retry";

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

/// How a request ended when it did not bring a license. Each text is a complete reason: what
/// failed, the endpoint, and the likely fix.
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
        url: String,
    },
    /// Sent, and perhaps processed and charged: never repeated.
    MaybeProcessed(String),
    /// A definitive answer with a licensing error code.
    Rejected {
        status: u16,
        code: ErrorCode,
        url: String,
    },
    /// An answer that is no license and no licensing error.
    Broken(String),
    /// Retryable failures that used up the attempts or the time of the activation.
    Exhausted(String),
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
            | RequestError::Broken(what)
            | RequestError::Exhausted(what) => f.write_str(what),
            RequestError::Refused {
                status,
                retry_after,
                url,
            } => {
                write!(f, "the licensing server at {url} is busy (HTTP {status}")?;
                if let Some(wait) = retry_after {
                    write!(f, ", Retry-After {:.1} s", wait.as_secs_f64())?;
                }
                f.write_str(")")
            }
            RequestError::Rejected { status, code, url } => {
                write!(f, "{code} (HTTP {status} from {url})")
            }
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

/// What a request carries besides the credential.
pub struct Machine {
    pub id: String,
    pub ci: bool,
}

/// A client ready to talk to the configured endpoint, built once per activation: it holds the
/// activation's time and attempt budget across its calls.
pub struct Client {
    /// `API_ENDPOINT` as configured, used for requests.
    base_url: String,
    /// The same with any password masked, for messages.
    endpoint: String,
    /// `host:port` of the endpoint, for messages.
    host: String,
    https: bool,
    proxy: Option<ChosenProxy>,
    /// The proxy variable `no_proxy` made lsinit bypass, for messages.
    bypassed: Option<&'static str>,
    tls: TlsConfig,
    limits: NetworkLimits,
    /// `LOG_LICENSE_ISSUES`: off turns the retry warnings into debug lines.
    log_issues: bool,
    deadline: Instant,
    attempts: u32,
}

/// One call's fixed parts, shared by its attempts.
struct Attempt<'a> {
    url: String,
    /// `url` with any password masked.
    shown: String,
    body: String,
    secret: &'a Secret,
}

impl Client {
    /// Checks the endpoint, proxy and CA settings; starts the activation budget.
    pub fn new(settings: &Settings) -> Result<Client, RequestError> {
        let endpoint = settings.api_endpoint.expose().to_string();
        let shown = redact_url_password(&endpoint);
        let not_a_url = |why: &str| {
            RequestError::Settings(format!(
                "API_ENDPOINT {shown:?} {why}; give a base URL such as {}",
                crate::config::DEFAULT_API_ENDPOINT
            ))
        };
        let uri: Uri = endpoint.parse().map_err(|_| not_a_url("is not a URL"))?;
        let host = uri.host().unwrap_or_default().to_string();
        if host.is_empty() {
            return Err(not_a_url("has no host"));
        }
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") if is_loopback(&host) => false,
            Some("http") => {
                return Err(RequestError::Settings(format!(
                    "API_ENDPOINT {shown} uses plain http:// to a host that is not loopback, \
                     which would send the credential in clear; use https://"
                )));
            }
            _ => return Err(not_a_url("is not an http(s) URL")),
        };
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });

        let proxy = proxy::choose(settings, &host)?;
        let bypassed = match (&settings.proxy, &proxy) {
            (Some(setting), None) if !is_loopback(&host) => Some(setting.variable),
            _ => None,
        };
        let tls = roots::tls_config(settings)?;
        Ok(Client {
            base_url: endpoint,
            endpoint: shown,
            host: format!("{host}:{port}"),
            https,
            proxy,
            bypassed,
            tls,
            limits: settings.limits.clone(),
            log_issues: settings.log_license_issues,
            deadline: Instant::now() + settings.limits.activation_timeout,
            attempts: 0,
        })
    }

    /// The endpoint for messages, with any password masked.
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
        let attempt = Attempt {
            url: format!("{}{}", self.base_url, call.path()),
            shown: format!("{}{}", self.endpoint, call.path()),
            body: request_body(call, credential, version, machine),
            secret: &credential.secret,
        };
        let budget = self.limits.activation_timeout.as_secs_f64();
        loop {
            let remaining = self.deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(RequestError::Exhausted(format!(
                    "the activation budget of {budget:.1} s (LSINIT_ACTIVATION_TIMEOUT) ran out \
                     before {} could be sent",
                    attempt.shown
                )));
            }
            self.attempts += 1;
            let error = match self.send_once(&attempt, remaining) {
                Ok(document) => return Ok(document),
                Err(error) => error,
            };
            if !error.retryable() {
                return Err(error);
            }
            if self.attempts >= self.limits.max_attempts {
                return Err(RequestError::Exhausted(if self.attempts == 1 {
                    format!("{error} (not retried: LSINIT_MAX_ATTEMPTS is 1)")
                } else {
                    format!(
                        "{error} (gave up after {} attempts, LSINIT_MAX_ATTEMPTS)",
                        self.attempts
                    )
                }));
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
                return Err(RequestError::Exhausted(format!(
                    "{error}; the next attempt would be in {:.1} s, after the activation budget \
                     of {budget:.1} s (LSINIT_ACTIVATION_TIMEOUT) runs out; try again later",
                    delay.as_secs_f64(),
                )));
            }
            let level = if self.log_issues {
                log::Level::Warn
            } else {
                log::Level::Debug
            };
            log::log!(
                level,
                "attempt {}/{} in {:.1} s: {error}",
                self.attempts + 1,
                self.limits.max_attempts,
                delay.as_secs_f64()
            );
            std::thread::sleep(delay);
        }
    }

    fn send_once(&self, attempt: &Attempt<'_>, remaining: Duration) -> Result<Value, RequestError> {
        let per_request = self.limits.request_timeout.min(remaining);
        // The proxy is always set, `None` included: ureq's own reading of the environment
        // follows other rules (SPEC 2).
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .user_agent(concat!("lsinit/", env!("CARGO_PKG_VERSION")))
            // Name lookup counts as connecting: both are "provably not sent" steps.
            .timeout_resolve(Some(self.limits.connect_timeout.min(per_request)))
            .timeout_connect(Some(self.limits.connect_timeout.min(per_request)))
            .timeout_global(Some(per_request))
            .proxy(self.proxy.as_ref().map(|p| p.proxy.clone()))
            .tls_config(self.tls.clone())
            .build();
        let recorder = Recorder::default();
        let proxied = self.proxy.is_some();
        let agent = ureq::Agent::with_parts(
            config,
            recorder.connector(proxied),
            recorder.resolver(proxied),
        );
        let response = agent
            .post(&attempt.url)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json")
            .send(&attempt.body);
        match response {
            Ok(response) => self.read_response(response, attempt, per_request),
            Err(error) => Err(self.classify(error, &recorder.snapshot(), attempt, per_request)),
        }
    }

    /// Turns an answer into a license document or the error it amounts to.
    fn read_response(
        &self,
        mut response: ureq::http::Response<ureq::Body>,
        attempt: &Attempt<'_>,
        timeout: Duration,
    ) -> Result<Value, RequestError> {
        let url = &attempt.shown;
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
                "{url} answered with a redirect (HTTP {status}) to {}, which lsinit does not \
                 follow; set API_ENDPOINT to the right base URL",
                scrub(&target, attempt.secret)
            )));
        }
        if status == 407 {
            return Err(RequestError::Broken(self.proxy_wants_credentials(url)));
        }
        let retry_after = header("retry-after").and_then(|v| parse_retry_after(&v));
        if status == 429 || (status == 503 && retry_after.is_some()) {
            return Err(RequestError::Refused {
                status,
                retry_after,
                url: url.clone(),
            });
        }

        let bytes = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY_BYTES)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => RequestError::Broken(format!(
                    "{url} answered HTTP {status} with a body over 1 MiB, which is no license; \
                     check API_ENDPOINT and any proxy in between"
                )),
                ureq::Error::Timeout(_) => RequestError::MaybeProcessed(format!(
                    "{url} answered HTTP {status}, but the rest of the answer did not arrive \
                     within {}; {NOT_REPEATED}",
                    self.describe_timeout(timeout)
                )),
                other => RequestError::MaybeProcessed(format!(
                    "{url} answered HTTP {status}, but the answer was cut short ({}); \
                     {NOT_REPEATED}",
                    short_reason(&other)
                )),
            })?;

        if (200..300).contains(&status) {
            return serde_json::from_slice(&bytes).map_err(|_| {
                RequestError::Broken(format!(
                    "{url} answered HTTP {status} with something that is not JSON: {}; check \
                     API_ENDPOINT and any proxy in between",
                    excerpt(&bytes, attempt.secret)
                ))
            });
        }
        let code = serde_json::from_slice::<Value>(&bytes).ok().and_then(|v| {
            v.get("message")
                .and_then(Value::as_str)
                .and_then(ErrorCode::parse)
        });
        match (status, code) {
            (400..=499, Some(code)) => Err(RequestError::Rejected {
                status,
                code,
                url: url.clone(),
            }),
            (400..=499, None) => Err(RequestError::Broken(format!(
                "{url} answered HTTP {status} without a licensing error code: {}; check \
                 API_ENDPOINT, and any firewall or proxy between this container and it",
                excerpt(&bytes, attempt.secret)
            ))),
            _ => Err(RequestError::MaybeProcessed(format!(
                "{url} answered HTTP {status}: {}; {NOT_REPEATED}",
                excerpt(&bytes, attempt.secret)
            ))),
        }
    }

    /// Classifies a failure before any answer by how far the attempt provably got.
    fn classify(
        &self,
        error: ureq::Error,
        progress: &Progress,
        attempt: &Attempt<'_>,
        timeout: Duration,
    ) -> RequestError {
        use ureq::Error as E;
        let url = &attempt.shown;
        let host = &self.host;
        let reason = short_reason(&error);
        if matches!(error, E::InvalidProxyUrl) {
            let shown = self
                .proxy
                .as_ref()
                .map_or("the proxy", |p| p.shown.as_str());
            return RequestError::Settings(format!(
                "{shown} is not a proxy URL; give it as http://host:port"
            ));
        }

        if progress.sent {
            return match error {
                E::Timeout(_) => RequestError::MaybeProcessed(format!(
                    "the request was sent to {url}, but no answer came within {}; \
                     {NOT_REPEATED}",
                    self.describe_timeout(timeout)
                )),
                E::Protocol(_) | E::LargeResponseHeader(..) => RequestError::Broken(format!(
                    "{url} answered with something that is not HTTP ({reason}); check \
                     API_ENDPOINT and any proxy in between"
                )),
                _ => RequestError::MaybeProcessed(format!(
                    "the connection to {host} failed after the request was sent to {url} \
                     ({reason}); {NOT_REPEATED}"
                )),
            };
        }

        // Provably not sent from here on.
        if let Some(dns) = &progress.dns_failed {
            return RequestError::NotSent(match &self.proxy {
                Some(proxy) if dns.of_proxy => format!(
                    "DNS lookup of the proxy host {} failed ({reason}); check {}",
                    dns.host, proxy.shown
                ),
                _ => format!(
                    "DNS lookup of {} failed ({reason}) for {url}; check the container's DNS \
                     and network, or API_ENDPOINT{}",
                    dns.host,
                    self.bypassed.map_or(String::new(), |variable| format!(
                        "; no_proxy makes lsinit connect directly, not through {variable}"
                    ))
                ),
            });
        }
        if let Some(proxy) = &self.proxy {
            if let E::ConnectProxyFailed(answer) = &error {
                if answer.contains(" 407") {
                    return RequestError::Broken(self.proxy_wants_credentials(url));
                }
                return RequestError::NotSent(format!(
                    "the proxy {} did not open a tunnel to {host} for {url} ({}); check that \
                     it allows CONNECT to {host}",
                    proxy.shown,
                    sanitise(answer)
                ));
            }
            if !progress.proxy_connected {
                return RequestError::NotSent(format!(
                    "cannot connect to the proxy {} ({reason}) for {url}; check {}",
                    proxy.shown, proxy.variable
                ));
            }
            if !progress.connected {
                return RequestError::NotSent(format!(
                    "the proxy {} failed while opening a tunnel to {host} for {url} ({reason}); \
                     check the proxy",
                    proxy.shown
                ));
            }
        } else if !progress.connected {
            let bypass;
            let fix = match self.bypassed {
                Some(variable) => {
                    bypass = format!(
                        "check API_ENDPOINT and the network; no_proxy makes lsinit connect                          directly, not through {variable}"
                    );
                    &bypass
                }
                None => "check API_ENDPOINT and the network, or set a proxy with https_proxy",
            };
            return RequestError::NotSent(match &error {
                E::Timeout(_) => format!(
                    "connecting to {host} timed out after {:.1} s (LSINIT_CONNECT_TIMEOUT) for \
                     {url}; {fix}",
                    self.limits.connect_timeout.min(timeout).as_secs_f64()
                ),
                E::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => format!(
                    "connection refused by {host} for {url}: nothing listens there; check \
                     API_ENDPOINT"
                ),
                _ => format!("cannot connect to {host} ({reason}) for {url}; {fix}"),
            });
        }
        if self.https && !progress.secured {
            if let Some(tls) = rustls_error(&error) {
                return RequestError::NotSent(describe_tls_error(tls, host, url));
            }
            return RequestError::NotSent(format!(
                "the TLS handshake with {host} failed ({reason}) for {url}; a firewall or proxy \
                 may be interfering with TLS to it"
            ));
        }
        RequestError::NotSent(format!(
            "the request to {url} failed before it was sent ({reason})"
        ))
    }

    /// `1.0 s (LSINIT_REQUEST_TIMEOUT)`, or the rest of the activation budget when that was
    /// shorter.
    fn describe_timeout(&self, timeout: Duration) -> String {
        let variable = if timeout < self.limits.request_timeout {
            "what was left of LSINIT_ACTIVATION_TIMEOUT"
        } else {
            "LSINIT_REQUEST_TIMEOUT"
        };
        format!("{:.1} s ({variable})", timeout.as_secs_f64())
    }

    fn proxy_wants_credentials(&self, url: &str) -> String {
        let (shown, variable) = match &self.proxy {
            Some(proxy) => (proxy.shown.as_str(), proxy.variable),
            None => (
                "a proxy between this container and the server",
                "https_proxy",
            ),
        };
        format!(
            "{shown} wants credentials (HTTP 407) for {url}; put them in the proxy URL, e.g. \
             {variable}=http://user:password@proxy:3128"
        )
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

/// The rustls error inside a ureq error: rustls reports it through `std::io::Error` during the
/// handshake.
fn rustls_error(error: &ureq::Error) -> Option<&rustls::Error> {
    match error {
        ureq::Error::Rustls(e) => Some(e),
        ureq::Error::Io(e) => e.get_ref()?.downcast_ref::<rustls::Error>(),
        _ => None,
    }
}

fn describe_tls_error(error: &rustls::Error, host: &str, url: &str) -> String {
    use rustls::{CertificateError as C, Error as R};
    let why = match error {
        R::InvalidCertificate(C::UnknownIssuer) => "its certificate is signed by an unknown CA \
            (a proxy or firewall that inspects TLS?); add that CA with \
            REQUESTS_CA_BUNDLE=/path/to/ca.pem"
            .to_string(),
        R::InvalidCertificate(C::NotValidForNameContext { presented, .. }) => format!(
            "its certificate is for {} and not for that name; check the host in API_ENDPOINT",
            sanitise(&presented.join(", "))
        ),
        R::InvalidCertificate(C::NotValidForName) => "its certificate is not for that name; \
            check the host in API_ENDPOINT"
            .to_string(),
        R::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => "its certificate has \
            expired, or this container's clock is wrong; check the clock"
            .to_string(),
        R::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => "its \
            certificate is not valid yet, or this container's clock is wrong; check the clock"
            .to_string(),
        R::InvalidCertificate(C::Revoked) => "its certificate has been revoked".to_string(),
        R::InvalidCertificate(other) => format!(
            "its certificate was refused ({}); a proxy that inspects TLS needs its CA added \
             with REQUESTS_CA_BUNDLE",
            sanitise(&format!("{other:?}"))
        ),
        other => {
            return format!(
                "the TLS handshake with {host} failed for {url} ({}); a firewall or proxy may be \
                 interfering with TLS to it",
                sanitise(&other.to_string())
            );
        }
    };
    format!("TLS verification of {host} failed for {url}: {why}")
}

/// A short description of a transport failure, without addresses' credentials.
fn short_reason(error: &ureq::Error) -> String {
    use std::io::ErrorKind as K;
    match error {
        ureq::Error::Io(e) => match e.kind() {
            K::ConnectionRefused => "connection refused".to_string(),
            K::ConnectionReset => "connection reset".to_string(),
            K::ConnectionAborted => "connection aborted".to_string(),
            K::UnexpectedEof => "connection closed".to_string(),
            K::BrokenPipe => "connection closed while writing".to_string(),
            K::HostUnreachable => "host unreachable".to_string(),
            K::NetworkUnreachable => "network unreachable".to_string(),
            K::TimedOut => "timed out".to_string(),
            _ => sanitise(&e.to_string()),
        },
        ureq::Error::Timeout(_) => "timed out".to_string(),
        ureq::Error::HostNotFound => "no such host".to_string(),
        other => sanitise(&other.to_string()),
    }
}

/// A short, printable excerpt of a response body; the credential, should a server echo it, is
/// masked.
fn excerpt(bytes: &[u8], secret: &Secret) -> String {
    // Look at enough to see a credential that starts within the excerpt whole.
    let window = EXCERPT_CHARS * 4 + secret.expose().len();
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(window)]);
    let cleaned = scrub(&text, secret);
    let short: String = cleaned.chars().take(EXCERPT_CHARS).collect();
    if short.len() < cleaned.len() || bytes.len() > window {
        format!("{short:?}…")
    } else {
        format!("{short:?}")
    }
}

/// [`sanitise`], and the credential masked wherever it appears.
fn scrub(text: &str, secret: &Secret) -> String {
    let raw = secret.expose();
    let masked = if raw.is_empty() {
        text.to_string()
    } else {
        text.replace(raw, &secret.masked())
    };
    sanitise(&masked)
}

/// Drops control characters, shortens, and masks anything that looks like a URL password.
fn sanitise(text: &str) -> String {
    let printable: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(600)
        .collect();
    redact_urls_in_text(&printable)
}

/// `Retry-After` as seconds or an HTTP date (IMF-fixdate, RFC 2822 style).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::licensing::credential::CredentialKind;

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
        // IMF-fixdate, the form HTTP servers send.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn backoff_stays_under_its_ceiling() {
        for attempt in 1..40 {
            let ceiling = (BACKOFF_BASE * 2u32.pow(attempt.min(10) - 1)).min(BACKOFF_CAP);
            assert!(backoff(attempt) <= ceiling, "attempt {attempt}");
        }
    }

    #[test]
    fn backoff_is_jittered() {
        let waits: std::collections::HashSet<Duration> = (0..20).map(|_| backoff(4)).collect();
        assert!(waits.len() > 1, "{waits:?}");
    }

    #[test]
    fn excerpts_are_short_printable_and_without_the_credential() {
        let secret = Secret::from_env_value(
            CredentialKind::AuthToken,
            "ls-Wxyz0123-4567-89ab-cdef-ghijklmnf90e".as_ref(),
        )
        .unwrap();
        let text = excerpt(b"\x1b[31mhello\r\nworld http://u:pw@h/", &secret);
        assert!(!text.contains('\x1b') && !text.contains("pw@"), "{text}");
        assert!(excerpt(&[b'a'; 500], &secret).chars().count() < 130);

        let mut echo = vec![b'x'; 100];
        echo.extend_from_slice(b"ls-Wxyz0123-4567-89ab-cdef-ghijklmnf90e and more");
        let text = excerpt(&echo, &secret);
        assert!(!text.contains("ghijklmn"), "{text}");
        assert!(!text.contains("ls-Wxyz0123-4567"), "{text}");
    }

    fn client(vars: &[(&str, &str)]) -> Client {
        let env = crate::config::Environment::from_vars(
            vars.iter().map(|(k, v)| ((*k).into(), (*v).into())),
        );
        Client::new(&Settings::from_environment(env).unwrap()).unwrap()
    }

    /// How `client` classifies `error` after the attempt got as far as `progress`.
    fn classified(client: &Client, error: ureq::Error, progress: Progress) -> RequestError {
        let secret =
            Secret::from_env_value(CredentialKind::ApiKey, "some-api-key-value".as_ref()).unwrap();
        let attempt = Attempt {
            url: format!("{}/license/request", client.base_url),
            shown: format!("{}/license/request", client.endpoint),
            body: String::new(),
            secret: &secret,
        };
        client.classify(error, &progress, &attempt, Duration::from_secs(1))
    }

    fn io(kind: std::io::ErrorKind) -> ureq::Error {
        ureq::Error::Io(kind.into())
    }

    #[test]
    fn a_failure_is_not_sent_exactly_until_the_first_request_byte() {
        use std::io::ErrorKind::ConnectionReset;
        let direct = client(&[("API_ENDPOINT", "https://licensing.test/v1")]);
        let connected = Progress {
            connected: true,
            ..Progress::default()
        };
        let secured = Progress {
            secured: true,
            ..connected.clone()
        };
        let sent = Progress {
            sent: true,
            ..secured.clone()
        };

        let during_handshake = classified(&direct, io(ConnectionReset), connected);
        assert!(
            matches!(&during_handshake, RequestError::NotSent(m)
                if m.contains("TLS handshake with licensing.test:443 failed (connection reset)")),
            "{during_handshake:?}"
        );
        let before_writing = classified(&direct, io(ConnectionReset), secured);
        assert!(
            matches!(before_writing, RequestError::NotSent(_)),
            "{before_writing:?}"
        );
        let after_writing = classified(&direct, io(ConnectionReset), sent.clone());
        assert!(
            matches!(&after_writing, RequestError::MaybeProcessed(m)
                if m.contains("after the request was sent") && m.contains("not repeated")),
            "{after_writing:?}"
        );
        let no_answer = classified(&direct, ureq::Error::Timeout(ureq::Timeout::Global), sent);
        assert!(
            matches!(&no_answer, RequestError::MaybeProcessed(m) if m.contains("no answer came")),
            "{no_answer:?}"
        );
        let connect_timeout = classified(
            &direct,
            ureq::Error::Timeout(ureq::Timeout::Connect),
            Progress::default(),
        );
        assert!(
            matches!(&connect_timeout, RequestError::NotSent(m)
                if m.contains("LSINIT_CONNECT_TIMEOUT")),
            "{connect_timeout:?}"
        );
        let dns = classified(
            &direct,
            ureq::Error::HostNotFound,
            Progress {
                dns_failed: Some(progress::DnsFailure {
                    host: "licensing.test".into(),
                    of_proxy: false,
                }),
                ..Progress::default()
            },
        );
        assert!(
            matches!(&dns, RequestError::NotSent(m)
                if m.starts_with("DNS lookup of licensing.test failed (no such host)")),
            "{dns:?}"
        );
    }

    #[test]
    fn proxy_failures_name_the_proxy_masked() {
        let proxied = client(&[
            ("API_ENDPOINT", "https://licensing.test/v1"),
            ("https_proxy", "http://user:pw-secret@127.0.0.1:3128"),
        ]);
        let cases = [
            (
                io(std::io::ErrorKind::ConnectionRefused),
                Progress::default(),
                "cannot connect to the proxy https_proxy=http://user:****@127.0.0.1:3128",
            ),
            (
                ureq::Error::ConnectProxyFailed("proxy server responded 502/502".into()),
                Progress {
                    proxy_connected: true,
                    ..Progress::default()
                },
                "did not open a tunnel to licensing.test:443",
            ),
            (
                ureq::Error::ConnectProxyFailed("proxy server responded 407/407".into()),
                Progress {
                    proxy_connected: true,
                    ..Progress::default()
                },
                "wants credentials (HTTP 407)",
            ),
        ];
        for (error, progress, expected) in cases {
            let classified = classified(&proxied, error, progress);
            let text = classified.to_string();
            assert!(text.contains(expected), "{text}");
            assert!(!text.contains("pw-secret"), "{text}");
            assert_eq!(
                classified.retryable(),
                !expected.contains("407"),
                "{classified:?}"
            );
        }
    }

    #[test]
    fn tls_errors_say_what_to_do() {
        use rustls::{CertificateError, Error};
        let unknown = describe_tls_error(
            &Error::InvalidCertificate(CertificateError::UnknownIssuer),
            "h:443",
            "https://h/v1/license/request",
        );
        assert!(
            unknown.contains("unknown CA") && unknown.contains("REQUESTS_CA_BUNDLE"),
            "{unknown}"
        );
        let expired = describe_tls_error(
            &Error::InvalidCertificate(CertificateError::Expired),
            "h:443",
            "https://h/v1",
        );
        assert!(expired.contains("clock"), "{expired}");
    }
}
