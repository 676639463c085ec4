//! What the blend moves the photo towards: the upsampled decode (mask mode) or the upsampled
//! decoded change (detail mode), as a difference from the photo, one row at a time.

use image::Rgb32FImage;

use super::mask::HardMask;
use super::pyramid::Plane;
use super::{CompositeMode, CompositeOptions, Placement, Rect};

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
pub(super) struct Target {
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
    pub(super) fn new(
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

    /// The same target over `rect`, a part of its box (the colour shift stays the box's).
    pub(super) fn restrict(&mut self, rect: Rect, placement: &Placement) {
        let (dw, dh) = (self.small.width as u32, self.small.height as u32);
        let c = placement.crop;
        self.columns = taps_along(rect.x0, rect.width(), c[0], c[2], dw);
        self.rows = taps_along(rect.y0, rect.height(), c[1], c[3], dh);
        self.bbox = rect;
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
    pub(super) fn photo_row<'p>(&self, photo: &'p [f32], y: usize) -> &'p [f32] {
        let start = ((self.bbox.y0 as usize + y) * self.width + self.bbox.x0 as usize) * 3;
        &photo[start..start + self.bbox.width() * 3]
    }

    /// Fills `out` (bounding-box width x 3) with row `y` of the box, given the photo's row.
    pub(super) fn row(&self, y: usize, photo_row: &[f32], out: &mut [f32]) {
        // Bilinear: the two decode rows are mixed once per row (into this thread's scratch
        // rows), then per pixel along x only.
        let (r0, r1, fy) = self.rows[y];
        let mix = |plane: &Plane, shift: &[f32], into: &mut Vec<f32>| {
            let (a, b) = (plane.row(r0), plane.row(r1));
            into.clear();
            let values = a.iter().zip(b).enumerate();
            into.extend(values.map(|(i, (a, b))| a + (b - a) * fy + shift[i % shift.len()]));
        };
        MIXED.with_borrow_mut(|(small, keep)| {
            mix(&self.small, &self.offset, small);
            let lerp = |c0: usize, c1: usize, fx: f32, c: usize| {
                let (v0, v1) = (small[c0 * 3 + c], small[c1 * 3 + c]);
                v0 + (v1 - v0) * fx
            };
            let pixels = out.chunks_exact_mut(3).zip(photo_row.chunks_exact(3)).zip(&self.columns);
            match (&self.keep, self.paste) {
                (None, false) => {
                    for ((px, _), &(c0, c1, fx)) in pixels {
                        (0..3).for_each(|c| px[c] = lerp(c0, c1, fx, c));
                    }
                }
                (None, true) => {
                    for ((px, photo), &(c0, c1, fx)) in pixels {
                        (0..3).for_each(|c| px[c] = lerp(c0, c1, fx, c) - photo[c]);
                    }
                }
                (Some(k), paste) => {
                    mix(k, &[0.0], keep);
                    for ((px, photo), &(c0, c1, fx)) in pixels {
                        let weight = keep[c0] + (keep[c1] - keep[c0]) * fx;
                        for c in 0..3 {
                            let v = lerp(c0, c1, fx, c);
                            px[c] = weight * if paste { v - photo[c] } else { v };
                        }
                    }
                }
            }
        });
    }
}

thread_local! {
    /// The decode's (and the preservation weights') two rows mixed for the row being made.
    static MIXED: std::cell::RefCell<(Vec<f32>, Vec<f32>)> = const {
        std::cell::RefCell::new((Vec::new(), Vec::new()))
    };
}
