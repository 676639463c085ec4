//! The memory a 12-megapixel composite takes, counted by this test binary's own allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use fae_studio::composite::{
    CompositeMode, CompositeOptions, Placement, WORK_BYTES_PER_BOX_PIXEL, composite,
};
use image::{Rgb, Rgb32FImage};

/// Bytes allocated now and the most at any time since the last reset.
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

struct Counting;

impl Counting {
    fn add(size: usize) {
        let now = CURRENT.fetch_add(size, Relaxed) + size;
        PEAK.fetch_max(now, Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            Self::add(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            Self::add(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn a_12_megapixel_photo_composites_within_its_memory_bound() {
    let (w, h) = (4000u32, 3000u32);
    let photo = Rgb32FImage::from_fn(w, h, |x, y| {
        Rgb([x as f32 / w as f32, y as f32 / h as f32, ((x ^ y) & 15) as f32 / 16.0])
    });
    let before = Rgb32FImage::from_fn(224, 224, |x, _| Rgb([x as f32 / 224.0, 0.5, 0.5]));
    let after = Rgb32FImage::from_fn(224, 224, |_, y| Rgb([0.5, y as f32 / 224.0, 0.2]));
    let placement = Placement::centre_crop((w, h), (224, 224), (16, 16));
    let corner: Vec<f32> =
        (0..256).map(|i| if i / 16 >= 10 && i % 16 >= 10 { 1.0 } else { 0.0 }).collect();
    let feather = 32.0;
    // Start rayon's threads before counting.
    let small = Placement::centre_crop((300, 200), (224, 224), (16, 16));
    let warm = Rgb32FImage::new(300, 200);
    let opts = CompositeOptions { mode: CompositeMode::Detail, feather, ..Default::default() };
    composite(&warm, Some(&before), &after, &[1.0; 256], &small, &opts).unwrap();

    for (mask, mode) in [(&corner, CompositeMode::Mask), (&vec![1.0; 256], CompositeMode::Detail)] {
        // The blend's box: the edited tokens' pixels grown by the feather.
        let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
        for y in 0..h {
            for x in 0..w {
                if placement.token_at(x, y).is_some_and(|(r, c)| mask[r * 16 + c] > 0.0) {
                    (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
                }
            }
        }
        let grow = feather as u32;
        let box_pixels = ((x1 + grow).min(w) - x0.saturating_sub(grow)) as usize
            * ((y1 + grow).min(h) - y0.saturating_sub(grow)) as usize;
        let output = (w * h) as usize * 12;
        let bound = output + WORK_BYTES_PER_BOX_PIXEL * box_pixels + (4 << 20);

        let base = CURRENT.load(Relaxed);
        PEAK.store(base, Relaxed);
        let options = CompositeOptions { mode, feather, color_match: true, ..Default::default() };
        let out = composite(&photo, Some(&before), &after, mask, &placement, &options).unwrap();
        let peak = PEAK.load(Relaxed) - base;
        drop(out);
        eprintln!(
            "{mode:?}: peak {:.1} MiB over the photo (output {:.1} MiB, box {box_pixels} px), bound {:.1} MiB",
            peak as f64 / 1048576.0,
            output as f64 / 1048576.0,
            bound as f64 / 1048576.0
        );
        assert!(peak <= bound, "{mode:?}: {peak} bytes > bound {bound}");
    }
}
