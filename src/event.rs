//! What the stages after parsing read from an event (its id, the sampling
//! fields, the fingerprint's inputs), read in the one pass that validates it,
//! without building a tree.
//!
//! Events are read leniently, as a tree would be looked up: a field of the
//! wrong type reads as absent rather than failing the event. Anything this
//! view cannot read (a duplicate known key, say) makes
//! [`crate::envelope::read_event`] fall back to a tree, so both paths see the
//! same event the same way. The same view is also read from a tree, so the
//! fingerprint and sampling code exist once.
//!
//! Every value the view does not keep is still passed over as a tree would
//! read it ([`Checked`]), so that this one pass refuses what a tree
//! refuses; the view's structs are read by `view_struct!` rather than
//! derived, since a derived struct skips unknown values unchecked.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// Any JSON value, kept only when it is a scalar the relay reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Field<'a> {
    /// The key is not there.
    #[default]
    Absent,
    /// `null`.
    Null,
    /// A string.
    Str(Cow<'a, str>),
    /// `true` or `false`.
    Bool(bool),
    /// A number, as serde_json reads it.
    Num(serde_json::Number),
    /// An object or an array (skipped).
    Other,
}

impl Field<'_> {
    /// The string, when it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Field::Str(s) => Some(s),
            _ => None,
        }
    }
}

struct FieldVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for FieldVisitor<'a> {
    type Value = Field<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Field<'a>, E> {
        Ok(Field::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Field<'a>, E> {
        Ok(Field::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Field<'a>, E> {
        Ok(Field::Str(Cow::Owned(v)))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Field<'a>, E> {
        Ok(Field::Bool(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Field<'a>, E> {
        Ok(Field::Num(v.into()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Field<'a>, E> {
        Ok(Field::Num(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Field<'a>, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Field::Other, Field::Num))
    }
    fn visit_unit<E>(self) -> Result<Field<'a>, E> {
        Ok(Field::Null)
    }
    fn visit_none<E>(self) -> Result<Field<'a>, E> {
        Ok(Field::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Field<'a>, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Field<'a>, A::Error> {
        drain_seq(seq).map(|()| Field::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Field<'a>, A::Error> {
        drain_map(map).map(|()| Field::Other)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Field<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FieldVisitor(PhantomData))
    }
}

fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<Checked>()?.is_some() {}
    Ok(())
}

fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<Checked, Checked>()?.is_some() {}
    Ok(())
}

/// Any JSON value, passed over and not kept, as a tree would read it:
/// through `deserialize_any`, so that serde_json checks in it what its
/// skipping of a value (`IgnoredAny`) lets through, a lone surrogate escape
/// and a number out of `f64`'s range, and counts its nesting against the
/// limit it holds a tree to. (On the 8.5 KB event, about 30k instructions
/// more than skipping it; a separate scan for the same cost 81k.)
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_none<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Checked, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Checked, A::Error> {
        drain_seq(seq).map(|()| Checked)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Checked, A::Error> {
        drain_map(map).map(|()| Checked)
    }
}

/// An object's key: borrowed from the text, unless it has escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object's key")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(v.to_owned())))
    }
}

/// Reads one of the view's structs from an object: each key it names into
/// its field (as leniently as the field's type reads), a known key twice
/// refused (the tree then decides, as for any value the view cannot read),
/// every other value passed over as [`Checked`]. An absent key leaves the
/// field's default.
macro_rules! view_struct {
    ($name:ident { $($field:ident: $key:literal),* $(,)? }) => {
        impl<'de: 'a, 'a> Deserialize<'de> for $name<'a> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct StructVisitor<'a>(PhantomData<&'a ()>);

                impl<'de: 'a, 'a> Visitor<'de> for StructVisitor<'a> {
                    type Value = $name<'a>;

                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("an object")
                    }
                    fn visit_map<A: MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<$name<'a>, A::Error> {
                        let mut view = $name::default();
                        // Whether each key was seen, under its field's name.
                        $(let mut $field = false;)*
                        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                            match &*key {
                                $($key => {
                                    if std::mem::replace(&mut $field, true) {
                                        return Err(serde::de::Error::duplicate_field($key));
                                    }
                                    view.$field = map.next_value()?;
                                })*
                                _ => {
                                    map.next_value::<Checked>()?;
                                }
                            }
                        }
                        Ok(view)
                    }
                }

                d.deserialize_map(StructVisitor(PhantomData))
            }
        }
    };
}

/// `T` read from an object; anything else reads as `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct Obj<T>(pub Option<T>);

impl<T> Default for Obj<T> {
    fn default() -> Self {
        Obj(None)
    }
}

/// `T` read from an array; anything else reads as `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct List<T>(pub Option<Vec<T>>);

