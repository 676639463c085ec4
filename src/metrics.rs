//! Image and feature quality measures: PSNR, SSIM, token cosine similarity, patch-grid
//! blockiness, gradient (high-frequency) energy, spurious small bright dots, and flat reference
//! pictures that put a PSNR in context.

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

/// The luma weights of R, G and B (ITU-R BT.601) that SSIM and the other luminance figures use.
pub const LUMA: [f64; 3] = [0.299, 0.587, 0.114];

fn luma(img: &Rgb32FImage) -> Vec<f64> {
    img.pixels().map(|p| (0..3).map(|c| LUMA[c] * p.0[c] as f64).sum()).collect()
}

/// SSIM's stabilising constants for images in [0, 1] (Wang et al. 2004: K1 = 0.01, K2 = 0.03).
pub const SSIM_C1: f64 = 0.01 * 0.01;
pub const SSIM_C2: f64 = 0.03 * 0.03;

/// SSIM's window: 11 Gaussian taps (sigma 1.5) summing to 1, centre at index 5.
pub fn ssim_window() -> Vec<f64> {
    let kernel: Vec<f64> =
        (-5i32..=5).map(|i| (-(i * i) as f64 / (2.0 * 1.5 * 1.5)).exp()).collect();
    let total: f64 = kernel.iter().sum();
    kernel.iter().map(|k| k / total).collect()
}

/// Separable blur with `ssim_window` (borders clamped), as in the SSIM paper.
fn blur(values: &[f64], w: usize, h: usize) -> Vec<f64> {
    let kernel = ssim_window();
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
    let (c1, c2) = (SSIM_C1, SSIM_C2);
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

/// How visible a grid of `patch`-pixel squares is: the mean absolute difference between
/// neighbouring pixels across patch borders (every `patch` px, both directions) divided by the
/// same within patches. About 1 for photos; well above 1 where each patch is painted alone.
pub fn blockiness(img: &Rgb32FImage, patch: usize) -> f64 {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let raw = img.as_raw();
    let at = |x: usize, y: usize, c: usize| raw[(y * w + x) * 3 + c] as f64;
    // [sum, count] across borders and within patches.
    let (mut border, mut inside) = ([0f64; 2], [0f64; 2]);
    let mut add = |crosses: bool, d: f64| {
        let t = if crosses { &mut border } else { &mut inside };
        t[0] += d;
        t[1] += 1.0;
    };
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                if x + 1 < w {
                    add((x + 1) % patch == 0, (at(x + 1, y, c) - at(x, y, c)).abs());
                }
                if y + 1 < h {
                    add((y + 1) % patch == 0, (at(x, y + 1, c) - at(x, y, c)).abs());
                }
            }
        }
    }
    let (b, i) = (border[0] / border[1].max(1.0), inside[0] / inside[1].max(1.0));
    if i > 0.0 {
        b / i
    } else if b > 0.0 {
        f64::INFINITY
    } else {
        1.0
    }
}

/// `img` with every `patch`-pixel square (and every edge remainder) painted in its own mean
/// colour: the best PSNR a decoder that paints each token flat can reach. With `patch` at least
/// the image's size, the whole image in its mean colour: what knowing one colour per image gives.
pub fn flat_patches(img: &Rgb32FImage, patch: usize) -> Rgb32FImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let patch = patch.max(1);
    let (cols, rows) = (w.div_ceil(patch), h.div_ceil(patch));
    let mut sums = vec![[0f64; 4]; cols * rows];
    for (x, y, p) in img.enumerate_pixels() {
        let s = &mut sums[(y as usize / patch) * cols + x as usize / patch];
        (0..3).for_each(|c| s[c] += p.0[c] as f64);
        s[3] += 1.0;
    }
    Rgb32FImage::from_fn(w as u32, h as u32, |x, y| {
        let s = sums[(y as usize / patch) * cols + x as usize / patch];
        image::Rgb([0, 1, 2].map(|c| (s[c] / s[3]) as f32))
    })
}

/// Mean gradient magnitude of the luminance (forward differences): how much fine detail an
/// image holds. A blurred reconstruction has less than its original.
pub fn gradient_energy(img: &Rgb32FImage) -> f64 {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w < 2 || h < 2 {
        return 0.0;
    }
    let y = luma(img);
    let mut total = 0.0;
    for r in 0..h - 1 {
        for c in 0..w - 1 {
            let v = y[r * w + c];
            total += ((y[r * w + c + 1] - v).powi(2) + (y[(r + 1) * w + c] - v).powi(2)).sqrt();
        }
    }
    total / ((w - 1) * (h - 1)) as f64
}

