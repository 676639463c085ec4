//! A fuzz-style test over every parser of untrusted input: safetensors files (plain tensors,
//! encoder weights with and without a configuration, FAE and generator checkpoints), ONNX imports,
//! recipes, session files and images in every supported format.
//!
//! Each target starts from a small valid file (the corpus: `tests/fixtures/fuzz/`, plus a few
//! files of `tests/fixtures/`) and runs a fixed number of mutated copies through the loader, in
//! `catch_unwind`, under a counting global allocator. A case fails when the loader panics, when
//! an error it returns is empty, holds a line break or is longer than 1000 characters, when its
//! peak allocation exceeds [`allocation_bound`], or when it runs longer than [`CASE_TIME_LIMIT`].
//! The files in `tests/fixtures/fuzz/regressions/`, named `TARGET-anything.EXT`, each go through
//! their target first.
//!
//! Mutations are derived from the seed, the target's name and the case number alone, so one case
//! replays on its own. A failure prints its replay line, for example:
//!
//! ```text
//! FUZZ_SEED=0xfae5eed FUZZ_TARGET=recipe FUZZ_CASE=123 \
//!     cargo test --release --locked --test fuzz -- --nocapture
//! ```
//!
//! Add `FUZZ_SAVE=some/file` to write that case's mutated bytes there (to keep it as a
//! regression file). `FUZZ_SEED` alone runs the whole campaign with another seed. The generated
//! corpus files are rewritten by `cargo test --release --locked --test fuzz -- --ignored
//! write_corpus` (only needed when a format changes; the committed files are the corpus).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use burn::prelude::*;
use fae_studio::app::state::Session;
use fae_studio::backend;
use fae_studio::edit::ops::{Harmonise, LatentSource};
use fae_studio::edit::recipe::Recipe;
use fae_studio::encoders::{VisionEncoder, onnx_import, source};
use fae_studio::fae::{self, CheckpointFile, FaeConfig, FaeModel, LatentStats};
use fae_studio::generator::{self, GeneratorConfig, GeneratorFile};
use fae_studio::grid::Grid;
use fae_studio::image_io;
use fae_studio::onnx;
use fae_studio::rng::Rng;
use fae_studio::weights::{TensorReader, WeightFile};
use image::ImageDecoder;
use prost::Message;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// Counting allocator

/// Wraps the system allocator, counting the bytes in use and their peak. While a case runs, a
/// request that would take the total more than [`HEADROOM`] past the case's bound is refused
/// (and recorded), so that a runaway allocation fails the case instead of exhausting the machine.
/// Below that, a case over its bound runs to its end and fails with the others.
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
/// Size of the first request refused during the current case (0: none).
static REFUSED: AtomicUsize = AtomicUsize::new(0);
static REPORTING: AtomicBool = AtomicBool::new(false);
/// What runs now, for the message printed when a request is refused.
static SEED: AtomicU64 = AtomicU64::new(0);
static TARGET: AtomicUsize = AtomicUsize::new(usize::MAX);
static CASE: AtomicUsize = AtomicUsize::new(0);

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// How far past its bound a case may allocate before requests are refused.
const HEADROOM: usize = 2 << 30;

impl Counting {
    fn grow(by: usize) -> bool {
        let now = CURRENT.fetch_add(by, Relaxed) + by;
        if now > LIMIT.load(Relaxed) {
            CURRENT.fetch_sub(by, Relaxed);
            refused(by);
            return false;
        }
        PEAK.fetch_max(now, Relaxed);
        true
    }
}

