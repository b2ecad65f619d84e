//! The licensing API itself: a loopback listener, one thread per connection, the configured
//! credentials, the licenses issued so far, the queue of faults to inject, and the record of
//! every request received.
//!
//! Owns routing (SPEC 3.5/3.6 as the server sees them) and fault injection. Does not own the
//! license document format (`license`) or HTTP framing (`http`).

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::http::{self, ReadError, Request, Response};
use crate::license::{LicenseTemplate, make_license, new_license_id};
use crate::tls::{TlsFault, TlsFront};

/// Path prefix of the API; clients are given `http://127.0.0.1:PORT/v1` as base URL.
const API_PREFIX: &str = "/v1";

/// The kind of a credential, as sent in `credentials.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// `LOCALSTACK_AUTH_TOKEN`, sent as `licensing-auth-token`.
    AuthToken,
    /// `LOCALSTACK_API_KEY`, sent as `licensing-api-key`.
    ApiKey,
}

impl CredentialKind {
    /// The `credentials.type` string of this kind.
    pub fn wire_name(self) -> &'static str {
        match self {
            CredentialKind::AuthToken => "licensing-auth-token",
            CredentialKind::ApiKey => "licensing-api-key",
        }
    }

    fn from_wire_name(name: &str) -> Option<CredentialKind> {
        match name {
            "licensing-auth-token" => Some(CredentialKind::AuthToken),
            "licensing-api-key" => Some(CredentialKind::ApiKey),
            _ => None,
        }
    }
}

/// A credential the server knows, and what it answers for it.
#[derive(Clone, PartialEq)]
pub struct Credential {
    /// The token or key, compared exactly.
    pub token: String,
    /// Which `credentials.type` it must be sent as; the other type is an unknown credential.
    pub kind: CredentialKind,
    /// What its licenses look like. Defaults to [`LicenseTemplate::default`].
    pub license: LicenseTemplate,
    /// An error code (e.g. `licensing.license.expired`) to answer instead of a license.
    /// Defaults to none.
    pub reject: Option<String>,
}

impl Credential {
    /// An auth token (`licensing-auth-token`) with the default license.
    pub fn auth_token(token: &str) -> Credential {
        Credential::new(token, CredentialKind::AuthToken)
    }

    /// An API key (`licensing-api-key`) with the default license.
    pub fn api_key(key: &str) -> Credential {
        Credential::new(key, CredentialKind::ApiKey)
    }

    fn new(token: &str, kind: CredentialKind) -> Credential {
        Credential {
            token: token.to_string(),
            kind,
            license: LicenseTemplate::default(),
            reject: None,
        }
    }

    /// The same credential with licenses made from `template`.
    pub fn with_license(mut self, template: LicenseTemplate) -> Credential {
        self.license = template;
        self
    }

    /// The same credential, answered with the error `code` instead of a license.
    pub fn rejected_with(mut self, code: &str) -> Credential {
        self.reject = Some(code.to_string());
        self
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("token", &mask_token(&self.token))
            .field("kind", &self.kind)
            .field("license", &self.license)
            .field("reject", &self.reject)
            .finish()
    }
}

/// A misbehaviour injected into the answer to one request. Queued faults are consumed one per
/// request, in order, after the request has been read and recorded; with the queue empty the
/// server behaves normally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer `status` with `body` and extra `headers` (e.g. 429 with `Retry-After`, 302 with
    /// `Location`, 407, a 403 without a code). `Content-Type: application/json` and
    /// `Content-Length` are added unless `headers` has them.
    Status {
        status: u16,
        body: String,
        headers: Vec<(String, String)>,
    },
    /// Wait, then answer normally.
    Delay(Duration),
    /// Send nothing for that long, then close the connection.
    Stall(Duration),
    /// Send nothing and keep the connection open until the server is dropped.
    NoAnswer,
    /// Send the normal response one byte per `interval`.
    TrickleHeaders { interval: Duration },
    /// Send the normal response's head and its first `after` body bytes, wait `duration`,
    /// then close.
    StallBody { after: usize, duration: Duration },
    /// Send the normal response's head and only half its body, then close.
    TruncatedBody,
    /// A 200 announcing and streaming a valid-looking JSON body of `bytes` bytes in chunks
    /// (never held in memory at once).
    Oversized { bytes: usize },
    /// Answer `status` with `body` verbatim, JSON or not, as `application/json`.
    Body { status: u16, body: String },
    /// Reset the connection (RST) once the request is read; nothing is answered.
    ResetAfterRequest,
    /// Answer the error `code` as `{"message": code}` with the status a rejection of that code
    /// gets: 400 for `licensing.credentials.format`, 404 for `licensing.license.not_found`,
    /// 403 for the others.
    Reject(String),
}

