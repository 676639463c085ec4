//! Test fixtures for the edits: an in-memory [`LatentSource`] and seeded latent grids.

use std::collections::HashMap;

use anyhow::{Context, Result};

use super::{Harmonise, LatentSource, gaussian_noise};
use crate::grid::Grid;

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

pub(crate) fn bits(g: &[f32]) -> Vec<u32> {
    g.iter().map(|v| v.to_bits()).collect()
}
