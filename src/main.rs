//! The `fae-studio` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use burn::module::Module;
use clap::{Parser, Subcommand};

use fae_studio::backend::{self, BackendChoice};
use fae_studio::bench::{self, BenchOptions};
use fae_studio::composite::{self, CompositeMode, CompositeOptions};
use fae_studio::edit::ops::InterpMode;
use fae_studio::edit::recipe::Recipe;
use fae_studio::encoders::source;
use fae_studio::evaluate;
use fae_studio::fae::{self, CheckpointFile, Fae, PixelHead};
use fae_studio::features;
use fae_studio::fsutil::write_safetensors;
use fae_studio::fsutil::{write_photo_png, write_png};
use fae_studio::generator::flow::TimeSampling;
use fae_studio::generator::train::{GeneratorTrainOptions, train_generator};
use fae_studio::generator::{
    self, Generator, GeneratorFile, GeneratorSize, SampleOptions, Sampler, sample_to_folder,
};
use fae_studio::grid::Grid;
use fae_studio::heldout;

/// mimalloc keeps freed tensor buffers for reuse. With glibc's allocator each large tensor was a
/// fresh mmap whose pages the kernel faulted in and zeroed again, on every operation.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use fae_studio::image_io::{is_high_bit_depth, to_rgb8};
use fae_studio::pipeline;
use fae_studio::train::{self, Stage, TrainOptions};
use fae_studio::weights::WeightFile;

