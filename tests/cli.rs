//! The command-line contract: outputs scripts rely on, and one-line errors for bad input.

use std::path::Path;

mod common;

use common::{assert_clean_failure, fae, fixture, run_ok};
use fae_studio::weights::WeightFile;

#[test]
fn features_writes_the_contracted_file_and_pca_picture() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f.safetensors");
    let pca = dir.path().join("pca.png");
    let photo = fixture("photo_224.png");
    let res = fae(&[
        "features",
        "--backend",
        "cpu",
        "--image",
        photo.to_str().unwrap(),
        "--size",
        "112",
        "--out",
        out.to_str().unwrap(),
        "--pca",
        pca.to_str().unwrap(),
    ]);
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    let file = WeightFile::open(&out).unwrap();
    assert_eq!(file.shape("patch_tokens").unwrap(), vec![64, 384]);
    assert_eq!(file.shape("cls_token").unwrap(), vec![384]);
    assert!(!file.contains("register_tokens"));
    let meta = file.metadata();
    assert_eq!(meta["encoder"], "dinov2-small");
    assert_eq!((meta["grid_h"].as_str(), meta["grid_w"].as_str()), ("8", "8"));
    let picture = image::open(&pca).unwrap();
    assert_eq!((picture.width(), picture.height()), (112, 112));
}

#[test]
fn features_with_a_local_checkpoint_and_registers() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("f.safetensors");
    let photo = fixture("photo_224.png");
    let weights = fixture("dinov2_reg_tiny.safetensors");
    let res = fae(&[
        "features",
        "--backend",
        "cpu",
        "--image",
        photo.to_str().unwrap(),
        "--encoder",
        weights.to_str().unwrap(),
        "--size",
        "56",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    let file = WeightFile::open(&out).unwrap();
    let reg = file.shape("register_tokens").unwrap();
    assert_eq!(reg[0], 4);
    assert_eq!(file.shape("patch_tokens").unwrap()[0], 16);
}

#[test]
fn bad_inputs_fail_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = d.join("out.safetensors");
    let out = out.to_str().unwrap();
    let features = |image: &Path, extra: &[&str]| {
        let mut args =
            vec!["features", "--backend", "cpu", "--image", image.to_str().unwrap(), "--out", out];
        args.extend_from_slice(extra);
        fae(&args)
    };
    std::fs::write(d.join("empty.png"), b"").unwrap();
    std::fs::write(d.join("notes.txt"), b"just some text, not an image").unwrap();
    let png = std::fs::read(fixture("photo_224.png")).unwrap();
    std::fs::write(d.join("cut.png"), &png[..png.len() / 3]).unwrap();
    std::fs::write(d.join("bomb.png"), png_declaring(200_000, 200_000)).unwrap();
    std::fs::write(d.join("model.pt"), b"\x80\x02}q\x00.").unwrap();
    let photo = fixture("photo_224.png");

    assert_clean_failure(&features(&d.join("missing.png"), &[]), "missing.png");
    assert_clean_failure(&features(&d.join("empty.png"), &[]), "empty");
    assert_clean_failure(&features(&d.join("notes.txt"), &[]), "not an image");
    assert_clean_failure(&features(&d.join("cut.png"), &[]), "cut.png");
    assert_clean_failure(&features(&d.join("bomb.png"), &[]), "bomb.png");
    assert_clean_failure(&features(d, &[]), "directory");
    assert_clean_failure(&features(&photo, &["--size", "100"]), "patch size");
    assert_clean_failure(
        &features(&photo, &["--encoder", d.join("model.pt").to_str().unwrap()]),
        "pickled",
    );
    assert_clean_failure(
        &features(&photo, &["--encoder", d.join("notes.txt").to_str().unwrap()]),
        "safetensors",
    );
    assert_clean_failure(&features(&photo, &["--encoder", "no-such-encoder"]), "unknown encoder");
    assert!(!Path::new(out).exists(), "nothing is written on failure");

    // A negative loss weight or noise level is refused before anything runs (clap's message).
    let data = d.to_str().unwrap();
    for flag in ["--ssim=-1", "--spectrum=-0.5", "--noise=-0.1", "--perceptual=nan"] {
        let run = fae(&["train", "--backend", "cpu", "--data", data, "--out", out, flag]);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{flag}: {stderr}");
        assert!(stderr.starts_with("error: ") && stderr.contains(">= 0"), "{flag}: {stderr}");
    }
    assert!(!Path::new(out).exists(), "nothing is written on failure");
}

#[test]
fn bench_prints_json_rows() {
    let res = fae(&[
        "bench",
        "--json",
        "--backend",
        "cpu",
        "--stage",
        "encoder",
        "--sizes",
        "112",
        "--batches",
        "1,2",
        "--runs",
        "1",
    ]);
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&res.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(rows.len(), 2);
    for (row, batch) in rows.iter().zip([1, 2]) {
        assert_eq!(row["stage"], "encoder");
        assert_eq!(row["backend"], "cpu");
        assert_eq!(row["size"], 112);
        assert_eq!(row["batch"], batch);
        assert!(row["median_ms"].as_f64().unwrap() > 0.0);
    }
    assert_clean_failure(&fae(&["bench", "--json", "--stage", "nope"]), "unknown stage");
}

/// A syntactically valid PNG whose header declares a huge image (and holds no pixels).
fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(b"IHDR");
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32fast::hash(&ihdr).to_be_bytes());
    png
}

