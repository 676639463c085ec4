//! The app's state, separate from its drawing: the saved session (open images, recipes,
//! settings, panel layout) and the documents in memory (pictures, latents, edit histories).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use image::Rgb32FImage;
use serde::{Deserialize, Serialize};

use super::composite::FullRes;
use crate::backend::BackendChoice;
use crate::composite::{CompositeMode, CompositeOptions};
use crate::edit::history::History;
use crate::edit::recipe::Recipe;
use crate::fsutil::write_atomic;
use crate::generator::{SampleOptions, Sampler};
use crate::grid::Grid;
use crate::text::json_error;

/// Session file format version.
pub const SESSION_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ThemeChoice {
    #[default]
    Dark,
    Light,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackendSetting {
    #[default]
    Auto,
    Cpu,
    Wgpu,
}

impl BackendSetting {
    pub fn choice(self) -> BackendChoice {
        match self {
            Self::Auto => BackendChoice::Auto,
            Self::Cpu => BackendChoice::Cpu,
            Self::Wgpu => BackendChoice::Wgpu,
        }
    }

    pub fn from_choice(choice: BackendChoice) -> Self {
        match choice {
            BackendChoice::Auto => Self::Auto,
            BackendChoice::Cpu => Self::Cpu,
            BackendChoice::Wgpu => Self::Wgpu,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Auto => "auto (GPU if present, else CPU)",
            Self::Cpu => "CPU",
            Self::Wgpu => "wgpu (any adapter)",
        }
    }
}

/// How the canvas shows the original, the reconstruction and the edited result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CanvasMode {
    #[default]
    SideBySide,
    /// Original and edited result in one frame, split by a draggable line.
    Slider,
}

/// What a drag on the canvas does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CanvasTool {
    /// Paint on the latent with the brush.
    #[default]
    Brush,
    /// Move the view.
    Pan,
}

/// Heatmap drawn over the canvas images.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Overlay {
    #[default]
    None,
    /// Similarity of the hovered token to every token.
    Similarity,
    /// Encoder features against restored features.
    Semantic,
    /// Encoder features against features of the regenerated image.
    Cycle,
}

/// What the brush does where it paints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BrushKind {
    /// Paste the source image's latent.
    #[default]
    Transplant,
    /// Add seeded Gaussian noise.
    Noise,
    /// Blur the latent.
    Smooth,
    /// Scale the selected channel.
    Channel,
}

impl BrushKind {
    pub const ALL: [BrushKind; 4] = [Self::Transplant, Self::Noise, Self::Smooth, Self::Channel];

    pub fn label(self) -> &'static str {
        match self {
            Self::Transplant => "Transplant",
            Self::Noise => "Noise",
            Self::Smooth => "Smooth",
            Self::Channel => "Channel",
        }
    }

    pub fn tooltip(self) -> &'static str {
        match self {
            Self::Transplant => "Paint the source image's latent into this one",
            Self::Noise => "Paint seeded Gaussian noise into the latent (strength = sigma)",
            Self::Smooth => "Blur the latent under the brush (strength = blur radius)",
            Self::Channel => "Scale the selected channel under the brush by the channel factor",
        }
    }
}

/// Inspector views.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum InspectorView {
    #[default]
    FeaturesPca,
    LatentPca,
    RestoredPca,
    Channels,
    Similarity,
    Semantic,
    Cycle,
    Metrics,
}

