//! What the model thread does for each job: load models and generators, encode and measure
//! images, decode edited latents, sample new images, encode folders.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Result, anyhow};

use super::state::Analysis;
use super::worker::{
    CANCELLED, DecodeOut, GenerateProgress, GenerateRequest, Generated, GeneratorInfo, ModelInfo,
};
use crate::backend::{self, BackendChoice};
use crate::fae::Fae;
use crate::generator::{FaeRef, Generator};
use crate::grid::Grid;
use crate::metrics;

pub(super) fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

pub(super) fn load(
    path: Option<&Path>,
    choice: BackendChoice,
    generation: u64,
) -> Result<(Fae, FaeRef, ModelInfo)> {
    let start = Instant::now();
    if path.is_none() && crate::assets::path(crate::fae::DEFAULT_MODEL).is_err() {
        anyhow::bail!("no built-in model yet: load a checkpoint");
    }
    let compute = backend::select(choice)?;
    let fae = Fae::load(path, &compute.device)?;
    let fae_ref = FaeRef::of(path)?;
    let name = path
        .and_then(|p| p.file_name())
        .map_or_else(|| "built-in".to_string(), |n| n.to_string_lossy().into_owned());
    let info = ModelInfo {
        name,
        path: path.map(Path::to_path_buf),
        config: fae.config.clone(),
        step: fae.step,
        backend: compute.kind.name().to_string(),
        adapter: compute.adapter.clone(),
        encoder_dim: fae.encoder.info().dim,
        generation,
        load_ms: ms(start),
        sha256: fae_ref.sha256.clone(),
    };
    Ok((fae, fae_ref, info))
}

pub(super) fn load_generator(
    path: Option<&Path>,
    fae: Arc<Fae>,
    fae_ref: &FaeRef,
) -> Result<(Generator, GeneratorInfo)> {
    let start = Instant::now();
    let file = match path {
        Some(p) => p.to_path_buf(),
        None => crate::assets::path(crate::generator::DEFAULT_GENERATOR)
            .map_err(|_| anyhow!("no built-in generator yet"))?,
    };
    let device = fae.device.clone();
    let generator = Generator::with_fae(&file, fae, fae_ref.path.as_deref(), &device)?;
    let c = generator.config();
    let info = GeneratorInfo {
        name: path
            .and_then(|p| p.file_name())
            .map_or_else(|| "built-in".to_string(), |n| n.to_string_lossy().into_owned()),
        path: path.map(Path::to_path_buf),
        classes: c.classes.clone(),
        grid: c.grid,
        width: c.width,
        depth: c.depth,
        step: generator.step,
        load_ms: ms(start),
    };
    Ok((generator, info))
}

/// Samples the request's latents (counting steps, stopping on either cancel flag) and decodes
/// them.
pub(super) fn generate(
    g: &Generator,
    request: &GenerateRequest,
    progress: &GenerateProgress,
    cancel: &AtomicBool,
) -> Result<Vec<Generated>> {
    let stopped = || progress.cancel.load(Ordering::Relaxed) || cancel.load(Ordering::Relaxed);
    let latents = g.generate(
        request.class.as_deref(),
        request.n,
        request.seed,
        &request.options,
        &mut |done, total| {
            progress.steps_done.store(done, Ordering::Relaxed);
            progress.steps_total.store(total, Ordering::Relaxed);
            !stopped()
        },
    )?;
    let mut out = Vec::with_capacity(latents.len());
    for latent in latents {
        if stopped() {
            anyhow::bail!(CANCELLED);
        }
        let image = g.fae.decode(&latent)?.image;
        out.push(Generated { latent, image });
        progress.decoded.fetch_add(1, Ordering::Relaxed);
    }
    Ok(out)
}

