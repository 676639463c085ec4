//! Generating new latents: a flow-matching transformer trained on the FAE latents of a folder,
//! sampled with ODE or SDE solvers and guidance, and used for SDEdit variations of edits.
//!
//! Kept apart as in the DiT reference code: `model` (the network), `flow` (the interpolant and
//! time schedule), `train` (fitting), `sample` (solvers), `latents` (the training set).

pub mod config;
pub mod flow;
pub mod latents;
pub mod model;
pub mod sample;
pub mod train;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use sha2::{Digest, Sha256};

pub use config::{GeneratorConfig, GeneratorSize};
pub use model::FlowTransformer;
pub use sample::{SampleOptions, Sampler};

use crate::fae::checkpoint::{self, CheckpointWriter};
use crate::fae::{CheckpointFile, DEFAULT_MODEL, Fae};
use crate::grid::Grid;
use crate::text::json_error;
use crate::weights::WeightFile;

pub const FORMAT: &str = "fae-studio-generator/1";

/// The built-in generator in `assets/`, trained on the built-in FAE model's latents.
pub const DEFAULT_GENERATOR: &str = "generator-default.safetensors";

/// The FAE model whose latents a generator was trained on: where it was and what it held.
#[derive(Clone, Debug, PartialEq)]
pub struct FaeRef {
    /// `None` for the built-in model.
    pub path: Option<PathBuf>,
    pub sha256: String,
}

impl FaeRef {
    pub fn of(path: Option<&Path>) -> Result<Self> {
        let file = match path {
            Some(p) => p.to_path_buf(),
            None => crate::assets::path(DEFAULT_MODEL)?,
        };
        let bytes =
            std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
        Ok(Self {
            // Absolute, so a checkpoint finds its model from any working directory.
            path: path.map(|p| p.canonicalize().unwrap_or_else(|_| p.to_path_buf())),
            sha256: format!("{:x}", Sha256::digest(&bytes)),
        })
    }

    fn describe(&self) -> String {
        self.path.as_ref().map_or_else(|| "the built-in model".into(), |p| p.display().to_string())
    }
}

/// A generator checkpoint opened for reading.
pub struct GeneratorFile {
    pub file: WeightFile,
    pub config: GeneratorConfig,
    pub step: u64,
    pub fae: FaeRef,
}

impl GeneratorFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = WeightFile::open(path)?;
        let meta = file.metadata();
        if meta.get("format").map(String::as_str) != Some(FORMAT) {
            bail!(
                "{} is not an FAE Studio generator (no `format: {FORMAT}` metadata)",
                path.display()
            );
        }
        let invalid = || format!("{}: invalid generator configuration", path.display());
        let config: GeneratorConfig =
            serde_json::from_str(meta.get("config").map_or("", |s| s.as_str()))
                .map_err(json_error)
                .with_context(invalid)?;
        config.validate().with_context(invalid)?;
        // Every layer has tensors: more layers than tensors would have the model built (and its
        // layers allocated) before a tensor is found missing.
        let tensors = file.names().count();
        if config.depth > tensors {
            bail!(
                "{}: configuration of {} layers in a file of {tensors} tensors",
                path.display(),
                config.depth
            );
        }
        let step = meta.get("step").and_then(|s| s.parse().ok()).unwrap_or(0);
        let fae = FaeRef {
            path: meta.get("fae_path").filter(|p| !p.is_empty()).map(PathBuf::from),
            sha256: meta.get("fae_sha256").cloned().unwrap_or_default(),
        };
        Ok(Self { file, config, step, fae })
    }

    /// Inference (EMA) weights.
    pub fn model(&self, device: &Device) -> Result<FlowTransformer> {
        let model = FlowTransformer::new(&self.config, device);
        checkpoint::check_unused(&model, &self.file, "model.")?;
        checkpoint::load(model, &self.file, "model.", &BTreeMap::new())
    }

    /// Raw training weights with their parameter ids (the EMA weights if there are none).
    pub fn train_model(&self, device: &Device) -> Result<FlowTransformer> {
        let model = FlowTransformer::new(&self.config, device);
        let has = checkpoint::has_train_state(&self.file);
        let prefix = if has { "train." } else { "model." };
        checkpoint::load(model, &self.file, prefix, &checkpoint::param_ids(&self.file)?)
    }
}

