//! Soft masks: which tokens an edit touches, and how strongly.
//!
//! Shapes are given in fractions of the image (0..1 on both axes, x to the right, y down), so a
//! recipe does not depend on the latent's resolution. They are rasterised at token resolution to
//! one weight in `[0, 1]` per token, sampled at the token's centre `((x + 0.5) / width,
//! (y + 0.5) / height)`.
//!
//! Lengths (stroke radius, feather) are fractions of the image *width*; distances along y are
//! converted assuming square tokens, i.e. the image's aspect ratio is the grid's.
//!
//! JSON forms (one shape key per object, plus optional `feather` and `invert`):
//!
//! ```json
//! {"rect": [0.1, 0.2, 0.6, 0.9]}
//! {"stroke": {"points": [[0.2, 0.5], [0.8, 0.5]], "radius": 0.05, "hardness": 0.5}}
//! {"all": true}
//! {"union": [{"rect": [0, 0, 0.5, 0.5]}, {"rect": [0.5, 0.5, 1, 1]}], "feather": 0.05}
//! {"rect": [0.25, 0.25, 0.75, 0.75], "invert": true}
//! ```

use anyhow::{Result, bail, ensure};
use serde::{Deserialize, Serialize};

use crate::edit::filter::{Kernel, blur};

/// A soft mask: a shape, optionally feathered, optionally inverted.
///
/// Build it from JSON (validated while parsing) or in code (validated by [`Mask::validate`] and
/// again by [`Mask::rasterise`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "MaskWire", into = "MaskWire")]
pub struct Mask {
    /// What the mask covers before feathering and inversion.
    pub shape: Shape,
    /// Standard deviation of a Gaussian blur of the rasterised weights, in fractions of the image
    /// width; 0 leaves the edge as it is. Applied before `invert`.
    pub feather: f32,
    /// Use `1 - weight`: everything except the shape.
    pub invert: bool,
}

/// The covered region of a [`Mask`].
#[derive(Clone, Debug, PartialEq)]
pub enum Shape {
    /// `[x0, y0, x1, y1]` with `x0 < x1`, `y0 < y1`; tokens whose centre lies inside (edges
    /// included) get weight 1. JSON: `{"rect": [x0, y0, x1, y1]}`.
    Rect([f32; 4]),
    /// A brush stroke. JSON: `{"stroke": {"points": ..., "radius": r, "hardness": h}}`.
    Stroke(Stroke),
    /// Every token. JSON: `{"all": true}`.
    All,
    /// The largest weight of the parts at each token. JSON: `{"union": [mask, ...]}`.
    Union(Vec<Mask>),
}

/// Capsules of radius `radius` around the segments between consecutive points (a single point
/// is a round dab).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stroke {
    /// `[x, y]` pairs in fractions of the image.
    pub points: Vec<[f32; 2]>,
    /// Brush radius in fractions of the image width; must be > 0.
    pub radius: f32,
    /// 1: full weight out to the radius (hard edge); 0: weight falls smoothly from 1 on the
    /// stroke's spine to 0 at the radius; in between, full weight out to `hardness * radius`.
    #[serde(default = "one")]
    pub hardness: f32,
}

fn one() -> f32 {
    1.0
}

impl Mask {
    /// Every token at weight 1.
    pub fn all() -> Self {
        Self { shape: Shape::All, feather: 0.0, invert: false }
    }

    /// The rectangle `[x0, y0, x1, y1]`, in fractions of the image.
    pub fn rect(x0: f32, y0: f32, x1: f32, y1: f32) -> Self {
        Self { shape: Shape::Rect([x0, y0, x1, y1]), feather: 0.0, invert: false }
    }

    /// A brush stroke through `points`.
    pub fn stroke(points: Vec<[f32; 2]>, radius: f32, hardness: f32) -> Self {
        let shape = Shape::Stroke(Stroke { points, radius, hardness });
        Self { shape, feather: 0.0, invert: false }
    }

    /// The union of `parts` (largest weight wins).
    pub fn union(parts: Vec<Mask>) -> Self {
        Self { shape: Shape::Union(parts), feather: 0.0, invert: false }
    }

    /// The same mask with its edge feathered by `feather` (fraction of the image width).
    pub fn feathered(mut self, feather: f32) -> Self {
        self.feather = feather;
        self
    }

    /// The same mask, inverted.
    pub fn inverted(mut self) -> Self {
        self.invert = !self.invert;
        self
    }

