//! One pass over a request body that reads the fields the router needs (`model`, `stream`, and
//! the text to score from `messages` or `prompt`) and validates everything else exactly as
//! strictly as parsing into a `serde_json::Value` would (syntax, UTF-8, escapes, number range,
//! nesting depth), without building a tree. Strings come back borrowed from the body where they
//! have no escapes, so the common request allocates nothing here.
//!
//! Semantic problems (a field of the wrong type) do not stop the pass: they are returned as
//! values, so a syntax error anywhere still wins, as it did when the whole body was parsed first.
//! Duplicate keys behave like `Value`'s map: the last occurrence counts.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::params::Param;
use super::value::{Kind, Number, Scalar};
use super::{bad, Endpoint, ROLES};
use crate::ApiError;

/// What one pass found in a top-level object.
#[derive(Debug, Default)]
pub(super) struct Fields<'de> {
    pub model: Option<Scalar<'de>>,
    /// How often `model` occurs (a body is rewritten in place only when it occurs once).
    pub model_count: usize,
    pub stream: Option<Scalar<'de>>,
    /// The text to score, or why `messages` / `prompt` is unusable; `None` when absent.
    pub prompt: Option<Result<Cow<'de, str>, ApiError>>,
    /// The sampling parameters the router checks, as sent (see [`super::params`]).
    pub params: Vec<(Param, Scalar<'de>)>,
}

/// Reads `body`; `Ok(None)` when it is valid JSON but not an object.
pub(super) fn read(
    endpoint: Endpoint,
    body: &[u8],
) -> Result<Option<Fields<'_>>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let fields = (&mut de).deserialize_any(BodyVisitor { endpoint })?;
    de.end()?;
    Ok(fields)
}

/// Any value, checked and dropped.
struct Skip;

impl<'de> de::Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SkipVisitor)
    }
}

fn drain_seq<'de, A: SeqAccess<'de>>(mut a: A) -> Result<(), A::Error> {
    while a.next_element::<Skip>()?.is_some() {}
    Ok(())
}

fn drain_map<'de, A: MapAccess<'de>>(mut a: A) -> Result<(), A::Error> {
    while a.next_entry::<Skip, Skip>()?.is_some() {}
    Ok(())
}

/// The visit methods for JSON's scalar types, each answering `self.$on(kind)`; strings too with
/// `str`, else they are left to the visitor.
macro_rules! scalars_answer {
    ($on:ident, str) => {
        scalars_answer!($on);
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok(self.$on(Kind::String))
        }
    };
    ($on:ident) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok(self.$on(Kind::Bool))
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok(self.$on(Kind::Number))
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok(self.$on(Kind::Number))
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok(self.$on(Kind::Number))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(self.$on(Kind::Null))
        }
    };
}

/// `visit_seq` / `visit_map` that drain the container and answer `self.$on(kind)`.
macro_rules! containers_answer {
    (seq, $on:ident) => {
        fn visit_seq<A: SeqAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
            drain_seq(a)?;
            Ok(self.$on(Kind::Array))
        }
    };
    (map, $on:ident) => {
        fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
            drain_map(a)?;
            Ok(self.$on(Kind::Object))
        }
    };
}

/// Seeds that are their own visitor, for any JSON value.
macro_rules! any_seed {
    ($($seed:ty),*) => {$(
        impl<'de> DeserializeSeed<'de> for $seed {
            type Value = <Self as Visitor<'de>>::Value;
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_any(self)
            }
        }
    )*};
}

any_seed!(MessagesSeed, MessageSeed, ContentSeed, PartSeed, PromptSeed);

struct SkipVisitor;

impl SkipVisitor {
    fn any(self, _: Kind) -> Skip {
        Skip
    }
}

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    scalars_answer!(any, str);
    containers_answer!(seq, any);
    containers_answer!(map, any);
}

struct ScalarVisitor;

impl ScalarVisitor {
    fn other(self, kind: Kind) -> Scalar<'static> {
        Scalar::Other(kind)
    }
}

impl<'de> de::Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(b))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(number(v as f64, true))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(number(v as f64, true))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(number(v, false))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(self.other(Kind::Null))
    }
    containers_answer!(seq, other);
    containers_answer!(map, other);
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(s.to_owned())))
    }
}