/// One request as the server received it, recorded before any fault is applied.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// E.g. `POST`.
    pub method: String,
    /// The request target as sent, e.g. `/v1/license/request`.
    pub path: String,
    /// Header names lowercase, values trimmed, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body, decoded if it was chunked.
    pub body: Vec<u8>,
    /// The body parsed as JSON, when it parses.
    pub json: Option<Value>,
}

impl RecordedRequest {
    /// The value of the first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A reference licensing API on `127.0.0.1` and an ephemeral port. Dropping it stops it:
/// the listener closes and every open connection, stalled ones included, is shut down.
pub struct LicenseServer {
    shared: Arc<Shared>,
    /// The plain listener's port (the relay's backend when `tls` is set).
    port: u16,
    acceptor: Option<JoinHandle<()>>,
    /// The TLS listener clients use instead of the plain one, when started with TLS.
    tls: Option<TlsFront>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when the server stops, to wake handlers waiting out a fault.
    stopped: Condvar,
    /// Signalled whenever a request is recorded, for [`LicenseServer::wait_for_requests`].
    recorded: Condvar,
}

#[derive(Default)]
struct State {
    stopping: bool,
    log_requests: bool,
    credentials: Vec<Credential>,
    /// Issued license ids and the token each was issued to.
    licenses: HashMap<String, String>,
    faults: VecDeque<Fault>,
    requests: Vec<RecordedRequest>,
    /// A handle on each open connection, so that stopping can shut them all down.
    connections: HashMap<u64, TcpStream>,
    next_connection: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sleeps for `duration` unless the server stops first; true if it slept it out.
    fn sleep(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        let mut state = self.lock();
        while !state.stopping {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            state = match self.stopped.wait_timeout(state, left) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        false
    }

    fn wait_until_stopped(&self) {
        let mut state = self.lock();
        while !state.stopping {
            state = self
                .stopped
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    fn stopping(&self) -> bool {
        self.lock().stopping
    }
}

impl LicenseServer {
    /// Binds `127.0.0.1:0` and starts accepting connections.
    pub fn start() -> io::Result<LicenseServer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            stopped: Condvar::new(),
            recorded: Condvar::new(),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("license-server-{port}"))
                .spawn(move || accept_loop(&listener, &shared))?
        };
        Ok(LicenseServer {
            shared,
            port,
            acceptor: Some(acceptor),
            tls: None,
        })
    }

    /// Like [`LicenseServer::start`], but clients speak TLS to it with `cert_pem` (a PEM chain,
    /// leaf first) and `key_pem` (a PKCS#8, PKCS#1 or SEC1 PEM key). Every [`Fault`] works as
    /// over plain HTTP; [`TlsFault`]s break the handshake itself.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> io::Result<LicenseServer> {
        let mut server = LicenseServer::start()?;
        server.tls = Some(TlsFront::start(cert_pem, key_pem, server.port)?);
        Ok(server)
    }

    /// The port clients connect to, on `127.0.0.1` (the TLS one when started with TLS).
    pub fn port(&self) -> u16 {
        self.tls.as_ref().map_or(self.port, TlsFront::port)
    }

    /// The base URL to give clients: `http://127.0.0.1:PORT/v1`, or `https://…` with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}{API_PREFIX}", self.port())
    }

    /// Queues a fault for a coming TLS handshake. No effect without TLS.
    pub fn push_tls_fault(&self, fault: TlsFault) {
        if let Some(tls) = &self.tls {
            tls.push_fault(fault);
        }
    }

    /// TLS connections accepted so far, failed handshakes included (0 without TLS).
    pub fn tls_connections(&self) -> usize {
        self.tls.as_ref().map_or(0, TlsFront::accepted)
    }

    /// TLS handshakes completed so far (0 without TLS).
    pub fn tls_handshakes(&self) -> usize {
        self.tls.as_ref().map_or(0, TlsFront::handshakes)
    }

    /// Adds a credential, replacing the one with the same token and kind if any, so a test can
    /// change what a credential gets between requests.
    pub fn add_credential(&self, credential: Credential) {
        let mut state = self.shared.lock();
        state
            .credentials
            .retain(|c| !(c.token == credential.token && c.kind == credential.kind));
        state.credentials.push(credential);
    }

    /// Makes `/license/activate` accept `id` from the credential `token`, as if the server had
    /// issued it (for fixtures made with [`make_license`]).
    pub fn remember_license(&self, id: &str, token: &str) {
        self.shared
            .lock()
            .licenses
            .insert(id.to_string(), token.to_string());
    }

    /// Queues a fault for a coming request.
    pub fn push_fault(&self, fault: Fault) {
        self.shared.lock().faults.push_back(fault);
    }

    /// Drops the faults not yet consumed.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// How many requests were received so far.
    pub fn request_count(&self) -> usize {
        self.shared.lock().requests.len()
    }

    /// Blocks until at least `n` requests have been received (counting from the last
    /// [`LicenseServer::clear_requests`]) or `timeout` has passed; true if they were. No polling:
    /// the server wakes the caller as it records each request.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        while state.requests.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = match self.shared.recorded.wait_timeout(state, left) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }

    /// Forgets the requests received so far.
    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// Logs one line per request to stderr (method, path, credential type, masked token,
    /// answer). Off by default.
    pub fn set_request_log(&self, enabled: bool) {
        self.shared.lock().log_requests = enabled;
    }
}

