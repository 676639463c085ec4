//! The `fae-studio` command line: what each command does (its arguments are in `cli.rs`).

mod cli;

use std::process::ExitCode;

use anyhow::{Result, bail};
use burn::module::Module;
use clap::Parser;

use fae_studio::backend::{self, BackendChoice};
use fae_studio::bench::{self, BenchOptions};
use fae_studio::composite::CompositeMode;
use fae_studio::edit::ops::InterpMode;
use fae_studio::edit::recipe::Recipe;
use fae_studio::encoders::source;
use fae_studio::evaluate;
use fae_studio::fae::{self, CheckpointFile, Fae, PixelHead, Through};
use fae_studio::features;
use fae_studio::fsutil::write_safetensors;
use fae_studio::fsutil::{write_photo_png, write_png};
use fae_studio::generator::train::{GeneratorTrainOptions, train_generator};
use fae_studio::generator::{self, Generator, GeneratorFile, SampleOptions, sample_to_folder};
use fae_studio::grid::Grid;
use fae_studio::heldout;

use fae_studio::image_io::{is_high_bit_depth, to_rgb8};
use fae_studio::pipeline;
use fae_studio::train::{self, TrainOptions};
use fae_studio::weights::WeightFile;

use cli::*;

/// mimalloc keeps freed tensor buffers for reuse. With glibc's allocator each large tensor was a
/// fresh mmap whose pages the kernel faulted in and zeroed again, on every operation.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

