//! A failed statement's parameters in an error message, as SQLAlchemy
//! writes them (its default, `hide_parameters = False`), which Python
//! SDKs send as the exception's value:
//!
//! ```text
//! (sqlite3.IntegrityError) UNIQUE constraint failed: users.email
//! [SQL: INSERT INTO users (email, password) VALUES (?, ?)]
//! [parameters: ('bob@example.com', 'Hunt3rTwo!')]
//! ```
//!
//! A parameter is a secret when its placeholder is: in the column list of
//! an `INSERT` under a sensitive column (`password`), or where the rules
//! redact a value (`SET password = ?`, `WHERE token = %s`). Parameters by
//! name (`%(password)s`, a mapping) are pairs the key rules already read.

use std::ops::Range;

use super::Scrubber;

/// The most parameters read from one tuple.
const MAX_PARAMETERS: usize = 256;

impl Scrubber {
    /// The ranges of `s` that hold secret parameters of the statement
    /// SQLAlchemy's message carries (empty when it carries none): the
    /// inside of a quoted one, or the whole of another.
    pub(super) fn sql_parameter_secrets(&self, s: &str) -> Vec<Range<usize>> {
        let Some((statement, parameters)) = statement_and_parameters(s) else {
            return Vec::new();
        };
        let placeholders = placeholders(&s[statement.clone()]);
        if placeholders.is_empty() {
            return Vec::new();
        }
        let mut secret = vec![false; placeholders.len()];
        // In the column list of an INSERT.
        for (i, column) in insert_columns(&s[statement.clone()], &placeholders) {
            if self.keys.is_sensitive(column) {
                secret[i] = true;
            }
        }
        // Where the rules redact a value: each placeholder as a stand-in.
        let text = &s[statement];
        let stand_in = |i: usize| format!("Zq{i}x7Kv");
        let mut probe = String::with_capacity(text.len() + 8 * placeholders.len());
        let mut copied = 0;
        for (i, range) in placeholders.iter().enumerate() {
            probe.push_str(&text[copied..range.start]);
            probe.push_str(&stand_in(i));
            copied = range.end;
        }
        probe.push_str(&text[copied..]);
        if let Some((scrubbed, _)) = self.scrub_text(&probe) {
            for (i, is) in secret.iter_mut().enumerate() {
                *is |= !scrubbed.contains(&stand_in(i));
            }
        }
        let items = tuple_items(s, parameters);
        items
            .into_iter()
            .enumerate()
            .filter(|(i, _)| secret.get(*i).copied().unwrap_or(false))
            .map(|(_, item)| item)
            .collect()
    }
}

/// Where the statement (`[SQL: ...]`) and its parameters' tuple
/// (`[parameters: (...)]`, the position of its `(`) are in `s`.
fn statement_and_parameters(s: &str) -> Option<(Range<usize>, usize)> {
    let at = memchr::memmem::find(s.as_bytes(), b"[parameters: (")?;
    let sql = memchr::memmem::rfind(&s.as_bytes()[..at], b"[SQL: ")?;
    let start = sql + "[SQL: ".len();
    let end = s[start..at].trim_end().strip_suffix(']')?.len() + start;
    Some((start..end, at + "[parameters: ".len()))
}

/// The positional placeholders of a statement, in order: `?`, `%s`, or
/// `$1`; outside quoted text.
fn placeholders(statement: &str) -> Vec<Range<usize>> {
    let b = statement.as_bytes();
    let mut out = Vec::new();
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < b.len() && out.len() < MAX_PARAMETERS {
        let c = b[i];
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                b'\'' | b'"' | b'`' => quote = Some(c),
                b'?' => out.push(i..i + 1),
                b'%' if b.get(i + 1) == Some(&b's') => {
                    out.push(i..i + 2);
                    i += 1;
                }
                b'$' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                    let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
                    out.push(i..i + 1 + digits);
                    i += digits;
                }
                _ => {}
            },
        }
        i += 1;
    }
    out
}

