//! Reading user images safely and preparing them for an encoder.
//!
//! Every common format (jpg, png, webp, bmp, tiff, gif's first frame), EXIF orientation applied,
//! greyscale / alpha / 16-bit converted to RGB in [0, 1], and decode limits so that a file declaring
//! a huge size is refused before anything is allocated.

use std::io::BufReader;
use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, Rgb32FImage, RgbImage};

use crate::text::clip_message;

/// Largest accepted side, in pixels.
pub const MAX_SIDE: u32 = 16_384;
/// Largest accepted decoder allocation.
pub const MAX_DECODE_BYTES: u64 = 1 << 30;
/// What a decoder may allocate beyond twice the image it declared (tables, rows, metadata).
const DECODE_SLACK: u64 = 16 << 20;

/// Decodes an image file to RGB f32 in [0, 1], upright, alpha composited over white.
pub fn load_rgb(path: &Path) -> Result<Rgb32FImage> {
    let shown = path.display();
    let meta = std::fs::metadata(path).with_context(|| format!("cannot open {shown}"))?;
    if meta.is_dir() {
        bail!("{shown} is a directory, not an image");
    }
    if meta.len() == 0 {
        bail!("{shown} is empty");
    }
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {shown}"))?;
    let mut reader = ImageReader::new(BufReader::new(file))
        .with_guessed_format()
        .with_context(|| format!("cannot read {shown}"))?;
    if reader.format().is_none() {
        bail!("{shown} is not an image in a supported format (jpg, png, webp, bmp, tiff, gif)");
    }
    if reader.format() == Some(ImageFormat::Tiff) {
        check_tiff_directory(path, meta.len())?;
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits.clone());
    let mut decoder = reader.into_decoder().map_err(|e| decode_error(path, e))?;
    // The limits bound what the header declares; decoding then needs that image and little more.
    // Without this, a part declared apart from the image (a GIF frame larger than its screen)
    // could take the whole limit from a file of a few hundred bytes.
    let needed = decoder.total_bytes().saturating_mul(2).saturating_add(DECODE_SLACK);
    limits.max_alloc = Some(needed.min(MAX_DECODE_BYTES));
    decoder.set_limits(limits).map_err(|e| decode_error(path, e))?;
    let orientation = decoder.orientation().ok();
    let mut image = DynamicImage::from_decoder(decoder).map_err(|e| decode_error(path, e))?;
    if let Some(orientation) = orientation {
        image.apply_orientation(orientation);
    }
    Ok(to_rgb_over_white(image))
}

/// A decoder's error as one line (some end theirs with a line break).
fn decode_error(path: &Path, e: image::ImageError) -> anyhow::Error {
    anyhow::anyhow!("cannot decode {}: {}", path.display(), clip_message(e.to_string().trim()))
}

/// Refuses a TIFF whose first directory declares more bytes of values for a tag than the whole
/// file holds: the TIFF decoder reserves room for a tag's values (up to 256 MiB) on opening the
/// file, before the limits above apply.
fn check_tiff_directory(path: &Path, len: u64) -> Result<()> {
    // A directory that cannot be read is left to the decoder, which says why.
    let Ok((inline, entries)) = tiff_directory(path) else { return Ok(()) };
    for (tag, kind, count) in entries {
        let width: u64 = match kind {
            1 | 2 | 6 | 7 => 1,
            3 | 8 => 2,
            4 | 9 | 11 | 13 => 4,
            5 | 10 | 12 | 16 | 17 | 18 => 8,
            _ => continue,
        };
        let bytes = count.saturating_mul(width);
        if bytes > inline && bytes > len {
            bail!(
                "{} is not a valid TIFF: tag {tag} declares {bytes} bytes in a file of {len}",
                path.display()
            );
        }
    }
    Ok(())
}

/// A TIFF directory entry: tag, type and count of values.
type TiffEntry = (u64, u64, u64);

/// The bytes of a value stored in an entry itself, and the entries of a TIFF's first directory.
fn tiff_directory(path: &Path) -> std::io::Result<(u64, Vec<TiffEntry>)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = BufReader::new(std::fs::File::open(path)?);
    let mut order = [0u8; 2];
    file.read_exact(&mut order)?;
    let little = &order == b"II";
    // An unsigned integer of `n` bytes in the file's byte order.
    let uint = |file: &mut BufReader<std::fs::File>, n: usize| -> std::io::Result<u64> {
        let mut b = [0u8; 8];
        file.read_exact(&mut b[..n])?;
        if !little {
            b[..n].reverse();
        }
        Ok(u64::from_le_bytes(b))
    };
    let big = uint(&mut file, 2)? == 43;
    if big {
        uint(&mut file, 4)?; // offset size and padding
    }
    let word = if big { 8 } else { 4 };
    let offset = uint(&mut file, word)?;
    file.seek(SeekFrom::Start(offset))?;
    let count = uint(&mut file, if big { 8 } else { 2 })?;
    // Read one by one: a count past the end of the file stops at the end.
    let mut entries = Vec::new();
    for _ in 0..count {
        let (tag, kind) = (uint(&mut file, 2)?, uint(&mut file, 2)?);
        entries.push((tag, kind, uint(&mut file, word)?));
        uint(&mut file, word)?; // the value, or where it is
    }
    Ok((word as u64, entries))
}

