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

/// The most parameters read for one statement.
const MAX_PARAMETERS: usize = 4096;

/// The longest statement read: past it, the parameters are left to the
/// other rules (a statement is a line or a few; a longer "statement" is a
/// log's text between two messages).
const MAX_STATEMENT: usize = 64 << 10;

impl Scrubber {
    /// The ranges of `s` that hold secret parameters of the statements
    /// SQLAlchemy's messages carry (empty when they carry none): the
    /// inside of a quoted one, or the whole of another. Each
    /// `[parameters: ...]` (a tuple, or a list of them for `executemany`)
    /// goes with the `[SQL: ...]` before it.
    pub(super) fn sql_parameter_secrets(&self, s: &str) -> Vec<Range<usize>> {
        let mut out = Vec::new();
        let mut from = 0;
        while let Some((statement, parameters, next)) = statement_and_parameters(s, from) {
            from = next;
            let secret = self.secret_placeholders(&s[statement]);
            if !secret.iter().any(|&is| is) {
                continue;
            }
            for tuple in tuples(s, parameters) {
                for (i, item) in tuple_items(s, tuple).into_iter().enumerate() {
                    if secret.get(i).copied().unwrap_or(false) {
                        out.push(item);
                    }
                }
            }
        }
        out
    }

    /// Which of a statement's placeholders hold secrets: those that fill a
    /// sensitive column of an INSERT, and those where the rules redact a
    /// value (see [`Scrubber::redacted_stand_ins`]: `SET password = ?`).
    fn secret_placeholders(&self, statement: &str) -> Vec<bool> {
        let placeholders = placeholders(statement);
        let Some(count) = placeholders.iter().map(|(_, i)| i + 1).max() else {
            return Vec::new();
        };
        let mut secret = vec![false; count];
        for (i, column) in insert_columns(statement, &placeholders) {
            if self.keys.is_sensitive(column) {
                secret[i] = true;
            }
        }
        let redacted = self.redacted_stand_ins(statement, &placeholders, count);
        for (is, redacted) in secret.iter_mut().zip(redacted) {
            *is |= redacted;
        }
        secret
    }
}

/// The next statement (`[SQL: ...]`) from `from` on, where its parameters
/// (`[parameters: ` then a tuple or a list) open, and where to look for
/// the next. A statement past [`MAX_STATEMENT`] is skipped.
fn statement_and_parameters(s: &str, mut from: usize) -> Option<(Range<usize>, usize, usize)> {
    loop {
        let at = from + memchr::memmem::find(&s.as_bytes()[from..], b"[parameters: ")?;
        let open = at + "[parameters: ".len();
        let next = open;
        let Some(sql) = memchr::memmem::rfind(&s.as_bytes()[from..at], b"[SQL: ") else {
            from = next;
            continue;
        };
        let start = from + sql + "[SQL: ".len();
        let Some(statement) = s[start..at].trim_end().strip_suffix(']') else {
            from = next;
            continue;
        };
        if statement.len() > MAX_STATEMENT || !matches!(s.as_bytes().get(open), Some(b'(' | b'[')) {
            from = next;
            continue;
        }
        return Some((start..start + statement.len(), open, next));
    }
}

