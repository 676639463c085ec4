//! The generator checked without images: on a known Gaussian mixture in latent space, a briefly
//! trained flow model's samples have the mixture's mean and covariance for every sampler, and
//! guided class-conditional samples land in their class's mode. Also: seeds, resume, round trip,
//! and moving a generator to another FAE model.

use std::sync::atomic::AtomicBool;

mod common;

use fae_studio::backend;
use fae_studio::generator::latents::LatentSet;
use fae_studio::generator::train::{GeneratorTrainOptions, fit};
use fae_studio::generator::{
    FaeRef, GeneratorConfig, GeneratorFile, GeneratorSize, SampleOptions, Sampler, sample,
};
use fae_studio::rng::Rng;

const DIM: usize = 8; // a 2 x 2 grid of 2 channels

/// Two classes, `x = mu_k + A z`, with different means and a shared correlated covariance.
struct Mixture {
    means: [[f64; DIM]; 2],
    a: [[f64; DIM]; DIM],
}

impl Mixture {
    fn new() -> Self {
        let mut means = [[0.0; DIM]; 2];
        let mut a = [[0.0; DIM]; DIM];
        for i in 0..DIM {
            means[0][i] = if i % 2 == 0 { 1.5 } else { 0.5 };
            means[1][i] = if i % 2 == 0 { -1.0 } else { 1.0 };
            a[i][i] = 0.35 + 0.05 * i as f64;
            if i > 0 {
                a[i][i - 1] = 0.2;
            }
        }
        Self { means, a }
    }

    fn draw(&self, n: usize, seed: u64) -> LatentSet {
        let mut rng = Rng::new(seed);
        let mut values = Vec::with_capacity(n * DIM);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let k = i % 2;
            let z = rng.normals(DIM);
            for r in 0..DIM {
                let v =
                    self.means[k][r] + (0..DIM).map(|c| self.a[r][c] * z[c] as f64).sum::<f64>();
                values.push(v as f32);
            }
            labels.push(Some(k));
        }
        LatentSet {
            grid: (2, 2),
            channels: 2,
            classes: vec!["a".into(), "b".into()],
            values,
            labels,
        }
    }

    /// Mean and covariance of the equal-weight mixture.
    fn moments(&self) -> ([f64; DIM], [[f64; DIM]; DIM]) {
        let [m0, m1] = &self.means;
        let mean = std::array::from_fn(|i| 0.5 * (m0[i] + m1[i]));
        let cov = std::array::from_fn(|r| {
            std::array::from_fn(|c| {
                let aa: f64 = (0..DIM).map(|k| self.a[r][k] * self.a[c][k]).sum();
                aa + 0.25 * (m0[r] - m1[r]) * (m0[c] - m1[c])
            })
        });
        (mean, cov)
    }
}

fn moments(samples: &[f32]) -> ([f64; DIM], [[f64; DIM]; DIM]) {
    let n = samples.len() / DIM;
    let mut mean = [0.0; DIM];
    for s in samples.chunks_exact(DIM) {
        mean.iter_mut().zip(s).for_each(|(m, &v)| *m += v as f64 / n as f64);
    }
    let mut cov = [[0.0; DIM]; DIM];
    for s in samples.chunks_exact(DIM) {
        let d: Vec<f64> = s.iter().zip(&mean).map(|(&v, m)| v as f64 - m).collect();
        for (row, dr) in cov.iter_mut().zip(&d) {
            row.iter_mut().zip(&d).for_each(|(c, dc)| *c += dr * dc / (n - 1) as f64);
        }
    }
    (mean, cov)
}

