//! The Generate panel: sample new images with the loaded generator (class, guidance, steps,
//! sampler, seed, count) on the worker, with progress and Cancel; the results as a grid of
//! thumbnails; "Send to editor" opens one as a new document that keeps its generated latent.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::AppState;
use super::generated;
use super::worker::{GenerateProgress, GenerateRequest, Generated, GeneratorInfo, Job};
use crate::generator::Sampler;
use crate::grid::Grid;

/// How to get a generator, shown while none is loaded.
pub const HOW_TO: &str = "Train one on a folder of images with `fae-studio train-generator \
     --data DIR --out RUN` (sub-folders become classes), then load RUN/latest.safetensors with \
     the Models panel's \"Load generator…\"";

/// A generation on the worker.
struct Run {
    ticket: u64,
    seed: u64,
    /// The checksum of the FAE model that decodes the latents.
    fae_sha256: String,
    progress: Arc<GenerateProgress>,
}

/// One generated image in the results grid.
pub struct GenResult {
    pub latent: Grid,
    pub image: image::Rgb32FImage,
    pub seed: u64,
    /// The FAE model the latent belongs to.
    pub fae_sha256: String,
    pub texture: egui::TextureHandle,
}

#[derive(Default)]
pub struct GeneratePanel {
    /// The loaded generator (it works with the FAE model in use).
    pub generator: Option<GeneratorInfo>,
    /// Why no generator is loaded.
    pub error: Option<String>,
    /// The newest generator load sent to the worker; older answers are dropped.
    pub load_ticket: u64,
    pub loading: bool,
    run: Option<Run>,
    next_run: u64,
    pub results: Vec<GenResult>,
    pub selected: Option<usize>,
}

impl GeneratePanel {
    pub fn running(&self) -> bool {
        self.run.is_some()
    }

    /// (steps done, steps in all, images decoded) of the running generation.
    pub fn progress(&self) -> Option<(usize, usize, usize)> {
        let p = &self.run.as_ref()?.progress;
        Some((
            p.steps_done.load(Ordering::Relaxed),
            p.steps_total.load(Ordering::Relaxed),
            p.decoded.load(Ordering::Relaxed),
        ))
    }
}

/// A seed from the clock, for the "random seed" button.
fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (nanos ^ (nanos >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15) % 1_000_000
}

impl AppState {
    /// Loads a generator for the model in use (the built-in one when `path` is `None`) on the
    /// worker.
    pub fn load_generator(&mut self, path: Option<PathBuf>) {
        self.session.settings.generator = path.clone();
        let g = &mut self.generate;
        g.load_ticket += 1;
        (g.generator, g.error, g.loading) = (None, None, true);
        self.worker.send(Job::LoadGenerator { path, ticket: g.load_ticket });
    }

    /// The worker's answer to a generator load.
    pub fn generator_loaded(&mut self, ticket: u64, result: Result<Box<GeneratorInfo>, String>) {
        if ticket != self.generate.load_ticket {
            return;
        }
        self.generate.loading = false;
        self.harmonised.reset(ticket);
        match result {
            Ok(info) => {
                let known = |c: &String| info.classes.contains(c);
                if !self.session.settings.generate.class.as_ref().is_some_and(known) {
                    self.session.settings.generate.class = None;
                }
                self.generate.generator = Some(*info);
            }
            Err(e) => {
                // A generator the user chose is worth a notice; the built-in one's absence is
                // only explained in the panel.
                if self.session.settings.generator.is_some() {
                    self.notify(format!("generator not loaded: {e}"), true);
                }
                self.generate.error = Some(e);
            }
        }
    }

    /// Starts a generation with the panel's settings.
    pub fn start_generate(&mut self) {
        let Some(model) = &self.model else { return };
        if self.generate.generator.is_none() || self.generate.running() {
            return;
        }
        let fae_sha256 = model.sha256.clone();
        let s = &self.session.settings.generate;
        let options = s.options();
        if let Err(e) = options.validate() {
            self.notify(format!("{e:#}"), true);
            return;
        }
        let request =
            GenerateRequest { class: s.class.clone(), n: s.n.max(1), seed: s.seed, options };
        let g = &mut self.generate;
        g.next_run += 1;
        let progress = Arc::new(GenerateProgress::default());
        let ticket = g.next_run;
        g.run = Some(Run { ticket, seed: request.seed, fae_sha256, progress: progress.clone() });
        self.worker.send(Job::Generate { ticket: g.next_run, request, progress });
    }

