//! The frozen encoders' steps between matrix products, on the CPU backend: GELU, layer norm and
//! attention, split across rayon's threads. burn-flex runs GELU and layer norm on one thread (GELU
//! through libm's scalar `erff`, a fifth of DINOv2-S's time at 224 px) and copies the heads
//! apart for attention. Under autodiff GELU, attention and layer norm run as `cpu_grad`'s fused
//! operations; other backends keep burn's own operations.
//!
//! The binary targets baseline x86-64, so the element-wise loops are also compiled for AVX2 + FMA
//! and AVX-512 (through pulp, gemm's own dispatcher) and the best the CPU has is chosen at run
//! time ([`Isa`]). On aarch64 NEON is the baseline: the loops are compiled for it through pulp's
//! `Neon` (detected at run time like the x86 sets); on other architectures the portable loops are
//! what the compiler vectorises for the target's baseline.

use std::sync::OnceLock;

use anyhow::Result;
use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::DType;
use rayon::prelude::*;

use super::cpu_linear::product_into;
use crate::weights::TensorReader;

/// Elements per rayon task: large enough to amortise scheduling.
pub(super) const CHUNK: usize = 16 * 1024;

/// An instruction set the element-wise loops are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// The target's baseline (SSE2 on x86-64, NEON on aarch64).
    Portable,
    /// x86-64-v3: AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// x86-64-v4: AVX-512.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// aarch64's NEON (Advanced SIMD), through pulp.
    #[cfg(target_arch = "aarch64")]
    Neon,
}

impl Isa {
    /// Those this CPU has, the portable one first.
    pub fn available() -> Vec<Isa> {
        #[allow(unused_mut)]
        let mut all = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if pulp::x86::V3::try_new().is_some() {
                all.push(Isa::Avx2);
            }
            if pulp::x86::V4::try_new().is_some() {
                all.push(Isa::Avx512);
            }
        }
        #[cfg(target_arch = "aarch64")]
        if pulp::aarch64::Neon::try_new().is_some() {
            all.push(Isa::Neon);
        }
        all
    }

    /// The best this CPU has, detected once.
    pub fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| *Self::available().last().expect("the portable set"))
    }

    /// Runs `f` compiled for this instruction set (`f` and what it inlines are vectorised with
    /// its registers); the portable code where the CPU lacks it. `f` must be an
    /// `#[inline(always)]` closure: one that is not inlined into the dispatched function is
    /// compiled once, for the baseline (a row loop's closure large enough that the compiler kept
    /// it apart ran softmax and layer norm on SSE2 while AVX-512 was chosen).
    #[inline(always)]
    pub(super) fn run<R>(self, f: impl FnOnce() -> R) -> R {
        #[cfg(target_arch = "x86_64")]
        {
            match self {
                Isa::Avx2 => {
                    if let Some(simd) = pulp::x86::V3::try_new() {
                        return simd.vectorize(f);
                    }
                }
                Isa::Avx512 => {
                    if let Some(simd) = pulp::x86::V4::try_new() {
                        return simd.vectorize(f);
                    }
                }
                Isa::Portable => {}
            }
        }
        #[cfg(target_arch = "aarch64")]
        if self == Isa::Neon
            && let Some(simd) = pulp::aarch64::Neon::try_new()
        {
            return simd.vectorize(f);
        }
        f()
    }
}

/// Whether `x` lives on the plain CPU backend as f32, where these fast paths apply.
fn on_plain_cpu<const D: usize>(x: &Tensor<D>) -> bool {
    let device = x.device();
    device == Device::flex() && !device.is_autodiff() && x.dtype() == DType::F32
}

fn host_values<const D: usize>(x: Tensor<D>) -> Vec<f32> {
    x.into_data().try_into_vec::<f32>().expect("f32 tensor")
}

/// Runs `f` on the tensor's values in place: burn-flex hands its buffer over without a copy when
/// the tensor is contiguous and not shared.
fn map_in_place<const D: usize>(x: Tensor<D>, f: impl FnOnce(&mut [f32])) -> Tensor<D> {
    let device = x.device();
    let mut data = x.into_data();
    f(data.as_mut_slice::<f32>().expect("f32 tensor"));
    Tensor::from_data(data, &device)
}

/// `0.5 x (1 + erf(x / sqrt 2))`, as PyTorch's `nn.GELU()`.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if let Some(y) = super::cpu_grad::gelu(x.clone()) {
        return y;
    }
    if !on_plain_cpu(&x) {
        return burn::tensor::activation::gelu(x);
    }
    let isa = Isa::best();
    map_in_place(x, |values| values.par_chunks_mut(CHUNK).for_each(|c| gelu_slice(isa, c)))
}

