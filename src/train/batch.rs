//! Training batches: samples drawn from the dataset (dropping and reporting images that fail to
//! decode) and turned into tensors.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use burn::prelude::*;
use image::Rgb32FImage;

use super::data::{Dataset, FeatureSource, ImageEntry, Sample};
use super::options::TrainOptions;
use crate::grid::Grid;
use crate::image_io;
use crate::rng::Rng;

/// Writes `skipped.tsv` (path, reason) in the run folder and lists the first few on stderr.
pub(crate) fn report_skipped(out: &Path, skipped: &[(PathBuf, String)]) -> Result<()> {
    let text: String = skipped.iter().map(|(p, why)| format!("{}\t{why}\n", p.display())).collect();
    crate::fsutil::write_atomic(&out.join("skipped.tsv"), text.as_bytes())?;
    for (p, why) in skipped.iter().take(20) {
        eprintln!("skipped {}: {why}", p.display());
    }
    if skipped.len() > 20 {
        eprintln!("... and {} more, see skipped.tsv", skipped.len() - 20);
    }
    Ok(())
}

/// A batch of training samples; files that fail to decode are dropped from the set and replaced.
pub(super) fn load_batch(
    source: &FeatureSource,
    dataset: &mut Dataset,
    options: &TrainOptions,
    rng: &mut Rng,
    out: &Path,
) -> Result<Vec<Sample>> {
    let mut batch = Vec::with_capacity(options.batch);
    while batch.len() < options.batch {
        if dataset.train.is_empty() {
            bail!("every training image failed to decode");
        }
        let picks: Vec<(ImageEntry, u32)> = (batch.len()..options.batch)
            .map(|_| {
                (
                    dataset.train[dataset.pick(rng, options.balance)].clone(),
                    rng.below(options.views.max(1) as usize) as u32,
                )
            })
            .collect();
        let requests: Vec<(&ImageEntry, u32)> = picks.iter().map(|(e, v)| (e, *v)).collect();
        let mut failed = false;
        for ((entry, _), result) in
            picks.iter().zip(source.samples_caching_views(&requests, options.views))
        {
            match result {
                Ok(sample) => batch.push(sample),
                Err(e) => {
                    eprintln!("skipped {}: {e:#}", entry.path.display());
                    dataset.skip(&entry.path, format!("{e:#}"));
                    failed = true;
                }
            }
        }
        if failed {
            report_skipped(out, &dataset.skipped)?;
        }
    }
    Ok(batch)
}

pub(crate) fn grids_to_tensor<'a>(
    grids: impl Iterator<Item = &'a Grid>,
    device: &Device,
) -> Tensor<3> {
    let grids: Vec<&Grid> = grids.collect();
    let (t, d) = (grids[0].tokens(), grids[0].channels);
    let data: Vec<f32> = grids.iter().flat_map(|g| g.data.iter().copied()).collect();
    Tensor::<1>::from_data(TensorData::new(data, [grids.len() * t * d]), device).reshape([
        grids.len(),
        t,
        d,
    ])
}

pub(super) fn images_to_tensor<'a>(
    images: impl Iterator<Item = &'a Rgb32FImage>,
    device: &Device,
) -> Tensor<4> {
    let parts: Vec<Tensor<4>> =
        images.map(|img| image_io::to_tensor(img, [0.0; 3], [1.0; 3], device)).collect();
    Tensor::cat(parts, 0)
}
