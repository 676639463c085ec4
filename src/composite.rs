//! Putting a regenerated edit back into the photo it came from, at the photo's own resolution.
//!
//! The decoder regenerates the whole centre crop the encoder saw, at a few hundred pixels, so
//! its output alone would replace every pixel of a 12-megapixel photo, touched or not, with a
//! blurry reconstruction. Here the photo is kept and only the edit's region changes:
//!
//! `out = original + blend(target - original)`, where the target is
//! - [`CompositeMode::Mask`]: the decoded edit, upsampled to the photo (optionally shifted to
//!   the colour of the photo around the region, [`CompositeOptions::color_match`]);
//! - [`CompositeMode::Detail`]: `original + strength * (decode(edited) - decode(original))`
//!   upsampled: the photo keeps its own detail and takes on the edit's change (for edits over
//!   the whole image: channel scaling, blends, directions).
//!
//! `blend` is a multi-band (Laplacian pyramid, Burt & Adelson 1983) blend over the bounding box
//! of the feathered mask: each band of the difference is weighted by the edited tokens' mask
//! softened at that band's scale, from 2 px for the finest band to the whole feather for the
//! coarsest. Texture switches over a few pixels and colour over the feather, so the seam has
//! neither a hard edge nor a halo. Every mask is a blur of the hard token mask with a kernel of
//! bounded reach, so the blend never reaches farther than `feather` px (Euclidean) from an
//! edited token: there, and everywhere outside the bounding box, the output is the original,
//! bit for bit (`original + 0.0`).
//!
//! Working memory beyond the output image (a copy of the original): at most
//! [`WORK_BYTES_PER_BOX_PIXEL`] bytes per pixel of the bounding box (the level-0 mask, its
//! integer blur, and the pyramid levels at a quarter of the pixels and below); no per-pixel
//! allocation, rows are processed in parallel with rayon.

use anyhow::{Result, ensure};
use image::Rgb32FImage;
use rayon::prelude::*;

use crate::image_io::fit_crop;

/// How an edit reaches the output picture.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum CompositeMode {
    /// The plain decode at the decoder's resolution (everything went through the decoder).
    #[default]
    Off,
    /// The decoded edit pasted into the photo through the feathered mask of the edits.
    Mask,
    /// The photo plus the decoded change, inside the feathered mask of the edits.
    Detail,
}

/// Settings of [`composite`].
#[derive(Clone, Debug, PartialEq)]
pub struct CompositeOptions {
    pub mode: CompositeMode,
    /// Widest transition, in pixels of the photo: no pixel farther than this from an edited
    /// token changes. 0 is a hard paste.
    pub feather: f32,
    /// Shift the pasted colours so that the decode matches the photo around the region
    /// (mask mode).
    pub color_match: bool,
    /// How much of the decoded change detail mode adds (1: all of it).
    pub strength: f32,
    /// Soft preservation: where the decoded edit differs from the decoded original by less than
    /// this (mean over channels, 0..1) the original is kept, fading in up to twice this; 0 is off.
    pub preserve: f32,
}

impl Default for CompositeOptions {
    fn default() -> Self {
        Self {
            mode: CompositeMode::Off,
            feather: DEFAULT_FEATHER,
            color_match: false,
            strength: 1.0,
            preserve: 0.0,
        }
    }
}

/// Default feather in pixels of the photo (Krita's selection feather is at least 32 px).
pub const DEFAULT_FEATHER: f32 = 32.0;

/// Upper bound of the working memory per pixel of the blend's bounding box: the level-0 mask
/// (f32) and its horizontal blur (u32), plus the pyramid levels from 1 up (difference and
/// collapsed band, 3 x f32 each, and the mask, 1 x f32, at a quarter of the pixels, a sixteenth,
/// ...: 28 / 3 bytes), rounded up.
pub const WORK_BYTES_PER_BOX_PIXEL: usize = 18;

/// Where the encoder's crop and its token grid lie in the photo.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Placement {
    /// The photo's size.
    pub size: (u32, u32),
    /// The crop's left, top, width and height in the photo's pixels (pixel edges, not centres).
    pub crop: [f64; 4],
    /// Token rows and columns over the crop.
    pub grid: (usize, usize),
}

