//! PCA of token grids to RGB pictures: the standard way to see what a ViT's features encode.
//!
//! Only the top three components are needed, so they are found by subspace iteration on the
//! smaller of the covariance (dim x dim) and Gram (tokens x tokens) matrices; this avoids a
//! linear-algebra dependency and a full eigendecomposition of a 1536 x 1536 matrix.

use image::RgbImage;

/// A fitted three-component basis, reusable across images for side-by-side comparison.
#[derive(Clone, Debug)]
pub struct Pca {
    pub mean: Vec<f32>,
    /// Three unit vectors of length `dim`, by decreasing variance.
    pub components: [Vec<f32>; 3],
    /// Per-component 1st and 99th percentiles of the fitting projections, for colour scaling.
    pub ranges: [(f32, f32); 3],
}

impl Pca {
    /// Fits on `tokens`, a row-major `[n, dim]` matrix.
    pub fn fit(tokens: &[f32], dim: usize) -> Self {
        let n = tokens.len() / dim;
        assert!(n >= 1 && tokens.len() == n * dim, "tokens must be [n, dim]");
        let mut mean = vec![0f64; dim];
        for row in tokens.chunks_exact(dim) {
            mean.iter_mut().zip(row).for_each(|(m, &v)| *m += v as f64);
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let centred: Vec<f64> = tokens
            .chunks_exact(dim)
            .flat_map(|row| row.iter().zip(&mean).map(|(&v, m)| v as f64 - m))
            .collect();
        let components = if n < dim {
            // Eigenvectors of X Xᵀ mapped back through Xᵀ.
            let gram = gram(&centred, n, dim);
            let vs = top_eigenvectors::<3>(&gram, n);
            vs.map(|u| {
                let mut v = vec![0f64; dim];
                for (i, row) in centred.chunks_exact(dim).enumerate() {
                    v.iter_mut().zip(row).for_each(|(a, &x)| *a += u[i] * x);
                }
                normalise(v)
            })
        } else {
            let mut cov = vec![0f64; dim * dim];
            for row in centred.chunks_exact(dim) {
                for (i, &a) in row.iter().enumerate() {
                    cov[i * dim..(i + 1) * dim].iter_mut().zip(row).for_each(|(c, &b)| *c += a * b);
                }
            }
            top_eigenvectors::<3>(&cov, dim)
        };
        let mut pca = Self {
            mean: mean.iter().map(|&m| m as f32).collect(),
            components: components.map(|c| c.iter().map(|&v| v as f32).collect()),
            ranges: [(0.0, 1.0); 3],
        };
        // Fix each sign so that the longer tail is positive: deterministic colours.
        let proj = pca.project(tokens);
        for k in 0..3 {
            let skew: f32 = proj.iter().map(|p| p[k].powi(3)).sum();
            if skew < 0.0 {
                pca.components[k].iter_mut().for_each(|v| *v = -*v);
            }
        }
        let proj = pca.project(tokens);
        for k in 0..3 {
            let mut vals: Vec<f32> = proj.iter().map(|p| p[k]).collect();
            vals.sort_by(f32::total_cmp);
            let at = |q: f64| vals[((vals.len() - 1) as f64 * q).round() as usize];
            pca.ranges[k] = (at(0.01), at(0.99));
        }
        pca
    }

    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// Projects `[n, dim]` tokens onto the three components.
    pub fn project(&self, tokens: &[f32]) -> Vec<[f32; 3]> {
        tokens
            .chunks_exact(self.dim())
            .map(|row| {
                let mut out = [0f32; 3];
                for (k, c) in self.components.iter().enumerate() {
                    out[k] =
                        row.iter().zip(&self.mean).zip(c).map(|((&x, &m), &v)| (x - m) * v).sum();
                }
                out
            })
            .collect()
    }

    /// Colours for `[n, dim]` tokens: each component scaled to [0, 1] over the fitted range.
    pub fn colours(&self, tokens: &[f32]) -> Vec<[u8; 3]> {
        self.project(tokens)
            .into_iter()
            .map(|p| {
                std::array::from_fn(|k| {
                    let (lo, hi) = self.ranges[k];
                    let t = ((p[k] - lo) / (hi - lo).max(1e-12)).clamp(0.0, 1.0);
                    (t * 255.0).round() as u8
                })
            })
            .collect()
    }

    /// An RGB picture of a `grid_h x grid_w` token grid, each token drawn as a `cell` px square.
    pub fn picture(&self, tokens: &[f32], grid_h: usize, grid_w: usize, cell: u32) -> RgbImage {
        let colours = self.colours(tokens);
        assert_eq!(colours.len(), grid_h * grid_w, "token count does not match the grid");
        RgbImage::from_fn(grid_w as u32 * cell, grid_h as u32 * cell, |x, y| {
            let (gx, gy) = ((x / cell) as usize, (y / cell) as usize);
            image::Rgb(colours[gy * grid_w + gx])
        })
    }
}

fn gram(x: &[f64], n: usize, dim: usize) -> Vec<f64> {
    let mut g = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let a = &x[i * dim..(i + 1) * dim];
            let b = &x[j * dim..(j + 1) * dim];
            let v: f64 = a.iter().zip(b).map(|(p, q)| p * q).sum();
            g[i * n + j] = v;
            g[j * n + i] = v;
        }
    }
    g
}

