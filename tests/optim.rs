//! Optimizers, schedules and initialisation against independent oracles: update rules
//! written out plainly in f64 here (and a few steps worked by hand), compared with the
//! f32 implementation at a relative tolerance of 1e-6.

use lenet::init::{fans, init_params, Init, ParamInfo, ParamKind};
use lenet::optim::{clip_grad_norm, OptimError, Optimizer, OptimizerKind, StateTensor};
use lenet::schedule::LrSchedule;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const P0: [f64; 3] = [1.0, -2.0, 0.5];
const GRADS: [[f64; 3]; 3] = [[0.1, 0.2, -0.3], [0.4, -0.1, 0.05], [-0.2, 0.3, 0.25]];

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

#[track_caller]
fn assert_close(got: &[f32], want: &[f64], rel: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(err <= rel * w.abs(), "{what}[{i}]: got {g}, want {w} (error {err:e}, relative {:e})", err / w.abs());
    }
}

/// Runs `kind` over `GRADS` from `P0`, returning the parameters after each step.
fn run_steps(kind: OptimizerKind, lr: f64) -> Vec<Vec<f32>> {
    let mut opt = Optimizer::new(kind, 3).unwrap();
    let mut p = f32s(&P0);
    GRADS
        .iter()
        .map(|g| {
            opt.step(&mut p, &f32s(g), lr);
            p.clone()
        })
        .collect()
}

/// torch.optim.SGD, dampening 0, written out in f64.
fn sgd_oracle(lr: f64, momentum: f64, nesterov: bool, wd: f64) -> Vec<Vec<f64>> {
    let mut p = P0.to_vec();
    let mut buf: Option<Vec<f64>> = None;
    let mut out = Vec::new();
    for g in GRADS {
        let d: Vec<f64> = (0..3).map(|i| g[i] + wd * p[i]).collect();
        let step: Vec<f64> = if momentum != 0.0 {
            let b: Vec<f64> = match &buf {
                None => d.clone(), // first step: the buffer starts as d_p
                Some(b) => (0..3).map(|i| momentum * b[i] + d[i]).collect(),
            };
            buf = Some(b.clone());
            if nesterov {
                (0..3).map(|i| d[i] + momentum * b[i]).collect()
            } else {
                b
            }
        } else {
            d
        };
        for i in 0..3 {
            p[i] -= lr * step[i];
        }
        out.push(p.clone());
    }
    out
}

/// torch.optim.Adam (decoupled = false) / AdamW (decoupled = true), written out in f64.
fn adam_oracle(lr: f64, b1: f64, b2: f64, eps: f64, wd: f64, decoupled: bool) -> Vec<Vec<f64>> {
    let mut p = P0.to_vec();
    let (mut m, mut v) = (vec![0.0; 3], vec![0.0; 3]);
    let mut out = Vec::new();
    for (k, g) in GRADS.iter().enumerate() {
        let t = (k + 1) as f64;
        for i in 0..3 {
            let mut gi = g[i];
            if decoupled {
                p[i] *= 1.0 - lr * wd;
            } else {
                gi += wd * p[i];
            }
            m[i] = b1 * m[i] + (1.0 - b1) * gi;
            v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
            let m_hat = m[i] / (1.0 - b1.powf(t));
            let v_hat = v[i] / (1.0 - b2.powf(t));
            p[i] -= lr * m_hat / (v_hat.sqrt() + eps);
        }
        out.push(p.clone());
    }
    out
}

fn check_against(kind: OptimizerKind, lr: f64, want: &[Vec<f64>]) {
    let got = run_steps(kind, lr);
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert_close(g, w, 1e-6, &format!("{kind} step {}", k + 1));
    }
}

#[test]
fn sgd_plain_matches_hand_computed_steps() {
    // p1 = p0 - 0.1 g1, p2 = p1 - 0.1 g2, by hand.
    let got = run_steps(OptimizerKind::sgd(), 0.1);
    assert_close(&got[0], &[0.99, -2.02, 0.53], 1e-6, "step 1");
    assert_close(&got[1], &[0.95, -2.01, 0.525], 1e-6, "step 2");
    check_against(OptimizerKind::sgd(), 0.1, &sgd_oracle(0.1, 0.0, false, 0.0));
}

