//! Where encoder weights come from: the built-in default, a local `.safetensors` file, or a Hugging
//! Face repository (downloaded once into the standard cache, then used offline).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use serde_json::Value;

use super::VisionEncoder;
use super::dinov2::{Dinov2, Dinov2Config};
use super::hub::{self, DownloadError, Hub, Transfer};
use super::siglip::{Siglip, SiglipConfig};
use crate::assets;
use crate::text::{clip, json_error};
use crate::weights::{TensorReader, WeightFile};

/// The name of the built-in encoder, used when none is given.
pub const DEFAULT_ENCODER: &str = "dinov2-small";

/// Resolves a user's encoder name to a local weights file, downloading it if needed.
pub fn resolve(spec: Option<&str>) -> Result<(PathBuf, String)> {
    let spec = spec.unwrap_or(DEFAULT_ENCODER);
    if matches!(spec, "default" | DEFAULT_ENCODER | "builtin") {
        let path = assets::path("dinov2-small.safetensors")?;
        return Ok((path, DEFAULT_ENCODER.to_string()));
    }
    let path = Path::new(spec);
    if path.exists() {
        let file = if path.is_dir() {
            let inner = path.join("model.safetensors");
            if !inner.is_file() {
                bail!("{} is a directory without a model.safetensors", path.display());
            }
            inner
        } else {
            path.to_path_buf()
        };
        return Ok((file, spec.to_string()));
    }
    if looks_like_repo_id(spec) {
        return Ok((download(spec)?, spec.to_string()));
    }
    bail!(
        "unknown encoder `{spec}`: give a .safetensors path, a Hugging Face id such as \
         facebook/dinov2-base, or `{DEFAULT_ENCODER}` (built in)"
    )
}

fn looks_like_repo_id(spec: &str) -> bool {
    let parts: Vec<&str> = spec.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
        && !spec.ends_with(".safetensors")
}

/// Fetches `model.safetensors` and `config.json` of a Hugging Face repository into the standard
/// cache (`HF_HOME`, `HF_ENDPOINT` and `HF_HUB_OFFLINE` are honoured), with a progress bar on a
/// terminal. A cached copy is used without any network access. The transfer itself is the app's
/// ([`hub::download`]), so both say the same thing when there is no connection.
pub fn download(repo_id: &str) -> Result<PathBuf> {
    let transfer = Arc::new(Transfer::default());
    let bar = indicatif::ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template("{msg} {wide_bar} {bytes}/{total_bytes} {eta}")
            .expect("a valid template"),
    );
    // The answer wakes this thread at once (a cached model costs no wait); until then the bar
    // follows the transfer. A panic of the download thread is re-raised by the scope.
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::scope(|s| {
        s.spawn(|| tx.send(hub::download(repo_id, &Hub::default(), &transfer)));
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(result) => break Some(result),
                Err(RecvTimeoutError::Disconnected) => break None,
                Err(RecvTimeoutError::Timeout) => {
                    let (file, done, total) = transfer.snapshot();
                    bar.set_message(file);
                    bar.set_length(total);
                    bar.set_position(done);
                }
            }
        }
    });
    bar.finish_and_clear();
    let result = result.context("the download stopped unexpectedly")?;
    result.map_err(|e| match e {
        DownloadError::Offline(_) => anyhow::anyhow!("cannot download {repo_id}: {e}"),
        _ => anyhow::anyhow!(
            "cannot download {repo_id}: {e}; check the id, or pass a local .safetensors path"
        ),
    })
}

/// Finds the Hugging Face configuration of a weights file: its own metadata, or a `config.json`
/// (or `<stem>.config.json`) beside it. Nested `vision_config` (full SigLIP models) is unwrapped.
fn find_config(file: &WeightFile) -> Result<Option<Value>> {
    let from_meta = file.metadata().get("config").cloned();
    let path = file.path();
    let beside = [path.with_extension("config.json"), path.with_file_name("config.json")];
    let text = match from_meta {
        Some(text) => Some(text),
        None => beside
            .iter()
            .find(|p| p.is_file())
            .map(|p| {
                std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
            })
            .transpose()?,
    };
    let Some(text) = text else { return Ok(None) };
    let mut value: Value = serde_json::from_str(&text)
        .map_err(json_error)
        .with_context(|| format!("the configuration of {} is not valid JSON", path.display()))?;
    if let Some(vision) = value.get("vision_config").cloned() {
        value = vision;
    }
    Ok(Some(value))
}

