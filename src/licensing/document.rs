//! The license document, format "1" (SPEC 3.3): strict parsing, the canonical signed message,
//! the HMAC-SHA256 signature and every validity rule.
//!
//! Owns what a license *is*; where it is stored and how it is obtained live in `cache` and
//! `client`.

use std::fmt;

use hmac::{KeyInit, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::credential::Secret;

type HmacSha256 = hmac::Hmac<Sha256>;

/// The keys of format "1", exactly; a file with any other key is refused.
pub const FORMAT_1_KEYS: [&str; 12] = [
    "id",
    "license_format",
    "signature",
    "license_type",
    "issue_date",
    "expiry_date",
    "products",
    "license_status",
    "license_secret",
    "last_activated",
    "reactivate_after",
    "offline_data",
];

/// Longer values of the fields that are logged make a document invalid.
const MAX_SHOWN_CHARS: usize = 200;

/// One entry of `products`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Product {
    pub name: String,
    pub version: String,
}

/// A date as the document wrote it, and parsed.
#[derive(Clone, Debug)]
pub struct Date {
    pub raw: String,
    pub at: OffsetDateTime,
}

impl Date {
    fn parse(key: &'static str, raw: &str) -> Result<Date, DocumentError> {
        let at = OffsetDateTime::parse(raw.trim(), &Rfc3339)
            .map_err(|_| DocumentError::BadDate { key })?;
        Ok(Date {
            raw: raw.to_string(),
            at,
        })
    }

    /// A moment in the canonical form, for messages.
    pub fn now_canonical(at: OffsetDateTime) -> String {
        Date {
            raw: String::new(),
            at,
        }
        .canonical()
    }

    /// `YYYY-MM-DDTHH:MM:SS±HH:MM`: fractional seconds dropped, the document's own offset kept.
    pub fn canonical(&self) -> String {
        let (h, m, _) = self.at.offset().as_hms();
        let sign = if self.at.offset().is_negative() {
            '-'
        } else {
            '+'
        };
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{sign}{:02}:{:02}",
            self.at.year(),
            u8::from(self.at.month()),
            self.at.day(),
            self.at.hour(),
            self.at.minute(),
            self.at.second(),
            h.unsigned_abs(),
            m.unsigned_abs()
        )
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

/// A parsed license document. `Debug` leaves out the signature and the license secret.
#[derive(Clone)]
pub struct License {
    pub id: String,
    pub license_format: String,
    pub signature: String,
    pub license_type: String,
    pub issue_date: Date,
    pub expiry_date: Date,
    pub products: Vec<Product>,
    pub license_status: String,
    pub reactivate_after: Date,
    /// `offline_data.localstack_version`.
    pub localstack_version: String,
    /// The document itself, kept verbatim for writing back to disk.
    document: Map<String, Value>,
}

impl fmt::Debug for License {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("License")
            .field("id", &self.id)
            .field("license_type", &self.license_type)
            .field("license_status", &self.license_status)
            .field("expiry_date", &self.expiry_date.raw)
            .field("reactivate_after", &self.reactivate_after.raw)
            .finish_non_exhaustive()
    }
}

/// Why bytes are not a license document of format "1".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DocumentError {
    NotJson,
    NotAnObject,
    UnknownKey(String),
    MissingKey(&'static str),
    WrongType {
        key: &'static str,
        expected: &'static str,
    },
    BadDate {
        key: &'static str,
    },
}

impl fmt::Display for DocumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DocumentError::NotJson => f.write_str("is not JSON"),
            DocumentError::NotAnObject => f.write_str("is not a JSON object"),
            DocumentError::UnknownKey(key) => {
                let key: String = key.chars().filter(|c| !c.is_control()).take(40).collect();
                write!(f, "has the unknown key {key:?}")
            }
            DocumentError::MissingKey(key) => write!(f, "lacks the key {key:?}"),
            DocumentError::WrongType { key, expected } => write!(f, "has {key:?} not {expected}"),
            DocumentError::BadDate { key } => write!(f, "has {key:?} not an ISO-8601 date"),
        }
    }
}

