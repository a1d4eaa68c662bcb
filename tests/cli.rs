//! The `lenet` binary end to end, on a small IDX dataset written by the test
//! (the real datasets are exercised in real_data.rs).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "common/toy_idx.rs"]
mod toy_idx;
use toy_idx::write_toy_dataset;

use lenet::internal::idx;

fn lenet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lenet"))
        .args(args)
        .env_remove("LENET_DATA")
        .env("HOME", "/nonexistent-home")
        .env_remove("XDG_CACHE_HOME")
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = lenet(args);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "lenet {args:?} failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    text
}

fn fails(args: &[&str]) -> String {
    let out = lenet(args);
    assert!(!out.status.success(), "lenet {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn summary_prints_pytorch_shapes_and_counts() {
    let out = ok(&["summary", "--arch", "d2l"]);
    assert!(out.contains("Conv2d(1, 6, kernel_size=(5, 5), padding=(2, 2))"), "{out}");
    for shape in [
        "(1, 6, 28, 28)",
        "(1, 6, 14, 14)",
        "(1, 16, 10, 10)",
        "(1, 16, 5, 5)",
        "(1, 400)",
        "(1, 120)",
        "(1, 84)",
        "(1, 10)",
    ] {
        assert!(out.contains(shape), "missing {shape}:\n{out}");
    }
    assert!(out.contains("48120") && out.contains("total parameters: 61706"), "{out}");
    let out = ok(&["summary", "--arch", "relu", "--no-pad"]);
    assert!(out.contains("MaxPool2d") && out.contains("ReLU()") && out.contains("Linear(in_features=256"), "{out}");
    let out = ok(&["summary", "--input", "32", "--activation", "tanh"]);
    assert!(out.contains("(1, 6, 28, 28)") && out.contains("Tanh()") && out.contains("input (1, 1, 32, 32)"), "{out}");
}

#[test]
fn summary_of_a_toml_layer_list() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("net.toml");
    // One tutorial keeps the last hidden activation sigmoid, the others LeakyReLU.
    std::fs::write(
        &file,
        r#"name = "mixed"
[input]
size = 28
[[layers]]
type = "conv"
out_channels = 6
kernel = 5
padding = 2
[[layers]]
type = "leaky-relu"
[[layers]]
type = "max-pool"
size = 2
stride = 2
[[layers]]
type = "flatten"
[[layers]]
type = "linear"
out_features = 84
[[layers]]
type = "sigmoid"
[[layers]]
type = "linear"
out_features = 10
"#,
    )
    .unwrap();
    let out = ok(&["summary", "--arch", p(&file)]);
    assert!(out.contains("LeakyReLU(negative_slope=0.01)") && out.contains("Linear(in_features=1176"), "{out}");
    std::fs::write(&file, "name = \"bad\"\n[input]\nsize = 28\n[[layers]]\ntype = \"linear\"\nout_features = 10\n")
        .unwrap();
    let err = fails(&["summary", "--arch", p(&file)]);
    assert!(err.contains("net.toml") && err.contains("add a flatten"), "{err}");
}

