//! GELU, exact (erf) and in its tanh form, vectorised and split across threads.

use burn::prelude::*;
use rayon::prelude::*;

use super::{CHUNK, Isa, exp, map_in_place, on_plain_cpu};

/// `0.5 x (1 + erf(x / sqrt 2))`, as PyTorch's `nn.GELU()`.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if let Some(y) = crate::encoders::cpu_grad::gelu(x.clone()) {
        return y;
    }
    if !on_plain_cpu(&x) {
        return burn::tensor::activation::gelu(x);
    }
    let isa = Isa::best();
    map_in_place(x, |values| values.par_chunks_mut(CHUNK).for_each(|c| gelu_slice(isa, c)))
}

pub(in crate::encoders) fn gelu_slice(isa: Isa, values: &mut [f32]) {
    isa.run(
        #[inline(always)]
        || {
            for v in values {
                *v = gelu_scalar(*v);
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

pub(super) fn gelu_tanh_slice(isa: Isa, values: &mut [f32]) {
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
pub(super) fn gelu_tanh_scalar(x: f32) -> f32 {
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
    use super::super::max_difference;
    use super::*;

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
}