pub(super) fn gelu_slice(isa: Isa, values: &mut [f32]) {
    isa.run(
        #[inline(always)]
        || {
            for v in values {
                *v = gelu_scalar(*v);
            }
        },
    )
}

/// Multi-head scaled dot-product attention straight from a fused projection `[B, T, 3 D]`
/// (queries, keys, values, each `heads` x `head_dim`) to the context `[B, T, D]`, as PyTorch's
/// `scaled_dot_product_attention` without mask. On the CPU each (image, head) pair is one rayon
/// task: two gemm calls that read and write the strided layouts in place, and a vectorised
/// softmax between. Elsewhere burn's `attention` runs on the split heads.
pub fn fused_attention(qkv: Tensor<3>, heads: usize) -> Tensor<3> {
    let [b, t, d3] = qkv.dims();
    let (d, head_dim) = (d3 / 3, d3 / 3 / heads);
    if let Some(context) = super::cpu_grad::attention_packed(qkv.clone(), heads) {
        return context;
    }
    if !on_plain_cpu(&qkv) {
        let qkv = qkv.reshape([b, t, 3, heads, head_dim]).permute([2, 0, 3, 1, 4]);
        let part = |i| qkv.clone().narrow(0, i, 1).reshape([b, heads, t, head_dim]);
        let options = burn::tensor::ops::AttentionModuleOptions::default();
        let context =
            burn::tensor::module::attention(part(0), part(1), part(2), None, None, options);
        return context.swap_dims(1, 2).reshape([b, t, d]);
    }
    let device = qkv.device();
    let data = qkv.into_data();
    let input = data.as_slice::<f32>().expect("f32 tensor");
    let mut output = zeros(b * t * d);
    let scale = 1.0 / (head_dim as f32).sqrt();
    let out_ptr = SendPtr(output.as_mut_ptr());
    let isa = Isa::best();
    // The queries of one (image, head) pair in blocks whose scores stay in the L2 cache (at
    // 448 px, 1025 tokens, all of a head's scores take 4 MiB).
    let blocks = (t * t).div_ceil(SCORES_PER_BLOCK).max(1);
    let block_rows = t.div_ceil(blocks);
    let blocks = t.div_ceil(block_rows);
    (0..b * heads * blocks).into_par_iter().for_each_init(
        || vec![0.0f32; block_rows * t],
        |scores, task| {
            let (pair, block) = (task / blocks, task % blocks);
            let (image, head) = (pair / heads, pair % heads);
            let first = block * block_rows;
            let rows = block_rows.min(t - first);
            let scores = &mut scores[..rows * t];
            let base = image * t * d3 + head * head_dim;
            let row = d3 as isize;
            let queries = Strided::rows(input[base + first * d3..].as_ptr(), row);
            let keys_t = Strided { ptr: input[base + d..].as_ptr(), row: 1, col: row };
            let values = Strided::rows(input[base + 2 * d..].as_ptr(), row);
            let context = out_ptr.at(image * t * d + first * d + head * head_dim);
            // SAFETY: each slice above runs to the end of the input, past every element its
            // strides reach, and each task writes its own rows and columns of the output.
            unsafe {
                let shape = [rows, t, head_dim];
                product(scores.as_mut_ptr(), t as isize, queries, keys_t, shape, scale);
                softmax_rows(isa, scores, t);
                let probs = Strided::rows(scores.as_ptr(), t as isize);
                product(context, d as isize, probs, values, [rows, head_dim, t], 1.0);
            }
        },
    );
    Tensor::from_data(TensorData::new(output, [b, t, d]), &device)
}

/// What [`linear_then`] does with each output row after the product, bias included.
pub enum Then<'a> {
    /// `y + b`.
    Bias,
    /// `act(y + b)`, the activation GELU (`tanh` false) or its tanh form.
    Gelu { tanh: bool },
    /// `residual + (y + b) scale`, written over the residual (a transformer block's layer-scaled
    /// skip connection).
    ScaledResidual { scale: &'a Tensor<1> },
}

/// `x W + b` for burn's `Linear` (`W` `[d_in, d_out]`), as `Linear::forward`.
pub fn linear<const D: usize>(x: Tensor<D>, layer: &burn::nn::Linear) -> Tensor<D> {
    linear_then(x, layer, Then::Bias, None)
}

