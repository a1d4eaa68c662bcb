//! LeNet-5 of 1998 as data: the paper's parameter and connection counts, its input
//! scaling, the C3 table and RBF bitmaps as spec data with clear errors when they do
//! not fit, LeCun's initialisation per unit, and the masked convolution's left-out
//! weights held at zero through training.

use std::process::Command;

use lenet::init::{init_params, Init};
use lenet::internal::engine::cpu::CpuEngine;
use lenet::internal::engine::Engine;
use lenet::network::Network;
use lenet::optim::{Optimizer, OptimizerKind};
use lenet::spec::{c3_table, Bitmaps, Criterion, LayerSpec, Spec};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn lenet(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lenet")).args(args).output().unwrap()
}

#[test]
fn parameter_and_connection_counts_are_the_papers() {
    let layers = Spec::lenet5().resolve().unwrap();
    let counted: Vec<(usize, usize, usize)> = layers
        .iter()
        .enumerate()
        .filter(|(_, l)| l.trainable_count() > 0)
        .map(|(i, l)| (i, l.trainable_count(), l.connections()))
        .collect();
    // (layer, parameters, connections): C1, S2, C3, S4, C5, F6 (section II-B).
    assert_eq!(
        counted,
        [
            (0, 156, 122_304),
            (2, 12, 5_880),
            (4, 1_516, 151_600),
            (6, 32, 2_000),
            (8, 48_120, 48_120),
            (11, 10_164, 10_164)
        ]
    );
    assert_eq!(counted.iter().map(|c| c.1).sum::<usize>(), 60_000);
    let out = lenet(&["summary", "--arch", "lenet5"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("total parameters: 60000"), "{text}");
    assert!(text.contains("MaskedConv2d(6, 16, kernel_size=(5, 5))"), "{text}");
    assert!(text.contains("RBF(in_features=84, out_features=10)"), "{text}");
    assert!(text.contains("Subsample(6, kernel_size=2)"), "{text}");
    // Output shapes as the paper draws them.
    let shapes: Vec<String> = layers.iter().map(|l| l.output.to_string()).collect();
    assert_eq!(shapes[0], "(1, 6, 28, 28)");
    assert_eq!(shapes[2], "(1, 6, 14, 14)");
    assert_eq!(shapes[4], "(1, 16, 10, 10)");
    assert_eq!(shapes[6], "(1, 16, 5, 5)");
    assert_eq!(shapes[8], "(1, 120, 1, 1)");
    assert_eq!(shapes[11], "(1, 84)");
    assert_eq!(shapes[13], "(1, 10)");
}

#[test]
fn the_input_is_the_digit_in_a_32x32_frame_from_minus_0_1_to_1_175() {
    let engine = CpuEngine::new(1).unwrap();
    let mut pixels = vec![0u8; 2 * 784];
    pixels[784..].fill(255);
    let images = lenet::data::Images { count: 2, rows: 28, cols: 28, pixels };
    let ex = engine.upload_examples(&images, &[3, 4], &Spec::lenet5().input);
    let (mut x, mut y) = (vec![0.0; 2 * 1024], vec![0.0; 2]);
    engine.gather(&ex, &[0, 1], &mut x, &mut y);
    assert!(x[..1024].iter().all(|&v| (v + 0.1).abs() < 1e-6), "background is −0.1");
    let ink = &x[1024..];
    for r in 0..32 {
        for c in 0..32 {
            let inside = (2..30).contains(&r) && (2..30).contains(&c);
            let want = if inside { 1.175 } else { -0.1 };
            assert!((ink[r * 32 + c] - want).abs() < 1e-6, "({r}, {c}): {}", ink[r * 32 + c]);
        }
    }
    assert_eq!(y, [3.0, 4.0]);
}

#[test]
fn the_c3_table_is_data_and_a_bad_one_is_a_clear_error() {
    let with_table = |table: Vec<Vec<usize>>| {
        let mut spec = Spec::lenet5();
        spec.layers[4] = LayerSpec::Conv { out_channels: 16, kernel: 5, padding: 0, stride: 1, table: Some(table) };
        spec
    };
    // A TOML architecture gives its own table: here C3 fully connected but for one pair.
    let mut dense: Vec<Vec<usize>> = (0..16).map(|_| (0..6).collect()).collect();
    dense[3].remove(2);
    let spec = with_table(dense);
    let back = Spec::from_toml(&spec.to_toml()).unwrap();
    assert_eq!(back, spec, "TOML round trip");
    assert_eq!(spec.resolve().unwrap()[4].trainable_count(), (16 * 6 - 1) * 25 + 16);
    let lenet5 = Spec::lenet5();
    assert_eq!(Spec::from_toml(&lenet5.to_toml()).unwrap(), lenet5);

    let err = |table: Vec<Vec<usize>>| with_table(table).resolve().unwrap_err().to_string();
    let mut bad = c3_table();
    bad[15] = vec![0, 1, 6];
    let e = err(bad);
    assert!(e.contains("layer 4") && e.contains("output map 15 reads input map 6") && e.contains("0..6"), "{e}");
    let e = err(c3_table()[..15].to_vec());
    assert!(e.contains("15 rows for 16 output maps"), "{e}");
    let mut bad = c3_table();
    bad[2] = vec![];
    assert!(err(bad).contains("output map 2 reads no input map"));
    let mut bad = c3_table();
    bad[0] = vec![1, 1];
    assert!(err(bad).contains("names an input map twice"));
}

#[test]
fn rbf_bitmaps_that_do_not_fit_are_a_clear_error() {
    let with_bitmaps = |bitmaps: Bitmaps| {
        let mut spec = Spec::lenet5();
        spec.layers[13] = LayerSpec::Rbf { bitmaps };
        spec.resolve().unwrap_err().to_string()
    };
    let e = with_bitmaps(Bitmaps::Pictures(vec!["#.#/.#.".into(); 10]));
    assert!(e.contains("layer 13") && e.contains("bitmap 0 has 6 values, the layer's input has 84 features"), "{e}");
    let e = with_bitmaps(Bitmaps::Named("letters".into()));
    assert!(e.contains("unknown bitmaps \"letters\""), "{e}");
    let e = with_bitmaps(Bitmaps::Pictures(vec!["x".repeat(84); 10]));
    assert!(e.contains("neither '#'"), "{e}");
    // Nine bitmaps make nine outputs, not the ten classes.
    let e = with_bitmaps(Bitmaps::Pictures(vec!["#".repeat(84); 9]));
    assert!(e.contains("10 class scores"), "{e}");
    // The paper's criteria need RBF outputs.
    let e = Spec { loss: Criterion::Mse, ..Spec::preset("d2l").unwrap() }.resolve().unwrap_err().to_string();
    assert!(e.contains("needs an RBF output layer"), "{e}");
    // Explicit pictures of the right size are taken, row separators and all.
    let mut spec = Spec::lenet5();
    let pictures: Vec<String> = lenet::internal::layers::rbf::DIGITS_7X12.iter().map(|p| p.replace(' ', "/")).collect();
    spec.layers[13] = LayerSpec::Rbf { bitmaps: Bitmaps::Pictures(pictures) };
    assert!(spec.resolve().is_ok());
}

#[test]
fn lecun_init_follows_each_units_fan_in() {
    let net = Network::new(CpuEngine::new(1).unwrap(), &Spec::lenet5()).unwrap();
    let mut p = vec![0.0f32; net.num_params()];
    init_params(&mut p, net.param_infos(), Init::LeCun, &mut ChaCha8Rng::seed_from_u64(1));
    let info = |name: &str| net.param_infos().iter().find(|i| i.name == name).unwrap().clone();
    // C1: fan-in 25. S2's coefficient: 4. C3's maps: 75, 100 or 150 by their table row.
    let check = |values: &[f32], bound: f32, what: &str| {
        let max = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(max <= bound && max > 0.8 * bound, "{what}: largest {max}, bound {bound}");
    };
    check(&p[info("0.weight").range()], 2.4 / 25.0, "C1");
    check(&p[info("2.weight").range()], 2.4 / 4.0, "S2 coefficients");
    let c3 = info("4.weight");
    let table = c3_table();
    for (o, row) in table.iter().enumerate() {
        let kernels = &p[c3.range()][o * 150..(o + 1) * 150];
        let connected: Vec<f32> = row.iter().flat_map(|&c| kernels[c * 25..(c + 1) * 25].iter().copied()).collect();
        check(&connected, 2.4 / (row.len() * 25) as f32, &format!("C3 map {o}"));
    }
    check(&p[info("4.bias").range()][..6], 2.4 / 75.0, "C3 biases of 3-map units");
    let b15 = p[info("4.bias").range()][15];
    assert!(b15.abs() <= 2.4 / 150.0, "C3 bias of the 6-map unit: {b15}");
}

#[test]
fn left_out_weights_stay_zero_through_training() {
    let spec = Spec::lenet5();
    let mut net = Network::new(CpuEngine::new(2).unwrap(), &spec).unwrap();
    net.set_params(&vec![0.01f32; net.num_params()]).unwrap();
    let c3 = net.param_infos().iter().find(|i| i.name == "4.weight").unwrap().range();
    let left_out = |p: &[f32]| -> Vec<f32> {
        let w = &p[c3.clone()];
        let mut v = vec![];
        for (o, row) in c3_table().iter().enumerate() {
            for c in (0..6).filter(|c| !row.contains(c)) {
                v.extend_from_slice(&w[(o * 6 + c) * 25..(o * 6 + c + 1) * 25]);
            }
        }
        v
    };
    assert_eq!(left_out(&net.params()).len(), 36 * 25);
    assert!(left_out(&net.params()).iter().all(|&v| v == 0.0), "set_params keeps the mask");
    let x: Vec<f32> = (0..8 * 1024).map(|i| ((i * 7919) % 255) as f32 / 255.0).collect();
    let labels: Vec<u8> = (0..8).map(|i| i as u8).collect();
    let images =
        lenet::data::Images { count: 8, rows: 32, cols: 32, pixels: x.iter().map(|&v| (v * 255.0) as u8).collect() };
    let ex = net.engine.upload_examples(&images, &labels, &spec.input);
    for kind in [OptimizerKind::sgd(), OptimizerKind::adam(), "sgd:momentum=0.9,weight_decay=0.01".parse().unwrap()] {
        let mut opt = Optimizer::new(kind, net.num_params()).unwrap();
        let before = net.params();
        net.reset_train_stats();
        for _ in 0..3 {
            net.train_step(&ex, &[0, 1, 2, 3, 4, 5, 6, 7], &mut opt, 0.01, None);
        }
        let stats = net.train_stats();
        assert!(stats.mean_loss().is_finite() && stats.batches == 3, "{stats:?}");
        assert!(left_out(&net.grads()).iter().all(|&v| v == 0.0), "{kind:?}: gradients of left-out weights");
        assert!(left_out(&net.params()).iter().all(|&v| v == 0.0), "{kind:?}: left-out weights moved");
        assert_ne!(net.params()[c3.clone()], before[c3.clone()], "{kind:?}: C3 did not train");
    }
}
