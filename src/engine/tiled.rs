//! The CPU engine's program: the whole layer chain on tiles of L examples (see
//! [`crate::layers`]), fused and cache-sized.
//!
//! - The batch's tiles are split into one contiguous chunk per thread; a pass is a
//!   single parallel region in which each thread runs every layer over its own
//!   tiles, two at a time (depth first), so a tile's activations are produced and
//!   consumed while they sit in the core's cache. A training pass runs each pair's
//!   forward pass, loss and backward pass back to back ([`Program::train_pass`]).
//! - A convolution or linear layer followed by an activation is one step: the
//!   activation is applied in registers before the store, and its derivative is
//!   taken from the stored output, so the pre-activation values are never kept.
//!   Flatten is free (the tile layout of (C, H, W) and of C·H·W is the same).
//! - Per-thread buffers hold every tile's activations (for a separate backward pass
//!   or [`Program::output`]; a training or inference pass reuses two slots) and the
//!   scratch of each step; they are allocated when the batch size first grows,
//!   never inside a training step.
//! - In a training pass the backward pass works in place of what the pair's forward
//!   pass left: a pooling writes its input gradient over the activations it reads
//!   (dead by then; the convolution before it reads the gradient there), and a
//!   convolution uses the padded input its forward pass made.
//! - Parameter gradients are accumulated per thread (convolutions: per lane, summed
//!   once per pass; linear layers: one product per chunk over all its tiles) and
//!   added in chunk order, so the same thread count always gives the same bits.

use super::chunks::for_each_chunk;
use super::cpu::{CpuEngine, CpuExamples};
use super::{Chain, Engine, LayerOp, Program, TrainStats};
use crate::layers::conv::{self, ConvGeom};
use crate::layers::loss::{self, softmax_xent, LossStats};
use crate::layers::pool::{self, PoolGeom};
use crate::layers::tiles::{count, from_tiles, transpose_tile, Aligned};
use crate::layers::{activation, dispatch, linear, Kernel, Lanes, L};
use crate::spec::{Activation, Criterion};

/// One fused step: a layer, with the activation after it when fused.
#[derive(Clone, Debug)]
enum Kind {
    Conv { g: ConvGeom, w: std::ops::Range<usize>, b: std::ops::Range<usize>, act: Option<Activation> },
    Pool { g: PoolGeom, channels: usize },
    Act(Activation),
    Linear { k: usize, n: usize, w: std::ops::Range<usize>, b: std::ops::Range<usize>, act: Option<Activation> },
}

#[derive(Clone, Debug)]
struct Step {
    kind: Kind,
    /// Values (activation buffers) read and written: value 0 is the input batch.
    input: usize,
    output: usize,
    in_numel: usize,
    out_numel: usize,
}

impl Step {
    /// Tile slot `ti` of this step's input among a chunk's values.
    fn input_tile<'a>(&self, vals: &'a [Aligned<f32>], ti: usize) -> &'a [f32] {
        &vals[self.input][ti * self.in_numel * L..(ti + 1) * self.in_numel * L]
    }
    /// [`Step::input_tile`], to write (a pooling's gradient in place of its input).
    fn input_tile_mut<'a>(&self, vals: &'a mut [Aligned<f32>], ti: usize) -> &'a mut [f32] {
        &mut vals[self.input][ti * self.in_numel * L..(ti + 1) * self.in_numel * L]
    }
    /// Tile slot `to` of this step's output among a chunk's values.
    fn output_tile<'a>(&self, vals: &'a [Aligned<f32>], to: usize) -> &'a [f32] {
        &vals[self.output][to * self.out_numel * L..(to + 1) * self.out_numel * L]
    }
}

/// Where a layer's output lives.
#[derive(Clone, Copy, Debug)]
enum Out {
    Value(usize),
    /// The pre-activation output of a fused step: recomputed when asked for.
    PreActivation(usize),
}

/// One thread's buffers.
#[derive(Default)]
struct Chunk {
    /// vals[v]: value v of this chunk's tiles, (tiles, numel, L).
    vals: Vec<Aligned<f32>>,
    /// ∂L/∂logits of this chunk's tiles.
    dlogits: Aligned<f32>,
    /// Ping-pong gradient tiles for the backward pass, one of each per tile of a pair.
    da: [Aligned<f32>; 2],
    db: [Aligned<f32>; 2],
    /// Per step: two padded input tiles (convolutions), one per tile of a pair.
    xp: Vec<Aligned<f32>>,
    /// Per step: spread output-gradient tile (zero border) and padded input gradient (convolutions).
    spread: Vec<Aligned<f32>>,
    dxp: Vec<Aligned<f32>>,
    /// Per step: lane accumulators of weight and bias gradients (convolutions).
    dwl: Vec<Aligned<f32>>,
    dbl: Vec<Aligned<f32>>,
    /// Per step: output gradients (tiles, N, L) and transposed inputs (tiles, L, K') (linear).
    douts: Vec<Aligned<f32>>,
    xts: Vec<Aligned<f32>>,
    /// This chunk's parameter gradients.
    grads: Vec<f32>,
    /// Seconds spent per step, when profiling: [forward, backward through the
    /// activation (and padding, transposes), weight gradient, input gradient].
    prof: Vec<[f64; 4]>,
    /// Seconds summing the chunk's gradient accumulators, when profiling.
    prof_reduce: f64,
    /// Seconds in the loss of a training pass (per tile, inside the chunk), when profiling.
    prof_loss: f64,
    /// Seconds this chunk's part of the last training pass took, when profiling.
    prof_busy: f64,
    /// Per example of a training pass: its weighted loss and whether it was right.
    example_loss: Vec<(f64, bool)>,
    /// One example's logits and their gradient (scratch of the loss).
    logit_row: Vec<f32>,
    dlogit_row: Vec<f32>,
}

