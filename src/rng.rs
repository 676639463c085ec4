//! A small, fast, seedable random generator whose whole state is one `u64`.
//!
//! Training must resume bit-exactly, so its randomness is derived from (seed, step) with a
//! generator that is trivially saved and identical on every platform; SplitMix64 is enough for
//! noise and augmentation (it is not for cryptography).

#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator for one purpose at one step, independent of every other (seed, step, stream).
    pub fn derive(seed: u64, step: u64, stream: u64) -> Self {
        let mut base = Self::new(seed ^ 0x9E37_79B9_7F4A_7C15);
        let a = base.next_u64();
        Self::new(
            a ^ step.wrapping_mul(0xD1B5_4A32_D192_ED03)
                ^ stream.wrapping_mul(0x8CB9_2BA7_2F3D_8DD7),
        )
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n.max(1)
    }

    /// Standard normal values (Box-Muller).
    pub fn normals(&mut self, n: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(n + 1);
        while out.len() < n {
            let u1 = self.uniform().max(f64::MIN_POSITIVE);
            let u2 = self.uniform();
            let r = (-2.0 * u1.ln()).sqrt();
            let t = std::f64::consts::TAU * u2;
            out.push((r * t.cos()) as f32);
            out.push((r * t.sin()) as f32);
        }
        out.truncate(n);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normals_have_unit_moments_and_are_reproducible() {
        let v = Rng::new(7).normals(20_000);
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.03 && (var - 1.0).abs() < 0.05, "{mean} {var}");
        assert_eq!(Rng::derive(1, 5, 0).normals(4), Rng::derive(1, 5, 0).normals(4));
        assert_ne!(Rng::derive(1, 5, 0).normals(4), Rng::derive(1, 6, 0).normals(4));
    }
}
