//! Edits on latent grids: each one a pure function of the latent it is given and of the latents
//! of other images, which the caller supplies through [`LatentSource`] (the ops do no I/O).
//!
//! Shared rules:
//! - A masked edit computes the edited token, then mixes it with the original by the mask's
//!   weight: `out = orig + (edited - orig) * w`. A token whose weight is exactly 0 is never
//!   recomputed: it is copied, so it stays bit-identical. So is every value the edit leaves
//!   unchanged (e.g. channels a channel edit does not list).
//! - Latents from sources must have the edited latent's shape; otherwise the error names the
//!   source and both shapes.
//! - Everything is deterministic, across runs and platforms: noise comes from ChaCha8 and the
//!   transcendental functions from `libm`.

mod checks;
#[cfg(test)]
pub(crate) mod fixtures;
mod interpolate;
mod latent_source;
mod noise;
mod token_mix;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use checks::{check_channels, check_grid, same_shape};
pub use interpolate::{InterpMode, lerp, slerp};
pub use latent_source::{Harmonise, LatentSource};
use latent_source::{load, mean_of};
pub use noise::gaussian_noise;
use token_mix::{add_delta, mix_tokens, token, weights};

use crate::edit::filter::{Kernel, blur};
use crate::edit::mask::Mask;
use crate::grid::Grid;

/// One step of a recipe. JSON: an object whose `op` names the variant in snake_case, e.g.
/// `{"op": "scale_channels", "channels": [3, 7], "factor": 1.5}`.
///
/// `mask` is optional wherever it appears as `Option<Mask>` and then defaults to every token.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Edit {
    /// `lerp(latent, source, mask * strength)` per token: paste a region of another image.
    Transplant {
        source: String,
        mask: Mask,
        #[serde(default = "one")]
        strength: f32,
    },
    /// `lerp(latent, source, strength)` per token, optionally masked.
    Blend {
        source: String,
        strength: f32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mask: Option<Mask>,
    },
    /// Multiplies the listed channels by `factor`.
    ScaleChannels {
        channels: Vec<usize>,
        factor: f32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mask: Option<Mask>,
    },
    /// Adds `offset` to the listed channels.
    OffsetChannels {
        channels: Vec<usize>,
        offset: f32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mask: Option<Mask>,
    },
    /// Sets the listed channels to 0.
    ZeroChannels {
        channels: Vec<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mask: Option<Mask>,
    },
    /// Adds `sigma * N(0, 1)` noise drawn from `seed` (the same seed gives the same noise).
    Noise {
        seed: u64,
        sigma: f32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mask: Option<Mask>,
    },
    /// Blurs each channel over the token grid: a box of `2 * radius + 1` tokens, or a Gaussian
    /// of standard deviation `sigma` tokens. Give exactly one of the two.
    Smooth {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        radius: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sigma: Option<f32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mask: Option<Mask>,
    },
    /// Moves towards the source's latent: `t = 0` is the input, `t = 1` the source, exactly.
    Interpolate {
        source: String,
        t: f32,
        #[serde(default)]
        mode: InterpMode,
    },
    /// `latent + strength * (sum(add) - sum(subtract))`: "A - B + C" on current A is
    /// `subtract: [B], add: [C]`.
    Arithmetic {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        add: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        subtract: Vec<String>,
        #[serde(default = "one")]
        strength: f32,
    },
    /// Adds `strength * (mean(latents in positive) - mean(latents in negative))`.
    Direction {
        positive: String,
        negative: String,
        strength: f32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mask: Option<Mask>,
    },
    /// Re-noises the latent to time `strength` (0 = unchanged, 1 = pure noise) and lets the
    /// generator integrate it back (SDEdit), so pasted or painted regions blend in; masked, only
    /// the masked tokens take the result.
    Harmonise {
        strength: f32,
        #[serde(default = "harmonise_steps")]
        steps: usize,
        #[serde(default)]
        seed: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        class: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mask: Option<Mask>,
    },
}

fn one() -> f32 {
    1.0
}

fn harmonise_steps() -> usize {
    25
}

