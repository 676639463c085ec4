//! The frozen encoders' steps between matrix products, on the CPU backend: GELU, layer norm and
//! attention, split across rayon's threads. burn-flex runs GELU and layer norm on one thread (GELU
//! through libm's scalar `erff`, a fifth of DINOv2-S's time at 224 px) and copies the heads
//! apart for attention. Under autodiff GELU and attention run as `cpu_grad`'s fused operations;
//! other backends keep burn's own operations.
//!
//! The binary targets baseline x86-64, so the element-wise loops are also compiled for AVX2 + FMA
//! and AVX-512 (through pulp, gemm's own dispatcher) and the best the CPU has is chosen at run
//! time ([`Isa`]). On aarch64 NEON is the baseline: the loops are compiled for it through pulp's
//! `Neon` (detected at run time like the x86 sets); on other architectures the portable loops are
//! what the compiler vectorises for the target's baseline.

use std::sync::OnceLock;

use anyhow::Result;
use burn::prelude::*;
use burn::tensor::DType;
use rayon::prelude::*;

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
    /// its registers); the portable code where the CPU lacks it.
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
    isa.run(|| values.iter_mut().for_each(|v| *v = gelu_scalar(*v)))
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
    let mut output = vec![0.0f32; b * t * d];
    let scale = 1.0 / (head_dim as f32).sqrt();
    let out_ptr = SendPtr(output.as_mut_ptr());
    let isa = Isa::best();
    (0..b * heads).into_par_iter().for_each_init(
        || vec![0.0f32; t * t],
        |scores, task| {
            let (image, head) = (task / heads, task % heads);
            let base = image * t * d3 + head * head_dim;
            let row = d3 as isize;
            let queries = Strided::rows(input[base..].as_ptr(), row);
            let keys_t = Strided { ptr: input[base + d..].as_ptr(), row: 1, col: row };
            let values = Strided::rows(input[base + 2 * d..].as_ptr(), row);
            let context = out_ptr.at(image * t * d + head * head_dim);
            // SAFETY: each slice above runs to the end of the input, past every element its
            // strides reach, and each task writes its own columns of the output.
            unsafe {
                product(scores.as_mut_ptr(), t as isize, queries, keys_t, [t, t, head_dim], scale);
                softmax_rows(isa, scores, t);
                let probs = Strided::rows(scores.as_ptr(), t as isize);
                product(context, d as isize, probs, values, [t, head_dim, t], 1.0);
            }
        },
    );
    Tensor::from_data(TensorData::new(output, [b, t, d]), &device)
}

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
    isa.run(|| scores.chunks_exact_mut(t).for_each(softmax_in_place))
}

#[inline(always)]
fn softmax_in_place(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    row.iter_mut().for_each(|v| *v = exp(*v - max));
    // Eight partial sums, so the compiler can keep them in one vector register.
    let mut lanes = [0.0f32; 8];
    let mut chunks = row.chunks_exact(8);
    for chunk in &mut chunks {
        lanes.iter_mut().zip(chunk).for_each(|(l, v)| *l += v);
    }
    let sum = lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>();
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// `e^x` for x in [-87, 0] (softmax arguments; below it, about 1.6e-38), relative error under
/// 5e-7: `2^n e^r` with `|r| <= ln 2 / 2` and a degree-6 Taylor polynomial. Branch-free, so it
/// vectorises.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let x = x.clamp(-87.0, 0.0);
    let n = (x * std::f32::consts::LOG2_E + ROUND) - ROUND;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4; // ln 2 split in two for accuracy
    let p = 1.0
        + r * (1.0
            + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r / 720.0)))));
    p * f32::from_bits(((n as i32 + 127) << 23) as u32)
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
            return self.inner.forward(x);
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
    isa.run(|| {
        for row in rows.chunks_exact_mut(dim) {
            // Two passes over the row (mean, then variance) as the reference does.
            let mean = row.iter().sum::<f32>() / dim as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / dim as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for (i, v) in row.iter_mut().enumerate() {
                let shift = beta.map_or(0.0, |b| b[i]);
                *v = (*v - mean) * inv * gamma[i] + shift;
            }
        }
    })
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
    isa.run(|| values.iter_mut().for_each(|v| *v = gelu_tanh_scalar(*v)))
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
        let worst = (0..87_000)
            .map(|i| -(i as f32) * 1e-3)
            .map(|x| ((exp(x) as f64 - (x as f64).exp()) / (x as f64).exp()).abs())
            .fold(0.0, f64::max);
        assert!(worst < 5e-7, "max relative exp error {worst}");
    }

    /// The CPU path against burn's attention on the split heads, two images and uneven sizes.
    #[test]
    fn fused_attention_matches_burn() {
        let device = Device::flex();
        let (b, t, heads, head_dim) = (2, 37, 3, 8);
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

    fn max_difference<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        let (a, b) = (host_values(a), host_values(b));
        a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }
}