/// Laps of a stopwatch that is off (free) unless profiling.
struct Lap(Option<std::time::Instant>);

impl Lap {
    #[inline(always)]
    fn new(on: bool) -> Lap {
        Lap(on.then(std::time::Instant::now))
    }
    /// Seconds since the last lap (0 when off).
    #[inline(always)]
    fn lap(&mut self) -> f64 {
        match &mut self.0 {
            Some(t) => {
                let now = std::time::Instant::now();
                let d = (now - *t).as_secs_f64();
                *t = now;
                d
            }
            None => 0.0,
        }
    }
}

pub struct Tiled {
    chain: Chain,
    steps: Vec<Step>,
    outs: Vec<Out>,
    numels: Vec<usize>,
    threads: usize,
    /// Tiles per chunk the buffers hold.
    cap_tiles: usize,
    chunks: Vec<Chunk>,
    labels: Vec<u8>,
    /// Flipped weights of each convolution step (for input gradients).
    wflip: Vec<Vec<f32>>,
    profiling: bool,
    /// Whether the last forward pass kept every tile's values (see [`ChunkPass::keep`]).
    kept: bool,
    /// Seconds outside the chunks when profiling: [load, loss, reduce across chunks].
    prof_serial: [f64; 3],
    /// Thread-seconds the chunks of training passes spent waiting for the slowest one
    /// (from the pass's start to its end, less their own work), when profiling.
    prof_idle: f64,
}

/// Tile range of chunk `c` when `tiles` tiles are split `per` to a chunk.
fn tile_range(c: usize, per: usize, tiles: usize) -> std::ops::Range<usize> {
    (c * per).min(tiles)..((c + 1) * per).min(tiles)
}

impl Tiled {
    /// Whether this program runs `chain`: every op but LeNet-5's trainable
    /// subsampling and RBF outputs, under the cross-entropy criterion.
    pub fn supports(chain: &Chain) -> bool {
        chain.criterion == Criterion::CrossEntropy
            && chain.ops.iter().all(|op| !matches!(op, LayerOp::Subsample { .. } | LayerOp::Rbf { .. }))
    }

    /// The program of `chain`, which must be one it [`Self::supports`].
    pub fn new(chain: &Chain, threads: usize) -> Tiled {
        assert!(Tiled::supports(chain), "the tiled program cannot run this chain: {:?}", chain.ops);
        let mut steps: Vec<Step> = Vec::new();
        let mut outs = Vec::with_capacity(chain.ops.len());
        let mut numels = vec![chain.in_numel(0)];
        let mut cur = 0; // the value holding the current layer's input
        let mut i = 0;
        while i < chain.ops.len() {
            let fused = match chain.ops.get(i + 1) {
                Some(LayerOp::Act(a)) if activation::from_output(*a) => Some(*a),
                _ => None,
            };
            let kind = match &chain.ops[i] {
                LayerOp::Flatten => {
                    outs.push(Out::Value(cur));
                    i += 1;
                    continue;
                }
                LayerOp::Conv { g, w, b } => Kind::Conv { g: *g, w: w.clone(), b: b.clone(), act: fused },
                LayerOp::Linear { k, n, w, b } => Kind::Linear { k: *k, n: *n, w: w.clone(), b: b.clone(), act: fused },
                LayerOp::Pool { g, channels } => Kind::Pool { g: *g, channels: *channels },
                LayerOp::Act(a) => Kind::Act(*a),
                LayerOp::Subsample { .. } | LayerOp::Rbf { .. } => unreachable!("refused by Tiled::supports"),
            };
            let has_act = matches!(kind, Kind::Conv { act: Some(_), .. } | Kind::Linear { act: Some(_), .. });
            let out_numel = chain.out_numel[if has_act { i + 1 } else { i }];
            let v = numels.len();
            numels.push(out_numel);
            steps.push(Step { kind, input: cur, output: v, in_numel: numels[cur], out_numel });
            if has_act {
                outs.push(Out::PreActivation(steps.len() - 1));
                outs.push(Out::Value(v));
                i += 2;
            } else {
                outs.push(Out::Value(v));
                i += 1;
            }
            cur = v;
        }
        let wflip = steps
            .iter()
            .map(|s| match &s.kind {
                Kind::Conv { g, .. } => vec![0.0; g.weight_len()],
                _ => vec![],
            })
            .collect();
        Tiled {
            chain: chain.clone(),
            steps,
            outs,
            numels,
            threads: threads.max(1),
            cap_tiles: 0,
            chunks: Vec::new(),
            labels: Vec::new(),
            wflip,
            profiling: false,
            kept: false,
            prof_serial: [0.0; 3],
            prof_idle: 0.0,
        }
    }

    fn describe_step(s: &Step) -> String {
        let act = |a: &Option<Activation>| a.map_or(String::new(), |a| format!(" + {a:?}").to_lowercase());
        match &s.kind {
            Kind::Conv { g, act: a, .. } => {
                format!("conv {}→{} {}×{}{}{}", g.c, g.o, g.k, g.k, if g.pad > 0 { " pad" } else { "" }, act(a))
            }
            Kind::Pool { g, .. } => format!("{:?} pool {}", g.kind, g.size).to_lowercase(),
            Kind::Act(a) => format!("{a:?}").to_lowercase(),
            Kind::Linear { k, n, act: a, .. } => format!("linear {k}→{n}{}", act(a)),
        }
    }

    fn classes(&self) -> usize {
        self.chain.classes()
    }

