// A batch from a resident split: the training images live on the GPU once, as bytes
// (four to a u32: WGSL has no 8-bit storage), and each step gathers its examples by index
// and scales them there: x = byte · scale + shift, as the CPU engine's gather.

struct Params {
    batch: u32, pixels: u32, scale: f32, shift: f32,
    // gather_distorted's: the original images' size, and the input's side.
    rows: u32, cols: u32, side: u32, elastic: u32,
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

// The same batch with each image distorted first (LeNet-5's affine distortions, drawn
// on the host by src/data/augment, and the elastic field where there is one, drawn by
// elastic.wgsl): the resampling of src/data/augment/sample.rs, step for step, from the
// split's original images (`source`, rows × cols, four bytes to a u32), then fitted to
// the input by zero padding as src/input.rs fits them.
// maps[10e..10e+10] = image e's inverse matrix (4), its drawn translation (2), and where
// its ink lands under the matrix (x_lo, x_hi, y_lo, y_hi): the translation is fitted
// here, where the field's reach is known (DrawnAffine::fit in src/data/augment/affine.rs).
@group(0) @binding(7) var<storage, read> source: array<u32>;
@group(0) @binding(8) var<storage, read> maps: array<f32>;
// With p.elastic: the batch's fields (batch × 2 × rows × cols) and reaches (batch).
@group(0) @binding(9) var<storage, read> field: array<f32>;
@group(0) @binding(10) var<storage, read> reach: array<f32>;

// Pixel (y, x) of image e, 0 outside it (the zero border the CPU pads with).
fn source_at(e: u32, y: i32, x: i32) -> f32 {
    if (y < 0 || x < 0 || y >= i32(p.rows) || x >= i32(p.cols)) { return 0.0; }
    let i = e * p.rows * p.cols + u32(y) * p.cols + u32(x);
    return f32((source[i / 4u] >> (8u * (i % 4u))) & 0xffu);
}

// The translation along `axis` (0: x, 1: y) that keeps image e's ink `margin` pixels
// inside the frame where it can (else centred between the two limits), as the CPU fits it.
fn fitted_shift(m: u32, axis: u32, size: u32, margin: f32) -> f32 {
    let t = maps[m + 4u + axis];
    let lo = maps[m + 6u + 2u * axis];
    let hi = maps[m + 7u + 2u * axis];
    let min_t = margin - lo;
    let max_t = f32(size) - 1.0 - margin - hi;
    if (min_t <= max_t) { return clamp(t, min_t, max_t); }
    return (min_t + max_t) / 2.0;
}

// The distorted byte at (y, x) of image e, batch item b: the bilinear sample at the
// inverse map of the point moved by the field, rounded to the nearest byte below, as
// the CPU's resampling rounds it.
fn distorted(b: u32, e: u32, y: u32, x: u32) -> f32 {
    let m = 10u * e;
    var dx = 0.0;
    var dy = 0.0;
    var margin = 0.0;
    if (p.elastic != 0u) {
        let plane = p.rows * p.cols;
        dx = field[(b * 2u) * plane + y * p.cols + x];
        dy = field[(b * 2u + 1u) * plane + y * p.cols + x];
        margin = reach[b];
    }
    let cx = (f32(p.cols) - 1.0) / 2.0;
    let cy = (f32(p.rows) - 1.0) / 2.0;
    let ux = f32(x) + dx - cx - fitted_shift(m, 0u, p.cols, margin);
    let uy = f32(y) + dy - cy - fitted_shift(m, 1u, p.rows, margin);
    // In the CPU's padded coordinates (one border pixel before each row and column).
    let sx = clamp(maps[m] * ux + maps[m + 1u] * uy + cx + 1.0, 0.0, f32(p.cols) + 1.0);
    let sy = clamp(maps[m + 2u] * ux + maps[m + 3u] * uy + cy + 1.0, 0.0, f32(p.rows) + 1.0);
    let xi = floor(sx);
    let yi = floor(sy);
    let fx = sx - xi;
    let fy = sy - yi;
    let px = i32(xi) - 1;
    let py = i32(yi) - 1;
    let p = source_at(e, py, px);
    let q = source_at(e, py, px + 1);
    let r = source_at(e, py + 1, px);
    let s = source_at(e, py + 1, px + 1);
    let top = p + (q - p) * fx;
    let bottom = r + (s - r) * fx;
    return floor(top + (bottom - top) * fy + 0.5);
}

// x[b, y, x] = the distorted image indices[b], padded to side × side, scaled; y[b] its label.
@compute @workgroup_size(64)
fn gather_distorted(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let idx = flat(id, groups);
    let pixels = p.side * p.side;
    if (idx >= p.batch * pixels) { return; }
    let b = idx / pixels;
    let e = indices[b];
    // The fitted pixel's place in the original frame (src/input.rs's pad_centre).
    let ry = i32((idx % pixels) / p.side + p.rows / 2u) - i32(p.side / 2u);
    let rx = i32(idx % p.side + p.cols / 2u) - i32(p.side / 2u);
    var v = 0.0;
    if (ry >= 0 && rx >= 0 && ry < i32(p.rows) && rx < i32(p.cols)) {
        v = distorted(b, e, u32(ry), u32(rx));
    }
    x[idx] = v * p.scale + p.shift;
    if (idx % pixels == 0u) {
        let l = labels[e / 4u] >> (8u * (e % 4u));
        y[b] = f32(l & 0xffu);
    }
}