/// The positional placeholders of a statement, in order, outside quoted
/// text, each with the parameter it takes. Of one style: `$n` (the n-th
/// parameter, whatever its place) if there is one, else `%s`, else `?` (so
/// a `?` of PostgreSQL's JSON operators in a `%s` statement is none).
fn placeholders(statement: &str) -> Vec<(Range<usize>, usize)> {
    let b = statement.as_bytes();
    let mut found: Vec<(u8, Range<usize>, Option<usize>)> = Vec::new();
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < b.len() && found.len() < MAX_PARAMETERS {
        let c = b[i];
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        let (kind, end, index) = match c {
            b'\'' | b'"' | b'`' => {
                quote = Some(c);
                i += 1;
                continue;
            }
            b'?' => (b'?', i + 1, None),
            b'%' if b.get(i + 1) == Some(&b's') => (b'%', i + 2, None),
            b'$' if b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
                let n = statement[i + 1..i + 1 + digits].parse::<usize>().ok();
                (b'$', i + 1 + digits, n.and_then(|n| n.checked_sub(1)))
            }
            _ => {
                i += 1;
                continue;
            }
        };
        found.push((kind, i..end, index));
        i = end;
    }
    let style = [b'$', b'%', b'?']
        .into_iter()
        .find(|style| found.iter().any(|(kind, _, _)| kind == style));
    found
        .into_iter()
        .filter(|(kind, _, _)| Some(*kind) == style)
        .enumerate()
        .filter_map(|(order, (_, range, index))| {
            let index = index.unwrap_or(order);
            (index < MAX_PARAMETERS).then_some((range, index))
        })
        .collect()
}

/// For an `INSERT INTO t (a, b) VALUES (?, ?), (?, crypt(?, ...))`: each
/// placeholder in a row of values (its parameter) and the column it
/// fills, also inside a call.
fn insert_columns<'s>(
    statement: &'s str,
    placeholders: &[(Range<usize>, usize)],
) -> Vec<(usize, &'s str)> {
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
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut column = 0usize;
    let b = statement.as_bytes();
    let mut next = placeholders
        .iter()
        .skip_while(|(r, _)| r.start < close)
        .peekable();
    let mut quote: Option<u8> = None;
    for (at, &c) in b.iter().enumerate().skip(close + 1) {
        while next.peek().is_some_and(|(r, _)| r.start < at) {
            next.next();
        }
        if let Some((r, i)) = next.peek() {
            if r.start == at && depth >= 1 {
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

/// The tuples of the parameters that open at `open`: the one tuple, or
/// each of a list's (`executemany`), by where each opens.
fn tuples(s: &str, open: usize) -> Vec<usize> {
    let b = s.as_bytes();
    if b.get(open) == Some(&b'(') {
        return vec![open];
    }
    // A list of tuples: each `(` at the list's own level.
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut quote: Option<u8> = None;
    let mut i = open + 1;
    while i < b.len() && out.len() < MAX_PARAMETERS {
        let c = b[i];
        match quote {
            Some(_) if c == b'\\' => i += 1,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                b'\'' | b'"' => quote = Some(c),
                b'(' | b'[' | b'{' => {
                    if depth == 0 && c == b'(' {
                        out.push(i);
                    }
                    depth += 1;
                }
                b')' | b']' | b'}' => {
                    if depth == 0 {
                        break;
                    }
                    depth -= 1;
                }
                _ => {}
            },
        }
        i += 1;
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
        let (statement, open, _) = statement_and_parameters(s, 0).unwrap();
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
        let p = placeholders("UPDATE t SET a = '?', b = ? WHERE c = ? AND d = %s");
        assert_eq!(
            p.iter().map(|(r, i)| (r.start, *i)).collect::<Vec<_>>(),
            [(48, 0)]
        );
        let p = placeholders("UPDATE t SET password = $2 WHERE id = $1");
        assert_eq!(p.iter().map(|(_, i)| *i).collect::<Vec<_>>(), [1, 0]);
        let p = placeholders("SELECT 1 WHERE data ? %s AND api_token = %s");
        assert_eq!(p.iter().map(|(_, i)| *i).collect::<Vec<_>>(), [0, 1]);
        let statement = "INSERT INTO users (name, \"password\") VALUES (?, ?), (?, crypt(?, 'bf'))";
        let p = placeholders(statement);
        assert_eq!(
            insert_columns(statement, &p),
            [(0, "name"), (1, "password"), (2, "name"), (3, "password")]
        );
        let s = "[parameters: [('a', 'b'), ('c', ('d',))]]";
        let opens = tuples(s, "[parameters: ".len());
        assert_eq!(opens.len(), 2);
    }
}
