//! FAE Studio: frozen pretrained vision encoders, one-attention-layer feature auto-encoding,
//! latent editing and regeneration, on any GPU through wgpu or on the CPU.

pub mod app;
pub mod assets;
pub mod backend;
pub mod bench;
pub mod bug;
pub mod composite;
pub mod edit;
pub mod encoders;
pub mod evaluate;
pub mod fae;
pub mod features;
pub mod fsutil;
pub mod generator;
pub mod grid;
pub mod heldout;
pub mod image_io;
pub mod inspect;
pub mod metrics;
pub mod onnx;
pub mod param_paths;
pub mod pca;
pub mod pipeline;
pub mod rng;
pub mod text;
pub mod train;
pub mod weights;
