//! `lenet bench` works (it is a measurement, never a test of speed: nothing here
//! asserts a time): the library on synthetic data, and the command line in its
//! quick mode on a toy dataset.

use std::path::Path;
use std::process::Command;

use lenet::data::Split;
use lenet::internal::bench::{self, BenchConfig, Summary};
use lenet::internal::engine::cpu::CpuEngine;
use lenet::internal::idx::{self, Images};
use lenet::spec::Spec;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn toy_split(n: usize, seed: u64) -> Split {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let labels: Vec<u8> = (0..n).map(|_| rng.gen_range(0..10)).collect();
    let mut pixels = vec![0u8; n * 784];
    for (i, &c) in labels.iter().enumerate() {
        let (y0, x0) = (4 + (c as usize / 5) * 12, 2 + (c as usize % 5) * 5);
        for y in y0..y0 + 8 {
            for x in x0..x0 + 4 {
                pixels[i * 784 + y * 28 + x] = 255;
            }
        }
    }
    Split { images: Images { count: n, rows: 28, cols: 28, pixels }, labels }
}

#[test]
fn bench_reports_every_repeat_and_the_loss_falls() {
    let (train, test) = (toy_split(300, 1), toy_split(70, 2));
    let mut config = BenchConfig::new(Spec::preset("relu").unwrap(), 32);
    (config.warmup, config.repeats, config.train_batches, config.eval_batches) = (1, 3, 12, 0);
    config.optimizer = "adam".parse().unwrap();
    config.lr = 3e-3;
    config.profile = true;
    let mut seen = Vec::new();
    let report = bench::run(CpuEngine::new(2).unwrap(), &config, &train, &test, &mut |phase, r, eps| {
        seen.push((phase.to_string(), r, eps))
    })
    .unwrap();
    // 1 warm-up (repeat 0) and 3 measured repeats of each phase, all positive.
    let phases: Vec<(&str, usize)> = seen.iter().map(|(p, r, _)| (p.as_str(), *r)).collect();
    assert_eq!(
        phases,
        [("train", 0), ("train", 1), ("train", 2), ("train", 3), ("eval", 0), ("eval", 1), ("eval", 2), ("eval", 3)]
    );
    assert!(seen.iter().all(|s| s.2 > 0.0 && s.2.is_finite()));
    assert_eq!(report.train.samples.len(), 3);
    // 12 steps of 32, one of which may end an epoch (300 = 9·32 + 12) with a short batch.
    assert!((11 * 32 + 12..=12 * 32).contains(&report.train_examples_per_repeat));
    // The whole test set, 70 examples in batches of 32.
    assert_eq!(report.eval_examples_per_repeat, 70);
    assert!(report.train.min <= report.train.median && report.train.median <= report.train.max);
    // 48 steps cycle the 300 examples five times over, reshuffled: the loss falls.
    assert!(report.last_loss < report.first_loss, "{} -> {}", report.first_loss, report.last_loss);
    assert!(report.first_batch_secs > 0.0);
    let profile = report.profile.expect("the CPU engine times itself");
    assert!(profile.contains("conv 1→6") && profile.contains("linear 84→10"), "{profile}");
    // The wait for the slowest chunk has a row of its own, and every part counted in
    // the total has one: the shares add up to the whole.
    assert!(profile.contains("idle at the end of passes"), "{profile}");
    let shares: f64 = profile
        .split_whitespace()
        .filter_map(|w| w.strip_suffix('%')?.parse::<f64>().ok())
        .inspect(|v| assert!((0.0..=100.0).contains(v), "{profile}"))
        .sum();
    assert!((shares - 100.0).abs() < 1.0, "shares add up to {shares}:\n{profile}");
}

#[test]
fn bench_rejects_nonsense() {
    let (train, test) = (toy_split(40, 1), toy_split(20, 2));
    let mut config = BenchConfig::new(Spec::preset("d2l").unwrap(), 0);
    let e = bench::run(CpuEngine::new(1).unwrap(), &config, &train, &test, &mut |_, _, _| {}).unwrap_err();
    assert!(e.to_string().contains("--batch"), "{e}");
    config.batch = 8;
    config.repeats = 0;
    assert!(bench::run(CpuEngine::new(1).unwrap(), &config, &train, &test, &mut |_, _, _| {}).is_err());
}