impl Placement {
    /// The centre crop [`crate::image_io::fit_and_crop`] takes from a photo of `size` to make a
    /// `work` picture, covered by `grid` tokens.
    pub fn centre_crop(size: (u32, u32), work: (u32, u32), grid: (usize, usize)) -> Self {
        let fit = fit_crop(size.0, size.1, work.0, work.1);
        let (sx, sy) = (size.0 as f64 / fit.resized.0 as f64, size.1 as f64 / fit.resized.1 as f64);
        let crop = [
            fit.offset.0 as f64 * sx,
            fit.offset.1 as f64 * sy,
            work.0 as f64 * sx,
            work.1 as f64 * sy,
        ];
        Self { size, crop, grid }
    }

    /// The token column whose cell holds the centre of pixel column `x`.
    pub fn token_column(&self, x: u32) -> Option<usize> {
        cell(x, self.crop[0], self.crop[2], self.grid.1)
    }

    /// The token row whose cell holds the centre of pixel row `y`.
    pub fn token_row(&self, y: u32) -> Option<usize> {
        cell(y, self.crop[1], self.crop[3], self.grid.0)
    }

    /// The token under the centre of pixel `(x, y)`, as (row, column).
    pub fn token_at(&self, x: u32, y: u32) -> Option<(usize, usize)> {
        Some((self.token_row(y)?, self.token_column(x)?))
    }
}

fn cell(p: u32, start: f64, len: f64, cells: usize) -> Option<usize> {
    let t = (p as f64 + 0.5 - start) / len;
    (0.0..1.0).contains(&t).then(|| ((t * cells as f64) as usize).min(cells - 1))
}

/// The edited photo at `original`'s resolution: a copy of `original` composited by
/// [`composite_in_place`]. Mode `Off` returns the plain decode instead.
pub fn composite(
    original: &Rgb32FImage,
    decoded_original: Option<&Rgb32FImage>,
    decoded_edit: &Rgb32FImage,
    token_mask: &[f32],
    placement: &Placement,
    options: &CompositeOptions,
) -> Result<Rgb32FImage> {
    if options.mode == CompositeMode::Off {
        return Ok(decoded_edit.clone());
    }
    let mut photo = original.clone();
    composite_in_place(&mut photo, decoded_original, decoded_edit, token_mask, placement, options)?;
    Ok(photo)
}

/// Composites the edit into `photo`, changing only pixels within the feather of an edited
/// token (no copy of the photo is made).
///
/// `decoded_edit` is the decode of the edited latent and `decoded_original` that of the
/// unedited one (needed by detail mode and by preservation); both cover `placement.crop`.
/// `token_mask` holds one weight per token (`placement.grid`, row-major); tokens of weight > 0
/// are edited. With no edited token `photo` is left as it is.
pub fn composite_in_place(
    photo: &mut Rgb32FImage,
    decoded_original: Option<&Rgb32FImage>,
    decoded_edit: &Rgb32FImage,
    token_mask: &[f32],
    placement: &Placement,
    options: &CompositeOptions,
) -> Result<()> {
    let o = options;
    ensure!(o.mode != CompositeMode::Off, "composite mode `off` leaves nothing to composite");
    ensure!(o.feather.is_finite() && o.feather >= 0.0, "feather must be >= 0 px");
    ensure!(o.strength.is_finite(), "detail strength must be a number");
    ensure!(o.preserve.is_finite() && o.preserve >= 0.0, "preserve must be >= 0");
    ensure!(
        photo.dimensions() == placement.size,
        "the photo is {:?} but the placement is for {:?}",
        photo.dimensions(),
        placement.size
    );
    ensure!(
        token_mask.len() == placement.grid.0 * placement.grid.1,
        "the mask has {} weights for a {}x{} token grid",
        token_mask.len(),
        placement.grid.0,
        placement.grid.1
    );
    let Some(mask) = HardMask::new(placement, token_mask) else {
        return Ok(());
    };
    if let Some(d) = decoded_original {
        ensure!(d.dimensions() == decoded_edit.dimensions(), "the two decodes differ in size");
    } else {
        ensure!(
            o.mode == CompositeMode::Mask && o.preserve == 0.0,
            "detail mode and preservation need the decoded original"
        );
    }
    // Chebyshev reach: a square blur of reach r/sqrt 2 stays within r px in every direction.
    let reach = o.feather as f64 / std::f64::consts::SQRT_2;
    let bbox = mask.bbox.grown(reach.ceil() as u32, placement.size);
    let radii = level_radii(reach, bbox.width(), bbox.height());
    let target = Target::new(photo, decoded_original, decoded_edit, placement, bbox, o, &mask);
    let alphas: Vec<Plane> =
        radii.iter().enumerate().map(|(k, &r)| alpha_plane(&mask, bbox, k, r)).collect();
    blend(photo, &target, bbox, &alphas);
    Ok(())
}

