//! The window: opening it on a renderer, and the frame that draws every panel.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use super::state::ThemeChoice;
use super::{
    AppOptions, AppState, MODEL_ENV, ToolsTab, canvas, edit_panel, fallback, generate, gpu,
    history, inspector, library, models, screenshot, status, train,
};
use crate::backend::BackendChoice;

/// Opens the window; returns when it is closed. With `screenshot`, saves the window there once
/// the image is drawn, prints what drew it, and closes.
pub fn run(backend: BackendChoice, screenshot: Option<PathBuf>) -> Result<()> {
    let mut native = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("FAE Studio")
            .with_app_id("fae-studio")
            .with_inner_size([1400.0, 860.0])
            .with_drag_and_drop(true),
        // eframe's own state (window placement) beside the session, not in eframe's folder.
        persistence_path: super::state::app_dir().map(|d| d.join("app.ron")),
        ..Default::default()
    };
    // With a GPU for the model, the window renders on burn's own wgpu device, so both share it
    // (when that device builds the window's pipelines).
    let shared = match backend {
        BackendChoice::Wgpu => true,
        BackendChoice::Auto => crate::backend::has_gpu(),
        BackendChoice::Cpu => false,
    };
    let mut on_shared = false;
    if shared && let Ok(setup) = crate::backend::wgpu_setup() {
        let probe = fallback::check_device(
            setup.instance.clone(),
            setup.adapter.clone(),
            setup.device.clone(),
            setup.queue.clone(),
            None,
        );
        match probe {
            fallback::Probe::Works { .. } => {
                on_shared = true;
                native.wgpu_options.wgpu_setup =
                    eframe::egui_wgpu::WgpuSetup::Existing(eframe::egui_wgpu::WgpuSetupExisting {
                        instance: setup.instance,
                        adapter: setup.adapter,
                        device: setup.device,
                        queue: setup.queue,
                    });
            }
            fallback::Probe::Fails(why) => {
                eprintln!("the model's wgpu device cannot draw the window ({why}); probing others")
            }
        }
    }
    // Otherwise each backend is probed before the window opens (one event loop per process: a
    // window that fails cannot be retried on another backend).
    let mut note = None;
    if !on_shared {
        let order = fallback::order(
            egui::os::OperatingSystem::from_target_os(),
            eframe::wgpu::Backends::from_env(),
        );
        let choice = fallback::choose(&order, fallback::probe);
        note = choice.note();
        match choice.backend {
            Some(b) => {
                native.wgpu_options.wgpu_setup =
                    eframe::egui_wgpu::WgpuSetup::CreateNew(fallback::setup_for(b.into()))
            }
            None => {
                let all =
                    order.iter().fold(eframe::wgpu::Backends::empty(), |a, b| a | (*b).into());
                native.wgpu_options.wgpu_setup =
                    eframe::egui_wgpu::WgpuSetup::CreateNew(fallback::setup_for(all))
            }
        }
        if let Some(note) = &note {
            eprintln!("window: {note}");
        }
    }
    let options = AppOptions {
        backend: (backend != BackendChoice::Auto).then_some(backend),
        model: std::env::var_os(MODEL_ENV).map(PathBuf::from),
        ..AppOptions::default()
    };
    let outcome = screenshot::Outcome::default();
    let shot_requested = screenshot.is_some();
    let shot = screenshot.map(|path| screenshot::Screenshot::new(path, outcome.clone()));
    let note_for_app = note.clone();
    eframe::run_native(
        "FAE Studio",
        native,
        Box::new(move |cc| {
            let mut app = FaeApp::new(cc, options);
            app.screenshot = shot;
            if let Some(note) = note_for_app {
                app.state.renderer = format!("{}, {note}", app.state.renderer);
            }
            Ok(Box::new(app))
        }),
    )
    .map_err(|e| {
        let tried = note.map_or(String::new(), |n| format!("; {n}"));
        anyhow::anyhow!(
            "cannot open the window: {e}{tried} (the window needs a Vulkan, Metal, DirectX 12 or \
             OpenGL driver; WGPU_BACKEND=vulkan|gl|dx12 names the one to try first; the command \
             line works without any)"
        )
    })?;
    match outcome.lock().unwrap_or_else(|e| e.into_inner()).take() {
        Some(Ok(line)) => println!("{line}"),
        Some(Err(e)) => anyhow::bail!("no screenshot: {e}"),
        None if shot_requested => anyhow::bail!("no screenshot: the window was closed first"),
        None => {}
    }
    Ok(())
}

