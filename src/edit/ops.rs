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

use anyhow::{Context, Result, bail, ensure};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::edit::filter::{Kernel, blur};
use crate::edit::mask::Mask;
use crate::grid::Grid;

/// Resolves the images and folders that edits refer to into latents; implemented by the caller
/// (encode on demand, read a cache, or a map in tests).
pub trait LatentSource {
    /// The latent of the image at `path`.
    fn latent(&self, path: &str) -> Result<Grid>;
    /// The latents of every image in `folder`, in a stable order.
    fn latents_in(&self, folder: &str) -> Result<Vec<Grid>>;
    /// SDEdit through a generator: noise `latent` to time `strength` and integrate back in
    /// `steps` steps, with noise from `seed`, optionally towards `class`.
    fn harmonise(&self, _latent: &Grid, _h: &Harmonise) -> Result<Grid> {
        bail!("harmonise needs a generator (pass --generator, or load one in the app)")
    }
}

/// The settings of a [`Edit::Harmonise`], handed to [`LatentSource::harmonise`].
#[derive(Clone, Debug, PartialEq)]
pub struct Harmonise {
    pub strength: f32,
    pub steps: usize,
    pub seed: u64,
    pub class: Option<String>,
}

/// How `interpolate` moves between two latents.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InterpMode {
    /// Straight line: `a + (b - a) * t`.
    #[default]
    Lerp,
    /// Great-circle arc over the whole flattened latent (see [`slerp`]).
    Slerp,
}

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

    /// Checks the parameters that do not depend on the latent (channel ranges are checked by
    /// [`Edit::apply`], which knows the channel count).
    pub fn validate(&self) -> Result<()> {
        if let Some(mask) = self.mask() {
            mask.validate()?;
        }
        match self {
            Edit::Transplant { source, strength, .. } | Edit::Blend { source, strength, .. } => {
                nonempty("source", source)?;
                finite("strength", *strength)?;
            }
            Edit::ScaleChannels { channels, factor, .. } => {
                channel_list(channels)?;
                finite("factor", *factor)?;
            }
            Edit::OffsetChannels { channels, offset, .. } => {
                channel_list(channels)?;
                finite("offset", *offset)?;
            }
            Edit::ZeroChannels { channels, .. } => channel_list(channels)?,
            Edit::Noise { sigma, .. } => {
                ensure!(sigma.is_finite() && *sigma >= 0.0, "sigma must be >= 0, got {sigma}");
            }
            Edit::Smooth { radius, sigma, .. } => match (radius, sigma) {
                (Some(r), None) => ensure!(*r >= 1, "radius must be at least 1 token"),
                (None, Some(s)) => {
                    ensure!(s.is_finite() && *s > 0.0, "sigma must be > 0 tokens, got {s}")
                }
                _ => bail!("give exactly one of `radius` (box blur) and `sigma` (Gaussian)"),
            },
            Edit::Interpolate { source, t, .. } => {
                nonempty("source", source)?;
                finite("t", *t)?;
            }
            Edit::Arithmetic { add, subtract, strength } => {
                ensure!(
                    !(add.is_empty() && subtract.is_empty()),
                    "give at least one image in `add` or `subtract`"
                );
                for p in add.iter().chain(subtract) {
                    nonempty("image path", p)?;
                }
                finite("strength", *strength)?;
            }
            Edit::Harmonise { strength, steps, class, .. } => {
                ensure!(
                    strength.is_finite() && *strength > 0.0 && *strength <= 1.0,
                    "strength must be in (0, 1], got {strength}"
                );
                ensure!((1..=1000).contains(steps), "steps must be 1 to 1000, got {steps}");
                if let Some(class) = class {
                    nonempty("class", class)?;
                }
            }
            Edit::Direction { positive, negative, strength, .. } => {
                nonempty("positive", positive)?;
                nonempty("negative", negative)?;
                finite("strength", *strength)?;
            }
        }
        Ok(())
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

/// Linear interpolation of two latents of equal shape; `t = 0` returns `a` and `t = 1` returns
/// `b`, bit for bit. Other `t` (including outside `[0, 1]`) give `a + (b - a) * t`.
pub fn lerp(a: &Grid, b: &Grid, t: f32) -> Result<Grid> {
    same_shape(a, b)?;
    ensure!(t.is_finite(), "t must be a finite number, got {t}");
    let mut out = a.clone();
    out.data.iter_mut().zip(&b.data).for_each(|(o, &v)| *o = mix(*o, v, t));
    Ok(out)
}

/// Spherical interpolation over the whole flattened latent (Shoemake's formula, unnormalised
/// vectors): `sin((1 - t) w) / sin w * a + sin(t w) / sin w * b` with `w` the angle between
/// them. With `|a| = |b|` the norm is kept along the arc. Falls back to [`lerp`] when either
/// vector is zero or they are nearly parallel (or opposite), where the arc is ill-defined.
/// `t = 0` returns `a` and `t = 1` returns `b`, bit for bit.
pub fn slerp(a: &Grid, b: &Grid, t: f32) -> Result<Grid> {
    same_shape(a, b)?;
    ensure!(t.is_finite(), "t must be a finite number, got {t}");
    if t == 0.0 {
        return Ok(a.clone());
    }
    if t == 1.0 {
        return Ok(b.clone());
    }
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.data.iter().zip(&b.data) {
        let (x, y) = (x as f64, y as f64);
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    let (na, nb) = (na.sqrt(), nb.sqrt());
    if na == 0.0 || nb == 0.0 {
        return lerp(a, b, t);
    }
    let omega = libm::acos((dot / (na * nb)).clamp(-1.0, 1.0));
    let so = libm::sin(omega);
    if so < 1e-6 {
        return lerp(a, b, t);
    }
    let t = t as f64;
    let wa = libm::sin((1.0 - t) * omega) / so;
    let wb = libm::sin(t * omega) / so;
    let mut out = a.clone();
    out.data
        .iter_mut()
        .zip(&b.data)
        .for_each(|(o, &y)| *o = (wa * *o as f64 + wb * y as f64) as f32);
    Ok(out)
}

/// `len` samples of N(0, 1) from `seed`: ChaCha8 (seeded through `seed_from_u64`) feeding the
/// Box-Muller transform, with `libm` for the logarithm and trigonometry so the values are the
/// same, bit for bit, on every platform.
pub fn gaussian_noise(seed: u64, len: usize) -> Vec<f32> {
    const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(len + 1);
    while out.len() < len {
        let u1 = ((rng.next_u64() >> 11) + 1) as f64 * SCALE; // (0, 1]: keeps ln finite
        let u2 = (rng.next_u64() >> 11) as f64 * SCALE; // [0, 1)
        let r = (-2.0 * libm::log(u1)).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u2;
        out.push((r * libm::cos(theta)) as f32);
        out.push((r * libm::sin(theta)) as f32);
    }
    out.truncate(len);
    out
}

/// `a + (b - a) * w` with the ends exact: `w = 0` gives `a` and `w = 1` gives `b`.
fn mix(a: f32, b: f32, w: f32) -> f32 {
    if w == 0.0 {
        a
    } else if w == 1.0 {
        b
    } else {
        a + (b - a) * w
    }
}

/// Copies `latent`, then for each token with a non-zero weight lets `edit` change a scratch
/// copy of it and mixes the result in by the weight. Values `edit` leaves as they were (same
/// bits) are not touched, so tokens and channels outside the edit stay bit-identical.
fn mix_tokens(latent: &Grid, weights: &[f32], mut edit: impl FnMut(usize, &mut [f32])) -> Grid {
    let c = latent.channels;
    let mut out = latent.clone();
    let mut scratch = vec![0.0f32; c];
    for (i, &w) in weights.iter().enumerate() {
        if w == 0.0 {
            continue;
        }
        let tok = &mut out.data[i * c..(i + 1) * c];
        scratch.copy_from_slice(tok);
        edit(i, &mut scratch);
        for (o, &e) in tok.iter_mut().zip(&scratch) {
            if o.to_bits() != e.to_bits() {
                *o = mix(*o, e, w);
            }
        }
    }
    out
}

/// Adds `strength * delta` in f64; values whose step is exactly 0 are left as they are.
fn add_delta(tok: &mut [f32], delta: &[f64], strength: f32) {
    for (t, &d) in tok.iter_mut().zip(delta) {
        let step = strength as f64 * d;
        if step != 0.0 {
            *t = (*t as f64 + step) as f32;
        }
    }
}

fn token(g: &Grid, i: usize) -> &[f32] {
    &g.data[i * g.channels..(i + 1) * g.channels]
}

fn weights(mask: &Option<Mask>, latent: &Grid) -> Result<Vec<f32>> {
    match mask {
        Some(m) => m.rasterise(latent.height, latent.width),
        None => Ok(vec![1.0; latent.tokens()]),
    }
}

fn shape(g: &Grid) -> String {
    format!("{}x{}x{}", g.height, g.width, g.channels)
}

fn check_grid(g: &Grid) -> Result<()> {
    ensure!(
        g.data.len() == g.height * g.width * g.channels,
        "grid of {} holds {} values",
        shape(g),
        g.data.len()
    );
    Ok(())
}

fn same_shape(a: &Grid, b: &Grid) -> Result<()> {
    check_grid(a)?;
    check_grid(b)?;
    ensure!(a.same_shape(b), "latent shapes differ: {} and {}", shape(a), shape(b));
    Ok(())
}

/// The latent of `path`, checked against the edited latent's shape; errors start with
/// "source `path`".
fn load(ctx: &dyn LatentSource, path: &str, like: &Grid) -> Result<Grid> {
    let get = || -> Result<Grid> {
        let g = ctx.latent(path)?;
        check_grid(&g)?;
        ensure!(
            g.same_shape(like),
            "its latent is {} but the edited latent is {}",
            shape(&g),
            shape(like)
        );
        Ok(g)
    };
    get().with_context(|| format!("source `{path}`"))
}

/// The mean latent of `folder`, in f64; errors start with "folder `folder`".
fn mean_of(ctx: &dyn LatentSource, folder: &str, like: &Grid) -> Result<Vec<f64>> {
    let get = || -> Result<Vec<f64>> {
        let grids = ctx.latents_in(folder)?;
        ensure!(!grids.is_empty(), "it holds no images");
        let mut sum = vec![0.0f64; like.data.len()];
        for (j, g) in grids.iter().enumerate() {
            check_grid(g).with_context(|| format!("latent {j}"))?;
            ensure!(
                g.same_shape(like),
                "latent {j} is {} but the edited latent is {}",
                shape(g),
                shape(like)
            );
            sum.iter_mut().zip(&g.data).for_each(|(s, &v)| *s += v as f64);
        }
        let n = grids.len() as f64;
        Ok(sum.into_iter().map(|s| s / n).collect())
    };
    get().with_context(|| format!("folder `{folder}`"))
}

fn check_channels(channels: &[usize], count: usize) -> Result<()> {
    for &k in channels {
        ensure!(
            k < count,
            "channel {k} is out of range: the latent has {count} channels (0 to {})",
            count.saturating_sub(1)
        );
    }
    Ok(())
}

fn channel_list(channels: &[usize]) -> Result<()> {
    ensure!(!channels.is_empty(), "`channels` is empty: list at least one channel");
    for (i, k) in channels.iter().enumerate() {
        ensure!(!channels[..i].contains(k), "channel {k} is listed twice");
    }
    Ok(())
}

fn finite(name: &str, v: f32) -> Result<()> {
    ensure!(v.is_finite(), "{name} must be a finite number, got {v}");
    Ok(())
}

fn nonempty(name: &str, v: &str) -> Result<()> {
    ensure!(!v.is_empty(), "{name} must not be empty");
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Latents by path, and folders as lists of paths.
    #[derive(Default)]
    pub(crate) struct MapSource {
        pub images: HashMap<String, Grid>,
        pub folders: HashMap<String, Vec<String>>,
    }

    impl LatentSource for MapSource {
        fn latent(&self, path: &str) -> Result<Grid> {
            self.images.get(path).cloned().with_context(|| format!("no such image: {path}"))
        }
        fn latents_in(&self, folder: &str) -> Result<Vec<Grid>> {
            let paths =
                self.folders.get(folder).with_context(|| format!("no such folder: {folder}"))?;
            paths.iter().map(|p| self.latent(p)).collect()
        }
        /// Stands in for a generator (tested on its own): shifts every value by seeded noise.
        fn harmonise(&self, latent: &Grid, h: &Harmonise) -> Result<Grid> {
            let mut out = latent.clone();
            let noise = gaussian_noise(h.seed, out.data.len());
            out.data.iter_mut().zip(noise).for_each(|(v, n)| *v += h.strength * n);
            Ok(out)
        }
    }

    /// A grid with distinct, sign-varied values, including -0.0 in the first and last tokens
    /// (naive arithmetic such as `x + 0.0` turns it into +0.0, which a bit comparison catches).
    pub(crate) fn grid(h: usize, w: usize, c: usize, seed: u64) -> Grid {
        let mut data = gaussian_noise(seed, h * w * c);
        let n = data.len();
        data[1 % n] = -0.0;
        data[n - 1] = -0.0;
        Grid::new(h, w, c, data).unwrap()
    }

    pub(crate) fn source() -> MapSource {
        let mut s = MapSource::default();
        for (i, name) in ["A.png", "B.png", "C.png", "D.png"].iter().enumerate() {
            s.images.insert(name.to_string(), grid(6, 8, 4, 100 + i as u64));
        }
        s.images.insert("small.png".into(), grid(3, 4, 4, 7));
        s.folders.insert("smiling".into(), vec!["A.png".into(), "B.png".into()]);
        s.folders.insert("neutral".into(), vec!["C.png".into(), "D.png".into()]);
        s.folders.insert("same".into(), vec!["A.png".into(), "B.png".into()]);
        s.folders.insert("empty".into(), vec![]);
        s
    }

    fn bits(g: &[f32]) -> Vec<u32> {
        g.iter().map(|v| v.to_bits()).collect()
    }

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
    fn channel_out_of_range_names_the_channel() {
        let a = grid(6, 8, 4, 1);
        let e = Edit::ScaleChannels { channels: vec![1, 4], factor: 2.0, mask: None };
        let msg = format!("{:#}", e.apply(&a, &source()).unwrap_err());
        assert!(msg.contains("channel 4 is out of range"), "{msg}");
        assert!(msg.contains("4 channels"), "{msg}");
        let dup = Edit::ZeroChannels { channels: vec![1, 1], mask: None };
        assert!(
            format!("{:#}", dup.apply(&a, &source()).unwrap_err())
                .contains("channel 1 is listed twice")
        );
    }

    #[test]
    fn shape_mismatch_is_a_clear_error() {
        let a = grid(6, 8, 4, 1);
        let e = Edit::Blend { source: "small.png".into(), strength: 0.5, mask: None };
        let msg = format!("{:#}", e.apply(&a, &source()).unwrap_err());
        assert!(msg.contains("source `small.png`"), "{msg}");
        assert!(msg.contains("3x4x4") && msg.contains("6x8x4"), "{msg}");
        assert!(lerp(&a, &grid(3, 4, 4, 1), 0.5).is_err());
        assert!(slerp(&a, &grid(6, 8, 3, 1), 0.5).is_err());
    }

    #[test]
    fn interpolation_ends_are_exact() {
        let a = grid(6, 8, 4, 1);
        let b = grid(6, 8, 4, 2);
        for f in [lerp, slerp] {
            assert_eq!(bits(&f(&a, &b, 0.0).unwrap().data), bits(&a.data));
            assert_eq!(bits(&f(&a, &b, 1.0).unwrap().data), bits(&b.data));
        }
        let ctx = source();
        let b = ctx.latent("B.png").unwrap();
        for mode in [InterpMode::Lerp, InterpMode::Slerp] {
            let at =
                |t| Edit::Interpolate { source: "B.png".into(), t, mode }.apply(&a, &ctx).unwrap();
            assert_eq!(bits(&at(0.0).data), bits(&a.data));
            assert_eq!(bits(&at(1.0).data), bits(&b.data));
            let mid = at(0.5);
            assert_ne!(mid, a);
            assert_ne!(mid, b);
        }
    }

    fn norm(g: &Grid) -> f64 {
        g.data.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>().sqrt()
    }

    #[test]
    fn slerp_keeps_the_norm_of_equal_norm_ends() {
        let a = grid(6, 8, 4, 1);
        let mut b = grid(6, 8, 4, 2);
        let k = (norm(&a) / norm(&b)) as f32;
        b.data.iter_mut().for_each(|v| *v *= k);
        let (na, nb) = (norm(&a), norm(&b));
        assert!((na - nb).abs() / na < 1e-6);
        for t in [0.1, 0.25, 0.5, 0.9] {
            let n = norm(&slerp(&a, &b, t).unwrap());
            assert!((n - na).abs() / na < 1e-5, "t = {t}: norm {n} vs {na}");
            // Plain lerp of two nearly orthogonal vectors shrinks the norm: the test can fail.
            assert!(norm(&lerp(&a, &b, 0.5).unwrap()) < 0.9 * na);
        }
    }

    #[test]
    fn slerp_falls_back_to_lerp_for_parallel_vectors() {
        let a = grid(2, 2, 3, 1);
        let mut b = a.clone();
        b.data.iter_mut().for_each(|v| *v *= 2.0);
        assert_eq!(slerp(&a, &b, 0.5).unwrap(), lerp(&a, &b, 0.5).unwrap());
        let z = Grid::zeros(2, 2, 3);
        assert_eq!(slerp(&z, &b, 0.5).unwrap(), lerp(&z, &b, 0.5).unwrap());
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
    fn noise_stream_is_pinned() {
        // Pins the generator: a dependency upgrade that changed the stream would silently change
        // every saved recipe's result.
        let n = gaussian_noise(0, 4);
        let again = gaussian_noise(0, 5);
        assert_eq!(bits(&n), bits(&again[..4]));
        // -0.8102725, 0.17619665, 0.78630126, 0.3122973
        assert_eq!(bits(&n), [3209653765, 1043623141, 1061767946, 1050666351], "{n:?}");
    }

    #[test]
    fn noise_looks_standard_normal() {
        let n = gaussian_noise(1, 100_000);
        let mean = n.iter().map(|&v| v as f64).sum::<f64>() / n.len() as f64;
        let var = n.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n.len() as f64;
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "variance {var}");
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
