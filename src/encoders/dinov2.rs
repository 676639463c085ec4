//! DINOv2 (with and without registers), in the Hugging Face `Dinov2Model` layout.
//!
//! All four sizes: small, base and large use a GELU MLP (`mlp.fc1`, `mlp.fc2`), giant a SwiGLU MLP
//! (`mlp.weights_in`, `mlp.weights_out`). The position table, trained at 518 px (37 x 37), is resized
//! bicubically for other grids exactly as transformers does, once per grid size.

use std::collections::HashMap;
use std::sync::Mutex;

use super::cpu_fast::{LayerNorm, Then};
use anyhow::{Result, bail};
use burn::module::Param;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::interpolate::resize_bicubic;
use super::layers::{Activation, Mlp, MlpKind, PatchEmbed, SelfAttention, position_grid};
use super::{EncoderInfo, EncoderOutput, IMAGENET_MEAN, IMAGENET_STD, VisionEncoder};
use crate::weights::TensorReader;

/// The fields of a Hugging Face `Dinov2Config` (or `Dinov2WithRegistersConfig`) that matter here.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Dinov2Config {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
    #[serde(default = "default_patch")]
    pub patch_size: usize,
    #[serde(default = "default_image_size")]
    pub image_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub use_swiglu_ffn: bool,
    #[serde(default)]
    pub num_register_tokens: usize,
    #[serde(default = "default_true")]
    pub qkv_bias: bool,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_channels")]
    pub num_channels: usize,
}

fn default_mlp_ratio() -> f64 {
    4.0
}
fn default_patch() -> usize {
    14
}
fn default_image_size() -> usize {
    518
}
fn default_eps() -> f64 {
    1e-6
}
fn default_true() -> bool {
    true
}
fn default_act() -> String {
    "gelu".into()
}
fn default_channels() -> usize {
    3
}

impl Dinov2Config {
    /// The released sizes: small, base, large, giant.
    pub fn named(size: &str, registers: bool) -> Option<Self> {
        let (hidden, layers, heads) = match size {
            "small" | "s" => (384, 12, 6),
            "base" | "b" => (768, 12, 12),
            "large" | "l" => (1024, 24, 16),
            "giant" | "g" => (1536, 40, 24),
            _ => return None,
        };
        Some(Self {
            hidden_size: hidden,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            mlp_ratio: 4.0,
            patch_size: 14,
            image_size: 518,
            layer_norm_eps: 1e-6,
            use_swiglu_ffn: hidden == 1536,
            num_register_tokens: if registers { 4 } else { 0 },
            qkv_bias: true,
            hidden_act: "gelu".into(),
            num_channels: 3,
        })
    }

    /// Width of the MLP's hidden layer, as transformers computes it.
    pub fn mlp_hidden(&self) -> usize {
        // Saturating: a configuration from a file may hold any ratio (the shapes then differ).
        let hidden = (self.hidden_size as f64 * self.mlp_ratio) as usize;
        if self.use_swiglu_ffn {
            (hidden.saturating_mul(2) / 3).div_ceil(8).saturating_mul(8)
        } else {
            hidden
        }
    }

    fn position_grid(&self) -> usize {
        self.image_size / self.patch_size
    }
}

#[derive(Module, Debug)]
pub struct Dinov2Layer {
    pub norm1: LayerNorm,
    pub attention: SelfAttention,
    pub layer_scale1: Param<Tensor<1>>,
    pub norm2: LayerNorm,
    pub mlp: Mlp,
    pub layer_scale2: Param<Tensor<1>>,
}

impl Dinov2Layer {
    fn load(r: &TensorReader, i: usize, cfg: &Dinov2Config) -> Result<Self> {
        let d = cfg.hidden_size;
        let p = |s: &str| format!("encoder.layer.{i}.{s}");
        let eps = cfg.layer_norm_eps;
        let linear = |s: &str, d_in, d_out, bias| r.linear(&p(s), d_in, d_out, bias);
        let hidden = cfg.mlp_hidden();
        let mlp = if cfg.use_swiglu_ffn {
            Mlp {
                fc_in: linear("mlp.weights_in", d, 2 * hidden, true)?,
                fc_out: linear("mlp.weights_out", hidden, d, true)?,
                kind: MlpKind::SwiGlu,
                panels: Default::default(),
            }
        } else {
            Mlp {
                fc_in: linear("mlp.fc1", d, hidden, true)?,
                fc_out: linear("mlp.fc2", hidden, d, true)?,
                kind: MlpKind::Plain(Activation::from_hf(&cfg.hidden_act)?),
                panels: Default::default(),
            }
        };
        Ok(Self {
            norm1: LayerNorm::load(r, &p("norm1"), d, eps)?,
            attention: SelfAttention::load(
                r,
                [
                    "attention.attention.query",
                    "attention.attention.key",
                    "attention.attention.value",
                    "attention.output.dense",
                ]
                .map(p),
                d,
                cfg.num_attention_heads,
                cfg.qkv_bias,
            )?,
            layer_scale1: r.param(&p("layer_scale1.lambda1"), [d])?,
            norm2: LayerNorm::load(r, &p("norm2"), d, eps)?,
            mlp,
            layer_scale2: r.param(&p("layer_scale2.lambda1"), [d])?,
        })
    }

