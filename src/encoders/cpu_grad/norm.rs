//! Layer norm and RMS norm over the last dimension, each one graph node that keeps the input, the
//! weight and each row's mean and reciprocal standard deviation (burn's keeps a tensor per step).

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use rayon::prelude::*;

use super::{Ad, AdTensor, flex, record, tracked};
use crate::encoders::cpu_fast::{CHUNK, Isa, contiguous, reduce_lanes, values, zeros};

/// `(x - mean) / sqrt(var + eps) gamma + beta` over the last dimension, as `nn.LayerNorm`.
pub fn layer_norm<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
) -> Option<Tensor<D>> {
    let norm = Norm { isa: Isa::best(), centre: true };
    normalise(norm, [tracked(&x)?, tracked(&gamma)?, tracked(&beta)?], eps)
}

/// `x / sqrt(mean(x^2) + eps) gamma` over the last dimension, as `nn.RMSNorm`.
pub fn rms_norm<const D: usize>(x: Tensor<D>, gamma: Tensor<1>, eps: f64) -> Option<Tensor<D>> {
    let norm = Norm { isa: Isa::best(), centre: false };
    normalise(norm, [tracked(&x)?, tracked(&gamma)?], eps)
}

/// Which norm, on which instruction set: layer norm centres each row, RMS norm does not.
#[derive(Clone, Copy, Debug)]
struct Norm {
    isa: Isa,
    centre: bool,
}

/// The norm of `inputs[0]` with weight `inputs[1]` and, for layer norm, bias `inputs[2]`.
fn normalise<const D: usize, const N: usize>(
    norm: Norm,
    inputs: [AdTensor; N],
    eps: f64,
) -> Option<Tensor<D>> {
    let mut tensors = inputs.iter().map(|a| contiguous(a.primitive().clone()));
    let x = tensors.next()?;
    let params: Vec<FlexTensor> = tensors.collect();
    let shape = x.layout().shape().clone();
    let dim = shape[D - 1];
    if dim == 0 || params.iter().any(|p| values(p).len() != dim) {
        return None;
    }
    let (gamma, beta) = (values(&params[0]), params.get(1).map(values));
    let mut out = zeros(values(&x).len());
    let mut stats = vec![0.0f32; 2 * out.len() / dim];
    let rows = (CHUNK / dim).max(1);
    out.par_chunks_mut(rows * dim)
        .zip(values(&x).par_chunks(rows * dim).zip(stats.par_chunks_mut(2 * rows)))
        .for_each(|(out, (x, stats))| norm_rows(norm, x, gamma, beta, eps as f32, out, stats));
    let state = || (x.clone(), params[0].clone(), stats);
    let result = record(NormBackward(norm), inputs.each_ref(), state, flex(out, shape));
    Some(Tensor::from_primitive::<Ad>(result))
}

/// Normalises each row of `x` into `out`, writing its mean (0 without centring) and
/// `1 / sqrt(var + eps)` into `stats`.
fn norm_rows(
    norm: Norm,
    x: &[f32],
    gamma: &[f32],
    beta: Option<&[f32]>,
    eps: f32,
    out: &mut [f32],
    stats: &mut [f32],
) {
    let dim = gamma.len();
    norm.isa.run(
        #[inline(always)]
        || {
            let rows = x.chunks_exact(dim).zip(out.chunks_exact_mut(dim));
            for ((x, out), stats) in rows.zip(stats.chunks_exact_mut(2)) {
                // Two passes (mean, then variance about it) as the reference does.
                let add = |a: f32, b: f32| a + b;
                let mean =
                    if norm.centre { reduce_lanes(x, 0.0, |v| v, add) / dim as f32 } else { 0.0 };
                let var = reduce_lanes(x, 0.0, |v| (v - mean) * (v - mean), add) / dim as f32;
                let rstd = 1.0 / (var + eps).sqrt();
                for ((o, &x), &g) in out.iter_mut().zip(x).zip(gamma) {
                    *o = (x - mean) * rstd * g;
                }
                if let Some(beta) = beta {
                    for (o, &b) in out.iter_mut().zip(beta) {
                        *o += b;
                    }
                }
                stats.copy_from_slice(&[mean, rstd]);
            }
        },
    )
}

#[derive(Debug)]
struct NormBackward(Norm);

impl<const N: usize> Backward<Flex, N> for NormBackward {
    /// The input and the weight (contiguous), and each row's mean and `1 / std`.
    type State = (FlexTensor, FlexTensor, Vec<f32>);

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node);
        let (x, gamma, stats) = ops.state;
        let (x, gamma) = (values(&x), values(&gamma));
        let dim = gamma.len();
        let mut data = grad.into_data();
        let dy = data.as_mut_slice::<f32>().expect("f32 gradient");
        let rows = (CHUNK / dim).max(1);
        // The weight's and the bias's gradients, summed per task and then across tasks.
        let sums = dy
            .par_chunks_mut(rows * dim)
            .zip(x.par_chunks(rows * dim).zip(stats.par_chunks(2 * rows)))
            .map(|(dy, (x, stats))| {
                let mut sums = vec![0.0f32; 2 * dim];
                norm_grad_rows(self.0, x, stats, gamma, dy, &mut sums);
                sums
            })
            .reduce(
                || vec![0.0f32; 2 * dim],
                |mut a, b| {
                    a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
                    a
                },
            );
        let mut parents = ops.parents.into_iter();
        if let Some(Some(input)) = parents.next() {
            grads.register::<Flex>(input.id, FlexTensor::from_data(data));
        }
        for (param, sum) in parents.zip(sums.chunks_exact(dim)) {
            if let Some(param) = param {
                grads.register::<Flex>(param.id, flex(sum.to_vec(), [dim]));
            }
        }
    }
}

