//! Sampling: integrate the learned velocity from noise (t = 1) to data (t = 0) with Euler or Heun
//! steps, or the matching reverse SDE with Euler-Maruyama; classifier-free guidance on a time
//! interval; SDEdit variations that start part-way from an existing latent.
//!
//! Every sample's noise comes from its own seed, so a seed gives the same latent whatever the
//! batch it is drawn in.

use anyhow::{Result, bail};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::flow::time_grid;
use super::model::FlowTransformer;
use crate::fae::model::Rope2d;
use crate::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Sampler {
    /// First-order ODE steps.
    Euler,
    /// Second-order ODE steps (two model calls per step).
    Heun,
    /// Euler-Maruyama on the reverse SDE with the same marginals (diffusion w(t) = 2t); the last
    /// step jumps to the predicted data.
    Sde,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleOptions {
    pub sampler: Sampler,
    pub steps: usize,
    /// Timestep shift of the time grid (1 = uniform).
    pub shift: f64,
    /// Guidance scale; 1 turns guidance off.
    pub cfg: f64,
    /// Guidance applies only while `lo <= t <= hi`.
    pub cfg_interval: (f64, f64),
}

impl Default for SampleOptions {
    fn default() -> Self {
        Self { sampler: Sampler::Euler, steps: 50, shift: 1.0, cfg: 1.0, cfg_interval: (0.0, 0.7) }
    }
}

impl SampleOptions {
    pub fn validate(&self) -> Result<()> {
        if self.steps == 0 || self.steps > 10_000 {
            bail!("--steps must be between 1 and 10000, got {}", self.steps);
        }
        if !(self.shift > 0.0 && self.shift.is_finite()) {
            bail!("--shift must be positive, got {}", self.shift);
        }
        if !(self.cfg.is_finite() && self.cfg >= 0.0) {
            bail!("--cfg must be a non-negative number, got {}", self.cfg);
        }
        let (lo, hi) = self.cfg_interval;
        if !(0.0..=1.0).contains(&lo) || !(0.0..=1.0).contains(&hi) || lo > hi {
            bail!("the guidance interval must satisfy 0 <= lo <= hi <= 1, got {lo},{hi}");
        }
        Ok(())
    }

    /// Model calls per image (guidance doubles the batch, not the calls).
    pub fn calls_per_sample(&self) -> usize {
        match self.sampler {
            Sampler::Heun => 2 * self.steps,
            _ => self.steps,
        }
    }
}

/// Stream ids of [`Rng::derive`], so no two uses of a seed share numbers.
const NOISE_STREAM: u64 = 0x006e_6f69_7365;

/// Unit Gaussian noise `[n, T, C]`, one seeded draw per sample and step.
fn noise(seeds: &[u64], step: u64, dims: [usize; 3], device: &Device) -> Tensor<3> {
    let [_, t, c] = dims;
    let values: Vec<f32> =
        seeds.iter().flat_map(|&s| Rng::derive(s, step, NOISE_STREAM).normals(t * c)).collect();
    Tensor::<1>::from_data(TensorData::new(values, [seeds.len() * t * c]), device).reshape([
        seeds.len(),
        t,
        c,
    ])
}

/// Called after each step with (done, total); return `false` to cancel.
pub type OnStep<'a> = &'a mut dyn FnMut(usize, usize) -> bool;

/// New latents (normalised) from pure noise: one per entry of `labels` and `seeds`.
pub fn generate(
    model: &FlowTransformer,
    labels: &[usize],
    seeds: &[u64],
    opts: &SampleOptions,
    device: &Device,
    on_step: OnStep,
) -> Result<Tensor<3>> {
    let (h, w) = model.config.grid;
    let x = noise(seeds, 0, [seeds.len(), h * w, model.config.channels], device);
    integrate(model, x, 1.0, labels, seeds, opts, on_step)
}

/// SDEdit: noises `latents` to time `t_start` and integrates back, so the result keeps the
/// layout of the input while becoming a plausible latent again (harmonises edits).
pub fn vary(
    model: &FlowTransformer,
    latents: Tensor<3>,
    t_start: f64,
    labels: &[usize],
    seeds: &[u64],
    opts: &SampleOptions,
    on_step: OnStep,
) -> Result<Tensor<3>> {
    if !(0.0..=1.0).contains(&t_start) {
        bail!("the variation strength must be between 0 and 1, got {t_start}");
    }
    let eps = noise(seeds, 0, latents.dims(), &latents.device());
    let x = latents * (1.0 - t_start) + eps * t_start;
    integrate(model, x, t_start, labels, seeds, opts, on_step)
}

fn integrate(
    model: &FlowTransformer,
    mut x: Tensor<3>,
    t_start: f64,
    labels: &[usize],
    seeds: &[u64],
    opts: &SampleOptions,
    on_step: OnStep,
) -> Result<Tensor<3>> {
    opts.validate()?;
    let n = x.dims()[0];
    if labels.len() != n || seeds.len() != n {
        bail!("{n} latents need {n} labels and seeds, got {} and {}", labels.len(), seeds.len());
    }
    let device = x.device();
    let rope = model.rope(&device);
    let v = |x: Tensor<3>, t: f64| velocity(model, &rope, x, t, labels, opts);
    let grid = time_grid(t_start, opts.steps, opts.shift);
    for (i, pair) in grid.windows(2).enumerate() {
        let (t, t_next) = (pair[0], pair[1]);
        let dt = t_next - t;
        x = match opts.sampler {
            Sampler::Euler => x.clone() + v(x, t) * dt,
            Sampler::Heun => {
                let v0 = v(x.clone(), t);
                let guess = x.clone() + v0.clone() * dt;
                x + (v0 + v(guess, t_next)) * (dt / 2.0)
            }
            Sampler::Sde if t_next == 0.0 => {
                let vel = v(x.clone(), t);
                x - vel * t
            }
            Sampler::Sde => {
                // Reverse-time SDE with diffusion w = 2t: drift v - (w/2) score, where the score
                // is -eps_hat / t and eps_hat = x + (1 - t) v.
                let vel = v(x.clone(), t);
                let eps_hat = x.clone() + vel.clone() * (1.0 - t);
                let z = noise(seeds, i as u64 + 1, x.dims(), &device);
                let h = -dt;
                x - vel * h - eps_hat * h + z * (2.0 * t * h).sqrt()
            }
        };
        if !on_step(i + 1, opts.steps) {
            bail!("cancelled");
        }
    }
    Ok(x)
}

/// The model's velocity, with classifier-free guidance inside the guidance interval.
fn velocity(
    model: &FlowTransformer,
    rope: &Rope2d,
    x: Tensor<3>,
    t: f64,
    labels: &[usize],
    opts: &SampleOptions,
) -> Tensor<3> {
    let n = x.dims()[0];
    let device = x.device();
    let null = model.config.null_class();
    let guided = opts.cfg != 1.0
        && (opts.cfg_interval.0..=opts.cfg_interval.1).contains(&t)
        && labels.iter().any(|&l| l != null);
    if !guided {
        let times = Tensor::<1>::full([n], t as f32, &device);
        return model.forward(x, times, labels, rope);
    }
    let both_labels: Vec<usize> =
        labels.iter().copied().chain(std::iter::repeat_n(null, n)).collect();
    let times = Tensor::<1>::full([2 * n], t as f32, &device);
    let both = model.forward(Tensor::cat(vec![x.clone(), x], 0), times, &both_labels, rope);
    let cond = both.clone().narrow(0, 0, n);
    let uncond = both.narrow(0, n, n);
    uncond.clone() + (cond - uncond) * opts.cfg
}
