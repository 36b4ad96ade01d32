//! A model's recorded responses from the routing dataset, keyed by prompt.

use std::collections::HashMap;
use std::path::Path;

use lookahead_data::{DataError, Dataset, Record};

/// One model's recorded responses, keyed by prompt.
#[derive(Debug, Clone, Default)]
pub struct ReplayBook {
    pub model: String,
    answers: HashMap<String, String>,
}

fn key(prompt: &str) -> &str {
    prompt.trim()
}

impl ReplayBook {
    pub fn new(model: impl Into<String>) -> Self {
        Self {
            model: model.into(),
            answers: HashMap::new(),
        }
    }

    pub fn insert(&mut self, prompt: &str, text: String) {
        self.answers.insert(key(prompt).to_string(), text);
    }

    /// Adds `record`'s response of this book's model, if it has one.
    pub fn add_record(&mut self, record: &Record) {
        if let Some(r) = record.responses.get(&self.model) {
            self.answers
                .insert(key(&record.prompt).to_string(), r.text.clone());
        }
    }

    /// Reads every source of the dataset in `dir` (one pass) into one book per model.
    pub fn load_many(dir: &Path, models: &[String]) -> Result<Vec<ReplayBook>, DataError> {
        let data = Dataset::open(dir)?;
        let mut books: Vec<ReplayBook> = models.iter().map(ReplayBook::new).collect();
        for source in data.source_names() {
            for record in data.records(&source)? {
                let record = record?;
                for b in &mut books {
                    b.add_record(&record);
                }
            }
        }
        Ok(books)
    }

    pub fn load(dir: &Path, model: &str) -> Result<ReplayBook, DataError> {
        let mut books = Self::load_many(dir, &[model.to_string()])?;
        Ok(books.pop().unwrap_or_else(|| ReplayBook::new(model)))
    }

    pub fn len(&self) -> usize {
        self.answers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }

    pub fn answer(&self, prompt: &str) -> Option<&str> {
        self.answers.get(key(prompt)).map(String::as_str)
    }
}
