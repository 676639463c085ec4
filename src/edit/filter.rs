//! Separable blurs over a token grid, shared by mask feathering and the `smooth` edit.
//!
//! Windows are cut at the grid's border and renormalised over the taps that fall inside, so a
//! constant map stays exactly constant (edges do not darken) and a value far from anything
//! non-zero stays exactly zero.

/// A symmetric 1-D kernel: `taps[0]` is the centre weight, `taps[k]` the weight at offset `±k`.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    taps: Vec<f64>,
}

impl Kernel {
    /// A Gaussian of standard deviation `sigma` tokens, cut at `ceil(3 * sigma)` and at
    /// `max_radius` (pass the grid's larger side: taps beyond it never land on a token, and the
    /// cap keeps a huge `sigma` from a recipe from allocating a huge kernel).
    ///
    /// A `sigma` too small to reach the next token gives the identity kernel.
    pub fn gaussian(sigma: f64, max_radius: usize) -> Self {
        if !(sigma.is_finite() && sigma > 0.0) {
            return Self { taps: vec![1.0] };
        }
        let radius = ((3.0 * sigma).ceil().min(max_radius as f64)) as usize;
        // libm instead of std: the same weights, bit for bit, on every platform. The centre is
        // set to 1 directly: for a subnormal sigma, 0 / sigma^2 would be NaN.
        let taps = (0..=radius)
            .map(
                |k| if k == 0 { 1.0 } else { libm::exp(-((k * k) as f64) / (2.0 * sigma * sigma)) },
            )
            .collect();
        Self { taps }
    }

    /// A box of `2 * radius + 1` equal taps, cut at `max_radius` like [`Kernel::gaussian`].
    pub fn boxed(radius: usize, max_radius: usize) -> Self {
        Self { taps: vec![1.0; radius.min(max_radius) + 1] }
    }

    /// How far the kernel reaches on each side of the centre.
    pub fn radius(&self) -> usize {
        self.taps.len() - 1
    }
}

/// Blurs `values`, laid out `[height, width, channels]` row-major, with `kernel` along both axes.
pub fn blur(
    values: &[f32],
    height: usize,
    width: usize,
    channels: usize,
    kernel: &Kernel,
) -> Vec<f32> {
    debug_assert_eq!(values.len(), height * width * channels);
    if kernel.radius() == 0 {
        return values.to_vec();
    }
    // Rows first (along x), then columns (along y); the in-bounds window is a rectangle, so
    // renormalising each pass separately equals renormalising the 2-D window.
    let rows = pass(values, height, width, channels, kernel, true);
    pass(&rows, height, width, channels, kernel, false)
}

fn pass(
    values: &[f32],
    height: usize,
    width: usize,
    channels: usize,
    kernel: &Kernel,
    along_x: bool,
) -> Vec<f32> {
    let r = kernel.radius() as isize;
    let (len, other) = if along_x { (width, height) } else { (height, width) };
    let index = |line: usize, pos: usize| {
        let (y, x) = if along_x { (line, pos) } else { (pos, line) };
        (y * width + x) * channels
    };
    let mut out = vec![0.0f32; values.len()];
    let mut acc = vec![0.0f64; channels];
    for line in 0..other {
        for pos in 0..len {
            acc.iter_mut().for_each(|a| *a = 0.0);
            let mut total = 0.0f64;
            // Only the taps that land inside the grid.
            let (lo, hi) = (-(r.min(pos as isize)), r.min((len - 1 - pos) as isize));
            for off in lo..=hi {
                let w = kernel.taps[off.unsigned_abs()];
                total += w;
                let src = index(line, (pos as isize + off) as usize);
                for (a, &v) in acc.iter_mut().zip(&values[src..src + channels]) {
                    *a += w * v as f64;
                }
            }
            let dst = index(line, pos);
            for (o, a) in out[dst..dst + channels].iter_mut().zip(&acc) {
                *o = (a / total) as f32;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_map_stays_exactly_constant() {
        let values = vec![0.7f32; 5 * 4 * 2];
        for kernel in [Kernel::gaussian(1.3, 5), Kernel::boxed(2, 5)] {
            assert_eq!(blur(&values, 5, 4, 2, &kernel), values);
        }
    }

    #[test]
    fn far_from_the_impulse_stays_exactly_zero() {
        let (h, w) = (1, 20);
        let mut values = vec![0.0f32; h * w];
        values[0] = 1.0;
        let out = blur(&values, h, w, 1, &Kernel::gaussian(1.0, 20));
        // Radius 3: tokens 0..=3 receive weight, the rest none.
        assert!(out[..=3].iter().all(|&v| v > 0.0));
        assert!(out[4..].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn box_blur_averages_the_in_bounds_window() {
        let values: Vec<f32> = (0..5).map(|v| v as f32).collect();
        let out = blur(&values, 1, 5, 1, &Kernel::boxed(1, 5));
        assert_eq!(out, vec![0.5, 1.0, 2.0, 3.0, 3.5]);
    }

    #[test]
    fn tiny_sigma_is_the_identity() {
        assert_eq!(Kernel::gaussian(0.0, 9).radius(), 0);
        assert_eq!(Kernel::gaussian(0.2, 9).radius(), 1);
        let values = vec![0.5f32, -1.0, 2.0];
        assert_eq!(blur(&values, 1, 3, 1, &Kernel::gaussian(1e-200, 9)), values);
    }

    #[test]
    fn huge_kernels_are_cut_at_the_grid() {
        assert_eq!(Kernel::gaussian(1e30, 16).radius(), 16);
        assert_eq!(Kernel::boxed(usize::MAX, 16).radius(), 16);
        // A box wider than the grid averages the whole line.
        let values: Vec<f32> = (0..4).map(|v| v as f32).collect();
        assert_eq!(blur(&values, 1, 4, 1, &Kernel::boxed(usize::MAX, 4)), vec![1.5; 4]);
    }
}