impl Drop for LicenseServer {
    fn drop(&mut self) {
        {
            let mut state = self.shared.lock();
            state.stopping = true;
            for connection in state.connections.values() {
                let _ = connection.shutdown(Shutdown::Both);
            }
        }
        self.shared.stopped.notify_all();

        http::stop_acceptor(self.port, self.acceptor.take());
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let id = {
            let mut state = shared.lock();
            if state.stopping {
                return;
            }
            let Ok(handle) = stream.try_clone() else {
                continue;
            };
            state.next_connection += 1;
            let id = state.next_connection;
            state.connections.insert(id, handle);
            id
        };
        let connection = Connection {
            shared: Arc::clone(shared),
            id,
        };
        let spawned = thread::Builder::new()
            .name(format!("license-server-conn-{id}"))
            .spawn(move || connection.handle(stream));
        // On failure the closure, and with it the connection, is dropped: the client sees EOF.
        drop(spawned);
    }
}

/// One accepted connection; dropping it unregisters it.
struct Connection {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.lock().connections.remove(&self.id);
    }
}

impl Connection {
    fn handle(self, mut stream: TcpStream) {
        // A client that stops sending must not hold a thread forever; faults that wait do so
        // after reading, and writes to a client that stops reading give up eventually.
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
        let _ = stream.set_nodelay(true);

        let request = match http::read_request(&mut stream) {
            Ok(request) => request,
            Err(ReadError::Closed) => return,
            Err(ReadError::TooLarge) => {
                let body = json!({"error": "request body larger than 1 MiB"});
                return refuse(stream, &Response::json(413, &body));
            }
            Err(ReadError::Malformed(what)) => {
                let body = json!({"error": format!("bad request: {what}")});
                return refuse(stream, &Response::json(400, &body));
            }
        };
        let json = serde_json::from_slice::<Value>(&request.body).ok();
        let (fault, log) = {
            let mut state = self.shared.lock();
            state.requests.push(RecordedRequest {
                method: request.method.clone(),
                path: request.path.clone(),
                headers: request.headers.clone(),
                body: request.body.clone(),
                json: json.clone(),
            });
            (state.faults.pop_front(), state.log_requests)
        };
        self.shared.recorded.notify_all();

        if fault == Some(Fault::ResetAfterRequest) {
            if log {
                log_request(&request, json.as_ref(), "reset (fault)");
            }
            // The registered handle must be gone first, or closing ours would not close the
            // socket.
            drop(self);
            http::reset(stream);
            return;
        }

        let answer = |shared: &Shared| route(&mut shared.lock(), &request, json.as_ref());
        let outcome = match fault {
            None => self.send(&mut stream, &answer(&self.shared)),
            Some(Fault::Status {
                status,
                body,
                headers,
            }) => {
                let response = Response {
                    status,
                    headers,
                    body: body.into_bytes(),
                };
                self.send(&mut stream, &response)
            }
            Some(Fault::Body { status, body }) => {
                let response = Response {
                    status,
                    headers: Vec::new(),
                    body: body.into_bytes(),
                };
                self.send(&mut stream, &response)
            }
            Some(Fault::Reject(code)) => self.send(&mut stream, &rejection(&code)),
            Some(Fault::Delay(duration)) => {
                if !self.shared.sleep(duration) {
                    return;
                }
                self.send(&mut stream, &answer(&self.shared))
            }
            Some(Fault::Stall(duration)) => {
                self.shared.sleep(duration);
                format!("stalled {duration:?}, closed (fault)")
            }
            Some(Fault::NoAnswer) => {
                if log {
                    log_request(&request, json.as_ref(), "no answer (fault)");
                }
                self.shared.wait_until_stopped();
                return;
            }
            Some(Fault::TrickleHeaders { interval }) => {
                let response = answer(&self.shared);
                for byte in response.to_bytes() {
                    if stream.write_all(&[byte]).is_err() || !self.shared.sleep(interval) {
                        return;
                    }
                }
                format!("{} trickled (fault)", response.status)
            }
            Some(Fault::StallBody { after, duration }) => {
                let response = answer(&self.shared);
                let mut bytes = response.head(response.body.len());
                bytes.extend_from_slice(&response.body[..after.min(response.body.len())]);
                if stream.write_all(&bytes).is_ok() {
                    self.shared.sleep(duration);
                }
                format!(
                    "{} body stalled after {after} bytes (fault)",
                    response.status
                )
            }
            Some(Fault::TruncatedBody) => {
                let response = answer(&self.shared);
                let mut bytes = response.head(response.body.len());
                bytes.extend_from_slice(&response.body[..response.body.len() / 2]);
                let _ = stream.write_all(&bytes);
                format!("{} truncated body (fault)", response.status)
            }
            Some(Fault::Oversized { bytes }) => {
                let _ = self.send_oversized(&mut stream, bytes);
                format!("200 with {bytes} bytes (fault)")
            }
            Some(Fault::ResetAfterRequest) => return, // Handled above.
        };
        if log {
            log_request(&request, json.as_ref(), &outcome);
        }
        let _ = stream.shutdown(Shutdown::Write);
    }