/// Pixels of small bright dots that `img` has and `reference` (the same size) does not: pixels
/// whose luma is at least 0.15 above each of the 8 pixels two steps away (so a dot up to 3 px
/// across counts once per pixel) and 0.15 above the reference at the same place. A decoder
/// rewarded for detail it cannot place paints such dots; the originals' own stars do not count.
pub fn spurious_dots(img: &Rgb32FImage, reference: &Rgb32FImage) -> usize {
    assert_eq!(img.dimensions(), reference.dimensions(), "dots need equally sized images");
    const STEP: f64 = 0.15;
    const RING: [(isize, isize); 8] =
        [(-2, -2), (-2, 0), (-2, 2), (0, -2), (0, 2), (2, -2), (2, 0), (2, 2)];
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (y, r) = (luma(img), luma(reference));
    let mut dots = 0;
    for row in 2..h.saturating_sub(2) {
        for col in 2..w.saturating_sub(2) {
            let v = y[row * w + col];
            let above_ring = RING.iter().all(|&(dr, dc)| {
                let at = (row as isize + dr) as usize * w + (col as isize + dc) as usize;
                v - y[at] >= STEP
            });
            if above_ring && v - r[row * w + col] >= STEP {
                dots += 1;
            }
        }
    }
    dots
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
    fn flat_patches_keep_flat_squares_and_the_mean() {
        // Painted flat per 4-px square already: the patch reference is the image itself.
        let flat = Rgb32FImage::from_fn(12, 8, |x, y| {
            image::Rgb([(x / 4) as f32 / 3.0, (y / 4) as f32, 0.25])
        });
        assert_eq!(flat_patches(&flat, 4), flat);
        let img = noise_image(3);
        let whole = flat_patches(&img, 1000);
        let mean = |i: &Rgb32FImage| i.as_raw().iter().map(|&v| v as f64).sum::<f64>();
        assert!((mean(&whole) - mean(&img)).abs() < 1e-3);
        assert!(whole.pixels().all(|p| p == whole.get_pixel(0, 0)));
        // Finer squares are never further from the image than coarser ones.
        let (p1, p4, pall) = (
            psnr(&flat_patches(&img, 1), &img),
            psnr(&flat_patches(&img, 4), &img),
            psnr(&whole, &img),
        );
        assert!(p1.is_infinite() && p4 > pall, "{p4} {pall}");
    }

    #[test]
    fn identical_images_are_perfect() {
        let a = noise_image(1);
        assert!(psnr(&a, &a).is_infinite());
        assert!((ssim(&a, &a) - 1.0).abs() < 1e-9);
    }

    /// 56 px with 14-px squares: `inner` gives the slope inside each square.
    fn blocks(inner: f32) -> Rgb32FImage {
        Rgb32FImage::from_fn(56, 56, |x, y| {
            let block = ((x / 14 * 7 + y / 14 * 3) % 5) as f32 / 5.0;
            image::Rgb([block + inner * (x % 14) as f32; 3])
        })
    }

    #[test]
    fn blockiness_sees_a_patch_grid_and_not_a_smooth_ramp() {
        assert!(blockiness(&blocks(0.002), 14) > 10.0, "{}", blockiness(&blocks(0.002), 14));
        assert!(blockiness(&blocks(0.0), 14).is_infinite());
        let ramp = Rgb32FImage::from_fn(56, 56, |x, y| image::Rgb([(x + y) as f32 / 112.0; 3]));
        assert!((blockiness(&ramp, 14) - 1.0).abs() < 1e-6, "{}", blockiness(&ramp, 14));
        let flat = Rgb32FImage::from_pixel(28, 28, image::Rgb([0.3; 3]));
        assert_eq!(blockiness(&flat, 14), 1.0);
    }

    #[test]
    fn gradient_energy_of_ramps_and_blur() {
        let ramp = |slope: f32| {
            Rgb32FImage::from_fn(40, 30, move |x, _| image::Rgb([x as f32 * slope; 3]))
        };
        assert!((gradient_energy(&ramp(0.01)) - 0.01).abs() < 1e-6);
        assert!((gradient_energy(&ramp(0.02)) / gradient_energy(&ramp(0.01)) - 2.0).abs() < 1e-5);
        assert_eq!(gradient_energy(&Rgb32FImage::from_pixel(8, 8, image::Rgb([0.5; 3]))), 0.0);
        let sharp = noise_image(3);
        let blurred = image::imageops::blur(&sharp, 2.0);
        assert!(gradient_energy(&blurred) < 0.5 * gradient_energy(&sharp));
    }

    #[test]
    fn spurious_dots_count_new_isolated_highlights_only() {
        let grey = Rgb32FImage::from_pixel(20, 20, image::Rgb([0.3; 3]));
        let mut dotted = grey.clone();
        dotted.put_pixel(5, 6, image::Rgb([0.9; 3]));
        dotted.put_pixel(12, 12, image::Rgb([0.9; 3]));
        dotted.put_pixel(13, 12, image::Rgb([0.9; 3]));
        // A 2-px dot counts twice; a dot that the reference has too is the picture's own.
        assert_eq!(spurious_dots(&dotted, &grey), 3);
        assert_eq!(spurious_dots(&dotted, &dotted), 0);
        // Too faint, too close to the border, or part of a wide bright area: not a dot.
        let mut faint = grey.clone();
        faint.put_pixel(8, 8, image::Rgb([0.4; 3]));
        faint.put_pixel(1, 8, image::Rgb([0.9; 3]));
        assert_eq!(spurious_dots(&faint, &grey), 0);
        let half =
            Rgb32FImage::from_fn(20, 20, |x, _| image::Rgb([if x < 10 { 0.9 } else { 0.1 }; 3]));
        assert_eq!(spurious_dots(&half, &grey), 0);
    }

    #[test]
    fn psnr_of_a_known_error() {
        let a = Rgb32FImage::from_pixel(8, 8, image::Rgb([0.5, 0.5, 0.5]));
        let b = Rgb32FImage::from_pixel(8, 8, image::Rgb([0.6, 0.6, 0.6]));
        assert!((psnr(&a, &b) - 20.0).abs() < 1e-3);
        assert!(ssim(&noise_image(1), &noise_image(2)) < 0.9);
    }
}
