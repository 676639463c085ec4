//! How a generated image becomes a document: its PNG is written (atomically) into the session's
//! `generated/` folder with its latent beside it (`NAME.latent.safetensors`, tagged with the FAE
//! model's checksum), and opened like any image. The worker opens an image whose saved latent
//! matches the model in use from that latent, so a generated document keeps the latent it was
//! generated with, also after a restart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::fsutil::{write_png, write_safetensors};
use crate::grid::Grid;
use crate::weights::WeightFile;

/// The latent file saved beside an image.
pub fn latent_path(image: &Path) -> PathBuf {
    image.with_extension("latent.safetensors")
}

/// Writes `image` as `folder/NAME.png` with its latent beside it; returns the PNG's path.
pub fn save(
    folder: &Path,
    name: &str,
    image: &image::Rgb32FImage,
    latent: &Grid,
    fae_sha256: &str,
) -> Result<PathBuf> {
    std::fs::create_dir_all(folder)
        .with_context(|| format!("cannot create {}", folder.display()))?;
    let png = folder.join(format!("{name}.png"));
    let metadata = HashMap::from([
        ("format".to_string(), "fae-studio-latent".to_string()),
        ("fae_sha256".to_string(), fae_sha256.to_string()),
        ("normalised".to_string(), "true".to_string()),
    ]);
    let shape = vec![latent.height, latent.width, latent.channels];
    write_safetensors(&latent_path(&png), &[("latent", shape, &latent.data)], metadata)?;
    write_png(&png, &crate::image_io::to_rgb8(image))?;
    Ok(png)
}

/// The latent saved beside `image`, if there is one made by the FAE model with this checksum.
pub fn read_latent(image: &Path, fae_sha256: &str) -> Option<Grid> {
    let path = latent_path(image);
    if !path.is_file() {
        return None;
    }
    let file = WeightFile::open(&path).ok()?;
    if file.metadata().get("fae_sha256").map(String::as_str) != Some(fae_sha256) {
        return None;
    }
    let shape = file.shape("latent").filter(|s| s.len() == 3)?;
    let data = file.read_f32("latent", &shape).ok()?;
    Some(Grid { height: shape[0], width: shape[1], channels: shape[2], data })
}

/// A file name for a generated image that no other has: the time and the seed.
pub fn unique_name(folder: &Path, seed: u64) -> String {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut name = format!("generated-{stamp}-seed{seed}");
    let mut k = 1;
    while folder.join(format!("{name}.png")).exists() {
        k += 1;
        name = format!("generated-{stamp}-seed{seed}-{k}");
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_latent_is_read_back_only_for_the_same_model() {
        let dir = tempfile::tempdir().unwrap();
        let latent = Grid {
            height: 2,
            width: 3,
            channels: 4,
            data: (0..24).map(|i| i as f32 * 0.5).collect(),
        };
        let image = image::Rgb32FImage::from_pixel(28, 42, image::Rgb([0.2, 0.4, 0.6]));
        let name = unique_name(dir.path(), 7);
        let png = save(dir.path(), &name, &image, &latent, "abc").unwrap();
        assert!(png.is_file() && latent_path(&png).is_file());
        assert_eq!(read_latent(&png, "abc"), Some(latent));
        assert_eq!(read_latent(&png, "other model"), None);
        assert_ne!(unique_name(dir.path(), 7), name, "names are never reused");
    }
}
