//! `lookahead label`: collect routing labels for pool members that lack them. Each training
//! prompt goes to each named member (OpenAI-compatible, through `lookahead-client`), the response
//! is graded (exact final answer, sandboxed unit tests, or an LLM judge) and written back in the
//! routing-dataset format, merged with the existing records. Progress is journaled, so an
//! interrupted run resumes where it stopped without losing or duplicating a record.
//!
//! - [`job`]: [`LabelJob`] (what to label, how), [`LabelReport`] (what a run did), [`LabelError`].
//! - [`collect`]: the run ([`run`]): find the pairs still to ask, ask, grade, journal, merge.
//! - [`journal`]: the append-only, resumable record of graded (record, member) pairs.
//! - [`merge`]: the graded responses written back into the dataset files and manifest.
//! - [`grade`]: the graders ([`grade::math`] final answers, [`grade::code`] sandboxed unit
//!   tests, [`grade::judge`] an LLM judge) and [`GradersConfig`], the per-source choice.

pub mod collect;
pub mod grade;
pub mod job;
pub mod journal;
pub mod merge;

pub use collect::{run, JOURNAL_FILE};
pub use grade::code::SandboxLimits;
pub use grade::judge::JudgeConfig;
pub use grade::{GraderKind, GradersConfig};
pub use job::{LabelError, LabelJob, LabelReport};
