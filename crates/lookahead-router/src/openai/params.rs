//! OpenAI's sampling parameters, checked before any member is called: a wrong type or a value out
//! of OpenAI's documented range is answered 400 with the parameter named (`param`) and OpenAI's
//! codes (`invalid_type`, `integer_below_min_value`, `decimal_above_max_value`, ...), rather than
//! forwarded for every member to refuse in its own way (or, worse, to accept: `n: 10^12`). `null`
//! means "the default" for each, as in OpenAI's API. Parameters the router does not know pass
//! through unchecked: members may support more than OpenAI documents.

use super::value::{Kind, Scalar};
use super::{bad, Endpoint};
use crate::ApiError;

/// A checked parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Param {
    Temperature,
    TopP,
    MaxTokens,
    MaxCompletionTokens,
    MaxOutputTokens,
    N,
    PresencePenalty,
    FrequencyPenalty,
    TopLogprobs,
    Seed,
    BestOf,
}

/// What a parameter must be.
#[derive(Debug, Clone, Copy)]
enum Rule {
    Decimal { min: f64, max: f64 },
    Integer { min: i64, max: i64 },
}

impl Param {
    /// The parameter named `key`, if the router checks it (on some endpoint).
    pub(super) fn named(key: &str) -> Option<Param> {
        Some(match key {
            "temperature" => Param::Temperature,
            "top_p" => Param::TopP,
            "max_tokens" => Param::MaxTokens,
            "max_completion_tokens" => Param::MaxCompletionTokens,
            "max_output_tokens" => Param::MaxOutputTokens,
            "n" => Param::N,
            "presence_penalty" => Param::PresencePenalty,
            "frequency_penalty" => Param::FrequencyPenalty,
            "top_logprobs" => Param::TopLogprobs,
            "seed" => Param::Seed,
            "best_of" => Param::BestOf,
            _ => return None,
        })
    }

    /// Whether `endpoint` has the parameter (elsewhere it passes through unchecked).
    pub(super) fn applies_to(self, endpoint: Endpoint) -> bool {
        match self {
            _ if endpoint == Endpoint::Embeddings => false,
            Param::MaxCompletionTokens => endpoint == Endpoint::Chat,
            Param::TopLogprobs => matches!(endpoint, Endpoint::Chat | Endpoint::Responses),
            Param::MaxOutputTokens => endpoint == Endpoint::Responses,
            Param::BestOf => endpoint == Endpoint::Completions,
            // The Responses API has none of the others but sampling's two.
            Param::Temperature | Param::TopP => true,
            _ => endpoint != Endpoint::Responses,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Param::Temperature => "temperature",
            Param::TopP => "top_p",
            Param::MaxTokens => "max_tokens",
            Param::MaxCompletionTokens => "max_completion_tokens",
            Param::MaxOutputTokens => "max_output_tokens",
            Param::N => "n",
            Param::PresencePenalty => "presence_penalty",
            Param::FrequencyPenalty => "frequency_penalty",
            Param::TopLogprobs => "top_logprobs",
            Param::Seed => "seed",
            Param::BestOf => "best_of",
        }
    }

    /// OpenAI's documented ranges (token counts: at least 1, at most what a 32-bit count holds;
    /// the member's own limit is the member's to say).
    fn rule(self) -> Rule {
        match self {
            Param::Temperature => Rule::Decimal { min: 0.0, max: 2.0 },
            Param::TopP => Rule::Decimal { min: 0.0, max: 1.0 },
            Param::PresencePenalty | Param::FrequencyPenalty => Rule::Decimal {
                min: -2.0,
                max: 2.0,
            },
            Param::MaxTokens | Param::MaxCompletionTokens | Param::MaxOutputTokens => {
                Rule::Integer {
                    min: 1,
                    max: i64::from(i32::MAX),
                }
            }
            Param::N => Rule::Integer { min: 1, max: 128 },
            Param::TopLogprobs => Rule::Integer { min: 0, max: 20 },
            Param::Seed => Rule::Integer {
                min: i64::MIN,
                max: i64::MAX,
            },
            Param::BestOf => Rule::Integer { min: 1, max: 20 },
        }
    }

