//! Every command as a user runs it: the release binary with its default flags (default backend,
//! default loss terms, default stage) on the built-in models, on a few small photos, with its
//! outputs read back and checked. `tests/cli.rs` holds the error contract and flag variations.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

mod common;

use common::{fae, fixture, run_ok};
use fae_studio::fae::{CheckpointFile, FaeConfig, PixelHead};
use fae_studio::generator::GeneratorFile;
use fae_studio::weights::WeightFile;
use serde_json::Value;

fn asset(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets").join(name)
}

fn s(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// Eight small photos of different shapes (resizes and crops of the sample photos), written once
/// per test run and shared by the tests.
fn photos() -> &'static Path {
    static PHOTOS: OnceLock<PathBuf> = OnceLock::new();
    PHOTOS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("commands-photos");
        std::fs::create_dir_all(&dir).unwrap();
        let sources = [
            asset("samples/chelsea.png"),
            asset("samples/coffee.png"),
            asset("samples/astronaut.png"),
            fixture("photo_224.png"),
        ];
        let filter = image::imageops::Triangle;
        for (i, path) in sources.iter().enumerate() {
            let photo = image::open(path).unwrap().to_rgb8();
            let whole = image::imageops::resize(&photo, 96, 72, filter);
            whole.save(dir.join(format!("{i}-whole.png"))).unwrap();
            let (w, h) = photo.dimensions();
            let part = image::imageops::crop_imm(&photo, w / 4, h / 6, w * 2 / 3, h * 2 / 3);
            let part = image::imageops::resize(&part.to_image(), 64, 80, filter);
            part.save(dir.join(format!("{i}-part.png"))).unwrap();
        }
        dir
    })
}

fn photo(name: &str) -> PathBuf {
    photos().join(name)
}

fn rgb(path: &Path) -> image::RgbImage {
    image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8()
}

/// The number after `label` in `text`, e.g. `number_after("PSNR 12.30 dB", "PSNR ")`.
fn number_after(text: &str, label: &str) -> f64 {
    let rest = &text[text.find(label).unwrap_or_else(|| panic!("no `{label}` in: {text}"))..];
    let rest = rest[label.len()..].trim_start();
    let end = rest.find(|c: char| !(c.is_ascii_digit() || "-.e".contains(c))).unwrap_or(rest.len());
    rest[..end].parse().unwrap_or_else(|e| panic!("`{label}` in `{text}`: {e}"))
}

