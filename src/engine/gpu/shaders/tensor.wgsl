// Whole-tensor chores on the GPU: fill, copy, and multiply by a mask (a masked
// convolution's left-out weights), each on a range of a buffer.

struct Params {
    n: u32,
    // Where the range starts in dst and in src.
    dst_at: u32, src_at: u32,
    value: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

// dst[i] = value
@compute @workgroup_size(64)
fn fill(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(id, groups);
    if (i >= p.n) { return; }
    dst[p.dst_at + i] = p.value;
}

// dst[i] = src[i]
@compute @workgroup_size(64)
fn copy(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(id, groups);
    if (i >= p.n) { return; }
    dst[p.dst_at + i] = src[p.src_at + i];
}

// dst[i] ·= src[i]
@compute @workgroup_size(64)
fn mask(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(id, groups);
    if (i >= p.n) { return; }
    dst[p.dst_at + i] *= src[p.src_at + i];
}
