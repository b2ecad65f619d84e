//! License documents of format "1" (SPEC 3.3): the template a credential's licenses are made
//! from, the document built from it with dates relative to now, and its HMAC-SHA256 signature.
//!
//! Owns no networking and no server state; `server` decides when a license is issued.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use time::macros::format_description;
use time::{Duration, OffsetDateTime};

/// The only license format this server speaks.
pub const LICENSE_FORMAT: &str = "1";

/// One entry of a license's `products` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    /// Product name, e.g. `localstack-pro`.
    pub name: String,
    /// Version pattern, e.g. `*` or `4.*`.
    pub version: String,
}

impl Product {
    /// A product entry from its name and version pattern.
    pub fn new(name: &str, version: &str) -> Product {
        Product {
            name: name.to_string(),
            version: version.to_string(),
        }
    }
}

/// What the licenses of one credential look like. Dates are offsets from the moment a license
/// is made and may be negative, to issue expired or stale licenses on purpose.
#[derive(Debug, Clone, PartialEq)]
pub struct LicenseTemplate {
    /// `license_type`. Defaults to `"pro"`.
    pub license_type: String,
    /// `license_status`. Defaults to `"ACTIVE"`; any other value is issued as is.
    pub license_status: String,
    /// `products`, in document order. Defaults to `[{"name": "localstack-pro", "version": "*"}]`.
    pub products: Vec<Product>,
    /// `issue_date` relative to now. Defaults to minus one day.
    pub issue_date: Duration,
    /// `expiry_date` relative to now. Defaults to 365 days.
    pub expiry_date: Duration,
    /// `reactivate_after` relative to now. Defaults to one day.
    pub reactivate_after: Duration,
    /// `offline_data.localstack_version` to put in the license instead of the version the
    /// client sent. Defaults to none (the client's version is echoed).
    pub localstack_version: Option<String>,
}

impl Default for LicenseTemplate {
    fn default() -> LicenseTemplate {
        LicenseTemplate {
            license_type: "pro".to_string(),
            license_status: "ACTIVE".to_string(),
            products: vec![Product::new("localstack-pro", "*")],
            issue_date: Duration::days(-1),
            expiry_date: Duration::days(365),
            reactivate_after: Duration::days(1),
            localstack_version: None,
        }
    }
}

/// Why a document cannot be signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignError {
    /// A signed field is absent or not a string.
    MissingField(&'static str),
    /// `products` is not a list of `{name, version}` string pairs.
    BadProducts,
    /// A signed date is not ISO-8601 with seconds and a UTC offset.
    BadDate { field: &'static str, value: String },
}

impl fmt::Display for SignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignError::MissingField(field) => {
                write!(
                    f,
                    "failed to sign license: field `{field}` is missing or not a string"
                )
            }
            SignError::BadProducts => write!(
                f,
                "failed to sign license: `products` must be a list of {{name, version}} strings"
            ),
            SignError::BadDate { field, value } => write!(
                f,
                "failed to sign license: `{field}` is {value:?}, expected \
                 YYYY-MM-DDTHH:MM:SS with a UTC offset"
            ),
        }
    }
}

impl std::error::Error for SignError {}

/// The fields that enter the signature, in signing order.
struct SignedFields<'a> {
    id: &'a str,
    products: Vec<(&'a str, &'a str)>,
    license_format: &'a str,
    issue_date: String,
    expiry_date: String,
    license_type: &'a str,
    license_status: &'a str,
    reactivate_after: String,
}

impl SignedFields<'_> {
    /// The exact byte string that is signed (SPEC 3.3): fields concatenated without separators.
    fn canonical_message(&self) -> String {
        let mut products = self.products.clone();
        // Byte-wise (name, version) order, which is what `str`'s `Ord` is.
        products.sort();
        let mut message = String::from(self.id);
        for (name, version) in products {
            message.push_str(name);
            message.push_str(version);
        }
        for part in [
            self.license_format,
            &self.issue_date,
            &self.expiry_date,
            self.license_type,
            self.license_status,
            &self.reactivate_after,
        ] {
            message.push_str(part);
        }
        message
    }

    fn signature(&self, key: &str) -> String {
        hmac_sha256_hex(key.as_bytes(), self.canonical_message().as_bytes())
    }
}

/// Signs a license document with `key` (the credential it is issued for): the lowercase hex
/// HMAC-SHA256 over the canonical message of SPEC 3.3. The document's own `signature` is
/// ignored and other unsigned keys may be anything.
pub fn sign(document: &Value, key: &str) -> Result<String, SignError> {
    Ok(signed_fields(document)?.signature(key))
}

/// The canonical message `sign` signs, for tests that compare it with a vector.
pub fn canonical_message(document: &Value) -> Result<String, SignError> {
    Ok(signed_fields(document)?.canonical_message())
}