    /// Checks every coordinate and parameter, naming the offending value.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.feather.is_finite() && self.feather >= 0.0,
            "mask feather must be a number >= 0, got {}",
            self.feather
        );
        match &self.shape {
            Shape::Rect([x0, y0, x1, y1]) => {
                for (name, v) in [("x0", x0), ("y0", y0), ("x1", x1), ("y1", y1)] {
                    ensure!(
                        (0.0..=1.0).contains(v),
                        "rect {name} = {v} is outside [0, 1] (coordinates are fractions of the image)"
                    );
                }
                ensure!(x0 < x1, "rect x0 = {x0} must be less than x1 = {x1}");
                ensure!(y0 < y1, "rect y0 = {y0} must be less than y1 = {y1}");
            }
            Shape::Stroke(s) => {
                ensure!(!s.points.is_empty(), "stroke needs at least one point");
                for (i, [x, y]) in s.points.iter().enumerate() {
                    ensure!(
                        (0.0..=1.0).contains(x) && (0.0..=1.0).contains(y),
                        "stroke point {i} [{x}, {y}] is outside [0, 1] (coordinates are fractions of the image)"
                    );
                }
                ensure!(
                    s.radius.is_finite() && s.radius > 0.0,
                    "stroke radius must be > 0 (a fraction of the image width), got {}",
                    s.radius
                );
                ensure!(
                    (0.0..=1.0).contains(&s.hardness),
                    "stroke hardness must be in [0, 1], got {}",
                    s.hardness
                );
            }
            Shape::All => {}
            Shape::Union(parts) => {
                ensure!(!parts.is_empty(), "union needs at least one mask");
                for (i, part) in parts.iter().enumerate() {
                    part.validate().map_err(|e| anyhow::anyhow!("union part {i}: {e:#}"))?;
                }
            }
        }
        Ok(())
    }

    /// One weight in `[0, 1]` per token of a `height x width` grid, row-major.
    pub fn rasterise(&self, height: usize, width: usize) -> Result<Vec<f32>> {
        self.validate()?;
        Ok(self.raster(height, width))
    }

    fn raster(&self, height: usize, width: usize) -> Vec<f32> {
        let mut weights = match &self.shape {
            Shape::All => vec![1.0; height * width],
            Shape::Rect([x0, y0, x1, y1]) => sample(height, width, |x, y| {
                let inside = (*x0..=*x1).contains(&x) && (*y0..=*y1).contains(&y);
                if inside { 1.0 } else { 0.0 }
            }),
            Shape::Stroke(stroke) => {
                let aspect = height as f32 / width.max(1) as f32;
                sample(height, width, |x, y| stroke.weight_at(x, y, aspect))
            }
            Shape::Union(parts) => {
                let mut acc = vec![0.0f32; height * width];
                for part in parts {
                    for (a, w) in acc.iter_mut().zip(part.raster(height, width)) {
                        *a = a.max(w);
                    }
                }
                acc
            }
        };
        if self.feather > 0.0 {
            let sigma_tokens = self.feather as f64 * width as f64;
            let kernel = Kernel::gaussian(sigma_tokens, height.max(width));
            weights = blur(&weights, height, width, 1, &kernel);
        }
        if self.invert {
            weights.iter_mut().for_each(|w| *w = 1.0 - *w);
        }
        // Rounding in the blur must never push a weight past the ends.
        weights.iter_mut().for_each(|w| *w = w.clamp(0.0, 1.0));
        weights
    }
}

/// Evaluates `f(x, y)` at every token centre, in fractions of the image.
fn sample(height: usize, width: usize, f: impl Fn(f32, f32) -> f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(height * width);
    for ty in 0..height {
        let y = (ty as f32 + 0.5) / height as f32;
        for tx in 0..width {
            out.push(f((tx as f32 + 0.5) / width as f32, y));
        }
    }
    out
}

impl Stroke {
    /// The brush weight at `(x, y)`; `aspect` = image height / width turns y fractions into
    /// width units so the brush is round on the image.
    fn weight_at(&self, x: f32, y: f32, aspect: f32) -> f32 {
        let p = (x, y * aspect);
        let pt = |[px, py]: [f32; 2]| (px, py * aspect);
        let mut d = dist_point(p, pt(self.points[0]));
        for seg in self.points.windows(2) {
            d = d.min(dist_segment(p, pt(seg[0]), pt(seg[1])));
        }
        let r = self.radius;
        let inner = self.hardness * r;
        if d >= r {
            0.0
        } else if d <= inner {
            1.0
        } else {
            let t = (d - inner) / (r - inner);
            1.0 - t * t * (3.0 - 2.0 * t)
        }
    }
}

fn dist_point((x, y): (f32, f32), (px, py): (f32, f32)) -> f32 {
    ((x - px) * (x - px) + (y - py) * (y - py)).sqrt()
}

