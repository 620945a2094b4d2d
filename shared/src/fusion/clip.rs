//! Per-contribution norm clipping: a diff whose global L2 norm exceeds C is scaled down to norm C.

/// The norm bound of a round: the smaller of `clip_norm` and K × the lower median of `norms` (the
/// ⌊(n−1)/2⌋-th smallest, so with two diffs it is the smaller one: a single oversized diff never
/// sets its own bound); None when neither is configured.
pub fn clip_bound(
    norms: &[f64],
    clip_norm: Option<f64>,
    clip_to_median: Option<f64>,
) -> Option<f64> {
    let median = clip_to_median.and_then(|k| {
        let mut sorted = norms.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted.get(norms.len().saturating_sub(1) / 2).map(|m| k * m)
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
