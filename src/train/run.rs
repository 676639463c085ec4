//! The training loop: AdamW with warm-up and cosine decay, gradient clipping, EMA weights,
//! NaN/Inf guard, atomic resumable checkpoints, metrics and validation.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::batch::{grids_to_tensor, images_to_tensor, load_batch, report_skipped};
use super::data::{Dataset, FeatureCache, FeatureSource};
use super::discriminator::{Discriminator, hinge_d};
use super::loss::scalar;
// Re-exported: `train::run::{Stage, TrainOptions}` are the paths other code has used.
pub use super::options::{Stage, TrainOptions};
use super::shared::{NanGuard, ema_update, metrics_log, progress_bar, update};
use super::step::{self, Phase, StepContext, StepLoss};
use super::validate::{latent_stats, runtime, validate};
use crate::encoders::source;
use crate::fae::{self, CheckpointFile, FaeConfig, FaeModel, LatentStats, PixelHead, TrainState};
use crate::rng::Rng;

/// Set by Ctrl-C in the command line: the loop saves a checkpoint and stops after the step.
pub fn ctrl_c_flag() -> &'static AtomicBool {
    static STOP: AtomicBool = AtomicBool::new(false);
    &STOP
}

/// What a finished (or stopped) run reports.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub step: u64,
    pub last_loss: f64,
    pub stopped_early: bool,
    pub validation: Option<Validation>,
    pub images_found: usize,
    pub skipped: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Validation {
    pub psnr: f64,
    pub ssim: f64,
    pub feature_cosine: f64,
    pub cycle_cosine: f64,
    pub images: usize,
}

/// Running state that `--resume` restores.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ResumeState {
    options: TrainOptions,
    lr_scale: f64,
    nan_steps: u64,
}