#[derive(Parser)]
#[command(name = "fae-studio", version, about = "Feature Auto-Encoder studio")]
struct Cli {
    /// Where to compute: a GPU when present (auto), the CPU, or wgpu on any adapter.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto, global = true)]
    backend: BackendChoice,
    /// Without a command: open the app, and once the sample photo is drawn save the window to
    /// this PNG, print what drew it, and exit (checks the window on this machine's adapter).
    #[arg(long, value_name = "PNG")]
    screenshot: Option<PathBuf>,
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
        /// Generator checkpoint for the generator stages (default: the built-in generator).
        #[arg(long)]
        generator: Option<PathBuf>,
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
        /// Encode the whole photo on a grid of its aspect whose longer side is --size, instead
        /// of the centre square.
        #[arg(long)]
        whole: bool,
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
        /// A generator (from train-generator) for `harmonise` edits.
        #[arg(long)]
        generator: Option<PathBuf>,
        #[arg(long)]
        size: Option<usize>,
        /// Encode the whole photo on a grid of its aspect whose longer side is --size, instead
        /// of the centre square (sources are fitted to the same size).
        #[arg(long)]
        whole: bool,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        composite: CompositeArgs,
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
        #[command(flatten)]
        composite: CompositeArgs,
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
    /// Write an FAE or generator checkpoint's inference weights alone (optionally in f16), e.g. to
    /// ship a model.
    Export {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Store weights as f16 (half the size).
        #[arg(long)]
        f16: bool,
        /// For a generator: record this FAE model as its own instead, after checking that it
        /// encodes exactly as the recorded one (same encoder weights and latent statistics; its
        /// decoders may differ, as after `train --stage pixel`).
        #[arg(long)]
        fae: Option<PathBuf>,
    },
    /// Train a flow-matching generator on the FAE latents of a folder of images.
    TrainGenerator(TrainGeneratorArgs),
    /// Generate new images with a trained generator: N PNGs and contact_sheet.png.
    Sample(SampleArgs),
    /// Compare generated images with real ones: FD-DINOv2, precision and recall. With
    /// --reconstruct: regenerate every image of a folder (e.g. the held-out set of
    /// tools/fetch_heldout.sh) and report PSNR, SSIM, cycle cosine, blockiness, detail kept.
    Evaluate {
        #[arg(long, required_unless_present = "reconstruct")]
        real: Option<PathBuf>,
        #[arg(long, required_unless_present = "reconstruct")]
        generated: Option<PathBuf>,
        /// Feature encoder (default: the built-in DINOv2-S; FD-DINOv2 papers use dinov2-large).
        #[arg(long, conflicts_with = "reconstruct")]
        encoder: Option<String>,
        /// Folder of photos (searched recursively) to take through the model's round trip.
        #[arg(long, conflicts_with_all = ["real", "generated"])]
        reconstruct: Option<PathBuf>,
        /// With --reconstruct: the FAE checkpoint (the built-in model when omitted).
        #[arg(long, requires = "reconstruct")]
        model: Option<PathBuf>,
        /// With --reconstruct: the working size in pixels (centre crops).
        #[arg(long, default_value_t = 224)]
        size: usize,
        #[arg(long)]
        json: bool,
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

/// Putting the result back into the photo (`edit`, `interpolate`).
#[derive(clap::Args)]
struct CompositeArgs {
    /// `mask`: paste the edited region into the photo through a feathered mask; `detail`: add
    /// the decoded change to the photo; both write the photo's own resolution (16-bit PNG for a
    /// 16-bit photo). `off`: the plain decode.
    #[arg(long, value_enum, default_value_t = CompositeMode::Off)]
    composite: CompositeMode,
    /// Widest blend transition, in pixels of the photo; nothing farther from the edit changes.
    #[arg(long, default_value_t = composite::DEFAULT_FEATHER)]
    feather: f32,
    /// Match the pasted region's colour and brightness to the photo around it.
    #[arg(long)]
    color_match: bool,
    /// How much of the decoded change `--composite detail` adds.
    #[arg(long, default_value_t = 1.0)]
    detail_strength: f32,
    /// Keep the photo where the decode changed by less than this (mean over channels, 0..1;
    /// 0: off).
    #[arg(long, default_value_t = 0.0)]
    preserve: f32,
}

impl CompositeArgs {
    fn options(&self) -> CompositeOptions {
        CompositeOptions {
            mode: self.composite,
            feather: self.feather,
            color_match: self.color_match,
            strength: self.detail_strength,
            preserve: self.preserve,
        }
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Mode {
    Lerp,
    Slerp,
}

/// The last loss; none when a resumed run had no steps left (or every step was skipped).
fn loss_text(loss: f64) -> String {
    if loss.is_finite() { format!("loss {loss:.4}") } else { "no finite loss in this run".into() }
}

fn parse_token(s: &str) -> std::result::Result<(usize, usize), String> {
    let (y, x) = s.split_once(',').ok_or("expected ROW,COLUMN")?;
    Ok((y.trim().parse().map_err(|_| "bad row")?, x.trim().parse().map_err(|_| "bad column")?))
}

/// The flags every training command shares.
#[derive(clap::Args)]
struct RunArgs {
    /// Folder of images, searched recursively; sub-folders become class labels.
    #[arg(long)]
    data: PathBuf,
    /// Run folder: latest.safetensors, metrics.jsonl, the run's pictures, skipped.tsv.
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    steps: Option<u64>,
    /// Continue the run in --out exactly where it stopped.
    #[arg(long)]
    resume: bool,
    #[arg(long, default_value_t = 4e-4)]
    lr: f64,
    #[arg(long, default_value_t = 100)]
    warmup: u64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 250)]
    checkpoint_every: u64,
    #[arg(long, default_value_t = 10)]
    log_every: u64,
    /// Feature cache folder (default: ~/.cache/fae-studio).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

impl RunArgs {
    /// `--steps`, or on `--resume` without it the run's own total (0 asks the checkpoint).
    fn steps(&self, default: u64) -> u64 {
        self.steps.unwrap_or(if self.resume { 0 } else { default })
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

#[derive(clap::Args)]
struct TrainArgs {
    #[command(flatten)]
    run: RunArgs,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[arg(long, default_value_t = 224)]
    size: usize,
    #[arg(long, value_enum, default_value_t = Stage::All)]
    stage: Stage,
    /// Start from this checkpoint's weights (fine-tuning) instead of from scratch.
    #[arg(long)]
    from: Option<PathBuf>,
    /// Encoder for a model trained from scratch (default: the built-in DINOv2-S).
    #[arg(long)]
    encoder: Option<String>,
    /// Augmented views per image kept in the feature cache.
    #[arg(long, default_value_t = 8)]
    views: u32,
    #[arg(long, default_value_t = 250)]
    val_every: u64,
    /// Weight of the perceptual (encoder feature) term of the pixel loss; 0 turns it off.
    #[arg(long, default_value_t = 0.1)]
    perceptual: f64,
    /// Weight of the adversarial (hinge GAN, PatchGAN discriminator) term of the pixel loss;
    /// 0 (the default) leaves it off; 0.1 is a reasonable weight for long runs.
    #[arg(long, default_value_t = 0.0)]
    adversarial: f64,
    /// Where in the pixel stages the adversarial term starts (0 = their start, 1 = never).
    #[arg(long, default_value_t = 0.5)]
    adversarial_start: f64,
    /// Latent channels for a model trained from scratch.
    #[arg(long, default_value_t = 32)]
    latent_channels: usize,
    /// Largest feature cache size in GiB.
    #[arg(long, default_value_t = 4.0)]
    cache_gb: f64,
    /// Pixel decoder head of a new model (default linear). With --from, the other kind than the
    /// checkpoint's starts a fresh head on its pixel decoder: `--stage pixel --pixel-head conv`.
    #[arg(long, value_enum)]
    pixel_head: Option<PixelHeadKind>,
}

/// `--pixel-head`: the kinds of [`PixelHead`].
#[derive(Clone, Copy, clap::ValueEnum)]
enum PixelHeadKind {
    /// A linear layer per token (leaves a patch grid).
    Linear,
    /// Coarse map, 3x3 convolutions across patches and 2x upsampling.
    Conv,
}

#[derive(clap::Args)]
struct TrainGeneratorArgs {
    #[command(flatten)]
    run: RunArgs,
    /// FAE checkpoint whose latents are learned (default: the built-in model).
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Image size in pixels (default: the FAE model's training size).
    #[arg(long)]
    size: Option<usize>,
    #[arg(long, value_enum, default_value_t = GeneratorSize::Tiny)]
    arch: GeneratorSize,
    /// Latent tokens per side in one transformer token (2: four times cheaper).
    #[arg(long, default_value_t = 1)]
    patch: usize,
    /// Augmented views per image.
    #[arg(long, default_value_t = 4)]
    views: u32,
    /// Probability of training a sample without its class (enables guidance).
    #[arg(long, default_value_t = 0.1)]
    label_dropout: f64,
    #[arg(long, value_enum, default_value_t = TimeSampling::LogitNormal)]
    time_sampling: TimeSampling,
    /// Timestep shift of the training times (1 = none).
    #[arg(long, default_value_t = 1.0)]
    shift: f64,
    #[arg(long, default_value_t = 0.999)]
    ema: f64,
    /// Decoded samples written at each checkpoint (0: none).
    #[arg(long, default_value_t = 8)]
    previews: usize,
}

#[derive(clap::Args)]
struct SampleArgs {
    #[arg(long)]
    generator: PathBuf,
    /// Class name (a sub-folder of the training data); unconditional when omitted.
    #[arg(long)]
    class: Option<String>,
    #[arg(long, default_value_t = 8)]
    n: usize,
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// Classifier-free guidance scale (1 = off; the paper uses about 2.5).
    #[arg(long, default_value_t = 1.0)]
    cfg: f64,
    /// Guidance is applied for LO <= t <= HI (t = 1 is noise).
    #[arg(long, value_parser = parse_interval, default_value = "0,0.7")]
    cfg_interval: (f64, f64),
    #[arg(long, value_enum, default_value_t = Sampler::Euler)]
    sampler: Sampler,
    /// Timestep shift of the sampling grid (1 = uniform).
    #[arg(long, default_value_t = 1.0)]
    shift: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Images per model call.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// The FAE model that decodes the latents (default: the one the generator was trained on).
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long)]
    out: PathBuf,
}

fn parse_interval(s: &str) -> std::result::Result<(f64, f64), String> {
    let (lo, hi) = s.split_once(',').ok_or("expected LO,HI")?;
    Ok((lo.trim().parse().map_err(|_| "bad LO")?, hi.trim().parse().map_err(|_| "bad HI")?))
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
        Command::Bench { json, stage, encoder, runs, sizes, batches, model, generator } => {
            let options = BenchOptions {
                stage,
                backend: cli.backend,
                encoder,
                runs,
                sizes,
                batches,
                model,
                generator,
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
            let mut o = run_options!(TrainOptions, args.run);
            o.batch = args.batch.max(1);
            o.size = args.size;
            o.stage = args.stage;
            o.from = args.from;
            o.encoder = args.encoder;
            o.views = args.views.max(1);
            o.val_every = args.val_every.max(1);
            o.perceptual = args.perceptual;
            (o.adversarial, o.adversarial_start) = (args.adversarial, args.adversarial_start);
            o.latent_channels = args.latent_channels;
            o.cache_max_bytes = (args.cache_gb * (1u64 << 30) as f64) as u64;
            o.pixel_head = args.pixel_head.map(|kind| match kind {
                PixelHeadKind::Linear => PixelHead::Linear,
                PixelHeadKind::Conv => PixelHead::conv(),
            });
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
        Command::Evaluate { reconstruct: Some(dir), model, size, json, .. } => {
            let compute = backend::select(cli.backend)?;
            let fae = Fae::load(model.as_deref(), &compute.device)?;
            let name = model.map_or("built-in".to_string(), |p| p.display().to_string());
            let report = heldout::evaluate(&fae, &name, &dir, size)?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                let a = &report.all;
                println!(
                    "PSNR {:.2} dB, SSIM {:.4}, cycle cosine {:.4}",
                    a.psnr, a.ssim, a.cycle_cosine
                );
                println!(
                    "blockiness {:.3} (originals {:.3}), high-frequency ratio {:.3}",
                    a.blockiness, a.blockiness_originals, a.high_frequency_ratio
                );
                eprintln!("{} images at {size} px, {:.2} images/s", a.images, report.images_per_s);
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
    match std::panic::catch_unwind(|| run(cli)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
        Err(_) => ExitCode::FAILURE,
    }
}