    /// Stops the running generation (at its next step).
    pub fn cancel_generate(&mut self) {
        if let Some(run) = self.generate.run.take() {
            run.progress.cancel.store(true, Ordering::Relaxed);
            self.notify("generation cancelled", false);
        }
    }

    /// The worker's generated images: they replace the results grid.
    pub fn generated(
        &mut self,
        ctx: &egui::Context,
        ticket: u64,
        result: Result<Vec<Generated>, String>,
    ) {
        let Some(run) = self.generate.run.take_if(|r| r.ticket == ticket) else { return };
        match result {
            Ok(images) => {
                self.generate.results = images
                    .into_iter()
                    .enumerate()
                    .map(|(i, g)| {
                        let rgb = crate::image_io::to_rgb8(&g.image);
                        let size = [rgb.width() as usize, rgb.height() as usize];
                        let color = egui::ColorImage::from_rgb(size, rgb.as_raw());
                        let name = format!("generated-{ticket}-{i}");
                        let texture = ctx.load_texture(name, color, Default::default());
                        GenResult {
                            latent: g.latent,
                            image: g.image,
                            seed: run.seed.wrapping_add(i as u64),
                            fae_sha256: run.fae_sha256.clone(),
                            texture,
                        }
                    })
                    .collect();
                self.generate.selected = Some(0);
            }
            Err(e) => self.notify(format!("generation failed: {e}"), e != "cancelled"),
        }
    }

    /// Opens generated image `index` as a new document: its PNG and latent are saved in the
    /// session's `generated/` folder and the document is opened from them.
    pub fn send_to_editor(&mut self, index: usize) {
        let Some(r) = self.generate.results.get(index) else { return };
        let folder = self
            .session_path
            .as_ref()
            .and_then(|p| p.parent().map(|d| d.to_path_buf()))
            .or_else(super::state::app_dir)
            .unwrap_or_else(|| std::env::temp_dir().join("fae-studio"))
            .join("generated");
        let name = generated::unique_name(&folder, r.seed);
        match generated::save(&folder, &name, &r.image, &r.latent, &r.fae_sha256) {
            Ok(png) => {
                self.open_paths(vec![png]);
            }
            Err(e) => self.notify(format!("cannot save the generated image: {e:#}"), true),
        }
    }
}

pub fn ui(ui: &mut egui::Ui, st: &mut AppState) {
    ui.heading("Generator");
    match &st.generate.generator {
        Some(g) => {
            let classes = if g.classes.is_empty() {
                "unconditional".to_string()
            } else {
                format!("{} classes", g.classes.len())
            };
            ui.label(format!("{}: step {}, {classes}", g.name, g.step)).on_hover_text(format!(
                "{} wide, {} blocks, {}x{} latent grid; loaded in {:.0} ms",
                g.width, g.depth, g.grid.0, g.grid.1, g.load_ms
            ));
        }
        None if st.generate.loading => {
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label("loading the generator…");
            });
        }
        None => {
            ui.colored_label(ui.visuals().warn_fg_color, "No generator is loaded.");
            if let Some(e) = &st.generate.error {
                ui.label(e);
            }
            ui.weak(HOW_TO);
        }
    }
    ui.separator();
    settings_ui(ui, st);
    ui.separator();
    run_ui(ui, st);
    results_ui(ui, st);
}

