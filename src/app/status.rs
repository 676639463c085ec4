//! The menu bar, the status bar (backend, adapter, model, timings, progress with cancel), the
//! notices, the keyboard-shortcut help window, and export.

use std::path::Path;

use anyhow::{Context, Result};
use egui::Color32;

use super::AppState;
use super::state::ThemeChoice;
use super::state::default_composite;
use crate::composite::{CompositeMode, Placement, composite_in_place};
use crate::fsutil::{write_photo_png, write_png, write_safetensors};
use crate::image_io::{is_high_bit_depth, load_rgb, to_rgb8};

/// The keyboard shortcuts, as listed in the help window.
pub const SHORTCUTS: &[(&str, &str)] = &[
    ("Ctrl+Z", "undo the last edit"),
    ("Ctrl+Shift+Z / Ctrl+Y", "redo"),
    ("[ and ]", "smaller / larger brush"),
    ("Ctrl+O", "open images"),
    ("Ctrl+S", "save the recipe"),
    ("Mouse wheel, pinch", "zoom every picture together, about the pointer"),
    ("Right or middle drag", "pan"),
    ("Esc", "cancel queued model work"),
    ("F1", "this help"),
];

/// Which picture to export.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportView {
    Original,
    Reconstruction,
    Edited,
    /// The edit composited into the photo at the photo's own resolution (8 or 16-bit PNG).
    EditedPhoto,
    Inspector,
}

impl AppState {
    /// Writes a view of the active image as PNG.
    pub fn export_png(&mut self, view: ExportView, path: &Path) -> Result<()> {
        let doc = self.active_doc().context("no image is open")?;
        let a = doc.analysis.as_ref().context("the image is not encoded yet")?;
        let img = match view {
            ExportView::Original => to_rgb8(&a.image),
            ExportView::Reconstruction => to_rgb8(&a.recon),
            ExportView::Edited => to_rgb8(doc.edited.as_ref().map_or(&a.recon, |e| &e.image)),
            ExportView::EditedPhoto => {
                // The Edit panel's composite (mask mode when it is off: a photo needs one).
                let edited = doc.edited.as_ref().map_or(&a.recon, |e| &e.image);
                let recipe = doc.history.as_ref().map(|h| h.recipe().clone()).unwrap_or_default();
                let grid = (a.latent.height, a.latent.width);
                let mask = recipe.token_mask(grid.0, grid.1)?;
                let mut photo = load_rgb(&doc.path)?;
                let placement =
                    Placement::centre_crop(photo.dimensions(), a.image.dimensions(), grid);
                let mut options = self.session.settings.composite.clone();
                if options.mode == CompositeMode::Off {
                    options = default_composite();
                }
                composite_in_place(
                    &mut photo,
                    Some(&a.recon),
                    edited,
                    &mask,
                    &placement,
                    &options,
                )?;
                return write_photo_png(path, photo, is_high_bit_depth(&doc.path)?);
            }
            ExportView::Inspector => super::inspector::current_picture(self, 16)
                .context("the inspector shows no picture (hover a token for similarity)")?,
        };
        write_png(path, &img)
    }

    /// Writes the active image's (edited) latent as safetensors, like `fae-studio encode`.
    pub fn export_latent(&self, path: &Path) -> Result<()> {
        let doc = self.active_doc().context("no image is open")?;
        let h = doc.history.as_ref().context("the image is not encoded yet")?;
        let l = h.current();
        let encoder = self.model.as_ref().map_or(String::new(), |m| m.config.encoder.clone());
        let metadata = std::collections::HashMap::from([
            ("format".to_string(), "fae-studio-latent".to_string()),
            ("encoder".to_string(), encoder),
            ("grid_h".to_string(), l.height.to_string()),
            ("grid_w".to_string(), l.width.to_string()),
            ("channels".to_string(), l.channels.to_string()),
            ("normalised".to_string(), "true".to_string()),
        ]);
        write_safetensors(
            path,
            &[("latent", vec![l.height, l.width, l.channels], &l.data)],
            metadata,
        )
    }
}