pub(super) fn apply_theme(ctx: &egui::Context, theme: ThemeChoice) {
    ctx.set_theme(match theme {
        ThemeChoice::Dark => egui::Theme::Dark,
        ThemeChoice::Light => egui::Theme::Light,
    });
}

/// What the window renders with, found when it opens.
pub struct Renderer {
    pub map_path: gpu::MapPath,
    pub description: String,
    pub maps: gpu::TextureCache,
}

/// The application: state plus the drawing of every panel.
pub struct FaeApp {
    pub state: AppState,
    /// `--screenshot`: taken once the image is drawn.
    pub screenshot: Option<screenshot::Screenshot>,
}

impl FaeApp {
    pub fn new(cc: &eframe::CreationContext<'_>, options: AppOptions) -> Self {
        let rs = cc.wgpu_render_state.as_ref();
        let mut maps = gpu::TextureCache::default();
        let map_path = gpu::init(rs, &mut maps);
        let description = rs.map_or("no wgpu renderer".into(), |rs| {
            let info = rs.adapter.get_info();
            format!("{} ({:?})", info.name, info.backend)
        });
        let renderer = Renderer { map_path, description, maps };
        Self { state: AppState::new(&cc.egui_ctx, options, renderer), screenshot: None }
    }
}

impl eframe::App for FaeApp {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        let st = &mut self.state;
        st.poll(&ctx);
        st.handle_shortcuts(&ctx);
        st.handle_dropped_files(&ctx);

        egui::Panel::top("menu").show(ui, |ui| status::menu_bar(ui, st));
        egui::Panel::bottom("status").show(ui, |ui| status::ui(ui, st));
        if st.session.settings.show_library {
            egui::Panel::left("library")
                .resizable(true)
                .default_size(190.0)
                .show(ui, |ui| library::ui(ui, st));
        }
        if st.session.settings.show_tools {
            egui::Panel::right("tools")
                .resizable(true)
                .default_size(300.0)
                .show(ui, |ui| tools_ui(ui, st));
        }
        if st.session.settings.show_inspector {
            egui::Panel::right("inspector")
                .resizable(true)
                .default_size(330.0)
                .show(ui, |ui| inspector::ui(ui, st));
        }
        egui::CentralPanel::default().show(ui, |ui| canvas::ui(ui, st));
        status::windows(&ctx, st);

        st.regenerate();
        st.recomposite();
        st.autosave(false);
        if st.worker.busy() || st.loader.busy() || st.train.running() || st.models.busy() {
            ctx.request_repaint_after(Duration::from_millis(100));
        }
        if let Some(shot) = &mut self.screenshot {
            shot.update(&ctx, st);
        }
    }

    fn save(&mut self, _storage: &mut dyn eframe::Storage) {
        self.state.autosave(true);
    }

    fn auto_save_interval(&self) -> Duration {
        Duration::from_secs(5)
    }
}

fn tools_ui(ui: &mut egui::Ui, st: &mut AppState) {
    ui.horizontal(|ui| {
        for (tab, label, tip) in [
            (ToolsTab::Edit, "Edit", "Brushes, sliders, harmonise, history and recipes"),
            (ToolsTab::Generate, "Generate", "New images from the generator"),
            (ToolsTab::Train, "Fine-tune", "Train the model on a folder of your images"),
            (ToolsTab::Models, "Models", "Encoder, FAE model, backend and resolution"),
        ] {
            ui.selectable_value(&mut st.tools_tab, tab, label).on_hover_text(tip);
        }
    });
    ui.separator();
    egui::ScrollArea::vertical().show(ui, |ui| match st.tools_tab {
        ToolsTab::Edit => {
            history::ui(ui, st);
            ui.separator();
            edit_panel::ui(ui, st);
        }
        ToolsTab::Generate => generate::ui(ui, st),
        ToolsTab::Train => train::ui(ui, st),
        ToolsTab::Models => models::ui(ui, st),
    });
}
