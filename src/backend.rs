//! Choosing where tensors live: a GPU through wgpu (any adapter, lavapipe included) or the CPU
//! backend (burn's `flex`). Automatic choice prefers a real GPU and otherwise the CPU, because
//! a software Vulkan adapter is far slower than the CPU backend.

use std::sync::OnceLock;

use anyhow::{Result, bail};
use burn::tensor::Device;
use burn::tensor::wgpu::wgpu;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// A GPU when one is present, else the CPU.
    Auto,
    /// burn's CPU backend.
    Cpu,
    /// wgpu on the best adapter (a software one if there is no GPU).
    Wgpu,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    Cpu,
    Wgpu,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Wgpu => "wgpu",
        }
    }
}

/// A device ready for tensors, with a description of what runs it.
#[derive(Clone, Debug)]
pub struct Compute {
    pub device: Device,
    pub kind: BackendKind,
    /// The adapter in words, e.g. `NVIDIA H200 (Vulkan, DiscreteGpu)` or `CPU (flex, 2 threads)`.
    pub adapter: String,
    /// True for software adapters such as lavapipe.
    pub software: bool,
}

/// Adapters wgpu can see, without creating a device.
pub fn wgpu_adapters() -> Vec<wgpu::AdapterInfo> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
        .into_iter()
        .map(|a| a.get_info())
        .collect()
}

/// Whether a hardware GPU adapter that should run the model is present. OpenGL adapters are left
/// out: burn's kernels do run there (tests/encoders.rs checks them on Mesa's GL), but with the
/// downlevel limits of wgpu's compatibility path; `--backend wgpu` still picks one.
pub fn has_gpu() -> bool {
    wgpu_adapters().iter().any(can_compute)
}

fn can_compute(a: &wgpu::AdapterInfo) -> bool {
    a.device_type != wgpu::DeviceType::Cpu && a.backend != wgpu::Backend::Gl
}

pub fn cpu() -> Compute {
    // burn-flex works on rayon's global pool, which honours RAYON_NUM_THREADS.
    let threads = rayon::current_num_threads();
    Compute {
        device: Device::flex(),
        kind: BackendKind::Cpu,
        adapter: format!("CPU (flex, {threads} thread{})", if threads == 1 { "" } else { "s" }),
        software: false,
    }
}

type WgpuInit = std::result::Result<(Compute, burn::tensor::wgpu::WgpuSetup), String>;

fn wgpu_init() -> &'static WgpuInit {
    static WGPU: OnceLock<WgpuInit> = OnceLock::new();
    WGPU.get_or_init(|| {
        let (device, setup) = Device::wgpu_options()
            .init_with_setup()
            .map_err(|e| format!("no usable wgpu adapter: {e}"))?;
        let info = setup.adapter.get_info();
        let compute = Compute {
            device,
            kind: BackendKind::Wgpu,
            adapter: format!("{} ({:?}, {:?})", info.name, info.backend, info.device_type),
            software: info.device_type == wgpu::DeviceType::Cpu,
        };
        Ok((compute, setup))
    })
}

/// The wgpu runtime can be initialised once per process; later calls share it.
pub fn wgpu() -> Result<Compute> {
    match wgpu_init() {
        Ok((c, _)) => Ok(c.clone()),
        Err(e) => bail!("{e}"),
    }
}

/// The instance, adapter, device and queue that burn's wgpu runtime uses (initialising it if
/// needed), so a window can render on the same device and share tensors' buffers.
pub fn wgpu_setup() -> Result<burn::tensor::wgpu::WgpuSetup> {
    match wgpu_init() {
        Ok((_, setup)) => Ok(setup.clone()),
        Err(e) => bail!("{e}"),
    }
}

pub fn select(choice: BackendChoice) -> Result<Compute> {
    match choice {
        BackendChoice::Cpu => Ok(cpu()),
        BackendChoice::Wgpu => wgpu(),
        BackendChoice::Auto if has_gpu() => wgpu().or_else(|_| Ok(cpu())),
        BackendChoice::Auto => Ok(cpu()),
    }
}

/// Peak resident memory of this process in MiB (Linux), for benchmarks.
/// Resets the process's peak resident memory ([`peak_rss_mib`]) to what is resident now (Linux's
/// `/proc/self/clear_refs`; elsewhere it does nothing).
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
