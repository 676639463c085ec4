//! The edited photo: the regenerated edit composited into the original at the original's
//! resolution, kept up to date on the model thread.
//!
//! The window asks for a composite whenever the decoded edit, its mask or the Edit panel's
//! composite settings change ([`AppState::recomposite`]); the worker keeps each image's photo
//! and its composite ([`Compositor`]) and recomposites only the pixels the change reaches
//! ([`changed_region`]), so a brush stroke costs what it touched, not the whole photo. The
//! composite lives in a buffer shared with the window ([`Shown`]); the worker holds its lock
//! only while writing, and the window never waits for it (it keeps the last texture).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Result, bail};
use image::Rgb32FImage;

use super::AppState;
use super::state::Analysis;
use super::worker::{CANCELLED, Job};
use crate::composite::{
    CompositeMode, CompositeOptions, Inputs, Placement, Rect, changed_region, composite_region,
};
use crate::image_io::load_rgb;

/// Longest side of the display textures of the photo and the composite; the canvas shows the
/// photo's own pixels from a tile of the visible part when zoomed in further.
pub const PREVIEW_SIDE: u32 = 2048;

/// What a composite is made of.
pub struct CompositeRequest {
    pub doc: u64,
    pub key: u64,
    pub path: PathBuf,
    pub analysis: Arc<Analysis>,
    /// The decoded edit (the reconstruction when nothing is edited).
    pub edit: Rgb32FImage,
    /// The edits' token mask (row-major over the latent grid).
    pub mask: Arc<Vec<f32>>,
    pub options: CompositeOptions,
}

/// The composite shared by the worker (which writes it) and the window (which draws it).
pub struct Shown {
    /// The edited photo at full resolution.
    pub image: Rgb32FImage,
    /// `image` at display resolution.
    pub preview: egui::ColorImage,
    /// The request it shows.
    pub key: u64,
}

/// A finished composite, for the window.
#[derive(Clone)]
pub struct FullRes {
    pub key: u64,
    /// The original photo at full resolution and at display resolution.
    pub photo: Arc<Rgb32FImage>,
    pub photo_preview: Arc<egui::ColorImage>,
    pub shown: Arc<Mutex<Shown>>,
    pub placement: Placement,
    /// What was composited again (`None`: nothing changed).
    pub region: Option<Rect>,
    pub ms: f64,
}

/// The last inputs composited into an image's photo.
struct Last {
    edit: Rgb32FImage,
    mask: Arc<Vec<f32>>,
    options: CompositeOptions,
    placement: Placement,
    recon: Arc<Analysis>,
}

/// One image's photo and composite, on the worker.
struct DocComposite {
    path: PathBuf,
    photo: Arc<Rgb32FImage>,
    photo_preview: Arc<egui::ColorImage>,
    shown: Arc<Mutex<Shown>>,
    last: Option<Last>,
}

/// The worker's composite of the image being edited.
#[derive(Default)]
pub struct Compositor {
    docs: HashMap<u64, DocComposite>,
}

