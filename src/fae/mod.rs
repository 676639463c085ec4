//! FAE, the Feature Auto-Encoder: a frozen encoder's tokens, one attention layer down to a small
//! latent, a feature decoder back to encoder features, and a pixel decoder to an image.
//!
//! Checkpoints are safetensors files: inference weights under `model.`, per-channel latent
//! statistics `latent_mean` / `latent_std`, and (training checkpoints only) raw weights under
//! `train.`, EMA weights under `model.` and the optimizer state as the byte tensor `optimizer`.
//! The metadata holds `format`, the JSON `config`, `step` and training state.

pub mod checkpoint;
pub mod config;
pub mod model;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use image::Rgb32FImage;
use serde::Serialize;

pub use config::{FaeConfig, PixelHead};
pub use model::FaeModel;

use crate::encoders::{VisionEncoder, source};
use crate::grid::Grid;
use crate::image_io;
use crate::metrics;
use crate::text::json_error;
use crate::weights::WeightFile;

pub const FORMAT: &str = "fae-studio-checkpoint/1";
/// The built-in model, under `assets/`.
pub const DEFAULT_MODEL: &str = "fae-default.safetensors";

/// Per-channel latent statistics over a training set, so generators see a unit-variance latent.
#[derive(Clone, Debug, PartialEq)]
pub struct LatentStats {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl LatentStats {
    pub fn identity(channels: usize) -> Self {
        Self { mean: vec![0.0; channels], std: vec![1.0; channels] }
    }

    fn tensors(&self, device: &Device) -> (Tensor<3>, Tensor<3>) {
        let c = self.mean.len();
        let t = |v: &Vec<f32>| {
            Tensor::<1>::from_data(TensorData::new(v.clone(), [c]), device).reshape([1, 1, c])
        };
        (t(&self.mean), t(&self.std))
    }

    /// Raw latent means `[B, T, C]` to the normalised latent.
    pub fn normalise(&self, raw: Tensor<3>) -> Tensor<3> {
        let (m, s) = self.tensors(&raw.device());
        (raw - m) / s
    }