/// `x W + b`, then what `then` says. On the CPU the product runs as one gemm call over all
/// `[.., d_in]` rows (burn runs `[B, T, d_in] x [d_in, d_out]` as B products, each packing the
/// weight again), parallel inside gemm, and bias, activation and residual follow in one
/// parallel pass over the output rather than one single-threaded pass each. Elsewhere burn's
/// operations run. `residual` is required for [`Then::ScaledResidual`] and ignored otherwise.
pub fn linear_then<const D: usize>(
    x: Tensor<D>,
    layer: &burn::nn::Linear,
    then: Then<'_>,
    residual: Option<Tensor<D>>,
) -> Tensor<D> {
    let weight = layer.weight.val();
    let bias = layer.bias.as_ref().map(|b| b.val());
    let scale_on_cpu = match &then {
        Then::ScaledResidual { scale } => on_plain_cpu(scale),
        _ => true,
    };
    let weights_on_cpu = on_plain_cpu(&weight) && bias.as_ref().is_none_or(on_plain_cpu);
    // Empty products (nothing for gemm to write) take burn's path too.
    let empty = x.shape().num_elements() == 0 || weight.shape().num_elements() == 0;
    if !on_plain_cpu(&x) || !weights_on_cpu || !scale_on_cpu || empty {
        let y = super::cpu_linear::linear(x.clone(), layer).unwrap_or_else(|| layer.forward(x));
        return match then {
            Then::Bias => y,
            Then::Gelu { tanh: false } => gelu(y),
            Then::Gelu { tanh: true } => gelu_tanh(y),
            Then::ScaledResidual { scale } => {
                residual.expect("a residual") + y * scale.clone().unsqueeze()
            }
        };
    }
    let dims = x.dims();
    let [d_in, d_out] = weight.dims();
    let rows = dims[..D - 1].iter().product::<usize>();
    let mut out_dims = dims;
    out_dims[D - 1] = d_out;
    let (input, weight, bias) = (flex_buffer(x), flex_buffer(weight), bias.map(flex_buffer));
    let (input, weight, bias) = (values(&input), values(&weight), bias.as_ref().map(values));
    // Not zeroed first: gemm writes every element without reading it.
    let mut y = Vec::<f32>::with_capacity(rows * d_out);
    // SAFETY: `input` holds rows x d_in values, `weight` d_in x d_out, `y` room for rows x d_out,
    // all of which gemm writes before `set_len`.
    unsafe {
        let (lhs, rhs) = (
            Strided::rows(input.as_ptr(), d_in as isize),
            Strided::rows(weight.as_ptr(), d_out as isize),
        );
        product_into(
            y.spare_capacity_mut().as_mut_ptr().cast::<f32>(),
            lhs,
            rhs,
            [rows, d_out, d_in],
        );
        y.set_len(rows * d_out);
    }
    let isa = Isa::best();
    let task = (CHUNK / d_out).max(1) * d_out;
    match then {
        Then::Bias | Then::Gelu { .. } => {
            let act = match then {
                Then::Gelu { tanh } => Some(tanh),
                _ => None,
            };
            if bias.is_some() || act.is_some() {
                y.par_chunks_mut(task).for_each(|rows| bias_act_rows(isa, rows, bias, d_out, act));
            }
            Tensor::from_data(TensorData::new(y, out_dims), &Device::flex())
        }
        Then::ScaledResidual { scale } => {
            let scale = flex_buffer(scale.clone());
            let scale = values(&scale);
            assert_eq!(scale.len(), d_out, "one scale per output feature");
            let residual = residual.expect("a residual");
            assert_eq!(residual.dims(), out_dims, "the residual has the output's shape");
            map_in_place(residual, |x| {
                x.par_chunks_mut(task)
                    .zip(y.par_chunks(task))
                    .for_each(|(x, y)| scaled_residual_rows(isa, x, y, bias, scale));
            })
        }
    }
}

/// `act(y + b)` for each `d`-long row of `rows`, in place; the activation GELU, its tanh form
/// (`Some(true)`) or none.
pub(super) fn bias_act_rows(
    isa: Isa,
    rows: &mut [f32],
    bias: Option<&[f32]>,
    d: usize,
    act: Option<bool>,
) {
    isa.run(
        #[inline(always)]
        || {
            for row in rows.chunks_exact_mut(d) {
                if let Some(bias) = bias {
                    for (v, b) in row.iter_mut().zip(bias) {
                        *v += b;
                    }
                }
                match act {
                    Some(true) => {
                        for v in row {
                            *v = gelu_tanh_scalar(*v);
                        }
                    }
                    Some(false) => {
                        for v in row {
                            *v = gelu_scalar(*v);
                        }
                    }
                    None => {}
                }
            }
        },
    )
}

