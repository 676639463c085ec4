//! The FAE architecture's configuration, stored in every checkpoint.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// Everything needed to rebuild an FAE model and use it with its encoder.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct FaeConfig {
    /// The frozen encoder this model was trained on (as the user names it, e.g. `dinov2-small`).
    pub encoder: String,
    pub encoder_dim: usize,
    pub patch_size: usize,
    /// Training image size in pixels (square).
    pub image_size: usize,
    /// Latent channels C (the paper: 32).
    pub latent_channels: usize,
    /// FAE encoder: one self-attention layer with wide heads.
    pub enc_heads: usize,
    pub enc_head_dim: usize,
    /// Feature decoder: transformer with 2-D RoPE, RMSNorm, SwiGLU.
    pub dec_width: usize,
    pub dec_depth: usize,
    pub dec_heads: usize,
    pub dec_mlp_ratio: f64,
    /// Pixel decoder: ViT from features to image patches.
    pub pix_width: usize,
    pub pix_depth: usize,
    pub pix_heads: usize,
    pub pix_mlp_ratio: f64,
    /// Output patch size in pixels (the paper: 16, giving 256 px from a 16 x 16 grid).
    pub pix_patch: usize,
    /// KL weight.
    pub beta: f64,
    #[serde(default = "default_rope_base")]
    pub rope_base: f64,
    /// How the pixel decoder paints its tokens; checkpoints older than this field are `Linear`.
    #[serde(default)]
    pub pix_head: PixelHead,
}

/// The pixel decoder's output head.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PixelHead {
    /// Each token paints its own `pix_patch` square through one linear layer (the paper's head;
    /// it leaves a visible grid of patches).
    #[default]
    Linear,
    /// Each token paints a `pix_patch / 2` square of `coarse` channels (a linear layer and a
    /// pixel shuffle); a 3x3 convolution to `channels`, nearest 2x upsampling and `blocks`
    /// residual 3x3 convolutions mix neighbouring patches, and a 3x3 convolution gives RGB.
    /// Needs an even `pix_patch` (14 and 16 both work).
    Conv { coarse: usize, channels: usize, blocks: usize },
}

impl PixelHead {
    /// The conv head measured in DESIGN.md 7 (no grid left): 16 coarse channels, 32 wide, 2 blocks.
    pub fn conv() -> Self {
        Self::Conv { coarse: 16, channels: 32, blocks: 2 }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Linear => "linear",
            Self::Conv { .. } => "conv",
        }
    }

    /// This conv head with `blocks` residual blocks; the linear head has none to set.
    pub fn with_blocks(self, blocks: usize) -> Result<Self> {
        match self {
            Self::Conv { coarse, channels, .. } => Ok(Self::Conv { coarse, channels, blocks }),
            Self::Linear => {
                bail!(
                    "--head-blocks sets the conv pixel head's depth; this model has the linear head (--pixel-head conv starts a conv head)"
                )
            }
        }
    }
}

fn default_rope_base() -> f64 {
    100.0
}

impl FaeConfig {
    /// The paper's configuration on DINOv2-g/14 (1536 dims) at 224 px.
    pub fn paper() -> Self {
        Self {
            encoder: "facebook/dinov2-giant".into(),
            encoder_dim: 1536,
            patch_size: 14,
            image_size: 224,
            latent_channels: 32,
            enc_heads: 24,
            enc_head_dim: 256,
            dec_width: 1536,
            dec_depth: 6,
            dec_heads: 24,
            dec_mlp_ratio: 4.0,
            pix_width: 1024,
            pix_depth: 24,
            pix_heads: 16,
            pix_mlp_ratio: 4.0,
            pix_patch: 16,
            beta: 1e-4,
            rope_base: 100.0,
            pix_head: PixelHead::Linear,
        }
    }

