//! Interpolation between latents ([`lerp`], [`slerp`]) and [`mix`], the scalar step with exact
//! ends that lerp and the token mixing share.

use anyhow::{Result, ensure};
use serde::{Deserialize, Serialize};

use super::checks::same_shape;
use crate::grid::Grid;

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

/// `a + (b - a) * w` with the ends exact: `w = 0` gives `a` and `w = 1` gives `b`.
pub(super) fn mix(a: f32, b: f32, w: f32) -> f32 {
    if w == 0.0 {
        a
    } else if w == 1.0 {
        b
    } else {
        a + (b - a) * w
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edit::ops::fixtures::{bits, grid, source};
    use crate::edit::ops::{Edit, LatentSource};

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
}
