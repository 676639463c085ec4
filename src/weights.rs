//! Safe loading of `.safetensors` checkpoints.
//!
//! Checkpoints come from users and from the internet, so nothing here trusts the file: pickles are
//! refused before reading, the JSON header is bounded, and every tensor is checked for name, dtype
//! and shape against what the model expects, with the offending tensor named in the error.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::Param;
use burn::tensor::{Device, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

use crate::text::{clip, clip_message};

/// Largest JSON header we accept. Real checkpoints with thousands of tensors stay far below it.
const MAX_HEADER_BYTES: u64 = 16 * 1024 * 1024;

/// Refuses formats that would execute code when loaded, with a message on how to convert them.
pub fn refuse_pickle(path: &Path) -> Result<()> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    // A safetensors file starts with an 8-byte length then `{`; pickles start with 0x80 and a
    // protocol number, PyTorch's zip checkpoints with `PK`.
    let mut head = [0u8; 9];
    let read = File::open(path).and_then(|mut f| f.read(&mut head)).unwrap_or(0);
    let is_zip_or_pickle = read >= 2
        && (head.starts_with(b"PK\x03\x04") || (head[0] == 0x80 && (2..=5).contains(&head[1])))
        && !(read == 9 && head[8] == b'{');
    if matches!(ext.as_str(), "pt" | "pth" | "bin" | "ckpt" | "pkl") || is_zip_or_pickle {
        bail!(
            "{} is a pickled PyTorch checkpoint, which can run arbitrary code and is never loaded; \
             convert it first: python -c \"import torch, safetensors.torch as st; \
             st.save_file(torch.load('IN', weights_only=True), 'OUT.safetensors')\"",
            path.display()
        );
    }
    Ok(())
}

/// A memory-read safetensors file whose tensors are taken one by one by name.
pub struct WeightFile {
    path: PathBuf,
    bytes: Vec<u8>,
    metadata: BTreeMap<String, String>,
    names: BTreeSet<String>,
}

impl WeightFile {
    pub fn open(path: &Path) -> Result<Self> {
        if path.is_dir() {
            bail!("{} is a directory, not a .safetensors file", path.display());
        }
        refuse_pickle(path)?;
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        Self::from_bytes(path.to_path_buf(), bytes)
    }

    pub fn from_bytes(path: PathBuf, bytes: Vec<u8>) -> Result<Self> {
        if bytes.len() < 8 {
            bail!("{} is empty or truncated (not a safetensors file)", path.display());
        }
        let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        if header_len > MAX_HEADER_BYTES || header_len + 8 > bytes.len() as u64 {
            bail!(
                "{} is truncated or not a safetensors file (header of {header_len} bytes, file of {})",
                path.display(),
                bytes.len()
            );
        }
        let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| {
            let e = clip_message(&e.to_string()).into_owned();
            anyhow::anyhow!("{} is truncated or not a valid safetensors file: {e}", path.display())
        })?;
        let metadata = meta.metadata().clone().unwrap_or_default().into_iter().collect();
        // Deserialising validates that every tensor's byte range lies inside the file.
        let st = SafeTensors::deserialize(&bytes).map_err(|e| {
            let e = clip_message(&e.to_string()).into_owned();
            anyhow::anyhow!("{} is truncated or corrupt: {e}", path.display())
        })?;
        let names = st.names().into_iter().map(|s| s.to_string()).collect();
        Ok(Self { path, bytes, metadata, names })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(|s| s.as_str())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(name)
    }

    /// Shape of a tensor, if present.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        let st = SafeTensors::deserialize(&self.bytes).ok()?;
        st.tensor(name).ok().map(|t| t.shape().to_vec())
    }

    /// Reads a float tensor as f32, checking its shape.
    pub fn read_f32(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let st = SafeTensors::deserialize(&self.bytes)?;
        // Some callers pass names read from the file.
        let shown = clip(name);
        let view = st
            .tensor(name)
            .map_err(|_| anyhow::anyhow!("{}: missing tensor `{shown}`", self.path.display()))?;
        if view.shape() != expected {
            bail!(
                "{}: tensor `{shown}` has shape {}, expected {expected:?}",
                self.path.display(),
                clip(&format!("{:?}", view.shape()))
            );
        }
        let data = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => {
                data.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
            }
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::F64 => data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                .collect(),
            other => bail!(
                "{}: tensor `{shown}` has dtype {other:?}, expected a float type (f32, f16, bf16)",
                self.path.display()
            ),
        };
        if values.iter().any(|v| !v.is_finite()) {
            bail!("{}: tensor `{shown}` holds NaN or infinite values", self.path.display());
        }
        Ok(values)
    }

    /// Reads a tensor onto `device` with the given shape.
    pub fn tensor<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        device: &Device,
    ) -> Result<Tensor<D>> {
        let values = self.read_f32(name, &shape)?;
        Ok(Tensor::from_data(TensorData::new(values, shape), device))
    }

    pub fn param<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        device: &Device,
    ) -> Result<Param<Tensor<D>>> {
        Ok(Param::from_tensor(self.tensor(name, shape, device)?))
    }
}

