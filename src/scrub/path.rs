//! Selectors over event JSON: dot-separated segments, `*` for exactly one
//! segment (a key or an array index), `**` for any number of segments
//! (including none). `extra.**`, `sdk.*`, `**.frames.*.function`.

/// One step of a path in an event: an object key or an array index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg<'a> {
    /// An object key.
    Key(&'a str),
    /// An array index.
    Index(usize),
    /// The value of a `[key, value]` pair: index 1, named by the pair's key
    /// (`["app.version", "1.2.3.4"]` is a version as `{"app.version": ...}` is).
    Pair(&'a str),
}

impl std::fmt::Display for Seg<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Seg::Key(k) => f.write_str(k),
            Seg::Index(i) => write!(f, "{i}"),
            Seg::Pair(_) => f.write_str("1"),
        }
    }
}

/// Something a selector segment can be compared with.
pub trait PathSegment {
    /// Whether this segment is the key or index written as `text`.
    fn is(&self, text: &str, index: Option<usize>) -> bool;
}

impl PathSegment for &str {
    fn is(&self, text: &str, _: Option<usize>) -> bool {
        *self == text
    }
}

impl PathSegment for Seg<'_> {
    fn is(&self, text: &str, index: Option<usize>) -> bool {
        match self {
            Seg::Key(k) => *k == text,
            Seg::Index(i) => index == Some(*i),
            Seg::Pair(_) => index == Some(1),
        }
    }
}

/// A compiled selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// The selector as written, for messages.
    text: String,
    /// Its segments.
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// A key or index, compared exactly (the index form parsed once).
    Exact(String, Option<usize>),
    /// `*`.
    One,
    /// `**`.
    Any,
}

/// Why a selector was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{0:?} is not a path selector (dot-separated keys, `*` for one segment, `**` for any depth)"
)]
pub struct SelectorError(pub String);

impl Selector {
    /// Parses `a.b.*.c` / `**.frames.*.vars`.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        if text.is_empty() {
            return Err(SelectorError(text.into()));
        }
        let segments = text
            .split('.')
            .map(|s| match s {
                "" => Err(SelectorError(text.into())),
                "*" => Ok(Segment::One),
                "**" => Ok(Segment::Any),
                s if s.contains('*') => Err(SelectorError(text.into())),
                s => Ok(Segment::Exact(s.to_owned(), s.parse().ok())),
            })
            .collect::<Result<_, _>>()?;
        Ok(Selector {
            text: text.to_owned(),
            segments,
        })
    }

    /// The selector as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The key its last segment names, when it is a plain key (not `*`, `**`
    /// or an index): such a selector can only match paths ending in that key.
    pub fn last_key(&self) -> Option<&str> {
        match self.segments.last() {
            Some(Segment::Exact(s, None)) => Some(s),
            _ => None,
        }
    }

    /// Whether the selector matches this path exactly.
    pub fn matches<P: PathSegment>(&self, path: &[P]) -> bool {
        // Fast paths for the common shapes: no `**` (lengths must agree), and a
        // single leading `**` (the rest must be a suffix). Both are O(segments).
        match self.segments.split_first() {
            Some((Segment::Any, rest)) if !rest.iter().any(|s| matches!(s, Segment::Any)) => {
                path.len() >= rest.len() && matches_from(rest, &path[path.len() - rest.len()..])
            }
            _ if !self.segments.iter().any(|s| matches!(s, Segment::Any)) => {
                path.len() == self.segments.len() && matches_from(&self.segments, path)
            }
            _ => matches_from(&self.segments, path),
        }
    }

    /// Whether the selector matches this path or any ancestor of it (for
    /// safe fields: `sdk.*` keeps everything below `sdk.name` too).
    pub fn matches_or_ancestor<P: PathSegment>(&self, path: &[P]) -> bool {
        (1..=path.len()).any(|n| matches_from(&self.segments, &path[..n]))
    }
}

fn matches_from<P: PathSegment>(selector: &[Segment], path: &[P]) -> bool {
    match selector.split_first() {
        None => path.is_empty(),
        Some((Segment::Any, rest)) => {
            (0..=path.len()).any(|skip| matches_from(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            None => false,
            Some((seg, path_rest)) => {
                let here = match first {
                    Segment::Exact(s, index) => seg.is(s, *index),
                    Segment::One => true,
                    Segment::Any => unreachable!("handled above"),
                };
                here && matches_from(rest, path_rest)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(selector: &str, path: &str) -> bool {
        let path: Vec<&str> = if path.is_empty() {
            vec![]
        } else {
            path.split('.').collect()
        };
        Selector::parse(selector).unwrap().matches(&path)
    }

    #[test]
    fn segments_stars_and_double_stars() {
        assert!(m("event_id", "event_id"));
        assert!(!m("event_id", "extra.event_id"));
        assert!(m("sdk.*", "sdk.name"));
        assert!(!m("sdk.*", "sdk.packages.0"));
        assert!(m("extra.**", "extra.a.b.c"));
        assert!(m("extra.**", "extra"));
        assert!(m(
            "**.frames.*.function",
            "exception.values.0.stacktrace.frames.3.function"
        ));
        assert!(!m(
            "**.frames.*.function",
            "exception.values.0.stacktrace.frames.3.vars.function.x"
        ));
        assert!(m("**", "anything.at.all"));
        assert!(m(
            "request.headers.Authorization",
            "request.headers.Authorization"
        ));
        assert!(!m(
            "request.headers.Authorization",
            "request.headers.authorization"
        ));
    }

    #[test]
    fn ancestors_count_for_safe_fields() {
        let s = Selector::parse("sdk").unwrap();
        assert!(s.matches_or_ancestor(&["sdk", "packages", "0", "name"]));
        assert!(!s.matches_or_ancestor(&["extra", "sdk"]));
    }

    #[test]
    fn indices_match_numbers() {
        let s = Selector::parse("exception.values.0.value").unwrap();
        let path = [
            Seg::Key("exception"),
            Seg::Key("values"),
            Seg::Index(0),
            Seg::Key("value"),
        ];
        assert!(s.matches(&path));
        let path = [
            Seg::Key("exception"),
            Seg::Key("values"),
            Seg::Index(1),
            Seg::Key("value"),
        ];
        assert!(!s.matches(&path));
        assert!(Selector::parse("a.*")
            .unwrap()
            .matches(&[Seg::Key("a"), Seg::Index(7)]));
    }

    #[test]
    fn malformed_selectors_are_refused() {
        for bad in ["", ".", "a..b", "a.", "a*b", "***"] {
            assert!(Selector::parse(bad).is_err(), "{bad}");
        }
    }
}
