//! Detail mode's single-band blend: `photo += alpha * change`, one row at a time, where `alpha`
//! is the edited tokens' mask blurred by a trapezoid, computed separably from the token grid.
//!
//! The decoded change is an upsampled picture of a few hundred pixels, so it has no detail finer
//! than the feather for a multi-band blend to keep apart: one band gives the same seam. The mask
//! is a sum of token cells, each a product of a column span and a row span, and the blur is
//! separable, so a pixel's weight is `sum over cells of wx(cell column, x) * wy(cell row, y)`
//! with integer weights: exactly 0 beyond the reach, exactly 1 where the whole window is
//! edited. Nothing of the photo's size is allocated; rows run in parallel.

use image::Rgb32FImage;
use rayon::prelude::*;

use super::mask::trapezoid;
use super::target::Target;
use super::{Placement, Rect};

/// Integer blur weights of each token cell along one axis, for each pixel of a span.
struct Axis {
    /// Per pixel of the span: the first cell with weight and how many follow.
    runs: Vec<(usize, usize)>,
    /// The weights of the runs, one after the other.
    weights: Vec<u32>,
    offsets: Vec<usize>,
}

impl Axis {
    /// `cells[c]`: the pixels whose centre lies in cell `c` (`start..end`, empty for none);
    /// `len`: the photo's size along the axis; `span`: the pixels wanted.
    fn new(cells: &[(u32, u32)], len: u32, span: (u32, u32), taps: &[u32]) -> Self {
        let reach = (taps.len() / 2) as i64;
        let mut cum = vec![0u64; taps.len() + 1];
        for (t, &w) in taps.iter().enumerate() {
            cum[t + 1] = cum[t] + w as u64;
        }
        let at = |k: i64| cum[k.clamp(0, taps.len() as i64) as usize];
        let weight = |c: usize, p: u32| {
            let (lo, hi) = cells[c];
            if lo >= hi {
                return 0;
            }
            // Edge pixels repeat outwards, as the multi-band blur clamps at the edges.
            let lo = if lo == 0 { i64::MIN / 4 } else { lo as i64 };
            let hi = if hi == len { i64::MAX / 4 } else { hi as i64 };
            (at(hi - p as i64 + reach) - at(lo - p as i64 + reach)) as u32
        };
        let (mut runs, mut weights, mut offsets) = (Vec::new(), Vec::new(), Vec::new());
        for p in span.0..span.1 {
            offsets.push(weights.len());
            let first = (0..cells.len()).find(|&c| weight(c, p) > 0);
            let last = (0..cells.len()).rfind(|&c| weight(c, p) > 0);
            match (first, last) {
                (Some(f), Some(l)) => {
                    weights.extend((f..=l).map(|c| weight(c, p)));
                    runs.push((f, l - f + 1));
                }
                _ => runs.push((0, 0)),
            }
        }
        Self { runs, weights, offsets }
    }

    fn at(&self, i: usize) -> (usize, &[u32]) {
        let (first, n) = self.runs[i];
        (first, &self.weights[self.offsets[i]..self.offsets[i] + n])
    }
}

/// The pixel span of each token cell along one axis.
fn cell_spans(n: u32, cells: usize, cell_of: impl Fn(u32) -> Option<usize>) -> Vec<(u32, u32)> {
    let mut spans = vec![(0u32, 0u32); cells];
    for p in 0..n {
        if let Some(c) = cell_of(p) {
            let s = &mut spans[c];
            if s.0 >= s.1 {
                *s = (p, p + 1);
            } else {
                s.1 = p + 1;
            }
        }
    }
    spans
}

/// The feathered mask over a rectangle of the photo.
pub(super) struct Feather {
    gw: usize,
    edited: Vec<bool>,
    xs: Axis,
    ys: Axis,
    norm: u64,
    rect: Rect,
}

impl Feather {
    /// The mask of the tokens of weight > 0 blurred by a trapezoid of reach `radius` px, over
    /// `rect`.
    pub(super) fn new(
        placement: &Placement,
        token_mask: &[f32],
        radius: usize,
        rect: Rect,
    ) -> Self {
        let (w, h) = placement.size;
        let (gh, gw) = placement.grid;
        let a = radius / 2;
        let taps = trapezoid(a, radius - a);
        let sum: u64 = taps.iter().map(|&t| t as u64).sum();
        let columns = cell_spans(w, gw, |x| placement.token_column(x));
        let rows = cell_spans(h, gh, |y| placement.token_row(y));
        Self {
            gw,
            edited: token_mask.iter().map(|&v| v > 0.0).collect(),
            xs: Axis::new(&columns, w, (rect.x0, rect.x1), &taps),
            ys: Axis::new(&rows, h, (rect.y0, rect.y1), &taps),
            norm: sum * sum,
            rect,
        }
    }

