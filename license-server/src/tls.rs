//! TLS in front of the plain server, for tests of certificate checks and of resets during the
//! handshake: a rustls listener on `127.0.0.1` that completes the handshake, then relays the
//! decrypted bytes to the plain server over loopback and its answers back, byte for byte.
//!
//! The plain server keeps doing everything else (routing, recording, [`Fault`]s), so every
//! fault works the same over TLS: a reset of the inner connection becomes a reset of the outer
//! one, the inner FIN becomes `close_notify` and FIN. The faults of the handshake itself are
//! [`TlsFault`]s, queued here.
//!
//! The same relay puts TLS in front of the `CONNECT` proxy, making it an `https://` proxy.
//!
//! [`Fault`]: crate::Fault

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

use crate::http::reset;

/// How long the relay waits on one side before looking at the other.
// LIMITATION: polling, not poll(2): rustls may hold decrypted bytes the socket no longer shows,
// and a 5 ms wait per turn costs little at the sizes tests send (a 100 MB body is cut by the
// client after 1 MiB).
const POLL: Duration = Duration::from_millis(5);
/// A handshake that takes longer than this is abandoned.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// A misbehaviour of the TLS layer, consumed one per accepted connection, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFault {
    /// Wait for the client's first handshake bytes, then reset the connection (RST).
    ResetDuringHandshake,
    /// Wait for the client's first handshake bytes, then close the connection (FIN).
    CloseDuringHandshake,
}

/// The TLS listener; dropping it stops it and shuts every open connection down.
pub(crate) struct TlsFront {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    stopping: bool,
    faults: VecDeque<TlsFault>,
    accepted: usize,
    handshakes: usize,
    connections: HashMap<u64, TcpStream>,
    next_connection: u64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl TlsFront {
    /// Listens on `127.0.0.1:0` with `cert_pem` (the chain, leaf first) and `key_pem`, relaying
    /// to the plain server on `127.0.0.1:backend`.
    pub(crate) fn start(cert_pem: &str, key_pem: &str, backend: u16) -> io::Result<TlsFront> {
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("certificate PEM: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| invalid(format!("key PEM: {e}")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| invalid(format!("certificate and key: {e}")))?;
        let config = Arc::new(config);

        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared::default());
        let acceptor = {
            let shared = Arc::clone(&shared);
            let backend = SocketAddr::from((Ipv4Addr::LOCALHOST, backend));
            thread::Builder::new()
                .name(format!("license-server-tls-{port}"))
                .spawn(move || accept_loop(&listener, &shared, &config, backend))?
        };
        Ok(TlsFront {
            port,
            shared,
            acceptor: Some(acceptor),
        })
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn push_fault(&self, fault: TlsFault) {
        self.shared.lock().faults.push_back(fault);
    }

    /// TCP connections accepted so far, handshakes that failed included.
    pub(crate) fn accepted(&self) -> usize {
        self.shared.lock().accepted
    }

    /// Handshakes completed so far.
    pub(crate) fn handshakes(&self) -> usize {
        self.shared.lock().handshakes
    }
}

impl Drop for TlsFront {
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

fn accept_loop(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    config: &Arc<ServerConfig>,
    backend: SocketAddr,
) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let (id, fault) = {
            let mut state = shared.lock();
            if state.stopping {
                return;
            }
            let Ok(handle) = stream.try_clone() else {
                continue;
            };
            state.accepted += 1;
            state.next_connection += 1;
            let id = state.next_connection;
            state.connections.insert(id, handle);
            (id, state.faults.pop_front())
        };
        let connection = Connection {
            shared: Arc::clone(shared),
            id,
        };
        let config = Arc::clone(config);
        let spawned = thread::Builder::new()
            .name(format!("license-server-tls-conn-{id}"))
            .spawn(move || connection.handle(stream, fault, config, backend));
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
    fn handle(
        self,
        stream: TcpStream,
        fault: Option<TlsFault>,
        config: Arc<ServerConfig>,
        backend: SocketAddr,
    ) {
        if let Some(fault) = fault {
            let _ = stream.set_read_timeout(Some(HANDSHAKE_LIMIT));
            let mut first = [0u8; 1];
            if !matches!(stream.peek(&mut first), Ok(1)) {
                return;
            }
            // The registered handle must be gone, or closing ours would not close the socket.
            drop(self);
            match fault {
                TlsFault::ResetDuringHandshake => reset(stream),
                TlsFault::CloseDuringHandshake => close_after_draining(stream),
            }
            return;
        }

        let Ok(conn) = ServerConnection::new(config) else {
            return;
        };
        let mut tls = StreamOwned::new(conn, stream);
        let _ = tls.sock.set_read_timeout(Some(HANDSHAKE_LIMIT));
        while tls.conn.is_handshaking() {
            if tls.conn.complete_io(&mut tls.sock).is_err() {
                return;
            }
        }
        self.shared.lock().handshakes += 1;

        let Ok(mut inner) = TcpStream::connect(backend) else {
            return;
        };
        if tls.sock.set_read_timeout(Some(POLL)).is_err()
            || inner.set_read_timeout(Some(POLL)).is_err()
        {
            return;
        }
        let Some(ending) = self.relay(&mut tls, &mut inner) else {
            return;
        };
        let StreamOwned { sock, .. } = tls;
        drop(self);
        match ending {
            Ending::Reset => reset(sock),
            Ending::Closed => close_after_draining(sock),
        }
    }

    /// Copies both ways until the plain server ends the connection; `None` when the client
    /// went away first or the server stops.
    fn relay(
        &self,
        tls: &mut StreamOwned<ServerConnection, TcpStream>,
        inner: &mut TcpStream,
    ) -> Option<Ending> {
        let mut buffer = vec![0u8; 64 * 1024];
        let mut client_open = true;
        loop {
            if self.shared.lock().stopping {
                return None;
            }
            if client_open {
                match tls.read(&mut buffer) {
                    Ok(0) => {
                        client_open = false;
                        let _ = inner.shutdown(Shutdown::Write);
                    }
                    Ok(n) => inner.write_all(&buffer[..n]).ok()?,
                    Err(e) if is_timeout(&e) => {}
                    Err(_) => return None,
                }
            }
            match inner.read(&mut buffer) {
                Ok(0) => {
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                    return Some(Ending::Closed);
                }
                Ok(n) => tls.write_all(&buffer[..n]).ok()?,
                Err(e) if is_timeout(&e) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Some(Ending::Reset),
                Err(_) => return None,
            }
        }
    }
}

/// How the plain server ended the relayed connection.
enum Ending {
    Closed,
    Reset,
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Closes with FIN, reading what the client still sends for a moment, so that unread data does
/// not turn the close into a reset before the client has read the end.
fn close_after_draining(mut stream: TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + Duration::from_millis(500);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let mut sink = [0u8; 16 * 1024];
    while Instant::now() < deadline {
        match stream.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(_) => break,
        }
    }
}
