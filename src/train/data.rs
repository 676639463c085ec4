//! Training data: a folder of images scanned recursively, deterministic augmented views, and an
//! on-disk cache of encoder features (the frozen encoder dominates the cost of training).
//!
//! Sub-folders of the root become class labels. Files that cannot be read are skipped and
//! reported, never fatal.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use image::Rgb32FImage;
use sha2::{Digest, Sha256};

use crate::encoders::VisionEncoder;
use crate::fsutil::write_atomic;
use crate::grid::Grid;
use crate::image_io;
use crate::rng::Rng;
use crate::weights::WeightFile;

pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif"];

#[derive(Clone, Debug)]
pub struct ImageEntry {
    pub path: PathBuf,
    /// Index into [`Dataset::classes`], for files inside a sub-folder of the root.
    pub class: Option<usize>,
    /// SHA-256 of the file's bytes: the cache key, and what decides the validation split.
    pub hash: String,
}

#[derive(Debug, Default)]
pub struct Dataset {
    pub train: Vec<ImageEntry>,
    pub val: Vec<ImageEntry>,
    pub classes: Vec<String>,
    /// Files that were not used, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

impl Dataset {
    /// Scans `root`; a `val_fraction` of the images (chosen by content hash, so stable across
    /// runs and machines) is held out for validation.
    pub fn scan(root: &Path, val_fraction: f64) -> Result<Self> {
        if !root.is_dir() {
            bail!("{} is not a folder", root.display());
        }
        let mut files = Vec::new();
        walk(root, &mut files)?;
        let mut data = Dataset::default();
        let mut class_index: HashMap<String, usize> = HashMap::new();
        let mut seen: HashMap<String, PathBuf> = HashMap::new();
        let mut all = Vec::new();
        for path in files {
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
            if !IMAGE_EXTENSIONS.contains(&ext.as_str()) {
                data.skipped.push((path, "not an image file".into()));
                continue;
            }
            let bytes = match std::fs::read(&path) {
                Ok(b) if !b.is_empty() => b,
                Ok(_) => {
                    data.skipped.push((path, "empty file".into()));
                    continue;
                }
                Err(e) => {
                    data.skipped.push((path, format!("cannot read: {e}")));
                    continue;
                }
            };
            let hash = format!("{:x}", Sha256::digest(&bytes));
            if let Some(first) = seen.get(&hash) {
                data.skipped.push((path, format!("duplicate of {}", first.display())));
                continue;
            }
            seen.insert(hash.clone(), path.clone());
            let class = path
                .strip_prefix(root)
                .ok()
                .and_then(|rel| {
                    let mut parts = rel.components();
                    let first = parts.next()?;
                    parts.next()?;
                    Some(first.as_os_str().to_string_lossy().to_string())
                })
                .map(|name| {
                    let next = class_index.len();
                    *class_index.entry(name).or_insert(next)
                });
            all.push(ImageEntry { path, class, hash });
        }
        data.classes = vec![String::new(); class_index.len()];
        for (name, i) in class_index {
            data.classes[i] = name;
        }
        let is_val = |e: &ImageEntry| {
            let v = u64::from_str_radix(&e.hash[..8], 16).unwrap_or(0) as f64 / u32::MAX as f64;
            v < val_fraction
        };
        let (mut val, mut train): (Vec<_>, Vec<_>) = all.into_iter().partition(is_val);
        if val.is_empty() && val_fraction > 0.0 && train.len() >= 2 {
            // Always hold out at least one image when there are two or more.
            let i = (0..train.len()).min_by_key(|&i| train[i].hash.clone()).unwrap();
            val.push(train.remove(i));
        }
        data.train = train;
        data.val = val;
        Ok(data)
    }

