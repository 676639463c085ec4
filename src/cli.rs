//! The command line's arguments (clap), apart from what each command does (`main.rs`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use fae_studio::backend::BackendChoice;
use fae_studio::composite::{self, CompositeMode, CompositeOptions};
use fae_studio::generator::flow::TimeSampling;
use fae_studio::generator::{GeneratorSize, Sampler};
use fae_studio::train::{LrSchedule, Stage};

#[derive(Parser)]
#[command(name = "fae-studio", version, about = "Feature Auto-Encoder studio")]
pub struct Cli {
    /// Where to compute: a GPU when present (auto), the CPU, or wgpu on any adapter.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto, global = true)]
    pub backend: BackendChoice,
    /// Without a command: open the app, and once the sample photo is drawn save the window to
    /// this PNG, print what drew it, and exit (checks the window on this machine's adapter).
    #[arg(long, value_name = "PNG")]
    pub screenshot: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand)]
pub enum Command {
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
        /// Image size of the training stages (train_fae, train_pixel, train_pixel_decoded,
        /// train_generator), which run only when named with --stage.
        #[arg(long, default_value_t = 224)]
        train_size: usize,
        /// Batch of the training stages.
        #[arg(long, default_value_t = 8)]
        train_batch: usize,
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
        /// With --reconstruct: also write a PNG of 8 originals (top) above their
        /// reconstructions (bottom), spread over the folder.
        #[arg(long, requires = "reconstruct")]
        grid: Option<PathBuf>,
        /// With --reconstruct: paint the encoder's own features, skipping the latent (the pixel
        /// decoder's ceiling; the gap to the round trip is what the latent costs).
        #[arg(long, requires = "reconstruct")]
        skip_latent: bool,
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
pub struct CompositeArgs {
    /// `mask`: paste the edited region into the photo through a feathered mask; `detail`: add
    /// the decoded change to the photo; both write the photo's own resolution (16-bit PNG for a
    /// 16-bit photo). `off`: the plain decode.
    #[arg(long, value_enum, default_value_t = CompositeMode::Off)]
    pub composite: CompositeMode,
    /// Widest blend transition, in pixels of the photo; nothing farther from the edit changes.
    #[arg(long, default_value_t = composite::DEFAULT_FEATHER)]
    pub feather: f32,
    /// Match the pasted region's colour and brightness to the photo around it.
    #[arg(long)]
    pub color_match: bool,
    /// How much of the decoded change `--composite detail` adds.
    #[arg(long, default_value_t = 1.0)]
    pub detail_strength: f32,
    /// Keep the photo where the decode changed by less than this (mean over channels, 0..1;
    /// 0: off).
    #[arg(long, default_value_t = 0.0)]
    pub preserve: f32,
}

impl CompositeArgs {
    pub fn options(&self) -> CompositeOptions {
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
pub enum Mode {
    Lerp,
    Slerp,
}

/// The last loss; none when a resumed run had no steps left (or every step was skipped).
pub fn loss_text(loss: f64) -> String {
    if loss.is_finite() { format!("loss {loss:.4}") } else { "no finite loss in this run".into() }
}

pub fn parse_token(s: &str) -> std::result::Result<(usize, usize), String> {
    let (y, x) = s.split_once(',').ok_or("expected ROW,COLUMN")?;
    Ok((y.trim().parse().map_err(|_| "bad row")?, x.trim().parse().map_err(|_| "bad column")?))
}

/// The flags every training command shares.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Folder of images, searched recursively; sub-folders become class labels.
    #[arg(long)]
    pub data: PathBuf,
    /// Run folder: latest.safetensors, metrics.jsonl, the run's pictures, skipped.tsv.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub steps: Option<u64>,
    /// Continue the run in --out exactly where it stopped.
    #[arg(long)]
    pub resume: bool,
    #[arg(long, default_value_t = 4e-4)]
    pub lr: f64,
    #[arg(long, default_value_t = 100)]
    pub warmup: u64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 250)]
    pub checkpoint_every: u64,
    #[arg(long, default_value_t = 10)]
    pub log_every: u64,
    /// Feature cache folder (default: ~/.cache/fae-studio).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl RunArgs {
    /// `--steps`, or on `--resume` without it the run's own total (0 asks the checkpoint).
    pub fn steps(&self, default: u64) -> u64 {
        self.steps.unwrap_or(if self.resume { 0 } else { default })
    }
}

