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
//!
//! One concern per file: [`activation`] (GELU), [`attention`], [`conv`] (3 x 3 convolutions),
//! [`linear`] (products with their epilogues) and [`norm`] (layer norm); this file holds the
//! dispatch and the shared helpers.

mod activation;
mod attention;
mod conv;
mod linear;
mod norm;

use std::sync::OnceLock;

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use burn::tensor::DType;
use rayon::prelude::*;

pub(super) use activation::gelu_slice;
pub use activation::{erf, gelu, gelu_scalar, gelu_tanh};
pub use attention::fused_attention;
pub(super) use attention::softmax_rows;
pub use conv::{
    ConvShape, conv_shape, conv3x3, conv3x3_bias_grad, conv3x3_values, conv3x3_weight_grad,
    flipped_transposed,
};
pub(super) use linear::bias_act_rows;
pub use linear::{Panels, Then, linear, linear_then};
pub use norm::LayerNorm;

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
    shape: [usize; 3],
    scale: f32,
) {
    unsafe { gemm_product(dst, dst_row, lhs, rhs, shape, scale, gemm::Parallelism::None) }
}

/// `dst = scale lhs rhs` for `[m, k] x [k, n]` through gemm, `dst` with row stride `dst_row`
/// and written without being read (it may be uninitialised).
///
/// # Safety
/// Every element the strides reach must be readable (lhs, rhs) or writable (dst).
pub(super) unsafe fn gemm_product(
    dst: *mut f32,
    dst_row: isize,
    lhs: Strided,
    rhs: Strided,
    [m, n, k]: [usize; 3],
    scale: f32,
    parallelism: gemm::Parallelism,
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
            parallelism,
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

#[cfg(test)]
fn max_difference<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    let (a, b) = (host_values(a), host_values(b));
    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[cfg(test)]
mod tests {
    use super::activation::gelu_tanh_slice;
    use super::attention::softmax_rows;
    use super::norm::layer_norm_rows;
    use super::*;

    #[test]
    fn exp_matches_std() {
        assert!(exp(f32::NAN).is_nan(), "NaN propagates");
        let worst = (0..87_000)
            .map(|i| -(i as f32) * 1e-3)
            .map(|x| ((exp(x) as f64 - (x as f64).exp()) / (x as f64).exp()).abs())
            .fold(0.0, f64::max);
        assert!(worst < 5e-7, "max relative exp error {worst}");
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
            let mut rows = vec![0.0; x.len()];
            layer_norm_rows(isa, &x, &mut rows, &gamma, Some(&beta), 1e-6);
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
}