    pub fn denormalise(&self, latent: Tensor<3>) -> Tensor<3> {
        let (m, s) = self.tensors(&latent.device());
        latent * s + m
    }
}

/// What a training checkpoint carries beyond the inference weights.
pub struct TrainState<'a> {
    pub weights: &'a FaeModel,
    pub optimizer: Vec<u8>,
    /// Free-form JSON (schedule, RNG seed, stage, learning-rate scale).
    pub state: serde_json::Value,
    /// The adversarial term's discriminator and its optimizer state, once it has started.
    pub discriminator: Option<(&'a crate::train::discriminator::Discriminator, Vec<u8>)>,
}

/// Writes a checkpoint atomically. `f16` halves the size (for shipped models).
pub fn save(
    path: &Path,
    config: &FaeConfig,
    stats: &LatentStats,
    model: &FaeModel,
    step: u64,
    train: Option<TrainState>,
    f16: bool,
) -> Result<()> {
    let mut writer = checkpoint::CheckpointWriter::new(FORMAT);
    writer.module("model.", model, f16);
    let c = stats.mean.len();
    writer.f32("latent_mean", vec![c], &stats.mean);
    writer.f32("latent_std", vec![c], &stats.std);
    writer.meta("config", serde_json::to_string(config)?);
    writer.meta("step", step.to_string());
    if let Some(train) = train {
        writer.train_state(train.weights, train.optimizer, &train.state);
        if let Some((disc, optimizer)) = train.discriminator {
            writer.aux_state("disc", disc, optimizer);
        }
    }
    writer.write(path)
}

/// A checkpoint opened for reading.
pub struct CheckpointFile {
    pub file: WeightFile,
    pub config: FaeConfig,
    pub stats: LatentStats,
    pub step: u64,
}

impl CheckpointFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = WeightFile::open(path)?;
        let meta = file.metadata();
        if meta.get("format").map(String::as_str) != Some(FORMAT) {
            bail!(
                "{} is not an FAE Studio checkpoint (no `format: {FORMAT}` metadata)",
                path.display()
            );
        }
        let invalid = || format!("{}: invalid model configuration", path.display());
        let config: FaeConfig = serde_json::from_str(meta.get("config").map_or("", |s| s.as_str()))
            .map_err(json_error)
            .with_context(invalid)?;
        config.validate().with_context(invalid)?;
        // Every layer has tensors: more layers than tensors would have the model built (and its
        // layers allocated) before a tensor is found missing.
        let layers = config.dec_depth.saturating_add(config.pix_depth);
        let tensors = file.names().count();
        if layers > tensors {
            bail!(
                "{}: configuration of {layers} decoder layers in a file of {tensors} tensors",
                path.display()
            );
        }
        let c = config.latent_channels;
        let stats = LatentStats {
            mean: file.read_f32("latent_mean", &[c])?,
            std: file.read_f32("latent_std", &[c])?,
        };
        if stats.std.iter().any(|&s| s <= 0.0) {
            bail!("{}: latent_std must be positive", path.display());
        }
        let step = meta.get("step").and_then(|s| s.parse().ok()).unwrap_or(0);
        Ok(Self { file, config, stats, step })
    }

    pub fn param_ids(&self) -> Result<BTreeMap<String, u64>> {
        checkpoint::param_ids(&self.file)
    }

    pub fn has_train_state(&self) -> bool {
        checkpoint::has_train_state(&self.file)
    }

    /// Inference (EMA) weights.
    pub fn model(&self, device: &Device) -> Result<FaeModel> {
        let model = FaeModel::new(&self.config, device);
        checkpoint::check_unused(&model, &self.file, "model.")?;
        checkpoint::load(model, &self.file, "model.", &BTreeMap::new())
    }

    /// Raw training weights with their parameter ids, falling back to the inference weights.
    pub fn train_model(&self, device: &Device) -> Result<FaeModel> {
        let model = FaeModel::new(&self.config, device);
        let prefix = if self.has_train_state() { "train." } else { "model." };
        checkpoint::load(model, &self.file, prefix, &self.param_ids()?)
    }

    pub fn optimizer_bytes(&self) -> Result<Option<Vec<u8>>> {
        checkpoint::optimizer_bytes(&self.file)
    }

    pub fn train_state(&self) -> Option<serde_json::Value> {
        checkpoint::train_state(&self.file)
    }

    /// Fails unless `other` maps images to exactly the same latents: the same frozen encoder and
    /// working size, FAE encoder weights (inference copy) and latent statistics. The decoders may
    /// differ, as after `train --stage pixel`.
    pub fn check_same_latents(&self, other: &CheckpointFile) -> Result<()> {
        let (a, b) = (&self.config, &other.config);
        let describe = |c: &FaeConfig| {
            let layout =
                (c.encoder_dim, c.image_size, c.latent_channels, c.enc_heads, c.enc_head_dim);
            (c.encoder.clone(), layout)
        };
        let names = || {
            let (pa, pb) = (self.file.path().display(), other.file.path().display());
            format!("{pa} and {pb}")
        };
        if describe(a) != describe(b) {
            bail!("{} differ in encoder, size or latent layout", names());
        }
        if self.stats != other.stats {
            bail!("{} differ in latent statistics", names());
        }
        let encoder_names: Vec<&str> =
            self.file.names().filter(|n| n.starts_with("model.encoder.")).collect();
        let other_count = other.file.names().filter(|n| n.starts_with("model.encoder.")).count();
        if encoder_names.len() != other_count {
            bail!("{} differ in FAE encoder tensors", names());
        }
        for name in encoder_names {
            let shape = self.file.shape(name).unwrap_or_default();
            let same = other.file.shape(name).as_ref() == Some(&shape)
                && self.file.read_f32(name, &shape)? == other.file.read_f32(name, &shape)?;
            if !same {
                bail!("{} differ in FAE encoder tensor `{name}`", names());
            }
        }
        Ok(())
    }
}

/// A loaded model ready to encode and decode: frozen encoder, FAE networks and latent statistics.
pub struct Fae {
    pub config: FaeConfig,
    pub model: FaeModel,
    pub stats: LatentStats,
    pub encoder: Arc<dyn VisionEncoder>,
    pub device: Device,
    pub step: u64,
}

/// An image taken through the encoder and the FAE encoder.
#[derive(Clone, Debug)]
pub struct Encoded {
    /// The picture the encoder saw.
    pub image: Rgb32FImage,
    /// Encoder features `[gh, gw, D]`.
    pub features: Grid,
    /// Normalised latent `[gh, gw, C]`.
    pub latent: Grid,
}

/// A latent taken back through both decoders.
#[derive(Clone, Debug)]
pub struct Decoded {
    /// Restored features `[gh, gw, D]`.
    pub features: Grid,
    pub image: Rgb32FImage,
}

/// A single-image `[1, gh * gw, C]` tensor as a host grid.
pub fn to_grid(t: Tensor<3>, grid: (usize, usize)) -> Grid {
    let [_, _, c] = t.dims();
    let data = t.into_data().try_into_vec_as::<f32>().expect("f32 data");
    Grid { height: grid.0, width: grid.1, channels: c, data }
}

