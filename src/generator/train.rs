//! Fitting the flow transformer: velocity regression on the linear interpolant, with label
//! dropout for guidance, AdamW with warm-up and cosine decay, EMA weights, a NaN guard, atomic
//! resumable checkpoints, metrics and preview samples. The same machinery as FAE training.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, ModuleOptimizer};
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::config::{GeneratorConfig, GeneratorSize};
use super::flow::{TimeSampling, sample_time};
use super::latents::{LatentSet, encode_folder};
use super::model::{FlowTransformer, init};
use super::sample::{SampleOptions, generate};
use super::{FaeRef, GeneratorFile, save};
use crate::fae::Fae;
use crate::fae::model::Rope2d;
use crate::fsutil::write_png;
use crate::rng::Rng;
use crate::train::data::FeatureCache;
use crate::train::shared::{
    NanGuard, ema_update, metrics_log, progress_bar, update, warmup_cosine,
};

/// The run's settings; everything but the paths and `steps` is recorded for `--resume`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GeneratorTrainOptions {
    pub data: PathBuf,
    pub out: PathBuf,
    /// FAE checkpoint whose latents are learned (`None`: the built-in model).
    pub model: Option<PathBuf>,
    pub steps: u64,
    pub batch: usize,
    /// Image size in pixels (`None`: the FAE model's training size).
    pub size: Option<usize>,
    pub resume: bool,
    pub arch: GeneratorSize,
    /// Latent tokens per side folded into one transformer token (2 is 4x cheaper).
    pub patch: usize,
    pub lr: f64,
    pub warmup: u64,
    pub seed: u64,
    pub ema_decay: f64,
    /// Probability of replacing a label by "no class" (trains the unconditional model).
    pub label_dropout: f64,
    pub time_sampling: TimeSampling,
    pub shift: f64,
    /// Augmented views per image.
    pub views: u32,
    pub checkpoint_every: u64,
    pub log_every: u64,
    /// Preview images (decoded samples) written at each checkpoint; 0 turns them off.
    pub previews: usize,
    pub progress: bool,
    pub cache_dir: Option<PathBuf>,
    /// Exact widths for a new model, overriding `arch` (grid, channels and classes still come
    /// from the training set).
    pub architecture: Option<GeneratorConfig>,
}

