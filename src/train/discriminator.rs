//! The pixel decoder's optional adversarial term: a small PatchGAN discriminator on images and
//! the hinge losses (as in VQGAN / RAE decoders), switched on late in the pixel stages.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::{leaky_relu, relu};

/// Three stride-2 4x4 convolutions (64, 128, 256 channels) and a 3x3 output: one real/fake
/// logit per patch of about 46 px.
#[derive(Module, Debug)]
pub struct Discriminator {
    pub conv1: Conv2d,
    pub conv2: Conv2d,
    pub norm2: GroupNorm,
    pub conv3: Conv2d,
    pub norm3: GroupNorm,
    pub out: Conv2d,
}

/// A convolution that divides the size by `stride` exactly (4x4 stride 2 or 3x3 stride 1).
fn conv(input: usize, output: usize, kernel: usize, stride: usize, device: &Device) -> Conv2d {
    let pad = (kernel - stride).div_ceil(2);
    Conv2dConfig::new([input, output], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .init(device)
}

impl Discriminator {
    pub fn new(device: &Device) -> Self {
        Self {
            conv1: conv(3, 64, 4, 2, device),
            conv2: conv(64, 128, 4, 2, device),
            norm2: GroupNormConfig::new(32, 128).init(device),
            conv3: conv(128, 256, 4, 2, device),
            norm3: GroupNormConfig::new(32, 256).init(device),
            out: conv(256, 1, 3, 1, device),
        }
    }

    /// Images `[B, 3, H, W]` in [0, 1] to patch logits `[B, 1, H/8, W/8]`.
    pub fn forward(&self, image: Tensor<4>) -> Tensor<4> {
        let x = leaky_relu(self.conv1.forward(image * 2.0 - 1.0), 0.2);
        let x = leaky_relu(self.norm2.forward(self.conv2.forward(x)), 0.2);
        let x = leaky_relu(self.norm3.forward(self.conv3.forward(x)), 0.2);
        self.out.forward(x)
    }
}

/// Discriminator hinge loss: `mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))`.
pub fn hinge_d(real: Tensor<4>, fake: Tensor<4>) -> Tensor<1> {
    relu(-real + 1.0).mean() + relu(fake + 1.0).mean()
}

/// Generator hinge loss: `-mean(D(fake))`.
pub fn hinge_g(fake: Tensor<4>) -> Tensor<1> {
    -fake.mean()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits(v: &[f32]) -> Tensor<4> {
        Tensor::<1>::from_floats(v, &Device::flex()).reshape([1, 1, 1, v.len()])
    }

    #[test]
    fn hinge_losses_have_their_textbook_values() {
        // Confident, correct discriminator: no loss; confused one: 1 + 1.
        let d = |r: &[f32], f: &[f32]| hinge_d(logits(r), logits(f)).into_scalar::<f32>();
        assert_eq!(d(&[2.0, 1.5], &[-3.0, -1.0]), 0.0);
        assert_eq!(d(&[0.0], &[0.0]), 2.0);
        assert!((d(&[0.5, 3.0], &[0.25, -2.0]) - (0.25 + 0.625)).abs() < 1e-6);
        assert_eq!(hinge_g(logits(&[1.0, 3.0])).into_scalar::<f32>(), -2.0);
    }

    #[test]
    fn patch_logits_cover_the_image() {
        let d = Discriminator::new(&Device::flex());
        let out = d.forward(Tensor::zeros([2, 3, 64, 48], &Device::flex()));
        assert_eq!(out.dims(), [2, 1, 8, 6]);
    }
}
