//! What the trainer measures between steps: latent statistics of the EMA model, and validation
//! on held-out images (PSNR, SSIM, feature and cycle cosine, a picture of reconstructions).

use std::sync::Arc;

use anyhow::{Result, bail};
use burn::prelude::*;
use image::RgbImage;

use super::batch::grids_to_tensor;
use super::data::{Dataset, FeatureSource, ImageEntry, Sample};
use super::options::TrainOptions;
use super::run::Validation;
use crate::encoders::VisionEncoder;
use crate::fae::{self, Fae, FaeConfig, FaeModel, LatentStats};
use crate::fsutil::write_png;
use crate::image_io;
use crate::metrics;

pub(crate) fn runtime(
    config: &FaeConfig,
    ema: &FaeModel,
    stats: &LatentStats,
    encoder: Arc<dyn VisionEncoder>,
    device: &Device,
) -> Fae {
    Fae {
        config: config.clone(),
        model: ema.clone(),
        stats: stats.clone(),
        encoder,
        device: device.clone(),
        step: 0,
    }
}

/// Per-channel mean and std of the (raw) latent over up to 256 training images.
pub(crate) fn latent_stats(
    ema: &FaeModel,
    source: &FeatureSource,
    dataset: &mut Dataset,
    options: &TrainOptions,
) -> Result<LatentStats> {
    let entries: Vec<ImageEntry> = dataset.train.iter().take(256).cloned().collect();
    let c = options.latent_channels.max(1);
    let mut sum = vec![0f64; 0];
    let mut sq = vec![0f64; 0];
    let mut count = 0usize;
    for chunk in entries.chunks(options.batch.max(1)) {
        let requests: Vec<(&ImageEntry, u32)> = chunk.iter().map(|e| (e, 0)).collect();
        let samples: Vec<Sample> =
            source.samples(&requests).into_iter().filter_map(|r| r.ok()).collect();
        if samples.is_empty() {
            continue;
        }
        let features = grids_to_tensor(samples.iter().map(|s| &s.features), &source.device);
        let (mean, _) = ema.encoder.forward(features);
        let ch = mean.dims()[2];
        let values: Vec<f32> = mean.into_data().try_into_vec_as::<f32>().expect("f32");
        if sum.is_empty() {
            sum = vec![0.0; ch];
            sq = vec![0.0; ch];
        }
        for token in values.chunks_exact(ch) {
            for (k, &v) in token.iter().enumerate() {
                sum[k] += v as f64;
                sq[k] += (v as f64).powi(2);
            }
        }
        count += values.len() / ch;
    }
    if count == 0 {
        return Ok(LatentStats::identity(c));
    }
    let mean: Vec<f32> = sum.iter().map(|s| (s / count as f64) as f32).collect();
    let std = sq
        .iter()
        .zip(&mean)
        .map(|(q, &m)| ((q / count as f64 - (m as f64).powi(2)).max(1e-12).sqrt() as f32).max(1e-6))
        .collect();
    Ok(LatentStats { mean, std })
}

/// Validation on the held-out images (centre crops): PSNR, SSIM, feature and cycle cosine,
/// and a picture with originals above reconstructions.
pub(crate) fn validate(
    fae: &Fae,
    source: &FeatureSource,
    dataset: &mut Dataset,
    options: &TrainOptions,
    step: u64,
) -> Result<Validation> {
    let entries: Vec<ImageEntry> = if dataset.val.is_empty() {
        dataset.train.iter().take(4).cloned().collect()
    } else {
        dataset.val.iter().take(32).cloned().collect()
    };
    let mut totals = [0f64; 4];
    let mut n = 0usize;
    let mut pairs = Vec::new();
    for entry in &entries {
        let Some(Ok(sample)) = source.samples(&[(entry, 0)]).into_iter().next() else { continue };
        let grid = (sample.features.height, sample.features.width);
        let features = grids_to_tensor(std::iter::once(&sample.features), &fae.device);
        let latent = fae.encode_features(features);
        let (restored, image) = fae.decode_latent(latent, grid);
        let image = fae::tensor_to_image(image);
        let restored = fae::to_grid(restored, grid);
        let cycle = fae.features_of(&image, grid);
        let (w, h) = image.dimensions();
        let original = image_io::fit_and_crop(&sample.image, w, h);
        totals[0] += metrics::psnr(&original, &image).min(100.0);
        totals[1] += metrics::ssim(&original, &image);
        totals[2] += metrics::mean_token_cosine(&sample.features, &restored);
        totals[3] += metrics::mean_token_cosine(&sample.features, &cycle);
        n += 1;
        if pairs.len() < 8 {
            pairs.push((image_io::to_rgb8(&original), image_io::to_rgb8(&image)));
        }
    }
    if n == 0 {
        bail!("no validation image could be read");
    }
    if !pairs.is_empty() {
        write_png(&options.out.join(format!("val-{step:06}.png")), &pairs_picture(&pairs))?;
    }
    let k = n as f64;
    Ok(Validation {
        psnr: totals[0] / k,
        ssim: totals[1] / k,
        feature_cosine: totals[2] / k,
        cycle_cosine: totals[3] / k,
        images: n,
    })
}

/// Originals in the top row, reconstructions below.
pub fn pairs_picture(pairs: &[(RgbImage, RgbImage)]) -> RgbImage {
    let (w, h) = pairs[0].0.dimensions();
    let mut out = RgbImage::new(w * pairs.len() as u32, h * 2);
    for (i, (a, b)) in pairs.iter().enumerate() {
        image::imageops::replace(&mut out, a, (i as u32 * w) as i64, 0);
        image::imageops::replace(&mut out, b, (i as u32 * w) as i64, h as i64);
    }
    out
}
