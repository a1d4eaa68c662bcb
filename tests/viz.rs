//! Pictures of training: the trainer's fractional-epoch curve points, the
//! curves' data file, and what the curve, comparison, confusion-matrix and
//! terminal pictures actually contain (pixels of the right colours in the right
//! places), not only that a file was written.

use std::path::Path;

use image::RgbImage;
use lenet::data::{Images, Split};
use lenet::internal::engine::cpu::CpuEngine;
use lenet::internal::viz::curves::{ComparePlot, Curves, CurvesPlot, EpochEval};
use lenet::internal::viz::heatmap::{blues, ConfusionPlot};
use lenet::internal::viz::palette::{RUNS, TEST_ACC, TRAIN_ACC, TRAIN_LOSS};
use lenet::internal::viz::{to_rgb, to_svg};
use lenet::optim::OptimizerKind;
use lenet::spec::Spec;
use lenet::trainer::{is_curve_batch, CurvePoint, EpochMetrics, Observer, TrainConfig, Trainer};
use plotters::style::RGBColor;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[test]
fn curve_points_where_d2l_takes_them() {
    // d2l: `if (i + 1) % (num_batches // 5) == 0 or i == num_batches - 1`.
    let d2l = |batches: usize| -> Vec<usize> {
        (0..batches).filter(|i| (i + 1) % (batches / 5).max(1) == 0 || *i == batches - 1).map(|i| i + 1).collect()
    };
    for batches in [1, 4, 5, 7, 12, 19, 235, 469] {
        let ours: Vec<usize> = (1..=batches).filter(|&b| is_curve_batch(b, batches)).collect();
        assert_eq!(ours, d2l(batches), "{batches} batches");
    }
    assert_eq!((1..=235).filter(|&b| is_curve_batch(b, 235)).count(), 5);
}

fn toy_split(n: usize, seed: u64) -> Split {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut pixels = vec![0u8; n * 784];
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let c = rng.gen_range(0..10usize);
        labels.push(c as u8);
        let (y0, x0) = (4 + (c / 5) * 12, 2 + (c % 5) * 5);
        for y in y0..y0 + 8 {
            for x in x0..x0 + 4 {
                pixels[i * 784 + y * 28 + x] = 255;
            }
        }
    }
    Split { images: Images { count: n, rows: 28, cols: 28, pixels }, labels }
}

/// Records what the trainer reports.
#[derive(Default)]
struct Record {
    batches: usize,
    /// The epoch's batch_end calls, and how many had come before each curve point.
    ended: Vec<usize>,
    point_after: Vec<usize>,
    points: Vec<CurvePoint>,
}
impl Observer for Record {
    fn epoch_start(&mut self, _e: usize, _n: usize, batches: usize) {
        self.batches = batches;
        self.ended.clear();
        self.point_after.clear();
    }
    fn batch_end(&mut self, batch: usize) {
        self.ended.push(batch);
    }
    fn curve_point(&mut self, p: &CurvePoint) {
        self.point_after.push(self.ended.len());
        self.points.push(*p);
    }
}

#[test]
fn trainer_records_running_means_at_fractional_epochs() {
    let config = TrainConfig {
        arch: Spec::preset("relu").unwrap(),
        epochs: 2,
        batch: 32,
        lr: 2e-3,
        optimizer: OptimizerKind::adam(),
        threads: 2,
        ..TrainConfig::d2l()
    };
    let (train, test) = (toy_split(600, 1), toy_split(100, 2));
    let mut t = Trainer::new(CpuEngine::new(2).unwrap(), config, &train, &test, None).unwrap();
    let mut rec = Record::default();
    let mut history: Vec<EpochMetrics> = Vec::new();
    for epoch in 1..=2 {
        let before = rec.points.len();
        let m = t.train_epoch(&mut rec).unwrap();
        let batches = rec.batches;
        assert_eq!(batches, 19);
        let want: Vec<usize> = (1..=batches).filter(|&b| is_curve_batch(b, batches)).collect();
        assert_eq!(rec.ended, (1..=batches).collect::<Vec<_>>(), "every batch's end, in order");
        assert_eq!(rec.point_after, want, "a point right after each curve batch");
        assert_eq!(m.points.len(), want.len());
        assert_eq!(&rec.points[before..], m.points.as_slice(), "the observer sees the stored points");
        for (p, &b) in m.points.iter().zip(&want) {
            // At epoch (e-1) + b/B, running means that are means: within [0, 1] for
            // the accuracy, over a fraction of the epoch's examples in whole batches.
            assert!((p.epoch - ((epoch - 1) as f64 + b as f64 / batches as f64)).abs() < 1e-12);
            let examples = (b * 32).min(600);
            let correct = p.train_acc * examples as f64;
            assert!((correct - correct.round()).abs() < 1e-9, "accuracy {} over {examples}", p.train_acc);
            assert!(p.train_loss.is_finite() && p.train_loss > 0.0);
        }
        let last = m.points.last().unwrap();
        assert_eq!((last.epoch, last.train_loss, last.train_acc), (epoch as f64, m.train_loss, m.train_acc));
        history.push(m);
    }
    // The points travel in the checkpoint's history, so a resumed run redraws whole curves.
    let ck = t.checkpoint();
    let back: Vec<EpochMetrics> = serde_json::from_value(ck.meta.history).unwrap();
    assert_eq!(back, history);
}

