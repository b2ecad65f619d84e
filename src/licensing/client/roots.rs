//! The roots a licensing connection trusts (SPEC 2, 3.5): the bundled web roots, the system store
//! when the image has one, and every PEM named by `REQUESTS_CA_BUNDLE`, `CURL_CA_BUNDLE`,
//! `SSL_CERT_FILE` and `SSL_CERT_DIR`, all added together. ureq takes one root set, so the union
//! is built here once per activation.
//!
//! Owns reading and checking the CA files; not the connection itself.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
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

/// The most a CA source may hold, all its files together: far more than any real bundle (the
/// Mozilla set is about 200 KiB), little enough that `/dev/zero` or a log file cannot eat the
/// container's memory.
const MAX_CA_BYTES: u64 = 16 << 20;

/// The TLS configuration of every attempt of one activation.
pub fn tls_config(settings: &Settings) -> Result<TlsConfig, RequestError> {
    if settings.ssl_no_verify {
        return Ok(TlsConfig::builder().disable_verification(true).build());
    }

    let mut certs: Vec<Certificate<'static>> = Vec::new();
    if let Some(path) = SYSTEM_CA_FILES.iter().map(Path::new).find(|p| p.is_file()) {
        let mut budget = MAX_CA_BYTES;
        match read_regular_file(path, &mut budget) {
            Ok(bytes) => {
                let found = pem_certificates(&bytes);
                log::debug!(
                    "found {} certificates in {}, thus trusting them",
                    found.len(),
                    path.display()
                );
                certs.extend(found);
            }
            Err(e) => log::debug!("{} {e}, thus not using it", path.display()),
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

/// The usable CA certificates of a file, or of every regular file in a directory (Python's
/// `requests` takes a directory in `REQUESTS_CA_BUNDLE` too, so every variable may name one).
fn read_ca_source(source: &CaSource) -> Result<Vec<Certificate<'static>>, String> {
    let path = &source.path;
    let mut budget = MAX_CA_BYTES;
    let is_dir = std::fs::metadata(path)
        .map_err(|e| format!("cannot be read ({e})"))?
        .is_dir();
    let files: Vec<PathBuf> = if is_dir {
        let entries = std::fs::read_dir(path).map_err(|e| format!("cannot be listed ({e})"))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            // A FIFO, socket or device among the certificates is skipped, not read: reading it
            // could block forever or never end. `metadata` follows links, as hashed
            // directories are made of them.
            .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.file_type().is_file()))
            .collect();
        files.sort();
        files
    } else {
        vec![path.clone()]
    };

    let mut certs = Vec::new();
    for file in &files {
        let bytes = read_regular_file(file, &mut budget).map_err(|why| {
            if is_dir {
                format!("holds {} which {why}", file.display())
            } else {
                why
            }
        })?;
        certs.extend(pem_certificates(&bytes));
    }
    // rustls skips roots it cannot parse without a word; count them here instead.
    let mut store = rustls::RootCertStore::empty();
    let (usable, unusable) = store.add_parsable_certificates(
        certs
            .iter()
            .map(|c| rustls::pki_types::CertificateDer::from(c.der())),
    );
    match (usable, is_dir) {
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

/// Reads a regular file of at most `budget` bytes, and takes what it read from `budget`. The
/// file is opened without blocking and checked on the open descriptor, so a FIFO (which would
/// wait for a writer forever) or a device such as `/dev/zero` (which never ends) is refused
/// before a byte is read, whatever the path turned into since it was listed.
fn read_regular_file(path: &Path, budget: &mut u64) -> Result<Vec<u8>, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot be read ({e})"))?;
    let kind = file
        .metadata()
        .map_err(|e| format!("cannot be read ({e})"))?
        .file_type();
    if !kind.is_file() {
        return Err(format!(
            "is {}, not a regular file",
            describe_file_type(kind)
        ));
    }
    let mut bytes = Vec::new();
    file.take(*budget + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot be read ({e})"))?;
    let read = bytes.len() as u64;
    if read > *budget {
        return Err(format!(
            "goes over the {} MiB limit for CA certificates",
            MAX_CA_BYTES >> 20
        ));
    }
    *budget -= read;
    Ok(bytes)
}

fn describe_file_type(kind: std::fs::FileType) -> &'static str {
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else {
        "a special file"
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
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, ca_pem()).unwrap();
        assert_eq!(read_ca_source(&source(&file)).unwrap().len(), 1);
        assert_eq!(read_ca_source(&source(dir.path())).unwrap().len(), 1);
    }

    #[test]
    fn a_fifo_or_a_device_is_refused_without_reading_it() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("bundle.pem");
        make_fifo(&fifo);
        // Reading it would wait for a writer forever; the test would hang, not fail.
        let why = read_ca_source(&source(&fifo)).unwrap_err();
        assert_eq!(why, "is a FIFO, not a regular file");

        let why = read_ca_source(&source(Path::new("/dev/zero"))).unwrap_err();
        assert_eq!(why, "is a character device, not a regular file");
    }

    #[test]
    fn a_directory_skips_fifos_and_devices_among_its_files() {
        let dir = tempfile::tempdir().unwrap();
        make_fifo(&dir.path().join("a-fifo.pem"));
        std::os::unix::fs::symlink("/dev/zero", dir.path().join("b-zero.pem")).unwrap();
        std::fs::write(dir.path().join("c-ca.pem"), ca_pem()).unwrap();
        assert_eq!(read_ca_source(&source(dir.path())).unwrap().len(), 1);
    }

    #[test]
    fn a_ca_source_over_16_mib_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.pem");
        // Sparse: no disk space is used.
        let file = std::fs::File::create(&big).unwrap();
        file.set_len(MAX_CA_BYTES + 1).unwrap();
        let why = read_ca_source(&source(&big)).unwrap_err();
        assert_eq!(why, "goes over the 16 MiB limit for CA certificates");

        // The limit holds for a directory's files together.
        let certs = dir.path().join("certs");
        std::fs::create_dir(&certs).unwrap();
        for name in ["a.pem", "b.pem"] {
            let file = std::fs::File::create(certs.join(name)).unwrap();
            file.set_len(MAX_CA_BYTES / 2 + 1).unwrap();
        }
        let why = read_ca_source(&source(&certs)).unwrap_err();
        assert!(
            why.contains("b.pem which goes over the 16 MiB limit"),
            "{why}"
        );
    }

    fn make_fifo(path: &Path) {
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c_path` is a valid NUL-terminated path for the duration of the call.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    }

    /// One of the bundled roots as PEM.
    fn ca_pem() -> String {
        let der = webpki_root_certs::TLS_SERVER_ROOT_CERTS[0].as_ref();
        let base64 = license_server::base64::encode(der);
        let lines: Vec<&str> = base64
            .as_bytes()
            .chunks(64)
            .map(|line| std::str::from_utf8(line).expect("base64 is ASCII"))
            .collect();
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        )
    }
}