fn to_rgb_over_white(image: DynamicImage) -> Rgb32FImage {
    if !image.color().has_alpha() {
        return image.to_rgb32f();
    }
    let rgba = image.to_rgba32f();
    let (w, h) = rgba.dimensions();
    Rgb32FImage::from_fn(w, h, |x, y| {
        let [r, g, b, a] = rgba.get_pixel(x, y).0;
        let over = |c: f32| c * a + (1.0 - a);
        image::Rgb([over(r), over(g), over(b)])
    })
}

/// Resizes the shorter side to fit `width x height`, then crops the centre. An image that already
/// has the working size is returned untouched (no resampling).
pub fn fit_and_crop(image: &Rgb32FImage, width: u32, height: u32) -> Rgb32FImage {
    let (w, h) = image.dimensions();
    if (w, h) == (width, height) {
        return image.clone();
    }
    let FitCrop { resized: (rw, rh), offset: (x, y) } = fit_crop(w, h, width, height);
    let resized = if (rw, rh) == (w, h) {
        image.clone()
    } else {
        image::imageops::resize(image, rw, rh, FilterType::CatmullRom)
    };
    image::imageops::crop_imm(&resized, x, y, width, height).to_image()
}

/// How [`fit_and_crop`] takes a `width x height` picture from a `w x h` image: the size it
/// resizes to, then the top-left corner of the crop in the resized image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FitCrop {
    pub resized: (u32, u32),
    pub offset: (u32, u32),
}

pub fn fit_crop(w: u32, h: u32, width: u32, height: u32) -> FitCrop {
    if (w, h) == (width, height) {
        return FitCrop { resized: (w, h), offset: (0, 0) };
    }
    let scale = (width as f64 / w as f64).max(height as f64 / h as f64);
    let (rw, rh) = (
        ((w as f64 * scale).round() as u32).max(width),
        ((h as f64 * scale).round() as u32).max(height),
    );
    FitCrop { resized: (rw, rh), offset: ((rw - width) / 2, (rh - height) / 2) }
}

/// Whether the file stores more than 8 bits per channel (16-bit PNG or TIFF): such a photo is
/// written back as 16-bit PNG so that untouched pixels keep every bit. Reads the header only.
pub fn is_high_bit_depth(path: &Path) -> Result<bool> {
    let shown = path.display();
    let reader = ImageReader::open(path)
        .with_context(|| format!("cannot open {shown}"))?
        .with_guessed_format()
        .with_context(|| format!("cannot read {shown}"))?;
    let decoder =
        reader.into_decoder().map_err(|e| anyhow::anyhow!("cannot decode {shown}: {e}"))?;
    let color = decoder.color_type();
    Ok(color.bytes_per_pixel() > color.channel_count())
}

/// Normalised pixels `[1, 3, H, W]` for an encoder with the given per-channel mean and std.
pub fn to_tensor(image: &Rgb32FImage, mean: [f32; 3], std: [f32; 3], device: &Device) -> Tensor<4> {
    let (w, h) = image.dimensions();
    let (w, h) = (w as usize, h as usize);
    let mut data = vec![0f32; 3 * h * w];
    for (i, px) in image.pixels().enumerate() {
        for c in 0..3 {
            data[c * h * w + i] = (px.0[c] - mean[c]) / std[c];
        }
    }
    Tensor::from_data(TensorData::new(data, [1, 3, h, w]), device)
}

/// Converts f32 RGB in [0, 1] to 8-bit.
pub fn to_rgb8(image: &Rgb32FImage) -> RgbImage {
    DynamicImage::ImageRgb32F(image.clone()).to_rgb8()
}

/// Loads, fits and normalises an image for an encoder in one step.
pub fn load_for_encoder(
    path: &Path,
    size: (u32, u32),
    mean: [f32; 3],
    std: [f32; 3],
    device: &Device,
) -> Result<(Tensor<4>, Rgb32FImage)> {
    let image = fit_and_crop(&load_rgb(path)?, size.0, size.1);
    Ok((to_tensor(&image, mean, std, device), image))
}

/// The image files directly inside `dir` (by extension), sorted by name.
pub fn images_in(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
            crate::train::data::IMAGE_EXTENSIONS.contains(&ext.as_str())
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("folder {} holds no images", dir.display());
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_size_is_not_resampled() {
        let img = Rgb32FImage::from_fn(32, 32, |x, y| {
            image::Rgb([x as f32 / 31.0, y as f32 / 31.0, 0.5])
        });
        assert_eq!(fit_and_crop(&img, 32, 32), img);
    }

    #[test]
    fn shorter_side_is_fitted_then_centre_cropped() {
        let img = Rgb32FImage::from_fn(60, 30, |x, _| {
            image::Rgb([if (15..45).contains(&x) { 0.0 } else { 1.0 }; 3])
        });
        // Same height: no resampling, only a centre crop of the dark middle.
        let out = fit_and_crop(&img, 30, 30);
        assert_eq!(out.dimensions(), (30, 30));
        assert!(out.pixels().all(|p| p.0[0] == 0.0));
        let out = fit_and_crop(&img, 14, 28);
        assert_eq!(out.dimensions(), (14, 28));
    }

    #[test]
    fn alpha_is_composited_over_white() {
        let rgba = image::RgbaImage::from_pixel(2, 2, image::Rgba([0, 0, 0, 0]));
        let rgb = to_rgb_over_white(DynamicImage::ImageRgba8(rgba));
        assert!(rgb.pixels().all(|p| p.0 == [1.0, 1.0, 1.0]));
    }
}