#[test]
fn train_resume_eval_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_toy_dataset(&data);
    let common = [
        "--data-dir",
        p(&data),
        "train",
        "--dataset",
        "mnist",
        "--arch",
        "relu",
        "--optimizer",
        "adam",
        "--batch",
        "32",
        "--threads",
        "2",
        "--device",
        "cpu",
    ];
    let full: PathBuf = dir.path().join("full");
    let mut args = common.to_vec();
    args.extend(["--epochs", "2", "--run-dir", p(&full)]);
    let out = ok(&args);
    assert!(out.contains("training on cpu (2 threads)"), "{out}");
    assert!(out.contains("epoch 1/2  loss ") && out.contains("epoch 2/2  loss "), "{out}");
    assert!(out.contains("examples/sec on cpu"), "{out}");
    for f in ["config.toml", "metrics.csv", "best.safetensors", "last.safetensors", "checkpoints/epoch-002.safetensors"]
    {
        assert!(full.join(f).is_file(), "{f}");
    }

    // One epoch, then resume to two: the same bytes of parameters.
    let part = dir.path().join("part");
    let mut args = common.to_vec();
    args.extend(["--epochs", "1", "--run-dir", p(&part)]);
    ok(&args);
    let ck1 = part.join("last.safetensors");
    let out = ok(&["--data-dir", p(&data), "train", "--resume", p(&ck1), "--epochs", "2"]);
    assert!(out.contains("resuming") && out.contains("epoch 2/2"), "{out}");
    let a = lenet::checkpoint::load(full.join("last.safetensors"), None).unwrap();
    let b = lenet::checkpoint::load(part.join("last.safetensors"), None).unwrap();
    assert_eq!(a.params, b.params);
    assert_eq!(a.optim, b.optim);

    let out = ok(&["--data-dir", p(&data), "eval", p(&full.join("best.safetensors"))]);
    assert!(
        out.contains("accuracy") && out.contains("per-class accuracy") && out.contains("confusion matrix"),
        "{out}"
    );

    // Fine-tuning from a checkpoint, and refusing one of another architecture.
    let mut args = common.to_vec();
    let (tuned, best) = (dir.path().join("tuned"), full.join("best.safetensors"));
    args.extend(["--epochs", "1", "--init", p(&best), "--run-dir", p(&tuned)]);
    assert!(ok(&args).contains("starting from the weights of"));
    let err = fails(&[
        "--data-dir",
        p(&data),
        "train",
        "--dataset",
        "mnist",
        "--arch",
        "d2l",
        "--init",
        p(&full.join("best.safetensors")),
        "--run-dir",
        p(&dir.path().join("x")),
    ]);
    assert!(err.contains("best.safetensors") && err.contains("'relu'") && err.contains("'d2l'"), "{err}");
    // A run folder that holds a run is never overwritten.
    let mut args = common.to_vec();
    args.extend(["--epochs", "1", "--run-dir", p(&full)]);
    assert!(fails(&args).contains("already holds a run"));
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"hello").unwrap();
    let err = fails(&["eval", p(&junk)]);
    assert!(err.contains("junk.safetensors") && err.contains("not a valid safetensors file"), "{err}");

    let err = fails(&["data", "verify", "mnist"]);
    assert!(
        err.contains("mnist not found") && err.contains("lenet data fetch mnist") && err.contains("lenet data import"),
        "{err}"
    );
    assert!(err.contains("/nonexistent-home/.cache/lenet/mnist"), "{err}");

    let data = dir.path().join("data");
    write_toy_dataset(&data);
    let mut labels = vec![0u8; 200];
    labels[7] = 12;
    std::fs::write(data.join("t10k-labels-idx1-ubyte"), idx::encode_labels(&labels)).unwrap();
    let err = fails(&["--data-dir", p(&data), "data", "preview", "mnist", "--out", p(&dir.path().join("g.png"))]);
    assert!(err.contains("t10k-labels-idx1-ubyte") && err.contains("label 12 at index 7"), "{err}");
}

#[test]
fn preview_writes_grid_and_single_image() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_toy_dataset(&data);
    let grid = dir.path().join("grid.png");
    ok(&["--data-dir", p(&data), "data", "preview", "mnist", "--out", p(&grid), "-n", "20"]);
    let img = image::open(&grid).unwrap();
    assert!(img.width() > 10 * 28 * 3 && img.height() > 2 * 28 * 3);
    let one = dir.path().join("one.png");
    ok(&["--data-dir", p(&data), "data", "preview", "mnist", "--split", "test", "--index", "3", "--out", p(&one)]);
    let img = image::open(&one).unwrap().to_luma8();
    assert_eq!((img.width(), img.height()), (28, 28));
    let (ds_img, _) =
        idx::read_pair(&data.join("t10k-images-idx3-ubyte.gz"), &data.join("t10k-labels-idx1-ubyte")).unwrap();
    assert_eq!(img.as_raw().as_slice(), ds_img.image(3));
    let err = fails(&["--data-dir", p(&data), "data", "preview", "mnist", "--index", "600", "--out", p(&one)]);
    assert!(err.contains("out of range"), "{err}");
}

