//! Per-contribution norm clipping: a diff whose global L2 norm exceeds C is scaled down to norm C.

/// The norm bound of a round: the smaller of `clip_norm` and K × the median of `norms` (for an even
/// count the upper of the two middle values, the ⌊n/2⌋-th smallest from 0: unless more than half of
/// the diffs are tiny, no honest diff falls above it, and unless half or more are oversized, an
/// oversized one never sets its own bound); None when neither is configured. With two diffs nothing
/// exceeds K × the larger: two cannot tell which one is the outlier.
pub fn clip_bound(
    norms: &[f64],
    clip_norm: Option<f64>,
    clip_to_median: Option<f64>,
) -> Option<f64> {
    let median = clip_to_median.and_then(|k| {
        let mut sorted = norms.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted.get(norms.len() / 2).map(|m| k * m)
    });
    match (clip_norm, median) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Factor applied to each contribution: min(1, C / ‖diff‖), or 1 without clipping.
pub fn clip_factors(norms: &[f64], max_norm: Option<f64>) -> Vec<f32> {
    norms
        .iter()
        .map(|&norm| match max_norm {
            Some(c) if norm > c => (c / norm) as f32,
            _ => 1.0,
        })
        .collect()
}
