//! The FAE model and its training: shapes against the paper, checkpoints, training behaviour.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use burn::module::Module;
use burn::prelude::*;
use fae_studio::backend;
use fae_studio::encoders::source;
use fae_studio::fae::{
    self, CheckpointFile, Fae, FaeConfig, FaeModel, LatentStats, Through, checkpoint,
};
use fae_studio::train::{self, Stage, TrainOptions};

fn millions(n: usize) -> f64 {
    n as f64 / 1e6
}

/// Built at the paper's size (parameters stay lazy, nothing is allocated) and counted.
#[test]
fn paper_configuration_matches_the_reported_sizes() {
    let device = backend::cpu().device;
    let cfg = FaeConfig::paper();
    let model = FaeModel::new(&cfg, &device);
    let enc = millions(model.encoder.num_params());
    let fdec = millions(model.feature_decoder.num_params());
    let pdec = millions(model.pixel_decoder.num_params());
    eprintln!(
        "FAE encoder {enc:.1}M (paper 38.2M), feature decoder {fdec:.1}M (170.4M), pixel decoder {pdec:.1}M (305.4M)"
    );
    // The paper does not give every detail (biases, norms, a position table); within 2 %.
    for (ours, paper) in [(enc, 38.2), (fdec, 170.4), (pdec, 305.4)] {
        assert!((ours - paper).abs() / paper < 0.02, "{ours:.2}M vs {paper}M");
    }
    // Exactly one attention layer in the FAE encoder, with 24 heads of 256 dims.
    assert_eq!((model.encoder.attn.heads, model.encoder.attn.head_dim), (24, 256));
    assert_eq!(model.feature_decoder.blocks.len(), 6);
    assert_eq!(model.pixel_decoder.blocks.len(), 24);
}

#[test]
fn shapes_through_the_model() {
    let device = backend::cpu().device;
    let mut cfg = FaeConfig::small("x", 48, 14, 56);
    cfg.dec_width = 64;
    cfg.dec_heads = 4;
    cfg.pix_width = 64;
    cfg.pix_heads = 4;
    cfg.pix_depth = 1;
    cfg.dec_depth = 1;
    let model = FaeModel::new(&cfg, &device);
    // A non-square grid works too (RoPE has no fixed table).
    let features =
        Tensor::<3>::random([2, 3 * 5, 48], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
    let (mean, log_var) = model.encoder.forward(features);
    assert_eq!(mean.dims(), [2, 15, 32]);
    assert_eq!(log_var.dims(), [2, 15, 32]);
    let restored = model.feature_decoder.forward(mean, (3, 5));
    assert_eq!(restored.dims(), [2, 15, 48]);
    let image = model.pixel_decoder.forward(restored, (3, 5));
    assert_eq!(image.dims(), [2, 3, 42, 70]);
}

/// A handful of synthetic pictures in two class folders, plus broken files.
fn synthetic_folder(dir: &Path) {
    for (class, hue) in [("warm", [0.9f32, 0.4, 0.1]), ("cool", [0.1, 0.4, 0.9])] {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        for i in 0..3 {
            let img = image::RgbImage::from_fn(80, 64, |x, y| {
                let stripe = ((x / (6 + 2 * i) + y / 9) % 2) as f32;
                image::Rgb(std::array::from_fn(|c| ((hue[c] * (0.5 + 0.5 * stripe)) * 255.0) as u8))
            });
            img.save(dir.join(class).join(format!("{i}.png"))).unwrap();
        }
    }
    let png = std::fs::read(dir.join("warm/0.png")).unwrap();
    std::fs::write(dir.join("cool/broken.png"), &png[..png.len() / 2]).unwrap();
    std::fs::write(dir.join("notes.txt"), "not an image").unwrap();
}

fn options(data: &Path, out: &Path, cache: &Path, steps: u64, stage: Stage) -> TrainOptions {
    let mut o = TrainOptions::new(data.to_path_buf(), out.to_path_buf());
    o.steps = steps;
    o.batch = 2;
    o.size = 56;
    o.stage = stage;
    o.checkpoint_every = 5;
    o.val_every = 1000;
    o.log_every = 1;
    o.warmup = 2;
    o.lr = 2e-3;
    o.views = 2;
    o.perceptual = 0.0;
    o.cache_dir = Some(cache.to_path_buf());
    o.progress = false;
    o.architecture = Some(common::tiny_architecture());
    o
}

fn losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("val").is_none() && v.get("loss").is_some())
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

