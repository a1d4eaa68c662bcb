//! Learning curves: train loss, train accuracy and test accuracy against the
//! epoch, with the running train metrics at fractional epochs as d2l's Animator
//! draws them (about 5 points per epoch), and several runs overlaid for
//! comparison. The data lives in a run's `curves.csv`; older runs without it
//! fall back to `metrics.csv` (one point per epoch).

use std::path::Path;

use anyhow::{bail, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::palette::{RUNS, TEST_ACC, TRAIN_ACC, TRAIN_LOSS, VAL_ACC};
use super::{house_mesh, plot_err, Plot, FONT};
use crate::trainer::{CurvePoint, EpochMetrics, TrainConfig};

/// The evaluation at the end of a whole epoch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpochEval {
    pub epoch: usize,
    pub test_acc: f64,
    pub val_acc: Option<f64>,
}

/// The curves of one run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Curves {
    /// The run's name (legend entry when runs are compared).
    pub label: String,
    /// Planned epochs: the x axis ends there, as in d2l's Animator.
    pub epochs: usize,
    /// Running train loss and accuracy at fractional epochs.
    pub points: Vec<CurvePoint>,
    pub evals: Vec<EpochEval>,
}

pub const CSV_HEADER: &str = "epoch,train_loss,train_acc,test_acc,val_acc";

impl Curves {
    pub fn new(label: &str, epochs: usize) -> Self {
        Curves { label: label.to_string(), epochs, ..Default::default() }
    }

    /// From the trainer's history. An epoch without running points (trained by
    /// an older lenet) contributes its end-of-epoch numbers as one point.
    pub fn from_history(label: &str, history: &[EpochMetrics], epochs: usize) -> Self {
        let mut c = Curves::new(label, epochs.max(history.len()));
        for m in history {
            if m.points.is_empty() {
                c.points.push(CurvePoint { epoch: m.epoch as f64, train_loss: m.train_loss, train_acc: m.train_acc });
            } else {
                c.points.extend_from_slice(&m.points);
            }
            c.evals.push(EpochEval { epoch: m.epoch, test_acc: m.test_acc, val_acc: m.val_acc });
        }
        c
    }

    pub fn push_point(&mut self, p: CurvePoint) {
        self.points.push(p);
    }

    pub fn push_eval(&mut self, e: EpochEval) {
        self.evals.push(e);
        self.epochs = self.epochs.max(e.epoch);
    }

    /// The x axis's end: the planned epochs, or further if the run went on.
    pub fn x_max(&self) -> f64 {
        let last = self.points.iter().map(|p| p.epoch).fold(0.0, f64::max);
        (self.epochs as f64).max(last).max(self.evals.last().map_or(0.0, |e| e.epoch as f64)).max(1.0)
    }

    pub fn max_loss(&self) -> f64 {
        self.points.iter().map(|p| p.train_loss).filter(|v| v.is_finite()).fold(0.0, f64::max)
    }

    pub fn has_val(&self) -> bool {
        self.evals.iter().any(|e| e.val_acc.is_some())
    }