/// Records a refused request and says which case made it, without allocating: the caller may
/// well abort on the failed allocation.
fn refused(size: usize) {
    let _ = REFUSED.compare_exchange(0, size, Relaxed, Relaxed);
    if REPORTING.swap(true, Relaxed) {
        return;
    }
    let mut buf = [0u8; 512];
    let mut out = &mut buf[..];
    let target = TARGETS.get(TARGET.load(Relaxed)).map_or("?", |t| t.name);
    let _ = write!(
        out,
        "\nfuzz: refused an allocation of {size} bytes (far over the case's bound); replay with \
         FUZZ_SEED={:#x} FUZZ_TARGET={target} FUZZ_CASE={}\n",
        SEED.load(Relaxed),
        CASE.load(Relaxed)
    );
    let len = 512 - out.len();
    let _ = std::io::stderr().write_all(&buf[..len]);
    REPORTING.store(false, Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !Self::grow(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc(layout) };
        if p.is_null() {
            CURRENT.fetch_sub(layout.size(), Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !Self::grow(layout.size()) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc_zeroed(layout) };
        if p.is_null() {
            CURRENT.fetch_sub(layout.size(), Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        if new_size > old && !Self::grow(new_size - old) {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if p.is_null() {
            if new_size > old {
                CURRENT.fetch_sub(new_size - old, Relaxed);
            }
        } else if new_size < old {
            CURRENT.fetch_sub(old - new_size, Relaxed);
        }
        p
    }
}

/// The most a case may allocate above what was in use when it started (its peak growth).
///
/// `64 * len`: every loader holds the file (1x), parses it into structures (a JSON header or
/// document into `serde_json::Value`s: about 32 bytes per value of at least 2 bytes of text,
/// doubled while a growing array reallocates, so up to 32x), and copies tensors out of it as f32
/// (2x for f16 data), into burn tensors and transposed (a few x). 64x leaves a margin of two over
/// the worst of these. `FLOOR` covers what does not grow with the file: burn's and the image
/// decoders' fixed buffers, a tiny model's forward pass. The measured peaks are printed at the
/// end; the largest seed needs far less than the floor.
///
/// Images may in addition use 64 bytes for each pixel their header declares, when the loader's
/// limits accept that size (`declared_pixels`, else 0): the decoder's buffer (up to 16 bytes a
/// pixel, RGBA f32) and, in some decoders, an intermediate of the same size, then the RGBA f32
/// copy for compositing over white (16) and the RGB f32 result (12). A header declaring more than
/// the limits must be refused before anything is allocated for it.
///
/// A loader that allocates from a length it read without checking it (a header length, a shape,
/// a count, a chunk or segment size) asks for gigabytes from a file of kilobytes and exceeds this
/// by orders of magnitude.
fn allocation_bound(len: usize, declared_pixels: usize) -> usize {
    const FLOOR: usize = 64 << 20;
    64 * len + FLOOR + 64 * declared_pixels
}

// ---------------------------------------------------------------------------------------------
// Targets

const DEFAULT_SEED: u64 = 0xfae_5eed;
/// The campaign stops starting new rounds after this long...
const TIME_BUDGET: Duration = Duration::from_secs(90);
/// ...but fails unless every target ran at least this share of its cases.
const MIN_SHARE: f64 = 0.35;
/// A single case running this long is a failure (a loader must not hang on a bad file).
const CASE_TIME_LIMIT: Duration = Duration::from_secs(10);
/// Longest error message accepted.
const MAX_MESSAGE: usize = 1000;

type Mutator = fn(&[u8], &mut Rng) -> Vec<u8>;
type Runner = fn(&Ctx, &Path) -> Result<Vec<String>>;

struct Target {
    name: &'static str,
    /// Seed file, relative to `tests/fixtures/`.
    corpus: &'static str,
    ext: &'static str,
    cases: usize,
    mutate: Mutator,
    run: Runner,
    /// Whether the allocation bound allows the declared image size.
    image: bool,
}

const fn target(
    name: &'static str,
    corpus: &'static str,
    ext: &'static str,
    cases: usize,
    mutate: Mutator,
    run: Runner,
) -> Target {
    Target { name, corpus, ext, cases, mutate, run, image: false }
}

const fn image_target(
    name: &'static str,
    corpus: &'static str,
    ext: &'static str,
    cases: usize,
    mutate: Mutator,
) -> Target {
    Target { name, corpus, ext, cases, mutate, run: run_image, image: true }
}

const TARGETS: &[Target] = &[
    target(
        "weights",
        "fuzz/tensors.safetensors",
        "safetensors",
        900,
        mutate_safetensors,
        run_weights,
    ),
    target(
        "encoder",
        "dinov2_focus_tiny.expected.safetensors",
        "safetensors",
        600,
        mutate_safetensors,
        run_encoder,
    ),
    target(
        "encoder-config",
        "fuzz/dinov2_meta.safetensors",
        "safetensors",
        400,
        mutate_safetensors,
        run_encoder,
    ),
    target(
        "siglip",
        "fuzz/siglip_meta.safetensors",
        "safetensors",
        400,
        mutate_safetensors,
        run_encoder,
    ),
    target("onnx", "dinov2_focus_tiny.onnx", "onnx", 600, mutate_onnx, run_onnx),
    target("fae", "fuzz/fae.safetensors", "safetensors", 500, mutate_safetensors, run_fae),
    target(
        "generator",
        "fuzz/generator.safetensors",
        "safetensors",
        300,
        mutate_safetensors,
        run_generator,
    ),
    target("recipe", "fuzz/recipe.json", "json", 700, mutate_json, run_recipe),
    target("session", "fuzz/session.json", "json", 500, mutate_json, run_session),
    image_target("png", "fuzz/image.png", "png", 200, mutate_png),
    image_target("jpeg", "fuzz/image.jpg", "jpg", 200, mutate_jpeg),
    image_target("webp", "fuzz/image.webp", "webp", 200, mutate_webp),
    image_target("bmp", "fuzz/image.bmp", "bmp", 150, mutate_bmp),
    image_target("tiff", "fuzz/image.tiff", "tiff", 200, mutate_tiff),
    image_target("gif", "fuzz/image.gif", "gif", 200, mutate_gif),
    image_target("photo", "photo_224.png", "png", 50, mutate_png),
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// What every case of a run shares.
struct Ctx {
    device: Device,
    dir: PathBuf,
    /// The base latent recipes are replayed on, and the latent every source resolves to.
    latent: Grid,
}

/// An error as `main` shows it (`{:#}`: the whole chain of context).
fn message(e: &anyhow::Error) -> String {
    format!("{e:#}")
}

/// The problem with an error message, if any. `main` prints errors with their line breaks
/// replaced by spaces; the library's errors are one line already.
fn message_problem(msg: &str) -> Option<String> {
    if msg.trim().is_empty() {
        return Some("an empty error message".into());
    }
    if msg.contains('\n') {
        return Some(format!("an error message of several lines: {msg:?}"));
    }
    let chars = msg.chars().count();
    if chars > MAX_MESSAGE {
        let head: String = msg.chars().take(200).collect();
        return Some(format!("an error message of {chars} characters: {head}…"));
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Loaders driven by the targets

/// Every tensor read with its declared shape, as f32, as a host table and transposed (as the
/// encoders read Linear weights), and the checkpoint helpers that read metadata.
fn run_weights(ctx: &Ctx, path: &Path) -> Result<Vec<String>> {
    let file = WeightFile::open(path)?;
    let reader = TensorReader::new(&file, "", &ctx.device);
    let mut errors = Vec::new();
    let names: Vec<String> = file.names().map(str::to_string).collect();
    for name in &names {
        let shape = file.shape(name).context("a listed tensor has no shape")?;
        let count: usize = shape.iter().product();
        match file.read_f32(name, &shape) {
            Ok(values) => ensure!(values.len() == count, "{name}: {} values", values.len()),
            Err(e) => errors.push(message(&e)),
        }
        if !shape.is_empty() {
            match reader.transposed(name, &shape) {
                Ok(t) => ensure!(t.dims().iter().product::<usize>() == count, "{name}: transposed"),
                Err(e) => errors.push(message(&e)),
            }
        }
    }
    if let Err(e) = reader.finish(&[]) {
        errors.push(message(&e));
    }
    let _ = file.metadata().len();
    if let Err(e) = fae::checkpoint::param_ids(&file) {
        errors.push(message(&e));
    }
    if let Err(e) = fae::checkpoint::optimizer_bytes(&file) {
        errors.push(message(&e));
    }
    let _ = fae::checkpoint::train_state(&file);
    Ok(errors)
}

/// Runs an accepted encoder once on a 2 x 2 grid of patches: a loader must not accept weights
/// that it cannot run.
fn check_encoder(ctx: &Ctx, encoder: &dyn VisionEncoder) -> Result<()> {
    let info = encoder.info().clone();
    let p = info.patch_size;
    ensure!((1..=64).contains(&p), "accepted an encoder with patch size {p}");
    info.check_size(2 * p, 2 * p)?;
    let pixels = Tensor::<4>::zeros([1, 3, 2 * p, 2 * p], &ctx.device);
    let out = encoder.forward(pixels);
    ensure!(out.patch_tokens.dims() == [1, 2, 2, info.dim], "output {:?}", out.patch_tokens.dims());
    Ok(())
}

fn run_encoder(ctx: &Ctx, path: &Path) -> Result<Vec<String>> {
    let encoder = source::load_file(path, "fuzz", &ctx.device)?;
    check_encoder(ctx, encoder.as_ref())?;
    Ok(Vec::new())
}

/// What `encoders import` does: read the graph, convert it, write the backbone and load it.
fn run_onnx(ctx: &Ctx, path: &Path) -> Result<Vec<String>> {
    let graph = onnx::read_graph(path)?;
    onnx_import::convert(&graph)?;
    let out = ctx.dir.join("imported.safetensors");
    let half = CASE.load(Relaxed) % 2 == 1;
    onnx_import::import_file(path, &out, half)?;
    let encoder = source::load_file(&out, "imported", &ctx.device)?;
    check_encoder(ctx, encoder.as_ref())?;
    Ok(Vec::new())
}

/// Everything a checkpoint is opened for: configuration, statistics, both weight sets, the
/// training state; then the networks run once on a 2 x 2 grid.
fn run_fae(ctx: &Ctx, path: &Path) -> Result<Vec<String>> {
    let ckpt = CheckpointFile::open(path)?;
    let cfg = &ckpt.config;
    let _ = cfg.grid();
    ckpt.param_ids()?;
    ckpt.optimizer_bytes()?;
    let _ = ckpt.train_state();
    ckpt.train_model(&ctx.device)?;
    let model = ckpt.model(&ctx.device)?;
    let features = Tensor::<3>::zeros([1, 4, cfg.encoder_dim], &ctx.device);
    let (mean, _) = model.encoder.forward(features);
    let restored = model.feature_decoder.forward(mean, (2, 2));
    let image = model.pixel_decoder.forward(restored, (2, 2));
    let side = 2 * cfg.pix_patch;
    ensure!(image.dims() == [1, 3, side, side], "decoded {:?}", image.dims());
    Ok(Vec::new())
}

fn run_generator(ctx: &Ctx, path: &Path) -> Result<Vec<String>> {
    let file = GeneratorFile::open(path)?;
    let _ = file.config.token_grid();
    file.train_model(&ctx.device)?;
    let model = file.model(&ctx.device)?;
    let cfg = &file.config;
    let (gh, gw) = cfg.grid;
    let x = Tensor::<3>::zeros([1, gh * gw, cfg.channels], &ctx.device);
    let t = Tensor::<1>::from_data(TensorData::new(vec![0.5f32], [1]), &ctx.device);
    let v = model.forward(x, t, &[cfg.null_class()], &model.rope(&ctx.device));
    ensure!(v.dims() == [1, gh * gw, cfg.channels], "velocity {:?}", v.dims());
    Ok(Vec::new())
}

/// Every source resolves to the same latent; folders hold two.
struct Source<'a>(&'a Grid);

impl LatentSource for Source<'_> {
    fn latent(&self, _path: &str) -> Result<Grid> {
        Ok(self.0.clone())
    }

    fn latents_in(&self, _folder: &str) -> Result<Vec<Grid>> {
        let mut other = self.0.clone();
        other.data.iter_mut().for_each(|v| *v = -*v);
        Ok(vec![self.0.clone(), other])
    }

    fn harmonise(&self, latent: &Grid, _h: &Harmonise) -> Result<Grid> {
        Ok(latent.clone())
    }
}

/// Load, replay on a small latent, and what is saved must load again unchanged.
fn run_recipe(ctx: &Ctx, path: &Path) -> Result<Vec<String>> {
    let recipe = Recipe::load(path)?;
    recipe.validate()?;
    recipe.replay(&ctx.latent, &Source(&ctx.latent))?;
    let saved = ctx.dir.join("saved-recipe.json");
    recipe.save(&saved)?;
    let again = Recipe::load(&saved).context("a saved recipe does not load")?;
    ensure!(again == recipe, "a saved recipe loads differently");
    Ok(Vec::new())
}

/// Load; what the app saves back must load again unchanged (else the next start loses it).
fn run_session(ctx: &Ctx, path: &Path) -> Result<Vec<String>> {
    let session = Session::load(path)?.context("the session file vanished")?;
    let saved = ctx.dir.join("saved-session.json");
    session.save(&saved)?;
    let again = Session::load(&saved).context("a saved session does not load")?;
    ensure!(again.as_ref() == Some(&session), "a saved session loads differently");
    Ok(Vec::new())
}

fn run_image(_ctx: &Ctx, path: &Path) -> Result<Vec<String>> {
    let image = image_io::load_rgb(path)?;
    let (w, h) = image.dimensions();
    ensure!(w > 0 && h > 0, "decoded an empty image");
    ensure!(image.pixels().all(|p| p.0.iter().all(|c| c.is_finite())), "non-finite pixels");
    Ok(Vec::new())
}

/// The pixels an image file's header declares, if the loader's limits accept them (else 0).
fn declared_pixels(path: &Path) -> usize {
    let read = || -> Result<(u32, u32)> {
        let mut reader = image::ImageReader::open(path)?.with_guessed_format()?;
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(image_io::MAX_SIDE);
        limits.max_image_height = Some(image_io::MAX_SIDE);
        limits.max_alloc = Some(image_io::MAX_DECODE_BYTES);
        reader.limits(limits);
        Ok(reader.into_decoder()?.dimensions())
    };
    read().map_or(0, |(w, h)| w as usize * h as usize)
}

// ---------------------------------------------------------------------------------------------
// Mutations

/// Values that sit on the edges of integer types.
const INTERESTING: [u64; 22] = [
    0,
    1,
    2,
    7,
    8,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0x8000,
    0xffff,
    0x1_0000,
    0x3fff,
    0x4000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    1 << 32,
    1 << 40,
    i64::MAX as u64,
    u64::MAX,
];

fn pick<T: Copy>(rng: &mut Rng, items: &[T]) -> T {
    items[rng.below(items.len())]
}

fn interesting(rng: &mut Rng) -> u64 {
    match rng.below(4) {
        0 => rng.next_u64(),
        1 => pick(rng, &INTERESTING).wrapping_add(rng.below(3) as u64).wrapping_sub(1),
        _ => pick(rng, &INTERESTING),
    }
}

/// Writes `value` into `width` bytes at `at` (truncating it), if they fit.
fn put(data: &mut [u8], at: usize, width: usize, big_endian: bool, value: u64) {
    if at + width > data.len() {
        return;
    }
    let bytes = value.to_le_bytes();
    for i in 0..width {
        data[at + if big_endian { width - 1 - i } else { i }] = bytes[i];
    }
}

/// One to four byte-level mutations; positions fall in `data[..focus]` half of the time.
fn mutate_bytes(data: &[u8], rng: &mut Rng, focus: Option<usize>) -> Vec<u8> {
    let mut d = data.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = d.len();
        let pos = |rng: &mut Rng| match focus {
            Some(f) if rng.below(2) == 0 => rng.below(f.min(len).max(1)),
            _ => rng.below(len.max(1)),
        };
        if len == 0 {
            d.push(rng.next_u64() as u8);
            continue;
        }
        match rng.below(10) {
            0 => {
                let p = pos(rng);
                d[p] ^= 1 << rng.below(8);
            }
            1 => {
                let p = pos(rng);
                d[p] = pick(rng, &[0, 0xff, 0x7f, 0x80, 1, 0xfe]);
            }
            2 => {
                let p = pos(rng);
                d[p] = rng.next_u64() as u8;
            }
            3 => d.truncate(rng.below(len + 1)),
            4 => {
                let p = pos(rng);
                let n = 1 + rng.below(64.min(len - p));
                d.drain(p..p + n);
            }
            5 => {
                let p = pos(rng);
                let n = 1 + rng.below(32);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
                d.splice(p..p, bytes);
            }
            6 => {
                let a = pos(rng);
                let n = 1 + rng.below(256.min(len - a));
                let copy = d[a..a + n].to_vec();
                let b = pos(rng);
                d.splice(b..b, copy);
            }
            7 => {
                let width = pick(rng, &[2, 4, 8]);
                let p = pos(rng);
                let value = interesting(rng);
                put(&mut d, p, width, rng.below(2) == 0, value);
            }
            8 => {
                let (a, b) = (pos(rng), pos(rng));
                d.swap(a, b);
            }
            _ => {
                // Repeat a byte many times (long runs, huge varints, deep nesting).
                let p = pos(rng);
                let n = 1 + rng.below(4096);
                let byte = d[p];
                d.splice(p..p, std::iter::repeat_n(byte, n));
            }
        }
    }
    d
}

// JSON -----------------------------------------------------------------------------------------

fn count_nodes(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count_nodes).sum(),
        Value::Object(o) => o.values().map(count_nodes).sum(),
        _ => 0,
    }
}

/// The `n`-th node in pre-order (`n` below [`count_nodes`]).
fn nth_node<'a>(v: &'a mut Value, n: &mut usize) -> Option<&'a mut Value> {
    if *n == 0 {
        return Some(v);
    }
    *n -= 1;
    match v {
        Value::Array(a) => a.iter_mut().find_map(|c| nth_node(c, n)),
        Value::Object(o) => o.values_mut().find_map(|c| nth_node(c, n)),
        _ => None,
    }
}

