//! The `fae-studio` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use burn::module::Module;
use clap::{Parser, Subcommand};

use fae_studio::backend::{self, BackendChoice};
use fae_studio::bench::{self, BenchOptions};
use fae_studio::edit::ops::InterpMode;
use fae_studio::edit::recipe::Recipe;
use fae_studio::encoders::source;
use fae_studio::fae::{self, CheckpointFile, Fae};
use fae_studio::features;
use fae_studio::fsutil::write_png;
use fae_studio::fsutil::write_safetensors;
use fae_studio::grid::Grid;
use fae_studio::image_io::to_rgb8;
use fae_studio::pipeline;
use fae_studio::train::{self, Stage, TrainOptions};
use fae_studio::weights::WeightFile;

#[derive(Parser)]
#[command(name = "fae-studio", version, about = "Feature Auto-Encoder studio")]
struct Cli {
    /// Where to compute: a GPU when present (auto), the CPU, or wgpu on any adapter.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto, global = true)]
    backend: BackendChoice,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Encode an image with a frozen encoder and save its token grid.
    Features {
        #[arg(long)]
        image: PathBuf,
        /// `dinov2-small` (built in), a .safetensors path, or a Hugging Face id.
        #[arg(long)]
        encoder: Option<String>,
        /// Working size in pixels (a multiple of the encoder's patch size).
        #[arg(long, default_value_t = 224)]
        size: usize,
        #[arg(long)]
        out: PathBuf,
        /// Also write a PCA-to-RGB picture of the tokens.
        #[arg(long)]
        pca: Option<PathBuf>,
    },
    /// Measure each stage's speed; one JSON object per line with --json.
    Bench {
        #[arg(long)]
        json: bool,
        #[arg(long)]
        stage: Option<String>,
        #[arg(long)]
        encoder: Option<String>,
        /// Timed runs per configuration (after one warm-up run).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        #[arg(long, value_delimiter = ',', default_values_t = [224, 448])]
        sizes: Vec<usize>,
        #[arg(long, value_delimiter = ',', default_values_t = [1, 8])]
        batches: Vec<usize>,
        /// FAE checkpoint for the model stages (default: the built-in model).
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// List the compute adapters wgpu can see and what `--backend auto` picks.
    Devices,
    /// Train or fine-tune an FAE model on a folder of images.
    Train(TrainArgs),
    /// Encode and regenerate an image; prints PSNR and cycle cosine.
    Reconstruct {
        #[arg(long)]
        image: PathBuf,
        /// An FAE checkpoint (the built-in model when omitted).
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long)]
        size: Option<usize>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Encode an image to its normalised latent `[grid_h, grid_w, C]`.
    Encode {
        #[arg(long)]
        image: PathBuf,
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long)]
        size: Option<usize>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Apply an edit recipe to an image's latent and regenerate it.
    Edit {
        #[arg(long)]
        image: PathBuf,
        #[arg(long)]
        recipe: PathBuf,
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long)]
        size: Option<usize>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Frames between two images' latents, the ends being their reconstructions.
    Interpolate {
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        to: PathBuf,
        #[arg(long, default_value_t = 8)]
        steps: usize,
        #[arg(long, value_enum, default_value_t = Mode::Lerp)]
        mode: Mode,
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long)]
        size: Option<usize>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Inspection pictures (PCA, channels, similarity, preservation and cycle maps) and metrics.json.
    Inspect {
        #[arg(long)]
        image: PathBuf,
        /// A second image, compared with a shared PCA basis and cross-image similarity.
        #[arg(long)]
        with: Option<PathBuf>,
        /// Token (row,column) the similarity maps start from; the centre by default.
        #[arg(long, value_parser = parse_token)]
        token: Option<(usize, usize)>,
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long)]
        size: Option<usize>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a checkpoint's inference weights alone (optionally in f16), e.g. to ship a model.
    Export {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Store weights as f16 (half the size).
        #[arg(long)]
        f16: bool,
    },
    /// Decode a latent (from `encode`, possibly edited elsewhere) into an image.
    Decode {
        #[arg(long)]
        latent: PathBuf,
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Mode {
    Lerp,
    Slerp,
}

fn parse_token(s: &str) -> std::result::Result<(usize, usize), String> {
    let (y, x) = s.split_once(',').ok_or("expected ROW,COLUMN")?;
    Ok((y.trim().parse().map_err(|_| "bad row")?, x.trim().parse().map_err(|_| "bad column")?))
}

#[derive(clap::Args)]
struct TrainArgs {
    /// Folder of images, searched recursively; sub-folders become class labels.
    #[arg(long)]
    data: PathBuf,
    /// Run folder: latest.safetensors, metrics.jsonl, validation pictures, skipped.tsv.
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    steps: Option<u64>,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[arg(long, default_value_t = 224)]
    size: usize,
    #[arg(long, value_enum, default_value_t = Stage::All)]
    stage: Stage,
    /// Start from this checkpoint's weights (fine-tuning) instead of from scratch.
    #[arg(long)]
    from: Option<PathBuf>,
    /// Continue the run in --out exactly where it stopped.
    #[arg(long)]
    resume: bool,
    #[arg(long, default_value_t = 250)]
    checkpoint_every: u64,
    /// Encoder for a model trained from scratch (default: the built-in DINOv2-S).
    #[arg(long)]
    encoder: Option<String>,
    #[arg(long, default_value_t = 4e-4)]
    lr: f64,
    #[arg(long, default_value_t = 100)]
    warmup: u64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Augmented views per image kept in the feature cache.
    #[arg(long, default_value_t = 8)]
    views: u32,
    #[arg(long, default_value_t = 250)]
    val_every: u64,
    #[arg(long, default_value_t = 10)]
    log_every: u64,
    /// Weight of the perceptual (encoder feature) term of the pixel loss; 0 turns it off.
    #[arg(long, default_value_t = 0.1)]
    perceptual: f64,
    /// Latent channels for a model trained from scratch.
    #[arg(long, default_value_t = 32)]
    latent_channels: usize,
    /// Feature cache folder (default: ~/.cache/fae-studio).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Largest feature cache size in GiB.
    #[arg(long, default_value_t = 4.0)]
    cache_gb: f64,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn run(cli: Cli) -> Result<()> {
    let Some(command) = cli.command else {
        return fae_studio::app::run(cli.backend);
    };
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
        Command::Bench { json, stage, encoder, runs, sizes, batches, model } => {
            let options =
                BenchOptions { stage, backend: cli.backend, encoder, runs, sizes, batches, model };
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
                    println!(
                        "{:<12} {:<6} {:>5} {:>5} {:>11.1} {:>11}  {}",
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
            let mut o = TrainOptions::new(args.data, args.out);
            o.steps = args.steps.unwrap_or(if args.resume { 0 } else { o.steps });
            o.batch = args.batch.max(1);
            o.size = args.size;
            o.stage = args.stage;
            o.from = args.from;
            o.resume = args.resume;
            o.checkpoint_every = args.checkpoint_every.max(1);
            o.encoder = args.encoder;
            o.lr = args.lr;
            o.warmup = args.warmup;
            o.seed = args.seed;
            o.views = args.views.max(1);
            o.val_every = args.val_every.max(1);
            o.log_every = args.log_every.max(1);
            o.perceptual = args.perceptual;
            o.latent_channels = args.latent_channels;
            o.cache_dir = args.cache;
            o.cache_max_bytes = (args.cache_gb * (1u64 << 30) as f64) as u64;
            o.progress = !args.quiet;
            ctrlc::set_handler(|| {
                train::run::ctrl_c_flag().store(true, std::sync::atomic::Ordering::Relaxed)
            })
            .map_err(|e| anyhow::anyhow!("cannot install the Ctrl-C handler: {e}"))?;
            eprintln!("training on {}", compute.adapter);
            let summary = train::train(o, &compute.device, train::run::ctrl_c_flag(), |_| {})?;
            let val = summary.validation.map_or(String::new(), |v| {
                format!(", val PSNR {:.2} dB, cycle cosine {:.4}", v.psnr, v.cycle_cosine)
            });
            println!("step {}, loss {:.4}{val}", summary.step, summary.last_loss);
        }
        Command::Reconstruct { image, model, size, out } => {
            let compute = backend::select(cli.backend)?;
            let fae = Fae::load(model.as_deref(), &compute.device)?;
            let r = fae.reconstruct(&image, size)?;
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
        Command::Edit { image, recipe, model, size, out } => {
            let compute = backend::select(cli.backend)?;
            let fae = Fae::load(model.as_deref(), &compute.device)?;
            let parsed = Recipe::load(&recipe)?;
            let base = recipe.parent().map(|p| p.to_path_buf()).unwrap_or_default();
            let start = std::time::Instant::now();
            let (_, _, decoded) = pipeline::edit(&fae, &image, &parsed, size, base)?;
            write_png(&out, &to_rgb8(&decoded.image))?;
            eprintln!(
                "{}: {} edits in {:.0} ms",
                out.display(),
                parsed.edits.len(),
                start.elapsed().as_secs_f64() * 1e3
            );
        }
        Command::Interpolate { from, to, steps, mode, model, size, out } => {
            let compute = backend::select(cli.backend)?;
            let fae = Fae::load(model.as_deref(), &compute.device)?;
            let mode = match mode {
                Mode::Lerp => InterpMode::Lerp,
                Mode::Slerp => InterpMode::Slerp,
            };
            let frames = pipeline::interpolate(&fae, &from, &to, steps, mode, size, &out)?;
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
        Command::Export { model, out, f16 } => {
            let ckpt = CheckpointFile::open(&model)?;
            let weights = ckpt.model(&backend::cpu().device)?;
            fae::save(&out, &ckpt.config, &ckpt.stats, &weights, ckpt.step, None, f16)?;
            eprintln!("{}: step {}, {} parameters", out.display(), ckpt.step, weights.num_params());
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
    // Library code should not panic on bad input; if something still does, say so in one line.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        eprintln!("error: internal failure: {}", msg.lines().next().unwrap_or(""));
    }));
    let cli = Cli::parse();
    match std::panic::catch_unwind(|| run(cli)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
        Err(_) => ExitCode::FAILURE,
    }
}