    /// Make room for batches of up to `batch` examples.
    fn reserve(&mut self, batch: usize) {
        let per = count(batch).div_ceil(self.threads).max(1);
        if per <= self.cap_tiles {
            return;
        }
        let n_params = self.chain.ops.iter().fold(0, |m, op| match op {
            LayerOp::Conv { b, .. } | LayerOp::Linear { b, .. } => m.max(b.end),
            _ => m,
        });
        let max_numel = self.numels.iter().copied().max().unwrap_or(0);
        let classes = self.classes();
        self.chunks = (0..self.threads)
            .map(|_| {
                let mut c = Chunk {
                    vals: self.numels.iter().map(|&n| Aligned::zeros(per * n * L)).collect(),
                    dlogits: Aligned::zeros(per * classes * L),
                    da: [Aligned::zeros(max_numel * L), Aligned::zeros(max_numel * L)],
                    db: [Aligned::zeros(max_numel * L), Aligned::zeros(max_numel * L)],
                    grads: vec![0.0; n_params],
                    prof: vec![[0.0; 4]; self.steps.len()],
                    example_loss: vec![(0.0, false); per * L],
                    logit_row: vec![0.0; classes],
                    dlogit_row: vec![0.0; classes],
                    ..Chunk::default()
                };
                for s in &self.steps {
                    let z = Aligned::zeros;
                    let (mut xp, mut spread, mut dxp, mut dwl, mut dbl, mut douts, mut xts) =
                        (z(0), z(0), z(0), z(0), z(0), z(0), z(0));
                    match &s.kind {
                        Kind::Conv { g, .. } => {
                            let (a, b, d) = conv::scratch_len(g);
                            // Two padded inputs: one per tile of a pair (see `padded_input`).
                            (xp, spread, dxp) = (z(2 * a), z(b), z(d));
                            (dwl, dbl) = (z(g.weight_len() * L), z(g.o * L));
                        }
                        Kind::Linear { k, n, .. } => {
                            douts = z(per * n * L);
                            xts = z(per * L * linear::padded_k(*k));
                        }
                        _ => {}
                    }
                    c.xp.push(xp);
                    c.spread.push(spread);
                    c.dxp.push(dxp);
                    c.dwl.push(dwl);
                    c.dbl.push(dbl);
                    c.douts.push(douts);
                    c.xts.push(xts);
                }
                c
            })
            .collect();
        self.cap_tiles = per;
    }

    /// The flipped weights of every convolution, for the input gradients.
    fn flip_weights(&mut self, params: &[f32]) {
        for (s, wf) in self.steps.iter().zip(&mut self.wflip) {
            if let Kind::Conv { g, w, .. } = &s.kind {
                conv::flip_weights(wf, &params[w.clone()], g);
            }
        }
    }

    /// grads += the first `used` chunks' gradients, in chunk order.
    fn add_chunk_grads(&mut self, grads: &mut [f32], used: usize) {
        let mut clock = Lap::new(self.profiling);
        for c in &self.chunks[..used] {
            for (g, &p) in grads.iter_mut().zip(&c.grads) {
                *g += p;
            }
        }
        self.prof_serial[2] += clock.lap();
    }

    /// (tiles per chunk, chunks in use) for a batch.
    fn split(&self, batch: usize) -> (usize, usize) {
        let tiles = count(batch);
        let per = tiles.div_ceil(self.threads).max(1);
        (per, tiles.div_ceil(per))
    }

    fn run_forward(&mut self, engine: &CpuEngine, params: &[f32], batch: usize, keep: bool) {
        self.kept = keep;
        let (per, used) = self.split(batch);
        let tiles = count(batch);
        let (steps, profiling) = (&self.steps, self.profiling);
        engine.pool.install(|| {
            for_each_chunk(&mut self.chunks[..used], |ci, c| {
                let tiles = tile_range(ci, per, tiles).len();
                dispatch(ChunkPass { forward: true, keep, ..ChunkPass::new(steps, c, tiles, params, profiling) });
            });
        });
    }

    /// Host copy (B, numel) of value `v`.
    fn download_value(&self, v: usize, batch: usize) -> Vec<f32> {
        let numel = self.numels[v];
        let (per, used) = self.split(batch);
        let mut out = vec![0.0; batch * numel];
        for c in 0..used {
            let r = tile_range(c, per, count(batch));
            let first = r.start * L;
            let n = (batch - first).min(r.len() * L);
            from_tiles(&mut out[first * numel..], &self.chunks[c].vals[v], n, numel);
        }
        out
    }
}

/// Run step `s` forward on one tile of a chunk, reading its input from tile slot
/// `ti` of the step's input value and writing tile slot `to` of its output value.
#[inline(always)]
fn step_forward<V: Lanes<T = f32>>(s: &Step, c: &mut Chunk, si: usize, (ti, to): (usize, usize), params: &[f32]) {
    let (before, after) = c.vals.split_at_mut(s.output);
    let x = s.input_tile(before, ti);
    let y = &mut after[0][to * s.out_numel * L..(to + 1) * s.out_numel * L];
    match &s.kind {
        Kind::Conv { g, w, b, act } => {
            let xp: &[f32] = if g.pad == 0 {
                x
            } else {
                let xp = padded_input(&mut c.xp[si], g, to);
                conv::pad_tile(xp, x, g);
                xp
            };
            conv::forward_tile::<V>(y, xp, &params[w.clone()], Some(&params[b.clone()]), g, *act);
        }
        Kind::Pool { g, channels } => pool::forward_tile::<V>(y, x, g, *channels),
        Kind::Act(a) => {
            y.copy_from_slice(x);
            activation::apply::<V>(*a, y);
        }
        Kind::Linear { k, n, w, b, act } => {
            linear::forward_tile::<V>(y, x, &params[w.clone()], &params[b.clone()], *k, *n, *act)
        }
    }
}

