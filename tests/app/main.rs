//! The desktop app, driven through egui_kittest: open an image through the app's code path, paint
//! a stroke, see the history grow, undo and redo, switch inspector views, fine-tune, restore a
//! session, export, render token maps through wgpu with our shaders, and start on each kind of
//! adapter (Vulkan, OpenGL, none).
//!
//! Most tests run on the CPU backend with a tiny model at 56 px, so they stay fast; `adapters`
//! starts the app as a new user does, on the built-in model.

mod adapters;
#[path = "../common/mod.rs"]
mod common;
mod composite;
mod editing;
mod fallback;
mod files;
mod generate;
mod maps;
mod train;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use egui::{Key, Modifiers, Pos2, Vec2};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use fae_studio::app::canvas::Pane;
use fae_studio::app::state::{BrushKind, InspectorView, Session};
use fae_studio::app::{AppOptions, FaeApp, inspector};
use fae_studio::backend::{self, BackendChoice};
use fae_studio::fae::{self, FaeModel, LatentStats};

/// A tiny untrained model saved as a checkpoint.
fn tiny_model(dir: &Path) -> PathBuf {
    let device = backend::cpu().device;
    let cfg = common::tiny_architecture();
    let path = dir.join("tiny.safetensors");
    let model = FaeModel::new(&cfg, &device);
    let stats = LatentStats::identity(cfg.latent_channels);
    fae::save(&path, &cfg, &stats, &model, 0, None, false).unwrap();
    path
}

fn sample(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/samples").join(name)
}

fn options(dir: &Path, model: Option<PathBuf>) -> AppOptions {
    AppOptions {
        backend: Some(BackendChoice::Cpu),
        model,
        size: Some(56),
        session_path: Some(dir.join("session.json")),
        open_sample: false,
    }
}

fn harness(opts: AppOptions) -> Harness<'static, FaeApp> {
    Harness::builder()
        .with_size(Vec2::new(1500.0, 950.0))
        .build_eframe(move |cc| FaeApp::new(cc, opts))
}

/// Steps the app until `done` holds, failing after `secs`.
fn wait(h: &mut Harness<'_, FaeApp>, secs: u64, what: &str, done: impl Fn(&FaeApp) -> bool) {
    let start = Instant::now();
    while !done(h.state()) {
        assert!(start.elapsed() < Duration::from_secs(secs), "timed out waiting for {what}");
        h.step();
        std::thread::sleep(Duration::from_millis(10));
    }
    h.step();
}

fn ready(app: &FaeApp, n: usize) -> bool {
    app.state.docs.len() >= n && app.state.docs.iter().take(n).all(|d| d.is_ready())
}

fn history_len(app: &FaeApp) -> usize {
    app.state.active_doc().and_then(|d| d.history.as_ref()).map_or(usize::MAX, |h| h.len())
}

fn wait_model(h: &mut Harness<'_, FaeApp>) {
    wait(h, 120, "the model", |a| a.state.model.is_some() || a.state.model_error.is_some());
    assert!(h.state().state.model.is_some(), "{:?}", h.state().state.model_error);
    // The generator is loaded after the model: let that finish too, so that no test sees the
    // status bar's Cancel for work it did not start.
    wait(h, 120, "the worker to be idle", |a| !a.state.worker.busy());
}

fn open_sample(h: &mut Harness<'_, FaeApp>, names: &[&str]) {
    wait_model(h);
    let paths = names.iter().map(|n| sample(n)).collect();
    h.state_mut().state.open_paths(paths);
    wait(h, 120, "the images to be encoded", |a| ready(a, names.len()));
    // The active image's photo is composited next (loaded at full resolution).
    wait(h, 120, "the worker to be idle", |a| !a.state.worker.busy());
}

fn wait_generator(h: &mut Harness<'_, FaeApp>) {
    wait(h, 60, "the generator", |a| !a.state.generate.loading);
}

/// Drags the primary button through `points` (screen positions).
fn drag(h: &mut Harness<'_, FaeApp>, points: &[Pos2]) {
    h.hover_at(points[0]);
    h.step();
    h.drag_at(points[0]);
    h.step();
    for p in &points[1..] {
        h.hover_at(*p);
        h.step();
    }
    h.drop_at(*points.last().unwrap());
    h.step();
}

/// Shows the latent's PCA map in the inspector, renders the window, and checks that the map drawn
/// by our shader has the colours the CPU path computes, token by token.
fn latent_map_matches_cpu(
    h: &mut Harness<'_, FaeApp>,
) -> (egui::Rect, image::RgbaImage, fae_studio::app::gpu::TokenMap) {
    h.get_by_label(InspectorView::LatentPca.label()).click();
    h.step();
    h.step();
    let rect = h.state().state.inspector.map_rect.expect("a map");
    let rendered = h.render().expect("a rendered frame");
    let map = inspector::view_map(&mut h.state_mut().state, 0, InspectorView::LatentPca).unwrap();
    let cpu = map.cpu_image();
    let ppp = 1.0;
    let mut worst = 0i32;
    for y in 0..map.height {
        for x in 0..map.width {
            let px = rect.min.x + (x as f32 + 0.5) * rect.width() / map.width as f32;
            let py = rect.min.y + (y as f32 + 0.5) * rect.height() / map.height as f32;
            let got = rendered.get_pixel((px * ppp) as u32, (py * ppp) as u32).0;
            let want = cpu.get_pixel(x as u32, y as u32).0;
            for c in 0..3 {
                worst = worst.max((got[c] as i32 - want[c] as i32).abs());
            }
        }
    }
    assert!(worst <= 3, "GPU and CPU colours differ by up to {worst}/255");
    // The map is not flat: the PCA spreads the tokens over the colours.
    let distinct: std::collections::BTreeSet<[u8; 3]> = cpu.pixels().map(|p| p.0).collect();
    assert!(distinct.len() > 4, "{} distinct colours", distinct.len());

    (rect, rendered, map)
}
