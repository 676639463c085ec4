//! The Fine-tune panel.

use super::*;

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
