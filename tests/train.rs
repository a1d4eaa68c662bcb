//! The trainer on small synthetic data: learning happens, runs are
//! deterministic, resume equals an uninterrupted run, checkpoints round-trip,
//! and bad checkpoints or divergence give clear errors.

use lenet::checkpoint::{self, Checkpoint};
use lenet::internal::engine::cpu::CpuEngine;
use lenet::internal::run::RunDir;
use lenet::optim::OptimizerKind;
use lenet::spec::Spec;
use lenet::trainer::{Silent, TrainConfig, Trainer};

#[path = "common/stop_at.rs"]
mod stop_at;
#[path = "common/toy.rs"]
mod toy;
use stop_at::StopAt;
use toy::toy_split;

fn config(arch: &str, epochs: usize) -> TrainConfig {
    TrainConfig {
        arch: Spec::preset(arch).unwrap(),
        epochs,
        batch: 32,
        lr: 2e-3,
        optimizer: OptimizerKind::adam(),
        threads: 2,
        seed: 7,
        ..TrainConfig::d2l()
    }
}

fn trainer(cfg: TrainConfig) -> Trainer<CpuEngine> {
    let (train, test) = (toy_split(640, 1), toy_split(200, 2));
    Trainer::new(CpuEngine::new(cfg.threads).unwrap(), cfg, &train, &test, None).unwrap()
}

#[test]
fn learns_the_toy_problem() {
    let mut t = trainer(config("relu", 3));
    while !t.is_finished() {
        t.train_epoch(&mut Silent).unwrap();
    }
    let h = &t.history;
    assert!(h[2].train_loss < h[0].train_loss, "{h:?}");
    assert!(h[2].test_acc > 0.9, "test acc {}", h[2].test_acc);
}

#[test]
fn same_seed_same_bits_and_resume_equals_uninterrupted() {
    let mut full = trainer(config("d2l", 3));
    for _ in 0..3 {
        full.train_epoch(&mut Silent).unwrap();
    }

    let mut first = trainer(config("d2l", 3));
    first.train_epoch(&mut Silent).unwrap();
    // Through the bytes of a saved checkpoint, as `lenet train --resume` does.
    let bytes = checkpoint::to_bytes(&first.checkpoint()).unwrap();
    let ck = checkpoint::from_bytes(&bytes, std::path::Path::new("mem"), None).unwrap();
    let (train, test) = (toy_split(640, 1), toy_split(200, 2));
    let mut resumed = Trainer::resume(CpuEngine::new(2).unwrap(), &ck, &train, &test, None).unwrap();
    assert_eq!(resumed.epochs_done(), 1);
    while !resumed.is_finished() {
        resumed.train_epoch(&mut Silent).unwrap();
    }
    let (a, b) = (full.net.params(), resumed.net.params());
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "resumed run differs");
    for (x, y) in full.history.iter().zip(&resumed.history) {
        assert_eq!((x.train_loss, x.test_acc), (y.train_loss, y.test_acc));
    }
    // And a second full run is bit-identical to the first.
    let mut again = trainer(config("d2l", 3));
    for _ in 0..3 {
        again.train_epoch(&mut Silent).unwrap();
    }
    assert!(again.net.params().iter().zip(&a).all(|(x, y)| x.to_bits() == y.to_bits()));
}

#[test]
fn sgd_momentum_resume_is_exact_too() {
    let cfg =
        TrainConfig { optimizer: "sgd:momentum=0.9,weight_decay=1e-4".parse().unwrap(), lr: 0.05, ..config("relu", 2) };
    let mut full = trainer(cfg.clone());
    full.train_epoch(&mut Silent).unwrap();
    full.train_epoch(&mut Silent).unwrap();
    let mut first = trainer(cfg);
    first.train_epoch(&mut Silent).unwrap();
    let ck = first.checkpoint();
    let mut resumed =
        Trainer::resume(CpuEngine::new(2).unwrap(), &ck, &toy_split(640, 1), &toy_split(200, 2), None).unwrap();
    resumed.train_epoch(&mut Silent).unwrap();
    assert_eq!(full.net.params(), resumed.net.params());
}

