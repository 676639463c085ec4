//! Pieces every training loop uses: the learning-rate schedule, EMA weights, the progress bar.

use std::collections::HashMap;

use burn::module::{Module, Param};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;

use crate::param_paths::{self, PathMapper, PathVisitor};

/// A run's `metrics.jsonl`, opened for appending (a resumed run continues it): `log` writes one
/// record a line and hands it to `on_event` (the app's curves).
pub fn metrics_log(
    dir: &std::path::Path,
    mut on_event: impl FnMut(&serde_json::Value),
) -> anyhow::Result<impl FnMut(serde_json::Value) -> anyhow::Result<()>> {
    use anyhow::Context;
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("metrics.jsonl"))
        .context("cannot open metrics.jsonl")?;
    Ok(move |record: serde_json::Value| -> anyhow::Result<()> {
        writeln!(file, "{record}")?;
        on_event(&record);
        Ok(())
    })
}

/// Skips steps whose loss is not finite, halving the learning rate each time.
#[derive(Clone, Copy, Debug)]
pub struct NanGuard {
    pub lr_scale: f64,
    pub nan_steps: u64,
}

impl NanGuard {
    pub fn new(lr_scale: f64, nan_steps: u64) -> Self {
        Self { lr_scale, nan_steps }
    }

    /// `None` for a finite loss; otherwise the metrics record of the skipped step, after telling
    /// the user on `bar`.
    pub fn check(
        &mut self,
        step: u64,
        loss: f64,
        bar: &indicatif::ProgressBar,
    ) -> Option<serde_json::Value> {
        if loss.is_finite() {
            return None;
        }
        self.nan_steps += 1;
        self.lr_scale *= 0.5;
        bar.println(format!("step {step}: loss is {loss}, step skipped, learning rate halved"));
        Some(
            serde_json::json!({"step": step, "event": "non_finite_loss", "lr_scale": self.lr_scale}),
        )
    }
}

/// Backpropagates `loss` and takes one optimiser step of `model` at learning rate `lr`.
pub fn update<M: Module>(model: M, optimizer: &mut ModuleOptimizer, lr: f64, loss: Tensor<1>) -> M {
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    optimizer.step(lr, model, grads)
}

/// The warm-up's length: `warmup` steps, at most a tenth of the run, at least one.
fn warmup_steps(len: u64, warmup: u64) -> u64 {
    warmup.min(len / 10).max(1)
}

/// Linear warm-up over `warmup` steps (at most a tenth of the run), then `lr` held.
pub fn warmup_constant(lr: f64, pos: u64, len: u64, warmup: u64) -> f64 {
    lr * ((pos + 1) as f64 / warmup_steps(len, warmup) as f64).min(1.0)
}

/// Linear warm-up over `warmup` steps (at most a tenth of the run), then cosine decay to a tenth.
pub fn warmup_cosine(lr: f64, pos: u64, len: u64, warmup: u64) -> f64 {
    let warmup = warmup_steps(len, warmup);
    if pos < warmup {
        return lr * (pos + 1) as f64 / warmup as f64;
    }
    let t = (pos - warmup) as f64 / (len - warmup).max(1) as f64;
    lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()))
}

pub fn progress_bar(show: bool, steps: u64, step: u64) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(steps);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} {msg} [{per_sec} steps, ETA {eta}]",
        )
        .expect("valid template"),
    );
    bar.set_position(step);
    bar
}

/// Collects each parameter's current value by path (on the non-autodiff device).
#[derive(Default)]
struct Snapshot(HashMap<String, Tensor<1>>);

impl PathVisitor for Snapshot {
    fn visit<const D: usize>(&mut self, path: &str, param: &Param<Tensor<D>>) {
        let t = param.val();
        let n = t.shape().num_elements();
        self.0.insert(path.to_string(), t.reshape([n]));
    }
}

struct EmaBlend {
    values: HashMap<String, Tensor<1>>,
    decay: f64,
}

impl PathMapper for EmaBlend {
    fn map<const D: usize>(&mut self, path: &str, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(current) = self.values.remove(path) else { return param };
        let decay = self.decay;
        // Written as a step towards the current value, so a frozen parameter (equal in both)
        // stays exactly as it is: `x * d + x * (1 - d)` can differ from `x` in the last bit.
        param.map(|ema| {
            let dims = ema.dims();
            ema.clone() + (current.reshape(dims) - ema) * (1.0 - decay)
        })
    }
}

/// EMA with a warm-up (`min(decay, (1 + step) / (10 + step))`) so early weights do not linger.
pub fn ema_update<M: Module>(ema: M, model: &M, decay: f64, step: u64) -> M {
    let decay = decay.min((1.0 + step as f64) / (10.0 + step as f64));
    let values = param_paths::visit(&model.valid(), Snapshot::default()).0;
    param_paths::map(ema, EmaBlend { values, decay }).0
}
