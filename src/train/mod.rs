//! Training and fine-tuning FAE on a folder of images.
//!
//! Stages: `fae` trains the one-layer encoder and the feature decoder on the frozen encoder's
//! features; `pixel` trains the pixel decoder, first on noisy encoder features, then on the
//! feature decoder's outputs (the paper's two stages); `all` runs both in turn.

pub mod batch;
pub mod data;
pub mod discriminator;
pub mod loss;
pub mod options;
pub mod run;
pub mod shared;
pub mod step;
pub mod validate;

pub use options::{LrSchedule, Stage, TrainOptions};
pub use run::train;