/// A run interrupted after epoch 2 and resumed from its checkpoint's bytes against the
/// same run uninterrupted, with each setting that shapes later epochs: a cosine
/// schedule (the rate depends on the epoch and the planned total), a validation split
/// (carved again on resume), gradient clipping and class weights (both only in the
/// config), distortions drawn afresh each epoch, and all of them with Nesterov momentum
/// and weight decay.
#[test]
fn resume_equals_uninterrupted_with_schedule_validation_clipping_and_class_weights() {
    let weights: Vec<f32> = (0..10).map(|c| 0.4 + c as f32 / 8.0).collect();
    let sgd = TrainConfig { optimizer: OptimizerKind::sgd(), lr: 0.1, ..config("relu", 4) };
    let cases = [
        ("cosine", TrainConfig { schedule: "cosine".parse().unwrap(), ..sgd.clone() }),
        ("validation split", TrainConfig { val_split: 0.25, ..sgd.clone() }),
        ("clipping", TrainConfig { clip_grad_norm: Some(0.05), ..sgd.clone() }),
        ("class weights", TrainConfig { class_weights: Some(weights.clone()), ..sgd.clone() }),
        ("augment", TrainConfig { augment: Some("paper".parse().unwrap()), ..sgd.clone() }),
        (
            "augment copies",
            TrainConfig { augment: Some("paper".parse().unwrap()), augment_copies: Some(2), ..sgd.clone() },
        ),
        (
            "all of them",
            TrainConfig {
                optimizer: "sgd:momentum=0.9,nesterov,weight_decay=1e-3".parse().unwrap(),
                schedule: "cosine".parse().unwrap(),
                val_split: 0.25,
                clip_grad_norm: Some(0.5),
                class_weights: Some(weights),
                augment: Some("rotate=10,elastic".parse().unwrap()),
                ..sgd.clone()
            },
        ),
    ];
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let mut plain = trainer(sgd.clone());
    for _ in 0..4 {
        plain.train_epoch(&mut Silent).unwrap();
    }
    for (what, cfg) in cases {
        let mut full = trainer(cfg.clone());
        let mut first = trainer(cfg);
        for _ in 0..4 {
            full.train_epoch(&mut Silent).unwrap();
        }
        for _ in 0..2 {
            first.train_epoch(&mut Silent).unwrap();
        }
        let bytes = checkpoint::to_bytes(&first.checkpoint()).unwrap();
        let ck = checkpoint::from_bytes(&bytes, std::path::Path::new("mem"), None).unwrap();
        let mut resumed =
            Trainer::resume(CpuEngine::new(2).unwrap(), &ck, &toy_split(640, 1), &toy_split(200, 2), None).unwrap();
        while !resumed.is_finished() {
            resumed.train_epoch(&mut Silent).unwrap();
        }
        assert_eq!(resumed.epochs_done(), 4, "{what}");
        for (a, b) in full.history.iter().zip(&resumed.history) {
            let e = a.epoch;
            assert_eq!(a.lr.to_bits(), b.lr.to_bits(), "{what}: epoch {e}: lr {} vs {}", a.lr, b.lr);
            assert_eq!(a.val_acc, b.val_acc, "{what}: epoch {e}: val acc");
            assert_eq!(a.val_loss.map(f64::to_bits), b.val_loss.map(f64::to_bits), "{what}: epoch {e}: val loss");
            assert_eq!(a.train_loss.to_bits(), b.train_loss.to_bits(), "{what}: epoch {e}: train loss");
            assert_eq!(a.test_acc, b.test_acc, "{what}: epoch {e}: test acc");
        }
        assert!(bits(&full.net.params()) == bits(&resumed.net.params()), "{what}: the weights differ");
        let optim = |t: &Trainer<CpuEngine>| {
            t.opt.state_tensors().into_iter().map(|(n, s, v)| (n, s, bits(&v))).collect::<Vec<_>>()
        };
        assert!(optim(&full) == optim(&resumed), "{what}: the optimizer state differs");
        // The settings did something: the weights are not plain SGD's, the rate moved
        // (cosine), validation was measured.
        assert!(bits(&full.net.params()) != bits(&plain.net.params()), "{what} changed nothing");
        let h = &full.history;
        if what.contains("cosine") || what == "all of them" {
            assert!(h[3].lr < h[0].lr, "{what}: {h:?}");
        }
        if what.contains("validation") || what == "all of them" {
            assert!(h.iter().all(|m| m.val_acc.is_some()), "{what}");
        }
    }
}

