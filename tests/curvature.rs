//! SDLM's curvature (appendix C of the paper): the second derivatives backpropagated
//! through the layers against the Gauss–Newton diagonal computed directly, JᵀHJ with
//! the Jacobian J by finite differences, on tiny networks where the paper's diagonal
//! recursion is exact (every unit under test feeds its own output of a criterion whose
//! Hessian is diagonal); and the criteria's own second derivatives against finite
//! differences.

use lenet::internal::curvature::gauss_newton_diagonal;
use lenet::internal::layers::loss::batch_loss;
use lenet::internal::layers::rbf::{criterion_curvature, rbf_forward};
use lenet::internal::layers::Par;
use lenet::network::param_layout;
use lenet::spec::{Criterion, Spec};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[path = "common/reference.rs"]
#[allow(dead_code)] // the chain's outputs only; the comparisons are the other tests'
mod reference;

/// A spec from TOML with RBF outputs of `n` random ±1 bitmaps and criterion `loss`.
fn tiny(size: usize, layers: &str, n: usize, loss: &str, seed: u64) -> Spec {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let pictures: Vec<String> =
        (0..10).map(|_| (0..n).map(|_| if rng.gen_bool(0.5) { '#' } else { '.' }).collect()).collect();
    let toml = format!(
        "name = \"tiny\"\nloss = {loss}\n[input]\nsize = {size}\n{layers}\n[[layers]]\ntype = \"rbf\"\nbitmaps = {pictures:?}\n"
    );
    Spec::from_toml(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

/// The Gauss–Newton diagonal of the MSE criterion (equation 8, E = Σ_j (x_j − c_j)², whose
/// Hessian in x, the RBF layer's input, is 2·I) computed directly: per pattern
/// 2 Σ_j (∂x_j/∂w_k)², with ∂x/∂w_k by central differences of the f64 reference chain;
/// averaged over the patterns.
fn direct_gauss_newton(spec: &Spec, params: &[f64], x: &[f64], batch: usize) -> Vec<f64> {
    let layers = spec.resolve().unwrap();
    let rbf_input = layers.len() - 2;
    let labels = vec![0u8; batch];
    let features = |p: &[f64]| reference::reference(spec, p, x, &labels, None).outputs[rbf_input].clone();
    let mut h = vec![0.0; params.len()];
    let mut p = params.to_vec();
    let eps = 1e-6;
    for k in 0..params.len() {
        p[k] = params[k] + eps;
        let up = features(&p);
        p[k] = params[k] - eps;
        let down = features(&p);
        p[k] = params[k];
        h[k] = up.iter().zip(&down).map(|(u, d)| 2.0 * ((u - d) / (2.0 * eps)).powi(2)).sum::<f64>() / batch as f64;
    }
    h
}

fn setup(spec: &Spec, batch: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n: usize = spec.resolve().unwrap().iter().map(|l| l.param_count()).sum();
    let s = spec.input.size;
    let params = (0..n).map(|_| rng.gen_range(-0.5..0.5)).collect();
    let x = (0..batch * s * s).map(|_| rng.gen_range(-0.1..1.175)).collect();
    (params, x)
}

/// Backpropagated against direct, for the parameter tensors named in `exact`.
fn check(spec: &Spec, exact: &[&str]) {
    let batch = 3;
    let (params, x) = setup(spec, batch, 5);
    let layers = spec.resolve().unwrap();
    let got = gauss_newton_diagonal(&layers, spec.loss, &params, &x, batch, Par::new(2));
    let want = direct_gauss_newton(spec, &params, &x, batch);
    for info in param_layout(&layers).iter().filter(|i| exact.contains(&i.name.as_str())) {
        let (g, w) = (&got[info.range()], &want[info.range()]);
        let scale = w.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(scale > 0.0, "{}: all zero", info.name);
        for (i, (a, b)) in g.iter().zip(w).enumerate() {
            assert!((a - b).abs() <= 1e-6 * scale, "{}[{i}]: backpropagated {a} vs direct {b}", info.name);
        }
    }
}

#[test]
fn linear_and_scaled_tanh_match_the_direct_gauss_newton_diagonal() {
    let spec = tiny(
        4,
        "[[layers]]\ntype = \"flatten\"\n[[layers]]\ntype = \"linear\"\nout_features = 12\n[[layers]]\ntype = \"scaled-tanh\"",
        12,
        "{ kind = \"mse\" }",
        1,
    );
    check(&spec, &["1.weight", "1.bias"]);
}

#[test]
fn trainable_subsampling_matches_the_direct_gauss_newton_diagonal() {
    let spec = tiny(
        8,
        "[[layers]]\ntype = \"subsample\"\nsize = 2\n[[layers]]\ntype = \"scaled-tanh\"\n[[layers]]\ntype = \"flatten\"",
        16,
        "{ kind = \"mse\" }",
        2,
    );
    check(&spec, &["0.weight", "0.bias"]);
}

#[test]
fn a_masked_convolution_matches_the_direct_gauss_newton_diagonal_shared_weights_summed() {
    // The second convolution's units each feed their own RBF input: exact there. Its
    // shared weights' entries are sums over the 16 positions; the left-out kernels are 0.
    let spec = tiny(
        7,
        "[[layers]]\ntype = \"conv\"\nout_channels = 2\nkernel = 2\n\
         [[layers]]\ntype = \"conv\"\nout_channels = 3\nkernel = 3\ntable = [[0], [1], [0, 1]]\n\
         [[layers]]\ntype = \"scaled-tanh\"\n[[layers]]\ntype = \"flatten\"",
        48,
        "{ kind = \"mse\" }",
        3,
    );
    check(&spec, &["1.weight", "1.bias"]);
    let layers = spec.resolve().unwrap();
    let (params, x) = setup(&spec, 2, 6);
    let h = gauss_newton_diagonal(&layers, spec.loss, &params, &x, 2, Par::SERIAL);
    let w = &param_layout(&layers)[2];
    // Map 0 reads only input map 0: its kernel over map 1 (9 weights at 9..18) is left out.
    assert!(h[w.range()][9..18].iter().all(|&v| v == 0.0));
    assert!(h[w.range()][..9].iter().all(|&v| v > 0.0));
}

#[test]
fn the_papers_criteria_second_derivatives_match_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let (k, n) = (84, 10);
    let centres: Vec<f64> = (0..n * k).map(|_| if rng.gen_bool(0.5) { 1.0 } else { -1.0 }).collect();
    // Near one bitmap (a trained output) and far from all (an untrained one).
    let near: Vec<f64> = centres[3 * k..4 * k].iter().map(|c| c * 0.9 + rng.gen_range(-0.2..0.2)).collect();
    let far: Vec<f64> = (0..k).map(|_| rng.gen_range(-1.7..1.7)).collect();
    for (what, x) in [("near", near), ("far", far)] {
        for criterion in [Criterion::Map { j: 10.0 }, Criterion::Map { j: 0.1 }, Criterion::Mse] {
            let loss = |x: &[f64]| {
                let mut z = vec![0.0; n];
                rbf_forward(&mut z, x, &centres, 1, k, n);
                batch_loss(criterion, None, &z, &[3], None, n).mean()
            };
            let j = match criterion {
                Criterion::Map { j } => Some(j as f64),
                _ => None,
            };
            let mut h = vec![0.0; k];
            criterion_curvature(&mut h, &x, &centres, j);
            let mut xs = x.clone();
            let e = 1e-4;
            for i in 0..k {
                let orig = xs[i];
                xs[i] = orig + e;
                let up = loss(&xs);
                xs[i] = orig - e;
                let down = loss(&xs);
                xs[i] = orig;
                let numeric = (up - 2.0 * loss(&xs) + down) / (e * e);
                assert!(h[i] >= 0.0, "{what} {criterion:?}: negative curvature {}", h[i]);
                assert!(
                    (h[i] - numeric).abs() < 1e-4 * (1.0 + numeric.abs()),
                    "{what} {criterion:?} x[{i}]: {} vs {numeric}",
                    h[i]
                );
            }
        }
    }
}

#[test]
fn lenet5s_curvature_is_finite_positive_and_zero_only_where_left_out() {
    let spec = Spec::lenet5();
    let layers = spec.resolve().unwrap();
    let (params, x) = setup(&spec, 4, 8);
    let params: Vec<f64> = params.iter().map(|v| v * 0.1).collect();
    let h = gauss_newton_diagonal(&layers, spec.loss, &params, &x, 4, Par::new(2));
    let infos = param_layout(&layers);
    let c3 = infos.iter().find(|i| i.name == "4.weight").unwrap();
    let zeros = h.iter().filter(|&&v| v == 0.0).count();
    assert_eq!(zeros, 36 * 25, "only C3's 36 left-out kernels have no curvature");
    assert!(h.iter().all(|v| v.is_finite() && *v >= 0.0));
    assert!(h[c3.range()].iter().filter(|&&v| v == 0.0).count() == 36 * 25);
}
