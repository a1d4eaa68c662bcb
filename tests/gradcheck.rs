//! The reference layers (src/reference/: plain loops from the definitions) against
//! central finite differences in f64 and values worked by hand; then the CPU kernels,
//! run in f64, against the reference, forward and backward, on the geometries the
//! presets use and on awkward ones.

use lenet::internal::layers::activation::{activation_backward, activation_forward};
use lenet::internal::layers::conv::{conv2d_backward, conv2d_forward, ConvGeom};
use lenet::internal::layers::linear::{linear_backward, linear_forward};
use lenet::internal::layers::loss::{batch_loss, softmax_xent};
use lenet::internal::layers::pool::{pool_backward, pool_forward, PoolGeom, PoolKind};
use lenet::internal::layers::rbf::{rbf_backward, rbf_forward};
use lenet::internal::layers::subsample::{subsample_backward, subsample_forward, SubsampleGeom};
use lenet::internal::layers::Par;
use lenet::internal::reference as r;
use lenet::spec::{Activation, Criterion};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn randn(rng: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Check `analytic` ≈ ∂f/∂x by central differences, element by element.
fn check(name: &str, x: &mut [f64], analytic: &[f64], f: &mut dyn FnMut(&[f64]) -> f64) {
    const EPS: f64 = 1e-6;
    assert_eq!(x.len(), analytic.len(), "{name}: lengths");
    for i in 0..x.len() {
        let orig = x[i];
        x[i] = orig + EPS;
        let up = f(x);
        x[i] = orig - EPS;
        let down = f(x);
        x[i] = orig;
        let numeric = (up - down) / (2.0 * EPS);
        let err = (numeric - analytic[i]).abs() / (1.0 + numeric.abs());
        assert!(err < 1e-6, "{name}[{i}]: analytic {} vs numeric {numeric}", analytic[i]);
    }
}

/// `got` equals `want` to rounding: |got − want| ≤ 1e-12·(1 + |want|) elementwise.
fn same(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-12 * (1.0 + w.abs()), "{what}[{i}]: {g} vs the reference's {w}");
    }
}

const PARS: [Par; 3] = [Par::SERIAL, Par { chunks: 2 }, Par { chunks: 3 }];

/// The presets' convolutions and awkward ones: 5×5 and 3×3 kernels, strides 1 and 2,
/// with and without padding, widths that end in every register-block width.
const CONVS: [ConvGeom; 7] = [
    ConvGeom { c: 1, h: 28, w: 28, o: 6, k: 5, pad: 2, stride: 1 },
    ConvGeom { c: 6, h: 14, w: 14, o: 16, k: 5, pad: 0, stride: 1 },
    ConvGeom { c: 16, h: 5, w: 5, o: 12, k: 5, pad: 0, stride: 1 },
    ConvGeom { c: 1, h: 9, w: 11, o: 6, k: 5, pad: 2, stride: 1 },
    ConvGeom { c: 2, h: 12, w: 13, o: 3, k: 5, pad: 1, stride: 2 },
    ConvGeom { c: 3, h: 7, w: 6, o: 4, k: 3, pad: 1, stride: 2 },
    ConvGeom { c: 2, h: 8, w: 10, o: 9, k: 3, pad: 0, stride: 1 },
];

const POOLS: [(PoolKind, usize, usize, usize, usize); 5] = [
    (PoolKind::Avg, 28, 28, 2, 2),
    (PoolKind::Max, 10, 10, 2, 2),
    (PoolKind::Avg, 7, 6, 3, 2),
    (PoolKind::Max, 7, 6, 3, 2),
    (PoolKind::Max, 6, 5, 2, 1),
];

const ACTIVATIONS: [Activation; 5] =
    [Activation::Sigmoid, Activation::Tanh, Activation::ScaledTanh, Activation::Relu, Activation::LeakyRelu(0.1)];

const CRITERIA: [Criterion; 4] =
    [Criterion::CrossEntropy, Criterion::Map { j: 10.0 }, Criterion::Map { j: 0.1 }, Criterion::Mse];

/// Activation inputs kept away from ReLU's kink, where the derivative is not defined.
fn activation_inputs(rng: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
    randn(rng, n).into_iter().map(|v| if v.abs() < 0.01 { 0.5 } else { v * 3.0 }).collect()
}

