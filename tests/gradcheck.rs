//! Every layer's backward pass against central finite differences in f64, the
//! forward passes against naive loops written from the definitions, and the
//! whole f32 network's gradient against an f64 reference.

use lenet::layers::activation::{activation_backward, activation_forward};
use lenet::layers::conv::{conv2d_backward, conv2d_forward, ConvGeom};
use lenet::layers::linear::{linear_backward, linear_forward};
use lenet::layers::loss::{batch_loss, softmax_xent};
use lenet::layers::pool::{pool_backward, pool_forward, PoolGeom, PoolKind};
use lenet::layers::rbf::{rbf_backward, rbf_forward};
use lenet::layers::subsample::{subsample_backward, subsample_forward, SubsampleGeom};
use lenet::layers::Par;
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
    let mut worst = 0.0f64;
    for i in 0..x.len() {
        let orig = x[i];
        x[i] = orig + EPS;
        let up = f(x);
        x[i] = orig - EPS;
        let down = f(x);
        x[i] = orig;
        let numeric = (up - down) / (2.0 * EPS);
        let err = (numeric - analytic[i]).abs() / (1.0 + numeric.abs());
        worst = worst.max(err);
        assert!(err < 1e-6, "{name}[{i}]: analytic {} vs numeric {numeric}", analytic[i]);
    }
    assert!(worst.is_finite());
}

const PARS: [Par; 3] = [Par::SERIAL, Par { chunks: 2 }, Par { chunks: 3 }];

#[test]
fn conv_forward_matches_definition() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for (pad, stride) in [(0, 1), (2, 1), (1, 2)] {
        let g = ConvGeom { c: 3, h: 7, w: 6, o: 4, k: 3, pad, stride };
        let batch = 3;
        let (x, w, b) = (randn(&mut rng, batch * g.in_len()), randn(&mut rng, g.weight_len()), randn(&mut rng, g.o));
        let mut out = vec![0.0; batch * g.out_len()];
        conv2d_forward(&mut out, &x, &w, &b, &g, batch, Par::new(2));
        let (oh, ow) = (g.oh(), g.ow());
        for n in 0..batch {
            for o in 0..g.o {
                for y in 0..oh {
                    for xx in 0..ow {
                        let mut s = b[o];
                        for c in 0..g.c {
                            for i in 0..g.k {
                                for j in 0..g.k {
                                    let (iy, ix) = (
                                        (y * stride + i) as isize - pad as isize,
                                        (xx * stride + j) as isize - pad as isize,
                                    );
                                    if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w {
                                        s += w[((o * g.c + c) * g.k + i) * g.k + j]
                                            * x[((n * g.c + c) * g.h + iy as usize) * g.w + ix as usize];
                                    }
                                }
                            }
                        }
                        let got = out[((n * g.o + o) * oh + y) * ow + xx];
                        assert!((got - s).abs() < 1e-12, "pad {pad} stride {stride}: {got} vs {s}");
                    }
                }
            }
        }
    }
}

#[test]
fn conv_backward_matches_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let g = ConvGeom { c: 2, h: 6, w: 5, o: 3, k: 3, pad: 1, stride: 1 };
    let batch = 3;
    let (mut x, mut w, mut b) =
        (randn(&mut rng, batch * g.in_len()), randn(&mut rng, g.weight_len()), randn(&mut rng, g.o));
    let r = randn(&mut rng, batch * g.out_len()); // L = Σ out·r, so dout = r
    for par in PARS {
        let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; w.len()], vec![0.0; b.len()]);
        conv2d_backward(Some(&mut dx), &mut dw, &mut db, &r, &x, &w, &g, batch, par);
        let loss = |x: &[f64], w: &[f64], b: &[f64]| {
            let mut out = vec![0.0; batch * g.out_len()];
            conv2d_forward(&mut out, x, w, b, &g, batch, par);
            dot(&out, &r)
        };
        let (w0, b0, x0) = (w.clone(), b.clone(), x.clone());
        check("conv dx", &mut x, &dx, &mut |x| loss(x, &w0, &b0));
        check("conv dw", &mut w, &dw, &mut |w| loss(&x0, w, &b0));
        check("conv db", &mut b, &db, &mut |b| loss(&x0, &w0, b));
    }
}

