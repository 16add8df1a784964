//! PII scrubbing: event JSON and compiled rules in, scrubbed JSON and the
//! list of what was redacted (rule and path, never the value) out.
//!
//! One pass over the event: over its JSON text for events (`scrub/text.rs`: no
//! tree is built, untouched text is copied as it came), or over a JSON tree
//! for the shapes the text pass leaves to it; both walks apply the same
//! rules in the same way. At each object key, the key-based rules
//! (`password` and `sensitive_fields`; client IP fields) decide whether the
//! whole value is a secret. Each string is checked once against a `RegexSet`
//! of every pattern rule; only strings that match anything are scanned again
//! to find and validate the matches, and only those allocate. Safe fields
//! are skipped with everything below them. Redactions are recorded in the
//! event's `_meta`, shaped as Sentry's. What a redaction wrote (`[Filtered]`,
//! `[rule]`, a mask, a value this relay already hashed under a sensitive key)
//! is left alone by a second pass, so scrubbing twice usually gives what
//! scrubbing once gave. Not always: a replacement can complete another
//! rule's pattern (`/home/alice@x.com/` becomes `/home/[email]/`, which the
//! user-path rule then takes), and a hash inside text is hashed again. A
//! second pass only ever redacts further. An incoming `_meta` never shields a
//! value from scrubbing.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};
use serde_json::{Map, Value};

pub use strings::NotJson;

pub mod method;
pub mod path;
pub mod rules;
mod sql;
mod strings;
pub mod template;
mod text;

pub use method::Method;
use path::{Seg, Selector};
use rules::{value_after, KeyMatcher, Sensitivity, Validator};
use template::{ParamKey, Slots};
pub use text::Fallback;

/// Bytes that are UTF-16 text: the text, and whether it is big-endian.
/// Marked by a byte-order mark (`FF FE`, little-endian; `FE FF`,
/// big-endian), kept at the text's start; or unmarked, as some Windows
/// programs and exports write it, when [`unmarked_utf16`] takes it. `None`
/// for anything else, including UTF-16 that does not decode (an odd
/// length, a lone surrogate). (UTF-8 never starts with those bytes.)
pub fn utf16_text(bytes: &[u8]) -> Option<(String, bool)> {
    let big_endian = match bytes.get(..2)? {
        [0xFF, 0xFE] => false,
        [0xFE, 0xFF] => true,
        _ => return unmarked_utf16(bytes),
    };
    Some((decode_utf16(bytes, big_endian)?, big_endian))
}

/// UTF-16 without a byte-order mark. Valid UTF-8 too, as often as not (a
/// NUL is), so that its secrets, every other byte a NUL, would pass every
/// rule. Taken when, in one byte order, its first [`UNMARKED_SAMPLE`]
/// units are mostly ASCII ([`ascii_order`]) or all characters text is
/// written in ([`script_order`]: text mostly beyond ASCII, Cyrillic or
/// Chinese, say), and the whole decodes with no control character but
/// those text has (tab, line ends, form feed, escape). The sample must hold
/// a NUL: the spaces, digits and line ends of text have one in UTF-16, so
/// unmarked text with no ASCII at all is not recognised.
fn unmarked_utf16(bytes: &[u8]) -> Option<(String, bool)> {
    let sample = &bytes[..bytes.len().min(2 * UNMARKED_SAMPLE)];
    if bytes.len() < 4 || !bytes.len().is_multiple_of(2) || memchr::memchr(0, sample).is_none() {
        return None;
    }
    let big_endian = ascii_order(sample).or_else(|| script_order(sample))?;
    let text = decode_utf16(bytes, big_endian)?;
    (!text.contains(is_control)).then_some((text, big_endian))
}

/// The byte order in which at least half of the sample's units are
/// printable ASCII (in other bytes, binary ones among them, a unit has a
/// zero high byte about once in 256); `None` if neither or both.
fn ascii_order(sample: &[u8]) -> Option<bool> {
    let ascii =
        |low: u8, high: u8| high == 0 && (low.is_ascii_graphic() || b" \t\r\n".contains(&low));
    let (mut little, mut big) = (0, 0);
    for unit in sample.chunks_exact(2) {
        little += usize::from(ascii(unit[0], unit[1]));
        big += usize::from(ascii(unit[1], unit[0]));
    }
    let units = sample.len() / 2;
    match (2 * little >= units, 2 * big >= units) {
        (true, false) => Some(false),
        (false, true) => Some(true),
        _ => None,
    }
}

/// Text mostly beyond ASCII without its mark (a Windows program's log in
/// Russian or Chinese): the byte order in which every unit of the sample
/// is a character text is written in ([`is_text_unit`]), and where both
/// orders are, the one with more ASCII units (the text's spaces, digits
/// and line ends; read in the wrong order they are `U+2000`, `U+3100`,
/// `U+0A00`). Binary data read as UTF-16 has a control, private-use or
/// unassigned unit within a few dozen (five units in six pass at random:
/// at [`MIN_SCRIPT_UNITS`], about one binary sample in ten billion passes
/// in one order; one taken for text is still only rewritten if a rule
/// matches what it decodes to). `None` if neither order, or both alike.
fn script_order(sample: &[u8]) -> Option<bool> {
    if sample.len() < 2 * MIN_SCRIPT_UNITS {
        return None;
    }
    let ascii = |big_endian: bool| -> Option<usize> {
        let mut ascii = 0;
        for pair in sample.chunks_exact(2) {
            let unit = match big_endian {
                true => u16::from_be_bytes([pair[0], pair[1]]),
                false => u16::from_le_bytes([pair[0], pair[1]]),
            };
            if !is_text_unit(unit) {
                return None;
            }
            ascii += usize::from(unit < 0x80);
        }
        Some(ascii)
    };
    match (ascii(false), ascii(true)) {
        (Some(little), Some(big)) if little != big => Some(big > little),
        (Some(_), None) => Some(false),
        (None, Some(_)) => Some(true),
        _ => None,
    }
}

/// Whether a UTF-16 unit is a character text is written in: a letter or
/// digit of any script, a space, ASCII and Latin-1 punctuation, general
/// punctuation, symbols, arrows, box drawing (U+2010 to U+2BFF), CJK
/// punctuation, full-width forms, the escape of a log's colours; or half
/// of a surrogate pair (an emoji: the whole decode checks the pairs).
fn is_text_unit(unit: u16) -> bool {
    if (0xD800..0xE000).contains(&unit) {
        return true;
    }
    char::from_u32(u32::from(unit)).is_some_and(|c| {
        c.is_alphanumeric()
            || c.is_whitespace()
            || matches!(c, '\x1b' | '!'..='~' | '\u{a1}'..='\u{bf}' | '\u{d7}' | '\u{f7}'
                // Combining marks (decomposed accents), and the blocks of
                // scripts whose punctuation and signs are not letters:
                // Arabic (its comma), the Indic scripts (danda, virama), Thai.
                | '\u{300}'..='\u{36f}' | '\u{600}'..='\u{6ff}' | '\u{900}'..='\u{dff}'
                | '\u{e00}'..='\u{e7f}'
                // Zero-width spaces and joiners, marks of direction.
                | '\u{200b}'..='\u{200f}'
                | '\u{2010}'..='\u{2bff}' | '\u{3000}'..='\u{303f}'
                // Variation selectors (an emoji's), a mark in the text, the
                // replacement character.
                | '\u{fe00}'..='\u{fe0f}' | '\u{feff}' | '\u{fffd}'
                | '\u{ff00}'..='\u{ffef}')
    })
}

/// Units [`script_order`] needs to judge: fewer could be binary by chance.
const MIN_SCRIPT_UNITS: usize = 128;

/// Whether bytes are entries separated by NULs, as Linux writes a
/// process's environment and command line (`/proc/PID/environ`:
/// `KEY=value\0KEY=value\0`): they hold a NUL, none first and none beside
/// another (binary data, a tar archive's padding, has runs of them), and
/// perhaps one last. What the entries are (text or not) is for the caller.
pub fn is_nul_separated(bytes: &[u8]) -> bool {
    bytes.first().is_some_and(|&b| b != 0)
        && memchr::memchr(0, bytes).is_some()
        && memchr::memmem::find(bytes, b"\0\0").is_none()
}

/// A control character that text does not hold: any under U+0020 but tab,
/// line ends, form feed and escape (colours in logs). Binary data has some
/// early on (a minidump, an image, a compressed file).
pub fn is_control(c: char) -> bool {
    c < ' ' && !matches!(c, '\t' | '\n' | '\r' | '\x0c' | '\x1b')
}

/// Units of unmarked UTF-16 that [`unmarked_utf16`] looks at first.
const UNMARKED_SAMPLE: usize = 256;

/// `bytes` decoded as UTF-16 in that byte order; `None` if they do not
/// decode (an odd length, a lone surrogate).
fn decode_utf16(bytes: &[u8], big_endian: bool) -> Option<String> {
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    let units = bytes.chunks_exact(2).map(|pair| match big_endian {
        true => u16::from_be_bytes([pair[0], pair[1]]),
        false => u16::from_le_bytes([pair[0], pair[1]]),
    });
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .ok()
}

