//! Accuracy on the real datasets (CI gets them with scripts/setup-data). Like
//! tinygrad's beautiful_mnist, the run fails below a target accuracy; nothing
//! here asserts a time.

use std::process::Command;

use lenet::data::{self, DatasetKind};
use lenet::optim::OptimizerKind;
use lenet::spec::Spec;
use lenet::trainer::TrainConfig;

fn dataset(kind: DatasetKind) -> Option<lenet::data::Dataset> {
    match data::load(kind, None) {
        Ok(d) => Some(d),
        Err(e) if std::env::var("LENET_SKIP_REAL_DATA").is_ok_and(|v| v == "1") => {
            eprintln!("skipping: {e}");
            None
        }
        Err(e) => panic!("{e}\n(run scripts/setup-data, or set LENET_SKIP_REAL_DATA=1 to skip)"),
    }
}

/// Column `name` of the first epoch's row of a run's metrics.csv.
fn first_epoch(run: &std::path::Path, name: &str) -> f64 {
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let row: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    row[header.iter().position(|&c| c == name).unwrap()].parse().unwrap()
}

/// The README's claim, run the way a user runs it: the relu preset as shipped (pixels
/// scaled to [0, 1], no standardisation) with the command line's defaults (Adam's lr
/// 0.001, Xavier, seed 0) but for the batch: one epoch of batches of 64 on 2 threads
/// (with the default 256 one epoch gives 0.965, two give 0.981).
#[test]
fn relu_adam_one_epoch_of_mnist_reaches_97_percent() {
    let Some(ds) = dataset(DatasetKind::Mnist) else { return };
    assert_eq!((ds.train.len(), ds.test.len()), (60000, 10000));
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out = Command::new(env!("CARGO_BIN_EXE_lenet"))
        .args(["train", "--arch", "relu", "--dataset", "mnist", "--optimizer", "adam", "--epochs", "1"])
        .args(["--batch", "64", "--threads", "2", "--run-dir"])
        .arg(&run)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    // The config is the preset's, unchanged.
    let config: TrainConfig = toml::from_str(&std::fs::read_to_string(run.join("config.toml")).unwrap()).unwrap();
    assert_eq!(config.arch, Spec::preset("relu").unwrap());
    assert_eq!((config.batch, config.lr, config.optimizer), (64, 1e-3, OptimizerKind::adam()));
    let test_acc = first_epoch(&run, "test_acc");
    eprintln!("{stdout}");
    assert!(test_acc >= 0.97, "test accuracy {test_acc} < 0.97");
}

/// One pass of the paper's recipe, as `lenet train --arch lenet5 --dataset mnist` runs
/// it but for the number of passes: SDLM at one pattern per update, LeCun's init, the
/// η schedule's first rate. Measured: a running accuracy of 0.925 over the pass's
/// 60,000 updates and a test accuracy of 0.978 (μ = 2 gave 0.903 and 0.977: the bounds
/// leave room for another instruction set's rounding to take another path).
const TRAIN_PIN: f64 = 0.88;
const TEST_PIN: f64 = 0.95;

#[test]
fn lenet5_one_pass_of_mnist_with_the_papers_recipe() {
    let Some(_) = dataset(DatasetKind::Mnist) else { return };
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out = Command::new(env!("CARGO_BIN_EXE_lenet"))
        .args(["train", "--arch", "lenet5", "--dataset", "mnist", "--epochs", "1", "--threads", "1", "--run-dir"])
        .arg(&run)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let config: TrainConfig = toml::from_str(&std::fs::read_to_string(run.join("config.toml")).unwrap()).unwrap();
    assert_eq!(config.arch, Spec::lenet5());
    assert_eq!((config.batch, config.lr, config.optimizer), (1, 5e-4, OptimizerKind::sdlm()));
    assert_eq!((config.schedule, config.init), ("lenet5".parse().unwrap(), lenet::init::Init::LeCun));
    eprintln!("{stdout}");
    let (train_acc, test_acc) = (first_epoch(&run, "train_acc"), first_epoch(&run, "test_acc"));
    assert!(train_acc >= TRAIN_PIN, "running accuracy of the pass {train_acc} < {TRAIN_PIN}");
    assert!(test_acc >= TEST_PIN, "test accuracy {test_acc} < {TEST_PIN}");
}

#[test]
fn fashion_mnist_is_found_and_loads() {
    let Some(ds) = dataset(DatasetKind::FashionMnist) else { return };
    assert_eq!((ds.train.len(), ds.test.len()), (60000, 10000));
    assert_eq!(&ds.train.labels[..5], &[9, 0, 0, 3, 0]);
}