/// Outputs for `criterion`: logits, or RBF outputs −y (distances on a trained scale).
fn criterion_outputs(rng: &mut ChaCha8Rng, criterion: Criterion, n: usize) -> Vec<f64> {
    match criterion {
        Criterion::CrossEntropy => randn(rng, n).into_iter().map(|v| v * 5.0).collect(),
        _ => (0..n).map(|_| -rng.gen_range(0.0..30.0)).collect(),
    }
}

// ---- the reference against finite differences --------------------------------------

#[test]
fn reference_conv_backward_matches_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for g in [CONVS[4], CONVS[5], ConvGeom { c: 2, h: 6, w: 5, o: 3, k: 3, pad: 1, stride: 1 }] {
        let batch = 2;
        let (mut x, mut w, mut b) =
            (randn(&mut rng, batch * g.in_len()), randn(&mut rng, g.weight_len()), randn(&mut rng, g.o));
        let dout = randn(&mut rng, batch * g.out_len()); // L = Σ out·dout
        let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; w.len()], vec![0.0; b.len()]);
        r::conv::conv_backward(&mut dx, &mut dw, &mut db, &dout, &x, &w, &g, batch);
        let loss = |x: &[f64], w: &[f64], b: &[f64]| {
            let mut out = vec![0.0; batch * g.out_len()];
            r::conv::conv_forward(&mut out, x, w, b, &g, batch);
            dot(&out, &dout)
        };
        let (w0, b0, x0) = (w.clone(), b.clone(), x.clone());
        check("conv dx", &mut x, &dx, &mut |x| loss(x, &w0, &b0));
        check("conv dw", &mut w, &dw, &mut |w| loss(&x0, w, &b0));
        check("conv db", &mut b, &db, &mut |b| loss(&x0, &w0, b));
    }
}

#[test]
fn reference_linear_pool_and_activation_backward_match_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let (batch, k, n) = (5, 7, 4);
    let (mut x, mut w, mut b) = (randn(&mut rng, batch * k), randn(&mut rng, n * k), randn(&mut rng, n));
    let dout = randn(&mut rng, batch * n);
    let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; w.len()], vec![0.0; n]);
    r::linear::linear_backward(&mut dx, &mut dw, &mut db, &dout, &x, &w, batch, k, n);
    let loss = |x: &[f64], w: &[f64], b: &[f64]| {
        let mut out = vec![0.0; batch * n];
        r::linear::linear_forward(&mut out, x, w, b, batch, k, n);
        dot(&out, &dout)
    };
    let (w0, b0, x0) = (w.clone(), b.clone(), x.clone());
    check("linear dx", &mut x, &dx, &mut |x| loss(x, &w0, &b0));
    check("linear dw", &mut w, &dw, &mut |w| loss(&x0, w, &b0));
    check("linear db", &mut b, &db, &mut |b| loss(&x0, &w0, b));

    for (kind, h, w, size, stride) in POOLS.into_iter().skip(2) {
        let (g, planes) = (PoolGeom { kind, h, w, size, stride }, 3);
        let mut x = randn(&mut rng, planes * h * w);
        let dout = randn(&mut rng, planes * g.oh() * g.ow());
        let mut dx = vec![0.0; x.len()];
        r::pool::pool_backward(&mut dx, &x, &dout, &g, planes);
        check(&format!("{kind:?} pool {size}/{stride}"), &mut x, &dx, &mut |x| {
            let mut out = vec![0.0; dout.len()];
            r::pool::pool_forward(&mut out, x, &g, planes);
            dot(&out, &dout)
        });
    }

    for a in ACTIVATIONS {
        let mut x = activation_inputs(&mut rng, 50);
        let dout = randn(&mut rng, x.len());
        let mut dx = vec![0.0; x.len()];
        r::activation::activation_backward(&mut dx, &x, &dout, a);
        check(&format!("{a:?}"), &mut x, &dx, &mut |x| {
            let mut y = vec![0.0; x.len()];
            r::activation::activation_forward(&mut y, x, a);
            dot(&y, &dout)
        });
    }
}