impl InspectorView {
    pub const ALL: [InspectorView; 8] = [
        Self::FeaturesPca,
        Self::LatentPca,
        Self::RestoredPca,
        Self::Channels,
        Self::Similarity,
        Self::Semantic,
        Self::Cycle,
        Self::Metrics,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::FeaturesPca => "Features PCA",
            Self::LatentPca => "Latent PCA",
            Self::RestoredPca => "Restored PCA",
            Self::Channels => "Channel grid",
            Self::Similarity => "Similarity",
            Self::Semantic => "Semantic map",
            Self::Cycle => "Cycle map",
            Self::Metrics => "Metrics",
        }
    }

    pub fn tooltip(self) -> &'static str {
        match self {
            Self::FeaturesPca => "Encoder features, three principal components as RGB",
            Self::LatentPca => "The FAE latent (edited), three principal components as RGB",
            Self::RestoredPca => {
                "Features restored from the edited latent, in the encoder features' PCA basis"
            }
            Self::Channels => "Every latent channel as a heatmap; click one to pick it",
            Self::Similarity => {
                "Hover a token: its cosine similarity to every token, here and in a second image"
            }
            Self::Semantic => "Semantic preservation: cosine of encoder vs restored features",
            Self::Cycle => {
                "Cycle consistency: cosine of encoder features before and after regeneration"
            }
            Self::Metrics => "PSNR, SSIM, cosines, timings and channel statistics",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BrushSettings {
    pub kind: BrushKind,
    /// Radius in fractions of the image width.
    pub radius: f32,
    pub strength: f32,
    pub hardness: f32,
}

impl Default for BrushSettings {
    fn default() -> Self {
        Self { kind: BrushKind::Noise, radius: 0.08, strength: 0.8, hardness: 0.5 }
    }
}

/// Fine-tuning settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainSettings {
    pub data: Option<PathBuf>,
    pub out: Option<PathBuf>,
    pub steps: u64,
    pub batch: usize,
    pub size: usize,
    /// `fae`, `pixel` or `all`.
    pub stage: String,
    /// Start from: `builtin`, `current` (the model in use), `checkpoint`, `scratch`.
    pub start: String,
    pub checkpoint: Option<PathBuf>,
    pub log_every: u64,
    pub val_every: u64,
    pub perceptual: f64,
    pub cache: Option<PathBuf>,
}

impl Default for TrainSettings {
    fn default() -> Self {
        Self {
            data: None,
            out: None,
            steps: 500,
            batch: 8,
            size: 224,
            stage: "all".into(),
            start: "current".into(),
            checkpoint: None,
            log_every: 5,
            val_every: 100,
            perceptual: 0.1,
            cache: None,
        }
    }
}

/// The Generate panel's choices.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerateSettings {
    /// A class of the generator; `None`: unconditional.
    pub class: Option<String>,
    pub sampler: Sampler,
    pub steps: usize,
    /// Guidance scale (1: no guidance).
    pub cfg: f64,
    /// Guidance applies while `lo <= t <= hi`.
    pub cfg_interval: (f64, f64),
    pub seed: u64,
    /// Images per run.
    pub n: usize,
}

impl Default for GenerateSettings {
    fn default() -> Self {
        let o = SampleOptions::default();
        Self {
            class: None,
            sampler: o.sampler,
            steps: 25,
            cfg: 1.5,
            cfg_interval: o.cfg_interval,
            seed: 0,
            n: 4,
        }
    }
}

impl GenerateSettings {
    pub fn options(&self) -> SampleOptions {
        SampleOptions {
            sampler: self.sampler,
            steps: self.steps,
            cfg: self.cfg,
            cfg_interval: self.cfg_interval,
            ..SampleOptions::default()
        }
    }
}

/// Everything the user chose that outlives a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub theme: ThemeChoice,
    pub backend: BackendSetting,
    /// An FAE checkpoint; the built-in model when `None`.
    pub model: Option<PathBuf>,
    /// Working resolution in pixels; the model's training size when `None`.
    pub size: Option<usize>,
    pub canvas: CanvasMode,
    pub tool: CanvasTool,
    pub show_grid: bool,
    pub overlay: Overlay,
    pub inspector: InspectorView,
    pub brush: BrushSettings,
    pub show_library: bool,
    pub show_tools: bool,
    pub show_inspector: bool,
    /// Draw token maps with our WGSL shaders when a wgpu renderer is available.
    pub gpu_maps: bool,
    pub train: TrainSettings,
    /// A generator checkpoint; the built-in one when `None`.
    pub generator: Option<PathBuf>,
    pub generate: GenerateSettings,
    /// How the edit is composited into the photo (the Edit panel).
    pub composite: CompositeOptions,
    /// Show the plain decode instead of the composited photo (View menu, canvas toolbar).
    pub show_decode: bool,
}

/// The app's composite settings at first: the decoded edit pasted through a 32 px feather.
pub fn default_composite() -> CompositeOptions {
    CompositeOptions { mode: CompositeMode::Mask, ..Default::default() }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            theme: ThemeChoice::Dark,
            backend: BackendSetting::Auto,
            model: None,
            size: None,
            canvas: CanvasMode::SideBySide,
            tool: CanvasTool::Brush,
            show_grid: false,
            overlay: Overlay::None,
            inspector: InspectorView::FeaturesPca,
            brush: BrushSettings::default(),
            show_library: true,
            show_tools: true,
            show_inspector: true,
            gpu_maps: true,
            train: TrainSettings::default(),
            generator: None,
            generate: GenerateSettings::default(),
            composite: default_composite(),
            show_decode: false,
        }
    }
}

