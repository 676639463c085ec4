//! The run's settings ([`TrainOptions`]) and how they divide the steps into phases, learning
//! rates and the adversarial term's start.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::shared::{warmup_constant, warmup_cosine};
use super::step::Phase;
use crate::fae::{FaeConfig, PixelHead};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// The FAE encoder and feature decoder.
    Fae,
    /// The pixel decoder: noisy encoder features, then the feature decoder's outputs.
    Pixel,
    /// Both, in turn.
    All,
}

/// How the learning rate moves after its warm-up, in each phase.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// Down to a tenth along a half cosine.
    #[default]
    Cosine,
    /// Held (the PyTorch baseline of DESIGN.md 7).
    Constant,
}

/// The run's settings; everything but the paths is recorded in the checkpoint for `--resume`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainOptions {
    pub data: PathBuf,
    pub out: PathBuf,
    pub steps: u64,
    pub batch: usize,
    pub size: usize,
    pub stage: Stage,
    pub from: Option<PathBuf>,
    pub resume: bool,
    pub checkpoint_every: u64,
    pub encoder: Option<String>,
    pub lr: f64,
    /// AdamW's second-moment decay.
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    #[serde(default)]
    pub lr_schedule: LrSchedule,
    pub warmup: u64,
    pub seed: u64,
    /// Augmented views per image (view 0 is the plain centre crop; the others cycle through
    /// downscaled whole views and crops of 1/2, 1/4 of the shorter side and native pixels).
    pub views: u32,
    /// Draw every sub-folder of `data` equally often, then a file within it (`Dataset::pick`).
    #[serde(default)]
    pub balance: bool,
    pub val_fraction: f64,
    pub val_every: u64,
    pub log_every: u64,
    /// Weight of the perceptual term (encoder-feature cosine of output vs input); 0 turns it off.
    pub perceptual: f64,
    /// Weight of the adversarial (hinge GAN) term of the pixel loss; 0 turns it off.
    #[serde(default = "default_adversarial")]
    pub adversarial: f64,
    /// Where in the pixel stages (0 = their start, 1 = their end) the adversarial term starts.
    #[serde(default = "default_adversarial_start")]
    pub adversarial_start: f64,
    /// Random shift in pixels (up to a patch) of the perceptual term's crops; 0 compares whole
    /// images on the patch grid.
    #[serde(default)]
    pub perceptual_shift: usize,
    /// Weight of the image-gradient L1 term of the pixel loss; 0 turns it off.
    #[serde(default)]
    pub gradient: f64,
    /// Weight of the amplitude-spectrum L1 term of the pixel loss; 0 turns it off.
    #[serde(default)]
    pub spectrum: f64,
    /// Weight of the structural-similarity term (1 - SSIM on luma) of the pixel loss; 0 turns it
    /// off.
    #[serde(default)]
    pub ssim: f64,
    /// Mean noise level for pixel stage 1 (per-sample sigma ~ U(0, 2 * noise)).
    pub noise: f64,
    /// Weight of the optional cosine term in the feature loss.
    pub feature_cosine: f64,
    pub ema_decay: f64,
    pub latent_channels: usize,
    pub cache_dir: Option<PathBuf>,
    pub cache_max_bytes: u64,
    pub progress: bool,
    /// Architecture for a model trained from scratch (default: [`FaeConfig::small`]).
    pub architecture: Option<FaeConfig>,
    /// The pixel decoder's head: for a new model, or (with `from`) a fresh head of this kind on
    /// the checkpoint's pixel decoder when the checkpoint has the other kind. `None`: as given.
    #[serde(default)]
    pub pixel_head: Option<PixelHead>,
    /// Residual blocks of the conv head: a new head's depth, or (with `from`) the depth the
    /// checkpoint's head grows to, its trained blocks kept. `None`: as given.
    #[serde(default)]
    pub head_blocks: Option<usize>,
}

/// Off unless asked for: in a short fine-tune a fresh discriminator hurt more than it helped.
fn default_adversarial() -> f64 {
    0.0
}

/// AdamW's usual 0.999 (runs recorded before the option keep it on `--resume`).
fn default_beta2() -> f64 {
    0.999
}

fn default_adversarial_start() -> f64 {
    0.5
}

