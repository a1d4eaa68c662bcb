//! The convolution kernels alone, timed on one tile of L examples with hot caches
//! (`lenet bench --kernels`): what each kernel can do when memory is not in the way,
//! to set beside its share of a training step (`lenet bench --profile`). docs/perf.md
//! quotes these figures; being timings, they live here and not in the test suite.

use super::conv::{forward_tile, input_grad_tile, scratch_len, weight_grad_tile, ConvGeom};
use super::tiles::Aligned;
use super::{with_lanes, L};
use crate::spec::Activation;

/// One kernel's best time per tile over the rounds.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTiming {
    /// e.g. "conv2 forward + sigmoid".
    pub kernel: String,
    pub geom: ConvGeom,
    pub us_per_tile: f64,
    /// Multiply-adds counted as 2 FLOP, over the whole tile.
    pub gflops: f64,
}

impl KernelTiming {
    pub fn us_per_example(&self) -> f64 {
        self.us_per_tile / L as f64
    }
}

/// d2l's two convolutions: conv1 (1→6, 5×5, pad 2, on 28×28) and conv2 (6→16, 5×5, on 14×14).
const CONV1: ConvGeom = ConvGeom { c: 1, h: 28, w: 28, o: 6, k: 5, pad: 2, stride: 1 };
const CONV2: ConvGeom = ConvGeom { c: 6, h: 14, w: 14, o: 16, k: 5, pad: 0, stride: 1 };

/// Deterministic, non-trivial values (no denormals, no zeros to skip).
fn filled(len: usize, modulus: usize, step: f32) -> Aligned<f32> {
    let mut v = Aligned::<f32>::zeros(len);
    v.iter_mut().enumerate().for_each(|(i, x)| *x = (i % modulus) as f32 * step);
    v
}

/// Best of `rounds` timings of `reps` back-to-back calls, in seconds per call.
fn best_secs(rounds: usize, reps: usize, mut f: impl FnMut(usize)) -> f64 {
    (0..rounds.max(1))
        .map(|_| {
            let t = std::time::Instant::now();
            f(reps);
            t.elapsed().as_secs_f64() / reps as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn timing(kernel: &str, geom: ConvGeom, secs: f64) -> KernelTiming {
    let flops = 2.0 * (geom.out_len() * geom.patch_len() * L) as f64;
    KernelTiming { kernel: kernel.into(), geom, us_per_tile: secs * 1e6, gflops: flops / secs / 1e9 }
}

/// Forward (with and without a fused sigmoid), input gradient and weight gradient of
/// d2l's convolutions on this CPU's instruction set, `reps` calls per round.
pub fn time_conv_kernels(reps: usize, rounds: usize) -> Vec<KernelTiming> {
    let reps = reps.max(1);
    let mut out = Vec::new();
    for (name, g) in [("conv1", CONV1), ("conv2", CONV2)] {
        let xp = filled(g.padded_len() * L, 7, 0.1);
        let w: Vec<f32> = (0..g.weight_len()).map(|i| (i % 5) as f32 * 0.01).collect();
        let b = vec![0.1f32; g.o];
        let mut y = Aligned::<f32>::zeros(g.out_len() * L);
        for act in [None, Some(Activation::Sigmoid)] {
            let secs = best_secs(rounds, reps, |reps| {
                with_lanes!('a, T => V;
                    y: &'a mut [T] = &mut y, xp: &'a [T] = &xp, w: &'a [T] = &w, b: &'a [T] = &b,
                    g: ConvGeom = g, act: Option<Activation> = act, reps: usize = reps;
                    () => for _ in 0..reps { forward_tile::<V>(y, xp, w, Some(b), &g, act) })
            });
            let what = if act.is_some() { format!("{name} forward + sigmoid") } else { format!("{name} forward") };
            out.push(timing(&what, g, secs));
        }
        let dz = filled(g.out_len() * L, 5, 0.01);
        let mut dwl = Aligned::<f32>::zeros(g.weight_len() * L);
        let mut dbl = Aligned::<f32>::zeros(g.o * L);
        let secs = best_secs(rounds, reps, |reps| {
            with_lanes!('a, T => V;
                dwl: &'a mut [T] = &mut dwl, dbl: &'a mut [T] = &mut dbl, dz: &'a [T] = &dz, xp: &'a [T] = &xp,
                g: ConvGeom = g, reps: usize = reps;
                () => for _ in 0..reps { weight_grad_tile::<V>(dwl, dbl, dz, xp, &g) })
        });
        out.push(timing(&format!("{name} weight gradient"), g, secs));
        // The network never needs conv1's input gradient (its input is the image).
        if name == "conv2" {
            let (_, spread_len, dxp_len) = scratch_len(&g);
            let (mut spread, mut dxp) = (Aligned::<f32>::zeros(spread_len), Aligned::<f32>::zeros(dxp_len));
            let mut dx = Aligned::<f32>::zeros(g.in_len() * L);
            let secs = best_secs(rounds, reps, |reps| {
                with_lanes!('a, T => V;
                    dx: &'a mut [T] = &mut dx, dz: &'a [T] = &dz, w: &'a [T] = &w,
                    spread: &'a mut [T] = &mut spread, dxp: &'a mut [T] = &mut dxp, g: ConvGeom = g, reps: usize = reps;
                    () => for _ in 0..reps { input_grad_tile::<V>(dx, dz, w, &g, spread, dxp) })
            });
            out.push(timing(&format!("{name} input gradient"), g, secs));
        }
    }
    out
}
