//! The window's backend fallback: the order backends are tried in, the choice among probe
//! results (faked here), and the real binary under a virtual display with `WGPU_BACKEND` naming
//! a backend this machine does not have.

use eframe::wgpu::{Backend, Backends};
use egui::os::OperatingSystem;
use fae_studio::app::fallback::{self, Probe};
use fae_studio::app::gpu::MapPath;

use super::adapters::{Xvfb, real_window};

#[test]
fn each_platform_tries_its_own_backends_first_and_wgpu_backend_names_the_first() {
    use Backend::*;
    assert_eq!(fallback::order(OperatingSystem::Windows, None), [Dx12, Vulkan, Gl]);
    assert_eq!(fallback::order(OperatingSystem::Mac, None), [Metal, Gl]);
    assert_eq!(fallback::order(OperatingSystem::Nix, None), [Vulkan, Gl]);
    assert_eq!(fallback::order(OperatingSystem::Windows, Some(Backends::GL)), [Gl, Dx12, Vulkan]);
    assert_eq!(
        fallback::order(OperatingSystem::Windows, Some(Backends::VULKAN | Backends::GL)),
        [Vulkan, Gl, Dx12]
    );
    // A backend the platform does not offer is still tried first when named.
    assert_eq!(fallback::order(OperatingSystem::Nix, Some(Backends::DX12)), [Dx12, Vulkan, Gl]);
}

fn works(maps: MapPath) -> Probe {
    Probe::Works { adapter: "fake".into(), maps }
}

#[test]
fn the_first_backend_that_builds_every_pipeline_is_chosen() {
    use Backend::*;
    let order = [Dx12, Vulkan, Gl];
    // Everything works: the first, with nothing to report, and no other is probed.
    let mut probed = Vec::new();
    let c = fallback::choose(&order, |b| {
        probed.push(b);
        works(MapPath::StorageBuffer)
    });
    assert_eq!((c.backend, c.maps, c.note()), (Some(Dx12), MapPath::StorageBuffer, None));
    assert_eq!(probed, [Dx12]);

    // Wine: DX12 (vkd3d) loses its device at shader compilation, Vulkan works.
    let c = fallback::choose(&order, |b| match b {
        Dx12 => Probe::Fails("device lost: Parent device is lost".into()),
        _ => works(MapPath::StorageBuffer),
    });
    assert_eq!(c.backend, Some(Vulkan));
    assert_eq!(c.note().unwrap(), "fell back from Dx12: device lost: Parent device is lost");

    // A backend without our shader is passed over for a later one with it...
    let c = fallback::choose(&order, |b| match b {
        Dx12 => Probe::Fails("no adapter".into()),
        Vulkan => works(MapPath::Cpu),
        _ => works(MapPath::Texture),
    });
    assert_eq!((c.backend, c.maps), (Some(Gl), MapPath::Texture));
    assert_eq!(c.passed_over.len(), 2, "{:?}", c.passed_over);

    // ...and chosen, with maps on the CPU, when no backend builds it.
    let c = fallback::choose(&order, |b| match b {
        Vulkan => works(MapPath::Cpu),
        _ => Probe::Fails("no adapter".into()),
    });
    assert_eq!((c.backend, c.maps), (Some(Vulkan), MapPath::Cpu));
    assert_eq!(c.passed_over, [(Dx12, "no adapter".into()), (Gl, "no adapter".into())]);

    // Nothing works: no choice (eframe tries them all and reports), every reason kept.
    let c = fallback::choose(&order, |_| Probe::Fails("no adapter".into()));
    assert_eq!(c.backend, None);
    assert_eq!(c.passed_over.len(), 3);
}

#[test]
fn the_probe_finds_vulkan_here_and_no_metal() {
    // CI and this machine have lavapipe (Vulkan) and Mesa's OpenGL; Metal is not built on Linux.
    let vulkan = fallback::probe(Backend::Vulkan);
    assert!(matches!(&vulkan, Probe::Works { maps: MapPath::StorageBuffer, .. }), "{vulkan:?}");
    assert_eq!(fallback::probe(Backend::Metal), Probe::Fails("no adapter".into()));
}

#[test]
fn the_real_window_falls_back_from_a_forced_backend_it_does_not_have() {
    let x = Xvfb::start();
    let (line, _) = real_window(&x.display, &[("WGPU_BACKEND", "dx12")]);
    assert!(line.contains("(Vulkan)"), "{line}");
    assert!(line.contains("fell back from Dx12: no adapter"), "{line}");
}
