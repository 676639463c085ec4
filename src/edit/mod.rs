//! The editing engine: pure edits on latent grids, recipes that replay them, undo/redo history
//! and soft masks. Shared by the app and the command line, so everything can be scripted.

pub mod filter;
pub mod history;
pub mod mask;
pub mod ops;
pub mod recipe;
