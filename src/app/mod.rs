//! The desktop application: an eframe/egui window on the wgpu renderer.
//!
//! Structure (after egui's demo app): [`AppState`] holds everything the window shows and is
//! saved as the session; one module per panel draws it (`library`, `canvas`, `inspector`, `edit`,
//! `history`, `generate`, `train`, `models`, `status`); [`worker`] owns the model and the
//! generator on a background thread ([`jobs`]: what it does for each job; [`composite`]: the
//! edit composited into the photo there; [`generated`]: how a generated image is kept),
//! [`loader`] lists folders and decodes thumbnails on another;
//! [`gpu`] draws token maps with our WGSL shaders.

pub mod canvas;
pub mod composite;
pub mod edit;
mod edit_panel;
mod editing;
pub mod fallback;
mod fullres;
pub mod generate;
pub mod generated;
pub mod gpu;
pub mod history;
mod input;
pub mod inspector;
mod jobs;
pub mod latency;
pub mod library;
pub mod loader;
pub mod models;
pub mod screenshot;
pub mod state;
pub mod status;
pub mod train;
pub mod window;
pub mod worker;

pub use window::{FaeApp, Renderer, run};

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::BackendChoice;
use crate::edit::history::History;
use crate::edit::recipe::Recipe;
use crate::grid::Grid;
use state::{DocStatus, Document, Edited, Notice, Session, ThemeChoice};
use worker::{Job, ModelInfo, Reply, Worker};

/// How the app starts.
#[derive(Clone, Debug)]
pub struct AppOptions {
    /// Overrides the session's backend when not `None`.
    pub backend: Option<BackendChoice>,
    /// Overrides the session's model.
    pub model: Option<PathBuf>,
    /// Working resolution override.
    pub size: Option<usize>,
    /// Where the session is saved; `None` keeps nothing between runs.
    pub session_path: Option<PathBuf>,
    /// Open the sample photo when the session has no images.
    pub open_sample: bool,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            backend: None,
            model: None,
            size: None,
            session_path: Session::default_path(),
            open_sample: true,
        }
    }
}

/// Environment variable naming an FAE checkpoint to use instead of the built-in model (the app
/// and the `interaction` benchmark read it).
pub const MODEL_ENV: &str = "FAE_STUDIO_MODEL";

/// The sample photo a new user sees first.
pub fn sample_image() -> Option<PathBuf> {
    crate::assets::path("samples/chelsea.png").ok()
}

/// Where the pointer is over a token grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hover {
    pub doc: u64,
    pub y: usize,
    pub x: usize,
}

/// Everything the window shows.
pub struct AppState {
    pub session: Session,
    pub docs: Vec<Document>,
    pub active: Option<usize>,
    next_id: u64,
    pub worker: Worker,
    /// Folder listings and thumbnails, off the window's thread.
    pub loader: loader::Loader,
    next_ticket: u64,
    /// The listing of the images of a restored session, and what to apply once they are open.
    restore: Option<Restore>,
    pub model: Option<ModelInfo>,
    pub model_error: Option<String>,
    /// Bumped on every model load; replies for an older model are dropped.
    pub model_generation: u64,
    pub notices: Vec<Notice>,
    /// How token maps are drawn (our shader's data path, or the CPU).
    pub map_path: gpu::MapPath,
    /// The window's renderer in words: its adapter and graphics API, for the status bar.
    pub renderer: String,
    pub canvas: canvas::CanvasState,
    pub inspector: inspector::InspectorState,
    pub edit: edit::EditState,
    pub train: train::TrainPanel,
    pub models: models::ModelsPanel,
    pub generate: generate::GeneratePanel,
    /// The generator's harmonise results, for `harmonise` edits.
    pub harmonised: edit::HarmoniseCache,
    /// Latents of the images in folders, for direction edits.
    pub folders: HashMap<String, Vec<Grid>>,
    pub hover: Option<Hover>,
    pub session_path: Option<PathBuf>,
    last_saved: Option<Session>,
    last_save_at: Instant,
    pub show_help: bool,
    pub maps: gpu::TextureCache,
    /// The last regeneration sent, for the stroke-to-image latency.
    sent: Option<(u64, Instant)>,
    /// Latency from an edit to its regenerated image, in ms (latest and all).
    pub latencies: Vec<f64>,
    pub tools_tab: ToolsTab,
    pub repaint: Arc<dyn Fn() + Send + Sync>,
}

