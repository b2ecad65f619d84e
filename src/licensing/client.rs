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
use self::proxy::{ChosenProxy, is_loopback};
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
    fn parse(code: &str) -> Option<ErrorCode> {
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
    /// Retryable failures that used up the attempts of the call or the time of the activation,
    /// or whose next attempt would not fit in the time left.
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
                    write!(f, ", Retry-After {}", wait_text(*wait))?;
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

/// A client ready to talk to the configured endpoint, built once per activation: its calls share
/// the activation's time budget; each call has its own attempts (`LSINIT_MAX_ATTEMPTS`).
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
}

/// One call's fixed parts, shared by its attempts.
struct Attempt<'a> {
    url: String,
    /// `url` with any password masked.
    shown: String,
    body: String,
    secret: &'a Secret,
}

/// The limit that ended an attempt which timed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// `LSINIT_CONNECT_TIMEOUT`: name lookup and connection setup, TLS included.
    Connect,
    /// `LSINIT_REQUEST_TIMEOUT`: the whole attempt.
    Request,
    /// What was left of `LSINIT_ACTIVATION_TIMEOUT`, when that was less than the request timeout.
    Budget,
}

impl Client {
    /// Checks the endpoint, proxy and CA settings; starts the activation budget.
    pub fn new(settings: &Settings) -> Result<Client, RequestError> {
        let endpoint = settings.api_endpoint.expose().to_string();
        if endpoint.contains(['?', '#']) {
            // Checked before anything prints the URL: a token may be in the query.
            return Err(RequestError::Settings(format!(
                "API_ENDPOINT {}… has a query or fragment (from ? or #, not shown here), which \
                 cannot go in front of the API paths; give only the base URL, such as {}",
                without_query(&endpoint),
                crate::config::DEFAULT_API_ENDPOINT
            )));
        }
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
        let authority = uri.authority().map_or("", |a| a.as_str());
        let port = match explicit_port(authority) {
            Ok(port) => port.unwrap_or(if https { 443 } else { 80 }),
            Err(port) => {
                return Err(RequestError::Settings(format!(
                    "API_ENDPOINT {shown} has the port {port:?}, which is no TCP port (1 to \
                     65535); correct it, or leave it out for the scheme's default"
                )));
            }
        };

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
        })
    }

    /// The endpoint for messages, with any password masked.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends one call, retrying only what provably never reached the server and what the server
    /// asked to retry, with this call's attempts (`LSINIT_MAX_ATTEMPTS`) inside the time budget
    /// the activation's calls share.
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
        let budget = seconds(self.limits.activation_timeout);
        let mut attempts = 0;
        loop {
            let remaining = self.deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(RequestError::Exhausted(format!(
                    "the activation budget of {budget} (LSINIT_ACTIVATION_TIMEOUT) ran out \
                     before {} could be sent; raise LSINIT_ACTIVATION_TIMEOUT",
                    attempt.shown
                )));
            }
            attempts += 1;
            let error = match self.send_once(&attempt, remaining) {
                Ok(document) => return Ok(document),
                Err(error) => error,
            };
            if !error.retryable() {
                return Err(error);
            }
            if attempts >= self.limits.max_attempts {
                return Err(RequestError::Exhausted(gave_up(&error, attempts)));
            }

            let retry_after = match &error {
                RequestError::Refused { retry_after, .. } => *retry_after,
                _ => None,
            };
            let delay = retry_delay(retry_after, attempts);
            let remaining = self.deadline.saturating_duration_since(Instant::now());
            if delay >= remaining {
                return Err(RequestError::Exhausted(format!(
                    "{error}; the next attempt would be in {}, after the activation budget of \
                     {budget} (LSINIT_ACTIVATION_TIMEOUT) runs out; try again later",
                    wait_text(delay),
                )));
            }
            // A retry that the budget would cut short could be cut after sending, and then
            // count as maybe processed (and charged) instead of bringing a license.
            let left = remaining - delay;
            if left < self.limits.request_timeout {
                return Err(RequestError::Exhausted(format!(
                    "{error}; the activation budget of {budget} (LSINIT_ACTIVATION_TIMEOUT) is \
                     too short for another attempt: {} would be left after waiting {}, less than \
                     the {} an attempt may take (LSINIT_REQUEST_TIMEOUT); raise \
                     LSINIT_ACTIVATION_TIMEOUT, or try again later",
                    wait_text(left),
                    wait_text(delay),
                    seconds(self.limits.request_timeout),
                )));
            }
            let level = if self.log_issues {
                log::Level::Warn
            } else {
                log::Level::Debug
            };
            log::log!(
                level,
                "attempt {}/{} in {}: {error}",
                attempts + 1,
                self.limits.max_attempts,
                wait_text(delay)
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
        per_request: Duration,
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
                    self.timer_text(self.timer(&e, per_request), per_request)
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
        per_request: Duration,
    ) -> RequestError {
        use ureq::Error as E;
        let url = &attempt.shown;
        let host = &self.host;
        let timer = self.timer(&error, per_request);
        let reason = match timer {
            Some(timer) => {
                let (limit, variable) = self.timer_limit(Some(timer), per_request);
                format!("timed out after {limit}, {variable}")
            }
            None => short_reason(&error),
        };
        if matches!(error, E::InvalidProxyUrl) {
            let (shown, variable) = self
                .proxy
                .as_ref()
                .map_or(("the proxy", "https_proxy"), |p| {
                    (p.shown.as_str(), p.variable)
                });
            return RequestError::Settings(format!(
                "{shown} is not a proxy URL; give {variable} as http://host:port"
            ));
        }

        if progress.sent {
            return match error {
                E::Timeout(_) => RequestError::MaybeProcessed(format!(
                    "the request was sent to {url}, but no answer came within {}; \
                     {NOT_REPEATED}",
                    self.timer_text(timer, per_request)
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
        if timer == Some(Timer::Budget) {
            return RequestError::Exhausted(format!(
                "the activation budget of {} (LSINIT_ACTIVATION_TIMEOUT) ran out {} for {url}, \
                 before the request was sent; raise LSINIT_ACTIVATION_TIMEOUT, or check the \
                 network",
                seconds(self.limits.activation_timeout),
                self.phase(progress)
            ));
        }
        if let Some(dns) = &progress.dns_failed {
            return RequestError::NotSent(match &self.proxy {
                Some(proxy) if dns.of_proxy => format!(
                    "DNS lookup of the proxy host {} failed ({reason}) for {url}; check {}",
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
                // LIMITATION: ureq reports a refused `CONNECT` only as text ("proxy server
                // responded 407/…"), so the status is read from that text. ureq is pinned to
                // ~3.5.2 (Cargo.toml) for its unversioned transport API; an upgrade must re-check
                // this text too, which the proxy 407 tests in tests/it/network.rs do.
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
            if !progress.proxy_reached {
                return RequestError::NotSent(format!(
                    "cannot connect to the proxy {} ({reason}) for {url}; check {}",
                    proxy.shown, proxy.variable
                ));
            }
            if !progress.proxy_connected {
                let peer = format!("the proxy {}", proxy.shown);
                if let Some(tls) = rustls_error(&error) {
                    return RequestError::NotSent(describe_tls_error(
                        tls,
                        &peer,
                        proxy.variable,
                        url,
                    ));
                }
                return RequestError::NotSent(format!(
                    "the TLS handshake with {peer} failed ({reason}) for {url}; check that the \
                     proxy speaks TLS, or give {} as http:// if it does not",
                    proxy.variable
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
            let mut fix = match self.bypassed {
                Some(variable) => format!(
                    "check API_ENDPOINT and the network; no_proxy makes lsinit connect \
                     directly, not through {variable}"
                ),
                None => "check API_ENDPOINT and the network, or set a proxy with https_proxy"
                    .to_string(),
            };
            if timer == Some(Timer::Connect) {
                fix.push_str(", or raise LSINIT_CONNECT_TIMEOUT for a slow network");
            }
            return RequestError::NotSent(match &error {
                E::Timeout(_) => format!(
                    "connecting to {host} timed out after {} for {url}; {fix}",
                    self.timer_text(timer, per_request)
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
                return RequestError::NotSent(describe_tls_error(tls, host, "API_ENDPOINT", url));
            }
            return RequestError::NotSent(format!(
                "the TLS handshake with {host} failed ({reason}) for {url}; a firewall or proxy \
                 may be interfering with TLS to it"
            ));
        }
        RequestError::NotSent(format!(
            "the request to {url} failed before it was sent ({reason}); check API_ENDPOINT and \
             the network"
        ))
    }

    /// Where an attempt that was not sent stopped, for a message: "while connecting to h:443".
    fn phase(&self, progress: &Progress) -> String {
        let host = &self.host;
        match &self.proxy {
            Some(proxy) if !progress.proxy_reached => {
                format!("while connecting to the proxy {}", proxy.shown)
            }
            Some(proxy) if !progress.proxy_connected => {
                format!("during the TLS handshake with the proxy {}", proxy.shown)
            }
            Some(proxy) if !progress.connected => {
                format!("while the proxy {} opened a tunnel to {host}", proxy.shown)
            }
            None if !progress.connected => format!("while connecting to {host}"),
            _ if self.https && !progress.secured => {
                format!("during the TLS handshake with {host}")
            }
            _ => "just before sending".to_string(),
        }
    }

    /// Which limit ended an attempt that timed out (`None`: not a timeout of lsinit's). ureq
    /// names the timer that fired, but the connect timer is capped by the attempt's and may
    /// be named when the attempt's fired, so the tighter of the configured limits decides.
    fn timer(&self, error: &ureq::Error, per_request: Duration) -> Option<Timer> {
        let ureq::Error::Timeout(fired) = error else {
            return None;
        };
        let connect_is_tighter = self.limits.connect_timeout < per_request;
        Some(match fired {
            ureq::Timeout::Resolve | ureq::Timeout::Connect if connect_is_tighter => Timer::Connect,
            _ if per_request < self.limits.request_timeout => Timer::Budget,
            _ => Timer::Request,
        })
    }

    /// `5.0 s (LSINIT_CONNECT_TIMEOUT)`, `1.0 s (LSINIT_REQUEST_TIMEOUT)`, or
    /// `0.4 s (what was left of LSINIT_ACTIVATION_TIMEOUT)`.
    fn timer_text(&self, timer: Option<Timer>, per_request: Duration) -> String {
        let (limit, variable) = self.timer_limit(timer, per_request);
        format!("{limit} ({variable})")
    }

    /// The limit a timer had and where it comes from.
    fn timer_limit(&self, timer: Option<Timer>, per_request: Duration) -> (String, &'static str) {
        let (limit, variable) = match timer {
            Some(Timer::Connect) => (self.limits.connect_timeout, "LSINIT_CONNECT_TIMEOUT"),
            Some(Timer::Budget) => (per_request, "what was left of LSINIT_ACTIVATION_TIMEOUT"),
            Some(Timer::Request) | None => (self.limits.request_timeout, "LSINIT_REQUEST_TIMEOUT"),
        };
        (seconds(limit), variable)
    }

    fn proxy_wants_credentials(&self, url: &str) -> String {
        match &self.proxy {
            Some(proxy) if proxy.has_credentials => format!(
                "the proxy {} refused the credentials in its URL (HTTP 407) for {url}; check \
                 the user name and password in {} (percent-encode @ : / ? # % in them)",
                proxy.shown, proxy.variable
            ),
            Some(proxy) => format!(
                "the proxy {} wants credentials (HTTP 407) for {url}; put them in the proxy \
                 URL, e.g. {}=http://user:password@proxy:3128",
                proxy.shown, proxy.variable
            ),
            None => format!(
                "a proxy between this container and the server wants credentials (HTTP 407) \
                 for {url}; set the proxy with them, e.g. \
                 https_proxy=http://user:password@proxy:3128"
            ),
        }
    }
}

/// The reason for giving up a retryable failure after `attempts` attempts of one call.
fn gave_up(error: &RequestError, attempts: u32) -> String {
    let tried = if attempts == 1 {
        "not retried: LSINIT_MAX_ATTEMPTS is 1".to_string()
    } else {
        format!("gave up after {attempts} attempts, LSINIT_MAX_ATTEMPTS")
    };
    match error {
        // The only failure whose text has no fix of its own.
        RequestError::Refused { .. } => {
            format!("{error} ({tried}); try again later, or raise LSINIT_MAX_ATTEMPTS")
        }
        _ => format!("{error} ({tried})"),
    }
}

/// The port written in a URL's authority (`user:pw@host:port`, `[::1]:port`), if any. `Err`
/// holds the text when it is no TCP port (1 to 65535): ureq would silently use the scheme's
/// default port instead, and send the credential there.
fn explicit_port(authority: &str) -> Result<Option<u16>, String> {
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, rest)| rest);
    let port = match host_port.strip_prefix('[') {
        Some(v6) => v6
            .split_once(']')
            .and_then(|(_, rest)| rest.strip_prefix(':')),
        None => host_port.rsplit_once(':').map(|(_, port)| port),
    };
    match port {
        None | Some("") => Ok(None),
        Some(text) => match text.parse::<u16>() {
            Ok(port) if port > 0 && text.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(port)),
            _ => Err(sanitise(&text.chars().take(24).collect::<String>())),
        },
    }
}

/// A URL with a query or fragment, cut before them and with any password masked. When an `@`
/// follows the cut, the `?` or `#` may have been inside a password: then only the scheme is
/// kept.
fn without_query(url: &str) -> String {
    let (base, rest) = url.split_at(url.find(['?', '#']).unwrap_or(url.len()));
    if rest.contains('@') {
        let scheme = base.split_once("://").map_or("", |(scheme, _)| scheme);
        return sanitise(&format!("{scheme}://"));
    }
    sanitise(&redact_url_password(base))
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

/// A failed TLS handshake with `peer` (`host:port`, or "the proxy …"), whose address is set
/// in `setting` (`API_ENDPOINT` or the proxy variable).
fn describe_tls_error(error: &rustls::Error, peer: &str, setting: &str, url: &str) -> String {
    use rustls::{CertificateError as C, Error as R};
    let why = match error {
        R::InvalidCertificate(C::UnknownIssuer) => "its certificate is signed by an unknown CA \
            (a proxy or firewall that inspects TLS?); add that CA with \
            REQUESTS_CA_BUNDLE=/path/to/ca.pem"
            .to_string(),
        R::InvalidCertificate(C::NotValidForNameContext { presented, .. }) => format!(
            "its certificate is for {} and not for that name; check the host in {setting}",
            sanitise(&presented.join(", "))
        ),
        R::InvalidCertificate(C::NotValidForName) => {
            format!("its certificate is not for that name; check the host in {setting}")
        }
        R::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => "its certificate has \
            expired, or this container's clock is wrong; check the clock"
            .to_string(),
        R::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => "its \
            certificate is not valid yet, or this container's clock is wrong; check the clock"
            .to_string(),
        R::InvalidCertificate(C::Revoked) => format!(
            "its certificate has been revoked; check that {setting} names the right server, \
             and that no proxy or firewall in between presents an old certificate"
        ),
        R::InvalidCertificate(other) => format!(
            "its certificate was refused ({}); a proxy that inspects TLS needs its CA added \
             with REQUESTS_CA_BUNDLE",
            sanitise(&format!("{other:?}"))
        ),
        other => {
            return format!(
                "the TLS handshake with {peer} failed for {url} ({}); a firewall or proxy may \
                 be interfering with TLS to it",
                sanitise(&other.to_string())
            );
        }
    };
    format!("TLS verification of {peer} failed for {url}: {why}")
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
/// masked. A JSON body is excerpted from its decoded strings, so that an escaped echo
/// (`ls\u002d…`) is masked as well.
fn excerpt(bytes: &[u8], secret: &Secret) -> String {
    if let Ok(mut json) = serde_json::from_slice::<Value>(bytes) {
        mask_in_json(&mut json, secret);
        let text = json.to_string();
        return shorten(&scrub(&text, secret), false);
    }
    // Look at enough to see a credential that starts within the excerpt whole.
    let window = EXCERPT_CHARS * 4 + secret.expose().len();
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(window)]);
    shorten(&scrub(&text, secret), bytes.len() > window)
}

/// The first [`EXCERPT_CHARS`] of `text`, quoted, with `…` when anything was left out.
fn shorten(text: &str, cut: bool) -> String {
    let short: String = text.chars().take(EXCERPT_CHARS).collect();
    if cut || short.len() < text.len() {
        format!("{short:?}…")
    } else {
        format!("{short:?}")
    }
}

/// Masks the credential in every string and key of a JSON value.
fn mask_in_json(value: &mut Value, secret: &Secret) {
    let raw = secret.expose();
    if raw.is_empty() {
        return;
    }
    match value {
        Value::String(text) if text.contains(raw) => *text = text.replace(raw, &secret.masked()),
        Value::Array(items) => items.iter_mut().for_each(|item| mask_in_json(item, secret)),
        Value::Object(map) => {
            let entries = std::mem::take(map);
            for (key, mut item) in entries {
                mask_in_json(&mut item, secret);
                map.insert(key.replace(raw, &secret.masked()), item);
            }
        }
        _ => {}
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

/// A duration for messages: `1.5 s`, and the exact value when shorter than 0.1 s (`1ns`), so
/// that a tiny setting does not print as `0.0 s`.
fn seconds(duration: Duration) -> String {
    if !duration.is_zero() && duration < Duration::from_millis(100) {
        format!("{duration:?}")
    } else {
        format!("{:.1} s", duration.as_secs_f64())
    }
}

/// A wait for messages and logs: `1.3 s`.
fn wait_text(wait: Duration) -> String {
    format!("{:.1} s", wait.as_secs_f64())
}

/// `Retry-After` as decimal seconds (`2`, `1.5`) or an HTTP date (IMF-fixdate, RFC 2822 style).
/// Anything else (a negative number, garbage) is `None`, as if there were no header.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    let decimal = value.starts_with(|c: char| c.is_ascii_digit())
        && value.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if decimal {
        let seconds: f64 = value.parse().ok()?;
        // Too large for a `Duration`: as good as never.
        return Some(Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX));
    }
    let format = time::format_description::well_known::Rfc2822;
    let at = time::OffsetDateTime::parse(value, &format).ok()?;
    let at: SystemTime = at.into();
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The wait before the attempt after `attempt`: the backoff, or longer if the server asked.
/// A server's `Retry-After: 0` does not switch the backoff off.
fn retry_delay(retry_after: Option<Duration>, attempt: u32) -> Duration {
    backoff(attempt).max(retry_after.unwrap_or_default())
}

/// Full jitter: uniform in [0, min(cap, base·2^(attempt-1))].
fn backoff(attempt: u32) -> Duration {
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
    fn retry_after_takes_decimal_seconds_and_ignores_garbage() {
        assert_eq!(parse_retry_after("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_retry_after("0"), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("2."), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("1e30"), None);
        assert_eq!(
            parse_retry_after("99999999999999999999999999"),
            Some(Duration::MAX)
        );
        for garbage in ["-0.5", "+5", "1.2.3", ".5", "inf", "NaN", "", "5 s", "0x10"] {
            assert_eq!(parse_retry_after(garbage), None, "{garbage:?}");
        }
    }

    #[test]
    fn retry_after_zero_does_not_switch_the_backoff_off() {
        // The fifth wait is uniform in [0, 8 s]: 200 of them average about 4 s.
        let total: Duration = (0..200).map(|_| retry_delay(Some(Duration::ZERO), 5)).sum();
        assert!(total > Duration::from_secs(400), "{total:?}");
        // A longer Retry-After wins over the backoff.
        for _ in 0..50 {
            assert_eq!(
                retry_delay(Some(Duration::from_secs(3)), 1),
                Duration::from_secs(3)
            );
            assert!(retry_delay(Some(Duration::from_millis(100)), 3) >= Duration::from_millis(100));
        }
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

    #[test]
    fn a_json_escaped_echo_of_the_credential_is_masked() {
        let secret = Secret::from_env_value(
            CredentialKind::AuthToken,
            "ls-Wxyz0123-4567-89ab-cdef-ghijklmnf90e".as_ref(),
        )
        .unwrap();
        let body = br#"{"error": "bad token ls\u002dWxyz0123\u002d4567-89ab-cdef-ghijklmnf90e",
                        "ls-Wxyz0123-4567-89ab-cdef-ghijklmnf90e": ["\u006cs-Wxyz0123-4567-89ab-cdef-ghijklmnf90e"]}"#;
        let text = excerpt(body, &secret);
        assert!(
            !text.contains("ghijklmn") && !text.contains("f90e"),
            "{text}"
        );
        assert!(text.contains("bad token ls-Wxyz0123-****"), "{text}");
    }

    fn new_client(vars: &[(&str, &str)]) -> Result<Client, RequestError> {
        let env = crate::config::Environment::from_vars(
            vars.iter().map(|(k, v)| ((*k).into(), (*v).into())),
        );
        Client::new(&Settings::from_environment(env).unwrap())
    }

    fn client(vars: &[(&str, &str)]) -> Client {
        new_client(vars).unwrap()
    }

    /// The settings failure `vars` make.
    fn settings_error(vars: &[(&str, &str)]) -> String {
        match new_client(vars) {
            Err(RequestError::Settings(why)) => why,
            Err(other) => panic!("not a settings failure: {other:?}"),
            Ok(_) => panic!("accepted: {vars:?}"),
        }
    }

    /// One line, no run of spaces (a string literal missing its `\`), no trailing period.
    fn assert_tidy(text: &str) {
        assert!(!text.contains("  "), "a run of spaces: {text:?}");
        assert!(!text.contains('\n') && !text.ends_with('.'), "{text:?}");
    }

    #[test]
    fn an_endpoint_with_a_query_or_fragment_is_a_settings_failure_that_hides_them() {
        for endpoint in [
            "https://licensing.test/v1?token=ls-query-secret",
            "https://licensing.test/v1#ls-query-secret",
            "https://licensing.test/v1?next=a@b&t=ls-query-secret",
        ] {
            let why = settings_error(&[("API_ENDPOINT", endpoint)]);
            assert!(
                why.starts_with("API_ENDPOINT https://")
                    && why.contains("has a query or fragment")
                    && why.contains("give only the base URL"),
                "{why}"
            );
            assert!(!why.contains("query-secret"), "{why}");
            assert_tidy(&why);
        }
        let why = settings_error(&[("API_ENDPOINT", "https://u:pw-secret@licensing.test/v1?x")]);
        assert!(
            why.contains("https://u:****@licensing.test/v1…") && !why.contains("pw-secret"),
            "{why}"
        );
    }

    #[test]
    fn a_port_over_65535_is_a_settings_failure_for_the_endpoint_and_the_proxy() {
        for port in ["65616", "99999", "0", "+80", "8o"] {
            let endpoint = format!("https://licensing.test:{port}/v1");
            let why = settings_error(&[("API_ENDPOINT", &endpoint)]);
            assert!(
                why.contains(&format!("has the port \"{port}\", which is no TCP port")),
                "{why}"
            );
            assert_tidy(&why);

            let proxy = format!("http://user:pw-secret@127.0.0.1:{port}");
            let why = settings_error(&[
                ("API_ENDPOINT", "https://licensing.test/v1"),
                ("https_proxy", &proxy),
            ]);
            assert!(
                why.starts_with("https_proxy=http://user:****@127.0.0.1:")
                    && why.contains("which is no TCP port")
                    && !why.contains("pw-secret"),
                "{why}"
            );
        }
        assert_eq!(
            client(&[("API_ENDPOINT", "https://licensing.test:8443/v1")]).host,
            "licensing.test:8443"
        );
        assert_eq!(
            client(&[("API_ENDPOINT", "http://[::1]:65535/v1")]).host,
            "[::1]:65535"
        );
    }

    #[test]
    fn explicit_ports() {
        assert_eq!(explicit_port("h"), Ok(None));
        assert_eq!(explicit_port("h:"), Ok(None));
        assert_eq!(explicit_port("h:1"), Ok(Some(1)));
        assert_eq!(explicit_port("u:p@h:443"), Ok(Some(443)));
        assert_eq!(explicit_port("u:p:x@h"), Ok(None));
        assert_eq!(explicit_port("[::1]"), Ok(None));
        assert_eq!(explicit_port("[::1]:8080"), Ok(Some(8080)));
        assert_eq!(explicit_port("[::1]:80800"), Err("80800".to_string()));
        assert_eq!(explicit_port("h:65536"), Err("65536".to_string()));
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
        client.classify(error, &progress, &attempt, client.limits.request_timeout)
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
        let ready = Progress {
            proxy_reached: true,
            proxy_connected: true,
            ..Progress::default()
        };
        let cases = [
            (
                io(std::io::ErrorKind::ConnectionRefused),
                Progress::default(),
                "cannot connect to the proxy https_proxy=http://user:****@127.0.0.1:3128",
            ),
            (
                ureq::Error::ConnectProxyFailed("proxy server responded 502/502".into()),
                ready.clone(),
                "did not open a tunnel to licensing.test:443",
            ),
            (
                ureq::Error::ConnectProxyFailed("proxy server responded 407/407".into()),
                ready,
                "refused the credentials in its URL (HTTP 407)",
            ),
        ];
        for (error, progress, expected) in cases {
            let classified = classified(&proxied, error, progress);
            let text = classified.to_string();
            assert!(text.contains(expected), "{text}");
            assert!(!text.contains("pw-secret"), "{text}");
            assert_tidy(&text);
            assert_eq!(
                classified.retryable(),
                !expected.contains("407"),
                "{classified:?}"
            );
        }
    }

    #[test]
    fn a_407_without_credentials_in_the_proxy_url_asks_for_them() {
        let proxied = client(&[
            ("API_ENDPOINT", "https://licensing.test/v1"),
            ("https_proxy", "http://127.0.0.1:3128"),
        ]);
        let error = ureq::Error::ConnectProxyFailed("proxy server responded 407/407".into());
        let progress = Progress {
            proxy_reached: true,
            proxy_connected: true,
            ..Progress::default()
        };
        let text = classified(&proxied, error, progress).to_string();
        assert!(
            text.contains("wants credentials (HTTP 407)")
                && text.contains("https_proxy=http://user:password@proxy:3128"),
            "{text}"
        );
    }

    #[test]
    fn an_https_proxy_is_connected_only_once_its_tls_is_done() {
        use std::io::ErrorKind::ConnectionReset;
        let proxied = client(&[
            ("API_ENDPOINT", "https://licensing.test/v1"),
            ("https_proxy", "https://127.0.0.1:3129"),
        ]);
        let tcp_only = Progress {
            proxy_reached: true,
            ..Progress::default()
        };
        let reset = classified(&proxied, io(ConnectionReset), tcp_only.clone());
        assert!(
            matches!(&reset, RequestError::NotSent(m)
                if m.contains("the TLS handshake with the proxy https_proxy=https://127.0.0.1:3129 \
                               failed (connection reset)")
                    && m.contains("give https_proxy as http://")),
            "{reset:?}"
        );
        let unknown_ca = classified(
            &proxied,
            ureq::Error::Rustls(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            )),
            tcp_only,
        );
        assert!(
            matches!(&unknown_ca, RequestError::NotSent(m)
                if m.starts_with("TLS verification of the proxy https_proxy=https://127.0.0.1:3129")
                    && m.contains("REQUESTS_CA_BUNDLE")),
            "{unknown_ca:?}"
        );
        let in_tunnel = classified(
            &proxied,
            io(ConnectionReset),
            Progress {
                proxy_reached: true,
                proxy_connected: true,
                ..Progress::default()
            },
        );
        assert!(
            matches!(&in_tunnel, RequestError::NotSent(m)
                if m.contains("failed while opening a tunnel to licensing.test:443")),
            "{in_tunnel:?}"
        );
    }

    #[test]
    fn timeouts_name_the_limit_that_ran_out() {
        let tiny = client(&[
            ("API_ENDPOINT", "https://licensing.test/v1"),
            ("LSINIT_REQUEST_TIMEOUT", "0.001"),
        ]);
        // The connect timer is capped by the 1 ms attempt: the request timeout is the cause.
        for fired in [ureq::Timeout::Connect, ureq::Timeout::Global] {
            let text = classified(&tiny, ureq::Error::Timeout(fired), Progress::default());
            let text = text.to_string();
            assert!(
                text.contains("timed out after 1ms (LSINIT_REQUEST_TIMEOUT)")
                    && !text.contains("LSINIT_CONNECT_TIMEOUT"),
                "{text}"
            );
        }

        let direct = client(&[("API_ENDPOINT", "https://licensing.test/v1")]);
        let attempt_of = |per_request, fired, progress| {
            let secret =
                Secret::from_env_value(CredentialKind::ApiKey, "some-api-key-value".as_ref())
                    .unwrap();
            let attempt = Attempt {
                url: "https://licensing.test/v1/license/request".into(),
                shown: "https://licensing.test/v1/license/request".into(),
                body: String::new(),
                secret: &secret,
            };
            direct.classify(
                ureq::Error::Timeout(fired),
                &progress,
                &attempt,
                per_request,
            )
        };
        let connected = Progress {
            connected: true,
            ..Progress::default()
        };
        // 0.4 s were left of the budget when the attempt started.
        let left = Duration::from_millis(400);
        let ran_out = attempt_of(left, ureq::Timeout::Global, connected.clone());
        assert!(
            matches!(&ran_out, RequestError::Exhausted(m)
                if m.starts_with("the activation budget of 30.0 s (LSINIT_ACTIVATION_TIMEOUT) \
                                  ran out during the TLS handshake with licensing.test:443")
                    && m.contains("before the request was sent")),
            "{ran_out:?}"
        );
        let cut = attempt_of(
            left,
            ureq::Timeout::RecvResponse,
            Progress {
                secured: true,
                sent: true,
                ..connected
            },
        );
        assert!(
            matches!(&cut, RequestError::MaybeProcessed(m)
                if m.contains("within 0.4 s (what was left of LSINIT_ACTIVATION_TIMEOUT)")),
            "{cut:?}"
        );
        let slow_connect = attempt_of(
            Duration::from_secs(10),
            ureq::Timeout::Connect,
            Progress::default(),
        );
        assert!(
            matches!(&slow_connect, RequestError::NotSent(m)
                if m.contains("timed out after 5.0 s (LSINIT_CONNECT_TIMEOUT)")
                    && m.contains("raise LSINIT_CONNECT_TIMEOUT")),
            "{slow_connect:?}"
        );
    }

    #[test]
    fn every_reason_is_one_tidy_line_with_the_endpoint() {
        use std::io::ErrorKind as K;
        let clients = [
            client(&[("API_ENDPOINT", "https://licensing.test/v1")]),
            client(&[
                ("API_ENDPOINT", "https://licensing.test/v1"),
                ("https_proxy", "http://127.0.0.1:3128"),
                ("no_proxy", "licensing.test"),
            ]),
            client(&[
                ("API_ENDPOINT", "https://licensing.test/v1"),
                ("https_proxy", "https://u:p@127.0.0.1:3128"),
            ]),
            client(&[("API_ENDPOINT", "http://127.0.0.1:1/v1")]),
        ];
        let stages = [
            Progress::default(),
            Progress {
                proxy_reached: true,
                ..Progress::default()
            },
            Progress {
                proxy_reached: true,
                proxy_connected: true,
                ..Progress::default()
            },
            Progress {
                proxy_reached: true,
                proxy_connected: true,
                connected: true,
                ..Progress::default()
            },
            Progress {
                proxy_reached: true,
                proxy_connected: true,
                connected: true,
                secured: true,
                ..Progress::default()
            },
            Progress {
                proxy_reached: true,
                proxy_connected: true,
                connected: true,
                secured: true,
                sent: true,
                ..Progress::default()
            },
        ];
        for client in &clients {
            for progress in &stages {
                let errors = [
                    io(K::ConnectionRefused),
                    io(K::ConnectionReset),
                    io(K::UnexpectedEof),
                    io(K::Other),
                    ureq::Error::Timeout(ureq::Timeout::Connect),
                    ureq::Error::Timeout(ureq::Timeout::Global),
                    ureq::Error::HostNotFound,
                    ureq::Error::ConnectProxyFailed("proxy server responded 502/502".into()),
                    ureq::Error::Rustls(rustls::Error::InvalidCertificate(
                        rustls::CertificateError::Revoked,
                    )),
                ];
                for error in errors {
                    let outcome = classified(client, error, progress.clone());
                    let text = outcome.to_string();
                    assert_tidy(&text);
                    let named = text.contains("licensing.test") || text.contains("127.0.0.1:1");
                    assert!(named, "no endpoint: {text}");
                    // A fix follows the last `;`.
                    assert!(text.contains("; "), "no fix: {text}");
                }
            }
        }
    }

    #[test]
    fn giving_up_says_what_to_do() {
        let busy = RequestError::Refused {
            status: 429,
            retry_after: None,
            url: "https://licensing.test/v1/license/request".into(),
        };
        let text = gave_up(&busy, 5);
        assert_eq!(
            text,
            "the licensing server at https://licensing.test/v1/license/request is busy \
             (HTTP 429) (gave up after 5 attempts, LSINIT_MAX_ATTEMPTS); try again later, or \
             raise LSINIT_MAX_ATTEMPTS"
        );
        let text = gave_up(&busy, 1);
        assert!(
            text.contains("not retried: LSINIT_MAX_ATTEMPTS is 1") && text.contains("try again"),
            "{text}"
        );
    }

    #[test]
    fn tls_errors_say_what_to_do() {
        use rustls::{CertificateError, Error};
        let unknown = describe_tls_error(
            &Error::InvalidCertificate(CertificateError::UnknownIssuer),
            "h:443",
            "API_ENDPOINT",
            "https://h/v1/license/request",
        );
        assert!(
            unknown.contains("unknown CA") && unknown.contains("REQUESTS_CA_BUNDLE"),
            "{unknown}"
        );
        let expired = describe_tls_error(
            &Error::InvalidCertificate(CertificateError::Expired),
            "h:443",
            "API_ENDPOINT",
            "https://h/v1",
        );
        assert!(expired.contains("clock"), "{expired}");
        let revoked = describe_tls_error(
            &Error::InvalidCertificate(CertificateError::Revoked),
            "the proxy https_proxy=https://p:3129",
            "https_proxy",
            "https://h/v1",
        );
        assert!(
            revoked.contains("has been revoked; check that https_proxy names the right server"),
            "{revoked}"
        );
    }
}