fn nested(depth: usize) -> Value {
    (0..depth).fold(json!(0), |inner, _| json!([inner]))
}

/// A number on an edge: zero, one off, negative, huge, fractional, out of range.
fn odd_json_number(rng: &mut Rng, old: &Value) -> Value {
    let x = old.as_f64().unwrap_or(1.0);
    match rng.below(12) {
        0 | 1 => json!(0),
        2 => json!(-1),
        3 => json!(1),
        4 => json!(x + 1.0),
        5 => json!(x - 1.0),
        6 => json!(-x),
        7 => json!(x * 1e6),
        8 => json!(x + 0.5),
        9 => json!(u64::MAX),
        10 => json!(1e308),
        _ => json!(5e-324),
    }
}

fn replacement(rng: &mut Rng, old: &Value) -> Value {
    if old.is_number() && rng.below(2) == 0 {
        return odd_json_number(rng, old);
    }
    match rng.below(30) {
        0 => json!(u64::MAX),
        1 => json!(1e308),
        2 => json!(-1),
        3 => json!(-1e308),
        4 => json!(0),
        5 => json!(0.5),
        6 => json!(i64::MIN),
        7 => json!(1u64 << 32),
        8 => json!(65536),
        9 => json!(5e-324),
        10 => json!("NaN"),
        11 => json!("inf"),
        12 => json!(""),
        13 => json!("a".repeat(1 + rng.below(20_000))),
        14 => json!("\u{0}\u{1b}[2J\u{202e}é"),
        15 => Value::Null,
        16 => json!(true),
        17 => json!([]),
        18 => json!({}),
        19 => nested(pick(rng, &[10, 100, 127, 200])),
        20 => {
            let len = old.to_string().len().max(1);
            let copies = (1 + rng.below(1000)).min(1 + 1_000_000 / len);
            Value::Array(vec![old.clone(); copies])
        }
        21 => {
            let n = 1 + rng.below(2000);
            Value::Object((0..n).map(|i| (format!("k{i}"), json!(i))).collect())
        }
        22 => match old.as_f64() {
            Some(x) => json!(-x),
            None => json!(-1),
        },
        23 => match old.as_f64() {
            Some(x) => json!(x * 1e6),
            None => json!(1e6),
        },
        24 => match (old.as_u64(), old.as_f64()) {
            (Some(x), _) => json!(x.wrapping_add(1)),
            (_, Some(x)) => json!(x + 1.0),
            _ => json!(1),
        },
        25 => match (old.as_u64(), old.as_f64()) {
            (Some(x), _) => json!(x.wrapping_sub(1)),
            (_, Some(x)) => json!(x - 1.0),
            _ => json!(2),
        },
        26 => match old {
            Value::String(s) => json!(format!("{s}x")),
            other => json!(other.to_string()),
        },
        27 => json!(4.0000000001),
        28 => json!([old.clone(), old.clone()]),
        _ => json!(rng.next_u64() as f64 / 3.0),
    }
}

/// One structural mutation of a JSON document.
fn mutate_value(v: &mut Value, rng: &mut Rng) {
    let mut n = rng.below(count_nodes(v));
    let node = nth_node(v, &mut n).expect("an index below the node count");
    match (rng.below(8), &mut *node) {
        (0, Value::Object(o)) if !o.is_empty() => {
            let key = o.keys().nth(rng.below(o.len())).cloned().unwrap_or_default();
            o.remove(&key);
        }
        (1, Value::Object(o)) => {
            o.insert(pick(rng, &["zzz", "version", "op", "", "edits"]).into(), json!(1));
        }
        (0, Value::Array(a)) if !a.is_empty() => {
            a.remove(rng.below(a.len()));
        }
        (1, Value::Array(a)) if !a.is_empty() => {
            let item = a[rng.below(a.len())].clone();
            a.push(item);
        }
        (2, Value::Array(a)) => a.reverse(),
        _ => {
            let old = node.clone();
            *node = replacement(rng, &old);
        }
    }
}

/// Text-level damage to JSON: deep nesting, numbers out of range, duplicate keys, bad bytes.
fn mutate_json_text(text: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut d = text.to_vec();
    let p = rng.below(d.len() + 1);
    match rng.below(6) {
        0 => {
            let n = pick(rng, &[129, 1000, 200_000]);
            d.splice(p..p, std::iter::repeat_n(b'[', n));
        }
        1 => {
            let token = pick(rng, &["1e999", "-1e999", "-0", "01", "1.", "18446744073709551616"]);
            if let Some(q) = d[p..].iter().position(u8::is_ascii_digit) {
                d.splice(p + q..p + q + 1, token.bytes());
            }
        }
        2 => {
            if let Some(q) = d.iter().position(|&b| b == b'{') {
                let key = pick(rng, &["\"version\": 2, ", "\"edits\": 1, ", "\"op\": \"noise\", "]);
                d.splice(q + 1..q + 1, key.bytes());
            }
        }
        3 => d.splice(p..p, [0xff, 0xfe, 0xc3]).for_each(drop),
        4 => d.splice(0..0, "\u{feff}".bytes()).for_each(drop),
        _ => d = mutate_bytes(&d, rng, None),
    }
    d
}

fn mutate_json(data: &[u8], rng: &mut Rng) -> Vec<u8> {
    let parsed: Option<Value> = serde_json::from_slice(data).ok();
    match (rng.below(10), parsed) {
        (0..=6, Some(mut v)) => {
            for _ in 0..1 + rng.below(3) {
                mutate_value(&mut v, rng);
            }
            let text = if rng.below(2) == 0 {
                serde_json::to_vec(&v)
            } else {
                serde_json::to_vec_pretty(&v)
            };
            text.expect("a Value serialises")
        }
        _ => mutate_json_text(data, rng),
    }
}