/// `text` in UTF-16, big-endian or little-endian: what [`utf16_text`] reads.
pub fn utf16_bytes(text: &str, big_endian: bool) -> Vec<u8> {
    let units = text.encode_utf16();
    match big_endian {
        true => units.flat_map(u16::to_be_bytes).collect(),
        false => units.flat_map(u16::to_le_bytes).collect(),
    }
}

/// Bytes that are text in a single-byte encoding (Latin-1, or Windows-1252
/// as Windows programs write Western European text): not UTF-8, and no
/// run of them UTF-8 beyond ASCII (which a stray byte in UTF-8 text would
/// leave). Read as Latin-1, which decodes every byte to one character and
/// encodes it back ([`latin1_bytes`]): a value such as `schl\xfcssel` is
/// one value to the rules, where UTF-8 runs would cut it at the `\xfc`.
/// (Windows-1252's `\x80`-`\x9f`, such as its curly quotes, read as
/// Latin-1's control characters.)
pub fn latin1_text(bytes: &[u8]) -> Option<String> {
    is_single_byte(bytes).then(|| bytes.iter().map(|&b| char::from(b)).collect())
}

/// Whether [`latin1_text`] reads `bytes`: not UTF-8, and no run of them
/// UTF-8 beyond ASCII.
pub fn is_single_byte(bytes: &[u8]) -> bool {
    let mut not_utf8 = false;
    for chunk in bytes.utf8_chunks() {
        if !chunk.valid().is_ascii() {
            return false;
        }
        not_utf8 |= !chunk.invalid().is_empty();
    }
    not_utf8
}

/// `text` in Latin-1: what [`latin1_text`] reads. `None` if a character
/// is beyond it (a configured replacement can be).
pub fn latin1_bytes(text: &str) -> Option<Vec<u8>> {
    text.chars().map(|c| u8::try_from(c).ok()).collect()
}

/// The replacement text for values under sensitive keys.
pub const FILTERED: &str = "[Filtered]";

/// How many distinct lists of sensitive words get the fastest key matcher
/// (one DFA, about 250 KB each); the lists after them are searched
/// beside the shared built-in words (a few KB each, and about 10% more
/// instructions per event: `BENCHMARKS.md`). The global `[scrub]` is
/// compiled first, so its list is always among them.
const FAST_KEY_MATCHERS: usize = 100;

/// Compiled-size limit for one user-supplied pattern.
pub const PATTERN_SIZE_LIMIT: usize = 256 * 1024;

/// One redaction: which rule, where, how. Never the value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Redaction {
    /// The rule's name.
    pub rule: Arc<str>,
    /// The dotted path of the value in the event (array indices as numbers).
    pub path: String,
    /// The method applied.
    #[serde(serialize_with = "method_name")]
    pub method: Method,
}

fn method_name<S: serde::Serializer>(m: &Method, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(m.as_str())
}

/// A pattern rule, compiled.
struct PatternRule {
    name: Arc<str>,
    /// Shared with every scrubber that has the rule (see [`Compiler`]).
    regex: Arc<Regex>,
    group: usize,
    validator: Validator,
    method: Method,
    replacement: String,
    /// Empty: every string. Otherwise the value's path must match one.
    paths: Vec<Selector>,
}

/// What the scrubber is told to do: the validated `[scrub]` settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Built-in rules on.
    pub defaults: bool,
    /// Remove client IP fields and IPs in text.
    pub scrub_ip_addresses: bool,
    /// More key words whose values are secrets.
    pub sensitive_fields: Vec<String>,
    /// Paths never scrubbed, added to the built-in safe paths.
    pub safe_fields: Vec<String>,
    /// The HMAC key for `hash`.
    pub hash_key: Option<String>,
    /// Method per built-in rule, where the operator chose another.
    pub methods: Vec<(String, Method)>,
    /// Custom pattern rules.
    pub rules: Vec<CustomRule>,
}

/// A custom rule from the config.
#[derive(Debug, Clone)]
pub struct CustomRule {
    /// Its name.
    pub name: String,
    /// The regex (linear-time engine; compiled size capped).
    pub pattern: String,
    /// How matches are redacted.
    pub method: Method,
    /// Where it applies; empty means every string.
    pub paths: Vec<String>,
}

/// Why a scrub configuration was refused; the caller adds the key path.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A custom pattern does not compile or is too large.
    #[error("rule {name:?}: pattern refused: {reason}")]
    Pattern {
        /// The rule.
        name: String,
        /// The compiler's complaint.
        reason: String,
    },
    /// A path selector is malformed.
    #[error("{0}")]
    Selector(#[from] path::SelectorError),
    /// `hash` is used without `hash_key`.
    #[error("method \"hash\" needs scrub.hash_key")]
    HashWithoutKey,
    /// A method override names no built-in rule.
    #[error("{0:?} is not a built-in rule (one of {list})", list = rules::BUILTIN_NAMES.join(", "))]
    UnknownRule(String),
    /// Two rules share a name.
    #[error("rule name {0:?} is used twice or is a built-in rule's name")]
    DuplicateName(String),
}

/// Paths that are never scrubbed: identifiers and SDK metadata that carry no
/// personal data and that consumers need intact.
const BUILTIN_SAFE_FIELDS: [&str; 19] = [
    "event_id",
    // A session update's id (a UUID Sentry requires; `sid` is a sensitive
    // word elsewhere, as in `connect.sid`).
    "sid",
    "timestamp",
    "start_timestamp",
    "received",
    "platform",
    "sdk",
    // Releases and dists anywhere are safe by their key (`is_release`).
    "modules",
    "contexts.*.version",
    "contexts.*.app_version",
    "contexts.*.kernel_version",
    "contexts.*.build",
    "contexts.trace.trace_id",
    "contexts.trace.span_id",
    "contexts.trace.parent_span_id",
    "spans.*.span_id",
    "spans.*.parent_span_id",
    "**.frames.*.function",
    "**.frames.*.module",
];