    /// `curves.csv`: one row per running point (test/val empty), the evaluation
    /// added to the row at each whole epoch.
    pub fn to_csv(&self) -> String {
        let mut s = format!("{CSV_HEADER}\n");
        let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.6}"));
        let mut evals = self.evals.iter().peekable();
        for p in &self.points {
            // Evaluations of epochs that have no running point at their end.
            while let Some(e) = evals.next_if(|e| (e.epoch as f64) < p.epoch - 1e-9) {
                s += &format!("{},,,{:.6},{}\n", e.epoch, e.test_acc, opt(e.val_acc));
            }
            let eval = evals.next_if(|e| (e.epoch as f64 - p.epoch).abs() < 1e-9);
            s += &format!(
                "{},{:.6},{:.6},{},{}\n",
                fmt_epoch(p.epoch),
                p.train_loss,
                p.train_acc,
                opt(eval.map(|e| e.test_acc)),
                opt(eval.and_then(|e| e.val_acc))
            );
        }
        for e in evals {
            s += &format!("{},,,{:.6},{}\n", e.epoch, e.test_acc, opt(e.val_acc));
        }
        s
    }

    /// Parse `curves.csv` text; `path` names the file in errors.
    pub fn from_csv(label: &str, text: &str, path: &Path) -> Result<Self> {
        let rows = parse_csv(text, path, &["epoch", "train_loss", "train_acc", "test_acc", "val_acc"])?;
        let mut c = Curves::new(label, 0);
        for (line, v) in rows {
            let epoch = v[0].with_context(|| format!("{}: line {line}: no epoch", path.display()))?;
            if let (Some(train_loss), Some(train_acc)) = (v[1], v[2]) {
                c.points.push(CurvePoint { epoch, train_loss, train_acc });
            }
            if let Some(test_acc) = v[3] {
                if (epoch - epoch.round()).abs() > 1e-6 || epoch < 0.5 {
                    bail!(
                        "{}: line {line}: a test accuracy at epoch {epoch}, not at the end of an epoch",
                        path.display()
                    );
                }
                c.evals.push(EpochEval { epoch: epoch.round() as usize, test_acc, val_acc: v[4] });
            }
        }
        c.epochs = c.x_max().ceil() as usize;
        Ok(c)
    }

    /// Parse a run's `metrics.csv` (one point per epoch).
    pub fn from_metrics_csv(label: &str, text: &str, path: &Path) -> Result<Self> {
        let rows = parse_csv(text, path, &["epoch", "train_loss", "train_acc", "test_acc", "val_acc"])?;
        let mut c = Curves::new(label, 0);
        for (line, v) in rows {
            let (Some(epoch), Some(train_loss), Some(train_acc), Some(test_acc)) = (v[0], v[1], v[2], v[3]) else {
                bail!("{}: line {line}: epoch, train_loss, train_acc and test_acc must all be numbers", path.display());
            };
            c.points.push(CurvePoint { epoch, train_loss, train_acc });
            c.evals.push(EpochEval { epoch: epoch.round() as usize, test_acc, val_acc: v[4] });
        }
        c.epochs = c.x_max().ceil() as usize;
        Ok(c)
    }

    /// The curves of a run folder: `curves.csv`, else `metrics.csv`; the x axis
    /// spans the planned epochs of `config.toml` when it is readable.
    pub fn load_run(dir: &Path) -> Result<Self> {
        let label = dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| dir.display().to_string());
        if !dir.is_dir() {
            bail!("{}: no such run folder", dir.display());
        }
        let (curves, metrics) = (dir.join("curves.csv"), dir.join("metrics.csv"));
        let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()));
        let mut c = if curves.is_file() {
            Curves::from_csv(&label, &read(&curves)?, &curves)?
        } else if metrics.is_file() {
            Curves::from_metrics_csv(&label, &read(&metrics)?, &metrics)?
        } else {
            bail!("{}: not a run folder (it has neither curves.csv nor metrics.csv)", dir.display());
        };
        if c.points.is_empty() && c.evals.is_empty() {
            bail!("{}: the run has no finished epoch yet", dir.display());
        }
        if let Some(cfg) = read_config(dir) {
            c.epochs = c.epochs.max(cfg.epochs);
        }
        Ok(c)
    }
}

/// The run's `config.toml`, when there is a readable one.
pub fn read_config(dir: &Path) -> Option<TrainConfig> {
    toml::from_str(&std::fs::read_to_string(dir.join("config.toml")).ok()?).ok()
}

fn fmt_epoch(e: f64) -> String {
    if (e - e.round()).abs() < 1e-9 {
        format!("{}", e.round() as i64)
    } else {
        format!("{e:.6}")
    }
}

/// Rows of a CSV file with a header, as the named columns (missing columns and
/// empty cells are `None`), each with its line number.
type Rows = Vec<(usize, Vec<Option<f64>>)>;
fn parse_csv(text: &str, path: &Path, columns: &[&str]) -> Result<Rows> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().with_context(|| format!("{}: empty file", path.display()))?;
    let names: Vec<&str> = header.split(',').map(str::trim).collect();
    let find = |c: &str| names.iter().position(|n| *n == c);
    let idx: Vec<Option<usize>> = columns.iter().map(|c| find(c)).collect();
    if idx[0].is_none() {
        bail!("{}: the header has no '{}' column: {header}", path.display(), columns[0]);
    }
    let mut rows = Vec::new();
    for (i, line) in lines {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if cells.len() != names.len() {
            bail!("{}: line {}: {} fields, the header has {}", path.display(), i + 1, cells.len(), names.len());
        }
        let mut v = Vec::with_capacity(columns.len());
        for (c, ix) in columns.iter().zip(&idx) {
            let cell = ix.map_or("", |k| cells[k]);
            v.push(if cell.is_empty() {
                None
            } else {
                let x: f64 = cell
                    .parse()
                    .with_context(|| format!("{}: line {}: {c} '{cell}' is not a number", path.display(), i + 1))?;
                Some(x)
            });
        }
        rows.push((i + 1, v));
    }
    Ok(rows)
}

/// How many x labels to ask plotters for: with at most this many, its "nice"
/// steps (1, 2, 5 × 10^k) land on whole epochs.
fn x_label_count(x_max: f64) -> usize {
    (x_max.ceil() as usize).min(10) + 1
}

fn fmt_tick(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        format!("{v:.1}")
    }
}

/// How a series is stroked.
#[derive(Clone, Copy)]
enum Stroke {
    Solid,
    Dashed,
    DashDot,
}

