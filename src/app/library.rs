//! The image library: open images with a native dialog or by dropping files and folders on the
//! window; thumbnails (made by the library thread, [`super::loader`]); pick the image to edit.

use egui::{Color32, Vec2};

use super::AppState;
use super::loader::THUMB;
use super::state::DocStatus;

pub fn open_dialog(st: &mut AppState) {
    if let Some(files) = rfd::FileDialog::new()
        .add_filter("images", &["png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "gif"])
        .pick_files()
    {
        st.open_paths(files);
    }
}

pub fn open_folder_dialog(st: &mut AppState) {
    if let Some(folder) = rfd::FileDialog::new().pick_folder() {
        st.open_paths(vec![folder]);
    }
}

pub fn ui(ui: &mut egui::Ui, st: &mut AppState) {
    ui.heading("Library");
    ui.horizontal(|ui| {
        if ui.button("Open…").on_hover_text("Open images (Ctrl+O); or drop files here").clicked()
        {
            open_dialog(st);
        }
        if ui.button("Folder…").on_hover_text("Open every image of a folder").clicked() {
            open_folder_dialog(st);
        }
    });
    ui.weak("Drop images or folders on the window");
    ui.separator();
    let mut close = None;
    egui::ScrollArea::vertical().show(ui, |ui| {
        for i in 0..st.docs.len() {
            let selected = st.active == Some(i);
            let doc = &st.docs[i];
            let status = match &doc.status {
                DocStatus::Queued if st.model.is_none() => "waiting for a model".to_string(),
                DocStatus::Queued => "encoding…".to_string(),
                DocStatus::Ready => {
                    doc.history.as_ref().map_or(String::new(), |h| format!("{} edits", h.len()))
                }
                DocStatus::Failed(e) => format!("failed: {e}"),
            };
            let frame = egui::Frame::group(ui.style()).fill(if selected {
                ui.visuals().selection.bg_fill.gamma_multiply(0.5)
            } else {
                Color32::TRANSPARENT
            });
            let resp = frame
                .show(ui, |ui| {
                    ui.horizontal(|ui| {
                        match &doc.thumb {
                            Some(t) => {
                                let size = t.size_vec2();
                                ui.add(
                                    egui::Image::new((t.id(), size))
                                        .max_size(Vec2::splat(THUMB as f32)),
                                );
                            }
                            None => {
                                let size = Vec2::splat(THUMB as f32);
                                let (rect, resp) =
                                    ui.allocate_exact_size(size, egui::Sense::hover());
                                match &doc.thumb_error {
                                    Some(e) => {
                                        ui.painter().text(
                                            rect.center(),
                                            egui::Align2::CENTER_CENTER,
                                            "?",
                                            egui::FontId::proportional(24.0),
                                            ui.visuals().weak_text_color(),
                                        );
                                        resp.on_hover_text(format!("no thumbnail: {e}"));
                                    }
                                    None => egui::Spinner::new()
                                        .paint_at(ui, rect.shrink(THUMB as f32 / 3.0)),
                                }
                            }
                        }
                        ui.vertical(|ui| {
                            ui.label(&doc.name);
                            ui.weak(status);
                            if ui.small_button("close").on_hover_text("Close this image").clicked()
                            {
                                close = Some(i);
                            }
                        });
                    });
                })
                .response
                .interact(egui::Sense::click());
            let resp = resp.on_hover_text(doc.path.display().to_string());
            if resp.clicked() {
                st.active = Some(i);
                st.edit.preview = None;
            }
        }
    });
    if let Some(i) = close {
        st.close_doc(i);
    }
}