    /// `Ok` when `value` is null or what the parameter must be.
    pub(super) fn check(self, value: &Scalar<'_>) -> Result<(), ApiError> {
        let number = match value {
            Scalar::Other(Kind::Null) => return Ok(()),
            Scalar::Number(n) => *n,
            other => return Err(self.wrong_type(other)),
        };
        match self.rule() {
            Rule::Decimal { min, max } => {
                let v = number.value;
                if v < min {
                    return Err(self.out_of_range("decimal_below_min_value", ">=", min, v));
                }
                if v > max {
                    return Err(self.out_of_range("decimal_above_max_value", "<=", max, v));
                }
            }
            Rule::Integer { min, max } => {
                if !number.integer {
                    return Err(self.wrong_type(value));
                }
                let v = number.value;
                if v < min as f64 {
                    return Err(self.out_of_range("integer_below_min_value", ">=", min, v));
                }
                if v > max as f64 {
                    return Err(self.out_of_range("integer_above_max_value", "<=", max, v));
                }
            }
        }
        Ok(())
    }

    fn wrong_type(self, got: &Scalar<'_>) -> ApiError {
        let expected = match self.rule() {
            Rule::Decimal { .. } => "a decimal",
            Rule::Integer { .. } => "an integer",
        };
        let got = match got {
            Scalar::Str(_) => "a string",
            Scalar::Bool(_) => "a boolean",
            Scalar::Number(_) => "a decimal",
            Scalar::Other(Kind::Array) => "an array",
            Scalar::Other(Kind::Object) => "an object",
            Scalar::Other(_) => "another type",
        };
        bad(
            "invalid_type",
            format!(
                "Invalid type for '{}': expected {expected}, but got {got} instead.",
                self.name()
            ),
        )
        .with_param(self.name())
    }

    fn out_of_range(
        self,
        code: &'static str,
        op: &str,
        bound: impl std::fmt::Display,
        got: f64,
    ) -> ApiError {
        let what = code.replace('_', " ");
        bad(
            code,
            format!(
                "Invalid '{}': {what}. Expected a value {op} {bound}, but got {got} instead.",
                self.name()
            ),
        )
        .with_param(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::value::Number;
    use std::borrow::Cow;

    fn num(value: f64, integer: bool) -> Scalar<'static> {
        Scalar::Number(Number { value, integer })
    }

    #[test]
    fn types_and_ranges_are_openais() {
        assert!(Param::Temperature.check(&num(0.7, false)).is_ok());
        assert!(
            Param::Temperature.check(&num(1.0, true)).is_ok(),
            "1 is a decimal too"
        );
        assert!(Param::Temperature.check(&Scalar::Other(Kind::Null)).is_ok());
        let e = Param::Temperature
            .check(&Scalar::Str(Cow::Borrowed("hot")))
            .unwrap_err();
        assert_eq!((e.code, e.param), ("invalid_type", Some("temperature")));
        assert!(e.message.contains("got a string"), "{}", e.message);
        let e = Param::Temperature.check(&num(2.5, false)).unwrap_err();
        assert_eq!(e.code, "decimal_above_max_value");
        let e = Param::MaxTokens.check(&num(-5.0, true)).unwrap_err();
        assert_eq!(
            (e.code, e.param),
            ("integer_below_min_value", Some("max_tokens"))
        );
        assert!(e.message.contains("got -5"), "{}", e.message);
        let e = Param::N.check(&num(1e12, true)).unwrap_err();
        assert_eq!((e.code, e.param), ("integer_above_max_value", Some("n")));
        let e = Param::N.check(&num(1.5, false)).unwrap_err();
        assert_eq!(e.code, "invalid_type", "a fraction is not an integer");
        assert!(Param::Seed.check(&num(-42.0, true)).is_ok());
        assert!(Param::PresencePenalty.check(&num(-2.0, true)).is_ok());
    }

    #[test]
    fn endpoint_specific_parameters_are_checked_only_there() {
        let best_of = Param::named("best_of").unwrap();
        assert!(!best_of.applies_to(Endpoint::Chat));
        assert!(best_of.applies_to(Endpoint::Completions));
        assert!(!Param::named("top_logprobs")
            .unwrap()
            .applies_to(Endpoint::Completions));
        assert_eq!(Param::named("logit_bias"), None);
    }
}