/// The app's own folder in the OS's data folder, through `dirs`: `$XDG_DATA_HOME/fae-studio`
/// (`~/.local/share/fae-studio`) on Linux, `~/Library/Application Support/fae-studio` on macOS,
/// `%APPDATA%\fae-studio` on Windows. `None` where the OS has none.
pub fn app_dir() -> Option<PathBuf> {
    dirs::data_dir().map(|d| d.join("fae-studio"))
}

/// What is saved between runs (and after every change, so a crash loses nothing).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Session {
    pub version: u32,
    /// Open images, in library order.
    pub images: Vec<PathBuf>,
    pub active: Option<PathBuf>,
    /// Each image's applied edits, keyed by its path.
    pub recipes: BTreeMap<String, Recipe>,
    pub settings: Settings,
}

impl Default for Session {
    fn default() -> Self {
        Self {
            version: SESSION_VERSION,
            images: Vec::new(),
            active: None,
            recipes: BTreeMap::new(),
            settings: Settings::default(),
        }
    }
}

impl Session {
    /// The default session file (the open images, their edits and every setting), in the app's
    /// folder ([`app_dir`]).
    pub fn default_path() -> Option<PathBuf> {
        app_dir().map(|d| d.join("session.json"))
    }

    /// Reads a session file; `Ok(None)` when there is none yet.
    pub fn load(path: &Path) -> Result<Option<Self>> {
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read session {}", path.display()))?;
        let session: Session = serde_json::from_str(&text)
            .map_err(json_error)
            .with_context(|| format!("session {} is damaged", path.display()))?;
        Ok(Some(session))
    }

    /// Writes the session atomically (never a half-written file).
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        write_atomic(path, serde_json::to_string_pretty(self)?.as_bytes())
    }
}

/// An image taken through the model: what the inspectors and the canvas show.
#[derive(Clone, Debug)]
pub struct Analysis {
    /// The picture the encoder saw (working size).
    pub image: Rgb32FImage,
    /// Encoder features `[gh, gw, D]`.
    pub features: Grid,
    /// Normalised latent `[gh, gw, C]`.
    pub latent: Grid,
    /// The unedited reconstruction.
    pub recon: Rgb32FImage,
    /// Features restored from the unedited latent.
    pub restored: Grid,
    /// Encoder features of the reconstruction (cycle).
    pub cycle: Grid,
    pub psnr: f64,
    pub ssim: f64,
    pub feature_cosine: f64,
    pub cycle_cosine: f64,
    pub encode_ms: f64,
    pub decode_ms: f64,
}

/// The regenerated result of the edited latent.
#[derive(Clone, Debug)]
pub struct Edited {
    pub key: u64,
    pub latent: Arc<Grid>,
    /// The edits' token mask (where the composite takes the decode).
    pub mask: Arc<Vec<f32>>,
    pub image: Rgb32FImage,
    pub restored: Grid,
    pub ms: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum DocStatus {
    Queued,
    Ready,
    Failed(String),
}

/// An open image.
pub struct Document {
    pub id: u64,
    pub path: PathBuf,
    pub name: String,
    pub status: DocStatus,
    pub analysis: Option<Arc<Analysis>>,
    pub history: Option<History>,
    /// A recipe from the session or a file, applied once the image and its sources are ready.
    pub pending_recipe: Option<Recipe>,
    pub edited: Option<Edited>,
    /// The key of the last latent sent for regeneration.
    pub requested: Option<u64>,
    /// The photo and the edit composited into it, at full resolution.
    pub full: Option<FullRes>,
    /// The key of the last composite asked for.
    pub composite_requested: Option<u64>,
    /// Bumped whenever anything drawn from this document changes.
    pub version: u64,
    pub thumb: Option<egui::TextureHandle>,
    /// Why the thumbnail could not be made.
    pub thumb_error: Option<String>,
}

impl Document {
    pub fn new(id: u64, path: PathBuf) -> Self {
        let name = path
            .file_name()
            .map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
        Self {
            id,
            path,
            name,
            status: DocStatus::Queued,
            analysis: None,
            history: None,
            pending_recipe: None,
            edited: None,
            requested: None,
            full: None,
            composite_requested: None,
            version: 0,
            thumb: None,
            thumb_error: None,
        }
    }

    /// The key recipes use for this image (its path as text).
    pub fn key(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }

    pub fn is_ready(&self) -> bool {
        self.status == DocStatus::Ready && self.analysis.is_some()
    }
}

/// A message shown in the window.
#[derive(Clone, Debug)]
pub struct Notice {
    pub text: String,
    pub error: bool,
    pub at: std::time::Instant,
}