#[test]
fn checkpoint_round_trip_and_run_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = trainer(config("relu", 2));
    let cfg = t.config.clone();
    let run = RunDir::create(dir.path(), Some("r"), &cfg).unwrap();
    run.write_config(&cfg).unwrap();
    t.train_into(&run, &mut Silent).unwrap();
    for f in [
        "config.toml",
        "metrics.csv",
        "best.safetensors",
        "last.safetensors",
        "checkpoints/epoch-001.safetensors",
        "checkpoints/epoch-002.safetensors",
        "curves.csv",
        "curves.svg",
        "curves.png",
    ] {
        assert!(run.path.join(f).is_file(), "{f} missing");
    }
    let csv = std::fs::read_to_string(run.path.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3);
    assert!(
        csv.starts_with("epoch,train_loss,train_acc,val_loss,val_acc,test_loss,test_acc,lr,examples_per_sec,seconds")
    );
    let toml_back: TrainConfig =
        toml::from_str(&std::fs::read_to_string(run.path.join("config.toml")).unwrap()).unwrap();
    assert_eq!(toml_back, cfg);

    let ck = checkpoint::load(run.last(), None).unwrap();
    assert_eq!(ck.params, t.net.params());
    assert_eq!(ck.spec, cfg.arch);
    assert_eq!(ck.meta.epoch, 2);
    assert!(ck.optim.iter().any(|(n, _, _)| n == "optim.exp_avg"));
    // The same architecture asked for explicitly: fine. Another: a clear error.
    checkpoint::load(run.last(), Some(&cfg.arch)).unwrap();
    let err =
        checkpoint::load(run.last(), Some(&Spec::preset("d2l").unwrap().clone_with_input(32))).unwrap_err().to_string();
    assert!(err.contains("last.safetensors") && err.contains("architecture"), "{err}");
    // An explicit run name that already holds a run is refused.
    assert!(RunDir::create(dir.path(), Some("r"), &cfg).is_err());
}

trait WithInput {
    fn clone_with_input(&self, n: usize) -> Spec;
}
impl WithInput for Spec {
    fn clone_with_input(&self, n: usize) -> Spec {
        let mut s = self.clone();
        s.input.size = n;
        s.layers[0] = lenet::spec::LayerSpec::Conv { out_channels: 6, kernel: 5, padding: 0, stride: 1, table: None };
        s
    }
}