/// `x + (y + b) scale` for each `scale.len()`-long row, written over `x`.
fn scaled_residual_rows(isa: Isa, x: &mut [f32], y: &[f32], bias: Option<&[f32]>, scale: &[f32]) {
    let d = scale.len();
    isa.run(
        #[inline(always)]
        || {
            for (x, y) in x.chunks_exact_mut(d).zip(y.chunks_exact(d)) {
                match bias {
                    Some(bias) => {
                        for (((x, y), b), s) in x.iter_mut().zip(y).zip(bias).zip(scale) {
                            *x += (y + b) * s;
                        }
                    }
                    None => {
                        for ((x, y), s) in x.iter_mut().zip(y).zip(scale) {
                            *x += y * s;
                        }
                    }
                }
            }
        },
    )
}

/// A CPU tensor's values in row-major order, copied only when its layout is not contiguous.
pub(super) fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.as_slice::<f32>().is_some() { t } else { t.to_contiguous() }
}

/// `n` zeros, written in parallel: a large `vec![0.0; n]` is zeroed (or its fresh pages faulted
/// in) by the calling thread alone while the others wait.
pub(super) fn zeros(n: usize) -> Vec<f32> {
    (0..n).into_par_iter().map(|_| 0.0).collect()
}

/// A copy of `x`, written in parallel (see [`zeros`]).
pub(super) fn copied(x: &[f32]) -> Vec<f32> {
    x.par_iter().copied().collect()
}

/// The values of a contiguous f32 tensor (see [`contiguous`]).
pub(super) fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("a contiguous f32 tensor")
}

/// A plain CPU tensor's buffer, contiguous (callers check [`on_plain_cpu`] first).
fn flex_buffer<const D: usize>(t: Tensor<D>) -> FlexTensor {
    contiguous(t.try_into_primitive::<Flex>().expect("a CPU tensor"))
}

/// Attention scores per task at most (320 KiB, a third of a Zen 4 core's L2 cache); 224 px
/// (257 tokens) still runs each head whole.
const SCORES_PER_BLOCK: usize = 80 * 1024;

/// A matrix read in place: element (i, j) at `ptr + i row + j col`.
pub(super) struct Strided {
    pub ptr: *const f32,
    pub row: isize,
    pub col: isize,
}

impl Strided {
    pub fn rows(ptr: *const f32, row: isize) -> Self {
        Self { ptr, row, col: 1 }
    }
}

/// `dst = scale lhs rhs` for `[m, k] x [k, n]` on this thread, `dst` with row stride `dst_row`.
///
/// # Safety
/// Every element the strides reach must be readable (lhs, rhs) or writable (dst).
pub(super) unsafe fn product(
    dst: *mut f32,
    dst_row: isize,
    lhs: Strided,
    rhs: Strided,
    [m, n, k]: [usize; 3],
    scale: f32,
) {
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_row,
            false,
            lhs.ptr,
            lhs.col,
            lhs.row,
            rhs.ptr,
            rhs.col,
            rhs.row,
            0.0,
            scale,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[derive(Clone, Copy)]
pub(super) struct SendPtr(pub *mut f32);
// SAFETY: used only for disjoint writes from rayon tasks while the buffer outlives them.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// A method rather than a field access, so closures capture the whole (Send) wrapper.
    pub fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// Softmax of each `t`-long row of `scores`.
pub(super) fn softmax_rows(isa: Isa, scores: &mut [f32], t: usize) {
    isa.run(
        #[inline(always)]
        || {
            for row in scores.chunks_exact_mut(t) {
                softmax_in_place(row);
            }
        },
    )
}

#[inline(always)]
fn softmax_in_place(row: &mut [f32]) {
    let max = reduce_lanes(row, f32::NEG_INFINITY, |v| v, f32::max);
    for v in row.iter_mut() {
        *v = exp(*v - max);
    }
    let inv = 1.0 / reduce_lanes(row, 0.0, |v| v, |a, b| a + b);
    for v in row {
        *v *= inv;
    }
}

/// `combine` over `map` of every value, as sixteen partial results (one AVX-512 register, two
/// AVX2 ones) folded at the end: a loop that carries one accumulator cannot be vectorised, as
/// floating-point addition is not associative. Plain `for` loops here and in every dispatched
/// loop: iterator adapters (`for_each`, `fold`) may stay out of line, compiled for the baseline.
#[inline(always)]
pub(super) fn reduce_lanes(
    values: &[f32],
    init: f32,
    map: impl Fn(f32) -> f32,
    combine: impl Fn(f32, f32) -> f32,
) -> f32 {
    const LANES: usize = 16;
    let mut lanes = [init; LANES];
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(chunk) {
            *l = combine(*l, map(v));
        }
    }
    let mut total = init;
    for &v in chunks.remainder() {
        total = combine(total, map(v));
    }
    for l in lanes {
        total = combine(total, l);
    }
    total
}

