//! Layer normalisation over the last dimension, rows split across threads.

use anyhow::Result;
use burn::prelude::*;
use rayon::prelude::*;

use super::{CHUNK, Isa, flex_buffer, host_values, on_plain_cpu, reduce_lanes, values, zeros};
use crate::weights::TensorReader;

/// Layer normalisation over the last dimension, as `nn.LayerNorm(dim, eps)`.
#[derive(Module, Debug)]
pub struct LayerNorm {
    pub inner: burn::nn::LayerNorm,
    #[module(skip)]
    pub eps: f64,
}

impl LayerNorm {
    /// Loads a PyTorch `nn.LayerNorm` (`weight`, `bias`).
    pub fn load(r: &TensorReader, name: &str, dim: usize, eps: f64) -> Result<Self> {
        let mut inner = burn::nn::LayerNormConfig::new(dim).with_epsilon(eps).init(r.device());
        inner.gamma = r.param(&format!("{name}.weight"), [dim])?;
        inner.beta = Some(r.param(&format!("{name}.bias"), [dim])?);
        Ok(Self { inner, eps })
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if !on_plain_cpu(&x) {
            // Under autodiff (the frozen encoder of the perceptual term) the fused node.
            let (gamma, beta) = (self.inner.gamma.val(), self.inner.beta.as_ref().map(|b| b.val()));
            let fused = beta
                .and_then(|b| crate::encoders::cpu_grad::layer_norm(x.clone(), gamma, b, self.eps));
            return fused.unwrap_or_else(|| self.inner.forward(x));
        }
        let gamma = host_values(self.inner.gamma.val());
        let beta = self.inner.beta.as_ref().map(|b| host_values(b.val()));
        let dim = gamma.len();
        let eps = self.eps as f32;
        let task = (CHUNK / dim).max(1) * dim;
        let isa = Isa::best();
        // Read in place and written to a new buffer in parallel: the input is usually still
        // held by the residual stream, so burn would first copy it on this thread alone.
        let dims = x.dims();
        let input = flex_buffer(x);
        let input = values(&input);
        let mut y = zeros(input.len());
        y.par_chunks_mut(task)
            .zip(input.par_chunks(task))
            .for_each(|(out, rows)| layer_norm_rows(isa, rows, out, &gamma, beta.as_deref(), eps));
        Tensor::from_data(TensorData::new(y, dims), &Device::flex())
    }
}

/// Normalises each `gamma.len()`-long row of `rows` into the same row of `out`.
pub(super) fn layer_norm_rows(
    isa: Isa,
    rows: &[f32],
    out: &mut [f32],
    gamma: &[f32],
    beta: Option<&[f32]>,
    eps: f32,
) {
    let dim = gamma.len();
    isa.run(
        #[inline(always)]
        || {
            for (row, out) in rows.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
                // Two passes over the row (mean, then variance) as the reference does.
                let mean = reduce_lanes(row, 0.0, |v| v, |a, b| a + b) / dim as f32;
                let square = |v: f32| (v - mean) * (v - mean);
                let var = reduce_lanes(row, 0.0, square, |a, b| a + b) / dim as f32;
                let inv = 1.0 / (var + eps).sqrt();
                match beta {
                    Some(beta) => {
                        for (((o, v), g), b) in out.iter_mut().zip(row).zip(gamma).zip(beta) {
                            *o = (v - mean) * inv * g + b;
                        }
                    }
                    None => {
                        for ((o, v), g) in out.iter_mut().zip(row).zip(gamma) {
                            *o = (v - mean) * inv * g;
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
    use burn::module::Param;

    #[test]
    fn layer_norm_matches_burn() {
        let device = Device::flex();
        let mut inner = burn::nn::LayerNormConfig::new(48).with_epsilon(1e-6).init(&device);
        let ramp =
            |n: usize, scale: f32| (0..n).map(move |i| ((i * 37 % 101) as f32 - 50.0) * scale);
        let vector = |scale| {
            Tensor::<1>::from_data(TensorData::new(ramp(48, scale).collect(), [48]), &device)
        };
        inner.gamma = Param::from_tensor(vector(0.03));
        inner.beta = Some(Param::from_tensor(vector(0.01)));
        let norm = LayerNorm { inner, eps: 1e-6 };
        let values: Vec<f32> = ramp(3 * 500 * 48, 0.2).map(|v| v + 7.0).collect();
        let x = Tensor::<3>::from_data(TensorData::new(values, [3, 500, 48]), &device);
        let worst = max_difference(norm.forward(x.clone()), norm.inner.forward(x));
        assert!(worst < 1e-5, "max |layer norm difference| {worst}");
    }
}
