//! The FAE networks: the one-attention-layer encoder, the feature decoder and the pixel decoder.

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{
    LayerNorm, LayerNormConfig, Linear, LinearConfig, PaddingConfig2d, RmsNorm, RmsNormConfig,
};
use burn::prelude::*;
use burn::tensor::activation::silu;
use burn::tensor::module::{attention, interpolate};
use burn::tensor::ops::{AttentionModuleOptions, InterpolateMode, InterpolateOptions};

use super::config::{FaeConfig, PixelHead};
use crate::encoders::cpu_fast::{self, linear};
use crate::encoders::cpu_grad;
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

    /// Rotates `[B, heads, tokens, head_dim]`: under autodiff on the CPU as one fused node.
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        cpu_grad::rope(x.clone(), &self.cos, &self.sin).unwrap_or_else(|| self.apply_with_burn(x))
    }

    /// The cosine and sine tables, `[1, 1, tokens, head_dim]`.
    #[cfg(test)]
    pub(crate) fn tables(&self) -> (&Tensor<4>, &Tensor<4>) {
        (&self.cos, &self.sin)
    }

    /// [`Self::apply`] through burn's operations.
    pub(crate) fn apply_with_burn(&self, x: Tensor<4>) -> Tensor<4> {
        let hd = x.dims()[3];
        let (section, half) = (hd / 2, hd / 4);
        let part = |start: usize| x.clone().narrow(3, start, half);
        let rotated =
            Tensor::cat(vec![-part(half), part(0), -part(section + half), part(section)], 3);
        x * self.cos.clone() + rotated * self.sin.clone()
    }
}

/// GELU: under autodiff on the CPU the fused operation with its own backward pass, elsewhere
/// burn's.
fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    cpu_grad::gelu(x.clone()).unwrap_or_else(|| burn::tensor::activation::gelu(x))
}

/// RMS norm: under autodiff on the CPU the fused operation with its own backward pass,
/// elsewhere burn's.
pub fn rms_norm<const D: usize>(norm: &RmsNorm, x: Tensor<D>) -> Tensor<D> {
    cpu_grad::rms_norm(x.clone(), norm.gamma.val(), norm.epsilon).unwrap_or_else(|| norm.forward(x))
}

/// The encoder's layer norm epsilon (PyTorch's default), spelled out for the fused path: burn's
/// `LayerNorm` keeps its own private.
const ENCODER_NORM_EPS: f64 = 1e-5;

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
        let qkv = linear(x, &self.qkv)
            .reshape([b, t, 3, self.heads, self.head_dim])
            .permute([2, 0, 3, 1, 4]);
        let take =
            |i: usize| qkv.clone().narrow(0, i, 1).reshape([b, self.heads, t, self.head_dim]);
        let (mut q, mut k, v) = (take(0), take(1), take(2));
        if let Some(rope) = rope {
            q = rope.apply(q);
            k = rope.apply(k);
        }
        let context = match cpu_grad::attention_split(q.clone(), k.clone(), v.clone()) {
            Some(context) => context,
            None => attention(q, k, v, None, None, AttentionModuleOptions::default())
                .swap_dims(1, 2)
                .reshape([b, t, inner]),
        };
        linear(context, &self.out)
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
        let h = linear(x, &self.gate_up);
        let hidden = cpu_grad::swiglu(h.clone()).unwrap_or_else(|| {
            let half = h.dims()[2] / 2;
            silu(h.clone().narrow(2, 0, half)) * h.narrow(2, half, half)
        });
        linear(hidden, &self.down)
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
        let x = x.clone() + self.attn.forward(rms_norm(&self.norm1, x), Some(rope));
        x.clone() + self.mlp.forward(rms_norm(&self.norm2, x))
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
            norm: LayerNormConfig::new(cfg.encoder_dim).with_epsilon(ENCODER_NORM_EPS).init(device),
            attn: Attention::new(cfg.encoder_dim, cfg.enc_heads, cfg.enc_head_dim, device),
            to_latent: LinearConfig::new(cfg.encoder_dim, 2 * cfg.latent_channels).init(device),
        }
    }

    /// Features `[B, T, D]` to latent mean and log-variance, each `[B, T, C]`.
    pub fn forward(&self, features: Tensor<3>) -> (Tensor<3>, Tensor<3>) {
        let (gamma, beta) = (self.norm.gamma.val(), self.norm.beta.as_ref().map(|b| b.val()));
        let normed = beta
            .and_then(|beta| cpu_grad::layer_norm(features.clone(), gamma, beta, ENCODER_NORM_EPS))
            .unwrap_or_else(|| self.norm.forward(features.clone()));
        let x = features + self.attn.forward(normed, None);
        let stats = linear(gelu(x), &self.to_latent);
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
        let mut x = linear(latent, &self.input);
        let heads = self.blocks.first().map_or(1, |b| b.attn.heads);
        let rope = Rope2d::new(grid.0, grid.1, x.dims()[2] / heads, self.rope_base, &x.device());
        for block in &self.blocks {
            x = block.forward(x, &rope);
        }
        linear(rms_norm(&self.norm, x), &self.output)
    }
}