/// Every JSON line of `metrics.jsonl`.
fn metrics(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// A number that must be there and finite (serde_json writes NaN and infinities as null).
fn finite(record: &Value, key: &str) -> f64 {
    let v =
        record[key].as_f64().unwrap_or_else(|| panic!("`{key}` missing or not finite: {record}"));
    assert!(v.is_finite(), "{key}: {record}");
    v
}

/// Checks the per-step records of an FAE training run and returns (step, stage) of each.
fn train_records(records: &[Value]) -> Vec<(u64, String)> {
    let steps: Vec<&Value> =
        records.iter().filter(|r| r.get("val").is_none() && r.get("event").is_none()).collect();
    for r in &steps {
        assert!(finite(r, "loss") > 0.0, "{r}");
        assert!(finite(r, "lr") > 0.0, "{r}");
        assert!(finite(r, "images_per_s") > 0.0, "{r}");
        match r["stage"].as_str().unwrap() {
            "fae" => {
                for k in ["mse", "kl", "cos_dist"] {
                    assert!(finite(r, k) >= 0.0, "{r}");
                }
                assert!(r.get("l1").is_none() && r.get("perceptual").is_none(), "{r}");
            }
            "pixel-noisy" | "pixel-decoded" => {
                assert!((0.0..=1.0).contains(&finite(r, "l1")), "{r}");
                // The default perceptual term ran: a cosine distance, in [0, 2].
                assert!((0.0..=2.0).contains(&finite(r, "perceptual")), "{r}");
            }
            other => panic!("unknown stage {other}: {r}"),
        }
    }
    assert!(records.iter().all(|r| r.get("event").is_none()), "a step was skipped: {records:?}");
    steps
        .iter()
        .map(|r| (r["step"].as_u64().unwrap(), r["stage"].as_str().unwrap().into()))
        .collect()
}

/// The validation record of `step`, with its figures in their ranges.
fn validation(records: &[Value], step: u64) -> &Value {
    let v = &records
        .iter()
        .find(|r| r["step"] == step && r.get("val").is_some())
        .unwrap_or_else(|| panic!("no validation at step {step}: {records:?}"))["val"];
    assert!((0.0..100.0).contains(&finite(v, "psnr")), "{v}");
    for k in ["ssim", "feature_cosine", "cycle_cosine"] {
        assert!((-1.0..=1.0).contains(&finite(v, k)), "{v}");
    }
    assert!(v["images"].as_u64().unwrap() >= 1, "{v}");
    v
}

fn stages(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// `fae-studio train` with the user's flags, a small size and its own feature cache.
fn train(run: &Path, extra: &[&str]) -> String {
    let cache = run.with_extension("cache");
    let mut args = vec!["train", "--data", s(photos()), "--out", s(run), "--cache", s(&cache)];
    args.extend(extra);
    run_ok(&args)
}

/// The reconstruction line's figures: PSNR, SSIM, feature cosine, cycle cosine.
fn reconstruction(out: &str) -> [f64; 4] {
    let figures =
        ["PSNR ", "SSIM ", "feature cosine ", "cycle cosine "].map(|l| number_after(out, l));
    assert!((0.0..100.0).contains(&figures[0]), "{out}");
    assert!(figures[1..].iter().all(|v| (-1.0..=1.0).contains(v)), "{out}");
    figures
}

/// Without `--stage` a run is `--stage all`: FAE steps, then both pixel stages with the default
/// perceptual term (on the frozen encoder under autodiff); `--resume` continues its steps, and
/// the checkpoint and its export load in `reconstruct`.
#[test]
fn train_default_stage_then_resume_and_export() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let flags = ["--steps", "4", "--batch", "2", "--size", "56", "--log-every", "1"];
    let out = train(&run, &flags);
    assert!(out.starts_with("step 4, loss ") && out.contains("val PSNR"), "{out}");
    let records = metrics(&run);
    let expected = stages(&["fae", "fae", "pixel-noisy", "pixel-decoded"]);
    let got = train_records(&records);
    assert_eq!(got, (1..=4).zip(expected).collect::<Vec<_>>());
    validation(&records, 4);
    let val = rgb(&run.join("val-000004.png"));
    assert_eq!((val.width() % 56, val.height()), (0, 112));
    assert_eq!(std::fs::read_to_string(run.join("skipped.tsv")).unwrap(), "");
    let ckpt = CheckpointFile::open(&run.join("latest.safetensors")).unwrap();
    assert_eq!(ckpt.step, 4);
    assert_eq!(ckpt.train_state().unwrap()["options"]["stage"], "all");
    assert_eq!(ckpt.config.encoder, "dinov2-small");

    // A resumed run takes its settings from the checkpoint.
    let out = train(&run, &["--resume", "--steps", "6"]);
    assert!(out.starts_with("step 6, loss "), "{out}");
    let records = metrics(&run);
    let steps: Vec<u64> = train_records(&records).iter().map(|(step, _)| *step).collect();
    assert_eq!(steps, [1, 2, 3, 4, 5, 6], "steps continue after the resume");
    validation(&records, 6);
    let latest = run.join("latest.safetensors");
    assert_eq!(CheckpointFile::open(&latest).unwrap().step, 6);

    // A resumed CPU run starts no wgpu context (burn first loads the optimizer's state on its
    // default device): Mesa's Vulkan driver would complain about the missing runtime folder.
    let cache = run.with_extension("cache");
    let copy = dir.path().join("resumed");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::copy(&latest, copy.join("latest.safetensors")).unwrap();
    let args = ["--backend", "cpu", "train", "--data", s(photos()), "--out", s(&copy)];
    let res = Command::new(env!("CARGO_BIN_EXE_fae-studio"))
        .args(args)
        .args(["--cache", s(&cache), "--resume", "--steps", "7"])
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("BURN_DEVICE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{stderr}");
    assert!(!stderr.contains("XDG_RUNTIME_DIR"), "a wgpu context was started: {stderr}");

    // The checkpoint and its inference weights alone reconstruct alike.
    let exported = dir.path().join("exported.safetensors");
    run_ok(&["export", "--model", s(&latest), "--out", s(&exported)]);
    let file = CheckpointFile::open(&exported).unwrap();
    assert!(!file.has_train_state() && file.step == 6);
    assert!(
        std::fs::metadata(&exported).unwrap().len() < std::fs::metadata(&latest).unwrap().len()
    );
    let image = photo("0-whole.png");
    let rebuilt = |model: &Path, out: &Path| {
        let printed = run_ok(&[
            "reconstruct",
            "--image",
            s(&image),
            "--model",
            s(model),
            "--size",
            "56",
            "--out",
            s(out),
        ]);
        reconstruction(&printed);
        printed
    };
    let (a, b) = (dir.path().join("a.png"), dir.path().join("b.png"));
    assert_eq!(rebuilt(&latest, &a), rebuilt(&exported, &b));
    assert_eq!(rgb(&a).dimensions(), (56, 56));
    assert_eq!(rgb(&a), rgb(&b));
}

/// `--stage fae`, `--stage pixel` (from scratch, the default perceptual term) and `--stage all`,
/// each split into its phases.
#[test]
fn train_each_stage_with_the_default_loss_terms() {
    let dir = tempfile::tempdir().unwrap();
    for (stage, expected) in [
        ("fae", stages(&["fae", "fae"])),
        ("pixel", stages(&["pixel-noisy", "pixel-noisy", "pixel-decoded"])),
        ("all", stages(&["fae", "pixel-noisy", "pixel-decoded"])),
    ] {
        let run = dir.path().join(stage);
        let steps = expected.len().to_string();
        let flags = ["--stage", stage, "--steps", &steps, "--batch", "2", "--size", "56"];
        let out = train(&run, &[&flags[..], &["--log-every", "1"]].concat());
        assert!(out.starts_with(&format!("step {steps}, loss ")), "{stage}: {out}");
        let records = metrics(&run);
        let got = train_records(&records);
        assert_eq!(got, (1..).zip(expected).collect::<Vec<_>>(), "{stage}");
        validation(&records, steps.parse().unwrap());
        let ckpt = CheckpointFile::open(&run.join("latest.safetensors")).unwrap();
        assert_eq!(ckpt.train_state().unwrap()["options"]["stage"], stage);
        assert!(ckpt.stats.std.iter().all(|s| s.is_finite() && *s > 0.0), "{stage}");
    }
}

/// The fine-tune a user makes of the built-in model: every stage, then only the pixel decoder,
/// exported in f16, with the built-in generator moved to it and sampling from it.
#[test]
fn fine_tune_the_built_in_model_and_move_the_built_in_generator() {
    let dir = tempfile::tempdir().unwrap();
    let builtin = asset("fae-default.safetensors");
    let original = CheckpointFile::open(&builtin).unwrap();
    let flags = ["--from", s(&builtin), "--batch", "2", "--size", "56", "--log-every", "1"];

    let all = dir.path().join("all");
    let out = train(&all, &[&flags[..], &["--steps", "2", "--balance"]].concat());
    assert!(out.starts_with("step 2, loss "), "{out}");
    let records = metrics(&all);
    assert_eq!(train_records(&records), [(1, "fae".into()), (2, "pixel-decoded".into())]);
    validation(&records, 2);
    let tuned = CheckpointFile::open(&all.join("latest.safetensors")).unwrap();
    assert_eq!(tuned.config, original.config, "a fine-tune keeps the architecture");
    assert_ne!(tuned.stats, original.stats, "new FAE weights, new latent statistics");

    // A conv head only grows: fewer blocks than the built-in model's 2 would drop trained ones.
    let x = dir.path().join("x");
    let shrink_flags = ["train", "--data", s(photos()), "--out", s(&x), "--stage", "pixel"];
    let shrink = fae(&[&shrink_flags[..], &flags[..], &["--head-blocks", "1"]].concat());
    let stderr = String::from_utf8_lossy(&shrink.stderr);
    assert!(!shrink.status.success() && !stderr.contains("panicked"), "{stderr}");
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(last.starts_with("error: ") && last.ends_with("a head only grows"), "{stderr}");
    assert!(!x.join("latest.safetensors").exists(), "nothing is written");

    // With the amplitude-spectrum and structural-similarity terms, on a head grown to 3 blocks.
    let pixel = dir.path().join("pixel");
    let pixel_flags = [
        "--stage",
        "pixel",
        "--steps",
        "2",
        "--spectrum",
        "1",
        "--ssim",
        "1",
        "--head-blocks",
        "3",
    ];
    let out = train(&pixel, &[&flags[..], &pixel_flags[..]].concat());
    assert!(out.starts_with("step 2, loss "), "{out}");
    let records = metrics(&pixel);
    let expected = [(1, "pixel-noisy".into()), (2, "pixel-decoded".into())];
    assert_eq!(train_records(&records), expected);
    for r in records.iter().filter(|r| r.get("l1").is_some()) {
        assert!(finite(r, "spectrum") > 0.0, "{r}");
        assert!((0.0..=2.0).contains(&finite(r, "ssim")), "{r}");
    }
    let latest = pixel.join("latest.safetensors");
    let tuned = CheckpointFile::open(&latest).unwrap();
    let head = |blocks| PixelHead::Conv { coarse: 16, channels: 32, blocks };
    assert_eq!(original.config.pix_head, head(2));
    let config = FaeConfig { pix_head: head(3), ..original.config.clone() };
    assert_eq!((&tuned.config, &tuned.stats), (&config, &original.stats));

    let exported = dir.path().join("tuned-f16.safetensors");
    run_ok(&["export", "--model", s(&latest), "--out", s(&exported), "--f16"]);
    let size = |p: &Path| std::fs::metadata(p).unwrap().len() as f64;
    assert!((size(&exported) / size(&builtin) - 1.0).abs() < 0.01, "f16, as the built-in");
    let moved = dir.path().join("generator.safetensors");
    let generator = asset("generator-default.safetensors");
    run_ok(&[
        "export",
        "--model",
        s(&generator),
        "--fae",
        s(&exported),
        "--out",
        s(&moved),
        "--f16",
    ]);
    let file = GeneratorFile::open(&moved).unwrap();
    assert_eq!(file.fae.path.as_deref(), Some(exported.as_path()));
    assert_eq!(file.step, GeneratorFile::open(&generator).unwrap().step);
    let samples = dir.path().join("samples");
    run_ok(&["sample", "--generator", s(&moved), "--n", "2", "--steps", "3", "--out", s(&samples)]);
    for i in 0..2 {
        assert_eq!(rgb(&samples.join(format!("sample-{i:04}.png"))).dimensions(), (224, 224));
    }
    assert!(samples.join("contact_sheet.png").is_file());
}

/// A generator trained with the default flags on the FAE latents of the photos: previews, the
/// latent cache, samples, its export and the evaluation of its samples against the photos.
#[test]
fn train_generator_sample_export_and_evaluate() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let cache = dir.path().join("cache");
    let out = run_ok(&[
        "train-generator",
        "--data",
        s(photos()),
        "--out",
        s(&run),
        "--steps",
        "3",
        "--batch",
        "4",
        "--size",
        "56",
        "--cache",
        s(&cache),
    ]);
    // Eight photos, four views each.
    assert!(out.starts_with("step 3, loss ") && out.trim_end().ends_with(", 32 latents"), "{out}");
    let records = metrics(&run);
    let last = records.iter().find(|r| r["step"] == 3 && r.get("loss").is_some()).unwrap();
    assert!(finite(last, "loss") > 0.0 && finite(last, "lr") > 0.0, "{last}");
    assert!(finite(last, "latents_per_s") > 0.0, "{last}");
    assert!(records.iter().any(|r| r["preview"] == "samples-000003.png"), "{records:?}");
    let preview = rgb(&run.join("samples-000003.png"));
    assert!(preview.width() >= 4 * 56 && preview.height() >= 2 * 56);
    let latents = WeightFile::open(&run.join("latents.safetensors")).unwrap();
    assert!(latents.names().count() >= 1);
    let latest = run.join("latest.safetensors");
    let file = GeneratorFile::open(&latest).unwrap();
    assert_eq!((file.step, file.config.grid, file.config.channels), (3, (4, 4), 32));
    assert!(file.fae.path.is_none(), "trained on the built-in model");

    // Default sampling: eight images and a contact sheet.
    let samples = dir.path().join("samples");
    run_ok(&["sample", "--generator", s(&latest), "--out", s(&samples)]);
    let images: Vec<image::RgbImage> =
        (0..8).map(|i| rgb(&samples.join(format!("sample-{i:04}.png")))).collect();
    assert!(images.iter().all(|i| i.dimensions() == (56, 56)));
    assert!(!samples.join("sample-0008.png").exists());
    assert!(samples.join("contact_sheet.png").is_file());

    // The exported generator samples the same images.
    let exported = dir.path().join("generator.safetensors");
    run_ok(&["export", "--model", s(&latest), "--out", s(&exported)]);
    let file = GeneratorFile::open(&exported).unwrap();
    assert!(!fae_studio::fae::checkpoint::has_train_state(&file.file) && file.step == 3);
    let again = dir.path().join("again");
    run_ok(&["sample", "--generator", s(&exported), "--out", s(&again)]);
    for (i, image) in images.iter().enumerate() {
        assert!(*image == rgb(&again.join(format!("sample-{i:04}.png"))), "sample {i} differs");
    }

    let out = run_ok(&["evaluate", "--real", s(photos()), "--generated", s(&samples), "--json"]);
    let e: Value = serde_json::from_str(&out).unwrap_or_else(|err| panic!("{out}: {err}"));
    assert!(finite(&e, "fd") > 0.0, "{e}");
    for k in ["precision", "recall"] {
        assert!((0.0..=1.0).contains(&finite(&e, k)), "{e}");
    }
    assert_eq!(
        (e["real"].as_u64(), e["generated"].as_u64(), e["k"].as_u64()),
        (Some(8), Some(8), Some(3))
    );
    assert_eq!(e["encoder"], "dinov2-small");

    // The round-trip evaluation of the built-in model on the photos, with its picture.
    let grid = dir.path().join("grid.png");
    let out = run_ok(&["evaluate", "--reconstruct", s(photos()), "--grid", s(&grid), "--json"]);
    let r: Value = serde_json::from_str(&out).unwrap_or_else(|err| panic!("{out}: {err}"));
    assert_eq!(r["images"].as_u64(), Some(8), "{r}");
    assert!(finite(&r, "psnr") > 8.0 && finite(&r, "blockiness") > 0.0, "{r}");
    assert!(finite(&r, "spurious_dots") >= 0.0, "{r}");
    // The flat references: per patch is closer to the photos than per image.
    assert!(finite(&r, "psnr_flat_patches") > finite(&r, "psnr_flat_image") + 3.0, "{r}");
    assert_eq!(rgb(&grid).dimensions(), (8 * 224, 2 * 224));
}

