//! Scrubbing an event over its JSON text, without building a tree: the same
//! walk, rules and `_meta` as [`Scrubber::scrub_event`], with the untouched
//! parts of the text copied through as they came.
//!
//! Building a tree and writing it back out cost more than the scrubbing
//! itself (an allocation per string, key and node, then a serializer that
//! re-escapes every string). Here a string is only looked at: one without
//! escapes is scanned where it lies, and only a redacted one is written anew.
//! The cursor is hand-written because it is a few small loops over bytes
//! that serde_json has already validated; no JSON crate offers a walk that
//! keeps the spans of the values it passes.
//!
//! The few shapes this pass does not handle are handed back to the tree
//! pass with [`Fallback`]: an incoming `_meta` (whose paths a `hash` must
//! not hash twice), an object key with escapes, a number out of `f64`'s
//! range, a string the tree would refuse (a lone surrogate escape).

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::path::Seg;
use super::rules::{KeyMatcher, Sensitivity};
use super::template::{param_key, ParamKey, Slots, TEMPLATE_ATTRIBUTE};
use super::{
    is_named_value, is_typed_member, names_typed_secret, record_all, redact_all, redact_secret,
    write_meta, Method, Redaction, Scrubber, Walk, NAMERS, TYPE_KEYS,
};

/// Arrays of pairs nested deeper than this go to the tree pass.
const MAX_PAIRS_DEPTH: usize = 4;

/// The text pass declined the event; scrub it as a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fallback;

/// A scrubbed event: its new text, and what was redacted.
pub type Scrubbed = (Vec<u8>, Vec<Redaction>);

impl Scrubber {
    /// Scrubs a JSON event given as text that has passed
    /// [`crate::envelope::read_event`] (UTF-8, JSON, an object, bounded
    /// depth). `Ok(None)` when nothing was redacted (the text goes on as it
    /// came); else the new text and what was redacted, as
    /// [`Scrubber::scrub_event`] would give them (keys keep their order
    /// here, and `_meta` is added last).
    pub fn scrub_event_text(&self, json: &str) -> Result<Option<Scrubbed>, Fallback> {
        KEY_CLASSES.with(|cache| match cache.try_borrow_mut() {
            Ok(mut cache) => self.scrub_text_with(json, cache.of(self.id)),
            // Only if a scrub ever ran inside another on this thread.
            Err(_) => self.scrub_text_with(json, &mut Classes::default()),
        })
    }

    /// [`Self::scrub_event_text`], with the key classes found so far.
    fn scrub_text_with(
        &self,
        json: &str,
        classes: &mut Classes,
    ) -> Result<Option<Scrubbed>, Fallback> {
        let mut pass = Pass {
            walk: Walk {
                scrubber: self,
                done: Default::default(),
                found: Vec::new(),
            },
            text: json,
            bytes: json.as_bytes(),
            pos: 0,
            out: Vec::new(),
            copied: 0,
            pairs_depth: 0,
            classes,
            slots: None,
        };
        pass.ws();
        if pass.peek()? != b'{' {
            return Err(Fallback);
        }
        let mut path = Vec::new();
        pass.object(&mut path)?;
        let close = pass.pos - 1;
        pass.ws();
        if pass.pos != json.len() {
            return Err(Fallback);
        }
        let found = pass.walk.into_found();
        if found.is_empty() {
            return Ok(None);
        }
        let mut out = pass.out;
        out.extend_from_slice(&json.as_bytes()[pass.copied..close]);
        out.extend_from_slice(b",\"_meta\":");
        if !write_meta(&mut out, &found) {
            let mut meta = Value::Object(Map::new());
            record_all(&mut meta, &found);
            serde_json::to_writer(&mut out, &meta).expect("a JSON tree always serializes");
        }
        out.extend_from_slice(&json.as_bytes()[close..]);
        let redactions = found.into_iter().map(|(_, r)| r).collect();
        Ok(Some((out, redactions)))
    }
}