/// The padded input of a convolution for the tile whose output is in slot `to`: one
/// buffer for each tile of a pair (pairs start at even tiles), so that the backward
/// pass right after the forward pass finds both still there.
#[inline(always)]
fn padded_input<'a>(xp: &'a mut [f32], g: &ConvGeom, to: usize) -> &'a mut [f32] {
    let n = g.padded_len() * L;
    &mut xp[(to % 2) * n..(to % 2 + 1) * n]
}

/// The tile slot of value `v` (of `values`, the last being the logits) for local
/// tile `t` of the pair that starts at tile `t0`: a slot per tile when the values
/// are kept, and always for the input and the logits; else the pair's tiles reuse
/// slots 0 and 1, so that the next pair overwrites them while they are in the cache.
#[inline(always)]
fn slot(keep: bool, v: usize, values: usize, t0: usize, t: usize) -> usize {
    if keep || v == 0 || v + 1 == values {
        t
    } else {
        t - t0
    }
}

/// Every step forward on tile `t0` of a chunk and, when `pair`, on tile `t0 + 1`.
#[inline(always)]
fn forward_pair<V: Lanes<T = f32>>(
    steps: &[Step],
    c: &mut Chunk,
    (t0, pair): (usize, bool),
    params: &[f32],
    keep: bool,
    clock: &mut Lap,
) {
    let values = c.vals.len();
    for (si, s) in steps.iter().enumerate() {
        let (ti, to) = (slot(keep, s.input, values, t0, t0), slot(keep, s.output, values, t0, t0));
        match &s.kind {
            Kind::Linear { k, n, w, b, act } if pair => {
                let (before, after) = c.vals.split_at_mut(s.output);
                let x = &before[s.input];
                let (xa, xb) = (&x[ti * s.in_numel * L..], &x[(ti + 1) * s.in_numel * L..]);
                let (ya, yb) = after[0][to * s.out_numel * L..(to + 2) * s.out_numel * L].split_at_mut(s.out_numel * L);
                let (w, b) = (&params[w.clone()], &params[b.clone()]);
                linear::forward_tile2::<V>([ya, yb], [xa, xb], w, b, *k, *n, *act);
            }
            _ => {
                // One call site: each step's kernels are inlined once.
                for u in 0..1 + pair as usize {
                    step_forward::<V>(s, c, si, (ti + u, to + u), params);
                }
            }
        }
        c.prof[si][0] += clock.lap();
    }
}

/// The loss of local tile `t` of a chunk (whose examples are `labels`, lanes past
/// them being padding) into `c.example_loss`, and its ∂L/∂logits into `c.dlogits`:
/// per example exactly what [`softmax_xent`] computes.
fn tile_loss(c: &mut Chunk, t: usize, labels: &[u8], class_weights: Option<&[f32]>, weight_sum: f32) {
    let classes = c.logit_row.len();
    let logits = &c.vals[c.vals.len() - 1][t * classes * L..(t + 1) * classes * L];
    let d = &mut c.dlogits[t * classes * L..(t + 1) * classes * L];
    d.fill(0.0);
    for (lane, &y) in labels.iter().skip(t * L).take(L).enumerate() {
        for (z, v) in c.logit_row.iter_mut().zip(logits.iter().skip(lane).step_by(L)) {
            *z = *v;
        }
        let y = y as usize;
        let w = loss::class_weight(class_weights, y);
        c.example_loss[t * L + lane] = loss::xent_example(Some(&mut c.dlogit_row), &c.logit_row, y, w, weight_sum);
        for (dst, v) in d.iter_mut().skip(lane).step_by(L).zip(&c.dlogit_row) {
            *dst = *v;
        }
    }
}

/// The activation fused into the step before pooling step `si`, when the pooling's
/// backward pass can apply its derivative as it stores the gradient (windows that
/// do not overlap): one pass over that gradient instead of two.
#[inline(always)]
fn act_before_pool(steps: &[Step], si: usize) -> Option<Activation> {
    let Kind::Pool { g, .. } = &steps[si].kind else { return None };
    match &steps[si.checked_sub(1)?].kind {
        Kind::Conv { act, .. } | Kind::Linear { act, .. } if g.stride >= g.size => *act,
        _ => None,
    }
}

/// Whether pooling step `si` takes the derivative of the activation fused into the
/// convolution before it in place, over that activation's outputs (see
/// [`pool::backward_tile_io`]; the convolution's weight gradient then reads
/// them from there): when those outputs are not kept for later, and the windows tile them.
fn pool_in_place(steps: &[Step], si: usize, keep: bool) -> bool {
    let Kind::Pool { g, .. } = &steps[si].kind else { return false };
    !keep
        && si > 0
        && matches!(steps[si - 1].kind, Kind::Conv { .. })
        && act_before_pool(steps, si).is_some()
        && pool::tiles_input(g)
}

/// A linear step's backward pass on local tile `t` before its input gradient:
/// the activation's derivative into dy (unless a pooling took it, `act_done`), and
/// the tile's output gradient and transposed input kept for the weight gradient.
#[inline(always)]
fn linear_backward_prelude<V: Lanes<T = f32>>(
    s: &Step,
    si: usize,
    c: &mut Chunk,
    (ti, to, t): (usize, usize, usize),
    dy: &mut [f32],
    act_done: bool,
) {
    let Kind::Linear { k, n, act, .. } = &s.kind else { unreachable!("a linear step") };
    let x = s.input_tile(&c.vals, ti);
    let y = s.output_tile(&c.vals, to);
    if let Some(a) = act.filter(|_| !act_done) {
        activation::backward_from_output::<V>(a, dy, y);
    }
    c.douts[si][t * n * L..(t + 1) * n * L].copy_from_slice(dy);
    let kp = linear::padded_k(*k);
    transpose_tile(&mut c.xts[si][t * L * kp..(t + 1) * L * kp], x, *k, kp);
}

