//! Building blocks shared by the ViT encoders: patch embedding, multi-head attention, MLPs.

use anyhow::{Result, bail};
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::{gelu, gelu_approximate, silu};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use crate::weights::TensorReader;

/// A stride = kernel convolution, computed as a matrix product over flattened patches.
#[derive(Module, Debug)]
pub struct PatchEmbed {
    pub proj: Linear,
    #[module(skip)]
    pub patch: usize,
}

impl PatchEmbed {
    /// Loads a PyTorch `Conv2d(channels, dim, patch, stride=patch)`.
    pub fn load(
        r: &TensorReader,
        name: &str,
        channels: usize,
        dim: usize,
        patch: usize,
    ) -> Result<Self> {
        let weight = r
            .tensor(&format!("{name}.weight"), [dim, channels, patch, patch])?
            .reshape([dim, channels * patch * patch])
            .transpose();
        let bias = r.param(&format!("{name}.bias"), [dim])?;
        Ok(Self {
            proj: Linear { weight: burn::module::Param::from_tensor(weight), bias: Some(bias) },
            patch,
        })
    }

    /// `[B, C, H, W]` to `[B, grid_h * grid_w, dim]`, patches in row-major order.
    pub fn forward(&self, pixels: Tensor<4>) -> Tensor<3> {
        let [b, c, h, w] = pixels.dims();
        let p = self.patch;
        let (gh, gw) = (h / p, w / p);
        let patches = pixels.reshape([b, c, gh, p, gw, p]).permute([0, 2, 4, 1, 3, 5]).reshape([
            b,
            gh * gw,
            c * p * p,
        ]);
        self.proj.forward(patches)
    }
}

/// Multi-head self-attention with separate query, key and value projections.
#[derive(Module, Debug)]
pub struct SelfAttention {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
    pub output: Linear,
    #[module(skip)]
    pub heads: usize,
}

impl SelfAttention {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, t, d] = x.dims();
        let head_dim = d / self.heads;
        let split = |y: Tensor<3>| y.reshape([b, t, self.heads, head_dim]).swap_dims(1, 2);
        let q = split(self.query.forward(x.clone()));
        let k = split(self.key.forward(x.clone()));
        let v = split(self.value.forward(x));
        let context = attention(q, k, v, None, None, AttentionModuleOptions::default());
        self.output.forward(context.swap_dims(1, 2).reshape([b, t, d]))
    }
}

/// The activation named by a Hugging Face config's `hidden_act`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Gelu,
    GeluTanh,
}

impl Activation {
    pub fn from_hf(name: &str) -> Result<Self> {
        match name {
            "gelu" => Ok(Self::Gelu),
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Ok(Self::GeluTanh),
            other => bail!("unsupported activation `{other}` (expected gelu or gelu_pytorch_tanh)"),
        }
    }

    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Self::Gelu => gelu(x),
            Self::GeluTanh => gelu_approximate(x),
        }
    }
}

/// A two-layer MLP: GELU (`fc1`, `fc2`) or SwiGLU (`weights_in` producing both halves).
#[derive(Module, Debug)]
pub struct Mlp {
    pub fc_in: Linear,
    pub fc_out: Linear,
    #[module(skip)]
    pub kind: MlpKind,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MlpKind {
    Plain(Activation),
    SwiGlu,
}

impl Mlp {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let hidden = self.fc_in.forward(x);
        let hidden = match self.kind {
            MlpKind::Plain(act) => act.apply(hidden),
            MlpKind::SwiGlu => {
                let [gate, up] = hidden.chunk(2, 2).try_into().expect("two halves");
                silu(gate) * up
            }
        };
        self.fc_out.forward(hidden)
    }
}
