//! Hashed word n-gram features of a whole prompt (no truncation): the "wide" view of a prompt
//! that a 64-token encoder window misses (the question at the end of a long GSM8K/MATH prompt,
//! a HumanEval docstring). Tokens are lower-cased words ([`NgramTokens`]); unigrams and bigrams
//! are hashed (FNV-1a, stable across machines) into a fixed number of buckets, weighted by
//! sublinear term frequency times the training set's inverse document frequency (zero for a
//! bucket too few training prompts have), and L2-normalised: TF-IDF without a vocabulary to store.

use serde::{Deserialize, Serialize};
use unicode_categories::UnicodeCategories;

use crate::names::setting_names;

/// One prompt's features: `(bucket, value)` pairs, buckets ascending and unique.
pub type SparseRow = Vec<(u32, f32)>;

/// Which tokens a prompt's n-grams are made of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NgramTokens {
    /// Alphanumeric runs and every other non-space character on its own: what artifacts
    /// written before this setting read. Punctuation and one-character tokens (`(`, `x`, `=`,
    /// their bigrams) are most of a code or maths prompt's n-grams, alike across prompts, and
    /// take most of its unit-norm row from the words that say what is asked.
    #[default]
    WordsAndPunctuation,
    /// Alphanumeric runs (with `_`) of two or more characters: scikit-learn's default token
    /// pattern. With `min_df` 2 the uncalibrated fit gains ~0.4 and fits three times faster;
    /// after the within-source calibration, routing is unchanged (docs/results.md). Blind to
    /// the scripts written without spaces: a Chinese or Japanese sentence is one alphanumeric
    /// run, so one token no other prompt has.
    Words,
    /// [`Words`](Self::Words) in every script: a word's combining marks stay in it (a Hindi
    /// virama or vowel sign does not cut the word in two), and in the scripts written without
    /// spaces between words (Han, Hiragana, Katakana, Thai, Lao, Khmer, Myanmar) every
    /// character (with the vowel signs and tone marks on it) is a token of its own, so the
    /// n-grams are their characters and character bigrams, as CJK search indexes them;
    /// full-width letters and digits read as ASCII. Text in other scripts gets exactly `words`'
    /// tokens.
    MultilingualWords,
}

setting_names!(NgramTokens, "n-gram tokens", {
    WordsAndPunctuation => "words-and-punctuation",
    Words => "words",
    MultilingualWords => "multilingual-words",
});

/// Token-length buckets also become features (`log2` of the token count): how long a prompt is
/// says something about which model copes with it.
const LENGTH_FEATURE: &str = "\u{1}len";

/// Maps text to hashed n-gram counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NgramHasher {
    pub buckets: usize,
    pub tokens: NgramTokens,
}

impl NgramHasher {
    pub fn new(buckets: usize, tokens: NgramTokens) -> Self {
        Self {
            buckets: buckets.max(1),
            tokens,
        }
    }

    /// Sublinear term frequencies `1 + ln(count)` per bucket (before IDF and normalisation).
    pub fn counts(&self, text: &str) -> SparseRow {
        let tokens = match self.tokens {
            NgramTokens::WordsAndPunctuation => tokens(text),
            NgramTokens::Words => words(text),
            NgramTokens::MultilingualWords => multilingual_words(text),
        };
        let mut hashes: Vec<u32> = Vec::with_capacity(tokens.len() * 2 + 1);
        for (i, t) in tokens.iter().enumerate() {
            hashes.push(self.bucket(&[t]));
            if let Some(next) = tokens.get(i + 1) {
                hashes.push(self.bucket(&[t, "\u{0}", next]));
            }
        }
        let len_bucket = (tokens.len().max(1) as f64).log2().floor() as u32;
        hashes.push(self.bucket(&[LENGTH_FEATURE, &len_bucket.to_string()]));
        hashes.sort_unstable();
        let mut row: SparseRow = Vec::with_capacity(hashes.len());
        for h in hashes {
            match row.last_mut() {
                Some((b, c)) if *b == h => *c += 1.0,
                _ => row.push((h, 1.0)),
            }
        }
        for (_, c) in &mut row {
            *c = 1.0 + c.ln();
        }
        row
    }

    fn bucket(&self, parts: &[&str]) -> u32 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for p in parts {
            for b in p.bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0100_0000_01b3);
            }
        }
        (h % self.buckets as u64) as u32
    }
}

/// Probabilities below this add no source-specific copy of a feature (they would only add noise
/// and work).
const MIN_SOURCE_WEIGHT: f32 = 0.05;