/// Step `si`'s backward pass on local tile `t` (its values in slots ti and to):
/// dy (the gradient of its output) in, dx (of its input) out; the weight
/// gradients accumulated. `act_done`: the pooling after it has taken its
/// activation's derivative already (see [`act_before_pool`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn step_backward<V: Lanes<T = f32>>(
    steps: &[Step],
    si: usize,
    c: &mut Chunk,
    (ti, to, t): (usize, usize, usize),
    (dy, dx): (&mut [f32], &mut [f32]),
    act_done: bool,
    (keep, fresh): (bool, bool),
    params: &[f32],
    wflip: &[Vec<f32>],
    clock: &mut Lap,
) {
    let s = &steps[si];
    let first = si == 0;
    let dx = &mut dx[..s.in_numel * L];
    match &s.kind {
        Kind::Conv { g, act, .. } => {
            let x = s.input_tile(&c.vals, ti);
            let y = s.output_tile(&c.vals, to);
            // The pooling after this step left the gradient in place of the outputs.
            let dy: &[f32] = if act_done && pool_in_place(steps, si + 1, keep) {
                y
            } else {
                let dy = &mut dy[..s.out_numel * L];
                if let Some(a) = act.filter(|_| !act_done) {
                    activation::backward_from_output::<V>(a, dy, y);
                }
                dy
            };
            let xp: &[f32] = if g.pad == 0 {
                x
            } else {
                let xp = padded_input(&mut c.xp[si], g, to);
                // The forward pass of this pass padded it already.
                if !fresh {
                    conv::pad_tile(xp, x, g);
                }
                xp
            };
            c.prof[si][1] += clock.lap();
            conv::weight_grad_tile::<V>(&mut c.dwl[si], &mut c.dbl[si], dy, xp, g);
            c.prof[si][2] += clock.lap();
            if !first {
                conv::input_grad_tile::<V>(dx, dy, &wflip[si], g, &mut c.spread[si], &mut c.dxp[si]);
            }
            c.prof[si][3] += clock.lap();
        }
        Kind::Linear { k, n, w, .. } => {
            let dy = &mut dy[..s.out_numel * L];
            linear_backward_prelude::<V>(s, si, c, (ti, to, t), dy, act_done);
            c.prof[si][1] += clock.lap();
            if !first {
                linear::input_grad_tile::<V>(dx, dy, &params[w.clone()], *k, *n);
            }
            c.prof[si][3] += clock.lap();
        }
        Kind::Pool { g, channels } => {
            let dy = &dy[..s.out_numel * L];
            if !first {
                let io = if pool_in_place(steps, si, keep) {
                    pool::Io::in_place(s.input_tile_mut(&mut c.vals, ti))
                } else {
                    pool::Io::split(dx, s.input_tile(&c.vals, ti))
                };
                // One call site: each pooling kernel is inlined once.
                pool::backward_tile_io::<V>(io, dy, g, *channels, act_before_pool(steps, si));
            }
            c.prof[si][3] += clock.lap();
        }
        Kind::Act(a) => {
            let dy = &dy[..s.out_numel * L];
            let x = s.input_tile(&c.vals, ti);
            let y = s.output_tile(&c.vals, to);
            if !first {
                activation::backward_from_input::<V>(*a, dx, x, y, dy);
            }
            c.prof[si][3] += clock.lap();
        }
    }
}

/// Run the backward pass of every step on local tile `t0` of a chunk and, when
/// `pair`, on tile `t0 + 1` (see [`slot`]), from the tiles' ∂L/∂logits. Step by
/// step, one tile after the other (so every gradient accumulates in tile order),
/// except the linear layers' input gradients, taken for both tiles at once (each
/// broadcast weight then feeds two FMAs).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn pair_backward<V: Lanes<T = f32>>(
    steps: &[Step],
    c: &mut Chunk,
    (t0, pair): (usize, bool),
    (keep, fresh): (bool, bool),
    params: &[f32],
    wflip: &[Vec<f32>],
    classes: usize,
    clock: &mut Lap,
) {
    let values = c.vals.len();
    let tiles = 1 + pair as usize;
    let (mut d, mut dnext) = (std::mem::take(&mut c.da), std::mem::take(&mut c.db));
    for (t, du) in (t0..).zip(&mut d).take(tiles) {
        du[..classes * L].copy_from_slice(&c.dlogits[t * classes * L..(t + 1) * classes * L]);
    }
    // Whether the step after this one (a pooling) has taken this step's activation
    // backward already (see `act_before_pool`).
    let mut act_done = false;
    for (si, s) in steps.iter().enumerate().rev() {
        let slots = |t: usize| (slot(keep, s.input, values, t0, t), slot(keep, s.output, values, t0, t), t);
        match &s.kind {
            Kind::Linear { k, n, w, .. } if pair && si > 0 => {
                for (t, du) in (t0..).zip(&mut d) {
                    linear_backward_prelude::<V>(s, si, c, slots(t), &mut du[..s.out_numel * L], act_done);
                }
                c.prof[si][1] += clock.lap();
                let ([da, db], [xa, xb]) = (&d, &mut dnext);
                let dy = [&da[..s.out_numel * L], &db[..s.out_numel * L]];
                linear::input_grad_tile2::<V>(
                    [&mut xa[..s.in_numel * L], &mut xb[..s.in_numel * L]],
                    dy,
                    &params[w.clone()],
                    *k,
                    *n,
                );
                c.prof[si][3] += clock.lap();
            }
            _ => {
                // One call site: each step's kernels are inlined once.
                for u in 0..tiles {
                    let (dy, dx) = (&mut d[u][..], &mut dnext[u][..]);
                    step_backward::<V>(
                        steps,
                        si,
                        c,
                        slots(t0 + u),
                        (dy, dx),
                        act_done,
                        (keep, fresh),
                        params,
                        wflip,
                        clock,
                    );
                }
            }
        }
        act_done = matches!(s.kind, Kind::Pool { .. }) && si > 0 && act_before_pool(steps, si).is_some();
        std::mem::swap(&mut d, &mut dnext);
    }
    c.da = d;
    c.db = dnext;
}

