//! What each fuzz target does with its input, shared with tests/fuzz_regressions.rs (which
//! runs every seed and every input that ever crashed through the same functions, without
//! AFL). A reader may refuse any input; it may not panic, hang or allocate without bound,
//! and what it accepts must hold together.

use std::path::{Path, PathBuf};

use lenet::data::DatasetKind;
use lenet::internal::engine::cpu::CpuEngine;
use lenet::network::Network;
use lenet::predict::{decode_image, prepare, Style};
use lenet::trainer::TrainConfig;

/// The targets, by name: the fuzz binaries and the folders of seeds and regressions.
pub const TARGETS: [&str; 5] = ["idx", "pickle", "checkpoint", "spec_toml", "image"];

/// Run target `name` on `data`.
pub fn run(name: &str, data: &[u8]) {
    match name {
        "idx" => idx(data),
        "pickle" => pickle(data),
        "checkpoint" => checkpoint(data),
        "spec_toml" => spec_toml(data),
        "image" => image(data),
        _ => panic!("no fuzz target {name}"),
    }
}

/// A file for one target's inputs, in memory where there is /dev/shm, unique to the
/// process and thread (AFL and the test harness may run several at once).
fn scratch_file(target: &str) -> PathBuf {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
    dir.join(format!("lenet-fuzz-{target}-{}-{:?}", std::process::id(), std::thread::current().id()))
}

/// IDX files, raw and gzip'd: the bytes as an images file and as a labels file. The
/// readers take a path (they check a raw file's length before allocating), so the
/// input is written to a file in memory first.
pub fn idx(data: &[u8]) {
    let path = scratch_file("idx");
    std::fs::write(&path, data).expect("scratch file");
    if let Ok(images) = lenet::internal::idx::read_images(&path) {
        assert_eq!(images.pixels.len(), images.count * images.rows * images.cols);
    }
    if let Ok(labels) = lenet::internal::idx::read_labels(&path) {
        assert!(labels.iter().all(|&l| l < 10));
    }
    let _ = std::fs::remove_file(&path);
}

/// The pickle importer: the parser, then the walk that finds MNIST's splits in it.
pub fn pickle(data: &[u8]) {
    let Ok(value) = lenet::internal::pickle::parse(data) else { return };
    if let Ok(splits) = lenet::internal::import::splits_from_pickle(&value) {
        for s in &splits {
            assert_eq!(s.images.pixels.len(), s.images.count * 784);
            assert_eq!(s.labels.len(), s.images.count);
        }
    }
}

/// Checkpoints: safetensors bytes and the header's metadata (architecture, training
/// config, history, an interrupted epoch), then what loading one leads to: the config
/// validated, the network built from the architecture and given the weights.
pub fn checkpoint(data: &[u8]) {
    let Ok(ck) = lenet::checkpoint::from_bytes(data, Path::new("fuzz.safetensors"), None) else { return };
    if let Ok(config) = serde_json::from_value::<TrainConfig>(ck.meta.config.clone()) {
        let _ = config.validate();
    }
    // Small networks only: a valid header may describe up to 2^28 weights a layer.
    if ck.params.len() <= 1 << 20 {
        let engine = CpuEngine::new(1).expect("one thread");
        if let Ok(mut net) = Network::new(engine, &ck.spec) {
            net.set_params(&ck.params).expect("a checkpoint that loads has the weights its architecture needs");
        }
    }
}

/// Architectures written by hand: TOML layer lists, resolved (shapes, parameter counts,
/// the limits that refuse a 10^9-channel conv before anything is allocated), printed as
/// `lenet summary` prints them, and written back as TOML that reads as the same.
pub fn spec_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(spec) = lenet::spec::Spec::from_toml(text) else { return };
    if spec.resolve().is_ok() {
        let _ = spec.summary();
        let again = lenet::spec::Spec::from_toml(&spec.to_toml()).expect("a spec's own TOML reads back");
        assert_eq!(again.layers, spec.layers);
    }
}

/// Pictures for `lenet predict` and `lenet serve`: decoding (PNG, JPEG, BMP, the pixel
/// limit checked from the header) and the preparation into a 28×28 input in every style.
pub fn image(data: &[u8]) {
    // A small limit keeps each run fast; the limit itself is part of what is exercised.
    let Ok(img) = decode_image(data, Path::new("fuzz.png"), Some(1 << 20)) else { return };
    for style in [Style::Auto, Style::Mnist, Style::Fashion, Style::AsIs] {
        if let Ok(p) = prepare(&img, style, Some(DatasetKind::Mnist)) {
            assert_eq!(p.pixels.len(), 28 * 28);
        }
    }
}