#[test]
fn sgd_momentum_first_step_uses_gradient_as_buffer() {
    let kind = OptimizerKind::Sgd { momentum: 0.9, nesterov: false, weight_decay: 0.0 };
    let got = run_steps(kind, 0.1);
    // Step 1: buf = g1, so the step is plain SGD.
    assert_close(&got[0], &[0.99, -2.02, 0.53], 1e-6, "step 1");
    // Step 2: buf = 0.9 g1 + g2 = [0.49, 0.08, -0.22]; p2 = p1 - 0.1 buf.
    assert_close(&got[1], &[0.941, -2.028, 0.552], 1e-6, "step 2");
    check_against(kind, 0.1, &sgd_oracle(0.1, 0.9, false, 0.0));
}

#[test]
fn sgd_nesterov_matches_oracle() {
    let kind = OptimizerKind::Sgd { momentum: 0.9, nesterov: true, weight_decay: 0.0 };
    let got = run_steps(kind, 0.1);
    // Step 1: buf = g1, d = g1 + 0.9 g1 = 1.9 g1.
    assert_close(&got[0], &[0.981, -2.038, 0.557], 1e-6, "step 1");
    check_against(kind, 0.1, &sgd_oracle(0.1, 0.9, true, 0.0));
}

#[test]
fn sgd_weight_decay_matches_oracle() {
    let kind = OptimizerKind::Sgd { momentum: 0.0, nesterov: false, weight_decay: 0.01 };
    let got = run_steps(kind, 0.1);
    // Step 1: d = g1 + 0.01 p0 = [0.11, 0.18, -0.295].
    assert_close(&got[0], &[0.989, -2.018, 0.5295], 1e-6, "step 1");
    check_against(kind, 0.1, &sgd_oracle(0.1, 0.0, false, 0.01));
    let kind = OptimizerKind::Sgd { momentum: 0.8, nesterov: true, weight_decay: 0.05 };
    check_against(kind, 0.05, &sgd_oracle(0.05, 0.8, true, 0.05));
}

#[test]
fn adam_first_step_is_bias_corrected() {
    // After one step m_hat = g and v_hat = g^2, so each parameter moves by
    // lr * g / (|g| + eps): about lr against the gradient's sign, whatever its size.
    let kind = OptimizerKind::adam();
    let got = run_steps(kind, 0.01);
    let want: Vec<f64> = (0..3).map(|i| P0[i] - 0.01 * GRADS[0][i] / (GRADS[0][i].abs() + 1e-8)).collect();
    assert_close(&got[0], &want, 1e-6, "step 1");
    assert_close(&got[0], &[0.99, -2.01, 0.51], 1e-6, "step 1 by hand");
    check_against(kind, 0.01, &adam_oracle(0.01, 0.9, 0.999, 1e-8, 0.0, false));
}

#[test]
fn adam_with_large_eps_and_other_betas_matches_oracle() {
    // eps comparable to sqrt(v_hat) checks where eps enters the denominator.
    let kind = OptimizerKind::Adam { beta1: 0.8, beta2: 0.99, eps: 0.05, weight_decay: 0.0 };
    check_against(kind, 0.02, &adam_oracle(0.02, 0.8, 0.99, 0.05, 0.0, false));
    // beta1 < 0.5: PyTorch's lerp takes its other form.
    let kind = OptimizerKind::Adam { beta1: 0.3, beta2: 0.9, eps: 1e-3, weight_decay: 0.0 };
    check_against(kind, 0.02, &adam_oracle(0.02, 0.3, 0.9, 1e-3, 0.0, false));
}

#[test]
fn adam_l2_weight_decay_matches_oracle() {
    let kind = OptimizerKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1 };
    check_against(kind, 0.01, &adam_oracle(0.01, 0.9, 0.999, 1e-8, 0.1, false));
}

#[test]
fn adamw_decoupled_weight_decay_matches_oracle() {
    let kind = OptimizerKind::AdamW { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1 };
    let got = run_steps(kind, 0.01);
    // Step 1: p0 * (1 - 0.001), then the Adam step of about 0.01.
    assert_close(&got[0], &[0.989, -2.008, 0.5095], 1e-6, "step 1 by hand");
    check_against(kind, 0.01, &adam_oracle(0.01, 0.9, 0.999, 1e-8, 0.1, true));
    // Decoupled decay differs from L2 decay.
    let l2 = run_steps(OptimizerKind::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.1 }, 0.01);
    assert_ne!(got[2], l2[2]);
}