fn settings_ui(ui: &mut egui::Ui, st: &mut AppState) {
    let classes = st.generate.generator.as_ref().map(|g| g.classes.clone()).unwrap_or_default();
    let s = &mut st.session.settings.generate;
    let shown = s.class.clone().unwrap_or_else(|| "unconditional".into());
    ui.add_enabled_ui(!classes.is_empty(), |ui| {
        egui::ComboBox::from_label("class")
            .selected_text(shown)
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut s.class, None, "unconditional");
                for c in &classes {
                    ui.selectable_value(&mut s.class, Some(c.clone()), c);
                }
            })
            .response
            .on_hover_text("Which class to draw (the generator's sub-folders), or any")
            .on_disabled_hover_text("This generator was trained without classes");
    });
    ui.add(egui::Slider::new(&mut s.cfg, 0.0..=10.0).text("guidance"))
        .on_hover_text("Classifier-free guidance scale: 1 is off, higher follows the class more");
    ui.horizontal(|ui| {
        ui.label("guidance interval");
        let (lo, hi) = &mut s.cfg_interval;
        ui.add(egui::DragValue::new(lo).range(0.0..=1.0).speed(0.01))
            .on_hover_text("Guidance starts at this time (0 is the image, 1 is noise)");
        ui.add(egui::DragValue::new(hi).range(0.0..=1.0).speed(0.01))
            .on_hover_text("Guidance ends at this time (guiding the noisiest steps hurts variety)");
        if *lo > *hi {
            std::mem::swap(lo, hi);
        }
    });
    ui.add(egui::Slider::new(&mut s.steps, 1..=250).text("steps"))
        .on_hover_text("Solver steps from noise to image (more: slower, finer)");
    ui.horizontal(|ui| {
        for (sampler, label, tip) in [
            (Sampler::Euler, "Euler", "First-order ODE steps: fast and deterministic"),
            (Sampler::Heun, "Heun", "Second-order ODE steps: two model calls per step"),
            (Sampler::Sde, "SDE", "Euler-Maruyama on the reverse SDE: fresh noise every step"),
        ] {
            ui.radio_value(&mut s.sampler, sampler, label).on_hover_text(tip);
        }
    });
    ui.horizontal(|ui| {
        ui.label("seed");
        ui.add(egui::DragValue::new(&mut s.seed))
            .on_hover_text("Image i uses seed + i; the same seed gives the same images");
        if ui.button("Random").on_hover_text("Pick a random seed").clicked() {
            s.seed = random_seed();
        }
    });
    ui.add(egui::Slider::new(&mut s.n, 1..=16).text("images"))
        .on_hover_text("How many images to generate");
}

fn run_ui(ui: &mut egui::Ui, st: &mut AppState) {
    if let Some((done, total, decoded)) = st.generate.progress() {
        let n = st.session.settings.generate.n;
        let (fraction, text) = if total > 0 && done >= total {
            (1.0, format!("decoding {decoded}/{n}"))
        } else {
            (done as f32 / total.max(1) as f32, format!("step {done}/{total}"))
        };
        let mut cancel = false;
        ui.horizontal(|ui| {
            ui.add(egui::ProgressBar::new(fraction).text(text).desired_width(170.0));
            cancel = ui.button("Cancel generation").on_hover_text("Stop the generation").clicked();
        });
        if cancel {
            st.cancel_generate();
        }
        return;
    }
    let why = match &st.generate.generator {
        None => Some("No generator is loaded (see above)"),
        Some(_) if st.model.is_none() => Some("No FAE model is loaded"),
        Some(_) => None,
    };
    let button = ui.add_enabled(why.is_none(), egui::Button::new("Generate images"));
    let button = match why {
        Some(why) => button.on_disabled_hover_text(why),
        None => button.on_hover_text("Sample new images on the worker with these settings"),
    };
    if button.clicked() {
        st.start_generate();
    }
}

fn results_ui(ui: &mut egui::Ui, st: &mut AppState) {
    if st.generate.results.is_empty() {
        return;
    }
    ui.separator();
    ui.heading("Results");
    let mut clicked = None;
    egui::Grid::new("generated").spacing([4.0, 4.0]).show(ui, |ui| {
        for (i, r) in st.generate.results.iter().enumerate() {
            let image = egui::Image::new(&r.texture).fit_to_exact_size(egui::vec2(84.0, 84.0));
            let selected = st.generate.selected == Some(i);
            let response = ui
                .add(egui::Button::image(image).selected(selected))
                .on_hover_text(format!("Seed {}; click to select", r.seed));
            if response.clicked() {
                clicked = Some(i);
            }
            if i % 3 == 2 {
                ui.end_row();
            }
        }
    });
    if clicked.is_some() {
        st.generate.selected = clicked;
    }
    let selected = st.generate.selected.filter(|&i| i < st.generate.results.len());
    if ui
        .add_enabled(selected.is_some(), egui::Button::new("Send to editor"))
        .on_hover_text("Open the selected image as a new document, with its generated latent")
        .on_disabled_hover_text("Select a result first")
        .clicked()
        && let Some(i) = selected
    {
        st.send_to_editor(i);
    }
}
