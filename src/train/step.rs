//! One training step of FAE, shared by the trainer and the `bench` training stages: the losses
//! of each phase (`loss.rs`'s feature loss for the FAE and image loss for the pixel decoder, on
//! noisy encoder features or on the feature decoder's outputs) and the optimiser's settings.

use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, ModuleOptimizer};
use burn::prelude::*;

use super::discriminator::{Discriminator, hinge_g};
use super::loss::{fae_loss, pixel_loss, scalar};
use super::options::TrainOptions;
use crate::encoders::VisionEncoder;
use crate::fae::{FaeConfig, FaeModel};
use crate::rng::Rng;

/// What one step trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Fae,
    PixelNoisy,
    PixelDecoded,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Self::Fae => "fae",
            Self::PixelNoisy => "pixel-noisy",
            Self::PixelDecoded => "pixel-decoded",
        }
    }
}

/// The FAE trainer's optimiser: AdamW with second-moment decay `beta2`, weight decay 0.01,
/// gradients clipped to norm 1.
pub fn optimizer(beta2: f64) -> ModuleOptimizer {
    AdamWConfig::new()
        .with_beta_2(beta2 as f32)
        .with_weight_decay(0.01)
        .with_grad_clipping(Some(GradientClippingConfig::Norm(1.0)))
        .init()
}

/// What every step of a run shares.
pub struct StepContext<'a> {
    pub config: &'a FaeConfig,
    pub options: &'a TrainOptions,
    /// Token grid of the training size.
    pub grid: (usize, usize),
    /// The frozen encoder on the autodiff device, for the perceptual term (`None`: no term).
    pub perceptual: Option<&'a dyn VisionEncoder>,
}

/// One step's loss, its named parts for the metrics, and (with the adversarial term) the decoded
/// images, detached, with their targets for the discriminator's step.
pub struct StepLoss {
    pub loss: Tensor<1>,
    pub parts: Vec<(&'static str, f64)>,
    pub fake_and_real: Option<(Tensor<4>, Tensor<4>)>,
}

impl StepContext<'_> {
    /// The loss of `phase` on a batch: `features` `[B, T, D]` are the frozen encoder's features
    /// and `targets` `[B, 3, H, W]` the images (pixel phases), both on the autodiff device.
    /// `rng` draws the latent's and the features' noise; `disc`, when given, adds the
    /// adversarial term.
    pub fn loss(
        &self,
        model: &FaeModel,
        phase: Phase,
        features: Tensor<3>,
        targets: Option<Tensor<4>>,
        rng: &mut Rng,
        disc: Option<&Discriminator>,
    ) -> StepLoss {
        let options = self.options;
        let targets = match (phase, targets) {
            (Phase::Fae, _) => {
                let (loss, parts) = fae_loss(model, features, self.grid, self.config, options, rng);
                return StepLoss { loss, parts, fake_and_real: None };
            }
            (_, Some(targets)) => targets,
            (_, None) => panic!("the pixel phases need target images"),
        };
        let ad = features.device();
        let input = if phase == Phase::PixelNoisy {
            let [b, t, d] = features.dims();
            let sigmas: Vec<f32> =
                (0..b).map(|_| (2.0 * options.noise * rng.uniform()) as f32).collect();
            let sigma =
                Tensor::<1>::from_data(TensorData::new(sigmas, [b]), &ad).reshape([b, 1, 1]);
            let eps =
                Tensor::<1>::from_data(TensorData::new(rng.normals(b * t * d), [b * t * d]), &ad)
                    .reshape([b, t, d]);
            features.clone() + eps * sigma
        } else {
            // The frozen FAE runs outside autodiff: a graph that is never backpropagated would
            // otherwise be kept alive, step after step.
            let inner = model.valid();
            let (mean, _) = inner.encoder.forward(features.clone().inner());
            Tensor::from_data(inner.feature_decoder.forward(mean, self.grid).into_data(), &ad)
        };
        let (mut loss, mut parts, image) = pixel_loss(
            model,
            input,
            features,
            targets.clone(),
            self.grid,
            self.perceptual,
            options,
            rng,
        );
        let mut fake_and_real = None;
        if let Some(d) = disc {
            let g = hinge_g(d.forward(image.clone()));
            parts.push(("adv_g", scalar(&g)));
            loss = loss + g * options.adversarial;
            fake_and_real = Some((image.detach(), targets));
        }
        StepLoss { loss, parts, fake_and_real }
    }
}
