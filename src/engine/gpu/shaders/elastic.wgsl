// The elastic field of each image of a batch, drawn on the device as the host draws it
// (src/data/augment/elastic.rs): α·R·Z·Cᵀ per axis of displacement, Z the key's uniform
// numbers (DrawKey::noise in src/data/augment/mod.rs, the same 32-bit hash), R and C the
// blur's scaled eigenvectors; and the field's reach, the largest |displacement| rounded
// up, which the gather keeps as extra room around the ink. One workgroup per image.

struct Params {
    batch: u32, rows: u32, cols: u32, kr: u32,
    kc: u32, stride: u32, seed_lo: u32, seed_hi: u32,
    epoch: u32, alpha: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
// R: rows × kr, row-major.
@group(0) @binding(1) var<storage, read> basis_rows: array<f32>;
// Cᵀ: kc × stride, row-major.
@group(0) @binding(2) var<storage, read> basis_cols: array<f32>;
@group(0) @binding(3) var<storage, read> indices: array<u32>;
// α·Z·Cᵀ of each image and axis: batch × 2 × kr × cols.
@group(0) @binding(4) var<storage, read_write> partial: array<f32>;
// The fields: batch × 2 (dx, dy) × rows × cols.
@group(0) @binding(5) var<storage, read_write> field: array<f32>;
@group(0) @binding(6) var<storage, read_write> reach: array<f32>;

// lowbias32 (C. Wellons), as `mix` in src/data/augment/mod.rs.
fn mix(v: u32) -> u32 {
    var x = v;
    x ^= x >> 16u;
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    return x ^ (x >> 16u);
}

// Uniform number n of image e's draw, in [−1, 1) in steps of 2⁻²³: exact in f32.
fn noise(e: u32, n: u32) -> f32 {
    var h = mix(n ^ 0x9e3779b9u);
    h = mix(h ^ e);
    h = mix(h ^ p.epoch);
    h = mix(h ^ p.seed_hi);
    h = mix(h ^ p.seed_lo);
    return f32(h >> 8u) * (1.0 / 8388608.0) - 1.0;
}

@compute @workgroup_size(64)
fn draw(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) l: u32,
) {
    let b = group_index(wg, groups);
    if (b >= p.batch) { return; }
    let e = indices[b];
    // α·Z·Cᵀ: row r of it is Σ_q α·Z[r, q]·(row q of Cᵀ), summed in q's order.
    let part = p.kr * p.cols;
    for (var u = l; u < 2u * part; u += 64u) {
        let axis = u / part;
        let r = (u % part) / p.cols;
        let j = u % p.cols;
        var acc = 0.0;
        for (var q = 0u; q < p.kc; q++) {
            let z = noise(e, axis * p.kr * p.kc + r * p.kc + q);
            acc = acc + (p.alpha * z) * basis_cols[q * p.stride + j];
        }
        partial[(b * 2u + axis) * part + u % part] = acc;
    }
    storageBarrier();
    // field = R·(α·Z·Cᵀ), summed in r's order; and the largest |value| this invocation saw.
    let plane = p.rows * p.cols;
    var top = 0.0;
    for (var u = l; u < 2u * plane; u += 64u) {
        let axis = u / plane;
        let i = (u % plane) / p.cols;
        let j = u % p.cols;
        var acc = 0.0;
        for (var r = 0u; r < p.kr; r++) {
            acc = acc + basis_rows[i * p.kr + r] * partial[(b * 2u + axis) * part + r * p.cols + j];
        }
        field[(b * 2u + axis) * plane + u % plane] = acc;
        top = max(top, abs(acc));
    }
    let largest = group_max(l, top);
    if (l == 0u) { reach[b] = ceil(largest); }
}