/// Writes a generator checkpoint atomically; `f16` halves the size (for shipped models).
pub fn save(
    path: &Path,
    ema: &FlowTransformer,
    fae: &FaeRef,
    step: u64,
    train: Option<(&FlowTransformer, Vec<u8>, serde_json::Value)>,
    f16: bool,
) -> Result<()> {
    let mut writer = CheckpointWriter::new(FORMAT);
    writer.module("model.", ema, f16);
    writer.meta("config", serde_json::to_string(&ema.config)?);
    writer.meta("step", step.to_string());
    let fae_path = fae.path.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    writer.meta("fae_path", fae_path);
    writer.meta("fae_sha256", fae.sha256.clone());
    if let Some((weights, optimizer, state)) = train {
        writer.train_state(weights, optimizer, &state);
    }
    writer.write(path)
}

/// A loaded generator with the FAE model that turns its latents into images.
pub struct Generator {
    pub model: FlowTransformer,
    /// Shared, so an app can pair a generator with the FAE model it already holds.
    pub fae: Arc<Fae>,
    pub step: u64,
}

impl GeneratorFile {
    /// Checks that the FAE model at `fae_path` (the built-in one when `None`) is the one whose
    /// latents this generator learned; `path` names the generator in the error.
    pub fn check_fae(&self, path: &Path, fae_path: Option<&Path>) -> Result<()> {
        let actual = FaeRef::of(fae_path)?;
        if !self.fae.sha256.is_empty() && actual.sha256 != self.fae.sha256 {
            bail!(
                "{} was trained on the latents of {} (sha256 {}…), but {} differs; pass the same FAE model with --model",
                path.display(),
                self.fae.describe(),
                &self.fae.sha256[..12.min(self.fae.sha256.len())],
                actual.describe()
            );
        }
        Ok(())
    }

    /// The reference that moves this generator to the FAE model at `new_fae`, which must encode
    /// exactly as the recorded one (checked, with the recorded model present): a generator learned
    /// latents only, so a model whose decoders were fine-tuned serves it unchanged. `new_fae`
    /// being the built-in model's file records the built-in model.
    pub fn retarget(&self, path: &Path, new_fae: &Path) -> Result<FaeRef> {
        let recorded_path = match &self.fae.path {
            Some(p) => p.clone(),
            None => crate::assets::path(DEFAULT_MODEL)?,
        };
        self.check_fae(path, Some(&recorded_path))?;
        let recorded = CheckpointFile::open(&recorded_path)?;
        recorded.check_same_latents(&CheckpointFile::open(new_fae)?)?;
        let built_in = crate::assets::path(DEFAULT_MODEL).ok().and_then(|p| p.canonicalize().ok());
        let is_built_in = new_fae.canonicalize().ok() == built_in && built_in.is_some();
        FaeRef::of((!is_built_in).then_some(new_fae))
    }
}

impl Generator {
    /// Loads a generator and its FAE model: the one recorded in the checkpoint, or `fae_path`
    /// (which must hold the same model: its latents are what the generator learned).
    pub fn load(path: &Path, fae_path: Option<&Path>, device: &Device) -> Result<Self> {
        let file = GeneratorFile::open(path)?;
        let fae_path = fae_path.map(Path::to_path_buf).or_else(|| file.fae.path.clone());
        file.check_fae(path, fae_path.as_deref())?;
        let fae = Fae::load(fae_path.as_deref(), device)?;
        Self::pair(path, &file, Arc::new(fae), device)
    }

    /// Loads a generator for an FAE model already loaded from `fae_path` (the built-in one when
    /// `None`), checking that it is the model the generator learned.
    pub fn with_fae(
        path: &Path,
        fae: Arc<Fae>,
        fae_path: Option<&Path>,
        device: &Device,
    ) -> Result<Self> {
        let file = GeneratorFile::open(path)?;
        file.check_fae(path, fae_path)?;
        Self::pair(path, &file, fae, device)
    }

    fn pair(path: &Path, file: &GeneratorFile, fae: Arc<Fae>, device: &Device) -> Result<Self> {
        if fae.config.latent_channels != file.config.channels {
            bail!(
                "{}: generator expects {} latent channels, the FAE model has {}",
                path.display(),
                file.config.channels,
                fae.config.latent_channels
            );
        }
        Ok(Self { model: file.model(device)?, fae, step: file.step })
    }

    pub fn config(&self) -> &GeneratorConfig {
        &self.model.config
    }

