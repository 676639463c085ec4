//! How close generated images are to real ones, in a frozen encoder's feature space:
//! Fréchet distance (FD-DINOv2: the FID formula on DINOv2 features instead of Inception ones)
//! and k-nearest-neighbour precision and recall (Kynkäänniemi et al., 2019).

use std::path::Path;

use anyhow::{Result, bail};
use burn::prelude::*;
use serde::Serialize;

use crate::encoders::VisionEncoder;
use crate::image_io;

/// Images are compared at this size (as FD-DINOv2 does).
pub const EVAL_SIZE: u32 = 224;
/// Neighbours defining each sample's manifold radius.
pub const K: usize = 3;

#[derive(Clone, Debug, Serialize)]
pub struct Evaluation {
    pub fd: f64,
    pub precision: f64,
    pub recall: f64,
    pub real: usize,
    pub generated: usize,
    pub encoder: String,
    pub k: usize,
}

/// One feature vector per image of `dir` (a `contact_sheet.png` there is left out): the CLS token (the mean patch token for encoders
/// without one), at 224 px, centre-cropped. Returns `[n, dim]` row-major and `dim`.
pub fn folder_features(
    encoder: &dyn VisionEncoder,
    dir: &Path,
    device: &Device,
) -> Result<(Vec<f32>, usize)> {
    let files: Vec<_> = image_io::images_in(dir)?
        .into_iter()
        .filter(|f| f.file_name().is_none_or(|n| n != crate::generator::CONTACT_SHEET))
        .collect();
    let info = encoder.info();
    let size = (EVAL_SIZE / info.patch_size as u32) * info.patch_size as u32;
    let mut features = Vec::new();
    let mut dim = 0;
    for chunk in files.chunks(8) {
        let pixels = chunk
            .iter()
            .map(
                |f| Ok(image_io::load_for_encoder(f, (size, size), info.mean, info.std, device)?.0),
            )
            .collect::<Result<Vec<_>>>()?;
        let out = encoder.forward(Tensor::cat(pixels, 0));
        let vectors = match out.cls {
            Some(cls) => cls,
            None => {
                let [b, h, w, d] = out.patch_tokens.dims();
                out.patch_tokens.reshape([b, h * w, d]).mean_dim(1).reshape([b, d])
            }
        };
        dim = vectors.dims()[1];
        features.extend(vectors.into_data().try_into_vec_as::<f32>().expect("f32 data"));
    }
    Ok((features, dim))
}

/// Compares the images of two folders with `encoder`.
pub fn evaluate(
    encoder: &dyn VisionEncoder,
    real: &Path,
    generated: &Path,
    device: &Device,
) -> Result<Evaluation> {
    let (a, dim) = folder_features(encoder, real, device)?;
    let (b, _) = folder_features(encoder, generated, device)?;
    let (n_real, n_gen) = (a.len() / dim, b.len() / dim);
    if n_real <= K || n_gen <= K {
        bail!("each folder needs more than {K} images (real: {n_real}, generated: {n_gen})");
    }
    let (precision, recall) = precision_recall(&a, &b, dim, K);
    Ok(Evaluation {
        fd: frechet_distance(&a, &b, dim),
        precision,
        recall,
        real: n_real,
        generated: n_gen,
        encoder: encoder.info().name.clone(),
        k: K,
    })
}

fn mean_and_covariance(x: &[f32], dim: usize) -> (Vec<f64>, Vec<f64>) {
    let n = x.len() / dim;
    let mut mean = vec![0f64; dim];
    for row in x.chunks_exact(dim) {
        mean.iter_mut().zip(row).for_each(|(m, &v)| *m += v as f64 / n as f64);
    }
    let mut cov = vec![0f64; dim * dim];
    let denom = (n.max(2) - 1) as f64;
    for row in x.chunks_exact(dim) {
        let c: Vec<f64> = row.iter().zip(&mean).map(|(&v, m)| v as f64 - m).collect();
        for i in 0..dim {
            for j in i..dim {
                cov[i * dim + j] += c[i] * c[j] / denom;
            }
        }
    }
    for i in 0..dim {
        for j in 0..i {
            cov[i * dim + j] = cov[j * dim + i];
        }
    }
    (mean, cov)
}

