// A batch from a resident split: the training images live on the GPU once, as bytes
// (four to a u32: WGSL has no 8-bit storage), and each step gathers its examples by index
// and scales them there: x = byte · scale + shift, as the CPU engine's gather.

struct Params {
    batch: u32, pixels: u32, scale: f32, shift: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> images: array<u32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read> indices: array<u32>;
@group(0) @binding(4) var<storage, read_write> x: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

fn byte_at(array_index: u32) -> u32 {
    return (images[array_index / 4u] >> (8u * (array_index % 4u))) & 0xffu;
}

// x[b, i] = images[indices[b], i] · scale + shift; y[b] = labels[indices[b]]
@compute @workgroup_size(64)
fn gather(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let idx = flat(id, groups);
    if (idx >= p.batch * p.pixels) { return; }
    let b = idx / p.pixels;
    let i = idx % p.pixels;
    let example = indices[b];
    x[idx] = f32(byte_at(example * p.pixels + i)) * p.scale + p.shift;
    if (i == 0u) {
        let l = labels[example / 4u] >> (8u * (example % 4u));
        y[b] = f32(l & 0xffu);
    }
}