/// The built-in generator samples 224 px images for the built-in model.
#[test]
fn sample_from_the_built_in_generator() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("samples");
    let generator = asset("generator-default.safetensors");
    run_ok(&["sample", "--generator", s(&generator), "--n", "2", "--steps", "4", "--out", s(&out)]);
    let images: Vec<image::RgbImage> =
        (0..2).map(|i| rgb(&out.join(format!("sample-{i:04}.png")))).collect();
    assert!(images.iter().all(|i| i.dimensions() == (224, 224)));
    assert!(images[0] != images[1], "seeds 0 and 1 gave the same image");
    for image in &images {
        let values: Vec<f64> = image.as_raw().iter().map(|&v| v as f64).collect();
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
        assert!(var.sqrt() > 5.0, "a flat image (std {:.1})", var.sqrt());
    }
    assert!(out.join("contact_sheet.png").is_file());
}

/// An edit recipe with a transplant and a masked `harmonise` on the built-in models, replayed
/// twice to the same image.
#[test]
fn edit_with_harmonise_on_the_built_in_models() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(photo("1-whole.png"), dir.path().join("cup.png")).unwrap();
    let recipe = dir.path().join("recipe.json");
    std::fs::write(
        &recipe,
        r#"{"version": 1, "edits": [
  {"op": "transplant", "source": "cup.png", "mask": {"rect": [0.5, 0.0, 1.0, 1.0]}},
  {"op": "harmonise", "strength": 0.4, "steps": 3, "seed": 7, "mask": {"rect": [0.25, 0.0, 0.75, 1.0]}}
]}"#,
    )
    .unwrap();
    let image = photo("0-whole.png");
    let generator = asset("generator-default.safetensors");
    let edit = |out: &Path| {
        let args = ["edit", "--image", s(&image), "--recipe", s(&recipe)];
        run_ok(&[&args[..], &["--generator", s(&generator), "--out", s(out)]].concat());
        rgb(out)
    };
    let (a, b) = (dir.path().join("a.png"), dir.path().join("b.png"));
    let edited = edit(&a);
    assert_eq!(edited.dimensions(), (224, 224));
    assert!(edited == edit(&b), "the same recipe gave another image");
    let plain = dir.path().join("plain.png");
    reconstruction(&run_ok(&["reconstruct", "--image", s(&image), "--out", s(&plain)]));
    assert!(edited != rgb(&plain), "the edits changed nothing");
}

