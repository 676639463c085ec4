// Token data for tokens.wgsl from a storage buffer.

@group(0) @binding(1) var<storage, read> values: array<f32>;

fn value_at(i: u32) -> f32 {
    return values[i];
}