/// Each scrubber's [`Scrubber::id`].
static NEXT_SCRUBBER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The compiled scrubber for one project.
pub struct Scrubber {
    /// Unique over the process's life (a reload's scrubbers get new ones):
    /// what a thread's cache of key classes is kept under (see
    /// `text::KeyClasses`). An address could be a freed scrubber's, whose
    /// settings were not these.
    id: u64,
    /// Pattern rules, in `set` order.
    patterns: Vec<PatternRule>,
    /// All patterns at once: the one scan most strings get. One copy per
    /// thread slot (see [`Scrubber::set`]); shared by the scrubbers with
    /// the same patterns.
    sets: Arc<[RegexSet]>,
    /// `key=value` / `key: value` pairs inside text.
    key_values: Arc<Regex>,
    /// XML start tags: `<password>value</password>` in SOAP and XML bodies.
    xml_tags: Arc<Regex>,
    /// Sensitive key words.
    keys: KeyMatcher,
    /// Method for sensitive keys.
    password_method: Method,
    /// Name of the key-based rule.
    password_rule: Arc<str>,
    /// Name of the IP rule, when IP scrubbing is on.
    ip_rule: Option<Arc<str>>,
    /// Never scrubbed: selectors ending in a plain key, with that key (a few;
    /// a scan comparing lengths first beats hashing every key of the event).
    safe_by_key: Vec<(String, Vec<Selector>)>,
    /// Never scrubbed: the other selectors (ending in `*`, `**` or an index).
    safe_other: Vec<Selector>,
    /// HMAC key for `hash`.
    hash_key: Option<Vec<u8>>,
    /// Every rule name this scrubber can report (bounded metric labels).
    rule_names: Vec<Arc<str>>,
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scrubber")
            .field("rules", &self.rule_names)
            .field("hash_key", &self.hash_key.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// Compiles scrubbers, and keeps what it compiled for the next one to
/// share: the built-in rules' regexes, the key-value and XML-tag patterns,
/// the pattern sets (with their per-thread copies) of each list of rules,
/// and the key matcher of each list of sensitive words. A config whose
/// projects override `[scrub]` then compiles the built-in rules once, not
/// once per project: each cost about 12 ms and 1.9 MiB before
/// (`BENCHMARKS.md`). Every project's threads search the shared regexes,
/// as they search the one global scrubber's when no project has its own.
/// One per config load: a reload starts afresh, and what the old config
/// compiled goes with it.
#[derive(Default)]
pub struct Compiler {
    /// `rules::BUILTINS`' regexes, by index, once compiled.
    builtins: Vec<Option<Arc<Regex>>>,
    /// Custom rules' regexes by pattern (projects that override other
    /// `[scrub]` keys inherit the global rules).
    custom: std::collections::HashMap<String, Arc<Regex>>,
    /// The key-value and XML-tag patterns, once compiled.
    text: Option<(Arc<Regex>, Arc<Regex>)>,
    /// Key matchers by their configured words and whether the built-in
    /// ones are in.
    keys: std::collections::HashMap<(Vec<String>, bool), KeyMatcher>,
    /// Pattern sets by their patterns, in order.
    sets: std::collections::HashMap<Vec<String>, Arc<[RegexSet]>>,
}

impl Compiler {
    /// The built-in rule at `index` in `rules::BUILTINS`, compiled.
    fn builtin(&mut self, index: usize) -> Arc<Regex> {
        if self.builtins.len() <= index {
            self.builtins.resize(rules::BUILTINS.len(), None);
        }
        self.builtins[index]
            .get_or_insert_with(|| {
                Arc::new(
                    Regex::new(rules::BUILTINS[index].pattern).expect("built-in patterns compile"),
                )
            })
            .clone()
    }

    /// A custom rule's pattern, compiled.
    fn custom(&mut self, pattern: &str) -> Result<Arc<Regex>, String> {
        if let Some(regex) = self.custom.get(pattern) {
            return Ok(regex.clone());
        }
        let regex = Arc::new(compile_custom(pattern)?);
        self.custom.insert(pattern.to_owned(), regex.clone());
        Ok(regex)
    }

    /// The key-value and XML-tag patterns, compiled.
    fn text_patterns(&mut self) -> (Arc<Regex>, Arc<Regex>) {
        self.text
            .get_or_insert_with(|| {
                (
                    Arc::new(
                        Regex::new(rules::KEY_PATTERN).expect("the key-value pattern compiles"),
                    ),
                    Arc::new(
                        Regex::new(rules::XML_TAG_PATTERN).expect("the XML tag pattern compiles"),
                    ),
                )
            })
            .clone()
    }

    /// The key matcher for `extra` words, and the built-in ones when `builtin`.
    fn keys(&mut self, extra: &[String], builtin: bool) -> KeyMatcher {
        let key = (extra.to_vec(), builtin);
        if let Some(keys) = self.keys.get(&key) {
            return keys.clone();
        }
        let keys = if extra.is_empty() || self.keys.len() < FAST_KEY_MATCHERS {
            KeyMatcher::new(extra, builtin)
        } else {
            KeyMatcher::beside(&self.keys(&[], builtin), extra)
        };
        self.keys.insert(key, keys.clone());
        keys
    }

    /// The set of `patterns`, compiled, in copies for the thread slots.
    fn set(&mut self, patterns: &[PatternRule]) -> Result<Arc<[RegexSet]>, SettingsError> {
        let key: Vec<String> = patterns
            .iter()
            .map(|p| p.regex.as_str().to_owned())
            .collect();
        if let Some(sets) = self.sets.get(&key) {
            return Ok(sets.clone());
        }
        let set = RegexSetBuilder::new(&key)
            .size_limit(PATTERN_SIZE_LIMIT * (patterns.len() + 1))
            .build()
            .map_err(|e| SettingsError::Pattern {
                name: "(all rules together)".into(),
                reason: e.to_string(),
            })?;
        // A copy has a cache pool of its own, whose first user takes its
        // cache without a lock; the others would share a locked stack.
        let copies = std::thread::available_parallelism().map_or(8, |n| 2 * n.get().clamp(2, 64));
        let sets: Arc<[RegexSet]> = vec![set; copies].into();
        self.sets.insert(key, sets.clone());
        Ok(sets)
    }

    /// Compiles the settings, reusing what earlier calls compiled.
    pub fn scrubber(&mut self, settings: &Settings) -> Result<Scrubber, SettingsError> {
        let method_for = |name: &str, default: Method| {
            settings
                .methods
                .iter()
                .find(|(n, _)| n == name)
                .map_or(default, |(_, m)| *m)
        };
        for (name, method) in &settings.methods {
            if !rules::BUILTIN_NAMES.contains(&name.as_str()) {
                return Err(SettingsError::UnknownRule(name.clone()));
            }
            if *method == Method::Hash && settings.hash_key.is_none() {
                return Err(SettingsError::HashWithoutKey);
            }
        }
        let mut patterns = Vec::new();
        let mut names: Vec<Arc<str>> = Vec::new();
        let mut intern = |name: &str| -> Arc<str> {
            if let Some(n) = names.iter().find(|n| &***n == name) {
                return n.clone();
            }
            let n: Arc<str> = name.into();
            names.push(n.clone());
            n
        };
        for (index, builtin) in rules::BUILTINS.iter().enumerate() {
            let enabled = match builtin.name {
                "ip" => settings.scrub_ip_addresses,
                _ => settings.defaults,
            };
            if !enabled {
                continue;
            }
            patterns.push(PatternRule {
                name: intern(builtin.name),
                regex: self.builtin(index),
                group: builtin.group,
                validator: builtin.validator,
                method: method_for(builtin.name, builtin.method),
                // The key-value half of `password` writes `[Filtered]`; so does this one.
                replacement: match builtin.name {
                    "password" => FILTERED.to_owned(),
                    name => format!("[{name}]"),
                },
                paths: Vec::new(),
            });
        }
        for rule in &settings.rules {
            if rules::BUILTIN_NAMES.contains(&rule.name.as_str())
                || settings
                    .rules
                    .iter()
                    .filter(|r| r.name == rule.name)
                    .count()
                    > 1
            {
                return Err(SettingsError::DuplicateName(rule.name.clone()));
            }
            if rule.method == Method::Hash && settings.hash_key.is_none() {
                return Err(SettingsError::HashWithoutKey);
            }
            let regex = self
                .custom(&rule.pattern)
                .map_err(|reason| SettingsError::Pattern {
                    name: rule.name.clone(),
                    reason,
                })?;
            patterns.push(PatternRule {
                name: intern(&rule.name),
                regex,
                group: 0,
                validator: Validator::None,
                method: rule.method,
                replacement: format!("[{}]", rule.name),
                paths: rule
                    .paths
                    .iter()
                    .map(|p| Selector::parse(p))
                    .collect::<Result<_, _>>()?,
            });
        }
        let sets = self.set(&patterns)?;
        let password_method = method_for("password", Method::Replace);
        let password_rule = intern("password");
        let ip_rule = settings.scrub_ip_addresses.then(|| intern("ip"));
        let mut safe_by_key: Vec<(String, Vec<Selector>)> = Vec::new();
        let mut safe_other = Vec::new();
        for text in BUILTIN_SAFE_FIELDS
            .iter()
            .map(|s| s.to_string())
            .chain(settings.safe_fields.iter().cloned())
        {
            let selector = Selector::parse(&text)?;
            match selector.last_key() {
                Some(key) => match safe_by_key.iter_mut().find(|(k, _)| k == key) {
                    Some((_, list)) => list.push(selector),
                    None => safe_by_key.push((key.to_owned(), vec![selector])),
                },
                None => safe_other.push(selector),
            }
        }
        let (key_values, xml_tags) = self.text_patterns();
        Ok(Scrubber {
            id: NEXT_SCRUBBER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            patterns,
            sets,
            key_values,
            xml_tags,
            keys: self.keys(&settings.sensitive_fields, settings.defaults),
            password_method,
            password_rule,
            ip_rule,
            safe_by_key,
            safe_other,
            hash_key: settings.hash_key.as_ref().map(|k| k.as_bytes().to_vec()),
            rule_names: names,
        })
    }
}

impl Scrubber {
    /// Compiles the settings on their own (see [`Compiler`] for many).
    pub fn new(settings: &Settings) -> Result<Scrubber, SettingsError> {
        Compiler::default().scrubber(settings)
    }

    /// This thread's copy of the pattern set. A `RegexSet` searches with a
    /// cache from its pool: the thread that used it first takes its own
    /// cache with one atomic check, every other thread through a mutex
    /// (about 3% of a request thread's time under load, `BENCHMARKS.md`).
    /// Each thread that scrubs gets a slot, and each slot a copy of the set
    /// (a copy shares the compiled set and has a pool of its own), so that
    /// each of the request threads owns its copy's pool; past the copies
    /// (two per core: a thread that scrubbed once, such as a blocking one,
    /// keeps its slot), threads share them as they shared the one before.
    fn set(&self) -> &RegexSet {
        static NEXT_SLOT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        thread_local! {
            static SLOT: usize = NEXT_SLOT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        &self.sets[SLOT.with(|slot| *slot) % self.sets.len()]
    }

    /// Every rule name this scrubber may report.
    pub fn rule_names(&self) -> &[Arc<str>] {
        &self.rule_names
    }

    /// Scrubs an event in place, records what it redacted in `_meta`, and
    /// returns the list, sorted by path.
    pub fn scrub_event(&self, event: &mut Value) -> Vec<Redaction> {
        let mut meta = match event.as_object_mut() {
            Some(map) => map.remove("_meta"),
            None => None,
        };
        let mut done = HashSet::new();
        if let Some(m) = &meta {
            collect_meta_paths(m, &mut String::new(), &mut done);
        }
        let mut walk = Walk {
            scrubber: self,
            done,
            found: Vec::new(),
        };
        let mut path = Vec::new();
        walk.value(event, &mut path);
        let found = walk.into_found();
        if !found.is_empty() {
            record_all(
                meta.get_or_insert_with(|| Value::Object(Map::new())),
                &found,
            );
        }
        if let (Some(meta), Some(map)) = (meta, event.as_object_mut()) {
            map.insert("_meta".into(), meta);
        }
        found.into_iter().map(|(_, r)| r).collect()
    }

    /// Scrubs free text (a text attachment, a log) with the pattern rules that
    /// apply everywhere and the key-value rule. `None` when nothing matched.
    pub fn scrub_text(&self, text: &str) -> Option<(String, Vec<Redaction>)> {
        let mut found = Vec::new();
        let out = self.scrub_str(text, &[], &mut found)?;
        let redactions = found
            .into_iter()
            .map(|(rule, method)| Redaction {
                rule,
                path: String::new(),
                method,
            })
            .collect();
        Some((out, redactions))
    }

    /// [`Self::scrub_text`] over bytes that may not all be UTF-8 (a text
    /// attachment): UTF-16 ([`utf16_text`]) and single-byte text
    /// ([`latin1_text`]) are scrubbed as the text they are, and written
    /// back in their encoding; in other bytes, each valid UTF-8 run is
    /// scrubbed, and the bytes that are not UTF-8 are kept as they came
    /// (not replaced by U+FFFD). `None` when nothing matched.
    pub fn scrub_bytes(&self, bytes: &[u8]) -> Option<(Vec<u8>, Vec<Redaction>)> {
        // UTF-16 (Windows' "Unicode" logs and exports, with their
        // byte-order mark or without): scrubbed as the text it is, and
        // written back as it came.
        if let Some((text, big_endian)) = utf16_text(bytes) {
            let (out, redactions) = self.scrub_text(&text)?;
            return Some((utf16_bytes(&out, big_endian), redactions));
        }
        if is_nul_separated(bytes) {
            return self.scrub_nul_separated(bytes);
        }
        if let Ok(text) = std::str::from_utf8(bytes) {
            return self
                .scrub_text(text)
                .map(|(out, redactions)| (out.into_bytes(), redactions));
        }
        // Latin-1 or Windows-1252 (logs of Windows programs): scrubbed as
        // the text it is, and written back byte for byte.
        if let Some(text) = latin1_text(bytes) {
            let (out, redactions) = self.scrub_text(&text)?;
            if let Some(out) = latin1_bytes(&out) {
                return Some((out, redactions));
            }
            // A replacement beyond Latin-1: the UTF-8 runs below, as for
            // other bytes that are not all UTF-8.
        }
        let mut out = Vec::with_capacity(bytes.len());
        let mut redactions: Vec<Redaction> = Vec::new();
        for chunk in bytes.utf8_chunks() {
            match self.scrub_text(chunk.valid()) {
                Some((scrubbed, found)) => {
                    out.extend_from_slice(scrubbed.as_bytes());
                    add_redactions(&mut redactions, found);
                }
                None => out.extend_from_slice(chunk.valid().as_bytes()),
            }
            out.extend_from_slice(chunk.invalid());
        }
        (!redactions.is_empty()).then_some((out, redactions))
    }

    /// [`Self::scrub_bytes`] for entries separated by NULs (see
    /// [`is_nul_separated`]): each entry on its own, so that a value ends
    /// at its NUL (`PASSWORD=x\0HOME=...`); and, as in an argument list
    /// given as JSON, the entry after a sensitive option alone
    /// (`--password\0x`) is that option's value, redacted whole. The NULs
    /// stay where they were.
    fn scrub_nul_separated(&self, bytes: &[u8]) -> Option<(Vec<u8>, Vec<Redaction>)> {
        let mut out = Vec::with_capacity(bytes.len());
        let mut redactions: Vec<Redaction> = Vec::new();
        let mut after_flag = false;
        for (i, entry) in bytes.split(|&b| b == 0).enumerate() {
            if i > 0 {
                out.push(0);
            }
            let value = (after_flag && !entry.is_empty() && !entry.starts_with(b"-"))
                .then(|| String::from_utf8_lossy(entry))
                .filter(|value| !self.is_redacted(value));
            // Only an entry that starts with `-` can be an option.
            after_flag = entry.starts_with(b"-")
                && std::str::from_utf8(entry)
                    .is_ok_and(|arg| self.sensitive_flag(Some(arg)).is_some());
            if let Some(value) = value {
                let hash_key = self.hash_key.as_deref();
                let redacted =
                    method::redact_text(self.password_method, &value, FILTERED, hash_key);
                out.extend_from_slice(redacted.as_bytes());
                let found = Redaction {
                    rule: self.password_rule.clone(),
                    path: String::new(),
                    method: self.password_method,
                };
                add_redactions(&mut redactions, [found]);
                continue;
            }
            match self.scrub_bytes(entry) {
                Some((scrubbed, found)) => {
                    // A `%00` in an entry whose decoding held a secret comes
                    // back decoded (see `scrub_str`): a NUL there would split
                    // the entry in two, so it is written as it came.
                    for &b in &scrubbed {
                        match b {
                            0 => out.extend_from_slice(b"%00"),
                            b => out.push(b),
                        }
                    }
                    add_redactions(&mut redactions, found);
                }
                None => out.extend_from_slice(entry),
            }
        }
        (!redactions.is_empty()).then_some((out, redactions))
    }

    /// Whether a value at this path is never scrubbed: one hash lookup by the
    /// last key, then only the selectors that end in it.
    fn is_safe(&self, path: &[Seg<'_>]) -> bool {
        let by_key = match path.last() {
            Some(Seg::Key(k)) => self
                .safe_by_key
                .iter()
                .find(|(key, _)| key.len() == k.len() && key == k)
                .is_some_and(|(_, s)| s.iter().any(|s| s.matches(path))),
            _ => false,
        };
        by_key || is_release(path) || self.safe_other.iter().any(|s| s.matches(path))
    }

    /// Whether a value under a key can be on a safe path at all, given
    /// whether a safe path ends in that key ([`Self::is_safe`] then decides).
    fn may_be_safe(&self, safe_key: bool) -> bool {
        safe_key || !self.safe_other.is_empty()
    }

    /// Finds and redacts the secrets in one string. `None` when there are none
    /// (the common case, which allocates nothing).
    ///
    /// A string with percent-escapes (a URL, a query string, a form body:
    /// browsers send `@` as `%40`) is searched as it came first, where a
    /// value's bounds are its own (a `%23` in a password is no `#` that ends
    /// it, a `%2F` in a URL's password no `/`), then decoded, for what only
    /// shows so (`bob%40example.com`); a secret found so is redacted where
    /// it lies in the text as it came (written decoded only when the
    /// escapes are not UTF-8).
    #[inline(always)]
    fn scrub_str(
        &self,
        s: &str,
        path: &[Seg<'_>],
        found: &mut Vec<(Arc<str>, Method)>,
    ) -> Option<String> {
        let b = s.as_bytes();
        if memchr::memchr2(b'%', b'\\', b).is_none() {
            return self.scrub_plain(s, path, found);
        }
        let mut out = self.scrub_plain(s, path, found);
        // JSON held in a string with its slashes escaped (PHP's
        // `json_encode`: `"url":"https:\/\/app\/invite\/..."`): read with
        // them unescaped, and written so if anything was redacted.
        let slashed = memchr::memchr_iter(b'\\', b).any(|at| b.get(at + 1) == Some(&b'/'));
        if slashed {
            let unslashed = out.as_deref().unwrap_or(s).replace("\\/", "/");
            if let Some(scrubbed) = self.scrub_plain(&unslashed, path, found) {
                out = Some(scrubbed);
            }
        }
        // A secret found decoded is redacted where it lies in the text as
        // it came: the rest keeps its escapes, and so its meaning (a
        // decoded `%26` would split a query's value in two).
        let source = out.as_deref().unwrap_or(s);
        match percent_decoded_mapped(source) {
            Some((decoded, from)) => {
                let spans = self.spans(&decoded, path);
                let place = |r: std::ops::Range<usize>| from[r.start].0..from[r.end - 1].1;
                self.write(&decoded, spans, found, source, place).or(out)
            }
            // Escapes that do not decode to UTF-8: the text as decoded.
            None => match percent_decoded(source) {
                Some(decoded) => self.scrub_plain(&decoded, path, found).or(out),
                None => out,
            },
        }
    }

    /// [`Self::scrub_str`] without the decoding.
    fn scrub_plain(
        &self,
        s: &str,
        path: &[Seg<'_>],
        found: &mut Vec<(Arc<str>, Method)>,
    ) -> Option<String> {
        let spans = self.spans(s, path);
        if spans.is_empty() {
            return None;
        }
        self.write(s, spans, found, s, |at| at)
    }

    /// What in `s` is a secret, by which rule: [`Self::scrub_plain`]'s search.
    fn spans(&self, s: &str, path: &[Seg<'_>]) -> Vec<Span> {
        let mut spans: Vec<Span> = Vec::new();
        let set = self.set();
        if set.is_match(s) {
            for index in set.matches(s).iter() {
                let rule = &self.patterns[index];
                if !rule.paths.is_empty() && !rule.paths.iter().any(|p| p.matches(path)) {
                    continue;
                }
                let mut push = |start: usize, end: usize| {
                    let found = match rule.validator {
                        // An id of digits alone (`order_id: "5543210987651"`)
                        // is an id, whatever its checksum.
                        Validator::Luhn if start == 0 && end == s.len() && is_id(path) => None,
                        // Versions under a key that says so (`app.version`).
                        Validator::Ipv4 if is_versioned(path) => None,
                        v => rules::validate(v, s, start, end),
                    };
                    if let Some(found) = found {
                        spans.push(Span {
                            start: found.start,
                            end: found.end,
                            rule: index,
                        });
                    }
                };
                if rule.group == 0 {
                    // The DFA alone finds whole matches; captures cost more.
                    rule.regex
                        .find_iter(s)
                        .for_each(|m| push(m.start(), m.end()));
                } else {
                    for caps in rule.regex.captures_iter(s) {
                        if let Some(m) = caps.get(rule.group) {
                            push(m.start(), m.end());
                        }
                    }
                }
            }
        }
        // Values of sensitive keys inside text: `token=...`, `"password": "..."`,
        // and of long options in a command line: `--password hunter2`.
        // Found without captures; the key and value are split by hand.
        // One scan for the three bytes first: most strings hold none. (A
        // `memmem` search for `--` builds its searcher per call: a tenth of
        // the event's instructions.)
        let b = s.as_bytes();
        let tagged = memchr::memchr(b'<', b).is_some();
        if (tagged || memchr::memchr3(b'=', b':', b'-', b).is_some()) && self.keys.mentions(s) {
            let keyed = memchr::memchr2(b'=', b':', b).is_some();
            let flagged = memchr::memchr_iter(b'-', b).any(|at| b.get(at + 1) == Some(&b'-'));
            let mut secret = |value: Option<std::ops::Range<usize>>| {
                // What this scrubber wrote there already stays as it is; a
                // mark or two of punctuation hides nothing (`Unexpected token: <`).
                let hides = |v: &str| v.len() > 2 || v.bytes().any(|c| c.is_ascii_alphanumeric());
                let value = value.filter(|v| hides(&s[v.clone()]));
                if let Some(value) = value.filter(|v| !self.is_redacted(&s[v.clone()])) {
                    spans.push(Span {
                        start: value.start,
                        end: value.end,
                        rule: usize::MAX,
                    });
                }
            };
            if keyed {
                for m in self.key_values.find_iter(s) {
                    // A URL's host and port (`//auth.acme.io:8443/...`) is no key,
                    // nor is a GraphQL variable's declaration (`$password: String!`).
                    let before = &s[..m.start()];
                    let declared = before.ends_with('$') && m.as_str().ends_with(':');
                    // Nor is a URL path's last segment (`/oauth/token: 401`).
                    let path = before.ends_with('/')
                        && !before.ends_with(" /")
                        && m.as_str().ends_with(':');
                    if before.ends_with("//") || before.ends_with('@') || declared || path {
                        continue;
                    }
                    let Some(key) = rules::key_in(m.as_str()) else {
                        continue;
                    };
                    let key = &m.as_str()[key];
                    // A stack frame's file and line (`TokenService.java:88`).
                    if rules::is_source_file(key)
                        && s[m.end()..].starts_with(|c: char| c.is_ascii_digit())
                    {
                        continue;
                    }
                    // A field's name that names a secret (`"name": "DB_PASSWORD"`,
                    // `key="DbPassword"`): the value beside it is the
                    // secret, not the name.
                    let namer = NAMERS.iter().any(|n| n.eq_ignore_ascii_case(key));
                    if namer {
                        let named = value_after(s, m.end()).filter(|name| {
                            let name = s[name.clone()].trim_matches(['"', '\'', '\\']);
                            self.keys.is_sensitive(name)
                        });
                        // (When no value stands beside it, the key is
                        // judged as any key: `API key: my_secret_abc`.)
                        if let Some(value) =
                            named.and_then(|n| rules::named_value(s, m.start(), n.end))
                        {
                            secret(Some(value));
                            continue;
                        }
                    }
                    if self.keys.is_sensitive(key)
                        || rules::two_word_key(s, m.start(), key)
                            .is_some_and(|key| self.keys.is_sensitive(key))
                        || (self.keys.builtin() && rules::is_link_code(s, m.start(), key))
                        || (self.keys.builtin() && rules::is_secret_data(s, key, m.start()))
                    {
                        if let Some(block) = rules::yaml_block(s, key, m.start(), m.end()) {
                            block
                                .into_iter()
                                .filter(|v| !rules::is_status_word(&s[v.clone()]))
                                .for_each(|value| secret(Some(value)));
                            continue;
                        }
                        // Code in a frame's context line is no secret
                        // (`token = getToken()`, `key = self.api_key`).
                        // A value on a later line after a `:` must be the
                        // key's (see `next_line_value`): not a stack frame
                        // or the next line of a log. (PHP's `var_dump`
                        // puts every value on the line after its `=>`.)
                        let colon = m.as_str().ends_with(':');
                        let value = rules::value_for(s, m.start(), key, m.end()).filter(|v| {
                            !colon
                                || !s[m.end()..v.start].contains('\n')
                                || rules::next_line_value(s, m.start(), v.clone())
                        });
                        secret(value.filter(|v| {
                            !rules::is_code(&s[v.clone()])
                                && !rules::is_prose(s, v.clone())
                                && !rules::is_status_word(&s[v.clone()])
                                && !s[v.clone()].starts_with("${{")
                                && !rules::is_named_slot(key, &s[v.clone()])
                        }));
                    }
                }
            }
            // A failed statement's parameters, as SQLAlchemy's message
            // gives them (see [`sql`]).
            if keyed && SQL_PARAMETERS.find(b).is_some() {
                for range in self.sql_parameter_secrets(s) {
                    secret(Some(range));
                }
            }
            if tagged {
                for caps in self.xml_tags.captures_iter(s) {
                    let (tag, name) = (caps.get(0).expect("a match"), caps.get(1).expect("a name"));
                    if self.keys.is_sensitive(name.as_str()) {
                        let end = memchr::memchr(b'<', &b[tag.end()..])
                            .map_or(b.len(), |i| tag.end() + i);
                        secret((end > tag.end()).then_some(tag.end()..end));
                    }
                }
            }
            if flagged {
                for (name, after) in rules::long_options(s) {
                    if self.keys.is_sensitive(&s[name]) {
                        // `--password --verbose`: the next word is another
                        // option; `--token %s` holds a placeholder.
                        secret(value_after(s, after).filter(|v| {
                            !s[v.clone()].starts_with('-') && !rules::is_code(&s[v.clone()])
                        }));
                    }
                }
            }
        }
        spans
    }

    /// `target` with each of the `spans` of `s` redacted, where `place`
    /// puts it in `target` (`target` is `s` itself, or the text `s` was
    /// decoded from: a span's value is read in `s`, its redaction written
    /// in `target`); `None` when nothing changed.
    #[inline(never)]
    fn write(
        &self,
        s: &str,
        mut spans: Vec<Span>,
        found: &mut Vec<(Arc<str>, Method)>,
        target: &str,
        place: impl Fn(std::ops::Range<usize>) -> std::ops::Range<usize>,
    ) -> Option<String> {
        if spans.is_empty() {
            return None;
        }
        // Earliest first; of two at the same place, the longer. Overlaps are dropped.
        spans.sort_by(|a, b| a.start.cmp(&b.start).then(b.end.cmp(&a.end)));
        let mut out = String::with_capacity(target.len());
        let mut at = 0;
        let mut last_end = 0;
        for span in spans {
            // An empty match (an operator's rule such as `$`) hides nothing.
            if span.start < last_end || span.start == span.end {
                continue;
            }
            let (name, method, replacement) = match self.patterns.get(span.rule) {
                Some(rule) => (&rule.name, rule.method, rule.replacement.as_str()),
                None => (&self.password_rule, self.password_method, FILTERED),
            };
            let value = &s[span.start..span.end];
            let redacted =
                method::redact_text(method, value, replacement, self.hash_key.as_deref());
            if redacted == value {
                continue;
            }
            let placed = place(span.start..span.end);
            out.push_str(&target[at..placed.start]);
            out.push_str(&redacted);
            at = placed.end;
            last_end = span.end;
            if !found.iter().any(|(n, m)| n == name && *m == method) {
                found.push((name.clone(), method));
            }
        }
        if last_end == 0 {
            return None;
        }
        out.push_str(&target[at..]);
        Some(out)
    }
}

impl Scrubber {
    /// The option an argument names when it is a flag alone (`--password`,
    /// or a key with its separator: `token:`)
    /// and the option is sensitive: the next argument is its value.
    fn sensitive_flag<'a>(&self, arg: Option<&'a str>) -> Option<&'a str> {
        rules::flag_name(arg?).filter(|name| {
            // A key of several words names a secret by its last one, or
            // its last two (`API key:`): `Auth failed:` is prose.
            let (before, last) = name.rsplit_once(' ').unwrap_or(("", name));
            self.keys.is_sensitive(name)
                && (before.is_empty()
                    || self.keys.is_sensitive(last)
                    || rules::two_word_key(name, before.len() + 1, last)
                        .is_some_and(|key| self.keys.is_sensitive(key)))
        })
    }

    /// Whether text is what a redaction wrote: `[Filtered]`, a rule's
    /// `[name]`, or a mask (only `*` and separators).
    fn is_redacted(&self, value: &str) -> bool {
        if value == FILTERED {
            return true;
        }
        if let Some(name) = value.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
            return self.patterns.iter().any(|r| &*r.name == name);
        }
        value.contains('*') && !value.chars().any(char::is_alphanumeric)
    }
}

/// Keys whose text names the value under a sibling key of
/// [`NAMED_VALUES`]: a form field's `name` (`serializeArray()`, HAR,
/// Kubernetes' `env`), the `key` or `Key` of Postman's variables and AWS
/// tags, CloudFormation's `ParameterKey`.
pub(crate) const NAMERS: [&str; 5] = ["name", "Name", "key", "Key", "ParameterKey"];

/// The keys of the values that [`NAMERS`] name.
pub(crate) const NAMED_VALUES: [&str; 3] = ["value", "Value", "ParameterValue"];

/// Whether a key's value is named by a sibling: a [`NAMED_VALUES`] key by
/// a [`NAMERS`] one, a typed secret's member by its type (each kind by its
/// own namer: see [`is_typed_member`]).
pub(crate) fn is_named_value(key: &str) -> bool {
    NAMED_VALUES.contains(&key) || is_typed_member(key)
}

/// Whether a key holds a secret when a sibling names the object's type
/// ([`names_typed_secret`]): a JSON Web Key's private member, a Kubernetes
/// Secret's `data` or `stringData`.
pub(crate) fn is_typed_member(key: &str) -> bool {
    JWK_PRIVATE.contains(&key) || matches!(key, "data" | "stringData")
}

/// Whether a member (`key` with the string `text`) says its object is a
/// secret's type: a JSON Web Key's `kty` ([`is_jwk_type`]), a Kubernetes
/// manifest's `kind: Secret`.
pub(crate) fn names_typed_secret(key: &str, text: &str) -> bool {
    match key {
        "kty" => is_jwk_type(text),
        "kind" => text == "Secret",
        _ => false,
    }
}

/// The keys that may name an object's type (see [`names_typed_secret`]).
pub(crate) const TYPE_KEYS: [&str; 2] = ["kty", "kind"];

/// A JSON Web Key's members that hold its private part (RFC 7518 §6):
/// an RSA key's `d`, its primes and their exponents, and other primes
/// (`oth`); an EC or OKP key's `d`; a symmetric (`oct`) key's `k`. They
/// are secrets only beside a `kty` that names a key type
/// ([`is_jwk_type`]): `d` or `k` alone is any short key.
pub(crate) const JWK_PRIVATE: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Whether a `kty` member's text names a JSON Web Key's type.
pub(crate) fn is_jwk_type(kty: &str) -> bool {
    matches!(kty, "RSA" | "EC" | "OKP" | "oct")
}

/// Where SQLAlchemy's message gives a statement's parameters (a tuple, or
/// a list of them), as a searcher built once.
static SQL_PARAMETERS: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"[parameters: "));

/// Adds what a part of an attachment redacted to what the whole did, each
/// rule and method once.
fn add_redactions(into: &mut Vec<Redaction>, found: impl IntoIterator<Item = Redaction>) {
    for r in found {
        if !into
            .iter()
            .any(|k| k.rule == r.rule && k.method == r.method)
        {
            into.push(r);
        }
    }
}

/// The key that names the value at `path`: the last key, or, for a typed
/// attribute's `value` (`"app.version": {"value": ..., "type": "string"}`),
/// the attribute's.
fn field<'p>(path: &[Seg<'p>]) -> Option<&'p str> {
    match path {
        [.., Seg::Key(attribute), Seg::Key("value")] => Some(attribute),
        [.., Seg::Key(key)] => Some(key),
        _ => None,
    }
}

