//! The Generate panel.

use super::*;

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