/// `|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^1/2 S_b S_a^1/2)^1/2)`, the symmetric form of
/// `tr((S_a S_b)^1/2)`, so only symmetric eigendecompositions are needed.
pub fn frechet_distance(a: &[f32], b: &[f32], dim: usize) -> f64 {
    let (ma, sa) = mean_and_covariance(a, dim);
    let (mb, sb) = mean_and_covariance(b, dim);
    let mean_term: f64 = ma.iter().zip(&mb).map(|(x, y)| (x - y).powi(2)).sum();
    let trace = |s: &[f64]| (0..dim).map(|i| s[i * dim + i]).sum::<f64>();
    let (values, vectors) = symmetric_eigen(&sa, dim);
    // S_a^1/2 = V diag(sqrt(l)) V^T
    let mut root = vec![0f64; dim * dim];
    for k in 0..dim {
        let s = values[k].max(0.0).sqrt();
        for i in 0..dim {
            let vik = vectors[i * dim + k] * s;
            for j in 0..dim {
                root[i * dim + j] += vik * vectors[j * dim + k];
            }
        }
    }
    let m = matmul(&matmul(&root, &sb, dim), &root, dim);
    let (m_values, _) = symmetric_eigen(&m, dim);
    let cross: f64 = m_values.iter().map(|&l| l.max(0.0).sqrt()).sum();
    (mean_term + trace(&sa) + trace(&sb) - 2.0 * cross).max(0.0)
}

fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut out = vec![0f64; n * n];
    for i in 0..n {
        for k in 0..n {
            let aik = a[i * n + k];
            if aik != 0.0 {
                out[i * n..(i + 1) * n]
                    .iter_mut()
                    .zip(&b[k * n..(k + 1) * n])
                    .for_each(|(o, &v)| *o += aik * v);
            }
        }
    }
    out
}

