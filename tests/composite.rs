//! Compositing edits into photos: through files of every kind (8-bit, 16-bit, JPEG, non-square)
//! with the library, and end to end through the command line with the built-in model.

use std::path::{Path, PathBuf};
use std::process::Command;

use fae_studio::composite::{CompositeMode, CompositeOptions, Placement, composite};
use fae_studio::fsutil::write_photo_png;
use fae_studio::image_io::{is_high_bit_depth, load_rgb};
use image::{DynamicImage, Rgb, Rgb32FImage};

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/samples")
}

/// Writes test photos of each kind into `dir`: an 8-bit non-square PNG, a JPEG, a 16-bit
/// non-square PNG whose values use all 16 bits, and a square 8-bit PNG.
fn photos(dir: &Path) -> Vec<PathBuf> {
    let chelsea = image::open(samples().join("chelsea.png")).unwrap();
    let png = dir.join("chelsea.png");
    chelsea.save(&png).unwrap();
    let jpg = dir.join("chelsea.jpg");
    chelsea.to_rgb8().save(&jpg).unwrap();
    let deep = image::ImageBuffer::<Rgb<u16>, _>::from_fn(301, 203, |x, y| {
        Rgb([(x * 217 + y * 13) as u16, (x * y * 7 + 1) as u16, 65535 - (y * 300) as u16])
    });
    let png16 = dir.join("deep.png");
    DynamicImage::ImageRgb16(deep).save(&png16).unwrap();
    let square = dir.join("astronaut.png");
    image::open(samples().join("astronaut.png")).unwrap().save(&square).unwrap();
    vec![png, jpg, png16, square]
}

/// The file's pixels as 16-bit values (8-bit files widened the same way on both sides).
fn pixels16(path: &Path) -> (bool, Vec<u16>) {
    let img = image::open(path).unwrap();
    let deep = matches!(img, DynamicImage::ImageRgb16(_) | DynamicImage::ImageRgba16(_));
    (deep, img.to_rgb16().into_raw())
}

fn composite_file(photo: &Path, mask: &[f32], out: &Path) {
    let original = load_rgb(photo).unwrap();
    let placement = Placement::centre_crop(original.dimensions(), (224, 224), (16, 16));
    let decode = Rgb32FImage::from_pixel(224, 224, Rgb([0.9, 0.2, 0.1]));
    let options = CompositeOptions {
        mode: CompositeMode::Mask,
        feather: 20.0,
        color_match: true,
        ..Default::default()
    };
    let photo_out = composite(&original, None, &decode, mask, &placement, &options).unwrap();
    write_photo_png(out, photo_out, is_high_bit_depth(photo).unwrap()).unwrap();
}

#[test]
fn no_edit_composites_to_the_photo_bit_for_bit_in_its_own_depth() {
    let tmp = tempfile::tempdir().unwrap();
    for photo in photos(tmp.path()) {
        let out = tmp.path().join("out.png");
        composite_file(&photo, &[0.0; 256], &out);
        let (deep_in, want) = pixels16(&photo);
        let (deep_out, got) = pixels16(&out);
        assert_eq!(deep_in, deep_out, "{}: output depth", photo.display());
        assert!(want == got, "{}: pixels differ", photo.display());
    }
}

#[test]
fn an_edit_leaves_pixels_far_from_it_bit_for_bit_in_its_own_depth() {
    let tmp = tempfile::tempdir().unwrap();
    // The top-left quarter of the token grid.
    let mask: Vec<f32> =
        (0..256).map(|i| if i / 16 < 8 && i % 16 < 8 { 1.0 } else { 0.0 }).collect();
    for photo in photos(tmp.path()) {
        let out = tmp.path().join("out.png");
        composite_file(&photo, &mask, &out);
        let (w, h) = image::image_dimensions(&photo).unwrap();
        let placement = Placement::centre_crop((w, h), (224, 224), (16, 16));
        let ((_, want), (_, got)) = (pixels16(&photo), pixels16(&out));
        let (mut same, mut changed) = (0, 0);
        for y in 0..h {
            for x in 0..w {
                let i = (y * w + x) as usize * 3;
                let inside = placement.token_at(x, y).is_some_and(|(r, c)| r < 8 && c < 8);
                // Farther than the feather (20 px) from every edited pixel: beyond the edited
                // tokens' rectangle grown by 20 px.
                let (right, bottom) = (
                    placement.crop[0] + placement.crop[2] / 2.0,
                    placement.crop[1] + placement.crop[3] / 2.0,
                );
                let far = x as f64 > right + 21.0 || y as f64 > bottom + 21.0;
                if far {
                    assert_eq!(want[i..i + 3], got[i..i + 3], "{} ({x}, {y})", photo.display());
                    same += 1;
                }
                changed += (inside && want[i..i + 3] != got[i..i + 3]) as usize;
            }
        }
        assert!(same > 0 && changed > 0, "{}: {same} kept, {changed} changed", photo.display());
    }
}