#[test]
fn zero_learning_rate_leaves_parameters_unchanged() {
    for kind in all_kinds() {
        let got = run_steps(kind, 0.0);
        // AdamW with lr 0 decays by (1 - 0 * wd) = 1, too.
        assert_eq!(got[2], f32s(&P0), "{kind}");
    }
}

fn all_kinds() -> Vec<OptimizerKind> {
    vec![
        OptimizerKind::sgd(),
        OptimizerKind::Sgd { momentum: 0.9, nesterov: false, weight_decay: 1e-3 },
        OptimizerKind::Sgd { momentum: 0.9, nesterov: true, weight_decay: 0.0 },
        OptimizerKind::adam(),
        OptimizerKind::Adam { beta1: 0.9, beta2: 0.99, eps: 1e-6, weight_decay: 1e-2 },
        OptimizerKind::adamw(),
    ]
}

fn random_vec(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

/// Saves the state after `split` of `total` steps, restores it into a fresh optimizer
/// and checks that the continued run is bit-identical to the uninterrupted one.
fn check_resume(kind: OptimizerKind, n: usize, split: usize, total: usize, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let p0 = random_vec(&mut rng, n);
    let grads: Vec<Vec<f32>> = (0..total).map(|_| random_vec(&mut rng, n)).collect();
    let lr = |k: usize| 0.05 * 0.9f64.powi(k as i32);

    let mut straight = Optimizer::new(kind, n).unwrap();
    let mut p_straight = p0.clone();
    for (k, g) in grads.iter().enumerate() {
        straight.step(&mut p_straight, g, lr(k));
    }

    let mut first = Optimizer::new(kind, n).unwrap();
    let mut p = p0.clone();
    for (k, g) in grads[..split].iter().enumerate() {
        first.step(&mut p, g, lr(k));
    }
    let saved: Vec<StateTensor> = first.state_tensors();
    drop(first);
    let mut resumed = Optimizer::new(kind, n).unwrap();
    resumed.load_state(&saved).unwrap();
    assert_eq!(resumed.step_count(), split as u64);
    for (k, g) in grads.iter().enumerate().skip(split) {
        resumed.step(&mut p, g, lr(k));
    }
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&p), bits(&p_straight), "{kind}: parameters after resuming at step {split}");
    assert_eq!(resumed.state_tensors(), straight.state_tensors(), "{kind}: state after resuming at step {split}");
}

#[test]
fn state_round_trip_continues_bit_identically() {
    for kind in all_kinds() {
        for split in [0, 1, 2, 4] {
            check_resume(kind, 1000, split, 5, 7);
        }
    }
}

#[test]
fn state_tensor_names_and_shapes() {
    let names = |kind, steps: usize| {
        let mut opt = Optimizer::new(kind, 4).unwrap();
        let mut p = vec![0.5f32; 4];
        for _ in 0..steps {
            opt.step(&mut p, &[0.1; 4], 0.1);
        }
        opt.state_tensors().into_iter().map(|(n, s, d)| (n, s, d.len())).collect::<Vec<_>>()
    };
    let step = || ("optim.step".to_string(), Vec::<usize>::new(), 1);
    let buf = |n: &str| (n.to_string(), vec![4], 4);
    let momentum = OptimizerKind::Sgd { momentum: 0.9, nesterov: false, weight_decay: 0.0 };
    assert_eq!(names(momentum, 0), vec![step()]);
    assert_eq!(names(momentum, 2), vec![step(), buf("optim.momentum_buffer")]);
    assert_eq!(names(OptimizerKind::sgd(), 2), vec![step()]);
    assert_eq!(names(OptimizerKind::adam(), 0), vec![step()]);
    assert_eq!(names(OptimizerKind::adamw(), 3), vec![step(), buf("optim.exp_avg"), buf("optim.exp_avg_sq")]);

    let mut opt = Optimizer::new(OptimizerKind::adam(), 4).unwrap();
    opt.step(&mut [0.5; 4], &[0.1; 4], 0.1);
    opt.step(&mut [0.5; 4], &[0.1; 4], 0.1);
    assert_eq!(opt.state_tensors()[0].2, vec![2.0]);
}

