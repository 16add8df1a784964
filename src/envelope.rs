//! Parses a Sentry envelope (header line, then items) into typed items over
//! the shared body buffer, without copying payloads.
//!
//! The format: line 1 is a JSON object (the envelope header). Then zero or
//! more items: a JSON header line with `type` and an optional `length`; the
//! payload is `length` bytes followed by an optional newline, or, without
//! `length`, runs to the next newline. The parser is strict where the format
//! is (every header is a JSON object, `length` must fit in the body) and
//! tolerant where SDKs are sloppy (a missing final newline, blank lines
//! between items, `\r\n` line ends).

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;

use crate::config::Limits;
use crate::event::{EventView, Field};

/// What an item counts against, for quotas, topics and metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataCategory {
    /// Error events.
    Error,
    /// Transactions.
    Transaction,
    /// Attachments (quotas count their bytes).
    Attachment,
    /// Release-health sessions.
    Session,
    /// User reports.
    UserReport,
    /// User feedback.
    Feedback,
    /// Cron check-ins.
    Monitor,
    /// Standalone spans.
    Span,
    /// Log records.
    LogItem,
    /// Profiles.
    Profile,
    /// Session replays.
    Replay,
    /// Anything of a type the relay does not know.
    Default,
}

impl DataCategory {
    /// Every category, in [`DataCategory::index`] order.
    pub const ALL: [DataCategory; 12] = [
        DataCategory::Error,
        DataCategory::Transaction,
        DataCategory::Attachment,
        DataCategory::Session,
        DataCategory::UserReport,
        DataCategory::Feedback,
        DataCategory::Monitor,
        DataCategory::Span,
        DataCategory::LogItem,
        DataCategory::Profile,
        DataCategory::Replay,
        DataCategory::Default,
    ];

    /// Position in [`DataCategory::ALL`], for tables indexed by category.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The name used in metric labels, config keys and rate-limit headers.
    pub fn as_str(self) -> &'static str {
        match self {
            DataCategory::Error => "error",
            DataCategory::Transaction => "transaction",
            DataCategory::Attachment => "attachment",
            DataCategory::Session => "session",
            DataCategory::UserReport => "user_report",
            DataCategory::Feedback => "feedback",
            DataCategory::Monitor => "monitor",
            DataCategory::Span => "span",
            DataCategory::LogItem => "log_item",
            DataCategory::Profile => "profile",
            DataCategory::Replay => "replay",
            DataCategory::Default => "default",
        }
    }

    /// The category a name from an SDK (a client report) stands for, if known.
    pub fn from_name(name: &str) -> Option<DataCategory> {
        DataCategory::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

/// The type of an item, from its header's `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItemType {
    /// `event`: a JSON error event.
    Event,
    /// `transaction`: a JSON transaction event.
    Transaction,
    /// `attachment`: binary bytes.
    Attachment,
    /// `session` or `sessions`.
    Session,
    /// `client_report`: the SDK's own discard counts; consumed, not forwarded.
    ClientReport,
    /// `user_report`.
    UserReport,
    /// `feedback`.
    Feedback,
    /// `check_in`.
    CheckIn,
    /// `span`.
    Span,
    /// `log`.
    Log,
    /// `profile` or `profile_chunk`.
    Profile,
    /// `replay_event`, `replay_recording` or `replay_video`.
    Replay,
    /// Any other type: forwarded as it is, in the `default` category.
    Other,
}

impl ItemType {
    /// Classifies a header's `type` string.
    pub fn from_name(name: &str) -> ItemType {
        match name {
            "event" => ItemType::Event,
            "transaction" => ItemType::Transaction,
            "attachment" => ItemType::Attachment,
            "session" | "sessions" => ItemType::Session,
            "client_report" => ItemType::ClientReport,
            "user_report" => ItemType::UserReport,
            "feedback" => ItemType::Feedback,
            "check_in" => ItemType::CheckIn,
            "span" => ItemType::Span,
            "log" => ItemType::Log,
            "profile" | "profile_chunk" => ItemType::Profile,
            "replay_event" | "replay_recording" | "replay_video" => ItemType::Replay,
            _ => ItemType::Other,
        }
    }