/// `e^x` for x in [-87, 0] (softmax arguments; below it, about 1.6e-38), relative error under
/// 5e-7: `2^n e^r` with `|r| <= ln 2 / 2` and a degree-6 Taylor polynomial. Branch-free, so it
/// vectorises.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let x = x.clamp(-87.0, 0.0);
    // `max` and `min` turn NaN into a bound, so n is always an integer in [-126, 0]; a NaN x
    // still gives NaN through r.
    #[allow(clippy::manual_clamp)] // `clamp` would keep the NaN
    let finite = x.max(-87.0).min(0.0);
    let n = (finite * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4; // ln 2 split in two for accuracy
    let p = 1.0
        + r * (1.0
            + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r / 720.0)))));
    // SAFETY: n is an integer in [-126, 0]. The unchecked conversion vectorises where `as`
    // (saturating, NaN to 0) left the loop scalar.
    let n = unsafe { n.to_int_unchecked::<i32>() };
    p * f32::from_bits(((n + 127) << 23) as u32)
}

/// Layer normalisation over the last dimension, as `nn.LayerNorm(dim, eps)`.
#[derive(Module, Debug)]
pub struct LayerNorm {
    pub inner: burn::nn::LayerNorm,
    #[module(skip)]
    pub eps: f64,
}

impl LayerNorm {
    /// Loads a PyTorch `nn.LayerNorm` (`weight`, `bias`).
    pub fn load(r: &TensorReader, name: &str, dim: usize, eps: f64) -> Result<Self> {
        let mut inner = burn::nn::LayerNormConfig::new(dim).with_epsilon(eps).init(r.device());
        inner.gamma = r.param(&format!("{name}.weight"), [dim])?;
        inner.beta = Some(r.param(&format!("{name}.bias"), [dim])?);
        Ok(Self { inner, eps })
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if !on_plain_cpu(&x) {
            // Under autodiff (the frozen encoder of the perceptual term) the fused node.
            let (gamma, beta) = (self.inner.gamma.val(), self.inner.beta.as_ref().map(|b| b.val()));
            let fused =
                beta.and_then(|b| super::cpu_grad::layer_norm(x.clone(), gamma, b, self.eps));
            return fused.unwrap_or_else(|| self.inner.forward(x));
        }
        let gamma = host_values(self.inner.gamma.val());
        let beta = self.inner.beta.as_ref().map(|b| host_values(b.val()));
        let dim = gamma.len();
        let eps = self.eps as f32;
        let rows_per_task = (CHUNK / dim).max(1);
        let isa = Isa::best();
        map_in_place(x, |values| {
            values
                .par_chunks_mut(rows_per_task * dim)
                .for_each(|rows| layer_norm_rows(isa, rows, &gamma, beta.as_deref(), eps));
        })
    }
}

/// Normalises each `gamma.len()`-long row of `rows` in place.
fn layer_norm_rows(isa: Isa, rows: &mut [f32], gamma: &[f32], beta: Option<&[f32]>, eps: f32) {
    let dim = gamma.len();
    isa.run(
        #[inline(always)]
        || {
            for row in rows.chunks_exact_mut(dim) {
                // Two passes over the row (mean, then variance) as the reference does.
                let mean = reduce_lanes(row, 0.0, |v| v, |a, b| a + b) / dim as f32;
                let square = |v: f32| (v - mean) * (v - mean);
                let var = reduce_lanes(row, 0.0, square, |a, b| a + b) / dim as f32;
                let inv = 1.0 / (var + eps).sqrt();
                match beta {
                    Some(beta) => {
                        for ((v, g), b) in row.iter_mut().zip(gamma).zip(beta) {
                            *v = (*v - mean) * inv * g + b;
                        }
                    }
                    None => {
                        for (v, g) in row.iter_mut().zip(gamma) {
                            *v = (*v - mean) * inv * g;
                        }
                    }
                }
            }
        },
    )
}

