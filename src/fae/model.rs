//! The FAE networks: the one-attention-layer encoder, the feature decoder and the pixel decoder.

use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::prelude::*;
use burn::tensor::activation::{gelu, silu};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use super::config::FaeConfig;
use crate::param_paths::{self, PathMapper};

/// 2-D rotary position tables for a token grid: half of each head's dimensions rotate with the
/// row, the other half with the column, so decoders work at any grid size.
#[derive(Clone, Debug)]
pub struct Rope2d {
    cos: Tensor<4>,
    sin: Tensor<4>,
}

impl Rope2d {
    pub fn new(grid_h: usize, grid_w: usize, head_dim: usize, base: f64, device: &Device) -> Self {
        let section = head_dim / 2;
        let half = section / 2;
        let tokens = grid_h * grid_w;
        let mut cos = vec![0f32; tokens * head_dim];
        let mut sin = vec![0f32; tokens * head_dim];
        for y in 0..grid_h {
            for x in 0..grid_w {
                let t = y * grid_w + x;
                for (axis, pos) in [(0, y), (1, x)] {
                    for i in 0..half {
                        let freq = base.powf(-(i as f64) / half as f64);
                        let angle = pos as f64 * freq;
                        for offset in [i, i + half] {
                            let k = t * head_dim + axis * section + offset;
                            cos[k] = angle.cos() as f32;
                            sin[k] = angle.sin() as f32;
                        }
                    }
                }
            }
        }
        let shape = [1, 1, tokens, head_dim];
        Self {
            cos: Tensor::from_data(TensorData::new(cos, shape), device),
            sin: Tensor::from_data(TensorData::new(sin, shape), device),
        }
    }

    /// Rotates `[B, heads, tokens, head_dim]`.
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let hd = x.dims()[3];
        let (section, half) = (hd / 2, hd / 4);
        let part = |start: usize| x.clone().narrow(3, start, half);
        let rotated =
            Tensor::cat(vec![-part(half), part(0), -part(section + half), part(section)], 3);
        x * self.cos.clone() + rotated * self.sin.clone()
    }
}

/// Multi-head self-attention whose inner width may differ from the model width.
#[derive(Module, Debug)]
pub struct Attention {
    pub qkv: Linear,
    pub out: Linear,
    #[module(skip)]
    pub heads: usize,
    #[module(skip)]
    pub head_dim: usize,
}

impl Attention {
    pub fn new(dim: usize, heads: usize, head_dim: usize, device: &Device) -> Self {
        let inner = heads * head_dim;
        Self {
            qkv: LinearConfig::new(dim, 3 * inner).init(device),
            out: LinearConfig::new(inner, dim).init(device),
            heads,
            head_dim,
        }
    }

    pub fn forward(&self, x: Tensor<3>, rope: Option<&Rope2d>) -> Tensor<3> {
        let [b, t, _] = x.dims();
        let inner = self.heads * self.head_dim;
        let qkv = self
            .qkv
            .forward(x)
            .reshape([b, t, 3, self.heads, self.head_dim])
            .permute([2, 0, 3, 1, 4]);
        let take =
            |i: usize| qkv.clone().narrow(0, i, 1).reshape([b, self.heads, t, self.head_dim]);
        let (mut q, mut k, v) = (take(0), take(1), take(2));
        if let Some(rope) = rope {
            q = rope.apply(q);
            k = rope.apply(k);
        }
        let context = attention(q, k, v, None, None, AttentionModuleOptions::default());
        self.out.forward(context.swap_dims(1, 2).reshape([b, t, inner]))
    }
}

/// SwiGLU feed-forward; the hidden width is 2/3 of `ratio * dim` (rounded up to 8), which keeps
/// the parameter count of a plain MLP of the same ratio.
#[derive(Module, Debug)]
pub struct SwiGlu {
    pub gate_up: Linear,
    pub down: Linear,
}

impl SwiGlu {
    pub fn hidden(dim: usize, ratio: f64) -> usize {
        ((dim as f64 * ratio * 2.0 / 3.0).ceil() as usize).div_ceil(8) * 8
    }

    pub fn new(dim: usize, ratio: f64, device: &Device) -> Self {
        let hidden = Self::hidden(dim, ratio);
        Self {
            gate_up: LinearConfig::new(dim, 2 * hidden).init(device),
            down: LinearConfig::new(hidden, dim).init(device),
        }
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let h = self.gate_up.forward(x);
        let half = h.dims()[2] / 2;
        let gate = h.clone().narrow(2, 0, half);
        let up = h.narrow(2, half, half);
        self.down.forward(silu(gate) * up)
    }
}

