//! `x W + b` under autodiff (training) on the CPU as one graph node with its own backward pass.
//!
//! burn runs a linear layer as a batched product (each of the B products packing the weight
//! again) and a broadcast bias addition, and its backward pass as two more products and a
//! reduction over the broadcast dimensions. burn-flex creates every product's output zeroed and
//! then copied once more into an aligned buffer, on the calling thread alone: in a pixel-decoder
//! training step on 2 threads that was about a third of what the calling thread ran while the
//! workers waited. Here each product is one gemm call over all `[.., d_in]` rows, written
//! straight into a new buffer (gemm fills it in parallel), and the bias and its gradient run as
//! parallel passes.
//!
//! [`linear`] returns `None` where a tensor is not an f32 tensor of burn's CPU backend under
//! autodiff; callers then keep burn's operations.

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use rayon::prelude::*;

use super::cpu_fast::{CHUNK, Isa, Strided, bias_act_rows, contiguous, gemm_product, values};
use super::cpu_grad::{Ad, flex, record, tracked};

/// Products of at least this many multiply-adds are split across threads (burn-flex's choice).
const PARALLEL_PRODUCT: usize = 192 * 192 * 192;

/// `dst = lhs rhs` for `[m, k] x [k, n]`, `dst` contiguous `[m, n]` and written without being
/// read (it may be uninitialised); parallel inside gemm when the product is large.
///
/// # Safety
/// Every element the strides reach must be readable (lhs, rhs); `dst` must hold `m n` values.
pub(super) unsafe fn product_into(
    dst: *mut f32,
    lhs: Strided,
    rhs: Strided,
    [m, n, k]: [usize; 3],
) {
    let parallel = m * n * k >= PARALLEL_PRODUCT;
    let parallelism = if parallel { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    unsafe { gemm_product(dst, n as isize, lhs, rhs, [m, n, k], 1.0, parallelism) }
}

/// A new `[m, n]` buffer holding `lhs rhs`.
fn product(lhs: Strided, rhs: Strided, [m, n, k]: [usize; 3]) -> Vec<f32> {
    let mut out = Vec::<f32>::with_capacity(m * n);
    // SAFETY: the callers' strides stay inside their buffers; gemm writes all m n values.
    unsafe {
        product_into(out.spare_capacity_mut().as_mut_ptr().cast(), lhs, rhs, [m, n, k]);
        out.set_len(m * n);
    }
    out
}

/// `x W + b` for burn's `Linear` (`W` `[d_in, d_out]`), as `Linear::forward`, one graph node.
pub fn linear<const D: usize>(x: Tensor<D>, layer: &burn::nn::Linear) -> Option<Tensor<D>> {
    linear_on(Isa::best(), x, layer)
}

fn linear_on<const D: usize>(
    isa: Isa,
    x: Tensor<D>,
    layer: &burn::nn::Linear,
) -> Option<Tensor<D>> {
    let weight = layer.weight.val();
    let ads = (tracked(&x)?, tracked(&weight)?);
    let bias = match &layer.bias {
        Some(b) => Some(tracked(&b.val())?),
        None => None,
    };
    let mut dims = x.dims();
    let [d_in, d_out] = weight.dims();
    let rows = dims[..D - 1].iter().product::<usize>();
    if dims[D - 1] != d_in || rows * d_in * d_out == 0 {
        return None;
    }
    dims[D - 1] = d_out;
    let input = contiguous(ads.0.primitive().clone());
    let w = contiguous(ads.1.primitive().clone());
    let (xs, ws) = (values(&input), values(&w));
    let mut y = product(
        Strided::rows(xs.as_ptr(), d_in as isize),
        Strided::rows(ws.as_ptr(), d_out as isize),
        [rows, d_out, d_in],
    );
    let state = || LinearState { input, weight: w, sizes: [rows, d_in, d_out] };
    let result = match bias {
        Some(b) => {
            let bias = contiguous(b.primitive().clone());
            let task = (CHUNK / d_out).max(1) * d_out;
            let bv = values(&bias);
            y.par_chunks_mut(task).for_each(|r| bias_act_rows(isa, r, Some(bv), d_out, None));
            record(LinearBackward(isa), [&ads.0, &ads.1, &b], state, flex(y, dims))
        }
        None => record(LinearBackward(isa), [&ads.0, &ads.1], state, flex(y, dims)),
    };
    Some(Tensor::from_primitive::<Ad>(result))
}

#[derive(Debug)]
struct LinearBackward(Isa);

/// The input and weight (contiguous) and `[rows, d_in, d_out]`.
#[derive(Clone, Debug)]
struct LinearState {
    input: FlexTensor,
    weight: FlexTensor,
    sizes: [usize; 3],
}

impl LinearBackward {
    /// The gradients of the input (`dy W^T`), the weight (`x^T dy`) and the bias (the column
    /// sums of `dy`) that `want` asks for, in that order.
    fn gradients(
        self,
        state: &LinearState,
        grad: &FlexTensor,
        want: [bool; 3],
    ) -> [Option<FlexTensor>; 3] {
        let [rows, d_in, d_out] = state.sizes;
        let (x, w, g) = (values(&state.input), values(&state.weight), values(grad));
        let g_rows = Strided::rows(g.as_ptr(), d_out as isize);
        let dx = want[0].then(|| {
            // W^T: element (i, j) at W[j d_out + i].
            let wt = Strided { ptr: w.as_ptr(), row: 1, col: d_out as isize };
            flex(product(g_rows, wt, [rows, d_in, d_out]), state.input.layout().shape().clone())
        });
        let dw = want[1].then(|| {
            let g_rows = Strided::rows(g.as_ptr(), d_out as isize);
            // x^T: element (i, j) at x[j d_in + i].
            let xt = Strided { ptr: x.as_ptr(), row: 1, col: d_in as isize };
            flex(product(xt, g_rows, [d_in, d_out, rows]), [d_in, d_out])
        });
        let db = want[2].then(|| flex(column_sums(self.0, g, d_out), [d_out]));
        [dx, dw, db]
    }
}

impl<const N: usize> Backward<Flex, N> for LinearBackward {
    type State = LinearState;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        let mut want = [false; 3];
        for (w, p) in want.iter_mut().zip(&ops.parents) {
            *w = p.is_some();
        }
        let outputs = self.gradients(&ops.state, &grad, want);
        for (parent, out) in ops.parents.into_iter().zip(outputs) {
            if let (Some(parent), Some(out)) = (parent, out) {
                grads.register::<Flex>(parent.id, out);
            }
        }
    }
}