/// Settings that cannot train (issue 24, item 4) are refused with an error that names
/// the setting, before any work: no run folder is left behind.
#[test]
fn bad_settings_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_toy_dataset(&data); // 600 training examples
    let run = dir.path().join("run");
    let train = |extra: &[&str]| {
        let mut args = vec!["--data-dir", p(&data), "train", "--dataset", "mnist", "--arch", "relu"];
        args.extend(["--threads", "1", "--device", "cpu", "--run-dir", p(&run)]);
        args.extend(extra);
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    for (extra, says) in [
        (&["--lr", "0"][..], "--lr must be a number > 0 (the learning rate), got 0"),
        (&["--lr=-0.1"], "--lr must be a number > 0 (the learning rate), got -0.1"),
        (&["--lr", "NaN"], "--lr must be a number > 0 (the learning rate), got NaN"),
        (&["--lr", "inf"], "--lr must be a number > 0 (the learning rate), got inf"),
        (&["--batch", "0"], "--batch and --epochs must be at least 1"),
        (&["--epochs", "0"], "--batch and --epochs must be at least 1"),
        (&["--batch", "601"], "--batch 601 is more than the 600 training examples"),
        (
            &["--batch", "550", "--val-split", "0.1"],
            "--batch 550 is more than the 540 training examples (after the 60 held out by --val-split)",
        ),
        (&["--class-weights", "1,2,3"], "--class-weights must be ten numbers > 0, one per class, got 3"),
        (&["--class-weights", "1,1,1,1,1,1,1,1,1,0"], "--class-weights must be ten numbers > 0, one per class, got 10"),
        (&["--class-weights", "1,1,1,1,1,1,1,1,1,1,1"], "got 11"),
        (&["--val-split", "1.0"], "--val-split must be in [0, 1), got 1"),
        (&["--val-split", "0.0001"], "--val-split 0.0001 of 600 training examples holds out none"),
        (&["--augment-copies", "0"], "--augment-copies must be in 1..=100, got 0"),
    ] {
        let args = train(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let err = fails(&args);
        assert!(err.contains(says), "{extra:?}: expected «{says}», got: {err}");
        assert!(!run.exists(), "{extra:?} left a run folder behind");
    }
    // The class weights' value name is printed once, not ten times.
    let help = ok(&["train", "--help"]);
    assert!(help.contains("--class-weights <W0,…,W9>"), "{help}");
    // Ten good weights train.
    let args = train(&["--epochs", "1", "--batch", "64", "--class-weights", "1,1,1,1,1,1,1,1,1,2"]);
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    // Resuming with fewer epochs than are done is refused, not a silent no-op.
    let err = fails(&["--data-dir", p(&data), "train", "--resume", p(&run), "--epochs", "0"]);
    assert!(err.contains("--batch and --epochs must be at least 1") || err.contains("ends before"), "{err}");
    let out = ok(&["--data-dir", p(&data), "train", "--resume", p(&run), "--epochs", "2"]);
    assert!(out.contains("epoch 2/2"), "{out}");
    let err = fails(&["--data-dir", p(&data), "train", "--resume", p(&run), "--epochs", "1"]);
    assert!(err.contains("--epochs 1 ends before the 2 epochs the checkpoint has already trained"), "{err}");
}

/// A model meeting another dataset than its own gets a warning (an MNIST model scores
/// near chance on Fashion-MNIST), and evaluating never reads the training images: with
/// a training file that is garbage, eval, export --logits, predict --grid and report work.
#[test]
fn another_dataset_is_warned_about_and_evaluation_reads_no_training_images() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_toy_dataset(&data);
    let run = dir.path().join("run");
    ok(&[
        "--data-dir",
        p(&data),
        "train",
        "--dataset",
        "mnist",
        "--arch",
        "relu",
        "--epochs",
        "1",
        "--batch",
        "64",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--run-dir",
        p(&run),
    ]);
    let best = run.join("best.safetensors");
    // The same toy files, as "fashion-mnist".
    let fashion = dir.path().join("fashion");
    std::fs::create_dir(&fashion).unwrap();
    for f in std::fs::read_dir(&data).unwrap().flatten() {
        std::fs::copy(f.path(), fashion.join(f.file_name())).unwrap();
    }
    let warning = "was trained on mnist, not fashion-mnist: its ten outputs are mnist's classes";
    let out = lenet(&["--data-dir", p(&fashion), "eval", p(&best), "--dataset", "fashion-mnist"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains(warning), "{err}");
    let out = lenet(&[
        "--data-dir",
        p(&fashion),
        "train",
        "--init",
        p(&best),
        "--dataset",
        "fashion-mnist",
        "--epochs",
        "1",
        "--batch",
        "64",
        "--threads",
        "1",
        "--device",
        "cpu",
        "--run-dir",
        p(&dir.path().join("tuned")),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains(warning), "{err}");
    // Its own dataset: no warning.
    let out = lenet(&["--data-dir", p(&data), "eval", p(&best)]);
    assert!(out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("warning"));

    // Garbage where the training images are: evaluating does not notice.
    let train_images = std::fs::read_dir(&data)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("train-images"))
        .unwrap();
    std::fs::write(&train_images, b"not an idx file").unwrap();
    ok(&["--data-dir", p(&data), "eval", p(&best)]);
    ok(&["--data-dir", p(&data), "export", p(&best), "--logits", p(&dir.path().join("logits.safetensors"))]);
    ok(&["--data-dir", p(&data), "predict", p(&best), "--grid", p(&dir.path().join("grid.png"))]);
    ok(&["--data-dir", p(&data), "report", p(&run), "--out", p(&dir.path().join("report.html"))]);
    // The training split itself is still read, and found wanting, where it is asked for.
    let err = fails(&["--data-dir", p(&data), "eval", p(&best), "--split", "train"]);
    assert!(err.contains("train-images"), "{err}");
}
