//! Turning one image into an encoder's token grid, and saving it for scripts.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;
use burn::prelude::*;
use image::Rgb32FImage;

use crate::encoders::VisionEncoder;
use crate::fsutil::write_safetensors;
use crate::image_io;
use crate::pca::Pca;

/// An image's encoder output, on the host.
#[derive(Clone, Debug)]
pub struct ImageFeatures {
    pub encoder: String,
    pub grid_h: usize,
    pub grid_w: usize,
    pub dim: usize,
    /// `[grid_h * grid_w, dim]`, row-major grid.
    pub patch_tokens: Vec<f32>,
    pub cls_token: Option<Vec<f32>>,
    /// `[registers, dim]`.
    pub register_tokens: Option<Vec<f32>>,
    /// The picture the encoder saw (after fitting and cropping).
    pub image: Rgb32FImage,
}

fn host(t: Tensor<4>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().expect("f32 tensor data")
}

/// Encodes the image at `path` at `size x size`.
pub fn extract(
    encoder: &dyn VisionEncoder,
    path: &Path,
    size: usize,
    device: &Device,
) -> Result<ImageFeatures> {
    let info = encoder.info();
    info.check_size(size, size)?;
    let (pixels, image) =
        image_io::load_for_encoder(path, (size as u32, size as u32), info.mean, info.std, device)?;
    let out = encoder.forward(pixels);
    let [_, grid_h, grid_w, dim] = out.patch_tokens.dims();
    Ok(ImageFeatures {
        encoder: info.name.clone(),
        grid_h,
        grid_w,
        dim,
        patch_tokens: host(out.patch_tokens),
        cls_token: out.cls.map(|c| host(c.unsqueeze())),
        register_tokens: out.registers.map(|r| host(r.unsqueeze())),
        image,
    })
}

impl ImageFeatures {
    /// Writes `patch_tokens`, `cls_token`, `register_tokens` and metadata (encoder, grid_h, grid_w).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors = vec![(
            "patch_tokens",
            vec![self.grid_h * self.grid_w, self.dim],
            self.patch_tokens.as_slice(),
        )];
        if let Some(cls) = &self.cls_token {
            tensors.push(("cls_token", vec![self.dim], cls));
        }
        if let Some(reg) = &self.register_tokens {
            tensors.push(("register_tokens", vec![reg.len() / self.dim, self.dim], reg));
        }
        let metadata = HashMap::from([
            ("encoder".to_string(), self.encoder.clone()),
            ("grid_h".to_string(), self.grid_h.to_string()),
            ("grid_w".to_string(), self.grid_w.to_string()),
            ("dim".to_string(), self.dim.to_string()),
            ("format".to_string(), "fae-studio-features".to_string()),
        ]);
        write_safetensors(path, &tensors, metadata)
    }

    /// A PCA-to-RGB picture of the patch tokens, the size of the input image.
    pub fn pca_picture(&self) -> image::RgbImage {
        let pca = Pca::fit(&self.patch_tokens, self.dim);
        let cell = (self.image.width() as usize / self.grid_w).max(1) as u32;
        pca.picture(&self.patch_tokens, self.grid_h, self.grid_w, cell)
    }
}
