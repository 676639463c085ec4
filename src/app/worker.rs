//! One background thread owns the model and the generator: the window sends it jobs through a
//! channel and polls the replies each frame, so the interface never waits on a model call.
//!
//! Rapid regeneration requests are coalesced: of several queued decodes of one image only the
//! newest runs, so painting stays live however slow the decoder is. A cancel flag drops the
//! queued work; a panic inside a model call becomes an error reply, not a crash.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Result, anyhow};

use super::composite::{CompositeRequest, Compositor, FullRes};
pub use super::jobs::{analyse, analyse_latent, decode, images_in, is_image};
use super::jobs::{encode_folder, generate, load, load_generator, open_image};
use super::state::Analysis;
use crate::backend::BackendChoice;
use crate::edit::ops::Harmonise;
use crate::fae::{Fae, FaeConfig};
use crate::generator::{FaeRef, Generator, SampleOptions};
use crate::grid::Grid;

/// Work for the model thread.
pub enum Job {
    /// Load a checkpoint (the built-in model when `path` is `None`) on a backend.
    LoadModel { path: Option<PathBuf>, backend: BackendChoice, generation: u64 },
    /// Encode an image, reconstruct it and measure it.
    Encode { doc: u64, path: PathBuf, size: Option<usize>, generation: u64 },
    /// Decode an edited latent; `mask` (the edits' token mask) comes back with the picture.
    Decode { doc: u64, key: u64, latent: Arc<Grid>, mask: Arc<Vec<f32>> },
    /// Composite the decoded edit into the photo at the photo's resolution.
    Composite(Box<CompositeRequest>),
    /// Encode every image of a folder (for direction edits).
    EncodeFolder { folder: PathBuf, size: Option<usize> },
    /// Load a generator for the model in use (the built-in one when `path` is `None`).
    LoadGenerator { path: Option<PathBuf>, ticket: u64 },
    /// Sample new latents and decode them.
    Generate { ticket: u64, request: GenerateRequest, progress: Arc<GenerateProgress> },
    /// Run the generator's SDEdit on a latent (a `harmonise` edit); `key` names the result.
    Harmonise { key: u64, latent: Arc<Grid>, settings: Harmonise },
}

/// What the Generate panel asks for.
#[derive(Clone, Debug)]
pub struct GenerateRequest {
    /// `None`: unconditional.
    pub class: Option<String>,
    pub n: usize,
    pub seed: u64,
    pub options: SampleOptions,
}

/// A generation's progress, shared with the window, and its own cancel flag.
#[derive(Debug, Default)]
pub struct GenerateProgress {
    pub steps_done: AtomicUsize,
    pub steps_total: AtomicUsize,
    pub decoded: AtomicUsize,
    pub cancel: AtomicBool,
}

/// One generated image: its latent (normalised) and the decoded picture.
pub struct Generated {
    pub latent: Grid,
    pub image: image::Rgb32FImage,
}

/// Facts about the loaded generator, for the Generate panel.
#[derive(Clone, Debug)]
pub struct GeneratorInfo {
    pub name: String,
    pub path: Option<PathBuf>,
    pub classes: Vec<String>,
    pub grid: (usize, usize),
    pub width: usize,
    pub depth: usize,
    pub step: u64,
    pub load_ms: f64,
}

/// Facts about the loaded model, for the status bar and the models panel.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    pub name: String,
    pub path: Option<PathBuf>,
    pub config: FaeConfig,
    pub step: u64,
    pub backend: String,
    pub adapter: String,
    pub encoder_dim: usize,
    pub generation: u64,
    pub load_ms: f64,
    /// The checkpoint's sha256 (generators and generated latents are tied to it).
    pub sha256: String,
}

