//! Benchmarks: median wall time of each pipeline stage, per backend, size and batch.
//!
//! One JSON object per line so scripts can collect and compare runs.

use std::time::Instant;

use anyhow::{Result, bail};
use burn::prelude::*;
use serde::Serialize;

use crate::backend::{self, BackendChoice, Compute};
use crate::encoders::source;
use crate::fae::Fae;

pub const STAGES: &[&str] = &[
    "encoder",
    "fae_encode",
    "fae_decode",
    "pixel_decode",
    "roundtrip",
    "train_step",
    "interaction",
    "generator_step",
    "sample_image",
    "generator_train_step",
    "composite",
    "train_fae",
    "train_pixel",
    "train_pixel_decoded",
    "train_generator",
];

/// The training stages: real optimiser steps of the built-in models, as `train` and
/// `train-generator` take them.
pub const TRAIN_STAGES: &[&str] =
    &["train_fae", "train_pixel", "train_pixel_decoded", "train_generator"];

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
    /// Peak resident memory of the process (CPU) or bytes reserved by the GPU memory pool. The
    /// training stages reset the CPU high-water mark first, so theirs is the stage's own peak.
    pub peak_mem_mib: Option<f64>,
    /// Training stages: images (latents, for the generator) per second at the minimum step time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images_per_s: Option<f64>,
    /// Training stages: the minimum time of one whole step (loss, backward, optimiser, EMA).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ms_per_step: Option<f64>,
}

pub struct BenchOptions {
    pub stage: Option<String>,
    pub backend: BackendChoice,
    pub encoder: Option<String>,
    pub runs: usize,
    pub sizes: Vec<usize>,
    pub batches: Vec<usize>,
    /// FAE checkpoint for the model stages (the built-in model when `None`).
    pub model: Option<std::path::PathBuf>,
    /// Generator checkpoint for the generator stages (the built-in one, else an untrained tiny
    /// model, when `None`).
    pub generator: Option<std::path::PathBuf>,
    /// Image size of the training stages (the built-in generator needs 224).
    pub train_size: usize,
    /// Batch of the training stages.
    pub train_batch: usize,
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
    if let Some(stage) = options.stage.as_ref().filter(|s| !STAGES.contains(&s.as_str())) {
        bail!("unknown stage `{stage}` (available: {})", STAGES.join(", "));
    }
    let wanted = |s: &str| options.stage.as_deref().is_none_or(|w| w == s);
    if wanted("composite") {
        composite_rows(options.runs, &mut emit)?;
    }
    for compute in backends(options.backend)? {
        for stage in TRAIN_STAGES.iter().filter(|s| options.stage.as_deref() == Some(**s)) {
            // Only when asked for by name: each takes a minute or more at batch 8.
            emit(&train_stage(options, &compute, stage)?);
        }
        // Brush stroke to regenerated image, through the app's worker (needs a model).
        let has_model = crate::assets::path(crate::fae::DEFAULT_MODEL).is_ok()
            || std::env::var_os(crate::app::MODEL_ENV).is_some();
        if wanted("interaction") && (options.stage.is_some() || has_model) {
            for row in crate::app::latency::interaction(&compute, options.runs, &options.sizes)? {
                emit(&row);
            }
        }
        let mut row = |stage: &str,
                       model: &str,
                       size: usize,
                       batch: usize,
                       (median_ms, min_ms): (f64, f64)| {
            emit(&BenchRow {
                stage: stage.into(),
                backend: compute.kind.name().into(),
                adapter: compute.adapter.clone(),
                model: model.into(),
                size,
                batch,
                runs: options.runs,
                median_ms,
                min_ms,
                peak_mem_mib: peak_mem(&compute),
                images_per_s: None,
                ms_per_step: None,
            })
        };
        let device = &compute.device;
        if wanted("encoder") {
            let encoder = source::load(options.encoder.as_deref(), device)?;
            let info = encoder.info().clone();
            for &size in &options.sizes {
                info.check_size(size, size)?;
                for &batch in &options.batches {
                    let pixels = random([batch, 3, size, size], device);
                    let t = time_ms(options.runs, device, || {
                        let _ = encoder.forward(pixels.clone());
                    })?;
                    row("encoder", &info.name, size, batch, t);
                }
            }
        }
        if ["generator_step", "sample_image", "generator_train_step"].iter().any(|s| wanted(s)) {
            generator_stages(options, &compute, &wanted, &mut row)?;
        }
        let model_stages = ["fae_encode", "fae_decode", "pixel_decode", "roundtrip", "train_step"];
        if !model_stages.iter().any(|s| wanted(s)) {
            continue;
        }
        let fae = match Fae::load(options.model.as_deref(), device) {
            Ok(fae) => fae,
            Err(e) if options.stage.is_none() => {
                eprintln!("note: model stages skipped: {e:#}");
                continue;
            }
            Err(e) => return Err(e),
        };
        let name =
            options.model.as_ref().map_or("fae-default".to_string(), |p| p.display().to_string());
        let (d, c) = (fae.config.encoder_dim, fae.config.latent_channels);
        for &size in &options.sizes {
            fae.encoder.info().check_size(size, size)?;
            let g = size / fae.config.patch_size;
            for &batch in &options.batches {
                let features = random([batch, g * g, d], device);
                let latent = random([batch, g * g, c], device);
                if wanted("fae_encode") {
                    let t = time_ms(options.runs, device, || {
                        let _ = fae.encode_features(features.clone());
                    })?;
                    row("fae_encode", &name, size, batch, t);
                }
                if wanted("fae_decode") {
                    let t = time_ms(options.runs, device, || {
                        let _ = fae.model.feature_decoder.forward(latent.clone(), (g, g));
                    })?;
                    row("fae_decode", &name, size, batch, t);
                }
                if wanted("pixel_decode") {
                    let t = time_ms(options.runs, device, || {
                        let _ = fae.model.pixel_decoder.forward(features.clone(), (g, g));
                    })?;
                    row("pixel_decode", &name, size, batch, t);
                }
                if wanted("roundtrip") {
                    let pixels = random([batch, 3, size, size], device);
                    let t = time_ms(options.runs, device, || {
                        let tokens = fae.encoder.forward(pixels.clone()).patch_tokens.reshape([
                            batch,
                            g * g,
                            d,
                        ]);
                        let _ = fae.decode_latent(fae.encode_features(tokens), (g, g));
                    })?;
                    row("roundtrip", &name, size, batch, t);
                }
                if wanted("train_step") {
                    let t = train_step_ms(&fae, batch, g, options.runs, device)?;
                    row("train_step", &name, size, batch, t);
                }
            }
        }
    }
    Ok(())
}

