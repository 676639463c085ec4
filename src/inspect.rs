//! Host-side maths and pictures for the inspectors: channel statistics, heatmaps, cosine maps
//! and contact sheets, all on [`Grid`]s and plain `[height, width]` scalar maps.
//!
//! Colormap: viridis (Stéfan van der Walt and Nathaniel Smith's matplotlib colormap, CC0),
//! stored as its 10 evenly spaced stops as listed by R's `viridisLite::viridis(10)` and
//! interpolated linearly in sRGB between them; close to matplotlib's 256-entry table and
//! dependency-free. Low values are dark purple, high values yellow; NaN is drawn black.

use anyhow::{Result, bail, ensure};
use image::{Rgb, RgbImage};

use crate::grid::Grid;

/// Statistics of one channel over every token.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChannelStats {
    pub min: f32,
    pub max: f32,
    pub mean: f32,
    /// Population standard deviation (divides by the token count).
    pub std: f32,
}

/// Min, max, mean and standard deviation of each channel (accumulated in f64).
pub fn channel_stats(grid: &Grid) -> Result<Vec<ChannelStats>> {
    check(grid)?;
    ensure!(grid.tokens() > 0, "cannot take statistics of an empty grid");
    let n = grid.tokens() as f64;
    let mut sum = vec![0.0f64; grid.channels];
    let mut stats =
        vec![
            ChannelStats { min: f32::INFINITY, max: f32::NEG_INFINITY, mean: 0.0, std: 0.0 };
            grid.channels
        ];
    for tok in grid.data.chunks_exact(grid.channels) {
        for ((s, st), &v) in sum.iter_mut().zip(&mut stats).zip(tok) {
            *s += v as f64;
            st.min = st.min.min(v);
            st.max = st.max.max(v);
        }
    }
    // Second pass for the variance: numerically safer than sum of squares.
    let means: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let mut var = vec![0.0f64; grid.channels];
    for tok in grid.data.chunks_exact(grid.channels) {
        for ((q, &m), &v) in var.iter_mut().zip(&means).zip(tok) {
            *q += (v as f64 - m).powi(2);
        }
    }
    for ((st, m), q) in stats.iter_mut().zip(means).zip(var) {
        st.mean = m as f32;
        st.std = (q / n).sqrt() as f32;
    }
    Ok(stats)
}

/// The Euclidean norm of every token, row-major.
pub fn token_norms(grid: &Grid) -> Vec<f32> {
    grid.data
        .chunks_exact(grid.channels.max(1))
        .map(|t| t.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt() as f32)
        .collect()
}

/// Cosine similarity of token `(y, x)` of `a` to every token of `b` (which may be `a` itself,
/// or another grid with the same channel count), row-major over `b`. A zero vector has cosine 0
/// with everything.
pub fn cosine_to_token(a: &Grid, y: usize, x: usize, b: &Grid) -> Result<Vec<f32>> {
    check(a)?;
    check(b)?;
    ensure!(
        y < a.height && x < a.width,
        "token ({y}, {x}) is outside the {}x{} grid",
        a.height,
        a.width
    );
    ensure!(
        a.channels == b.channels,
        "cannot compare tokens of {} and {} channels",
        a.channels,
        b.channels
    );
    let query = a.token(y, x);
    Ok(b.data.chunks_exact(b.channels.max(1)).map(|t| cosine(query, t)).collect())
}

/// Cosine similarity between the tokens at the same position of two grids of equal shape,
/// row-major: e.g. encoder features against restored features (semantic preservation), or a
/// latent against its re-encoding (cycle consistency).
pub fn token_cosine(a: &Grid, b: &Grid) -> Result<Vec<f32>> {
    check(a)?;
    check(b)?;
    ensure!(
        a.same_shape(b),
        "grids differ in shape: {}x{}x{} and {}x{}x{}",
        a.height,
        a.width,
        a.channels,
        b.height,
        b.width,
        b.channels
    );
    let c = a.channels.max(1);
    Ok(a.data.chunks_exact(c).zip(b.data.chunks_exact(c)).map(|(p, q)| cosine(p, q)).collect())
}