// safetensors ----------------------------------------------------------------------------------

fn header_of(data: &[u8]) -> Option<(usize, Value)> {
    let n = u64::from_le_bytes(data.get(..8)?.try_into().ok()?) as usize;
    let header = serde_json::from_slice(data.get(8..8usize.checked_add(n)?)?).ok()?;
    Some((n, header))
}

fn with_header(header: &Value, data: &[u8]) -> Vec<u8> {
    let mut text = serde_json::to_vec(header).expect("a Value serialises");
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend_from_slice(data);
    out
}

const DTYPES: [&str; 14] = [
    "F32", "F16", "BF16", "F64", "U8", "I8", "I32", "I64", "BOOL", "F8_E4M3", "C64", "f32", "",
    "F4",
];

/// A random integer or not-quite-integer for a shape dimension or an offset.
fn odd_number(rng: &mut Rng, total: u64) -> Value {
    match rng.below(12) {
        0 => json!(-1),
        1 => json!(1.5),
        2 => json!("3"),
        3 => Value::Null,
        4 => json!(total),
        5 => json!(total + 1),
        6 => json!(u64::MAX),
        _ => json!(interesting(rng)),
    }
}

fn mutate_tensor_entry(header: &mut Value, rng: &mut Rng, data_len: u64) {
    let Some(obj) = header.as_object_mut() else { return };
    let names: Vec<String> = obj.keys().filter(|k| *k != "__metadata__").cloned().collect();
    if names.is_empty() {
        return;
    }
    let name = names[rng.below(names.len())].clone();
    match rng.below(7) {
        0 => {
            let Some(entry) = obj.get_mut(&name) else { return };
            let Some(shape) = entry.get_mut("shape") else { return };
            match (rng.below(5), shape) {
                (0, Value::Array(dims)) => dims.push(odd_number(rng, data_len)),
                (1, Value::Array(dims)) => {
                    dims.pop();
                }
                (2, Value::Array(dims)) => dims.clear(),
                (_, Value::Array(dims)) if !dims.is_empty() => {
                    let i = rng.below(dims.len());
                    dims[i] = if rng.below(3) == 0 { json!(0) } else { odd_number(rng, data_len) };
                }
                (_, shape) => *shape = odd_number(rng, data_len),
            }
        }
        1 => {
            let dtype = pick(rng, &DTYPES);
            if let Some(entry) = obj.get_mut(&name) {
                entry["dtype"] = json!(dtype);
            }
        }
        2 => {
            let other = obj.get(&names[rng.below(names.len())]).cloned();
            let Some(entry) = obj.get_mut(&name) else { return };
            let offsets = match (rng.below(5), other) {
                (0, Some(other)) => other["data_offsets"].clone(),
                (1, _) => json!([data_len, data_len + 4]),
                (2, _) => json!([8, 4]),
                (3, _) => json!([0, odd_number(rng, data_len)]),
                _ => json!([odd_number(rng, data_len), odd_number(rng, data_len)]),
            };
            entry["data_offsets"] = offsets;
        }
        3 => {
            obj.remove(&name);
        }
        4 | 5 => {
            // Renamed or copied: other layer numbers, prefixes, near-miss names.
            let new = match rng.below(5) {
                0 => {
                    name.replacen(|c: char| c.is_ascii_digit(), pick(rng, &["9", "99999", "1"]), 1)
                }
                1 => format!(
                    "{}{name}",
                    pick(rng, &["dinov2.", "vision_model.", "model.", "train."])
                ),
                2 => name.split_once('.').map_or(String::new(), |(_, rest)| rest.to_string()),
                3 => format!("{name}x"),
                _ => String::new(),
            };
            let entry = if rng.below(2) == 0 { obj.remove(&name) } else { obj.get(&name).cloned() };
            if let Some(entry) = entry {
                obj.insert(new, entry);
            }
        }
        _ => {
            let Some(entry) = obj.get_mut(&name) else { return };
            mutate_value(entry, rng);
        }
    }
}

fn mutate_metadata(header: &mut Value, rng: &mut Rng) {
    let Some(meta) = header.get_mut("__metadata__").and_then(Value::as_object_mut) else {
        header["__metadata__"] = json!({"format": "pt", "config": "{"});
        return;
    };
    let keys: Vec<String> = meta.keys().cloned().collect();
    // JSON held in a string (configurations, parameter ids, training state) most of the time.
    let json_keys: Vec<&String> = keys
        .iter()
        .filter(|k| meta[*k].as_str().is_some_and(|s| s.starts_with('{') || s.starts_with('[')))
        .collect();
    if !json_keys.is_empty() && rng.below(3) != 0 {
        let key = json_keys[rng.below(json_keys.len())].clone();
        let text = meta[&key].as_str().unwrap_or_default().as_bytes().to_vec();
        let mutated = mutate_json(&text, rng);
        meta.insert(key, json!(String::from_utf8_lossy(&mutated)));
        return;
    }
    if keys.is_empty() {
        return;
    }
    let key = keys[rng.below(keys.len())].clone();
    match rng.below(4) {
        0 => {
            meta.remove(&key);
        }
        1 => {
            meta.insert(key, json!(42));
        }
        2 => {
            meta.insert(key, json!("fae-studio-checkpoint/1"));
        }
        _ => {
            let old = meta[&key].clone();
            meta.insert(key, replacement(rng, &old));
        }
    }
}

type Tensors = Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>;

/// A valid file whose tensors no longer fit the model: one reshaped, emptied, cut short or grown,
/// converted to another dtype, holding NaN or huge values, copied under another name, or dropped.
fn mutate_tensors(data: &[u8], rng: &mut Rng) -> Option<Vec<u8>> {
    use safetensors::Dtype;
    let st = safetensors::SafeTensors::deserialize(data).ok()?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(data).ok()?;
    let mut tensors: Tensors = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    if tensors.is_empty() {
        return None;
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let i = rng.below(tensors.len());
    let (name, dtype, shape, bytes) = &mut tensors[i];
    let count: usize = shape.iter().product();
    match rng.below(8) {
        0 => {
            *shape = match rng.below(4) {
                0 => vec![count],
                1 => shape.iter().rev().copied().collect(),
                2 => {
                    let mut s = shape.clone();
                    s.insert(rng.below(s.len() + 1), 1);
                    s
                }
                _ => {
                    let k = [2, 3, 4].into_iter().find(|k| count.is_multiple_of(*k))?;
                    vec![count / k, k]
                }
            }
        }
        1 => {
            if shape.is_empty() {
                shape.push(0);
            } else {
                let d = rng.below(shape.len());
                shape[d] = 0;
            }
            bytes.clear();
        }
        2 | 3 => {
            let rows = *shape.first()?;
            let row = bytes.len() / rows.max(1);
            if rng.below(2) == 0 && rows > 0 {
                shape[0] -= 1;
                bytes.truncate(row * (rows - 1));
            } else {
                shape[0] += 1;
                bytes.extend(std::iter::repeat_n(0, row));
            }
        }
        4 => {
            if *dtype != Dtype::F32 {
                return None;
            }
            let values = bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()));
            (*dtype, *bytes) = match rng.below(4) {
                0 => (
                    Dtype::F16,
                    values.flat_map(|v| half::f16::from_f32(v).to_le_bytes()).collect(),
                ),
                1 => (
                    Dtype::BF16,
                    values.flat_map(|v| half::bf16::from_f32(v).to_le_bytes()).collect(),
                ),
                2 => (Dtype::F64, values.flat_map(|v| f64::from(v).to_le_bytes()).collect()),
                _ => (Dtype::I32, bytes.clone()),
            };
        }
        5 => {
            if *dtype != Dtype::F32 || bytes.is_empty() {
                return None;
            }
            let at = 4 * rng.below(bytes.len() / 4);
            let value = pick(rng, &[f32::NAN, f32::INFINITY, -f32::INFINITY, 1e30, -0.0, 1e-40]);
            bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
        }
        6 => {
            let copy = (name.clone(), *dtype, shape.clone(), bytes.clone());
            let new = match rng.below(3) {
                0 => copy.0.replacen(|c: char| c.is_ascii_digit(), pick(rng, &["1", "2", "3"]), 1),
                1 => format!(
                    "{}{}",
                    pick(rng, &["dinov2.", "vision_model.", "model.", "train."]),
                    copy.0
                ),
                _ => format!("{}.extra", copy.0),
            };
            tensors.push((new, copy.1, copy.2, copy.3));
            tensors.sort_by(|a, b| a.0.cmp(&b.0));
            tensors.dedup_by(|a, b| a.0 == b.0);
        }
        _ => {
            tensors.remove(i);
        }
    }
    let views = tensors
        .iter()
        .map(|(n, d, s, b)| {
            Some((n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).ok()?))
        })
        .collect::<Option<Vec<_>>>()?;
    safetensors::serialize(views, meta.metadata().clone()).ok()
}

