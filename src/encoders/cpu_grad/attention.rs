//! Multi-head attention as one graph node: the probabilities are kept for the backward pass,
//! the heads read and written in place in the projection's layout.

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use rayon::prelude::*;

use super::{Ad, flex, record, tracked};
use crate::encoders::cpu_fast::{
    Isa, SendPtr, Strided, contiguous, product, softmax_rows, values, zeros,
};

/// Where the heads of one operand lie in its buffer: head `h` of image `i` starts at
/// `start + i image + h head`, its token rows `row` apart.
#[derive(Clone, Copy, Debug)]
struct Heads {
    start: usize,
    image: usize,
    head: usize,
    row: usize,
}

impl Heads {
    /// `[B, H, T, hd]`, contiguous.
    fn split([_, h, t, hd]: [usize; 4]) -> Self {
        Self { start: 0, image: h * t * hd, head: t * hd, row: hd }
    }

    /// Part `part` (0 queries, 1 keys, 2 values) of a fused projection `[B, T, 3 H hd]`.
    fn packed([_, h, t, hd]: [usize; 4], part: usize) -> Self {
        let d = h * hd;
        Self { start: part * d, image: t * 3 * d, head: hd, row: 3 * d }
    }

    /// The merged context `[B, T, H hd]`.
    fn merged([_, h, t, hd]: [usize; 4]) -> Self {
        Self { start: 0, image: t * h * hd, head: hd, row: h * hd }
    }

    fn at(self, task: usize, heads: usize) -> usize {
        self.start + task / heads * self.image + task % heads * self.head
    }
}

/// Queries, keys and values: each a buffer and where its heads lie in it.
type Qkv<'a> = [(&'a [f32], Heads); 3];

/// Softmax attention of every (image, head), as PyTorch's `scaled_dot_product_attention`
/// without mask: the merged context `[B, T, H hd]` and the probabilities `[B H, T, T]` that the
/// backward pass reuses.
fn attention_forward(isa: Isa, qkv: Qkv, dims: [usize; 4]) -> (Vec<f32>, Vec<f32>) {
    let [b, heads, t, hd] = dims;
    let [(q, ql), (k, kl), (v, vl)] = qkv;
    let out_layout = Heads::merged(dims);
    let mut out = zeros(b * t * heads * hd);
    let mut probs = zeros(b * heads * t * t);
    let out_ptr = SendPtr(out.as_mut_ptr());
    let scale = 1.0 / (hd as f32).sqrt();
    probs.par_chunks_mut(t * t).enumerate().for_each(|(task, p)| {
        let queries = Strided::rows(q[ql.at(task, heads)..].as_ptr(), ql.row as isize);
        let keys_t =
            Strided { ptr: k[kl.at(task, heads)..].as_ptr(), row: 1, col: kl.row as isize };
        let values = Strided::rows(v[vl.at(task, heads)..].as_ptr(), vl.row as isize);
        // SAFETY: each operand's slice runs to the end of its buffer, past every element its
        // strides reach, and each task writes its own head's columns of the output.
        unsafe {
            product(p.as_mut_ptr(), t as isize, queries, keys_t, [t, t, hd], scale);
            softmax_rows(isa, p, t);
            let probs = Strided::rows(p.as_ptr(), t as isize);
            let context = out_ptr.at(out_layout.at(task, heads));
            product(context, out_layout.row as isize, probs, values, [t, hd, t], 1.0);
        }
    });
    (out, probs)
}

