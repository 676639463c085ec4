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
        let has_model = crate::assets::path(crate::fae::DEFAULT_MODEL).is_ok();
        if wants("interaction") && (options.stage.is_some() || has_model) {
            interaction(options, &compute, &mut emit)?;
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

/// Interaction latency: a brush stroke on the latent (applied through the editing engine, as the
/// app does) to the regenerated image, with the built-in model on the sample photo.
fn interaction(
    options: &BenchOptions,
    compute: &Compute,
    emit: &mut impl FnMut(&BenchRow),
) -> Result<()> {
    use crate::edit::history::History;
    use crate::edit::mask::Mask;
    use crate::edit::ops::{Edit, LatentSource};
    use crate::grid::Grid;

    struct NoSources;
    impl LatentSource for NoSources {
        fn latent(&self, path: &str) -> Result<Grid> {
            bail!("no source {path}")
        }
        fn latents_in(&self, folder: &str) -> Result<Vec<Grid>> {
            bail!("no folder {folder}")
        }
    }
    let fae = crate::fae::Fae::load(None, &compute.device)?;
    let sample = crate::assets::path("samples/chelsea.png")?;
    for &size in &options.sizes {
        let encoded = fae.encode_image(&sample, Some(size))?;
        let mut history = History::new(encoded.latent);
        let mut seed = 0u64;
        let (median_ms, min_ms) = time_ms(options.runs, &compute.device, || {
            seed += 1;
            let x = 0.2 + 0.6 * ((seed % 7) as f32 / 7.0);
            let stroke = Mask::stroke(vec![[x, 0.3], [x + 0.1, 0.5], [x, 0.7]], 0.08, 0.5);
            let edit = Edit::Noise { seed, sigma: 0.8, mask: Some(stroke) };
            if let Ok(latent) = history.push(edit, &NoSources) {
                let latent = latent.clone();
                let _ = fae.decode(&latent);
            }
        })?;
        emit(&BenchRow {
            stage: "interaction".into(),
            backend: compute.kind.name().into(),
            adapter: compute.adapter.clone(),
            model: format!("{} + FAE", fae.config.encoder),
            size,
            batch: 1,
            runs: options.runs,
            median_ms,
            min_ms,
            peak_mem_mib: peak_mem(compute),
        });
    }
    Ok(())
}
