//! Token maps (PCA colours, channel heatmaps, similarity and cosine maps) drawn on the GPU by
//! our own WGSL shader (`shaders/tokens.wgsl`) through egui's wgpu paint callbacks, with a CPU
//! path that draws the same pictures as textures where no wgpu renderer is available.
//!
//! The shader reads the tokens from a storage buffer where the adapter allows storage buffers in
//! the fragment stage, and from a float texture where it does not (OpenGL ES and WebGL adapters
//! report a limit of 0): the choice follows the device's reported limits, never an assumption.

use std::collections::HashMap;
use std::sync::Arc;

use eframe::egui_wgpu;
use eframe::wgpu;
use eframe::wgpu::util::DeviceExt;
use egui::{Color32, Pos2, Rect, Stroke, TextureHandle, TextureOptions};
use image::RgbImage;

use crate::inspect::{self, Upscale};
use crate::pca::Pca;

/// The shader source, compiled into the binary; a prelude defines how it reads token data.
pub const TOKENS_WGSL: &str = include_str!("../../shaders/tokens.wgsl");
const STORAGE_PRELUDE: &str = include_str!("../../shaders/tokens_storage.wgsl");
const TEXTURE_PRELUDE: &str = include_str!("../../shaders/tokens_texture.wgsl");

/// How token maps reach the screen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapPath {
    /// Our shader, token data in a storage buffer.
    StorageBuffer,
    /// Our shader, token data in an R32Float texture (no fragment storage buffers).
    Texture,
    /// Pictures computed on the CPU and drawn as egui textures (no wgpu renderer).
    Cpu,
}

impl MapPath {
    /// Chooses within what the device reports.
    pub fn for_device(adapter: &wgpu::Adapter, device: &wgpu::Device) -> Self {
        let fragment_storage = adapter
            .get_downlevel_capabilities()
            .flags
            .contains(wgpu::DownlevelFlags::FRAGMENT_STORAGE);
        if fragment_storage && device.limits().max_storage_buffers_per_shader_stage >= 1 {
            Self::StorageBuffer
        } else {
            Self::Texture
        }
    }

    pub fn on_gpu(self) -> bool {
        self != Self::Cpu
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::StorageBuffer => "GPU shader (storage buffer)",
            Self::Texture => "GPU shader (texture)",
            Self::Cpu => "CPU",
        }
    }

    fn shader_source(self) -> String {
        let prelude = if self == Self::Texture { TEXTURE_PRELUDE } else { STORAGE_PRELUDE };
        format!("{prelude}\n{TOKENS_WGSL}")
    }
}

/// How a map turns tokens into colours.
#[derive(Clone)]
pub enum MapKind {
    /// Three principal components as RGB.
    Pca(Arc<Pca>),
    /// One channel through viridis, over `[lo, hi]`.
    Channel { channel: usize, lo: f32, hi: f32 },
}

/// A `height x width` grid of `dim`-wide tokens to draw.
#[derive(Clone)]
pub struct TokenMap {
    /// Identifies the drawing (which image, which view, which channel); stable across frames.
    pub key: u64,
    /// Changes whenever `data` or `kind` changes.
    pub version: u64,
    pub height: usize,
    pub width: usize,
    pub dim: usize,
    pub data: Arc<Vec<f32>>,
    pub kind: MapKind,
}

impl TokenMap {
    /// A scalar map (one value per token) through viridis.
    pub fn scalar(key: u64, version: u64, h: usize, w: usize, values: Vec<f32>) -> Self {
        let (lo, hi) = inspect::value_range(&values);
        Self {
            key,
            version,
            height: h,
            width: w,
            dim: 1,
            data: Arc::new(values),
            kind: MapKind::Channel { channel: 0, lo, hi },
        }
    }

    /// The picture at one pixel per token (the CPU path and PNG export).
    pub fn cpu_image(&self) -> RgbImage {
        match &self.kind {
            MapKind::Pca(pca) => pca.picture(&self.data, self.height, self.width, 1),
            MapKind::Channel { channel, lo, hi } => {
                let values: Vec<f32> =
                    self.data.chunks_exact(self.dim.max(1)).map(|t| t[*channel]).collect();
                inspect::render_map(
                    &values,
                    self.height,
                    self.width,
                    self.width as u32,
                    self.height as u32,
                    Some((*lo, (*hi).max(*lo))),
                    Upscale::Nearest,
                )
                .unwrap_or_else(|_| RgbImage::new(self.width as u32, self.height as u32))
            }
        }
    }

    /// How many floats `gpu_data` sends.
    fn gpu_len(&self) -> usize {
        let tokens = self.height * self.width;
        match &self.kind {
            MapKind::Pca(_) if self.dim <= 64 => (tokens + 4) * self.dim,
            MapKind::Pca(_) => tokens * 3,
            MapKind::Channel { .. } => tokens,
        }
    }

