//! `lookahead label`: collect routing labels for pool members that lack them. Each training
//! prompt goes to each named member (OpenAI-compatible), the response is graded (exact final
//! answer, sandboxed unit tests, or an LLM judge) and written back in the routing-dataset format,
//! merged with the existing records. Progress is journaled, so an interrupted run resumes where it
//! stopped without losing or duplicating a record.

pub mod client;
pub mod collect;
pub mod graders;
pub mod journal;
pub mod judge;

pub use collect::{run, LabelJob, LabelReport};
pub use graders::{GraderKind, GradersConfig};