/// Sum the chunk's per-lane and per-tile accumulators into its gradient buffer.
#[inline(always)]
fn chunk_weight_grads<V: Lanes<T = f32>>(steps: &[Step], c: &mut Chunk, tiles: usize) {
    c.grads.fill(0.0);
    for (si, s) in steps.iter().enumerate() {
        match &s.kind {
            Kind::Conv { w, b, .. } => {
                conv::reduce_lanes::<V>(&mut c.grads[w.clone()], &c.dwl[si]);
                conv::reduce_lanes::<V>(&mut c.grads[b.clone()], &c.dbl[si]);
                c.dwl[si].fill(0.0);
                c.dbl[si].fill(0.0);
            }
            Kind::Linear { k, n, w, b, .. } => {
                let (gw, gb) = c.grads.split_at_mut(b.start);
                linear::weight_grad::<V>(
                    &mut gw[w.clone()],
                    &mut gb[..b.len()],
                    &c.douts[si],
                    &c.xts[si],
                    tiles,
                    *k,
                    *n,
                );
            }
            _ => {}
        }
    }
}

/// The loss of a training pass, computed per tile inside the chunks.
#[derive(Clone, Copy)]
struct TileLoss<'a> {
    /// The chunk's examples' labels.
    labels: &'a [u8],
    class_weights: Option<&'a [f32]>,
    /// Σ w[y] over the whole batch.
    weight_sum: f32,
}

/// A chunk's pass over its first `tiles` tiles, two at a time: forward, then (in a
/// training pass) the pair's loss, then backward; after the last pair, the
/// weight gradients. Every kernel has one call site here, so each is compiled
/// once per instruction set whichever passes run.
struct ChunkPass<'a> {
    steps: &'a [Step],
    c: &'a mut Chunk,
    tiles: usize,
    params: &'a [f32],
    forward: bool,
    /// Keep every tile's values (for a later backward pass and [`Program::output`]);
    /// else only the input's and the logits, the others reusing two slots (see [`slot`]).
    keep: bool,
    loss: Option<TileLoss<'a>>,
    /// Backward with these flipped convolution weights.
    backward: Option<&'a [Vec<f32>]>,
    profiling: bool,
}

impl<'a> ChunkPass<'a> {
    fn new(steps: &'a [Step], c: &'a mut Chunk, tiles: usize, params: &'a [f32], profiling: bool) -> Self {
        ChunkPass { steps, c, tiles, params, forward: false, keep: true, loss: None, backward: None, profiling }
    }
}

impl Kernel<f32> for ChunkPass<'_> {
    type Output = ();
    #[inline(always)]
    fn run<V: Lanes<T = f32>>(self) {
        let ChunkPass { steps, c, tiles, params, forward, keep, loss, backward, profiling } = self;
        let classes = c.logit_row.len();
        let mut clock = Lap::new(profiling);
        let mut t0 = 0;
        while t0 < tiles {
            let pair = t0 + 1 < tiles;
            if forward {
                forward_pair::<V>(steps, c, (t0, pair), params, keep, &mut clock);
            }
            if let Some(l) = loss {
                for t in t0..t0 + 1 + pair as usize {
                    tile_loss(c, t, l.labels, l.class_weights, l.weight_sum);
                }
                c.prof_loss += clock.lap();
            }
            if let Some(wflip) = backward {
                pair_backward::<V>(steps, c, (t0, pair), (keep, forward), params, wflip, classes, &mut clock);
            }
            t0 += 2;
        }
        if backward.is_some() {
            clock.lap();
            chunk_weight_grads::<V>(steps, c, tiles);
            c.prof_reduce += clock.lap();
        }
    }
}

/// The scaled images at `indices` into tiles (the last one padded with zeros).
struct Gather<'a> {
    dst: &'a mut [f32],
    examples: &'a CpuExamples,
    indices: &'a [u32],
    numel: usize,
}

impl Kernel<f32> for Gather<'_> {
    type Output = ();
    #[inline(always)]
    fn run<V: Lanes<T = f32>>(self) {
        let Gather { dst, examples: ex, indices, numel } = self;
        let pixels = &ex.images.pixels;
        assert!(pixels.len() >= ex.images.count * numel && numel >= 4 && pixels.len() <= i32::MAX as usize);
        let (scale, shift) = (V::splat(ex.scale), V::splat(ex.shift));
        for (t, idx) in indices.chunks(L).enumerate() {
            let tile = &mut dst[t * numel * L..(t + 1) * numel * L];
            // Lanes past the batch read image 0 and are zeroed after scaling.
            let mut start = [0i32; L];
            let mut keep = [0.0f32; L];
            for (l, &i) in idx.iter().enumerate() {
                assert!((i as usize) < ex.images.count, "example {i} out of range");
                start[l] = (i as usize * numel) as i32;
                keep[l] = 1.0;
            }
            let keep = V::load(&keep);
            // Whole words: bytes f..f+3 of each image, for f up to numel − 4.
            for f in 0..numel - 3 {
                let mut at = start;
                for a in at.iter_mut() {
                    *a += f as i32;
                }
                // SAFETY: every image starts at i·numel with i < count, so bytes
                // start + f .. start + f + 4 lie inside that image's numel bytes.
                let v = unsafe { V::gather_u8(pixels.as_ptr(), &at) };
                // x·scale + shift rounded twice, as the scalar tail and every other path round it.
                v.mul(scale).add(shift).mul(keep).store(&mut tile[f * L..]);
            }
            for f in numel - 3..numel {
                for l in 0..L {
                    tile[f * L + l] = match idx.get(l) {
                        Some(&i) => pixels[i as usize * numel + f] as f32 * ex.scale + ex.shift,
                        None => 0.0,
                    };
                }
            }
        }
        // Tiles of this chunk past the batch stay as they are: nothing reads them.
    }
}