fn signed_fields(document: &Value) -> Result<SignedFields<'_>, SignError> {
    let text = |field: &'static str| {
        document
            .get(field)
            .and_then(Value::as_str)
            .ok_or(SignError::MissingField(field))
    };
    let date = |field: &'static str| -> Result<String, SignError> {
        let value = text(field)?;
        parse_date(value)
            .map(format_date)
            .ok_or_else(|| SignError::BadDate {
                field,
                value: value.to_string(),
            })
    };
    let products = document
        .get("products")
        .and_then(Value::as_array)
        .ok_or(SignError::BadProducts)?
        .iter()
        .map(|product| {
            let name = product.get("name").and_then(Value::as_str);
            let version = product.get("version").and_then(Value::as_str);
            name.zip(version).ok_or(SignError::BadProducts)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SignedFields {
        id: text("id")?,
        products,
        license_format: text("license_format")?,
        issue_date: date("issue_date")?,
        expiry_date: date("expiry_date")?,
        license_type: text("license_type")?,
        license_status: text("license_status")?,
        reactivate_after: date("reactivate_after")?,
    })
}

/// Makes a signed license document of format "1" from `template`, with dates relative to now,
/// for the credential `key`. `offline_data.localstack_version` is the template's override if it
/// has one, else `localstack_version`. Tests use it to write `license.json` fixtures.
pub fn make_license(
    template: &LicenseTemplate,
    key: &str,
    localstack_version: &str,
    id: &str,
) -> Value {
    // Whole seconds: the document carries no fraction, so signing what we format is exact.
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let at = |offset: Duration| format_date(now.saturating_add(offset));
    let fields = SignedFields {
        id,
        products: template
            .products
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str()))
            .collect(),
        license_format: LICENSE_FORMAT,
        issue_date: at(template.issue_date),
        expiry_date: at(template.expiry_date),
        license_type: &template.license_type,
        license_status: &template.license_status,
        reactivate_after: at(template.reactivate_after),
    };
    let products: Vec<Value> = template
        .products
        .iter()
        .map(|p| json!({"name": p.name, "version": p.version}))
        .collect();
    json!({
        "id": id,
        "license_format": LICENSE_FORMAT,
        "signature": fields.signature(key),
        "license_type": template.license_type,
        "issue_date": fields.issue_date,
        "expiry_date": fields.expiry_date,
        "products": products,
        "license_status": template.license_status,
        "license_secret": new_license_secret(),
        "last_activated": format_date(now),
        "reactivate_after": fields.reactivate_after,
        "offline_data": {
            "localstack_version": template.localstack_version.as_deref()
                .unwrap_or(localstack_version),
        },
    })
}

