//! The library's file work, off the window's thread: listing the files and folders that were
//! dropped or chosen, and decoding thumbnails. One thread does both and answers each request as
//! soon as it is done (with a repaint), so thumbnails arrive one by one. Listings go before
//! waiting thumbnails, so a newly dropped folder appears at once even while a large one is still
//! being decoded.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};

use anyhow::Result;

use super::worker::{guard, images_in, is_image};
use crate::image_io;

/// Longest side of a thumbnail in pixels.
pub const THUMB: u32 = 72;

pub enum Request {
    /// Expand folders and check files; `ticket` names the answer.
    Open { ticket: u64, paths: Vec<PathBuf> },
    /// Decode a small picture of an image.
    Thumb { doc: u64, path: PathBuf },
}

pub enum Loaded {
    /// The image files found, in order, and one message per entry that could not be used.
    Listed {
        ticket: u64,
        files: Vec<PathBuf>,
        errors: Vec<String>,
    },
    Thumb {
        doc: u64,
        result: Result<egui::ColorImage, String>,
    },
}

pub struct Loader {
    tx: Sender<Request>,
    rx: Receiver<Loaded>,
    /// Requests sent whose answer has not been received.
    pending: usize,
}

impl Loader {
    /// Starts the thread; `repaint` is called after each answer.
    pub fn spawn(repaint: Arc<dyn Fn() + Send + Sync>) -> Self {
        let (tx, requests) = channel();
        let (answers, rx) = channel();
        std::thread::Builder::new()
            .name("fae-library".into())
            .spawn(move || serve(requests, answers, repaint))
            .expect("cannot start the library thread");
        Self { tx, rx, pending: 0 }
    }

    pub fn send(&mut self, request: Request) {
        if self.tx.send(request).is_ok() {
            self.pending += 1;
        }
    }

    /// Answers that arrived since the last call.
    pub fn poll(&mut self) -> Vec<Loaded> {
        let out: Vec<Loaded> = self.rx.try_iter().collect();
        self.pending = self.pending.saturating_sub(out.len());
        out
    }

    pub fn busy(&self) -> bool {
        self.pending > 0
    }
}

fn serve(
    requests: Receiver<Request>,
    answers: Sender<Loaded>,
    repaint: Arc<dyn Fn() + Send + Sync>,
) {
    let mut queue = VecDeque::new();
    loop {
        if queue.is_empty() {
            match requests.recv() {
                Ok(r) => queue.push_back(r),
                Err(_) => return,
            }
        }
        queue.extend(requests.try_iter());
        let listing = queue.iter().position(|r| matches!(r, Request::Open { .. }));
        let Some(next) = queue.remove(listing.unwrap_or(0)) else { continue };
        let answer = match next {
            Request::Open { ticket, paths } => {
                let (files, errors) = list(&paths);
                Loaded::Listed { ticket, files, errors }
            }
            Request::Thumb { doc, path } => {
                let result = guard(|| thumbnail(&path)).map_err(|e| format!("{e:#}"));
                Loaded::Thumb { doc, result }
            }
        };
        if answers.send(answer).is_err() {
            return;
        }
        repaint();
    }
}

/// The image files among `paths`, folders expanded (not recursively, sorted by name), and a
/// message for each entry that is missing, unreadable or not an image.
pub fn list(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<String>) {
    let (mut files, mut errors) = (Vec::new(), Vec::new());
    for p in paths {
        if p.is_dir() {
            match images_in(p) {
                Ok(list) if list.is_empty() => {
                    errors.push(format!("folder {} holds no images", p.display()))
                }
                Ok(list) => files.extend(list),
                Err(e) => errors.push(format!("{e:#}")),
            }
        } else if !p.exists() {
            errors.push(format!("{} does not exist", p.display()));
        } else if is_image(p) {
            files.push(p.clone());
        } else {
            errors.push(format!("{} is not an image this app can read", p.display()));
        }
    }
    (files, errors)
}

/// A picture of the image at most [`THUMB`] pixels on its longer side.
pub fn thumbnail(path: &Path) -> Result<egui::ColorImage> {
    let img = image_io::load_rgb(path)?;
    let (w, h) = img.dimensions();
    let scale = THUMB as f32 / w.max(h).max(1) as f32;
    let (tw, th) = (((w as f32 * scale) as u32).max(1), ((h as f32 * scale) as u32).max(1));
    let small = image::imageops::resize(&img, tw, th, image::imageops::FilterType::Triangle);
    let rgb = image_io::to_rgb8(&small);
    Ok(egui::ColorImage::from_rgb([tw as usize, th as usize], rgb.as_raw()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn answers(loader: &mut Loader, n: usize) -> Vec<Loaded> {
        let start = Instant::now();
        let mut out = Vec::new();
        while out.len() < n {
            assert!(start.elapsed() < Duration::from_secs(30), "timed out");
            out.extend(loader.poll());
            std::thread::sleep(Duration::from_millis(5));
        }
        out
    }

    #[test]
    fn folders_are_listed_and_thumbnails_arrive_off_the_calling_thread() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("photos");
        std::fs::create_dir(&folder).unwrap();
        image::RgbImage::from_pixel(200, 100, image::Rgb([200, 10, 10]))
            .save(folder.join("b.png"))
            .unwrap();
        image::RgbImage::new(30, 60).save(folder.join("a.png")).unwrap();
        std::fs::write(folder.join("notes.txt"), "x").unwrap();
        std::fs::write(dir.path().join("broken.png"), "not a png").unwrap();
        let missing = dir.path().join("gone.png");

        let mut loader = Loader::spawn(Arc::new(|| {}));
        let broken = dir.path().join("broken.png");
        loader.send(Request::Thumb { doc: 7, path: broken.clone() });
        loader.send(Request::Open { ticket: 1, paths: vec![folder.clone(), missing, broken] });
        assert!(loader.busy());
        let got = answers(&mut loader, 2);
        assert!(!loader.busy());
        let mut listed = false;
        for a in got {
            match a {
                Loaded::Listed { ticket, files, errors } => {
                    assert_eq!(ticket, 1);
                    let names: Vec<_> =
                        files.iter().map(|f| f.file_name().unwrap().to_owned()).collect();
                    assert_eq!(names, ["a.png", "b.png", "broken.png"]);
                    assert_eq!(errors.len(), 1, "{errors:?}");
                    assert!(errors[0].contains("gone.png does not exist"));
                    listed = true;
                }
                Loaded::Thumb { doc, result } => {
                    assert_eq!(doc, 7);
                    assert!(result.is_err(), "a damaged file is an error, not a crash");
                }
            }
        }
        assert!(listed);

        for (doc, name) in [(1, "a.png"), (2, "b.png")] {
            loader.send(Request::Thumb { doc, path: folder.join(name) });
        }
        let mut sizes: Vec<(u64, [usize; 2])> = answers(&mut loader, 2)
            .into_iter()
            .map(|a| match a {
                Loaded::Thumb { doc, result } => (doc, result.unwrap().size),
                Loaded::Listed { .. } => panic!("unexpected listing"),
            })
            .collect();
        sizes.sort();
        assert_eq!(sizes, [(1, [36, 72]), (2, [72, 36])]);
    }

    #[test]
    fn empty_folders_and_other_files_are_messages() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("a.txt");
        std::fs::write(&text, "x").unwrap();
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let (files, errors) = list(&[text, empty]);
        assert!(files.is_empty());
        assert!(errors[0].contains("not an image"), "{errors:?}");
        assert!(errors[1].contains("holds no images"), "{errors:?}");
    }
}
