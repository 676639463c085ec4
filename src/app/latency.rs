//! Interaction latency, the `interaction` stage of `fae-studio bench`: a brush stroke on the
//! latent, applied through the editing engine as the app applies it, to the regenerated image.

use anyhow::{Result, bail};

use crate::backend::{self, BackendKind, Compute};
use crate::bench::{BenchRow, time_ms};

/// Interaction latency: a brush stroke on the latent (applied through the editing engine, as the
/// app does) to the regenerated image, with the built-in model (or `FAE_STUDIO_MODEL`) on the
/// sample photo.
pub fn interaction(compute: &Compute, runs: usize, sizes: &[usize]) -> Result<Vec<BenchRow>> {
    use crate::edit::history::History;
    use crate::edit::mask::Mask;
    use crate::edit::ops::{Edit, LatentSource};
    use crate::grid::Grid;

    struct NoSources;
    impl LatentSource for NoSources {
        fn latent(&self, path: &str) -> Result<Grid> {
            bail!("no source {path}")
        }
        fn latents_in(&self, folder: &str) -> Result<Vec<Grid>> {
            bail!("no folder {folder}")
        }
    }
    let model = std::env::var_os(crate::app::MODEL_ENV).map(std::path::PathBuf::from);
    let fae = crate::fae::Fae::load(model.as_deref(), &compute.device)?;
    let sample = crate::assets::path("samples/chelsea.png")?;
    let mut rows = Vec::new();
    for &size in sizes {
        let encoded = fae.encode_image(&sample, Some(size))?;
        let mut history = History::new(encoded.latent);
        let mut seed = 0u64;
        let (median_ms, min_ms) = time_ms(runs, &compute.device, || {
            seed += 1;
            let x = 0.2 + 0.6 * ((seed % 7) as f32 / 7.0);
            let stroke = Mask::stroke(vec![[x, 0.3], [x + 0.1, 0.5], [x, 0.7]], 0.08, 0.5);
            let edit = Edit::Noise { seed, sigma: 0.8, mask: Some(stroke) };
            if let Ok(latent) = history.push(edit, &NoSources) {
                let latent = latent.clone();
                let _ = fae.decode(&latent);
            }
        })?;
        rows.push(BenchRow {
            stage: "interaction".into(),
            backend: compute.kind.name().into(),
            adapter: compute.adapter.clone(),
            model: format!("{} + FAE", fae.config.encoder),
            size,
            batch: 1,
            runs,
            median_ms,
            min_ms,
            peak_mem_mib: match compute.kind {
                BackendKind::Cpu => backend::peak_rss_mib(),
                BackendKind::Wgpu => compute
                    .device
                    .memory_pool_usage()
                    .map(|u| u.bytes_reserved as f64 / (1024.0 * 1024.0)),
            },
            images_per_s: None,
            ms_per_step: None,
        });
    }
    Ok(rows)
}