    /// Index of the next training file: uniform over the files, or with `balance` uniform over
    /// the sub-folders first (files directly in the root form one more group), so that a folder
    /// of 600 textures weighs no more than one of 20 photos. O(n log n) in the set (the folders
    /// are sorted on each draw, so a skipped file never leaves a stale list): nothing beside a
    /// training step.
    pub fn pick(&self, rng: &mut Rng, balance: bool) -> usize {
        if !balance {
            return rng.below(self.train.len());
        }
        let mut groups: Vec<Option<usize>> = self.train.iter().map(|e| e.class).collect();
        groups.sort_unstable();
        groups.dedup();
        let group = groups[rng.below(groups.len())];
        let members: Vec<usize> =
            (0..self.train.len()).filter(|&i| self.train[i].class == group).collect();
        members[rng.below(members.len())]
    }

    /// Marks a file as unusable (it failed to decode later).
    pub fn skip(&mut self, path: &Path, reason: String) {
        self.train.retain(|e| e.path != path);
        self.val.retain(|e| e.path != path);
        self.skipped.push((path.to_path_buf(), reason));
    }
}

/// How a view other than 0 is cut from the image, before it is resized to the working size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewScale {
    /// A random resized crop of 35-100 % of the area, aspect 3:4 to 4:3: a downscaled view of
    /// (most of) the whole picture.
    Whole,
    /// A square of half the shorter side.
    Half,
    /// A square of a quarter of the shorter side.
    Quarter,
    /// A square of the working size: the image's own pixels, not resampled.
    Native,
}

impl ViewScale {
    /// Views 1, 5, 9, ... are whole views, 2, 6, ... halves, 3, 7, ... quarters, 4, 8, ... native
    /// crops, so any `--views` of 5 or more has each kind (view 0 is the centre crop).
    pub fn of_view(view: u32) -> Self {
        match view.saturating_sub(1) % 4 {
            0 => Self::Whole,
            1 => Self::Half,
            2 => Self::Quarter,
            _ => Self::Native,
        }
    }
}

/// Where a view lies in a `w x h` image: the crop (resized to the working size afterwards) and
/// whether it is mirrored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ViewRect {
    pub scale: ViewScale,
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    pub flip: bool,
}

/// The crop of view `view > 0` of a `w x h` image for the working size `size`, fixed by (image
/// hash, view) so views can be cached. Half, quarter and native crops are squares of side
/// `max(size, fraction of the shorter side)`, at most the shorter side: a large image gives crops
/// at several scales down to its own resolution and is never upsampled past it (an image whose
/// shorter side is under `size` is upsampled, as view 0 does).
pub fn view_rect(w: u32, h: u32, size: u32, hash: &str, view: u32) -> ViewRect {
    let seed = u64::from_str_radix(&hash[..16.min(hash.len())], 16).unwrap_or(0);
    let mut rng = Rng::derive(seed, view as u64, 1);
    let scale = ViewScale::of_view(view);
    let (wf, hf) = (w.max(1) as f64, h.max(1) as f64);
    let (cw, ch) = match scale {
        ViewScale::Whole => {
            let area = wf * hf * (0.35 + 0.65 * rng.uniform());
            let lo = (3.0f64 / 4.0).ln();
            let ratio = (lo + rng.uniform() * ((4.0f64 / 3.0).ln() - lo)).exp();
            ((area * ratio).sqrt().min(wf).max(1.0), (area / ratio).sqrt().min(hf).max(1.0))
        }
        _ => {
            let short = wf.min(hf);
            let fraction = match scale {
                ViewScale::Half => 0.5,
                ViewScale::Quarter => 0.25,
                _ => 0.0,
            };
            let side = (short * fraction).round().max(size as f64).min(short).max(1.0);
            (side, side)
        }
    };
    let x = ((wf - cw) * rng.uniform()) as u32;
    let y = ((hf - ch) * rng.uniform()) as u32;
    let (width, height) = (cw as u32, ch as u32);
    let flip = rng.uniform() < 0.5;
    ViewRect { scale, x, y, width: width.min(w - x), height: height.min(h - y), flip }
}

