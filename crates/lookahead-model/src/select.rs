//! The routing decision from a score vector: argmax, or quality traded against price.

/// Index of the model to route to: argmax of `quality`, or of `quality - cost_weight * price`
/// when prices are given (`prices[i]` for `models[i]`). `None` for an empty pool.
pub fn select(quality: &[f32], prices: Option<&[f64]>, cost_weight: f64) -> Option<usize> {
    let utility = |i: usize| -> f64 {
        let q = f64::from(quality[i]);
        match prices {
            Some(p) => q - cost_weight * p.get(i).copied().unwrap_or(0.0),
            None => q,
        }
    };
    (0..quality.len()).max_by(|&a, &b| utility(a).total_cmp(&utility(b)))
}

/// Model indices ordered best first by the same utility as [`select`].
pub fn rank(quality: &[f32], prices: Option<&[f64]>, cost_weight: f64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..quality.len()).collect();
    let utility = |i: usize| -> f64 {
        let q = f64::from(quality[i]);
        q - prices
            .map(|p| cost_weight * p.get(i).copied().unwrap_or(0.0))
            .unwrap_or(0.0)
    };
    idx.sort_by(|&a, &b| utility(b).total_cmp(&utility(a)));
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_trades_quality_for_price() {
        let q = [0.9f32, 0.8, 0.2];
        assert_eq!(select(&q, None, 0.0), Some(0));
        let prices = [10.0, 1.0, 0.0];
        assert_eq!(select(&q, Some(&prices), 0.05), Some(1));
        assert_eq!(select(&q, Some(&prices), 10.0), Some(2));
        assert_eq!(rank(&q, Some(&prices), 0.05), vec![1, 0, 2]);
        assert_eq!(select(&[], None, 0.0), None);
    }
}
