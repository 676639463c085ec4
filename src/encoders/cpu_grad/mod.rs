//! The CPU fast paths under autodiff (training): GELU, SwiGLU's gate, attention, layer norm, RMS
//! norm, rotary embedding and 3 x 3 convolutions as single graph nodes with their own backward passes, on burn-flex's tensors. burn's
//! autodiff otherwise runs GELU and its gradient through libm's scalar `erff` and `expf`, SwiGLU
//! on copies of its halves, and attention and the norms as graphs of generic operations
//! (products on copied heads; softmax's max, exp, sum and division; the norms' mean, square,
//! sqrt, division and scaling), each a node that keeps its own tensors for the backward pass.
//!
//! Each function returns `None` where the tensor is not an f32 tensor of burn's CPU backend
//! under autodiff (without gradient checkpointing); callers then keep burn's operations.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use burn::tensor::DType;
use rayon::prelude::*;

use super::cpu_fast::{CHUNK, Isa, contiguous, copied, erf, exp, gelu_slice, values, zeros};

mod attention;
mod conv;
mod norm;
mod rope;

pub use attention::{attention_packed, attention_split};
pub use conv::conv3x3;
pub use norm::{layer_norm, rms_norm};
pub use rope::rope;

pub(super) type Ad = Autodiff<Flex, NoCheckpointing>;
pub(super) type AdTensor = burn::backend::tensor::FloatTensor<Ad>;

/// The autodiff primitive of `x` when the fused operations apply to it.
pub(super) fn tracked<const D: usize>(x: &Tensor<D>) -> Option<AdTensor> {
    if x.dtype() != DType::F32 || !x.device().is_autodiff() {
        return None;
    }
    x.clone().try_into_primitive::<Ad>().ok()
}

pub(super) fn flex(values: Vec<f32>, shape: impl Into<burn::tensor::Shape>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape.into()))
}

/// Registers `output` as the result of `backward` on `inputs`, keeping `state` for the
/// backward pass when any input needs a gradient.
pub(super) fn record<B: Backward<Flex, N>, const N: usize>(
    backward: B,
    inputs: [&AdTensor; N],
    state: impl FnOnce() -> B::State,
    output: FlexTensor,
) -> AdTensor {
    match backward.prepare::<NoCheckpointing>(inputs.map(|x| x.node())).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(state(), output),
        OpsKind::UnTracked(prep) => prep.finish(output),
    }
}

/// `0.5 x (1 + erf(x / sqrt 2))` with its exact derivative `Phi(x) + x phi(x)` in the backward
/// pass, both through the vectorised erf and exp of `cpu_fast`.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Option<Tensor<D>> {
    gelu_on(Isa::best(), x)
}

fn gelu_on<const D: usize>(isa: Isa, x: Tensor<D>) -> Option<Tensor<D>> {
    let ad = tracked(&x)?;
    let input = contiguous(ad.primitive().clone());
    let mut out = copied(values(&input));
    out.par_chunks_mut(CHUNK).for_each(|c| gelu_slice(isa, c));
    let out = flex(out, input.layout().shape().clone());
    let result = record(GeluBackward(isa), [&ad], || input, out);
    Some(Tensor::from_primitive::<Ad>(result))
}

#[derive(Debug)]
struct GeluBackward(Isa);

impl Backward<Flex, 1> for GeluBackward {
    /// The input, contiguous.
    type State = FlexTensor;

    fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node);
        let [Some(parent)] = ops.parents else { return };
        let mut data = grad.into_data();
        let g = data.as_mut_slice::<f32>().expect("f32 gradient");
        g.par_chunks_mut(CHUNK)
            .zip(values(&ops.state).par_chunks(CHUNK))
            .for_each(|(g, x)| gelu_grad_slice(self.0, x, g));
        grads.register::<Flex>(parent.id, FlexTensor::from_data(data));
    }
}

/// `g *= d gelu(x) / dx`.
fn gelu_grad_slice(isa: Isa, x: &[f32], g: &mut [f32]) {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    isa.run(
        #[inline(always)]
        || {
            for (g, &x) in g.iter_mut().zip(x) {
                let cdf = 0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
                *g *= cdf + x * exp(-0.5 * x * x) * INV_SQRT_2PI;
            }
        },
    )
}

/// SwiGLU's gate: `silu(a) b` of the two halves `[a, b]` of the last dimension, with the
/// gradient written back into the same layout (no copies of the halves).
pub fn swiglu<const D: usize>(h: Tensor<D>) -> Option<Tensor<D>> {
    swiglu_on(Isa::best(), h)
}

fn swiglu_on<const D: usize>(isa: Isa, h: Tensor<D>) -> Option<Tensor<D>> {
    let ad = tracked(&h)?;
    let mut dims = h.dims();
    let width = dims[D - 1];
    dims[D - 1] = width / 2;
    let input = contiguous(ad.primitive().clone());
    let mut out = zeros(values(&input).len() / 2);
    let rows = (CHUNK / width).max(1);
    out.par_chunks_mut(rows * width / 2)
        .zip(values(&input).par_chunks(rows * width))
        .for_each(|(out, h)| swiglu_rows(isa, h, out, width));
    let result = record(SwiGluBackward(isa), [&ad], || input, flex(out, dims));
    Some(Tensor::from_primitive::<Ad>(result))
}

#[derive(Debug)]
struct SwiGluBackward(Isa);

impl Backward<Flex, 1> for SwiGluBackward {
    /// The input, contiguous.
    type State = FlexTensor;

