//! A log message's parameters, judged by where they stand in its template.
//!
//! SDKs send a logged message twice: formatted (`login failed password=hunter2`,
//! which the text rules scrub), and as its template with the parameters
//! apart (`password=%s` and `["hunter2"]`: Python's logging integration in
//! `logentry`, Java's in `message`; the `sentry.message.template` and
//! `sentry.message.parameter.N` attributes of Sentry logs). A parameter
//! alone says nothing of what it is; its slot in the template does. So the
//! template is scrubbed with a stand-in in each slot, and a parameter whose
//! stand-in the rules redacted is a secret, redacted whole as a value
//! under a sensitive key is.

use std::fmt::Write;

use serde_json::{Map, Value};

use super::Scrubber;

/// The attribute of a Sentry log (or span) that holds its message's template.
pub const TEMPLATE_ATTRIBUTE: &str = "sentry.message.template";

/// The prefix of the attributes that hold a Sentry log's parameters, each
/// named by its slot (`sentry.message.parameter.0`, `...parameter.user`).
const PARAMETER_PREFIX: &str = "sentry.message.parameter.";

/// Slots read from one template at most: the parameters of the rest are
/// judged as any value is.
const MAX_SLOTS: usize = 64;

/// The names of a template's slots whose parameter is a secret: a
/// position (`"0"`), or the name a slot gives (`%(user)s`, `{user}`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Slots(Vec<Box<str>>);

impl Slots {
    /// Whether no parameter is a secret.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether the parameter named `name` (a position or a slot's name) is a secret.
    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|n| &**n == name)
    }

    /// Whether the parameter at position `i` is a secret.
    pub fn has_index(&self, i: usize) -> bool {
        self.0.iter().any(|n| n.parse() == Ok(i))
    }
}

/// What a key of an object that holds a template names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKey<'k> {
    /// The parameters together (`params`: a list by position, or an object
    /// by name).
    All,
    /// One parameter (`sentry.message.parameter.0`: `"0"`).
    One(&'k str),
}

/// What `key` names among a template's parameters, if anything.
pub fn param_key(key: &str) -> Option<ParamKey<'_>> {
    if key == "params" {
        return Some(ParamKey::All);
    }
    key.strip_prefix(PARAMETER_PREFIX).map(ParamKey::One)
}

/// The template an object holds beside its parameters: a log's
/// `sentry.message.template` attribute (a string, or typed:
/// `{"value": "...", "type": "string"}`), else its `message`.
pub fn template_of(map: &Map<String, Value>) -> Option<&str> {
    let attribute = match map.get(TEMPLATE_ATTRIBUTE) {
        Some(Value::String(t)) => Some(t.as_str()),
        Some(Value::Object(typed)) => typed.get("value").and_then(Value::as_str),
        _ => None,
    };
    attribute.or_else(|| map.get("message").and_then(Value::as_str))
}

/// Each slot of a template, in order: where it is, and the names its
/// parameter may go by. A template is read in one syntax: printf's if it
/// has a printf slot (`%s`, `%5.2f`, `%(user)s`, `%1$s`; `%%` is no slot),
/// else braces (`{}`, `{0}`, `{user}`, `{@user}`, `{$user}`, `{user:>8}`;
/// `{{` is no slot): a `{}` in a printf template, or `50% done` beside
/// braces, is text. A bare slot is named by its position; one named
/// `{user}` answers to its name and to its position among all the slots
/// (.NET's and Serilog's templates name their slots and pass the values by
/// position), and a `{}` after one to both positions it may have (among
/// all the slots, and among the bare ones, as Python's `str.format`
/// counts). At most [`MAX_SLOTS`].
pub fn slots(template: &str) -> Vec<(std::ops::Range<usize>, Vec<String>)> {
    let printf = read(template, b'%');
    if printf.is_empty() {
        read(template, b'{')
    } else {
        printf
    }
}

/// The slots of one syntax: printf's when `open` is `%`, else braces.
fn read(template: &str, open: u8) -> Vec<(std::ops::Range<usize>, Vec<String>)> {
    let b = template.as_bytes();
    let mut out = Vec::new();
    // Positions among all the slots, and among the bare ones.
    let (mut all, mut bare) = (0usize, 0usize);
    let mut at = 0;
    while out.len() < MAX_SLOTS {
        let Some(found) = memchr::memchr(open, &b[at..]) else {
            break;
        };
        at += found;
        if b.get(at + 1) == Some(&open) {
            at += 2;
            continue;
        }
        let slot = match open {
            b'%' => printf_slot(b, at),
            _ => brace_slot(b, at),
        };
        let Some((end, name)) = slot else {
            at += 1;
            continue;
        };
        let mut names = match name {
            Name::Next => vec![all.to_string(), bare.to_string()],
            Name::Index(i) => vec![i.to_string()],
            Name::Named(n) => vec![n.to_owned(), all.to_string()],
            Name::Key(n) => vec![n.to_owned()],
        };
        names.dedup();
        all += usize::from(!matches!(name, Name::Index(_) | Name::Key(_)));
        bare += usize::from(matches!(name, Name::Next));
        out.push((at..end, names));
        at = end;
    }
    out
}