/// Pre-norm transformer block: RMSNorm, RoPE attention, RMSNorm, SwiGLU.
#[derive(Module, Debug)]
pub struct Block {
    pub norm1: RmsNorm,
    pub attn: Attention,
    pub norm2: RmsNorm,
    pub mlp: SwiGlu,
}

impl Block {
    pub fn new(dim: usize, heads: usize, mlp_ratio: f64, device: &Device) -> Self {
        Self {
            norm1: RmsNormConfig::new(dim).with_epsilon(1e-6).init(device),
            attn: Attention::new(dim, heads, dim / heads, device),
            norm2: RmsNormConfig::new(dim).with_epsilon(1e-6).init(device),
            mlp: SwiGlu::new(dim, mlp_ratio, device),
        }
    }

    pub fn forward(&self, x: Tensor<3>, rope: &Rope2d) -> Tensor<3> {
        let x = x.clone() + self.attn.forward(self.norm1.forward(x), Some(rope));
        x.clone() + self.mlp.forward(self.norm2.forward(x))
    }
}

/// The FAE encoder: exactly one self-attention layer over the encoder's tokens, residual,
/// activation, then a linear map to the latent's mean and log-variance.
#[derive(Module, Debug)]
pub struct FaeEncoder {
    pub norm: LayerNorm,
    pub attn: Attention,
    pub to_latent: Linear,
}

impl FaeEncoder {
    pub fn new(cfg: &FaeConfig, device: &Device) -> Self {
        Self {
            norm: LayerNormConfig::new(cfg.encoder_dim).init(device),
            attn: Attention::new(cfg.encoder_dim, cfg.enc_heads, cfg.enc_head_dim, device),
            to_latent: LinearConfig::new(cfg.encoder_dim, 2 * cfg.latent_channels).init(device),
        }
    }

    /// Features `[B, T, D]` to latent mean and log-variance, each `[B, T, C]`.
    pub fn forward(&self, features: Tensor<3>) -> (Tensor<3>, Tensor<3>) {
        let x = features.clone() + self.attn.forward(self.norm.forward(features), None);
        let stats = self.to_latent.forward(gelu(x));
        let c = stats.dims()[2] / 2;
        let mean = stats.clone().narrow(2, 0, c);
        let log_var = stats.narrow(2, c, c).clamp(-30.0, 20.0);
        (mean, log_var)
    }
}

/// Restores encoder features from the latent.
#[derive(Module, Debug)]
pub struct FeatureDecoder {
    pub input: Linear,
    pub blocks: Vec<Block>,
    pub norm: RmsNorm,
    pub output: Linear,
    #[module(skip)]
    pub rope_base: f64,
}

impl FeatureDecoder {
    pub fn new(cfg: &FaeConfig, device: &Device) -> Self {
        let w = cfg.dec_width;
        Self {
            input: LinearConfig::new(cfg.latent_channels, w).init(device),
            blocks: (0..cfg.dec_depth)
                .map(|_| Block::new(w, cfg.dec_heads, cfg.dec_mlp_ratio, device))
                .collect(),
            norm: RmsNormConfig::new(w).with_epsilon(1e-6).init(device),
            output: LinearConfig::new(w, cfg.encoder_dim).init(device),
            rope_base: cfg.rope_base,
        }
    }

    /// Latent `[B, gh * gw, C]` to features `[B, gh * gw, D]`.
    pub fn forward(&self, latent: Tensor<3>, grid: (usize, usize)) -> Tensor<3> {
        let mut x = self.input.forward(latent);
        let heads = self.blocks.first().map_or(1, |b| b.attn.heads);
        let rope = Rope2d::new(grid.0, grid.1, x.dims()[2] / heads, self.rope_base, &x.device());
        for block in &self.blocks {
            x = block.forward(x, &rope);
        }
        self.output.forward(self.norm.forward(x))
    }
}

/// Turns features into an image: each token becomes a `pix_patch` square of pixels.
#[derive(Module, Debug)]
pub struct PixelDecoder {
    pub input: Linear,
    pub blocks: Vec<Block>,
    pub norm: RmsNorm,
    pub to_pixels: Linear,
    #[module(skip)]
    pub patch: usize,
    #[module(skip)]
    pub rope_base: f64,
}

