//! Mixing an edit's result into the latent token by token, by the mask's weights.

use anyhow::Result;

use super::interpolate::mix;
use crate::edit::mask::Mask;
use crate::grid::Grid;

/// Copies `latent`, then for each token with a non-zero weight lets `edit` change a scratch
/// copy of it and mixes the result in by the weight. Values `edit` leaves as they were (same
/// bits) are not touched, so tokens and channels outside the edit stay bit-identical.
pub(super) fn mix_tokens(
    latent: &Grid,
    weights: &[f32],
    mut edit: impl FnMut(usize, &mut [f32]),
) -> Grid {
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
pub(super) fn add_delta(tok: &mut [f32], delta: &[f64], strength: f32) {
    for (t, &d) in tok.iter_mut().zip(delta) {
        let step = strength as f64 * d;
        if step != 0.0 {
            *t = (*t as f64 + step) as f32;
        }
    }
}

pub(super) fn token(g: &Grid, i: usize) -> &[f32] {
    &g.data[i * g.channels..(i + 1) * g.channels]
}

pub(super) fn weights(mask: &Option<Mask>, latent: &Grid) -> Result<Vec<f32>> {
    match mask {
        Some(m) => m.rasterise(latent.height, latent.width),
        None => Ok(vec![1.0; latent.tokens()]),
    }
}