#[test]
fn training_lowers_the_loss_and_skips_broken_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, run, cache) =
        (tmp.path().join("data"), tmp.path().join("run"), tmp.path().join("cache"));
    synthetic_folder(&data);
    let device = backend::cpu().device;
    let summary = train::train(
        options(&data, &run, &cache, 40, Stage::Fae),
        &device,
        &AtomicBool::new(false),
        |_| {},
    )
    .unwrap();
    assert_eq!(summary.step, 40);
    let l = losses(&run);
    let first: f64 = l[..5].iter().map(|x| x.1).sum::<f64>() / 5.0;
    let last: f64 = l[l.len() - 5..].iter().map(|x| x.1).sum::<f64>() / 5.0;
    eprintln!("loss {first:.4} -> {last:.4}");
    assert!(last < 0.7 * first, "loss did not fall: {first} -> {last}");
    let skipped = std::fs::read_to_string(run.join("skipped.tsv")).unwrap();
    assert!(skipped.contains("notes.txt"), "{skipped}");
    assert!(skipped.contains("broken.png") || summary.skipped >= 2, "{skipped}");
    // The checkpoint is usable by the rest of the program.
    let fae = Fae::load(Some(&run.join("latest.safetensors")), &device).unwrap();
    let encoded = fae.encode_image(&data.join("warm/1.png"), None).unwrap();
    assert_eq!((encoded.latent.height, encoded.latent.width, encoded.latent.channels), (4, 4, 32));
    // Latent statistics make the training latents roughly unit-variance.
    let std = fae.stats.std.iter().map(|&s| s as f64).sum::<f64>() / 32.0;
    assert!(std > 0.0 && fae.stats.std.iter().all(|s| s.is_finite()));
}

#[test]
fn a_resumed_run_matches_an_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cache = tmp.path().join("cache");
    synthetic_folder(&data);
    let device = backend::cpu().device;
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    train::train(
        options(&data, &a, &cache, 12, Stage::All),
        &device,
        &AtomicBool::new(false),
        |_| {},
    )
    .unwrap();
    // Interrupt run b after step 6 as Ctrl-C would, then resume it.
    let stop = AtomicBool::new(false);
    let summary =
        train::train(options(&data, &b, &cache, 12, Stage::All), &device, &stop, |record| {
            if record["step"].as_u64() == Some(6) {
                stop.store(true, Ordering::Relaxed);
            }
        })
        .unwrap();
    assert!(summary.stopped_early);
    assert_eq!(summary.step, 6);
    let mut resume = options(&data, &b, &cache, 12, Stage::All);
    resume.resume = true;
    let summary = train::train(resume, &device, &AtomicBool::new(false), |_| {}).unwrap();
    assert_eq!(summary.step, 12);
    let (la, lb) = (losses(&a), losses(&b));
    let final_a = la.iter().find(|x| x.0 == 12).unwrap().1;
    let final_b = lb.iter().rev().find(|x| x.0 == 12).unwrap().1;
    eprintln!("uninterrupted {final_a:.6}, resumed {final_b:.6}");
    assert!((final_a - final_b).abs() <= 1e-4 * final_a.abs().max(1.0), "{final_a} vs {final_b}");
}

#[test]
fn checkpoints_round_trip_and_refuse_another_encoder() {
    let tmp = tempfile::tempdir().unwrap();
    let device = backend::cpu().device;
    let cfg = common::tiny_architecture();
    let model = FaeModel::new(&cfg, &device);
    let stats = LatentStats { mean: (0..32).map(|i| i as f32 * 0.1).collect(), std: vec![2.0; 32] };
    let path = tmp.path().join("m.safetensors");
    fae::save(&path, &cfg, &stats, &model, 7, None, false).unwrap();
    let ckpt = CheckpointFile::open(&path).unwrap();
    assert_eq!(
        (ckpt.config.clone(), ckpt.stats.clone(), ckpt.step),
        (cfg.clone(), stats.clone(), 7)
    );
    let loaded = ckpt.model(&device).unwrap();
    let (before, after) = (checkpoint::collect(&model), checkpoint::collect(&loaded));
    assert_eq!(before.len(), after.len());
    for (x, y) in before.iter().zip(&after) {
        assert_eq!((&x.path, &x.shape, &x.values), (&y.path, &y.shape, &y.values));
    }
    // Trained on another encoder: refused, naming both.
    let mut other = cfg.clone();
    other.encoder = "facebook/dinov2-base".into();
    other.encoder_dim = 768;
    fae::save(&path, &other, &stats, &FaeModel::new(&other, &device), 0, None, false).unwrap();
    let encoder = source::load(None, &device).unwrap();
    let err = Fae::from_checkpoint(&CheckpointFile::open(&path).unwrap(), encoder, &device)
        .err()
        .unwrap();
    let msg = format!("{err:#}");
    assert!(msg.contains("facebook/dinov2-base") && msg.contains("dinov2-small"), "{msg}");
}

