//! kNN baseline: cosine neighbours over pooled prompt embeddings; a candidate's predicted quality
//! is its mean score over the `k` nearest training prompts.

use candle_core::{Result, Tensor, D};

/// Training prompts' unit-norm embeddings and their per-model scores.
pub struct KnnIndex {
    /// `[N, H]`, rows L2-normalised.
    pub embeddings: Tensor,
    /// `[N, P]` per-model quality (scaled 0..1).
    pub scores: Tensor,
    pub k: usize,
}

/// Rows divided by their L2 norm.
pub fn l2_normalise(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    x.broadcast_div(&norm)
}

impl KnnIndex {
    pub fn new(embeddings: &Tensor, scores: Tensor, k: usize) -> Result<Self> {
        Ok(Self {
            embeddings: l2_normalise(embeddings)?,
            scores,
            k: k.max(1),
        })
    }

    /// `queries`: `[B, H]` (any norm) -> `[B][P]` mean neighbour scores.
    pub fn predict(&self, queries: &Tensor) -> Result<Vec<Vec<f32>>> {
        let q = l2_normalise(queries)?;
        let sims: Vec<Vec<f32>> = q.matmul(&self.embeddings.t()?)?.to_vec2()?;
        let scores: Vec<Vec<f32>> = self.scores.to_vec2()?;
        let p = self.scores.dim(1)?;
        Ok(sims
            .iter()
            .map(|row| {
                let mut idx: Vec<usize> = (0..row.len()).collect();
                let k = self.k.min(idx.len());
                if k == 0 {
                    return vec![0.0; p];
                }
                idx.select_nth_unstable_by(k - 1, |&a, &b| row[b].total_cmp(&row[a]));
                let mut out = vec![0f32; p];
                for &i in &idx[..k] {
                    for (o, s) in out.iter_mut().zip(&scores[i]) {
                        *o += s / k as f32;
                    }
                }
                out
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn neighbours_vote_with_their_scores() -> Result<()> {
        let dev = Device::Cpu;
        let emb = Tensor::new(&[[1f32, 0.], [0.9, 0.1], [0., 1.], [0.1, 0.9]], &dev)?;
        let scores = Tensor::new(&[[1f32, 0.], [1., 0.], [0., 1.], [0., 0.5]], &dev)?;
        let knn = KnnIndex::new(&emb, scores, 2)?;
        let out = knn.predict(&Tensor::new(&[[2f32, 0.1], [0., 3.]], &dev)?)?;
        assert_eq!(out[0], vec![1.0, 0.0]);
        assert_eq!(out[1], vec![0.0, 0.75]);
        Ok(())
    }
}