/// An image's analysis: from the latent saved beside it when there is one for this model and
/// size (a generated image keeps its generated latent), else by encoding it.
pub(super) fn open_image(
    fae: &Fae,
    fae_ref: Option<&FaeRef>,
    path: &Path,
    size: Option<usize>,
) -> Result<Analysis> {
    let size = size.unwrap_or(fae.config.image_size);
    let grid = size / fae.config.patch_size;
    let saved = fae_ref.and_then(|r| super::generated::read_latent(path, &r.sha256));
    match saved {
        Some(latent) if (latent.height, latent.width) == (grid, grid) => {
            analyse_latent(fae, latent)
        }
        _ => analyse(fae, path, Some(size)),
    }
}

/// The analysis of an image made from a latent: the decoded picture is the original.
pub fn analyse_latent(fae: &Fae, latent: Grid) -> Result<Analysis> {
    let start = Instant::now();
    let decoded = fae.decode(&latent)?;
    let decode_ms = ms(start);
    let features = fae.features_of(&decoded.image, (latent.height, latent.width));
    Ok(Analysis {
        psnr: metrics::psnr(&decoded.image, &decoded.image),
        ssim: metrics::ssim(&decoded.image, &decoded.image),
        feature_cosine: metrics::mean_token_cosine(&features, &decoded.features),
        cycle_cosine: 1.0,
        image: decoded.image.clone(),
        cycle: features.clone(),
        features,
        latent,
        recon: decoded.image,
        restored: decoded.features,
        encode_ms: 0.0,
        decode_ms,
    })
}

/// Encode, reconstruct, re-encode and measure one image.
pub fn analyse(fae: &Fae, path: &Path, size: Option<usize>) -> Result<Analysis> {
    let start = Instant::now();
    let encoded = fae.encode_image(path, size)?;
    let encode_ms = ms(start);
    let start = Instant::now();
    let decoded = fae.decode(&encoded.latent)?;
    let decode_ms = ms(start);
    let grid = (encoded.latent.height, encoded.latent.width);
    let cycle = fae.features_of(&decoded.image, grid);
    let (w, h) = decoded.image.dimensions();
    let original = crate::image_io::fit_and_crop(&encoded.image, w, h);
    Ok(Analysis {
        psnr: metrics::psnr(&original, &decoded.image),
        ssim: metrics::ssim(&original, &decoded.image),
        feature_cosine: metrics::mean_token_cosine(&encoded.features, &decoded.features),
        cycle_cosine: metrics::mean_token_cosine(&encoded.features, &cycle),
        image: original,
        features: encoded.features,
        latent: encoded.latent,
        recon: decoded.image,
        restored: decoded.features,
        cycle,
        encode_ms,
        decode_ms,
    })
}

pub fn decode(fae: &Fae, latent: &Grid) -> Result<DecodeOut> {
    let start = Instant::now();
    let decoded = fae.decode(latent)?;
    Ok(DecodeOut { image: decoded.image, restored: decoded.features, ms: ms(start) })
}

/// Image files in a folder (not recursive), sorted by name.
pub fn images_in(folder: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(folder)
        .map_err(|e| anyhow!("cannot read folder {}: {e}", folder.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_image(p))
        .collect();
    out.sort();
    Ok(out)
}

pub fn is_image(path: &Path) -> bool {
    path.is_file()
        && path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
            matches!(
                e.to_ascii_lowercase().as_str(),
                "png" | "jpg" | "jpeg" | "webp" | "bmp" | "tif" | "tiff" | "gif"
            )
        })
}

pub(super) fn encode_folder(
    fae: &Fae,
    folder: &Path,
    size: Option<usize>,
    cancel: &AtomicBool,
) -> Result<Vec<Grid>> {
    let paths = images_in(folder)?;
    if paths.is_empty() {
        anyhow::bail!("folder {} holds no images", folder.display());
    }
    let mut out = Vec::new();
    for p in paths {
        if cancel.load(Ordering::Relaxed) {
            anyhow::bail!(CANCELLED);
        }
        out.push(fae.encode_image(&p, size)?.latent);
    }
    Ok(out)
}
