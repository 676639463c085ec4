//! The canvas: original, reconstruction and edited result side by side or as a before/after
//! split, with one zoom and pan for all of them, the latent grid as an optional overlay, heatmap
//! overlays, and brush painting on the latent. With compositing on, the original and the edited
//! result are the photo and the composited photo at full resolution ([`fullres`]); the token
//! grid, overlays and the brush then cover the encoder's crop inside them.

use std::collections::HashMap;

use egui::{Color32, Pos2, Rect, Sense, Stroke, TextureHandle, TextureOptions, Vec2};
use image::Rgb32FImage;

use super::fullres::{self, Source};
use super::gpu::{self, DrawOptions};
use super::state::{CanvasMode, CanvasTool, Document, Overlay};
use super::{AppState, Hover, inspector};
use crate::image_io;

/// One picture on the canvas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pane {
    Original,
    Reconstruction,
    Edited,
    /// The before/after split view.
    Split,
}

impl Pane {
    pub fn label(self) -> &'static str {
        match self {
            Self::Original => "original",
            Self::Reconstruction => "reconstruction",
            Self::Edited => "edited",
            Self::Split => "before | after",
        }
    }
}

struct DocTex {
    version: u64,
    original: Option<TextureHandle>,
    recon: Option<TextureHandle>,
    edited: Option<TextureHandle>,
}

pub struct CanvasState {
    pub zoom: f32,
    pub pan: Vec2,
    /// Before/after split position, 0..1 of the width.
    pub split: f32,
    textures: HashMap<u64, DocTex>,
    full_textures: fullres::Textures,
    /// Where the encoder's crop was drawn last frame in each pane (the whole picture for the
    /// decodes; the crop inside the photo when a pane shows the photo).
    pub image_rects: Vec<(Pane, Rect)>,
    /// Where each picture was drawn last frame (the image itself, not its pane).
    pub picture_rects: Vec<(Pane, Rect)>,
    painting: bool,
}

impl Default for CanvasState {
    fn default() -> Self {
        Self {
            zoom: 1.0,
            pan: Vec2::ZERO,
            split: 0.5,
            textures: HashMap::new(),
            full_textures: Default::default(),
            image_rects: Vec::new(),
            picture_rects: Vec::new(),
            painting: false,
        }
    }
}

pub fn to_color_image(img: &Rgb32FImage) -> egui::ColorImage {
    let rgb = image_io::to_rgb8(img);
    egui::ColorImage::from_rgb([rgb.width() as usize, rgb.height() as usize], rgb.as_raw())
}

fn textures<'a>(
    cache: &'a mut HashMap<u64, DocTex>,
    ctx: &egui::Context,
    doc: &Document,
) -> &'a DocTex {
    let stale = cache.get(&doc.id).is_none_or(|t| t.version != doc.version);
    if stale {
        let load = |name: &str, img: &Rgb32FImage| {
            ctx.load_texture(
                format!("{name}-{}", doc.id),
                to_color_image(img),
                TextureOptions::LINEAR,
            )
        };
        let a = doc.analysis.as_ref();
        let tex = DocTex {
            version: doc.version,
            original: a.map(|a| load("original", &a.image)),
            recon: a.map(|a| load("recon", &a.recon)),
            edited: doc.edited.as_ref().map(|e| load("edited", &e.image)),
        };
        cache.insert(doc.id, tex);
    }
    &cache[&doc.id]
}

/// The image rectangle inside a pane: fitted, zoomed and panned like every other pane.
fn image_rect(pane: Rect, aspect: f32, zoom: f32, pan: Vec2) -> Rect {
    let fit = (pane.width() / aspect).min(pane.height());
    let size = Vec2::new(fit * aspect, fit) * zoom;
    Rect::from_center_size(pane.center() + pan, size)
}

pub const MIN_ZOOM: f32 = 0.1;
pub const MAX_ZOOM: f32 = 20.0;

