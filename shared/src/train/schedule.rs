//! Learning-rate schedule: linear warmup from 0, then linear decay to 0 (transformers'
//! `get_linear_schedule_with_warmup`).

/// A linear warmup then linear decay schedule over optimizer steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearSchedule {
    /// Learning rate at the end of warmup.
    pub peak: f64,
    /// Warmup steps.
    pub warmup: usize,
    /// Total optimizer steps.
    pub total: usize,
}

impl LinearSchedule {
    /// The learning rate for 0-based optimizer step `step`.
    pub fn lr(&self, step: usize) -> f64 {
        let factor = if step < self.warmup {
            step as f64 / self.warmup.max(1) as f64
        } else {
            let left = self.total.saturating_sub(step) as f64;
            (left / self.total.saturating_sub(self.warmup).max(1) as f64).max(0.0)
        };
        self.peak * factor
    }

    /// Warmup steps for a ratio of the total, rounded up as transformers does.
    pub fn warmup_steps(ratio: f64, total: usize) -> usize {
        (ratio * total as f64).ceil() as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_decay() {
        let s = LinearSchedule {
            peak: 1.0,
            warmup: 2,
            total: 6,
        };
        let lrs: Vec<f64> = (0..7).map(|i| s.lr(i)).collect();
        assert_eq!(lrs, [0.0, 0.5, 1.0, 0.75, 0.5, 0.25, 0.0]);
    }

    #[test]
    fn no_warmup_starts_at_peak() {
        let s = LinearSchedule {
            peak: 2.0,
            warmup: 0,
            total: 4,
        };
        assert_eq!(s.lr(0), 2.0);
        assert_eq!(s.lr(2), 1.0);
        assert_eq!(s.lr(9), 0.0);
        assert_eq!(LinearSchedule::warmup_steps(0.06, 100), 6);
        assert_eq!(LinearSchedule::warmup_steps(0.06, 10), 1);
    }
}