    /// What the shader reads, and its parameters.
    fn gpu_data(&self) -> (Vec<f32>, Params) {
        let mut p = Params {
            grid_w: self.width as u32,
            grid_h: self.height as u32,
            dim: self.dim as u32,
            alpha: 1.0,
            ..Params::default()
        };
        match &self.kind {
            MapKind::Pca(pca) if self.dim <= 64 => {
                let mut data = (*self.data).clone();
                p.mode = 0;
                p.mean_off = data.len() as u32;
                data.extend_from_slice(&pca.mean);
                p.comp_off = data.len() as u32;
                for c in &pca.components {
                    data.extend_from_slice(c);
                }
                (p.lo, p.hi) = ranges(pca);
                (data, p)
            }
            MapKind::Pca(pca) => {
                // Wide tokens (encoder features) are projected once here rather than per pixel.
                p.mode = 2;
                p.dim = 3;
                (p.lo, p.hi) = ranges(pca);
                (pca.project(&self.data).into_iter().flatten().collect(), p)
            }
            MapKind::Channel { channel, lo, hi } => {
                // Only the drawn channel travels to the GPU.
                p.mode = 1;
                p.dim = 1;
                p.lo = [*lo, 0.0, 0.0, 0.0];
                p.hi = [*hi, 0.0, 0.0, 0.0];
                let values = self.data.chunks_exact(self.dim.max(1)).map(|t| t[*channel]).collect();
                (values, p)
            }
        }
    }
}

fn ranges(pca: &Pca) -> ([f32; 4], [f32; 4]) {
    let r = pca.ranges;
    ([r[0].0, r[1].0, r[2].0, 0.0], [r[0].1, r[1].1, r[2].1, 1.0])
}

/// Uniforms of `tokens.wgsl` (same layout as its `Params`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Params {
    pub grid_w: u32,
    pub grid_h: u32,
    pub dim: u32,
    pub mode: u32,
    pub channel: u32,
    pub mean_off: u32,
    pub comp_off: u32,
    pub flags: u32,
    pub lo: [f32; 4],
    pub hi: [f32; 4],
    pub alpha: f32,
    pub marker: u32,
    pub _pad: [f32; 2],
}

// SAFETY: `Params` is `repr(C)`, made only of 4-byte numbers (80 bytes, no padding), and every
// bit pattern is a valid value.
unsafe impl bytemuck::Zeroable for Params {}
// SAFETY: as above.
unsafe impl bytemuck::Pod for Params {}

/// How to draw a map: opacity, token grid, a marked token.
#[derive(Clone, Copy, Debug)]
pub struct DrawOptions {
    pub alpha: f32,
    pub grid: bool,
    pub marker: Option<(usize, usize)>,
}

impl Default for DrawOptions {
    fn default() -> Self {
        Self { alpha: 1.0, grid: false, marker: None }
    }
}

struct Pipeline {
    pipeline: wgpu::RenderPipeline,
    layout: wgpu::BindGroupLayout,
    path: MapPath,
    /// Texture path: the widest row the device allows.
    max_texture_width: u32,
}

struct Entry {
    version: u64,
    uniforms: wgpu::Buffer,
    bind: wgpu::BindGroup,
}

/// Stored in egui-wgpu's callback resources.
struct Resources {
    pipeline: Pipeline,
    /// The target stores linear values (an sRGB format): the shader converts its output.
    srgb_target: bool,
    entries: HashMap<(u64, u64), Entry>,
}

/// Creates the pipeline on the window's device and says which path maps take: the CPU one where
/// there is no wgpu renderer or the pipeline cannot be built on it. Records in `cache` how large
/// a map the device takes.
pub fn init(render_state: Option<&egui_wgpu::RenderState>, cache: &mut TextureCache) -> MapPath {
    let Some(rs) = render_state else { return MapPath::Cpu };
    let path = MapPath::for_device(&rs.adapter, &rs.device);
    // A pipeline the device rejects is reported as an error scope rather than a panic.
    let scope = rs.device.push_error_scope(wgpu::ErrorFilter::Validation);
    let pipeline = build_pipeline(rs, path);
    match pollster::block_on(scope.pop()) {
        None => {
            let limits = rs.device.limits();
            cache.gpu_max_values = match path {
                MapPath::Texture => (limits.max_texture_dimension_2d as usize).pow(2),
                _ => limits.max_storage_buffer_binding_size as usize / 4,
            };
            rs.renderer.write().callback_resources.insert(Resources {
                pipeline,
                srgb_target: rs.target_format.is_srgb(),
                entries: HashMap::new(),
            });
            path
        }
        Some(e) => {
            eprintln!(
                "token-map shader unavailable on this adapter ({e}); drawing maps on the CPU"
            );
            MapPath::Cpu
        }
    }
}

