//! Scrubbing JSON of any shape and depth string by string, without a tree
//! and without recursion: a replay recording's rrweb events, whose DOM
//! snapshots nest as deep as the page did (past the event's depth limit,
//! and past what a recursive walk may take of a thread's stack).
//!
//! Each string value is decoded, scrubbed as text, and written back as a
//! JSON string; a value under a sensitive key is redacted whole, as in an
//! event. Keys, numbers and the structure are copied as they came, so the
//! output is JSON exactly when the input was. Scrubbing the whole text as
//! one string would not be: a rule's match may run across a quote or take
//! the `\` of an escape.

use super::path::Seg;
use super::text::Scrubbed;
use super::{names_typed_secret, redact_secret, Method, Redaction, Scrubber, NAMERS};

/// The text is not JSON by its bytes: something outside its strings is
/// neither structure, number nor literal. What it holds there could not
/// be scrubbed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotJson;

impl Scrubber {
    /// Scrubs the strings of JSON text; `Ok(None)` when nothing was
    /// redacted. Redactions are recorded under the key of their value
    /// (empty in a list). As in an event: a value under a sensitive key is
    /// redacted whole (an object's or a list's strings and numbers all; with
    /// `remove`, the whole value becomes `null`), and so is a `value` beside
    /// a sensitive `name` (`{"name": "password", "value": ...}`, an input's
    /// attributes in a DOM snapshot), in either order; a card's number
    /// written as a JSON number is masked. A string that does not decode (a
    /// lone surrogate escape, which `JSON.stringify` writes) is redacted
    /// whole: it cannot be read, so it is not kept.
    pub fn scrub_json_strings(&self, json: &[u8]) -> Result<Option<Scrubbed>, NotJson> {
        // What replaces which span of `json` (a string's quotes included).
        // An edit inside an earlier one (a string inside a removed object)
        // is skipped when they are applied.
        let mut edits: Vec<(usize, usize, Vec<u8>)> = Vec::new();
        let mut redactions: Vec<Redaction> = Vec::new();
        // How many objects and lists enclose the cursor.
        let mut depth = 0usize;
        // Whether a value (or a key) was just passed: a `,` or `:` must
        // come next, or a close.
        let mut after_value = false;
        // Whether the last mark was a `,` (a close may not follow it).
        let mut after_comma = false;
        // The last key read, while its value is next.
        let mut key: Option<String> = None;
        // Inside a value under a sensitive key: its key, the depth it
        // opened at, and where it opened.
        let mut secret: Option<(String, usize, usize)> = None;
        // The depths of the objects where a sensitive name was given, and
        // of those with a named value's string (where it lies, and its
        // edit if it has one, and its key): innermost last.
        let mut named: Vec<(usize, bool)> = Vec::new();
        let mut named_values: Vec<(usize, usize, usize, Option<usize>, String)> = Vec::new();
        let mut nodes = Nodes::default();
        let mut at = 0;
        while at < json.len() {
            let byte = json[at];
            let starts_value =
                matches!(byte, b'"' | b'{' | b'[' | b'-' | b'0'..=b'9' | b'a'..=b'z');
            if starts_value && after_value {
                return Err(NotJson);
            }
            after_comma &= !starts_value;
            match byte {
                b'"' => {}
                b'{' | b'[' => {
                    let under_name = key.as_deref().is_some_and(|k| names(&named, depth, k));
                    let opens_secret = secret.is_none()
                        && (under_name || key.as_deref().is_some_and(|k| self.holds_secrets(k)));
                    if opens_secret {
                        secret = Some((key.take().unwrap_or_default(), depth, at));
                    }
                    // A value whose name may come after it: kept in mind.
                    let key = key.take();
                    let attributes = key.as_deref() == Some("attributes");
                    let named_value = key
                        .filter(|k| secret.is_none() && is_named_value(k))
                        .map(|k| (at, k));
                    nodes.open(attributes, named_value);
                    depth += 1;
                    at += 1;
                    continue;
                }
                b'}' | b']' => {
                    if after_comma || depth == 0 {
                        return Err(NotJson);
                    }
                    key = None;
                    after_value = true;
                    // An input's text, redacted now that its node's id is known.
                    let named_inside = named.last().is_some_and(|n| n.0 == depth);
                    let (text, named_value) = nodes.close(named_inside);
                    if let Some((from, to, edit)) = text {
                        if let Some(new) = self.redacted(&json[from..=to]) {
                            redactions.push(self.secret_redaction("text", self.password_method));
                            match edit {
                                Some(i) => edits[i] = (from, to, new),
                                None => edits.push((from, to, new)),
                            }
                        }
                    }
                    depth -= 1;
                    while named.last().is_some_and(|n| n.0 > depth) {
                        named.pop();
                    }
                    while named_values.last().is_some_and(|v| v.2 > depth) {
                        named_values.pop();
                    }
                    if let Some((from, key)) = named_value {
                        named_values.push((from, at, depth, None, key));
                    }
                    if let Some((under, _, from)) = secret.take_if(|s| s.1 == depth) {
                        let method = self.password_method;
                        let inside = &json[from + 1..at];
                        let hides = inside.iter().any(|b| !b.is_ascii_whitespace());
                        if method == Method::Remove {
                            edits.push((from, at, b"null".to_vec()));
                        }
                        if hides {
                            redactions.push(self.secret_redaction(&under, method));
                        }
                    }
                    at += 1;
                    continue;
                }
                b',' | b':' => {
                    if !after_value {
                        return Err(NotJson);
                    }
                    after_value = false;
                    after_comma = byte == b',';
                    if byte == b',' {
                        key = None;
                    }
                    at += 1;
                    continue;
                }
                b' ' | b'\t' | b'\n' | b'\r' => {
                    at += 1;
                    continue;
                }
                b'0'..=b'9' | b'-' => {
                    let end = json[at..]
                        .iter()
                        .position(|b| !matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                        .map_or(json.len(), |n| at + n);
                    let number = &json[at..end];
                    if !is_number(number) {
                        return Err(NotJson);
                    }
                    after_value = true;
                    let under = key.take().unwrap_or_default();
                    if under == "id" {
                        nodes.id(number);
                    }
                    let named_here = names(&named, depth, &under) || nodes.holds_secret(&under);
                    if secret.is_some() || named_here || self.keys.is_sensitive(&under) {
                        // As the tree writes a number under a sensitive key: a string.
                        let text = String::from_utf8_lossy(number);
                        let new = super::method::redact_text(
                            self.password_method,
                            &text,
                            super::FILTERED,
                            self.hash_key.as_deref(),
                        );
                        if secret.is_none() {
                            redactions.push(self.secret_redaction(&under, self.password_method));
                        }
                        edits.push((at, end - 1, quoted(&new)));
                    } else if let Some((new, rule)) = std::str::from_utf8(number)
                        .ok()
                        .and_then(|digits| self.card_number(digits, &[Seg::Key(&under)]))
                    {
                        // A card's digits as a number, as in an event.
                        redactions.push(Redaction {
                            rule: rule.name.clone(),
                            path: under,
                            method: rule.method,
                        });
                        edits.push((at, end - 1, quoted(&new)));
                    }
                    at = end;
                    continue;
                }
                b'a'..=b'z' => {
                    // A literal, whole: it hides nothing.
                    let end = json[at..]
                        .iter()
                        .position(|b| !b.is_ascii_lowercase())
                        .map_or(json.len(), |n| at + n);
                    if !matches!(&json[at..end], b"true" | b"false" | b"null") {
                        return Err(NotJson);
                    }
                    key = None;
                    after_value = true;
                    at = end;
                    continue;
                }
                _ => return Err(NotJson),
            }
            // A string: json[at..=end], its contents between.
            let start = at;
            let mut end = start + 1;
            loop {
                if end > json.len() {
                    return Err(NotJson);
                }
                match memchr::memchr2(b'"', b'\\', &json[end..]) {
                    None => return Err(NotJson),
                    Some(i) if json[end + i] == b'"' => {
                        end += i;
                        break;
                    }
                    Some(i) => end += i + 2,
                }
            }
            at = end + 1;
            after_value = true;
            let raw = &json[start + 1..end];
            let decoded: Option<String> = match memchr::memchr(b'\\', raw) {
                None => std::str::from_utf8(raw).ok().map(str::to_owned),
                Some(_) => serde_json::from_slice(&json[start..=end]).ok(),
            };
            let colon = json[at..]
                .iter()
                .find(|b| !b.is_ascii_whitespace())
                .is_some_and(|&b| b == b':');
            if colon {
                key = decoded;
                continue;
            }
            let under = key.take().unwrap_or_default();
            if secret.is_some() {
                // Inside a sensitive key's object or list: every string.
                if let Some(new) = self.redacted(&json[start..=end]) {
                    edits.push((start, end, new));
                }
                continue;
            }
            let Some(text) = decoded else {
                redactions.push(self.secret_redaction(&under, Method::Replace));
                edits.push((start, end, quoted(super::FILTERED)));
                continue;
            };
            let is_named_value = is_named_value(&under);
            let names_secret = (names_input(&under) && self.holds_secrets(&label_key(&text)))
                || is_secret_input(&under, &text)
                || names_typed_secret(&under, &text);
            if names_secret {
                // What it names: a JSON Web Key's members, or a value.
                let by_type = names_typed_secret(&under, &text);
                // The values came first (a JSON Web Key's members sorted
                // before its `kty`): redacted now, in place of what their
                // scrubbing wrote, if anything. (Once per namer and object:
                // a repeated name finds them gone.)
                if !named.contains(&(depth, by_type)) {
                    named.push((depth, by_type));
                    let here = named_values
                        .iter()
                        .rev()
                        .take_while(|v| v.2 == depth)
                        .count();
                    let (others, now): (Vec<_>, Vec<_>) = named_values
                        .drain(named_values.len() - here..)
                        .partition(|v| super::is_typed_member(&v.4) != by_type);
                    named_values.extend(others);
                    for (from, to, _, edit, key) in now {
                        if let Some(new) = self.redacted(&json[from..=to]) {
                            redactions.push(self.secret_redaction(&key, self.password_method));
                            match edit {
                                Some(i) => edits[i] = (from, to, new),
                                None => edits.push((from, to, new)),
                            }
                        }
                    }
                }
            }
            let named_here = names(&named, depth, &under) || nodes.holds_secret(&under);
            if named_here || self.holds_secrets(&under) {
                if let Some(new) = self.redacted(&json[start..=end]) {
                    redactions.push(self.secret_redaction(&under, self.password_method));
                    edits.push((start, end, new));
                }
                continue;
            }
            if is_css(&under, &text) {
                // A stylesheet (a DOM snapshot's `_cssText`, a `<style>`'s
                // text, a `style` attribute): `.cookie-banner:hover{...}`
                // reads as `key: value` text, and redacting it would break
                // the page's look in the replay. It holds no typed data.
                continue;
            }
            let edit = if let Some((new, rule)) = self.typed_digits(&under, &text) {
                redactions.push(Redaction {
                    rule: rule.name.clone(),
                    path: under.clone(),
                    method: rule.method,
                });
                edits.push((start, end, quoted(&new)));
                Some(edits.len() - 1)
            } else {
                let mut found = Vec::new();
                self.scrub_str(&text, &[], &mut found).map(|new| {
                    redactions.extend(found.into_iter().map(|(rule, method)| Redaction {
                        rule,
                        path: under.clone(),
                        method,
                    }));
                    edits.push((start, end, quoted(&new)));
                    edits.len() - 1
                })
            };
            if under == "text" {
                nodes.text(start, end, edit);
            }
            if is_named_value {
                named_values.push((start, end, depth, edit, under));
            }
        }
        if depth != 0 || after_comma {
            // Cut off: not JSON.
            return Err(NotJson);
        }
        if edits.is_empty() {
            return Ok(None);
        }
        // In the order of the text (a value redacted for a name after it
        // was pushed late); an edit inside one applied is skipped.
        edits.sort_by_key(|(start, _, _)| *start);
        let mut out = Vec::with_capacity(json.len());
        let mut copied = 0;
        for (start, end, new) in edits {
            if start < copied {
                continue;
            }
            out.extend_from_slice(&json[copied..start]);
            out.extend_from_slice(&new);
            copied = end + 1;
        }
        out.extend_from_slice(&json[copied..]);
        Ok(Some((out, redactions)))
    }

    /// An input's text as it is typed, one event per keystroke (rrweb's
    /// input events' `text`): a card's number on its way
    /// to 16 digits fails the Luhn check (`4111 1111 1111 111`, all but
    /// one digit), so 12 digits or more alone, with spaces, dashes or dots
    /// between, are redacted as the `creditcard` rule redacts a card,
    /// whatever their checksum. `None` for anything else.
    fn typed_digits(&self, key: &str, text: &str) -> Option<(String, &super::PatternRule)> {
        if key != "text" || text.len() > 32 {
            return None;
        }
        let digits = text.bytes().filter(u8::is_ascii_digit).count();
        let typed = (12..=19).contains(&digits)
            && text
                .bytes()
                .all(|c| c.is_ascii_digit() || b" -.".contains(&c))
            && text.as_bytes()[0].is_ascii_digit();
        if !typed {
            return None;
        }
        let rule = self
            .patterns
            .iter()
            .find(|r| r.validator == super::rules::Validator::Luhn)?;
        let hash_key = self.hash_key.as_deref();
        let new = super::method::redact_text(rule.method, text, &rule.replacement, hash_key);
        Some((new.into_owned(), rule))
    }

    /// What the JSON string `quoted_text` becomes redacted whole, as a value
    /// under a sensitive key is (`null` with `remove`); `None` when that
    /// changes nothing (already `[Filtered]`). An object or list given here
    /// (a value whose name came after it) becomes one string.
    fn redacted(&self, quoted_text: &[u8]) -> Option<Vec<u8>> {
        // An object or list (a value before its name): its text, whole.
        let text: String = match quoted_text.first() {
            Some(b'"') => serde_json::from_slice(quoted_text).unwrap_or_default(),
            _ => String::from_utf8_lossy(quoted_text).into_owned(),
        };
        let new = redact_secret(&text, self.password_method, self.hash_key.as_deref())?;
        Some(match self.password_method {
            Method::Remove => b"null".to_vec(),
            _ => quoted(&new),
        })
    }

    /// Whether strings, objects and lists under `key` are secrets: under a
    /// sensitive key, and under a plural `tokens` (whose numbers are counts,
    /// `max_tokens: 120`; see [`super::rules::KeyMatcher::classify`]).
    fn holds_secrets(&self, key: &str) -> bool {
        !key.is_empty() && self.keys.classify(key) != super::rules::Sensitivity::None
    }

    fn secret_redaction(&self, key: &str, method: Method) -> Redaction {
        Redaction {
            rule: self.password_rule.clone(),
            path: key.to_owned(),
            method,
        }
    }
}

impl Scrubber {
    /// Scrubs what may be JSON (an attachment by its name or first byte):
    /// string by string when it is ([`Scrubber::scrub_json_strings`]: a
    /// rule's match cannot run across a quote, so JSON stays JSON), else as
    /// text ([`Scrubber::scrub_bytes`]).
    pub fn scrub_json_or_bytes(&self, bytes: &[u8]) -> Option<Scrubbed> {
        match self.scrub_json_strings(bytes) {
            Ok(scrubbed) => scrubbed,
            Err(NotJson) => self.scrub_bytes(bytes),
        }
    }
}

/// Whether bytes are a JSON number: `-`, an integer part without leading
/// zeros, then a fraction and an exponent, each optional.
fn is_number(b: &[u8]) -> bool {
    let digits = |b: &[u8], at: usize| b[at..].iter().take_while(|c| c.is_ascii_digit()).count();
    let mut at = usize::from(b.first() == Some(&b'-'));
    match digits(b, at) {
        0 => return false,
        n if n > 1 && b[at] == b'0' => return false,
        n => at += n,
    }
    if b.get(at) == Some(&b'.') {
        match digits(b, at + 1) {
            0 => return false,
            n => at += 1 + n,
        }
    }
    if matches!(b.get(at), Some(b'e' | b'E')) {
        at += 1;
        if matches!(b.get(at), Some(b'+' | b'-')) {
            at += 1;
        }
        match digits(b, at) {
            0 => return false,
            n => at += n,
        }
    }
    at == b.len()
}

/// rrweb's nodes by their ids, within one recording: an input whose
/// attributes in a snapshot mark it secret (a sensitive `name`,
/// `type="password"`, a password, one-time-code or card `autocomplete`) has
/// its id; the input events that carry that id (`{"source": 5, "text":
/// ..., "id": 57}`) and the attribute changes of its node (`{"id": 57,
/// "attributes": {"value": ...}}`) then hold a secret. What it needs of
/// each open object or list is kept here, innermost last.
///
/// The snapshot comes first in the segment that holds it; a later
/// segment's events carry ids of a snapshot the relay has not seen in that
/// request, and are scrubbed as any other text is.
#[derive(Default)]
struct Nodes {
    /// The ids of the inputs that hold secrets.
    secret: std::collections::HashSet<u64>,
    /// The open objects and lists.
    open: Vec<Container>,
}

/// A string's span (its quotes included), and its edit if it has one.
type Edited = (usize, usize, Option<usize>);

#[derive(Default)]
struct Container {
    /// It is an `attributes` object.
    attributes: bool,
    /// Its `id`.
    id: Option<u64>,
    /// Its `attributes` mark it secret.
    secret_attributes: bool,
    /// Its `text` string's span, and its edit if it has one.
    text: Option<Edited>,
    /// It is a `value` (see [`is_named_value`]) whose name has not been
    /// given: where it opened, and its key.
    named_value: Option<(usize, String)>,
}

impl Nodes {
    /// An object or list opens, under `attributes` or not; as a value a
    /// name may name (where, and its key).
    fn open(&mut self, attributes: bool, named_value: Option<(usize, String)>) {
        self.open.push(Container {
            attributes,
            named_value,
            ..Container::default()
        });
    }