    fn backward(self, ops: Ops<FlexTensor, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        let [Some(parent)] = ops.parents else { return };
        let h = values(&ops.state);
        let width = ops.state.layout().shape()[ops.state.layout().shape().num_dims() - 1];
        let mut dh = zeros(h.len());
        let rows = (CHUNK / width).max(1);
        dh.par_chunks_mut(rows * width)
            .zip(h.par_chunks(rows * width).zip(values(&grad).par_chunks(rows * width / 2)))
            .for_each(|(dh, (h, g))| swiglu_grad_rows(self.0, h, g, dh, width));
        grads.register::<Flex>(parent.id, flex(dh, ops.state.layout().shape().clone()));
    }
}

/// The logistic sigmoid through `exp` on its x <= 0 domain, for either sign of `x`.
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    let e = exp(-x.abs());
    if x >= 0.0 { 1.0 / (1.0 + e) } else { e / (1.0 + e) }
}

/// Each `width / 2`-long row of `out` is `silu(a) b` of the `width`-long row `[a, b]` of `h`.
fn swiglu_rows(isa: Isa, h: &[f32], out: &mut [f32], width: usize) {
    isa.run(
        #[inline(always)]
        || {
            for (h, out) in h.chunks_exact(width).zip(out.chunks_exact_mut(width / 2)) {
                let (a, b) = h.split_at(width / 2);
                for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
                    *o = a * sigmoid(a) * b;
                }
            }
        },
    )
}

/// The gradient `dh = [g b s (1 + a (1 - s)), g silu(a)]` (with `s = sigmoid(a)`) of each row.
fn swiglu_grad_rows(isa: Isa, h: &[f32], g: &[f32], dh: &mut [f32], width: usize) {
    isa.run(
        #[inline(always)]
        || {
            let rows = h.chunks_exact(width).zip(g.chunks_exact(width / 2));
            for ((h, g), dh) in rows.zip(dh.chunks_exact_mut(width)) {
                let (a, b) = h.split_at(width / 2);
                let (da, db) = dh.split_at_mut(width / 2);
                for i in 0..width / 2 {
                    let s = sigmoid(a[i]);
                    da[i] = g[i] * b[i] * s * (1.0 + a[i] * (1.0 - s));
                    db[i] = g[i] * a[i] * s;
                }
            }
        },
    )
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// `shape` filled with a repeating spread of values in `[-spread / 2, spread / 2)`.
    pub(super) fn ramp<const D: usize>(shape: [usize; D], seed: usize, spread: f32) -> Tensor<D> {
        let n = shape.iter().product();
        let v: Vec<f32> =
            (0..n).map(|i| (((i + seed) * 7919 % 1013) as f32 / 1013.0 - 0.5) * spread).collect();
        Tensor::<1>::from_data(TensorData::new(v, [n]), &Device::flex().autodiff()).reshape(shape)
    }

    pub(super) fn max_difference<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        let a = a.inner().into_data().try_to_vec::<f32>().unwrap();
        let b = b.inner().into_data().try_to_vec::<f32>().unwrap();
        a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    /// The output and the input's gradient (through a weighted sum, so every output element has
    /// its own incoming gradient) of `f` at `x`.
    pub(super) fn value_and_grad<const D: usize, const E: usize>(
        x: Tensor<D>,
        f: impl Fn(Tensor<D>) -> Tensor<E>,
    ) -> (Tensor<E>, Tensor<D>) {
        let x = x.require_grad();
        let y = f(x.clone());
        let weights = ramp(y.dims(), 3, 2.0);
        let grads = (y.clone() * weights).sum().backward();
        let g = x.grad(&grads).expect("a gradient");
        (y, Tensor::from_inner(g))
    }

    /// GELU and its gradient against burn-flex's (libm's erf and exp) over [-10, 10], on every
    /// instruction set this CPU has.
    #[test]
    fn gelu_and_its_gradient_match_burn() {
        let x = ramp([200, 201], 0, 20.0);
        let (want, want_grad) = value_and_grad(x.clone(), burn::tensor::activation::gelu);
        for isa in Isa::available() {
            let (y, g) = value_and_grad(x.clone(), |x| gelu_on(isa, x).expect("the fused path"));
            let (dy, dg) = (max_difference(y, want.clone()), max_difference(g, want_grad.clone()));
            assert!(dy < 2e-6 && dg < 4e-6, "{isa:?}: gelu {dy}, gradient {dg}");
        }
    }

    /// SwiGLU's gate and its gradient against burn's `silu(a) * b` on the narrowed halves.
    #[test]
    fn swiglu_and_its_gradient_match_burn() {
        let h = ramp([3, 50, 2 * 24], 0, 24.0);
        let (want, want_grad) = value_and_grad(h.clone(), |h| {
            let half = h.dims()[2] / 2;
            let gate = h.clone().narrow(2, 0, half);
            burn::tensor::activation::silu(gate) * h.narrow(2, half, half)
        });
        for isa in Isa::available() {
            let (y, g) = value_and_grad(h.clone(), |h| swiglu_on(isa, h).expect("the fused path"));
            let (dy, dg) = (max_difference(y, want.clone()), max_difference(g, want_grad.clone()));
            assert!(dy < 1e-5 && dg < 1e-5, "{isa:?}: swiglu {dy}, gradient {dg}");
        }
    }

    #[test]
    fn plain_tensors_keep_burns_operations() {
        let x = Tensor::<2>::zeros([2, 3], &Device::flex());
        assert!(gelu(x).is_none());
    }
}
