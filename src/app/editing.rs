//! Edits of the open images: recipes rebuilt into histories, regeneration requests, undo and
//! redo, recipe files.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;

use super::AppState;
use super::state::{DocStatus, Document, Edited};
use super::worker::Job;
use crate::edit::history::History;
use crate::edit::recipe::Recipe;

impl AppState {
    /// Rebuilds histories from recipes (from the session or a file) once their sources are
    /// ready. With `force`, recipes still waiting on missing sources fail with a notice.
    pub fn apply_pending_recipes(&mut self, force: bool) {
        for i in 0..self.docs.len() {
            if !self.docs[i].is_ready() {
                continue;
            }
            let Some(recipe) = self.docs[i].pending_recipe.clone() else { continue };
            let base = match &self.docs[i].analysis {
                Some(a) => a.latent.clone(),
                None => continue,
            };
            let result = History::from_recipe(base, &recipe, &self.source());
            match result {
                Ok(h) => {
                    let d = &mut self.docs[i];
                    d.history = Some(h);
                    d.pending_recipe = None;
                    d.requested = None;
                }
                Err(e) if Self::is_harmonise_wait(&e) => {
                    // Applied again when the generator's result arrives.
                    self.request_harmonise();
                }
                Err(e) => {
                    let waiting = self.docs.iter().any(|d| !d.is_ready())
                        && !matches!(self.docs[i].status, DocStatus::Failed(_));
                    if force || !waiting {
                        let text = format!("{}: recipe not applied: {e:#}", self.docs[i].name);
                        self.docs[i].pending_recipe = None;
                        self.notify(text, true);
                    }
                }
            }
        }
    }

    /// The active image's edits plus the edit being previewed (a stroke in progress, a slider
    /// being dragged).
    fn effective_recipe(&self, doc: &Document) -> Option<Recipe> {
        let h = doc.history.as_ref()?;
        let mut r = h.recipe().clone();
        if let Some(p) = &self.edit.preview {
            r.edits.push(p.clone());
        }
        Some(r)
    }

    /// Sends the active image's edited latent for regeneration when its recipe changed.
    pub fn regenerate(&mut self) {
        let Some(i) = self.active else { return };
        let Some(doc) = self.docs.get(i) else { return };
        if !doc.is_ready() || self.model.is_none() {
            return;
        }
        let Some(recipe) = self.effective_recipe(doc) else { return };
        let key =
            recipe.fingerprint() ^ doc.id.rotate_left(17) ^ self.model_generation.rotate_left(41);
        if doc.requested == Some(key) {
            return;
        }
        let (Some(h), Some(a)) = (doc.history.as_ref(), doc.analysis.as_ref()) else { return };
        let latent = match &self.edit.preview {
            None => h.current().clone(),
            Some(edit) => match edit.apply(h.current(), &self.source()) {
                Ok(l) => l,
                Err(e) => {
                    let text = format!("{e:#}");
                    self.edit.preview = None;
                    self.notify(text, true);
                    return;
                }
            },
        };
        let id = doc.id;
        let grid = (a.latent.height, a.latent.width);
        let mask = match recipe.token_mask(grid.0, grid.1) {
            Ok(m) => Arc::new(m),
            Err(e) => {
                let text = format!("{e:#}");
                self.edit.preview = None;
                self.notify(text, true);
                return;
            }
        };
        if recipe.edits.is_empty() {
            let edited = Edited {
                key,
                latent: Arc::new(latent),
                mask,
                image: a.recon.clone(),
                restored: a.restored.clone(),
                ms: 0.0,
            };
            let d = &mut self.docs[i];
            d.edited = Some(edited);
            d.requested = Some(key);
            d.version += 1;
            return;
        }
        self.docs[i].requested = Some(key);
        self.sent = Some((key, Instant::now()));
        self.worker.send(Job::Decode { doc: id, key, latent: Arc::new(latent), mask });
    }

    /// Applies `edit` to the active image's history.
    pub fn push_edit(&mut self, edit: crate::edit::ops::Edit) -> bool {
        let Some(i) = self.active else { return false };
        self.push_edit_to(i, edit)
    }

    /// Applies `edit` to the history of document `i`.
    pub fn push_edit_to(&mut self, i: usize, edit: crate::edit::ops::Edit) -> bool {
        let Some(mut h) = self.docs.get_mut(i).and_then(|d| d.history.take()) else {
            return false;
        };
        let result = h.push(edit, &self.source()).map(|_| ());
        self.docs[i].history = Some(h);
        match result {
            Ok(()) => true,
            Err(e) => {
                self.notify(format!("{e:#}"), true);
                false
            }
        }
    }

    pub fn undo(&mut self) -> bool {
        self.edit.preview = None;
        self.active_doc_mut().and_then(|d| d.history.as_mut()).is_some_and(|h| h.undo().is_some())
    }

    pub fn redo(&mut self) -> bool {
        self.edit.preview = None;
        self.active_doc_mut().and_then(|d| d.history.as_mut()).is_some_and(|h| h.redo().is_some())
    }

    /// Saves the active image's recipe as JSON.
    pub fn save_recipe(&mut self, path: &Path) -> Result<()> {
        let doc = self.active_doc().ok_or_else(|| anyhow::anyhow!("no image is open"))?;
        let h = doc.history.as_ref().ok_or_else(|| anyhow::anyhow!("the image is not ready"))?;
        h.recipe().save(path)
    }

    /// Loads a recipe and applies it to the active image (replacing its edits).
    pub fn load_recipe(&mut self, path: &Path) -> Result<()> {
        let recipe = Recipe::load(path)?;
        let i = self.active.ok_or_else(|| anyhow::anyhow!("no image is open"))?;
        let base = self.docs[i]
            .analysis
            .as_ref()
            .map(|a| a.latent.clone())
            .ok_or_else(|| anyhow::anyhow!("the image is not ready"))?;
        match History::from_recipe(base, &recipe, &self.source()) {
            Ok(h) => self.docs[i].history = Some(h),
            // Applied when the generator's results arrive.
            Err(e) if Self::is_harmonise_wait(&e) => {
                self.docs[i].pending_recipe = Some(recipe);
                self.request_harmonise();
            }
            Err(e) => return Err(e),
        }
        self.edit.preview = None;
        Ok(())
    }
}
