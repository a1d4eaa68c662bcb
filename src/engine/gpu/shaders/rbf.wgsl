// LeNet-5's Euclidean RBF outputs on the GPU: out = −Σ_j (x_j − c_ij)², and its input
// gradient (the centres are fixed): the formulas of src/reference/rbf.rs.

struct Geom {
    batch: u32, k: u32, n: u32, _0: u32,
}

@group(0) @binding(0) var<uniform> g: Geom;
@group(0) @binding(1) var<storage, read> inp: array<f32>;
@group(0) @binding(2) var<storage, read> centres: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
@group(0) @binding(5) var<storage, read> dout: array<f32>;
@group(0) @binding(6) var<storage, read_write> dinp: array<f32>;

// out[n, i] = −Σ_j (inp[n, j] − centres[i, j])²
@compute @workgroup_size(64)
fn forward(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let idx = flat(id, groups);
    if (idx >= g.batch * g.n) { return; }
    let i = idx % g.n;
    let b = idx / g.n;
    var s = 0.0;
    for (var j = 0u; j < g.k; j++) {
        let d = inp[b * g.k + j] - centres[i * g.k + j];
        s += d * d;
    }
    out[idx] = -s;
}

// dinp[n, j] = Σ_i −2·(inp[n, j] − centres[i, j]) · dout[n, i] (written)
@compute @workgroup_size(64)
fn backward(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let idx = flat(id, groups);
    if (idx >= g.batch * g.k) { return; }
    let j = idx % g.k;
    let b = idx / g.k;
    var s = 0.0;
    for (var i = 0u; i < g.n; i++) {
        s += -2.0 * (inp[idx] - centres[i * g.k + j]) * dout[b * g.n + i];
    }
    dinp[idx] = s;
}