impl GeneratorTrainOptions {
    pub fn new(data: PathBuf, out: PathBuf) -> Self {
        Self {
            data,
            out,
            model: None,
            steps: 2000,
            batch: 32,
            size: None,
            resume: false,
            arch: GeneratorSize::Tiny,
            patch: 1,
            lr: 4e-4,
            warmup: 100,
            seed: 0,
            ema_decay: 0.999,
            label_dropout: 0.1,
            time_sampling: TimeSampling::LogitNormal,
            shift: 1.0,
            views: 4,
            checkpoint_every: 250,
            log_every: 10,
            previews: 8,
            progress: true,
            cache_dir: None,
            architecture: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct GeneratorSummary {
    pub step: u64,
    pub last_loss: f64,
    pub stopped_early: bool,
    pub latents: usize,
    pub skipped: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct ResumeState {
    options: GeneratorTrainOptions,
    lr_scale: f64,
    nan_steps: u64,
}

/// Encodes the folder with the FAE model (or reuses the run's latent cache), then fits.
pub fn train_generator(
    options: GeneratorTrainOptions,
    device: &Device,
    stop: &AtomicBool,
    on_event: impl FnMut(&serde_json::Value),
) -> Result<GeneratorSummary> {
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("cannot create run folder {}", options.out.display()))?;
    let latest = options.out.join("latest.safetensors");
    // A resumed run keeps its FAE model, size and views.
    let options = if options.resume {
        if !latest.is_file() {
            bail!("--resume: {} does not exist", latest.display());
        }
        resumed(&options, &GeneratorFile::open(&latest)?)?.0
    } else {
        options
    };
    let fae_ref = FaeRef::of(options.model.as_deref())?;
    let fae = Fae::load(options.model.as_deref(), device)?;
    let size = options.size.unwrap_or(fae.config.image_size);
    let key = format!("{} {} {} {}", fae_ref.sha256, options.data.display(), size, options.views);
    let cache_path = options.out.join("latents.safetensors");
    let cached = if options.resume { LatentSet::load_if(&cache_path, &key)? } else { None };
    let (set, skipped) = match cached {
        Some(set) => (set, 0),
        None => {
            let cache = FeatureCache::new(
                options.cache_dir.clone().unwrap_or_else(FeatureCache::default_dir),
                4 << 30,
            )?;
            let bar = progress_bar(options.progress, 0, 0);
            bar.set_message("encoding latents");
            let (set, skipped) = encode_folder(
                &fae,
                &options.data,
                size,
                options.views,
                &cache,
                &mut |done, total| {
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                },
            )?;
            bar.finish_and_clear();
            crate::train::batch::report_skipped(&options.out, &skipped)?;
            set.save(&cache_path, &key)?;
            (set, skipped.len())
        }
    };
    eprintln!(
        "{} latents of {}x{}x{} ({} classes), {} files skipped",
        set.len(),
        set.grid.0,
        set.grid.1,
        set.channels,
        set.classes.len(),
        skipped
    );
    let mut summary = fit(options, &set, &fae_ref, Some(&fae), device, stop, on_event)?;
    summary.skipped = skipped;
    Ok(summary)
}

/// The options a resumed run continues with (the recorded ones, with the paths, `steps` and
/// `progress` given now) and the recorded NaN-guard state.
fn resumed(
    given: &GeneratorTrainOptions,
    ckpt: &GeneratorFile,
) -> Result<(GeneratorTrainOptions, NanGuard)> {
    let state: ResumeState = serde_json::from_value(
        crate::fae::checkpoint::train_state(&ckpt.file)
            .context("checkpoint has no training state")?,
    )
    .context("checkpoint's training state is unreadable")?;
    let guard = NanGuard::new(state.lr_scale, state.nan_steps);
    let options = GeneratorTrainOptions {
        data: given.data.clone(),
        out: given.out.clone(),
        steps: given.steps,
        progress: given.progress,
        resume: true,
        ..state.options
    };
    Ok((options, guard))
}

/// The generator trainer's optimiser: AdamW with beta 2 0.95, no weight decay, gradients clipped
/// to norm 1.
pub fn optimizer() -> ModuleOptimizer {
    AdamWConfig::new()
        .with_beta_2(0.95)
        .with_weight_decay(0.0)
        .with_grad_clipping(Some(GradientClippingConfig::Norm(1.0)))
        .init()
}

/// Velocity regression on the linear interpolant: `x_t = (1 - t) x0 + t eps` at `times` (one per
/// sample), the squared error of the predicted velocity to `eps - x0`. `x0` and `eps` are
/// `[B, T, C]` on the autodiff device.
pub fn flow_loss(
    model: &FlowTransformer,
    x0: Tensor<3>,
    eps: Tensor<3>,
    times: Vec<f32>,
    labels: &[usize],
    rope: &Rope2d,
) -> Tensor<1> {
    let b = times.len();
    let t = Tensor::<1>::from_data(TensorData::new(times, [b]), &x0.device());
    let tb = t.clone().reshape([b, 1, 1]);
    let xt = x0.clone() * (-tb.clone() + 1.0) + eps.clone() * tb;
    let predicted = model.forward(xt, t, labels, rope);
    (predicted - (eps - x0)).square().mean()
}

/// Trains on `set`, in `options.out`; `fae`, when given, decodes preview samples.
pub fn fit(
    options: GeneratorTrainOptions,
    set: &LatentSet,
    fae_ref: &FaeRef,
    fae: Option<&Fae>,
    device: &Device,
    stop: &AtomicBool,
    on_event: impl FnMut(&serde_json::Value),
) -> Result<GeneratorSummary> {
    if set.is_empty() {
        bail!("no latents to train on");
    }
    if options.batch == 0 {
        bail!("--batch must be at least 1");
    }
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("cannot create run folder {}", options.out.display()))?;
    let latest = options.out.join("latest.safetensors");
    let ad = device.clone().autodiff();
    let mut optimizer = optimizer();
    let (options, mut model, mut ema, mut step, mut guard) = if options.resume {
        let ckpt = GeneratorFile::open(&latest)?;
        let (resumed, guard) = resumed(&options, &ckpt)?;
        if ckpt.config.grid != set.grid || ckpt.config.channels != set.channels {
            bail!("--resume: the checkpoint's latent shape differs from the training set's");
        }
        if let Some(bytes) = crate::fae::checkpoint::optimizer_bytes(&ckpt.file)? {
            optimizer = optimizer
                .from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
                .map_err(|e| anyhow::anyhow!("cannot restore the optimizer state: {e}"))?;
        }
        let model = ckpt.train_model(&ad)?;
        let ema = ckpt.model(device)?;
        (resumed, model, ema, ckpt.step, guard)
    } else {
        let mut cfg = options.architecture.clone().unwrap_or_else(|| GeneratorConfig {
            patch: options.patch,
            ..GeneratorConfig::new(options.arch, set.grid, set.channels)
        });
        (cfg.grid, cfg.channels) = (set.grid, set.channels);
        cfg.classes = set.classes.clone();
        cfg.validate()?;
        let model = init(&cfg, options.seed, &ad);
        let ema = model.valid();
        (options, model, ema, 0, NanGuard::new(1.0, 0))
    };
    let null = model.config.null_class();
    let rope = model.rope(&ad);
    let mut log = metrics_log(&options.out, on_event)?;
    let save_all = |step: u64,
                    model: &FlowTransformer,
                    ema: &FlowTransformer,
                    optimizer: &ModuleOptimizer,
                    guard: NanGuard|
     -> Result<()> {
        let bytes = optimizer
            .into_bytes()
            .map_err(|e| anyhow::anyhow!("cannot serialise the optimizer: {e}"))?;
        let state = ResumeState {
            options: options.clone(),
            lr_scale: guard.lr_scale,
            nan_steps: guard.nan_steps,
        };
        save(
            &latest,
            ema,
            fae_ref,
            step,
            Some((&model.valid(), bytes.to_vec(), serde_json::to_value(state)?)),
            false,
        )
    };
    let bar = progress_bar(options.progress, options.steps, step);
    let started = Instant::now();
    let start_step = step;
    let mut last_loss = f64::NAN;
    let (t_len, c) = (set.tokens(), set.channels);
    while step < options.steps && !stop.load(Ordering::Relaxed) {
        let mut rng = Rng::derive(options.seed, step, 1);
        let b = options.batch;
        let indices: Vec<usize> = (0..b).map(|_| rng.below(set.len())).collect();
        let labels: Vec<usize> = indices
            .iter()
            .map(|&i| match set.labels[i] {
                Some(class) if rng.uniform() >= options.label_dropout => class,
                _ => null,
            })
            .collect();
        let times: Vec<f32> = (0..b)
            .map(|_| sample_time(&mut rng, options.time_sampling, options.shift) as f32)
            .collect();
        let x0 = set.batch(&indices, &ad);
        let eps = Tensor::<1>::from_data(
            TensorData::new(rng.normals(b * t_len * c), [b * t_len * c]),
            &ad,
        )
        .reshape([b, t_len, c]);
        let loss = flow_loss(&model, x0, eps, times, &labels, &rope);
        let lr = warmup_cosine(options.lr, step, options.steps, options.warmup) * guard.lr_scale;
        let loss_value = loss.clone().into_scalar::<f32>() as f64;
        if let Some(event) = guard.check(step, loss_value, &bar) {
            log(event)?;
            step += 1;
            continue;
        }
        model = update(model, &mut optimizer, lr, loss);
        ema = ema_update(ema, &model, options.ema_decay, step);
        last_loss = loss_value;
        step += 1;
        bar.set_position(step);
        bar.set_message(format!("loss {loss_value:.4}"));
        let at_end = step == options.steps;
        if step % options.log_every.max(1) == 0 || at_end {
            let elapsed = started.elapsed().as_secs_f64().max(1e-9);
            let per_s = (step - start_step) as f64 * b as f64 / elapsed;
            log(
                json!({"step": step, "stage": "generator", "loss": loss_value, "lr": lr, "latents_per_s": per_s}),
            )?;
        }
        if step % options.checkpoint_every.max(1) == 0 || at_end {
            save_all(step, &model, &ema, &optimizer, guard)?;
            if let Some(fae) = fae.filter(|_| options.previews > 0) {
                write_preview(fae, &ema, &options, step)?;
                log(
                    json!({"step": step, "stage": "generator", "preview": format!("samples-{step:06}.png")}),
                )?;
            }
        }
    }
    let stopped = step < options.steps;
    if stopped {
        save_all(step, &model, &ema, &optimizer, guard)?;
        bar.println(format!("stopped at step {step}; continue with --resume"));
    }
    bar.finish_and_clear();
    Ok(GeneratorSummary { step, last_loss, stopped_early: stopped, latents: set.len(), skipped: 0 })
}

/// Decoded samples of the EMA model with fixed seeds, so previews are comparable across steps.
fn write_preview(
    fae: &Fae,
    ema: &FlowTransformer,
    options: &GeneratorTrainOptions,
    step: u64,
) -> Result<()> {
    let n = options.previews;
    let classes = ema.config.classes.len();
    let labels: Vec<usize> = (0..n).map(|i| if classes == 0 { 0 } else { i % classes }).collect();
    let seeds: Vec<u64> = (0..n as u64).collect();
    let opts = SampleOptions { steps: 25, ..SampleOptions::default() };
    let latents = generate(ema, &labels, &seeds, &opts, &fae.device, &mut |_, _| true)?;
    let grid = ema.config.grid;
    let images: Vec<image::RgbImage> = (0..n)
        .map(|i| {
            let (_, image) = fae.decode_latent(latents.clone().narrow(0, i, 1), grid);
            crate::image_io::to_rgb8(&crate::fae::tensor_to_image(image))
        })
        .collect();
    let sheet = crate::inspect::contact_sheet(&images, 4, 2, image::Rgb([24, 24, 24]))?;
    write_png(&options.out.join(format!("samples-{step:06}.png")), &sheet)
}
