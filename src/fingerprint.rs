//! A grouping fingerprint computed at the edge, stable across releases and
//! relays: the SDK's own `fingerprint` if it sent one; else the exception
//! types and the in-app frames (module or file, and function; no line
//! numbers); else the message with its variable parts normalized, so that
//! `user 1234 not found` and `user 98 not found` group together.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::event::{EventView, Field, Frame, MessageField};

/// The SDK's marker for "the default grouping, plus my parts".
const DEFAULT_MARKER: &str = "{{ default }}";

/// Variable parts of messages, most specific first. Compiled once.
static NORMALIZERS: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        // UUIDs, with or without dashes.
        (r"(?i)\b[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\b", "<uuid>"),
        // Emails.
        (r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}", "<email>"),
        // IPv4 addresses.
        (r"\b(?:[0-9]{1,3}\.){3}[0-9]{1,3}\b", "<ip>"),
        // Hex: 0x-prefixed, or 8+ hex digits with at least one digit.
        (r"(?i)\b0x[0-9a-f]+\b|\b[0-9a-f]*[0-9][0-9a-f]*[a-f][0-9a-f]*\b|\b[0-9a-f]*[a-f][0-9a-f]*[0-9][0-9a-f]*\b", "<hex>"),
        // Quoted strings.
        (r#""[^"]*"|'[^']*'"#, "<str>"),
        // Numbers, with decimals.
        (r"\b[0-9]+(?:\.[0-9]+)?", "<num>"),
    ]
    .into_iter()
    .map(|(p, r)| (Regex::new(p).expect("built-in normalizers compile"), r))
    .collect()
});

/// The fingerprint of an event: 32 hex digits, or `None` when it has nothing
/// to group by.
pub fn fingerprint(event: &Value) -> Option<String> {
    of(&EventView::from_tree(event))
}

/// The fingerprint of an event read as a view (see [`fingerprint`]).
pub fn of(event: &EventView<'_>) -> Option<String> {
    // Each part is hashed as it is found, its pieces one after another and
    // then a line end: the same bytes as the parts written out whole, with
    // no string for each.
    let mut hash = Sha256::new();
    let mut part = |pieces: &[&str]| {
        for piece in pieces {
            hash.update(piece.as_bytes());
        }
        hash.update(b"\n");
    };
    if !own_fingerprint(event, &mut part) && !default_parts(event, &mut part) {
        return None;
    }
    let digest = hash.finalize();
    Some(hex::encode(&digest[..16]))
}

/// Hands `part` the parts of the SDK's `fingerprint` array, with
/// `{{ default }}` expanded; whether there was any.
fn own_fingerprint(event: &EventView<'_>, part: &mut dyn FnMut(&[&str])) -> bool {
    let Some(values) = event.fingerprint.0.as_ref() else {
        return false;
    };
    let mut any = false;
    for v in values {
        match v {
            Field::Str(s) if s == DEFAULT_MARKER => any |= default_parts(event, part),
            Field::Str(s) => {
                part(&[s]);
                any = true;
            }
            Field::Num(n) => {
                part(&[&n.to_string()]);
                any = true;
            }
            _ => {}
        }
    }
    any
}

/// Hands `part` the exception types and in-app frames, else the normalized
/// message; whether there was any.
fn default_parts(event: &EventView<'_>, part: &mut dyn FnMut(&[&str])) -> bool {
    let exceptions = event
        .exception
        .0
        .as_ref()
        .and_then(|e| e.values.0.as_ref())
        .filter(|v| !v.is_empty());
    if let Some(exceptions) = exceptions {
        let mut any = false;
        for exception in exceptions.iter().filter_map(|e| e.0.as_ref()) {
            if let Some(ty) = exception.ty.as_str() {
                part(&["type:", ty]);
                any = true;
            }
            let frames = exception
                .stacktrace
                .0
                .as_ref()
                .and_then(|s| s.frames.0.as_deref())
                .unwrap_or_default();
            // A frame that is not an object counts, as an empty one.
            let empty = Frame::default();
            let frames = frames.iter().map(|f| f.0.as_ref().unwrap_or(&empty));
            let in_app = |f: &&Frame<'_>| f.in_app == Field::Bool(true);
            // The in-app frames when there are some, else all of them.
            let only_in_app = frames.clone().any(|f| in_app(&f));
            for frame in frames.filter(|f| !only_in_app || in_app(f)) {
                let location = frame
                    .module
                    .as_str()
                    .or(frame.filename.as_str())
                    .unwrap_or("");
                let function = frame.function.as_str().unwrap_or("");
                part(&["frame:", location, ":", function]);
                any = true;
            }
        }
        if any {
            return true;
        }
    }
    let logentry = event.logentry.0.as_ref();
    let (message_object, message_text) = match &event.message {
        MessageField::Object(m) => (Some(m), None),
        MessageField::Text(t) => (None, Some(&**t)),
        MessageField::None => (None, None),
    };
    let message = logentry
        .and_then(|l| l.message.as_str())
        .or_else(|| logentry.and_then(|l| l.formatted.as_str()))
        .or_else(|| message_object.and_then(|m| m.formatted.as_str()))
        .or_else(|| message_object.and_then(|m| m.message.as_str()));
    let Some(message) = message.or(message_text) else {
        return false;
    };
    part(&["message:", &normalize(message)]);
    true
}

