//! The editing workflows end to end: recipes, interpolation and inspection through the command
//! line, on a small model (random weights: these tests check properties, not image quality).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use fae_studio::backend;
use fae_studio::fae::{self, FaeModel, LatentStats};

fn tiny_model(dir: &Path) -> PathBuf {
    let device = backend::cpu().device;
    let cfg = common::tiny_architecture();
    let stats = LatentStats { mean: vec![0.1; 32], std: vec![0.5; 32] };
    let path = dir.join("tiny.safetensors");
    fae::save(&path, &cfg, &stats, &FaeModel::new(&cfg, &device), 0, None, false).unwrap();
    path
}

fn photos(dir: &Path) -> (PathBuf, PathBuf) {
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/samples");
    let (a, b) = (samples.join("chelsea.png"), samples.join("coffee.png"));
    std::fs::copy(&a, dir.join("a.png")).unwrap();
    std::fs::copy(&b, dir.join("b.png")).unwrap();
    (dir.join("a.png"), dir.join("b.png"))
}

fn fae_cmd(model: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fae-studio"))
        .args(args)
        .args(["--backend", "cpu", "--size", "56", "--model"])
        .arg(model)
        .output()
        .unwrap()
}

fn ok(out: &std::process::Output) {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn pixels(path: &Path) -> Vec<u8> {
    image::open(path).unwrap().to_rgb8().into_raw()
}

#[test]
fn an_empty_recipe_gives_exactly_the_reconstruction() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let model = tiny_model(d);
    let (a, _) = photos(d);
    std::fs::write(d.join("empty.json"), r#"{"version": 1, "edits": []}"#).unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    ok(&fae_cmd(&model, &["reconstruct", "--image", &s(&a), "--out", &s(&d.join("rec.png"))]));
    ok(&fae_cmd(
        &model,
        &[
            "edit",
            "--image",
            &s(&a),
            "--recipe",
            &s(&d.join("empty.json")),
            "--out",
            &s(&d.join("edit.png")),
        ],
    ));
    assert_eq!(pixels(&d.join("rec.png")), pixels(&d.join("edit.png")));
    // A real edit changes the picture; sources are found beside the recipe.
    std::fs::write(
        d.join("swap.json"),
        r#"{"version": 1, "edits": [{"op": "transplant", "source": "b.png", "mask": {"rect": [0.0, 0.0, 0.5, 1.0]}, "strength": 1.0}]}"#,
    )
    .unwrap();
    ok(&fae_cmd(
        &model,
        &[
            "edit",
            "--image",
            &s(&a),
            "--recipe",
            &s(&d.join("swap.json")),
            "--out",
            &s(&d.join("swap.png")),
        ],
    ));
    assert_ne!(pixels(&d.join("rec.png")), pixels(&d.join("swap.png")));
}

#[test]
fn bad_recipes_name_the_edit() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let model = tiny_model(d);
    let (a, _) = photos(d);
    std::fs::write(d.join("notes.txt"), "text").unwrap();
    let cases = [
        (r#"{"version": 1, "edits": [{"op": "teleport"}]}"#, "edit 0"),
        (
            r#"{"version": 1, "edits": [{"op": "noise", "seed": 1, "sigma": 0.1}, {"op": "blend", "strength": 0.5}]}"#,
            "edit 1 (blend)",
        ),
        (
            r#"{"version": 1, "edits": [{"op": "transplant", "source": "b.png", "mask": {"rect": [0.0, 0.0, 1.5, 1.0]}}]}"#,
            "edit 0 (transplant)",
        ),
        (
            r#"{"version": 1, "edits": [{"op": "blend", "source": "notes.txt", "strength": 0.5}]}"#,
            "edit 0 (blend)",
        ),
    ];
    for (i, (recipe, expect)) in cases.iter().enumerate() {
        let path = d.join(format!("bad{i}.json"));
        std::fs::write(&path, recipe).unwrap();
        let out = fae_cmd(
            &model,
            &[
                "edit",
                "--image",
                a.to_str().unwrap(),
                "--recipe",
                path.to_str().unwrap(),
                "--out",
                d.join("x.png").to_str().unwrap(),
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expect), "expected `{expect}` in {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert!(!d.join("x.png").exists());
}

#[test]
fn interpolation_ends_are_the_reconstructions() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let model = tiny_model(d);
    let (a, b) = photos(d);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    for mode in ["lerp", "slerp"] {
        let out = d.join(mode);
        ok(&fae_cmd(
            &model,
            &[
                "interpolate",
                "--from",
                &s(&a),
                "--to",
                &s(&b),
                "--steps",
                "4",
                "--mode",
                mode,
                "--out",
                &s(&out),
            ],
        ));
        ok(&fae_cmd(&model, &["reconstruct", "--image", &s(&a), "--out", &s(&d.join("ra.png"))]));
        ok(&fae_cmd(&model, &["reconstruct", "--image", &s(&b), "--out", &s(&d.join("rb.png"))]));
        assert_eq!(pixels(&out.join("frame_000.png")), pixels(&d.join("ra.png")), "{mode}");
        assert_eq!(pixels(&out.join("frame_003.png")), pixels(&d.join("rb.png")), "{mode}");
        assert_ne!(pixels(&out.join("frame_001.png")), pixels(&d.join("ra.png")), "{mode}");
        assert!(out.join("contact_sheet.png").is_file());
    }
}

#[test]
fn inspect_writes_pictures_and_numbers() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let model = tiny_model(d);
    let (a, b) = photos(d);
    let out = d.join("inspect");
    let res = fae_cmd(
        &model,
        &[
            "inspect",
            "--image",
            a.to_str().unwrap(),
            "--with",
            b.to_str().unwrap(),
            "--token",
            "1,2",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    ok(&res);
    for name in [
        "pca_features",
        "pca_latent",
        "pca_restored",
        "channels",
        "similarity",
        "preservation",
        "cycle",
        "reconstruction",
    ] {
        assert!(out.join(format!("{name}.png")).is_file(), "{name}");
        assert!(out.join(format!("{name}_with.png")).is_file(), "{name}_with");
    }
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    let first = &metrics["images"][0];
    assert_eq!(first["preservation"].as_array().unwrap().len(), 16);
    assert_eq!(first["latent_channels"].as_array().unwrap().len(), 32);
    // The similarity of the chosen token to itself is 1.
    assert!((first["similarity"][4 + 2].as_f64().unwrap() - 1.0).abs() < 1e-5);
    let out_of_grid = fae_cmd(
        &model,
        &[
            "inspect",
            "--image",
            a.to_str().unwrap(),
            "--token",
            "9,9",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(!out_of_grid.status.success());
}
