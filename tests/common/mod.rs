//! Helpers shared by the integration tests (each test binary uses some of them).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fae_studio::fae::FaeConfig;

/// A tiny FAE on the built-in DINOv2-S at 56 px: fast enough for CPU tests.
pub fn tiny_architecture() -> FaeConfig {
    let mut cfg = FaeConfig::small("dinov2-small", 384, 14, 56);
    (cfg.enc_heads, cfg.dec_width, cfg.dec_depth, cfg.dec_heads) = (2, 64, 1, 2);
    (cfg.pix_width, cfg.pix_depth, cfg.pix_heads) = (64, 1, 2);
    cfg
}

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Runs the `fae-studio` binary that cargo built for the tests.
pub fn fae<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fae-studio")).args(args).output().expect("run fae-studio")
}

/// Runs `fae-studio`, which must succeed; returns its stdout.
pub fn run_ok<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> String {
    let res = fae(args);
    assert!(res.status.success(), "{args:?}: {}", String::from_utf8_lossy(&res.stderr));
    String::from_utf8_lossy(&res.stdout).into_owned()
}

/// A failure must be one clear line on stderr and a non-zero exit, never a panic.
pub fn assert_clean_failure(out: &Output, expect: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should fail: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line expected: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("on a bug"), "{stderr}");
    assert!(
        stderr.to_lowercase().contains(&expect.to_lowercase()),
        "expected `{expect}` in: {stderr}"
    );
}
