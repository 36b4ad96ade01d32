//! Member prices for `--calibrate`: per million input and output tokens, as an `LLMPool` writes
//! them (`--pool FILE`) and/or `--price NAME=IN/OUT` (a flag wins over the pool). A NAME is a
//! dataset model (a member's `modelId`) or, with `--pool`, a member's name. The router ranks by
//! the mean of the two prices per MTok; the price of one request is estimated from the dataset,
//! which records texts but no token counts: `ceil(chars / 4)` tokens of the prompt at the input
//! price plus `ceil(chars / 4)` tokens of that member's recorded answer at the output price.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context};
use lookahead_api::pool::Price;
use lookahead_api::LLMPool;

/// Characters per token of the request price estimate (the usual rule of thumb for English).
pub const CHARS_PER_TOKEN: usize = 4;

/// The estimated tokens of `text`.
pub fn tokens(text: &str) -> usize {
    text.chars().count().div_ceil(CHARS_PER_TOKEN)
}

/// The price of a request of `prompt` answered with `answer` at `price`.
pub fn request_price(price: &Price, prompt: &str, answer: &str) -> f64 {
    (tokens(prompt) as f64 * price.input_per_m_tok + tokens(answer) as f64 * price.output_per_m_tok)
        / 1e6
}

/// The price the router ranks by: the mean of input and output per MTok (as `lookahead router`
/// computes it).
pub fn rank_price(price: &Price) -> f64 {
    (price.input_per_m_tok + price.output_per_m_tok) / 2.0
}

/// Member names and prices by model id, from `--pool` and `--price`.
#[derive(Debug, Default)]
pub struct Prices {
    /// member name -> model id (from `--pool`).
    names: BTreeMap<String, String>,
    /// model id -> price.
    by_model: BTreeMap<String, Price>,
}

impl Prices {
    /// Reads `--pool` (an `LLMPool` manifest) and applies every `--price`.
    pub fn load(pool: Option<&Path>, flags: &[String]) -> anyhow::Result<Self> {
        let mut prices = Prices::default();
        if let Some(path) = pool {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading --pool {}", path.display()))?;
            let pool = read_pool(&text).with_context(|| format!("--pool {}", path.display()))?;
            for m in pool.spec.members {
                prices.names.insert(m.name, m.model_id.clone());
                prices.by_model.insert(m.model_id, m.price);
            }
        }
        for flag in flags {
            let (name, price) = parse_price(flag)?;
            let model = prices.model_of(&name);
            prices.by_model.insert(model, price);
        }
        Ok(prices)
    }

    /// The model id `name` stands for: a member name from `--pool`, else itself.
    pub fn model_of(&self, name: &str) -> String {
        self.names
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_string())
    }

    /// The price of every model of the pool, in order; an error names each one without a price.
    pub fn for_models(&self, models: &[String]) -> anyhow::Result<Vec<Price>> {
        let missing: Vec<&str> = models
            .iter()
            .filter(|m| !self.by_model.contains_key(*m))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            bail!(
                "--calibrate needs a price for every pool model; missing: {} (give --pool \
                 LLMPOOL.yaml with their modelIds, or --price MODEL=IN/OUT per million tokens)",
                missing.join(", ")
            );
        }
        Ok(models
            .iter()
            .filter_map(|m| self.by_model.get(m).cloned())
            .collect())
    }
}

/// The `LLMPool` document of a manifest (other documents, e.g. a ServiceAccount, are skipped).
fn read_pool(text: &str) -> anyhow::Result<LLMPool> {
    use serde::Deserialize as _;
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = serde_yaml::Value::deserialize(doc)?;
        if value.get("kind").and_then(serde_yaml::Value::as_str) == Some("LLMPool") {
            return Ok(serde_yaml::from_value(value)?);
        }
    }
    bail!("no document of kind LLMPool")
}

/// `NAME=IN/OUT` (prices per million input / output tokens; `NAME=P` for both).
fn parse_price(flag: &str) -> anyhow::Result<(String, Price)> {
    let (name, value) = flag
        .split_once('=')
        .with_context(|| format!("--price {flag:?} is not NAME=IN/OUT"))?;
    let number = |s: &str| -> anyhow::Result<f64> {
        let v: f64 = s
            .trim()
            .parse()
            .with_context(|| format!("--price {flag:?}: {s:?} is not a number"))?;
        if !(v.is_finite() && v >= 0.0) {
            bail!("--price {flag:?}: prices are finite and >= 0");
        }
        Ok(v)
    };
    let (input, output) = match value.split_once('/') {
        Some((i, o)) => (number(i)?, number(o)?),
        None => (number(value)?, number(value)?),
    };
    Ok((
        name.trim().to_string(),
        Price {
            input_per_m_tok: input,
            output_per_m_tok: output,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_gives_names_and_prices_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let pool = dir.path().join("pool.yaml");
        std::fs::write(
            &pool,
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: s}\n---\napiVersion: lookahead.dev/v1alpha1\nkind: LLMPool\nmetadata: {name: p}\nspec:\n  members:\n    - name: yi\n      modelId: Yi-34B\n      endpoint: http://yi/v1\n      price: {inputPerMTok: 2, outputPerMTok: 4}\n    - name: phi\n      modelId: Phi-3\n      endpoint: http://phi/v1\n",
        )
        .unwrap();
        let p = Prices::load(Some(&pool), &["phi=0.5/1.5".into()]).unwrap();
        assert_eq!(p.model_of("yi"), "Yi-34B");
        let got = p
            .for_models(&["Phi-3".to_string(), "Yi-34B".to_string()])
            .unwrap();
        assert_eq!(
            (got[0].input_per_m_tok, got[0].output_per_m_tok),
            (0.5, 1.5)
        );
        assert_eq!(rank_price(&got[1]), 3.0);
        let e = p
            .for_models(&["Other".to_string()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing: Other"), "{e}");
        let flat = Prices::load(None, &["Other=2".into()]).unwrap();
        assert_eq!(
            rank_price(&flat.for_models(&["Other".into()]).unwrap()[0]),
            2.0
        );
        std::fs::write(&pool, "kind: ConfigMap\n").unwrap();
        let e = format!("{:#}", Prices::load(Some(&pool), &[]).unwrap_err());
        assert!(e.contains("no document of kind LLMPool"), "{e}");
        for bad in ["x", "x=a/1", "x=-1", "x=1/inf"] {
            assert!(Prices::load(None, &[bad.into()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_prices_count_four_characters_a_token() {
        assert_eq!(tokens(""), 0);
        assert_eq!(tokens("abcd"), 1);
        assert_eq!(tokens("abcde"), 2);
        let price = Price {
            input_per_m_tok: 1.0,
            output_per_m_tok: 3.0,
        };
        // 2 prompt tokens at 1 + 3 answer tokens at 3, per million.
        assert!((request_price(&price, "abcdefgh", "abcdefghijkl") - 11e-6).abs() < 1e-18);
    }
}
