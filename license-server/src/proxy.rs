//! An HTTP `CONNECT` proxy on `127.0.0.1` for tests of proxy settings. It opens tunnels only to
//! names it was given a route for, each to a port on `127.0.0.1`, so a test can use an endpoint
//! such as `https://licensing.test/v1` that nothing resolves but this proxy. It never resolves a
//! name and never connects anywhere else: other targets get 502.
//!
//! It records every `CONNECT` it receives (target and `Proxy-Authorization`), and can demand
//! credentials (407 without the right ones). Started with [`ConnectProxy::start_tls`], clients
//! speak TLS to the proxy itself (an `https://` proxy), through the same relay as the license
//! server's TLS listener.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::tls::TlsFront;

/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// One `CONNECT` as the proxy received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxiedConnect {
    /// The request target, e.g. `licensing.test:443`.
    pub target: String,
    /// The `Proxy-Authorization` header, verbatim, if any.
    pub authorization: Option<String>,
    /// The status the proxy answered.
    pub status: u16,
}

/// The proxy; dropping it stops it and shuts every tunnel down.
pub struct ConnectProxy {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
    /// The TLS listener clients use instead of the plain one, when started with TLS.
    tls: Option<TlsFront>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    stopping: bool,
    /// Lowercase host name → port on `127.0.0.1`.
    routes: HashMap<String, u16>,
    /// The `Proxy-Authorization` value required, if any.
    required: Option<String>,
    connects: Vec<ProxiedConnect>,
    connections: HashMap<u64, TcpStream>,
    next_connection: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn register(&self, stream: &TcpStream) -> Option<u64> {
        let handle = stream.try_clone().ok()?;
        let mut state = self.lock();
        if state.stopping {
            return None;
        }
        state.next_connection += 1;
        let id = state.next_connection;
        state.connections.insert(id, handle);
        Some(id)
    }
}

impl ConnectProxy {
    /// Binds `127.0.0.1:0` and starts accepting connections.
    pub fn start() -> io::Result<ConnectProxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared::default());
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("connect-proxy-{port}"))
                .spawn(move || accept_loop(&listener, &shared))?
        };
        Ok(ConnectProxy {
            port,
            shared,
            acceptor: Some(acceptor),
            tls: None,
        })
    }

    /// Like [`ConnectProxy::start`], but clients speak TLS to the proxy with `cert_pem` (a PEM
    /// chain, leaf first) and `key_pem`, and send `CONNECT` inside that TLS.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> io::Result<ConnectProxy> {
        let mut proxy = ConnectProxy::start()?;
        proxy.tls = Some(TlsFront::start(cert_pem, key_pem, proxy.port)?);
        Ok(proxy)
    }

    /// The port clients connect to, on `127.0.0.1` (the TLS one when started with TLS).
    pub fn port(&self) -> u16 {
        self.tls.as_ref().map_or(self.port, TlsFront::port)
    }

    /// `http://127.0.0.1:PORT` (`https://` when started with TLS), to put in a proxy variable.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port())
    }

    /// TLS handshakes with the proxy completed so far (0 without TLS).
    pub fn tls_handshakes(&self) -> usize {
        self.tls.as_ref().map_or(0, TlsFront::handshakes)
    }

    /// Tunnels `CONNECT host:<any port>` to `127.0.0.1:port`.
    pub fn route(&self, host: &str, port: u16) {
        self.shared
            .lock()
            .routes
            .insert(host.to_ascii_lowercase(), port);
    }

    /// Answers 407 to every `CONNECT` without `Proxy-Authorization: Basic` of these.
    pub fn require_credentials(&self, user: &str, password: &str) {
        self.shared.lock().required = Some(basic_credentials(user, password));
    }

    /// Every `CONNECT` received so far, oldest first.
    pub fn connects(&self) -> Vec<ProxiedConnect> {
        self.shared.lock().connects.clone()
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        {
            let mut state = self.shared.lock();
            state.stopping = true;
            for connection in state.connections.values() {
                let _ = connection.shutdown(Shutdown::Both);
            }
        }
        crate::http::stop_acceptor(self.port, self.acceptor.take());
    }
}

/// The `Proxy-Authorization` value for `user` and `password`: `Basic base64(user:password)`.
pub fn basic_credentials(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        crate::base64::encode(format!("{user}:{password}").as_bytes())
    )
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if shared.lock().stopping {
            return;
        }
        let shared = Arc::clone(shared);
        let spawned = thread::Builder::new()
            .name("connect-proxy-conn".into())
            .spawn(move || handle(&shared, stream));
        drop(spawned);
    }
}

/// Unregisters a connection when dropped.
struct Registered<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.shared.lock().connections.remove(&self.id);
    }
}

