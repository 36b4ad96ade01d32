//! The values the one-pass reader (`fields`) hands to the checks (`params`, `parse_body`):
//! strings borrowed from the body where possible, numbers as the range checks need them, and the
//! JSON type of anything else.

use std::borrow::Cow;

/// The JSON type of a value the router does not read further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

/// A string, a boolean, a number, or the type of anything else.
#[derive(Debug)]
pub(super) enum Scalar<'de> {
    Str(Cow<'de, str>),
    Bool(bool),
    Number(Number),
    Other(Kind),
}

/// A JSON number as the checks need it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Number {
    pub value: f64,
    /// Written without a fraction or exponent (`3`, not `3.0`), as OpenAI's integers are.
    pub integer: bool,
}