fn synthetic(label: &str, epochs: usize, start_loss: f64, start_acc: f64) -> Curves {
    let mut c = Curves::new(label, epochs);
    for e in 1..=epochs {
        for k in 1..=5 {
            let x = (e - 1) as f64 + k as f64 / 5.0;
            let f = x / epochs as f64;
            c.push_point(CurvePoint {
                epoch: x,
                train_loss: start_loss * (1.0 - 0.8 * f),
                train_acc: start_acc + (0.95 - start_acc) * f,
            });
        }
        let f = e as f64 / epochs as f64;
        c.push_eval(EpochEval { epoch: e, test_acc: start_acc + (0.9 - start_acc) * f, val_acc: None });
    }
    c
}

#[test]
fn curves_csv_round_trips_and_bad_files_are_named() {
    let c = synthetic("run", 3, 2.3, 0.1);
    let path = Path::new("runs/x/curves.csv");
    let back = Curves::from_csv("run", &c.to_csv(), path).unwrap();
    assert_eq!(back.points.len(), 15);
    assert_eq!(back.evals.iter().map(|e| e.epoch).collect::<Vec<_>>(), vec![1, 2, 3]);
    for (a, b) in back.points.iter().zip(&c.points) {
        assert!((a.epoch - b.epoch).abs() < 1e-6 && (a.train_loss - b.train_loss).abs() < 1e-6);
    }
    for (a, b) in back.evals.iter().zip(&c.evals) {
        assert!((a.test_acc - b.test_acc).abs() < 1e-6);
    }
    assert_eq!(back.epochs, 3);
    let err = Curves::from_csv("run", "epoch,train_loss,train_acc,test_acc,val_acc\n0.5,x,0.1,,\n", path).unwrap_err();
    assert!(format!("{err:#}").contains("runs/x/curves.csv: line 2: train_loss 'x' is not a number"), "{err:#}");
    let err =
        Curves::from_csv("run", "epoch,train_loss,train_acc,test_acc,val_acc\n0.5,1,0.1,0.2,\n", path).unwrap_err();
    assert!(format!("{err:#}").contains("not at the end of an epoch"), "{err:#}");
    // metrics.csv as the trainer writes it: one point per epoch.
    let metrics = "epoch,train_loss,train_acc,val_loss,val_acc,test_loss,test_acc,lr,examples_per_sec,seconds\n\
                   1,2.3,0.1,,,2.2,0.12,0.9,1000.0,3.0\n2,1.4,0.45,,,1.1,0.54,0.9,1000.0,3.0\n";
    let m = Curves::from_metrics_csv("old", metrics, Path::new("metrics.csv")).unwrap();
    assert_eq!(m.points.len(), 2);
    assert_eq!(m.evals[1], EpochEval { epoch: 2, test_acc: 0.54, val_acc: None });
}

fn pixels_of(img: &RgbImage, c: RGBColor) -> Vec<(u32, u32)> {
    img.enumerate_pixels().filter(|(_, _, p)| p.0 == [c.0, c.1, c.2]).map(|(x, y, _)| (x, y)).collect()
}

fn mean_y(px: &[(u32, u32)], x_range: std::ops::Range<u32>) -> f64 {
    let ys: Vec<f64> = px.iter().filter(|(x, _)| x_range.contains(x)).map(|&(_, y)| y as f64).collect();
    assert!(!ys.is_empty(), "no pixels in x {x_range:?}");
    ys.iter().sum::<f64>() / ys.len() as f64
}

