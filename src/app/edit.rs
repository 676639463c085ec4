//! The editing panel's state: brush strokes, the transplant source, channel, blend and
//! direction sliders, harmonise (the panel's widgets are in `edit_panel`). Every change goes
//! through the editing engine: a slider being dragged is a previewed [`Edit`], committed to the
//! history with "Apply".
//!
//! Harmonise runs the generator, which lives on the worker: the edit enters the history when the
//! worker's result arrives, and a recipe that needs a result not computed yet (a restored
//! session) waits for it instead of failing.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use super::AppState;
use super::state::{BrushKind, Document};
use super::worker::{Job, NO_GENERATOR};
use crate::edit::mask::Mask;
use crate::edit::ops::{Edit, Harmonise, InterpMode, LatentSource};
use crate::grid::Grid;

/// Resolves recipe sources against the open images, the encoded folders and the generator's
/// harmonise results.
pub struct DocSource<'a> {
    pub docs: &'a [Document],
    pub folders: &'a HashMap<String, Vec<Grid>>,
    pub harmonised: &'a HarmoniseCache,
}

/// The generator's harmonise results, keyed by input latent, settings and generator.
#[derive(Default)]
pub struct HarmoniseCache {
    /// The ticket of the generator the results come from.
    pub generator: u64,
    done: HashMap<u64, Result<Grid, String>>,
    /// Results an edit asked for that are not computed yet (sent to the worker by
    /// [`AppState::request_harmonise`]).
    missing: RefCell<Vec<(u64, Grid, Harmonise)>>,
    in_flight: HashSet<u64>,
}

impl HarmoniseCache {
    /// The key of harmonising `latent` with `h`.
    pub fn key(&self, latent: &Grid, h: &Harmonise) -> u64 {
        let words = [latent.height as u64, latent.width as u64, latent.channels as u64]
            .into_iter()
            .chain(latent.data.iter().map(|v| v.to_bits() as u64))
            .chain([h.strength.to_bits() as u64, h.steps as u64, h.seed, self.generator])
            .chain(h.class.iter().flat_map(|c| c.bytes().map(u64::from)));
        words.fold(0xcbf2_9ce4_8422_2325, |acc, w| (acc ^ w).wrapping_mul(0x100_0000_01b3))
    }

    /// Forgets every result (another generator was loaded).
    pub fn reset(&mut self, generator: u64) {
        *self = Self { generator, ..Self::default() };
    }

    pub fn busy(&self) -> bool {
        !self.in_flight.is_empty()
    }
}

/// The error of a harmonise edit whose result is being computed.
const HARMONISE_PENDING: &str = "waiting for the generator";

impl LatentSource for DocSource<'_> {
    fn latent(&self, path: &str) -> Result<Grid> {
        let doc = self
            .docs
            .iter()
            .find(|d| d.key() == path)
            .with_context(|| format!("image {path} is not open in the library"))?;
        doc.analysis
            .as_ref()
            .map(|a| a.latent.clone())
            .with_context(|| format!("image {path} is not encoded yet"))
    }

    fn latents_in(&self, folder: &str) -> Result<Vec<Grid>> {
        self.folders
            .get(folder)
            .cloned()
            .with_context(|| format!("folder {folder} is not encoded yet (press \"Encode\")"))
    }

    fn harmonise(&self, latent: &Grid, h: &Harmonise) -> Result<Grid> {
        let cache = self.harmonised;
        let key = cache.key(latent, h);
        match cache.done.get(&key) {
            Some(Ok(grid)) => Ok(grid.clone()),
            Some(Err(e)) => bail!("{e}"),
            None => {
                cache.missing.borrow_mut().push((key, latent.clone(), h.clone()));
                bail!(HARMONISE_PENDING)
            }
        }
    }
}

/// Which slider is being previewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slider {
    Channel,
    Blend,
    Direction,
}

pub struct EditState {
    /// An edit shown but not yet in the history.
    pub preview: Option<Edit>,
    pub preview_from: Option<Slider>,
    /// The stroke being painted, in fractions of the image.
    pub stroke: Vec<[f32; 2]>,
    /// Transplant / blend source: a document id.
    pub source: Option<u64>,
    pub channel: usize,
    pub channel_factor: f32,
    pub channel_offset: f32,
    pub blend_t: f32,
    pub slerp: bool,
    pub positive: String,
    pub negative: String,
    pub direction: f32,
    pub seed: u64,
    pub harmonise_strength: f32,
    pub harmonise_steps: usize,
    pub harmonise_seed: u64,
    /// Harmonise only where the last edit was (its mask), not the whole image.
    pub harmonise_last_mask: bool,
    /// A harmonise edit waiting for the worker: (document id, result key, edit).
    pub pending_harmonise: Option<(u64, u64, Edit)>,
}