#[derive(clap::Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub run: RunArgs,
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    #[arg(long, default_value_t = 224)]
    pub size: usize,
    #[arg(long, value_enum, default_value_t = Stage::All)]
    pub stage: Stage,
    /// Start from this checkpoint's weights (fine-tuning) instead of from scratch.
    #[arg(long)]
    pub from: Option<PathBuf>,
    /// Encoder for a model trained from scratch (default: the built-in DINOv2-S).
    #[arg(long)]
    pub encoder: Option<String>,
    /// Augmented views per image kept in the feature cache: view 0 is the centre crop, the
    /// others cycle through downscaled whole views and crops of 1/2 and 1/4 of the shorter side
    /// and of the working size (native pixels).
    #[arg(long, default_value_t = 8)]
    pub views: u32,
    #[arg(long, default_value_t = 250)]
    pub val_every: u64,
    /// Weight of the perceptual (encoder feature) term of the pixel loss; 0 turns it off.
    #[arg(long, default_value_t = 0.1, value_parser = parse_non_negative)]
    pub perceptual: f64,
    /// Random shift in pixels (up to a patch) between the perceptual term's crops and the
    /// decoder's patch grid; 0 compares on the grid, which teaches a per-patch pattern.
    #[arg(long, default_value_t = 7)]
    pub perceptual_shift: usize,
    /// Weight of the image-gradient L1 term of the pixel loss (sharper edges); 0 turns it off.
    #[arg(long, default_value_t = 0.0, value_parser = parse_non_negative)]
    pub gradient: f64,
    /// Weight of the amplitude-spectrum L1 term of the pixel loss (fine detail wherever it
    /// sits); 0 turns it off.
    #[arg(long, default_value_t = 0.0, value_parser = parse_non_negative)]
    pub spectrum: f64,
    /// Weight of the structural-similarity term (1 - SSIM on luma, the window `evaluate` uses)
    /// of the pixel loss: local contrast and structure; 0 turns it off.
    #[arg(long, default_value_t = 0.0, value_parser = parse_non_negative)]
    pub ssim: f64,
    /// Draw every sub-folder of --data equally often (then a file within it) instead of every
    /// file: a folder of 600 textures then weighs as much as one of 20 photos.
    #[arg(long)]
    pub balance: bool,
    /// AdamW's second-moment decay; 0.95 adapts faster in short runs (the value of the PyTorch
    /// baseline in DESIGN.md 7 and of the generator's trainer).
    #[arg(long, default_value_t = 0.999)]
    pub beta2: f64,
    /// How the learning rate moves after the warm-up of each phase.
    #[arg(long, value_enum, default_value_t = LrSchedule::Cosine)]
    pub lr_schedule: LrSchedule,
    /// Mean feature-noise level of the first pixel stage (per-sample sigma ~ U(0, 2 x NOISE));
    /// larger trades fidelity for robustness to the feature decoder's errors.
    #[arg(long, default_value_t = 0.4, value_parser = parse_non_negative)]
    pub noise: f64,
    /// Weight of the adversarial (hinge GAN, PatchGAN discriminator) term of the pixel loss;
    /// 0 (the default) leaves it off; 0.1 is a reasonable weight for long runs.
    #[arg(long, default_value_t = 0.0, value_parser = parse_non_negative)]
    pub adversarial: f64,
    /// Where in the pixel stages the adversarial term starts (0 = their start, 1 = never).
    #[arg(long, default_value_t = 0.5)]
    pub adversarial_start: f64,
    /// Latent channels for a model trained from scratch.
    #[arg(long, default_value_t = 32)]
    pub latent_channels: usize,
    /// Largest feature cache size in GiB.
    #[arg(long, default_value_t = 4.0)]
    pub cache_gb: f64,
    /// Pixel decoder head of a new model (default linear). With --from, the other kind than the
    /// checkpoint's starts a fresh head on its pixel decoder: `--stage pixel --pixel-head conv`.
    #[arg(long, value_enum)]
    pub pixel_head: Option<PixelHeadKind>,
    /// Residual 3x3 blocks of the conv pixel head (the built-in model has 2). With --from, the
    /// checkpoint's blocks are kept and the added ones start at zero, so training starts from
    /// the checkpoint's own pictures.
    #[arg(long, value_parser = clap::value_parser!(u16).range(0..=16))]
    pub head_blocks: Option<u16>,
}

