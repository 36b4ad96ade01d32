//! The one loading entry point: [`load_scorer`] reads an artifact directory's method and loads
//! it as that method's [`Scorer`], as [`ScorerOptions`] say.

use std::path::{Path, PathBuf};

use candle_core::Device;

use crate::artifact::{load_tensors, member_dir, ArtifactError, Method, RouterMeta};
use crate::backbones::encoder_dir::default_backbone_dir;
use crate::calibration::SourceCalibration;
use crate::kernels::quant::Precision;
use crate::methods::clm::scorer::ClmScorer;
use crate::methods::ensemble::EnsembleScorer;
use crate::methods::knn::scorer::KnnScorer;
use crate::methods::lite::scorer::LiteScorer;
use crate::methods::mlm::scorer::MlmScorer;
use crate::methods::ngram::scorer::NgramScorer;
use crate::precision::serving_precision;
use crate::scorer::{ScoreError, Scorer};

/// How to load an artifact. The default: the default backbone, on the CPU, f32 weights, any
/// pool.
#[derive(Debug, Clone)]
pub struct ScorerOptions {
    /// The backbone directory (`None`: `$LOOKAHEAD_BACKBONE` or the cache). Its hash must match
    /// the artifact's. For CLM, a directory (or file) with the GGUF decoder; one without (e.g.
    /// the BERT backbone directory) falls back to the default decoder.
    pub backbone: Option<PathBuf>,
    /// Where encoder-based routers (lite, MLC, MLM) run, e.g. `Device::new_cuda(0)` in a `cuda`
    /// build; kNN keeps its index and the CLM decoder stays on the CPU.
    pub device: Device,
    /// [`Precision::Int8`] applies to lite, MLC and kNN artifacts on the CPU (see
    /// [`crate::kernels::quant`]); for MLM and CLM, or on a GPU, it is an error rather than a
    /// silent f32 fallback.
    pub precision: Precision,
    /// When set, the artifact must have been trained for exactly this pool, in order.
    pub models: Option<Vec<String>>,
}

impl Default for ScorerOptions {
    fn default() -> Self {
        Self {
            backbone: None,
            device: Device::Cpu,
            precision: Precision::F32,
            models: None,
        }
    }
}

/// Loads the artifact in `dir` as a scorer.
pub fn load_scorer(dir: &Path, options: &ScorerOptions) -> Result<Box<dyn Scorer>, ArtifactError> {
    let meta = RouterMeta::read(dir)?;
    if let Some(models) = &options.models {
        meta.check_models(models)?;
    }
    let method = meta.method;
    let int8 = serving_precision(&meta, options.precision, &options.device) == Precision::Int8;
    if int8 && matches!(method, Method::Mlm | Method::Clm) {
        return Err(ArtifactError::Unsupported(format!(
            "int8 precision applies to lite, mlc and knn artifacts, not {method}"
        )));
    }
    let backbone = options
        .backbone
        .clone()
        .unwrap_or_else(default_backbone_dir);
    let scorer: Box<dyn Scorer> = match method {
        Method::Lite | Method::Mlc => {
            let mut scorer = LiteScorer::load(dir, &backbone, &options.device)?;
            if int8 {
                scorer.quantize()?;
            }
            Box::new(scorer)
        }
        Method::Knn => {
            let mut scorer = KnnScorer::load(dir, &backbone)?;
            if int8 {
                scorer.quantize()?;
            }
            Box::new(scorer)
        }
        Method::Mlm => Box::new(MlmScorer::load(dir, &backbone, &options.device)?),
        Method::Clm => Box::new(ClmScorer::load(dir, &backbone)?),
        // f32 sums of a few hundred weights: int8 would save nothing.
        Method::Ngram => Box::new(NgramScorer::load(dir)?),
        // Each member as its own artifact says (its precision, its calibration).
        Method::Ensemble => {
            let members = meta
                .hyper
                .members
                .iter()
                .map(|&m| load_scorer(&member_dir(dir, m), options))
                .collect::<Result<Vec<_>, _>>()?;
            Box::new(EnsembleScorer::new(members).map_err(ArtifactError::Unsupported)?)
        }
    };
    Ok(match calibration(dir, &meta)? {
        Some(calibration) => Box::new(Calibrated {
            inner: scorer,
            calibration,
        }),
        None => scorer,
    })
}

/// The artifact's within-source calibration, when training fitted one.
fn calibration(dir: &Path, meta: &RouterMeta) -> Result<Option<SourceCalibration>, ArtifactError> {
    if !meta.hyper.source_calibration {
        return Ok(None);
    }
    let tensors = load_tensors(dir, &Device::Cpu)?;
    SourceCalibration::from_tensors(
        &tensors,
        meta.sources.len(),
        meta.models.len(),
        meta.hyper.ngram_tokens,
    )
    .map_err(|e| ArtifactError::Unsupported(e.to_string()))
}

/// A method's scorer re-scored by the artifact's within-source calibration: expected quality
/// (0..1) per model instead of the method's scores.
struct Calibrated {
    inner: Box<dyn Scorer>,
    calibration: SourceCalibration,
}

impl Scorer for Calibrated {
    fn models(&self) -> &[String] {
        self.inner.models()
    }

    fn score_batch(&self, prompts: &[&str]) -> Result<Vec<Vec<f32>>, ScoreError> {
        let rows = self.inner.score_batch(prompts)?;
        Ok(prompts
            .iter()
            .zip(rows)
            .map(|(p, row)| self.calibration.apply(p, &row))
            .collect())
    }

    fn is_trivial(&self) -> bool {
        self.inner.is_trivial()
    }
}
