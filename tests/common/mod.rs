//! Helpers shared by the integration tests.

use fae_studio::fae::FaeConfig;

/// A tiny FAE on the built-in DINOv2-S at 56 px: fast enough for CPU tests.
pub fn tiny_architecture() -> FaeConfig {
    let mut cfg = FaeConfig::small("dinov2-small", 384, 14, 56);
    (cfg.enc_heads, cfg.dec_width, cfg.dec_depth, cfg.dec_heads) = (2, 64, 1, 2);
    (cfg.pix_width, cfg.pix_depth, cfg.pix_heads) = (64, 1, 2);
    cfg
}