/// `reconstruct`, `encode` then `decode`, `interpolate`, `inspect` and `features` on the built-in
/// model at its own size, agreeing with one another.
#[test]
fn built_in_model_commands_agree() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let (a, b) = (photo("0-whole.png"), photo("2-part.png"));

    let printed = run_ok(&["reconstruct", "--image", s(&a), "--out", s(&p("rec.png"))]);
    let [psnr, _, feature_cosine, _] = reconstruction(&printed);
    // The built-in model: about 14.7 dB and feature cosine 0.93 on held-out photos.
    assert!(psnr > 8.0 && feature_cosine > 0.8, "{printed}");
    let rec = rgb(&p("rec.png"));
    assert_eq!(rec.dimensions(), (224, 224));

    run_ok(&["encode", "--image", s(&a), "--out", s(&p("a.safetensors"))]);
    let file = WeightFile::open(&p("a.safetensors")).unwrap();
    assert_eq!(file.shape("latent").unwrap(), [16, 16, 32]);
    let meta = file.metadata();
    assert_eq!((meta["encoder"].as_str(), meta["normalised"].as_str()), ("dinov2-small", "true"));
    let latent = file.read_f32("latent", &[16, 16, 32]).unwrap();
    assert!(latent.iter().all(|v| v.is_finite()));
    let std =
        (latent.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / latent.len() as f64).sqrt();
    assert!((0.2..5.0).contains(&std), "a normalised latent, rms {std}");
    run_ok(&["decode", "--latent", s(&p("a.safetensors")), "--out", s(&p("dec.png"))]);
    assert!(rgb(&p("dec.png")) == rec, "decode(encode(x)) differs from reconstruct");

    run_ok(&["interpolate", "--from", s(&a), "--to", s(&b), "--steps", "3", "--out", s(&p("i"))]);
    let frames: Vec<image::RgbImage> =
        (0..3).map(|i| rgb(&p(&format!("i/frame_{i:03}.png")))).collect();
    assert!(frames[0] == rec, "the first frame is A's reconstruction");
    assert!(frames[1] != frames[0] && frames[1] != frames[2]);
    assert!(!p("i/frame_003.png").exists() && p("i/contact_sheet.png").is_file());

    run_ok(&["inspect", "--image", s(&a), "--with", s(&b), "--out", s(&p("inspect"))]);
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(p("inspect/metrics.json")).unwrap()).unwrap();
    assert_eq!(
        (m["encoder"].as_str(), m["model_step"].as_u64()),
        (Some("dinov2-small"), Some(2400))
    );
    let items = m["images"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    for (item, suffix) in items.iter().zip(["", "_with"]) {
        assert_eq!(item["grid"], serde_json::json!([16, 16]));
        assert_eq!(item["latent_channels"].as_array().unwrap().len(), 32);
        for key in ["preservation", "cycle", "similarity"] {
            let values = item[key].as_array().unwrap();
            assert_eq!(values.len(), 256, "{key}");
            let ok =
                values.iter().all(|v| v.as_f64().is_some_and(|v| (-1.001..=1.001).contains(&v)));
            assert!(ok, "{key}: {values:?}");
        }
        for name in ["original", "reconstruction", "pca_features", "pca_restored", "pca_latent"] {
            assert_eq!(rgb(&p(&format!("inspect/{name}{suffix}.png"))).dimensions(), (224, 224));
        }
        for name in ["preservation", "cycle", "channels", "similarity"] {
            assert!(p(&format!("inspect/{name}{suffix}.png")).is_file(), "{name}{suffix}");
        }
    }
    // The first image's figures are those `reconstruct` printed; its centre token is itself.
    let first = &items[0];
    assert!((finite(first, "psnr") - psnr).abs() < 0.01, "{} vs {psnr}", first["psnr"]);
    assert!((finite(first, "preservation_mean") - feature_cosine).abs() < 1e-3);
    assert_eq!(first["similarity_token"], serde_json::json!([8, 8]));
    let centre = first["similarity"][8 * 16 + 8].as_f64().unwrap();
    assert!((centre - 1.0).abs() < 1e-4, "{centre}");

    run_ok(&["features", "--image", s(&a), "--out", s(&p("f.safetensors"))]);
    let f = WeightFile::open(&p("f.safetensors")).unwrap();
    assert_eq!(f.shape("patch_tokens").unwrap(), [256, 384]);
    let tokens = f.read_f32("patch_tokens", &[256, 384]).unwrap();
    assert!(tokens.iter().all(|v| v.is_finite()) && tokens.iter().any(|v| *v != 0.0));
}