/// Zooms by `factor` about `anchor` (the pointer, relative to its pane's centre), so the image
/// point under it stays where it is; returns the new zoom and pan. Every pane is drawn with the
/// same zoom and pan, so the same point stays fixed in the other panes too.
///
/// The image centre sits at `pan` and scales with the zoom, so a point at offset `anchor - pan`
/// from it moves to `(anchor - pan) * new / old`; choosing `pan' = anchor - (anchor - pan) * k`
/// keeps it under the anchor.
pub fn zoom_about(zoom: f32, pan: Vec2, anchor: Vec2, factor: f32) -> (f32, Vec2) {
    let new = (zoom * factor).clamp(MIN_ZOOM, MAX_ZOOM);
    let k = new / zoom;
    (new, anchor - (anchor - pan) * k)
}

fn toolbar(ui: &mut egui::Ui, st: &mut AppState) {
    ui.horizontal_wrapped(|ui| {
        let s = &mut st.session.settings;
        ui.selectable_value(&mut s.canvas, CanvasMode::SideBySide, "Side by side")
            .on_hover_text("Original, reconstruction and edited result next to each other");
        ui.selectable_value(&mut s.canvas, CanvasMode::Slider, "Before/after")
            .on_hover_text("Original and edited result in one frame, split by a slider");
        ui.separator();
        ui.selectable_value(&mut s.tool, CanvasTool::Brush, "Brush")
            .on_hover_text("Paint on the latent with the brush (Edit panel)");
        ui.selectable_value(&mut s.tool, CanvasTool::Pan, "Pan")
            .on_hover_text("Drag to move the view; the mouse wheel zooms (right drag pans too)");
        ui.separator();
        ui.checkbox(&mut s.show_grid, "Grid").on_hover_text("Show the latent token grid");
        egui::ComboBox::from_id_salt("overlay")
            .selected_text(match s.overlay {
                Overlay::None => "No overlay",
                Overlay::Similarity => "Similarity overlay",
                Overlay::Semantic => "Semantic overlay",
                Overlay::Cycle => "Cycle overlay",
            })
            .show_ui(ui, |ui| {
                ui.selectable_value(&mut s.overlay, Overlay::None, "No overlay");
                ui.selectable_value(&mut s.overlay, Overlay::Similarity, "Similarity overlay");
                ui.selectable_value(&mut s.overlay, Overlay::Semantic, "Semantic overlay");
                ui.selectable_value(&mut s.overlay, Overlay::Cycle, "Cycle overlay");
            })
            .response
            .on_hover_text("A heatmap over the pictures");
        if s.composite.mode != crate::composite::CompositeMode::Off {
            ui.checkbox(&mut s.show_decode, "Plain decode").on_hover_text(
                "Show the decoder's output instead of the edit composited into the photo",
            );
        }
        if s.canvas == CanvasMode::Slider {
            ui.add(egui::Slider::new(&mut st.canvas.split, 0.0..=1.0).text("split"))
                .on_hover_text("Where the before/after line is");
        }
        ui.separator();
        ui.label(format!("zoom {:.0}%", st.canvas.zoom * 100.0));
        if ui.button("Fit").on_hover_text("Reset zoom and pan").clicked() {
            st.canvas.zoom = 1.0;
            st.canvas.pan = Vec2::ZERO;
        }
    });
}

