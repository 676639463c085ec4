// Token maps for FAE Studio: a grid of tokens drawn as coloured cells.
//
// mode 0: PCA. `data` holds the tokens [T, dim], then the mean [dim], then three components
//         [3, dim]; each token is projected here and each component scaled by lo/hi to RGB.
// mode 1: one channel of the tokens [T, dim] through the viridis colormap, scaled by lo.x/hi.x.
// mode 2: RGB already projected: [T, 3], scaled by lo/hi.
// flags bit 0: draw the token grid; bit 1: mark token `marker` with a ring; bit 2: the target
// is an sRGB format, so the (gamma-space) colour is converted to linear before it is stored.
// The output is premultiplied by `alpha`, so a map can be laid over an image as a heatmap.
//
// `value_at(i)` reads the i-th float. It is defined by one of two preludes, chosen from the adapter's
// limits: `tokens_storage.wgsl` (a storage buffer) or `tokens_texture.wgsl` (an R32Float texture,
// for adapters without storage buffers in the fragment stage, such as OpenGL ES).

struct Params {
    grid_w: u32,
    grid_h: u32,
    dim: u32,
    mode: u32,
    channel: u32,
    mean_off: u32,
    comp_off: u32,
    flags: u32,
    lo: vec4<f32>,
    hi: vec4<f32>,
    alpha: f32,
    marker: u32,
    _pad0: f32,
    _pad1: f32,
};

@group(0) @binding(0) var<uniform> p: Params;

struct VsOut {
    @builtin(position) pos: vec4<f32>,
    @location(0) uv: vec2<f32>,
};

@vertex
fn vs_main(@builtin(vertex_index) i: u32) -> VsOut {
    var corners = array<vec2<f32>, 6>(
        vec2<f32>(0.0, 0.0), vec2<f32>(1.0, 0.0), vec2<f32>(0.0, 1.0),
        vec2<f32>(0.0, 1.0), vec2<f32>(1.0, 0.0), vec2<f32>(1.0, 1.0),
    );
    let uv = corners[i];
    var out: VsOut;
    out.pos = vec4<f32>(uv.x * 2.0 - 1.0, 1.0 - uv.y * 2.0, 0.0, 1.0);
    out.uv = uv;
    return out;
}

// Viridis, ten evenly spaced stops in sRGB (as the CPU path in inspect.rs).
fn viridis(t_in: f32) -> vec3<f32> {
    var stops = array<vec3<f32>, 10>(
        vec3<f32>(68.0, 1.0, 84.0), vec3<f32>(72.0, 40.0, 120.0),
        vec3<f32>(62.0, 74.0, 137.0), vec3<f32>(49.0, 104.0, 142.0),
        vec3<f32>(38.0, 130.0, 142.0), vec3<f32>(31.0, 158.0, 137.0),
        vec3<f32>(53.0, 183.0, 121.0), vec3<f32>(109.0, 205.0, 89.0),
        vec3<f32>(180.0, 222.0, 44.0), vec3<f32>(253.0, 231.0, 37.0),
    );
    let pos = clamp(t_in, 0.0, 1.0) * 9.0;
    let i = min(u32(floor(pos)), 8u);
    let f = pos - f32(i);
    return mix(stops[i], stops[i + 1u], f) / 255.0;
}

fn srgb_to_linear(c: vec3<f32>) -> vec3<f32> {
    let lo = c / 12.92;
    let hi = pow((c + 0.055) / 1.055, vec3<f32>(2.4));
    return select(hi, lo, c <= vec3<f32>(0.04045));
}

fn scaled(v: f32, lo: f32, hi: f32) -> f32 {
    if (hi <= lo) {
        return 0.5;
    }
    return clamp((v - lo) / (hi - lo), 0.0, 1.0);
}

@fragment
fn fs_main(in: VsOut) -> @location(0) vec4<f32> {
    let gx = min(u32(in.uv.x * f32(p.grid_w)), p.grid_w - 1u);
    let gy = min(u32(in.uv.y * f32(p.grid_h)), p.grid_h - 1u);
    let tok = gy * p.grid_w + gx;
    var rgb = vec3<f32>(0.0, 0.0, 0.0);
    if (p.mode == 0u) {
        var acc = vec3<f32>(0.0, 0.0, 0.0);
        for (var c = 0u; c < p.dim; c = c + 1u) {
            let x = value_at(tok * p.dim + c) - value_at(p.mean_off + c);
            acc.x = acc.x + x * value_at(p.comp_off + c);
            acc.y = acc.y + x * value_at(p.comp_off + p.dim + c);
            acc.z = acc.z + x * value_at(p.comp_off + 2u * p.dim + c);
        }
        rgb = vec3<f32>(scaled(acc.x, p.lo.x, p.hi.x), scaled(acc.y, p.lo.y, p.hi.y),
                        scaled(acc.z, p.lo.z, p.hi.z));
    } else if (p.mode == 1u) {
        rgb = viridis(scaled(value_at(tok * p.dim + p.channel), p.lo.x, p.hi.x));
    } else {
        let b = tok * 3u;
        rgb = vec3<f32>(scaled(value_at(b), p.lo.x, p.hi.x), scaled(value_at(b + 1u), p.lo.y, p.hi.y),
                        scaled(value_at(b + 2u), p.lo.z, p.hi.z));
    }
    let cell = fract(in.uv * vec2<f32>(f32(p.grid_w), f32(p.grid_h)));
    if ((p.flags & 1u) != 0u) {
        let edge = min(min(cell.x, 1.0 - cell.x), min(cell.y, 1.0 - cell.y));
        if (edge < 0.04) {
            rgb = rgb * 0.6;
        }
    }
    if ((p.flags & 2u) != 0u && tok == p.marker) {
        let edge = min(min(cell.x, 1.0 - cell.x), min(cell.y, 1.0 - cell.y));
        if (edge < 0.15) {
            rgb = vec3<f32>(1.0, 0.2, 0.2);
        }
    }
    if ((p.flags & 4u) != 0u) {
        rgb = srgb_to_linear(rgb);
    }
    return vec4<f32>(rgb * p.alpha, p.alpha);
}