/// For an `INSERT INTO t (a, b) VALUES (?, ?), (?, ?)`: each placeholder
/// in a row of values (its index among `placeholders`) and the column it
/// fills.
fn insert_columns<'s>(statement: &'s str, placeholders: &[Range<usize>]) -> Vec<(usize, &'s str)> {
    let lower = statement.to_ascii_lowercase();
    let Some(insert) = lower.find("insert into") else {
        return Vec::new();
    };
    let Some(open) = lower[insert..].find('(').map(|i| insert + i) else {
        return Vec::new();
    };
    let Some(close) = lower[open..].find(')').map(|i| open + i) else {
        return Vec::new();
    };
    let columns: Vec<&str> = statement[open + 1..close]
        .split(',')
        .map(|c| c.trim().trim_matches(['"', '`', '[', ']']))
        .collect();
    if !lower[close + 1..].trim_start().starts_with("values") {
        return Vec::new();
    }
    // Each placeholder after the column list, by its place in its row.
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut column = 0usize;
    let b = statement.as_bytes();
    let mut next = placeholders
        .iter()
        .enumerate()
        .skip_while(|(_, r)| r.start < close)
        .peekable();
    let mut quote: Option<u8> = None;
    for (at, &c) in b.iter().enumerate().skip(close + 1) {
        while next.peek().is_some_and(|(_, r)| r.start < at) {
            next.next();
        }
        if let Some((i, r)) = next.peek() {
            if r.start == at && depth == 1 {
                if let Some(name) = columns.get(column) {
                    out.push((*i, *name));
                }
            }
        }
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                b'\'' | b'"' => quote = Some(c),
                b'(' => {
                    depth += 1;
                    if depth == 1 {
                        column = 0;
                    }
                }
                b')' => depth = depth.saturating_sub(1),
                b',' if depth == 1 => column += 1,
                _ => {}
            },
        }
    }
    out
}

/// The items of a Python tuple's repr that opens at `open` in `s` (`(`):
/// a quoted string's inside, or the whole of another item (a number,
/// `None`, `datetime.datetime(2024, 1, 1)`).
fn tuple_items(s: &str, open: usize) -> Vec<Range<usize>> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = open + 1;
    while i < b.len() && out.len() < MAX_PARAMETERS {
        while b.get(i) == Some(&b' ') {
            i += 1;
        }
        let start = i;
        // A string, perhaps `b'...'`: its inside.
        let prefixed = matches!(b.get(i), Some(b'b' | b'u' | b'r'))
            && matches!(b.get(i + 1), Some(b'\'' | b'"'));
        let quote_at = if prefixed { i + 1 } else { i };
        if let Some(&q @ (b'\'' | b'"')) = b.get(quote_at) {
            let mut j = quote_at + 1;
            while j < b.len() && b[j] != q {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            let end = j.min(b.len());
            out.push(quote_at + 1..end);
            i = end + 1;
        } else {
            let mut depth = 0usize;
            while i < b.len() {
                match b[i] {
                    b'(' | b'[' | b'{' => depth += 1,
                    b')' | b']' | b'}' if depth == 0 => break,
                    b')' | b']' | b'}' => depth -= 1,
                    b',' if depth == 0 => break,
                    _ => {}
                }
                i += 1;
            }
            let end = start + s[start..i].trim_end().len();
            if end > start {
                out.push(start..end);
            }
        }
        while b.get(i) == Some(&b' ') {
            i += 1;
        }
        match b.get(i) {
            Some(b',') => i += 1,
            _ => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_placeholders_and_tuples_are_read() {
        let s = "x\n[SQL: INSERT INTO users (email, password) VALUES (?, ?)]\n[parameters: ('a@b.co', 'pw\\'1', None, datetime.datetime(2024, 1, 1), 5)]";
        let (statement, open) = statement_and_parameters(s).unwrap();
        assert_eq!(
            &s[statement.clone()],
            "INSERT INTO users (email, password) VALUES (?, ?)"
        );
        let items: Vec<&str> = tuple_items(s, open).into_iter().map(|r| &s[r]).collect();
        assert_eq!(
            items,
            [
                "a@b.co",
                "pw\\'1",
                "None",
                "datetime.datetime(2024, 1, 1)",
                "5"
            ]
        );
        let p = placeholders("UPDATE t SET a = '?', b = ? WHERE c = %s AND d = $2");
        assert_eq!(p.len(), 3);
        let statement = "INSERT INTO users (name, \"password\") VALUES (?, ?), (?, ?)";
        let p = placeholders(statement);
        assert_eq!(
            insert_columns(statement, &p),
            [(0, "name"), (1, "password"), (2, "name"), (3, "password")]
        );
    }
}
