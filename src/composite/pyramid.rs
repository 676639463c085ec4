//! The multi-band blend: a Laplacian pyramid of `target - photo` over the bounding box, each
//! band weighted by the mask at its level, collapsed straight into the photo's rows.

use image::Rgb32FImage;
use rayon::prelude::*;

use super::Rect;
use super::feather::{Feather, Rows};
use super::target::Target;

/// A picture of `channels` interleaved f32 values per pixel.
pub(super) struct Plane {
    pub(super) width: usize,
    pub(super) height: usize,
    pub(super) channels: usize,
    pub(super) data: Vec<f32>,
}

impl Plane {
    pub(super) fn zeros(width: usize, height: usize, channels: usize) -> Self {
        Self { width, height, channels, data: vec![0.0; width * height * channels] }
    }

    pub(super) fn row(&self, y: usize) -> &[f32] {
        let n = self.width * self.channels;
        &self.data[y * n..(y + 1) * n]
    }

    pub(super) fn rows_mut(&mut self) -> rayon::slice::ChunksMut<'_, f32> {
        let n = self.width * self.channels;
        self.data.par_chunks_mut(n)
    }
}

/// Reduces a picture of `width x height` (given row by row) to half size with the separable
/// `[1 3 3 1] / 8` filter: coarse pixel i sits between fine pixels 2i and 2i + 1. Each fine row
/// is filtered along x once per thread and kept while the next coarse row needs it (neighbouring
/// coarse rows share two fine rows).
fn reduce(width: usize, height: usize, row: &(dyn Fn(usize, &mut [f32]) + Sync)) -> Plane {
    const TAPS: [f32; 4] = [0.125, 0.375, 0.375, 0.125];
    let (w, h) = (width.div_ceil(2), height.div_ceil(2));
    let mut out = Plane::zeros(w, h, 3);
    let clamp = |i: usize, n: usize| i.saturating_sub(1).min(n - 1);
    let across = |y: usize, fine: &mut [f32], half: &mut Vec<f32>| {
        row(y, fine);
        half.clear();
        for i in 0..w {
            let mut px = [0f32; 3];
            for (t, wx) in TAPS.iter().enumerate() {
                let x = clamp(2 * i + t, width);
                (0..3).for_each(|c| px[c] += wx * fine[x * 3 + c]);
            }
            half.extend(px);
        }
    };
    out.rows_mut().enumerate().for_each_init(
        || (vec![0f32; width * 3], Vec::<(usize, Vec<f32>)>::with_capacity(4)),
        |(fine, kept), (j, coarse)| {
            for (t, wy) in TAPS.iter().enumerate() {
                let y = clamp(2 * j + t, height);
                let at = match kept.iter().position(|(k, _)| *k == y) {
                    Some(p) => p,
                    None => {
                        let mut half = if kept.len() == 4 { kept.remove(0).1 } else { Vec::new() };
                        across(y, fine, &mut half);
                        kept.push((y, half));
                        kept.len() - 1
                    }
                };
                for (o, v) in coarse.iter_mut().zip(&kept[at].1) {
                    *o += wy * v;
                }
            }
        },
    );
    out
}

/// Row `y` of `coarse` expanded bilinearly to twice its size (`width` pixels wide): fine pixel
/// 2i takes 3/4 of coarse pixel i and 1/4 of i - 1, fine pixel 2i + 1 3/4 of i and 1/4 of i + 1.
fn expand_row(coarse: &Plane, y: usize, width: usize, between: &mut [f32], out: &mut [f32]) {
    let near = |i: usize, n: usize| {
        if i.is_multiple_of(2) { (i / 2).saturating_sub(1) } else { (i / 2 + 1).min(n - 1) }
    };
    let (a, b) = (coarse.row(y / 2), coarse.row(near(y, coarse.height)));
    for ((v, &a), &b) in between.iter_mut().zip(a).zip(b) {
        *v = 0.75 * a + 0.25 * b;
    }
    for (x, px) in out[..width * 3].chunks_exact_mut(3).enumerate() {
        let (i, n) = (x / 2, near(x, coarse.width));
        for c in 0..3 {
            px[c] = 0.75 * between[i * 3 + c] + 0.25 * between[n * 3 + c];
        }
    }
}

