//! Moving module parameters to and from safetensors by module path, with their parameter ids,
//! so optimizer state (keyed by id) survives a save and a resume.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result, bail};
use burn::module::{Module, Param, ParamId};
use burn::prelude::*;

use crate::fsutil::write_atomic;
use crate::param_paths::{self, PathMapper, PathVisitor};
use crate::text::{clip, json_error};
use crate::weights::WeightFile;

/// One parameter: module path, id, shape and values.
pub struct NamedParam {
    pub path: String,
    pub id: u64,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

#[derive(Default)]
struct Collector(Vec<NamedParam>);

impl PathVisitor for Collector {
    fn visit<const D: usize>(&mut self, path: &str, param: &Param<Tensor<D>>) {
        let tensor = param.val();
        let shape = tensor.dims().to_vec();
        let values = tensor.into_data().try_into_vec_as::<f32>().expect("float parameter");
        self.0.push(NamedParam { path: path.to_string(), id: param.id.val(), shape, values });
    }
}

/// All float parameters of a module, on the host.
pub fn collect<M: Module>(module: &M) -> Vec<NamedParam> {
    param_paths::visit(module, Collector::default()).0
}

struct Loader<'a> {
    file: &'a WeightFile,
    prefix: &'a str,
    ids: &'a BTreeMap<String, u64>,
    error: Option<anyhow::Error>,
}

impl PathMapper for Loader<'_> {
    fn map<const D: usize>(&mut self, path: &str, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if self.error.is_some() {
            return param;
        }
        // The lazy shape and device: a parameter not yet initialised is never computed.
        let shape = param.lazy_shape().to_vec();
        match self.file.read_f32(&format!("{}{path}", self.prefix), &shape) {
            Ok(values) => {
                let device = param.lazy_device();
                let tensor = Tensor::from_data(TensorData::new(values, shape), &device);
                let id = self.ids.get(path).map_or_else(ParamId::new, |&id| ParamId::from(id));
                param.transform_for_load(tensor, id)
            }
            Err(e) => {
                self.error = Some(e);
                param
            }
        }
    }
}

/// Loads every float parameter of `module` from `file` tensors named `prefix + path`, restoring
/// parameter ids from `ids` where given. Fails naming the first missing or misshapen tensor.
pub fn load<M: Module>(
    module: M,
    file: &WeightFile,
    prefix: &str,
    ids: &BTreeMap<String, u64>,
) -> Result<M> {
    let (module, loader) = param_paths::map(module, Loader { file, prefix, ids, error: None });
    match loader.error {
        Some(e) => Err(e),
        None => Ok(module),
    }
}

/// Checks that `file` holds no tensors under `prefix` that `module` lacks.
pub fn check_unused<M: Module>(module: &M, file: &WeightFile, prefix: &str) -> Result<()> {
    let known: std::collections::HashSet<String> =
        collect_paths(module).into_iter().map(|p| format!("{prefix}{p}")).collect();
    if let Some(extra) = file.names().find(|n| n.starts_with(prefix) && !known.contains(*n)) {
        bail!(
            "{}: unexpected tensor `{}`: the checkpoint does not match its configuration",
            file.path().display(),
            clip(extra)
        );
    }
    Ok(())
}

struct PathCollector(Vec<String>);

impl PathVisitor for PathCollector {
    fn visit<const D: usize>(&mut self, path: &str, _param: &Param<Tensor<D>>) {
        self.0.push(path.to_string());
    }
}

/// Module paths of all float parameters, without reading their values.
pub fn collect_paths<M: Module>(module: &M) -> Vec<String> {
    param_paths::visit(module, PathCollector(Vec::new())).0
}

/// Builds a checkpoint file: inference weights under `model.`, optionally the raw training
/// weights under `train.` with their parameter ids and the optimizer state, and metadata.
pub struct CheckpointWriter {
    tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>,
    metadata: HashMap<String, String>,
}

impl CheckpointWriter {
    pub fn new(format: &str) -> Self {
        Self { tensors: Vec::new(), metadata: HashMap::from([("format".into(), format.into())]) }
    }

    pub fn meta(&mut self, key: &str, value: String) {
        self.metadata.insert(key.into(), value);
    }

    /// Every float parameter of `module` as `prefix + path`; `f16` halves the size.
    pub fn module<M: Module>(&mut self, prefix: &str, module: &M, f16: bool) {
        for p in collect(module) {
            let (dtype, bytes) = if f16 {
                let halves: Vec<half::f16> =
                    p.values.iter().map(|&v| half::f16::from_f32(v)).collect();
                (safetensors::Dtype::F16, bytemuck::cast_slice(&halves).to_vec())
            } else {
                (safetensors::Dtype::F32, bytemuck::cast_slice(&p.values).to_vec())
            };
            self.tensors.push((format!("{prefix}{}", p.path), dtype, p.shape, bytes));
        }
    }