fn number(value: f64, integer: bool) -> Scalar<'static> {
    Scalar::Number(Number { value, integer })
}

/// Object keys the router reads (read without allocating).
enum Key {
    Model,
    Stream,
    Messages,
    Prompt,
    Role,
    Content,
    Text,
    Param(Param),
    Other,
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Key, E> {
        Ok(match s {
            "model" => Key::Model,
            "stream" => Key::Stream,
            "messages" => Key::Messages,
            "prompt" => Key::Prompt,
            "role" => Key::Role,
            "content" => Key::Content,
            "text" => Key::Text,
            _ => Param::named(s).map_or(Key::Other, Key::Param),
        })
    }
}

struct BodyVisitor {
    endpoint: Endpoint,
}

impl BodyVisitor {
    fn not_object(self, _: Kind) -> Option<Fields<'static>> {
        None
    }
}

impl<'de> Visitor<'de> for BodyVisitor {
    type Value = Option<Fields<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    scalars_answer!(not_object, str);
    containers_answer!(seq, not_object);
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        let mut fields = Fields::default();
        while let Some(key) = a.next_key::<Key>()? {
            match (key, self.endpoint) {
                (Key::Model, _) => {
                    fields.model = Some(a.next_value()?);
                    fields.model_count += 1;
                }
                (Key::Stream, _) => fields.stream = Some(a.next_value()?),
                (Key::Messages, Endpoint::Chat) => {
                    fields.prompt = Some(a.next_value_seed(MessagesSeed)?);
                }
                (Key::Prompt, Endpoint::Completions) => {
                    fields.prompt = Some(a.next_value_seed(PromptSeed)?);
                }
                (Key::Param(p), endpoint) if p.applies_to(endpoint) => {
                    let value = a.next_value()?;
                    // Duplicate keys: the last occurrence counts, as for `Value`'s map.
                    fields.params.retain(|(q, _)| *q != p);
                    fields.params.push((p, value));
                }
                _ => {
                    a.next_value::<Skip>()?;
                }
            }
        }
        Ok(Some(fields))
    }
}

type Read<'de> = Result<Cow<'de, str>, ApiError>;

/// `messages`: the last user turn's text (the last message's when no turn is the user's).
struct MessagesSeed;

impl MessagesSeed {
    fn wrong(self, _: Kind) -> Read<'static> {
        Err(bad("invalid_type", "`messages` must be an array.").with_param("messages"))
    }
}

impl<'de> Visitor<'de> for MessagesSeed {
    type Value = Read<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of messages")
    }
    scalars_answer!(wrong, str);
    containers_answer!(map, wrong);
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        let mut first_error = None;
        let (mut last_user, mut last) = (None, None);
        let mut index = 0;
        while let Some(message) = a.next_element_seed(MessageSeed { index })? {
            index += 1;
            if first_error.is_some() {
                continue; // the first bad message is the one reported; the rest is still read
            }
            match message {
                Err(e) => first_error = Some(e),
                Ok((true, text)) => last_user = Some(text),
                // Only needed when no turn is the user's.
                Ok((false, text)) if last_user.is_none() => last = Some(text),
                Ok((false, _)) => {}
            }
        }
        Ok(match (first_error, last_user.or(last)) {
            (Some(e), _) => Err(e),
            (None, None) => {
                Err(bad("invalid_value", "`messages` must not be empty.").with_param("messages"))
            }
            (None, Some(text)) => Ok(text),
        })
    }
}

/// One message: whether its role is `user`, and its text.
struct MessageSeed {
    index: usize,
}

impl MessageSeed {
    fn wrong<'de>(self, _: Kind) -> Result<(bool, Cow<'de, str>), ApiError> {
        Err(bad(
            "invalid_type",
            format!("messages[{}] must be an object.", self.index),
        )
        .with_param("messages"))
    }
}

