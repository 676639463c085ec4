//! The latent inspector: PCA views of features, latent and restored features; a channel grid
//! with a channel picker; the similarity map that follows the pointer (within one image and
//! across two); the semantic-preservation and cycle maps; and the metrics.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use egui::{Rect, Sense, Vec2};
use image::RgbImage;

use super::gpu::{self, DrawOptions, MapKind, TokenMap};
use super::state::{Document, InspectorView, Overlay};
use super::{AppState, Hover};
use crate::grid::Grid;
use crate::inspect;
use crate::pca::Pca;

#[derive(Default)]
pub struct InspectorState {
    /// The second image of the similarity view.
    pub compare: Option<u64>,
    /// Where the main map was drawn last frame.
    pub map_rect: Option<Rect>,
    pcas: HashMap<(usize, u8), Arc<Pca>>,
    data: HashMap<(u64, u8), Versioned>,
}

/// Host data of one grid with the document version it was taken at.
type Versioned = (u64, Arc<Vec<f32>>);

fn key(parts: impl Hash) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

/// Which grid of a document.
#[derive(Clone, Copy)]
enum Which {
    Features = 0,
    Latent = 1,
    Restored = 2,
}

fn grid_of(doc: &Document, which: Which) -> Option<&Grid> {
    let a = doc.analysis.as_ref()?;
    Some(match which {
        Which::Features => &a.features,
        Which::Latent => doc.edited.as_ref().map_or(&a.latent, |e| e.latent.as_ref()),
        Which::Restored => doc.edited.as_ref().map_or(&a.restored, |e| &e.restored),
    })
}

impl InspectorState {
    fn data(&mut self, doc: &Document, which: Which) -> Option<Arc<Vec<f32>>> {
        let g = grid_of(doc, which)?;
        let k = (doc.id, which as u8);
        if let Some((v, d)) = self.data.get(&k)
            && *v == doc.version
        {
            return Some(d.clone());
        }
        let d = Arc::new(g.data.clone());
        self.data.insert(k, (doc.version, d.clone()));
        Some(d)
    }

    /// PCA bases are fitted on the unedited grids, so edits show up as colour changes.
    fn pca(&mut self, doc: &Document, latent: bool) -> Option<Arc<Pca>> {
        let a = doc.analysis.as_ref()?;
        let k = (Arc::as_ptr(a) as usize, u8::from(latent));
        if let Some(p) = self.pcas.get(&k) {
            return Some(p.clone());
        }
        let g = if latent { &a.latent } else { &a.features };
        let p = Arc::new(Pca::fit(&g.data, g.channels));
        if self.pcas.len() > 64 {
            self.pcas.clear();
        }
        self.pcas.insert(k, p.clone());
        Some(p)
    }
}

/// The map an inspector view shows for `doc` (not for the metrics view).
pub fn view_map(st: &mut AppState, doc_index: usize, view: InspectorView) -> Option<TokenMap> {
    let doc = st.docs.get(doc_index)?;
    let a = doc.analysis.clone()?;
    let (h, w) = (a.latent.height, a.latent.width);
    let version = doc.version;
    let base = key((doc.id, view as u8));
    let ins = &mut st.inspector;
    Some(match view {
        InspectorView::FeaturesPca | InspectorView::RestoredPca | InspectorView::LatentPca => {
            let (which, latent) = match view {
                InspectorView::FeaturesPca => (Which::Features, false),
                InspectorView::RestoredPca => (Which::Restored, false),
                _ => (Which::Latent, true),
            };
            let g = grid_of(doc, which)?;
            TokenMap {
                key: base,
                version,
                height: h,
                width: w,
                dim: g.channels,
                data: ins.data(doc, which)?,
                kind: MapKind::Pca(ins.pca(doc, latent)?),
            }
        }
        InspectorView::Channels => {
            let g = grid_of(doc, Which::Latent)?;
            let c = st.edit.channel.min(g.channels.saturating_sub(1));
            let stats = inspect::channel_stats(g).ok()?;
            let s = stats[c];
            TokenMap {
                key: key((base, c)),
                version,
                height: h,
                width: w,
                dim: g.channels,
                data: ins.data(doc, Which::Latent)?,
                kind: MapKind::Channel { channel: c, lo: s.min, hi: s.max },
            }
        }
        InspectorView::Similarity => {
            let hv = st.hover.filter(|hv| hv.doc == doc.id)?;
            similarity_map(doc, doc, hv, base)?
        }
        InspectorView::Semantic => {
            let restored = grid_of(doc, Which::Restored)?;
            let v = inspect::token_cosine(&a.features, restored).ok()?;
            TokenMap::scalar(base, version, h, w, v)
        }
        InspectorView::Cycle => {
            let v = inspect::token_cosine(&a.features, &a.cycle).ok()?;
            TokenMap::scalar(base, version, h, w, v)
        }
        InspectorView::Metrics => return None,
    })
}

