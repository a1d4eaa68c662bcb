//! An architecture built in code rather than TOML: LeNet's shape with more maps in the
//! first convolution, ReLU, max pooling, MNIST's standardised input and one hidden
//! layer, trained on MNIST with Adam and saved as a checkpoint that `lenet eval` and
//! `lenet predict` read (and PyTorch's `load_state_dict`, once `lenet export --state-dict`
//! has left out the optimizer's state). Needs MNIST (`scripts/setup-data`).
//!
//!     cargo run --release --example custom_net [-- OUT.safetensors]
//!     EPOCHS=1 TARGET_TEST_ACC=0.97 cargo run --release --example custom_net
use anyhow::{bail, Context, Result};
use lenet::optim::OptimizerKind;
use lenet::spec::{Criterion, Fit, InputSpec, LayerSpec::*, Normalize};
use lenet::trainer::Silent;
use lenet::{checkpoint, Dataset, DatasetKind, Spec, TrainConfig, Trainer};

/// An environment variable's value, if it is set.
fn setting<T: std::str::FromStr>(name: &str) -> Result<Option<T>> {
    let Ok(text) = std::env::var(name) else { return Ok(None) };
    text.parse().map(Some).ok().with_context(|| format!("{name}={text} is not a number"))
}

fn main() -> Result<()> {
    let out = std::env::args().nth(1).unwrap_or_else(|| "custom-net.safetensors".into());
    // The order of PyTorch's nn.Sequential: layer i's weights are state_dict key "i.weight".
    let spec = Spec {
        name: "wide-c1".into(),
        input: InputSpec { size: 28, fit: Fit::Pad, normalize: Normalize::Standardize { mean: 0.1307, std: 0.3081 } },
        layers: vec![
            Conv { out_channels: 12, kernel: 5, padding: 2, stride: 1, table: None }, // (12, 28, 28)
            Relu,
            MaxPool { size: 2, stride: 2 }, // (12, 14, 14)
            Conv { out_channels: 16, kernel: 5, padding: 0, stride: 1, table: None }, // (16, 10, 10)
            Relu,
            MaxPool { size: 2, stride: 2 }, // (16, 5, 5)
            Flatten,                        // 400
            Linear { out_features: 100 },
            Relu,
            Linear { out_features: 10 }, // one logit per digit
        ],
        loss: Criterion::CrossEntropy,
    };
    println!("{}", spec.summary()?); // `lenet summary`'s table: modules, shapes, parameters
    let epochs = setting("EPOCHS")?.unwrap_or(3);
    let (optimizer, lr, batch) = (OptimizerKind::adam(), 1e-3, 64);
    let config =
        TrainConfig { arch: spec, dataset: DatasetKind::Mnist, optimizer, lr, batch, epochs, ..TrainConfig::d2l() };
    let mut trainer = Trainer::on_cpu(config, &Dataset::load(DatasetKind::Mnist, None)?)?;
    while !trainer.is_finished() {
        let m = trainer.train_epoch(&mut Silent)?;
        println!(
            "epoch {}  loss {:.4}  train acc {:.4}  test acc {:.4}",
            m.epoch, m.train_loss, m.train_acc, m.test_acc
        );
    }
    checkpoint::save(&out, &trainer.checkpoint())?;
    let test_acc = trainer.history.last().expect("at least one epoch").test_acc;
    println!("saved {out} (test acc {test_acc:.4}): try `lenet eval {out}` or `lenet predict {out} PICTURE`");
    match setting::<f64>("TARGET_TEST_ACC")? {
        Some(target) if test_acc < target => bail!("test acc {test_acc:.4} < target {target}"),
        _ => Ok(()),
    }
}
