//! The token ids Lookahead-MLM takes from an encoder's vocabulary:
//! `[CLS]`, `[SEP]`, `[PAD]` and one identity token per candidate. Here, beside the tokenizer,
//! because both training and artifact loading report a vocabulary that lacks them.

use tokenizers::Tokenizer;

/// Token ids the layout needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlmSpecial {
    /// First token of every tokenised prompt: the routing head reads its state.
    pub cls: u32,
    pub sep: u32,
    /// Fills padded positions (masked out of attention).
    pub pad: u32,
    /// Identity token of candidate `t` (`[unused_t]`).
    pub identity: Vec<u32>,
}

/// Why a tokenizer cannot lay out MLM sequences.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MlmTokenError {
    #[error("the backbone's tokenizer has no {token} token: Lookahead-MLM needs [CLS], [SEP], [PAD] and one identity token [unused0]..[unused{}] per candidate", models.saturating_sub(1))]
    Missing { token: String, models: usize },
    #[error("the backbone's tokenizer does not start a prompt with [CLS] (id {cls}) but with {found:?}: the routing head reads position 0")]
    NoLeadingCls { cls: u32, found: Option<u32> },
}

impl MlmSpecial {
    /// `[CLS]`, `[SEP]`, `[PAD]` and `[unused_0..P]` from the tokenizer's vocabulary (BERT and
    /// ModernBERT vocabularies both have them). `[MASK]` is not needed: masked positions hold
    /// their candidate's identity token.
    pub fn from_tokenizer(
        tok: &Tokenizer,
        models: usize,
    ) -> std::result::Result<Self, MlmTokenError> {
        let id = |t: &str| {
            tok.token_to_id(t).ok_or_else(|| MlmTokenError::Missing {
                token: t.to_string(),
                models,
            })
        };
        Ok(Self {
            cls: id("[CLS]")?,
            sep: id("[SEP]")?,
            pad: id("[PAD]")?,
            identity: (0..models)
                .map(|t| id(&format!("[unused{t}]")))
                .collect::<std::result::Result<_, _>>()?,
        })
    }

    /// Errors unless `prompt` (tokenised with special tokens) starts with `[CLS]`.
    pub fn check_prompt(&self, prompt: &[u32]) -> std::result::Result<(), MlmTokenError> {
        match prompt.first() {
            Some(&c) if c == self.cls => Ok(()),
            found => Err(MlmTokenError::NoLeadingCls {
                cls: self.cls,
                found: found.copied(),
            }),
        }
    }
}