/// The input and weight gradients against their definitions, dx[c, iy, ix] = Σ w[o, c, i, j]
/// · dout[o, y, x] over the windows that read (iy, ix) and dw[o, c, i, j] = Σ dout[o, y, x] ·
/// x[c, iy, ix] over the windows inside the input, as naive loops: 5×5 and 3×3 kernels,
/// strides 1 and 2, with and without padding, widths that end in every register-block width
/// (the kernels skip the taps and rows that fall on the zero border around the output
/// gradient or in the padding, and the input gradient's edge blocks skip single taps).
#[test]
fn conv_gradients_match_definition() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let geoms = [
        ConvGeom { c: 6, h: 14, w: 14, o: 16, k: 5, pad: 0, stride: 1 },
        ConvGeom { c: 1, h: 9, w: 11, o: 6, k: 5, pad: 2, stride: 1 },
        ConvGeom { c: 2, h: 12, w: 13, o: 3, k: 5, pad: 1, stride: 2 },
        ConvGeom { c: 3, h: 7, w: 6, o: 4, k: 3, pad: 1, stride: 2 },
        ConvGeom { c: 2, h: 8, w: 10, o: 9, k: 3, pad: 0, stride: 1 },
    ];
    for g in geoms {
        let batch = 3;
        let (x, w, r) = (
            randn(&mut rng, batch * g.in_len()),
            randn(&mut rng, g.weight_len()),
            randn(&mut rng, batch * g.out_len()),
        );
        let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; w.len()], vec![0.0; g.o]);
        conv2d_backward(Some(&mut dx), &mut dw, &mut db, &r, &x, &w, &g, batch, Par::new(2));
        let (oh, ow) = (g.oh(), g.ow());
        let mut want = vec![0.0; x.len()];
        let mut want_dw = vec![0.0; w.len()];
        for n in 0..batch {
            for o in 0..g.o {
                for y in 0..oh {
                    for xx in 0..ow {
                        let d = r[((n * g.o + o) * oh + y) * ow + xx];
                        for c in 0..g.c {
                            for i in 0..g.k {
                                for j in 0..g.k {
                                    let (iy, ix) = (
                                        (y * g.stride + i) as isize - g.pad as isize,
                                        (xx * g.stride + j) as isize - g.pad as isize,
                                    );
                                    if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w {
                                        let xi = ((n * g.c + c) * g.h + iy as usize) * g.w + ix as usize;
                                        let wi = ((o * g.c + c) * g.k + i) * g.k + j;
                                        want[xi] += w[wi] * d;
                                        want_dw[wi] += x[xi] * d;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        for (i, (a, b)) in dx.iter().zip(&want).enumerate() {
            assert!((a - b).abs() < 1e-12, "{g:?}: dx[{i}] = {a}, by definition {b}");
        }
        for (i, (a, b)) in dw.iter().zip(&want_dw).enumerate() {
            assert!((a - b).abs() < 1e-12, "{g:?}: dw[{i}] = {a}, by definition {b}");
        }
    }
}

#[test]
fn conv_weight_gradient_accumulates() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let g = ConvGeom { c: 1, h: 5, w: 5, o: 2, k: 3, pad: 0, stride: 1 };
    let (x, w, r) =
        (randn(&mut rng, 2 * g.in_len()), randn(&mut rng, g.weight_len()), randn(&mut rng, 2 * g.out_len()));
    let (mut dw1, mut db1) = (vec![0.0; w.len()], vec![0.0; 2]);
    conv2d_backward(None, &mut dw1, &mut db1, &r, &x, &w, &g, 2, Par::SERIAL);
    let (mut dw2, mut db2) = (dw1.clone(), db1.clone());
    conv2d_backward(None, &mut dw2, &mut db2, &r, &x, &w, &g, 2, Par::SERIAL);
    for (a, b) in dw1.iter().zip(&dw2) {
        assert!((2.0 * a - b).abs() < 1e-12);
    }
}

#[test]
fn linear_matches_definition_and_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let (batch, k, n) = (5, 7, 4);
    let (mut x, mut w, mut b) = (randn(&mut rng, batch * k), randn(&mut rng, n * k), randn(&mut rng, n));
    let mut out = vec![0.0; batch * n];
    linear_forward(&mut out, &x, &w, &b, batch, k, n, Par::new(2));
    for i in 0..batch {
        for j in 0..n {
            let s: f64 = b[j] + (0..k).map(|q| x[i * k + q] * w[j * k + q]).sum::<f64>();
            assert!((out[i * n + j] - s).abs() < 1e-12);
        }
    }
    let r = randn(&mut rng, batch * n);
    for par in PARS {
        let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; w.len()], vec![0.0; n]);
        linear_backward(&mut dx, &mut dw, &mut db, &r, &x, &w, batch, k, n, par);
        let loss = |x: &[f64], w: &[f64], b: &[f64]| {
            let mut out = vec![0.0; batch * n];
            linear_forward(&mut out, x, w, b, batch, k, n, par);
            dot(&out, &r)
        };
        let (w0, b0, x0) = (w.clone(), b.clone(), x.clone());
        check("linear dx", &mut x, &dx, &mut |x| loss(x, &w0, &b0));
        check("linear dw", &mut w, &dw, &mut |w| loss(&x0, w, &b0));
        check("linear db", &mut b, &db, &mut |b| loss(&x0, &w0, b));
    }
}

#[test]
fn pooling_matches_definition_and_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for kind in [PoolKind::Avg, PoolKind::Max] {
        for (size, stride) in [(2, 2), (3, 2), (2, 1)] {
            let g = PoolGeom { kind, h: 7, w: 6, size, stride };
            let planes = 4;
            let mut x = randn(&mut rng, planes * g.h * g.w);
            let mut out = vec![0.0; planes * g.oh() * g.ow()];
            pool_forward(&mut out, &x, &g);
            for p in 0..planes {
                for i in 0..g.oh() {
                    for j in 0..g.ow() {
                        let vals: Vec<f64> = (0..size)
                            .flat_map(|a| (0..size).map(move |c| (a, c)))
                            .map(|(a, c)| x[(p * g.h + i * stride + a) * g.w + j * stride + c])
                            .collect();
                        let want = match kind {
                            PoolKind::Avg => vals.iter().sum::<f64>() / vals.len() as f64,
                            PoolKind::Max => vals.iter().cloned().fold(f64::MIN, f64::max),
                        };
                        assert!((out[(p * g.oh() + i) * g.ow() + j] - want).abs() < 1e-12);
                    }
                }
            }
            let r = randn(&mut rng, out.len());
            let mut dx = vec![f64::NAN; x.len()];
            pool_backward(&mut dx, &x, &r, &g);
            check(&format!("{kind:?} pool {size}/{stride}"), &mut x, &dx, &mut |x| {
                let mut out = vec![0.0; r.len()];
                pool_forward(&mut out, x, &g);
                dot(&out, &r)
            });
        }
    }
}

#[test]
fn activations_match_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    for a in
        [Activation::Sigmoid, Activation::Tanh, Activation::ScaledTanh, Activation::Relu, Activation::LeakyRelu(0.1)]
    {
        // Keep away from ReLU's kink, where the derivative is not defined.
        let mut x: Vec<f64> =
            randn(&mut rng, 50).into_iter().map(|v| if v.abs() < 0.01 { 0.5 } else { v * 3.0 }).collect();
        let mut y = vec![0.0; x.len()];
        activation_forward(&mut y, &x, a);
        let want: Vec<f64> = x
            .iter()
            .map(|&v| match a {
                Activation::Sigmoid => 1.0 / (1.0 + (-v).exp()),
                Activation::Tanh => v.tanh(),
                // Appendix A of the paper: f(a) = A·tanh(S·a), A = 1.7159, S = 2/3.
                Activation::ScaledTanh => 1.7159 * (2.0 * v / 3.0).tanh(),
                Activation::Relu => v.max(0.0),
                Activation::LeakyRelu(s) => {
                    if v > 0.0 {
                        v
                    } else {
                        s as f64 * v
                    }
                }
            })
            .collect();
        for (g, w) in y.iter().zip(&want) {
            assert!((g - w).abs() < 1e-12, "{a:?}");
        }
        let r = randn(&mut rng, x.len());
        let mut dx = vec![0.0; x.len()];
        activation_backward(&mut dx, &x, &y, &r, a);
        check(&format!("{a:?}"), &mut x, &dx, &mut |x| {
            let mut y = vec![0.0; x.len()];
            activation_forward(&mut y, x, a);
            dot(&y, &r)
        });
    }
}

