//! The inspector's token maps, on the GPU and the CPU.

use super::*;

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
    assert!(
        h.state().state.map_path.on_gpu(),
        "the shader pipeline is set up on the wgpu renderer"
    );
    open_sample(&mut h, &["chelsea.png"]);
    let (rect, rendered, map) = latent_map_matches_cpu(&mut h);
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("app-render.png");
    let _ = rendered.save(&out);

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