#[test]
fn reference_lenet5_layers_backward_match_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    // 7×6 with blocks of 2: the last row is under no block.
    for g in [SubsampleGeom { c: 3, h: 6, w: 6, size: 2 }, SubsampleGeom { c: 2, h: 7, w: 6, size: 2 }] {
        let batch = 2;
        let (mut x, mut coef, mut bias) =
            (randn(&mut rng, batch * g.in_len()), randn(&mut rng, g.c), randn(&mut rng, g.c));
        let dout = randn(&mut rng, batch * g.out_len());
        let (mut dx, mut dcoef, mut dbias) = (vec![0.0; x.len()], vec![0.0; g.c], vec![0.0; g.c]);
        r::subsample::subsample_backward(&mut dx, &mut dcoef, &mut dbias, &dout, &x, &coef, &g, batch);
        let loss = |x: &[f64], coef: &[f64], bias: &[f64]| {
            let mut out = vec![0.0; batch * g.out_len()];
            r::subsample::subsample_forward(&mut out, x, coef, bias, &g, batch);
            dot(&out, &dout)
        };
        let (c0, b0, x0) = (coef.clone(), bias.clone(), x.clone());
        check("subsample dx", &mut x, &dx, &mut |x| loss(x, &c0, &b0));
        check("subsample dcoef", &mut coef, &dcoef, &mut |c| loss(&x0, c, &b0));
        check("subsample dbias", &mut bias, &dbias, &mut |b| loss(&x0, &c0, b));
    }

    let (batch, k, n) = (3, 84, 10);
    let mut x = randn(&mut rng, batch * k);
    let centres: Vec<f64> = (0..n * k).map(|_| if rng.gen_bool(0.5) { 1.0 } else { -1.0 }).collect();
    let dout = randn(&mut rng, batch * n);
    let mut dx = vec![0.0; x.len()];
    r::rbf::rbf_backward(&mut dx, &dout, &x, &centres, batch, k, n);
    check("rbf dx", &mut x, &dx, &mut |x| {
        let mut out = vec![0.0; batch * n];
        r::rbf::rbf_forward(&mut out, x, &centres, batch, k, n);
        dot(&out, &dout)
    });
}

#[test]
fn reference_criteria_backward_match_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let (batch, classes) = (5, 10);
    let labels: Vec<u8> = (0..batch).map(|i| (i * 7 % 10) as u8).collect();
    let weights: Vec<f64> = (0..classes).map(|c| 0.5 + c as f64 * 0.1).collect();
    for criterion in CRITERIA {
        let mut z = criterion_outputs(&mut rng, criterion, batch * classes);
        for w in [None, Some(weights.as_slice())] {
            let mut dz = vec![0.0; z.len()];
            r::loss::loss(criterion, Some(&mut dz), &z, &labels, w, classes);
            check(&format!("{criterion:?}"), &mut z, &dz, &mut |z| {
                r::loss::loss(criterion, None, z, &labels, w, classes).mean()
            });
        }
    }
}