impl PixelDecoder {
    pub fn new(cfg: &FaeConfig, device: &Device) -> Self {
        let w = cfg.pix_width;
        Self {
            input: LinearConfig::new(cfg.encoder_dim, w).init(device),
            blocks: (0..cfg.pix_depth)
                .map(|_| Block::new(w, cfg.pix_heads, cfg.pix_mlp_ratio, device))
                .collect(),
            norm: RmsNormConfig::new(w).with_epsilon(1e-6).init(device),
            to_pixels: LinearConfig::new(w, 3 * cfg.pix_patch * cfg.pix_patch).init(device),
            patch: cfg.pix_patch,
            rope_base: cfg.rope_base,
        }
    }

    /// Features `[B, gh * gw, D]` to RGB `[B, 3, gh * p, gw * p]` in [0, 1] (not clamped).
    pub fn forward(&self, features: Tensor<3>, grid: (usize, usize)) -> Tensor<4> {
        let [b, _, _] = features.dims();
        let (gh, gw) = grid;
        let p = self.patch;
        let mut x = self.input.forward(features);
        let heads = self.blocks.first().map_or(1, |b| b.attn.heads);
        let rope = Rope2d::new(gh, gw, x.dims()[2] / heads, self.rope_base, &x.device());
        for block in &self.blocks {
            x = block.forward(x, &rope);
        }
        let patches = self.to_pixels.forward(self.norm.forward(x));
        patches.reshape([b, gh, gw, 3, p, p]).permute([0, 3, 1, 4, 2, 5]).reshape([
            b,
            3,
            gh * p,
            gw * p,
        ]) + 0.5
    }
}

/// The three trainable parts together.
#[derive(Module, Debug)]
pub struct FaeModel {
    pub encoder: FaeEncoder,
    pub feature_decoder: FeatureDecoder,
    pub pixel_decoder: PixelDecoder,
}

impl FaeModel {
    pub fn new(cfg: &FaeConfig, device: &Device) -> Self {
        Self {
            encoder: FaeEncoder::new(cfg, device),
            feature_decoder: FeatureDecoder::new(cfg, device),
            pixel_decoder: PixelDecoder::new(cfg, device),
        }
    }
}

/// Re-initialises every linear layer (of any module) from `seed` alone (uniform in ±1/sqrt(fan_in), zero biases;
/// norms keep their ones), so a run is reproducible whatever else uses the backend's generator.
pub fn seeded_init<M: Module>(model: M, seed: u64) -> M {
    struct Init(u64);
    impl PathMapper for Init {
        fn map<const D: usize>(&mut self, path: &str, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            // Linear weights are [in, out]; convolution weights [out, in, kh, kw].
            let is_weight = path.ends_with(".weight") && (D == 2 || D == 4);
            let is_bias = path.ends_with(".bias");
            if !is_weight && !is_bias {
                return param;
            }
            let stream = path.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
            });
            let seed = self.0;
            param.map(|t| {
                let dims = t.dims();
                let require_grad = t.is_require_grad();
                let n: usize = dims.iter().product();
                let values = if is_weight {
                    let fan_in = if D == 2 { dims[0] } else { dims[1..].iter().product() };
                    let bound = 1.0 / (fan_in as f64).sqrt();
                    let mut rng = crate::rng::Rng::derive(seed, 0, stream);
                    (0..n).map(|_| ((rng.uniform() * 2.0 - 1.0) * bound) as f32).collect()
                } else {
                    vec![0.0; n]
                };
                Tensor::<1>::from_data(TensorData::new(values, [n]), &t.device())
                    .reshape(dims)
                    .set_require_grad(require_grad)
            })
        }
    }
    param_paths::map(model, Init(seed)).0
}

/// Sets to zero every float parameter whose module path satisfies `select`.
pub fn zero_params<M: Module>(model: M, select: impl Fn(&str) -> bool) -> M {
    struct Zero<F>(F);
    impl<F: Fn(&str) -> bool> PathMapper for Zero<F> {
        fn map<const D: usize>(&mut self, path: &str, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            if !(self.0)(path) {
                return param;
            }
            param.map(|t| {
                let require_grad = t.is_require_grad();
                t.zeros_like().set_require_grad(require_grad)
            })
        }
    }
    param_paths::map(model, Zero(select)).0
}