#[test]
fn damaged_checkpoints_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let t = trainer(config("relu", 1));
    let good = checkpoint::to_bytes(&t.checkpoint()).unwrap();
    let path = dir.path().join("ck.safetensors");
    for (what, bytes) in [
        ("truncated", good[..good.len() / 2].to_vec()),
        ("empty", vec![]),
        ("text", b"not a checkpoint at all".to_vec()),
    ] {
        std::fs::write(&path, &bytes).unwrap();
        let err = checkpoint::load(&path, None).unwrap_err().to_string();
        assert!(err.contains("ck.safetensors"), "{what}: {err}");
    }
    // A file of tensors with no architecture needs --arch.
    let bare = safetensors::serialize(Vec::<(String, safetensors::tensor::TensorView)>::new(), &None).unwrap();
    std::fs::write(&path, bare).unwrap();
    let err = checkpoint::load(&path, None).unwrap_err().to_string();
    assert!(err.contains("--arch"), "{err}");
    // A checkpoint of another architecture is refused, naming both.
    let err = checkpoint::from_bytes(&good, &path, Some(&Spec::preset("d2l").unwrap())).unwrap_err().to_string();
    assert!(err.contains("'relu'") && err.contains("'d2l'"), "{err}");
    // A bare state_dict (no header) missing a tensor: the error names it.
    let d2l = Spec::preset("d2l").unwrap();
    let mut ck: Checkpoint = checkpoint::from_bytes(&good, &path, None).unwrap();
    ck.spec = d2l.clone();
    ck.optim.clear();
    let full = checkpoint::to_bytes(&ck).unwrap();
    let st = safetensors::SafeTensors::deserialize(&full).unwrap();
    let kept: Vec<_> = st.tensors().into_iter().filter(|(n, _)| n != "11.bias").collect();
    std::fs::write(&path, safetensors::serialize(kept, &None).unwrap()).unwrap();
    let err = checkpoint::load(&path, Some(&d2l)).unwrap_err().to_string();
    assert!(err.contains("11.bias") && err.contains("ck.safetensors"), "{err}");
}

#[test]
fn divergence_stops_with_epoch_and_batch() {
    let cfg = TrainConfig { optimizer: OptimizerKind::sgd(), lr: 1e30, ..config("relu", 1) };
    let mut t = trainer(cfg);
    let err = t.train_epoch(&mut Silent).unwrap_err().to_string();
    assert!(
        err.contains("diverged") && err.contains("epoch 1, batch") && err.contains("smaller learning rate"),
        "{err}"
    );
}

/// Every file under `dir`, by path relative to it, with its bytes.
fn snapshot(dir: &std::path::Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.insert(path.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// Takes a snapshot of the run folder when epoch 2 starts: what epoch 1 left.
struct SnapshotAtEpoch2<'a> {
    dir: &'a std::path::Path,
    taken: Option<std::collections::BTreeMap<std::path::PathBuf, Vec<u8>>>,
}
impl lenet::trainer::Observer for SnapshotAtEpoch2<'_> {
    fn epoch_start(&mut self, epoch: usize, _epochs: usize, _batches: usize) {
        if epoch == 2 {
            self.taken = Some(snapshot(self.dir));
        }
    }
}

/// The library's epoch loop (the one `lenet train` runs) on a run that diverges in
/// epoch 2: epoch 1's files stay byte for byte, and nothing of epoch 2 is written.
#[test]
fn divergence_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    // Epoch 1 at lr 0.05, epoch 2 at 5e28: the loss overflows in epoch 2.
    let cfg = TrainConfig {
        optimizer: OptimizerKind::sgd(),
        lr: 0.05,
        schedule: "step:1:1e30".parse().unwrap(),
        ..config("relu", 3)
    };
    let mut t = trainer(cfg);
    let run = RunDir::create(dir.path(), Some("r"), &t.config).unwrap();
    let mut obs = SnapshotAtEpoch2 { dir: &run.path, taken: None };
    let err = t.train_into(&run, &mut obs).unwrap_err().to_string();
    assert!(err.contains("diverged") && err.contains("epoch 2, batch"), "{err}");
    let before = obs.taken.expect("epoch 2 started");
    let names: Vec<String> = before.keys().map(|p| p.display().to_string()).collect();
    for f in ["metrics.csv", "last.safetensors", "best.safetensors", "checkpoints/epoch-001.safetensors", "curves.csv"]
    {
        assert!(names.iter().any(|n| n == f), "epoch 1 wrote no {f}: {names:?}");
    }
    let after = snapshot(&run.path);
    assert_eq!(after.keys().collect::<Vec<_>>(), before.keys().collect::<Vec<_>>(), "files added or removed");
    for (path, bytes) in &before {
        assert!(after[path] == *bytes, "{} changed", path.display());
    }
    assert_eq!(t.epochs_done(), 1);
    let ck = checkpoint::load(run.last(), None).unwrap();
    assert!(ck.params.iter().all(|v| v.is_finite()) && ck.meta.epoch == 1);
}