fn draw_line<DB: DrawingBackend, CT: CoordTranslate<From = (f64, f64)>>(
    chart: &mut ChartContext<DB, CT>,
    data: Vec<(f64, f64)>,
    color: RGBColor,
    stroke: Stroke,
) -> Result<()> {
    let style = color.stroke_width(2);
    match stroke {
        Stroke::Solid => chart.draw_series(LineSeries::new(data, style)).map_err(plot_err)?,
        Stroke::Dashed => chart.draw_series(DashedLineSeries::new(data, 9, 5, style)).map_err(plot_err)?,
        Stroke::DashDot => chart.draw_series(DashedLineSeries::new(data, 12, 4, style)).map_err(plot_err)?,
    };
    Ok(())
}

/// A legend in its own area: a line sample and a label per entry.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[(String, RGBColor, Stroke)],
) -> Result<()> {
    let font = (FONT, 15).into_font().color(&BLACK);
    for (i, (label, color, stroke)) in entries.iter().enumerate() {
        let y = 12 + i as i32 * 24;
        let style = color.stroke_width(2);
        match stroke {
            Stroke::Solid => area.draw(&PathElement::new(vec![(4, y), (34, y)], style)).map_err(plot_err)?,
            Stroke::Dashed => area
                .draw(&PathElement::new(vec![(4, y), (14, y)], style))
                .map_err(plot_err)
                .and_then(|_| area.draw(&PathElement::new(vec![(20, y), (34, y)], style)).map_err(plot_err))?,
            Stroke::DashDot => area
                .draw(&PathElement::new(vec![(4, y), (18, y)], style))
                .map_err(plot_err)
                .and_then(|_| area.draw(&PathElement::new(vec![(24, y), (34, y)], style)).map_err(plot_err))?,
        }
        area.draw(&Text::new(label.clone(), (42, y - 8), font.clone())).map_err(plot_err)?;
    }
    Ok(())
}

/// One run's curves in one axes, as d2l draws them: train loss (solid blue),
/// train acc (dashed magenta), test acc (dash-dot green, a dot per epoch) and,
/// when the run held out data, val acc (red).
pub struct CurvesPlot<'a> {
    pub curves: &'a Curves,
    pub title: String,
}

impl<'a> CurvesPlot<'a> {
    pub fn new(curves: &'a Curves) -> Self {
        CurvesPlot { curves, title: curves.label.clone() }
    }

    /// Titled "<run>: <arch> on <dataset>".
    pub fn for_run(curves: &'a Curves, config: Option<&TrainConfig>) -> Self {
        let title = match config {
            Some(c) => format!("{}: {} on {}", curves.label, c.arch.name, c.dataset),
            None => curves.label.clone(),
        };
        CurvesPlot { curves, title }
    }
}

const LEGEND_W: u32 = 150;

impl Plot for CurvesPlot<'_> {
    fn size(&self) -> (u32, u32) {
        (820, 440)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let c = self.curves;
        let (w, _) = self.size();
        let (plot_area, legend_area) = root.split_horizontally(w - LEGEND_W);
        let x_max = c.x_max();
        let y_max = c.max_loss().max(1.0) * 1.05;
        let mut chart = ChartBuilder::on(&plot_area)
            .margin(14)
            .caption(&self.title, (FONT, 18))
            .x_label_area_size(46)
            .y_label_area_size(52)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)
            .map_err(plot_err)?;
        house_mesh(&mut chart.configure_mesh(), 14)
            .x_desc("epoch")
            .x_labels(x_label_count(x_max))
            .x_label_formatter(&|v| fmt_tick(*v))
            .y_label_formatter(&|v| format!("{v:.1}"))
            .draw()
            .map_err(plot_err)?;
        let pts = |f: fn(&CurvePoint) -> f64| c.points.iter().map(|p| (p.epoch, f(p))).collect::<Vec<_>>();
        draw_line(&mut chart, pts(|p| p.train_loss), TRAIN_LOSS, Stroke::Solid)?;
        draw_line(&mut chart, pts(|p| p.train_acc), TRAIN_ACC, Stroke::Dashed)?;
        let test: Vec<(f64, f64)> = c.evals.iter().map(|e| (e.epoch as f64, e.test_acc)).collect();
        draw_line(&mut chart, test.clone(), TEST_ACC, Stroke::DashDot)?;
        chart.draw_series(test.iter().map(|&p| Circle::new(p, 3, TEST_ACC.filled()))).map_err(plot_err)?;
        let mut legend = vec![
            ("train loss".to_string(), TRAIN_LOSS, Stroke::Solid),
            ("train acc".to_string(), TRAIN_ACC, Stroke::Dashed),
            ("test acc".to_string(), TEST_ACC, Stroke::DashDot),
        ];
        if c.has_val() {
            let val: Vec<(f64, f64)> = c.evals.iter().filter_map(|e| e.val_acc.map(|v| (e.epoch as f64, v))).collect();
            draw_line(&mut chart, val.clone(), VAL_ACC, Stroke::Dashed)?;
            chart.draw_series(val.iter().map(|&p| Circle::new(p, 3, VAL_ACC.filled()))).map_err(plot_err)?;
            legend.push(("val acc".to_string(), VAL_ACC, Stroke::Dashed));
        }
        // The legend sits beside the axes, level with the plot's top.
        draw_legend(&legend_area.margin(60, 0, 0, 6), &legend)?;
        // The last values, under the legend, as d2l prints them after training.
        if let (Some(p), Some(e)) = (c.points.last(), c.evals.last()) {
            let font = (FONT, 13).into_font().color(&RGBColor(80, 80, 80));
            let lines = [
                format!("epoch {}", e.epoch),
                format!("loss {:.3}", p.train_loss),
                format!("train acc {:.3}", p.train_acc),
                format!("test acc {:.3}", e.test_acc),
            ];
            let y0 = 60 + 24 * legend.len() as i32 + 16;
            for (i, l) in lines.iter().enumerate() {
                legend_area.draw(&Text::new(l.clone(), (10, y0 + 18 * i as i32), font.clone())).map_err(plot_err)?;
            }
        }
        Ok(())
    }
}

