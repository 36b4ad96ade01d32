//! The text names of setting enums (`--method lite`, `"selection": "bce"`), from one table per
//! enum: [`setting_names!`] writes its `FromStr` (with an error that lists every name) and
//! `Display`, so the command line, `router.json` and error messages cannot drift apart.

/// `setting_names!(Type, "what it is", { Variant => "name", ... })` implements `FromStr` and
/// `Display` for `Type` with exactly those names; the names listed in an unknown value's error
/// keep the table's order.
macro_rules! setting_names {
    ($ty:ty, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl std::str::FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> std::result::Result<Self, String> {
                match s {
                    $($name => Ok(Self::$variant),)+
                    other => Err(format!(
                        "unknown {} {other:?} ({})",
                        $what,
                        [$($name),+].join(", ")
                    )),
                }
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(match self {
                    $(Self::$variant => $name,)+
                })
            }
        }
    };
}

pub(crate) use setting_names;

#[cfg(test)]
mod tests {
    use crate::artifact::{Method, ResponseTarget, SelectOn, SlotDesign};
    use crate::backbones::encoder_dir::Truncation;
    use crate::kernels::quant::Precision;
    use crate::wide::NgramTokens;

    /// Every name parses back to its variant, and the serde name `router.json` holds is the
    /// same text the command line takes.
    fn round_trips<T>(all: &[T])
    where
        T: std::str::FromStr<Err = String> + std::fmt::Display + PartialEq + std::fmt::Debug,
    {
        for v in all {
            assert_eq!(v.to_string().parse::<T>().as_ref(), Ok(v));
        }
    }

    fn serde_matches<T: serde::Serialize + std::fmt::Display>(all: &[T]) {
        for v in all {
            assert_eq!(serde_json::to_string(v).unwrap(), format!("\"{v}\""));
        }
    }

    #[test]
    fn every_setting_name_parses_back_and_matches_router_json() {
        use Method::*;
        let methods = [Lite, Mlc, Knn, Mlm, Clm, Ngram, Ensemble];
        round_trips(&methods);
        serde_matches(&methods);
        let slots = [SlotDesign::Joint, SlotDesign::Asymmetric];
        round_trips(&slots);
        serde_matches(&slots);
        let targets = [ResponseTarget::FirstTokens, ResponseTarget::Windows];
        round_trips(&targets);
        serde_matches(&targets);
        let selections = [SelectOn::Router, SelectOn::Bce];
        round_trips(&selections);
        serde_matches(&selections);
        let truncations = [Truncation::Head, Truncation::HeadTail];
        round_trips(&truncations);
        serde_matches(&truncations);
        let tokens = [
            NgramTokens::WordsAndPunctuation,
            NgramTokens::Words,
            NgramTokens::MultilingualWords,
        ];
        round_trips(&tokens);
        serde_matches(&tokens);
        round_trips(&[Precision::F32, Precision::Int8, Precision::Auto]);
    }

    #[test]
    fn an_unknown_name_is_refused_with_every_known_name() {
        assert_eq!(
            "cnn".parse::<Method>(),
            Err("unknown method \"cnn\" (lite, mlc, knn, mlm, clm, ngram, ensemble)".to_string())
        );
        assert_eq!(
            "fp16".parse::<Precision>(),
            Err("unknown precision \"fp16\" (auto, f32, int8)".to_string())
        );
        assert_eq!(
            "tail".parse::<Truncation>(),
            Err("unknown truncation \"tail\" (head, head-tail)".to_string())
        );
    }
}
