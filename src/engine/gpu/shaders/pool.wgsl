// Pooling on the GPU (avg and max, size×size windows `stride` apart, no padding), forward
// and backward: the formulas of src/reference/pool.rs, one invocation per value written.

struct Geom {
    h: u32, w: u32, size: u32, stride: u32,
    oh: u32, ow: u32, planes: u32, is_max: u32,
}

@group(0) @binding(0) var<uniform> g: Geom;
@group(0) @binding(1) var<storage, read> inp: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> dout: array<f32>;
@group(0) @binding(4) var<storage, read_write> dinp: array<f32>;

// The index (in inp) of window (p, y, x)'s first maximum, row by row: PyTorch's choice.
fn argmax(p: u32, y: u32, x: u32) -> u32 {
    var best = (p * g.h + y * g.stride) * g.w + x * g.stride;
    for (var i = 0u; i < g.size; i++) {
        for (var j = 0u; j < g.size; j++) {
            let at = (p * g.h + y * g.stride + i) * g.w + x * g.stride + j;
            if (inp[at] > inp[best]) { best = at; }
        }
    }
    return best;
}

// avg: out = (1/size²)·Σ window; max: out = max window.
@compute @workgroup_size(64)
fn forward(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let idx = flat(id, groups);
    if (idx >= g.planes * g.oh * g.ow) { return; }
    let x = idx % g.ow;
    let y = (idx / g.ow) % g.oh;
    let p = idx / (g.ow * g.oh);
    if (g.is_max == 1u) {
        out[idx] = inp[argmax(p, y, x)];
        return;
    }
    var s = 0.0;
    for (var i = 0u; i < g.size; i++) {
        for (var j = 0u; j < g.size; j++) {
            s += inp[(p * g.h + y * g.stride + i) * g.w + x * g.stride + j];
        }
    }
    out[idx] = s / f32(g.size * g.size);
}

// dinp[p, iy, ix] = Σ over the windows holding (iy, ix) of avg: dout / size²; max: dout
// where (iy, ix) is the window's first maximum. Written, not accumulated.
@compute @workgroup_size(64)
fn backward(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let idx = flat(id, groups);
    if (idx >= g.planes * g.h * g.w) { return; }
    let ix = idx % g.w;
    let iy = (idx / g.w) % g.h;
    let p = idx / (g.w * g.h);
    var s = 0.0;
    // Windows y with y·stride ≤ iy < y·stride + size, in increasing order.
    for (var y = 0u; y < g.oh; y++) {
        if (iy < y * g.stride || iy >= y * g.stride + g.size) { continue; }
        for (var x = 0u; x < g.ow; x++) {
            if (ix < x * g.stride || ix >= x * g.stride + g.size) { continue; }
            let d = dout[(p * g.oh + y) * g.ow + x];
            if (g.is_max == 1u) {
                if (argmax(p, y, x) == idx) { s += d; }
            } else {
                s += d / f32(g.size * g.size);
            }
        }
    }
    dinp[idx] = s;
}
