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
//! In mask mode `blend` is a multi-band (Laplacian pyramid, Burt & Adelson 1983) blend over the
//! bounding box of the feathered mask: each band of the difference is weighted by the edited tokens' mask
//! softened at that band's scale, from 2 px for the finest band to the whole feather for the
//! coarsest. Texture switches over a few pixels and colour over the feather, so the seam has
//! neither a hard edge nor a halo. Every mask is a blur of the hard token mask with a kernel of
//! bounded reach, so the blend never reaches farther than `feather` px (Euclidean) from an
//! edited token: there, and everywhere outside the bounding box, the output is the original,
//! bit for bit. Detail mode's change is an upsampled decode with nothing finer than the feather
//! in it, so one band does: `photo + alpha * change` with the feathered mask computed
//! separably from the token grid, row by row, without a working buffer of the photo's size
//! (`feather`).
//!
//! [`composite_region`] recomposites only a rectangle into an earlier result, and
//! [`changed_region`] says which rectangle a change of the mask or the decode reaches: the app
//! follows a brush stroke at the cost of what it touched.
//!
//! Working memory beyond the output image (a copy of the original), in mask mode: at most
//! [`WORK_BYTES_PER_BOX_PIXEL`] bytes per pixel of the bounding box (the level-0 mask, its
//! integer blur, and the pyramid levels at a quarter of the pixels and below); no per-pixel
//! allocation, rows are processed in parallel with rayon.

mod feather;
mod mask;
mod pyramid;
mod region;
mod target;

use anyhow::{Result, ensure};
use image::Rgb32FImage;

use crate::image_io::fit_crop;
use feather::Feather;
use mask::{HardMask, alpha_plane, level_radii};
use pyramid::{Plane, blend};
pub use region::{Inputs, affected, changed_region, composite_region};
use target::Target;

/// How an edit reaches the output picture.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
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
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
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

/// Upper bound of the working memory per pixel of the blend's bounding box in mask mode: the
/// pyramid levels from 1 up (difference and collapsed band, 3 x f32 each, and the mask, 1 x f32,
/// at a quarter of the pixels, a sixteenth, ...: 28 / 3 bytes) and the level-1 mask's integer
/// blur, rounded up generously (the level-0 mask is computed row by row).
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
    let inputs = Inputs { decoded_original, decoded_edit, token_mask, placement, options };
    run(photo, None, &inputs, None)
}

/// Chebyshev reach of the blend: a square blur of reach r/sqrt 2 stays within r px in every
/// direction.
fn reach_of(options: &CompositeOptions) -> f64 {
    options.feather as f64 / std::f64::consts::SQRT_2
}

/// Composites into `dst` from `src` (`dst` itself when `None`), writing only the pixels of
/// `region` (all that the edit reaches when `None`); `dst` is left alone elsewhere.
fn run(
    dst: &mut Rgb32FImage,
    src: Option<&Rgb32FImage>,
    inputs: &Inputs,
    region: Option<Rect>,
) -> Result<()> {
    let Inputs { decoded_original, decoded_edit, token_mask, placement, options: o } = *inputs;
    ensure!(o.mode != CompositeMode::Off, "composite mode `off` leaves nothing to composite");
    ensure!(o.feather.is_finite() && o.feather >= 0.0, "feather must be >= 0 px");
    ensure!(o.strength.is_finite(), "detail strength must be a number");
    ensure!(o.preserve.is_finite() && o.preserve >= 0.0, "preserve must be >= 0");
    ensure!(
        dst.dimensions() == placement.size,
        "the photo is {:?} but the placement is for {:?}",
        dst.dimensions(),
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
    let reach = reach_of(o);
    let bbox = mask.bbox.grown(reach.ceil() as u32, placement.size);
    let Some(write) = region.map_or(Some(bbox), |r| r.intersect(&bbox)) else {
        return Ok(());
    };
    let source = src.unwrap_or(&*dst);
    let mut target = Target::new(source, decoded_original, decoded_edit, placement, bbox, o, &mask);
    if o.mode == CompositeMode::Detail {
        target.restrict(write, placement);
        let feather = Feather::new(placement, token_mask, reach.floor() as usize, write);
        feather::apply(dst, src, &target, &feather);
        return Ok(());
    }
    let radii = level_radii(reach, bbox.width(), bbox.height());
    // The pyramid over the written pixels and what reaches them, on the levels' grid of the
    // whole box, so the written pixels come out as a blend over the whole box makes them.
    let step = 1u32 << (radii.len() - 1);
    let grown = write.grown(region::margin(reach), placement.size).intersect(&bbox).unwrap_or(bbox);
    let align = |p: u32, origin: u32| origin + (p - origin) / step * step;
    let area = Rect { x0: align(grown.x0, bbox.x0), y0: align(grown.y0, bbox.y0), ..grown };
    target.restrict(area, placement);
    let level0 = Feather::new(placement, token_mask, radii[0], area);
    let alphas: Vec<Plane> =
        radii.iter().enumerate().skip(1).map(|(k, &r)| alpha_plane(&mask, area, k, r)).collect();
    blend(dst, src, &target, write, &level0, &alphas);
    Ok(())
}

/// Half-open pixel rectangle `[x0, x1) x [y0, y1)` of the photo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rect {
    pub x0: u32,
    pub y0: u32,
    pub x1: u32,
    pub y1: u32,
}

impl Rect {
    /// The whole of a picture of `size`.
    pub fn of_size(size: (u32, u32)) -> Rect {
        Rect { x0: 0, y0: 0, x1: size.0, y1: size.1 }
    }

    pub fn width(&self) -> usize {
        (self.x1 - self.x0) as usize
    }

    pub fn height(&self) -> usize {
        (self.y1 - self.y0) as usize
    }

    pub fn area(&self) -> usize {
        self.width() * self.height()
    }

    /// Grown by `by` px on every side, within a picture of `size`.
    pub fn grown(&self, by: u32, size: (u32, u32)) -> Rect {
        Rect {
            x0: self.x0.saturating_sub(by),
            y0: self.y0.saturating_sub(by),
            x1: self.x1.saturating_add(by).min(size.0),
            y1: self.y1.saturating_add(by).min(size.1),
        }
    }

    /// The pixels in both; `None` when there are none.
    pub fn intersect(&self, other: &Rect) -> Option<Rect> {
        let r = Rect {
            x0: self.x0.max(other.x0),
            y0: self.y0.max(other.y0),
            x1: self.x1.min(other.x1),
            y1: self.y1.min(other.y1),
        };
        (r.x0 < r.x1 && r.y0 < r.y1).then_some(r)
    }

    /// The smallest rectangle holding both.
    pub fn union(&self, other: &Rect) -> Rect {
        Rect {
            x0: self.x0.min(other.x0),
            y0: self.y0.min(other.y0),
            x1: self.x1.max(other.x1),
            y1: self.y1.max(other.y1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::mask::{FINE_RADIUS, LEVEL_SPREAD};
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