pub enum Reply {
    Model {
        generation: u64,
        result: Result<Box<ModelInfo>, String>,
    },
    Encoded {
        doc: u64,
        generation: u64,
        result: Result<Box<Analysis>, String>,
    },
    Decoded {
        doc: u64,
        key: u64,
        latent: Arc<Grid>,
        mask: Arc<Vec<f32>>,
        result: Result<Box<DecodeOut>, String>,
    },
    Composited {
        doc: u64,
        key: u64,
        result: Result<Box<FullRes>, String>,
    },
    Folder {
        folder: PathBuf,
        result: Result<Vec<Grid>, String>,
    },
    Generator {
        ticket: u64,
        result: Result<Box<GeneratorInfo>, String>,
    },
    Generated {
        ticket: u64,
        result: Result<Vec<Generated>, String>,
    },
    Harmonised {
        key: u64,
        result: Result<Grid, String>,
    },
}

pub struct DecodeOut {
    pub image: image::Rgb32FImage,
    pub restored: Grid,
    pub ms: f64,
}

/// What the worker is doing now, for the status bar.
#[derive(Clone, Debug, Default)]
pub struct Progress {
    pub label: String,
    pub busy: bool,
    pub started: Option<Instant>,
    /// Jobs waiting behind the current one.
    pub queued: usize,
}

pub struct Worker {
    tx: Sender<Job>,
    rx: Receiver<Reply>,
    pub progress: Arc<Mutex<Progress>>,
    pub cancel: Arc<AtomicBool>,
    /// Jobs sent whose reply has not been received.
    pub outstanding: usize,
}

impl Worker {
    /// Starts the model thread; `repaint` is called after each reply.
    pub fn spawn(repaint: Arc<dyn Fn() + Send + Sync>) -> Self {
        let (tx, job_rx) = channel::<Job>();
        let (reply_tx, rx) = channel::<Reply>();
        let progress = Arc::new(Mutex::new(Progress::default()));
        let cancel = Arc::new(AtomicBool::new(false));
        let (p, c) = (progress.clone(), cancel.clone());
        std::thread::Builder::new()
            .name("fae-model".into())
            .spawn(move || run(job_rx, reply_tx, p, c, repaint))
            .expect("cannot start the model thread");
        Self { tx, rx, progress, cancel, outstanding: 0 }
    }

    pub fn send(&mut self, job: Job) {
        if self.tx.send(job).is_ok() {
            self.outstanding += 1;
        }
    }

    /// Replies that arrived since the last call.
    pub fn poll(&mut self) -> Vec<Reply> {
        let mut out = Vec::new();
        while let Ok(r) = self.rx.try_recv() {
            self.outstanding = self.outstanding.saturating_sub(1);
            out.push(r);
        }
        out
    }

    pub fn busy(&self) -> bool {
        self.outstanding > 0
    }

