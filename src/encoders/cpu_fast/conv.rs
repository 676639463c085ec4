//! 3 x 3 convolutions with stride 1 and padding 1 (the pixel decoder's conv head) as matrix
//! products: each rayon task unfolds a band of one image's output rows (im2col) and multiplies
//! the weight by it through gemm. burn-flex's direct convolution, and the transposed convolution
//! and generic weight gradient that autodiff builds on it, took about two thirds of a conv-head
//! training step.
//!
//! The input gradient is the same convolution of the output gradient with the weight flipped
//! and transposed ([`flipped_transposed`]), so one forward kernel serves both passes.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use rayon::prelude::*;

use super::{SendPtr, Strided, flex_buffer, on_plain_cpu, product, values, zeros};

/// Output rows per task: a band of 8 rows of a 224 px, 32-channel map unfolds into 2 MiB.
const BAND_ROWS: usize = 8;

thread_local! {
    /// Each thread's unfolded band, kept between tasks.
    static COLUMNS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The sizes of one convolution: `batch` images of `inputs` channels of `h x w` pixels in,
/// `outputs` channels of the same size out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub batch: usize,
    pub inputs: usize,
    pub outputs: usize,
    pub h: usize,
    pub w: usize,
}

impl ConvShape {
    /// The shape of the convolution that gives the input gradient: the channels swap.
    pub fn transposed(self) -> Self {
        Self { inputs: self.outputs, outputs: self.inputs, ..self }
    }

    fn bands(self) -> usize {
        self.h.div_ceil(BAND_ROWS)
    }

    /// Image `image` `[inputs, h, w]` of the batch `x`.
    fn input_of(self, x: &[f32], image: usize) -> &[f32] {
        let len = self.inputs * self.h * self.w;
        &x[image * len..][..len]
    }

    /// The (image, first row, rows) of band task `t`.
    fn band(self, t: usize) -> (usize, usize, usize) {
        let (image, band) = (t / self.bands(), t % self.bands());
        let y0 = band * BAND_ROWS;
        (image, y0, BAND_ROWS.min(self.h - y0))
    }
}

/// Whether `conv` is a 3 x 3 convolution with stride 1, padding 1, no dilation and one group:
/// the only kind these kernels compute.
fn is_conv3x3(conv: &Conv2d) -> bool {
    conv.kernel_size == [3, 3]
        && conv.stride == [1, 1]
        && conv.dilation == [1, 1]
        && conv.groups == 1
        && conv.padding == PaddingConfig2d::Explicit(1, 1, 1, 1)
}

/// Unfolds output rows `y0..y0 + rows` of one image `[inputs, h, w]` into
/// `col[(c * 9 + ky * 3 + kx) * rows * w + r * w + x] = image[c, y0 + r + ky - 1, x + kx - 1]`,
/// zero outside the image.
fn unfold_band(image: &[f32], s: ConvShape, y0: usize, rows: usize, col: &mut [f32]) {
    let (h, w) = (s.h, s.w);
    for (c, plane) in image.chunks_exact(h * w).enumerate() {
        for ky in 0..3 {
            for kx in 0..3 {
                let dst = &mut col[(c * 9 + ky * 3 + kx) * rows * w..][..rows * w];
                for (r, row) in dst.chunks_exact_mut(w).enumerate() {
                    let y = y0 + r + ky;
                    if y == 0 || y > h {
                        row.fill(0.0);
                        continue;
                    }
                    let src = &plane[(y - 1) * w..][..w];
                    match kx {
                        0 => {
                            row[0] = 0.0;
                            row[1..].copy_from_slice(&src[..w - 1]);
                        }
                        1 => row.copy_from_slice(src),
                        _ => {
                            row[..w - 1].copy_from_slice(&src[1..]);
                            row[w - 1] = 0.0;
                        }
                    }
                }
            }
        }
    }
}