/// A restored session's recipes and active image, applied when its images are listed.
struct Restore {
    ticket: u64,
    recipes: BTreeMap<String, Recipe>,
    active: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ToolsTab {
    Edit,
    Generate,
    Train,
    Models,
}

impl AppState {
    pub fn new(ctx: &egui::Context, options: AppOptions, renderer: Renderer) -> Self {
        let ctx2 = ctx.clone();
        let repaint: Arc<dyn Fn() + Send + Sync> = Arc::new(move || ctx2.request_repaint());
        let mut notices = Vec::new();
        let session = match options.session_path.as_deref().map(Session::load) {
            Some(Ok(Some(s))) => s,
            Some(Err(e)) => {
                notices.push(Notice {
                    text: format!("{e:#}; starting a new session"),
                    error: true,
                    at: Instant::now(),
                });
                Session::default()
            }
            _ => Session::default(),
        };
        let mut state = Self {
            session,
            docs: Vec::new(),
            active: None,
            next_id: 1,
            worker: Worker::spawn(repaint.clone()),
            loader: loader::Loader::spawn(repaint.clone()),
            next_ticket: 1,
            restore: None,
            model: None,
            model_error: None,
            model_generation: 0,
            notices,
            map_path: renderer.map_path,
            renderer: renderer.description,
            canvas: Default::default(),
            inspector: Default::default(),
            edit: Default::default(),
            train: Default::default(),
            models: Default::default(),
            generate: Default::default(),
            harmonised: Default::default(),
            folders: HashMap::new(),
            hover: None,
            session_path: options.session_path.clone(),
            last_saved: None,
            last_save_at: Instant::now(),
            show_help: false,
            maps: renderer.maps,
            sent: None,
            latencies: Vec::new(),
            tools_tab: ToolsTab::Edit,
            repaint,
        };
        if let Some(b) = options.backend {
            state.session.settings.backend = state::BackendSetting::from_choice(b);
        }
        if options.model.is_some() {
            state.session.settings.model = options.model.clone();
        }
        if options.size.is_some() {
            state.session.settings.size = options.size;
        }
        if let Some(m) = state.session.settings.model.clone()
            && !m.is_file()
        {
            state.session.settings.model = None;
            let text = format!("model {} is gone; using the built-in model", m.display());
            state.notify(text, true);
        }
        if let Some(g) = state.session.settings.generator.clone()
            && !g.is_file()
        {
            state.session.settings.generator = None;
            let text = format!("generator {} is gone; using the built-in one", g.display());
            state.notify(text, true);
        }
        window::apply_theme(ctx, state.session.settings.theme);
        state.last_saved = Some(state.session.clone());
        state.load_model(state.session.settings.model.clone());
        let images = state.session.images.clone();
        if images.is_empty() {
            if options.open_sample
                && let Some(sample) = sample_image()
            {
                state.open_paths(vec![sample]);
            }
        } else {
            let ticket = state.open_paths(images);
            let recipes = state.session.recipes.clone();
            let active = state.session.active.clone();
            state.restore = Some(Restore { ticket, recipes, active });
        }
        state
    }

    /// How token maps are drawn now: the renderer's path, unless the View menu chose the CPU.
    pub fn maps_path(&self) -> gpu::MapPath {
        if self.session.settings.gpu_maps { self.map_path } else { gpu::MapPath::Cpu }
    }

    pub fn notify(&mut self, text: impl Into<String>, error: bool) {
        let text = text.into();
        if error {
            eprintln!("fae-studio: {text}");
        }
        self.notices.push(Notice { text, error, at: Instant::now() });
        if self.notices.len() > 6 {
            self.notices.remove(0);
        }
    }

    /// Loads a model on the worker; every open image is encoded again once it is ready.
    pub fn load_model(&mut self, path: Option<PathBuf>) {
        self.model_generation += 1;
        self.model = None;
        self.model_error = None;
        self.session.settings.model = path.clone();
        let backend = self.session.settings.backend.choice();
        self.worker.send(Job::LoadModel { path, backend, generation: self.model_generation });
        // The generator works on this model's latents: loaded again after it (and checked).
        self.load_generator(self.session.settings.generator.clone());
    }