/// View 0 is the plain centre crop; other views are crops at several scales (see [`view_rect`]
/// and [`ViewScale`]) with a coin-flip mirror, fixed by (image hash, view) so they can be cached.
pub fn augmented_view(image: &Rgb32FImage, size: u32, hash: &str, view: u32) -> Rgb32FImage {
    if view == 0 {
        return image_io::fit_and_crop(image, size, size);
    }
    let r = view_rect(image.width(), image.height(), size, hash, view);
    let crop = image::imageops::crop_imm(image, r.x, r.y, r.width, r.height).to_image();
    let mut out = if (r.width, r.height) == (size, size) {
        crop
    } else {
        image::imageops::resize(&crop, size, size, image::imageops::FilterType::CatmullRom)
    };
    if r.flip {
        out = image::imageops::flip_horizontal(&out);
    }
    out
}

/// Encoder features of one view with the picture they came from.
#[derive(Clone, Debug)]
pub struct Sample {
    pub features: Grid,
    pub image: Rgb32FImage,
}

/// Encoder features on disk, keyed by file content, encoder, size and view; least recently
/// used entries are removed when the cache grows past its bound.
pub struct FeatureCache {
    dir: PathBuf,
    max_bytes: u64,
    evict_lock: Mutex<()>,
}

impl FeatureCache {
    /// `$FAE_STUDIO_CACHE`, else `fae-studio` in the OS's cache folder (`$XDG_CACHE_HOME` or
    /// `~/.cache` on Linux, `~/Library/Caches` on macOS, `%LOCALAPPDATA%` on Windows), else in
    /// the temporary folder.
    pub fn default_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("FAE_STUDIO_CACHE") {
            return PathBuf::from(dir);
        }
        dirs::cache_dir().unwrap_or_else(std::env::temp_dir).join("fae-studio")
    }

    pub fn new(dir: PathBuf, max_bytes: u64) -> Result<Self> {
        let dir = dir.join("features");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create cache folder {}", dir.display()))?;
        Ok(Self { dir, max_bytes, evict_lock: Mutex::new(()) })
    }

    fn key_path(&self, hash: &str, encoder: &str, size: usize, view: u32) -> PathBuf {
        let tag = format!("{:x}", Sha256::digest(encoder.as_bytes()));
        // Views other than 0 are multi-scale crops ("ms"); the names of the earlier
        // whole-image views are not reused for them.
        let scheme = if view == 0 { "" } else { "ms" };
        self.dir.join(format!(
            "{}-{}-{size}-{view}{scheme}.safetensors",
            &hash[..32.min(hash.len())],
            &tag[..12]
        ))
    }

    fn read(path: &Path) -> Result<Sample> {
        let file = WeightFile::open(path)?;
        let meta = file.metadata();
        let dims: Vec<usize> = ["grid_h", "grid_w", "dim", "size"]
            .iter()
            .map(|k| meta.get(*k).and_then(|v| v.parse().ok()).context("bad cache entry"))
            .collect::<Result<_>>()?;
        let (gh, gw, d, s) = (dims[0], dims[1], dims[2], dims[3]);
        let features = Grid::new(gh, gw, d, file.read_f32("features", &[gh * gw, d])?)?;
        let st = safetensors::SafeTensors::deserialize(file.bytes())?;
        let pixels = st.tensor("image")?;
        if pixels.shape() != [s, s, 3] {
            bail!("bad cache entry");
        }
        let image = image::RgbImage::from_raw(s as u32, s as u32, pixels.data().to_vec())
            .context("bad cache entry")?;
        Ok(Sample { features, image: image::DynamicImage::ImageRgb8(image).to_rgb32f() })
    }

    fn write(&self, path: &Path, sample: &Sample) -> Result<()> {
        let f = &sample.features;
        let halves: Vec<half::f16> = f.data.iter().map(|&v| half::f16::from_f32(v)).collect();
        let rgb = image_io::to_rgb8(&sample.image);
        let s = rgb.width() as usize;
        let views = vec![
            (
                "features".to_string(),
                safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F16,
                    vec![f.tokens(), f.channels],
                    bytemuck::cast_slice(&halves),
                )?,
            ),
            (
                "image".to_string(),
                safetensors::tensor::TensorView::new(
                    safetensors::Dtype::U8,
                    vec![s, s, 3],
                    rgb.as_raw(),
                )?,
            ),
        ];
        let meta = HashMap::from([
            ("grid_h".to_string(), f.height.to_string()),
            ("grid_w".to_string(), f.width.to_string()),
            ("dim".to_string(), f.channels.to_string()),
            ("size".to_string(), s.to_string()),
        ]);
        write_atomic(path, &safetensors::serialize(views, Some(meta))?)
    }

    /// Removes least recently used entries until the cache is under 90 % of its bound.
    pub fn evict(&self) -> Result<()> {
        let _guard = self.evict_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut entries: Vec<(std::time::SystemTime, u64, PathBuf)> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        if total <= self.max_bytes {
            return Ok(());
        }
        entries.sort();
        for (_, len, path) in entries {
            if total <= self.max_bytes * 9 / 10 {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
        Ok(())
    }

    pub fn total_bytes(&self) -> u64 {
        std::fs::read_dir(&self.dir)
            .map(|d| d.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum())
            .unwrap_or(0)
    }
}

/// Produces encoder features for (image, view) pairs, from the cache or by running the encoder.
pub struct FeatureSource<'a> {
    pub encoder: &'a dyn VisionEncoder,
    pub cache: &'a FeatureCache,
    pub size: usize,
    pub device: Device,
}