fn similarity_map(from: &Document, to: &Document, hv: Hover, base: u64) -> Option<TokenMap> {
    let fa = &from.analysis.as_ref()?.features;
    let fb = &to.analysis.as_ref()?.features;
    let v = inspect::cosine_to_token(fa, hv.y, hv.x, fb).ok()?;
    let version = key((hv.y, hv.x, from.version, to.version));
    Some(TokenMap::scalar(key((base, to.id)), version, fb.height, fb.width, v))
}

/// The similarity of the hovered token of image `i` to every token of the compared image.
pub fn across_map(st: &AppState, i: usize) -> Option<TokenMap> {
    let a = st.docs.get(i)?;
    let b = st.inspector.compare.and_then(|id| st.docs.iter().find(|d| d.id == id))?;
    let hv = st.hover.filter(|h| h.doc == a.id)?;
    similarity_map(a, b, hv, key((a.id, "across")))
}

/// The heatmap the canvas lays over its pictures.
pub fn overlay_map(st: &AppState, doc: &Document) -> Option<TokenMap> {
    let a = doc.analysis.as_ref()?;
    let (h, w) = (a.latent.height, a.latent.width);
    let base = key((doc.id, "overlay"));
    match st.session.settings.overlay {
        Overlay::None => None,
        Overlay::Similarity => {
            let hv = st.hover.filter(|hv| hv.doc == doc.id)?;
            similarity_map(doc, doc, hv, base)
        }
        Overlay::Semantic => {
            let restored = grid_of(doc, Which::Restored)?;
            let v = inspect::token_cosine(&a.features, restored).ok()?;
            Some(TokenMap::scalar(base, doc.version, h, w, v))
        }
        Overlay::Cycle => {
            let v = inspect::token_cosine(&a.features, &a.cycle).ok()?;
            Some(TokenMap::scalar(base, doc.version, h, w, v))
        }
    }
}

/// The current inspector view as a picture, `cell` pixels per token (for PNG export).
pub fn current_picture(st: &mut AppState, cell: u32) -> Option<RgbImage> {
    let i = st.active?;
    let view = st.session.settings.inspector;
    let map = view_map(st, i, view)?;
    let img = map.cpu_image();
    Some(image::imageops::resize(
        &img,
        img.width() * cell,
        img.height() * cell,
        image::imageops::FilterType::Nearest,
    ))
}

fn map_widget(
    ui: &mut egui::Ui,
    st: &mut AppState,
    map: &TokenMap,
    side: f32,
    marker: bool,
) -> egui::Response {
    let (rect, resp) = ui.allocate_exact_size(Vec2::splat(side), Sense::click_and_drag());
    let mut opts = DrawOptions::default();
    if marker {
        opts.marker = st.hover.map(|h| (h.y, h.x));
    }
    let on_gpu = st.maps_path().on_gpu();
    gpu::draw(ui.painter(), rect, map, opts, on_gpu, &mut st.maps);
    resp
}

fn main_map(
    ui: &mut egui::Ui,
    st: &mut AppState,
    map: &TokenMap,
    side: f32,
    marker: bool,
) -> egui::Response {
    let resp = map_widget(ui, st, map, side, marker);
    st.inspector.map_rect = Some(resp.rect);
    resp
}

/// Token under the pointer in a map drawn in `rect`.
fn token_at(rect: Rect, p: egui::Pos2, h: usize, w: usize) -> (usize, usize) {
    let fx = ((p.x - rect.min.x) / rect.width()).clamp(0.0, 0.9999);
    let fy = ((p.y - rect.min.y) / rect.height()).clamp(0.0, 0.9999);
    ((fy * h as f32) as usize, (fx * w as f32) as usize)
}