    /// The working size in pixels: the setting, else the model's training size.
    pub fn size(&self) -> Option<usize> {
        self.session.settings.size.or(self.model.as_ref().map(|m| m.config.image_size))
    }

    /// Opens images and folders of images (the library, dialogs and drag and drop all come
    /// here): the library thread lists them and the images appear when it answers; unreadable
    /// entries become notices. Returns the ticket of the listing.
    pub fn open_paths(&mut self, paths: Vec<PathBuf>) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.loader.send(loader::Request::Open { ticket, paths });
        ticket
    }

    /// Adds listed image files to the library (an image already open becomes the active one) and
    /// asks for their thumbnails and encodings.
    fn add_files(&mut self, files: Vec<PathBuf>) {
        for path in files {
            if let Some(i) = self.docs.iter().position(|d| d.path == path) {
                self.active = Some(i);
                continue;
            }
            let mut doc = Document::new(self.next_id, path);
            self.next_id += 1;
            if self.model.is_some() {
                self.worker.send(Job::Encode {
                    doc: doc.id,
                    path: doc.path.clone(),
                    size: self.size(),
                    generation: self.model_generation,
                });
            }
            doc.status = DocStatus::Queued;
            self.loader.send(loader::Request::Thumb { doc: doc.id, path: doc.path.clone() });
            self.docs.push(doc);
            self.active = Some(self.docs.len() - 1);
        }
    }

    pub fn close_doc(&mut self, index: usize) {
        if index < self.docs.len() {
            self.docs.remove(index);
            self.active = if self.docs.is_empty() {
                None
            } else {
                Some(self.active.unwrap_or(0).min(self.docs.len() - 1))
            };
        }
    }

    pub fn active_doc(&self) -> Option<&Document> {
        self.active.and_then(|i| self.docs.get(i))
    }

    pub fn active_doc_mut(&mut self) -> Option<&mut Document> {
        self.active.and_then(|i| self.docs.get_mut(i))
    }

    pub fn doc_by_id(&self, id: u64) -> Option<&Document> {
        self.docs.iter().find(|d| d.id == id)
    }

    fn encode_all(&mut self) {
        let size = self.size();
        for doc in &mut self.docs {
            if let Some(h) = doc.history.take()
                && !h.is_empty()
            {
                doc.pending_recipe = Some(h.recipe().clone());
            }
            doc.status = DocStatus::Queued;
            doc.requested = None;
            self.worker.send(Job::Encode {
                doc: doc.id,
                path: doc.path.clone(),
                size,
                generation: self.model_generation,
            });
        }
    }

    /// Changes the working resolution and encodes every image again.
    pub fn set_size(&mut self, size: Option<usize>) {
        self.session.settings.size = size;
        if self.model.is_some() {
            self.encode_all();
        }
    }

    /// Handles the worker's replies.
    pub fn poll(&mut self, ctx: &egui::Context) {
        for reply in self.worker.poll() {
            match reply {
                Reply::Model { generation, result } if generation == self.model_generation => {
                    match result {
                        Ok(info) => {
                            self.model = Some(*info);
                            self.model_error = None;
                            self.encode_all();
                        }
                        Err(e) => {
                            self.notify(e.clone(), true);
                            self.model_error = Some(e);
                        }
                    }
                }
                Reply::Model { .. } => {}
                Reply::Encoded { doc, generation, result } => {
                    if generation != self.model_generation {
                        continue;
                    }
                    let Some(i) = self.docs.iter().position(|d| d.id == doc) else { continue };
                    match result {
                        Ok(analysis) => {
                            let d = &mut self.docs[i];
                            d.history = Some(History::new(analysis.latent.clone()));
                            d.analysis = Some(Arc::new(*analysis));
                            d.status = DocStatus::Ready;
                            d.edited = None;
                            d.requested = None;
                            d.version += 1;
                            self.apply_pending_recipes(false);
                        }
                        Err(e) => {
                            let d = &mut self.docs[i];
                            let text = format!("{}: {e}", d.name);
                            d.status = DocStatus::Failed(e.clone());
                            if e != "cancelled" {
                                self.notify(text, true);
                            }
                        }
                    }
                }
                Reply::Decoded { doc, key, latent, mask, result } => {
                    let Some(d) = self.docs.iter_mut().find(|d| d.id == doc) else { continue };
                    match result {
                        Ok(out) => {
                            d.edited = Some(Edited {
                                key,
                                latent,
                                mask,
                                image: out.image,
                                restored: out.restored,
                                ms: out.ms,
                            });
                            d.version += 1;
                            if let Some((k, at)) = self.sent
                                && k == key
                            {
                                self.latencies.push(at.elapsed().as_secs_f64() * 1e3);
                                self.sent = None;
                            }
                        }
                        Err(e) if e == "superseded" || e == "cancelled" => {
                            if d.requested == Some(key) {
                                d.requested = None;
                            }
                        }
                        Err(e) => {
                            let text = format!("{}: regeneration failed: {e}", d.name);
                            self.notify(text, true);
                        }
                    }
                }
                Reply::Folder { folder, result } => match result {
                    Ok(latents) => {
                        let n = latents.len();
                        self.folders.insert(folder.to_string_lossy().into_owned(), latents);
                        self.notify(format!("{}: {n} images encoded", folder.display()), false);
                    }
                    Err(e) => self.notify(format!("{}: {e}", folder.display()), true),
                },
                Reply::Generator { ticket, result } => self.generator_loaded(ticket, result),
                Reply::Generated { ticket, result } => self.generated(ctx, ticket, result),
                Reply::Harmonised { key, result } => self.harmonised(key, result),
                Reply::Composited { doc, key, result } => self.composited(doc, key, result),
            }
        }
        self.poll_loader(ctx);
        self.train.poll(ctx);
        self.models.poll();
        for text in self.models.take_messages() {
            self.notify(text.0, text.1);
        }
        for text in self.train.take_messages() {
            self.notify(text.0, text.1);
        }
    }