fn dist_segment(p: (f32, f32), a: (f32, f32), b: (f32, f32)) -> f32 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    if len2 == 0.0 {
        return dist_point(p, a);
    }
    let t = (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0);
    dist_point(p, (a.0 + t * dx, a.1 + t * dy))
}

/// The JSON form: exactly one shape key, plus the optional modifiers. Parsing through it lets
/// us reject unknown keys and several shapes in one object with a clear message.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MaskWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rect: Option<[f32; 4]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stroke: Option<Stroke>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    all: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    union: Option<Vec<Mask>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    feather: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    invert: Option<bool>,
}

impl TryFrom<MaskWire> for Mask {
    type Error = String;

    fn try_from(w: MaskWire) -> std::result::Result<Self, String> {
        let build = || -> Result<Mask> {
            let given = [w.rect.is_some(), w.stroke.is_some(), w.all.is_some(), w.union.is_some()]
                .iter()
                .filter(|&&b| b)
                .count();
            if given != 1 {
                bail!(
                    "a mask needs exactly one of `rect`, `stroke`, `all`, `union`, found {given}"
                );
            }
            let shape = if let Some(r) = w.rect {
                Shape::Rect(r)
            } else if let Some(s) = w.stroke {
                Shape::Stroke(s)
            } else if let Some(all) = w.all {
                ensure!(
                    all,
                    "`all` must be true (for an empty mask use {{\"all\": true, \"invert\": true}})"
                );
                Shape::All
            } else {
                Shape::Union(w.union.unwrap_or_default())
            };
            let mask = Mask {
                shape,
                feather: w.feather.unwrap_or(0.0),
                invert: w.invert.unwrap_or(false),
            };
            mask.validate()?;
            Ok(mask)
        };
        build().map_err(|e| format!("{e:#}"))
    }
}

