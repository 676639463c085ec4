//! Undo/redo over a recipe, with every intermediate latent cached.
//!
//! `states[i]` is the latent after the first `i` edits (`states[0]` is the base), so undo and
//! redo are O(1) and never recompute: undo shows exactly the latent that was shown before the
//! edit, which is also exactly what replaying the shorter recipe gives (edits are deterministic).
//!
//! A regenerator polls [`History::generation`]: it changes on every change of the recipe or the
//! base, and is unique in the process, so "same generation" means "nothing to redo".

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Result;

use crate::edit::ops::{Edit, LatentSource};
use crate::edit::recipe::{Recipe, apply_numbered};
use crate::grid::Grid;

/// Generations come from one process-wide counter, so two histories (or a history replaced by a
/// new one) never share a value and a stale one is never mistaken for current.
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

fn next_generation() -> u64 {
    NEXT_GENERATION.fetch_add(1, Ordering::Relaxed)
}

/// An editing session: the applied edits, the undone ones that can be redone, and the latent
/// after each step.
#[derive(Clone, Debug)]
pub struct History {
    recipe: Recipe,
    /// `states[i]`: the latent after the first `i` edits of `recipe`; never empty.
    states: Vec<Grid>,
    /// Undone edits with the latent each produced; the most recently undone is last.
    redo: Vec<(Edit, Grid)>,
    generation: u64,
}

impl History {
    /// A session on `base` with no edits.
    pub fn new(base: Grid) -> Self {
        Self {
            recipe: Recipe::default(),
            states: vec![base],
            redo: Vec::new(),
            generation: next_generation(),
        }
    }

    /// A session on `base` with `recipe` already applied (each step cached, so it can be undone).
    pub fn from_recipe(base: Grid, recipe: &Recipe, ctx: &dyn LatentSource) -> Result<Self> {
        recipe.validate()?;
        let mut history = Self::new(base);
        for edit in &recipe.edits {
            history.push(edit.clone(), ctx)?;
        }
        history.generation = next_generation();
        Ok(history)
    }

    /// The latent with no edits applied.
    pub fn base(&self) -> &Grid {
        &self.states[0]
    }

    /// The latent after every applied edit.
    pub fn current(&self) -> &Grid {
        self.states.last().expect("states is never empty")
    }

    /// The latent after the first `steps` edits, if there are that many.
    pub fn state(&self, steps: usize) -> Option<&Grid> {
        self.states.get(steps)
    }

    /// The applied edits, as a recipe that replays to [`History::current`].
    pub fn recipe(&self) -> &Recipe {
        &self.recipe
    }

    /// The edits that [`History::redo`] would re-apply, next one first.
    pub fn redo_edits(&self) -> impl Iterator<Item = &Edit> {
        self.redo.iter().rev().map(|(edit, _)| edit)
    }

    /// How many edits are applied.
    pub fn len(&self) -> usize {
        self.recipe.edits.len()
    }

    /// Whether no edit is applied.
    pub fn is_empty(&self) -> bool {
        self.recipe.edits.is_empty()
    }

    /// Whether there is an edit to undo.
    pub fn can_undo(&self) -> bool {
        !self.is_empty()
    }

    /// Whether there is an undone edit to redo.
    pub fn can_redo(&self) -> bool {
        !self.redo.is_empty()
    }

    /// Changes whenever the recipe or the base changes; see the module docs.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether anything changed since [`History::generation`] returned `generation`.
    pub fn changed_since(&self, generation: u64) -> bool {
        self.generation != generation
    }

    /// Applies `edit` to the current latent and appends it; the redo list is dropped. On error
    /// (naming the edit's would-be index) nothing changes.
    pub fn push(&mut self, edit: Edit, ctx: &dyn LatentSource) -> Result<&Grid> {
        let latent = apply_numbered(self.len(), &edit, self.current(), ctx)?;
        self.recipe.edits.push(edit);
        self.states.push(latent);
        self.redo.clear();
        self.generation = next_generation();
        Ok(self.current())
    }