    /// The innermost object's `id`.
    fn id(&mut self, number: &[u8]) {
        let id = std::str::from_utf8(number)
            .ok()
            .and_then(|n| n.parse().ok());
        if let (Some(open), Some(id)) = (self.open.last_mut(), id) {
            open.id = Some(id);
        }
    }

    /// The innermost object's `text`: where it lies, and its edit.
    fn text(&mut self, start: usize, end: usize, edit: Option<usize>) {
        if let Some(open) = self.open.last_mut() {
            open.text = Some((start, end, edit));
        }
    }

    /// The innermost object or list closes; `named_inside` says a secret
    /// was named in it. Its `text`, when its id is a secret input's; and
    /// where it opened and its key, when it is a value a name may name.
    fn close(&mut self, named_inside: bool) -> (Option<Edited>, Option<(usize, String)>) {
        let Some(closed) = self.open.pop() else {
            return (None, None);
        };
        if closed.attributes && named_inside {
            if let Some(node) = self.open.last_mut() {
                node.secret_attributes = true;
            }
        }
        if closed.secret_attributes {
            self.secret.extend(closed.id);
        }
        let text = closed
            .text
            .filter(|_| closed.id.is_some_and(|id| self.secret.contains(&id)));
        (text, closed.named_value)
    }

    /// Whether a member `key` of the innermost object holds a secret by its
    /// node: a `value` among the attributes of a secret input's node.
    fn holds_secret(&self, key: &str) -> bool {
        let [.., node, attributes] = self.open.as_slice() else {
            return false;
        };
        !self.secret.is_empty()
            && key == "value"
            && attributes.attributes
            && node.id.is_some_and(|id| self.secret.contains(&id))
    }
}

/// Whether `key`, in the object at `depth`, holds a value its siblings
/// named a secret: a [`is_named_value`] by a name, a JSON Web Key's member
/// by its `kty` (each kind by its own: a `d` beside a sensitive `name` is
/// a metric's or a flag's, not a key's).
fn names(named: &[(usize, bool)], depth: usize, key: &str) -> bool {
    is_named_value(key)
        && named
            .iter()
            .rev()
            .take_while(|n| n.0 == depth)
            .any(|n| n.1 == super::is_typed_member(key))
}

/// Whether a key holds the value its sibling `name` names: as in an event
/// (`value`), and a `<meta>` element's `content` (`<meta name="csrf-token"
/// content="...">` in a DOM snapshot's head). A JSON Web Key's private
/// members count too, their `kty` being the name.
fn is_named_value(key: &str) -> bool {
    super::is_named_value(key) || key == "content"
}

/// Whether a key's text names its object's value, as a `name` does: an
/// event's namers, and the attributes that name an input without a `name`
/// (a React form's `id`, `placeholder` or `aria-label`: `id="cvc"`).
fn names_input(key: &str) -> bool {
    NAMERS.contains(&key) || matches!(key, "id" | "placeholder" | "aria-label")
}

/// A label's words as a key (`Security code`: `Security_code`), as the
/// key matcher reads keys.
fn label_key(text: &str) -> std::borrow::Cow<'_, str> {
    match text.contains(' ') {
        true => text.trim().replace(' ', "_").into(),
        false => text.into(),
    }
}