/// Eigenvalues and eigenvectors (columns of a row-major matrix) of a symmetric matrix by cyclic
/// Jacobi rotations in f64: simple, accurate for the few-hundred-dimensional covariances here,
/// and it keeps a linear-algebra library (and its build time) out of the crate.
pub fn symmetric_eigen(matrix: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = matrix.to_vec();
    let mut v = vec![0f64; n * n];
    (0..n).for_each(|i| v[i * n + i] = 1.0);
    let norm: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt().max(f64::MIN_POSITIVE);
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j].powi(2))
            .sum();
        if off.sqrt() <= 1e-14 * norm {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() <= 1e-300 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

fn squared_distances(a: &[f32], b: &[f32], dim: usize) -> Vec<Vec<f64>> {
    a.chunks_exact(dim)
        .map(|x| {
            b.chunks_exact(dim)
                .map(|y| x.iter().zip(y).map(|(&p, &q)| (p as f64 - q as f64).powi(2)).sum())
                .collect()
        })
        .collect()
}

/// Squared distance from each sample to its k-th nearest other sample.
fn radii(x: &[f32], dim: usize, k: usize) -> Vec<f64> {
    squared_distances(x, x, dim)
        .into_iter()
        .map(|mut row| {
            row.sort_by(f64::total_cmp);
            row[k.min(row.len() - 1)] // row[0] is the sample itself
        })
        .collect()
}

/// Share of `query` samples inside some `reference` sample's k-NN ball.
fn coverage(reference: &[f32], query: &[f32], dim: usize, k: usize) -> f64 {
    let r = radii(reference, dim, k);
    let d = squared_distances(query, reference, dim);
    let inside = d.iter().filter(|row| row.iter().zip(&r).any(|(d, r)| d <= r)).count();
    inside as f64 / d.len().max(1) as f64
}

/// Precision (generated samples on the real manifold) and recall (real samples on the generated
/// manifold).
pub fn precision_recall(real: &[f32], generated: &[f32], dim: usize, k: usize) -> (f64, f64) {
    (coverage(real, generated, dim, k), coverage(generated, real, dim, k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn gaussian(n: usize, dim: usize, scale: &[f64], shift: f64, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        (0..n)
            .flat_map(|_| {
                rng.normals(dim)
                    .into_iter()
                    .zip(scale)
                    .map(|(z, s)| (z as f64 * s + shift) as f32)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn eigen_decomposition_reconstructs_the_matrix() {
        let n = 6;
        let x = gaussian(20, n, &[1.0; 6], 0.0, 1);
        let (_, cov) = mean_and_covariance(&x, n);
        let (values, vectors) = symmetric_eigen(&cov, n);
        for i in 0..n {
            for j in 0..n {
                let r: f64 =
                    (0..n).map(|k| vectors[i * n + k] * values[k] * vectors[j * n + k]).sum();
                assert!((r - cov[i * n + j]).abs() < 1e-10);
            }
        }
    }

    #[test]
    fn fd_matches_the_closed_form_for_diagonal_gaussians() {
        // Diagonal covariances commute: FD = |dmu|^2 + sum (sqrt(a) - sqrt(b))^2, computed here
        // from the sample moments so only the matrix square root is under test.
        let dim = 5;
        let a = gaussian(4000, dim, &[1.0, 2.0, 0.5, 1.5, 1.0], 0.0, 2);
        let b = gaussian(4000, dim, &[0.5, 1.0, 1.0, 1.0, 3.0], 0.3, 3);
        let (ma, sa) = mean_and_covariance(&a, dim);
        let (mb, sb) = mean_and_covariance(&b, dim);
        let fd = frechet_distance(&a, &b, dim);
        let mean_term: f64 = ma.iter().zip(&mb).map(|(x, y)| (x - y).powi(2)).sum();
        // The sample covariances are nearly diagonal; off-diagonal terms change FD only slightly.
        let diag: f64 =
            (0..dim).map(|i| (sa[i * dim + i].sqrt() - sb[i * dim + i].sqrt()).powi(2)).sum();
        assert!(
            (fd - (mean_term + diag)).abs() < 0.05 * (mean_term + diag),
            "{fd} vs {}",
            mean_term + diag
        );
    }

    #[test]
    fn fd_of_a_set_with_itself_is_zero_and_grows_with_noise() {
        let dim = 32;
        let x = gaussian(300, dim, &[1.0; 32], 0.0, 4);
        assert!(frechet_distance(&x, &x, dim) < 1e-8);
        let mut rng = Rng::new(5);
        let mut last = 0.0;
        for sigma in [0.1, 0.3, 1.0] {
            let noisy: Vec<f32> =
                x.iter().zip(rng.normals(x.len())).map(|(&v, z)| v + sigma * z).collect();
            let fd = frechet_distance(&x, &noisy, dim);
            assert!(fd > last, "sigma {sigma}: FD {fd} should exceed {last}");
            last = fd;
        }
    }

    #[test]
    fn precision_and_recall_see_mode_dropping_and_off_manifold_samples() {
        let dim = 4;
        let real = gaussian(400, dim, &[1.0; 4], 0.0, 6);
        let same = gaussian(400, dim, &[1.0; 4], 0.0, 7);
        let (p, r) = precision_recall(&real, &same, dim, K);
        assert!(p > 0.9 && r > 0.9, "same distribution: {p} {r}");
        // A collapsed generator: precise but without recall.
        let collapsed = gaussian(400, dim, &[0.1; 4], 0.0, 8);
        let (p, r) = precision_recall(&real, &collapsed, dim, K);
        assert!(p > 0.9 && r < 0.3, "collapsed: {p} {r}");
        // Samples far off the real data: no precision.
        let off = gaussian(400, dim, &[1.0; 4], 6.0, 9);
        let (p, _) = precision_recall(&real, &off, dim, K);
        assert!(p < 0.05, "off-manifold: {p}");
    }
}