/// Byte-level damage (mostly in the header), a bad header length, or a structural change of the
/// JSON header (shapes, dtypes, offsets, names, metadata) written back with a valid length.
fn mutate_safetensors(data: &[u8], rng: &mut Rng) -> Vec<u8> {
    let Some((n, mut header)) = header_of(data) else { return mutate_bytes(data, rng, None) };
    let body = &data[8 + n..];
    match rng.below(12) {
        0 | 1 => mutate_bytes(data, rng, Some(8 + n)),
        10 | 11 => mutate_tensors(data, rng).unwrap_or_else(|| mutate_bytes(data, rng, None)),
        2 => {
            let mut d = data.to_vec();
            let len = match rng.below(4) {
                0 => n as u64 + pick(rng, &[1, 8]),
                1 => (n as u64).wrapping_sub(1),
                2 => pick(rng, &[16 << 20, (16 << 20) + 1, data.len() as u64 - 8]),
                _ => interesting(rng),
            };
            put(&mut d, 0, 8, false, len);
            d
        }
        choice => {
            if choice < 6 {
                mutate_tensor_entry(&mut header, rng, body.len() as u64);
            } else if choice < 9 {
                mutate_metadata(&mut header, rng);
            } else {
                mutate_value(&mut header, rng);
            }
            let out = with_header(&header, body);
            if rng.below(5) == 0 { mutate_bytes(&out, rng, None) } else { out }
        }
    }
}

// ONNX -----------------------------------------------------------------------------------------

/// Byte-level damage, or a change to the decoded model (dimensions, types, data, names, nodes)
/// encoded back.
fn mutate_onnx(data: &[u8], rng: &mut Rng) -> Vec<u8> {
    let decoded = onnx::ModelProto::decode(data).ok();
    let Some(mut model) = decoded.filter(|_| rng.below(3) != 0) else {
        return mutate_bytes(data, rng, None);
    };
    let Some(graph) = model.graph.as_mut() else { return mutate_bytes(data, rng, None) };
    let (inits, nodes) = (graph.initializer.len(), graph.node.len());
    let names: Vec<String> = graph.initializer.iter().map(|t| t.name.clone()).collect();
    for _ in 0..1 + rng.below(2) {
        let i = rng.below(inits.max(1)).min(graph.initializer.len().saturating_sub(1));
        let k = rng.below(nodes.max(1)).min(graph.node.len().saturating_sub(1));
        match rng.below(10) {
            0 => {
                let Some(t) = graph.initializer.get_mut(i) else { continue };
                let value =
                    pick(rng, &[0, -1, 1, 3, i64::MAX, i64::MIN, 1 << 31, 1 << 32, 1 << 62]);
                match rng.below(3) {
                    0 => t.dims.push(value),
                    1 => {
                        t.dims.pop();
                    }
                    _ if !t.dims.is_empty() => {
                        let d = rng.below(t.dims.len());
                        t.dims[d] = value;
                    }
                    _ => t.dims = vec![value],
                }
            }
            1 => {
                if let Some(t) = graph.initializer.get_mut(i) {
                    t.data_type = pick(rng, &[0, 2, 10, 11, 16, -1, 1000]);
                }
            }
            2 => {
                let Some(t) = graph.initializer.get_mut(i) else { continue };
                match rng.below(3) {
                    0 => {
                        let keep = rng.below(t.raw_data.len() + 1);
                        t.raw_data = t.raw_data.slice(..keep);
                    }
                    1 => {
                        let mut raw = t.raw_data.to_vec();
                        raw.extend([0x7f, 0x80, 0xff][..1 + rng.below(3)].iter());
                        t.raw_data = raw.into();
                    }
                    _ => {
                        t.float_data = t
                            .raw_data
                            .chunks_exact(4)
                            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                            .chain([f32::NAN])
                            .take(1 + rng.below(t.raw_data.len() / 4 + 2))
                            .collect();
                        t.raw_data = Default::default();
                    }
                }
            }
            3 => {
                if let Some(t) = graph.initializer.get_mut(i) {
                    t.data_location = pick(rng, &[1, 2, -1]);
                }
            }
            4 => {
                let other = names.get(rng.below(names.len().max(1))).cloned().unwrap_or_default();
                let Some(t) = graph.initializer.get_mut(i) else { continue };
                t.name = match rng.below(5) {
                    0 => t.name.trim_start_matches("backbone.").to_string(),
                    1 => t.name.replacen(|c: char| c.is_ascii_digit(), "99999", 1),
                    2 => other,
                    3 => format!("{}\n{}", t.name, "x".repeat(20_000)),
                    _ => format!("decoder.{}", t.name),
                };
            }
            5 => {
                let other = names.get(rng.below(names.len().max(1))).cloned().unwrap_or_default();
                let Some(node) = graph.node.get_mut(k) else { continue };
                match rng.below(7) {
                    0 => node.name = node.name.replacen(|c: char| c.is_ascii_digit(), "99999", 1),
                    1 if rng.below(2) == 0 => {
                        // A layer number of twenty thousand digits.
                        let digits = "7".repeat(20_000);
                        node.name = node.name.replacen(|c: char| c.is_ascii_digit(), &digits, 1);
                    }
                    1 => node.name = node.name.replace("/MatMul", ""),
                    2 => node.op_type = pick(rng, &["Concat", "Reshape", "MatMul", ""]).into(),
                    3 => node.input.clear(),
                    4 => node.input.push(other),
                    _ => {
                        // A cycle: the node consumes its own output.
                        let own = node.output.first().cloned().unwrap_or_default();
                        node.input.insert(0, own);
                    }
                }
            }
            6 if inits > 0 && rng.below(2) == 0 => {
                graph.initializer.remove(i);
            }
            6 if !graph.node.is_empty() => {
                graph.node.remove(k);
            }
            7 => {
                if let Some(t) = graph.initializer.get(i).cloned() {
                    graph.initializer.push(t);
                }
            }
            8 => {
                if let Some(node) = graph.node.get(k).cloned() {
                    graph.node.push(node);
                }
            }
            _ => {
                if rng.below(4) == 0 {
                    model.graph = None;
                    break;
                }
            }
        }
    }
    let out = model.encode_to_vec();
    if rng.below(5) == 0 { mutate_bytes(&out, rng, None) } else { out }
}

// Images ---------------------------------------------------------------------------------------

/// A declared dimension: small, on a limit, just past it, or absurd.
fn dimension(rng: &mut Rng) -> u64 {
    pick(rng, &[0, 1, 2, 255, 4096, 16_383, 16_384, 16_385, 32_768, 65_535, 1 << 20, 0x7fff_ffff])
}

/// Chunks of a PNG file: (offset of the length field, data length).
fn png_chunks(d: &[u8]) -> Vec<(usize, usize)> {
    let mut chunks = Vec::new();
    let mut at = 8;
    while at + 12 <= d.len() {
        let len = u32::from_be_bytes(d[at..at + 4].try_into().unwrap()) as usize;
        if at + 12 + len > d.len() {
            break;
        }
        chunks.push((at, len));
        at += 12 + len;
    }
    chunks
}

/// Recomputes every intact chunk's CRC, so that damage reaches the decoder past the checksum.
fn fix_png_crcs(d: &mut [u8]) {
    for (at, len) in png_chunks(d) {
        let crc = crc32fast::hash(&d[at + 4..at + 8 + len]);
        d[at + 8 + len..at + 12 + len].copy_from_slice(&crc.to_be_bytes());
    }
}

fn mutate_png(data: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut d = data.to_vec();
    match rng.below(4) {
        0 => {
            // IHDR: width, height, bit depth, colour type, interlace.
            match rng.below(4) {
                0 => {
                    let v = dimension(rng);
                    put(&mut d, 16, 4, true, v);
                    let v = dimension(rng);
                    put(&mut d, 20, 4, true, v);
                }
                1 => {
                    let v = dimension(rng);
                    put(&mut d, pick(rng, &[16, 20]), 4, true, v);
                }
                2 => {
                    let v = pick(rng, &[0, 1, 2, 4, 8, 16, 3, 255]);
                    put(&mut d, 24, 1, true, v);
                    let v = pick(rng, &[0, 2, 3, 4, 6, 1, 7]);
                    put(&mut d, 25, 1, true, v);
                }
                _ => {
                    let v = pick(rng, &[0, 1, 2]);
                    put(&mut d, 28, 1, true, v);
                }
            }
        }
        1 => {
            let chunks = png_chunks(&d);
            if let Some(&(at, len)) = chunks.get(rng.below(chunks.len().max(1))) {
                match rng.below(3) {
                    0 => {
                        let v = interesting(rng);
                        put(&mut d, at, 4, true, v);
                    }
                    1 => {
                        let copy = d[at..at + 12 + len].to_vec();
                        d.splice(at..at, copy);
                    }
                    _ => {
                        d.drain(at..at + 12 + len);
                    }
                }
            }
        }
        _ => d = mutate_bytes(&d, rng, Some(64)),
    }
    if rng.below(4) != 0 {
        fix_png_crcs(&mut d);
    }
    d
}

