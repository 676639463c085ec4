//! Finding the files shipped under `assets/` (built-in weights, sample photos).

use std::path::PathBuf;

use anyhow::{Result, bail};

/// The assets folder: `FAE_STUDIO_ASSETS` if set, else `assets/` beside the executable or in the
/// source tree it was built from.
pub fn dir() -> Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(dir) = std::env::var_os("FAE_STUDIO_ASSETS") {
        candidates.push(PathBuf::from(dir));
    }
    if let Some(parent) = std::env::current_exe().ok().as_deref().and_then(|e| e.parent()) {
        candidates.push(parent.join("assets"));
    }
    candidates.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets"));
    match candidates.iter().find(|d| d.is_dir()) {
        Some(dir) => Ok(dir.clone()),
        None => bail!(
            "cannot find the assets folder; set FAE_STUDIO_ASSETS to the repository's assets/"
        ),
    }
}

/// A file inside the assets folder, which must exist.
pub fn path(name: &str) -> Result<PathBuf> {
    let path = dir()?.join(name);
    if !path.is_file() {
        bail!("built-in asset {} is missing", path.display());
    }
    Ok(path)
}
