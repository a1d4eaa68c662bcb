//! The library's API from its documented paths alone (no `lenet::internal`): what a Rust
//! program that adds lenet to its Cargo.toml can do (issue 26).

use lenet::data::DatasetKind;
use lenet::{models, CpuEngine, Dataset, Network, TrainConfig, Trainer};

#[path = "common/real_data.rs"]
mod real_data;

/// A shipped model evaluated through `Network::evaluate` scores its card's test accuracy
/// (tests/models.rs checks the card against `lenet eval` on the real test set, exactly,
/// on the card's instruction set; here on this CPU's, so within a few images).
#[test]
fn a_shipped_model_evaluates_to_its_card() {
    if real_data::real_data_dir(DatasetKind::Mnist).is_none() {
        return;
    }
    let data = Dataset::load(DatasetKind::Mnist, None).unwrap();
    let shipped = models::find("mnist-relu").unwrap();
    let model = shipped.checkpoint();
    let mut net = Network::new(CpuEngine::new(2).unwrap(), &model.spec).unwrap();
    net.set_params(&model.params).unwrap();
    assert_eq!(net.device(), "cpu (2 threads)");
    let result = net.evaluate(&data.test);
    assert_eq!(result.count, 10_000);
    let card = shipped.card().test_accuracy;
    assert!((result.accuracy - card).abs() <= 5e-4, "{} against the card's {card}", result.accuracy);
    let diagonal: usize = (0..10).map(|c| result.confusion[c][c]).sum();
    assert_eq!(diagonal as f64 / 10_000.0, result.accuracy);
}

/// A trainer over a dataset other than its config's is refused before any work (the
/// checkpoints would name one dataset and hold a network trained on the other).
#[test]
fn a_trainer_takes_only_its_configs_dataset() {
    if real_data::real_data_dir(DatasetKind::Mnist).is_none() {
        return;
    }
    let mnist = Dataset::load(DatasetKind::Mnist, None).unwrap();
    let e = Trainer::on_cpu(TrainConfig::d2l(), &mnist).err().unwrap().to_string();
    assert!(e.contains("trains on fashion-mnist, but the dataset given is mnist"), "{e}");
    let config = TrainConfig { dataset: DatasetKind::Mnist, batch: 0, ..TrainConfig::d2l() };
    let e = Trainer::on_cpu(config, &mnist).err().unwrap().to_string();
    assert!(e.contains("--batch"), "{e}");
    // Threads 0 (one per core) is recorded as the count it became: a resume needs it.
    let config = TrainConfig { dataset: DatasetKind::Mnist, threads: 0, ..TrainConfig::d2l() };
    let trainer = Trainer::on_cpu(config, &mnist).unwrap();
    let cores = std::thread::available_parallelism().unwrap().get();
    assert_eq!(trainer.config.threads, cores);
    assert_eq!(trainer.device(), format!("cpu ({cores} thread{})", if cores == 1 { "" } else { "s" }));
}