/// A training process killed at an arbitrary moment (possibly mid-save) leaves a loadable checkpoint.
#[test]
fn a_run_killed_while_saving_leaves_a_loadable_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, run, cache) =
        (tmp.path().join("data"), tmp.path().join("run"), tmp.path().join("cache"));
    synthetic_folder(&data);
    let latest = run.join("latest.safetensors");
    for attempt in 0..3u64 {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fae-studio"))
            .args([
                "train",
                "--backend",
                "cpu",
                "--quiet",
                "--stage",
                "fae",
                "--size",
                "56",
                "--batch",
                "2",
                "--views",
                "1",
            ])
            .args(["--steps", "100000", "--checkpoint-every", "1", "--val-every", "100000"])
            .arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(&run)
            .arg("--cache")
            .arg(&cache)
            .args(if attempt > 0 { vec!["--resume"] } else { vec![] })
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait for a first checkpoint, then kill at a moment that varies between attempts.
        let t0 = std::time::Instant::now();
        while !latest.exists() && t0.elapsed().as_secs() < 120 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(150 + 137 * attempt));
        child.kill().unwrap();
        child.wait().unwrap();
        let ckpt = CheckpointFile::open(&latest).expect("checkpoint stays loadable");
        assert!(ckpt.has_train_state());
        ckpt.train_model(&backend::cpu().device).unwrap();
    }
    let leftovers: Vec<PathBuf> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(".latest"))
        .collect();
    eprintln!("temporary files left by killed saves: {leftovers:?}");
}

/// The adversarial term starts late in the pixel stages, logs both hinge losses, and its
/// discriminator and optimizer survive an interruption: a resumed run matches a straight one.
#[test]
fn the_adversarial_term_switches_on_late_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let cache = tmp.path().join("cache");
    synthetic_folder(&data);
    let device = backend::cpu().device;
    let opts = |out: &Path| {
        let mut o = options(&data, out, &cache, 10, Stage::Pixel);
        (o.adversarial, o.adversarial_start) = (0.5, 0.3);
        o
    };
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    train::train(opts(&a), &device, &AtomicBool::new(false), |_| {}).unwrap();
    let records: Vec<serde_json::Value> = std::fs::read_to_string(a.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v.get("l1").is_some())
        .collect();
    for r in &records {
        let step = r["step"].as_u64().unwrap();
        // Step numbers are logged after the step: steps 4.. (index 3..) train adversarially.
        assert_eq!(r.get("adv_g").is_some(), step > 3, "step {step}: {r}");
        assert_eq!(r.get("adv_d").is_some(), step > 3, "step {step}: {r}");
    }
    let stop = AtomicBool::new(false);
    train::train(opts(&b), &device, &stop, |record| {
        if record["step"].as_u64() == Some(6) {
            stop.store(true, Ordering::Relaxed);
        }
    })
    .unwrap();
    let mut resume = opts(&b);
    resume.resume = true;
    train::train(resume, &device, &AtomicBool::new(false), |_| {}).unwrap();
    let (la, lb) = (losses(&a), losses(&b));
    let final_a = la.iter().find(|x| x.0 == 10).unwrap().1;
    let final_b = lb.iter().rev().find(|x| x.0 == 10).unwrap().1;
    eprintln!("adversarial run: uninterrupted {final_a:.6}, resumed {final_b:.6}");
    assert!((final_a - final_b).abs() <= 1e-4 * final_a.abs().max(1.0), "{final_a} vs {final_b}");
}