impl<T> Default for List<T> {
    fn default() -> Self {
        List(None)
    }
}

/// Reads `T` from the shape `Shape` names, skips every other value.
struct ShapeVisitor<T, const OBJECT: bool>(PhantomData<T>);

impl<'de, T: Deserialize<'de>, const OBJECT: bool> Visitor<'de> for ShapeVisitor<T, OBJECT> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Option<T>, A::Error> {
        if OBJECT {
            T::deserialize(MapAccessDeserializer::new(map)).map(Some)
        } else {
            drain_map(map).map(|()| None)
        }
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Option<T>, A::Error> {
        if OBJECT {
            drain_seq(seq).map(|()| None)
        } else {
            T::deserialize(SeqAccessDeserializer::new(seq)).map(Some)
        }
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_none<E>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Option<T>, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Option<T>, E> {
        Ok(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ShapeVisitor::<T, true>(PhantomData))
            .map(Obj)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ShapeVisitor::<Vec<T>, false>(PhantomData))
            .map(List)
    }
}

/// What the relay reads of an event.
#[derive(Debug, Default)]
pub struct EventView<'a> {
    /// The event's own id.
    pub event_id: Field<'a>,
    /// `type`: `"transaction"` for transactions sent to `/store/`.
    pub ty: Field<'a>,
    /// Sampling rules match on it.
    pub environment: Field<'a>,
    /// Sampling rules match on it.
    pub release: Field<'a>,
    /// Sampling rules match on it.
    pub transaction: Field<'a>,
    /// The SDK's own fingerprint.
    pub fingerprint: List<Field<'a>>,
    /// Exceptions, for the default fingerprint.
    pub exception: Obj<Exceptions<'a>>,
    /// A log message, for the default fingerprint.
    pub logentry: Obj<Message<'a>>,
    /// A message (a string or an object), for the default fingerprint.
    pub message: MessageField<'a>,
    /// The trace context, whose id sampling can key on.
    pub contexts: Obj<Contexts<'a>>,
}

view_struct!(EventView {
    event_id: "event_id",
    ty: "type",
    environment: "environment",
    release: "release",
    transaction: "transaction",
    fingerprint: "fingerprint",
    exception: "exception",
    logentry: "logentry",
    message: "message",
    contexts: "contexts"
});

/// `exception`.
#[derive(Debug, Default)]
pub struct Exceptions<'a> {
    /// The chained exceptions.
    pub values: List<Obj<Exception<'a>>>,
}

view_struct!(Exceptions { values: "values" });

/// One exception.
#[derive(Debug, Default)]
pub struct Exception<'a> {
    /// Its type (`type`).
    pub ty: Field<'a>,
    /// Its stack trace.
    pub stacktrace: Obj<Stacktrace<'a>>,
}

view_struct!(Exception {
    ty: "type",
    stacktrace: "stacktrace"
});

/// A stack trace.
#[derive(Debug, Default)]
pub struct Stacktrace<'a> {
    /// Its frames.
    pub frames: List<Obj<Frame<'a>>>,
}

view_struct!(Stacktrace { frames: "frames" });

/// One stack frame.
#[derive(Debug, Default)]
pub struct Frame<'a> {
    /// Whether it is the application's own code.
    pub in_app: Field<'a>,
    /// Its module.
    pub module: Field<'a>,
    /// Its file.
    pub filename: Field<'a>,
    /// Its function.
    pub function: Field<'a>,
}

view_struct!(Frame {
    in_app: "in_app",
    module: "module",
    filename: "filename",
    function: "function"
});

/// `logentry`, or `message` as an object.
#[derive(Debug, Default)]
pub struct Message<'a> {
    /// The message template.
    pub message: Field<'a>,
    /// The formatted message.
    pub formatted: Field<'a>,
}

view_struct!(Message {
    message: "message",
    formatted: "formatted"
});