    /// The rectangle it covers.
    pub(super) fn rect(&self) -> Rect {
        self.rect
    }
}

/// One thread's rows of a [`Feather`]: a row's weights are computed again only when its
/// per-column sums change (the rows inside one token row share them).
pub(super) struct Rows<'f> {
    feather: &'f Feather,
    per_column: Vec<u64>,
    last: Vec<u64>,
    alpha: Vec<f32>,
    valid: bool,
}

impl<'f> Rows<'f> {
    pub(super) fn new(feather: &'f Feather) -> Self {
        let gw = feather.gw;
        let alpha = vec![0.0; feather.rect.width()];
        Self { feather, per_column: vec![0; gw], last: vec![0; gw], alpha, valid: false }
    }

    /// Row `y` of the rectangle, one weight per pixel; `None` when the whole row is 0.
    pub(super) fn row(&mut self, y: usize) -> Option<&[f32]> {
        let f = self.feather;
        self.per_column.fill(0);
        let (first, weights) = f.ys.at(y);
        for (k, &wy) in weights.iter().enumerate() {
            let r = first + k;
            let edited = &f.edited[r * f.gw..(r + 1) * f.gw];
            for (v, &e) in self.per_column.iter_mut().zip(edited) {
                *v += if e { wy as u64 } else { 0 };
            }
        }
        if self.per_column.iter().all(|&v| v == 0) {
            return None;
        }
        if !self.valid || self.per_column != self.last {
            let inv = 1.0 / f.norm as f64;
            for (i, a) in self.alpha.iter_mut().enumerate() {
                let (first, weights) = f.xs.at(i);
                let v = &self.per_column[first..];
                let s: u64 = weights.iter().zip(v).map(|(&w, &v)| w as u64 * v).sum();
                *a = if s >= f.norm { 1.0 } else { (s as f64 * inv) as f32 };
            }
            self.last.copy_from_slice(&self.per_column);
            self.valid = true;
        }
        Some(&self.alpha)
    }
}

/// `dst = src + alpha * change` over `feather.rect` (rows of `dst` outside it are left alone);
/// `src` is `dst` itself when `None`. Pixels of weight 0 are copied, bit for bit.
pub(super) fn apply(
    dst: &mut Rgb32FImage,
    src: Option<&Rgb32FImage>,
    target: &Target,
    feather: &Feather,
) {
    let r = feather.rect;
    let (width, bw) = (dst.width() as usize, r.width());
    let (x0, x1) = (r.x0 as usize * 3, r.x1 as usize * 3);
    let rows = dst.par_chunks_mut(width * 3).enumerate().skip(r.y0 as usize).take(r.height());
    rows.for_each_init(
        || (Rows::new(feather), vec![0f32; bw * 3]),
        |(alphas, change), (oy, row)| {
            let row = &mut row[x0..x1];
            let y = oy - r.y0 as usize;
            let source = src.map(|s| &s.as_raw()[oy * width * 3 + x0..oy * width * 3 + x1]);
            let Some(alpha) = alphas.row(y) else {
                if let Some(s) = source {
                    row.copy_from_slice(s);
                }
                return;
            };
            target.row(y, source.unwrap_or(&*row), change);
            let pixels = row.chunks_exact_mut(3).zip(change.chunks_exact(3)).zip(alpha);
            match source {
                // In place: pixels of weight 0 are not touched.
                None => pixels.filter(|(_, a)| **a != 0.0).for_each(|((p, d), &a)| {
                    (0..3).for_each(|c| p[c] += a * d[c]);
                }),
                Some(s) => pixels.zip(s.chunks_exact(3)).for_each(|(((p, d), &a), s)| {
                    if a == 0.0 {
                        p.copy_from_slice(s);
                    } else {
                        (0..3).for_each(|c| p[c] = s[c] + a * d[c]);
                    }
                }),
            }
        },
    );
}