/// A fresh license id: `license_` and a random version-4 UUID in hex.
pub fn new_license_id() -> String {
    let n = fastrand::u128(..);
    // Version 4 and RFC 4122 variant bits, so the id looks like what the real API hands out.
    let n = (n & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    let hex = format!("{n:032x}");
    format!(
        "license_{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A random `license_secret`: base64 of `LS1.0:` and 32 random bytes, the shape upstream uses.
fn new_license_secret() -> String {
    let mut bytes = b"LS1.0:".to_vec();
    bytes.extend((0..32).map(|_| fastrand::u8(..)));
    crate::base64::encode(&bytes)
}

/// Formats a date as `YYYY-MM-DDTHH:MM:SS±HH:MM`: the document form and the signed form alike.
pub fn format_date(date: OffsetDateTime) -> String {
    let (offset_hours, offset_minutes, _) = date.offset().as_hms();
    let sign = if date.offset().is_negative() {
        '-'
    } else {
        '+'
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{sign}{:02}:{:02}",
        date.year(),
        u8::from(date.month()),
        date.day(),
        date.hour(),
        date.minute(),
        date.second(),
        offset_hours.unsigned_abs(),
        offset_minutes.unsigned_abs(),
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, keeping the offset.
pub fn parse_date(text: &str) -> Option<OffsetDateTime> {
    let format = format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]\
         [offset_hour sign:mandatory]:[offset_minute]"
    );
    match text.strip_suffix('Z') {
        Some(utc) => OffsetDateTime::parse(&format!("{utc}+00:00"), format).ok(),
        None => OffsetDateTime::parse(text, format).ok(),
    }
}

fn hmac_sha256_hex(key: &[u8], message: &[u8]) -> String {
    // HMAC hashes keys longer than a block and pads shorter ones, so no key length is invalid
    // and `new_from_slice` cannot fail for `Hmac`.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(message);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VECTOR: &str = include_str!("../testdata/license-v1.json");

    fn vector() -> Value {
        serde_json::from_str(VECTOR).unwrap()
    }

    #[test]
    fn signature_matches_vector() {
        let v = vector();
        let token = v["token"].as_str().unwrap();
        assert_eq!(
            canonical_message(&v["document"]).unwrap(),
            v["canonical_message"]
        );
        assert_eq!(sign(&v["document"], token).unwrap(), v["signature"]);
        assert_eq!(v["document"]["signature"], v["signature"]);
    }

    #[test]
    fn signature_depends_on_key() {
        let v = vector();
        let other = v["other_valid_token"].as_str().unwrap();
        assert_ne!(sign(&v["document"], other).unwrap(), v["signature"]);
    }

    #[test]
    fn canonical_date_forms() {
        let canonical = |s: &str| parse_date(s).map(format_date);
        assert_eq!(
            canonical("2026-11-01T00:00:00Z").unwrap(),
            "2026-11-01T00:00:00+00:00"
        );
        assert_eq!(
            canonical("2026-11-01T00:00:00+00:00").unwrap(),
            "2026-11-01T00:00:00+00:00"
        );
        assert_eq!(
            canonical("2026-12-05T15:00:00.750+01:00").unwrap(),
            "2026-12-05T15:00:00+01:00"
        );
        assert_eq!(
            canonical("2026-12-05T15:00:59.999999Z").unwrap(),
            "2026-12-05T15:00:59+00:00"
        );
        assert_eq!(
            canonical("2026-12-05T15:00:00-05:30").unwrap(),
            "2026-12-05T15:00:00-05:30"
        );
        assert_eq!(
            canonical("2026-12-05T15:00:00"),
            None,
            "a date needs an offset"
        );
        assert_eq!(canonical("2026-12-05"), None);
        assert_eq!(canonical("yesterday"), None);
    }

    #[test]
    fn sign_reports_what_is_wrong() {
        let mut doc = vector()["document"].clone();
        doc["issue_date"] = json!("2026-11-01");
        let err = sign(&doc, "k").unwrap_err();
        assert_eq!(
            err,
            SignError::BadDate {
                field: "issue_date",
                value: "2026-11-01".into()
            }
        );
        assert!(err.to_string().contains("issue_date"));
        doc.as_object_mut().unwrap().remove("id");
        assert_eq!(sign(&doc, "k").unwrap_err(), SignError::MissingField("id"));
        let mut doc = vector()["document"].clone();
        doc["products"] = json!([{"name": "x"}]);
        assert_eq!(sign(&doc, "k").unwrap_err(), SignError::BadProducts);
    }

    #[test]
    fn made_license_has_format_1_keys_and_verifies() {
        let id = new_license_id();
        let doc = make_license(&LicenseTemplate::default(), "key-1", "4.14.0", &id);
        let keys = |doc: &Value| {
            let mut keys: Vec<String> = doc.as_object().unwrap().keys().cloned().collect();
            keys.sort();
            keys
        };
        // The vector's keys are exactly those of format "1".
        assert_eq!(keys(&doc), keys(&vector()["document"]));
        assert_eq!(doc["id"], id);
        assert_eq!(doc["license_format"], "1");
        assert_eq!(doc["license_status"], "ACTIVE");
        assert_eq!(doc["license_type"], "pro");
        assert_eq!(doc["offline_data"]["localstack_version"], "4.14.0");
        assert_eq!(
            doc["products"],
            json!([{"name": "localstack-pro", "version": "*"}])
        );
        assert_eq!(doc["signature"], sign(&doc, "key-1").unwrap());
        assert_ne!(doc["signature"], sign(&doc, "key-2").unwrap());
    }

    #[test]
    fn made_license_dates_follow_template() {
        let template = LicenseTemplate {
            expiry_date: Duration::hours(-2),
            reactivate_after: Duration::minutes(-5),
            localstack_version: Some("3.0.0".into()),
            ..LicenseTemplate::default()
        };
        let doc = make_license(&template, "k", "4.14.0", "license_x");
        let now = OffsetDateTime::now_utc();
        let date = |key: &str| {
            let text = doc[key].as_str().unwrap();
            assert_eq!(text.len(), "YYYY-MM-DDTHH:MM:SS+00:00".len(), "{text}");
            assert!(text.ends_with("+00:00"), "{text}");
            parse_date(text).unwrap()
        };
        let near = |a: OffsetDateTime, b: OffsetDateTime| (a - b).abs() < Duration::seconds(5);
        assert!(near(date("issue_date"), now - Duration::days(1)));
        assert!(near(date("expiry_date"), now - Duration::hours(2)));
        assert!(near(date("reactivate_after"), now - Duration::minutes(5)));
        assert!(near(date("last_activated"), now));
        assert_eq!(doc["offline_data"]["localstack_version"], "3.0.0");
    }

    #[test]
    fn license_ids_look_like_uuids() {
        let id = new_license_id();
        let uuid = id.strip_prefix("license_").unwrap();
        let groups: Vec<usize> = uuid.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12]);
        assert!(uuid.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        assert_eq!(&uuid[14..15], "4");
        assert_ne!(new_license_id(), id);
    }

    #[test]
    fn license_secrets_have_the_upstream_shape() {
        let secret = new_license_secret();
        assert_eq!(secret.len(), 52);
        assert!(secret.starts_with("TFMxLjA6"), "{secret}");
    }
}