/// LeNet-5 trained as the paper did, one pattern per update with SDLM, learns the toy
/// problem, and a run resumed after its first pass (the curvature re-estimated then,
/// from the same patterns) ends with the uninterrupted run's bits.
#[test]
fn lenet5_with_sdlm_learns_and_resumes_exactly() {
    let cfg = TrainConfig {
        arch: Spec::lenet5(),
        optimizer: OptimizerKind::sdlm(),
        schedule: "lenet5".parse().unwrap(),
        lr: 5e-4,
        batch: 1,
        init: lenet::init::Init::LeCun,
        ..config("relu", 3)
    };
    let mut full = trainer(cfg.clone());
    for _ in 0..3 {
        full.train_epoch(&mut Silent).unwrap();
    }
    let h = &full.history;
    assert!(h[2].train_loss < h[0].train_loss, "{h:?}");
    assert!(h[2].test_acc > 0.9, "test acc {}", h[2].test_acc);
    let mut first = trainer(cfg);
    first.train_epoch(&mut Silent).unwrap();
    let ck = first.checkpoint();
    let mut resumed =
        Trainer::resume(CpuEngine::new(2).unwrap(), &ck, &toy_split(640, 1), &toy_split(200, 2), None).unwrap();
    while !resumed.is_finished() {
        resumed.train_epoch(&mut Silent).unwrap();
    }
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert!(bits(&full.net.params()) == bits(&resumed.net.params()), "the resumed run differs");
    assert_eq!(full.opt.state_tensors(), resumed.opt.state_tensors());
}

/// `augment_copies`: the originals and N copies distorted once, the same every epoch and
/// on resume (checked with the other settings above); a bad count is refused.
#[test]
fn fixed_distorted_copies_join_the_originals() {
    let cfg = TrainConfig { augment: Some("paper".parse().unwrap()), augment_copies: Some(3), ..config("relu", 1) };
    let t = trainer(cfg.clone());
    assert_eq!(t.train_examples(), 4 * 640);
    let held_out = trainer(TrainConfig { val_split: 0.25, ..cfg.clone() });
    assert_eq!(held_out.train_examples(), 4 * 480, "validation examples are carved out before copying");
    for (copies, augment) in [(Some(0), cfg.augment), (Some(101), cfg.augment), (Some(2), None)] {
        let bad = TrainConfig { augment_copies: copies, augment, ..cfg.clone() };
        assert!(bad.validate().is_err(), "{copies:?} {augment:?}");
    }
}

