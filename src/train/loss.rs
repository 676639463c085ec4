//! The training losses: the FAE's feature loss and the pixel decoder's image loss with its
//! optional terms (image gradients, amplitude spectrum, structural similarity, shifted perceptual
//! distance).

use burn::prelude::*;

use super::options::TrainOptions;
use crate::encoders::VisionEncoder;
use crate::fae::{FaeConfig, FaeModel};
use crate::metrics;
use crate::rng::Rng;

/// Named loss parts for the metrics log.
pub type Parts = Vec<(&'static str, f64)>;

/// Mean cosine distance between token vectors `[B, T, D]`.
pub fn cosine_distance(a: Tensor<3>, b: Tensor<3>) -> Tensor<1> {
    let dot = (a.clone() * b.clone()).sum_dim(2);
    let norms = (a.square().sum_dim(2) * b.square().sum_dim(2)).sqrt() + 1e-8;
    (-(dot / norms) + 1.0).mean()
}

/// Squared error to the encoder features + beta * KL (+ optional cosine term).
pub fn fae_loss(
    model: &FaeModel,
    features: Tensor<3>,
    grid: (usize, usize),
    config: &FaeConfig,
    options: &TrainOptions,
    rng: &mut Rng,
) -> (Tensor<1>, Parts) {
    let (mean, log_var) = model.encoder.forward(features.clone());
    let [b, t, c] = mean.dims();
    let eps = Tensor::<1>::from_data(
        TensorData::new(rng.normals(b * t * c), [b * t * c]),
        &mean.device(),
    )
    .reshape([b, t, c]);
    let z = mean.clone() + (log_var.clone() * 0.5).exp() * eps;
    let restored = model.feature_decoder.forward(z, grid);
    let mse = (restored.clone() - features.clone()).square().mean();
    let kl = ((mean.square() + log_var.clone().exp() - log_var - 1.0) * 0.5).mean();
    let mut loss = mse.clone() + kl.clone() * config.beta;
    let mut parts = vec![("mse", scalar(&mse)), ("kl", scalar(&kl))];
    if options.feature_cosine > 0.0 {
        let cos = cosine_distance(restored, features);
        parts.push(("cos_dist", scalar(&cos)));
        loss = loss + cos * options.feature_cosine;
    }
    (loss, parts)
}

/// L1 to the target image, plus the optional image-gradient and perceptual terms; also returns
/// the decoded image (for the adversarial term).
#[allow(clippy::too_many_arguments)]
pub fn pixel_loss(
    model: &FaeModel,
    input: Tensor<3>,
    target_features: Tensor<3>,
    targets: Tensor<4>,
    grid: (usize, usize),
    encoder: Option<&dyn VisionEncoder>,
    options: &TrainOptions,
    rng: &mut Rng,
) -> (Tensor<1>, Parts, Tensor<4>) {
    let image = model.pixel_decoder.forward(input, grid);
    let [_, _, h, w] = targets.dims();
    let image = if image.dims()[2..] == [h, w] { image } else { resize_to(image, h, w) };
    let l1 = (image.clone() - targets.clone()).abs().mean();
    let mut parts = vec![("l1", scalar(&l1))];
    let mut loss = l1;
    if options.gradient > 0.0 {
        let g = gradient_l1(image.clone(), targets.clone());
        parts.push(("gradient", scalar(&g)));
        loss = loss + g * options.gradient;
    }
    if options.spectrum > 0.0 {
        let f = spectrum_l1(image.clone(), targets.clone());
        parts.push(("spectrum", scalar(&f)));
        loss = loss + f * options.spectrum;
    }
    if options.ssim > 0.0 {
        let s = ssim_distance(image.clone(), targets.clone());
        parts.push(("ssim", scalar(&s)));
        loss = loss + s * options.ssim;
    }
    if let Some(encoder) = encoder {
        let p = perceptual(image.clone(), targets, target_features, encoder, options, rng);
        parts.push(("perceptual", scalar(&p)));
        loss = loss + p * options.perceptual;
    }
    (loss, parts, image)
}

/// L1 between the horizontal and vertical finite differences of two images `[B, C, H, W]`:
/// a sharpening term that a pixel L1 alone (which favours a blurred mean) does not give.
pub fn gradient_l1(image: Tensor<4>, target: Tensor<4>) -> Tensor<1> {
    let diff = image - target;
    let [_, _, h, w] = diff.dims();
    let dx = diff.clone().narrow(3, 1, w - 1) - diff.clone().narrow(3, 0, w - 1);
    let dy = diff.clone().narrow(2, 1, h - 1) - diff.narrow(2, 0, h - 1);
    (dx.abs().mean() + dy.abs().mean()) * 0.5
}

/// L1 between the amplitude spectra (orthonormal 2-D DFT, per channel) of two images
/// `[B, C, H, W]`. The amplitude ignores where a detail sits (a circular shift leaves it
/// unchanged), so a decoder unsure where an edge goes still pays for painting none, where pixel
/// and gradient L1 reward the blurred mean. burn 0.22 has no FFT: the DFT is two products with
/// fixed cosine and sine matrices, cheap beside the decoder at 224 px.
pub fn spectrum_l1(image: Tensor<4>, target: Tensor<4>) -> Tensor<1> {
    let [b, c, h, w] = image.dims();
    let device = image.device();
    let (ch, sh) = dft_matrices(h, &device);
    // Square images (the training crops) share one pair of matrices.
    let (cw, sw) = if w == h { (ch.clone(), sh.clone()) } else { dft_matrices(w, &device) };
    let amplitude = |x: Tensor<4>| {
        // Rows: X (C_w - i S_w). Then columns, on the transposed rows: the matrices are symmetric.
        let rows = x.reshape([b * c * h, w]);
        let (re, im) = (rows.clone().matmul(cw.clone()), -rows.matmul(sw.clone()));
        let cols = |t: Tensor<2>| t.reshape([b * c, h, w]).swap_dims(1, 2).reshape([b * c * w, h]);
        let (re, im) = (cols(re), cols(im));
        let real = re.clone().matmul(ch.clone()) + im.clone().matmul(sh.clone());
        let imag = im.matmul(ch.clone()) - re.matmul(sh.clone());
        (real.square() + imag.square() + 1e-8).sqrt()
    };
    (amplitude(image) - amplitude(target)).abs().mean()
}

/// `cos(2 pi k n / n_)` and `sin(2 pi k n / n_)` over `sqrt(n_)`: the orthonormal DFT's parts.
fn dft_matrices(n: usize, device: &Device) -> (Tensor<2>, Tensor<2>) {
    let scale = 1.0 / (n as f64).sqrt();
    let angle = |k: usize, j: usize| 2.0 * std::f64::consts::PI * ((k * j) % n) as f64 / n as f64;
    let table = |f: fn(f64) -> f64| {
        let v: Vec<f32> = (0..n * n).map(|i| (f(angle(i / n, i % n)) * scale) as f32).collect();
        Tensor::<1>::from_data(TensorData::new(v, [n * n]), device).reshape([n, n])
    };
    (table(f64::cos), table(f64::sin))
}

/// One minus the mean structural similarity of two images `[B, 3, H, W]` on luma, with the luma
/// weights, window and constants of `metrics::ssim` (11-tap Gaussian, sigma 1.5, borders clamped)
/// so the term trains what `evaluate` reports. SSIM compares local means, contrasts and
/// correlations: a blurred reconstruction loses contrast and pays for it even where its pixel L1
/// is low. The blur is a product with a fixed banded matrix per axis (clamped borders included).
pub fn ssim_distance(image: Tensor<4>, target: Tensor<4>) -> Tensor<1> {
    let [b, _, h, w] = image.dims();
    let device = image.device();
    let weights = Tensor::<1>::from_data(
        TensorData::new(metrics::LUMA.map(|v| v as f32).to_vec(), [3]),
        &device,
    )
    .reshape([1, 3, 1, 1]);
    let luma = |x: Tensor<4>| (x * weights.clone()).sum_dim(1).reshape([b, h, w]);
    let bh = blur_matrix(h, &device);
    let bw = if w == h { bh.clone() } else { blur_matrix(w, &device) };
    let blur = |x: Tensor<3>| {
        let rows = x.reshape([b * h, w]).matmul(bw.clone()).reshape([b, h, w]);
        let cols = rows.swap_dims(1, 2).reshape([b * w, h]).matmul(bh.clone());
        cols.reshape([b, w, h]).swap_dims(1, 2)
    };
    let (x, y) = (luma(image), luma(target));
    let (mx, my) = (blur(x.clone()), blur(y.clone()));
    let vx = blur(x.clone().square()) - mx.clone().square();
    let vy = blur(y.clone().square()) - my.clone().square();
    let cxy = blur(x * y) - mx.clone() * my.clone();
    let (c1, c2) = (metrics::SSIM_C1, metrics::SSIM_C2);
    let numerator = (mx.clone() * my.clone() * 2.0 + c1) * (cxy * 2.0 + c2);
    let denominator = (mx.square() + my.square() + c1) * (vx + vy + c2);
    -(numerator / denominator).mean() + 1.0
}

/// `[n, n]` matrix `M` with `x M` the blur of the rows of `x` by `metrics::ssim_window`, the
/// taps past either end falling on the end sample.
fn blur_matrix(n: usize, device: &Device) -> Tensor<2> {
    let taps = metrics::ssim_window();
    let centre = (taps.len() / 2) as i64;
    let mut m = vec![0f32; n * n];
    for out in 0..n {
        for (k, tap) in taps.iter().enumerate() {
            let src = (out as i64 + k as i64 - centre).clamp(0, n as i64 - 1) as usize;
            m[src * n + out] += *tap as f32;
        }
    }
    Tensor::<1>::from_data(TensorData::new(m, [n * n]), device).reshape([n, n])
}

/// Cosine distance between the frozen encoder's tokens of the decoded image and of the target.
///
/// With `perceptual_shift > 0` both images are cropped one patch smaller at the same random
/// offset (up to that many pixels), so the encoder's patches straddle the decoder's: a
/// patch-aligned perceptual loss would otherwise teach the same pattern in every patch. The
/// target's tokens are then computed again for the shifted crop (no gradient flows there).
fn perceptual(
    image: Tensor<4>,
    targets: Tensor<4>,
    target_features: Tensor<3>,
    encoder: &dyn VisionEncoder,
    options: &TrainOptions,
    rng: &mut Rng,
) -> Tensor<1> {
    let info = encoder.info();
    let tokens_of = |x: Tensor<4>| {
        let t = encoder.forward(normalise(x, info.mean, info.std)).patch_tokens;
        let [b, gh, gw, d] = t.dims();
        t.reshape([b, gh * gw, d])
    };
    let [_, _, h, w] = image.dims();
    let room = h.min(w) >= 2 * info.patch_size;
    let shift = if room { options.perceptual_shift.min(info.patch_size) } else { 0 };
    if shift == 0 {
        return cosine_distance(tokens_of(image), target_features.detach());
    }
    let (dy, dx) = (rng.below(shift + 1), rng.below(shift + 1));
    let (ch, cw) = (h - info.patch_size, w - info.patch_size);
    let crop = |x: Tensor<4>| x.narrow(2, dy, ch).narrow(3, dx, cw);
    let target_tokens = tokens_of(crop(targets)).detach();
    cosine_distance(tokens_of(crop(image)), target_tokens)
}

pub fn resize_to(image: Tensor<4>, h: usize, w: usize) -> Tensor<4> {
    use burn::tensor::module::interpolate;
    use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
    interpolate(image, InterpolateOptions::new(InterpolateMode::Bilinear).with_output_size([h, w]))
}

pub fn normalise(image: Tensor<4>, mean: [f32; 3], std: [f32; 3]) -> Tensor<4> {
    let device = image.device();
    let m =
        Tensor::<1>::from_data(TensorData::new(mean.to_vec(), [3]), &device).reshape([1, 3, 1, 1]);
    let s =
        Tensor::<1>::from_data(TensorData::new(std.to_vec(), [3]), &device).reshape([1, 3, 1, 1]);
    (image - m) / s
}

pub fn scalar(t: &Tensor<1>) -> f64 {
    t.clone().into_scalar::<f32>() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(values: Vec<f32>, h: usize, w: usize) -> Tensor<4> {
        let device = crate::backend::cpu().device;
        Tensor::<1>::from_data(TensorData::new(values, [h * w]), &device).reshape([1, 1, h, w])
    }

    #[test]
    fn gradient_term_ignores_a_constant_offset_and_sees_lost_edges() {
        // A step edge, the same edge one grey level brighter, and a flat blur of it.
        let edge: Vec<f32> = (0..16).map(|i| if i % 4 < 2 { 0.0 } else { 1.0 }).collect();
        let brighter: Vec<f32> = edge.iter().map(|v| v + 0.1).collect();
        let flat = vec![0.5; 16];
        let g = |a: &[f32], b: &[f32]| {
            scalar(&gradient_l1(image(a.to_vec(), 4, 4), image(b.to_vec(), 4, 4)))
        };
        assert!(g(&brighter, &edge) < 1e-6);
        // Horizontal differences: one edge of height 1 in 3 columns, 4 rows; none vertically.
        assert!((g(&flat, &edge) - 0.5 * (4.0 / 12.0)).abs() < 1e-6, "{}", g(&flat, &edge));
    }

    /// The amplitude spectrum of a direct 2-D DFT in f64 (the reference).
    fn naive_amplitude(x: &[f32], h: usize, w: usize) -> Vec<f64> {
        let tau = 2.0 * std::f64::consts::PI;
        let mut out = Vec::with_capacity(h * w);
        for (u, v) in (0..h).flat_map(|u| (0..w).map(move |v| (u, v))) {
            let (mut re, mut im) = (0.0, 0.0);
            for (y, xx) in (0..h).flat_map(|y| (0..w).map(move |xx| (y, xx))) {
                let a = -tau * ((u * y) as f64 / h as f64 + (v * xx) as f64 / w as f64);
                re += x[y * w + xx] as f64 * a.cos();
                im += x[y * w + xx] as f64 * a.sin();
            }
            out.push((re * re + im * im).sqrt() / ((h * w) as f64).sqrt());
        }
        out
    }

    #[test]
    fn spectrum_term_matches_a_direct_dft_and_ignores_a_circular_shift() {
        let mut rng = Rng::new(3);
        // Square (one pair of matrices for both axes) and not.
        for (h, w) in [(5, 5), (6, 5)] {
            let a: Vec<f32> = rng.normals(h * w);
            let b: Vec<f32> = rng.normals(h * w);
            let expected = naive_amplitude(&a, h, w)
                .iter()
                .zip(naive_amplitude(&b, h, w))
                .map(|(p, q)| (p - q).abs())
                .sum::<f64>()
                / (h * w) as f64;
            let got = scalar(&spectrum_l1(image(a, h, w), image(b, h, w)));
            assert!((got - expected).abs() < 1e-4, "{h}x{w}: {got} against {expected}");
        }
        let (h, w) = (6, 5);
        let a: Vec<f32> = rng.normals(h * w);
        // The same picture moved by (2, 3) pixels, wrapping round: the same amplitudes.
        let shifted: Vec<f32> =
            (0..h * w).map(|i| a[((i / w + 2) % h) * w + (i % w + 3) % w]).collect();
        let same = scalar(&spectrum_l1(image(shifted, h, w), image(a.clone(), h, w)));
        assert!(same < 1e-3, "{same}");
        // A flat picture of the same mean keeps only the DC amplitude: far from the original.
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        let flat = scalar(&spectrum_l1(image(vec![mean; h * w], h, w), image(a, h, w)));
        assert!(flat > 0.3, "{flat}");
    }

    #[test]
    fn ssim_term_is_one_minus_the_evaluated_ssim() {
        let device = crate::backend::cpu().device;
        let mut rng = Rng::new(5);
        // A textured picture, a blurred copy (lower contrast) and a noisy one; square and not.
        for (h, w) in [(24, 24), (20, 31)] {
            let a: Vec<f32> =
                rng.normals(3 * h * w).iter().map(|v| (0.5 + 0.2 * v).clamp(0.0, 1.0)).collect();
            let tensor = |v: &[f32]| {
                Tensor::<1>::from_data(TensorData::new(v.to_vec(), [3 * h * w]), &device)
                    .reshape([1, 3, h, w])
            };
            let blurred = resize_to(resize_to(tensor(&a), h / 4, w / 4), h, w);
            let noisy: Vec<f32> =
                a.iter().zip(rng.normals(a.len())).map(|(p, n)| p + 0.1 * n).collect();
            let to_image = |t: Tensor<4>| {
                let v: Vec<f32> =
                    t.reshape([3, h * w]).swap_dims(0, 1).into_data().try_to_vec::<f32>().unwrap();
                image::Rgb32FImage::from_raw(w as u32, h as u32, v).unwrap()
            };
            let reference = to_image(tensor(&a));
            for other in [tensor(&a), blurred, tensor(&noisy)] {
                let expected = 1.0 - metrics::ssim(&to_image(other.clone()), &reference);
                let got = scalar(&ssim_distance(other, tensor(&a)));
                assert!((got - expected).abs() < 1e-4, "{h}x{w}: {got} against {expected}");
            }
        }
        // Identical pictures are at distance 0; a flat grey one is far from texture.
        let a: Vec<f32> = rng.normals(3 * 16 * 16).iter().map(|v| 0.5 + 0.2 * v).collect();
        let t = |v: Vec<f32>| {
            Tensor::<1>::from_data(TensorData::new(v, [3 * 256]), &device).reshape([1, 3, 16, 16])
        };
        assert!(scalar(&ssim_distance(t(a.clone()), t(a.clone()))) < 1e-5);
        assert!(scalar(&ssim_distance(t(vec![0.5; 3 * 256]), t(a))) > 0.9);
    }

    #[test]
    fn shifted_perceptual_compares_the_same_crop_of_both_images() {
        let device = crate::backend::cpu().device;
        let encoder = crate::encoders::source::load(None, &device).unwrap();
        let mut options = TrainOptions::new("d".into(), "o".into());
        let noise = |seed: u64| {
            let mut rng = Rng::new(seed);
            let noise = rng.normals(3 * 28 * 28);
            let t = Tensor::<1>::from_data(TensorData::new(noise, [3 * 28 * 28]), &device);
            resize_to((t.reshape([1, 3, 28, 28]) * 0.2 + 0.5).clamp(0.0, 1.0), 56, 56)
        };
        // Noise against a smooth colour ramp: far apart in the encoder's feature space.
        let ramp: Vec<f32> = (0..3 * 56 * 56).map(|i| (i % 56) as f32 / 56.0).collect();
        let ramp = Tensor::<1>::from_data(TensorData::new(ramp, [3 * 56 * 56]), &device);
        let (a, b) = (noise(1), ramp.reshape([1, 3, 56, 56]));
        let features = |x: Tensor<4>| {
            let t = encoder.forward(normalise(x, encoder.info().mean, encoder.info().std));
            t.patch_tokens.reshape([1, 16, encoder.info().dim])
        };
        let mut rng = Rng::new(0);
        for shift in [0, 7] {
            options.perceptual_shift = shift;
            let p = |x: &Tensor<4>, y: &Tensor<4>, rng: &mut Rng| {
                let f = features(y.clone());
                scalar(&perceptual(x.clone(), y.clone(), f, encoder.as_ref(), &options, rng))
            };
            // An image is at distance 0 from itself whatever the shift: the target's tokens
            // come from the same crop as the decoded image's.
            for _ in 0..4 {
                assert!(p(&a, &a, &mut rng) < 1e-4, "shift {shift}: {}", p(&a, &a, &mut rng));
            }
            assert!(p(&a, &b, &mut rng) > 0.01, "shift {shift}");
        }
    }
}
