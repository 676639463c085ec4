//! The app as a new user starts it (the built-in model, the sample photo, every setting at its
//! default) on each kind of adapter CI can offer: Vulkan (lavapipe), OpenGL (Mesa's, through EGL)
//! and no wgpu renderer at all. Then the real binary in a window under a virtual X display, on
//! Vulkan and with Vulkan hidden (OpenGL), through `--screenshot`.

use std::io::Read;
use std::process::{Child, Command, Stdio};

use eframe::{egui_wgpu, wgpu};
use fae_studio::app::gpu::MapPath;

use super::*;

/// A new user's start: nothing overridden but where the session is kept.
fn new_user(dir: &Path) -> AppOptions {
    AppOptions {
        backend: None,
        model: None,
        size: None,
        session_path: Some(dir.join("session.json")),
        open_sample: true,
    }
}

fn harness_on(backends: wgpu::Backends, opts: AppOptions) -> Harness<'static, FaeApp> {
    let mut setup = egui_wgpu::WgpuSetupCreateNew::without_display_handle();
    setup.instance_descriptor.backends = backends;
    Harness::builder()
        .with_size(Vec2::new(1500.0, 950.0))
        .wgpu_setup(egui_wgpu::WgpuSetup::CreateNew(setup))
        .build_eframe(move |cc| FaeApp::new(cc, opts))
}

/// Waits for the built-in model and the sample photo, as a new user sees them.
fn wait_sample(h: &mut Harness<'_, FaeApp>) {
    wait_model(h);
    wait(h, 300, "the sample photo", |a| ready(a, 1));
    let doc = h.state().state.active_doc().unwrap();
    assert_eq!(doc.path, fae_studio::app::sample_image().unwrap());
    assert_eq!(h.state().state.model.as_ref().unwrap().path, None, "the built-in model");
}

/// The picture in `region` of `shot` is `photo`: grey levels correlate and differ little on
/// average (both resized to 32 x 32).
fn assert_shows(shot: &image::RgbaImage, region: [u32; 4], photo: &image::RgbImage) {
    let [x, y, w, h] = region;
    assert!(x + w <= shot.width() && y + h <= shot.height(), "{region:?} outside the picture");
    let crop = image::imageops::crop_imm(shot, x, y, w, h).to_image();
    let grey = |img: image::DynamicImage| -> Vec<f64> {
        let small = img.resize_exact(32, 32, image::imageops::FilterType::Triangle).to_luma8();
        small.pixels().map(|p| p.0[0] as f64).collect()
    };
    let a = grey(image::DynamicImage::ImageRgba8(crop));
    let b = grey(image::DynamicImage::ImageRgb8(photo.clone()));
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (ma, mb) = (mean(&a), mean(&b));
    let cov: f64 = a.iter().zip(&b).map(|(p, q)| (p - ma) * (q - mb)).sum();
    let var = |v: &[f64], m: f64| v.iter().map(|p| (p - m).powi(2)).sum::<f64>();
    let corr = cov / (var(&a, ma) * var(&b, mb)).sqrt();
    let diff = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).sum::<f64>() / a.len() as f64;
    assert!(corr > 0.9 && diff < 20.0, "correlation {corr:.3}, mean difference {diff:.1}/255");
}

/// The photo drawn in the Original pane of a rendered frame.
fn assert_original_drawn(h: &Harness<'_, FaeApp>, rendered: &image::RgbaImage) {
    let st = &h.state().state;
    let (_, r) = st.canvas.image_rects.iter().find(|(p, _)| *p == Pane::Original).unwrap();
    let visible =
        r.intersect(egui::Rect::from_min_size(egui::Pos2::ZERO, Vec2::new(1500.0, 950.0)));
    let region =
        [visible.min.x, visible.min.y, visible.width(), visible.height()].map(|v| v as u32);
    // The visible part of the picture the encoder saw.
    let seen =
        fae_studio::image_io::to_rgb8(&st.active_doc().unwrap().analysis.as_ref().unwrap().image);
    let fx = |v: f32| ((v - r.min.x) / r.width() * seen.width() as f32) as u32;
    let fy = |v: f32| ((v - r.min.y) / r.height() * seen.height() as f32) as u32;
    let part = image::imageops::crop_imm(
        &seen,
        fx(visible.min.x),
        fy(visible.min.y),
        fx(visible.max.x) - fx(visible.min.x),
        fy(visible.max.y) - fy(visible.min.y),
    )
    .to_image();
    assert_shows(rendered, region, &part);
}

fn starts_and_draws(backends: wgpu::Backends, api: &str, path: MapPath) {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness_on(backends, new_user(dir.path()));
    let st = &h.state().state;
    assert!(st.renderer.contains(api), "renderer {}", st.renderer);
    assert_eq!(st.map_path, path, "on {}", st.renderer);
    eprintln!("window: {}; maps: {}", st.renderer, st.map_path.label());
    wait_sample(&mut h);
    let (_, rendered, _) = latent_map_matches_cpu(&mut h);
    let _ =
        rendered.save(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("app-{api}.png")));
    assert_original_drawn(&h, &rendered);
}

#[test]
fn a_new_user_starts_on_vulkan() {
    starts_and_draws(wgpu::Backends::VULKAN, "Vulkan", MapPath::StorageBuffer);
}

/// OpenGL adapters have no storage buffers in the fragment stage: the maps read a texture.
#[test]
fn a_new_user_starts_on_opengl() {
    starts_and_draws(wgpu::Backends::GL, "Gl", MapPath::Texture);
}

