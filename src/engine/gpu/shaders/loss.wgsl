// The training criteria on the GPU (the formulas of src/reference/loss.rs): each
// example's weighted loss, whether its highest output is the label, and its row of
// ∂(mean loss)/∂outputs; then the batch's sums, in example order, into `stats` — on the
// device, so that no step waits for the host. stats = [Σ w_y, Σ w_y·E, correct, finite]:
// finite is 1 when the batch's mean loss is a number (the updates read it), else 0.
// `tally` adds a training batch's statistics to the epoch's running sums.

struct Params {
    batch: u32, classes: u32,
    // 0: cross-entropy, 1: LeNet-5's eq. 9 (with j), 2: eq. 8.
    criterion: u32, j: f32,
    weighted: u32, _0: u32, _1: u32, _2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> z: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read> class_weights: array<f32>;
@group(0) @binding(4) var<storage, read_write> dz: array<f32>;
@group(0) @binding(5) var<storage, read_write> per_example: array<f32>;
@group(0) @binding(6) var<storage, read_write> stats: array<f32>;
// [Σ batch mean loss·examples (f32 bits), its compensation (Kahan; f32 bits), correct,
// batches, the first batch whose loss was not a number (0: none), that loss (f32 bits)].
@group(0) @binding(7) var<storage, read_write> running: array<u32>;

fn weight(c: u32) -> f32 {
    return select(1.0, class_weights[c], p.weighted == 1u);
}

// stats[0] = Σ_n w[y_n], in example order (one invocation).
@compute @workgroup_size(64)
fn weight_sum(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x != 0u) { return; }
    var s = 0.0;
    for (var n = 0u; n < p.batch; n++) {
        s += weight(u32(y[n]));
    }
    stats[0] = s;
}

// Per example n: per_example[2n] = w·E_n, per_example[2n + 1] = 1 if the first highest
// output is the label; dz row n = w·(softmax − onehot)/Σw (eq. 8: −w·onehot/Σw).
@compute @workgroup_size(64)
fn example(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let n = flat(id, groups);
    if (n >= p.batch) { return; }
    let c = u32(y[n]);
    let row = n * p.classes;
    var best = 0u;
    var top = z[row];
    for (var i = 1u; i < p.classes; i++) {
        if (z[row + i] > top) { top = z[row + i]; best = i; }
    }
    let w = weight(c);
    let scale = w / stats[0];
    per_example[2u * n + 1u] = select(0.0, 1.0, best == c);
    if (p.criterion == 2u) {
        per_example[2u * n] = w * -z[row + c];
        for (var i = 0u; i < p.classes; i++) {
            dz[row + i] = select(0.0, -scale, i == c);
        }
        return;
    }
    // log Σ e^z (with e^(−j) for eq. 9), around the largest term.
    var m = top;
    if (p.criterion == 1u) { m = max(m, -p.j); }
    var sum_exp = 0.0;
    for (var i = 0u; i < p.classes; i++) {
        sum_exp += exp(z[row + i] - m);
    }
    if (p.criterion == 1u) { sum_exp += exp(-p.j - m); }
    let lse = m + log(sum_exp);
    per_example[2u * n] = w * (lse - z[row + c]);
    for (var i = 0u; i < p.classes; i++) {
        dz[row + i] = scale * (exp(z[row + i] - lse) - select(0.0, 1.0, i == c));
    }
}

// stats[1] = Σ_n w·E_n, stats[2] = correct, in example order (one invocation).
@compute @workgroup_size(64)
fn reduce(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x != 0u) { return; }
    var loss = 0.0;
    var correct = 0.0;
    for (var n = 0u; n < p.batch; n++) {
        loss += per_example[2u * n];
        correct += per_example[2u * n + 1u];
    }
    stats[1] = loss;
    stats[2] = correct;
    stats[3] = select(0.0, 1.0, is_finite(loss / stats[0]));
}

// running += this batch of p.batch examples, in batch order (one invocation). The loss
// sum is compensated: f32 with Kahan's correction stays within an ulp or two of the
// CPU engine's f64 sum over an epoch's hundreds of batches.
@compute @workgroup_size(64)
fn tally(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x != 0u) { return; }
    let mean = stats[1] / stats[0];
    let batches = running[3] + 1u;
    running[3] = batches;
    if (!is_finite(mean) && running[4] == 0u) {
        running[4] = batches;
        running[5] = bitcast<u32>(mean);
    }
    let sum0 = bitcast<f32>(running[0]);
    let term = mean * f32(p.batch) - bitcast<f32>(running[1]);
    let sum = sum0 + term;
    running[1] = bitcast<u32>((sum - sum0) - term);
    running[0] = bitcast<u32>(sum);
    running[2] += u32(stats[2]);
}