impl Compositor {
    /// Brings the image's composite up to date with `req`.
    pub fn run(&mut self, req: CompositeRequest, cancel: &AtomicBool) -> Result<FullRes> {
        let start = Instant::now();
        if req.options.mode == CompositeMode::Off {
            bail!("composite mode `off` leaves nothing to composite");
        }
        // Only the image being edited keeps its photo and composite (two photo-sized pictures).
        self.docs.retain(|&d, _| d == req.doc);
        let doc = match self.docs.remove(&req.doc) {
            Some(d) if d.path == req.path => d,
            _ => open(&req.path)?,
        };
        if cancel.load(Ordering::Relaxed) {
            self.docs.insert(req.doc, doc);
            bail!(CANCELLED);
        }
        let doc = self.docs.entry(req.doc).or_insert(doc);
        let a = &req.analysis;
        let grid = (a.latent.height, a.latent.width);
        let placement = Placement::centre_crop(doc.photo.dimensions(), a.image.dimensions(), grid);
        let new = Inputs {
            decoded_original: Some(&a.recon),
            decoded_edit: &req.edit,
            token_mask: &req.mask,
            placement: &placement,
            options: &req.options,
        };
        let old = doc.last.as_ref().filter(|l| Arc::ptr_eq(&l.recon, a)).map(|l| Inputs {
            decoded_original: Some(&l.recon.recon),
            decoded_edit: &l.edit,
            token_mask: &l.mask,
            placement: &l.placement,
            options: &l.options,
        });
        // A first composite, or one for another analysis, starts from the photo everywhere.
        let region = match old {
            Some(old) => changed_region(Some(&old), &new),
            None => Some(Rect::of_size(doc.photo.dimensions())),
        };
        if let Some(region) = region {
            let mut shown = doc.shown.lock().map_err(|_| anyhow::anyhow!("composite lost"))?;
            let shown = &mut *shown;
            composite_region(&mut shown.image, &doc.photo, &new, region)?;
            preview_region(&shown.image, &mut shown.preview, region);
        }
        if let Ok(mut shown) = doc.shown.lock() {
            shown.key = req.key;
        }
        doc.last = Some(Last {
            edit: req.edit,
            mask: req.mask,
            options: req.options,
            placement,
            recon: req.analysis,
        });
        Ok(FullRes {
            key: req.key,
            photo: doc.photo.clone(),
            photo_preview: doc.photo_preview.clone(),
            shown: doc.shown.clone(),
            placement,
            region,
            ms: start.elapsed().as_secs_f64() * 1e3,
        })
    }
}

/// Loads an image's photo and starts its composite as the photo itself.
fn open(path: &std::path::Path) -> Result<DocComposite> {
    let photo = load_rgb(path)?;
    let mut preview = blank_preview(photo.dimensions());
    preview_region(&photo, &mut preview, Rect::of_size(photo.dimensions()));
    let shown = Shown { image: photo.clone(), preview: preview.clone(), key: 0 };
    Ok(DocComposite {
        path: path.to_path_buf(),
        photo: Arc::new(photo),
        photo_preview: Arc::new(preview),
        shown: Arc::new(Mutex::new(shown)),
        last: None,
    })
}

/// The display size of a photo of `size`: at most [`PREVIEW_SIDE`] on the longer side.
pub fn preview_size(size: (u32, u32)) -> (u32, u32) {
    let scale = (PREVIEW_SIDE as f64 / size.0.max(size.1) as f64).min(1.0);
    let side = |n: u32| ((n as f64 * scale).round() as u32).max(1);
    (side(size.0), side(size.1))
}

fn blank_preview(size: (u32, u32)) -> egui::ColorImage {
    let (w, h) = preview_size(size);
    egui::ColorImage::filled([w as usize, h as usize], egui::Color32::BLACK)
}

/// Updates the preview pixels that cover `region` of `image`: each the mean of the image
/// pixels it covers.
fn preview_region(image: &Rgb32FImage, preview: &mut egui::ColorImage, region: Rect) {
    use rayon::prelude::*;
    let (w, h) = image.dimensions();
    let [pw, ph] = preview.size;
    let (sx, sy) = (w as f64 / pw as f64, h as f64 / ph as f64);
    let cover = |p: usize, s: f64, n: u32| {
        let a = (p as f64 * s).floor() as u32;
        (a, (((p + 1) as f64 * s).ceil() as u32).clamp(a + 1, n))
    };
    let first = |v: u32, s: f64| (v as f64 / s).floor() as usize;
    let (px0, px1) = (first(region.x0, sx), (first(region.x1, sx) + 1).min(pw));
    let (py0, py1) = (first(region.y0, sy), (first(region.y1, sy) + 1).min(ph));
    let raw = image.as_raw();
    let rows = preview.pixels.par_chunks_mut(pw).enumerate().skip(py0).take(py1 - py0);
    rows.for_each(|(py, row)| {
        let (y0, y1) = cover(py, sy, h);
        for (px, out) in row.iter_mut().enumerate().take(px1).skip(px0) {
            let (x0, x1) = cover(px, sx, w);
            let mut sum = [0f32; 3];
            for y in y0..y1 {
                let line = &raw[(y as usize * w as usize + x0 as usize) * 3..];
                for p in line[..(x1 - x0) as usize * 3].chunks_exact(3) {
                    (0..3).for_each(|c| sum[c] += p[c]);
                }
            }
            let n = ((y1 - y0) * (x1 - x0)) as f32;
            let v = sum.map(|s| (s / n * 255.0).round().clamp(0.0, 255.0) as u8);
            *out = egui::Color32::from_rgb(v[0], v[1], v[2]);
        }
    });
}