fn options(out: &std::path::Path, steps: u64) -> GeneratorTrainOptions {
    let mut o = GeneratorTrainOptions::new(out.into(), out.into());
    // Smaller than the tiny preset: the test trains 1500 steps on a CPU.
    let mut arch = GeneratorConfig::new(GeneratorSize::Tiny, (2, 2), 2);
    (arch.width, arch.depth, arch.heads) = (64, 2, 2);
    o.architecture = Some(arch);
    (o.steps, o.batch, o.lr, o.warmup, o.ema_decay) = (steps, 128, 2e-3, 50, 0.99);
    (o.progress, o.previews, o.checkpoint_every, o.log_every) = (false, 0, 1000, 50);
    o
}

fn toy_ref() -> FaeRef {
    FaeRef { path: None, sha256: String::new() }
}

fn samples(
    model: &fae_studio::generator::FlowTransformer,
    label: usize,
    n: usize,
    opts: &SampleOptions,
) -> Vec<f32> {
    let device = backend::cpu().device;
    let seeds: Vec<u64> = (0..n as u64).map(|i| 10_000 + i).collect();
    let x =
        sample::generate(model, &vec![label; n], &seeds, opts, &device, &mut |_, _| true).unwrap();
    x.into_data().try_into_vec_as::<f32>().unwrap()
}

#[test]
fn samplers_reproduce_a_gaussian_mixture_and_guidance_finds_the_class_mode() {
    let device = backend::cpu().device;
    let mixture = Mixture::new();
    let set = mixture.draw(4096, 1);
    let dir = tempfile::tempdir().unwrap();
    let summary = fit(
        options(dir.path(), 1500),
        &set,
        &toy_ref(),
        None,
        &device,
        &AtomicBool::new(false),
        |_| {},
    )
    .unwrap();
    assert_eq!(summary.step, 1500);
    let model = GeneratorFile::open(&dir.path().join("latest.safetensors"))
        .unwrap()
        .model(&device)
        .unwrap();
    let (true_mean, true_cov) = mixture.moments();
    let null = model.config.null_class();
    for sampler in [Sampler::Euler, Sampler::Heun, Sampler::Sde] {
        let opts = SampleOptions { sampler, steps: 20, ..SampleOptions::default() };
        let (mean, cov) = moments(&samples(&model, null, 1500, &opts));
        let mean_err = (0..DIM).map(|i| (mean[i] - true_mean[i]).abs()).fold(0.0, f64::max);
        let cov_err = (0..DIM)
            .flat_map(|r| (0..DIM).map(move |c| (r, c)))
            .map(|(r, c)| (cov[r][c] - true_cov[r][c]).abs())
            .fold(0.0, f64::max);
        let norm = |f: &dyn Fn(usize, usize) -> f64| {
            (0..DIM)
                .flat_map(|r| (0..DIM).map(move |c| (r, c)))
                .map(|(r, c)| f(r, c).powi(2))
                .sum::<f64>()
                .sqrt()
        };
        let rel = norm(&|r, c| cov[r][c] - true_cov[r][c]) / norm(&|r, c| true_cov[r][c]);
        eprintln!(
            "{sampler:?}: max mean error {mean_err:.3}, max covariance error {cov_err:.3}, relative {rel:.3}"
        );
        assert!(mean_err < 0.15, "{sampler:?}: mean {mean:?} vs {true_mean:?}");
        assert!(
            cov_err < 0.3 && rel < 0.15,
            "{sampler:?}: covariance off by {cov_err} ({rel:.3} relative)"
        );
    }
    // Guided class samples sit in their own mode.
    let opts =
        SampleOptions { steps: 20, cfg: 3.0, cfg_interval: (0.0, 1.0), ..SampleOptions::default() };
    for class in 0..2 {
        let xs = samples(&model, class, 300, &opts);
        let nearer = xs
            .chunks_exact(DIM)
            .filter(|x| {
                let d = |m: &[f64; DIM]| {
                    x.iter().zip(m).map(|(&v, &m)| (v as f64 - m).powi(2)).sum::<f64>()
                };
                d(&mixture.means[class]) < d(&mixture.means[1 - class])
            })
            .count();
        eprintln!("class {class}: {nearer}/300 samples nearer their own mode");
        assert!(nearer >= 294, "class {class}: only {nearer}/300 in their mode");
    }
}

