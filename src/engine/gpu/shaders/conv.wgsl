// Convolution on the GPU, forward and backward: the formulas of src/reference/conv.rs,
// one invocation per value written, each summing its terms in a fixed order (no
// atomics: a rerun gives the same bits). Layouts as PyTorch: inp (B, C, H, W),
// w (O, C, K, K), out (B, O, OH, OW).

struct Geom {
    c: u32, h: u32, w: u32, o: u32,
    k: u32, pad: u32, stride: u32, oh: u32,
    ow: u32, batch: u32,
    // Where the weight, bias and their gradients start in their buffers (one flat
    // buffer holds every layer's parameters).
    w_at: u32, b_at: u32, dw_at: u32, db_at: u32, _0: u32, _1: u32,
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

// out[n, o, y, x] = b[o] + Σ_c Σ_i Σ_j w[o, c, i, j] · inp[n, c, y·s + i − p, x·s + j − p]
@compute @workgroup_size(64)
fn forward(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let idx = flat(id, groups);
    if (idx >= g.batch * g.o * g.oh * g.ow) { return; }
    let x = idx % g.ow;
    let y = (idx / g.ow) % g.oh;
    let o = (idx / (g.ow * g.oh)) % g.o;
    let n = idx / (g.ow * g.oh * g.o);
    var s = bias[g.b_at + o];
    for (var c = 0u; c < g.c; c++) {
        for (var i = 0u; i < g.k; i++) {
            let iy = i32(y * g.stride + i) - i32(g.pad);
            if (iy < 0 || iy >= i32(g.h)) { continue; }
            for (var j = 0u; j < g.k; j++) {
                let ix = i32(x * g.stride + j) - i32(g.pad);
                if (ix < 0 || ix >= i32(g.w)) { continue; }
                s += wt[g.w_at + ((o * g.c + c) * g.k + i) * g.k + j] * inp[((n * g.c + c) * g.h + u32(iy)) * g.w + u32(ix)];
            }
        }
    }
    out[idx] = s;
}

// dinp[n, c, iy, ix] = Σ w[o, c, i, j] · dout[n, o, y, x] over the (o, i, j) whose
// window (y, x) reads (iy, ix): y·s + i − p = iy. Written, not accumulated.
@compute @workgroup_size(64)
fn backward_input(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let idx = flat(id, groups);
    if (idx >= g.batch * g.c * g.h * g.w) { return; }
    let ix = idx % g.w;
    let iy = (idx / g.w) % g.h;
    let c = (idx / (g.w * g.h)) % g.c;
    let n = idx / (g.w * g.h * g.c);
    var s = 0.0;
    for (var o = 0u; o < g.o; o++) {
        for (var i = 0u; i < g.k; i++) {
            let ty = i32(iy + g.pad) - i32(i);
            if (ty < 0 || ty % i32(g.stride) != 0 || ty / i32(g.stride) >= i32(g.oh)) { continue; }
            let y = u32(ty) / g.stride;
            for (var j = 0u; j < g.k; j++) {
                let tx = i32(ix + g.pad) - i32(j);
                if (tx < 0 || tx % i32(g.stride) != 0 || tx / i32(g.stride) >= i32(g.ow)) { continue; }
                let x = u32(tx) / g.stride;
                s += wt[g.w_at + ((o * g.c + c) * g.k + i) * g.k + j] * dout[((n * g.o + o) * g.oh + y) * g.ow + x];
            }
        }
    }
    dinp[idx] = s;
}

// dw[o, c, i, j] += Σ_n Σ_y Σ_x dout[n, o, y, x] · inp[n, c, y·s + i − p, x·s + j − p]
// One workgroup per weight: its batch·OH·OW terms shared by 64 invocations (group_sum).
@compute @workgroup_size(64)
fn backward_weight(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) l: u32,
) {
    let idx = group_index(wg, groups);
    let valid = idx < g.o * g.c * g.k * g.k;
    let j = idx % g.k;
    let i = (idx / g.k) % g.k;
    let c = (idx / (g.k * g.k)) % g.c;
    let o = idx / (g.k * g.k * g.c);
    let plane = g.oh * g.ow;
    var s = 0.0;
    if (valid) {
        for (var t = l; t < g.batch * plane; t += 64u) {
            let n = t / plane;
            let y = (t % plane) / g.ow;
            let x = t % g.ow;
            let iy = i32(y * g.stride + i) - i32(g.pad);
            let ix = i32(x * g.stride + j) - i32(g.pad);
            if (iy < 0 || iy >= i32(g.h) || ix < 0 || ix >= i32(g.w)) { continue; }
            s += dout[(n * g.o + o) * plane + y * g.ow + x] * inp[((n * g.c + c) * g.h + u32(iy)) * g.w + u32(ix)];
        }
    }
    let total = group_sum(l, s);
    if (valid && l == 0u) { dw[g.dw_at + idx] += total; }
}

// db[o] += Σ_n Σ_y Σ_x dout[n, o, y, x], one workgroup per map (group_sum).
@compute @workgroup_size(64)
fn backward_bias(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) l: u32,
) {
    let o = group_index(wg, groups);
    let plane = g.oh * g.ow;
    var s = 0.0;
    if (o < g.o) {
        for (var t = l; t < g.batch * plane; t += 64u) {
            s += dout[((t / plane) * g.o + o) * plane + t % plane];
        }
    }
    let total = group_sum(l, s);
    if (o < g.o && l == 0u) { db[g.db_at + o] += total; }
}