    /// Takes back the last edit and returns the latent before it, or `None` with nothing to undo.
    pub fn undo(&mut self) -> Option<&Grid> {
        let edit = self.recipe.edits.pop()?;
        let latent = self.states.pop().expect("one state per edit");
        self.redo.push((edit, latent));
        self.generation = next_generation();
        Some(self.current())
    }

    /// Re-applies the most recently undone edit (from the cache, not recomputed) and returns the
    /// latent after it, or `None` with nothing to redo.
    pub fn redo(&mut self) -> Option<&Grid> {
        let (edit, latent) = self.redo.pop()?;
        self.recipe.edits.push(edit);
        self.states.push(latent);
        self.generation = next_generation();
        Some(self.current())
    }

    /// Drops every edit, applied and undone, keeping the base.
    pub fn clear(&mut self) {
        if self.is_empty() && self.redo.is_empty() {
            return;
        }
        self.recipe.edits.clear();
        self.states.truncate(1);
        self.redo.clear();
        self.generation = next_generation();
    }

    /// Replays every edit, applied and undone, on a new base (or on the same base after the
    /// images the edits refer to have changed). On error nothing changes.
    pub fn rebase(&mut self, base: Grid, ctx: &dyn LatentSource) -> Result<()> {
        let mut states = vec![base];
        for (i, edit) in self.recipe.edits.iter().enumerate() {
            let next = apply_numbered(i, edit, states.last().expect("non-empty"), ctx)?;
            states.push(next);
        }
        let mut latent = states.last().expect("non-empty").clone();
        let mut redo = Vec::with_capacity(self.redo.len());
        // Redo entries are re-applied in the order redo would apply them: last pushed first.
        for (k, (edit, _)) in self.redo.iter().rev().enumerate() {
            latent = apply_numbered(self.len() + k, edit, &latent, ctx)?;
            redo.push((edit.clone(), latent.clone()));
        }
        redo.reverse();
        self.states = states;
        self.redo = redo;
        self.generation = next_generation();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edit::mask::Mask;
    use crate::edit::ops::fixtures::{grid, source};

    fn bits(g: &Grid) -> Vec<u32> {
        g.data.iter().map(|v| v.to_bits()).collect()
    }

    fn edits() -> Vec<Edit> {
        vec![
            Edit::Transplant {
                source: "B.png".into(),
                mask: Mask::rect(0.0, 0.0, 0.5, 1.0),
                strength: 1.0,
            },
            Edit::Noise {
                seed: 3,
                sigma: 0.2,
                mask: Some(Mask::stroke(vec![[0.5, 0.5]], 0.3, 0.2)),
            },
            Edit::Smooth { radius: None, sigma: Some(1.0), mask: None },
        ]
    }

    #[test]
    fn undo_restores_the_earlier_latent_exactly() {
        let (base, ctx) = (grid(6, 8, 4, 1), source());
        let mut h = History::new(base.clone());
        let mut seen = vec![bits(&base)];
        for e in edits() {
            seen.push(bits(h.push(e, &ctx).unwrap()));
        }
        assert_eq!(h.len(), 3);
        for steps in (0..3).rev() {
            let shown = bits(h.undo().unwrap());
            assert_eq!(shown, seen[steps]);
            // Replaying the remaining recipe from scratch gives the same bits as the cache.
            assert_eq!(bits(&h.recipe().replay(&base, &ctx).unwrap()), seen[steps]);
        }
        assert!(h.undo().is_none());
        assert_eq!(bits(h.current()), bits(&base));
    }

    #[test]
    fn redo_reapplies_and_push_drops_the_redo_list() {
        let (base, ctx) = (grid(6, 8, 4, 1), source());
        let mut h = History::new(base.clone());
        for e in edits() {
            h.push(e, &ctx).unwrap();
        }
        let after_all = bits(h.current());
        h.undo();
        h.undo();
        assert!(h.can_redo());
        assert_eq!(h.redo_edits().map(Edit::name).collect::<Vec<_>>(), ["noise", "smooth"]);
        h.redo();
        h.redo();
        assert!(h.redo().is_none());
        assert_eq!(bits(h.current()), after_all);
        assert_eq!(h.recipe().edits, edits());

        h.undo();
        h.push(Edit::ZeroChannels { channels: vec![0], mask: None }, &ctx).unwrap();
        assert!(!h.can_redo());
        assert_eq!(h.len(), 3);
        assert_eq!(h.recipe().edits[2].name(), "zero_channels");
        assert_eq!(bits(&h.recipe().replay(&base, &ctx).unwrap()), bits(h.current()));
    }

    #[test]
    fn clear_keeps_the_base() {
        let (base, ctx) = (grid(6, 8, 4, 1), source());
        let mut h = History::new(base.clone());
        for e in edits() {
            h.push(e, &ctx).unwrap();
        }
        h.undo();
        h.clear();
        assert!(h.is_empty() && !h.can_undo() && !h.can_redo());
        assert_eq!(bits(h.current()), bits(&base));
    }

    #[test]
    fn failed_push_changes_nothing_and_names_the_edit() {
        let (base, ctx) = (grid(6, 8, 4, 1), source());
        let mut h = History::new(base);
        h.push(edits().remove(0), &ctx).unwrap();
        h.push(edits().remove(1), &ctx).unwrap();
        h.undo();
        let (generation, current) = (h.generation(), bits(h.current()));
        let bad = Edit::Blend { source: "missing.png".into(), strength: 1.0, mask: None };
        let e = format!("{:#}", h.push(bad, &ctx).unwrap_err());
        assert!(e.starts_with("edit 1 (blend): source `missing.png`"), "{e}");
        assert_eq!(h.len(), 1);
        assert!(h.can_redo());
        assert_eq!(bits(h.current()), current);
        assert!(!h.changed_since(generation));
    }

    #[test]
    fn generation_tracks_changes() {
        let ctx = source();
        let mut h = History::new(grid(6, 8, 4, 1));
        let g0 = h.generation();
        assert!(!h.changed_since(g0));
        h.push(edits().remove(0), &ctx).unwrap();
        let g1 = h.generation();
        assert!(h.changed_since(g0));
        h.undo();
        assert!(h.changed_since(g1));
        let g2 = h.generation();
        h.clear();
        h.clear();
        assert!(h.changed_since(g2), "clearing a redo list is a change");
        let g3 = h.generation();
        h.clear();
        assert!(!h.changed_since(g3), "clearing nothing is not");
        assert_ne!(History::new(grid(1, 1, 4, 1)).generation(), h.generation());
        // Content fingerprints meanwhile follow the recipe itself.
        assert_eq!(h.recipe().fingerprint(), Recipe::default().fingerprint());
    }

    #[test]
    fn from_recipe_and_rebase_match_replay() {
        let (base, ctx) = (grid(6, 8, 4, 1), source());
        let recipe = Recipe::new(edits());
        let mut h = History::from_recipe(base.clone(), &recipe, &ctx).unwrap();
        assert_eq!(bits(h.current()), bits(&recipe.replay(&base, &ctx).unwrap()));
        assert_eq!(
            bits(h.state(1).unwrap()),
            bits(&Recipe::new(edits()[..1].to_vec()).replay(&base, &ctx).unwrap())
        );

        h.undo();
        let other = grid(6, 8, 4, 2);
        h.rebase(other.clone(), &ctx).unwrap();
        assert_eq!(bits(h.base()), bits(&other));
        assert_eq!(
            bits(h.current()),
            bits(&Recipe::new(edits()[..2].to_vec()).replay(&other, &ctx).unwrap())
        );
        h.redo();
        assert_eq!(bits(h.current()), bits(&recipe.replay(&other, &ctx).unwrap()));

        // A base of the wrong shape fails on the transplant and leaves the session as it was.
        let before = bits(h.current());
        let e = format!("{:#}", h.rebase(grid(3, 4, 4, 1), &ctx).unwrap_err());
        assert!(e.starts_with("edit 0 (transplant): source `B.png`"), "{e}");
        assert_eq!(bits(h.current()), before);
    }
}