/// Photo sizes of the composite stage: about 1, 12 and 24 megapixels.
pub const COMPOSITE_PHOTOS: [(u32, u32); 3] = [(1155, 866), (4000, 3000), (6000, 4000)];

/// Compositing a 224 px decode into photos of 1, 12 and 24 megapixels on the CPU (the stage
/// runs on the CPU whatever the backend), in place: a corner edit pasted through a 32 px
/// feather with colour matching, and detail transfer of an edit over the whole image. `size`
/// is megapixels.
fn composite_rows(runs: usize, emit: &mut dyn FnMut(&BenchRow)) -> Result<()> {
    use crate::composite::{CompositeMode, CompositeOptions, Placement, composite_in_place};
    use image::{Rgb, Rgb32FImage};
    let decode = |shift: f32| {
        Rgb32FImage::from_fn(224, 224, |x, y| {
            Rgb([x as f32 / 224.0, y as f32 / 224.0, (0.5 + shift).min(1.0)])
        })
    };
    let (before, after) = (decode(0.0), decode(0.2));
    let grid = 16;
    let corner: Vec<f32> =
        (0..grid * grid)
            .map(|i| {
                if (8..14).contains(&(i / grid)) && (8..14).contains(&(i % grid)) {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
    let whole = vec![1.0; grid * grid];
    let cases = [
        ("mask corner, feather 32, colour match", CompositeMode::Mask, &corner, true),
        ("detail whole image, feather 32", CompositeMode::Detail, &whole, false),
    ];
    for (w, h) in COMPOSITE_PHOTOS {
        let mut photo = Rgb32FImage::from_fn(w, h, |x, y| {
            let t = ((x ^ y) & 7) as f32 / 32.0;
            Rgb([x as f32 / w as f32, y as f32 / h as f32, t])
        });
        let placement = Placement::centre_crop((w, h), (224, 224), (grid, grid));
        for (name, mode, mask, color_match) in cases {
            let options = CompositeOptions { mode, color_match, ..Default::default() };
            let mut failure = None;
            let (median_ms, min_ms) = time_ms(runs, &crate::backend::cpu().device, || {
                // In place, as the command line does (the work is the same on every run).
                let result = composite_in_place(
                    &mut photo,
                    Some(&before),
                    &after,
                    mask,
                    &placement,
                    &options,
                );
                if let Err(e) = result {
                    failure = Some(e);
                }
            })?;
            if let Some(e) = failure {
                return Err(e);
            }
            emit(&BenchRow {
                stage: "composite".into(),
                backend: "cpu".into(),
                adapter: format!("rayon, {} threads", rayon::current_num_threads()),
                model: name.into(),
                size: ((w as f64 * h as f64) / 1e6).round() as usize,
                batch: 1,
                runs,
                median_ms,
                min_ms,
                peak_mem_mib: backend::peak_rss_mib(),
                images_per_s: None,
                ms_per_step: None,
            });
        }
    }
    Ok(())
}

fn random<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, burn::tensor::Distribution::Normal(0.0, 1.0), device)
}

/// One optimiser step of the whole model (feature loss through the FAE, L1 through the pixel
/// decoder) on random features, as training does after the features are cached.
fn train_step_ms(
    fae: &Fae,
    batch: usize,
    g: usize,
    runs: usize,
    device: &Device,
) -> Result<(f64, f64)> {
    use burn::optim::{AdamWConfig, GradientsParams};
    let ad = device.clone().autodiff();
    let mut model = crate::fae::FaeModel::new(&fae.config, &ad);
    let mut optim = AdamWConfig::new().init();
    let features = random([batch, g * g, fae.config.encoder_dim], &ad);
    let p = fae.config.pix_patch;
    let target = random([batch, 3, g * p, g * p], &ad);
    time_ms(runs, device, || {
        let (mean, _) = model.encoder.forward(features.clone());
        let restored = model.feature_decoder.forward(mean, (g, g));
        let image = model.pixel_decoder.forward(features.clone(), (g, g));
        let loss =
            (restored - features.clone()).square().mean() + (image - target.clone()).abs().mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-4, model.clone(), grads);
    })
}

