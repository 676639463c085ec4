//! Linear layers with their epilogues (bias, GELU, a layer-scaled residual) on the CPU: one gemm
//! call over all rows (or panel products for a frozen layer's pre-arranged weight), then one
//! parallel pass.

use std::sync::{Arc, OnceLock};

use burn::prelude::*;
use rayon::prelude::*;

use super::activation::{gelu_scalar, gelu_tanh_scalar};
use super::{
    CHUNK, Isa, SendPtr, Strided, flex_buffer, gelu, gelu_tanh, map_in_place, on_plain_cpu,
    product, values,
};
use crate::encoders::cpu_linear::product_into;

/// What [`linear_then`] does with each output row after the product, bias included.
pub enum Then<'a> {
    /// `y + b`.
    Bias,
    /// `act(y + b)`, the activation GELU (`tanh` false) or its tanh form.
    Gelu { tanh: bool },
    /// `residual + (y + b) scale`, written over the residual (a transformer block's layer-scaled
    /// skip connection).
    ScaledResidual { scale: &'a Tensor<1> },
}

/// `x W + b` for burn's `Linear` (`W` `[d_in, d_out]`), as `Linear::forward`.
pub fn linear<const D: usize>(x: Tensor<D>, layer: &burn::nn::Linear) -> Tensor<D> {
    linear_then(x, layer, None, Then::Bias, None)
}

/// Outputs per panel: the rows of gemm's AVX-512 f32 kernel (4 registers of 16).
const PANEL: usize = 64;

/// A frozen layer's weight `[d_in, d_out]` kept a second time as column panels of [`PANEL`]
/// outputs, `[panel][d_in][PANEL]` (the last zero-padded), made on its first use on the CPU.
/// gemm packs the weight into this order on every call (9 % of the DINOv2-S encoder's time at
/// 224 px batch 1) and has no API to keep it packed; a product over one panel and at most
/// [`panel_rows`] input rows reads a panel as it is, so it runs without packing. ONNX Runtime
/// pre-packs its weights once the same way. The layer's weight must not change after the first
/// use (the encoders are frozen).
#[derive(Clone, Debug, Default)]
pub struct Panels(Arc<OnceLock<Vec<f32>>>);

impl Panels {
    fn get(&self, weight: &[f32], [d_in, d_out]: [usize; 2]) -> &[f32] {
        let len = d_out.div_ceil(PANEL) * d_in * PANEL;
        let panels = self.0.get_or_init(|| {
            let mut panels = super::zeros(len);
            panels.par_chunks_mut(d_in * PANEL).enumerate().for_each(|(p, panel)| {
                let first = p * PANEL;
                let width = PANEL.min(d_out - first);
                for (row, out) in weight.chunks_exact(d_out).zip(panel.chunks_exact_mut(PANEL)) {
                    out[..width].copy_from_slice(&row[first..first + width]);
                }
            });
            panels
        });
        // gemm reads the panels through raw pointers: ones made for another shape must not reach it.
        assert_eq!(panels.len(), len, "panels made for a weight of another shape");
        panels
    }
}

/// Input rows per panel product: gemm packs its left operand (here the panel) when a product
/// has more than 8 kernel columns on one thread (6 wide with AVX-512, 4 with AVX2).
fn panel_rows(isa: Isa) -> usize {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => 48,
        _ => 32,
    }
}

/// `y = x W` for `x` `[rows, d_in]` through `W`'s panels, one rayon task per (panel, block of
/// rows), each a single-threaded gemm call that reads the panel in place.
///
/// # Safety
/// `y` must have room for `rows d_out` values; all of them are written, none read.
unsafe fn panel_product(
    y: *mut f32,
    input: &[f32],
    panels: &[f32],
    [rows, d_out, d_in]: [usize; 3],
    isa: Isa,
) {
    let block = panel_rows(isa);
    let blocks = rows.div_ceil(block);
    let y = SendPtr(y);
    (0..d_out.div_ceil(PANEL) * blocks).into_par_iter().for_each(|task| {
        let (p, b) = (task / blocks, task % blocks);
        let (first, row) = (p * PANEL, b * block);
        let (width, height) = (PANEL.min(d_out - first), block.min(rows - row));
        let lhs = Strided::rows(input[row * d_in..].as_ptr(), d_in as isize);
        let rhs = Strided::rows(panels[p * d_in * PANEL..].as_ptr(), PANEL as isize);
        // SAFETY: the input block and the panel hold height x d_in and d_in x PANEL values;
        // each task writes its own block of y's rows and columns.
        unsafe {
            let dst = y.at(row * d_out + first);
            product(dst, d_out as isize, lhs, rhs, [height, width, d_in], 1.0);
        }
    });
}