#[test]
fn softmax_cross_entropy_matches_definition_and_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (batch, classes) = (6, 10);
    let mut z: Vec<f64> = randn(&mut rng, batch * classes).into_iter().map(|v| v * 5.0).collect();
    let labels: Vec<u8> = (0..batch).map(|i| (i * 3 % 10) as u8).collect();
    let weights: Vec<f64> = (0..classes).map(|c| 0.5 + c as f64 * 0.1).collect();
    for w in [None, Some(weights.as_slice())] {
        let mut dz = vec![0.0; z.len()];
        let stats = softmax_xent(Some(&mut dz), &z, &labels, w, classes);
        // Definition: Σ w_y (−log softmax(z)_y) / Σ w_y.
        let (mut num, mut den) = (0.0, 0.0);
        for i in 0..batch {
            let row = &z[i * classes..(i + 1) * classes];
            let y = labels[i] as usize;
            let p = row[y].exp() / row.iter().map(|v| v.exp()).sum::<f64>();
            let wy = w.map_or(1.0, |w| w[y]);
            num += -wy * p.ln();
            den += wy;
        }
        assert!((stats.mean() - num / den).abs() < 1e-12);
        check("softmax xent", &mut z, &dz, &mut |z| softmax_xent(None, z, &labels, w, classes).mean());
    }
    // Numerically stable for large logits.
    let big = vec![1000.0f64, 0.0, -1000.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
    let s = softmax_xent::<f64>(None, &big, &[0], None, 10);
    assert!(s.mean().abs() < 1e-12 && s.correct == 1);
}

