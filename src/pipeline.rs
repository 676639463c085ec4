//! Workflows on files, shared by the command line and the app: edit an image with a recipe,
//! interpolate between two images, and write the inspection pictures and figures.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use image::{Rgb, Rgb32FImage, RgbImage};
use serde_json::json;

use crate::composite::{CompositeMode, CompositeOptions, Placement, composite, composite_in_place};
use crate::edit::ops::{self, Harmonise, InterpMode, LatentSource};
use crate::edit::recipe::Recipe;
use crate::fae::{Decoded, Encoded, Fae};
use crate::fsutil::{write_atomic, write_photo_png, write_png};
use crate::generator::Generator;
use crate::grid::Grid;
use crate::image_io::{is_high_bit_depth, load_rgb, to_rgb8};
use crate::inspect::{self, Upscale};
use crate::metrics;
use crate::pca::Pca;

/// Resolves recipe sources by encoding them with the model, once each, at one size.
pub struct EncodingSource<'a> {
    pub fae: &'a Fae,
    pub size: Option<usize>,
    /// Relative paths in a recipe are taken from here (the recipe's folder).
    pub base_dir: PathBuf,
    /// Runs `harmonise` edits; without one they fail with a clear message.
    pub generator: Option<&'a Generator>,
    /// When set, sources are fitted to this `(width, height)` instead of `size` (to match a
    /// base encoded whole, on a non-square grid).
    pub work_size: Option<(usize, usize)>,
    cache: RefCell<HashMap<PathBuf, Grid>>,
}

impl<'a> EncodingSource<'a> {
    pub fn new(fae: &'a Fae, size: Option<usize>, base_dir: PathBuf) -> Self {
        let cache = RefCell::new(HashMap::new());
        Self { fae, size, base_dir, generator: None, work_size: None, cache }
    }

    fn resolve(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        if p.is_absolute() || p.exists() { p.to_path_buf() } else { self.base_dir.join(p) }
    }
}

impl LatentSource for EncodingSource<'_> {
    fn latent(&self, path: &str) -> Result<Grid> {
        let path = self.resolve(path);
        if let Some(grid) = self.cache.borrow().get(&path) {
            return Ok(grid.clone());
        }
        let latent = match self.work_size {
            Some(size) => self.fae.encode_fitted(&load_rgb(&path)?, size)?.latent,
            None => self.fae.encode_image(&path, self.size)?.latent,
        };
        self.cache.borrow_mut().insert(path, latent.clone());
        Ok(latent)
    }

    fn latents_in(&self, folder: &str) -> Result<Vec<Grid>> {
        let dir = self.resolve(folder);
        let files = crate::image_io::images_in(&dir)?;
        files.iter().map(|f| self.latent(&f.to_string_lossy())).collect()
    }

    fn harmonise(&self, latent: &Grid, h: &Harmonise) -> Result<Grid> {
        match self.generator {
            Some(g) => g.harmonise(latent, h),
            None => bail!("harmonise needs a generator: pass --generator"),
        }
    }
}

/// Encodes `image` (its centre square, or with `whole` all of it on a grid of its aspect whose
/// longer side is `size`), replays `recipe` on its latent and decodes the result; `generator`
/// runs any `harmonise` edits.
pub fn edit(
    fae: &Fae,
    image: &Path,
    recipe: &Recipe,
    (size, whole): (Option<usize>, bool),
    base_dir: PathBuf,
    generator: Option<&Generator>,
) -> Result<(Encoded, Grid, Decoded)> {
    let encoded =
        if whole { fae.encode_whole(image, size)? } else { fae.encode_image(image, size)? };
    let mut source = EncodingSource::new(fae, size, base_dir);
    source.generator = generator;
    if whole {
        let (w, h) = encoded.image.dimensions();
        source.work_size = Some((w as usize, h as usize));
    }
    let edited = recipe.replay(&encoded.latent, &source)?;
    let decoded = fae.decode(&edited)?;
    Ok((encoded, edited, decoded))
}

/// `image` (the photo file) with the result of [`edit`] composited in at the photo's own
/// resolution; the mask is the union of the recipe's edit masks.
pub fn composite_edit(
    fae: &Fae,
    image: &Path,
    recipe: &Recipe,
    encoded: &Encoded,
    decoded: &Decoded,
    options: &CompositeOptions,
) -> Result<Rgb32FImage> {
    if options.mode == CompositeMode::Off {
        return Ok(decoded.image.clone());
    }
    let mut photo = load_rgb(image)?;
    let mask = recipe.token_mask(encoded.latent.height, encoded.latent.width)?;
    let decoded_original = decode_original_if_needed(fae, encoded, &mask, options)?;
    let placement = placement_of(&photo, encoded);
    let edit = &decoded.image;
    composite_in_place(&mut photo, decoded_original.as_ref(), edit, &mask, &placement, options)?;
    Ok(photo)
}

