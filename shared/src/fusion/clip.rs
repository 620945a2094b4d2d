//! Per-contribution norm clipping: a diff whose global L2 norm exceeds C is scaled down to norm C.

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
