//! A run folder end to end: curves saved after every epoch (and kept across a
//! resume), `--live` lines, the confusion matrix of `lenet eval --confusion`,
//! `lenet compare`, and `lenet report`, whose page is rendered in headless
//! Chromium (Debian's `chromium`, installed by scripts/setup-chromium): the
//! browser's DOM must hold the curves and the matrix as SVG, and its screenshot
//! must show their colours.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine as _;
use lenet::data::Images;
use lenet::internal::idx;
use lenet::internal::viz::palette::{TEST_ACC, TRAIN_ACC, TRAIN_LOSS};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

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

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A toy "mnist": class c is a bright bar at a class-specific place, on noise,
/// with some labels wrong so that every classifier makes mistakes.
fn write_toy_dataset(dir: &Path) {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for (stem, n) in [("train", 600), ("t10k", 200)] {
        let mut pixels = vec![0u8; n * 784];
        let classes: Vec<u8> = (0..n).map(|_| rng.gen_range(0..10)).collect();
        // One label in ten is wrong, so that even a perfect learner misclassifies some.
        let labels: Vec<u8> = classes.iter().map(|&c| if rng.gen_bool(0.1) { (c + 1) % 10 } else { c }).collect();
        for (i, &c) in classes.iter().enumerate() {
            for v in &mut pixels[i * 784..(i + 1) * 784] {
                *v = rng.gen_range(0..140);
            }
            let (y0, x0) = (4 + (c as usize / 5) * 12, 2 + (c as usize % 5) * 5);
            for y in y0..y0 + 8 {
                for x in x0..x0 + 4 {
                    pixels[i * 784 + y * 28 + x] = 255;
                }
            }
        }
        let images = Images { count: n, rows: 28, cols: 28, pixels };
        idx::write_images(&dir.join(format!("{stem}-images-idx3-ubyte.gz")), &images).unwrap();
        idx::write_labels(&dir.join(format!("{stem}-labels-idx1-ubyte")), &labels).unwrap();
    }
}

fn train(data: &Path, run: &Path, extra: &[&str]) -> String {
    let mut args = vec!["--data-dir", p(data), "train", "--dataset", "mnist", "--batch", "32", "--threads", "2"];
    args.extend_from_slice(extra);
    args.extend(["--run-dir", p(run)]);
    ok(&args)
}

fn csv_rows(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path).unwrap().lines().skip(1).map(|l| l.split(',').map(str::to_string).collect()).collect()
}

#[test]
fn run_folder_curves_report_and_compare() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_toy_dataset(&data);

    // One epoch, then resumed to two: curves after each, the first epoch's points kept.
    let run = dir.path().join("sigmoid");
    let out = train(&data, &run, &["--epochs", "1", "--lr", "0.5", "--live"]);
    // Not a terminal: --live prints a line per curve point (600/32 = 19 batches: every 3rd and the last).
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("epoch 0.") || l.starts_with("epoch 1.00")).collect();
    assert_eq!(lines.len(), 7, "{out}");
    assert!(out.contains("epoch 0.16  loss "), "{out}");
    for f in ["curves.csv", "curves.svg", "curves.png", "confusion.png"] {
        assert!(run.join(f).is_file(), "{f} after epoch 1");
    }
    assert_eq!(csv_rows(&run.join("curves.csv")).len(), 7);
    let out = ok(&["--data-dir", p(&data), "train", "--resume", p(&run.join("last.safetensors")), "--epochs", "2"]);
    assert!(out.contains("epoch 2/2"), "{out}");
    assert!(std::fs::read_to_string(run.join("config.toml")).unwrap().contains("epochs = 2"), "the config it ran");
    let rows = csv_rows(&run.join("curves.csv"));
    assert_eq!(rows.len(), 14);
    // Test accuracy at the whole epochs, equal to metrics.csv's.
    let metrics = csv_rows(&run.join("metrics.csv"));
    let at_epochs: Vec<(&str, &str)> =
        rows.iter().filter(|r| !r[3].is_empty()).map(|r| (r[0].as_str(), r[3].as_str())).collect();
    assert_eq!(at_epochs, vec![("1", metrics[0][6].as_str()), ("2", metrics[1][6].as_str())]);
    let png = image::open(run.join("curves.png")).unwrap();
    assert_eq!((png.width(), png.height()), (820, 440));

    // A second run to compare with.
    let relu = dir.path().join("relu");
    train(&data, &relu, &["--epochs", "2", "--arch", "relu", "--optimizer", "adam"]);
    let cmp = dir.path().join("cmp.svg");
    let out = ok(&["compare", p(&run), p(&relu), "--out", p(&cmp)]);
    assert!(out.contains("sigmoid") && out.contains("relu") && out.contains("best test acc"), "{out}");
    let svg = std::fs::read_to_string(&cmp).unwrap();
    assert!(svg.contains(">\nsigmoid\n<") && svg.contains(">\nrelu\n<"), "the legend names both runs");
    let err = lenet(&["compare", p(&run), p(&dir.path().join("nope"))]);
    assert!(!err.status.success() && String::from_utf8_lossy(&err.stderr).contains("no such run folder"));

    // eval --confusion, as SVG: class names and counts.
    let conf = dir.path().join("confusion.svg");
    let out = ok(&["--data-dir", p(&data), "eval", p(&run.join("best.safetensors")), "--confusion", p(&conf)]);
    assert!(out.contains("wrote"), "{out}");
    let svg = std::fs::read_to_string(&conf).unwrap();
    assert!(svg.contains("predicted class") && svg.contains("true class") && svg.matches("<rect").count() >= 100);

    // The report: one self-contained page.
    let out = ok(&["--data-dir", p(&data), "report", p(&relu)]);
    assert!(out.contains("report.html"), "{out}");
    let html_path = relu.join("report.html");
    let html = std::fs::read_to_string(&html_path).unwrap();
    for id in ["id=\"curves\"", "id=\"confusion\"", "id=\"metrics\"", "id=\"config\"", "id=\"misclassified\""] {
        assert!(html.contains(id), "the page lacks {id}");
    }
    for external in ["src=\"http", "href=\"http", "<link", "<script", "url("] {
        assert!(!html.contains(external), "the page refers to something outside it: {external}");
    }
    let b64 = html.split("data:image/png;base64,").nth(1).unwrap().split('"').next().unwrap();
    let grid = image::load_from_memory(&base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap();
    assert!(grid.width() > 200 && grid.height() > 50);
    render_in_chromium(&html_path, dir.path());
}