/// A few outputs worked by hand, so that the reference's indexing is pinned too (finite
/// differences only check that each backward pass matches its own forward pass).
#[test]
fn reference_forward_passes_give_hand_worked_values() {
    // A 3×3 input 1..9, a 2×2 kernel [1, 0; 0, −1], bias 0.5, padding 1, stride 2:
    // output (0, 0) reads only input (0, 0) through tap (1, 1): −1 + 0.5; output (1, 1)
    // reads (1, 1) and (2, 2): 5 − 9 + 0.5.
    let g = ConvGeom { c: 1, h: 3, w: 3, o: 1, k: 2, pad: 1, stride: 2 };
    let x: Vec<f64> = (1..=9).map(f64::from).collect();
    let mut out = vec![0.0; g.out_len()];
    r::conv::conv_forward(&mut out, &x, &[1.0, 0.0, 0.0, -1.0], &[0.5], &g, 1);
    assert_eq!(out, vec![-0.5, -2.5, -6.5, -3.5]);
    // Pools of 2, stride 1 over the same input.
    let mut out = vec![0.0; 4];
    r::pool::pool_forward(&mut out, &x, &PoolGeom { kind: PoolKind::Max, h: 3, w: 3, size: 2, stride: 1 }, 1);
    assert_eq!(out, vec![5.0, 6.0, 8.0, 9.0]);
    r::pool::pool_forward(&mut out, &x, &PoolGeom { kind: PoolKind::Avg, h: 3, w: 3, size: 2, stride: 1 }, 1);
    assert_eq!(out, vec![3.0, 4.0, 6.0, 7.0]);
    // Subsampling 2×2 of a 3×3 map: one block (1 + 2 + 4 + 5), times 2, plus 1.
    let mut out = vec![0.0; 1];
    r::subsample::subsample_forward(&mut out, &x, &[2.0], &[1.0], &SubsampleGeom { c: 1, h: 3, w: 3, size: 2 }, 1);
    assert_eq!(out, vec![25.0]);
    // Linear: [1, 2] · [[1, 1], [2, −1]]ᵀ + [0, 1].
    let mut out = vec![0.0; 2];
    r::linear::linear_forward(&mut out, &[1.0, 2.0], &[1.0, 1.0, 2.0, -1.0], &[0.0, 1.0], 1, 2, 2);
    assert_eq!(out, vec![3.0, 1.0]);
    // RBF: distances of (1, −1) to (1, 1) and (−1, −1): 4 and 4; to (1, −1): 0.
    let mut out = vec![0.0; 3];
    r::rbf::rbf_forward(&mut out, &[1.0, -1.0], &[1.0, 1.0, -1.0, -1.0, 1.0, -1.0], 1, 2, 3);
    assert_eq!(out, vec![-4.0, -4.0, 0.0]);
    // LeNet-5's squashing function: f(1) = 1.7159·tanh(2/3), f(0) = 0, odd.
    let f = |x| r::activation::f(Activation::ScaledTanh, x);
    assert!((f(1.0) - 1.7159 * (2.0f64 / 3.0).tanh()).abs() < 1e-15 && f(0.0) == 0.0 && f(-2.0) == -f(2.0));
    // Cross-entropy of equal logits: log(classes). Eq. 9 with j → ∞ is cross-entropy;
    // eq. 8 is the distance y_c itself.
    let z = [0.0; 10];
    let ce = r::loss::loss(Criterion::CrossEntropy, None, &z, &[3], None, 10).mean();
    assert!((ce - 10f64.ln()).abs() < 1e-12);
    let map = r::loss::loss(Criterion::Map { j: 1000.0 }, None, &z, &[3], None, 10).mean();
    assert!((map - ce).abs() < 1e-12);
    // Eq. 9 with j = 0 at equal distances y = 2: 2 + log(1 + 10·e^(−2)).
    let map = r::loss::loss(Criterion::Map { j: 0.0 }, None, &[-2.0; 10], &[3], None, 10).mean();
    assert!((map - (2.0 + (1.0 + 10.0 * (-2.0f64).exp()).ln())).abs() < 1e-12);
    let distances = [-5.0, -1.0, -9.0, -3.0, -3.0, -3.0, -3.0, -3.0, -3.0, -3.0];
    let mse = r::loss::loss(Criterion::Mse, None, &distances, &[2], None, 10);
    assert_eq!((mse.mean(), mse.correct), (9.0, 0));
    assert_eq!(r::loss::loss(Criterion::Mse, None, &distances, &[1], None, 10).correct, 1);
}

// ---- the CPU kernels against the reference ------------------------------------------

#[test]
fn cpu_conv_matches_the_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for g in CONVS {
        let batch = 3;
        let (x, w, b, dout) = (
            randn(&mut rng, batch * g.in_len()),
            randn(&mut rng, g.weight_len()),
            randn(&mut rng, g.o),
            randn(&mut rng, batch * g.out_len()),
        );
        let mut want = vec![0.0; batch * g.out_len()];
        r::conv::conv_forward(&mut want, &x, &w, &b, &g, batch);
        let (mut want_dx, mut want_dw, mut want_db) = (vec![0.0; x.len()], vec![0.0; w.len()], vec![0.0; g.o]);
        r::conv::conv_backward(&mut want_dx, &mut want_dw, &mut want_db, &dout, &x, &w, &g, batch);
        for par in PARS {
            let what = format!("{g:?} {par:?}");
            let mut out = vec![f64::NAN; want.len()];
            conv2d_forward(&mut out, &x, &w, &b, &g, batch, par);
            same(&format!("{what} out"), &out, &want);
            // dinp is written, dw and db accumulate.
            let (mut dx, mut dw, mut db) = (vec![f64::NAN; x.len()], vec![0.0; w.len()], vec![0.0; g.o]);
            conv2d_backward(Some(&mut dx), &mut dw, &mut db, &dout, &x, &w, &g, batch, par);
            same(&format!("{what} dx"), &dx, &want_dx);
            same(&format!("{what} dw"), &dw, &want_dw);
            same(&format!("{what} db"), &db, &want_db);
        }
    }
}