impl From<Mask> for MaskWire {
    fn from(m: Mask) -> Self {
        let mut w = MaskWire {
            rect: None,
            stroke: None,
            all: None,
            union: None,
            feather: (m.feather != 0.0).then_some(m.feather),
            invert: m.invert.then_some(true),
        };
        match m.shape {
            Shape::Rect(r) => w.rect = Some(r),
            Shape::Stroke(s) => w.stroke = Some(s),
            Shape::All => w.all = Some(true),
            Shape::Union(parts) => w.union = Some(parts),
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Mask> {
        Ok(serde_json::from_str(json)?)
    }

    fn err(json: &str) -> String {
        format!("{:#}", parse(json).expect_err(json))
    }

    #[test]
    fn rect_selects_tokens_whose_centre_is_inside() {
        let m = Mask::rect(0.0, 0.0, 0.5, 0.25).rasterise(4, 4).unwrap();
        #[rustfmt::skip]
        let expected = vec![
            1.0, 1.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0,
        ];
        assert_eq!(m, expected);
    }

    #[test]
    fn all_and_invert() {
        assert_eq!(Mask::all().rasterise(3, 2).unwrap(), vec![1.0; 6]);
        assert_eq!(Mask::all().inverted().rasterise(3, 2).unwrap(), vec![0.0; 6]);
        let inv = Mask::rect(0.0, 0.0, 0.5, 1.0).inverted().rasterise(1, 4).unwrap();
        assert_eq!(inv, vec![0.0, 0.0, 1.0, 1.0]);
    }

    #[test]
    fn union_takes_the_largest_weight() {
        let m = Mask::union(vec![Mask::rect(0.0, 0.0, 0.25, 1.0), Mask::rect(0.75, 0.0, 1.0, 1.0)]);
        assert_eq!(m.rasterise(1, 4).unwrap(), vec![1.0, 0.0, 0.0, 1.0]);
    }

    #[test]
    fn hard_stroke_is_a_capsule() {
        // Horizontal line through the middle row of an 8x8 grid, radius one token.
        let m = Mask::stroke(vec![[0.25, 0.5625], [0.75, 0.5625]], 0.125, 1.0);
        let w = m.rasterise(8, 8).unwrap();
        for ty in 0..8 {
            for tx in 0..8 {
                let v = w[ty * 8 + tx];
                let near_row = (3..=5).contains(&ty);
                let in_span = (1..=6).contains(&tx);
                if !near_row || !in_span {
                    assert_eq!(v, 0.0, "token ({ty}, {tx})");
                }
                assert!(v == 0.0 || v == 1.0, "hard stroke gave {v}");
            }
        }
        assert_eq!(w[4 * 8 + 4], 1.0);
        assert_eq!(w[4 * 8 + 2], 1.0);
    }

    #[test]
    fn soft_stroke_falls_off_from_the_spine() {
        let m = Mask::stroke(vec![[0.5, 0.5]], 0.4, 0.0);
        let w = m.rasterise(1, 9).unwrap();
        // Centre token is on the dab (distance 0): full weight; weights fall off monotonically.
        assert_eq!(w[4], 1.0);
        assert!(w[4] > w[5] && w[5] > w[6] && w[6] > w[7]);
        assert!(w[5] < 1.0 && w[7] > 0.0);
        assert_eq!(w[0], 0.0);
        assert!((w[5] - w[3]).abs() < 1e-5, "symmetric about the dab");
    }

    #[test]
    fn feather_softens_the_edge_but_stays_in_range() {
        let hard = Mask::rect(0.0, 0.0, 0.5, 1.0).rasterise(1, 16).unwrap();
        let soft = Mask::rect(0.0, 0.0, 0.5, 1.0).feathered(0.05).rasterise(1, 16).unwrap();
        assert!(soft.iter().all(|w| (0.0..=1.0).contains(w)));
        // The border token inside loses weight, the one outside gains some.
        assert!(soft[7] < 1.0 && soft[7] > 0.5);
        assert!(soft[8] > 0.0 && soft[8] < 0.5);
        // Far from the edge nothing changes: full weight at the image border, zero far outside.
        assert_eq!(soft[0], 1.0);
        assert_eq!(soft[15], 0.0);
        assert_ne!(hard, soft);
    }

    #[test]
    fn json_forms_round_trip() {
        for json in [
            r#"{"rect":[0.1,0.2,0.6,0.9]}"#,
            r#"{"stroke":{"points":[[0.2,0.5],[0.8,0.5]],"radius":0.05,"hardness":0.5}}"#,
            r#"{"all":true}"#,
            r#"{"union":[{"rect":[0.0,0.0,0.5,0.5]},{"all":true,"invert":true}],"feather":0.05}"#,
            r#"{"rect":[0.25,0.25,0.75,0.75],"feather":0.1,"invert":true}"#,
        ] {
            let mask = parse(json).unwrap();
            assert_eq!(serde_json::to_string(&mask).unwrap(), json);
        }
    }

    #[test]
    fn stroke_hardness_defaults_to_hard() {
        let m = parse(r#"{"stroke":{"points":[[0.5,0.5]],"radius":0.1}}"#).unwrap();
        assert_eq!(m, Mask::stroke(vec![[0.5, 0.5]], 0.1, 1.0));
    }

    #[test]
    fn invalid_masks_are_rejected_with_a_reason() {
        assert!(err(r#"{"rect":[0.1,0.2,1.5,0.9]}"#).contains("x1 = 1.5 is outside [0, 1]"));
        assert!(err(r#"{"rect":[0.6,0.2,0.5,0.9]}"#).contains("x0 = 0.6 must be less than x1"));
        assert!(err(r#"{"rect":[0.1,0.9,0.5,0.2]}"#).contains("y0 = 0.9 must be less than y1"));
        assert!(err(r#"{"rect":[0.1,0.2,0.5]}"#).contains("invalid length 3"));
        assert!(
            err(r#"{"stroke":{"points":[[0.5,0.5]],"radius":0}}"#).contains("radius must be > 0")
        );
        assert!(
            err(r#"{"stroke":{"points":[[0.5,0.5]],"radius":0.1,"hardness":2}}"#)
                .contains("hardness must be in [0, 1]")
        );
        assert!(err(r#"{"stroke":{"points":[[0.5,-0.1]],"radius":0.1}}"#).contains("point 0"));
        assert!(err(r#"{"stroke":{"points":[],"radius":0.1}}"#).contains("at least one point"));
        assert!(err(r#"{"all":true,"feather":-1}"#).contains("feather"));
        assert!(err(r#"{"all":false}"#).contains("`all` must be true"));
        assert!(err(r#"{"union":[]}"#).contains("at least one mask"));
        assert!(err(r#"{"union":[{"rect":[0,0,2,1]}]}"#).contains("x1 = 2 is outside"));
        assert!(err(r#"{"rect":[0,0,1,1],"all":true}"#).contains("exactly one of"));
        assert!(err(r#"{"feather":0.1}"#).contains("exactly one of"));
        assert!(err(r#"{"circle":[0.5,0.5,0.1]}"#).contains("unknown field `circle`"));
    }

    #[test]
    fn rasterise_validates_masks_built_in_code() {
        let e = Mask::rect(0.0, 0.0, 1.2, 1.0).rasterise(4, 4).unwrap_err();
        assert!(format!("{e:#}").contains("x1 = 1.2"));
        assert!(Mask::stroke(vec![[0.5, 0.5]], f32::NAN, 1.0).rasterise(4, 4).is_err());
    }
}