/// The gradients of queries, keys and values, written where `grad_layouts` put them (in one
/// buffer or three), from the context's gradient `[B, T, H hd]`:
/// `dV = P^T dO`, `dP = dO V^T`, `dS = P (dP - rowsum(dP P))`, `dQ = s dS K`, `dK = s dS^T Q`.
fn attention_backward(
    isa: Isa,
    qkv: Qkv,
    probs: &[f32],
    grad_out: &[f32],
    dims: [usize; 4],
    grads: [(SendPtr, Heads); 3],
) {
    let [_, heads, t, hd] = dims;
    let [(q, ql), (k, kl), (v, vl)] = qkv;
    let gl = Heads::merged(dims);
    let [(dq, dql), (dk, dkl), (dv, dvl)] = grads;
    let scale = 1.0 / (hd as f32).sqrt();
    let (t_row, rows) =
        (t as isize, |ptr: *const f32, l: Heads| Strided::rows(ptr, l.row as isize));
    probs.par_chunks(t * t).enumerate().for_each_init(
        || vec![0.0f32; t * t],
        |ds, (task, p)| {
            let grad = grad_out[gl.at(task, heads)..].as_ptr();
            let (qh, kh) = (q[ql.at(task, heads)..].as_ptr(), k[kl.at(task, heads)..].as_ptr());
            let vh = v[vl.at(task, heads)..].as_ptr();
            let transposed = |ptr: *const f32| Strided { ptr, row: 1, col: t_row };
            // SAFETY: as in the forward pass; each task writes its own head's rows and columns
            // of the gradients, which do not overlap.
            unsafe {
                let dv_h = dv.at(dvl.at(task, heads));
                product(
                    dv_h,
                    dvl.row as isize,
                    transposed(p.as_ptr()),
                    rows(grad, gl),
                    [t, hd, t],
                    1.0,
                );
                let v_t = Strided { ptr: vh, row: 1, col: vl.row as isize };
                product(ds.as_mut_ptr(), t_row, rows(grad, gl), v_t, [t, t, hd], 1.0);
                softmax_grad_rows(isa, p, ds, t);
                let dq_h = dq.at(dql.at(task, heads));
                product(
                    dq_h,
                    dql.row as isize,
                    Strided::rows(ds.as_ptr(), t_row),
                    rows(kh, kl),
                    [t, hd, t],
                    scale,
                );
                let dk_h = dk.at(dkl.at(task, heads));
                product(
                    dk_h,
                    dkl.row as isize,
                    transposed(ds.as_ptr()),
                    rows(qh, ql),
                    [t, hd, t],
                    scale,
                );
            }
        },
    );
}

/// `ds = p (ds - sum_j ds_j p_j)` on each `t`-long row: softmax's backward pass.
fn softmax_grad_rows(isa: Isa, probs: &[f32], ds: &mut [f32], t: usize) {
    isa.run(
        #[inline(always)]
        || {
            for (p, d) in probs.chunks_exact(t).zip(ds.chunks_exact_mut(t)) {
                let dot: f32 = p.iter().zip(d.iter()).map(|(p, d)| p * d).sum();
                // A plain loop: a `for_each` closure is not inlined into the dispatched
                // function and would run without its wider instructions.
                for (d, p) in d.iter_mut().zip(p) {
                    *d = p * (*d - dot);
                }
            }
        },
    )
}

/// Multi-head attention straight from a fused projection `[B, T, 3 H hd]` to the merged
/// context `[B, T, H hd]` (see [`super::cpu_fast::fused_attention`]), one graph node whose
/// backward pass writes the projection's gradient in the same layout.
pub fn attention_packed(qkv: Tensor<3>, heads: usize) -> Option<Tensor<3>> {
    attention_packed_on(Isa::best(), qkv, heads)
}

fn attention_packed_on(isa: Isa, qkv: Tensor<3>, heads: usize) -> Option<Tensor<3>> {
    let ad = tracked(&qkv)?;
    let [b, t, d3] = qkv.dims();
    let dims = [b, heads, t, d3 / 3 / heads];
    let input = contiguous(ad.primitive().clone());
    let x = values(&input);
    let parts = [0, 1, 2].map(|i| (x, Heads::packed(dims, i)));
    let (out, probs) = attention_forward(isa, parts, dims);
    let out = flex(out, [b, t, d3 / 3]);
    let state = || (input.clone(), probs, dims);
    let result = record(PackedAttention(isa), [&ad], state, out);
    Some(Tensor::from_primitive::<Ad>(result))
}

#[derive(Debug)]
struct PackedAttention(Isa);

impl Backward<Flex, 1> for PackedAttention {
    /// The projection (contiguous), the probabilities and `[B, H, T, hd]`.
    type State = (FlexTensor, Vec<f32>, [usize; 4]);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        let [Some(parent)] = ops.parents else { return };
        let (input, probs, dims) = ops.state;
        let x = values(&input);
        let mut dx = zeros(x.len());
        let ptr = SendPtr(dx.as_mut_ptr());
        let parts = [0, 1, 2].map(|i| (x, Heads::packed(dims, i)));
        let targets = [0, 1, 2].map(|i| (ptr, Heads::packed(dims, i)));
        attention_backward(self.0, parts, &probs, values(&grad), dims, targets);
        grads.register::<Flex>(parent.id, flex(dx, input.layout().shape().clone()));
    }
}