/// Half-open pixel rectangle `[x0, x1) x [y0, y1)` of the photo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rect {
    x0: u32,
    y0: u32,
    x1: u32,
    y1: u32,
}

impl Rect {
    fn width(&self) -> usize {
        (self.x1 - self.x0) as usize
    }

    fn height(&self) -> usize {
        (self.y1 - self.y0) as usize
    }

    fn grown(&self, by: u32, size: (u32, u32)) -> Rect {
        Rect {
            x0: self.x0.saturating_sub(by),
            y0: self.y0.saturating_sub(by),
            x1: self.x1.saturating_add(by).min(size.0),
            y1: self.y1.saturating_add(by).min(size.1),
        }
    }
}

/// The edited tokens mapped to the photo's pixels: a pixel is edited when its centre lies in
/// an edited token's cell.
struct HardMask {
    columns: Vec<Option<usize>>,
    rows: Vec<Option<usize>>,
    edited: Vec<bool>,
    grid_width: usize,
    bbox: Rect,
}

impl HardMask {
    /// `None` when no pixel is edited.
    fn new(placement: &Placement, token_mask: &[f32]) -> Option<Self> {
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

    fn at(&self, x: u32, y: u32) -> bool {
        match (self.rows[y as usize], self.columns[x as usize]) {
            (Some(r), Some(c)) => self.edited[r * self.grid_width + c],
            _ => false,
        }
    }
}

/// Mask reach of the finest bands, in pixels of their own level.
const FINE_RADIUS: usize = 2;
/// Upper bound, in pixels of level k per 2^k, of how far a level-k value spreads beyond its
/// mask's reach: sampling (0.5 px) and the expansions down to level 0 (0.75 px per level).
const LEVEL_SPREAD: f64 = 2.5;

/// Largest mask radius in pixels of its level (a wider feather than the pyramid's depth allows
/// on a narrow box is narrowed): keeps the integer weights exact in f32.
const MAX_RADIUS: usize = 60;

/// The mask radius of each pyramid level, finest first: as many levels as keep the coarsest
/// band inside `reach` px (Chebyshev) and at least 4 px in size; the coarsest takes what is
/// left of the reach, the finer ones [`FINE_RADIUS`].
fn level_radii(reach: f64, width: usize, height: usize) -> Vec<usize> {
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

/// A picture of `channels` interleaved f32 values per pixel.
struct Plane {
    width: usize,
    height: usize,
    channels: usize,
    data: Vec<f32>,
}

impl Plane {
    fn zeros(width: usize, height: usize, channels: usize) -> Self {
        Self { width, height, channels, data: vec![0.0; width * height * channels] }
    }

    fn row(&self, y: usize) -> &[f32] {
        let n = self.width * self.channels;
        &self.data[y * n..(y + 1) * n]
    }

    fn rows_mut(&mut self) -> rayon::slice::ChunksMut<'_, f32> {
        let n = self.width * self.channels;
        self.data.par_chunks_mut(n)
    }
}

/// Size of level `k` of a pyramid over `n` pixels: halved, rounded up, `k` times.
fn level_len(n: usize, k: usize) -> usize {
    (0..k).fold(n, |n, _| n.div_ceil(2))
}

/// The hard mask at level `k` of the bounding box, blurred by a trapezoid (two boxes) of reach
/// `radius` level-k pixels. Sums are integers, so the weight is exactly 0 beyond the reach and
/// exactly 1 where the whole window is edited.
fn alpha_plane(mask: &HardMask, bbox: Rect, k: usize, radius: usize) -> Plane {
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
fn trapezoid(a: usize, b: usize) -> Vec<u32> {
    let mut taps = vec![0u32; 2 * (a + b) + 1];
    for i in 0..=2 * a {
        for j in 0..=2 * b {
            taps[i + j] += 1;
        }
    }
    taps
}

/// Bilinear sampling positions along one axis of the decode: (index, next index, weight of
/// the next).
type Tap = (usize, usize, f32);

fn taps_along(start: u32, len: usize, crop_start: f64, crop_len: f64, src_len: u32) -> Vec<Tap> {
    let n = src_len as usize;
    (0..len)
        .map(|i| {
            let p = start as f64 + i as f64 + 0.5;
            let s = ((p - crop_start) / crop_len * n as f64 - 0.5).clamp(0.0, (n - 1) as f64);
            let i0 = s.floor() as usize;
            (i0, (i0 + 1).min(n - 1), (s - i0 as f64) as f32)
        })
        .collect()
}

/// The difference `target - original` over the bounding box, one row at a time.
struct Target {
    bbox: Rect,
    /// The photo's width.
    width: usize,
    columns: Vec<Tap>,
    rows: Vec<Tap>,
    /// Mask mode: the decoded edit; detail mode: strength x (decoded edit - decoded original).
    small: Plane,
    /// Preservation weight per decoded pixel (0: keep the original).
    keep: Option<Plane>,
    /// Mask mode: the photo itself is subtracted.
    paste: bool,
    offset: [f32; 3],
}

impl Target {
    fn new(
        photo: &Rgb32FImage,
        decoded_original: Option<&Rgb32FImage>,
        decoded_edit: &Rgb32FImage,
        placement: &Placement,
        bbox: Rect,
        options: &CompositeOptions,
        mask: &HardMask,
    ) -> Self {
        let (dw, dh) = decoded_edit.dimensions();
        let c = placement.crop;
        let columns = taps_along(bbox.x0, bbox.width(), c[0], c[2], dw);
        let rows = taps_along(bbox.y0, bbox.height(), c[1], c[3], dh);
        let edit = decoded_edit.as_raw();
        let paste = options.mode == CompositeMode::Mask;
        let small_data = match decoded_original {
            Some(d) if !paste => {
                edit.iter().zip(d.as_raw()).map(|(e, o)| options.strength * (e - o)).collect()
            }
            _ => edit.clone(),
        };
        let small =
            Plane { width: dw as usize, height: dh as usize, channels: 3, data: small_data };
        let keep = decoded_original.filter(|_| options.preserve > 0.0).map(|d| {
            let t = options.preserve;
            let data = edit
                .chunks_exact(3)
                .zip(d.as_raw().chunks_exact(3))
                .map(|(e, o)| {
                    let diff = (0..3).map(|i| (e[i] - o[i]).abs()).sum::<f32>() / 3.0;
                    let s = ((diff - t) / t).clamp(0.0, 1.0);
                    s * s * (3.0 - 2.0 * s)
                })
                .collect();
            Plane { width: dw as usize, height: dh as usize, channels: 1, data }
        });
        let width = photo.width() as usize;
        let mut target =
            Self { bbox, width, columns, rows, small, keep: None, paste, offset: [0.0; 3] };
        if paste && options.color_match {
            target.offset = target.periphery_offset(mask, photo.as_raw());
        }
        target.keep = keep;
        target
    }

    /// Mean of `photo - decode` over the unedited pixels of the bounding box (every fourth row
    /// and column): the colour shift that makes the pasted decode match its surroundings.
    fn periphery_offset(&self, mask: &HardMask, photo: &[f32]) -> [f32; 3] {
        let mut row = vec![0f32; self.bbox.width() * 3];
        let (mut sum, mut n) = ([0f64; 3], 0usize);
        for y in (0..self.bbox.height()).step_by(4) {
            self.row(y, self.photo_row(photo, y), &mut row);
            let oy = self.bbox.y0 + y as u32;
            for x in (0..self.bbox.width()).step_by(4) {
                if !mask.at(self.bbox.x0 + x as u32, oy) {
                    // Mask mode's difference is decode - photo.
                    (0..3).for_each(|c| sum[c] -= row[x * 3 + c] as f64);
                    n += 1;
                }
            }
        }
        if n == 0 { [0.0; 3] } else { sum.map(|s| (s / n as f64) as f32) }
    }

    /// Row `y` of the box in the photo's values.
    fn photo_row<'p>(&self, photo: &'p [f32], y: usize) -> &'p [f32] {
        let start = ((self.bbox.y0 as usize + y) * self.width + self.bbox.x0 as usize) * 3;
        &photo[start..start + self.bbox.width() * 3]
    }