/// `devices` names what `--backend auto` picks, and a quick benchmark stage prints JSON rows.
#[test]
fn devices_and_bench() {
    let out = run_ok(&["devices"]);
    let auto =
        out.lines().find_map(|l| l.strip_prefix("auto: ")).unwrap_or_else(|| panic!("{out}"));
    // A hardware GPU when one is listed, otherwise the CPU.
    let hardware = out.lines().filter(|l| l.starts_with("wgpu: ")).any(|l| !l.ends_with(", Cpu)"));
    assert_eq!(!auto.starts_with("CPU (flex"), hardware, "{out}");

    let args = ["bench", "--json", "--stage", "roundtrip", "--sizes", "56", "--batches", "1"];
    let out = run_ok(&[&args[..], &["--runs", "1"]].concat());
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(rows[0]["backend"], "cpu", "{out}");
    assert_eq!(rows.len(), if hardware { 2 } else { 1 }, "{out}");
    for row in &rows {
        assert_eq!(
            (row["stage"].as_str(), row["model"].as_str()),
            (Some("roundtrip"), Some("fae-default"))
        );
        assert_eq!(
            (row["size"].as_u64(), row["batch"].as_u64(), row["runs"].as_u64()),
            (Some(56), Some(1), Some(1))
        );
        let (median, min) = (finite(row, "median_ms"), finite(row, "min_ms"));
        assert!(median > 0.0 && min > 0.0 && min <= median, "{row}");
        assert!(row["peak_mem_mib"].as_f64().is_none_or(|m| m > 0.0), "{row}");
    }
}

