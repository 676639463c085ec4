//! Choosing the window's graphics API before the window opens. wgpu's own choice is one backend
//! (DX12 on Windows); where that backend gives no device, or a device that cannot compile
//! shaders (DX12 through vkd3d under Wine: "Parent device is lost"), eframe gave up and the window
//! never opened. winit allows one event loop per process, so the window cannot simply be retried:
//! each backend is probed first, in the platform's order, by creating an adapter and a device and
//! building egui's pipelines and our token-map pipeline on it inside error scopes. The first that
//! builds both draws the window; when only egui's pipelines build, maps are drawn on the CPU path.
//! `WGPU_BACKEND` names the backends tried first.

use std::sync::{Arc, Mutex};

use eframe::egui_wgpu;
use eframe::wgpu;
use egui::os::OperatingSystem;

use super::gpu::{self, MapPath};

/// What one backend gave when probed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A device that built egui's pipelines; `maps` says whether our token-map shader built too
    /// (`MapPath::Cpu` when it did not).
    Works { adapter: String, maps: MapPath },
    /// Why not: no adapter, no device, a pipeline the device rejected, a lost device.
    Fails(String),
}

/// The backend the window opens on, and why those before it were passed over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    /// `None` when no backend worked (eframe then tries them all itself).
    pub backend: Option<wgpu::Backend>,
    pub adapter: Option<String>,
    /// How token maps will be drawn on it.
    pub maps: MapPath,
    /// Backends tried and not chosen, each with the reason.
    pub passed_over: Vec<(wgpu::Backend, String)>,
}

impl Choice {
    /// For the status bar: which backends were passed over and why; `None` when the first one
    /// tried runs with its shaders.
    pub fn note(&self) -> Option<String> {
        if self.passed_over.is_empty() {
            return None;
        }
        let reasons: Vec<String> =
            self.passed_over.iter().map(|(b, why)| format!("{b:?}: {why}")).collect();
        Some(format!("fell back from {}", reasons.join("; ")))
    }
}

/// The backends to try, in order: those `WGPU_BACKEND` names (`forced`) first, then the
/// platform's own order (DX12, Vulkan, OpenGL on Windows; Metal, OpenGL on macOS; Vulkan,
/// OpenGL elsewhere).
pub fn order(os: OperatingSystem, forced: Option<wgpu::Backends>) -> Vec<wgpu::Backend> {
    use wgpu::Backend::*;
    let platform: &[wgpu::Backend] = match os {
        OperatingSystem::Windows => &[Dx12, Vulkan, Gl],
        OperatingSystem::Mac | OperatingSystem::IOS => &[Metal, Gl],
        _ => &[Vulkan, Gl],
    };
    let every = [Dx12, Vulkan, Metal, Gl, BrowserWebGpu];
    let mut out = Vec::new();
    if let Some(forced) = forced {
        for b in platform.iter().chain(&every) {
            if forced.contains(wgpu::Backends::from(*b)) && !out.contains(b) {
                out.push(*b);
            }
        }
    }
    for b in platform {
        if !out.contains(b) {
            out.push(*b);
        }
    }
    out
}

/// Probes `order` until a backend builds every pipeline; if none does, the first that built
/// egui's pipelines draws maps on the CPU path; if none did that either, `backend` is `None`.
pub fn choose(order: &[wgpu::Backend], mut probe: impl FnMut(wgpu::Backend) -> Probe) -> Choice {
    let mut passed_over = Vec::new();
    let mut without_maps: Option<(wgpu::Backend, String)> = None;
    for &backend in order {
        match probe(backend) {
            Probe::Works { adapter, maps } if maps.on_gpu() => {
                return Choice {
                    backend: Some(backend),
                    adapter: Some(adapter),
                    maps,
                    passed_over,
                };
            }
            Probe::Works { adapter, .. } => {
                passed_over.push((backend, "its token-map shader did not build".into()));
                without_maps.get_or_insert((backend, adapter));
            }
            Probe::Fails(why) => passed_over.push((backend, why)),
        }
    }
    match without_maps {
        Some((backend, adapter)) => {
            passed_over.retain(|(b, _)| *b != backend);
            Choice {
                backend: Some(backend),
                adapter: Some(adapter),
                maps: MapPath::Cpu,
                passed_over,
            }
        }
        None => Choice { backend: None, adapter: None, maps: MapPath::Cpu, passed_over },
    }
}