    /// Fills `out` (bounding-box width x 3) with row `y` of the box, given the photo's row.
    fn row(&self, y: usize, photo_row: &[f32], out: &mut [f32]) {
        let (r0, r1, fy) = self.rows[y];
        let (a, b) = (self.small.row(r0), self.small.row(r1));
        let keep = self.keep.as_ref().map(|k| (k.row(r0), k.row(r1)));
        let pixels = out.chunks_exact_mut(3).zip(photo_row.chunks_exact(3)).zip(&self.columns);
        for ((px, photo), &(c0, c1, fx)) in pixels {
            let weight = match keep {
                Some((ka, kb)) => bilerp(ka[c0], ka[c1], kb[c0], kb[c1], fx, fy),
                None => 1.0,
            };
            for c in 0..3 {
                let (i0, i1) = (c0 * 3 + c, c1 * 3 + c);
                let v = bilerp(a[i0], a[i1], b[i0], b[i1], fx, fy);
                let d = if self.paste { v + self.offset[c] - photo[c] } else { v };
                px[c] = weight * d;
            }
        }
    }
}

fn bilerp(a0: f32, a1: f32, b0: f32, b1: f32, fx: f32, fy: f32) -> f32 {
    let a = a0 + (a1 - a0) * fx;
    let b = b0 + (b1 - b0) * fx;
    a + (b - a) * fy
}