#[test]
fn summary_statistics() {
    let s = Summary::of(&[10.0, 30.0, 20.0, 40.0]);
    assert_eq!((s.median, s.min, s.max), (25.0, 10.0, 40.0));
    assert!((s.spread - 30.0 / 25.0).abs() < 1e-12);
    assert!(Summary::of(&[]).median.is_nan());
}

fn write_dataset(dir: &Path) {
    for (stem, split) in [("train", toy_split(200, 3)), ("t10k", toy_split(50, 4))] {
        idx::write_images(&dir.join(format!("{stem}-images-idx3-ubyte.gz")), &split.images).unwrap();
        idx::write_labels(&dir.join(format!("{stem}-labels-idx1-ubyte.gz")), &split.labels).unwrap();
    }
}

#[test]
fn quick_mode_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_lenet"))
        .args(["--data-dir", dir.path().to_str().unwrap(), "bench", "--quick", "--threads", "2", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(v["report"]["batch"], 256);
    assert_eq!(v["threads"], 2);
    assert_eq!(v["dataset"], "mnist");
    for key in ["sgemm_gflops", "physical_limit_train_examples_per_sec"] {
        assert!(v[key].as_f64().unwrap() > 0.0, "{key}: {}", v[key]);
    }
    assert!(v["report"]["train"]["median"].as_f64().unwrap() > 0.0);
    assert!(v["report"]["eval"]["median"].as_f64().unwrap() > 0.0);
    assert_eq!(v["report"]["flops"]["train"], 2 * (2 * 117_600 + 3 * 240_000 + 3 * 58_920));
    // The text report, with a profile.
    let out = Command::new(env!("CARGO_BIN_EXE_lenet"))
        .args(["--data-dir", dir.path().to_str().unwrap(), "bench", "--quick", "--arch", "relu", "--profile"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for want in ["median", "first trained batch", "peak RSS", "sgemm peak", "where a training step's time goes"] {
        assert!(text.contains(want), "no {want:?} in:\n{text}");
    }
}

#[test]
fn missing_data_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lenet"))
        .env("LENET_DATA", dir.path())
        .env("XDG_CACHE_HOME", dir.path())
        .env("HOME", dir.path())
        .args(["--data-dir", dir.path().to_str().unwrap(), "bench", "--quick"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("mnist"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// `lenet bench --kernels` (the timing probes that used to be ignored tests in
/// src/layers/conv.rs): every kernel has a row with finite, positive figures that agree
/// are finite and positive, and no dataset is needed; the options it does not use are refused.
#[test]
fn kernel_timings_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lenet"))
        .env("LENET_DATA", dir.path())
        .args(["bench", "--kernels", "--quick", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["isa"], lenet::internal::layers::simd::isa().name());
    let rows = v["kernels"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["kernel"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "conv1 forward",
            "conv1 forward + sigmoid",
            "conv1 weight gradient",
            "conv2 forward",
            "conv2 forward + sigmoid",
            "conv2 weight gradient",
            "conv2 input gradient"
        ]
    );
    for r in rows {
        let (tile, gflops) = (r["us_per_tile"].as_f64().unwrap(), r["gflops"].as_f64().unwrap());
        assert!(tile > 0.0 && tile.is_finite() && gflops > 0.0 && gflops.is_finite(), "{r}");
    }
    // The text table has the same rows.
    let out = Command::new(env!("CARGO_BIN_EXE_lenet")).args(["bench", "--kernels", "--quick"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("us/tile"), "{text}");
    for name in names {
        assert!(text.contains(name), "no {name:?} in:\n{text}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_lenet")).args(["bench", "--kernels", "--profile"]).output().unwrap();
    assert!(!out.status.success(), "--kernels with --profile was accepted");
}
