//! Credentials (SPEC 3.1): trimming, the auth-token syntax and checksum, and masking.
//!
//! A credential's raw value is reachable only through [`Secret::expose`], used for the request
//! body and the signature key. Every other way of printing it (`Debug`, `Display`, errors) gives
//! the masked form.
//!
//! Not owned here: which credential to use when both are set, and what a rejected one means
//! (`mod.rs`).

use std::ffi::OsStr;
use std::fmt;

use md5::{Digest, Md5};

/// A credential's value and the variable it came from. Formatting it in any way prints the
/// masked form.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
    kind: CredentialKind,
}

impl Secret {
    /// Trims whitespace and quotes from both ends (SPEC 3.1); blank means unset.
    ///
    /// A value that is not UTF-8 is kept lossily: it can never match a real credential, and
    /// the server's rejection then says so.
    pub fn from_env_value(kind: CredentialKind, value: &OsStr) -> Option<Secret> {
        let value = value.to_string_lossy();
        let trimmed = value.trim_matches(|c: char| c.is_whitespace() || c == '\'' || c == '"');
        (!trimmed.is_empty()).then(|| Secret {
            value: trimmed.to_string(),
            kind,
        })
    }

    /// Only for the request body and the signature key.
    pub fn expose(&self) -> &str {
        &self.value
    }

    pub fn kind(&self) -> CredentialKind {
        self.kind
    }

    /// SPEC 3.1's masked form: a well-formed auth token's prefix and first 8 characters, an API
    /// key of 12 or more characters as its first 3 and its length, anything else (a malformed
    /// auth token included) as its length only.
    pub fn masked(&self) -> String {
        if let Some(parts) = auth_token_parts(&self.value) {
            return format!("{}-{}-****-****-****-************", parts[0], parts[1]);
        }
        let length = self.value.chars().count();
        if self.kind == CredentialKind::ApiKey && length >= 12 {
            let head: String = self.value.chars().take(3).collect();
            format!("{head}...<{length} chars>")
        } else {
            format!("<{length} chars>")
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// Which variable a credential came from; decides the type sent to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialKind {
    AuthToken,
    ApiKey,
}

impl CredentialKind {
    pub fn variable(self) -> &'static str {
        match self {
            CredentialKind::AuthToken => "LOCALSTACK_AUTH_TOKEN",
            CredentialKind::ApiKey => "LOCALSTACK_API_KEY",
        }
    }

    /// The `credentials.type` of the request body.
    pub fn wire_type(self) -> &'static str {
        match self {
            CredentialKind::AuthToken => "licensing-auth-token",
            CredentialKind::ApiKey => "licensing-api-key",
        }
    }
}

/// A credential ready for activation.
#[derive(Clone, Debug)]
pub struct Credential {
    pub kind: CredentialKind,
    pub secret: Secret,
}

impl Credential {
    /// The literal credential `test` selects the development mode: no activation.
    pub fn is_test(&self) -> bool {
        self.secret.expose() == "test"
    }

    /// Checks an auth token's syntax and checksum; API keys have no format to check.
    pub fn check_format(&self) -> Result<(), TokenFormatError> {
        if self.kind == CredentialKind::ApiKey || self.is_test() {
            return Ok(());
        }
        let value = self.secret.expose();
        if auth_token_parts(value).is_none() {
            return Err(TokenFormatError::Syntax);
        }
        // Everything after the first '-', without the 4 checksum characters at the end.
        let (_, body) = value.split_once('-').ok_or(TokenFormatError::Syntax)?;
        let (checked, checksum) = body.split_at(body.len() - 4);
        let digest = Md5::digest(checked.as_bytes());
        let expected = format!("{:02x}{:02x}", digest[0], digest[1]);
        if expected == checksum {
            Ok(())
        } else {
            Err(TokenFormatError::Checksum)
        }
    }
}

/// Why an auth token cannot be right; no request is made for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenFormatError {
    Syntax,
    Checksum,
}