#[test]
fn curves_picture_draws_each_series_the_right_way_up() {
    let c = synthetic("sigmoid", 10, 2.3, 0.1);
    let img = to_rgb(&CurvesPlot::new(&c)).unwrap();
    let (loss, acc, test) = (pixels_of(&img, TRAIN_LOSS), pixels_of(&img, TRAIN_ACC), pixels_of(&img, TEST_ACC));
    assert!(loss.len() > 300 && acc.len() > 150 && test.len() > 150, "{} {} {}", loss.len(), acc.len(), test.len());
    // The plot spans x ≈ 70..650: loss falls (lower on screen = larger y), accuracy rises.
    assert!(mean_y(&loss, 100..250) < mean_y(&loss, 450..640));
    assert!(mean_y(&acc, 100..250) > mean_y(&acc, 450..640));
    assert!(mean_y(&test, 100..250) > mean_y(&test, 450..640));
    let svg = to_svg(&CurvesPlot::new(&c)).unwrap();
    for text in ["train loss", "train acc", "test acc", "epoch", "sigmoid", "<polyline"] {
        assert!(svg.contains(text), "the SVG lacks {text}");
    }
}

#[test]
fn compare_overlays_runs_with_a_legend() {
    let runs = [synthetic("sigmoid-avg", 10, 2.3, 0.1), synthetic("relu-max", 10, 0.6, 0.8)];
    let svg = to_svg(&ComparePlot { runs: &runs }).unwrap();
    for text in ["sigmoid-avg", "relu-max", "train loss", "train accuracy", "test accuracy"] {
        assert!(svg.contains(text), "the SVG lacks {text}");
    }
    let img = to_rgb(&ComparePlot { runs: &runs }).unwrap();
    assert!(pixels_of(&img, RUNS[0]).len() > 300 && pixels_of(&img, RUNS[1]).len() > 300);
    assert!(lenet::internal::viz::to_svg(&ComparePlot { runs: &[] }).is_err());
}

#[test]
fn confusion_heat_map_shades_cells_by_share_of_the_true_class() {
    // Rows: true classes of different sizes; row 2 is all wrong.
    let m = vec![vec![90, 10, 0], vec![5, 15, 0], vec![0, 40, 0]];
    let plot = ConfusionPlot::new(&m, &["cat", "dog", "a much longer name"], "test").unwrap();
    let img = to_rgb(&plot).unwrap();
    for (t, row) in m.iter().enumerate() {
        let total: usize = row.iter().sum();
        for (p, &n) in row.iter().enumerate() {
            let (x, y) = plot.cell_origin(t, p);
            // A corner of the cell, away from the count written in its middle.
            let px = img.get_pixel(x + 5, y + 5).0;
            let want = blues(n as f64 / total as f64);
            assert_eq!(px, [want.0, want.1, want.2], "cell true {t} predicted {p}");
        }
    }
    // Rows are true classes: (dog, dog) is 75% (dark), (a much longer name, dog) is 100%.
    let (x, y) = plot.cell_origin(2, 1);
    assert_eq!(img.get_pixel(x + 5, y + 5).0, [8, 48, 107]);
    assert!(ConfusionPlot::new(&[vec![1, 2]], &["a"], "x").is_err());
    assert!(ConfusionPlot::new(&m, &["a", "b"], "x").is_err());
}

#[test]
fn live_chart_draws_braille_curves_legend_and_status() {
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;
    let c = synthetic("live", 4, 2.3, 0.1);
    let mut term = Terminal::new(TestBackend::new(90, 18)).unwrap();
    term.draw(|f| {
        lenet::internal::viz::live::render(&c, "epoch 4/4 [=====>    ] 12/19 batches", f.area(), f.buffer_mut())
    })
    .unwrap();
    let buf = term.backend().buffer().clone();
    let text: String = buf.content().iter().map(|cell| cell.symbol()).collect();
    let braille = text.chars().filter(|ch| ('\u{2801}'..='\u{28FF}').contains(ch)).count();
    assert!(braille > 40, "{braille} braille dots");
    for s in ["train loss", "train acc", "test acc", "epoch 4/4", "12/19 batches", "live"] {
        assert!(text.contains(s), "the chart lacks {s}");
    }
    assert_eq!(lenet::internal::viz::live::bar(5, 10, 10), "[====>     ]");
    assert_eq!(lenet::internal::viz::live::bar(0, 10, 4), "[    ]");
    assert_eq!(lenet::internal::viz::live::bar(10, 10, 4), "[====]");
}

#[test]
fn bundled_font_draws_text() {
    // A picture of only a title: the font must put ink on the canvas.
    let c = Curves::new("", 1);
    let blank = to_rgb(&CurvesPlot { curves: &c, title: String::new() }).unwrap();
    let titled = to_rgb(&CurvesPlot { curves: &c, title: "A TITLE WITH INK".into() }).unwrap();
    let dark = |img: &RgbImage| img.pixels().filter(|p| p.0.iter().all(|&v| v < 100)).count();
    assert!(dark(&titled) > dark(&blank) + 50, "{} vs {}", dark(&titled), dark(&blank));
}