/// A folder of `n` small pictures in two class sub-folders, made from the sample photos.
fn class_folder(root: &Path, n: usize) {
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/samples");
    let photos: Vec<image::RgbImage> = ["chelsea.png", "coffee.png", "astronaut.png"]
        .iter()
        .map(|f| image::open(samples.join(f)).unwrap().to_rgb8())
        .collect();
    for i in 0..n {
        let class = if i % 2 == 0 { "cats" } else { "cups" };
        std::fs::create_dir_all(root.join(class)).unwrap();
        let mut img = image::imageops::resize(&photos[i % 3], 64, 64, image::imageops::Triangle);
        if i >= 3 {
            img = image::imageops::flip_horizontal(&img);
        }
        img.save(root.join(class).join(format!("{i}.png"))).unwrap();
    }
}

#[test]
fn generator_commands_train_resume_sample_evaluate_and_harmonise() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    class_folder(&dir.path().join("data"), 6);
    let cache = p("cache");
    let train = |steps: &str, extra: &[&str]| {
        let mut args =
            vec!["train-generator", "--backend", "cpu", "--steps", steps, "--batch", "4"];
        args.extend(["--size", "56", "--views", "2", "--checkpoint-every", "3", "--previews", "2"]);
        args.extend(["--quiet"].iter().chain(extra));
        let mut args: Vec<String> = args.into_iter().map(String::from).collect();
        args.extend([
            "--data".into(),
            p("data"),
            "--out".into(),
            p("run"),
            "--cache".into(),
            cache.clone(),
        ]);
        run_ok(&args)
    };
    train("3", &[]);
    let run = dir.path().join("run");
    for f in ["latest.safetensors", "metrics.jsonl", "latents.safetensors", "samples-000003.png"] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let out = train("5", &["--resume"]);
    assert!(out.starts_with("step 5,"), "{out}");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["step"].as_u64())
        .collect();
    assert!(steps.contains(&3) && steps.contains(&5), "{steps:?}");
    let generator = p("run/latest.safetensors");

    // The same seed gives the same images; N PNGs and a contact sheet.
    let sample = |out: &str, seed: &str, class: &str| {
        run_ok(&[
            "sample",
            "--backend",
            "cpu",
            "--generator",
            &generator,
            "--class",
            class,
            "--n",
            "4",
            "--steps",
            "3",
            "--cfg",
            "2.0",
            "--seed",
            seed,
            "--batch",
            "3",
            "--out",
            out,
        ])
    };
    sample(&p("a"), "7", "cats");
    sample(&p("b"), "7", "cats");
    sample(&p("c"), "8", "cats");
    let read =
        |d: &str, i: usize| std::fs::read(Path::new(d).join(format!("sample-{i:04}.png"))).unwrap();
    for i in 0..4 {
        assert_eq!(read(&p("a"), i), read(&p("b"), i), "image {i} differs for the same seed");
    }
    assert_ne!(read(&p("a"), 0), read(&p("c"), 0));
    assert!(dir.path().join("a/contact_sheet.png").is_file());
    assert!(!dir.path().join("a/sample-0004.png").exists());

    let res = fae(&[
        "sample",
        "--backend",
        "cpu",
        "--generator",
        &generator,
        "--class",
        "dogs",
        "--out",
        &p("d"),
    ]);
    assert_clean_failure(&res, "unknown class `dogs`");
    let fae_model = fixture("photo_224.png");
    let res = fae(&[
        "sample",
        "--backend",
        "cpu",
        "--generator",
        fae_model.to_str().unwrap(),
        "--out",
        &p("d"),
    ]);
    assert_clean_failure(&res, "photo_224.png");

    // FD of a set against itself is ~0; against other images it is not.
    let eval = |real: &str, generated: &str| -> serde_json::Value {
        let out = run_ok(&[
            "evaluate",
            "--backend",
            "cpu",
            "--real",
            real,
            "--generated",
            generated,
            "--json",
        ]);
        serde_json::from_str(&out).unwrap()
    };
    let same = eval(&p("a"), &p("b"));
    assert!(same["fd"].as_f64().unwrap() < 1e-6, "{same}");
    assert_eq!((same["precision"].as_f64(), same["recall"].as_f64()), (Some(1.0), Some(1.0)));
    assert_eq!(same["generated"], 4, "the contact sheet is not counted");
    let other = eval(&p("a"), &p("c"));
    assert!(other["fd"].as_f64().unwrap() > 1.0, "{other}");

    // Harmonise through the edit command, with and without a generator.
    let recipe = dir.path().join("recipe.json");
    std::fs::write(
        &recipe,
        r#"{"version": 1, "edits": [{"op": "harmonise", "strength": 0.5, "steps": 3, "seed": 1}]}"#,
    )
    .unwrap();
    let image = dir.path().join("data/cats/0.png");
    let edited = p("edited.png");
    let edit = |extra: &[&str]| {
        let mut args = vec!["edit", "--backend", "cpu", "--image", image.to_str().unwrap()];
        args.extend(["--recipe", recipe.to_str().unwrap(), "--size", "56", "--out", &edited]);
        args.extend(extra);
        fae(&args)
    };
    assert_clean_failure(&edit(&[]), "harmonise needs a generator");
    let res = edit(&["--generator", &generator]);
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    assert_eq!(image::open(p("edited.png")).unwrap().width(), 56);
}
