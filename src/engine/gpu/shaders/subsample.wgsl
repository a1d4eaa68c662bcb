// LeNet-5's trainable subsampling on the GPU, forward and backward: the formulas of
// src/reference/subsample.rs (blocks of size×size, a coefficient and a bias per map).

struct Geom {
    c: u32, h: u32, w: u32, size: u32,
    oh: u32, ow: u32, batch: u32,
    // Where the coefficients, biases and their gradients start in their buffers.
    coef_at: u32, bias_at: u32, dcoef_at: u32, dbias_at: u32, _0: u32,
}

@group(0) @binding(0) var<uniform> g: Geom;
@group(0) @binding(1) var<storage, read> inp: array<f32>;
@group(0) @binding(2) var<storage, read> coef: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read> dout: array<f32>;
@group(0) @binding(6) var<storage, read_write> dinp: array<f32>;
@group(0) @binding(7) var<storage, read_write> dcoef: array<f32>;
@group(0) @binding(8) var<storage, read_write> dbias: array<f32>;

// The sum of plane p's block under output (y, x).
fn block_sum(p: u32, y: u32, x: u32) -> f32 {
    var s = 0.0;
    for (var i = 0u; i < g.size; i++) {
        for (var j = 0u; j < g.size; j++) {
            s += inp[(p * g.h + y * g.size + i) * g.w + x * g.size + j];
        }
    }
    return s;
}

// out[n, c, y, x] = coef[c] · (block sum) + bias[c]
@compute @workgroup_size(64)
fn forward(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let idx = flat(id, groups);
    if (idx >= g.batch * g.c * g.oh * g.ow) { return; }
    let x = idx % g.ow;
    let y = (idx / g.ow) % g.oh;
    let p = idx / (g.ow * g.oh);
    let c = p % g.c;
    out[idx] = coef[g.coef_at + c] * block_sum(p, y, x) + bias[g.bias_at + c];
}

// dinp[n, c, iy, ix] = coef[c] · dout of the block holding (iy, ix), 0 under no block
@compute @workgroup_size(64)
fn backward_input(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let idx = flat(id, groups);
    if (idx >= g.batch * g.c * g.h * g.w) { return; }
    let ix = idx % g.w;
    let iy = (idx / g.w) % g.h;
    let p = idx / (g.w * g.h);
    let y = iy / g.size;
    let x = ix / g.size;
    if (y >= g.oh || x >= g.ow) {
        dinp[idx] = 0.0;
        return;
    }
    dinp[idx] = coef[g.coef_at + p % g.c] * dout[(p * g.oh + y) * g.ow + x];
}

// dcoef[c] += Σ dout · (block sum), dbias[c] += Σ dout, over the batch and the map; one
// workgroup per map (group_sum).
@compute @workgroup_size(64)
fn backward_params(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) l: u32,
) {
    let c = group_index(wg, groups);
    let plane = g.oh * g.ow;
    var sc = 0.0;
    var sb = 0.0;
    if (c < g.c) {
        for (var t = l; t < g.batch * plane; t += 64u) {
            let p = (t / plane) * g.c + c;
            let y = (t % plane) / g.ow;
            let x = t % g.ow;
            let d = dout[(p * g.oh + y) * g.ow + x];
            sc += d * block_sum(p, y, x);
            sb += d;
        }
    }
    let total_c = group_sum(l, sc);
    let total_b = group_sum(l, sb);
    if (c < g.c && l == 0u) {
        dcoef[g.dcoef_at + c] += total_c;
        dbias[g.dbias_at + c] += total_b;
    }
}
