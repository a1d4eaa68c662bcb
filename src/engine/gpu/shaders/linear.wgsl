// A fully connected layer on the GPU, forward and backward: the formulas of
// src/reference/linear.rs (weight stored out × in, as PyTorch's Linear).

struct Geom {
    batch: u32, k: u32, n: u32,
    // Where the weight, bias and their gradients start in their buffers.
    w_at: u32, b_at: u32, dw_at: u32, db_at: u32, _0: u32,
}

@group(0) @binding(0) var<uniform> g: Geom;
@group(0) @binding(1) var<storage, read> inp: array<f32>;
@group(0) @binding(2) var<storage, read> wt: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read> dout: array<f32>;
@group(0) @binding(6) var<storage, read_write> dinp: array<f32>;
@group(0) @binding(7) var<storage, read_write> dw: array<f32>;
@group(0) @binding(8) var<storage, read_write> db: array<f32>;

// out[n, j] = b[j] + Σ_q w[j, q] · inp[n, q]
@compute @workgroup_size(64)
fn forward(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let idx = flat(id, groups);
    if (idx >= g.batch * g.n) { return; }
    let j = idx % g.n;
    let b = idx / g.n;
    var s = bias[g.b_at + j];
    for (var q = 0u; q < g.k; q++) {
        s += wt[g.w_at + j * g.k + q] * inp[b * g.k + q];
    }
    out[idx] = s;
}

// dinp[n, q] = Σ_j w[j, q] · dout[n, j] (written)
@compute @workgroup_size(64)
fn backward_input(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let idx = flat(id, groups);
    if (idx >= g.batch * g.k) { return; }
    let q = idx % g.k;
    let b = idx / g.k;
    var s = 0.0;
    for (var j = 0u; j < g.n; j++) {
        s += wt[g.w_at + j * g.k + q] * dout[b * g.n + j];
    }
    dinp[idx] = s;
}

// dw[j, q] += Σ_n dout[n, j] · inp[n, q]
@compute @workgroup_size(64)
fn backward_weight(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let idx = flat(id, groups);
    if (idx >= g.n * g.k) { return; }
    let q = idx % g.k;
    let j = idx / g.k;
    var s = 0.0;
    for (var b = 0u; b < g.batch; b++) {
        s += dout[b * g.n + j] * inp[b * g.k + q];
    }
    dw[g.dw_at + idx] += s;
}

// db[j] += Σ_n dout[n, j]
@compute @workgroup_size(64)
fn backward_bias(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let j = flat(id, groups);
    if (j >= g.n) { return; }
    var s = 0.0;
    for (var b = 0u; b < g.batch; b++) {
        s += dout[b * g.n + j];
    }
    db[g.db_at + j] += s;
}
