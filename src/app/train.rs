//! The fine-tuning panel: pick a folder, see what was found and skipped, choose settings, start /
//! pause / resume / stop a run on its own thread; live loss curves, validation metrics, sample
//! reconstructions, images/s and ETA; use the trained model in the editor at once.
//!
//! Pausing stops the run after the current step with a resumable checkpoint; resuming continues
//! it from that checkpoint (the training loop's own `--resume`).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::time::Instant;

use egui_plot::{Legend, Line, Plot, PlotPoints};
use serde_json::Value;

use super::AppState;
use super::state::TrainSettings;
use crate::backend::BackendChoice;
use crate::train::data::Dataset;
use crate::train::{self, Stage, TrainOptions};

enum Event {
    Record(Value),
    Done(Result<train::run::TrainSummary, String>),
}

struct Run {
    stop: Arc<AtomicBool>,
    rx: Receiver<Event>,
    out: PathBuf,
    steps: u64,
    batch: usize,
}

#[derive(Default)]
pub struct TrainPanel {
    run: Option<Run>,
    /// `(stage, [step, loss])` points.
    pub losses: Vec<(String, [f64; 2])>,
    /// `(step, validation record)`.
    pub validations: Vec<(u64, Value)>,
    pub step: u64,
    pub images_per_s: f64,
    pub paused: bool,
    /// The run folder of the last run (for resume and "use in editor").
    pub out: Option<PathBuf>,
    pub finished: Option<String>,
    sample: Option<(u64, egui::TextureHandle)>,
    scan: Option<Receiver<Result<(usize, usize), String>>>,
    pub found: Option<(usize, usize)>,
    messages: Vec<(String, bool)>,
    started: Option<Instant>,
}

impl TrainPanel {
    pub fn running(&self) -> bool {
        self.run.is_some() || self.scan.is_some()
    }

    pub fn take_messages(&mut self) -> Vec<(String, bool)> {
        std::mem::take(&mut self.messages)
    }

    /// Counts the usable and skipped images of a folder on a thread.
    pub fn scan(&mut self, folder: PathBuf) {
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let r = Dataset::scan(&folder, 0.05)
                .map(|d| (d.train.len() + d.val.len(), d.skipped.len()))
                .map_err(|e| format!("{e:#}"));
            let _ = tx.send(r);
        });
        self.scan = Some(rx);
        self.found = None;
    }

    pub fn poll(&mut self, ctx: &egui::Context) {
        if let Some(rx) = &self.scan
            && let Ok(r) = rx.try_recv()
        {
            match r {
                Ok(f) => self.found = Some(f),
                Err(e) => self.messages.push((e, true)),
            }
            self.scan = None;
        }
        let Some(run) = &self.run else { return };
        let mut done = None;
        let mut new_val = None;
        while let Ok(ev) = run.rx.try_recv() {
            match ev {
                Event::Record(r) => {
                    let step = r.get("step").and_then(Value::as_u64).unwrap_or(0);
                    self.step = self.step.max(step);
                    if let Some(ips) = r.get("images_per_s").and_then(Value::as_f64) {
                        self.images_per_s = ips;
                    }
                    if let Some(v) = r.get("val") {
                        self.validations.push((step, v.clone()));
                        new_val = Some(step);
                    } else if let Some(loss) = r.get("loss").and_then(Value::as_f64) {
                        let stage = r.get("stage").and_then(Value::as_str).unwrap_or("loss");
                        self.losses.push((stage.to_string(), [step as f64, loss]));
                    }
                }
                Event::Done(r) => done = Some(r),
            }
        }
        if let Some(step) = new_val {
            let path = run.out.join(format!("val-{step:06}.png"));
            if let Ok(img) = crate::image_io::load_rgb(&path) {
                let tex = ctx.load_texture(
                    "train-sample",
                    super::canvas::to_color_image(&img),
                    egui::TextureOptions::LINEAR,
                );
                self.sample = Some((step, tex));
            }
        }
        if let Some(r) = done {
            let out = run.out.clone();
            self.run = None;
            match r {
                Ok(s) => {
                    let text = if s.stopped_early {
                        format!("stopped at step {}; the run can be resumed", s.step)
                    } else {
                        format!("finished at step {}, loss {:.4}", s.step, s.last_loss)
                    };
                    self.finished = Some(text.clone());
                    self.messages.push((format!("fine-tuning {text}"), false));
                }
                Err(e) => {
                    self.paused = false;
                    self.finished = Some(format!("failed: {e}"));
                    self.messages.push((format!("fine-tuning failed: {e}"), true));
                }
            }
            self.out = Some(out);
        }
    }

    /// Starts (or with `resume`, continues) a run.
    pub fn start(
        &mut self,
        settings: &TrainSettings,
        from: Option<PathBuf>,
        backend: BackendChoice,
        resume: bool,
        repaint: Arc<dyn Fn() + Send + Sync>,
    ) -> Result<(), String> {
        if self.run.is_some() {
            return Err("a run is already going".into());
        }
        let data = settings.data.clone().ok_or("pick a folder of images first")?;
        let out = match (&settings.out, resume, &self.out) {
            (_, true, Some(o)) => o.clone(),
            (Some(o), _, _) => o.clone(),
            (None, _, _) => {
                let base = super::state::app_dir().unwrap_or_else(std::env::temp_dir).join("runs");
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                base.join(format!("run-{secs}"))
            }
        };
        let mut o = TrainOptions::new(data, out.clone());
        o.steps = settings.steps.max(1);
        o.batch = settings.batch.max(1);
        o.size = settings.size;
        o.stage = match settings.stage.as_str() {
            "fae" => Stage::Fae,
            "pixel" => Stage::Pixel,
            _ => Stage::All,
        };
        o.from = if resume { None } else { from };
        o.resume = resume;
        o.log_every = settings.log_every.max(1);
        o.val_every = settings.val_every.max(1);
        o.checkpoint_every = settings.val_every.max(1);
        o.perceptual = settings.perceptual;
        o.cache_dir = settings.cache.clone();
        o.progress = false;
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = channel();
        let stop2 = stop.clone();
        std::thread::Builder::new()
            .name("fae-train".into())
            .spawn(move || {
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let compute = crate::backend::select(backend)?;
                    train::train(o, &compute.device, &stop2, |r| {
                        let _ = tx.send(Event::Record(r.clone()));
                        repaint();
                    })
                }));
                let r = match result {
                    Ok(r) => r.map_err(|e| format!("{e:#}")),
                    Err(p) => Err(crate::bug::report(
                        "the training run",
                        &crate::bug::panic_text(p.as_ref()),
                    )),
                };
                let _ = tx.send(Event::Done(r));
                repaint();
            })
            .map_err(|e| format!("cannot start the training thread: {e}"))?;
        if !resume {
            self.losses.clear();
            self.validations.clear();
            self.sample = None;
            self.step = 0;
        }
        self.paused = false;
        self.finished = None;
        self.started = Some(Instant::now());
        self.run =
            Some(Run { stop, rx, out: out.clone(), steps: settings.steps, batch: settings.batch });
        self.out = Some(out);
        Ok(())
    }

    /// Asks the run to stop after the current step (it saves a resumable checkpoint).
    pub fn stop(&mut self, pause: bool) {
        if let Some(r) = &self.run {
            r.stop.store(true, Ordering::Relaxed);
            self.paused = pause;
        }
    }

    /// The latest checkpoint of the last run.
    pub fn checkpoint(&self) -> Option<PathBuf> {
        self.out.as_ref().map(|o| o.join("latest.safetensors")).filter(|p| p.is_file())
    }
}