/// `counts` plus, for each source `s` with `source[s]` at least [`MIN_SOURCE_WEIGHT`], a copy of
/// every feature hashed together with `s` and scaled by `source[s]`: the "shared + specific"
/// feature map of domain adaptation. A linear model over it learns what an n-gram says about the
/// models on every source (the shared copy) and how that differs on one source (its copy), so
/// a word that means "coding question, send it to the coder" in a chat benchmark need not mean
/// the same in a coding benchmark where every prompt is code. Training rows take the example's
/// own source (one-hot), served rows the source classifier's probabilities.
pub fn conjoin(counts: SparseRow, source: &[f32], buckets: usize) -> SparseRow {
    let mut out = counts.clone();
    for (s, &w) in source.iter().enumerate() {
        if w < MIN_SOURCE_WEIGHT {
            continue;
        }
        for &(b, c) in &counts {
            out.push((source_bucket(b, s, buckets), c * w));
        }
    }
    out.sort_unstable_by_key(|&(b, _)| b);
    let mut merged: SparseRow = Vec::with_capacity(out.len());
    for (b, c) in out {
        match merged.last_mut() {
            Some((last, total)) if *last == b => *total += c,
            _ => merged.push((b, c)),
        }
    }
    merged
}

/// The bucket of feature `b`'s copy for source `s` (a 64-bit mix, so copies of neighbouring
/// buckets do not land side by side).
fn source_bucket(b: u32, s: usize, buckets: usize) -> u32 {
    let mut h = (u64::from(b) << 8 | (s as u64 + 1)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^= h >> 29;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^= h >> 32;
    (h % buckets.max(1) as u64) as u32
}

/// Lower-cased alphanumeric runs (with `_`) of two or more characters ([`NgramTokens::Words`]).
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| w.chars().nth(1).is_some())
        .map(str::to_lowercase)
        .collect()
}

/// Lower-cased runs of letters, digits, marks and `_` of two or more characters, and every
/// character of a script written without spaces on its own, with the combining marks that
/// follow it (a Thai vowel sign or tone mark belongs to its consonant)
/// ([`NgramTokens::MultilingualWords`]).
fn multilingual_words(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    // Byte offset where the word being read began.
    let mut start = None;
    // Whether the last token pushed is a character of a script written without spaces that a
    // following mark would combine with.
    let mut after_character = false;
    for (i, c) in text.char_indices() {
        // Their punctuation (`・`, `๚`, `။`) separates, as everywhere else.
        let own_token = written_without_spaces(c) && word_character(c);
        if own_token && after_character && c.is_mark() {
            if let Some(last) = out.last_mut() {
                last.push(c);
            }
            continue;
        }
        if !own_token && word_character(c) {
            start.get_or_insert(i);
            after_character = false;
            continue;
        }
        if let Some(s) = start.take() {
            push_word(&mut out, &text[s..i]);
        }
        if own_token {
            out.push(c.to_string());
        }
        after_character = own_token;
    }
    if let Some(s) = start {
        push_word(&mut out, &text[s..]);
    }
    out
}

/// Letters, digits, `_` and combining marks (no ASCII character is a mark, and ASCII text, most
/// of most prompts, takes the quick test).
fn word_character(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphanumeric() || c == '_'
    } else {
        c.is_alphanumeric() || c.is_mark()
    }
}

/// `word`, lower-cased and with full-width letters and digits as their ASCII forms (CJK text
/// often types `ＧＰＴ４` for `GPT4`), onto `out` when it has two or more characters.
fn push_word(out: &mut Vec<String>, word: &str) {
    if word.chars().nth(1).is_none() {
        return;
    }
    let lower = word.to_lowercase();
    out.push(if lower.is_ascii() {
        lower
    } else {
        lower.chars().map(half_width).collect()
    });
}

/// The ASCII form of a full-width ASCII character (U+FF01..=U+FF5E), else `c`.
fn half_width(c: char) -> char {
    match c {
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(u32::from(c) - 0xFEE0).unwrap_or(c),
        _ => c,
    }
}

/// The Unicode blocks of the scripts written without spaces between words: Han (CJK unified
/// and compatibility ideographs, every extension), Hiragana, Katakana, Thai, Lao, Khmer,
/// Myanmar. A word of them cannot be told from the next without a dictionary, so each
/// character stands for itself.
const WRITTEN_WITHOUT_SPACES: [(char, char); 14] = [
    ('\u{0E00}', '\u{0EFF}'),   // Thai, Lao
    ('\u{1000}', '\u{109F}'),   // Myanmar
    ('\u{1780}', '\u{17FF}'),   // Khmer
    ('\u{19E0}', '\u{19FF}'),   // Khmer symbols
    ('\u{3040}', '\u{30FF}'),   // Hiragana, Katakana
    ('\u{31F0}', '\u{31FF}'),   // Katakana phonetic extensions
    ('\u{3400}', '\u{4DBF}'),   // CJK extension A
    ('\u{4E00}', '\u{9FFF}'),   // CJK unified ideographs
    ('\u{A9E0}', '\u{A9FF}'),   // Myanmar extended-B
    ('\u{AA60}', '\u{AA7F}'),   // Myanmar extended-A
    ('\u{F900}', '\u{FAFF}'),   // CJK compatibility ideographs
    ('\u{FF66}', '\u{FF9F}'),   // halfwidth Katakana
    ('\u{20000}', '\u{2FA1F}'), // CJK extensions B-F, compatibility supplement
    ('\u{30000}', '\u{323AF}'), // CJK extensions G, H
];

