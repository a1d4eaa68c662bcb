//! d2l's LeNet (Dive into Deep Learning, 7.6) on Fashion-MNIST, the whole program: the
//! sigmoid network, SGD with lr 0.9, batch 256, 10 epochs, and the chapter's lines.
//! Needs Fashion-MNIST (`scripts/setup-data` or `lenet data fetch fashion-mnist`).
//!
//!     cargo run --release --example train
//!     EPOCHS=3 TARGET_TEST_ACC=0.7 cargo run --release --example train   # fails below 70 %
use anyhow::{bail, Context, Result};
use lenet::trainer::{mean_examples_per_sec, Silent};
use lenet::{Dataset, DatasetKind, TrainConfig, Trainer};

/// An environment variable's value, if it is set.
fn setting<T: std::str::FromStr>(name: &str) -> Result<Option<T>> {
    let Ok(text) = std::env::var(name) else { return Ok(None) };
    text.parse().map(Some).ok().with_context(|| format!("{name}={text} is not a number"))
}

fn main() -> Result<()> {
    let mut config = TrainConfig::d2l();
    config.epochs = setting("EPOCHS")?.unwrap_or(config.epochs);
    let data = Dataset::load(DatasetKind::FashionMnist, None)?;
    let mut trainer = Trainer::on_cpu(config, &data)?;
    println!("training on {}", trainer.device());
    while !trainer.is_finished() {
        let m = trainer.train_epoch(&mut Silent)?;
        print!("epoch {}/{}  loss {:.3}  ", m.epoch, trainer.config.epochs, m.train_loss);
        println!("train acc {:.3}  test acc {:.3}  {:.0} examples/sec", m.train_acc, m.test_acc, m.examples_per_sec);
    }
    let last = trainer.history.last().expect("at least one epoch");
    println!("loss {:.3}, train acc {:.3}, test acc {:.3}", last.train_loss, last.train_acc, last.test_acc);
    println!("{:.0} examples/sec on {}", mean_examples_per_sec(&trainer.history), trainer.device());
    if let Some(target) = setting::<f64>("TARGET_TEST_ACC")? {
        if last.test_acc < target {
            bail!("test acc {:.4} < target {target}", last.test_acc);
        }
        println!("test acc {:.4} >= target {target}", last.test_acc);
    }
    Ok(())
}