/// Images encoded per encoder call when filling the cache.
const ENCODE_BATCH: usize = 8;

impl FeatureSource<'_> {
    /// Features for each requested view; `Err` entries are files that could not be decoded.
    pub fn samples(&self, requests: &[(&ImageEntry, u32)]) -> Vec<Result<Sample>> {
        self.samples_caching_views(requests, 0)
    }

    /// [`Self::samples`], also encoding and caching views `0..views` of every image decoded
    /// for a miss: decoding a large picture costs more than encoding a view of it, so it is
    /// done once for all of its views.
    pub fn samples_caching_views(
        &self,
        requests: &[(&ImageEntry, u32)],
        views: u32,
    ) -> Vec<Result<Sample>> {
        let name = &self.encoder.info().name;
        let path_of =
            |entry: &ImageEntry, view: u32| self.cache.key_path(&entry.hash, name, self.size, view);
        let mut results: Vec<Option<Result<Sample>>> = requests
            .iter()
            .map(|(e, view)| {
                let path = path_of(e, *view);
                let sample = FeatureCache::read(&path).ok()?;
                let _ = std::fs::File::open(&path)
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                Some(Ok(sample))
            })
            .collect();
        // Decode the misses (each file once) with the views to encode: the requested ones
        // (with their slot in `results`) and the image's other uncached views.
        let mut decoded: HashMap<PathBuf, Result<Rgb32FImage, String>> = HashMap::new();
        let mut pending: Vec<(Option<usize>, &ImageEntry, u32, Rgb32FImage)> = Vec::new();
        for (i, (entry, view)) in requests.iter().enumerate() {
            if results[i].is_some() {
                continue;
            }
            let first = !decoded.contains_key(&entry.path);
            let image = decoded
                .entry(entry.path.clone())
                .or_insert_with(|| image_io::load_rgb(&entry.path).map_err(|e| format!("{e:#}")));
            let img = match image {
                Ok(img) => img,
                Err(e) => {
                    results[i] = Some(Err(anyhow::anyhow!("{e}")));
                    continue;
                }
            };
            let size = self.size as u32;
            pending.push((Some(i), entry, *view, augmented_view(img, size, &entry.hash, *view)));
            if first {
                for v in 0..views {
                    let requested = requests.iter().any(|(e, w)| e.path == entry.path && *w == v);
                    if !requested && !path_of(entry, v).exists() {
                        pending.push((None, *entry, v, augmented_view(img, size, &entry.hash, v)));
                    }
                }
            }
        }
        // The decoded pictures are not needed past here: their views are in `pending`.
        drop(decoded);
        let encoded = !pending.is_empty();
        let info = self.encoder.info();
        let mut pending = pending.into_iter().peekable();
        while pending.peek().is_some() {
            let chunk: Vec<_> = pending.by_ref().take(ENCODE_BATCH).collect();
            let pixels: Vec<Tensor<4>> = chunk
                .iter()
                .map(|(.., img)| image_io::to_tensor(img, info.mean, info.std, &self.device))
                .collect();
            let tokens = self.encoder.forward(Tensor::cat(pixels, 0)).patch_tokens;
            let [_, gh, gw, d] = tokens.dims();
            let values: Vec<f32> = tokens.into_data().try_into_vec_as::<f32>().expect("f32 data");
            let per = gh * gw * d;
            for (k, (slot, entry, view, image)) in chunk.into_iter().enumerate() {
                let features = Grid {
                    height: gh,
                    width: gw,
                    channels: d,
                    data: values[k * per..(k + 1) * per].to_vec(),
                };
                let sample = Sample { features, image };
                let path = path_of(entry, view);
                if let Err(e) = self.cache.write(&path, &sample) {
                    eprintln!("warning: feature cache not written: {e:#}");
                }
                if let Some(i) = slot {
                    // Round-trip through f16 so cached and fresh features are identical.
                    results[i] = Some(Ok(FeatureCache::read(&path).unwrap_or(sample)));
                }
            }
        }
        if encoded {
            let _ = self.cache.evict();
        }
        results.into_iter().map(|r| r.expect("every request answered")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// `--balance` draws the 10 photos as often as the 90 textures (and the one file in the
    /// root as often as each folder); without it every file is equally likely.
    #[test]
    fn balanced_picks_weigh_each_folder_alike() {
        let entry = |i: usize, class: Option<usize>| ImageEntry {
            path: PathBuf::from(format!("{i}.png")),
            class,
            hash: HASH.into(),
        };
        let train: Vec<ImageEntry> = (0..90)
            .map(|i| entry(i, Some(0)))
            .chain((90..100).map(|i| entry(i, Some(1))))
            .chain([entry(100, None)])
            .collect();
        let data = Dataset {
            train,
            val: vec![],
            classes: vec!["textures".into(), "photos".into()],
            skipped: vec![],
        };
        let share = |balance: bool| {
            let mut rng = Rng::new(7);
            let mut counts = [0usize; 3];
            let mut seen = std::collections::HashSet::new();
            for _ in 0..30_000 {
                let i = data.pick(&mut rng, balance);
                seen.insert(i);
                counts[data.train[i].class.unwrap_or(2)] += 1;
            }
            assert_eq!(seen.len(), 101, "every file is drawn");
            counts.map(|c| c as f64 / 30_000.0)
        };
        let [textures, photos, root] = share(true);
        assert!(
            [textures, photos, root].iter().all(|s| (s - 1.0 / 3.0).abs() < 0.02),
            "{textures} {photos} {root}"
        );
        let [textures, photos, root] = share(false);
        assert!(
            (textures - 0.891).abs() < 0.02 && (photos - 0.099).abs() < 0.02,
            "{textures} {photos}"
        );
        assert!(root < 0.02, "{root}");
    }

    fn gradient(w: u32, h: u32) -> Rgb32FImage {
        Rgb32FImage::from_fn(w, h, |x, y| {
            image::Rgb([
                x as f32 / w as f32,
                y as f32 / h as f32,
                ((x * 7 + y * 13) % 17) as f32 / 17.0,
            ])
        })
    }

    /// One miss decodes the file once and caches every view up to `views`; each view's features
    /// are those of encoding it alone, in a cache of its own.
    #[test]
    fn a_miss_caches_every_view_of_the_decoded_image() {
        let device = crate::backend::cpu().device;
        let encoder = crate::encoders::source::load(None, &device).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.png");
        image::DynamicImage::ImageRgb32F(gradient(90, 60)).to_rgb8().save(&path).unwrap();
        let entry = ImageEntry { path, class: None, hash: HASH.into() };
        let source = |cache| FeatureSource {
            encoder: encoder.as_ref(),
            cache,
            size: 28,
            device: device.clone(),
        };
        let together = FeatureCache::new(dir.path().join("together"), 1 << 30).unwrap();
        let got = source(&together).samples_caching_views(&[(&entry, 1)], 3);
        assert_eq!(got.len(), 1);
        let name = &encoder.info().name;
        for view in 0..3 {
            assert!(together.key_path(HASH, name, 28, view).exists(), "view {view} not cached");
        }
        assert!(!together.key_path(HASH, name, 28, 3).exists());
        let alone = FeatureCache::new(dir.path().join("alone"), 1 << 30).unwrap();
        for view in [1, 2] {
            let want = source(&alone).samples(&[(&entry, view)]).pop().unwrap().unwrap();
            let cached = source(&together).samples(&[(&entry, view)]).pop().unwrap().unwrap();
            assert_eq!(cached.features.data, want.features.data, "view {view}");
            assert_eq!(cached.image, want.image, "view {view}");
        }
    }

    #[test]
    fn views_cycle_through_scales() {
        let kinds: Vec<ViewScale> = (1..=8).map(ViewScale::of_view).collect();
        use ViewScale::*;
        assert_eq!(kinds, [Whole, Half, Quarter, Native, Whole, Half, Quarter, Native]);
    }

    #[test]
    fn crops_of_a_large_image_are_at_its_own_resolution() {
        let (w, h, size) = (3000, 2000, 224);
        for view in 1..64 {
            let r = view_rect(w, h, size, HASH, view);
            assert!(r.x + r.width <= w && r.y + r.height <= h, "{r:?}");
            let side = match r.scale {
                ViewScale::Whole => continue,
                ViewScale::Half => 1000,
                ViewScale::Quarter => 500,
                ViewScale::Native => size,
            };
            assert_eq!((r.width, r.height), (side, side), "view {view}");
        }
        // A native crop is the image's pixels, untouched.
        let image = gradient(600, 400);
        let view = 4;
        let r = view_rect(600, 400, size, HASH, view);
        assert_eq!(r.scale, ViewScale::Native);
        let mut want = image::imageops::crop_imm(&image, r.x, r.y, size, size).to_image();
        if r.flip {
            want = image::imageops::flip_horizontal(&want);
        }
        assert_eq!(augmented_view(&image, size, HASH, view), want);
    }

    #[test]
    fn crops_never_upsample_and_stay_inside() {
        for &(w, h) in &[(224, 224), (300, 250), (250, 900), (100, 80), (1, 1), (5000, 230)] {
            for view in 1..40 {
                let r = view_rect(w, h, 224, HASH, view);
                assert!(r.width >= 1 && r.height >= 1);
                assert!(r.x + r.width <= w && r.y + r.height <= h, "{w}x{h} {r:?}");
                if r.scale != ViewScale::Whole {
                    assert_eq!(r.width, r.height);
                    assert_eq!(r.width, 224.min(w.min(h)), "{w}x{h} view {view}");
                }
            }
        }
    }

    #[test]
    fn views_are_deterministic_per_image_and_view() {
        let image = gradient(700, 500);
        for view in 0..9 {
            let a = augmented_view(&image, 64, HASH, view);
            let b = augmented_view(&image, 64, HASH, view);
            assert_eq!(a.dimensions(), (64, 64));
            assert_eq!(a, b, "view {view}");
        }
        let other = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
        let differ = (1..9)
            .filter(|&v| view_rect(700, 500, 64, HASH, v) != view_rect(700, 500, 64, other, v));
        assert!(differ.count() >= 6);
        let rects: Vec<ViewRect> = (1..9).map(|v| view_rect(700, 500, 64, HASH, v)).collect();
        assert_eq!(rects, (1..9).map(|v| view_rect(700, 500, 64, HASH, v)).collect::<Vec<_>>());
    }
}