    /// Handles the library thread's answers: listed files join the library, thumbnails arrive.
    fn poll_loader(&mut self, ctx: &egui::Context) {
        for answer in self.loader.poll() {
            match answer {
                loader::Loaded::Listed { ticket, files, errors } => {
                    for e in errors {
                        self.notify(e, true);
                    }
                    self.add_files(files);
                    if let Some(r) = self.restore.take_if(|r| r.ticket == ticket) {
                        for doc in &mut self.docs {
                            doc.pending_recipe =
                                r.recipes.get(&doc.key()).filter(|r| !r.edits.is_empty()).cloned();
                        }
                        if let Some(a) = r.active {
                            self.active =
                                self.docs.iter().position(|d| d.path == a).or(self.active);
                        }
                        self.apply_pending_recipes(false);
                    }
                }
                loader::Loaded::Thumb { doc, result } => {
                    let Some(d) = self.docs.iter_mut().find(|d| d.id == doc) else { continue };
                    match result {
                        Ok(img) => {
                            let name = format!("thumb-{doc}");
                            d.thumb = Some(ctx.load_texture(name, img, Default::default()));
                        }
                        Err(e) => d.thumb_error = Some(e),
                    }
                }
            }
        }
    }

    /// The session as it stands now.
    pub fn current_session(&self) -> Session {
        let mut s = self.session.clone();
        s.images = self.docs.iter().map(|d| d.path.clone()).collect();
        s.active = self.active_doc().map(|d| d.path.clone());
        s.recipes.clear();
        for d in &self.docs {
            let recipe = match (&d.history, &d.pending_recipe) {
                (_, Some(r)) => Some(r.clone()),
                (Some(h), None) if !h.is_empty() => Some(h.recipe().clone()),
                _ => None,
            };
            if let Some(r) = recipe {
                s.recipes.insert(d.key(), r);
            }
        }
        s
    }

    /// Saves the session when it changed, at most twice a second (and at once with `now`).
    pub fn autosave(&mut self, now: bool) {
        let Some(path) = self.session_path.clone() else { return };
        if !now && self.last_save_at.elapsed() < Duration::from_millis(500) {
            return;
        }
        let session = self.current_session();
        if self.last_saved.as_ref() == Some(&session) {
            return;
        }
        self.last_save_at = Instant::now();
        match session.save(&path) {
            Ok(()) => self.last_saved = Some(session),
            Err(e) => {
                self.last_saved = Some(session);
                self.notify(format!("cannot save the session: {e:#}"), true);
            }
        }
    }

    pub fn set_theme(&mut self, ctx: &egui::Context, theme: ThemeChoice) {
        self.session.settings.theme = theme;
        window::apply_theme(ctx, theme);
    }
}
