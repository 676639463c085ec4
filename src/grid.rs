//! A token grid on the host: `[height, width, channels]` values, row-major.
//!
//! Latents, encoder features and restored features all travel between the model, the editing
//! engine, the inspectors and files in this form.

use anyhow::{Result, bail};

#[derive(Clone, Debug, PartialEq)]
pub struct Grid {
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    /// `height * width * channels` values; token `(y, x)` starts at `(y * width + x) * channels`.
    pub data: Vec<f32>,
}

impl Grid {
    pub fn new(height: usize, width: usize, channels: usize, data: Vec<f32>) -> Result<Self> {
        if data.len() != height * width * channels {
            bail!(
                "grid of {height}x{width}x{channels} needs {} values, got {}",
                height * width * channels,
                data.len()
            );
        }
        Ok(Self { height, width, channels, data })
    }

    pub fn zeros(height: usize, width: usize, channels: usize) -> Self {
        Self { height, width, channels, data: vec![0.0; height * width * channels] }
    }

    pub fn tokens(&self) -> usize {
        self.height * self.width
    }

    pub fn token(&self, y: usize, x: usize) -> &[f32] {
        let i = (y * self.width + x) * self.channels;
        &self.data[i..i + self.channels]
    }

    pub fn token_mut(&mut self, y: usize, x: usize) -> &mut [f32] {
        let i = (y * self.width + x) * self.channels;
        &mut self.data[i..i + self.channels]
    }

    /// Whether two grids can be combined token by token.
    pub fn same_shape(&self, other: &Grid) -> bool {
        (self.height, self.width, self.channels) == (other.height, other.width, other.channels)
    }

    /// One channel as a `[height, width]` map.
    pub fn channel(&self, c: usize) -> Vec<f32> {
        self.data.chunks_exact(self.channels).map(|t| t[c]).collect()
    }
}