/// `message`: a string or an object.
#[derive(Debug, Default)]
pub enum MessageField<'a> {
    /// Absent, or neither a string nor an object.
    #[default]
    None,
    /// A plain string.
    Text(Cow<'a, str>),
    /// An object.
    Object(Message<'a>),
}

struct MessageVisitor<'a>(PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for MessageVisitor<'a> {
    type Value = MessageField<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<MessageField<'a>, A::Error> {
        Message::deserialize(MapAccessDeserializer::new(map)).map(MessageField::Object)
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<MessageField<'a>, E> {
        Ok(MessageField::Text(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<MessageField<'a>, E> {
        Ok(MessageField::Text(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<MessageField<'a>, E> {
        Ok(MessageField::Text(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<MessageField<'a>, A::Error> {
        drain_seq(seq).map(|()| MessageField::None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<MessageField<'a>, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_none<E>(self) -> Result<MessageField<'a>, E> {
        Ok(MessageField::None)
    }
    fn visit_unit<E>(self) -> Result<MessageField<'a>, E> {
        Ok(MessageField::None)
    }
    fn visit_bool<E>(self, _: bool) -> Result<MessageField<'a>, E> {
        Ok(MessageField::None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<MessageField<'a>, E> {
        Ok(MessageField::None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<MessageField<'a>, E> {
        Ok(MessageField::None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<MessageField<'a>, E> {
        Ok(MessageField::None)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for MessageField<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(MessageVisitor(PhantomData))
    }
}

/// `contexts`.
#[derive(Debug, Default)]
pub struct Contexts<'a> {
    /// The trace context.
    pub trace: Obj<TraceContext<'a>>,
}

view_struct!(Contexts { trace: "trace" });

/// `contexts.trace`.
#[derive(Debug, Default)]
pub struct TraceContext<'a> {
    /// The trace id.
    pub trace_id: Field<'a>,
}

view_struct!(TraceContext {
    trace_id: "trace_id"
});

impl<'a> EventView<'a> {
    /// Reads the view from a parsed tree (the slow path's events).
    pub fn from_tree(tree: &'a serde_json::Value) -> EventView<'a> {
        // Every field is lenient, so reading an object cannot fail. Anything
        // else reads as an empty view (a derived struct would read an array
        // by position).
        if !tree.is_object() {
            return EventView::default();
        }
        EventView::deserialize(tree).unwrap_or_default()
    }

    /// `contexts.trace.trace_id`, when a string.
    pub fn trace_id(&self) -> Option<&str> {
        self.contexts
            .0
            .as_ref()
            .and_then(|c| c.trace.0.as_ref())
            .and_then(|t| t.trace_id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn fields_of_the_wrong_type_read_as_absent() {
        let text = r#"{"release": 5, "environment": {"a": 1}, "transaction": "t",
            "exception": "boom", "contexts": {"trace": [1, 2]}, "logentry": null,
            "fingerprint": {"a": "b"}, "message": 7, "unknown": [{"deep": [1]}]}"#;
        let view: EventView<'_> = serde_json::from_str(text).expect("lenient");
        assert_eq!(view.release, Field::Num(5.into()));
        assert_eq!(view.release.as_str(), None);
        assert_eq!(view.environment, Field::Other);
        assert_eq!(view.transaction.as_str(), Some("t"));
        assert!(view.exception.0.is_none());
        assert_eq!(view.trace_id(), None);
        assert!(view.logentry.0.is_none());
        assert!(view.fingerprint.0.is_none());
        assert!(matches!(view.message, MessageField::None));
        assert_eq!(view.event_id, Field::Absent);
    }

    #[test]
    fn strings_borrow_from_the_text_and_the_tree() {
        let text = r#"{"event_id": null, "message": "hi", "contexts": {"trace": {"trace_id": "ab"}},
            "exception": {"values": [{"type": "E", "stacktrace": {"frames": [1, {"in_app": true}]}}]}}"#;
        let view: EventView<'_> = serde_json::from_str(text).expect("valid");
        assert_eq!(view.event_id, Field::Null);
        assert!(matches!(
            view.message,
            MessageField::Text(Cow::Borrowed("hi"))
        ));
        assert_eq!(view.trace_id(), Some("ab"));
        let values = view
            .exception
            .0
            .expect("an object")
            .values
            .0
            .expect("a list");
        let frames = values[0]
            .0
            .as_ref()
            .expect("an object")
            .stacktrace
            .0
            .as_ref();
        let frames = frames
            .expect("an object")
            .frames
            .0
            .as_ref()
            .expect("a list");
        assert!(
            frames[0].0.is_none(),
            "a frame that is not an object reads as none"
        );
        assert_eq!(
            frames[1].0.as_ref().expect("an object").in_app,
            Field::Bool(true)
        );

        let tree: serde_json::Value = serde_json::from_str(text).expect("valid");
        let view = EventView::from_tree(&tree);
        assert!(matches!(
            view.message,
            MessageField::Text(Cow::Borrowed("hi"))
        ));
        assert_eq!(view.trace_id(), Some("ab"));
        let not_an_object = json!([null, null, null, null, ["g"]]);
        assert!(EventView::from_tree(&not_an_object).fingerprint.0.is_none());
    }

    #[test]
    fn a_duplicate_known_key_is_refused_so_the_tree_decides() {
        assert!(
            serde_json::from_str::<EventView<'_>>(r#"{"release": "a", "release": "b"}"#).is_err()
        );
        assert!(serde_json::from_str::<EventView<'_>>(r#"{"x": 1, "x": 2}"#).is_ok());
    }
}