pub fn ui(ui: &mut egui::Ui, st: &mut AppState) {
    toolbar(ui, st);
    ui.separator();
    if st.model.is_none() {
        let text = match &st.model_error {
            Some(e) => e.clone(),
            None => "Loading the model…".to_string(),
        };
        ui.colored_label(
            if st.model_error.is_some() {
                Color32::from_rgb(230, 120, 60)
            } else {
                ui.visuals().text_color()
            },
            egui::RichText::new(text).size(18.0),
        );
        if st.model_error.is_some() && ui.button("Load a checkpoint…").clicked() {
            super::models::load_checkpoint_dialog(st);
        }
    }
    let Some(i) = st.active else {
        ui.centered_and_justified(|ui| {
            ui.label("Open an image (Ctrl+O) or drop one on the window");
        });
        return;
    };
    let ctx = ui.ctx().clone();
    let avail = ui.available_size();
    let (resp, painter) = ui.allocate_painter(avail, Sense::click_and_drag());
    let area = resp.rect;
    painter.rect_filled(area, 0.0, ui.visuals().extreme_bg_color);

    let pan_drag = st.session.settings.tool == CanvasTool::Pan
        || resp.dragged_by(egui::PointerButton::Secondary)
        || resp.dragged_by(egui::PointerButton::Middle);
    if resp.dragged() && pan_drag {
        st.canvas.pan += resp.drag_delta();
    }

    let doc = &st.docs[i];
    let mode = st.session.settings.canvas;
    let panes: Vec<Pane> = match mode {
        CanvasMode::SideBySide => vec![Pane::Original, Pane::Reconstruction, Pane::Edited],
        CanvasMode::Slider => vec![Pane::Split],
    };
    let n = panes.len() as f32;
    let gap = 6.0;
    let pane_w = (area.width() - gap * (n - 1.0)) / n;
    let pane_rect = |k: usize| {
        Rect::from_min_size(
            area.min + Vec2::new(k as f32 * (pane_w + gap), 0.0),
            Vec2::new(pane_w, area.height()),
        )
    };

    // The wheel and pinch zoom about the pointer, in whichever pane it is.
    if resp.hovered()
        && let Some(p) = resp.hover_pos()
    {
        let (scroll, zoom) = ctx.input(|i| (i.smooth_scroll_delta.y, i.zoom_delta()));
        let factor = (scroll * 0.0025).exp() * zoom;
        let pane = (0..panes.len()).map(pane_rect).find(|r| r.contains(p));
        if factor != 1.0
            && let Some(r) = pane
        {
            let c = &mut st.canvas;
            (c.zoom, c.pan) = zoom_about(c.zoom, c.pan, p - r.center(), factor);
        }
    }
    let aspect = match (&doc.analysis, &doc.thumb) {
        (Some(a), _) => {
            let (w, h) = a.image.dimensions();
            w as f32 / h.max(1) as f32
        }
        (None, Some(t)) => t.aspect_ratio(),
        (None, None) => 1.0,
    };
    let grid = doc.analysis.as_ref().map(|a| (a.latent.height, a.latent.width));
    let full = st.full_res().cloned();
    // Panes that show the photo (when its composite is there) and where the crop lies in it.
    let on_photo = |pane: Pane| full.is_some() && pane != Pane::Reconstruction;
    let crop_in = |r: Rect| match &full {
        Some(f) => {
            let (w, h) = (f.placement.size.0 as f32, f.placement.size.1 as f32);
            let c = f.placement.crop.map(|v| v as f32);
            Rect::from_min_size(
                r.min + Vec2::new(c[0] / w * r.width(), c[1] / h * r.height()),
                Vec2::new(c[2] / w * r.width(), c[3] / h * r.height()),
            )
        }
        None => r,
    };
    let photo_aspect = full.as_ref().map_or(aspect, |f| {
        let (w, h) = f.photo.dimensions();
        w as f32 / h.max(1) as f32
    });
    let doc_id = doc.id;
    let label_colour = ui.visuals().strong_text_color();
    let overlay = inspector::overlay_map(st, doc);
    let tex = textures(&mut st.canvas.textures, &ctx, doc);
    let (original, recon, edited) = (tex.original.clone(), tex.recon.clone(), tex.edited.clone());
    let thumb = doc.thumb.clone();
    let status_text = match &doc.status {
        super::state::DocStatus::Queued if st.model.is_none() => {
            Some("waiting for a model".to_string())
        }
        super::state::DocStatus::Queued => Some("encoding…".to_string()),
        super::state::DocStatus::Failed(e) => Some(format!("failed: {e}")),
        super::state::DocStatus::Ready => None,
    };
    let (mut rects, mut pictures) = (Vec::new(), Vec::new());
    let uv = Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0));
    for (k, pane) in panes.iter().enumerate() {
        let pane_rect = pane_rect(k);
        let pane_aspect = if on_photo(*pane) { photo_aspect } else { aspect };
        let picture = image_rect(pane_rect.shrink(4.0), pane_aspect, st.canvas.zoom, st.canvas.pan);
        let img_rect = if on_photo(*pane) { crop_in(picture) } else { picture };
        let clip = painter.with_clip_rect(pane_rect);
        if let Some(f) = full.as_ref().filter(|_| on_photo(*pane)) {
            let t = &mut st.canvas.full_textures;
            let (before, after) = match pane {
                Pane::Edited => (Source::Composite, Source::Composite),
                Pane::Split => (Source::Photo, Source::Composite),
                _ => (Source::Photo, Source::Photo),
            };
            t.draw(&clip, doc_id, f, before, picture, picture);
            if *pane == Pane::Split {
                let x = picture.min.x + picture.width() * st.canvas.split;
                let right = Rect::from_min_max(Pos2::new(x, picture.min.y), picture.max);
                t.draw(&clip, doc_id, f, after, picture, right);
                clip.line_segment(
                    [Pos2::new(x, picture.min.y), Pos2::new(x, picture.max.y)],
                    Stroke::new(2.0, Color32::WHITE),
                );
            }
        }
        let tex = match pane {
            _ if on_photo(*pane) => None,
            Pane::Original => original.clone().or(thumb.clone()),
            Pane::Reconstruction => recon.clone(),
            Pane::Edited => edited.clone().or(recon.clone()),
            Pane::Split => original.clone().or(thumb.clone()),
        };
        if let Some(t) = &tex {
            clip.image(t.id(), img_rect, uv, Color32::WHITE);
        }
        if *pane == Pane::Split
            && !on_photo(*pane)
            && let Some(after) = edited.clone().or(recon.clone())
        {
            let x = img_rect.min.x + img_rect.width() * st.canvas.split;
            let right = Rect::from_min_max(Pos2::new(x, img_rect.min.y), img_rect.max);
            let right_uv = Rect::from_min_max(Pos2::new(st.canvas.split, 0.0), Pos2::new(1.0, 1.0));
            clip.image(after.id(), right, right_uv, Color32::WHITE);
            clip.line_segment(
                [Pos2::new(x, img_rect.min.y), Pos2::new(x, img_rect.max.y)],
                Stroke::new(2.0, Color32::WHITE),
            );
        }
        if let Some(map) = &overlay {
            let mut opts = DrawOptions { alpha: 0.55, ..Default::default() };
            if let Some(h) = st.hover.filter(|h| h.doc == doc_id) {
                opts.marker = Some((h.y, h.x));
            }
            let on_gpu = st.maps_path().on_gpu();
            gpu::draw(&clip, img_rect, map, opts, on_gpu, &mut st.maps);
        }
        if st.session.settings.show_grid
            && let Some((gh, gw)) = grid
        {
            gpu::grid_lines(&clip, img_rect, gh, gw);
        }
        clip.text(
            pane_rect.left_top() + Vec2::new(6.0, 4.0),
            egui::Align2::LEFT_TOP,
            pane.label(),
            egui::FontId::proportional(13.0),
            label_colour,
        );
        if let Some(t) = &status_text {
            clip.text(
                pane_rect.center(),
                egui::Align2::CENTER_CENTER,
                t,
                egui::FontId::proportional(16.0),
                Color32::from_rgb(240, 200, 80),
            );
        }
        rects.push((*pane, img_rect));
        pictures.push((*pane, picture));
    }
    st.canvas.image_rects = rects.clone();
    st.canvas.picture_rects = pictures;

    // Pointer: hover token, brush preview and painting.
    let pointer = resp.hover_pos().or(resp.interact_pointer_pos());
    let mut hovered = None;
    if let (Some(p), Some((gh, gw))) = (pointer, grid) {
        for (_, r) in &rects {
            if r.contains(p) {
                let fx = ((p.x - r.min.x) / r.width()).clamp(0.0, 0.9999);
                let fy = ((p.y - r.min.y) / r.height()).clamp(0.0, 0.9999);
                hovered = Some((fx, fy));
                st.hover = Some(Hover {
                    doc: doc_id,
                    y: (fy * gh as f32) as usize,
                    x: (fx * gw as f32) as usize,
                });
            }
        }
    }
    let brush_tool = st.session.settings.tool == CanvasTool::Brush;
    if let Some((fx, fy)) = hovered
        && brush_tool
    {
        let radius = st.session.settings.brush.radius;
        for (_, r) in &rects {
            let c = Pos2::new(r.min.x + fx * r.width(), r.min.y + fy * r.height());
            painter.with_clip_rect(area).circle_stroke(
                c,
                radius * r.width(),
                Stroke::new(1.5, Color32::from_rgb(255, 255, 255)),
            );
        }
    }
    let painting = brush_tool && resp.dragged_by(egui::PointerButton::Primary);
    if painting
        && grid.is_some()
        && let Some((fx, fy)) = hovered
    {
        st.canvas.painting = true;
        st.stroke_point([fx, fy]);
    }
    if st.canvas.painting && !painting {
        st.canvas.painting = false;
        st.end_stroke();
    }
    if brush_tool
        && resp.clicked()
        && let Some((fx, fy)) = hovered
    {
        st.stroke_point([fx, fy]);
        st.end_stroke();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where an image point (0..1 of the image) is drawn in a pane.
    fn screen_of(pane: Rect, zoom: f32, pan: Vec2, point: Vec2) -> Pos2 {
        let r = image_rect(pane, 1.5, zoom, pan);
        r.min + point * r.size()
    }

    #[test]
    fn zooming_keeps_the_point_under_the_pointer_in_every_pane() {
        let left = Rect::from_min_size(Pos2::new(0.0, 0.0), Vec2::new(300.0, 400.0));
        let right = left.translate(Vec2::new(306.0, 0.0));
        let (zoom, pan) = (1.3, Vec2::new(12.0, -7.0));
        let point = Vec2::new(0.8, 0.25);
        let pointer = screen_of(right, zoom, pan, point);
        for factor in [1.7, 0.6, 1.0] {
            let (z, p) = zoom_about(zoom, pan, pointer - right.center(), factor);
            assert!((z - zoom * factor).abs() < 1e-6);
            let after = screen_of(right, z, p, point);
            assert!((after - pointer).length() < 1e-3, "{factor}: {after:?} vs {pointer:?}");
            // The other pane moves the same way: the same image point stays put there too.
            let l_before = screen_of(left, zoom, pan, point);
            let l_after = screen_of(left, z, p, point);
            assert!((l_after - l_before).length() < 1e-3);
        }
        // Zooming about the centre of the image leaves the pan alone.
        let (_, p) = zoom_about(zoom, pan, pan, 2.0);
        assert!((p - pan).length() < 1e-6);
    }

    #[test]
    fn zoom_is_clamped_and_the_anchor_still_holds() {
        let pane = Rect::from_min_size(Pos2::ZERO, Vec2::new(200.0, 200.0));
        let (zoom, pan) = (15.0, Vec2::ZERO);
        let point = Vec2::new(0.3, 0.6);
        let pointer = screen_of(pane, zoom, pan, point);
        let (z, p) = zoom_about(zoom, pan, pointer - pane.center(), 10.0);
        assert_eq!(z, MAX_ZOOM);
        assert!((screen_of(pane, z, p, point) - pointer).length() < 1e-2);
        let (z, _) = zoom_about(0.2, pan, Vec2::ZERO, 0.01);
        assert_eq!(z, MIN_ZOOM);
    }
}
