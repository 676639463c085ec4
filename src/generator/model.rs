//! The flow transformer (SiT / LightningDiT style): latent tokens in, velocity out, conditioned on
//! time and class through adaLN-Zero; 2-D RoPE attention, RMSNorm and SwiGLU as in LightningDiT.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::prelude::*;
use burn::tensor::activation::silu;

use super::config::GeneratorConfig;
use crate::encoders::cpu_fast::linear;
use crate::fae::model::{Attention, Rope2d, SwiGlu, rms_norm};

/// Frequencies of the sinusoidal time embedding.
const TIME_FREQS: usize = 256;

/// Sinusoidal embedding of `t` in [0, 1] (scaled to 0..1000 as in DiT), then a two-layer MLP.
#[derive(Module, Debug)]
pub struct TimeEmbedder {
    pub fc1: Linear,
    pub fc2: Linear,
}

impl TimeEmbedder {
    fn new(width: usize, device: &Device) -> Self {
        Self {
            fc1: LinearConfig::new(TIME_FREQS, width).init(device),
            fc2: LinearConfig::new(width, width).init(device),
        }
    }

    fn forward(&self, t: Tensor<1>) -> Tensor<2> {
        let [b] = t.dims();
        let half = TIME_FREQS / 2;
        let freqs: Vec<f32> =
            (0..half).map(|i| (-(10000f64.ln()) * i as f64 / half as f64).exp() as f32).collect();
        let freqs = Tensor::<1>::from_data(TensorData::new(freqs, [half]), &t.device());
        let angles = (t * 1000.0).reshape([b, 1]) * freqs.reshape([1, half]);
        let emb = Tensor::cat(vec![angles.clone().cos(), angles.sin()], 1);
        linear(silu(linear(emb, &self.fc1)), &self.fc2)
    }
}

/// `x * (1 + scale) + shift`, with per-sample `[B, 1, D]` modulation.
fn modulate(x: Tensor<3>, shift: Tensor<3>, scale: Tensor<3>) -> Tensor<3> {
    x.clone() * scale + x + shift
}

/// Splits `[B, k * D]` into k tensors of `[B, 1, D]`.
fn chunks(m: Tensor<2>, k: usize) -> Vec<Tensor<3>> {
    let [b, n] = m.dims();
    let d = n / k;
    (0..k).map(|i| m.clone().narrow(1, i * d, d).reshape([b, 1, d])).collect()
}

/// Transformer block with adaLN-Zero: the conditioning sets shift, scale and gate of both
/// sub-layers; the gates start at zero, so every block starts as the identity.
#[derive(Module, Debug)]
pub struct FlowBlock {
    pub norm1: RmsNorm,
    pub attn: Attention,
    pub norm2: RmsNorm,
    pub mlp: SwiGlu,
    pub adaln: Linear,
}

impl FlowBlock {
    fn new(cfg: &GeneratorConfig, device: &Device) -> Self {
        let w = cfg.width;
        Self {
            norm1: RmsNormConfig::new(w).with_epsilon(1e-6).init(device),
            attn: Attention::new(w, cfg.heads, w / cfg.heads, device),
            norm2: RmsNormConfig::new(w).with_epsilon(1e-6).init(device),
            mlp: SwiGlu::new(w, cfg.mlp_ratio, device),
            adaln: LinearConfig::new(w, 6 * w).init(device),
        }
    }

    fn forward(&self, x: Tensor<3>, cond: Tensor<2>, rope: &Rope2d) -> Tensor<3> {
        let m = chunks(linear(cond, &self.adaln), 6);
        let h = modulate(rms_norm(&self.norm1, x.clone()), m[0].clone(), m[1].clone());
        let x = x + self.attn.forward(h, Some(rope)) * m[2].clone();
        let h = modulate(rms_norm(&self.norm2, x.clone()), m[3].clone(), m[4].clone());
        x + self.mlp.forward(h) * m[5].clone()
    }
}

/// Final RMSNorm with adaLN shift and scale, then the projection back to latent patches.
#[derive(Module, Debug)]
pub struct FinalLayer {
    pub norm: RmsNorm,
    pub adaln: Linear,
    pub linear: Linear,
}

/// The whole generator: predicts the velocity `eps - x0` of the linear interpolant.
#[derive(Module, Debug)]
pub struct FlowTransformer {
    pub patch_embed: Linear,
    pub time_embed: TimeEmbedder,
    /// One row per class plus a last "no class" row (label dropout, guidance).
    pub class_embed: Embedding,
    pub blocks: Vec<FlowBlock>,
    pub final_layer: FinalLayer,
    #[module(skip)]
    pub config: GeneratorConfig,
}

