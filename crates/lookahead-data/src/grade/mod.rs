//! Grading new responses against a record's reference, for labelling members that lack scores:
//! [`math`] checks final answers (`reference.answer`), [`code`] runs unit tests
//! (`reference.tests`) in a sandbox. The LLM judge, which needs an HTTP client, lives with the
//! labelling run in `lookahead-router`.

pub mod code;
pub mod math;