fn save_dialog(name: &str, ext: &str) -> Option<std::path::PathBuf> {
    rfd::FileDialog::new().set_file_name(name).add_filter(ext, &[ext]).save_file()
}

fn report(st: &mut AppState, r: Result<()>, what: &str) {
    match r {
        Ok(()) => st.notify(format!("{what} saved"), false),
        Err(e) => st.notify(format!("{e:#}"), true),
    }
}

pub fn menu_bar(ui: &mut egui::Ui, st: &mut AppState) {
    let ctx = ui.ctx().clone();
    let (open, save) = ctx.input_mut(|i| {
        (
            i.consume_shortcut(&egui::KeyboardShortcut::new(
                egui::Modifiers::COMMAND,
                egui::Key::O,
            )),
            i.consume_shortcut(&egui::KeyboardShortcut::new(
                egui::Modifiers::COMMAND,
                egui::Key::S,
            )),
        )
    });
    if open {
        super::library::open_dialog(st);
    }
    if save && let Some(p) = save_dialog("recipe.json", "json") {
        let r = st.save_recipe(&p);
        report(st, r, "recipe");
    }
    egui::MenuBar::new().ui(ui, |ui| {
        ui.menu_button("File", |ui| {
            if ui.button("Open images…").clicked() {
                super::library::open_dialog(st);
            }
            if ui.button("Open folder…").clicked() {
                super::library::open_folder_dialog(st);
            }
            ui.separator();
            if ui.button("Save recipe…").clicked()
                && let Some(p) = save_dialog("recipe.json", "json")
            {
                let r = st.save_recipe(&p);
                report(st, r, "recipe");
            }
            if ui.button("Load recipe…").clicked()
                && let Some(p) = rfd::FileDialog::new().add_filter("json", &["json"]).pick_file()
                && let Err(e) = st.load_recipe(&p)
            {
                st.notify(format!("{e:#}"), true);
            }
            ui.separator();
            for (label, view) in [
                ("Export original PNG…", ExportView::Original),
                ("Export reconstruction PNG…", ExportView::Reconstruction),
                ("Export edited PNG…", ExportView::Edited),
                ("Export edited photo, full resolution…", ExportView::EditedPhoto),
                ("Export inspector view PNG…", ExportView::Inspector),
            ] {
                if ui.button(label).clicked()
                    && let Some(p) = save_dialog("view.png", "png")
                {
                    let r = st.export_png(view, &p);
                    report(st, r, "picture");
                }
            }
            if ui.button("Export latent (safetensors)…").clicked()
                && let Some(p) = save_dialog("latent.safetensors", "safetensors")
            {
                let r = st.export_latent(&p);
                report(st, r, "latent");
            }
            if ui.button("Export recipe (JSON)…").clicked()
                && let Some(p) = save_dialog("recipe.json", "json")
            {
                let r = st.save_recipe(&p);
                report(st, r, "recipe");
            }
        });
        ui.menu_button("View", |ui| {
            let s = &mut st.session.settings;
            ui.checkbox(&mut s.show_library, "Library");
            ui.checkbox(&mut s.show_tools, "Tools");
            ui.checkbox(&mut s.show_inspector, "Inspector");
            ui.checkbox(&mut s.gpu_maps, "Draw token maps with GPU shaders")
                .on_hover_text("Off: draw them as CPU textures");
            ui.checkbox(&mut s.show_decode, "Show the plain decode").on_hover_text(
                "The decoder's output instead of the edit composited into the photo",
            );
            ui.separator();
            let mut theme = s.theme;
            ui.radio_value(&mut theme, ThemeChoice::Dark, "Dark theme");
            ui.radio_value(&mut theme, ThemeChoice::Light, "Light theme");
            if theme != st.session.settings.theme {
                st.set_theme(&ctx, theme);
            }
        });
        ui.menu_button("Help", |ui| {
            if ui.button("Keyboard shortcuts (F1)").clicked() {
                st.show_help = true;
            }
        });
        ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
            let dark = st.session.settings.theme == ThemeChoice::Dark;
            if ui
                .button(if dark { "Light mode" } else { "Dark mode" })
                .on_hover_text("Switch between the dark and the light theme")
                .clicked()
            {
                st.set_theme(&ctx, if dark { ThemeChoice::Light } else { ThemeChoice::Dark });
            }
        });
    });
}