/// `[1, 3, H, W]` in [0, 1] to an image, clamped.
pub fn tensor_to_image(t: Tensor<4>) -> Rgb32FImage {
    let [_, _, h, w] = t.dims();
    let data = t.clamp(0.0, 1.0).into_data().try_into_vec_as::<f32>().expect("f32 data");
    Rgb32FImage::from_fn(w as u32, h as u32, |x, y| {
        let i = y as usize * w + x as usize;
        image::Rgb([data[i], data[h * w + i], data[2 * h * w + i]])
    })
}

impl Fae {
    /// Loads a checkpoint (the built-in model when `path` is `None`) and the encoder it names.
    pub fn load(path: Option<&Path>, device: &Device) -> Result<Self> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => crate::assets::path(DEFAULT_MODEL)?,
        };
        let ckpt = CheckpointFile::open(&path)?;
        let encoder = source::load(Some(&ckpt.config.encoder), device)?;
        Self::from_checkpoint(&ckpt, encoder, device)
    }

    pub fn from_checkpoint(
        ckpt: &CheckpointFile,
        encoder: Arc<dyn VisionEncoder>,
        device: &Device,
    ) -> Result<Self> {
        check_encoder(&ckpt.config, encoder.as_ref(), ckpt.file.path())?;
        Ok(Self {
            config: ckpt.config.clone(),
            model: ckpt.model(device)?,
            stats: ckpt.stats.clone(),
            encoder,
            device: device.clone(),
            step: ckpt.step,
        })
    }

    /// Encoder features `[B, T, D]` to the normalised (deterministic, mean) latent `[B, T, C]`.
    pub fn encode_features(&self, features: Tensor<3>) -> Tensor<3> {
        let (mean, _) = self.model.encoder.forward(features);
        self.stats.normalise(mean)
    }

    /// Normalised latent `[B, T, C]` to restored features and the image.
    pub fn decode_latent(&self, latent: Tensor<3>, grid: (usize, usize)) -> (Tensor<3>, Tensor<4>) {
        let features = self.model.feature_decoder.forward(self.stats.denormalise(latent), grid);
        let image = self.model.pixel_decoder.forward(features.clone(), grid);
        (features, image)
    }

    /// Encodes an image file at `size x size` (the model's training size when `None`).
    pub fn encode_image(&self, path: &Path, size: Option<usize>) -> Result<Encoded> {
        let size = size.unwrap_or(self.config.image_size);
        let info = self.encoder.info();
        info.check_size(size, size)?;
        let (pixels, image) = image_io::load_for_encoder(
            path,
            (size as u32, size as u32),
            info.mean,
            info.std,
            &self.device,
        )?;
        self.encode_pixels(pixels, image)
    }

    /// The working size `(width, height)` that encodes the whole of a photo of `photo` pixels:
    /// its longer side `long_side` (the model's training size when `None`), each side rounded
    /// to a multiple of the patch size.
    pub fn whole_size(&self, photo: (u32, u32), long_side: Option<usize>) -> (usize, usize) {
        let p = self.config.patch_size;
        let long = long_side.unwrap_or(self.config.image_size) as f64;
        let scale = long / photo.0.max(photo.1).max(1) as f64;
        let side = |s: u32| ((s as f64 * scale / p as f64).round() as usize).max(1) * p;
        (side(photo.0), side(photo.1))
    }

    /// Encodes the whole photo, not its centre square, on a grid of its own aspect (see
    /// [`Fae::whole_size`]; rounding to the patch size crops at most half a patch at the edges).
    pub fn encode_whole(&self, path: &Path, long_side: Option<usize>) -> Result<Encoded> {
        let photo = image_io::load_rgb(path)?;
        let size = self.whole_size(photo.dimensions(), long_side);
        self.encode_fitted(&photo, size)
    }

    /// Encodes `photo` fitted to `(width, height)`: shorter side resized, centre cropped.
    pub fn encode_fitted(&self, photo: &Rgb32FImage, (w, h): (usize, usize)) -> Result<Encoded> {
        let info = self.encoder.info();
        info.check_size(h, w)?;
        let image = image_io::fit_and_crop(photo, w as u32, h as u32);
        let pixels = image_io::to_tensor(&image, info.mean, info.std, &self.device);
        self.encode_pixels(pixels, image)
    }

    fn encode_pixels(&self, pixels: Tensor<4>, image: Rgb32FImage) -> Result<Encoded> {
        let tokens = self.encoder.forward(pixels).patch_tokens;
        let [_, gh, gw, d] = tokens.dims();
        let features = tokens.reshape([1, gh * gw, d]);
        let latent = self.encode_features(features.clone());
        Ok(Encoded {
            image,
            features: to_grid(features, (gh, gw)),
            latent: to_grid(latent, (gh, gw)),
        })
    }

    /// Paints encoder features `[gh, gw, D]` with the pixel decoder alone, skipping the latent:
    /// the image the 16x16xC bottleneck would let through if it lost nothing.
    pub fn paint_features(&self, features: &Grid) -> Result<Decoded> {
        let t = self.single_tensor(features, self.config.encoder_dim, "features")?;
        let image = self.model.pixel_decoder.forward(t, (features.height, features.width));
        Ok(Decoded { features: features.clone(), image: tensor_to_image(image) })
    }

    /// A host grid as a `[1, gh * gw, C]` tensor, refused unless it has `channels` channels.
    fn single_tensor(&self, grid: &Grid, channels: usize, what: &str) -> Result<Tensor<3>> {
        if grid.channels != channels {
            bail!("{what} has {} channels but the model expects {channels}", grid.channels);
        }
        let data = TensorData::new(grid.data.clone(), [grid.data.len()]);
        Ok(Tensor::<1>::from_data(data, &self.device).reshape([1, grid.tokens(), channels]))
    }

    /// Decodes a normalised latent grid.
    pub fn decode(&self, latent: &Grid) -> Result<Decoded> {
        let t = self.single_tensor(latent, self.config.latent_channels, "latent")?;
        let grid = (latent.height, latent.width);
        let (features, image) = self.decode_latent(t, grid);
        Ok(Decoded { features: to_grid(features, grid), image: tensor_to_image(image) })
    }

    /// Encoder features of an image (resized to the encoder's grid if the decoder's output size
    /// differs), for cycle consistency.
    pub fn features_of(&self, image: &Rgb32FImage, grid: (usize, usize)) -> Grid {
        let info = self.encoder.info();
        let (h, w) = (grid.0 * info.patch_size, grid.1 * info.patch_size);
        let fitted = image_io::fit_and_crop(image, w as u32, h as u32);
        let pixels = image_io::to_tensor(&fitted, info.mean, info.std, &self.device);
        let tokens = self.encoder.forward(pixels).patch_tokens;
        to_grid(tokens.reshape([1, grid.0 * grid.1, info.dim]), grid)
    }

    /// Encode then decode, with the quality figures.
    pub fn reconstruct(&self, path: &Path, size: Option<usize>) -> Result<Reconstruction> {
        self.reconstruct_encoded(self.encode_image(path, size)?)
    }

    /// Decodes an encoded image, with the quality figures.
    pub fn reconstruct_encoded(&self, encoded: Encoded) -> Result<Reconstruction> {
        self.reconstruct_through(encoded, Through::Latent)
    }

    /// Regenerates an encoded image through the latent or, skipping it, from its encoder
    /// features, with the quality figures.
    pub fn reconstruct_through(
        &self,
        encoded: Encoded,
        through: Through,
    ) -> Result<Reconstruction> {
        let decoded = match through {
            Through::Latent => self.decode(&encoded.latent)?,
            Through::Features => self.paint_features(&encoded.features)?,
        };
        let grid = (encoded.latent.height, encoded.latent.width);
        let cycle = self.features_of(&decoded.image, grid);
        let (w, h) = decoded.image.dimensions();
        let original = image_io::fit_and_crop(&encoded.image, w, h);
        Ok(Reconstruction {
            psnr: metrics::psnr(&original, &decoded.image),
            ssim: metrics::ssim(&original, &decoded.image),
            feature_cosine: metrics::mean_token_cosine(&encoded.features, &decoded.features),
            cycle_cosine: metrics::mean_token_cosine(&encoded.features, &cycle),
            encoded,
            decoded,
        })
    }
}

