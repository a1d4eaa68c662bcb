//! The fuzzers' seeds and every input they ever crashed or hung on (fuzz/seeds/TARGET,
//! fuzz/regressions/TARGET; scripts/fuzz runs AFL++ over the targets) through the targets'
//! own functions, without AFL: none may panic. The seeds must also be inputs each reader
//! accepts, or the fuzzer would start from nothing.

use std::path::{Path, PathBuf};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
#[path = "../fuzz/src/lib.rs"]
mod targets;

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[test]
fn every_seed_and_every_input_once_found_runs_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut ran = 0;
    for target in targets::TARGETS {
        for kind in ["seeds", "regressions"] {
            for file in files(&root.join(kind).join(target)) {
                let data = std::fs::read(&file).unwrap();
                let outcome = std::panic::catch_unwind(|| targets::run(target, &data));
                assert!(outcome.is_ok(), "{target} panics on {}", file.display());
                ran += 1;
            }
        }
    }
    assert!(ran >= 15, "only {ran} inputs");
}

#[test]
fn the_seeds_are_inputs_the_readers_accept() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let read = |target: &str| files(&seeds.join(target)).into_iter().map(|f| (std::fs::read(&f).unwrap(), f));
    for (bytes, f) in read("idx") {
        let path = std::env::temp_dir().join(format!("lenet-seed-{}", std::process::id()));
        std::fs::write(&path, &bytes).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let ok = if name.starts_with("images") {
            lenet::internal::idx::read_images(&path).is_ok()
        } else {
            lenet::internal::idx::read_labels(&path).is_ok()
        };
        assert!(ok, "{}", f.display());
    }
    for (bytes, f) in read("pickle") {
        let value = lenet::internal::pickle::parse(&bytes).unwrap();
        lenet::internal::import::splits_from_pickle(&value).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
    for (bytes, f) in read("checkpoint") {
        lenet::checkpoint::from_bytes(&bytes, &f, None).unwrap();
    }
    for (bytes, f) in read("spec_toml") {
        let spec = lenet::spec::Spec::from_toml(std::str::from_utf8(&bytes).unwrap()).unwrap();
        spec.resolve().unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
    for (bytes, f) in read("image") {
        lenet::predict::decode_image(&bytes, &f, None).unwrap();
    }
    // One checkpoint seed stopped inside an epoch, so the header's record of that is fuzzed too.
    let stopped = lenet::checkpoint::load(seeds.join("checkpoint/tiny-sgd-stopped.safetensors"), None).unwrap();
    assert!(!stopped.meta.partial.is_null());
}

/// Absurd sizes in a hand-written architecture (a 10^9-channel conv, a 10^9-wide linear
/// layer, a huge kernel or input) are refused by reading the TOML and resolving it, with
/// next to nothing allocated: the limits are checked before any tensor exists.
#[test]
fn absurd_architectures_are_refused_before_any_allocation() {
    let layer = |body: &str| format!("name = \"absurd\"\n[input]\nsize = 28\n[[layers]]\n{body}\n");
    for (toml, says) in [
        (layer("type = \"conv\"\nout_channels = 1000000000\nkernel = 5"), "over the limit"),
        (layer("type = \"conv\"\nout_channels = 6\nkernel = 1000000000"), "over the limit"),
        (layer("type = \"flatten\"\n[[layers]]\ntype = \"linear\"\nout_features = 1000000000"), "over the limit"),
        (layer("type = \"conv\"\nout_channels = 60000\nkernel = 5\n[[layers]]\ntype = \"conv\"\nout_channels = 60000\nkernel = 5"), "weights or outputs"),
        ("name = \"absurd\"\n[input]\nsize = 1000000000\n[[layers]]\ntype = \"flatten\"\n".to_string(), ""),
    ] {
        let ((), peak) = counting_alloc::peak_during(|| {
            let refused = lenet::spec::Spec::from_toml(&toml).map_err(|e| e.to_string()).and_then(|spec| {
                spec.resolve().map(|_| ()).map_err(|e| e.to_string())
            });
            let e = refused.expect_err(&toml);
            assert!(e.contains(says), "{toml}: {e}");
        });
        assert!(peak < 1 << 20, "{toml}: {peak} bytes at once");
    }
}