fn state_error(kind: OptimizerKind, saved: &[StateTensor]) -> String {
    let mut opt = Optimizer::new(kind, 8).unwrap();
    match opt.load_state(saved) {
        Err(e @ OptimError::State(_)) => {
            assert_eq!(opt.step_count(), 0, "a failed load must leave the optimizer unchanged");
            e.to_string()
        }
        other => panic!("expected a state error, got {other:?}"),
    }
}

fn trained_state(kind: OptimizerKind, n: usize) -> Vec<StateTensor> {
    let mut opt = Optimizer::new(kind, n).unwrap();
    let mut p = vec![0.5f32; n];
    opt.step(&mut p, &vec![0.1; n], 0.1);
    opt.state_tensors()
}

#[test]
fn loading_state_of_another_kind_or_size_is_an_error() {
    let momentum = OptimizerKind::Sgd { momentum: 0.9, nesterov: false, weight_decay: 0.0 };
    let adam = trained_state(OptimizerKind::adam(), 8);
    let sgd = trained_state(momentum, 8);

    let e = state_error(momentum, &adam);
    assert!(e.contains("optim.exp_avg") && e.contains("adam"), "{e}");
    let e = state_error(OptimizerKind::adam(), &sgd);
    assert!(e.contains("optim.momentum_buffer"), "{e}");
    let e = state_error(OptimizerKind::sgd(), &sgd);
    assert!(e.contains("optim.momentum_buffer"), "{e}");
    let e = state_error(momentum, &trained_state(OptimizerKind::sgd(), 8));
    assert!(e.contains("needs tensor optim.momentum_buffer"), "{e}");

    let e = state_error(OptimizerKind::adam(), &trained_state(OptimizerKind::adam(), 6));
    assert!(e.contains("6 values") && e.contains("8 parameters"), "{e}");

    let e = state_error(OptimizerKind::adam(), &adam[1..]);
    assert!(e.contains("optim.step"), "{e}");
    let mut half_step = adam.clone();
    half_step[0].2[0] = 1.5;
    let e = state_error(OptimizerKind::adam(), &half_step);
    assert!(e.contains("whole number"), "{e}");
    let mut twice = adam.clone();
    twice.push(adam[1].clone());
    assert!(state_error(OptimizerKind::adam(), &twice).contains("twice"));
    let mut extra = adam.clone();
    extra.push(("0.weight".into(), vec![8], vec![0.0; 8]));
    assert!(state_error(OptimizerKind::adam(), &extra).contains("not optimizer state"));

    // Adam and AdamW share their state, as in PyTorch.
    let mut opt = Optimizer::new(OptimizerKind::adamw(), 8).unwrap();
    opt.load_state(&adam).unwrap();
    assert_eq!(opt.step_count(), 1);
}

#[test]
fn clip_grad_norm_scales_only_above_max() {
    let mut g = vec![3.0f32, 4.0, 0.0];
    let norm = clip_grad_norm(&mut g, 1.0);
    assert_eq!(norm, 5.0);
    let coef = 1.0 / (5.0 + 1e-6);
    assert_close(&g[..2], &[3.0 * coef, 4.0 * coef], 1e-6, "clipped");
    assert_eq!(g[2], 0.0);

    let mut g = vec![3.0f32, 4.0, 0.0];
    assert_eq!(clip_grad_norm(&mut g, 10.0), 5.0);
    assert_eq!(g, vec![3.0, 4.0, 0.0], "below the limit nothing changes");

    let mut g = vec![0.0f32; 5];
    assert_eq!(clip_grad_norm(&mut g, 1.0), 0.0);
    assert_eq!(g, vec![0.0; 5]);

    // Many small values: the f64 accumulation keeps the norm exact enough.
    let mut g = vec![1e-3f32; 1_000_000];
    let norm = clip_grad_norm(&mut g, 0.5);
    assert!((norm as f64 - 1.0).abs() < 1e-6, "{norm}");
    let after: f64 = g.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    assert!((after - 0.5).abs() < 1e-5, "{after}");
}