impl<'de> Visitor<'de> for MessageSeed {
    type Value = Result<(bool, Cow<'de, str>), ApiError>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a message object")
    }
    scalars_answer!(wrong, str);
    containers_answer!(seq, wrong);
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        let (mut role, mut content) = (None, None);
        while let Some(key) = a.next_key::<Key>()? {
            match key {
                Key::Role => role = Some(a.next_value::<Scalar>()?),
                Key::Content => content = Some(a.next_value_seed(ContentSeed)?),
                _ => {
                    a.next_value::<Skip>()?;
                }
            }
        }
        let i = self.index;
        let role = match role {
            Some(Scalar::Str(r)) => r,
            _ => {
                return Ok(Err(bad(
                    "invalid_value",
                    format!("messages[{i}].role must be a string."),
                )
                .with_param("messages")))
            }
        };
        if !ROLES.contains(&role.as_ref()) {
            return Ok(Err(bad(
                "invalid_value",
                format!("messages[{i}].role must be one of {ROLES:?}."),
            )
            .with_param("messages")));
        }
        let text = content.unwrap_or(Ok(Cow::Borrowed("")));
        Ok(text.map(|t| (role == "user", t)))
    }
}

/// A message's `content`: a string, null, or the `text` of its parts joined by newlines.
struct ContentSeed;

impl ContentSeed {
    fn wrong(self, _: Kind) -> Read<'static> {
        Err(bad(
            "invalid_type",
            "message `content` must be a string, an array of parts or null",
        )
        .with_param("messages"))
    }
}

impl<'de> Visitor<'de> for ContentSeed {
    type Value = Read<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("message content")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(self.wrong(Kind::Bool))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(self.wrong(Kind::Number))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(self.wrong(Kind::Number))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(self.wrong(Kind::Number))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Ok(Cow::Borrowed("")))
    }
    containers_answer!(map, wrong);
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Ok(Cow::Borrowed(s)))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Ok(Cow::Owned(s.to_owned())))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        let mut text: Read<'de> = Ok(Cow::Borrowed(""));
        while let Some(part) = a.next_element_seed(PartSeed)? {
            let Ok(joined) = &mut text else {
                continue; // the first bad part is the one reported; the rest is still read
            };
            match part {
                Err(e) => text = Err(e),
                Ok(None) => {}
                Ok(Some(p)) if joined.is_empty() => *joined = p,
                Ok(Some(p)) => {
                    let joined = joined.to_mut();
                    joined.push('\n');
                    joined.push_str(&p);
                }
            }
        }
        Ok(text)
    }
}

/// One content part: its `text`, if it has one.
struct PartSeed;

impl PartSeed {
    fn wrong<'de>(self, _: Kind) -> Result<Option<Cow<'de, str>>, ApiError> {
        Err(bad("invalid_type", "content parts must be objects").with_param("messages"))
    }
}

impl<'de> Visitor<'de> for PartSeed {
    type Value = Result<Option<Cow<'de, str>>, ApiError>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a content part")
    }
    scalars_answer!(wrong, str);
    containers_answer!(seq, wrong);
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        let mut text = None;
        while let Some(key) = a.next_key::<Key>()? {
            if matches!(key, Key::Text) {
                text = Some(a.next_value::<Scalar>()?);
            } else {
                a.next_value::<Skip>()?;
            }
        }
        Ok(match text {
            None => Ok(None),
            Some(Scalar::Str(t)) => Ok(Some(t)),
            Some(_) => {
                Err(bad("invalid_type", "content part `text` must be a string")
                    .with_param("messages"))
            }
        })
    }
}

/// `prompt` of the completions API: a string, or the first of a batch (token ids score as "").
struct PromptSeed;

impl PromptSeed {
    fn wrong(self, _: Kind) -> Read<'static> {
        Err(bad("invalid_type", "`prompt` must be a string.").with_param("prompt"))
    }
}

impl<'de> Visitor<'de> for PromptSeed {
    type Value = Read<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a prompt")
    }
    scalars_answer!(wrong);
    containers_answer!(map, wrong);
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Ok(Cow::Borrowed(s)))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Ok(Cow::Owned(s.to_owned())))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        let first = a.next_element::<Scalar>()?;
        drain_seq(a)?;
        Ok(match first {
            None => Err(bad("invalid_value", "`prompt` must not be empty.").with_param("prompt")),
            Some(Scalar::Str(s)) => Ok(s),
            Some(Scalar::Other(Kind::Number | Kind::Array)) => Ok(Cow::Borrowed("")),
            Some(_) => Err(bad(
                "invalid_type",
                "`prompt` must be a string, an array of strings or token arrays.",
            )
            .with_param("prompt")),
        })
    }
}
