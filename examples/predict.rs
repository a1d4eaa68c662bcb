//! Read handwritten digits (or clothes) from picture files with a model shipped inside
//! lenet: no data, no training, no network. PNG, JPEG or BMP, any size or colour.
//!
//!     cargo run --release --example predict -- tests/fixtures/photo-digits/*.jpg
//!     cargo run --release --example predict -- --model fashion-mnist-relu shoe.png
use std::path::PathBuf;

use anyhow::Result;
use lenet::{models, Classifier};

fn main() -> Result<()> {
    let mut pictures: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let mut name = "mnist-relu".to_string();
    if pictures.first().is_some_and(|a| a.as_os_str() == "--model") && pictures.len() >= 2 {
        name = pictures.remove(1).to_string_lossy().into_owned();
        pictures.remove(0);
    }
    if pictures.is_empty() {
        let names: Vec<&str> = models::SHIPPED.iter().map(|m| m.name).collect();
        anyhow::bail!("usage: predict [--model NAME] PICTURE...   (models: {})", names.join(", "));
    }
    let mut classifier = Classifier::new(&models::find(&name)?.checkpoint())?;
    for path in &pictures {
        let seen = classifier.classify_file(path)?;
        let runner_up = seen.top(2)[1];
        let (other, p) = (classifier.class_names()[runner_up.0], runner_up.1);
        println!(
            "{}: {} ({:.1} %; then {other}, {:.1} %)",
            path.display(),
            seen.name,
            100.0 * seen.probability,
            100.0 * p
        );
    }
    Ok(())
}