/// `x W + b`, then what `then` says. On the CPU the product runs as one gemm call over all
/// `[.., d_in]` rows (burn runs `[B, T, d_in] x [d_in, d_out]` as B products, each packing the
/// weight again), parallel inside gemm, or with `panels` (a frozen layer's) as panel products,
/// and bias, activation and residual follow in one parallel pass over the output rather than
/// one single-threaded pass each. Elsewhere burn's operations run. `residual` is required for
/// [`Then::ScaledResidual`] and ignored otherwise.
pub fn linear_then<const D: usize>(
    x: Tensor<D>,
    layer: &burn::nn::Linear,
    panels: Option<&Panels>,
    then: Then<'_>,
    residual: Option<Tensor<D>>,
) -> Tensor<D> {
    let weight = layer.weight.val();
    let bias = layer.bias.as_ref().map(|b| b.val());
    let scale_on_cpu = match &then {
        Then::ScaledResidual { scale } => on_plain_cpu(scale),
        _ => true,
    };
    let weights_on_cpu = on_plain_cpu(&weight) && bias.as_ref().is_none_or(on_plain_cpu);
    // Empty products (nothing for gemm to write) take burn's path too.
    let empty = x.shape().num_elements() == 0 || weight.shape().num_elements() == 0;
    if !on_plain_cpu(&x) || !weights_on_cpu || !scale_on_cpu || empty {
        let y = crate::encoders::cpu_linear::linear(x.clone(), layer)
            .unwrap_or_else(|| layer.forward(x));
        return match then {
            Then::Bias => y,
            Then::Gelu { tanh: false } => gelu(y),
            Then::Gelu { tanh: true } => gelu_tanh(y),
            Then::ScaledResidual { scale } => {
                residual.expect("a residual") + y * scale.clone().unsqueeze()
            }
        };
    }
    let dims = x.dims();
    let [d_in, d_out] = weight.dims();
    let rows = dims[..D - 1].iter().product::<usize>();
    let mut out_dims = dims;
    out_dims[D - 1] = d_out;
    let (input, weight, bias) = (flex_buffer(x), flex_buffer(weight), bias.map(flex_buffer));
    let (input, weight, bias) = (values(&input), values(&weight), bias.as_ref().map(values));
    let isa = Isa::best();
    // Not zeroed first: gemm writes every element without reading it.
    let mut y = Vec::<f32>::with_capacity(rows * d_out);
    // SAFETY: `input` holds rows x d_in values, `weight` d_in x d_out, `y` room for rows x d_out,
    // all of which gemm writes before `set_len`.
    unsafe {
        let dst = y.spare_capacity_mut().as_mut_ptr().cast::<f32>();
        match panels {
            Some(panels) => {
                let panels = panels.get(weight, [d_in, d_out]);
                panel_product(dst, input, panels, [rows, d_out, d_in], isa);
            }
            None => {
                let (lhs, rhs) = (
                    Strided::rows(input.as_ptr(), d_in as isize),
                    Strided::rows(weight.as_ptr(), d_out as isize),
                );
                product_into(dst, lhs, rhs, [rows, d_out, d_in]);
            }
        }
        y.set_len(rows * d_out);
    }
    let task = (CHUNK / d_out).max(1) * d_out;
    match then {
        Then::Bias | Then::Gelu { .. } => {
            let act = match then {
                Then::Gelu { tanh } => Some(tanh),
                _ => None,
            };
            if bias.is_some() || act.is_some() {
                y.par_chunks_mut(task).for_each(|rows| bias_act_rows(isa, rows, bias, d_out, act));
            }
            Tensor::from_data(TensorData::new(y, out_dims), &Device::flex())
        }
        Then::ScaledResidual { scale } => {
            let scale = flex_buffer(scale.clone());
            let scale = values(&scale);
            assert_eq!(scale.len(), d_out, "one scale per output feature");
            let residual = residual.expect("a residual");
            assert_eq!(residual.dims(), out_dims, "the residual has the output's shape");
            map_in_place(residual, |x| {
                x.par_chunks_mut(task)
                    .zip(y.par_chunks(task))
                    .for_each(|(x, y)| scaled_residual_rows(isa, x, y, bias, scale));
            })
        }
    }
}

/// `act(y + b)` for each `d`-long row of `rows`, in place; the activation GELU, its tanh form
/// (`Some(true)`) or none.
pub(in crate::encoders) fn bias_act_rows(
    isa: Isa,
    rows: &mut [f32],
    bias: Option<&[f32]>,
    d: usize,
    act: Option<bool>,
) {
    isa.run(
        #[inline(always)]
        || {
            for row in rows.chunks_exact_mut(d) {
                if let Some(bias) = bias {
                    for (v, b) in row.iter_mut().zip(bias) {
                        *v += b;
                    }
                }
                match act {
                    Some(true) => {
                        for v in row {
                            *v = gelu_tanh_scalar(*v);
                        }
                    }
                    Some(false) => {
                        for v in row {
                            *v = gelu_scalar(*v);
                        }
                    }
                    None => {}
                }
            }
        },
    )
}