#[test]
fn conv_weight_gradient_accumulates() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let g = ConvGeom { c: 1, h: 5, w: 5, o: 2, k: 3, pad: 0, stride: 1 };
    let (x, w, dout) =
        (randn(&mut rng, 2 * g.in_len()), randn(&mut rng, g.weight_len()), randn(&mut rng, 2 * g.out_len()));
    let (mut dw1, mut db1) = (vec![0.0; w.len()], vec![0.0; 2]);
    conv2d_backward(None, &mut dw1, &mut db1, &dout, &x, &w, &g, 2, Par::SERIAL);
    let (mut dw2, mut db2) = (dw1.clone(), db1.clone());
    conv2d_backward(None, &mut dw2, &mut db2, &dout, &x, &w, &g, 2, Par::SERIAL);
    for (a, b) in dw1.iter().zip(&dw2).chain(db1.iter().zip(&db2)) {
        assert!((2.0 * a - b).abs() < 1e-12);
    }
}

#[test]
fn cpu_linear_matches_the_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    // The presets' layers (400 → 120, 120 → 84, 84 → 10) and an odd one.
    for (batch, k, n) in [(5, 400, 120), (3, 120, 84), (4, 84, 10), (5, 7, 4)] {
        let (x, w, b, dout) =
            (randn(&mut rng, batch * k), randn(&mut rng, n * k), randn(&mut rng, n), randn(&mut rng, batch * n));
        let mut want = vec![0.0; batch * n];
        r::linear::linear_forward(&mut want, &x, &w, &b, batch, k, n);
        let (mut want_dx, mut want_dw, mut want_db) = (vec![0.0; x.len()], vec![0.0; w.len()], vec![0.0; n]);
        r::linear::linear_backward(&mut want_dx, &mut want_dw, &mut want_db, &dout, &x, &w, batch, k, n);
        for par in PARS {
            let what = format!("linear {k}→{n} {par:?}");
            let mut out = vec![f64::NAN; want.len()];
            linear_forward(&mut out, &x, &w, &b, batch, k, n, par);
            same(&format!("{what} out"), &out, &want);
            let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; w.len()], vec![0.0; n]);
            linear_backward(&mut dx, &mut dw, &mut db, &dout, &x, &w, batch, k, n, par);
            same(&format!("{what} dx"), &dx, &want_dx);
            same(&format!("{what} dw"), &dw, &want_dw);
            same(&format!("{what} db"), &db, &want_db);
        }
    }
}

#[test]
fn cpu_pooling_and_activations_match_the_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    for (kind, h, w, size, stride) in POOLS {
        let (g, planes) = (PoolGeom { kind, h, w, size, stride }, 4);
        let x = randn(&mut rng, planes * h * w);
        let dout = randn(&mut rng, planes * g.oh() * g.ow());
        let (mut want, mut want_dx) = (vec![0.0; dout.len()], vec![0.0; x.len()]);
        r::pool::pool_forward(&mut want, &x, &g, planes);
        r::pool::pool_backward(&mut want_dx, &x, &dout, &g, planes);
        let (mut out, mut dx) = (vec![f64::NAN; want.len()], vec![f64::NAN; x.len()]);
        pool_forward(&mut out, &x, &g);
        pool_backward(&mut dx, &x, &dout, &g);
        same(&format!("{g:?} out"), &out, &want);
        same(&format!("{g:?} dx"), &dx, &want_dx);
    }
    for a in ACTIVATIONS {
        let x = activation_inputs(&mut rng, 50);
        let dout = randn(&mut rng, x.len());
        let (mut want, mut want_dx) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        r::activation::activation_forward(&mut want, &x, a);
        r::activation::activation_backward(&mut want_dx, &x, &dout, a);
        let (mut y, mut dx) = (vec![f64::NAN; x.len()], vec![f64::NAN; x.len()]);
        activation_forward(&mut y, &x, a);
        activation_backward(&mut dx, &x, &y, &dout, a);
        same(&format!("{a:?} out"), &y, &want);
        same(&format!("{a:?} dx"), &dx, &want_dx);
    }
}