fn build_pipeline(rs: &egui_wgpu::RenderState, path: MapPath) -> Pipeline {
    let device = &rs.device;
    let shader = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("fae tokens"),
        source: wgpu::ShaderSource::Wgsl(path.shader_source().into()),
    });
    let data_binding = match path {
        MapPath::Texture => wgpu::BindingType::Texture {
            sample_type: wgpu::TextureSampleType::Float { filterable: false },
            view_dimension: wgpu::TextureViewDimension::D2,
            multisampled: false,
        },
        _ => wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only: true },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
    };
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some("fae tokens"),
        entries: &[
            wgpu::BindGroupLayoutEntry {
                binding: 0,
                visibility: wgpu::ShaderStages::FRAGMENT,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            },
            wgpu::BindGroupLayoutEntry {
                binding: 1,
                visibility: wgpu::ShaderStages::FRAGMENT,
                ty: data_binding,
                count: None,
            },
        ],
    });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some("fae tokens"),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
        label: Some("fae tokens"),
        layout: Some(&pipeline_layout),
        vertex: wgpu::VertexState {
            module: &shader,
            entry_point: Some("vs_main"),
            compilation_options: Default::default(),
            buffers: &[],
        },
        primitive: wgpu::PrimitiveState::default(),
        depth_stencil: None,
        multisample: wgpu::MultisampleState::default(),
        fragment: Some(wgpu::FragmentState {
            module: &shader,
            entry_point: Some("fs_main"),
            compilation_options: Default::default(),
            targets: &[Some(wgpu::ColorTargetState {
                format: rs.target_format,
                blend: Some(wgpu::BlendState::PREMULTIPLIED_ALPHA_BLENDING),
                write_mask: wgpu::ColorWrites::ALL,
            })],
        }),
        multiview_mask: None,
        cache: None,
    });
    let max_texture_width = device.limits().max_texture_dimension_2d;
    Pipeline { pipeline, layout, path, max_texture_width }
}

/// The token data as the pipeline reads it: a storage buffer, or a texture of whole rows.
fn data_resource(
    device: &wgpu::Device,
    queue: &wgpu::Queue,
    pipeline: &Pipeline,
    data: &[f32],
) -> DataResource {
    let data = if data.is_empty() { &[0.0f32][..] } else { data };
    if pipeline.path != MapPath::Texture {
        return DataResource::Buffer(device.create_buffer_init(
            &wgpu::util::BufferInitDescriptor {
                label: Some("fae tokens data"),
                contents: bytemuck::cast_slice(data),
                usage: wgpu::BufferUsages::STORAGE,
            },
        ));
    }
    let width = (data.len() as u32).min(pipeline.max_texture_width);
    let height = (data.len() as u32).div_ceil(width);
    let mut padded = data.to_vec();
    padded.resize((width * height) as usize, 0.0);
    let texture = device.create_texture_with_data(
        queue,
        &wgpu::TextureDescriptor {
            label: Some("fae tokens data"),
            size: wgpu::Extent3d { width, height, depth_or_array_layers: 1 },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::R32Float,
            usage: wgpu::TextureUsages::TEXTURE_BINDING,
            view_formats: &[],
        },
        wgpu::util::TextureDataOrder::LayerMajor,
        bytemuck::cast_slice(&padded),
    );
    DataResource::Texture(texture.create_view(&wgpu::TextureViewDescriptor::default()))
}

enum DataResource {
    Buffer(wgpu::Buffer),
    Texture(wgpu::TextureView),
}

impl DataResource {
    fn binding(&self) -> wgpu::BindingResource<'_> {
        match self {
            Self::Buffer(b) => b.as_entire_binding(),
            Self::Texture(v) => wgpu::BindingResource::TextureView(v),
        }
    }
}

struct MapCallback {
    map: Arc<TokenMap>,
    options: DrawOptions,
}

