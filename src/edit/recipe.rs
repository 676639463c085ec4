//! Recipes: a versioned list of edits, saved as JSON and replayed on a base latent.
//!
//! ```json
//! {"version": 1, "edits": [
//!   {"op": "transplant", "source": "B.png", "mask": {"rect": [0.5, 0, 1, 1]}, "strength": 1.0}
//! ]}
//! ```
//!
//! Edits are numbered from 0, like their position in `edits`; every error about one starts with
//! `edit N (op)`.

use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::edit::ops::{Edit, LatentSource};
use crate::fsutil::write_atomic;
use crate::grid::Grid;
use crate::text::{clip, json_error};

/// The only recipe version this build reads and writes.
pub const RECIPE_VERSION: u32 = 1;

/// A list of edits to replay, in order, on a base latent.
///
/// Deserialising (through serde or [`Recipe::from_json`]) checks the version and every edit, and
/// errors name the edit's index and op.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Recipe {
    /// Format version; must be [`RECIPE_VERSION`].
    pub version: u32,
    /// The edits, applied first to last.
    pub edits: Vec<Edit>,
}

impl Default for Recipe {
    fn default() -> Self {
        Self { version: RECIPE_VERSION, edits: Vec::new() }
    }
}

impl Recipe {
    /// A recipe of the current version holding `edits`.
    pub fn new(edits: Vec<Edit>) -> Self {
        Self { version: RECIPE_VERSION, edits }
    }

    /// Parses a recipe from JSON text.
    pub fn from_json(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text).context("recipe is not valid JSON")?;
        Self::from_value(value)
    }

    /// Builds a recipe from parsed JSON. Each edit is parsed on its own, so an error names its
    /// index and op instead of serde's position in the text.
    pub fn from_value(value: Value) -> Result<Self> {
        let Value::Object(mut obj) = value else {
            bail!("a recipe is a JSON object like {{\"version\": 1, \"edits\": [...]}}");
        };
        if let Some(key) = obj.keys().find(|k| *k != "version" && *k != "edits") {
            let key = clip(key);
            bail!("unknown recipe field `{key}` (a recipe has `version` and `edits`)");
        }
        let version = obj.get("version").context("recipe has no `version` (use 1)")?;
        let version = version.as_u64().with_context(|| {
            format!("recipe `version` must be a whole number, got {}", clip(&version.to_string()))
        })?;
        ensure!(
            version == RECIPE_VERSION as u64,
            "recipe version {version} is not supported: this build reads version {RECIPE_VERSION}"
        );
        let Some(Value::Array(items)) = obj.remove("edits") else {
            bail!("recipe needs an `edits` list");
        };
        let edits =
            items.into_iter().enumerate().map(|(i, v)| parse_edit(i, v)).collect::<Result<_>>()?;
        Ok(Self { version: RECIPE_VERSION, edits })
    }

    /// JSON with one edit per line (readable, and diffs show which edit changed), ending in a
    /// newline.
    pub fn to_json(&self) -> Result<String> {
        let mut out = format!("{{\n  \"version\": {},\n  \"edits\": [", self.version);
        for (i, edit) in self.edits.iter().enumerate() {
            out += if i == 0 { "\n    " } else { ",\n    " };
            out += &serde_json::to_string(edit)?;
        }
        out += if self.edits.is_empty() { "]\n}\n" } else { "\n  ]\n}\n" };
        Ok(out)
    }

    /// Reads and parses a recipe file; errors name the file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read recipe {}", path.display()))?;
        Self::from_json(&text).with_context(|| format!("recipe {}", path.display()))
    }

    /// Writes the recipe as JSON, atomically (temporary file in the same folder, then rename),
    /// after checking it, so a file on disk is always a whole, loadable recipe.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.validate().with_context(|| format!("not saving recipe {}", path.display()))?;
        write_atomic(path, self.to_json()?.as_bytes())
    }

    /// Checks the version and every edit's parameters (not its sources or channel ranges, which
    /// need the latents).
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.version == RECIPE_VERSION,
            "recipe version {} is not supported: this build reads version {RECIPE_VERSION}",
            self.version
        );
        for (i, edit) in self.edits.iter().enumerate() {
            edit.validate().with_context(|| label(i, edit))?;
        }
        Ok(())
    }

    /// Applies every edit in order to `base`. An empty recipe returns `base` unchanged; errors
    /// read `` edit 3 (transplant): source `B.png`: ... `` (the op's own error last).
    pub fn replay(&self, base: &Grid, ctx: &dyn LatentSource) -> Result<Grid> {
        self.validate()?;
        let mut latent = base.clone();
        for (i, edit) in self.edits.iter().enumerate() {
            latent = apply_numbered(i, edit, &latent, ctx)?;
        }
        Ok(latent)
    }

    /// Where the recipe may change the latent of a `height x width` grid: per token, the
    /// largest mask weight of its edits, an edit without a mask covering every token. All zeros
    /// for an empty recipe.
    pub fn token_mask(&self, height: usize, width: usize) -> Result<Vec<f32>> {
        let mut union = vec![0.0f32; height * width];
        for (i, edit) in self.edits.iter().enumerate() {
            match edit.mask() {
                Some(mask) => {
                    let weights = mask.rasterise(height, width).with_context(|| label(i, edit))?;
                    union.iter_mut().zip(weights).for_each(|(u, w)| *u = u.max(w));
                }
                None => union.fill(1.0),
            }
        }
        Ok(union)
    }

    /// A 64-bit FNV-1a hash of the recipe's compact JSON: equal recipes hash equal, in every run
    /// and build, so a regenerator can skip work when the recipe has not changed.
    pub fn fingerprint(&self) -> u64 {
        let json = serde_json::to_string(self).unwrap_or_default();
        json.bytes()
            .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
    }
}

