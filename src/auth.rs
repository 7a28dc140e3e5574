//! API keys for the write endpoints (and the read endpoints, when configured).
//!
//! Keys are kept as SHA-256 digests and a presented key is compared with every one of them in
//! constant time, so neither the comparison's duration nor a log line reveals a key.

use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

/// The result of checking an `Authorization` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheck {
    Accepted,
    /// No `Authorization: Bearer` header.
    Missing,
    /// A key that is not configured.
    Rejected,
    /// No key is configured, so nothing is accepted.
    NoKeysConfigured,
}

#[derive(Clone)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl ApiKeys {
    pub fn new(keys: &[String]) -> Self {
        Self { digests: keys.iter().map(|key| digest(key)).collect() }
    }

    /// Checks the value of an `Authorization` header.
    pub fn check(&self, authorization: Option<&str>) -> KeyCheck {
        if self.digests.is_empty() {
            return KeyCheck::NoKeysConfigured;
        }
        let Some(presented) = authorization.and_then(bearer_token) else {
            return KeyCheck::Missing;
        };
        let presented = digest(presented);
        let matched = self.digests.iter().fold(Choice::from(0), |matched, known| matched | known.ct_eq(&presented));
        if bool::from(matched) {
            KeyCheck::Accepted
        } else {
            KeyCheck::Rejected
        }
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Returns the token of `Bearer TOKEN` (the scheme is case-insensitive); `None` for other schemes.
fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ApiKeys {
        ApiKeys::new(&["first-key".into(), "second-key".into()])
    }

    #[test]
    fn configured_keys_accepted() {
        assert_eq!(keys().check(Some("Bearer first-key")), KeyCheck::Accepted);
        assert_eq!(keys().check(Some("bearer second-key")), KeyCheck::Accepted);
    }

    #[test]
    fn bad_keys_rejected() {
        assert_eq!(keys().check(Some("Bearer first-ke")), KeyCheck::Rejected);
        assert_eq!(keys().check(Some("Bearer first-key2")), KeyCheck::Rejected);
        assert_eq!(keys().check(None), KeyCheck::Missing);
        assert_eq!(keys().check(Some("Basic Zmlyc3Qta2V5")), KeyCheck::Missing);
        assert_eq!(keys().check(Some("Bearer ")), KeyCheck::Missing);
        assert_eq!(keys().check(Some("first-key")), KeyCheck::Missing);
    }

    #[test]
    fn no_keys_accepts_nothing() {
        assert_eq!(ApiKeys::new(&[]).check(Some("Bearer anything")), KeyCheck::NoKeysConfigured);
    }
}
