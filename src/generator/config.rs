//! The generator's architecture and the latent space it works in, stored in every checkpoint.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// Largest latent grid side: 16 x 16 in the paper; 256 (images of 3584 px at patch 14) keeps
/// the token count, RoPE tables and attention of a configuration read from a file within memory.
pub const MAX_GRID: usize = 256;

/// A SiT / LightningDiT-style flow transformer over a normalised latent grid.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GeneratorConfig {
    /// Latent grid (rows, columns) and channels, as the FAE model produces them.
    pub grid: (usize, usize),
    pub channels: usize,
    /// Latent tokens per side folded into one transformer token (1 for a 16 x 16 latent).
    pub patch: usize,
    pub width: usize,
    pub depth: usize,
    pub heads: usize,
    pub mlp_ratio: f64,
    /// Class names from the training folder's sub-folders; empty for an unconditional model.
    pub classes: Vec<String>,
    pub rope_base: f64,
}

/// Named sizes, from CPU-trainable to the paper's XL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GeneratorSize {
    /// 4 layers, 128 wide: trains in minutes on a CPU.
    Tiny,
    /// SiT-S: 12 layers, 384 wide, 6 heads.
    S,
    /// SiT-B: 12 layers, 768 wide, 12 heads.
    B,
    /// SiT-L: 24 layers, 1024 wide, 16 heads.
    L,
    /// SiT-XL / LightningDiT-XL: 28 layers, 1152 wide, 16 heads (the paper's generator).
    Xl,
}

impl GeneratorConfig {
    pub fn new(size: GeneratorSize, grid: (usize, usize), channels: usize) -> Self {
        let (width, depth, heads) = match size {
            GeneratorSize::Tiny => (128, 4, 4),
            GeneratorSize::S => (384, 12, 6),
            GeneratorSize::B => (768, 12, 12),
            GeneratorSize::L => (1024, 24, 16),
            GeneratorSize::Xl => (1152, 28, 16),
        };
        Self {
            grid,
            channels,
            patch: 1,
            width,
            depth,
            heads,
            mlp_ratio: 4.0,
            classes: Vec::new(),
            rope_base: 100.0,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let (h, w) = self.grid;
        if !(1..=MAX_GRID).contains(&h) || !(1..=MAX_GRID).contains(&w) {
            bail!("latent grid {h}x{w} must have 1 to {MAX_GRID} tokens a side");
        }
        if self.patch == 0 || h % self.patch != 0 || w % self.patch != 0 {
            bail!("latent grid {h}x{w} is not a multiple of the generator patch {}", self.patch);
        }
        if self.channels == 0 || self.depth == 0 {
            bail!("generator needs at least one channel and one layer");
        }
        if self.heads == 0
            || !self.width.is_multiple_of(self.heads)
            || !(self.width / self.heads).is_multiple_of(4)
        {
            bail!(
                "width {} must split into {} heads of a multiple of 4 dims (2-D RoPE)",
                self.width,
                self.heads
            );
        }
        Ok(())
    }

    /// Transformer tokens per side.
    pub fn token_grid(&self) -> (usize, usize) {
        (self.grid.0 / self.patch, self.grid.1 / self.patch)
    }

    /// The index of the "no class" label used for unconditional prediction and guidance.
    pub fn null_class(&self) -> usize {
        self.classes.len()
    }

    pub fn class_index(&self, name: &str) -> Result<usize> {
        match self.classes.iter().position(|c| c == name) {
            Some(i) => Ok(i),
            None if self.classes.is_empty() => {
                bail!("this generator was trained without classes; drop --class")
            }
            None => bail!("unknown class `{name}` (known: {})", self.classes.join(", ")),
        }
    }
}