fn mutate_jpeg(data: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut d = data.to_vec();
    // Start of frame: precision, height, width (big-endian), components.
    let sof = d.windows(2).position(|w| w[0] == 0xff && matches!(w[1], 0xc0..=0xc2));
    match (rng.below(3), sof) {
        (0, Some(at)) => {
            let field = pick(rng, &[5, 7, 5, 7, 4, 9]);
            let v = if field == 4 || field == 9 {
                pick(rng, &[0, 1, 3, 4, 12, 255])
            } else {
                dimension(rng)
            };
            put(&mut d, at + field, if field == 4 || field == 9 { 1 } else { 2 }, true, v);
        }
        (1, _) => {
            // A segment length.
            let markers: Vec<usize> = d
                .windows(2)
                .enumerate()
                .filter(|(_, w)| w[0] == 0xff && (0xc0..=0xfe).contains(&w[1]) && w[1] != 0xd8)
                .map(|(i, _)| i)
                .collect();
            if let Some(&at) = markers.get(rng.below(markers.len().max(1))) {
                let v = interesting(rng);
                put(&mut d, at + 2, 2, true, v);
            }
        }
        _ => d = mutate_bytes(&d, rng, Some(256)),
    }
    d
}

fn mutate_webp(data: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut d = data.to_vec();
    match rng.below(3) {
        0 => {
            // RIFF size or the first chunk's size.
            let v = interesting(rng);
            put(&mut d, pick(rng, &[4, 16]), 4, false, v);
        }
        1 => {
            // VP8L: 14-bit width - 1 and height - 1 after the signature byte.
            if d.get(12..16) == Some(b"VP8L") && d.len() > 24 {
                let (w, h) = (dimension(rng).saturating_sub(1) & 0x3fff, rng.next_u64() & 0x3fff);
                let bits = w | (h << 14) | (u64::from(d[24] >> 4) << 28);
                put(&mut d, 21, 4, false, bits);
            } else {
                d = mutate_bytes(&d, rng, Some(40));
            }
        }
        _ => d = mutate_bytes(&d, rng, Some(64)),
    }
    d
}

fn mutate_bmp(data: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut d = data.to_vec();
    match rng.below(3) {
        0 => {
            // Width and height (signed: negative height is top-down).
            let v =
                if rng.below(3) == 0 { (-(dimension(rng) as i64)) as u64 } else { dimension(rng) };
            put(&mut d, pick(rng, &[18, 22]), 4, false, v);
        }
        1 => {
            // Pixel offset, bits per pixel, compression, image size, colours used.
            let (at, width, v) = match rng.below(5) {
                0 => (10, 4, interesting(rng)),
                1 => (28, 2, pick(rng, &[0, 1, 2, 4, 8, 16, 24, 32, 64])),
                2 => (30, 4, rng.below(8) as u64),
                3 => (34, 4, interesting(rng)),
                _ => (46, 4, interesting(rng)),
            };
            put(&mut d, at, width, false, v);
        }
        _ => d = mutate_bytes(&d, rng, Some(64)),
    }
    d
}

/// Offsets of the entries of a little-endian TIFF's first IFD.
fn tiff_entries(d: &[u8]) -> Vec<usize> {
    let Some(ifd) = d.get(4..8).map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize) else {
        return Vec::new();
    };
    let Some(count) = d.get(ifd..ifd + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize) else {
        return Vec::new();
    };
    (0..count).map(|i| ifd + 2 + 12 * i).filter(|&at| at + 12 <= d.len()).collect()
}

fn mutate_tiff(data: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut d = data.to_vec();
    let entries = tiff_entries(&d);
    match (rng.below(3), entries.get(rng.below(entries.len().max(1)))) {
        (0 | 1, Some(&at)) => {
            // An entry's type, count or value (width, height, strip offsets and sizes, ...).
            let (field, width, v) = match rng.below(4) {
                0 => (2, 2, rng.below(20) as u64),
                1 => (4, 4, interesting(rng)),
                2 => (8, 4, dimension(rng)),
                _ => (8, 4, interesting(rng)),
            };
            put(&mut d, at + field, width, false, v);
        }
        _ => d = mutate_bytes(&d, rng, None),
    }
    d
}

/// Where a GIF's first image descriptor starts: after the header, the global colour table and
/// any extension blocks.
fn gif_descriptor(d: &[u8]) -> Option<usize> {
    let packed = *d.get(10)?;
    let mut at = 13 + if packed & 0x80 != 0 { 3 << ((packed & 7) + 1) } else { 0 };
    while *d.get(at)? == 0x21 {
        at += 2;
        while *d.get(at)? != 0 {
            at += 1 + *d.get(at)? as usize;
        }
        at += 1;
    }
    (d[at] == 0x2c).then_some(at)
}

fn mutate_gif(data: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut d = data.to_vec();
    let descriptor = gif_descriptor(&d);
    match (rng.below(3), descriptor) {
        (0, _) => {
            // Logical screen width and height.
            let v = dimension(rng);
            put(&mut d, pick(rng, &[6, 8]), 2, false, v);
        }
        (1, Some(at)) => {
            // The frame's position and size, or its LZW minimum code size.
            match rng.below(3) {
                0 => {
                    let v = dimension(rng);
                    put(&mut d, at + pick(rng, &[1, 3, 5, 7]), 2, false, v);
                }
                1 => {
                    let v = pick(rng, &[0, 1, 2, 8, 11, 12, 13, 255]);
                    put(&mut d, at + 10, 1, false, v);
                }
                _ => {
                    let v = rng.next_u64();
                    put(&mut d, at + 9, 1, false, v);
                }
            }
        }
        _ => d = mutate_bytes(&d, rng, Some(64)),
    }
    d
}

// ---------------------------------------------------------------------------------------------
// The campaign

#[derive(Default)]
struct Tally {
    cases: usize,
    accepted: usize,
    rejected: usize,
    peak: usize,
    time: Duration,
    last_error: String,
}

/// The outcome of one case, or what is wrong with it.
fn run_case(
    ctx: &Ctx,
    target: &Target,
    bytes: &[u8],
    tally: &mut Tally,
) -> std::result::Result<(), String> {
    let path = ctx.dir.join(format!("case.{}", target.ext));
    std::fs::write(&path, bytes).map_err(|e| format!("cannot write the case: {e}"))?;
    let declared = if target.image { declared_pixels(&path) } else { 0 };
    let bound = allocation_bound(bytes.len(), declared);

    let start = CURRENT.load(Relaxed);
    REFUSED.store(0, Relaxed);
    PEAK.store(start, Relaxed);
    LIMIT.store(start.saturating_add(bound).saturating_add(HEADROOM), Relaxed);
    let began = Instant::now();
    let outcome = catch_unwind(AssertUnwindSafe(|| (target.run)(ctx, &path)));
    let took = began.elapsed();
    LIMIT.store(usize::MAX, Relaxed);
    let growth = PEAK.load(Relaxed).saturating_sub(start);
    let refused = REFUSED.load(Relaxed);

    tally.cases += 1;
    tally.peak = tally.peak.max(growth);
    tally.time += took;
    let messages = match outcome {
        Err(payload) => {
            let text = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            return Err(format!("panicked: {text}"));
        }
        Ok(Ok(messages)) => {
            tally.accepted += 1;
            messages
        }
        Ok(Err(e)) => {
            tally.rejected += 1;
            tally.last_error = format!("{e:#}");
            vec![tally.last_error.clone()]
        }
    };
    if refused > 0 {
        return Err(format!(
            "asked for {refused} bytes at once, over the bound of {bound} bytes for a file of {} \
             bytes",
            bytes.len()
        ));
    }
    if growth > bound {
        return Err(format!(
            "allocated {growth} bytes at its peak, over the bound of {bound} for a file of {} bytes",
            bytes.len()
        ));
    }
    if took > CASE_TIME_LIMIT {
        return Err(format!("took {took:?}"));
    }
    for m in &messages {
        if let Some(problem) = message_problem(m) {
            return Err(problem);
        }
    }
    Ok(())
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={text} is not a number")))
}

