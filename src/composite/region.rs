//! Recompositing only what changed: when a brush stroke changes a few tokens of a 12-megapixel
//! photo, only the pixels those tokens (and the decode pixels that changed) reach are composited
//! again, into the previous result.

use anyhow::{Result, ensure};
use image::Rgb32FImage;
use rayon::prelude::*;

use super::mask::HardMask;
use super::{CompositeMode, CompositeOptions, Placement, Rect, reach_of, run};

/// What a composite is made of (the photo aside).
#[derive(Clone, Copy)]
pub struct Inputs<'a> {
    pub decoded_original: Option<&'a Rgb32FImage>,
    pub decoded_edit: &'a Rgb32FImage,
    pub token_mask: &'a [f32],
    pub placement: &'a Placement,
    pub options: &'a CompositeOptions,
}

/// How far, in photo pixels, a change of the mask or of the decode can move the multi-band
/// blend's output, and how far beyond the written pixels the pyramid must be built so they
/// come out as they do over the whole box: the mask's reach, plus the pyramid's reduce and
/// expand filters at every level (at most 1 1/3 of the reach; the levels are planned so that
/// 2^top (FINE_RADIUS + LEVEL_SPREAD) <= reach), rounded up generously.
pub(super) fn margin(reach: f64) -> u32 {
    (4.0 * reach).ceil() as u32 + 16
}

/// The pixels an edit with this mask can change: the edited tokens' pixels grown by the
/// feather; `None` when no token is edited.
pub fn affected(
    placement: &Placement,
    token_mask: &[f32],
    options: &CompositeOptions,
) -> Option<Rect> {
    if options.mode == CompositeMode::Off || token_mask.len() != placement.grid.0 * placement.grid.1
    {
        return None;
    }
    let mask = HardMask::new(placement, token_mask)?;
    Some(mask.bbox.grown(reach_of(options).ceil() as u32, placement.size))
}

/// The pixels whose composite can differ between `old` and `new` (same photo and placement):
/// everything either reaches when the options changed (or colour matching, which depends on the
/// whole region, is on), else what the changed tokens and decode pixels reach. `None`: nothing
/// changes.
pub fn changed_region(old: Option<&Inputs>, new: &Inputs) -> Option<Rect> {
    let p = new.placement;
    let reach_new = affected(p, new.token_mask, new.options);
    let Some(old) = old else { return reach_new };
    let reach_old = affected(p, old.token_mask, old.options);
    let either = match (reach_old, reach_new) {
        (Some(a), Some(b)) => a.union(&b),
        (a, b) => a.or(b)?,
    };
    let o = new.options;
    let whole = old.options != o
        || (o.color_match && o.mode == CompositeMode::Mask)
        || old.placement != p
        || old.token_mask.len() != new.token_mask.len()
        || old.decoded_edit.dimensions() != new.decoded_edit.dimensions();
    if whole {
        return Some(either);
    }
    let tokens = changed_tokens(p, old.token_mask, new.token_mask);
    let decode = changed_decode(p, old.decoded_edit, new.decoded_edit);
    let changed = match (tokens, decode) {
        (Some(a), Some(b)) => a.union(&b),
        (a, b) => a.or(b)?,
    };
    let reach = margin(reach_of(o)) + reach_of(o).ceil() as u32;
    changed.grown(reach, p.size).intersect(&either)
}

/// The pixels of the tokens whose edited state differs.
fn changed_tokens(p: &Placement, old: &[f32], new: &[f32]) -> Option<Rect> {
    let flipped: Vec<f32> =
        old.iter().zip(new).map(|(a, b)| ((*a > 0.0) != (*b > 0.0)) as u8 as f32).collect();
    HardMask::new(p, &flipped).map(|m| m.bbox)
}

/// The photo pixels whose upsampled decode can differ: the changed decode pixels' box grown by
/// one decode pixel (bilinear), reaching the photo's edge where it touches the crop's (the
/// photo outside the crop samples the decode's edge).
fn changed_decode(p: &Placement, old: &Rgb32FImage, new: &Rgb32FImage) -> Option<Rect> {
    let (dw, dh) = new.dimensions();
    let (mut x0, mut y0, mut x1, mut y1) = (dw, dh, 0, 0);
    for (x, y, px) in new.enumerate_pixels() {
        let before = old.get_pixel(x, y);
        if px.0.map(f32::to_bits) != before.0.map(f32::to_bits) {
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
        }
    }
    if x0 >= x1 {
        return None;
    }
    let c = p.crop;
    let to_photo = |i: u32, n: u32, start: f64, len: f64, size: u32, up: bool| -> u32 {
        if !up && i == 0 {
            return 0;
        }
        if up && i == n {
            return size;
        }
        let i = if up { i + 1 } else { i - 1 };
        let v = start + i as f64 / n as f64 * len;
        (if up { v.ceil() } else { v.floor() }).clamp(0.0, size as f64) as u32
    };
    Some(Rect {
        x0: to_photo(x0, dw, c[0], c[2], p.size.0, false),
        y0: to_photo(y0, dh, c[1], c[3], p.size.1, false),
        x1: to_photo(x1, dw, c[0], c[2], p.size.0, true),
        y1: to_photo(y1, dh, c[1], c[3], p.size.1, true),
    })
}

