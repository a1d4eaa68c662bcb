//! The f64 reference chain (`lenet::internal::reference::chain`: the network computed layer by
//! layer in f64 with the library's reference loops) and the comparisons the tests make
//! against it. It is checked against finite differences (tests/network.rs) and is the
//! oracle the f32 network is checked against on every instruction set (tests/network.rs,
//! tests/engine.rs). Included (`#[path]`) by those test binaries.

pub use lenet::internal::reference::chain as reference;
use lenet::network::param_layout;
use lenet::spec::Spec;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Asserts that every parameter tensor of `got` is within `rel` of `want`, each tensor
/// against its own largest magnitude: conv1's gradients are hundreds of times smaller
/// than the last bias's, and a scale shared by the whole network would hide their errors.
pub fn assert_grads_close(what: &str, spec: &Spec, got: &[f32], want: &[f64], rel: f64) {
    assert_eq!(got.len(), want.len(), "{what}: gradient lengths");
    for info in param_layout(&spec.resolve().unwrap()) {
        assert_close(&format!("{what}: grad {}", info.name), &got[info.range()], &want[info.range()], rel);
    }
}

/// Asserts |got − want| ≤ rel · (max |want| + |want|) elementwise.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], rel: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "{what}: the reference is all zeros, nothing to compare");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= rel * (scale + w.abs()),
            "{what}[{i}]: {g} vs {w} (tensor's largest magnitude {scale:.3e})"
        );
    }
}

/// A random case for `spec`: parameters in ±0.3, a batch of `batch` inputs in [0, 1) and
/// labels, from `seed`.
#[allow(dead_code)] // not every test binary that includes this draws its own cases
pub fn random_case(spec: &Spec, batch: usize, seed: u64) -> (Vec<f64>, Vec<f64>, Vec<u8>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = spec.resolve().unwrap().iter().map(|l| l.param_count()).sum();
    let s = spec.input.size;
    let params = (0..n).map(|_| rng.gen_range(-0.3..0.3)).collect();
    let x = (0..batch * s * s).map(|_| rng.gen_range(0.0..1.0)).collect();
    let labels = (0..batch).map(|_| rng.gen_range(0..10u8)).collect();
    (params, x, labels)
}