impl TrainOptions {
    pub fn new(data: PathBuf, out: PathBuf) -> Self {
        Self {
            data,
            out,
            steps: 2000,
            batch: 8,
            size: 224,
            stage: Stage::All,
            from: None,
            resume: false,
            checkpoint_every: 250,
            encoder: None,
            lr: 1e-4 * 4.0,
            beta2: default_beta2(),
            lr_schedule: LrSchedule::Cosine,
            warmup: 100,
            seed: 0,
            views: 8,
            balance: false,
            val_fraction: 0.05,
            val_every: 250,
            log_every: 10,
            perceptual: 0.1,
            adversarial: default_adversarial(),
            adversarial_start: default_adversarial_start(),
            perceptual_shift: 7,
            gradient: 0.0,
            spectrum: 0.0,
            ssim: 0.0,
            noise: 0.4,
            feature_cosine: 0.1,
            ema_decay: 0.999,
            latent_channels: 32,
            cache_dir: None,
            cache_max_bytes: 4 << 30,
            progress: true,
            architecture: None,
            pixel_head: None,
            head_blocks: None,
        }
    }

    /// Which phase a step belongs to and the step's position within that phase.
    pub(super) fn phase(&self, step: u64) -> (Phase, u64, u64) {
        let n = self.steps.max(1);
        let splits: Vec<(Phase, u64)> = match self.stage {
            Stage::Fae => vec![(Phase::Fae, n)],
            Stage::Pixel => {
                vec![(Phase::PixelNoisy, n * 7 / 10), (Phase::PixelDecoded, n - n * 7 / 10)]
            }
            Stage::All => {
                let a = n / 2;
                let b = n * 35 / 100;
                vec![(Phase::Fae, a), (Phase::PixelNoisy, b), (Phase::PixelDecoded, n - a - b)]
            }
        };
        let mut start = 0;
        for (phase, len) in &splits {
            if step < start + len {
                return (*phase, step - start, *len);
            }
            start += len;
        }
        let (phase, len) = *splits.last().expect("a phase");
        (phase, len.saturating_sub(1), len)
    }

    /// Whether `step` trains with the adversarial term: late in the pixel stages.
    pub(super) fn adversarial_on(&self, step: u64) -> bool {
        if self.adversarial <= 0.0 || self.phase(step).0 == Phase::Fae {
            return false;
        }
        // Where the pixel stages start, as `phase` splits the run.
        let first = match self.stage {
            Stage::Fae => return false,
            Stage::Pixel => 0,
            Stage::All => self.steps.max(1) / 2,
        };
        let pixel_steps = self.steps.max(1) - first;
        (step - first) as f64 >= self.adversarial_start * pixel_steps as f64
    }

    /// Warm-up, then cosine decay to a tenth or the rate held (`lr_schedule`), restarted for
    /// each phase.
    pub(super) fn learning_rate(&self, step: u64) -> f64 {
        let (_, pos, len) = self.phase(step);
        match self.lr_schedule {
            LrSchedule::Cosine => warmup_cosine(self.lr, pos, len, self.warmup),
            LrSchedule::Constant => warmup_constant(self.lr, pos, len, self.warmup),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_split_the_steps() {
        let mut o = TrainOptions::new("d".into(), "o".into());
        o.steps = 100;
        assert_eq!(o.phase(0).0, Phase::Fae);
        assert_eq!(o.phase(49).0, Phase::Fae);
        assert_eq!(o.phase(50).0, Phase::PixelNoisy);
        assert_eq!(o.phase(85).0, Phase::PixelDecoded);
        assert_eq!(o.phase(99).0, Phase::PixelDecoded);
        o.stage = Stage::Pixel;
        assert_eq!(o.phase(69).0, Phase::PixelNoisy);
        assert_eq!(o.phase(70).0, Phase::PixelDecoded);
    }

    #[test]
    fn learning_rate_warms_up_then_decays() {
        let mut o = TrainOptions::new("d".into(), "o".into());
        o.stage = Stage::Fae;
        o.steps = 1000;
        o.warmup = 100;
        assert!(o.learning_rate(0) < o.learning_rate(50));
        assert!((o.learning_rate(99) - o.lr).abs() < 1e-12);
        assert!(o.learning_rate(500) < o.lr && o.learning_rate(999) >= 0.1 * o.lr - 1e-12);
        o.lr_schedule = LrSchedule::Constant;
        assert!(o.learning_rate(0) < o.learning_rate(50));
        assert_eq!(o.learning_rate(500), o.lr);
        assert_eq!(o.learning_rate(999), o.lr);
    }
}
