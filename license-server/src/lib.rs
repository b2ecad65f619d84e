//! A reference LocalStack licensing API (SPEC.md section 3) for lsinit's integration tests and
//! demo: it issues signed license documents of format "1" on `127.0.0.1` only, remembers every
//! request it received, and misbehaves on demand at byte level ([`Fault`]).
//!
//! - `license`: license templates, documents and their signature ([`make_license`], [`sign`]).
//! - `http`: hand-written HTTP/1.1 framing, so faults can break it on purpose.
//! - `server`: the listener, routing, credentials and faults ([`LicenseServer`]).
//! - `tls`: an optional TLS listener in front of it ([`LicenseServer::start_tls`], [`TlsFault`]).
//! - `proxy`: an HTTP `CONNECT` proxy for tests of proxy settings ([`ConnectProxy`]).
//! - `base64`: the one base64 encoder (license secrets, proxy credentials, test PEM files).
//!
//! It is not part of lsinit's release binary, never listens on another address and never
//! connects to anything but `127.0.0.1`.
//!
//! ```no_run
//! use license_server::{Credential, Fault, LicenseServer};
//!
//! let server = LicenseServer::start()?;
//! server.add_credential(Credential::auth_token("ls-Wxyz0123-4567-89ab-cdef-ghijklmnf90e"));
//! server.push_fault(Fault::Status {
//!     status: 429,
//!     body: String::new(),
//!     headers: vec![("Retry-After".into(), "1".into())],
//! });
//! // Point the client at `server.url()`; the first request gets a 429, the next a license.
//! # Ok::<(), std::io::Error>(())
//! ```

pub mod base64;
mod http;
mod license;
mod proxy;
mod server;
mod tls;

pub use http::MAX_BODY;
pub use license::{
    LICENSE_FORMAT, LicenseTemplate, Product, SignError, canonical_message, format_date,
    make_license, new_license_id, parse_date, sign,
};
pub use proxy::{ConnectProxy, ProxiedConnect, basic_credentials};
pub use server::{
    Credential, CredentialKind, Fault, LicenseServer, RecordedRequest, is_well_formed_auth_token,
    mask_token,
};
/// The `time` crate, whose `Duration` the offsets of [`LicenseTemplate`] are.
pub use time;
pub use tls::TlsFault;