impl FlowTransformer {
    pub fn new(cfg: &GeneratorConfig, device: &Device) -> Self {
        let w = cfg.width;
        let patch_dim = cfg.patch * cfg.patch * cfg.channels;
        Self {
            patch_embed: LinearConfig::new(patch_dim, w).init(device),
            time_embed: TimeEmbedder::new(w, device),
            class_embed: EmbeddingConfig::new(cfg.classes.len() + 1, w).init(device),
            blocks: (0..cfg.depth).map(|_| FlowBlock::new(cfg, device)).collect(),
            final_layer: FinalLayer {
                norm: RmsNormConfig::new(w).with_epsilon(1e-6).init(device),
                adaln: LinearConfig::new(w, 2 * w).init(device),
                linear: LinearConfig::new(w, patch_dim).init(device),
            },
            config: cfg.clone(),
        }
    }

    /// RoPE tables for this model's token grid (built once per sampling run or training step).
    pub fn rope(&self, device: &Device) -> Rope2d {
        let (h, w) = self.config.token_grid();
        Rope2d::new(h, w, self.config.width / self.config.heads, self.config.rope_base, device)
    }

    /// `x`: `[B, H*W, C]` normalised latents at times `t` `[B]` with class indices `labels`
    /// (`null_class()` for none). Returns the predicted velocity, shaped like `x`.
    pub fn forward(
        &self,
        x: Tensor<3>,
        t: Tensor<1>,
        labels: &[usize],
        rope: &Rope2d,
    ) -> Tensor<3> {
        let [b, _, _] = x.dims();
        let device = x.device();
        let labels: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
        let labels = Tensor::<2, Int>::from_data(TensorData::new(labels, [b, 1]), &device);
        let class = self.class_embed.forward(labels).reshape([b, self.config.width]);
        let cond = silu(self.time_embed.forward(t) + class);
        let mut h = linear(self.patchify(x), &self.patch_embed);
        for block in &self.blocks {
            h = block.forward(h, cond.clone(), rope);
        }
        let f = &self.final_layer;
        let m = chunks(linear(cond, &f.adaln), 2);
        let h = modulate(rms_norm(&f.norm, h), m[0].clone(), m[1].clone());
        self.unpatchify(linear(h, &f.linear))
    }

    /// `[B, H*W, C]` -> `[B, (H/p)*(W/p), p*p*C]`.
    fn patchify(&self, x: Tensor<3>) -> Tensor<3> {
        let p = self.config.patch;
        if p == 1 {
            return x;
        }
        let [b, _, c] = x.dims();
        let (gh, gw) = self.config.token_grid();
        x.reshape([b, gh, p, gw, p, c]).permute([0, 1, 3, 2, 4, 5]).reshape([b, gh * gw, p * p * c])
    }

    fn unpatchify(&self, x: Tensor<3>) -> Tensor<3> {
        let p = self.config.patch;
        if p == 1 {
            return x;
        }
        let [b, _, _] = x.dims();
        let c = self.config.channels;
        let (gh, gw) = self.config.token_grid();
        x.reshape([b, gh, gw, p, p, c]).permute([0, 1, 3, 2, 4, 5]).reshape([b, gh * p * gw * p, c])
    }
}

/// A new model with reproducible weights from `seed`; the adaLN layers and the output projection
/// start at zero (adaLN-Zero), so the untrained model predicts zero velocity.
pub fn init(cfg: &GeneratorConfig, seed: u64, device: &Device) -> FlowTransformer {
    let model = crate::fae::model::seeded_init(FlowTransformer::new(cfg, device), seed);
    crate::fae::model::zero_params(model, |path| {
        path.contains("adaln") || path.starts_with("final_layer.linear")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::config::GeneratorSize;

    #[test]
    fn xl_has_the_papers_parameter_count() {
        // Counted without allocating: a lazily initialised XL model reports its size.
        let cfg = GeneratorConfig::new(GeneratorSize::Xl, (16, 16), 32);
        let n = FlowTransformer::new(&cfg, &Device::flex()).num_params() as f64 / 1e6;
        assert!((n - 675.3).abs() / 675.3 < 0.02, "XL has {n:.1} M parameters");
    }

    #[test]
    fn patching_round_trips_and_untrained_model_predicts_zero() {
        let device = Device::flex();
        let mut cfg = GeneratorConfig::new(GeneratorSize::Tiny, (4, 6), 3);
        cfg.patch = 2;
        let model = init(&cfg, 1, &device);
        let x = Tensor::<3>::random([2, 24, 3], burn::tensor::Distribution::Default, &device);
        let back = model.unpatchify(model.patchify(x.clone()));
        assert_eq!(back.into_data(), x.clone().into_data());
        let v = model.forward(
            x,
            Tensor::from_floats([0.3, 0.9], &device),
            &[0, 0],
            &model.rope(&device),
        );
        assert_eq!(v.dims(), [2, 24, 3]);
        assert_eq!(v.abs().max().into_scalar::<f32>(), 0.0);
    }
}