/// `--pixel-head`: the kinds of [`PixelHead`](fae_studio::fae::PixelHead).
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum PixelHeadKind {
    /// A linear layer per token (leaves a patch grid).
    Linear,
    /// Coarse map, 3x3 convolutions across patches and 2x upsampling.
    Conv,
}

#[derive(clap::Args)]
pub struct TrainGeneratorArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// FAE checkpoint whose latents are learned (default: the built-in model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Image size in pixels (default: the FAE model's training size).
    #[arg(long)]
    pub size: Option<usize>,
    #[arg(long, value_enum, default_value_t = GeneratorSize::Tiny)]
    pub arch: GeneratorSize,
    /// Latent tokens per side in one transformer token (2: four times cheaper).
    #[arg(long, default_value_t = 1)]
    pub patch: usize,
    /// Augmented views per image.
    #[arg(long, default_value_t = 4)]
    pub views: u32,
    /// Probability of training a sample without its class (enables guidance).
    #[arg(long, default_value_t = 0.1)]
    pub label_dropout: f64,
    #[arg(long, value_enum, default_value_t = TimeSampling::LogitNormal)]
    pub time_sampling: TimeSampling,
    /// Timestep shift of the training times (1 = none).
    #[arg(long, default_value_t = 1.0)]
    pub shift: f64,
    #[arg(long, default_value_t = 0.999)]
    pub ema: f64,
    /// Decoded samples written at each checkpoint (0: none).
    #[arg(long, default_value_t = 8)]
    pub previews: usize,
}

#[derive(clap::Args)]
pub struct SampleArgs {
    #[arg(long)]
    pub generator: PathBuf,
    /// Class name (a sub-folder of the training data); unconditional when omitted.
    #[arg(long)]
    pub class: Option<String>,
    #[arg(long, default_value_t = 8)]
    pub n: usize,
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Classifier-free guidance scale (1 = off; the paper uses about 2.5).
    #[arg(long, default_value_t = 1.0)]
    pub cfg: f64,
    /// Guidance is applied for LO <= t <= HI (t = 1 is noise).
    #[arg(long, value_parser = parse_interval, default_value = "0,0.7")]
    pub cfg_interval: (f64, f64),
    #[arg(long, value_enum, default_value_t = Sampler::Euler)]
    pub sampler: Sampler,
    /// Timestep shift of the sampling grid (1 = uniform).
    #[arg(long, default_value_t = 1.0)]
    pub shift: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Images per model call.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// The FAE model that decodes the latents (default: the one the generator was trained on).
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[arg(long)]
    pub out: PathBuf,
}

/// A loss weight or noise level: a finite number >= 0 (a negative weight would train the decoder
/// away from its target).
pub fn parse_non_negative(s: &str) -> std::result::Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("expected a number >= 0, got {s}")),
    }
}

pub fn parse_interval(s: &str) -> std::result::Result<(f64, f64), String> {
    let (lo, hi) = s.split_once(',').ok_or("expected LO,HI")?;
    Ok((lo.trim().parse().map_err(|_| "bad LO")?, hi.trim().parse().map_err(|_| "bad HI")?))
}