/// The tiny architecture with the conv pixel head.
fn tiny_conv() -> FaeConfig {
    FaeConfig {
        pix_head: fae::PixelHead::Conv { coarse: 4, channels: 8, blocks: 2 },
        ..common::tiny_architecture()
    }
}

fn fixed_features(device: &Device) -> Tensor<3> {
    let n = 2 * 4 * 4 * 384;
    let values: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0).collect();
    Tensor::<1>::from_data(TensorData::new(values, [n]), device).reshape([2, 16, 384])
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().unwrap()
}

#[test]
fn a_conv_head_checkpoint_saves_and_loads_the_same_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let device = backend::cpu().device;
    let cfg = tiny_conv();
    let model = fae::model::seeded_init(FaeModel::new(&cfg, &device), 5);
    let path = tmp.path().join("conv.safetensors");
    fae::save(&path, &cfg, &LatentStats::identity(32), &model, 3, None, false).unwrap();
    let ckpt = CheckpointFile::open(&path).unwrap();
    assert_eq!(ckpt.config.pix_head, cfg.pix_head);
    let loaded = ckpt.model(&device).unwrap();
    let paths: Vec<String> = checkpoint::collect(&loaded).into_iter().map(|p| p.path).collect();
    assert!(paths.iter().any(|p| p == "pixel_decoder.conv_head.blocks.1.weight"), "{paths:?}");
    assert!(!paths.iter().any(|p| p.contains("to_pixels")), "{paths:?}");
    let run = |m: &FaeModel| values(m.pixel_decoder.forward(fixed_features(&device), (4, 4)));
    let (before, after) = (run(&model), run(&loaded));
    assert_eq!(before.len(), 2 * 3 * 56 * 56);
    assert_eq!(before, after);
    // The same file read as a linear-head model is refused, naming a tensor.
    let mut linear = cfg.clone();
    linear.pix_head = fae::PixelHead::Linear;
    fae::save(&path, &linear, &LatentStats::identity(32), &model, 3, None, false).unwrap();
    let err = CheckpointFile::open(&path).unwrap().model(&device).err().unwrap();
    assert!(format!("{err:#}").contains("conv_head"), "{err:#}");
}

/// The built-in model paints with the conv head and regenerates the sample photo as it did when
/// it was shipped (figures of `reconstruct --backend cpu` on that day).
#[test]
fn the_built_in_model_has_the_conv_head_and_its_output() {
    let device = backend::cpu().device;
    let fae = Fae::load(None, &device).unwrap();
    assert_eq!(fae.config.pix_head, fae::PixelHead::conv());
    assert!(fae.model.pixel_decoder.to_pixels.is_none());
    assert!(fae.model.pixel_decoder.conv_head.is_some());
    let sample = fae_studio::assets::path("samples/chelsea.png").unwrap();
    let r = fae.reconstruct(&sample, None).unwrap();
    eprintln!("PSNR {:.5}, SSIM {:.5}, cycle {:.5}", r.psnr, r.ssim, r.cycle_cosine);
    assert!((r.psnr - 24.017).abs() < 0.006, "PSNR {}", r.psnr);
    assert!((r.ssim - 0.55567).abs() < 6e-5, "SSIM {}", r.ssim);
    assert!((r.cycle_cosine - 0.09747).abs() < 6e-5, "cycle {}", r.cycle_cosine);
}

