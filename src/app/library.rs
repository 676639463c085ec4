//! The image library: open images with a native dialog or by dropping files and folders on the
//! window; thumbnails; pick the image to edit.

use egui::{Color32, TextureOptions, Vec2};

use super::AppState;
use super::state::DocStatus;
use crate::image_io;

const THUMB: u32 = 72;

fn thumbnail(ctx: &egui::Context, path: &std::path::Path) -> Option<egui::TextureHandle> {
    let img = image_io::load_rgb(path).ok()?;
    let (w, h) = img.dimensions();
    let scale = THUMB as f32 / w.max(h).max(1) as f32;
    let (tw, th) = (((w as f32 * scale) as u32).max(1), ((h as f32 * scale) as u32).max(1));
    let small = image::imageops::resize(&img, tw, th, image::imageops::FilterType::Triangle);
    let rgb = image_io::to_rgb8(&small);
    let color = egui::ColorImage::from_rgb([tw as usize, th as usize], rgb.as_raw());
    Some(ctx.load_texture(format!("thumb-{}", path.display()), color, TextureOptions::LINEAR))
}

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
    let ctx = ui.ctx().clone();
    let mut close = None;
    egui::ScrollArea::vertical().show(ui, |ui| {
        for i in 0..st.docs.len() {
            if st.docs[i].thumb.is_none() {
                st.docs[i].thumb = thumbnail(&ctx, &st.docs[i].path);
            }
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
                                ui.allocate_exact_size(
                                    Vec2::splat(THUMB as f32),
                                    egui::Sense::hover(),
                                );
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
