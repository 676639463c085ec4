//! Frozen pretrained vision encoders behind one interface.
//!
//! An encoder takes a batch of normalised images `[B, 3, H, W]` (H and W multiples of its patch
//! size, square or not) and returns the token grid `[B, H / p, W / p, dim]`, with the CLS token and
//! any register tokens kept apart.

pub mod cpu_fast;
pub mod cpu_grad;
pub mod cpu_linear;
pub mod dinov2;
pub mod hub;
mod interpolate;
pub mod layers;
pub mod onnx_import;
pub mod siglip;
pub mod source;

pub use interpolate::resize_bicubic;

use burn::prelude::*;

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
pub const SIGLIP_MEAN: [f32; 3] = [0.5, 0.5, 0.5];
pub const SIGLIP_STD: [f32; 3] = [0.5, 0.5, 0.5];

/// What a caller needs to know to feed an encoder and read its output.
#[derive(Clone, Debug, PartialEq)]
pub struct EncoderInfo {
    /// How the user named it: `dinov2-small`, a path, or a Hugging Face id.
    pub name: String,
    /// `dinov2` or `siglip`.
    pub family: String,
    pub dim: usize,
    pub patch_size: usize,
    /// The working size used when none is given.
    pub default_size: usize,
    /// Per-channel normalisation applied to RGB in [0, 1].
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub has_cls: bool,
    pub num_registers: usize,
}

impl EncoderInfo {
    /// Checks that an image of `height x width` can be encoded, naming the nearest valid size.
    pub fn check_size(&self, height: usize, width: usize) -> anyhow::Result<()> {
        let p = self.patch_size;
        for (what, s) in [("height", height), ("width", width)] {
            if s < p || s % p != 0 {
                let near = (s.div_ceil(p).max(1)) * p;
                anyhow::bail!(
                    "image {what} {s} is not a positive multiple of the patch size {p} of {} \
                     (try {near})",
                    self.name
                );
            }
        }
        Ok(())
    }
}

/// The encoder's output for a batch.
#[derive(Clone, Debug)]
pub struct EncoderOutput {
    /// `[B, grid_h, grid_w, dim]`: the final normalised patch tokens, row-major.
    pub patch_tokens: Tensor<4>,
    /// `[B, dim]`, for encoders with a CLS token.
    pub cls: Option<Tensor<2>>,
    /// `[B, registers, dim]`, for encoders with register tokens.
    pub registers: Option<Tensor<3>>,
}

/// A frozen pretrained vision encoder.
pub trait VisionEncoder: Send + Sync {
    fn info(&self) -> &EncoderInfo;
    fn num_params(&self) -> usize;
    /// Encodes normalised pixels `[B, 3, H, W]`; H and W must pass [`EncoderInfo::check_size`].
    fn forward(&self, pixels: Tensor<4>) -> EncoderOutput;
}