/// `x + (y + b) scale` for each `scale.len()`-long row, written over `x`.
fn scaled_residual_rows(isa: Isa, x: &mut [f32], y: &[f32], bias: Option<&[f32]>, scale: &[f32]) {
    let d = scale.len();
    isa.run(
        #[inline(always)]
        || {
            for (x, y) in x.chunks_exact_mut(d).zip(y.chunks_exact(d)) {
                match bias {
                    Some(bias) => {
                        for (((x, y), b), s) in x.iter_mut().zip(y).zip(bias).zip(scale) {
                            *x += (y + b) * s;
                        }
                    }
                    None => {
                        for ((x, y), s) in x.iter_mut().zip(y).zip(scale) {
                            *x += y * s;
                        }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::super::max_difference;
    use super::*;

    /// The linear layer with its epilogues against burn's `Linear` and operations, on
    /// `[B, T, d_in]` input with odd sizes, as one product and as panel products (three panels,
    /// the last partial; row blocks with a remainder).
    #[test]
    fn linear_epilogues_match_burn() {
        let device = Device::flex();
        let ramp = |n: usize, scale: f32, shift: usize| {
            (0..n).map(move |i| (((i + shift) * 37 % 101) as f32 - 50.0) * scale).collect()
        };
        let tensor = |values: Vec<f32>, shape: &[usize]| {
            Tensor::<3>::from_data(TensorData::new(values, shape.to_vec()), &device)
        };
        let (b, t, d_in, d_out) = (3, 37, 40, 2 * PANEL + 2);
        let x = tensor(ramp(b * t * d_in, 0.05, 0), &[b, t, d_in]);
        let weight = Tensor::<2>::from_data(
            TensorData::new(ramp(d_in * d_out, 0.01, 3), [d_in, d_out]),
            &device,
        );
        let bias = Tensor::<1>::from_data(TensorData::new(ramp(d_out, 0.02, 5), [d_out]), &device);
        let layer = burn::nn::Linear {
            weight: burn::module::Param::from_tensor(weight),
            bias: Some(burn::module::Param::from_tensor(bias)),
        };
        let reference = layer.forward(x.clone());
        assert!(max_difference(linear(x.clone(), &layer), reference.clone()) < 1e-5, "linear");
        let panels = Panels::default();
        for panels in [None, Some(&panels)] {
            let ours = linear_then(x.clone(), &layer, panels, Then::Bias, None);
            let what = if panels.is_some() { "panels" } else { "one product" };
            assert!(max_difference(ours, reference.clone()) < 1e-5, "{what}: linear");
            for tanh in [false, true] {
                let ours = linear_then(x.clone(), &layer, panels, Then::Gelu { tanh }, None);
                let want = match tanh {
                    false => burn::tensor::activation::gelu(reference.clone()),
                    true => burn::tensor::activation::gelu_approximate(reference.clone()),
                };
                assert!(max_difference(ours, want) < 1e-5, "{what}: gelu (tanh {tanh})");
            }
            let scale =
                Tensor::<1>::from_data(TensorData::new(ramp(d_out, 0.03, 7), [d_out]), &device);
            let residual = tensor(ramp(b * t * d_out, 0.1, 11), &[b, t, d_out]);
            let then = Then::ScaledResidual { scale: &scale };
            let ours = linear_then(x.clone(), &layer, panels, then, Some(residual.clone()));
            let want = residual + reference.clone() * scale.unsqueeze();
            assert!(max_difference(ours, want) < 1e-5, "{what}: scaled residual");
        }
    }

    /// The epilogues on every instruction set this CPU has against the portable loops.
    #[test]
    fn linear_epilogues_on_every_instruction_set() {
        let d = 45;
        let rows = 29;
        let values: Vec<f32> = (0..rows * d).map(|i| ((i * 53 % 97) as f32 - 48.0) * 0.1).collect();
        let bias: Vec<f32> = (0..d).map(|i| i as f32 * 0.03 - 0.5).collect();
        let scale: Vec<f32> = (0..d).map(|i| 0.1 + i as f32 * 0.01).collect();
        let run = |isa| {
            let mut outs = Vec::new();
            for act in [None, Some(false), Some(true)] {
                let mut y = values.clone();
                bias_act_rows(isa, &mut y, Some(&bias), d, act);
                outs.push(y);
            }
            let mut x: Vec<f32> = values.iter().map(|v| v * 0.7 + 1.0).collect();
            scaled_residual_rows(isa, &mut x, &values, Some(&bias), &scale);
            outs.push(x);
            outs
        };
        let portable = run(Isa::Portable);
        let gelu_f64 = |x: f32| 0.5 * x as f64 * (1.0 + libm::erf(x as f64 / 2f64.sqrt()));
        for (i, (row, out)) in values.chunks_exact(d).zip(portable[1].chunks_exact(d)).enumerate() {
            for j in 0..d {
                let want = gelu_f64(row[j] + bias[j]);
                assert!((out[j] as f64 - want).abs() < 2e-6, "row {i} gelu");
            }
        }
        for isa in Isa::available() {
            for (ours, want) in run(isa).iter().zip(&portable) {
                let worst = ours.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                assert!(worst <= 1e-6, "{isa:?}: {worst}");
            }
        }
    }
}