/// Where `encoded`'s crop and tokens lie in `original`, the photo it was encoded from.
pub fn placement_of(original: &Rgb32FImage, encoded: &Encoded) -> Placement {
    let grid = (encoded.latent.height, encoded.latent.width);
    Placement::centre_crop(original.dimensions(), encoded.image.dimensions(), grid)
}

/// The decode of the unedited latent, when the composite needs it (detail transfer or soft
/// preservation of an edit that touches something).
pub fn decode_original_if_needed(
    fae: &Fae,
    encoded: &Encoded,
    mask: &[f32],
    options: &CompositeOptions,
) -> Result<Option<Rgb32FImage>> {
    let needed = options.mode == CompositeMode::Detail || options.preserve > 0.0;
    if options.mode == CompositeMode::Off || !needed || !mask.iter().any(|&m| m > 0.0) {
        return Ok(None);
    }
    Ok(Some(fae.decode(&encoded.latent)?.image))
}

/// Writes `steps` frames from A to B (the ends are the plain reconstructions) and a contact sheet.
///
/// With compositing, every frame is A's photo at its own resolution taking on the frame
/// (the whole image is the edit's mask), and the contact sheet shows them at the decode's height.
#[allow(clippy::too_many_arguments)]
pub fn interpolate(
    fae: &Fae,
    from: &Path,
    to: &Path,
    steps: usize,
    mode: InterpMode,
    size: Option<usize>,
    out: &Path,
    compositing: &CompositeOptions,
) -> Result<Vec<PathBuf>> {
    if steps < 2 {
        bail!("--steps must be at least 2 (the two ends)");
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let encoded = fae.encode_image(from, size)?;
    let a = &encoded.latent;
    let b = fae.encode_image(to, size)?.latent;
    if !a.same_shape(&b) {
        bail!("the two images give latents of different shapes");
    }
    let photo = match compositing.mode {
        CompositeMode::Off => None,
        _ => {
            let original = load_rgb(from)?;
            let whole = vec![1.0; a.tokens()];
            let decoded_a = decode_original_if_needed(fae, &encoded, &whole, compositing)?;
            let sixteen_bit = is_high_bit_depth(from)?;
            Some((placement_of(&original, &encoded), original, whole, decoded_a, sixteen_bit))
        }
    };
    let mut frames = Vec::new();
    let mut paths = Vec::new();
    for i in 0..steps {
        let t = i as f32 / (steps - 1) as f32;
        let latent = match mode {
            InterpMode::Lerp => ops::lerp(a, &b, t)?,
            InterpMode::Slerp => ops::slerp(a, &b, t)?,
        };
        let decoded = fae.decode(&latent)?.image;
        let path = out.join(format!("frame_{i:03}.png"));
        let image = match &photo {
            None => {
                let image = to_rgb8(&decoded);
                write_png(&path, &image)?;
                image
            }
            Some((placement, original, whole, decoded_a, sixteen_bit)) => {
                let frame = composite(
                    original,
                    decoded_a.as_ref(),
                    &decoded,
                    whole,
                    placement,
                    compositing,
                )?;
                let height = decoded.height();
                let width = (frame.width() as u64 * height as u64 / frame.height() as u64) as u32;
                let thumbnail = to_rgb8(&image::imageops::thumbnail(&frame, width.max(1), height));
                write_photo_png(&path, frame, *sixteen_bit)?;
                thumbnail
            }
        };
        frames.push(image);
        paths.push(path);
    }
    let sheet = inspect::contact_sheet(&frames, steps.min(8), 4, Rgb([24, 24, 24]))?;
    write_png(&out.join("contact_sheet.png"), &sheet)?;
    Ok(paths)
}

/// Everything the inspector shows about one image, as numbers.
pub struct Inspection {
    pub encoded: Encoded,
    pub decoded: Decoded,
    /// Per-token cosine between encoder and restored features.
    pub preservation: Vec<f32>,
    /// Per-token cosine between encoder features of the original and of the regenerated image.
    pub cycle: Vec<f32>,
    pub psnr: f64,
    pub ssim: f64,
}

pub fn inspect_image(fae: &Fae, image: &Path, size: Option<usize>) -> Result<Inspection> {
    let encoded = fae.encode_image(image, size)?;
    let decoded = fae.decode(&encoded.latent)?;
    let grid = (encoded.latent.height, encoded.latent.width);
    let cycle_features = fae.features_of(&decoded.image, grid);
    let (w, h) = decoded.image.dimensions();
    let original = crate::image_io::fit_and_crop(&encoded.image, w, h);
    Ok(Inspection {
        preservation: inspect::token_cosine(&encoded.features, &decoded.features)?,
        cycle: inspect::token_cosine(&encoded.features, &cycle_features)?,
        psnr: metrics::psnr(&original, &decoded.image),
        ssim: metrics::ssim(&original, &decoded.image),
        encoded,
        decoded,
    })
}

fn pca_pictures(grids: &[&Grid], side: u32) -> Vec<RgbImage> {
    let dim = grids[0].channels;
    let all: Vec<f32> = grids.iter().flat_map(|g| g.data.iter().copied()).collect();
    let pca = Pca::fit(&all, dim);
    grids
        .iter()
        .map(|g| {
            let cell = (side / g.width as u32).max(1);
            pca.picture(&g.data, g.height, g.width, cell)
        })
        .collect()
}

/// Writes the inspection pictures of `image` (and `with`, compared side by side with a shared
/// PCA basis) into `out`, with `metrics.json`. The similarity maps start from `token` (row,
/// column), the centre token by default.
pub fn inspect_to_folder(
    fae: &Fae,
    image: &Path,
    with: Option<&Path>,
    size: Option<usize>,
    token: Option<(usize, usize)>,
    out: &Path,
) -> Result<serde_json::Value> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut items = vec![inspect_image(fae, image, size)?];
    if let Some(with) = with {
        items.push(inspect_image(fae, with, size)?);
    }
    let first = &items[0].encoded;
    let (gh, gw) = (first.latent.height, first.latent.width);
    let side = first.image.width();
    let (ty, tx) = token.unwrap_or((gh / 2, gw / 2));
    if ty >= gh || tx >= gw {
        bail!("--token {ty},{tx} is outside the {gh}x{gw} token grid");
    }
    // Encoder and restored features share one basis; latents have their own (other dimension).
    let mut feature_grids: Vec<&Grid> = items.iter().map(|i| &i.encoded.features).collect();
    feature_grids.extend(items.iter().map(|i| &i.decoded.features));
    let feature_pics = pca_pictures(&feature_grids, side);
    let latent_pics =
        pca_pictures(&items.iter().map(|i| &i.encoded.latent).collect::<Vec<_>>(), side);
    let n = items.len();
    let mut report = Vec::new();
    for (k, item) in items.iter().enumerate() {
        let suffix = if k == 0 { String::new() } else { "_with".into() };
        let png =
            |name: &str, img: &RgbImage| write_png(&out.join(format!("{name}{suffix}.png")), img);
        png("original", &to_rgb8(&item.encoded.image))?;
        png("reconstruction", &to_rgb8(&item.decoded.image))?;
        png("pca_features", &feature_pics[k])?;
        png("pca_restored", &feature_pics[n + k])?;
        png("pca_latent", &latent_pics[k])?;
        let map = |values: &[f32]| {
            inspect::render_map(values, gh, gw, side, side, Some((0.0, 1.0)), Upscale::Nearest)
        };
        png("preservation", &map(&item.preservation)?)?;
        png("cycle", &map(&item.cycle)?)?;
        let latent = &item.encoded.latent;
        let heatmaps: Vec<RgbImage> = (0..latent.channels)
            .map(|c| inspect::channel_heatmap(latent, c, 64, 64, None, Upscale::Nearest))
            .collect::<Result<_>>()?;
        png("channels", &inspect::contact_sheet(&heatmaps, 8, 2, Rgb([0, 0, 0]))?)?;
        let similarity = inspect::cosine_to_token(&first.features, ty, tx, &item.encoded.features)?;
        png(
            "similarity",
            &inspect::render_map(
                &similarity,
                gh,
                gw,
                side,
                side,
                Some((-1.0, 1.0)),
                Upscale::Nearest,
            )?,
        )?;
        let stats = inspect::channel_stats(latent)?;
        let mean = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        report.push(json!({
            "image": if k == 0 { image.display().to_string() } else { with.unwrap().display().to_string() },
            "grid": [gh, gw],
            "psnr": item.psnr,
            "ssim": item.ssim,
            "preservation_mean": mean(&item.preservation),
            "cycle_mean": mean(&item.cycle),
            "preservation": item.preservation,
            "cycle": item.cycle,
            "similarity_token": [ty, tx],
            "similarity": similarity,
            "latent_channels": stats.iter().map(|s| json!({"min": s.min, "max": s.max, "mean": s.mean, "std": s.std})).collect::<Vec<_>>(),
        }));
    }
    let metrics =
        json!({ "model_step": fae.step, "encoder": fae.config.encoder, "images": report });
    write_atomic(&out.join("metrics.json"), serde_json::to_string_pretty(&metrics)?.as_bytes())?;
    Ok(metrics)
}