/// Reports one measurement: stage, model, size, batch, (median, min) ms.
type EmitRow<'a> = dyn FnMut(&str, &str, usize, usize, (f64, f64)) + 'a;

/// The flow transformer: one sampling step (one model call on a batch of latents), one whole
/// image (50 Euler steps, per image of the batch) and one training step. `size` is the image
/// size, the latent grid being size / 14 as with the built-in encoder.
fn generator_stages(
    options: &BenchOptions,
    compute: &Compute,
    wanted: &dyn Fn(&str) -> bool,
    row: &mut EmitRow,
) -> Result<()> {
    use crate::generator::{GeneratorConfig, GeneratorFile, GeneratorSize, SampleOptions, sample};
    let device = &compute.device;
    let builtin = crate::assets::path(crate::generator::DEFAULT_GENERATOR).ok();
    let (file, name) = match options.generator.clone().or(builtin) {
        Some(path) => (
            Some(GeneratorFile::open(&path)?),
            path.file_name().map_or(String::new(), |n| n.to_string_lossy().into_owned()),
        ),
        None => (None, "tiny (untrained)".to_string()),
    };
    for &size in &options.sizes {
        let g = size / 14;
        let (model, train_model) = match &file {
            Some(f) if f.config.grid == (g, g) => {
                (f.model(device)?, f.model(&device.clone().autodiff())?)
            }
            Some(f) => bail!(
                "the generator works on {:?} latents, not {g}x{g} (use --sizes {})",
                f.config.grid,
                f.config.grid.0 * 14
            ),
            None => {
                let cfg = GeneratorConfig::new(GeneratorSize::Tiny, (g, g), 32);
                let m = crate::generator::model::init(&cfg, 0, device);
                (m, crate::generator::model::init(&cfg, 0, &device.clone().autodiff()))
            }
        };
        let (h, w) = model.config.grid;
        let c = model.config.channels;
        let rope = model.rope(device);
        for &batch in &options.batches {
            let labels = vec![model.config.null_class(); batch];
            if wanted("generator_step") {
                let x = random([batch, h * w, c], device);
                let t = Tensor::<1>::full([batch], 0.5, device);
                let time = time_ms(options.runs, device, || {
                    let _ = model.forward(x.clone(), t.clone(), &labels, &rope);
                })?;
                row("generator_step", &name, size, batch, time);
            }
            if wanted("sample_image") {
                let seeds: Vec<u64> = (0..batch as u64).collect();
                let opts = SampleOptions::default();
                let (median, min) = time_ms(options.runs.min(3), device, || {
                    let _ =
                        sample::generate(&model, &labels, &seeds, &opts, device, &mut |_, _| true);
                })?;
                row(
                    "sample_image",
                    &name,
                    size,
                    batch,
                    (median / batch as f64, min / batch as f64),
                );
            }
            if wanted("generator_train_step") {
                use burn::optim::{AdamWConfig, GradientsParams};
                let ad = device.clone().autodiff();
                let mut m = train_model.clone();
                let mut optim = AdamWConfig::new().init();
                let x = random([batch, h * w, c], &ad);
                let target = random([batch, h * w, c], &ad);
                let t = Tensor::<1>::full([batch], 0.5, &ad);
                let rope = m.rope(&ad);
                let time = time_ms(options.runs, device, || {
                    let loss = (m.forward(x.clone(), t.clone(), &labels, &rope) - target.clone())
                        .square()
                        .mean();
                    let grads = GradientsParams::from_grads(loss.backward(), &m);
                    m = optim.step(1e-4, m.clone(), grads);
                })?;
                row("generator_train_step", &name, size, batch, time);
            }
        }
    }
    Ok(())
}