    pub fn f32(&mut self, name: &str, shape: Vec<usize>, values: &[f32]) {
        let bytes = bytemuck::cast_slice(values).to_vec();
        self.tensors.push((name.into(), safetensors::Dtype::F32, shape, bytes));
    }

    /// What `--resume` needs: raw weights with their ids, optimizer bytes, free-form JSON state.
    pub fn train_state<M: Module>(
        &mut self,
        weights: &M,
        optimizer: Vec<u8>,
        state: &serde_json::Value,
    ) {
        self.trained("train.", weights, "optimizer", "param_ids", optimizer);
        self.meta("train_state", state.to_string());
    }

    /// A second trained module (e.g. a discriminator) under `name.`, with its optimizer state in
    /// `name_optimizer` and its parameter ids in the `name_param_ids` metadata.
    pub fn aux_state<M: Module>(&mut self, name: &str, module: &M, optimizer: Vec<u8>) {
        let (prefix, opt, ids) =
            (format!("{name}."), format!("{name}_optimizer"), format!("{name}_param_ids"));
        self.trained(&prefix, module, &opt, &ids, optimizer);
    }

    /// f32 weights under `prefix`, the optimizer bytes as tensor `optimizer_key` and the
    /// parameter ids (which key the optimizer state) as metadata `ids_key`.
    fn trained<M: Module>(
        &mut self,
        prefix: &str,
        module: &M,
        optimizer_key: &str,
        ids_key: &str,
        optimizer: Vec<u8>,
    ) {
        let mut ids = BTreeMap::new();
        for p in collect(module) {
            ids.insert(p.path.clone(), p.id);
            let bytes = bytemuck::cast_slice(&p.values).to_vec();
            self.tensors.push((
                format!("{prefix}{}", p.path),
                safetensors::Dtype::F32,
                p.shape,
                bytes,
            ));
        }
        let len = optimizer.len();
        self.tensors.push((optimizer_key.into(), safetensors::Dtype::U8, vec![len], optimizer));
        self.meta(ids_key, serde_json::to_string(&ids).expect("ids serialise"));
    }

    /// Writes atomically.
    pub fn write(self, path: &Path) -> Result<()> {
        let views = self
            .tensors
            .iter()
            .map(|(name, dtype, shape, bytes)| {
                safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)
                    .map(|v| (name.clone(), v))
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let bytes = safetensors::serialize(views, Some(self.metadata))?;
        write_atomic(path, &bytes)
    }
}

/// Parameter ids saved by [`CheckpointWriter::train_state`] (empty when there are none).
pub fn param_ids(file: &WeightFile) -> Result<BTreeMap<String, u64>> {
    ids_metadata(file, "param_ids")
}

/// The parameter ids in metadata `key` (empty when there is none).
fn ids_metadata(file: &WeightFile, key: &str) -> Result<BTreeMap<String, u64>> {
    match file.metadata().get(key) {
        Some(text) => serde_json::from_str(text)
            .map_err(json_error)
            .with_context(|| format!("{}: invalid `{key}` metadata", file.path().display())),
        None => Ok(BTreeMap::new()),
    }
}

pub fn has_train_state(file: &WeightFile) -> bool {
    file.contains("optimizer")
}

pub fn optimizer_bytes(file: &WeightFile) -> Result<Option<Vec<u8>>> {
    if !has_train_state(file) {
        return Ok(None);
    }
    let st = safetensors::SafeTensors::deserialize(file.bytes())?;
    Ok(Some(st.tensor("optimizer")?.data().to_vec()))
}

pub fn train_state(file: &WeightFile) -> Option<serde_json::Value> {
    file.metadata().get("train_state").and_then(|s| serde_json::from_str(s).ok())
}

/// A module saved by [`CheckpointWriter::aux_state`] with its optimizer bytes, if present.
pub fn load_aux<M: Module>(
    file: &WeightFile,
    name: &str,
    module: M,
) -> Result<Option<(M, Vec<u8>)>> {
    let key = format!("{name}_optimizer");
    if !file.contains(&key) {
        return Ok(None);
    }
    let ids = ids_metadata(file, &format!("{name}_param_ids"))?;
    let module = load(module, file, &format!("{name}."), &ids)?;
    let st = safetensors::SafeTensors::deserialize(file.bytes())?;
    Ok(Some((module, st.tensor(&key)?.data().to_vec())))
}