fn written_without_spaces(c: char) -> bool {
    // Latin, digits and punctuation first: most prompts are mostly ASCII.
    c > '\u{0DFF}'
        && WRITTEN_WITHOUT_SPACES
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&c))
}

/// Lower-cased alphanumeric runs (with `_`) and single other non-space characters
/// ([`NgramTokens::WordsAndPunctuation`]).
fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() || c == '_' {
            word.extend(c.to_lowercase());
            continue;
        }
        if !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
        if !c.is_whitespace() {
            out.push(c.to_string());
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// Inverse document frequency per bucket, `ln((1 + n) / (1 + df)) + 1` (scikit-learn's smooth
/// IDF), from the training prompts' count rows. With `min_df` above 1 (scikit-learn's `min_df`),
/// 0, i.e. the feature dropped, where fewer than `min_df` prompts have it, those no training
/// prompt has included: an n-gram seen in one training prompt can only memorise that prompt's
/// label, one seen in none has no weight at all, and having the highest IDF both take the
/// largest share of a row's unit norm from the n-grams with learned weights. `min_df` 1 keeps
/// every bucket, unseen ones at the highest IDF (what artifacts written before it did).
pub fn inverse_document_frequency(rows: &[SparseRow], buckets: usize, min_df: u32) -> Vec<f32> {
    let mut df = vec![0u32; buckets];
    for row in rows {
        for &(b, _) in row {
            df[b as usize] += 1;
        }
    }
    let n = rows.len() as f32;
    df.into_iter()
        .map(|d| {
            if min_df > 1 && d < min_df {
                0.0
            } else {
                ((1.0 + n) / (1.0 + d as f32)).ln() + 1.0
            }
        })
        .collect()
}

/// `counts` weighted by `idf` (features it weighs 0 dropped) and scaled to unit L2 norm.
pub fn weigh(mut counts: SparseRow, idf: &[f32]) -> SparseRow {
    for (b, c) in &mut counts {
        *c *= idf.get(*b as usize).copied().unwrap_or(1.0);
    }
    counts.retain(|&(_, c)| c != 0.0);
    let norm = counts.iter().map(|(_, c)| c * c).sum::<f32>().sqrt();
    if norm > 0.0 {
        for (_, c) in &mut counts {
            *c /= norm;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_split_words_and_keep_punctuation() {
        assert_eq!(
            tokens("Solve: x^2 = 4, def f_1(x)"),
            ["solve", ":", "x", "^", "2", "=", "4", ",", "def", "f_1", "(", "x", ")"]
        );
    }

    #[test]
    fn words_are_runs_of_two_or_more_word_characters() {
        assert_eq!(
            words("Solve: x^2 = 42, def f_1(x) naïve"),
            ["solve", "42", "def", "f_1", "naïve"]
        );
        let punctuation = NgramHasher::new(1 << 16, NgramTokens::WordsAndPunctuation);
        let words = NgramHasher::new(1 << 16, NgramTokens::Words);
        let text = "def f(x): return x + 1";
        assert!(words.counts(text).len() < punctuation.counts(text).len());
    }

    /// Chinese and Japanese are read a character at a time (with the Latin words among them as
    /// words, full-width ones as ASCII); Hindi's combining marks stay inside their words; text of
    /// the spaced scripts without marks gets exactly `words`' tokens.
    #[test]
    fn scripts_written_without_spaces_are_read_a_character_at_a_time() {
        assert_eq!(
            multilingual_words("用Python写一个函数。"),
            ["用", "python", "写", "一", "个", "函", "数"]
        );
        assert_eq!(
            multilingual_words("カタカナ・で書く x"),
            ["カ", "タ", "カ", "ナ", "で", "書", "く"]
        );
        assert_eq!(multilingual_words("用ＧＰＴ４写"), ["用", "gpt4", "写"]);
        // ที่นี่ ("here"): each consonant with its vowel sign and tone mark.
        assert_eq!(multilingual_words("ที่นี่ ok"), ["ที่", "นี่", "ok"]);
        assert_eq!(words("क्या आप"), ["या", "आप"], "the virama cuts the word");
        assert_eq!(multilingual_words("क्या आप"), ["क्या", "आप"]);
        let spaced = "Solve: x^2 = 42, def f_1(x) naïve Привет мир";
        assert_eq!(multilingual_words(spaced), words(spaced));

        // A Chinese sentence is one token to `words`, so two sentences that share every
        // character but one share no n-gram; read a character at a time, most of them.
        let hasher = |tokens| NgramHasher::new(1 << 16, tokens);
        let shared = |tokens| {
            let [a, b] = ["写一个排序函数", "写一个搜索函数"].map(|t| hasher(tokens).counts(t));
            a.iter()
                .filter(|(x, _)| b.iter().any(|(y, _)| x == y))
                .count()
        };
        assert_eq!(shared(NgramTokens::Words), 1, "the length feature only");
        assert!(shared(NgramTokens::MultilingualWords) >= 8);
    }

    /// A bucket fewer than `min_df` training prompts have weighs nothing, so it leaves the rows
    /// (and their norm) to the shared n-grams.
    #[test]
    fn buckets_below_the_minimum_document_frequency_are_dropped() {
        let h = NgramHasher::new(1 << 16, NgramTokens::Words);
        let rows: Vec<SparseRow> = ["common word zebra", "common word", "common thing"]
            .iter()
            .map(|t| h.counts(t))
            .collect();
        let idf = inverse_document_frequency(&rows, h.buckets, 2);
        let zebra = h.bucket(&["zebra"]) as usize;
        let word = h.bucket(&["word"]) as usize;
        assert_eq!(idf[zebra], 0.0);
        assert!(idf[word] > 0.0);
        let weighed = weigh(rows[0].clone(), &idf);
        assert!(weighed.iter().all(|&(b, _)| b as usize != zebra));
        assert_eq!(weighed, weigh(h.counts("common word"), &idf));
        // No training prompt has "yak": dropped with the rare ones, kept at the highest IDF
        // (as before `min_df` existed) with 1.
        let yak = h.bucket(&["yak"]) as usize;
        assert_eq!(idf[yak], 0.0);
        let kept = inverse_document_frequency(&rows, h.buckets, 1);
        assert!(kept[zebra] > kept[word]);
        assert_eq!(kept[yak], 4f32.ln() + 1.0);
    }

    #[test]
    fn counts_are_sorted_unique_and_sublinear() {
        let h = NgramHasher::new(1 << 16, NgramTokens::Words);
        let row = h.counts("the cat the cat the cat");
        assert!(row.windows(2).all(|w| w[0].0 < w[1].0));
        let the = h.bucket(&["the"]);
        let v = row.iter().find(|(b, _)| *b == the).map(|(_, v)| *v);
        assert_eq!(v, Some(1.0 + 3f32.ln()));
    }

    #[test]
    fn conjoined_rows_keep_the_shared_features_and_add_a_scaled_copy_per_likely_source() {
        let h = NgramHasher::new(1 << 16, NgramTokens::Words);
        let counts = h.counts("sum the list of numbers");
        let one_hot = conjoin(counts.clone(), &[0.0, 1.0, 0.0], 1 << 16);
        assert!(one_hot.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(
            one_hot.len(),
            2 * counts.len(),
            "no collisions expected here"
        );
        let total = |r: &SparseRow| r.iter().map(|(_, c)| c).sum::<f32>();
        assert!((total(&one_hot) - 2.0 * total(&counts)).abs() < 1e-4);
        // Source 0's copy lands elsewhere than source 1's; unlikely sources add nothing.
        let other = conjoin(counts.clone(), &[1.0, 0.0, 0.0], 1 << 16);
        assert_ne!(one_hot, other);
        let mixed = conjoin(counts.clone(), &[0.5, 0.49, 0.01], 1 << 16);
        assert_eq!(mixed.len(), 3 * counts.len());
        assert!((total(&mixed) - 1.99 * total(&counts)).abs() < 1e-3);
    }

    #[test]
    fn the_same_text_hashes_the_same_everywhere() {
        // FNV-1a of "x" (0xaf63f54c86021707) mod 2^20: fixed, so an artifact's weights mean the same on every machine.
        assert_eq!(
            NgramHasher::new(1 << 20, NgramTokens::Words).bucket(&["x"]),
            136_967
        );
    }

    #[test]
    fn weighted_rows_have_unit_norm_and_rare_terms_weigh_more() {
        let h = NgramHasher::new(1 << 16, NgramTokens::Words);
        let rows: Vec<SparseRow> = ["the common word", "the common thing", "the rare zebra"]
            .iter()
            .map(|t| h.counts(t))
            .collect();
        let idf = inverse_document_frequency(&rows, h.buckets, 1);
        let w = weigh(rows[2].clone(), &idf);
        let norm: f32 = w.iter().map(|(_, v)| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-5);
        let the = h.bucket(&["the"]) as usize;
        let zebra = h.bucket(&["zebra"]) as usize;
        assert!(idf[zebra] > idf[the]);
    }
}