/// What a reconstruction regenerates the image from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Through {
    /// The latent: the model's round trip.
    Latent,
    /// The encoder's own features, skipping the latent: the pixel decoder's ceiling, so the
    /// gap to `Latent` is what the bottleneck costs.
    Features,
}

/// Refuses a checkpoint trained on another encoder, naming both.
pub fn check_encoder(config: &FaeConfig, encoder: &dyn VisionEncoder, path: &Path) -> Result<()> {
    let info = encoder.info();
    if config.encoder != info.name
        || config.encoder_dim != info.dim
        || config.patch_size != info.patch_size
    {
        bail!(
            "{} was trained on encoder `{}` ({} dims, patch {}), not on `{}` ({} dims, patch {})",
            path.display(),
            config.encoder,
            config.encoder_dim,
            config.patch_size,
            info.name,
            info.dim,
            info.patch_size
        );
    }
    Ok(())
}

/// An image's round trip with its quality figures.
pub struct Reconstruction {
    pub encoded: Encoded,
    pub decoded: Decoded,
    pub psnr: f64,
    pub ssim: f64,
    /// Mean per-token cosine between encoder features and restored features.
    pub feature_cosine: f64,
    /// Mean per-token cosine between encoder features of the original and of the regenerated image.
    pub cycle_cosine: f64,
}