#[test]
fn cpu_lenet5_layers_match_the_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    // S2 and S4, and a map whose last row is under no block.
    for g in [
        SubsampleGeom { c: 6, h: 28, w: 28, size: 2 },
        SubsampleGeom { c: 16, h: 10, w: 10, size: 2 },
        SubsampleGeom { c: 2, h: 7, w: 6, size: 2 },
    ] {
        let batch = 2;
        let (x, coef, bias, dout) = (
            randn(&mut rng, batch * g.in_len()),
            randn(&mut rng, g.c),
            randn(&mut rng, g.c),
            randn(&mut rng, batch * g.out_len()),
        );
        let mut want = vec![0.0; dout.len()];
        r::subsample::subsample_forward(&mut want, &x, &coef, &bias, &g, batch);
        let (mut want_dx, mut want_dcoef, mut want_dbias) = (vec![0.0; x.len()], vec![0.5; g.c], vec![0.25; g.c]);
        r::subsample::subsample_backward(&mut want_dx, &mut want_dcoef, &mut want_dbias, &dout, &x, &coef, &g, batch);
        let mut out = vec![f64::NAN; want.len()];
        subsample_forward(&mut out, &x, &coef, &bias, &g, batch);
        same(&format!("{g:?} out"), &out, &want);
        // dinp is written (zero under no block); the parameter gradients accumulate.
        let (mut dx, mut dcoef, mut dbias) = (vec![7.0; x.len()], vec![0.5; g.c], vec![0.25; g.c]);
        subsample_backward(Some(&mut dx), &mut dcoef, &mut dbias, &dout, &x, &coef, &g, batch);
        same(&format!("{g:?} dx"), &dx, &want_dx);
        same(&format!("{g:?} dcoef"), &dcoef, &want_dcoef);
        same(&format!("{g:?} dbias"), &dbias, &want_dbias);
    }
    let (batch, k, n) = (3, 84, 10);
    let x = randn(&mut rng, batch * k);
    let centres: Vec<f64> = (0..n * k).map(|_| if rng.gen_bool(0.5) { 1.0 } else { -1.0 }).collect();
    let dout = randn(&mut rng, batch * n);
    let (mut want, mut want_dx) = (vec![0.0; batch * n], vec![0.0; x.len()]);
    r::rbf::rbf_forward(&mut want, &x, &centres, batch, k, n);
    r::rbf::rbf_backward(&mut want_dx, &dout, &x, &centres, batch, k, n);
    let (mut out, mut dx) = (vec![f64::NAN; want.len()], vec![3.0; x.len()]);
    rbf_forward(&mut out, &x, &centres, batch, k, n);
    rbf_backward(&mut dx, &x, &centres, &dout, batch, k, n);
    same("rbf out", &out, &want);
    same("rbf dx", &dx, &want_dx);
}

#[test]
fn cpu_criteria_match_the_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (batch, classes) = (6, 10);
    let labels: Vec<u8> = (0..batch).map(|i| (i * 3 % 10) as u8).collect();
    let weights: Vec<f64> = (0..classes).map(|c| 0.5 + c as f64 * 0.1).collect();
    for criterion in CRITERIA {
        let z = criterion_outputs(&mut rng, criterion, batch * classes);
        for w in [None, Some(weights.as_slice())] {
            let what = format!("{criterion:?} weighted {}", w.is_some());
            let mut want_dz = vec![0.0; z.len()];
            let want = r::loss::loss(criterion, Some(&mut want_dz), &z, &labels, w, classes);
            let mut dz = vec![f64::NAN; z.len()];
            let got = batch_loss(criterion, Some(&mut dz), &z, &labels, w, classes);
            assert!((got.mean() - want.mean()).abs() <= 1e-12 * want.mean().abs(), "{what}: {got:?} vs {want:?}");
            assert_eq!(got.correct, want.correct, "{what}");
            same(&format!("{what} dz"), &dz, &want_dz);
        }
    }
    // Numerically stable for large logits.
    let big = vec![1000.0f64, 0.0, -1000.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
    let s = softmax_xent::<f64>(None, &big, &[0], None, 10);
    assert!(s.mean().abs() < 1e-12 && s.correct == 1);
    let s = r::loss::loss(Criterion::CrossEntropy, None, &big, &[0], None, 10);
    assert!(s.mean().abs() < 1e-12 && s.correct == 1);
}