fn normalise(mut v: Vec<f64>) -> Vec<f64> {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// Top-k eigenvectors of a symmetric positive semi-definite `size x size` matrix, by
/// orthogonal (subspace) iteration from a fixed start.
fn top_eigenvectors<const K: usize>(m: &[f64], size: usize) -> [Vec<f64>; K] {
    let mut basis: Vec<Vec<f64>> = (0..K)
        .map(|k| {
            normalise(
                (0..size)
                    .map(|i| (((i * 7919 + k * 104_729) % 1000) as f64 / 1000.0) - 0.5)
                    .collect(),
            )
        })
        .collect();
    for _ in 0..300 {
        let mut next: Vec<Vec<f64>> = basis
            .iter()
            .map(|v| {
                (0..size)
                    .map(|i| m[i * size..(i + 1) * size].iter().zip(v).map(|(a, b)| a * b).sum())
                    .collect()
            })
            .collect();
        // Gram-Schmidt keeps the vectors orthonormal, in order of decreasing eigenvalue.
        for k in 0..K {
            for j in 0..k {
                let dot: f64 = next[k].iter().zip(&next[j]).map(|(a, b)| a * b).sum();
                let prev = next[j].clone();
                next[k].iter_mut().zip(&prev).for_each(|(a, b)| *a -= dot * b);
            }
            next[k] = normalise(std::mem::take(&mut next[k]));
        }
        let change: f64 = next
            .iter()
            .zip(&basis)
            .map(|(a, b)| 1.0 - a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>().abs())
            .sum();
        basis = next;
        if change < 1e-12 {
            break;
        }
    }
    std::array::from_fn(|k| basis[k].clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_dominant_directions() {
        // Points spread mostly along axis 2, then axis 0, then axis 4, in 6 dimensions.
        let mut tokens = Vec::new();
        for i in 0..40 {
            let t = i as f32 / 39.0 - 0.5;
            let u = ((i * 17 % 40) as f32 / 39.0) - 0.5;
            let w = ((i * 11 % 40) as f32 / 39.0) - 0.5;
            tokens.extend([2.0 * u, 0.01, 10.0 * t, 0.0, 0.3 * w, 0.02]);
        }
        let pca = Pca::fit(&tokens, 6);
        assert!(pca.components[0][2].abs() > 0.99, "{:?}", pca.components[0]);
        assert!(pca.components[1][0].abs() > 0.99);
        assert!(pca.components[2][4].abs() > 0.95);
        // Fewer tokens than dimensions takes the Gram-matrix path.
        let few: Vec<f32> = (0..4)
            .flat_map(|k| [0.1 * (k % 2) as f32, 0.0, 3.0 * k as f32, 0.0, 0.0, 0.0])
            .collect();
        let pca = Pca::fit(&few, 6);
        assert!(pca.components[0][2].abs() > 0.99, "{:?}", pca.components[0]);
    }
}