/// Stopped inside an epoch (LeNet-5 with SDLM, whose curvature is estimated at the
/// epoch's start, and fresh distortions each epoch), the checkpoint holds where it
/// stopped; resumed from its bytes, the run ends with the uninterrupted run's bits and
/// measures every epoch the same.
#[test]
fn stopped_mid_epoch_resumes_exactly() {
    let cfg = TrainConfig {
        arch: Spec::lenet5(),
        optimizer: OptimizerKind::sdlm(),
        schedule: "lenet5".parse().unwrap(),
        lr: 5e-4,
        batch: 4,
        init: lenet::init::Init::LeCun,
        augment: Some("paper".parse().unwrap()),
        ..config("relu", 2)
    };
    let mut full = trainer(cfg.clone());
    full.train_epoch(&mut Silent).unwrap();
    full.train_epoch(&mut Silent).unwrap();

    let mut first = trainer(cfg);
    let mut obs = StopAt::new(2, 57);
    first.stop_when(obs.flag.clone());
    first.train_epoch(&mut obs).unwrap();
    let err = first.train_epoch(&mut obs).unwrap_err();
    assert!(err.is::<lenet::trainer::Interrupted>());
    assert_eq!(err.to_string(), "training stopped at epoch 2, after batch 57 of 160");
    assert_eq!((first.epochs_done(), first.batches_done()), (1, 57));
    let bytes = checkpoint::to_bytes(&first.checkpoint()).unwrap();
    let ck = checkpoint::from_bytes(&bytes, std::path::Path::new("x"), None).unwrap();
    assert_eq!(ck.meta.partial["batches_done"], 57);
    let mut resumed =
        Trainer::resume(CpuEngine::new(2).unwrap(), &ck, &toy_split(640, 1), &toy_split(200, 2), None).unwrap();
    assert_eq!(resumed.batches_done(), 57);
    resumed.train_epoch(&mut Silent).unwrap();
    assert!(resumed.is_finished());
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert!(bits(&full.net.params()) == bits(&resumed.net.params()), "the resumed run differs");
    assert_eq!(full.opt.state_tensors(), resumed.opt.state_tensors());
    let key = |m: &lenet::trainer::EpochMetrics| (m.train_loss, m.train_acc, m.test_acc, m.points.clone());
    assert_eq!(full.history.iter().map(key).collect::<Vec<_>>(), resumed.history.iter().map(key).collect::<Vec<_>>());

    // A damaged record of where it stopped is refused, not trained on.
    let mut bad = ck.clone();
    bad.meta.partial["batches_done"] = 1000.into();
    bad.meta.partial["stats"]["batches"] = 1000.into();
    let e =
        Trainer::resume(CpuEngine::new(2).unwrap(), &bad, &toy_split(640, 1), &toy_split(200, 2), None).err().unwrap();
    assert!(e.to_string().contains("only 160 batches"), "{e}");
}

/// A run stopped after its loss stopped being a number is a divergence, not a state to
/// resume from (a NaN in the checkpoint's header would not even read back).
#[test]
fn a_stop_after_the_loss_went_bad_is_a_divergence() {
    let cfg = TrainConfig {
        optimizer: OptimizerKind::sgd(),
        lr: 0.05,
        schedule: "step:1:1e30".parse().unwrap(),
        ..config("relu", 3)
    };
    let mut t = trainer(cfg);
    // The loss overflows early in epoch 2; curve points come every 4 of its 20 batches.
    let mut obs = StopAt::new(2, 2);
    t.stop_when(obs.flag.clone());
    t.train_epoch(&mut obs).unwrap();
    let err = t.train_epoch(&mut obs).unwrap_err();
    assert!(err.is::<lenet::trainer::Diverged>(), "{err}");
    assert_eq!(t.batches_done(), 0, "nothing of epoch 2 is kept to resume");
}

/// Resuming removes the temp files a kill left in the run folder, and only those: a
/// user's own files and other programs' temp files stay.
#[test]
fn only_the_runs_own_stale_temp_files_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let run = RunDir { path: dir.path().to_path_buf() };
    std::fs::create_dir(dir.path().join("checkpoints")).unwrap();
    let stale =
        [".last.safetensors.a1B2c3.tmp", ".metrics.csv.Zz9yX8.tmp", "checkpoints/.epoch-003.safetensors.q0w9e8.tmp"];
    let kept = [
        ".notes.txt.a1B2c3.tmp",
        "mine.tmp",
        ".last.safetensors.tmp",
        "last.safetensors",
        "checkpoints/.best.safetensors.a1B2c3.tmp",
    ];
    for f in stale.iter().chain(&kept) {
        std::fs::write(dir.path().join(f), b"x").unwrap();
    }
    run.remove_stale_temp_files();
    for f in stale {
        assert!(!dir.path().join(f).exists(), "{f} left");
    }
    for f in kept {
        assert!(dir.path().join(f).exists(), "{f} removed");
    }
}
