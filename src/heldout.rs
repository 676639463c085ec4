//! How well a model regenerates photos it never saw: every image of a folder (searched
//! recursively) taken through the round trip at one size, with the figures of the issue
//! "Regenerated images that look like the photo": PSNR, SSIM, cycle cosine, the patch grid's
//! blockiness, the share of fine detail kept and spurious small bright dots.
//! `tools/fetch_heldout.sh` builds the folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use image::RgbImage;
use serde::Serialize;

use crate::fae::{Fae, Through};
use crate::image_io;
use crate::metrics;

/// The figures over a set of images (means; ratios as described per field).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Figures {
    pub images: usize,
    pub psnr: f64,
    pub ssim: f64,
    /// Encoder features of the reconstruction against those of the input, per token.
    pub cycle_cosine: f64,
    /// Restored features against the encoder's, per token.
    pub feature_cosine: f64,
    /// Of the reconstructions ([`metrics::blockiness`] at the decoder's patch size; 1 = no grid).
    pub blockiness: f64,
    /// Of the inputs, for reference.
    pub blockiness_originals: f64,
    /// Mean gradient magnitude of the reconstructions over that of the inputs (1 = as detailed).
    pub high_frequency_ratio: f64,
    /// Pixels of small bright dots per reconstruction that its input does not have
    /// ([`metrics::spurious_dots`]; 0 = none).
    pub spurious_dots: f64,
    /// References for the PSNR, from the inputs alone: each input painted in its own mean colour
    /// (what a decoder that knew one colour per image would score) ...
    pub psnr_flat_image: f64,
    /// ... and each of its patches painted in the patch's mean colour (the best a decoder that
    /// paints every token flat could score).
    pub psnr_flat_patches: f64,
}

/// The whole evaluation: figures over every image and per sub-folder.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub model: String,
    pub size: usize,
    /// What the images were regenerated from: the latent, or the encoder's features.
    pub through: Through,
    #[serde(flatten)]
    pub all: Figures,
    pub images_per_s: f64,
    pub by_folder: BTreeMap<String, Figures>,
    /// Originals and their reconstructions of up to `pairs` images spread over the folder.
    #[serde(skip)]
    pub pairs: Vec<(RgbImage, RgbImage)>,
}

/// Sums per image, turned into [`Figures`] at the end.
#[derive(Default)]
struct Totals {
    n: usize,
    sums: [f64; 9],
    gradients: [f64; 2],
}

impl Totals {
    fn add(&mut self, values: [f64; 9], gradients: [f64; 2]) {
        self.n += 1;
        self.sums.iter_mut().zip(values).for_each(|(s, v)| *s += v);
        self.gradients.iter_mut().zip(gradients).for_each(|(s, v)| *s += v);
    }

    fn figures(&self) -> Figures {
        let mean = |i: usize| self.sums[i] / self.n.max(1) as f64;
        Figures {
            images: self.n,
            psnr: mean(0),
            ssim: mean(1),
            cycle_cosine: mean(2),
            feature_cosine: mean(3),
            blockiness: mean(4),
            blockiness_originals: mean(5),
            high_frequency_ratio: self.gradients[0] / self.gradients[1].max(1e-12),
            psnr_flat_image: mean(6),
            psnr_flat_patches: mean(7),
            spurious_dots: mean(8),
        }
    }
}

/// Image files under `dir`, in sub-folders too, sorted by path.
pub fn images_under(dir: &Path) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read folder {}", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, out)?;
            } else {
                let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
                let ext = ext.to_ascii_lowercase();
                if crate::train::data::IMAGE_EXTENSIONS.contains(&ext.as_str()) {
                    out.push(path);
                }
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    files.sort();
    if files.is_empty() {
        bail!("folder {} holds no images", dir.display());
    }
    Ok(files)
}

/// Reconstructs every image under `dir` at `size x size` (centre crops) with `fae`, `through`
/// its latent or from its encoder features. `model` names the model in the report; `pairs`
/// images spread evenly over the sorted files are kept beside their originals (for a picture).
/// Fails on the first image that cannot be read.
pub fn evaluate(
    fae: &Fae,
    model: &str,
    dir: &Path,
    through: Through,
    size: usize,
    pairs: usize,
) -> Result<Report> {
    let files = images_under(dir)?;
    let keep: Vec<usize> = (0..pairs.min(files.len())).map(|i| i * files.len() / pairs).collect();
    let mut kept = Vec::new();
    let patch = fae.config.pix_patch;
    let mut all = Totals::default();
    let mut by_folder: BTreeMap<String, Totals> = BTreeMap::new();
    let started = Instant::now();
    for (i, path) in files.iter().enumerate() {
        let r = fae
            .encode_image(path, Some(size))
            .and_then(|encoded| fae.reconstruct_through(encoded, through))
            .with_context(|| path.display().to_string())?;
        let image = &r.decoded.image;
        let (w, h) = image.dimensions();
        let original = image_io::fit_and_crop(&r.encoded.image, w, h);
        let values = [
            r.psnr.min(100.0),
            r.ssim,
            r.cycle_cosine,
            r.feature_cosine,
            metrics::blockiness(image, patch),
            metrics::blockiness(&original, patch),
            metrics::psnr(&metrics::flat_patches(&original, usize::MAX), &original).min(100.0),
            metrics::psnr(&metrics::flat_patches(&original, patch), &original).min(100.0),
            metrics::spurious_dots(image, &original) as f64,
        ];
        let gradients = [metrics::gradient_energy(image), metrics::gradient_energy(&original)];
        all.add(values, gradients);
        let folder = path.parent().and_then(|p| p.strip_prefix(dir).ok());
        let folder = folder.map_or(String::new(), |f| f.display().to_string());
        by_folder.entry(folder).or_default().add(values, gradients);
        if keep.contains(&i) {
            kept.push((image_io::to_rgb8(&original), image_io::to_rgb8(image)));
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Report {
        model: model.to_string(),
        size,
        through,
        all: all.figures(),
        images_per_s: files.len() as f64 / seconds.max(1e-9),
        by_folder: by_folder.into_iter().map(|(k, t)| (k, t.figures())).collect(),
        pairs: kept,
    })
}