#[test]
fn seeds_reproduce_samples_whatever_the_batch() {
    let device = backend::cpu().device;
    let set = Mixture::new().draw(256, 2);
    let dir = tempfile::tempdir().unwrap();
    fit(options(dir.path(), 20), &set, &toy_ref(), None, &device, &AtomicBool::new(false), |_| {})
        .unwrap();
    let model = GeneratorFile::open(&dir.path().join("latest.safetensors"))
        .unwrap()
        .model(&device)
        .unwrap();
    for sampler in [Sampler::Euler, Sampler::Sde] {
        let opts = SampleOptions { sampler, steps: 8, cfg: 2.0, ..SampleOptions::default() };
        let run = |seeds: &[u64]| {
            let x = sample::generate(
                &model,
                &vec![0; seeds.len()],
                seeds,
                &opts,
                &device,
                &mut |_, _| true,
            )
            .unwrap();
            x.into_data().try_into_vec_as::<f32>().unwrap()
        };
        let batch = run(&[5, 6, 7]);
        assert_eq!(batch, run(&[5, 6, 7]), "{sampler:?}: same seeds, same samples");
        let alone = run(&[6]);
        let diff =
            alone.iter().zip(&batch[DIM..2 * DIM]).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(diff < 1e-4, "{sampler:?}: seed 6 alone differs by {diff}");
        assert_ne!(run(&[8]), alone, "{sampler:?}: different seeds, different samples");
    }
}

#[test]
fn resume_continues_exactly_and_checkpoints_round_trip() {
    let device = backend::cpu().device;
    let set = Mixture::new().draw(256, 3);
    let stop = AtomicBool::new(false);
    let straight = tempfile::tempdir().unwrap();
    fit(options(straight.path(), 12), &set, &toy_ref(), None, &device, &stop, |_| {}).unwrap();
    // Interrupted after step 5 (as Ctrl-C or the app's Stop button would), then resumed.
    let split = tempfile::tempdir().unwrap();
    let interrupt = AtomicBool::new(false);
    let mut first = options(split.path(), 12);
    first.log_every = 1;
    let summary = fit(first, &set, &toy_ref(), None, &device, &interrupt, |record| {
        if record["step"] == 5 {
            interrupt.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    })
    .unwrap();
    assert!(summary.stopped_early && summary.step == 5);
    let mut again = options(split.path(), 12);
    again.resume = true;
    let summary = fit(again, &set, &toy_ref(), None, &device, &stop, |_| {}).unwrap();
    assert_eq!(summary.step, 12);
    let weights = |dir: &std::path::Path| {
        let file = GeneratorFile::open(&dir.join("latest.safetensors")).unwrap();
        assert_eq!(file.step, 12);
        fae_studio::fae::checkpoint::collect(&file.model(&device).unwrap())
    };
    let (a, b) = (weights(straight.path()), weights(split.path()));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.path, y.path);
        let diff = x.values.iter().zip(&y.values).map(|(p, q)| (p - q).abs()).fold(0.0, f32::max);
        assert!(diff < 1e-6, "{}: resumed run differs by {diff}", x.path);
    }
    // Metrics from both halves are in one file.
    let metrics = std::fs::read_to_string(split.path().join("metrics.jsonl")).unwrap();
    assert!(
        metrics.lines().any(|l| l.contains("\"step\":5"))
            && metrics.lines().any(|l| l.contains("\"step\":12"))
    );
}

