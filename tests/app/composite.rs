//! The edited photo in the app: the composite is what the edited view shows, the View toggle
//! shows the plain decode, the Edit panel's feather recomposites, and compositing runs off the
//! window's thread, recompositing only what a stroke changed.

use std::time::{Duration, Instant};

use egui::accesskit::Role;
use fae_studio::composite::{Rect, affected};

use super::*;

/// True once the active image's composite answers the last request and its decode is in.
fn composited(app: &FaeApp) -> bool {
    let Some(d) = app.state.active_doc() else { return false };
    let decoded = d.edited.is_some() && d.requested == d.edited.as_ref().map(|e| e.key);
    decoded && d.full.as_ref().map(|f| f.key) == d.composite_requested && !app.state.worker.busy()
}

/// The composite and the photo of the active image, and the pixels the edit can reach.
fn pictures(app: &FaeApp) -> (image::Rgb32FImage, image::Rgb32FImage, Option<Rect>) {
    let st = &app.state;
    let d = st.active_doc().unwrap();
    let full = d.full.as_ref().expect("a composite");
    let composite = full.shown.lock().unwrap().image.clone();
    let mask = &d.edited.as_ref().unwrap().mask;
    let reach = affected(&full.placement, mask, &st.session.settings.composite);
    (composite, (*full.photo).clone(), reach)
}

fn inside(r: Option<Rect>, x: u32, y: u32) -> bool {
    r.is_some_and(|r| x >= r.x0 && x < r.x1 && y >= r.y0 && y < r.y1)
}

/// Pixels of the composite that differ from the photo.
fn changed(composite: &image::Rgb32FImage, photo: &image::Rgb32FImage) -> usize {
    composite.pixels().zip(photo.pixels()).filter(|(a, b)| a != b).count()
}

/// A noise stroke down the centres of the left column's tokens (the tiny model's grid is
/// 4 x 4), painted on the edited pane.
fn stroke(h: &mut Harness<'_, FaeApp>) {
    h.state_mut().state.session.settings.brush.kind = BrushKind::Noise;
    h.state_mut().state.session.settings.brush.radius = 0.1;
    let r = h.state().state.canvas.image_rects[2].1;
    let at = |fx: f32, fy: f32| Pos2::new(r.min.x + fx * r.width(), r.min.y + fy * r.height());
    drag(h, &[at(0.125, 0.375), at(0.125, 0.5), at(0.125, 0.625)]);
    assert_eq!(history_len(h.state()), 1, "the stroke is one edit");
    let d = h.state().state.active_doc().unwrap();
    let mask = d.history.as_ref().unwrap().recipe().token_mask(4, 4).unwrap();
    let edited = mask.iter().filter(|&&m| m > 0.0).count();
    assert!((1..=3).contains(&edited), "{mask:?}");
}

/// Mean absolute difference (0..255) between the rendered Edited and Original panes, sampled on
/// a grid of their pictures, skipping points whose photo pixel lies in `skip`.
fn pane_difference(h: &mut Harness<'_, FaeApp>, skip: Option<Rect>, size: (u32, u32)) -> f64 {
    let rendered = h.render().expect("a rendered frame");
    let pictures = h.state().state.canvas.picture_rects.clone();
    let (original, edited) = (pictures[0].1, pictures[2].1);
    let (mut sum, mut n) = (0f64, 0usize);
    for j in 1..20 {
        for i in 1..20 {
            let (fx, fy) = (i as f32 / 20.0, j as f32 / 20.0);
            let (px, py) = ((fx * size.0 as f32) as u32, (fy * size.1 as f32) as u32);
            if inside(skip, px, py) {
                continue;
            }
            let at = |r: egui::Rect| {
                let p = r.min + Vec2::new(fx, fy) * r.size();
                rendered.get_pixel(p.x as u32, p.y as u32).0
            };
            let (a, b) = (at(original), at(edited));
            sum += (0..3).map(|c| (a[c] as f64 - b[c] as f64).abs()).sum::<f64>() / 3.0;
            n += 1;
        }
    }
    assert!(n > 50, "{n} sample points");
    sum / n as f64
}