/// Trains per `options`, calling `on_event` with each metrics record (for the app's curves).
///
/// Setting `stop` makes the loop save a checkpoint and return after the current step.
pub fn train(
    mut options: TrainOptions,
    device: &Device,
    stop: &AtomicBool,
    on_event: impl FnMut(&serde_json::Value),
) -> Result<TrainSummary> {
    if !(options.beta2 > 0.0 && options.beta2 < 1.0) {
        bail!("--beta2 must be between 0 and 1, got {}", options.beta2);
    }
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("cannot create run folder {}", options.out.display()))?;
    let latest = options.out.join("latest.safetensors");
    let mut guard = NanGuard::new(1.0, 0);
    let ad = device.clone().autodiff();

    // Model, optimizer and step: resumed, fine-tuned from a checkpoint, or new.
    let resumed = if options.resume {
        if !latest.is_file() {
            bail!("--resume: {} does not exist", latest.display());
        }
        let ckpt = CheckpointFile::open(&latest)?;
        let state: ResumeState =
            serde_json::from_value(ckpt.train_state().context("checkpoint has no training state")?)
                .context("checkpoint's training state is unreadable")?;
        let steps = options.steps;
        let (data, out) = (options.data.clone(), options.out.clone());
        options = TrainOptions { data, out, resume: true, steps, ..state.options };
        guard = NanGuard::new(state.lr_scale, state.nan_steps);
        Some(ckpt)
    } else {
        None
    };
    let from = match (&resumed, &options.from) {
        (None, Some(path)) => Some(CheckpointFile::open(path)?),
        _ => None,
    };
    let base = resumed.as_ref().or(from.as_ref());
    let encoder_name = match base {
        Some(ckpt) => ckpt.config.encoder.clone(),
        None => options.encoder.clone().unwrap_or_else(|| source::DEFAULT_ENCODER.to_string()),
    };
    let encoder = source::load(Some(&encoder_name), device)?;
    let info = encoder.info().clone();
    info.check_size(options.size, options.size)?;
    // `--from` with the other kind of pixel head: the checkpoint's model with a fresh head.
    let new_head = match (&from, options.pixel_head) {
        (Some(ckpt), Some(head)) if head.name() != ckpt.config.pix_head.name() => Some(head),
        _ => None,
    };
    if new_head.is_some() && options.stage == Stage::Fae {
        bail!(
            "--pixel-head {} starts a new pixel decoder head, which --stage fae does not train: \
             use --stage pixel",
            options.pixel_head.map_or("", PixelHead::name)
        );
    }
    let config = match base {
        Some(ckpt) => {
            fae::check_encoder(&ckpt.config, encoder.as_ref(), ckpt.file.path())?;
            FaeConfig { pix_head: new_head.unwrap_or(ckpt.config.pix_head), ..ckpt.config.clone() }
        }
        None => {
            let mut c = options.architecture.clone().unwrap_or_else(|| {
                FaeConfig::small(&info.name, info.dim, info.patch_size, options.size)
            });
            (c.encoder, c.encoder_dim, c.patch_size, c.image_size) =
                (info.name.clone(), info.dim, info.patch_size, options.size);
            c.latent_channels = options.latent_channels;
            c.pix_head = options.pixel_head.unwrap_or(c.pix_head);
            c
        }
    };
    // `--head-blocks` (not on resume: the run keeps its own head).
    let grow_to = options.head_blocks.filter(|_| resumed.is_none());
    let config = match grow_to {
        Some(blocks) => FaeConfig { pix_head: config.pix_head.with_blocks(blocks)?, ..config },
        None => config,
    };
    if let (Some(blocks), Some(ckpt), None) = (grow_to, &from, new_head)
        && let PixelHead::Conv { blocks: had, .. } = ckpt.config.pix_head
    {
        if blocks < had {
            bail!(
                "--head-blocks {blocks} is fewer than the {had} trained blocks of {}: a head only \
                 grows",
                ckpt.file.path().display()
            );
        }
        if blocks > had && options.stage == Stage::Fae {
            bail!(
                "--head-blocks adds pixel head blocks, which --stage fae does not train: use --stage pixel"
            );
        }
    }
    config.validate()?;
    let mut stats =
        base.map_or_else(|| LatentStats::identity(config.latent_channels), |c| c.stats.clone());
    let mut model = match base {
        Some(ckpt) if resumed.is_some() => ckpt.train_model(&ad)?,
        Some(ckpt) if new_head.is_some() => {
            ckpt.model(&ad)?.with_new_pixel_head(&config, options.seed, &ad)
        }
        Some(ckpt) => {
            let mut model = ckpt.model(&ad)?;
            if let Some(blocks) = grow_to {
                let head = model.pixel_decoder.conv_head.take();
                model.pixel_decoder.conv_head = head.map(|h| h.grown_to(blocks, &ad));
            }
            model
        }
        None => crate::fae::model::seeded_init(FaeModel::new(&config, &ad), options.seed),
    };
    let mut ema = match &resumed {
        Some(ckpt) => ckpt.model(device)?,
        None => model.valid(),
    };
    let mut optimizer = step::optimizer(options.beta2);
    if let Some(bytes) = resumed.as_ref().map(|c| c.optimizer_bytes()).transpose()?.flatten() {
        optimizer = optimizer
            .from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
            .map_err(|e| anyhow::anyhow!("cannot restore the optimizer state: {e}"))?;
    }
    let mut step = resumed.as_ref().map_or(0, |c| c.step);
    // The discriminator (and its optimizer) exist once the adversarial term has started.
    let mut disc_optimizer: ModuleOptimizer = AdamWConfig::new()
        .with_beta_1(0.5)
        .with_beta_2(0.9)
        .with_weight_decay(0.0)
        .with_grad_clipping(Some(GradientClippingConfig::Norm(1.0)))
        .init();
    let mut disc: Option<Discriminator> = None;
    if let Some(ckpt) = &resumed
        && let Some((d, bytes)) =
            crate::fae::checkpoint::load_aux(&ckpt.file, "disc", Discriminator::new(&ad))?
    {
        disc_optimizer = disc_optimizer
            .from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
            .map_err(|e| anyhow::anyhow!("cannot restore the discriminator's optimizer: {e}"))?;
        disc = Some(d);
    }

    // Perceptual loss needs the frozen encoder on the autodiff device.
    let perceptual_encoder = if options.perceptual > 0.0 && options.stage != Stage::Fae {
        Some(source::load(Some(&encoder_name), &ad)?)
    } else {
        None
    };

    let mut dataset = Dataset::scan(&options.data, options.val_fraction)?;
    let found = dataset.train.len() + dataset.val.len();
    if options.resume {
        // Files found broken earlier in this run stay out, so sampling continues exactly.
        let earlier = std::fs::read_to_string(options.out.join("skipped.tsv")).unwrap_or_default();
        for line in earlier.lines() {
            if let Some((path, why)) = line.split_once('\t') {
                let path = PathBuf::from(path);
                if dataset.train.iter().chain(&dataset.val).any(|e| e.path == path) {
                    dataset.skip(&path, why.to_string());
                }
            }
        }
    }
    report_skipped(&options.out, &dataset.skipped)?;
    if dataset.train.is_empty() {
        bail!(
            "no usable images in {} ({} files skipped)",
            options.data.display(),
            dataset.skipped.len()
        );
    }
    eprintln!(
        "{} images ({} for validation, {} classes), {} files skipped; encoder {} on {}",
        found,
        dataset.val.len(),
        dataset.classes.len(),
        dataset.skipped.len(),
        info.name,
        options.out.display()
    );
    let cache = FeatureCache::new(
        options.cache_dir.clone().unwrap_or_else(FeatureCache::default_dir),
        options.cache_max_bytes,
    )?;
    let source = FeatureSource {
        encoder: encoder.as_ref(),
        cache: &cache,
        size: options.size,
        device: device.clone(),
    };
    let mut log = metrics_log(&options.out, on_event)?;

    if options.resume && options.stage != Stage::Pixel && options.phase(step).0 != Phase::Fae {
        // Resumed past the FAE phase (perhaps with fewer --steps): statistics of the final FAE.
        stats = latent_stats(&ema, &source, &mut dataset, &options)?;
    }
    let bar = progress_bar(options.progress, options.steps, step);
    let started = Instant::now();
    let start_step = step;
    let mut last_loss = f64::NAN;
    let mut validation = None;
    let grid = (options.size / info.patch_size, options.size / info.patch_size);
    let step_context = StepContext {
        config: &config,
        options: &options,
        grid,
        perceptual: perceptual_encoder.as_deref(),
    };
    let save = |step: u64,
                model: &FaeModel,
                ema: &FaeModel,
                stats: &LatentStats,
                optimizer: &ModuleOptimizer,
                disc: Option<(&Discriminator, &ModuleOptimizer)>,
                guard: NanGuard|
     -> Result<()> {
        let state = ResumeState {
            options: options.clone(),
            lr_scale: guard.lr_scale,
            nan_steps: guard.nan_steps,
        };
        let serialise = |o: &ModuleOptimizer| {
            o.into_bytes().map_err(|e| anyhow::anyhow!("cannot serialise the optimizer: {e}"))
        };
        let bytes = serialise(optimizer)?;
        let discriminator = match disc {
            Some((d, o)) => Some((d, serialise(o)?.to_vec())),
            None => None,
        };
        fae::save(
            &latest,
            &config,
            stats,
            ema,
            step,
            Some(TrainState {
                weights: model,
                optimizer: bytes.to_vec(),
                state: serde_json::to_value(state)?,
                discriminator,
            }),
            false,
        )
    };

    while step < options.steps && !stop.load(Ordering::Relaxed) {
        let (phase, _, _) = options.phase(step);
        let mut rng = Rng::derive(options.seed, step, 0);
        let batch = load_batch(&source, &mut dataset, &options, &mut rng, &options.out)?;
        let features = grids_to_tensor(batch.iter().map(|s| &s.features), &ad);
        let lr = options.learning_rate(step) * guard.lr_scale;
        let adversarial = options.adversarial_on(step);
        if adversarial && disc.is_none() {
            disc = Some(crate::fae::model::seeded_init(
                Discriminator::new(&ad),
                options.seed ^ 0xd15c,
            ));
        }
        let targets =
            (phase != Phase::Fae).then(|| images_to_tensor(batch.iter().map(|s| &s.image), &ad));
        let disc_now = disc.as_ref().filter(|_| adversarial);
        let StepLoss { loss, parts, fake_and_real } =
            step_context.loss(&model, phase, features, targets, &mut rng, disc_now);
        let loss_value: f64 = loss.clone().into_scalar::<f32>() as f64;
        if let Some(event) = guard.check(step, loss_value, &bar) {
            log(event)?;
            step += 1;
            continue;
        }
        model = update(model, &mut optimizer, lr, loss);
        ema = ema_update(ema, &model, options.ema_decay, step);
        let mut parts = parts;
        if let (Some((fake, real)), Some(d)) = (fake_and_real, disc.take()) {
            let d_loss = hinge_d(d.forward(real), d.forward(fake));
            parts.push(("adv_d", scalar(&d_loss)));
            let grads = GradientsParams::from_grads(d_loss.backward(), &d);
            disc = Some(disc_optimizer.step(lr, d, grads));
        }
        last_loss = loss_value;
        step += 1;
        bar.set_position(step);
        bar.set_message(format!("{} loss {loss_value:.4}", phase.name()));
        if step % options.log_every == 0 || step == options.steps {
            let elapsed = started.elapsed().as_secs_f64();
            let ips = ((step - start_step) as f64 * options.batch as f64) / elapsed.max(1e-9);
            let mut record = json!({"step": step, "stage": phase.name(), "loss": loss_value, "lr": lr, "images_per_s": ips});
            for (k, v) in parts {
                record[k] = json!(v);
            }
            log(record)?;
        }
        let at_end = step == options.steps;
        let fae_phase_ends = phase == Phase::Fae && (at_end || options.phase(step).0 != Phase::Fae);
        if fae_phase_ends {
            // The pixel stages and every later use see the final FAE's latent statistics.
            stats = latent_stats(&ema, &source, &mut dataset, &options)?;
        }
        if step % options.val_every == 0 || at_end {
            if phase == Phase::Fae && !fae_phase_ends {
                stats = latent_stats(&ema, &source, &mut dataset, &options)?;
            }
            let fae = runtime(&config, &ema, &stats, encoder.clone(), device);
            let v = validate(&fae, &source, &mut dataset, &options, step)?;
            log(json!({"step": step, "stage": phase.name(), "loss": loss_value, "val": v}))?;
            bar.println(format!(
                "step {step}: val PSNR {:.2} dB, SSIM {:.3}, feature cos {:.4}, cycle cos {:.4}",
                v.psnr, v.ssim, v.feature_cosine, v.cycle_cosine
            ));
            validation = Some(v);
        }
        if step % options.checkpoint_every == 0 || at_end {
            let d = disc.as_ref().map(|d| (d, &disc_optimizer));
            save(step, &model, &ema, &stats, &optimizer, d, guard)?;
        }
    }
    let stopped = step < options.steps;
    if stopped {
        let d = disc.as_ref().map(|d| (d, &disc_optimizer));
        save(step, &model, &ema, &stats, &optimizer, d, guard)?;
        bar.println(format!("stopped at step {step}; continue with --resume"));
    }
    bar.finish_and_clear();
    Ok(TrainSummary {
        step,
        last_loss,
        stopped_early: stopped,
        validation,
        images_found: found,
        skipped: dataset.skipped.len(),
    })
}
