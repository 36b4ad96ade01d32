//! The costWeight search of `lookahead eval --calibrate`, on scores computed once: each record
//! goes to `argmax(prediction - weight x rank price)` (ties to the first member, as the router's
//! stable sort does), exactly as the router ranks. A record's choice changes only where two
//! members' lines cross, at `w = (pred_i - pred_j) / (price_i - price_j)`; so the sweep visits
//! every crossing in increasing order, updating only the records that cross there, and checks the
//! targets at each crossing and inside each interval between crossings. That covers every
//! distinct routing of the records (no grid to miss a narrow interval, no monotonicity assumed:
//! the share of an expensive member need not fall steadily), and the first weight that meets
//! the targets is the smallest. Inside an interval the weight reported is the shortest decimal
//! there, so the YAML snippet carries `0.09`, not `0.0818181...`. Every reported point is
//! recomputed from scratch at its weight, so what is printed is what that weight does.

/// The records as the search sees them, in pool order.
#[derive(Debug, Clone)]
pub struct Records {
    /// The router's predicted score per record and member.
    pub predictions: Vec<Vec<f64>>,
    /// The price the router ranks by, per member: the mean of input and output per MTok.
    pub rank_price: Vec<f64>,
    /// The price of answering each record with each member (per request).
    pub request_price: Vec<Vec<f64>>,
    /// The scaled (0–100) score of each member's recorded answer.
    pub quality: Vec<Vec<f64>>,
    /// Each record's source (index), for the equal-weight score.
    pub source: Vec<usize>,
}

/// What routing the records with one weight gives.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub weight: f64,
    /// Mean over sources of each source's mean scaled score (the paper's metric).
    pub equal_weight: f64,
    /// Mean scaled score over all records.
    pub pooled: f64,
    /// Fraction of records routed to each member.
    pub share: Vec<f64>,
    /// Mean price per request.
    pub mean_price: f64,
}

/// A limit the calibrated weight must meet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// At most `fraction` of the records routed to member `member`.
    MaxShare { member: usize, fraction: f64 },
    /// Mean price per request at most this.
    MaxMeanPrice(f64),
}

impl Target {
    /// The measure the target bounds, at `p`.
    pub fn measure(&self, p: &Point) -> f64 {
        match *self {
            Target::MaxShare { member, .. } => p.share.get(member).copied().unwrap_or(0.0),
            Target::MaxMeanPrice(_) => p.mean_price,
        }
    }

    fn limit(&self) -> f64 {
        match *self {
            Target::MaxShare { fraction, .. } => fraction,
            Target::MaxMeanPrice(price) => price,
        }
    }

    /// Met at `p` (a relative slack of 1e-12 forgives the summation's rounding).
    pub fn met(&self, p: &Point) -> bool {
        self.measure(p) <= self.limit() + 1e-12 * self.limit().abs().max(1.0)
    }
}

/// The closest a target came, for the error when none is met.
#[derive(Debug, Clone, PartialEq)]
pub struct Best {
    pub target: Target,
    /// The lowest measure any weight reached, and the smallest weight reaching it.
    pub measure: f64,
    pub weight: f64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SearchError {
    #[error("no records to calibrate on")]
    Empty,
    #[error("records disagree on the pool size (record {0})")]
    Ragged(usize),
    #[error("no costWeight meets the targets on these records")]
    Unreachable(Vec<Best>),
}

impl Records {
    fn check(&self) -> Result<(), SearchError> {
        let n = self.predictions.len();
        if n == 0 {
            return Err(SearchError::Empty);
        }
        let m = self.rank_price.len();
        for r in 0..n {
            let row_ok = |rows: &[Vec<f64>]| rows.get(r).is_some_and(|row| row.len() == m);
            if !(row_ok(&self.predictions) && row_ok(&self.request_price) && row_ok(&self.quality))
                || self.source.get(r).is_none()
            {
                return Err(SearchError::Ragged(r));
            }
        }
        Ok(())
    }

    /// The member record `r` goes to at weight `w`.
    fn choice(&self, r: usize, w: f64) -> usize {
        let utility = |j: usize| self.predictions[r][j] - w * self.rank_price[j];
        (1..self.rank_price.len()).fold(
            0,
            |best, j| {
                if utility(j) > utility(best) {
                    j
                } else {
                    best
                }
            },
        )
    }

    /// Every record routed at `w`, measured from scratch.
    pub fn point(&self, w: f64) -> Point {
        let choices: Vec<usize> = (0..self.predictions.len())
            .map(|r| self.choice(r, w))
            .collect();
        Tally::of(self, &choices).point(w)
    }

