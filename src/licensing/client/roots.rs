//! The roots a licensing connection trusts (SPEC 2, 3.5): the bundled web roots, the system store
//! when the image has one, and every PEM named by `REQUESTS_CA_BUNDLE`, `CURL_CA_BUNDLE`,
//! `SSL_CERT_FILE` and `SSL_CERT_DIR`, all added together. ureq takes one root set, so the union
//! is built here once per activation.
//!
//! Owns reading and checking the CA files; not the connection itself.

use std::path::{Path, PathBuf};

use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};

use super::RequestError;
use crate::config::{CaSource, Settings};

/// Where common images keep the system's trusted CAs; the first one present is used.
// LIMITATION: a fixed list of bundle files, no hashed directory such as /etc/ssl/certs: enough for
// the Debian-based image; other stores can be added with SSL_CERT_DIR.
const SYSTEM_CA_FILES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The TLS configuration of every attempt of one activation.
pub fn tls_config(settings: &Settings) -> Result<TlsConfig, RequestError> {
    if settings.ssl_no_verify {
        return Ok(TlsConfig::builder().disable_verification(true).build());
    }

    let mut certs: Vec<Certificate<'static>> = Vec::new();
    if let Some(path) = SYSTEM_CA_FILES.iter().map(Path::new).find(|p| p.is_file()) {
        match std::fs::read(path) {
            Ok(bytes) => {
                let found = pem_certificates(&bytes);
                log::debug!(
                    "found {} certificates in {}, thus trusting them",
                    found.len(),
                    path.display()
                );
                certs.extend(found);
            }
            Err(e) => log::debug!("cannot read {}: {e}, thus not using it", path.display()),
        }
    }
    for source in &settings.ca_sources {
        let found = read_ca_source(source).map_err(|why| {
            RequestError::Settings(format!(
                "{}={} {why}; point it at a PEM file (or a directory of them) holding your CA, \
                 or unset it",
                source.variable,
                source.path.display()
            ))
        })?;
        log::debug!(
            "found {} CA certificates in {}={}, thus trusting them too",
            found.len(),
            source.variable,
            source.path.display()
        );
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

/// The usable CA certificates of a file, or of every file in a directory.
fn read_ca_source(source: &CaSource) -> Result<Vec<Certificate<'static>>, String> {
    let path = &source.path;
    let metadata = std::fs::metadata(path).map_err(|e| format!("cannot be read ({e})"))?;
    let files: Vec<PathBuf> = if metadata.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|e| format!("cannot be listed ({e})"))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        files
    } else {
        vec![path.clone()]
    };

    let mut certs = Vec::new();
    for file in &files {
        let bytes =
            std::fs::read(file).map_err(|e| format!("cannot be read ({}: {e})", file.display()))?;
        certs.extend(pem_certificates(&bytes));
    }
    // rustls skips roots it cannot parse without a word; count them here instead.
    let mut store = rustls::RootCertStore::empty();
    let (usable, unusable) = store.add_parsable_certificates(
        certs
            .iter()
            .map(|c| rustls::pki_types::CertificateDer::from(c.der())),
    );
    match (usable, metadata.is_dir()) {
        (0, false) if unusable > 0 => Err(format!(
            "holds {unusable} certificates, none of them usable as a CA"
        )),
        (0, false) => Err("holds no PEM certificate".to_string()),
        (0, true) => Err(format!(
            "is a directory of {} files with no usable PEM certificate",
            files.len()
        )),
        _ => Ok(certs),
    }
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

    fn source(path: &Path) -> CaSource {
        CaSource {
            variable: "REQUESTS_CA_BUNDLE",
            path: path.to_path_buf(),
        }
    }

    #[test]
    fn missing_empty_and_garbage_bundles_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let missing = read_ca_source(&source(&dir.path().join("nope.pem"))).unwrap_err();
        assert!(missing.starts_with("cannot be read"), "{missing}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        assert_eq!(
            read_ca_source(&source(&empty)).unwrap_err(),
            "holds no PEM certificate"
        );

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let why = read_ca_source(&source(&garbage)).unwrap_err();
        assert!(why.contains("none of them usable"), "{why}");

        let empty_dir = dir.path().join("certs");
        std::fs::create_dir(&empty_dir).unwrap();
        let why = read_ca_source(&source(&empty_dir)).unwrap_err();
        assert!(why.contains("no usable PEM certificate"), "{why}");
    }

    #[test]
    fn bundled_roots_are_usable() {
        let der = webpki_root_certs::TLS_SERVER_ROOT_CERTS[0].as_ref();
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            base64_lines(der)
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, pem).unwrap();
        assert_eq!(read_ca_source(&source(&file)).unwrap().len(), 1);
        assert_eq!(read_ca_source(&source(dir.path())).unwrap().len(), 1);
    }

    /// Base64 in 64-character lines, enough for a PEM fixture.
    fn base64_lines(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out.as_bytes()
            .chunks(64)
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect::<Vec<_>>()
            .join("\n")
    }
}