#[test]
fn a_generator_checkpoint_is_refused_where_an_fae_model_is_expected_and_vice_versa() {
    let builtin = fae_studio::assets::path(fae_studio::fae::DEFAULT_MODEL).unwrap();
    let err =
        GeneratorFile::open(&builtin).err().expect("an FAE model is not a generator").to_string();
    assert!(err.contains("not an FAE Studio generator"), "{err}");
    let set = Mixture::new().draw(64, 4);
    let dir = tempfile::tempdir().unwrap();
    let device = backend::cpu().device;
    fit(options(dir.path(), 2), &set, &toy_ref(), None, &device, &AtomicBool::new(false), |_| {})
        .unwrap();
    let err = fae_studio::fae::CheckpointFile::open(&dir.path().join("latest.safetensors"))
        .err()
        .expect("a generator is not an FAE model")
        .to_string();
    assert!(err.contains("not an FAE Studio checkpoint"), "{err}");
}

/// A generator follows its FAE model to a copy whose decoders were retrained, never to a model
/// that encodes differently.
#[test]
fn a_generator_moves_only_to_a_model_with_the_same_latents() {
    use fae_studio::fae::{self, FaeModel, LatentStats};
    let device = backend::cpu().device;
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let cfg = common::tiny_architecture();
    let model = FaeModel::new(&cfg, &device);
    let stats = LatentStats::identity(cfg.latent_channels);
    let save = |name: &str, m: &FaeModel, s: &LatentStats| {
        fae::save(&path(name), &cfg, s, m, 0, None, false).unwrap()
    };
    save("original.safetensors", &model, &stats);
    let mut tuned = model.clone();
    tuned.pixel_decoder = FaeModel::new(&cfg, &device).pixel_decoder;
    tuned.feature_decoder = FaeModel::new(&cfg, &device).feature_decoder;
    save("decoders-retrained.safetensors", &tuned, &stats);
    let mut other = model.clone();
    other.encoder = FaeModel::new(&cfg, &device).encoder;
    save("other-encoder.safetensors", &other, &stats);
    let shifted = LatentStats { mean: vec![0.5; cfg.latent_channels], ..stats.clone() };
    save("other-statistics.safetensors", &model, &shifted);

    let run = path("generator");
    let original = FaeRef::of(Some(&path("original.safetensors"))).unwrap();
    let set = Mixture::new().draw(64, 5);
    fit(options(&run, 2), &set, &original, None, &device, &AtomicBool::new(false), |_| {}).unwrap();
    let generator = run.join("latest.safetensors");
    let file = GeneratorFile::open(&generator).unwrap();

    let moved = file.retarget(&generator, &path("decoders-retrained.safetensors")).unwrap();
    assert_eq!(moved, FaeRef::of(Some(&path("decoders-retrained.safetensors"))).unwrap());
    assert_ne!(moved.sha256, original.sha256);
    for (name, why) in [
        ("other-encoder.safetensors", "FAE encoder tensor"),
        ("other-statistics.safetensors", "latent statistics"),
    ] {
        let err = file.retarget(&generator, &path(name)).unwrap_err().to_string();
        assert!(err.contains(why), "{name}: {err}");
    }
    // The recorded model must still be there (and unchanged) to compare against.
    save("original.safetensors", &tuned, &stats);
    let err = file.retarget(&generator, &path("decoders-retrained.safetensors")).unwrap_err();
    assert!(err.to_string().contains("was trained on the latents of"), "{err}");
}

/// A generator records the absolute path of the FAE model it was given, so a checkpoint trained
/// with `--model runs/x.safetensors` still finds that model from another working directory.
#[test]
fn a_relative_fae_model_path_is_recorded_absolute() {
    // Tests run in the package root, where the built-in model sits under `assets/`.
    let relative = std::path::Path::new("assets/fae-default.safetensors");
    let fae = FaeRef::of(Some(relative)).unwrap();
    let recorded = fae.path.expect("a path");
    assert!(recorded.is_absolute(), "{}", recorded.display());
    assert_eq!(recorded, relative.canonicalize().unwrap());
    let shipped = std::fs::read_to_string("assets/fae-default.sha256").unwrap();
    assert_eq!(Some(fae.sha256.as_str()), shipped.split_whitespace().next());
}