/// Tokens `[B, gh * gw, C * r * r]` to the map `[B, C, gh * r, gw * r]`: token (y, x) fills the
/// r x r square at (y * r, x * r), its values ordered (channel, row, column) as PyTorch's
/// `pixel_shuffle` orders them.
pub fn pixel_shuffle(tokens: Tensor<3>, grid: (usize, usize), r: usize) -> Tensor<4> {
    let [b, _, d] = tokens.dims();
    let (gh, gw) = grid;
    let c = d / (r * r);
    tokens.reshape([b, gh, gw, c, r, r]).permute([0, 3, 1, 4, 2, 5]).reshape([b, c, gh * r, gw * r])
}

/// `conv.forward(x)` through the CPU's banded products (with their own backward pass under
/// autodiff) where they apply; burn's convolution elsewhere.
fn conv_forward(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    cpu_grad::conv3x3(conv, x.clone())
        .or_else(|| cpu_fast::conv3x3(conv, x.clone()))
        .unwrap_or_else(|| conv.forward(x))
}

/// A 3x3 convolution that keeps the size.
fn conv3x3(input: usize, output: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([input, output], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

/// The conv head ([`PixelHead::Conv`]): tokens to a coarse half-resolution map, then
/// convolutions that see across patch borders, so no patch grid is left.
#[derive(Module, Debug)]
pub struct ConvHead {
    pub to_coarse: Linear,
    pub stem: Conv2d,
    pub blocks: Vec<Conv2d>,
    pub to_rgb: Conv2d,
}

impl ConvHead {
    pub fn new(
        width: usize,
        patch: usize,
        (coarse, channels, blocks): (usize, usize, usize),
        device: &Device,
    ) -> Self {
        let s = patch / 2;
        Self {
            to_coarse: LinearConfig::new(width, coarse * s * s).init(device),
            stem: conv3x3(coarse, channels, device),
            blocks: (0..blocks).map(|_| conv3x3(channels, channels, device)).collect(),
            to_rgb: conv3x3(channels, 3, device),
        }
    }

    /// Tokens `[B, gh * gw, width]` to RGB `[B, 3, gh * p, gw * p]` around 0.
    pub fn forward(&self, tokens: Tensor<3>, grid: (usize, usize), patch: usize) -> Tensor<4> {
        let map = pixel_shuffle(linear(tokens, &self.to_coarse), grid, patch / 2);
        let x = gelu(conv_forward(&self.stem, map));
        let [_, _, h, w] = x.dims();
        let nearest = InterpolateOptions::new(InterpolateMode::Nearest);
        let mut x = interpolate(x, nearest.with_output_size([2 * h, 2 * w]));
        for conv in &self.blocks {
            x = x.clone() + gelu(conv_forward(conv, x));
        }
        conv_forward(&self.to_rgb, x)
    }

    /// This head with `blocks` residual blocks, its own first: the added ones start with zero
    /// weights and biases, so each adds gelu(0) = 0 and the head paints exactly what it did
    /// until training grows them (their gradient is not zero: gelu'(0) = 1/2).
    pub fn grown_to(mut self, blocks: usize, device: &Device) -> Self {
        let channels = self.stem.weight.dims()[0];
        while self.blocks.len() < blocks {
            self.blocks.push(zero_params(conv3x3(channels, channels, device), |_| true));
        }
        self
    }
}

/// Turns features into an image: a ViT over the tokens, then the configured head paints each
/// token's `pix_patch` square (the linear head alone, the conv head across patch borders).
#[derive(Module, Debug)]
pub struct PixelDecoder {
    pub input: Linear,
    pub blocks: Vec<Block>,
    pub norm: RmsNorm,
    /// The linear head; `None` with the conv head.
    pub to_pixels: Option<Linear>,
    /// The conv head; `None` with the linear head.
    pub conv_head: Option<ConvHead>,
    #[module(skip)]
    pub patch: usize,
    #[module(skip)]
    pub rope_base: f64,
}

impl PixelDecoder {
    pub fn new(cfg: &FaeConfig, device: &Device) -> Self {
        let w = cfg.pix_width;
        let (to_pixels, conv_head) = Self::heads(cfg, device);
        Self {
            input: LinearConfig::new(cfg.encoder_dim, w).init(device),
            blocks: (0..cfg.pix_depth)
                .map(|_| Block::new(w, cfg.pix_heads, cfg.pix_mlp_ratio, device))
                .collect(),
            norm: RmsNormConfig::new(w).with_epsilon(1e-6).init(device),
            to_pixels,
            conv_head,
            patch: cfg.pix_patch,
            rope_base: cfg.rope_base,
        }
    }

    /// The head `cfg.pix_head` asks for, as (linear, conv): exactly one is present.
    pub fn heads(cfg: &FaeConfig, device: &Device) -> (Option<Linear>, Option<ConvHead>) {
        let (w, p) = (cfg.pix_width, cfg.pix_patch);
        match cfg.pix_head {
            PixelHead::Linear => (Some(LinearConfig::new(w, 3 * p * p).init(device)), None),
            PixelHead::Conv { coarse, channels, blocks } => {
                (None, Some(ConvHead::new(w, p, (coarse, channels, blocks), device)))
            }
        }
    }

    /// Features `[B, gh * gw, D]` to RGB `[B, 3, gh * p, gw * p]` in [0, 1] (not clamped).
    pub fn forward(&self, features: Tensor<3>, grid: (usize, usize)) -> Tensor<4> {
        let (gh, gw) = grid;
        let mut x = linear(features, &self.input);
        let heads = self.blocks.first().map_or(1, |b| b.attn.heads);
        let rope = Rope2d::new(gh, gw, x.dims()[2] / heads, self.rope_base, &x.device());
        for block in &self.blocks {
            x = block.forward(x, &rope);
        }
        let tokens = rms_norm(&self.norm, x);
        let image = match (&self.to_pixels, &self.conv_head) {
            (Some(layer), _) => pixel_shuffle(linear(tokens, layer), grid, self.patch),
            (None, Some(conv)) => conv.forward(tokens, grid, self.patch),
            (None, None) => unreachable!("a pixel decoder is built with one head"),
        };
        image + 0.5
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

    /// This model with a fresh head of kind `cfg.pix_head` (seeded from `seed`) on its pixel
    /// decoder; the encoder, the feature decoder and the pixel decoder's ViT keep their weights.
    pub fn with_new_pixel_head(mut self, cfg: &FaeConfig, seed: u64, device: &Device) -> Self {
        let (linear, conv) = PixelDecoder::heads(cfg, device);
        self.pixel_decoder.to_pixels = seeded_init(linear, seed);
        self.pixel_decoder.conv_head = seeded_init(conv, seed);
        self
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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::optim::{AdamWConfig, GradientsParams};
    use burn::tensor::Distribution;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_into_vec_as::<f32>().unwrap()
    }

    #[test]
    fn pixel_shuffle_fills_each_tokens_square() {
        let device = crate::backend::cpu().device;
        // Two tokens side by side, one channel, 2x2 squares.
        let tokens = Tensor::<1>::from_data(
            TensorData::new((0..8).map(|v| v as f32).collect::<Vec<_>>(), [8]),
            &device,
        )
        .reshape([1, 2, 4]);
        let map = pixel_shuffle(tokens, (1, 2), 2);
        assert_eq!(map.dims(), [1, 1, 2, 4]);
        assert_eq!(values(map), [0., 1., 4., 5., 2., 3., 6., 7.]);
        // One token, two channels: channel first, then row, then column.
        let tokens = Tensor::<1>::from_data(
            TensorData::new((0..8).map(|v| v as f32).collect::<Vec<_>>(), [8]),
            &device,
        )
        .reshape([1, 1, 8]);
        let map = pixel_shuffle(tokens, (1, 1), 2);
        assert_eq!(map.dims(), [1, 2, 2, 2]);
        assert_eq!(values(map), [0., 1., 2., 3., 4., 5., 6., 7.]);
    }

    fn tiny_conv_config() -> FaeConfig {
        let mut cfg = FaeConfig::small("x", 16, 14, 28);
        (cfg.pix_width, cfg.pix_heads, cfg.pix_depth) = (16, 2, 1);
        cfg.pix_head = PixelHead::Conv { coarse: 4, channels: 8, blocks: 2 };
        cfg
    }

    #[test]
    fn the_conv_head_paints_non_square_grids_at_full_size() {
        let device = crate::backend::cpu().device;
        let cfg = tiny_conv_config();
        let decoder = PixelDecoder::new(&cfg, &device);
        assert!(decoder.to_pixels.is_none() && decoder.conv_head.is_some());
        let features = Tensor::<3>::random([2, 3 * 5, 16], Distribution::Normal(0.0, 1.0), &device);
        assert_eq!(decoder.forward(features, (3, 5)).dims(), [2, 3, 42, 70]);
        let mut cfg16 = cfg.clone();
        cfg16.pix_patch = 16;
        let features = Tensor::<3>::random([1, 2 * 3, 16], Distribution::Normal(0.0, 1.0), &device);
        assert_eq!(
            PixelDecoder::new(&cfg16, &device).forward(features, (2, 3)).dims(),
            [1, 3, 32, 48]
        );
    }

    /// A head grown to more blocks paints exactly the picture it painted, keeps its own blocks
    /// first, and the added blocks learn from the first step.
    #[test]
    fn a_grown_conv_head_starts_where_it_was_and_its_new_blocks_learn() {
        let device = crate::backend::cpu().device.autodiff();
        let mut decoder = seeded_init(PixelDecoder::new(&tiny_conv_config(), &device), 5);
        let features = Tensor::<3>::random([2, 6, 16], Distribution::Normal(0.0, 1.0), &device);
        let before = values(decoder.forward(features.clone(), (2, 3)));
        let own = values(decoder.conv_head.as_ref().unwrap().blocks[1].weight.val());
        let head = decoder.conv_head.take().unwrap().grown_to(4, &device);
        decoder.conv_head = Some(head);
        let blocks = |d: &PixelDecoder| {
            d.conv_head.as_ref().unwrap().blocks.iter().map(|c| values(c.weight.val())).collect()
        };
        let grown: Vec<Vec<f32>> = blocks(&decoder);
        assert_eq!(grown.len(), 4);
        assert_eq!(grown[1], own, "its own blocks come first, unchanged");
        assert!(grown[2..].iter().flatten().all(|&w| w == 0.0));
        assert_eq!(values(decoder.forward(features.clone(), (2, 3))), before);

        let target = Tensor::<4>::random([2, 3, 28, 42], Distribution::Uniform(0.0, 1.0), &device);
        let loss = (decoder.forward(features, (2, 3)) - target).abs().mean();
        let grads = GradientsParams::from_grads(loss.backward(), &decoder);
        let decoder = AdamWConfig::new().init().step(1e-3, decoder, grads);
        for block in &blocks(&decoder)[2..] {
            assert!(block.iter().any(|&w| w != 0.0), "an added block did not learn");
        }
    }

    /// Every layer of the conv head learns, and a few steps lower the L1 loss on a fixed batch.
    #[test]
    fn the_conv_head_trains() {
        let device = crate::backend::cpu().device.autodiff();
        let cfg = tiny_conv_config();
        let mut decoder = seeded_init(PixelDecoder::new(&cfg, &device), 3);
        let features = Tensor::<3>::random([2, 4, 16], Distribution::Normal(0.0, 1.0), &device);
        let target = Tensor::<4>::random([2, 3, 28, 28], Distribution::Uniform(0.0, 1.0), &device);
        let head = |d: &PixelDecoder| {
            let h = d.conv_head.as_ref().unwrap();
            let weights = [&h.stem, &h.blocks[1], &h.to_rgb].map(|c| values(c.weight.val()));
            (values(h.to_coarse.weight.val()), weights)
        };
        let before = head(&decoder);
        let mut optimizer = AdamWConfig::new().init();
        let mut losses = Vec::new();
        for _ in 0..30 {
            let loss = (decoder.forward(features.clone(), (2, 2)) - target.clone()).abs().mean();
            losses.push(loss.clone().into_scalar::<f32>());
            let grads = GradientsParams::from_grads(loss.backward(), &decoder);
            decoder = optimizer.step(3e-3, decoder, grads);
        }
        eprintln!("L1 {:.4} -> {:.4}", losses[0], losses[29]);
        assert!(losses[29] < 0.9 * losses[0], "{losses:?}");
        let after = head(&decoder);
        assert_ne!(before.0, after.0, "the coarse linear layer did not learn");
        for (b, a) in before.1.iter().zip(&after.1) {
            assert_ne!(b, a, "a convolution did not learn");
        }
    }
}