fn handle(shared: &Shared, mut client: TcpStream) {
    let Some(id) = shared.register(&client) else {
        return;
    };
    let _registered = Registered { shared, id };
    let _ = client.set_read_timeout(Some(Duration::from_secs(10)));
    let Some(head) = read_head(&mut client) else {
        return;
    };
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let (method, target) = (
        request_line.next().unwrap_or_default(),
        request_line.next().unwrap_or_default().to_string(),
    );
    let authorization = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("proxy-authorization")
            .then(|| value.trim().to_string())
    });

    let host = target
        .rsplit_once(':')
        .map_or(target.as_str(), |(host, _)| host)
        .to_ascii_lowercase();
    let route = {
        let state = shared.lock();
        if method != "CONNECT" {
            Err(405)
        } else if state
            .required
            .as_ref()
            .is_some_and(|required| authorization.as_ref() != Some(required))
        {
            Err(407)
        } else {
            state.routes.get(&host).copied().ok_or(502)
        }
    };
    let upstream =
        route.and_then(|port| TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map_err(|_| 502));
    let status = match &upstream {
        Ok(_) => 200,
        Err(status) => *status,
    };
    shared.lock().connects.push(ProxiedConnect {
        target,
        authorization,
        status,
    });
    if let Ok(upstream) = upstream {
        if client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .is_ok()
        {
            tunnel(shared, client, upstream);
        }
        return;
    }
    let answer = match status {
        405 => "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n",
        407 => {
            "HTTP/1.1 407 Proxy Authentication Required\r\n\
             Proxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n"
        }
        _ => "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n",
    };
    let _ = client.write_all(answer.as_bytes());
    let _ = client.shutdown(Shutdown::Write);
}

/// Reads up to the end of the request head, byte by byte so nothing after it is taken.
fn read_head(client: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_HEAD || client.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(head)
}

/// Copies both ways until either side ends.
fn tunnel(shared: &Shared, client: TcpStream, upstream: TcpStream) {
    let Some(upstream_id) = shared.register(&upstream) else {
        return;
    };
    let _registered = Registered {
        shared,
        id: upstream_id,
    };
    let _ = client.set_read_timeout(None);
    let (Ok(mut client_read), Ok(mut upstream_write)) = (client.try_clone(), upstream.try_clone())
    else {
        return;
    };
    let forward = thread::spawn(move || {
        let _ = io::copy(&mut client_read, &mut upstream_write);
        let _ = upstream_write.shutdown(Shutdown::Write);
    });
    let (mut upstream_read, mut client_write) = (upstream, client);
    let _ = io::copy(&mut upstream_read, &mut client_write);
    let _ = client_write.shutdown(Shutdown::Write);
    let _ = forward.join();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_base64() {
        assert_eq!(
            basic_credentials("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(basic_credentials("a", "b"), "Basic YTpi");
        assert_eq!(basic_credentials("ab", ""), "Basic YWI6");
    }

    fn exchange(proxy: &ConnectProxy, request: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = Vec::new();
        let mut byte = [0u8; 1];
        while !answer.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
            answer.push(byte[0]);
        }
        String::from_utf8(answer).unwrap()
    }

    #[test]
    fn tunnels_routed_names_and_refuses_the_rest() {
        let upstream = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let proxy = ConnectProxy::start().unwrap();
        proxy.route("licensing.test", upstream.local_addr().unwrap().port());

        let answer = exchange(&proxy, "CONNECT elsewhere.test:443 HTTP/1.1\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");

        let mut stream = TcpStream::connect(("127.0.0.1", proxy.port())).unwrap();
        stream
            .write_all(b"CONNECT Licensing.Test:443 HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let (mut accepted, _) = upstream.accept().unwrap();
        let mut answer = [0u8; 39];
        stream.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"HTTP/1.1 200 Connection established\r\n\r\n");
        stream.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        accepted.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        accepted.write_all(b"pong").unwrap();
        stream.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"pong");

        let targets: Vec<(String, u16)> = proxy
            .connects()
            .into_iter()
            .map(|c| (c.target, c.status))
            .collect();
        assert_eq!(
            targets,
            [
                ("elsewhere.test:443".to_string(), 502),
                ("Licensing.Test:443".to_string(), 200)
            ]
        );
    }

    #[test]
    fn demands_credentials_when_told() {
        let upstream = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let proxy = ConnectProxy::start().unwrap();
        proxy.route("licensing.test", upstream.local_addr().unwrap().port());
        proxy.require_credentials("user", "pw");

        let answer = exchange(&proxy, "CONNECT licensing.test:443 HTTP/1.1\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 407"), "{answer}");
        assert!(answer.contains("Proxy-Authenticate: Basic"), "{answer}");
        let request = format!(
            "CONNECT licensing.test:443 HTTP/1.1\r\nProxy-Authorization: {}\r\n\r\n",
            basic_credentials("user", "pw")
        );
        assert!(exchange(&proxy, &request).starts_with("HTTP/1.1 200"));
        let connects = proxy.connects();
        assert_eq!(connects[0].authorization, None);
        assert_eq!(
            connects[1].authorization.as_deref(),
            Some(basic_credentials("user", "pw").as_str())
        );
    }
}