pub fn ui(ui: &mut egui::Ui, st: &mut AppState) {
    ui.heading("Inspector");
    ui.horizontal_wrapped(|ui| {
        for view in InspectorView::ALL {
            ui.selectable_value(&mut st.session.settings.inspector, view, view.label())
                .on_hover_text(view.tooltip());
        }
    });
    ui.separator();
    let Some(i) = st.active else {
        ui.label("No image");
        return;
    };
    if !st.docs[i].is_ready() {
        ui.label("Waiting for the image to be encoded…");
        return;
    }
    let side = ui.available_width().clamp(120.0, 320.0);
    let view = st.session.settings.inspector;
    let doc_id = st.docs[i].id;
    match view {
        InspectorView::Metrics => metrics(ui, st, i),
        InspectorView::Channels => {
            if let Some(map) = view_map(st, i, view) {
                let resp = main_map(ui, st, &map, side, false);
                resp.on_hover_text("The picked channel (edit panel: channel)");
            }
            channel_grid(ui, st, i, side);
        }
        InspectorView::Similarity => {
            ui.label("Hover a token (here or on the canvas)");
            let (h, w) =
                st.docs[i].analysis.as_ref().map_or((1, 1), |a| (a.latent.height, a.latent.width));
            let map = view_map(st, i, view).or_else(|| view_map(st, i, InspectorView::FeaturesPca));
            if let Some(map) = map {
                let resp = main_map(ui, st, &map, side, true);
                if let Some(p) = resp.hover_pos() {
                    let (y, x) = token_at(resp.rect, p, h, w);
                    st.hover = Some(Hover { doc: doc_id, y, x });
                }
            }
            // Across two images.
            let others: Vec<(u64, String)> = st
                .docs
                .iter()
                .filter(|d| d.id != doc_id && d.is_ready())
                .map(|d| (d.id, d.name.clone()))
                .collect();
            let name = st
                .inspector
                .compare
                .and_then(|id| others.iter().find(|(o, _)| *o == id))
                .map_or("(none)".to_string(), |(_, n)| n.clone());
            egui::ComboBox::from_label("compare with")
                .selected_text(name)
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut st.inspector.compare, None, "(none)");
                    for (id, n) in &others {
                        ui.selectable_value(&mut st.inspector.compare, Some(*id), n);
                    }
                })
                .response
                .on_hover_text(
                    "Show the hovered token's similarity to every token of a second image",
                );
            if let Some(map) = across_map(st, i) {
                map_widget(ui, st, &map, side, false);
            }
        }
        _ => {
            if let Some(map) = view_map(st, i, view) {
                let resp = main_map(ui, st, &map, side, false);
                let tip = match view {
                    InspectorView::Semantic | InspectorView::Cycle => {
                        let (lo, hi) = inspect::value_range(&map.data);
                        format!(
                            "{}; cosine from {lo:.3} (dark) to {hi:.3} (yellow)",
                            view.tooltip()
                        )
                    }
                    _ => view.tooltip().to_string(),
                };
                resp.on_hover_text(tip);
            }
        }
    }
}

fn channel_grid(ui: &mut egui::Ui, st: &mut AppState, i: usize, side: f32) {
    let doc = &st.docs[i];
    let Some(g) = grid_of(doc, Which::Latent) else { return };
    let channels = g.channels;
    let Ok(stats) = inspect::channel_stats(g) else { return };
    let Some(data) = st.inspector.data(&st.docs[i], Which::Latent) else { return };
    let (h, w, version, id) = (g.height, g.width, doc.version, doc.id);
    let cols = 8usize;
    let cell = (side / cols as f32 - 3.0).max(12.0);
    let picked = st.edit.channel;
    s_stats(ui, &stats, picked);
    egui::Grid::new("channel-grid").spacing(Vec2::splat(3.0)).show(ui, |ui| {
        for (c, s) in stats.iter().enumerate().take(channels) {
            let map = TokenMap {
                key: key((id, "grid", c)),
                version,
                height: h,
                width: w,
                dim: channels,
                data: data.clone(),
                kind: MapKind::Channel { channel: c, lo: s.min, hi: s.max },
            };
            let (rect, resp) = ui.allocate_exact_size(Vec2::splat(cell), Sense::click());
            let on_gpu = st.maps_path().on_gpu();
            gpu::draw(ui.painter(), rect, &map, DrawOptions::default(), on_gpu, &mut st.maps);
            if c == picked {
                ui.painter().rect_stroke(
                    rect,
                    0.0,
                    egui::Stroke::new(2.0, ui.visuals().selection.stroke.color),
                    egui::StrokeKind::Outside,
                );
            }
            if resp.on_hover_text(format!("channel {c}: click to pick it")).clicked() {
                st.edit.channel = c;
            }
            if (c + 1) % cols == 0 {
                ui.end_row();
            }
        }
    });
}

fn s_stats(ui: &mut egui::Ui, stats: &[inspect::ChannelStats], c: usize) {
    if let Some(s) = stats.get(c) {
        ui.label(format!(
            "channel {c}: min {:.2}, max {:.2}, mean {:.2}, std {:.2}",
            s.min, s.max, s.mean, s.std
        ));
    }
}

fn metrics(ui: &mut egui::Ui, st: &mut AppState, i: usize) {
    let doc = &st.docs[i];
    let Some(a) = &doc.analysis else { return };
    egui::Grid::new("metrics").striped(true).show(ui, |ui| {
        let mut row = |k: &str, v: String| {
            ui.label(k);
            ui.label(v);
            ui.end_row();
        };
        row("PSNR", format!("{:.2} dB", a.psnr));
        row("SSIM", format!("{:.4}", a.ssim));
        row("feature cosine", format!("{:.4}", a.feature_cosine));
        row("cycle cosine", format!("{:.4}", a.cycle_cosine));
        row("grid", format!("{}×{} tokens", a.latent.height, a.latent.width));
        row("latent", format!("{} channels", a.latent.channels));
        row("features", format!("{} dims", a.features.channels));
        row("encode", format!("{:.0} ms", a.encode_ms));
        row("decode", format!("{:.0} ms", a.decode_ms));
        if let Some(e) = &doc.edited {
            let restored_cos = crate::metrics::mean_token_cosine(&a.features, &e.restored);
            row("edited: feature cosine", format!("{restored_cos:.4}"));
            row("edited: decode", format!("{:.0} ms", e.ms));
        }
        if let Some(l) = st.latencies.last() {
            row("edit to image", format!("{l:.0} ms"));
        }
    });
}