/// Turns each row of `dy` into the input's gradient `rstd (g dy - mean(g dy) - xh mean(g dy xh))`
/// (`xh` the normalised row; `mean(g dy)` only when centring), adding `dy xh` and `dy` to the
/// weight's and the bias's sums.
fn norm_grad_rows(
    norm: Norm,
    x: &[f32],
    stats: &[f32],
    gamma: &[f32],
    dy: &mut [f32],
    sums: &mut [f32],
) {
    let dim = gamma.len();
    let (dgamma, dbeta) = sums.split_at_mut(dim);
    norm.isa.run(
        #[inline(always)]
        || {
            let n = dim as f32;
            for ((x, dy), stats) in
                x.chunks_exact(dim).zip(dy.chunks_exact_mut(dim)).zip(stats.chunks_exact(2))
            {
                let (mean, rstd) = (stats[0], stats[1]);
                let a =
                    if norm.centre { sum_lanes(dy, gamma, x, |d, g, _| d * g) / n } else { 0.0 };
                let b = sum_lanes(dy, gamma, x, |d, g, x| d * g * (x - mean)) * rstd / n;
                let params = dgamma.iter_mut().zip(dbeta.iter_mut());
                for (((d, &x), &g), (dg, db)) in dy.iter_mut().zip(x).zip(gamma).zip(params) {
                    let xh = (x - mean) * rstd;
                    *dg += *d * xh;
                    *db += *d;
                    *d = rstd * (*d * g - a - xh * b);
                }
            }
        },
    )
}

/// `sum_i f(a_i, b_i, c_i)` in sixteen partial sums, as `reduce_lanes`: one accumulator would
/// not vectorise.
#[inline(always)]
fn sum_lanes(a: &[f32], b: &[f32], c: &[f32], f: impl Fn(f32, f32, f32) -> f32) -> f32 {
    const LANES: usize = 16;
    let mut lanes = [0.0f32; LANES];
    let (a16, b16, c16) = (a.chunks_exact(LANES), b.chunks_exact(LANES), c.chunks_exact(LANES));
    let mut total = 0.0;
    for ((&a, &b), &c) in a16.remainder().iter().zip(b16.remainder()).zip(c16.remainder()) {
        total += f(a, b, c);
    }
    for ((a, b), c) in a16.zip(b16).zip(c16) {
        for l in 0..LANES {
            lanes[l] += f(a[l], b[l], c[l]);
        }
    }
    for l in lanes {
        total += l;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::super::tests::ramp;
    use super::*;

    /// The output and the gradients of the input, the weight and (given) the bias of `f`,
    /// through a weighted sum, on rows that span two rayon tasks and a width that is not a
    /// multiple of 16; each as values.
    fn outputs_and_grads(
        bias: bool,
        f: impl Fn(Tensor<3>, Tensor<1>, Option<Tensor<1>>) -> Tensor<3>,
    ) -> Vec<Vec<f32>> {
        let x = (ramp([4, 130, 40], 0, 6.0) + 1.5).require_grad();
        let gamma = (ramp([40], 5, 1.0) + 1.0).require_grad();
        let beta = bias.then(|| ramp([40], 9, 1.0).require_grad());
        let y = f(x.clone(), gamma.clone(), beta.clone());
        let grads = (y.clone() * ramp(y.dims(), 3, 2.0)).sum().backward();
        fn v<const D: usize>(t: Tensor<D>) -> Vec<f32> {
            t.into_data().try_to_vec::<f32>().unwrap()
        }
        let mut all =
            vec![v(y.inner()), v(x.grad(&grads).unwrap()), v(gamma.grad(&grads).unwrap())];
        all.extend(beta.map(|b| v(b.grad(&grads).unwrap())));
        all
    }

    /// Each of `got` within `tolerance` of `want`, relative to the largest of `want` (at least 1).
    fn assert_close(got: &[Vec<f32>], want: &[Vec<f32>], tolerance: f32, what: &str) {
        let names = ["output", "input gradient", "weight gradient", "bias gradient"];
        for ((got, want), name) in got.iter().zip(want).zip(names) {
            let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let diff = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(diff / scale < tolerance, "{what}: {name} off by {diff} (scale {scale})");
        }
    }

    #[test]
    fn layer_norm_and_its_gradients_match_burn() {
        let want =
            outputs_and_grads(true, |x, g, b| burn::tensor::module::layer_norm(x, g, b, 1e-6));
        for isa in Isa::available() {
            let norm = Norm { isa, centre: true };
            let got = outputs_and_grads(true, |x, g, b| {
                let ads =
                    [tracked(&x).unwrap(), tracked(&g).unwrap(), tracked(&b.unwrap()).unwrap()];
                normalise(norm, ads, 1e-6).expect("the fused path")
            });
            assert_close(&got, &want, 1e-5, &format!("{isa:?}"));
        }
    }

    #[test]
    fn rms_norm_and_its_gradients_match_burn() {
        let want = outputs_and_grads(false, |x, g, _| {
            let rms = (x.clone().square().mean_dim(2) + 1e-6).sqrt();
            x / rms * g.unsqueeze()
        });
        for isa in Isa::available() {
            let norm = Norm { isa, centre: false };
            let got = outputs_and_grads(false, |x, g, _| {
                normalise(norm, [tracked(&x).unwrap(), tracked(&g).unwrap()], 1e-6)
                    .expect("the fused path")
            });
            assert_close(&got, &want, 1e-5, &format!("{isa:?}"));
        }
    }
}