    /// The weights where some record's choice may change (0 included), ascending, each with its
    /// records.
    fn crossings(&self) -> Vec<(f64, Vec<usize>)> {
        let m = self.rank_price.len();
        let mut events: Vec<(f64, usize)> = Vec::new();
        for (r, pred) in self.predictions.iter().enumerate() {
            for i in 0..m {
                for j in i + 1..m {
                    let dp = self.rank_price[i] - self.rank_price[j];
                    let w = (pred[i] - pred[j]) / dp;
                    // Equal predictions cross at 0: the tie goes to the first member at 0, to
                    // the cheaper one at any weight above.
                    if dp != 0.0 && w.is_finite() && w >= 0.0 {
                        events.push((w, r));
                    }
                }
            }
        }
        events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut grouped: Vec<(f64, Vec<usize>)> = Vec::new();
        for (w, r) in events {
            match grouped.last_mut() {
                Some((last, rs)) if *last == w => {
                    if rs.last() != Some(&r) {
                        rs.push(r);
                    }
                }
                _ => grouped.push((w, vec![r])),
            }
        }
        grouped
    }

    /// The weights where decisions change: the first positive and the last crossing (for the
    /// table's geometric grid).
    pub fn active_range(&self) -> Option<(f64, f64)> {
        let c = self.crossings();
        let first = c.iter().map(|(w, _)| *w).find(|w| *w > 0.0)?;
        Some((first, c.last()?.0))
    }
}

/// Running sums of one routing of the records, updated record by record.
struct Tally {
    choices: Vec<usize>,
    counts: Vec<usize>,
    by_source: Vec<(f64, usize)>,
    quality: f64,
    price: f64,
}

impl Tally {
    fn of(records: &Records, choices: &[usize]) -> Self {
        let sources = records.source.iter().max().map_or(0, |s| s + 1);
        let mut t = Tally {
            choices: choices.to_vec(),
            counts: vec![0; records.rank_price.len()],
            by_source: vec![(0.0, 0); sources],
            quality: 0.0,
            price: 0.0,
        };
        for (r, &j) in choices.iter().enumerate() {
            t.add(records, r, j, 1.0);
        }
        t
    }

    fn add(&mut self, records: &Records, r: usize, j: usize, sign: f64) {
        let q = records.quality[r][j];
        let s = &mut self.by_source[records.source[r]];
        s.0 += sign * q;
        if sign > 0.0 {
            self.counts[j] += 1;
            s.1 += 1;
        } else {
            self.counts[j] -= 1;
            s.1 -= 1;
        }
        self.quality += sign * q;
        self.price += sign * records.request_price[r][j];
    }

    fn set(&mut self, records: &Records, r: usize, j: usize) {
        let old = self.choices[r];
        if old != j {
            self.add(records, r, old, -1.0);
            self.add(records, r, j, 1.0);
            self.choices[r] = j;
        }
    }