fn cosine(p: &[f32], q: &[f32]) -> f32 {
    let (mut dot, mut np, mut nq) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in p.iter().zip(q) {
        let (x, y) = (x as f64, y as f64);
        dot += x * y;
        np += x * x;
        nq += y * y;
    }
    if np == 0.0 || nq == 0.0 {
        return 0.0;
    }
    (dot / (np.sqrt() * nq.sqrt())).clamp(-1.0, 1.0) as f32
}

/// Viridis stops, evenly spaced from 0 to 1 (see the module docs).
const VIRIDIS: [[u8; 3]; 10] = [
    [0x44, 0x01, 0x54],
    [0x48, 0x28, 0x78],
    [0x3e, 0x4a, 0x89],
    [0x31, 0x68, 0x8e],
    [0x26, 0x82, 0x8e],
    [0x1f, 0x9e, 0x89],
    [0x35, 0xb7, 0x79],
    [0x6d, 0xcd, 0x59],
    [0xb4, 0xde, 0x2c],
    [0xfd, 0xe7, 0x25],
];

/// The viridis colour of `t` in `[0, 1]` (clamped); NaN is black.
pub fn viridis(t: f32) -> Rgb<u8> {
    if t.is_nan() {
        return Rgb([0, 0, 0]);
    }
    let pos = t.clamp(0.0, 1.0) * (VIRIDIS.len() - 1) as f32;
    let i = (pos.floor() as usize).min(VIRIDIS.len() - 2);
    let f = pos - i as f32;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    Rgb(std::array::from_fn(|k| (a[k] as f32 + (b[k] as f32 - a[k] as f32) * f).round() as u8))
}

/// The smallest and largest finite values, or `(0, 0)` if there are none.
pub fn value_range(values: &[f32]) -> (f32, f32) {
    let finite = values.iter().copied().filter(|v| v.is_finite());
    let (lo, hi) =
        finite.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi { (0.0, 0.0) } else { (lo, hi) }
}

/// How a token map is enlarged to image size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Upscale {
    /// Each token becomes a flat block.
    #[default]
    Nearest,
    /// Values (not colours) interpolated between token centres; edges clamp.
    Bilinear,
}

/// Renders a `[height, width]` scalar map as an `out_width x out_height` viridis picture.
///
/// `range` maps values to the colormap's ends (clamping beyond); `None` uses the map's own
/// finite min and max. A map with a single value is drawn in the middle colour.
pub fn render_map(
    values: &[f32],
    height: usize,
    width: usize,
    out_width: u32,
    out_height: u32,
    range: Option<(f32, f32)>,
    upscale: Upscale,
) -> Result<RgbImage> {
    ensure!(
        values.len() == height * width,
        "a {height}x{width} map needs {} values, got {}",
        height * width,
        values.len()
    );
    ensure!(height > 0 && width > 0, "cannot draw an empty {height}x{width} map");
    ensure!(out_width > 0 && out_height > 0, "picture size {out_width}x{out_height} is empty");
    let (lo, hi) = range.unwrap_or_else(|| value_range(values));
    ensure!(lo.is_finite() && hi.is_finite() && lo <= hi, "bad value range [{lo}, {hi}]");
    let normalise = |v: f32| if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
    // Source coordinate of an output pixel centre, in token units with token centres at k.
    let src = |p: u32, out: u32, len: usize| (p as f32 + 0.5) * len as f32 / out as f32 - 0.5;
    let at = |y: usize, x: usize| values[y * width + x];
    let image = RgbImage::from_fn(out_width, out_height, |px, py| {
        let (sx, sy) = (src(px, out_width, width), src(py, out_height, height));
        let v = match upscale {
            Upscale::Nearest => {
                let x = ((sx + 0.5).floor().max(0.0) as usize).min(width - 1);
                let y = ((sy + 0.5).floor().max(0.0) as usize).min(height - 1);
                at(y, x)
            }
            Upscale::Bilinear => {
                let (sx, sy) =
                    (sx.clamp(0.0, (width - 1) as f32), sy.clamp(0.0, (height - 1) as f32));
                let (x0, y0) = (sx.floor() as usize, sy.floor() as usize);
                let (x1, y1) = ((x0 + 1).min(width - 1), (y0 + 1).min(height - 1));
                let (fx, fy) = (sx - x0 as f32, sy - y0 as f32);
                let top = at(y0, x0) + (at(y0, x1) - at(y0, x0)) * fx;
                let bottom = at(y1, x0) + (at(y1, x1) - at(y1, x0)) * fx;
                top + (bottom - top) * fy
            }
        };
        viridis(normalise(v))
    });
    Ok(image)
}