/// A packaged binary (tools/package.sh: the binary with assets/ beside it) run from another
/// folder finds its own assets/: here the packaged "built-in encoder" is the tiny fixture, so its
/// 48-dimensional tokens show which folder was read. Without assets/ beside it, the source tree's.
#[test]
fn a_packaged_binary_finds_the_assets_beside_itself() {
    let dir = tempfile::tempdir().unwrap();
    let (package, elsewhere) = (dir.path().join("fae-studio-pkg"), dir.path().join("elsewhere"));
    std::fs::create_dir_all(&package).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    let source = PathBuf::from(env!("CARGO_BIN_EXE_fae-studio"));
    let binary = package.join(source.file_name().unwrap());
    std::fs::copy(&source, &binary).unwrap();
    let features = |binary: &Path| {
        let out = std::process::Command::new(binary)
            .args(["--backend", "cpu", "features", "--size", "56", "--out", "t.safetensors"])
            .arg("--image")
            .arg(asset("samples/chelsea.png"))
            .current_dir(&elsewhere)
            .env_remove("FAE_STUDIO_ASSETS")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        assert!(elsewhere.join("t.safetensors").is_file());
        err
    };
    // Nothing beside it yet: the source tree's assets (the real DINOv2-S).
    assert!(features(&binary).contains("4x4 tokens of 384 dims"));
    std::fs::create_dir_all(package.join("assets")).unwrap();
    std::fs::copy(
        fixture("dinov2_tiny.safetensors"),
        package.join("assets/dinov2-small.safetensors"),
    )
    .unwrap();
    let err = features(&binary);
    assert!(err.contains("4x4 tokens of 48 dims from dinov2-small"), "{err}");
}