impl Edit {
    /// Every op name, as written in `"op"`.
    pub const OPS: [&'static str; 11] = [
        "transplant",
        "blend",
        "scale_channels",
        "offset_channels",
        "zero_channels",
        "noise",
        "smooth",
        "interpolate",
        "arithmetic",
        "direction",
        "harmonise",
    ];

    /// The op name, as written in `"op"`.
    pub fn name(&self) -> &'static str {
        match self {
            Edit::Transplant { .. } => "transplant",
            Edit::Blend { .. } => "blend",
            Edit::ScaleChannels { .. } => "scale_channels",
            Edit::OffsetChannels { .. } => "offset_channels",
            Edit::ZeroChannels { .. } => "zero_channels",
            Edit::Noise { .. } => "noise",
            Edit::Smooth { .. } => "smooth",
            Edit::Interpolate { .. } => "interpolate",
            Edit::Arithmetic { .. } => "arithmetic",
            Edit::Direction { .. } => "direction",
            Edit::Harmonise { .. } => "harmonise",
        }
    }

    /// The edit's mask, if it has one (`None` for unmasked ops and for an omitted mask).
    pub fn mask(&self) -> Option<&Mask> {
        match self {
            Edit::Transplant { mask, .. } => Some(mask),
            Edit::Blend { mask, .. }
            | Edit::ScaleChannels { mask, .. }
            | Edit::OffsetChannels { mask, .. }
            | Edit::ZeroChannels { mask, .. }
            | Edit::Noise { mask, .. }
            | Edit::Smooth { mask, .. }
            | Edit::Direction { mask, .. }
            | Edit::Harmonise { mask, .. } => mask.as_ref(),
            Edit::Interpolate { .. } | Edit::Arithmetic { .. } => None,
        }
    }

    /// Applies the edit to `latent` and returns the result; `latent` is not modified.
    pub fn apply(&self, latent: &Grid, ctx: &dyn LatentSource) -> Result<Grid> {
        check_grid(latent).context("the edited latent")?;
        self.validate()?;
        let c = latent.channels;
        match self {
            Edit::Transplant { source, mask, strength } => {
                let src = load(ctx, source, latent)?;
                let mut w = mask.rasterise(latent.height, latent.width)?;
                w.iter_mut().for_each(|w| *w *= strength);
                Ok(mix_tokens(latent, &w, |i, tok| tok.copy_from_slice(token(&src, i))))
            }
            Edit::Blend { source, strength, mask } => {
                let src = load(ctx, source, latent)?;
                let mut w = weights(mask, latent)?;
                w.iter_mut().for_each(|w| *w *= strength);
                Ok(mix_tokens(latent, &w, |i, tok| tok.copy_from_slice(token(&src, i))))
            }
            Edit::ScaleChannels { channels, factor, mask } => {
                check_channels(channels, c)?;
                let w = weights(mask, latent)?;
                Ok(mix_tokens(latent, &w, |_, tok| channels.iter().for_each(|&k| tok[k] *= factor)))
            }
            Edit::OffsetChannels { channels, offset, mask } => {
                check_channels(channels, c)?;
                let w = weights(mask, latent)?;
                Ok(mix_tokens(latent, &w, |_, tok| channels.iter().for_each(|&k| tok[k] += offset)))
            }
            Edit::ZeroChannels { channels, mask } => {
                check_channels(channels, c)?;
                let w = weights(mask, latent)?;
                Ok(mix_tokens(latent, &w, |_, tok| channels.iter().for_each(|&k| tok[k] = 0.0)))
            }
            Edit::Noise { seed, sigma, mask } => {
                // Drawn for the whole grid, so a token's noise does not depend on the mask.
                let noise = gaussian_noise(*seed, latent.data.len());
                let w = weights(mask, latent)?;
                Ok(mix_tokens(latent, &w, |i, tok| {
                    for (t, n) in tok.iter_mut().zip(&noise[i * c..(i + 1) * c]) {
                        *t += sigma * n;
                    }
                }))
            }
            Edit::Smooth { radius, sigma, mask } => {
                let extent = latent.height.max(latent.width);
                let kernel = match (radius, sigma) {
                    (Some(r), _) => Kernel::boxed(*r, extent),
                    (_, Some(s)) => Kernel::gaussian(*s as f64, extent),
                    (None, None) => unreachable!("checked by validate"),
                };
                let blurred = blur(&latent.data, latent.height, latent.width, c, &kernel);
                let w = weights(mask, latent)?;
                Ok(mix_tokens(latent, &w, |i, tok| {
                    tok.copy_from_slice(&blurred[i * c..(i + 1) * c])
                }))
            }
            Edit::Interpolate { source, t, mode } => {
                let src = load(ctx, source, latent)?;
                match mode {
                    InterpMode::Lerp => lerp(latent, &src, *t),
                    InterpMode::Slerp => slerp(latent, &src, *t),
                }
            }
            Edit::Arithmetic { add, subtract, strength } => {
                // Summed in f64 so that adding and subtracting the same image cancels exactly.
                let mut delta = vec![0.0f64; latent.data.len()];
                for (paths, sign) in [(add, 1.0), (subtract, -1.0)] {
                    for path in paths {
                        let g = load(ctx, path, latent)?;
                        delta.iter_mut().zip(&g.data).for_each(|(d, &v)| *d += sign * v as f64);
                    }
                }
                let w = vec![1.0; latent.tokens()];
                Ok(mix_tokens(latent, &w, |i, tok| {
                    add_delta(tok, &delta[i * c..(i + 1) * c], *strength)
                }))
            }
            Edit::Harmonise { strength, steps, seed, class, mask } => {
                let settings = Harmonise {
                    strength: *strength,
                    steps: *steps,
                    seed: *seed,
                    class: class.clone(),
                };
                let varied = ctx.harmonise(latent, &settings)?;
                same_shape(latent, &varied).context("the generator's result")?;
                let w = weights(mask, latent)?;
                Ok(mix_tokens(latent, &w, |i, tok| tok.copy_from_slice(token(&varied, i))))
            }
            Edit::Direction { positive, negative, strength, mask } => {
                let pos = mean_of(ctx, positive, latent)?;
                let neg = mean_of(ctx, negative, latent)?;
                let delta: Vec<f64> = pos.iter().zip(&neg).map(|(p, n)| p - n).collect();
                let w = weights(mask, latent)?;
                Ok(mix_tokens(latent, &w, |i, tok| {
                    add_delta(tok, &delta[i * c..(i + 1) * c], *strength)
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{bits, grid, source};
    use super::*;

    /// Top-left quarter of a 6x8 grid: rows 0..3, columns 0..4.
    fn quarter() -> Mask {
        Mask::rect(0.0, 0.0, 0.5, 0.5)
    }

    /// One edit of every op that takes a mask, each with `mask`.
    fn masked_edits(mask: Mask) -> Vec<Edit> {
        vec![
            Edit::Transplant { source: "B.png".into(), mask: mask.clone(), strength: 1.0 },
            Edit::Blend { source: "B.png".into(), strength: 0.7, mask: Some(mask.clone()) },
            Edit::ScaleChannels { channels: vec![0, 2], factor: 3.0, mask: Some(mask.clone()) },
            Edit::OffsetChannels { channels: vec![1], offset: 0.5, mask: Some(mask.clone()) },
            Edit::ZeroChannels { channels: vec![0, 1, 2, 3], mask: Some(mask.clone()) },
            Edit::Noise { seed: 9, sigma: 0.5, mask: Some(mask.clone()) },
            Edit::Smooth { radius: Some(2), sigma: None, mask: Some(mask.clone()) },
            Edit::Smooth { radius: None, sigma: Some(1.5), mask: Some(mask.clone()) },
            Edit::Direction {
                positive: "smiling".into(),
                negative: "neutral".into(),
                strength: 2.0,
                mask: Some(mask.clone()),
            },
            Edit::Harmonise { strength: 0.5, steps: 10, seed: 3, class: None, mask: Some(mask) },
        ]
    }

    #[test]
    fn masked_ops_leave_tokens_outside_the_mask_bit_identical() {
        let ctx = source();
        let a = grid(6, 8, 4, 1);
        for mask in
            [quarter(), Mask::stroke(vec![[0.2, 0.2], [0.4, 0.3]], 0.1, 0.3).feathered(0.05)]
        {
            let w = mask.rasterise(6, 8).unwrap();
            assert!(w.contains(&0.0) && w.iter().any(|&v| v > 0.0));
            for edit in masked_edits(mask.clone()) {
                let out = edit.apply(&a, &ctx).unwrap();
                let mut changed_inside = false;
                for (i, &wi) in w.iter().enumerate() {
                    let (o, e) = (token(&a, i), token(&out, i));
                    if wi == 0.0 {
                        assert_eq!(bits(o), bits(e), "{}: token {i} outside the mask", edit.name());
                    } else if bits(o) != bits(e) {
                        changed_inside = true;
                    }
                }
                assert!(changed_inside, "{} changed nothing inside the mask", edit.name());
            }
        }
    }

    #[test]
    fn transplant_copies_the_source_inside_a_hard_mask() {
        let ctx = source();
        let a = grid(6, 8, 4, 1);
        let b = ctx.latent("B.png").unwrap();
        let out = masked_edits(quarter())[0].apply(&a, &ctx).unwrap();
        let w = quarter().rasterise(6, 8).unwrap();
        for (i, &wi) in w.iter().enumerate() {
            let expected = if wi == 1.0 { token(&b, i) } else { token(&a, i) };
            assert_eq!(bits(token(&out, i)), bits(expected));
        }
        // Half strength lands half-way.
        let half = Edit::Transplant { source: "B.png".into(), mask: quarter(), strength: 0.5 };
        let out = half.apply(&a, &ctx).unwrap();
        let (x, y, o) = (a.token(0, 0)[2], b.token(0, 0)[2], out.token(0, 0)[2]);
        assert!((o - (x + y) / 2.0).abs() < 1e-6);
    }

    #[test]
    fn channel_ops_touch_only_their_channels() {
        let ctx = source();
        let a = grid(6, 8, 4, 1);
        let scale = Edit::ScaleChannels { channels: vec![2], factor: 2.0, mask: None };
        let out = scale.apply(&a, &ctx).unwrap();
        for i in 0..a.tokens() {
            for k in 0..4 {
                let (x, y) = (token(&a, i)[k], token(&out, i)[k]);
                if k == 2 {
                    assert_eq!(y, x * 2.0);
                } else {
                    assert_eq!(x.to_bits(), y.to_bits());
                }
            }
        }
        let zero = Edit::ZeroChannels { channels: vec![3], mask: None };
        assert!(zero.apply(&a, &ctx).unwrap().channel(3).iter().all(|&v| v == 0.0));
        let off = Edit::OffsetChannels { channels: vec![0], offset: 1.0, mask: None };
        assert_eq!(off.apply(&a, &ctx).unwrap().token(2, 3)[0], a.token(2, 3)[0] + 1.0);
    }

    #[test]
    fn arithmetic_is_a_minus_b_plus_c() {
        let ctx = source();
        let a = ctx.latent("A.png").unwrap();
        let (b, c) = (ctx.latent("B.png").unwrap(), ctx.latent("C.png").unwrap());
        let e = Edit::Arithmetic {
            add: vec!["C.png".into()],
            subtract: vec!["B.png".into()],
            strength: 1.0,
        };
        let out = e.apply(&a, &ctx).unwrap();
        for i in 0..a.data.len() {
            let expected = a.data[i] as f64 - b.data[i] as f64 + c.data[i] as f64;
            assert!((out.data[i] as f64 - expected).abs() < 1e-6);
        }
        // Adding and subtracting the same image is exactly no change.
        let cancel = Edit::Arithmetic {
            add: vec!["B.png".into()],
            subtract: vec!["B.png".into()],
            strength: 3.0,
        };
        assert_eq!(bits(&cancel.apply(&a, &ctx).unwrap().data), bits(&a.data));
    }

    #[test]
    fn direction_from_identical_sets_changes_nothing() {
        let ctx = source();
        let a = grid(6, 8, 4, 1);
        let e = Edit::Direction {
            positive: "smiling".into(),
            negative: "same".into(),
            strength: 5.0,
            mask: None,
        };
        assert_eq!(bits(&e.apply(&a, &ctx).unwrap().data), bits(&a.data));
    }

    #[test]
    fn direction_adds_the_difference_of_means() {
        let ctx = source();
        let a = grid(6, 8, 4, 1);
        let e = Edit::Direction {
            positive: "smiling".into(),
            negative: "neutral".into(),
            strength: 0.5,
            mask: None,
        };
        let out = e.apply(&a, &ctx).unwrap();
        let l = |p: &str| ctx.latent(p).unwrap().data;
        let (pa, pb, na, nb) = (l("A.png"), l("B.png"), l("C.png"), l("D.png"));
        for i in [0, 17, a.data.len() - 1] {
            let d = (pa[i] + pb[i]) / 2.0 - (na[i] + nb[i]) / 2.0;
            assert!((out.data[i] - (a.data[i] + 0.5 * d)).abs() < 1e-5);
        }
        let empty = Edit::Direction {
            positive: "empty".into(),
            negative: "neutral".into(),
            strength: 1.0,
            mask: None,
        };
        let msg = format!("{:#}", empty.apply(&a, &ctx).unwrap_err());
        assert!(msg.contains("folder `empty`: it holds no images"), "{msg}");
    }

    #[test]
    fn noise_is_seeded() {
        let ctx = source();
        let a = grid(6, 8, 4, 1);
        let n = |seed| Edit::Noise { seed, sigma: 0.3, mask: None }.apply(&a, &ctx).unwrap();
        assert_eq!(bits(&n(42).data), bits(&n(42).data));
        assert_ne!(n(42), n(43));
        assert_ne!(n(42), a);
    }

    #[test]
    fn smooth_flattens_and_keeps_constants() {
        let ctx = source();
        let flat = Grid::new(4, 4, 2, vec![0.25; 32]).unwrap();
        let e = Edit::Smooth { radius: None, sigma: Some(1.0), mask: None };
        assert_eq!(e.apply(&flat, &ctx).unwrap(), flat);
        let a = grid(6, 8, 4, 1);
        let out =
            Edit::Smooth { radius: Some(1), sigma: None, mask: None }.apply(&a, &ctx).unwrap();
        let var = |g: &Grid| g.data.iter().map(|v| v * v).sum::<f32>();
        assert!(var(&out) < var(&a) * 0.5);
        // A radius past the grid averages everything, without allocating a giant kernel.
        let huge = Edit::Smooth { radius: Some(usize::MAX), sigma: None, mask: None };
        let mean = huge.apply(&a, &ctx).unwrap();
        assert!(mean.data.chunks_exact(4).all(|t| t == mean.token(0, 0)));
        let bad = Edit::Smooth { radius: Some(1), sigma: Some(1.0), mask: None };
        assert!(format!("{:#}", bad.validate().unwrap_err()).contains("exactly one of"));
    }

    #[test]
    fn every_op_is_listed_and_named() {
        let all: Vec<Edit> = masked_edits(Mask::all())
            .into_iter()
            .chain([
                Edit::Interpolate { source: "B.png".into(), t: 0.5, mode: InterpMode::Slerp },
                Edit::Arithmetic { add: vec!["B.png".into()], subtract: vec![], strength: 1.0 },
            ])
            .collect();
        for e in &all {
            assert!(Edit::OPS.contains(&e.name()));
            let json = serde_json::to_value(e).unwrap();
            assert_eq!(json["op"], e.name());
            assert_eq!(&serde_json::from_value::<Edit>(json).unwrap(), e);
        }
        let mut names: Vec<_> = all.iter().map(Edit::name).collect();
        names.dedup();
        assert_eq!(names.len(), Edit::OPS.len());
    }

    #[test]
    fn json_defaults_and_unknown_fields() {
        let e: Edit =
            serde_json::from_str(r#"{"op":"transplant","source":"B.png","mask":{"all":true}}"#)
                .unwrap();
        assert_eq!(
            e,
            Edit::Transplant { source: "B.png".into(), mask: Mask::all(), strength: 1.0 }
        );
        let e: Edit =
            serde_json::from_str(r#"{"op":"interpolate","source":"B.png","t":0.3}"#).unwrap();
        assert_eq!(e, Edit::Interpolate { source: "B.png".into(), t: 0.3, mode: InterpMode::Lerp });
        let bad = serde_json::from_str::<Edit>(
            r#"{"op":"blend","source":"B.png","strength":1,"strenght":2}"#,
        );
        assert!(bad.unwrap_err().to_string().contains("unknown field `strenght`"));
    }
}