    /// `x + attention(norm1(x)) scale1`, then `x + mlp(norm2(x)) scale2`; the output projections
    /// add their bias, scale and residual in one pass on the CPU.
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let (scale1, scale2) = (self.layer_scale1.val(), self.layer_scale2.val());
        let context = self.attention.context(self.norm1.forward(x.clone()));
        let then = Then::ScaledResidual { scale: &scale1 };
        let x = self.attention.output_then(context, then, Some(x));
        let hidden = self.mlp.hidden(self.norm2.forward(x.clone()));
        self.mlp.output_then(hidden, Then::ScaledResidual { scale: &scale2 }, Some(x))
    }
}

/// The DINOv2 network itself: everything but the position table.
#[derive(Module, Debug)]
pub struct Dinov2Model {
    pub patch_embed: PatchEmbed,
    pub cls_token: Param<Tensor<3>>,
    pub register_tokens: Option<Param<Tensor<3>>>,
    pub layers: Vec<Dinov2Layer>,
    pub layernorm: LayerNorm,
}

/// A frozen DINOv2 encoder with its position-embedding cache.
pub struct Dinov2 {
    model: Dinov2Model,
    config: Dinov2Config,
    info: EncoderInfo,
    /// CLS position entry `[dim]` and the trained patch grid `[g, g, dim]`, kept on the CPU.
    cls_position: Vec<f32>,
    grid_positions: Vec<f32>,
    /// Resized position tables (CLS entry first) per (grid_h, grid_w).
    position_cache: Mutex<HashMap<(usize, usize), Tensor<3>>>,
    device: Device,
}

impl Dinov2 {
    pub fn load(r: &TensorReader, config: Dinov2Config, name: &str) -> Result<Self> {
        let d = config.hidden_size;
        let c = &config;
        let g =
            position_grid(r, d, c.num_attention_heads, c.patch_size, c.image_size, c.num_channels)?;
        if !d.is_multiple_of(config.num_attention_heads) {
            bail!("hidden size {d} is not divisible by {} heads", config.num_attention_heads);
        }
        let positions = r.values("embeddings.position_embeddings", &[1, 1 + g * g, d])?;
        let registers = match config.num_register_tokens {
            0 => None,
            n => Some(r.param("embeddings.register_tokens", [1, n, d])?),
        };
        let model = Dinov2Model {
            patch_embed: PatchEmbed::load(
                r,
                "embeddings.patch_embeddings.projection",
                config.num_channels,
                d,
                config.patch_size,
            )?,
            cls_token: r.param("embeddings.cls_token", [1, 1, d])?,
            register_tokens: registers,
            layers: (0..config.num_hidden_layers)
                .map(|i| Dinov2Layer::load(r, i, &config))
                .collect::<Result<_>>()?,
            layernorm: LayerNorm::load(r, "layernorm", d, config.layer_norm_eps)?,
        }
        // Frozen: gradients flow through the encoder (the perceptual loss) but never into it.
        .no_grad();
        r.finish(&["embeddings.mask_token"])?;
        let info = EncoderInfo {
            name: name.to_string(),
            family: "dinov2".into(),
            dim: d,
            patch_size: config.patch_size,
            default_size: 224,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            has_cls: true,
            num_registers: config.num_register_tokens,
        };
        Ok(Self {
            model,
            info,
            cls_position: positions[..d].to_vec(),
            grid_positions: positions[d..].to_vec(),
            config,
            position_cache: Mutex::new(HashMap::new()),
            device: r.device().clone(),
        })
    }

    pub fn config(&self) -> &Dinov2Config {
        &self.config
    }

    /// Position table for a grid: `[1, 1 + gh * gw, dim]`, computed once per grid size.
    fn positions(&self, gh: usize, gw: usize) -> Tensor<3> {
        let mut cache = self.position_cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry((gh, gw))
            .or_insert_with(|| {
                let d = self.config.hidden_size;
                let g = self.config.position_grid();
                // transformers skips interpolation when the grid is the trained square one.
                let antialias = self.config.num_register_tokens > 0;
                let mut table = self.cls_position.clone();
                table.extend(resize_bicubic(&self.grid_positions, (g, g), (gh, gw), d, antialias));
                Tensor::from_data(TensorData::new(table, [1, 1 + gh * gw, d]), &self.device)
            })
            .clone()
    }
}

impl VisionEncoder for Dinov2 {
    fn info(&self) -> &EncoderInfo {
        &self.info
    }

    fn num_params(&self) -> usize {
        self.model.num_params() + self.cls_position.len() + self.grid_positions.len()
    }

    fn forward(&self, pixels: Tensor<4>) -> EncoderOutput {
        let [b, _, h, w] = pixels.dims();
        let p = self.config.patch_size;
        let (gh, gw) = (h / p, w / p);
        let d = self.config.hidden_size;
        let m = &self.model;
        let patches = m.patch_embed.forward(pixels);
        let cls = m.cls_token.val().expand([b, 1, d]);
        let mut x = Tensor::cat(vec![cls, patches], 1) + self.positions(gh, gw);
        let registers = m.register_tokens.as_ref().map(|r| r.val()).map(|r| {
            let n = r.dims()[1];
            r.expand([b, n, d])
        });
        let r = self.config.num_register_tokens;
        if let Some(registers) = registers {
            let cls = x.clone().narrow(1, 0, 1);
            let rest = x.narrow(1, 1, gh * gw);
            x = Tensor::cat(vec![cls, registers, rest], 1);
        }
        for layer in &m.layers {
            x = layer.forward(x);
        }
        let x = m.layernorm.forward(x);
        EncoderOutput {
            cls: Some(x.clone().narrow(1, 0, 1).reshape([b, d])),
            registers: (r > 0).then(|| x.clone().narrow(1, 1, r)),
            patch_tokens: x.narrow(1, 1 + r, gh * gw).reshape([b, gh, gw, d]),
        }
    }
}