unsafe extern "C" {
    /// mimalloc's `mi_option_set` (the C library the allocator links in).
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// `mi_option_purge_delay` in mimalloc 3's `mi_option_t` (libmimalloc-sys 0.1.49, mimalloc.h).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// For the commands that repeat the same large allocations (a training step, a benchmark run):
/// freed memory stays with the allocator instead of going back to the OS after mimalloc's purge
/// delay (1 s), so the next step reuses it rather than having the kernel fault in and zero fresh
/// pages: that was about a quarter of the CPU time of a pixel-decoder training step. The peak is
/// unchanged; memory comes back when the process ends. `MIMALLOC_PURGE_DELAY` still overrides.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets an integer option of the allocator, which mimalloc allows at any time.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

/// A training command's options with the shared run flags filled in. A macro because
/// `TrainOptions` and `GeneratorTrainOptions` are separate structs (each is recorded in its own
/// checkpoints) that name these fields alike.
macro_rules! run_options {
    ($options:ident, $run:expr) => {{
        let r: RunArgs = $run;
        let mut o = $options::new(r.data.clone(), r.out.clone());
        o.steps = r.steps(o.steps);
        (o.resume, o.lr, o.warmup, o.seed) = (r.resume, r.lr, r.warmup, r.seed);
        (o.checkpoint_every, o.log_every) = (r.checkpoint_every.max(1), r.log_every.max(1));
        (o.cache_dir, o.progress) = (r.cache, !r.quiet);
        o
    }};
}

fn is_generator(path: &std::path::Path) -> Result<bool> {
    let file = WeightFile::open(path)?;
    Ok(file.metadata().get("format").map(String::as_str) == Some(generator::FORMAT))
}

fn install_ctrl_c() -> Result<()> {
    ctrlc::set_handler(|| {
        train::run::ctrl_c_flag().store(true, std::sync::atomic::Ordering::Relaxed)
    })
    .map_err(|e| anyhow::anyhow!("cannot install the Ctrl-C handler: {e}"))
}

fn run(cli: Cli) -> Result<()> {
    let Some(command) = cli.command else {
        return fae_studio::app::run(cli.backend, cli.screenshot);
    };
    if cli.screenshot.is_some() {
        bail!("--screenshot opens the app: give it without a command");
    }
    match command {
        Command::Features { image, encoder, size, out, pca } => {
            let compute = backend::select(cli.backend)?;
            let encoder = source::load(encoder.as_deref(), &compute.device)?;
            let feats = features::extract(encoder.as_ref(), &image, size, &compute.device)?;
            feats.save(&out)?;
            if let Some(pca) = pca {
                write_png(&pca, &feats.pca_picture())?;
            }
            eprintln!(
                "{}: {}x{} tokens of {} dims from {} on {}",
                out.display(),
                feats.grid_h,
                feats.grid_w,
                feats.dim,
                feats.encoder,
                compute.adapter
            );
        }
        Command::Bench {
            json,
            stage,
            encoder,
            runs,
            sizes,
            batches,
            model,
            generator,
            train_size,
            train_batch,
        } => {
            let options = BenchOptions {
                stage,
                backend: cli.backend,
                encoder,
                runs,
                sizes,
                batches,
                model,
                generator,
                train_size,
                train_batch,
            };
            if !json {
                println!(
                    "{:<12} {:<6} {:>5} {:>5} {:>11} {:>11}  adapter",
                    "stage", "backend", "size", "batch", "median ms", "peak MiB"
                );
            }
            bench::run(&options, |row| {
                if json {
                    println!("{}", serde_json::to_string(row).expect("serialisable row"));
                } else {
                    let mem = row.peak_mem_mib.map_or("-".into(), |m| format!("{m:.0}"));
                    let rate = row.images_per_s.map_or(String::new(), |r| {
                        format!(", {r:.2} images/s at the fastest step")
                    });
                    println!(
                        "{:<12} {:<6} {:>5} {:>5} {:>11.1} {:>11}  {}{rate}",
                        row.stage,
                        row.backend,
                        row.size,
                        row.batch,
                        row.median_ms,
                        mem,
                        row.adapter
                    );
                }
            })?;
        }
        Command::Devices => {
            for a in backend::wgpu_adapters() {
                println!("wgpu: {} ({:?}, {:?})", a.name, a.backend, a.device_type);
            }
            println!("auto: {}", backend::select(BackendChoice::Auto)?.adapter);
        }
        Command::Train(args) => {
            let compute = backend::select(cli.backend)?;
            let mut o = run_options!(TrainOptions, args.run);
            o.batch = args.batch.max(1);
            o.size = args.size;
            o.stage = args.stage;
            o.from = args.from;
            o.encoder = args.encoder;
            (o.views, o.balance) = (args.views.max(1), args.balance);
            o.val_every = args.val_every.max(1);
            o.perceptual = args.perceptual;
            (o.perceptual_shift, o.gradient, o.noise) =
                (args.perceptual_shift, args.gradient, args.noise);
            (o.spectrum, o.ssim) = (args.spectrum, args.ssim);
            (o.adversarial, o.adversarial_start) = (args.adversarial, args.adversarial_start);
            o.latent_channels = args.latent_channels;
            (o.beta2, o.lr_schedule) = (args.beta2, args.lr_schedule);
            o.cache_max_bytes = (args.cache_gb * (1u64 << 30) as f64) as u64;
            o.pixel_head = args.pixel_head.map(|kind| match kind {
                PixelHeadKind::Linear => PixelHead::Linear,
                PixelHeadKind::Conv => PixelHead::conv(),
            });
            o.head_blocks = args.head_blocks.map(usize::from);
            install_ctrl_c()?;
            eprintln!("training on {}", compute.adapter);
            let summary = train::train(o, &compute.device, train::run::ctrl_c_flag(), |_| {})?;
            let val = summary.validation.map_or(String::new(), |v| {
                format!(", val PSNR {:.2} dB, cycle cosine {:.4}", v.psnr, v.cycle_cosine)
            });
            println!("step {}, {}{val}", summary.step, loss_text(summary.last_loss));
        }
        Command::Reconstruct { image, model, size, whole, out } => {
            let compute = backend::select(cli.backend)?;
            let fae = Fae::load(model.as_deref(), &compute.device)?;
            let r = if whole {
                fae.reconstruct_encoded(fae.encode_whole(&image, size)?)?
            } else {
                fae.reconstruct(&image, size)?
            };
            write_png(&out, &to_rgb8(&r.decoded.image))?;
            println!(
                "PSNR {:.2} dB, SSIM {:.4}, feature cosine {:.4}, cycle cosine {:.4}",
                r.psnr, r.ssim, r.feature_cosine, r.cycle_cosine
            );
        }
        Command::Encode { image, model, size, out } => {
            let compute = backend::select(cli.backend)?;
            let fae = Fae::load(model.as_deref(), &compute.device)?;
            let encoded = fae.encode_image(&image, size)?;
            let l = &encoded.latent;
            let metadata = std::collections::HashMap::from([
                ("format".to_string(), "fae-studio-latent".to_string()),
                ("encoder".to_string(), fae.config.encoder.clone()),
                ("grid_h".to_string(), l.height.to_string()),
                ("grid_w".to_string(), l.width.to_string()),
                ("channels".to_string(), l.channels.to_string()),
                ("normalised".to_string(), "true".to_string()),
            ]);
            write_safetensors(
                &out,
                &[("latent", vec![l.height, l.width, l.channels], &l.data)],
                metadata,
            )?;
            eprintln!("{}: latent {}x{}x{}", out.display(), l.height, l.width, l.channels);
        }
        Command::Edit { image, recipe, model, generator, size, whole, out, composite } => {
            let compute = backend::select(cli.backend)?;
            let parsed = Recipe::load(&recipe)?;
            // With a generator, its own FAE model (checked against --model) does the editing.
            let generator = generator
                .map(|g| Generator::load(&g, model.as_deref(), &compute.device))
                .transpose()?;
            let own_fae;
            let fae = match &generator {
                Some(g) => &*g.fae,
                None => {
                    own_fae = Fae::load(model.as_deref(), &compute.device)?;
                    &own_fae
                }
            };
            let base = recipe.parent().map(|p| p.to_path_buf()).unwrap_or_default();
            let start = std::time::Instant::now();
            let (encoded, _, decoded) =
                pipeline::edit(fae, &image, &parsed, (size, whole), base, generator.as_ref())?;
            let options = composite.options();
            if options.mode == CompositeMode::Off {
                write_png(&out, &to_rgb8(&decoded.image))?;
            } else {
                let photo =
                    pipeline::composite_edit(fae, &image, &parsed, &encoded, &decoded, &options)?;
                write_photo_png(&out, photo, is_high_bit_depth(&image)?)?;
            }
            eprintln!(
                "{}: {} edits in {:.0} ms",
                out.display(),
                parsed.edits.len(),
                start.elapsed().as_secs_f64() * 1e3
            );
        }
        Command::Interpolate { from, to, steps, mode, model, size, out, composite } => {
            let compute = backend::select(cli.backend)?;
            let fae = Fae::load(model.as_deref(), &compute.device)?;
            let mode = match mode {
                Mode::Lerp => InterpMode::Lerp,
                Mode::Slerp => InterpMode::Slerp,
            };
            let options = composite.options();
            let frames =
                pipeline::interpolate(&fae, &from, &to, steps, mode, size, &out, &options)?;
            eprintln!("{}: {} frames and contact_sheet.png", out.display(), frames.len());
        }
        Command::Inspect { image, with, token, model, size, out } => {
            let compute = backend::select(cli.backend)?;
            let fae = Fae::load(model.as_deref(), &compute.device)?;
            let m = pipeline::inspect_to_folder(&fae, &image, with.as_deref(), size, token, &out)?;
            for item in m["images"].as_array().into_iter().flatten() {
                println!(
                    "{}: PSNR {:.2} dB, preservation {:.4}, cycle {:.4}",
                    item["image"].as_str().unwrap_or(""),
                    item["psnr"].as_f64().unwrap_or(f64::NAN),
                    item["preservation_mean"].as_f64().unwrap_or(f64::NAN),
                    item["cycle_mean"].as_f64().unwrap_or(f64::NAN)
                );
            }
        }
        Command::Export { model, out, f16, fae } if is_generator(&model)? => {
            let file = GeneratorFile::open(&model)?;
            let fae_ref = match fae {
                Some(new_fae) => file.retarget(&model, &new_fae)?,
                None => file.fae.clone(),
            };
            let weights = file.model(&backend::cpu().device)?;
            generator::save(&out, &weights, &fae_ref, file.step, None, f16)?;
            eprintln!("{}: step {}, {} parameters", out.display(), file.step, weights.num_params());
        }
        Command::Export { fae: Some(_), .. } => {
            bail!("--fae applies to generator checkpoints only")
        }
        Command::Export { model, out, f16, fae: None } => {
            let ckpt = CheckpointFile::open(&model)?;
            let weights = ckpt.model(&backend::cpu().device)?;
            fae::save(&out, &ckpt.config, &ckpt.stats, &weights, ckpt.step, None, f16)?;
            eprintln!("{}: step {}, {} parameters", out.display(), ckpt.step, weights.num_params());
        }
        Command::TrainGenerator(a) => {
            let compute = backend::select(cli.backend)?;
            let mut o = run_options!(GeneratorTrainOptions, a.run);
            (o.model, o.batch, o.size, o.arch) = (a.model, a.batch, a.size, a.arch);
            o.patch = a.patch;
            o.views = a.views.max(1);
            (o.label_dropout, o.time_sampling, o.shift) =
                (a.label_dropout, a.time_sampling, a.shift);
            (o.ema_decay, o.previews) = (a.ema, a.previews);
            install_ctrl_c()?;
            eprintln!("training on {}", compute.adapter);
            let summary = train_generator(o, &compute.device, train::run::ctrl_c_flag(), |_| {})?;
            println!(
                "step {}, {}, {} latents",
                summary.step,
                loss_text(summary.last_loss),
                summary.latents
            );
        }
        Command::Sample(a) => {
            let compute = backend::select(cli.backend)?;
            let generator = Generator::load(&a.generator, a.model.as_deref(), &compute.device)?;
            let opts = SampleOptions {
                sampler: a.sampler,
                steps: a.steps,
                shift: a.shift,
                cfg: a.cfg,
                cfg_interval: a.cfg_interval,
            };
            opts.validate()?;
            let start = std::time::Instant::now();
            let paths = sample_to_folder(
                &generator,
                a.class.as_deref(),
                a.n,
                a.seed,
                &opts,
                a.batch,
                &a.out,
                &mut |_, _| true,
            )?;
            let secs = start.elapsed().as_secs_f64();
            eprintln!(
                "{}: {} images and {} in {secs:.1} s ({:.0} ms per image)",
                a.out.display(),
                paths.len(),
                generator::CONTACT_SHEET,
                secs * 1e3 / paths.len() as f64
            );
        }
        Command::Evaluate {
            reconstruct: Some(dir), model, size, json, grid, skip_latent, ..
        } => {
            let compute = backend::select(cli.backend)?;
            let fae = Fae::load(model.as_deref(), &compute.device)?;
            let name = model.map_or("built-in".to_string(), |p| p.display().to_string());
            let pairs = if grid.is_some() { 8 } else { 0 };
            let through = if skip_latent { Through::Features } else { Through::Latent };
            let report = heldout::evaluate(&fae, &name, &dir, through, size, pairs)?;
            if let Some(path) = &grid {
                write_png(path, &train::validate::pairs_picture(&report.pairs))?;
            }
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                let a = &report.all;
                println!(
                    "PSNR {:.2} dB, SSIM {:.4}, cycle cosine {:.4}",
                    a.psnr, a.ssim, a.cycle_cosine
                );
                println!(
                    "blockiness {:.3} (originals {:.3}), high-frequency ratio {:.3}, \
                     spurious dots {:.1} per image",
                    a.blockiness, a.blockiness_originals, a.high_frequency_ratio, a.spurious_dots
                );
                println!(
                    "PSNR references: the inputs painted flat per image {:.2} dB, per patch {:.2} dB",
                    a.psnr_flat_image, a.psnr_flat_patches
                );
                let from =
                    if skip_latent { ", from their encoder features (latent skipped)" } else { "" };
                eprintln!(
                    "{} images at {size} px{from}, {:.2} images/s",
                    a.images, report.images_per_s
                );
            }
        }
        Command::Evaluate { real, generated, encoder, json, .. } => {
            let (Some(real), Some(generated)) = (real, generated) else {
                bail!("evaluate needs --real and --generated, or --reconstruct");
            };
            let compute = backend::select(cli.backend)?;
            let encoder = source::load(encoder.as_deref(), &compute.device)?;
            let e = evaluate::evaluate(encoder.as_ref(), &real, &generated, &compute.device)?;
            if json {
                println!("{}", serde_json::to_string(&e)?);
            } else {
                println!("FD-DINOv2 {:.4}", e.fd);
                println!("precision {:.4}", e.precision);
                println!("recall {:.4}", e.recall);
                eprintln!(
                    "{} real and {} generated images, {} CLS features, k = {}",
                    e.real, e.generated, e.encoder, e.k
                );
            }
        }
        Command::Decode { latent, model, out } => {
            let compute = backend::select(cli.backend)?;
            let fae = Fae::load(model.as_deref(), &compute.device)?;
            let file = WeightFile::open(&latent)?;
            let shape = file
                .shape("latent")
                .ok_or_else(|| anyhow::anyhow!("{}: no `latent` tensor", latent.display()))?;
            let [h, w, c] = shape[..] else {
                bail!(
                    "{}: `latent` must be [grid_h, grid_w, channels], got {shape:?}",
                    latent.display()
                );
            };
            let grid = Grid::new(h, w, c, file.read_f32("latent", &shape)?)?;
            let decoded = fae.decode(&grid)?;
            write_png(&out, &to_rgb8(&decoded.image))?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    // burn materialises a resumed optimizer's state on its default device before moving it to
    // each parameter's; that default is otherwise a wgpu adapter, which a CPU run does not need
    // and a machine without one cannot give. `BURN_DEVICE` set by the user still wins.
    if std::env::var_os("BURN_DEVICE").is_none() {
        // SAFETY: the first statement of `main`, before any other thread exists.
        unsafe { std::env::set_var("BURN_DEVICE", "flex") };
    }
    // Library code should not panic on bad input; if something still does, say so in one line
    // that names the command and where it stopped, and asks for a report.
    std::panic::set_hook(Box::new(|info| {
        let command = std::env::args().nth(1).unwrap_or_default();
        let place = info.location().map(|l| format!(" at {}:{}", l.file(), l.line()));
        let text =
            format!("{}{}", fae_studio::bug::panic_text(info.payload()), place.unwrap_or_default());
        eprintln!("error: {}", fae_studio::bug::report(&format!("`fae-studio {command}`"), &text));
    }));
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Some(Command::Bench { .. } | Command::Train(_) | Command::TrainGenerator(_))
    ) {
        keep_freed_memory();
    }
    match std::panic::catch_unwind(|| run(cli)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
        Err(_) => ExitCode::FAILURE,
    }
}