/// Multi-head attention of split heads `[B, H, T, hd]` (queries, keys, values) to the merged
/// context `[B, T, H hd]`, one graph node.
pub fn attention_split(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Option<Tensor<3>> {
    attention_split_on(Isa::best(), q, k, v)
}

fn attention_split_on(isa: Isa, q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Option<Tensor<3>> {
    let dims = q.dims();
    if k.dims() != dims || v.dims() != dims {
        return None;
    }
    let ads = [tracked(&q)?, tracked(&k)?, tracked(&v)?];
    let inputs = ads.each_ref().map(|a| contiguous(a.primitive().clone()));
    let [b, h, t, hd] = dims;
    let parts = inputs.each_ref().map(|x| (values(x), Heads::split(dims)));
    let (out, probs) = attention_forward(isa, parts, dims);
    let state = || (inputs.clone(), probs, dims);
    let result = record(SplitAttention(isa), ads.each_ref(), state, flex(out, [b, t, h * hd]));
    Some(Tensor::from_primitive::<Ad>(result))
}

#[derive(Debug)]
struct SplitAttention(Isa);

impl Backward<Flex, 3> for SplitAttention {
    /// Queries, keys and values (contiguous), the probabilities and `[B, H, T, hd]`.
    type State = ([FlexTensor; 3], Vec<f32>, [usize; 4]);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        let (inputs, probs, dims) = ops.state;
        let mut outputs = [0, 1, 2].map(|_| zeros(dims.iter().product()));
        let targets = outputs.each_mut().map(|o| (SendPtr(o.as_mut_ptr()), Heads::split(dims)));
        let parts = inputs.each_ref().map(|x| (values(x), Heads::split(dims)));
        attention_backward(self.0, parts, &probs, values(&grad), dims, targets);
        for (parent, out) in ops.parents.into_iter().zip(outputs) {
            if let Some(parent) = parent {
                grads.register::<Flex>(parent.id, flex(out, dims));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{max_difference, ramp, value_and_grad};
    use super::*;

    /// burn's attention on the split heads, merged.
    fn reference(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>) -> Tensor<3> {
        let [b, h, t, hd] = q.dims();
        let options = burn::tensor::ops::AttentionModuleOptions::default();
        let context = burn::tensor::module::attention(q, k, v, None, None, options);
        context.swap_dims(1, 2).reshape([b, t, h * hd])
    }

    fn split(qkv: Tensor<3>, heads: usize, i: usize) -> Tensor<4> {
        let [b, t, d3] = qkv.dims();
        let hd = d3 / 3 / heads;
        let parts = qkv.reshape([b, t, 3, heads, hd]).permute([2, 0, 3, 1, 4]);
        parts.narrow(0, i, 1).reshape([b, heads, t, hd])
    }

    /// Both layouts' outputs and gradients against burn's attention, two images, uneven sizes.
    #[test]
    fn attention_and_its_gradients_match_burn() {
        let (b, t, heads, hd) = (2, 37, 3, 8);
        let qkv = ramp([b, t, 3 * heads * hd], 0, 3.0);
        let (want, want_grad) = value_and_grad(qkv.clone(), |x| {
            reference(split(x.clone(), heads, 0), split(x.clone(), heads, 1), split(x, heads, 2))
        });
        for isa in Isa::available() {
            let packed = |x| attention_packed_on(isa, x, heads).expect("the fused path");
            let (y, g) = value_and_grad(qkv.clone(), packed);
            let (dy, dg) = (max_difference(y, want.clone()), max_difference(g, want_grad.clone()));
            assert!(dy < 1e-5 && dg < 1e-5, "{isa:?} packed: context {dy}, gradient {dg}");
            // The split heads as separate tensors (non-contiguous views of the projection).
            let split = |x: Tensor<3>| {
                let p = |i| split(x.clone(), heads, i);
                attention_split_on(isa, p(0), p(1), p(2)).expect("the fused path")
            };
            let (y, g) = value_and_grad(qkv.clone(), split);
            let (dy, dg) = (max_difference(y, want.clone()), max_difference(g, want_grad.clone()));
            assert!(dy < 1e-5 && dg < 1e-5, "{isa:?} split: context {dy}, gradient {dg}");
        }
    }
}