impl AppState {
    /// The checkpoint a run starts from, per the "start from" setting.
    fn train_from(&self) -> Result<Option<PathBuf>, String> {
        let t = &self.session.settings.train;
        match t.start.as_str() {
            "scratch" => Ok(None),
            "checkpoint" => {
                t.checkpoint.clone().map(Some).ok_or("pick a checkpoint to start from".into())
            }
            "builtin" => crate::assets::path(crate::fae::DEFAULT_MODEL)
                .map(Some)
                .map_err(|_| "no built-in model yet: start from a checkpoint".into()),
            _ => match self.model.as_ref().and_then(|m| m.path.clone()) {
                Some(p) => Ok(Some(p)),
                None => crate::assets::path(crate::fae::DEFAULT_MODEL)
                    .map(Some)
                    .map_err(|_| "no model is loaded to start from".into()),
            },
        }
    }

    /// Starts a fine-tuning run with the panel's settings.
    pub fn start_training(&mut self, resume: bool) {
        let from = match self.train_from() {
            Ok(f) => f,
            Err(e) => return self.notify(e, true),
        };
        let settings = self.session.settings.train.clone();
        let backend = self.session.settings.backend.choice();
        let repaint = self.repaint.clone();
        if let Err(e) = self.train.start(&settings, from, backend, resume, repaint) {
            self.notify(e, true);
        }
    }
}

