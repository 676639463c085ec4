//! `fae-studio --screenshot PATH`: the app opens as it always does, and once the model is loaded
//! and the image is encoded and drawn it saves the window to PATH, prints one line saying what
//! drew it and where the original picture is, and closes. It shows that the window works on this
//! machine's adapter (for scripts, docs, and the tests that start the real binary).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use egui::ViewportCommand;
use image::RgbImage;

use super::AppState;
use super::canvas::Pane;
use super::state::DocStatus;

/// How long the model and the first image may take before the screenshot is given up.
const TIMEOUT: Duration = Duration::from_secs(900);
/// Frames drawn with everything ready before the picture is taken (textures upload, layout
/// settles).
const SETTLE_FRAMES: u32 = 3;

/// What the screenshot run ended with: the summary line, or why it failed.
pub type Outcome = Arc<Mutex<Option<Result<String, String>>>>;

pub struct Screenshot {
    path: PathBuf,
    started: Instant,
    ready_frames: u32,
    requested: bool,
    image: Arc<Mutex<Option<Arc<egui::ColorImage>>>>,
    outcome: Outcome,
}

impl Screenshot {
    pub fn new(path: PathBuf, outcome: Outcome) -> Self {
        Self {
            path,
            started: Instant::now(),
            ready_frames: 0,
            requested: false,
            image: Arc::default(),
            outcome,
        }
    }

    /// Called after every frame is laid out.
    pub fn update(&mut self, ctx: &egui::Context, st: &AppState) {
        if self.outcome.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
            return;
        }
        if let Some(e) = &st.model_error {
            return self.finish(ctx, Err(format!("the model did not load: {e}")));
        }
        if let Some(DocStatus::Failed(e)) = st.active_doc().map(|d| &d.status) {
            return self.finish(ctx, Err(format!("the image did not open: {e}")));
        }
        if self.started.elapsed() > TIMEOUT {
            return self.finish(ctx, Err(format!("nothing to show after {TIMEOUT:?}")));
        }
        let ready = st.model.is_some()
            && st.active_doc().is_some_and(|d| d.is_ready())
            && !st.worker.busy()
            && !st.canvas.image_rects.is_empty();
        if !ready {
            self.ready_frames = 0;
            ctx.request_repaint_after(Duration::from_millis(100));
            return;
        }
        self.ready_frames += 1;
        ctx.request_repaint_after(Duration::from_millis(50));
        if self.ready_frames < SETTLE_FRAMES {
            return;
        }
        if !self.requested {
            self.requested = true;
            let slot = self.image.clone();
            let repaint = ctx.clone();
            ctx.send_viewport_cmd(ViewportCommand::Screenshot(egui::ScreenshotCallback::new(
                move |image| {
                    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(image);
                    repaint.request_repaint();
                },
            )));
            return;
        }
        let Some(image) = self.image.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let result = self.save(&image, ctx.pixels_per_point(), st);
        self.finish(ctx, result);
    }

    fn save(&self, image: &egui::ColorImage, ppp: f32, st: &AppState) -> Result<String, String> {
        let [w, h] = image.size;
        let rgb: Vec<u8> = image.pixels.iter().flat_map(|c| [c.r(), c.g(), c.b()]).collect();
        let picture = RgbImage::from_raw(w as u32, h as u32, rgb).ok_or("empty screenshot")?;
        crate::fsutil::write_png(&self.path, &picture).map_err(|e| format!("{e:#}"))?;
        let original = st.canvas.image_rects.iter().find(|(p, _)| *p == Pane::Original);
        let at = original.map_or(String::from("none"), |(_, r)| {
            let r = r.intersect(egui::Rect::from_min_size(
                egui::Pos2::ZERO,
                egui::vec2(w as f32, h as f32) / ppp,
            ));
            format!(
                "{},{},{},{}",
                (r.min.x * ppp).round(),
                (r.min.y * ppp).round(),
                (r.width() * ppp).round(),
                (r.height() * ppp).round()
            )
        });
        let maps = st.maps_path();
        Ok(format!(
            "screenshot {} ({w}x{h}); window: {}; maps: {}; original picture at {at} px",
            self.path.display(),
            st.renderer,
            maps.label()
        ))
    }

    fn finish(&self, ctx: &egui::Context, result: Result<String, String>) {
        *self.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
        ctx.send_viewport_cmd(ViewportCommand::Close);
    }
}
