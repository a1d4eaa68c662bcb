// Elementwise activations on the GPU and their derivatives: the formulas of
// src/reference/activation.rs.

struct Params {
    n: u32, kind: u32, slope: f32, _0: u32,
}

const SIGMOID: u32 = 0u;
const TANH: u32 = 1u;
const SCALED_TANH: u32 = 2u;
const RELU: u32 = 3u;
const LEAKY_RELU: u32 = 4u;
// LeNet-5's squashing function A·tanh(S·x) (appendix A of the paper).
const A: f32 = 1.7159;
const S: f32 = 0.6666667;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> inp: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<storage, read> dout: array<f32>;
@group(0) @binding(4) var<storage, read_write> dinp: array<f32>;

fn f(x: f32) -> f32 {
    switch p.kind {
        case SIGMOID: { return 1.0 / (1.0 + exp(-x)); }
        case TANH: { return tanh(x); }
        case SCALED_TANH: { return A * tanh(S * x); }
        case RELU: { return max(x, 0.0); }
        default: { return select(p.slope * x, x, x > 0.0); }
    }
}

fn df(x: f32) -> f32 {
    switch p.kind {
        case SIGMOID: { let y = 1.0 / (1.0 + exp(-x)); return y * (1.0 - y); }
        case TANH: { let t = tanh(x); return 1.0 - t * t; }
        case SCALED_TANH: { let t = tanh(S * x); return A * S * (1.0 - t * t); }
        // PyTorch's convention: the derivative at 0 is 0.
        case RELU: { return select(0.0, 1.0, x > 0.0); }
        default: { return select(p.slope, 1.0, x > 0.0); }
    }
}

// out = f(inp)
@compute @workgroup_size(64)
fn forward(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(id, groups);
    if (i >= p.n) { return; }
    out[i] = f(inp[i]);
}

// dinp = f'(inp) · dout (written)
@compute @workgroup_size(64)
fn backward(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(id, groups);
    if (i >= p.n) { return; }
    dinp[i] = df(inp[i]) * dout[i];
}