impl<'de> Deserialize<'de> for Recipe {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Recipe::from_value(value).map_err(|e| serde::de::Error::custom(format!("{e:#}")))
    }
}

/// Applies edit number `index`, labelling any error with it.
pub(crate) fn apply_numbered(
    index: usize,
    edit: &Edit,
    latent: &Grid,
    ctx: &dyn LatentSource,
) -> Result<Grid> {
    edit.apply(latent, ctx).with_context(|| label(index, edit))
}

fn label(index: usize, edit: &Edit) -> String {
    format!("edit {index} ({})", edit.name())
}

fn parse_edit(i: usize, value: Value) -> Result<Edit> {
    let op = match value.get("op") {
        Some(Value::String(op)) => op.clone(),
        Some(other) => bail!("edit {i}: `op` must be a string, got {}", clip(&other.to_string())),
        None if value.is_object() => {
            bail!("edit {i}: missing `op` (one of {})", Edit::OPS.join(", "))
        }
        None => bail!("edit {i}: expected an object like {{\"op\": \"blend\", ...}}"),
    };
    ensure!(
        Edit::OPS.contains(&op.as_str()),
        "edit {i}: unknown op `{}` (known ops: {})",
        clip(&op),
        Edit::OPS.join(", ")
    );
    let edit: Edit = serde_json::from_value(value)
        .map_err(json_error)
        .with_context(|| format!("edit {i} ({op})"))?;
    edit.validate().with_context(|| format!("edit {i} ({op})"))?;
    Ok(edit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edit::mask::Mask;
    use crate::edit::ops::InterpMode;
    use crate::edit::ops::fixtures::{grid, source};

    fn bits(g: &Grid) -> Vec<u32> {
        g.data.iter().map(|v| v.to_bits()).collect()
    }

    /// One edit of every op.
    fn every_op() -> Recipe {
        let stroke = Mask::stroke(vec![[0.1, 0.1], [0.5, 0.6], [0.9, 0.2]], 0.08, 0.4);
        Recipe::new(vec![
            Edit::Transplant {
                source: "B.png".into(),
                mask: Mask::rect(0.5, 0.0, 1.0, 1.0),
                strength: 1.0,
            },
            Edit::Blend { source: "C.png".into(), strength: 0.3, mask: None },
            Edit::ScaleChannels { channels: vec![0, 3], factor: 1.5, mask: Some(stroke.clone()) },
            Edit::OffsetChannels {
                channels: vec![1],
                offset: -0.25,
                mask: Some(
                    Mask::union(vec![stroke, Mask::rect(0.0, 0.0, 0.2, 0.2)]).feathered(0.05),
                ),
            },
            Edit::ZeroChannels {
                channels: vec![2],
                mask: Some(Mask::rect(0.0, 0.5, 1.0, 1.0).inverted()),
            },
            Edit::Noise { seed: 12345678901234, sigma: 0.1, mask: Some(Mask::all()) },
            Edit::Smooth { radius: None, sigma: Some(0.8), mask: None },
            Edit::Smooth { radius: Some(1), sigma: None, mask: None },
            Edit::Interpolate { source: "D.png".into(), t: 0.25, mode: InterpMode::Slerp },
            Edit::Arithmetic {
                add: vec!["C.png".into()],
                subtract: vec!["B.png".into()],
                strength: 0.5,
            },
            Edit::Direction {
                positive: "smiling".into(),
                negative: "neutral".into(),
                strength: 1.0,
                mask: None,
            },
        ])
    }

    fn error(json: &str) -> String {
        format!("{:#}", Recipe::from_json(json).unwrap_err())
    }

    #[test]
    fn empty_recipe_returns_the_base_unchanged() {
        let base = grid(6, 8, 4, 1);
        let out = Recipe::default().replay(&base, &source()).unwrap();
        assert_eq!(bits(&out), bits(&base));
        let parsed = Recipe::from_json(r#"{"version": 1, "edits": []}"#).unwrap();
        assert_eq!(bits(&parsed.replay(&base, &source()).unwrap()), bits(&base));
    }

    #[test]
    fn replay_applies_edits_in_order() {
        let (base, ctx) = (grid(6, 8, 4, 1), source());
        let recipe = every_op();
        let mut expected = base.clone();
        for e in &recipe.edits {
            expected = e.apply(&expected, &ctx).unwrap();
        }
        let out = recipe.replay(&base, &ctx).unwrap();
        assert_eq!(bits(&out), bits(&expected));
        assert_ne!(out, base);
        // Deterministic: a second replay is bit-identical.
        assert_eq!(bits(&recipe.replay(&base, &ctx).unwrap()), bits(&out));
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        let recipe = every_op();
        recipe.save(&path).unwrap();
        assert_eq!(Recipe::load(&path).unwrap(), recipe);
        assert_eq!(Recipe::from_json(&recipe.to_json().unwrap()).unwrap(), recipe);
        // One edit per line, between four lines of framing.
        assert_eq!(recipe.to_json().unwrap().lines().count(), recipe.edits.len() + 5);
        assert_eq!(
            Recipe::from_json(&Recipe::default().to_json().unwrap()).unwrap(),
            Recipe::default()
        );
        assert_eq!(serde_json::from_str::<Recipe>(&recipe.to_json().unwrap()).unwrap(), recipe);
        // Only the recipe is left in the folder: the temporary file was renamed over it.
        let names: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec!["r.json"]);
        // Saving again replaces the file.
        Recipe::default().save(&path).unwrap();
        assert_eq!(Recipe::load(&path).unwrap(), Recipe::default());
    }

    #[test]
    fn readme_example_parses() {
        let r = Recipe::from_json(
            r#"{"version": 1, "edits": [
                {"op": "transplant", "source": "B.png", "mask": {"rect": [0.5, 0.0, 1.0, 1.0]}, "strength": 1.0}
            ]}"#,
        )
        .unwrap();
        assert_eq!(r.edits.len(), 1);
        assert_eq!(r.edits[0].name(), "transplant");
    }

    #[test]
    fn bad_recipes_name_the_edit() {
        let ok = r#"{"op": "noise", "seed": 1, "sigma": 0.1}"#;
        let with = |bad: &str| format!(r#"{{"version": 1, "edits": [{ok}, {ok}, {bad}]}}"#);

        let e = error(&with(r#"{"op": "frobnicate", "x": 1}"#));
        assert!(e.contains("edit 2: unknown op `frobnicate`") && e.contains("transplant"), "{e}");

        let e = error(&with(r#"{"op": "transplant", "mask": {"all": true}}"#));
        assert!(e.contains("edit 2 (transplant): missing field `source`"), "{e}");

        let e = error(&with(
            r#"{"op": "transplant", "source": "B.png", "mask": {"rect": [0, 0, 1.5, 1]}}"#,
        ));
        assert!(
            e.contains("edit 2 (transplant): ") && e.contains("x1 = 1.5 is outside [0, 1]"),
            "{e}"
        );

        let e = error(&with(
            r#"{"op": "blend", "source": "B.png", "strength": 0.5, "mask": {"stroke": {"points": [[0.5, 0.5]], "radius": -1}}}"#,
        ));
        assert!(e.contains("edit 2 (blend): ") && e.contains("radius must be > 0"), "{e}");

        let e =
            error(&with(r#"{"op": "blend", "source": "B.png", "strength": 0.5, "strenght": 1}"#));
        assert!(e.contains("edit 2 (blend): unknown field `strenght`"), "{e}");

        let e = error(&with(r#"{"op": "smooth"}"#));
        assert!(e.contains("edit 2 (smooth): give exactly one of"), "{e}");

        let e = error(&with(r#"{"seed": 1}"#));
        assert!(e.contains("edit 2: missing `op`"), "{e}");

        let e = error(&with(r#""blend""#));
        assert!(e.contains("edit 2: expected an object"), "{e}");

        let e = error(&with(r#"{"op": "noise", "seed": "x", "sigma": 1}"#));
        assert!(e.contains("edit 2 (noise): invalid type"), "{e}");
    }

    #[test]
    fn bad_recipe_files_name_the_file_and_the_edit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.json");
        std::fs::write(&path, r#"{"version": 1, "edits": [{"op": "zero_channels"}]}"#).unwrap();
        let e = format!("{:#}", Recipe::load(&path).unwrap_err());
        assert!(
            e.contains("bad.json")
                && e.contains("edit 0 (zero_channels): missing field `channels`"),
            "{e}"
        );
        let e = format!("{:#}", Recipe::load(&dir.path().join("none.json")).unwrap_err());
        assert!(e.contains("cannot read recipe") && e.contains("none.json"), "{e}");
    }

    #[test]
    fn bad_top_level_is_explained() {
        assert!(error(r#"{"version": 2, "edits": []}"#).contains("version 2 is not supported"));
        assert!(error(r#"{"edits": []}"#).contains("no `version`"));
        assert!(error(r#"{"version": 1}"#).contains("needs an `edits` list"));
        assert!(
            error(r#"{"version": 1, "edits": [], "edit": []}"#)
                .contains("unknown recipe field `edit`")
        );
        assert!(error(r#"[1, 2]"#).contains("a recipe is a JSON object"));
        assert!(error(r#"{"version": 1, "edits": ["#).contains("not valid JSON"));
    }

    #[test]
    fn unresolvable_source_names_the_edit_and_the_source() {
        let mut recipe = every_op();
        recipe
            .edits
            .insert(3, Edit::Blend { source: "missing.png".into(), strength: 0.5, mask: None });
        let e = format!("{:#}", recipe.replay(&grid(6, 8, 4, 1), &source()).unwrap_err());
        assert!(e.starts_with("edit 3 (blend): source `missing.png`: no such image"), "{e}");

        let bad_folder = Recipe::new(vec![Edit::Direction {
            positive: "nowhere".into(),
            negative: "neutral".into(),
            strength: 1.0,
            mask: None,
        }]);
        let e = format!("{:#}", bad_folder.replay(&grid(6, 8, 4, 1), &source()).unwrap_err());
        assert!(e.starts_with("edit 0 (direction): folder `nowhere`: no such folder"), "{e}");

        let bad_channel = Recipe::new(vec![
            Edit::Noise { seed: 1, sigma: 0.1, mask: None },
            Edit::ZeroChannels { channels: vec![9], mask: None },
        ]);
        let e = format!("{:#}", bad_channel.replay(&grid(6, 8, 4, 1), &source()).unwrap_err());
        assert!(e.starts_with("edit 1 (zero_channels): channel 9 is out of range"), "{e}");
    }

    #[test]
    fn invalid_recipes_built_in_code_are_not_saved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        let recipe = Recipe::new(vec![Edit::Noise { seed: 1, sigma: -1.0, mask: None }]);
        let e = format!("{:#}", recipe.save(&path).unwrap_err());
        assert!(e.contains("edit 0 (noise): sigma must be >= 0"), "{e}");
        assert!(!path.exists());
        assert!(recipe.replay(&grid(2, 2, 4, 1), &source()).is_err());
    }

    #[test]
    fn every_json_example_in_recipes_md_parses() {
        let doc = include_str!("../../README.md");
        let mut ops_seen = std::collections::BTreeSet::new();
        let mut blocks = 0;
        for block in doc.split("```json\n").skip(1) {
            let json = block.split("```").next().unwrap();
            blocks += 1;
            let value: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"));
            if value.get("version").is_some() {
                let recipe = Recipe::from_value(value).unwrap_or_else(|e| panic!("{e:#}: {json}"));
                ops_seen.extend(recipe.edits.iter().map(Edit::name));
            } else if value.get("op").is_some() {
                let recipe =
                    Recipe::from_value(serde_json::json!({"version": 1, "edits": [value]}));
                let edit = &recipe.unwrap_or_else(|e| panic!("{e:#}: {json}")).edits[0];
                ops_seen.insert(edit.name());
            } else {
                let mask: Mask =
                    serde_json::from_value(value).unwrap_or_else(|e| panic!("{e}: {json}"));
                mask.rasterise(16, 16).unwrap();
            }
        }
        assert!(blocks >= Edit::OPS.len() + 4);
        assert_eq!(ops_seen.len(), Edit::OPS.len(), "an op lacks an example: {ops_seen:?}");
    }

    #[test]
    fn fingerprint_follows_content() {
        let a = every_op();
        let mut b = every_op();
        assert_eq!(a.fingerprint(), b.fingerprint());
        b.edits.pop();
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_ne!(Recipe::default().fingerprint(), a.fingerprint());
    }

    #[test]
    fn token_mask_is_the_union_of_the_edits_masks() {
        assert_eq!(Recipe::default().token_mask(2, 4).unwrap(), vec![0.0; 8]);
        let left = Edit::Transplant {
            source: "B.png".into(),
            mask: Mask::rect(0.0, 0.0, 0.25, 1.0),
            strength: 1.0,
        };
        let right =
            Edit::ZeroChannels { channels: vec![0], mask: Some(Mask::rect(0.75, 0.0, 1.0, 1.0)) };
        let masked = Recipe::new(vec![left.clone(), right]);
        assert_eq!(masked.token_mask(1, 4).unwrap(), vec![1.0, 0.0, 0.0, 1.0]);
        // An edit without a mask covers the whole image.
        let whole = Edit::ScaleChannels { channels: vec![0], factor: 2.0, mask: None };
        assert_eq!(Recipe::new(vec![left, whole]).token_mask(1, 4).unwrap(), vec![1.0; 4]);
    }
}
