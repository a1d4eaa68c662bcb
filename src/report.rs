//! `lenet report`: one self-contained HTML page about a run: its config and
//! architecture, the metrics table, the learning curves, the confusion matrix of
//! its best checkpoint and the test images it gets wrong. Pictures are inline
//! SVG (curves, matrix) and a base64 PNG (the image grid): the page needs no
//! other file and no network.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use base64::Engine as _;

use crate::checkpoint;
use crate::data::{self, DatasetKind};
use crate::engine::cpu::CpuEngine;
use crate::engine::Engine;
use crate::eval::{evaluate, EvalResult};
use crate::network::Network;
use crate::predict::probabilities;
use crate::trainer::{TrainConfig, EVAL_BATCH};
use crate::viz::curves::{read_config, Curves, CurvesPlot};
use crate::viz::grid::{prediction_grid, Classified, GridOptions};
use crate::viz::heatmap::ConfusionPlot;
use crate::viz::{png_bytes, to_svg};

/// The evaluation part of a report.
pub struct ReportEval {
    pub checkpoint: PathBuf,
    pub epoch: usize,
    pub dataset: DatasetKind,
    pub result: EvalResult,
    /// The first misclassified test images (index order), with their probabilities.
    pub misclassified: Vec<Classified>,
    /// PNG of the misclassified grid (none when nothing is wrong).
    pub misclassified_png: Option<Vec<u8>>,
}

/// Everything a report shows.
pub struct Report {
    pub name: String,
    pub run_dir: PathBuf,
    pub config_toml: Option<String>,
    pub config: Option<TrainConfig>,
    /// metrics.csv: header and rows.
    pub metrics: Option<(Vec<String>, Vec<Vec<String>>)>,
    pub curves: Curves,
    pub eval: Option<ReportEval>,
    /// Why there is no evaluation (no checkpoint, no dataset …).
    pub eval_problem: Option<String>,
}

/// Options of [`Report::build`].
pub struct ReportOptions<'a> {
    pub data_dir: Option<&'a Path>,
    /// The checkpoint to evaluate (default: best.safetensors, else last.safetensors).
    pub checkpoint: Option<PathBuf>,
    pub threads: usize,
    /// How many misclassified images to show.
    pub misclassified: usize,
}