/// One optimiser step of a training stage, through the trainers' own step functions.
type TrainStep<'a> = Box<dyn FnMut() + 'a>;

/// Times real training steps of `stage` (one of [`TRAIN_STAGES`]) on the built-in model (or
/// `options.model` / `options.generator`) at `options.train_size` and `options.train_batch`,
/// with the default loss terms of `train` (feature MSE + KL + cosine; L1 + perceptual) and its
/// optimiser, EMA update and loss read-back, on random features and images.
fn train_stage(options: &BenchOptions, compute: &Compute, stage: &str) -> Result<BenchRow> {
    use crate::train::shared::{ema_update, update};
    use crate::train::step::{self, Phase, StepContext};
    use crate::train::{TrainOptions, run::Stage};
    let device = &compute.device;
    let ad = device.clone().autodiff();
    let (size, batch) = (options.train_size, options.train_batch.max(1));
    let mut defaults = TrainOptions::new("bench".into(), "bench".into());
    defaults.size = size;
    backend::reset_peak_rss();
    let lr = defaults.lr;
    let decay = defaults.ema_decay;
    let name;
    let (mut run_step, size): (TrainStep, usize) = if stage == "train_generator" {
        use crate::generator::GeneratorFile;
        use crate::generator::train::GeneratorTrainOptions;
        use crate::generator::train::{flow_loss, optimizer};
        let path = match &options.generator {
            Some(p) => p.clone(),
            None => crate::assets::path(crate::generator::DEFAULT_GENERATOR)?,
        };
        name = path.file_name().map_or(String::new(), |n| n.to_string_lossy().into_owned());
        let file = GeneratorFile::open(&path)?;
        let (h, w) = file.config.grid;
        if size != h * 14 {
            bail!("the generator works on {h}x{w} latents: use --train-size {}", h * 14);
        }
        let c = file.config.channels;
        let decay = GeneratorTrainOptions::new("b".into(), "b".into()).ema_decay;
        let mut model = Some(file.train_model(&ad)?);
        let mut ema = Some(file.model(device)?);
        let mut optim = optimizer();
        let rope = model.as_ref().expect("model").rope(&ad);
        let x0 = random([batch, h * w, c], &ad);
        let eps = random([batch, h * w, c], &ad);
        let times: Vec<f32> = (0..batch).map(|i| (i as f32 + 0.5) / batch as f32).collect();
        let labels: Vec<usize> = (0..batch).map(|i| i % (file.config.classes.len() + 1)).collect();
        let mut k = 0;
        let f = move || {
            let m = model.take().expect("model");
            let loss = flow_loss(&m, x0.clone(), eps.clone(), times.clone(), &labels, &rope);
            let _ = loss.clone().into_scalar::<f32>();
            let m = update(m, &mut optim, lr, loss);
            ema = Some(ema_update(ema.take().expect("ema"), &m, decay, k));
            model = Some(m);
            k += 1;
        };
        (Box::new(f), size)
    } else {
        use crate::fae::CheckpointFile;
        let path = match &options.model {
            Some(p) => p.clone(),
            None => crate::assets::path(crate::fae::DEFAULT_MODEL)?,
        };
        name = path.file_name().map_or(String::new(), |n| n.to_string_lossy().into_owned());
        let ckpt = CheckpointFile::open(&path)?;
        let config = ckpt.config.clone();
        let (phase, run_stage) = match stage {
            "train_fae" => (Phase::Fae, Stage::Fae),
            "train_pixel" => (Phase::PixelNoisy, Stage::Pixel),
            _ => (Phase::PixelDecoded, Stage::Pixel),
        };
        defaults.stage = run_stage;
        let perceptual = if defaults.perceptual > 0.0 && phase != Phase::Fae {
            Some(source::load(Some(&config.encoder), &ad)?)
        } else {
            None
        };
        perceptual.as_ref().map(|e| e.info().check_size(size, size)).transpose()?;
        let g = size / config.patch_size;
        let features = random([batch, g * g, config.encoder_dim], &ad);
        let targets = (phase != Phase::Fae).then(|| {
            Tensor::<4>::random(
                [batch, 3, size, size],
                burn::tensor::Distribution::Uniform(0.0, 1.0),
                &ad,
            )
        });
        let mut model = Some(ckpt.model(&ad)?);
        let mut ema = Some(ckpt.model(device)?);
        let mut optim = step::optimizer(defaults.beta2);
        let mut k = 0;
        let f = move || {
            let context = StepContext {
                config: &config,
                options: &defaults,
                grid: (g, g),
                perceptual: perceptual.as_deref(),
            };
            let mut rng = crate::rng::Rng::derive(defaults.seed, k, 0);
            let m = model.take().expect("model");
            let out = context.loss(&m, phase, features.clone(), targets.clone(), &mut rng, None);
            let _ = out.loss.clone().into_scalar::<f32>();
            let m = update(m, &mut optim, lr, out.loss);
            ema = Some(ema_update(ema.take().expect("ema"), &m, decay, k));
            model = Some(m);
            k += 1;
        };
        (Box::new(f), size)
    };
    let (median_ms, min_ms) = time_ms(options.runs, device, &mut run_step)?;
    drop(run_step);
    Ok(BenchRow {
        stage: stage.into(),
        backend: compute.kind.name().into(),
        adapter: compute.adapter.clone(),
        model: name,
        size,
        batch,
        runs: options.runs,
        median_ms,
        min_ms,
        peak_mem_mib: peak_mem(compute),
        images_per_s: Some(batch as f64 * 1e3 / min_ms),
        ms_per_step: Some(min_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each training stage runs real steps of the built-in models and reports sane figures
    /// (small sizes and one image, so the test is quick; speed is measured by the bench itself).
    #[test]
    fn training_stages_run_and_report_positive_figures() {
        if crate::assets::path(crate::fae::DEFAULT_MODEL).is_err() {
            eprintln!("skipped: no built-in model");
            return;
        }
        for (stage, size) in [
            ("train_fae", 28),
            ("train_pixel", 28),
            ("train_pixel_decoded", 28),
            ("train_generator", 224),
        ] {
            let options = BenchOptions {
                stage: Some(stage.into()),
                backend: BackendChoice::Cpu,
                encoder: None,
                runs: 1,
                sizes: vec![],
                batches: vec![],
                model: None,
                generator: None,
                train_size: size,
                train_batch: 1,
            };
            let mut rows = Vec::new();
            run(&options, |row| {
                rows.push((row.stage.clone(), row.images_per_s, row.ms_per_step, row.peak_mem_mib))
            })
            .unwrap();
            assert_eq!(rows.len(), 1, "{stage}: {} rows", rows.len());
            let (name, ips, ms, mem) = rows.pop().unwrap();
            assert_eq!(name, stage);
            for v in [ips.unwrap(), ms.unwrap(), mem.unwrap()] {
                assert!(v.is_finite() && v > 0.0, "{stage}: {ips:?} {ms:?} {mem:?}");
            }
        }
    }
}