#[test]
fn optimizer_kind_parses_and_serialises() {
    let k: OptimizerKind = "sgd:momentum=0.9,nesterov,wd=5e-4".parse().unwrap();
    assert_eq!(k, OptimizerKind::Sgd { momentum: 0.9, nesterov: true, weight_decay: 5e-4 });
    assert_eq!("sgd".parse::<OptimizerKind>().unwrap(), OptimizerKind::sgd());
    assert_eq!("adam".parse::<OptimizerKind>().unwrap(), OptimizerKind::adam());
    assert_eq!("AdamW".parse::<OptimizerKind>().unwrap(), OptimizerKind::adamw());
    let k: OptimizerKind = "adam:beta1=0.8,beta2=0.99,eps=1e-6,weight_decay=1e-4".parse().unwrap();
    assert_eq!(k, OptimizerKind::Adam { beta1: 0.8, beta2: 0.99, eps: 1e-6, weight_decay: 1e-4 });
    for k in all_kinds() {
        assert_eq!(k.to_string().parse::<OptimizerKind>().unwrap(), k, "{k}");
        let json = serde_json::to_string(&k).unwrap();
        assert_eq!(serde_json::from_str::<OptimizerKind>(&json).unwrap(), k, "{json}");
    }
    for bad in ["rmsprop", "sgd:beta1=0.9", "sgd:nesterov", "adam:beta1=1.0", "adam:eps=-1", "sgd:momentum=x", "sgd:wd"]
    {
        assert!(bad.parse::<OptimizerKind>().is_err(), "{bad} should not parse");
    }

    let k: OptimizerKind = serde_json::from_str(r#"{"type": "adamw"}"#).unwrap();
    assert_eq!(k, OptimizerKind::adamw());
    let k: OptimizerKind = serde_json::from_str(r#"{"type": "sgd", "momentum": 0.9}"#).unwrap();
    assert_eq!(k, OptimizerKind::Sgd { momentum: 0.9, nesterov: false, weight_decay: 0.0 });
    assert_eq!(
        serde_json::to_value(OptimizerKind::sgd()).unwrap(),
        serde_json::json!({"type": "sgd", "momentum": 0.0, "nesterov": false, "weight_decay": 0.0})
    );
    assert!(serde_json::from_str::<OptimizerKind>(r#"{"type": "sgd", "lr": 0.1}"#).is_err());
    assert!(Optimizer::new(OptimizerKind::Sgd { momentum: -0.1, nesterov: false, weight_decay: 0.0 }, 3).is_err());
}

#[test]
#[should_panic(expected = "optimizer built for 3")]
fn step_with_wrong_length_panics() {
    let mut opt = Optimizer::new(OptimizerKind::sgd(), 3).unwrap();
    opt.step(&mut [0.0; 4], &[0.0; 4], 0.1);
}

// ---- schedules -------------------------------------------------------------------------

#[test]
fn step_schedule_matches_closed_form() {
    let s = LrSchedule::Step { step_size: 5, gamma: 0.5 };
    for (epoch, want) in [(0, 0.8), (4, 0.8), (5, 0.4), (9, 0.4), (10, 0.2), (12, 0.2), (15, 0.1)] {
        let got = s.lr_at(0.8, epoch);
        assert!((got - want).abs() <= 1e-15, "epoch {epoch}: {got} != {want}");
    }
    let s = LrSchedule::Step { step_size: 3, gamma: 0.1 };
    for epoch in 0..30 {
        let want = 0.9 * 0.1f64.powi((epoch / 3) as i32);
        let got = s.lr_at(0.9, epoch);
        assert!((got - want).abs() <= 1e-12 * want, "epoch {epoch}: {got} != {want}");
    }
    assert_eq!(LrSchedule::Constant.lr_at(0.9, 17), 0.9);
}

#[test]
fn cosine_schedule_matches_closed_form() {
    for (t_max, eta_min) in [(10usize, 0.0), (10, 0.01), (1, 0.0), (7, 1e-3)] {
        let s = LrSchedule::Cosine { t_max, eta_min };
        let base = 0.1;
        for epoch in 0..=3 * t_max + 2 {
            let closed =
                eta_min + (base - eta_min) * (1.0 + (std::f64::consts::PI * epoch as f64 / t_max as f64).cos()) / 2.0;
            let got = s.lr_at(base, epoch);
            assert!((got - closed).abs() <= 1e-12 * base, "T={t_max} eta={eta_min} epoch {epoch}: {got} != {closed}");
        }
    }
    let s = LrSchedule::Cosine { t_max: 10, eta_min: 0.0 };
    assert_eq!(s.lr_at(0.1, 0), 0.1);
    assert!((s.lr_at(0.1, 5) - 0.05).abs() < 1e-15);
    assert!(s.lr_at(0.1, 10).abs() < 1e-15);
}

#[test]
fn schedule_parses_and_prints() {
    let cases = [
        ("constant", LrSchedule::Constant),
        ("step:5:0.5", LrSchedule::Step { step_size: 5, gamma: 0.5 }),
        ("step:3", LrSchedule::Step { step_size: 3, gamma: 0.1 }),
        ("cosine", LrSchedule::Cosine { t_max: 0, eta_min: 0.0 }),
        ("cosine:10", LrSchedule::Cosine { t_max: 10, eta_min: 0.0 }),
        ("cosine:10:0.0", LrSchedule::Cosine { t_max: 10, eta_min: 0.0 }),
        (" Cosine:20:1e-4 ", LrSchedule::Cosine { t_max: 20, eta_min: 1e-4 }),
    ];
    for (text, want) in cases {
        let got: LrSchedule = text.parse().unwrap();
        assert_eq!(got, want, "{text}");
        assert_eq!(got.to_string().parse::<LrSchedule>().unwrap(), got, "{got}");
        let json = serde_json::to_string(&got).unwrap();
        assert_eq!(serde_json::from_str::<LrSchedule>(&json).unwrap(), got, "{json}");
    }
    for bad in
        ["", "linear", "constant:1", "step", "step:0", "step:x", "step:5:y", "step:1:2:3", "cosine:1:2:3", "cosine:-1"]
    {
        assert!(bad.parse::<LrSchedule>().is_err(), "{bad:?} should not parse");
    }
    assert_eq!(
        serde_json::to_value(LrSchedule::Step { step_size: 5, gamma: 0.5 }).unwrap(),
        serde_json::json!({"type": "step", "step_size": 5, "gamma": 0.5})
    );
    let resolved = "cosine".parse::<LrSchedule>().unwrap().resolved(12);
    assert_eq!(resolved, LrSchedule::Cosine { t_max: 12, eta_min: 0.0 });
    assert_eq!(
        LrSchedule::Step { step_size: 2, gamma: 0.5 }.resolved(12),
        LrSchedule::Step { step_size: 2, gamma: 0.5 }
    );
}

#[test]
#[should_panic(expected = "resolved")]
fn unresolved_cosine_panics() {
    LrSchedule::Cosine { t_max: 0, eta_min: 0.0 }.lr_at(0.1, 1);
}

// ---- initialisation --------------------------------------------------------------------

/// A linear layer 400 -> 120 with a gap before it, and a conv layer, in one buffer.
fn layout() -> (Vec<ParamInfo>, usize) {
    let conv_w = ParamInfo::weight("0.weight", 0, vec![6, 1, 5, 5]);
    let conv_b = ParamInfo::bias("0.bias", 150, 6, conv_w.fan_in);
    let lin_w = ParamInfo::weight("5.weight", 200, vec![120, 400]); // 156..200 is a gap
    let lin_b = ParamInfo::bias("5.bias", 200 + 48_000, 120, lin_w.fan_in);
    let len = lin_b.range().end + 10; // and a tail
    (vec![conv_w, conv_b, lin_w, lin_b], len)
}

fn initialised(init: Init, seed: u64) -> (Vec<f32>, Vec<ParamInfo>) {
    let (infos, len) = layout();
    let mut params = vec![f32::NAN; len];
    init_params(&mut params, &infos, init, &mut ChaCha8Rng::seed_from_u64(seed));
    (params, infos)
}

fn mean_var(x: &[f32]) -> (f64, f64) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var)
}

#[test]
fn fans_follow_pytorch() {
    assert_eq!(fans(&[6, 1, 5, 5]), (25, 150));
    assert_eq!(fans(&[16, 6, 5, 5]), (150, 400));
    assert_eq!(fans(&[120, 400]), (400, 120));
    let (infos, _) = layout();
    assert_eq!((infos[1].fan_in, infos[1].kind), (25, ParamKind::Bias));
    assert_eq!(infos[2].range(), 200..48_200);
    assert_eq!(infos[2].numel(), 48_000);
}

#[test]
#[should_panic(expected = "at least 2 dimensions")]
fn fans_of_a_vector_panic() {
    fans(&[10]);
}

#[test]
fn init_bounds_and_moments() {
    // (init, weight bound for fan_in 400 / fan_out 120, bias bound for fan_in 400)
    let cases = [
        (Init::PyTorchDefault, 1.0 / 400f64.sqrt(), 1.0 / 400f64.sqrt()),
        (Init::Xavier, (6.0 / 520f64).sqrt(), 1.0 / 400f64.sqrt()),
        (Init::LeCun, 2.4 / 400.0, 2.4 / 400.0),
    ];
    for (init, wb, bb) in cases {
        let (params, infos) = initialised(init, 42);
        let w = &params[infos[2].range()];
        let b = &params[infos[3].range()];
        assert!((init.bound(&infos[2]) - wb).abs() < 1e-12 * wb, "{init}");
        assert!((init.bound(&infos[3]) - bb).abs() < 1e-12 * bb, "{init}");
        let wb32 = wb as f32;
        assert!(w.iter().all(|x| x.abs() <= wb32), "{init}: weight out of bounds");
        assert!(b.iter().all(|x| x.abs() <= bb as f32), "{init}: bias out of bounds");
        let max = w.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(max > 0.99 * wb32, "{init}: the weights do not reach the bound: {max} vs {wb32}");
        // U(-b, b): mean 0, variance b^2 / 3. Over 48,000 draws the mean's standard
        // error is b / sqrt(3 * 48000), the variance's relative error about 0.4%.
        let (mean, var) = mean_var(w);
        assert!(mean.abs() < 5.0 * wb / (3.0f64 * 48_000.0).sqrt(), "{init}: mean {mean}");
        let want_var = wb * wb / 3.0;
        assert!((var / want_var - 1.0).abs() < 0.03, "{init}: variance {var}, want {want_var}");
        assert!(b.iter().any(|&x| x != 0.0), "{init}: biases are drawn, not zero");
        let (bmean, _) = mean_var(b);
        assert!(bmean.abs() < 5.0 * bb / (3.0f64 * 120.0).sqrt(), "{init}: bias mean {bmean}");
        // The conv weight: fan_in 25, fan_out 150.
        let conv_bound = init.bound(&infos[0]) as f32;
        assert!(params[infos[0].range()].iter().all(|x| x.abs() <= conv_bound));
    }
    let (infos, _) = layout();
    assert!((Init::Xavier.bound(&infos[0]) - (6.0f64 / 175.0).sqrt()).abs() < 1e-12);
    assert!((Init::PyTorchDefault.bound(&infos[0]) - 0.2).abs() < 1e-12);
}

#[test]
fn init_leaves_gaps_alone() {
    let (params, infos) = initialised(Init::Xavier, 1);
    assert!(params[156..200].iter().all(|x| x.is_nan()), "the gap between tensors was written");
    assert!(params[infos[3].range().end..].iter().all(|x| x.is_nan()), "the tail was written");
    for info in &infos {
        assert!(params[info.range()].iter().all(|x| x.is_finite()), "{} not filled", info.name);
    }
}

#[test]
fn init_is_reproducible_from_the_seed() {
    for init in [Init::PyTorchDefault, Init::Xavier, Init::LeCun] {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        let (a, infos) = initialised(init, 7);
        let (b, _) = initialised(init, 7);
        let (c, _) = initialised(init, 8);
        assert_eq!(bits(&a), bits(&b), "{init}: same seed, different values");
        for info in &infos {
            let r = info.range();
            let same = a[r.clone()].iter().zip(&c[r]).filter(|(x, y)| x == y).count();
            assert!(same < info.numel() / 10 + 1, "{init}: {}: seeds 7 and 8 agree on {same} values", info.name);
        }
    }
}

#[test]
fn init_parses_and_serialises() {
    assert_eq!("xavier".parse::<Init>().unwrap(), Init::Xavier);
    assert_eq!("pytorch".parse::<Init>().unwrap(), Init::PyTorchDefault);
    assert_eq!("LeCun".parse::<Init>().unwrap(), Init::LeCun);
    assert!("kaiming".parse::<Init>().is_err());
    for init in [Init::PyTorchDefault, Init::Xavier, Init::LeCun] {
        assert_eq!(init.to_string().parse::<Init>().unwrap(), init);
        let json = serde_json::to_string(&init).unwrap();
        assert_eq!(json, format!("\"{init}\""));
        assert_eq!(serde_json::from_str::<Init>(&json).unwrap(), init);
    }
    let info = ParamInfo::weight("2.weight", 156, vec![16, 6, 5, 5]);
    let json = serde_json::to_string(&info).unwrap();
    assert_eq!(serde_json::from_str::<ParamInfo>(&json).unwrap(), info);
}

// ---- properties ------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn clipped_norm_is_at_most_max(values in prop::collection::vec(-100.0f32..100.0, 1..200), max_norm in 0.01f32..50.0) {
        let mut g = values.clone();
        let norm = clip_grad_norm(&mut g, max_norm);
        let before: f64 = values.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        prop_assert!((norm as f64 - before).abs() <= 1e-6 * before.max(1e-30));
        let after: f64 = g.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        prop_assert!(after <= max_norm as f64 * (1.0 + 1e-5));
        if before < max_norm as f64 {
            prop_assert_eq!(g, values);
        }
    }

    #[test]
    fn any_resume_point_continues_bit_identically(kind_index in 0usize..6, split in 0usize..6, seed in any::<u64>()) {
        check_resume(all_kinds()[kind_index], 37, split, 6, seed);
    }
}

