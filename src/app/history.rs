//! The edit history panel: applied edits, undone ones that can be redone, undo / redo / clear.

use super::AppState;
use crate::edit::ops::Edit;

/// One line describing an edit.
pub fn describe(edit: &Edit) -> String {
    let name = |p: &str| {
        std::path::Path::new(p)
            .file_name()
            .map_or_else(|| p.to_string(), |n| n.to_string_lossy().into_owned())
    };
    match edit {
        Edit::Transplant { source, strength, .. } => {
            format!("transplant from {} ×{strength:.2}", name(source))
        }
        Edit::Blend { source, strength, .. } => format!("blend {} ×{strength:.2}", name(source)),
        Edit::ScaleChannels { channels, factor, .. } => {
            format!("scale channel {channels:?} ×{factor:.2}")
        }
        Edit::OffsetChannels { channels, offset, .. } => {
            format!("offset channel {channels:?} {offset:+.2}")
        }
        Edit::ZeroChannels { channels, .. } => format!("zero channel {channels:?}"),
        Edit::Noise { sigma, .. } => format!("noise σ {sigma:.2}"),
        Edit::Smooth { sigma, radius, .. } => match (sigma, radius) {
            (Some(s), _) => format!("smooth σ {s:.2}"),
            (_, Some(r)) => format!("smooth radius {r}"),
            _ => "smooth".into(),
        },
        Edit::Interpolate { source, t, .. } => format!("interpolate {} t {t:.2}", name(source)),
        Edit::Arithmetic { .. } => "arithmetic".into(),
        Edit::Direction { strength, .. } => format!("direction ×{strength:.2}"),
        Edit::Harmonise { strength, steps, .. } => {
            format!("harmonise t {strength:.2}, {steps} steps")
        }
    }
}

pub fn ui(ui: &mut egui::Ui, st: &mut AppState) {
    ui.heading("History");
    let (can_undo, can_redo, applied, undone) =
        match st.active_doc().and_then(|d| d.history.as_ref()) {
            Some(h) => (
                h.can_undo(),
                h.can_redo(),
                h.recipe().edits.iter().map(describe).collect::<Vec<_>>(),
                h.redo_edits().map(describe).collect::<Vec<_>>(),
            ),
            None => (false, false, Vec::new(), Vec::new()),
        };
    ui.horizontal(|ui| {
        if ui
            .add_enabled(can_undo, egui::Button::new("Undo"))
            .on_hover_text("Take back the last edit (Ctrl+Z)")
            .clicked()
        {
            st.undo();
        }
        if ui
            .add_enabled(can_redo, egui::Button::new("Redo"))
            .on_hover_text("Re-apply the last undone edit (Ctrl+Shift+Z)")
            .clicked()
        {
            st.redo();
        }
        if ui
            .add_enabled(can_undo || can_redo, egui::Button::new("Clear"))
            .on_hover_text("Drop every edit of this image")
            .clicked()
        {
            if let Some(h) = st.active_doc_mut().and_then(|d| d.history.as_mut()) {
                h.clear();
            }
            st.edit.preview = None;
        }
    });
    ui.label(format!("{} edits", applied.len()));
    ui.label("0. original");
    for (i, text) in applied.iter().enumerate() {
        ui.label(format!("{}. {text}", i + 1));
    }
    for text in &undone {
        ui.weak(format!("undone: {text}"));
    }
    if let Some(p) = &st.edit.preview {
        ui.weak(format!("(preview) {}", describe(p)));
    }
}
