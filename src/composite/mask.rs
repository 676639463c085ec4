//! The edited tokens as pixels of the photo, and that mask feathered at each pyramid level.

use rayon::prelude::*;

use super::Placement;
use super::Rect;
use super::pyramid::Plane;

/// The edited tokens mapped to the photo's pixels: a pixel is edited when its centre lies in
/// an edited token's cell.
pub(super) struct HardMask {
    columns: Vec<Option<usize>>,
    rows: Vec<Option<usize>>,
    edited: Vec<bool>,
    grid_width: usize,
    pub(super) bbox: Rect,
}

impl HardMask {
    /// `None` when no pixel is edited.
    pub(super) fn new(placement: &Placement, token_mask: &[f32]) -> Option<Self> {
        let (w, h) = placement.size;
        let columns: Vec<_> = (0..w).map(|x| placement.token_column(x)).collect();
        let rows: Vec<_> = (0..h).map(|y| placement.token_row(y)).collect();
        let edited: Vec<bool> = token_mask.iter().map(|&v| v > 0.0).collect();
        let gw = placement.grid.1;
        let used_rows: Vec<bool> =
            (0..placement.grid.0).map(|r| edited[r * gw..(r + 1) * gw].contains(&true)).collect();
        let used_cols: Vec<bool> =
            (0..gw).map(|c| (0..placement.grid.0).any(|r| edited[r * gw + c])).collect();
        let span = |cells: &[Option<usize>], used: &[bool]| {
            let hit = |c: &Option<usize>| c.is_some_and(|c| used[c]);
            let first = cells.iter().position(hit)?;
            let last = cells.iter().rposition(hit)?;
            Some((first as u32, last as u32 + 1))
        };
        let (x0, x1) = span(&columns, &used_cols)?;
        let (y0, y1) = span(&rows, &used_rows)?;
        Some(Self { columns, rows, edited, grid_width: gw, bbox: Rect { x0, y0, x1, y1 } })
    }

    /// 1 where pixel `(x, y)` is edited, for each `x` of `xs`, else 0.
    fn row_at(&self, y: u32, xs: &[u32], out: &mut [u32]) {
        let Some(r) = self.rows[y as usize] else {
            return out.fill(0);
        };
        let edited = &self.edited[r * self.grid_width..(r + 1) * self.grid_width];
        for (o, &x) in out.iter_mut().zip(xs) {
            *o = self.columns[x as usize].is_some_and(|c| edited[c]) as u32;
        }
    }

    pub(super) fn at(&self, x: u32, y: u32) -> bool {
        match (self.rows[y as usize], self.columns[x as usize]) {
            (Some(r), Some(c)) => self.edited[r * self.grid_width + c],
            _ => false,
        }
    }
}

/// Mask reach of the finest bands, in pixels of their own level.
pub(super) const FINE_RADIUS: usize = 2;
/// Upper bound, in pixels of level k per 2^k, of how far a level-k value spreads beyond its
/// mask's reach: sampling (0.5 px) and the expansions down to level 0 (0.75 px per level).
pub(super) const LEVEL_SPREAD: f64 = 2.5;

/// Largest mask radius in pixels of its level (a wider feather than the pyramid's depth allows
/// on a narrow box is narrowed): keeps the integer weights exact in f32.
const MAX_RADIUS: usize = 60;

/// The mask radius of each pyramid level, finest first: as many levels as keep the coarsest
/// band inside `reach` px (Chebyshev) and at least 4 px in size; the coarsest takes what is
/// left of the reach, the finer ones [`FINE_RADIUS`].
pub(super) fn level_radii(reach: f64, width: usize, height: usize) -> Vec<usize> {
    let mut top = 0;
    while top < 8
        && (1u64 << (top + 1)) as f64 * (FINE_RADIUS as f64 + LEVEL_SPREAD) <= reach
        && (width >> (top + 1)) >= 4
        && (height >> (top + 1)) >= 4
    {
        top += 1;
    }
    if top == 0 {
        return vec![(reach.floor() as usize).min(MAX_RADIUS)];
    }
    let mut radii = vec![FINE_RADIUS; top + 1];
    let left = (reach / (1u64 << top) as f64 - LEVEL_SPREAD).floor() as usize;
    radii[top] = left.min(MAX_RADIUS);
    radii
}

/// Size of level `k` of a pyramid over `n` pixels: halved, rounded up, `k` times.
fn level_len(n: usize, k: usize) -> usize {
    (0..k).fold(n, |n, _| n.div_ceil(2))
}

/// The hard mask at level `k` of the bounding box, blurred by a trapezoid (two boxes) of reach
/// `radius` level-k pixels. Sums are integers, so the weight is exactly 0 beyond the reach and
/// exactly 1 where the whole window is edited.
pub(super) fn alpha_plane(mask: &HardMask, bbox: Rect, k: usize, radius: usize) -> Plane {
    let (w, h) = (level_len(bbox.width(), k), level_len(bbox.height(), k));
    // Level-k pixel i is centred on full-resolution pixel (i + 0.5) 2^k - 0.5.
    let centre = |i: usize, len: usize| {
        let c = ((i as f64 + 0.5) * (1u64 << k) as f64 - 0.5).round() as usize;
        c.min(len - 1) as u32
    };
    let xs: Vec<u32> = (0..w).map(|i| bbox.x0 + centre(i, bbox.width())).collect();
    let ys: Vec<u32> = (0..h).map(|j| bbox.y0 + centre(j, bbox.height())).collect();
    let a = radius / 2;
    let taps = trapezoid(a, radius - a);
    let norm = taps.iter().sum::<u32>().pow(2);
    // Whole sums below 2^24 convert to f32 exactly: weights are exactly 0 and 1 where they should.
    assert!(norm < 1 << 24, "mask blur radius {radius} is too large");
    let norm = norm as f32;
    let reach = taps.len() / 2;
    let mut across = vec![0u32; w * h];
    across.par_chunks_mut(w).zip(&ys).for_each_init(
        || vec![0u32; w],
        |edited, (row, &y)| {
            mask.row_at(y, &xs, edited);
            for (i, out) in row.iter_mut().enumerate() {
                *out = taps
                    .iter()
                    .enumerate()
                    .map(|(t, &wt)| wt * edited[(i + t).saturating_sub(reach).min(w - 1)])
                    .sum();
            }
        },
    );
    let mut alpha = Plane::zeros(w, h, 1);
    alpha.rows_mut().enumerate().for_each_init(
        || vec![0u32; w],
        |sums, (j, row)| {
            sums.fill(0);
            for (t, &wt) in taps.iter().enumerate() {
                let src = (j + t).saturating_sub(reach).min(h - 1);
                for (sum, &v) in sums.iter_mut().zip(&across[src * w..(src + 1) * w]) {
                    *sum += wt * v;
                }
            }
            row.iter_mut().zip(sums.iter()).for_each(|(a, &sum)| *a = sum as f32 / norm);
        },
    );
    alpha
}

/// Integer weights of a box of radius `a` convolved with one of radius `b`.
pub(super) fn trapezoid(a: usize, b: usize) -> Vec<u32> {
    let mut taps = vec![0u32; 2 * (a + b) + 1];
    for i in 0..=2 * a {
        for j in 0..=2 * b {
            taps[i + j] += 1;
        }
    }
    taps
}