/// A message with its variable parts replaced by placeholders.
pub fn normalize(message: &str) -> String {
    let mut text = message.to_owned();
    for (regex, placeholder) in NORMALIZERS.iter() {
        if regex.is_match(&text) {
            text = regex.replace_all(&text, *placeholder).into_owned();
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn messages_group_by_their_constant_parts() {
        let table = [
            ("user 1234 not found", "user 98 not found"),
            (
                "order 9ec79c33-ec99-42ab-8353-589fcb2e04dc failed",
                "order 1b4e28ba2fa1-11d2-883f-0016d3cca427 failed",
            ),
            (
                "mail to alice@example.com bounced",
                "mail to bob@example.org bounced",
            ),
            ("connect 10.0.0.1 refused", "connect 192.168.1.20 refused"),
            ("key \"abc\" missing", "key \"xyz-2\" missing"),
            ("ptr 0xdeadbeef freed", "ptr 0x1f freed"),
            ("took 1.5s", "took 22.75s"),
        ];
        for (a, b) in table {
            assert_eq!(normalize(a), normalize(b), "{a} / {b}");
            assert_eq!(
                fingerprint(&json!({"message": a})),
                fingerprint(&json!({"message": b}))
            );
        }
        assert_ne!(
            fingerprint(&json!({"message": "user 1 not found"})),
            fingerprint(&json!({"message": "user 1 deleted"}))
        );
    }

    #[test]
    fn exceptions_group_by_type_and_in_app_frames_not_line_numbers() {
        let event = |ty: &str, line: u64, release: &str| {
            json!({
                "release": release,
                "exception": {"values": [{"type": ty, "value": format!("at line {line}"), "stacktrace": {"frames": [
                    {"module": "django.core", "function": "handle", "lineno": 3, "in_app": false},
                    {"module": "app.checkout", "function": "charge", "lineno": line, "in_app": true},
                ]}}]}
            })
        };
        let a = fingerprint(&event("CardDeclinedError", 10, "shop@1.0")).unwrap();
        assert_eq!(a.len(), 32);
        assert_eq!(
            Some(a.clone()),
            fingerprint(&event("CardDeclinedError", 99, "shop@2.0")),
            "stable across releases"
        );
        assert_ne!(Some(a), fingerprint(&event("TimeoutError", 10, "shop@1.0")));
    }

    #[test]
    fn the_sdk_fingerprint_wins_and_can_extend_the_default() {
        let own = json!({"fingerprint": ["payments", "declined"], "message": "x"});
        let same = json!({"fingerprint": ["payments", "declined"], "message": "y"});
        assert_eq!(fingerprint(&own), fingerprint(&same));
        let extended =
            json!({"fingerprint": ["{{ default }}", "eu"], "message": "user 1 not found"});
        let extended2 =
            json!({"fingerprint": ["{{ default }}", "eu"], "message": "user 2 not found"});
        let other_region =
            json!({"fingerprint": ["{{ default }}", "us"], "message": "user 2 not found"});
        assert_eq!(fingerprint(&extended), fingerprint(&extended2));
        assert_ne!(fingerprint(&extended), fingerprint(&other_region));
    }

    /// Values pinned as the relay computed them when this test was written:
    /// whatever the code becomes, relays of every version must agree.
    #[test]
    fn pinned_values_do_not_drift() {
        let frames = json!([
            {"module": "django.core", "function": "handle", "in_app": false},
            {"filename": "app/checkout.py", "function": "charge", "in_app": true},
            "not a frame",
            {"module": "app.views"},
        ]);
        let table = [
            (
                json!({"message": "user 1234 not found"}),
                "68d078910472f65ac2589ca6cab43060",
            ),
            (
                json!({"logentry": {"message": "took %s ms", "formatted": "took 5 ms"}}),
                "8eeaa2cffb4f3e228eb3b2d8cf68e9f1",
            ),
            (
                json!({"message": {"formatted": "a \"quoted\" id 0xff"}}),
                "2b2041d5d72720563323a4f2521e087d",
            ),
            (
                json!({"exception": {"values": [{"type": "E", "stacktrace": {"frames": frames}}]}}),
                "6b4af6951530ba6cfbfbb6416f234ee3",
            ),
            (
                json!({"exception": {"values": [
                    {"type": "KeyError", "stacktrace": {"frames": [{"function": "f"}, "x"]}},
                    {"stacktrace": {"frames": [{"module": "m", "function": "g", "in_app": true}]}},
                    "not an exception",
                ]}}),
                "5b01b5dd4de3f537f98f86bf86e97402",
            ),
            (
                json!({"exception": {"values": [{"value": "no type, no frames"}]}, "message": "fallback 7"}),
                "fba71d765ba717a57066724c85384a29",
            ),
            (
                json!({"fingerprint": ["{{ default }}", 42, "eu", true], "message": "user 2 not found"}),
                "6b799dbb304e9d51bd291cb0c064d2fd",
            ),
            (
                json!({"fingerprint": [true, null], "message": "only booleans"}),
                "7e044253b08b4e904eed7ed90fd1790b",
            ),
            (
                json!({"fingerprint": ["{{ default }}"], "level": "error"}),
                "none",
            ),
        ];
        for (event, pinned) in table {
            assert_eq!(
                fingerprint(&event).as_deref().unwrap_or("none"),
                pinned,
                "{event}"
            );
        }
    }

    #[test]
    fn stable_values_do_not_drift() {
        // A fixed point: relays of any version must compute the same value.
        assert_eq!(
            fingerprint(&json!({"message": "user 1234 not found"})).unwrap(),
            fingerprint(&json!({"message": "user 5 not found"})).unwrap()
        );
        assert_eq!(fingerprint(&json!({"level": "error"})), None);
    }
}