    /// Writes `response` whole; returns what to log.
    fn send(&self, stream: &mut TcpStream, response: &Response) -> String {
        match stream.write_all(&response.to_bytes()) {
            Ok(()) => response.status.to_string(),
            Err(error) => format!("{} not sent: {error}", response.status),
        }
    }

    /// Streams a 200 whose JSON body is `{"padding":"xxx…"}` padded to exactly `bytes` bytes.
    fn send_oversized(&self, stream: &mut TcpStream, bytes: usize) -> io::Result<()> {
        const OPEN: &[u8] = b"{\"padding\":\"";
        const CLOSE: &[u8] = b"\"}";
        let response = Response {
            status: 200,
            headers: Vec::new(),
            body: Vec::new(),
        };
        stream.write_all(&response.head(bytes))?;
        if bytes < OPEN.len() + CLOSE.len() {
            return stream.write_all(&vec![b' '; bytes]);
        }
        stream.write_all(OPEN)?;
        let chunk = vec![b'x'; 64 * 1024];
        let mut left = bytes - OPEN.len() - CLOSE.len();
        while left > 0 {
            if self.shared.stopping() {
                return Ok(());
            }
            let n = left.min(chunk.len());
            stream.write_all(&chunk[..n])?;
            left -= n;
        }
        stream.write_all(CLOSE)
    }
}