    fn point(&self, weight: f64) -> Point {
        let n = self.choices.len().max(1) as f64;
        let means: Vec<f64> = self
            .by_source
            .iter()
            .filter(|(_, count)| *count > 0)
            .map(|(sum, count)| sum / *count as f64)
            .collect();
        Point {
            weight,
            equal_weight: means.iter().sum::<f64>() / means.len().max(1) as f64,
            pooled: self.quality / n,
            share: self.counts.iter().map(|&c| c as f64 / n).collect(),
            mean_price: self.price / n,
        }
    }
}

/// The shortest decimal in the open interval `(lo, hi)` (`hi` may be infinite), or `None`.
pub fn shortest_between(lo: f64, hi: f64) -> Option<f64> {
    if !(lo.is_finite() && lo >= 0.0 && hi > lo) {
        return None;
    }
    let top = if lo > 0.0 {
        lo.log10().floor() as i32
    } else {
        0
    };
    for digits in 0..=17 {
        let k = digits - top; // the step is 10^-k
        let x = if k >= 0 {
            let scale = 10f64.powi(k);
            ((lo * scale).floor() + 1.0) / scale
        } else {
            let step = 10f64.powi(-k);
            ((lo / step).floor() + 1.0) * step
        };
        if x > lo && x < hi {
            return Some(x);
        }
    }
    None
}

/// Keeps, per target, the lowest measure seen and the first weight that reached it.
fn note(p: &Point, best: &mut [Best]) {
    for b in best.iter_mut() {
        let m = b.target.measure(p);
        if m < b.measure - 1e-12 {
            b.measure = m;
            b.weight = p.weight;
        }
    }
}

/// The smallest weight meeting every target, with what it does; or, when no weight does, the
/// closest each target came.
pub fn calibrate(records: &Records, targets: &[Target]) -> Result<Point, SearchError> {
    records.check()?;
    let meets = |p: &Point| targets.iter().all(|t| t.met(p));
    let mut best: Vec<Best> = targets
        .iter()
        .map(|&target| Best {
            target,
            measure: f64::INFINITY,
            weight: 0.0,
        })
        .collect();
    let choices: Vec<usize> = (0..records.predictions.len())
        .map(|r| records.choice(r, 0.0))
        .collect();
    let mut tally = Tally::of(records, &choices);
    // A candidate found on the running sums is confirmed from scratch before it is reported.
    let confirm = |w: f64| Some(records.point(w)).filter(|p| meets(p));
    let start = tally.point(0.0);
    note(&start, &mut best);
    if meets(&start) {
        if let Some(p) = confirm(0.0) {
            return Ok(p);
        }
    }
    let crossings = records.crossings();
    for (k, (w, rs)) in crossings.iter().enumerate() {
        let next = crossings.get(k + 1).map_or(f64::INFINITY, |c| c.0);
        for &r in rs {
            tally.set(records, r, records.choice(r, *w));
        }
        let at = tally.point(*w);
        note(&at, &mut best);
        if meets(&at) {
            if let Some(p) = confirm(*w) {
                return Ok(p);
            }
        }
        let inside = shortest_between(*w, next).unwrap_or(*w);
        let probe = if next.is_finite() {
            (w + next) / 2.0
        } else {
            inside
        };
        for &r in rs {
            tally.set(records, r, records.choice(r, probe));
        }
        let within = tally.point(inside);
        note(&within, &mut best);
        if meets(&within) {
            if let Some(p) = confirm(inside).or_else(|| confirm(probe)) {
                return Ok(p);
            }
        }
    }
    Err(SearchError::Unreachable(best))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two members: 0 expensive (rank price 1, 1.0 per request), 1 free to rank (0, 0.01 per
    /// request); record r's predictions [0.9, 0.9 - gap_r], so it crosses at w = gap_r (ties to
    /// member 0); qualities [100, 0], one source. Binary-exact gaps keep the ties exact.
    fn records(gaps: &[f64]) -> Records {
        Records {
            predictions: gaps.iter().map(|g| vec![0.9, 0.9 - g]).collect(),
            rank_price: vec![1.0, 0.0],
            request_price: gaps.iter().map(|_| vec![1.0, 0.01]).collect(),
            quality: gaps.iter().map(|_| vec![100.0, 0.0]).collect(),
            source: vec![0; gaps.len()],
        }
    }

    const GAPS: [f64; 4] = [0.125, 0.25, 0.375, 0.5];

    fn share(member: usize, fraction: f64) -> Target {
        Target::MaxShare { member, fraction }
    }

    #[test]
    fn the_smallest_weight_meeting_a_share_is_found_with_what_it_does() {
        let recs = records(&GAPS);
        let p = calibrate(&recs, &[share(0, 0.5)]).unwrap();
        // Two records must have left member 0: w > 0.25; the shortest decimal above is 0.3.
        assert_eq!(p.weight, 0.3);
        // Met exactly at the boundary: the share is exactly the fraction (<= is inclusive).
        assert_eq!(p.share, vec![0.5, 0.5]);
        assert_eq!((p.pooled, p.equal_weight), (50.0, 50.0));
        assert!((p.mean_price - (1.0 + 0.01) / 2.0).abs() < 1e-12);
        // At the crossing itself the tie keeps member 0: not yet met.
        assert_eq!(recs.point(0.25).share[0], 0.75);
        // Already met at 0: weight 0.
        assert_eq!(calibrate(&recs, &[share(0, 1.0)]).unwrap().weight, 0.0);
    }

    #[test]
    fn a_tie_at_a_crossing_goes_to_the_first_member_as_in_the_router() {
        // Predictions [0.5, 0.0] and rank prices [1, 0]: equal utilities at exactly w = 0.5,
        // where member 0 keeps the record; member 1 takes it only above 0.5.
        let recs = Records {
            predictions: vec![vec![0.5, 0.0]],
            rank_price: vec![1.0, 0.0],
            request_price: vec![vec![1.0, 0.0]],
            quality: vec![vec![100.0, 50.0]],
            source: vec![0],
        };
        assert_eq!(recs.point(0.5).share, vec![1.0, 0.0]);
        let p = calibrate(&recs, &[share(0, 0.0)]).unwrap();
        assert_eq!(p.weight, 0.6);
        assert_eq!(p.share, vec![0.0, 1.0]);
        // The cheap member first: the tie is its own, so the target is met at the crossing.
        let swapped = Records {
            predictions: vec![vec![0.0, 0.5]],
            rank_price: vec![0.0, 1.0],
            request_price: vec![vec![0.0, 1.0]],
            quality: vec![vec![50.0, 100.0]],
            source: vec![0],
        };
        let p = calibrate(&swapped, &[share(1, 0.0)]).unwrap();
        assert_eq!(p.weight, 0.5, "met exactly at the crossing");
    }

    #[test]
    fn a_mean_price_target_and_both_targets_together() {
        let recs = records(&GAPS);
        // Mean price <= 0.3: one record left on member 0 ((1 + 3 x 0.01) / 4 = 0.2575): w > 0.375.
        let p = calibrate(&recs, &[Target::MaxMeanPrice(0.3)]).unwrap();
        assert_eq!(p.weight, 0.4);
        assert_eq!(p.share[0], 0.25);
        let both = [share(0, 0.75), Target::MaxMeanPrice(0.3)];
        assert_eq!(
            calibrate(&recs, &both).unwrap(),
            p,
            "the stricter target decides"
        );
    }

    #[test]
    fn the_search_does_not_assume_the_share_falls_steadily() {
        // Rank prices [5, 10, 0], predictions [0.5, 0.9, 0.0]: member 1 below w = 0.08,
        // member 0 from 0.08 to 0.1, member 2 above: member 0's share rises, then falls.
        let recs = Records {
            predictions: vec![vec![0.5, 0.9, 0.0]],
            rank_price: vec![5.0, 10.0, 0.0],
            request_price: vec![vec![5.0, 10.0, 0.0]],
            quality: vec![vec![60.0, 90.0, 10.0]],
            source: vec![0],
        };
        let p = calibrate(&recs, &[Target::MaxMeanPrice(5.0)]).unwrap();
        assert_eq!(p.share, vec![1.0, 0.0, 0.0]);
        assert!(p.weight >= 0.08 && p.weight < 0.1, "{}", p.weight);
        assert_eq!(recs.point(0.2).share, vec![0.0, 0.0, 1.0]);
        let none_on_0 = calibrate(&recs, &[share(0, 0.0)]).unwrap();
        assert_eq!(none_on_0.weight, 0.0, "member 0 has no share at weight 0");
    }

    #[test]
    fn an_unreachable_target_says_the_best_reachable() {
        // Equal rank prices: no weight changes anything, member 0 keeps every record.
        let mut recs = records(&GAPS);
        recs.rank_price = vec![1.0, 1.0];
        let Err(SearchError::Unreachable(best)) = calibrate(&recs, &[share(0, 0.5)]) else {
            panic!("reachable?")
        };
        assert_eq!((best[0].measure, best[0].weight), (1.0, 0.0));
        // Below the cheapest member's price: the best is every record on it, from w > 0.5.
        let recs = records(&GAPS);
        let Err(SearchError::Unreachable(best)) = calibrate(&recs, &[Target::MaxMeanPrice(0.001)])
        else {
            panic!("reachable?")
        };
        assert!((best[0].measure - 0.01).abs() < 1e-12);
        assert_eq!(best[0].weight, 0.6);
        assert_eq!(calibrate(&records(&[]), &[]), Err(SearchError::Empty));
    }

    #[test]
    fn equal_predictions_go_to_the_cheaper_member_at_any_positive_weight() {
        // Both members predicted alike: member 0 (first) at weight 0, member 1 (cheaper) above.
        let recs = Records {
            predictions: vec![vec![1.0, 1.0], vec![1.0, 0.0]],
            rank_price: vec![1.0, 0.5],
            request_price: vec![vec![1.0, 0.5]; 2],
            quality: vec![vec![100.0, 100.0], vec![100.0, 0.0]],
            source: vec![0, 1],
        };
        assert_eq!(recs.point(0.0).share, vec![1.0, 0.0]);
        let p = calibrate(&recs, &[share(0, 0.5)]).unwrap();
        assert_eq!(p.share, vec![0.5, 0.5]);
        assert!(p.weight > 0.0 && p.weight <= 2.0, "{}", p.weight);
        assert_eq!((p.equal_weight, p.pooled), (100.0, 100.0));
        assert_eq!(p.weight, 1.0, "the shortest decimal in (0, 2)");
    }

    #[test]
    fn shortest_decimals_inside_intervals() {
        assert_eq!(shortest_between(0.0818, 0.1), Some(0.09));
        assert_eq!(shortest_between(0.25, 0.375), Some(0.3));
        assert_eq!(shortest_between(2.2, f64::INFINITY), Some(3.0));
        assert_eq!(shortest_between(0.0, 1e-9), Some(1e-10));
        assert_eq!(shortest_between(123.4, 123.5), Some(123.41));
        assert_eq!(shortest_between(1.0, 1.0), None);
    }
}