/// Loads any supported encoder from a weights file onto `device`.
pub fn load_file(path: &Path, name: &str, device: &Device) -> Result<Arc<dyn VisionEncoder>> {
    let file = WeightFile::open(path)?;
    let config = find_config(&file)?;
    let model_type = config
        .as_ref()
        .and_then(|c| c.get("model_type"))
        .and_then(|m| m.as_str())
        .unwrap_or("")
        .to_string();
    let has = |n: &str| file.contains(n);
    let dinov2_prefix =
        ["", "dinov2."].into_iter().find(|p| has(&format!("{p}embeddings.cls_token")));
    let siglip_prefix = ["vision_model.", ""]
        .into_iter()
        .find(|p| has(&format!("{p}embeddings.patch_embedding.weight")));
    let encoder: Arc<dyn VisionEncoder> = if let Some(prefix) = dinov2_prefix {
        let cfg = match config {
            Some(c) if model_type.starts_with("dinov2") || model_type.is_empty() => {
                serde_json::from_value(c)
                    .map_err(json_error)
                    .with_context(|| format!("{}: invalid DINOv2 configuration", path.display()))?
            }
            Some(_) => bail!(
                "{}: configuration says `{}` but the tensors are DINOv2's",
                path.display(),
                clip(&model_type)
            ),
            None => infer_dinov2(&file, prefix)?,
        };
        let reader = TensorReader::new(&file, prefix, device);
        Arc::new(Dinov2::load(&reader, cfg, name)?)
    } else if let Some(prefix) = siglip_prefix {
        let cfg = match config {
            Some(c) => serde_json::from_value(c).map_err(json_error).with_context(|| {
                format!("{}: invalid SigLIP vision configuration", path.display())
            })?,
            None => infer_siglip(&file, prefix)?,
        };
        let reader = TensorReader::new(&file, prefix, device);
        Arc::new(Siglip::load(&reader, cfg, name)?)
    } else {
        bail!(
            "{} holds neither a DINOv2 nor a SigLIP vision model (no `embeddings.cls_token` or \
             `vision_model.embeddings.patch_embedding.weight`)",
            path.display()
        );
    };
    Ok(encoder)
}

/// Resolves and loads an encoder by the name a user gave.
pub fn load(spec: Option<&str>, device: &Device) -> Result<Arc<dyn VisionEncoder>> {
    let (path, name) = resolve(spec)?;
    load_file(&path, &name, device).with_context(|| format!("cannot load encoder `{name}`"))
}

fn count_layers(file: &WeightFile, prefix: &str, suffix: &str) -> usize {
    (0..).take_while(|i| file.contains(&format!("{prefix}{i}.{suffix}"))).count()
}

/// Dimension `i` of a tensor's shape; the file may give it fewer dimensions than expected.
fn dim_of(file: &WeightFile, name: &str, i: usize) -> Result<usize> {
    let path = file.path().display();
    let shape = file.shape(name).with_context(|| format!("{path}: missing tensor `{name}`"))?;
    shape.get(i).copied().with_context(|| {
        format!(
            "{path}: tensor `{name}` has shape {}, too few dimensions",
            clip(&format!("{shape:?}"))
        )
    })
}

/// Derives a DINOv2 configuration from tensor shapes (heads assume the released 64-wide heads).
fn infer_dinov2(file: &WeightFile, p: &str) -> Result<Dinov2Config> {
    let d = dim_of(file, &format!("{p}embeddings.cls_token"), 2)?;
    let patch = dim_of(file, &format!("{p}embeddings.patch_embeddings.projection.weight"), 2)?;
    // The CLS entry, then the patch grid.
    let table = format!("{p}embeddings.position_embeddings");
    let positions = dim_of(file, &table, 1)?
        .checked_sub(1)
        .with_context(|| format!("{}: tensor `{table}` has no entries", file.path().display()))?;
    let grid = (positions as f64).sqrt() as usize;
    let layers = count_layers(file, &format!("{p}encoder.layer."), "norm1.weight");
    let swiglu = file.contains(&format!("{p}encoder.layer.0.mlp.weights_in.weight"));
    let registers = file.shape(&format!("{p}embeddings.register_tokens"));
    let registers = registers.and_then(|s| s.get(1).copied()).unwrap_or(0);
    let mlp_ratio = if swiglu {
        4.0
    } else {
        dim_of(file, &format!("{p}encoder.layer.0.mlp.fc1.weight"), 0)? as f64 / d as f64
    };
    Ok(Dinov2Config {
        hidden_size: d,
        num_hidden_layers: layers,
        num_attention_heads: (d / 64).max(1),
        mlp_ratio,
        patch_size: patch,
        image_size: grid * patch,
        layer_norm_eps: 1e-6,
        use_swiglu_ffn: swiglu,
        num_register_tokens: registers,
        qkv_bias: file.contains(&format!("{p}encoder.layer.0.attention.attention.query.bias")),
        hidden_act: "gelu".into(),
        num_channels: 3,
    })
}

/// Derives a SigLIP configuration from tensor shapes (heads as in the released checkpoints).
fn infer_siglip(file: &WeightFile, p: &str) -> Result<SiglipConfig> {
    let conv = format!("{p}embeddings.patch_embedding.weight");
    let (d, patch) = (dim_of(file, &conv, 0)?, dim_of(file, &conv, 2)?);
    let positions = dim_of(file, &format!("{p}embeddings.position_embedding.weight"), 0)?;
    let grid = (positions as f64).sqrt() as usize;
    let intermediate = dim_of(file, &format!("{p}encoder.layers.0.mlp.fc1.weight"), 0)?;
    let heads = if d == 1152 { 16 } else { (d / 64).max(1) };
    Ok(SiglipConfig {
        hidden_size: d,
        intermediate_size: intermediate,
        num_hidden_layers: count_layers(file, &format!("{p}encoder.layers."), "layer_norm1.weight"),
        num_attention_heads: heads,
        patch_size: patch,
        image_size: grid * patch,
        layer_norm_eps: 1e-6,
        hidden_act: "gelu_pytorch_tanh".into(),
        num_channels: 3,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_are_recognised() {
        assert!(looks_like_repo_id("facebook/dinov2-base"));
        assert!(looks_like_repo_id("google/siglip2-base-patch16-224"));
        assert!(!looks_like_repo_id("weights.safetensors"));
        assert!(!looks_like_repo_id("a/b/c"));
        assert!(!looks_like_repo_id("dir/model.safetensors"));
    }
}