/// The multi-band blend over `bbox`: `dst = src + collapse(alpha_k * laplacian_k(target - src))`,
/// written only for the pixels of `write` (inside `bbox`); `src` is `dst` itself when `None`.
/// The finest mask is computed row by row (`level0`, over `bbox`), the coarser ones are planes
/// (`alphas`, levels 1 and up).
pub(super) fn blend(
    dst: &mut Rgb32FImage,
    src: Option<&Rgb32FImage>,
    target: &Target,
    write: Rect,
    level0: &Feather,
    alphas: &[Plane],
) {
    let bbox = level0.rect();
    let (bw, bh) = (bbox.width(), bbox.height());
    let top = alphas.len();
    // Collapse from the top: C_top = a_top d_top, C_k = a_k (d_k - E d_k+1) + E C_k+1, keeping
    // (d_k, C_k) for the level below.
    let upper = {
        let values = src.unwrap_or(&*dst).as_raw();
        let level0 = |y: usize, out: &mut [f32]| target.row(y, target.photo_row(values, y), out);
        // Differences at levels 1..=top (index k - 1).
        let mut deltas: Vec<Plane> = Vec::with_capacity(top);
        for alpha in alphas {
            let plane = match deltas.last() {
                None => reduce(bw, bh, &level0),
                Some(fine) => {
                    let copy = |y: usize, out: &mut [f32]| out.copy_from_slice(fine.row(y));
                    reduce(fine.width, fine.height, &copy)
                }
            };
            debug_assert_eq!((plane.width, plane.height), (alpha.width, alpha.height));
            deltas.push(plane);
        }
        let mut upper: Option<(Plane, Plane)> = None;
        for k in (1..=top).rev() {
            let d = deltas.pop().expect("one difference per level");
            let band = collapse_level(&d, &alphas[k - 1], upper.as_ref());
            upper = Some((d, band));
        }
        upper
    };
    let width = dst.width() as usize;
    let zeros = vec![0f32; bw];
    let (wx0, wx1) = (write.x0 as usize * 3, write.x1 as usize * 3);
    let (skip, keep) = ((write.x0 - bbox.x0) as usize * 3, write.width() * 3);
    let rows =
        dst.par_chunks_mut(width * 3).enumerate().skip(write.y0 as usize).take(write.height());
    rows.for_each_init(
        || (Rows::new(level0), [0; 5].map(|_| vec![0f32; bw * 3])),
        |(rows0, [photo, d, between, ed, ec]), (oy, row)| {
            let y = oy - bbox.y0 as usize;
            let box_row = (oy * width + bbox.x0 as usize) * 3..(oy * width + bbox.x1 as usize) * 3;
            match src {
                Some(s) => photo.copy_from_slice(&s.as_raw()[box_row]),
                None => photo.copy_from_slice(&row[bbox.x0 as usize * 3..bbox.x1 as usize * 3]),
            }
            target.row(y, photo, d);
            if let Some((cd, cc)) = &upper {
                expand_row(cd, y, bw, &mut between[..cd.width * 3], ed);
                expand_row(cc, y, bw, &mut between[..cc.width * 3], ec);
            } else {
                ed.fill(0.0);
                ec.fill(0.0);
            }
            let alpha = rows0.row(y).unwrap_or(&zeros);
            let values = band_values(alpha, d, ed, ec).zip(photo.iter()).skip(skip).take(keep);
            for (p, (v, s)) in row[wx0..wx1].iter_mut().zip(values) {
                *p = s + v;
            }
        },
    );
}

/// `alpha (d - ed) + ec` along a row: `alpha` per pixel, the rest per value.
fn band_values<'a>(
    alpha: &'a [f32],
    d: &'a [f32],
    ed: &'a [f32],
    ec: &'a [f32],
) -> impl Iterator<Item = f32> + 'a {
    let values = d.iter().zip(ed).zip(ec).enumerate();
    values.map(move |(i, ((d, ed), ec))| alpha[i / 3] * (d - ed) + ec)
}

/// `alpha (d - E d_up) + E c_up` at one level, or `alpha d` at the top (`upper` = None).
fn collapse_level(d: &Plane, alpha: &Plane, upper: Option<&(Plane, Plane)>) -> Plane {
    let width = d.width;
    let mut band = Plane::zeros(width, d.height, 3);
    band.rows_mut().enumerate().for_each_init(
        || (vec![0f32; width * 3], vec![0f32; width * 3], vec![0f32; width * 3]),
        |(between, ed, ec), (y, row)| {
            match upper {
                Some((du, cu)) => {
                    expand_row(du, y, width, &mut between[..du.width * 3], ed);
                    expand_row(cu, y, width, &mut between[..cu.width * 3], ec);
                }
                None => {
                    ed.fill(0.0);
                    ec.fill(0.0);
                }
            }
            for (p, v) in row.iter_mut().zip(band_values(alpha.row(y), d.row(y), ed, ec)) {
                *p = v;
            }
        },
    );
    band
}
