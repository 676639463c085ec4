// Token data for tokens.wgsl from an R32Float texture filled row by row (adapters whose
// fragment stage has no storage buffers: OpenGL ES, WebGL).

@group(0) @binding(1) var values: texture_2d<f32>;

fn value_at(i: u32) -> f32 {
    let w = textureDimensions(values).x;
    return textureLoad(values, vec2<i32>(i32(i % w), i32(i / w)), 0).x;
}
