//! Downloading an encoder from the Hugging Face hub with byte progress and cancellation, for the
//! app's models panel and the command line ([`super::source::download`] draws a progress bar).
//!
//! hf-hub's [`Progress`] callbacks cannot fail, so a cancel unwinds out of the transfer with a
//! private payload (no panic message) and is caught here; hf-hub's lock is released as the
//! unwinding drops it, and the partial `.part` file is resumed by the next download.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hf_hub::api::Progress;
use hf_hub::api::sync::{ApiBuilder, ApiError};

/// The files an encoder needs.
pub const FILES: [&str; 2] = ["config.json", "model.safetensors"];

/// Where to download from and to; `None` takes `HF_ENDPOINT` / `HF_HOME` (or their defaults).
#[derive(Clone, Debug, Default)]
pub struct Hub {
    pub endpoint: Option<String>,
    pub cache_dir: Option<PathBuf>,
}

/// How far a download is, shared between the downloading thread and the window.
#[derive(Debug, Default)]
pub struct Transfer {
    /// The file being fetched.
    pub file: Mutex<String>,
    pub done: AtomicU64,
    /// The file's size in bytes (0 until known).
    pub total: AtomicU64,
    pub cancel: AtomicBool,
}

impl Transfer {
    /// File name, bytes done, bytes in all.
    pub fn snapshot(&self) -> (String, u64, u64) {
        let file = self.file.lock().map(|f| f.clone()).unwrap_or_default();
        (file, self.done.load(Ordering::Relaxed), self.total.load(Ordering::Relaxed))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("the download was cancelled")]
    Cancelled,
    #[error(
        "offline: the Hugging Face hub cannot be reached ({0}); encoders already in the cache and \
         the built-in dinov2-small work without a connection"
    )]
    Offline(String),
    #[error("{0}")]
    Failed(String),
}

/// The unwinding payload of a cancel.
struct Cancelled;

struct Reporter(Arc<Transfer>);

impl Progress for Reporter {
    fn init(&mut self, size: usize, filename: &str) {
        if let Ok(mut f) = self.0.file.lock() {
            *f = filename.to_string();
        }
        self.0.total.store(size as u64, Ordering::Relaxed);
        self.0.done.store(0, Ordering::Relaxed);
    }

    fn update(&mut self, size: usize) {
        if self.0.cancel.load(Ordering::Relaxed) {
            std::panic::resume_unwind(Box::new(Cancelled));
        }
        self.0.done.fetch_add(size as u64, Ordering::Relaxed);
    }

    fn finish(&mut self) {}
}

/// Fetches an encoder's files into the cache (a cached copy is used without the network) and
/// returns the weights' path.
pub fn download(
    repo_id: &str,
    hub: &Hub,
    transfer: &Arc<Transfer>,
) -> Result<PathBuf, DownloadError> {
    let cache = match &hub.cache_dir {
        Some(dir) => hf_hub::Cache::new(dir.clone()),
        None => hf_hub::Cache::from_env(),
    };
    let cached = cache.model(repo_id.to_string());
    if let (Some(_), Some(weights)) = (cached.get(FILES[0]), cached.get(FILES[1])) {
        return Ok(weights);
    }
    if std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v == "true") {
        return Err(DownloadError::Offline("HF_HUB_OFFLINE is set".into()));
    }
    let mut builder = ApiBuilder::from_cache(cache).with_progress(false).with_retries(0);
    if let Some(e) = hub.endpoint.clone().or_else(|| std::env::var("HF_ENDPOINT").ok()) {
        builder = builder.with_endpoint(e);
    }
    let api = builder.build().map_err(|e| DownloadError::Failed(format!("hub client: {e}")))?;
    let repo = api.model(repo_id.to_string());
    let mut path = PathBuf::new();
    for file in FILES {
        let reporter = Reporter(transfer.clone());
        let fetched = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            repo.download_with_progress(file, reporter)
        }));
        path = match fetched {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return Err(classify(repo_id, file, e)),
            Err(payload) if payload.is::<Cancelled>() => return Err(DownloadError::Cancelled),
            Err(payload) => std::panic::resume_unwind(payload),
        };
    }
    Ok(path)
}

