//! How far one attempt got, recorded by the connection machinery itself, so that a failure is
//! classified by fact and not guessed from an error kind.
//!
//! SPEC 3.6 retries a request only when it provably never reached the server. ureq reports a
//! reset during the TLS handshake and a reset after the request as the same `Error::Io`, so each
//! attempt builds its agent with its own resolver and connector chain, which note every step:
//!
//! ```text
//! resolver ─ ConnectProxyConnector ─ TcpConnector ─ Reached ─ RustlsConnector ─ Watch
//!  (DNS)      (tunnel via the proxy)  (direct TCP)   connected  (TLS handshake)   secured; the
//!                                                                                transport notes
//!                                                                                the first write
//! ```
//!
//! `RustlsConnector` completes the handshake before it returns, so a transport handed out by
//! `Watch` carries nothing but the request: the first call to its `transmit_output` is the
//! first request byte. It is noted *before* the bytes go to the socket, so a write that fails
//! half-way counts as sent: the classification can be wrong only in the safe direction (not
//! retrying a request that did not arrive), never by repeating one that may have been charged.
//!
//! The proxy's own connection runs through the same chain (ureq's `CONNECT` support calls it
//! with the proxy removed from the configuration); that is how its steps are told apart. For
//! an `https://` proxy, `RustlsConnector` does the TLS handshake with the proxy itself, so
//! `Reached` notes the proxy's TCP and `Watch` its finished TLS.
//!
//! LIMITATION: this rests on ureq's `unversioned` transport API and on `RustlsConnector`
//! finishing the handshake inside `connect` (true of ureq 3.5, hence the `~3.5.2` requirement);
//! a ureq upgrade must re-check both, which the TLS reset tests in `tests/it/network.rs` do.

use std::sync::{Arc, Mutex, MutexGuard};

use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{
    Buffers, ConnectProxyConnector, ConnectionDetails, Connector, NextTimeout, RustlsConnector,
    TcpConnector, Transport,
};

/// What one attempt reached; every field starts false and only ever turns true.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    /// A name lookup failed: the host, and whether it was the proxy's.
    pub dns_failed: Option<DnsFailure>,
    /// A TCP connection to the proxy is open.
    pub proxy_reached: bool,
    /// The connection to the proxy is ready for `CONNECT`: TCP, and its TLS done for an
    /// `https://` proxy.
    pub proxy_connected: bool,
    /// A TCP connection to the endpoint, or a tunnel to it through the proxy, is open.
    pub connected: bool,
    /// The TLS handshake with the endpoint completed.
    pub secured: bool,
    /// The first request byte was handed to the transport: the server may have the request.
    pub sent: bool,
}

#[derive(Clone, Debug)]
pub struct DnsFailure {
    pub host: String,
    pub of_proxy: bool,
}

/// The record one attempt's resolver, connectors and transport share.
#[derive(Clone, Debug, Default)]
pub struct Recorder(Arc<Mutex<Progress>>);

impl Recorder {
    pub fn snapshot(&self) -> Progress {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, Progress> {
        // A panic while holding this lock cannot leave a half-updated flag: keep going.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The resolver for an agent whose requests go through a proxy (`proxied`) or not.
    pub fn resolver(&self, proxied: bool) -> impl Resolver {
        WatchingResolver {
            inner: DefaultResolver::default(),
            recorder: self.clone(),
            proxied,
        }
    }

    /// ureq's own chain for HTTP `CONNECT` proxies, TCP and rustls, with the two notes added.
    pub fn connector(&self, proxied: bool) -> impl Connector {
        ().chain(ConnectProxyConnector::default())
            .chain(TcpConnector::default())
            .chain(Reached {
                recorder: self.clone(),
                proxied,
            })
            .chain(RustlsConnector::default())
            .chain(Watch {
                recorder: self.clone(),
                proxied,
            })
    }
}

/// Whether a connection being made is the one to the endpoint. With a proxy, ureq connects to
/// the proxy itself with a configuration that has no proxy; the endpoint's own connection (the
/// tunnel) keeps it.
fn is_endpoint(details: &ConnectionDetails, proxied: bool) -> bool {
    !proxied || details.config.proxy().is_some()
}

#[derive(Debug)]
struct WatchingResolver {
    inner: DefaultResolver,
    recorder: Recorder,
    proxied: bool,
}

impl Resolver for WatchingResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let resolved = self.inner.resolve(uri, config, timeout);
        if resolved.is_err() {
            // Through a proxy only the proxy's name is looked up here; the proxy resolves the
            // endpoint's.
            self.recorder.lock().dns_failed = Some(DnsFailure {
                host: uri.host().unwrap_or_default().to_string(),
                of_proxy: self.proxied,
            });
        }
        resolved
    }

    fn empty(&self) -> ResolvedSocketAddrs {
        self.inner.empty()
    }
}

/// Notes that TCP to the proxy, or the connection to the endpoint (direct or the proxy's
/// tunnel), is up, before any TLS.
#[derive(Debug)]
struct Reached {
    recorder: Recorder,
    proxied: bool,
}

impl<In: Transport> Connector<In> for Reached {
    type Out = In;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<In>, ureq::Error> {
        if chained.is_some() {
            let mut progress = self.recorder.lock();
            if is_endpoint(details, self.proxied) {
                progress.connected = true;
            } else {
                progress.proxy_reached = true;
            }
        }
        Ok(chained)
    }
}

/// Notes that TLS is up, with the endpoint or with an `https://` proxy (the proxy's connection is
/// then ready for `CONNECT`), and hands out the endpoint's transport wrapped so that its first
/// write is noted.
#[derive(Debug)]
struct Watch {
    recorder: Recorder,
    proxied: bool,
}

impl<In: Transport> Connector<In> for Watch {
    type Out = Watched<In>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Watched<In>>, ureq::Error> {
        let Some(inner) = chained else {
            return Ok(None);
        };
        let recorder = if is_endpoint(details, self.proxied) {
            if details.needs_tls() {
                self.recorder.lock().secured = true;
            }
            Some(self.recorder.clone())
        } else {
            // The proxy's connection, its TLS done if it has any: the `CONNECT` written on it
            // is no request.
            self.recorder.lock().proxy_connected = true;
            None
        };
        Ok(Some(Watched { inner, recorder }))
    }
}

#[derive(Debug)]
struct Watched<T> {
    inner: T,
    recorder: Option<Recorder>,
}

impl<T: Transport> Transport for Watched<T> {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.inner.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        if amount > 0
            && let Some(recorder) = self.recorder.take()
        {
            recorder.lock().sent = true;
        }
        self.inner.transmit_output(amount, timeout)
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.inner.await_input(timeout)
    }

    fn is_open(&mut self) -> bool {
        self.inner.is_open()
    }

    fn is_tls(&self) -> bool {
        self.inner.is_tls()
    }
}
