//! What lite, MLC and kNN training share: they run on BERT states of the frozen lower layers,
//! encoded once into the on-disk [`StateCache`].

use candle_core::Tensor;

use crate::artifact::{HyperParams, Method, ResponseTarget};
use crate::backbones::encoder_dir::Backbone;
use crate::fit::{Example, TrainError, TrainRequest};
use crate::states::{state_key, StateCache, TextKind};

/// Errors unless the request fits a cached-state method on `backbone`: examples shaped like the
/// pool, a BERT backbone with enough layers, sane batch and prompt sizes.
pub fn check_request(req: &TrainRequest, backbone: &Backbone) -> Result<(), TrainError> {
    req.check_examples()?;
    let hp = &req.hyper;
    // Lite, MLC and kNN run on cached BERT states; ModernBERT backbones serve MLM.
    let layers = backbone
        .bert(match req.method {
            Method::Knn => "--method knn",
            Method::Mlc => "--method mlc",
            _ => "--method lite",
        })?
        .layers
        .len();
    if req.method != Method::Knn && hp.frozen_layers + hp.trainable_layers > layers {
        return Err(TrainError::Hyper(format!(
            "frozen ({}) + trainable ({}) layers exceed the backbone's {layers}",
            hp.frozen_layers, hp.trainable_layers
        )));
    }
    if hp.frozen_layers > layers || hp.batch_size == 0 || hp.max_prompt_tokens < 2 {
        return Err(TrainError::Hyper(
            "need frozen_layers <= backbone layers, batch_size >= 1, max_prompt_tokens >= 2".into(),
        ));
    }
    Ok(())
}

/// The request's prompt entries in the cache.
pub fn prompt_kind(req: &TrainRequest) -> TextKind {
    TextKind::Prompt(req.hyper.prompt_window())
}

/// The request's response entries in the cache: what lite's slots reconstruct.
pub fn response_kind(hp: &HyperParams) -> TextKind {
    let k = hp.slot_tokens;
    match hp.response_target {
        ResponseTarget::FirstTokens => TextKind::Response { k },
        ResponseTarget::Windows => TextKind::ResponseWindows { k },
    }
}

/// Opens the state cache and encodes what the request needs and it lacks: every prompt, and
/// for lite the responses (training: the objective; held out: the foresight check, when the
/// objective is on).
pub fn cached_states(backbone: &Backbone, req: &TrainRequest) -> Result<StateCache, TrainError> {
    let hp = &req.hyper;
    let mut cache = StateCache::open(&req.states_root, &backbone.hash, hp.frozen_layers)?;
    let prompt_kind = prompt_kind(req);
    let resp_kind = response_kind(hp);
    let mut texts: Vec<(TextKind, &str)> = req
        .all_examples()
        .map(|e| (prompt_kind, e.prompt.as_str()))
        .collect();
    if req.method == Method::Lite {
        let held_out = req.valid.iter().chain(req.test.unwrap_or(&[]));
        let checked = held_out.filter(|_| hp.lambda > 0.0);
        for e in req.train.iter().chain(checked) {
            texts.extend(e.responses.iter().map(|r| (resp_kind, r.as_str())));
        }
    }
    let encoded = cache.ensure(backbone, &texts, req.progress)?;
    tracing::info!(encoded, cached = cache.len(), "frozen-layer states ready");
    Ok(cache)
}

/// The cached prompt states of `examples`, in order.
pub fn prompt_states<'c>(
    cache: &'c StateCache,
    examples: &[Example],
    kind: TextKind,
) -> Result<Vec<&'c Tensor>, TrainError> {
    examples
        .iter()
        .map(|e| {
            cache.get(&state_key(kind, &e.prompt)).ok_or_else(|| {
                TrainError::Tensor(candle_core::Error::Msg(format!(
                    "state cache lost the prompt of {}",
                    e.id
                )))
            })
        })
        .collect()
}
