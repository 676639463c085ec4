//! The photo and the composited photo on the canvas, at full resolution: a display-resolution
//! texture while it is enough, and once the view magnifies it, a texture of the visible part
//! made from the full-resolution pixels (its own pixels, drawn sharp, from 100 % zoom on).

use egui::{Color32, Pos2, Rect, TextureHandle, TextureOptions};
use image::Rgb32FImage;
use rayon::prelude::*;

use super::composite::FullRes;

/// Which full-resolution picture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Photo,
    Composite,
}

/// A texture of part of a picture: `rect` (photo pixels) sampled at `scale` texels per pixel.
struct Tile {
    stamp: (u64, u64),
    rect: [u32; 4],
    scale: f32,
    texture: TextureHandle,
}

/// The canvas's full-resolution textures of one image.
#[derive(Default)]
pub struct Textures {
    /// (document, photo buffer) of the photo texture.
    photo: Option<((u64, usize), TextureHandle)>,
    /// (document, composite key) of the composite texture.
    composite: Option<((u64, u64), TextureHandle)>,
    tiles: [Option<Tile>; 2],
}

fn to_color(img: &Rgb32FImage, rect: [u32; 4], scale: f32) -> egui::ColorImage {
    let [x0, y0, x1, y1] = rect;
    let w = (((x1 - x0) as f32 * scale).ceil() as usize).max(1);
    let h = (((y1 - y0) as f32 * scale).ceil() as usize).max(1);
    let (iw, raw) = (img.width() as usize, img.as_raw());
    let mut pixels = vec![Color32::BLACK; w * h];
    pixels.par_chunks_mut(w).enumerate().for_each(|(j, row)| {
        let y = (y0 as usize + (j as f32 / scale) as usize).min(y1 as usize - 1);
        for (i, out) in row.iter_mut().enumerate() {
            let x = (x0 as usize + (i as f32 / scale) as usize).min(x1 as usize - 1);
            let p = &raw[(y * iw + x) * 3..(y * iw + x) * 3 + 3];
            let v = |c: usize| (p[c] * 255.0).round().clamp(0.0, 255.0) as u8;
            *out = Color32::from_rgb(v(0), v(1), v(2));
        }
    });
    egui::ColorImage { size: [w, h], source_size: egui::vec2(w as f32, h as f32), pixels }
}

impl Textures {
    /// Draws the part of `source` that falls in `part` (screen) of the picture drawn at
    /// `image` (screen).
    pub fn draw(
        &mut self,
        painter: &egui::Painter,
        doc: u64,
        full: &FullRes,
        source: Source,
        image: Rect,
        part: Rect,
    ) {
        let shown = part.intersect(image).intersect(painter.clip_rect());
        if !shown.is_positive() {
            return;
        }
        let ctx = painter.ctx();
        let Some(preview) = self.preview(ctx, doc, full, source) else { return };
        let (w, h) = full.photo.dimensions();
        let uv_of = |p: Pos2| {
            Pos2::new((p.x - image.min.x) / image.width(), (p.y - image.min.y) / image.height())
        };
        let uv = Rect::from_min_max(uv_of(shown.min), uv_of(shown.max));
        // Texels of the preview per screen pixel; below 1 the preview is magnified.
        let scale = image.width() * ctx.pixels_per_point() / w as f32;
        let preview_scale = preview.size()[0] as f32 / w as f32;
        if scale <= preview_scale * 1.05 {
            painter.image(preview.id(), shown, uv, Color32::WHITE);
            return;
        }
        let need = [
            (uv.min.x * w as f32).floor().max(0.0) as u32,
            (uv.min.y * h as f32).floor().max(0.0) as u32,
            ((uv.max.x * w as f32).ceil() as u32).min(w),
            ((uv.max.y * h as f32).ceil() as u32).min(h),
        ];
        if need[0] >= need[2] || need[1] >= need[3] {
            return;
        }
        let tile_scale = scale.min(1.0);
        let Some(tile) = self.tile(ctx, full, source, need, tile_scale) else {
            painter.image(preview.id(), shown, uv, Color32::WHITE);
            return;
        };
        let [x0, y0, x1, y1] = tile.rect.map(|v| v as f32);
        let tile_uv = Rect::from_min_max(
            Pos2::new(
                (uv.min.x * w as f32 - x0) / (x1 - x0),
                (uv.min.y * h as f32 - y0) / (y1 - y0),
            ),
            Pos2::new(
                (uv.max.x * w as f32 - x0) / (x1 - x0),
                (uv.max.y * h as f32 - y0) / (y1 - y0),
            ),
        );
        painter.image(tile.texture.id(), shown, tile_uv, Color32::WHITE);
    }