/// Several runs side by side in three panels (train loss, train accuracy, test
/// accuracy), one colour per run, with a legend of the runs.
pub struct ComparePlot<'a> {
    pub runs: &'a [Curves],
}

impl ComparePlot<'_> {
    fn legend_width(&self) -> u32 {
        let longest = self.runs.iter().map(|r| r.label.chars().count()).max().unwrap_or(8) as u32;
        (longest * 8 + 60).clamp(140, 360)
    }
}

impl Plot for ComparePlot<'_> {
    fn size(&self) -> (u32, u32) {
        (3 * 420 + self.legend_width(), 440)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        if self.runs.is_empty() {
            bail!("no runs to compare");
        }
        let (w, _) = self.size();
        let (panels, legend_area) = root.split_horizontally(w - self.legend_width());
        let panels = panels.split_evenly((1, 3));
        let x_max = self.runs.iter().map(Curves::x_max).fold(1.0, f64::max);
        let loss_max = self.runs.iter().map(Curves::max_loss).fold(0.0, f64::max).max(0.1) * 1.05;
        let acc_min = self
            .runs
            .iter()
            .flat_map(|r| r.points.iter().map(|p| p.train_acc).chain(r.evals.iter().map(|e| e.test_acc)))
            .filter(|v| v.is_finite())
            .fold(1.0, f64::min);
        let acc_min = ((acc_min * 10.0).floor() / 10.0).clamp(0.0, 0.9);
        type Pick = fn(&Curves) -> Vec<(f64, f64)>;
        let panel_defs: [(&str, f64, f64, Pick); 3] = [
            ("train loss", 0.0, loss_max, |c| c.points.iter().map(|p| (p.epoch, p.train_loss)).collect()),
            ("train accuracy", acc_min, 1.0, |c| c.points.iter().map(|p| (p.epoch, p.train_acc)).collect()),
            ("test accuracy", acc_min, 1.0, |c| c.evals.iter().map(|e| (e.epoch as f64, e.test_acc)).collect()),
        ];
        for (k, (panel, (title, y0, y1, pick))) in panels.iter().zip(panel_defs).enumerate() {
            let mut chart = ChartBuilder::on(panel)
                .margin(12)
                .caption(title, (FONT, 17))
                .x_label_area_size(44)
                .y_label_area_size(50)
                .build_cartesian_2d(0f64..x_max, y0..y1)
                .map_err(plot_err)?;
            house_mesh(&mut chart.configure_mesh(), 13)
                .x_desc("epoch")
                .x_labels(x_label_count(x_max))
                .x_label_formatter(&|v| fmt_tick(*v))
                .y_label_formatter(&|v| format!("{v:.2}"))
                .draw()
                .map_err(plot_err)?;
            for (i, run) in self.runs.iter().enumerate() {
                let color = RUNS[i % RUNS.len()];
                let data = pick(run);
                draw_line(&mut chart, data.clone(), color, Stroke::Solid)?;
                if k == 2 {
                    chart.draw_series(data.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(plot_err)?;
                }
            }
        }
        let entries: Vec<(String, RGBColor, Stroke)> =
            self.runs.iter().enumerate().map(|(i, r)| (r.label.clone(), RUNS[i % RUNS.len()], Stroke::Solid)).collect();
        draw_legend(&legend_area.margin(50, 0, 0, 4), &entries)?;
        Ok(())
    }
}