/// A heatmap of one channel of `grid`, at `out_width x out_height` (pass the grid's own size for
/// one pixel per token). `range: None` uses the channel's own min and max.
pub fn channel_heatmap(
    grid: &Grid,
    channel: usize,
    out_width: u32,
    out_height: u32,
    range: Option<(f32, f32)>,
    upscale: Upscale,
) -> Result<RgbImage> {
    check(grid)?;
    ensure!(
        channel < grid.channels,
        "channel {channel} is out of range: the grid has {} channels",
        grid.channels
    );
    render_map(
        &grid.channel(channel),
        grid.height,
        grid.width,
        out_width,
        out_height,
        range,
        upscale,
    )
}

/// Tiles `images` left to right, top to bottom, `columns` per row, into one picture without
/// captions. Every cell is as large as the largest image; smaller images are centred in theirs.
/// `gap` pixels of `background` separate the cells and frame the sheet.
pub fn contact_sheet(
    images: &[RgbImage],
    columns: usize,
    gap: u32,
    background: Rgb<u8>,
) -> Result<RgbImage> {
    if images.is_empty() {
        bail!("a contact sheet needs at least one image");
    }
    ensure!(columns > 0, "a contact sheet needs at least one column");
    let cols = columns.min(images.len()) as u32;
    let rows = images.len().div_ceil(columns) as u32;
    let cell_w = images.iter().map(|i| i.width()).max().unwrap_or(0);
    let cell_h = images.iter().map(|i| i.height()).max().unwrap_or(0);
    let width = cols * cell_w + (cols + 1) * gap;
    let height = rows * cell_h + (rows + 1) * gap;
    let mut sheet = RgbImage::from_pixel(width, height, background);
    for (k, img) in images.iter().enumerate() {
        let (col, row) = ((k % columns) as u32, (k / columns) as u32);
        let x = gap + col * (cell_w + gap) + (cell_w - img.width()) / 2;
        let y = gap + row * (cell_h + gap) + (cell_h - img.height()) / 2;
        image::imageops::replace(&mut sheet, img, x as i64, y as i64);
    }
    Ok(sheet)
}