impl Default for EditState {
    fn default() -> Self {
        Self {
            preview: None,
            preview_from: None,
            stroke: Vec::new(),
            source: None,
            channel: 0,
            channel_factor: 1.0,
            channel_offset: 0.0,
            blend_t: 0.0,
            slerp: false,
            positive: String::new(),
            negative: String::new(),
            direction: 0.0,
            seed: 1,
            harmonise_strength: 0.3,
            harmonise_steps: 10,
            harmonise_seed: 0,
            harmonise_last_mask: false,
            pending_harmonise: None,
        }
    }
}

impl AppState {
    /// What edits resolve their sources against.
    pub fn source(&self) -> DocSource<'_> {
        DocSource { docs: &self.docs, folders: &self.folders, harmonised: &self.harmonised }
    }

    /// Why the Harmonise button cannot be used now, if it cannot.
    pub fn harmonise_blocked(&self) -> Option<&'static str> {
        if self.generate.generator.is_none() {
            Some(NO_GENERATOR)
        } else if self.active_doc().is_none_or(|d| d.history.is_none()) {
            Some("open an image and wait until it is encoded")
        } else if self.edit.pending_harmonise.is_some() {
            Some("harmonising…")
        } else {
            None
        }
    }

    /// Appends a `harmonise` edit to the active image: at once when its result is known, else
    /// when the worker has computed it.
    pub fn harmonise_active(&mut self) {
        if let Some(why) = self.harmonise_blocked() {
            self.notify(why, true);
            return;
        }
        let Some((doc, latent, last_mask)) = self.active_doc().and_then(|d| {
            let h = d.history.as_ref()?;
            let last_mask = h.recipe().edits.last().and_then(|e| e.mask()).cloned();
            Some((d.id, h.current().clone(), last_mask))
        }) else {
            return;
        };
        let e = &self.edit;
        let settings = Harmonise {
            strength: e.harmonise_strength,
            steps: e.harmonise_steps,
            seed: e.harmonise_seed,
            class: self.session.settings.generate.class.clone(),
        };
        let mask = match (e.harmonise_last_mask, last_mask) {
            (false, _) => None,
            (true, Some(m)) => Some(m),
            (true, None) => {
                self.notify("the last edit has no mask: paint a stroke first", true);
                return;
            }
        };
        let edit = harmonise_edit(&settings, mask);
        let key = self.harmonised.key(&latent, &settings);
        if self.harmonised.done.contains_key(&key) {
            self.push_edit(edit);
            return;
        }
        self.edit.pending_harmonise = Some((doc, key, edit));
        self.harmonised.in_flight.insert(key);
        self.worker.send(Job::Harmonise { key, latent: Arc::new(latent), settings });
    }

    /// Sends the harmonise results that edits asked for to the worker; true if any were asked
    /// for since the last call.
    pub fn request_harmonise(&mut self) -> bool {
        let missing = std::mem::take(&mut *self.harmonised.missing.borrow_mut());
        let asked = !missing.is_empty();
        for (key, latent, settings) in missing {
            if self.harmonised.done.contains_key(&key) || !self.harmonised.in_flight.insert(key) {
                continue;
            }
            self.worker.send(Job::Harmonise { key, latent: Arc::new(latent), settings });
        }
        asked
    }

    /// A harmonise result from the worker: the waiting edit enters its history, and recipes
    /// waiting for it are applied.
    pub fn harmonised(&mut self, key: u64, result: Result<Grid, String>) {
        self.harmonised.in_flight.remove(&key);
        self.harmonised.done.insert(key, result.clone());
        if let Some((doc, _, edit)) = self.edit.pending_harmonise.take_if(|p| p.1 == key) {
            let i = self.docs.iter().position(|d| d.id == doc);
            let settings = harmonise_settings(&edit);
            let current = i
                .and_then(|i| self.docs[i].history.as_ref())
                .zip(settings)
                .map(|(h, s)| self.harmonised.key(h.current(), &s));
            match (result, i) {
                (Err(e), _) => self.notify(e, true),
                (Ok(_), Some(i)) if current == Some(key) => {
                    self.push_edit_to(i, edit);
                }
                (Ok(_), _) => {
                    self.notify("the image changed while harmonising; press Harmonise again", true)
                }
            }
        }
        self.apply_pending_recipes(false);
    }

    /// True when `e` failed only because a harmonise result is being computed.
    pub fn is_harmonise_wait(e: &anyhow::Error) -> bool {
        format!("{e:#}").contains(HARMONISE_PENDING)
    }

    /// The source image for transplant and blend: the chosen one, else another open image.
    pub fn source_doc(&self) -> Option<&Document> {
        let active = self.active_doc().map(|d| d.id);
        self.edit
            .source
            .and_then(|id| self.doc_by_id(id))
            .filter(|d| Some(d.id) != active)
            .or_else(|| self.docs.iter().find(|d| Some(d.id) != active && d.is_ready()))
    }

    /// The edit a brush stroke through `points` makes with the current brush.
    pub fn brush_edit(&self, points: Vec<[f32; 2]>) -> Option<Edit> {
        let b = &self.session.settings.brush;
        let mask = Mask::stroke(points, b.radius.max(1e-3), b.hardness.clamp(0.0, 1.0));
        Some(match b.kind {
            BrushKind::Transplant => {
                Edit::Transplant { source: self.source_doc()?.key(), mask, strength: b.strength }
            }
            BrushKind::Noise => {
                Edit::Noise { seed: self.edit.seed, sigma: b.strength, mask: Some(mask) }
            }
            BrushKind::Smooth => Edit::Smooth {
                radius: None,
                sigma: Some(0.3 + 2.0 * b.strength.max(0.0)),
                mask: Some(mask),
            },
            BrushKind::Channel => Edit::ScaleChannels {
                channels: vec![self.edit.channel],
                factor: self.edit.channel_factor,
                mask: Some(mask),
            },
        })
    }

    /// A point of the stroke being painted (fractions of the image); shows it live.
    pub fn stroke_point(&mut self, p: [f32; 2]) {
        let min_step = self.session.settings.brush.radius * 0.3;
        if let Some(last) = self.edit.stroke.last() {
            let d = ((last[0] - p[0]).powi(2) + (last[1] - p[1]).powi(2)).sqrt();
            if d < min_step {
                return;
            }
        }
        self.edit.stroke.push(p);
        self.edit.preview = self.brush_edit(self.edit.stroke.clone());
        self.edit.preview_from = None;
        if self.edit.preview.is_none() {
            self.edit.stroke.clear();
            let text = "transplant needs a second open image as its source";
            if !self.notices.iter().any(|n| n.text == text) {
                self.notify(text, true);
            }
        }
    }

    /// Ends the stroke: it becomes one edit in the history.
    pub fn end_stroke(&mut self) {
        if self.edit.stroke.is_empty() {
            return;
        }
        let points = std::mem::take(&mut self.edit.stroke);
        self.edit.preview = None;
        if let Some(edit) = self.brush_edit(points)
            && self.push_edit(edit)
        {
            self.edit.seed = self.edit.seed.wrapping_add(1);
        }
    }

    /// Previews the edit a slider of the edit panel stands for (as dragging it does).
    pub fn set_slider_preview(&mut self, which: Slider) {
        let edit = match which {
            Slider::Channel => {
                let e = &self.edit;
                if e.channel_offset != 0.0 && e.channel_factor == 1.0 {
                    Some(Edit::OffsetChannels {
                        channels: vec![e.channel],
                        offset: e.channel_offset,
                        mask: None,
                    })
                } else {
                    Some(Edit::ScaleChannels {
                        channels: vec![e.channel],
                        factor: e.channel_factor,
                        mask: None,
                    })
                }
            }
            Slider::Blend => self.source_doc().map(|s| Edit::Interpolate {
                source: s.key(),
                t: self.edit.blend_t,
                mode: if self.edit.slerp { InterpMode::Slerp } else { InterpMode::Lerp },
            }),
            Slider::Direction => Some(Edit::Direction {
                positive: self.edit.positive.clone(),
                negative: self.edit.negative.clone(),
                strength: self.edit.direction,
                mask: None,
            }),
        };
        self.edit.preview = edit;
        self.edit.preview_from = Some(which);
    }

    /// Commits the previewed slider edit to the history.
    pub fn apply_preview(&mut self) {
        if let Some(edit) = self.edit.preview.take() {
            self.push_edit(edit);
        }
        self.edit.preview_from = None;
        self.edit.channel_factor = 1.0;
        self.edit.channel_offset = 0.0;
        self.edit.direction = 0.0;
    }
}

