//! Bicubic resizing of position-embedding grids, matching PyTorch's
//! `F.interpolate(mode="bicubic", align_corners=False, size=...)`, with and without `antialias`.
//!
//! Written here rather than taken from a crate because the result must agree with PyTorch to
//! float precision: image crates use other kernels (Catmull-Rom, a = -0.5) and other boundary rules.
//! It runs once per grid size on a small table, so a plain CPU loop is enough.

/// Interpolation weights for one axis: for each output index, (input index, weight) pairs.
type AxisWeights = Vec<Vec<(usize, f32)>>;

/// PyTorch's plain bicubic kernel (A = -0.75), borders clamped.
fn cubic_weights(in_size: usize, out_size: usize) -> AxisWeights {
    const A: f32 = -0.75;
    let scale = in_size as f32 / out_size as f32;
    (0..out_size)
        .map(|i| {
            let real = scale * (i as f32 + 0.5) - 0.5;
            let floor = real.floor();
            let t = real - floor;
            let conv1 = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
            let conv2 = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
            let coeffs = [conv2(t + 1.0), conv1(t), conv1(1.0 - t), conv2(2.0 - t)];
            let base = floor as i64 - 1;
            coeffs
                .iter()
                .enumerate()
                .map(|(k, &w)| {
                    let idx = (base + k as i64).clamp(0, in_size as i64 - 1) as usize;
                    (idx, w)
                })
                .collect()
        })
        .collect()
}

/// PyTorch's antialiased bicubic (the PIL-style filter, a = -0.5, widened when downsampling).
fn cubic_weights_antialias(in_size: usize, out_size: usize) -> AxisWeights {
    let filter = |x: f64| {
        const A: f64 = -0.5;
        let x = x.abs();
        if x < 1.0 {
            ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
        } else if x < 2.0 {
            (((x - 5.0) * x + 8.0) * x - 4.0) * A
        } else {
            0.0
        }
    };
    let scale = in_size as f64 / out_size as f64;
    let support = if scale >= 1.0 { 2.0 * scale } else { 2.0 };
    let inv_scale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
    (0..out_size)
        .map(|i| {
            let center = scale * (i as f64 + 0.5);
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let raw: Vec<f64> =
                (xmin..xmax).map(|j| filter((j as f64 - center + 0.5) * inv_scale)).collect();
            let total: f64 = raw.iter().sum();
            raw.iter()
                .enumerate()
                .map(|(k, &w)| {
                    let w = if total != 0.0 { w / total } else { w };
                    (xmin + k, w as f32)
                })
                .collect()
        })
        .collect()
}

/// Resizes a channels-last grid `[in_h, in_w, channels]` to `[out_h, out_w, channels]`.
pub fn resize_bicubic(
    grid: &[f32],
    (in_h, in_w): (usize, usize),
    (out_h, out_w): (usize, usize),
    channels: usize,
    antialias: bool,
) -> Vec<f32> {
    assert_eq!(grid.len(), in_h * in_w * channels, "grid size mismatch");
    if (in_h, in_w) == (out_h, out_w) {
        return grid.to_vec();
    }
    let weights = if antialias { cubic_weights_antialias } else { cubic_weights };
    let (wh, ww) = (weights(in_h, out_h), weights(in_w, out_w));
    // Width pass, then height pass, as PyTorch's separable kernel does.
    let mut rows = vec![0f32; in_h * out_w * channels];
    for y in 0..in_h {
        for (x, taps) in ww.iter().enumerate() {
            let out = &mut rows[(y * out_w + x) * channels..][..channels];
            for &(src_x, w) in taps {
                let src = &grid[(y * in_w + src_x) * channels..][..channels];
                out.iter_mut().zip(src).for_each(|(o, s)| *o += w * s);
            }
        }
    }
    let mut result = vec![0f32; out_h * out_w * channels];
    for (y, taps) in wh.iter().enumerate() {
        for x in 0..out_w {
            let out = &mut result[(y * out_w + x) * channels..][..channels];
            for &(src_y, w) in taps {
                let src = &rows[(src_y * out_w + x) * channels..][..channels];
                out.iter_mut().zip(src).for_each(|(o, s)| *o += w * s);
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_identity() {
        let grid: Vec<f32> = (0..2 * 3 * 4).map(|v| v as f32).collect();
        assert_eq!(resize_bicubic(&grid, (2, 3), (2, 3), 4, false), grid);
    }

    #[test]
    fn constant_grid_stays_constant() {
        let grid = vec![0.7f32; 5 * 5 * 2];
        for antialias in [false, true] {
            for (h, w) in [(3, 8), (9, 2), (5, 7)] {
                let out = resize_bicubic(&grid, (5, 5), (h, w), 2, antialias);
                assert!(out.iter().all(|v| (v - 0.7).abs() < 1e-5), "{antialias} {h}x{w}");
            }
        }
    }

    #[test]
    fn weights_sum_to_one() {
        for (i, o) in [(37, 16), (37, 64), (7, 4), (4, 7)] {
            for taps in cubic_weights(i, o).iter().chain(&cubic_weights_antialias(i, o)) {
                let sum: f32 = taps.iter().map(|t| t.1).sum();
                assert!((sum - 1.0).abs() < 1e-5);
            }
        }
    }
}