/// Why a well-formed license cannot be used (SPEC 3.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalid {
    Format(String),
    Signature,
    Status(String),
    Expired {
        on: String,
    },
    RuntimeVersion {
        license: String,
        runtime: String,
    },
    Product {
        version: String,
        runtime: String,
    },
    /// Valid in every way except that `reactivate_after` has passed.
    Stale {
        since: String,
    },
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::Format(format) => write!(f, "its license_format {format:?} is not \"1\""),
            Invalid::Signature => f.write_str(
                "its signature does not match this credential (another credential's \
                             license, or a modified file)",
            ),
            Invalid::Status(status) => write!(f, "its status is {status}, not ACTIVE"),
            Invalid::Expired { on } => write!(f, "it expired on {on}"),
            Invalid::RuntimeVersion { license, runtime } => {
                write!(
                    f,
                    "it was activated for LocalStack {license}, this is {runtime}"
                )
            }
            Invalid::Product { version, runtime } => {
                write!(f, "it covers LocalStack {version}, this is {runtime}")
            }
            Invalid::Stale { since } => write!(f, "it needs re-activation since {since}"),
        }
    }
}

impl License {
    /// Parses a document read from disk: exactly the keys of format "1", no more, no fewer.
    pub fn from_disk(bytes: &[u8]) -> Result<License, DocumentError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|_| DocumentError::NotJson)?;
        let Value::Object(document) = value else {
            return Err(DocumentError::NotAnObject);
        };
        if let Some(key) = document
            .keys()
            .find(|k| !FORMAT_1_KEYS.contains(&k.as_str()))
        {
            return Err(DocumentError::UnknownKey(key.clone()));
        }
        License::from_object(document)
    }

    /// Takes a document from the server: keys outside format "1" are dropped (returned for a
    /// debug line) and `offline_data.localstack_version` is set to the runtime version.
    pub fn from_server(
        value: Value,
        runtime_version: &str,
    ) -> Result<(License, Vec<String>), DocumentError> {
        let Value::Object(mut document) = value else {
            return Err(DocumentError::NotAnObject);
        };
        let dropped: Vec<String> = document
            .keys()
            .filter(|k| !FORMAT_1_KEYS.contains(&k.as_str()))
            .cloned()
            .collect();
        for key in &dropped {
            document.remove(key);
        }
        let mut offline = Map::new();
        offline.insert(
            "localstack_version".into(),
            Value::String(runtime_version.into()),
        );
        document.insert("offline_data".into(), Value::Object(offline));
        Ok((License::from_object(document)?, dropped))
    }

    fn from_object(document: Map<String, Value>) -> Result<License, DocumentError> {
        let text = |key: &'static str| -> Result<String, DocumentError> {
            match document.get(key) {
                None => Err(DocumentError::MissingKey(key)),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(DocumentError::WrongType {
                    key,
                    expected: "a string",
                }),
            }
        };
        let date = |key: &'static str| Date::parse(key, &text(key)?);
        // Fields that end up in log lines: one event per line, so no control characters, and
        // short enough to read.
        let shown = |key: &'static str, value: String| -> Result<String, DocumentError> {
            let printable =
                value.chars().count() <= MAX_SHOWN_CHARS && !value.chars().any(char::is_control);
            if printable {
                Ok(value)
            } else {
                Err(DocumentError::WrongType {
                    key,
                    expected: "short printable text",
                })
            }
        };

        let products = match document.get("products") {
            None => return Err(DocumentError::MissingKey("products")),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| {
                    let field = |k: &str| item.get(k).and_then(Value::as_str).map(str::to_string);
                    match (field("name"), field("version")) {
                        (Some(name), Some(version)) => Ok(Product {
                            name: shown("products", name)?,
                            version: shown("products", version)?,
                        }),
                        _ => Err(DocumentError::WrongType {
                            key: "products",
                            expected: "a list of {name, version}",
                        }),
                    }
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => {
                return Err(DocumentError::WrongType {
                    key: "products",
                    expected: "a list",
                });
            }
        };
        let localstack_version = match document.get("offline_data") {
            None => return Err(DocumentError::MissingKey("offline_data")),
            Some(data) => data
                .get("localstack_version")
                .and_then(Value::as_str)
                .ok_or(DocumentError::WrongType {
                    key: "offline_data",
                    expected: "an object with localstack_version",
                })?,
        }
        .to_string();
        let localstack_version = shown("offline_data", localstack_version)?;
        text("license_secret")?;
        date("last_activated")?;

        Ok(License {
            id: shown("id", text("id")?)?,
            license_format: shown("license_format", text("license_format")?)?,
            signature: text("signature")?,
            license_type: shown("license_type", text("license_type")?)?,
            issue_date: date("issue_date")?,
            expiry_date: date("expiry_date")?,
            products,
            license_status: shown("license_status", text("license_status")?)?,
            reactivate_after: date("reactivate_after")?,
            localstack_version,
            document,
        })
    }

    /// The exact byte string that the signature covers.
    pub fn canonical_message(&self) -> String {
        let mut products = self.products.clone();
        products.sort();
        let mut message = self.id.clone();
        for product in &products {
            message.push_str(&product.name);
            message.push_str(&product.version);
        }
        for part in [
            self.license_format.as_str(),
            &self.issue_date.canonical(),
            &self.expiry_date.canonical(),
            &self.license_type,
            &self.license_status,
            &self.reactivate_after.canonical(),
        ] {
            message.push_str(part);
        }
        message
    }

    /// Whether `signature` is the HMAC-SHA256 of the canonical message under `key`, compared
    /// in constant time.
    pub fn signature_matches(&self, key: &Secret) -> bool {
        let Some(expected) = decode_hex(&self.signature) else {
            return false;
        };
        let Ok(mut mac) = HmacSha256::new_from_slice(key.expose().as_bytes()) else {
            return false;
        };
        mac.update(self.canonical_message().as_bytes());
        mac.verify_slice(&expected).is_ok()
    }

    /// Checks every rule of SPEC 3.3 at `now`; [`Invalid::Stale`] only when all else holds.
    pub fn check(&self, key: &Secret, runtime: &str, now: OffsetDateTime) -> Result<(), Invalid> {
        if self.license_format != "1" {
            return Err(Invalid::Format(self.license_format.clone()));
        }
        if !self.signature_matches(key) {
            return Err(Invalid::Signature);
        }
        if self.license_status != "ACTIVE" {
            return Err(Invalid::Status(self.license_status.clone()));
        }
        if self.expiry_date.at <= now {
            return Err(Invalid::Expired {
                on: self.expiry_date.canonical(),
            });
        }
        if !same_minor(&self.localstack_version, runtime) {
            return Err(Invalid::RuntimeVersion {
                license: self.localstack_version.clone(),
                runtime: runtime.to_string(),
            });
        }
        let first = self
            .products
            .first()
            .map(|p| p.version.as_str())
            .unwrap_or("");
        if !(first.starts_with('*') || same_minor(first, runtime)) {
            return Err(Invalid::Product {
                version: first.to_string(),
                runtime: runtime.into(),
            });
        }
        if self.reactivate_after.at <= now {
            return Err(Invalid::Stale {
                since: self.reactivate_after.canonical(),
            });
        }
        Ok(())
    }

    /// The document as it is written to disk: pretty JSON of the format-1 keys.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(&self.document)
            .expect("a map of JSON values always serialises");
        bytes.push(b'\n');
        bytes
    }
}