pub fn ui(ui: &mut egui::Ui, st: &mut AppState) {
    ui.horizontal(|ui| {
        match &st.model {
            Some(m) => {
                ui.label(format!("backend: {}", m.backend)).on_hover_text("Where the model runs");
                ui.separator();
                ui.label(&m.adapter).on_hover_text("The adapter");
                ui.separator();
                ui.label(format!("model: {} (step {}, {})", m.name, m.step, m.config.encoder))
                    .on_hover_text(
                        m.path.as_ref().map_or("built-in".into(), |p| p.display().to_string()),
                    );
            }
            None => {
                ui.label(st.model_error.as_deref().unwrap_or("loading the model…"));
            }
        }
        ui.separator();
        let maps = st.maps_path();
        ui.label(format!("window: {} · maps: {}", st.renderer, maps.label()))
            .on_hover_text("The window's graphics adapter, and how token maps are drawn on it");
        if let Some(a) = st.active_doc().and_then(|d| d.analysis.as_ref()) {
            ui.separator();
            ui.label(format!("encode {:.0} ms · decode {:.0} ms", a.encode_ms, a.decode_ms));
        }
        if let Some(l) = st.latencies.last() {
            ui.separator();
            ui.label(format!("edit to image {l:.0} ms")).on_hover_text("Latency of the last edit");
        }
        let p = st.worker.progress();
        if st.worker.busy() {
            ui.separator();
            ui.spinner();
            let secs = p.started.map_or(0.0, |s| s.elapsed().as_secs_f32());
            let queued =
                if p.queued > 0 { format!(" (+{} queued)", p.queued) } else { String::new() };
            ui.label(format!("{} {secs:.1} s{queued}", p.label));
            if ui.small_button("Cancel").on_hover_text("Drop the queued model work (Esc)").clicked()
            {
                st.worker.cancel();
            }
        }
    });
}

pub fn windows(ctx: &egui::Context, st: &mut AppState) {
    let mut open = st.show_help;
    egui::Window::new("Keyboard shortcuts").open(&mut open).resizable(false).show(ctx, |ui| {
        egui::Grid::new("shortcuts").striped(true).show(ui, |ui| {
            for (k, v) in SHORTCUTS {
                ui.strong(*k);
                ui.label(*v);
                ui.end_row();
            }
        });
        ui.separator();
        ui.label("Every tool has a tooltip: hover it.");
    });
    st.show_help = open;

    // Notices: errors stay until dismissed, information fades after a few seconds.
    st.notices.retain(|n| n.error || n.at.elapsed().as_secs_f32() < 6.0);
    if st.notices.is_empty() {
        return;
    }
    let mut dismiss = None;
    egui::Area::new(egui::Id::unique("notices"))
        .anchor(egui::Align2::CENTER_TOP, egui::vec2(0.0, 40.0))
        .show(ctx, |ui| {
            for (k, n) in st.notices.iter().enumerate() {
                egui::Frame::popup(ui.style()).show(ui, |ui| {
                    ui.horizontal(|ui| {
                        let colour = if n.error {
                            Color32::from_rgb(235, 110, 90)
                        } else {
                            ui.visuals().text_color()
                        };
                        ui.colored_label(colour, &n.text);
                        if ui.small_button("x").on_hover_text("Dismiss").clicked() {
                            dismiss = Some(k);
                        }
                    });
                });
            }
        });
    if let Some(k) = dismiss {
        st.notices.remove(k);
    }
    ctx.request_repaint_after(std::time::Duration::from_millis(500));
}