    /// The category the item counts against; client reports count against none.
    pub fn category(self) -> Option<DataCategory> {
        Some(match self {
            ItemType::Event => DataCategory::Error,
            ItemType::Transaction => DataCategory::Transaction,
            ItemType::Attachment => DataCategory::Attachment,
            ItemType::Session => DataCategory::Session,
            ItemType::ClientReport => return None,
            ItemType::UserReport => DataCategory::UserReport,
            ItemType::Feedback => DataCategory::Feedback,
            ItemType::CheckIn => DataCategory::Monitor,
            ItemType::Span => DataCategory::Span,
            ItemType::Log => DataCategory::LogItem,
            ItemType::Profile => DataCategory::Profile,
            ItemType::Replay => DataCategory::Replay,
            ItemType::Other => DataCategory::Default,
        })
    }

    /// Whether the payload is JSON by the protocol (events, sessions, spans,
    /// logs, check-ins, profiles, replay events): scrubbed as a JSON tree.
    pub fn is_json(self, type_name: &str) -> bool {
        match self {
            ItemType::Attachment | ItemType::Other => false,
            ItemType::Replay => type_name == "replay_event",
            _ => true,
        }
    }

    /// Whether the payload is a JSON event that must parse and carries an `event_id`.
    pub fn is_event(self) -> bool {
        matches!(
            self,
            ItemType::Event | ItemType::Transaction | ItemType::Feedback
        )
    }
}

/// Why an envelope could not be parsed. Each is a 400, but for the size limits (413).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvelopeError {
    /// The body had no bytes at all.
    #[error("empty envelope")]
    Empty,
    /// The first line is not a JSON object.
    #[error("envelope header is not a JSON object: {0}")]
    BadHeader(String),
    /// An item header line is not a JSON object with a string `type`.
    #[error("item {index} header is not a JSON object with a \"type\": {reason}")]
    BadItemHeader {
        /// Zero-based item position.
        index: usize,
        /// The parser's complaint.
        reason: String,
    },
    /// An item's `length` runs past the end of the body.
    #[error("item {index} length {length} runs past the end of the envelope")]
    LengthPastEnd {
        /// Zero-based item position.
        index: usize,
        /// The declared length.
        length: u64,
    },
    /// A header line is over the configured limit.
    #[error("a header line is longer than {limit} bytes")]
    HeaderTooLong {
        /// The limit in bytes.
        limit: usize,
    },
    /// More items than the configured limit.
    #[error("more than {limit} items in one envelope")]
    TooManyItems {
        /// The limit.
        limit: usize,
    },
    /// The header's `event_id` is not a UUID.
    #[error("event_id {0:?} is not a UUID")]
    BadEventId(String),
    /// A second event, transaction or feedback: an envelope carries one, and
    /// both would go on under the envelope's one event id.
    #[error("item {index} is a second event item ({type_name}): an envelope carries one")]
    DuplicateEvent {
        /// Zero-based item position.
        index: usize,
        /// Its type, as sent.
        type_name: String,
    },
}

impl EnvelopeError {
    /// Whether the envelope broke a size or count limit (413) rather than the format (400).
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            EnvelopeError::HeaderTooLong { .. } | EnvelopeError::TooManyItems { .. }
        )
    }
}

/// The fields of the envelope header the relay uses. Others are kept in the raw bytes.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct EnvelopeHeader {
    /// The event the envelope is about, when it is about one.
    #[serde(default)]
    pub event_id: Option<String>,
    /// The DSN the SDK was configured with; one of the places a key can come from.
    #[serde(default)]
    pub dsn: Option<String>,
    /// When the SDK sent it (RFC 3339), as given.
    #[serde(default)]
    pub sent_at: Option<String>,
    /// The dynamic sampling context.
    #[serde(default)]
    pub trace: Option<TraceContext>,
}

/// The envelope header's `trace`: the dynamic sampling context.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct TraceContext {
    /// The trace the envelope's events belong to.
    #[serde(default)]
    pub trace_id: Option<String>,
    /// The key of the project that started the trace.
    #[serde(default)]
    pub public_key: Option<String>,
    /// The SDK's own sample rate, as a string or number.
    #[serde(default)]
    pub sample_rate: Option<serde_json::Value>,
    /// Whether the SDK sampled the trace.
    #[serde(default)]
    pub sampled: Option<serde_json::Value>,
    /// Environment.
    #[serde(default)]
    pub environment: Option<String>,
    /// Release.
    #[serde(default)]
    pub release: Option<String>,
    /// Transaction name.
    #[serde(default)]
    pub transaction: Option<String>,
}

