//! Benchmarks: median wall time of each pipeline stage, per backend, size and batch.
//!
//! One JSON object per line so scripts can collect and compare runs.

use std::time::Instant;

use anyhow::{Result, bail};
use burn::prelude::*;
use serde::Serialize;

use crate::backend::{self, BackendChoice, Compute};
use crate::encoders::source;

pub const STAGES: &[&str] = &["encoder", "interaction"];

#[derive(Debug, Serialize)]
pub struct BenchRow {
    pub stage: String,
    pub backend: String,
    pub adapter: String,
    pub model: String,
    pub size: usize,
    pub batch: usize,
    pub runs: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    /// Peak resident memory of the process (CPU) or bytes reserved by the GPU memory pool.
    pub peak_mem_mib: Option<f64>,
}

pub struct BenchOptions {
    pub stage: Option<String>,
    pub backend: BackendChoice,
    pub encoder: Option<String>,
    pub runs: usize,
    pub sizes: Vec<usize>,
    pub batches: Vec<usize>,
}

/// Backends to measure: the one asked for, or under `auto` the CPU and any hardware GPU.
fn backends(choice: BackendChoice) -> Result<Vec<Compute>> {
    Ok(match choice {
        BackendChoice::Auto => {
            let mut list = vec![backend::cpu()];
            if backend::has_gpu() {
                list.push(backend::wgpu()?);
            }
            list
        }
        other => vec![backend::select(other)?],
    })
}

/// Runs `f` once to warm up, then `runs` times, returning (median, min) in milliseconds.
pub fn time_ms(runs: usize, device: &Device, mut f: impl FnMut()) -> Result<(f64, f64)> {
    f();
    device.sync().map_err(|e| anyhow::anyhow!("device error: {e:?}"))?;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        f();
        device.sync().map_err(|e| anyhow::anyhow!("device error: {e:?}"))?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], times[0]))
}

fn peak_mem(compute: &Compute) -> Option<f64> {
    match compute.kind {
        backend::BackendKind::Cpu => backend::peak_rss_mib(),
        backend::BackendKind::Wgpu => {
            compute.device.memory_pool_usage().map(|u| u.bytes_reserved as f64 / (1024.0 * 1024.0))
        }
    }
}

/// Runs the selected stages, calling `emit` with each row as soon as it is measured.
pub fn run(options: &BenchOptions, mut emit: impl FnMut(&BenchRow)) -> Result<()> {
    if let Some(stage) = &options.stage {
        if !STAGES.contains(&stage.as_str()) {
            bail!("unknown stage `{stage}` (available: {})", STAGES.join(", "));
        }
    }
    let wants = |stage: &str| options.stage.as_deref().is_none_or(|s| s == stage);
    for compute in backends(options.backend)? {
        let has_model = crate::assets::path(crate::fae::DEFAULT_MODEL).is_ok()
            || std::env::var_os(crate::app::MODEL_ENV).is_some();
        if wants("interaction") && (options.stage.is_some() || has_model) {
            for row in crate::app::latency::interaction(&compute, options.runs, &options.sizes)? {
                emit(&row);
            }
        }
        if !wants("encoder") {
            continue;
        }
        let encoder = source::load(options.encoder.as_deref(), &compute.device)?;
        let info = encoder.info().clone();
        for &size in &options.sizes {
            info.check_size(size, size)?;
            for &batch in &options.batches {
                let pixels = Tensor::<4>::random(
                    [batch, 3, size, size],
                    burn::tensor::Distribution::Normal(0.0, 1.0),
                    &compute.device,
                );
                let (median_ms, min_ms) = time_ms(options.runs, &compute.device, || {
                    let _ = encoder.forward(pixels.clone());
                })?;
                emit(&BenchRow {
                    stage: "encoder".into(),
                    backend: compute.kind.name().into(),
                    adapter: compute.adapter.clone(),
                    model: info.name.clone(),
                    size,
                    batch,
                    runs: options.runs,
                    median_ms,
                    min_ms,
                    peak_mem_mib: peak_mem(&compute),
                });
            }
        }
    }
    Ok(())
}
