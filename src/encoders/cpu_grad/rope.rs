//! Rotary position embedding as one graph node: burn's graph narrows the quarters, negates two,
//! concatenates them and multiplies and adds, each a node with its own copies; this reads the
//! input once and keeps nothing but the (constant) tables for the backward pass.

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::prelude::*;
use rayon::prelude::*;

use super::{Ad, flex, record, tracked};
use crate::encoders::cpu_fast::{CHUNK, Isa, contiguous, values, zeros};

/// `x cos + rotate(x) sin` of `x` `[B, H, T, hd]` with tables `[1, 1, T, hd]`, where
/// `rotate` turns each half `[a, b]` of each head (of `hd / 2`, two rotary sections) into
/// `[-b, a]`, as `fae::model::Rope2d::apply`.
pub fn rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Option<Tensor<4>> {
    rope_on(Isa::best(), x, cos, sin)
}

fn rope_on(isa: Isa, x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Option<Tensor<4>> {
    let [_, _, t, hd] = x.dims();
    if cos.dims() != [1, 1, t, hd] || sin.dims() != [1, 1, t, hd] || hd % 4 != 0 {
        return None;
    }
    let ad = tracked(&x)?;
    let tables = [tracked(cos)?, tracked(sin)?].map(|a| contiguous(a.primitive().clone()));
    let input = contiguous(ad.primitive().clone());
    let out = rotate(isa, values(&input), &tables, hd, false);
    let result = record(RopeBackward(isa), [&ad], || tables, flex(out, x.dims()));
    Some(Tensor::from_primitive::<Ad>(result))
}

#[derive(Debug)]
struct RopeBackward(Isa);

impl Backward<Flex, 1> for RopeBackward {
    /// The cosine and sine tables, contiguous.
    type State = [FlexTensor; 2];

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        let [Some(parent)] = ops.parents else { return };
        let shape = grad.layout().shape().clone();
        let hd = shape[3];
        let dx = rotate(self.0, values(&grad), &ops.state, hd, true);
        grads.register::<Flex>(parent.id, flex(dx, shape));
    }
}

/// The rotation of every `hd`-long row of `x` (row `r` at position `r % T` of the tables), or
/// with `transpose` its transpose, the gradient `g cos - rotate(g sin)`.
fn rotate(
    isa: Isa,
    x: &[f32],
    [cos, sin]: &[FlexTensor; 2],
    hd: usize,
    transpose: bool,
) -> Vec<f32> {
    let (cos, sin) = (values(cos), values(sin));
    let t = cos.len() / hd;
    let mut out = zeros(x.len());
    // Whole images' heads per task, so each task starts at table row 0.
    let rows = (CHUNK / (t * hd)).max(1) * t;
    out.par_chunks_mut(rows * hd).zip(x.par_chunks(rows * hd)).for_each(|(out, x)| {
        isa.run(
            #[inline(always)]
            || {
                let heads = x.chunks_exact(t * hd).zip(out.chunks_exact_mut(t * hd));
                for (x, out) in heads {
                    rotate_head(x, cos, sin, out, hd, transpose);
                }
            },
        )
    });
    out
}

/// One head `[T, hd]`: on each pair `(a, b)` of a half's quarters, `(a c - b s, b c + a s)` (the
/// tables at each element's own place), or transposed `(a c + b s_b, b c - a s_a)`.
#[inline(always)]
fn rotate_head(x: &[f32], cos: &[f32], sin: &[f32], out: &mut [f32], hd: usize, transpose: bool) {
    let q = hd / 4;
    let halves = x.chunks_exact(2 * q).zip(cos.chunks_exact(2 * q)).zip(sin.chunks_exact(2 * q));
    for (((x, c), s), o) in halves.zip(out.chunks_exact_mut(2 * q)) {
        let (oa, ob) = o.split_at_mut(q);
        // The transpose takes each quarter's sine from the other quarter.
        let (sign, sa, sb) =
            if transpose { (-1.0, &s[q..], &s[..q]) } else { (1.0, &s[..q], &s[q..]) };
        // Slices of length `q` exactly, so the loop runs without bounds checks.
        let (xa, xb, ca, cb) = (&x[..q], &x[q..2 * q], &c[..q], &c[q..2 * q]);
        let (oa, ob, sa, sb) = (&mut oa[..q], &mut ob[..q], &sa[..q], &sb[..q]);
        for i in 0..q {
            oa[i] = xa[i] * ca[i] - sign * xb[i] * sa[i];
            ob[i] = xb[i] * cb[i] + sign * xa[i] * sb[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{max_difference, ramp, value_and_grad};
    use super::*;
    use crate::fae::model::Rope2d;

    /// The rotation and its gradient against `Rope2d`'s burn operations, on a non-contiguous
    /// input (heads split from a projection, as attention does).
    #[test]
    fn rope_and_its_gradient_match_burn() {
        let (b, heads, (gh, gw), hd) = (2, 3, (3, 5), 8);
        let t = gh * gw;
        let rope = Rope2d::new(gh, gw, hd, 100.0, &Device::flex().autodiff());
        let split = |x: Tensor<3>| x.reshape([b, t, heads, hd]).swap_dims(1, 2);
        let x = ramp([b, t, heads * hd], 0, 4.0);
        let (want, want_grad) = value_and_grad(x.clone(), |x| rope.apply_with_burn(split(x)));
        for isa in Isa::available() {
            let (cos, sin) = rope.tables();
            let fused = |x| rope_on(isa, split(x), cos, sin).expect("the fused path");
            let (y, g) = value_and_grad(x.clone(), fused);
            let (dy, dg) = (max_difference(y, want.clone()), max_difference(g, want_grad.clone()));
            assert!(dy < 1e-6 && dg < 1e-6, "{isa:?}: rope {dy}, gradient {dg}");
        }
    }
}