#[test]
fn the_edited_view_is_the_composite_and_the_view_toggle_shows_the_decode() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let mut h = harness(options(dir.path(), Some(model)));
    open_sample(&mut h, &["chelsea.png"]);
    stroke(&mut h);
    wait(&mut h, 60, "the composite of the stroke", composited);

    // The edited pane is the photo, at the photo's size, bit for bit outside the edit's reach.
    let (composite, photo, reach) = pictures(h.state());
    assert_eq!(composite.dimensions(), image::image_dimensions(sample("chelsea.png")).unwrap());
    assert!(reach.is_some(), "the stroke edits tokens");
    let mut outside = 0;
    for (x, y, p) in composite.enumerate_pixels() {
        if !inside(reach, x, y) {
            assert_eq!(p, photo.get_pixel(x, y), "({x}, {y}) is outside the edit's reach");
            outside += 1;
        }
    }
    assert!(outside > 10_000, "{outside} pixels outside the edit's reach");
    assert!(changed(&composite, &photo) > 100, "the stroke changes the photo");
    // On screen the edited pane matches the original pane there too.
    let size = composite.dimensions();
    // (The two panes sample the preview at different sub-pixel offsets: a few levels apart.)
    let same = pane_difference(&mut h, reach, size);
    assert!(same < 8.0, "edited and original panes differ by {same} outside the edit");

    // The View toggle shows the plain decode instead.
    h.get_by_label("Plain decode").click();
    h.step();
    h.step();
    assert!(h.state().state.session.settings.show_decode);
    assert!(h.state().state.full_res().is_none());
    let decode = pane_difference(&mut h, reach, size);
    eprintln!("mean pane difference outside the edit: composite {same:.1}, decode {decode:.1}");
    assert!(
        decode > 2.0 * same + 4.0,
        "the plain decode differs by {decode}, the composite {same}"
    );
    h.get_by_label("Plain decode").click();
    h.step();
    assert!(h.state().state.full_res().is_some(), "back to the composite");
}

#[test]
fn changing_the_feather_in_the_edit_panel_composites_again() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let mut h = harness(options(dir.path(), Some(model)));
    open_sample(&mut h, &["chelsea.png"]);
    h.state_mut().state.session.settings.composite.feather = 4.0;
    stroke(&mut h);
    wait(&mut h, 60, "the composite of the stroke", composited);
    let (narrow, photo, _) = pictures(h.state());
    let key = h.state().state.active_doc().unwrap().full.as_ref().unwrap().key;

    h.get_by_role_and_label(Role::Slider, "feather (px)").set_value_accesskit(48.0);
    h.step();
    assert_eq!(h.state().state.session.settings.composite.feather, 48.0);
    wait(&mut h, 60, "the composite with the wider feather", |a| {
        composited(a) && a.state.active_doc().unwrap().full.as_ref().unwrap().key != key
    });
    let (wide, _, _) = pictures(h.state());
    let (n, w) = (changed(&narrow, &photo), changed(&wide, &photo));
    assert!(w > n + 1000, "a 48 px feather changes {w} pixels, a 4 px one {n}");
}

#[test]
fn compositing_a_large_photo_does_not_block_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path());
    let (w, h_px) = (4000u32, 3000u32);
    let big = dir.path().join("big.bmp");
    image::RgbImage::from_fn(w, h_px, |x, y| {
        image::Rgb([(x / 16) as u8, (y / 12) as u8, ((x ^ y) & 255) as u8])
    })
    .save(&big)
    .unwrap();
    let mut h = harness(options(dir.path(), Some(model)));
    wait_model(&mut h);
    h.state_mut().state.open_paths(vec![big]);
    wait(&mut h, 120, "the photo to be encoded", |a| ready(a, 1));

    // The first composite loads the 12-megapixel photo: the window keeps drawing meanwhile.
    let start = Instant::now();
    let (mut frames, mut times) = (0, Vec::new());
    while !composited(h.state()) {
        assert!(start.elapsed() < Duration::from_secs(120), "timed out waiting for the composite");
        let t = Instant::now();
        h.step();
        times.push(t.elapsed().as_secs_f64() * 1e3);
        frames += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = start.elapsed().as_secs_f64() * 1e3;
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    eprintln!(
        "first composite of 12 MP: {took:.0} ms, {frames} frames, median frame {median:.1} ms"
    );
    assert!(frames >= 3, "only {frames} frames in {took:.0} ms of compositing");
    assert!(median < took / 3.0, "median frame {median:.1} ms while compositing took {took:.0} ms");

    // A stroke on one corner token recomposites what it reached, not the whole photo.
    {
        let st = &mut h.state_mut().state;
        st.session.settings.brush.kind = BrushKind::Noise;
        st.session.settings.brush.radius = 0.05;
        st.stroke_point([0.125, 0.125]);
        st.end_stroke();
    }
    assert_eq!(history_len(h.state()), 1, "the stroke is one edit");
    // The frame that asks for its decode.
    h.step();
    wait(&mut h, 120, "the composite of the stroke", composited);
    let full = h.state().state.active_doc().unwrap().full.clone().unwrap();
    let region = full.region.expect("the stroke changed something");
    let part = region.area() as f64 / (w * h_px) as f64;
    eprintln!("stroke: {:.0} ms for {:.1} % of the photo", full.ms, 100.0 * part);
    assert!(part < 0.25, "the stroke recomposited {:.0} % of the photo", 100.0 * part);
}
