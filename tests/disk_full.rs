//! A full disk loses nothing (issue 24, item 2): training, curves, reports, exports and
//! pictures written into a small tmpfs the test mounts fail with a clear "no space left"
//! error naming the file, leave every earlier file as it was and no half-written one, and
//! a run goes on once there is room again, to the uninterrupted run's bits.
//!
//! Mounting needs root (CI runs as root); `scripts/test` sets LENET_REQUIRE_TMPFS as root
//! and in CI, so there a mount that fails is a failure, never a skip.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "common/toy_idx.rs"]
mod toy_idx;

use lenet::checkpoint;
use lenet::internal::run::RunDir;

/// A tmpfs of a given size over a temp folder, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(bytes: u64) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .unwrap();
        if out.status.success() {
            return Some(Tmpfs { dir });
        }
        let why = String::from_utf8_lossy(&out.stderr);
        assert!(
            std::env::var_os("LENET_REQUIRE_TMPFS").is_none(),
            "LENET_REQUIRE_TMPFS is set but mount failed: {why}"
        );
        eprintln!("cannot mount a tmpfs here (needs root), full-disk tests not run: {why}");
        None
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn resize(&self, bytes: u64) {
        let out =
            Command::new("mount").args(["-o", &format!("remount,size={bytes}")]).arg(self.path()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    /// Fill what is free with a new file, `filler-N`: written until the disk says no.
    fn fill(&self) {
        use std::io::Write;
        let n = std::fs::read_dir(self.path()).unwrap().count();
        let mut file = std::fs::File::create(self.path().join(format!("filler-{n}"))).unwrap();
        let block = vec![1u8; 4096];
        while file.write_all(&block).is_ok() {}
        let _ = file.write_all(&block[..1]);
        assert_eq!(free_bytes(self.path()), 0, "the disk is full");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("df").args(["--output=avail", "-B1"]).arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().nth(1).unwrap().trim().parse().unwrap()
}

fn lenet(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lenet"))
        .env_remove("LENET_DATA")
        .env("HOME", "/nonexistent-home")
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

const TRAIN: [&str; 15] = [
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
    "1",
    "--device",
    "cpu",
    "--epochs",
    "6",
];

/// Every file under `dir` and its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

fn assert_no_temp_files(dir: &Path) {
    let temps: Vec<_> = snapshot(dir).into_keys().filter(|p| p.extension().is_some_and(|x| x == "tmp")).collect();
    assert!(temps.is_empty(), "half-written files left: {temps:?}");
}

fn assert_says_disk_full(out: &Output, dir: &Path) {
    let all = text(out);
    assert!(!out.status.success(), "it should fail: {all}");
    assert!(all.contains("No space left on device") && all.contains("the disk is full"), "{all}");
    assert!(!all.contains(" at path "), "the message names a temp file: {all}");
    assert!(all.contains(p(dir)), "the error names no file under {}: {all}", dir.display());
    assert!(!all.contains("panicked"), "{all}");
}

#[test]
fn training_into_a_full_disk_keeps_its_checkpoints_and_goes_on_when_there_is_room() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    toy_idx::write_toy_dataset(&data);
    let reference = dir.path().join("reference");
    let mut args = TRAIN.to_vec();
    args.extend(["--run-dir", p(&reference)]);
    let out = lenet(&data, &args);
    assert!(out.status.success(), "{}", text(&out));
    // Room for the first epoch's three checkpoints and its curves, not for many more.
    let ck_size = std::fs::metadata(reference.join("last.safetensors")).unwrap().len();
    let Some(disk) = Tmpfs::mount(ck_size * 9 / 2 + 256 * 1024) else { return };
    let run = disk.path().join("run");
    let mut args = TRAIN.to_vec();
    args.extend(["--run-dir", p(&run)]);
    let out = lenet(&data, &args);
    assert_says_disk_full(&out, &run);
    assert_no_temp_files(&run);
    let saved = RunDir { path: run.clone() }.checkpoints();
    assert!(saved.len() >= 2, "the first epoch was saved: {saved:?}\n{}", text(&out));
    for file in &saved {
        let ck = checkpoint::load(file, None).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        // Each is what the uninterrupted run saved at that epoch.
        let same =
            checkpoint::load(reference.join(format!("checkpoints/epoch-{:03}.safetensors", ck.meta.epoch)), None)
                .unwrap();
        assert!(ck.params == same.params && ck.optim == same.optim, "{} differs", file.display());
    }
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert!(metrics.lines().count() >= 2, "{metrics}");

    // Room again: the run goes on from its newest checkpoint to the same bits.
    disk.resize(64 << 20);
    let out = lenet(&data, &["train", "--resume", p(&run)]);
    assert!(out.status.success(), "{}", text(&out));
    let (a, b) = (
        checkpoint::load(run.join("last.safetensors"), None).unwrap(),
        checkpoint::load(reference.join("last.safetensors"), None).unwrap(),
    );
    assert!(a.params.iter().zip(&b.params).all(|(x, y)| x.to_bits() == y.to_bits()) && a.meta.epoch == 6);
    assert_no_temp_files(&run);
}

#[test]
fn reports_exports_and_pictures_on_a_full_disk_leave_the_old_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    toy_idx::write_toy_dataset(&data);
    let run = dir.path().join("run");
    let mut args = TRAIN[..TRAIN.len() - 2].to_vec();
    args.extend(["--epochs", "1", "--run-dir", p(&run)]);
    let out = lenet(&data, &args);
    assert!(out.status.success(), "{}", text(&out));
    let best = run.join("best.safetensors");

    let Some(disk) = Tmpfs::mount(4 << 20) else { return };
    let out_dir = disk.path();
    let target = |name: &str| out_dir.join(name);
    // Each output once written while there was room; then the disk fills up.
    let commands: Vec<(PathBuf, Vec<String>)> = vec![
        (target("report.html"), vec!["report".into(), p(&run).into(), "--out".into()]),
        (target("model.onnx"), vec!["export".into(), p(&best).into(), "--onnx".into()]),
        (target("sd.safetensors"), vec!["export".into(), p(&best).into(), "--state-dict".into()]),
        (target("logits.safetensors"), vec!["export".into(), p(&best).into(), "--logits".into()]),
        (target("confusion.png"), vec!["eval".into(), p(&best).into(), "--confusion".into()]),
        (target("compare.svg"), vec!["compare".into(), p(&run).into(), "--out".into()]),
        (target("grid.png"), vec!["predict".into(), p(&best).into(), "--grid".into()]),
        (target("model.safetensors"), vec!["models".into(), "export".into(), "mnist-relu".into()]),
    ];
    let run_cmd = |(file, args): &(PathBuf, Vec<String>)| {
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        args.push(p(file));
        lenet(&data, &args)
    };
    for c in &commands {
        let out = run_cmd(c);
        assert!(out.status.success() && c.0.is_file(), "{:?}: {}", c.1, text(&out));
    }
    let ours = |dir: &Path| {
        let mut files = snapshot(dir);
        files.retain(|p, _| !p.file_name().unwrap().to_string_lossy().starts_with("filler"));
        files
    };
    let before = ours(out_dir);
    disk.fill();
    for c in &commands {
        let out = run_cmd(c);
        assert_says_disk_full(&out, &c.0);
    }
    assert!(ours(out_dir) == before, "a file changed or appeared on the full disk");
    // And new files on it are refused just as cleanly.
    std::fs::remove_file(out_dir.join("report.html")).unwrap();
    disk.fill();
    let out = run_cmd(&commands[0]);
    assert_says_disk_full(&out, &commands[0].0);
    assert!(!commands[0].0.exists());
    assert_no_temp_files(out_dir);
}
