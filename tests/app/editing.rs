//! Painting, sliders, undo and redo, recipes and exports.

use super::*;

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