#[test]
fn trainable_subsampling_matches_definition_and_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    // 7×6 with blocks of 2: the last row is under no block.
    for g in [SubsampleGeom { c: 3, h: 6, w: 6, size: 2 }, SubsampleGeom { c: 2, h: 7, w: 6, size: 2 }] {
        let batch = 2;
        let (mut x, mut coef, mut bias) =
            (randn(&mut rng, batch * g.in_len()), randn(&mut rng, g.c), randn(&mut rng, g.c));
        let mut out = vec![0.0; batch * g.out_len()];
        subsample_forward(&mut out, &x, &coef, &bias, &g, batch);
        let (oh, ow) = (g.oh(), g.ow());
        for n in 0..batch {
            for c in 0..g.c {
                for y in 0..oh {
                    for xx in 0..ow {
                        let at = |i: usize, j: usize| x[((n * g.c + c) * g.h + 2 * y + i) * g.w + 2 * xx + j];
                        let want = coef[c] * (at(0, 0) + at(0, 1) + at(1, 0) + at(1, 1)) + bias[c];
                        let got = out[((n * g.c + c) * oh + y) * ow + xx];
                        assert!((got - want).abs() < 1e-12, "{g:?}: {got} vs {want}");
                    }
                }
            }
        }
        let r = randn(&mut rng, out.len());
        let (mut dx, mut dcoef, mut dbias) = (vec![7.0; x.len()], vec![0.5; g.c], vec![0.25; g.c]);
        subsample_backward(Some(&mut dx), &mut dcoef, &mut dbias, &r, &x, &coef, &g, batch);
        // Parameter gradients accumulate (+=) onto what was there.
        dcoef.iter_mut().for_each(|v| *v -= 0.5);
        dbias.iter_mut().for_each(|v| *v -= 0.25);
        let loss = |x: &[f64], coef: &[f64], bias: &[f64]| {
            let mut out = vec![0.0; batch * g.out_len()];
            subsample_forward(&mut out, x, coef, bias, &g, batch);
            dot(&out, &r)
        };
        let (c0, b0) = (coef.clone(), bias.clone());
        check("subsample dx", &mut x, &dx, &mut |x| loss(x, &c0, &b0));
        let x0 = x.clone();
        check("subsample dcoef", &mut coef, &dcoef, &mut |c| loss(&x0, c, &b0));
        let c0 = coef.clone();
        check("subsample dbias", &mut bias, &dbias, &mut |b| loss(&x0, &c0, b));
    }
}

