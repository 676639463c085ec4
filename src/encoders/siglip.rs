//! SigLIP / SigLIP2 fixed-resolution vision towers, in the Hugging Face `SiglipVisionModel` layout.
//!
//! Patch 16, learned position embeddings, no CLS token. The attention-pooling head (`head.*`) is
//! not needed for token grids and is skipped. Other input sizes resize the position grid bicubically,
//! as transformers does with `interpolate_pos_encoding=True`.

use std::collections::HashMap;
use std::sync::Mutex;

use super::cpu_fast::LayerNorm;
use anyhow::{Result, bail};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::interpolate::resize_bicubic;
use super::layers::{Activation, Mlp, MlpKind, PatchEmbed, SelfAttention, position_grid};
use super::{EncoderInfo, EncoderOutput, SIGLIP_MEAN, SIGLIP_STD, VisionEncoder};
use crate::weights::TensorReader;

/// The fields of a Hugging Face `SiglipVisionConfig` that matter here.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SiglipConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default = "default_patch")]
    pub patch_size: usize,
    #[serde(default = "default_image_size")]
    pub image_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_channels")]
    pub num_channels: usize,
}

fn default_patch() -> usize {
    16
}
fn default_image_size() -> usize {
    224
}
fn default_eps() -> f64 {
    1e-6
}
fn default_act() -> String {
    "gelu_pytorch_tanh".into()
}
fn default_channels() -> usize {
    3
}

impl SiglipConfig {
    fn position_grid(&self) -> usize {
        self.image_size / self.patch_size
    }
}

#[derive(Module, Debug)]
pub struct SiglipLayer {
    pub layer_norm1: LayerNorm,
    pub self_attn: SelfAttention,
    pub layer_norm2: LayerNorm,
    pub mlp: Mlp,
}

impl SiglipLayer {
    fn load(r: &TensorReader, i: usize, cfg: &SiglipConfig) -> Result<Self> {
        let d = cfg.hidden_size;
        let p = |s: &str| format!("encoder.layers.{i}.{s}");
        let linear = |s: &str, d_in, d_out| r.linear(&p(s), d_in, d_out, true);
        Ok(Self {
            layer_norm1: LayerNorm::load(r, &p("layer_norm1"), d, cfg.layer_norm_eps)?,
            self_attn: SelfAttention::load(
                r,
                ["q_proj", "k_proj", "v_proj", "out_proj"].map(|s| p(&format!("self_attn.{s}"))),
                d,
                cfg.num_attention_heads,
                true,
            )?,
            layer_norm2: LayerNorm::load(r, &p("layer_norm2"), d, cfg.layer_norm_eps)?,
            mlp: Mlp {
                fc_in: linear("mlp.fc1", d, cfg.intermediate_size)?,
                fc_out: linear("mlp.fc2", cfg.intermediate_size, d)?,
                kind: MlpKind::Plain(Activation::from_hf(&cfg.hidden_act)?),
                panels: Default::default(),
            },
        })
    }

    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let x = x.clone() + self.self_attn.forward(self.layer_norm1.forward(x));
        x.clone() + self.mlp.forward(self.layer_norm2.forward(x))
    }
}

#[derive(Module, Debug)]
pub struct SiglipModel {
    pub patch_embedding: PatchEmbed,
    pub layers: Vec<SiglipLayer>,
    pub post_layernorm: LayerNorm,
}

/// A frozen SigLIP vision tower with its position-embedding cache.
pub struct Siglip {
    model: SiglipModel,
    config: SiglipConfig,
    info: EncoderInfo,
    /// The trained position grid `[g, g, dim]`, kept on the CPU.
    grid_positions: Vec<f32>,
    position_cache: Mutex<HashMap<(usize, usize), Tensor<3>>>,
    device: Device,
}

impl Siglip {
    pub fn load(r: &TensorReader, config: SiglipConfig, name: &str) -> Result<Self> {
        let d = config.hidden_size;
        let c = &config;
        let g =
            position_grid(r, d, c.num_attention_heads, c.patch_size, c.image_size, c.num_channels)?;
        if !d.is_multiple_of(config.num_attention_heads) {
            bail!("hidden size {d} is not divisible by {} heads", config.num_attention_heads);
        }
        let grid_positions = r.values("embeddings.position_embedding.weight", &[g * g, d])?;
        let model = SiglipModel {
            patch_embedding: PatchEmbed::load(
                r,
                "embeddings.patch_embedding",
                config.num_channels,
                d,
                config.patch_size,
            )?,
            layers: (0..config.num_hidden_layers)
                .map(|i| SiglipLayer::load(r, i, &config))
                .collect::<Result<_>>()?,
            post_layernorm: LayerNorm::load(r, "post_layernorm", d, config.layer_norm_eps)?,
        }
        // Frozen: gradients flow through the encoder (the perceptual loss) but never into it.
        .no_grad();
        r.finish(&["head.", "embeddings.position_ids"])?;
        let info = EncoderInfo {
            name: name.to_string(),
            family: "siglip".into(),
            dim: d,
            patch_size: config.patch_size,
            default_size: config.image_size,
            mean: SIGLIP_MEAN,
            std: SIGLIP_STD,
            has_cls: false,
            num_registers: 0,
        };
        Ok(Self {
            model,
            config,
            info,
            grid_positions,
            position_cache: Mutex::new(HashMap::new()),
            device: r.device().clone(),
        })
    }

    pub fn config(&self) -> &SiglipConfig {
        &self.config
    }

    fn positions(&self, gh: usize, gw: usize) -> Tensor<3> {
        let mut cache = self.position_cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry((gh, gw))
            .or_insert_with(|| {
                let d = self.config.hidden_size;
                let g = self.config.position_grid();
                let table = resize_bicubic(&self.grid_positions, (g, g), (gh, gw), d, false);
                Tensor::from_data(TensorData::new(table, [1, gh * gw, d]), &self.device)
            })
            .clone()
    }
}

impl VisionEncoder for Siglip {
    fn info(&self) -> &EncoderInfo {
        &self.info
    }

    fn num_params(&self) -> usize {
        self.model.num_params() + self.grid_positions.len()
    }

    fn forward(&self, pixels: Tensor<4>) -> EncoderOutput {
        let [b, _, h, w] = pixels.dims();
        let p = self.config.patch_size;
        let (gh, gw) = (h / p, w / p);
        let mut x = self.model.patch_embedding.forward(pixels) + self.positions(gh, gw);
        for layer in &self.model.layers {
            x = layer.forward(x);
        }
        let x = self.model.post_layernorm.forward(x);
        EncoderOutput {
            patch_tokens: x.reshape([b, gh, gw, self.config.hidden_size]),
            cls: None,
            registers: None,
        }
    }
}
