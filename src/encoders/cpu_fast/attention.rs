//! Multi-head attention from a fused query-key-value projection, one rayon task per (image,
//! head, block of queries).

use burn::prelude::*;
use rayon::prelude::*;

use super::{Isa, SendPtr, Strided, exp, on_plain_cpu, product, reduce_lanes, zeros};

/// Multi-head scaled dot-product attention straight from a fused projection `[B, T, 3 D]`
/// (queries, keys, values, each `heads` x `head_dim`) to the context `[B, T, D]`, as PyTorch's
/// `scaled_dot_product_attention` without mask. On the CPU each (image, head) pair is one rayon
/// task: two gemm calls that read and write the strided layouts in place, and a vectorised
/// softmax between. Elsewhere burn's `attention` runs on the split heads.
pub fn fused_attention(qkv: Tensor<3>, heads: usize) -> Tensor<3> {
    let [b, t, d3] = qkv.dims();
    let (d, head_dim) = (d3 / 3, d3 / 3 / heads);
    if let Some(context) = crate::encoders::cpu_grad::attention_packed(qkv.clone(), heads) {
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
    (0..b * heads * blocks).into_par_iter().for_each(|task| {
        SCORES.with_borrow_mut(|scores| {
            let (pair, block) = (task / blocks, task % blocks);
            let (image, head) = (pair / heads, pair % heads);
            let first = block * block_rows;
            let rows = block_rows.min(t - first);
            if scores.len() < rows * t {
                scores.resize(rows * t, 0.0);
            }
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
        })
    });
    Tensor::from_data(TensorData::new(output, [b, t, d]), &device)
}

/// Attention scores per task at most (640 KiB, under a Zen 4 core's 1 MiB L2 cache); 224 px
/// (257 tokens) runs each head whole, 448 px (1025 tokens) in 7 blocks. Each block's products
/// pack the head's keys and values again, so fewer, larger blocks ran 448 px batch 1 2 to 4 %
/// faster than blocks of half this size (7 paired rounds).
const SCORES_PER_BLOCK: usize = 160 * 1024;

thread_local! {
    /// Each thread's attention scores, kept between calls: a fresh buffer per task was faulted
    /// in again every time (a 224 px batch-1 encoder call runs 72 such tasks).
    static SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Softmax of each `t`-long row of `scores`.
pub(in crate::encoders) fn softmax_rows(isa: Isa, scores: &mut [f32], t: usize) {
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

#[cfg(test)]
mod tests {
    use super::super::max_difference;
    use super::*;

    /// The CPU path against burn's attention on the split heads, two images and uneven sizes;
    /// 37 tokens in one block of queries, 450 in two.
    #[test]
    fn fused_attention_matches_burn() {
        for t in [37, 450] {
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
}