/// `0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))`, as `nn.GELU(approximate="tanh")`
/// (SigLIP's `gelu_pytorch_tanh`).
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !on_plain_cpu(&x) {
        return burn::tensor::activation::gelu_approximate(x);
    }
    let isa = Isa::best();
    map_in_place(x, |values| values.par_chunks_mut(CHUNK).for_each(|c| gelu_tanh_slice(isa, c)))
}

fn gelu_tanh_slice(isa: Isa, values: &mut [f32]) {
    isa.run(
        #[inline(always)]
        || {
            for v in values {
                *v = gelu_tanh_scalar(*v);
            }
        },
    )
}

#[inline(always)]
fn gelu_tanh_scalar(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let y = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
    // tanh(y) = sign(y) (1 - e^(-2|y|)) / (1 + e^(-2|y|)), with `exp` on its x <= 0 domain.
    let e = exp(-2.0 * y.abs());
    let tanh = ((1.0 - e) / (1.0 + e)).copysign(y);
    0.5 * x * (1.0 + tanh)
}

#[inline(always)]
pub fn gelu_scalar(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// erf as a rational function `x P(x^2) / Q(x^2)` on [-4, 4] (outside, erf is ±1 in f32): the
/// minimax fit used by Eigen and XLA for single precision. No branches and no `mul_add` (a
/// libm call on baseline x86-64), so it vectorises.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906_3e-4;
    p = p * x2 - 2.954_6e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329e-3;
    q = q * x2 - 1.426_474e-2;
    x * p / q
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;

    /// Against libm's correctly rounded-in-practice f64 erf, over the range that matters.
    #[test]
    fn erf_matches_libm() {
        let mut worst = 0.0f64;
        for i in -60_000..=60_000 {
            let x = i as f32 * 1e-4;
            let err = (erf(x) as f64 - libm::erf(x as f64)).abs();
            worst = worst.max(err);
        }
        assert!(worst < 1e-6, "max |erf error| {worst}");
    }

    #[test]
    fn exp_matches_std() {
        assert!(exp(f32::NAN).is_nan(), "NaN propagates");
        let worst = (0..87_000)
            .map(|i| -(i as f32) * 1e-3)
            .map(|x| ((exp(x) as f64 - (x as f64).exp()) / (x as f64).exp()).abs())
            .fold(0.0, f64::max);
        assert!(worst < 5e-7, "max relative exp error {worst}");
    }

    /// The CPU path against burn's attention on the split heads, two images and uneven sizes;
    /// 37 tokens in one block of queries, 300 in two.
    #[test]
    fn fused_attention_matches_burn() {
        for t in [37, 300] {
            fused_attention_matches_burn_with(t);
        }
    }

    fn fused_attention_matches_burn_with(t: usize) {
        let device = Device::flex();
        let (b, heads, head_dim) = (2, 3, 8);
        let d = heads * head_dim;
        let values: Vec<f32> =
            (0..b * t * 3 * d).map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 3.0).collect();
        let qkv = Tensor::<3>::from_data(TensorData::new(values, [b, t, 3 * d]), &device);
        let ours = fused_attention(qkv.clone(), heads);
        let split = qkv.reshape([b, t, 3, heads, head_dim]).permute([2, 0, 3, 1, 4]);
        let part = |i| split.clone().narrow(0, i, 1).reshape([b, heads, t, head_dim]);
        let options = burn::tensor::ops::AttentionModuleOptions::default();
        let reference =
            burn::tensor::module::attention(part(0), part(1), part(2), None, None, options);
        let worst = max_difference(ours, reference.swap_dims(1, 2).reshape([b, t, d]));
        assert!(worst < 1e-5, "max |attention difference| {worst}");
    }

    #[test]
    fn layer_norm_matches_burn() {
        let device = Device::flex();
        let mut inner = burn::nn::LayerNormConfig::new(48).with_epsilon(1e-6).init(&device);
        let ramp =
            |n: usize, scale: f32| (0..n).map(move |i| ((i * 37 % 101) as f32 - 50.0) * scale);
        let vector = |scale| {
            Tensor::<1>::from_data(TensorData::new(ramp(48, scale).collect(), [48]), &device)
        };
        inner.gamma = Param::from_tensor(vector(0.03));
        inner.beta = Some(Param::from_tensor(vector(0.01)));
        let norm = LayerNorm { inner, eps: 1e-6 };
        let values: Vec<f32> = ramp(3 * 500 * 48, 0.2).map(|v| v + 7.0).collect();
        let x = Tensor::<3>::from_data(TensorData::new(values, [3, 500, 48]), &device);
        let worst = max_difference(norm.forward(x.clone()), norm.inner.forward(x));
        assert!(worst < 1e-5, "max |layer norm difference| {worst}");
    }

    /// Both GELU forms against burn's own, over [-10, 10].
    #[test]
    fn tensor_gelus_match_burn() {
        let device = Device::flex();
        let values: Vec<f32> = (0..40_000).map(|i| (i as f32 - 20_000.0) * 5e-4).collect();
        let x = Tensor::<2>::from_data(TensorData::new(values, [200, 200]), &device);
        let exact = max_difference(gelu(x.clone()), burn::tensor::activation::gelu(x.clone()));
        assert!(exact < 2e-6, "max |gelu difference| {exact}");
        let tanh =
            max_difference(gelu_tanh(x.clone()), burn::tensor::activation::gelu_approximate(x));
        assert!(tanh < 2e-6, "max |tanh gelu difference| {tanh}");
    }

    /// Each dispatched loop against the portable one and an f64 reference, on every instruction
    /// set this CPU has (the lower ones forced).
    #[test]
    fn every_instruction_set_matches_the_portable_loops() {
        let isas = Isa::available();
        eprintln!("instruction sets on this CPU: {isas:?}, chosen: {:?}", Isa::best());
        assert_eq!(isas[0], Isa::Portable);
        assert_eq!(Isa::best(), *isas.last().unwrap());
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            assert!(isas.contains(&Isa::Avx2), "AVX2 + FMA present but not offered");
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("neon") {
            assert!(isas.contains(&Isa::Neon), "NEON present but not offered");
        }
        // An odd length, so every vector loop also runs its remainder.
        let inputs: Vec<f32> = (0..40_003).map(|i| (i as f32 - 20_000.0) * 5e-4).collect();
        let apply = |isa, f: fn(Isa, &mut [f32])| {
            let mut v = inputs.clone();
            f(isa, &mut v);
            v
        };
        let worst =
            |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
        let gelu_f64 = |x: f32| 0.5 * x as f64 * (1.0 + libm::erf(x as f64 / 2f64.sqrt()));
        let tanh_f64 = |x: f32| {
            let x = x as f64;
            0.5 * x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
        };
        // Softmax rows of 37 (as attention over 37 tokens), 29 x 37 of them.
        const T: usize = 37;
        let dim = 48;
        let gamma: Vec<f32> = (0..dim).map(|i| 0.5 + i as f32 * 0.01).collect();
        let beta: Vec<f32> = (0..dim).map(|i| i as f32 * -0.02).collect();
        let portable = (
            apply(Isa::Portable, gelu_slice),
            apply(Isa::Portable, gelu_tanh_slice),
            apply(Isa::Portable, |isa, v| softmax_rows(isa, &mut v[..T * T * 29], T)),
        );
        for isa in isas {
            let gelu = apply(isa, gelu_slice);
            let reference: Vec<f32> = inputs.iter().map(|&x| gelu_f64(x) as f32).collect();
            assert!(worst(&gelu, &portable.0) <= 1e-6, "{isa:?} gelu");
            assert!(worst(&gelu, &reference) < 2e-6, "{isa:?} gelu vs f64");
            let tanh = apply(isa, gelu_tanh_slice);
            let reference: Vec<f32> = inputs.iter().map(|&x| tanh_f64(x) as f32).collect();
            assert!(worst(&tanh, &portable.1) <= 1e-6, "{isa:?} tanh gelu");
            assert!(worst(&tanh, &reference) < 2e-6, "{isa:?} tanh gelu vs f64");
            let soft = apply(isa, |isa, v| softmax_rows(isa, &mut v[..T * T * 29], T));
            assert!(worst(&soft, &portable.2) <= 1e-7, "{isa:?} softmax");
            for row in soft[..T * T * 29].chunks_exact(T) {
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{isa:?} softmax sums to 1");
            }
            // Rows spread over a few units around an offset, as activations are.
            let x: Vec<f32> =
                (0..dim * 500).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.2 + 7.0).collect();
            let mut rows = x.clone();
            layer_norm_rows(isa, &mut rows, &gamma, Some(&beta), 1e-6);
            for (row, out) in x.chunks_exact(dim).zip(rows.chunks_exact(dim)) {
                let mean = row.iter().map(|&v| v as f64).sum::<f64>() / dim as f64;
                let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / dim as f64;
                for i in 0..dim {
                    let want = (row[i] as f64 - mean) / (var + 1e-6).sqrt() * gamma[i] as f64
                        + beta[i] as f64;
                    assert!((out[i] as f64 - want).abs() < 1e-4, "{isa:?} layer norm");
                }
            }
        }
    }

    /// The one-product linear layer with its epilogues against burn's `Linear` and operations,
    /// on `[B, T, d_in]` input with odd sizes.
    #[test]
    fn linear_epilogues_match_burn() {
        let device = Device::flex();
        let ramp = |n: usize, scale: f32, shift: usize| {
            (0..n).map(move |i| (((i + shift) * 37 % 101) as f32 - 50.0) * scale).collect()
        };
        let tensor = |values: Vec<f32>, shape: &[usize]| {
            Tensor::<3>::from_data(TensorData::new(values, shape.to_vec()), &device)
        };
        let (b, t, d_in, d_out) = (3, 37, 40, 52);
        let x = tensor(ramp(b * t * d_in, 0.05, 0), &[b, t, d_in]);
        let weight = Tensor::<2>::from_data(
            TensorData::new(ramp(d_in * d_out, 0.01, 3), [d_in, d_out]),
            &device,
        );
        let bias = Tensor::<1>::from_data(TensorData::new(ramp(d_out, 0.02, 5), [d_out]), &device);
        let layer = burn::nn::Linear {
            weight: burn::module::Param::from_tensor(weight),
            bias: Some(burn::module::Param::from_tensor(bias)),
        };
        let reference = layer.forward(x.clone());
        assert!(max_difference(linear(x.clone(), &layer), reference.clone()) < 1e-5, "linear");
        for tanh in [false, true] {
            let ours = linear_then(x.clone(), &layer, Then::Gelu { tanh }, None);
            let want = match tanh {
                false => burn::tensor::activation::gelu(reference.clone()),
                true => burn::tensor::activation::gelu_approximate(reference.clone()),
            };
            assert!(max_difference(ours, want) < 1e-5, "gelu (tanh {tanh})");
        }
        let scale = Tensor::<1>::from_data(TensorData::new(ramp(d_out, 0.03, 7), [d_out]), &device);
        let residual = tensor(ramp(b * t * d_out, 0.1, 11), &[b, t, d_out]);
        let then = Then::ScaledResidual { scale: &scale };
        let ours = linear_then(x, &layer, then, Some(residual.clone()));
        let want = residual + reference * scale.unsqueeze();
        assert!(max_difference(ours, want) < 1e-5, "scaled residual");
    }

    /// The epilogues on every instruction set this CPU has against the portable loops.
    #[test]
    fn linear_epilogues_on_every_instruction_set() {
        let d = 45;
        let rows = 29;
        let values: Vec<f32> = (0..rows * d).map(|i| ((i * 53 % 97) as f32 - 48.0) * 0.1).collect();
        let bias: Vec<f32> = (0..d).map(|i| i as f32 * 0.03 - 0.5).collect();
        let scale: Vec<f32> = (0..d).map(|i| 0.1 + i as f32 * 0.01).collect();
        let run = |isa| {
            let mut outs = Vec::new();
            for act in [None, Some(false), Some(true)] {
                let mut y = values.clone();
                bias_act_rows(isa, &mut y, Some(&bias), d, act);
                outs.push(y);
            }
            let mut x: Vec<f32> = values.iter().map(|v| v * 0.7 + 1.0).collect();
            scaled_residual_rows(isa, &mut x, &values, Some(&bias), &scale);
            outs.push(x);
            outs
        };
        let portable = run(Isa::Portable);
        let gelu_f64 = |x: f32| 0.5 * x as f64 * (1.0 + libm::erf(x as f64 / 2f64.sqrt()));
        for (i, (row, out)) in values.chunks_exact(d).zip(portable[1].chunks_exact(d)).enumerate() {
            for j in 0..d {
                let want = gelu_f64(row[j] + bias[j]);
                assert!((out[j] as f64 - want).abs() < 2e-6, "row {i} gelu");
            }
        }
        for isa in Isa::available() {
            for (ours, want) in run(isa).iter().zip(&portable) {
                let worst = ours.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                assert!(worst <= 1e-6, "{isa:?}: {worst}");
            }
        }
    }

    fn max_difference<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        let (a, b) = (host_values(a), host_values(b));
        a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }
}