impl egui_wgpu::CallbackTrait for MapCallback {
    fn prepare(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        _screen: &egui_wgpu::ScreenDescriptor,
        _encoder: &mut wgpu::CommandEncoder,
        resources: &mut egui_wgpu::CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        let Some(res) = resources.get_mut::<Resources>() else { return Vec::new() };
        let (data, mut params) = self.map.gpu_data();
        params.alpha = self.options.alpha;
        params.flags = u32::from(self.options.grid);
        if res.srgb_target {
            params.flags |= 4;
        }
        if let Some((y, x)) = self.options.marker {
            params.flags |= 2;
            params.marker = (y * self.map.width + x) as u32;
        }
        let key = (self.map.key, alpha_key(self.options.alpha));
        let stale = res.entries.get(&key).is_none_or(|e| e.version != self.map.version);
        if stale {
            let values = data_resource(device, queue, &res.pipeline, &data);
            let uniforms = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("fae tokens params"),
                contents: bytemuck::bytes_of(&params),
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            });
            let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("fae tokens"),
                layout: &res.pipeline.layout,
                entries: &[
                    wgpu::BindGroupEntry { binding: 0, resource: uniforms.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 1, resource: values.binding() },
                ],
            });
            res.entries.insert(key, Entry { version: self.map.version, uniforms, bind });
        } else if let Some(e) = res.entries.get(&key) {
            queue.write_buffer(&e.uniforms, 0, bytemuck::bytes_of(&params));
        }
        Vec::new()
    }

    fn paint(
        &self,
        _info: egui::PaintCallbackInfo,
        render_pass: &mut wgpu::RenderPass<'static>,
        resources: &egui_wgpu::CallbackResources,
    ) {
        let Some(res) = resources.get::<Resources>() else { return };
        let key = (self.map.key, alpha_key(self.options.alpha));
        let Some(entry) = res.entries.get(&key) else { return };
        render_pass.set_pipeline(&res.pipeline.pipeline);
        render_pass.set_bind_group(0, &entry.bind, &[]);
        render_pass.draw(0..6, 0..1);
    }
}

/// Opaque and translucent drawings of one map keep separate uniforms.
fn alpha_key(alpha: f32) -> u64 {
    u64::from(alpha < 1.0)
}

/// Textures of the CPU path, by map key, and how large a map the GPU path takes.
pub struct TextureCache {
    textures: HashMap<u64, (u64, TextureHandle)>,
    /// The most floats one map may send to the shader (the device's buffer or texture limit);
    /// larger maps are drawn on the CPU path.
    gpu_max_values: usize,
}

impl Default for TextureCache {
    fn default() -> Self {
        Self { textures: HashMap::new(), gpu_max_values: usize::MAX }
    }
}

impl TextureCache {
    fn get(&mut self, ctx: &egui::Context, map: &TokenMap) -> TextureHandle {
        if let Some((v, t)) = self.textures.get(&map.key)
            && *v == map.version
        {
            return t.clone();
        }
        let img = map.cpu_image();
        let color =
            egui::ColorImage::from_rgb([img.width() as usize, img.height() as usize], img.as_raw());
        let tex = ctx.load_texture(format!("map-{}", map.key), color, TextureOptions::NEAREST);
        self.textures.insert(map.key, (map.version, tex.clone()));
        tex
    }
}

/// Draws `map` into `rect` (clipped by the painter's clip rect): through the shader when
/// `gpu`, else as a texture.
pub fn draw(
    painter: &egui::Painter,
    rect: Rect,
    map: &TokenMap,
    options: DrawOptions,
    gpu: bool,
    cache: &mut TextureCache,
) {
    let painter = painter.with_clip_rect(painter.clip_rect().intersect(rect));
    if gpu && map.gpu_len() <= cache.gpu_max_values {
        let cb = MapCallback { map: Arc::new(map.clone()), options };
        painter.add(egui_wgpu::Callback::new_paint_callback(rect, cb));
        return;
    }
    let tex = cache.get(painter.ctx(), map);
    let uv = Rect::from_min_max(Pos2::ZERO, Pos2::new(1.0, 1.0));
    painter.image(tex.id(), rect, uv, Color32::from_white_alpha((options.alpha * 255.0) as u8));
    if options.grid {
        grid_lines(&painter, rect, map.height, map.width);
    }
    if let Some((y, x)) = options.marker {
        let (cw, ch) = (rect.width() / map.width as f32, rect.height() / map.height as f32);
        let min = rect.min + egui::vec2(x as f32 * cw, y as f32 * ch);
        painter.rect_stroke(
            Rect::from_min_size(min, egui::vec2(cw, ch)),
            0.0,
            Stroke::new(2.0, Color32::from_rgb(255, 50, 50)),
            egui::StrokeKind::Inside,
        );
    }
}

/// Token boundaries over a picture.
pub fn grid_lines(painter: &egui::Painter, rect: Rect, h: usize, w: usize) {
    let stroke = Stroke::new(1.0, Color32::from_black_alpha(110));
    for i in 1..w {
        let x = rect.min.x + rect.width() * i as f32 / w as f32;
        painter.line_segment([Pos2::new(x, rect.min.y), Pos2::new(x, rect.max.y)], stroke);
    }
    for j in 1..h {
        let y = rect.min.y + rect.height() * j as f32 / h as f32;
        painter.line_segment([Pos2::new(rect.min.x, y), Pos2::new(rect.max.x, y)], stroke);
    }
}