/// The `harmonise` edit with these settings.
fn harmonise_edit(h: &Harmonise, mask: Option<Mask>) -> Edit {
    Edit::Harmonise {
        strength: h.strength,
        steps: h.steps,
        seed: h.seed,
        class: h.class.clone(),
        mask,
    }
}

/// The settings of a `harmonise` edit.
fn harmonise_settings(edit: &Edit) -> Option<Harmonise> {
    match edit {
        Edit::Harmonise { strength, steps, seed, class, .. } => Some(Harmonise {
            strength: *strength,
            steps: *steps,
            seed: *seed,
            class: class.clone(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harmonise_keys_follow_the_latent_the_settings_and_the_generator() {
        let latent = Grid { height: 2, width: 2, channels: 2, data: vec![0.5; 8] };
        let h = Harmonise { strength: 0.3, steps: 10, seed: 1, class: None };
        let mut cache = HarmoniseCache::default();
        let key = cache.key(&latent, &h);
        assert_eq!(key, cache.key(&latent.clone(), &h.clone()));
        let mut other = latent.clone();
        other.data[7] = 0.25;
        assert_ne!(key, cache.key(&other, &h));
        for changed in [
            Harmonise { strength: 0.4, ..h.clone() },
            Harmonise { steps: 11, ..h.clone() },
            Harmonise { seed: 2, ..h.clone() },
            Harmonise { class: Some("a".into()), ..h.clone() },
        ] {
            assert_ne!(key, cache.key(&latent, &changed), "{changed:?}");
        }
        cache.reset(2);
        assert_ne!(key, cache.key(&latent, &h), "another generator, another result");
    }
}
