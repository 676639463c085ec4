//! The generator's training set: normalised FAE latents of every image of a folder (several
//! augmented views each), with class labels from sub-folders, cached in the run folder.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::prelude::*;

use crate::fae::Fae;
use crate::fsutil::write_safetensors;
use crate::train::data::{Dataset, FeatureCache, FeatureSource, ImageEntry};
use crate::weights::WeightFile;

/// Latents `[n, H*W, C]` (row-major tokens, normalised by the FAE's statistics) and labels.
#[derive(Clone, Debug, PartialEq)]
pub struct LatentSet {
    pub grid: (usize, usize),
    pub channels: usize,
    pub classes: Vec<String>,
    pub values: Vec<f32>,
    /// Class index per latent; `None` for images directly in the root folder.
    pub labels: Vec<Option<usize>>,
}

impl LatentSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn tokens(&self) -> usize {
        self.grid.0 * self.grid.1
    }

    /// The latents at `indices` as one `[B, H*W, C]` tensor.
    pub fn batch(&self, indices: &[usize], device: &Device) -> Tensor<3> {
        let per = self.tokens() * self.channels;
        let data: Vec<f32> = indices
            .iter()
            .flat_map(|&i| self.values[i * per..(i + 1) * per].iter().copied())
            .collect();
        Tensor::<1>::from_data(TensorData::new(data, [indices.len() * per]), device).reshape([
            indices.len(),
            self.tokens(),
            self.channels,
        ])
    }

    /// Writes the set atomically, with `key` (what it was made from) in the metadata.
    pub fn save(&self, path: &Path, key: &str) -> Result<()> {
        let labels: Vec<f32> = self.labels.iter().map(|l| l.map_or(-1.0, |c| c as f32)).collect();
        let meta = HashMap::from([
            ("key".to_string(), key.to_string()),
            ("grid".to_string(), format!("{}x{}", self.grid.0, self.grid.1)),
            ("classes".to_string(), serde_json::to_string(&self.classes)?),
        ]);
        write_safetensors(
            path,
            &[
                ("latents", vec![self.len(), self.tokens(), self.channels], &self.values),
                ("labels", vec![self.len()], &labels),
            ],
            meta,
        )
    }

    /// Reads a set written by [`save`](Self::save) if it was made from `key`.
    pub fn load_if(path: &Path, key: &str) -> Result<Option<Self>> {
        if !path.is_file() {
            return Ok(None);
        }
        let file = WeightFile::open(path)?;
        let meta = file.metadata();
        if meta.get("key").map(String::as_str) != Some(key) {
            return Ok(None);
        }
        let (h, w) = meta
            .get("grid")
            .and_then(|g| g.split_once('x'))
            .and_then(|(h, w)| Some((h.parse().ok()?, w.parse().ok()?)))
            .context("latent cache: bad grid")?;
        let classes: Vec<String> = serde_json::from_str(meta.get("classes").map_or("[]", |s| s))?;
        let shape = file.shape("latents").context("latent cache: no latents")?;
        let [n, t, c] = shape[..] else {
            bail!("latent cache: latents must be [n, tokens, channels]")
        };
        if t != h * w {
            bail!("latent cache: {t} tokens do not fill a {h}x{w} grid");
        }
        let values = file.read_f32("latents", &[n, t, c])?;
        let labels = file
            .read_f32("labels", &[n])?
            .into_iter()
            .map(|l| (l >= 0.0).then_some(l as usize).filter(|&c| c < classes.len()))
            .collect();
        Ok(Some(Self { grid: (h, w), channels: c, classes, values, labels }))
    }
}

/// Encodes every image of `data` (`views` augmented views each, view 0 the centre crop) with
/// `fae` at `size` px. Returns the set and the files skipped, with reasons.
pub fn encode_folder(
    fae: &Fae,
    data: &Path,
    size: usize,
    views: u32,
    cache: &FeatureCache,
    on_progress: &mut dyn FnMut(usize, usize),
) -> Result<(LatentSet, Vec<(std::path::PathBuf, String)>)> {
    fae.encoder.info().check_size(size, size)?;
    let mut dataset = Dataset::scan(data, 0.0)?;
    let source =
        FeatureSource { encoder: fae.encoder.as_ref(), cache, size, device: fae.device.clone() };
    let requests: Vec<(ImageEntry, u32)> =
        dataset.train.iter().flat_map(|e| (0..views.max(1)).map(move |v| (e.clone(), v))).collect();
    let grid = (size / fae.encoder.info().patch_size, size / fae.encoder.info().patch_size);
    let mut set = LatentSet {
        grid,
        channels: fae.config.latent_channels,
        classes: dataset.classes.clone(),
        values: Vec::new(),
        labels: Vec::new(),
    };
    let total = requests.len();
    for (done, chunk) in requests.chunks(8).enumerate() {
        let refs: Vec<(&ImageEntry, u32)> = chunk.iter().map(|(e, v)| (e, *v)).collect();
        for ((entry, _), result) in chunk.iter().zip(source.samples(&refs)) {
            match result {
                Ok(sample) => {
                    let t = sample.features.tokens();
                    let d = sample.features.channels;
                    let features = Tensor::<1>::from_data(
                        TensorData::new(sample.features.data, [t * d]),
                        &fae.device,
                    )
                    .reshape([1, t, d]);
                    let latent = fae.encode_features(features);
                    set.values
                        .extend(latent.into_data().try_into_vec_as::<f32>().expect("f32 data"));
                    set.labels.push(entry.class);
                }
                Err(e) => {
                    if !dataset.skipped.iter().any(|(p, _)| p == &entry.path) {
                        dataset.skipped.push((entry.path.clone(), format!("{e:#}")));
                    }
                }
            }
        }
        on_progress(((done + 1) * 8).min(total), total);
    }
    if set.is_empty() {
        bail!("no usable images in {} ({} files skipped)", data.display(), dataset.skipped.len());
    }
    Ok((set, dataset.skipped))
}