/// How a slot names its parameter.
enum Name<'t> {
    /// By its place among the slots (`%s`, `{}`).
    Next,
    /// By an explicit position (`{1}`, `%2$s`: the second).
    Index(usize),
    /// By a name, and by its place too (`{user}`).
    Named(&'t str),
    /// By a key of a mapping only (`%(user)s`).
    Key(&'t str),
}

/// A printf slot at `at` (a `%`): its end and name. No space flag: in
/// `50% done`, `% d` is prose.
fn printf_slot(b: &[u8], at: usize) -> Option<(usize, Name<'_>)> {
    let mut i = at + 1;
    let mut name = Name::Next;
    if b.get(i) == Some(&b'(') {
        let close = i + b[i..].iter().take(65).position(|&c| c == b')')?;
        name = Name::Key(std::str::from_utf8(&b[i + 1..close]).ok()?);
        i = close + 1;
    } else {
        // `%2$s`: the second parameter.
        let digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits > 0 && b.get(i + digits) == Some(&b'$') {
            let n: usize = std::str::from_utf8(&b[i..i + digits]).ok()?.parse().ok()?;
            name = Name::Index(n.checked_sub(1)?);
            i += digits + 1;
        }
    }
    while b.get(i).is_some_and(|c| b"-#0+'".contains(c)) {
        i += 1;
    }
    while b
        .get(i)
        .is_some_and(|c| c.is_ascii_digit() || *c == b'*' || *c == b'.')
    {
        i += 1;
    }
    while b.get(i).is_some_and(|c| b"hlLqjzt".contains(c)) {
        i += 1;
    }
    if !b.get(i).is_some_and(|c| b"diouxXeEfFgGcrsaSp@".contains(c)) {
        return None;
    }
    Some((i + 1, name))
}

/// A brace slot at `at` (a `{`): its end and name. What is inside must be
/// nothing, a position or a name (Serilog's `@` and `$` before it, a
/// format after `:`, `!` or `,`): JSON or code in a message (`{"a": 1}`)
/// is no slot.
fn brace_slot(b: &[u8], at: usize) -> Option<(usize, Name<'_>)> {
    let close = at + 1 + b[at + 1..].iter().take(65).position(|&c| c == b'}')?;
    let inner = std::str::from_utf8(&b[at + 1..close]).ok()?;
    if inner.contains('{') || inner.starts_with(' ') {
        return None;
    }
    let field = inner
        .split([':', '!', ','])
        .next()
        .unwrap_or_default()
        .trim();
    let field = field.strip_prefix(['@', '$']).unwrap_or(field);
    let name = if field.is_empty() {
        Name::Next
    } else if let Ok(i) = field.parse::<usize>() {
        Name::Index(i)
    } else if field
        .chars()
        .all(|c| c.is_alphanumeric() || c == '_' || c == '.')
        && field
            .chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
    {
        Name::Named(field)
    } else {
        return None;
    };
    Some((close + 1, name))
}

impl Scrubber {
    /// The slots of `template` whose parameter is a secret (see
    /// [`Self::redacted_stand_ins`]).
    pub fn secret_slots(&self, template: &str) -> Slots {
        let slots = slots(template);
        let ranges: Vec<_> = slots
            .iter()
            .enumerate()
            .map(|(i, (r, _))| (r.clone(), i))
            .collect();
        let redacted = self.redacted_stand_ins(template, &ranges, slots.len());
        let secret = slots
            .into_iter()
            .zip(redacted)
            .filter(|(_, redacted)| *redacted)
            .flat_map(|((_, names), _)| names)
            .map(String::into_boxed_str)
            .collect();
        Slots(secret)
    }

    /// Which of `count` parameters the rules take for secrets where they
    /// stand in `text`: each range is put in for the parameter it takes, a
    /// stand-in with letters and digits as a secret has (so that no rule
    /// takes it for prose or a placeholder), and a parameter whose stand-in
    /// was redacted (after `password=`, `--token `, in `https://%s:%s@host`)
    /// is a secret. The probe is scrubbed without percent-decoding: decoded,
    /// it could hold what called this again (a statement's parameters).
    pub(super) fn redacted_stand_ins(
        &self,
        text: &str,
        ranges: &[(std::ops::Range<usize>, usize)],
        count: usize,
    ) -> Vec<bool> {
        if ranges.is_empty() {
            return vec![false; count];
        }
        let mut probe = String::with_capacity(text.len() + 8 * ranges.len());
        let mut copied = 0;
        for (range, i) in ranges {
            probe.push_str(&text[copied..range.start]);
            let _ = write!(probe, "Zq{i}x7Kv");
            copied = range.end;
        }
        probe.push_str(&text[copied..]);
        let Some(scrubbed) = self.scrub_plain(&probe, &[], &mut Vec::new()) else {
            return vec![false; count];
        };
        // Each parameter put in, but for the stand-ins that are left (one
        // pass over the scrubbed probe).
        let mut redacted = vec![false; count];
        for (_, i) in ranges {
            if let Some(r) = redacted.get_mut(*i) {
                *r = true;
            }
        }
        for at in memchr::memmem::find_iter(scrubbed.as_bytes(), b"Zq") {
            let digits = scrubbed.as_bytes()[at + 2..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            let index = &scrubbed[at + 2..at + 2 + digits];
            if scrubbed[at + 2 + digits..].starts_with("x7Kv") {
                if let Some(r) = index.parse().ok().and_then(|i: usize| redacted.get_mut(i)) {
                    *r = false;
                }
            }
        }
        redacted
    }
}