/// A cursor over the event's text and the output being written.
struct Pass<'s, 'j> {
    /// The walk's state: the scrubber and what it redacted.
    walk: Walk<'s>,
    /// The event.
    text: &'j str,
    /// The event, as bytes.
    bytes: &'j [u8],
    /// Where the cursor is.
    pos: usize,
    /// The output so far: the text up to `copied`, with replacements.
    out: Vec<u8>,
    /// How much of the text is in `out`.
    copied: usize,
    /// How many arrays of pairs enclose the cursor.
    pairs_depth: usize,
    /// What each key seen so far says, on this thread, by this scrubber.
    classes: &'s mut Classes,
    /// The secret slots of the last template read, and where the object
    /// that holds it opens (see [`Pass::parameter`]).
    slots: Option<(usize, Slots)>,
}

/// What keys say, by key, as one scrubber classified them.
pub(super) type Classes = rustc_hash::FxHashMap<Box<str>, KeyClass>;

/// Longer keys are classified each time they come (they are rare, and an
/// attacker's long keys would otherwise take the cache's memory).
pub(super) const MAX_CACHED_KEY: usize = 64;

/// Keys kept per scrubber: a Python-SDK event has some 60 distinct keys,
/// and one application's events a few hundred (frame variables). A full
/// list starts over, so that keys seen once (random ones included) cannot
/// crowd out those that come back.
pub(super) const CACHED_KEYS: usize = 512;

/// Scrubbers a thread keeps classes for: the global one, and a few
/// projects' own `[scrub]`; the least recently used goes first.
pub(super) const CACHED_SCRUBBERS: usize = 4;

thread_local! {
    /// This thread's key classes, across events.
    pub(super) static KEY_CLASSES: std::cell::RefCell<KeyClasses> = Default::default();
}

/// What each key says, kept across the events a thread scrubs: events
/// repeat their keys (every frame has a `function`, every event of an SDK
/// the same names), and classifying a key (an Aho-Corasick search, the safe
/// keys compared) took some 500 instructions, 5% of an event's instructions, when
/// it was done once per event. A class depends on the scrubber's settings
/// alone, so the classes are kept by [`Scrubber::id`]: a reload's new
/// scrubbers start afresh. Bounded: at most [`CACHED_KEYS`] keys of up to
/// [`MAX_CACHED_KEY`] bytes for each of [`CACHED_SCRUBBERS`] scrubbers, per
/// thread.
#[derive(Default)]
pub(super) struct KeyClasses {
    /// By scrubber, the most recently used first.
    pub(super) lists: Vec<(u64, Classes)>,
}

impl KeyClasses {
    /// The classes of scrubber `id`, which becomes the most recently used.
    pub(super) fn of(&mut self, id: u64) -> &mut Classes {
        match self.lists.iter().position(|(owner, _)| *owner == id) {
            Some(at) => self.lists[..=at].rotate_right(1),
            None => {
                self.lists.truncate(CACHED_SCRUBBERS - 1);
                self.lists.insert(0, (id, Classes::default()));
            }
        }
        &mut self.lists[0].1
    }
}

/// What a key says about the values under it.
#[derive(Debug, Clone, Copy)]
pub(super) struct KeyClass {
    /// A safe path ends in this key (the whole path still decides).
    safe_key: bool,
    /// Values under it are client IPs.
    ip: bool,
    /// Whether values under it are secrets (or counts, as numbers).
    sensitivity: Sensitivity,
    /// It names a log message's parameters (see [`param_key`]).
    param: bool,
    /// Its text names a sibling's value (`name`: see [`NAMERS`]; and a
    /// JSON Web Key's `kty`).
    namer: bool,
    /// Its value is named by a sibling (`value`, a JSON Web Key's private
    /// members: see [`is_named_value`]).
    named_value: bool,
    /// It is a typed secret's member (a JSON Web Key's private member, a
    /// Kubernetes Secret's `data`), which only the type names.
    typed_member: bool,
}