/// Keys whose values are releases and distributions, wherever they are
/// (`release`, session `attrs.release`, `tags.release`, a log's or span's
/// `sentry.release`): `myapp@1.2.3.4` is no email and no address.
pub(crate) fn is_release_key(key: &str) -> bool {
    matches!(key, "release" | "dist" | "sentry.release" | "sentry.dist")
}

/// Whether the value at `path` is a release or distribution by its key.
fn is_release(path: &[Seg<'_>]) -> bool {
    field(path).is_some_and(is_release_key)
}

/// Whether the value at `path` is a version by its key (`app.version`,
/// `os_build`, `build_number`; a pair's key too): four numbers in it are no
/// address.
fn is_versioned(path: &[Seg<'_>]) -> bool {
    let key = match path {
        // A pair's key names only this: its other uses (safe release keys,
        // ids) stay with object keys.
        [.., Seg::Pair(key)] => Some(*key),
        _ => field(path),
    };
    key.is_some_and(|k| {
        let lower = k.to_ascii_lowercase();
        k.contains("version")
            || k.contains("Version")
            || [
                "build",
                "buildnumber",
                "build_number",
                "build.number",
                "build-number",
                "build_no",
            ]
            .iter()
            .any(|b| lower.ends_with(b))
    })
}

impl Scrubber {
    /// A card's number written as a JSON number at `path` (its digits), as
    /// the `creditcard` rule redacts it, and that rule; `None` when it is
    /// none: not 13 to 19 digits, under an id's key, or failing Luhn.
    fn card_number(&self, digits: &str, path: &[Seg<'_>]) -> Option<(String, &PatternRule)> {
        if !(13..=19).contains(&digits.len())
            || !digits.bytes().all(|c| c.is_ascii_digit())
            || is_id(path)
        {
            return None;
        }
        let rule = self
            .patterns
            .iter()
            .find(|r| r.validator == Validator::Luhn)?;
        if !rules::luhn(digits) {
            return None;
        }
        let hash_key = self.hash_key.as_deref();
        let new = method::redact_text(rule.method, digits, &rule.replacement, hash_key);
        Some((new.into_owned(), rule))
    }
}

/// Whether the value at `path` is an identifier by its key: `id`, or a
/// key ending in `_id`, `.id`, `-id` or `Id` (`order_id`, `orderId`).
fn is_id(path: &[Seg<'_>]) -> bool {
    let Some(k) = field(path) else {
        return false;
    };
    let b = k.as_bytes();
    let n = b.len();
    n >= 2
        && b[n - 2..].eq_ignore_ascii_case(b"id")
        && (n == 2
            || !b[n - 3].is_ascii_alphanumeric()
            || (b[n - 2] == b'I' && b[n - 3].is_ascii_lowercase()))
}

/// A match to redact in a string.
struct Span {
    start: usize,
    end: usize,
    /// Index into the pattern rules; `usize::MAX` for the key-value rule.
    rule: usize,
}

/// Compiles a user's pattern with the linear-time engine under a size cap.
pub fn compile_custom(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(pattern)
        .size_limit(PATTERN_SIZE_LIMIT)
        .dfa_size_limit(PATTERN_SIZE_LIMIT * 4)
        .nest_limit(64)
        .build()
        .map_err(|e| e.to_string())
}

fn join(path: &[Seg<'_>]) -> String {
    path.iter()
        .map(Seg::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// The state of one pass.
struct Walk<'s> {
    scrubber: &'s Scrubber,
    /// Paths an incoming `_meta` says were redacted (only used not to hash a hash).
    done: HashSet<String>,
    /// What this pass redacted (for `_meta`).
    found: Vec<Placed>,
}

/// A redaction, and where each segment of its dotted path ends in that path
/// (keys may hold dots, so the dots alone cannot tell). One string per
/// redaction, and its bounds inline up to 8 segments (an exception's frame
/// variable is 8 deep): a list of owned segments cost an allocation each,
/// and a `Vec` of bounds one more.
type Placed = (Ends, Redaction);

/// Where each segment of a dotted path ends.
type Ends = smallvec::SmallVec<[usize; 8]>;

/// The segments of a dotted path, from where each ends.
fn segments<'a>(ends: &'a [usize], dotted: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    ends.iter().scan(0, move |start, &end| {
        let segment = &dotted[*start..end];
        *start = end + 1;
        Some(segment)
    })
}

/// How two redactions' paths compare, segment by segment (as bytes, which
/// for UTF-8 is the order of the text; a path before the paths below it).
/// A loop over the segments' bounds: the same through [`segments`]'
/// iterators cost twice as much, and sorting is most of settling.
fn path_order(a: &Placed, b: &Placed) -> std::cmp::Ordering {
    let (a_path, b_path) = (a.1.path.as_bytes(), b.1.path.as_bytes());
    let (mut a_start, mut b_start) = (0, 0);
    for (&a_end, &b_end) in a.0.iter().zip(&b.0) {
        let order = a_path[a_start..a_end].cmp(&b_path[b_start..b_end]);
        if order.is_ne() {
            return order;
        }
        (a_start, b_start) = (a_end + 1, b_end + 1);
    }
    a.0.len().cmp(&b.0.len())
}

/// Whether two redactions are at the same place.
fn same_path(a: &Placed, b: &Placed) -> bool {
    a.1.path == b.1.path && a.0 == b.0
}

/// Sorts redactions by path, stably, and drops the repeats of a (path, rule,
/// method), keeping the first. Paths compare by segments: `a.b` > `token`
/// and `a` > `b` > `token` are two places, though their dotted paths read
/// alike. A path comes right before the paths below it, as keys sort in
/// `_meta`. Sorting puts repeats side by side, so this is not quadratic in
/// the redactions (an event can hold tens of thousands of client-IP fields).
fn settle(mut found: Vec<Placed>) -> Vec<Placed> {
    found.sort_by(path_order);
    let mut settled: Vec<Placed> = Vec::with_capacity(found.len());
    // Where the redactions of the last path start in `settled`.
    let mut path_start = 0;
    for item in found {
        match settled.last() {
            Some(last) if same_path(last, &item) => {
                // A path has a few distinct (rule, method) at most, however
                // often it repeats.
                let (rule, method) = (&item.1.rule, item.1.method);
                if settled[path_start..]
                    .iter()
                    .any(|(_, r)| r.rule == *rule && r.method == method)
                {
                    continue;
                }
            }
            _ => path_start = settled.len(),
        }
        settled.push(item);
    }
    settled
}

impl<'s> Walk<'s> {
    /// Safe paths are not walked. Paths an incoming `_meta` lists are walked
    /// all the same: a client could send one to shield a secret.
    fn skip(&self, path: &[Seg<'_>]) -> bool {
        self.scrubber.is_safe(path)
    }

    fn record(&mut self, path: &[Seg<'_>], rule: Arc<str>, method: Method) {
        // Not through `Display`: formatting each segment cost more than the
        // rest of recording (a few redactions per event, each path a handful
        // of segments).
        let mut dotted = String::with_capacity(path.len() * 12);
        let mut ends = Ends::with_capacity(path.len());
        let mut digits = itoa::Buffer::new();
        for seg in path {
            if !ends.is_empty() {
                dotted.push('.');
            }
            dotted.push_str(match seg {
                Seg::Key(k) => k,
                Seg::Index(i) => digits.format(*i),
                Seg::Pair(_) => "1",
            });
            ends.push(dotted.len());
        }
        let redaction = Redaction {
            rule,
            path: dotted,
            method,
        };
        // Repeats (a key the text pass meets twice) are removed at the end,
        // by `into_found`: checking each one here would be quadratic.
        self.found.push((ends, redaction));
    }

    /// Scrubs one string at `path` and records what it redacted; `None`
    /// when there was nothing to redact.
    fn string(&mut self, s: &str, path: &[Seg<'_>]) -> Option<String> {
        let mut found = Vec::new();
        let new = self.scrubber.scrub_str(s, path, &mut found)?;
        for (rule, method) in found {
            self.record(path, rule, method);
        }
        Some(new)
    }

    /// Scrubs a whole number at `path` (its digits) and records what it
    /// redacted: a card number written as a JSON number. `None` when it is
    /// not one (the common case: too short to be a card, no allocation).
    fn number(&mut self, n: u64, path: &[Seg<'_>]) -> Option<String> {
        if n < 1_000_000_000_000 {
            return None;
        }
        let (new, rule) = self.scrubber.card_number(&n.to_string(), path)?;
        self.record(path, rule.name.clone(), rule.method);
        Some(new)
    }

    /// What this pass redacted, each (path, rule, method) once, sorted by
    /// path (see [`settle`]).
    fn into_found(self) -> Vec<Placed> {
        settle(self.found)
    }

    /// Walks a value whose path was already checked against safe and done paths.
    fn value<'m>(&mut self, v: &'m mut Value, path: &mut Vec<Seg<'m>>) {
        match v {
            Value::Object(map) => {
                // `{"name": "password", "value": "..."}` (a form's
                // `serializeArray()`, Kubernetes `env`, HAR; `Key` and
                // `Value` of AWS tags...): the name is the value's key.
                let named = NAMERS
                    .iter()
                    .filter_map(|namer| map.get(*namer)?.as_str())
                    .find(|name| self.scrubber.keys.classify(name) != Sensitivity::None)
                    .map(str::to_owned);
                // A JSON Web Key, a Kubernetes Secret: what their type
                // says holds the secret is one.
                let typed = TYPE_KEYS.iter().any(|k| {
                    map.get(*k)
                        .and_then(Value::as_str)
                        .is_some_and(|t| names_typed_secret(k, t))
                });
                // A log message's template beside its parameters: each
                // parameter is judged by its slot (see [`template`]).
                let slots = map
                    .keys()
                    .any(|k| template::param_key(k).is_some())
                    .then(|| template::template_of(map).map(|t| self.scrubber.secret_slots(t)))
                    .flatten()
                    .unwrap_or_default();
                for (key, child) in map.iter_mut() {
                    path.push(Seg::Key(key));
                    match (&named, template::param_key(key)) {
                        (Some(name), _) if NAMED_VALUES.contains(&key.as_str()) => {
                            self.entry(name, child, path)
                        }
                        _ if typed && is_typed_member(key) => self.secret(child, path),
                        (_, Some(ParamKey::All)) if !slots.is_empty() => {
                            self.params(child, &slots, path)
                        }
                        (_, Some(ParamKey::One(slot))) if slots.has(slot) => {
                            self.secret(child, path)
                        }
                        _ => self.entry(key, child, path),
                    }
                    path.pop();
                }
            }
            Value::Array(items) => self.array(items, path, None),
            Value::String(s) => {
                if let Some(new) = self.string(s, path) {
                    *s = new;
                }
            }
            Value::Number(n) => {
                if let Some(new) = n.as_u64().and_then(|n| self.number(n, path)) {
                    *v = Value::String(new);
                }
            }
            _ => {}
        }
    }

    /// A value under a key: the key decides whether all of it is a secret.
    fn entry<'m>(&mut self, key: &str, value: &'m mut Value, path: &mut Vec<Seg<'m>>) {
        if self.skip(path) {
            return;
        }
        let scrubber = self.scrubber;
        if let (Some(ip_rule), true) = (&scrubber.ip_rule, KeyMatcher::is_ip_field(key)) {
            if !value.is_null() {
                *value = Value::Null;
                self.record(path, ip_rule.clone(), Method::Remove);
            }
            return;
        }
        let secret = match scrubber.keys.classify(key) {
            Sensitivity::Secret => true,
            Sensitivity::Counts => !value.is_number(),
            Sensitivity::None => false,
        };
        if secret {
            if is_typed(value) {
                // Its `value` by the same key (a count stays a count).
                let inner = value
                    .get_mut("value")
                    .expect("a typed attribute has a value");
                path.push(Seg::Key("value"));
                self.entry(key, inner, path);
                path.pop();
                return;
            }
            self.secret(value, path);
            return;
        }
        self.value(value, path);
    }

    /// The items of a list. With `slots`, it holds a log message's
    /// parameters, and an item in a secret slot is redacted whole.
    fn array<'m>(
        &mut self,
        items: &'m mut [Value],
        path: &mut Vec<Seg<'m>>,
        slots: Option<&Slots>,
    ) {
        // The option named by the argument before, when it is a
        // sensitive flag alone: `["--password", "hunter2"]` (argv),
        // `["token:", "abc"]` (a console line's arguments).
        let mut flag: Option<String> = None;
        for (i, child) in items.iter_mut().enumerate() {
            path.push(Seg::Index(i));
            let this = self
                .scrubber
                .sensitive_flag(child.as_str())
                .map(str::to_owned);
            let option = std::mem::replace(&mut flag, this)
                .filter(|_| !child.as_str().is_some_and(|s| s.starts_with('-')));
            let pair = matches!(&*child, Value::Array(p) if is_pair(p));
            if slots.is_some_and(|slots| slots.has_index(i)) {
                self.secret(child, path);
            } else if pair {
                // `[["token", "abc"], ...]`: query strings, headers and
                // cookies as pairs (each pair, whatever its neighbours).
                let Value::Array(items) = child else {
                    unreachable!("a pair is an array")
                };
                let (key, value) = items.split_at_mut(1);
                // The first of a pair is text too (a list of tuples).
                path.push(Seg::Index(0));
                let new_key = match (self.skip(path), &key[0]) {
                    (false, Value::String(k)) => self.string(k, path),
                    _ => None,
                };
                path.pop();
                match new_key {
                    // The key stays: it names the value (as in the
                    // text pass), and decides as it came.
                    None => {
                        let key: &'m [Value] = key;
                        let named = key[0].as_str().unwrap_or_default();
                        path.push(Seg::Pair(named));
                        self.entry(named, &mut value[0], path);
                    }
                    // The key itself held a secret: the value is
                    // judged by the key as it came, and is only an index.
                    Some(new) => {
                        path.push(Seg::Index(1));
                        self.entry(key[0].as_str().unwrap_or_default(), &mut value[0], path);
                        key[0] = Value::String(new);
                    }
                }
                path.pop();
            } else if !self.skip(path) {
                match option {
                    Some(option) => self.entry(&option, child, path),
                    None => self.value(child, path),
                }
            }
            path.pop();
        }
    }

    /// A log message's parameters (`params`: a list by position, or an
    /// object by name, or one value) beside a template whose `slots` hold
    /// secrets: walked as any value is, but for what is in a secret slot.
    fn params<'m>(&mut self, params: &'m mut Value, slots: &Slots, path: &mut Vec<Seg<'m>>) {
        if self.skip(path) {
            return;
        }
        match params {
            Value::Array(items) => self.array(items, path, Some(slots)),
            // One mapping, which a printf template's first slot formats
            // whole (Python's logging takes a lone mapping as the parameters).
            _ if slots.has_index(0) => self.secret(params, path),
            Value::Object(map) => {
                for (key, item) in map.iter_mut() {
                    path.push(Seg::Key(key));
                    match slots.has(key) {
                        true => self.secret(item, path),
                        false => self.entry(key, item, path),
                    }
                    path.pop();
                }
            }
            other => self.value(other, path),
        }
    }

    /// A secret: redacted whole (a typed attribute's `value`).
    fn secret<'m>(&mut self, value: &'m mut Value, path: &mut Vec<Seg<'m>>) {
        if self.skip(path) {
            return;
        }
        let scrubber = self.scrubber;
        if is_typed(value) {
            let inner = value
                .get_mut("value")
                .expect("a typed attribute has a value");
            path.push(Seg::Key("value"));
            self.secret(inner, path);
            path.pop();
            return;
        }
        // Replace, mask and remove give the same result when applied twice;
        // a hash would hash the hash. A value this relay already
        // pseudonymised (its `_meta` says so and it is one hex digest) stays.
        let hashed_before = scrubber.password_method == Method::Hash
            && self.done.contains(&join(path))
            && value.as_str().is_some_and(is_hex_digest);
        if hashed_before {
            return;
        }
        if redact_all(
            value,
            scrubber.password_method,
            scrubber.hash_key.as_deref(),
        ) {
            self.record(
                path,
                scrubber.password_rule.clone(),
                scrubber.password_method,
            );
        }
    }
}

/// Redacts every leaf of a value under a sensitive key, keeping its shape.
/// Returns whether anything changed.
fn redact_all(v: &mut Value, method: Method, hash_key: Option<&[u8]>) -> bool {
    if method == Method::Remove {
        let changed = !v.is_null();
        *v = Value::Null;
        return changed;
    }
    match v {
        Value::Object(map) => map.iter_mut().fold(false, |changed, (_, child)| {
            redact_all(child, method, hash_key) | changed
        }),
        Value::Array(items) => items.iter_mut().fold(false, |changed, child| {
            redact_all(child, method, hash_key) | changed
        }),
        Value::String(s) => match redact_secret(s, method, hash_key) {
            Some(new) => {
                *s = new.into_owned();
                true
            }
            None => false,
        },
        Value::Number(n) => {
            let text = n.to_string();
            *v = Value::String(method::redact_text(method, &text, FILTERED, hash_key).into_owned());
            true
        }
        // `true` or `false` hides nothing (`has_password: true`).
        Value::Bool(_) => false,
        Value::Null => false,
    }
}

/// What a string under a sensitive key becomes (a leaf of [`redact_all`],
/// which handles `remove` itself); `None` when it stays as it is.
fn redact_secret(text: &str, method: Method, hash_key: Option<&[u8]>) -> Option<Cow<'static, str>> {
    let new = method::redact_text(method, text, FILTERED, hash_key);
    (*new != *text).then_some(new)
}

/// `s` with its percent-escapes decoded (invalid UTF-8 replaced), when it
/// has any; `None` (and no allocation) when it has none.
fn percent_decoded(s: &str) -> Option<String> {
    let once = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    if !has_escapes(s) {
        return None;
    }
    let mut decoded = once(s);
    // Encoded twice or three times (a redirect's URL inside another's
    // query: `%2540` for `@`): decoded again while the last round decoded
    // an encoded `%` (`%25`).
    let mut again = s.contains("%25");
    for _ in 0..2 {
        if !again || !has_escapes(&decoded) {
            break;
        }
        again = decoded.contains("%25");
        decoded = once(&decoded);
    }
    Some(decoded)
}

/// `s` percent-decoded as [`percent_decoded`] decodes it (as often as it
/// was encoded), with the span of `s` each decoded byte came from; `None`
/// when it has no escapes, or a round's bytes are not UTF-8.
fn percent_decoded_mapped(s: &str) -> Option<(String, Vec<(usize, usize)>)> {
    if !has_escapes(s) {
        return None;
    }
    let from: Vec<(usize, usize)> = (0..s.len()).map(|i| (i, i + 1)).collect();
    let (mut decoded, mut from) = decode_round(s, &from)?;
    let mut again = s.contains("%25");
    for _ in 0..2 {
        if !again || !has_escapes(&decoded) {
            break;
        }
        again = decoded.contains("%25");
        (decoded, from) = decode_round(&decoded, &from)?;
    }
    Some((decoded, from))
}

/// One round of percent-decoding, each decoded byte with the span it came
/// from (in the text `from` maps `s`'s bytes to).
fn decode_round(s: &str, from: &[(usize, usize)]) -> Option<(String, Vec<(usize, usize)>)> {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut map = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let escape = (b[i] == b'%')
            .then(|| Some(hex(*b.get(i + 1)?)? * 16 + hex(*b.get(i + 2)?)?))
            .flatten();
        match escape {
            Some(byte) => {
                out.push(byte as u8);
                map.push((from[i].0, from[i + 2].1));
                i += 3;
            }
            None => {
                out.push(b[i]);
                map.push(from[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().map(|text| (text, map))
}

/// Whether `s` has a percent-escape (`%` and two hex digits).
fn has_escapes(s: &str) -> bool {
    let b = s.as_bytes();
    memchr::memchr_iter(b'%', b).any(|at| {
        b.get(at + 1).is_some_and(u8::is_ascii_hexdigit)
            && b.get(at + 2).is_some_and(u8::is_ascii_hexdigit)
    })
}

/// A 64-character lowercase hex string: what `hash` writes.
fn is_hex_digest(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A `[key, value]` pair with a string key.
fn is_pair(items: &[Value]) -> bool {
    items.len() == 2 && items[0].is_string()
}

/// The value of a typed attribute (`{"value": ..., "type": "string"}`, as
/// logs and spans carry them): the key it is under decides about the
/// value, and its `type` and `unit` stay.
fn is_typed(v: &Value) -> bool {
    v.as_object().is_some_and(|map| {
        map.contains_key("value")
            && map
                .keys()
                .all(|k| matches!(k.as_str(), "value" | "type" | "unit"))
    })
}

/// Adds what one pass redacted to `_meta`, as a tree.
fn record_all(meta: &mut Value, found: &[Placed]) {
    for (ends, redaction) in found {
        record_meta(meta, segments(ends, &redaction.path), redaction);
    }
}

/// Adds `{"": {"rem": [[rule, code]]}}` at the path in `_meta`.
fn record_meta<'a>(
    meta: &mut Value,
    segments: impl Iterator<Item = &'a str>,
    redaction: &Redaction,
) {
    let mut node = meta;
    for seg in segments {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        node = node
            .as_object_mut()
            .expect("made an object above")
            .entry(seg)
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if !node.is_object() {
        *node = Value::Object(Map::new());
    }
    let own = node
        .as_object_mut()
        .expect("made an object above")
        .entry("")
        .or_insert_with(|| Value::Object(Map::new()));
    if !own.is_object() {
        *own = Value::Object(Map::new());
    }
    let rem = own
        .as_object_mut()
        .expect("made an object above")
        .entry("rem")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(list) = rem {
        let entry = serde_json::json!([&*redaction.rule, redaction.method.meta_code()]);
        if !list.contains(&entry) {
            list.push(entry);
        }
    }
}

/// Writes the `_meta` object [`record_meta`] would build for what one pass
/// redacted, given as [`settle`] leaves it: the same bytes serde_json writes
/// for that tree (keys sorted, `""` first), without building it. Returns
/// `false`, having written nothing, when a path has an empty key, which would
/// meet `_meta`'s own `""` key; the caller then builds the tree.
fn write_meta(out: &mut Vec<u8>, found: &[Placed]) -> bool {
    if found
        .iter()
        .any(|(ends, r)| segments(ends, &r.path).any(str::is_empty))
    {
        return false;
    }
    let quoted = |out: &mut Vec<u8>, text: &str| {
        serde_json::to_writer(&mut *out, text).expect("a string always serializes")
    };
    // The keys of the objects open now, and whether each has a member yet.
    let mut open: Vec<&str> = Vec::new();
    let mut has_member = vec![false];
    let member = |out: &mut Vec<u8>, has_member: &mut Vec<bool>| {
        let last = has_member.last_mut().expect("the root object is open");
        if *last {
            out.push(b',');
        }
        *last = true;
    };
    out.push(b'{');
    // The (rule, method) pairs written at the current path: one list for
    // all paths, cleared for each (one per path cost an allocation each).
    let mut written: Vec<(&str, &str)> = Vec::new();
    // Sorted by path: a path's redactions are side by side, and a path comes
    // right before the paths below it.
    for at_one_path in found.chunk_by(same_path) {
        let (ends, first) = &at_one_path[0];
        let shared = open
            .iter()
            .zip(segments(ends, &first.path))
            .take_while(|(open, key)| *open == key)
            .count();
        while open.len() > shared {
            open.pop();
            has_member.pop();
            out.push(b'}');
        }
        for key in segments(ends, &first.path).skip(shared) {
            member(out, &mut has_member);
            quoted(out, key);
            out.extend_from_slice(b":{");
            open.push(key);
            has_member.push(false);
        }
        member(out, &mut has_member);
        out.extend_from_slice(b"\"\":{\"rem\":[");
        written.clear();
        for (_, redaction) in at_one_path {
            let entry = (&*redaction.rule, redaction.method.meta_code());
            if !written.contains(&entry) {
                if !written.is_empty() {
                    out.push(b',');
                }
                out.push(b'[');
                quoted(out, entry.0);
                out.push(b',');
                quoted(out, entry.1);
                out.push(b']');
                written.push(entry);
            }
        }
        out.extend_from_slice(b"]}");
    }
    for _ in open {
        out.push(b'}');
    }
    out.push(b'}');
    true
}

/// The paths an existing `_meta` records as scrubbed.
fn collect_meta_paths(meta: &Value, prefix: &mut String, out: &mut HashSet<String>) {
    let Value::Object(map) = meta else { return };
    for (key, child) in map {
        if key.is_empty() {
            if child.get("rem").is_some() {
                out.insert(prefix.clone());
            }
            continue;
        }
        let len = prefix.len();
        if !prefix.is_empty() {
            prefix.push('.');
        }
        prefix.push_str(key);
        collect_meta_paths(child, prefix, out);
        prefix.truncate(len);
    }
}

#[cfg(test)]
mod tests;