/// No wgpu renderer: pictures and maps are drawn as textures from the CPU; and the Fine-tune
/// panel's Start with its default settings (a fine-tune of the built-in model, every loss term
/// on) runs steps.
#[test]
fn a_new_user_starts_without_a_renderer_and_fine_tunes_with_the_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = harness(new_user(dir.path()));
    assert_eq!(h.state().state.map_path, MapPath::Cpu);
    assert_eq!(h.state().state.renderer, "no wgpu renderer");
    wait_sample(&mut h);
    let panes: Vec<Pane> = h.state().state.canvas.image_rects.iter().map(|(p, _)| *p).collect();
    assert_eq!(panes, [Pane::Original, Pane::Reconstruction, Pane::Edited]);

    let data = dir.path().join("photos");
    std::fs::create_dir_all(&data).unwrap();
    for name in ["chelsea.png", "astronaut.png", "coffee.png"] {
        std::fs::copy(sample(name), data.join(name)).unwrap();
    }
    h.get_by_label("Fine-tune").click();
    h.step();
    let defaults = fae_studio::app::state::TrainSettings::default();
    {
        let st = &mut h.state_mut().state;
        assert_eq!(st.session.settings.train, defaults, "a new session has the default settings");
        let t = &mut st.session.settings.train;
        t.data = Some(data.clone());
        t.out = Some(dir.path().join("run"));
        t.cache = Some(dir.path().join("cache"));
        st.train.scan(data.clone());
    }
    wait(&mut h, 60, "the folder scan", |a| a.state.train.found.is_some());
    h.get_by_label("Start").click();
    h.step();
    wait(&mut h, 900, "a loss record", |a| {
        !a.state.train.losses.is_empty() || !a.state.train.running()
    });
    let t = &h.state().state.train;
    assert!(t.running(), "the run ended early: {:?}", t.finished);
    assert!(t.losses.iter().all(|(_, p)| p[1].is_finite()), "{:?}", t.losses);
    h.get_by_label("Stop").click();
    h.step();
    wait(&mut h, 300, "the run to stop", |a| !a.state.train.running());
    let t = &h.state().state.train;
    assert!(t.finished.as_deref().unwrap_or("").contains("stopped"), "{:?}", t.finished);
    assert!(t.checkpoint().is_some_and(|c| c.exists()), "a resumable checkpoint");
}

/// A virtual X display for the real window.
pub(crate) struct Xvfb {
    child: Child,
    pub(crate) display: String,
}

impl Xvfb {
    pub(crate) fn start() -> Self {
        // A display number of our own, so parallel tests and other programs do not collide.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = 50
            + (std::process::id() % 400) * 4
            + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 4;
        let display = format!(":{n}");
        let child = Command::new("Xvfb")
            .args([&display, "-screen", "0", "1400x900x24", "-nolisten", "tcp"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb runs the real window (apt-get install xvfb)");
        let socket = PathBuf::from(format!("/tmp/.X11-unix/X{n}"));
        let start = Instant::now();
        while !socket.exists() {
            assert!(start.elapsed() < Duration::from_secs(20), "Xvfb did not start on {display}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, display }
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `fae-studio --screenshot` in a fresh home under `display`; returns its summary line
/// and the screenshot.
pub(crate) fn real_window(display: &str, env: &[(&str, &str)]) -> (String, image::RgbaImage) {
    let home = tempfile::tempdir().unwrap();
    let shot = home.path().join("window.png");
    let run = home.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fae-studio"));
    cmd.arg("--screenshot")
        .arg(&shot)
        .env("DISPLAY", display)
        .env_remove("WAYLAND_DISPLAY")
        .env("HOME", home.path())
        .env("XDG_DATA_HOME", home.path().join("data"))
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .env("XDG_RUNTIME_DIR", &run)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(900) {
            let _ = child.kill();
            panic!("the app did not finish its screenshot in 900 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let (mut out, mut err) = (String::new(), String::new());
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "the app failed: {err}");
    let line =
        out.lines().find(|l| l.starts_with("screenshot ")).expect("a summary line").to_string();
    eprintln!("{line}");
    (line, image::open(&shot).unwrap().to_rgba8())
}

/// `... original picture at X,Y,W,H px` of the summary line.
fn original_region(line: &str) -> [u32; 4] {
    let at = line.rsplit("original picture at ").next().unwrap().trim_end_matches(" px");
    let v: Vec<u32> = at.split(',').map(|n| n.parse().unwrap()).collect();
    [v[0], v[1], v[2], v[3]]
}

/// The encoder's view of the sample photo at the built-in model's 224 px.
fn sample_as_seen() -> image::RgbImage {
    let photo = fae_studio::image_io::load_rgb(&fae_studio::app::sample_image().unwrap()).unwrap();
    fae_studio::image_io::to_rgb8(&fae_studio::image_io::fit_and_crop(&photo, 224, 224))
}

#[test]
fn the_real_window_opens_on_vulkan_and_with_only_opengl() {
    let x = Xvfb::start();
    let (line, shot) = real_window(&x.display, &[]);
    assert!(line.contains("(Vulkan)") && line.contains("storage buffer"), "{line}");
    assert_shows(&shot, original_region(&line), &sample_as_seen());

    // Vulkan hidden, as on a machine without a Vulkan driver: OpenGL draws the window.
    let (line, shot) = real_window(&x.display, &[("VK_ICD_FILENAMES", "/nonexistent.json")]);
    assert!(line.contains("(Gl)") && line.contains("texture"), "{line}");
    assert_shows(&shot, original_region(&line), &sample_as_seen());
}