/// Whether an input's attribute says its value is a secret, whatever its
/// name: `type="password"`, or an `autocomplete` for a password, a one-time
/// code or a card (`current-password`, `one-time-code`, `cc-number`).
fn is_secret_input(key: &str, text: &str) -> bool {
    match key {
        "type" => text.eq_ignore_ascii_case("password"),
        "autocomplete" => {
            let t = text.to_ascii_lowercase();
            t.contains("password") || t.contains("one-time-code") || t.starts_with("cc-")
        }
        _ => false,
    }
}

/// Whether a string is a stylesheet's text: under a key rrweb writes CSS
/// under (`_cssText`, `style`, a stylesheet rule's `rule`, `cssText`), or
/// a `<style>` element's text (`textContent` that opens a block and ends
/// one).
fn is_css(key: &str, text: &str) -> bool {
    match key {
        "_cssText" | "cssText" | "style" | "rule" => true,
        "textContent" => text.contains('{') && text.trim_end().ends_with('}'),
        _ => false,
    }
}

/// `text` as a JSON string, quotes included.
fn quoted(text: &str) -> Vec<u8> {
    serde_json::to_vec(text).expect("a string always serializes")
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::scrub::Settings;

    fn settings() -> Settings {
        Settings {
            defaults: true,
            scrub_ip_addresses: true,
            sensitive_fields: vec![],
            safe_fields: vec![],
            hash_key: None,
            methods: vec![],
            rules: vec![],
        }
    }

    fn scrubber() -> Scrubber {
        Scrubber::new(&settings()).unwrap()
    }

    #[test]
    fn strings_are_scrubbed_and_the_json_kept() {
        let s = scrubber();
        let events = json!([
            {"type": 4, "data": {"href": "https://app.example.com/reset/4f9c2a7be1d84c3f9a0b"}},
            {"type": 5, "data": {"payload": {"message": "Sent link \"https://app.example.com/reset/4f9c2a7be1d84c3f9a0b\" to bob@example.com"}}},
            {"type": 3, "data": {"attributes": {"password": "hunter2", "token": 7, "note": "ok"}}},
            {"origin": "https://app.example.com", "path": "/account/settings", "user": "bob"},
            {"text": "Use the default password below"}, {"type": 3, "text": "Welcome \u{e9} \\ \u{1}"},
        ]);
        let text = serde_json::to_vec(&events).unwrap();
        let (out, redactions) = s.scrub_json_strings(&text).unwrap().unwrap();
        let out: Value = serde_json::from_slice(&out).expect("still JSON");
        assert_eq!(
            out[0]["data"]["href"],
            "https://app.example.com/reset/[urltoken]"
        );
        assert_eq!(
            out[1]["data"]["payload"]["message"],
            "Sent link \"https://app.example.com/reset/[urltoken]\" to [email]"
        );
        assert_eq!(out[2]["data"]["attributes"]["password"], "[Filtered]");
        assert_eq!(
            out[2]["data"]["attributes"]["token"], "[Filtered]",
            "as the tree does"
        );
        assert_eq!(out[0]["type"], 4, "numbers are copied");
        assert_eq!(out[3], events[3], "no rule runs across strings");
        assert_eq!(out[4], events[4]);
        assert_eq!(out[5], events[5]);
        assert!(redactions.iter().any(|r| r.path == "password"));
        // A card's number as a JSON number, as the tree pass reads it.
        let (out, _) = s
            .scrub_json_strings(br#"{"n": 4111111111111111, "id": 4111111111111112, "x": -1.5e3}"#)
            .unwrap()
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"n": "****************", "id": 4111111111111112, "x": -1.5e3}"#
        );
        // A value named by its sibling, before or after it.
        let text = br#"[{"name":"password","value":"a b"},{"value":"c@d.io","type":"password","name":"pwd"},{"name":"q","value":"x"}]"#;
        let (out, _) = s.scrub_json_strings(text).unwrap().unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"[{"name":"password","value":"[Filtered]"},{"value":"[Filtered]","type":"password","name":"pwd"},{"name":"q","value":"x"}]"#
        );
        // Nothing to redact: no copy. Deeper than any tree may be: no recursion.
        let deep = format!("{}\"bob\"{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(s.scrub_json_strings(deep.as_bytes()), Ok(None));
        let deep = format!(
            "{}\"bob@example.com\"{}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let (out, _) = s.scrub_json_strings(deep.as_bytes()).unwrap().unwrap();
        assert!(String::from_utf8(out).unwrap().contains("\"[email]\""));
    }

    /// What a sensitive key holds, whole, as the tree pass redacts it;
    /// with `remove`, `null` in its place.
    #[test]
    fn sensitive_keys_objects_and_lists_are_redacted_whole() {
        let text = br#"{"password": {"a": "x", "n": 5, "ok": true, "e": {}}, "token": ["y", 7], "auth": [], "max_tokens": 120, "input_tokens": "n/a", "next": {"name": "q", "x": {}, "value": "kept"}, "m": {"value": "s", "x": [1], "name": "pwd"}}"#;
        let (out, redactions) = scrubber().scrub_json_strings(text).unwrap().unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"password": {"a": "[Filtered]", "n": "[Filtered]", "ok": true, "e": {}}, "token": ["[Filtered]", "[Filtered]"], "auth": [], "max_tokens": 120, "input_tokens": "[Filtered]", "next": {"name": "q", "x": {}, "value": "kept"}, "m": {"value": "[Filtered]", "x": [1], "name": "pwd"}}"#
        );
        let mut paths: Vec<&str> = redactions.iter().map(|r| r.path.as_str()).collect();
        paths.sort();
        assert_eq!(paths, ["input_tokens", "password", "token", "value"]);
        let mut settings = settings();
        settings.methods = vec![("password".into(), Method::Remove)];
        let remove = Scrubber::new(&settings).unwrap();
        let (out, _) = remove.scrub_json_strings(text).unwrap().unwrap();
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out["password"], Value::Null);
        assert_eq!(out["token"], Value::Null);
        assert_eq!(out["m"]["value"], Value::Null);
    }

    /// Stylesheets stay as they are: their selectors and properties read
    /// as `key: value` text.
    #[test]
    fn stylesheets_are_left_alone() {
        let css = ".cookie-consent__btn:hover{background:#0055ff}.password-input:focus{outline:0}";
        let text = serde_json::to_vec(&json!([
            {"type": 2, "attributes": {"_cssText": css, "style": "--session-color:#333"}},
            {"type": 3, "textContent": css, "isStyle": true},
            {"source": 8, "adds": [{"rule": css, "index": 0}]},
            {"type": 3, "textContent": "token: abc123 for bob@example.com"},
        ]))
        .unwrap();
        let (out, _) = scrubber().scrub_json_strings(&text).unwrap().unwrap();
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out[0]["attributes"]["_cssText"], css);
        assert_eq!(out[0]["attributes"]["style"], "--session-color:#333");
        assert_eq!(out[1]["textContent"], css);
        assert_eq!(out[2]["adds"][0]["rule"], css);
        assert_eq!(out[3]["textContent"], "token: [Filtered] for [email]");
    }

    /// A name and its value in one object, past objects nested between
    /// them or beside them, in either order, and a value that is no string.
    #[test]
    fn names_give_their_values_at_any_depth() {
        let text = br#"[{"type":"password","value":"t1"},{"value":"918273","autocomplete":"one-time-code"},{"name":"csrf-token","content":"c5rf"},{"name":"password","x":{"name":"token"},"value":"s1"},{"value":"s2","a":{"value":"t"},"name":"pwd"},{"name":"secret","value":["s3",4]},{"name":"pin","value":1234},{"name":"q","value":"kept"}]"#;
        let (out, _) = scrubber().scrub_json_strings(text).unwrap().unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"[{"type":"password","value":"[Filtered]"},{"value":"[Filtered]","autocomplete":"one-time-code"},{"name":"csrf-token","content":"[Filtered]"},{"name":"password","x":{"name":"token"},"value":"[Filtered]"},{"value":"[Filtered]","a":{"value":"t"},"name":"pwd"},{"name":"secret","value":["[Filtered]","[Filtered]"]},{"name":"pin","value":"[Filtered]"},{"name":"q","value":"kept"}]"#
        );
        // An object or list before its name: one string now.
        let before = br#"[{"value":["s4",{"a":"s5"}],"k":1,"name":"password"},{"value":{"a":"kept"},"name":"q"},{"oth":[{"r":"s6"}],"kty":"RSA"}]"#;
        let (out, _) = scrubber().scrub_json_strings(before).unwrap().unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"[{"value":"[Filtered]","k":1,"name":"password"},{"value":{"a":"kept"},"name":"q"},{"oth":"[Filtered]","kty":"RSA"}]"#
        );
        // Many values before their names: each found at once, not by a search.
        let many = format!(
            "[{}{{}}]",
            r#"{"value":"x","name":"password"},"#.repeat(20_000)
        );
        let (out, redactions) = scrubber()
            .scrub_json_strings(many.as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(redactions.len(), 20_000);
        assert!(!String::from_utf8(out).unwrap().contains(r#""x""#));
    }

    /// A card's number typed into an input, keystroke by keystroke: each
    /// event's text of 12 digits or more is masked, Luhn or not; shorter
    /// ones (a phone number), text with letters, and other keys stay.
    #[test]
    fn numbers_typed_into_inputs_are_masked_before_they_are_whole() {
        let event = |text: &str| {
            format!(
                r#"{{"type":3,"data":{{"source":5,"text":"{text}","isChecked":false,"id":57}}}}"#
            )
        };
        for (typed, want) in [
            ("4111 1111 1111 111", Some("**** **** **** ***")),
            ("411111111111", Some("************")),
            ("4111-1111-1111-1111", Some("****-****-****-****")),
            ("+1 415 555 0134", None),
            ("4111 1111 111", None),
            ("order 4111 1111 1111 111", None),
        ] {
            let got = scrubber()
                .scrub_json_strings(event(typed).as_bytes())
                .unwrap();
            let got = got.map(|(out, _)| String::from_utf8(out).unwrap());
            assert_eq!(got, want.map(event), "{typed}");
        }
        let other_key = br#"{"value":"4111 1111 1111 111"}"#;
        assert_eq!(scrubber().scrub_json_strings(other_key), Ok(None));
    }

    /// An input that its snapshot marks secret (by name, type or
    /// autocomplete, its `id` before or after its attributes) keeps its
    /// secret in the input events and attribute changes that name it by
    /// id alone; other inputs' text stays.
    #[test]
    fn input_events_of_secret_inputs_are_redacted_by_node_id() {
        let text = br#"[{"type":2,"data":{"node":{"type":0,"childNodes":[
            {"type":2,"tagName":"input","attributes":{"name":"cvc","type":"text"},"childNodes":[],"id":57},
            {"type":2,"id":58,"tagName":"input","attributes":{"autocomplete":"cc-number"},"childNodes":[]},
            {"type":2,"tagName":"input","attributes":{"name":"q","value":"shoes"},"childNodes":[],"id":59}],"id":1}}},
        {"type":3,"data":{"source":5,"text":"737","isChecked":false,"id":57}},
        {"type":3,"data":{"source":5,"text":"4111 1111","isChecked":false,"id":58}},
        {"type":3,"data":{"source":5,"text":"red shoes","isChecked":false,"id":59}},
        {"type":3,"data":{"source":0,"texts":[],"attributes":[{"id":57,"attributes":{"value":"7373"}},{"id":59,"attributes":{"value":"blue"}}],"removes":[],"adds":[
            {"parentId":1,"nextId":null,"node":{"type":2,"tagName":"input","attributes":{"type":"password"},"childNodes":[],"id":60}}]}},
        {"type":3,"data":{"source":5,"text":"Hunt3r!","isChecked":false,"id":60}}]"#;
        let (out, redactions) = scrubber().scrub_json_strings(text).unwrap().unwrap();
        let out = String::from_utf8(out).unwrap();
        for secret in ["737", "4111 1111", "7373", "Hunt3r!"] {
            assert!(!out.contains(&format!("\"{secret}\"")), "{secret} in {out}");
        }
        for kept in ["shoes", "red shoes", "blue"] {
            assert!(out.contains(&format!("\"{kept}\"")), "{kept} not in {out}");
        }
        assert_eq!(out.matches("[Filtered]").count(), 4, "{out}");
        assert!(redactions.iter().any(|r| r.path == "text"));
        // An input named by its `id`, `placeholder` or `aria-label` alone.
        let unnamed = br#"[{"attributes":{"id":"cvc","value":"737"}},{"attributes":{"placeholder":"Password","value":"pw1"}},{"attributes":{"aria-label":"Security code","value":"738"}},{"attributes":{"placeholder":"Search","value":"shoes"}}]"#;
        let (out, _) = scrubber().scrub_json_strings(unnamed).unwrap().unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(out.matches("[Filtered]").count(), 3, "{out}");
        assert!(out.contains(r#""shoes""#), "{out}");
        // Without the snapshot (a later segment), the ids explain nothing.
        let later = br#"[{"type":3,"data":{"source":5,"text":"737","isChecked":false,"id":57}}]"#;
        assert_eq!(scrubber().scrub_json_strings(later), Ok(None));
    }

    #[test]
    fn what_is_not_json_is_refused_and_what_does_not_decode_redacted() {
        let s = scrubber();
        for text in [
            &b"alice@example.com"[..],
            b"[\"a\"] x",
            b"[\"unterminated",
            b"[\"a\\",
            br#"{"cc": 4111-1111-1111-1111}"#,
            b"[4111 1111 1111 1111]",
            br#"{"ip": 10.0.0.1}"#,
            b"[01]",
            b"[truth]",
            br#"{"a" "b"}"#,
            br#"[{"type":3},{"type":3,"#,
            b"[1,]",
            b"[1]]",
        ] {
            assert_eq!(s.scrub_json_strings(text), Err(NotJson), "{text:?}");
        }
        let (out, _) = s
            .scrub_json_strings(br#"["\ud800 bob@example.com", "ok"]"#)
            .unwrap()
            .unwrap();
        assert_eq!(out, br#"["[Filtered]", "ok"]"#);
    }
}