/// egui's setup for new devices, limited to `backends`: the probe and the window use the same one
/// (and so the same device limits).
pub fn setup_for(backends: wgpu::Backends) -> egui_wgpu::WgpuSetupCreateNew {
    let mut setup = egui_wgpu::WgpuSetupCreateNew::without_display_handle();
    setup.instance_descriptor.backends = backends;
    setup
}

/// Creates an adapter and a device on `backend` alone and builds the window's pipelines on them.
/// Panics inside wgpu or a driver are caught and reported as the reason.
pub fn probe(backend: wgpu::Backend) -> Probe {
    std::panic::catch_unwind(|| probe_unguarded(backend)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panicked".into());
        Probe::Fails(one_line(&why))
    })
}

fn probe_unguarded(backend: wgpu::Backend) -> Probe {
    let setup = setup_for(backend.into());
    let device_descriptor = setup.device_descriptor.clone();
    let options = wgpu::RequestAdapterOptions {
        power_preference: setup.power_preference,
        force_fallback_adapter: false,
        compatible_surface: None,
        apply_limit_buckets: false,
    };
    let instance = wgpu::Instance::new(setup.instance_descriptor);
    let adapter = match pollster::block_on(instance.request_adapter(&options)) {
        Ok(a) => a,
        Err(_) => return Probe::Fails("no adapter".into()),
    };
    let (device, queue) =
        match pollster::block_on(adapter.request_device(&device_descriptor(&adapter))) {
            Ok(dq) => dq,
            Err(e) => return Probe::Fails(format!("no device: {}", one_line(&e.to_string()))),
        };
    let lost: Arc<Mutex<Option<String>>> = Arc::default();
    let slot = lost.clone();
    device.set_device_lost_callback(move |_, message| {
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(message);
    });
    check_device(instance, adapter, device, queue, Some(&lost))
}

/// Builds egui's pipelines and our token-map pipeline on a device (one of the probe's, or the
/// one shared with the model), inside error scopes.
pub fn check_device(
    instance: wgpu::Instance,
    adapter: wgpu::Adapter,
    device: wgpu::Device,
    queue: wgpu::Queue,
    lost: Option<&Mutex<Option<String>>>,
) -> Probe {
    let info = adapter.get_info();
    let name = format!("{} ({:?})", info.name, info.backend);
    let is_lost = || -> Option<String> {
        let _ = device.poll(wgpu::PollType::wait_indefinitely());
        let lost = lost?.lock().unwrap_or_else(|e| e.into_inner()).clone()?;
        Some(format!("device lost: {}", one_line(&lost)))
    };
    // egui's own shader and pipelines, as the window builds them.
    let format = wgpu::TextureFormat::Bgra8Unorm;
    let scopes = [
        wgpu::ErrorFilter::Validation,
        wgpu::ErrorFilter::OutOfMemory,
        wgpu::ErrorFilter::Internal,
    ]
    .map(|f| device.push_error_scope(f));
    let renderer = egui_wgpu::Renderer::new(&device, format, egui_wgpu::RendererOptions::default());
    for scope in scopes.into_iter().rev() {
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Probe::Fails(format!("egui's pipelines: {}", one_line(&e.to_string())));
        }
    }
    if let Some(why) = is_lost() {
        return Probe::Fails(why);
    }
    let rs = egui_wgpu::RenderState {
        adapter,
        available_adapters: Vec::new(),
        instance,
        device: device.clone(),
        queue,
        target_format: format,
        renderer: Arc::new(egui::mutex::RwLock::new(renderer)),
    };
    let maps = gpu::init(Some(&rs), &mut gpu::TextureCache::default());
    if let Some(why) = is_lost() {
        return Probe::Fails(why);
    }
    Probe::Works { adapter: name, maps }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