/// Runs `f` with this thread's band buffer of at least `len` values.
fn with_columns<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    COLUMNS.with(|cell| {
        let mut col = cell.borrow_mut();
        if col.len() < len {
            col.resize(len, 0.0);
        }
        f(&mut col[..len])
    })
}

/// `y[b, o] = bias[o] + sum_c weight[o, c] * x[b, c]` (a correlation with padding 1), for `x`
/// `[batch, inputs, h, w]` and `weight` `[outputs, inputs, 3, 3]`; returns `[batch, outputs, h, w]`.
pub fn conv3x3_values(x: &[f32], weight: &[f32], bias: Option<&[f32]>, s: ConvShape) -> Vec<f32> {
    let (plane, k) = (s.h * s.w, s.inputs * 9);
    assert_eq!(x.len(), s.batch * s.inputs * plane, "conv3x3: input size");
    assert_eq!(weight.len(), s.outputs * k, "conv3x3: weight size");
    let mut out = zeros(s.batch * s.outputs * plane);
    let dst = SendPtr(out.as_mut_ptr());
    (0..s.batch * s.bands()).into_par_iter().for_each(|t| {
        let (image, y0, rows) = s.band(t);
        let n = rows * s.w;
        with_columns(k * n, |col| {
            unfold_band(s.input_of(x, image), s, y0, rows, col);
            let at = image * s.outputs * plane + y0 * s.w;
            // SAFETY: the weight is [outputs, k] and the band [k, n]; this task alone writes rows
            // y0..y0 + rows of every output channel of this image, inside `out`.
            unsafe {
                product(
                    dst.at(at),
                    plane as isize,
                    Strided::rows(weight.as_ptr(), k as isize),
                    Strided::rows(col.as_ptr(), n as isize),
                    [s.outputs, n, k],
                    1.0,
                );
            }
            if let Some(bias) = bias {
                for (o, &b) in bias.iter().enumerate() {
                    // SAFETY: the same band of channel o, written above by this task.
                    let row = unsafe { std::slice::from_raw_parts_mut(dst.at(at + o * plane), n) };
                    row.iter_mut().for_each(|v| *v += b);
                }
            }
        })
    });
    out
}

/// The weight's gradient `[outputs, inputs, 3, 3]`: the sum over images and pixels of the output
/// gradient `dy` `[batch, outputs, h, w]` times the unfolded input `x`.
pub fn conv3x3_weight_grad(x: &[f32], dy: &[f32], s: ConvShape) -> Vec<f32> {
    let (plane, k) = (s.h * s.w, s.inputs * 9);
    let size = s.outputs * k;
    (0..s.batch * s.bands())
        .into_par_iter()
        .fold(
            || vec![0.0f32; size],
            |mut sum, t| {
                let (image, y0, rows) = s.band(t);
                let n = rows * s.w;
                let mut part = vec![0.0f32; size];
                with_columns(k * n, |col| {
                    unfold_band(s.input_of(x, image), s, y0, rows, col);
                    let grad = dy[image * s.outputs * plane + y0 * s.w..].as_ptr();
                    // SAFETY: the gradient's band is [outputs, n] with row stride `plane`, the
                    // band's transpose [n, k] (row stride 1, column stride n), `part` [outputs, k].
                    unsafe {
                        product(
                            part.as_mut_ptr(),
                            k as isize,
                            Strided::rows(grad, plane as isize),
                            Strided { ptr: col.as_ptr(), row: 1, col: n as isize },
                            [s.outputs, k, n],
                            1.0,
                        );
                    }
                });
                sum.iter_mut().zip(&part).for_each(|(a, b)| *a += b);
                sum
            },
        )
        .reduce(
            || vec![0.0f32; size],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                a
            },
        )
}

/// The bias's gradient: the output gradient summed over images and pixels, per channel.
pub fn conv3x3_bias_grad(dy: &[f32], s: ConvShape) -> Vec<f32> {
    let plane = s.h * s.w;
    (0..s.outputs)
        .into_par_iter()
        .map(|o| {
            (0..s.batch)
                .map(|b| dy[(b * s.outputs + o) * plane..][..plane].iter().sum::<f32>())
                .sum()
        })
        .collect()
}