/// The fields of an item header the relay uses.
#[derive(Debug, Clone, Deserialize)]
struct RawItemHeader<'a> {
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(default)]
    length: Option<u64>,
    #[serde(default, borrow)]
    content_type: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    filename: Option<Cow<'a, str>>,
}

/// One item: its type, raw header and payload, both views into the body.
#[derive(Debug, Clone)]
pub struct Item {
    /// The classified type.
    pub ty: ItemType,
    /// The `type` string exactly as the SDK sent it (the Kafka `item_type` header).
    pub type_name: String,
    /// The header line as sent.
    pub raw_header: Bytes,
    /// The header's `content_type`, if any.
    pub content_type: Option<String>,
    /// The header's `filename`, if any (attachments).
    pub filename: Option<String>,
    /// The payload bytes.
    pub payload: Bytes,
}

impl Item {
    /// The category the item counts against.
    pub fn category(&self) -> Option<DataCategory> {
        self.ty.category()
    }
}

/// A parsed envelope.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// The parsed header fields.
    pub header: EnvelopeHeader,
    /// The header line as sent.
    pub raw_header: Bytes,
    /// The items, in order.
    pub items: Vec<Item>,
}

/// Parses an envelope body under the configured limits.
pub fn parse(body: Bytes, limits: &Limits) -> Result<Envelope, EnvelopeError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(EnvelopeError::Empty);
    }
    let (line, mut pos) = next_line(&body, 0, limits.max_header_line_size)?;
    let raw_header = body.slice(line.clone());
    if !starts_object(&raw_header) {
        return Err(EnvelopeError::BadHeader("expected a JSON object".into()));
    }
    let header: EnvelopeHeader = std::str::from_utf8(&raw_header)
        .map_err(|e| EnvelopeError::BadHeader(e.to_string()))
        .and_then(|text| {
            serde_json::from_str(text).map_err(|e| EnvelopeError::BadHeader(e.to_string()))
        })?;
    if let Some(id) = &header.event_id {
        normalize_event_id(id).ok_or_else(|| EnvelopeError::BadEventId(id.clone()))?;
    }

    let mut items = Vec::new();
    // Whether the item before had a `length` (for the wording of an error).
    let mut sized_before = false;
    loop {
        // Blank lines between items and at the end are tolerated.
        while pos < body.len() && (body[pos] == b'\n' || body[pos] == b'\r') {
            pos += 1;
        }
        if pos >= body.len() {
            break;
        }
        let index = items.len();
        if index >= limits.max_items {
            return Err(EnvelopeError::TooManyItems {
                limit: limits.max_items,
            });
        }
        let (line, after_header) = next_line(&body, pos, limits.max_header_line_size)?;
        let raw_item_header = body.slice(line);
        // Right after a sized item, a line that is no header is most likely
        // that item's payload running past its `length`: say so.
        let bad = |reason: String| EnvelopeError::BadItemHeader {
            index,
            reason: match sized_before {
                true => format!(
                    "{reason} (does item {}'s length match its payload?)",
                    index - 1
                ),
                false => reason,
            },
        };
        if !starts_object(&raw_item_header) {
            return Err(bad("expected a JSON object".into()));
        }
        let item_header: RawItemHeader<'_> = std::str::from_utf8(&raw_item_header)
            .map_err(|e| bad(e.to_string()))
            .and_then(|text| serde_json::from_str(text).map_err(|e| bad(e.to_string())))?;
        sized_before = item_header.length.is_some();
        let payload = match item_header.length {
            Some(length) => {
                let end = usize::try_from(length)
                    .ok()
                    .and_then(|l| after_header.checked_add(l))
                    .filter(|end| *end <= body.len())
                    .ok_or(EnvelopeError::LengthPastEnd { index, length })?;
                let payload = after_header..end;
                pos = end;
                // One optional line end after a sized payload.
                if body[pos..].starts_with(b"\r\n") {
                    pos += 2;
                } else if body[pos..].starts_with(b"\n") {
                    pos += 1;
                }
                payload
            }
            None => {
                let end = memchr::memchr(b'\n', &body[after_header..])
                    .map_or(body.len(), |i| after_header + i);
                pos = (end + 1).min(body.len());
                let end = if end > after_header && body[end - 1] == b'\r' {
                    end - 1
                } else {
                    end
                };
                after_header..end
            }
        };
        let type_name = item_header.ty.into_owned();
        let ty = ItemType::from_name(&type_name);
        if ty.is_event() && items.iter().any(|i: &Item| i.ty.is_event()) {
            return Err(EnvelopeError::DuplicateEvent { index, type_name });
        }
        items.push(Item {
            ty,
            type_name,
            content_type: item_header.content_type.map(Cow::into_owned),
            filename: item_header.filename.map(Cow::into_owned),
            raw_header: raw_item_header,
            payload: body.slice(payload),
        });
    }
    Ok(Envelope {
        header,
        raw_header,
        items,
    })
}

