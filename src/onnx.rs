//! Just enough of ONNX to read a model's graph and float weights: a hand-declared subset of
//! `onnx.proto` (field numbers as in the ONNX repository) decoded with prost. Fields not declared
//! here (attributes, value infos, opsets, ...) are skipped by the decoder.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use prost::Message;
use prost::bytes::Bytes;

use crate::text::clip;

#[derive(Clone, PartialEq, Message)]
pub struct ModelProto {
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub op_type: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    #[prost(string, tag = "8")]
    pub name: String,
    #[prost(bytes = "bytes", tag = "9")]
    pub raw_data: Bytes,
    #[prost(int32, tag = "14")]
    pub data_location: i32,
}

/// `TensorProto.DataType.FLOAT`.
pub const FLOAT: i32 = 1;
/// `TensorProto.DataLocation.EXTERNAL`.
const EXTERNAL: i32 = 1;

/// A float tensor: shape and values.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Reads an ONNX model file (its graph only).
pub fn read_graph(path: &Path) -> Result<GraphProto> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let model = ModelProto::decode(Bytes::from(bytes))
        .with_context(|| format!("{} is not an ONNX model", path.display()))?;
    model.graph.with_context(|| format!("{} holds no graph", path.display()))
}

impl TensorProto {
    /// The values of a float tensor stored in the file (raw little-endian bytes or `float_data`).
    pub fn to_array(&self) -> Result<Array> {
        let name = clip(&self.name);
        if self.data_type != FLOAT {
            bail!("initializer `{name}` is not float32 (type {})", self.data_type);
        }
        if self.data_location == EXTERNAL {
            bail!("initializer `{name}` is stored in an external file, which is not supported");
        }
        let shape = self
            .dims
            .iter()
            .map(|&d| usize::try_from(d).with_context(|| format!("`{name}`: bad dimension {d}")))
            .collect::<Result<Vec<_>>>()?;
        let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        let data: Vec<f32> = if self.raw_data.is_empty() {
            self.float_data.clone()
        } else {
            self.raw_data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        };
        let bytes_ok = self.raw_data.is_empty() || self.raw_data.len().is_multiple_of(4);
        if count != Some(data.len()) || !bytes_ok {
            let shape = clip(&format!("{shape:?}")).into_owned();
            bail!("initializer `{name}`: {} values for shape {shape}", data.len());
        }
        Ok(Array { shape, data })
    }
}

impl GraphProto {
    /// Every float initializer by name.
    pub fn float_initializers(&self) -> Result<HashMap<String, Array>> {
        self.initializer
            .iter()
            .filter(|t| t.data_type == FLOAT)
            .map(|t| Ok((t.name.clone(), t.to_array()?)))
            .collect()
    }
}
