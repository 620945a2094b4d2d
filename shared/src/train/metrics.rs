//! Evaluation metrics: accuracy, macro-F1 and Matthews correlation for classification; Pearson and
//! Spearman (tie-aware ranks) for regression. Degenerate inputs give 0, never NaN, so that metrics can
//! go into a contribution manifest.

use std::collections::{BTreeMap, BTreeSet};

/// Share of predictions equal to the gold label (0 for no examples).
pub fn accuracy(gold: &[u32], pred: &[u32]) -> f64 {
    if gold.is_empty() {
        return 0.0;
    }
    let right = gold.iter().zip(pred).filter(|(g, p)| g == p).count();
    right as f64 / gold.len() as f64
}

/// Unweighted mean of per-class F1 over the classes present in gold or predictions (as scikit-learn's
/// `f1_score(average="macro")`; a class with no true or predicted positives scores 0).
pub fn macro_f1(gold: &[u32], pred: &[u32]) -> f64 {
    let classes: BTreeSet<u32> = gold.iter().chain(pred).copied().collect();
    if classes.is_empty() {
        return 0.0;
    }
    let f1s: f64 = classes
        .iter()
        .map(|&c| {
            let tp = gold
                .iter()
                .zip(pred)
                .filter(|&(&g, &p)| g == c && p == c)
                .count();
            let fp = pred.iter().filter(|&&p| p == c).count() - tp;
            let fn_ = gold.iter().filter(|&&g| g == c).count() - tp;
            let denom = 2 * tp + fp + fn_;
            if denom == 0 {
                0.0
            } else {
                2.0 * tp as f64 / denom as f64
            }
        })
        .sum();
    f1s / classes.len() as f64
}

/// Matthews correlation coefficient, multiclass form (Gorodkin's R_K, as scikit-learn's
/// `matthews_corrcoef`); 0 when either side is constant.
pub fn matthews(gold: &[u32], pred: &[u32]) -> f64 {
    let k = gold
        .iter()
        .chain(pred)
        .copied()
        .max()
        .map_or(0, |m| m as usize + 1);
    let (mut t, mut p) = (vec![0f64; k], vec![0f64; k]);
    let mut correct = 0f64;
    for (&g, &q) in gold.iter().zip(pred) {
        t[g as usize] += 1.0;
        p[q as usize] += 1.0;
        if g == q {
            correct += 1.0;
        }
    }
    let s = gold.len() as f64;
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let cov_tp = correct * s - dot(&t, &p);
    let cov_pp = s * s - dot(&p, &p);
    let cov_tt = s * s - dot(&t, &t);
    if cov_pp * cov_tt == 0.0 {
        return 0.0;
    }
    cov_tp / (cov_tt * cov_pp).sqrt()
}

/// Pearson correlation; 0 when either side has no variance or there are fewer than two values.
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len());
    if n < 2 {
        return 0.0;
    }
    let mean = |v: &[f64]| v[..n].iter().sum::<f64>() / n as f64;
    let (mx, my) = (mean(x), mean(y));
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (dx, dy) = (x[i] - mx, y[i] - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx == 0.0 || syy == 0.0 {
        return 0.0;
    }
    sxy / (sxx * syy).sqrt()
}

/// 1-based ranks, ties sharing the mean of the ranks they span (scipy's `rankdata(method="average")`).
pub fn ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut out = vec![0.0; x.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && x[order[end]] == x[order[start]] {
            end += 1;
        }
        let rank = (start + end + 1) as f64 / 2.0;
        for &i in &order[start..end] {
            out[i] = rank;
        }
        start = end;
    }
    out
}

/// Spearman correlation: Pearson on tie-aware ranks.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&ranks(x), &ranks(y))
}

/// Metric name → value for a classification evaluation.
pub fn classification_metrics(gold: &[u32], pred: &[u32]) -> BTreeMap<String, f64> {
    BTreeMap::from([
        ("accuracy".to_string(), accuracy(gold, pred)),
        ("macro_f1".to_string(), macro_f1(gold, pred)),
        ("mcc".to_string(), matthews(gold, pred)),
    ])
}

/// Metric name → value for a regression evaluation.
pub fn regression_metrics(gold: &[f64], pred: &[f64]) -> BTreeMap<String, f64> {
    BTreeMap::from([
        ("pearson".to_string(), pearson(gold, pred)),
        ("spearman".to_string(), spearman(gold, pred)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    /// Three classes, worked by hand: every class has F1 = 2/3; MCC = (4·6 − 13) / (36 − 14) = 1/2.
    #[test]
    fn three_class_by_hand() {
        let gold = [0, 0, 1, 1, 1, 2];
        let pred = [0, 1, 1, 1, 2, 2];
        close(accuracy(&gold, &pred), 4.0 / 6.0);
        close(macro_f1(&gold, &pred), 2.0 / 3.0);
        close(matthews(&gold, &pred), 0.5);
    }

    /// Binary: tp 1, fn 1, tn 2, fp 0 → MCC = 2 / √12.
    #[test]
    fn binary_mcc_and_f1() {
        let gold = [1, 1, 0, 0];
        let pred = [1, 0, 0, 0];
        close(matthews(&gold, &pred), 2.0 / 12f64.sqrt());
        // class 0: P 2/3, R 1 → F1 0.8; class 1: P 1, R 1/2 → F1 2/3.
        close(macro_f1(&gold, &pred), (0.8 + 2.0 / 3.0) / 2.0);
    }

    #[test]
    fn degenerate_inputs_give_zero_not_nan() {
        close(matthews(&[1, 1, 1], &[1, 1, 1]), 0.0);
        close(matthews(&[0, 1, 1], &[1, 1, 1]), 0.0);
        close(pearson(&[1.0, 1.0], &[1.0, 2.0]), 0.0);
        close(accuracy(&[], &[]), 0.0);
        close(macro_f1(&[], &[]), 0.0);
        close(spearman(&[1.0], &[2.0]), 0.0);
    }

    /// Pearson of (1,2,3,4) and (2,4,5,9): 11 / √(5·26).
    #[test]
    fn pearson_by_hand() {
        close(
            pearson(&[1.0, 2.0, 3.0, 4.0], &[2.0, 4.0, 5.0, 9.0]),
            11.0 / 130f64.sqrt(),
        );
        close(pearson(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), -1.0);
    }

    /// Ties share their mean rank: x ranks (1, 2.5, 2.5, 4); ρ = 4.5 / √(4.5·5) (scipy: 0.9486832980505138).
    #[test]
    fn spearman_with_ties() {
        assert_eq!(ranks(&[1.0, 2.0, 2.0, 3.0]), [1.0, 2.5, 2.5, 4.0]);
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 3.0]), [3.0, 1.0, 3.0, 3.0]);
        let rho = spearman(&[1.0, 2.0, 2.0, 3.0], &[1.0, 3.0, 2.0, 4.0]);
        close(rho, 4.5 / (4.5f64 * 5.0).sqrt());
        assert!((rho - 0.9486832980505138).abs() < 1e-15);
        // Monotone but non-linear: Spearman 1, Pearson below 1.
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let y = [1.0, 4.0, 9.0, 16.0, 100.0];
        close(spearman(&x, &y), 1.0);
        assert!(pearson(&x, &y) < 0.95);
    }
}
