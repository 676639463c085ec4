//! The linear flow: `x_t = (1 - t) x0 + t eps` (t = 0 data, t = 1 noise), whose velocity
//! `dx/dt = eps - x0` the model learns; time sampling and the timestep shift.

use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// How training draws t.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TimeSampling {
    /// `t = sigmoid(n)`, n ~ N(0, 1): more weight on the middle of the path (SD3, LightningDiT).
    LogitNormal,
    Uniform,
}

/// The timestep shift `t' = s t / (1 + (s - 1) t)`: s > 1 spends more time near noise, s < 1
/// near data; s = 1 is the identity.
pub fn shift(t: f64, s: f64) -> f64 {
    s * t / (1.0 + (s - 1.0) * t)
}

/// Inverse of [`shift`].
pub fn unshift(t: f64, s: f64) -> f64 {
    t / (s - (s - 1.0) * t)
}

/// One training time in (0, 1).
pub fn sample_time(rng: &mut Rng, sampling: TimeSampling, s: f64) -> f64 {
    let u = match sampling {
        TimeSampling::Uniform => rng.uniform(),
        TimeSampling::LogitNormal => {
            let n = rng.normals(1)[0] as f64;
            1.0 / (1.0 + (-n).exp())
        }
    };
    shift(u.clamp(1e-5, 1.0 - 1e-5), s)
}

/// The sampler's time grid from `t_start` down to 0 in `steps` steps: uniform before the shift.
pub fn time_grid(t_start: f64, steps: usize, s: f64) -> Vec<f64> {
    let u0 = unshift(t_start.clamp(0.0, 1.0), s);
    (0..=steps).map(|i| shift(u0 * (1.0 - i as f64 / steps as f64), s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shift_is_monotone_fixes_the_ends_and_inverts() {
        for s in [0.4, 1.0, 3.0] {
            assert_eq!(shift(0.0, s), 0.0);
            assert!((shift(1.0, s) - 1.0).abs() < 1e-12);
            let mut last = -1.0;
            for i in 0..=20 {
                let t = i as f64 / 20.0;
                let y = shift(t, s);
                assert!(y > last);
                assert!((unshift(y, s) - t).abs() < 1e-12);
                last = y;
            }
        }
        assert!(shift(0.5, 3.0) > 0.5 && shift(0.5, 0.4) < 0.5);
    }

    #[test]
    fn grid_runs_from_start_to_zero() {
        let g = time_grid(0.6, 10, 0.4);
        assert_eq!(g.len(), 11);
        assert!((g[0] - 0.6).abs() < 1e-12 && g[10] == 0.0);
        assert!(g.windows(2).all(|w| w[0] > w[1]));
    }

    #[test]
    fn logit_normal_times_centre_on_one_half() {
        let mut rng = Rng::new(3);
        let ts: Vec<f64> =
            (0..4000).map(|_| sample_time(&mut rng, TimeSampling::LogitNormal, 1.0)).collect();
        let mean = ts.iter().sum::<f64>() / ts.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
        assert!(ts.iter().all(|&t| t > 0.0 && t < 1.0));
    }
}