#[test]
fn one_sdlm_step_matches_a_hand_computed_one() {
    // p − η/(μ + h)·g per parameter (appendix C of the paper), here by hand:
    // 0.5 − 0.001/(0.02 + 0)·0.3 = 0.485; −1 − 0.001/(0.02 + 0.98)·(−2) = −0.998;
    // 2 − 0.001/(0.02 + 0.18)·0.5 = 1.9975.
    let paper = OptimizerKind::Sdlm { mu: 0.02, samples: 500 };
    let mut opt = Optimizer::new(paper, 3).unwrap();
    let mut p = vec![0.5f32, -1.0, 2.0];
    opt.set_curvature(&[0.0, 0.98, 0.18]);
    opt.step(&mut p, &[0.3, -2.0, 0.5], 0.001);
    assert_close(&p, &[0.485, -0.998, 1.9975], 1e-6, "sdlm step");
    // The curvature is state: saved and loaded with the step count.
    let state = opt.state_tensors();
    assert!(state.iter().any(|(n, s, v)| n == "optim.hessian_diag" && s == &[3] && v == &[0.0, 0.98, 0.18]));
    let mut other = Optimizer::new(paper, 3).unwrap();
    other.load_state(&state).unwrap();
    assert_eq!(other.state_tensors(), state);
    let err = Optimizer::new(OptimizerKind::adam(), 3).unwrap().load_state(&state).unwrap_err().to_string();
    assert!(err.contains("it is state of sdlm"), "{err}");
    // Settings parse, print back and are checked.
    let kind: OptimizerKind = "sdlm:mu=0.05,samples=100".parse().unwrap();
    assert_eq!(kind, OptimizerKind::Sdlm { mu: 0.05, samples: 100 });
    assert_eq!(kind.to_string().parse::<OptimizerKind>().unwrap(), kind);
    assert!("sdlm:mu=0".parse::<OptimizerKind>().is_err());
    assert!("sdlm:samples=0".parse::<OptimizerKind>().is_err());
    assert!("sdlm:momentum=0.9".parse::<OptimizerKind>().is_err());
}

#[test]
fn the_lenet5_schedule_is_the_papers_eta_per_pass() {
    let s: lenet::schedule::LrSchedule = "lenet5".parse().unwrap();
    let etas: Vec<f64> = (0..20).map(|e| s.lr_at(0.0005, e)).collect();
    let want = [
        5e-4, 5e-4, 2e-4, 2e-4, 2e-4, 1e-4, 1e-4, 1e-4, 5e-5, 5e-5, 5e-5, 5e-5, 1e-5, 1e-5, 1e-5, 1e-5, 1e-5, 1e-5,
        1e-5, 1e-5,
    ];
    for (e, (got, want)) in etas.iter().zip(want).enumerate() {
        assert!((got - want).abs() < 1e-12, "pass {}: η {got}, the paper's {want}", e + 1);
    }
    assert_eq!(s.to_string(), "lenet5");
}