/// Tells "no connection" apart from everything else.
fn classify(repo_id: &str, file: &str, e: ApiError) -> DownloadError {
    match e {
        ApiError::RequestError(inner) => match *inner {
            ureq::Error::Transport(t) => DownloadError::Offline(t.to_string()),
            ureq::Error::Status(404, _) => {
                DownloadError::Failed(format!("{repo_id} has no {file} on the hub (HTTP 404)"))
            }
            ureq::Error::Status(code, _) => {
                DownloadError::Failed(format!("cannot download {file} of {repo_id}: HTTP {code}"))
            }
        },
        other => DownloadError::Failed(format!("cannot download {file} of {repo_id}: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::time::Duration;

    /// A minimal hub: serves `resolve/main/<file>` with the headers hf-hub reads, `delay`
    /// between 4 KiB chunks.
    fn serve(files: Vec<(&'static str, Vec<u8>)>, delay: Duration) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let files = files.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let (mut path, mut start) = (String::new(), 0usize);
                    let mut line = String::new();
                    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                        if line.starts_with("GET ") {
                            path = line.split(' ').nth(1).unwrap_or("").to_string();
                        }
                        if let Some(r) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                            start = r.trim().trim_end_matches('-').parse().unwrap_or(0);
                        }
                        line.clear();
                    }
                    let Some(i) = files.iter().position(|(n, _)| path.ends_with(n)) else {
                        let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                        return;
                    };
                    let body = &files[i].1;
                    let part = &body[start.min(body.len())..];
                    let head = format!(
                        "HTTP/1.1 206 Partial Content\r\netag: \"etag{i}\"\r\n\
                         x-repo-commit: 0123abcd\r\ncontent-range: bytes {start}-{}/{}\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len().saturating_sub(1),
                        body.len(),
                        part.len()
                    );
                    let _ = stream.write_all(head.as_bytes());
                    for chunk in part.chunks(4096) {
                        if stream.write_all(chunk).is_err() {
                            return;
                        }
                        std::thread::sleep(delay);
                    }
                });
            }
        });
        format!("http://{addr}")
    }

    fn weights(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn downloads_report_bytes_and_land_in_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let body = weights(50_000);
        let endpoint = serve(
            vec![
                ("org/enc/resolve/main/config.json", b"{}".to_vec()),
                ("/model.safetensors", body.clone()),
            ],
            Duration::ZERO,
        );
        let hub = Hub { endpoint: Some(endpoint), cache_dir: Some(dir.path().into()) };
        let transfer = Arc::new(Transfer::default());
        let path = download("org/enc", &hub, &transfer).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), body);
        assert_eq!(transfer.snapshot(), ("model.safetensors".into(), 50_000, 50_000));
        // A second call is answered from the cache, without the network.
        let offline = Hub { endpoint: Some("http://127.0.0.1:9".into()), ..hub };
        assert_eq!(download("org/enc", &offline, &Arc::new(Transfer::default())).unwrap(), path);
    }

    #[test]
    fn a_download_can_be_cancelled_and_an_unreachable_hub_is_offline() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = serve(
            vec![
                ("/config.json", b"{}".to_vec()),
                ("org/enc/resolve/main/model.safetensors", weights(400_000)),
            ],
            Duration::from_millis(5),
        );
        let hub = Hub { endpoint: Some(endpoint), cache_dir: Some(dir.path().into()) };
        let transfer = Arc::new(Transfer::default());
        let t = transfer.clone();
        let h = hub.clone();
        let job = std::thread::spawn(move || download("org/enc", &h, &t));
        while transfer.snapshot().1 == 0 || transfer.snapshot().0 != "model.safetensors" {
            std::thread::sleep(Duration::from_millis(2));
        }
        transfer.cancel.store(true, Ordering::Relaxed);
        let result = job.join().unwrap();
        assert!(matches!(result, Err(DownloadError::Cancelled)), "{result:?}");
        assert!(transfer.snapshot().1 < 400_000);

        let missing = download("org/other", &hub, &Arc::new(Transfer::default()));
        assert!(matches!(&missing, Err(DownloadError::Failed(e)) if e.contains("404")));

        let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let hub = Hub { endpoint: Some(format!("http://{closed}")), cache_dir: hub.cache_dir };
        let e = download("org/other", &hub, &Arc::new(Transfer::default())).unwrap_err();
        assert!(matches!(e, DownloadError::Offline(_)), "{e:?}");
        assert!(e.to_string().starts_with("offline: the Hugging Face hub cannot be reached"));
    }
}