/// The range of the line starting at `start` (without its line end) and the
/// position after the line end.
fn next_line(
    body: &[u8],
    start: usize,
    max: usize,
) -> Result<(std::ops::Range<usize>, usize), EnvelopeError> {
    let window = &body[start..body.len().min(start.saturating_add(max).saturating_add(2))];
    let (end, next) = match memchr::memchr(b'\n', window) {
        Some(i) => (start + i, start + i + 1),
        None if body.len() - start <= max => (body.len(), body.len()),
        None => return Err(EnvelopeError::HeaderTooLong { limit: max }),
    };
    let end = if end > start && body[end - 1] == b'\r' {
        end - 1
    } else {
        end
    };
    if end - start > max {
        return Err(EnvelopeError::HeaderTooLong { limit: max });
    }
    Ok((start..end, next))
}

/// serde's derived structs also accept arrays; a header must be an object.
fn starts_object(line: &[u8]) -> bool {
    line.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// An event id as 32 lowercase hex digits, from a UUID with or without dashes
/// (dashes only where a UUID has them). One allocation, for the answer.
pub fn normalize_event_id(id: &str) -> Option<String> {
    let b = id.as_bytes();
    const DASHES: [usize; 4] = [8, 13, 18, 23];
    let dashed = match b.len() {
        32 => false,
        36 if DASHES.iter().all(|&i| b[i] == b'-') => true,
        _ => return None,
    };
    let mut hex = String::with_capacity(32);
    for (i, &c) in b.iter().enumerate() {
        if dashed && DASHES.contains(&i) {
            continue;
        }
        if !c.is_ascii_hexdigit() {
            return None;
        }
        hex.push(char::from(c.to_ascii_lowercase()));
    }
    Some(hex)
}

/// Why an event payload was refused.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// Not JSON, or nested deeper than serde_json's limit of 128.
    #[error("event is not a valid JSON object: {0}")]
    NotJson(#[source] serde_json::Error),
    /// Not UTF-8 (serde_json does not check the strings it skips, so this is checked first).
    #[error("event is not UTF-8: {0}")]
    NotUtf8(#[source] std::str::Utf8Error),
    /// The payload is not an object.
    #[error("event is not a JSON object")]
    NotObject,
    /// The payload's `event_id` is not a UUID.
    #[error("event_id is not a UUID")]
    BadEventId,
    /// Objects and arrays nest deeper than `limits.max_json_depth`.
    #[error("event nests deeper than {0} levels")]
    TooDeep(usize),
}

/// How deep serde_json lets a tree nest while it builds one.
const SERDE_DEPTH: usize = 128;

/// Validates a JSON event payload (UTF-8, depth, syntax, an object, an id
/// that is a UUID) and parses it into a tree (for the stages that need
/// one), with its normalized `event_id`.
///
/// One pass where it can: building a tree, serde_json checks every string's
/// UTF-8 and refuses nesting past [`SERDE_DEPTH`], so the separate UTF-8
/// check runs only to name an error, and the depth scan only for a tighter
/// `max_depth`.
pub fn parse_event(
    payload: &[u8],
    max_depth: usize,
) -> Result<(serde_json::Value, Option<String>), EventError> {
    if max_depth < SERDE_DEPTH && json_depth_exceeds(payload, max_depth) {
        return Err(EventError::TooDeep(max_depth));
    }
    let tree: serde_json::Value = serde_json::from_slice(payload).map_err(|e| {
        if let Err(utf8) = std::str::from_utf8(payload) {
            EventError::NotUtf8(utf8)
        } else if e.to_string().starts_with("recursion limit exceeded") {
            EventError::TooDeep(max_depth.min(SERDE_DEPTH))
        } else {
            EventError::NotJson(e)
        }
    })?;
    if !tree.is_object() {
        return Err(EventError::NotObject);
    }
    let event_id = match tree.get("event_id") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(id)) => {
            Some(normalize_event_id(id).ok_or(EventError::BadEventId)?)
        }
        Some(_) => return Err(EventError::BadEventId),
    };
    Ok((tree, event_id))
}