impl Report {
    /// Gather a run folder's files and evaluate its checkpoint on the test set.
    pub fn build(run_dir: &Path, opts: &ReportOptions) -> Result<Report> {
        if !run_dir.is_dir() {
            bail!("{}: no such run folder", run_dir.display());
        }
        let curves = Curves::load_run(run_dir)?;
        let config_path = run_dir.join("config.toml");
        let config_toml = std::fs::read_to_string(&config_path).ok();
        let config = read_config(run_dir);
        let metrics_path = run_dir.join("metrics.csv");
        let metrics = match std::fs::read_to_string(&metrics_path) {
            Ok(text) => Some(parse_table(&text)),
            Err(_) => None,
        };
        let (eval, eval_problem) = match evaluate_run(run_dir, config.as_ref(), opts) {
            Ok(e) => (Some(e), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        Ok(Report {
            name: curves.label.clone(),
            run_dir: run_dir.to_path_buf(),
            config_toml,
            config,
            metrics,
            curves,
            eval,
            eval_problem,
        })
    }

    /// The page.
    pub fn to_html(&self) -> Result<String> {
        let mut h = String::with_capacity(1 << 20);
        h += &page_head(&format!("lenet run {}", self.name));
        writeln!(h, "<p class=\"summary\" id=\"summary\">{}</p>", esc(&self.summary_line()))?;

        h += "<section id=\"curves-section\">\n<h2>Learning curves</h2>\n";
        let svg = to_svg(&CurvesPlot::for_run(&self.curves, self.config.as_ref()))?;
        writeln!(
            h,
            "<figure id=\"curves\" class=\"plot\">\n{}\n<figcaption>Train loss and accuracy are running means \
             over each epoch, drawn about 5 times per epoch as in d2l; test accuracy at the end of each \
             epoch.</figcaption>\n</figure>",
            strip_xml_decl(&svg)
        )?;
        h += "</section>\n";

        h += "<section id=\"evaluation\">\n<h2>Confusion matrix</h2>\n";
        match (&self.eval, &self.eval_problem) {
            (Some(e), _) => self.write_eval(&mut h, e)?,
            (None, problem) => {
                writeln!(
                    h,
                    "<p class=\"problem\">No evaluation: {}</p>",
                    esc(problem.as_deref().unwrap_or("no checkpoint"))
                )?;
            }
        }
        h += "</section>\n";

        h += "<section id=\"metrics-section\">\n<h2>Metrics per epoch</h2>\n";
        match &self.metrics {
            Some((header, rows)) => {
                let best = self.best_epoch();
                h += "<table id=\"metrics\">\n<thead><tr>";
                for c in header {
                    write!(h, "<th>{}</th>", esc(&c.replace('_', " ")))?;
                }
                h += "</tr></thead>\n<tbody>\n";
                for r in rows {
                    let is_best = best.is_some_and(|b| r.first().is_some_and(|e| e == &b.to_string()));
                    h += if is_best { "<tr class=\"best\">" } else { "<tr>" };
                    for c in r {
                        write!(h, "<td>{}</td>", esc(c))?;
                    }
                    h += "</tr>\n";
                }
                h += "</tbody>\n</table>\n";
                if best.is_some() {
                    h += "<p class=\"note\">The highlighted epoch is the best one (best.safetensors).</p>\n";
                }
            }
            None => h += "<p class=\"problem\">metrics.csv is missing.</p>\n",
        }
        h += "</section>\n";

        h += "<section id=\"config-section\">\n<h2>Configuration</h2>\n";
        if let Some(cfg) = &self.config {
            if let Ok(summary) = cfg.arch.summary() {
                writeln!(h, "<h3>Architecture</h3>\n<pre id=\"architecture\">{}</pre>", esc(&summary))?;
            }
        }
        match &self.config_toml {
            Some(t) => writeln!(h, "<h3>config.toml</h3>\n<pre id=\"config\">{}</pre>", esc(t))?,
            None => h += "<p class=\"problem\">config.toml is missing.</p>\n",
        }
        h += "</section>\n";
        writeln!(
            h,
            "<footer>Made by lenet {} from {}.</footer>\n</body>\n</html>",
            env!("CARGO_PKG_VERSION"),
            esc(&self.run_dir.display().to_string())
        )?;
        Ok(h)
    }

    fn write_eval(&self, h: &mut String, e: &ReportEval) -> Result<()> {
        let names = e.dataset.class_names();
        let title = format!("{} test set, epoch {}: accuracy {:.4}", e.dataset, e.epoch, e.result.accuracy);
        let svg = to_svg(&ConfusionPlot::new(&e.result.confusion, &names, &title)?)?;
        writeln!(
            h,
            "<div class=\"row\">\n<figure id=\"confusion\" class=\"plot\">\n{}\n<figcaption>{} on {} test \
             images: rows are the true classes, columns the predicted ones; the shade is the share of the \
             true class.</figcaption>\n</figure>",
            strip_xml_decl(&svg),
            esc(&e.checkpoint.display().to_string()),
            e.result.count
        )?;
        *h += "<table id=\"per-class\">\n<thead><tr><th>class</th><th>accuracy</th><th>examples</th></tr></thead>\n<tbody>\n";
        for ((name, acc), row) in names.iter().zip(e.result.per_class_accuracy()).zip(&e.result.confusion) {
            writeln!(h, "<tr><td>{}</td><td>{acc:.4}</td><td>{}</td></tr>", esc(name), row.iter().sum::<usize>())?;
        }
        *h += "</tbody>\n</table>\n</div>\n";
        let c = &e.result.confusion;
        let wrong: usize = (0..c.len())
            .flat_map(|t| (0..c.len()).map(move |p| (t, p)))
            .filter(|(t, p)| t != p)
            .map(|(t, p)| c[t][p])
            .sum();
        writeln!(h, "<h2>Misclassified test images</h2>")?;
        match &e.misclassified_png {
            Some(png) => {
                let b64 = base64::engine::general_purpose::STANDARD.encode(png);
                writeln!(
                    h,
                    "<figure id=\"misclassified\">\n<img alt=\"misclassified test images\" \
                     src=\"data:image/png;base64,{b64}\">\n<figcaption>The first {} of {wrong} misclassified \
                     test images: predicted class and its probability in red, the true class under it.\
                     </figcaption>\n</figure>",
                    e.misclassified.len()
                )?;
            }
            None => *h += "<p>None: every test image is classified correctly.</p>\n",
        }
        Ok(())
    }

    /// The best epoch by validation, else test accuracy.
    fn best_epoch(&self) -> Option<usize> {
        let c = &self.curves;
        c.evals
            .iter()
            .fold(None::<(usize, f64)>, |best, e| {
                let acc = e.val_acc.unwrap_or(e.test_acc);
                match best {
                    Some((_, b)) if b >= acc => best,
                    _ => Some((e.epoch, acc)),
                }
            })
            .map(|b| b.0)
    }

    fn summary_line(&self) -> String {
        let mut s = String::new();
        if let Some(cfg) = &self.config {
            s += &format!(
                "{} on {}, {} epochs, batch {}, lr {}, {}. ",
                cfg.arch.name, cfg.dataset, cfg.epochs, cfg.batch, cfg.lr, cfg.optimizer
            );
        }
        let c = &self.curves;
        if let (Some(p), Some(e)) = (c.points.last(), c.evals.last()) {
            s += &format!(
                "After epoch {}: loss {:.3}, train acc {:.3}, test acc {:.3}.",
                e.epoch, p.train_loss, p.train_acc, e.test_acc
            );
        }
        if let Some(b) = self.best_epoch() {
            s += &format!(" Best epoch: {b}.");
        }
        s
    }
}

/// Evaluate the run's checkpoint on its dataset's test set.
fn evaluate_run(run_dir: &Path, config: Option<&TrainConfig>, opts: &ReportOptions) -> Result<ReportEval> {
    let ckpt = match &opts.checkpoint {
        Some(p) => p.clone(),
        None => ["best.safetensors", "last.safetensors"]
            .iter()
            .map(|n| run_dir.join(n))
            .find(|p| p.is_file())
            .with_context(|| format!("{} has no best.safetensors or last.safetensors", run_dir.display()))?,
    };
    let ck = checkpoint::load(&ckpt, None)?;
    let dataset = crate::trainer::trained_on(&ck)
        .or(config.map(|c| c.dataset))
        .with_context(|| format!("{} does not say which dataset it was trained on", ckpt.display()))?;
    let test = data::load_part(dataset, opts.data_dir, data::Part::Test)?;
    let mut net = Network::new(CpuEngine::new(opts.threads)?, &ck.spec)?;
    net.set_params(&ck.params)?;
    let examples = net.engine.upload_examples(&test.images, &test.labels, &ck.spec.input);
    let result = evaluate(&mut net, &examples, EVAL_BATCH);
    let wrong: Vec<usize> =
        (0..test.len()).filter(|&i| result.predictions[i] != test.labels[i]).take(opts.misclassified).collect();
    let subset = test.select(&wrong);
    let probs = probabilities(&mut net, &subset.images, EVAL_BATCH);
    let misclassified: Vec<Classified> = wrong
        .iter()
        .zip(&probs)
        .enumerate()
        .map(|(k, (&i, p))| Classified {
            index: k,
            label: test.labels[i],
            predicted: result.predictions[i],
            probability: p[result.predictions[i] as usize],
        })
        .collect();
    let misclassified_png = if misclassified.is_empty() {
        None
    } else {
        let img = prediction_grid(
            &subset.images,
            &misclassified,
            &dataset.class_names(),
            &GridOptions { columns: 8, zoom: 3 },
        );
        Some(png_bytes(&img)?)
    };
    // Report indices in the test set, not in the subset.
    let misclassified = misclassified.into_iter().zip(&wrong).map(|(c, &i)| Classified { index: i, ..c }).collect();
    Ok(ReportEval { checkpoint: ckpt, epoch: ck.meta.epoch, dataset, result, misclassified, misclassified_png })
}

/// A CSV table as header and rows of strings.
fn parse_table(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().map(|l| l.split(',').map(str::to_string).collect()).unwrap_or_default();
    let rows = lines.map(|l| l.split(',').map(str::to_string).collect()).collect();
    (header, rows)
}

/// A report page's start: the document head with the shared style, and the title as
/// its heading.
pub(crate) fn page_head(title: &str) -> String {
    let title = esc(title);
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{title}</title>\n\
         {STYLE}</head>\n<body>\n<h1>{title}</h1>\n"
    )
}

pub(crate) fn strip_xml_decl(svg: &str) -> &str {
    match svg.find("<svg") {
        Some(i) => &svg[i..],
        None => svg,
    }
}

/// HTML-escape text.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out += "&amp;",
            '<' => out += "&lt;",
            '>' => out += "&gt;",
            '"' => out += "&quot;",
            '\'' => out += "&#39;",
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"<style>
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; margin: 24px auto; max-width: 1100px; color: #222; padding: 0 16px; }
h1 { font-size: 1.6em; margin-bottom: 4px; }
h2 { font-size: 1.25em; border-bottom: 1px solid #ddd; padding-bottom: 4px; margin-top: 32px; }
h3 { font-size: 1.05em; }
.summary { color: #444; }
figure { margin: 12px 0; }
figure svg, figure img { max-width: 100%; height: auto; display: block; }
figure img { image-rendering: pixelated; }
figcaption { color: #555; font-size: 0.9em; margin-top: 6px; max-width: 800px; }
.row { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f4f6f8; }
tr.best td { background: #e6f2e6; font-weight: bold; }
pre { background: #f7f7f7; padding: 10px; overflow-x: auto; font-size: 0.85em; }
.problem { color: #a00; }
.note { color: #555; font-size: 0.9em; }
footer { margin-top: 40px; color: #888; font-size: 0.8em; }
</style>
"#;
