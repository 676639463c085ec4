//! Image and feature quality measures: PSNR, SSIM, token cosine similarity.

use image::Rgb32FImage;

use crate::grid::Grid;

/// Peak signal-to-noise ratio in dB of two equally sized RGB images in [0, 1].
pub fn psnr(a: &Rgb32FImage, b: &Rgb32FImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions(), "PSNR needs equally sized images");
    let n = a.as_raw().len() as f64;
    let mse: f64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| {
            let d = x.clamp(0.0, 1.0) as f64 - y.clamp(0.0, 1.0) as f64;
            d * d
        })
        .sum::<f64>()
        / n;
    if mse == 0.0 { f64::INFINITY } else { -10.0 * mse.log10() }
}

fn luma(img: &Rgb32FImage) -> Vec<f64> {
    img.pixels()
        .map(|p| 0.299 * p.0[0] as f64 + 0.587 * p.0[1] as f64 + 0.114 * p.0[2] as f64)
        .collect()
}

/// Separable Gaussian blur (11 taps, sigma 1.5, borders clamped), as in the SSIM paper.
fn blur(values: &[f64], w: usize, h: usize) -> Vec<f64> {
    let kernel: Vec<f64> =
        (-5i32..=5).map(|i| (-(i * i) as f64 / (2.0 * 1.5 * 1.5)).exp()).collect();
    let total: f64 = kernel.iter().sum();
    let kernel: Vec<f64> = kernel.iter().map(|k| k / total).collect();
    let pass = |src: &[f64], horizontal: bool| -> Vec<f64> {
        let mut out = vec![0.0; src.len()];
        for y in 0..h {
            for x in 0..w {
                out[y * w + x] = kernel
                    .iter()
                    .enumerate()
                    .map(|(k, weight)| {
                        let o = k as i64 - 5;
                        let (sx, sy) = if horizontal {
                            ((x as i64 + o).clamp(0, w as i64 - 1) as usize, y)
                        } else {
                            (x, (y as i64 + o).clamp(0, h as i64 - 1) as usize)
                        };
                        weight * src[sy * w + sx]
                    })
                    .sum();
            }
        }
        out
    };
    pass(&pass(values, true), false)
}

/// Structural similarity on luminance (Wang et al. 2004 constants), mean over the image.
pub fn ssim(a: &Rgb32FImage, b: &Rgb32FImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions(), "SSIM needs equally sized images");
    let (w, h) = (a.width() as usize, a.height() as usize);
    let (x, y) = (luma(a), luma(b));
    let prod = |p: &[f64], q: &[f64]| p.iter().zip(q).map(|(u, v)| u * v).collect::<Vec<f64>>();
    let (mx, my) = (blur(&x, w, h), blur(&y, w, h));
    let (sxx, syy, sxy) =
        (blur(&prod(&x, &x), w, h), blur(&prod(&y, &y), w, h), blur(&prod(&x, &y), w, h));
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    let total: f64 = (0..w * h)
        .map(|i| {
            let (vx, vy, cxy) =
                (sxx[i] - mx[i] * mx[i], syy[i] - my[i] * my[i], sxy[i] - mx[i] * my[i]);
            ((2.0 * mx[i] * my[i] + c1) * (2.0 * cxy + c2))
                / ((mx[i] * mx[i] + my[i] * my[i] + c1) * (vx + vy + c2))
        })
        .sum();
    total / (w * h) as f64
}

/// Cosine similarity of two vectors (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 { 0.0 } else { dot / (na * nb) }
}

/// Per-token cosine between two grids of equal shape.
pub fn token_cosines(a: &Grid, b: &Grid) -> Vec<f64> {
    assert!(a.same_shape(b), "grids differ in shape");
    a.data
        .chunks_exact(a.channels)
        .zip(b.data.chunks_exact(b.channels))
        .map(|(x, y)| cosine(x, y))
        .collect()
}

pub fn mean_token_cosine(a: &Grid, b: &Grid) -> f64 {
    let c = token_cosines(a, b);
    c.iter().sum::<f64>() / c.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise_image(seed: u32) -> Rgb32FImage {
        Rgb32FImage::from_fn(24, 20, |x, y| {
            let v = ((x * 31 + y * 17 + seed * 7) % 23) as f32 / 22.0;
            image::Rgb([v, 1.0 - v, 0.5])
        })
    }

    #[test]
    fn identical_images_are_perfect() {
        let a = noise_image(1);
        assert!(psnr(&a, &a).is_infinite());
        assert!((ssim(&a, &a) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn psnr_of_a_known_error() {
        let a = Rgb32FImage::from_pixel(8, 8, image::Rgb([0.5, 0.5, 0.5]));
        let b = Rgb32FImage::from_pixel(8, 8, image::Rgb([0.6, 0.6, 0.6]));
        assert!((psnr(&a, &b) - 20.0).abs() < 1e-3);
        assert!(ssim(&noise_image(1), &noise_image(2)) < 0.9);
    }
}