/// Whether a JSON payload that is to be built into a tree (a JSON item
/// other than an event) nests deeper than `max_depth`, or than the tree
/// takes. Brackets inside strings do not count; the JSON is not otherwise checked.
pub fn nests_deeper_than(payload: &[u8], max_depth: usize) -> bool {
    // serde_json's tree refuses its 128th level: the deepest it takes is 127.
    json_depth_exceeds(payload, max_depth.min(SERDE_DEPTH - 1))
}

/// An event that passed its checks.
// The common variant is the large one; boxing it would allocate per event for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Event<'a> {
    /// Read in one pass without a tree (the common case), with the event's
    /// text (its UTF-8 checked); scrubbed as text.
    View(EventView<'a>, &'a str),
    /// Parsed into a tree: an event the view could not read (a duplicate
    /// known key, say), which the tree then decides about.
    Tree(serde_json::Value),
}

impl Event<'_> {
    /// The grouping fingerprint.
    pub fn fingerprint(&self) -> Option<String> {
        match self {
            Event::View(view, _) => crate::fingerprint::of(view),
            Event::Tree(tree) => crate::fingerprint::fingerprint(tree),
        }
    }

    /// Calls `f` with the event's view.
    pub fn with_view<R>(&self, f: impl FnOnce(&EventView<'_>) -> R) -> R {
        match self {
            Event::View(view, _) => f(view),
            Event::Tree(tree) => f(&EventView::from_tree(tree)),
        }
    }
}

/// Validates a JSON event payload like [`parse_event`] and reads it, with
/// its normalized `event_id`: as a view without building a tree when it can,
/// else as a tree (which then decides whether the event is valid, and why
/// not).
pub fn read_event(
    payload: &[u8],
    max_depth: usize,
) -> Result<(Event<'_>, Option<String>), EventError> {
    if let Some(read) = view_event(payload, max_depth) {
        return Ok(read);
    }
    let (tree, event_id) = parse_event(payload, max_depth)?;
    Ok((Event::Tree(tree), event_id))
}

/// The view's pass: the same checks as [`parse_event`] (UTF-8, depth, JSON,
/// an object, an id that is a UUID); `None` on anything else, which
/// [`parse_event`] then refuses with its reason. The view reads every value
/// it does not keep as a tree would (`event::Checked`), serde_json's
/// nesting limit included; only a tighter `max_depth` needs a scan of its own.
fn view_event(payload: &[u8], max_depth: usize) -> Option<(Event<'_>, Option<String>)> {
    let text = std::str::from_utf8(payload).ok()?;
    // serde_json's tree refuses its 128th level: the deepest it takes is 127.
    if !starts_object(payload)
        || (max_depth < SERDE_DEPTH - 1 && json_depth_exceeds(payload, max_depth))
    {
        return None;
    }
    let view: EventView<'_> = serde_json::from_str(text).ok()?;
    let event_id = match &view.event_id {
        Field::Absent | Field::Null => None,
        Field::Str(id) => Some(normalize_event_id(id)?),
        _ => return None,
    };
    Some((Event::View(view, text), event_id))
}

/// Whether objects and arrays in `json` nest deeper than `max`: one byte
/// loop over the text, brackets inside strings not counted. Written by
/// hand because no parser offers a depth-limited skip; the JSON is not
/// otherwise checked (the parser decides). For a limit tighter than the
/// one serde_json holds its trees and the view to.
fn json_depth_exceeds(json: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut at = 0;
    while let Some(&b) = json.get(at) {
        match b {
            // Most of an event is in strings: skip to their end at once.
            b'"' => loop {
                at += 1;
                match json
                    .get(at..)
                    .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
                {
                    None => return false,
                    Some(n) if json[at + n] == b'"' => {
                        at += n;
                        break;
                    }
                    Some(n) => at += n + 1,
                }
            },
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        at += 1;
    }
    false
}

#[cfg(test)]
mod tests;