fn fae(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fae-studio"))
        .args(["--backend", "cpu"])
        .args(args)
        .output()
        .expect("run fae-studio")
}

fn ok(out: &std::process::Output) {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The built-in model through the command line: compositing an empty recipe gives back the
/// photo (451 x 300) bit for bit, the default still gives the plain reconstruction, and a
/// masked edit changes the photo only around its mask.
#[test]
fn the_command_line_composites_with_the_built_in_model() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let photo = samples().join("chelsea.png");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    std::fs::write(d.join("empty.json"), r#"{"version": 1, "edits": []}"#).unwrap();
    let edit = |recipe: &str, out: &str, extra: &[&str]| {
        let mut args =
            vec!["edit", "--image", &s(&photo)].into_iter().map(String::from).collect::<Vec<_>>();
        args.extend(["--recipe".into(), s(&d.join(recipe)), "--out".into(), s(&d.join(out))]);
        args.extend(extra.iter().map(|a| a.to_string()));
        fae(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    ok(&edit("empty.json", "kept.png", &["--composite", "mask", "--color-match"]));
    let original = image::open(&photo).unwrap().to_rgb8();
    let kept = image::open(d.join("kept.png")).unwrap().to_rgb8();
    assert_eq!(kept.dimensions(), (451, 300));
    assert!(kept == original, "an empty recipe composited is the photo");

    ok(&fae(&["reconstruct", "--image", &s(&photo), "--out", &s(&d.join("rec.png"))]));
    ok(&edit("empty.json", "plain.png", &[]));
    let rec = image::open(d.join("rec.png")).unwrap().to_rgb8();
    assert!(
        rec == image::open(d.join("plain.png")).unwrap().to_rgb8(),
        "off is the reconstruction"
    );

    // Zero a few channels on the right third: the left of the photo is untouched.
    std::fs::write(
        d.join("right.json"),
        r#"{"version": 1, "edits": [{"op": "zero_channels", "channels": [0, 1, 2, 3, 4, 5, 6, 7], "mask": {"rect": [0.67, 0, 1, 1]}}]}"#,
    )
    .unwrap();
    ok(&edit("right.json", "right.png", &["--composite", "mask", "--feather", "16"]));
    let right = image::open(d.join("right.png")).unwrap().to_rgb8();
    assert_eq!(right.dimensions(), (451, 300));
    let column =
        |img: &image::RgbImage, x: u32| (0..300).map(|y| img.get_pixel(x, y).0).collect::<Vec<_>>();
    for x in 0..250 {
        assert_eq!(column(&right, x), column(&original, x), "column {x} is far from the edit");
    }
    // The crop the encoder saw spans columns 75 to 374; the edited tokens its right third.
    assert!((300..370).any(|x| column(&right, x) != column(&original, x)), "the edit shows");

    // The whole photo on a 16 x 11 grid: the decode has its aspect, and compositing an empty
    // recipe still gives back the photo.
    ok(&fae(&["reconstruct", "--whole", "--image", &s(&photo), "--out", &s(&d.join("w.png"))]));
    assert_eq!(image::image_dimensions(d.join("w.png")).unwrap(), (224, 154));
    ok(&edit("empty.json", "whole.png", &["--whole", "--composite", "detail"]));
    assert!(image::open(d.join("whole.png")).unwrap().to_rgb8() == original);

    // Interpolation frames composited into the first photo, at its size.
    let frames = d.join("frames");
    let (from, to) = (s(&photo), s(&samples().join("coffee.png")));
    let args = ["interpolate", "--from", &from, "--to", &to, "--steps", "2", "--composite"];
    ok(&fae(&[&args[..], &["detail", "--out", &s(&frames)]].concat()));
    assert_eq!(image::image_dimensions(frames.join("frame_001.png")).unwrap(), (451, 300));
    assert!(image::open(frames.join("frame_000.png")).unwrap().to_rgb8() == original);
    assert!(frames.join("contact_sheet.png").exists());

    let bad = edit("right.json", "bad.png", &["--composite", "mask", "--feather=-3"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("feather") && err.trim().lines().count() == 1, "{err}");
}