/// The sums of the `n`-long rows of `g`, column by column: partial sums per task in parallel,
/// then added in task order (the same result for any number of threads).
fn column_sums(isa: Isa, g: &[f32], n: usize) -> Vec<f32> {
    let task = (CHUNK / n).max(1) * n;
    let partials: Vec<Vec<f32>> = g
        .par_chunks(task)
        .map(|rows| {
            let mut sums = vec![0.0f32; n];
            add_rows(isa, rows, &mut sums);
            sums
        })
        .collect();
    let mut total = vec![0.0f32; n];
    for p in &partials {
        add_rows(isa, p, &mut total);
    }
    total
}

/// `sums += row` for each `sums.len()`-long row of `rows`.
fn add_rows(isa: Isa, rows: &[f32], sums: &mut [f32]) {
    isa.run(
        #[inline(always)]
        || {
            for row in rows.chunks_exact(sums.len()) {
                for (s, &v) in sums.iter_mut().zip(row) {
                    *s += v;
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::LinearConfig;

    fn ramp<const D: usize>(shape: [usize; D], seed: usize, spread: f32) -> Tensor<D> {
        let n = shape.iter().product();
        let v: Vec<f32> =
            (0..n).map(|i| (((i + seed) * 7919 % 1013) as f32 / 1013.0 - 0.5) * spread).collect();
        Tensor::<1>::from_data(TensorData::new(v, [n]), &Device::flex().autodiff()).reshape(shape)
    }

    fn max_difference<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        let a = a.inner().into_data().try_to_vec::<f32>().unwrap();
        let b = b.inner().into_data().try_to_vec::<f32>().unwrap();
        a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    /// The output and the gradients of the input, weight and bias (through a weighted sum, so
    /// every output element has its own incoming gradient).
    fn value_and_grads(
        x: Tensor<3>,
        layer: &burn::nn::Linear,
        f: impl Fn(Tensor<3>, &burn::nn::Linear) -> Tensor<3>,
    ) -> Vec<Tensor<1>> {
        let x = x.require_grad();
        let y = f(x.clone(), layer);
        let weights = ramp(y.dims(), 3, 2.0);
        let grads = (y.clone() * weights).sum().backward();
        let flat = |t: Tensor<2>| t.reshape([-1]);
        let mut out =
            vec![y.reshape([-1]), Tensor::from_inner(x.grad(&grads).unwrap()).reshape([-1])];
        out.push(flat(Tensor::from_inner(layer.weight.val().grad(&grads).unwrap())));
        if let Some(b) = &layer.bias {
            out.push(Tensor::from_inner(b.val().grad(&grads).unwrap()));
        }
        out
    }

    /// Output and gradients against burn's `Linear::forward`, with and without bias, on every
    /// instruction set this CPU has; sizes that cross gemm's parallel threshold and the tasks.
    #[test]
    fn linear_and_its_gradients_match_burn() {
        let device = Device::flex().autodiff();
        for (bias, [b, t, d_in, d_out]) in
            [(true, [2, 37, 24, 40]), (false, [3, 11, 9, 5]), (true, [2, 300, 192, 200])]
        {
            let layer = LinearConfig::new(d_in, d_out).with_bias(bias).init(&device);
            let x = ramp([b, t, d_in], 0, 3.0);
            let want = value_and_grads(x.clone(), &layer, |x, l| l.forward(x));
            for isa in Isa::available() {
                let fused = |x, l: &_| linear_on(isa, x, l).expect("the fused path");
                let got = value_and_grads(x.clone(), &layer, fused);
                assert_eq!(got.len(), want.len());
                for (i, (g, w)) in got.into_iter().zip(&want).enumerate() {
                    let scale = w.clone().abs().max().into_scalar::<f32>().max(1.0);
                    let d = max_difference(g, w.clone()) / scale;
                    assert!(d < 1e-5, "{isa:?} {d_in}x{d_out}: part {i} differs by {d}");
                }
            }
        }
    }

    #[test]
    fn plain_tensors_keep_burns_operations() {
        let layer = LinearConfig::new(3, 2).init(&Device::flex());
        assert!(linear(Tensor::<2>::zeros([2, 3], &Device::flex()), &layer).is_none());
    }
}
