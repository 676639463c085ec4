//! Building blocks shared by the ViT encoders: patch embedding, multi-head attention, MLPs.

use anyhow::{Result, bail};
use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::silu;

use super::cpu_fast::{Panels, Then, linear_then};
use crate::weights::TensorReader;

/// The side of a configuration's trained position grid. Sizes the model cannot have are refused
/// first, naming the file: a zero patch would divide by zero, zero widths or heads cannot be
/// split, and a grid whose table size overflows cannot be counted.
pub fn position_grid(
    r: &TensorReader,
    hidden: usize,
    heads: usize,
    patch: usize,
    image: usize,
    channels: usize,
) -> Result<usize> {
    if [hidden, heads, patch, channels].contains(&0) || image < patch {
        bail!(
            "{}: invalid configuration (hidden size {hidden}, {heads} heads, patch {patch}, \
             image size {image}, {channels} channels): every size must be at least 1 and the \
             image at least one patch",
            r.file().path().display()
        );
    }
    let g = image / patch;
    if g.checked_mul(g).and_then(|n| n.checked_add(1)).is_none() {
        bail!("{}: image size {image} is too large", r.file().path().display());
    }
    Ok(g)
}

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
        let weight = r.transposed(&format!("{name}.weight"), &[dim, channels, patch, patch])?;
        let bias = r.param(&format!("{name}.bias"), [dim])?;
        Ok(Self { proj: Linear { weight: Param::from_tensor(weight), bias: Some(bias) }, patch })
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

/// Multi-head self-attention. The checkpoint's separate query, key and value projections are
/// joined into one `[dim, 3 dim]` product at load time: one larger matrix product runs faster
/// than three small ones.
#[derive(Module, Debug)]
pub struct SelfAttention {
    pub qkv: Linear,
    pub output: Linear,
    #[module(skip)]
    pub heads: usize,
    /// `qkv`'s and `output`'s weights as panels for the CPU (the encoders are frozen).
    #[module(skip)]
    pub panels: [Panels; 2],
}

impl SelfAttention {
    /// Loads PyTorch `nn.Linear` query, key, value and output projections named in that order.
    pub fn load(
        r: &TensorReader,
        [query, key, value, output]: [String; 4],
        dim: usize,
        heads: usize,
        qkv_bias: bool,
    ) -> Result<Self> {
        let parts = [query, key, value]
            .into_iter()
            .map(|name| r.linear(&name, dim, dim, qkv_bias))
            .collect::<Result<Vec<_>>>()?;
        // Untracked: on an autodiff device the loaded parameters are leaves that require
        // gradients, and a parameter built from an operation on them could not be a leaf itself
        // (`detach` keeps the requirement, so the operation would still be tracked).
        let weight = Tensor::cat(parts.iter().map(|p| untracked(&p.weight)).collect(), 1);
        let bias = qkv_bias.then(|| {
            let biases = parts.iter().filter_map(|p| p.bias.as_ref()).map(untracked).collect();
            Param::from_tensor(Tensor::cat(biases, 0))
        });
        Ok(Self {
            qkv: Linear { weight: Param::from_tensor(weight), bias },
            output: r.linear(&output, dim, dim, true)?,
            heads,
            panels: Default::default(),
        })
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.output_then(self.context(x), Then::Bias, None)
    }

    /// The attention's context `[B, T, dim]`, before the output projection.
    pub fn context(&self, x: Tensor<3>) -> Tensor<3> {
        let qkv = linear_then(x, &self.qkv, Some(&self.panels[0]), Then::Bias, None);
        super::cpu_fast::fused_attention(qkv, self.heads)
    }

    /// The output projection of `context`, then what `then` says (see [`linear_then`]).
    pub fn output_then(
        &self,
        context: Tensor<3>,
        then: Then<'_>,
        residual: Option<Tensor<3>>,
    ) -> Tensor<3> {
        linear_then(context, &self.output, Some(&self.panels[1]), then, residual)
    }
}

/// A parameter's value without gradient tracking.
fn untracked<const D: usize>(param: &Param<Tensor<D>>) -> Tensor<D> {
    param.val().set_require_grad(false)
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
            Self::Gelu => super::cpu_fast::gelu(x),
            Self::GeluTanh => super::cpu_fast::gelu_tanh(x),
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
    /// `fc_in`'s and `fc_out`'s weights as panels for the CPU (the encoders are frozen).
    #[module(skip)]
    pub panels: [Panels; 2],
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MlpKind {
    Plain(Activation),
    SwiGlu,
}

impl Mlp {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.output_then(self.hidden(x), Then::Bias, None)
    }

    /// `fc_out` of `hidden`, then what `then` says (see [`linear_then`]).
    pub fn output_then(
        &self,
        hidden: Tensor<3>,
        then: Then<'_>,
        residual: Option<Tensor<3>>,
    ) -> Tensor<3> {
        linear_then(hidden, &self.fc_out, Some(&self.panels[1]), then, residual)
    }

    /// The activated hidden layer, before `fc_out`.
    pub fn hidden(&self, x: Tensor<3>) -> Tensor<3> {
        match self.kind {
            MlpKind::Plain(act) => {
                let tanh = act == Activation::GeluTanh;
                linear_then(x, &self.fc_in, Some(&self.panels[0]), Then::Gelu { tanh }, None)
            }
            MlpKind::SwiGlu => {
                let hidden = linear_then(x, &self.fc_in, Some(&self.panels[0]), Then::Bias, None);
                let [gate, up] = hidden.chunk(2, 2).try_into().expect("two halves");
                silu(gate) * up
            }
        }
    }
}