#[test]
fn the_held_out_evaluation_reports_the_issues_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let device = backend::cpu().device;
    for (folder, name) in [("a", "chelsea.png"), ("a", "coffee.png"), ("b", "astronaut.png")] {
        std::fs::create_dir_all(tmp.path().join(folder)).unwrap();
        let sample = fae_studio::assets::path(&format!("samples/{name}")).unwrap();
        std::fs::copy(sample, tmp.path().join(folder).join(name)).unwrap();
    }
    std::fs::write(tmp.path().join("notes.txt"), "not an image").unwrap();
    let fae = Fae::load(None, &device).unwrap();
    let report =
        fae_studio::heldout::evaluate(&fae, "built-in", tmp.path(), Through::Latent, 224, 2)
            .unwrap();
    eprintln!("{}", serde_json::to_string(&report).unwrap());
    let all = &report.all;
    assert_eq!(all.images, 3);
    assert_eq!(report.by_folder.keys().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!((report.by_folder["a"].images, report.by_folder["b"].images), (2, 1));
    assert!(all.psnr > 8.0 && all.psnr < 30.0 && all.ssim > 0.0 && all.ssim < 1.0);
    assert!(all.cycle_cosine > 0.0 && all.cycle_cosine < 1.0);
    // The photos have no grid; the reconstructions keep one (the conv head trained on decoded
    // features: 1.21 on these, against 1.03 for the samples) and are blurred.
    assert!(all.blockiness > all.blockiness_originals + 0.1, "{all:?}");
    assert!((0.8..1.25).contains(&all.blockiness_originals), "{all:?}");
    assert!(all.high_frequency_ratio > 0.0 && all.high_frequency_ratio < 1.0, "{all:?}");
    assert!(report.images_per_s > 0.0);
    // Two pairs kept for a picture: files 0 and 1 of the three (sorted), at the working size.
    assert_eq!(report.pairs.len(), 2);
    for (original, decoded) in &report.pairs {
        assert_eq!((original.dimensions(), decoded.dimensions()), ((224, 224), (224, 224)));
        assert_ne!(original, decoded);
    }
    // Skipping the latent, the pixel decoder paints the encoder's own features: the restored
    // features are those features, and the pictures are closer to the photos than through the
    // 16x16x32 bottleneck (the cycle cosine need not be: the decoder was last tuned on the
    // feature decoder's outputs).
    let ceiling =
        fae_studio::heldout::evaluate(&fae, "built-in", tmp.path(), Through::Features, 224, 0)
            .unwrap();
    eprintln!("{}", serde_json::to_string(&ceiling).unwrap());
    assert!((ceiling.all.feature_cosine - 1.0).abs() < 1e-5, "{:?}", ceiling.all);
    assert!(ceiling.all.psnr > all.psnr && ceiling.all.ssim > all.ssim, "{:?}", ceiling.all);
    assert_eq!(serde_json::to_value(&ceiling).unwrap()["through"], "features");
    let empty = tempfile::tempdir().unwrap();
    let err = fae_studio::heldout::evaluate(&fae, "m", empty.path(), Through::Latent, 224, 0)
        .unwrap_err();
    assert!(err.to_string().contains("holds no images"), "{err}");
}

/// `train --stage pixel --from CKPT --pixel-head conv`: a fresh conv head on the checkpoint's
/// model, whose FAE encoder, feature decoder and latent statistics stay as they were.
#[test]
fn a_pixel_stage_from_a_linear_checkpoint_starts_a_conv_head() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, run, cache) =
        (tmp.path().join("data"), tmp.path().join("run"), tmp.path().join("cache"));
    synthetic_folder(&data);
    let device = backend::cpu().device;
    let cfg = common::tiny_architecture();
    let base = tmp.path().join("base.safetensors");
    let stats = LatentStats { mean: vec![0.1; 32], std: vec![2.0; 32] };
    let model = fae::model::seeded_init(FaeModel::new(&cfg, &device), 1);
    fae::save(&base, &cfg, &stats, &model, 10, None, false).unwrap();
    let mut o = options(&data, &run, &cache, 4, Stage::Fae);
    (o.from, o.pixel_head) = (Some(base.clone()), Some(fae::PixelHead::conv()));
    let err = train::train(o.clone(), &device, &AtomicBool::new(false), |_| {}).unwrap_err();
    assert!(err.to_string().contains("--stage pixel"), "{err}");
    o.stage = Stage::Pixel;
    let summary = train::train(o, &device, &AtomicBool::new(false), |_| {}).unwrap();
    assert_eq!(summary.step, 4);
    let (old, new) = (
        CheckpointFile::open(&base).unwrap(),
        CheckpointFile::open(&run.join("latest.safetensors")).unwrap(),
    );
    assert_eq!(new.config.pix_head, fae::PixelHead::conv());
    old.check_same_latents(&new).unwrap();
    let trained = new.model(&device).unwrap();
    assert!(trained.pixel_decoder.conv_head.is_some() && trained.pixel_decoder.to_pixels.is_none());
    let weights = |m: &FaeModel| values(m.feature_decoder.output.weight.val());
    assert_eq!(weights(&model), weights(&trained));
    let image = trained.pixel_decoder.forward(fixed_features(&device), (4, 4));
    assert_eq!(image.dims(), [2, 3, 56, 56]);
}