    /// Drops the queued jobs (their replies come back as "cancelled").
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    pub fn progress(&self) -> Progress {
        self.progress.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

pub(super) const CANCELLED: &str = "cancelled";

/// Why harmonise cannot run.
pub const NO_GENERATOR: &str = "harmonise needs a generator: load one in the Models panel";

fn run(
    jobs: Receiver<Job>,
    replies: Sender<Reply>,
    progress: Arc<Mutex<Progress>>,
    cancel: Arc<AtomicBool>,
    repaint: Arc<dyn Fn() + Send + Sync>,
) {
    let mut fae: Option<Arc<Fae>> = None;
    // The loaded model's file and checksum (generators and generated latents are checked
    // against it).
    let mut fae_ref: Option<FaeRef> = None;
    let mut generator: Option<Generator> = None;
    let mut generation = 0u64;
    let mut compositor = Compositor::default();
    let set = |label: &str, busy: bool, queued: usize| {
        if let Ok(mut p) = progress.lock() {
            p.label = label.to_string();
            p.busy = busy;
            p.queued = queued;
            p.started = busy.then(Instant::now);
        }
    };
    loop {
        let Ok(first) = jobs.recv() else { return };
        let mut batch = vec![first];
        loop {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return,
            }
        }
        let batch = coalesce(batch, &replies);
        let total = batch.len();
        for (i, job) in batch.into_iter().enumerate() {
            let cancelled = cancel.load(Ordering::Relaxed);
            let reply = match job {
                Job::LoadModel { path, backend: choice, generation: g } => {
                    set("Loading the model", true, total - i - 1);
                    generation = g;
                    (fae, fae_ref, generator) = (None, None, None);
                    let result = guard(|| load(path.as_deref(), choice, g)).map(|(f, r, info)| {
                        (fae, fae_ref) = (Some(Arc::new(f)), Some(r));
                        info
                    });
                    Reply::Model {
                        generation: g,
                        result: result.map(Box::new).map_err(|e| format!("{e:#}")),
                    }
                }
                Job::Encode { doc, path, size, generation: g } => {
                    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                    set(&format!("Encoding {}", name.unwrap_or_default()), true, total - i - 1);
                    let result = if cancelled {
                        Err(CANCELLED.to_string())
                    } else {
                        match &fae {
                            Some(f) if g == generation => {
                                guard(|| open_image(f, fae_ref.as_ref(), &path, size))
                                    .map_err(|e| format!("{e:#}"))
                            }
                            _ => Err("no model is loaded".to_string()),
                        }
                    };
                    Reply::Encoded { doc, generation: g, result: result.map(Box::new) }
                }
                Job::Decode { doc, key, latent, mask } => {
                    set("Regenerating", true, total - i - 1);
                    let result = if cancelled {
                        Err(CANCELLED.to_string())
                    } else {
                        match &fae {
                            Some(f) => guard(|| decode(f, &latent)).map_err(|e| format!("{e:#}")),
                            None => Err("no model is loaded".to_string()),
                        }
                    };
                    Reply::Decoded { doc, key, latent, mask, result: result.map(Box::new) }
                }
                Job::Composite(request) => {
                    set("Compositing the photo", true, total - i - 1);
                    let (doc, key) = (request.doc, request.key);
                    let result = if cancelled {
                        Err(CANCELLED.to_string())
                    } else {
                        guard(|| compositor.run(*request, &cancel)).map_err(|e| format!("{e:#}"))
                    };
                    Reply::Composited { doc, key, result: result.map(Box::new) }
                }
                Job::EncodeFolder { folder, size } => {
                    set(&format!("Encoding folder {}", folder.display()), true, total - i - 1);
                    let result = if cancelled {
                        Err(CANCELLED.to_string())
                    } else {
                        match &fae {
                            Some(f) => guard(|| encode_folder(f, &folder, size, &cancel))
                                .map_err(|e| format!("{e:#}")),
                            None => Err("no model is loaded".to_string()),
                        }
                    };
                    Reply::Folder { folder, result }
                }
                Job::LoadGenerator { path, ticket } => {
                    set("Loading the generator", true, total - i - 1);
                    generator = None;
                    let result = match (&fae, &fae_ref) {
                        (Some(f), Some(r)) => {
                            guard(|| load_generator(path.as_deref(), f.clone(), r)).map(|(g, i)| {
                                generator = Some(g);
                                Box::new(i)
                            })
                        }
                        _ => Err(anyhow!("load an FAE model first")),
                    };
                    Reply::Generator { ticket, result: result.map_err(|e| format!("{e:#}")) }
                }
                Job::Generate { ticket, request, progress } => {
                    set("Generating", true, total - i - 1);
                    let result = match &generator {
                        _ if cancelled => Err(CANCELLED.to_string()),
                        Some(g) => guard(|| generate(g, &request, &progress, &cancel))
                            .map_err(|e| format!("{e:#}")),
                        None => Err("no generator is loaded".to_string()),
                    };
                    Reply::Generated { ticket, result }
                }
                Job::Harmonise { key, latent, settings } => {
                    set("Harmonising", true, total - i - 1);
                    let result = match &generator {
                        Some(g) => guard(|| g.harmonise(&latent, &settings))
                            .map_err(|e| format!("harmonise: {e:#}")),
                        None => Err(NO_GENERATOR.to_string()),
                    };
                    Reply::Harmonised { key, result }
                }
            };
            if replies.send(reply).is_err() {
                return;
            }
            repaint();
        }
        cancel.store(false, Ordering::Relaxed);
        set("", false, 0);
        repaint();
    }
}

/// Keeps only the newest decode and the newest composite of each image; the dropped ones are
/// answered as superseded so the sender's count of outstanding jobs stays right.
fn coalesce(batch: Vec<Job>, replies: &Sender<Reply>) -> Vec<Job> {
    let mut newest = std::collections::HashMap::new();
    for (i, job) in batch.iter().enumerate() {
        match job {
            Job::Decode { doc, .. } => newest.insert((*doc, false), i),
            Job::Composite(r) => newest.insert((r.doc, true), i),
            _ => None,
        };
    }
    fn superseded<T>() -> Result<T, String> {
        Err("superseded".to_string())
    }
    batch
        .into_iter()
        .enumerate()
        .filter_map(|(i, job)| match job {
            Job::Decode { doc, key, latent, mask } if newest.get(&(doc, false)) != Some(&i) => {
                let _ =
                    replies.send(Reply::Decoded { doc, key, latent, mask, result: superseded() });
                None
            }
            Job::Composite(r) if newest.get(&(r.doc, true)) != Some(&i) => {
                let _ = replies.send(Reply::Composited {
                    doc: r.doc,
                    key: r.key,
                    result: superseded(),
                });
                None
            }
            other => Some(other),
        })
        .collect()
}

/// Runs a model call, turning a panic into an error.
pub(super) fn guard<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            Err(anyhow!(crate::bug::report("this step", &crate::bug::panic_text(payload.as_ref()))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(doc: u64, key: u64) -> Job {
        Job::Decode { doc, key, latent: Arc::new(Grid::zeros(1, 1, 1)), mask: Arc::new(vec![0.0]) }
    }

    #[test]
    fn only_the_newest_decode_of_each_image_runs() {
        let (tx, rx) = channel();
        let batch = vec![
            decode(1, 10),
            decode(2, 20),
            Job::EncodeFolder { folder: PathBuf::from("f"), size: None },
            decode(1, 11),
            decode(1, 12),
        ];
        let kept = coalesce(batch, &tx);
        let keys: Vec<(u64, u64)> = kept
            .iter()
            .filter_map(|j| match j {
                Job::Decode { doc, key, .. } => Some((*doc, *key)),
                _ => None,
            })
            .collect();
        assert_eq!(keys, [(2, 20), (1, 12)]);
        assert_eq!(kept.len(), 3, "other jobs are kept");
        // The dropped ones are answered, so the window's count of outstanding jobs stays right.
        let superseded: Vec<u64> = rx
            .try_iter()
            .map(|r| match r {
                Reply::Decoded { key, result: Err(e), .. } if e == "superseded" => key,
                _ => panic!("unexpected reply"),
            })
            .collect();
        assert_eq!(superseded, [10, 11]);
    }

    fn composite(doc: u64, key: u64) -> Job {
        let picture = image::Rgb32FImage::new(2, 2);
        let grid = Grid::zeros(1, 1, 1);
        let analysis = Analysis {
            image: picture.clone(),
            features: grid.clone(),
            latent: grid.clone(),
            recon: picture.clone(),
            restored: grid.clone(),
            cycle: grid,
            psnr: 0.0,
            ssim: 0.0,
            feature_cosine: 0.0,
            cycle_cosine: 0.0,
            encode_ms: 0.0,
            decode_ms: 0.0,
        };
        Job::Composite(Box::new(CompositeRequest {
            doc,
            key,
            path: PathBuf::from("p.png"),
            analysis: Arc::new(analysis),
            edit: picture,
            mask: Arc::new(vec![0.0]),
            options: Default::default(),
        }))
    }

    #[test]
    fn only_the_newest_composite_of_each_image_runs() {
        let (tx, rx) = channel();
        let batch = vec![composite(1, 10), decode(1, 5), composite(1, 11), composite(2, 20)];
        let kept = coalesce(batch, &tx);
        let keys: Vec<(u64, u64)> = kept
            .iter()
            .filter_map(|j| match j {
                Job::Composite(r) => Some((r.doc, r.key)),
                _ => None,
            })
            .collect();
        assert_eq!(keys, [(1, 11), (2, 20)]);
        assert_eq!(kept.len(), 3, "the decode is kept");
        let superseded: Vec<u64> = rx
            .try_iter()
            .map(|r| match r {
                Reply::Composited { key, result: Err(e), .. } if e == "superseded" => key,
                _ => panic!("unexpected reply"),
            })
            .collect();
        assert_eq!(superseded, [10]);
    }
}