    /// The label for `class` (`None`: unconditional).
    pub fn label(&self, class: Option<&str>) -> Result<usize> {
        match class {
            Some(name) => self.config().class_index(name),
            None => Ok(self.config().null_class()),
        }
    }

    /// `n` new normalised latents; image `i` uses seed `seed + i`.
    pub fn generate(
        &self,
        class: Option<&str>,
        n: usize,
        seed: u64,
        opts: &SampleOptions,
        on_step: sample::OnStep,
    ) -> Result<Vec<Grid>> {
        let label = self.label(class)?;
        let seeds: Vec<u64> = (0..n as u64).map(|i| seed.wrapping_add(i)).collect();
        let latents = sample::generate(
            &self.model,
            &vec![label; n],
            &seeds,
            opts,
            &self.fae.device,
            on_step,
        )?;
        Ok(self.split(latents))
    }

    /// SDEdit: noise `latent` to `strength` (0..1) and integrate back.
    pub fn vary(
        &self,
        latent: &Grid,
        strength: f64,
        class: Option<&str>,
        seed: u64,
        opts: &SampleOptions,
        on_step: sample::OnStep,
    ) -> Result<Grid> {
        let (h, w) = self.config().grid;
        if (latent.height, latent.width, latent.channels) != (h, w, self.config().channels) {
            bail!(
                "the generator works on {h}x{w}x{} latents, this one is {}x{}x{} (encode at the generator's size)",
                self.config().channels,
                latent.height,
                latent.width,
                latent.channels
            );
        }
        let x = Tensor::<1>::from_data(
            TensorData::new(latent.data.clone(), [latent.data.len()]),
            &self.fae.device,
        )
        .reshape([1, h * w, latent.channels]);
        let label = self.label(class)?;
        let out = sample::vary(&self.model, x, strength, &[label], &[seed], opts, on_step)?;
        Ok(self.split(out).remove(0))
    }

    /// Runs a `harmonise` edit (Euler steps, no guidance).
    pub fn harmonise(&self, latent: &Grid, h: &crate::edit::ops::Harmonise) -> Result<Grid> {
        let opts = SampleOptions { steps: h.steps, ..SampleOptions::default() };
        self.vary(latent, h.strength as f64, h.class.as_deref(), h.seed, &opts, &mut |_, _| true)
    }

    fn split(&self, latents: Tensor<3>) -> Vec<Grid> {
        let (h, w) = self.config().grid;
        let [n, t, c] = latents.dims();
        let values = latents.into_data().try_into_vec_as::<f32>().expect("f32 data");
        (0..n)
            .map(|i| Grid {
                height: h,
                width: w,
                channels: c,
                data: values[i * t * c..(i + 1) * t * c].to_vec(),
            })
            .collect()
    }
}

/// Generates `n` images (`batch` at a time), writes `sample-NNNN.png` and `contact_sheet.png`
/// into `out`, and returns the image paths. Image `i` comes from seed `seed + i`.
#[allow(clippy::too_many_arguments)]
pub fn sample_to_folder(
    generator: &Generator,
    class: Option<&str>,
    n: usize,
    seed: u64,
    opts: &SampleOptions,
    batch: usize,
    out: &Path,
    on_image: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Vec<PathBuf>> {
    if n == 0 {
        bail!("--n must be at least 1");
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut paths = Vec::with_capacity(n);
    let mut images = Vec::with_capacity(n);
    for start in (0..n).step_by(batch.max(1)) {
        let len = batch.max(1).min(n - start);
        let latents = generator.generate(
            class,
            len,
            seed.wrapping_add(start as u64),
            opts,
            &mut |_, _| true,
        )?;
        for (k, latent) in latents.iter().enumerate() {
            let image = crate::image_io::to_rgb8(&generator.fae.decode(latent)?.image);
            let path = out.join(format!("sample-{:04}.png", start + k));
            crate::fsutil::write_png(&path, &image)?;
            paths.push(path);
            images.push(image);
            if !on_image(start + k + 1, n) {
                bail!("cancelled");
            }
        }
    }
    let columns = (n as f64).sqrt().ceil() as usize;
    let sheet = crate::inspect::contact_sheet(&images, columns, 2, image::Rgb([24, 24, 24]))?;
    crate::fsutil::write_png(&out.join(CONTACT_SHEET), &sheet)?;
    Ok(paths)
}

/// The overview picture `sample` writes beside the images (not counted by `evaluate`).
pub const CONTACT_SHEET: &str = "contact_sheet.png";