#[test]
fn rbf_matches_definition_and_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let (batch, k, n) = (3, 84, 10);
    let mut x = randn(&mut rng, batch * k);
    let centres: Vec<f64> = (0..n * k).map(|_| if rng.gen_bool(0.5) { 1.0 } else { -1.0 }).collect();
    let mut out = vec![0.0; batch * n];
    rbf_forward(&mut out, &x, &centres, batch, k, n);
    for b in 0..batch {
        for i in 0..n {
            let y: f64 = (0..k).map(|j| (x[b * k + j] - centres[i * k + j]).powi(2)).sum();
            assert!((out[b * n + i] + y).abs() < 1e-12, "the output is −y_i");
        }
    }
    let r = randn(&mut rng, out.len());
    let mut dx = vec![3.0; x.len()];
    rbf_backward(&mut dx, &x, &centres, &r, batch, k, n);
    check("rbf dx", &mut x, &dx, &mut |x| {
        let mut out = vec![0.0; batch * n];
        rbf_forward(&mut out, x, &centres, batch, k, n);
        dot(&out, &r)
    });
}

#[test]
fn the_papers_criteria_match_their_equations_and_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let (batch, classes) = (5, 10);
    // RBF outputs z = −y with y ≥ 0 distances on the scale of trained ones.
    let mut z: Vec<f64> = (0..batch * classes).map(|_| -rng.gen_range(0.0..30.0)).collect();
    let labels: Vec<u8> = (0..batch).map(|i| (i * 7 % 10) as u8).collect();
    let weights: Vec<f64> = (0..classes).map(|c| 0.5 + c as f64 * 0.1).collect();
    for criterion in [Criterion::Map { j: 10.0 }, Criterion::Map { j: 0.1 }, Criterion::Mse] {
        for w in [None, Some(weights.as_slice())] {
            let mut dz = vec![0.0; z.len()];
            let stats = batch_loss(criterion, Some(&mut dz), &z, &labels, w, classes);
            let (mut num, mut den) = (0.0, 0.0);
            for i in 0..batch {
                let y: Vec<f64> = z[i * classes..(i + 1) * classes].iter().map(|v| -v).collect();
                let c = labels[i] as usize;
                let e = match criterion {
                    // Equation 9: E = y_c + log(e^(−j) + Σ_i e^(−y_i)).
                    Criterion::Map { j } => y[c] + ((-j as f64).exp() + y.iter().map(|v| (-v).exp()).sum::<f64>()).ln(),
                    // Equation 8: E = y_c.
                    Criterion::Mse => y[c],
                    Criterion::CrossEntropy => unreachable!(),
                };
                let wy = w.map_or(1.0, |w| w[c]);
                num += wy * e;
                den += wy;
            }
            assert!((stats.mean() - num / den).abs() < 1e-9, "{criterion:?}: {} vs {}", stats.mean(), num / den);
            check(&format!("{criterion:?}"), &mut z, &dz, &mut |z| {
                batch_loss(criterion, None, z, &labels, w, classes).mean()
            });
        }
    }
    // The prediction is the nearest bitmap: the highest output −y.
    let s = batch_loss::<f64>(
        Criterion::Mse,
        None,
        &[-5.0, -1.0, -9.0, -3.0, -3.0, -3.0, -3.0, -3.0, -3.0, -3.0],
        &[1],
        None,
        10,
    );
    assert_eq!(s.correct, 1);
}