impl fmt::Display for TokenFormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenFormatError::Syntax => f.write_str(
                "LOCALSTACK_AUTH_TOKEN does not look like an auth token (ls…-xxxxxxxx-xxxx-xxxx-\
                 xxxx-xxxxxxxxxxxx); copy it again from the LocalStack web app",
            ),
            TokenFormatError::Checksum => f.write_str(
                "LOCALSTACK_AUTH_TOKEN has a typo (its checksum does not match); copy it again \
                 from the LocalStack web app",
            ),
        }
    }
}

/// Splits a value matching
/// `^ls[A-Za-z]*-[A-Za-z]{4}[A-Za-z0-9]{4}(-[A-Za-z0-9]{4}){3}-[A-Za-z0-9]{12}$` into its six
/// dash-separated parts, or `None`.
fn auth_token_parts(value: &str) -> Option<[&str; 6]> {
    let mut parts = value.split('-');
    let mut next = || parts.next();
    let found = [next()?, next()?, next()?, next()?, next()?, next()?];
    if next().is_some() {
        return None;
    }
    let alnum = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_alphanumeric());
    let [prefix, first, a, b, c, last] = found;
    let prefix_ok = prefix.starts_with("ls") && prefix.bytes().all(|b| b.is_ascii_alphabetic());
    // Byte-wise: slicing the str could split a multi-byte character.
    let first_ok = first.len() == 8
        && first.as_bytes()[..4].iter().all(u8::is_ascii_alphabetic)
        && first.as_bytes()[4..].iter().all(u8::is_ascii_alphanumeric);
    let ok = prefix_ok && first_ok && alnum(a, 4) && alnum(b, 4) && alnum(c, 4) && alnum(last, 12);
    ok.then_some(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "ls-Wxyz0123-4567-89ab-cdef-ghijklmnf90e";

    fn secret(v: &str) -> Secret {
        Secret::from_env_value(CredentialKind::AuthToken, OsStr::new(v)).expect("non-blank")
    }

    fn api_key(v: &str) -> Secret {
        Secret::from_env_value(CredentialKind::ApiKey, OsStr::new(v)).expect("non-blank")
    }

    fn auth(v: &str) -> Credential {
        Credential {
            kind: CredentialKind::AuthToken,
            secret: secret(v),
        }
    }

    #[test]
    fn trimming_removes_whitespace_and_quotes_in_any_mix() {
        assert_eq!(secret(" \"' abc\r\n'\"\t").expose(), "abc");
        assert!(Secret::from_env_value(CredentialKind::AuthToken, OsStr::new(" ")).is_none());
        assert!(Secret::from_env_value(CredentialKind::AuthToken, OsStr::new("\"\"")).is_none());
        assert!(
            Secret::from_env_value(CredentialKind::AuthToken, OsStr::new(" ' \" \r\n")).is_none()
        );
    }

    #[test]
    fn vector_tokens_check_as_documented() {
        assert_eq!(auth(TOKEN).check_format(), Ok(()));
        assert_eq!(
            auth("ls-Abcd9876-aaaa-bbbb-cccc-dddddddd9d61").check_format(),
            Ok(())
        );
        let typo = auth("ls-Wxyz0123-4567-89ab-cdef-ghijklmnf900");
        assert_eq!(typo.check_format(), Err(TokenFormatError::Checksum));
    }

    #[test]
    fn token_syntax_is_strict() {
        for bad in [
            "ls-Wxyz0123-4567-89ab-cdef",
            "xx-Wxyz0123-4567-89ab-cdef-ghijklmnf90e",
            "ls-W1yz0123-4567-89ab-cdef-ghijklmnf90e",
            "ls-Wxyz0123-4567-89ab-cdef-ghijklmnf90e-",
            "ls-Wxyz0123-4567-89ab-cdef-ghijklmnf9_e",
            "lsé-Wxyz0123-4567-89ab-cdef-ghijklmnf90e",
        ] {
            assert_eq!(
                auth(bad).check_format(),
                Err(TokenFormatError::Syntax),
                "{bad}"
            );
        }
        let api_key = Credential {
            kind: CredentialKind::ApiKey,
            secret: secret("anything"),
        };
        assert_eq!(api_key.check_format(), Ok(()));
    }

    #[test]
    fn non_ascii_token_of_token_length_is_masked_without_panicking() {
        // Found by the configuration fuzz target: 8 bytes, but not 8 characters.
        let odd = secret("ls-abc\u{fffd}xy-4567-89ab-cdef-ghijklmnf90e");
        assert_eq!(odd.masked(), "<37 chars>");
        assert_eq!(
            auth("ls-abc\u{fffd}xy-4567-89ab-cdef-ghijklmnf90e").check_format(),
            Err(TokenFormatError::Syntax)
        );
    }

    #[test]
    fn masking_follows_the_spec() {
        assert_eq!(
            secret(TOKEN).masked(),
            "ls-Wxyz0123-****-****-****-************"
        );
        assert_eq!(api_key("abcdefghijkl").masked(), "abc...<12 chars>");
        assert_eq!(api_key("abcdefghijk").masked(), "<11 chars>");
        // A malformed auth token shows nothing of itself, however long.
        assert_eq!(secret("abcdefghijklmnop").masked(), "<16 chars>");
        assert_eq!(
            format!("{:?}", secret(TOKEN)),
            "ls-Wxyz0123-****-****-****-************"
        );
        let c = auth("supersecretvalue-123");
        assert!(!format!("{c:?}").contains("supersecretvalue"));
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// Characters the trimming removes from both ends.
        fn junk() -> impl Strategy<Value = String> {
            proptest::collection::vec(
                prop_oneof![
                    Just(' '),
                    Just('\t'),
                    Just('\r'),
                    Just('\n'),
                    Just('\''),
                    Just('"')
                ],
                0..6,
            )
            .prop_map(|chars| chars.into_iter().collect())
        }

        proptest! {
            #[test]
            fn trimming_strips_any_mix_of_whitespace_and_quotes(
                core in "[A-Za-z0-9][A-Za-z0-9 _.-]{0,30}[A-Za-z0-9]|[A-Za-z0-9]",
                before in junk(),
                after in junk(),
            ) {
                let value = format!("{before}{core}{after}");
                let secret = Secret::from_env_value(CredentialKind::AuthToken, OsStr::new(&value)).expect("non-blank");
                prop_assert_eq!(secret.expose(), core.as_str());
            }

            #[test]
            fn blank_after_trimming_is_unset(value in junk()) {
                prop_assert!(Secret::from_env_value(CredentialKind::AuthToken, OsStr::new(&value)).is_none());
            }

            #[test]
            fn masked_form_never_contains_a_secret_of_eight_or_more_characters(
                value in "\\PC{8,60}",
            ) {
                let Some(secret) = Secret::from_env_value(CredentialKind::AuthToken, OsStr::new(&value)) else {
                    return Ok(());
                };
                let raw = secret.expose().to_string();
                prop_assume!(raw.chars().count() >= 8);
                prop_assert!(!secret.masked().contains(&raw));
                let debug = format!("{:?}", secret);
                let display = format!("{}", secret);
                prop_assert!(!debug.contains(&raw));
                prop_assert!(!display.contains(&raw));
            }

            #[test]
            fn well_formed_tokens_mask_to_prefix_and_first_part(
                prefix in "ls[A-Za-z]{0,4}",
                first in "[A-Za-z]{4}[A-Za-z0-9]{4}",
                rest in "[A-Za-z0-9]{4}-[A-Za-z0-9]{4}-[A-Za-z0-9]{4}-[A-Za-z0-9]{12}",
            ) {
                let token = format!("{prefix}-{first}-{rest}");
                let secret = Secret::from_env_value(CredentialKind::AuthToken, OsStr::new(&token)).expect("non-blank");
                prop_assert_eq!(secret.masked(),
                    format!("{prefix}-{first}-****-****-****-************"));
            }
        }
    }
}