/// Reduces a picture of `width x height` (given row by row) to half size with the separable
/// `[1 3 3 1] / 8` filter: coarse pixel i sits between fine pixels 2i and 2i + 1.
fn reduce(width: usize, height: usize, row: &(dyn Fn(usize, &mut [f32]) + Sync)) -> Plane {
    const TAPS: [(isize, f32); 4] = [(-1, 0.125), (0, 0.375), (1, 0.375), (2, 0.125)];
    let (w, h) = (width.div_ceil(2), height.div_ceil(2));
    let mut out = Plane::zeros(w, h, 3);
    let clamp = |i: isize, n: usize| i.clamp(0, n as isize - 1) as usize;
    out.rows_mut().enumerate().for_each_init(
        || vec![0f32; width * 3],
        |fine, (j, coarse)| {
            for (dy, wy) in TAPS {
                row(clamp(2 * j as isize + dy, height), fine);
                for (i, px) in coarse.chunks_exact_mut(3).enumerate() {
                    for (dx, wx) in TAPS {
                        let x = clamp(2 * i as isize + dx, width);
                        for c in 0..3 {
                            px[c] += wy * wx * fine[x * 3 + c];
                        }
                    }
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

/// The multi-band blend: `photo += collapse(alpha_k * laplacian_k(target - photo))` inside
/// `bbox`.
fn blend(photo: &mut Rgb32FImage, target: &Target, bbox: Rect, alphas: &[Plane]) {
    let (bw, bh) = (bbox.width(), bbox.height());
    let top = alphas.len() - 1;
    let values = photo.as_raw();
    let level0 = |y: usize, out: &mut [f32]| target.row(y, target.photo_row(values, y), out);
    // Differences at levels 1..=top (index k - 1).
    let mut deltas: Vec<Plane> = Vec::with_capacity(top);
    for alpha in &alphas[1..] {
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
    // Collapse from the top: C_top = a_top d_top, C_k = a_k (d_k - E d_k+1) + E C_k+1, keeping
    // (d_k, C_k) for the level below.
    let mut upper: Option<(Plane, Plane)> = None;
    for k in (1..=top).rev() {
        let d = deltas.pop().expect("one difference per level");
        let band = collapse_level(&d, &alphas[k], upper.as_ref());
        upper = Some((d, band));
    }
    let width = photo.width() as usize;
    let alpha = &alphas[0];
    let rows = photo.par_chunks_mut(width * 3).enumerate().skip(bbox.y0 as usize).take(bh);
    rows.for_each_init(
        || (vec![0f32; bw * 3], vec![0f32; bw * 3], vec![0f32; bw * 3], vec![0f32; bw * 3]),
        |(d, between, ed, ec), (oy, row)| {
            let y = oy - bbox.y0 as usize;
            let row = &mut row[bbox.x0 as usize * 3..bbox.x1 as usize * 3];
            target.row(y, row, d);
            if let Some((cd, cc)) = &upper {
                expand_row(cd, y, bw, &mut between[..cd.width * 3], ed);
                expand_row(cc, y, bw, &mut between[..cc.width * 3], ec);
            } else {
                ed.fill(0.0);
                ec.fill(0.0);
            }
            for (p, v) in row.iter_mut().zip(band_values(alpha.row(y), d, ed, ec)) {
                *p += v;
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

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    /// A textured photo: gradients plus a fine checker, so every pixel differs from its
    /// neighbours.
    fn photo(w: u32, h: u32) -> Rgb32FImage {
        Rgb32FImage::from_fn(w, h, |x, y| {
            let t = if (x + y) % 2 == 0 { 0.05 } else { -0.05 };
            Rgb([0.2 + 0.5 * x as f32 / w as f32 + t, 0.3 + t, 0.7 - 0.4 * y as f32 / h as f32])
        })
    }

    fn flat(w: u32, h: u32, v: [f32; 3]) -> Rgb32FImage {
        Rgb32FImage::from_pixel(w, h, Rgb(v))
    }

    fn mask_opts(feather: f32) -> CompositeOptions {
        CompositeOptions { mode: CompositeMode::Mask, feather, ..Default::default() }
    }

    /// Tokens (row, column) of a `rows x cols` grid set to 1.
    fn tokens(rows: usize, cols: usize, on: &[(usize, usize)]) -> Vec<f32> {
        let mut m = vec![0.0; rows * cols];
        on.iter().for_each(|&(r, c)| m[r * cols + c] = 1.0);
        m
    }

    fn bits(img: &Rgb32FImage) -> Vec<u32> {
        img.as_raw().iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn placement_is_the_centre_crop_of_fit_and_crop() {
        let p = Placement::centre_crop((60, 30), (30, 30), (2, 2));
        assert_eq!(p.crop, [15.0, 0.0, 30.0, 30.0]);
        assert_eq!(p.token_at(14, 0), None);
        assert_eq!(p.token_at(15, 0), Some((0, 0)));
        assert_eq!(p.token_at(44, 29), Some((1, 1)));
        assert_eq!(p.token_at(45, 0), None);
        // Downscaled: 451 x 300 to 224 x 224 keeps the full height.
        let p = Placement::centre_crop((451, 300), (224, 224), (16, 16));
        assert!((p.crop[3] - 300.0).abs() < 1e-9 && (p.crop[2] - 300.0).abs() < 2.0);
        assert_eq!(Placement::centre_crop((56, 56), (56, 56), (4, 4)).crop, [0.0, 0.0, 56.0, 56.0]);
    }

    #[test]
    fn no_edited_token_gives_the_original_bit_for_bit() {
        let original = photo(90, 40);
        let placement = Placement::centre_crop((90, 40), (28, 28), (2, 2));
        let decoded = flat(28, 28, [0.9, 0.1, 0.1]);
        for mode in [CompositeMode::Mask, CompositeMode::Detail] {
            let o = CompositeOptions { mode, color_match: true, preserve: 0.1, ..mask_opts(8.0) };
            let out =
                composite(&original, Some(&decoded), &decoded, &[0.0; 4], &placement, &o).unwrap();
            assert_eq!(bits(&out), bits(&original));
        }
    }

    #[test]
    fn pixels_farther_than_the_feather_are_untouched_and_the_inside_is_the_edit() {
        let (w, h) = (150, 100);
        let original = photo(w, h);
        let placement = Placement::centre_crop((w, h), (56, 56), (4, 4));
        let edit = flat(56, 56, [0.9, 0.1, 0.1]);
        // A 50 px block at the top left of the crop and one token at the bottom right: pixels
        // near the other corners lie inside the bounding box but far from the mask.
        let mask = tokens(4, 4, &[(0, 0), (0, 1), (1, 0), (1, 1), (3, 3)]);
        let edited: Vec<(i64, i64)> = (0..h)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .filter(|&(x, y)| placement.token_at(x, y).is_some_and(|(r, c)| mask[r * 4 + c] > 0.0))
            .map(|(x, y)| (x as i64, y as i64))
            .collect();
        for feather in [0.0, 3.0, 12.0, 30.0] {
            let out =
                composite(&original, None, &edit, &mask, &placement, &mask_opts(feather)).unwrap();
            for y in 0..h {
                for x in 0..w {
                    let d2 = edited
                        .iter()
                        .map(|&(ex, ey)| (ex - x as i64).pow(2) + (ey - y as i64).pow(2))
                        .min()
                        .unwrap() as f32;
                    let (a, b) = (original.get_pixel(x, y).0, out.get_pixel(x, y).0);
                    if d2 > feather * feather {
                        assert_eq!(
                            a.map(f32::to_bits),
                            b.map(f32::to_bits),
                            "({x}, {y}) at {feather}"
                        );
                    }
                }
            }
            // The middle of the block (25 px from its inner edges) is the decode.
            let centre = out.get_pixel(50, 25).0;
            let near = centre.iter().zip([0.9, 0.1, 0.1]).all(|(a, b)| (a - b).abs() < 1e-4);
            assert!(near, "feather {feather}: centre {centre:?}");
        }
    }

    /// The largest jump between horizontal neighbours across the left border of the region.
    fn largest_jump(img: &Rgb32FImage, border: u32, band: u32, rows: std::ops::Range<u32>) -> f32 {
        let mut most = 0f32;
        for y in rows {
            for x in border - band..border + band {
                let (a, b) = (img.get_pixel(x, y).0, img.get_pixel(x + 1, y).0);
                most = most.max((0..3).map(|c| (a[c] - b[c]).abs()).fold(0.0, f32::max));
            }
        }
        most
    }

    #[test]
    fn a_feathered_seam_has_no_step() {
        let original = photo(224, 224);
        let placement = Placement::centre_crop((224, 224), (224, 224), (16, 16));
        let edit = flat(224, 224, [0.95, 0.95, 0.1]);
        let mask =
            tokens(16, 16, &(4..12).flat_map(|r| (8..16).map(move |c| (r, c))).collect::<Vec<_>>());
        let hard = composite(&original, None, &edit, &mask, &placement, &mask_opts(0.0)).unwrap();
        let soft = composite(&original, None, &edit, &mask, &placement, &mask_opts(32.0)).unwrap();
        // The region starts at column 8 * 14 = 112; rows well inside its height.
        let (h, s) = (largest_jump(&hard, 112, 30, 90..130), largest_jump(&soft, 112, 30, 90..130));
        assert!(s < 0.5 * h, "feathered jump {s} vs hard paste {h}");
    }

    #[test]
    fn colour_matching_lowers_the_difference_along_the_border() {
        let original = photo(224, 224);
        let placement = Placement::centre_crop((224, 224), (224, 224), (16, 16));
        // A decode of the whole crop that came back 0.2 too red and too dark in blue.
        let edit = Rgb32FImage::from_fn(224, 224, |x, y| {
            let p = original.get_pixel(x, y).0;
            Rgb([p[0] + 0.2, p[1], p[2] - 0.15])
        });
        let mask =
            tokens(16, 16, &(4..12).flat_map(|r| (4..12).map(move |c| (r, c))).collect::<Vec<_>>());
        let border_difference = |img: &Rgb32FImage| {
            let (mut sum, mut n) = (0f64, 0);
            for y in 50..174 {
                for x in 50..62 {
                    let (a, b) = (img.get_pixel(x, y).0, original.get_pixel(x, y).0);
                    sum += (0..3).map(|c| (a[c] - b[c]).abs() as f64).sum::<f64>();
                    n += 1;
                }
            }
            sum / n as f64
        };
        let plain = composite(&original, None, &edit, &mask, &placement, &mask_opts(16.0)).unwrap();
        let matched = CompositeOptions { color_match: true, ..mask_opts(16.0) };
        let matched = composite(&original, None, &edit, &mask, &placement, &matched).unwrap();
        let (p, m) = (border_difference(&plain), border_difference(&matched));
        assert!(m < 0.25 * p, "colour-matched border difference {m} vs {p}");
    }

    #[test]
    fn detail_mode_adds_the_decoded_change_and_keeps_the_sides() {
        let original = photo(120, 60);
        let placement = Placement::centre_crop((120, 60), (28, 28), (2, 2));
        let (before, after) = (flat(28, 28, [0.3; 3]), flat(28, 28, [0.4, 0.3, 0.2]));
        let o = CompositeOptions { mode: CompositeMode::Detail, strength: 0.5, ..mask_opts(8.0) };
        let out = composite(&original, Some(&before), &after, &[1.0; 4], &placement, &o).unwrap();
        let (a, b) = (original.get_pixel(60, 30).0, out.get_pixel(60, 30).0);
        for (c, change) in [0.05, 0.0, -0.05].into_iter().enumerate() {
            assert!((b[c] - a[c] - change).abs() < 1e-5, "channel {c}: {a:?} -> {b:?}");
        }
        // The crop is 60 px wide in the middle; the sides beyond the feather are the photo.
        assert_eq!(out.get_pixel(10, 30), original.get_pixel(10, 30));
        assert_eq!(out.get_pixel(110, 5), original.get_pixel(110, 5));
    }

    #[test]
    fn preservation_keeps_the_original_where_the_decode_did_not_change() {
        let original = photo(112, 112);
        let placement = Placement::centre_crop((112, 112), (112, 112), (8, 8));
        let before = flat(112, 112, [0.5; 3]);
        let after = Rgb32FImage::from_fn(112, 112, |x, _| Rgb([if x < 56 { 0.5 } else { 0.9 }; 3]));
        let o = CompositeOptions { preserve: 0.05, ..mask_opts(8.0) };
        let out = composite(&original, Some(&before), &after, &[1.0; 64], &placement, &o).unwrap();
        assert_eq!(out.get_pixel(10, 50), original.get_pixel(10, 50));
        assert!((out.get_pixel(100, 50).0[0] - 0.9).abs() < 1e-4);
    }

    #[test]
    fn level_plan_stays_within_the_reach() {
        assert_eq!(level_radii(0.0, 500, 500), vec![0]);
        assert_eq!(level_radii(4.0, 500, 500), vec![4]);
        for reach in [9.0, 22.6, 100.0, 1000.0] {
            let radii = level_radii(reach, 4000, 3000);
            let top = radii.len() - 1;
            assert!(top >= 1 && radii[..top].iter().all(|&r| r == FINE_RADIUS));
            let spread = (1u64 << top) as f64 * (radii[top] as f64 + LEVEL_SPREAD);
            assert!(spread <= reach && radii[top] >= FINE_RADIUS, "{reach}: {radii:?}");
        }
        // A small box limits the depth.
        assert!(level_radii(1000.0, 20, 3000).len() <= 3);
    }
}
