//! How a found secret is redacted: `remove`, `replace`, `mask` or `hash`.

use std::borrow::Cow;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A redaction method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The value becomes null, or its key is removed; inside text, the match is cut out.
    Remove,
    /// The value or match becomes `[rule-name]` (or `[Filtered]` for sensitive keys).
    Replace,
    /// Each letter and digit becomes `*`; separators (spaces, dashes, dots) stay.
    Mask,
    /// HMAC-SHA256 with the configured key, in hex: the same value
    /// pseudonymises the same way across events and cannot be reversed.
    Hash,
}

impl Method {
    /// Parses a config value.
    pub fn parse(s: &str) -> Option<Method> {
        Some(match s {
            "remove" => Method::Remove,
            "replace" => Method::Replace,
            "mask" => Method::Mask,
            "hash" => Method::Hash,
            _ => return None,
        })
    }

    /// The name used in config and in the redaction list.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Remove => "remove",
            Method::Replace => "replace",
            Method::Mask => "mask",
            Method::Hash => "hash",
        }
    }

    /// The code Sentry's `_meta` uses for it: removed, substituted, masked, pseudonymized.
    pub fn meta_code(self) -> &'static str {
        match self {
            Method::Remove => "x",
            Method::Replace => "s",
            Method::Mask => "m",
            Method::Hash => "p",
        }
    }
}

/// Redacts `value` as text: what it becomes. `Remove` within text yields "".
/// Borrowed where it is the replacement itself (no allocation for the
/// commonest methods: most events' redactions are replacements).
pub fn redact_text<'r>(
    method: Method,
    value: &str,
    replacement: &'r str,
    hash_key: Option<&[u8]>,
) -> Cow<'r, str> {
    match method {
        Method::Remove => Cow::Borrowed(""),
        Method::Replace => Cow::Borrowed(replacement),
        Method::Mask => Cow::Owned(
            value
                .chars()
                .map(|c| if c.is_alphanumeric() { '*' } else { c })
                .collect(),
        ),
        Method::Hash => Cow::Owned(hmac_hex(hash_key.unwrap_or_default(), value)),
    }
}

/// HMAC-SHA256 of `value` under `key`, lowercase hex.
pub fn hmac_hex(key: &[u8], value: &str) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(value.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods() {
        assert_eq!(redact_text(Method::Remove, "x", "[r]", None), "");
        assert_eq!(redact_text(Method::Replace, "x", "[r]", None), "[r]");
        assert_eq!(
            redact_text(Method::Mask, "4111 1111-11", "[r]", None),
            "**** ****-**"
        );
        let a = redact_text(Method::Hash, "alice@example.com", "", Some(b"k1"));
        assert_eq!(a.len(), 64);
        assert_eq!(
            a,
            redact_text(Method::Hash, "alice@example.com", "", Some(b"k1")),
            "stable"
        );
        assert_ne!(
            a,
            redact_text(Method::Hash, "alice@example.com", "", Some(b"k2")),
            "keyed"
        );
        assert!(!a.contains("alice"));
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        assert_eq!(
            hmac_hex(b"Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
