//! A pool: the ordered list of candidate models. Selecting records for a pool keeps those that have
//! a response from every member (ordered like the pool) and counts the rest, per source.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::{DataError, Manifest, Record, Reference, Response};

/// The paper's five-model pool, present in every source of the shared routing data.
pub const PAPER_POOL: [&str; 5] = [
    "Yi-1.5-34B-Chat",
    "internlm2_5-20b-chat",
    "Phi-3-medium-4k-instruct",
    "Llama-3.1-8B-Instruct",
    "Qwen2.5-Coder-7B-Instruct",
];

/// The seven benchmark sources of the shared routing data (`SelfOSSInstruct` is a training set).
pub const BENCHMARK_SOURCES: [&str; 7] = [
    "AlpacaEval",
    "ArenaHard",
    "GSM8K",
    "HumanEval",
    "MATH",
    "MBPP",
    "MT-Bench",
];

/// Ordered, duplicate-free candidate models. Index `i` everywhere (scores, labels, decisions)
/// means `models()[i]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    models: Vec<String>,
}

impl Pool {
    /// A pool of at least one model, no duplicates, no empty names.
    pub fn new<S: Into<String>>(models: impl IntoIterator<Item = S>) -> Result<Self, DataError> {
        let models: Vec<String> = models.into_iter().map(Into::into).collect();
        if models.is_empty() {
            return Err(DataError::Pool("a pool needs at least one model".into()));
        }
        for (i, m) in models.iter().enumerate() {
            if m.trim().is_empty() {
                return Err(DataError::Pool("empty model name".into()));
            }
            if models[..i].contains(m) {
                return Err(DataError::Pool(format!("model {m:?} listed twice")));
            }
        }
        Ok(Self { models })
    }

    /// The default pool for training on `sources`: the paper's five models when the manifest
    /// lists all of them for every source (the shared data), otherwise every model it lists for
    /// all of them (another team's data has its own members), in the first source's order.
    pub fn for_sources<S: AsRef<str>>(
        manifest: &Manifest,
        sources: &[S],
    ) -> Result<Self, DataError> {
        let common = manifest.common_models(sources);
        if PAPER_POOL.iter().all(|m| common.iter().any(|c| c == m)) {
            return Ok(Self::paper());
        }
        if common.is_empty() {
            let names: Vec<&str> = sources.iter().map(AsRef::as_ref).collect();
            return Err(DataError::Pool(format!(
                "no model is listed in the manifest for every one of {names:?}: name the pool"
            )));
        }
        Self::new(common)
    }

    /// [`PAPER_POOL`].
    pub fn paper() -> Self {
        Self {
            models: PAPER_POOL.iter().map(|s| s.to_string()).collect(),
        }
    }

    pub fn models(&self) -> &[String] {
        &self.models
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    pub fn index_of(&self, model: &str) -> Option<usize> {
        self.models.iter().position(|m| m == model)
    }

    /// The record restricted to this pool, or the first member it lacks.
    pub fn project(&self, record: Record) -> Result<PoolRecord, String> {
        let mut responses = record.responses;
        let mut ordered = Vec::with_capacity(self.models.len());
        for m in &self.models {
            match responses.remove(m) {
                Some(r) => ordered.push(r),
                None => return Err(m.clone()),
            }
        }
        Ok(PoolRecord {
            id: record.id,
            source: record.source,
            prompt: record.prompt,
            responses: ordered,
            reference: record.reference,
        })
    }

    /// Keeps the records that have every member; counts the others. Stops at the first read error
    /// or at a repeated record id (splits hash ids, so a duplicate could sit in train and test).
    pub fn select<I>(&self, records: I) -> Result<PoolSelection, DataError>
    where
        I: IntoIterator<Item = Result<Record, DataError>>,
    {
        let mut selection = PoolSelection::default();
        let mut ids: HashMap<String, String> = HashMap::new();
        for record in records {
            let record = record?;
            let source = record.source.clone();
            if let Some(first) = ids.insert(record.id.clone(), source.clone()) {
                return Err(DataError::DuplicateId {
                    id: record.id,
                    first,
                    second: source,
                });
            }
            *selection.seen.entry(source.clone()).or_default() += 1;
            match self.project(record) {
                Ok(r) => selection.records.push(r),
                Err(missing) => {
                    *selection.skipped.by_source.entry(source).or_default() += 1;
                    *selection
                        .skipped
                        .by_missing_model
                        .entry(missing)
                        .or_default() += 1;
                }
            }
        }
        if selection.skipped.total() > 0 {
            tracing::info!(
                skipped = selection.skipped.total(),
                kept = selection.records.len(),
                "records lacking a pool member were skipped"
            );
        }
        Ok(selection)
    }
}

/// A record projected onto a pool: `responses[i]` is the response of `pool.models()[i]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolRecord {
    pub id: String,
    pub source: String,
    pub prompt: String,
    pub responses: Vec<Response>,
    pub reference: Option<Reference>,
}

impl PoolRecord {
    /// Raw scores in pool order (the source's own scale).
    pub fn scores(&self) -> Vec<f64> {
        self.responses.iter().map(|r| r.score).collect()
    }
}

/// The outcome of [`Pool::select`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolSelection {
    /// Kept records, in input order.
    pub records: Vec<PoolRecord>,
    /// Records read per source (kept + skipped).
    pub seen: BTreeMap<String, usize>,
    pub skipped: SkipCounts,
}

/// Records skipped because they lack a pool member.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkipCounts {
    /// Source -> skipped records of that source.
    pub by_source: BTreeMap<String, usize>,
    /// Model -> records skipped because that was the first member they lacked.
    pub by_missing_model: BTreeMap<String, usize>,
}

impl SkipCounts {
    pub fn total(&self) -> usize {
        self.by_source.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn the_default_pool_is_the_papers_where_the_data_has_it_and_the_common_models_elsewhere() {
        let paper = PAPER_POOL.map(|m| format!("\"{m}\"")).join(", ");
        let text = format!(
            r#"{{"GSM8K": {{"score_range": [0, 1], "models": [{paper}, "gemma"]}},
                "MBPP": {{"score_range": [0, 1], "models": [{paper}]}},
                "chat": {{"score_range": [0, 1], "models": ["b", "a", "c"]}},
                "code": {{"score_range": [0, 1], "models": ["a", "b"]}}}}"#
        );
        let m = Manifest::parse(&text, Path::new("manifest.json")).unwrap();
        assert_eq!(
            Pool::for_sources(&m, &["GSM8K", "MBPP"]).unwrap(),
            Pool::paper()
        );
        assert_eq!(Pool::for_sources(&m, &["GSM8K"]).unwrap(), Pool::paper());
        assert_eq!(
            Pool::for_sources(&m, &["chat", "code"]).unwrap().models(),
            ["b", "a"]
        );
        let err = Pool::for_sources(&m, &["GSM8K", "chat"]).unwrap_err();
        assert!(err.to_string().contains("name the pool"), "{err}");
    }
}