/// Makes `region` of `out` what [`super::composite`] of `original` gives there (the rest of
/// `out` is left alone): the original's pixels, composited where the edit reaches. With
/// [`changed_region`], `out` follows a changing edit at the cost of what changed.
pub fn composite_region(
    out: &mut Rgb32FImage,
    original: &Rgb32FImage,
    inputs: &Inputs,
    region: Rect,
) -> Result<()> {
    ensure!(out.dimensions() == original.dimensions(), "the output and the photo differ in size");
    let Some(region) = region.intersect(&Rect::of_size(out.dimensions())) else {
        return Ok(());
    };
    let width = out.width() as usize * 3;
    let (x0, x1) = (region.x0 as usize * 3, region.x1 as usize * 3);
    let rows = out.par_chunks_mut(width).zip(original.par_chunks(width));
    rows.skip(region.y0 as usize)
        .take(region.height())
        .for_each(|(o, s)| o[x0..x1].copy_from_slice(&s[x0..x1]));
    if inputs.options.mode == CompositeMode::Off {
        return Ok(());
    }
    run(out, Some(original), inputs, Some(region))
}

#[cfg(test)]
mod tests {
    use super::super::{CompositeOptions, composite};
    use super::*;
    use image::Rgb;

    fn photo(w: u32, h: u32) -> Rgb32FImage {
        Rgb32FImage::from_fn(w, h, |x, y| {
            let t = ((x * 7 + y * 13) % 11) as f32 / 40.0;
            Rgb([0.2 + 0.5 * x as f32 / w as f32 + t, 0.3 + t, 0.7 - 0.4 * y as f32 / h as f32])
        })
    }

    fn decode(shift: f32) -> Rgb32FImage {
        Rgb32FImage::from_fn(56, 56, |x, y| {
            Rgb([x as f32 / 56.0, y as f32 / 56.0, 0.4 + shift * ((x + y) % 3) as f32])
        })
    }

    fn bits(img: &Rgb32FImage) -> Vec<u32> {
        img.as_raw().iter().map(|v| v.to_bits()).collect()
    }

    #[test]
    fn recompositing_what_changed_gives_the_full_composite_bit_for_bit() {
        let (w, h) = (700, 400);
        let original = photo(w, h);
        let placement = Placement::centre_crop((w, h), (56, 56), (8, 8));
        let before = decode(0.0);
        let mut first = vec![0.0; 64];
        (0..3).for_each(|i| first[9 + i] = 1.0);
        // A second stroke: more tokens, and the decode changes under them.
        let mut second = first.clone();
        second[45] = 1.0;
        second[46] = 1.0;
        let mut after = decode(0.0);
        for y in 35..49 {
            for x in 35..56 {
                after.put_pixel(x, y, Rgb([0.9, 0.1, 0.3]));
            }
        }
        for (mode, feather) in
            [(CompositeMode::Mask, 24.0), (CompositeMode::Detail, 24.0), (CompositeMode::Mask, 3.0)]
        {
            let options = CompositeOptions { mode, feather, ..Default::default() };
            let old = Inputs {
                decoded_original: Some(&before),
                decoded_edit: &before,
                token_mask: &first,
                placement: &placement,
                options: &options,
            };
            let new = Inputs { decoded_edit: &after, token_mask: &second, ..old };
            let mut out =
                composite(&original, Some(&before), &before, &first, &placement, &options).unwrap();
            let region = changed_region(Some(&old), &new).expect("something changed");
            assert!(region.area() < (w * h) as usize / 2, "{mode:?}: {region:?}");
            composite_region(&mut out, &original, &new, region).unwrap();
            let full =
                composite(&original, Some(&before), &after, &second, &placement, &options).unwrap();
            assert_eq!(bits(&out), bits(&full), "{mode:?}, feather {feather}");
            // Nothing changed: nothing to do.
            assert_eq!(changed_region(Some(&new), &new), None);
        }
    }

    #[test]
    fn changed_options_or_colour_matching_cover_everything_the_edits_reach() {
        let placement = Placement::centre_crop((300, 200), (56, 56), (4, 4));
        let d = decode(0.0);
        let mut mask = vec![0.0; 16];
        mask[5] = 1.0;
        let a = CompositeOptions { mode: CompositeMode::Mask, feather: 8.0, ..Default::default() };
        let b = CompositeOptions { feather: 16.0, ..a.clone() };
        let old = Inputs {
            decoded_original: None,
            decoded_edit: &d,
            token_mask: &mask,
            placement: &placement,
            options: &a,
        };
        let new = Inputs { options: &b, ..old };
        assert_eq!(changed_region(Some(&old), &new), affected(&placement, &mask, &b));
        let c = CompositeOptions { color_match: true, ..a.clone() };
        let matched = Inputs { options: &c, ..old };
        assert_eq!(changed_region(Some(&matched), &matched), affected(&placement, &mask, &c));
        assert_eq!(changed_region(None, &old), affected(&placement, &mask, &a));
    }
}