pub fn ui(ui: &mut egui::Ui, st: &mut AppState) {
    ui.heading("Fine-tuning");
    let running = st.train.run.is_some();
    ui.add_enabled_ui(!running, |ui| {
        ui.horizontal(|ui| {
            if ui
                .button("Folder…")
                .on_hover_text("The images to fine-tune on (sub-folders are searched)")
                .clicked()
                && let Some(f) = rfd::FileDialog::new().pick_folder()
            {
                st.session.settings.train.data = Some(f.clone());
                st.train.scan(f);
            }
            let t = &st.session.settings.train;
            ui.label(t.data.as_ref().map_or("no folder".into(), |p| p.display().to_string()));
        });
        match (&st.train.found, &st.train.scan) {
            (_, Some(_)) => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label("scanning…");
                });
            }
            (Some((found, skipped)), None) => {
                ui.label(format!("{found} images found, {skipped} skipped"));
            }
            _ => {}
        }
        let t = &mut st.session.settings.train;
        egui::Grid::new("train-settings").show(ui, |ui| {
            ui.label("steps");
            ui.add(egui::DragValue::new(&mut t.steps).range(1..=1_000_000))
                .on_hover_text("Optimizer steps");
            ui.end_row();
            ui.label("batch");
            ui.add(egui::DragValue::new(&mut t.batch).range(1..=256))
                .on_hover_text("Images per step");
            ui.end_row();
            ui.label("size");
            ui.add(egui::DragValue::new(&mut t.size).range(14..=1024))
                .on_hover_text("Training resolution (a multiple of the patch size)");
            ui.end_row();
            ui.label("stages");
            egui::ComboBox::from_id_salt("stage")
                .selected_text(t.stage.clone())
                .show_ui(ui, |ui| {
                    for s in ["all", "fae", "pixel"] {
                        ui.selectable_value(&mut t.stage, s.to_string(), s);
                    }
                })
                .response
                .on_hover_text(
                    "fae: encoder + feature decoder; pixel: the pixel decoder; all: both",
                );
            ui.end_row();
            ui.label("start from");
            egui::ComboBox::from_id_salt("start")
                .selected_text(t.start.clone())
                .show_ui(ui, |ui| {
                    for s in ["current", "builtin", "checkpoint", "scratch"] {
                        ui.selectable_value(&mut t.start, s.to_string(), s);
                    }
                })
                .response
                .on_hover_text(
                    "current: the model in use; builtin; a checkpoint file; or a new model",
                );
            ui.end_row();
        });
        if t.start == "checkpoint"
            && ui.button("Checkpoint…").on_hover_text("The checkpoint to start from").clicked()
        {
            t.checkpoint =
                rfd::FileDialog::new().add_filter("checkpoint", &["safetensors"]).pick_file();
        }
    });
    ui.horizontal(|ui| {
        let paused = st.train.paused && !running;
        if ui
            .add_enabled(!running, egui::Button::new("Start"))
            .on_hover_text("Start a new run")
            .clicked()
        {
            st.start_training(false);
        }
        if ui
            .add_enabled(running, egui::Button::new("Pause"))
            .on_hover_text("Stop after this step with a resumable checkpoint")
            .clicked()
        {
            st.train.stop(true);
        }
        if ui
            .add_enabled(paused, egui::Button::new("Resume"))
            .on_hover_text("Continue the paused run")
            .clicked()
        {
            st.start_training(true);
        }
        if ui
            .add_enabled(running, egui::Button::new("Stop"))
            .on_hover_text("End the run (its checkpoint is kept)")
            .clicked()
        {
            st.train.stop(false);
        }
    });
    let tp = &st.train;
    if running || tp.step > 0 {
        let steps = tp.run.as_ref().map_or(st.session.settings.train.steps, |r| r.steps);
        let batch = tp.run.as_ref().map_or(st.session.settings.train.batch, |r| r.batch) as f64;
        let eta = if tp.images_per_s > 0.0 {
            let secs = steps.saturating_sub(tp.step) as f64 * batch / tp.images_per_s;
            format!("ETA {:.0} s", secs)
        } else {
            "ETA –".into()
        };
        ui.add(
            egui::ProgressBar::new(tp.step as f32 / steps.max(1) as f32)
                .text(format!("step {}/{steps}", tp.step)),
        );
        ui.label(format!("{:.1} images/s · {eta}", tp.images_per_s));
    }
    if let Some(f) = &tp.finished {
        ui.label(f);
    }
    if !tp.losses.is_empty() {
        let mut stages: Vec<String> = tp.losses.iter().map(|(s, _)| s.clone()).collect();
        stages.dedup();
        let lines: Vec<(String, Vec<[f64; 2]>)> = stages
            .into_iter()
            .map(|s| {
                let pts = tp.losses.iter().filter(|(t, _)| *t == s).map(|(_, p)| *p).collect();
                (s, pts)
            })
            .collect();
        Plot::new("loss-curve").height(150.0).legend(Legend::default()).show(ui, |p| {
            for (name, pts) in lines {
                p.line(Line::new(name, PlotPoints::from(pts)));
            }
        });
    }
    if let Some((step, v)) = tp.validations.last() {
        let f = |k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
        ui.label(format!(
            "validation at step {step}: PSNR {:.2} dB, SSIM {:.3}, feature cos {:.4}, cycle cos {:.4}",
            f("psnr"),
            f("ssim"),
            f("feature_cosine"),
            f("cycle_cosine")
        ));
    }
    if let Some((step, tex)) = &tp.sample {
        ui.label(format!("reconstructions at step {step}"));
        let size = tex.size_vec2();
        let w = ui.available_width().min(size.x);
        ui.add(egui::Image::new((tex.id(), size)).max_width(w));
    }
    let ckpt = st.train.checkpoint();
    if ui
        .add_enabled(ckpt.is_some() && !running, egui::Button::new("Use in editor"))
        .on_hover_text("Load the run's latest checkpoint as the model in use")
        .clicked()
    {
        st.load_model(ckpt);
    }
}