impl KeyClass {
    /// The class of a secret at the same place: a parameter in a secret slot.
    fn secret(self) -> KeyClass {
        KeyClass {
            ip: false,
            sensitivity: Sensitivity::Secret,
            ..self
        }
    }

    pub(super) fn of(scrubber: &Scrubber, key: &str) -> KeyClass {
        KeyClass {
            safe_key: scrubber.safe_by_key.iter().any(|(k, _)| k == key)
                || super::is_release_key(key),
            ip: KeyMatcher::is_ip_field(key),
            sensitivity: scrubber.keys.classify(key),
            param: param_key(key).is_some(),
            namer: NAMERS.contains(&key) || TYPE_KEYS.contains(&key),
            named_value: is_named_value(key),
            typed_member: is_typed_member(key),
        }
    }
}

impl<'j> Pass<'_, 'j> {
    /// What `key` says, classified once per thread while it is cached.
    #[inline(always)]
    fn class_of(&mut self, key: &str) -> KeyClass {
        match self.classes.get(key) {
            Some(class) => *class,
            None => self.classify(key),
        }
    }

    /// [`Self::class_of`] for a key not cached: classified, and cached.
    #[inline(never)]
    fn classify(&mut self, key: &str) -> KeyClass {
        let class = KeyClass::of(self.walk.scrubber, key);
        if key.len() <= MAX_CACHED_KEY {
            if self.classes.len() >= CACHED_KEYS {
                self.classes.clear();
            }
            self.classes.insert(key.into(), class);
        }
        class
    }

    /// An object member's key and the `:` after it, up to its value. A key
    /// with escapes falls back: a key is part of the path, which borrows
    /// from the text.
    #[inline]
    fn member_key(&mut self) -> Result<&'j str, Fallback> {
        self.ws();
        let (_, _, key) = self.string()?;
        let Cow::Borrowed(key) = key else {
            return Err(Fallback);
        };
        self.ws();
        self.expect(b':')?;
        self.ws();
        Ok(key)
    }

    /// The string the cursor just passed, from its quote at `start`, decoded.
    fn string_before(&self, start: usize) -> Result<Cow<'j, str>, Fallback> {
        let raw: &'j str = &self.text[start..self.pos];
        Ok(match raw.contains('\\') {
            true => Cow::Owned(serde_json::from_str(raw).map_err(|_| Fallback)?),
            false => Cow::Borrowed(&raw[1..raw.len() - 1]),
        })
    }

    /// After a member of an object or a list: passes the `,` before the
    /// next one (`false`), or the `close` that ends them (`true`).
    #[inline]
    fn after_member(&mut self, close: u8) -> Result<bool, Fallback> {
        self.ws();
        match self.peek()? {
            b',' => {
                self.pos += 1;
                Ok(false)
            }
            c if c == close => {
                self.pos += 1;
                Ok(true)
            }
            _ => Err(Fallback),
        }
    }

    fn peek(&self) -> Result<u8, Fallback> {
        self.bytes.get(self.pos).copied().ok_or(Fallback)
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), Fallback> {
        if self.peek()? != byte {
            return Err(Fallback);
        }
        self.pos += 1;
        Ok(())
    }

    /// Passes `byte` and the whitespace after it, if `byte` is next.
    fn eat(&mut self, byte: u8) -> Result<bool, Fallback> {
        if self.peek()? != byte {
            return Ok(false);
        }
        self.pos += 1;
        self.ws();
        Ok(true)
    }

    /// Writes `with` in place of the text from `start` to `end`.
    fn replace(&mut self, start: usize, end: usize, with: &[u8]) {
        self.copy_up_to(start);
        self.out.extend_from_slice(with);
        self.copied = end;
    }

    /// Writes `with` as a JSON string in place of the text from `start` to
    /// `end`: quoted and escaped straight into the output (a buffer of its
    /// own cost an allocation per redaction).
    fn replace_quoted(&mut self, start: usize, end: usize, with: &str) {
        self.copy_up_to(start);
        serde_json::to_writer(&mut self.out, with).expect("a string always serializes");
        self.copied = end;
    }

    /// Records a value under a sensitive key, redacted whole.
    fn record_secret(&mut self, path: &[Seg<'_>]) {
        let scrubber = self.walk.scrubber;
        self.walk.record(
            path,
            scrubber.password_rule.clone(),
            scrubber.password_method,
        );
    }

    /// Copies the text not yet copied, up to `start`, to the output.
    fn copy_up_to(&mut self, start: usize) {
        if self.out.is_empty() {
            // Room for `_meta` too (some 70 bytes a redaction), so that
            // it does not copy the whole event again to grow.
            self.out
                .reserve(self.bytes.len() + self.bytes.len() / 8 + 1024);
        }
        self.out.extend_from_slice(&self.bytes[self.copied..start]);
    }

    /// Scrubs the string whose contents span `start..end` (its value
    /// `text`), writing it anew, quoted, where it held a secret.
    /// Scrubs a string in place; returns whether it changed.
    fn scrub_string(&mut self, start: usize, end: usize, text: &str, path: &[Seg<'_>]) -> bool {
        match self.walk.string(text, path) {
            Some(new) => {
                self.replace_quoted(start - 1, end + 1, &new);
                true
            }
            None => false,
        }
    }

    /// Passes a string; returns the span of its contents (quotes excluded)
    /// and its value: borrowed when it has no escapes. Escapes are decoded
    /// even in strings only passed over: serde_json's skipping lets a lone
    /// surrogate through, which a tree refuses.
    fn string(&mut self) -> Result<(usize, usize, Cow<'j, str>), Fallback> {
        self.expect(b'"')?;
        let start = self.pos;
        let mut escaped = false;
        loop {
            let rest = self.bytes.get(self.pos..).ok_or(Fallback)?;
            let at = memchr::memchr2(b'"', b'\\', rest).ok_or(Fallback)?;
            self.pos += at;
            if self.bytes[self.pos] == b'"' {
                self.pos += 1;
                break;
            }
            escaped = true;
            self.pos += 2;
        }
        let end = self.pos - 1;
        let text: &'j str = self.text;
        if !escaped {
            return Ok((start, end, Cow::Borrowed(&text[start..end])));
        }
        let value =
            serde_json::from_str::<String>(&text[start - 1..end + 1]).map_err(|_| Fallback)?;
        Ok((start, end, Cow::Owned(value)))
    }

    /// Passes a number; one the tree would refuse (out of `f64`'s range, as
    /// serde_json reads it: its rounding differs from Rust's near the limit)
    /// falls back.
    fn number(&mut self) -> Result<(), Fallback> {
        let start = self.pos;
        while let Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
        let token = &self.text[start..self.pos];
        if token.is_empty() {
            return Err(Fallback);
        }
        if (token.len() > 18 || token.contains(['.', 'e', 'E']))
            && serde_json::from_str::<serde_json::Number>(token).is_err()
        {
            return Err(Fallback);
        }
        Ok(())
    }

    fn literal(&mut self) -> Result<(), Fallback> {
        let rest = &self.bytes[self.pos..];
        let len = if rest.starts_with(b"true") || rest.starts_with(b"null") {
            4
        } else if rest.starts_with(b"false") {
            5
        } else {
            return Err(Fallback);
        };
        self.pos += len;
        Ok(())
    }

    /// Passes any value without scanning its strings (escapes are still
    /// decoded, to refuse what the tree would).
    fn skip_value(&mut self) -> Result<(), Fallback> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'-' | b'0'..=b'9' => {
                            self.number()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.pos += 1;
                                return Ok(());
                            }
                        }
                        _ => {}
                    }
                    self.pos += 1;
                }
            }
            b'-' | b'0'..=b'9' => self.number(),
            _ => self.literal(),
        }
    }

    /// Walks a value whose path was already checked against the safe paths.
    fn value(&mut self, path: &mut Vec<Seg<'j>>) -> Result<(), Fallback> {
        match self.peek()? {
            b'{' => self.object(path),
            b'[' => self.array(path, None),
            b'"' => {
                let (start, end, text) = self.string()?;
                self.scrub_string(start, end, &text, path);
                Ok(())
            }
            b'-' | b'0'..=b'9' => {
                let start = self.pos;
                self.number()?;
                // As the tree reads it: a whole number that fits a `u64`
                // (one too short for a card is not parsed).
                let whole = (self.pos - start >= 13)
                    .then(|| self.text[start..self.pos].parse::<u64>().ok())
                    .flatten();
                if let Some(new) = whole.and_then(|n| self.walk.number(n, path)) {
                    self.replace_quoted(start, self.pos, &new);
                }
                Ok(())
            }
            _ => self.literal(),
        }
    }

    fn object(&mut self, path: &mut Vec<Seg<'j>>) -> Result<(), Fallback> {
        let open = self.pos;
        self.expect(b'{')?;
        self.ws();
        if self.peek()? == b'}' {
            self.pos += 1;
            return Ok(());
        }
        // `{"name": "password", "value": "..."}`: the name is the value's
        // key (and a JSON Web Key's `kty` makes its private members secrets).
        // (Its `typed_member` says which kind of namer named it.)
        let mut named: Option<KeyClass> = None;
        let mut value_seen = false;
        loop {
            let key = self.member_key()?;
            if path.is_empty() && key == "_meta" {
                return Err(Fallback);
            }
            path.push(Seg::Key(key));
            let class = self.class_of(key);
            let start = self.pos;
            match named {
                Some(name) if class.named_value && class.typed_member == name.typed_member => self
                    .entry(
                        KeyClass {
                            safe_key: class.safe_key,
                            ..name
                        },
                        path,
                    )?,
                _ if class.param => self.parameter(key, class, open, path)?,
                _ => self.entry(class, path)?,
            }
            path.pop();
            if class.named_value {
                value_seen = true;
            } else if class.namer && self.bytes[start] == b'"' {
                let name = self.string_before(start)?;
                let scrubber = self.walk.scrubber;
                let names = match key {
                    // A JSON Web Key's type: its private members are secrets.
                    "kty" | "kind" => names_typed_secret(key, &name).then_some(KeyClass {
                        typed_member: true,
                        ..class.secret()
                    }),
                    _ => (scrubber.keys.classify(&name) != Sensitivity::None).then(|| KeyClass {
                        typed_member: false,
                        ..KeyClass::of(scrubber, &name)
                    }),
                };
                if let Some(names) = names {
                    // A value before its name, or two names: the tree pass
                    // reads them all first.
                    if value_seen || named.is_some() {
                        return Err(Fallback);
                    }
                    named = Some(names);
                }
            }
            if self.after_member(b'}')? {
                return Ok(());
            }
        }
    }

    /// A list. With `slots`, it holds a log message's parameters, and an
    /// item in a secret slot is redacted whole.
    fn array(&mut self, path: &mut Vec<Seg<'j>>, slots: Option<&Slots>) -> Result<(), Fallback> {
        self.expect(b'[')?;
        self.ws();
        if self.peek()? == b']' {
            self.pos += 1;
            return Ok(());
        }
        let mut index = 0;
        // The option named by the argument before, when it is a sensitive
        // flag alone: `["--password", "hunter2"]` (argv), `["token:", "abc"]`
        // (a console line's arguments).
        let mut flag: Option<KeyClass> = None;
        loop {
            self.ws();
            path.push(Seg::Index(index));
            let start = self.pos;
            let option = flag.filter(|_| !self.bytes[start..].starts_with(b"\"-"));
            if slots.is_some_and(|slots| slots.has_index(index)) {
                let class = KeyClass::of(self.walk.scrubber, "").secret();
                self.entry(class, path)?;
            } else if self.peek()? == b'[' && self.is_pair()? {
                // The look ahead scans the whole pair, so pairs inside pairs
                // inside pairs would be scanned once per level. Real events
                // nest them once or twice; deeper goes to the tree, which is linear.
                if self.pairs_depth == MAX_PAIRS_DEPTH {
                    return Err(Fallback);
                }
                self.pairs_depth += 1;
                // `[["token", "abc"], ...]`: query strings, headers and cookies as pairs.
                self.expect(b'[')?;
                self.ws();
                let (start, end, key) = self.string()?;
                // The first of a pair is text too (a list of tuples).
                path.push(Seg::Index(0));
                let changed = !self.walk.skip(path) && self.scrub_string(start, end, &key, path);
                path.pop();
                self.ws();
                self.expect(b',')?;
                self.ws();
                // Named by its key, as in the tree: only a key that stays
                // as it came names it (an escaped key, rare in a pair, goes
                // to the tree, which reads it decoded).
                path.push(match key {
                    _ if changed => Seg::Index(1),
                    Cow::Borrowed(named) => Seg::Pair(named),
                    Cow::Owned(_) => return Err(Fallback),
                });
                let class = KeyClass::of(self.walk.scrubber, &key);
                self.entry(class, path)?;
                path.pop();
                self.ws();
                self.expect(b']')?;
                self.pairs_depth -= 1;
            } else if self.walk.skip(path) {
                self.skip_value()?;
            } else if let Some(class) = option {
                self.entry(class, path)?;
            } else {
                self.value(path)?;
            }
            flag = self.flag_in(start)?;
            path.pop();
            index += 1;
            if self.after_member(b']')? {
                return Ok(());
            }
        }
    }

    /// What the value from `start` to the cursor says as an argument: the
    /// class of the option it names, when it is a string that is a
    /// sensitive flag alone (`"--password"`, `"token:"`).
    #[inline(always)]
    fn flag_in(&self, start: usize) -> Result<Option<KeyClass>, Fallback> {
        if self.bytes[start] != b'"' {
            return Ok(None);
        }
        // A flag (`"--password"`), or a key with its separator last
        // (`"token:"`); an escaped string is read first (`"token\u003a"`).
        let inner = &self.bytes[start + 1..self.pos - 1];
        // (An escape that ends the string, `\u003a` or a `\n` after the
        // `:`, is in its last bytes.)
        let tail = &inner[inner.len().saturating_sub(12)..];
        if !tail.contains(&b'\\')
            && inner.first() != Some(&b'-')
            && !matches!(inner.trim_ascii_end().last(), Some(b':' | b'='))
        {
            return Ok(None);
        }
        let arg = self.string_before(start)?;
        let scrubber = self.walk.scrubber;
        Ok(scrubber
            .sensitive_flag(Some(&arg))
            .map(|name| KeyClass::of(scrubber, name)))
    }

    /// The value of a key that names a log message's parameters, in the
    /// object that opens at `open`: judged by its slot in the template
    /// beside it, whose secret slots are read at the first such key (and
    /// again if a nested object's took their place). Apart from
    /// [`Self::object`], which every object of every event runs.
    #[inline(never)]
    fn parameter(
        &mut self,
        key: &str,
        class: KeyClass,
        open: usize,
        path: &mut Vec<Seg<'j>>,
    ) -> Result<(), Fallback> {
        let param = param_key(key).expect("a key its class says names parameters");
        let slots = match self.slots.take() {
            Some((at, slots)) if at == open => slots,
            _ => self.slots_ahead(open)?,
        };
        let result = match param {
            ParamKey::All if !slots.is_empty() => self.params(class, &slots, path),
            ParamKey::One(slot) if slots.has(slot) => self.entry(class.secret(), path),
            _ => self.entry(class, path),
        };
        self.slots = Some((open, slots));
        result
    }

    /// A log message's parameters (`params`: a list by position, or an
    /// object by name, or one value) beside a template whose `slots` hold
    /// secrets; as the tree pass walks them.
    fn params(
        &mut self,
        class: KeyClass,
        slots: &Slots,
        path: &mut Vec<Seg<'j>>,
    ) -> Result<(), Fallback> {
        if self.walk.scrubber.may_be_safe(class.safe_key) && self.walk.skip(path) {
            return self.skip_value();
        }
        match self.peek()? {
            b'[' => return self.array(path, Some(slots)),
            // One mapping, which a printf template's first slot formats whole.
            _ if slots.has_index(0) => return self.entry(class.secret(), path),
            b'{' => {}
            _ => return self.value(path),
        }
        self.pos += 1;
        self.ws();
        if self.peek()? == b'}' {
            self.pos += 1;
            return Ok(());
        }
        loop {
            let key = self.member_key()?;
            path.push(Seg::Key(key));
            let class = self.class_of(key);
            match slots.has(key) {
                true => self.entry(class.secret(), path)?,
                false => self.entry(class, path)?,
            }
            path.pop();
            if self.after_member(b'}')? {
                return Ok(());
            }
        }
    }

    /// The secret slots of the template in the object that opens at
    /// `open` (a look ahead; the cursor stays): see [`template_of`].
    fn slots_ahead(&mut self, open: usize) -> Result<Slots, Fallback> {
        let saved = self.pos;
        self.pos = open;
        let template = self.template_ahead();
        self.pos = saved;
        Ok(template?
            .map(|t| self.walk.scrubber.secret_slots(&t))
            .unwrap_or_default())
    }

    /// [`template_of`] over the text of the object at the cursor.
    fn template_ahead(&mut self) -> Result<Option<Cow<'j, str>>, Fallback> {
        self.expect(b'{')?;
        let (mut attribute, mut message) = (None, None);
        let (mut attribute_seen, mut message_seen) = (false, false);
        loop {
            let key = self.member_key()?;
            // A template given twice: the tree keeps the last, whatever
            // it is, and decides.
            let again = match key {
                TEMPLATE_ATTRIBUTE => std::mem::replace(&mut attribute_seen, true),
                "message" => std::mem::replace(&mut message_seen, true),
                _ => false,
            };
            if again {
                return Err(Fallback);
            }
            match (key, self.peek()?) {
                (TEMPLATE_ATTRIBUTE, b'"') => attribute = Some(self.string()?.2),
                (TEMPLATE_ATTRIBUTE, b'{') => attribute = self.typed_value_ahead()?,
                ("message", b'"') => message = Some(self.string()?.2),
                _ => self.skip_value()?,
            }
            if self.after_member(b'}')? {
                break;
            }
        }
        Ok(attribute.or(message))
    }

    /// The string `value` of the object at the cursor, if it has one.
    fn typed_value_ahead(&mut self) -> Result<Option<Cow<'j, str>>, Fallback> {
        self.expect(b'{')?;
        let mut value = None;
        let mut value_seen = false;
        loop {
            self.ws();
            if self.peek()? == b'}' {
                self.pos += 1;
                return Ok(value);
            }
            let (_, _, key) = self.string()?;
            self.ws();
            self.expect(b':')?;
            self.ws();
            match (&*key, self.peek()?) {
                ("value", _) if value_seen => return Err(Fallback),
                ("value", b'"') => value = Some(self.string()?.2),
                _ => self.skip_value()?,
            }
            value_seen |= key == "value";
            if self.after_member(b'}')? {
                return Ok(value);
            }
        }
    }

    /// Whether the array at the cursor is a `[string, value]` pair (a look
    /// ahead; the cursor stays).
    fn is_pair(&mut self) -> Result<bool, Fallback> {
        let saved = self.pos;
        let pair = self.pair_ahead();
        self.pos = saved;
        pair
    }

    fn pair_ahead(&mut self) -> Result<bool, Fallback> {
        if !self.eat(b'[')? || self.peek()? != b'"' {
            return Ok(false);
        }
        self.string()?;
        self.ws();
        if !self.eat(b',')? {
            return Ok(false);
        }
        self.skip_value()?;
        self.ws();
        self.eat(b']')
    }

    /// Whether the object at the cursor is a typed attribute (`{"value":
    /// ..., "type": "string"}`: no other keys than `value`, `type` and
    /// `unit`, and a `value`); a look ahead, the cursor stays.
    fn is_typed(&mut self) -> Result<bool, Fallback> {
        let saved = self.pos;
        let typed = self.typed_ahead();
        self.pos = saved;
        typed
    }

    fn typed_ahead(&mut self) -> Result<bool, Fallback> {
        self.expect(b'{')?;
        let mut value = false;
        loop {
            self.ws();
            if self.peek()? != b'"' {
                return Ok(false);
            }
            let (_, _, key) = self.string()?;
            match &*key {
                "value" => value = true,
                "type" | "unit" => {}
                _ => return Ok(false),
            }
            self.ws();
            self.expect(b':')?;
            self.ws();
            self.skip_value()?;
            if self.after_member(b'}')? {
                return Ok(value);
            }
        }
    }

    /// A typed attribute under a key of `class`: its value is judged by
    /// that key; `type` and `unit` stay.
    fn typed(&mut self, class: KeyClass, path: &mut Vec<Seg<'j>>) -> Result<(), Fallback> {
        self.expect(b'{')?;
        loop {
            self.ws();
            let (_, _, key) = self.string()?;
            self.ws();
            self.expect(b':')?;
            self.ws();
            if key == "value" {
                path.push(Seg::Key("value"));
                let safe_key = KeyClass::of(self.walk.scrubber, "value").safe_key;
                self.entry(KeyClass { safe_key, ..class }, path)?;
                path.pop();
            } else {
                self.skip_value()?;
            }
            if self.after_member(b'}')? {
                return Ok(());
            }
        }
    }

    /// A value under a key: the key decides whether all of it is a secret.
    fn entry(&mut self, class: KeyClass, path: &mut Vec<Seg<'j>>) -> Result<(), Fallback> {
        if self.walk.scrubber.may_be_safe(class.safe_key) && self.walk.skip(path) {
            return self.skip_value();
        }
        let scrubber = self.walk.scrubber;
        let start = self.pos;
        if let (Some(ip_rule), true) = (&scrubber.ip_rule, class.ip) {
            let null = self.bytes[start..].starts_with(b"null");
            self.skip_value()?;
            if !null {
                self.replace(start, self.pos, b"null");
                self.walk.record(path, ip_rule.clone(), Method::Remove);
            }
            return Ok(());
        }
        let secret = match class.sensitivity {
            Sensitivity::Secret => true,
            Sensitivity::Counts => !matches!(self.peek()?, b'-' | b'0'..=b'9'),
            Sensitivity::None => false,
        };
        if secret {
            if self.peek()? == b'{' && self.is_typed()? {
                return self.typed(class, path);
            }
            // The tree pass keeps a value an incoming `_meta` says was hashed;
            // events with a `_meta` go to the tree pass, so none is kept here.
            if self.peek()? == b'"' && scrubber.password_method != Method::Remove {
                // A string, the common case: redacted as `redact_all` would
                // redact it, without reading it into a tree and writing it out.
                let (_, _, text) = self.string()?;
                let hash_key = scrubber.hash_key.as_deref();
                if let Some(new) = redact_secret(&text, scrubber.password_method, hash_key) {
                    self.replace_quoted(start, self.pos, &new);
                    self.record_secret(path);
                }
                return Ok(());
            }
            self.skip_value()?;
            let mut value: Value =
                serde_json::from_str(&self.text[start..self.pos]).map_err(|_| Fallback)?;
            if redact_all(
                &mut value,
                scrubber.password_method,
                scrubber.hash_key.as_deref(),
            ) {
                let new = serde_json::to_vec(&value).expect("a JSON tree always serializes");
                self.replace(start, self.pos, &new);
                self.record_secret(path);
            }
            return Ok(());
        }
        self.value(path)
    }
}