/// Tracks which tensors a model consumed, so that stray or misnamed ones are reported.
pub struct TensorReader<'a> {
    file: &'a WeightFile,
    prefix: String,
    used: std::cell::RefCell<BTreeSet<String>>,
    device: Device,
}

impl<'a> TensorReader<'a> {
    pub fn new(file: &'a WeightFile, prefix: &str, device: &Device) -> Self {
        Self { file, prefix: prefix.to_string(), used: Default::default(), device: device.clone() }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn file(&self) -> &WeightFile {
        self.file
    }

    pub fn full_name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub fn has(&self, name: &str) -> bool {
        self.file.contains(&self.full_name(name))
    }

    pub fn tensor<const D: usize>(&self, name: &str, shape: [usize; D]) -> Result<Tensor<D>> {
        let full = self.full_name(name);
        self.used.borrow_mut().insert(full.clone());
        self.file.tensor(&full, shape, &self.device)
    }

    pub fn param<const D: usize>(&self, name: &str, shape: [usize; D]) -> Result<Param<Tensor<D>>> {
        Ok(Param::from_tensor(self.tensor(name, shape)?))
    }

    /// Reads a tensor into host memory (for tables that are processed on the CPU first).
    pub fn values(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let full = self.full_name(name);
        self.used.borrow_mut().insert(full.clone());
        self.file.read_f32(&full, shape)
    }

    /// A tensor of `shape`, flattened to `[shape[0], rest]` and stored transposed as
    /// `[rest, shape[0]]`, laid out contiguously: a transposed view would be copied by burn-flex
    /// on every matrix product that uses it.
    pub fn transposed(&self, name: &str, shape: &[usize]) -> Result<Tensor<2>> {
        let values = self.values(name, shape)?;
        let rows = shape[0];
        let cols = shape[1..].iter().product::<usize>();
        let mut out = vec![0.0f32; values.len()];
        // A zero-sized tensor has no rows to move (and `chunks_exact(0)` would panic).
        for (r, row) in values.chunks_exact(cols.max(1)).enumerate() {
            for (c, v) in row.iter().enumerate() {
                out[c * rows + r] = *v;
            }
        }
        Ok(Tensor::from_data(TensorData::new(out, [cols, rows]), &self.device))
    }

    /// A PyTorch `nn.Linear` (weight `[out, in]`) as burn's `[in, out]` layout.
    pub fn linear(
        &self,
        name: &str,
        d_in: usize,
        d_out: usize,
        bias: bool,
    ) -> Result<burn::nn::Linear> {
        let weight = self.transposed(&format!("{name}.weight"), &[d_out, d_in])?;
        let bias = if bias { Some(self.param(&format!("{name}.bias"), [d_out])?) } else { None };
        Ok(burn::nn::Linear { weight: Param::from_tensor(weight), bias })
    }

    /// Names under this reader's prefix that were never consumed, `ignore` prefixes excepted.
    pub fn unused(&self, ignore: &[&str]) -> Vec<String> {
        let used = self.used.borrow();
        self.file
            .names()
            .filter(|n| n.starts_with(&self.prefix) && !used.contains(*n))
            .filter(|n| !ignore.iter().any(|i| n[self.prefix.len()..].starts_with(i)))
            .map(|s| s.to_string())
            .collect()
    }

    /// Fails naming the first tensor the model did not expect.
    pub fn finish(&self, ignore: &[&str]) -> Result<()> {
        let unused = self.unused(ignore);
        if let Some(first) = unused.first() {
            bail!(
                "{}: unexpected tensor `{}` ({} unexpected in all): this checkpoint does not \
                 match the configuration",
                self.file.path().display(),
                clip(first),
                unused.len()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn safetensors_with_header_len(len_low_byte: u8) -> Vec<u8> {
        // A header padded with spaces so that its length's low byte is the given value.
        let mut header = br#"{"__metadata__":{"a":"b"}}"#.to_vec();
        while header.len() % 256 != len_low_byte as usize {
            header.push(b' ');
        }
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend(header);
        bytes
    }

    #[test]
    fn safetensors_whose_length_looks_like_a_pickle_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        for low in [0x80u8, 0x50, 0x20] {
            let path = dir.path().join("m.safetensors");
            std::fs::write(&path, safetensors_with_header_len(low)).unwrap();
            let file = WeightFile::open(&path).unwrap();
            assert_eq!(file.metadata()["a"], "b");
        }
        let pickle = dir.path().join("m.safetensors");
        std::fs::write(&pickle, b"\x80\x04\x95rest of a pickle").unwrap();
        assert!(format!("{:#}", WeightFile::open(&pickle).err().unwrap()).contains("pickled"));
    }
}