fn check(g: &Grid) -> Result<()> {
    ensure!(
        g.data.len() == g.height * g.width * g.channels,
        "grid of {}x{}x{} holds {} values",
        g.height,
        g.width,
        g.channels,
        g.data.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(h: usize, w: usize, c: usize, data: Vec<f32>) -> Grid {
        Grid::new(h, w, c, data).unwrap()
    }

    #[test]
    fn stats_per_channel() {
        // Channel 0: 1, 2, 3, 4; channel 1: -1, -1, -1, -1.
        let grid = g(2, 2, 2, vec![1.0, -1.0, 2.0, -1.0, 3.0, -1.0, 4.0, -1.0]);
        let s = channel_stats(&grid).unwrap();
        assert_eq!(s[0].min, 1.0);
        assert_eq!(s[0].max, 4.0);
        assert_eq!(s[0].mean, 2.5);
        assert!((s[0].std - 1.25f32.sqrt()).abs() < 1e-6);
        assert_eq!(s[1], ChannelStats { min: -1.0, max: -1.0, mean: -1.0, std: 0.0 });
        assert!(channel_stats(&Grid::zeros(0, 3, 2)).is_err());
    }

    #[test]
    fn cosine_map_of_a_token() {
        // Tokens: x, y, -x, 0, 2x.
        let grid = g(1, 5, 2, vec![1.0, 0.0, 0.0, 1.0, -1.0, 0.0, 0.0, 0.0, 2.0, 0.0]);
        assert_eq!(cosine_to_token(&grid, 0, 0, &grid).unwrap(), vec![1.0, 0.0, -1.0, 0.0, 1.0]);
        let other = g(2, 1, 2, vec![1.0, 1.0, 0.0, -3.0]);
        let m = cosine_to_token(&grid, 0, 1, &other).unwrap();
        assert!((m[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6 && m[1] == -1.0);
        assert!(cosine_to_token(&grid, 1, 0, &grid).is_err());
        assert!(cosine_to_token(&grid, 0, 0, &g(1, 1, 3, vec![1.0; 3])).is_err());
    }

    #[test]
    fn per_token_cosine_between_grids() {
        let a = g(1, 3, 2, vec![1.0, 0.0, 1.0, 1.0, 0.0, 2.0]);
        let b = g(1, 3, 2, vec![5.0, 0.0, -1.0, -1.0, 3.0, 0.0]);
        assert_eq!(token_cosine(&a, &b).unwrap(), vec![1.0, -1.0, 0.0]);
        assert!(token_cosine(&a, &a).unwrap().iter().all(|&v| (v - 1.0).abs() < 1e-7));
        assert!(token_cosine(&a, &g(3, 1, 2, vec![0.0; 6])).is_err());
        assert_eq!(token_norms(&a), vec![1.0, 2f32.sqrt(), 2.0]);
    }

    #[test]
    fn viridis_ends_and_nan() {
        assert_eq!(viridis(0.0), Rgb([0x44, 0x01, 0x54]));
        assert_eq!(viridis(1.0), Rgb([0xfd, 0xe7, 0x25]));
        assert_eq!(viridis(-3.0), viridis(0.0));
        assert_eq!(viridis(7.0), viridis(1.0));
        assert_eq!(viridis(f32::NAN), Rgb([0, 0, 0]));
        // Brightness rises along the map (a property viridis is built for).
        let luma = |c: Rgb<u8>| 0.2126 * c[0] as f32 + 0.7152 * c[1] as f32 + 0.0722 * c[2] as f32;
        let steps: Vec<f32> = (0..=20).map(|k| luma(viridis(k as f32 / 20.0))).collect();
        assert!(steps.windows(2).all(|w| w[1] > w[0]), "{steps:?}");
    }

    #[test]
    fn nearest_upscale_makes_blocks() {
        let img = render_map(&[0.0, 1.0, 2.0, 3.0], 2, 2, 4, 4, None, Upscale::Nearest).unwrap();
        assert_eq!((img.width(), img.height()), (4, 4));
        for (x, y, p) in img.enumerate_pixels() {
            let v = (y / 2) * 2 + x / 2;
            assert_eq!(*p, viridis(v as f32 / 3.0), "pixel ({x}, {y})");
        }
        // One pixel per token at the map's own size.
        let small =
            render_map(&[0.0, 1.0, 2.0, 3.0], 2, 2, 2, 2, Some((0.0, 3.0)), Upscale::Nearest)
                .unwrap();
        assert_eq!(*small.get_pixel(1, 1), viridis(1.0));
    }

    #[test]
    fn bilinear_upscale_blends_between_centres() {
        let img = render_map(&[0.0, 1.0], 1, 2, 8, 1, Some((0.0, 1.0)), Upscale::Bilinear).unwrap();
        let row: Vec<Rgb<u8>> = (0..8).map(|x| *img.get_pixel(x, 0)).collect();
        // Edges clamp to the end tokens; in between the colour moves monotonically.
        assert_eq!(row[0], viridis(0.0));
        assert_eq!(row[7], viridis(1.0));
        assert!(row[3] != viridis(0.0) && row[3] != viridis(1.0));
        assert_eq!(row[3], viridis(0.375));
        let nearest =
            render_map(&[0.0, 1.0], 1, 2, 8, 1, Some((0.0, 1.0)), Upscale::Nearest).unwrap();
        assert_ne!(img, nearest);
    }

    #[test]
    fn render_map_ranges_and_errors() {
        let flat = render_map(&[5.0; 4], 2, 2, 2, 2, None, Upscale::Nearest).unwrap();
        assert!(flat.pixels().all(|p| *p == viridis(0.5)));
        let clamped =
            render_map(&[-10.0, 10.0], 1, 2, 2, 1, Some((0.0, 1.0)), Upscale::Nearest).unwrap();
        assert_eq!(*clamped.get_pixel(0, 0), viridis(0.0));
        assert_eq!(*clamped.get_pixel(1, 0), viridis(1.0));
        assert!(render_map(&[1.0; 3], 2, 2, 2, 2, None, Upscale::Nearest).is_err());
        assert!(render_map(&[1.0; 4], 2, 2, 0, 2, None, Upscale::Nearest).is_err());
        assert!(render_map(&[1.0; 4], 2, 2, 2, 2, Some((1.0, 0.0)), Upscale::Nearest).is_err());
        assert_eq!(value_range(&[f32::NAN, 2.0, -1.0, f32::INFINITY]), (-1.0, 2.0));
    }

    #[test]
    fn channel_heatmap_picks_the_channel() {
        let grid = g(1, 2, 2, vec![0.0, 9.0, 1.0, 9.0]);
        let img = channel_heatmap(&grid, 0, 2, 1, None, Upscale::Nearest).unwrap();
        assert_eq!((*img.get_pixel(0, 0), *img.get_pixel(1, 0)), (viridis(0.0), viridis(1.0)));
        let e = channel_heatmap(&grid, 2, 2, 1, None, Upscale::Nearest).unwrap_err();
        assert!(e.to_string().contains("channel 2 is out of range"));
    }

    #[test]
    fn contact_sheet_tiles_in_rows() {
        let red = RgbImage::from_pixel(4, 2, Rgb([255, 0, 0]));
        let green = RgbImage::from_pixel(2, 2, Rgb([0, 255, 0]));
        let blue = RgbImage::from_pixel(4, 2, Rgb([0, 0, 255]));
        let bg = Rgb([9, 9, 9]);
        let sheet = contact_sheet(&[red, green, blue], 2, 1, bg).unwrap();
        // 2 columns of 4 px + 3 gaps; 2 rows of 2 px + 3 gaps.
        assert_eq!((sheet.width(), sheet.height()), (11, 7));
        assert_eq!(*sheet.get_pixel(0, 0), bg);
        assert_eq!(*sheet.get_pixel(1, 1), Rgb([255, 0, 0]));
        // Green is centred in its 4-wide cell starting at x = 6: columns 7 and 8.
        assert_eq!(*sheet.get_pixel(6, 1), bg);
        assert_eq!(*sheet.get_pixel(7, 1), Rgb([0, 255, 0]));
        assert_eq!(*sheet.get_pixel(8, 2), Rgb([0, 255, 0]));
        assert_eq!(*sheet.get_pixel(9, 1), bg);
        assert_eq!(*sheet.get_pixel(1, 4), Rgb([0, 0, 255]));
        // The empty fourth cell stays background.
        assert_eq!(*sheet.get_pixel(7, 4), bg);
        assert!(contact_sheet(&[], 2, 1, bg).is_err());
        assert!(contact_sheet(&[RgbImage::new(1, 1)], 0, 1, bg).is_err());
    }
}