/// A 64-bit FNV-1a hash of the composite settings, for the request key.
fn options_hash(o: &CompositeOptions) -> u64 {
    let text = format!("{o:?}");
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

impl AppState {
    /// The composite settings in effect (`Off` while the plain decode is shown).
    pub fn composite_options(&self) -> CompositeOptions {
        let s = &self.session.settings;
        let mut o = s.composite.clone();
        if s.show_decode {
            o.mode = CompositeMode::Off;
        }
        o
    }

    /// The active image's composite when the canvas shows it.
    pub fn full_res(&self) -> Option<&FullRes> {
        if self.composite_options().mode == CompositeMode::Off {
            return None;
        }
        self.active_doc().and_then(|d| d.full.as_ref())
    }

    /// Asks the worker for the active image's composite when its inputs changed.
    pub fn recomposite(&mut self) {
        let options = self.composite_options();
        let Some(i) = self.active else { return };
        // The other images let go of their full-resolution pictures (made again when shown).
        for (k, d) in self.docs.iter_mut().enumerate() {
            if k != i && d.full.is_some() {
                (d.full, d.composite_requested) = (None, None);
            }
        }
        let Some(doc) = self.docs.get(i) else { return };
        let Some(a) = doc.analysis.clone() else { return };
        if options.mode == CompositeMode::Off || !doc.is_ready() {
            return;
        }
        let (edit, mask, edit_key) = match &doc.edited {
            Some(e) => (e.image.clone(), e.mask.clone(), e.key),
            None => {
                let zeros = vec![0.0; a.latent.height * a.latent.width];
                (a.recon.clone(), Arc::new(zeros), 0)
            }
        };
        let key = edit_key ^ options_hash(&options).rotate_left(7) ^ (Arc::as_ptr(&a) as u64);
        if doc.composite_requested == Some(key) {
            return;
        }
        let request = CompositeRequest {
            doc: doc.id,
            key,
            path: doc.path.clone(),
            analysis: a,
            edit,
            mask,
            options,
        };
        self.docs[i].composite_requested = Some(key);
        self.worker.send(Job::Composite(Box::new(request)));
    }

    /// A composite from the worker: shown if it is the one asked for last.
    pub fn composited(&mut self, doc: u64, key: u64, result: Result<Box<FullRes>, String>) {
        let Some(d) = self.docs.iter_mut().find(|d| d.id == doc) else { return };
        match result {
            Ok(full) if d.composite_requested == Some(key) || d.full.is_none() => {
                d.full = Some(*full);
                d.version += 1;
            }
            // Superseded while it ran: the newer one is on its way.
            Ok(_) => {}
            Err(e) if e == "superseded" || e == CANCELLED => {
                if d.composite_requested == Some(key) {
                    d.composite_requested = None;
                }
            }
            Err(e) => {
                let text = format!("{}: composite failed: {e}", d.name);
                if d.composite_requested == Some(key) {
                    // Not asked again until something changes.
                    d.full = None;
                }
                self.notify(text, true);
            }
        }
    }
}
