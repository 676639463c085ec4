//! Other images' latents for edits: the caller's [`LatentSource`] and shape-checked loaders.

use anyhow::{Context, Result, bail, ensure};

use super::checks::{check_grid, shape};
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

/// The settings of a [`Edit::Harmonise`](super::Edit::Harmonise), handed to [`LatentSource::harmonise`].
#[derive(Clone, Debug, PartialEq)]
pub struct Harmonise {
    pub strength: f32,
    pub steps: usize,
    pub seed: u64,
    pub class: Option<String>,
}

/// The latent of `path`, checked against the edited latent's shape; errors start with
/// "source `path`".
pub(super) fn load(ctx: &dyn LatentSource, path: &str, like: &Grid) -> Result<Grid> {
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
pub(super) fn mean_of(ctx: &dyn LatentSource, folder: &str, like: &Grid) -> Result<Vec<f64>> {
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
