//! Error statistics of a quantized round trip, as the README's accuracy table reports them.

use std::fmt;

use aihal_core::{CoreError, Result};

/// Errors of an approximation `y` of `x`, accumulated in f64.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ErrorStats {
    /// Values compared.
    pub count: usize,
    /// Root mean square error: `sqrt(mean((x - y)^2))`.
    pub rmse: f64,
    /// Largest `|x - y|`.
    pub max_abs: f64,
    /// Signal-to-noise ratio in dB: `10 log10(sum x^2 / sum (x - y)^2)` (infinite when exact).
    pub snr_db: f64,
    sum_sq_signal: f64,
    sum_sq_error: f64,
}

impl ErrorStats {
    /// The statistics of `y` against the reference `x` (`ShapeMismatch` on different
    /// lengths).
    pub fn between(x: &[f32], y: &[f32]) -> Result<Self> {
        if x.len() != y.len() {
            return Err(CoreError::shape_mismatch("error statistics", [x.len()], [y.len()]));
        }
        let mut s = Self::default();
        s.add(x, y);
        Ok(s)
    }

    fn add(&mut self, x: &[f32], y: &[f32]) {
        for (&a, &b) in x.iter().zip(y) {
            let e = f64::from(a) - f64::from(b);
            self.sum_sq_signal += f64::from(a) * f64::from(a);
            self.sum_sq_error += e * e;
            self.max_abs = self.max_abs.max(e.abs());
        }
        self.count += x.len();
        self.finish();
    }

    fn finish(&mut self) {
        self.rmse = if self.count == 0 {
            0.0
        } else {
            (self.sum_sq_error / self.count as f64).sqrt()
        };
        self.snr_db = 10.0 * (self.sum_sq_signal / self.sum_sq_error).log10();
    }

    /// Pools the statistics of several tensors as if they were one.
    #[must_use]
    pub fn merge(mut self, other: &Self) -> Self {
        self.count += other.count;
        self.sum_sq_signal += other.sum_sq_signal;
        self.sum_sq_error += other.sum_sq_error;
        self.max_abs = self.max_abs.max(other.max_abs);
        self.finish();
        self
    }
}

impl fmt::Display for ErrorStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RMSE {:.3e}, max |err| {:.3e}, SNR {:.2} dB over {} values",
            self.rmse, self.max_abs, self.snr_db, self.count
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_by_hand() {
        let s = ErrorStats::between(&[1.0, -2.0, 0.0, 1.0], &[1.0, -1.0, 0.5, 1.0]).unwrap();
        assert_eq!(s.count, 4);
        assert!((s.rmse - (1.25f64 / 4.0).sqrt()).abs() < 1e-12);
        assert!((s.max_abs - 1.0).abs() < 1e-12);
        assert!((s.snr_db - 10.0 * (6.0f64 / 1.25).log10()).abs() < 1e-12);
        let m = s.merge(&ErrorStats::between(&[3.0], &[3.0]).unwrap());
        assert_eq!(m.count, 5);
        assert!((m.snr_db - 10.0 * (15.0f64 / 1.25).log10()).abs() < 1e-12);
        assert!(ErrorStats::between(&[1.0], &[]).is_err());
        assert!(ErrorStats::between(&[1.0], &[1.0]).unwrap().snr_db.is_infinite());
    }
}