/// Two versions agree when their first two dot-separated parts are equal.
pub fn same_minor(a: &str, b: &str) -> bool {
    let mut a_parts = a.split('.');
    let mut b_parts = b.split('.');
    for _ in 0..2 {
        match (a_parts.next(), b_parts.next()) {
            (Some(x), Some(y)) if x == y => {}
            _ => return false,
        }
    }
    true
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    // from_str_radix alone would take a sign, as in "+f".
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    use super::*;

    const VECTOR: &str = include_str!("../../tests/data/license-v1.json");

    fn vector() -> Value {
        serde_json::from_str(VECTOR).expect("vector is JSON")
    }

    fn key(value: &str) -> Secret {
        Secret::from_env_value(
            super::super::credential::CredentialKind::AuthToken,
            OsStr::new(value),
        )
        .expect("non-blank")
    }

    fn vector_license() -> (License, Secret) {
        let v = vector();
        let bytes = serde_json::to_vec(&v["document"]).unwrap();
        (
            License::from_disk(&bytes).unwrap(),
            key(v["token"].as_str().unwrap()),
        )
    }

    #[test]
    fn vector_canonical_message_and_signature() {
        let v = vector();
        let (license, token) = vector_license();
        assert_eq!(
            license.canonical_message(),
            v["canonical_message"].as_str().unwrap()
        );
        assert!(license.signature_matches(&token));
        assert!(!license.signature_matches(&key(v["other_valid_token"].as_str().unwrap())));
    }

    #[test]
    fn canonical_dates_keep_offset_and_drop_fractions() {
        let date = |raw: &str| Date::parse("d", raw).unwrap().canonical();
        assert_eq!(date("2026-11-01T00:00:00Z"), "2026-11-01T00:00:00+00:00");
        assert_eq!(
            date("2026-12-05T15:00:00.750+01:00"),
            "2026-12-05T15:00:00+01:00"
        );
        assert_eq!(
            date("2026-12-05T15:00:00-05:30"),
            "2026-12-05T15:00:00-05:30"
        );
        assert!(Date::parse("d", "2026-12-05T15:00:00").is_err());
    }

    #[test]
    fn disk_documents_need_exactly_the_format_1_keys() {
        let mut doc = vector()["document"].clone();
        doc["extra"] = Value::Bool(true);
        let err = License::from_disk(&serde_json::to_vec(&doc).unwrap()).unwrap_err();
        assert_eq!(err, DocumentError::UnknownKey("extra".into()));
        let mut doc = vector()["document"].clone();
        doc.as_object_mut().unwrap().remove("license_secret");
        let err = License::from_disk(&serde_json::to_vec(&doc).unwrap()).unwrap_err();
        assert_eq!(err, DocumentError::MissingKey("license_secret"));
        assert_eq!(
            License::from_disk(b"{\"id\": ").unwrap_err(),
            DocumentError::NotJson
        );
        assert_eq!(
            License::from_disk(b"[]").unwrap_err(),
            DocumentError::NotAnObject
        );
    }

    #[test]
    fn server_documents_lose_unknown_keys_and_get_the_runtime_version() {
        let mut doc = vector()["document"].clone();
        doc["bonus"] = Value::from(1);
        let (license, dropped) = License::from_server(doc, "4.14.2").unwrap();
        assert_eq!(dropped, ["bonus"]);
        assert_eq!(license.localstack_version, "4.14.2");
        let written: Value = serde_json::from_slice(&license.to_bytes()).unwrap();
        let keys: Vec<&str> = written
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = FORMAT_1_KEYS.to_vec();
        expected.sort();
        assert_eq!(keys, expected);
    }

    #[test]
    fn validity_rules_in_order() {
        let (license, token) = vector_license();
        let before_stale = OffsetDateTime::parse("2026-12-05T13:00:00Z", &Rfc3339).unwrap();
        let after_stale = OffsetDateTime::parse("2026-12-05T14:00:01Z", &Rfc3339).unwrap();
        let after_expiry = OffsetDateTime::parse("2027-11-02T00:00:00Z", &Rfc3339).unwrap();
        assert_eq!(license.check(&token, "4.14.2", before_stale), Ok(()));
        assert!(matches!(
            license.check(&token, "4.14.0", after_stale),
            Err(Invalid::Stale { .. })
        ));
        assert!(matches!(
            license.check(&token, "4.14.0", after_expiry),
            Err(Invalid::Expired { .. })
        ));
        assert!(matches!(
            license.check(&token, "4.1.0", before_stale),
            Err(Invalid::RuntimeVersion { .. })
        ));
        let other = key("ls-Abcd9876-aaaa-bbbb-cccc-dddddddd9d61");
        assert_eq!(
            license.check(&other, "4.14.0", before_stale),
            Err(Invalid::Signature)
        );
    }

    #[test]
    fn logged_fields_must_be_short_printable_text() {
        for (key, value) in [
            (
                "id",
                Value::from("license_1\n2026-12-04T00:00:00.000  INFO --- forged"),
            ),
            ("license_type", Value::from("pro\u{1b}[31m")),
            ("license_status", Value::from("A".repeat(201))),
        ] {
            let mut doc = vector()["document"].clone();
            doc[key] = value;
            let err = License::from_disk(&serde_json::to_vec(&doc).unwrap()).unwrap_err();
            assert_eq!(
                err,
                DocumentError::WrongType {
                    key,
                    expected: "short printable text"
                }
            );
        }
    }

    #[test]
    fn signatures_are_strictly_hex() {
        assert_eq!(decode_hex("0aFf"), Some(vec![0x0a, 0xff]));
        assert_eq!(decode_hex("+f"), None);
        assert_eq!(decode_hex("abc"), None);
    }

    /// A license signed with the vector's token by the reference server's independent signer,
    /// with dates relative to now (SPEC 3.3: the vector is for the signature only).
    fn fresh(template: license_server::LicenseTemplate) -> (License, Secret) {
        let token = vector()["token"].as_str().unwrap().to_string();
        let doc = license_server::make_license(&template, &token, "4.14.0", "license_fresh");
        (
            License::from_disk(&serde_json::to_vec(&doc).unwrap()).unwrap(),
            key(&token),
        )
    }

    #[test]
    fn every_validity_rule_with_dates_relative_to_now() {
        use license_server::{LicenseTemplate, Product as Item};
        let now = OffsetDateTime::now_utc();
        let day = time::Duration::days(1);

        let (license, token) = fresh(LicenseTemplate::default());
        assert_eq!(license.check(&token, "4.14.2", now), Ok(()));

        let (license, token) = fresh(LicenseTemplate {
            license_status: "SUSPENDED".into(),
            ..Default::default()
        });
        assert_eq!(
            license.check(&token, "4.14.0", now),
            Err(Invalid::Status("SUSPENDED".into()))
        );

        let (license, token) = fresh(LicenseTemplate {
            expiry_date: -day,
            reactivate_after: -day,
            ..Default::default()
        });
        // Expiry outranks staleness: an expired license is not worth re-activating.
        assert!(matches!(
            license.check(&token, "4.14.0", now),
            Err(Invalid::Expired { .. })
        ));

        let (license, token) = fresh(LicenseTemplate {
            reactivate_after: -day,
            ..Default::default()
        });
        assert!(matches!(
            license.check(&token, "4.14.0", now),
            Err(Invalid::Stale { .. })
        ));

        // Only the first product in document order counts.
        let (license, token) = fresh(LicenseTemplate {
            products: vec![
                Item::new("localstack-pro", "3.8"),
                Item::new("localstack-pro", "*"),
            ],
            ..Default::default()
        });
        assert!(matches!(
            license.check(&token, "4.14.0", now),
            Err(Invalid::Product { .. })
        ));
        let (license, token) = fresh(LicenseTemplate {
            products: vec![Item::new("localstack-pro", "4.14.*")],
            ..Default::default()
        });
        assert_eq!(license.check(&token, "4.14.9", now), Ok(()));

        let (mut license, token) = fresh(LicenseTemplate::default());
        license.license_format = "2".into();
        assert_eq!(
            license.check(&token, "4.14.0", now),
            Err(Invalid::Format("2".into()))
        );
    }

    #[test]
    fn versions_agree_on_two_parts() {
        assert!(same_minor("4.14.0", "4.14.2"));
        assert!(!same_minor("4.1", "4.14"));
        assert!(!same_minor("4", "4.0"));
        assert!(same_minor("4.14", "4.14.9"));
    }

    #[test]
    fn debug_output_hides_the_secret_and_signature() {
        let (license, _) = vector_license();
        let debug = format!("{license:?}");
        assert!(!debug.contains("TFMxLjA6"), "{debug}");
        assert!(!debug.contains("06958306"), "{debug}");
    }

    mod properties {
        use proptest::prelude::*;
        use time::{Date as Day, Month, PrimitiveDateTime, Time, UtcOffset};

        use super::*;

        proptest! {
            /// Any date with any offset and fraction, written in ISO-8601 in several spellings,
            /// signs as `YYYY-MM-DDTHH:MM:SS±HH:MM` with its own offset and no fraction.
            #[test]
            fn canonical_date_form(
                year in 1970i32..2200, month in 1u8..=12, day in 1u8..=28,
                hour in 0u8..24, minute in 0u8..60, second in 0u8..60,
                nanos in 0u32..1_000_000_000, digits in 0usize..=9,
                offset_minutes in -(14 * 60i32)..=(14 * 60),
                zulu in any::<bool>(),
            ) {
                let offset_minutes = if zulu { 0 } else { offset_minutes };
                let offset = UtcOffset::from_whole_seconds(offset_minutes * 60).unwrap();
                let day = Day::from_calendar_date(year, Month::try_from(month).unwrap(), day)
                    .unwrap();
                let time = Time::from_hms_nano(hour, minute, second, nanos).unwrap();
                let at = PrimitiveDateTime::new(day, time).assume_offset(offset);
                let base = format!(
                    "{year:04}-{month:02}-{:02}T{hour:02}:{minute:02}:{second:02}",
                    at.day()
                );
                let fraction = if digits == 0 {
                    String::new()
                } else {
                    format!(".{:09}", nanos)[..=digits].to_string()
                };
                let sign = if offset_minutes < 0 { '-' } else { '+' };
                let hm = format!("{:02}:{:02}", offset_minutes.abs() / 60, offset_minutes.abs() % 60);
                let written = if zulu {
                    format!("{base}{fraction}Z")
                } else {
                    format!("{base}{fraction}{sign}{hm}")
                };
                let parsed = Date::parse("date", &written).unwrap();
                let expected_sign = if offset_minutes < 0 { '-' } else { '+' };
                prop_assert_eq!(parsed.canonical(), format!("{base}{expected_sign}{hm}"));
            }
        }
    }
}