    /// A model small enough to train on a laptop GPU, or slowly on a CPU.
    pub fn small(encoder: &str, encoder_dim: usize, patch_size: usize, image_size: usize) -> Self {
        Self {
            encoder: encoder.into(),
            encoder_dim,
            patch_size,
            image_size,
            latent_channels: 32,
            enc_heads: 6,
            enc_head_dim: 64,
            dec_width: 384,
            dec_depth: 4,
            dec_heads: 6,
            dec_mlp_ratio: 4.0,
            pix_width: 384,
            pix_depth: 6,
            pix_heads: 6,
            pix_mlp_ratio: 4.0,
            pix_patch: patch_size,
            beta: 1e-4,
            rope_base: 100.0,
            pix_head: PixelHead::Linear,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let sizes =
            [self.encoder_dim, self.patch_size, self.enc_heads, self.enc_head_dim, self.pix_patch];
        if sizes.contains(&0) {
            bail!(
                "encoder width {}, patch {}, {} encoder heads of {} dims and pixel patch {} must all \
                 be at least 1",
                self.encoder_dim,
                self.patch_size,
                self.enc_heads,
                self.enc_head_dim,
                self.pix_patch
            );
        }
        if !(8..=64).contains(&self.latent_channels) {
            bail!("latent channels must be between 8 and 64, got {}", self.latent_channels);
        }
        for (what, width, heads) in [
            ("feature decoder", self.dec_width, self.dec_heads),
            ("pixel decoder", self.pix_width, self.pix_heads),
        ] {
            if heads == 0 || width % heads != 0 || (width / heads) % 4 != 0 {
                bail!(
                    "{what}: width {width} must split into {heads} heads of a multiple of 4 dims (2-D RoPE)"
                );
            }
        }
        if let PixelHead::Conv { coarse, channels, .. } = self.pix_head {
            if self.pix_patch < 2 || !self.pix_patch.is_multiple_of(2) {
                bail!(
                    "the conv pixel head needs an even output patch size (each token paints a \
                     pix_patch/2 square, upsampled 2x), got pix_patch {}",
                    self.pix_patch
                );
            }
            if coarse == 0 || channels == 0 {
                bail!(
                    "the conv pixel head needs at least one channel, got {coarse} and {channels}"
                );
            }
        }
        if !self.image_size.is_multiple_of(self.patch_size) {
            bail!(
                "image size {} is not a multiple of patch size {}",
                self.image_size,
                self.patch_size
            );
        }
        Ok(())
    }

    /// Token grid side at the training size.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_without_a_head_field_read_as_linear() {
        let mut json =
            serde_json::to_value(FaeConfig::small("dinov2-small", 384, 14, 224)).unwrap();
        json.as_object_mut().unwrap().remove("pix_head");
        let cfg: FaeConfig = serde_json::from_value(json).unwrap();
        assert_eq!(cfg.pix_head, PixelHead::Linear);
        assert_eq!(FaeConfig::paper().pix_head, PixelHead::Linear);
    }

    #[test]
    fn only_the_conv_head_has_blocks_to_set() {
        let grown = PixelHead::conv().with_blocks(5).unwrap();
        assert_eq!(grown, PixelHead::Conv { coarse: 16, channels: 32, blocks: 5 });
        let err = PixelHead::Linear.with_blocks(3).unwrap_err().to_string();
        assert!(err.contains("linear head") && err.contains("--pixel-head conv"), "{err}");
    }

    #[test]
    fn the_conv_head_round_trips_and_needs_an_even_patch() {
        let mut cfg = FaeConfig::small("dinov2-small", 384, 14, 224);
        cfg.pix_head = PixelHead::conv();
        let text = serde_json::to_string(&cfg).unwrap();
        assert_eq!(serde_json::from_str::<FaeConfig>(&text).unwrap(), cfg);
        cfg.validate().unwrap();
        cfg.pix_patch = 16;
        cfg.validate().unwrap();
        cfg.pix_patch = 15;
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("even output patch size"), "{e}");
    }
}
