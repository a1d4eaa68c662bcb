//! How long distorting MNIST's 60,000 training digits takes, per setting (the cost
//! `--augment` adds to each epoch). Needs MNIST (scripts/setup-data).
//!
//!     cargo run --release --example distort_time [SETTINGS ...]
//!     RAYON_NUM_THREADS=1 cargo run --release --example distort_time paper

use std::time::Instant;

use lenet::data::{Dataset, DatasetKind};
use lenet::internal::augment::{distort_split, Augment};

fn main() -> anyhow::Result<()> {
    let dir = lenet::data::locate::locate(DatasetKind::Mnist, None)?;
    let train = Dataset::load_from(DatasetKind::Mnist, &dir)?.train;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let settings = if args.is_empty() { vec!["paper".into(), "rotate=10,elastic".into()] } else { args };
    println!("{} threads", rayon::current_num_threads());
    for setting in settings {
        let aug: Augment = setting.parse().map_err(anyhow::Error::msg)?;
        // The first epoch warms the caches and the allocator; the next two are timed.
        distort_split(&train, &aug, 1, 1);
        let t = Instant::now();
        for epoch in 2..4 {
            distort_split(&train, &aug, 1, epoch);
        }
        let secs = t.elapsed().as_secs_f64() / 2.0;
        println!("{setting:30} {secs:.3} s per epoch ({:.2} µs per digit)", secs * 1e6 / train.len() as f64);
    }
    Ok(())
}
