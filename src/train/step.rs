//! One training step of FAE, shared by the trainer and the `bench` training stages: the losses
//! of each phase (feature loss for the FAE; L1 + perceptual for the pixel decoder, on noisy
//! encoder features or on the feature decoder's outputs) and the optimiser's settings.

use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, ModuleOptimizer};
use burn::prelude::*;

use super::discriminator::{Discriminator, hinge_g};
use super::run::TrainOptions;
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

/// The FAE trainer's optimiser: AdamW, weight decay 0.01, gradients clipped to norm 1.
pub fn optimizer() -> ModuleOptimizer {
    AdamWConfig::new()
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

/// Mean cosine distance between token vectors `[B, T, D]`.
fn cosine_distance(a: Tensor<3>, b: Tensor<3>) -> Tensor<1> {
    let dot = (a.clone() * b.clone()).sum_dim(2);
    let norms = (a.square().sum_dim(2) * b.square().sum_dim(2)).sqrt() + 1e-8;
    (-(dot / norms) + 1.0).mean()
}

/// Squared error to the encoder features + beta * KL (+ optional cosine term).
pub fn fae_loss(
    model: &FaeModel,
    features: Tensor<3>,
    grid: (usize, usize),
    config: &FaeConfig,
    options: &TrainOptions,
    rng: &mut Rng,
) -> (Tensor<1>, Vec<(&'static str, f64)>) {
    let (mean, log_var) = model.encoder.forward(features.clone());
    let [b, t, c] = mean.dims();
    let eps = Tensor::<1>::from_data(
        TensorData::new(rng.normals(b * t * c), [b * t * c]),
        &mean.device(),
    )
    .reshape([b, t, c]);
    let z = mean.clone() + (log_var.clone() * 0.5).exp() * eps;
    let restored = model.feature_decoder.forward(z, grid);
    let mse = (restored.clone() - features.clone()).square().mean();
    let kl = ((mean.square() + log_var.clone().exp() - log_var - 1.0) * 0.5).mean();
    let mut loss = mse.clone() + kl.clone() * config.beta;
    let mut parts = vec![("mse", scalar(&mse)), ("kl", scalar(&kl))];
    if options.feature_cosine > 0.0 {
        let cos = cosine_distance(restored, features);
        parts.push(("cos_dist", scalar(&cos)));
        loss = loss + cos * options.feature_cosine;
    }
    (loss, parts)
}

/// L1 to the target image + perceptual distance in the frozen encoder's feature space; also
/// returns the decoded image (for the adversarial term).
pub fn pixel_loss(
    model: &FaeModel,
    input: Tensor<3>,
    target_features: Tensor<3>,
    targets: Tensor<4>,
    grid: (usize, usize),
    encoder: Option<&dyn VisionEncoder>,
    options: &TrainOptions,
) -> (Tensor<1>, Vec<(&'static str, f64)>, Tensor<4>) {
    let image = model.pixel_decoder.forward(input, grid);
    let [_, _, h, w] = targets.dims();
    let image = if image.dims()[2..] == [h, w] { image } else { resize_to(image, h, w) };
    let l1 = (image.clone() - targets).abs().mean();
    let mut parts = vec![("l1", scalar(&l1))];
    let mut loss = l1;
    if let Some(encoder) = encoder {
        let info = encoder.info();
        let normalised = normalise(image.clone(), info.mean, info.std);
        let tokens = encoder.forward(normalised).patch_tokens;
        let [b, gh, gw, d] = tokens.dims();
        let perceptual = cosine_distance(tokens.reshape([b, gh * gw, d]), target_features.detach());
        parts.push(("perceptual", scalar(&perceptual)));
        loss = loss + perceptual * options.perceptual;
    }
    (loss, parts, image)
}

fn resize_to(image: Tensor<4>, h: usize, w: usize) -> Tensor<4> {
    use burn::tensor::module::interpolate;
    use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
    interpolate(image, InterpolateOptions::new(InterpolateMode::Bilinear).with_output_size([h, w]))
}

pub(crate) fn normalise(image: Tensor<4>, mean: [f32; 3], std: [f32; 3]) -> Tensor<4> {
    let device = image.device();
    let m =
        Tensor::<1>::from_data(TensorData::new(mean.to_vec(), [3]), &device).reshape([1, 3, 1, 1]);
    let s =
        Tensor::<1>::from_data(TensorData::new(std.to_vec(), [3]), &device).reshape([1, 3, 1, 1]);
    (image - m) / s
}

pub(crate) fn scalar(t: &Tensor<1>) -> f64 {
    t.clone().into_scalar::<f32>() as f64
}