/// One step forward on one tile (recomputing an output for [`Program::output`]).
struct OneStep<'a> {
    s: &'a Step,
    c: &'a mut Chunk,
    si: usize,
    t: usize,
    params: &'a [f32],
}

impl Kernel<f32> for OneStep<'_> {
    type Output = ();
    #[inline(always)]
    fn run<V: Lanes<T = f32>>(self) {
        step_forward::<V>(self.s, self.c, self.si, (self.t, self.t), self.params);
    }
}

impl Program<CpuEngine> for Tiled {
    fn load_batch(&mut self, engine: &CpuEngine, examples: &CpuExamples, indices: &[u32]) {
        let mut clock = Lap::new(self.profiling);
        let batch = indices.len();
        self.reserve(batch);
        self.labels.clear();
        self.labels.extend(indices.iter().map(|&i| examples.labels[i as usize]));
        let (per, used) = self.split(batch);
        let numel = self.numels[0];
        let tiles = count(batch);
        engine.pool.install(|| {
            for_each_chunk(&mut self.chunks[..used], |ci, c| {
                let r = tile_range(ci, per, tiles);
                let idx = &indices[(r.start * L).min(batch)..(r.end * L).min(batch)];
                dispatch(Gather { dst: &mut c.vals[0], examples, indices: idx, numel });
            });
        });
        self.prof_serial[0] += clock.lap();
    }

    fn load_values(&mut self, _engine: &CpuEngine, x: &[f32], labels: &[u8]) {
        let batch = labels.len();
        self.reserve(batch);
        self.labels = labels.to_vec();
        let (per, used) = self.split(batch);
        let numel = self.numels[0];
        for (ci, c) in self.chunks[..used].iter_mut().enumerate() {
            let r = tile_range(ci, per, count(batch));
            let first = r.start * L;
            let n = (batch - first).min(r.len() * L);
            crate::layers::tiles::to_tiles(&mut c.vals[0], &x[first * numel..], n, numel);
        }
    }

    fn forward(&mut self, engine: &CpuEngine, params: &Vec<f32>, batch: usize) {
        self.run_forward(engine, params, batch, true);
    }

    fn forward_inference(&mut self, engine: &CpuEngine, params: &Vec<f32>, batch: usize) {
        self.run_forward(engine, params, batch, false);
    }

    fn loss(&mut self, _engine: &CpuEngine, batch: usize, class_weights: Option<&Vec<f32>>, grad: bool) -> LossStats {
        let mut clock = Lap::new(self.profiling);
        let classes = self.classes();
        let last = self.steps.last().map_or(0, |s| s.output);
        let logits = self.download_value(last, batch);
        let mut d = grad.then(|| vec![0.0; batch * classes]);
        let stats = softmax_xent(
            d.as_deref_mut(),
            &logits,
            &self.labels[..batch],
            class_weights.map(|w| &w[..classes]),
            classes,
        );
        if let Some(d) = d {
            let (per, used) = self.split(batch);
            for (ci, c) in self.chunks[..used].iter_mut().enumerate() {
                let r = tile_range(ci, per, count(batch));
                let first = r.start * L;
                let n = (batch - first).min(r.len() * L);
                crate::layers::tiles::to_tiles(&mut c.dlogits, &d[first * classes..], n, classes);
            }
        }
        self.prof_serial[1] += clock.lap();
        stats
    }

    fn backward(&mut self, engine: &CpuEngine, params: &Vec<f32>, grads: &mut Vec<f32>, batch: usize) {
        assert!(self.kept, "backward pass after an inference-only forward pass");
        self.flip_weights(params);
        let (per, used) = self.split(batch);
        let tiles = count(batch);
        let (steps, wflip, profiling) = (&self.steps, &self.wflip[..], self.profiling);
        engine.pool.install(|| {
            for_each_chunk(&mut self.chunks[..used], |ci, c| {
                let tiles = tile_range(ci, per, tiles).len();
                dispatch(ChunkPass { backward: Some(wflip), ..ChunkPass::new(steps, c, tiles, params, profiling) });
            });
        });
        self.add_chunk_grads(grads, used);
    }

