//! The command-line contract: outputs scripts rely on, and one-line errors for bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fae_studio::weights::WeightFile;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn fae(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fae-studio")).args(args).output().expect("run fae-studio")
}

/// A failure must be one clear line on stderr and a non-zero exit, never a panic.
fn assert_clean_failure(out: &Output, expect: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should fail: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line expected: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("internal failure"), "{stderr}");
    assert!(
        stderr.to_lowercase().contains(&expect.to_lowercase()),
        "expected `{expect}` in: {stderr}"
    );
}

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