/// The stream of a target's cases: its name hashed (FNV-1a), so targets added later do not
/// change the cases of the others.
fn stream(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

fn case_bytes(seed: u64, target: &Target, seed_file: &[u8], case: usize) -> Vec<u8> {
    let mut rng = Rng::derive(seed, case as u64, stream(target.name));
    (target.mutate)(seed_file, &mut rng)
}

fn scratch_dir() -> tempfile::TempDir {
    // tmpfs when there is one: loaders that save atomically sync the file.
    let builder = || {
        let mut b = tempfile::Builder::new();
        b.prefix("fae-fuzz");
        b
    };
    builder().tempdir_in("/dev/shm").or_else(|_| builder().tempdir()).expect("a scratch folder")
}

fn latent() -> Grid {
    let data = (0..5 * 7 * 8).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect();
    Grid::new(5, 7, 8, data).unwrap()
}

#[test]
fn mutated_files_never_panic_or_allocate_out_of_proportion() {
    let seed = env_number("FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    SEED.store(seed, Relaxed);
    let only_target = std::env::var("FUZZ_TARGET").ok();
    let only_case = env_number("FUZZ_CASE").map(|c| c as usize);
    let dir = scratch_dir();
    let ctx =
        Ctx { device: backend::cpu().device, dir: dir.path().to_path_buf(), latent: latent() };
    let seeds: Vec<Vec<u8>> = TARGETS
        .iter()
        .map(|t| {
            std::fs::read(fixtures().join(t.corpus))
                .unwrap_or_else(|e| panic!("corpus file {}: {e}", t.corpus))
        })
        .collect();
    let mut tallies: Vec<Tally> = TARGETS.iter().map(|_| Tally::default()).collect();
    let mut failures = Vec::new();
    let replay = |t: &Target, case: usize| {
        format!(
            "FUZZ_SEED={seed:#x} FUZZ_TARGET={} FUZZ_CASE={case} cargo test --release --locked \
             --test fuzz -- --nocapture",
            t.name
        )
    };

    // One case, replayed.
    if let Some(case) = only_case {
        let name = only_target.expect("FUZZ_CASE needs FUZZ_TARGET");
        let (index, target) = TARGETS
            .iter()
            .enumerate()
            .find(|(_, t)| t.name == name)
            .unwrap_or_else(|| panic!("no target `{name}`"));
        let bytes = case_bytes(seed, target, &seeds[index], case);
        if let Some(save) = std::env::var_os("FUZZ_SAVE") {
            std::fs::write(&save, &bytes).expect("FUZZ_SAVE is writable");
        }
        TARGET.store(index, Relaxed);
        CASE.store(case, Relaxed);
        let result = run_case(&ctx, target, &bytes, &mut tallies[index]);
        let t = &tallies[index];
        let outcome = if t.accepted > 0 { "accepted" } else { &t.last_error };
        eprintln!("{name} case {case}: {} bytes, peak {} bytes: {outcome}", bytes.len(), t.peak);
        if let Err(problem) = result {
            panic!("{name} case {case} (seed {seed:#x}, corpus {}): {problem}", target.corpus);
        }
        return;
    }

    // The unmutated corpus must load (else the mutations test nothing), also warming up lazily
    // initialised state before anything is measured; then the regression files.
    for (index, target) in TARGETS.iter().enumerate() {
        TARGET.store(index, Relaxed);
        let mut tally = Tally::default();
        let result = run_case(&ctx, target, &seeds[index], &mut tally);
        assert!(
            result.is_ok() && tally.accepted == 1,
            "corpus file {} does not load: {result:?} {}",
            target.corpus,
            tally.last_error
        );
        eprintln!(
            "seed {:<16} {:>7} bytes, peak {:>9} bytes",
            target.name,
            seeds[index].len(),
            tally.peak
        );
    }
    let regressions = fixtures().join("fuzz/regressions");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&regressions)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let Some((index, target)) =
            TARGETS.iter().enumerate().find(|(_, t)| name.starts_with(&format!("{}-", t.name)))
        else {
            panic!("regression file {name} names no target (TARGET-anything.EXT)");
        };
        TARGET.store(index, Relaxed);
        let bytes = std::fs::read(file).unwrap();
        let mut tally = Tally::default();
        match run_case(&ctx, target, &bytes, &mut tally) {
            Err(problem) => failures.push(format!("regression {name}: {problem}")),
            Ok(()) if tally.accepted > 0 => eprintln!("regression {name}: accepted"),
            Ok(()) => eprintln!("regression {name}: {}", tally.last_error.replace('\n', " ")),
        }
    }

    // Rounds over all targets, so that a slow machine cuts every target short alike.
    let started = Instant::now();
    let rounds = TARGETS.iter().map(|t| t.cases).max().unwrap_or(0);
    for case in 0..rounds {
        if started.elapsed() > TIME_BUDGET || failures.len() >= 2000 {
            break;
        }
        for (index, target) in TARGETS.iter().enumerate() {
            if case >= target.cases || only_target.as_deref().is_some_and(|n| n != target.name) {
                continue;
            }
            TARGET.store(index, Relaxed);
            CASE.store(case, Relaxed);
            let bytes = case_bytes(seed, target, &seeds[index], case);
            if let Err(problem) = run_case(&ctx, target, &bytes, &mut tallies[index]) {
                failures.push(format!(
                    "{} case {case} (seed {seed:#x}, corpus {}): {problem}\n    replay: {}",
                    target.name,
                    target.corpus,
                    replay(target, case)
                ));
            }
        }
    }
    let elapsed = started.elapsed();

    eprintln!("fuzz seed {seed:#x}, {} regression files, {elapsed:.1?}:", files.len());
    eprintln!("  target            cases  accepted  rejected  peak MiB    time");
    for (target, t) in TARGETS.iter().zip(&tallies) {
        eprintln!(
            "  {:<16} {:>6} {:>9} {:>9} {:>9.2} {:>7.1?}",
            target.name,
            t.cases,
            t.accepted,
            t.rejected,
            t.peak as f64 / (1 << 20) as f64,
            t.time
        );
    }
    let total: usize = tallies.iter().map(|t| t.cases).sum();
    eprintln!("  total {total} cases");
    assert!(failures.is_empty(), "{} failing cases:\n{}", failures.len(), failures.join("\n"));
    for (target, t) in TARGETS.iter().zip(&tallies) {
        if only_target.as_deref().is_none_or(|n| n == target.name) {
            let needed = (target.cases as f64 * MIN_SHARE) as usize;
            assert!(
                t.cases >= needed,
                "{} ran only {} of {} cases in {TIME_BUDGET:?}; the campaign is too slow to mean \
                 anything",
                target.name,
                t.cases,
                target.cases
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The generated corpus

/// Deterministic small values for a tensor: around `centre`, spread `scale`.
fn values(rng: &mut Rng, n: usize, centre: f32, scale: f32) -> Vec<f32> {
    rng.normals(n).into_iter().map(|v| centre + scale * v).collect()
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn write_safetensors(
    path: &Path,
    tensors: &[(String, safetensors::Dtype, Vec<usize>, Vec<u8>)],
    metadata: &[(&str, String)],
) {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes).unwrap();
            (name.clone(), view)
        })
        .collect();
    let metadata = metadata.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    std::fs::write(path, safetensors::serialize(views, Some(metadata)).unwrap()).unwrap();
}

/// The tensors of a Hugging Face ViT layer stack, as (name, shape, centre, scale).
fn vit_tensors(
    rng: &mut Rng,
    specs: &[(String, Vec<usize>, f32, f32)],
    dtype: safetensors::Dtype,
) -> Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> {
    specs
        .iter()
        .map(|(name, shape, centre, scale)| {
            let v = values(rng, shape.iter().product(), *centre, *scale);
            let bytes = match dtype {
                safetensors::Dtype::BF16 => {
                    v.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect()
                }
                _ => f32_bytes(&v),
            };
            (name.clone(), dtype, shape.clone(), bytes)
        })
        .collect()
}

fn spec(name: &str, shape: &[usize], centre: f32, scale: f32) -> (String, Vec<usize>, f32, f32) {
    (name.to_string(), shape.to_vec(), centre, scale)
}

/// Linear layer weights and biases, PyTorch layout `[out, in]`.
fn linear(name: &str, d_in: usize, d_out: usize) -> [(String, Vec<usize>, f32, f32); 2] {
    let scale = 1.0 / (d_in as f32).sqrt();
    [
        spec(&format!("{name}.weight"), &[d_out, d_in], 0.0, scale),
        spec(&format!("{name}.bias"), &[d_out], 0.0, 0.1),
    ]
}

fn norm(name: &str, d: usize) -> [(String, Vec<usize>, f32, f32); 2] {
    [spec(&format!("{name}.weight"), &[d], 1.0, 0.1), spec(&format!("{name}.bias"), &[d], 0.0, 0.1)]
}

/// A hand-made JPEG EXIF segment saying "rotate 90° clockwise" (orientation 6).
const EXIF_ORIENTATION_6: [u8; 36] = [
    0xff, 0xe1, 0x00, 0x22, b'E', b'x', b'i', b'f', 0, 0, b'I', b'I', 0x2a, 0, 8, 0, 0, 0, 1, 0,
    0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0,
];

/// Writes the generated seed files of `tests/fixtures/fuzz/` (the recipe is written by hand).
#[test]
#[ignore = "rewrites the committed corpus; run by hand when a format changes"]
fn write_corpus() {
    use safetensors::Dtype;
    let dir = fixtures().join("fuzz");
    std::fs::create_dir_all(dir.join("regressions")).unwrap();
    let device = backend::cpu().device;
    let mut rng = Rng::new(20_251_202);

    // Plain tensors of every dtype, an empty and a scalar one, and checkpoint-like metadata.
    let f16: Vec<u8> = [0.5f32, -2.0, 1e-3, 65504.0]
        .iter()
        .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
        .collect();
    let bf16: Vec<u8> = [1.0f32, -1.5, 3e30, 0.0]
        .iter()
        .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
        .collect();
    let f64: Vec<u8> = [1.0f64, -0.25, 1e10].iter().flat_map(|x| x.to_le_bytes()).collect();
    let tensors = vec![
        ("a".to_string(), Dtype::F32, vec![2, 3], f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])),
        ("b.half".to_string(), Dtype::F16, vec![4], f16),
        ("c.brain".to_string(), Dtype::BF16, vec![2, 1, 2], bf16),
        ("d.double".to_string(), Dtype::F64, vec![3, 1], f64),
        ("optimizer".to_string(), Dtype::U8, vec![5], vec![1, 2, 3, 4, 5]),
        ("f.int".to_string(), Dtype::I32, vec![2], vec![1, 0, 0, 0, 2, 0, 0, 0]),
        ("g.scalar".to_string(), Dtype::F32, vec![], f32_bytes(&[7.0])),
        ("h.empty".to_string(), Dtype::F32, vec![3, 0], Vec::new()),
    ];
    let meta = [
        ("format", "pt".to_string()),
        ("param_ids", r#"{"a": 1, "b.half": 2}"#.to_string()),
        ("train_state", r#"{"step": 3, "seed": 7}"#.to_string()),
    ];
    write_safetensors(&dir.join("tensors.safetensors"), &tensors, &meta);

    // DINOv2 with a register token and a SwiGLU MLP, its configuration in the metadata.
    let (d, h) = (8, 24);
    let mut specs = vec![
        spec("embeddings.cls_token", &[1, 1, d], 0.0, 1.0),
        spec("embeddings.mask_token", &[1, d], 0.0, 1.0),
        spec("embeddings.register_tokens", &[1, 1, d], 0.0, 1.0),
        spec("embeddings.patch_embeddings.projection.weight", &[d, 3, 2, 2], 0.0, 0.3),
        spec("embeddings.patch_embeddings.projection.bias", &[d], 0.0, 0.1),
        spec("embeddings.position_embeddings", &[1, 5, d], 0.0, 0.5),
        spec("encoder.layer.0.layer_scale1.lambda1", &[d], 1.0, 0.2),
        spec("encoder.layer.0.layer_scale2.lambda1", &[d], 1.0, 0.2),
    ];
    for m in ["query", "key", "value"] {
        specs.extend(linear(&format!("encoder.layer.0.attention.attention.{m}"), d, d));
    }
    specs.extend(linear("encoder.layer.0.attention.output.dense", d, d));
    specs.extend(linear("encoder.layer.0.mlp.weights_in", d, 2 * h));
    specs.extend(linear("encoder.layer.0.mlp.weights_out", h, d));
    specs.extend(norm("encoder.layer.0.norm1", d));
    specs.extend(norm("encoder.layer.0.norm2", d));
    specs.extend(norm("layernorm", d));
    let config = json!({
        "model_type": "dinov2_with_registers", "hidden_size": d, "num_hidden_layers": 1,
        "num_attention_heads": 2, "mlp_ratio": 4, "patch_size": 2, "image_size": 4,
        "use_swiglu_ffn": true, "num_register_tokens": 1, "qkv_bias": true,
        "hidden_act": "gelu", "layer_norm_eps": 1e-6, "num_channels": 3
    });
    let tensors = vit_tensors(&mut rng, &specs, Dtype::F32);
    let meta = [("format", "pt".to_string()), ("config", config.to_string())];
    write_safetensors(&dir.join("dinov2_meta.safetensors"), &tensors, &meta);

    // A full SigLIP model's vision tower (prefixed, bf16), with a text tower and pooling head to
    // skip and the configuration nested in `vision_config`.
    let (d, i) = (8, 16);
    let p = "vision_model.";
    let mut specs = vec![
        spec(&format!("{p}embeddings.patch_embedding.weight"), &[d, 3, 2, 2], 0.0, 0.3),
        spec(&format!("{p}embeddings.patch_embedding.bias"), &[d], 0.0, 0.1),
        spec(&format!("{p}embeddings.position_embedding.weight"), &[4, d], 0.0, 0.5),
        spec(&format!("{p}head.probe"), &[1, 1, d], 0.0, 1.0),
        spec("text_model.embeddings.token_embedding.weight", &[4, d], 0.0, 1.0),
    ];
    for m in ["q_proj", "k_proj", "v_proj", "out_proj"] {
        specs.extend(linear(&format!("{p}encoder.layers.0.self_attn.{m}"), d, d));
    }
    specs.extend(linear(&format!("{p}encoder.layers.0.mlp.fc1"), d, i));
    specs.extend(linear(&format!("{p}encoder.layers.0.mlp.fc2"), i, d));
    specs.extend(norm(&format!("{p}encoder.layers.0.layer_norm1"), d));
    specs.extend(norm(&format!("{p}encoder.layers.0.layer_norm2"), d));
    specs.extend(norm(&format!("{p}post_layernorm"), d));
    let config = json!({
        "model_type": "siglip",
        "text_config": {"hidden_size": d},
        "vision_config": {
            "model_type": "siglip_vision_model", "hidden_size": d, "intermediate_size": i,
            "num_hidden_layers": 1, "num_attention_heads": 2, "patch_size": 2, "image_size": 4
        }
    });
    let tensors = vit_tensors(&mut rng, &specs, Dtype::BF16);
    let meta = [("format", "pt".to_string()), ("config", config.to_string())];
    write_safetensors(&dir.join("siglip_meta.safetensors"), &tensors, &meta);

    // A tiny FAE training checkpoint (EMA and raw weights, optimizer bytes, training state).
    let mut cfg = FaeConfig::small("fuzz-encoder", 8, 2, 4);
    (cfg.latent_channels, cfg.enc_heads, cfg.enc_head_dim) = (8, 1, 8);
    (cfg.dec_width, cfg.dec_depth, cfg.dec_heads, cfg.dec_mlp_ratio) = (8, 1, 2, 1.0);
    (cfg.pix_width, cfg.pix_depth, cfg.pix_heads, cfg.pix_mlp_ratio, cfg.pix_patch) =
        (8, 1, 2, 1.0, 2);
    cfg.validate().unwrap();
    let model = fae::model::seeded_init(FaeModel::new(&cfg, &device), 7);
    let stats = LatentStats { mean: vec![0.1; 8], std: vec![1.5; 8] };
    let train = fae::TrainState {
        weights: &model,
        optimizer: (0..48).collect(),
        state: json!({"step": 3, "seed": 7, "stage": "all"}),
        discriminator: None,
    };
    fae::save(&dir.join("fae.safetensors"), &cfg, &stats, &model, 3, Some(train), false).unwrap();

    // A tiny class-conditional generator, f16 like the shipped one.
    let cfg = GeneratorConfig {
        grid: (2, 2),
        channels: 8,
        patch: 1,
        width: 8,
        depth: 1,
        heads: 2,
        mlp_ratio: 1.0,
        classes: vec!["cat".into(), "dog".into()],
        rope_base: 100.0,
    };
    cfg.validate().unwrap();
    let model = generator::model::init(&cfg, 7, &device);
    let fae_ref =
        generator::FaeRef { path: Some("fae.safetensors".into()), sha256: "0".repeat(64) };
    let path = dir.join("generator.safetensors");
    generator::save(&path, &model, &fae_ref, 5, None, true).unwrap();

    // A session with images, a recipe and changed settings.
    let mut session = Session {
        images: vec!["photos/a.png".into(), "photos/b.jpg".into()],
        active: Some("photos/a.png".into()),
        ..Default::default()
    };
    let recipe = Recipe::from_json(
        r#"{"version": 1, "edits": [
            {"op": "noise", "seed": 7, "sigma": 0.1, "mask": {"rect": [0.5, 0, 1, 1], "feather": 0.05}},
            {"op": "blend", "source": "photos/b.jpg", "strength": 0.3}
        ]}"#,
    )
    .unwrap();
    session.recipes.insert("photos/a.png".into(), recipe);
    session.settings.model = Some("models/fae.safetensors".into());
    session.settings.size = Some(224);
    session.settings.generate.class = Some("cat".into());
    session.save(&dir.join("session.json")).unwrap();

    // One small image per format; the JPEG carries an EXIF orientation.
    let rgba = image::RgbaImage::from_fn(12, 9, |x, y| {
        let a = if (x + y) % 3 == 0 { 128 } else { 255 };
        image::Rgba([(x * 20) as u8, (y * 28) as u8, (x * y * 3) as u8, a])
    });
    let rgb = image::DynamicImage::ImageRgba8(rgba.clone()).to_rgb8();
    let encode = |image: image::DynamicImage, format| {
        let mut out = std::io::Cursor::new(Vec::new());
        image.write_to(&mut out, format).unwrap();
        out.into_inner()
    };
    use image::{DynamicImage as Dyn, ImageFormat as F};
    std::fs::write(dir.join("image.png"), encode(Dyn::ImageRgba8(rgba.clone()), F::Png)).unwrap();
    std::fs::write(dir.join("image.webp"), encode(Dyn::ImageRgba8(rgba.clone()), F::WebP)).unwrap();
    std::fs::write(dir.join("image.gif"), encode(Dyn::ImageRgba8(rgba), F::Gif)).unwrap();
    std::fs::write(dir.join("image.bmp"), encode(Dyn::ImageRgb8(rgb.clone()), F::Bmp)).unwrap();
    std::fs::write(dir.join("image.tiff"), encode(Dyn::ImageRgb8(rgb.clone()), F::Tiff)).unwrap();
    let mut jpeg = encode(Dyn::ImageRgb8(rgb), F::Jpeg);
    jpeg.splice(2..2, EXIF_ORIENTATION_6);
    std::fs::write(dir.join("image.jpg"), jpeg).unwrap();
    let upright = image_io::load_rgb(&dir.join("image.jpg")).unwrap();
    assert_eq!(upright.dimensions(), (9, 12), "the EXIF orientation is applied");
}
