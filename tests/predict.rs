//! `lenet predict` and its MNIST-style preprocessing. Pictures are drawn here,
//! saved as PNG, JPEG and BMP with the image crate, and checked against what
//! MNIST's own pipeline gives: in the real test set every digit's ink box is
//! exactly 20 pixels on its longer side and the centre of mass averages
//! (14.0, 14.0); white ink on black. Real digits, blown up and inverted, must
//! come back as themselves, and an image exported by `lenet data preview
//! --index` must get the prediction `lenet eval` gives that index.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use image::{ImageFormat, Rgb, RgbImage};
use lenet::checkpoint;
use lenet::data::{self, DatasetKind};
use lenet::eval::evaluate;
use lenet::internal::engine::cpu::CpuEngine;
use lenet::internal::engine::Engine;
use lenet::network::Network;
use lenet::optim::OptimizerKind;
use lenet::predict::{load_image, prepare, Style};
use lenet::spec::Spec;
use lenet::trainer::{Silent, TrainConfig, Trainer};

fn lenet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lenet")).args(args).output().unwrap()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A stroke drawing: polylines in [0, 1]² coordinates of the box (x0, y0, w, h)
/// of a `width`×`height` canvas, `thick` pixels wide.
fn draw(
    width: u32,
    height: u32,
    bg: u8,
    ink: u8,
    bbox: (f64, f64, f64, f64),
    lines: &[&[(f64, f64)]],
    thick: f64,
) -> RgbImage {
    let (bx, by, bw, bh) = bbox;
    let mut img = RgbImage::from_pixel(width, height, Rgb([bg, bg, bg]));
    let segs: Vec<((f64, f64), (f64, f64))> = lines
        .iter()
        .flat_map(|l| l.windows(2).map(|w| (w[0], w[1])))
        .map(|((x0, y0), (x1, y1))| ((bx + x0 * bw, by + y0 * bh), (bx + x1 * bw, by + y1 * bh)))
        .collect();
    for y in 0..height {
        for x in 0..width {
            let (px, py) = (x as f64 + 0.5, y as f64 + 0.5);
            let near = segs.iter().any(|&((ax, ay), (cx, cy))| {
                let (dx, dy) = (cx - ax, cy - ay);
                let t = (((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy).max(1e-12)).clamp(0.0, 1.0);
                let (qx, qy) = (ax + t * dx - px, ay + t * dy - py);
                (qx * qx + qy * qy).sqrt() <= thick / 2.0
            });
            if near {
                img.put_pixel(x, y, Rgb([ink, ink, ink]));
            }
        }
    }
    img
}

/// Where a drawing goes on its canvas: x, y, width, height.
type Bbox = (f64, f64, f64, f64);
/// Polylines in the unit square.
type Strokes<'a> = &'a [&'a [(f64, f64)]];

const SEVEN: &[&[(f64, f64)]] = &[&[(0.0, 0.0), (1.0, 0.0), (0.35, 1.0)]];
const ONE: &[&[(f64, f64)]] = &[&[(0.5, 0.0), (0.5, 1.0)]];
fn zero() -> Vec<(f64, f64)> {
    (0..=40)
        .map(|i| i as f64 / 40.0 * std::f64::consts::TAU)
        .map(|a| (0.5 + 0.5 * a.sin(), 0.5 - 0.5 * a.cos()))
        .collect()
}

fn save(img: &RgbImage, path: &Path) {
    let format = ImageFormat::from_path(path).unwrap();
    img.save_with_format(path, format).unwrap();
}

/// Independent measurements of a 28×28 result.
fn nonzero_box(px: &[u8]) -> (usize, usize, usize, usize) {
    let (mut x0, mut y0, mut x1, mut y1) = (28, 28, 0, 0);
    for (i, &v) in px.iter().enumerate() {
        if v > 0 {
            let (x, y) = (i % 28, i / 28);
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        }
    }
    (x0, y0, x1 + 1 - x0, y1 + 1 - y0)
}

fn com(px: &[u8]) -> (f64, f64) {
    let m: f64 = px.iter().map(|&v| v as f64).sum();
    let cx: f64 = px.iter().enumerate().map(|(i, &v)| (i % 28) as f64 * v as f64).sum::<f64>() / m;
    let cy: f64 = px.iter().enumerate().map(|(i, &v)| (i / 28) as f64 * v as f64).sum::<f64>() / m;
    (cx, cy)
}

/// Mean absolute difference of two 28×28 images at their best alignment within
/// one pixel: the centre of mass of MNIST and of lenet lands within half a pixel
/// of (14, 14), so a digit whose centre falls near .5 may legitimately move by one.
fn aligned_diff(a: &[u8], b: &[u8]) -> f64 {
    let at = |img: &[u8], x: i32, y: i32| {
        if (0..28).contains(&x) && (0..28).contains(&y) {
            img[(y * 28 + x) as usize] as f64
        } else {
            0.0
        }
    };
    let mut best = f64::INFINITY;
    for dy in -1..=1 {
        for dx in -1..=1 {
            let mut sum = 0.0;
            for y in 0..28 {
                for x in 0..28 {
                    sum += (at(a, x, y) - at(b, x + dx, y + dy)).abs();
                }
            }
            best = best.min(sum / 784.0);
        }
    }
    best
}

#[test]
fn pictures_become_mnist_digits() {
    let dir = tempfile::tempdir().unwrap();
    // Odd sizes, wide and tall digits, off-centre.
    let cases: [(u32, u32, Bbox, Strokes, f64); 3] = [
        (317, 211, (60.0, 30.0, 110.0, 150.0), SEVEN, 14.0),
        (45, 91, (20.0, 12.0, 10.0, 70.0), ONE, 5.0),
        (1001, 37, (700.0, 4.0, 50.0, 29.0), SEVEN, 3.0),
    ];
    for (k, (w, h, bbox, lines, thick)) in cases.iter().enumerate() {
        let mut results = Vec::new();
        for (bg, ink) in [(236u8, 25u8), (12, 230)] {
            let img = draw(*w, *h, bg, ink, *bbox, lines, *thick);
            for ext in ["png", "jpg", "bmp"] {
                let path = dir.path().join(format!("case{k}-{bg}.{ext}"));
                save(&img, &path);
                let pic = load_image(&path).unwrap();
                let prep = prepare(&pic, Style::Mnist, None).unwrap();
                let px = &prep.pixels;
                assert_eq!(px.len(), 784);
                assert_eq!(prep.inverted, bg > 128, "{path:?}");
                let (_, _, bw, bh) = nonzero_box(px);
                assert_eq!(bw.max(bh), 20, "{path:?}: ink box {bw}×{bh}");
                // The aspect ratio is kept: the shorter side scales by the same factor.
                let (sw, sh) = (prep.ink_box.2 as f64, prep.ink_box.3 as f64);
                let short = (sw.min(sh) * 20.0 / sw.max(sh)).round().max(1.0);
                assert!((bw.min(bh) as f64 - short).abs() <= 1.0, "{path:?}: {bw}×{bh}, source {sw}×{sh}");
                let (cx, cy) = com(px);
                assert!((cx - 14.0).abs() <= 0.5 && (cy - 14.0).abs() <= 0.5, "{path:?}: centre of mass {cx},{cy}");
                assert_eq!(*px.iter().max().unwrap(), 255, "{path:?}");
                // White ink on black: the corners are background.
                assert_eq!([px[0], px[27], px[756], px[783]], [0; 4], "{path:?}");
                results.push((ext, px.clone()));
            }
        }
        // Lossless files give the same digit on a light or a dark background; JPEG nearly.
        let find = |i: usize| &results[i].1;
        assert_eq!(find(0), find(3), "case {k}: light and dark PNG differ");
        assert_eq!(find(0), find(2), "case {k}: PNG and BMP differ");
        for (ext, px) in &results {
            let d = aligned_diff(px, find(0));
            assert!(d < 6.0, "case {k} {ext}: mean difference {d} from the PNG");
        }
    }
}

#[test]
fn transparent_canvas_keeps_its_ink() {
    // Dark strokes on a fully transparent canvas (what drawing apps export).
    let mut img = image::RgbaImage::from_pixel(120, 90, image::Rgba([0, 0, 0, 0]));
    for y in 20..70 {
        for x in 55..63 {
            img.put_pixel(x, y, image::Rgba([10, 10, 10, 255]));
        }
    }
    let prep = prepare(&image::DynamicImage::ImageRgba8(img), Style::Mnist, None).unwrap();
    let (_, _, bw, bh) = nonzero_box(&prep.pixels);
    assert_eq!(bh, 20);
    assert!(bw <= 4, "{bw}");
}

/// A photo's light is uneven: a shadow darkening a third of the sheet towards its edge
/// (by twice the noise floor's worth) is paper, not ink. The digit, a bar on the lit
/// side, is all that is cropped: its ink box is the bar's, 20 pixels tall, and nothing
/// touches the picture's edge.
#[test]
fn a_shadow_across_the_sheet_is_not_ink() {
    let mut img = RgbImage::new(240, 200);
    for (x, y, px) in img.enumerate_pixels_mut() {
        let shadow = if x < 80 { 90.0 * (1.0 - x as f32 / 80.0) } else { 0.0 };
        let light = 235.0 - 15.0 * y as f32 / 200.0 - shadow;
        let ink = (150..162).contains(&x) && (50..150).contains(&y);
        let v = if ink { 40.0 } else { light } as u8;
        *px = Rgb([v, v, v]);
    }
    let prep = prepare(&image::DynamicImage::ImageRgb8(img), Style::Mnist, None).unwrap();
    assert!(prep.warnings.is_empty(), "{:?}", prep.warnings);
    let (bx, by, bw, bh) = prep.ink_box;
    assert!((148..=150).contains(&bx) && (48..=50).contains(&by), "ink box {:?}", prep.ink_box);
    assert!((12..=16).contains(&bw) && (100..=104).contains(&bh), "ink box {:?}", prep.ink_box);
    let (_, _, w, h) = nonzero_box(&prep.pixels);
    assert_eq!(h, 20);
    assert!(w <= 4, "{w}");
}

/// A garment is a solid shape, not strokes: in Fashion-MNIST's style its inside stays
/// ink (the paper's level under a stroke is estimated for digits only).
#[test]
fn a_solid_shape_keeps_its_inside() {
    let mut img = RgbImage::from_pixel(200, 150, Rgb([220, 220, 220]));
    for y in 45..105 {
        for x in 40..160 {
            img.put_pixel(x, y, Rgb([40, 40, 40]));
        }
    }
    let prep = prepare(&image::DynamicImage::ImageRgb8(img), Style::Fashion, None).unwrap();
    // The 120×60 block fills the 28 columns and 14 rows in the middle, all of it ink.
    let inside: Vec<u8> =
        (8..20).flat_map(|y| (1..27).map(move |x| (y, x))).map(|(y, x)| prep.pixels[y * 28 + x]).collect();
    assert!(inside.iter().all(|&v| v > 200), "{inside:?}");
}

fn mnist() -> Option<lenet::data::Dataset> {
    match data::load(DatasetKind::Mnist, None) {
        Ok(d) => Some(d),
        Err(e) if std::env::var("LENET_SKIP_REAL_DATA").is_ok_and(|v| v == "1") => {
            eprintln!("skipping: {e}");
            None
        }
        Err(e) => panic!("{e}\n(run scripts/setup-data, or set LENET_SKIP_REAL_DATA=1 to skip)"),
    }
}

#[test]
fn real_digits_blown_up_and_inverted_come_back() {
    let Some(ds) = mnist() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut worst: f64 = 0.0;
    for i in 0..30 {
        let digit = ds.test.images.image(i);
        // 6× larger (nearest neighbour), dark on light paper, at an odd place on an odd canvas.
        let (w, h, ox, oy) = (251u32, 307u32, 37u32, 71u32);
        let mut img = RgbImage::from_pixel(w, h, Rgb([250, 250, 250]));
        for y in 0..168u32 {
            for x in 0..168u32 {
                let v = digit[(y / 6) as usize * 28 + (x / 6) as usize];
                let g = 250 - (v as u32 * 240 / 255) as u8;
                img.put_pixel(ox + x, oy + y, Rgb([g, g, g]));
            }
        }
        let path = dir.path().join(format!("big-{i}.png"));
        save(&img, &path);
        let prep = prepare(&load_image(&path).unwrap(), Style::Mnist, None).unwrap();
        assert!(prep.inverted);
        let d = aligned_diff(&prep.pixels, digit);
        worst = worst.max(d);
        assert!(d < 10.0, "test image {i}: mean difference {d} from the original (best alignment)");
        let ((ax, ay), (bx, by)) = (com(&prep.pixels), com(digit));
        assert!((ax - bx).abs() <= 1.0 && (ay - by).abs() <= 1.0, "image {i}: centre {ax},{ay} vs {bx},{by}");
    }
    eprintln!("largest mean difference from the originals: {worst:.2} of 255");
}

/// A relu LeNet trained for one epoch on 12,000 real MNIST images (a few seconds).
fn trained_checkpoint(ds: &lenet::data::Dataset, path: &Path) {
    let mut arch = Spec::preset("relu").unwrap();
    arch.input.normalize = "mnist".parse().unwrap();
    let config = TrainConfig {
        arch,
        dataset: DatasetKind::Mnist,
        epochs: 1,
        batch: 64,
        lr: 2e-3,
        optimizer: OptimizerKind::adam(),
        threads: 2,
        ..TrainConfig::d2l()
    };
    let train = ds.train.select(&(0..12000).collect::<Vec<_>>());
    let mut t = Trainer::new(CpuEngine::new(2).unwrap(), config, &train, &ds.test, None).unwrap();
    t.train_epoch(&mut Silent).unwrap();
    checkpoint::save(path, &t.checkpoint()).unwrap();
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn predict_end_to_end_on_real_mnist() {
    let Some(ds) = mnist() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("relu.safetensors");
    trained_checkpoint(&ds, &ckpt);

    // What `lenet eval` computes for every test image.
    let ck = checkpoint::load(&ckpt, None).unwrap();
    let mut net = Network::new(CpuEngine::new(2).unwrap(), &ck.spec).unwrap();
    net.set_params(&ck.params).unwrap();
    let examples = net.engine.upload_examples(&ds.test.images, &ds.test.labels, &ck.spec.input);
    let eval = evaluate(&mut net, &examples, 1000);
    let wrong: Vec<usize> = (0..10000).filter(|&i| eval.predictions[i] != ds.test.labels[i]).collect();
    assert!(eval.accuracy > 0.9 && wrong.len() >= 5, "accuracy {}", eval.accuracy);

    // Images exported by `lenet data preview --index` predict as eval does, wrong ones included.
    let indices: Vec<usize> = (0..8).chain(wrong[..5].iter().copied()).collect();
    let mut files: Vec<PathBuf> = Vec::new();
    for &i in &indices {
        let f = dir.path().join(format!("test-{i}.png"));
        let out = lenet(&["data", "preview", "mnist", "--split", "test", "--index", &i.to_string(), "--out", p(&f)]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        files.push(f);
    }
    let mut args = vec!["predict", p(&ckpt), "--json"];
    args.extend(files.iter().map(|f| p(f)));
    let out = json(&lenet(&args));
    for (k, &i) in indices.iter().enumerate() {
        let item = &out[k];
        assert_eq!(item["preprocess"], "none", "a 28×28 dataset image is taken as it is");
        let preds = item["predictions"].as_array().unwrap();
        assert_eq!(preds.len(), 3);
        assert_eq!(preds[0]["class"].as_u64().unwrap(), eval.predictions[i] as u64, "test image {i}");
        let probs: Vec<f64> = preds.iter().map(|p| p["probability"].as_f64().unwrap()).collect();
        assert!(probs.windows(2).all(|w| w[0] >= w[1]) && probs.iter().sum::<f64>() <= 1.0 + 1e-9, "{probs:?}");
        // The same numbers as the dataset path of `lenet predict`.
        let same =
            json(&lenet(&["predict", p(&ckpt), "--dataset", "mnist", "--start", &i.to_string(), "-n", "1", "--json"]));
        assert_eq!(same[0]["index"].as_u64().unwrap(), i as u64);
        // Batches of different sizes may differ in the last bits of a float sum.
        for (a, b) in same[0]["predictions"].as_array().unwrap().iter().zip(preds) {
            assert_eq!(a["class"], b["class"], "test image {i}");
            let (pa, pb) = (a["probability"].as_f64().unwrap(), b["probability"].as_f64().unwrap());
            assert!((pa - pb).abs() < 1e-5, "test image {i}: {pa} vs {pb}");
        }
    }

    // Drawn digits, on light paper, in odd sizes and three formats, are recognised.
    let ring = zero();
    let drawings: [(&str, RgbImage); 3] = [
        ("seven.jpg", draw(300, 240, 245, 30, (90.0, 40.0, 110.0, 160.0), SEVEN, 16.0)),
        ("one.bmp", draw(97, 133, 255, 0, (30.0, 20.0, 20.0, 100.0), ONE, 9.0)),
        ("zero.png", draw(201, 203, 220, 40, (50.0, 30.0, 90.0, 130.0), &[&ring], 14.0)),
    ];
    let mut args = vec!["predict".to_string(), p(&ckpt).to_string(), "--json".into()];
    for (name, img) in &drawings {
        let f = dir.path().join(name);
        save(img, &f);
        args.push(p(&f).to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = json(&lenet(&args));
    for (k, want) in [7, 1, 0].into_iter().enumerate() {
        assert_eq!(out[k]["preprocess"], "mnist");
        assert_eq!(out[k]["inverted"], true);
        assert_eq!(out[k]["predictions"][0]["class"].as_u64().unwrap(), want, "{}", out[k]);
    }
    // Text output: the top 3 with percentages.
    let text = lenet(&["predict", p(&ckpt), args[3]]);
    let stdout = String::from_utf8_lossy(&text.stdout);
    assert!(text.status.success() && stdout.contains("seven.jpg") && stdout.matches('%').count() == 3, "{stdout}");

    // The grid of misclassified test images lists exactly eval's errors, in order.
    let grid = dir.path().join("wrong.png");
    let out = json(&lenet(&[
        "predict",
        p(&ckpt),
        "--dataset",
        "mnist",
        "--misclassified",
        "-n",
        "12",
        "--grid",
        p(&grid),
        "--json",
    ]));
    let listed: Vec<usize> = out.as_array().unwrap().iter().map(|v| v["index"].as_u64().unwrap() as usize).collect();
    assert_eq!(listed, wrong[..12].to_vec());
    let img = image::open(&grid).unwrap().to_rgb8();
    let red = img.pixels().filter(|p| p.0 == [214, 39, 40]).count();
    assert!(red > 12 * 4 * 84, "every wrong image is framed in red ({red} red pixels)");

    // A grid of the first images frames only the wrong ones.
    let grid = dir.path().join("first.png");
    let out = lenet(&["predict", p(&ckpt), "--dataset", "mnist", "-n", "20", "--grid", p(&grid)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let wrong_in_20 = wrong.iter().filter(|&&i| i < 20).count();
    assert!(stdout.contains(&format!("20 mnist test images, {wrong_in_20} wrong")), "{stdout}");
    let img = image::open(&grid).unwrap().to_rgb8();
    let red = img.pixels().filter(|p| p.0 == [214, 39, 40]).count();
    assert_eq!(red > 0, wrong_in_20 > 0);
}

#[test]
fn bad_pictures_are_clear_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    // Any checkpoint will do: nothing reaches the network.
    let spec = Spec::preset("d2l").unwrap();
    let net = Network::new(CpuEngine::new(1).unwrap(), &spec).unwrap();
    let ckpt = dir.path().join("net.safetensors");
    let meta = lenet::checkpoint::Meta { epoch: 0, ..Default::default() };
    checkpoint::save(&ckpt, &checkpoint::Checkpoint { spec, params: net.params(), optim: vec![], meta }).unwrap();

    let text = dir.path().join("notes.png");
    std::fs::write(&text, "not a picture").unwrap();
    let empty = dir.path().join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    let blank = dir.path().join("blank.png");
    save(&RgbImage::from_pixel(64, 48, Rgb([200, 200, 200])), &blank);
    let truncated = dir.path().join("truncated.png");
    save(&draw(50, 50, 255, 0, (10.0, 10.0, 30.0, 30.0), ONE, 4.0), &truncated);
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let good = dir.path().join("good.png");
    save(&draw(50, 50, 255, 0, (10.0, 10.0, 30.0, 30.0), ONE, 4.0), &good);
    let missing = dir.path().join("missing.png");

    for (file, problem) in [
        (&text, "not an image"),
        (&empty, "empty file"),
        (&blank, "blank"),
        (&truncated, "cannot decode"),
        (&missing, "cannot read"),
    ] {
        let out = lenet(&["predict", p(&ckpt), p(file)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file:?} should fail");
        assert!(err.contains(p(file)) && err.contains(problem), "{file:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // One bad picture among good ones: the good one is still classified, the run fails.
    let out = lenet(&["predict", p(&ckpt), p(&good), p(&blank)]);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success());
    assert!(stdout.contains("good.png") && stdout.contains('%'), "{stdout}");
    assert!(stderr.contains("blank.png") && stderr.contains("1 of 2 pictures"), "{stderr}");
    // With --json the error is part of the answer.
    let out = lenet(&["predict", p(&ckpt), "--json", p(&good), p(&blank)]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v[0]["predictions"].is_array() && v[1]["error"].as_str().unwrap().contains("blank"), "{v}");
    // Nothing to predict.
    let out = lenet(&["predict", p(&ckpt)]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to predict"));
    // A picture touching the edge works, with a warning.
    let edge = dir.path().join("edge.png");
    save(&draw(40, 40, 255, 0, (0.0, 0.0, 40.0, 40.0), ONE, 6.0), &edge);
    let out = lenet(&["predict", p(&ckpt), p(&edge)]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stderr).contains("touches the picture's edge"));
}

/// LeNet-5's RBF outputs: `--json` gives each class's squared distance to its bitmap,
/// the predicted class is the nearest, and the probabilities are softmax(−y).
#[test]
fn lenet5_predictions_report_the_rbf_distances() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec::lenet5();
    let mut net = Network::new(CpuEngine::new(1).unwrap(), &spec).unwrap();
    let mut params = vec![0.0f32; net.num_params()];
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(3);
    lenet::init::init_params(&mut params, net.param_infos(), lenet::init::Init::LeCun, &mut rng);
    net.set_params(&params).unwrap();
    let ckpt = dir.path().join("lenet5.safetensors");
    let meta = lenet::checkpoint::Meta { epoch: 0, ..Default::default() };
    checkpoint::save(&ckpt, &checkpoint::Checkpoint { spec, params: net.params(), optim: vec![], meta }).unwrap();
    let one = dir.path().join("one.png");
    save(&draw(60, 80, 255, 0, (20.0, 10.0, 20.0, 60.0), ONE, 6.0), &one);
    let out = lenet(&["predict", p(&ckpt), p(&one), "--json", "--top", "10"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = json(&out);
    let item = &v[0];
    let d: Vec<f64> = item["distances"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert_eq!(d.len(), 10);
    assert!(d.iter().all(|&y| y >= 0.0), "{d:?}");
    let nearest = (0..10).min_by(|&a, &b| d[a].total_cmp(&d[b])).unwrap();
    let top = &item["predictions"][0];
    assert_eq!(top["class"].as_u64().unwrap() as usize, nearest);
    let z: f64 = d.iter().map(|y| (d[nearest] - y).exp()).sum();
    assert!((top["probability"].as_f64().unwrap() - 1.0 / z).abs() < 1e-6, "softmax of −y");
}

/// The library's `Classifier` is `lenet predict` without the command line: the same
/// preparation and probabilities for a file, its bytes and a dataset image, and errors
/// that name what is wrong.
#[test]
fn the_classifier_reads_as_predict_does() {
    use lenet::{models, Classifier};
    let model = models::find("fashion-mnist-relu").unwrap().checkpoint();
    let mut classifier = Classifier::new(&model).unwrap();
    assert_eq!(classifier.dataset(), Some(DatasetKind::FashionMnist));
    assert_eq!(classifier.class_names()[7], "Sneaker");

    // A drawn picture: the file, its bytes and the command line agree to the last digit.
    let dir = tempfile::tempdir().unwrap();
    let picture = draw(300, 200, 240, 20, (100.0, 30.0, 90.0, 140.0), SEVEN, 14.0);
    let file = dir.path().join("shape.png");
    save(&picture, &file);
    let from_file = classifier.classify_file(&file).unwrap();
    let from_bytes = classifier.classify_encoded(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(from_file, from_bytes);
    let sum: f64 = from_file.probabilities.iter().sum();
    assert!((sum - 1.0).abs() < 1e-9 && from_file.probabilities.len() == 10);
    assert_eq!(from_file.top(1), vec![(from_file.class, from_file.probability)]);
    assert!(from_file.prepared.inverted, "a light background is inverted");
    let out = lenet(&["predict", "--model", "fashion-mnist-relu", "--device", "cpu", "--json", p(&file)]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let top = &json[0]["predictions"][0];
    assert_eq!(top["class"].as_u64().unwrap() as usize, from_file.class);
    assert_eq!(top["probability"].as_f64().unwrap(), from_file.probability);

    // The 28×28 image it read, given back as a dataset image, reads the same.
    let again = classifier.classify_pixels(&from_file.prepared.pixels).unwrap();
    assert_eq!(again.probabilities, from_file.probabilities);

    let e = classifier.classify_pixels(&[0; 100]).unwrap_err().to_string();
    assert!(e.contains("784 bytes, got 100"), "{e}");
    let junk = dir.path().join("notes.png");
    std::fs::write(&junk, "not a picture").unwrap();
    let e = classifier.classify_file(&junk).unwrap_err().to_string();
    assert!(e.contains("notes.png"), "{e}");
    let blank = dir.path().join("blank.png");
    save(&RgbImage::from_pixel(50, 50, Rgb([255, 255, 255])), &blank);
    let e = classifier.classify_file(&blank).unwrap_err().to_string();
    assert!(e.contains("blank.png"), "{e}");
}