    /// Each chunk pair by pair, forward, loss and backward: a pair's values are
    /// still in the core's cache when its backward pass reads them, and stay in two
    /// slots. The same bits as [`Self::forward`], [`Self::loss`] and [`Self::backward`]:
    /// every tile's loss and gradient are computed as there, the weight gradients
    /// accumulated in the same tile order, the losses summed in example order.
    fn train_pass(
        &mut self,
        engine: &CpuEngine,
        params: &Vec<f32>,
        grads: &mut Vec<f32>,
        batch: usize,
        class_weights: Option<&Vec<f32>>,
        tally: &mut TrainStats,
    ) -> bool {
        self.kept = false;
        self.flip_weights(params);
        let classes = self.classes();
        let class_weights = class_weights.map(|w| &w[..classes]);
        let labels = &self.labels[..batch];
        let weight_sum: f32 = loss::weight_sum(labels, class_weights);
        let (per, used) = self.split(batch);
        let tiles = count(batch);
        let (steps, wflip, profiling) = (&self.steps, &self.wflip[..], self.profiling);
        let mut pass = Lap::new(self.profiling);
        engine.pool.install(|| {
            for_each_chunk(&mut self.chunks[..used], |ci, c| {
                let mut busy = Lap::new(profiling);
                let r = tile_range(ci, per, tiles);
                let labels = &labels[r.start * L..(r.end * L).min(batch)];
                dispatch(ChunkPass {
                    forward: true,
                    keep: false,
                    loss: Some(TileLoss { labels, class_weights, weight_sum }),
                    backward: Some(wflip),
                    ..ChunkPass::new(steps, c, r.len(), params, profiling)
                });
                c.prof_busy = busy.lap();
            });
        });
        if self.profiling {
            let busy: f64 = self.chunks[..used].iter().map(|c| c.prof_busy).sum();
            self.prof_idle += (used as f64 * pass.lap() - busy).max(0.0);
        }
        let mut clock = Lap::new(self.profiling);
        let mut stats = LossStats { weight_sum: weight_sum as f64, ..LossStats::default() };
        for (ci, c) in self.chunks[..used].iter().enumerate() {
            let r = tile_range(ci, per, tiles);
            let n = (batch - r.start * L).min(r.len() * L);
            for &(loss, correct) in &c.example_loss[..n] {
                stats.weighted_loss_sum += loss;
                stats.correct += usize::from(correct);
            }
        }
        self.prof_serial[1] += clock.lap();
        let finite = stats.mean().is_finite();
        if finite {
            self.add_chunk_grads(grads, used);
        }
        engine.tally_add(tally, &stats, batch);
        finite
    }

    fn set_profiling(&mut self, on: bool) {
        self.profiling = on;
        self.prof_serial = [0.0; 3];
        self.prof_idle = 0.0;
        for c in &mut self.chunks {
            c.prof.iter_mut().for_each(|p| *p = [0.0; 4]);
            c.prof_reduce = 0.0;
            c.prof_loss = 0.0;
        }
    }

    fn profile_report(&self) -> Option<String> {
        if !self.profiling {
            return None;
        }
        // Thread-seconds summed over chunks.
        let mut rows: Vec<(String, [f64; 4])> = Vec::new();
        for (si, s) in self.steps.iter().enumerate() {
            let mut t = [0.0; 4];
            for c in &self.chunks {
                for (a, b) in t.iter_mut().zip(&c.prof[si]) {
                    *a += b;
                }
            }
            rows.push((Self::describe_step(s), t));
        }
        let reduce: f64 = self.chunks.iter().map(|c| c.prof_reduce).sum();
        // The loss: per tile inside the chunks (a training pass), and summed up (or,
        // after a separate forward pass, computed) on one thread.
        let tile_loss: f64 = self.chunks.iter().map(|c| c.prof_loss).sum();
        let total: f64 = rows.iter().map(|r| r.1.iter().sum::<f64>()).sum::<f64>()
            + reduce
            + tile_loss
            + self.prof_idle
            + self.prof_serial.iter().sum::<f64>();
        let pct = |v: f64| 100.0 * v / total;
        let mut out = format!(
            "  {:<28} {:>8} {:>8} {:>8} {:>8}   (% of {:.3} thread-seconds)\n",
            "step", "forward", "bwd act", "bwd dW", "bwd dX", total
        );
        for (name, t) in &rows {
            out += &format!(
                "  {:<28} {:>7.1}% {:>7.1}% {:>7.1}% {:>7.1}%\n",
                name,
                pct(t[0]),
                pct(t[1]),
                pct(t[2]),
                pct(t[3])
            );
        }
        out += &format!("  {:<28} {:>7.1}%\n", "sum dW accumulators", pct(reduce));
        out += &format!("  {:<28} {:>7.1}%\n", "loss per tile", pct(tile_loss));
        out += &format!(
            "  {:<28} {:>7.1}%   (threads done early, waiting)\n",
            "idle at the end of passes",
            pct(self.prof_idle)
        );
        for (name, v) in
            ["load batch (serial part)", "loss (serial)", "add chunk gradients (serial)"].iter().zip(self.prof_serial)
        {
            out += &format!("  {:<28} {:>7.1}%\n", name, pct(v));
        }
        Some(out)
    }

    fn output(&self, _engine: &CpuEngine, params: &Vec<f32>, i: usize, batch: usize) -> Vec<f32> {
        assert!(self.kept || i + 1 == self.outs.len(), "layer {i}'s output after a pass that kept only the logits (an inference-only forward pass or a training pass)");
        match self.outs[i] {
            Out::Value(v) => self.download_value(v, batch),
            Out::PreActivation(si) => {
                // Recompute the step without its activation.
                let mut s = self.steps[si].clone();
                match &mut s.kind {
                    Kind::Conv { act, .. } | Kind::Linear { act, .. } => *act = None,
                    _ => {}
                }
                let numel = s.out_numel;
                let (per, used) = self.split(batch);
                let mut out = vec![0.0; batch * numel];
                for ci in 0..used {
                    let r = tile_range(ci, per, count(batch));
                    let mut c = Chunk {
                        vals: self.chunks[ci].vals.clone(),
                        xp: self.chunks[ci].xp.clone(),
                        ..Chunk::default()
                    };
                    for t in 0..r.len() {
                        dispatch(OneStep { s: &s, c: &mut c, si, t, params });
                    }
                    let first = r.start * L;
                    let n = (batch - first).min(r.len() * L);
                    from_tiles(&mut out[first * numel..], &c.vals[s.output], n, numel);
                }
                out
            }
        }
    }
}