fn chromium() -> Option<PathBuf> {
    let candidates = [std::env::var("LENET_CHROMIUM").ok(), Some("chromium".into()), Some("chromium-browser".into())];
    candidates
        .into_iter()
        .flatten()
        .find(|c| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()))
        .map(PathBuf::from)
}

fn render_in_chromium(page: &Path, tmp: &Path) {
    let Some(chrome) = chromium() else {
        if std::env::var("LENET_REQUIRE_CHROMIUM").is_ok_and(|v| v == "1") {
            panic!("chromium is not installed: run scripts/setup-chromium");
        }
        eprintln!("skipping the browser check: no chromium (scripts/setup-chromium installs it)");
        return;
    };
    let url = format!("file://{}", page.canonicalize().unwrap().display());
    let profile = tmp.join("chromium-profile");
    let run = |extra: &[&str]| {
        let out = Command::new(&chrome)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(&url)
            .output()
            .unwrap();
        assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
        out
    };
    // The DOM as the browser parsed it: the figures hold SVG with the plotted lines and cells.
    let dom = String::from_utf8(run(&["--dump-dom"]).stdout).unwrap();
    let figure = |id: &str| {
        let start = dom.find(&format!("<figure id=\"{id}\"")).unwrap_or_else(|| panic!("no figure {id} in the DOM"));
        let end = start + dom[start..].find("</figure>").unwrap();
        dom[start..end].to_string()
    };
    let curves = figure("curves");
    assert!(curves.contains("<svg") && curves.matches("<polyline").count() >= 2, "curves without lines");
    assert!(curves.contains("train loss") && curves.contains("test acc"));
    let matrix = figure("confusion");
    assert!(matrix.contains("<svg") && matrix.matches("<rect").count() >= 100, "a matrix without its 100 cells");

    // The screenshot: the curves' colours and the matrix's shades are on screen.
    let shot = tmp.join("report.png");
    run(&[&format!("--screenshot={}", shot.display()), "--window-size=1200,3000"]);
    if let Ok(keep) = std::env::var("LENET_KEEP_SCREENSHOT") {
        std::fs::copy(&shot, keep).unwrap();
    }
    let img = image::open(&shot).unwrap().to_rgb8();
    let count = |c: [u8; 3]| img.pixels().filter(|p| p.0.iter().zip(c).all(|(&a, b)| a.abs_diff(b) <= 2)).count();
    for (name, c) in [("train loss", TRAIN_LOSS), ("train acc", TRAIN_ACC), ("test acc", TEST_ACC)] {
        let n = count([c.0, c.1, c.2]);
        assert!(n > 100, "{name}: only {n} pixels of its colour in the screenshot");
    }
    // The matrix's cells: shades of blue (blue well above red); a classifier that
    // learned the toy classes has a dark diagonal of ten 56-pixel cells.
    let blue = img.pixels().filter(|p| p.0[2] as i32 - p.0[0] as i32 > 60).count();
    assert!(blue > 10 * 56 * 56, "only {blue} blue pixels: no confusion matrix on screen");
    let red = count([214, 39, 40]);
    assert!(red > 100, "no red frames of misclassified images ({red} pixels)");
}
