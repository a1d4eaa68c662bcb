// The optimizers' updates and gradient clipping on the GPU: the loops of src/optim.rs,
// operation for operation, with the per-step scalars computed on the host as there
// (in f64, rounded to f32 where PyTorch hands them to a kernel). Each update reads
// the last loss's finite flag (stats[3], written by loss.wgsl): a batch whose loss was
// not a number moves no parameter, without the host having to look.

struct Params {
    n: u32,
    // Bits of SGD_* / ADAM_* below.
    flags: u32, _0: u32, _1: u32,
    // The scalars, as each entry point names them.
    h0: f32, h1: f32, h2: f32, h3: f32,
    h4: f32, h5: f32, h6: f32, h7: f32,
}

const SGD_WEIGHT_DECAY: u32 = 1u;
const SGD_MOMENTUM: u32 = 2u;
const SGD_NESTEROV: u32 = 4u;
const SGD_FIRST: u32 = 8u;
const ADAM_SMALL: u32 = 1u;
const ADAM_L2: u32 = 2u;
const ADAM_DECAY: u32 = 4u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> grads: array<f32>;
@group(0) @binding(2) var<storage, read_write> params: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
@group(0) @binding(5) var<storage, read> stats: array<f32>;
@group(0) @binding(6) var<storage, read_write> clipped: array<f32>;
@group(0) @binding(7) var<storage, read_write> partial: array<f32>;

fn on(bit: u32) -> bool {
    return (p.flags & bit) != 0u;
}

// SGD, PyTorch's _single_tensor_sgd with dampening 0 (h0 = −lr, h1 = momentum, h2 = wd):
// d = g + wd·p; buf = d (first step) or momentum·buf + d; d = d + momentum·buf
// (Nesterov) or buf; p = p + (−lr)·d.
@compute @workgroup_size(64)
fn sgd(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(id, groups);
    if (i >= p.n || stats[3] == 0.0) { return; }
    let neg_lr = p.h0;
    let momentum = p.h1;
    let wd = p.h2;
    var d = grads[i];
    if (on(SGD_WEIGHT_DECAY)) { d += wd * params[i]; }
    if (on(SGD_MOMENTUM)) {
        var b = d;
        if (!on(SGD_FIRST)) { b = m[i] * momentum + d; }
        m[i] = b;
        if (on(SGD_NESTEROV)) { d = d + momentum * b; } else { d = b; }
    }
    params[i] += neg_lr * d;
}

// Adam and AdamW, PyTorch's _single_tensor_adam (h0 = 1 − β1, h1 = β2, h2 = 1 − β2,
// h3 = √(1 − β2^t), h4 = ε, h5 = −lr/(1 − β1^t), h6 = Adam's L2 weight decay,
// h7 = AdamW's 1 − lr·wd):
// p = p·decay; g = g + wd·p; m = lerp(m, g, 1 − β1); v = v·β2 + ((1 − β2)·g)·g;
// p = p + (−lr/(1 − β1^t))·m / (√v/√(1 − β2^t) + ε).
@compute @workgroup_size(64)
fn adam(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(id, groups);
    if (i >= p.n || stats[3] == 0.0) { return; }
    var p_ = params[i];
    if (on(ADAM_DECAY)) { p_ *= p.h7; }
    var g_ = grads[i];
    if (on(ADAM_L2)) { g_ += p.h6 * p_; }
    // torch.lerp's two forms, as PyTorch picks them by the weight.
    var m_ = g_ - (g_ - m[i]) * (1.0 - p.h0);
    if (on(ADAM_SMALL)) { m_ = m[i] + p.h0 * (g_ - m[i]); }
    m[i] = m_;
    let v_ = v[i] * p.h1 + p.h2 * g_ * g_;
    v[i] = v_;
    let denom = sqrt(v_) / p.h3 + p.h4;
    params[i] = p_ + p.h5 * m_ / denom;
}

// SDLM (appendix C of the paper; h0 = lr, h1 = μ, m = the Hessian's diagonal):
// p = p − lr/(μ + h)·g.
@compute @workgroup_size(64)
fn sdlm(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(id, groups);
    if (i >= p.n || stats[3] == 0.0) { return; }
    params[i] -= p.h0 / (p.h1 + m[i]) * grads[i];
}

// Clipping, as torch.nn.utils.clip_grad_norm_ (h0 = max norm), in three fixed-order
// steps: each invocation sums the squares of one chunk of `_0` gradients; one sums
// those partial sums in order and puts coef = max/(norm + 1e-6) after them; every
// gradient is multiplied by coef when coef < 1 (or is not a number).
@compute @workgroup_size(64)
fn clip_partial(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let c = flat(id, groups);
    let chunk = p._0;
    if (c * chunk >= p.n) { return; }
    var s = 0.0;
    for (var i = c * chunk; i < min(p.n, (c + 1u) * chunk); i++) {
        s += clipped[i] * clipped[i];
    }
    partial[c] = s;
}

@compute @workgroup_size(64)
fn clip_norm(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x != 0u) { return; }
    let chunks = (p.n + p._0 - 1u) / p._0;
    var s = 0.0;
    for (var c = 0u; c < chunks; c++) {
        s += partial[c];
    }
    partial[chunks] = p.h0 / (sqrt(s) + 1e-6);
}

@compute @workgroup_size(64)
fn clip_scale(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = flat(id, groups);
    if (i >= p.n) { return; }
    let coef = partial[(p.n + p._0 - 1u) / p._0];
    if (coef < 1.0 || is_nan(coef)) { clipped[i] *= coef; }
}
