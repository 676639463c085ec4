//! Writing files without ever leaving a half-written one behind.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

/// Writes `bytes` to a temporary file beside `path`, syncs it, then renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        anyhow::bail!("cannot write {}: folder {} does not exist", path.display(), dir.display());
    }
    let name = path.file_name().context("output path has no file name")?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

/// Encodes an RGB image as PNG and writes it atomically.
pub fn write_png(path: &Path, image: &image::RgbImage) -> Result<()> {
    let mut bytes = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .context("cannot encode PNG")?;
    write_atomic(path, &bytes)
}

/// Writes a photo as PNG, 16 bits per channel when `sixteen_bit` (else 8): values in [0, 1] are
/// rounded to the nearest level, so a pixel read from a file of the same depth comes back bit
/// for bit.
pub fn write_photo_png(path: &Path, image: image::Rgb32FImage, sixteen_bit: bool) -> Result<()> {
    let image = image::DynamicImage::ImageRgb32F(image);
    let image = if sixteen_bit {
        image::DynamicImage::ImageRgb16(image.to_rgb16())
    } else {
        image::DynamicImage::ImageRgb8(image.to_rgb8())
    };
    let mut bytes = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .context("cannot encode PNG")?;
    write_atomic(path, &bytes)
}

/// Serialises f32 tensors (name, shape, values) with string metadata to a safetensors file.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(&str, Vec<usize>, &[f32])],
    metadata: std::collections::HashMap<String, String>,
) -> Result<()> {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(name, shape, values)| {
            let bytes: &[u8] = bytemuck::cast_slice(values);
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.to_string(), v))
                .with_context(|| format!("tensor `{name}` has an inconsistent shape"))
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, Some(metadata))?;
    write_atomic(path, &bytes)
}
