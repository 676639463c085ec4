//! Checks on an edit's inputs: its parameters, its channel list and the latents' shapes.

use anyhow::{Result, bail, ensure};

use super::Edit;
use crate::grid::Grid;

impl Edit {
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
}

pub(super) fn shape(g: &Grid) -> String {
    format!("{}x{}x{}", g.height, g.width, g.channels)
}

pub(super) fn check_grid(g: &Grid) -> Result<()> {
    ensure!(
        g.data.len() == g.height * g.width * g.channels,
        "grid of {} holds {} values",
        shape(g),
        g.data.len()
    );
    Ok(())
}

pub(super) fn same_shape(a: &Grid, b: &Grid) -> Result<()> {
    check_grid(a)?;
    check_grid(b)?;
    ensure!(a.same_shape(b), "latent shapes differ: {} and {}", shape(a), shape(b));
    Ok(())
}

pub(super) fn check_channels(channels: &[usize], count: usize) -> Result<()> {
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
mod tests {
    use crate::edit::ops::fixtures::{grid, source};
    use crate::edit::ops::{Edit, lerp, slerp};

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
}