/// Answers a request that could not be read, then drains what the client still sends for a
/// moment, so that closing does not reset the connection before the answer is read.
fn refuse(mut stream: TcpStream, response: &Response) {
    if stream.write_all(&response.to_bytes()).is_err() {
        return;
    }
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut sink = [0u8; 64 * 1024];
    let mut drained = 0;
    while drained < 2 * http::MAX_BODY {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

/// The normal answer to `request`.
fn route(state: &mut State, request: &Request, json: Option<&Value>) -> Response {
    let path = request.path.split('?').next().unwrap_or_default();
    let activate = match (request.method.as_str(), path.strip_prefix(API_PREFIX)) {
        ("POST", Some("/license/request")) => false,
        ("POST", Some("/license/activate")) => true,
        _ => return Response::json(404, &json!({"error": "not found"})),
    };
    let Some(call) = json.and_then(|json| LicenseCall::parse(json, activate)) else {
        return rejection("licensing.credentials.format");
    };
    if call.kind == CredentialKind::AuthToken && !is_well_formed_auth_token(call.token) {
        return rejection("licensing.credentials.format");
    }
    let Some(credential) = state
        .credentials
        .iter()
        .find(|c| c.token == call.token && c.kind == call.kind)
    else {
        return rejection("licensing.credentials.invalid");
    };
    if let Some(code) = &credential.reject {
        return rejection(code);
    }

    let id = match call.license_id {
        Some(id) if state.licenses.get(id) == Some(&credential.token) => id.to_string(),
        Some(_) => return rejection("licensing.license.not_found"),
        None => new_license_id(),
    };
    let license = make_license(&credential.license, &credential.token, call.version, &id);
    let token = credential.token.clone();
    state.licenses.insert(id, token);
    Response::json(200, &license)
}

/// The fields of a `/license/request` or `/license/activate` body that matter here.
struct LicenseCall<'a> {
    kind: CredentialKind,
    token: &'a str,
    version: &'a str,
    license_id: Option<&'a str>,
}

impl<'a> LicenseCall<'a> {
    /// `None` when the body is not of the shape SPEC 3.5 describes.
    fn parse(json: &'a Value, activate: bool) -> Option<LicenseCall<'a>> {
        let credentials = json.get("credentials")?;
        let kind = CredentialKind::from_wire_name(credentials.get("type")?.as_str()?)?;
        let token = credentials.get("token")?.as_str()?;
        let product = json.get("product")?;
        if product.get("name")?.as_str()? != "localstack-pro" {
            return None;
        }
        let version = product.get("version")?.as_str()?;
        json.get("machine")?.as_object()?;
        let license_id = match activate {
            true => Some(json.get("license_id")?.as_str()?),
            false => None,
        };
        Some(LicenseCall {
            kind,
            token,
            version,
            license_id,
        })
    }
}

/// `{"message": code}` with the status a rejection of that code gets.
fn rejection(code: &str) -> Response {
    let status = match code {
        "licensing.credentials.format" => 400,
        "licensing.license.not_found" => 404,
        _ => 403,
    };
    Response::json(status, &json!({"message": code}))
}

/// SPEC 3.1's shape of an auth token,
/// `^ls[A-Za-z]*-[A-Za-z]{4}[A-Za-z0-9]{4}(-[A-Za-z0-9]{4}){3}-[A-Za-z0-9]{12}$`.
/// The MD5 checksum is not checked: an unknown token is refused anyway.
pub fn is_well_formed_auth_token(token: &str) -> bool {
    let Some(rest) = token.strip_prefix("ls") else {
        return false;
    };
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_alphabetic());
    let Some(rest) = rest.strip_prefix('-') else {
        return false;
    };
    let groups: Vec<&str> = rest.split('-').collect();
    let alnum = |group: &str, len: usize| {
        group.len() == len && group.bytes().all(|b| b.is_ascii_alphanumeric())
    };
    groups.len() == 5
        && alnum(groups[0], 8)
        && groups[0].bytes().take(4).all(|b| b.is_ascii_alphabetic())
        && groups[1..4].iter().all(|group| alnum(group, 4))
        && alnum(groups[4], 12)
}

/// A token as logs may show it: its first 3 characters and its length, or only its length when
/// it is shorter than 12 characters.
pub fn mask_token(token: &str) -> String {
    let length = token.chars().count();
    if length >= 12 {
        let start: String = token.chars().take(3).collect();
        format!("{start}... ({length} chars)")
    } else {
        format!("<{length} chars>")
    }
}

fn log_request(request: &Request, json: Option<&Value>, outcome: &str) {
    let credentials = json.and_then(|json| json.get("credentials"));
    let kind = credentials
        .and_then(|c| c.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("-");
    let token = credentials
        .and_then(|c| c.get("token"))
        .and_then(Value::as_str);
    let token = token.map_or_else(|| "-".to_string(), mask_token);
    eprintln!(
        "license-server: {} {} {kind} {token} -> {outcome}",
        request.method, request.path
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::license::sign;
    use crate::license::{LicenseTemplate, parse_date};

    const TOKEN: &str = "ls-Wxyz0123-4567-89ab-cdef-ghijklmnf90e";
    const OTHER_TOKEN: &str = "ls-Abcd9876-aaaa-bbbb-cccc-dddddddd9d61";
    const API_KEY: &str = "legacy-api-key-0001";

    /// A response as a client saw it: `None` fields when the connection ended first.
    #[derive(Debug)]
    struct Seen {
        status: Option<u16>,
        head: String,
        body: Vec<u8>,
    }

    impl Seen {
        fn json(&self) -> Value {
            serde_json::from_slice(&self.body).unwrap()
        }

        fn content_length(&self) -> usize {
            let line = self
                .head
                .lines()
                .find(|l| l.to_ascii_lowercase().starts_with("content-length:"))
                .unwrap();
            line.split(':').nth(1).unwrap().trim().parse().unwrap()
        }
    }

    fn connect(server: &LicenseServer) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
    }

    fn send_raw(server: &LicenseServer, raw: &[u8]) -> TcpStream {
        let mut stream = connect(server);
        stream.write_all(raw).unwrap();
        stream
    }

    fn post_raw(path: &str, body: &str) -> Vec<u8> {
        format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn read_all(mut stream: TcpStream) -> io::Result<Seen> {
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(raw.len(), |i| i + 4);
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
        Ok(Seen {
            status,
            head,
            body: raw[split..].to_vec(),
        })
    }

    fn body(kind: &str, token: &str, license_id: Option<&str>) -> String {
        let mut body = json!({
            "credentials": {"type": kind, "token": token},
            "product": {"name": "localstack-pro", "version": "4.14.0"},
            "machine": {"id": "gen_0123456789ab", "cli": false, "ci": false,
                        "system": "Linux(Container),6.1.0,x86_64"},
        });
        if let Some(id) = license_id {
            body["license_id"] = json!(id);
        }
        body.to_string()
    }

    fn request(server: &LicenseServer, token: &str) -> Seen {
        let raw = post_raw(
            "/v1/license/request",
            &body("licensing-auth-token", token, None),
        );
        read_all(send_raw(server, &raw)).unwrap()
    }

    fn activate(server: &LicenseServer, token: &str, id: &str) -> Seen {
        let raw = post_raw(
            "/v1/license/activate",
            &body("licensing-auth-token", token, Some(id)),
        );
        read_all(send_raw(server, &raw)).unwrap()
    }

    fn server() -> LicenseServer {
        let server = LicenseServer::start().unwrap();
        server.add_credential(Credential::auth_token(TOKEN));
        server.add_credential(Credential::api_key(API_KEY));
        server
    }

    #[test]
    fn url_is_loopback_v1() {
        let server = LicenseServer::start().unwrap();
        assert_eq!(
            server.url(),
            format!("http://127.0.0.1:{}/v1", server.port())
        );
    }

    #[test]
    fn request_issues_a_license_that_verifies() {
        let server = server();
        let seen = request(&server, TOKEN);
        assert_eq!(seen.status, Some(200), "{seen:?}");
        assert!(seen.head.contains("Connection: close\r\n"));
        let license = seen.json();
        assert_eq!(license["signature"], sign(&license, TOKEN).unwrap());
        assert_eq!(license["offline_data"]["localstack_version"], "4.14.0");
        assert_eq!(license["license_status"], "ACTIVE");
        assert!(license["id"].as_str().unwrap().starts_with("license_"));

        let recorded = server.requests();
        assert_eq!(recorded.len(), 1);
        assert_eq!(recorded[0].method, "POST");
        assert_eq!(recorded[0].path, "/v1/license/request");
        assert_eq!(recorded[0].header("Content-Type"), Some("application/json"));
        assert_eq!(
            recorded[0].json.as_ref().unwrap()["credentials"]["token"],
            TOKEN
        );
    }

    #[test]
    fn api_key_gets_a_license_signed_with_it() {
        let server = server();
        let raw = post_raw(
            "/v1/license/request",
            &body("licensing-api-key", API_KEY, None),
        );
        let seen = read_all(send_raw(&server, &raw)).unwrap();
        assert_eq!(seen.status, Some(200));
        assert_eq!(
            seen.json()["signature"],
            sign(&seen.json(), API_KEY).unwrap()
        );
    }

    #[test]
    fn unknown_or_wrong_type_credential_is_invalid() {
        let server = server();
        let seen = request(&server, OTHER_TOKEN);
        assert_eq!(seen.status, Some(403));
        assert_eq!(
            seen.json(),
            json!({"message": "licensing.credentials.invalid"})
        );

        let raw = post_raw(
            "/v1/license/request",
            &body("licensing-api-key", TOKEN, None),
        );
        let seen = read_all(send_raw(&server, &raw)).unwrap();
        assert_eq!(seen.status, Some(403));
        assert_eq!(
            seen.json(),
            json!({"message": "licensing.credentials.invalid"})
        );
    }

    #[test]
    fn malformed_token_or_body_is_a_format_error() {
        let server = server();
        for raw in [
            post_raw(
                "/v1/license/request",
                &body("licensing-auth-token", "ls-short", None),
            ),
            post_raw("/v1/license/request", "{not json"),
            post_raw(
                "/v1/license/request",
                r#"{"credentials": {"type": "x", "token": "y"}}"#,
            ),
            post_raw(
                "/v1/license/activate",
                &body("licensing-auth-token", TOKEN, None),
            ),
        ] {
            let seen = read_all(send_raw(&server, &raw)).unwrap();
            assert_eq!(seen.status, Some(400));
            assert_eq!(
                seen.json(),
                json!({"message": "licensing.credentials.format"})
            );
        }
        assert_eq!(server.request_count(), 4);
    }

    #[test]
    fn other_paths_are_not_found_without_a_licensing_code() {
        let server = server();
        let raw = b"GET /v1/license/request HTTP/1.1\r\nHost: x\r\n\r\n";
        let seen = read_all(send_raw(&server, raw)).unwrap();
        assert_eq!(seen.status, Some(404));
        assert_eq!(seen.json(), json!({"error": "not found"}));
        let seen = read_all(send_raw(&server, &post_raw("/license/request", "{}"))).unwrap();
        assert_eq!(seen.status, Some(404));
    }

    #[test]
    fn auth_token_shape() {
        assert!(is_well_formed_auth_token(TOKEN));
        assert!(is_well_formed_auth_token(
            "lsAbc-Wxyz0123-4567-89ab-cdef-ghijklmnf90e"
        ));
        assert!(!is_well_formed_auth_token(
            "ls-W1yz0123-4567-89ab-cdef-ghijklmnf90e"
        ));
        assert!(!is_well_formed_auth_token(
            "ls-Wxyz0123-4567-89ab-cdef-ghijklmnf90"
        ));
        assert!(!is_well_formed_auth_token(
            "ls-Wxyz0123-4567-89ab-cdef-ghijklmnf90e-"
        ));
        assert!(!is_well_formed_auth_token(
            "xs-Wxyz0123-4567-89ab-cdef-ghijklmnf90e"
        ));
        assert!(!is_well_formed_auth_token(
            "ls-Wxyz0123-4567-89_b-cdef-ghijklmnf90e"
        ));
    }

    #[test]
    fn masks_tokens() {
        assert_eq!(mask_token(TOKEN), "ls-... (39 chars)");
        assert_eq!(mask_token("short"), "<5 chars>");
        let debug = format!("{:?}", Credential::auth_token(TOKEN));
        assert!(!debug.contains(TOKEN), "{debug}");
    }

    #[test]
    fn activate_renews_a_known_license_only_for_its_credential() {
        let server = server();
        server.add_credential(Credential::auth_token(OTHER_TOKEN));
        let issued = request(&server, TOKEN).json();
        let id = issued["id"].as_str().unwrap();

        let seen = activate(&server, TOKEN, id);
        assert_eq!(seen.status, Some(200));
        let renewed = seen.json();
        assert_eq!(renewed["id"], id);
        assert_eq!(renewed["signature"], sign(&renewed, TOKEN).unwrap());

        for (token, id) in [(TOKEN, "license_unknown"), (OTHER_TOKEN, id)] {
            let seen = activate(&server, token, id);
            assert_eq!(seen.status, Some(404));
            assert_eq!(
                seen.json(),
                json!({"message": "licensing.license.not_found"})
            );
        }

        server.remember_license("license_fixture", OTHER_TOKEN);
        assert_eq!(
            activate(&server, OTHER_TOKEN, "license_fixture").status,
            Some(200)
        );
    }

    #[test]
    fn template_and_reject_shape_the_answer() {
        let server = server();
        let template = LicenseTemplate {
            license_status: "SUSPENDED".into(),
            expiry_date: time::Duration::days(-3),
            ..LicenseTemplate::default()
        };
        server.add_credential(Credential::auth_token(TOKEN).with_license(template));
        let license = request(&server, TOKEN).json();
        assert_eq!(license["license_status"], "SUSPENDED");
        let expiry = parse_date(license["expiry_date"].as_str().unwrap()).unwrap();
        assert!(expiry < time::OffsetDateTime::now_utc());

        server.add_credential(
            Credential::auth_token(TOKEN).rejected_with("licensing.license.expired"),
        );
        let seen = request(&server, TOKEN);
        assert_eq!(seen.status, Some(403));
        assert_eq!(seen.json(), json!({"message": "licensing.license.expired"}));
    }

    #[test]
    fn faults_are_consumed_in_order_and_requests_recorded_first() {
        let server = server();
        server.push_fault(Fault::Status {
            status: 429,
            body: r#"{"message":"slow down"}"#.into(),
            headers: vec![("Retry-After".into(), "2".into())],
        });
        server.push_fault(Fault::Body {
            status: 200,
            body: "<html>garbage".into(),
        });
        server.push_fault(Fault::Reject("licensing.credentials.format".into()));
        server.push_fault(Fault::Reject("licensing.license.not_found".into()));

        let seen = request(&server, TOKEN);
        assert_eq!(seen.status, Some(429));
        assert!(seen.head.contains("Retry-After: 2\r\n"), "{}", seen.head);
        let seen = request(&server, TOKEN);
        assert_eq!(
            (seen.status, seen.body.as_slice()),
            (Some(200), &b"<html>garbage"[..])
        );
        assert_eq!(request(&server, TOKEN).status, Some(400));
        assert_eq!(request(&server, TOKEN).status, Some(404));
        assert_eq!(request(&server, TOKEN).status, Some(200));
        assert_eq!(server.request_count(), 5);

        server.push_fault(Fault::Status {
            status: 503,
            body: String::new(),
            headers: vec![],
        });
        server.clear_faults();
        assert_eq!(request(&server, TOKEN).status, Some(200));
        server.clear_requests();
        assert_eq!(server.request_count(), 0);
    }

    #[test]
    fn delay_then_answers() {
        let server = server();
        server.push_fault(Fault::Delay(Duration::from_millis(150)));
        let started = Instant::now();
        assert_eq!(request(&server, TOKEN).status, Some(200));
        assert!(started.elapsed() >= Duration::from_millis(150));
    }

    #[test]
    fn stall_sends_nothing_then_closes() {
        let server = server();
        server.push_fault(Fault::Stall(Duration::from_millis(150)));
        let started = Instant::now();
        let seen = request(&server, TOKEN);
        assert!(started.elapsed() >= Duration::from_millis(150));
        assert_eq!(seen.status, None);
        assert!(seen.head.is_empty() && seen.body.is_empty());
        assert_eq!(server.request_count(), 1);
    }

    #[test]
    fn no_answer_holds_the_connection_until_the_server_stops() {
        let server = server();
        server.push_fault(Fault::NoAnswer);
        let mut stream = send_raw(
            &server,
            &post_raw(
                "/v1/license/request",
                &body("licensing-auth-token", TOKEN, None),
            ),
        );
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = [0u8; 16];
        let error = stream.read(&mut buf).unwrap_err();
        assert!(matches!(
            error.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ));
        assert_eq!(server.request_count(), 1);

        let started = Instant::now();
        drop(server);
        assert!(started.elapsed() < Duration::from_secs(2));
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        assert_eq!(
            stream.read(&mut buf).unwrap_or(0),
            0,
            "closed once the server stops"
        );
    }

    #[test]
    fn trickle_sends_the_whole_response_slowly() {
        let server = server();
        server.push_fault(Fault::TrickleHeaders {
            interval: Duration::from_millis(2),
        });
        let raw = b"GET /nothing HTTP/1.1\r\n\r\n";
        let seen = read_all(send_raw(&server, raw)).unwrap();
        assert_eq!(seen.status, Some(404));
        assert_eq!(seen.json(), json!({"error": "not found"}));
    }

    #[test]
    fn stall_body_sends_head_and_some_body() {
        let server = server();
        server.push_fault(Fault::StallBody {
            after: 10,
            duration: Duration::from_millis(100),
        });
        let seen = request(&server, TOKEN);
        assert_eq!(seen.status, Some(200));
        assert_eq!(seen.body.len(), 10);
        assert!(seen.content_length() > 10);
    }

    #[test]
    fn truncated_body_is_shorter_than_announced() {
        let server = server();
        server.push_fault(Fault::TruncatedBody);
        let seen = request(&server, TOKEN);
        assert_eq!(seen.status, Some(200));
        assert!(seen.body.len() < seen.content_length());
        assert!(!seen.body.is_empty());
    }

    #[test]
    fn oversized_streams_exactly_the_announced_json() {
        let server = server();
        let bytes = 3 * 1024 * 1024 + 7;
        server.push_fault(Fault::Oversized { bytes });
        let seen = request(&server, TOKEN);
        assert_eq!(seen.status, Some(200));
        assert_eq!(seen.content_length(), bytes);
        assert_eq!(seen.body.len(), bytes);
        assert_eq!(seen.json()["padding"].as_str().unwrap().len(), bytes - 14);
    }

    #[test]
    fn reset_after_request_resets() {
        let server = server();
        server.push_fault(Fault::ResetAfterRequest);
        let raw = post_raw(
            "/v1/license/request",
            &body("licensing-auth-token", TOKEN, None),
        );
        let error = read_all(send_raw(&server, &raw)).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(server.request_count(), 1);
        assert_eq!(request(&server, TOKEN).status, Some(200));
    }

    #[test]
    fn wait_for_requests_wakes_when_the_nth_request_is_recorded() {
        let server = server();
        assert!(!server.wait_for_requests(1, Duration::from_millis(50)));
        assert!(server.wait_for_requests(0, Duration::ZERO));

        let started = Instant::now();
        let waited = thread::scope(|scope| {
            let waiter = scope.spawn(|| server.wait_for_requests(2, Duration::from_secs(10)));
            request(&server, TOKEN);
            thread::sleep(Duration::from_millis(100));
            request(&server, TOKEN);
            waiter.join().unwrap()
        });
        assert!(waited);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(server.request_count(), 2);
    }

    #[test]
    fn large_body_is_refused_with_413() {
        let server = server();
        let raw = b"POST /v1/license/request HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n";
        let seen = read_all(send_raw(&server, raw)).unwrap();
        assert_eq!(seen.status, Some(413));
        assert_eq!(server.request_count(), 0);
    }

    #[test]
    fn expect_continue_and_chunked_bodies_work() {
        let server = server();
        let json = body("licensing-auth-token", TOKEN, None);
        let head = format!(
            "POST /v1/license/request HTTP/1.1\r\nContent-Length: {}\r\n\
             Expect: 100-continue\r\n\r\n",
            json.len()
        );
        let mut stream = send_raw(&server, head.as_bytes());
        let mut interim = [0u8; 25];
        stream.read_exact(&mut interim).unwrap();
        assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
        stream.write_all(json.as_bytes()).unwrap();
        assert_eq!(read_all(stream).unwrap().status, Some(200));

        let (first, second) = json.split_at(10);
        let chunked = format!(
            "POST /v1/license/request HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
             {:x}\r\n{first}\r\n{:x}\r\n{second}\r\n0\r\n\r\n",
            first.len(),
            second.len()
        );
        assert_eq!(
            read_all(send_raw(&server, chunked.as_bytes()))
                .unwrap()
                .status,
            Some(200)
        );
        assert_eq!(server.requests()[1].body, json.as_bytes());
    }
}