/// `weight` `[outputs, inputs, 3, 3]` as `[inputs, outputs, 3, 3]` with each kernel turned by
/// 180 degrees: convolving the output gradient with it gives the input gradient.
pub fn flipped_transposed(weight: &[f32], s: ConvShape) -> Vec<f32> {
    let mut out = vec![0.0f32; weight.len()];
    for o in 0..s.outputs {
        for c in 0..s.inputs {
            for k in 0..9 {
                out[(c * s.outputs + o) * 9 + 8 - k] = weight[(o * s.inputs + c) * 9 + k];
            }
        }
    }
    out
}

/// The shape of `conv` applied to an input of `x_dims`, when the kernels here compute it
/// ([`is_conv3x3`], matching channels, a non-empty image).
pub fn conv_shape(conv: &Conv2d, x_dims: [usize; 4]) -> Option<ConvShape> {
    let [batch, inputs, h, w] = x_dims;
    let [outputs, weight_inputs, kh, kw] = conv.weight.dims();
    let valid = is_conv3x3(conv)
        && weight_inputs == inputs
        && [kh, kw] == [3, 3]
        && h * w > 0
        && outputs > 0;
    valid.then_some(ConvShape { batch, inputs, outputs, h, w })
}

/// `conv.forward(x)` for a 3 x 3 convolution ([`is_conv3x3`]) on the plain CPU backend; `None`
/// elsewhere.
pub fn conv3x3(conv: &Conv2d, x: Tensor<4>) -> Option<Tensor<4>> {
    let s = conv_shape(conv, x.dims())?;
    let weight = conv.weight.val();
    if !on_plain_cpu(&x) || !on_plain_cpu(&weight) {
        return None;
    }
    let device = x.device();
    let (x, weight) = (flex_buffer(x), flex_buffer(weight));
    let bias = conv.bias.as_ref().map(|b| flex_buffer(b.val()));
    let out = conv3x3_values(values(&x), values(&weight), bias.as_ref().map(values), s);
    let data = TensorData::new(out, [s.batch, s.outputs, s.h, s.w]);
    Some(Tensor::from_data(data, &device))
}

#[cfg(test)]
mod tests {
    use burn::nn::conv::Conv2dConfig;

    use super::*;
    use crate::encoders::cpu_fast::max_difference;

    pub(crate) fn random_conv(inputs: usize, outputs: usize, device: &Device) -> Conv2d {
        Conv2dConfig::new([inputs, outputs], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(device)
    }

    /// Against burn's own convolution: several bands with a short last one (19 rows), a width
    /// of one and a single row (every padding case), and one output channel.
    #[test]
    fn conv3x3_matches_burns_convolution() {
        let device = Device::flex();
        for (b, c, o, h, w) in [(2, 3, 5, 19, 9), (1, 4, 1, 1, 6), (3, 2, 4, 5, 1)] {
            let conv = random_conv(c, o, &device);
            assert!(is_conv3x3(&conv));
            let x = Tensor::<4>::random([b, c, h, w], burn::tensor::Distribution::Default, &device);
            let fast = conv3x3(&conv, x.clone()).expect("a 3x3 convolution on the CPU");
            let diff = max_difference(fast, conv.forward(x));
            assert!(diff < 1e-5, "{b}x{c}x{h}x{w} -> {o}: {diff}");
        }
    }

    #[test]
    fn other_convolutions_are_left_to_burn() {
        let device = Device::flex();
        let strided = Conv2dConfig::new([2, 2], [3, 3]).with_stride([2, 2]).init(&device);
        let x = Tensor::<4>::zeros([1, 2, 8, 8], &device);
        assert!(conv3x3(&strided, x.clone()).is_none());
        let unpadded = Conv2dConfig::new([2, 2], [3, 3]).init(&device);
        assert!(conv3x3(&unpadded, x).is_none());
    }
}