    /// The display-resolution texture of `source`.
    fn preview(
        &mut self,
        ctx: &egui::Context,
        doc: u64,
        full: &FullRes,
        source: Source,
    ) -> Option<TextureHandle> {
        match source {
            Source::Photo => {
                let stamp = (doc, std::sync::Arc::as_ptr(&full.photo) as usize);
                if self.photo.as_ref().is_none_or(|(s, _)| *s != stamp) {
                    let image = (*full.photo_preview).clone();
                    let t = ctx.load_texture(format!("photo-{doc}"), image, TextureOptions::LINEAR);
                    self.photo = Some((stamp, t));
                }
                self.photo.as_ref().map(|(_, t)| t.clone())
            }
            Source::Composite => {
                let stamp = (doc, full.key);
                if self.composite.as_ref().is_none_or(|(s, _)| *s != stamp)
                    && let Ok(shown) = full.shown.try_lock()
                {
                    // The window never waits: while the worker writes, the last texture stays.
                    let image = shown.preview.clone();
                    let stamp = (doc, shown.key);
                    drop(shown);
                    let name = format!("composite-{doc}");
                    self.composite =
                        Some((stamp, ctx.load_texture(name, image, TextureOptions::LINEAR)));
                }
                self.composite.as_ref().map(|(_, t)| t.clone())
            }
        }
    }

    /// A texture of the pixels `need` of `source` at `scale`, made again when the view left it.
    fn tile(
        &mut self,
        ctx: &egui::Context,
        full: &FullRes,
        source: Source,
        need: [u32; 4],
        scale: f32,
    ) -> Option<&Tile> {
        let slot = source as usize;
        let stamp = match source {
            Source::Photo => (std::sync::Arc::as_ptr(&full.photo) as usize as u64, 0),
            Source::Composite => (1, full.key),
        };
        let fits = |t: &Tile| {
            t.stamp == stamp
                && (t.scale / scale - 1.0).abs() < 0.1
                && t.rect[0] <= need[0]
                && t.rect[1] <= need[1]
                && t.rect[2] >= need[2]
                && t.rect[3] >= need[3]
        };
        if !self.tiles[slot].as_ref().is_some_and(fits) {
            // A quarter more on every side, so a small pan reuses it.
            let (w, h) = full.photo.dimensions();
            let (mx, my) = ((need[2] - need[0]) / 4, (need[3] - need[1]) / 4);
            let rect = [
                need[0].saturating_sub(mx),
                need[1].saturating_sub(my),
                (need[2] + mx).min(w),
                (need[3] + my).min(h),
            ];
            let image = match source {
                Source::Photo => to_color(&full.photo, rect, scale),
                Source::Composite => {
                    let shown = full.shown.try_lock().ok()?;
                    if shown.key != full.key {
                        return None;
                    }
                    to_color(&shown.image, rect, scale)
                }
            };
            let filter =
                if scale >= 1.0 { TextureOptions::NEAREST } else { TextureOptions::LINEAR };
            let texture = ctx.load_texture(format!("tile-{slot}"), image, filter);
            self.tiles[slot] = Some(Tile { stamp, rect, scale, texture });
        }
        self.tiles[slot].as_ref()
    }
}
