//! Moving module parameters to and from safetensors by module path, with their parameter ids,
//! so optimizer state (keyed by id) survives a save and a resume.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::prelude::*;

use crate::weights::WeightFile;

/// One parameter: module path, id, shape and values.
pub struct NamedParam {
    pub path: String,
    pub id: u64,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

#[derive(Default)]
struct Collector {
    path: Vec<String>,
    params: Vec<NamedParam>,
}

impl ModuleVisitor for Collector {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let tensor = param.val();
        let shape = tensor.dims().to_vec();
        let values = tensor.into_data().try_into_vec_as::<f32>().expect("float parameter");
        self.params.push(NamedParam {
            path: self.path.join("."),
            id: param.id.val(),
            shape,
            values,
        });
    }
}

/// All float parameters of a module, on the host.
pub fn collect<M: Module>(module: &M) -> Vec<NamedParam> {
    let mut collector = Collector::default();
    module.visit(&mut collector);
    collector.params
}

struct Loader<'a> {
    path: Vec<String>,
    file: &'a WeightFile,
    prefix: &'a str,
    ids: &'a BTreeMap<String, u64>,
    error: Option<anyhow::Error>,
}

impl ModuleMapper for Loader<'_> {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if self.error.is_some() {
            return param;
        }
        let path = self.path.join(".");
        let shape = param.lazy_shape().to_vec();
        match self.file.read_f32(&format!("{}{path}", self.prefix), &shape) {
            Ok(values) => {
                let device = param.lazy_device();
                let tensor = Tensor::from_data(TensorData::new(values, shape), &device);
                let id = self.ids.get(&path).map_or_else(ParamId::new, |&id| ParamId::from(id));
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
    let mut loader = Loader { path: Vec::new(), file, prefix, ids, error: None };
    let module = module.map(&mut loader);
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
            "{}: unexpected tensor `{extra}`: the checkpoint does not match its configuration",
            file.path().display()
        );
    }
    Ok(())
}

#[derive(Default)]
struct PathCollector {
    path: Vec<String>,
    paths: Vec<String>,
}

impl ModuleVisitor for PathCollector {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, _param: &Param<Tensor<D>>) {
        self.paths.push(self.path.join("."));
    }
}

/// Module paths of all float parameters, without reading their values.
pub fn collect_paths<M: Module>(module: &M) -> Vec<String> {
    let mut collector = PathCollector::default();
    module.visit(&mut collector);
    collector.paths
}
