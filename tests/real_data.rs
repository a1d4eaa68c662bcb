//! Accuracy on the real datasets (CI gets them with scripts/setup-data). Like
//! tinygrad's beautiful_mnist, the run fails below a target accuracy; nothing
//! here asserts a time.

use lenet::data::{self, DatasetKind};
use lenet::engine::cpu::CpuEngine;
use lenet::optim::OptimizerKind;
use lenet::spec::Spec;
use lenet::trainer::{Silent, TrainConfig, Trainer};

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

#[test]
fn relu_adam_one_epoch_of_mnist_reaches_97_percent() {
    let Some(ds) = dataset(DatasetKind::Mnist) else { return };
    assert_eq!((ds.train.len(), ds.test.len()), (60000, 10000));
    let mut arch = Spec::preset("relu").unwrap();
    arch.input.normalize = "mnist".parse().unwrap();
    let config = TrainConfig {
        arch,
        dataset: DatasetKind::Mnist,
        epochs: 1,
        batch: 64,
        lr: 1e-3,
        optimizer: OptimizerKind::adam(),
        threads: 2,
        ..TrainConfig::d2l()
    };
    let mut t = Trainer::new(CpuEngine::new(2).unwrap(), config, &ds.train, &ds.test, None).unwrap();
    let m = t.train_epoch(&mut Silent).unwrap();
    eprintln!(
        "relu/adam/mnist, 1 epoch: loss {:.4} train acc {:.4} test acc {:.4}",
        m.train_loss, m.train_acc, m.test_acc
    );
    assert!(m.test_acc >= 0.97, "test accuracy {} < 0.97", m.test_acc);
}

#[test]
fn fashion_mnist_is_found_and_loads() {
    let Some(ds) = dataset(DatasetKind::FashionMnist) else { return };
    assert_eq!((ds.train.len(), ds.test.len()), (60000, 10000));
    assert_eq!(&ds.train.labels[..5], &[9, 0, 0, 3, 0]);
}
